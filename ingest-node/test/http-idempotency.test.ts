// Idempotency-Key over real HTTP: a repeat returns the first answer and the WAL
// sees one append; concurrent duplicates wait for the first; another body under
// the same key is 422; keys are scoped per API key; the window, the LRU bound
// and failures are honoured.

import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { staticApiKeys } from '../src/http/auth.ts';
import { IdempotencyCache } from '../src/http/idempotency.ts';
import { codeOf, ingest, startTestServer, until } from './helpers/server.ts';
import type { TestServer } from './helpers/server.ts';
import { FakeClock } from './helpers/fakes.ts';

const KEY_A = 'lf_key_a_0123456789';
const KEY_B = 'lf_key_b_0123456789';

void describe('Idempotency-Key', () => {
  let t: TestServer | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  void it('a repeat returns the first answer (status and body) and writes nothing', async () => {
    t = await startTestServer();
    const first = await ingest(t.url, '{"a":1}\n{"b":2}\n', { 'idempotency-key': 'order-17' });
    assert.equal(first.status, 202);
    const again = await ingest(t.url, '{"a":1}\n{"b":2}\n', { 'idempotency-key': 'order-17' });
    assert.equal(again.status, 202);
    assert.equal(again.text, first.text);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(t.wal.appends.length, 1, 'the WAL got one append');
    // Without the header the same body is written again (at-least-once is the default).
    await ingest(t.url, '{"a":1}\n{"b":2}\n');
    assert.equal(t.wal.appends.length, 2);
  });

  void it('the same key with another body is 422 LF_IDEMPOTENCY_KEY_REUSED', async () => {
    t = await startTestServer();
    assert.equal((await ingest(t.url, '{"a":1}\n', { 'idempotency-key': 'k1' })).status, 202);
    const other = await ingest(t.url, '{"a":2}\n', { 'idempotency-key': 'k1' });
    assert.equal(other.status, 422);
    assert.equal(codeOf(other), 'LF_IDEMPOTENCY_KEY_REUSED');
    // The same bytes under another encoding are another request too.
    const typed = await ingest(t.url, '{"a":1}\n', {
      'idempotency-key': 'k1',
      'content-type': 'application/json',
    });
    assert.equal(codeOf(typed), 'LF_IDEMPOTENCY_KEY_REUSED');
    assert.equal(t.wal.appends.length, 1);
  });

  void it('concurrent duplicates wait for the first and share its answer', async () => {
    t = await startTestServer();
    const release = t.wal.hold();
    const requests = Array.from({ length: 5 }, () =>
      ingest(t!.url, '{"c":1}\n', { 'idempotency-key': 'burst' }),
    );
    await until(() => t!.wal.waiting === 1);
    release();
    const answers = await Promise.all(requests);
    for (const a of answers) {
      assert.equal(a.status, 202);
      assert.equal(a.text, answers[0]?.text);
    }
    assert.equal(t.wal.appends.length, 1);
  });

  void it('a failed first attempt is not remembered: the retry runs (and waiters retry too)', async () => {
    t = await startTestServer();
    t.wal.failWith = new Error('EIO');
    const release = t.wal.hold();
    const first = ingest(t.url, '{"d":1}\n', { 'idempotency-key': 'retry-me' });
    await new Promise((r) => setTimeout(r, 50));
    const waiter = ingest(t.url, '{"d":1}\n', { 'idempotency-key': 'retry-me' });
    await new Promise((r) => setTimeout(r, 50));
    t.wal.failWith = undefined;
    release();
    assert.equal((await first).status, 503);
    // The waiter woke when the first failed and ran itself, once.
    assert.equal((await waiter).status, 202);
    const retry = await ingest(t.url, '{"d":1}\n', { 'idempotency-key': 'retry-me' });
    assert.equal(retry.status, 202);
    assert.equal(t.wal.appends.length, 1);
  });

  void it('keys are scoped per API key', async () => {
    t = await startTestServer({ apiKeys: staticApiKeys(`${KEY_A}\n${KEY_B}\n`) });
    const a = await ingest(t.url, '{"e":1}\n', { 'idempotency-key': 'shared', 'x-api-key': KEY_A });
    const b = await ingest(t.url, '{"e":2}\n', { 'idempotency-key': 'shared', 'x-api-key': KEY_B });
    assert.equal(a.status, 202);
    assert.equal(b.status, 202, 'another tenant key may use the same idempotency key');
    assert.equal(t.wal.appends.length, 2);
  });

  void it('is forgotten after idempotency.windowMs', async () => {
    t = await startTestServer({ config: { idempotency: { windowMs: 60_000 } } });
    await ingest(t.url, '{"f":1}\n', { 'idempotency-key': 'w' });
    t.clock.advance(59_000);
    await ingest(t.url, '{"f":1}\n', { 'idempotency-key': 'w' });
    assert.equal(t.wal.appends.length, 1);
    t.clock.advance(2_000);
    const late = await ingest(t.url, '{"f":1}\n', { 'idempotency-key': 'w' });
    assert.equal(late.status, 202);
    assert.equal(t.wal.appends.length, 2);
  });

  void it('holds at most idempotency.entriesMax keys (least recently used goes first)', async () => {
    t = await startTestServer({ config: { idempotency: { entriesMax: 2 } } });
    await ingest(t.url, '{"g":1}\n', { 'idempotency-key': 'k1' });
    await ingest(t.url, '{"g":2}\n', { 'idempotency-key': 'k2' });
    await ingest(t.url, '{"g":1}\n', { 'idempotency-key': 'k1' }); // touch k1
    await ingest(t.url, '{"g":3}\n', { 'idempotency-key': 'k3' }); // evicts k2
    assert.equal(t.server.idempotency.size, 2);
    assert.equal(t.wal.appends.length, 3);
    await ingest(t.url, '{"g":1}\n', { 'idempotency-key': 'k1' });
    assert.equal(t.wal.appends.length, 3, 'k1 still remembered');
    await ingest(t.url, '{"g":2}\n', { 'idempotency-key': 'k2' });
    assert.equal(t.wal.appends.length, 4, 'k2 was forgotten');
  });

  void it('a key that is too long or not printable ASCII is 400 LF_IDEMPOTENCY_KEY_INVALID', async () => {
    t = await startTestServer({ config: { idempotency: { keyLengthMax: 16 } } });
    const long = await ingest(t.url, '{"h":1}\n', { 'idempotency-key': 'x'.repeat(17) });
    assert.equal(long.status, 400);
    assert.equal(codeOf(long), 'LF_IDEMPOTENCY_KEY_INVALID');
    assert.equal(t.wal.appends.length, 0);
  });

  void it('entriesMax 0 turns it off', async () => {
    t = await startTestServer({ config: { idempotency: { entriesMax: 0 } } });
    await ingest(t.url, '{"i":1}\n', { 'idempotency-key': 'k' });
    await ingest(t.url, '{"i":1}\n', { 'idempotency-key': 'k' });
    assert.equal(t.wal.appends.length, 2);
  });
});

void describe('IdempotencyCache', () => {
  void it('an owner that never completes keeps waiters waiting; completing wakes them', async () => {
    const cache = new IdempotencyCache({ windowMs: 1000, entriesMax: 10, clock: new FakeClock() });
    const owner = await cache.claim('k', 'fp');
    assert.equal(owner.kind, 'owner');
    let woke = false;
    const waiter = cache.claim('k', 'fp').then((c) => {
      woke = true;
      return c;
    });
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(woke, false);
    if (owner.kind === 'owner') owner.complete({ statusCode: 202, body: 'x' });
    const c = await waiter;
    assert.equal(c.kind, 'replay');
  });
});
