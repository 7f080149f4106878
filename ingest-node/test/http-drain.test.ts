// Drain mode on a whole node (real WAL, delivery to a local folder): a request
// admitted before POST /v1/drain and appended after its seal is not left in
// the open segment; `drained` waits for it to be delivered. The end-to-end
// drain tests against MinIO are in test/e2e/drain.test.ts.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startNode } from '../src/node.ts';
import { defaultConfig } from '../src/config/load.ts';
import type { DrainState } from '../src/drain.ts';
import { drainCommand } from '../src/commands/drain.ts';

async function until(
  cond: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

void describe('drain mode on a node', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'landfall-drain-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  void it('a request admitted before the drain and written after its seal is sealed and delivered too', async () => {
    const node = await startNode(
      defaultConfig({
        listen: { port: 0 },
        wal: { dir: join(dir, 'wal'), segmentAgeMsMax: 3_600_000 },
        s3: { localDir: join(dir, 'bucket') },
      }),
      { apiKeys: null },
    );
    try {
      const drainState = async (): Promise<DrainState> =>
        ((await (await fetch(`${node.adminUrl}/v1/status`)).json()) as { drain: DrainState }).drain;
      const url = new URL(`${node.url}/v1/ingest`);
      // Admitted now (headers in), body still coming: it appends only when the body ends.
      const slow = request({
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson', 'transfer-encoding': 'chunked' },
      });
      const answered = new Promise<number>((resolve, reject) => {
        slow.on('response', (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        slow.on('error', reject);
      });
      slow.write('{"slow":1}\n');
      await until(() => node.server.backpressure.inflightBytes > 0, 'the slow request to be admitted');

      const posted = await fetch(`${node.adminUrl}/v1/drain`, { method: 'POST', body: '{}' });
      assert.equal(posted.status, 202);
      const d = ((await posted.json()) as { drain: DrainState }).drain;
      assert.equal(d.draining, true);
      assert.equal(node.wal.stats().openSegmentBytes, 0, 'nothing was open at the drain');
      // Nothing open, sealed or pending, but an admitted request may still append: not drained.
      assert.equal(d.drained, false, 'a request admitted and not yet answered keeps the node undrained');
      assert.equal((await drainState()).drained, false);

      slow.end('{"slow":2}\n');
      assert.equal(await answered, 202, 'admitted before the drain: it is written and acknowledged');
      await until(async () => (await drainState()).drained, 'drained');
      assert.equal(node.wal.stats().openSegmentBytes, 0);
      assert.equal(node.delivery?.pipeline.stats().segmentsDeliveredTotal, 1);

      const refused = await fetch(`${node.url}/v1/ingest`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson' },
        body: '{"late":1}\n',
      });
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get('retry-after'), '1');
      assert.equal(((await refused.json()) as { error: { code: string } }).error.code, 'LF_DRAINING');
    } finally {
      await node.shutdown('test');
    }
  });
  void it('a node whose quarantine/ holds a corrupt segment never reports drained; moved away, it does', async () => {
    const walDir = join(dir, 'wal-q');
    await mkdir(join(walDir, 'quarantine'), { recursive: true });
    // What recovery leaves for a human: a corrupt segment of acknowledged records.
    await writeFile(join(walDir, 'quarantine', '00000000000000000007.wal'), 'corrupt');
    const node = await startNode(
      defaultConfig({
        listen: { port: 0 },
        wal: { dir: walDir, segmentAgeMsMax: 3_600_000 },
        s3: { localDir: join(dir, 'bucket-q') },
      }),
      { apiKeys: null },
    );
    try {
      const ingest = await fetch(`${node.url}/v1/ingest`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson' },
        body: '{"a":1}\n',
      });
      assert.equal(ingest.status, 202);
      const state = async (): Promise<DrainState> =>
        ((await (await fetch(`${node.adminUrl}/v1/status`)).json()) as { drain: DrainState }).drain;
      assert.equal((await fetch(`${node.adminUrl}/v1/drain`, { method: 'POST' })).status, 202);
      await until(
        () => node.delivery?.pipeline.stats().segmentsDeliveredTotal === 1,
        'the segment delivered',
      );
      // Past the once-a-second re-read of quarantine/: still not drained.
      await new Promise((r) => setTimeout(r, 1_500));
      assert.equal((await state()).drained, false, 'quarantined acknowledged data: not drained');
      await rm(join(walDir, 'quarantine', '00000000000000000007.wal'));
      await until(async () => (await state()).drained, 'drained once quarantine/ is empty');
    } finally {
      await node.shutdown('test');
    }
  });

  void it('landfall drain exits 1 on a volume whose quarantine/ holds a corrupt segment, 0 once it is gone', async () => {
    const walDir = join(dir, 'wal-drainer');
    await mkdir(join(walDir, 'quarantine'), { recursive: true });
    await writeFile(join(walDir, 'quarantine', '00000000000000000003.wal'), 'corrupt');
    // A tail copy (a torn, unacknowledged group kept for forensics) does not hold a volume.
    await writeFile(join(walDir, 'quarantine', '00000000000000000004.wal.tail'), 'torn');
    const run = async (): Promise<{ code: number; summary: Record<string, unknown> }> => {
      let out = '';
      const code = await drainCommand.run(
        [`--wal.dir=${walDir}`, `--s3.localDir=${join(dir, 'bucket-drainer')}`, '--timeout-ms=5000'],
        { out: (t) => (out += t), err: () => {}, env: {} },
      );
      const last = out.trim().split('\n').at(-1) ?? '{}';
      return { code, summary: JSON.parse(last) as Record<string, unknown> };
    };
    const blocked = await run();
    assert.equal(blocked.code, 1, JSON.stringify(blocked.summary));
    assert.equal(blocked.summary['drained'], false);
    assert.equal(blocked.summary['quarantinedSegments'], 1);
    await rm(join(walDir, 'quarantine', '00000000000000000003.wal'));
    const clean = await run();
    assert.equal(clean.code, 0, JSON.stringify(clean.summary));
    assert.equal(clean.summary['quarantinedSegments'], 0);
  });
});
