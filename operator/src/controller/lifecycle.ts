// Scale-down and delete without stranding an acknowledged record (issue 13).
//
// Two mechanisms, used by the Endpoint controller's steps drainScaleDown and
// reclaimVolumes and by its finalizer:
// - drain mode of a live replica: POST /v1/drain makes the node refuse writes,
//   seal and deliver everything; it reports `drain.drained` in /v1/status. A
//   replica that is not Running with an IP is not waited for: its volume is
//   drained by the next mechanism once the pod is gone.
// - the drainer Job of a volume without a pod (model/drainer.ts): `landfall
//   drain` on the claim, on its node. The claim is deleted only after its Job
//   succeeded, and only a claim labelled with this Endpoint's uid.
import type { V1Job, V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { drainBlocker } from '../adapters/node-status.ts';
import type { NodeDrainControl, NodeStatusProbe } from '../adapters/node-status.ts';
import { ENDPOINT_UID_LABEL, ADMIN_PORT, claimOrdinal, drainerName } from '../model/names.ts';
import { drainerOutcome } from '../model/drainer.ts';

/** What one live replica says about draining. */
export type ReplicaDrain =
  | { kind: 'drained' }
  /** Not Running with an IP, or terminating: the volume path covers it. */
  | { kind: 'gone'; why: string }
  | { kind: 'waiting'; why: string };

export interface NodeAccess {
  apiKey: string | undefined;
  control: NodeDrainControl;
  probe: NodeStatusProbe;
  tls: boolean;
  /** The node's port on the pod IP (tests run nodes elsewhere). */
  port?: number;
}

function baseUrl(pod: V1Pod, access: NodeAccess): string {
  return `${access.tls ? 'https' : 'http'}://${pod.status?.podIP ?? ''}:${access.port ?? ADMIN_PORT}`;
}

/** Running, with an IP, not being deleted: a node that can be asked. */
export function reachable(pod: V1Pod | undefined): boolean {
  return (
    pod !== undefined &&
    pod.status?.phase === 'Running' &&
    !!pod.status.podIP &&
    pod.metadata?.deletionTimestamp === undefined
  );
}

/** Puts one replica in drain mode (again: drain mode does not survive a restart) and reads its state. */
export async function drainReplica(pod: V1Pod | undefined, access: NodeAccess): Promise<ReplicaDrain> {
  if (!reachable(pod)) {
    const why =
      pod === undefined
        ? 'pod missing'
        : pod.metadata?.deletionTimestamp !== undefined
          ? 'pod terminating'
          : `pod ${pod.status?.phase ?? 'Unknown'}${pod.status?.podIP ? '' : ', no IP'}`;
    return { kind: 'gone', why };
  }
  if (!access.apiKey) return { kind: 'waiting', why: 'the operator status key is missing' };
  const url = baseUrl(pod as V1Pod, access);
  try {
    await access.control.drain(url, access.apiKey);
    const state = await access.probe(url, access.apiKey);
    if (state.drained === true) return { kind: 'drained' };
    if (state.drained === undefined)
      return { kind: 'waiting', why: 'the node reports no drain mode (image older than the operator)' };
    return { kind: 'waiting', why: drainBlocker(state) ?? 'draining' };
  } catch (err) {
    return { kind: 'waiting', why: (err as Error).message };
  }
}

/** Leaves drain mode (a reverted scale-down); a pod that cannot be asked needs nothing: a restart leaves drain mode. */
export async function undrainReplica(
  pod: V1Pod | undefined,
  access: NodeAccess,
): Promise<string | undefined> {
  if (!reachable(pod)) return undefined;
  if (!access.apiKey) return 'the operator status key is missing';
  try {
    await access.control.undrain(baseUrl(pod as V1Pod, access), access.apiKey);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * Replicas in drain mode that nobody wants drained: a node cordoned, then
 * uncordoned mid-drain; or an operator that crashed between a scale-down's
 * POST /v1/drain and its annotation, then saw the scale-down reverted. Without
 * a DELETE /v1/drain such a replica refuses writes until it restarts. Asked
 * are only pods that are Running and not Ready (drain mode fails /readyz), so
 * a healthy Endpoint costs no call. Left alone: an ordinal a scale-down drains
 * (>= desired), a pod on a leaving node or terminating, and one whose claim is
 * being deleted (a node drain under way: controller/node-drain.ts).
 */
export async function releaseStrayDrains(input: {
  pods: readonly V1Pod[];
  statefulSetName: string;
  desired: number;
  /** Why the pod's node is leaving (controller/node-drain.ts nodeLeaving), or undefined. */
  leaving: (nodeName: string) => string | undefined;
  claimDeleting: (pod: V1Pod) => Promise<boolean>;
  access: NodeAccess;
}): Promise<{ released: string[]; failed: string[] }> {
  const released: string[] = [];
  const failed: string[] = [];
  const { access } = input;
  if (!access.apiKey) return { released, failed };
  for (const pod of input.pods) {
    const name = pod.metadata?.name ?? '';
    const ordinal = name.startsWith(`${input.statefulSetName}-`)
      ? Number(name.slice(input.statefulSetName.length + 1))
      : NaN;
    if (!Number.isInteger(ordinal) || ordinal >= input.desired || !reachable(pod)) continue;
    if (pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true) continue;
    if (input.leaving(pod.spec?.nodeName ?? '') !== undefined) continue;
    const url = baseUrl(pod, access);
    let draining: boolean | undefined;
    try {
      draining = (await access.probe(url, access.apiKey)).draining;
    } catch {
      continue; // starting, or not answering: not Ready for another reason
    }
    if (draining !== true || (await input.claimDeleting(pod))) continue;
    try {
      await access.control.undrain(url, access.apiKey);
      released.push(name);
    } catch (err) {
      failed.push(`${name}: in drain mode though wanted, DELETE /v1/drain failed: ${(err as Error).message}`);
    }
  }
  return { released, failed };
}

export interface ScalePlanInput {
  desired: number;
  /** The StatefulSet's spec.replicas now. */
  current: number;
  /** The annotation: ordinals >= this were told to drain; undefined: none. */
  drainFrom: number | undefined;
  /** Per ordinal in [desired, current), when scaling down. */
  replicas: ReadonlyMap<number, ReplicaDrain>;
  /** Ordinals >= current whose volume is being reclaimed (drainer Job, claim being deleted): no pod may start there. */
  reclaiming: readonly number[];
  /** Why an ordinal of `reclaiming` is held (scaleUpClaim), for the Draining condition. */
  holds?: ReadonlyMap<number, string>;
  /** Ordinals in [drainFrom, min(desired, current)) whose DELETE /v1/drain failed. */
  undrainFailed: boolean;
}

export interface ScalePlan {
  /** The StatefulSet's replicas to apply. */
  replicas: number;
  /** The annotation to apply; undefined: none. */
  drainFrom: number | undefined;
  /** Ordinals still waited for, with why. */
  waiting: string[];
}

/**
 * The replicas to apply while scaling. Down: the StatefulSet removes the
 * highest ordinals first, so it is lowered to just above the highest ordinal
 * that is not drained yet (pods that cannot be asked are not waited for).
 * Up: never over an ordinal whose volume a drainer still holds (two writers
 * on one WAL), so capped at the lowest such ordinal until its claim is gone.
 */
export function planScale(input: ScalePlanInput): ScalePlan {
  const { desired, current } = input;
  const waiting: string[] = [];
  let replicas = desired;
  if (desired < current) {
    for (let k = current - 1; k >= desired; k--) {
      const r = input.replicas.get(k);
      if (r?.kind === 'waiting') {
        replicas = Math.max(replicas, k + 1);
        waiting.push(`ordinal ${k}: ${r.why}`);
      }
    }
    waiting.reverse();
  } else if (desired > current) {
    const held = input.reclaiming.filter((k) => k >= current && k < desired).sort((a, b) => a - b)[0];
    if (held !== undefined) {
      replicas = held;
      const why = input.holds?.get(held) ?? 'its volume is being drained by a drainer Job';
      waiting.push(`ordinal ${held}: ${why}; scaling up to it afterwards`);
    }
  }
  const drainFrom =
    input.undrainFailed && input.drainFrom !== undefined
      ? Math.min(input.drainFrom, desired)
      : desired < current
        ? desired
        : undefined;
  return { replicas, drainFrom, waiting };
}

/** On a scale-up, what the drainer Job of an ordinal wanted again means for its pod. */
export type ScaleUpClaim =
  /** Nothing holds the volume: the pod may start on it. */
  | { kind: 'free' }
  /** A drainer may still write the volume (or the claim is going): no pod there yet. */
  | { kind: 'held'; why: string }
  /** A finished drainer: its Job goes (it would vouch at a later scale-down for a WAL the pod writes to), then the pod may start. */
  | { kind: 'deleteJob'; why: string };

/**
 * A scale-up never starts a pod on a volume a drainer may still write (two
 * writers on one WAL: the WAL has no lock). `livePods`: the claim's drainer
 * pods not Succeeded or Failed (terminating ones count), read live, whatever
 * Job they belong to: a Job deleted with background propagation (`kubectl
 * delete job`) leaves its pod running or terminating. While one is alive the
 * ordinal is held, whatever the Job says. A succeeded drainer holds nothing
 * then. A failed one (S3 down past its retries, its deadline) holds nothing
 * either once none of its pods is alive (also the Job's own active and
 * terminating counts): the ingest pod then delivers the WAL itself. Waiting
 * for a human to delete the Job would keep the Endpoint below its replicas
 * for nothing.
 */
export function scaleUpClaim(input: {
  claim: V1PersistentVolumeClaim;
  job: V1Job | undefined;
  livePods: number;
}): ScaleUpClaim {
  const name = input.claim.metadata?.name ?? '';
  if (input.claim.metadata?.deletionTimestamp !== undefined)
    return { kind: 'held', why: `${name} is being deleted` };
  const { job } = input;
  const outcome = drainerOutcome(job);
  const jobName = job?.metadata?.name ?? drainerName(name);
  if (outcome === 'running')
    return { kind: 'held', why: `drainer Job ${jobName} is delivering what ${name} holds` };
  if (input.livePods > 0)
    return {
      kind: 'held',
      why:
        outcome === 'missing'
          ? `${input.livePods} drainer pod(s) of ${name} still alive though its Job is gone (deleted with background propagation?): waiting for them to end`
          : `drainer Job ${jobName} ${outcome === 'succeeded' ? 'succeeded' : 'failed'} but a pod of it is still alive on ${name}`,
    };
  switch (outcome) {
    case 'missing':
      return { kind: 'free' };
    case 'succeeded':
      return { kind: 'deleteJob', why: `drainer Job ${jobName} succeeded` };
    case 'failed': {
      const alive = (job?.status?.active ?? 0) + (job?.status?.terminating ?? 0);
      if (alive > 0)
        return {
          kind: 'held',
          why: `drainer Job ${jobName} failed but a pod of it is still alive on ${name}`,
        };
      const c = job?.status?.conditions?.find((x) => x.type === 'Failed' && x.status === 'True');
      return {
        kind: 'deleteJob',
        why: `drainer Job ${jobName} failed (${c?.reason ?? 'Failed'}) and none of its pods is alive: deleted, ${name} goes back to its pod, which delivers the WAL itself`,
      };
    }
  }
}

/** The claims of this Endpoint's StatefulSet: uid-labelled, or unlabelled and younger than the Endpoint (volumes.ts). */
export function ownClaims(input: {
  claims: readonly V1PersistentVolumeClaim[];
  statefulSetName: string;
  uid: string;
  endpointCreated: string | Date | undefined;
}): { claim: V1PersistentVolumeClaim; ordinal: number; labelled: boolean }[] {
  const created = input.endpointCreated === undefined ? NaN : new Date(input.endpointCreated).getTime();
  const out: { claim: V1PersistentVolumeClaim; ordinal: number; labelled: boolean }[] = [];
  for (const c of input.claims) {
    const ordinal = claimOrdinal(input.statefulSetName, c.metadata?.name ?? '');
    if (ordinal === undefined) continue;
    const uid = c.metadata?.labels?.[ENDPOINT_UID_LABEL];
    if (uid !== undefined) {
      if (uid === input.uid) out.push({ claim: c, ordinal, labelled: true });
    } else {
      const t = c.metadata?.creationTimestamp;
      if (t !== undefined && !(new Date(t).getTime() < created))
        out.push({ claim: c, ordinal, labelled: false });
    }
  }
  return out.sort((a, b) => a.ordinal - b.ordinal);
}

/** What to do with one claim that has no pod to serve it. */
export type ReclaimAction =
  | { kind: 'wait'; why: string }
  | { kind: 'startDrainer' }
  | { kind: 'deleteClaim'; why: string }
  /** Done: drained, but the claim is not labelled with the uid, so it is kept. */
  | { kind: 'keep'; why: string }
  | { kind: 'blocked'; why: string }
  /**
   * The claim is being deleted and its drainer succeeded: the Job's finished
   * pod still references the claim, and pvc-protection keeps a claim that a
   * pod references (also a Succeeded one): delete the Job (its pods with it).
   */
  | { kind: 'deleteJob'; why: string };

export function reclaimAction(input: {
  claim: V1PersistentVolumeClaim;
  labelled: boolean;
  /** The pod of the claim's ordinal exists (running or terminating). */
  podExists: boolean;
  job: V1Job | undefined;
  /** Drainer pods of the claim not Succeeded or Failed (terminating counts), read live; needed only when its Job is missing. */
  liveDrainerPods?: number;
}): ReclaimAction {
  const { claim } = input;
  const name = claim.metadata?.name ?? '';
  if (claim.metadata?.deletionTimestamp !== undefined)
    return drainerOutcome(input.job) === 'succeeded'
      ? { kind: 'deleteJob', why: `${name} is being deleted: its finished drainer Job goes first` }
      : { kind: 'wait', why: `${name} is being deleted` };
  if (input.podExists) return { kind: 'wait', why: `${name}: its pod is still there (terminating)` };
  const phase = claim.status?.phase ?? 'Pending';
  const job = drainerName(name);
  if (phase === 'Pending')
    // Never bound: no WAL was ever written on it.
    return input.labelled
      ? { kind: 'deleteClaim', why: `${name} was never bound: nothing to drain` }
      : { kind: 'keep', why: `${name} was never bound` };
  if (phase !== 'Bound')
    return { kind: 'blocked', why: `${name} is ${phase}: its WAL cannot be drained; a human decides` };
  const owner = input.job?.metadata?.ownerReferences?.find((r) => r.controller)?.uid;
  if (input.job !== undefined && owner !== claim.metadata?.uid)
    return {
      kind: 'wait',
      why: `Job ${job} belongs to an earlier claim ${name}: waiting for the garbage collector`,
    };
  switch (drainerOutcome(input.job)) {
    case 'missing':
      // A Job deleted with background propagation leaves its pod running (or
      // terminating) on the volume: a second drainer would be a second writer.
      return (input.liveDrainerPods ?? 0) > 0
        ? {
            kind: 'wait',
            why: `${name}: ${input.liveDrainerPods ?? 0} drainer pod(s) still alive though Job ${job} is gone: a new drainer starts after they end`,
          }
        : { kind: 'startDrainer' };
    case 'running':
      return { kind: 'wait', why: `drainer Job ${job} is delivering what ${name} holds` };
    case 'failed': {
      const c = input.job?.status?.conditions?.find((x) => x.type === 'Failed');
      return {
        kind: 'blocked',
        why: `drainer Job ${job} failed (${c?.reason ?? 'Failed'}: ${c?.message ?? ''}); ${name} is kept. See kubectl logs job/${job}; delete the Job to try again`,
      };
    }
    case 'succeeded':
      return input.labelled
        ? { kind: 'deleteClaim', why: `drainer Job ${job} succeeded: ${name} holds nothing undelivered` }
        : {
            kind: 'keep',
            why: `drainer Job ${job} succeeded; ${name} has no ${ENDPOINT_UID_LABEL} label (made by an older operator) and is kept`,
          };
  }
}

/** How a claim of the Endpoint ended, as far as the finalizer is concerned (CLAIMS_ANNOTATION). */
export type ClaimFate = 'pending' | 'drained' | 'undrained';
/** `<claim name>/<claim uid>` → its fate. */
export type ClaimLedger = Record<string, ClaimFate>;

export function claimKey(claim: V1PersistentVolumeClaim): string {
  return `${claim.metadata?.name ?? ''}/${claim.metadata?.uid ?? ''}`;
}

/** The annotation's ledger; anything unreadable is an empty one. */
export function parseClaimLedger(text: string | undefined): ClaimLedger {
  if (text === undefined) return {};
  try {
    const v: unknown = JSON.parse(text);
    const out: ClaimLedger = {};
    if (v !== null && typeof v === 'object' && !Array.isArray(v))
      for (const [k, f] of Object.entries(v as Record<string, unknown>))
        if (f === 'pending' || f === 'drained' || f === 'undrained') out[k] = f;
    return out;
  } catch {
    return {};
  }
}

/**
 * The operator is about to delete a claim it drained: "drained", so a
 * finalizer that later sees the claim terminating, or gone, does not take it
 * for one deleted under it. Entries "drained" of claims no longer listed
 * (`present`: keys of every claim listed now) are dropped: nothing needs them.
 */
export function markClaimDrained(
  ledger: ClaimLedger,
  claim: V1PersistentVolumeClaim,
  present?: ReadonlySet<string>,
): ClaimLedger {
  const out: ClaimLedger = {};
  for (const [k, f] of Object.entries(ledger))
    if (!(f === 'drained' && present !== undefined && !present.has(k))) out[k] = f;
  out[claimKey(claim)] = 'drained';
  return out;
}

/**
 * A Bound claim left without a pod (a drainer starts, runs, failed, or is
 * waited for) is "pending" from then on, not only once the finalizer sees
 * it: a namespace deletion may delete it before the finalizer's first poll,
 * and a claim the ledger never knew would end "Drained". Returns the new
 * ledger, or undefined when the claim is known already (one write per claim).
 */
export function markClaimPending(
  ledger: ClaimLedger,
  claim: V1PersistentVolumeClaim,
): ClaimLedger | undefined {
  if (claim.status?.phase !== 'Bound') return undefined;
  const key = claimKey(claim);
  if (ledger[key] !== undefined) return undefined;
  return { ...ledger, [key]: 'pending' };
}

/**
 * A scale-up gave these claims back to their pods: their "pending" entries
 * go (the pods deliver what they hold). Returns the new ledger, or undefined
 * when nothing changed.
 */
export function dropPendingClaims(
  ledger: ClaimLedger,
  claims: readonly V1PersistentVolumeClaim[],
): ClaimLedger | undefined {
  const out: ClaimLedger = { ...ledger };
  let changed = false;
  for (const c of claims) {
    const key = claimKey(c);
    if (out[key] !== 'pending') continue;
    delete out[key];
    changed = true;
  }
  return changed ? out : undefined;
}

/**
 * The finalizer's account of every claim it has seen (the deleting
 * Endpoint's): a claim is "drained" only by its drainer's success (or the
 * operator's own delete after it, markClaimDrained). One that is deleted by
 * someone else before that — terminating without a drainer at work, or gone
 * while still "pending" — is "undrained": a namespace deletion deletes the
 * claims itself, and no drainer can be created in a terminating namespace.
 * A claim terminating while its drainer still runs stays "pending": the
 * drainer may yet succeed (pvc-protection keeps the claim for its pod). A
 * claim never bound held nothing and is not accounted for.
 */
export function settleClaims(input: {
  ledger: ClaimLedger;
  claims: readonly { claim: V1PersistentVolumeClaim; job: V1Job | undefined }[];
}): { ledger: ClaimLedger; undrained: string[]; changed: boolean } {
  const ledger: ClaimLedger = { ...input.ledger };
  const undrained: string[] = [];
  let changed = false;
  const present = new Set<string>();
  for (const { claim, job } of input.claims) {
    const key = claimKey(claim);
    present.add(key);
    // Never bound: no WAL was ever written on it, nothing to account for (yet).
    if ((claim.status?.phase ?? 'Pending') === 'Pending' && ledger[key] === undefined) continue;
    if (ledger[key] === undefined) {
      ledger[key] = 'pending';
      changed = true;
    }
    if (ledger[key] !== 'pending' || claim.metadata?.deletionTimestamp === undefined) continue;
    const owned = job?.metadata?.ownerReferences?.find((r) => r.controller)?.uid === claim.metadata?.uid;
    const outcome = owned ? drainerOutcome(job) : 'missing';
    if (outcome === 'running') continue;
    ledger[key] = outcome === 'succeeded' ? 'drained' : 'undrained';
    if (outcome !== 'succeeded') undrained.push(claim.metadata?.name ?? key);
    changed = true;
  }
  for (const [key, fate] of Object.entries(ledger)) {
    if (present.has(key)) continue;
    if (fate === 'pending') {
      ledger[key] = 'undrained';
      undrained.push(key.slice(0, key.lastIndexOf('/')));
      changed = true;
    } else if (fate === 'drained') {
      delete ledger[key];
      changed = true;
    }
  }
  return { ledger, undrained, changed };
}

/** Names of the claims the ledger reports "undrained". */
export function undrainedClaims(ledger: ClaimLedger): string[] {
  return Object.entries(ledger)
    .filter(([, f]) => f === 'undrained')
    .map(([k]) => k.slice(0, k.lastIndexOf('/')))
    .sort();
}
