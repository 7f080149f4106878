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

/**
 * Level 1. Measured with src/delivery/bench-zstd.ts (64 MiB of NDJSON events,
 * 2-core dev machine, single stream): level 1 ≈ 340-360 MB/s at ratio 8.0;
 * level 3 (zstd's default) ≈ 210-270 MB/s at 7.8; level 6 ≈ 120 MB/s at 8.9;
 * level 9 ≈ 60-75 MB/s at 9.3. On NDJSON, levels 1-2 are at least as small
 * as 3-4 and faster (a second, more repetitive log-like sample agreed: 10.7
 * vs 10.3), so 3 buys nothing. Level 6+ saves 10-25 % of archive bytes for
 * 3× the CPU, which a 2-core node also needs for HTTP and DuckDB views; the
 * sealer must never fall behind the WAL. Callers may pass a higher `level`.
 */
export const zstdLevel = 1;

export interface CompressResult {
  /** The segment as read: what the marker's `segment` field records. */
  readonly inputBytes: number;
  readonly inputSha256: string;
  /** The archive: what the `segment` artifact records and the upload verifies. */
  readonly outputBytes: number;
  readonly outputSha256: string;
}

export interface CompressOptions {
  readonly level?: number;
  /** Known input size: recorded in the zstd frame header so readers can pre-size. */
  readonly inputBytes?: number;
  readonly signal?: AbortSignal;
}

export function createZstdCompressor(opts: CompressOptions = {}): zlib.ZstdCompress {
  return zlib.createZstdCompress({
    params: {
      [zlib.constants.ZSTD_c_compressionLevel]: opts.level ?? zstdLevel,
      // A content checksum in the frame: `zstd -t` and our reader detect a
      // corrupted archive even without the marker's sha256.
      [zlib.constants.ZSTD_c_checksumFlag]: 1,
    },
    ...(opts.inputBytes !== undefined ? { pledgedSrcSize: opts.inputBytes } : {}),
  });
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
