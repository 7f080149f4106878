// What the Parquet child runner costs per segment over a run of sealed
// segments (a script, not a test): --segments segments of --records events
// each (raw Parquet + the example page_views view) through the isolated
// Parquet producer one after another, as delivery does. Per segment: wall
// time, and CPU seconds of this process and of its children (live children
// from /proc/<pid>/stat, reaped ones from this process's cutime+cstime), so
// a long-lived child's work is counted in the segment it did it for. Prints
// medians, and the totals including the children's start and end.
//
//   node test/bench/views/child-pool.ts [--segments 10] [--records 10000] [--pad 100]
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { systemClock } from '../../../ingest-node/src/clock.ts';
import { parquetProducer } from '../../../ingest-node/src/delivery/parquet-producers.ts';
import {
  openVerifiedSegment,
  segmentRecords,
  type SegmentJob,
} from '../../../ingest-node/src/delivery/producers.ts';
import { NodeFileSystem } from '../../../ingest-node/src/fs/node.ts';
import { silentLogger } from '../../../ingest-node/src/log.ts';
import { createChildRunner } from '../../../ingest-node/src/parquet/isolated.ts';
import { compileView, createParquetDb, parseViewYaml } from '../../../ingest-node/src/views/index.ts';
import { openWal } from '../../../ingest-node/src/wal/wal.ts';
import { RecordFormat } from '../../../ingest-node/src/wal/types.ts';

const { values: args } = parseArgs({
  options: {
    segments: { type: 'string', default: '10' },
    records: { type: 'string', default: '10000' },
    pad: { type: 'string', default: '100' },
  },
});
const SEGMENTS = Number(args.segments);
const RECORDS = Number(args.records);
const MiB = 1024 * 1024;
const TICKS_PER_S = 100;
const here = path.dirname(fileURLToPath(import.meta.url));
const root = await mkdtemp(path.join(tmpdir(), 'lf-child-pool-bench-'));
const fs = new NodeFileSystem();

/** Fields of /proc/<pid>/stat from field 3 on (the name may hold spaces). */
function statFields(pid: number | 'self'): string[] | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(') ') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** CPU seconds: this process; its reaped children; its live children (and theirs). */
function cpu(): { self: number; children: number } {
  const f = statFields('self')!;
  const t = (i: number): number => Number(f[i - 3]) / TICKS_PER_S;
  let live = 0;
  const descendants = new Set([process.pid]);
  // Parents have lower pids than children almost always; two passes cover a wrap.
  for (let pass = 0; pass < 2; pass++)
    for (const name of readdirSync('/proc')) {
      const pid = Number(name);
      if (!Number.isInteger(pid) || descendants.has(pid)) continue;
      const g = statFields(pid);
      if (g === undefined || !descendants.has(Number(g[1]))) continue;
      descendants.add(pid);
      live += (Number(g[11]) + Number(g[12])) / TICKS_PER_S;
    }
  return { self: t(14) + t(15), children: t(16) + t(17) + live };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

try {
  const walDir = path.join(root, 'wal');
  const wal = await openWal({
    dir: walDir,
    endpoint: 'web',
    instance: 'web-0',
    fs,
    clock: systemClock,
    log: silentLogger,
    segmentAgeMsMax: 3_600_000,
    segmentBytesMax: 1024 * MiB,
  });
  const pad = 'x'.repeat(Number(args.pad));
  for (let s = 0; s < SEGMENTS; s++) {
    for (let i = 0; i < RECORDS; i += 1000) {
      const batch: Buffer[] = [];
      for (let k = i; k < Math.min(RECORDS, i + 1000); k++)
        batch.push(
          Buffer.from(
            `{"event":"${k % 10 === 0 ? 'click' : 'page_view'}","user":"u${k % 9973}","ts":"2026-01-0${1 + (k % 3)}T00:00:${String(k % 60).padStart(2, '0')}Z","seq":${k},"pad":"${pad}"}`,
          ),
        );
      await wal.append(batch, RecordFormat.ndjson);
    }
    await wal.seal();
  }
  const compiler = await createParquetDb({ memoryLimitBytes: 64 * MiB, threads: 1 });
  const view = await compiler.withConnection(async (c) =>
    compileView(
      c,
      parseViewYaml(await readFile(path.join(here, '../../../docs/examples/views/page_views.yaml'), 'utf8')),
    ),
  );
  await compiler.close();

  const memoryLimitBytes = 512 * MiB;
  const threads = 2;
  const runner = createChildRunner({
    addressSpaceBytes: memoryLimitBytes + 3072 * MiB,
    processesMax: 1,
    scratchDir: path.join(root, 'children'),
    memoryLimitBytes,
    threads,
  });
  const producer = parquetProducer({
    isolated: { runner },
    views: () => [view],
    raw: true,
  });
  const wall: number[] = [];
  const self: number[] = [];
  const children: number[] = [];
  const c0 = cpu();
  const t0 = performance.now();
  for (let s = 1; s <= SEGMENTS; s++) {
    const segment = wal.segment(BigInt(s));
    if (segment === undefined) throw new Error(`no sealed segment ${s}`);
    const file = wal.segmentPath(BigInt(s));
    const job: SegmentJob = {
      segment,
      ref: { endpoint: 'web', instance: 'web-0', epoch: segment.epoch, segmentId: segment.id },
      prefix: 'lf',
      scratchDir: path.join(root, 'scratch', String(s)),
      fs,
      signal: new AbortController().signal,
      segmentPath: file,
      openSegment: () => openVerifiedSegment(file, segment),
      records: () => segmentRecords(openVerifiedSegment(file, segment)),
    };
    const a = cpu();
    const t = performance.now();
    const out = await producer.produce(job);
    wall.push((performance.now() - t) / 1000);
    const b = cpu();
    self.push(b.self - a.self);
    children.push(b.children - a.children);
    if (out.files.length === 0) throw new Error('no files');
    await rm(job.scratchDir, { recursive: true, force: true });
  }
  await runner.close(0);
  // Let the closed children be reaped so their CPU shows in cutime.
  await new Promise((r) => setTimeout(r, 200));
  const c1 = cpu();
  const totalWall = (performance.now() - t0) / 1000;
  const bytes = wal.segment(1n)!.bytes;
  console.log(
    `${SEGMENTS} segments of ${RECORDS} records (${(bytes / MiB).toFixed(1)} MiB each); raw Parquet + page_views; DuckDB ${threads} threads, ${memoryLimitBytes / MiB} MiB`,
  );
  console.log('| per segment | wall s | CPU s in this process | CPU s in children |');
  console.log('| --- | ---: | ---: | ---: |');
  console.log(
    `| median | ${median(wall).toFixed(2)} | ${median(self).toFixed(2)} | ${median(children).toFixed(2)} |`,
  );
  console.log(
    `| total / ${SEGMENTS} (child start and end included) | ${(totalWall / SEGMENTS).toFixed(2)} | ${((c1.self - c0.self) / SEGMENTS).toFixed(2)} | ${((c1.children - c0.children) / SEGMENTS).toFixed(2)} |`,
  );
  console.log(`per-segment wall s: ${wall.map((w) => w.toFixed(2)).join(' ')}`);
  console.log(`per-segment child CPU s: ${children.map((w) => w.toFixed(2)).join(' ')}`);
  await wal.close();
} finally {
  await rm(root, { recursive: true, force: true });
}
