// The JSON-lines logger of the node's CLI and the operator (pino): key
// material is censored, errors keep their stack, code and cause chain,
// bigints are exact, and the line shape is the one log pipelines parse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jsonLogger } from '../src/log.ts';
import { jsonLogger as operatorLogger } from '../../operator/src/runtime/log.ts';

function capture(): { lines: Record<string, unknown>[]; raw: string[]; write: (l: string) => void } {
  const raw: string[] = [];
  return {
    raw,
    get lines() {
      return raw.map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    write: (l) => raw.push(l),
  };
}

const KEY = 'lf_live_0123456789abcdef';

void test('API keys, authorization headers and secret values are redacted', () => {
  const out = capture();
  const log = jsonLogger('info', out.write);
  log.warn({ headers: { 'x-api-key': KEY, authorization: `Bearer ${KEY}`, 'content-type': 'x' } }, 'a');
  log.warn({ req: { headers: { 'x-api-key': KEY } } }, 'b');
  log.warn({ request: { url: '/v1/ingest', headers: { authorization: KEY } } }, 'c');
  log.warn(
    { apiKey: KEY, broker: { password: KEY }, credentials: { secretAccessKey: KEY, sessionToken: KEY } },
    'd',
  );
  for (const line of out.raw) assert.ok(!line.includes(KEY), `a key leaked: ${line}`);
  const [a, , c, d] = out.lines;
  assert.deepEqual(a?.headers, {
    'x-api-key': '[REDACTED]',
    authorization: '[REDACTED]',
    'content-type': 'x',
  });
  assert.equal((c?.request as { url: string }).url, '/v1/ingest', 'the rest of the object stays');
  assert.equal(d?.apiKey, '[REDACTED]');
  assert.deepEqual(d?.credentials, { secretAccessKey: '[REDACTED]', sessionToken: '[REDACTED]' });
});

void test('key material is redacted at any depth and in any spelling, inside error causes too', () => {
  const out = capture();
  const log = jsonLogger('info', out.write);
  const cause = Object.assign(new Error('inner'), { password: KEY, SessionToken: KEY });
  log.error(
    {
      err: new Error('outer', { cause }),
      config: { s3: { secretAccessKey: KEY, bucket: 'b' } },
      headers: { 'X-Amz-Security-Token': KEY, Authorization: KEY },
      nested: { deep: { deeper: { token: KEY, masterKey: KEY } } },
    },
    'e',
  );
  for (const line of out.raw) assert.ok(!line.includes(KEY), `a key leaked: ${line}`);
  const [e] = out.lines;
  assert.equal((e?.config as { s3: { bucket: string } }).s3.bucket, 'b', 'the rest stays');
  assert.equal((e?.err as { cause: { message: string } }).cause.message, 'inner', 'the cause stays');
});

void test('an error is logged with its stack, code and cause chain, under any field name', () => {
  const out = capture();
  const log = jsonLogger('debug', out.write);
  const root = Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
  const err = new Error('sealing segment 7 failed', { cause: root });
  log.error({ err, problem: new TypeError('also this') }, 'seal failed');
  const [line] = out.lines as [Record<string, unknown>];
  const e = line.err as { type: string; message: string; stack: string; cause: Record<string, unknown> };
  assert.equal(e.type, 'Error');
  assert.equal(e.message, 'sealing segment 7 failed');
  assert.match(e.stack, /sealing segment 7 failed\n\s+at /);
  assert.equal(e.cause.message, 'ENOSPC: no space left on device');
  assert.equal(e.cause.code, 'ENOSPC');
  assert.match(String(e.cause.stack), /\n\s+at /);
  assert.equal((line.problem as { type: string }).type, 'TypeError');
});

void test('bigints are exact decimal strings; the line shape is level name, ISO time, fields, msg', () => {
  const out = capture();
  const log = jsonLogger('info', out.write, { clock: () => Date.UTC(2026, 0, 2, 3, 4, 5) });
  const big = 2n ** 64n - 1n;
  log.info({ nextSeq: big, wal: { firstSeq: 9007199254740993n, list: [1n] } }, 'sealed');
  log.debug({ x: 1 }, 'below the level');
  assert.equal(out.raw.length, 1);
  assert.equal(
    out.raw[0],
    '{"level":"info","time":"2026-01-02T03:04:05.000Z","nextSeq":"18446744073709551615","wal":{"firstSeq":"9007199254740993","list":["1"]},"msg":"sealed"}\n',
  );
});

void test('the operator logs through the same logger: bindings, child, causes, redaction, bigints', () => {
  const out = capture();
  const log = operatorLogger('info', { component: 'landfall-operator', identity: 'op-1' }, out.write);
  const child = log.child({ controller: 'endpoint' });
  child.error(
    {
      err: new Error('apply failed', { cause: new Error('409 Conflict') }),
      headers: { authorization: KEY },
      n: 3n,
    },
    'reconcile failed',
  );
  assert.ok(!out.raw[0]?.includes(KEY));
  const line = out.lines[0] as Record<string, unknown>;
  assert.equal(line.component, 'landfall-operator');
  assert.equal(line.controller, 'endpoint');
  assert.equal(line.n, '3');
  assert.equal((line.err as { cause: { message: string } }).cause.message, '409 Conflict');
  assert.match(String((line.err as { stack: string }).stack), /apply failed\n\s+at /);
});
