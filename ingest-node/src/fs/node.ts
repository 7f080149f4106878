// The real filesystem, on node:fs/promises. fdatasync for data (the WAL's
// hot path: it skips the inode timestamps fsync would also flush), fsync of a
// directory fd for its entries (new segment, rename of a state file).
import fsp from 'node:fs/promises';
import { constants, writeSync, writevSync } from 'node:fs';
import type { FileHandle, FileStat, FileSystem, OpenHints, OpenMode } from './types.ts';

/**
 * On a latency-critical handle (the WAL's segments: OpenHints), writes up to
 * this many bytes are made on the calling thread (a pwrite into the page
 * cache: tens of microseconds) instead of through libuv's pool. The
 * pool round trip costs more than the write: a thread to wake, a queue the
 * delivery work also uses, and a completion that waits for its turn on the
 * event loop, ~0.35 ms per WAL group against ~0.04 ms this way (issue 15,
 * measured by bench:ingest's write ms per group). The WAL's group at 1 KiB
 * per request is ~32 KiB; larger writes (64 KiB bodies make groups of
 * megabytes) still go through the pool, so the event loop is never held for
 * long. fdatasync always goes through the pool. Other handles (delivery's
 * scratch files, the local store) keep every write on the pool: a write
 * that waits for the disk (dirty-page throttling while delivery writes
 * hundreds of MB) must not hold the thread that answers requests for them.
 */
export const SYNC_WRITE_BYTES_MAX = 128 * 1024;
/**
 * A write into the page cache can still wait for the disk (dirty-page
 * throttling, a journal commit in progress): one on the calling thread that
 * took longer than this sends the handle's writes back to the pool for
 * SYNC_WRITE_BACKOFF_MS, so a slow disk costs the event loop at most one
 * such write per back-off, not one per group. Measured on ext4 beside a
 * running fdatasync: p99 0.1 ms, worst 2-3 ms for 32-128 KiB.
 */
export const SYNC_WRITE_SLOW_MS = 2;
export const SYNC_WRITE_BACKOFF_MS = 1000;

export interface NodeFileSystemOptions {
  /** Monotonic ms, for the slow-write back-off; default performance.now. */
  readonly monotonicMs?: () => number;
}

const FLAGS: Record<OpenMode, string | number> = {
  read: 'r',
  readWrite: 'r+',
  createExclusive: 'wx+',
  createTruncate: 'w+',
};

class NodeFileHandle implements FileHandle {
  readonly path: string;
  readonly #fh: fsp.FileHandle;
  readonly #syncWriteBytesMax: number;
  readonly #now: () => number;
  /** Until when (monotonic ms) writes go through the pool after a slow one here. */
  #poolUntilMs = -Infinity;

  constructor(path: string, fh: fsp.FileHandle, hints: OpenHints | undefined, now: () => number) {
    this.path = path;
    this.#fh = fh;
    this.#syncWriteBytesMax = hints?.latencyCritical === true ? SYNC_WRITE_BYTES_MAX : -1;
    this.#now = now;
  }

  async write(buffers: readonly Uint8Array[], position: number): Promise<number> {
    // libuv loops over partial writes itself and returns the total, so a
    // short count here means the kernel refused the rest (ENOSPC after a
    // partial write), not that we should simply retry. (The synchronous
    // calls run the same libuv code.) A synchronous error becomes this
    // promise's rejection, as the pool's would be.
    let total = 0;
    for (const b of buffers) total += b.byteLength;
    if (total <= this.#syncWriteBytesMax) {
      const t0 = this.#now();
      if (t0 >= this.#poolUntilMs) {
        const fd = this.#fh.fd;
        try {
          return buffers.length === 1
            ? writeSync(fd, buffers[0]!, 0, total, position)
            : writevSync(fd, buffers, position);
        } finally {
          if (this.#now() - t0 > SYNC_WRITE_SLOW_MS) this.#poolUntilMs = this.#now() + SYNC_WRITE_BACKOFF_MS;
        }
      }
    }
    if (buffers.length === 1) {
      const buf = buffers[0]!;
      const { bytesWritten } = await this.#fh.write(buf, 0, buf.byteLength, position);
      return bytesWritten;
    }
    const { bytesWritten } = await this.#fh.writev(buffers as Uint8Array[], position);
    return bytesWritten;
  }

  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    const { bytesRead } = await this.#fh.read(buffer, offset, length, position);
    return bytesRead;
  }

  datasync(): Promise<void> {
    return this.#fh.datasync();
  }

  sync(): Promise<void> {
    return this.#fh.sync();
  }

  truncate(length: number): Promise<void> {
    return this.#fh.truncate(length);
  }

  async stat(): Promise<FileStat> {
    const st = await this.#fh.stat();
    return { size: st.size, isFile: st.isFile(), isDirectory: st.isDirectory(), mtimeMs: st.mtimeMs };
  }

  close(): Promise<void> {
    return this.#fh.close();
  }
}

export class NodeFileSystem implements FileSystem {
  readonly #now: () => number;

  constructor(opts: NodeFileSystemOptions = {}) {
    this.#now = opts.monotonicMs ?? (() => performance.now());
  }

  async open(path: string, mode: OpenMode, hints?: OpenHints): Promise<FileHandle> {
    return new NodeFileHandle(path, await fsp.open(path, FLAGS[mode], 0o640), hints, this.#now);
  }

  async readFile(path: string): Promise<Uint8Array> {
    return fsp.readFile(path);
  }

  rename(from: string, to: string): Promise<void> {
    return fsp.rename(from, to);
  }

  unlink(path: string): Promise<void> {
    return fsp.unlink(path);
  }

  link(existingPath: string, newPath: string): Promise<void> {
    return fsp.link(existingPath, newPath);
  }

  rmdir(path: string): Promise<void> {
    return fsp.rmdir(path);
  }

  readdir(path: string): Promise<string[]> {
    return fsp.readdir(path);
  }

  async mkdir(path: string, options?: { readonly recursive?: boolean }): Promise<void> {
    await fsp.mkdir(path, { recursive: options?.recursive ?? false, mode: 0o750 });
  }

  async syncDir(path: string): Promise<void> {
    // O_DIRECTORY makes this fail loudly if `path` is a file rather than
    // silently syncing the wrong thing.
    const fh = await fsp.open(path, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  async stat(path: string): Promise<FileStat> {
    const st = await fsp.stat(path);
    return { size: st.size, isFile: st.isFile(), isDirectory: st.isDirectory(), mtimeMs: st.mtimeMs };
  }

  async statfs(path: string): Promise<{ readonly freeBytes: number }> {
    const st = await fsp.statfs(path);
    return { freeBytes: st.bavail * st.bsize };
  }
}
