// Which WAL claims a new or scaled StatefulSet would adopt although they are
// not this Endpoint's. The StatefulSet controller adopts claims by name
// (data-<e>-ingest-<n>) whatever their labels, so an Endpoint deleted and
// created again under the same name would mount the old one's volumes —
// whatever its bucket, bypassing bucket immutability, and mixing two commit
// logs in one WAL. A claim is foreign when
// - it carries the landfall.dev/endpoint-uid label with another uid, or
// - it has no such label (made by an operator before the label existed) and
//   is older than this Endpoint: nothing of this Endpoint can have created it.
// Only ordinals below spec.replicas matter: the others are not mounted.
import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { DATA_VOLUME, ENDPOINT_UID_LABEL } from '../model/names.ts';

export interface ForeignClaim {
  name: string;
  /** The other Endpoint's uid, or undefined for an unlabelled claim older than this Endpoint. */
  uid: string | undefined;
}

function time(t: string | Date | undefined): number {
  return t === undefined ? NaN : new Date(t).getTime();
}

export function foreignClaims(input: {
  claims: readonly V1PersistentVolumeClaim[];
  statefulSetName: string;
  replicas: number;
  uid: string;
  endpointCreated: string | Date | undefined;
}): ForeignClaim[] {
  const prefix = `${DATA_VOLUME}-${input.statefulSetName}-`;
  const created = time(input.endpointCreated);
  const out: ForeignClaim[] = [];
  for (const c of input.claims) {
    const name = c.metadata?.name ?? '';
    const ordinal = name.startsWith(prefix) ? name.slice(prefix.length) : '';
    if (!/^\d+$/.test(ordinal) || Number(ordinal) >= input.replicas) continue;
    const uid = c.metadata?.labels?.[ENDPOINT_UID_LABEL];
    if (uid !== undefined) {
      if (uid !== input.uid) out.push({ name, uid });
    } else if (time(c.metadata?.creationTimestamp) < created) {
      out.push({ name, uid: undefined });
    }
  }
  return out.sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
}
