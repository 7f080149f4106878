// User expressions: parsed by DuckDB, checked against the allowlists, and
// bound against the view's typed columns. A compile-only instance (no scratch
// folder), as the operator uses.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ALLOWED_FUNCTIONS,
  ViewError,
  checkExpression,
  compileView,
  createParquetDb,
  validateView,
} from '../src/views/index.ts';
import type { ParquetDb, ViewSpec } from '../src/views/index.ts';

let db: ParquetDb;
before(async () => {
  db = await createParquetDb({ memoryLimitBytes: 64 << 20, threads: 1 });
});
after(async () => {
  await db.close();
});

const COLUMNS = new Set(['event', 'user_id', 'viewed_at', 'n']);
const check = (text: string) => db.withConnection((c) => checkExpression(c, text, COLUMNS, 'filter'));

function view(extra: Record<string, unknown>): ViewSpec {
  return validateView({
    name: 'v',
    columns: [
      { name: 'event', type: 'VARCHAR', path: '$.event', required: true },
      { name: 'user_id', type: 'VARCHAR', path: '$.user' },
      { name: 'viewed_at', type: 'TIMESTAMP', path: '$.ts', required: true },
      { name: 'n', type: 'INTEGER', path: '$.n' },
    ],
    ...extra,
  });
}

async function rejects(p: Promise<unknown>, code: string, message?: RegExp, path = 'filter'): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof ViewError, `expected ViewError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.path, path);
    if (message) assert.match(err.message, message);
    return true;
  });
}

// [input, code, the offending piece the message must name]
const MALICIOUS: [string, string, RegExp][] = [
  ["read_csv('/etc/passwd')", 'expr_function_denied', /read_csv/],
  ["read_text('/etc/passwd') IS NOT NULL", 'expr_function_denied', /read_text/],
  ["glob('/etc/*') IS NOT NULL", 'expr_function_denied', /glob/],
  ["getenv('HOME') = ''", 'expr_function_denied', /getenv/],
  ["current_setting('threads') = 1", 'expr_function_denied', /current_setting/],
  ["query('SELECT 1') IS NULL", 'expr_function_denied', /query/],
  ["query_table('x') IS NULL", 'expr_function_denied', /query_table/],
  ["getvariable('x') IS NULL", 'expr_function_denied', /getvariable/],
  ['pragma_version() IS NULL', 'expr_function_denied', /pragma_version/],
  ["error('boom')", 'expr_function_denied', /error/],
  ['now() > viewed_at', 'expr_function_denied', /now.*not deterministic/],
  ['random() < 0.5', 'expr_function_denied', /random/],
  ["main.read_csv('/etc/passwd') IS NULL", 'expr_function_denied', /read_csv/],
  ["system.main.lower(event) = 'x'", 'expr_function_denied', /qualified/],
  ['(SELECT 1) = 1', 'expr_subquery', /subquer/],
  ['(SELECT 1)', 'expr_subquery', /subquer/],
  ["event IN (SELECT event FROM read_csv('/etc/passwd'))", 'expr_subquery', /subquer/],
  ['EXISTS (SELECT 1)', 'expr_subquery', /subquer/],
  ['1; DROP TABLE x', 'expr_not_expression', /statement/],
  ["true; COPY (SELECT 1) TO '/tmp/x.csv'", 'expr_not_expression', /statement/],
  ["true; SELECT * FROM read_csv('/etc/passwd')", 'expr_not_expression', /statements/],
  ["COPY x TO '/tmp/y'", 'expr_syntax', /syntax/],
  ["true FROM read_csv('/etc/passwd')", 'expr_not_expression', /bare expression/],
  ['true WHERE false', 'expr_not_expression', /bare expression/],
  ['true LIMIT 1', 'expr_not_expression', /bare expression/],
  ['event AS x', 'expr_not_expression', /alias/],
  ['event, user_id', 'expr_not_expression', /exactly one/],
  ['nope = 1', 'expr_unknown_column', /nope/],
  ['seq > 1', 'expr_unknown_column', /seq/],
  ['payload IS NULL', 'expr_unknown_column', /payload/],
  ['t.event = 1', 'expr_unknown_column', /t\.event/],
  ['current_timestamp > viewed_at', 'expr_unknown_column', /current_timestamp/],
  ['sum(n) > 1', 'expr_aggregate', /sum/],
  ['count(*) > 1', 'expr_aggregate', /count_star/],
  ['row_number() OVER () = 1', 'expr_window', /row_number/],
  ["lower(event) FILTER (WHERE true) = 'x'", 'expr_aggregate', /lower/],
  ['*', 'expr_node_denied', /\*/],
  ['COLUMNS(*) IS NULL', 'expr_node_denied', /\*/],
  ['len(list_transform([1], x -> x + 1)) = 1', 'expr_node_denied', /lambda/],
  ['$1', 'expr_node_denied', /parameter/],
  ['#1', 'expr_node_denied', /positional/],
  ['1 /* unterminated', 'expr_syntax', /comment/],
];

void test('malicious and out-of-bounds expressions are rejected with a code naming the piece', async () => {
  for (const [input, code, message] of MALICIOUS) {
    await rejects(check(input), code, message).catch((err: unknown) => {
      throw new Error(`${input}: ${(err as Error).message}`);
    });
  }
});

void test('ordinary expressions pass and are re-rendered by DuckDB (comments gone)', async () => {
  const ok: [string, string[]][] = [
    ["event = 'page_view'", ['event']],
    ["event = 'page_view' -- only page views", ['event']],
    ["date_trunc('day', viewed_at)", ['viewed_at']],
    ["CASE WHEN event LIKE 'page%' THEN 1 ELSE 0 END = 1", ['event']],
    ['CAST(user_id AS INTEGER) > 5', ['user_id']],
    ["coalesce(user_id, 'anon') <> ''", ['user_id']],
    ['extract(year FROM viewed_at) = 2026', ['viewed_at']],
    ["viewed_at >= TIMESTAMP '2026-01-01' AND viewed_at < TIMESTAMP '2027-01-01'", ['viewed_at']],
    ["event IN ('a', 'b') OR NOT (user_id IS NULL)", ['event', 'user_id']],
    ["regexp_matches(event, '^page') AND n BETWEEN 1 AND 10", ['event', 'n']],
    ['viewed_at + INTERVAL 1 DAY > viewed_at', ['viewed_at']],
    ["EVENT = 'x'", ['event']],
    ["strftime(viewed_at, '%Y/%m') || '/' || lower(\"event\")", ['viewed_at', 'event']],
    ["TRY_CAST(user_id AS BIGINT) % 16 = 0 AND event ILIKE 'P%'", ['user_id', 'event']],
  ];
  for (const [input, columns] of ok) {
    const checked = await check(input);
    assert.deepEqual(checked.columns, columns, input);
    assert.ok(!checked.sql.includes('--'), checked.sql);
  }
  assert.equal((await check("event = 'page_view' /* c */ -- x")).sql, `("event" = 'page_view')`);
});

void test('every allowlisted function exists in this DuckDB as a non-volatile scalar function', async () => {
  const rows = await db.withConnection(async (c) => {
    const r = await c.runAndReadAll(
      `SELECT function_name, list(DISTINCT function_type), list(DISTINCT stability)
       FROM duckdb_functions() GROUP BY function_name`,
    );
    return r.getRowsJS() as [string, string[], string[]][];
  });
  const byName = new Map(rows.map(([name, types, stability]) => [name, { types, stability }]));
  const problems: string[] = [];
  for (const name of ALLOWED_FUNCTIONS) {
    const f = byName.get(name);
    if (!f) problems.push(`${name}: missing`);
    else if (!f.types.every((t) => t === 'scalar' || t === 'macro'))
      problems.push(`${name}: ${f.types.join('/')}`);
    else if (f.stability.includes('VOLATILE')) problems.push(`${name}: volatile`);
  }
  assert.deepEqual(problems, []);
});

void test('compileView: binder and type errors point at the spec field', async () => {
  const compile = (v: ViewSpec) => db.withConnection((c) => compileView(c, v));
  await rejects(compile(view({ filter: 'viewed_at > 1' })), 'expr_bind', /TIMESTAMP/);
  await rejects(compile(view({ filter: 'lower(event)' })), 'expr_type', /BOOLEAN.*VARCHAR/);
  await rejects(compile(view({ filter: 'nope' })), 'expr_unknown_column', /nope/);
  await rejects(
    compile(view({ partitioning: [{ expression: "read_csv('/etc/passwd')", alias: 'p' }] })),
    'expr_function_denied',
    /read_csv/,
    'partitioning[0].expression',
  );
  await rejects(
    compile(view({ partitioning: [{ expression: '[n, n]', alias: 'p' }] })),
    'expr_type',
    /scalar/,
    'partitioning[0].expression',
  );
  await rejects(
    compile(
      validateView({ name: 'v', columns: [{ name: 'n', type: 'INTEGER', path: '$.n', default: 'seven' }] }),
    ),
    'default_invalid',
    /seven/,
    'columns[0].default',
  );
  const ok = await compile(view({ filter: "event = 'page_view'" }));
  assert.match(
    ok.sql,
    /json_extract_string\(__lf_text, \['\$\."event"', '\$\."user"', '\$\."ts"', '\$\."n"'\]\)/,
  );
  assert.equal(ok.filterSql, `("event" = 'page_view')`);
});
