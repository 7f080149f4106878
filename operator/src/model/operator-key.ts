// The operator's own API key for GET /v1/status and POST/DELETE /v1/drain on
// an Endpoint's nodes (scopes `status drain`: it cannot ingest), derived
// instead of stored:
//
//   key(e) = "lfo_" + base64url(HMAC-SHA256(master, namespace \n name \n uid))
//
// `master` is one random Secret in the operator's own namespace. The nodes get
// only the key's SHA-256 (a `sha256:<hex> status` line, which the node's key
// file format accepts) in the Endpoint's ConfigMap. So the operator needs no
// Secret in any Endpoint namespace: it neither reads nor writes Secrets
// outside its own namespace, and a new Endpoint with the same name (new uid)
// gets a different key.
import { createHash, createHmac } from 'node:crypto';
import type { Endpoint } from '../api/endpoint.ts';
import { endpointName, endpointNamespace } from './names.ts';

/** Bytes of a generated master key; shorter ones are refused. */
export const OPERATOR_MASTER_KEY_BYTES = 32;
/** Key of the master Secret's data. */
export const OPERATOR_MASTER_KEY_FIELD = 'hmac-key';

export function deriveStatusKey(master: Buffer, ep: Endpoint): string {
  if (master.length < OPERATOR_MASTER_KEY_BYTES)
    throw new Error(`operator master key must be at least ${OPERATOR_MASTER_KEY_BYTES} bytes`);
  const uid = ep.metadata.uid;
  if (!uid) throw new Error(`Endpoint ${endpointName(ep)} has no uid (not read from the API server?)`);
  const mac = createHmac('sha256', master)
    .update(`landfall-operator-status-key\n${endpointNamespace(ep)}\n${endpointName(ep)}\n${uid}`)
    .digest('base64url');
  return `lfo_${mac}`;
}

/**
 * The key-file line the nodes read: the key's hash and its scopes. `drain` is
 * never part of a scope-less key's default set on the node: only this key can
 * stop a node from taking writes.
 */
export function statusKeyLine(key: string): string {
  return `sha256:${createHash('sha256').update(key, 'utf8').digest('hex')} status drain\n`;
}
