// Catalog auth end to end: `landfall serve` with `iceberg.auth.type=oauth2`
// against Apache Iceberg's RESTCatalogServer, whose RESTCatalogAdapter
// answers the spec's client-credentials route (`POST /v1/oauth/tokens`,
// token `client-credentials-token:sub=<client_id>`, no expiry). The server
// never checks the Authorization header of other calls, so a small recording
// proxy sits in front of it: what it shows is the real server's token answer
// reaching the node and coming back as the header of every catalog call.
// PyIceberg then scans the rows from the table the node committed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { scratchDir, startIcebergCatalog, startMinio, waitFor } from '../harness/index.ts';
import type { IcebergCatalog, MinioServer } from '../harness/index.ts';
import { post, serve, type ServeNode } from './helpers/views.ts';
import { SigV4Auth } from '../../ingest-node/src/iceberg/auth.ts';
import { RestCatalog } from '../../ingest-node/src/iceberg/catalog.ts';
import { IcebergError } from '../../ingest-node/src/iceberg/errors.ts';

interface Seen {
  method: string;
  url: string;
  authorization: string | undefined;
  body: string;
  status: number;
  answer: string;
}

let minio: MinioServer;
let catalog: IcebergCatalog;
let proxy: Server;
let proxyUri: string;
let node: ServeNode | undefined;
const seen: Seen[] = [];

before(async () => {
  minio = await startMinio();
  catalog = await startIcebergCatalog({ minio });
  const target = new URL(catalog.uri);
  proxy = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const up = request(
        {
          host: target.hostname,
          port: target.port,
          method: req.method,
          path: req.url,
          // Plain answers, so the proxy can read them (fetch asks for gzip, which Jetty gives).
          headers: { ...req.headers, host: target.host, 'accept-encoding': 'identity' },
        },
        (upRes) => {
          const out: Buffer[] = [];
          upRes.on('data', (c: Buffer) => out.push(c));
          upRes.on('end', () => {
            const answer = Buffer.concat(out);
            seen.push({
              method: req.method ?? '',
              url: req.url ?? '',
              authorization: req.headers.authorization,
              body: body.toString('utf8'),
              status: upRes.statusCode ?? 0,
              answer: answer.toString('utf8'),
            });
            res.writeHead(upRes.statusCode ?? 502, upRes.headers).end(answer);
          });
        },
      );
      up.on('error', () => res.writeHead(502).end());
      up.end(body);
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const a = proxy.address();
  if (a === null || typeof a === 'string') throw new Error('no proxy port');
  proxyUri = `http://127.0.0.1:${a.port}`;
});
after(async () => {
  await node?.proc.stop({ graceMs: 5_000 });
  await new Promise<void>((resolve) => proxy?.close(() => resolve()));
  await catalog?.stop();
  await minio?.stop();
});

const VIEW = `
name: orders
columns:
  - { name: id,  type: BIGINT,  path: $.id, required: true }
  - { name: sku, type: VARCHAR, path: $.sku }
iceberg: { namespace: authed, table: orders }
`;

const SECRET = 'client-secret-never-logged-5d1f';

void test('oauth2 client credentials from files: the real catalog’s token is the Authorization of every call; rows land', async () => {
  const dir = scratchDir('iceberg-auth-node');
  const viewsDir = path.join(dir, 'views');
  const secrets = path.join(dir, 'secrets');
  await mkdir(viewsDir, { recursive: true });
  await mkdir(secrets, { recursive: true });
  await writeFile(path.join(viewsDir, 'orders.yaml'), VIEW);
  await writeFile(path.join(secrets, 'client-id'), 'lf-node\n');
  await writeFile(path.join(secrets, 'client-secret'), `${SECRET}\n`);
  const logPath = path.join(dir, 'node.log');
  node = await serve('landfall-iceberg-auth', minio, logPath, [
    `--s3.bucket=${minio.bucket}`,
    `--s3.endpointUrl=${minio.endpoint}`,
    '--s3.prefix=auth',
    '--endpoint.name=shop',
    '--instance.id=shop-0',
    `--wal.dir=${path.join(dir, 'wal')}`,
    '--wal.segmentAgeMsMax=400',
    `--views.dir=${viewsDir}`,
    '--views.threads=1',
    '--delivery.staleUploadAgeMs=0',
    `--iceberg.catalogUri=${proxyUri}`,
    `--iceberg.warehouse=${catalog.warehouse}`,
    '--iceberg.auth.type=oauth2',
    `--iceberg.auth.clientIdFile=${path.join(secrets, 'client-id')}`,
    `--iceberg.auth.clientSecretFile=${path.join(secrets, 'client-secret')}`,
    '--iceberg.auth.scope=catalog',
  ]);
  await post(
    node.url,
    [1, 2, 3].map((id) => JSON.stringify({ id, sku: `s${id}` })),
  );
  await waitFor(() => node?.logs().find((l) => l.msg === 'iceberg snapshot committed'), {
    what: 'the table commit',
    timeoutMs: 60_000,
    intervalMs: 50,
    process: node.proc,
  });

  const token = seen.filter((s) => s.url === '/v1/oauth/tokens');
  assert.equal(token.length, 1, 'one token for every call (the server gives no expiry; none was refused)');
  assert.equal(token[0]?.status, 200, `the real server's token route answered: ${token[0]?.answer}`);
  const form = new URLSearchParams(token[0]?.body);
  assert.equal(form.get('grant_type'), 'client_credentials');
  assert.equal(form.get('client_id'), 'lf-node');
  assert.equal(form.get('client_secret'), SECRET);
  assert.equal(form.get('scope'), 'catalog');
  const issued = (JSON.parse(token[0]?.answer ?? '{}') as { access_token?: string }).access_token;
  assert.equal(issued, 'client-credentials-token:sub=lf-node', 'the token RESTCatalogAdapter issues');

  const calls = seen.filter((s) => s.url !== '/v1/oauth/tokens');
  assert.ok(
    calls.some((c) => c.method === 'POST' && c.url.endsWith('/tables/orders')),
    `a table commit went through the proxy: ${calls.map((c) => `${c.method} ${c.url}`).join(', ')}`,
  );
  for (const c of calls) assert.equal(c.authorization, `Bearer ${issued}`, `${c.method} ${c.url}`);

  const log = readFileSync(logPath, 'utf8');
  assert.ok(!log.includes(SECRET), 'the client secret is in no log line');
  assert.ok(!log.includes(String(issued)), 'the token is in no log line');
  assert.ok(
    node.logs().some((l) => l.msg === 'iceberg catalog OAuth2 token obtained'),
    'the token fetch itself is logged (without the token)',
  );

  const scan = await catalog.python(String.raw`
import json, os
from pyiceberg.catalog import load_catalog
cat = load_catalog('testbed', **json.loads(os.environ['TESTBED_ICEBERG_PROPS']))
print(json.dumps(sorted(cat.load_table('authed.orders').scan().to_arrow().column('id').to_pylist())))
`);
  assert.deepEqual(JSON.parse(scan.stdout.trim()), [1, 2, 3]);
});

// SigV4 has no AWS endpoint here; MinIO is a real SigV4 verifier (signing
// name `s3`). The same signer, with `glue` or `s3tables`, signs catalog calls.
void test('sigv4: MinIO accepts what the catalog signer signs (query, body) and refuses a wrong secret', async () => {
  const good = new SigV4Auth({
    signingName: 's3',
    region: minio.region,
    credentials: () =>
      Promise.resolve({ accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey }),
  });
  const send = async (auth: SigV4Auth, method: string, url: URL, body?: string): Promise<Response> => {
    const headers: Record<string, string> = body !== undefined ? { 'content-type': 'application/json' } : {};
    const signed = await auth.sign({ method, url, headers, body });
    return fetch(url, {
      method,
      headers: { ...headers, ...signed },
      ...(body !== undefined ? { body } : {}),
    });
  };
  const key = `sigv4/${Date.now()}.json`;
  const objectUrl = new URL(`${minio.endpoint}/${minio.bucket}/${key}`);
  const put = await send(good, 'PUT', objectUrl, '{"namespace":["a b/c"]}');
  assert.equal(put.status, 200, await put.text());
  const list = await send(
    good,
    'GET',
    new URL(`${minio.endpoint}/${minio.bucket}?list-type=2&prefix=${encodeURIComponent('sigv4/')}`),
  );
  const listed = await list.text();
  assert.equal(list.status, 200, listed);
  assert.match(listed, new RegExp(key.replace('.', '\\.')), 'the signed query was verified and applied');
  const got = await send(good, 'GET', objectUrl);
  assert.equal(await got.text(), '{"namespace":["a b/c"]}', 'the signed body arrived as signed');

  const bad = new SigV4Auth({
    signingName: 's3',
    region: minio.region,
    credentials: () => Promise.resolve({ accessKeyId: minio.accessKeyId, secretAccessKey: 'not-the-secret' }),
  });
  const refused = await send(bad, 'PUT', objectUrl, '{}');
  assert.equal(refused.status, 403);
  assert.match(await refused.text(), /SignatureDoesNotMatch/);

  // Through the catalog client (base URI inside the bucket): a signed
  // GET …/v1/config?warehouse=… passes MinIO's signature check and finds no
  // such object (404); signed with the wrong secret it stops at the check (403).
  const c = new RestCatalog({ uri: `${minio.endpoint}/${minio.bucket}`, warehouse: 's3://x/y', auth: good });
  await assert.rejects(c.ensureNamespace('n'), (e: unknown) => {
    assert.ok(e instanceof IcebergError, String(e));
    assert.equal(e.status, 404, e.message);
    assert.match(e.message, /NoSuchKey/);
    return true;
  });
  const cBad = new RestCatalog({
    uri: `${minio.endpoint}/${minio.bucket}`,
    warehouse: 's3://x/y',
    auth: bad,
  });
  await assert.rejects(cBad.ensureNamespace('n'), (e: unknown) => {
    assert.ok(e instanceof IcebergError, String(e));
    assert.equal(e.status, 403, e.message);
    assert.match(e.message, /SignatureDoesNotMatch/);
    return true;
  });
});
