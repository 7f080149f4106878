// Credentials: AssumeRole carries RoleArn and ExternalId (observed at the
// wire by a tiny local STS endpoint), results are cached and refreshed before
// expiry, and MinIO-issued temporary credentials work end to end.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startMinio, type MinioServer } from '../../test/harness/index.ts';
import { cachedCredentials, createCredentialsProvider } from '../src/credentials.ts';
import { sha256Hex } from '../src/store/hashing.ts';
import { createS3Client, S3ObjectStore } from '../src/store/s3.ts';
import { FakeClock } from './helpers/fakes.ts';

interface Recorded {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  form: URLSearchParams;
}

/** A stand-in STS endpoint: records each request, answers like STS does. */
class StsObserver {
  readonly requests: Recorded[] = [];
  /** Expiration handed out: a function of the fake clock. */
  expirationMs: () => number = () => Date.now() + 3_600_000;
  failNext = 0;
  #server: Server | undefined;
  endpoint = '';
  #issued = 0;

  async start(): Promise<void> {
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const form = new URLSearchParams(Buffer.concat(chunks).toString());
        this.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, form });
        if (this.failNext > 0) {
          this.failNext--;
          res.writeHead(500, { 'content-type': 'text/xml' });
          res.end(
            '<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code><Message>boom</Message></Error><RequestId>r</RequestId></ErrorResponse>',
          );
          return;
        }
        const n = ++this.#issued;
        res.writeHead(200, { 'content-type': 'text/xml' });
        if (form.get('Action') === 'AssumeRoleWithWebIdentity') {
          res.end(`<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>ASIAWEB${n}</AccessKeyId>
      <SecretAccessKey>secret-${n}</SecretAccessKey>
      <SessionToken>token-${n}</SessionToken>
      <Expiration>${new Date(this.expirationMs()).toISOString()}</Expiration>
    </Credentials>
    <SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>
    <AssumedRoleUser><AssumedRoleId>AROAWEB:x</AssumedRoleId><Arn>arn:aws:sts::111122223333:assumed-role/r/x</Arn></AssumedRoleUser>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>req-${n}</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>`);
          return;
        }
        res.end(`<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>ASIATEMP${n}</AccessKeyId>
      <SecretAccessKey>secret-${n}</SecretAccessKey>
      <SessionToken>token-${n}</SessionToken>
      <Expiration>${new Date(this.expirationMs()).toISOString()}</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <AssumedRoleId>AROATEST:${form.get('RoleSessionName') ?? ''}</AssumedRoleId>
      <Arn>arn:aws:sts::111122223333:assumed-role/landfall-writer/${form.get('RoleSessionName') ?? ''}</Arn>
    </AssumedRoleUser>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>req-${n}</RequestId></ResponseMetadata>
</AssumeRoleResponse>`);
      });
    });
    await new Promise<void>((resolve) => this.#server?.listen(0, '127.0.0.1', resolve));
    this.endpoint = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.#server?.closeAllConnections();
    await new Promise<void>((resolve) => this.#server?.close(() => resolve()));
  }
}

void describe('AssumeRole with ExternalId (local STS observer)', () => {
  const sts = new StsObserver();
  before(() => sts.start());
  after(() => sts.stop());

  const roleArn = 'arn:aws:iam::111122223333:role/landfall-writer';
  const provider = (clock: FakeClock) =>
    createCredentialsProvider(
      {
        mode: 'assumeRole',
        roleArn,
        externalId: 'ext-7f3a9c',
        sessionName: 'landfall-orders-0',
        durationSeconds: 900,
        stsRegion: 'eu-west-1',
        stsEndpoint: sts.endpoint,
        source: { mode: 'static', accessKeyId: 'AKIDSOURCE', secretAccessKey: 'source-secret' },
      },
      { clock },
    );

  void test('the request carries RoleArn, ExternalId, session name and duration, signed by the source identity', async () => {
    sts.requests.length = 0;
    const clock = new FakeClock();
    clock.ms = Date.now();
    sts.expirationMs = () => clock.ms + 3_600_000;
    const creds = await provider(clock)();
    assert.match(creds.accessKeyId, /^ASIATEMP\d+$/);
    assert.match(creds.sessionToken ?? '', /^token-\d+$/);
    assert.ok(creds.expiration instanceof Date);

    assert.equal(sts.requests.length, 1);
    const req = sts.requests[0]!;
    assert.equal(req.method, 'POST');
    assert.equal(req.form.get('Action'), 'AssumeRole');
    assert.equal(req.form.get('Version'), '2011-06-15');
    assert.equal(req.form.get('RoleArn'), roleArn);
    assert.equal(req.form.get('ExternalId'), 'ext-7f3a9c');
    assert.equal(req.form.get('RoleSessionName'), 'landfall-orders-0');
    assert.equal(req.form.get('DurationSeconds'), '900');
    assert.match(
      String(req.headers.authorization),
      /^AWS4-HMAC-SHA256 Credential=AKIDSOURCE\/\d{8}\/eu-west-1\/sts\/aws4_request/,
    );
  });

  void test('credentials are cached, refreshed inside the window before expiry, one refresh for many callers', async () => {
    sts.requests.length = 0;
    const clock = new FakeClock();
    clock.ms = Date.now();
    sts.expirationMs = () => clock.ms + 3_600_000;
    const get = provider(clock);
    const first = await get();
    for (let i = 0; i < 5; i++) assert.deepEqual(await get(), first);
    assert.equal(sts.requests.length, 1, 'cached');

    clock.advance(3_600_000 - 6 * 60_000); // 6 min before expiry: still outside the 5 min window
    assert.deepEqual(await get(), first);
    assert.equal(sts.requests.length, 1);

    clock.advance(2 * 60_000); // 4 min before expiry: refresh
    const refreshed = await Promise.all(Array.from({ length: 10 }, () => get()));
    assert.equal(sts.requests.length, 2, 'ten concurrent callers, one STS call');
    assert.notEqual(refreshed[0]?.accessKeyId, first.accessKeyId);
    assert.ok(refreshed.every((c) => c.accessKeyId === refreshed[0]?.accessKeyId));
  });

  void test('a failed refresh keeps the current credentials until they actually expire, then fails', async () => {
    sts.requests.length = 0;
    const clock = new FakeClock();
    clock.ms = Date.now();
    sts.expirationMs = () => clock.ms + 3_600_000;
    const get = provider(clock);
    const first = await get();
    clock.advance(3_600_000 - 60_000); // inside the window, not yet expired
    sts.failNext = 100;
    assert.deepEqual(await get(), first);
    clock.advance(2 * 60_000); // now expired
    await assert.rejects(get());
    sts.failNext = 0;
    const fresh = await get();
    assert.notEqual(fresh.accessKeyId, first.accessKeyId);
  });

  // Issue 14: after a failed refresh every S3 call made another STS call.
  void test('a failed refresh is retried with bounded backoff, not on every call, until the credentials expire', async () => {
    sts.requests.length = 0;
    const clock = new FakeClock();
    clock.ms = Date.now();
    sts.expirationMs = () => clock.ms + 3_600_000;
    const get = provider(clock);
    const first = await get();
    assert.equal(sts.requests.length, 1);
    clock.advance(3_600_000 - 4 * 60_000); // inside the refresh window, 4 min left
    sts.failNext = 1_000_000;
    // A burst of S3 calls during an STS outage: one refresh attempt.
    for (let i = 0; i < 50; i++) assert.deepEqual(await get(), first);
    const afterBurst = sts.requests.length;
    assert.ok(afterBurst >= 2 && afterBurst <= 4, `${afterBurst - 1} STS requests for 50 calls`); // the SDK's own retries of one attempt
    // Backoff doubles from 1 s up to 60 s: count attempts over the remaining 4 minutes, calling every 100 ms.
    let attempts = 1;
    let seen = afterBurst;
    for (let t = 0; t < 4 * 60_000 - 1_000; t += 100) {
      clock.advance(100);
      assert.deepEqual(await get(), first);
      if (sts.requests.length > seen) {
        attempts++;
        seen = sts.requests.length;
      }
    }
    // 1+2+4+…+32 s, then every 60 s: about 9 attempts in 4 min, not 2,400.
    assert.ok(attempts >= 6 && attempts <= 12, `${attempts} refresh attempts in 4 min`);
    // Expired: no stale credentials are ever served.
    clock.advance(2_000);
    await assert.rejects(get());
    sts.failNext = 0;
    const fresh = await get();
    assert.notEqual(fresh.accessKeyId, first.accessKeyId);
  });

  void test('short-lived credentials refresh at half-life, not on every call', async () => {
    const clock = new FakeClock();
    let calls = 0;
    const get = cachedCredentials(
      async () => ({
        accessKeyId: `k${++calls}`,
        secretAccessKey: 's',
        expiration: new Date(clock.nowMs() + 4 * 60_000), // shorter than the 5 min window
      }),
      { clock },
    );
    await get();
    await get();
    assert.equal(calls, 1);
    clock.advance(2 * 60_000 + 1);
    await get();
    assert.equal(calls, 2);
  });

  void test('webIdentity (IRSA with the role from config) exchanges the projected token, unsigned', async () => {
    sts.requests.length = 0;
    const dir = await mkdtemp(path.join(tmpdir(), 'landfall-irsa-'));
    try {
      const tokenFile = path.join(dir, 'token');
      await writeFile(tokenFile, 'eyJhbGciOiJSUzI1NiJ9.projected.token');
      const get = createCredentialsProvider({
        mode: 'webIdentity',
        roleArn: 'arn:aws:iam::111122223333:role/landfall-irsa',
        tokenFile,
        sessionName: 'landfall-orders-0',
        stsRegion: 'eu-west-1',
        stsEndpoint: sts.endpoint,
      });
      const creds = await get();
      assert.match(creds.accessKeyId, /^ASIAWEB\d+$/);
      await get();
      assert.equal(sts.requests.length, 1, 'cached');
      const req = sts.requests[0]!;
      assert.equal(req.form.get('Action'), 'AssumeRoleWithWebIdentity');
      assert.equal(req.form.get('RoleArn'), 'arn:aws:iam::111122223333:role/landfall-irsa');
      assert.equal(req.form.get('WebIdentityToken'), 'eyJhbGciOiJSUzI1NiJ9.projected.token');
      assert.equal(req.form.get('RoleSessionName'), 'landfall-orders-0');
      assert.equal(req.headers.authorization, undefined, 'the token is the credential; no signature');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  void test('static credentials need both halves; AssumeRole parameters are checked up front', () => {
    assert.throws(() => createCredentialsProvider({ mode: 'static', accessKeyId: '', secretAccessKey: 'x' }));
    assert.throws(() =>
      createCredentialsProvider({
        mode: 'assumeRole',
        roleArn: 'arn:x',
        sessionName: 'bad name with spaces',
      }),
    );
    assert.throws(() =>
      createCredentialsProvider({ mode: 'assumeRole', roleArn: 'arn:x', durationSeconds: 60 }),
    );
  });
});

void describe('MinIO-issued temporary credentials (STS AssumeRole with the root user)', () => {
  let minio: MinioServer;
  before(async () => {
    minio = await startMinio();
  });
  after(async () => {
    await minio?.stop();
  });

  void test('put, head, get and createIfAbsent work with the temporary credentials', async () => {
    const provider = createCredentialsProvider({
      mode: 'assumeRole',
      // MinIO ignores the role for a plain AssumeRole: the session inherits the caller's policy.
      roleArn: 'arn:minio:iam:::role/landfall',
      externalId: 'ext-123',
      durationSeconds: 900,
      stsRegion: minio.region,
      stsEndpoint: minio.endpoint,
      source: { mode: 'static', accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
    });
    const creds = await provider();
    assert.notEqual(creds.accessKeyId, minio.accessKeyId, 'temporary, not the root key');
    assert.ok((creds.sessionToken ?? '').length > 0);
    assert.ok(creds.expiration !== undefined && creds.expiration.getTime() > Date.now());

    const client = createS3Client({ region: minio.region, endpoint: minio.endpoint, credentials: provider });
    try {
      const store = new S3ObjectStore({ client, bucket: minio.bucket });
      const body = Buffer.from('{"via":"sts"}\n');
      await store.put('sts/object.json', body);
      assert.equal((await store.head('sts/object.json'))?.sha256, sha256Hex(body));
      assert.deepEqual(await store.get('sts/object.json'), body);
      assert.deepEqual(await store.createIfAbsent('sts/marker.json', body), { created: true });
      assert.deepEqual(await store.createIfAbsent('sts/marker.json', body), { created: false });
    } finally {
      client.destroy();
    }
  });
});
