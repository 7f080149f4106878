// `.wal.zst` = zstd of the exact sealed segment bytes (DESIGN §4), made with
// Node's built-in zstd (node:zlib, no native binding), streamed, with sha256
// and byte counts of both sides computed in the same pass.
//
// The output is written next to the segment as temp + fsync + rename, so a
// restart finds either a complete archive (whose checksum the state file can
// trust) or none, and a retried upload re-reads the file instead of
// recompressing.
import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { HashTap } from '../store/hashing.ts';
import { createZstdCompressor, type ZstdFrameOptions } from './zstd-frame.ts';

export { createZstdCompressor, zstdLevel } from './zstd-frame.ts';

export interface CompressResult {
  /** The segment as read: what the marker's `segment` field records. */
  readonly inputBytes: number;
  readonly inputSha256: string;
  /** The archive: what the `segment` artifact records and the upload verifies. */
  readonly outputBytes: number;
  readonly outputSha256: string;
}

export interface CompressOptions extends ZstdFrameOptions {
  readonly signal?: AbortSignal;
}

/** Compresses `source` into `sink`, hashing both sides. */
export async function zstdCompressStream(
  source: Readable,
  sink: Writable,
  opts: CompressOptions = {},
): Promise<CompressResult> {
  const inTap = new HashTap();
  const outTap = new HashTap();
  const zstd = createZstdCompressor(opts);
  if (opts.signal !== undefined) await pipeline(source, inTap, zstd, outTap, sink, { signal: opts.signal });
  else await pipeline(source, inTap, zstd, outTap, sink);
  return {
    inputBytes: inTap.bytes,
    inputSha256: inTap.sha256,
    outputBytes: outTap.bytes,
    outputSha256: outTap.sha256,
  };
}

/**
 * Compresses the file `src` into `dst` atomically (temp in dst's folder,
 * fsync, rename, fsync the folder).
 */
export async function zstdCompressFile(
  src: string,
  dst: string,
  opts: CompressOptions = {},
): Promise<CompressResult> {
  const dir = path.dirname(dst);
  const tmp = path.join(dir, `.${path.basename(dst)}.${randomUUID()}.tmp`);
  let result: CompressResult;
  try {
    // `flush: true` fsyncs the file before the stream closes: the archive's
    // bytes are durable before the rename makes it visible.
    result = await zstdCompressStream(
      createReadStream(src),
      createWriteStream(tmp, { flags: 'wx', flush: true }),
      opts,
    );
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  try {
    await rename(tmp, dst);
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  return result;
}

/** The inverse, for `expand`, `verify` and tests: the exact segment bytes. */
export function createZstdDecompressor(): zlib.ZstdDecompress {
  return zlib.createZstdDecompress();
}
