// Views in delivery, on the real WAL and the local folder store: a node with
// views.dir and outputs.rawParquet delivers raw, view and DLQ Parquet with
// the segment archive, the marker lists them all with the view's spec hash
// and row accounting; a failure after some Parquet uploads re-uploads to the
// same keys. Read back with hyparquet (independent of DuckDB). The MinIO and
// `landfall serve` versions are test/e2e/views.test.ts and reprocess.test.ts.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { Registry } from 'prom-client';
import { systemClock } from '../src/clock.ts';
import { defaultConfig } from '../src/config/load.ts';
import { NodeFileSystem } from '../src/fs/node.ts';
import { silentLogger } from '../src/log.ts';
import { startNode } from '../src/node.ts';
import { parseCommitKey } from '../src/delivery/keys.ts';
import { readCommitMarker, type CommitMarker } from '../src/delivery/marker.ts';
import { parquetProducer, walToSegmentRecords } from '../src/delivery/parquet-producers.ts';
import { startPipeline } from '../src/delivery/pipeline.ts';
import { segmentArchiveProducer } from '../src/delivery/producers.ts';
import { LocalFolderObjectStore } from '../src/store/local.ts';
import type { ObjectStore } from '../src/store/types.ts';
import { compileView, createParquetDb, parseViewYaml, type ParquetDb } from '../src/views/index.ts';
import { encodeMqttPayload, type WalRecord } from '../src/wal/format.ts';
import { openWal } from '../src/wal/wal.ts';
import { RecordFormat } from '../src/wal/types.ts';
import { PAGE_VIEWS_YAML } from './fixtures/page-views.ts';

const PAGE_VIEWS = PAGE_VIEWS_YAML;
const prefix = 'lf';
const endpoint = 'web';
const instance = 'web-0';

// [payload, outcome]
const EVENTS: [string, string][] = [
  ['{"event":"page_view","user":"u1","ts":"2026-11-26T10:00:00Z"}', 'ok'],
  ['{"event":"page_view","user":"u2","ts":"2026-11-27T01:00:00Z"}', 'ok'],
  ['{"event":"page_view","ts":"2026-11-26T11:00:00.5Z"}', 'ok'],
  ['{"event":"click","user":"u3","ts":"2026-11-26T10:00:00Z"}', 'filtered'],
  ['{"event":"page_view","user":"u4","ts":"yesterday"}', 'cast_failed'],
  ['{"event":"page_view","user":"u5"}', 'missing_required'],
  ['{"user":"u6","ts":"2026-11-26T10:00:00Z"}', 'missing_required'],
  ['not json', 'invalid_json'],
];

let root: string;

beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'lf-views-delivery-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function readParquet(store: ObjectStore, key: string): Promise<Record<string, unknown>[]> {
  const body = await store.get(key, { bytesMax: 64 << 20 });
  assert.ok(body, `${key} exists`);
  const file = body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength) as ArrayBuffer;
  return (await parquetReadObjects({ file, compressors, utf8: false })) as Record<string, unknown>[];
}

async function waitUntil(
  what: string,
  probe: () => boolean | Promise<boolean>,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await probe())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

void describe('a node with views.dir and outputs.rawParquet', () => {
  void test('delivers raw, view and DLQ Parquet; the marker lists them with the spec hash and row accounting', async () => {
    const viewsDir = path.join(root, 'views');
    await mkdir(viewsDir);
    await writeFile(path.join(viewsDir, 'page_views.yaml'), PAGE_VIEWS);
    const bucket = path.join(root, 'bucket');
    const walDir = path.join(root, 'wal');
    const registry = new Registry();
    const node = await startNode(
      defaultConfig({
        listen: { port: 0 },
        endpoint: { name: endpoint },
        instance: { id: instance },
        wal: { dir: walDir, segmentAgeMsMax: 200 },
        s3: { localDir: bucket, prefix },
        outputs: { rawParquet: true },
        delivery: { staleUploadAgeMs: 0 },
        views: { dir: viewsDir, threads: 1, memoryLimitBytes: 128 * 1024 * 1024 },
      }),
      { registry },
    );
    let marker: CommitMarker | null | undefined;
    const childPids: number[] = [];
    const store = new LocalFolderObjectStore({ root: bucket });
    try {
      const res = await fetch(`${node.url}/v1/ingest`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson' },
        body: EVENTS.map(([p]) => p).join('\n') + '\n',
      });
      assert.equal(res.status, 202);
      await waitUntil(
        'the segment to be delivered',
        () => node.delivery!.pipeline.stats().segmentsDeliveredTotal >= 1,
      );
      const status = (await (await fetch(`${node.adminUrl}/v1/status`)).json()) as {
        views?: { loaded: { name: string; specSha256: string }[] };
        parquet?: { scratchDir: string; processes: { pid: number; jobsServed: number; state: string }[] };
      };
      assert.deepEqual(
        status.views?.loaded.map((v) => v.name),
        ['page_views'],
      );
      assert.equal(status.parquet?.scratchDir, path.join(walDir, 'parquet'));
      // The child that wrote the segment is kept, idle, for the next one.
      childPids.push(...(status.parquet?.processes ?? []).map((p) => p.pid));
      assert.equal(childPids.length, 1);
      assert.equal(status.parquet?.processes[0]?.jobsServed, 1);
      assert.equal(status.parquet?.processes[0]?.state, 'idle');
      process.kill(childPids[0]!, 0);
      const metrics = await registry.metrics();
      assert.match(metrics, /landfall_view_rows_total\{view="page_views",outcome="view"\} 3/);
      assert.match(metrics, /landfall_view_dlq_rows_total\{view="page_views",code="missing_required"\} 2/);
      assert.match(metrics, /landfall_views_loaded 1/);
      // Delivered segments are deleted locally: the marker is found by listing, as a consumer does.
      const listed = await store.list({ prefix: `${prefix}/commits/${endpoint}/${instance}/` });
      assert.equal(listed.objects.length, 1);
      marker = await readCommitMarker(store, prefix, parseCommitKey(prefix, listed.objects[0]!.key));
      assert.equal(status.views?.loaded[0]?.specSha256, marker?.views[0]?.specSha256);
    } finally {
      assert.equal(await node.shutdown('test'), true);
    }
    // A closed node leaves no child behind.
    for (const pid of childPids) assert.throws(() => process.kill(pid, 0), /ESRCH/);
    assert.match(await registry.metrics(), /landfall_parquet_child_retired_total\{reason="close"\} 1/);
    assert.ok(marker);
    const stem = `${instance}-${marker.epoch}-${marker.segmentId.toString().padStart(20, '0')}`;
    assert.deepEqual(
      marker.artifacts.map((a) => [a.kind, a.view ?? '', a.key.replace(stem, 'STEM'), a.rows]).sort(),
      [
        [
          'dlq',
          'page_views',
          'lf/dlq/page_views/dt=' +
            marker.artifacts
              .find((a) => a.kind === 'dlq')!
              .key.split('dt=')[1]!
              .slice(0, 10) +
            '/STEM.parquet',
          4,
        ],
        ['raw', '', `lf/raw/web/dt=${new Date().toISOString().slice(0, 10)}/STEM.parquet`, 8],
        [
          'segment',
          '',
          `lf/segments/web/web-0/${marker.epoch}/${marker.segmentId.toString().padStart(20, '0')}.wal.zst`,
          8,
        ],
        ['view', 'page_views', 'lf/views/page_views/dt=2026-11-26/STEM.parquet', 2],
        ['view', 'page_views', 'lf/views/page_views/dt=2026-11-27/STEM.parquet', 1],
      ].sort(),
    );
    const hash = await (async () => {
      const db = await createParquetDb({ memoryLimitBytes: 64 << 20, threads: 1 });
      try {
        return (await db.withConnection((c) => compileView(c, parseViewYaml(PAGE_VIEWS)))).specHash;
      } finally {
        await db.close();
      }
    })();
    assert.deepEqual(marker.views, [
      {
        name: 'page_views',
        specSha256: hash,
        rows: {
          in: 8,
          view: 3,
          filtered: 1,
          dlq: 4,
          dlqByCode: {
            invalid_json: 1,
            missing_required: 2,
            cast_failed: 1,
            expression_failed: 0,
            partition_value_too_long: 0,
            too_many_partitions: 0,
            view_failed: 0,
          },
        },
      },
    ]);
    // Independent read-back: the view files hold exactly the expected rows.
    const viewRows = [];
    for (const a of marker.artifacts.filter((x) => x.kind === 'view'))
      viewRows.push(...(await readParquet(store, a.key)));
    assert.deepEqual(viewRows.map((r) => [r['event'], r['user_id']]).sort(), [
      ['page_view', null],
      ['page_view', 'u1'],
      ['page_view', 'u2'],
    ]);
    const dlq = await readParquet(store, marker.artifacts.find((a) => a.kind === 'dlq')!.key);
    assert.deepEqual(
      dlq.map((r) => [r['error_code'], new TextDecoder().decode(r['payload'] as Uint8Array)]).sort(),
      EVENTS.filter(([, o]) => o !== 'ok' && o !== 'filtered')
        .map(([p, o]) => [o, p])
        .sort(),
    );
    const raw = await readParquet(store, marker.artifacts.find((a) => a.kind === 'raw')!.key);
    assert.deepEqual(
      raw.map((r) => new TextDecoder().decode(r['payload'] as Uint8Array)),
      EVENTS.map(([p]) => p),
    );
  });
});

void describe('the Parquet producer', () => {
  void test('MQTT records: the view reads the message, the topic travels beside it', async () => {
    async function* source(): AsyncGenerator<WalRecord> {
      yield {
        seq: 1n,
        ingestMicros: 5n,
        format: RecordFormat.mqtt,
        flags: 0,
        payload: encodeMqttPayload('site/a/temp', Buffer.from('{"t":21}')),
        offset: 0,
      };
      yield {
        seq: 2n,
        ingestMicros: 6n,
        format: RecordFormat.ndjson,
        flags: 0,
        payload: Buffer.from('{}'),
        offset: 0,
      };
    }
    const out = [];
    for await (const r of walToSegmentRecords(source())) out.push(r);
    assert.deepEqual(
      out.map((r) => [r.seq, Buffer.from(r.payload).toString(), r.topic]),
      [
        [1n, '{"t":21}', 'site/a/temp'],
        [2n, '{}', undefined],
      ],
    );
  });

  void test('a failure after some Parquet uploads: the retry uploads to the same keys, nothing is left outside the marker', async () => {
    const wal = await openWal({
      dir: path.join(root, 'wal'),
      endpoint,
      instance,
      fs: new NodeFileSystem(),
      clock: systemClock,
      log: silentLogger,
      segmentAgeMsMax: 3_600_000,
    });
    const inner = new LocalFolderObjectStore({ root: path.join(root, 'bucket') });
    const puts: string[] = [];
    let parquetPuts = 0;
    // The second Parquet upload of the first attempt fails for good (not
    // retryable): as if the node died after one Parquet object was written.
    const store: ObjectStore = {
      description: inner.description,
      put: async (...args) => {
        if (args[0].endsWith('.parquet') && ++parquetPuts === 2)
          throw Object.assign(new Error('injected: node died'), { retryable: false });
        puts.push(args[0]);
        return inner.put(...args);
      },
      createIfAbsent: (...args) => inner.createIfAbsent(...args),
      head: (key) => inner.head(key),
      list: (...args) => inner.list(...args),
      get: (...args) => inner.get(...args),
      getStream: (key) => inner.getStream(key),
      abortStaleMultipartUploads: (...args) => inner.abortStaleMultipartUploads(...args),
    };
    let db: ParquetDb | undefined;
    const pdb = async (): Promise<ParquetDb> =>
      (db ??= await createParquetDb({
        scratchDir: path.join(root, 'parquet'),
        memoryLimitBytes: 64 << 20,
        threads: 1,
      }));
    const compiled = await (await pdb()).withConnection((c) => compileView(c, parseViewYaml(PAGE_VIEWS)));
    const pipeline = await startPipeline({
      wal,
      store,
      prefix,
      endpoint,
      instance,
      scratchDir: path.join(root, 'scratch'),
      producers: [segmentArchiveProducer(), parquetProducer({ db: pdb, views: () => [compiled], raw: true })],
      retry: { attemptsMax: 1, retryDelayMsBase: 1, retryDelayMsMax: 1 },
      segmentRetryDelayMsMax: 10,
      staleUploadAgeMs: 0,
    });
    try {
      await wal.append(
        EVENTS.map(([p]) => Buffer.from(p)),
        RecordFormat.ndjson,
      );
      await wal.seal();
      await waitUntil('delivery', () => pipeline.stats().segmentsDeliveredTotal === 1);
      assert.ok(pipeline.stats().segmentFailuresTotal >= 1, 'the first attempt failed');
      const commits = await inner.list({ prefix: `${prefix}/commits/` });
      const ref = parseCommitKey(prefix, commits.objects[0]!.key);
      const marker = await readCommitMarker(inner, prefix, ref);
      assert.ok(marker);
      const listed = new Set(marker.artifacts.map((a) => a.key));
      for (const k of puts) assert.ok(listed.has(k), `${k} (uploaded) is in the marker`);
      assert.ok(
        puts.filter((k) => k.endsWith('.parquet')).length > listed.size - 1,
        'the Parquet files were uploaded again',
      );
      assert.equal(marker.views[0]?.rows?.in, EVENTS.length);
    } finally {
      await pipeline.stop();
      await wal.close();
      await db?.close();
    }
  });
});
