// The WAL's byte layout (format v1): the one module that encodes and decodes
// it. docs/wal-format.md publishes the same tables; change both together.
//
// A segment file is a header followed by record frames, nothing else. All
// integers are little-endian. `.wal.zst` in S3 is zstd of these exact bytes.
//
// Segment header (variable length, H bytes, H ≤ 1024):
//
// | offset    | size | field                                                  |
// |-----------|------|--------------------------------------------------------|
// | 0         | 8    | magic, ASCII `LANDFALL`                                |
// | 8         | 2    | format version u16 (= 1)                               |
// | 10        | 2    | header length H u16, including the CRC                 |
// | 12        | 4    | header flags u32 (= 0, reserved)                       |
// | 16        | 8    | segment id u64                                         |
// | 24        | 8    | creation time, µs since the Unix epoch, i64            |
// | 32        | 2    | endpoint name length E u16 (≤ 255)                     |
// | 34        | E    | endpoint name, UTF-8                                   |
// | 34+E      | 2    | instance id length I u16 (≤ 255)                       |
// | 36+E      | I    | instance id, UTF-8                                     |
// | 36+E+I    | 2    | WAL epoch length P u16 (≤ 255)                         |
// | 38+E+I    | P    | WAL epoch, ASCII (ULID-like, see epoch.ts)             |
// | H-4       | 4    | header CRC32C over bytes [0, H-4)                      |
//
// Record frame (26 + L bytes), frames follow the header back to back:
//
// | offset | size | field                                                      |
// |--------|------|------------------------------------------------------------|
// | 0      | 4    | length L u32: payload bytes                                |
// | 4      | 4    | CRC32C u32 over bytes [8, 26+L) (everything after it)      |
// | 8      | 8    | seq u64, per instance, gap-free, +1 per frame              |
// | 16     | 8    | ingest time, µs since the Unix epoch, i64                  |
// | 24     | 1    | format u8 (RecordFormat: 1 ndjson, 2 json, 3 recordio, 4 mqtt) |
// | 25     | 1    | flags u8: bit 0 batch end, bit 1 group start, others 0     |
// | 26     | L    | payload                                                    |
//
// - batch end (0x01): last frame of one append. An append is all or nothing,
//   so recovery keeps frames only up to the last batch end.
// - group start (0x02): first frame of one write+fdatasync unit (a group of
//   appends). Groups are written strictly one after another, each only after
//   the previous one's sync returned, so a valid group-start frame *after* a
//   bad frame proves the bad frame had been synced: that is corruption, not a
//   torn tail.
// - The length field is outside the CRC; a corrupt length makes the CRC cover
//   the wrong bytes and fail, and readers bound it by `recordBytesMax` before
//   trusting it, so it can never make them allocate more than one record.
//
// MQTT payload (format 4): `topic length u16 | topic UTF-8 | message bytes`.
import { crc32c } from '@node-rs/crc32';

export const SEGMENT_MAGIC = 'LANDFALL';
export const FORMAT_VERSION = 1;
export const SEGMENT_HEADER_FIXED_BYTES = 38; // up to and including the epoch length, with E = I = 0
export const SEGMENT_HEADER_BYTES_MAX = 1024;
export const SEGMENT_HEADER_STRING_BYTES_MAX = 255;
export const FRAME_HEADER_BYTES = 26;
/**
 * Default bound on one record's payload, for writers and readers alike.
 * Generous for events (they are usually < 64 KiB) yet small enough that a
 * corrupt length can cost at most this much memory.
 */
export const RECORD_BYTES_MAX_DEFAULT = 16 * 1024 * 1024;
/** Hard ceiling for any configured recordBytesMax. */
export const RECORD_BYTES_MAX_LIMIT = 256 * 1024 * 1024;

export const FrameFlags = {
  batchEnd: 0x01,
  groupStart: 0x02,
} as const;

const MAGIC_BYTES = new TextEncoder().encode(SEGMENT_MAGIC);
const TWO_32 = 4294967296;
const textDecoder = new TextDecoder('utf-8', { fatal: true });
const textEncoder = new TextEncoder();

// ---------------------------------------------------------------------------
// Segment header

export interface SegmentHeader {
  readonly version: number;
  readonly segmentId: bigint;
  readonly createdMicros: bigint;
  readonly endpoint: string;
  readonly instance: string;
  readonly epoch: string;
  /** H: where the first frame starts. */
  readonly headerBytes: number;
}

export type HeaderDefect = 'short' | 'magic' | 'version' | 'length' | 'crc' | 'encoding';

export type HeaderResult =
  | { readonly ok: true; readonly header: SegmentHeader }
  | { readonly ok: false; readonly defect: HeaderDefect };

export function encodeSegmentHeader(h: Omit<SegmentHeader, 'version' | 'headerBytes'>): Uint8Array {
  const endpoint = textEncoder.encode(h.endpoint);
  const instance = textEncoder.encode(h.instance);
  const epoch = textEncoder.encode(h.epoch);
  for (const [name, b] of [
    ['endpoint', endpoint],
    ['instance', instance],
    ['epoch', epoch],
  ] as const) {
    if (b.length > SEGMENT_HEADER_STRING_BYTES_MAX) {
      throw new RangeError(
        `segment header ${name} is ${b.length} bytes (max ${SEGMENT_HEADER_STRING_BYTES_MAX})`,
      );
    }
  }
  const total = SEGMENT_HEADER_FIXED_BYTES + endpoint.length + instance.length + epoch.length + 4;
  const buf = new Uint8Array(total);
  const dv = new DataView(buf.buffer);
  buf.set(MAGIC_BYTES, 0);
  dv.setUint16(8, FORMAT_VERSION, true);
  dv.setUint16(10, total, true);
  dv.setUint32(12, 0, true);
  dv.setBigUint64(16, h.segmentId, true);
  dv.setBigInt64(24, h.createdMicros, true);
  let at = 32;
  for (const b of [endpoint, instance, epoch]) {
    dv.setUint16(at, b.length, true);
    buf.set(b, at + 2);
    at += 2 + b.length;
  }
  dv.setUint32(at, crc32c(buf.subarray(0, at)), true);
  return buf;
}

export function decodeSegmentHeader(buf: Uint8Array): HeaderResult {
  if (buf.length < 12) return { ok: false, defect: 'short' };
  for (let i = 0; i < MAGIC_BYTES.length; i++)
    if (buf[i] !== MAGIC_BYTES[i]) return { ok: false, defect: 'magic' };
  const dv = view(buf);
  const version = dv.getUint16(8, true);
  if (version !== FORMAT_VERSION) return { ok: false, defect: 'version' };
  const total = dv.getUint16(10, true);
  if (total < SEGMENT_HEADER_FIXED_BYTES + 4 || total > SEGMENT_HEADER_BYTES_MAX)
    return { ok: false, defect: 'length' };
  if (buf.length < total) return { ok: false, defect: 'short' };
  if (dv.getUint32(total - 4, true) !== crc32c(buf.subarray(0, total - 4)))
    return { ok: false, defect: 'crc' };
  const strings: string[] = [];
  let at = 32;
  for (let i = 0; i < 3; i++) {
    if (at + 2 > total - 4) return { ok: false, defect: 'length' };
    const n = dv.getUint16(at, true);
    if (at + 2 + n > total - 4) return { ok: false, defect: 'length' };
    try {
      strings.push(textDecoder.decode(buf.subarray(at + 2, at + 2 + n)));
    } catch {
      return { ok: false, defect: 'encoding' };
    }
    at += 2 + n;
  }
  if (at !== total - 4) return { ok: false, defect: 'length' };
  return {
    ok: true,
    header: {
      version,
      segmentId: dv.getBigUint64(16, true),
      createdMicros: dv.getBigInt64(24, true),
      endpoint: strings[0]!,
      instance: strings[1]!,
      epoch: strings[2]!,
      headerBytes: total,
    },
  };
}

// ---------------------------------------------------------------------------
// Frames: writing

export function frameBytes(payloadBytes: number): number {
  return FRAME_HEADER_BYTES + payloadBytes;
}

/** CRC32C (reflected polynomial 0x82F63B78), a byte at a time: for the 18 header bytes a frame's CRC starts with. */
const CRC32C_TABLE = ((): Int32Array => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c;
  }
  return t;
})();

function crc32cOfRange(buf: Uint8Array, start: number, end: number): number {
  let c = -1;
  for (let i = start; i < end; i++) c = CRC32C_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

/**
 * Encodes one frame into `buf` at `offset` and returns the offset after it.
 * The hot path: seq and ingest time are plain numbers (exact below 2^53,
 * which a per-instance counter or a µs timestamp will not reach), and the
 * CRC is the header bytes' CRC (in JS) continued natively over the payload
 * as given, so writing a frame allocates nothing: a subarray view of `buf`
 * per frame for the CRC was ~13 KB of garbage per 100-event request.
 */
export function encodeFrameInto(
  buf: Buffer,
  offset: number,
  seq: number,
  ingestMicros: number,
  format: number,
  flags: number,
  payload: Uint8Array,
): number {
  const length = payload.byteLength;
  const end = offset + FRAME_HEADER_BYTES + length;
  buf.writeUInt32LE(length, offset);
  buf.writeUInt32LE(seq % TWO_32, offset + 8);
  buf.writeUInt32LE(Math.floor(seq / TWO_32), offset + 12);
  buf.writeUInt32LE(ingestMicros % TWO_32, offset + 16);
  buf.writeUInt32LE(Math.floor(ingestMicros / TWO_32), offset + 20);
  buf[offset + 24] = format;
  buf[offset + 25] = flags;
  buf.set(payload, offset + FRAME_HEADER_BYTES);
  buf.writeUInt32LE(crc32c(payload, crc32cOfRange(buf, offset + 8, offset + FRAME_HEADER_BYTES)), offset + 4);
  return end;
}

/** One frame as a new buffer (tests and tools; the WAL uses encodeFrameInto). */
export function encodeFrame(record: {
  readonly seq: bigint;
  readonly ingestMicros: bigint;
  readonly format: number;
  readonly flags: number;
  readonly payload: Uint8Array;
}): Buffer {
  const buf = Buffer.allocUnsafe(frameBytes(record.payload.byteLength));
  encodeFrameInto(
    buf,
    0,
    Number(record.seq),
    Number(record.ingestMicros),
    record.format,
    record.flags,
    record.payload,
  );
  return buf;
}

// ---------------------------------------------------------------------------
// Frames: reading

export interface WalRecord {
  readonly seq: bigint;
  readonly ingestMicros: bigint;
  readonly format: number;
  readonly flags: number;
  /** A view into the buffer the frame was read from; copy it to keep it past that buffer's life. */
  readonly payload: Uint8Array;
  /** Byte offset of the frame in the segment. */
  readonly offset: number;
}

export type FrameDefect = 'truncated' | 'length' | 'crc' | 'seq';

/** `checkFrame` results below zero. */
const FRAME_TRUNCATED = -1;
const FRAME_LENGTH = -2;
const FRAME_CRC = -3;
/** scanSegment only: a valid frame with a seq below the expected one. */
const FRAME_SEQ = -4;
const FRAME_STALE = -5;

/**
 * Validates the frame at `offset` without allocating: its end offset, or a
 * negative code (see frameDefect). `truncated` means the buffer ends inside
 * the frame; `length` means the length field exceeds recordBytesMax.
 */
export function checkFrame(buf: Uint8Array, offset: number, recordBytesMax: number): number {
  if (buf.length - offset < FRAME_HEADER_BYTES) return FRAME_TRUNCATED;
  const length = readU32(buf, offset);
  if (length > recordBytesMax) return FRAME_LENGTH;
  const end = offset + FRAME_HEADER_BYTES + length;
  if (end > buf.length) return FRAME_TRUNCATED;
  if (readU32(buf, offset + 4) !== crc32c(buf.subarray(offset + 8, end))) return FRAME_CRC;
  return end;
}

export function frameDefect(code: number): FrameDefect {
  return code === FRAME_TRUNCATED ? 'truncated' : code === FRAME_LENGTH ? 'length' : 'crc';
}

/** Seq of a validated frame as a number (exact below 2^53). */
export function frameSeqNumber(buf: Uint8Array, offset: number): number {
  return readU32(buf, offset + 8) + readU32(buf, offset + 12) * TWO_32;
}

export function frameIngestMicrosNumber(buf: Uint8Array, offset: number): number {
  return readU32(buf, offset + 16) + readU32(buf, offset + 20) * TWO_32;
}

export function frameFlagsAt(buf: Uint8Array, offset: number): number {
  return buf[offset + 25]!;
}

/** Decodes a frame already validated by checkFrame (end = its result). */
export function recordAt(buf: Uint8Array, offset: number, end: number): WalRecord {
  const dv = view(buf);
  return {
    seq: dv.getBigUint64(offset + 8, true),
    ingestMicros: dv.getBigInt64(offset + 16, true),
    format: buf[offset + 24]!,
    flags: buf[offset + 25]!,
    payload: buf.subarray(offset + FRAME_HEADER_BYTES, end),
    offset,
  };
}

export class SegmentCorruptError extends Error {
  readonly code = 'SEGMENT_CORRUPT';
  /** Byte offset in the segment where reading failed. */
  readonly offset: number;
  readonly reason: FrameDefect | HeaderDefect | 'partial-batch';

  constructor(offset: number, reason: FrameDefect | HeaderDefect | 'partial-batch', detail?: string) {
    super(`WAL segment corrupt at byte ${offset}: ${reason}${detail === undefined ? '' : ` (${detail})`}`);
    this.name = 'SegmentCorruptError';
    this.offset = offset;
    this.reason = reason;
  }
}

export interface ReadOptions {
  /** Bound on one record's payload; frames claiming more are corrupt. Default RECORD_BYTES_MAX_DEFAULT. */
  readonly recordBytesMax?: number;
  /**
   * Require the segment to end on a batch end (every sealed segment does).
   * Default true; false lets a reader walk an open segment's complete frames.
   */
  readonly requireBatchEnd?: boolean;
}

/**
 * Strict reader over a whole segment in memory (a sealed file, or the zstd
 * output of a `.wal.zst`): the header, then every record; throws
 * SegmentCorruptError on the first defect, including a seq that does not
 * follow its predecessor.
 */
export function readSegment(
  bytes: Uint8Array,
  options: ReadOptions = {},
): { readonly header: SegmentHeader; readonly records: Iterable<WalRecord> } {
  const recordBytesMax = options.recordBytesMax ?? RECORD_BYTES_MAX_DEFAULT;
  const requireBatchEnd = options.requireBatchEnd ?? true;
  const h = decodeSegmentHeader(bytes);
  if (!h.ok) throw new SegmentCorruptError(0, h.defect, 'segment header');
  const header = h.header;
  function* records(): Generator<WalRecord, void, undefined> {
    let off = header.headerBytes;
    let expected: bigint | undefined;
    let lastFlags: number = FrameFlags.batchEnd;
    while (off < bytes.length) {
      const end = checkFrame(bytes, off, recordBytesMax);
      if (end < 0) throw new SegmentCorruptError(off, frameDefect(end));
      const rec = recordAt(bytes, off, end);
      if (expected !== undefined && rec.seq !== expected) {
        throw new SegmentCorruptError(off, 'seq', `expected ${expected}, found ${rec.seq}`);
      }
      expected = rec.seq + 1n;
      lastFlags = rec.flags;
      yield rec;
      off = end;
    }
    if (requireBatchEnd && (lastFlags & FrameFlags.batchEnd) === 0)
      throw new SegmentCorruptError(off, 'partial-batch');
  }
  return { header, records: { [Symbol.iterator]: records } };
}

/**
 * Push decoder for a segment arriving in chunks (a zstd stream from S3, a
 * file read piecewise). Holds at most one incomplete frame (≤ recordBytesMax
 * + 26 bytes) besides the chunk being decoded. Same checks as readSegment.
 */
export class SegmentDecoder {
  header: SegmentHeader | undefined;
  readonly #recordBytesMax: number;
  readonly #requireBatchEnd: boolean;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  /** Segment offset of the first buffered byte. */
  #offset = 0;
  #expected: bigint | undefined;
  #lastFlags: number = FrameFlags.batchEnd;

  constructor(options: ReadOptions = {}) {
    this.#recordBytesMax = options.recordBytesMax ?? RECORD_BYTES_MAX_DEFAULT;
    this.#requireBatchEnd = options.requireBatchEnd ?? true;
  }

  /** Decodes what `chunk` completes. Payloads may be views into `chunk`. */
  push(chunk: Uint8Array): WalRecord[] {
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    const out: WalRecord[] = [];
    if (this.header === undefined) {
      if (this.#buffered < 12) return out;
      const head = this.#peek(Math.min(this.#buffered, SEGMENT_HEADER_BYTES_MAX));
      const h = decodeSegmentHeader(head);
      if (!h.ok) {
        if (h.defect === 'short' && this.#buffered < SEGMENT_HEADER_BYTES_MAX) return out;
        throw new SegmentCorruptError(0, h.defect, 'segment header');
      }
      this.header = h.header;
      this.#consume(h.header.headerBytes);
    }
    for (;;) {
      if (this.#buffered < FRAME_HEADER_BYTES) return out;
      const first = this.#peek(FRAME_HEADER_BYTES);
      const length = readU32(first, 0);
      if (length > this.#recordBytesMax) throw new SegmentCorruptError(this.#offset, 'length');
      const total = FRAME_HEADER_BYTES + length;
      if (this.#buffered < total) return out;
      const frame = this.#peek(total);
      const end = checkFrame(frame, 0, this.#recordBytesMax);
      if (end < 0) throw new SegmentCorruptError(this.#offset, frameDefect(end));
      const rec = recordAt(frame, 0, end);
      if (this.#expected !== undefined && rec.seq !== this.#expected) {
        throw new SegmentCorruptError(this.#offset, 'seq', `expected ${this.#expected}, found ${rec.seq}`);
      }
      this.#expected = rec.seq + 1n;
      this.#lastFlags = rec.flags;
      out.push({ ...rec, offset: this.#offset });
      this.#consume(total);
    }
  }

  /** Call at end of input: throws if it ended inside the header, inside a frame, or mid-batch. */
  end(): void {
    if (this.header === undefined) throw new SegmentCorruptError(0, 'short', 'segment header');
    if (this.#buffered > 0) throw new SegmentCorruptError(this.#offset, 'truncated');
    if (this.#requireBatchEnd && (this.#lastFlags & FrameFlags.batchEnd) === 0) {
      throw new SegmentCorruptError(this.#offset, 'partial-batch');
    }
  }

  /** The first n buffered bytes as one contiguous view (copies only when they span chunks). */
  #peek(n: number): Uint8Array {
    const head = this.#chunks[0]!;
    if (head.length >= n) return head.subarray(0, n);
    const joined = new Uint8Array(this.#buffered);
    let at = 0;
    for (const c of this.#chunks) {
      joined.set(c, at);
      at += c.length;
    }
    this.#chunks = [joined];
    return joined.subarray(0, n);
  }

  #consume(n: number): void {
    this.#buffered -= n;
    this.#offset += n;
    while (n > 0) {
      const head = this.#chunks[0]!;
      if (head.length <= n) {
        this.#chunks.shift();
        n -= head.length;
      } else {
        this.#chunks[0] = head.subarray(n);
        n = 0;
      }
    }
  }
}

/** Async iteration over a chunked source (e.g. a zstd decompression stream). */
export async function* readSegmentStream(
  source: AsyncIterable<Uint8Array>,
  options: ReadOptions & { readonly onHeader?: (header: SegmentHeader) => void } = {},
): AsyncGenerator<WalRecord, void, undefined> {
  for await (const batch of readSegmentBatches(source, options)) yield* batch;
}

/**
 * readSegmentStream a chunk's records at a time: one promise turn per chunk
 * instead of one per record (per generator on the way), which for a
 * consumer that is itself a tight loop (parquet/records.ts) costs more than
 * the records' own work (measured: ~0.44 s of main-thread CPU per million
 * records through two generators).
 */
export async function* readSegmentBatches(
  source: AsyncIterable<Uint8Array>,
  options: ReadOptions & { readonly onHeader?: (header: SegmentHeader) => void } = {},
): AsyncGenerator<WalRecord[], void, undefined> {
  const decoder = new SegmentDecoder(options);
  let announced = false;
  for await (const chunk of source) {
    const records = decoder.push(chunk);
    if (!announced && decoder.header !== undefined) {
      announced = true;
      options.onHeader?.(decoder.header);
    }
    if (records.length > 0) yield records;
  }
  decoder.end();
}

// ---------------------------------------------------------------------------
// Recovery scan (lenient): how much of an unsealed segment is good

/**
 * `stale`: the chain ends at a valid frame whose seq is below the next
 * expected one: an older segment's frame left in a recycled file, never data.
 */
export type TailKind = 'clean' | 'partial-batch' | 'torn' | 'zeros' | 'bad-frame' | 'stale';

export interface SegmentScan {
  /** Undefined when the header is missing or invalid (see headerDefect). */
  readonly header: SegmentHeader | undefined;
  readonly headerDefect: HeaderDefect | undefined;
  /** End of the last complete batch: what recovery keeps (0 when the header is bad). */
  readonly goodBytes: number;
  /** Records in [0, goodBytes). */
  readonly records: number;
  readonly firstSeq: bigint | undefined;
  readonly lastSeq: bigint | undefined;
  readonly firstIngestMicros: bigint | undefined;
  readonly lastIngestMicros: bigint | undefined;
  /** What follows goodBytes. */
  readonly tail: TailKind;
  /** Why the first bad frame was bad, when tail is torn/bad-frame. */
  readonly defect: FrameDefect | undefined;
  readonly defectOffset: number | undefined;
  /**
   * Set when the damage is not a tail: a valid frame that starts a later
   * write group follows a bad frame (or a bad header), so synced data is
   * damaged. Recovery quarantines such a file.
   */
  readonly corruptAt: number | undefined;
  /**
   * The lowest seq a frame after goodBytes could have and be this segment's
   * (unacknowledged) data: one past the last good seq, else the expected
   * first seq (1 when unknown). Anything lower is a recycled file's stale frame.
   */
  readonly newSeqMin: number;
}

export interface ScanOptions {
  readonly recordBytesMax?: number;
  /**
   * The seq the segment's first frame must have (docs/wal-format.md,
   * "Recycled segment files"): a first frame below it is stale (ends the
   * log), above it a seq defect when `firstSeqExact`, accepted otherwise
   * (the bound is then only a lower bound, e.g. after the state file was lost).
   */
  readonly firstSeq?: number;
  readonly firstSeqExact?: boolean;
}

/**
 * Classifies an unsealed segment for recovery (never throws on bad data).
 * See docs/wal-format.md "Recovery" for the rules this implements.
 */
export function scanSegment(bytes: Uint8Array, options: ScanOptions = {}): SegmentScan {
  const recordBytesMax = options.recordBytesMax ?? RECORD_BYTES_MAX_DEFAULT;
  const firstSeqWanted = options.firstSeq;
  const h = decodeSegmentHeader(bytes);
  if (!h.ok) {
    const later = findGroupStart(bytes, 1, 0, recordBytesMax);
    return {
      header: undefined,
      headerDefect: h.defect,
      goodBytes: 0,
      records: 0,
      firstSeq: undefined,
      lastSeq: undefined,
      firstIngestMicros: undefined,
      lastIngestMicros: undefined,
      tail: 'torn',
      defect: undefined,
      defectOffset: 0,
      corruptAt: later >= 0 ? 0 : undefined,
      newSeqMin: firstSeqWanted ?? 1,
    };
  }
  const header = h.header;
  let off = header.headerBytes;
  let goodBytes = off;
  let records = 0;
  let goodRecords = 0;
  let firstSeq = -1;
  let lastGoodSeq = -1;
  let expected = -1;
  let firstIngest = -1;
  let lastGoodIngest = -1;
  let tail: TailKind = 'clean';
  let defect: FrameDefect | undefined;
  let defectOffset: number | undefined;
  let corruptAt: number | undefined;
  while (off < bytes.length) {
    let end = checkFrame(bytes, off, recordBytesMax);
    if (end >= 0) {
      const seq = frameSeqNumber(bytes, off);
      const want = expected >= 0 ? expected : firstSeqWanted;
      if (want !== undefined && seq < want) end = FRAME_STALE;
      else if (want !== undefined && seq !== want && (expected >= 0 || options.firstSeqExact === true))
        end = FRAME_SEQ;
    }
    if (end < 0) {
      defect = end === FRAME_SEQ || end === FRAME_STALE ? 'seq' : frameDefect(end);
      defectOffset = off;
      if (isZero(bytes, off)) tail = 'zeros';
      else {
        tail = end === FRAME_TRUNCATED ? 'torn' : end === FRAME_STALE ? 'stale' : 'bad-frame';
        // Only a frame that could be this segment's data proves a later group:
        // a recycled file's stale frames (lower seqs) never do.
        const minSeq = newSeqMin(lastGoodSeq, records, firstSeq, firstSeqWanted);
        if (findGroupStart(bytes, off + 1, minSeq, recordBytesMax) >= 0) corruptAt = off;
      }
      break;
    }
    const seq = frameSeqNumber(bytes, off);
    if (records === 0) {
      firstSeq = seq;
      firstIngest = frameIngestMicrosNumber(bytes, off);
    }
    records++;
    expected = seq + 1;
    if ((frameFlagsAt(bytes, off) & FrameFlags.batchEnd) !== 0) {
      goodBytes = end;
      goodRecords = records;
      lastGoodSeq = seq;
      lastGoodIngest = frameIngestMicrosNumber(bytes, off);
    }
    off = end;
  }
  if (tail === 'clean' && goodBytes < bytes.length) tail = 'partial-batch';
  return {
    header,
    headerDefect: undefined,
    goodBytes,
    records: goodRecords,
    firstSeq: goodRecords > 0 ? BigInt(firstSeq) : undefined,
    lastSeq: goodRecords > 0 ? BigInt(lastGoodSeq) : undefined,
    firstIngestMicros: goodRecords > 0 ? BigInt(firstIngest) : undefined,
    lastIngestMicros: goodRecords > 0 ? BigInt(lastGoodIngest) : undefined,
    tail,
    defect,
    defectOffset,
    corruptAt,
    newSeqMin: newSeqMin(lastGoodSeq, records, firstSeq, firstSeqWanted),
  };
}

/** See SegmentScan.newSeqMin. */
function newSeqMin(
  lastGoodSeq: number,
  records: number,
  firstSeq: number,
  wanted: number | undefined,
): number {
  if (lastGoodSeq >= 0) return lastGoodSeq + 1;
  // Frames of a batch that never ended are this segment's too.
  if (records > 0) return firstSeq;
  return wanted ?? 1;
}

/**
 * Where a tail that recovery cuts at `from` may hold this segment's own
 * (unacknowledged, or torn acknowledged) bytes, so the copy kept in
 * quarantine/ covers them: up to the first stale frame (a valid frame with a
 * seq below `newSeqMin`: an older segment's bytes in a recycled file), or
 * beyond it to the end of the last valid frame that could be new. Without
 * stale frames, the whole tail (as for a file that was never recycled).
 */
export function ownTailEnd(
  bytes: Uint8Array,
  from: number,
  newSeqMin: number,
  recordBytesMax: number,
): number {
  let staleAt = -1;
  let lastNewEnd = from;
  const last = bytes.length - FRAME_HEADER_BYTES;
  for (let p = from; p <= last; p++) {
    const flags = bytes[p + 25]!;
    if (flags > 0x03) continue;
    if (readU32(bytes, p + 12) > 0x1fffff) continue;
    const length = readU32(bytes, p);
    if (length > recordBytesMax || p + FRAME_HEADER_BYTES + length > bytes.length) continue;
    const stale = frameSeqNumber(bytes, p) < newSeqMin;
    // Past the first stale frame only new frames matter.
    if (stale && staleAt >= 0) continue;
    const end = checkFrame(bytes, p, recordBytesMax);
    if (end < 0) continue;
    if (stale) staleAt = p;
    else {
      lastNewEnd = end;
      p = end - 1;
    }
  }
  return staleAt < 0 ? bytes.length : Math.max(staleAt, lastNewEnd);
}

/**
 * Offset of the first valid frame at or after `from` that starts a write
 * group and has seq ≥ minSeq, or -1. Cheap byte checks (flag bit, length that
 * fits, seq range) rule out almost every position before a CRC is computed.
 */
export function findGroupStart(
  bytes: Uint8Array,
  from: number,
  minSeq: number,
  recordBytesMax: number,
): number {
  const last = bytes.length - FRAME_HEADER_BYTES;
  for (let p = from; p <= last; p++) {
    const flags = bytes[p + 25]!;
    if ((flags & FrameFlags.groupStart) === 0 || flags > 0x03) continue;
    const hi = readU32(bytes, p + 12);
    if (hi > 0x1fffff) continue; // seq ≥ 2^53: not one of ours
    const length = readU32(bytes, p);
    if (length > recordBytesMax || p + FRAME_HEADER_BYTES + length > bytes.length) continue;
    if (frameSeqNumber(bytes, p) < minSeq) continue;
    if (checkFrame(bytes, p, recordBytesMax) >= 0) return p;
  }
  return -1;
}

// ---------------------------------------------------------------------------
// MQTT payload (format 4)

export function encodeMqttPayload(topic: string, message: Uint8Array): Uint8Array {
  const t = textEncoder.encode(topic);
  if (t.length > 0xffff) throw new RangeError(`MQTT topic is ${t.length} bytes (max 65535)`);
  const out = new Uint8Array(2 + t.length + message.length);
  out[0] = t.length & 0xff;
  out[1] = t.length >>> 8;
  out.set(t, 2);
  out.set(message, 2 + t.length);
  return out;
}

export function decodeMqttPayload(payload: Uint8Array): {
  readonly topic: string;
  readonly message: Uint8Array;
} {
  if (payload.length < 2) throw new RangeError('MQTT payload shorter than its topic length');
  const n = payload[0]! | (payload[1]! << 8);
  if (2 + n > payload.length) throw new RangeError('MQTT topic length exceeds the payload');
  return { topic: textDecoder.decode(payload.subarray(2, 2 + n)), message: payload.subarray(2 + n) };
}

// ---------------------------------------------------------------------------

function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

function readU32(buf: Uint8Array, at: number): number {
  return (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16)) + buf[at + 3]! * 0x1000000;
}

function isZero(bytes: Uint8Array, from: number): boolean {
  for (let i = from; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}
