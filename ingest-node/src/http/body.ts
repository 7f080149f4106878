// Reads a request body into one Buffer under three hard bounds, checked as the
// bytes arrive rather than after buffering: the raw size (limits.bodyBytesMax),
// the decoded size (limits.decodedBytesMax) and the node-wide in-flight budget.
// gzip and zstd are undone as a stream by node:zlib whose output is counted
// chunk by chunk, so a compression bomb stops at the cap plus one decoder
// chunk and never allocates its full size.

import { createGunzip, createZstdDecompress, constants as zlibConstants } from 'node:zlib';
import type { Readable } from 'node:stream';
import type { Gunzip, ZstdDecompress } from 'node:zlib';
import type { Hash } from 'node:crypto';
import { BadRequestError, DecodeFailedError, DecodedTooLargeError, PayloadTooLargeError } from '../errors.ts';
import type { LandfallError } from '../errors.ts';

export type BodyEncoding = 'identity' | 'gzip' | 'zstd';

export interface BodyLimits {
  readonly bodyBytesMax: number;
  readonly decodedBytesMax: number;
}

/** The node-wide in-flight budget (Backpressure implements it). */
export interface InflightBudget {
  tryReserve(n: number): boolean;
  overloaded(): LandfallError;
}

/** What one request holds of the budget: the reader adds to it as bytes arrive; the caller releases it when done. */
export interface Reservation {
  reserved: number;
  readonly budget: InflightBudget;
}

/** Decoder output chunk size: large enough for throughput, small enough to bound overshoot past the cap. */
const DECODER_CHUNK_BYTES = 64 * 1024;

/** The client went away mid-body; there is nobody to answer, but the error handler still needs an error. */
const clientAborted = (): LandfallError =>
  new BadRequestError('the client closed the connection before the body ended');

function concat(chunks: Buffer[], total: number): Buffer {
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, total);
}

function reserveOrFail(res: Reservation, n: number): LandfallError | undefined {
  if (!res.budget.tryReserve(n)) return res.budget.overloaded();
  res.reserved += n;
  return undefined;
}

/**
 * Collects an unencoded body. Event listeners rather than `for await` because
 * this runs for every request and async iteration costs a promise per chunk.
 */
function readIdentity(
  stream: Readable,
  limits: BodyLimits,
  res: Reservation,
  hash: Hash | undefined,
): Promise<Buffer> {
  const max = Math.min(limits.bodyBytesMax, limits.decodedBytesMax);
  return new Promise<Buffer>((resolve, reject) => {
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
        resolve(concat(chunks, total));
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
      const refused = reserveOrFail(res, chunk.length);
      if (refused !== undefined) {
        finish(refused);
        return;
      }
      hash?.update(chunk);
      chunks.push(chunk);
    };
    const onEnd = (): void => finish(undefined);
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
  decodedBytesMax: number,
  res: Reservation,
): Promise<number> {
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
      const refused = reserveOrFail(res, chunk.length);
      if (refused !== undefined) {
        fail(refused);
        return;
      }
      out.chunks.push(chunk);
    });
    decoder.on('end', () => {
      if (settled) return;
      settled = true;
      resolve(decoder.bytesWritten);
    });
    decoder.on('error', (err: Error) => fail(new DecodeFailedError(encoding, err.message)));
    decoder.end(input);
  });
}

/**
 * The compressed body is collected first (under bodyBytesMax, and counted in
 * flight), then decoded as a stream whose output is capped chunk by chunk.
 * Collecting first lets us find where each zstd frame ended and continue with
 * the next one: a body may hold several frames (RFC 8878), and node's decoder
 * alone would drop all but the first.
 */
async function readEncoded(
  stream: Readable,
  encoding: 'gzip' | 'zstd',
  limits: BodyLimits,
  res: Reservation,
  hash: Hash | undefined,
): Promise<Buffer> {
  const raw = await readIdentity(
    stream,
    { bodyBytesMax: limits.bodyBytesMax, decodedBytesMax: limits.bodyBytesMax },
    res,
    hash,
  );
  const out = { chunks: [] as Buffer[], decoded: 0 };
  let offset = 0;
  while (offset < raw.length) {
    const consumed = await decodeOnce(raw.subarray(offset), encoding, out, limits.decodedBytesMax, res);
    if (consumed <= 0) throw new DecodeFailedError(encoding, 'the decoder made no progress');
    offset += consumed;
    // gzip already reads every member; anything after the last one is not gzip.
    if (encoding === 'gzip' && offset < raw.length)
      throw new DecodeFailedError(encoding, 'data follows the last gzip member');
  }
  return concat(out.chunks, out.decoded);
}

export function readBody(
  stream: Readable,
  encoding: BodyEncoding,
  limits: BodyLimits,
  res: Reservation,
  hash?: Hash,
): Promise<Buffer> {
  return encoding === 'identity'
    ? readIdentity(stream, limits, res, hash)
    : readEncoded(stream, encoding, limits, res, hash);
}
