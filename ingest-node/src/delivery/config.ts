// From the node's configuration (the `s3`, `credentials`, `outputs` and
// `delivery` blocks of settings.ts) to a running pipeline: startDelivery()
// opens the store and starts the pipeline for a WAL; startConfiguredDelivery()
// is the one call node.ts makes.
import path from 'node:path';
import type { Registry } from 'prom-client';
import type { Clock } from '../clock.ts';
import type { CredentialsConfig } from '../credentials.ts';
import type { FileSystem } from '../fs/types.ts';
import type { Logger } from '../log.ts';
import { openObjectStore, type ObjectStore, type ObjectStoreConfig } from '../store/index.ts';
import type { Wal } from '../wal/types.ts';
import { startPipeline, type Pipeline, type PipelineOptions } from './pipeline.ts';
import { ArchiveWorker } from './archive-worker.ts';
import { segmentArchiveProducer, type ArtifactProducer } from './producers.ts';
import { normalizePrefix } from './keys.ts';
import { defaultRetryPolicy } from './retry.ts';
import type { CredentialsBlock, DeliveryConfig, OutputsConfig, S3Config } from './settings.ts';

export { CredentialsSchema, DeliverySchema, OutputsSchema, S3Schema } from './settings.ts';
export type { CredentialsBlock, DeliveryConfig, OutputsConfig, S3Config } from './settings.ts';

/**
 * The S3 target: the config's `s3` block (the operator renders it into the
 * node config file, operator/src/adapters/node-config.ts; DESIGN §7), or a
 * local folder when no bucket is set.
 */
export interface S3Target {
  readonly bucket?: string | undefined;
  readonly region?: string | undefined;
  readonly prefix?: string | undefined;
  /** MinIO, R2…: path-style addressing unless forcePathStyle is false. */
  readonly endpointUrl?: string | undefined;
  readonly forcePathStyle?: boolean | undefined;
  /** Without a bucket: deliver into this folder (the embedded, no-cloud default). */
  readonly localDir?: string | undefined;
}

/** The store config for a target: S3 with these credentials, or the local folder. */
export function storeConfigFor(
  target: S3Target,
  credentials: CredentialsConfig = { mode: 'default' },
): { store: ObjectStoreConfig; prefix: string } {
  const prefix = normalizePrefix(target.prefix ?? '');
  if (target.bucket === undefined || target.bucket === '')
    return { store: { kind: 'local', root: target.localDir ?? './bucket' }, prefix };
  return {
    store: {
      kind: 's3',
      bucket: target.bucket,
      region: target.region ?? 'us-east-1',
      endpoint: target.endpointUrl,
      forcePathStyle: target.forcePathStyle,
      credentials,
    },
    prefix,
  };
}

export interface StartDeliveryOptions {
  readonly wal: Wal;
  readonly endpoint: string;
  readonly instance: string;
  /** Where to deliver: an S3 bucket (with credentials) or a local folder. */
  readonly store: ObjectStoreConfig;
  readonly prefix: string;
  /** Defaults applied by the node's config loader (or pass {} for all defaults). */
  readonly delivery: Partial<DeliveryConfig>;
  readonly outputs?: OutputsConfig;
  /**
   * Niceness the segment archive's worker thread adds to the node's
   * (views.processNice); default archive-worker.ts archiveNiceDefault.
   */
  readonly archiveNice?: number;
  /** Extra producers (Parquet raw/views/DLQ, a later issue). */
  readonly producers?: readonly ArtifactProducer[];
  /** Table commits before each marker (iceberg/delivery.ts), given the opened store. */
  readonly tableCommit?: (store: ObjectStore, prefix: string) => NonNullable<PipelineOptions['tableCommit']>;
  readonly clock: Clock;
  readonly log: Logger;
  readonly registry?: Registry;
  /** The WAL's filesystem: scratch files and a local-folder target go through it. Default: the real disk. */
  readonly fs?: FileSystem;
  /**
   * The WAL's bound on one record (its recordBytesMax): segments are read back
   * with it, or a record the WAL took would read as a corrupt frame and
   * quarantine its segment. Default RECORD_BYTES_MAX_DEFAULT.
   */
  readonly recordBytesMax?: number;
}

export interface RunningDelivery {
  readonly pipeline: Pipeline;
  /** Stops the pipeline (see Pipeline.stop) and releases the store's sockets. */
  stop(graceMs?: number): Promise<void>;
}

/** Opens the store and starts the pipeline for `wal`. */
export async function startDelivery(o: StartDeliveryOptions): Promise<RunningDelivery> {
  const d = o.delivery;
  const storeCfg: ObjectStoreConfig =
    o.store.kind === 's3'
      ? {
          ...o.store,
          partBytes: o.store.partBytes ?? d.partBytes,
          partConcurrency: o.store.partConcurrency ?? d.partConcurrency,
        }
      : o.store;
  const producers: ArtifactProducer[] = [];
  const archive =
    (o.outputs?.segments ?? true)
      ? segmentArchiveProducer(
          o.archiveNice !== undefined ? { worker: new ArchiveWorker({ nice: o.archiveNice }) } : {},
        )
      : undefined;
  if (archive !== undefined) producers.push(archive);
  if (o.outputs?.rawParquet === true && (o.producers ?? []).length === 0)
    o.log.warn(
      {},
      'outputs.rawParquet is set but this node has no Parquet producer yet; delivering segments only',
    );
  producers.push(...(o.producers ?? []));
  const opened = openObjectStore(storeCfg, {
    clock: o.clock,
    logger: o.log,
    ...(o.fs !== undefined ? { fs: o.fs } : {}),
  });
  const retainSegments = d.retainDeliveredSegments ?? 0;
  const retainBytes = d.retainDeliveredBytes ?? 0;
  const options: PipelineOptions = {
    wal: o.wal,
    store: opened.store,
    prefix: o.prefix,
    endpoint: o.endpoint,
    instance: o.instance,
    scratchDir: d.scratchDir ?? path.join(o.wal.dir, 'delivery'),
    producers,
    ...(o.tableCommit !== undefined ? { tableCommit: o.tableCommit(opened.store, o.prefix) } : {}),
    clock: o.clock,
    log: o.log,
    ...(o.fs !== undefined ? { fs: o.fs } : {}),
    ...(o.registry !== undefined ? { registry: o.registry } : {}),
    ...(d.segmentsInFlightMax !== undefined ? { segmentsInFlightMax: d.segmentsInFlightMax } : {}),
    ...(d.segmentsAheadMax !== undefined ? { segmentsAheadMax: d.segmentsAheadMax } : {}),
    ...(d.uploadsInFlightMax !== undefined ? { uploadsInFlightMax: d.uploadsInFlightMax } : {}),
    ...(d.segmentRetryDelayMsMax !== undefined ? { segmentRetryDelayMsMax: d.segmentRetryDelayMsMax } : {}),
    ...(o.recordBytesMax !== undefined ? { recordBytesMax: o.recordBytesMax } : {}),
    ...(d.staleUploadAgeMs !== undefined ? { staleUploadAgeMs: d.staleUploadAgeMs } : {}),
    ...(d.staleUploadCheckIntervalMs !== undefined
      ? { staleUploadCheckIntervalMs: d.staleUploadCheckIntervalMs }
      : {}),
    retry: {
      attemptsMax: d.retryAttemptsMax ?? defaultRetryPolicy.attemptsMax,
      retryDelayMsBase: Math.min(defaultRetryPolicy.retryDelayMsBase, d.retryDelayMsMax ?? Infinity),
      retryDelayMsMax: d.retryDelayMsMax ?? defaultRetryPolicy.retryDelayMsMax,
    },
    ...(retainSegments > 0 || retainBytes > 0
      ? {
          retention: {
            ...(retainSegments > 0 ? { segments: retainSegments } : {}),
            ...(retainBytes > 0 ? { bytes: retainBytes } : {}),
          },
        }
      : {}),
  };
  let pipeline: Pipeline;
  try {
    pipeline = await startPipeline(options);
  } catch (err) {
    opened.close();
    throw err;
  }
  return {
    pipeline,
    stop: async (graceMs) => {
      await pipeline.stop(graceMs !== undefined ? { graceMs } : {});
      await archive?.close();
      opened.close();
    },
  };
}

/** The credentials block (flat, as config files and env vars have it) as the provider's config. */
export function credentialsFromBlock(c: CredentialsBlock): CredentialsConfig {
  const need = (what: string): string => {
    if (c.roleArn === undefined)
      throw new Error(`credentials.mode ${c.mode} needs credentials.roleArn (${what})`);
    return c.roleArn;
  };
  switch (c.mode) {
    case 'default':
      return { mode: 'default' };
    case 'webIdentity':
      return {
        mode: 'webIdentity',
        roleArn: need('the IRSA role'),
        tokenFile: c.tokenFile,
        sessionName: c.sessionName,
        stsRegion: c.stsRegion,
        stsEndpoint: c.stsEndpoint,
      };
    case 'assumeRole':
      return {
        mode: 'assumeRole',
        roleArn: need('the role to assume'),
        externalId: c.externalId,
        sessionName: c.sessionName,
        stsRegion: c.stsRegion,
        stsEndpoint: c.stsEndpoint,
      };
  }
}

/** The node config blocks delivery reads. */
export interface NodeDeliveryConfig {
  readonly endpoint: { readonly name: string };
  readonly instance: { readonly id: string };
  readonly s3: S3Config;
  readonly credentials: CredentialsBlock;
  readonly outputs: OutputsConfig;
  readonly delivery: DeliveryConfig;
  /** views.processNice: also the archive worker thread's niceness. */
  readonly views?: { readonly processNice: number };
}

/**
 * Starts delivery for the node's WAL, or returns undefined when the config
 * names no target (neither s3.bucket nor s3.localDir): then sealed segments
 * stay in the WAL.
 */
export async function startConfiguredDelivery(
  config: NodeDeliveryConfig,
  deps: {
    wal: Wal;
    clock: Clock;
    log: Logger;
    registry?: Registry;
    /** Producers after the segment archive (the node's Parquet outputs). */
    producers?: readonly ArtifactProducer[];
    tableCommit?: StartDeliveryOptions['tableCommit'];
    fs?: FileSystem;
    /** The WAL's recordBytesMax (StartDeliveryOptions.recordBytesMax). */
    recordBytesMax?: number;
  },
): Promise<RunningDelivery | undefined> {
  if (config.s3.bucket === undefined && config.s3.localDir === undefined) {
    deps.log.warn(
      { walDir: deps.wal.dir },
      'no delivery target (s3.bucket or s3.localDir): sealed segments stay in the WAL until one is configured',
    );
    return undefined;
  }
  const target = storeConfigFor(config.s3, credentialsFromBlock(config.credentials));
  return startDelivery({
    wal: deps.wal,
    endpoint: config.endpoint.name,
    instance: config.instance.id,
    store: target.store,
    prefix: target.prefix,
    delivery: config.delivery,
    outputs: config.outputs,
    ...(config.views !== undefined ? { archiveNice: config.views.processNice } : {}),
    ...(deps.producers !== undefined ? { producers: deps.producers } : {}),
    ...(deps.tableCommit !== undefined ? { tableCommit: deps.tableCommit } : {}),
    clock: deps.clock,
    log: deps.log,
    ...(deps.fs !== undefined ? { fs: deps.fs } : {}),
    ...(deps.registry !== undefined ? { registry: deps.registry } : {}),
    ...(deps.recordBytesMax !== undefined ? { recordBytesMax: deps.recordBytesMax } : {}),
  });
}
