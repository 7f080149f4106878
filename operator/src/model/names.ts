// Names, labels and owner references of everything the operator creates for
// an Endpoint. One place, so the builders, the controllers and the tests agree.
import { createHash } from 'node:crypto';
import type { V1OwnerReference } from '@kubernetes/client-node';
import { API_VERSION } from '../api/common.ts';
import { ENDPOINT_KIND } from '../api/endpoint.ts';
import type { Endpoint } from '../api/endpoint.ts';

export const FIELD_MANAGER = 'landfall-operator';
export const FINALIZER = 'landfall.dev/drain';
export const FORCE_DELETE_ANNOTATION = 'landfall.dev/force-delete';
export const CONFIG_HASH_ANNOTATION = 'landfall.dev/config-hash';
/**
 * On the views ConfigMap: view file name → the View (uid, generation,
 * specHash) it was compiled from. The ConfigMap is the last good output; a
 * restarted operator reads this to keep serving a View whose current
 * generation does not compile.
 */
export const VIEW_SOURCES_ANNOTATION = 'landfall.dev/view-sources';
export const ENDPOINT_LABEL = 'landfall.dev/endpoint';
/** On WAL claims: the uid of the Endpoint whose StatefulSet created them. */
export const ENDPOINT_UID_LABEL = 'landfall.dev/endpoint-uid';
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY = 'landfall-operator';
export const IRSA_ANNOTATION = 'eks.amazonaws.com/role-arn';
/** On ingest pods: Karpenter does not voluntarily disrupt (consolidate, drift) their node. */
export const KARPENTER_DO_NOT_DISRUPT_ANNOTATION = 'karpenter.sh/do-not-disrupt';
/** On ingest pods: the Cluster Autoscaler does not scale their node down. */
export const CLUSTER_AUTOSCALER_SAFE_TO_EVICT_ANNOTATION = 'cluster-autoscaler.kubernetes.io/safe-to-evict';
/** On drainer Jobs (and their ConfigMap, ServiceAccount, pod): the claim they drain. */
export const DRAINER_CLAIM_LABEL = 'landfall.dev/drainer-claim';
/** On drainer objects: the Endpoint name (not ENDPOINT_LABEL: the pod must never match the StatefulSet's selector or the Services). */
export const DRAINER_ENDPOINT_LABEL = 'landfall.dev/drainer-endpoint';
/** On the StatefulSet: the lowest ordinal told to drain (POST /v1/drain) for a scale-down not finished yet. */
export const DRAIN_FROM_ANNOTATION = 'landfall.dev/drain-from-ordinal';
/**
 * On the Endpoint: the WAL claims whose end the finalizer must account for,
 * JSON `{"<claim>/<uid>": "pending" | "drained" | "undrained"}`. "drained" is
 * written before the operator deletes a claim it drained; "undrained": a claim
 * of a deleting Endpoint deleted by someone else (a namespace deletion) before
 * its drainer succeeded. controller/lifecycle.ts settleClaims.
 */
export const CLAIMS_ANNOTATION = 'landfall.dev/wal-claims';
/** Set by the scheduler on a WaitForFirstConsumer claim: the node its volume was provisioned on. */
export const SELECTED_NODE_ANNOTATION = 'volume.kubernetes.io/selected-node';

export const HTTP_PORT = 8080;
/**
 * The node's admin listener (listen.admin): /metrics and /v1/status, in no
 * Service; reached on the pod IP by the operator and by Prometheus (port name
 * `admin`; HTTPS like the main port with spec.expose.tls). The NetworkPolicy
 * says who else may.
 */
export const ADMIN_PORT = 8081;
export const SERVICE_PORT = 80;
export const DATA_VOLUME = 'data';
export const DATA_MOUNT = '/var/lib/landfall';
export const CONFIG_MOUNT = '/etc/landfall/config';
export const API_KEYS_MOUNT = '/etc/landfall/api-keys';
/** The Endpoint's compiled Views, one file each (the node's views.dir). */
export const VIEWS_MOUNT = '/etc/landfall/views';
/** MQTT passwords and TLS files, one folder per broker (`broker-<i>/`). */
export const MQTT_MOUNT = '/etc/landfall/mqtt';
/** The Iceberg catalog's credentials (spec.iceberg.auth's Secret refs), one projected folder. */
export const ICEBERG_MOUNT = '/etc/landfall/iceberg';
/** The node's certificate (spec.expose.tls.secretRef, a kubernetes.io/tls Secret). */
export const TLS_MOUNT = '/etc/landfall/tls';
/** Client Service port with HTTPS on the nodes (80 without). */
export const SERVICE_PORT_TLS = 443;
/** Keys of the static-credentials Secret (spec.credentials.secretRef). */
export const STATIC_KEY_ID_KEY = 'accessKeyId';
export const STATIC_SECRET_KEY = 'secretAccessKey';
/** Key of the Endpoint ConfigMap (and file name in the API-key folder) holding the hash of the operator's status key. Reserved. */
export const OPERATOR_KEY_FILE = 'landfall-operator-status-key';

export function endpointName(ep: Endpoint): string {
  const name = ep.metadata.name;
  if (!name) throw new Error('Endpoint without metadata.name');
  return name;
}

export function endpointNamespace(ep: Endpoint): string {
  const ns = ep.metadata.namespace;
  if (!ns) throw new Error(`Endpoint ${ep.metadata.name ?? '?'} without metadata.namespace`);
  return ns;
}

/** Names of the children; `<endpoint>-ingest` keeps them apart from the user's own objects. */
export function childNames(ep: Endpoint): {
  base: string;
  serviceAccount: string;
  configMap: string;
  viewsConfigMap: string;
  headlessService: string;
  service: string;
  statefulSet: string;
  pdb: string;
  ingress: string;
  httpRoute: string;
  networkPolicy: string;
} {
  const base = `${endpointName(ep)}-ingest`;
  return {
    base,
    serviceAccount: base,
    configMap: base,
    viewsConfigMap: `${base}-views`,
    headlessService: `${base}-headless`,
    service: base,
    statefulSet: base,
    pdb: base,
    ingress: base,
    httpRoute: base,
    networkPolicy: base,
  };
}

/** Immutable once a StatefulSet exists: never add to it. */
export function selectorLabels(ep: Endpoint): Record<string, string> {
  return {
    'app.kubernetes.io/name': 'landfall',
    'app.kubernetes.io/component': 'ingest-node',
    [ENDPOINT_LABEL]: endpointName(ep),
  };
}

export function commonLabels(ep: Endpoint): Record<string, string> {
  return {
    ...selectorLabels(ep),
    'app.kubernetes.io/instance': endpointName(ep),
    'app.kubernetes.io/part-of': 'landfall',
    [MANAGED_BY_LABEL]: MANAGED_BY,
  };
}

export function ownerReference(ep: Endpoint): V1OwnerReference {
  const uid = ep.metadata.uid;
  if (!uid) throw new Error(`Endpoint ${endpointName(ep)} has no uid (not read from the API server?)`);
  return {
    apiVersion: API_VERSION,
    kind: ENDPOINT_KIND,
    name: endpointName(ep),
    uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}

export function childMetadata(ep: Endpoint, name: string, annotations?: Record<string, string>) {
  return {
    name,
    namespace: endpointNamespace(ep),
    labels: commonLabels(ep),
    ...(annotations && Object.keys(annotations).length > 0 ? { annotations } : {}),
    ownerReferences: [ownerReference(ep)],
  };
}

/** True when the nodes serve HTTPS (spec.expose.tls). */
export function servesTls(ep: Endpoint): boolean {
  return ep.spec.expose?.tls?.secretRef !== undefined;
}

/** In-cluster base URL of the ingest API. */
export function endpointUrl(ep: Endpoint): string {
  const host = `${childNames(ep).service}.${endpointNamespace(ep)}.svc`;
  return servesTls(ep) ? `https://${host}:${SERVICE_PORT_TLS}` : `http://${host}:${SERVICE_PORT}`;
}

/** The claim of a StatefulSet ordinal: data-<statefulSet>-<n>. */
export function claimName(statefulSetName: string, ordinal: number): string {
  return `${DATA_VOLUME}-${statefulSetName}-${ordinal}`;
}

/** The ordinal of a claim of this StatefulSet, or undefined for any other name. */
export function claimOrdinal(statefulSetName: string, claim: string): number | undefined {
  const prefix = `${DATA_VOLUME}-${statefulSetName}-`;
  if (!claim.startsWith(prefix)) return undefined;
  const rest = claim.slice(prefix.length);
  return /^(0|[1-9]\d*)$/.test(rest) ? Number(rest) : undefined;
}

/**
 * Name of the drainer Job (and its ConfigMap and ServiceAccount) of a claim:
 * `<claim>-drain`, cut and suffixed with a hash past 63 characters (the Job
 * name is a label value on its pods).
 */
export function drainerName(claim: string): string {
  const name = `${claim}-drain`;
  if (name.length <= 63) return name;
  const hash = createHash('sha256').update(claim).digest('hex').slice(0, 8);
  return `${claim.slice(0, 63 - 15).replace(/[-.]+$/, '')}-${hash}-drain`;
}
