// Exponential backoff with full jitter (delay = random(0, min(cap, base·2^n)),
// the AWS Architecture Blog variant): spreads the retries of many ingest
// nodes hitting one throttled bucket instead of synchronizing them.
//
// Bounded in attempts and in the delay of each attempt. Only errors the
// predicate calls retryable are retried (StoreError.retryable by default); a
// 403 or a marker conflict fails at once. A step that exhausts its attempts
// throws its last error; the delivery pipeline keeps the sealed segment and
// schedules it again later, so "gave up" never means "dropped".
//
// Sleep and randomness are injected so tests run without waiting.
import { isRetryable } from '../store/errors.ts';

export interface RetryPolicy {
  /** Attempts in total, the first included (≥ 1). */
  readonly attemptsMax: number;
  /** The cap of the first retry's delay; doubles each time. */
  readonly retryDelayMsBase: number;
  /** No single delay exceeds this. */
  readonly retryDelayMsMax: number;
}

/**
 * 8 attempts, 200 ms doubling to a 20 s cap: about a minute of worst-case
 * waiting, enough to ride out a MinIO restart or an S3 throttling burst,
 * short enough that shutdown and status stay responsive.
 */
export const defaultRetryPolicy: RetryPolicy = {
  attemptsMax: 8,
  retryDelayMsBase: 200,
  retryDelayMsMax: 20_000,
};

export interface RetryAttemptInfo {
  /** The attempt that just failed, from 1. */
  readonly attempt: number;
  readonly error: unknown;
  readonly delayMs: number;
}

export interface RetryDeps {
  /** Resolves after `ms`, or rejects when `signal` aborts. */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Uniform in [0, 1). */
  readonly random?: () => number;
  readonly isRetryable?: (err: unknown) => boolean;
  /** Called before each wait (for logs and a retries metric). */
  readonly onRetry?: (info: RetryAttemptInfo) => void;
  readonly signal?: AbortSignal;
}

export function checkRetryPolicy(p: RetryPolicy): RetryPolicy {
  const ok =
    Number.isInteger(p.attemptsMax) &&
    p.attemptsMax >= 1 &&
    p.attemptsMax <= 1000 &&
    p.retryDelayMsBase >= 0 &&
    p.retryDelayMsMax >= p.retryDelayMsBase &&
    Number.isFinite(p.retryDelayMsMax);
  if (!ok) throw new RangeError(`invalid retry policy ${JSON.stringify(p)}`);
  return p;
}

/** The delay before retry number `retry` (0 for the first retry). */
export function backoffDelayMs(policy: RetryPolicy, retry: number, random: () => number): number {
  // 2^retry overflows to Infinity long after the cap applies; min() keeps it finite.
  const ceiling = Math.min(policy.retryDelayMsMax, policy.retryDelayMsBase * 2 ** retry);
  return Math.floor(random() * ceiling);
}

export async function withRetry<T>(
  fn: (attempt: number) => Promise<T>,
  policy: RetryPolicy = defaultRetryPolicy,
  deps: RetryDeps = {},
): Promise<T> {
  checkRetryPolicy(policy);
  const sleep = deps.sleep ?? sleepMs;
  const random = deps.random ?? Math.random;
  const retryable = deps.isRetryable ?? isRetryable;
  for (let attempt = 1; ; attempt++) {
    deps.signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= policy.attemptsMax || !retryable(err) || deps.signal?.aborted === true) throw err;
      const delayMs = backoffDelayMs(policy, attempt - 1, random);
      deps.onRetry?.({ attempt, error: err, delayMs });
      await sleep(delayMs, deps.signal);
    }
  }
}

export function sleepMs(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
