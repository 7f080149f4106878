// The delivery pipeline on the real WAL (temp dir) and the local folder store:
// what lands, in what order, what a restart skips, what corruption does, and
// how retries, retention and stop behave. MinIO end-to-end, crash and outage
// tests are in test/e2e/delivery*.test.ts.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { zstdDecompressSync } from 'node:zlib';
import { Value } from '@sinclair/typebox/value';
import { Registry } from 'prom-client';
import { systemClock } from '../src/clock.ts';
import { defaultConfig } from '../src/config/load.ts';
import { startNode } from '../src/node.ts';
import { NodeFileSystem } from '../src/fs/node.ts';
import { silentLogger } from '../src/log.ts';
import {
  DeliverySchema,
  startDelivery,
  storeConfigFor,
  type DeliveryConfig,
} from '../src/delivery/config.ts';
import { commitKey, segmentKey } from '../src/delivery/keys.ts';
import { readCommitMarker } from '../src/delivery/marker.ts';
import { defaultRetryPolicy } from '../src/delivery/retry.ts';
import {
  parseDeliveryProgress,
  startPipeline,
  type Pipeline,
  type PipelineEvent,
  type PipelineOptions,
} from '../src/delivery/pipeline.ts';
import { StoreError } from '../src/store/errors.ts';
import { sha256Hex } from '../src/store/hashing.ts';
import { LocalFolderObjectStore } from '../src/store/local.ts';
import type { ObjectStore } from '../src/store/types.ts';
import { openWal } from '../src/wal/wal.ts';
import { readSegment } from '../src/wal/format.ts';
import { RecordFormat, type Wal } from '../src/wal/types.ts';

const prefix = 'lf';
const endpoint = 'orders';
const instance = 'orders-0';
const fastRetry = { attemptsMax: 3, retryDelayMsBase: 1, retryDelayMsMax: 5 };

let root: string;
let walDir: string;
let store: LocalFolderObjectStore;
const opened: { wal?: Wal; pipelines: Pipeline[] } = { pipelines: [] };

beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'landfall-pipeline-'));
  walDir = path.join(root, 'wal');
  store = new LocalFolderObjectStore({ root: path.join(root, 'bucket') });
});
afterEach(async () => {
  for (const p of opened.pipelines.splice(0)) await p.stop({ graceMs: 100 });
  await opened.wal?.close();
  opened.wal = undefined;
  await rm(root, { recursive: true, force: true });
});

async function wal(): Promise<Wal> {
  const w = await openWal({
    dir: walDir,
    endpoint,
    instance,
    fs: new NodeFileSystem(),
    clock: systemClock,
    log: silentLogger,
    segmentAgeMsMax: 3_600_000,
  });
  opened.wal = w;
  return w;
}

async function pipeline(w: Wal, o: Partial<PipelineOptions> = {}): Promise<Pipeline> {
  const p = await startPipeline({
    wal: w,
    store,
    prefix,
    endpoint,
    instance,
    scratchDir: path.join(root, 'scratch'),
    retry: fastRetry,
    segmentRetryDelayMsMax: 20,
    staleUploadAgeMs: 0,
    ...o,
  });
  opened.pipelines.push(p);
  return p;
}

/** Appends `n` records to its own segment and seals it; returns the payloads. */
async function segmentOf(w: Wal, tag: string, n = 50): Promise<string[]> {
  const payloads = Array.from({ length: n }, (_, i) => JSON.stringify({ tag, i, pad: 'x'.repeat(i % 17) }));
  await w.append(
    payloads.map((p) => Buffer.from(p)),
    RecordFormat.ndjson,
  );
  await w.seal();
  return payloads;
}

/** Wraps a store: every method goes through `hook` first (which may throw or wait). */
function hooked(inner: ObjectStore, hook: (op: string, key: string) => Promise<void> | void): ObjectStore {
  return {
    description: inner.description,
    put: async (key, body, opts) => {
      await hook('put', key);
      return inner.put(key, body, opts);
    },
    createIfAbsent: async (key, body, opts) => {
      await hook('createIfAbsent', key);
      return inner.createIfAbsent(key, body, opts);
    },
    head: async (key, opts) => {
      await hook('head', key);
      return inner.head(key, opts);
    },
    list: (opts) => inner.list(opts),
    get: async (key, opts) => {
      await hook('get', key);
      return inner.get(key, opts);
    },
    getStream: (key, opts) => inner.getStream(key, opts),
    abortStaleMultipartUploads: (p, ms) => inner.abortStaleMultipartUploads(p, ms),
  };
}

function ref(id: bigint, epoch: string) {
  return { endpoint, instance, epoch, segmentId: id };
}

/** The records of an uploaded archive, decoded with the WAL's own reader. */
async function archivedPayloads(w: Wal, id: bigint): Promise<string[]> {
  const zst = await store.get(segmentKey(prefix, ref(id, w.epoch)), { bytesMax: 1 << 30 });
  assert.ok(zst, `archive of segment ${id}`);
  const { records } = readSegment(zstdDecompressSync(zst));
  return [...records].map((r) => Buffer.from(r.payload).toString());
}

void describe('delivery pipeline (local store)', () => {
  void test('delivers each sealed segment: archive of the exact bytes, marker last, local file deleted', async () => {
    const w = await wal();
    const registry = new Registry();
    const p = await pipeline(w, { registry });
    const a = await segmentOf(w, 'a');
    const b = await segmentOf(w, 'b', 500);
    const ids = w.sealedSegments().map((s) => s.id);
    const bytes = await Promise.all(ids.map((id) => readFile(w.segmentPath(id))));
    await p.idle();

    assert.deepEqual(await archivedPayloads(w, ids[0]!), a);
    assert.deepEqual(await archivedPayloads(w, ids[1]!), b);
    for (const [i, id] of ids.entries()) {
      const m = await readCommitMarker(store, prefix, ref(id, w.epoch));
      assert.ok(m, 'marker');
      assert.equal(m.segment.bytes, bytes[i]!.length);
      assert.equal(m.segment.sha256, sha256Hex(bytes[i]!));
      assert.equal(m.artifacts.length, 1);
      const art = m.artifacts[0]!;
      assert.equal(art.kind, 'segment');
      assert.equal(art.rows, i === 0 ? 50 : 500);
      const head = await store.head(art.key);
      assert.equal(head?.bytes, art.bytes);
      assert.equal(head?.sha256, art.sha256);
      assert.equal(existsSync(w.segmentPath(id)), false, 'local segment deleted');
    }
    assert.equal(w.sealedSegments().length, 0);
    const s = p.stats();
    assert.equal(s.segmentsDeliveredTotal, 2);
    assert.equal(s.markersWrittenTotal, 2);
    assert.equal(s.segmentsPending, 0);
    assert.equal(s.deletedTotal, 2);
    const text = await registry.metrics();
    assert.match(text, /landfall_delivery_segments_delivered_total 2/);
    assert.match(text, /landfall_delivery_seal_to_commit_seconds_count 2/);
    assert.deepEqual(await readdir(path.join(root, 'scratch')), [], 'scratch cleaned');
  });

  void test('a pipeline restarted in-process on the same registry replaces its metrics', async () => {
    const w = await wal();
    const registry = new Registry();
    const p1 = await pipeline(w, { registry });
    await p1.stop();
    const p2 = await pipeline(w, { registry });
    await segmentOf(w, 'a');
    await p2.idle();
    assert.match(await registry.metrics(), /landfall_delivery_segments_delivered_total 1/);
  });

  void test('a marker written before a crash is found on restart: marked delivered, nothing uploaded again', async () => {
    const w = await wal();
    // The "crash": the local mark after the marker never happens.
    const crashing = { ...w, markDelivered: () => Promise.reject(new Error('power cut')) } as unknown as Wal;
    crashing.sealedSegments = () => w.sealedSegments();
    crashing.deliveredSegments = () => w.deliveredSegments();
    crashing.onSealed = (l) => w.onSealed(l);
    crashing.segment = (id) => w.segment(id);
    crashing.segmentPath = (id) => w.segmentPath(id);
    crashing.updateProgress = (id, patch) => w.updateProgress(id, patch);
    const events: PipelineEvent[] = [];
    const p1 = await pipeline(crashing, { onEvent: (e) => events.push(e) });
    await segmentOf(w, 'a');
    const id = w.sealedSegments()[0]!.id;
    await waitUntil(() => events.some((e) => e.type === 'failed'));
    await p1.stop();
    assert.equal(w.segment(id)?.status, 'sealed');
    assert.ok(await store.head(commitKey(prefix, ref(id, w.epoch))));

    const puts: string[] = [];
    const p2 = await pipeline(w, {
      store: hooked(store, (op, key) => void (op === 'put' && puts.push(key))),
    });
    await p2.idle();
    assert.deepEqual(puts, []);
    assert.equal(p2.stats().markersFoundTotal, 1);
    assert.equal(p2.stats().uploadsTotal, 0);
    assert.equal(w.segment(id), undefined, 'delivered and deleted');
  });

  void test('recorded uploads are not redone after a restart; the marker then lists them', async () => {
    const w = await wal();
    let failMarker = true;
    const s1 = hooked(store, (op) => {
      if (op === 'createIfAbsent' && failMarker) throw new StoreError('access_denied', 'no');
    });
    const events: PipelineEvent[] = [];
    const p1 = await pipeline(w, { store: s1, onEvent: (e) => events.push(e) });
    await segmentOf(w, 'a');
    const id = w.sealedSegments()[0]!.id;
    await waitUntil(() => events.some((e) => e.type === 'failed'));
    await p1.stop();
    const progress = parseDeliveryProgress(w.segment(id)!.progress);
    assert.equal(progress.artifacts['segment']?.length, 1);
    assert.ok(progress.segment);

    failMarker = false;
    const puts: string[] = [];
    const p2 = await pipeline(w, {
      store: hooked(store, (op, key) => void (op === 'put' && puts.push(key))),
    });
    await p2.idle();
    assert.deepEqual(puts, [], 'the archive was not uploaded again');
    const m = await readCommitMarker(store, prefix, ref(id, w.epoch));
    assert.deepEqual(m?.artifacts, progress.artifacts['segment']);
    assert.equal(m?.segment.sha256, progress.segment.sha256);
  });

  void test('a recorded artifact that vanished from the store is rebuilt before the marker', async () => {
    const w = await wal();
    let failMarker = true;
    const events: PipelineEvent[] = [];
    const p1 = await pipeline(w, {
      store: hooked(store, (op) => {
        if (op === 'createIfAbsent' && failMarker) throw new StoreError('access_denied', 'no');
      }),
      onEvent: (e) => events.push(e),
    });
    await segmentOf(w, 'a');
    const id = w.sealedSegments()[0]!.id;
    await waitUntil(() => events.some((e) => e.type === 'failed'));
    await p1.stop();
    failMarker = false;
    await rm(path.join(root, 'bucket', segmentKey(prefix, ref(id, w.epoch))));
    const p2 = await pipeline(w);
    await p2.idle();
    assert.equal(p2.stats().uploadsTotal, 1);
    const m = await readCommitMarker(store, prefix, ref(id, w.epoch));
    assert.ok(m && (await store.head(m.artifacts[0]!.key)));
  });

  void test('markers commit in segment order even when an earlier upload is slow', async () => {
    const w = await wal();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const markers: string[] = [];
    const s = hooked(store, async (op, key) => {
      // The first segment's archive (not the first archive put: segments are
      // produced concurrently, and a later one may reach its upload first).
      const first = w.sealedSegments()[0];
      if (
        op === 'put' &&
        first !== undefined &&
        key.endsWith(`/${first.id.toString().padStart(20, '0')}.wal.zst`)
      )
        await gate;
      if (op === 'createIfAbsent') markers.push(key);
    });
    const events: PipelineEvent[] = [];
    const p = await pipeline(w, { store: s, segmentsInFlightMax: 3, onEvent: (e) => events.push(e) });
    for (const tag of ['a', 'b', 'c', 'd']) await segmentOf(w, tag);
    const ids = w.sealedSegments().map((x) => x.id);
    // b, c (and d) get uploaded and wait; no marker may be written before a's.
    await waitUntil(() => events.filter((e) => e.type === 'uploaded').length >= 2);
    assert.deepEqual(markers, []);
    release();
    await p.idle();
    assert.deepEqual(
      markers,
      ids.map((id) => commitKey(prefix, ref(id, w.epoch))),
    );
  });

  void test('a corrupt sealed segment is quarantined (kept, not delivered); later segments still deliver', async () => {
    const w = await wal();
    await segmentOf(w, 'a');
    await segmentOf(w, 'b');
    const [first, second] = w.sealedSegments();
    assert.ok(first && second);
    // Flip one payload byte in the middle of the first segment.
    const fh = await open(w.segmentPath(first.id), 'r+');
    const at = Math.floor(first.bytes / 2);
    const buf = Buffer.alloc(1);
    await fh.read(buf, 0, 1, at);
    buf[0] = buf[0]! ^ 0xff;
    await fh.write(buf, 0, 1, at);
    await fh.close();

    const events: PipelineEvent[] = [];
    const p = await pipeline(w, { onEvent: (e) => events.push(e) });
    await p.idle();
    assert.equal(p.stats().quarantinedTotal, 1);
    assert.ok(events.some((e) => e.type === 'quarantined' && e.segmentId === first.id));
    assert.equal(await store.head(commitKey(prefix, ref(first.id, w.epoch))), null, 'no marker');
    assert.equal(await store.head(segmentKey(prefix, ref(first.id, w.epoch))), null, 'no archive');
    assert.ok(await store.head(commitKey(prefix, ref(second.id, w.epoch))));
    const q = await readdir(path.join(walDir, 'quarantine'));
    assert.ok(q.includes(first.fileName), `quarantine holds ${first.fileName}: ${q.join(',')}`);
  });

  void test('a segment file longer than its recorded bytes is delivered up to the recorded length only', async () => {
    const w = await wal();
    const a = await segmentOf(w, 'a');
    const seg = w.sealedSegments()[0]!;
    const exact = await readFile(w.segmentPath(seg.id));
    const fh = await open(w.segmentPath(seg.id), 'a');
    await fh.write(Buffer.from('garbage after a failed write'));
    await fh.close();
    const p = await pipeline(w);
    await p.idle();
    assert.deepEqual(await archivedPayloads(w, seg.id), a);
    const m = await readCommitMarker(store, prefix, ref(seg.id, w.epoch));
    assert.equal(m?.segment.sha256, sha256Hex(exact));
  });

  void test('retryable store errors are retried; a failed segment is rescheduled, never dropped', async () => {
    const w = await wal();
    let failures = 7; // more than one step's attempts: the segment itself is retried too
    const s = hooked(store, (op) => {
      if ((op === 'put' || op === 'createIfAbsent') && failures-- > 0)
        throw new StoreError('throttled', 'SlowDown');
    });
    const p = await pipeline(w, { store: s });
    await segmentOf(w, 'a');
    await p.idle();
    const st = p.stats();
    assert.equal(st.segmentsDeliveredTotal, 1);
    assert.ok(st.uploadRetriesTotal >= 2, `retries ${st.uploadRetriesTotal}`);
    assert.ok(st.segmentFailuresTotal >= 1, `segment failures ${st.segmentFailuresTotal}`);
    assert.equal(st.lastError?.segmentId, '00000000000000000001');
  });

  void test('a segment whose marker write gives up is retried by itself (no later seal needed to wake it)', async () => {
    const w = await wal();
    let failures = 4; // > attemptsMax: the commit step gives up once, after the upload slot was released
    const s = hooked(store, (op) => {
      if (op === 'createIfAbsent' && failures-- > 0) throw new StoreError('server', 'InternalError');
    });
    const p = await pipeline(w, { store: s });
    await segmentOf(w, 'a');
    await p.idle();
    assert.equal(p.stats().segmentsDeliveredTotal, 1);
    assert.equal(p.stats().segmentFailuresTotal, 1);
  });

  void test('retention keeps the newest delivered segments within the count and byte budget', async () => {
    const w = await wal();
    const p = await pipeline(w, { retention: { segments: 2 } });
    for (const tag of ['a', 'b', 'c', 'd']) await segmentOf(w, tag);
    const ids = w.sealedSegments().map((x) => x.id);
    await p.idle();
    await waitUntil(() => w.sealedSegments().length === 2);
    assert.deepEqual(
      w.sealedSegments().map((x) => [x.id, x.status]),
      ids.slice(2).map((id) => [id, 'delivered']),
    );
    await p.stop();
    // A smaller byte budget at the next start deletes down to it.
    const one = w.sealedSegments()[1]!.bytes;
    const p2 = await pipeline(w, { retention: { segments: 5, bytes: one } });
    await waitUntil(() => w.sealedSegments().length === 1);
    await p2.stop();
  });

  // Issue 14: stale uploads were aborted only at start; a node that runs for
  // months kept paying for the parts of every upload a crash left behind.
  void test('stale uploads are swept periodically, not only at start', async () => {
    const w = await wal();
    let sweeps = 0;
    let sweptTwice!: () => void;
    const twice = new Promise<void>((r) => (sweptTwice = r));
    const counting: ObjectStore = {
      ...hooked(store, () => {}),
      abortStaleMultipartUploads: async (p, olderThanMs) => {
        const n = await store.abortStaleMultipartUploads(p, olderThanMs);
        if (p.endsWith('dlq/') && ++sweeps === 2) sweptTwice();
        return n;
      },
    };
    await pipeline(w, { store: counting, staleUploadAgeMs: 60_000, staleUploadCheckIntervalMs: 20 });
    // A temp file a crashed upload left behind, two days old, appears after the sweep at start.
    const tmpDir = path.join(root, 'bucket', '.landfall', 'tmp');
    await mkdir(tmpDir, { recursive: true });
    const stale = path.join(tmpDir, 'crashed-upload');
    await writeFile(stale, 'parts');
    const old = new Date(Date.now() - 2 * 24 * 3600_000);
    await utimes(stale, old, old);
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<'limit'>((r) => (timer = setTimeout(() => r('limit'), 20_000)));
    const outcome = await Promise.race([twice.then(() => 'swept' as const), limit]);
    clearTimeout(timer);
    assert.equal(outcome, 'swept', 'no second sweep after the one at start');
    // The periodic sweep (one at a time) removed it.
    while (existsSync(stale)) await new Promise((r) => setTimeout(r, 5));
    assert.ok(!existsSync(stale));
  });

  void test('stop() abandons a stuck upload safely; the next start delivers it', async () => {
    const w = await wal();
    // An upload that never finishes by itself, only when aborted (as the S3 store's do).
    const s: ObjectStore = {
      ...hooked(store, () => {}),
      put: (_key, _body, opts) =>
        new Promise((_resolve, reject) =>
          opts?.signal?.addEventListener('abort', () => reject(new StoreError('network', 'aborted'))),
        ),
    };
    const events: PipelineEvent[] = [];
    const p1 = await pipeline(w, { store: s, onEvent: (e) => events.push(e) });
    await segmentOf(w, 'a');
    await waitUntil(() => events.some((e) => e.type === 'produced'));
    const t0 = performance.now();
    await p1.stop({ graceMs: 50 });
    assert.ok(performance.now() - t0 < 5_000);
    assert.equal(w.sealedSegments()[0]?.status, 'sealed');
    const p2 = await pipeline(w);
    await p2.idle();
    assert.equal(w.sealedSegments().length, 0);
  });
});

void describe('startDelivery (what node.ts calls)', () => {
  void test('an S3 target as the operator renders it becomes an S3 store config', () => {
    const c = storeConfigFor(
      {
        bucket: 'b',
        region: 'eu-west-1',
        prefix: 'a/b/',
        endpointUrl: 'http://minio:9000',
        forcePathStyle: true,
      },
      { mode: 'webIdentity', roleArn: 'arn:aws:iam::1:role/r' },
    );
    assert.equal(c.prefix, 'a/b');
    assert.deepEqual(c.store, {
      kind: 's3',
      bucket: 'b',
      region: 'eu-west-1',
      endpoint: 'http://minio:9000',
      forcePathStyle: true,
      credentials: { mode: 'webIdentity', roleArn: 'arn:aws:iam::1:role/r' },
    });
  });

  void test('config block defaults, local store, scratch inside the WAL dir, byte-only retention', async () => {
    const w = await wal();
    const delivery = Value.Default(DeliverySchema, {}) as DeliveryConfig;
    assert.equal(delivery.segmentsInFlightMax, 2);
    assert.equal(delivery.retryAttemptsMax, defaultRetryPolicy.attemptsMax);
    assert.equal(delivery.retryDelayMsMax, defaultRetryPolicy.retryDelayMsMax);
    assert.equal(delivery.retainDeliveredSegments, 0);
    const running = await startDelivery({
      wal: w,
      endpoint,
      instance,
      ...storeConfigFor({ localDir: path.join(root, 'bucket'), prefix: `${prefix}/` }),
      delivery: { ...delivery, retainDeliveredBytes: 1 },
      clock: systemClock,
      log: silentLogger,
    });
    await segmentOf(w, 'a');
    const id = w.sealedSegments()[0]!.id;
    await running.pipeline.idle();
    assert.ok(await store.head(commitKey(prefix, ref(id, w.epoch))));
    assert.equal(w.sealedSegments().length, 0, 'a 1-byte budget keeps nothing');
    assert.ok(existsSync(path.join(walDir, 'delivery')));
    await running.stop();
  });
});

void describe('startNode with a delivery target', () => {
  void test('HTTP → WAL → local folder: committed, in /v1/status and /metrics; no target, no delivery', async () => {
    const bucket = path.join(root, 'bucket');
    const node = await startNode(
      defaultConfig({
        listen: { port: 0 },
        endpoint: { name: endpoint },
        instance: { id: instance },
        wal: { dir: walDir, segmentBytesMax: 4096 },
        s3: { localDir: bucket, prefix },
        delivery: { staleUploadAgeMs: 0 },
      }),
    );
    try {
      // Three requests, each more than a segment: three seals.
      for (let r = 0; r < 3; r++) {
        const lines = Array.from({ length: 100 }, (_, i) => JSON.stringify({ r, i, pad: 'p'.repeat(40) }));
        const res = await fetch(`${node.url}/v1/ingest`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-ndjson' },
          body: lines.join('\n') + '\n',
        });
        assert.equal(res.status, 202);
      }
      assert.ok(node.delivery);
      await waitUntil(() => node.delivery!.pipeline.stats().segmentsDeliveredTotal >= 2);
      const local = new LocalFolderObjectStore({ root: bucket });
      const listed = await local.list({ prefix: `${prefix}/commits/${endpoint}/${instance}/` });
      assert.ok(listed.objects.length >= 2);
      const status = (await (await fetch(`${node.adminUrl}/v1/status`)).json()) as {
        delivery?: { store: string };
      };
      assert.match(status.delivery?.store ?? '', /^file:\/\//);
      assert.match(
        await (await fetch(`${node.adminUrl}/metrics`)).text(),
        /landfall_delivery_segments_delivered_total [1-9]/,
      );
    } finally {
      assert.equal(await node.shutdown('test'), true);
    }
    const plain = await startNode(
      defaultConfig({ listen: { port: 0 }, wal: { dir: path.join(root, 'wal2') } }),
    );
    assert.equal(plain.delivery, undefined);
    await plain.shutdown('test');
  });
});

async function waitUntil(probe: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!probe()) {
    if (performance.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 5));
  }
}
