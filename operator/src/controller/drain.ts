// The drain check behind the Endpoint finalizer: may the Endpoint go, or does
// a replica still hold records that are not in S3?
//
// The WAL lives on the replica's PersistentVolumeClaim, not in the pod, so the
// check walks the claims of the StatefulSet:
// - no claim, or a claim that was never bound (phase Pending): no WAL was ever
//   written there, nothing to wait for;
// - a bound claim: its pod must be Running with an IP and report, on
//   GET /v1/status (on its admin port), no sealed segment left in its WAL, nothing pending in
//   delivery and no open segment (adapters/node-status.ts);
//   a pod that is not running, does not answer or reports a backlog blocks;
// - a Lost claim blocks (its data may come back; a human decides).
// Blocking is the safe side: the user can always force with the annotation.
import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { drainBlocker } from '../adapters/node-status.ts';
import type { NodeStatusProbe } from '../adapters/node-status.ts';
import { ADMIN_PORT, DATA_VOLUME } from '../model/names.ts';

export interface DrainInput {
  statefulSetName: string;
  claims: readonly V1PersistentVolumeClaim[];
  pods: readonly V1Pod[];
  /** The operator's status key; undefined when its Secret is gone. */
  apiKey: string | undefined;
  probe: NodeStatusProbe;
  /** The node's admin port (listen.admin) on the pod IP; ADMIN_PORT (tests run a node elsewhere). */
  port?: number;
  /** The nodes serve HTTPS (spec.expose.tls), on the admin port too. */
  tls?: boolean;
}

export interface DrainResult {
  drained: boolean;
  /** One line per replica that blocks, for the Draining condition and events. */
  blockers: string[];
  checked: number;
}

export async function checkDrained(input: DrainInput): Promise<DrainResult> {
  const prefix = `${DATA_VOLUME}-${input.statefulSetName}-`;
  const claims = input.claims
    .filter((c) => c.metadata?.name?.startsWith(prefix) && /^\d+$/.test(c.metadata.name.slice(prefix.length)))
    .sort(
      (a, b) =>
        Number(a.metadata?.name?.slice(prefix.length)) - Number(b.metadata?.name?.slice(prefix.length)),
    );
  const blockers: string[] = [];
  let checked = 0;
  for (const claim of claims) {
    const claimName = claim.metadata?.name ?? '';
    const podName = `${input.statefulSetName}-${claimName.slice(prefix.length)}`;
    const phase = claim.status?.phase ?? 'Pending';
    if (phase === 'Pending') continue;
    checked++;
    if (phase !== 'Bound') {
      blockers.push(`${claimName} is ${phase}: its WAL cannot be checked`);
      continue;
    }
    const pod = input.pods.find((p) => p.metadata?.name === podName);
    const podPhase = pod?.status?.phase ?? 'missing';
    const ip = pod?.status?.podIP;
    if (!pod || podPhase !== 'Running' || !ip) {
      blockers.push(
        `${claimName} holds a WAL but pod ${podName} is ${pod ? podPhase : 'missing'}: cannot read /v1/status`,
      );
      continue;
    }
    if (!input.apiKey) {
      blockers.push(`${podName}: the operator status key Secret is missing`);
      continue;
    }
    try {
      const blocker = drainBlocker(
        await input.probe(
          `${input.tls === true ? 'https' : 'http'}://${ip}:${input.port ?? ADMIN_PORT}`,
          input.apiKey,
        ),
      );
      if (blocker !== undefined) blockers.push(`${podName}: ${blocker}`);
    } catch (err) {
      blockers.push(`${podName}: ${(err as Error).message}`);
    }
  }
  return { drained: blockers.length === 0, blockers, checked };
}
