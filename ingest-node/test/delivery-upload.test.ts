// uploadFile: every attempt re-reads the file, retryable failures are retried,
// a checksum mismatch is not; the factory opens either kind of store.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { contentTypes, markerArtifact, uploadFile } from '../src/delivery/upload.ts';
import { StoreError } from '../src/store/errors.ts';
import { sha256Hex } from '../src/store/hashing.ts';
import { openObjectStore } from '../src/store/index.ts';
import { LocalFolderObjectStore } from '../src/store/local.ts';
import type { ObjectStore } from '../src/store/types.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'landfall-upload-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A real store whose first `failures` puts fail the way a throttled S3 does, after consuming part of the body. */
function flaky(inner: ObjectStore, failures: number): ObjectStore & { puts: number } {
  const s: ObjectStore & { puts: number } = {
    description: inner.description,
    puts: 0,
    put: async (key, body, opts) => {
      s.puts++;
      if (s.puts <= failures) {
        if (!Buffer.isBuffer(body)) {
          for await (const _ of body) break; // read a little, then fail: the stream is spent
          body.destroy();
        }
        throw new StoreError('throttled', 'SlowDown');
      }
      return inner.put(key, body, opts);
    },
    createIfAbsent: (key, body, opts) => inner.createIfAbsent(key, body, opts),
    head: (key, opts) => inner.head(key, opts),
    list: (opts) => inner.list(opts),
    get: (key, opts) => inner.get(key, opts),
    getStream: (key, opts) => inner.getStream(key, opts),
    abortStaleMultipartUploads: (prefix, ms) => inner.abortStaleMultipartUploads(prefix, ms),
  };
  return s;
}

void test('retries a throttled upload with a fresh stream each time and stores the exact file', async () => {
  const data = randomBytes(200_000);
  const file = path.join(dir, 'a.parquet');
  await writeFile(file, data);
  const store = flaky(new LocalFolderObjectStore({ root: path.join(dir, 'bucket') }), 2);
  const retries: number[] = [];
  const put = await uploadFile(
    store,
    'lf/raw/ep/dt=2025-11-26/i-E1-00000000000000000001.parquet',
    { path: file, bytes: data.length, sha256: sha256Hex(data) },
    {
      contentType: contentTypes.parquet,
      retryDeps: { sleep: async () => {}, onRetry: (i) => retries.push(i.attempt) },
    },
  );
  assert.equal(store.puts, 3);
  assert.deepEqual(retries, [1, 2]);
  assert.equal(put.sha256, sha256Hex(data));
  assert.deepEqual(await store.get(put.key, { bytesMax: 1 << 20 }), data);
  assert.deepEqual(markerArtifact('raw', put, 10), {
    kind: 'raw',
    key: put.key,
    bytes: data.length,
    rows: 10,
    sha256: sha256Hex(data),
  });
  assert.equal(markerArtifact('view', put, 10, 'v').view, 'v');
});

void test('a file that changed since it was hashed fails once, without retries', async () => {
  const file = path.join(dir, 'b.parquet');
  await writeFile(file, 'original');
  const expected = { path: file, bytes: 8, sha256: sha256Hex(Buffer.from('original')) };
  await writeFile(file, 'tampered');
  const store = flaky(new LocalFolderObjectStore({ root: path.join(dir, 'bucket') }), 0);
  await assert.rejects(
    uploadFile(store, 'lf/x.parquet', expected, { retryDeps: { sleep: async () => {} } }),
    (e: unknown) => e instanceof StoreError && e.code === 'checksum_mismatch',
  );
  assert.equal(store.puts, 1);
  assert.equal(await store.head('lf/x.parquet'), null);
});

void test('openObjectStore builds a local store or an S3 store from settings', async () => {
  const local = openObjectStore({ kind: 'local', root: path.join(dir, 'opened') });
  await local.store.put('k', Buffer.from('v'));
  assert.equal((await local.store.get('k'))?.toString(), 'v');
  local.close();

  const s3 = openObjectStore({
    kind: 's3',
    bucket: 'b',
    region: 'us-east-1',
    endpoint: 'http://127.0.0.1:9',
    credentials: { mode: 'static', accessKeyId: 'a', secretAccessKey: 's' },
  });
  assert.equal(s3.store.description, 's3://b');
  s3.close();
});
