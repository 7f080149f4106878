// Delivery to a real MinIO, end to end: WAL → pipeline → bucket, then read
// back with the CLI a consumer uses (commits, expand, verify). Plus the two
// failures a bucket brings: a 30 s outage under load (nothing lost, appends
// never fail, everything delivered after) and a lost disk (a fresh WAL dir is
// a new epoch and never overwrites what the old one delivered). Stale
// multipart uploads are aborted at start. The SIGKILL test is in
// delivery-crash.test.ts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Writable } from 'node:stream';
import {
  CreateMultipartUploadCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import { repoRoot, scratchDir, startMinio, waitFor, type MinioServer } from '../harness/index.ts';
import { systemClock } from '../../ingest-node/src/clock.ts';
import { NodeFileSystem } from '../../ingest-node/src/fs/node.ts';
import { silentLogger } from '../../ingest-node/src/log.ts';
import { run as commits } from '../../ingest-node/src/commands/commits.ts';
import { run as expand } from '../../ingest-node/src/commands/expand.ts';
import { run as verify } from '../../ingest-node/src/commands/verify.ts';
import type { CommandIo } from '../../ingest-node/src/commands/common.ts';
import {
  startPipeline,
  type Pipeline,
  type PipelineOptions,
} from '../../ingest-node/src/delivery/pipeline.ts';
import { openObjectStore, type OpenedObjectStore } from '../../ingest-node/src/store/index.ts';
import { openWal } from '../../ingest-node/src/wal/wal.ts';
import { RecordFormat, type Wal } from '../../ingest-node/src/wal/types.ts';

const endpoint = 'orders';
const MiB = 1024 * 1024;
/** Short retries so the outage test catches up within seconds of MinIO's return. */
/** The outage's length; DELIVERY_E2E_OUTAGE_MS shortens it when iterating locally. */
const outageMs = Number(process.env['DELIVERY_E2E_OUTAGE_MS'] ?? 30_000);
const quickRetry = { attemptsMax: 4, retryDelayMsBase: 100, retryDelayMsMax: 1_000 };

let minio: MinioServer;
let raw: S3Client;
const cleanups: (() => Promise<void> | void)[] = [];

before(async () => {
  minio = await startMinio();
  raw = minio.s3();
});
after(async () => {
  for (const c of cleanups.reverse()) await c();
  await minio?.stop();
});

function openStore(bucket: string): OpenedObjectStore {
  const opened = openObjectStore({
    kind: 's3',
    bucket,
    region: minio.region,
    endpoint: minio.endpoint,
    forcePathStyle: true,
    credentials: { mode: 'static', accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
    // Fail fast while MinIO is down; the pipeline's own retries do the waiting.
    requestTimeoutMs: 5_000,
  });
  cleanups.push(() => opened.close());
  return opened;
}

async function node(
  o: { dir: string; instance: string; bucket: string; prefix: string; segmentBytesMax: number },
  extra: Partial<PipelineOptions> = {},
): Promise<{ wal: Wal; pipeline: Pipeline; close: () => Promise<void> }> {
  const wal = await openWal({
    dir: path.join(o.dir, 'wal'),
    endpoint,
    instance: o.instance,
    fs: new NodeFileSystem(),
    clock: systemClock,
    log: silentLogger,
    segmentBytesMax: o.segmentBytesMax,
    segmentAgeMsMax: 3_600_000,
  });
  const pipeline = await startPipeline({
    wal,
    store: openStore(o.bucket).store,
    prefix: o.prefix,
    endpoint,
    instance: o.instance,
    scratchDir: path.join(o.dir, 'scratch'),
    retry: quickRetry,
    segmentRetryDelayMsMax: 2_000,
    ...extra,
  });
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await pipeline.stop({ graceMs: 2_000 });
    await wal.close();
  };
  cleanups.push(close);
  return { wal, pipeline, close };
}

async function cli(
  fn: (args: readonly string[], io: CommandIo) => Promise<number>,
  args: string[],
): Promise<{ code: number; stdout: Buffer; out: string; err: string }> {
  const chunks: Buffer[] = [];
  let out = '';
  let err = '';
  const code = await fn(args, {
    out: (t) => (out += t),
    err: (t) => (err += t),
    // What a consumer's shell has: the standard AWS variables.
    env: {
      AWS_ACCESS_KEY_ID: minio.accessKeyId,
      AWS_SECRET_ACCESS_KEY: minio.secretAccessKey,
      AWS_REGION: minio.region,
      AWS_ENDPOINT_URL_S3: minio.endpoint,
    },
    stdout: new Writable({
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        cb();
      },
    }),
  });
  return { code, stdout: Buffer.concat(chunks), out, err };
}

/** Every committed record (seq, payload) via `expand --format envelope`, in key order. */
async function committed(bucket: string, prefix: string, instance?: string): Promise<[bigint, string][]> {
  const r = await cli(expand, [
    '--endpoint-name',
    endpoint,
    ...(instance !== undefined ? ['--instance', instance] : []),
    '--format',
    'envelope',
    '--quiet',
    '--bucket',
    bucket,
    '--prefix',
    prefix,
  ]);
  assert.equal(r.code, 0, r.err);
  const text = r.stdout.toString();
  if (text === '') return [];
  return text
    .trimEnd()
    .split('\n')
    .map((l) => {
      const o = JSON.parse(l) as { seq: string; payload: string };
      return [BigInt(o.seq), o.payload];
    });
}

async function listKeys(bucket: string, prefix: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let token: string | undefined;
  do {
    const page = await raw.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        Prefix: prefix,
        ...(token ? { ContinuationToken: token } : {}),
      }),
    );
    for (const o of page.Contents ?? []) out.set(o.Key ?? '', `${o.ETag}@${o.LastModified?.getTime()}`);
    token = page.NextContinuationToken;
  } while (token !== undefined);
  return out;
}

/** A load generator: appends batches back to back until stopped, remembering what was acknowledged. */
function load(wal: Wal, tag: string, batchRecords = 20, padBytes = 80) {
  const acked: string[] = [];
  const failures: unknown[] = [];
  let stopped = false;
  let batch = 0;
  const pad = 'p'.repeat(padBytes);
  const done = (async () => {
    while (!stopped) {
      const payloads = Array.from(
        { length: batchRecords },
        (_, i) => `{"t":"${tag}","b":${batch},"i":${i},"pad":"${pad}"}`,
      );
      batch++;
      try {
        await wal.append(
          payloads.map((p) => Buffer.from(p)),
          RecordFormat.ndjson,
        );
        acked.push(...payloads);
      } catch (err) {
        failures.push(err);
      }
      // A steady ~0.5 MB/s, as a busy producer would send: the point is a
      // backlog that builds for the whole outage, not a disk benchmark.
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  return {
    acked,
    failures,
    stop: async () => {
      stopped = true;
      await done;
    },
  };
}

void describe('delivery to MinIO', () => {
  void test('WAL → pipeline → MinIO: archives and markers land, expand returns exactly the records, in order', async () => {
    const bucket = await minio.newBucket();
    const prefix = 'lf/e2e';
    const n = await node({
      dir: scratchDir('e2e'),
      instance: 'orders-0',
      bucket,
      prefix,
      segmentBytesMax: 16 * MiB,
    });
    const appended: string[] = [];
    // Concurrent appends (several share one fsync), a seal per round.
    for (let round = 0; round < 10; round++) {
      const batches = Array.from({ length: 8 }, (_, b) =>
        Array.from({ length: 50 }, (_, i) =>
          JSON.stringify({ round, b, i, v: randomBytes(16).toString('hex') }),
        ),
      );
      const results = await Promise.all(
        batches.map((ps) =>
          n.wal.append(
            ps.map((p) => Buffer.from(p)),
            RecordFormat.ndjson,
          ),
        ),
      );
      // The WAL assigns seqs in arrival order: record the payloads in seq order.
      const order = results.map((r, i) => [r.firstSeq, i] as const).sort((a, b) => (a[0] < b[0] ? -1 : 1));
      for (const [, i] of order) appended.push(...batches[i]!);
      await n.wal.seal();
    }
    // One big, incompressible segment: its archive (> 8 MiB) goes up as a multipart upload.
    const big = Array.from({ length: 3600 }, (_, i) =>
      JSON.stringify({ big: i, blob: randomBytes(3 * 1024).toString('base64') }),
    );
    for (let i = 0; i < big.length; i += 100)
      await n.wal.append(
        big.slice(i, i + 100).map((p) => Buffer.from(p)),
        RecordFormat.ndjson,
      );
    appended.push(...big);
    await n.wal.seal();
    await n.pipeline.idle();
    const stats = n.pipeline.stats();
    assert.ok(stats.segmentsDeliveredTotal >= 10, `delivered ${stats.segmentsDeliveredTotal}`);
    assert.equal(stats.segmentsPending, 0);
    assert.equal(n.wal.sealedSegments().length, 0, 'delivered segments deleted locally');

    const list = await cli(commits, ['--endpoint-name', endpoint, '--bucket', bucket, '--prefix', prefix]);
    assert.equal(list.code, 0, list.err);
    const markers = list.out.trim().split('\n');
    assert.equal(markers.length, stats.segmentsDeliveredTotal);
    const keys = await listKeys(bucket, `${prefix}/segments/`);
    assert.equal(keys.size, markers.length, 'one archive per marker');
    assert.ok(
      [...keys.values()].some((etag) => /-\d+"/.test(etag)),
      'the big archive went up multipart',
    );

    const records = await committed(bucket, prefix);
    assert.equal(records.length, appended.length);
    assert.deepEqual(
      records.map(([, p]) => p),
      appended,
    );
    assert.deepEqual(
      records.map(([s]) => s),
      appended.map((_, i) => BigInt(i + 1)),
    );
    const v = await cli(verify, [
      '--endpoint-name',
      endpoint,
      '--deep',
      '--bucket',
      bucket,
      '--prefix',
      prefix,
    ]);
    assert.equal(v.code, 0, v.out);
    await n.close();
  });

  void test('a 30 s S3 outage under load: appends never fail, nothing is lost, everything is delivered after', async (t) => {
    const bucket = await minio.newBucket();
    const prefix = 'lf/outage';
    const n = await node({
      dir: scratchDir('outage'),
      instance: 'orders-0',
      bucket,
      prefix,
      segmentBytesMax: 256 * 1024,
    });
    const gen = load(n.wal, 'outage');
    await waitFor(() => n.pipeline.stats().segmentsDeliveredTotal >= 3, {
      what: 'first deliveries',
      timeoutMs: 20_000,
    });

    const outageStarted = Date.now();
    await minio.stopServer({ graceMs: 0 });
    const deliveredAtOutage = n.pipeline.stats().segmentsDeliveredTotal;
    // The outage lasts 30 s; the probe also sees the backlog build and the failures count.
    await waitFor(
      () => {
        const s = n.pipeline.stats();
        return Date.now() - outageStarted >= outageMs && s.segmentsPending >= 5 && s.segmentFailuresTotal > 0;
      },
      { what: 'a 30 s outage with a backlog', timeoutMs: 60_000, intervalMs: 250 },
    );
    const during = n.pipeline.stats();
    t.diagnostic(
      `outage: ${during.segmentsPending} segments (${(during.bytesPending / MiB).toFixed(1)} MiB) pending, ` +
        `archival lag ${(during.oldestUndeliveredAgeMs / 1000).toFixed(1)} s, ${during.uploadFailuresTotal} failed uploads, ` +
        `${during.segmentFailuresTotal} segment retries; ${gen.acked.length} records acknowledged so far`,
    );
    assert.ok(
      during.segmentsDeliveredTotal - deliveredAtOutage <= 2,
      'nothing delivers while the store is down',
    );
    assert.ok(
      during.oldestUndeliveredAgeMs >= outageMs - 5_000,
      `archival lag ${during.oldestUndeliveredAgeMs} ms`,
    );
    assert.deepEqual(gen.failures, [], 'appends never failed');

    const restarted = Date.now();
    await minio.startServer();
    await gen.stop();
    await n.wal.seal();
    await waitFor(() => n.pipeline.stats().segmentsPending === 0, {
      what: 'the backlog to drain',
      timeoutMs: 60_000,
      intervalMs: 100,
    });
    t.diagnostic(
      `backlog of ${during.segmentsPending}+ segments drained ${Date.now() - restarted} ms after MinIO returned`,
    );
    assert.deepEqual(gen.failures, []);
    const records = await committed(bucket, prefix);
    assert.deepEqual(
      records.map(([, p]) => p),
      gen.acked,
    );
    const v = await cli(verify, ['--endpoint-name', endpoint, '--bucket', bucket, '--prefix', prefix]);
    assert.equal(v.code, 0, v.out);
    await n.close();
  });

  void test('a lost disk (fresh WAL dir) is a new epoch: its keys never overwrite the old epoch objects', async () => {
    const bucket = await minio.newBucket();
    const prefix = 'lf/lost';
    const first = await node({
      dir: scratchDir('lost-a'),
      instance: 'orders-0',
      bucket,
      prefix,
      segmentBytesMax: 64 * 1024,
    });
    const oldPayloads: string[] = [];
    for (let s = 0; s < 3; s++) {
      const ps = Array.from({ length: 30 }, (_, i) => `{"disk":"a","s":${s},"i":${i}}`);
      await first.wal.append(
        ps.map((p) => Buffer.from(p)),
        RecordFormat.ndjson,
      );
      await first.wal.seal();
      oldPayloads.push(...ps);
    }
    await first.pipeline.idle();
    const epochA = first.wal.epoch;
    await first.close();
    const before = await listKeys(bucket, `${prefix}/`);
    assert.equal(before.size, 6);

    // The node comes back on a new, empty volume: same instance name, segment ids start over.
    const second = await node({
      dir: scratchDir('lost-b'),
      instance: 'orders-0',
      bucket,
      prefix,
      segmentBytesMax: 64 * 1024,
    });
    const epochB = second.wal.epoch;
    assert.notEqual(epochB, epochA);
    assert.ok(epochB > epochA, 'epochs sort by creation time');
    const newPayloads: string[] = [];
    for (let s = 0; s < 3; s++) {
      const ps = Array.from({ length: 30 }, (_, i) => `{"disk":"b","s":${s},"i":${i}}`);
      await second.wal.append(
        ps.map((p) => Buffer.from(p)),
        RecordFormat.ndjson,
      );
      await second.wal.seal();
      newPayloads.push(...ps);
    }
    await second.pipeline.idle();
    await second.close();

    const afterKeys = await listKeys(bucket, `${prefix}/`);
    assert.equal(afterKeys.size, 12);
    for (const [key, version] of before) assert.equal(afterKeys.get(key), version, `${key} untouched`);
    for (const key of afterKeys.keys())
      if (!before.has(key)) assert.ok(key.includes(`/${epochB}/`), `${key} is under the new epoch`);
    // A consumer following the instance reads both epochs, in time order.
    const records = await committed(bucket, prefix, 'orders-0');
    assert.deepEqual(
      records.map(([, p]) => p),
      [...oldPayloads, ...newPayloads],
    );
  });

  void test('the real CLI: `landfall serve` delivers to MinIO, `landfall commits/expand/verify` read it back', async () => {
    const bucket = await minio.newBucket();
    const dir = scratchDir('cli');
    const cliPath = path.join(repoRoot, 'ingest-node', 'src', 'cli.ts');
    // Configured the way a container is: LANDFALL_* for the node, AWS_* for the SDK.
    const env = {
      PATH: process.env['PATH'] ?? '',
      AWS_ACCESS_KEY_ID: minio.accessKeyId,
      AWS_SECRET_ACCESS_KEY: minio.secretAccessKey,
      AWS_REGION: minio.region,
      LANDFALL_S3_BUCKET: bucket,
      LANDFALL_S3_ENDPOINT_URL: minio.endpoint,
      LANDFALL_S3_PREFIX: 'lf/cli',
      LANDFALL_ENDPOINT_NAME: endpoint,
      LANDFALL_INSTANCE_ID: 'orders-0',
      LANDFALL_WAL_DIR: path.join(dir, 'wal'),
      LANDFALL_WAL_SEGMENT_BYTES_MAX: '8192',
      LANDFALL_LISTEN_PORT: '0',
    };
    const serve = spawn(process.execPath, [cliPath, 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    cleanups.push(() => void serve.kill('SIGKILL'));
    let stdout = '';
    serve.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    const exited = new Promise<number | null>((r) => serve.on('exit', (code) => r(code)));
    const url = await waitFor(() => /"url":"(http:\/\/[^"]+)"[^\n]*listening/.exec(stdout)?.[1], {
      what: 'landfall serve to listen',
      timeoutMs: 15_000,
    });
    const adminUrl = /"adminUrl":"(http:\/\/[^"]+)"/.exec(stdout)?.[1];
    const sent: string[] = [];
    for (let r = 0; r < 4; r++) {
      const lines = Array.from({ length: 150 }, (_, i) => JSON.stringify({ r, i, msg: 'via the CLI' }));
      const res = await fetch(`${url}/v1/ingest`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson' },
        body: `${lines.join('\n')}\n`,
      });
      assert.equal(res.status, 202);
      sent.push(...lines);
    }
    const run = (args: string[]) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const p = spawn(process.execPath, [cliPath, ...args, '--bucket', bucket, '--prefix', 'lf/cli'], {
          env: { ...env, AWS_ENDPOINT_URL_S3: minio.endpoint },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        let err = '';
        p.stdout.on('data', (c: Buffer) => (out += c.toString()));
        p.stderr.on('data', (c: Buffer) => (err += c.toString()));
        p.on('exit', (code) => resolve({ code, out, err }));
      });
    // Each request was more than a segment: four seals, four commits.
    await waitFor(
      async () => {
        const c = await run(['commits', '--endpoint-name', endpoint]);
        return c.code === 0 && c.out.trim().split('\n').length >= 4;
      },
      { what: 'four commits', timeoutMs: 20_000, intervalMs: 250 },
    );
    const status = (await (await fetch(`${adminUrl ?? ''}/v1/status`)).json()) as {
      delivery?: { store?: string };
    };
    assert.equal(status.delivery?.store, `s3://${bucket}`);
    serve.kill('SIGTERM');
    assert.equal(await exited, 0);
    const expanded = await run(['expand', '--endpoint-name', endpoint, '--quiet']);
    assert.equal(expanded.code, 0, expanded.err);
    assert.equal(expanded.out, sent.map((l) => `${l}\n`).join(''));
    const verified = await run(['verify', '--endpoint-name', endpoint, '--deep']);
    assert.equal(verified.code, 0, verified.out + verified.err);
  });

  void test('stale multipart uploads under the key space are aborted at start', async () => {
    const bucket = await minio.newBucket();
    const prefix = 'lf/stale';
    const key = `${prefix}/segments/orders/orders-0/01ABCDEFGHJKMNPQRSTVWXYZ00/00000000000000000007.wal.zst`;
    const other = 'elsewhere/not-ours.bin';
    await raw.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
    await raw.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: other }));
    const n = await node(
      { dir: scratchDir('stale'), instance: 'orders-0', bucket, prefix, segmentBytesMax: 64 * 1024 },
      { staleUploadAgeMs: 1 },
    );
    await waitFor(() => n.pipeline.stats().staleUploadsAbortedTotal >= 1, {
      what: 'the stale upload abort',
      timeoutMs: 10_000,
    });
    const left = await raw.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    assert.deepEqual(
      (left.Uploads ?? []).map((u) => u.Key),
      [other],
    );
    await n.close();
  });
});
