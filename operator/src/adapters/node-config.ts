// Renders an Endpoint as the ingest node's configuration: ONE config file,
// in the node's own schema (ingest-node/src/config/schema.ts; closed: unknown
// keys are errors), checked with the node's own loader before it is applied.
// The pods run `landfall serve --config /etc/landfall/config/config.json`.
//
//   config.json    every block the Endpoint sets: listen, endpoint, wal
//                  (segment policy), limits, backpressure (WAL watermarks
//                  from storage.size), auth (the mounted API-key folder),
//                  validation, s3, credentials, outputs, mqtt, views.
//   views/*.yaml   the Endpoint's compiled Views, one file each (normalised by
//                  the node's view code), in their own ConfigMap mounted as the
//                  node's views.dir: the node reloads the folder on change, so
//                  a View edit reaches running pods without a restart.
//
// What is NOT in the file, and why:
//   - secrets: static S3 keys come as AWS_* env from secretKeyRef (the node's
//     default credential chain reads them); MQTT passwords and TLS files and
//     the API keys are mounted Secret files the config points at;
//   - per-pod values (instance.id; the AssumeRole session name): env from the
//     downward API, set by model/resources.ts.
import type { Static } from '@sinclair/typebox';
import yaml from 'js-yaml';
import type { EndpointSpec } from '../api/endpoint.ts';
import type { CompiledView } from './view-compiler.ts';
import type { ViewSpecInput } from '../../../ingest-node/src/views/spec.ts';
import { loadConfig } from '../../../ingest-node/src/config/load.ts';
import type { NodeConfigSchema } from '../../../ingest-node/src/config/schema.ts';
import { LimitsSchema } from '../../../ingest-node/src/config/schema.ts';
import { resolveBrokers } from '../../../ingest-node/src/mqtt/options.ts';
import {
  API_KEYS_MOUNT,
  CONFIG_MOUNT,
  DATA_MOUNT,
  ADMIN_PORT,
  HTTP_PORT,
  ICEBERG_MOUNT,
  MQTT_MOUNT,
  TLS_MOUNT,
  VIEWS_MOUNT,
} from '../model/names.ts';

export const CONFIG_FILE = 'config.json';
export const CONFIG_PATH = `${CONFIG_MOUNT}/${CONFIG_FILE}`;

type DeepPartial<T> = T extends readonly (infer U)[]
  ? DeepPartial<U>[]
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

/** A node config file: any subset of the node's schema (the loader fills in its defaults). */
export type NodeConfigFile = DeepPartial<Static<typeof NodeConfigSchema>>;

/** The node's default decoded-body limit (32 MiB): the floor of limits.decodedBytesMax. */
const DECODED_BYTES_MAX_DEFAULT = LimitsSchema.properties.decodedBytesMax.default as number;

const MiB = 1024 * 1024;
const SUFFIX: Record<string, number> = {
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
};

/** A Kubernetes quantity (the CRD's QUANTITY_PATTERN) in base units; undefined if it does not parse. */
export function quantityValue(q: string | number): number | undefined {
  if (typeof q === 'number') return q;
  const m = /^\+?((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)([KMGTPE]i|[numkMGTPE])?$/.exec(q.trim());
  if (!m) return undefined;
  return Number(m[1]) * (m[2] ? (SUFFIX[m[2]] ?? NaN) : 1);
}

/**
 * DuckDB's memory for Parquet work, from the container memory limit: a
 * quarter of it (the rest is the node, in-flight request bytes up to
 * limits.inflightBytesMax and upload buffers). No limit: the node's default.
 */
export function viewsMemoryLimitBytes(spec: EndpointSpec): number | undefined {
  const raw = spec.resources.limits?.memory;
  const limit = raw === undefined ? undefined : quantityValue(raw);
  if (limit === undefined || !Number.isFinite(limit)) return undefined;
  return Math.max(64 * MiB, Math.floor(limit / 4 / MiB) * MiB);
}

/** backpressure.walBytesHigh / walBytesLow as shares of the WAL volume (storage.size). */
export const WAL_BYTES_HIGH_SHARE = 0.7;
export const WAL_BYTES_LOW_SHARE = 0.55;
/** backpressure.diskFreeBytesLow / High as shares of the volume, capped at the node's defaults. */
export const DISK_FREE_LOW_SHARE = 0.05;
export const DISK_FREE_HIGH_SHARE = 0.1;
const DISK_FREE_BYTES_LOW_NODE = 512 * MiB;
const DISK_FREE_BYTES_HIGH_NODE = 1024 * MiB;

/**
 * The WAL watermarks from the volume size, so the WAL backlog (503
 * LF_WAL_BACKLOG) refuses writes well before the volume is full: the rest
 * holds DuckDB's scratch (on the same volume), the file system's overhead and
 * the node's free-space watermark (backpressure.diskFreeBytesLow), which
 * stays the last line. The node's fixed defaults (8 GiB / 6 GiB) would let a
 * volume under ~9 GiB fill first. Whole MiB; undefined when the size does not
 * parse (the node's defaults).
 */
export function walWatermarks(
  spec: EndpointSpec,
):
  | { walBytesHigh: number; walBytesLow: number; diskFreeBytesLow: number; diskFreeBytesHigh: number }
  | undefined {
  const size = quantityValue(spec.storage.size);
  if (size === undefined || !Number.isFinite(size) || size <= 0) return undefined;
  const mib = (share: number): number => Math.floor((size * share) / MiB) * MiB;
  return {
    walBytesHigh: mib(WAL_BYTES_HIGH_SHARE),
    walBytesLow: mib(WAL_BYTES_LOW_SHARE),
    // The node's fixed free-space watermarks (512 MiB / 1 GiB) suit the
    // default 10Gi volume; on a volume under ~1 GiB, 1 GiB free can never
    // return and a disk-low node would refuse writes forever. Cap them at
    // 5 % / 10 % of the volume.
    diskFreeBytesLow: Math.min(DISK_FREE_BYTES_LOW_NODE, mib(DISK_FREE_LOW_SHARE)),
    diskFreeBytesHigh: Math.min(DISK_FREE_BYTES_HIGH_NODE, mib(DISK_FREE_HIGH_SHARE)),
  };
}

/** Files of one MQTT broker's Secrets, relative to MQTT_MOUNT. */
export function mqttBrokerFiles(index: number): {
  password: string;
  ca: string;
  cert: string;
  key: string;
} {
  const dir = `broker-${index}`;
  return {
    password: `${dir}/password`,
    ca: `${dir}/ca.crt`,
    cert: `${dir}/tls.crt`,
    key: `${dir}/tls.key`,
  };
}

function mqttBlock(mqtt: NonNullable<EndpointSpec['mqtt']>): NodeConfigFile['mqtt'] {
  const topics = (list: NonNullable<typeof mqtt.topics>) =>
    list.map((t) => ({ filter: t.filter, qos: t.qos as 0 | 1 }));
  return {
    brokers: mqtt.brokers.map((b, i) => {
      const files = mqttBrokerFiles(i);
      return {
        url: b.url,
        ...(b.name !== undefined ? { name: b.name } : {}),
        ...(b.username !== undefined ? { username: b.username } : {}),
        ...(b.passwordSecretRef ? { passwordFile: `${MQTT_MOUNT}/${files.password}` } : {}),
        ...(b.caSecretRef ? { caFile: `${MQTT_MOUNT}/${files.ca}` } : {}),
        ...(b.clientCertSecretRef
          ? { certFile: `${MQTT_MOUNT}/${files.cert}`, keyFile: `${MQTT_MOUNT}/${files.key}` }
          : {}),
        // clientId stays unset: the node's default, landfall-<endpoint>-<instance>,
        // is stable per pod, so each replica keeps its own broker session.
        ...(b.topics !== undefined ? { topics: topics(b.topics) } : {}),
      };
    }),
    topics: topics(mqtt.topics ?? []),
    protocolVersion: mqtt.protocolVersion as 4 | 5,
  };
}

/** Files of the Iceberg catalog's Secrets, relative to ICEBERG_MOUNT. */
export const ICEBERG_FILES = {
  token: 'token',
  clientId: 'client-id',
  clientSecret: 'client-secret',
} as const;

function icebergBlock(ice: NonNullable<EndpointSpec['iceberg']>): NodeConfigFile['iceberg'] {
  const a = ice.auth;
  const file = (name: string): string => `${ICEBERG_MOUNT}/${name}`;
  return {
    catalogUri: ice.catalogUri,
    ...(ice.warehouse !== undefined ? { warehouse: ice.warehouse } : {}),
    // Paths only: the Secrets are projected into ICEBERG_MOUNT (model/resources.ts), never copied here.
    auth: {
      type: a.type,
      ...(a.type === 'bearer' ? { tokenFile: file(ICEBERG_FILES.token) } : {}),
      ...(a.type === 'oauth2'
        ? {
            clientIdFile: file(ICEBERG_FILES.clientId),
            clientSecretFile: file(ICEBERG_FILES.clientSecret),
            ...(a.tokenUri !== undefined ? { tokenUri: a.tokenUri } : {}),
            ...(a.scope !== undefined ? { scope: a.scope } : {}),
          }
        : {}),
      // SigV4 signs with the nodes' own AWS identity (the credentials block): no Secret.
      ...(a.type === 'sigv4'
        ? {
            ...(a.signingName !== undefined ? { signingName: a.signingName } : {}),
            ...(a.signingRegion !== undefined ? { signingRegion: a.signingRegion } : {}),
          }
        : {}),
    },
  };
}

function credentialsBlock(spec: EndpointSpec): NodeConfigFile['credentials'] {
  const c = spec.credentials;
  // IRSA: the EKS webhook projects the token and sets AWS_WEB_IDENTITY_TOKEN_FILE
  // for pods of the annotated ServiceAccount; the node exchanges it for this role.
  if (c?.irsaRoleArn) return { mode: 'webIdentity', roleArn: c.irsaRoleArn };
  if (c?.assumeRole?.roleArn) {
    const a = c.assumeRole;
    return {
      mode: 'assumeRole',
      roleArn: a.roleArn ?? '',
      ...(a.externalId !== undefined ? { externalId: a.externalId } : {}),
      // Unset: the pod name, from env (see model/resources.ts), so CloudTrail names the replica.
      ...(a.sessionName !== undefined ? { sessionName: a.sessionName } : {}),
    };
  }
  // Nothing, or static keys from a Secret: the default chain, which reads
  // AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment first.
  return { mode: 'default' };
}

/** The node config file for an Endpoint. */
export function renderNodeConfig(endpointName: string, spec: EndpointSpec): NodeConfigFile {
  const s3: NodeConfigFile['s3'] = {
    bucket: spec.s3.bucket,
    region: spec.s3.region,
    prefix: spec.s3.prefix,
    ...(spec.s3.endpointUrl !== undefined ? { endpointUrl: spec.s3.endpointUrl } : {}),
    forcePathStyle: spec.s3.forcePathStyle,
  };
  const watermarks = walWatermarks(spec);
  const config: NodeConfigFile = {
    // Pods are reached through Services, so bind every interface.
    listen: {
      host: '0.0.0.0',
      port: HTTP_PORT,
      // On the pod network too: the operator and Prometheus reach it on the pod IP.
      admin: { host: '0.0.0.0', port: ADMIN_PORT },
      // The Secret is mounted as a folder: the node re-reads it when the kubelet swaps ..data.
      ...(spec.expose.tls
        ? { tls: { certFile: `${TLS_MOUNT}/tls.crt`, keyFile: `${TLS_MOUNT}/tls.key` } }
        : {}),
    },
    endpoint: { name: endpointName },
    // instance.id comes from LANDFALL_INSTANCE_ID = the pod name (downward API).
    wal: {
      dir: `${DATA_MOUNT}/wal`,
      segmentBytesMax: spec.segmentPolicy.segmentBytesMax,
      segmentAgeMsMax: spec.segmentPolicy.segmentAgeMsMax,
    },
    limits: {
      bodyBytesMax: spec.limits.bodyBytesMax,
      // The decoded limit is checked after the body limit: below it, a body
      // the Endpoint allows would be refused once decoded (even uncompressed).
      decodedBytesMax: Math.max(DECODED_BYTES_MAX_DEFAULT, spec.limits.bodyBytesMax),
    },
    // A share of storage.size: the WAL watermark fires before the disk fills.
    ...(watermarks !== undefined ? { backpressure: watermarks } : {}),
    // The mounted Secrets are a directory of key files; the node re-reads it
    // on change, so rotating keys needs no restart (and is not in the hash).
    auth: { required: true, apiKeysFile: API_KEYS_MOUNT },
    validation: spec.validation,
    s3,
    credentials: credentialsBlock(spec),
    outputs: { segments: spec.outputs.segments, rawParquet: spec.outputs.rawParquet },
    // The views ConfigMap, mounted whole: the node reloads the folder when the
    // kubelet swaps its `..data` link (a View edit needs no restart).
    views: { dir: VIEWS_MOUNT },
  };
  const duckdbBytes = viewsMemoryLimitBytes(spec);
  if (duckdbBytes !== undefined) config.views = { dir: VIEWS_MOUNT, memoryLimitBytes: duckdbBytes };
  if (spec.mqtt) config.mqtt = mqttBlock(spec.mqtt);
  if (spec.iceberg) config.iceberg = icebergBlock(spec.iceberg);
  return config;
}

/** The main ConfigMap's data: the one config file, stable formatting (the config hash is over it). */
export function renderConfigFiles(config: NodeConfigFile): Record<string, string> {
  return { [CONFIG_FILE]: JSON.stringify(config, null, 2) + '\n' };
}

/** File name of a View in the views folder. */
export function viewFileName(viewName: string): string {
  return `${viewName}.yaml`;
}

/** The views ConfigMap's data: one YAML file per compiled View (the node's view spec). */
export function renderViewFiles(views: readonly CompiledView[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of [...views].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const spec: ViewSpecInput = v.spec;
    out[viewFileName(v.name)] = yaml.dump(spec, { lineWidth: 120, noRefs: true });
  }
  return out;
}

/**
 * Loads the config with the node's own loader (defaults, closed schema, every
 * problem at once) and the node's MQTT checks. Throws the node's error: the
 * operator would rather fail a reconcile than roll pods onto a config they refuse.
 */
export function checkWithNodeLoader(config: NodeConfigFile, podName = 'landfall-check-0'): void {
  const loaded = loadConfig({ values: config, hostname: podName });
  if (loaded.mqtt.brokers.length > 0) resolveBrokers(loaded.mqtt, loaded.endpoint.name, loaded.instance.id);
}
