// The delivery pipeline's configuration block, as a TypeBox object the node's
// config schema (config/schema.ts configBlocks) can take as `delivery`, and
// startDelivery(): the few lines node.ts needs to open the store and run the
// pipeline for its WAL. Units at the end of names, a bound on each knob.
import path from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import type { Registry } from 'prom-client';
import type { Clock } from '../clock.ts';
import type { CredentialsConfig } from '../credentials.ts';
import type { Logger } from '../log.ts';
import { openObjectStore, type ObjectStoreConfig } from '../store/index.ts';
import type { Wal } from '../wal/types.ts';
import {
  segmentRetryDelayMsMaxDefault,
  segmentsAheadMaxDefault,
  segmentsInFlightMaxDefault,
  staleUploadAgeMsDefault,
  startPipeline,
  uploadsInFlightMaxDefault,
  type Pipeline,
  type PipelineOptions,
} from './pipeline.ts';
import { segmentArchiveProducer, type ArtifactProducer } from './producers.ts';
import { normalizePrefix } from './keys.ts';
import { defaultRetryPolicy } from './retry.ts';

const MiB = 1024 * 1024;

export const DeliverySchema = Type.Object(
  {
    segmentsInFlightMax: Type.Integer({
      minimum: 1,
      maximum: 64,
      default: segmentsInFlightMaxDefault,
      description: 'Sealed segments read, compressed and uploaded at once.',
    }),
    segmentsAheadMax: Type.Integer({
      minimum: 0,
      maximum: 10_000,
      default: segmentsAheadMaxDefault,
      description:
        'Segments uploaded and waiting for an earlier segment’s commit marker (markers are written in segment order); bounds the work done ahead of a stuck segment.',
    }),
    uploadsInFlightMax: Type.Integer({
      minimum: 1,
      maximum: 64,
      default: uploadsInFlightMaxDefault,
      description: 'Artifact uploads at once, over all segments.',
    }),
    partBytes: Type.Integer({
      minimum: 5 * MiB,
      maximum: 5 * 1024 * MiB,
      default: 8 * MiB,
      description:
        'Multipart upload part size (S3: at least 5 MiB). Memory per upload is partBytes × partConcurrency.',
    }),
    partConcurrency: Type.Integer({
      minimum: 1,
      maximum: 64,
      default: 4,
      description: 'Parts of one multipart upload in flight at once.',
    }),
    retainDeliveredSegments: Type.Integer({
      minimum: 0,
      default: 0,
      description:
        'Keep the newest N delivered segments on the volume (for local replay); 0 = no count bound. With retainDeliveredBytes also 0, delivered segments are deleted at once. Retained segments count towards backpressure.walBytesHigh.',
    }),
    retainDeliveredBytes: Type.Integer({
      minimum: 0,
      default: 0,
      description: 'Keep delivered segments up to this many bytes (newest first); 0 = no byte bound.',
    }),
    retryAttemptsMax: Type.Integer({
      minimum: 1,
      maximum: 1000,
      default: defaultRetryPolicy.attemptsMax,
      description:
        'Attempts of one store call (exponential backoff, full jitter) before the segment is rescheduled; a segment is never dropped.',
    }),
    retryDelayMsMax: Type.Integer({
      minimum: 1,
      default: defaultRetryPolicy.retryDelayMsMax,
      description: 'Cap of one backoff delay between attempts of a store call.',
    }),
    segmentRetryDelayMsMax: Type.Integer({
      minimum: 1,
      default: segmentRetryDelayMsMaxDefault,
      description: 'Cap of the backoff before a segment whose delivery failed is tried again.',
    }),
    staleUploadAgeMs: Type.Integer({
      minimum: 0,
      default: staleUploadAgeMsDefault,
      description:
        'At start, abort multipart uploads under the prefix older than this (a crash mid-upload leaves billed parts). 0 turns it off.',
    }),
    scratchDir: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'Folder for compressed segments and Parquet files before upload, emptied at start. Default: `delivery` inside wal.dir (the WAL ignores it).',
      }),
    ),
  },
  {
    additionalProperties: false,
    default: {},
    description: 'Delivery to S3: concurrency, retries, retention of delivered segments.',
  },
);

export type DeliveryConfig = Static<typeof DeliverySchema>;

/**
 * The S3 target as the operator renders it (operator/src/adapters/node-config.ts
 * DeliveryFile `s3`, DESIGN §7), or a local folder when no bucket is set.
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

/** The artifacts an Endpoint asks for (the operator's `outputs`). */
export interface OutputsConfig {
  readonly segments: boolean;
  readonly rawParquet: boolean;
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
  /** Extra producers (Parquet raw/views/DLQ, a later issue). */
  readonly producers?: readonly ArtifactProducer[];
  readonly clock: Clock;
  readonly log: Logger;
  readonly registry?: Registry;
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
  if (o.outputs?.segments ?? true) producers.push(segmentArchiveProducer());
  if (o.outputs?.rawParquet === true && (o.producers ?? []).length === 0)
    o.log.warn(
      {},
      'outputs.rawParquet is set but this node has no Parquet producer yet; delivering segments only',
    );
  producers.push(...(o.producers ?? []));
  const opened = openObjectStore(storeCfg, { clock: o.clock, logger: o.log });
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
    clock: o.clock,
    log: o.log,
    ...(o.registry !== undefined ? { registry: o.registry } : {}),
    ...(d.segmentsInFlightMax !== undefined ? { segmentsInFlightMax: d.segmentsInFlightMax } : {}),
    ...(d.segmentsAheadMax !== undefined ? { segmentsAheadMax: d.segmentsAheadMax } : {}),
    ...(d.uploadsInFlightMax !== undefined ? { uploadsInFlightMax: d.uploadsInFlightMax } : {}),
    ...(d.segmentRetryDelayMsMax !== undefined ? { segmentRetryDelayMsMax: d.segmentRetryDelayMsMax } : {}),
    ...(d.staleUploadAgeMs !== undefined ? { staleUploadAgeMs: d.staleUploadAgeMs } : {}),
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
      opened.close();
    },
  };
}
