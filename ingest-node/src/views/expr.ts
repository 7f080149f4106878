// User expressions (a view's filter and partition expressions) are untrusted
// input that ends up inside SQL. They are parsed by DuckDB itself
// (json_serialize_sql), so there is no second parser to disagree with the
// engine; the tree is then walked against allowlists: node kinds, operators,
// scalar functions, and the view's own columns. What runs is not the user's
// text but DuckDB's re-rendering of the checked tree (json_deserialize_sql):
// comments, stray clauses and odd spellings cannot survive into the SQL.
//
// This is the first fence. The second is the sandbox (parquet/duckdb.ts):
// external access off, only the scratch folder reachable, configuration locked.
import type { DuckDBConnection } from '@duckdb/node-api';
import { VARCHAR } from '@duckdb/node-api';
import { ViewError, ViewErrorCode } from './errors.ts';

/**
 * Scalar functions an expression may call: deterministic, pure, and unable to
 * reach files, the environment, the network or the catalog. Anything else is
 * refused, including functions added by future DuckDB versions. Volatile
 * functions (now, random, uuid…) are refused on purpose: a partition key that
 * changes between a first attempt and its retry would write a second copy
 * under a different S3 key.
 */
export const ALLOWED_FUNCTIONS: ReadonlySet<string> = new Set([
  // operators that the parser turns into function calls
  '+',
  '-',
  '*',
  '/',
  '//',
  '%',
  '**',
  '^',
  '||',
  '&',
  '|',
  '<<',
  '>>',
  '~',
  '~~', // LIKE
  '!~~', // NOT LIKE
  '~~*', // ILIKE
  '!~~*', // NOT ILIKE
  '~~~', // GLOB (string pattern match, not the table function)
  // strings
  'lower',
  'upper',
  'lcase',
  'ucase',
  'length',
  'strlen',
  'char_length',
  'character_length',
  'substr',
  'substring',
  'left',
  'right',
  'trim',
  'ltrim',
  'rtrim',
  'lpad',
  'rpad',
  'concat',
  'concat_ws',
  'replace',
  'reverse',
  'split_part',
  'string_split',
  'str_split',
  'starts_with',
  'ends_with',
  'prefix',
  'suffix',
  'contains',
  'strpos',
  'instr',
  'position',
  'regexp_matches',
  'regexp_full_match',
  'regexp_replace',
  'regexp_extract',
  'like_escape',
  'ilike_escape',
  'translate',
  'ascii',
  'chr',
  'md5',
  'sha1',
  'sha256',
  'hash',
  'format',
  'printf',
  'nullif',
  'greatest',
  'least',
  // math
  'abs',
  'ceil',
  'ceiling',
  'floor',
  'round',
  'trunc',
  'sign',
  'sqrt',
  'cbrt',
  'pow',
  'power',
  'exp',
  'ln',
  'log',
  'log2',
  'log10',
  'fmod',
  'isnan',
  'isinf',
  'isfinite',
  'even',
  'gcd',
  'lcm',
  'bit_count',
  // date and time (all in UTC: the session time zone is pinned)
  'date_trunc',
  'datetrunc',
  'date_part',
  'datepart',
  'date_diff',
  'datediff',
  'date_sub',
  'datesub',
  'strftime',
  'strptime',
  'try_strptime',
  'epoch',
  'epoch_ms',
  'epoch_us',
  'epoch_ns',
  'make_date',
  'make_time',
  'make_timestamp',
  'to_timestamp',
  'year',
  'month',
  'day',
  'hour',
  'minute',
  'second',
  'millisecond',
  'microsecond',
  'dayofweek',
  'isodow',
  'dayofyear',
  'dayofmonth',
  'week',
  'weekofyear',
  'weekday',
  'quarter',
  'yearweek',
  'isoyear',
  'last_day',
  'monthname',
  'dayname',
  'time_bucket',
  'to_days',
  'to_hours',
  'to_minutes',
  'to_seconds',
  'to_weeks',
  'to_months',
  'to_years',
  // JSON (over JSON columns)
  'json_extract',
  'json_extract_string',
  'json_value',
  'json_type',
  'json_valid',
  'json_array_length',
  'json_contains',
  'json_exists',
  // lists and structs
  'list_value',
  'list_extract',
  'list_element',
  'array_extract',
  'array_slice',
  'list_slice',
  'len',
  'array_length',
  'list_contains',
  'list_has',
  'array_contains',
  'list_position',
  'list_concat',
  'array_to_string',
  'struct_extract',
  'struct_pack',
]);

/** Functions refused with a reason worth spelling out (they are outside the allowlist anyway). */
const DENIED_REASONS: readonly [RegExp, string][] = [
  [
    /^(read_|parquet_|sniff_csv$|glob$|iceberg_|delta_|.*_scan$|list_files$)/,
    'reads files (table functions are not allowed)',
  ],
  [
    /^(getenv|current_setting|getvariable|duckdb_|pragma_|which_secret|version$)/,
    'reads settings or the environment',
  ],
  [/^(query|query_table|sql_auto_complete|json_serialize_sql|json_deserialize_sql)$/, 'runs or parses SQL'],
  [/^(http|s3|url_|httpfs|from_url)/, 'reaches the network'],
  [
    /^(now|current_|today|get_current_|transaction_timestamp|random|setseed|uuid|gen_random_uuid|nextval|currval)/,
    'is not deterministic (a retry could produce different keys)',
  ],
];

const ALLOWED_OPERATOR_TYPES: ReadonlySet<string> = new Set([
  'OPERATOR_NOT',
  'OPERATOR_IS_NULL',
  'OPERATOR_IS_NOT_NULL',
  'OPERATOR_COALESCE',
  'OPERATOR_NULLIF',
  'COMPARE_IN',
  'COMPARE_NOT_IN',
  'ARRAY_EXTRACT',
  'ARRAY_SLICE',
  'STRUCT_EXTRACT',
  'ARRAY_CONSTRUCTOR',
]);

/** Node classes allowed as they are; FUNCTION, OPERATOR and COLUMN_REF get their own checks. */
const PLAIN_CLASSES: ReadonlySet<string> = new Set([
  'CONSTANT',
  'COMPARISON',
  'CONJUNCTION',
  'BETWEEN',
  'CASE',
  'CAST',
  'COLLATE',
]);

/**
 * Widest a width, precision or pad length may be. DuckDB allocates a
 * function's result strings outside its memory_limit, a vector of 2,048 rows
 * at a time: `lpad(x, 100000000, 'a')` would be ~200 GB per vector. At this
 * bound a vector is at most a few MiB, whatever the data.
 */
export const EXPR_WIDTH_MAX = 1024;

/** Functions whose argument at this index is a result length. */
const WIDTH_ARGUMENTS: Readonly<Record<string, number>> = { lpad: 1, rpad: 1, repeat: 1 };
/**
 * Functions whose result can be a multiple of their first argument's length
 * (a replacement longer than its pattern, a separator per element). Over a
 * constant, DuckDB evaluates them when the view is bound — in the node's own
 * process and in the operator, with no address-space limit — and nesting
 * multiplies: ten `replace(…, 'a', 'aaaaaaaaaa')` are 10^10 bytes from 300
 * characters. Over a column they run per row in a Parquet child, under its
 * limit. So their first argument must read a column.
 */
const GROWTH_FUNCTIONS: ReadonlySet<string> = new Set(['replace', 'regexp_replace', 'array_to_string']);

/** Whether `node` reads a column anywhere inside it. */
function readsColumn(node: unknown): boolean {
  if (Array.isArray(node)) return node.some(readsColumn);
  if (node === null || typeof node !== 'object') return false;
  if ((node as AstNode).class === 'COLUMN_REF') return true;
  return Object.values(node).some(readsColumn);
}

/** Functions whose first argument is a format string with widths and precisions in it. */
const FORMAT_FUNCTIONS: Readonly<Record<string, 'fmt' | 'printf'>> = { format: 'fmt', printf: 'printf' };

function constantOf(node: AstNode | undefined): { value: unknown } | undefined {
  if (node?.class !== 'CONSTANT') return undefined;
  const v = node['value'] as { is_null?: unknown; value?: unknown } | undefined;
  if (v === undefined || v.is_null === true) return undefined;
  return { value: v.value };
}

/** Widths and precisions written in a format string, or a reason it cannot be bounded. */
export function formatWidths(kind: 'fmt' | 'printf', format: string): number[] | string {
  const widths: number[] = [];
  if (kind === 'printf') {
    const re = /%(%|(?:\d+\$)?[-+ #0']*(\*|\d+)?(?:\.(\*|\d*))?)/g;
    for (const m of format.matchAll(re)) {
      if (m[1] === '%') continue;
      if (m[2] === '*' || m[3] === '*') return 'a width or precision taken from an argument (`*`)';
      if (m[2]) widths.push(Number(m[2]));
      if (m[3]) widths.push(Number(m[3]));
    }
    return widths;
  }
  // fmt: `{{` and `}}` are literal braces; `{…}` a field, `{:spec}` with a
  // spec whose digits are fill, width and precision; a `{` inside a field is
  // a width or precision from an argument.
  for (let i = 0; i < format.length; i++) {
    const c = format[i];
    if (c === '}' && format[i + 1] === '}') {
      i++;
      continue;
    }
    if (c !== '{') continue;
    if (format[i + 1] === '{') {
      i++;
      continue;
    }
    const end = format.indexOf('}', i + 1);
    const field = format.slice(i + 1, end === -1 ? undefined : end);
    if (field.includes('{')) return 'a width or precision taken from an argument (`{:{}}`)';
    const colon = field.indexOf(':');
    if (colon !== -1) for (const d of field.slice(colon + 1).match(/\d+/g) ?? []) widths.push(Number(d));
    if (end === -1) break;
    i = end;
  }
  return widths;
}

/** Bounds on work per expression: DuckDB's trees for 4 KB of text stay far below these. */
const MAX_NODES = 10_000;
const MAX_DEPTH = 200;

export interface CheckedExpression {
  /** DuckDB's rendering of the checked tree: what the compiled SQL uses. */
  readonly sql: string;
  /** The view columns the expression reads (lower-case, in first-use order). */
  readonly columns: readonly string[];
  /** The top-level node, for compile-time rules (e.g. how to render date_trunc partition values). */
  readonly root: AstNode;
}

export interface AstNode {
  readonly class?: string;
  readonly type?: string;
  readonly [key: string]: unknown;
}

interface SerializeResult {
  error: boolean;
  error_type?: string;
  error_message?: string;
  statements?: { node: Record<string, unknown> }[];
}

async function serialize(conn: DuckDBConnection, sql: string): Promise<SerializeResult> {
  // Bound as a parameter: the user's text is data to json_serialize_sql, never SQL here.
  const reader = await conn.runAndReadAll('SELECT json_serialize_sql($1::VARCHAR) AS j', [sql], [VARCHAR]);
  const cell = reader.getRows()[0]?.[0];
  if (typeof cell !== 'string') throw new Error('json_serialize_sql returned no result');
  return JSON.parse(cell) as SerializeResult;
}

/**
 * DuckDB's rendering of `sql`'s tree. Serialised and deserialised inside
 * DuckDB: in JavaScript the u64 source positions would lose precision and no
 * longer deserialise.
 */
async function render(conn: DuckDBConnection, sql: string): Promise<string> {
  const reader = await conn.runAndReadAll(
    'SELECT json_deserialize_sql(json_serialize_sql($1::VARCHAR)) AS s',
    [sql],
    [VARCHAR],
  );
  const cell = reader.getRows()[0]?.[0];
  if (typeof cell !== 'string') throw new Error('json_deserialize_sql returned no result');
  return cell;
}

async function functionKind(conn: DuckDBConnection, name: string): Promise<string | undefined> {
  const reader = await conn.runAndReadAll(
    'SELECT function_type FROM duckdb_functions() WHERE function_name = $1::VARCHAR LIMIT 1',
    [name],
    [VARCHAR],
  );
  const cell = reader.getRows()[0]?.[0];
  return typeof cell === 'string' ? cell : undefined;
}

function isEmptySelectShell(node: Record<string, unknown>): boolean {
  const from = node['from_table'] as { type?: string } | null | undefined;
  const cte = node['cte_map'] as { map?: unknown[] } | undefined;
  const groups = node['group_expressions'] as unknown[] | undefined;
  const groupSets = node['group_sets'] as unknown[] | undefined;
  const modifiers = node['modifiers'] as unknown[] | undefined;
  return (
    node['type'] === 'SELECT_NODE' &&
    from?.type === 'EMPTY' &&
    (cte?.map?.length ?? 0) === 0 &&
    node['where_clause'] == null &&
    (groups?.length ?? 0) === 0 &&
    (groupSets?.length ?? 0) === 0 &&
    node['having'] == null &&
    node['qualify'] == null &&
    node['sample'] == null &&
    (modifiers?.length ?? 0) === 0 &&
    node['aggregate_handling'] === 'STANDARD_HANDLING'
  );
}

/**
 * Parses and checks one expression. `columns` are the view's column names;
 * `where` names the spec field for errors (`filter`, `partitioning[0].expression`).
 * Throws ViewError naming the offending piece.
 */
export async function checkExpression(
  conn: DuckDBConnection,
  text: string,
  columns: ReadonlySet<string>,
  where: string,
): Promise<CheckedExpression> {
  const fail = (code: ViewErrorCode, message: string): never => {
    throw new ViewError(code, where, message);
  };
  const parsed = await serialize(conn, `SELECT ${text}`);
  if (parsed.error) {
    const message = parsed.error_message ?? 'does not parse';
    // "Only SELECT statements can be serialized": the text closed our SELECT
    // and started another statement (`1; DROP TABLE x`, `…; COPY …`).
    if (parsed.error_type === 'not implemented' || /Only SELECT/.test(message))
      return fail(ViewErrorCode.exprNotExpression, 'only one expression is allowed, not statements');
    return fail(ViewErrorCode.exprSyntax, message);
  }
  const statements = parsed.statements ?? [];
  if (statements.length !== 1)
    return fail(
      ViewErrorCode.exprNotExpression,
      `only one expression is allowed, got ${statements.length} statements`,
    );
  const select = statements[0]!.node;
  if (!isEmptySelectShell(select))
    return fail(
      ViewErrorCode.exprNotExpression,
      'only a bare expression is allowed (no FROM, WHERE, GROUP BY, LIMIT, WITH…)',
    );
  const list = select['select_list'] as AstNode[] | undefined;
  if (!list || list.length !== 1)
    return fail(
      ViewErrorCode.exprNotExpression,
      'exactly one expression is allowed (no commas at the top level)',
    );
  const root = list[0]!;
  if (root['alias'] !== '')
    return fail(ViewErrorCode.exprNotExpression, 'an alias (AS …) is not allowed here');

  const used: string[] = [];
  const denied: string[] = [];
  let nodes = 0;
  const walk = (value: unknown, depth: number): void => {
    if (depth > MAX_DEPTH) fail(ViewErrorCode.exprNodeDenied, 'the expression nests too deeply');
    if (Array.isArray(value)) {
      for (const v of value) walk(v, depth + 1);
      return;
    }
    if (value === null || typeof value !== 'object') return;
    const node = value as AstNode;
    if (typeof node.class === 'string') {
      if (++nodes > MAX_NODES) fail(ViewErrorCode.exprNodeDenied, 'the expression is too large');
      checkNode(node);
    }
    for (const v of Object.values(node)) walk(v, depth + 1);
  };
  const checkNode = (node: AstNode): void => {
    const cls = node.class ?? '';
    switch (cls) {
      case 'SUBQUERY':
        return fail(ViewErrorCode.exprSubquery, 'subqueries are not allowed');
      case 'WINDOW':
        return fail(
          ViewErrorCode.exprWindow,
          `window function ${String(node['function_name'])}() is not allowed`,
        );
      case 'COLUMN_REF': {
        const names = node['column_names'] as string[];
        if (names.length !== 1)
          return fail(
            ViewErrorCode.exprUnknownColumn,
            `'${names.join('.')}': only the view's own columns, unqualified (for a STRUCT field use struct_extract)`,
          );
        const name = names[0]!.toLowerCase();
        if (!columns.has(name))
          return fail(
            ViewErrorCode.exprUnknownColumn,
            `unknown column '${names[0]}' (columns: ${[...columns].join(', ')})`,
          );
        if (!used.includes(name)) used.push(name);
        return;
      }
      case 'FUNCTION': {
        const name = String(node['function_name']).toLowerCase();
        const schema = typeof node['schema'] === 'string' ? node['schema'] : '';
        const catalog = typeof node['catalog'] === 'string' ? node['catalog'] : '';
        if (catalog !== '' || (schema !== '' && schema !== 'main'))
          return fail(ViewErrorCode.exprFunctionDenied, `qualified function name '${name}' is not allowed`);
        const filter = node['filter'];
        const orders = (node['order_bys'] as { orders?: unknown[] } | undefined)?.orders ?? [];
        if (node['distinct'] === true || filter != null || orders.length > 0 || node['export_state'] === true)
          return fail(ViewErrorCode.exprAggregate, `aggregate modifiers on ${name}() are not allowed`);
        if (!ALLOWED_FUNCTIONS.has(name)) denied.push(name);
        else checkWidths(name, (node['children'] as AstNode[] | undefined) ?? []);
        return;
      }
      case 'OPERATOR': {
        const type = String(node.type);
        if (!ALLOWED_OPERATOR_TYPES.has(type))
          return fail(ViewErrorCode.exprNodeDenied, `operator ${type} is not allowed`);
        return;
      }
      case 'STAR':
        return fail(ViewErrorCode.exprNodeDenied, '* and COLUMNS(…) are not allowed');
      case 'LAMBDA':
      case 'LAMBDA_REF':
        return fail(ViewErrorCode.exprNodeDenied, 'lambdas are not allowed');
      case 'PARAMETER':
        return fail(ViewErrorCode.exprNodeDenied, 'parameters ($1, ?) are not allowed');
      case 'POSITIONAL_REFERENCE':
        return fail(ViewErrorCode.exprNodeDenied, 'positional references (#1) are not allowed');
      default:
        if (!PLAIN_CLASSES.has(cls)) return fail(ViewErrorCode.exprNodeDenied, `${cls} is not allowed`);
    }
  };
  const checkWidths = (name: string, args: readonly AstNode[]): void => {
    if (GROWTH_FUNCTIONS.has(name) && !readsColumn(args[0]))
      fail(
        ViewErrorCode.exprWidth,
        `${name}(): its first argument must read a column (over a constant it is evaluated when the view loads, where its result can grow without bound)`,
      );
    const at = WIDTH_ARGUMENTS[name];
    if (at !== undefined) {
      const c = constantOf(args[at]);
      const n = typeof c?.value === 'number' ? c.value : typeof c?.value === 'string' ? Number(c.value) : NaN;
      if (!Number.isInteger(n) || n < 0 || n > EXPR_WIDTH_MAX)
        fail(
          ViewErrorCode.exprWidth,
          `${name}(): argument ${at + 1} must be a constant integer 0..${EXPR_WIDTH_MAX} (a wider or per-row length can exhaust the node's memory)`,
        );
    }
    const kind = FORMAT_FUNCTIONS[name];
    if (kind !== undefined) {
      const c = constantOf(args[0]);
      if (c === undefined || typeof c.value !== 'string')
        return fail(
          ViewErrorCode.exprWidth,
          `${name}(): the format string must be a constant (its widths are checked when the view loads)`,
        );
      const widths = formatWidths(kind, c.value);
      if (typeof widths === 'string')
        return fail(
          ViewErrorCode.exprWidth,
          `${name}(): ${widths} is not allowed; write the width in the format`,
        );
      const wide = widths.find((w) => w > EXPR_WIDTH_MAX);
      if (wide !== undefined)
        fail(ViewErrorCode.exprWidth, `${name}(): width or precision ${wide} is over ${EXPR_WIDTH_MAX}`);
    }
  };
  walk(root, 0);

  // Denied functions are reported after the walk so a subquery or an unknown
  // column (the more specific problem) wins over "function not allowed".
  const firstDenied = denied[0];
  if (firstDenied !== undefined) {
    const reason = DENIED_REASONS.find(([re]) => re.test(firstDenied))?.[1];
    const kind = await functionKind(conn, firstDenied);
    if (kind === 'aggregate')
      return fail(ViewErrorCode.exprAggregate, `aggregate function ${firstDenied}() is not allowed`);
    if (kind === 'table' || kind === 'table_macro')
      return fail(ViewErrorCode.exprFunctionDenied, `table function ${firstDenied}() is not allowed`);
    return fail(
      ViewErrorCode.exprFunctionDenied,
      `function ${firstDenied}() is not allowed${reason ? `: it ${reason}` : ' (not in the scalar allowlist)'}`,
    );
  }

  const rendered = await render(conn, `SELECT ${text}`);
  // Fail closed: the rendering must parse back to the very tree that was
  // checked (source positions aside), or it is not spliced anywhere.
  const reparsed = rendered.startsWith('SELECT ') ? await serialize(conn, rendered) : undefined;
  if (
    !reparsed ||
    reparsed.error ||
    stripLocations(reparsed.statements) !== stripLocations(parsed.statements)
  )
    return fail(ViewErrorCode.exprSyntax, 'the expression does not round-trip through the parser');
  return { sql: rendered.slice('SELECT '.length), columns: used, root };
}

function stripLocations(value: unknown): string {
  return JSON.stringify(value, (key, v: unknown) => (key === 'query_location' ? undefined : v));
}
