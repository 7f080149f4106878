// Where a Parquet child's CPU goes for one sealed segment (a script, not a
// test). It writes a real WAL segment through the real WAL (the ingest
// bench's events: 1 KiB single-event appends, or 64 KiB bodies of 100 events
// per append), then runs the child's whole job for it — raw Parquet and the
// example view (docs/examples/views/page_views.yaml) — two ways:
//
//   child:  the real child process (parquet/isolated.ts + child.ts, niced,
//           under its address-space limit), its CPU per job read from /proc by
//           thread kind (main, DuckDB/libuv pool, V8 GC), and what its start
//           cost (its CPU after the first job, less a warm job's);
//   phases: the same job in this process (the child's own record source and
//           materializeSegmentJob), every DuckDB statement timed, wall and
//           process CPU, as test/bench/views/phases.ts does.
//
// Medians of --runs jobs (the first child job, which pays the start, apart).
//
//   npm run bench:parquet -- [--shape 1k|64k|both] [--segment-mb 16]
//        [--runs 5] [--bodies varied|bench] [--arms child,phases] [--threads 2]
//        [--base DIR]
//
// --base DIR: the child arm also runs DIR's child.ts (another checkout of the
// repo, e.g. `git archive` of the commit before a change), job by job in
// turn with this checkout's, on the same segment and machine load.
//
// --bodies bench sends the ingest bench's exact bodies (every 1 KiB request
// is the same event, so every payload of the segment is equal); varied (the
// default) numbers each event, as real traffic differs record to record.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DuckDBConnection } from '@duckdb/node-api';
import { systemClock } from '../../../ingest-node/src/clock.ts';
import { NodeFileSystem } from '../../../ingest-node/src/fs/node.ts';
import { silentLogger } from '../../../ingest-node/src/log.ts';
import { openVerifiedSegment, segmentRecordBatches } from '../../../ingest-node/src/delivery/producers.ts';
import { createChildRunner } from '../../../ingest-node/src/parquet/isolated.ts';
import type { ChildRequest } from '../../../ingest-node/src/parquet/child-protocol.ts';
import { walBatchesToSegmentRecords } from '../../../ingest-node/src/parquet/wal-records.ts';
import { materializeSegmentJob } from '../../../ingest-node/src/parquet/segment-job.ts';
import {
  compileView,
  createParquetDb,
  parseViewYaml,
  type CompiledView,
} from '../../../ingest-node/src/views/index.ts';
import { defaultPartitionLimits } from '../../../ingest-node/src/views/materialize.ts';
import { openWal } from '../../../ingest-node/src/wal/wal.ts';
import { RecordFormat, type SealedSegment } from '../../../ingest-node/src/wal/types.ts';
import { buildBody, type Shape } from '../ingest/bodies.ts';
import { diff, threadTimes } from '../views/threads.ts';

const { values: args } = parseArgs({
  options: {
    shape: { type: 'string', default: 'both' },
    'segment-mb': { type: 'string', default: '16' },
    runs: { type: 'string', default: '5' },
    bodies: { type: 'string', default: 'varied' },
    arms: { type: 'string', default: 'child,phases' },
    threads: { type: 'string', default: '2' },
    'memory-mb': { type: 'string', default: '512' },
    quiet: { type: 'boolean', default: false },
    base: { type: 'string' },
  },
});
const MiB = 1024 * 1024;
const RUNS = Math.max(1, Number(args.runs));
const SEGMENT_BYTES = Number(args['segment-mb']) * MiB;
const THREADS = Number(args.threads);
const MEMORY_BYTES = Number(args['memory-mb']) * MiB;
const ARMS = new Set(args.arms.split(','));
const SHAPES: Shape[] = args.shape === 'both' ? ['1k', '64k'] : [args.shape as Shape];
const VARIED = args.bodies !== 'bench';
const VIEW_FILE = new URL('../../../docs/examples/views/page_views.yaml', import.meta.url);

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** The bench's events (bodies.ts), one Buffer per record as the HTTP layer splits them (no newline). */
function recordsOf(shape: Shape, n: number): Buffer[] {
  const lines = buildBody(shape).body.trimEnd().split('\n');
  if (!VARIED) return lines.map((l) => Buffer.from(l));
  // Same sizes, each event its own user, time and seq (the bench's repeat the body).
  return lines.map((l, k) => {
    const i = n * lines.length + k;
    const bytes = Buffer.byteLength(l);
    const head = `{"event":"page_view","user":"u${i % 9973}","ts":"2026-01-01T00:${String(Math.floor(i / 60) % 60).padStart(2, '0')}:${String(i % 60).padStart(2, '0')}Z","seq":${i},"pad":"`;
    return Buffer.from(`${head}${'x'.repeat(Math.max(0, bytes - head.length - 2))}"}`);
  });
}

/** Writes one sealed segment of `shape` appends through the real WAL. */
async function writeSegment(dir: string, shape: Shape): Promise<{ segment: SealedSegment; path: string }> {
  const walDir = path.join(dir, 'wal');
  const wal = await openWal({
    dir: walDir,
    endpoint: 'bench',
    instance: 'bench-0',
    fs: new NodeFileSystem(),
    clock: systemClock,
    log: silentLogger,
    segmentBytesMax: SEGMENT_BYTES,
    segmentAgeMsMax: 3_600_000,
  });
  let sealed: SealedSegment | undefined;
  wal.onSealed((s) => {
    sealed ??= s;
  });
  // 64 appends in flight, as the bench's 64 connections: the WAL groups them.
  let n = 0;
  const worker = async (): Promise<void> => {
    while (sealed === undefined) await wal.append(recordsOf(shape, n++), RecordFormat.ndjson);
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  await wal.close();
  return { segment: sealed!, path: path.join(walDir, sealed!.fileName) };
}

/** CPU ms of a process's threads by kind, from /proc (10 ms ticks). */
function processThreads(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const kind = Number(tid) === pid ? 'main' : name.replace(/[-_ ]?\d+$/, '');
      out.set(kind, (out.get(kind) ?? 0) + (Number(f[11]) + Number(f[12])) * 10);
    } catch {
      // ended between the listing and the read
    }
  }
  return out;
}
const total = (m: Record<string, number>): number => Object.values(m).reduce((a, b) => a + b, 0);

function requestFor(
  jobId: string,
  seg: { segment: SealedSegment; path: string },
  views: readonly CompiledView[],
): ChildRequest {
  const limits = defaultPartitionLimits();
  return {
    jobId,
    segmentPath: seg.path,
    segment: seg.segment,
    raw: { endpoint: 'bench', instance: 'bench-0' },
    views,
    partitionLimits: {
      filesMax: limits.filesMax,
      keyBytesBase: Object.fromEntries(views.map((v) => [v.spec.name, limits.keyBytesBase(v.spec.name)])),
      markerEntryBytes: Object.fromEntries(
        views.map((v) => [v.spec.name, limits.markerEntryBytes(v.spec.name)]),
      ),
      markerBytes: limits.markerBytes,
    },
  };
}

async function childArm(
  dir: string,
  seg: { segment: SealedSegment; path: string },
  views: readonly CompiledView[],
): Promise<void> {
  // This checkout's child, and with --base another checkout's (the code before a change), job by job in turn.
  const scripts: [string, string | undefined][] = [['this', undefined]];
  if (args.base !== undefined)
    scripts.unshift(['base', path.join(path.resolve(args.base), 'ingest-node/src/parquet/child.ts')]);
  const arms = scripts.map(([name, script]) => ({
    name,
    runner: createChildRunner({
      addressSpaceBytes: MEMORY_BYTES + 3072 * MiB,
      processesMax: 1,
      scratchDir: path.join(dir, `children-${name}`),
      memoryLimitBytes: MEMORY_BYTES,
      threads: THREADS,
      ...(script !== undefined ? { script } : {}),
    }),
    jobs: [] as {
      cpu: Record<string, number>;
      wallMs: number;
      loadMs: number;
      rawMs: number;
      viewMs: number;
    }[],
    firstCpu: 0,
    rawBytes: 0,
    viewBytes: 0,
  }));
  try {
    for (let run = 0; run <= RUNS; run++)
      for (const arm of arms) {
        const { runner } = arm;
        const pid = runner.children()[0]?.pid;
        const before = pid !== undefined ? processThreads(pid) : new Map<string, number>();
        const out = await runner.run(requestFor(`job-${run}`, seg, views));
        if (out.kind !== 'ok') throw new Error(`child job died: ${out.reason}`);
        const cpu = diff(before, processThreads(runner.children()[0]!.pid));
        arm.rawBytes = out.outputs.raw.reduce((s, f) => s + f.sizeBytes, 0);
        arm.viewBytes = out.outputs.views.reduce(
          (s, v) => s + v.files.reduce((t, f) => t + f.sizeBytes, 0),
          0,
        );
        await out.release();
        if (run === 0) {
          arm.firstCpu = total(cpu);
          continue;
        }
        arm.jobs.push({
          cpu,
          wallMs: out.wallMs,
          loadMs: out.outputs.loadMs,
          rawMs: out.outputs.rawMs,
          viewMs: out.outputs.views.reduce((s, v) => s + v.durationMs, 0),
        });
        if (!args.quiet)
          console.log(
            `  ${arm.name} child job ${run}: ${total(cpu)} ms cpu ${JSON.stringify(cpu)}, wall ${out.wallMs.toFixed(0)} ms (load ${out.outputs.loadMs.toFixed(0)}, raw ${out.outputs.rawMs.toFixed(0)})`,
          );
      }
  } finally {
    for (const arm of arms) await arm.runner.close(10_000);
  }
  for (const { name, jobs, firstCpu, rawBytes, viewBytes } of arms) {
    const kinds = new Set(jobs.flatMap((j) => Object.keys(j.cpu)));
    const byKind = Object.fromEntries([...kinds].map((k) => [k, median(jobs.map((j) => j.cpu[k] ?? 0))]));
    const cpuMs = median(jobs.map((j) => total(j.cpu)));
    console.log(
      `  CHILD (${name}): ${cpuMs} ms cpu per segment (median of ${jobs.length}; ${((cpuMs * 1000) / seg.segment.records).toFixed(1)} µs/record), by thread ${JSON.stringify(byKind)}`,
    );
    console.log(
      `         wall ${median(jobs.map((j) => j.wallMs)).toFixed(0)} ms: load ${median(jobs.map((j) => j.loadMs)).toFixed(0)}, raw ${median(jobs.map((j) => j.rawMs)).toFixed(0)}, views ${median(jobs.map((j) => j.viewMs)).toFixed(0)}; first job incl. the child's start ${firstCpu} ms cpu (start ≈ ${firstCpu - cpuMs} ms)`,
    );
    console.log(
      `         raw Parquet ${(rawBytes / MiB).toFixed(2)} MiB (${(rawBytes / seg.segment.records).toFixed(2)} B/row), view ${(viewBytes / 1024).toFixed(0)} KiB (${(viewBytes / seg.segment.records).toFixed(2)} B/row)`,
    );
  }
}

interface Mark {
  label: string;
  startMs: number;
  ms: number;
  cpuMs: number;
}
let marks: Mark[] | undefined;
let t0 = 0;
let depth = 0;
const cpuNow = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
function label(sql: string): string {
  // The job's folder differs per run: left out, so runs line up.
  const s = sql
    .replace(/\s+/g, ' ')
    .replace(/'[^']*\/jobs\/[^/']*\/([^']*)'/g, "'…/$1'")
    .trim();
  const to = /^COPY \(/.test(s) ? / TO '([^']*)'/.exec(s)?.[1] : undefined;
  if (to !== undefined) return `COPY → ${to.split(path.sep).slice(-3).join('/')}`;
  return s.slice(0, 120);
}
for (const method of ['run', 'runAndReadAll', 'createAppender'] as const) {
  const proto = DuckDBConnection.prototype as unknown as Record<
    string,
    (...a: unknown[]) => Promise<unknown>
  >;
  const orig = proto[method]!;
  proto[method] = async function (this: unknown, ...a: unknown[]) {
    if (marks === undefined || depth > 0) return orig.apply(this, a);
    depth++;
    const s = performance.now();
    const c = cpuNow();
    try {
      return await orig.apply(this, a);
    } finally {
      depth--;
      marks.push({
        label: method === 'createAppender' ? `appender ${String(a[0])}` : label(String(a[0])),
        startMs: s - t0,
        ms: performance.now() - s,
        cpuMs: cpuNow() - c,
      });
    }
  };
}

async function phasesArm(
  dir: string,
  seg: { segment: SealedSegment; path: string },
  views: readonly CompiledView[],
): Promise<void> {
  const db = await createParquetDb({
    scratchDir: path.join(dir, 'phases'),
    memoryLimitBytes: MEMORY_BYTES,
    threads: THREADS,
  });
  const totals: number[] = [];
  const byLabel = new Map<string, { ms: number[]; cpu: number[] }>();
  const kindRuns: Record<string, number>[] = [];
  try {
    for (let run = 0; run <= RUNS; run++) {
      const req = requestFor(`phases-${run}`, seg, views);
      marks = [];
      t0 = performance.now();
      const c0 = cpuNow();
      const tt = threadTimes();
      const out = await materializeSegmentJob(db, {
        jobId: req.jobId,
        records: walBatchesToSegmentRecords(
          segmentRecordBatches(openVerifiedSegment(req.segmentPath, req.segment, undefined), undefined),
        ),
        views: req.views,
        raw: req.raw!,
        partitionLimits: defaultPartitionLimits(),
      });
      const cpu = cpuNow() - c0;
      const threads = diff(tt, threadTimes());
      const m = marks;
      marks = undefined;
      await out.cleanup();
      if (run === 0) continue; // warm-up: first JIT, pools
      totals.push(cpu);
      kindRuns.push(threads);
      const first = m[0]!;
      const rows: [string, number, number][] = [
        [
          '(JS before the first statement: segment read, raw Parquet pages, records file)',
          first.startMs,
          NaN,
        ],
        ...m.map((x): [string, number, number] => [x.label, x.ms, x.cpuMs]),
      ];
      const seen = new Map<string, number>();
      for (const [l, ms, c] of rows) {
        const k = seen.get(l) ?? 0;
        seen.set(l, k + 1);
        const key = k === 0 ? l : `${l} #${k + 1}`;
        const e = byLabel.get(key) ?? { ms: [], cpu: [] };
        e.ms.push(ms);
        e.cpu.push(c);
        byLabel.set(key, e);
      }
    }
  } finally {
    await db.close();
  }
  const kinds = new Set(kindRuns.flatMap((k) => Object.keys(k)));
  console.log(
    `  PHASES (in process): ${median(totals).toFixed(0)} ms cpu per segment (median of ${totals.length}), by thread ${JSON.stringify(Object.fromEntries([...kinds].map((k) => [k, median(kindRuns.map((r) => r[k] ?? 0))])))}`,
  );
  for (const [l, e] of byLabel) {
    const c = median(e.cpu);
    console.log(
      `    ${median(e.ms).toFixed(1).padStart(7)} ms ${Number.isNaN(c) ? '       ' : `cpu ${c.toFixed(0).padStart(4)}`}  ${l}`,
    );
  }
}

const scratch = await mkdtemp(path.join(tmpdir(), 'lf-bench-parquet-'));
const compileDb = await createParquetDb({ memoryLimitBytes: 64 * MiB, threads: 1 });
try {
  const view = await compileDb.withConnection(async (c) =>
    compileView(c, parseViewYaml(await readFile(VIEW_FILE, 'utf8'))),
  );
  for (const shape of SHAPES) {
    const dir = path.join(scratch, shape);
    const seg = await writeSegment(dir, shape);
    console.log(
      `\n${shape} (${VARIED ? 'varied' : "the bench's exact"} bodies): segment of ${(seg.segment.bytes / MiB).toFixed(1)} MiB, ${seg.segment.records} records; DuckDB threads ${THREADS}`,
    );
    if (ARMS.has('child')) await childArm(dir, seg, [view]);
    if (ARMS.has('phases')) await phasesArm(dir, seg, [view]);
  }
} finally {
  await compileDb.close();
  await rm(scratch, { recursive: true, force: true });
}
