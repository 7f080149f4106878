// ADAPTER (interim): renders an Endpoint as the ingest node's config file.
// The node's schema lives in ingest-node/src/config/schema.ts (TypeBox, closed:
// unknown keys are errors). The blocks listed in NODE_BLOCKS_PENDING are not in
// that schema yet (the S3/credentials/outputs/views issues add them); until
// they are, this adapter writes them in the shape those issues agreed in
// DESIGN §5–§7 and the unit test checks every other block against the real
// node schema.
import type { EndpointSpec } from '../api/endpoint.ts';
import type { CompiledView } from './view-compiler.ts';
import { API_KEYS_MOUNT, DATA_MOUNT, HTTP_PORT } from '../model/names.ts';

/** Blocks the operator writes that the node schema does not define yet. */
export const NODE_BLOCKS_PENDING = ['s3', 'credentials', 'outputs', 'views'] as const;

export interface NodeConfigDocument {
  listen: { host: string; port: number };
  endpoint: { name: string };
  wal: { dir: string; segmentBytesMax: number; segmentAgeMsMax: number };
  limits: { bodyBytesMax: number };
  auth: { required: boolean; apiKeysFile: string };
  validation: 'none' | 'json';
  s3: { bucket: string; region: string; prefix: string; endpointUrl?: string; forcePathStyle: boolean };
  credentials:
    | { mode: 'default' }
    | { mode: 'webIdentity'; roleArn: string }
    | { mode: 'assumeRole'; roleArn: string; externalId?: string; sessionName?: string };
  outputs: { segments: boolean; rawParquet: boolean };
  views: CompiledView['spec'][];
}

export function renderNodeConfig(
  endpointName: string,
  spec: EndpointSpec,
  views: readonly CompiledView[],
): NodeConfigDocument {
  const s3: NodeConfigDocument['s3'] = {
    bucket: spec.s3.bucket,
    region: spec.s3.region,
    prefix: spec.s3.prefix,
    forcePathStyle: spec.s3.forcePathStyle,
  };
  if (spec.s3.endpointUrl !== undefined) s3.endpointUrl = spec.s3.endpointUrl;

  let credentials: NodeConfigDocument['credentials'] = { mode: 'default' };
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
    // The mounted Secret is a directory of key files; the node re-reads it on
    // change, so rotating keys needs no restart (and is not in the config hash).
    auth: { required: true, apiKeysFile: API_KEYS_MOUNT },
    validation: spec.validation,
    s3,
    credentials,
    outputs: { segments: spec.outputs.segments, rawParquet: spec.outputs.rawParquet },
    views: [...views].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map((v) => v.spec),
  };
}
