// A FileSystem wrapper that fails chosen operations on chosen paths, for tests
// of the WAL's error paths: EIO, ENOSPC, short writes, and gates that hold an
// operation open (a datasync in progress) until the test releases it.
import type { FileHandle, FileStat, FileSystem, FsOp, OpenMode } from './types.ts';
import { fsError } from './types.ts';

/**
 * - `EIO`, `ENOSPC`, `{ code }`: the call fails with that error and has no effect.
 * - `{ code, applied: true }`: the call takes effect, then reports the error
 *   (a write that landed, an fdatasync that did flush, yet returned EIO).
 * - `short`: writes only: half the bytes land and the count says so; elsewhere it acts as EIO.
 * - `drop`: the call reports success without reaching the disk: a disk (or a
 *   WAL bug) that skips a datasync/sync/syncDir. Tests use it to prove the
 *   power-cut tests catch a missing fsync.
 */
export type Fault =
  'EIO' | 'ENOSPC' | 'short' | 'drop' | { readonly code: string; readonly applied?: boolean };

export interface FaultCall {
  readonly op: FsOp;
  readonly path: string;
  /** 1-based count of calls of this op (all paths) including this one. */
  readonly n: number;
}

export interface FaultRule {
  readonly op: FsOp | readonly FsOp[];
  /** Exact path, a pattern, or a predicate; any path when absent. */
  readonly path?: string | RegExp | ((path: string) => boolean);
  /** What happens to a matching call; absent means the call only passes the gate. */
  readonly fault?: Fault;
  /** Let this many matching calls through before the rule starts to apply. */
  readonly skip?: number;
  /** How many matching calls the rule applies to (default 1; Infinity for "from now on"). */
  readonly times?: number;
  /** Awaited before a matching call proceeds (or fails): holds the call open. */
  readonly gate?: (call: FaultCall) => Promise<void> | void;
}

interface ActiveRule {
  readonly rule: FaultRule;
  readonly ops: ReadonlySet<FsOp>;
  skipLeft: number;
  timesLeft: number;
}

export class FaultFileSystem implements FileSystem {
  readonly inner: FileSystem;
  /** Calls per operation, faulted or not. */
  readonly calls: Record<FsOp, number> = {
    open: 0,
    readFile: 0,
    rename: 0,
    unlink: 0,
    link: 0,
    rmdir: 0,
    readdir: 0,
    mkdir: 0,
    syncDir: 0,
    stat: 0,
    statfs: 0,
    write: 0,
    read: 0,
    datasync: 0,
    sync: 0,
    truncate: 0,
    fstat: 0,
    close: 0,
  };
  /** Calls that a rule failed, in order. */
  readonly injected: FaultCall[] = [];
  #rules: ActiveRule[] = [];

  constructor(inner: FileSystem, rules: readonly FaultRule[] = []) {
    this.inner = inner;
    for (const r of rules) this.inject(r);
  }

  /** Adds a rule; returns a function that removes it. */
  inject(rule: FaultRule): () => void {
    const active: ActiveRule = {
      rule,
      ops: new Set(typeof rule.op === 'string' ? [rule.op] : rule.op),
      skipLeft: rule.skip ?? 0,
      timesLeft: rule.times ?? 1,
    };
    this.#rules.push(active);
    return () => {
      this.#rules = this.#rules.filter((r) => r !== active);
    };
  }

  clear(): void {
    this.#rules = [];
  }

  /**
   * Counts the call, passes the gates of the rules that apply, and returns
   * the fault to apply (if any). Rules are matched in insertion order; a
   * gate-only rule (no `fault`) never hides a later rule, the first rule with
   * a fault wins and ends the matching.
   */
  async intercept(op: FsOp, path: string): Promise<Fault | undefined> {
    const call: FaultCall = { op, path, n: ++this.calls[op] };
    const gates: ((call: FaultCall) => Promise<void> | void)[] = [];
    let fault: Fault | undefined;
    for (const r of this.#rules) {
      if (!r.ops.has(op) || !matches(r.rule.path, path) || r.timesLeft <= 0) continue;
      if (r.skipLeft > 0) {
        r.skipLeft--;
        continue;
      }
      r.timesLeft--;
      if (r.rule.gate) gates.push(r.rule.gate);
      if (r.rule.fault !== undefined) {
        fault = r.rule.fault;
        break;
      }
    }
    for (const gate of gates) await gate(call);
    if (fault !== undefined) this.injected.push(call);
    return fault;
  }

  async #run<T>(op: FsOp, path: string, fn: () => Promise<T>): Promise<T> {
    const fault = await this.intercept(op, path);
    if (fault === 'drop' && op === 'syncDir') return undefined as T;
    if (fault !== undefined && !isApplied(fault)) throw toError(fault, op, path);
    const result = await fn();
    if (fault !== undefined) throw toError(fault, op, path);
    return result;
  }

  async open(path: string, mode: OpenMode): Promise<FileHandle> {
    const inner = await this.#run('open', path, () => this.inner.open(path, mode));
    return new FaultFileHandle(this, inner);
  }
  readFile(path: string): Promise<Uint8Array> {
    return this.#run('readFile', path, () => this.inner.readFile(path));
  }
  rename(from: string, to: string): Promise<void> {
    return this.#run('rename', from, () => this.inner.rename(from, to));
  }
  unlink(path: string): Promise<void> {
    return this.#run('unlink', path, () => this.inner.unlink(path));
  }
  link(existingPath: string, newPath: string): Promise<void> {
    return this.#run('link', newPath, () => this.inner.link(existingPath, newPath));
  }
  rmdir(path: string): Promise<void> {
    return this.#run('rmdir', path, () => this.inner.rmdir(path));
  }
  readdir(path: string): Promise<string[]> {
    return this.#run('readdir', path, () => this.inner.readdir(path));
  }
  mkdir(path: string, options?: { readonly recursive?: boolean }): Promise<void> {
    return this.#run('mkdir', path, () => this.inner.mkdir(path, options));
  }
  syncDir(path: string): Promise<void> {
    return this.#run('syncDir', path, () => this.inner.syncDir(path));
  }
  stat(path: string): Promise<FileStat> {
    return this.#run('stat', path, () => this.inner.stat(path));
  }
  statfs(path: string): Promise<{ readonly freeBytes: number }> {
    return this.#run('statfs', path, () => this.inner.statfs(path));
  }
}

class FaultFileHandle implements FileHandle {
  readonly #fs: FaultFileSystem;
  readonly #inner: FileHandle;

  constructor(fs: FaultFileSystem, inner: FileHandle) {
    this.#fs = fs;
    this.#inner = inner;
  }

  get path(): string {
    return this.#inner.path;
  }

  async #run<T>(op: FsOp, fn: () => Promise<T>): Promise<T> {
    const fault = await this.#fs.intercept(op, this.path);
    if (fault === 'drop' && (op === 'datasync' || op === 'sync')) return undefined as T;
    if (fault !== undefined && !isApplied(fault)) throw toError(fault, op, this.path);
    const result = await fn();
    if (fault !== undefined) throw toError(fault, op, this.path);
    return result;
  }

  async write(buffers: readonly Uint8Array[], position: number): Promise<number> {
    const fault = await this.#fs.intercept('write', this.path);
    if (fault === 'short') {
      // Half the bytes really land, as when the volume fills mid-write.
      const total = buffers.reduce((n, b) => n + b.byteLength, 0);
      const keep = Math.floor(total / 2);
      const parts: Uint8Array[] = [];
      let left = keep;
      for (const b of buffers) {
        if (left <= 0) break;
        parts.push(b.byteLength <= left ? b : b.subarray(0, left));
        left -= Math.min(left, b.byteLength);
      }
      return parts.length === 0 ? 0 : this.#inner.write(parts, position);
    }
    if (fault !== undefined && !isApplied(fault)) throw toError(fault, 'write', this.path);
    const n = await this.#inner.write(buffers, position);
    if (fault !== undefined) throw toError(fault, 'write', this.path);
    return n;
  }
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return this.#run('read', () => this.#inner.read(buffer, offset, length, position));
  }
  datasync(): Promise<void> {
    return this.#run('datasync', () => this.#inner.datasync());
  }
  sync(): Promise<void> {
    return this.#run('sync', () => this.#inner.sync());
  }
  truncate(length: number): Promise<void> {
    return this.#run('truncate', () => this.#inner.truncate(length));
  }
  stat(): Promise<FileStat> {
    return this.#run('fstat', () => this.#inner.stat());
  }
  async close(): Promise<void> {
    // A failed close still releases the descriptor (as on Linux), so the
    // inner handle is closed either way.
    const fault = await this.#fs.intercept('close', this.path);
    await this.#inner.close();
    if (fault !== undefined) throw toError(fault, 'close', this.path);
  }
}

function isApplied(fault: Fault): boolean {
  return typeof fault === 'object' && fault.applied === true;
}

function matches(p: FaultRule['path'], path: string): boolean {
  if (p === undefined) return true;
  if (typeof p === 'string') return p === path;
  if (p instanceof RegExp) return p.test(path);
  return p(path);
}

function toError(fault: Fault, op: FsOp, path: string): Error {
  const code = fault === 'short' || fault === 'drop' ? 'EIO' : typeof fault === 'string' ? fault : fault.code;
  return fsError(code, op, path, `injected ${code}`);
}
