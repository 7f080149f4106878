// Renders an Endpoint as the ingest node's configuration: the ConfigMap the
// pods mount holds three files.
//
//   config.json    the node config proper, in the node's own schema
//                  (ingest-node/src/config/schema.ts, closed: unknown keys are
//                  errors). Checked with the node's loader before it is applied.
//   views.json     the Endpoint's compiled views, normalised by the node's
//                  view code (viewToPlain): an array of view specs.
//   delivery.json  S3 target, credentials mode and outputs (DESIGN §5, §7).
//
// ADAPTER (interim) for the last two: the node schema has no `s3`, `views`
// or `outputs` block yet (the S3 delivery and views-in-the-node issues add
// them). They live in their own files so config.json stays loadable by
// today's node; when the blocks land, this adapter moves them into
// config.json and the unit test (which loads config.json with the node's
// loader) keeps the two in step.
import type { EndpointSpec } from '../api/endpoint.ts';
import type { CompiledView } from './view-compiler.ts';
import type { CredentialsConfig } from '../../../ingest-node/src/credentials.ts';
import type { ViewSpecInput } from '../../../ingest-node/src/views/spec.ts';
import { loadConfig } from '../../../ingest-node/src/config/load.ts';
import { API_KEYS_MOUNT, CONFIG_MOUNT, DATA_MOUNT, HTTP_PORT } from '../model/names.ts';

export const CONFIG_FILE = 'config.json';
export const VIEWS_FILE = 'views.json';
export const DELIVERY_FILE = 'delivery.json';

/** The node config blocks the operator sets; everything else keeps the node's defaults. */
export interface NodeConfigFile {
  listen: { host: string; port: number };
  endpoint: { name: string };
  wal: { dir: string; segmentBytesMax: number; segmentAgeMsMax: number };
  limits: { bodyBytesMax: number };
  auth: { required: boolean; apiKeysFile: string };
  validation: 'none' | 'json';
}

export interface DeliveryFile {
  s3: { bucket: string; region: string; prefix: string; endpointUrl?: string; forcePathStyle: boolean };
  /** The node's own credentials config (ingest-node/src/credentials.ts), in the modes an Endpoint can ask for. */
  credentials: Extract<CredentialsConfig, { mode: 'default' | 'webIdentity' | 'assumeRole' }>;
  outputs: { segments: boolean; rawParquet: boolean };
}

export interface RenderedNodeConfig {
  config: NodeConfigFile;
  delivery: DeliveryFile;
  views: ViewSpecInput[];
}

export function renderNodeConfig(
  endpointName: string,
  spec: EndpointSpec,
  views: readonly CompiledView[],
): RenderedNodeConfig {
  const s3: DeliveryFile['s3'] = {
    bucket: spec.s3.bucket,
    region: spec.s3.region,
    prefix: spec.s3.prefix,
    forcePathStyle: spec.s3.forcePathStyle,
  };
  if (spec.s3.endpointUrl !== undefined) s3.endpointUrl = spec.s3.endpointUrl;

  let credentials: DeliveryFile['credentials'] = { mode: 'default' };
  if (spec.credentials?.irsaRoleArn)
    credentials = { mode: 'webIdentity', roleArn: spec.credentials.irsaRoleArn };
  else if (spec.credentials?.assumeRole?.roleArn) {
    const a = spec.credentials.assumeRole;
    credentials = {
      mode: 'assumeRole',
      roleArn: a.roleArn ?? '',
      ...(a.externalId !== undefined ? { externalId: a.externalId } : {}),
      ...(a.sessionName !== undefined ? { sessionName: a.sessionName } : {}),
    };
  }

  return {
    config: {
      // Pods are reached through Services, so bind every interface.
      listen: { host: '0.0.0.0', port: HTTP_PORT },
      endpoint: { name: endpointName },
      // instance.id stays unset: the node uses its host name, which in a
      // StatefulSet is the stable pod name (`<endpoint>-ingest-N`).
      wal: {
        dir: `${DATA_MOUNT}/wal`,
        segmentBytesMax: spec.segmentPolicy.segmentBytesMax,
        segmentAgeMsMax: spec.segmentPolicy.segmentAgeMsMax,
      },
      limits: { bodyBytesMax: spec.limits.bodyBytesMax },
      // The mounted Secret is a directory of key files; the node re-reads it
      // on change, so rotating keys needs no restart (and is not in the hash).
      auth: { required: true, apiKeysFile: API_KEYS_MOUNT },
      validation: spec.validation,
    },
    delivery: {
      s3,
      credentials,
      outputs: { segments: spec.outputs.segments, rawParquet: spec.outputs.rawParquet },
    },
    views: [...views].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map((v) => v.spec),
  };
}

/** The ConfigMap data: one JSON file per part, stable formatting (the config hash is over it). */
export function renderConfigFiles(rendered: RenderedNodeConfig): Record<string, string> {
  const json = (v: unknown): string => JSON.stringify(v, null, 2) + '\n';
  return {
    [CONFIG_FILE]: json(rendered.config),
    [DELIVERY_FILE]: json(rendered.delivery),
    [VIEWS_FILE]: json(rendered.views),
  };
}

/**
 * Loads config.json with the node's own loader (defaults, closed schema,
 * every problem at once). Throws the node's ConfigError: the operator would
 * rather fail a reconcile than roll pods onto a config they refuse.
 */
export function checkWithNodeLoader(config: NodeConfigFile, podName = 'landfall-check-0'): void {
  loadConfig({ values: config as unknown as Record<string, unknown>, hostname: podName });
}

export const CONFIG_PATH = `${CONFIG_MOUNT}/${CONFIG_FILE}`;
