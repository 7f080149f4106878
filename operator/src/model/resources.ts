// Pure builders: Endpoint (+ its compiled views) → the Kubernetes objects the
// operator applies. No I/O here; the controllers in ../controller/ apply what
// these return. Every object carries apiVersion/kind (server-side apply needs
// them), the common labels and a controller owner reference to the Endpoint.
import { createHash } from 'node:crypto';
import type {
  V1ConfigMap,
  V1Secret,
  V1PodDisruptionBudget,
  V1ResourceRequirements,
  V1Service,
  V1ServiceAccount,
  V1StatefulSet,
} from '@kubernetes/client-node';
import type { Endpoint, EndpointSpec } from '../api/endpoint.ts';
import {
  CONFIG_PATH,
  checkWithNodeLoader,
  renderConfigFiles,
  renderNodeConfig,
} from '../adapters/node-config.ts';
import { canonicalJson } from '../adapters/view-compiler.ts';
import type { CompiledView } from '../adapters/view-compiler.ts';
import {
  API_KEYS_MOUNT,
  CONFIG_HASH_ANNOTATION,
  CONFIG_MOUNT,
  DATA_MOUNT,
  DATA_VOLUME,
  HTTP_PORT,
  IRSA_ANNOTATION,
  OPERATOR_KEY_FILE,
  SERVICE_PORT,
  childMetadata,
  childNames,
  commonLabels,
  endpointName,
  selectorLabels,
} from './names.ts';

export interface BuildContext {
  /** Image used when the Endpoint does not name one (the operator's --node-image). */
  nodeImage: string;
  /** Views that compiled, for this Endpoint. */
  views: readonly CompiledView[];
}

export interface EndpointResources {
  serviceAccount: V1ServiceAccount;
  configMap: V1ConfigMap;
  headlessService: V1Service;
  service: V1Service;
  statefulSet: V1StatefulSet;
  pdb: V1PodDisruptionBudget;
  configHash: string;
}

/** The spec after defaulting; builders never read `ep.spec` directly. */
type Defaulted = Endpoint & { spec: EndpointSpec };

export function buildServiceAccount(ep: Defaulted): V1ServiceAccount {
  const irsa = ep.spec.credentials?.irsaRoleArn;
  return {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: childMetadata(
      ep,
      childNames(ep).serviceAccount,
      irsa ? { [IRSA_ANNOTATION]: irsa } : undefined,
    ),
    // The node never calls the Kubernetes API; IRSA projects its own token.
    automountServiceAccountToken: false,
  };
}

export function buildConfigMap(
  ep: Defaulted,
  views: readonly CompiledView[],
): { configMap: V1ConfigMap; hash: string } {
  const rendered = renderNodeConfig(endpointName(ep), ep.spec, views);
  checkWithNodeLoader(rendered.config);
  const data = renderConfigFiles(rendered);
  return {
    configMap: {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: childMetadata(ep, childNames(ep).configMap),
      data,
    },
    hash: configHash(data),
  };
}

/**
 * Hash of the ConfigMap data, written on the pod template: a changed config
 * changes the template and the StatefulSet rolls its pods. API keys are not in
 * it on purpose: the node re-reads the mounted Secret, so rotation needs no restart.
 */
export function configHash(data: Record<string, string>): string {
  return createHash('sha256').update(canonicalJson(data)).digest('hex').slice(0, 16);
}

export function buildServices(ep: Defaulted): { headless: V1Service; client: V1Service } {
  const names = childNames(ep);
  const ports = [{ name: 'http', port: SERVICE_PORT, targetPort: 'http', protocol: 'TCP' }];
  return {
    headless: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: childMetadata(ep, names.headlessService),
      spec: {
        clusterIP: 'None',
        selector: selectorLabels(ep),
        // Per-pod DNS must work while a pod is not ready (full, draining):
        // that is exactly when the operator asks it for /v1/status.
        publishNotReadyAddresses: true,
        ports: [{ name: 'http', port: HTTP_PORT, targetPort: 'http', protocol: 'TCP' }],
      },
    },
    client: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: childMetadata(ep, names.service),
      spec: { type: 'ClusterIP', selector: selectorLabels(ep), ports },
    },
  };
}

function quantities(list: Record<string, string | number> | undefined): Record<string, string> | undefined {
  if (!list) return undefined;
  return Object.fromEntries(Object.entries(list).map(([k, v]) => [k, String(v)]));
}

function resources(spec: EndpointSpec): V1ResourceRequirements {
  const out: V1ResourceRequirements = {};
  const requests = quantities(spec.resources.requests);
  const limits = quantities(spec.resources.limits);
  if (requests) out.requests = requests;
  if (limits) out.limits = limits;
  return out;
}

export function buildStatefulSet(ep: Defaulted, ctx: BuildContext, hash: string): V1StatefulSet {
  const names = childNames(ep);
  const spec = ep.spec;
  const probe = (path: string, periodSeconds: number, failureThreshold: number) => ({
    httpGet: { path, port: 'http' },
    periodSeconds,
    timeoutSeconds: 2,
    failureThreshold,
  });
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: childMetadata(ep, names.statefulSet),
    spec: {
      replicas: spec.replicas,
      serviceName: names.headlessService,
      // Replicas are independent instances (own WAL, own keys): nothing is
      // gained by starting them one at a time, and a stuck pod-0 would block the rest.
      podManagementPolicy: 'Parallel',
      updateStrategy: { type: 'RollingUpdate' },
      // A scaled-down or deleted replica's volume may still hold undelivered
      // segments: keep it until someone decides otherwise.
      persistentVolumeClaimRetentionPolicy: { whenDeleted: 'Retain', whenScaled: 'Retain' },
      selector: { matchLabels: selectorLabels(ep) },
      template: {
        metadata: { labels: commonLabels(ep), annotations: { [CONFIG_HASH_ANNOTATION]: hash } },
        spec: {
          serviceAccountName: names.serviceAccount,
          automountServiceAccountToken: false,
          ...(spec.runtimeClassName ? { runtimeClassName: spec.runtimeClassName } : {}),
          // The node drains on SIGTERM within shutdown.timeoutMs (25 s by default).
          terminationGracePeriodSeconds: 40,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 65532,
            runAsGroup: 65532,
            fsGroup: 65532,
            fsGroupChangePolicy: 'OnRootMismatch',
            seccompProfile: { type: 'RuntimeDefault' },
          },
          affinity: {
            // Spread replicas over nodes so one node failure takes one WAL
            // offline, not all. Preferred, not required: a small cluster
            // should still run every replica.
            podAntiAffinity: {
              preferredDuringSchedulingIgnoredDuringExecution: [
                {
                  weight: 100,
                  podAffinityTerm: {
                    labelSelector: { matchLabels: selectorLabels(ep) },
                    topologyKey: 'kubernetes.io/hostname',
                  },
                },
              ],
            },
          },
          containers: [
            {
              name: 'ingest-node',
              image: spec.image ?? ctx.nodeImage,
              args: ['serve'],
              env: [
                { name: 'LANDFALL_CONFIG', value: CONFIG_PATH },
                { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
                { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
              ],
              ports: [{ name: 'http', containerPort: HTTP_PORT, protocol: 'TCP' }],
              resources: resources(spec),
              // WAL recovery scans the open segment before /healthz answers.
              startupProbe: probe('/healthz', 2, 150),
              livenessProbe: probe('/healthz', 10, 3),
              readinessProbe: probe('/readyz', 5, 2),
              securityContext: {
                runAsNonRoot: true,
                readOnlyRootFilesystem: true,
                allowPrivilegeEscalation: false,
                capabilities: { drop: ['ALL'] },
                seccompProfile: { type: 'RuntimeDefault' },
              },
              volumeMounts: [
                { name: DATA_VOLUME, mountPath: DATA_MOUNT },
                { name: 'config', mountPath: CONFIG_MOUNT, readOnly: true },
                { name: 'api-keys', mountPath: API_KEYS_MOUNT, readOnly: true },
                { name: 'tmp', mountPath: '/tmp' },
              ],
            },
          ],
          volumes: [
            { name: 'config', configMap: { name: names.configMap } },
            {
              // The user's keys plus the operator's own status-scoped key (for
              // the drain check on deletion), one folder the node re-reads.
              name: 'api-keys',
              projected: {
                defaultMode: 0o440,
                sources: [
                  { secret: { name: spec.apiKeySecretRef.name } },
                  {
                    secret: {
                      name: names.operatorKeySecret,
                      items: [{ key: OPERATOR_KEY_FILE, path: OPERATOR_KEY_FILE }],
                      // Without it a pod still serves; only the drain check
                      // on deletion cannot ask it (and then waits for force).
                      optional: true,
                    },
                  },
                ],
              },
            },
            { name: 'tmp', emptyDir: { sizeLimit: '1Gi' } },
          ],
        },
      },
      volumeClaimTemplates: [
        {
          apiVersion: 'v1',
          kind: 'PersistentVolumeClaim',
          metadata: { name: DATA_VOLUME, labels: selectorLabels(ep) },
          spec: {
            accessModes: ['ReadWriteOnce'],
            ...(spec.storage.storageClassName ? { storageClassName: spec.storage.storageClassName } : {}),
            resources: { requests: { storage: String(spec.storage.size) } },
          },
        },
      ],
    },
  };
}

/**
 * The operator's own API key for GET /v1/status, scoped to `status` only (it
 * cannot ingest). Generated once by the controller and never rotated by apply:
 * the builder only shapes the object around the key it is given.
 */
export function buildOperatorKeySecret(ep: Defaulted, key: string): V1Secret {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: childMetadata(ep, childNames(ep).operatorKeySecret),
    type: 'Opaque',
    stringData: { [OPERATOR_KEY_FILE]: `${key} status\n` },
  };
}

/** The key from a Secret built by buildOperatorKeySecret (stringData comes back as base64 data). */
export function operatorKeyFromSecret(secret: V1Secret): string | undefined {
  const raw = secret.data?.[OPERATOR_KEY_FILE];
  if (!raw) return undefined;
  const line = Buffer.from(raw, 'base64').toString('utf8').trim();
  return line.split(/\s+/)[0] || undefined;
}

export function buildPdb(ep: Defaulted): V1PodDisruptionBudget {
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: childMetadata(ep, childNames(ep).pdb),
    spec: {
      // One replica down at a time: its producers fail over to the others
      // through the client Service while it drains and comes back.
      maxUnavailable: 1,
      selector: { matchLabels: selectorLabels(ep) },
    },
  };
}

export function buildEndpointResources(ep: Defaulted, ctx: BuildContext): EndpointResources {
  const { configMap, hash } = buildConfigMap(ep, ctx.views);
  const { headless, client } = buildServices(ep);
  return {
    serviceAccount: buildServiceAccount(ep),
    configMap,
    headlessService: headless,
    service: client,
    statefulSet: buildStatefulSet(ep, ctx, hash),
    pdb: buildPdb(ep),
    configHash: hash,
  };
}
