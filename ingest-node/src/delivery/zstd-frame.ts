// The `.wal.zst` archive's zstd settings, and a synchronous encoder of one
// zstd frame fed piece by piece, for the archive worker thread
// (archive-thread.ts). node:zlib's zstd streams run their compression on
// libuv's thread pool, whose threads keep the node's CPU priority and are
// shared with the WAL's file calls; encoding on the (niced) worker thread
// itself keeps that CPU at the worker's priority. Its one-shot
// zstdCompressSync would not do: a segment would have to sit in memory
// whole, or become a series of frames, and node's own zstd decoder (and
// other one-frame readers) silently stop after the first frame.
import zlib from 'node:zlib';

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

export interface ZstdFrameOptions {
  readonly level?: number;
  /** Known input size: recorded in the zstd frame header so readers can pre-size. */
  readonly inputBytes?: number;
}

export function createZstdCompressor(opts: ZstdFrameOptions = {}): zlib.ZstdCompress {
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

/**
 * The native zstd context under a node:zlib stream, as node's own
 * zstdCompressSync drives it (lib/zlib.js processChunkSync): writeSync()
 * compresses on the calling thread and leaves [output room left, input left]
 * in `_writeState`. zstdCompressSync closes the context after one call, so
 * a frame fed in pieces has to drive it directly. Checked when an encoder is
 * made: a node without it fails there, loudly, not with a bad archive.
 */
interface ZlibSyncInternals {
  readonly _handle?: {
    writeSync(
      flush: number,
      input: Uint8Array,
      inOff: number,
      inLen: number,
      output: Uint8Array,
      outOff: number,
      outLen: number,
    ): void;
  } | null;
  readonly _writeState?: Uint32Array;
}

/**
 * Output buffer per writeSync call. zstd emits blocks of up to 128 KiB; twice
 * that is more than what the call that ends the frame can have left to give
 * (one block's compressed bound and the epilogue), so that call always returns
 * with room to spare and is never repeated: a repeated ZSTD_e_end would start
 * a second, empty frame.
 */
const OUT_BYTES = 256 * 1024;
const NOTHING = new Uint8Array(0);

/**
 * One zstd frame (level, content checksum, pledged size: the same settings
 * as createZstdCompressor, and the same bytes as zstdCompressSync over the
 * whole input or that stream given it in one write), compressed synchronously on
 * the calling thread. write() and end() return the frame bytes completed by
 * then, each in an ArrayBuffer of its own (transferable); write() often
 * returns none, as zstd emits whole blocks. Throws if zstd reports an error
 * (a size other than the pledged one). close() releases the native context;
 * end() closes too.
 */
export class ZstdFrameEncoder {
  readonly #z: zlib.ZstdCompress;
  readonly #handle: NonNullable<ZlibSyncInternals['_handle']>;
  readonly #state: Uint32Array;
  readonly #out = new Uint8Array(OUT_BYTES);
  #closed = false;

  constructor(opts: ZstdFrameOptions = {}) {
    this.#z = createZstdCompressor(opts);
    const { _handle: handle, _writeState: state } = this.#z as unknown as ZlibSyncInternals;
    if (typeof handle?.writeSync !== 'function' || !(state instanceof Uint32Array) || state.length < 2) {
      this.#z.close();
      throw new Error(
        `node ${process.version}: node:zlib's zstd context has no synchronous writeSync/_writeState (ZstdFrameEncoder needs them)`,
      );
    }
    // Errors reach the stream as a destroy(); `errored` shows them at once.
    this.#z.on('error', () => {});
    this.#handle = handle;
    this.#state = state;
  }

  write(chunk: Uint8Array): Uint8Array[] {
    return this.#run(chunk, zlib.constants.ZSTD_e_continue);
  }

  /** Ends the frame (last block, content checksum) and closes. */
  end(): Uint8Array[] {
    try {
      return this.#run(NOTHING, zlib.constants.ZSTD_e_end);
    } finally {
      this.close();
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#z.close();
  }

  #run(chunk: Uint8Array, flush: number): Uint8Array[] {
    if (this.#closed) throw new Error('ZstdFrameEncoder: used after end() or close()');
    const out: Uint8Array[] = [];
    let inOff = 0;
    let inLen = chunk.byteLength;
    // As processChunkSync: call again while the output buffer came back
    // full (zstd has more to give); input left with room to spare cannot
    // happen single-threaded, but a call that moved nothing ends the loop
    // with an error rather than spinning.
    for (;;) {
      this.#handle.writeSync(flush, chunk, inOff, inLen, this.#out, 0, OUT_BYTES);
      const err = this.#z.errored;
      if (err !== null) throw err;
      const outLeft = this.#state[0]!;
      const inLeft = this.#state[1]!;
      const have = OUT_BYTES - outLeft;
      if (have > 0) out.push(this.#out.slice(0, have));
      const took = inLen - inLeft;
      inOff += took;
      inLen = inLeft;
      if (outLeft > 0 && inLen === 0) return out;
      if (have === 0 && took === 0)
        throw new Error(
          `ZstdFrameEncoder: zstd made no progress with ${inLen} bytes in and ${outLeft} bytes of room`,
        );
    }
  }
}
