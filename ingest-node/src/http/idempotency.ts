// Idempotency-Key: a request that repeats a key (per API key) within the window
// gets the first answer back and writes nothing. The memory is bounded (LRU
// over idempotency.entriesMax) and in this process only: a restart forgets it,
// which keeps at-least-once (a retry after a restart writes again) but not
// exactly-once. Only successes are remembered: a failed request (503, 400…)
// leaves no entry, so its retry runs again, which is what a client retrying a
// 503 needs. A duplicate that arrives while the first is still running waits
// for it instead of writing a second copy.

import type { Clock } from '../clock.ts';

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
  /** Map order is the LRU order: oldest first; a hit moves its entry to the end. */
  readonly #entries = new Map<string, Entry>();

  constructor(options: IdempotencyOptions) {
    this.#o = options;
  }

  get enabled(): boolean {
    return this.#o.entriesMax > 0;
  }

  get size(): number {
    return this.#entries.size;
  }

  /**
   * Claims `scopedKey` for a request whose body hashes to `fingerprint`. The
   * owner must call complete() exactly once, whatever happens.
   */
  async claim(scopedKey: string, fingerprint: string): Promise<Claim> {
    for (;;) {
      const now = this.#o.clock.monotonicMs();
      const existing = this.#entries.get(scopedKey);
      if (existing !== undefined && existing.answer !== undefined && existing.expiresAtMs <= now) {
        this.#entries.delete(scopedKey);
      } else if (existing !== undefined) {
        if (existing.fingerprint !== fingerprint) return { kind: 'mismatch' };
        if (existing.answer !== undefined) {
          this.#entries.delete(scopedKey);
          this.#entries.set(scopedKey, existing);
          return { kind: 'replay', answer: existing.answer };
        }
        await existing.settled;
        continue; // The first finished: replay its answer, or run again if it failed.
      }
      return this.#own(scopedKey, fingerprint);
    }
  }

  #own(scopedKey: string, fingerprint: string): Claim {
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
    this.#entries.set(scopedKey, entry);
    while (this.#entries.size > this.#o.entriesMax) {
      // Evicting a running entry only forgets it; its waiters hold `settled` and still wake.
      const oldest = this.#entries.keys().next();
      if (oldest.done === true) break;
      this.#entries.delete(oldest.value);
    }
    let done = false;
    return {
      kind: 'owner',
      complete: (answer) => {
        if (done) return;
        done = true;
        if (answer !== undefined) {
          entry.answer = answer;
          entry.expiresAtMs = this.#o.clock.monotonicMs() + this.#o.windowMs;
        } else if (this.#entries.get(scopedKey) === entry) {
          this.#entries.delete(scopedKey);
        }
        entry.settle();
      },
    };
  }
}
