// A pass-through that hashes and counts what flows through it. Both stores and
// the zstd compressor use it so a checksum is always of the bytes actually
// written or sent, computed in the same pass (no second read of the file).
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { StoreError } from './errors.ts';

export const sha256HexPattern = /^[0-9a-f]{64}$/;

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface HashTapExpect {
  readonly sha256?: string | undefined;
  readonly bytes?: number | undefined;
  /** Names the object in the mismatch error. */
  readonly what?: string;
}

export class HashTap extends Transform {
  bytes = 0;
  #hash: Hash = createHash('sha256');
  #digest: string | undefined;
  readonly #expect: HashTapExpect;

  constructor(expect: HashTapExpect = {}) {
    super();
    this.#expect = expect;
  }

  /** Hex sha256 of everything that passed; only valid after the stream ended. */
  get sha256(): string {
    if (this.#digest === undefined) throw new Error('HashTap: digest read before the stream ended');
    return this.#digest;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.#hash.update(chunk);
    cb(null, chunk);
  }

  // Failing in flush (before 'end' reaches the consumer) is what lets an
  // uploader abort instead of completing an object with the wrong bytes.
  override _flush(cb: TransformCallback): void {
    this.#digest = this.#hash.digest('hex');
    const { sha256, bytes, what = 'body' } = this.#expect;
    if (bytes !== undefined && bytes !== this.bytes) {
      cb(new StoreError('checksum_mismatch', `${what}: expected ${bytes} bytes, got ${this.bytes}`));
      return;
    }
    if (sha256 !== undefined && sha256 !== this.#digest) {
      cb(new StoreError('checksum_mismatch', `${what}: expected sha256 ${sha256}, got ${this.#digest}`));
      return;
    }
    cb();
  }
}
