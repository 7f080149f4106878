// Backpressure over real HTTP: WAL and disk watermarks with hysteresis (503 +
// Retry-After, /readyz false, then recovery), the in-flight byte bound, WAL
// refusals mapped to codes, draining, and a graceful close that finishes
// in-flight requests.

import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Wal } from '../src/wal/types.ts';
import { codeOf, ingest, read, openDiskWal, startTestServer, until } from './helpers/server.ts';
import type { TestServer } from './helpers/server.ts';

async function readyz(url: string): Promise<{ status: number; body: { ready: boolean; reasons: string[] } }> {
  const a = await read(await fetch(`${url}/readyz`));
  return { status: a.status, body: a.json as { ready: boolean; reasons: string[] } };
}

void describe('backpressure', () => {
  let t: TestServer | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  void it('WAL retained bytes: 503 LF_WAL_BACKLOG over the high watermark until under the low one', async () => {
    t = await startTestServer({ config: { backpressure: { walBytesHigh: 100_000, walBytesLow: 50_000 } } });
    assert.equal((await ingest(t.url, '{"a":1}\n')).status, 202);
    t.wal.retainedBytesExtra = 120_000;
    t.clock.advance(100); // the request path re-reads WAL stats at most every 50 ms
    const refused = await ingest(t.url, '{"a":1}\n');
    assert.equal(refused.status, 503);
    assert.equal(codeOf(refused), 'LF_WAL_BACKLOG');
    assert.equal(refused.headers.get('retry-after'), '5');
    assert.deepEqual(await readyz(t.url), { status: 503, body: { ready: false, reasons: ['wal_backlog'] } });

    // Between the watermarks: still refusing (hysteresis, no flapping).
    t.wal.retainedBytesExtra = 70_000;
    t.clock.advance(100);
    assert.equal((await ingest(t.url, '{"a":1}\n')).status, 503);
    assert.equal((await readyz(t.url)).status, 503);

    t.wal.retainedBytesExtra = 10_000;
    // /readyz reads the WAL at once, so a probe sees recovery without waiting for a write.
    assert.deepEqual(await readyz(t.url), { status: 200, body: { ready: true, reasons: [] } });
    assert.equal((await ingest(t.url, '{"a":1}\n')).status, 202);
    assert.equal(t.wal.appends.length, 2);
  });

  void it('volume free space: 503 LF_DISK_LOW under the low watermark until over the high one', async () => {
    t = await startTestServer({
      config: { backpressure: { diskFreeBytesLow: 1_000_000, diskFreeBytesHigh: 2_000_000 } },
    });
    t.disk.freeBytes = 500_000;
    await t.server.backpressure.refresh();
    const refused = await ingest(t.url, '{"a":1}\n');
    assert.equal(refused.status, 503);
    assert.equal(codeOf(refused), 'LF_DISK_LOW');
    assert.equal(refused.headers.get('retry-after'), '30');
    assert.deepEqual((await readyz(t.url)).body.reasons, ['disk_low']);

    t.disk.freeBytes = 1_500_000;
    await t.server.backpressure.refresh();
    assert.equal((await ingest(t.url, '{"a":1}\n')).status, 503, 'between watermarks: still refusing');

    // A failing statfs keeps the last state rather than guessing.
    t.disk.failWith = new Error('EIO');
    await t.server.backpressure.refresh();
    assert.equal((await readyz(t.url)).status, 503);
    t.disk.failWith = undefined;

    t.disk.freeBytes = 2_500_000;
    await t.server.backpressure.refresh();
    assert.equal((await readyz(t.url)).status, 200);
    assert.equal((await ingest(t.url, '{"a":1}\n')).status, 202);
    assert.equal(t.wal.appends.length, 1);
  });

  void it('the disk is polled on its own (backpressure.checkIntervalMs)', async () => {
    t = await startTestServer({
      config: {
        backpressure: { diskFreeBytesLow: 1_000_000, diskFreeBytesHigh: 2_000_000, checkIntervalMs: 20 },
      },
    });
    t.disk.freeBytes = 10;
    const deadline = Date.now() + 2000;
    while ((await readyz(t.url)).status === 200 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
    assert.equal((await readyz(t.url)).status, 503);
  });

  void it('in-flight bytes: 503 LF_OVERLOADED beyond limits.inflightBytesMax, no queue; recovers when answered', async () => {
    t = await startTestServer({
      config: {
        limits: {
          inflightBytesMax: 120_000,
          decodedBytesMax: 60_000,
          bodyBytesMax: 60_000,
          recordsPerRequestMax: 100,
        },
      },
    });
    const line = `{"pad":"${'x'.repeat(1000)}"}\n`;
    const body = line.repeat(50); // ~50 KB
    const release = t.wal.hold();
    const first = ingest(t.url, body);
    const second = ingest(t.url, body);
    await until(() => t!.wal.waiting === 2);
    const third = await ingest(t.url, body);
    assert.equal(third.status, 503);
    assert.equal(codeOf(third), 'LF_OVERLOADED');
    assert.equal(third.headers.get('retry-after'), '1');
    assert.ok(t.server.backpressure.inflightBytes <= 120_000);
    // Overload is transient: readiness stays true.
    assert.equal((await readyz(t.url)).status, 200);
    release();
    const results = await Promise.all([first, second]);
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [202, 202]);
    assert.equal(t.server.backpressure.inflightBytes, 0);
    assert.equal((await ingest(t.url, body)).status, 202);
  });

  void it('WAL refusals map to codes: overloaded, closed, failed', async () => {
    t = await startTestServer();
    t.wal.failWith = Object.assign(new Error('queue full'), { code: 'WAL_OVERLOADED' });
    assert.equal(codeOf(await ingest(t.url, '{"a":1}\n')), 'LF_OVERLOADED');
    t.wal.failWith = Object.assign(new Error('closed'), { code: 'WAL_CLOSED' });
    assert.equal(codeOf(await ingest(t.url, '{"a":1}\n')), 'LF_DRAINING');
    t.wal.failWith = Object.assign(new Error('EIO'), { code: 'WAL_WRITE_FAILED' });
    const failed = await ingest(t.url, '{"a":1}\n');
    assert.equal(failed.status, 503);
    assert.equal(codeOf(failed), 'LF_WAL_UNAVAILABLE');
    assert.equal(t.wal.appends.length, 0);
  });

  void it('a WAL that reports failed makes the node not ready and refuses before reading bodies', async () => {
    t = await startTestServer();
    const stats = t.wal.stats.bind(t.wal);
    t.wal.stats = () => ({ ...stats(), failed: true }) as ReturnType<typeof stats>;
    assert.deepEqual((await readyz(t.url)).body.reasons, ['wal_failed']);
    assert.equal(codeOf(await ingest(t.url, '{"a":1}\n')), 'LF_WAL_UNAVAILABLE');
  });

  void it('a seal the state file cannot record makes the node not ready until a state write lands', async () => {
    t = await startTestServer();
    const stats = t.wal.stats.bind(t.wal);
    let unrecorded = true;
    t.wal.stats = () => ({ ...stats(), sealsUnrecorded: unrecorded }) as ReturnType<typeof stats>;
    assert.deepEqual(await readyz(t.url), {
      status: 503,
      body: { ready: false, reasons: ['wal_state_failing'] },
    });
    assert.equal(codeOf(await ingest(t.url, '{"a":1}\n')), 'LF_WAL_UNAVAILABLE');
    unrecorded = false;
    assert.deepEqual(await readyz(t.url), { status: 200, body: { ready: true, reasons: [] } });
    assert.equal((await ingest(t.url, '{"a":1}\n')).status, 202);
  });

  void it('draining: 503 LF_DRAINING and /readyz false; /healthz stays true', async () => {
    t = await startTestServer();
    t.server.beginDrain();
    const a = await ingest(t.url, '{"a":1}\n');
    assert.equal(a.status, 503);
    assert.equal(codeOf(a), 'LF_DRAINING');
    assert.ok(a.headers.get('retry-after') !== null);
    assert.deepEqual((await readyz(t.url)).body, { ready: false, reasons: ['draining'] });
    assert.equal((await fetch(`${t.url}/healthz`)).status, 200);
  });

  void it('close() lets an in-flight request finish with its 202', async () => {
    t = await startTestServer();
    const release = t.wal.hold();
    const inflight = ingest(t.url, '{"a":1}\n');
    await new Promise((r) => setTimeout(r, 50));
    const closing = t.server.close();
    await new Promise((r) => setTimeout(r, 50));
    release();
    assert.equal((await inflight).status, 202);
    await closing;
    t = undefined;
  });
});

void describe('backpressure and the durable WAL', () => {
  let t: TestServer<Wal> | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await t?.close();
    await t?.wal.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    t = undefined;
  });

  void it('volume free space under the low watermark: the WAL gives its free segment files back and keeps none until over the high one', async () => {
    dir = await mkdtemp(join(tmpdir(), 'landfall-disk-low-'));
    const wal = await openDiskWal(dir, { recycleSegmentsMax: 2 });
    t = await startTestServer({
      wal,
      config: { backpressure: { diskFreeBytesLow: 1_000_000, diskFreeBytesHigh: 2_000_000 } },
    });
    const server = t;
    const free = async (): Promise<string[]> => (await readdir(wal.dir)).filter((n) => n.endsWith('.free'));
    /** One request's segment, sealed, delivered and deleted. */
    const deliverOne = async (): Promise<void> => {
      assert.equal((await ingest(server.url, '{"a":1}\n')).status, 202);
      const seg = await wal.seal();
      assert.ok(seg !== null);
      await wal.markDelivered(seg.id);
      await wal.deleteSegment(seg.id);
    };
    await deliverOne();
    assert.equal((await free()).length, 1, 'a delivered file is kept for reuse');

    t.disk.freeBytes = 500_000;
    // refresh() resolves once the crossing was acted on: the release is done.
    await t.server.backpressure.refresh();
    assert.equal(wal.stats().freeSegmentFiles, 0);
    assert.deepEqual(await free(), []);
    assert.equal(codeOf(await ingest(t.url, '{"a":1}\n')), 'LF_DISK_LOW');

    t.disk.freeBytes = 2_500_000;
    await t.server.backpressure.refresh();
    await deliverOne();
    assert.equal((await free()).length, 1, 'over the high watermark: kept again');
  });
});
