// ADAPTER: what the operator reads from an ingest node's GET /v1/status to
// decide that a replica holds nothing undelivered. The node serves the status
// JSON (ingest-node/src/http/server.ts, `wal` from walStatsJson; `delivery`
// from the pipeline, ingest-node/src/delivery/pipeline.ts status()). The
// fields the operator relies on:
//   wal.openSegmentBytes      bytes of the open (unsealed) segment; 0 when none
//                             is open (one is created only to take records)
//   wal.sealedSegments        sealed segments still in the WAL: not delivered
//                             yet, or delivered and not yet deleted. It also
//                             covers the moment between a seal and the
//                             pipeline learning of it.
//   delivery.segmentsPending  sealed segments the pipeline has not committed
//                             (absent when the node has no delivery target)
//   delivery.lastError        the last delivery failure, for the message
//   drain.draining/.drained   drain mode (POST /v1/drain): drained is true only
//                             when draining and nothing is left to deliver;
//                             absent on a node that predates drain mode
// A replica is drained when all three are 0. The operator never configures
// retention of delivered segments, so sealedSegments falls to 0 once every
// marker is written. Segments the pipeline quarantined (corrupt) leave the
// WAL's list and do not block; they stay in the retained volume's quarantine/.
// /v1/status needs an API key with the `status` scope (/v1/drain: `drain`):
// the operator derives its own key (model/operator-key.ts) and the nodes get
// only its hash, in the Endpoint's ConfigMap (see model/resources.ts).
import { Agent, request } from 'undici';

export interface NodeDrainState {
  /** wal.openSegmentBytes */
  openSegmentBytes: number;
  /** wal.sealedSegments */
  sealedSegments: number;
  /** delivery.segmentsPending; undefined when the node delivers nowhere. */
  segmentsPending: number | undefined;
  /** delivery.lastError, when the pipeline reports one. */
  lastError?: string;
  /** drain.draining; undefined when the node has no drain mode (older image). */
  draining?: boolean;
  /** drain.drained: draining and nothing left to deliver. */
  drained?: boolean;
}

export function parseNodeStatus(body: unknown): NodeDrainState {
  const b = body as { wal?: Record<string, unknown>; delivery?: Record<string, unknown> } | undefined;
  const num = (section: Record<string, unknown> | undefined, key: string, where: string): number => {
    const v = section?.[key];
    if (typeof v !== 'number' || !Number.isFinite(v))
      throw new Error(`/v1/status has no numeric ${where}.${key}`);
    return v;
  };
  const state: NodeDrainState = {
    openSegmentBytes: num(b?.wal, 'openSegmentBytes', 'wal'),
    sealedSegments: num(b?.wal, 'sealedSegments', 'wal'),
    segmentsPending: b?.delivery === undefined ? undefined : num(b.delivery, 'segmentsPending', 'delivery'),
  };
  const drain = (body as { drain?: Record<string, unknown> } | undefined)?.drain;
  if (typeof drain?.['draining'] === 'boolean') state.draining = drain['draining'];
  if (typeof drain?.['drained'] === 'boolean') state.drained = drain['drained'];
  const err = b?.delivery?.lastError;
  if (typeof err === 'string' && err !== '') state.lastError = err;
  else if (
    err !== null &&
    typeof err === 'object' &&
    typeof (err as { message?: unknown }).message === 'string'
  )
    state.lastError = (err as { message: string }).message;
  return state;
}

/** Undefined when drained; else why not, in one line. */
export function drainBlocker(s: NodeDrainState): string | undefined {
  const pending = Math.max(s.sealedSegments, s.segmentsPending ?? 0);
  if (pending === 0 && s.openSegmentBytes === 0) return undefined;
  const parts: string[] = [];
  if (pending > 0) parts.push(`${pending} sealed segment(s) not delivered`);
  if (s.openSegmentBytes > 0) parts.push(`${s.openSegmentBytes} bytes in the open segment (sealed on age)`);
  if (s.segmentsPending === undefined) parts.push('no delivery target configured');
  else if (s.lastError !== undefined) parts.push(`last delivery error: ${s.lastError.slice(0, 300)}`);
  return parts.join(', ');
}

let podAgent: Agent | undefined;
/**
 * Pods are reached by IP, which no certificate names, and the operator cannot
 * read the Endpoint's TLS Secret (it touches no Secrets of users): the
 * connection is encrypted but the node is not authenticated. What is sent is
 * the operator's own key (scopes status and drain): it can read /v1/status and put
 * the node in drain mode, never write records.
 */
function podTlsAgent(): Agent {
  podAgent ??= new Agent({ connect: { rejectUnauthorized: false } });
  return podAgent;
}

export type NodeStatusProbe = (baseUrl: string, apiKey: string) => Promise<NodeDrainState>;

/**
 * Largest answer the operator reads from a node: a status is a few KiB (a few hundred views: well under this). The
 * pod runs an image the Endpoint's author may choose, and one operator serves
 * every Endpoint: an endless answer must not take its memory.
 */
export const NODE_REPLY_BYTES_MAX = 4 * 1024 * 1024;

/** The body as text, refused (and the connection dropped) past `bytesMax`. */
async function boundedText(
  body: AsyncIterable<Buffer> & { destroy(err?: Error): unknown },
  bytesMax: number,
  what: string,
): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    n += chunk.length;
    if (n > bytesMax) {
      body.destroy();
      throw new Error(`${what}: the answer is over ${bytesMax} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * One bounded call to a node's admin port with the operator's key: the one
 * place that speaks HTTP to nodes (status probe, drain control, node drains).
 * Any answer but 200/202 is an error carrying its status and the body's start.
 */
export async function callNode(
  method: 'GET' | 'POST' | 'DELETE',
  baseUrl: string,
  path: '/v1/status' | '/v1/drain',
  apiKey: string,
  timeoutMs: number,
): Promise<unknown> {
  const res = await request(`${baseUrl}${path}`, {
    method,
    headers: {
      'x-api-key': apiKey,
      accept: 'application/json',
      ...(method === 'POST' ? { 'content-type': 'application/json' } : {}),
    },
    ...(method === 'POST' ? { body: '{}' } : {}),
    ...(baseUrl.startsWith('https:') ? { dispatcher: podTlsAgent() } : {}),
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    // bodyTimeout bounds the gap between chunks, not the whole answer.
    signal: AbortSignal.timeout(2 * timeoutMs),
  });
  const text = await boundedText(res.body, NODE_REPLY_BYTES_MAX, `${method} ${baseUrl}${path}`);
  if (res.statusCode !== 200 && res.statusCode !== 202)
    throw new Error(`${method} ${baseUrl}${path}: ${res.statusCode} ${text.slice(0, 200)}`);
  return JSON.parse(text) as unknown;
}

export const httpNodeStatusProbe =
  (timeoutMs = 3000): NodeStatusProbe =>
  async (baseUrl, apiKey) =>
    parseNodeStatus(await callNode('GET', baseUrl, '/v1/status', apiKey, timeoutMs));

/**
 * Drain mode of one node (POST /v1/drain: refuse writes, seal, deliver
 * everything; DELETE /v1/drain: take writes again), with the operator's key
 * (scope `drain`). Both are idempotent; a restarted pod is out of drain mode,
 * so the operator posts again on every poll while it wants the node drained.
 */
export interface NodeDrainControl {
  drain(baseUrl: string, apiKey: string): Promise<void>;
  undrain(baseUrl: string, apiKey: string): Promise<void>;
}

async function drainCall(
  method: 'POST' | 'DELETE',
  baseUrl: string,
  apiKey: string,
  timeoutMs: number,
): Promise<void> {
  await callNode(method, baseUrl, '/v1/drain', apiKey, timeoutMs);
}

export const drainNode = (baseUrl: string, apiKey: string, timeoutMs = 3000): Promise<void> =>
  drainCall('POST', baseUrl, apiKey, timeoutMs);

export const undrainNode = (baseUrl: string, apiKey: string, timeoutMs = 3000): Promise<void> =>
  drainCall('DELETE', baseUrl, apiKey, timeoutMs);

export const httpNodeDrainControl = (timeoutMs = 3000): NodeDrainControl => ({
  drain: (baseUrl, apiKey) => drainNode(baseUrl, apiKey, timeoutMs),
  undrain: (baseUrl, apiKey) => undrainNode(baseUrl, apiKey, timeoutMs),
});
