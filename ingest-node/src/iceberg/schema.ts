// A View's columns as an Iceberg table schema, and the checks that a View
// still fits the table it appends to.
//
// Field ids: a new table numbers the View's columns 1..n in spec order. An
// existing table's ids are kept: columns are found by name in the table's
// current schema. The View's Parquet files carry these ids (field-ids.ts,
// COPY … FIELD_IDS) when the catalog could be asked before they were
// written; for those that could not (and files from before), the table
// carries `schema.name-mapping.default`: the spec's mapping from column names
// to field ids for files without ids, which Iceberg readers (Java, PyIceberg,
// Trino, Spark) apply.
import { IcebergError } from './errors.ts';

export interface IcebergField {
  readonly id: number;
  readonly name: string;
  readonly required: boolean;
  readonly type: string;
}

export interface IcebergSchema {
  readonly type: 'struct';
  readonly 'schema-id': number;
  readonly fields: readonly IcebergField[];
}

/**
 * The Iceberg primitive for a View column type (DuckDB's canonical spelling),
 * or undefined when this version cannot append it. Only types whose Parquet
 * encoding (as DuckDB writes it) an Iceberg reader takes as the type as is.
 */
export function icebergType(duckdbType: string): string | undefined {
  const t = duckdbType.trim().toUpperCase();
  const decimal = /^DECIMAL\((\d+),\s*(\d+)\)$/.exec(t);
  if (decimal !== null) return `decimal(${decimal[1]}, ${decimal[2]})`;
  switch (t) {
    case 'VARCHAR':
    case 'JSON':
      return 'string';
    case 'BOOLEAN':
      return 'boolean';
    case 'INTEGER':
      return 'int';
    case 'BIGINT':
      return 'long';
    case 'FLOAT':
      return 'float';
    case 'DOUBLE':
      return 'double';
    case 'DATE':
      return 'date';
    case 'TIMESTAMP':
      return 'timestamp';
    case 'TIMESTAMPTZ':
    case 'TIMESTAMP WITH TIME ZONE':
      return 'timestamptz';
    default:
      // TINYINT/SMALLINT/unsigned (Parquet INT_8/16, UINT_*), HUGEINT (written
      // as DOUBLE), LIST and STRUCT (need element and field ids): not yet.
      return undefined;
  }
}

export interface ViewColumns {
  readonly view: string;
  readonly columns: readonly { readonly name: string; readonly type: string }[];
}

/** The schema of a new table for a View: ids 1..n, every field optional (DuckDB writes every column OPTIONAL). */
export function viewToIcebergSchema(v: ViewColumns): IcebergSchema {
  const unsupported = v.columns.filter((c) => icebergType(c.type) === undefined);
  if (unsupported.length > 0)
    throw new IcebergError(
      'ICEBERG_TYPE_UNSUPPORTED',
      `view ${v.view}: column type(s) with no Iceberg mapping yet: ${unsupported.map((c) => `${c.name} ${c.type}`).join(', ')}`,
    );
  return {
    type: 'struct',
    'schema-id': 0,
    fields: v.columns.map((c, i) => ({
      id: i + 1,
      name: c.name,
      required: false,
      type: icebergType(c.type)!,
    })),
  };
}

/** `schema.name-mapping.default` for a schema: each field's id under its name. */
export function nameMapping(schema: Pick<IcebergSchema, 'fields'>): string {
  return JSON.stringify(schema.fields.map((f) => ({ 'field-id': f.id, names: [f.name] })));
}

function sameType(a: string, b: string): boolean {
  return a.replace(/\s+/g, '') === b.replace(/\s+/g, '');
}

/**
 * Whether a table field of type `from` may become `to` (Iceberg's type
 * promotions: int → long, float → double, a decimal's precision widened at the
 * same scale): old files then read as the wider type.
 */
export function canPromote(from: string, to: string): boolean {
  const f = from.replace(/\s+/g, '');
  const t = to.replace(/\s+/g, '');
  if (f === t) return true;
  if (f === 'int' && t === 'long') return true;
  if (f === 'float' && t === 'double') return true;
  const df = /^decimal\((\d+),(\d+)\)$/.exec(f);
  const dt = /^decimal\((\d+),(\d+)\)$/.exec(t);
  return df !== null && dt !== null && df[2] === dt[2] && Number(dt[1]) >= Number(df[1]);
}

/**
 * The View columns whose type the table's field of the same name cannot take
 * or be promoted to, with their index in the View: what View load refuses
 * (views error `iceberg_type_change`).
 */
export function typeChanges(
  v: ViewColumns,
  schema: Pick<IcebergSchema, 'fields'>,
): { index: number; name: string; table: string; view: string }[] {
  const byName = new Map(schema.fields.map((f) => [f.name, f]));
  return v.columns.flatMap((c, index) => {
    const want = icebergType(c.type);
    const f = byName.get(c.name);
    if (want === undefined || f === undefined || typeof f.type !== 'string' || canPromote(f.type, want))
      return [];
    return [{ index, name: c.name, table: f.type, view: want }];
  });
}

/** What appending a View's files to a table needs: the fields it does not write, the fields to add. */
export interface ViewFit {
  /** Table fields the View does not write: NULL in its rows. */
  readonly missing: readonly IcebergField[];
  /** View columns the table lacks, as new optional fields with ids after `lastColumnId`. */
  readonly added: readonly IcebergField[];
  /** Table fields the View writes with a wider type (int → long…): the field with its new type. */
  readonly promoted: readonly IcebergField[];
}

/**
 * Checks that the View's files can be appended to a table with `schema`:
 * every View column is a table field of the same type, or a new column
 * (added as a field, ids after `lastColumnId`: schema evolution by addition,
 * so older snapshots read NULL for it). A changed type is refused.
 */
export function checkViewFitsTable(v: ViewColumns, schema: IcebergSchema, lastColumnId = 0): ViewFit {
  const byName = new Map(schema.fields.map((f) => [f.name, f]));
  const problems: string[] = [];
  const added: IcebergField[] = [];
  const promoted: IcebergField[] = [];
  let next = Math.max(lastColumnId, ...schema.fields.map((f) => f.id));
  for (const c of v.columns) {
    const want = icebergType(c.type);
    const f = byName.get(c.name);
    if (want === undefined) problems.push(`${c.name}: ${c.type} has no Iceberg mapping yet`);
    else if (f === undefined) added.push({ id: ++next, name: c.name, required: false, type: want });
    else if (!f.required && typeof f.type === 'string' && !sameType(f.type, want) && canPromote(f.type, want))
      promoted.push({ ...f, type: want });
    else if (!sameType(typeof f.type === 'string' ? f.type : JSON.stringify(f.type), want))
      problems.push(`${c.name}: table has ${JSON.stringify(f.type)}, view writes ${want}`);
    else if (f.required) problems.push(`${c.name}: required in the table, optional in the view's files`);
  }
  if (problems.length > 0)
    throw new IcebergError(
      'ICEBERG_SCHEMA_MISMATCH',
      `view ${v.view} does not fit its table: ${problems.join('; ')}`,
    );
  const written = new Set(v.columns.map((c) => c.name));
  return { missing: schema.fields.filter((f) => !written.has(f.name)), added, promoted };
}
