// Issue 14's must-show, end to end: poison partition values through
// `landfall serve` on a real MinIO. A segment whose records carry "", no
// value, the literal default-partition name, and values too long for a key
// (ASCII and CJK) is committed; each of "", NULL and the literal has its own
// folder; the too-long rows are in the view's DLQ with their code; and the
// segment sealed after it is committed at its first attempt — nothing waits.
// Before the fix the first segment was retried forever ("two Parquet files
// map to one key", then DuckDB's "File name too long") and every later
// marker waited behind it.
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
  post,
  readParquetObject,
  serve,
  type MarkerJson,
  type ServeNode,
} from './helpers/views.ts';

const endpoint = 'shop';
const instance = 'shop-0';
const prefix = 'lf/poison';
const sealIntervalMs = 1_000;

const VIEW = `name: by_region
columns:
  - { name: id, type: INTEGER, path: $.id, required: true }
  - { name: region, type: VARCHAR, path: $.region }
partitioning:
  - { expression: region, alias: r }
`;

let minio: MinioServer;
let s3: S3Client;
let bucket: string;
let node: ServeNode | undefined;

before(async () => {
  minio = await startMinio();
  s3 = minio.s3();
  bucket = await minio.newBucket();
});
after(async () => {
  await node?.proc.stop({ graceMs: 5_000 });
  await minio?.stop();
});

async function markers(): Promise<MarkerJson[]> {
  const keys = await listKeys(s3, bucket, `${prefix}/commits/${endpoint}/`);
  return Promise.all(keys.map((key) => getJson<MarkerJson>(s3, bucket, key)));
}

async function nthMarker(n: number): Promise<MarkerJson> {
  const list = await waitFor(
    async () => {
      const ms = await markers();
      return ms.length >= n ? ms : undefined;
    },
    { what: `commit marker #${n}`, timeoutMs: 30_000, intervalMs: 50, process: node!.proc },
  );
  return list[n - 1]!;
}

interface DeliveryStatus {
  delivery: { segmentFailuresTotal: number; lastSealToCommitMs: number | null; lastError: unknown };
}

void test('poison partition values through `landfall serve` → MinIO: delivered around, in the DLQ with their code; the next segment does not wait', async () => {
  const viewsDir = scratchDir('poison-views');
  await writeFile(path.join(viewsDir, 'by_region.yaml'), VIEW);
  const dir = scratchDir('poison-node');
  node = await serve('landfall-poison', minio, path.join(dir, 'node.log'), [
    `--s3.bucket=${bucket}`,
    `--s3.endpointUrl=${minio.endpoint}`,
    `--s3.prefix=${prefix}`,
    `--endpoint.name=${endpoint}`,
    `--instance.id=${instance}`,
    `--wal.dir=${path.join(dir, 'wal')}`,
    `--wal.segmentAgeMsMax=${sealIntervalMs}`,
    `--views.dir=${viewsDir}`,
    '--views.threads=1',
    '--delivery.staleUploadAgeMs=0',
  ]);
  const tooLongAscii = 'a'.repeat(300);
  const tooLongCjk = '漢'.repeat(30);
  await post(node.url, [
    JSON.stringify({ id: 1, region: '' }),
    JSON.stringify({ id: 2 }),
    JSON.stringify({ id: 3, region: '__HIVE_DEFAULT_PARTITION__' }),
    JSON.stringify({ id: 4, region: tooLongAscii }),
    JSON.stringify({ id: 5, region: tooLongCjk }),
    JSON.stringify({ id: 6, region: 'eu' }),
  ]);
  const m1 = await nthMarker(1);
  assert.equal(m1.records, 6);
  const rows = m1.views[0]!.rows!;
  assert.deepEqual([rows.in, rows.view, rows.dlq], [6, 4, 2]);
  assert.equal(rows.dlqByCode?.['partition_value_too_long'], 2);

  // One folder each for "", NULL and the literal, holding exactly its row.
  const stem = `${instance}-${m1.epoch}-${m1.segmentId}`;
  const byFolder: Record<string, number[]> = {};
  for (const a of m1.artifacts.filter((x) => x.kind === 'view')) {
    const folder = a.key.slice(`${prefix}/views/by_region/`.length, -`/${stem}.parquet`.length);
    byFolder[folder] = (await readParquetObject(s3, bucket, a.key)).rows.map((r) => Number(r['id']));
  }
  assert.deepEqual(byFolder, {
    'r=__LANDFALL_EMPTY__': [1],
    'r=__HIVE_DEFAULT_PARTITION__': [2],
    'r=%5F_HIVE_DEFAULT_PARTITION__': [3],
    'r=eu': [6],
  });

  // The rows no key can hold are in the DLQ, with their code, column and exact bytes.
  const dlq = [];
  for (const a of m1.artifacts.filter((x) => x.kind === 'dlq'))
    dlq.push(...(await readParquetObject(s3, bucket, a.key)).rows);
  assert.deepEqual(
    dlq
      .map((r) => [
        r['error_code'],
        r['column'],
        (JSON.parse(Buffer.from(r['payload'] as Uint8Array).toString('utf8')) as { region: string }).region,
      ])
      .sort(),
    [
      ['partition_value_too_long', 'r', tooLongAscii],
      ['partition_value_too_long', 'r', tooLongCjk],
    ],
  );

  // The segment sealed after it commits at its first attempt: nothing holds it back.
  await post(node.url, [JSON.stringify({ id: 7, region: 'eu' })]);
  const m2 = await nthMarker(2);
  assert.equal(m2.records, 1);
  assert.equal(m2.views[0]!.rows!.view, 1);
  const status = (await (await fetch(`${node.adminUrl}/v1/status`)).json()) as DeliveryStatus;
  assert.equal(status.delivery.segmentFailuresTotal, 0, JSON.stringify(status.delivery.lastError));
  assert.equal(status.delivery.lastError, null);
  console.log(
    `segment after the poison one: sealed → committed in ${status.delivery.lastSealToCommitMs} ms (seal interval ${sealIntervalMs} ms)`,
  );

  // A consumer's own deep check of both markers against the objects passes.
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

  await node.proc.stop({ graceMs: 15_000 });
  assert.equal((await node.proc.exited).code, 0);
  node = undefined;
});
