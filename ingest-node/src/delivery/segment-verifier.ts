// Checks a sealed segment's exact bytes as they stream by, without decoding
// its records: the delivery pipeline's guard that never lets a corrupt or
// mismatched segment reach the bucket. A module of its own so the archive
// worker thread (archive-thread.ts) loads only this, the WAL format and
// node:zlib, not the pipeline's graph.
import { Transform, type TransformCallback } from 'node:stream';
import {
  FRAME_HEADER_BYTES,
  FrameFlags,
  RECORD_BYTES_MAX_DEFAULT,
  SEGMENT_HEADER_BYTES_MAX,
  SegmentCorruptError,
  checkFrame,
  decodeSegmentHeader,
  frameDefect,
  type SegmentHeader,
} from '../wal/format.ts';
import type { SealedSegment } from '../wal/types.ts';

/**
 * Thrown when a segment's bytes decode but disagree with what the state file
 * recorded for it (another segment's header, other seqs or record count):
 * treated like corruption, the file is quarantined, never delivered.
 */
export class SegmentMismatchError extends Error {
  readonly code = 'SEGMENT_MISMATCH';
  constructor(message: string) {
    super(message);
    this.name = 'SegmentMismatchError';
  }
}

export function isSegmentDefect(err: unknown): err is SegmentCorruptError | SegmentMismatchError {
  return err instanceof SegmentCorruptError || err instanceof SegmentMismatchError;
}

/**
 * The check itself, fed chunk by chunk: every frame as strict as the readers
 * (CRC, length bound, gap-free seqs, a final batch end) and, at finish(), the
 * whole against the sealed segment's state entry. It allocates nothing per
 * record (the full decoder costs about twice as much on a 64 MiB segment of
 * small events, and the sealer must never fall behind the WAL). update() and
 * finish() throw SegmentCorruptError or SegmentMismatchError.
 */
export class SegmentCheck {
  bytes = 0;
  records = 0;
  readonly #expect: SealedSegment;
  readonly #recordBytesMax: number;
  /** An incomplete header or frame from earlier chunks (at most one frame). */
  #carry: Buffer = Buffer.alloc(0);
  /** Segment offset of the carry's first byte. */
  #carryAt = 0;
  #header: SegmentHeader | undefined;
  #firstSeq: bigint | undefined;
  #lastSeq: bigint | undefined;
  #lastFlags = FrameFlags.batchEnd as number;

  constructor(expect: SealedSegment, opts: { recordBytesMax?: number | undefined } = {}) {
    this.#expect = expect;
    this.#recordBytesMax = opts.recordBytesMax ?? RECORD_BYTES_MAX_DEFAULT;
  }

  update(chunk: Buffer): void {
    this.bytes += chunk.length;
    const buf = this.#carry.length === 0 ? chunk : Buffer.concat([this.#carry, chunk]);
    const base = this.#carryAt;
    let off = 0;
    if (this.#header === undefined) {
      const h = decodeSegmentHeader(buf);
      if (!h.ok) {
        if (h.defect === 'short' && buf.length < SEGMENT_HEADER_BYTES_MAX) {
          // A copy: the caller may reuse or transfer the chunk.
          this.#carry = Buffer.from(buf);
          return;
        }
        throw new SegmentCorruptError(0, h.defect, 'segment header');
      }
      this.#header = h.header;
      off = h.header.headerBytes;
    }
    for (;;) {
      if (buf.length - off < FRAME_HEADER_BYTES) break;
      const length = buf.readUInt32LE(off);
      if (length > this.#recordBytesMax) throw new SegmentCorruptError(base + off, 'length');
      if (off + FRAME_HEADER_BYTES + length > buf.length) break;
      const end = checkFrame(buf, off, this.#recordBytesMax);
      if (end < 0) throw new SegmentCorruptError(base + off, frameDefect(end));
      const seq = buf.readBigUInt64LE(off + 8);
      if (this.#lastSeq !== undefined && seq !== this.#lastSeq + 1n)
        throw new SegmentCorruptError(base + off, 'seq', `expected ${this.#lastSeq + 1n}, found ${seq}`);
      this.#firstSeq ??= seq;
      this.#lastSeq = seq;
      this.#lastFlags = buf[off + 25]!;
      this.records++;
      off = end;
    }
    // Copy the tail: keeping a view would pin the whole chunk.
    this.#carry = Buffer.from(buf.subarray(off));
    this.#carryAt = base + off;
  }

  /** All bytes were given: the last checks, against the state entry. */
  finish(): void {
    const e = this.#expect;
    if (this.bytes !== e.bytes)
      throw new SegmentCorruptError(this.bytes, 'truncated', `file holds ${this.bytes} of ${e.bytes} bytes`);
    const h = this.#header;
    if (h === undefined) throw new SegmentCorruptError(0, 'short', 'segment header');
    if (this.#carry.length > 0) throw new SegmentCorruptError(this.#carryAt, 'truncated');
    if ((this.#lastFlags & FrameFlags.batchEnd) === 0)
      throw new SegmentCorruptError(this.bytes, 'partial-batch');
    const problems: string[] = [];
    if (h.segmentId !== e.id) problems.push(`header segment id ${h.segmentId}, state ${e.id}`);
    if (h.epoch !== e.epoch) problems.push(`header epoch ${h.epoch}, state ${e.epoch}`);
    if (this.records !== e.records) problems.push(`${this.records} records, state ${e.records}`);
    if (this.#firstSeq !== e.firstSeq || this.#lastSeq !== e.lastSeq)
      problems.push(`seqs ${this.#firstSeq}..${this.#lastSeq}, state ${e.firstSeq}..${e.lastSeq}`);
    if (problems.length > 0)
      throw new SegmentMismatchError(
        `segment ${e.fileName} disagrees with state.json: ${problems.join('; ')}`,
      );
  }
}

/**
 * SegmentCheck as a pass-through stream. Errors in flush, before the end
 * reaches the consumer, so a compressor downstream never completes an
 * archive of a corrupt segment.
 */
export class SegmentVerifier extends Transform {
  readonly #check: SegmentCheck;

  constructor(expect: SealedSegment, opts: { recordBytesMax?: number } = {}) {
    super();
    this.#check = new SegmentCheck(expect, opts);
  }

  get bytes(): number {
    return this.#check.bytes;
  }

  get records(): number {
    return this.#check.records;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.#check.update(chunk);
    } catch (err) {
      cb(err as Error);
      return;
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.#check.finish();
    } catch (err) {
      cb(err as Error);
      return;
    }
    cb();
  }
}
