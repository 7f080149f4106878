// A server of the ingest benchmark, run by bench.ts as a process of its own
// for each run, so its CPU, event loop and RSS are its own (not the bench's,
// nor an earlier run's heap), as a deployed node's are:
//   null: a bare fastify route that reads the body and answers 202;
//   landfall: startNode on a fresh WAL dir on the disk under test;
//   landfall+delivery: the same, delivering to the bench's MinIO (raw Parquet
//     and the example view on). Its credentials come from the environment.
//
// IPC (process.send): → {t:'ready', url}; ← {t:'warm'} starts the measured
// window; ← {t:'end'} ends it → {t:'stats', stats}; ← {t:'close'} shuts down
// and exits.
import {
  PerformanceObserver,
  constants as perfConstants,
  monitorEventLoopDelay,
  performance,
} from 'node:perf_hooks';
import Fastify from 'fastify';
import { defaultConfig } from '../../../ingest-node/src/config/load.ts';
import { startNode } from '../../../ingest-node/src/node.ts';
import type { DurableWalStats, Wal } from '../../../ingest-node/src/wal/types.ts';

const LOOP_DELAY_RESOLUTION_MS = 1;

export type Target = 'null' | 'landfall' | 'landfall+delivery';

export interface ServerSpec {
  readonly target: Target;
  readonly walDir: string;
  readonly segmentBytesMax?: number;
  readonly pipelineDepth?: number;
  readonly recycleSegmentsMax?: number;
  /**
   * landfall without delivery: every sealed segment is marked delivered and
   * deleted at once, as a delivery that costs nothing would, so the WAL
   * reuses files (recycleSegmentsMax) with no Parquet or upload CPU beside it.
   */
  readonly freeSealed?: boolean;
  /** landfall+delivery only. */
  readonly delivery?: {
    readonly endpointUrl: string;
    readonly bucket: string;
    readonly viewsDir: string;
    /** delivery.scratchDir and views.scratchDir (default: inside the WAL dir). */
    readonly scratchDir?: string;
  };
}

/** What the server measured over the window between 'warm' and 'end'. */
export interface ServerStats {
  readonly wallS: number;
  /** Process CPU (user + sys, all threads), in cores. */
  readonly cpuCores: number;
  readonly elu: number;
  /**
   * Event-loop delay p99, ms: how late a 1 ms timer fired (monitorEventLoopDelay
   * records the whole interval between its samples, so the interval is taken off;
   * at the old 10 ms resolution an idle loop read ~10-14 ms).
   */
  readonly loopDelayP99Ms: number;
  /** Peak RSS, sampled every 100 ms, MiB. */
  readonly rssMaxMiB: number;
  /**
   * The main isolate's garbage collections over the window: full mark-compacts
   * (what a fresh large Buffer per request sets off, issue 15), scavenges, and
   * the main thread's pause in all of them (V8's helper threads not included).
   */
  readonly gc: { readonly major: number; readonly minor: number; readonly pauseMs: number };
  /** Landfall only: the WAL's counters over the window. */
  readonly wal?: {
    readonly syncs: number;
    readonly appends: number;
    readonly groupWrites: number;
    readonly pipelinedWrites: number;
    /** Appends encoded ahead, while an earlier group's fdatasync ran (wal.ts "Encoding ahead"). */
    readonly stagedAppends: number;
    readonly writeSeconds: number;
    readonly syncSeconds: number;
    readonly pipelineDepth: number;
    readonly recycled: number;
  };
}

export type ServerMessage = { t: 'ready'; url: string } | { t: 'stats'; stats: ServerStats };
export type ControlMessage = { t: 'warm' } | { t: 'end' } | { t: 'close' };

interface Running {
  readonly url: string;
  readonly walStats?: () => DurableWalStats;
  close(): Promise<void>;
}

async function startNull(): Promise<Running> {
  const app = Fastify({ logger: false });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
  app.post('/v1/ingest', async (request, reply) => {
    let bytes = 0;
    await new Promise<void>((resolve, reject) => {
      const raw = request.raw;
      raw.on('data', (c: Buffer) => void (bytes += c.length));
      raw.on('end', resolve);
      raw.on('error', reject);
    });
    void reply.code(202).type('application/json');
    return `{"accepted":1,"bytes":${bytes}}`;
  });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return { url, close: () => app.close() };
}

async function startLandfall(spec: ServerSpec): Promise<Running> {
  const d = spec.delivery;
  const node = await startNode(
    defaultConfig({
      listen: { port: 0 },
      wal: {
        dir: spec.walDir,
        ...(spec.segmentBytesMax !== undefined ? { segmentBytesMax: spec.segmentBytesMax } : {}),
        ...(spec.pipelineDepth !== undefined ? { pipelineDepth: spec.pipelineDepth } : {}),
        ...(spec.recycleSegmentsMax !== undefined ? { recycleSegmentsMax: spec.recycleSegmentsMax } : {}),
      },
      endpoint: { name: 'bench' },
      instance: { id: 'bench-0' },
      ...(d !== undefined
        ? {
            s3: { bucket: d.bucket, endpointUrl: d.endpointUrl, prefix: 'bench' },
            outputs: { rawParquet: true },
            views: {
              dir: d.viewsDir,
              ...(d.scratchDir !== undefined ? { scratchDir: `${d.scratchDir}/views` } : {}),
            },
            ...(d.scratchDir !== undefined ? { delivery: { scratchDir: `${d.scratchDir}/delivery` } } : {}),
          }
        : {}),
    }),
    { apiKeys: null },
  );
  const wal = node.wal as Wal;
  if (spec.freeSealed === true && d === undefined)
    wal.onSealed((s) => {
      void wal
        .markDelivered(s.id)
        .then(() => wal.deleteSegment(s.id))
        .catch((err: unknown) => console.error(`bench: could not free segment ${s.fileName}:`, err));
    });
  return {
    url: node.url,
    walStats: () => wal.stats(),
    close: async () => {
      await node.shutdown('bench');
    },
  };
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as ServerSpec;
  const send = (m: ServerMessage): void => void process.send?.(m);
  const server = spec.target === 'null' ? await startNull() : await startLandfall(spec);
  let t0 = performance.now();
  let cpu0 = process.cpuUsage();
  let elu0 = performance.eventLoopUtilization();
  let wal0 = server.walStats?.();
  let rssMax = 0;
  let rssTimer: NodeJS.Timeout | undefined;
  const gc = { major: 0, minor: 0, pauseMs: 0 };
  let gcCounting = false;
  new PerformanceObserver((list) => {
    if (!gcCounting) return;
    for (const e of list.getEntries()) {
      const kind = (e as { detail?: { kind?: number } }).detail?.kind;
      if (kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) gc.major++;
      else if (kind === perfConstants.NODE_PERFORMANCE_GC_MINOR) gc.minor++;
      gc.pauseMs += e.duration;
    }
  }).observe({ entryTypes: ['gc'] });
  const delay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
  process.on('message', (m: ControlMessage) => {
    if (m.t === 'warm') {
      t0 = performance.now();
      cpu0 = process.cpuUsage();
      elu0 = performance.eventLoopUtilization();
      wal0 = server.walStats?.();
      gcCounting = true;
      delay.enable();
      rssMax = process.memoryUsage.rss();
      rssTimer = setInterval(() => (rssMax = Math.max(rssMax, process.memoryUsage.rss())), 100);
    } else if (m.t === 'end') {
      gcCounting = false;
      delay.disable();
      clearInterval(rssTimer);
      const wallS = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      const wal1 = server.walStats?.();
      send({
        t: 'stats',
        stats: {
          wallS,
          cpuCores: (cpu.user + cpu.system) / 1e6 / wallS,
          elu: performance.eventLoopUtilization(elu0).utilization,
          loopDelayP99Ms: Math.max(0, delay.percentile(99) / 1e6 - LOOP_DELAY_RESOLUTION_MS),
          rssMaxMiB: Math.max(rssMax, process.memoryUsage.rss()) / (1024 * 1024),
          gc: { ...gc },
          ...(wal0 !== undefined && wal1 !== undefined
            ? {
                wal: {
                  syncs: wal1.syncsTotal - wal0.syncsTotal,
                  appends: wal1.appendsTotal - wal0.appendsTotal,
                  groupWrites: wal1.groupWritesTotal - wal0.groupWritesTotal,
                  pipelinedWrites: wal1.pipelinedWritesTotal - wal0.pipelinedWritesTotal,
                  stagedAppends: wal1.stagedAppendsTotal - wal0.stagedAppendsTotal,
                  writeSeconds: wal1.writeSecondsTotal - wal0.writeSecondsTotal,
                  syncSeconds: wal1.syncSecondsTotal - wal0.syncSecondsTotal,
                  pipelineDepth: wal1.pipelineDepth,
                  recycled: wal1.recycledSegmentsTotal - wal0.recycledSegmentsTotal,
                },
              }
            : {}),
        },
      });
    } else {
      void server.close().then(
        () => process.exit(0),
        (err: unknown) => {
          console.error(err);
          process.exit(1);
        },
      );
    }
  });
  // The bench went away (killed, crashed): no server outlives it.
  process.on('disconnect', () => {
    void server.close().finally(() => process.exit(1));
  });
  send({ t: 'ready', url: server.url });
}

if (import.meta.main) await main();
