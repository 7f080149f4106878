// API keys over real HTTP: missing, wrong, both header forms, scopes (403),
// rotation (two keys valid at once), reload on change from a file and from a
// Secret-style directory, a bad reload keeping the old keys, and keys never
// reaching the log.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileApiKeySource, parseKeys, staticApiKeys } from '../src/http/auth.ts';
import type { Logger } from '../src/log.ts';
import { codeOf, ingest, read, startTestServer } from './helpers/server.ts';
import type { TestServer } from './helpers/server.ts';

const KEY_A = 'lf_live_aaaaaaaaaaaaaaaaaaaaaaaa';
const KEY_B = 'lf_live_bbbbbbbbbbbbbbbbbbbbbbbb';
const KEY_READ = 'lf_read_cccccccccccccccccccccccc';

/** A logger that keeps every line, to check what was (not) logged. */
function captureLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const push = (obj: object, msg?: string): void => {
    lines.push(
      JSON.stringify(obj, (_k, v: unknown) => (v instanceof Error ? { message: v.message } : v)) +
        ' ' +
        (msg ?? ''),
    );
  };
  return { lines, debug: push, info: push, warn: push, error: push };
}

async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}

void describe('auth: static keys', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({
      apiKeys: staticApiKeys(`# producers\n${KEY_A}\n${KEY_B} ingest\n${KEY_READ} status\n`),
    });
  });
  after(() => t.close());

  void it('no key is 401 LF_API_KEY_MISSING, and nothing is read or written', async () => {
    const a = await ingest(t.url, '{"a":1}\n');
    assert.equal(a.status, 401);
    assert.equal(codeOf(a), 'LF_API_KEY_MISSING');
    assert.equal(t.wal.appends.length, 0);
  });

  void it('a wrong key is 401 LF_API_KEY_INVALID', async () => {
    const cases: Array<Record<string, string>> = [
      { 'x-api-key': 'nope' },
      { 'x-api-key': KEY_A + 'x' },
      { 'x-api-key': KEY_A.slice(0, -1) },
      { authorization: `Bearer ${KEY_A.toUpperCase()}` },
      { 'x-api-key': 'k'.repeat(10_000) },
    ];
    for (const headers of cases) {
      const a = await ingest(t.url, '{"a":1}\n', headers);
      assert.equal(a.status, 401);
      assert.equal(codeOf(a), 'LF_API_KEY_INVALID');
    }
    assert.equal(t.wal.appends.length, 0);
  });

  void it('Authorization with another scheme counts as no key', async () => {
    const a = await ingest(t.url, '{"a":1}\n', {
      authorization: `Basic ${Buffer.from('u:p').toString('base64')}`,
    });
    assert.equal(codeOf(a), 'LF_API_KEY_MISSING');
  });

  void it('X-API-Key and Authorization: Bearer both work; several keys are valid at once', async () => {
    assert.equal((await ingest(t.url, '{"a":1}\n', { 'x-api-key': KEY_A })).status, 202);
    assert.equal((await ingest(t.url, '{"a":1}\n', { authorization: `Bearer ${KEY_B}` })).status, 202);
    assert.equal((await ingest(t.url, '{"a":1}\n', { authorization: `bearer ${KEY_A}` })).status, 202);
  });

  void it('auth is checked before the media type, so 401 beats 415', async () => {
    const a = await ingest(t.url, 'x', { 'content-type': 'text/plain' });
    assert.equal(a.status, 401);
  });

  void it('a key without the ingest scope is 403 LF_FORBIDDEN', async () => {
    const a = await ingest(t.url, '{"a":1}\n', { 'x-api-key': KEY_READ });
    assert.equal(a.status, 403);
    assert.equal(codeOf(a), 'LF_FORBIDDEN');
  });

  void it('/v1/status needs a key with the status scope; probes and metrics need none', async () => {
    assert.equal((await fetch(`${t.adminUrl}/v1/status`)).status, 401);
    assert.equal((await fetch(`${t.adminUrl}/v1/status`, { headers: { 'x-api-key': KEY_B } })).status, 403);
    assert.equal(
      (await fetch(`${t.adminUrl}/v1/status`, { headers: { 'x-api-key': KEY_READ } })).status,
      200,
    );
    assert.equal((await fetch(`${t.adminUrl}/v1/status`, { headers: { 'x-api-key': KEY_A } })).status, 200);
    for (const path of ['/healthz', '/readyz', '/metrics'])
      assert.equal((await fetch(t.adminUrl + path)).status, 200, path);
    for (const path of ['/healthz', '/readyz']) assert.equal((await fetch(t.url + path)).status, 200, path);
  });
});

void describe('auth: key file parsing', () => {
  void it('comments, blank lines, scopes; a bad line is reported by line number, never by content', () => {
    const ok = parseKeys(`# header\n\n  ${KEY_A}   # trailing comment\n${KEY_B} ingest,status\n`, 'f');
    assert.equal(ok.problems.length, 0);
    assert.equal(ok.keys.length, 2);
    const bad = parseKeys(`${KEY_A} admin\n`, 'f');
    assert.equal(bad.problems.length, 1);
    assert.match(bad.problems[0] ?? '', /f line 1: word 2 \(5 characters\) is not a scope/);
    assert.doesNotMatch(bad.problems[0] ?? '', new RegExp(KEY_A));
    // Two keys on one line: the second is no scope, and is not echoed either.
    const two = parseKeys(`${KEY_A} ${KEY_B}\n`, 'f');
    assert.equal(two.problems.length, 1);
    assert.doesNotMatch(two.problems[0] ?? '', new RegExp(KEY_B));
  });

  void it('drain is never a default scope: it must be named (a producer key cannot stop a node)', () => {
    const source = staticApiKeys(`${KEY_A}\n${KEY_B} status drain\ncert-cn:device-1\n`);
    assert.deepEqual([...(source.verify(KEY_A)?.scopes ?? [])].sort(), ['ingest', 'status']);
    assert.deepEqual([...(source.verify(KEY_B)?.scopes ?? [])].sort(), ['drain', 'status']);
    assert.equal(source.verifyClientCertificate?.('device-1')?.scopes.has('drain'), false);
  });

  void it('sha256:<hex> stands for the key with that hash (the key itself is not stored)', () => {
    const hex = createHash('sha256').update(KEY_READ).digest('hex');
    const source = staticApiKeys(`sha256:${hex} status\n`);
    assert.deepEqual([...(source.verify(KEY_READ)?.scopes ?? [])], ['status']);
    assert.equal(source.verify(`sha256:${hex}`), undefined, 'the hash is not itself a key');
    assert.equal(source.verify(KEY_A), undefined);
  });
});

void describe('auth: keys from a file, reloaded on change', () => {
  let dir: string;
  let t: TestServer;
  let log: ReturnType<typeof captureLogger>;
  let keysFile: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'landfall-auth-'));
    keysFile = join(dir, 'keys');
    await writeFile(keysFile, `${KEY_A}\n`);
    log = captureLogger();
    t = await startTestServer({
      config: { auth: { apiKeysFile: keysFile, reloadIntervalMs: 100 } },
      apiKeys: undefined,
      log,
    });
  });
  after(async () => {
    await t.close();
    await rm(dir, { recursive: true, force: true });
  });

  const status = async (key: string): Promise<number> =>
    (await ingest(t.url, '{"a":1}\n', { 'x-api-key': key })).status;

  void it('rotation: add B (both valid), then remove A', async () => {
    assert.equal(await status(KEY_A), 202);
    assert.equal(await status(KEY_B), 401);
    await writeFile(keysFile, `${KEY_A}\n${KEY_B}\n`);
    await waitFor(async () => (await status(KEY_B)) === 202);
    assert.equal(await status(KEY_A), 202, 'both keys valid during rotation');
    // An atomic replace (write temp + rename), as config management tools do it.
    await writeFile(join(dir, 'keys.tmp'), `${KEY_B}\n`);
    await rename(join(dir, 'keys.tmp'), keysFile);
    await waitFor(async () => (await status(KEY_A)) === 401);
    assert.equal(await status(KEY_B), 202);
  });

  void it('a bad reload (empty file, unknown scope) keeps the previous keys', async () => {
    // Wait for each refused reload to be logged, so the assertions run after
    // the reload was tried rather than before it.
    const refusals = (): number => log.lines.filter((l) => l.includes('keeping the previous keys')).length;
    const before = refusals();
    await writeFile(keysFile, '');
    await waitFor(() => refusals() > before);
    assert.equal(await status(KEY_B), 202);
    await writeFile(keysFile, `${KEY_A} everything\n`);
    await waitFor(() => refusals() > before + 1);
    assert.equal(await status(KEY_B), 202);
    assert.equal(await status(KEY_A), 401);
  });

  void it('never logs a key', () => {
    for (const line of log.lines) {
      for (const key of [KEY_A, KEY_B]) assert.ok(!line.includes(key), `logged a key: ${line}`);
    }
  });
});

void describe('auth: a Kubernetes Secret mounted as a directory', () => {
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'landfall-secret-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Mimics the kubelet: files live in a timestamped dir, `..data` points at it, names are symlinks through `..data`. */
  async function project(version: string, files: Record<string, string>): Promise<void> {
    const versionDir = join(dir, `..${version}`);
    await mkdir(versionDir);
    for (const [name, text] of Object.entries(files)) await writeFile(join(versionDir, name), text);
    await symlink(`..${version}`, join(dir, '..data_tmp'));
    await rename(join(dir, '..data_tmp'), join(dir, '..data'));
    for (const name of Object.keys(files)) {
      try {
        await symlink(join('..data', name), join(dir, name));
      } catch {
        // The name already points through ..data.
      }
    }
  }

  void it('reads every key file, and follows the ..data swap', async () => {
    await project('v1', { producer: `${KEY_A}\n`, monitor: `${KEY_READ} status\n` });
    const source = await FileApiKeySource.open({ path: dir, reloadIntervalMs: 100, log: captureLogger() });
    try {
      assert.equal(source.size, 2);
      assert.ok(source.verify(KEY_A)?.scopes.has('ingest'));
      assert.equal(source.verify(KEY_B), undefined);
      await project('v2', { producer: `${KEY_A}\n${KEY_B}\n`, monitor: `${KEY_READ} status\n` });
      await waitFor(() => source.verify(KEY_B) !== undefined);
      assert.equal(source.size, 3);
      assert.ok(source.verify(KEY_A) !== undefined);
    } finally {
      source.close();
    }
  });

  void it('refuses to start on a missing or keyless source', async () => {
    await assert.rejects(
      FileApiKeySource.open({ path: join(dir, 'nope'), reloadIntervalMs: 100, log: captureLogger() }),
      /auth.apiKeysFile/,
    );
    const empty = await mkdtemp(join(tmpdir(), 'landfall-empty-'));
    await assert.rejects(
      FileApiKeySource.open({ path: empty, reloadIntervalMs: 100, log: captureLogger() }),
      /no keys/,
    );
    await rm(empty, { recursive: true });
  });
});

void describe('auth: the answer body', () => {
  void it('is the catalogue JSON shape', async () => {
    const t = await startTestServer({ apiKeys: staticApiKeys(KEY_A) });
    try {
      const a = await read(
        await fetch(`${t.url}/v1/ingest`, {
          method: 'POST',
          body: 'x',
          headers: { 'content-type': 'application/x-ndjson' },
        }),
      );
      assert.deepEqual(Object.keys(a.json as object), ['error']);
      assert.deepEqual(Object.keys((a.json as { error: object }).error), ['code', 'message']);
    } finally {
      await t.close();
    }
  });
});
