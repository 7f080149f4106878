// A full disk never costs an acknowledged record, never makes the node lie
// (a 202 for data that is not durable) and never takes it down:
//  (a) ENOSPC injected (FaultFileSystem over the real disk) under HTTP load:
//      every refusal is 503 LF_WAL_UNAVAILABLE + Retry-After, the node stays
//      up, and accepts again once space is back; reopened afterwards,
//      recovery quarantines nothing and every 202'd record reads back.
//      Three ways a disk fills: write → ENOSPC, a short write (the volume
//      filled mid-write), fdatasync → ENOSPC.
//  (b) the free-space watermark: a probe reporting low free space turns
//      writes into 503 LF_DISK_LOW + Retry-After and /readyz false (with
//      hysteresis), and back to 202 and ready when space returns.
//  (c) the same as (a) for real: an 8 MiB tmpfs filled to the brim. Needs
//      mount(2) (root); skips with a message where it is not permitted.
//  (d) under the watermark a delivering node also gives back the space its
//      Parquet children keep for speed (their records files), and keeps it
//      again once space returns.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeFileSystem } from '../../ingest-node/src/fs/node.ts';
import { FaultFileSystem } from '../../ingest-node/src/fs/fault.ts';
import type { FaultRule } from '../../ingest-node/src/fs/fault.ts';
import { seededRandom } from '../../ingest-node/src/fs/power-cut.ts';
import { defaultConfig } from '../../ingest-node/src/config/load.ts';
import { startNode } from '../../ingest-node/src/node.ts';
import type { RunningNode } from '../../ingest-node/src/node.ts';
import { openWal } from '../../ingest-node/src/wal/wal.ts';
import { systemClock } from '../../ingest-node/src/clock.ts';
import { silentLogger } from '../../ingest-node/src/log.ts';
import { waitFor } from '../harness/proc.ts';
import { Ledger, describeVerdict, verifyWal } from './helpers/ledger.ts';
import type { SentRequest } from './helpers/ledger.ts';
import { startProducers } from './helpers/producers.ts';
import { durableWal, readWalDir } from './helpers/wal-dir.ts';
import { SettableDisk } from './helpers/disk.ts';

const MiB = 1024 * 1024;

function refusalsOf(requests: readonly SentRequest[]): SentRequest[] {
  return requests.filter((r) => r.outcome?.kind === 'refused');
}

function ackedOf(requests: readonly SentRequest[]): number {
  return requests.filter((r) => r.outcome?.kind === 'acked').length;
}

/** Every refusal is a 503 with `code` and a positive Retry-After. */
function assertRefusals(requests: readonly SentRequest[], code: string, where: string): void {
  for (const r of refusalsOf(requests)) {
    const o = r.outcome;
    assert.ok(o?.kind === 'refused');
    assert.equal(`${o.status} ${o.code}`, `503 ${code}`, `${where}: request ${r.id}`);
    assert.ok(Number(o.retryAfter) > 0, `${where}: request ${r.id} has Retry-After ${o.retryAfter}`);
  }
}

/** Closes the node, reopens the WAL dir (recovery) and checks it against the ledger. */
async function reopenAndVerify(node: RunningNode, dir: string, ledger: Ledger): Promise<string> {
  await node.shutdown('test');
  const wal = await openWal({
    dir,
    endpoint: 'full',
    instance: 'full-0',
    fs: new NodeFileSystem(),
    clock: systemClock,
    log: silentLogger,
  });
  try {
    assert.deepEqual(wal.recovery.quarantined, [], 'recovery quarantined nothing');
    const contents = await readWalDir(new NodeFileSystem(), dir);
    assert.deepEqual(contents.unreadable, []);
    assert.deepEqual(contents.quarantined, []);
    const verdict = verifyWal(contents.records, ledger);
    assert.deepEqual(verdict.violations, [], describeVerdict(verdict));
    assert.equal(verdict.lostAckedRecords, 0);
    return describeVerdict(verdict);
  } finally {
    await wal.close();
  }
}

async function httpStatus(url: string): Promise<{ status: number; json: unknown }> {
  const res = await fetch(url);
  return { status: res.status, json: await res.json() };
}

void describe('disk full', () => {
  let scratch: string;
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'landfall-diskfull-'));
  });
  after(() => rm(scratch, { recursive: true, force: true }));

  void it('(a) injected ENOSPC under load: 503 + Retry-After, no crash, no lost 202, accepts again when lifted', async (t) => {
    const dir = join(scratch, 'injected');
    const fs = new FaultFileSystem(new NodeFileSystem());
    const node = await startNode(
      defaultConfig({
        listen: { port: 0 },
        // Small segments: rotations (a new segment, a state-file write) happen inside the fault windows.
        wal: { dir, segmentBytesMax: 16_384 },
        endpoint: { name: 'full' },
        instance: { id: 'full-0' },
      }),
      { fs, apiKeys: null, disk: new SettableDisk() },
    );
    const ledger = new Ledger();
    const load = startProducers({
      url: node.url,
      ledger,
      concurrency: 12,
      random: seededRandom(42),
      idPrefix: 'a',
      recordsMax: 6,
      padMax: 200,
      pauseAfterRefusalMs: 2,
    });
    const phases: { name: string; rule: FaultRule }[] = [
      { name: 'write → ENOSPC', rule: { op: 'write', fault: 'ENOSPC', times: Infinity } },
      { name: 'short writes', rule: { op: 'write', fault: 'short', times: Infinity } },
      { name: 'fdatasync → ENOSPC', rule: { op: 'datasync', fault: 'ENOSPC', times: Infinity } },
    ];
    try {
      for (const phase of phases) {
        // Healthy first.
        const healthyFrom = ledger.requests.length;
        await waitFor(() => ackedOf(ledger.requests.slice(healthyFrom)) >= 20, {
          what: `202s before "${phase.name}"`,
          timeoutMs: 20_000,
        });
        const injectedBefore = fs.injected.length;
        const lift = fs.inject(phase.rule);
        const faultFrom = ledger.requests.length;
        await waitFor(() => refusalsOf(ledger.requests.slice(faultFrom)).length >= 10, {
          what: `refusals during "${phase.name}"`,
          timeoutMs: 20_000,
        });
        assert.ok(fs.injected.length > injectedBefore, `${phase.name}: faults were injected`);
        // Still up, and not given up: the WAL undid each failed group and carries on.
        assert.equal((await httpStatus(`${node.url}/healthz`)).status, 200);
        assert.equal(
          durableWal(node.wal).stats().failed,
          false,
          `${phase.name}: the WAL did not turn failed`,
        );
        lift();
        const liftedFrom = ledger.requests.length;
        await waitFor(() => ackedOf(ledger.requests.slice(liftedFrom)) >= 10, {
          what: `202s after "${phase.name}" was lifted`,
          timeoutMs: 20_000,
        });
        t.diagnostic(
          `${phase.name}: ${refusalsOf(ledger.requests.slice(faultFrom, liftedFrom)).length} refused, ` +
            `${fs.injected.length - injectedBefore} faults injected`,
        );
      }
    } finally {
      await load.stop();
    }
    assertRefusals(ledger.requests, 'LF_WAL_UNAVAILABLE', 'injected ENOSPC');
    const c = ledger.counts();
    assert.equal(c.unknown, 0, 'every request was answered');
    t.diagnostic(
      `${c.acked} acknowledged, ${c.refused} refused; ${await reopenAndVerify(node, dir, ledger)}`,
    );
  });

  void it('(b) free-space watermark: 503 LF_DISK_LOW + Retry-After and not ready while low, 202 and ready when space returns', async (t) => {
    const dir = join(scratch, 'watermark');
    const disk = new SettableDisk(10 * 1024 * MiB);
    const node = await startNode(
      defaultConfig({
        listen: { port: 0 },
        wal: { dir },
        endpoint: { name: 'full' },
        instance: { id: 'full-0' },
        backpressure: { checkIntervalMs: 20, diskFreeBytesLow: 512 * MiB, diskFreeBytesHigh: 1024 * MiB },
      }),
      { apiKeys: null, disk },
    );
    const ledger = new Ledger();
    const rnd = seededRandom(7);
    const load = (prefix: string): ReturnType<typeof startProducers> =>
      startProducers({
        url: node.url,
        ledger,
        concurrency: 8,
        random: rnd,
        idPrefix: prefix,
        recordsMax: 4,
        padMax: 100,
        pauseAfterRefusalMs: 2,
      });
    const readyz = (): Promise<{ status: number; json: unknown }> => httpStatus(`${node.url}/readyz`);

    let running = load('b1');
    try {
      await waitFor(() => ledger.counts().acked >= 20, { what: 'first 202s', timeoutMs: 20_000 });
      assert.equal((await readyz()).status, 200);

      disk.freeBytes = 100 * MiB;
      await waitFor(async () => (await readyz()).status === 503, {
        what: '/readyz to go 503',
        timeoutMs: 10_000,
      });
      assert.deepEqual((await readyz()).json, { ready: false, reasons: ['disk_low'] });
      const lowFrom = ledger.requests.length;
      await waitFor(() => ledger.requests.length - lowFrom >= 20, {
        what: 'requests while low',
        timeoutMs: 10_000,
      });
      // Between the watermarks: still refusing (hysteresis), for at least two more measurements.
      disk.freeBytes = 768 * MiB;
      const measured = disk.measurements;
      await waitFor(() => disk.measurements >= measured + 2, { what: 'two disk checks', timeoutMs: 10_000 });
      assert.equal((await readyz()).status, 503, 'between the watermarks the node stays not ready');
      await running.stop();
      const whileLow = ledger.requests.slice(lowFrom);
      assert.ok(whileLow.length >= 20);
      assert.equal(ackedOf(whileLow), 0, 'nothing sent after /readyz went false was accepted');
      assert.equal(refusalsOf(whileLow).length, whileLow.length, 'every request while low was refused');
      assertRefusals(whileLow, 'LF_DISK_LOW', 'disk low');
      assert.ok(whileLow.every((r) => r.outcome?.kind === 'refused' && r.outcome.retryAfter === '30'));

      disk.freeBytes = 2 * 1024 * MiB;
      await waitFor(async () => (await readyz()).status === 200, {
        what: '/readyz back to 200',
        timeoutMs: 10_000,
      });
      assert.deepEqual((await readyz()).json, { ready: true, reasons: [] });
      const backFrom = ledger.requests.length;
      running = load('b2');
      await waitFor(() => ackedOf(ledger.requests.slice(backFrom)) >= 20, {
        what: '202s after space returned',
        timeoutMs: 20_000,
      });
    } finally {
      await running.stop();
    }
    const c = ledger.counts();
    t.diagnostic(
      `${c.acked} acknowledged, ${c.refused} refused; ${await reopenAndVerify(node, dir, ledger)}`,
    );
  });

  void it('(c) real ENOSPC on an 8 MiB tmpfs: 503 + Retry-After, no lost 202, accepts again once space is freed', async (t) => {
    const mnt = join(scratch, 'tmpfs');
    execFileSync('mkdir', ['-p', mnt]);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'landfall-diskfull', mnt], { stdio: 'pipe' });
    } catch (err) {
      const why = (err as { stderr?: Buffer }).stderr?.toString().trim() || (err as Error).message;
      t.skip(
        `cannot mount a tmpfs here (${why}); needs root (or CAP_SYS_ADMIN). ` +
          'The injected-ENOSPC test (a) covers the same behaviour without it.',
      );
      return;
    }
    let node: RunningNode | undefined;
    try {
      // Room to free later: the node's writes fill the rest.
      const filler = join(mnt, 'filler');
      await writeFile(filler, Buffer.alloc(1 * MiB, 1));
      const dir = join(mnt, 'wal');
      node = await startNode(
        defaultConfig({
          listen: { port: 0 },
          wal: { dir, segmentBytesMax: 1 * MiB },
          endpoint: { name: 'full' },
          instance: { id: 'full-0' },
          // Watermark off: this test is about the write that hits a full volume.
          backpressure: { diskFreeBytesLow: 0, diskFreeBytesHigh: 0 },
        }),
        { apiKeys: null },
      );
      const ledger = new Ledger();
      let load = startProducers({
        url: node.url,
        ledger,
        concurrency: 8,
        random: seededRandom(3),
        idPrefix: 'c1',
        recordsMax: 8,
        padMax: 4000,
        pauseAfterRefusalMs: 2,
      });
      try {
        await waitFor(() => refusalsOf(ledger.requests).length >= 10, {
          what: 'the volume to fill (refusals)',
          timeoutMs: 30_000,
        });
        assert.equal((await httpStatus(`${node.url}/healthz`)).status, 200);
        assert.equal(durableWal(node.wal).stats().failed, false, 'the WAL did not turn failed');
      } finally {
        await load.stop();
      }
      await rm(filler);
      const freedFrom = ledger.requests.length;
      load = startProducers({
        url: node.url,
        ledger,
        concurrency: 4,
        random: seededRandom(4),
        idPrefix: 'c2',
        recordsMax: 2,
        padMax: 100,
        pauseAfterRefusalMs: 2,
      });
      try {
        await waitFor(() => ackedOf(ledger.requests.slice(freedFrom)) >= 10, {
          what: '202s after freeing space',
          timeoutMs: 20_000,
        });
      } finally {
        await load.stop();
      }
      assertRefusals(ledger.requests, 'LF_WAL_UNAVAILABLE', 'tmpfs full');
      const c = ledger.counts();
      t.diagnostic(
        `${c.acked} acknowledged, ${c.refused} refused; ${await reopenAndVerify(node, dir, ledger)}`,
      );
      node = undefined;
    } finally {
      await node?.shutdown('test');
      execFileSync('umount', [mnt]);
    }
  });

  void it('(d) a delivering node under the watermark: its Parquet children end with their records files, and are kept again over it', async () => {
    const dir = join(scratch, 'pools');
    const walDir = join(dir, 'wal');
    const viewsDir = join(dir, 'views');
    await mkdir(viewsDir, { recursive: true });
    await writeFile(
      join(viewsDir, 'ids.yaml'),
      'name: ids\ncolumns:\n  - { name: id, type: INTEGER, path: $.id, required: true }\n',
    );
    const disk = new SettableDisk(10 * 1024 * MiB);
    const node = await startNode(
      defaultConfig({
        listen: { port: 0 },
        wal: { dir: walDir, segmentAgeMsMax: 200 },
        endpoint: { name: 'pools' },
        instance: { id: 'pools-0' },
        s3: { localDir: join(dir, 'bucket') },
        outputs: { rawParquet: true },
        views: { dir: viewsDir, threads: 1, memoryLimitBytes: 128 * MiB },
        backpressure: { checkIntervalMs: 20, diskFreeBytesLow: 512 * MiB, diskFreeBytesHigh: 1024 * MiB },
      }),
      { apiKeys: null, disk },
    );
    // The children's folders (parquet/isolated.ts), each with its records pool (parquet/records.ts).
    const childrenDir = join(walDir, 'parquet', 'children');
    const pooled = async (): Promise<number> => {
      let n = 0;
      for (const c of await readdir(childrenDir).catch(() => []))
        n += (await readdir(join(childrenDir, c, 'pool')).catch(() => [])).length;
      return n;
    };
    const children = async (): Promise<number> => (await readdir(childrenDir).catch(() => [])).length;
    const delivered = (): number => node.delivery?.pipeline.stats().segmentsDeliveredTotal ?? 0;
    const post = async (id: number): Promise<void> => {
      const r = await fetch(`${node.url}/v1/ingest`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson' },
        body: `{"id":${id}}\n`,
      });
      assert.equal(r.status, 202);
    };
    try {
      await post(1);
      await waitFor(() => delivered() >= 1, { what: 'the first segment delivered', timeoutMs: 60_000 });
      await waitFor(async () => (await pooled()) >= 1, {
        what: 'a warm child keeping its records file',
        timeoutMs: 20_000,
      });

      disk.freeBytes = 100 * MiB;
      await waitFor(async () => (await children()) === 0, {
        what: 'the children and their folders gone under the watermark',
        timeoutMs: 20_000,
      });

      disk.freeBytes = 2 * 1024 * MiB;
      await waitFor(async () => (await httpStatus(`${node.url}/readyz`)).status === 200, {
        what: '/readyz back to 200',
        timeoutMs: 10_000,
      });
      await post(2);
      await waitFor(() => delivered() >= 2, { what: 'the second segment delivered', timeoutMs: 60_000 });
      await waitFor(async () => (await pooled()) >= 1, { what: 'the pool kept again', timeoutMs: 20_000 });
    } finally {
      await node.shutdown('test');
    }
  });
});
