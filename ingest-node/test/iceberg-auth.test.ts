// Catalog auth (iceberg/auth.ts) as pure client logic: a small local HTTP
// server records what the client sends (headers, token form) and answers as
// a catalog or token endpoint would. Apache's RESTCatalogServer (the real
// catalog of test/e2e/iceberg-auth.test.ts) never checks the header, so
// whether it is sent, refreshed and re-read is shown here.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  BearerFileAuth,
  OAuth2ClientCredentialsAuth,
  jwtExpiryMs,
  regionOfAwsHost,
  restCatalogFrom,
  type OAuth2Options,
} from '../src/iceberg/auth.ts';
import { RestCatalog } from '../src/iceberg/catalog.ts';
import { IcebergError } from '../src/iceberg/errors.ts';
import { jsonLogger } from '../src/log.ts';
import { loadConfig } from '../src/config/load.ts';

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly authorization: string | undefined;
  readonly body: string;
}

type Handler = (req: Seen, res: ServerResponse) => void;

const dir = mkdtempSync(path.join(tmpdir(), 'lf-iceberg-auth-'));
let server: Server;
let base: string;
const seen: Seen[] = [];
let handler: Handler = (_req, res) => res.writeHead(500).end();

before(async () => {
  server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const s: Seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        authorization: req.headers.authorization,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      seen.push(s);
      handler(s, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const a = server.address();
  if (a === null || typeof a === 'string') throw new Error('no port');
  base = `http://127.0.0.1:${a.port}`;
});
after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

/** A catalog that accepts only `Bearer <valid()>`, and a token endpoint behind `token`. */
function catalogAccepting(valid: () => string, token?: Handler): Handler {
  return (req, res) => {
    if (req.url === '/v1/oauth/tokens' && token !== undefined) return token(req, res);
    if (req.authorization !== `Bearer ${valid()}`)
      return json(res, 401, {
        error: { message: 'Not authorized', type: 'NotAuthorizedException', code: 401 },
      });
    if (req.url.startsWith('/v1/config')) return json(res, 200, { defaults: {}, overrides: {} });
    if (req.url === '/v1/namespaces' && req.method === 'POST') return json(res, 200, {});
    return json(res, 404, { error: { message: 'no', type: 'NoSuchTableException', code: 404 } });
  };
}

function write(name: string, text: string): string {
  const p = path.join(dir, name);
  // Rename like a Secret volume's atomic swap: a new inode, never a half-written file.
  writeFileSync(`${p}.tmp`, text);
  renameSync(`${p}.tmp`, p);
  return p;
}

const authDefaults = { refreshMarginMs: 60_000, tokenRetriesMax: 4 };

void test('bearer: the token file is sent, re-read when it changes, and again after a 401', async () => {
  let valid = 'tok-1';
  handler = catalogAccepting(() => valid);
  const file = write('token', 'tok-1\n');
  const catalog = restCatalogFrom({
    catalogUri: base,
    requestTimeoutMs: 5_000,
    conflictRetriesMax: 0,
    auth: { type: 'bearer', tokenFile: file, ...authDefaults },
  });
  seen.length = 0;
  await catalog.ensureNamespace('a');
  assert.deepEqual(
    seen.map((s) => s.authorization),
    ['Bearer tok-1', 'Bearer tok-1'],
    'config and namespace calls carry the token, without its newline',
  );

  // Rotation: the file is replaced, the catalog moves on with it.
  valid = 'tok-2';
  write('token', 'tok-2\n');
  seen.length = 0;
  await catalog.ensureNamespace('b');
  assert.deepEqual(
    seen.map((s) => s.authorization),
    ['Bearer tok-2'],
  );

  // The catalog refuses a token the file still holds: one retry, then a coded error without the token.
  valid = 'tok-3';
  seen.length = 0;
  const err = await catalog.ensureNamespace('c').then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(err instanceof IcebergError);
  assert.equal(err.code, 'ICEBERG_CATALOG_AUTH_FAILED');
  assert.equal(err.status, 401);
  assert.ok(!err.message.includes('tok-2'), err.message);
  assert.equal(seen.length, 2, 'a 401 is retried once with the file read again, not more');

  // The file now holds what the catalog wants, same size, maybe the same mtime tick: read again after the 401.
  writeFileSync(file, 'tok-3\n');
  seen.length = 0;
  await catalog.ensureNamespace('d');
  assert.deepEqual(
    seen.map((s) => s.authorization),
    ['Bearer tok-3'],
  );
});

void test('bearer: a missing or empty token file is a coded error naming the file', async () => {
  const missing = new BearerFileAuth(path.join(dir, 'nope'));
  await assert.rejects(missing.authorization(), (e: unknown) => {
    assert.ok(e instanceof IcebergError);
    assert.equal(e.code, 'ICEBERG_CATALOG_AUTH_FAILED');
    assert.match(e.message, /nope: ENOENT/);
    return true;
  });
  const empty = new BearerFileAuth(write('empty', '\n'));
  await assert.rejects(empty.authorization(), /is empty/);
});

function oauth(o: Partial<OAuth2Options> = {}): OAuth2ClientCredentialsAuth {
  return new OAuth2ClientCredentialsAuth({
    tokenUri: `${base}/v1/oauth/tokens`,
    clientIdFile: write('client-id', 'lf-client\n'),
    clientSecretFile: write('client-secret', 's3cr3t-value\n'),
    refreshMarginMs: 60_000,
    retriesMax: 3,
    retryDelayMsBase: 1,
    retryDelayMsMax: 2,
    requestTimeoutMs: 5_000,
    ...o,
  });
}

void test('oauth2: client credentials posted as a form, one token shared, replaced before it expires', async () => {
  let issued = 0;
  let current = '';
  handler = catalogAccepting(
    () => current,
    (_req, res) => {
      issued++;
      current = `access-${issued}`;
      json(res, 200, { access_token: current, token_type: 'bearer', expires_in: 3600 });
    },
  );
  let now = 1_000_000;
  const auth = oauth({ nowMs: () => now, scope: 'catalog' });
  seen.length = 0;
  const c = new RestCatalog({ uri: base, auth });
  await Promise.all([c.ensureNamespace('a'), c.ensureNamespace('b'), c.ensureNamespace('c')]);
  const tokenReqs = seen.filter((s) => s.url === '/v1/oauth/tokens');
  assert.equal(tokenReqs.length, 1, 'concurrent requests share one token request');
  const form = new URLSearchParams(tokenReqs[0]?.body);
  assert.equal(form.get('grant_type'), 'client_credentials');
  assert.equal(form.get('client_id'), 'lf-client');
  assert.equal(form.get('client_secret'), 's3cr3t-value');
  assert.equal(form.get('scope'), 'catalog');
  assert.equal(tokenReqs[0]?.authorization, undefined, 'no bearer header on the token request');
  for (const s of seen.filter((x) => x.url !== '/v1/oauth/tokens'))
    assert.equal(s.authorization, 'Bearer access-1');

  // 59 min later, within the 60 s margin... not yet: 3600 s - 60 s = 3540 s.
  now += 3_539_000;
  await c.ensureNamespace('d');
  assert.equal(issued, 1, 'still before the refresh point');
  now += 2_000;
  seen.length = 0;
  await c.ensureNamespace('e');
  assert.equal(issued, 2, 'replaced within the margin before expiry, before the catalog refuses it');
  assert.deepEqual(
    seen.map((s) => s.url === '/v1/oauth/tokens' || s.authorization),
    [true, 'Bearer access-2'],
  );
});

void test('oauth2: a token refused by the catalog (no expires_in, not a JWT) is fetched anew once', async () => {
  let issued = 0;
  let current = 'revoked';
  handler = catalogAccepting(
    () => current,
    (_req, res) => {
      issued++;
      json(res, 200, { access_token: `opaque-${issued}`, token_type: 'Bearer' });
    },
  );
  const c = new RestCatalog({ uri: base, auth: oauth() });
  current = 'opaque-2';
  seen.length = 0;
  await c.ensureNamespace('a');
  assert.deepEqual(
    seen.map((s) => (s.url === '/v1/oauth/tokens' ? 'token' : s.authorization)),
    ['token', 'Bearer opaque-1', 'token', 'Bearer opaque-2', 'Bearer opaque-2'],
    'config refused with opaque-1, a new token, config and namespace with opaque-2',
  );
});

void test('oauth2: 5xx retried a bounded number of times; a refused client not at all; secrets in no message or log line', async () => {
  const lines: string[] = [];
  const log = jsonLogger('debug', (l) => lines.push(l));
  let calls = 0;
  handler = (_req, res) => {
    calls++;
    json(res, 503, { error: 'temporarily_unavailable' });
  };
  const slept: number[] = [];
  const down = oauth({ log, sleep: (ms) => Promise.resolve(slept.push(ms)) });
  await assert.rejects(down.authorization(), (e: unknown) => {
    assert.ok(e instanceof IcebergError);
    assert.equal(e.code, 'ICEBERG_CATALOG_UNAVAILABLE');
    return true;
  });
  assert.equal(calls, 4, 'the first request and retriesMax (3) retries');
  assert.equal(slept.length, 3);
  for (const ms of slept) assert.ok(ms >= 0 && ms <= 2, `delay ${ms} within retryDelayMsMax`);

  calls = 0;
  handler = (_req, res) => {
    calls++;
    json(res, 401, { error: 'invalid_client', error_description: 'client authentication failed' });
  };
  const refused = oauth({ log });
  const err = await refused.authorization().then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(err instanceof IcebergError);
  assert.equal(err.code, 'ICEBERG_CATALOG_AUTH_FAILED');
  assert.match(err.message, /401 invalid_client: client authentication failed/);
  assert.equal(calls, 1, 'a refused client is not retried at once');
  log.error({ err, iceberg: { client_secret: 's3cr3t-value', access_token: 'access-x' } }, 'failed');
  for (const line of lines) {
    assert.ok(!line.includes('s3cr3t-value'), `the secret leaked: ${line}`);
    assert.ok(!line.includes('access-x'), `a token leaked: ${line}`);
  }
  assert.ok(!err.message.includes('s3cr3t-value'));
});

void test('oauth2: while the token endpoint is down, a token due for refresh but unexpired is still used', async () => {
  let up = true;
  handler = catalogAccepting(
    () => 'only',
    (_req, res) => (up ? json(res, 200, { access_token: 'only', expires_in: 600 }) : json(res, 502, {})),
  );
  let now = 0;
  const auth = oauth({ nowMs: () => now, refreshMarginMs: 120_000 });
  assert.equal(await auth.authorization(), 'Bearer only');
  up = false;
  now = 500_000; // past the refresh point (480 s), before expiry (600 s)
  assert.equal(await auth.authorization(), 'Bearer only');
  now = 600_000;
  await assert.rejects(auth.authorization(), /502/);
});

void test('oauth2: expires_in as a string counts; a JWT exp without expires_in; an unknown token_type is refused', async () => {
  const exp = Math.floor(Date.UTC(2030, 0, 1) / 1000);
  const jwt = `e30.${Buffer.from(JSON.stringify({ exp })).toString('base64url')}.sig`;
  let answer: Record<string, unknown> = {};
  handler = (_req, res) => json(res, 200, answer);
  let now = 0;
  const issued = (): Promise<string> => oauth({ nowMs: () => now, refreshMarginMs: 10_000 }).authorization();

  answer = { access_token: 'a', token_type: 'N_A', expires_in: '100' };
  const a = oauth({ nowMs: () => now, refreshMarginMs: 10_000 });
  assert.equal(await a.authorization(), 'Bearer a');
  answer = { access_token: 'b', token_type: 'bearer', expires_in: 100 };
  now = 89_000;
  assert.equal(await a.authorization(), 'Bearer a', 'kept until 100 s - 10 s');
  now = 90_000;
  assert.equal(await a.authorization(), 'Bearer b', 'the string expires_in was read');

  now = exp * 1000 - 5 * 60_000;
  answer = { access_token: jwt };
  const j = oauth({ nowMs: () => now, refreshMarginMs: 60_000 });
  assert.equal(await j.authorization(), `Bearer ${jwt}`);
  answer = { access_token: 'after-exp' };
  now = exp * 1000 - 61_000;
  assert.equal(await j.authorization(), `Bearer ${jwt}`, 'before exp - margin');
  now = exp * 1000 - 59_000;
  assert.equal(await j.authorization(), 'Bearer after-exp', 'replaced within the margin before the JWT exp');

  answer = { access_token: 'mac', token_type: 'mac' };
  await assert.rejects(issued(), /token_type mac is not supported/);
});

void test('a JWT access token without expires_in expires at its exp claim', () => {
  const payload = Buffer.from(JSON.stringify({ sub: 'x', exp: 1_900_000_000 })).toString('base64url');
  assert.equal(jwtExpiryMs(`e30.${payload}.sig`), 1_900_000_000_000);
  assert.equal(jwtExpiryMs('opaque'), undefined);
  assert.equal(jwtExpiryMs('a.b.c'), undefined);
});

void test('config: iceberg.auth needs the files of its type and refuses the files of another', () => {
  const load = (values: object): string => {
    try {
      loadConfig({ values: { wal: { dir: dir }, ...values } });
      return '';
    } catch (err) {
      return (err as Error).message;
    }
  };
  assert.match(load({ iceberg: { auth: { type: 'bearer' } } }), /iceberg\.auth\.tokenFile is not set/);
  assert.match(
    load({ iceberg: { auth: { type: 'oauth2', clientIdFile: '/x' } } }),
    /iceberg\.auth\.clientSecretFile is not set/,
  );
  assert.match(
    load({ iceberg: { auth: { type: 'none', clientSecretFile: '/x' } } }),
    /clientSecretFile is set but iceberg\.auth\.type is none/,
  );
  assert.match(load({ iceberg: { auth: { type: 'basic' } } }), /iceberg\.auth\.type/);
  assert.equal(
    load({ iceberg: { auth: { type: 'oauth2', clientIdFile: '/a', clientSecretFile: '/b' } } }),
    '',
  );
  assert.match(load({ iceberg: { auth: { type: 'sigv4' } } }), /iceberg\.auth\.signingName is not set/);
  assert.match(
    load({
      iceberg: { catalogUri: 'https://catalog.example:8181', auth: { type: 'sigv4', signingName: 'glue' } },
    }),
    /signingRegion is not set and iceberg\.catalogUri names no region/,
  );
  assert.equal(
    load({
      iceberg: {
        catalogUri: 'https://glue.eu-west-1.amazonaws.com/iceberg',
        auth: { type: 'sigv4', signingName: 'glue' },
      },
    }),
    '',
  );
  assert.match(
    load({
      iceberg: { auth: { type: 'oauth2', clientIdFile: '/a', clientSecretFile: '/b', signingName: 'glue' } },
    }),
    /signingName is set but iceberg\.auth\.type is oauth2/,
  );
  assert.equal(regionOfAwsHost('glue.eu-west-1.amazonaws.com'), 'eu-west-1');
  assert.equal(regionOfAwsHost('s3tables.us-gov-west-1.amazonaws.com'), 'us-gov-west-1');
  assert.equal(regionOfAwsHost('catalog.example'), undefined);
});
