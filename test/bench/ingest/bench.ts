// Ingest benchmark (a script, not a test): the same HTTP load against
//   (a) null: a bare fastify route that reads the body and answers 202, and
//   (b) landfall: startNode on a temp dir on the real disk (WAL, group fdatasync),
//   (c) with --delivery, landfall+delivery: the same node delivering every
//       sealed segment to a local MinIO (test/harness startMinio) with raw
//       Parquet and the example page_views view on — the real case, where
//       verification, hashing, compression and DuckDB share the process with
//       the acks,
// for two shapes, 1 KiB single-event bodies and 64 KiB NDJSON bodies of 100
// events, at 64 connections. The load generator (autocannon, load.ts) runs in
// a child process, and so does each run's server (server.ts, a fresh process
// per run: its CPU, event loop and RSS are its own, as a deployed node's are,
// and no run inherits an earlier one's heap). Runs alternate (null, landfall,
// null…) so a noisy neighbour hurts both alike; the table shows medians of
// ≥ 3 runs, with the server's event-loop delay p99 (monitorEventLoopDelay)
// and peak RSS over the measured window (the node's process; the Parquet
// children are processes of their own).
//
//   npm run bench:ingest -- [--duration 10] [--runs 3] [--warmup 2] [--connections 64]
//                           [--shapes 1k,64k] [--dir /path/on/the/disk] [--baseline 3] [--delivery]
//                           [--segment-mb N]   (wal.segmentBytesMax; 16 with --delivery, else the default)
//                           [--pipeline-depth N]   (wal.pipelineDepth, the group-commit pipeline; the config default)
//                           [--recycle-segments N]   (wal.recycleSegmentsMax: delivered files reused; the config
//                            default; only landfall+delivery ever frees a segment, unless --free-sealed)
//                           [--free-sealed]   (landfall without delivery marks every sealed segment delivered
//                            and deletes it at once: a delivery that costs nothing, so files are reused
//                            with no Parquet or upload CPU beside the WAL)
//                           [--targets null,landfall,landfall+delivery]   (a subset, e.g. to profile one;
//                            the summary needs null and landfall)
//                           [--store-nice N]   (MinIO's niceness; default 10, see below)
//                           [--store-dir /path]   (MinIO's objects; default a folder in /dev/shm, see below)
//   (or LANDFALL_BENCH_DURATION, _RUNS, _WARMUP, _CONNECTIONS, _SHAPES, _DIR, _BASELINE, _DELIVERY=1, _SEGMENT_MB,
//    _PIPELINE_DEPTH, _RECYCLE_SEGMENTS, _FREE_SEALED=1, _STORE_NICE, _STORE_DIR)
//
// MinIO stands in for the remote object store a real node uploads to, which
// costs the node's machine no CPU at all; here it shares the two cores, so it
// runs niced (10 by default) to take only the CPU the node and the load
// generator leave, and keeps its objects in memory (/dev/shm), so that its
// writes and syncs do not queue on the disk the WAL fdatasyncs on, as a
// remote store's would not. Each run prints where
// the CPU went (test/bench/cpu.ts): the server's main thread, its libuv pool,
// V8's threads, its worker threads (the archive worker), its child processes
// (the Parquet children), MinIO and the load generator; and how often the
// server's main isolate ran a full mark-compact and a scavenge per 1,000
// requests (a fresh large Buffer per request shows up there first: issue 15).
//
// The disk baseline (test/bench/disk.ts) is taken two ways: appending to a new
// file, as the WAL writes a new segment (with its first second apart, since
// some disks run faster until their first-write budget is spent), and
// rewriting blocks already written; each run also prints what the device
// wrote (/proc/diskstats: every writer on it, not only the WAL).
//
// Goals (reported, not asserted): 1 KiB at ≥ 0.9× the null route's req/s with
// p99 ≤ 10 ms; 64 KiB at ≥ 250 MB/s durable; with delivery, RSS ≤ 400 MiB.
// The JSON lands in test/bench/results/ingest-<date>.json.
import { fork, spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { startMinio } from '../../harness/minio.ts';
import { cpuCores, cpuSnapshot } from '../cpu.ts';
import { diskBaseline, diskCounters, diskOf, diskRates } from '../disk.ts';
import type { DiskBaseline } from '../disk.ts';
import type { CpuSnapshot } from '../cpu.ts';
import type { MinioServer } from '../../harness/minio.ts';
import { buildBody } from './bodies.ts';
import type { Shape } from './bodies.ts';
import type { LoadOptions, LoadResult } from './load.ts';
import type { ControlMessage, ServerMessage, ServerSpec, ServerStats, Target } from './server.ts';

const MiB = 1024 * 1024;
const here = path.dirname(fileURLToPath(import.meta.url));
const env = (k: string, d: string): string => process.env[`LANDFALL_BENCH_${k}`] ?? d;
const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: env('DURATION', '10') },
    runs: { type: 'string', default: env('RUNS', '3') },
    warmup: { type: 'string', default: env('WARMUP', '2') },
    connections: { type: 'string', default: env('CONNECTIONS', '64') },
    shapes: { type: 'string', default: env('SHAPES', '1k,64k') },
    dir: { type: 'string', default: env('DIR', tmpdir()) },
    baseline: { type: 'string', default: env('BASELINE', '3') },
    delivery: { type: 'boolean', default: env('DELIVERY', '') === '1' },
    'segment-mb': { type: 'string', default: env('SEGMENT_MB', '') },
    'pipeline-depth': { type: 'string', default: env('PIPELINE_DEPTH', '') },
    'recycle-segments': { type: 'string', default: env('RECYCLE_SEGMENTS', '') },
    'free-sealed': { type: 'boolean', default: env('FREE_SEALED', '') === '1' },
    'store-nice': { type: 'string', default: env('STORE_NICE', '10') },
    'scratch-dir': { type: 'string', default: env('SCRATCH_DIR', '') },
    targets: { type: 'string', default: env('TARGETS', '') },
    'store-dir': { type: 'string', default: env('STORE_DIR', '/dev/shm') },
  },
});
const DURATION_S = Number(args.duration);
const RUNS = Math.max(1, Number(args.runs));
const WARMUP_S = Number(args.warmup);
const CONNECTIONS = Number(args.connections);
const SHAPES = args.shapes.split(',').map((s) => s.trim()) as Shape[];
const BASELINE_S = Number(args.baseline);
const MB = 1e6;
const DELIVERY = args.delivery;
// With delivery, segments must seal within a run for delivery to compete with
// the acks at all: 64 MiB (the default) takes longer than a 10 s run at
// 1 KiB on a loaded machine. Both landfall targets get the same size, so
// delivery is the only difference between them.
const SEGMENT_BYTES_MAX =
  args['segment-mb'] !== '' ? Number(args['segment-mb']) * MiB : DELIVERY ? 16 * MiB : undefined;
/** wal.pipelineDepth (group-commit pipeline depth); the config default unless given. */
const PIPELINE_DEPTH = args['pipeline-depth'] !== '' ? Number(args['pipeline-depth']) : undefined;
/** wal.recycleSegmentsMax; the config default unless given. */
const RECYCLE_SEGMENTS = args['recycle-segments'] !== '' ? Number(args['recycle-segments']) : undefined;
/** delivery.scratchDir and views.scratchDir of landfall+delivery; default inside wal.dir (the WAL's disk). */
const SCRATCH_DIR = args['scratch-dir'];
const STORE_NICE = Number(args['store-nice']);
const EXAMPLE_VIEW = path.join(here, '..', '..', '..', 'docs', 'examples', 'views', 'page_views.yaml');

const TARGETS: readonly Target[] =
  args.targets !== ''
    ? (args.targets.split(',').map((t) => t.trim()) as Target[])
    : DELIVERY
      ? ['null', 'landfall', 'landfall+delivery']
      : ['null', 'landfall'];
for (const t of TARGETS)
  if (!['null', 'landfall', 'landfall+delivery'].includes(t)) throw new Error(`unknown target ${t}`);

/** Where landfall+delivery delivers: one MinIO for the whole bench, a fresh bucket per run. */
interface DeliveryTarget {
  readonly minio: MinioServer;
  readonly viewsDir: string;
}

/** A server process (server.ts) for one run. */
interface ServerProcess {
  readonly url: string;
  readonly pid: number;
  /** Commit markers in the delivery bucket so far (landfall+delivery only). */
  readonly markers?: () => Promise<number>;
  warm(): void;
  end(): Promise<ServerStats>;
  close(): Promise<void>;
}

/** Forks server.ts for `target`; resolves once it listens. */
async function startServer(
  target: Target,
  walDir: string,
  delivery?: DeliveryTarget,
): Promise<ServerProcess> {
  const bucket =
    target === 'landfall+delivery' && delivery !== undefined ? await delivery.minio.newBucket() : undefined;
  const spec: ServerSpec = {
    target,
    walDir,
    ...(SEGMENT_BYTES_MAX !== undefined ? { segmentBytesMax: SEGMENT_BYTES_MAX } : {}),
    ...(PIPELINE_DEPTH !== undefined ? { pipelineDepth: PIPELINE_DEPTH } : {}),
    ...(RECYCLE_SEGMENTS !== undefined ? { recycleSegmentsMax: RECYCLE_SEGMENTS } : {}),
    ...(args['free-sealed'] ? { freeSealed: true } : {}),
    ...(bucket !== undefined && delivery !== undefined
      ? {
          delivery: {
            endpointUrl: delivery.minio.endpoint,
            bucket,
            viewsDir: delivery.viewsDir,
            ...(SCRATCH_DIR !== '' ? { scratchDir: path.join(SCRATCH_DIR, path.basename(walDir)) } : {}),
          },
        }
      : {}),
  };
  const child = fork(path.join(here, 'server.ts'), [JSON.stringify(spec)], { stdio: 'inherit' });
  // A send to a server that died fails here, not as an uncaught exception: the exit says why.
  child.on('error', () => {});
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const died = exited.then((code) => {
    throw new Error(`bench server (${target}) exited ${code} during the run`);
  });
  died.catch(() => {});
  let onStats: ((s: ServerStats) => void) | undefined;
  const url = await new Promise<string>((resolve, reject) => {
    child.on('message', (m: ServerMessage) => {
      if (m.t === 'ready') resolve(m.url);
      else onStats?.(m.stats);
    });
    void exited.then((code) =>
      reject(new Error(`bench server (${target}) exited ${code} before it listened`)),
    );
  });
  const control = (m: ControlMessage): void => {
    if (child.connected) child.send(m);
  };
  return {
    url,
    pid: child.pid!,
    ...(bucket !== undefined && delivery !== undefined
      ? { markers: () => countKeys(delivery.minio, bucket, 'bench/commits/') }
      : {}),
    warm: () => control({ t: 'warm' }),
    end: () =>
      Promise.race([
        new Promise<ServerStats>((resolve) => {
          onStats = resolve;
          control({ t: 'end' });
        }),
        died,
      ]),
    close: async () => {
      control({ t: 'close' });
      const code = await exited;
      if (code !== 0) throw new Error(`bench server (${target}) exited ${code}`);
    },
  };
}

async function countKeys(minio: MinioServer, bucket: string, prefix: string): Promise<number> {
  const s3 = minio.s3();
  try {
    let n = 0;
    let token: string | undefined;
    for (let page = 0; page < 1000; page++) {
      const r = await s3.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
      );
      n += r.KeyCount ?? 0;
      token = r.NextContinuationToken;
      if (token === undefined) break;
    }
    return n;
  } finally {
    s3.destroy();
  }
}

/** Runs load.ts against `url`; `onWarm` is called when the measured part starts. */
function generateLoad(o: LoadOptions, onWarm: (pid: number) => void): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, 'load.ts'), JSON.stringify(o)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    let warm = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (!warm && out.startsWith('warm\n')) {
        warm = true;
        onWarm(child.pid ?? 0);
      }
    });
    child.once('error', reject);
    child.once('exit', (code) => {
      const last = out.trim().split('\n').at(-1) ?? '';
      if (code !== 0 || !last.startsWith('{')) reject(new Error(`load generator exit ${code}: ${out}`));
      else resolve(JSON.parse(last) as LoadResult);
    });
  });
}

interface RunResult {
  readonly run: number;
  readonly shape: Shape;
  readonly target: Target;
  readonly reqPerS: number;
  readonly eventsPerS: number;
  readonly mbPerS: number;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly non202: number;
  readonly errors: number;
  /** Server process CPU (user+sys) over the measured window, in cores (1.0 = one core busy). */
  readonly serverCpuCores: number;
  /** Server event-loop utilisation over the measured window (0…1). */
  readonly serverElu: number;
  /** Server event-loop delay p99 over the measured window, beyond the 1 ms sampling interval (server.ts), ms. */
  readonly eventLoopDelayP99Ms: number;
  /**
   * Cores per CPU consumer over the measured window: `server:main`, `server:libuv pool`,
   * `server:V8 (GC, compiler)`, `server:worker threads` (the archive worker), `children` (the Parquet
   * children), `store` (MinIO), `load generator`.
   */
  readonly cpuBy: Record<string, number>;
  /** Server process peak RSS over the measured window (sampled every 100 ms), MiB. */
  readonly rssMaxMiB: number;
  /** The server's main-isolate full mark-compacts and scavenges per 1,000 answered requests, and its GC pause per request, µs. */
  readonly gcMajorPer1k: number;
  readonly gcMinorPer1k: number;
  readonly gcPauseUsPerReq: number;
  /** landfall+delivery: commit markers written by the end of the run (segments delivered). */
  readonly markers?: number;
  /** Landfall only: fdatasyncs per second and appends per fdatasync (group size). */
  readonly syncsPerS?: number;
  readonly appendsPerSync?: number;
  /** Landfall only: the group-commit pipeline depth, and the share of group writes that overlapped a sync. */
  readonly pipelineDepth?: number;
  readonly pipelinedShare?: number;
  /** Landfall only: the share of appends encoded ahead, during an earlier group's fdatasync. */
  readonly stagedShare?: number;
  /** What the bench disk's device wrote over the measured window (all writers: WAL, scratch, page-cache writeback). */
  readonly diskMbPerS?: number;
  readonly diskWritesPerS?: number;
  /** Landfall only: mean ms from a group write's / an fdatasync's submit to its completion callback. */
  readonly writeMsMean?: number;
  readonly syncMsMean?: number;
  /** Landfall only: segments written over a free (recycled) file during the window. */
  readonly recycledSegments?: number;
  readonly loadavg1: number;
  readonly load: LoadResult;
}

async function measure(
  run: number,
  shape: Shape,
  target: Target,
  benchDir: string,
  delivery: DeliveryTarget | undefined,
): Promise<RunResult> {
  const body = buildBody(shape);
  const walDir = await mkdtemp(path.join(benchDir, `wal-${shape}-`));
  const server = await startServer(target, walDir, delivery);
  let loadPid = 0;
  const others = (): Record<string, number | undefined> => ({
    'load generator': loadPid,
    store: delivery?.minio.pid,
  });
  let cpuSnap0: CpuSnapshot = new Map();
  const device = diskOf(benchDir);
  let disk0 = diskCounters(device);
  let t0 = performance.now();
  try {
    const load = await generateLoad(
      { url: server.url, shape, connections: CONNECTIONS, durationS: DURATION_S, warmupS: WARMUP_S },
      (pid) => {
        loadPid = pid;
        server.warm();
        cpuSnap0 = cpuSnapshot(server.pid, others());
        disk0 = diskCounters(device);
        t0 = performance.now();
      },
    );
    const stats = await server.end();
    const windowS = (performance.now() - t0) / 1000;
    const cpuBy = cpuCores(cpuSnap0, cpuSnapshot(server.pid, others()), windowS);
    const disk = diskRates(disk0, diskCounters(device), windowS);
    // The load generator has exited by now: its own figure, over its measured run.
    cpuBy['load generator'] = load.cpuS / load.durationS;
    const markers = await server.markers?.();
    const reqPerS = load.ok / load.durationS;
    const non202 = Object.entries(load.statusCounts).reduce((n, [c, k]) => (c === '202' ? n : n + k), 0);
    const w = stats.wal;
    return {
      run,
      shape,
      target,
      reqPerS,
      eventsPerS: reqPerS * body.events,
      mbPerS: (reqPerS * body.bytes) / MB,
      p50: load.latencyMs.p50,
      p95: load.latencyMs.p95,
      p99: load.latencyMs.p99,
      non202,
      errors: load.errors + load.timeouts,
      serverCpuCores: stats.cpuCores,
      serverElu: stats.elu,
      eventLoopDelayP99Ms: stats.loopDelayP99Ms,
      cpuBy,
      rssMaxMiB: stats.rssMaxMiB,
      gcMajorPer1k: (1000 * stats.gc.major) / Math.max(1, load.ok),
      gcMinorPer1k: (1000 * stats.gc.minor) / Math.max(1, load.ok),
      gcPauseUsPerReq: (1000 * stats.gc.pauseMs) / Math.max(1, load.ok),
      ...(disk !== undefined ? { diskMbPerS: disk.mbPerS, diskWritesPerS: disk.writesPerS } : {}),
      ...(markers !== undefined ? { markers } : {}),
      ...(w !== undefined
        ? {
            syncsPerS: w.syncs / stats.wallS,
            appendsPerSync: w.syncs === 0 ? 0 : w.appends / w.syncs,
            pipelineDepth: w.pipelineDepth,
            pipelinedShare: w.pipelinedWrites / Math.max(1, w.groupWrites),
            stagedShare: w.stagedAppends / Math.max(1, w.appends),
            writeMsMean: (1000 * w.writeSeconds) / Math.max(1, w.groupWrites),
            syncMsMean: (1000 * w.syncSeconds) / Math.max(1, w.syncs),
            recycledSegments: w.recycled,
          }
        : {}),
      loadavg1: loadavg()[0]!,
      load,
    };
  } finally {
    await server.close();
    await rm(walDir, { recursive: true, force: true });
    if (SCRATCH_DIR !== '')
      await rm(path.join(SCRATCH_DIR, path.basename(walDir)), { recursive: true, force: true });
  }
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const KEYS = [
  'reqPerS',
  'eventsPerS',
  'mbPerS',
  'p50',
  'p95',
  'p99',
  'serverCpuCores',
  'serverElu',
  'eventLoopDelayP99Ms',
  'rssMaxMiB',
] as const;
type Summary = Record<(typeof KEYS)[number], number> & {
  non202: number;
  errors: number;
  syncsPerS?: number;
  appendsPerSync?: number;
  pipelineDepth?: number;
  pipelinedShare?: number;
  markers?: number;
};

function summarize(rs: readonly RunResult[]): Summary {
  const out = {} as Summary;
  for (const k of KEYS) out[k] = median(rs.map((r) => r[k]));
  out.non202 = rs.reduce((n, r) => n + r.non202, 0);
  out.errors = rs.reduce((n, r) => n + r.errors, 0);
  if (rs.every((r) => r.syncsPerS !== undefined)) {
    out.syncsPerS = median(rs.map((r) => r.syncsPerS!));
    out.appendsPerSync = median(rs.map((r) => r.appendsPerSync!));
  }
  if (rs.every((r) => r.pipelineDepth !== undefined)) {
    out.pipelineDepth = rs[0]!.pipelineDepth!;
    out.pipelinedShare = median(rs.map((r) => r.pipelinedShare!));
  }
  if (rs.every((r) => r.markers !== undefined)) out.markers = median(rs.map((r) => r.markers!));
  return out;
}

const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n)
    ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : '-';

async function main(): Promise<void> {
  const benchDir = await mkdtemp(path.join(args.dir, 'landfall-bench-'));
  const load0 = loadavg();
  console.log(
    `ingest bench: ${RUNS} runs × ${DURATION_S}s (+${WARMUP_S}s warm-up), ${CONNECTIONS} connections, ` +
      `shapes ${SHAPES.join(', ')}, targets ${TARGETS.join(', ')}, ` +
      `segments ${SEGMENT_BYTES_MAX !== undefined ? `${SEGMENT_BYTES_MAX / MiB} MiB` : 'default'}, disk ${benchDir}; node ${process.version}, ` +
      `${cpus().length} cores, load average ${load0.map((l) => l.toFixed(2)).join(' ')}`,
  );
  const runs: RunResult[] = [];
  let baseline: DiskBaseline | undefined;
  let delivery: DeliveryTarget | undefined;
  let storeDir: string | undefined;
  try {
    if (TARGETS.includes('landfall+delivery')) {
      storeDir = await mkdtemp(path.join(args['store-dir'], 'landfall-bench-minio-'));
      const minio = await startMinio({ nice: STORE_NICE, dataDir: storeDir });
      // The node's default credential chain reads these (as in a pod with a Secret).
      process.env['AWS_ACCESS_KEY_ID'] = minio.accessKeyId;
      process.env['AWS_SECRET_ACCESS_KEY'] = minio.secretAccessKey;
      process.env['AWS_REGION'] = minio.region;
      const viewsDir = await mkdtemp(path.join(benchDir, 'views-'));
      await copyFile(EXAMPLE_VIEW, path.join(viewsDir, 'page_views.yaml'));
      delivery = { minio, viewsDir };
      console.log(
        `delivery: MinIO ${minio.endpoint} at nice ${STORE_NICE}, objects in ${storeDir}, raw Parquet on, view ${EXAMPLE_VIEW}`,
      );
    }
    if (BASELINE_S > 0) {
      baseline = await diskBaseline(benchDir, BASELINE_S);
      console.log(
        `disk baseline (1 MiB write + fdatasync, ${BASELINE_S} s each): appending to a new file ${fmt(baseline.appendMbPerS)} MB/s ` +
          `(${fmt(baseline.appendAfterFirstSecondMbPerS)} MB/s after its first second), ` +
          `rewriting the written file ${fmt(baseline.overwriteMbPerS)} MB/s`,
      );
    }
    for (let run = 1; run <= RUNS; run++) {
      for (const shape of SHAPES) {
        for (const target of TARGETS) {
          const r = await measure(run, shape, target, benchDir, delivery);
          runs.push(r);
          console.log(
            `run ${run} ${shape.padEnd(3)} ${target.padEnd(17)} ${fmt(r.reqPerS).padStart(7)} req/s ` +
              `${fmt(r.mbPerS, 1).padStart(6)} MB/s  p50 ${fmt(r.p50, 2)} p95 ${fmt(r.p95, 2)} p99 ${fmt(r.p99, 2)} ms  ` +
              `cpu ${fmt(r.serverCpuCores, 2)} elu ${fmt(r.serverElu, 2)} ` +
              `loop delay p99 ${fmt(r.eventLoopDelayP99Ms, 1)} ms rss ${fmt(r.rssMaxMiB)} MiB` +
              (r.syncsPerS !== undefined
                ? `  ${fmt(r.syncsPerS)} syncs/s, ${fmt(r.appendsPerSync ?? 0, 1)} appends/sync`
                : '') +
              (r.pipelineDepth !== undefined
                ? `, pipeline depth ${r.pipelineDepth} (${fmt(100 * (r.pipelinedShare ?? 0))}% of group writes during a sync, ` +
                  `${fmt(100 * (r.stagedShare ?? 0))}% of appends encoded ahead)` +
                  `, write ${fmt(r.writeMsMean ?? NaN, 2)} ms + sync ${fmt(r.syncMsMean ?? NaN, 2)} ms per group` +
                  `, ${r.recycledSegments ?? 0} segments recycled`
                : '') +
              (r.markers !== undefined ? `  ${r.markers} segments delivered` : '') +
              (r.diskMbPerS !== undefined
                ? `  disk ${fmt(r.diskMbPerS)} MB/s in ${fmt(r.diskWritesPerS ?? NaN)} writes/s`
                : '') +
              (r.non202 + r.errors > 0 ? `  non-202 ${r.non202} errors ${r.errors}` : '') +
              `  (load ${r.loadavg1.toFixed(2)})\n` +
              `      cpu by consumer (cores): ${Object.entries(r.cpuBy)
                .map(([k, c]) => `${k} ${fmt(c, 2)}`)
                .join(', ')}\n` +
              `      main-isolate GC per 1,000 requests: ${fmt(r.gcMajorPer1k, 2)} full mark-compacts, ` +
              `${fmt(r.gcMinorPer1k, 2)} scavenges; main-thread GC pause ${fmt(r.gcPauseUsPerReq, 1)} µs per request`,
          );
        }
      }
    }
  } finally {
    await delivery?.minio.stop();
    await rm(benchDir, { recursive: true, force: true });
    if (storeDir !== undefined) await rm(storeDir, { recursive: true, force: true });
  }
  const load1 = loadavg();
  if (!TARGETS.includes('null') || !TARGETS.includes('landfall')) {
    console.log('\n(no summary: it compares landfall with the null route, and a target was left out)');
    return;
  }

  type ShapeSummary = Partial<Record<Target, Summary>> & {
    null: Summary;
    landfall: Summary;
    /** landfall / null req/s of the medians, and the median of the per-run ratios. */
    ratio: number;
    pairedRatio: number;
    /** The same for landfall+delivery, with --delivery. */
    deliveryRatio?: number;
    deliveryPairedRatio?: number;
  };
  const summary: Record<string, ShapeSummary> = {};
  const lines = [
    '',
    `medians of ${RUNS} runs (load average before ${load0[0]!.toFixed(2)}, after ${load1[0]!.toFixed(2)})`,
    '| shape | target | req/s | events/s | MB/s | p50 ms | p95 ms | p99 ms | server CPU (cores) | loop delay p99 ms | peak RSS MiB | / null req/s |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const shape of SHAPES) {
    const of = (t: Target): Summary => summarize(runs.filter((r) => r.shape === shape && r.target === t));
    // Runs alternate null, landfall…: the ratio within each run is robust to load that changes between runs.
    const paired = (t: Target): number =>
      median(
        runs
          .filter((r) => r.shape === shape && r.target === t)
          .map(
            (l) =>
              l.reqPerS /
              runs.find((n) => n.shape === shape && n.target === 'null' && n.run === l.run)!.reqPerS,
          ),
      );
    const s: ShapeSummary = {
      null: of('null'),
      landfall: of('landfall'),
      ratio: 0,
      pairedRatio: paired('landfall'),
    };
    s.ratio = s.landfall.reqPerS / s.null.reqPerS;
    if (TARGETS.includes('landfall+delivery')) {
      const d = of('landfall+delivery');
      s['landfall+delivery'] = d;
      s.deliveryRatio = d.reqPerS / s.null.reqPerS;
      s.deliveryPairedRatio = paired('landfall+delivery');
    }
    summary[shape] = s;
    const label = buildBody(shape).label;
    for (const t of TARGETS) {
      const x = s[t]!;
      lines.push(
        `| ${label} | ${t} | ${fmt(x.reqPerS)} | ${fmt(x.eventsPerS)} | ${fmt(x.mbPerS, 1)} | ${fmt(x.p50, 2)} | ` +
          `${fmt(x.p95, 2)} | ${fmt(x.p99, 2)} | ${fmt(x.serverCpuCores, 2)} | ${fmt(x.eventLoopDelayP99Ms, 1)} | ` +
          `${fmt(x.rssMaxMiB)} | ${t === 'null' ? '' : fmt(x.reqPerS / s.null.reqPerS, 2)} |`,
      );
    }
  }
  const goals: string[] = [];
  const k1 = summary['1k'];
  if (k1 !== undefined) {
    goals.push(
      `1 KiB: landfall ${fmt(k1.ratio, 2)}× null req/s (median of per-run ratios ${fmt(k1.pairedRatio, 2)}; goal ≥ 0.90), ` +
        `p99 ${fmt(k1.landfall.p99, 2)} ms (goal ≤ 10)`,
    );
    const d = k1['landfall+delivery'];
    if (d !== undefined)
      goals.push(
        `1 KiB with delivery: ${fmt(k1.deliveryRatio ?? NaN, 2)}× null req/s (per-run ${fmt(k1.deliveryPairedRatio ?? NaN, 2)}; goal ≥ 0.90), ` +
          `p99 ${fmt(d.p99, 2)} ms (goal ≤ 10), event-loop delay p99 ${fmt(d.eventLoopDelayP99Ms, 1)} ms`,
      );
  }
  const k64 = summary['64k'];
  if (k64 !== undefined) {
    goals.push(
      `64 KiB: landfall ${fmt(k64.landfall.mbPerS, 1)} MB/s durable (goal ≥ 250` +
        (baseline !== undefined
          ? `; disk baseline appending ${fmt(baseline.appendMbPerS)} MB/s, ${fmt(baseline.appendAfterFirstSecondMbPerS)} after ` +
            `its first second, rewriting ${fmt(baseline.overwriteMbPerS)}`
          : '') +
        ')',
    );
    goals.push(
      `64 KiB: landfall / null req/s ${fmt(k64.ratio, 2)} (median of per-run ratios ${fmt(k64.pairedRatio, 2)})`,
    );
    const d = k64['landfall+delivery'];
    if (d !== undefined)
      goals.push(
        `64 KiB with delivery: ${fmt(d.mbPerS, 1)} MB/s, ${fmt(k64.deliveryRatio ?? NaN, 2)}× null req/s (per-run ` +
          `${fmt(k64.deliveryPairedRatio ?? NaN, 2)}; goal ≥ 0.40), p99 ${fmt(d.p99, 2)} ms (goal ≤ 40), ` +
          `event-loop delay p99 ${fmt(d.eventLoopDelayP99Ms, 1)} ms, peak RSS ${fmt(d.rssMaxMiB)} MiB (goal ≤ 400)`,
      );
  }
  for (const s of Object.entries(summary))
    if (s[1].landfall.syncsPerS !== undefined)
      goals.push(
        `${s[0]}: landfall group commit ${fmt(s[1].landfall.syncsPerS)} fdatasyncs/s, ` +
          `${fmt(s[1].landfall.appendsPerSync ?? 0, 1)} requests per fdatasync, ` +
          `pipeline depth ${s[1].landfall.pipelineDepth ?? '-'} ` +
          `(${fmt(100 * (s[1].landfall.pipelinedShare ?? 0))}% of group writes overlapped an fdatasync)`,
      );
  console.log([...lines, '', ...goals].join('\n'));

  const date = new Date().toISOString().replace(/:/g, '-');
  const resultsDir = path.join(here, '..', 'results');
  await mkdir(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `ingest-${date}.json`);
  await writeFile(
    file,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        node: process.version,
        cpus: cpus().length,
        loadavgBefore: load0,
        loadavgAfter: load1,
        options: {
          durationS: DURATION_S,
          runs: RUNS,
          warmupS: WARMUP_S,
          connections: CONNECTIONS,
          shapes: SHAPES,
          delivery: DELIVERY,
          segmentBytesMax: SEGMENT_BYTES_MAX,
          storeNice: STORE_NICE,
          storeDir: args['store-dir'],
        },
        diskBaseline: baseline,
        bodies: Object.fromEntries(
          SHAPES.map((s) => [s, { bytes: buildBody(s).bytes, events: buildBody(s).events }]),
        ),
        summary,
        goals,
        runs,
      },
      null,
      2,
    ) + '\n',
  );
  console.log(`\nresults: ${path.relative(process.cwd(), file)}`);
}

await main();
