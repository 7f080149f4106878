// Pure builder of a drainer: the Job that delivers what is left on a WAL
// volume whose pod is gone (a scaled-down ordinal, or every ordinal of a
// deleted Endpoint). It runs the node image's `landfall drain` with the claim
// mounted where the StatefulSet mounts it, the same config and credentials as
// the pods, as the same non-root user on a read-only root filesystem.
//
// Self-sufficient on purpose: a foreground delete of the Endpoint
// (`kubectl delete --cascade=foreground`, Argo CD's prune) makes the garbage
// collector delete every child of the Endpoint — its ConfigMap and
// ServiceAccount too — while the finalizer still waits for the drainers. So a
// drainer brings its own ConfigMap (config.json and the View files) and its own
// ServiceAccount (the IRSA annotation), and all three objects are owned by the
// claim, not by the Endpoint: they live as long as the volume they drain and go
// with it when the operator deletes the claim after the Job succeeded. Only the
// user's Secrets (S3 keys, referenced by name) are shared with the pods; the
// user owns those. A fourth object, its PodDisruptionBudget, keeps
// `kubectl drain` from evicting the drainer pod while the WAL it delivers is
// still on the node's volume (buildDrainerPdb).
import type {
  V1ConfigMap,
  V1EnvVar,
  V1Job,
  V1OwnerReference,
  V1PersistentVolumeClaim,
  V1PodDisruptionBudget,
  V1ServiceAccount,
  V1Toleration,
} from '@kubernetes/client-node';
import type { Endpoint, EndpointSpec } from '../api/endpoint.ts';
import { CONFIG_FILE, CONFIG_PATH } from '../adapters/node-config.ts';
import type { CompiledView } from '../adapters/view-compiler.ts';
import {
  CONFIG_MOUNT,
  DATA_MOUNT,
  DATA_VOLUME,
  DRAINER_CLAIM_LABEL,
  DRAINER_ENDPOINT_LABEL,
  ENDPOINT_UID_LABEL,
  IRSA_ANNOTATION,
  MANAGED_BY,
  MANAGED_BY_LABEL,
  SELECTED_NODE_ANNOTATION,
  VIEWS_MOUNT,
  drainerName,
  endpointName,
  endpointNamespace,
} from './names.ts';
import {
  NODE_CONTAINER_SECURITY_CONTEXT,
  NODE_POD_SECURITY_CONTEXT,
  buildConfigMap,
  containerEnv,
  disruptionAnnotations,
  resources,
  icebergSecretVolume,
} from './resources.ts';

/** Retries of a failed drainer pod before the Job is Failed (then a human looks). */
export const DRAINER_BACKOFF_LIMIT = 3;
/** `landfall drain --timeout-ms`: one attempt's bound. */
export const DRAINER_TIMEOUT_MS = 20 * 60_000;
/**
 * The whole Job's bound, all attempts, counted from the Job's start (time
 * Pending, e.g. on a node whose kubelet is down, included): past it the Job is
 * Failed (DeadlineExceeded) and the claim kept; deleting the Job starts anew.
 */
export const DRAINER_ACTIVE_DEADLINE_SECONDS = 60 * 60;

/**
 * A volume is drained where it is, and the node it is on is often the one
 * leaving: cordoned (`kubectl drain`) or tainted by Karpenter / the Cluster
 * Autoscaler before they remove it. Without these the drainer pod could not
 * be scheduled there and the volume would wait for a node that is going away.
 * The node affinity (and a local PV's own) keeps the pod on the volume's node.
 */
export const DRAINER_TOLERATIONS: readonly V1Toleration[] = [
  'node.kubernetes.io/unschedulable',
  'karpenter.sh/disrupted',
  'karpenter.sh/disruption',
  'ToBeDeletedByClusterAutoscaler',
].map((key) => ({ key, operator: 'Exists', effect: 'NoSchedule' }));

type Defaulted = Endpoint & { spec: EndpointSpec };

export interface DrainerInput {
  ep: Defaulted;
  claim: V1PersistentVolumeClaim;
  /** The pod the claim belonged to (`<statefulSet>-<n>`): the node's instance id, part of every S3 key. */
  instance: string;
  nodeImage: string;
  views: readonly CompiledView[];
}

export interface Drainer {
  job: V1Job;
  configMap: V1ConfigMap;
  serviceAccount: V1ServiceAccount;
  pdb: V1PodDisruptionBudget;
}

function claimOwner(claim: V1PersistentVolumeClaim): V1OwnerReference {
  const name = claim.metadata?.name;
  const uid = claim.metadata?.uid;
  if (!name || !uid) throw new Error('a drainer needs a claim read from the API server (name and uid)');
  // No blockOwnerDeletion: the claim's deletion never waits for its drainer
  // (it is deleted only after the Job succeeded), and setting it would need
  // update on persistentvolumeclaims/finalizers.
  return { apiVersion: 'v1', kind: 'PersistentVolumeClaim', name, uid, controller: true };
}

function labels(ep: Defaulted, claim: string): Record<string, string> {
  // Never the StatefulSet's selector labels: the drainer pod must not be
  // counted by the StatefulSet, selected by the Services or the PDB.
  return {
    'app.kubernetes.io/name': 'landfall',
    'app.kubernetes.io/component': 'drainer',
    'app.kubernetes.io/part-of': 'landfall',
    [MANAGED_BY_LABEL]: MANAGED_BY,
    [DRAINER_ENDPOINT_LABEL]: endpointName(ep),
    [DRAINER_CLAIM_LABEL]: claim,
    [ENDPOINT_UID_LABEL]: ep.metadata.uid ?? '',
  };
}

/**
 * No voluntary eviction of the drainer pod: the WAL it delivers is on the
 * node's local volume, and an evicted drainer cannot move (its volume is
 * pinned to the node) — `kubectl drain` or a node-group upgrade would take
 * the node, and the undelivered records with it. The eviction API refuses
 * while the pod runs and `kubectl drain` retries until the Job is done.
 *
 * One per drainer, owned by the claim like the Job: an Endpoint's foreground
 * delete (which removes the Endpoint's own PDB) leaves it in place while the
 * drainer runs. `minAvailable: 1`, not `maxUnavailable: 0`: the disruption
 * controller computes maxUnavailable from the scale of the pods' controller,
 * and a Job has no scale subresource (the PDB would sit in SyncFailed,
 * refusing evictions only as a fail-safe); an integer minAvailable needs no
 * controller. It selects the one drainer pod of this claim: with one pod
 * running, 1 healthy of 1 wanted allows no disruption. A Pending or finished
 * pod is not protected by any PDB (the eviction API lets those go), which is
 * what a drain wants.
 */
export function buildDrainerPdb(ep: Defaulted, claim: V1PersistentVolumeClaim): V1PodDisruptionBudget {
  const claimName = claim.metadata?.name ?? '';
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: {
      name: drainerName(claimName),
      namespace: endpointNamespace(ep),
      labels: labels(ep, claimName),
      ownerReferences: [claimOwner(claim)],
    },
    spec: {
      minAvailable: 1,
      selector: {
        matchLabels: {
          'app.kubernetes.io/component': 'drainer',
          [DRAINER_CLAIM_LABEL]: claimName,
          [ENDPOINT_UID_LABEL]: ep.metadata.uid ?? '',
        },
      },
    },
  };
}

/** The pods' env with the pod name replaced by the instance the volume belonged to. */
function drainerEnv(spec: EndpointSpec, instance: string): V1EnvVar[] {
  return containerEnv(spec).map((e) =>
    e.valueFrom?.fieldRef?.fieldPath === 'metadata.name' ? { name: e.name, value: instance } : e,
  );
}

export function buildDrainerJob(input: DrainerInput): Drainer {
  const { ep, claim, instance } = input;
  const claimName = claim.metadata?.name ?? '';
  const name = drainerName(claimName);
  const namespace = endpointNamespace(ep);
  const owner = claimOwner(claim);
  const meta = (annotations?: Record<string, string>) => ({
    name,
    namespace,
    labels: labels(ep, claimName),
    ...(annotations && Object.keys(annotations).length > 0 ? { annotations } : {}),
    ownerReferences: [owner],
  });

  // The pods' config file as it is now, and the View files (views ride on
  // delivery: without them the drainer would commit segments without their
  // View outputs). No API keys: the drainer never listens.
  const { configMap: nodeConfig, viewsConfigMap } = buildConfigMap(ep, input.views);
  const viewFiles = viewsConfigMap.data ?? {};
  const configMap: V1ConfigMap = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: meta(),
    data: { [CONFIG_FILE]: nodeConfig.data?.[CONFIG_FILE] ?? '', ...viewFiles },
  };
  const viewKeys = Object.keys(viewFiles).sort();
  const iceberg = icebergSecretVolume(ep.spec);

  const irsa = ep.spec.credentials?.irsaRoleArn;
  const serviceAccount: V1ServiceAccount = {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: meta(irsa ? { [IRSA_ANNOTATION]: irsa } : undefined),
    automountServiceAccountToken: false,
  };

  // Pinned to the volume's node: a local PV exists on one node only. The
  // scheduler also honours the PV's own node affinity; the claim's
  // selected-node annotation (WaitForFirstConsumer) says it without the
  // operator reading PersistentVolumes (cluster-scoped).
  const selectedNode = claim.metadata?.annotations?.[SELECTED_NODE_ANNOTATION];
  const pt = ep.spec.podTemplate;
  const job: V1Job = {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: meta(),
    spec: {
      backoffLimit: DRAINER_BACKOFF_LIMIT,
      activeDeadlineSeconds: DRAINER_ACTIVE_DEADLINE_SECONDS,
      // A pod failed by a disruption (an eviction the PDB let through, a
      // preemption, a NoExecute taint, the kubelet's node-pressure eviction)
      // is retried without counting against backoffLimit: only the drain
      // itself failing uses up the retries. Needs restartPolicy Never (below).
      podFailurePolicy: { rules: [{ action: 'Ignore', onPodConditions: [{ type: 'DisruptionTarget' }] }] },
      template: {
        // Karpenter and the Cluster Autoscaler leave the node alone while it drains.
        metadata: { labels: labels(ep, claimName), annotations: disruptionAnnotations() },
        spec: {
          restartPolicy: 'Never',
          serviceAccountName: name,
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          ...(ep.spec.runtimeClassName ? { runtimeClassName: ep.spec.runtimeClassName } : {}),
          securityContext: { ...NODE_POD_SECURITY_CONTEXT },
          ...(selectedNode
            ? {
                affinity: {
                  nodeAffinity: {
                    requiredDuringSchedulingIgnoredDuringExecution: {
                      nodeSelectorTerms: [
                        {
                          matchFields: [{ key: 'metadata.name', operator: 'In', values: [selectedNode] }],
                        },
                      ],
                    },
                  },
                },
              }
            : {}),
          tolerations: [...DRAINER_TOLERATIONS, ...(pt?.tolerations ?? [])],
          ...(pt?.priorityClassName ? { priorityClassName: pt.priorityClassName } : {}),
          ...(pt?.imagePullSecrets?.length ? { imagePullSecrets: pt.imagePullSecrets } : {}),
          containers: [
            {
              name: 'drainer',
              image: ep.spec.image ?? input.nodeImage,
              args: ['drain', '--config', CONFIG_PATH, '--timeout-ms', String(DRAINER_TIMEOUT_MS)],
              env: drainerEnv(ep.spec, instance),
              resources: resources(ep.spec),
              securityContext: {
                ...NODE_CONTAINER_SECURITY_CONTEXT,
                capabilities: { drop: [...NODE_CONTAINER_SECURITY_CONTEXT.capabilities.drop] },
              },
              volumeMounts: [
                { name: DATA_VOLUME, mountPath: DATA_MOUNT },
                { name: 'config', mountPath: CONFIG_MOUNT, readOnly: true },
                { name: 'views', mountPath: VIEWS_MOUNT, readOnly: true },
                // A drain delivers the backlog with its table commits: it needs the catalog's credentials too.
                ...(iceberg !== undefined ? [iceberg.mount] : []),
                { name: 'tmp', mountPath: '/tmp' },
              ],
            },
          ],
          volumes: [
            { name: DATA_VOLUME, persistentVolumeClaim: { claimName } },
            {
              name: 'config',
              configMap: { name, items: [{ key: CONFIG_FILE, path: CONFIG_FILE }] },
            },
            viewKeys.length > 0
              ? { name: 'views', configMap: { name, items: viewKeys.map((k) => ({ key: k, path: k })) } }
              : { name: 'views', emptyDir: { sizeLimit: '1Mi' } },
            ...(iceberg !== undefined ? [iceberg.volume] : []),
            { name: 'tmp', emptyDir: { sizeLimit: '1Gi' } },
          ],
        },
      },
    },
  };
  return { job, configMap, serviceAccount, pdb: buildDrainerPdb(ep, claim) };
}

/** The Job's outcome from its conditions: a Job is done only with Complete=True. */
export function drainerOutcome(job: V1Job | undefined): 'missing' | 'running' | 'succeeded' | 'failed' {
  if (job === undefined) return 'missing';
  const cond = (type: string) => job.status?.conditions?.some((c) => c.type === type && c.status === 'True');
  if (cond('Complete')) return 'succeeded';
  if (cond('Failed')) return 'failed';
  return 'running';
}
