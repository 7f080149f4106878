// Idempotency-Key: a request that repeats a key (per API key) within the window
// gets the first answer back and writes nothing. The memory is bounded (LRU
// over idempotency.entriesMax) and in this process only: a restart forgets it,
// which keeps at-least-once (a retry after a restart writes again) but not
// exactly-once. Only successes are remembered: a failed request (503, 400…)
// leaves no entry, so its retry runs again, which is what a client retrying a
// 503 needs. A duplicate that arrives while the first is still running waits
// for it instead of writing a second copy.
//
// An entry whose first request is still running is pinned: the LRU bound
// (entriesMax) evicts finished entries only, and when every entry is running a
// new key is refused (503 LF_IDEMPOTENCY_BUSY) rather than forgetting one,
// whose retry would then write twice.

import type { Clock } from '../clock.ts';
import { IdempotencyBusyError } from '../errors.ts';

export interface StoredAnswer {
  readonly statusCode: number;
  readonly body: string;
}

interface Entry {
  readonly fingerprint: string;
  answer: StoredAnswer | undefined;
  expiresAtMs: number;
  /** Settles when the owning request finishes (successfully or not). */
  readonly settled: Promise<void>;
  readonly settle: () => void;
}

export type Claim =
  | { readonly kind: 'replay'; readonly answer: StoredAnswer }
  | { readonly kind: 'mismatch' }
  | { readonly kind: 'owner'; complete(answer: StoredAnswer | undefined): void };

export interface IdempotencyOptions {
  readonly windowMs: number;
  readonly entriesMax: number;
  readonly clock: Clock;
}

export class IdempotencyCache {
  readonly #o: IdempotencyOptions;
  /**
   * Entries whose first request is still running. They are never evicted: a
   * retry must find them and wait, or it would write a second copy.
   */
  readonly #running = new Map<string, Entry>();
  /** Finished entries; Map order is the LRU order: oldest first, a hit moves its entry to the end. */
  readonly #done = new Map<string, Entry>();

  constructor(options: IdempotencyOptions) {
    this.#o = options;
  }

  get enabled(): boolean {
    return this.#o.entriesMax > 0;
  }

  get size(): number {
    return this.#running.size + this.#done.size;
  }

  /**
   * Claims `scopedKey` for a request whose body hashes to `fingerprint`. The
   * owner must call complete() exactly once, whatever happens. Rejects with
   * LF_IDEMPOTENCY_BUSY when every one of entriesMax entries is running.
   */
  async claim(scopedKey: string, fingerprint: string): Promise<Claim> {
    for (;;) {
      const running = this.#running.get(scopedKey);
      if (running !== undefined) {
        if (running.fingerprint !== fingerprint) return { kind: 'mismatch' };
        await running.settled;
        continue; // The first finished: replay its answer, or run again if it failed.
      }
      const done = this.#done.get(scopedKey);
      if (done !== undefined && done.expiresAtMs > this.#o.clock.monotonicMs()) {
        if (done.fingerprint !== fingerprint) return { kind: 'mismatch' };
        this.#done.delete(scopedKey);
        this.#done.set(scopedKey, done);
        return { kind: 'replay', answer: done.answer as StoredAnswer };
      }
      if (done !== undefined) this.#done.delete(scopedKey);
      return this.#own(scopedKey, fingerprint);
    }
  }

  #own(scopedKey: string, fingerprint: string): Claim {
    if (this.#running.size >= this.#o.entriesMax) throw new IdempotencyBusyError(this.#o.entriesMax);
    // Room is made among finished entries only, least recently used first.
    while (this.#running.size + this.#done.size >= this.#o.entriesMax) {
      const oldest = this.#done.keys().next();
      if (oldest.done === true) break;
      this.#done.delete(oldest.value);
    }
    let settle!: () => void;
    const settled = new Promise<void>((resolve) => {
      settle = resolve;
    });
    const entry: Entry = {
      fingerprint,
      answer: undefined,
      expiresAtMs: Number.POSITIVE_INFINITY,
      settled,
      settle,
    };
    this.#running.set(scopedKey, entry);
    let finished = false;
    return {
      kind: 'owner',
      complete: (answer) => {
        if (finished) return;
        finished = true;
        this.#running.delete(scopedKey);
        if (answer !== undefined) {
          entry.answer = answer;
          entry.expiresAtMs = this.#o.clock.monotonicMs() + this.#o.windowMs;
          // While it ran, others may have filled the table; it still fits, as it held its place.
          this.#done.set(scopedKey, entry);
        }
        entry.settle();
      },
    };
  }
}
