// An in-memory FileSystem that remembers what a power cut would leave behind.
// Test-only, but kept in src/ so the node's tests and the cross-package crash
// tests can run the real WAL through it.
//
// Model (what Linux + a journaling fs promise, made explicit):
// - A file's contents are durable up to its last completed `datasync`/`sync`
//   (both cover data and size). A sync covers what was written before it was
//   called; if the cut comes before it returns, it covered nothing.
// - A directory's entries (create, rename, unlink, mkdir) are durable only as of
//   its last completed `syncDir`. A file whose data was synced but whose name
//   was never dir-synced is gone after a cut.
// - Optionally (`tornTail`) a seeded-random prefix of each file's unsynced
//   appended bytes survives, sometimes with its end zero-filled (the size made
//   it to disk, the data blocks did not), because real disks do that. With
//   `scatteredPageBytes` the pages of that prefix survive each on its own, in
//   no order (a lost page reads as zeros): the disk wrote back some of the
//   unsynced pages and not others, e.g. a later write's and not an earlier one's.
// - With `tornTail`, unsynced bytes written over durable ones (a recycled WAL
//   file overwritten in place) survive page by page as the new bytes or stay
//   the old ones (`scatteredPageBytes`), or as new bytes up to a random point
//   and old ones after it: old data never turns into zeros, its blocks are
//   allocated. Without tornTail only the durable contents survive.
//
// `crash()` freezes this instance: every later operation, and every operation
// still in flight, rejects with EIO ("power cut") and has no effect. It returns
// a new instance holding only the durable state, as the disk after reboot.
import path from 'node:path';
import type { FileHandle, FileStat, FileSystem, FsOp, OpenMode } from './types.ts';
import { fsError } from './types.ts';

/** A small seeded PRNG (mulberry32), so crash points and torn tails replay from a seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface FileNode {
  readonly kind: 'file';
  data: Uint8Array;
  size: number;
  mtimeMs: number;
  /** Contents as of the last completed datasync/sync. */
  durable: Uint8Array;
  /** As for directories: a sync that returns after a later-started one keeps the later snapshot. */
  syncsStarted?: number;
  durableSync?: number;
}

interface DirNode {
  readonly kind: 'dir';
  readonly entries: Map<string, Node>;
  /** Entries as of the last completed syncDir. */
  durable: Map<string, Node>;
  /**
   * syncDir calls started on this directory, and the number of the one whose
   * snapshot `durable` holds: a sync that started earlier and returns later
   * must not put back an older snapshot (a real fsync never un-persists a
   * later one's entries).
   */
  syncsStarted?: number;
  durableSync?: number;
}

type Node = FileNode | DirNode;

export interface PowerCutOptions {
  /** Seeds operation latencies and torn tails. */
  readonly seed?: number;
  /** Extra event-loop turns an operation may take (random 0…n), so concurrent callers interleave. Default 2. */
  readonly jitterTicksMax?: number;
  /** Reported by statfs as capacity; writes beyond it fail with ENOSPC. Default 1 TiB. */
  readonly capacityBytes?: number;
}

export interface CrashOptions {
  /** Let a random prefix of each file's unsynced appended bytes survive. Default false. */
  readonly tornTail?: boolean;
  /**
   * With tornTail: keep each page (this many bytes, aligned to file offsets)
   * of that prefix or lose it (zeros) independently, instead of keeping a
   * prefix whole. Models write-back in any order. Default: off.
   */
  readonly scatteredPageBytes?: number;
}

export class PowerCutFileSystem implements FileSystem {
  readonly #root: DirNode;
  readonly #random: () => number;
  readonly #jitterTicksMax: number;
  readonly #capacityBytes: number;
  readonly #options: PowerCutOptions;
  #frozen = false;
  /** Operations started so far (every call, any kind). */
  opCount = 0;
  #armed: { atOp: number; options: CrashOptions; resolve: (fs: PowerCutFileSystem) => void } | undefined;

  constructor(options: PowerCutOptions = {}, root?: DirNode) {
    this.#options = options;
    this.#random = seededRandom(options.seed ?? 1);
    this.#jitterTicksMax = options.jitterTicksMax ?? 2;
    this.#capacityBytes = options.capacityBytes ?? 2 ** 40;
    this.#root = root ?? { kind: 'dir', entries: new Map(), durable: new Map() };
  }

  get frozen(): boolean {
    return this.#frozen;
  }

  /**
   * Cuts the power when operation number `atOp` (counting from this instance's
   * creation) starts, before it takes effect. Resolves with the rebooted disk,
   * also when crash() is called first.
   */
  armCrash(atOp: number, options: CrashOptions = {}): Promise<PowerCutFileSystem> {
    return new Promise((resolve) => {
      this.#armed = { atOp, options, resolve };
    });
  }

  /** Freezes this instance and returns the disk as it would be after reboot. */
  crash(options: CrashOptions = {}): PowerCutFileSystem {
    if (this.#frozen) throw new Error('PowerCutFileSystem: already crashed');
    this.#frozen = true;
    const armed = this.#armed;
    this.#armed = undefined;
    const copies = new Map<Node, Node>();
    const rebuild = (dir: DirNode): DirNode => {
      const out: DirNode = { kind: 'dir', entries: new Map(), durable: new Map() };
      for (const [name, child] of dir.durable) {
        let copy = copies.get(child);
        if (copy === undefined) {
          copy = child.kind === 'dir' ? rebuild(child) : this.#survivingFile(child, options);
          copies.set(child, copy);
        }
        out.entries.set(name, copy);
        out.durable.set(name, copy);
      }
      return out;
    };
    const rebooted = new PowerCutFileSystem(
      { ...this.#options, seed: Math.floor(this.#random() * 2 ** 32) },
      rebuild(this.#root),
    );
    armed?.resolve(rebooted);
    return rebooted;
  }

  #survivingFile(file: FileNode, options: CrashOptions): FileNode {
    let bytes = file.durable;
    const current = file.data.subarray(0, file.size);
    const extra = file.size - file.durable.length;
    const appendOnly = startsWith(current, file.durable);
    if (options.tornTail === true && !appendOnly) {
      bytes = this.#overwritten(file.durable, current, options);
    } else if (options.tornTail === true && extra > 0) {
      const page = options.scatteredPageBytes;
      const scattered = page !== undefined && page > 0;
      // Scattered: the size often made it whole (it is journaled with the first
      // page written back), whichever pages did.
      const keep = scattered && this.#random() < 0.5 ? extra : Math.floor(this.#random() * (extra + 1));
      const out = new Uint8Array(file.durable.length + keep);
      out.set(current.subarray(0, out.length));
      if (scattered) {
        // Unsynced bytes in the page that holds the durable end are lost or kept with it.
        for (let p = Math.floor(file.durable.length / page) * page; p < out.length; p += page) {
          if (this.#random() < 0.5) out.fill(0, Math.max(p, file.durable.length), p + page);
        }
      } else if (keep > 0 && this.#random() < 0.3) {
        // Size reached the disk, some data blocks did not.
        const zeroFrom = file.durable.length + Math.floor(this.#random() * keep);
        out.fill(0, zeroFrom);
      }
      bytes = out;
    }
    const data = bytes.slice();
    return { kind: 'file', data, size: data.length, mtimeMs: file.mtimeMs, durable: data.slice() };
  }

  /**
   * Unsynced bytes that replaced durable ones (a recycled file overwritten in
   * place, an unsynced truncate): on disk every overwritten page is either
   * the new one or still the old one (never zeros: its blocks were
   * allocated), each on its own when scattered, else the new bytes up to a
   * random point of the changed range and the old ones after it. An unsynced
   * size change lands or not; bytes appended past the durable end follow the
   * append rules above.
   */
  #overwritten(durable: Uint8Array, current: Uint8Array, options: CrashOptions): Uint8Array {
    const page = options.scatteredPageBytes;
    const scattered = page !== undefined && page > 0;
    let length: number;
    if (current.length > durable.length) {
      const extra = current.length - durable.length;
      length =
        durable.length +
        (scattered && this.#random() < 0.5 ? extra : Math.floor(this.#random() * (extra + 1)));
    } else {
      length = this.#random() < 0.5 ? durable.length : current.length;
    }
    const out = new Uint8Array(length);
    out.set(durable.subarray(0, Math.min(length, durable.length)));
    // Appended past the durable end: kept (new bytes), sometimes partly lost (zeros).
    if (length > durable.length) out.set(current.subarray(durable.length, length), durable.length);
    const common = Math.min(length, durable.length, current.length);
    let firstDiff = 0;
    while (firstDiff < common && durable[firstDiff] === current[firstDiff]) firstDiff++;
    if (scattered) {
      for (let p = Math.floor(firstDiff / page) * page; p < length; p += page) {
        const end = Math.min(p + page, length);
        // The new page, or the old one (zeros where the file had no bytes).
        const fresh = this.#random() < 0.5;
        for (let i = p; i < end; i++)
          out[i] = fresh && i < current.length ? current[i]! : i < durable.length ? durable[i]! : 0;
      }
    } else {
      // New bytes up to a random point, old ones after it.
      const cut = firstDiff + Math.floor(this.#random() * (length - firstDiff + 1));
      out.set(current.subarray(firstDiff, Math.min(cut, current.length)), firstDiff);
      if (cut < durable.length) out.set(durable.subarray(cut, Math.min(length, durable.length)), cut);
      if (length > durable.length && this.#random() < 0.3) {
        out.fill(0, Math.max(cut, durable.length + Math.floor(this.#random() * (length - durable.length))));
      }
    }
    return out;
  }

  // ---- internals ------------------------------------------------------------

  async #begin(op: FsOp, p: string): Promise<void> {
    this.#checkAlive(op, p);
    const n = ++this.opCount;
    if (this.#armed !== undefined && n >= this.#armed.atOp) {
      this.crash(this.#armed.options);
      this.#checkAlive(op, p);
    }
    const ticks = 1 + Math.floor(this.#random() * (this.#jitterTicksMax + 1));
    for (let i = 0; i < ticks; i++) await new Promise<void>((r) => setImmediate(r));
    this.#checkAlive(op, p);
  }

  #checkAlive(op: FsOp, p: string): void {
    if (this.#frozen) throw fsError('EIO', op, p, 'power cut');
  }

  #lookup(p: string, op: FsOp): { parent: DirNode; name: string; node: Node | undefined } {
    const parts = split(p);
    const name = parts.pop();
    if (name === undefined) return { parent: this.#root, name: '', node: this.#root };
    let dir: DirNode = this.#root;
    for (const part of parts) {
      const next = dir.entries.get(part);
      if (next === undefined) throw fsError('ENOENT', op, p);
      if (next.kind !== 'dir') throw fsError('ENOTDIR', op, p);
      dir = next;
    }
    return { parent: dir, name, node: dir.entries.get(name) };
  }

  #file(p: string, op: FsOp): FileNode {
    const { node } = this.#lookup(p, op);
    if (node === undefined) throw fsError('ENOENT', op, p);
    if (node.kind !== 'file') throw fsError('EISDIR', op, p);
    return node;
  }

  #dir(p: string, op: FsOp): DirNode {
    const { node } = this.#lookup(p, op);
    if (node === undefined) throw fsError('ENOENT', op, p);
    if (node.kind !== 'dir') throw fsError('ENOTDIR', op, p);
    return node;
  }

  usedBytes(): number {
    let total = 0;
    const seen = new Set<Node>();
    const walk = (dir: DirNode): void => {
      for (const child of dir.entries.values()) {
        if (seen.has(child)) continue;
        seen.add(child);
        if (child.kind === 'dir') walk(child);
        else total += child.size;
      }
    };
    walk(this.#root);
    return total;
  }

  /** Called by handles: the op boundary plus the liveness check. */
  async handleOp(op: FsOp, p: string): Promise<void> {
    await this.#begin(op, p);
  }

  writeAt(file: FileNode, p: string, buffers: readonly Uint8Array[], position: number): number {
    let total = 0;
    for (const b of buffers) total += b.byteLength;
    const end = position + total;
    if (end > file.size && this.usedBytes() + (end - file.size) > this.#capacityBytes) {
      throw fsError('ENOSPC', 'write', p);
    }
    if (end > file.data.length) {
      const grown = new Uint8Array(Math.max(end, file.data.length * 2, 4096));
      grown.set(file.data.subarray(0, file.size));
      file.data = grown;
    }
    if (position > file.size) file.data.fill(0, file.size, position);
    let at = position;
    for (const b of buffers) {
      file.data.set(b, at);
      at += b.byteLength;
    }
    file.size = Math.max(file.size, end);
    file.mtimeMs = Date.now();
    return total;
  }

  // ---- FileSystem -------------------------------------------------------------

  async open(p: string, mode: OpenMode): Promise<FileHandle> {
    await this.#begin('open', p);
    const { parent, name, node } = this.#lookup(p, 'open');
    let file: FileNode;
    if (node === undefined) {
      if (mode === 'read' || mode === 'readWrite') throw fsError('ENOENT', 'open', p);
      file = {
        kind: 'file',
        data: new Uint8Array(0),
        size: 0,
        mtimeMs: Date.now(),
        durable: new Uint8Array(0),
      };
      parent.entries.set(name, file);
    } else {
      if (mode === 'createExclusive') throw fsError('EEXIST', 'open', p);
      if (node.kind !== 'file') throw fsError('EISDIR', 'open', p);
      file = node;
      if (mode === 'createTruncate') file.size = 0;
    }
    return new PowerCutFileHandle(this, normalize(p), file, mode !== 'read');
  }

  async readFile(p: string): Promise<Uint8Array> {
    await this.#begin('readFile', p);
    const file = this.#file(p, 'readFile');
    return file.data.slice(0, file.size);
  }

  async rename(from: string, to: string): Promise<void> {
    await this.#begin('rename', from);
    const src = this.#lookup(from, 'rename');
    if (src.node === undefined) throw fsError('ENOENT', 'rename', from);
    const dst = this.#lookup(to, 'rename');
    if (dst.node !== undefined && dst.node.kind === 'dir') throw fsError('EISDIR', 'rename', to);
    src.parent.entries.delete(src.name);
    dst.parent.entries.set(dst.name, src.node);
  }

  async unlink(p: string): Promise<void> {
    await this.#begin('unlink', p);
    const { parent, name, node } = this.#lookup(p, 'unlink');
    if (node === undefined) throw fsError('ENOENT', 'unlink', p);
    if (node.kind === 'dir') throw fsError('EISDIR', 'unlink', p);
    parent.entries.delete(name);
  }

  async link(existing: string, p: string): Promise<void> {
    await this.#begin('link', p);
    const src = this.#file(existing, 'link');
    const dst = this.#lookup(p, 'link');
    if (dst.node !== undefined) throw fsError('EEXIST', 'link', p);
    dst.parent.entries.set(dst.name, src);
  }

  async rmdir(p: string): Promise<void> {
    await this.#begin('rmdir', p);
    const { parent, name, node } = this.#lookup(p, 'rmdir');
    if (node === undefined) throw fsError('ENOENT', 'rmdir', p);
    if (node.kind !== 'dir') throw fsError('ENOTDIR', 'rmdir', p);
    if (node.entries.size > 0) throw fsError('ENOTEMPTY', 'rmdir', p);
    parent.entries.delete(name);
  }

  async readdir(p: string): Promise<string[]> {
    await this.#begin('readdir', p);
    return [...this.#dir(p, 'readdir').entries.keys()];
  }

  async mkdir(p: string, options?: { readonly recursive?: boolean }): Promise<void> {
    await this.#begin('mkdir', p);
    const recursive = options?.recursive ?? false;
    let dir = this.#root;
    const parts = split(p);
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      const last = i === parts.length - 1;
      const next = dir.entries.get(part);
      if (next === undefined) {
        if (!last && !recursive) throw fsError('ENOENT', 'mkdir', p);
        const created: DirNode = { kind: 'dir', entries: new Map(), durable: new Map() };
        dir.entries.set(part, created);
        dir = created;
      } else if (next.kind !== 'dir') {
        throw fsError(last ? 'EEXIST' : 'ENOTDIR', 'mkdir', p);
      } else {
        if (last && !recursive) throw fsError('EEXIST', 'mkdir', p);
        dir = next;
      }
    }
  }

  async syncDir(p: string): Promise<void> {
    this.#checkAlive('syncDir', p);
    const dir = this.#dir(p, 'syncDir');
    const snapshot = new Map(dir.entries);
    const ticket = (dir.syncsStarted = (dir.syncsStarted ?? 0) + 1);
    await this.#begin('syncDir', p);
    if (ticket > (dir.durableSync ?? 0)) {
      dir.durable = snapshot;
      dir.durableSync = ticket;
    }
  }

  async stat(p: string): Promise<FileStat> {
    await this.#begin('stat', p);
    const { node } = this.#lookup(p, 'stat');
    if (node === undefined) throw fsError('ENOENT', 'stat', p);
    return node.kind === 'dir'
      ? { size: 4096, isFile: false, isDirectory: true, mtimeMs: 0 }
      : { size: node.size, isFile: true, isDirectory: false, mtimeMs: node.mtimeMs };
  }

  async statfs(p: string): Promise<{ readonly freeBytes: number }> {
    await this.#begin('statfs', p);
    return { freeBytes: Math.max(0, this.#capacityBytes - this.usedBytes()) };
  }

  /** Durable contents of a file right now (what a cut would keep, without a torn tail); for assertions. */
  durableContents(p: string): Uint8Array | undefined {
    const { node } = this.#lookup(p, 'stat');
    return node?.kind === 'file' ? node.durable.slice() : undefined;
  }
}

class PowerCutFileHandle implements FileHandle {
  readonly path: string;
  readonly #fs: PowerCutFileSystem;
  readonly #file: FileNode;
  readonly #writable: boolean;
  #closed = false;

  constructor(fs: PowerCutFileSystem, p: string, file: FileNode, writable: boolean) {
    this.#fs = fs;
    this.path = p;
    this.#file = file;
    this.#writable = writable;
  }

  async #op(op: FsOp): Promise<void> {
    if (this.#closed) throw fsError('EBADF', op, this.path);
    await this.#fs.handleOp(op, this.path);
    if (this.#closed) throw fsError('EBADF', op, this.path);
  }

  async write(buffers: readonly Uint8Array[], position: number): Promise<number> {
    await this.#op('write');
    if (!this.#writable) throw fsError('EBADF', 'write', this.path);
    return this.#fs.writeAt(this.#file, this.path, buffers, position);
  }

  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    await this.#op('read');
    const n = Math.max(0, Math.min(length, this.#file.size - position));
    buffer.set(this.#file.data.subarray(position, position + n), offset);
    return n;
  }

  async datasync(): Promise<void> {
    await this.#sync('datasync');
  }

  async sync(): Promise<void> {
    await this.#sync('sync');
  }

  async #sync(op: FsOp): Promise<void> {
    // Covers what was written before the call, and only once it returns.
    if (this.#closed) throw fsError('EBADF', op, this.path);
    const file = this.#file;
    const snapshot = file.data.slice(0, file.size);
    const ticket = (file.syncsStarted = (file.syncsStarted ?? 0) + 1);
    await this.#op(op);
    if (ticket > (file.durableSync ?? 0)) {
      file.durable = snapshot;
      file.durableSync = ticket;
    }
  }

  async truncate(length: number): Promise<void> {
    await this.#op('truncate');
    if (!this.#writable) throw fsError('EBADF', 'truncate', this.path);
    if (length > this.#file.size)
      this.#fs.writeAt(this.#file, this.path, [new Uint8Array(length - this.#file.size)], this.#file.size);
    this.#file.size = length;
    this.#file.mtimeMs = Date.now();
  }

  async stat(): Promise<FileStat> {
    await this.#op('fstat');
    return { size: this.#file.size, isFile: true, isDirectory: false, mtimeMs: this.#file.mtimeMs };
  }

  async close(): Promise<void> {
    if (this.#closed) throw fsError('EBADF', 'close', this.path);
    this.#closed = true;
    // Closing never makes anything durable (no implicit sync on close).
    await this.#fs.handleOp('close', this.path);
  }
}

function split(p: string): string[] {
  return normalize(p)
    .split('/')
    .filter((s) => s.length > 0);
}

function normalize(p: string): string {
  return path.posix.resolve('/', p);
}

function startsWith(a: Uint8Array, prefix: Uint8Array): boolean {
  if (prefix.length > a.length) return false;
  for (let i = 0; i < prefix.length; i++) if (a[i] !== prefix[i]) return false;
  return true;
}
