// Concurrent HTTP producers for the durability tests: each loops sending
// NDJSON batches of records with ids unique across the test, and writes what
// it was told into a Ledger. A producer never retries: a retry would blur
// "acknowledged" and "unknown".
import type { Ledger, SentRequest } from './ledger.ts';

export interface ProducerOptions {
  /** Base URL of the node. */
  readonly url: string;
  readonly ledger: Ledger;
  readonly concurrency: number;
  /** Seeded randomness for batch sizes and padding. */
  readonly random: () => number;
  /** Prefix of every request and record id (e.g. the iteration). */
  readonly idPrefix: string;
  /** Records per request: 1…recordsMax. */
  readonly recordsMax: number;
  /** Padding per record: 0…padMax bytes. */
  readonly padMax: number;
  /** Checked before each request: true ends the producer. */
  readonly stop: () => boolean;
  /** Per-request bound; an answer that does not come in time is an unknown outcome. Default 15 s. */
  readonly timeoutMs?: number;
  /** Pause after a refusal (a 503 loop would otherwise spin); default 0. */
  readonly pauseAfterRefusalMs?: number;
  /** Called with every settled request. */
  readonly onSettled?: (request: SentRequest) => void;
  /** Extra request headers (an API key). */
  readonly headers?: Readonly<Record<string, string>>;
}

const PAD = 'x'.repeat(4096);

function errorReason(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  return e.cause?.code ?? e.cause?.message ?? e.name ?? e.message ?? String(err);
}

/** Runs `concurrency` producers until `stop()`; resolves when every request has settled. */
export async function runProducers(o: ProducerOptions): Promise<void> {
  const timeoutMs = o.timeoutMs ?? 15_000;
  let counter = 0;
  const one = async (p: number): Promise<void> => {
    while (!o.stop()) {
      const reqId = `${o.idPrefix}.${p}.${counter++}`;
      const n = 1 + Math.floor(o.random() * o.recordsMax);
      const ids: string[] = [];
      let body = '';
      for (let j = 0; j < n; j++) {
        const id = `${reqId}.${j}`;
        ids.push(id);
        body += `{"id":"${id}","pad":"${PAD.slice(0, Math.floor(o.random() * (o.padMax + 1)))}"}\n`;
      }
      const req = o.ledger.add(reqId, ids);
      let refused = false;
      try {
        const res = await fetch(`${o.url}/v1/ingest`, {
          method: 'POST',
          headers: { ...o.headers, 'content-type': 'application/x-ndjson' },
          body,
          signal: AbortSignal.timeout(timeoutMs),
        });
        // The status line alone decides: 202 is a promise, an error status says nothing was written.
        let text: string | undefined;
        try {
          text = await res.text();
        } catch {
          text = undefined;
        }
        let json: unknown;
        try {
          json = text === undefined ? undefined : JSON.parse(text);
        } catch {
          json = undefined;
        }
        if (res.status === 202) {
          const j = json as { firstSeq?: string; lastSeq?: string } | undefined;
          o.ledger.settle(req, {
            kind: 'acked',
            firstSeq: j?.firstSeq === undefined ? undefined : BigInt(j.firstSeq),
            lastSeq: j?.lastSeq === undefined ? undefined : BigInt(j.lastSeq),
          });
        } else {
          refused = true;
          const code = (json as { error?: { code?: string } } | undefined)?.error?.code;
          o.ledger.settle(req, {
            kind: 'refused',
            status: res.status,
            code,
            retryAfter: res.headers.get('retry-after'),
          });
        }
      } catch (err) {
        o.ledger.settle(req, { kind: 'unknown', reason: errorReason(err) });
      }
      o.onSettled?.(req);
      if (refused && (o.pauseAfterRefusalMs ?? 0) > 0)
        await new Promise((r) => setTimeout(r, o.pauseAfterRefusalMs));
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, (_, p) => one(p)));
}

export interface RunningProducers {
  /** Asks every producer to stop after its current request; resolves when all settled. */
  stop(): Promise<void>;
}

/** runProducers in the background, stopped by the caller. */
export function startProducers(o: Omit<ProducerOptions, 'stop'>): RunningProducers {
  let stopped = false;
  const done = runProducers({ ...o, stop: () => stopped });
  return {
    stop: async () => {
      stopped = true;
      await done;
    },
  };
}
