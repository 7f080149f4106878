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

  constructor(path: string, fh: fsp.FileHandle, hints?: OpenHints) {
    this.path = path;
    this.#fh = fh;
    this.#syncWriteBytesMax = hints?.latencyCritical === true ? SYNC_WRITE_BYTES_MAX : -1;
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
      const fd = this.#fh.fd;
      return buffers.length === 1
        ? writeSync(fd, buffers[0]!, 0, total, position)
        : writevSync(fd, buffers, position);
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
  async open(path: string, mode: OpenMode, hints?: OpenHints): Promise<FileHandle> {
    return new NodeFileHandle(path, await fsp.open(path, FLAGS[mode], 0o640), hints);
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
