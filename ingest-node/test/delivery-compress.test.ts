// `.wal.zst`: zstd of the exact segment bytes with node:zlib, streamed,
// hashed on both sides, written atomically, deterministic.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { ndjsonSample } from '../src/delivery/bench-zstd.ts';
import {
  createZstdDecompressor,
  zstdCompressFile,
  zstdCompressStream,
  zstdLevel,
} from '../src/delivery/compress.ts';
import { ZstdFrameEncoder } from '../src/delivery/zstd-frame.ts';
import { sha256Hex } from '../src/store/hashing.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'landfall-zstd-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function decompress(buf: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await pipeline(
    Readable.from([buf]),
    createZstdDecompressor(),
    new Writable({
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        cb();
      },
    }),
  );
  return Buffer.concat(chunks);
}

void test('compressFile: exact round trip, checksums of both sides, sizes, no temp left behind', async (t) => {
  const data = ndjsonSample(8 * 1024 * 1024);
  const src = path.join(dir, '00000000000000000001.wal');
  const dst = path.join(dir, '00000000000000000001.wal.zst');
  await writeFile(src, data);
  const t0 = performance.now();
  const res = await zstdCompressFile(src, dst, { inputBytes: data.length });
  const s = (performance.now() - t0) / 1000;
  const out = await readFile(dst);
  assert.deepEqual(res, {
    inputBytes: data.length,
    inputSha256: sha256Hex(data),
    outputBytes: out.length,
    outputSha256: sha256Hex(out),
  });
  assert.ok(out.length < data.length / 4, `ratio ${data.length / out.length}`);
  assert.deepEqual(await decompress(out), data);
  assert.deepEqual((await readdir(dir)).sort(), ['00000000000000000001.wal', '00000000000000000001.wal.zst']);
  // The zstd frame magic, and the frame is readable by plain zlib too.
  assert.equal(out.readUInt32LE(0), 0xfd2fb528);
  assert.deepEqual(zlib.zstdDecompressSync(out), data);
  t.diagnostic(
    `level ${zstdLevel}: ${(data.length / 1e6 / s).toFixed(0)} MB/s (file to file, incl. fsync), ratio ${(data.length / out.length).toFixed(2)}`,
  );
});

void test('the same bytes always compress to the same archive (a re-upload has the same sha256)', async () => {
  const data = ndjsonSample(1024 * 1024, 7);
  const a = await zstdCompressStream(Readable.from([data]), new Writable({ write: (_c, _e, cb) => cb() }));
  const b = await zstdCompressStream(
    Readable.from([data.subarray(0, 1000), data.subarray(1000)]),
    new Writable({ write: (_c, _e, cb) => cb() }),
  );
  assert.equal(a.outputSha256, b.outputSha256);
  assert.equal(a.inputSha256, sha256Hex(data));
});

void test('a corrupted archive fails to decompress (frame checksum on)', async () => {
  const data = randomBytes(64 * 1024).toString('hex');
  const src = path.join(dir, 'c.wal');
  const dst = path.join(dir, 'c.wal.zst');
  await writeFile(src, data);
  await zstdCompressFile(src, dst);
  const out = await readFile(dst);
  const bad = Buffer.from(out);
  const i = Math.floor(bad.length / 2);
  bad[i] = (bad[i] ?? 0) ^ 0xff;
  await assert.rejects(decompress(bad));
});

void test('an empty segment compresses to a valid empty frame', async () => {
  const src = path.join(dir, 'empty.wal');
  const dst = path.join(dir, 'empty.wal.zst');
  await writeFile(src, '');
  const res = await zstdCompressFile(src, dst);
  assert.equal(res.inputBytes, 0);
  assert.deepEqual(await decompress(await readFile(dst)), Buffer.alloc(0));
});

void test('a failing source leaves neither the archive nor a temp file', async () => {
  const sub = await mkdtemp(path.join(dir, 'fail-'));
  await assert.rejects(
    zstdCompressFile(path.join(sub, 'missing.wal'), path.join(sub, 'missing.wal.zst')),
    /ENOENT/,
  );
  assert.deepEqual(await readdir(sub), []);
});

void test('an abort signal stops the compression', async () => {
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(
    zstdCompressStream(Readable.from([Buffer.alloc(10)]), new Writable({ write: (_c, _e, cb) => cb() }), {
      signal: ac.signal,
    }),
    { name: 'AbortError' },
  );
});

/** ZstdFrameEncoder over `data` fed in pieces of `size`. */
function encodeInPieces(data: Buffer, size: number, inputBytes: number = data.length): Buffer {
  const enc = new ZstdFrameEncoder({ inputBytes });
  const out: Uint8Array[] = [];
  for (let at = 0; at < data.length; at += size) out.push(...enc.write(data.subarray(at, at + size)));
  out.push(...enc.end());
  return Buffer.concat(out);
}

void test("ZstdFrameEncoder (the archive worker's synchronous zstd) makes the very bytes of the stream compressor: one frame", async () => {
  const data = ndjsonSample(3 * 1024 * 1024, 11);
  const streamed: Buffer[] = [];
  await zstdCompressStream(
    Readable.from([data]),
    new Writable({
      write(c: Buffer, _e, cb) {
        streamed.push(c);
        cb();
      },
    }),
    { inputBytes: data.length },
  );
  const want = Buffer.concat(streamed);
  for (const size of [1000, 65_536, 256 * 1024, data.length]) {
    const got = encodeInPieces(data, size);
    assert.ok(got.equals(want), `pieces of ${size}: ${got.length} bytes, the stream made ${want.length}`);
  }
  // One frame: its header records the whole content size, and node's
  // decoder (which stops after the first frame) gets all of it back.
  const one = encodeInPieces(data, 256 * 1024);
  assert.equal(one.readUInt32LE(0), 0xfd2fb528);
  assert.deepEqual(zlib.zstdDecompressSync(one), data);
  assert.deepEqual(await decompress(one), data);
  // Empty input: a valid empty frame, as the stream makes.
  assert.deepEqual(zlib.zstdDecompressSync(encodeInPieces(Buffer.alloc(0), 1)), Buffer.alloc(0));
});

void test('ZstdFrameEncoder: pieces own their ArrayBuffers, a size other than the pledged one throws, no use after end', () => {
  const data = randomBytes(600 * 1024);
  const enc = new ZstdFrameEncoder({ inputBytes: data.length });
  const pieces = [...enc.write(data), ...enc.end()];
  for (const p of pieces) assert.equal(p.byteLength, p.buffer.byteLength, 'transferable without a copy');
  assert.deepEqual(zlib.zstdDecompressSync(Buffer.concat(pieces)), data);
  assert.throws(() => enc.write(data), /after end/);
  // Fewer bytes than pledged: zstd refuses to end the frame.
  const wrongSize = { code: 'ZSTD_error_srcSize_wrong' };
  assert.throws(() => encodeInPieces(data, 65_536, data.length + 1), wrongSize);
  // More than pledged: refused too.
  assert.throws(() => encodeInPieces(data, 65_536, data.length - 1), wrongSize);
});
