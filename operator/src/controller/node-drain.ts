// Node drains (kubectl drain, managed node-group upgrades, Karpenter, the
// Cluster Autoscaler) without losing an acknowledged record: the Strimzi
// Drain Cleaner pattern, done by the operator itself.
//
// An ingest pod sits on a local PV pinned to its node. Evicted, it could not
// move, and whatever it had not delivered would leave with the node. So the
// PDB allows no eviction (model/resources.ts buildPdb): `kubectl drain` keeps
// retrying. Meanwhile this step sees that the node is leaving (cordoned:
// spec.unschedulable, which `kubectl drain` sets first; or tainted by
// Karpenter / the Cluster Autoscaler before they drain) and, one replica of the
// Endpoint at a time:
//   1. POST /v1/drain to the pod: it refuses writes (producers retry on the
//      other replicas), seals and delivers everything now;
//   2. polls until the pod reports drained (its own `drained` flag and the
//      WAL/delivery figures of /v1/status both say nothing is left);
//   3. deletes the pod's claim, then the pod (uid preconditions): claim
//      first, or the StatefulSet could recreate the pod on the old claim,
//      pinned to the leaving node. The claim stays Terminating until the pod
//      is gone (pvc-protection); the StatefulSet then creates the pod and a
//      new claim, which binds a free PV only once the pod is scheduled
//      (WaitForFirstConsumer), and the scheduler filters out a cordoned or
//      tainted node: a fresh WAL, a new epoch, elsewhere. The eviction
//      `kubectl drain` retries then finds the pod gone and completes.
// A pod that cannot be asked (not Running, no IP, no answer) is never touched:
// the condition says why, and the drain waits for a human (docs/operations.md).
// A node uncordoned before step 3 leaves its replica in drain mode: the
// Endpoint's last step (lifecycle.ts releaseStrayDrains) takes it out.
// All state is in the cluster (the cordon, the node's drain mode, the claim's
// deletionTimestamp), so an operator restarted mid-way picks up where the old
// one was.
import type { V1Node, V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import type { NodeDrainClient } from '../adapters/node-drain.ts';
import { DATA_VOLUME, ADMIN_PORT } from '../model/names.ts';
import type { ConditionInput } from './conditions.ts';

export const NODE_DRAIN_CONDITION = 'NodeDrain';

/** NoSchedule taints an autoscaler puts on a node just before it drains and removes it. */
const LEAVING_TAINTS: Record<string, string> = {
  'karpenter.sh/disrupted': 'Karpenter is disrupting it',
  'karpenter.sh/disruption': 'Karpenter is disrupting it',
  ToBeDeletedByClusterAutoscaler: 'the Cluster Autoscaler is removing it',
};

/** Why the node is being emptied, or undefined when it is not. */
export function nodeLeaving(node: V1Node | undefined): string | undefined {
  if (node === undefined) return undefined;
  if (node.spec?.unschedulable === true) return 'cordoned';
  for (const t of node.spec?.taints ?? []) {
    const why = t.effect === 'NoSchedule' ? LEAVING_TAINTS[t.key] : undefined;
    if (why !== undefined) return `tainted ${t.key} (${why})`;
  }
  return undefined;
}

function ordinal(pod: V1Pod): number {
  const m = /-(\d+)$/.exec(pod.metadata?.name ?? '');
  return m?.[1] === undefined ? Number.MAX_SAFE_INTEGER : Number(m[1]);
}

function isReady(pod: V1Pod): boolean {
  return pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
}

/** Kubernetes writes, done by the caller (controller/endpoint.ts) with its client. */
export interface NodeDrainEffects {
  getClaim(name: string): Promise<V1PersistentVolumeClaim | undefined>;
  /** Deletes only the object with this uid (a 404 is success). */
  deleteClaim(name: string, uid: string): Promise<void>;
  deletePod(name: string, uid: string): Promise<void>;
  event(type: 'Normal' | 'Warning', reason: string, message: string): void;
}

export interface NodeDrainInput {
  /** The Endpoint's pods. */
  pods: readonly V1Pod[];
  node(name: string): V1Node | undefined;
  /** The operator's key for this Endpoint (scopes status + drain). */
  apiKey: string;
  client: NodeDrainClient;
  tls: boolean;
  /** The node's port on the pod IP (tests run a node elsewhere). */
  port?: number;
  effects: NodeDrainEffects;
}

export interface NodeDrainOutcome {
  /** The NodeDrain condition (poll again soon); undefined when no pod of the Endpoint is on a leaving node. */
  condition: ConditionInput | undefined;
}

/** One step of the flow for one Endpoint; call it on every reconcile. */
export async function drainLeavingNodes(input: NodeDrainInput): Promise<NodeDrainOutcome> {
  const leaving = new Map<string, string>();
  for (const p of input.pods) {
    const nodeName = p.spec?.nodeName;
    if (nodeName === undefined || leaving.has(nodeName)) continue;
    const why = nodeLeaving(input.node(nodeName));
    if (why !== undefined) leaving.set(nodeName, why);
  }
  const onLeaving = input.pods
    .filter((p) => leaving.has(p.spec?.nodeName ?? ''))
    .sort((a, b) => ordinal(a) - ordinal(b));
  if (onLeaving.length === 0) return { condition: undefined };
  const where = (p: V1Pod): string => {
    const n = p.spec?.nodeName ?? '';
    return `node ${n} is ${leaving.get(n) ?? 'leaving'}`;
  };
  const condition = (reason: string, message: string): NodeDrainOutcome => ({
    condition: { type: NODE_DRAIN_CONDITION, status: 'True', reason, message },
  });

  // One replica at a time: a pod already on its way out is waited for.
  const terminating = onLeaving.find((p) => p.metadata?.deletionTimestamp !== undefined);
  if (terminating !== undefined)
    return condition(
      'ReplicaTerminating',
      `${where(terminating)}: pod ${terminating.metadata?.name ?? ''} is drained and terminating; its replacement gets a new volume on a schedulable node`,
    );
  // ... and so is a replacement still starting on another node, unless it
  // crash-loops or cannot be scheduled at all (a one-node cluster): waiting for
  // it would then block the drain for good.
  const starting = input.pods.find(
    (p) =>
      !leaving.has(p.spec?.nodeName ?? '') &&
      p.spec?.nodeName !== undefined &&
      p.metadata?.deletionTimestamp === undefined &&
      !isReady(p) &&
      (p.status?.containerStatuses ?? []).every((c) => (c.restartCount ?? 0) === 0),
  );

  const scheme = input.tls ? 'https' : 'http';
  const unreachable: string[] = [];
  const reachable: { pod: V1Pod; url: string; draining: boolean; backlog: string | undefined }[] = [];
  for (const p of onLeaving) {
    const name = p.metadata?.name ?? '';
    const ip = p.status?.podIP;
    if (p.status?.phase !== 'Running' || ip === undefined || ip === '') {
      unreachable.push(`pod ${name} is ${p.status?.phase ?? 'Unknown'}${ip ? '' : ' with no IP'}`);
      continue;
    }
    const url = `${scheme}://${ip}:${input.port ?? ADMIN_PORT}`;
    try {
      const s = await input.client.status(url, input.apiKey);
      reachable.push({ pod: p, url, draining: s.drain?.draining === true, backlog: s.backlog });
    } catch (err) {
      unreachable.push(`pod ${name} does not answer: ${(err as Error).message.slice(0, 200)}`);
    }
  }
  const notTouched =
    unreachable.length > 0
      ? `; not drained, nothing deleted: ${unreachable.join('; ')} (its volume stays until the pod can be asked; see docs/operations.md)`
      : '';
  // The one already draining (an operator restarted mid-way), else the lowest ordinal.
  const active = reachable.find((r) => r.draining) ?? reachable[0];
  if (active === undefined) {
    const first = onLeaving[0] as V1Pod;
    input.effects.event('Warning', 'NodeDrainBlocked', `${where(first)}${notTouched.replace(/^; /, ': ')}`);
    return condition('ReplicaUnreachable', `${where(first)}${notTouched.replace(/^; /, ': ')}`);
  }
  const podName = active.pod.metadata?.name ?? '';
  if (!active.draining && starting !== undefined)
    return condition(
      'WaitingForReplacement',
      `${where(active.pod)}: waiting for pod ${starting.metadata?.name ?? ''} to become Ready before draining ${podName} (one replica at a time)${notTouched}`,
    );

  let mode;
  try {
    mode = await input.client.drain(active.url, input.apiKey);
  } catch (err) {
    return condition(
      'DrainRequestFailed',
      `${where(active.pod)}: POST /v1/drain to pod ${podName} failed: ${(err as Error).message.slice(0, 200)}; nothing deleted${notTouched}`,
    );
  }
  if (!active.draining)
    input.effects.event(
      'Normal',
      'NodeDrainStarted',
      `${where(active.pod)}: draining pod ${podName} (writes refused, everything delivered) before its volume is replaced`,
    );
  // Both the node's own flag and the figures behind it; either says "not yet": wait.
  const after = mode.drained ? await input.client.status(active.url, input.apiKey) : undefined;
  if (!mode.drained || after?.drain?.drained !== true || after.backlog !== undefined) {
    const left = after?.backlog ?? active.backlog;
    return condition(
      'DrainingReplica',
      `${where(active.pod)}: pod ${podName} is draining, writes refused${left !== undefined ? `; left: ${left}` : ''}${notTouched}`,
    );
  }

  const claimName = `${DATA_VOLUME}-${podName}`;
  const claim = await input.effects.getClaim(claimName);
  if (claim?.metadata?.uid !== undefined && claim.metadata.deletionTimestamp === undefined)
    await input.effects.deleteClaim(claimName, claim.metadata.uid);
  await input.effects.deletePod(podName, active.pod.metadata?.uid ?? '');
  input.effects.event(
    'Normal',
    'ReplicaMoved',
    `${where(active.pod)}: pod ${podName} drained, nothing undelivered; deleted claim ${claimName}${claim?.spec?.volumeName ? ` (PV ${claim.spec.volumeName})` : ''} and the pod: the StatefulSet recreates it with a new volume on a schedulable node`,
  );
  return condition(
    'ReplicaTerminating',
    `${where(active.pod)}: pod ${podName} drained; its claim and the pod are deleted, the replacement gets a new volume${notTouched}`,
  );
}
