// What only the S3 implementation has: multipart uploads, stale-upload
// cleanup, and error classification against a real MinIO (stopped, missing
// bucket, wrong key).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes, type Hash, type Hmac } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { startMinio, type MinioServer } from '../../test/harness/index.ts';
import { classifyError, isRetryable, StoreError } from '../src/store/errors.ts';
import { sha256Hex } from '../src/store/hashing.ts';
import { createS3Client, S3ObjectStore } from '../src/store/s3.ts';
import { withRetry } from '../src/delivery/retry.ts';
import { FakeClock } from './helpers/fakes.ts';

const MiB = 1024 * 1024;

function chunked(buf: Buffer, chunkBytes: number): Readable {
  const chunks: Buffer[] = [];
  for (let i = 0; i < buf.length; i += chunkBytes) chunks.push(buf.subarray(i, i + chunkBytes));
  return Readable.from(chunks);
}

async function uploadsIn(s3: S3Client, bucket: string): Promise<string[]> {
  const out = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
  return (out.Uploads ?? []).map((u) => u.Key ?? '');
}

async function storeError(p: Promise<unknown>): Promise<StoreError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof StoreError, `expected a StoreError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a StoreError, got success');
}

void describe('S3ObjectStore on MinIO', () => {
  let minio: MinioServer;
  let client: S3Client;
  let raw: S3Client;
  const clientFor = (m: MinioServer, overrides: { secretAccessKey?: string; maxAttempts?: number } = {}) =>
    createS3Client({
      region: m.region,
      endpoint: m.endpoint,
      credentials: {
        accessKeyId: m.accessKeyId,
        secretAccessKey: overrides.secretAccessKey ?? m.secretAccessKey,
      },
      maxAttempts: overrides.maxAttempts ?? 3,
      connectTimeoutMs: 1000,
    });

  before(async () => {
    minio = await startMinio();
    client = clientFor(minio);
    raw = minio.s3();
  });
  after(async () => {
    client?.destroy();
    await minio?.stop();
  });

  void test('a 20 MiB buffer and a 20 MiB stream go up as 4-part multipart uploads with sha256 metadata', async () => {
    const store = new S3ObjectStore({ client, bucket: minio.bucket, partBytes: 6 * MiB, partConcurrency: 3 });
    const body = randomBytes(20 * MiB);
    const sha = sha256Hex(body);

    const fromBuffer = await store.put('mp/buffer.bin', body, { sha256: sha });
    assert.deepEqual(fromBuffer, { key: 'mp/buffer.bin', bytes: body.length, sha256: sha, multipart: true });
    const fromStream = await store.put('mp/stream.bin', chunked(body, 64 * 1024), { sha256: sha });
    assert.deepEqual(fromStream, { key: 'mp/stream.bin', bytes: body.length, sha256: sha, multipart: true });

    for (const key of ['mp/buffer.bin', 'mp/stream.bin']) {
      assert.equal((await store.head(key))?.sha256, sha);
      // A multipart ETag is "<md5 of part md5s>-<parts>": 20 MiB / 6 MiB parts = 4.
      const h = await raw.send(new HeadObjectCommand({ Bucket: minio.bucket, Key: key }));
      assert.match(h.ETag ?? '', /-4"$/, key);
      const got = await store.getStream(key);
      assert.ok(got);
      const chunks: Buffer[] = [];
      for await (const c of got) chunks.push(c as Buffer);
      assert.equal(sha256Hex(Buffer.concat(chunks)), sha);
    }
    assert.deepEqual(await uploadsIn(raw, minio.bucket), []);
  });

  void test('a multipart stream whose bytes do not match its sha256 is aborted, never completed', async () => {
    const store = new S3ObjectStore({ client, bucket: minio.bucket, partBytes: 5 * MiB });
    const body = randomBytes(12 * MiB);
    const err = await storeError(
      store.put('mp/wrong.bin', chunked(body, 256 * 1024), { sha256: sha256Hex(body.subarray(1)) }),
    );
    assert.equal(err.code, 'checksum_mismatch');
    assert.equal(err.retryable, false);
    assert.equal(await store.head('mp/wrong.bin'), null);
    assert.deepEqual(await uploadsIn(raw, minio.bucket), [], 'the multipart upload was aborted');
  });

  void test('a wrong contentLength on a multipart stream is caught the same way', async () => {
    const store = new S3ObjectStore({ client, bucket: minio.bucket, partBytes: 5 * MiB });
    const body = randomBytes(11 * MiB);
    const err = await storeError(
      store.put('mp/short.bin', chunked(body, 1 * MiB), { contentLength: body.length + 1 }),
    );
    assert.equal(err.code, 'checksum_mismatch', err.message);
    assert.equal(await store.head('mp/short.bin'), null);
    assert.deepEqual(await uploadsIn(raw, minio.bucket), []);
  });

  void test('abortStaleMultipartUploads aborts only uploads under the prefix older than the bound', async () => {
    const clock = new FakeClock();
    clock.ms = Date.now();
    const store = new S3ObjectStore({ client, bucket: minio.bucket, clock });
    const start = async (key: string): Promise<void> => {
      const { UploadId } = await raw.send(
        new CreateMultipartUploadCommand({ Bucket: minio.bucket, Key: key }),
      );
      await raw.send(
        new UploadPartCommand({
          Bucket: minio.bucket,
          Key: key,
          UploadId,
          PartNumber: 1,
          Body: randomBytes(1024),
        }),
      );
    };
    await start('landfall/segments/ep/i-0/E1/00000000000000000001.wal.zst');
    await start('landfall/raw/ep/dt=2025-11-26/i-0-E1-00000000000000000001.parquet');
    await start('elsewhere/other-app.bin');

    assert.equal(
      await store.abortStaleMultipartUploads('landfall/', 60 * 60_000),
      0,
      'nothing is an hour old yet',
    );
    clock.advance(2 * 60 * 60_000);
    assert.equal(await store.abortStaleMultipartUploads('landfall/', 60 * 60_000), 2);
    assert.deepEqual(await uploadsIn(raw, minio.bucket), ['elsewhere/other-app.bin']);
    assert.equal(await store.abortStaleMultipartUploads('landfall/', 60 * 60_000), 0);
  });

  void test("conditionalCreate 'head-then-put' (stores without If-None-Match) creates once", async () => {
    const store = new S3ObjectStore({ client, bucket: minio.bucket, conditionalCreate: 'head-then-put' });
    assert.deepEqual(await store.createIfAbsent('htp/m.json', Buffer.from('1')), { created: true });
    assert.deepEqual(await store.createIfAbsent('htp/m.json', Buffer.from('2')), { created: false });
    assert.equal((await store.get('htp/m.json'))?.toString(), '1');
  });

  void test('a missing bucket and a wrong secret are not retryable', async () => {
    const noBucket = new S3ObjectStore({ client, bucket: 'landfall-does-not-exist' });
    const e1 = await storeError(noBucket.put('k', Buffer.from('x')));
    assert.equal(e1.code, 'no_such_bucket');
    assert.equal(e1.retryable, false);
    const e2 = await storeError(noBucket.list({ prefix: '' }));
    assert.equal(e2.code, 'no_such_bucket');

    const badClient = clientFor(minio, { secretAccessKey: 'wrong-secret-0123456789' });
    try {
      const bad = new S3ObjectStore({ client: badClient, bucket: minio.bucket });
      const e3 = await storeError(bad.put('k', Buffer.from('x')));
      assert.equal(e3.code, 'access_denied');
      assert.equal(e3.retryable, false);
      assert.equal(e3.status, 403);
    } finally {
      badClient.destroy();
    }
  });

  void test('a single PUT hashes its body once: the signer reuses the sha256 the store computed', async () => {
    // The SDK's hash (signing and checksums) counted by the bytes it is given.
    let sdkHashedBytes = 0;
    class CountingSha256 {
      readonly #secret: string | Uint8Array | undefined;
      #h: Hash | Hmac;
      constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
        this.#secret =
          secret === undefined || typeof secret === 'string'
            ? secret
            : ArrayBuffer.isView(secret)
              ? new Uint8Array(secret.buffer, secret.byteOffset, secret.byteLength)
              : new Uint8Array(secret);
        this.#h = this.#make();
      }
      #make(): Hash | Hmac {
        return this.#secret === undefined ? createHash('sha256') : createHmac('sha256', this.#secret);
      }
      update(data: string | ArrayBuffer | ArrayBufferView): void {
        const b =
          typeof data === 'string'
            ? Buffer.from(data)
            : ArrayBuffer.isView(data)
              ? data
              : new Uint8Array(data);
        sdkHashedBytes += b.byteLength;
        this.#h.update(b as Uint8Array);
      }
      digest(): Promise<Uint8Array> {
        return Promise.resolve(new Uint8Array(this.#h.digest()));
      }
      reset(): void {
        this.#h = this.#make();
      }
    }
    const counted = new S3Client({
      region: minio.region,
      endpoint: minio.endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
      sha256: CountingSha256,
    });
    try {
      const store = new S3ObjectStore({ client: counted, bucket: minio.bucket });
      const body = randomBytes(2 * MiB);
      const put = await store.put('once/2mib.bin', body, { sha256: sha256Hex(body) });
      assert.equal(put.multipart, false);
      // Before, the signer hashed all 2 MiB again; now only its own small strings.
      assert.ok(sdkHashedBytes < 64 * 1024, `the SDK hashed ${sdkHashedBytes} bytes`);
      // (A read checks the object's stored checksum, which hashes it: after the count.)
      assert.equal((await store.get('once/2mib.bin'))?.equals(body), true, 'MinIO took the signed body');
      // The store's own check still refuses a body that is not the sha256 it was given.
      const err = await storeError(store.put('once/bad.bin', body, { sha256: sha256Hex(Buffer.from('x')) }));
      assert.equal(err.code, 'checksum_mismatch');
    } finally {
      counted.destroy();
    }
  });

  void test('multipart upload throughput to MinIO (64 MiB, 8 MiB parts × 4)', async (t) => {
    const store = new S3ObjectStore({ client, bucket: minio.bucket });
    const body = randomBytes(64 * MiB);
    const sha = sha256Hex(body);
    const t0 = performance.now();
    await store.put('perf/64mib.bin', chunked(body, 1 * MiB), { sha256: sha });
    const seconds = (performance.now() - t0) / 1000;
    t.diagnostic(`multipart put: ${(body.length / 1e6 / seconds).toFixed(0)} MB/s (${seconds.toFixed(2)} s)`);
    assert.equal((await store.head('perf/64mib.bin'))?.sha256, sha);
  });
});

void describe('S3ObjectStore while MinIO is down', () => {
  let minio: MinioServer;
  let client: S3Client;
  before(async () => {
    minio = await startMinio();
    // One SDK attempt: the test is about our classification and retry, not the SDK's.
    client = createS3Client({
      region: minio.region,
      endpoint: minio.endpoint,
      credentials: { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
      maxAttempts: 1,
      connectTimeoutMs: 1000,
    });
  });
  after(async () => {
    client?.destroy();
    await minio?.stop();
  });

  void test('every operation fails retryable (network), and withRetry succeeds once it is back', async () => {
    const store = new S3ObjectStore({ client, bucket: minio.bucket, partBytes: 5 * MiB });
    await store.put('before.txt', Buffer.from('before'));
    await minio.stopServer({ graceMs: 0 });

    const ops: [string, () => Promise<unknown>][] = [
      ['put', () => store.put('k.txt', Buffer.from('x'))],
      ['put multipart', () => store.put('k.bin', chunked(randomBytes(11 * MiB), 1 * MiB))],
      ['createIfAbsent', () => store.createIfAbsent('m.json', Buffer.from('{}'))],
      ['head', () => store.head('before.txt')],
      ['get', () => store.get('before.txt')],
      ['list', () => store.list({ prefix: '' })],
      ['abortStale', () => store.abortStaleMultipartUploads('', 0)],
    ];
    for (const [name, op] of ops) {
      const err = await storeError(op());
      assert.equal(err.code, 'network', `${name}: ${err.message}`);
      assert.equal(err.retryable, true, name);
      assert.equal(isRetryable(err), true, name);
    }

    // Bring it back while the retry loop is waiting; the loop's sleeps are real but short.
    let attempts = 0;
    const restarted = (async () => {
      while (attempts < 2) await new Promise((r) => setTimeout(r, 20));
      await minio.startServer();
    })();
    const res = await withRetry(
      async () => {
        attempts++;
        return store.createIfAbsent('after.json', Buffer.from('{"ok":true}'));
      },
      { attemptsMax: 50, retryDelayMsBase: 50, retryDelayMsMax: 200 },
    );
    await restarted;
    assert.deepEqual(res, { created: true });
    assert.ok(attempts >= 3, `expected failed attempts before the restart, saw ${attempts}`);
    assert.equal((await store.get('before.txt'))?.toString(), 'before');
  });
});

void describe('classifyError', () => {
  const sdk = (name: string, status: number | undefined, extra: object = {}): unknown =>
    Object.assign(new Error(`${name} happened`), { name, $metadata: { httpStatusCode: status }, ...extra });

  void test('maps throttling, 5xx, timeouts, expired tokens and socket errors to retryable codes', () => {
    const cases: [unknown, string][] = [
      [sdk('SlowDown', 503), 'throttled'],
      [sdk('Whatever', 429), 'throttled'],
      [sdk('ThrottlingException', 400), 'throttled'],
      [sdk('InternalError', 500), 'server'],
      [sdk('ServiceUnavailable', 503), 'server'],
      [sdk('UnknownError', 502), 'server'],
      [sdk('RequestTimeout', 400), 'server'],
      [sdk('ConditionalRequestConflict', 409), 'server'],
      [sdk('XMinioServerNotInitialized', 503), 'server'],
      [sdk('ExpiredToken', 400), 'credentials_expired'],
      [Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 'network'],
      [
        new Error('socket hang up', { cause: Object.assign(new Error('reset'), { code: 'ECONNRESET' }) }),
        'network',
      ],
      [new AggregateError([Object.assign(new Error('x'), { code: 'ETIMEDOUT' })]), 'network'],
      [Object.assign(new Error('timed out'), { name: 'TimeoutError' }), 'network'],
    ];
    for (const [err, code] of cases) {
      const e = classifyError(err, 'op');
      assert.equal(e.code, code, e.message);
      assert.equal(e.retryable, true, e.message);
    }
  });

  void test('maps auth, missing bucket, bad digests and the unknown to non-retryable codes', () => {
    const cases: [unknown, string][] = [
      [sdk('AccessDenied', 403), 'access_denied'],
      [sdk('InvalidAccessKeyId', 403), 'access_denied'],
      [sdk('SignatureDoesNotMatch', 403), 'access_denied'],
      [sdk('NoSuchBucket', 404), 'no_such_bucket'],
      [sdk('NoSuchKey', 404), 'not_found'],
      [sdk('BadDigest', 400), 'checksum_mismatch'],
      [sdk('InvalidArgument', 400), 'unknown'],
      [new TypeError('bug'), 'unknown'],
    ];
    for (const [err, code] of cases) {
      const e = classifyError(err, 'op');
      assert.equal(e.code, code, e.message);
      assert.equal(e.retryable, false, e.message);
    }
  });
});
