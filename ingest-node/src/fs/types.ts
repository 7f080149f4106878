// The slice of a filesystem the WAL, its state file, the delivery pipeline's
// scratch files and the local-folder object store need, and nothing more.
// Keeping it this small is what lets the same code run on the real disk
// (NodeFileSystem), under injected faults (FaultFileSystem) and through
// simulated power cuts (PowerCutFileSystem), so durability is tested, not hoped.
//
// Errors are Node-style: an Error with `code` ('ENOENT', 'EEXIST', 'EIO',
// 'ENOSPC', …), `syscall` and `path`, whichever implementation raised it.

/**
 * How a file is opened.
 * - `read`: existing file, read only.
 * - `readWrite`: existing file, read and positional write.
 * - `createExclusive`: new file, fails with EEXIST if the name exists (segments).
 * - `createTruncate`: create or truncate to zero (temp files of atomic writes).
 */
export type OpenMode = 'read' | 'readWrite' | 'createExclusive' | 'createTruncate';

export interface FileStat {
  readonly size: number;
  readonly isFile: boolean;
  readonly isDirectory: boolean;
  /** Last modification (the local store's lastModified and its stale temp-file sweep). */
  readonly mtimeMs: number;
}

export interface FileHandle {
  readonly path: string;
  /**
   * Writes the buffers back to back starting at `position` and returns how many
   * bytes reached the file. A result smaller than the total is a short write
   * (the volume filled up mid-write): the caller decides what it means.
   */
  write(buffers: readonly Uint8Array[], position: number): Promise<number>;
  /** Reads up to `length` bytes at `position` into `buffer[offset…]`; returns bytes read (0 at EOF). */
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /** fdatasync: the file's data and the metadata needed to read it back (its size). */
  datasync(): Promise<void>;
  /** fsync: data and all metadata. */
  sync(): Promise<void>;
  truncate(length: number): Promise<void>;
  stat(): Promise<FileStat>;
  close(): Promise<void>;
}

export interface FileSystem {
  open(path: string, mode: OpenMode): Promise<FileHandle>;
  /** Whole file contents (small files, and segment scans at recovery). */
  readFile(path: string): Promise<Uint8Array>;
  /** Atomically replaces `to` if it exists (POSIX rename). Durable only after syncDir of both parents. */
  rename(from: string, to: string): Promise<void>;
  /** Durable only after syncDir of the parent. */
  unlink(path: string): Promise<void>;
  /**
   * A second name for an existing file (link(2)); fails with EEXIST when
   * `newPath` exists, never replacing it: the local store's create-if-absent.
   * Durable only after syncDir of the new name's parent.
   */
  link(existingPath: string, newPath: string): Promise<void>;
  /** Removes an empty directory. Durable only after syncDir of the parent. */
  rmdir(path: string): Promise<void>;
  /** Entry names (not paths), in no particular order. */
  readdir(path: string): Promise<string[]>;
  /** Like `mkdir -p` when recursive; the new entries are durable only after syncDir of each parent. */
  mkdir(path: string, options?: { readonly recursive?: boolean }): Promise<void>;
  /** fsync of the directory itself: makes its entries (creates, renames, unlinks) durable. */
  syncDir(path: string): Promise<void>;
  stat(path: string): Promise<FileStat>;
  /** Bytes available to this (unprivileged) process on the volume holding `path`. */
  statfs(path: string): Promise<{ readonly freeBytes: number }>;
}

/** The operations a FaultFileSystem can fail, and the keys of its call counters. */
export type FsOp =
  | 'open'
  | 'readFile'
  | 'rename'
  | 'unlink'
  | 'link'
  | 'rmdir'
  | 'readdir'
  | 'mkdir'
  | 'syncDir'
  | 'stat'
  | 'statfs'
  | 'write'
  | 'read'
  | 'datasync'
  | 'sync'
  | 'truncate'
  | 'fstat'
  | 'close';

export interface FsError extends Error {
  code: string;
  syscall: string;
  path: string;
  errno?: number;
}

/** A Node-shaped error (`err.code === 'ENOENT'` etc.) for the non-Node implementations. */
export function fsError(code: string, syscall: string, path: string, detail?: string): FsError {
  const err = new Error(`${code}: ${detail ?? describe(code)}, ${syscall} '${path}'`) as FsError;
  err.code = code;
  err.syscall = syscall;
  err.path = path;
  return err;
}

function describe(code: string): string {
  switch (code) {
    case 'ENOENT':
      return 'no such file or directory';
    case 'EEXIST':
      return 'file already exists';
    case 'EIO':
      return 'i/o error';
    case 'ENOSPC':
      return 'no space left on device';
    case 'ENOTDIR':
      return 'not a directory';
    case 'EISDIR':
      return 'illegal operation on a directory';
    case 'ENOTEMPTY':
      return 'directory not empty';
    case 'EBADF':
      return 'bad file descriptor';
    default:
      return code;
  }
}

export function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string')
    return err.code;
  return undefined;
}
