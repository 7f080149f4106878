// The second fence: even SQL that never went through expr.ts (a compiler bug,
// an expression that slipped through) cannot leave the scratch folder, turn
// the sandbox off, or load code.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { compileView, createParquetDb, materializeSegment, validateView } from '../src/views/index.ts';
import type { CompiledView, ParquetDb } from '../src/views/index.ts';

let scratch: string;
let outside: string;
let db: ParquetDb;

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'lf-sandbox-'));
  outside = await mkdtemp(path.join(tmpdir(), 'lf-outside-'));
  await writeFile(path.join(outside, 'secret.csv'), 'a,b\n1,2\n');
  db = await createParquetDb({ scratchDir: scratch, memoryLimitBytes: 64 << 20, threads: 1 });
});

after(async () => {
  await db.close();
  await rm(scratch, { recursive: true, force: true });
  await rm(outside, { recursive: true, force: true });
});

const run = (sql: string) => db.withConnection((c) => c.run(sql));

void test('files outside the scratch folder cannot be read or written', async () => {
  for (const sql of [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    `SELECT * FROM read_csv('${outside}/secret.csv')`,
    "SELECT * FROM glob('/etc/*')",
    `COPY (SELECT 1 AS x) TO '${outside}/out.csv'`,
    `COPY (SELECT 1 AS x) TO '${scratch}/../escape.csv'`,
    `ATTACH '${outside}/x.duckdb' AS x`,
  ]) {
    await assert.rejects(run(sql), /Permission Error|disabled|not allowed/i, sql);
  }
  await assert.rejects(readFile(path.join(outside, 'out.csv')), /ENOENT/);
});

void test('the sandbox cannot be switched off, widened, or extended', async () => {
  for (const sql of [
    'SET enable_external_access = true',
    "SET allowed_directories = ['/']",
    "SET temp_directory = '/tmp'",
    'SET threads = 64',
    "SET memory_limit = '64GB'",
    'RESET enable_external_access',
    'INSTALL httpfs',
    'LOAD httpfs',
    "SELECT getenv('HOME')",
  ]) {
    await assert.rejects(run(sql), Error, sql);
  }
});

void test('inside the scratch folder, reading and writing work', async () => {
  await run(`COPY (SELECT 42 AS x) TO '${scratch}/ok.parquet' (FORMAT parquet)`);
  const n = await db.withConnection(async (c) =>
    (await c.runAndReadAll(`SELECT x FROM read_parquet('${scratch}/ok.parquet')`)).getRows(),
  );
  assert.deepEqual(n, [[42]]);
});

void test('a view whose SQL reads /etc/passwd (as if an expression had slipped through) fails: the view writes nothing (its rows go to the DLQ as view_failed)', async () => {
  const honest = await db.withConnection((c) =>
    compileView(
      c,
      validateView({
        name: 'evil',
        columns: [{ name: 'e', type: 'VARCHAR', path: '$.e' }],
        filter: "e = 'x'",
      }),
    ),
  );
  // The typed column's value is where a leak would show: the file's content
  // would be written into the view's Parquet if the read were allowed.
  const column = '__lf_r0 AS "e"';
  assert.ok(honest.sql.includes(column));
  const records = [{ seq: 1n, ingestTimeMicros: 0n, payload: Buffer.from('{"e":"x"}') }];
  for (const [jobId, replacement, error] of [
    ['evil1', `(SELECT content FROM read_text('/etc/passwd')) AS "e"`, /Permission Error/],
    [
      'evil2',
      `(SELECT string_agg(a, ',') FROM read_csv('${outside}/secret.csv')) AS "e"`,
      /Permission Error/,
    ],
    ['evil3', `getenv('HOME') AS "e"`, /getenv/],
  ] as const) {
    const tampered: CompiledView = { ...honest, sql: honest.sql.replace(column, replacement) };
    // A view's failure is its own (docs/views.md "Record data never stalls
    // delivery"): no view file, every record in its DLQ as view_failed, the
    // reason is DuckDB's refusal — and nothing of the file.
    const out = await materializeSegment(db, { jobId, records, views: [tampered] });
    const v = out.views[0]!;
    assert.match(v.failed ?? '', error, jobId);
    assert.doesNotMatch(v.failed ?? '', /root:/, jobId);
    assert.deepEqual([v.files.length, v.viewRows, v.dlqRows, v.dlqByCode.view_failed], [0, 0, 1, 1], jobId);
    await out.cleanup();
  }
  // A failed job leaves no scratch folder behind.
  assert.deepEqual(await readdir(path.join(scratch, 'jobs')), []);
});

void test('a compile-only instance (no scratch folder) reaches no file at all', async () => {
  const compileOnly = await createParquetDb({ memoryLimitBytes: 32 << 20, threads: 1 });
  try {
    await assert.rejects(
      compileOnly.withConnection((c) => c.run(`COPY (SELECT 1) TO '${scratch}/jobs/x.csv'`)),
      /Permission Error/,
    );
    await assert.rejects(
      materializeSegment(compileOnly, { jobId: 'x', records: [], views: [] }),
      /no scratch folder/,
    );
  } finally {
    await compileOnly.close();
  }
});
