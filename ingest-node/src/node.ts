// The composition root: config → filesystem → WAL → HTTP server, and the
// shutdown that undoes it in order. Nothing below this file reads globals
// (env, process, the real clock) on its own; this is where they are chosen.
//
// Shutdown (SIGTERM from the kubelet, or Ctrl-C): readiness goes false and new
// writes get 503 LF_DRAINING (clients retry on another replica); requests
// already reading or waiting for their fsync finish and get their 202; then
// the open segment is sealed and delivery goes on until nothing undelivered
// is left, so a pod that goes away leaves no backlog behind. All of it is
// bounded by shutdown.timeoutMs (what is left then resumes at the next start,
// or with `landfall drain`); the pod's grace period must be longer.
//
// The storage half (WAL, Parquet outputs, delivery) is openNodeStorage(): the
// drainer (`landfall drain`) runs the same composition without a listener.

import { resolve } from 'node:path';
import { Registry } from 'prom-client';
import type { Clock } from './clock.ts';
import { systemClock } from './clock.ts';
import type { Logger } from './log.ts';
import { silentLogger } from './log.ts';
import type { NodeConfig } from './config/schema.ts';
import { isLoopbackHost } from './config/load.ts';
import { VERSION } from './config/version.ts';
import type { FileSystem } from './fs/types.ts';
import { NodeFileSystem } from './fs/node.ts';
import { openWal } from './wal/wal.ts';
import { RECORD_BYTES_MAX_DEFAULT } from './wal/format.ts';
import { quarantineCounts } from './wal/recovery.ts';
import { registerQuarantineGauge } from './metrics.ts';
import type { Wal, WalOptions, WriteAheadLog } from './wal/types.ts';
import { credentialsFromBlock, startConfiguredDelivery } from './delivery/config.ts';
import { createCredentialsProvider } from './credentials.ts';
import type { RunningDelivery } from './delivery/config.ts';
import { startParquetOutputs } from './delivery/parquet-producers.ts';
import type { ParquetOutputs } from './delivery/parquet-producers.ts';
import { icebergTableCommit } from './iceberg/delivery.ts';
import { catalogAuthFrom, restCatalogFrom } from './iceberg/auth.ts';
import type { AwsCredentialIdentityProvider } from '@smithy/types';
import { startCompactionSchedule, type CompactionSchedule } from './iceberg/schedule.ts';
import type { ObjectStore } from './store/types.ts';
import { icebergFieldIds } from './iceberg/field-ids.ts';
import { icebergViewCheck } from './iceberg/view-check.ts';
import { fileSystemProbe } from './backpressure.ts';
import type { DiskSpaceProbe } from './backpressure.ts';
import { buildServer } from './http/server.ts';
import { checkTlsFiles } from './http/tls.ts';
import type { IngestServer } from './http/server.ts';
import type { ApiKeySource } from './http/auth.ts';
import { startMqttSource } from './mqtt/index.ts';
import type { MqttSource } from './mqtt/index.ts';

export interface NodeDeps {
  readonly fs?: FileSystem;
  readonly clock?: Clock;
  readonly log?: Logger;
  readonly registry?: Registry;
  /** Replaces the real WAL (tests). */
  readonly openWal?: (options: WalOptions) => Promise<WriteAheadLog>;
  /** See ServerDeps.apiKeys. */
  readonly apiKeys?: ApiKeySource | null;
  readonly disk?: DiskSpaceProbe;
  /** Install SIGTERM/SIGINT handlers that shut the node down (the CLI does; tests and embedders need not). */
  readonly handleSignals?: boolean;
  /** Extra /v1/status sections (later: sealer, uploads). */
  readonly status?: () => Record<string, unknown>;
}

export interface RunningNode {
  readonly config: NodeConfig;
  /** Base URL the server listens on, e.g. http://127.0.0.1:8080. */
  readonly url: string;
  /** Base URL of the admin listener (/metrics, /v1/status), e.g. http://127.0.0.1:8081. */
  readonly adminUrl: string;
  readonly server: IngestServer;
  readonly wal: WriteAheadLog;
  readonly authEnabled: boolean;
  /** The MQTT source, when config.mqtt.brokers is not empty. */
  readonly mqtt: MqttSource | undefined;
  /** Delivery of sealed segments, when config.s3 names a bucket or a local folder. */
  readonly delivery: RunningDelivery | undefined;
  /** Drains and stops; resolves true when everything closed in time and cleanly. Idempotent. */
  shutdown(reason?: string): Promise<boolean>;
  /** Settles when shutdown has finished (whoever started it), with shutdown()'s result. */
  readonly stopped: Promise<boolean>;
}

function timeout(ms: number): { promise: Promise<'timeout'>; cancel: () => void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<'timeout'>((r) => {
    timer = setTimeout(() => r('timeout'), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/** What a WAL still holds that is not in the bucket. */
export interface Backlog {
  /** Sealed segments without a commit marker, and their bytes. */
  readonly segments: number;
  readonly bytes: number;
  /** Bytes of the open segment (sealed by deliverBacklog; nonzero only if that failed). */
  readonly openSegmentBytes: number;
}

/** The WAL and what delivers it: the node's storage half, shared by `serve` and `drain`. */
export interface NodeStorage {
  readonly wal: WriteAheadLog;
  readonly walDir: string;
  readonly registry: Registry;
  /** Delivery of sealed segments, when config.s3 names a bucket or a local folder (and the WAL is durable). */
  readonly delivery: RunningDelivery | undefined;
  readonly parquet: ParquetOutputs | undefined;
  /** The /v1/status sections of delivery and the Parquet outputs. */
  status(): Record<string, unknown>;
  backlog(): Backlog;
  /**
   * Seals the open segment, then waits until delivery has committed every
   * sealed segment or `deadlineMonoMs` (clock.monotonicMs) passes. Resolves
   * with what is left. Call it once writes have stopped.
   */
  deliverBacklog(deadlineMonoMs: number, signal?: AbortSignal): Promise<Backlog>;
  /**
   * Stops delivery (its steps in flight get `graceMs`, then are aborted and
   * resume from their recorded progress next time), the Parquet outputs and
   * the WAL. The Parquet outputs' DuckDB gets `parquetGraceMs` (default
   * `graceMs`) to close. Resolves false when any of it failed (logged).
   */
  close(graceMs: number, parquetGraceMs?: number): Promise<boolean>;
}

export interface StorageDeps {
  readonly fs?: FileSystem;
  readonly clock?: Clock;
  readonly log?: Logger;
  readonly registry?: Registry;
  readonly openWal?: (options: WalOptions) => Promise<WriteAheadLog>;
}

/** How often deliverBacklog looks at the WAL besides the pipeline's idle signal. */
const BACKLOG_CHECK_MS = 100;

/** Opens (recovers) the WAL and starts delivering it, as configured. */
export async function openNodeStorage(config: NodeConfig, deps: StorageDeps = {}): Promise<NodeStorage> {
  const clock = deps.clock ?? systemClock;
  const log = deps.log ?? silentLogger;
  const fs = deps.fs ?? new NodeFileSystem();
  const walDir = resolve(config.wal.dir);
  // The HTTP layer enforces limits.recordBytesMax; the WAL's bound guards against
  // corrupt frames at recovery and must not shrink when a user lowers the limit.
  // Delivery reads the segments back with the same bound.
  const walRecordBytesMax = Math.max(config.limits.recordBytesMax, RECORD_BYTES_MAX_DEFAULT);
  const wal = await (deps.openWal ?? openWal)({
    dir: walDir,
    endpoint: config.endpoint.name,
    instance: config.instance.id,
    segmentBytesMax: config.wal.segmentBytesMax,
    segmentAgeMsMax: config.wal.segmentAgeMsMax,
    pipelineDepth: config.wal.pipelineDepth,
    recycleSegmentsMax: config.wal.recycleSegmentsMax,
    fs,
    clock,
    log,
    recordBytesMax: walRecordBytesMax,
    // In-flight bytes are bounded before the WAL (limits.inflightBytesMax); its queue
    // also counts frame headers, so give it headroom rather than a second, tighter limit.
    queueBytesMax: 2 * config.limits.inflightBytesMax,
  });

  const registry = deps.registry ?? new Registry();
  // Only the durable WAL (not a test double) has sealed segments to deliver.
  const durable = 'onSealed' in wal ? (wal as Wal) : undefined;
  if (durable !== undefined) registerQuarantineGauge(registry, fs, walDir);
  let delivery: RunningDelivery | undefined;
  let compaction: CompactionSchedule | undefined;
  // Views and raw Parquet (views.dir, outputs.rawParquet) ride on delivery: without a target there is nothing to build.
  let parquet: ParquetOutputs | undefined;
  if (durable !== undefined) {
    try {
      const catalogUri = config.iceberg.catalogUri;
      // SigV4 to the catalog signs with the same identity the node writes S3 with.
      const awsCredentials = (): AwsCredentialIdentityProvider =>
        createCredentialsProvider(credentialsFromBlock(config.credentials), { logger: log });
      // One catalog auth for every client of the node: one OAuth2 token, one bearer file watch.
      const shared =
        catalogUri !== undefined
          ? {
              auth: catalogAuthFrom(catalogUri, config.iceberg.auth, {
                requestTimeoutMs: config.iceberg.requestTimeoutMs,
                log,
                awsCredentials,
              }),
            }
          : {};
      // View files carry their tables' field ids (iceberg/field-ids.ts).
      const fieldIds =
        catalogUri !== undefined && config.s3.bucket !== undefined
          ? icebergFieldIds({ config: { ...config.iceberg, catalogUri }, log, awsCredentials, ...shared })
          : undefined;
      if (config.s3.bucket !== undefined || config.s3.localDir !== undefined)
        parquet = await startParquetOutputs(config, {
          clock,
          log,
          registry,
          ...(fieldIds !== undefined ? { fieldIds } : {}),
          ...(catalogUri !== undefined && config.s3.bucket !== undefined
            ? {
                checkView: icebergViewCheck({
                  config: { ...config.iceberg, catalogUri },
                  log,
                  awsCredentials,
                  ...shared,
                }),
              }
            : {}),
        });
      const producers = parquet?.producer !== undefined ? [parquet.producer] : undefined;
      if (catalogUri !== undefined && config.s3.bucket === undefined)
        throw new Error('iceberg.catalogUri needs s3.bucket: table data files are s3:// objects');
      const views = parquet?.registry;
      const commitFactory =
        catalogUri !== undefined && config.s3.bucket !== undefined
          ? icebergTableCommit({
              config: { ...config.iceberg, catalogUri },
              bucket: config.s3.bucket,
              views: (segment) => views?.viewsAt(segment.sealedAtMs) ?? [],
              log,
              awsCredentials,
              ...shared,
            })
          : undefined;
      // The compaction schedule works through the store delivery opens.
      let deliveryStore: { store: ObjectStore; prefix: string } | undefined;
      const tableCommit =
        commitFactory !== undefined
          ? (store: ObjectStore, prefix: string) => {
              deliveryStore = { store, prefix };
              return commitFactory(store, prefix);
            }
          : undefined;
      delivery = await startConfiguredDelivery(config, {
        wal: durable,
        clock,
        log,
        registry,
        fs,
        recordBytesMax: walRecordBytesMax,
        ...(producers !== undefined ? { producers } : {}),
        ...(tableCommit !== undefined ? { tableCommit } : {}),
      });
      const every = config.iceberg.compaction.intervalMs;
      const parquetDb = parquet?.db;
      if (every > 0 && catalogUri !== undefined && config.s3.bucket !== undefined && parquetDb !== undefined)
        compaction = startCompactionSchedule({
          config: config.iceberg.compaction,
          // The same catalog auth as the appends (a catalog that needs a token for one needs it for both).
          catalog: restCatalogFrom({ ...config.iceberg, catalogUri }, { log, awsCredentials, ...shared }),
          bucket: config.s3.bucket,
          store: () => deliveryStore,
          db: parquetDb,
          tables: () =>
            (views?.viewsAt(clock.nowMs()) ?? []).flatMap((v) =>
              v.spec.iceberg !== undefined ? [v.spec.iceberg] : [],
            ),
          conflictRetriesMax: config.iceberg.conflictRetriesMax,
          log,
        });
      else if (every > 0)
        log.warn(
          {},
          'iceberg.compaction.intervalMs is set but there is nothing to compact (it needs iceberg.catalogUri, s3.bucket and views.dir): not scheduled',
        );
    } catch (err) {
      await compaction?.stop();
      await parquet?.close();
      await wal.close();
      throw err;
    }
  }

  const backlog = (): Backlog => {
    const s = wal.stats();
    const d = durable?.stats();
    return {
      segments: d?.undeliveredSegments ?? s.sealedSegments,
      bytes: d?.undeliveredBytes ?? 0,
      openSegmentBytes: s.openSegmentBytes,
    };
  };
  const empty = (): boolean => {
    const b = backlog();
    return (
      b.segments === 0 && b.openSegmentBytes === 0 && (delivery?.pipeline.stats().segmentsPending ?? 0) === 0
    );
  };

  let closing: Promise<boolean> | undefined;
  return {
    wal,
    walDir,
    registry,
    delivery,
    parquet,
    status: () => ({ ...delivery?.pipeline.status(), ...parquet?.status(), ...compaction?.status() }),
    backlog,
    async deliverBacklog(deadlineMonoMs, signal) {
      if (durable === undefined || delivery === undefined) return backlog();
      // Bounded by the deadline too: a seal whose state write keeps failing
      // (a disk gone bad) retries until the WAL closes, and close() must still run.
      let sealTimer: NodeJS.Timeout | undefined;
      const sealed = await Promise.race([
        durable.seal('close').then(
          () => true,
          (err: unknown) => {
            log.error({ err }, 'sealing the open segment failed; it is sealed when the WAL closes');
            return true;
          },
        ),
        new Promise<false>((r) => {
          sealTimer = setTimeout(() => r(false), Math.max(0, deadlineMonoMs - clock.monotonicMs()));
        }),
      ]);
      clearTimeout(sealTimer);
      if (!sealed) {
        log.error({}, 'sealing the open segment did not finish in time; it is sealed when the WAL closes');
        return backlog();
      }
      const pipeline = delivery.pipeline;
      // The pipeline's idle() wakes us at once; the poll covers seals the WAL
      // has not announced yet (a state write being retried).
      while (!empty() && signal?.aborted !== true) {
        const leftMs = deadlineMonoMs - clock.monotonicMs();
        if (leftMs <= 0) break;
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          pipeline.idle(),
          new Promise<void>((r) => {
            timer = setTimeout(r, Math.min(leftMs, BACKLOG_CHECK_MS));
          }),
        ]);
        clearTimeout(timer);
      }
      return backlog();
    },
    close(graceMs, parquetGraceMs = graceMs) {
      closing ??= (async () => {
        let ok = true;
        // Before delivery: the schedule works through delivery's store.
        await compaction?.stop();
        if (delivery !== undefined) {
          try {
            await delivery.stop(graceMs);
          } catch (err) {
            ok = false;
            log.error({ err }, 'stopping delivery failed');
          }
        }
        try {
          await parquet?.close(parquetGraceMs);
        } catch (err) {
          ok = false;
          log.error({ err }, 'closing the Parquet outputs failed');
        }
        try {
          await wal.close();
        } catch (err) {
          ok = false;
          log.error(
            { err },
            'closing the WAL failed; recovery will finish the open segment at the next start',
          );
        }
        return ok;
      })();
      return closing;
    },
  };
}

export async function startNode(config: NodeConfig, deps: NodeDeps = {}): Promise<RunningNode> {
  const clock = deps.clock ?? systemClock;
  const log = deps.log ?? silentLogger;
  const fs = deps.fs ?? new NodeFileSystem();
  const walDir = resolve(config.wal.dir);

  const authEnabled =
    deps.apiKeys !== undefined ? deps.apiKeys !== null : config.auth.apiKeysFile !== undefined;
  if (!authEnabled) {
    const loopback = isLoopbackHost(config.listen.host);
    // Loud on purpose: an open ingest endpoint is the first thing a reviewer should see.
    log.warn(
      { host: config.listen.host, authRequired: config.auth.required ?? 'auto' },
      loopback
        ? 'AUTH DISABLED: no auth.apiKeysFile, so anyone who can reach this loopback address can write. Set auth.apiKeysFile before exposing the node.'
        : 'AUTH DISABLED on a non-loopback address (auth.required=false): anyone who can reach this node can write.',
    );
  }

  // Wrong certificate files stop the start here, before recovery and delivery run.
  if (config.listen.tls.certFile !== undefined) await checkTlsFiles(config.listen.tls);

  const storage = await openNodeStorage(config, {
    fs,
    clock,
    log,
    ...(deps.registry !== undefined ? { registry: deps.registry } : {}),
    ...(deps.openWal !== undefined ? { openWal: deps.openWal } : {}),
  });
  const { wal, delivery, registry } = storage;

  let server: IngestServer;
  let url: string;
  // Started after the server (it shares the server's backpressure); drain mode asks it through mqttAppending.
  let mqtt: MqttSource | undefined;
  try {
    server = await buildServer({
      config,
      wal,
      clock,
      log,
      disk: deps.disk ?? fileSystemProbe(fs, walDir),
      // The Parquet children's records pools are on the WAL volume by default.
      onDiskLow: (low) => storage.parquet?.setVolumeLow?.(low),
      registry,
      defaultMetrics: true,
      mqttAppending: () => mqtt?.appendingMessages() ?? 0,
      ...(deps.apiKeys !== undefined ? { apiKeys: deps.apiKeys } : {}),
      ...(deps.status !== undefined || delivery !== undefined
        ? { status: () => ({ ...deps.status?.(), ...storage.status() }) }
        : {}),
      ...(delivery !== undefined
        ? {
            deliveryPending: () => delivery.pipeline.stats().segmentsPending,
            // Corrupt segments kept for a human are acknowledged data: a node holding any is never "drained".
            quarantinedSegments: async () => (await quarantineCounts(fs, walDir)).segments,
          }
        : {}),
    });
    try {
      url = await server.listen();
    } catch (err) {
      await server.close();
      throw err;
    }
  } catch (err) {
    await storage.close(0, 10_000);
    throw err;
  }

  try {
    mqtt = await startMqttSource(config, {
      wal,
      backpressure: server.backpressure,
      registry: server.metrics.registry,
      log,
      stateDir: walDir,
    });
  } catch (err) {
    await server.close();
    await storage.close(0, 10_000);
    throw err;
  }

  log.info(
    {
      url,
      adminUrl: server.adminUrl,
      version: VERSION,
      endpoint: config.endpoint.name,
      instance: config.instance.id,
      walDir,
      validation: config.validation,
      auth: authEnabled,
      ...(server.tls === undefined ? {} : { tls: server.tls.summary }),
    },
    'landfall ingest node listening',
  );

  let shuttingDown: Promise<boolean> | undefined;
  /** A second signal: stop waiting for the backlog. */
  const hurry = new AbortController();
  let resolveStopped!: (ok: boolean) => void;
  const stopped = new Promise<boolean>((r) => {
    resolveStopped = r;
  });

  const shutdown = (reason = 'shutdown'): Promise<boolean> => {
    shuttingDown ??= (async () => {
      const startedMs = clock.monotonicMs();
      log.info(
        { reason, timeoutMs: config.shutdown.timeoutMs },
        'draining: refusing new writes, finishing in-flight requests, then delivering the backlog',
      );
      server.beginDrain();
      // MQTT stops alongside HTTP: it writes and acknowledges what it holds before the WAL closes.
      const mqttStopped = mqtt?.stop(config.shutdown.timeoutMs);
      let ok = true;
      const limit = timeout(config.shutdown.timeoutMs);
      const closing = server.close();
      if ((await Promise.race([closing, limit.promise])) === 'timeout') {
        ok = false;
        log.error(
          { timeoutMs: config.shutdown.timeoutMs },
          'in-flight requests did not finish in time; closing their connections',
        );
        server.app.server.closeAllConnections();
        await closing.catch(() => {});
      }
      limit.cancel();
      if (mqttStopped !== undefined && !(await mqttStopped)) ok = false;
      // The backlog gets what is left of the budget, less a little for the
      // delivery steps still in flight to finish or be aborted cleanly.
      const budgetMs = config.shutdown.timeoutMs;
      const stopGraceMs = Math.min(2_000, Math.floor(budgetMs / 10));
      const left = await storage.deliverBacklog(startedMs + budgetMs - stopGraceMs, hurry.signal);
      const leftover = left.segments > 0 || left.openSegmentBytes > 0;
      if (delivery !== undefined || leftover)
        log[leftover ? 'warn' : 'info'](
          {
            segmentsLeft: left.segments,
            bytesLeft: left.bytes,
            openSegmentBytes: left.openSegmentBytes,
            delivery: delivery !== undefined,
          },
          leftover
            ? 'shutdown: undelivered segments left in the WAL; they resume at the next start (or with `landfall drain`)'
            : 'shutdown: every acknowledged record is delivered',
        );
      const remainingMs = Math.max(0, startedMs + budgetMs - clock.monotonicMs());
      if (!(await storage.close(Math.min(remainingMs, Math.max(stopGraceMs, 1))))) ok = false;
      log.info({ reason, ok, durationMs: Math.round(clock.monotonicMs() - startedMs) }, 'stopped');
      if (deps.handleSignals === true) {
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
      }
      resolveStopped(ok);
      return ok;
    })();
    return shuttingDown;
  };

  const onSignal = (signal: NodeJS.Signals): void => {
    if (shuttingDown !== undefined) {
      // A second Ctrl-C means "now": cut the connections still open so close() can finish.
      log.warn({ signal }, 'second signal: closing every connection now, not waiting for delivery');
      server.app.server.closeAllConnections();
      hurry.abort();
      return;
    }
    void shutdown(signal);
  };
  if (deps.handleSignals === true) {
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }

  return {
    config,
    url,
    adminUrl: server.adminUrl ?? url,
    server,
    wal,
    authEnabled,
    mqtt,
    delivery,
    shutdown,
    stopped,
  };
}
