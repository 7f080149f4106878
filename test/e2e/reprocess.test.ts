// `landfall reprocess` end to end against MinIO: `landfall serve` runs a
// page_views view whose timestamp JSONPath is wrong ($.timestamp for $.ts),
// so every page view lands in the DLQ (missing_required) and no view file is
// written. After the view is fixed, the real CLI rebuilds the committed
// segments from their .wal.zst archives: the former DLQ rows are view rows
// (read back with hyparquet), the DLQ keeps only the truly bad row, the
// markers are untouched, a manifest records the rebuild, and a second run
// writes the same keys.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
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
} from './helpers/views.ts';

const endpoint = 'shop';
const instance = 'shop-0';
const prefix = 'lf/reprocess';
const WRONG = PAGE_VIEWS.replace('path: $.ts,', 'path: $.timestamp,');

let minio: MinioServer;
let s3: S3Client;
let bucket: string;

before(async () => {
  minio = await startMinio();
  s3 = minio.s3();
  bucket = await minio.newBucket();
});
after(async () => {
  await minio?.stop();
});

function cli(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args, '--bucket', bucket, '--prefix', prefix], {
      env: { PATH: process.env['PATH'] ?? '', ...awsEnv(minio), AWS_ENDPOINT_URL_S3: minio.endpoint },
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('exit', (code) => resolve({ code, out, err }));
  });
}

const PAGE = [
  '{"event":"page_view","user":"a","ts":"2026-11-26T08:00:00Z"}',
  '{"event":"page_view","user":"b","ts":"2026-11-26T09:30:00.250Z"}',
  '{"event":"page_view","user":"c","ts":"2026-11-27T07:00:00Z"}',
];
const OTHER = ['{"event":"click","user":"d","ts":"2026-11-26T08:00:01Z"}', '{not json'];

void test('a wrong JSONPath sends page views to the DLQ; after the fix, `landfall reprocess` turns them into view rows', async () => {
  const viewsDir = scratchDir('reprocess-views');
  await writeFile(path.join(viewsDir, 'page_views.yaml'), WRONG);
  const dir = scratchDir('reprocess-node');
  const node = await serve('landfall-reprocess', minio, path.join(dir, 'node.log'), [
    `--s3.bucket=${bucket}`,
    `--s3.endpointUrl=${minio.endpoint}`,
    `--s3.prefix=${prefix}`,
    `--endpoint.name=${endpoint}`,
    `--instance.id=${instance}`,
    `--wal.dir=${path.join(dir, 'wal')}`,
    '--wal.segmentAgeMsMax=400',
    `--views.dir=${viewsDir}`,
    '--views.threads=1',
    '--delivery.staleUploadAgeMs=0',
  ]);
  let markerKeys: string[];
  try {
    // Two segments: the page views of both days and the other rows in different ones.
    await post(node.url, [PAGE[0]!, PAGE[1]!, OTHER[0]!]);
    await waitFor(async () => (await listKeys(s3, bucket, `${prefix}/commits/`)).length >= 1, {
      what: 'the first commit',
      timeoutMs: 20_000,
      intervalMs: 100,
      process: node.proc,
    });
    await post(node.url, [PAGE[2]!, OTHER[1]!]);
    markerKeys = await waitFor(
      async () => {
        const keys = await listKeys(s3, bucket, `${prefix}/commits/`);
        return keys.length >= 2 ? keys : undefined;
      },
      { what: 'the second commit', timeoutMs: 20_000, intervalMs: 100, process: node.proc },
    );
  } finally {
    await node.proc.stop({ graceMs: 15_000 });
  }
  assert.equal(markerKeys.length, 2);
  const markers = await Promise.all(markerKeys.map((k) => getJson<MarkerJson>(s3, bucket, k)));
  for (const m of markers) {
    assert.equal(m.artifacts.filter((a) => a.kind === 'view').length, 0, 'the wrong view wrote no view file');
    assert.equal(m.views[0]!.rows!.view, 0);
  }
  const dlqBefore = [];
  for (const m of markers)
    for (const a of m.artifacts.filter((x) => x.kind === 'dlq'))
      dlqBefore.push(...(await readParquetObject(s3, bucket, a.key)).rows);
  assert.deepEqual(dlqBefore.map((r) => [r['error_code'], r['column']]).sort(), [
    ['invalid_json', null],
    ['missing_required', 'viewed_at'],
    ['missing_required', 'viewed_at'],
    ['missing_required', 'viewed_at'],
  ]);
  const markerEtags = await Promise.all(
    markerKeys.map(async (k) => (await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: k }))).ETag),
  );

  // The fix, and the rebuild with the real CLI.
  const fixed = path.join(viewsDir, 'page_views.fixed.yaml');
  await writeFile(fixed, PAGE_VIEWS);
  const r = await cli(['reprocess', '--view', fixed, '--endpoint-name', endpoint, '--threads', '1']);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out.trim().split('\n').length, 2, r.out);
  assert.match(r.err, /reprocess: 2 segments, 5 rows in → 3 view, 1 filtered, 1 DLQ/);

  // The former DLQ rows, as view rows, at the keys the node writes.
  const viewKeys = await listKeys(s3, bucket, `${prefix}/views/page_views/`);
  const stems = markers.map((m) => `${instance}-${m.epoch}-${m.segmentId}`);
  assert.deepEqual(viewKeys, [
    `${prefix}/views/page_views/dt=2026-11-26/${stems[0]}.parquet`,
    `${prefix}/views/page_views/dt=2026-11-27/${stems[1]}.parquet`,
  ]);
  const rows = [];
  for (const k of viewKeys) {
    const read = await readParquetObject(s3, bucket, k);
    assert.equal(read.types['viewed_at'], 'INT64/TIMESTAMP(local)/MICROS');
    rows.push(...read.rows);
  }
  assert.deepEqual(
    rows.map((x) => [x['user_id'], x['viewed_at']]),
    [
      ['a', micros('2026-11-26T08:00:00Z')],
      ['b', micros('2026-11-26T09:30:00.250Z')],
      ['c', micros('2026-11-27T07:00:00Z')],
    ],
  );
  // The DLQ holds only the row that is really bad; the first segment's DLQ file holds none.
  const dlqAfter = [];
  for (const m of markers)
    for (const a of m.artifacts.filter((x) => x.kind === 'dlq'))
      dlqAfter.push(...(await readParquetObject(s3, bucket, a.key)).rows);
  assert.deepEqual(
    dlqAfter.map((x) => [x['error_code'], Buffer.from(x['payload'] as Uint8Array).toString()]),
    [['invalid_json', '{not json']],
  );
  // Receipts: markers untouched, one manifest per rebuilt segment.
  const etagsAfter = await Promise.all(
    markerKeys.map(async (k) => (await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: k }))).ETag),
  );
  assert.deepEqual(etagsAfter, markerEtags);
  const manifestKeys = await listKeys(s3, bucket, `${prefix}/reprocess/page_views/`);
  assert.deepEqual(
    manifestKeys,
    markers.map(
      (m) => `${prefix}/reprocess/page_views/${endpoint}/${instance}/${m.epoch}/${m.segmentId}.json`,
    ),
  );
  const manifest = await getJson<{
    specSha256: string;
    replaces: { source: string; specSha256: string };
    rows: { in: number; view: number; filtered: number; dlq: number };
    artifacts: { key: string; rows: number }[];
    superseded: { key: string; rows: number }[];
  }>(s3, bucket, manifestKeys[0]!);
  assert.equal(manifest.replaces.source, 'marker');
  assert.equal(manifest.replaces.specSha256, markers[0]!.views[0]!.specSha256);
  assert.notEqual(manifest.specSha256, manifest.replaces.specSha256);
  assert.deepEqual(manifest.rows, {
    in: 3,
    view: 2,
    filtered: 1,
    dlq: 0,
    dlqByCode: {
      invalid_json: 0,
      missing_required: 0,
      cast_failed: 0,
      expression_failed: 0,
      partition_value_too_long: 0,
      too_many_partitions: 0,
      view_failed: 0,
    },
  });
  assert.deepEqual(
    manifest.superseded.map((s) => s.rows),
    [0],
  );

  // Again: idempotent, the same keys and rows.
  const keysBefore = await listKeys(s3, bucket, `${prefix}/`);
  const again = await cli([
    'reprocess',
    '--view',
    fixed,
    '--endpoint-name',
    endpoint,
    '--threads',
    '1',
    '--quiet',
  ]);
  assert.equal(again.code, 0, again.err);
  assert.deepEqual(await listKeys(s3, bucket, `${prefix}/`), keysBefore);
  const rowsAgain = [];
  for (const k of viewKeys) rowsAgain.push(...(await readParquetObject(s3, bucket, k)).rows);
  assert.deepEqual(rowsAgain, rows);
});
