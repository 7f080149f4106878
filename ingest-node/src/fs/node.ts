// The real filesystem, on node:fs/promises. fdatasync for data (the WAL's
// hot path: it skips the inode timestamps fsync would also flush), fsync of a
// directory fd for its entries (new segment, rename of a state file).
import fsp from 'node:fs/promises';
import { constants } from 'node:fs';
import type { FileHandle, FileStat, FileSystem, OpenMode } from './types.ts';

const FLAGS: Record<OpenMode, string | number> = {
  read: 'r',
  readWrite: 'r+',
  createExclusive: 'wx+',
  createTruncate: 'w+',
};

class NodeFileHandle implements FileHandle {
  readonly path: string;
  readonly #fh: fsp.FileHandle;

  constructor(path: string, fh: fsp.FileHandle) {
    this.path = path;
    this.#fh = fh;
  }

  async write(buffers: readonly Uint8Array[], position: number): Promise<number> {
    // libuv loops over partial writes itself and returns the total, so a
    // short count here means the kernel refused the rest (ENOSPC after a
    // partial write), not that we should simply retry.
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
  async open(path: string, mode: OpenMode): Promise<FileHandle> {
    return new NodeFileHandle(path, await fsp.open(path, FLAGS[mode], 0o640));
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
