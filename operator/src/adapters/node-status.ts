// ADAPTER: what the operator reads from an ingest node's GET /v1/status to
// decide that a replica holds nothing undelivered. The node (ingest-node/src/
// http/server.ts) serves the status JSON; the fields the operator relies on:
//   wal.undeliveredSegments  sealed segments whose commit marker is not written yet (required)
//   wal.openSegmentRecords   records in the open (unsealed) segment (optional; 0 when absent)
// /v1/status needs an API key with the `status` scope: the operator keeps its
// own in a Secret it mounts next to the user's keys (see model/resources.ts).
import { request } from 'undici';

export interface NodeDrainState {
  undeliveredSegments: number;
  openSegmentRecords: number;
}

export function parseNodeStatus(body: unknown): NodeDrainState {
  const wal = (body as { wal?: Record<string, unknown> } | undefined)?.wal;
  const undelivered = wal?.undeliveredSegments;
  if (typeof undelivered !== 'number') throw new Error('/v1/status has no numeric wal.undeliveredSegments');
  const open = wal?.openSegmentRecords;
  return { undeliveredSegments: undelivered, openSegmentRecords: typeof open === 'number' ? open : 0 };
}

export type NodeStatusProbe = (baseUrl: string, apiKey: string) => Promise<NodeDrainState>;

export const httpNodeStatusProbe =
  (timeoutMs = 3000): NodeStatusProbe =>
  async (baseUrl, apiKey) => {
    const res = await request(`${baseUrl}/v1/status`, {
      headers: { 'x-api-key': apiKey, accept: 'application/json' },
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    const text = await res.body.text();
    if (res.statusCode !== 200)
      throw new Error(`GET ${baseUrl}/v1/status: ${res.statusCode} ${text.slice(0, 200)}`);
    return parseNodeStatus(JSON.parse(text));
  };
