// Draining a node (issue #13), against a real MinIO with `landfall serve` as a
// child process and a ledger of what every producer was told:
//   - drain mode: POST /v1/drain (scope `drain` only) refuses writes with 503
//     LF_DRAINING + Retry-After, /readyz 503, and reports drained only once
//     every acknowledged record is committed; DELETE resumes writes;
//   - SIGTERM with a backlog: the node delivers it before it exits; with the
//     bucket down it stops after shutdown.timeoutMs and logs what is left;
//   - `landfall drain` on the WAL of a node SIGKILLed mid-load: with MinIO
//     down it exits 1 within --timeout-ms and loses nothing, with MinIO back
//     it exits 0 and every acknowledged record is committed.
// Segments never seal by age here (wal.segmentAgeMsMax 1 h): whatever is in
// the open segment reaches the bucket only through a drain.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { scratchDir, startMinio, waitFor, type MinioServer } from '../harness/index.ts';
import { committedIdCounts } from './helpers/committed.ts';
import { run as drain } from '../../ingest-node/src/commands/drain.ts';
import { CLI } from './helpers/cli-node.ts';
import { Ledger } from './helpers/ledger.ts';
import { startProducers } from './helpers/producers.ts';
import { awsEnv, serve, type ServeNode } from './helpers/views.ts';

const endpoint = 'drains';
const WRITER = 'lf_writer_key_0001';
const PLAIN = 'lf_plain_key_0002';
const OPERATOR = 'lf_operator_key_0003';

let minio: MinioServer;
before(async () => {
  minio = await startMinio();
});
after(async () => {
  await minio?.stop();
});

/** A seeded generator: the same batches every run. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

interface Setup {
  readonly dir: string;
  readonly bucket: string;
  readonly prefix: string;
  readonly instance: string;
  readonly keys: string;
}

async function setup(label: string): Promise<Setup> {
  const dir = scratchDir(label);
  const keys = path.join(dir, 'keys');
  // PLAIN has no scopes: ingest and status, never drain.
  await writeFile(keys, `${WRITER} ingest\n${PLAIN}\n${OPERATOR} status drain\n`);
  return { dir, bucket: await minio.newBucket(), prefix: `lf/${label}`, instance: `${label}-0`, keys };
}

/** Flags shared by the node and the drainer (the drainer gets no instance id: it reads the WAL's). */
function storeFlags(s: Setup): string[] {
  return [
    `--s3.bucket=${s.bucket}`,
    `--s3.endpointUrl=${minio.endpoint}`,
    `--s3.prefix=${s.prefix}`,
    `--endpoint.name=${endpoint}`,
    `--wal.dir=${path.join(s.dir, 'wal')}`,
    '--delivery.staleUploadAgeMs=0',
    '--delivery.retryAttemptsMax=3',
    '--delivery.retryDelayMsMax=300',
    '--delivery.segmentRetryDelayMsMax=500',
  ];
}

function startNode(s: Setup, extra: readonly string[] = []): Promise<ServeNode> {
  return serve(`node-${s.instance}`, minio, path.join(s.dir, `node-${Date.now()}.log`), [
    ...storeFlags(s),
    `--instance.id=${s.instance}`,
    `--auth.apiKeysFile=${s.keys}`,
    '--wal.segmentBytesMax=65536',
    '--wal.segmentAgeMsMax=3600000',
    ...extra,
  ]);
}

/** Record ids in the committed segments of one instance, via `landfall expand` (what a consumer sees). */
const committedIds = (s: Setup): Promise<Map<string, number>> =>
  committedIdCounts(minio, {
    endpointName: endpoint,
    instance: s.instance,
    bucket: s.bucket,
    prefix: s.prefix,
  });

/** Every record of every acknowledged request is committed (once); nothing of a refused one is. */
function checkLedger(ledger: Ledger, ids: ReadonlyMap<string, number>): void {
  let lost = 0;
  let refusedPresent = 0;
  let twice = 0;
  for (const r of ledger.requests) {
    for (const id of r.recordIds) {
      const n = ids.get(id) ?? 0;
      if (r.outcome?.kind === 'acked' && n === 0) lost++;
      if (r.outcome?.kind === 'refused' && n > 0) refusedPresent++;
      if (n > 1) twice++;
    }
  }
  assert.equal(lost, 0, `${lost} acknowledged records are not committed`);
  assert.equal(refusedPresent, 0, `${refusedPresent} records of refused requests are committed`);
  assert.equal(twice, 0, `${twice} records are committed twice`);
}

async function api(
  url: string,
  method: string,
  route: string,
  key: string | undefined,
): Promise<{ status: number; body: Record<string, unknown>; retryAfter: string | null }> {
  const res = await fetch(`${url}${route}`, {
    method,
    headers: key === undefined ? {} : { 'x-api-key': key },
  });
  const text = await res.text();
  return {
    status: res.status,
    body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>),
    retryAfter: res.headers.get('retry-after'),
  };
}

interface DrainJson {
  readonly draining: boolean;
  readonly drained: boolean;
  readonly sinceMs: number | null;
}

async function ingestOne(
  url: string,
  id: string,
): Promise<{ status: number; code?: string; retryAfter: string | null }> {
  const res = await fetch(`${url}/v1/ingest`, {
    method: 'POST',
    headers: { 'x-api-key': WRITER, 'content-type': 'application/x-ndjson' },
    body: `{"id":"${id}"}\n`,
  });
  const body = (await res.json()) as { error?: { code?: string } };
  return {
    status: res.status,
    ...(body.error?.code !== undefined ? { code: body.error.code } : {}),
    retryAfter: res.headers.get('retry-after'),
  };
}

/** `landfall drain` as a process: exit code, the final JSON line, stderr. */
function runDrainer(
  args: readonly string[],
  boundMs: number,
): Promise<{ code: number | null; summary: Record<string, unknown> | undefined; err: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, 'drain', ...args], {
      env: { PATH: process.env['PATH'] ?? '', ...awsEnv(minio) },
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    // Not a timing assertion: a drainer that never exits must fail the test, not hang it.
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`landfall drain did not exit within ${boundMs} ms:\n${err.slice(-3000)}`));
    }, boundMs);
    p.on('exit', (code) => {
      clearTimeout(timer);
      const last = out.trimEnd().split('\n').pop() ?? '';
      let summary: Record<string, unknown> | undefined;
      try {
        summary = JSON.parse(last) as Record<string, unknown>;
      } catch {
        summary = undefined;
      }
      resolve({ code, summary, err });
    });
  });
}

void describe('drain mode (POST /v1/drain)', () => {
  void test('refuses writes with 503 LF_DRAINING, drains everything acknowledged, DELETE resumes; scope drain only', async (t) => {
    const s = await setup('mode');
    const node = await startNode(s);
    t.after(() => node.proc.stop({ graceMs: 30_000 }));
    const ledger = new Ledger();
    const producers = startProducers({
      url: node.url,
      ledger,
      concurrency: 4,
      random: seeded(13),
      idPrefix: 'mode',
      recordsMax: 20,
      padMax: 400,
      headers: { 'x-api-key': WRITER },
      pauseAfterRefusalMs: 20,
    });
    let stopped = false;
    try {
      await waitFor(() => ledger.counts().acked >= 300, {
        what: '300 acknowledged requests',
        timeoutMs: 60_000,
        intervalMs: 20,
        process: node.proc,
      });

      // Scope: neither a producer's key nor a key line without scopes may drain.
      const forbidden = await api(node.adminUrl, 'POST', '/v1/drain', WRITER);
      assert.equal(forbidden.status, 403);
      assert.equal((forbidden.body.error as { code: string }).code, 'LF_FORBIDDEN');
      const plain = await api(node.adminUrl, 'POST', '/v1/drain', PLAIN);
      assert.equal(plain.status, 403, 'a key line without scopes has no drain scope');
      assert.equal((await api(node.adminUrl, 'DELETE', '/v1/drain', PLAIN)).status, 403);
      assert.equal((await api(node.adminUrl, 'POST', '/v1/drain', undefined)).status, 401);
      const st0 = await api(node.adminUrl, 'GET', '/v1/status', PLAIN);
      assert.deepEqual(st0.body.drain, { draining: false, drained: false, sinceMs: null });

      const posted = await api(node.adminUrl, 'POST', '/v1/drain', OPERATOR);
      assert.equal(posted.status, 202, JSON.stringify(posted.body));
      const d0 = posted.body.drain as DrainJson;
      assert.equal(d0.draining, true);
      assert.equal(typeof d0.sinceMs, 'number');
      // Idempotent: the same drain, the same start.
      const again = await api(node.adminUrl, 'POST', '/v1/drain', OPERATOR);
      assert.equal(again.status, 202);
      assert.equal((again.body.drain as DrainJson).sinceMs, d0.sinceMs);

      // Writes are refused from now on, for the running producers too.
      const refused = await ingestOne(node.url, 'mode.direct.refused');
      assert.deepEqual(refused, { status: 503, code: 'LF_DRAINING', retryAfter: '1' });
      const ready = await api(node.url, 'GET', '/readyz', undefined);
      assert.equal(ready.status, 503);
      assert.deepEqual(ready.body, { ready: false, reasons: ['draining'] });
      await waitFor(() => (ledger.refusals().get('503 LF_DRAINING') ?? 0) >= 8, {
        what: 'producers refused with LF_DRAINING',
        timeoutMs: 30_000,
        intervalMs: 20,
      });
      await producers.stop();
      stopped = true;
      for (const r of ledger.requests)
        if (r.outcome?.kind === 'refused' && r.outcome.code === 'LF_DRAINING')
          assert.equal(r.outcome.retryAfter, '1', 'every LF_DRAINING answer carries Retry-After');

      // drained: only once everything is committed. Whenever status says so, the bucket must agree.
      const status = await waitFor(
        async () => {
          const st = await api(node.adminUrl, 'GET', '/v1/status', OPERATOR);
          return (st.body.drain as DrainJson).drained ? st.body : undefined;
        },
        { what: 'drain.drained', timeoutMs: 60_000, intervalMs: 50, process: node.proc },
      );
      const ids = await committedIds(s);
      checkLedger(ledger, ids);
      const wal = status.wal as { openSegmentBytes: number };
      const delivery = status.delivery as { segmentsPending: number; segmentsDeliveredTotal: number };
      assert.equal(wal.openSegmentBytes, 0);
      assert.equal(delivery.segmentsPending, 0);
      const c = ledger.counts();
      t.diagnostic(
        `${c.ackedRecords} records acknowledged in ${c.acked} requests, ${c.refused} refused ` +
          `(${[...ledger.refusals()].map(([k, n]) => `${k} ×${n}`).join(', ')}); ` +
          `${ids.size} committed in ${delivery.segmentsDeliveredTotal} segments`,
      );

      // DELETE: writes again.
      const deleted = await api(node.adminUrl, 'DELETE', '/v1/drain', OPERATOR);
      assert.equal(deleted.status, 200);
      assert.deepEqual(deleted.body.drain, { draining: false, drained: false, sinceMs: null });
      assert.equal((await ingestOne(node.url, 'mode.direct.after')).status, 202);
      assert.equal((await api(node.url, 'GET', '/readyz', undefined)).status, 200);
      // Draining again picks up what came in since.
      assert.equal((await api(node.adminUrl, 'POST', '/v1/drain', OPERATOR)).status, 202);
      await waitFor(
        async () =>
          ((await api(node.adminUrl, 'GET', '/v1/status', OPERATOR)).body.drain as DrainJson).drained,
        { what: 'the second drain', timeoutMs: 60_000, intervalMs: 50, process: node.proc },
      );
      assert.equal((await committedIds(s)).get('mode.direct.after'), 1);
    } finally {
      if (!stopped) await producers.stop();
    }
  });
});

void describe('SIGTERM', () => {
  void test('a node stopped with a backlog delivers everything acknowledged before it exits', async (t) => {
    const s = await setup('sigterm');
    const node = await startNode(s, ['--shutdown.timeoutMs=60000']);
    const ledger = new Ledger();
    const producers = startProducers({
      url: node.url,
      ledger,
      concurrency: 4,
      random: seeded(7),
      idPrefix: 'term',
      recordsMax: 20,
      padMax: 400,
      headers: { 'x-api-key': WRITER },
      pauseAfterRefusalMs: 20,
      timeoutMs: 60_000,
    });
    try {
      await waitFor(() => ledger.counts().acked >= 400, {
        what: '400 acknowledged requests',
        timeoutMs: 60_000,
        intervalMs: 20,
        process: node.proc,
      });
      const st = await api(node.adminUrl, 'GET', '/v1/status', PLAIN);
      const openBytes = (st.body.wal as { openSegmentBytes: number }).openSegmentBytes;
      t.diagnostic(
        `at SIGTERM: open segment ${openBytes} bytes, delivery ${JSON.stringify(st.body.delivery)}`,
      );
      // SIGTERM under load; the producers keep going until the node is gone.
      await node.proc.stop({ graceMs: 90_000 });
    } finally {
      await producers.stop();
    }
    const exit = await node.proc.exited;
    assert.deepEqual(exit, { code: 0, signal: null }, node.proc.logTail());
    const logs = node.logs();
    assert.ok(
      logs.some((l) => l.msg === 'shutdown: every acknowledged record is delivered'),
      node.proc.logTail(),
    );
    checkLedger(ledger, await committedIds(s));
    const c = ledger.counts();
    assert.ok(c.acked >= 400);
    t.diagnostic(`${c.ackedRecords} records acknowledged in ${c.acked} requests, all committed`);
  });

  void test('with the bucket down, SIGTERM gives up after shutdown.timeoutMs, says what is left, and the drainer delivers it later', async (t) => {
    const s = await setup('termdown');
    const node = await startNode(s, ['--shutdown.timeoutMs=4000']);
    const ledger = new Ledger();
    const producers = startProducers({
      url: node.url,
      ledger,
      concurrency: 2,
      random: seeded(5),
      idPrefix: 'down',
      recordsMax: 20,
      padMax: 400,
      headers: { 'x-api-key': WRITER },
    });
    let restarted = false;
    try {
      await waitFor(() => ledger.counts().acked >= 100, {
        what: '100 acknowledged requests',
        timeoutMs: 60_000,
        intervalMs: 20,
        process: node.proc,
      });
      await producers.stop();
      await minio.stopServer({ graceMs: 0 });
      await node.proc.stop({ graceMs: 60_000 });
      const exit = await node.proc.exited;
      assert.deepEqual(exit, { code: 0, signal: null }, node.proc.logTail());
      const left = node.logs().find((l) => l.msg?.startsWith('shutdown: undelivered segments left') === true);
      assert.ok(left !== undefined, node.proc.logTail());
      assert.ok((left['segmentsLeft'] as number) > 0);
      t.diagnostic(
        `left at exit: ${String(left['segmentsLeft'])} segments, ${String(left['bytesLeft'])} bytes`,
      );
      await minio.startServer();
      restarted = true;
    } finally {
      await producers.stop();
      if (!restarted) await minio.startServer();
    }
    const up = await runDrainer([...storeFlags(s), '--timeout-ms=120000'], 180_000);
    assert.equal(up.code, 0, up.err.slice(-3000));
    assert.ok((up.summary?.segmentsDelivered as number) > 0);
    checkLedger(ledger, await committedIds(s));
  });
});

void describe('landfall drain (the drainer)', () => {
  void test('a WAL left by SIGKILL mid-load: MinIO down → exit 1 within --timeout-ms, nothing lost; MinIO up → exit 0, everything committed', async (t) => {
    const s = await setup('drainer');
    const node = await startNode(s);
    const ledger = new Ledger();
    const producers = startProducers({
      url: node.url,
      ledger,
      concurrency: 4,
      random: seeded(21),
      idPrefix: 'kill',
      recordsMax: 20,
      padMax: 400,
      headers: { 'x-api-key': WRITER },
      timeoutMs: 10_000,
    });
    try {
      await waitFor(() => ledger.counts().acked >= 400, {
        what: '400 acknowledged requests',
        timeoutMs: 60_000,
        intervalMs: 20,
        process: node.proc,
      });
      await node.proc.stop({ graceMs: 0 }); // SIGKILL
    } finally {
      await producers.stop();
    }
    assert.equal((await node.proc.exited).signal, 'SIGKILL');
    const before = await committedIds(s);
    const c = ledger.counts();
    t.diagnostic(
      `${c.ackedRecords} records acknowledged; ${before.size} committed by the node before the kill`,
    );

    // MinIO down: bounded, exit 1, says what is left.
    await minio.stopServer({ graceMs: 0 });
    let restarted = false;
    try {
      const down = await runDrainer([...storeFlags(s), '--timeout-ms=8000'], 90_000);
      assert.equal(down.code, 1, down.err.slice(-3000));
      assert.ok(down.summary !== undefined, down.err.slice(-3000));
      assert.equal(down.summary.drained, false);
      assert.ok((down.summary.segmentsLeft as number) > 0, JSON.stringify(down.summary));
      assert.equal(down.summary.instance, s.instance, "the instance id comes from the WAL's segments");
      t.diagnostic(`MinIO down: ${JSON.stringify(down.summary)}`);
      await minio.startServer();
      restarted = true;
    } finally {
      if (!restarted) await minio.startServer();
    }

    const up = await runDrainer([...storeFlags(s), '--timeout-ms=120000'], 180_000);
    assert.equal(up.code, 0, up.err.slice(-3000));
    assert.equal(up.summary?.drained, true);
    assert.equal(up.summary?.segmentsLeft, 0);
    assert.equal(up.summary?.quarantinedSegments, 0);
    t.diagnostic(`MinIO up: ${JSON.stringify(up.summary)}`);
    checkLedger(ledger, await committedIds(s));

    // Again: nothing to do, still 0.
    const again = await runDrainer([...storeFlags(s), '--timeout-ms=60000'], 120_000);
    assert.equal(again.code, 0, again.err.slice(-3000));
    assert.equal(again.summary?.segmentsDelivered, 0);
  });

  void test('a missing WAL dir is drained at once; no target or a bad --timeout-ms is a usage error', async () => {
    const dir = scratchDir('drainer-usage');
    let out = '';
    let err = '';
    const io = { out: (x: string) => (out += x), err: (x: string) => (err += x), env: {} };
    const missing = path.join(dir, 'no-such-wal');
    assert.equal(await drain([`--wal.dir=${missing}`, `--s3.localDir=${path.join(dir, 'b')}`], io), 0, err);
    const summary = JSON.parse(out.trim()) as Record<string, unknown>;
    assert.equal(summary.drained, true);
    assert.equal(summary.segmentsDelivered, 0);
    assert.equal(await drain([`--wal.dir=${missing}`], io), 2, 'no delivery target');
    assert.match(err, /no delivery target/);
    assert.equal(await drain(['--timeout-ms=soon', `--s3.localDir=${dir}`], io), 2);
    assert.equal(await drain(['--no-such.flag=1', `--s3.localDir=${dir}`], io), 2);
  });
});
