// Streams over the FileSystem interface, so delivery's reads of sealed
// segments and its scratch files take the same path as the WAL (and run on
// PowerCutFileSystem in tests), plus `rm -r` for the scratch folder.
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import type { FileHandle, FileSystem } from './types.ts';
import { errorCode, fsError } from './types.ts';

const CHUNK_BYTES = 1 << 20;

/** Bytes [start, end] (inclusive, like fs.createReadStream) of a file. */
export function fileReadStream(
  fs: FileSystem,
  file: string,
  opts: {
    readonly start?: number;
    readonly end?: number;
    readonly chunkBytes?: number;
    /**
     * A buffer of this many bytes to read into, or undefined for a new one:
     * buffers that would otherwise be garbage (the archive worker hands its
     * pieces back). A chunk pushed belongs to the consumer from then on.
     */
    readonly takeBuffer?: (bytes: number) => Buffer | undefined;
  } = {},
): Readable {
  let handle: FileHandle | undefined;
  let pos = opts.start ?? 0;
  const end = opts.end ?? Infinity;
  const chunk = opts.chunkBytes ?? CHUNK_BYTES;
  let destroyed = false;
  // Opened on the first read, not at construction: a stream handed to a
  // consumer that first awaits something else (the store's put) must not
  // fail with nobody listening yet.
  const readChunk = async (): Promise<Buffer | null> => {
    if (handle === undefined) {
      const h = await fs.open(file, 'read');
      // Destroyed while opening: nobody else will close it.
      if (destroyed) {
        await h.close().catch(() => {});
        return null;
      }
      handle = h;
    }
    const want = Math.min(chunk, end + 1 - pos);
    if (want <= 0) return null;
    const buf = opts.takeBuffer?.(want) ?? Buffer.allocUnsafe(want);
    const n = await handle.read(buf, 0, want, pos);
    pos += n;
    return n === 0 ? null : n === want ? buf : buf.subarray(0, n);
  };
  return new Readable({
    highWaterMark: chunk,
    read() {
      readChunk().then(
        (b) => this.push(b),
        (err: unknown) => this.destroy(err as Error),
      );
    },
    destroy(err, cb) {
      destroyed = true;
      const h = handle;
      handle = undefined;
      if (h === undefined) cb(err);
      else
        h.close().then(
          () => cb(err),
          (e: unknown) => cb(err ?? (e as Error)),
        );
    },
  });
}

/**
 * A new file (EEXIST if the name is taken) written front to back. Not synced:
 * for scratch files that a crash simply makes again.
 */
export function fileWriteStream(fs: FileSystem, file: string): Writable {
  let handle: FileHandle | undefined;
  let pos = 0;
  const close = async (): Promise<void> => {
    const h = handle;
    handle = undefined;
    await h?.close();
  };
  return new Writable({
    construct(cb) {
      fs.open(file, 'createExclusive').then(
        (h) => {
          if (this.destroyed) void h.close().catch(() => {});
          else handle = h;
          cb();
        },
        (err: unknown) => (this.destroyed ? cb() : cb(err as Error)),
      );
    },
    writev(chunks, cb) {
      const bufs = chunks.map((c) => c.chunk as Buffer);
      let total = 0;
      for (const b of bufs) total += b.length;
      handle!.write(bufs, pos).then(
        (n) => {
          if (n !== total) {
            cb(fsError('EIO', 'write', file, `short write (${n} of ${total} bytes)`));
            return;
          }
          pos += n;
          cb();
        },
        (err: unknown) => cb(err as Error),
      );
    },
    final(cb) {
      close().then(
        () => cb(),
        (err: unknown) => cb(err as Error),
      );
    },
    destroy(err, cb) {
      close().then(
        () => cb(err),
        (e: unknown) => cb(err ?? (e as Error)),
      );
    },
  });
}

/** `rm -rf`: removes `target` and everything under it; a missing target is fine. Not made durable. */
export async function removeTree(fs: FileSystem, target: string): Promise<void> {
  let st;
  try {
    st = await fs.stat(target);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return;
    throw err;
  }
  if (!st.isDirectory) {
    await fs.unlink(target).catch((err: unknown) => {
      if (errorCode(err) !== 'ENOENT') throw err;
    });
    return;
  }
  for (const name of await fs.readdir(target)) await removeTree(fs, path.join(target, name));
  await fs.rmdir(target).catch((err: unknown) => {
    if (errorCode(err) !== 'ENOENT') throw err;
  });
}
