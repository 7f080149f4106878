// Smoke: the real MinIO does what the delivery pipeline relies on.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import {
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { startMinio } from '../harness/index.ts';
import type { MinioServer } from '../harness/index.ts';

let minio: MinioServer;
let s3: S3Client;

before(async () => {
  minio = await startMinio();
  s3 = minio.s3();
});

after(async () => {
  await minio?.stop();
});

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

void test('multipart upload of 20 MiB reads back byte-exact', async (t) => {
  t.diagnostic(`start-up ms: ${minio.startupMs}`);
  const body = randomBytes(20 * 1024 * 1024);
  const key = 'smoke/multipart.bin';
  const upload = new Upload({
    client: s3,
    params: { Bucket: minio.bucket, Key: key, Body: body },
    partSize: 5 * 1024 * 1024,
    queueSize: 4,
  });
  let parts = 0;
  upload.on('httpUploadProgress', () => {
    parts += 1;
  });
  await upload.done();
  assert.ok(parts >= 4, `expected a multipart upload (4 parts of 5 MiB), saw ${parts} progress events`);

  const got = await s3.send(new GetObjectCommand({ Bucket: minio.bucket, Key: key }));
  const bytes = await got.Body?.transformToByteArray();
  assert.ok(bytes, 'GetObject returned no body');
  assert.equal(bytes.length, body.length);
  assert.equal(sha256(bytes), sha256(body));
  // A multipart ETag is "<md5 of part md5s>-<parts>": proves it really was multipart.
  assert.match(got.ETag ?? '', /-4"$/);
});

void test('PutObject with If-None-Match: * on an existing key fails with 412', async () => {
  const key = 'smoke/commit-marker.json';
  await s3.send(new PutObjectCommand({ Bucket: minio.bucket, Key: key, Body: '{"v":1}', IfNoneMatch: '*' }));
  const err = await s3
    .send(new PutObjectCommand({ Bucket: minio.bucket, Key: key, Body: '{"v":2}', IfNoneMatch: '*' }))
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  assert.ok(err instanceof S3ServiceException, `expected an S3 error, got ${String(err)}`);
  assert.equal(err.$metadata.httpStatusCode, 412);
  const got = await s3.send(new GetObjectCommand({ Bucket: minio.bucket, Key: key }));
  assert.equal(await got.Body?.transformToString(), '{"v":1}', 'the first write must win');
});

void test('stopServer/startServer: an outage on the same port, data kept', async () => {
  const bucket = await minio.newBucket();
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'k', Body: 'before outage' }));
  await minio.stopServer();
  const oneShot = minio.s3({ maxAttempts: 1 });
  await assert.rejects(oneShot.send(new HeadObjectCommand({ Bucket: bucket, Key: 'k' })), (e: Error) => {
    assert.match(`${e.name} ${e.message} ${String((e as { code?: string }).code)}`, /ECONNREFUSED|connect/i);
    return true;
  });
  await minio.startServer();
  const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'k' }));
  assert.equal(await got.Body?.transformToString(), 'before outage');
});
