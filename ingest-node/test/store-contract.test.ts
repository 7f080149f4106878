// One contract, two implementations: every ObjectStore promise the delivery
// pipeline relies on, run against LocalFolderObjectStore (a temp folder) and
// S3ObjectStore (a real MinIO from the test harness).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { startMinio, type MinioServer } from '../../test/harness/index.ts';
import { StoreError } from '../src/store/errors.ts';
import { sha256Hex } from '../src/store/hashing.ts';
import { LocalFolderObjectStore } from '../src/store/local.ts';
import { PowerCutFileSystem } from '../src/fs/power-cut.ts';
import { createS3Client, S3ObjectStore } from '../src/store/s3.ts';
import type { ObjectStore } from '../src/store/types.ts';

async function rejectsWith(p: Promise<unknown>, code: string, retryable = false): Promise<StoreError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof StoreError, `expected a StoreError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.retryable, retryable);
    return err;
  }
  assert.fail(`expected a ${code} StoreError, got success`);
}

function chunked(buf: Buffer, chunkBytes: number): Readable {
  const chunks: Buffer[] = [];
  for (let i = 0; i < buf.length; i += chunkBytes) chunks.push(buf.subarray(i, i + chunkBytes));
  return Readable.from(chunks);
}

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function contract(
  name: string,
  setup: () => Promise<{ store: ObjectStore; teardown: () => Promise<void> }>,
): void {
  void describe(`ObjectStore contract: ${name}`, () => {
    let store: ObjectStore;
    let teardown: () => Promise<void>;
    before(async () => {
      ({ store, teardown } = await setup());
    });
    after(async () => {
      await teardown?.();
    });

    void test('put a small buffer; head reports size, sha256 and metadata; get returns the bytes', async () => {
      const body = Buffer.from('{"hello":"world"}\n');
      const res = await store.put('c/small.json', body, {
        metadata: { 'landfall-kind': 'raw' },
        contentType: 'application/json',
      });
      assert.deepEqual(res, {
        key: 'c/small.json',
        bytes: body.length,
        sha256: sha256Hex(body),
        multipart: false,
      });
      const info = await store.head('c/small.json');
      assert.ok(info);
      assert.equal(info.bytes, body.length);
      assert.equal(info.sha256, sha256Hex(body));
      assert.equal(info.metadata['landfall-kind'], 'raw');
      assert.equal(info.metadata['sha256'], sha256Hex(body));
      assert.ok(Math.abs(info.lastModifiedMs - Date.now()) < 60_000);
      assert.deepEqual(await store.get('c/small.json'), body);
      assert.deepEqual(await readAll((await store.getStream('c/small.json'))!), body);
    });

    void test('put a stream of unknown length with a known sha256 stores it and its checksum', async () => {
      const body = randomBytes(300_000);
      const res = await store.put('c/stream.bin', chunked(body, 16_384), { sha256: sha256Hex(body) });
      assert.equal(res.bytes, body.length);
      assert.equal(res.sha256, sha256Hex(body));
      assert.equal((await store.head('c/stream.bin'))?.sha256, sha256Hex(body));
      assert.deepEqual(await store.get('c/stream.bin'), body);
    });

    void test('put a stream of known small length goes up whole', async () => {
      const body = randomBytes(70_000);
      const res = await store.put('c/known.bin', chunked(body, 10_000), {
        contentLength: body.length,
        sha256: sha256Hex(body),
      });
      assert.equal(res.bytes, body.length);
      assert.deepEqual(await store.get('c/known.bin'), body);
    });

    void test('put overwrites: the same key after a retry holds the latest bytes', async () => {
      await store.put('c/over.txt', Buffer.from('first'));
      await store.put('c/over.txt', Buffer.from('second, longer'));
      assert.equal((await store.get('c/over.txt'))?.toString(), 'second, longer');
      assert.equal((await store.head('c/over.txt'))?.sha256, sha256Hex(Buffer.from('second, longer')));
    });

    void test('a wrong sha256 or length fails with checksum_mismatch and stores nothing', async () => {
      const body = Buffer.from('payload');
      const wrong = sha256Hex(Buffer.from('other'));
      await rejectsWith(store.put('c/bad1', body, { sha256: wrong }), 'checksum_mismatch');
      await rejectsWith(
        store.put('c/bad2', chunked(randomBytes(50_000), 4096), { sha256: wrong }),
        'checksum_mismatch',
      );
      await rejectsWith(
        store.put('c/bad3', chunked(randomBytes(1000), 100), { contentLength: 999 }),
        'checksum_mismatch',
      );
      for (const k of ['c/bad1', 'c/bad2', 'c/bad3']) assert.equal(await store.head(k), null, k);
    });

    void test('createIfAbsent: the first call creates, the second finds it and changes nothing', async () => {
      assert.deepEqual(await store.createIfAbsent('c/marker.json', Buffer.from('{"v":1}')), {
        created: true,
      });
      assert.deepEqual(await store.createIfAbsent('c/marker.json', Buffer.from('{"v":2}')), {
        created: false,
      });
      assert.equal((await store.get('c/marker.json'))?.toString(), '{"v":1}');
      assert.equal((await store.head('c/marker.json'))?.sha256, sha256Hex(Buffer.from('{"v":1}')));
    });

    void test('createIfAbsent is atomic: of 8 concurrent creators exactly one wins', async () => {
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) => store.createIfAbsent('c/race.json', Buffer.from(`writer ${i}`))),
      );
      assert.equal(results.filter((r) => r.created).length, 1);
      const winner = results.findIndex((r) => r.created);
      assert.equal((await store.get('c/race.json'))?.toString(), `writer ${winner}`);
    });

    void test('missing keys: head, get and getStream answer null', async () => {
      assert.equal(await store.head('c/nope'), null);
      assert.equal(await store.get('c/nope'), null);
      assert.equal(await store.getStream('c/nope'), null);
      assert.equal(await store.head('c'), null, 'a "directory" is not an object');
    });

    void test('get is bounded: a body over bytesMax fails with too_large', async () => {
      await store.put('c/big.bin', randomBytes(10_000));
      await rejectsWith(store.get('c/big.bin', { bytesMax: 9_999 }), 'too_large');
      assert.equal((await store.get('c/big.bin', { bytesMax: 10_000 }))?.length, 10_000);
    });

    void test('getTail returns the last bytes (all of a shorter body), null for a missing key', async () => {
      const body = randomBytes(10_000);
      await store.put('c/tail.bin', body);
      assert.ok(store.getTail !== undefined);
      assert.deepEqual(await store.getTail('c/tail.bin', 8), body.subarray(10_000 - 8));
      assert.deepEqual(await store.getTail('c/tail.bin', 20_000), body);
      assert.equal(await store.getTail('c/none.bin', 8), null);
    });

    void test('list returns keys in byte order, after a cursor, bounded, across "directories"', async () => {
      // Byte order is not directory-walk order: '-' (0x2d) < '/' (0x2f) < '0' (0x30).
      // (No key is a "directory" of another: MinIO and a folder cannot hold both.)
      const keys = [
        'l/a-c',
        'l/a/b',
        'l/a/c/d',
        'l/a0',
        'l/a.',
        'l/b/00000000000000000010.json',
        'l/b/00000000000000000009.json',
        'lz',
      ];
      for (const k of [...keys].reverse()) await store.put(k, Buffer.from(k));
      const sorted = [...keys]
        .filter((k) => k.startsWith('l/'))
        .sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
      const all = await store.list({ prefix: 'l/' });
      assert.deepEqual(
        all.objects.map((o) => o.key),
        sorted,
      );
      assert.equal(all.truncated, false);
      assert.equal(all.objects.find((o) => o.key === 'l/a-c')?.bytes, 5);
      assert.equal(sorted.indexOf('l/a-c') < sorted.indexOf('l/a/b'), true);

      const page1 = await store.list({ prefix: 'l/', limit: 3 });
      assert.deepEqual(
        page1.objects.map((o) => o.key),
        sorted.slice(0, 3),
      );
      assert.equal(page1.truncated, true);
      const page2 = await store.list({ prefix: 'l/', startAfter: page1.objects.at(-1)?.key, limit: 3 });
      assert.deepEqual(
        page2.objects.map((o) => o.key),
        sorted.slice(3, 6),
      );
      const rest = await store.list({ prefix: 'l/', startAfter: page2.objects.at(-1)?.key });
      assert.deepEqual(
        rest.objects.map((o) => o.key),
        sorted.slice(6),
      );
      assert.equal(rest.truncated, false);

      // A prefix that is not a "directory", and a cursor that is not a key.
      assert.deepEqual(
        (await store.list({ prefix: 'l/a' })).objects.map((o) => o.key),
        sorted.filter((k) => k.startsWith('l/a')),
      );
      assert.deepEqual(
        (await store.list({ prefix: 'l/', startAfter: 'l/a/b0' })).objects.map((o) => o.key),
        sorted.filter((k) => k > 'l/a/b0'),
      );
      assert.deepEqual(
        (await store.list({ prefix: 'l/b/' })).objects.map((o) => o.key),
        ['l/b/00000000000000000009.json', 'l/b/00000000000000000010.json'],
      );
      assert.deepEqual((await store.list({ prefix: 'nothing/' })).objects, []);
    });

    void test('keys that could escape or break the layout are refused as invalid', async () => {
      for (const key of [
        '',
        '/abs',
        'a//b',
        'a/../b',
        '../x',
        './x',
        'a/.',
        'a\\b',
        '.landfall/meta/x',
        'x'.repeat(1025),
      ]) {
        await rejectsWith(store.put(key, Buffer.from('x')), 'invalid');
        await rejectsWith(store.head(key), 'invalid');
      }
      await rejectsWith(store.list({ prefix: '', limit: 0 }), 'invalid');
      await rejectsWith(store.put('c/m', Buffer.from('x'), { metadata: { sha256: 'x' } }), 'invalid');
    });

    void test('abortStaleMultipartUploads with nothing in flight aborts nothing', async () => {
      assert.equal(await store.abortStaleMultipartUploads('c/', 0), 0);
    });
  });
}

contract('LocalFolderObjectStore', async () => {
  const root = await mkdtemp(path.join(tmpdir(), 'landfall-store-'));
  return {
    store: new LocalFolderObjectStore({ root: path.join(root, 'bucket') }),
    teardown: () => rm(root, { recursive: true, force: true }),
  };
});

// The same store through the FileSystem interface on the in-memory disk the
// power-cut tests use: what they deliver into behaves like the real folder.
contract('LocalFolderObjectStore on PowerCutFileSystem', async () => ({
  store: new LocalFolderObjectStore({
    root: '/data/bucket',
    fs: new PowerCutFileSystem({ jitterTicksMax: 0 }),
  }),
  teardown: async () => {},
}));

let minio: MinioServer | undefined;
contract('S3ObjectStore on MinIO', async () => {
  minio = await startMinio();
  const client = createS3Client({
    region: minio.region,
    endpoint: minio.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
  });
  return {
    // A 5 MiB single-put bound keeps the small-body paths single PUTs, as in production.
    store: new S3ObjectStore({ client, bucket: minio.bucket }),
    teardown: async () => {
      client.destroy();
      await minio?.stop();
    },
  };
});
