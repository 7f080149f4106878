// The two durable-metadata idioms the WAL needs, written once.
import path from 'node:path';
import type { FileSystem } from './types.ts';
import { errorCode, fsError } from './types.ts';

/**
 * Replaces `target` with `bytes` so that after a crash it holds either the old
 * contents or the new, never a mix: write a temp file, fdatasync it, rename
 * over the target, fsync the directory (without that last step the rename
 * itself may be lost).
 */
export async function writeFileAtomic(
  fs: FileSystem,
  target: string,
  bytes: Uint8Array | readonly Uint8Array[],
): Promise<void> {
  const tmp = `${target}.tmp`;
  // Pieces go out as one writev: the caller need not concatenate them on the event loop.
  const parts = bytes instanceof Uint8Array ? [bytes] : bytes;
  let total = 0;
  for (const p of parts) total += p.byteLength;
  try {
    const fh = await fs.open(tmp, 'createTruncate');
    try {
      const n = await fh.write(parts, 0);
      if (n !== total) throw fsError('EIO', 'write', tmp, `short write (${n} of ${total} bytes)`);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, target);
  } catch (err) {
    await fs.unlink(tmp).catch(() => {});
    throw err;
  }
  await fs.syncDir(path.dirname(target));
}

/**
 * `mkdir -p` whose result survives a power cut: each directory it creates is
 * followed by an fsync of its parent. Returns whether `dir` itself was created.
 */
export async function mkdirDurable(fs: FileSystem, dir: string): Promise<boolean> {
  const abs = path.resolve(dir);
  const missing: string[] = [];
  for (let at = abs; ; at = path.dirname(at)) {
    try {
      const st = await fs.stat(at);
      if (!st.isDirectory) throw fsError('ENOTDIR', 'mkdir', at);
      break;
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') throw err;
      missing.push(at);
      if (path.dirname(at) === at) break;
    }
  }
  for (const d of missing.reverse()) {
    try {
      await fs.mkdir(d);
    } catch (err) {
      if (errorCode(err) !== 'EEXIST') throw err;
    }
    await fs.syncDir(path.dirname(d));
  }
  return missing.length > 0;
}
