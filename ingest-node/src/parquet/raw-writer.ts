// Raw Parquet written from the records themselves, in the Parquet child,
// as the segment is read (child.ts feeds it the batches the view loader
// reads too): the same files raw.ts's DuckDB COPY writes (docs/views.md "Raw
// Parquet": the six columns with DuckDB's physical and converted types, ZSTD,
// one file per UTC ingest date at `dt=YYYY-MM-DD/data_0.parquet`, rows in
// seq order), without the records file, the join with the metadata table, the
// sort and DuckDB's dictionary attempt on a near-unique payload column.
// Measured with test/bench/parquet/segment.ts: the COPY was the largest
// single cost of a 16 MiB segment of 1 KiB events in the child.
//
// Layout: data pages v1, PLAIN values, definition levels RLE (every column
// OPTIONAL, as DuckDB writes them), each page ZSTD-compressed on its own
// (node:zlib), pages cut at PAGE_BYTES of values, row groups of
// `rowGroupRows` rows (DuckDB's default 122,880) or ROW_GROUP_BYTES_MAX of
// values, whichever comes first. A row group's compressed pages are held
// until it is written (one writev): memory is one row group's compressed
// bytes plus one page per column. Column statistics: null count for every
// column, min/max for endpoint, instance, seq (unsigned), ingest_time and
// topic (what a reader prunes on); none for the payload.
import { createHash, type Hash } from 'node:crypto';
import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import zlib from 'node:zlib';
import type { ParquetFile } from './outputs.ts';

import type { SegmentRecord } from './records.ts';

export interface RawWriterOptions {
  /** Folder of the raw output (`<job>/raw`): files go to `dt=YYYY-MM-DD/data_0.parquet` under it. */
  readonly dir: string;
  readonly endpoint: string;
  readonly instance: string;
  /** Rows per row group (DuckDB's default when omitted). */
  readonly rowGroupRows?: number;
  /** Uncompressed value bytes per data page (tests make it small to get many pages). */
  readonly pageBytes?: number;
  /** ZSTD level of every page (default ZSTD_LEVEL). */
  readonly zstdLevel?: number;
}

/** DuckDB's default ROW_GROUP_SIZE: the files keep the row groups they had. */
export const ROW_GROUP_ROWS_DEFAULT = 122_880;
/** A row group also ends at this many bytes of values: its compressed pages are held until it is written. */
export const ROW_GROUP_BYTES_MAX = 64 * 1024 * 1024;
/**
 * Uncompressed value bytes of a data page. Large: ZSTD compresses each page
 * on its own, and repeated payloads (which DuckDB's dictionary caught) cost
 * a few hundred bytes per page; 1 MiB pages left the bench's repeated 1 KiB
 * event 3 % larger than DuckDB's file, 8 MiB ones smaller.
 */
export const PAGE_BYTES = 8 * 1024 * 1024;
/**
 * ZSTD level of every page. Level 1, not DuckDB's 3: as small or smaller on
 * the benches' events (seq and ingest_time pages a third smaller, JSON
 * payloads within 1 %: parquet-raw-writer.test.ts compares) for less CPU.
 */
export const ZSTD_LEVEL = 1;

/**
 * A string's UTF-8 bytes, or a copy of bytes, in a buffer of their own: not
 * a slice of one of Node's shared 64 KiB pool blocks, which bytes kept until
 * a file's footer would pin (one block per date file).
 */
function ownBytes(text: string): Buffer {
  const b = Buffer.alloc(Buffer.byteLength(text, 'utf8'));
  b.write(text, 'utf8');
  return b;
}
function ownCopy(bytes: Buffer): Buffer {
  const b = Buffer.alloc(bytes.length);
  bytes.copy(b);
  return b;
}

/**
 * Date files open at once, each with its handle and its row group being
 * filled. A segment may span more dates (a trickle endpoint's long-lived
 * segment, a clock stepping forward across many days): the date least
 * recently written is then suspended (its row group written, its handle
 * closed, its buffers freed; its footer waits for finish) and resumed, opened
 * for append, if its date comes again. The WAL's ingest times never go back,
 * so in a segment's seq order a suspended date does not come again.
 */
export const RAW_FILES_OPEN_MAX = 64;

const MAX_U64 = (1n << 64n) - 1n;
const MIN_I64 = -(1n << 63n);
const MAX_I64 = (1n << 63n) - 1n;
const DAY_US = 86_400_000_000;
const RAW_FILE_NAME = 'data_0.parquet';
const MAGIC = Buffer.from('PAR1', 'latin1');
const CREATED_BY = 'landfall (ingest-node/src/parquet/raw-writer.ts)';

// Parquet's Thrift enums (parquet.thrift).
const TYPE_INT64 = 2;
const TYPE_BYTE_ARRAY = 6;
const REPETITION_REQUIRED = 0;
const REPETITION_OPTIONAL = 1;
const CONVERTED_UTF8 = 0;
const CONVERTED_TIMESTAMP_MICROS = 10;
const CONVERTED_UINT_64 = 14;
const ENCODING_PLAIN = 0;
const ENCODING_RLE = 3;
const CODEC_ZSTD = 6;
const PAGE_DATA = 0;

// Thrift compact protocol types.
const CT_TRUE = 1;
const CT_FALSE = 2;
const CT_BYTE = 3;
const CT_I32 = 5;
const CT_I64 = 6;
const CT_BINARY = 8;
const CT_LIST = 9;
const CT_STRUCT = 12;

/** Thrift compact protocol, the few shapes Parquet's metadata needs. */
class Thrift {
  #buf = Buffer.allocUnsafe(256);
  #len = 0;
  #last: number[] = [0];

  #room(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    const b = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.#len + n));
    this.#buf.copy(b, 0, 0, this.#len);
    this.#buf = b;
  }
  #byte(v: number): void {
    this.#room(1);
    this.#buf[this.#len++] = v;
  }
  #varint(v: bigint): void {
    this.#room(10);
    let x = v;
    while (x >= 0x80n) {
      this.#buf[this.#len++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.#buf[this.#len++] = Number(x);
  }
  #zigzag(v: bigint): void {
    this.#varint(v >= 0n ? v << 1n : (-v << 1n) - 1n);
  }
  #field(id: number, type: number): void {
    const last = this.#last[this.#last.length - 1]!;
    const delta = id - last;
    if (delta > 0 && delta <= 15) this.#byte((delta << 4) | type);
    else {
      this.#byte(type);
      this.#zigzag(BigInt(id));
    }
    this.#last[this.#last.length - 1] = id;
  }
  #bytes(b: Uint8Array): void {
    this.#varint(BigInt(b.byteLength));
    this.#room(b.byteLength);
    this.#buf.set(b, this.#len);
    this.#len += b.byteLength;
  }
  i32(id: number, v: number): this {
    this.#field(id, CT_I32);
    this.#zigzag(BigInt(v));
    return this;
  }
  i64(id: number, v: number | bigint): this {
    this.#field(id, CT_I64);
    this.#zigzag(BigInt(v));
    return this;
  }
  i8(id: number, v: number): this {
    this.#field(id, CT_BYTE);
    this.#byte(v & 0xff);
    return this;
  }
  bool(id: number, v: boolean): this {
    this.#field(id, v ? CT_TRUE : CT_FALSE);
    return this;
  }
  binary(id: number, v: Uint8Array | string): this {
    this.#field(id, CT_BINARY);
    this.#bytes(typeof v === 'string' ? Buffer.from(v, 'utf8') : v);
    return this;
  }
  struct(id: number, body: (t: this) => void): this {
    this.#field(id, CT_STRUCT);
    this.#last.push(0);
    body(this);
    this.#byte(0);
    this.#last.pop();
    return this;
  }
  #listHeader(n: number, type: number): void {
    if (n < 15) this.#byte((n << 4) | type);
    else {
      this.#byte(0xf0 | type);
      this.#varint(BigInt(n));
    }
  }
  listI32(id: number, vs: readonly number[]): this {
    this.#field(id, CT_LIST);
    this.#listHeader(vs.length, CT_I32);
    for (const v of vs) this.#zigzag(BigInt(v));
    return this;
  }
  listBinary(id: number, vs: readonly string[]): this {
    this.#field(id, CT_LIST);
    this.#listHeader(vs.length, CT_BINARY);
    for (const v of vs) this.#bytes(Buffer.from(v, 'utf8'));
    return this;
  }
  listStruct<T>(id: number, items: readonly T[], body: (t: this, item: T) => void): this {
    this.#field(id, CT_LIST);
    this.#listHeader(items.length, CT_STRUCT);
    for (const item of items) {
      this.#last.push(0);
      body(this, item);
      this.#byte(0);
      this.#last.pop();
    }
    return this;
  }
  /** The encoded top-level struct (its stop byte added). */
  end(): Buffer {
    this.#byte(0);
    return this.#buf.subarray(0, this.#len);
  }
}

/** Runs of definition levels (0 null, 1 value) of one page, RLE-encoded at its end. */
class DefLevels {
  runs: number[] = [];
  #value = -1;
  #count = 0;
  push(v: 0 | 1): void {
    if (v === this.#value) {
      this.#count++;
      return;
    }
    if (this.#count > 0) this.runs.push(this.#value, this.#count);
    this.#value = v;
    this.#count = 1;
  }
  /** `<u32 length><RLE runs>` (bit width 1: one value byte per run), and resets. */
  take(): Buffer {
    if (this.#count > 0) this.runs.push(this.#value, this.#count);
    const out = Buffer.allocUnsafe(4 + (this.runs.length / 2) * 11);
    let o = 4;
    for (let i = 0; i < this.runs.length; i += 2) {
      let h = this.runs[i + 1]! * 2;
      while (h >= 0x80) {
        out[o++] = (h & 0x7f) | 0x80;
        h = Math.floor(h / 128);
      }
      out[o++] = h;
      out[o++] = this.runs[i]!;
    }
    out.writeUInt32LE(o - 4, 0);
    this.runs = [];
    this.#value = -1;
    this.#count = 0;
    return out.subarray(0, o);
  }
}

interface Page {
  readonly header: Buffer;
  readonly body: Buffer;
  readonly uncompressedBytes: number;
}

/** Room kept in front of a page's values for its definition levels, so the page is compressed without a copy. */
const LEVELS_ROOM = 32;
/**
 * Value buffers of 'bytes' columns kept from one segment to the next (at
 * most POOL_BUFFERS_MAX, each at most a page and a 1 MiB record past it):
 * a payload column's buffer grows to a page per file, and fresh external
 * memory of that size in every job sets off the GC's full marks (records.ts
 * keeps its write buffers for the same reason).
 */
const bufferPool: Buffer[] = [];
const POOL_BUFFERS_MAX = 2;
function takeBuffer(): Buffer {
  return bufferPool.pop() ?? Buffer.allocUnsafe(64 * 1024);
}
function giveBuffer(b: Buffer, pageBytes: number): void {
  if (
    bufferPool.length < POOL_BUFFERS_MAX &&
    b.length > 64 * 1024 &&
    b.length <= pageBytes + LEVELS_ROOM + (1 << 20)
  )
    bufferPool.push(b);
}

/** Plain INT64 is little-endian: a typed array's bytes are the page's values on a little-endian host. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * One column of the current row group: its sealed pages and the page being
 * filled. Three kinds, each with no call per row beyond what its values
 * need: 'const' (endpoint, instance: one value, counted, laid out when the
 * page is sealed), 'int64' (a typed array) and 'bytes' (length-prefixed
 * values behind LEVELS_ROOM; nullable columns keep their level runs).
 */
class Column {
  readonly name: string;
  readonly physical: number;
  readonly pages: Page[] = [];
  readonly #kind: 'const' | 'int64' | 'bytes';
  readonly #constant: Buffer | undefined;
  readonly #unsigned: boolean;
  readonly #pooled: boolean;
  #ints: BigInt64Array | BigUint64Array;
  #values: Buffer;
  #off = LEVELS_ROOM;
  #pageValues = 0;
  /** Level runs of a nullable column; undefined: every value present (one run). */
  readonly #levels: DefLevels | undefined;
  nulls = 0;
  values = 0;
  /** Plain-encoded min and max (statistics), when tracked. */
  min: Buffer | undefined;
  max: Buffer | undefined;
  readonly #pageBytes: number;
  readonly #level: number;

  constructor(
    name: string,
    spec:
      | { readonly kind: 'const'; readonly value: Buffer }
      | { readonly kind: 'int64'; readonly unsigned: boolean }
      | { readonly kind: 'bytes'; readonly nullable: boolean; readonly pooled: boolean },
    pageBytes: number,
    level: number,
  ) {
    this.name = name;
    this.#kind = spec.kind;
    this.physical = spec.kind === 'int64' ? TYPE_INT64 : TYPE_BYTE_ARRAY;
    this.#constant = spec.kind === 'const' ? spec.value : undefined;
    this.#unsigned = spec.kind === 'int64' && spec.unsigned;
    this.#levels = spec.kind === 'bytes' && spec.nullable ? new DefLevels() : undefined;
    this.#pageBytes = pageBytes;
    this.#level = level;
    this.#ints = this.#unsigned
      ? new BigUint64Array(spec.kind === 'int64' ? 4096 : 0)
      : new BigInt64Array(spec.kind === 'int64' ? 4096 : 0);
    this.#pooled = spec.kind === 'bytes' && spec.pooled;
    this.#values =
      spec.kind !== 'bytes' ? Buffer.alloc(0) : this.#pooled ? takeBuffer() : Buffer.allocUnsafe(4096);
  }

  /** A row of a 'const' column. */
  constant(): void {
    this.values++;
    if (++this.#pageValues * (4 + this.#constant!.length) >= this.#pageBytes) this.seal();
  }

  /** A value of an 'int64' column. */
  int64(v: bigint): void {
    if (this.#pageValues === this.#ints.length) {
      const next = this.#unsigned
        ? new BigUint64Array(Math.max(4096, this.#ints.length * 2))
        : new BigInt64Array(Math.max(4096, this.#ints.length * 2));
      next.set(this.#ints);
      this.#ints = next;
    }
    this.#ints[this.#pageValues++] = v;
    this.values++;
    if (this.#pageValues * 8 >= this.#pageBytes) this.seal();
  }

  /** A value of a 'bytes' column (null only in a nullable one). */
  bytes(v: Uint8Array | undefined): void {
    if (v === undefined) {
      this.#levels!.push(0);
      this.nulls++;
    } else {
      const need = this.#off + 4 + v.byteLength;
      if (need > this.#values.length) {
        // Doubling, but not far past a page: the buffer lives as long as the file.
        const size = Math.max(need, Math.min(this.#values.length * 2, this.#pageBytes + LEVELS_ROOM + 4));
        const b = Buffer.allocUnsafe(size);
        this.#values.copy(b, 0, 0, this.#off);
        this.#values = b;
      }
      const b = this.#values;
      const n = v.byteLength;
      let o = this.#off;
      b[o++] = n & 0xff;
      b[o++] = (n >>> 8) & 0xff;
      b[o++] = (n >>> 16) & 0xff;
      b[o++] = n >>> 24;
      b.set(v, o);
      this.#off = o + n;
      this.#levels?.push(1);
    }
    this.values++;
    this.#pageValues++;
    if (this.#off - LEVELS_ROOM >= this.#pageBytes) this.seal();
  }

  /** `<u32 length><RLE runs>` of the page's levels. */
  #levelBytes(): Buffer {
    if (this.#levels !== undefined) return this.#levels.take();
    const out = Buffer.allocUnsafe(16);
    let o = 4;
    let h = this.#pageValues * 2;
    while (h >= 0x80) {
      out[o++] = (h & 0x7f) | 0x80;
      h = Math.floor(h / 128);
    }
    out[o++] = h;
    out[o++] = 1;
    out.writeUInt32LE(o - 4, 0);
    return out.subarray(0, o);
  }

  /** Ends the page being filled: levels and values, compressed, behind their header. */
  seal(): void {
    if (this.#pageValues === 0) return;
    const levels = this.#levelBytes();
    let raw: Buffer;
    if (this.#kind === 'bytes' && levels.length <= LEVELS_ROOM) {
      const start = LEVELS_ROOM - levels.length;
      levels.copy(this.#values, start);
      raw = this.#values.subarray(start, this.#off);
    } else if (this.#kind === 'bytes')
      raw = Buffer.concat([levels, this.#values.subarray(LEVELS_ROOM, this.#off)]);
    else if (this.#kind === 'const') {
      const v = this.#constant!;
      raw = Buffer.allocUnsafe(levels.length + this.#pageValues * (4 + v.length));
      levels.copy(raw);
      const one = Buffer.allocUnsafe(4 + v.length);
      one.writeUInt32LE(v.length, 0);
      v.copy(one, 4);
      raw.fill(one, levels.length);
    } else {
      raw = Buffer.allocUnsafe(levels.length + this.#pageValues * 8);
      levels.copy(raw);
      if (LITTLE_ENDIAN) Buffer.from(this.#ints.buffer, 0, this.#pageValues * 8).copy(raw, levels.length);
      else
        for (let i = 0; i < this.#pageValues; i++)
          if (this.#unsigned) raw.writeBigUInt64LE(this.#ints[i]!, levels.length + i * 8);
          else raw.writeBigInt64LE(this.#ints[i]!, levels.length + i * 8);
    }
    const out = zlib.zstdCompressSync(raw, {
      params: { [zlib.constants.ZSTD_c_compressionLevel]: this.#level },
    });
    // A small output is a slice of node:zlib's 64 KiB output chunk: copied,
    // so a page of a few bytes does not hold 64 KiB until it is written
    // (a segment's many small pages, a suspended date file's last ones).
    const body = out.buffer.byteLength > 2 * out.length ? Buffer.from(out) : out;
    const header = new Thrift()
      .i32(1, PAGE_DATA)
      .i32(2, raw.length)
      .i32(3, body.length)
      .struct(5, (t) =>
        t.i32(1, this.#pageValues).i32(2, ENCODING_PLAIN).i32(3, ENCODING_RLE).i32(4, ENCODING_RLE),
      )
      .end();
    this.pages.push({ header: Buffer.from(header), body, uncompressedBytes: raw.length });
    this.#off = LEVELS_ROOM;
    this.#pageValues = 0;
  }

  /** The file is done: its value buffer serves the next one. */
  release(): void {
    if (this.#pooled) giveBuffer(this.#values, this.#pageBytes);
    this.#values = Buffer.alloc(0);
    // A suspended date file keeps its columns (their chunk metadata) for its footer, not their buffers.
    this.#ints = this.#unsigned ? new BigUint64Array(0) : new BigInt64Array(0);
  }

  /** Forgets the row group (after it was written). */
  reset(): void {
    this.pages.length = 0;
    this.nulls = 0;
    this.values = 0;
    this.min = undefined;
    this.max = undefined;
  }
}

// A type, not an interface: Object.values sees its members as Columns.
type DateColumns = {
  readonly endpoint: Column;
  readonly instance: Column;
  readonly seq: Column;
  readonly ingest: Column;
  readonly topic: Column;
  readonly payload: Column;
};

interface ChunkMeta {
  /** Not the Column: a date file keeps its chunks' metadata until its footer, not their buffers. */
  readonly column: { readonly name: string; readonly physical: number };
  readonly offset: number;
  readonly compressed: number;
  readonly uncompressed: number;
  readonly nulls: number;
  readonly values: number;
  readonly min: Buffer | undefined;
  readonly max: Buffer | undefined;
}
interface RowGroupMeta {
  readonly rows: number;
  readonly offset: number;
  readonly chunks: readonly ChunkMeta[];
}

/** Statistics of the columns that have them: which, and how their min and max are ordered. */
const STATS = new Set(['endpoint', 'instance', 'seq', 'ingest_time', 'topic']);
/**
 * A string statistic longer than this is not written (no min/max for that
 * chunk: a reader then cannot prune it, which is always correct). DuckDB cuts
 * them to 256 bytes and marks them inexact; an MQTT topic may be 65,535 bytes,
 * written twice per chunk in the footer otherwise.
 */
export const STATS_STRING_BYTES_MAX = 256;

/**
 * One output file (one UTC date): its handle, its row groups so far and the
 * row group being filled. Suspended (see RAW_FILES_OPEN_MAX), it holds only
 * its row groups' metadata and its running hash.
 */
class DateFile {
  readonly dt: string;
  readonly localPath: string;
  #fh: FileHandle | undefined;
  readonly #hash: Hash = createHash('sha256');
  #offset = 0;
  rows = 0;
  #groupRows = 0;
  #groupBytes = 0;
  #seqMin = MAX_U64;
  #seqMax = 0n;
  #timeMin = MAX_I64;
  #timeMax = MIN_I64;
  #topicMin: Buffer | undefined;
  #topicMax: Buffer | undefined;
  #lastTopic: string | undefined;
  #lastTopicBytes: Buffer | undefined;
  readonly #groups: RowGroupMeta[] = [];
  #cols: DateColumns;
  readonly #endpoint: Buffer;
  readonly #instance: Buffer;
  readonly #o: RawWriterOptions;
  readonly #rowGroupRows: number;
  #pending: Promise<unknown> = Promise.resolve();

  private constructor(dt: string, localPath: string, fh: FileHandle, o: RawWriterOptions) {
    this.dt = dt;
    this.localPath = localPath;
    this.#fh = fh;
    this.#o = o;
    // Not Buffer.from: a short string's bytes are a slice of a shared pool
    // block, which a date file kept for its footer would pin, one per date.
    this.#endpoint = ownBytes(o.endpoint);
    this.#instance = ownBytes(o.instance);
    this.#cols = this.#newColumns();
    this.#rowGroupRows = o.rowGroupRows ?? ROW_GROUP_ROWS_DEFAULT;
    this.#write([MAGIC]);
  }

  #newColumns(): DateColumns {
    const pageBytes = this.#o.pageBytes ?? PAGE_BYTES;
    const level = this.#o.zstdLevel ?? ZSTD_LEVEL;
    return {
      endpoint: new Column('endpoint', { kind: 'const', value: this.#endpoint }, pageBytes, level),
      instance: new Column('instance', { kind: 'const', value: this.#instance }, pageBytes, level),
      seq: new Column('seq', { kind: 'int64', unsigned: true }, pageBytes, level),
      ingest: new Column('ingest_time', { kind: 'int64', unsigned: false }, pageBytes, level),
      topic: new Column('topic', { kind: 'bytes', nullable: true, pooled: false }, pageBytes, level),
      payload: new Column('payload', { kind: 'bytes', nullable: false, pooled: true }, pageBytes, level),
    };
  }

  get open(): boolean {
    return this.#fh !== undefined;
  }

  /** Writes the row group being filled, closes the handle and frees the buffers: the file has no footer yet. */
  async suspend(): Promise<void> {
    this.#endGroup();
    for (const col of Object.values(this.#cols)) col.release();
    await this.#pending;
    const fh = this.#fh!;
    this.#fh = undefined;
    await fh.close();
  }

  /** Opens the suspended file for append: the next row group goes after the last one written. */
  async resume(): Promise<void> {
    this.#fh = await open(this.localPath, 'a');
    this.#cols = this.#newColumns();
  }

  static async open(dir: string, dt: string, o: RawWriterOptions): Promise<DateFile> {
    const folder = path.join(dir, `dt=${dt}`);
    await mkdir(folder, { recursive: true });
    // DuckDB's name for a partition's first file (FILENAME_PATTERN 'data_{i}').
    const localPath = path.join(folder, RAW_FILE_NAME);
    return new DateFile(dt, localPath, await open(localPath, 'wx'), o);
  }

  /** Queues bytes for the file, in order; a failure surfaces at the next flush or at finish. */
  #write(bufs: Buffer[]): void {
    let n = 0;
    for (const b of bufs) {
      this.#hash.update(b);
      n += b.length;
    }
    this.#offset += n;
    const fh = this.#fh!;
    const prev = this.#pending;
    const p = prev.then(() => writeAll(fh, bufs, n));
    p.catch(() => {});
    this.#pending = p;
  }

  add(r: SegmentRecord, payload: Uint8Array): void {
    const c = this.#cols;
    c.endpoint.constant();
    c.instance.constant();
    c.seq.int64(r.seq);
    c.ingest.int64(r.ingestTimeMicros);
    if (r.seq < this.#seqMin) this.#seqMin = r.seq;
    if (r.seq > this.#seqMax) this.#seqMax = r.seq;
    if (r.ingestTimeMicros < this.#timeMin) this.#timeMin = r.ingestTimeMicros;
    if (r.ingestTimeMicros > this.#timeMax) this.#timeMax = r.ingestTimeMicros;
    if (r.topic === undefined) c.topic.bytes(undefined);
    else {
      if (r.topic !== this.#lastTopic) {
        const b = Buffer.from(r.topic, 'utf8');
        this.#lastTopic = r.topic;
        this.#lastTopicBytes = b;
        if (this.#topicMin === undefined || Buffer.compare(b, this.#topicMin) < 0) this.#topicMin = b;
        if (this.#topicMax === undefined || Buffer.compare(b, this.#topicMax) > 0) this.#topicMax = b;
      }
      c.topic.bytes(this.#lastTopicBytes);
    }
    c.payload.bytes(payload);
    this.rows++;
    this.#groupRows++;
    // Payload and topic are what can grow a row group past its byte bound; the rest is 16 bytes a row.
    this.#groupBytes += 20 + payload.byteLength + (r.topic !== undefined ? this.#lastTopicBytes!.length : 0);
    if (this.#groupRows >= this.#rowGroupRows || this.#groupBytes >= ROW_GROUP_BYTES_MAX) this.#endGroup();
  }

  /** Seals every column's last page and queues the row group's bytes. */
  #endGroup(): void {
    if (this.#groupRows === 0) return;
    const c = this.#cols;
    // The statistics live until the footer: buffers of their own, not
    // slices of Node's shared 64 KiB pool blocks, which each would pin.
    const le64 = (v: bigint, unsigned: boolean): Buffer => {
      const b = Buffer.alloc(8);
      if (unsigned) b.writeBigUInt64LE(v);
      else b.writeBigInt64LE(v);
      return b;
    };
    c.endpoint.min = c.endpoint.max = this.#endpoint;
    c.instance.min = c.instance.max = this.#instance;
    c.seq.min = le64(this.#seqMin, true);
    c.seq.max = le64(this.#seqMax, true);
    c.ingest.min = le64(this.#timeMin, false);
    c.ingest.max = le64(this.#timeMax, false);
    c.topic.min = this.#topicMin !== undefined ? ownCopy(this.#topicMin) : undefined;
    c.topic.max = this.#topicMax !== undefined ? ownCopy(this.#topicMax) : undefined;
    const groupOffset = this.#offset;
    const bufs: Buffer[] = [];
    const chunks: ChunkMeta[] = [];
    let offset = this.#offset;
    for (const col of Object.values(c)) {
      col.seal();
      let compressed = 0;
      let uncompressed = 0;
      for (const p of col.pages) {
        bufs.push(p.header, p.body);
        compressed += p.header.length + p.body.length;
        uncompressed += p.header.length + p.uncompressedBytes;
      }
      chunks.push({
        column: { name: col.name, physical: col.physical },
        offset,
        compressed,
        uncompressed,
        nulls: col.nulls,
        values: col.values,
        min: col.min,
        max: col.max,
      });
      offset += compressed;
      col.reset();
    }
    this.#groups.push({ rows: this.#groupRows, offset: groupOffset, chunks });
    this.#write(bufs);
    this.#groupRows = 0;
    this.#groupBytes = 0;
    this.#seqMin = MAX_U64;
    this.#seqMax = 0n;
    this.#timeMin = MAX_I64;
    this.#timeMax = MIN_I64;
    this.#topicMin = this.#topicMax = undefined;
    this.#lastTopic = this.#lastTopicBytes = undefined;
  }

  /** Waits for the queued writes (bounds what is held between row groups). */
  async drain(): Promise<void> {
    await this.#pending;
  }

  async finish(): Promise<ParquetFile> {
    if (this.#fh === undefined) await this.resume();
    this.#endGroup();
    const footer = fileMetaData(this.rows, this.#groups);
    const tail = Buffer.allocUnsafe(8);
    tail.writeUInt32LE(footer.length, 0);
    MAGIC.copy(tail, 4);
    this.#write([footer, tail]);
    for (const col of Object.values(this.#cols)) col.release();
    await this.#pending;
    const fh = this.#fh!;
    this.#fh = undefined;
    await fh.close();
    return {
      localPath: this.localPath,
      partitionPath: `dt=${this.dt}/`,
      partitions: [['dt', this.dt]],
      rowCount: this.rows,
      sizeBytes: this.#offset,
      sha256: this.#hash.digest('hex'),
    };
  }

  async abort(): Promise<void> {
    await this.#pending.catch(() => undefined);
    await this.#fh?.close().catch(() => undefined);
    this.#fh = undefined;
  }
}

/** Every byte of `bufs`, however many calls it takes (a short write is legal, if rare, on a regular file). */
export async function writeAll(fh: FileHandle, bufs: Buffer[], bytes: number): Promise<void> {
  let left = bufs;
  let todo = bytes;
  for (;;) {
    const { bytesWritten } = await fh.writev(left);
    todo -= bytesWritten;
    if (todo === 0) return;
    if (bytesWritten === 0)
      throw Object.assign(new Error('raw Parquet: the disk took no bytes'), { code: 'EIO' });
    let skip = bytesWritten;
    const rest: Buffer[] = [];
    for (const b of left) {
      if (skip >= b.length) skip -= b.length;
      else {
        rest.push(skip > 0 ? b.subarray(skip) : b);
        skip = 0;
      }
    }
    left = rest;
  }
}

/** The footer: schema as DuckDB writes it (converted types; TIMESTAMP logical type on ingest_time). */
function fileMetaData(rows: number, groups: readonly RowGroupMeta[]): Buffer {
  const t = new Thrift().i32(1, 1);
  const schema: ((t: Thrift) => void)[] = [
    (s) => s.i32(3, REPETITION_REQUIRED).binary(4, 'duckdb_schema').i32(5, 6),
    (s) => s.i32(1, TYPE_BYTE_ARRAY).i32(3, REPETITION_OPTIONAL).binary(4, 'endpoint').i32(6, CONVERTED_UTF8),
    (s) => s.i32(1, TYPE_BYTE_ARRAY).i32(3, REPETITION_OPTIONAL).binary(4, 'instance').i32(6, CONVERTED_UTF8),
    (s) => s.i32(1, TYPE_INT64).i32(3, REPETITION_OPTIONAL).binary(4, 'seq').i32(6, CONVERTED_UINT_64),
    (s) =>
      s
        .i32(1, TYPE_INT64)
        .i32(3, REPETITION_OPTIONAL)
        .binary(4, 'ingest_time')
        .i32(6, CONVERTED_TIMESTAMP_MICROS)
        .struct(10, (l) => l.struct(8, (ts) => ts.bool(1, true).struct(2, (u) => u.struct(2, () => {})))),
    (s) => s.i32(1, TYPE_BYTE_ARRAY).i32(3, REPETITION_OPTIONAL).binary(4, 'topic').i32(6, CONVERTED_UTF8),
    (s) => s.i32(1, TYPE_BYTE_ARRAY).i32(3, REPETITION_OPTIONAL).binary(4, 'payload'),
  ];
  t.listStruct(2, schema, (s, body) => body(s));
  t.i64(3, rows);
  t.listStruct(4, groups, (g, group) => {
    g.listStruct(1, group.chunks, (cc, ch) => {
      cc.i64(2, ch.offset);
      cc.struct(3, (m) => {
        m.i32(1, ch.column.physical)
          .listI32(2, [ENCODING_PLAIN, ENCODING_RLE])
          .listBinary(3, [ch.column.name])
          .i32(4, CODEC_ZSTD)
          .i64(5, ch.values)
          .i64(6, ch.uncompressed)
          .i64(7, ch.compressed)
          .i64(9, ch.offset);
        m.struct(12, (st) => {
          const bounded =
            ch.min !== undefined &&
            ch.max !== undefined &&
            (ch.column.physical !== TYPE_BYTE_ARRAY ||
              (ch.min.length <= STATS_STRING_BYTES_MAX && ch.max.length <= STATS_STRING_BYTES_MAX));
          // The deprecated min/max are compared signed (bytes too): right for
          // ingest_time, and for endpoint and instance, one value per file;
          // not for the unsigned seq, nor for topics, where a non-ASCII byte
          // would order differently.
          if (bounded && ch.column.name !== 'seq' && ch.column.name !== 'topic')
            st.binary(1, ch.max).binary(2, ch.min);
          st.i64(3, ch.nulls);
          if (bounded && STATS.has(ch.column.name)) st.binary(5, ch.max).binary(6, ch.min);
        });
      });
    });
    const compressed = group.chunks.reduce((s, c) => s + c.compressed, 0);
    g.i64(
      2,
      group.chunks.reduce((s, c) => s + c.uncompressed, 0),
    )
      .i64(3, group.rows)
      .i64(5, group.offset)
      .i64(6, compressed);
  });
  t.binary(6, CREATED_BY);
  t.listStruct(7, schema.slice(1), (o) => o.struct(1, () => {}));
  return Buffer.from(t.end());
}

const DAY_US_BIG = BigInt(DAY_US);

/** The UTC day number (days since 1970-01-01) of any i64 µs time: floor division in BigInt. */
export function dayOfMicros(us: bigint): number {
  const q = us / DAY_US_BIG;
  return Number(us < 0n && q * DAY_US_BIG !== us ? q - 1n : q);
}

/** 'YYYY-MM-DD' of a day number (days since 1970-01-01), as DuckDB's strftime writes it for years 0 and later. */
export function utcDate(day: number): string {
  // Howard Hinnant's civil_from_days.
  const z = day + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor(
    (doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365,
  );
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  const y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  if (y < 0) throw new RangeError(`ingest date before year 0 (day ${day}) has no raw partition`);
  return `${String(y).padStart(4, '0')}-${String(m).padStart(2, '0')}-${String(d).padStart(2, '0')}`;
}

/**
 * Raw Parquet of one segment, fed its records in seq order a batch at a time
 * (add), then finished (finish: the files, one per UTC date, described as
 * copyToParquet describes them) or given up (abort).
 */
export class RawParquetWriter {
  readonly #o: RawWriterOptions;
  readonly #files = new Map<number, DateFile>();
  /** The open ones, least recently written first. */
  readonly #open = new Map<number, DateFile>();
  #day = NaN;
  #file: DateFile | undefined;
  rows = 0;

  constructor(options: RawWriterOptions) {
    const g = options.rowGroupRows;
    if (g !== undefined && (!Number.isInteger(g) || g < 1))
      throw new Error('rowGroupRows must be a positive integer');
    this.#o = options;
  }

  async add(records: readonly SegmentRecord[]): Promise<void> {
    for (const r of records) {
      if (r.seq < 0n || r.seq > MAX_U64) throw new RangeError(`seq ${r.seq} is not a u64`);
      const us = Number(r.ingestTimeMicros);
      // Beyond 2^53 µs (years ~1685 to ~2255) a double's division can land on
      // the wrong day: those (from a badly wrong clock) take the exact way.
      const day = Number.isSafeInteger(us) ? Math.floor(us / DAY_US) : dayOfMicros(r.ingestTimeMicros);
      if (day !== this.#day) {
        let f = this.#files.get(day);
        if (f === undefined || !f.open) {
          if (this.#open.size >= RAW_FILES_OPEN_MAX) {
            const [lru, old] = this.#open.entries().next().value!;
            this.#open.delete(lru);
            await old.suspend();
          }
          if (f === undefined) {
            f = await DateFile.open(this.#o.dir, utcDate(day), this.#o);
            this.#files.set(day, f);
          } else await f.resume();
        }
        this.#open.delete(day);
        this.#open.set(day, f);
        this.#file = f;
        this.#day = day;
      }
      this.#file!.add(r, r.payload);
      this.rows++;
    }
    // Row groups written meanwhile are on their way: wait, so at most one is held per file.
    for (const f of this.#open.values()) await f.drain();
  }

  async finish(): Promise<ParquetFile[]> {
    const out: ParquetFile[] = [];
    // One at a time: a suspended file is opened again only for its footer.
    for (const f of this.#files.values()) out.push(await f.finish());
    this.#files.clear();
    this.#open.clear();
    out.sort((a, b) => (a.localPath < b.localPath ? -1 : a.localPath > b.localPath ? 1 : 0));
    return out;
  }

  /** Closes every file and removes the folder. */
  async abort(): Promise<void> {
    for (const f of this.#files.values()) await f.abort();
    this.#files.clear();
    this.#open.clear();
    await rm(this.#o.dir, { recursive: true, force: true });
  }
}
