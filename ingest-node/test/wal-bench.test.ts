// Micro-benchmark on the real disk, skipped unless WAL_BENCH=1:
//   WAL_BENCH=1 node --test --test-reporter=spec ingest-node/test/wal-bench.test.ts
// Compares durable WAL appends (group commit) with a plain sequential
// write + fdatasync loop on the same volume. WAL_BENCH_DIR picks the volume
// (default: the OS temp dir).
import { test } from 'node:test';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { NodeFileSystem } from '../src/fs/node.ts';
import { openWal } from '../src/wal/wal.ts';
import { systemClock } from '../src/clock.ts';
import { silentLogger } from '../src/log.ts';
import { RecordFormat } from '../src/wal/types.ts';

const enabled = process.env['WAL_BENCH'] === '1';
const seconds = Number(process.env['WAL_BENCH_SECONDS'] ?? 4);

async function plainLoop(dir: string, blockBytes: number): Promise<number> {
  const fh = await open(path.join(dir, `plain-${blockBytes}`), 'w+');
  const buf = Buffer.alloc(blockBytes, 7);
  let pos = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    await fh.write(buf, 0, blockBytes, pos);
    pos += blockBytes;
    await fh.datasync();
  }
  const mbps = pos / ((performance.now() - t0) / 1000) / 1e6;
  await fh.close();
  return mbps;
}

async function walRun(dir: string, recordBytes: number, concurrency: number): Promise<string> {
  const wal = await openWal({
    dir: path.join(dir, `wal-${recordBytes}-${concurrency}`),
    endpoint: 'bench',
    instance: 'bench-0',
    fs: new NodeFileSystem(),
    clock: systemClock,
    log: silentLogger,
  });
  const payload = new Uint8Array(recordBytes).fill(97);
  const latencies: number[] = [];
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        await wal.append([payload], RecordFormat.recordio);
        latencies.push(performance.now() - t);
      }
    }),
  );
  const dt = (performance.now() - t0) / 1000;
  const st = wal.stats();
  await wal.close();
  latencies.sort((a, b) => a - b);
  const q = (p: number): string => latencies[Math.floor((latencies.length - 1) * p)]!.toFixed(2);
  return (
    `WAL ${recordBytes} B records x${concurrency} in flight: ` +
    `${((latencies.length * recordBytes) / dt / 1e6).toFixed(1)} MB/s, ${(latencies.length / dt).toFixed(0)} appends/s, ` +
    `${(st.appendsTotal / st.syncsTotal).toFixed(1)} appends/fdatasync, p50 ${q(0.5)} ms, p99 ${q(0.99)} ms`
  );
}

void test('WAL throughput and latency on the real disk', { skip: !enabled }, async (t) => {
  const dir = await mkdtemp(path.join(process.env['WAL_BENCH_DIR'] ?? os.tmpdir(), 'landfall-wal-bench-'));
  try {
    for (const block of [64 * 1024, 4 * 1024 * 1024]) {
      t.diagnostic(
        `plain write+fdatasync loop, ${block} B blocks: ${(await plainLoop(dir, block)).toFixed(1)} MB/s`,
      );
    }
    for (const [bytes, c] of [
      [64 * 1024, 1],
      [64 * 1024, 16],
      [64 * 1024, 64],
      [1024, 64],
      [1024, 256],
    ] as const) {
      t.diagnostic(await walRun(dir, bytes, c));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
