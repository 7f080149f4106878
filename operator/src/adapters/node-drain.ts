// ADAPTER: the node's drain mode as the node-drain flow (controller/node-drain.ts)
// uses it (docs/http-api.md, Drain mode):
//   POST /v1/drain   (scope `drain`) idempotent: refuse writes with 503
//                    LF_DRAINING, seal the open segment, deliver everything now;
//                    answers 202 with the `drain` object
//   GET  /v1/status  `drain: { draining, drained, sinceMs }` beside the WAL and
//                    delivery figures adapters/node-status.ts reads
// Drain mode lives in the node's memory: a restarted pod accepts writes again,
// so the operator posts again on every poll while it wants the replica drained.
import { callNode, drainBlocker, parseNodeStatus } from './node-status.ts';

export interface NodeDrainMode {
  draining: boolean;
  /** Draining and nothing left: no open-segment bytes, no sealed segment, nothing pending in delivery. */
  drained: boolean;
  sinceMs: number | null;
}

export interface NodeDrainReport {
  /** Undefined when the node's /v1/status has no `drain` (a node without drain mode). */
  drain: NodeDrainMode | undefined;
  /** What is still undelivered, in one line (adapters/node-status.ts drainBlocker); undefined: nothing. */
  backlog: string | undefined;
}

export interface NodeDrainClient {
  /** POST /v1/drain. */
  drain(baseUrl: string, apiKey: string): Promise<NodeDrainMode>;
  /** GET /v1/status. */
  status(baseUrl: string, apiKey: string): Promise<NodeDrainReport>;
}

export function parseDrainMode(body: unknown, where: string): NodeDrainMode {
  const d = (body as { drain?: unknown } | undefined)?.drain ?? body;
  const o = d as Record<string, unknown> | undefined;
  if (typeof o?.['draining'] !== 'boolean' || typeof o['drained'] !== 'boolean')
    throw new Error(`${where}: no drain object ({draining, drained}) in the answer`);
  const since = o['sinceMs'];
  return {
    draining: o['draining'],
    drained: o['drained'],
    sinceMs: typeof since === 'number' ? since : null,
  };
}

export function httpNodeDrainClient(timeoutMs = 3000): NodeDrainClient {
  return {
    drain: async (baseUrl, apiKey) =>
      parseDrainMode(
        await callNode('POST', baseUrl, '/v1/drain', apiKey, timeoutMs),
        `POST ${baseUrl}/v1/drain`,
      ),
    status: async (baseUrl, apiKey) => {
      const body = await callNode('GET', baseUrl, '/v1/status', apiKey, timeoutMs);
      const hasDrain = (body as { drain?: unknown } | undefined)?.drain !== undefined;
      return {
        drain: hasDrain ? parseDrainMode(body, `GET ${baseUrl}/v1/status`) : undefined,
        backlog: drainBlocker(parseNodeStatus(body)),
      };
    },
  };
}
