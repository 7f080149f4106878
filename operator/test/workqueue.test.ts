import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkQueue } from '../src/runtime/workqueue.ts';
import { OperatorMetrics } from '../src/runtime/metrics.ts';

const deadline = <T>(p: Promise<T>, ms = 2000): Promise<T> =>
  Promise.race([
    p,
    new Promise<T>((_, rej) => setTimeout(() => rej(new Error(`not within ${ms} ms`)), ms).unref()),
  ]);

void test('a key is queued once however often it is added', async () => {
  const q = new WorkQueue({ name: 't' });
  q.add('a');
  q.add('a');
  q.add('b');
  assert.equal(q.length, 2);
  assert.equal(await q.get(), 'a');
  assert.equal(await q.get(), 'b');
  assert.equal(q.length, 0);
});

void test('a key added while it is processed comes back once, after done, never to two workers', async () => {
  const q = new WorkQueue({ name: 't' });
  q.add('a');
  const k = await q.get();
  q.add('a');
  q.add('a');
  assert.equal(q.length, 0, 'not handed out while processing');
  q.done(k ?? '');
  assert.equal(q.length, 1);
  assert.equal(await q.get(), 'a');
});

void test('a waiting worker gets the next key as soon as it is added', async () => {
  const q = new WorkQueue({ name: 't' });
  const got = q.get();
  q.add('x');
  assert.equal(await deadline(got), 'x');
});

void test('backoff doubles per failure, is capped, and forget resets it', () => {
  const q = new WorkQueue({ name: 't', baseDelayMs: 10, maxDelayMs: 100 });
  assert.deepEqual(
    [0, 1, 2, 3, 4, 10, 1000].map((n) => q.backoffMs(n)),
    [10, 20, 40, 80, 100, 100, 100],
  );
  q.addRateLimited('k');
  q.addRateLimited('k');
  assert.equal(q.failureCount('k'), 2);
  q.forget('k');
  assert.equal(q.failureCount('k'), 0);
  q.shutDown();
});

void test('a rate-limited key arrives after its delay; an immediate add overtakes it', async () => {
  const q = new WorkQueue({ name: 't', baseDelayMs: 30 });
  const t0 = Date.now();
  q.addRateLimited('slow');
  assert.equal(q.length, 0);
  assert.equal(await deadline(q.get()), 'slow');
  assert.ok(Date.now() - t0 >= 25, 'waited for the backoff');
  q.done('slow');

  q.addAfter('fast', 10_000);
  q.add('fast');
  assert.equal(await deadline(q.get(), 200), 'fast');
  q.shutDown();
});

void test('addAfter keeps the earlier of two pending times', async () => {
  const q = new WorkQueue({ name: 't' });
  q.addAfter('k', 20);
  q.addAfter('k', 10_000);
  assert.equal(await deadline(q.get(), 1000), 'k');
  q.shutDown();
});

void test('bounded: adds beyond maxKeys are refused and counted', async () => {
  const metrics = new OperatorMetrics();
  const q = new WorkQueue({ name: 'small', maxKeys: 2, metrics });
  assert.equal(q.add('a'), true);
  assert.equal(q.add('b'), true);
  assert.equal(q.add('c'), false);
  assert.equal(q.add('a'), true, 'an existing key is still fine');
  const text = await metrics.registry.metrics();
  assert.match(text, /landfall_operator_queue_dropped_total\{queue="small"\} 1/);
  assert.match(text, /landfall_operator_queue_depth\{queue="small"\} 2/);
});

void test('shutDown releases blocked workers and refuses new keys', async () => {
  const q = new WorkQueue({ name: 't' });
  const waiting = q.get();
  q.shutDown();
  assert.equal(await deadline(waiting), undefined);
  assert.equal(q.add('late'), false);
  assert.equal(await q.get(), undefined);
});
