// Reads a request body into one Buffer under hard bounds, checked as the
// bytes arrive rather than after buffering: the raw size (limits.bodyBytesMax),
// the decoded size (limits.decodedBytesMax), the records in it
// (limits.recordsPerRequestMax), the zstd frames in it (limits.framesPerBodyMax)
// and the node-wide in-flight budget, which is charged each byte and a fixed
// overhead per record. gzip and zstd are undone as a stream by node:zlib whose
// output is counted chunk by chunk, so a compression bomb stops at the cap plus
// one decoder chunk and never allocates its full size; a flood of tiny records
// stops at the cap without decoding the rest.
//
// The caller's BodyWatch is asked between decoder chunks and between frames
// whether to stop: the client went away, or the request has used up its
// processing time. Stopping destroys the decoder at once.

import { createGunzip, createZstdDecompress, constants as zlibConstants } from 'node:zlib';
import type { Readable } from 'node:stream';
import type { Gunzip, ZstdDecompress } from 'node:zlib';
import type { Hash } from 'node:crypto';
import {
  BadRequestError,
  DecodeFailedError,
  DecodedTooLargeError,
  PayloadTooLargeError,
  TooManyFramesError,
  TooManyRecordsError,
  ZstdSkippableFrameError,
} from '../errors.ts';
import type { LandfallError } from '../errors.ts';
import { RECORD_OVERHEAD_BYTES } from '../backpressure.ts';
import type { RecordCounter } from './records.ts';

export type BodyEncoding = 'identity' | 'gzip' | 'zstd';

export interface BodyLimits {
  readonly bodyBytesMax: number;
  readonly decodedBytesMax: number;
  readonly recordsPerRequestMax: number;
  readonly framesPerBodyMax: number;
}

/** The request's side of the reading: when to stop, and where its processing time starts. */
export interface BodyWatch {
  /** The body as sent has arrived: processing time (limits.processingTimeoutMs) starts now. */
  arrived(): void;
  /** Why to stop now (the client went away, processing time is up), or undefined to go on. */
  check(): LandfallError | undefined;
}

/** The node-wide in-flight budget (Backpressure implements it). */
export interface InflightBudget {
  tryReserve(n: number): boolean;
  overloaded(): LandfallError;
}

/** What one request holds of the budget: the reader adds to it as bytes arrive; the caller releases it when done. */
export interface Reservation {
  reserved: number;
  /** Records charged so far (RECORD_OVERHEAD_BYTES each, inside `reserved`). */
  records: number;
  readonly budget: InflightBudget;
}

/** Decoder output chunk size: large enough for throughput, small enough to bound overshoot past the cap. */
const DECODER_CHUNK_BYTES = 64 * 1024;

/** The client went away mid-body; there is nobody to answer, but the error handler still needs an error. */
const clientAborted = (): LandfallError =>
  new BadRequestError('the client closed the connection before the body ended');

function concat(chunks: Buffer[]): Buffer {
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
}

function reserveOrFail(res: Reservation, n: number): LandfallError | undefined {
  if (!res.budget.tryReserve(n)) return res.budget.overloaded();
  res.reserved += n;
  return undefined;
}

/** Charges records up to `count` (those not charged yet) under the cap; the error says why not. */
export function chargeRecords(
  res: Reservation,
  count: number,
  recordsMax: number,
): LandfallError | undefined {
  if (count > recordsMax) return new TooManyRecordsError(recordsMax);
  const added = count - res.records;
  if (added <= 0) return undefined;
  const refused = reserveOrFail(res, added * RECORD_OVERHEAD_BYTES);
  if (refused === undefined) res.records = count;
  return refused;
}

/** Feeds a decoded (or unencoded) chunk to the counter and charges what it found. */
function count(
  counter: RecordCounter | undefined,
  chunk: Buffer,
  res: Reservation,
  recordsMax: number,
): LandfallError | undefined {
  if (counter === undefined) return undefined;
  counter.feed(chunk);
  return counter.count === res.records ? undefined : chargeRecords(res, counter.count, recordsMax);
}

function countEnd(
  counter: RecordCounter | undefined,
  res: Reservation,
  recordsMax: number,
): LandfallError | undefined {
  if (counter === undefined) return undefined;
  counter.end();
  return chargeRecords(res, counter.count, recordsMax);
}

/**
 * Collects an unencoded body. Event listeners rather than `for await` because
 * this runs for every request and async iteration costs a promise per chunk.
 */
/** Chunks under this size are copied into one buffer (readIdentity), so a body has at most one Buffer per this many bytes, about. */
const SMALL_CHUNK_BYTES = 4096;
/**
 * The buffer small chunks are copied into (at most; less when the body's
 * limit is nearer): a new one when it is full, so a body holds a buffer per
 * 4-8 KiB of small chunks, and a small body in a few pieces costs 8 KiB, not more.
 */
const SMALL_CHUNKS_BUFFER_BYTES = 8 * 1024;

function readIdentity(
  stream: Readable,
  limits: Pick<BodyLimits, 'bodyBytesMax' | 'decodedBytesMax' | 'recordsPerRequestMax'>,
  res: Reservation,
  hash: Hash | undefined,
  counter: RecordCounter | undefined,
  watch: BodyWatch,
): Promise<Buffer[]> {
  const max = Math.min(limits.bodyBytesMax, limits.decodedBytesMax);
  return new Promise<Buffer[]>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    let settled = false;
    const finish = (err: LandfallError | undefined): void => {
      if (settled) return;
      settled = true;
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.off('close', onClose);
      if (err === undefined) {
        watch.arrived();
        resolve(chunks);
      } else {
        // Discard the rest so the error answer can be written; the reply closes the connection.
        stream.resume();
        reject(err);
      }
    };
    const onData = (chunk: Buffer): void => {
      total += chunk.length;
      if (total > max) {
        finish(
          total > limits.bodyBytesMax
            ? new PayloadTooLargeError(limits.bodyBytesMax)
            : new DecodedTooLargeError(limits.decodedBytesMax),
        );
        return;
      }
      const refused =
        reserveOrFail(res, chunk.length) ?? count(counter, chunk, res, limits.recordsPerRequestMax);
      if (refused !== undefined) {
        finish(refused);
        return;
      }
      hash?.update(chunk);
      if (chunk.length >= SMALL_CHUNK_BYTES) {
        flushSmall();
        chunks.push(chunk);
        return;
      }
      // Small chunks (a client sending a byte at a time) are copied together:
      // a Buffer per chunk would cost ~200 bytes of heap per body byte, none
      // of it charged to the in-flight budget. A small chunk on its own (a
      // small body, in one piece) stays as it came: no buffer, no copy.
      if (lone === undefined && small === undefined) {
        lone = chunk;
        return;
      }
      if (small === undefined || smallLen + chunk.length > small.length) {
        const first = lone;
        lone = undefined;
        flushSmall();
        small = Buffer.allocUnsafeSlow(
          Math.min(SMALL_CHUNKS_BUFFER_BYTES, max - total + chunk.length + (first?.length ?? 0)),
        );
        if (first !== undefined) {
          first.copy(small, 0);
          smallLen = first.length;
        }
      }
      chunk.copy(small, smallLen);
      smallLen += chunk.length;
    };
    /** The body's small chunk not yet joined by another (kept as it came). */
    let lone: Buffer | undefined;
    let small: Buffer | undefined;
    let smallLen = 0;
    const flushSmall = (): void => {
      if (lone !== undefined) chunks.push(lone);
      lone = undefined;
      if (small !== undefined && smallLen > 0)
        chunks.push(
          smallLen * 2 < small.length
            ? Buffer.copyBytesFrom(small, 0, smallLen)
            : small.subarray(0, smallLen),
        );
      small = undefined;
      smallLen = 0;
    };
    const onEnd = (): void => {
      flushSmall();
      finish(countEnd(counter, res, limits.recordsPerRequestMax));
    };
    const onError = (): void => finish(clientAborted());
    const onClose = (): void => finish(clientAborted());
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', onError);
    stream.on('close', onClose);
  });
}

function decoderFor(encoding: 'gzip' | 'zstd'): Gunzip | ZstdDecompress {
  if (encoding === 'gzip') return createGunzip({ chunkSize: DECODER_CHUNK_BYTES });
  return createZstdDecompress({
    chunkSize: DECODER_CHUNK_BYTES,
    // Refuse frames that need a huge window: the window is allocated before any output.
    params: { [zlibConstants.ZSTD_d_windowLogMax]: 27 },
  });
}

/**
 * Runs one decoder over `input` from `offset`, appending output to `out` under
 * the caps. Resolves how many input bytes the decoder consumed: node's zstd
 * stream stops at the end of the first frame and silently ignores the rest of
 * its input, so the caller must look at what is left.
 */
function decodeOnce(
  input: Buffer,
  encoding: 'gzip' | 'zstd',
  out: { chunks: Buffer[]; decoded: number },
  limits: BodyLimits,
  res: Reservation,
  counter: RecordCounter | undefined,
  watch: BodyWatch,
): Promise<number> {
  const decodedBytesMax = limits.decodedBytesMax;
  const decoder = decoderFor(encoding);
  return new Promise<number>((resolve, reject) => {
    let settled = false;
    const fail = (err: LandfallError): void => {
      if (settled) return;
      settled = true;
      // Stop decoding at once: this is what bounds a bomb.
      decoder.destroy();
      reject(err);
    };
    decoder.on('data', (chunk: Buffer) => {
      if (settled) return;
      out.decoded += chunk.length;
      if (out.decoded > decodedBytesMax) {
        fail(new DecodedTooLargeError(decodedBytesMax));
        return;
      }
      const refused =
        reserveOrFail(res, chunk.length) ??
        count(counter, chunk, res, limits.recordsPerRequestMax) ??
        watch.check();
      if (refused !== undefined) {
        fail(refused);
        return;
      }
      out.chunks.push(chunk);
    });
    decoder.on('end', () => {
      if (settled) return;
      settled = true;
      // The decoder's last output chunk is a slice of its 64 KiB output
      // buffer, mostly unused for a small frame: records viewing it would
      // hold all of it until the WAL wrote them (64 KiB per frame of a
      // many-frame body, uncharged). A copy of the used part instead.
      const last = out.chunks.at(-1);
      if (last !== undefined && last.buffer.byteLength > 2 * last.length)
        out.chunks[out.chunks.length - 1] = Buffer.copyBytesFrom(last);
      resolve(decoder.bytesWritten);
    });
    decoder.on('error', (err: Error) => fail(new DecodeFailedError(encoding, err.message)));
    decoder.end(input);
  });
}

/** The first four bytes of a zstd skippable frame are 0x184D2A50 to 0x184D2A5F, little-endian (RFC 8878 §3.1.2). */
function isSkippableFrame(buf: Buffer, offset: number): boolean {
  return buf.length - offset >= 4 && (buf.readUInt32LE(offset) & 0xfffffff0) === 0x184d2a50;
}

/**
 * The compressed body is collected first (under bodyBytesMax, and counted in
 * flight), then decoded as a stream whose output is capped chunk by chunk.
 * Collecting first lets us find where each zstd frame ended and continue with
 * the next one: a body may hold several frames (RFC 8878), and node's decoder
 * alone would drop all but the first. Each frame costs a new decoder whatever
 * it holds, so frames are capped (limits.framesPerBodyMax) and skippable
 * frames, which hold nothing a producer needs to send, are refused.
 */
async function readEncoded(
  stream: Readable,
  encoding: 'gzip' | 'zstd',
  limits: BodyLimits,
  res: Reservation,
  hash: Hash | undefined,
  counter: RecordCounter | undefined,
  watch: BodyWatch,
): Promise<Buffer[]> {
  const rawChunks = await readIdentity(
    stream,
    { bodyBytesMax: limits.bodyBytesMax, decodedBytesMax: limits.bodyBytesMax, recordsPerRequestMax: 0 },
    res,
    hash,
    undefined,
    watch,
  );
  const raw = concat(rawChunks);
  const out = { chunks: [] as Buffer[], decoded: 0 };
  let offset = 0;
  let frames = 0;
  while (offset < raw.length) {
    const stop = watch.check();
    if (stop !== undefined) throw stop;
    if (encoding === 'zstd') {
      if (isSkippableFrame(raw, offset)) throw new ZstdSkippableFrameError(offset);
      if (++frames > limits.framesPerBodyMax) throw new TooManyFramesError(limits.framesPerBodyMax);
    }
    const consumed = await decodeOnce(raw.subarray(offset), encoding, out, limits, res, counter, watch);
    if (consumed <= 0) throw new DecodeFailedError(encoding, 'the decoder made no progress');
    offset += consumed;
    // gzip already reads every member; anything after the last one is not gzip.
    if (encoding === 'gzip' && offset < raw.length)
      throw new DecodeFailedError(encoding, 'data follows the last gzip member');
  }
  const refused = countEnd(counter, res, limits.recordsPerRequestMax);
  if (refused !== undefined) throw refused;
  return out.chunks;
}

/**
 * The decoded body, as the chunks it arrived or was decoded in (none for an
 * empty body): not concatenated, since a copy of every large body is garbage
 * V8 pays for (records.ts splits the chunks as they are). `counter` counts
 * records as they appear (undefined: the splitter counts); `watch` is told
 * when the body has arrived and asked whether to stop.
 */
export function readBody(
  stream: Readable,
  encoding: BodyEncoding,
  limits: BodyLimits,
  res: Reservation,
  watch: BodyWatch,
  counter: RecordCounter | undefined,
  hash?: Hash,
): Promise<Buffer[]> {
  return encoding === 'identity'
    ? readIdentity(stream, limits, res, hash, counter, watch)
    : readEncoded(stream, encoding, limits, res, hash, counter, watch);
}
