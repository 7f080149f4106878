// The node configuration blocks of delivery (config/schema.ts takes them into
// configBlocks): where to deliver (`s3`), as whom (`credentials`), what
// (`outputs`) and how (`delivery`). TypeBox only, no runtime imports, so the
// config loader (and the operator, which checks configs with it) stays light.
// The operator writes these blocks into the one node config file it renders
// (operator/src/adapters/node-config.ts renderNodeConfig).
import { Type, type Static } from '@sinclair/typebox';

const MiB = 1024 * 1024;

export const segmentsInFlightMaxDefault = 2;
export const segmentsAheadMaxDefault = 8;
export const uploadsInFlightMaxDefault = 4;
export const segmentRetryDelayMsMaxDefault = 60_000;
export const staleUploadAgeMsDefault = 24 * 3600_000;
export const staleUploadCheckIntervalMsDefault = 3600_000;
/** retry.ts defaultRetryPolicy, repeated here so this file imports nothing at runtime. */
const retryAttemptsMaxDefault = 8;
const retryDelayMsMaxDefault = 20_000;

const block = (description: string) => ({ additionalProperties: false, default: {}, description }) as const;

export const S3Schema = Type.Object(
  {
    bucket: Type.Optional(
      Type.String({
        minLength: 3,
        maxLength: 63,
        description:
          'S3 bucket to deliver to. Unset: deliver to the local folder s3.localDir, or, with neither set, do not deliver (segments stay in the WAL).',
      }),
    ),
    region: Type.String({ default: 'us-east-1', minLength: 1, description: 'The bucket’s region.' }),
    prefix: Type.String({
      default: '',
      description:
        'Key prefix in the bucket (`tenants/acme`); empty: the bucket root. See docs/s3-layout.md.',
    }),
    endpointUrl: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'S3-compatible endpoint (MinIO, R2, …), e.g. `http://minio:9000`. Unset: AWS S3.',
      }),
    ),
    forcePathStyle: Type.Optional(
      Type.Boolean({
        description: 'Path-style addressing (`endpoint/bucket/key`). Unset: on when endpointUrl is set.',
      }),
    ),
    localDir: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'Without a bucket: a folder that stands in for it (same layout; the no-cloud set-up). Ignored when bucket is set.',
      }),
    ),
  },
  block('Where sealed segments are delivered: an S3 bucket (or S3-compatible store), or a local folder.'),
);

export const CredentialsSchema = Type.Object(
  {
    mode: Type.Union([Type.Literal('default'), Type.Literal('webIdentity'), Type.Literal('assumeRole')], {
      default: 'default',
      description:
        'default: the AWS default chain (env keys, profile, IRSA, Pod Identity, instance role). webIdentity: IRSA with roleArn. assumeRole: AssumeRole of roleArn (with externalId) signed by the default chain. Credentials are held in memory only and refreshed before they expire.',
    }),
    roleArn: Type.Optional(
      Type.String({ minLength: 20, description: 'The role for webIdentity and assumeRole.' }),
    ),
    externalId: Type.Optional(
      Type.String({
        minLength: 2,
        maxLength: 1224,
        description: 'assumeRole: the ExternalId the role’s trust policy requires.',
      }),
    ),
    sessionName: Type.Optional(
      Type.String({
        minLength: 2,
        maxLength: 64,
        description: 'Role session name (CloudTrail); default `landfall`.',
      }),
    ),
    tokenFile: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'webIdentity: the token file; default AWS_WEB_IDENTITY_TOKEN_FILE.',
      }),
    ),
    stsRegion: Type.Optional(Type.String({ minLength: 1, description: 'Region of the STS endpoint.' })),
    stsEndpoint: Type.Optional(Type.String({ minLength: 1, description: 'A custom STS endpoint.' })),
  },
  block('AWS credentials for delivery.'),
);

export const OutputsSchema = Type.Object(
  {
    segments: Type.Boolean({
      default: true,
      description:
        'Deliver each sealed segment as `segments/…/{segmentId}.wal.zst` (zstd of the exact WAL bytes).',
    }),
    rawParquet: Type.Boolean({
      default: false,
      description:
        'Also deliver raw Parquet (`raw/{endpoint}/dt=…/…parquet`): every record, no schema, payload bytes unchanged (docs/views.md).',
    }),
  },
  block('What each sealed segment becomes in the bucket.'),
);

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
      default: retryAttemptsMaxDefault,
      description:
        'Attempts of one store call (exponential backoff, full jitter) before the segment is rescheduled; a segment is never dropped.',
    }),
    retryDelayMsMax: Type.Integer({
      minimum: 1,
      default: retryDelayMsMaxDefault,
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
        'Abort multipart uploads under the prefix older than this (a crash mid-upload leaves billed parts), at start and every staleUploadCheckIntervalMs. 0 turns it off.',
    }),
    staleUploadCheckIntervalMs: Type.Integer({
      minimum: 0,
      maximum: 7 * 24 * 3600_000,
      default: staleUploadCheckIntervalMsDefault,
      description:
        'How often the stale multipart upload sweep runs after the one at start (one sweep at a time). 0: only at start.',
    }),
    scratchDir: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'Folder for compressed segments and Parquet files before upload, emptied at start. Default: `delivery` inside wal.dir (the WAL ignores it).',
      }),
    ),
  },
  block('Delivery to S3: concurrency, retries, retention of delivered segments.'),
);

export type S3Config = Static<typeof S3Schema>;
export type CredentialsBlock = Static<typeof CredentialsSchema>;
export type OutputsConfig = Static<typeof OutputsSchema>;
export type DeliveryConfig = Static<typeof DeliverySchema>;
