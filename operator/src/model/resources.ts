// Pure builders: Endpoint (+ its compiled views) → the Kubernetes objects the
// operator applies. No I/O here; the controllers in ../controller/ apply what
// these return. Every object carries apiVersion/kind (server-side apply needs
// them), the common labels and a controller owner reference to the Endpoint.
import { createHash } from 'node:crypto';
import type {
  V1ConfigMap,
  V1Affinity,
  V1Ingress,
  V1EnvVar,
  V1PodSpec,
  V1TopologySpreadConstraint,
  V1Volume,
  V1VolumeMount,
  V1VolumeProjection,
  V1PodDisruptionBudget,
  V1ResourceRequirements,
  V1Service,
  V1ServiceAccount,
  V1StatefulSet,
} from '@kubernetes/client-node';
import type { Endpoint, EndpointSpec } from '../api/endpoint.ts';
import {
  CONFIG_PATH,
  ICEBERG_FILES,
  checkWithNodeLoader,
  mqttBrokerFiles,
  renderConfigFiles,
  renderNodeConfig,
  renderViewFiles,
  viewFileName,
} from '../adapters/node-config.ts';
import { canonicalJson } from '../adapters/view-compiler.ts';
import { ShutdownSchema } from '../../../ingest-node/src/config/schema.ts';
import type { CompiledView } from '../adapters/view-compiler.ts';
import {
  API_KEYS_MOUNT,
  CLUSTER_AUTOSCALER_SAFE_TO_EVICT_ANNOTATION,
  CONFIG_HASH_ANNOTATION,
  CONFIG_MOUNT,
  DATA_MOUNT,
  DATA_VOLUME,
  ENDPOINT_UID_LABEL,
  ADMIN_PORT,
  HTTP_PORT,
  ICEBERG_MOUNT,
  IRSA_ANNOTATION,
  KARPENTER_DO_NOT_DISRUPT_ANNOTATION,
  MQTT_MOUNT,
  OPERATOR_KEY_FILE,
  SERVICE_PORT,
  SERVICE_PORT_TLS,
  STATIC_KEY_ID_KEY,
  TLS_MOUNT,
  STATIC_SECRET_KEY,
  VIEWS_MOUNT,
  VIEW_SOURCES_ANNOTATION,
  childMetadata,
  childNames,
  commonLabels,
  endpointName,
  ownerReference,
  selectorLabels,
  servesTls,
} from './names.ts';

export interface BuildContext {
  /** Image used when the Endpoint does not name one (the operator's --node-image). */
  nodeImage: string;
  /** Views that compiled, for this Endpoint. */
  views: readonly CompiledView[];
  /** The operator's status key as a key-file line (model/operator-key.ts statusKeyLine); unset: none. */
  operatorKeyLine?: string;
  /** Who may reach the nodes' admin port; unset: no NetworkPolicy (the chart's networkPolicy.enabled=false). */
  networkPolicy?: NetworkPolicySettings;
}

/** From the chart (--network-policy-*): where the operator and Prometheus run. */
export interface NetworkPolicySettings {
  /** The operator's namespace and the labels of its pods: the only ones that may read /v1/status. */
  operatorNamespace: string;
  operatorPodLabels: Record<string, string>;
  /** Pods of this namespace may scrape /metrics; empty: nobody but the operator reaches the admin port. */
  metricsNamespace: string;
}

export interface EndpointResources {
  serviceAccount: V1ServiceAccount;
  configMap: V1ConfigMap;
  viewsConfigMap: V1ConfigMap;
  headlessService: V1Service;
  service: V1Service;
  statefulSet: V1StatefulSet;
  pdb: V1PodDisruptionBudget;
  /** Present when spec.expose.ingress is set. */
  ingress: V1Ingress | undefined;
  /** Present when spec.expose.httpRoute is set. */
  httpRoute: HttpRoute | undefined;
  /** Present when the operator runs with a NetworkPolicy (BuildContext.networkPolicy). */
  networkPolicy: NetworkPolicy | undefined;
  configHash: string;
}

/** A Gateway API HTTPRoute (gateway.networking.k8s.io/v1), as far as the operator writes one. */
export interface HttpRoute {
  apiVersion: 'gateway.networking.k8s.io/v1';
  kind: 'HTTPRoute';
  metadata: ReturnType<typeof childMetadata>;
  spec: {
    parentRefs: { name: string; namespace?: string; sectionName?: string }[];
    hostnames?: string[];
    rules: { backendRefs: { name: string; port: number }[] }[];
  };
}

/**
 * networking.k8s.io/v1 NetworkPolicy as sent to the API server (the client
 * library's model spells `from` as `_from`; the operator writes raw JSON).
 */
export interface NetworkPolicy {
  apiVersion: 'networking.k8s.io/v1';
  kind: 'NetworkPolicy';
  metadata: ReturnType<typeof childMetadata>;
  spec: {
    podSelector: { matchLabels: Record<string, string> };
    policyTypes: 'Ingress'[];
    ingress: {
      from?: {
        namespaceSelector?: { matchLabels: Record<string, string> };
        podSelector?: { matchLabels: Record<string, string> };
      }[];
      ports: { port: string; protocol: string }[];
    }[];
  };
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
  operatorKeyLine?: string,
): { configMap: V1ConfigMap; viewsConfigMap: V1ConfigMap; hash: string } {
  const config = renderNodeConfig(endpointName(ep), ep.spec);
  checkWithNodeLoader(config);
  const data = renderConfigFiles(config);
  // Only the hash of the operator's key (projected into the API-key folder):
  // a ConfigMap, so the operator needs no Secret in this namespace.
  if (operatorKeyLine !== undefined) data[OPERATOR_KEY_FILE] = operatorKeyLine;
  const names = childNames(ep);
  return {
    configMap: {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: childMetadata(ep, names.configMap),
      data,
    },
    // Its own ConfigMap, mounted whole as the node's views.dir: a View change
    // updates the files in running pods (the node reloads the folder), so it
    // is not in the config hash and does not roll the pods.
    viewsConfigMap: {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: childMetadata(ep, names.viewsConfigMap, viewSourcesAnnotation(views)),
      data: renderViewFiles(views),
    },
    hash: configHash(data),
  };
}

function viewSourcesAnnotation(views: readonly CompiledView[]): Record<string, string> | undefined {
  const sources: Record<string, unknown> = {};
  for (const v of views) if (v.source !== undefined) sources[viewFileName(v.name)] = v.source;
  return Object.keys(sources).length === 0
    ? undefined
    : { [VIEW_SOURCES_ANNOTATION]: canonicalJson(sources) };
}

/**
 * Hash of the ConfigMap data, written on the pod template: a changed config
 * changes the template and the StatefulSet rolls its pods. API keys are not in
 * it on purpose: the node re-reads the mounted Secret, so rotation needs no restart.
 */
export function configHash(data: Record<string, string>): string {
  return createHash('sha256').update(canonicalJson(data)).digest('hex').slice(0, 16);
}

/** The client Service's port: 443 named https when the nodes serve TLS, else 80 named http. */
function servicePort(ep: Defaulted): { name: string; port: number } {
  return servesTls(ep) ? { name: 'https', port: SERVICE_PORT_TLS } : { name: 'http', port: SERVICE_PORT };
}

export function buildServices(ep: Defaulted): { headless: V1Service; client: V1Service } {
  const names = childNames(ep);
  const svc = ep.spec.expose.service;
  const ports = [{ ...servicePort(ep), targetPort: 'http', protocol: 'TCP' }];
  const ranges = svc.loadBalancerSourceRanges ?? [];
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
        ports: [{ name: servicePort(ep).name, port: HTTP_PORT, targetPort: 'http', protocol: 'TCP' }],
      },
    },
    client: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: childMetadata(ep, names.service, svc.annotations),
      spec: {
        type: svc.type,
        selector: selectorLabels(ep),
        ports,
        ...(svc.type === 'LoadBalancer' && ranges.length > 0 ? { loadBalancerSourceRanges: ranges } : {}),
      },
    },
  };
}

/** The Ingress of spec.expose.ingress, or undefined. */
export function buildIngress(ep: Defaulted): V1Ingress | undefined {
  const ing = ep.spec.expose.ingress;
  if (ing === undefined) return undefined;
  const names = childNames(ep);
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'Ingress',
    metadata: childMetadata(ep, names.ingress, ing.annotations),
    spec: {
      ...(ing.className !== undefined ? { ingressClassName: ing.className } : {}),
      ...(ing.tlsSecretName !== undefined
        ? { tls: [{ hosts: [ing.host], secretName: ing.tlsSecretName }] }
        : {}),
      rules: [
        {
          host: ing.host,
          http: {
            paths: [
              {
                path: '/',
                pathType: 'Prefix',
                backend: { service: { name: names.service, port: { number: servicePort(ep).port } } },
              },
            ],
          },
        },
      ],
    },
  };
}

/** The HTTPRoute of spec.expose.httpRoute, or undefined. */
export function buildHttpRoute(ep: Defaulted): HttpRoute | undefined {
  const route = ep.spec.expose.httpRoute;
  if (route === undefined) return undefined;
  const names = childNames(ep);
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: childMetadata(ep, names.httpRoute),
    spec: {
      parentRefs: route.parentRefs.map((p) => ({
        name: p.name,
        ...(p.namespace !== undefined ? { namespace: p.namespace } : {}),
        ...(p.sectionName !== undefined ? { sectionName: p.sectionName } : {}),
      })),
      ...(route.hostnames !== undefined && route.hostnames.length > 0 ? { hostnames: route.hostnames } : {}),
      rules: [{ backendRefs: [{ name: names.service, port: servicePort(ep).port }] }],
    },
  };
}

function quantities(list: Record<string, string | number> | undefined): Record<string, string> | undefined {
  if (!list) return undefined;
  return Object.fromEntries(Object.entries(list).map(([k, v]) => [k, String(v)]));
}

export function resources(spec: EndpointSpec): V1ResourceRequirements {
  const out: V1ResourceRequirements = {};
  const requests = quantities(spec.resources.requests);
  const limits = quantities(spec.resources.limits);
  if (requests) out.requests = requests;
  if (limits) out.limits = limits;
  return out;
}

/** The container env: per-pod values from the downward API, static S3 keys from their Secret. */
export function containerEnv(spec: EndpointSpec): V1EnvVar[] {
  const podName = { fieldRef: { fieldPath: 'metadata.name' } };
  const env: V1EnvVar[] = [
    { name: 'POD_NAME', valueFrom: podName },
    { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
    // The pod name is the instance: part of every S3 key and the MQTT client id.
    { name: 'LANDFALL_INSTANCE_ID', valueFrom: podName },
  ];
  const c = spec.credentials;
  if (c?.assumeRole?.roleArn && c.assumeRole.sessionName === undefined)
    env.push({ name: 'LANDFALL_CREDENTIALS_SESSION_NAME', valueFrom: podName });
  if (c?.secretRef) {
    // Read by the node's default credential chain; never in the ConfigMap.
    const ref = (key: string) => ({ secretKeyRef: { name: c.secretRef?.name ?? '', key } });
    env.push(
      { name: 'AWS_ACCESS_KEY_ID', valueFrom: ref(STATIC_KEY_ID_KEY) },
      { name: 'AWS_SECRET_ACCESS_KEY', valueFrom: ref(STATIC_SECRET_KEY) },
    );
  }
  return env;
}

/** The node's pod securityContext (the drainer Job runs the same image the same way). */
export const NODE_POD_SECURITY_CONTEXT = {
  runAsNonRoot: true,
  runAsUser: 65532,
  runAsGroup: 65532,
  fsGroup: 65532,
  fsGroupChangePolicy: 'OnRootMismatch',
  seccompProfile: { type: 'RuntimeDefault' },
} as const;

export const NODE_CONTAINER_SECURITY_CONTEXT = {
  runAsNonRoot: true,
  readOnlyRootFilesystem: true,
  allowPrivilegeEscalation: false,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
} as const;

/** Seconds the kubelet waits after SIGTERM on top of the node's shutdown budget before SIGKILL. */
export const TERMINATION_MARGIN_SECONDS = 15;

/**
 * The pods' terminationGracePeriodSeconds: on SIGTERM the node refuses writes,
 * seals and delivers its backlog for up to shutdown.timeoutMs; the kubelet must
 * not SIGKILL it before that budget is spent.
 */
export function terminationGracePeriodSeconds(): number {
  const budgetMs = ShutdownSchema.properties.timeoutMs.default as number;
  return Math.ceil(budgetMs / 1000) + TERMINATION_MARGIN_SECONDS;
}

/** The MQTT brokers' Secrets as one projected folder (`broker-<i>/…`), or nothing. */
function mqttSecretSources(spec: EndpointSpec): V1VolumeProjection[] {
  const sources: V1VolumeProjection[] = [];
  (spec.mqtt?.brokers ?? []).forEach((b, i) => {
    const files = mqttBrokerFiles(i);
    if (b.passwordSecretRef)
      sources.push({
        secret: {
          name: b.passwordSecretRef.name,
          items: [{ key: b.passwordSecretRef.key, path: files.password }],
        },
      });
    if (b.caSecretRef)
      sources.push({
        secret: { name: b.caSecretRef.name, items: [{ key: b.caSecretRef.key, path: files.ca }] },
      });
    if (b.clientCertSecretRef)
      sources.push({
        secret: {
          name: b.clientCertSecretRef.name,
          items: [
            { key: 'tls.crt', path: files.cert },
            { key: 'tls.key', path: files.key },
          ],
        },
      });
  });
  return sources;
}

/**
 * The Iceberg catalog's credentials as one projected folder, mounted whole
 * (not subPath) so the kubelet's updates of a rotated Secret reach the node,
 * which re-reads the files. The kubelet reads the Secrets, not the operator:
 * no Secret permission is needed for this.
 */
export function icebergSecretVolume(
  spec: EndpointSpec,
): { volume: V1Volume; mount: V1VolumeMount } | undefined {
  const a = spec.iceberg?.auth;
  const item = (ref: { name: string; key: string }, path: string): V1VolumeProjection => ({
    secret: { name: ref.name, items: [{ key: ref.key, path }] },
  });
  const sources: V1VolumeProjection[] = [];
  if (a?.type === 'bearer' && a.tokenSecretRef) sources.push(item(a.tokenSecretRef, ICEBERG_FILES.token));
  if (a?.type === 'oauth2' && a.clientIdSecretRef && a.clientSecretSecretRef)
    sources.push(
      item(a.clientIdSecretRef, ICEBERG_FILES.clientId),
      item(a.clientSecretSecretRef, ICEBERG_FILES.clientSecret),
    );
  if (sources.length === 0) return undefined;
  return {
    volume: { name: 'iceberg', projected: { defaultMode: 0o440, sources } },
    mount: { name: 'iceberg', mountPath: ICEBERG_MOUNT, readOnly: true },
  };
}

/** The operator's pod-spec placement fields with spec.podTemplate's overrides (docs/operator.md). */
export function placement(ep: Defaulted): Partial<V1PodSpec> {
  const pt = ep.spec.podTemplate;
  const antiAffinity: V1Affinity = {
    // Spread replicas over nodes so one node failure takes one WAL offline,
    // not all. Preferred, not required: a small cluster should still run
    // every replica.
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
  };
  const out: Partial<V1PodSpec> = {
    affinity: { ...antiAffinity, ...(pt?.affinity as V1Affinity | undefined) },
  };
  if (pt?.nodeSelector && Object.keys(pt.nodeSelector).length > 0) out.nodeSelector = pt.nodeSelector;
  if (pt?.tolerations?.length) out.tolerations = pt.tolerations;
  if (pt?.topologySpreadConstraints?.length)
    out.topologySpreadConstraints = pt.topologySpreadConstraints.map((c) => ({
      labelSelector: { matchLabels: selectorLabels(ep) },
      ...(c as unknown as V1TopologySpreadConstraint),
    }));
  if (pt?.priorityClassName) out.priorityClassName = pt.priorityClassName;
  if (pt?.imagePullSecrets?.length) out.imagePullSecrets = pt.imagePullSecrets;
  return out;
}

export function buildStatefulSet(ep: Defaulted, ctx: BuildContext, hash: string): V1StatefulSet {
  const names = childNames(ep);
  const spec = ep.spec;
  const mqttSources = mqttSecretSources(spec);
  const iceberg = icebergSecretVolume(spec);
  const tlsSecret = spec.expose.tls?.secretRef.name;
  const probe = (path: string, periodSeconds: number, failureThreshold: number) => ({
    // The kubelet does not verify the certificate of an HTTPS probe.
    httpGet: { path, port: 'http', ...(tlsSecret !== undefined ? { scheme: 'HTTPS' } : {}) },
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
        metadata: {
          labels: commonLabels(ep),
          annotations: {
            ...disruptionAnnotations(),
            ...spec.podTemplate?.metadata?.annotations,
            [CONFIG_HASH_ANNOTATION]: hash,
          },
        },
        spec: {
          serviceAccountName: names.serviceAccount,
          automountServiceAccountToken: false,
          // No <SERVICE>_HOST/_PORT env: the node needs none, and a Service
          // named landfall… would inject LANDFALL_* variables its config
          // loader refuses as unknown keys.
          enableServiceLinks: false,
          ...(spec.runtimeClassName ? { runtimeClassName: spec.runtimeClassName } : {}),
          // The node delivers on SIGTERM within shutdown.timeoutMs (the rendered config keeps the node's default).
          terminationGracePeriodSeconds: terminationGracePeriodSeconds(),
          securityContext: { ...NODE_POD_SECURITY_CONTEXT },
          ...placement(ep),
          containers: [
            {
              name: 'ingest-node',
              image: spec.image ?? ctx.nodeImage,
              // The image's entrypoint is the node CLI (images/ingest-node.Dockerfile).
              args: ['serve', '--config', CONFIG_PATH],
              env: containerEnv(spec),
              ports: [
                { name: 'http', containerPort: HTTP_PORT, protocol: 'TCP' },
                { name: 'admin', containerPort: ADMIN_PORT, protocol: 'TCP' },
              ],
              resources: resources(spec),
              // WAL recovery scans the open segment before /healthz answers.
              startupProbe: probe('/healthz', 2, 150),
              livenessProbe: probe('/healthz', 10, 3),
              readinessProbe: probe('/readyz', 5, 2),
              securityContext: {
                ...NODE_CONTAINER_SECURITY_CONTEXT,
                capabilities: { drop: [...NODE_CONTAINER_SECURITY_CONTEXT.capabilities.drop] },
              },
              volumeMounts: [
                { name: DATA_VOLUME, mountPath: DATA_MOUNT },
                { name: 'config', mountPath: CONFIG_MOUNT, readOnly: true },
                { name: 'views', mountPath: VIEWS_MOUNT, readOnly: true },
                { name: 'api-keys', mountPath: API_KEYS_MOUNT, readOnly: true },
                ...(mqttSources.length > 0 ? [{ name: 'mqtt', mountPath: MQTT_MOUNT, readOnly: true }] : []),
                ...(iceberg !== undefined ? [iceberg.mount] : []),
                // The whole folder, not subPath files: the kubelet updates a renewed Secret only there.
                ...(tlsSecret !== undefined ? [{ name: 'tls', mountPath: TLS_MOUNT, readOnly: true }] : []),
                { name: 'tmp', mountPath: '/tmp' },
              ],
            },
          ],
          volumes: [
            { name: 'config', configMap: { name: names.configMap } },
            { name: 'views', configMap: { name: names.viewsConfigMap } },
            {
              // The user's keys plus the hash of the operator's own
              // status-scoped key (for the drain check on deletion), one
              // folder the node re-reads.
              name: 'api-keys',
              projected: {
                defaultMode: 0o440,
                sources: [
                  { secret: { name: spec.apiKeySecretRef.name } },
                  ...(ctx.operatorKeyLine !== undefined
                    ? [
                        {
                          configMap: {
                            name: names.configMap,
                            items: [{ key: OPERATOR_KEY_FILE, path: OPERATOR_KEY_FILE }],
                          },
                        },
                      ]
                    : []),
                ],
              },
            },
            ...(mqttSources.length > 0
              ? [{ name: 'mqtt', projected: { defaultMode: 0o440, sources: mqttSources } }]
              : []),
            ...(iceberg !== undefined ? [iceberg.volume] : []),
            ...(tlsSecret !== undefined
              ? [
                  {
                    name: 'tls',
                    secret: {
                      secretName: tlsSecret,
                      defaultMode: 0o440,
                      items: [
                        { key: 'tls.crt', path: 'tls.crt' },
                        { key: 'tls.key', path: 'tls.key' },
                      ],
                    },
                  },
                ]
              : []),
            { name: 'tmp', emptyDir: { sizeLimit: '1Gi' } },
          ],
        },
      },
      volumeClaimTemplates: [
        {
          apiVersion: 'v1',
          kind: 'PersistentVolumeClaim',
          // The uid tells this Endpoint's claims from those a deleted
          // Endpoint of the same name left behind (controller/endpoint.ts
          // refuses to let its StatefulSet adopt those).
          metadata: {
            name: DATA_VOLUME,
            labels: { ...selectorLabels(ep), [ENDPOINT_UID_LABEL]: ownerReference(ep).uid },
          },
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
 * Per Endpoint, because only the operator knows each Endpoint's pod labels and
 * Endpoints live in namespaces the chart never sees. Ingress to the main port
 * from anywhere (producers, Ingress controllers, the kubelet's probes); the
 * admin port (/metrics, /v1/status) from the operator's pods and from the
 * monitoring namespace only. A NetworkPolicy is L4: Prometheus can reach
 * /v1/status too, which still needs a status-scoped key. Egress is not limited
 * (S3, STS and MQTT brokers are wherever the user put them).
 */
export function buildNetworkPolicy(ep: Defaulted, np: NetworkPolicySettings): NetworkPolicy {
  const byName = (ns: string) => ({ matchLabels: { 'kubernetes.io/metadata.name': ns } });
  const admin = [{ port: 'admin', protocol: 'TCP' }];
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: childMetadata(ep, childNames(ep).networkPolicy),
    spec: {
      podSelector: { matchLabels: selectorLabels(ep) },
      policyTypes: ['Ingress'],
      ingress: [
        { ports: [{ port: 'http', protocol: 'TCP' }] },
        {
          from: [
            {
              namespaceSelector: byName(np.operatorNamespace),
              podSelector: { matchLabels: np.operatorPodLabels },
            },
          ],
          ports: admin,
        },
        ...(np.metricsNamespace !== ''
          ? [{ from: [{ namespaceSelector: byName(np.metricsNamespace) }], ports: admin }]
          : []),
      ],
    },
  };
}

/**
 * Always on, not only while a pod reports a backlog: under traffic the open
 * segment always holds the last acknowledged records, so a backlog-aware
 * annotation would be set nearly all the time, and every moment it is off is
 * a race (the autoscaler picks the node, a record is acknowledged after). A
 * pod on a local PV can never be moved by consolidation anyway: its volume
 * stays on the node. Planned node removal goes through cordon + drain, which
 * the operator turns into drain, deliver, then a new volume elsewhere
 * (controller/node-drain.ts). spec.podTemplate.metadata.annotations may
 * override them (e.g. "false" to let Karpenter consolidate; it taints the
 * node first, which the operator treats like a cordon).
 */
export function disruptionAnnotations(): Record<string, string> {
  return {
    [KARPENTER_DO_NOT_DISRUPT_ANNOTATION]: 'true',
    [CLUSTER_AUTOSCALER_SAFE_TO_EVICT_ANNOTATION]: 'false',
  };
}

export function buildPdb(ep: Defaulted): V1PodDisruptionBudget {
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: childMetadata(ep, childNames(ep).pdb),
    spec: {
      // No voluntary eviction at all, for one replica as for many: an evicted
      // pod cannot move (its local PV is pinned to the node) and whatever it
      // has not delivered leaves with the node. `kubectl drain` and node-group
      // upgrades retry the eviction; meanwhile the operator sees the cordon,
      // drains the replica and deletes its claim and pod itself, which the
      // eviction API does not stand in the way of (controller/node-drain.ts).
      // Rolling updates are not evictions: the PDB does not slow them.
      maxUnavailable: 0,
      selector: { matchLabels: selectorLabels(ep) },
    },
  };
}

export function buildEndpointResources(ep: Defaulted, ctx: BuildContext): EndpointResources {
  const { configMap, viewsConfigMap, hash } = buildConfigMap(ep, ctx.views, ctx.operatorKeyLine);
  const { headless, client } = buildServices(ep);
  return {
    serviceAccount: buildServiceAccount(ep),
    configMap,
    viewsConfigMap,
    headlessService: headless,
    service: client,
    statefulSet: buildStatefulSet(ep, ctx, hash),
    pdb: buildPdb(ep),
    ingress: buildIngress(ep),
    httpRoute: buildHttpRoute(ep),
    networkPolicy: ctx.networkPolicy === undefined ? undefined : buildNetworkPolicy(ep, ctx.networkPolicy),
    configHash: hash,
  };
}
