// A View's partitioning as an Iceberg partition spec, and each data file's
// partition tuple.
//
// A View level that is a function of one column Iceberg has a transform for
// (views/compile.ts `transform`) becomes a spec field; any other level
// (`lower(country)`, `date_trunc('week', …)`) is left out of the spec. That
// stays correct: every Landfall view file holds one value of every level, so
// it holds one value of each spec field too.
//
// | View level                         | transform  | tuple value (Avro)                       | folder text it is read from |
// | ---------------------------------- | ---------- | ---------------------------------------- | --------------------------- |
// | `c` (VARCHAR)                      | identity   | string                                   | the value                   |
// | `c` (INTEGER / BIGINT)             | identity   | int / long                               | `-12`                       |
// | `c` (BOOLEAN)                      | identity   | boolean                                  | `true` / `false`            |
// | `c` (DATE)                         | identity   | int, logicalType date: days since 1970   | `2026-11-26`                |
// | `date_trunc('year', c)`            | year(c)    | int: years since 1970                    | `2026-01-01`                |
// | `date_trunc('month', c)`           | month(c)   | int: months since 1970-01                | `2026-11-01`                |
// | `date_trunc('day', c)`             | day(c)     | int, logicalType date: days since 1970   | `2026-11-26`                |
// | `date_trunc('hour', c)` (c a TS)   | hour(c)    | int: hours since 1970-01-01T00           | `2026-11-26T13`             |
//
// Values are the decoded folder values (keys.ts unescapeHiveValue): NULL is
// null, `""` is `""`, never the folder spellings. Every tuple field is
// optional (a NULL partition value is a NULL source value).
import type { HivePartition } from '../delivery/keys.ts';
import { unescapeHiveValue } from '../delivery/keys.ts';
import type { AvroSchema } from './avro.ts';
import { IcebergError } from './errors.ts';
import type { IcebergSchema } from './schema.ts';

export type Transform = 'identity' | 'year' | 'month' | 'day' | 'hour';

/** One level of the View's partitioning, in order, with its transform when it has one. */
export interface ViewPartitionLevel {
  readonly alias: string;
  readonly transform?: { readonly source: string; readonly transform: Transform };
}

export interface PartitionField {
  readonly 'source-id': number;
  readonly 'field-id': number;
  readonly name: string;
  readonly transform: string;
}

export interface PartitionSpec {
  readonly 'spec-id': number;
  readonly fields: readonly PartitionField[];
}

/** Iceberg numbers partition fields from 1000. */
export const firstPartitionFieldId = 1000;

/** The spec of a new table: the View's levels that have a transform, named by their alias. */
export function specForView(levels: readonly ViewPartitionLevel[], schema: IcebergSchema): PartitionSpec {
  const fields: PartitionField[] = [];
  for (const l of levels) {
    if (l.transform === undefined) continue;
    const source = schema.fields.find((f) => f.name === l.transform!.source);
    if (source === undefined) continue;
    fields.push({
      'source-id': source.id,
      'field-id': firstPartitionFieldId + fields.length,
      name: l.alias,
      transform: l.transform.transform,
    });
  }
  return { 'spec-id': 0, fields };
}

/** How one spec field gets its value: from which View level, parsed how. */
export interface BoundPartitionField {
  readonly field: PartitionField;
  readonly alias: string;
  readonly transform: Transform;
  /** The tuple value's Iceberg type: the source's for identity, `date` for day, `int` otherwise. */
  readonly resultType: 'string' | 'int' | 'long' | 'boolean' | 'date';
}

/**
 * Binds the table's spec to the View's levels: every spec field must be a
 * level of the View with the same transform of the same column (by field id).
 * A table partitioned some other way is refused (ICEBERG_PARTITION_MISMATCH):
 * the View's files do not say which of its partitions their rows are in.
 */
export function bindSpec(
  spec: PartitionSpec,
  schema: IcebergSchema,
  levels: readonly ViewPartitionLevel[],
  table: string,
): BoundPartitionField[] {
  return spec.fields.map((field) => {
    const source = schema.fields.find((f) => f.id === field['source-id']);
    const level =
      source === undefined
        ? undefined
        : levels.find(
            (l) => l.transform?.source === source.name && l.transform.transform === field.transform,
          );
    if (source === undefined || level === undefined)
      throw new IcebergError(
        'ICEBERG_PARTITION_MISMATCH',
        `table ${table} is partitioned by ${field.transform}(${source?.name ?? `field ${field['source-id']}`}) (${field.name}); the View has no such partition level (its levels: ${
          levels
            .map((l) => (l.transform ? `${l.transform.transform}(${l.transform.source})` : l.alias))
            .join(', ') || 'none'
        })`,
      );
    const transform = field.transform as Transform;
    let resultType: BoundPartitionField['resultType'];
    if (transform === 'day') resultType = 'date';
    else if (transform !== 'identity') resultType = 'int';
    else if (['string', 'int', 'long', 'boolean', 'date'].includes(source.type))
      resultType = source.type as BoundPartitionField['resultType'];
    else
      throw new IcebergError(
        'ICEBERG_PARTITION_MISMATCH',
        `table ${table}: identity partition on ${source.name} of type ${source.type} is not supported`,
      );
    return { field, alias: level.alias, transform, resultType };
  });
}

export function partitionAvroType(t: BoundPartitionField['resultType']): AvroSchema {
  return t === 'date' ? { type: 'int', logicalType: 'date' } : t;
}

/** Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil). */
export function daysFromCivil(y: number, m: number, d: number): number {
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

const dateText = /^(\d{4,6})-(\d{2})-(\d{2})$/;
const hourText = /^(\d{4,6})-(\d{2})-(\d{2})T(\d{2})$/;

export type PartitionValue = string | number | bigint | boolean | null;

/** The tuple value of a folder value (decoded: NULL is null) for a bound field. */
export function partitionValue(b: BoundPartitionField, text: string | null): PartitionValue {
  if (text === null) return null;
  const bad = (): never => {
    throw new IcebergError(
      'ICEBERG_PARTITION_MISMATCH',
      `partition ${b.alias}: ${JSON.stringify(text.slice(0, 100))} is not a ${b.transform === 'identity' ? b.resultType : `${b.transform}()`} value`,
    );
  };
  const date = (): [number, number, number] => {
    const m = dateText.exec(text) ?? bad();
    return [Number(m[1]), Number(m[2]), Number(m[3])];
  };
  switch (b.transform) {
    case 'year': {
      const [y, m, d] = date();
      if (m !== 1 || d !== 1) bad();
      return y - 1970;
    }
    case 'month': {
      const [y, m, d] = date();
      if (d !== 1) bad();
      return (y - 1970) * 12 + (m - 1);
    }
    case 'day':
      return daysFromCivil(...date());
    case 'hour': {
      const m = hourText.exec(text) ?? bad();
      return daysFromCivil(Number(m[1]), Number(m[2]), Number(m[3])) * 24 + Number(m[4]);
    }
    case 'identity':
      switch (b.resultType) {
        case 'string':
          return text;
        case 'boolean':
          return text === 'true' ? true : text === 'false' ? false : bad();
        case 'date':
          return daysFromCivil(...date());
        case 'int': {
          const n = /^-?\d{1,10}$/.test(text) ? Number(text) : NaN;
          return Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 ? n : bad();
        }
        case 'long': {
          const n = /^-?\d{1,19}$/.test(text) ? BigInt(text) : null;
          return n !== null && n >= -(1n << 63n) && n < 1n << 63n ? n : bad();
        }
      }
  }
  return bad();
}

/**
 * The decoded partition levels of a view file, from its key
 * (`{prefix}/views/{view}/{alias=value/…}{stem}.parquet`, keys.ts viewKey):
 * the key is the injective encoding of the values the materialiser wrote, and
 * it is all a retried delivery still has of them after a restart.
 */
export function partitionsOfViewKey(prefix: string, view: string, key: string): HivePartition[] {
  const head = `${prefix === '' ? '' : `${prefix}/`}views/${view}/`;
  if (!key.startsWith(head))
    throw new IcebergError('ICEBERG_PARTITION_MISMATCH', `${key} is not a key of view ${view}`);
  const levels = key.slice(head.length).split('/').slice(0, -1);
  return levels.map((level) => {
    const eq = level.indexOf('=');
    if (eq < 1)
      throw new IcebergError('ICEBERG_PARTITION_MISMATCH', `${key}: ${level} is not a name=value level`);
    try {
      return [level.slice(0, eq), unescapeHiveValue(level.slice(eq + 1))] as const;
    } catch (err) {
      throw new IcebergError('ICEBERG_PARTITION_MISMATCH', `${key}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  });
}

/** Iceberg's single-value binary serialisation (table spec, Appendix D) of a tuple value. */
export function singleValueBytes(
  t: BoundPartitionField['resultType'],
  v: Exclude<PartitionValue, null>,
): Buffer {
  switch (t) {
    case 'string':
      return Buffer.from(v as string, 'utf8');
    case 'boolean':
      return Buffer.from([v === true ? 1 : 0]);
    case 'int':
    case 'date': {
      const b = Buffer.alloc(4);
      b.writeInt32LE(v as number);
      return b;
    }
    case 'long': {
      const b = Buffer.alloc(8);
      b.writeBigInt64LE(BigInt(v));
      return b;
    }
  }
}

function compareValues(a: Exclude<PartitionValue, null>, b: Exclude<PartitionValue, null>): number {
  if (typeof a === 'string' && typeof b === 'string') return Buffer.compare(Buffer.from(a), Buffer.from(b));
  if (typeof a === 'boolean' || typeof b === 'boolean') return Number(a) - Number(b);
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

export interface FieldSummary {
  readonly contains_null: boolean;
  readonly contains_nan: boolean;
  readonly lower_bound: Buffer | null;
  readonly upper_bound: Buffer | null;
}

/** The manifest list's `partitions`: per spec field, over the manifest's tuples. */
export function fieldSummaries(
  bound: readonly BoundPartitionField[],
  tuples: readonly (readonly PartitionValue[])[],
): FieldSummary[] {
  return bound.map((b, i) => {
    let containsNull = false;
    let lo: Exclude<PartitionValue, null> | undefined;
    let hi: Exclude<PartitionValue, null> | undefined;
    for (const t of tuples) {
      const v = t[i] ?? null;
      if (v === null) {
        containsNull = true;
        continue;
      }
      if (lo === undefined || compareValues(v, lo) < 0) lo = v;
      if (hi === undefined || compareValues(v, hi) > 0) hi = v;
    }
    return {
      contains_null: containsNull,
      contains_nan: false,
      lower_bound: lo === undefined ? null : singleValueBytes(b.resultType, lo),
      upper_bound: hi === undefined ? null : singleValueBytes(b.resultType, hi),
    };
  });
}
