// The view spec: schema, type grammar, JSONPath subset, name rules, hash.
// Pure functions, no DuckDB.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Value } from '@sinclair/typebox/value';
import {
  ViewSpecSchema,
  parseViewYaml,
  validateView,
  viewSpecHash,
  viewToPlain,
  ViewError,
} from '../src/views/index.ts';
import { parseType, renderType } from '../src/views/types.ts';
import { parseJsonPath, renderDuckDbPath, renderJsonPath } from '../src/views/jsonpath.ts';
import { PAGE_VIEWS_YAML } from './fixtures/page-views.ts';

const PAGE_VIEWS = PAGE_VIEWS_YAML;

function rejects(fn: () => unknown, code: string, path: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ViewError, `expected ViewError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.path, path, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

void test('the DESIGN §6 example parses and normalises', () => {
  const v = parseViewYaml(PAGE_VIEWS);
  assert.equal(v.name, 'page_views');
  assert.equal(v.source, 'payload');
  assert.deepEqual(
    v.columns.map((c) => [c.name, c.type, c.path, c.required]),
    [
      ['event', 'VARCHAR', '$.event', true],
      ['user_id', 'VARCHAR', '$.user', false],
      ['viewed_at', 'TIMESTAMP', '$.ts', true],
    ],
  );
  assert.equal(v.filter, "event = 'page_view'");
  assert.deepEqual(v.partitioning, [{ expression: "date_trunc('day', viewed_at)", alias: 'dt' }]);
  // The exported schema accepts the canonical plain form (what the operator's CRD carries).
  assert.ok(Value.Check(ViewSpecSchema, viewToPlain(v)));
});

void test('unknown keys are rejected with their path', () => {
  rejects(() => parseViewYaml(PAGE_VIEWS + 'extra: 1\n'), 'spec_invalid', 'extra', /unknown key/);
  rejects(
    () => validateView({ name: 'v', columns: [{ name: 'a', type: 'VARCHAR', path: '$.a', nullable: true }] }),
    'spec_invalid',
    'columns[0].nullable',
    /unknown key/,
  );
  rejects(
    () =>
      validateView({
        name: 'v',
        columns: [{ name: 'a', type: 'VARCHAR', path: '$.a' }],
        partitioning: [{ expression: 'a', alias: 'p', order: 1 }],
      }),
    'spec_invalid',
    'partitioning[0].order',
  );
});

void test('schema errors name the field', () => {
  rejects(() => validateView({ columns: [] }), 'spec_invalid', 'name');
  rejects(() => validateView({ name: 'v', columns: [] }), 'spec_invalid', 'columns');
  rejects(() => validateView({ name: 'Bad-Name', columns: [] }), 'spec_invalid', 'name');
  rejects(
    () => validateView({ name: 'v', columns: [{ name: 'a b', type: 'VARCHAR', path: '$.a' }] }),
    'spec_invalid',
    'columns[0].name',
  );
  rejects(
    () =>
      validateView({ name: 'v', source: 'topic', columns: [{ name: 'a', type: 'VARCHAR', path: '$.a' }] }),
    'spec_invalid',
    'source',
  );
  rejects(() => validateView([1, 2]), 'spec_invalid', '');
  rejects(() => parseViewYaml('name: [unclosed'), 'yaml_invalid', '');
  rejects(() => parseViewYaml('a: 1\na: 2\n'), 'yaml_invalid', '');
});

void test('names: reserved prefix, duplicates, alias clashing with a column', () => {
  const col = (name: string) => ({ name, type: 'VARCHAR', path: '$.a' });
  rejects(() => validateView({ name: 'v', columns: [col('__x')] }), 'name_conflict', 'columns[0].name');
  rejects(
    () => validateView({ name: 'v', columns: [col('a'), col('a')] }),
    'name_conflict',
    'columns[1].name',
  );
  rejects(
    () => validateView({ name: 'v', columns: [col('a')], partitioning: [{ expression: 'a', alias: 'a' }] }),
    'name_conflict',
    'partitioning[0].alias',
  );
  rejects(
    () =>
      validateView({
        name: 'v',
        columns: [col('a')],
        partitioning: [
          { expression: 'a', alias: 'p' },
          { expression: 'a', alias: 'p' },
        ],
      }),
    'name_conflict',
    'partitioning[1].alias',
  );
});

void test('types: the allowlist, canonical rendering, nesting', () => {
  const cases: [string, string][] = [
    ['varchar', 'VARCHAR'],
    ['BOOLEAN', 'BOOLEAN'],
    ['TinyInt', 'TINYINT'],
    ['UBIGINT', 'UBIGINT'],
    ['HUGEINT', 'HUGEINT'],
    ['DECIMAL(18, 2)', 'DECIMAL(18,2)'],
    ['TIMESTAMPTZ', 'TIMESTAMPTZ'],
    ['JSON', 'JSON'],
    ['LIST(INTEGER)', 'INTEGER[]'],
    ['VARCHAR[]', 'VARCHAR[]'],
    ['DOUBLE[][]', 'DOUBLE[][]'],
    ['STRUCT(a INTEGER, b LIST(VARCHAR))', 'STRUCT("a" INTEGER, "b" VARCHAR[])'],
    ['STRUCT(x STRUCT(y DATE))[]', 'STRUCT("x" STRUCT("y" DATE))[]'],
  ];
  for (const [input, canonical] of cases) assert.equal(renderType(parseType(input)), canonical, input);
  for (const bad of [
    'TEXT',
    'INT',
    'BLOB',
    'MAP(VARCHAR, INTEGER)',
    'UNION(a INTEGER)',
    'VARCHAR; DROP TABLE x',
    'DECIMAL(39,2)',
    'DECIMAL(4,5)',
    'DECIMAL',
    'STRUCT()',
    'STRUCT(A INTEGER)',
    'STRUCT(a INTEGER, a VARCHAR)',
    'LIST(INTEGER',
    'INTEGER INTEGER',
    'INTEGER[][][][][][][][][]',
  ]) {
    assert.throws(
      () => parseType(bad),
      (e: unknown) => e instanceof ViewError && e.code === 'type_invalid',
      bad,
    );
  }
  rejects(
    () => validateView({ name: 'v', columns: [{ name: 'a', type: 'BLOB', path: '$.a' }] }),
    'type_invalid',
    'columns[0].type',
    /not allowed/,
  );
});

void test('JSONPath subset: keys, quoted keys, indexes; nothing that matches several values', () => {
  const cases: [string, string, string][] = [
    ['$', '$', '$'],
    ['$.a.b', '$.a.b', '$."a"."b"'],
    ['$.items[0]', '$.items[0]', '$."items"[0]'],
    ['$["user-agent"]', '$.user-agent', '$."user-agent"'],
    ["$['a b'].c", '$["a b"].c', '$."a b"."c"'],
    ['$["a.b"]', '$["a.b"]', '$."a.b"'],
    ['$.$ref', '$.$ref', '$."$ref"'],
  ];
  for (const [input, canonical, duck] of cases) {
    const segs = parseJsonPath(input);
    assert.equal(renderJsonPath(segs), canonical, input);
    assert.equal(renderDuckDbPath(segs), duck, input);
  }
  for (const bad of [
    'a.b',
    '$.*',
    '$..a',
    '$.a[*]',
    '$.a[-1]',
    '$["a"b"]',
    '$.a b',
    '$[1:2]',
    '$.a[?(@.x)]',
    '$["a\\"b"]',
  ]) {
    assert.throws(
      () => parseJsonPath(bad),
      (e: unknown) => e instanceof ViewError && e.code === 'path_invalid',
      bad,
    );
  }
});

void test('defaults: not on required columns; YAML keeps dates as strings', () => {
  rejects(
    () =>
      validateView({
        name: 'v',
        columns: [{ name: 'a', type: 'INTEGER', path: '$.a', required: true, default: 1 }],
      }),
    'default_invalid',
    'columns[0].default',
  );
  const v = parseViewYaml('name: v\ncolumns:\n  - { name: d, type: DATE, path: $.d, default: 2026-01-01 }\n');
  assert.equal(v.columns[0]!.default, '2026-01-01');
});

void test('viewSpecHash is stable across spellings and changes with meaning', () => {
  const a = parseViewYaml(PAGE_VIEWS);
  const reordered = parseViewYaml(`
partitioning: [{ alias: dt, expression: "date_trunc('day', viewed_at)" }]
filter: "event = 'page_view'"
columns:
  - { path: "$['event']", type: varchar, name: event, required: true }
  - { name: user_id, type: VARCHAR, path: $.user, required: false }
  - { name: viewed_at, type: timestamp, path: $.ts, required: true }
name: page_views
`);
  assert.match(viewSpecHash(a), /^[0-9a-f]{64}$/);
  assert.equal(viewSpecHash(a), viewSpecHash(reordered));
  const changed = parseViewYaml(PAGE_VIEWS.replace('$.user', '$.user_id'));
  assert.notEqual(viewSpecHash(a), viewSpecHash(changed));
  const filterChanged = parseViewYaml(PAGE_VIEWS.replace("'page_view'", "'click'"));
  assert.notEqual(viewSpecHash(a), viewSpecHash(filterChanged));
});
