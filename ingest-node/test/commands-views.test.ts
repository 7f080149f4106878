// `landfall views check`: validation, the compiled SQL, a sample's outcome,
// exit codes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { main } from '../src/cli.ts';
import { run, sampleRecords } from '../src/commands/views.ts';
import { PAGE_VIEWS_YAML } from './fixtures/page-views.ts';

const PAGE_VIEWS = PAGE_VIEWS_YAML;

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'lf-views-check-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function check(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await run(args, { out: (t) => (out += t), err: (t) => (err += t), env: {} });
  return { code, out, err };
}

async function file(name: string, text: string): Promise<string> {
  const p = path.join(dir, name);
  await writeFile(p, text);
  return p;
}

void test('a valid view: columns, filter, partitioning and the compiled SQL; exit 0', async () => {
  const r = await check('check', await file('pv.yaml', PAGE_VIEWS));
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^page_views: valid\n {2}spec sha256: [0-9a-f]{64}\n/);
  assert.match(r.out, /viewed_at {2}TIMESTAMP {2}\$\.ts {2}required/);
  assert.match(r.out, /filter: \("event" = 'page_view'\)/);
  assert.match(r.out, /partitioning: dt = date_trunc\('day', viewed_at\)/);
  assert.match(r.out, /compiled SQL:\n {4}WITH __lf_src AS/);
  const quiet = await check('check', path.join(dir, 'pv.yaml'), '--quiet-sql');
  assert.doesNotMatch(quiet.out, /compiled SQL/);
});

void test('a sample: rows in, view rows per partition, filtered, DLQ per code with the first reasons', async () => {
  const sample = await file(
    'sample.ndjson',
    [
      '{"event":"page_view","user":"u1","ts":"2026-11-26T10:00:00Z"}',
      '{"event":"click"}',
      '',
      '{"event":"page_view","ts":"nope"}\r',
      'garbage',
      '{"event":"page_view","user":"u2","ts":"2026-11-27T10:00:00Z"}',
      '{"ts":"2026-11-27T10:00:00Z"}',
    ].join('\n'),
  );
  const r = await check('check', path.join(dir, 'pv.yaml'), '--sample', sample, '--quiet-sql');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /sample: 6 rows in → 2 view, 1 filtered, 3 DLQ/);
  assert.match(r.out, /view dt=2026-11-26\/: 1 rows\n {4}view dt=2026-11-27\/: 1 rows/);
  assert.match(r.out, /DLQ by code: invalid_json 1, missing_required 1, cast_failed 1/);
  // Line numbers count the blank line, like an ingest request's.
  assert.match(r.out, /4: cast_failed viewed_at: value nope at \$\.ts does not convert to TIMESTAMP/);
  assert.match(r.out, /5: invalid_json: payload is not valid JSON/);
  assert.match(r.out, /7: missing_required event: /);
});

void test('invalid views exit 1 with the code and the spec path; a list file checks every view', async () => {
  const malicious = await file(
    'evil.yaml',
    PAGE_VIEWS.replace("event = 'page_view'", "read_text('/etc/passwd') IS NOT NULL"),
  );
  let r = await check('check', malicious);
  assert.equal(r.code, 1);
  assert.match(r.out, /^page_views: invalid: expr_function_denied: filter: table function read_text\(\)/);
  r = await check('check', await file('broken.yaml', 'name: [oops'));
  assert.equal(r.code, 1);
  assert.match(r.out, /invalid: yaml_invalid/);
  const list = await file(
    'list.json',
    JSON.stringify([
      { name: 'a', columns: [{ name: 'x', type: 'INTEGER', path: '$.x' }] },
      { name: 'b', columns: [{ name: 'x', type: 'INT', path: '$.x' }] },
    ]),
  );
  r = await check('check', list, '--quiet-sql');
  assert.equal(r.code, 1);
  assert.match(r.out, /^a: valid/m);
  assert.match(r.out, /^b: invalid: type_invalid: columns\[0\]\.type/m);
});

void test('usage errors exit 2; `landfall views` is a CLI command', async () => {
  assert.equal((await check()).code, 2);
  assert.equal((await check('lint', 'x.yaml')).code, 2);
  assert.equal((await check('check')).code, 2);
  assert.equal((await check('check', path.join(dir, 'pv.yaml'), '--show', '-1')).code, 2);
  let out = '';
  const code = await main(['views', '--help'], {
    out: (t) => (out += t),
    err: () => {},
    env: {},
    isTTY: false,
  });
  assert.equal(code, 0);
  assert.match(out, /landfall views check FILE/);
  out = '';
  await main(['--help'], { out: (t) => (out += t), err: () => {}, env: {}, isTTY: false });
  assert.match(out, /views +views check FILE/);
  assert.match(out, /reprocess +rebuild a view's Parquet/);
});

void test('sampleRecords: one payload a line, \\r\\n tolerated, blank lines skipped, seq = line number', () => {
  const recs = sampleRecords(Buffer.from('a\r\n\n  \nb\nc'), 7n);
  assert.deepEqual(
    recs.map((r) => [r.seq, Buffer.from(r.payload).toString(), r.ingestTimeMicros]),
    [
      [1n, 'a', 7n],
      [4n, 'b', 7n],
      [5n, 'c', 7n],
    ],
  );
});
