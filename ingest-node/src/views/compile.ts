// View → one DuckDB SELECT (an inspectable string) over a segment's records.
//
// Input relation (`INPUT_RELATION`, created by parquet/records.ts):
//   seq UBIGINT, ingest_time TIMESTAMP (UTC), payload BLOB (exact bytes), topic VARCHAR NULL
// Output: one row per input row, never more or fewer, with
//   __lf_status        'ok' | 'dlq' | 'filtered'
//   __lf_error_code    invalid_json | missing_required | cast_failed | expression_failed (dlq rows)
//   __lf_error_message human-readable, with the path and a prefix of the bad value
//   __lf_error_column  the view column at fault (NULL for invalid_json and the filter)
//   __lf_seq, __lf_ingest_time, __lf_payload   carried for the DLQ
//   <view columns>     typed, in spec order
//   <partition aliases> the Hive partition values, rendered (see partitionValueSql)
// Row accounting is exact by construction: every input row gets exactly one
// status, so rows in = ok + filtered + dlq (materialize.ts checks it again).
//
// Extraction parses each payload once: when every path is made of object keys,
// json_transform reads them all into a struct of text (DuckDB's typed JSON
// reader); otherwise, and for the rows json_transform gives nothing for,
// json_extract_string/json_extract take the list of paths. Each column then
// TRY_CASTs its text.
import type { DuckDBConnection } from '@duckdb/node-api';
import { ViewError, ViewErrorCode } from './errors.ts';
import { checkExpression } from './expr.ts';
import type { AstNode } from './expr.ts';
import { renderDuckDbPath } from './jsonpath.ts';
import { isTopicColumn, viewSpecHash } from './spec.ts';
import type { ViewColumn, ViewSpec } from './spec.ts';
import { INTEGER_TYPES, isNestedOrJson } from './types.ts';
import { INPUT_RELATION } from '../parquet/records.ts';

/** DLQ error codes (docs/views.md). Stable: dashboards and alerts branch on them. */
export const DlqErrorCode = {
  /** The payload is not UTF-8 or not one JSON value. */
  invalidJson: 'invalid_json',
  /** A required column's path is absent or JSON null. */
  missingRequired: 'missing_required',
  /** A value is present but does not convert to the column's type. */
  castFailed: 'cast_failed',
  /** The filter or a partition expression raised an error on this row. */
  expressionFailed: 'expression_failed',
  // The codes below are decided per segment by the materialiser (materialize.ts),
  // not per row by the SELECT: they are what "record data never stalls delivery"
  // turns a would-be stall into (docs/views.md, docs/durability.md).
  /** The row's partition folder would not fit in an object key (a level over 250 bytes, or the key over 1024). */
  partitionValueTooLong: 'partition_value_too_long',
  /** The segment has more partitions than the view may write (views.partitionFilesMax, or the marker's size bound). */
  tooManyPartitions: 'too_many_partitions',
  /** The view could not be materialised over this segment at all (the reason is the message): every row is here. */
  viewFailed: 'view_failed',
} as const;
export type DlqErrorCode = (typeof DlqErrorCode)[keyof typeof DlqErrorCode];

export const ROW_STATUS = { ok: 'ok', dlq: 'dlq', filtered: 'filtered' } as const;

export interface CompiledPartition {
  readonly alias: string;
  /** The checked expression as DuckDB renders it. */
  readonly expressionSql: string;
  /** DuckDB type of the expression. */
  readonly type: string;
  /**
   * The rendered value (partitionValueSql) is a DATE: its text as a folder
   * and as CAST(… AS VARCHAR) are the same, so the materialiser may carry
   * it typed and cast only the few distinct values (materialize.ts).
   */
  readonly dateValued: boolean;
  /**
   * The level as a function of one View column that Iceberg has a partition
   * transform for (`date_trunc('day', c)` → day(c), a bare column → identity),
   * so a table's partition spec can be derived from it (iceberg/partition.ts).
   * Undefined for any other expression.
   */
  readonly transform?: PartitionTransform;
}

export interface PartitionTransform {
  /** The View column, as the spec names it. */
  readonly source: string;
  readonly transform: 'identity' | 'year' | 'month' | 'day' | 'hour';
}

export interface CompiledView {
  readonly spec: ViewSpec;
  /** viewSpecHash(spec): what commit markers record. */
  readonly specHash: string;
  /** The classification SELECT over INPUT_RELATION (see the header comment). */
  readonly sql: string;
  /**
   * The cheap first pass over INPUT_RELATION (see fastSql() below), or
   * undefined when the view's paths are not flat: `__lf_status` is 'ok' or
   * 'filtered' where that is certain, NULL for the rows `sql` must classify.
   */
  readonly fastSql: string | undefined;
  /**
   * The DuckDB type of `fastSql`'s json_transform result (`__lf_t`), when
   * there is a first pass: read_json gives the same struct straight from an
   * NDJSON file of the payloads (materialize.ts fastSqlOverNdjson).
   */
  readonly fastStructType: string | undefined;
  /** View columns in output order, with canonical DuckDB types. */
  readonly columns: readonly { readonly name: string; readonly type: string }[];
  readonly filterSql: string | undefined;
  readonly partitions: readonly CompiledPartition[];
  /** A column reads `$topic`: the input must carry each record's topic (materialize.ts). */
  readonly readsTopic: boolean;
}

/** Longest prefix of a bad value quoted in a DLQ message: enough to recognise it, bounded per row. */
const MESSAGE_VALUE_CHARS = 100;

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function sqlString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

function sqlStringList(values: readonly string[]): string {
  return `[${values.map(sqlString).join(', ')}]`;
}

/** SQL for a column's default, cast to the column type. */
function defaultSql(column: ViewColumn): string | undefined {
  const d = column.default;
  if (d === undefined) return undefined;
  const text = typeof d === 'string' ? d : String(d);
  if (isNestedOrJson(column.parsedType)) {
    return column.type === 'JSON'
      ? `CAST(${sqlString(text)} AS JSON)`
      : `CAST(${sqlString(text)}::JSON AS ${column.type})`;
  }
  return `CAST(${sqlString(text)} AS ${column.type})`;
}

/**
 * VARCHAR → TIMESTAMPTZ that is NULL for any text it cannot take. ICU's cast
 * raises "date overflows timestamp range" even under TRY_CAST for a year past
 * the range (e.g. '294247-01-10T04:00:54.775806'): uncaught, one such record
 * failed its whole segment's view (view_failed); under try() it is that row's
 * cast_failed.
 */
function tryTimestamptz(raw: string): string {
  return `try(TRY_CAST(${raw} AS TIMESTAMPTZ))`;
}

/** Typed value from the raw element `raw` (VARCHAR for scalars, JSON for nested/JSON columns). */
function castSql(column: ViewColumn, raw: string): string {
  const t = column.parsedType;
  if (t.kind === 'scalar') {
    switch (t.name) {
      case 'VARCHAR':
        return raw;
      case 'JSON':
        return raw;
      case 'TIMESTAMP':
        // A direct VARCHAR → TIMESTAMP cast drops an offset (…+02:00 is read
        // as if it were UTC), so offsets go through TIMESTAMPTZ, which honours
        // them. That cast is ICU's and about twice as slow, so the common
        // `…Z` (Date.toISOString) takes the direct cast, which is exact for it.
        return `CASE WHEN ends_with(${raw}, 'Z') THEN TRY_CAST(${raw} AS TIMESTAMP) ELSE TRY_CAST(${tryTimestamptz(raw)} AS TIMESTAMP) END`;
      case 'TIMESTAMPTZ':
        return tryTimestamptz(raw);
      default:
        return `TRY_CAST(${raw} AS ${t.name})`;
    }
  }
  // LIST/STRUCT from the JSON value: elements or fields that do not convert
  // become NULL; a value of the wrong shape (a string for a list) fails.
  return `TRY_CAST(${raw} AS ${column.type})`;
}

/** TRUE when a present value did not convert (the column's cast_failed condition). */
function castFailedSql(column: ViewColumn, raw: string, value: string): string {
  const t = column.parsedType;
  if (t.kind === 'scalar' && INTEGER_TYPES.has(t.name)) {
    // DuckDB rounds '3.7' to 4 when casting to an integer; a fractional value
    // in an integer column is a mistake in the data, so it is a cast failure.
    // Only text with a '.' or an exponent can round; the DOUBLE comparison
    // runs for those rows alone. Text that is the value's own spelling
    // (digits, a '-') has neither, so the common case is settled by one
    // comparison before the three scans (a CASE evaluates a branch only for
    // the rows that reach it, where OR and AND in a projection evaluate both
    // sides for every row): a few per cent of a clean write's CPU
    // (test/bench/views/copy-ab.ts, docs/views.md).
    return `CASE WHEN ${value} IS NULL THEN TRUE WHEN CAST(${value} AS VARCHAR) = ${raw} THEN FALSE ELSE (contains(${raw}, '.') OR contains(${raw}, 'e') OR contains(${raw}, 'E')) AND TRY_CAST(${raw} AS DOUBLE) IS DISTINCT FROM ${value} END`;
  }
  return `${value} IS NULL`;
}

function truncatedValueSql(raw: string): string {
  const text = `CAST(${raw} AS VARCHAR)`;
  return `CASE WHEN length(${text}) > ${MESSAGE_VALUE_CHARS} THEN left(${text}, ${MESSAGE_VALUE_CHARS}) || '…' ELSE ${text} END`;
}

const DAY_OR_COARSER = new Set([
  'day',
  'days',
  'd',
  'week',
  'weeks',
  'w',
  'month',
  'months',
  'mon',
  'quarter',
  'quarters',
  'year',
  'years',
  'y',
  'yr',
  'decade',
  'decades',
  'century',
  'centuries',
  'millennium',
  'millennia',
  'isoyear',
]);

/** date_trunc's unit when `root` is date_trunc('<unit>', …) with a constant unit. */
function dateTruncUnit(root: AstNode): string | undefined {
  if (root.class !== 'FUNCTION') return undefined;
  const name = String(root['function_name']).toLowerCase();
  if (name !== 'date_trunc' && name !== 'datetrunc') return undefined;
  const first = (root['children'] as AstNode[] | undefined)?.[0];
  const value = (first?.['value'] as { value?: unknown } | undefined)?.value;
  return first?.class === 'CONSTANT' && typeof value === 'string' ? value.toLowerCase() : undefined;
}

/**
 * How a partition value is written into the Hive path. DuckDB would write a
 * TIMESTAMP as `2026-11-26 00:00:00`, percent-encoded; users partitioning by
 * date_trunc('day', …) mean `dt=2026-11-26`. So, by the expression's type:
 * DATE as is; TIMESTAMP/TIMESTAMPTZ truncated to a day or coarser → the date;
 * truncated to the hour → 2026-11-26T13; to the minute → 2026-11-26T13:05;
 * any other timestamp → 2026-11-26T13:05:09 (UTC). Other types as DuckDB renders them.
 */
function partitionValueSql(value: string, type: string, root: AstNode): string {
  if (type !== 'TIMESTAMP' && type !== 'TIMESTAMP WITH TIME ZONE') return value;
  const unit = dateTruncUnit(root);
  if (truncatesToDay(type, root)) return `CAST(${value} AS DATE)`;
  if (unit === 'hour' || unit === 'hours' || unit === 'h') return `strftime(${value}, '%Y-%m-%dT%H')`;
  if (unit === 'minute' || unit === 'minutes' || unit === 'm') return `strftime(${value}, '%Y-%m-%dT%H:%M')`;
  return `strftime(${value}, '%Y-%m-%dT%H:%M:%S')`;
}

const TRANSFORM_UNITS: Readonly<Record<string, PartitionTransform['transform']>> = {
  year: 'year',
  years: 'year',
  y: 'year',
  yr: 'year',
  month: 'month',
  months: 'month',
  mon: 'month',
  day: 'day',
  days: 'day',
  d: 'day',
  hour: 'hour',
  hours: 'hour',
  h: 'hour',
};

/**
 * Only where the folder value (partitionValueSql) is exact for the transform:
 * a timestamp's identity is rendered to the second, so it is not an identity;
 * hour() needs a timestamp source (Iceberg has no hour of a date).
 */
function partitionTransform(root: AstNode, columns: readonly ViewColumn[]): PartitionTransform | undefined {
  const columnOf = (n: AstNode | undefined): ViewColumn | undefined => {
    const names = n?.class === 'COLUMN_REF' ? n['column_names'] : undefined;
    if (!Array.isArray(names) || names.length !== 1 || typeof names[0] !== 'string') return undefined;
    const name = names[0].toLowerCase();
    return columns.find((c) => c.name.toLowerCase() === name);
  };
  const bare = columnOf(root);
  if (bare !== undefined)
    return ['VARCHAR', 'BIGINT', 'INTEGER', 'BOOLEAN', 'DATE'].includes(bare.type)
      ? { source: bare.name, transform: 'identity' }
      : undefined;
  const unit = dateTruncUnit(root);
  const transform = unit === undefined ? undefined : TRANSFORM_UNITS[unit];
  const children = root['children'] as AstNode[] | undefined;
  const col = children?.length === 2 ? columnOf(children[1]) : undefined;
  if (transform === undefined || col === undefined) return undefined;
  const timestamp = ['TIMESTAMP', 'TIMESTAMPTZ', 'TIMESTAMP WITH TIME ZONE'].includes(col.type);
  if (!timestamp && (col.type !== 'DATE' || transform === 'hour')) return undefined;
  return { source: col.name, transform };
}

function truncatesToDay(type: string, root: AstNode): boolean {
  if (type !== 'TIMESTAMP' && type !== 'TIMESTAMP WITH TIME ZONE') return false;
  const unit = dateTruncUnit(root);
  return unit !== undefined && DAY_OR_COARSER.has(unit);
}

/** The typed columns as an empty relation, to bind expressions against. */
function typedShell(columns: readonly ViewColumn[]): string {
  return `(SELECT ${columns.map((c) => `NULL::${c.type} AS ${quoteIdent(c.name)}`).join(', ')})`;
}

async function describeType(
  conn: DuckDBConnection,
  exprSql: string,
  shell: string,
  where: string,
): Promise<string> {
  try {
    const reader = await conn.runAndReadAll(`DESCRIBE SELECT (${exprSql}) AS __lf_x FROM ${shell} AS __lf_t`);
    const type = reader.getRows()[0]?.[1];
    if (typeof type !== 'string') throw new Error('DESCRIBE returned no type');
    return type;
  } catch (err) {
    const message = ((err as Error).message ?? String(err)).split('\n')[0] ?? 'does not bind';
    throw new ViewError(ViewErrorCode.exprBind, where, message, { cause: err });
  }
}

async function checkDefault(conn: DuckDBConnection, column: ViewColumn, index: number): Promise<void> {
  const sql = defaultSql(column);
  if (sql === undefined) return;
  let ok: boolean;
  try {
    const reader = await conn.runAndReadAll(`SELECT try(${sql}) IS NOT NULL`);
    ok = reader.getRows()[0]?.[0] === true;
  } catch {
    ok = false;
  }
  if (!ok)
    throw new ViewError(
      ViewErrorCode.defaultInvalid,
      `columns[${index}].default`,
      `${JSON.stringify(column.default)} does not convert to ${column.type}`,
    );
}

export interface CompileOptions {
  /**
   * Read flat paths with json_transform first (default true). false compiles
   * the list extraction for every row: what views-typed-reader.test.ts and
   * the benchmark compare the typed reader against.
   */
  readonly typedReader?: boolean;
  /**
   * Compile the first pass for rows that are fine (`fastSql`; default true,
   * needs the typed reader). false: every row takes the full classification,
   * what views-typed-reader.test.ts compares the two-pass path against.
   */
  readonly fastPath?: boolean;
  /**
   * Give the first pass its struct type for read_json over NDJSON
   * (`fastStructType`; default true). false: a clean segment is read as CSV
   * text then json_transform, what the benchmark's --csv arm compares against.
   */
  readonly ndjson?: boolean;
}

/**
 * Checks every expression with DuckDB's parser and binder (throws ViewError
 * with the spec path of the first problem) and builds the SELECT.
 */
export async function compileView(
  conn: DuckDBConnection,
  spec: ViewSpec,
  options: CompileOptions = {},
): Promise<CompiledView> {
  const columnNames = new Set(spec.columns.map((c) => c.name));
  const shell = typedShell(spec.columns);
  for (const [i, c] of spec.columns.entries()) await checkDefault(conn, c, i);

  let filterSql: string | undefined;
  let filterColumns: readonly string[] = [];
  if (spec.filter !== undefined) {
    const checked = await checkExpression(conn, spec.filter, columnNames, 'filter');
    const type = await describeType(conn, checked.sql, shell, 'filter');
    if (type !== 'BOOLEAN')
      throw new ViewError(ViewErrorCode.exprType, 'filter', `a filter must be BOOLEAN, this one is ${type}`);
    filterSql = checked.sql;
    filterColumns = checked.columns;
  }
  const partitions: (Omit<CompiledPartition, 'dateValued'> & { root: AstNode })[] = [];
  for (const [i, p] of spec.partitioning.entries()) {
    const where = `partitioning[${i}].expression`;
    const checked = await checkExpression(conn, p.expression, columnNames, where);
    const type = await describeType(conn, checked.sql, shell, where);
    if (/[[\]]|STRUCT|MAP|UNION|BLOB|JSON|^NULL$/.test(type))
      throw new ViewError(
        ViewErrorCode.exprType,
        where,
        `a partition value must be a scalar, this one is ${type}`,
      );
    const transform = partitionTransform(checked.root, spec.columns);
    partitions.push({
      alias: p.alias,
      expressionSql: checked.sql,
      type,
      root: checked.root,
      ...(transform !== undefined ? { transform } : {}),
    });
  }

  const typedReader = options.typedReader ?? true;
  const sql = buildSql(spec, filterSql, filterColumns, partitions, typedReader);
  const first =
    typedReader && (options.fastPath ?? true)
      ? fastSql(spec, filterSql, filterColumns, partitions)
      : undefined;
  let fastStructType: string | undefined;
  const structure = flatStructure(spec.columns);
  if (first !== undefined && structure !== undefined && (options.ndjson ?? true)) {
    fastStructType = structType(structure.json);
    try {
      // Keys DuckDB cannot name a struct field by (e.g. two differing only in case): no NDJSON pass.
      await conn.run(`SELECT NULL::${fastStructType}`);
    } catch {
      fastStructType = undefined;
    }
  }
  return {
    spec,
    specHash: viewSpecHash(spec),
    sql,
    fastSql: first,
    fastStructType,
    columns: spec.columns.map((c) => ({ name: c.name, type: c.type })),
    filterSql,
    partitions: partitions.map(({ root, ...p }) => ({
      ...p,
      dateValued: p.type === 'DATE' || truncatesToDay(p.type, root),
    })),
    readsTopic: spec.columns.some(isTopicColumn),
  };
}

/** How the payload columns are read: the SELECT items of the extraction stages, the JSON check, each column's raw text. */
interface Extraction {
  /** Items of the first stage (json_transform's struct, when the paths are flat). */
  readonly first: readonly string[];
  /** Items of the second stage (json_extract*, for the rows the first did not read). */
  readonly second: readonly string[];
  /** TRUE when the payload is one JSON value. */
  readonly jsonOk: string;
  /** Per column, its raw value: VARCHAR for scalar columns, JSON text for JSON/nested ones. */
  readonly rawRefs: readonly string[];
}

/**
 * json_transform's structure for columns whose paths are all object keys,
 * with each column's positional access into the result (struct field names
 * are matched case-insensitively by `.name`, JSON keys are not), or
 * undefined when some path is not flat or two paths collide (one a prefix of
 * another, or the same path read as text and as JSON).
 */
export function flatStructure(
  columns: readonly ViewColumn[],
): { readonly json: string; readonly refs: readonly (string | undefined)[] } | undefined {
  type Node = Map<string, Node | 'VARCHAR' | 'JSON'>;
  const root: Node = new Map();
  let payloadColumns = 0;
  for (const c of columns) {
    if (isTopicColumn(c)) continue;
    payloadColumns++;
    const keys: string[] = [];
    for (const s of c.pathSegments) {
      if ('index' in s) return undefined;
      keys.push(s.key);
    }
    if (keys.length === 0) return undefined;
    const leaf = isNestedOrJson(c.parsedType) ? 'JSON' : 'VARCHAR';
    let node = root;
    for (const [d, key] of keys.entries()) {
      const existing = node.get(key);
      if (d === keys.length - 1) {
        if (existing === undefined) node.set(key, leaf);
        else if (existing !== leaf) return undefined;
      } else {
        if (existing === undefined) {
          const child: Node = new Map();
          node.set(key, child);
          node = child;
        } else if (existing instanceof Map) node = existing;
        else return undefined;
      }
    }
  }
  if (payloadColumns === 0) return undefined;
  const toJson = (n: Node): unknown =>
    Object.fromEntries([...n].map(([k, v]) => [k, v instanceof Map ? toJson(v) : v]));
  // The struct's fields are in the order of the structure's JSON text, which
  // is the object's key order: integer-like keys ("1", "2") first, ascending,
  // then the others as inserted — not always the Map's order.
  const fieldOrder = (n: Node): string[] => Object.keys(Object.fromEntries([...n.keys()].map((k) => [k, 0])));
  const refs = columns.map((c) => {
    if (isTopicColumn(c)) return undefined;
    let ref = '__lf_t';
    let node = root;
    for (const s of c.pathSegments) {
      const key = (s as { key: string }).key;
      ref = `struct_extract_at(${ref}, ${fieldOrder(node).indexOf(key) + 1})`;
      const next = node.get(key);
      if (next instanceof Map) node = next;
    }
    return ref;
  });
  return { json: JSON.stringify(toJson(root)), refs };
}

/**
 * The type json_transform gives for a structure: its keys in the order of
 * the structure's JSON text (json_transform's order), VARCHAR and JSON leaves.
 */
export function structType(structureJson: string): string {
  const of = (o: Record<string, unknown>): string =>
    `STRUCT(${Object.entries(o)
      .map(([k, v]) => `${quoteIdent(k)} ${typeof v === 'string' ? v : of(v as Record<string, unknown>)}`)
      .join(', ')})`;
  return of(JSON.parse(structureJson) as Record<string, unknown>);
}

function extractionSql(columns: readonly ViewColumn[], typedReader: boolean): Extraction {
  const scalarPaths: string[] = [];
  const jsonPaths: string[] = [];
  const listRefs = columns.map((c) => {
    if (isTopicColumn(c)) return '__lf_topic';
    const list = isNestedOrJson(c.parsedType) ? jsonPaths : scalarPaths;
    list.push(renderDuckDbPath(c.pathSegments));
    return `${isNestedOrJson(c.parsedType) ? '__lf_j' : '__lf_s'}[${list.length}]`;
  });
  // json_extract* raise on text that is not JSON; under try() that row gets
  // NULL instead of a list, which is what marks it invalid_json. One parse
  // per row (a separate json_valid() would be a second), and try() only
  // falls back to row-at-a-time in the few vectors that hold a bad payload.
  const extract: string[] = [];
  if (scalarPaths.length > 0)
    extract.push(`try(json_extract_string(__lf_text, ${sqlStringList(scalarPaths)}))`);
  if (jsonPaths.length > 0) extract.push(`try(json_extract(__lf_text, ${sqlStringList(jsonPaths)}))`);
  const aliases = [
    ...(scalarPaths.length > 0 ? ['__lf_s'] : []),
    ...(jsonPaths.length > 0 ? ['__lf_j'] : []),
  ];
  // Only `$topic` columns: the payload must still be one JSON value.
  const extractOk =
    aliases[0] !== undefined ? `${aliases[0]} IS NOT NULL` : 'coalesce(try(json_valid(__lf_text)), FALSE)';

  // Flat paths (object keys only) go through DuckDB's typed JSON reader
  // first: json_transform with a structure picks every wanted key in one
  // walk of the parsed document (what read_json does), where
  // json_extract_string looks each path up and builds a list. The values are
  // the same text (a string as is, any other value as its JSON text, the
  // first of duplicate keys, JSON null as NULL). A row it gives no struct for
  // — not JSON, the payload `null`, a value it refuses — takes the
  // extraction above, that row only (a CASE evaluates a branch only for the
  // rows that reach it), so statuses, codes and messages stay what they were.
  const structure = typedReader ? flatStructure(columns) : undefined;
  if (structure === undefined)
    return {
      first: [],
      second: extract.map((e, i) => `${e} AS ${aliases[i]!}`),
      jsonOk: extractOk,
      rawRefs: listRefs,
    };
  return {
    first: [`try(json_transform(__lf_text, ${sqlString(structure.json)})) AS __lf_t`],
    second: extract.map((e, i) => `CASE WHEN __lf_t IS NULL THEN ${e} END AS ${aliases[i]!}`),
    jsonOk: `(__lf_t IS NOT NULL OR ${extractOk})`,
    rawRefs: columns.map((c, i) =>
      isTopicColumn(c)
        ? '__lf_topic'
        : `CASE WHEN __lf_t IS NOT NULL THEN ${structure.refs[i]!} ELSE ${listRefs[i]!} END`,
    ),
  };
}

/** Each column's raw value as `__lf_r<i>`, from its reference. */
function rawsSql(columns: readonly ViewColumn[], refs: readonly string[]): string[] {
  return columns.map((c, i) => {
    const ref = refs[i]!;
    // JSON null counts as missing, like an absent key (json_extract_string already maps it to NULL).
    return isNestedOrJson(c.parsedType)
      ? `CASE WHEN ${ref} IS NULL OR ${ref} = 'null' THEN NULL ELSE ${ref} END AS __lf_r${i}`
      : `${ref} AS __lf_r${i}`;
  });
}

/** Each column's typed value (its default where the raw value is missing), named as the column. */
function valuesSql(columns: readonly ViewColumn[]): string[] {
  return columns.map((c, i) => {
    const raw = `__lf_r${i}`;
    const d = defaultSql(c);
    const cast = castSql(c, raw);
    return `${d === undefined ? cast : `CASE WHEN ${raw} IS NULL THEN ${d} ELSE ${cast} END`} AS ${quoteIdent(c.name)}`;
  });
}

/**
 * Per column, one boolean `__lf_bad<i>`: is this column at fault? Cheap to
 * evaluate for every row; the error's code, column and message are built
 * afterwards, for DLQ rows only.
 */
function badsSql(columns: readonly ViewColumn[]): string[] {
  return columns.map((c, i) => {
    const raw = `__lf_r${i}`;
    // A VARCHAR or JSON column's value is its raw value (castSql): present,
    // it cannot fail, and only a missing required one is at fault. Written
    // out, the always-false test cost ~5% of a clean segment's CPU (bench:views).
    if (castSql(c, raw) === raw) return `${c.required ? `${raw} IS NULL` : 'FALSE'} AS __lf_bad${i}`;
    const failed = castFailedSql(c, raw, quoteIdent(c.name));
    const missing = c.required ? `${raw} IS NULL OR ` : '';
    return `coalesce(${missing}(${raw} IS NOT NULL AND ${failed}), FALSE) AS __lf_bad${i}`;
  });
}

/**
 * The first of two passes (materialize.ts): the same raw values, casts,
 * fault checks, filter and partition expressions as buildSql, over the typed
 * reader's struct only, deciding only what is certain — 'ok' (the struct was
 * read, no column at fault, the filter TRUE, every partition expression
 * non-NULL without raising) or 'filtered' (read, no filter column at fault,
 * the filter FALSE without raising) — and NULL for every other row: not read
 * by json_transform, a column at fault, the filter NULL or raising, a
 * partition value NULL (which may be a NULL value or a raise). No status or
 * error CASE, no list extraction, no payload kept for the rows it settles.
 * The NULL rows then go through buildSql's SELECT, which decides them exactly
 * as before. Every expression that reaches an 'ok' or 'filtered' row is the
 * one buildSql evaluates for it (the raw value is the struct's in both), so
 * the two paths cannot disagree on a row this pass settles
 * (views-typed-reader.test.ts compares them).
 */
function fastSql(
  spec: ViewSpec,
  filterSql: string | undefined,
  filterColumns: readonly string[],
  partitions: readonly (Omit<CompiledPartition, 'dateValued'> & { root: AstNode })[],
): string | undefined {
  const structure = flatStructure(spec.columns);
  if (structure === undefined) return undefined;
  const refs = spec.columns.map((c, i) => (isTopicColumn(c) ? '__lf_topic' : structure.refs[i]!));
  const columnIndex = new Map(spec.columns.map((c, i) => [c.name, i]));
  const bad = spec.columns.map((_, i) => `__lf_bad${i}`);
  const filterBad = filterColumns.map((n) => `__lf_bad${columnIndex.get(n)!}`);
  const evals: string[] = [];
  if (filterSql !== undefined) evals.push(`try(${filterSql}) AS __lf_f`);
  partitions.forEach((p, i) => evals.push(`try(${p.expressionSql}) AS __lf_p${i}`));
  const cases: string[] = ['WHEN __lf_t IS NULL THEN NULL'];
  if (filterSql !== undefined) {
    if (filterBad.length > 0) cases.push(`WHEN ${filterBad.join(' OR ')} THEN NULL`);
    cases.push('WHEN __lf_f IS NULL THEN NULL');
    cases.push(`WHEN NOT __lf_f THEN '${ROW_STATUS.filtered}'`);
  }
  cases.push(`WHEN ${bad.join(' OR ')} THEN NULL`);
  if (partitions.length > 0)
    cases.push(`WHEN ${partitions.map((_, i) => `__lf_p${i} IS NULL`).join(' OR ')} THEN NULL`);
  const partitionOut = partitions.map(
    (p, i) => `${partitionValueSql(`__lf_p${i}`, p.type, p.root)} AS ${quoteIdent(p.alias)}`,
  );
  return [
    'WITH __lf_src AS (',
    '  SELECT seq AS __lf_seq, payload AS __lf_payload, topic AS __lf_topic, try(decode(payload)) AS __lf_text',
    `  FROM ${INPUT_RELATION}`,
    '), __lf_read AS (',
    `  SELECT *, try(json_transform(__lf_text, ${sqlString(structure.json)})) AS __lf_t`,
    '  FROM __lf_src',
    '), __lf_raw AS (',
    `  SELECT *,\n    ${rawsSql(spec.columns, refs).join(',\n    ')}`,
    '  FROM __lf_read',
    '), __lf_typed AS (',
    `  SELECT *,\n    ${valuesSql(spec.columns).join(',\n    ')}`,
    '  FROM __lf_raw',
    '), __lf_checked AS (',
    `  SELECT *,\n    ${badsSql(spec.columns).join(',\n    ')}`,
    '  FROM __lf_typed',
    '), __lf_evaluated AS (',
    `  SELECT *${evals.map((e) => `,\n    ${e}`).join('')}`,
    '  FROM __lf_checked',
    ')',
    `SELECT CASE ${cases.join('\n    ')}\n    ELSE '${ROW_STATUS.ok}' END AS __lf_status,`,
    '  __lf_seq, __lf_payload, __lf_text, __lf_topic,',
    `  ${[...spec.columns.map((c) => quoteIdent(c.name)), ...partitionOut].join(',\n  ')}`,
    'FROM __lf_evaluated',
  ].join('\n');
}

function buildSql(
  spec: ViewSpec,
  filterSql: string | undefined,
  filterColumns: readonly string[],
  partitions: readonly (Omit<CompiledPartition, 'dateValued'> & { root: AstNode })[],
  typedReader: boolean,
): string {
  const { first, second, jsonOk, rawRefs } = extractionSql(spec.columns, typedReader);
  const raws = rawsSql(spec.columns, rawRefs);
  const values = valuesSql(spec.columns);
  const bads = badsSql(spec.columns);
  const columnError = (c: ViewColumn, i: number): string => {
    const raw = `__lf_r${i}`;
    const col = sqlString(c.name);
    const castFailed = `{'code': '${DlqErrorCode.castFailed}', 'col': ${col}, 'msg': 'value ' || ${truncatedValueSql(raw)} || ${sqlString(` at ${c.path} does not convert to ${c.type}`)}}`;
    if (!c.required) return castFailed;
    const missing = `{'code': '${DlqErrorCode.missingRequired}', 'col': ${col}, 'msg': ${sqlString(`required value at ${c.path} is missing or null`)}}`;
    return `CASE WHEN ${raw} IS NULL THEN ${missing} ELSE ${castFailed} END`;
  };
  const columnIndex = new Map(spec.columns.map((c, i) => [c.name, i]));
  const anyBad = spec.columns.map((_, i) => `__lf_bad${i}`).join(' OR ');
  const anyFilterColumnBad =
    filterColumns.length === 0
      ? 'FALSE'
      : filterColumns.map((n) => `__lf_bad${columnIndex.get(n)!}`).join(' OR ');

  const evals: string[] = [];
  // try(): an expression that raises on one row (a bad strptime, an overflow)
  // must send that row to the DLQ, not fail the whole segment forever.
  // For the filter: 1 = keep, 0 = false or NULL (filtered), NULL = it raised.
  if (filterSql !== undefined) evals.push(`try(CASE WHEN (${filterSql}) THEN 1 ELSE 0 END) AS __lf_f`);
  // For partitions: a struct, so NULL means it raised and {v: NULL} a NULL value.
  partitions.forEach((p, i) => evals.push(`try(struct_pack(v := (${p.expressionSql}))) AS __lf_p${i}`));

  // The order of these branches is the documented precedence (docs/views.md):
  // not JSON; a column the filter reads is at fault; the filter raised; the
  // filter said no; any column at fault; a partition expression raised.
  const statusCases: string[] = [`WHEN NOT __lf_json_ok THEN 'dlq'`];
  if (filterSql !== undefined) {
    statusCases.push(`WHEN ${anyFilterColumnBad} THEN 'dlq'`);
    statusCases.push(`WHEN __lf_f IS NULL THEN 'dlq'`);
    statusCases.push(`WHEN __lf_f = 0 THEN 'filtered'`);
  }
  statusCases.push(`WHEN ${anyBad} THEN 'dlq'`);
  if (partitions.length > 0)
    statusCases.push(`WHEN ${partitions.map((_, i) => `__lf_p${i} IS NULL`).join(' OR ')} THEN 'dlq'`);

  // For a DLQ row the error names the first column at fault in spec order,
  // unless the filter raised on a row whose filter columns were fine.
  const errorCases: string[] = [
    `WHEN __lf_status <> 'dlq' THEN NULL`,
    `WHEN NOT __lf_json_ok THEN {'code': '${DlqErrorCode.invalidJson}', 'col': NULL::VARCHAR, 'msg': CASE WHEN __lf_text IS NULL THEN 'payload is not valid UTF-8' ELSE 'payload is not valid JSON' END}`,
  ];
  if (filterSql !== undefined)
    errorCases.push(
      `WHEN NOT (${anyFilterColumnBad}) AND __lf_f IS NULL THEN {'code': '${DlqErrorCode.expressionFailed}', 'col': NULL::VARCHAR, 'msg': ${sqlString(`filter raised an error: ${filterSql}`)}}`,
    );
  spec.columns.forEach((c, i) => errorCases.push(`WHEN __lf_bad${i} THEN ${columnError(c, i)}`));
  partitions.forEach((p, i) =>
    errorCases.push(
      `WHEN __lf_p${i} IS NULL THEN {'code': '${DlqErrorCode.expressionFailed}', 'col': ${sqlString(p.alias)}, 'msg': ${sqlString(`partition expression ${p.alias} raised an error: ${p.expressionSql}`)}}`,
    ),
  );

  const viewColumns = spec.columns.map((c) => quoteIdent(c.name));
  const partitionOut = partitions.map(
    (p, i) => `${partitionValueSql(`__lf_p${i}.v`, p.type, p.root)} AS ${quoteIdent(p.alias)}`,
  );

  return [
    'WITH __lf_src AS (',
    '  SELECT seq AS __lf_seq, ingest_time AS __lf_ingest_time, payload AS __lf_payload,',
    '    topic AS __lf_topic, try(decode(payload)) AS __lf_text',
    `  FROM ${INPUT_RELATION}`,
    '), __lf_read AS (',
    `  SELECT *${first.map((e) => `,\n    ${e}`).join('')}`,
    '  FROM __lf_src',
    '), __lf_extracted AS (',
    `  SELECT *${second.map((e) => `,\n    ${e}`).join('')}`,
    '  FROM __lf_read',
    '), __lf_raw AS (',
    `  SELECT __lf_seq, __lf_ingest_time, __lf_payload, __lf_text, ${jsonOk} AS __lf_json_ok,\n    ${raws.join(',\n    ')}`,
    '  FROM __lf_extracted',
    '), __lf_typed AS (',
    `  SELECT *,\n    ${values.join(',\n    ')}`,
    '  FROM __lf_raw',
    '), __lf_checked AS (',
    `  SELECT *,\n    ${bads.join(',\n    ')}`,
    '  FROM __lf_typed',
    '), __lf_evaluated AS (',
    `  SELECT *${evals.map((e) => `,\n    ${e}`).join('')}`,
    '  FROM __lf_checked',
    '), __lf_classified AS (',
    `  SELECT *,\n    CASE ${statusCases.join('\n      ')}\n      ELSE 'ok' END AS __lf_status`,
    '  FROM __lf_evaluated',
    '), __lf_explained AS (',
    `  SELECT *,\n    CASE ${errorCases.join('\n      ')}\n      END AS __lf_error`,
    '  FROM __lf_classified',
    ')',
    'SELECT __lf_status,',
    '  __lf_error.code AS __lf_error_code, __lf_error.msg AS __lf_error_message, __lf_error.col AS __lf_error_column,',
    '  __lf_seq, __lf_ingest_time, __lf_payload,',
    `  ${[...viewColumns, ...partitionOut].join(',\n  ')}`,
    'FROM __lf_explained',
  ].join('\n');
}
