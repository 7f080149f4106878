// Views end to end through the real CLI: `landfall serve` with a views folder
// delivers to a real MinIO; the seed's page_views view (DESIGN §6) over
// posted events, good and bad, becomes typed Parquet under
// views/page_views/dt=…/ that hyparquet (not our code, not DuckDB) reads back
// with the declared types and exactly the expected rows; the bad rows are in
// the DLQ with the right codes; the row accounting holds and is the
// marker's. Then the folder changes under the running node: a malicious
// view file is refused at reload and the old view keeps producing; a good
// edit applies to the segments sealed after it, and the marker says which
// spec hash built which segment.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { scratchDir, startMinio, waitFor, type MinioServer } from '../harness/index.ts';
import {
  awsEnv,
  CLI,
  getJson,
  listKeys,
  micros,
  PAGE_VIEWS,
  post,
  readParquetObject,
  serve,
  type MarkerJson,
  type ServeNode,
} from './helpers/views.ts';

const endpoint = 'web';
const instance = 'web-0';
const prefix = 'lf/views';

let minio: MinioServer;
let s3: S3Client;
let bucket: string;
let node: ServeNode | undefined;
let viewsDir: string;

before(async () => {
  minio = await startMinio();
  s3 = minio.s3();
  bucket = await minio.newBucket();
});
after(async () => {
  await node?.proc.stop({ graceMs: 5_000 });
  await minio?.stop();
});

/** Markers in key order (segment order), read as a consumer would. */
async function markers(): Promise<{ key: string; m: MarkerJson }[]> {
  const keys = await listKeys(s3, bucket, `${prefix}/commits/${endpoint}/`);
  return Promise.all(keys.map(async (key) => ({ key, m: await getJson<MarkerJson>(s3, bucket, key) })));
}

/** Waits for the marker of the segment holding what was just posted (the n-th marker). */
async function nthMarker(n: number): Promise<MarkerJson> {
  const list = await waitFor(
    async () => {
      const ms = await markers();
      return ms.length >= n ? ms : undefined;
    },
    { what: `commit marker #${n}`, timeoutMs: 20_000, intervalMs: 100, process: node!.proc },
  );
  assert.equal(list.length, n, 'one segment per round');
  return list[n - 1]!.m;
}

async function viewRows(m: MarkerJson, view = 'page_views'): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  for (const a of m.artifacts.filter((x) => x.kind === 'view' && x.view === view))
    out.push(...(await readParquetObject(s3, bucket, a.key)).rows);
  return out;
}

function checkAccounting(m: MarkerJson): void {
  for (const v of m.views) {
    const r = v.rows;
    assert.ok(r, `marker lists the row accounting of ${v.name}`);
    assert.equal(r.in, m.records, 'a view sees every record');
    assert.equal(r.in, r.view + r.filtered + r.dlq, 'in = view + filtered + dlq');
    const sum = (kind: string): number =>
      m.artifacts.filter((a) => a.kind === kind && a.view === v.name).reduce((s, a) => s + a.rows, 0);
    assert.equal(sum('view'), r.view);
    assert.equal(sum('dlq'), r.dlq);
    assert.equal(
      Object.values(r.dlqByCode ?? {}).reduce((s, n) => s + n, 0),
      r.dlq,
    );
  }
}

// Round 1: [payload, what must become of it].
const ROUND1: [string, string][] = [
  ['{"event":"page_view","user":"u1","ts":"2026-11-26T10:00:00Z"}', 'view'],
  // An offset is honoured: 01:30+02:00 is 23:30 UTC the day before.
  ['{"event":"page_view","user":"u2","ts":"2026-11-27T01:30:00+02:00"}', 'view'],
  ['{"event":"page_view","ts":"2026-11-27T08:00:00.123456Z","extra":[1,2]}', 'view'],
  ['{"event":"page_view","user":42,"ts":"2026-11-27T09:00:00Z"}', 'view'],
  ['{"event":"click","user":"u3","ts":"2026-11-26T10:00:00Z"}', 'filtered'],
  ['{"event":"scroll"}', 'filtered'],
  ['{"event":"page_view","user":"u4","ts":"yesterday"}', 'dlq:cast_failed:viewed_at'],
  ['{"event":"page_view","user":"u5"}', 'dlq:missing_required:viewed_at'],
  ['{"user":"u6","ts":"2026-11-26T10:00:00Z"}', 'dlq:missing_required:event'],
  ['{"event":null,"ts":"2026-11-26T10:00:00Z"}', 'dlq:missing_required:event'],
  ['this is not json', 'dlq:invalid_json:'],
  ['{"event":"page_view","ts":"2026-11-26T12:00:00Z"} trailing', 'dlq:invalid_json:'],
];

let hashV1: string;

void test('page_views through `landfall serve` → MinIO: typed Parquet per day, the DLQ, the accounting in the marker', async () => {
  viewsDir = scratchDir('views-dir');
  await writeFile(path.join(viewsDir, 'page_views.yaml'), PAGE_VIEWS);
  const dir = scratchDir('views-node');
  node = await serve('landfall-views', minio, path.join(dir, 'node.log'), [
    `--s3.bucket=${bucket}`,
    `--s3.endpointUrl=${minio.endpoint}`,
    `--s3.prefix=${prefix}`,
    `--endpoint.name=${endpoint}`,
    `--instance.id=${instance}`,
    `--wal.dir=${path.join(dir, 'wal')}`,
    // A quiet endpoint seals after this: one segment per round of posts.
    '--wal.segmentAgeMsMax=400',
    `--views.dir=${viewsDir}`,
    '--views.reloadIntervalMs=500',
    '--views.threads=1',
    '--delivery.staleUploadAgeMs=0',
  ]);
  await post(
    node.url,
    ROUND1.map(([p]) => p),
  );
  const m = await nthMarker(1);

  assert.equal(m.records, ROUND1.length);
  assert.equal(m.views.length, 1);
  assert.equal(m.views[0]!.name, 'page_views');
  hashV1 = m.views[0]!.specSha256;
  assert.match(hashV1, /^[0-9a-f]{64}$/);
  checkAccounting(m);
  assert.deepEqual(m.views[0]!.rows, {
    in: 12,
    view: 4,
    filtered: 2,
    dlq: 6,
    dlqByCode: {
      invalid_json: 2,
      missing_required: 3,
      cast_failed: 1,
      expression_failed: 0,
      partition_value_too_long: 0,
      too_many_partitions: 0,
      view_failed: 0,
    },
  });

  // The view: one file per day, at views/page_views/dt=YYYY-MM-DD/{instance}-{epoch}-{segmentId}.parquet.
  const stem = `${instance}-${m.epoch}-${m.segmentId}`;
  const viewArts = m.artifacts.filter((a) => a.kind === 'view');
  assert.deepEqual(viewArts.map((a) => a.key).sort(), [
    `${prefix}/views/page_views/dt=2026-11-26/${stem}.parquet`,
    `${prefix}/views/page_views/dt=2026-11-27/${stem}.parquet`,
  ]);
  const byDay = new Map<string, Record<string, unknown>[]>();
  for (const a of viewArts) {
    const { rows, types } = await readParquetObject(s3, bucket, a.key);
    // The declared types, as an independent reader sees them (dt lives in the path).
    assert.deepEqual(types, {
      event: 'BYTE_ARRAY/UTF8',
      user_id: 'BYTE_ARRAY/UTF8',
      viewed_at: 'INT64/TIMESTAMP(local)/MICROS',
    });
    assert.equal(rows.length, a.rows, 'the marker counts the rows in the file');
    byDay.set(/dt=([\d-]+)/.exec(a.key)![1]!, rows);
  }
  const sortRows = (rows: Record<string, unknown>[]) =>
    rows
      .map((r) => [r['event'], r['user_id'], r['viewed_at']])
      .sort((a, b) => (String(a[2]) < String(b[2]) ? -1 : 1));
  assert.deepEqual(sortRows(byDay.get('2026-11-26')!), [
    ['page_view', 'u1', micros('2026-11-26T10:00:00Z')],
    ['page_view', 'u2', micros('2026-11-26T23:30:00Z')],
  ]);
  assert.deepEqual(sortRows(byDay.get('2026-11-27')!), [
    ['page_view', null, micros('2026-11-27T08:00:00.123456Z')],
    ['page_view', '42', micros('2026-11-27T09:00:00Z')],
  ]);

  // The DLQ: every bad row, its exact bytes, code and column.
  const dlqArts = m.artifacts.filter((a) => a.kind === 'dlq');
  assert.equal(dlqArts.length, 1, 'one ingest day');
  assert.match(
    dlqArts[0]!.key,
    new RegExp(`^${prefix}/dlq/page_views/dt=\\d{4}-\\d{2}-\\d{2}/${stem}\\.parquet$`),
  );
  const dlq = await readParquetObject(s3, bucket, dlqArts[0]!.key);
  assert.deepEqual(
    dlq.rows
      .map((r) => [
        `dlq:${r['error_code'] as string}:${(r['column'] as string | null) ?? ''}`,
        Buffer.from(r['payload'] as Uint8Array).toString('utf8'),
      ])
      .sort(),
    ROUND1.filter(([, o]) => o.startsWith('dlq:'))
      .map(([p, o]) => [o, p])
      .sort(),
  );
  assert.equal(dlq.types['payload'], 'BYTE_ARRAY/');
  assert.equal(dlq.types['ingest_time'], 'INT64/TIMESTAMP(utc)/MICROS');
  assert.ok(dlq.rows.every((r) => typeof r['seq'] === 'bigint' && String(r['error_message']).length > 0));

  // The consumer's own check of the marker against the objects passes.
  const verified = await new Promise<{ code: number | null; out: string }>((resolve) => {
    const p = spawn(
      process.execPath,
      [CLI, 'verify', '--endpoint-name', endpoint, '--deep', '--bucket', bucket, '--prefix', prefix],
      { env: { PATH: process.env['PATH'] ?? '', ...awsEnv(minio), AWS_ENDPOINT_URL_S3: minio.endpoint } },
    );
    let out = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (out += c.toString()));
    p.on('exit', (code) => resolve({ code, out }));
  });
  assert.equal(verified.code, 0, verified.out);
});

void test('a malicious view file dropped into views.dir is refused at reload; the old view keeps producing; a good edit applies from the next segment', async () => {
  assert.ok(node, 'runs after the first test');
  const metric = async (): Promise<number> => {
    const text = await (await fetch(`${node!.adminUrl}/metrics`)).text();
    return Number(/^landfall_view_reload_errors_total (\d+)/m.exec(text)?.[1] ?? 'NaN');
  };
  assert.equal(await metric(), 0);
  // The same view name, with a filter that would read a file of the node's.
  await writeFile(
    path.join(viewsDir, 'page_views.yaml'),
    PAGE_VIEWS.replace(`filter: "event = 'page_view'"`, `filter: "read_text('/etc/passwd') IS NOT NULL"`),
  );
  const refusal = await waitFor(
    () => node!.logs().find((l) => typeof l.msg === 'string' && l.msg.startsWith('view refused')),
    { what: 'the malicious view to be refused', timeoutMs: 10_000, intervalMs: 50, process: node.proc },
  );
  assert.equal(refusal['code'], 'expr_function_denied');
  assert.equal(refusal['view'], 'page_views');
  assert.match(String(refusal.msg), /previous version of the view keeps running/);
  assert.equal(await metric(), 1);
  const status = (await (await fetch(`${node.adminUrl}/v1/status`)).json()) as {
    views: { loaded: { name: string; specSha256: string }[]; lastError: { code: string } };
  };
  assert.deepEqual(
    status.views.loaded.map((v) => [v.name, v.specSha256]),
    [['page_views', hashV1]],
  );
  assert.equal(status.views.lastError.code, 'expr_function_denied');

  // The old view keeps producing.
  await post(node.url, [
    '{"event":"page_view","user":"r2","ts":"2026-11-28T10:00:00Z"}',
    '{"event":"click","user":"r2","ts":"2026-11-28T10:00:00Z"}',
  ]);
  const m2 = await nthMarker(2);
  assert.equal(m2.views[0]!.specSha256, hashV1);
  checkAccounting(m2);
  assert.deepEqual(
    (await viewRows(m2)).map((r) => r['user_id']),
    ['r2'],
  );

  // A good edit: clicks count too, from the next sealed segment on.
  await writeFile(
    path.join(viewsDir, 'page_views.yaml'),
    PAGE_VIEWS.replace(`filter: "event = 'page_view'"`, `filter: "event IN ('page_view', 'click')"`),
  );
  await waitFor(() => node!.logs().some((l) => l.msg === 'views reloaded'), {
    what: 'the edit to be applied',
    timeoutMs: 10_000,
    intervalMs: 50,
    process: node.proc,
  });
  await post(node.url, [
    '{"event":"page_view","user":"r3","ts":"2026-11-28T11:00:00Z"}',
    '{"event":"click","user":"r3","ts":"2026-11-28T11:00:00Z"}',
  ]);
  const m3 = await nthMarker(3);
  assert.notEqual(m3.views[0]!.specSha256, hashV1, 'the marker names the spec that built the segment');
  checkAccounting(m3);
  assert.deepEqual((await viewRows(m3)).map((r) => r['event']).sort(), ['click', 'page_view']);
  // Earlier segments keep what they were built with: their markers are receipts.
  const all = await markers();
  assert.deepEqual(
    all.map((x) => x.m.views[0]!.specSha256 === hashV1),
    [true, true, false],
  );
  assert.equal(await metric(), 1, 'the good edit is not an error');

  await node.proc.stop({ graceMs: 15_000 });
  const exit = await node.proc.exited;
  assert.equal(exit.code, 0);
  node = undefined;
});
