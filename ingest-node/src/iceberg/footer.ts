// Column statistics for manifest entries, read from each data file's Parquet
// footer (fetched with one ranged GET of the file's tail at commit time).
// From the footer rather than from the COPY that wrote the file: the commit
// may run after a restart, when nothing of the write is left but the object.
//
// | part of the file                        | what is used                                                  |
// | --------------------------------------- | ------------------------------------------------------------- |
// | last 8 bytes                            | footer length (u32 LE), `PAR1`                                |
// | FileMetaData (Thrift compact protocol)  | 2 schema: SchemaElement 4 name, 6 converted_type, 9 field_id, |
// |                                         | 10 logicalType; 4 row_groups: RowGroup 1 columns: ColumnChunk |
// |                                         | 3 meta_data: ColumnMetaData 1 type, 3 path_in_schema,         |
// |                                         | 5 num_values, 7 total_compressed_size, 12 statistics:         |
// |                                         | 3 null_count, 5 max_value, 6 min_value                        |
//
// Iceberg keys the stats by field id; value_counts include nulls (Parquet's
// num_values of a flat column). Bounds are Iceberg's single-value binary form,
// which for int, long, date, timestamp(tz) µs, float, double, boolean and
// string is Parquet's own plain encoding of the min/max (decimals are
// re-encoded big-endian). Only min_value/max_value (not the deprecated
// min/max, whose byte order is signed) are used; a bound that is missing, NaN,
// or in a unit other than µs is left out, a string bound over 64 bytes is
// truncated (lower) or left out (upper): a missing bound prunes nothing.
import type { IcebergField } from './schema.ts';

export class FooterError extends Error {
  override name = 'FooterError';
}

/** A decoded Thrift struct: field id → value (i64 as bigint, binary as Buffer, list as array). */
type TStruct = Map<number, unknown>;

const depthMax = 16;

class Compact {
  pos = 0;
  readonly buf: Buffer;
  constructor(buf: Buffer) {
    this.buf = buf;
  }

  byte(): number {
    if (this.pos >= this.buf.length) throw new FooterError('footer ends early');
    return this.buf[this.pos++]!;
  }

  varint(): bigint {
    let n = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      const b = this.byte();
      n |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return n;
      shift += 7n;
    }
    throw new FooterError('varint too long');
  }

  zigzag(): bigint {
    const n = this.varint();
    return n & 1n ? -(n >> 1n) - 1n : n >> 1n;
  }

  size(): number {
    const n = Number(this.varint());
    if (n > this.buf.length - this.pos + 1) throw new FooterError(`implausible size ${n}`);
    return n;
  }

  value(type: number, depth: number): unknown {
    if (depth > depthMax) throw new FooterError('footer nests too deep');
    switch (type) {
      case 1:
        return true;
      case 2:
        return false;
      case 3:
        return this.byte();
      case 4:
      case 5:
        return Number(this.zigzag());
      case 6:
        return this.zigzag();
      case 7: {
        if (this.pos + 8 > this.buf.length) throw new FooterError('footer ends early');
        this.pos += 8;
        return this.buf.readDoubleLE(this.pos - 8);
      }
      case 8: {
        const n = this.size();
        const b = this.buf.subarray(this.pos, this.pos + n);
        this.pos += n;
        return b;
      }
      case 9:
      case 10: {
        const h = this.byte();
        const n = h >> 4 === 15 ? this.size() : h >> 4;
        const et = h & 0x0f;
        const out: unknown[] = [];
        for (let i = 0; i < n; i++)
          out.push(et === 1 || et === 2 ? this.byte() === 1 : this.value(et, depth + 1));
        return out;
      }
      case 11: {
        const n = this.size();
        const out = new Map<unknown, unknown>();
        if (n === 0) return out;
        const kv = this.byte();
        for (let i = 0; i < n; i++) out.set(this.value(kv >> 4, depth + 1), this.value(kv & 0x0f, depth + 1));
        return out;
      }
      case 12:
        return this.struct(depth + 1);
      default:
        throw new FooterError(`unknown Thrift type ${type}`);
    }
  }

  struct(depth: number): TStruct {
    const out: TStruct = new Map();
    let id = 0;
    for (;;) {
      const h = this.byte();
      if (h === 0) return out;
      const delta = h >> 4;
      id = delta === 0 ? Number(this.zigzag()) : id + delta;
      out.set(id, this.value(h & 0x0f, depth));
    }
  }
}

/** The FileMetaData of a Parquet file, from (at least) its tail. */
export function decodeFooter(tail: Buffer): TStruct {
  if (tail.length < 12 || tail.subarray(tail.length - 4).toString('latin1') !== 'PAR1')
    throw new FooterError('not a Parquet file (no PAR1 at the end)');
  const len = tail.readUInt32LE(tail.length - 8);
  if (len + 8 > tail.length) throw new FooterError(`footer of ${len} bytes, only ${tail.length - 8} read`);
  return new Compact(tail.subarray(tail.length - 8 - len, tail.length - 8)).struct(0);
}

/** Bytes of the tail to read so the footer is in it: 8 + the length in the last 8 bytes. */
export function footerBytesNeeded(tail: Buffer): number {
  if (tail.length < 8 || tail.subarray(tail.length - 4).toString('latin1') !== 'PAR1')
    throw new FooterError('not a Parquet file (no PAR1 at the end)');
  return tail.readUInt32LE(tail.length - 8) + 8;
}

export interface IntKeyed<T> {
  readonly key: number;
  readonly value: T;
}

/** A data file's column metrics, by field id, as manifest entries carry them. */
export interface FileMetrics {
  readonly column_sizes: IntKeyed<bigint>[];
  readonly value_counts: IntKeyed<bigint>[];
  readonly null_value_counts: IntKeyed<bigint>[];
  readonly lower_bounds: IntKeyed<Buffer>[];
  readonly upper_bounds: IntKeyed<Buffer>[];
}

/** Top-level columns' Parquet field ids (absent: the file has none for it). */
export function footerFieldIds(meta: TStruct): Map<string, number | undefined> {
  const out = new Map<string, number | undefined>();
  const schema = (meta.get(2) as TStruct[] | undefined) ?? [];
  // schema[0] is the root; a flat file's children follow, one element each.
  for (const el of schema.slice(1)) {
    if ((el.get(5) as number | undefined) !== undefined) return out; // nested: not a flat View file
    out.set((el.get(4) as Buffer).toString('utf8'), el.get(9) as number | undefined);
  }
  return out;
}

const stringBoundBytesMax = 64;

/** The longest prefix of `b` of at most `n` bytes that ends on a UTF-8 character boundary. */
function utf8Prefix(b: Buffer, n: number): Buffer {
  let end = Math.min(n, b.length);
  while (end > 0 && end < b.length && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

/** Minimal two's-complement big-endian bytes of an unscaled decimal. */
function decimalBytes(v: bigint): Buffer {
  let hex = (v < 0n ? (1n << 128n) + v : v).toString(16);
  if (hex.length % 2 === 1) hex = `0${hex}`;
  let b = Buffer.from(hex, 'hex');
  if (v < 0n) b = Buffer.from(b.subarray(Math.max(0, b.length - 16)));
  // Trim redundant sign bytes, keep one that carries the sign.
  let start = 0;
  while (
    start < b.length - 1 &&
    ((b[start] === 0x00 && (b[start + 1]! & 0x80) === 0) ||
      (b[start] === 0xff && (b[start + 1]! & 0x80) !== 0))
  )
    start++;
  const out = Buffer.from(b.subarray(start));
  if (v >= 0n && (out[0]! & 0x80) !== 0) return Buffer.concat([Buffer.from([0]), out]);
  return out;
}

interface ColumnInfo {
  readonly physical: number;
  readonly converted: number | undefined;
  readonly logical: TStruct | undefined;
}

/** A bound in Iceberg's form, or undefined when it is not one we can give exactly. */
function icebergBound(type: string, col: ColumnInfo, raw: Buffer, lower: boolean): Buffer | undefined {
  const p = col.physical; // 0 BOOLEAN, 1 INT32, 2 INT64, 4 FLOAT, 5 DOUBLE, 6 BYTE_ARRAY, 7 FIXED_LEN_BYTE_ARRAY
  const copy = (): Buffer => Buffer.from(raw);
  if (type === 'int' || type === 'date') return p === 1 && raw.length === 4 ? copy() : undefined;
  if (type === 'long') return p === 2 && raw.length === 8 ? copy() : undefined;
  if (type === 'boolean') return p === 0 && raw.length === 1 ? copy() : undefined;
  if (type === 'float' || type === 'double') {
    const n =
      p === 4 && raw.length === 4
        ? raw.readFloatLE(0)
        : p === 5 && raw.length === 8
          ? raw.readDoubleLE(0)
          : NaN;
    if (Number.isNaN(n) || (type === 'float') !== (p === 4)) return undefined;
    return copy();
  }
  if (type === 'timestamp' || type === 'timestamptz') {
    if (p !== 2 || raw.length !== 8) return undefined;
    const ts = col.logical?.get(8) as TStruct | undefined; // LogicalType.TIMESTAMP
    const unit = ts?.get(2) as TStruct | undefined;
    const micros = ts !== undefined ? unit?.has(2) === true : col.converted === 10; // TIMESTAMP_MICROS
    return micros ? copy() : undefined;
  }
  if (type === 'string') {
    if (p !== 6) return undefined;
    if (raw.length <= stringBoundBytesMax) return copy();
    return lower ? Buffer.from(utf8Prefix(raw, stringBoundBytesMax)) : undefined;
  }
  if (type.startsWith('decimal(')) {
    if (p === 1 && raw.length === 4) return decimalBytes(BigInt(raw.readInt32LE(0)));
    if (p === 2 && raw.length === 8) return decimalBytes(raw.readBigInt64LE(0));
    if (p === 7) return copy();
    return undefined;
  }
  return undefined;
}

function compareBound(type: string, a: Buffer, b: Buffer): number {
  switch (type) {
    case 'int':
    case 'date':
      return a.readInt32LE(0) - b.readInt32LE(0);
    case 'long':
    case 'timestamp':
    case 'timestamptz': {
      const x = a.readBigInt64LE(0);
      const y = b.readBigInt64LE(0);
      return x < y ? -1 : x > y ? 1 : 0;
    }
    case 'float':
      return a.readFloatLE(0) - b.readFloatLE(0);
    case 'double':
      return a.readDoubleLE(0) - b.readDoubleLE(0);
    case 'boolean':
      return a[0]! - b[0]!;
    case 'string':
      return Buffer.compare(a, b);
    default: {
      // decimal: signed big-endian of any length
      const v = (x: Buffer): bigint => BigInt.asIntN(x.length * 8, BigInt(`0x${x.toString('hex') || '0'}`));
      const x = v(a);
      const y = v(b);
      return x < y ? -1 : x > y ? 1 : 0;
    }
  }
}

/**
 * The metrics of one file for the table's `fields` (matched by column name;
 * columns the table lacks are skipped). A column's bounds are given only when
 * every row group has them.
 */
export function footerMetrics(meta: TStruct, fields: readonly IcebergField[]): FileMetrics {
  const byName = new Map(fields.map((f) => [f.name, f]));
  const info = new Map<string, ColumnInfo>();
  for (const el of ((meta.get(2) as TStruct[] | undefined) ?? []).slice(1))
    info.set((el.get(4) as Buffer).toString('utf8'), {
      physical: el.get(1) as number,
      converted: el.get(6) as number | undefined,
      logical: el.get(10) as TStruct | undefined,
    });
  interface Acc {
    size: bigint;
    values: bigint;
    nulls: bigint | undefined;
    lower: Buffer | undefined | null; // null: some row group has none
    upper: Buffer | undefined | null;
  }
  const acc = new Map<number, Acc>();
  for (const rg of (meta.get(4) as TStruct[] | undefined) ?? []) {
    for (const chunk of (rg.get(1) as TStruct[] | undefined) ?? []) {
      const md = chunk.get(3) as TStruct | undefined;
      const path = md?.get(3) as Buffer[] | undefined;
      if (md === undefined || path?.length !== 1) continue;
      const name = path[0]!.toString('utf8');
      const field = byName.get(name);
      const col = info.get(name);
      if (field === undefined || col === undefined) continue;
      const a = acc.get(field.id) ?? { size: 0n, values: 0n, nulls: 0n, lower: undefined, upper: undefined };
      acc.set(field.id, a);
      a.size += (md.get(7) as bigint | undefined) ?? 0n;
      a.values += (md.get(5) as bigint | undefined) ?? 0n;
      const st = md.get(12) as TStruct | undefined;
      const nulls = st?.get(3) as bigint | undefined;
      a.nulls = a.nulls === undefined || nulls === undefined ? undefined : a.nulls + nulls;
      const rowValues = (md.get(5) as bigint | undefined) ?? 0n;
      // A chunk of only nulls has no min/max and needs none.
      const allNull = nulls !== undefined && nulls === rowValues;
      for (const [side, id] of [
        ['lower', 6],
        ['upper', 5],
      ] as const) {
        if (allNull || a[side] === null) continue;
        const raw = st?.get(id) as Buffer | undefined;
        const b = raw === undefined ? undefined : icebergBound(field.type, col, raw, side === 'lower');
        if (b === undefined) {
          a[side] = null;
          continue;
        }
        const cur = a[side];
        if (cur === undefined) a[side] = b;
        else {
          const c = compareBound(field.type, b, cur);
          if ((side === 'lower' && c < 0) || (side === 'upper' && c > 0)) a[side] = b;
        }
      }
    }
  }
  const ids = [...acc.keys()].sort((x, y) => x - y);
  const list = <T>(pick: (a: Acc) => T | undefined | null): IntKeyed<T>[] =>
    ids.flatMap((id) => {
      const v = pick(acc.get(id)!);
      return v === undefined || v === null ? [] : [{ key: id, value: v }];
    });
  return {
    column_sizes: list((a) => a.size),
    value_counts: list((a) => a.values),
    null_value_counts: list((a) => a.nulls),
    lower_bounds: list((a) => a.lower),
    upper_bounds: list((a) => a.upper),
  };
}
