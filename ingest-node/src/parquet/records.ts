// Loads one sealed segment's records for DuckDB, once, for the raw Parquet
// and every view to read. The payloads are not pushed through the Appender
// one value at a time (a native call per record, single-threaded: ~450 ms
// per million records, more than the whole classification's JSON work);
// they are written, in one pass, into a scratch file DuckDB's own parallel
// CSV reader takes back:
//
//   <ordinal> 0x1F 0x01 <payload bytes> 0x01 \n
//
// 0x01 is the quote (and escape) character, so a payload may hold newlines,
// tabs, NULs, anything but 0x01 itself; valid JSON never contains a raw 0x01
// (nor does valid UTF-8 text end up anywhere else). The few records the
// file cannot carry byte for byte — a 0x01, bytes that are not UTF-8 (the
// CSV reader refuses them), or a payload larger than `lineBytesMax` — go to
// a small side table through the Appender with their exact bytes. The
// ordinal ties every row back to its record; seq, ingest time and topic are
// kept in JS typed arrays while the file is written and appended to DuckDB in
// bulk (whole typed-array slices per chunk, no per-record call).
//
// When a view will read its segment as clean (options.ndjson, decided by
// materialize.ts), the records go first to NDJSON_FILE instead: the payloads
// as they are, one per line, which read_json parses straight into the view's
// struct (one parse per payload, in parallel, no text per row). That file
// takes payloads while each is one line from '{' to '}' (ndjsonLine) and
// each buffer is UTF-8 without CR or 0x1F (NdjsonWriter); from the first
// record it cannot take, the rest go to the CSV file as above (a refused
// buffer's records too). The NDJSON lines are also read back as text, by
// the CSV reader with no quote, their ordinal being the line number (WITH
// ORDINALITY), so every other pass sees the same relations whichever file a
// record went to. For an array of records (the benchmark's case) the lines
// go in through one tight loop (NdjsonWriter.takeRun), and the write
// buffers are kept from one segment to the next: in a heap that holds the
// segment, the GC's full mark that fresh buffers set off cost as much CPU
// as the file (test/bench/views/phases.ts shows the time by thread).
//
// Relations (temp objects: they live and die with the job's connection):
//   __lf_records  i (ordinal), payload BLOB (exact bytes), payload_text VARCHAR (NULL when not UTF-8)
//   __lf_meta     i, seq, ingest_us, topic
//   INPUT_RELATION (compile.ts's input) in one of two shapes, see useInput():
//     'views': seq = the ordinal and ingest_time NULL (a view only carries them
//              for its DLQ rows, which materialize.ts joins to __lf_meta), plus payload_text;
//     'full':  the real seq, ingest_time and topic, in ordinal order (raw Parquet);
//     'views+topic': 'views' plus each record's topic, for a view with a `$topic`
//              column (needs the whole __lf_meta: loadMeta() first).
import { isUtf8 } from 'node:buffer';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import {
  BIGINT,
  BLOB,
  DuckDBBigIntVector,
  DuckDBBlobValue,
  DuckDBBlobVector,
  DuckDBDataChunk,
  DuckDBUBigIntVector,
  DuckDBVarCharVector,
  UBIGINT,
  VARCHAR,
} from '@duckdb/node-api';
import type { DuckDBConnection } from '@duckdb/node-api';
import { sqlString } from './duckdb.ts';

export interface SegmentRecord {
  /** Per-instance sequence number (u64). */
  readonly seq: bigint;
  /** Ingest time, microseconds since the Unix epoch (UTC). */
  readonly ingestTimeMicros: bigint;
  /** The record's exact bytes. */
  readonly payload: Uint8Array;
  /** MQTT topic, when the record came from one. */
  readonly topic?: string | undefined;
}

/**
 * A segment's records in seq order: any iterable, or an async one of records
 * or of batches of them (a batch costs one promise turn, not one per record).
 */
export type SegmentRecords =
  Iterable<SegmentRecord> | AsyncIterable<SegmentRecord | readonly SegmentRecord[]>;

export interface LoadedRecords {
  /** Relation with the compiler's input columns (see compile.ts): seq, ingest_time, payload, topic. */
  readonly relation: string;
  readonly rows: number;
  readonly payloadBytes: number;
  readonly firstSeq: bigint | undefined;
  readonly lastSeq: bigint | undefined;
  /** Records that went through the side table instead of the file (not UTF-8, a 0x01, too large). */
  readonly sideRows: number;
  /** Whether any record has a topic (the metadata table has a topic column). */
  readonly hasTopics: boolean;
  /** NDJSON_FILE's path when it was asked for and holds every record, line i = ordinal i. */
  readonly ndjsonFile: string | undefined;
  /**
   * Fills META_TABLE (ordinal → seq, ingest_us, topic): for every record
   * (raw Parquet), or only for these ordinals (a view's DLQ rows). Views
   * never need it for the rows they keep, so it is not loaded up front.
   */
  loadMeta(ordinals?: readonly number[]): Promise<void>;
  /**
   * The job is done with the records: their metadata arrays go to the next
   * segment, and loadMeta() fails from now on. Optional (without it they are
   * garbage collected).
   */
  release(): void;
  /**
   * At least as many UTC ingest dates as the records span (max − min + 1
   * days): a bound for a write partitioned by ingest date (the DLQ), one
   * pass over the metadata array.
   */
  ingestDaysAtMost(): number;
  /**
   * No pass will read the records files again: they go to the pool for the
   * next segment (LoadOptions.poolDir), or are removed. Optional (the job
   * folder's removal takes them otherwise); the relations over them must not
   * be read after it.
   */
  recycleFiles(): Promise<void>;
}

export interface LoadOptions {
  /** The job's folder (inside the DuckDB scratch folder): the records file is written here. */
  readonly dir: string;
  /** Give the event loop a turn every this many records (default DEFAULT_YIELD_EVERY_ROWS; below 1 counts as 1). */
  readonly yieldEveryRows?: number;
  /** Larger payloads go to the side table (default 1 MiB): keeps the CSV reader's line buffer small. */
  readonly lineBytesMax?: number;
  /** Size of each of the two write buffers (default 4 MiB). */
  readonly chunkBytes?: number;
  /**
   * Also write NDJSON_FILE, the payloads one per line, for read_json (a
   * view's first pass, materialize.ts): kept only when every payload can be
   * a line of it as is (ndjsonLine), else removed.
   */
  readonly ndjson?: boolean;
  /**
   * A folder (on the same filesystem as `dir`) where the records files are
   * kept between segments to be written over (see filePool); omit for
   * fresh files every time.
   */
  readonly poolDir?: string;
}

const MAX_U64 = (1n << 64n) - 1n;
const MIN_I64 = -(1n << 63n);
const MAX_I64 = (1n << 63n) - 1n;
/**
 * Building the file is synchronous JS; it gives the event loop a turn every
 * this many records so the HTTP path (acks, fsync callbacks) never waits
 * more than a few milliseconds behind a segment being materialised.
 */
export const DEFAULT_YIELD_EVERY_ROWS = 8192;
const LINE_BYTES_MAX_DEFAULT = 1024 * 1024;
const CHUNK_BYTES_DEFAULT = 4 * 1024 * 1024;
/** Framing around a payload: ordinal (≤ 20 digits), 0x1F, two quotes, newline. */
const FRAME_BYTES = 24;

const QUOTE = 0x01;
const DELIM = 0x1f;
const NL = 0x0a;
const CR = 0x0d;

/** The relation the view compiler reads (compile.ts documents its columns). */
export const INPUT_RELATION = '__lf_input';
export const RECORDS_RELATION = '__lf_records';
export const META_TABLE = '__lf_meta';
const SIDE_TABLE = '__lf_side';
const LINES_VIEW = '__lf_lines';
export const RECORDS_FILE = 'records.csv';
export const NDJSON_FILE = 'records.ndjson';
/** The most records one NdjsonWriter.takeRun call takes (bounds its array of line ends). */
const RUN_ROWS_MAX = 8192;
/** DuckDB's vector size: the most rows one data chunk holds. */
const CHUNK_ROWS = 2048;

/**
 * One segment's metadata arrays, kept for the next (as the write buffers
 * are, for the same reason): 16 bytes per record of the largest segment seen.
 */
let metaPool: { seq: BigUint64Array; ingest: BigInt64Array } | undefined;

/** Growable typed arrays of the per-record metadata. */
class Meta {
  seq: BigUint64Array;
  ingest: BigInt64Array;
  topics: (string | undefined)[] | undefined;
  n = 0;
  payloadBytes = 0;
  /**
   * Sized for `expected` records when known (an array): growing by doubling
   * copies, and is garbage for the GC. The previous segment's arrays are
   * taken when they are large enough (see metaPool).
   */
  constructor(expected: number | undefined) {
    const n = Math.max(expected ?? 4096, 16);
    const pooled = metaPool;
    if (pooled !== undefined && pooled.seq.length >= n) {
      metaPool = undefined;
      this.seq = pooled.seq;
      this.ingest = pooled.ingest;
    } else {
      this.seq = new BigUint64Array(n);
      this.ingest = new BigInt64Array(n);
    }
  }
  /** Keeps the arrays for the next segment (the larger pair): this Meta is not used after. */
  release(): void {
    if (metaPool === undefined || metaPool.seq.length < this.seq.length)
      metaPool = { seq: this.seq, ingest: this.ingest };
  }
  /** Forgets the records from `n` on (taken, then found to be no NDJSON line: NdjsonWriter.takeRun). */
  truncate(n: number): void {
    this.n = n;
    if (this.topics !== undefined && this.topics.length > n) this.topics.length = n;
  }
  push(seq: bigint, ingest: bigint, topic: string | undefined): void {
    if (this.n === this.seq.length) {
      const seqs = new BigUint64Array(this.n * 2);
      seqs.set(this.seq);
      this.seq = seqs;
      const ing = new BigInt64Array(this.n * 2);
      ing.set(this.ingest);
      this.ingest = ing;
    }
    this.seq[this.n] = seq;
    this.ingest[this.n] = ingest;
    if (topic !== undefined) (this.topics ??= [])[this.n] = topic;
    this.n++;
  }
}

/**
 * Write buffers kept from one segment to the next (at most POOL_BUFFERS_MAX):
 * a fresh pair of 4 MiB buffers per segment is external memory that, in a
 * heap holding a segment's records, sets off a full mark of that heap on the
 * GC's threads (measured: 200-300 ms of CPU per 1M-record segment, as much
 * as writing the file).
 */
const bufferPool: Buffer[] = [];
const POOL_BUFFERS_MAX = 4;
function takeBuffer(size: number): Buffer {
  const i = bufferPool.findIndex((b) => b.length === size);
  return i === -1 ? Buffer.allocUnsafe(size) : bufferPool.splice(i, 1)[0]!;
}
/** Back to the pool, once nothing refers to them any more (no write in flight, no lines still being moved). */
function returnBuffers(bufs: readonly Buffer[]): void {
  for (const b of bufs) if (bufferPool.length < POOL_BUFFERS_MAX) bufferPool.push(b);
}

/**
 * Records files kept from one segment to the next, to be written over:
 * writing a segment's records into a new file costs the kernel its page
 * allocation and the filesystem its block allocation (measured on the ext4
 * test volume: 192 MiB in 53–474 ms, that many bytes over an existing
 * file's pages in 37 ms), and unlinking it costs them again. A job's file is
 * moved into `poolDir` when the job is done with it (LoadedRecords
 * .recycleFiles) and moved back into the next job's folder by rename, so a
 * file is only ever in one job's folder, under the name DuckDB reads. Bounded
 * at RECORDS_FILES_POOLED_MAX per process; the pool folder belongs to one
 * ParquetDb (parquet/duckdb.ts POOL_DIR, emptied when it is created), so a
 * file listed here that has gone (the folder emptied) is skipped.
 */
const filePool: { dir: string; file: string }[] = [];
export const RECORDS_FILES_POOLED_MAX = 2;
let pooledSeq = 0;

/** Opens `dest` (which must not exist) for writing from offset 0: a pooled file moved there, or a new one. */
async function openScratch(dest: string, poolDir: string | undefined): Promise<ScratchFile> {
  for (let i = 0; poolDir !== undefined && i < filePool.length;) {
    if (filePool[i]!.dir !== poolDir) {
      i++;
      continue;
    }
    const { file } = filePool.splice(i, 1)[0]!;
    try {
      await rename(file, dest);
    } catch {
      continue; // gone with its folder: the next one, or a new file
    }
    return new ScratchFile(await open(dest, 'r+'));
  }
  return new ScratchFile(await open(dest, 'wx'));
}

/** Moves a finished job's records file into the pool, or removes it when the pool is full. */
async function recycleScratch(file: string, poolDir: string | undefined): Promise<void> {
  if (poolDir !== undefined && filePool.length < RECORDS_FILES_POOLED_MAX) {
    const pooled = path.join(poolDir, `records-${process.pid}-${pooledSeq++}`);
    const entry = { dir: poolDir, file: pooled };
    // Listed before the rename so two concurrent jobs cannot both fill the last place.
    filePool.push(entry);
    try {
      await rename(file, pooled);
      return;
    } catch {
      const at = filePool.indexOf(entry);
      if (at !== -1) filePool.splice(at, 1);
    }
  }
  await rm(file, { force: true });
}

/**
 * A records file written sequentially from offset 0; close() cuts it at
 * what was written (a pooled file may be longer from an earlier segment).
 */
class ScratchFile {
  readonly #fh: FileHandle;
  #bytes = 0;
  constructor(fh: FileHandle) {
    this.#fh = fh;
  }
  async write(data: Buffer): Promise<void> {
    // Short writes resumed: the file's bytes must be exactly the buffers'.
    for (let off = 0; off < data.length;) {
      const { bytesWritten } = await this.#fh.write(data, off, data.length - off, this.#bytes);
      if (bytesWritten <= 0) throw new Error('records file: a write wrote nothing');
      off += bytesWritten;
      this.#bytes += bytesWritten;
    }
  }
  async close(): Promise<void> {
    try {
      await this.#fh.truncate(this.#bytes);
    } finally {
      await this.#fh.close();
    }
  }
}

/**
 * A write left in flight while the next buffer fills: its failure (ENOSPC,
 * EIO) must wait for the next await of it, not be an unhandled rejection
 * that kills the process (and, in the Parquet child, is read as a death on
 * the data).
 */
function observed<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** Writes `<i>\x1F\x01payload\x01\n` lines through two reusable buffers, each write overlapping the next fill. */
class LineWriter {
  readonly #fh: ScratchFile;
  readonly #size: number;
  readonly #bufs: [Buffer, Buffer];
  #buf: Buffer;
  #off = 0;
  #pending: Promise<unknown> = Promise.resolve();
  /** Ordinal as ASCII digits, incremented in place (no number → string per record). */
  readonly #digits = Buffer.alloc(20, 0x30);
  #firstDigit = 19;

  constructor(fh: ScratchFile, size: number) {
    this.#fh = fh;
    this.#size = size;
    this.#bufs = [takeBuffer(size), takeBuffer(size)];
    this.#buf = this.#bufs[0];
  }

  /** Room for a payload of this many bytes in the current buffer. */
  fits(bytes: number): boolean {
    return this.#off + bytes + FRAME_BYTES <= this.#size;
  }

  /** Appends one line for the ordinal the digits hold now (the caller keeps them in step). */
  line(payload: Buffer): void {
    const b = this.#buf;
    let off = this.#off;
    // Byte stores and TypedArray#set: Buffer#copy with offsets allocates a
    // view per call, a million short-lived objects per segment for the GC.
    const d = this.#digits;
    for (let k = this.#firstDigit; k < 20; k++) b[off++] = d[k]!;
    b[off++] = DELIM;
    b[off++] = QUOTE;
    b.set(payload, off);
    off += payload.byteLength;
    b[off++] = QUOTE;
    b[off++] = NL;
    this.#off = off;
  }

  /** Continues at this ordinal (after the records NDJSON_FILE holds). */
  setOrdinal(ordinal: number): void {
    const text = String(ordinal);
    this.#digits.fill(0x30);
    this.#digits.write(text, 20 - text.length, 'latin1');
    this.#firstDigit = 20 - text.length;
  }

  /** Next ordinal. */
  step(): void {
    const d = this.#digits;
    let k = 19;
    while (d[k] === 0x39) d[k--] = 0x30;
    d[k]!++;
    if (k < this.#firstDigit) this.#firstDigit = k;
  }

  /**
   * Hands the filled buffer to the file. Our framing is ASCII, so the buffer
   * is valid UTF-8 exactly when every payload in it is; when it is not,
   * `onInvalid` gets the buffer's lines to move the bad payloads aside.
   */
  async flush(onInvalid: (lines: Buffer) => Buffer): Promise<void> {
    if (this.#off === 0) return;
    let data = this.#buf.subarray(0, this.#off);
    if (!isUtf8(data)) data = onInvalid(data);
    // One write in flight at a time: the other buffer is being filled meanwhile.
    await this.#pending;
    this.#pending = observed(this.#fh.write(data));
    this.#buf = this.#buf === this.#bufs[0] ? this.#bufs[1] : this.#bufs[0];
    this.#off = 0;
  }

  async close(): Promise<void> {
    // A failed write (ENOSPC, EIO) must not leave the file open: its folder's
    // removal would not give its blocks back while the descriptor lives.
    try {
      await this.#pending;
    } finally {
      await this.#fh.close();
    }
  }

  get buffers(): readonly Buffer[] {
    return this.#bufs;
  }
}

/**
 * NDJSON_FILE: the payloads as they are, one per line, through two reusable
 * buffers. A buffer is written only when DuckDB's CSV reader (no quote, 0x1F
 * as the delimiter) gives every line of it back exactly: valid UTF-8, no CR
 * (the reader refuses a lone one) and no 0x1F; flush() hands back any other
 * (rare: none of those bytes is in a JSON payload outside a string, where
 * JSON forbids them raw) for the caller to move to the CSV file.
 */
class NdjsonWriter {
  readonly #fh: ScratchFile;
  readonly #size: number;
  readonly #bufs: [Buffer, Buffer];
  #buf: Buffer;
  #off = 0;
  #rows = 0;
  #pending: Promise<unknown> = Promise.resolve();
  /** Lines written to the file (ordinals 0 … written - 1). */
  written = 0;

  constructor(fh: ScratchFile, size: number) {
    this.#fh = fh;
    this.#size = size;
    this.#bufs = [takeBuffer(size), takeBuffer(size)];
    this.#buf = this.#bufs[0];
  }

  fits(bytes: number): boolean {
    return this.#off + bytes + 1 <= this.#size;
  }

  line(payload: Buffer): void {
    const b = this.#buf;
    b.set(payload, this.#off);
    this.#off += payload.byteLength;
    b[this.#off++] = NL;
    this.#rows++;
  }

  /** Where takeRun's payloads end in the buffer (their newline's offset): at most RUN_ROWS_MAX. */
  readonly #ends = new Int32Array(RUN_ROWS_MAX);

  /**
   * The hot loop of a clean segment: takes records[from …] into the buffer
   * while each is a plain line (ndjsonLine) that fits, at most `max` of them
   * (and RUN_ROWS_MAX), with no call per record but the copy (measured: a
   * third of the per-record time of add() below, which it otherwise does
   * the same as). The newline check is one search over everything the run
   * copied, the payloads' separators not yet written (a search per payload
   * was a quarter of the loop's time). Returns the index it stopped at: the
   * end, `from + max`, or a record for add() (a full buffer, a payload that
   * is no plain line).
   */
  takeRun(
    records: readonly SegmentRecord[],
    from: number,
    max: number,
    meta: Meta,
    lineBytesMax: number,
  ): number {
    const b = this.#buf;
    const room = this.#size - 1;
    const start = this.#off;
    const ends = this.#ends;
    const metaStart = meta.n;
    let off = start;
    let i = from;
    const end = Math.min(records.length, from + Math.min(max, RUN_ROWS_MAX));
    for (; i < end; i++) {
      const r = records[i]!;
      const p = r.payload;
      const n = p.byteLength;
      if (n < 2 || n > lineBytesMax || off + n > room || p[0] !== 0x7b || p[n - 1] !== 0x7d) break;
      checkRecord(r);
      meta.push(r.seq, r.ingestTimeMicros, r.topic);
      meta.payloadBytes += n;
      b.set(p, off);
      off += n;
      ends[i - from] = off;
      // Not a newline (the search below must see only the payloads' own): every separator is set after it.
      b[off++] = 0x7d;
    }
    let taken = i - from;
    const inside = taken === 0 ? -1 : b.subarray(start, off).indexOf(NL);
    if (inside !== -1) {
      // The payload holding it and those after it go back to add(), which refuses that one.
      const at = start + inside;
      let k = 0;
      while (ends[k]! < at) k++;
      const kept = k === 0 ? start : ends[k - 1]! + 1;
      meta.payloadBytes -= off - kept - (taken - k);
      meta.truncate(metaStart + k);
      taken = k;
      off = kept;
      i = from + k;
    }
    for (let k = 0; k < taken; k++) b[ends[k]!] = NL;
    this.#rows += taken;
    this.#off = off;
    return i;
  }

  /** Writes the buffer, or returns its lines when the file cannot carry them (nothing written then). */
  async flush(): Promise<Buffer | undefined> {
    if (this.#off === 0) return undefined;
    const data = this.#buf.subarray(0, this.#off);
    if (!isUtf8(data) || data.indexOf(CR) !== -1 || data.indexOf(DELIM) !== -1) return data;
    await this.#pending;
    this.#pending = observed(this.#fh.write(data));
    this.written += this.#rows;
    this.#buf = this.#buf === this.#bufs[0] ? this.#bufs[1] : this.#bufs[0];
    this.#off = 0;
    this.#rows = 0;
    return undefined;
  }

  async close(): Promise<void> {
    // A failed write (ENOSPC, EIO) must not leave the file open: its folder's
    // removal would not give its blocks back while the descriptor lives.
    try {
      await this.#pending;
    } finally {
      await this.#fh.close();
    }
  }

  get buffers(): readonly Buffer[] {
    return this.#bufs;
  }
}

/**
 * Whether a payload may be a line of NDJSON_FILE (besides the bytes
 * NdjsonWriter checks per buffer): read back exactly by DuckDB's CSV reader,
 * and read by read_json (format newline_delimited) exactly as json_transform
 * reads its text — one row for the line, the same struct or NULL. DuckDB's
 * JSON line reader finds a line by its newline, skips blank lines and
 * whitespace before a line, and takes \v and \f around a document as
 * whitespace (JSON does not). So: one line, starting with '{' and ending
 * with '}' (no blank line, BOM or whitespace around it). The first payload
 * that is not turns the rest of the segment over to the CSV file.
 */
export function ndjsonLine(p: Buffer, lineBytesMax: number): boolean {
  const n = p.byteLength;
  return n > 1 && n <= lineBytesMax && p[0] === 0x7b && p[n - 1] === 0x7d && p.indexOf(NL) === -1;
}

/**
 * Splits a buffer of our lines, keeps the UTF-8 ones and hands the others to
 * `aside` (rare: only a buffer that failed the UTF-8 check is split).
 */
function keepUtf8Lines(data: Buffer, aside: (ordinal: number, payload: Uint8Array) => void): Buffer {
  const kept: Buffer[] = [];
  let start = 0;
  while (start < data.length) {
    const delim = data.indexOf(DELIM, start);
    // No payload holds 0x01, so the closing quote is the next one after the opening.
    const close = data.indexOf(QUOTE, delim + 2);
    const end = close + 2; // past the quote and the newline
    if (delim < 0 || close < 0 || data[close + 1] !== NL) throw new Error('records file: malformed line');
    const payload = data.subarray(delim + 2, close);
    if (isUtf8(payload)) kept.push(data.subarray(start, end));
    else aside(Number(data.subarray(start, delim).toString('latin1')), Buffer.from(payload));
    start = end;
  }
  return Buffer.concat(kept);
}

function isBuffer(x: Uint8Array): x is Buffer {
  return Buffer.isBuffer(x);
}

function checkRecord(r: SegmentRecord): void {
  if (r.seq < 0n || r.seq > MAX_U64) throw new RangeError(`seq ${r.seq} is not a u64`);
  if (r.ingestTimeMicros < MIN_I64 || r.ingestTimeMicros > MAX_I64)
    throw new RangeError(`ingestTimeMicros ${r.ingestTimeMicros} is not an i64`);
}

/**
 * Copies a typed-array slice into a fresh vector in one call. The vector's
 * backing array is not public API; when it is not the typed array this
 * expects (another node-api version), it falls back to one setItem per value.
 */
function fill(v: DuckDBUBigIntVector | DuckDBBigIntVector, values: BigUint64Array | BigInt64Array): void {
  const items = (v as unknown as { items?: unknown }).items;
  if (
    (items instanceof BigUint64Array && values instanceof BigUint64Array) ||
    (items instanceof BigInt64Array && values instanceof BigInt64Array)
  ) {
    if (items.length >= values.length) {
      (items as BigUint64Array).set(values);
      return;
    }
  }
  for (let k = 0; k < values.length; k++) v.setItem(k, values[k]!);
}

/**
 * (Re)creates the metadata table with the given records (ordinals, in
 * order), or with every record. Whole typed-array slices per chunk.
 */
async function writeMeta(conn: DuckDBConnection, meta: Meta, ordinals?: readonly number[]): Promise<void> {
  const topics = meta.topics;
  await conn.run(
    `CREATE OR REPLACE TEMP TABLE ${META_TABLE} (i UBIGINT NOT NULL, seq UBIGINT NOT NULL, ingest_us BIGINT NOT NULL${topics !== undefined ? ', topic VARCHAR' : ''})`,
  );
  const n = ordinals?.length ?? meta.n;
  if (n === 0) return;
  const appender = await conn.createAppender(META_TABLE, 'main', 'temp');
  try {
    const types = topics !== undefined ? [UBIGINT, UBIGINT, BIGINT, VARCHAR] : [UBIGINT, UBIGINT, BIGINT];
    const idx = new BigUint64Array(CHUNK_ROWS);
    const seqs = new BigUint64Array(CHUNK_ROWS);
    const times = new BigInt64Array(CHUNK_ROWS);
    for (let start = 0; start < n; start += CHUNK_ROWS) {
      const rows = Math.min(CHUNK_ROWS, n - start);
      // A fresh chunk per slice: its vectors have no validity mask yet, so
      // every value set below is valid without a per-item call.
      const chunk = DuckDBDataChunk.create(types, rows);
      chunk.rowCount = rows;
      const [iv, sv, tv, topicv] = [0, 1, 2, 3].slice(0, types.length).map((k) => chunk.getColumnVector(k));
      if (
        !(iv instanceof DuckDBUBigIntVector) ||
        !(sv instanceof DuckDBUBigIntVector) ||
        !(tv instanceof DuckDBBigIntVector)
      )
        throw new Error('unexpected vector types in the metadata chunk');
      for (let k = 0; k < rows; k++) {
        const o = ordinals !== undefined ? ordinals[start + k]! : start + k;
        idx[k] = BigInt(o);
        seqs[k] = meta.seq[o]!;
        times[k] = meta.ingest[o]!;
      }
      fill(iv, idx.subarray(0, rows));
      fill(sv, seqs.subarray(0, rows));
      fill(tv, times.subarray(0, rows));
      iv.flush();
      sv.flush();
      tv.flush();
      if (topics !== undefined) {
        if (!(topicv instanceof DuckDBVarCharVector)) throw new Error('unexpected topic vector type');
        for (let k = 0; k < rows; k++) {
          const o = ordinals !== undefined ? ordinals[start + k]! : start + k;
          topicv.setItem(k, topics[o] ?? null);
        }
        topicv.flush();
      }
      appender.appendDataChunk(chunk);
    }
    appender.flushSync();
  } finally {
    appender.closeSync();
  }
}

async function appendSide(conn: DuckDBConnection, side: [number, Uint8Array][]): Promise<void> {
  await conn.run(`CREATE TEMP TABLE ${SIDE_TABLE} (i UBIGINT NOT NULL, payload BLOB NOT NULL)`);
  if (side.length === 0) return;
  const appender = await conn.createAppender(SIDE_TABLE, 'main', 'temp');
  try {
    for (let start = 0; start < side.length; start += CHUNK_ROWS) {
      const rows = Math.min(CHUNK_ROWS, side.length - start);
      const chunk = DuckDBDataChunk.create([UBIGINT, BLOB], rows);
      chunk.rowCount = rows;
      const iv = chunk.getColumnVector(0);
      const pv = chunk.getColumnVector(1);
      if (!(iv instanceof DuckDBUBigIntVector) || !(pv instanceof DuckDBBlobVector))
        throw new Error('unexpected vector types in the side chunk');
      for (let k = 0; k < rows; k++) {
        const [ordinal, payload] = side[start + k]!;
        iv.setItem(k, BigInt(ordinal));
        pv.setItem(k, new DuckDBBlobValue(payload));
      }
      iv.flush();
      pv.flush();
      appender.appendDataChunk(chunk);
    }
    appender.flushSync();
  } finally {
    appender.closeSync();
  }
}

/**
 * Writes the records file and the side and metadata tables on `conn`, and
 * points INPUT_RELATION at them in the 'views' shape.
 */
export async function loadRecords(
  conn: DuckDBConnection,
  records: SegmentRecords,
  options: LoadOptions,
): Promise<LoadedRecords> {
  // Below 1, the batch loop would take nothing and yield for ever.
  const yieldEvery = Math.max(1, Math.floor(options.yieldEveryRows ?? DEFAULT_YIELD_EVERY_ROWS));
  const lineBytesMax = options.lineBytesMax ?? LINE_BYTES_MAX_DEFAULT;
  const chunkBytes = Math.max(options.chunkBytes ?? CHUNK_BYTES_DEFAULT, lineBytesMax + FRAME_BYTES);
  const file = path.join(options.dir, RECORDS_FILE);
  const ndjsonPath = path.join(options.dir, NDJSON_FILE);
  // Records go to NDJSON_FILE while they can (options.ndjson), then to the
  // CSV file: ordinals 0 … ndjsonRows - 1 are lines of the first, the rest
  // lines of the second or side rows.
  let nd: NdjsonWriter | undefined =
    options.ndjson === true
      ? new NdjsonWriter(await openScratch(ndjsonPath, options.poolDir), chunkBytes)
      : undefined;
  let writer: LineWriter | undefined =
    nd === undefined ? new LineWriter(await openScratch(file, options.poolDir), chunkBytes) : undefined;
  const writers: (NdjsonWriter | LineWriter)[] = [
    ...(nd !== undefined ? [nd] : []),
    ...(writer ? [writer] : []),
  ];
  const files = [nd !== undefined ? ndjsonPath : file];
  let ndjsonRows = 0;
  const meta = new Meta(Array.isArray(records) ? records.length : undefined);
  const side: [number, Uint8Array][] = [];
  const aside = (ordinal: number, payload: Uint8Array): void => {
    side.push([ordinal, payload]);
  };
  const onInvalid = (lines: Buffer): Buffer => keepUtf8Lines(lines, aside);
  const taken = (r: SegmentRecord, bytes: number): void => {
    checkRecord(r);
    meta.push(r.seq, r.ingestTimeMicros, r.topic);
    meta.payloadBytes += bytes;
  };

  /** Takes one record; false when a buffer must be flushed or the file switched first (nothing taken then). */
  const add = (r: SegmentRecord): boolean => {
    const u8 = r.payload;
    const p = isBuffer(u8) ? u8 : Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
    if (nd !== undefined) {
      if (!ndjsonLine(p, lineBytesMax) || !nd.fits(p.byteLength)) return false;
      taken(r, p.byteLength);
      nd.line(p);
      return true;
    }
    const w = writer!;
    const inFile = p.byteLength <= lineBytesMax && p.indexOf(QUOTE) === -1;
    if (inFile && !w.fits(p.byteLength)) return false;
    const ordinal = meta.n;
    taken(r, p.byteLength);
    // Payload views may point into a decoder buffer that moves on: the side table keeps a copy.
    if (inFile) w.line(p);
    else aside(ordinal, Buffer.from(p));
    w.step();
    return true;
  };

  /** Ends NDJSON_FILE at what it holds; `lines` (records already counted in meta) go to the CSV file. */
  const toCsv = async (lines: Buffer | undefined): Promise<void> => {
    const ndw = nd!;
    nd = undefined;
    await ndw.close();
    ndjsonRows = ndw.written;
    const w = new LineWriter(await openScratch(file, options.poolDir), chunkBytes);
    files.push(file);
    writers.push(w);
    writer = w;
    w.setOrdinal(ndjsonRows);
    let ordinal = ndjsonRows;
    for (let start = 0; lines !== undefined && start < lines.length; ordinal++) {
      const end = lines.indexOf(NL, start);
      const p = lines.subarray(start, end);
      start = end + 1;
      const inFile = p.byteLength <= lineBytesMax && p.indexOf(QUOTE) === -1;
      if (inFile && !w.fits(p.byteLength)) await w.flush(onInvalid);
      if (inFile) w.line(p);
      else aside(ordinal, Buffer.from(p));
      w.step();
    }
  };
  /** What add() needs before it can take `r`: a flushed buffer, or the switch to the CSV file. */
  const makeRoom = async (r: SegmentRecord): Promise<void> => {
    if (nd === undefined) return writer!.flush(onInvalid);
    const u8 = r.payload;
    const p = isBuffer(u8) ? u8 : Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
    const refused = await nd.flush();
    if (refused !== undefined || !ndjsonLine(p, lineBytesMax)) await toCsv(refused);
  };
  try {
    // Arrays (the caller's, or an async source's batches) through takeRun while lines go to NDJSON_FILE.
    let sinceYield = 0;
    const takeArray = async (all: readonly SegmentRecord[]): Promise<void> => {
      for (let i = 0; i < all.length;) {
        if (nd !== undefined) {
          const stop = nd.takeRun(all, i, yieldEvery - sinceYield, meta, lineBytesMax);
          sinceYield += stop - i;
          i = stop;
        }
        if (i < all.length && sinceYield < yieldEvery) {
          const r = all[i++]!;
          while (!add(r)) await makeRoom(r);
          sinceYield++;
        }
        if (sinceYield >= yieldEvery) {
          sinceYield = 0;
          await yieldToEventLoop();
        }
      }
    };
    if (Array.isArray(records)) await takeArray(records as readonly SegmentRecord[]);
    else if (Symbol.iterator in records) {
      // Plain loop for sync iterators: `for await` would cost a promise turn
      // per record, more than writing it.
      for (const r of records) {
        while (!add(r)) await makeRoom(r);
        if (meta.n % yieldEvery === 0) await yieldToEventLoop();
      }
    } else {
      for await (const item of records) {
        if (Array.isArray(item)) {
          await takeArray(item as readonly SegmentRecord[]);
          continue;
        }
        const r = item as SegmentRecord;
        while (!add(r)) await makeRoom(r);
        if (++sinceYield >= yieldEvery) {
          sinceYield = 0;
          await yieldToEventLoop();
        }
      }
    }
    if (nd !== undefined) {
      const refused = await nd.flush();
      if (refused !== undefined) await toCsv(refused);
    }
    if (nd !== undefined) {
      ndjsonRows = nd.written;
      if (ndjsonRows !== meta.n) throw new Error('records: NDJSON file out of step with the records');
    }
    await writer?.flush(onInvalid);
  } finally {
    try {
      await nd?.close();
    } finally {
      await writer?.close();
    }
  }
  // Every write has completed (close() awaited it) and no lines are left to move.
  for (const w of writers) returnBuffers(w.buffers);
  const ndjsonFile = nd !== undefined ? ndjsonPath : undefined;

  await appendSide(conn, side);
  // Empty until a pass asks for it (loadMeta), so joins to it always bind.
  await writeMeta(conn, meta, []);
  // The readers' options are all explicit: no sniffing, no header, no NULL
  // spelling (a quoted empty field is the empty payload; NDJSON lines are
  // never empty), and the line bound covers every payload the files hold.
  // The NDJSON file's ordinal is its line number (WITH ORDINALITY: DuckDB
  // reads it in one thread then, in order), the CSV file's is written in it.
  const maxLine = Math.max(2 * 1024 * 1024, lineBytesMax + 2 * FRAME_BYTES);
  const parts: string[] = [];
  if (ndjsonRows > 0)
    parts.push(`SELECT CAST(o - 1 AS UBIGINT) AS i, line FROM read_csv(${sqlString(ndjsonPath)},
       columns = {'line': 'VARCHAR'}, auto_detect = false, header = false,
       delim = '\x1f', quote = '', escape = '', new_line = '\\n',
       strict_mode = true, null_padding = false, max_line_size = ${maxLine}) WITH ORDINALITY AS __lf_n(line, o)`);
  if (writer !== undefined)
    parts.push(`SELECT i, line FROM read_csv(${sqlString(file)},
       columns = {'i': 'UBIGINT', 'line': 'VARCHAR'}, auto_detect = false, header = false,
       delim = '\x1f', quote = '\x01', escape = '\x01', new_line = '\\n',
       strict_mode = true, null_padding = false, allow_quoted_nulls = false,
       max_line_size = ${maxLine})`);
  if (parts.length === 0) parts.push('SELECT NULL::UBIGINT AS i, NULL::VARCHAR AS line WHERE false');
  await conn.run(`CREATE TEMP VIEW ${LINES_VIEW} AS ${parts.join('\n       UNION ALL ')}`);
  // encode() only relabels the VARCHAR as a BLOB (no copy, no escapes read).
  await conn.run(
    `CREATE TEMP VIEW ${RECORDS_RELATION} AS
       SELECT i, encode(line) AS payload, line AS payload_text FROM ${LINES_VIEW}
       UNION ALL SELECT i, payload, try(decode(payload)) AS payload_text FROM ${SIDE_TABLE}`,
  );
  const hasTopics = meta.topics !== undefined;
  await useInput(conn, 'views', hasTopics);
  let metaFull = false;
  let released = false;
  return {
    async loadMeta(ordinals) {
      if (released) throw new Error('records: loadMeta() after release()');
      if (metaFull) return;
      await writeMeta(conn, meta, ordinals);
      metaFull = ordinals === undefined;
    },
    release() {
      if (released) return;
      released = true;
      meta.release();
    },
    ingestDaysAtMost() {
      if (meta.n === 0) return 0;
      let min = meta.ingest[0]!;
      let max = min;
      for (let k = 1; k < meta.n; k++) {
        const t = meta.ingest[k]!;
        if (t < min) min = t;
        else if (t > max) max = t;
      }
      const day = 86_400_000_000n;
      const floorDay = (t: bigint): bigint => (t >= 0n ? t / day : -((-t + day - 1n) / day));
      return Number(floorDay(max) - floorDay(min)) + 1;
    },
    async recycleFiles() {
      for (const f of files.splice(0)) await recycleScratch(f, options.poolDir);
    },
    relation: INPUT_RELATION,
    rows: meta.n,
    payloadBytes: meta.payloadBytes,
    firstSeq: meta.n > 0 ? meta.seq[0] : undefined,
    lastSeq: meta.n > 0 ? meta.seq[meta.n - 1] : undefined,
    sideRows: side.length,
    hasTopics,
    ndjsonFile,
  };
}

/** Points INPUT_RELATION at the records in the shape a pass needs (see the header). */
export async function useInput(
  conn: DuckDBConnection,
  shape: 'views' | 'views+topic' | 'full',
  hasTopics: boolean,
): Promise<void> {
  if (shape === 'views+topic' && hasTopics) {
    await conn.run(
      `CREATE OR REPLACE TEMP VIEW ${INPUT_RELATION} AS
         SELECT r.i AS seq, NULL::TIMESTAMP AS ingest_time, r.payload, m.topic, r.payload_text
         FROM ${RECORDS_RELATION} r LEFT JOIN ${META_TABLE} m ON m.i = r.i`,
    );
    return;
  }
  if (shape === 'views' || shape === 'views+topic') {
    await conn.run(
      `CREATE OR REPLACE TEMP VIEW ${INPUT_RELATION} AS
         SELECT i AS seq, NULL::TIMESTAMP AS ingest_time, payload, NULL::VARCHAR AS topic, payload_text
         FROM ${RECORDS_RELATION}`,
    );
    return;
  }
  await conn.run(
    `CREATE OR REPLACE TEMP VIEW ${INPUT_RELATION} AS
       SELECT m.seq, make_timestamp(m.ingest_us) AS ingest_time, r.payload, ${hasTopics ? 'm.topic' : 'NULL::VARCHAR AS topic'}, r.payload_text
       FROM ${RECORDS_RELATION} r JOIN ${META_TABLE} m ON m.i = r.i
       ORDER BY r.i`,
  );
}
