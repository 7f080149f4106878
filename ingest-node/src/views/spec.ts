// The view spec (DESIGN §6, docs/views.md): one TypeBox schema is the single
// source of truth. The operator generates its View CRD from `ViewSpecSchema`;
// the node validates YAML/JSON against it here, then checks what a JSON
// Schema cannot say (type grammar, JSONPath subset, name clashes, defaults).
// Expressions are checked later, with DuckDB's own parser (expr.ts), because
// only the engine that runs them can say what they mean.
import { createHash } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import yaml from 'js-yaml';
import { ViewError, ViewErrorCode } from './errors.ts';
import { parseJsonPath, renderJsonPath, TOPIC_PATH } from './jsonpath.ts';
import type { PathSegment } from './jsonpath.ts';
import { IDENTIFIER_PATTERN, isNestedOrJson, parseType, renderType } from './types.ts';
import type { ViewType } from './types.ts';

export const MAX_COLUMNS = 512;
export const MAX_PARTITION_LEVELS = 8;
export const MAX_EXPRESSION_LENGTH = 4096;
/** A spec is a few KB; refusing megabytes up front bounds the YAML parser's work. */
export const MAX_SPEC_BYTES = 256 * 1024;
/** Column names the compiled SQL uses for itself (the input table, the DLQ); see compile.ts. */
export const RESERVED_PREFIX = '__';

const Identifier = (description: string) =>
  Type.String({ pattern: IDENTIFIER_PATTERN, minLength: 1, maxLength: 63, description });

export const ViewColumnSchema = Type.Object(
  {
    name: Identifier('Column name in the Parquet output (lower-case identifier).'),
    type: Type.String({
      minLength: 1,
      maxLength: 1024,
      pattern: '^[A-Za-z0-9_(), \\[\\]]+$',
      description:
        'VARCHAR, BOOLEAN, TINYINT, SMALLINT, INTEGER, BIGINT, UTINYINT, USMALLINT, UINTEGER, UBIGINT, HUGEINT, FLOAT, DOUBLE, DECIMAL(p,s), DATE, TIMESTAMP, TIMESTAMPTZ, JSON, LIST(T) or T[], STRUCT(name T, …).',
    }),
    path: Type.String({
      minLength: 1,
      maxLength: 1024,
      pattern: '^\\$',
      description: 'JSONPath into the payload: $, .key, ["key"], [index] (e.g. $.a.b, $.items[0]).',
    }),
    required: Type.Optional(
      Type.Boolean({
        default: false,
        description: 'A row whose value is missing or null goes to the DLQ (missing_required).',
      }),
    ),
    default: Type.Optional(
      Type.Union([Type.String({ maxLength: 4096 }), Type.Number(), Type.Boolean()], {
        description:
          'Value used when the path is missing or null (not when it fails to cast). For JSON, LIST and STRUCT columns: the JSON text.',
      }),
    ),
  },
  { additionalProperties: false, description: 'One typed column extracted from the payload.' },
);

export const ViewPartitionSchema = Type.Object(
  {
    expression: Type.String({
      minLength: 1,
      maxLength: MAX_EXPRESSION_LENGTH,
      description: "Scalar expression over the view's columns, e.g. date_trunc('day', viewed_at).",
    }),
    alias: Identifier('Hive partition key: the S3 key gets alias=value/.'),
  },
  { additionalProperties: false, description: 'One Hive-style partition level.' },
);

export const ViewIcebergSchema = Type.Object(
  {
    namespace: Identifier('Iceberg namespace of the table (created on first use).'),
    table: Type.Optional(Identifier('Iceberg table name (created on first use). Default: the view name.')),
  },
  {
    additionalProperties: false,
    description:
      'Also append each segment’s view files to this Iceberg table, through the node’s iceberg.catalogUri (docs/iceberg.md). Not part of the spec hash: the files are the same.',
  },
);

export const ViewSpecSchema = Type.Object(
  {
    name: Identifier('View name: views/{name}/ and dlq/{name}/ in S3.'),
    source: Type.Optional(
      Type.Literal('payload', {
        default: 'payload',
        description: 'What the paths address: the record payload.',
      }),
    ),
    columns: Type.Array(ViewColumnSchema, {
      minItems: 1,
      maxItems: MAX_COLUMNS,
      description: 'Output columns, in order.',
    }),
    filter: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: MAX_EXPRESSION_LENGTH,
        description:
          "Scalar boolean expression over the columns; rows where it is not true are counted as filtered (e.g. event = 'page_view').",
      }),
    ),
    partitioning: Type.Optional(
      Type.Array(ViewPartitionSchema, {
        maxItems: MAX_PARTITION_LEVELS,
        description: 'Hive partitioning of the output, outermost first.',
      }),
    ),
    iceberg: Type.Optional(ViewIcebergSchema),
  },
  { additionalProperties: false, description: 'A view: typed Parquet columns extracted from JSON payloads.' },
);

/** The spec as written (after schema validation). */
export type ViewSpecInput = Static<typeof ViewSpecSchema>;

export interface ViewColumn {
  readonly name: string;
  /** Canonical DuckDB type text (renderType of the parsed type). */
  readonly type: string;
  readonly parsedType: ViewType;
  /** Canonical JSONPath text, or TOPIC_PATH (`$topic`: the record's MQTT topic). */
  readonly path: string;
  /** The JSONPath's segments; empty for `$topic` (see isTopicColumn). */
  readonly pathSegments: readonly PathSegment[];
  readonly required: boolean;
  readonly default?: string | number | boolean;
}

export interface ViewPartition {
  readonly expression: string;
  readonly alias: string;
}

/** A validated, normalised view: types and paths canonical, defaults filled in. */
export interface ViewSpec {
  readonly name: string;
  readonly source: 'payload';
  readonly columns: readonly ViewColumn[];
  readonly filter?: string;
  readonly partitioning: readonly ViewPartition[];
  /** The Iceberg table the view's files are also appended to. */
  readonly iceberg?: { readonly namespace: string; readonly table: string };
}

function formatPointer(pointer: string): string {
  // '/columns/1/foo' → 'columns[1].foo'
  return pointer
    .split('/')
    .slice(1)
    .map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~'))
    .reduce((acc, part) => (/^[0-9]+$/.test(part) ? `${acc}[${part}]` : acc ? `${acc}.${part}` : part), '');
}

/** Validates a parsed object (from YAML, JSON or a CRD's spec) and returns the normalised view. */
export function validateView(obj: unknown): ViewSpec {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj))
    throw new ViewError(ViewErrorCode.specInvalid, '', 'a view spec is a mapping (name, columns, …)');
  // The first error is the one to fix; listing the cascade (a missing key is
  // also "not a string") only hides it.
  const first = Value.Errors(ViewSpecSchema, obj).First();
  if (first) {
    const where = formatPointer(first.path);
    const message = first.message === 'Unexpected property' ? 'unknown key' : first.message;
    throw new ViewError(ViewErrorCode.specInvalid, where, message);
  }
  const input = obj as ViewSpecInput;
  const names = new Set<string>();
  const columns = input.columns.map((c, i): ViewColumn => {
    const at = `columns[${i}]`;
    if (c.name.startsWith(RESERVED_PREFIX))
      throw new ViewError(ViewErrorCode.nameConflict, `${at}.name`, `names starting with '__' are reserved`);
    if (names.has(c.name))
      throw new ViewError(ViewErrorCode.nameConflict, `${at}.name`, `duplicate column '${c.name}'`);
    names.add(c.name);
    const parsedType = parseType(c.type, `${at}.type`);
    const readsTopic = c.path === TOPIC_PATH;
    if (readsTopic && isNestedOrJson(parsedType))
      throw new ViewError(
        ViewErrorCode.pathInvalid,
        `${at}.path`,
        `${TOPIC_PATH} is text: its column cannot be ${renderType(parsedType)}`,
      );
    const pathSegments = readsTopic ? [] : parseJsonPath(c.path, `${at}.path`);
    const required = c.required ?? false;
    if (required && c.default !== undefined)
      throw new ViewError(
        ViewErrorCode.defaultInvalid,
        `${at}.default`,
        'a required column cannot have a default (missing values go to the DLQ)',
      );
    return {
      name: c.name,
      type: renderType(parsedType),
      parsedType,
      path: readsTopic ? TOPIC_PATH : renderJsonPath(pathSegments),
      pathSegments,
      required,
      ...(c.default !== undefined ? { default: c.default } : {}),
    };
  });
  const aliases = new Set<string>();
  const partitioning = (input.partitioning ?? []).map((p, i): ViewPartition => {
    const at = `partitioning[${i}].alias`;
    if (p.alias.startsWith(RESERVED_PREFIX))
      throw new ViewError(ViewErrorCode.nameConflict, at, `names starting with '__' are reserved`);
    // A partition column is lifted out of the file into the key; sharing a
    // name with a column would make readers see two different `x`.
    if (names.has(p.alias))
      throw new ViewError(ViewErrorCode.nameConflict, at, `alias '${p.alias}' is also a column name`);
    if (aliases.has(p.alias))
      throw new ViewError(ViewErrorCode.nameConflict, at, `duplicate alias '${p.alias}'`);
    aliases.add(p.alias);
    return { expression: p.expression, alias: p.alias };
  });
  return {
    name: input.name,
    source: 'payload',
    columns,
    ...(input.filter !== undefined ? { filter: input.filter } : {}),
    partitioning,
    ...(input.iceberg !== undefined
      ? { iceberg: { namespace: input.iceberg.namespace, table: input.iceberg.table ?? input.name } }
      : {}),
  };
}

/** Parses one YAML (or JSON) document holding a view spec. */
export function parseViewYaml(text: string): ViewSpec {
  if (Buffer.byteLength(text) > MAX_SPEC_BYTES)
    throw new ViewError(ViewErrorCode.yamlInvalid, '', `a view spec is at most ${MAX_SPEC_BYTES} bytes`);
  let obj: unknown;
  try {
    // JSON_SCHEMA: no YAML timestamps or other implicit types, so `default: 2026-01-01`
    // stays the string the user wrote rather than becoming a Date.
    obj = yaml.load(text, { schema: yaml.JSON_SCHEMA, json: false });
  } catch (err) {
    throw new ViewError(
      ViewErrorCode.yamlInvalid,
      '',
      (err as Error).message.split('\n')[0] ?? 'invalid YAML',
      {
        cause: err,
      },
    );
  }
  return validateView(obj);
}

/** The spec as plain data, in canonical form: what is hashed and what `spec` round-trips through. */
/** Whether the column takes the record's MQTT topic (`path: $topic`) rather than a payload value. */
export function isTopicColumn(c: ViewColumn): boolean {
  return c.path === TOPIC_PATH;
}

export function viewToPlain(view: ViewSpec): ViewSpecInput {
  return {
    name: view.name,
    source: view.source,
    columns: view.columns.map((c) => ({
      name: c.name,
      type: c.type,
      path: c.path,
      required: c.required,
      ...(c.default !== undefined ? { default: c.default } : {}),
    })),
    ...(view.filter !== undefined ? { filter: view.filter } : {}),
    ...(view.partitioning.length > 0
      ? { partitioning: view.partitioning.map((p) => ({ expression: p.expression, alias: p.alias })) }
      : {}),
    ...(view.iceberg !== undefined ? { iceberg: { ...view.iceberg } } : {}),
  };
}

export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * sha256 (hex) of the canonical JSON of the normalised spec: the same for any
 * YAML spelling of one view (key order, `INTEGER` vs `integer`, `$['a']` vs
 * `$.a`, an explicit `required: false`), different for any change in meaning.
 * Expressions are hashed as written: reformatting one is a change.
 */
export function viewSpecHash(view: ViewSpec): string {
  // The table target does not change the files: moving a view to another
  // table must not make reprocess rebuild them, nor change earlier hashes.
  const { iceberg: _table, ...plain } = viewToPlain(view);
  return createHash('sha256').update(canonicalJson(plain)).digest('hex');
}
