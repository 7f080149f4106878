// Backoff with full jitter: bounded attempts, bounded delays, only retryable
// errors, abortable. Sleep and randomness are injected: no real waiting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StoreError } from '../src/store/errors.ts';
import {
  backoffDelayMs,
  checkRetryPolicy,
  sleepMs,
  withRetry,
  type RetryPolicy,
} from '../src/delivery/retry.ts';

const policy: RetryPolicy = { attemptsMax: 6, retryDelayMsBase: 100, retryDelayMsMax: 1000 };

function recorder(): { sleeps: number[]; sleep: (ms: number) => Promise<void> } {
  const sleeps: number[] = [];
  return { sleeps, sleep: async (ms: number) => void sleeps.push(ms) };
}

const retryable = (): StoreError => new StoreError('throttled', 'slow down');
const fatal = (): StoreError => new StoreError('access_denied', 'no');

void test('success on the first attempt does not sleep', async () => {
  const r = recorder();
  assert.equal(await withRetry(async () => 'ok', policy, { sleep: r.sleep }), 'ok');
  assert.deepEqual(r.sleeps, []);
});

void test('retryable errors are retried with exponentially growing, capped ceilings', async () => {
  const r = recorder();
  let calls = 0;
  const attempts: number[] = [];
  const out = await withRetry(
    async (attempt) => {
      attempts.push(attempt);
      if (++calls < 6) throw retryable();
      return calls;
    },
    policy,
    { sleep: r.sleep, random: () => 0.999999 },
  );
  assert.equal(out, 6);
  assert.deepEqual(attempts, [1, 2, 3, 4, 5, 6]);
  // Ceilings 100, 200, 400, 800, then the 1000 cap; random just under 1 sits at the ceiling.
  assert.deepEqual(r.sleeps, [99, 199, 399, 799, 999]);
});

void test('full jitter: each delay is uniform in [0, ceiling)', async () => {
  assert.equal(
    backoffDelayMs(policy, 3, () => 0),
    0,
  );
  assert.equal(
    backoffDelayMs(policy, 3, () => 0.5),
    400,
  );
  const seen = new Set<number>();
  for (let i = 0; i < 200; i++) {
    const d = backoffDelayMs(policy, 2, Math.random);
    assert.ok(d >= 0 && d < 400, String(d));
    seen.add(Math.floor(d / 100));
  }
  assert.equal(seen.size, 4, 'spread over the whole range');
});

void test('delays stay finite and capped however many attempts', () => {
  for (const retry of [10, 100, 1023, 5000]) {
    const d = backoffDelayMs(policy, retry, () => 0.999999);
    assert.ok(Number.isFinite(d) && d <= 1000, `${retry}: ${d}`);
  }
});

void test('non-retryable errors fail at once', async () => {
  const r = recorder();
  let calls = 0;
  await assert.rejects(
    withRetry(
      async () => {
        calls++;
        throw fatal();
      },
      policy,
      { sleep: r.sleep },
    ),
    (err: unknown) => err instanceof StoreError && err.code === 'access_denied',
  );
  assert.equal(calls, 1);
  assert.deepEqual(r.sleeps, []);
  await assert.rejects(
    withRetry(async () => Promise.reject(new TypeError('bug')), policy, { sleep: r.sleep }),
    TypeError,
  );
});

void test('attempts are bounded: the last error comes out after attemptsMax tries', async () => {
  const r = recorder();
  const retries: number[] = [];
  let calls = 0;
  await assert.rejects(
    withRetry(
      async () => {
        calls++;
        throw new StoreError('network', `attempt ${calls}`);
      },
      policy,
      { sleep: r.sleep, random: () => 0.5, onRetry: (i) => retries.push(i.attempt) },
    ),
    /attempt 6/,
  );
  assert.equal(calls, 6);
  assert.equal(r.sleeps.length, 5);
  assert.deepEqual(retries, [1, 2, 3, 4, 5]);
});

void test('a custom predicate decides what is retryable', async () => {
  let calls = 0;
  const out = await withRetry(
    async () => {
      if (++calls < 3) throw new Error('flaky');
      return 'done';
    },
    policy,
    { sleep: async () => {}, isRetryable: (e) => (e as Error).message === 'flaky' },
  );
  assert.equal(out, 'done');
});

void test('an abort (shutdown) stops the loop, also mid-sleep with the real sleep', async () => {
  const ac = new AbortController();
  let calls = 0;
  const p = withRetry(
    async () => {
      calls++;
      throw retryable();
    },
    { attemptsMax: 100, retryDelayMsBase: 10_000, retryDelayMsMax: 10_000 },
    { signal: ac.signal, random: () => 0.99 },
  );
  setTimeout(() => ac.abort(new Error('shutting down')), 20);
  const t0 = Date.now();
  await assert.rejects(p, /shutting down/);
  assert.ok(Date.now() - t0 < 5000);
  assert.equal(calls, 1);

  await assert.rejects(
    withRetry(async () => 1, policy, { signal: AbortSignal.abort(new Error('already')) }),
    /already/,
  );
  await assert.rejects(sleepMs(10, AbortSignal.abort(new Error('pre'))), /pre/);
  await sleepMs(1);
});

void test('policies out of bounds are refused', () => {
  for (const p of [
    { attemptsMax: 0, retryDelayMsBase: 1, retryDelayMsMax: 1 },
    { attemptsMax: 1.5, retryDelayMsBase: 1, retryDelayMsMax: 1 },
    { attemptsMax: 3, retryDelayMsBase: 10, retryDelayMsMax: 5 },
    { attemptsMax: 3, retryDelayMsBase: -1, retryDelayMsMax: 5 },
    { attemptsMax: 3, retryDelayMsBase: 1, retryDelayMsMax: Infinity },
  ]) {
    assert.throws(() => checkRetryPolicy(p), RangeError, JSON.stringify(p));
  }
});
