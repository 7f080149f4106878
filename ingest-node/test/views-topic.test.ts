// `$topic`: a view column that takes the record's MQTT topic instead of a
// payload value (NULL for HTTP records). Materialised over a segment that
// mixes MQTT and HTTP records, read back with hyparquet (a reader that shares
// no code with DuckDB), with and without raw Parquet in the same job.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import {
  compileView,
  createParquetDb,
  materializeSegment,
  parseViewYaml,
  validateView,
  ViewError,
} from '../src/views/index.ts';
import type { ParquetDb, SegmentRecord } from '../src/views/index.ts';

const READINGS = `
name: readings
source: payload
columns:
  - { name: topic, type: VARCHAR, path: $topic, required: true }
  - { name: temp,  type: DOUBLE,  path: $.t }
filter: "topic LIKE 'sensors/%'"
`;

// Optional: HTTP records keep a NULL topic.
const ANY_SOURCE = `
name: any_source
source: payload
columns:
  - { name: topic, type: VARCHAR, path: $topic }
  - { name: id,    type: INTEGER, path: $.id, required: true }
`;

// Only $topic columns: the payload must still be JSON.
const TOPICS_ONLY = `
name: topics_only
source: payload
columns:
  - { name: topic, type: VARCHAR, path: $topic }
`;

const T0 = BigInt(Date.UTC(2026, 10, 26, 9)) * 1000n;
const recs: [string, string | undefined][] = [
  ['{"id":1,"t":21.5}', 'sensors/a/temp'],
  ['{"id":2,"t":19}', 'sensors/b/temp'],
  ['{"id":3,"t":1013}', 'plant/1/pressure'], // filtered
  ['{"id":4,"t":22}', undefined], // HTTP: missing_required topic
  ['not json', 'sensors/c/temp'], // invalid_json
  ['{"id":6}', 'sensors/ü/temp'],
];
const records: SegmentRecord[] = recs.map(([p, topic], i) => ({
  seq: 500n + BigInt(i),
  ingestTimeMicros: T0 + BigInt(i) * 1_000_000n,
  payload: Buffer.from(p),
  ...(topic !== undefined ? { topic } : {}),
}));

let scratch: string;
let db: ParquetDb;

async function readParquet(file: string): Promise<Record<string, unknown>[]> {
  const rows = (await parquetReadObjects({
    file: await asyncBufferFromFile(file),
    compressors,
  })) as Record<string, unknown>[];
  return rows.map((r) =>
    Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v === undefined ? null : v])),
  );
}

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'lf-views-topic-'));
  db = await createParquetDb({ scratchDir: scratch, memoryLimitBytes: 256 << 20, threads: 2 });
});
after(async () => {
  await db.close();
  await rm(scratch, { recursive: true, force: true });
});

for (const raw of [false, true]) {
  void test(`$topic columns take the MQTT topic, NULL for HTTP records (raw Parquet ${raw ? 'on' : 'off'})`, async () => {
    const views = await db.withConnection(async (c) => [
      await compileView(c, parseViewYaml(READINGS)),
      await compileView(c, parseViewYaml(ANY_SOURCE)),
      await compileView(c, parseViewYaml(TOPICS_ONLY)),
    ]);
    assert.deepEqual(
      views.map((v) => v.readsTopic),
      [true, true, true],
    );
    const out = await materializeSegment(db, {
      jobId: `ep-topic-${raw ? 'raw' : 'noraw'}`,
      records,
      views,
      ...(raw ? { raw: { endpoint: 'edge', instance: 'edge-0' } } : {}),
    });
    try {
      const [readings, anySource, topicsOnly] = out.views;
      assert.deepEqual(await readParquet(readings!.files[0]!.localPath), [
        { topic: 'sensors/a/temp', temp: 21.5 },
        { topic: 'sensors/b/temp', temp: 19 },
        { topic: 'sensors/ü/temp', temp: null },
      ]);
      assert.equal(readings!.filteredRows, 1);
      assert.equal(readings!.dlqByCode.missing_required, 1);
      assert.equal(readings!.dlqByCode.invalid_json, 1);
      const dlq = await readParquet(readings!.dlqFiles[0]!.localPath);
      assert.deepEqual(
        dlq.map((r) => [r['seq'], r['error_code'], r['column'], r['error_message']]),
        [
          [503n, 'missing_required', 'topic', 'required value at $topic is missing or null'],
          [504n, 'invalid_json', null, 'payload is not valid JSON'],
        ],
      );

      assert.deepEqual(await readParquet(anySource!.files[0]!.localPath), [
        { topic: 'sensors/a/temp', id: 1 },
        { topic: 'sensors/b/temp', id: 2 },
        { topic: 'plant/1/pressure', id: 3 },
        { topic: null, id: 4 },
        { topic: 'sensors/ü/temp', id: 6 },
      ]);

      assert.deepEqual(
        (await readParquet(topicsOnly!.files[0]!.localPath)).map((r) => r['topic']),
        ['sensors/a/temp', 'sensors/b/temp', 'plant/1/pressure', null, 'sensors/ü/temp'],
      );
      assert.equal(topicsOnly!.dlqByCode.invalid_json, 1);
    } finally {
      await out.cleanup();
    }
  });
}

void test('a segment without any MQTT record: $topic is NULL everywhere', async () => {
  const view = await db.withConnection((c) => compileView(c, parseViewYaml(ANY_SOURCE)));
  const out = await materializeSegment(db, {
    jobId: 'ep-topic-http',
    records: records.map(({ seq, ingestTimeMicros, payload }) => ({ seq, ingestTimeMicros, payload })),
    views: [view],
  });
  try {
    assert.deepEqual(
      (await readParquet(out.views[0]!.files[0]!.localPath)).map((r) => r['topic']),
      [null, null, null, null, null],
    );
  } finally {
    await out.cleanup();
  }
});

void test('$topic: canonical path, text types only, not a payload key', async () => {
  const spec = validateView({
    name: 'v',
    columns: [{ name: 'topic', type: 'varchar', path: '$topic' }],
  });
  assert.equal(spec.columns[0]!.path, '$topic');
  assert.deepEqual(spec.columns[0]!.pathSegments, []);
  assert.throws(
    () => validateView({ name: 'v', columns: [{ name: 'topic', type: 'JSON', path: '$topic' }] }),
    (err: unknown) =>
      err instanceof ViewError && err.code === 'path_invalid' && err.path === 'columns[0].path',
  );
  // The payload key `topic` is still $.topic.
  const key = validateView({ name: 'v', columns: [{ name: 't', type: 'VARCHAR', path: '$.topic' }] });
  assert.equal(key.columns[0]!.path, '$.topic');
  assert.deepEqual(key.columns[0]!.pathSegments, [{ key: 'topic' }]);
  // Close spellings stay JSONPath errors.
  for (const p of ['$topics', '$Topic', '$topic.x'])
    assert.throws(
      () => validateView({ name: 'v', columns: [{ name: 't', type: 'VARCHAR', path: p }] }),
      (err: unknown) => err instanceof ViewError && err.code === 'path_invalid',
      p,
    );
});
