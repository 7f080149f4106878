// State-file cost per delivery step with a large backlog (a script, not a
// test). During a long outage every sealed segment stays in state.json, and
// each step of delivery (progress, delivered, a new seal) rewrites the file;
// issue 14 found the whole document re-serialised on the event loop each time.
//
// Builds a WAL dir on the real disk with N sealed, undelivered segments (one
// small record each, progress like a half-delivered segment), opens the WAL,
// then times `updateProgress` on one segment: the event loop's busy time over
// the whole step (performance.eventLoopUtilization: every piece of JS the
// step ran, not only its first synchronous slice) and the wall time until
// the state file is durable. Medians of `--steps` steps per backlog size.
//
//   npm run bench:state -- [--sizes 1000,10000,50000] [--steps 30] [--dir /path]
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { systemClock } from '../../../ingest-node/src/clock.ts';
import { NodeFileSystem } from '../../../ingest-node/src/fs/node.ts';
import { silentLogger } from '../../../ingest-node/src/log.ts';
import { newEpoch } from '../../../ingest-node/src/wal/epoch.ts';
import { FrameFlags, encodeFrame, encodeSegmentHeader } from '../../../ingest-node/src/wal/format.ts';
import { EPOCH_FILE, segmentFileName } from '../../../ingest-node/src/wal/recovery.ts';
import { STATE_FILE, WalState } from '../../../ingest-node/src/wal/state.ts';
import { openWal } from '../../../ingest-node/src/wal/wal.ts';

const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '1000,10000,50000' },
    steps: { type: 'string', default: '30' },
    dir: { type: 'string' },
  },
});
const sizes = values.sizes.split(',').map(Number);
const steps = Number(values.steps);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function buildDir(dir: string, n: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  const nowMs = Date.now();
  const epoch = newEpoch(nowMs, (k) => new Uint8Array(k).fill(7));
  await writeFile(
    path.join(dir, EPOCH_FILE),
    JSON.stringify({ epoch, createdAtMs: nowMs, formatVersion: 1 }),
  );
  const state = new WalState(epoch);
  for (let i = 1; i <= n; i++) {
    const id = BigInt(i);
    const header = encodeSegmentHeader({
      segmentId: id,
      createdMicros: BigInt(nowMs) * 1000n,
      endpoint: 'orders',
      instance: 'orders-0',
      epoch,
    });
    const frame = encodeFrame({
      seq: id,
      ingestMicros: BigInt(nowMs) * 1000n,
      format: 1,
      flags: FrameFlags.groupStart | FrameFlags.batchEnd,
      payload: Buffer.from(`{"event":"bench","i":${i}}`),
    });
    const bytes = Buffer.concat([header, frame]);
    await writeFile(path.join(dir, segmentFileName(id)), bytes);
    const key = `segments/orders/orders-0/${epoch}/${segmentFileName(id).replace('.wal', '.wal.zst')}`;
    state.addSegment({
      id,
      epoch,
      fileName: segmentFileName(id),
      bytes: bytes.length,
      records: 1,
      firstSeq: id,
      lastSeq: id,
      firstIngestMicros: BigInt(nowMs) * 1000n,
      lastIngestMicros: BigInt(nowMs) * 1000n,
      sealedAtMs: nowMs,
      sealReason: 'age',
      status: 'sealed',
      progress: {
        delivery: {
          segment: { bytes: bytes.length, sha256: 'a'.repeat(64) },
          artifacts: { segment: [{ kind: 'segment', key, bytes: 123, rows: 1, sha256: 'b'.repeat(64) }] },
          views: {},
        },
      },
    });
  }
  await writeFile(path.join(dir, STATE_FILE), state.serialize(nowMs));
}

const root = await mkdtemp(path.join(values.dir ?? tmpdir(), 'landfall-state-bench-'));
const rows: { backlog: number; stateBytes: number; syncMs: number; totalMs: number }[] = [];
try {
  for (const n of sizes) {
    const dir = path.join(root, `wal-${n}`);
    await buildDir(dir, n);
    const wal = await openWal({
      dir,
      endpoint: 'orders',
      instance: 'orders-0',
      fs: new NodeFileSystem(),
      clock: systemClock,
      log: silentLogger,
      segmentAgeMsMax: 3_600_000,
    });
    const sync: number[] = [];
    const total: number[] = [];
    for (let i = 0; i < steps; i++) {
      const id = BigInt(1 + (i % n));
      const elu0 = performance.eventLoopUtilization();
      const t0 = performance.now();
      await wal.updateProgress(id, { bench: i });
      const t2 = performance.now();
      sync.push(performance.eventLoopUtilization(elu0).active);
      total.push(t2 - t0);
    }
    const { size } = await import('node:fs/promises').then((f) => f.stat(path.join(dir, STATE_FILE)));
    await wal.close();
    rows.push({ backlog: n, stateBytes: size, syncMs: median(sync), totalMs: median(total) });
    await rm(dir, { recursive: true, force: true });
  }
} finally {
  await rm(root, { recursive: true, force: true });
}
console.log(
  '| pending segments | state.json | event loop busy per step (median) | step until durable (median) |',
);
console.log('| ---: | ---: | ---: | ---: |');
for (const r of rows)
  console.log(
    `| ${r.backlog} | ${(r.stateBytes / 1024 / 1024).toFixed(1)} MiB | ${r.syncMs.toFixed(2)} ms | ${r.totalMs.toFixed(2)} ms |`,
  );
