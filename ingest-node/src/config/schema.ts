// The one schema for the ingest node's configuration. Every block is its own
// TypeBox object so the operator can build its CRD and the Helm values schema
// from the same definitions, and later issues (s3, views, mqtt) add a block
// without touching the others. Units live at the end of names (…Bytes, …Ms)
// because a config file has no type annotations to tell a reader.
//
// docs/configuration.md is generated from this file (`node ingest-node/src/config/docs.ts --write`);
// a test fails when the two drift, so descriptions here are user documentation.

import { Type } from '@sinclair/typebox';
import type { Static, TObject, TSchema } from '@sinclair/typebox';
import { CredentialsSchema, DeliverySchema, OutputsSchema, S3Schema } from '../delivery/settings.ts';
import { IcebergSchema } from '../iceberg/settings.ts';
import { ViewsSchema } from '../views/settings.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
/**
 * wal.segmentAgeMsMax's largest value. A segment sealed by age holds its
 * records back from S3 until then, and spans one UTC date per day it lives:
 * a week is already more than any trickle endpoint needs.
 */
export const SEGMENT_AGE_MS_MAX_LIMIT = 7 * 24 * 3600_000;

/** Names that end up in S3 keys and metric labels: keep them boring. */
const namePattern = '^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$';

const bytes = (description: string, defaultBytes: number, minimum = 0, maximum?: number) =>
  Type.Integer({
    minimum,
    ...(maximum === undefined ? {} : { maximum }),
    default: defaultBytes,
    description,
  });
const millis = (description: string, defaultMs: number, minimum = 0, maximum?: number) =>
  Type.Integer({ minimum, ...(maximum === undefined ? {} : { maximum }), default: defaultMs, description });

/** Options every block carries: closed (unknown keys are errors) and defaulted as a whole. */
const block = (description: string) => ({ additionalProperties: false, default: {}, description }) as const;

export const ListenTlsSchema = Type.Object(
  {
    certFile: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'PEM certificate chain, leaf first. Set with keyFile to serve HTTPS only (TLS 1.2 or 1.3, AEAD ciphers with forward secrecy). Re-read when it changes (a renewed cert-manager Secret): new connections get the new certificate, open ones carry on.',
      }),
    ),
    keyFile: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'PEM private key of certFile; a key that does not match the certificate stops the start.',
      }),
    ),
    clientCaFile: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'PEM CA bundle that client certificates must chain to (mutual TLS); needed by clientAuth request and require. Re-read like certFile.',
      }),
    ),
    clientAuth: Type.Union([Type.Literal('none'), Type.Literal('request'), Type.Literal('require')], {
      default: 'none',
      description:
        'none: no client certificates. request: ask for one and refuse one that does not chain to clientCaFile, but let clients without one in (API keys still apply). require: refuse the handshake without a valid client certificate.',
    }),
    reloadIntervalMs: millis(
      'Fallback poll of the three files for changes, for volumes where file watching misses events.',
      5_000,
      100,
    ),
  },
  block('HTTPS on the node itself (off unless certFile and keyFile are set).'),
);

export const ListenAdminSchema = Type.Object(
  {
    host: Type.String({
      default: '127.0.0.1',
      minLength: 1,
      description:
        'Address of the admin listener. Loopback by default, so only the machine itself can scrape or read the status; the operator sets 0.0.0.0 and a NetworkPolicy decides who reaches it.',
    }),
    port: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 65535,
        description:
          'TCP port of the admin listener (0 picks a free one). Unset: listen.port + 1 (8081 by default), or a free port when listen.port is 0.',
      }),
    ),
  },
  block(
    'The admin listener: GET /metrics, GET /v1/status and POST/DELETE /v1/drain (and /healthz, /readyz), never on listen.port. HTTPS with the same certificate when listen.tls is set (no client certificate asked); keep it on loopback or behind a NetworkPolicy. /v1/status needs a key with the status scope and /v1/drain one with the drain scope when keys are configured.',
  ),
);

/** listen.admin.port, or its default: listen.port + 1, or a free port when the main one is free too. */
export function adminPortOf(
  listen: { port: number; admin: { port?: number | undefined } },
  port = listen.port,
): number {
  return listen.admin.port ?? (port === 0 ? 0 : port + 1);
}

export const ListenSchema = Type.Object(
  {
    host: Type.String({
      default: '127.0.0.1',
      minLength: 1,
      description:
        'Address to bind. Loopback by default; a non-loopback address requires API keys unless auth.required is false.',
    }),
    port: Type.Integer({
      minimum: 0,
      maximum: 65535,
      default: 8080,
      description: 'TCP port (0 picks a free one).',
    }),
    tls: ListenTlsSchema,
    admin: ListenAdminSchema,
  },
  block('Where the HTTP API listens, and whether it speaks HTTPS.'),
);

export const WalSchema = Type.Object(
  {
    dir: Type.String({
      default: './data',
      minLength: 1,
      description: 'Directory of the write-ahead log on the node volume (local NVMe in Kubernetes).',
    }),
    segmentBytesMax: bytes('A segment seals once it holds this many bytes.', 64 * MiB, 4 * KiB),
    segmentAgeMsMax: millis(
      "A segment seals once it is this old, so quiet endpoints still deliver. At most 7 days: a segment's records are not in S3 before it seals, and its raw Parquet and DLQ files are one per UTC ingest date it spans.",
      60_000,
      100,
      SEGMENT_AGE_MS_MAX_LIMIT,
    ),
    pipelineDepth: Type.Integer({
      minimum: 1,
      maximum: 16,
      default: 1,
      description:
        "Group-commit pipeline depth: write groups written but not yet acknowledged. 1 writes, syncs and acknowledges one group at a time (measured best on local disks: larger groups, fewer fdatasyncs); 2 writes the next group while the previous one's fdatasync runs, for disks whose writes are slow next to their syncs. Recovery allows torn groups at least 2 deep whatever this is. A record is still acknowledged only after an fdatasync that began after it (and every earlier record) was written.",
    }),
    recycleSegmentsMax: Type.Integer({
      minimum: 0,
      maximum: 64,
      default: 2,
      description:
        "Delivered segment files kept (renamed to `<id>.free`) for new segments to be written over instead of allocating fresh blocks: overwriting blocks that were written and synced before makes the write + fdatasync cycle cheaper (a raw write + fdatasync loop on ext4 over virtio, 2 MiB groups: ~1.4 ms instead of ~3.4 ms; 32 KiB fdatasync 0.17 instead of 0.28 ms; in the node with delivery's CPU taken out, 64 KiB requests +10–15 % MB/s, 1 KiB +6 % req/s; with delivery filling a 2-core machine, no difference). Only a node that delivers frees segments. Each free file holds up to segmentBytesMax of the volume: it counts in the volume's free space (backpressure.diskFreeBytesLow sees it) but not in the WAL's retained bytes (the walBytesHigh/Low backlog, which delivery cannot shrink by them); under backpressure.diskFreeBytesLow or on ENOSPC the WAL releases them (and keeps none while the volume is low). 0 removes delivered files at once.",
    }),
  },
  block('The write-ahead log: every accepted record is here before the node answers 202.'),
);

export const LimitsSchema = Type.Object(
  {
    bodyBytesMax: bytes(
      'Largest request body as sent (before Content-Encoding is undone); larger answers 413 LF_PAYLOAD_TOO_LARGE.',
      8 * MiB,
      1,
    ),
    decodedBytesMax: bytes(
      'Largest request body after gzip/zstd decoding; decoding stops at this size (413 LF_DECODED_TOO_LARGE), so a compression bomb cannot allocate more.',
      32 * MiB,
      1,
    ),
    recordBytesMax: bytes(
      'Largest single record (NDJSON line, JSON array element or RecordIO payload); larger answers 413 LF_RECORD_TOO_LARGE.',
      1 * MiB,
      1,
      256 * MiB, // the WAL frame format's own bound
    ),
    inflightBytesMax: bytes(
      'Decoded bytes held by all requests not yet answered, each record also charged a fixed overhead (128 bytes) for what it costs in memory; beyond it new bytes are refused with 503 LF_OVERLOADED. Bounds the memory of the ingest path. Must be at least decodedBytesMax + recordsPerRequestMax × 128, the cost of the largest legal request (checked at load). Also bounds an MQTT message: one larger than inflightBytesMax − 128 bytes is never taken (see docs/edge.md).',
      256 * MiB,
      1,
    ),
    recordsPerRequestMax: Type.Integer({
      minimum: 1,
      default: 100_000,
      description:
        'Most records in one request, counted as the body is decoded so a small compressed body of tiny records is refused early; more answers 413 LF_TOO_MANY_RECORDS and nothing is written.',
    }),
    framesPerBodyMax: Type.Integer({
      minimum: 1,
      default: 1024,
      description:
        'Most zstd frames in one body (each costs a decoder); more answers 413 LF_TOO_MANY_FRAMES. Skippable frames are always refused (400 LF_ZSTD_SKIPPABLE_FRAME).',
    }),
    processingTimeoutMs: millis(
      'Most time from the whole body having arrived to its records being handed to the WAL (decoding, splitting, validation). Past it the request answers 503 LF_PROCESSING_TIMEOUT and nothing is written.',
      10_000,
      1,
    ),
  },
  block('Request size limits. They bound memory: nothing is buffered beyond them.'),
);

export const BackpressureSchema = Type.Object(
  {
    walBytesHigh: bytes(
      'Stop accepting (503 LF_WAL_BACKLOG, /readyz false) when the WAL retains this many bytes not yet delivered.',
      8 * GiB,
    ),
    walBytesLow: bytes(
      'Accept again once the WAL retains no more than this (hysteresis; below walBytesHigh).',
      6 * GiB,
    ),
    diskFreeBytesLow: bytes(
      'Stop accepting (503 LF_DISK_LOW, /readyz false) when the WAL volume has less free space than this. While under it, the WAL gives back its free segment files (wal.recycleSegmentsMax) and Parquet children on that volume are not kept between jobs (their records files go with them).',
      512 * MiB,
    ),
    diskFreeBytesHigh: bytes(
      'Accept again once the WAL volume has at least this much free space (hysteresis; above diskFreeBytesLow).',
      1 * GiB,
    ),
    checkIntervalMs: millis('How often the volume free space is measured (statfs).', 1_000, 10),
  },
  block(
    'Watermarks that turn a filling disk or a delivery backlog into 503 + Retry-After instead of data loss.',
  ),
);

export const AuthSchema = Type.Object(
  {
    required: Type.Optional(
      Type.Boolean({
        description:
          'true: refuse to start without apiKeysFile. false: run without keys even on a non-loopback address. Unset (auto): keys are required when apiKeysFile is set or listen.host is not loopback.',
      }),
    ),
    apiKeysFile: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'A file of API keys (one a line, `#` comments, optional scopes after the key), or a directory of such files (a mounted Kubernetes Secret). Re-read when it changes.',
      }),
    ),
    reloadIntervalMs: millis(
      'Fallback poll of apiKeysFile for changes, for volumes where file watching misses events.',
      5_000,
      100,
    ),
  },
  block(
    'API keys. Sent as X-API-Key or Authorization: Bearer; compared in constant time; several valid at once.',
  ),
);

export const IdempotencySchema = Type.Object(
  {
    windowMs: millis(
      'How long the answer to a request with an Idempotency-Key is remembered (in memory: a restart forgets it).',
      3_600_000,
    ),
    entriesMax: Type.Integer({
      minimum: 0,
      default: 10_000,
      description:
        'Most remembered keys; the least recently used is forgotten first. 0 turns idempotency off.',
    }),
    keyLengthMax: Type.Integer({
      minimum: 1,
      maximum: 1024,
      default: 255,
      description: 'Longest accepted Idempotency-Key; longer answers 400 LF_IDEMPOTENCY_KEY_INVALID.',
    }),
  },
  block('Idempotency-Key handling: a repeat within the window returns the first answer and writes nothing.'),
);

export const EndpointSchema = Type.Object(
  {
    name: Type.String({
      default: 'default',
      pattern: namePattern,
      description: 'Endpoint name; part of every S3 key and WAL segment header.',
    }),
  },
  block('The endpoint this node serves.'),
);

export const InstanceSchema = Type.Object(
  {
    id: Type.Optional(
      Type.String({
        pattern: namePattern,
        description:
          'Instance id; part of every S3 key and WAL segment header. Unset: the host name, lower-cased (the pod name in a StatefulSet).',
      }),
    ),
  },
  block('This replica.'),
);

export const HttpSchema = Type.Object(
  {
    requestTimeoutMs: millis(
      'Most time to receive a whole request (headers and body); then the connection is answered 408 and closed.',
      30_000,
      1_000,
    ),
    headersTimeoutMs: millis('Most time to receive the request headers (slowloris guard).', 10_000, 1_000),
    keepAliveTimeoutMs: millis(
      'Idle keep-alive connections close after this; keep it above your load balancer idle timeout.',
      72_000,
      0,
    ),
  },
  block('HTTP server timeouts.'),
);

export const ShutdownSchema = Type.Object(
  {
    timeoutMs: millis(
      'On SIGTERM/SIGINT: most time to finish in-flight requests, seal and deliver the backlog, and close the WAL before exiting anyway (what is left resumes at the next start, or with `landfall drain`). terminationGracePeriodSeconds must be larger: timeoutMs/1000 plus a margin.',
      25_000,
      0,
    ),
  },
  block('Graceful shutdown.'),
);

export const LogSchema = Type.Object(
  {
    level: Type.Union(
      [Type.Literal('debug'), Type.Literal('info'), Type.Literal('warn'), Type.Literal('error')],
      {
        default: 'info',
        description: 'Least severe level written to stdout (JSON lines).',
      },
    ),
  },
  block('Logging.'),
);

export const ValidationSchema = Type.Union([Type.Literal('none'), Type.Literal('json')], {
  default: 'none',
  description:
    'none: accept any record bytes (invalid JSON lands in view DLQs). json: reject a request with any record that is not JSON (400 LF_INVALID_JSON with its line number; nothing written).',
});

const MqttTopicSchema = Type.Object(
  {
    filter: Type.String({
      minLength: 1,
      maxLength: 65535,
      description: 'Topic filter, wildcards allowed (`sensors/+/temp`, `site/#`, `$share/landfall/site/#`).',
    }),
    qos: Type.Union([Type.Literal(0), Type.Literal(1)], {
      default: 1,
      description:
        'Subscription QoS. 1: a message is acknowledged (PUBACK) only once it is durable in the WAL. 0: best effort.',
    }),
  },
  { additionalProperties: false },
);

const MqttBrokerSchema = Type.Object(
  {
    url: Type.String({
      pattern: '^(mqtt|mqtts|ws|wss)://[^\\s]+$',
      description:
        'mqtt://host:1883, mqtts://host:8883, ws://host:8080/mqtt or wss://…; no credentials in the URL (use username and passwordFile).',
    }),
    name: Type.Optional(
      Type.String({
        pattern: namePattern,
        description: 'Label for metrics and logs. Unset: host-port of the URL.',
      }),
    ),
    username: Type.Optional(Type.String({ minLength: 1, description: 'MQTT username.' })),
    passwordFile: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'File holding the password (one trailing newline is ignored); re-read before every connect, so rotation needs no restart.',
      }),
    ),
    caFile: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'PEM CA bundle that signed the broker certificate (mqtts/wss).',
      }),
    ),
    certFile: Type.Optional(
      Type.String({ minLength: 1, description: 'PEM client certificate (mutual TLS).' }),
    ),
    keyFile: Type.Optional(Type.String({ minLength: 1, description: 'PEM private key of certFile.' })),
    clientId: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 65535,
        description:
          'Unset: `landfall-{endpoint}-{instance}`, stable across restarts so the broker keeps the session.',
      }),
    ),
    topics: Type.Optional(
      Type.Array(MqttTopicSchema, { description: 'Overrides mqtt.topics for this broker.' }),
    ),
  },
  { additionalProperties: false },
);

export const MqttSchema = Type.Object(
  {
    brokers: Type.Array(MqttBrokerSchema, {
      default: [],
      maxItems: 16,
      description:
        'Brokers to subscribe to, each with url and optionally name, username, passwordFile, caFile, certFile, keyFile, clientId, topics. Empty: no MQTT source. Set it in the config file (a list has no env or flag form).',
    }),
    topics: Type.Array(MqttTopicSchema, {
      default: [],
      description:
        'Topic filters `{ filter, qos }` subscribed on every broker that has no topics of its own.',
    }),
    protocolVersion: Type.Union([Type.Literal(5), Type.Literal(4)], {
      default: 5,
      description:
        '5 (MQTT 5: session expiry, receive maximum, maximum packet size) or 4 (MQTT 3.1.1, for old brokers).',
    }),
    keepaliveSec: Type.Integer({
      minimum: 1,
      maximum: 65535,
      default: 30,
      description: 'MQTT keepalive; a connection silent for 1.5× this is considered dead.',
    }),
    connectTimeoutMs: millis('Most time from opening the connection to the CONNACK.', 10_000, 100),
    reconnectMinMs: millis(
      'First reconnect delay; doubles on each failed attempt (with jitter) up to reconnectMaxMs.',
      500,
      10,
    ),
    reconnectMaxMs: millis('Longest reconnect delay.', 30_000, 10),
    sessionExpirySec: Type.Integer({
      // Not 0: the broker would discard the session on every disconnect, with the messages it
      // had sent but the node had not yet acknowledged (not durable yet), and with everything
      // published while the node reconnects or restarts. 60 s covers a reconnect at the longest
      // default backoff (reconnectMaxMs 30 s) and a quick restart; size it for real outages.
      minimum: 60,
      maximum: 4294967295,
      default: 604_800,
      description:
        'MQTT 5 session expiry: how long the broker keeps the session (subscriptions, queued messages, and those sent but not yet acknowledged) while the node is away. At least 60: with 0 the broker would discard the session, and the messages the node had not yet made durable, on every disconnect. 4294967295: never expires. MQTT 3.1.1 sessions last until the broker expires them (mosquitto: persistent_client_expiration).',
    }),
    inflightMessagesMax: Type.Integer({
      minimum: 1,
      maximum: 65535,
      default: 1000,
      description:
        'Messages received but not yet durable, per broker. Sent as MQTT 5 receive maximum so the broker stops sending unacknowledged QoS 1 messages beyond it; past it the node stops reading the connection.',
    }),
  },
  block(
    'MQTT source: the node subscribes to brokers with a persistent session and acknowledges each QoS 1 message only after it is durable in the WAL (see docs/edge.md).',
  ),
);

/**
 * Blocks by key. Later issues add entries here (s3, views, mqtt); the operator
 * imports this map to generate its CRD and Helm values schema.
 */
export const configBlocks = {
  listen: ListenSchema,
  wal: WalSchema,
  limits: LimitsSchema,
  backpressure: BackpressureSchema,
  auth: AuthSchema,
  idempotency: IdempotencySchema,
  endpoint: EndpointSchema,
  instance: InstanceSchema,
  http: HttpSchema,
  shutdown: ShutdownSchema,
  log: LogSchema,
  mqtt: MqttSchema,
  s3: S3Schema,
  credentials: CredentialsSchema,
  outputs: OutputsSchema,
  delivery: DeliverySchema,
  views: ViewsSchema,
  iceberg: IcebergSchema,
} as const;

export const NodeConfigSchema = Type.Object(
  { ...configBlocks, validation: ValidationSchema },
  {
    additionalProperties: false,
    $id: 'LandfallNodeConfig',
    description: 'Landfall ingest node configuration.',
  },
);

type RawNodeConfig = Static<typeof NodeConfigSchema>;
/** A validated config: every default applied and instance.id resolved. */
export type NodeConfig = Omit<RawNodeConfig, 'instance'> & { readonly instance: { readonly id: string } };

/** A leaf of the schema with the names it has in each source. */
export interface ConfigLeaf {
  /** Path segments, e.g. ['wal', 'segmentBytesMax']. */
  readonly path: readonly string[];
  readonly dotted: string;
  readonly env: string;
  readonly flag: string;
  readonly schema: TSchema;
  readonly optional: boolean;
}

function envName(path: readonly string[]): string {
  return 'LANDFALL_' + path.map((p) => p.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');
}

function isObjectSchema(schema: TSchema): schema is TObject {
  return schema.type === 'object' && typeof schema.properties === 'object';
}

/** Every settable leaf, depth first in declaration order (env vars, flags and docs come from this). */
export function configLeaves(schema: TObject = NodeConfigSchema): ConfigLeaf[] {
  const out: ConfigLeaf[] = [];
  const walk = (obj: TObject, prefix: readonly string[]): void => {
    const required = new Set(obj.required ?? []);
    for (const [key, child] of Object.entries(obj.properties)) {
      const path = [...prefix, key];
      if (isObjectSchema(child)) {
        walk(child, path);
        continue;
      }
      const dotted = path.join('.');
      out.push({
        path,
        dotted,
        env: envName(path),
        flag: `--${dotted}`,
        schema: child,
        optional: !required.has(key),
      });
    }
  };
  walk(schema, []);
  return out;
}
