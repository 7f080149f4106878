// What the Parquet child process costs per segment (a script, not a test):
// the same sealed segment (raw Parquet + the example page_views view) through
// the Parquet producer in process and in a child (parquet/isolated.ts),
// alternating, medians of --runs. Prints wall time and CPU seconds (this
// process's own, and its children's from /proc/self/stat) per segment, and
// the child's peak RSS. The runner keeps its child between segments, so the
// child's start is paid in the warm-up run.
//
//   node test/bench/views/child.ts [--records 100000] [--runs 5] [--pad 100]
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { systemClock } from '../../../ingest-node/src/clock.ts';
import { formatSegmentId } from '../../../ingest-node/src/delivery/keys.ts';
import { parquetProducer } from '../../../ingest-node/src/delivery/parquet-producers.ts';
import {
  openVerifiedSegment,
  segmentRecords,
  type ArtifactProducer,
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
    records: { type: 'string', default: '100000' },
    runs: { type: 'string', default: '5' },
    pad: { type: 'string', default: '100' },
  },
});
const RECORDS = Number(args.records);
const RUNS = Number(args.runs);
const MiB = 1024 * 1024;
const here = path.dirname(fileURLToPath(import.meta.url));
const root = await mkdtemp(path.join(tmpdir(), 'lf-child-bench-'));
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

/**
 * CPU seconds of this process and of its children: reaped ones
 * (cutime+cstime) and live ones (the runner keeps its child between jobs).
 */
async function cpu(): Promise<{ self: number; children: number }> {
  await Promise.resolve();
  const f = statFields('self')!;
  // Fields 14–17 of stat(5); f[0] is field 3.
  const t = (i: number): number => Number(f[i - 3]) / 100;
  let live = 0;
  for (const name of readdirSync('/proc')) {
    const g = Number.isInteger(Number(name)) ? statFields(Number(name)) : undefined;
    if (g !== undefined && Number(g[1]) === process.pid) live += (Number(g[11]) + Number(g[12])) / 100;
  }
  return { self: t(14) + t(15), children: t(16) + t(17) + live };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

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
  const segment = wal.segment(1n);
  if (segment === undefined) throw new Error('no sealed segment 1');
  const file = wal.segmentPath(1n);

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
  const db = await createParquetDb({ scratchDir: path.join(root, 'inproc'), memoryLimitBytes, threads });
  const runner = createChildRunner({
    addressSpaceBytes: memoryLimitBytes + 3072 * MiB,
    processesMax: 1,
    scratchDir: path.join(root, 'children'),
    memoryLimitBytes,
    threads,
  });
  const producers: Record<'in process' | 'child', ArtifactProducer> = {
    'in process': parquetProducer({ db: () => Promise.resolve(db), views: () => [view], raw: true }),
    child: parquetProducer({
      isolated: { runner },
      views: () => [view],
      raw: true,
    }),
  };
  const job = (n: number): SegmentJob => ({
    segment,
    ref: { endpoint: 'web', instance: 'web-0', epoch: segment.epoch, segmentId: segment.id },
    prefix: 'lf',
    scratchDir: path.join(root, 'scratch', String(n)),
    fs,
    signal: new AbortController().signal,
    segmentPath: file,
    openSegment: () => openVerifiedSegment(file, segment),
    records: () => segmentRecords(openVerifiedSegment(file, segment)),
  });
  const results: Record<string, { wall: number[]; self: number[]; children: number[] }> = {};
  let n = 0;
  for (let run = 0; run <= RUNS; run++) {
    for (const [name, p] of Object.entries(producers)) {
      const c0 = await cpu();
      const t0 = performance.now();
      const out = await p.produce(job(n++));
      const wall = (performance.now() - t0) / 1000;
      const c1 = await cpu();
      await rm(path.join(root, 'scratch'), { recursive: true, force: true });
      if (out.files.length === 0) throw new Error('no files');
      if (run === 0) continue; // warm-up
      const r = (results[name] ??= { wall: [], self: [], children: [] });
      r.wall.push(wall);
      r.self.push(c1.self - c0.self);
      r.children.push(c1.children - c0.children);
    }
  }
  await db.close();
  await runner.close(0);
  console.log(
    `segment: ${RECORDS} records, ${(segment.bytes / MiB).toFixed(1)} MiB; raw Parquet + page_views; DuckDB ${threads} threads, ${memoryLimitBytes / MiB} MiB; medians of ${RUNS}`,
  );
  console.log('| path | wall s | CPU s in this process | CPU s in children |');
  console.log('| --- | ---: | ---: | ---: |');
  for (const [name, r] of Object.entries(results))
    console.log(
      `| ${name} | ${median(r.wall).toFixed(2)} | ${median(r.self).toFixed(2)} | ${median(r.children).toFixed(2)} |`,
    );
  console.log(`segment id ${formatSegmentId(segment.id)}`);
  await wal.close();
} finally {
  await rm(root, { recursive: true, force: true });
}
