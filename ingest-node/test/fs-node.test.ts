import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm, readFile } from 'node:fs/promises';
import {
  NodeFileSystem,
  SYNC_WRITE_BACKOFF_MS,
  SYNC_WRITE_BYTES_MAX,
  SYNC_WRITE_SLOW_MS,
} from '../src/fs/node.ts';
import { mkdirDurable, writeFileAtomic } from '../src/fs/durable.ts';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

void test('NodeFileSystem: the operations the WAL uses, on the real disk', async (t) => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'landfall-fs-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const fs = new NodeFileSystem();
  const dir = path.join(root, 'a', 'b');
  assert.equal(await mkdirDurable(fs, dir), true);
  assert.equal(await mkdirDurable(fs, dir), false);
  const file = path.join(dir, 'seg.wal');
  const fh = await fs.open(file, 'createExclusive');
  await assert.rejects(fs.open(file, 'createExclusive'), { code: 'EEXIST' });
  assert.equal(await fh.write([enc('hello '), enc('world')], 0), 11);
  assert.equal(await fh.write([enc('!')], 11), 1);
  await fh.datasync();
  await fh.sync();
  await fs.syncDir(dir);
  assert.equal((await fh.stat()).size, 12);
  const buf = new Uint8Array(5);
  assert.equal(await fh.read(buf, 0, 5, 6), 5);
  assert.equal(new TextDecoder().decode(buf), 'world');
  await fh.truncate(5);
  await fh.close();
  assert.equal(new TextDecoder().decode(await fs.readFile(file)), 'hello');
  const st = await fs.stat(file);
  assert.deepEqual({ ...st, mtimeMs: 0 }, { size: 5, isFile: true, isDirectory: false, mtimeMs: 0 });
  assert.ok(st.mtimeMs > 0);
  // link: a second name, never replacing one; rmdir: empty folders only.
  const second = path.join(path.dirname(file), 'second');
  await fs.link(file, second);
  assert.equal((await fs.stat(second)).size, 5);
  await assert.rejects(fs.link(file, second), { code: 'EEXIST' });
  await fs.unlink(second);
  const sub = path.join(path.dirname(file), 'sub');
  await fs.mkdir(sub);
  await fs.link(file, path.join(sub, 'f'));
  await assert.rejects(fs.rmdir(sub), { code: 'ENOTEMPTY' });
  await fs.unlink(path.join(sub, 'f'));
  await fs.rmdir(sub);
  await assert.rejects(fs.stat(sub), { code: 'ENOENT' });
  assert.ok((await fs.statfs(dir)).freeBytes > 0);
  await writeFileAtomic(fs, path.join(dir, 'state.json'), enc('{"v":1}'));
  await writeFileAtomic(fs, path.join(dir, 'state.json'), enc('{"v":2}'));
  assert.equal(await readFile(path.join(dir, 'state.json'), 'utf8'), '{"v":2}');
  assert.deepEqual((await fs.readdir(dir)).sort(), ['seg.wal', 'state.json']);
  await fs.rename(file, path.join(dir, 'moved.wal'));
  await fs.unlink(path.join(dir, 'moved.wal'));
  await assert.rejects(fs.stat(file), { code: 'ENOENT' });
  await assert.rejects(fs.syncDir(path.join(dir, 'state.json')), { code: 'ENOTDIR' });
});

void test('NodeFileSystem.write: small writes on the calling thread (latency-critical handles) and through the pool give the same bytes and the same errors', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'landfall-fs-write-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const fs = new NodeFileSystem();
  const file = path.join(dir, 'f');
  const h = await fs.open(file, 'createExclusive', { latencyCritical: true });
  const small = Buffer.alloc(1000, 1);
  const big = Buffer.alloc(SYNC_WRITE_BYTES_MAX + 1, 2);
  const parts = [Buffer.alloc(10, 3), Buffer.alloc(20, 4)];
  let pos = 0;
  for (const bufs of [[small], [big], parts, [big, small]]) {
    const n = bufs.reduce((k, b) => k + b.length, 0);
    assert.equal(await h.write(bufs, pos), n);
    pos += n;
  }
  await h.datasync();
  await h.close();
  assert.deepEqual(await readFile(file), Buffer.concat([small, big, ...parts, big, small]));

  // Errors are rejections (never a synchronous throw), with the syscall's code, on both paths.
  const full = await fs.open('/dev/full', 'readWrite', { latencyCritical: true });
  try {
    for (const bufs of [[small], [big], parts]) {
      let p: Promise<number> | undefined;
      assert.doesNotThrow(() => (p = full.write(bufs, 0)));
      await assert.rejects(p!, (err: NodeJS.ErrnoException) => err.code === 'ENOSPC');
    }
  } finally {
    await full.close();
  }
  const ro = await fs.open(file, 'read', { latencyCritical: true });
  try {
    await assert.rejects(ro.write([small], 0), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
    await assert.rejects(ro.write([big], 0), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
  } finally {
    await ro.close();
  }
});

void test('NodeFileSystem.write: only a latency-critical handle writes small buffers without a turn of the event loop', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'landfall-fs-write-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const fs = new NodeFileSystem();
  /** Whether `write` settled before a setImmediate queued just before it ran. */
  const settlesInTurn = async (h: Awaited<ReturnType<NodeFileSystem['open']>>, bytes: number) => {
    let turned = false;
    setImmediate(() => (turned = true));
    await h.write([Buffer.alloc(bytes, 5)], 0);
    return !turned;
  };
  const wal = await fs.open(path.join(dir, 'wal'), 'createExclusive', { latencyCritical: true });
  const other = await fs.open(path.join(dir, 'other'), 'createExclusive');
  try {
    assert.equal(await settlesInTurn(wal, 32 * 1024), true, 'a WAL group of 32 KiB: on the calling thread');
    assert.equal(
      await settlesInTurn(wal, SYNC_WRITE_BYTES_MAX + 1),
      false,
      'a larger group: through the pool',
    );
    assert.equal(await settlesInTurn(other, 32 * 1024), false, 'any other handle: through the pool');
  } finally {
    await wal.close();
    await other.close();
  }
});

void test('NodeFileSystem.write: after a slow write on the calling thread, the handle writes through the pool for the back-off', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'landfall-fs-write-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  // A clock the test moves: each read advances it by `step` ms, so a write looks as slow as the test says.
  let nowMs = 0;
  let step = 0;
  const fs = new NodeFileSystem({ monotonicMs: () => (nowMs += step) });
  const h = await fs.open(path.join(dir, 'wal'), 'createExclusive', { latencyCritical: true });
  const settlesInTurn = async (): Promise<boolean> => {
    let turned = false;
    setImmediate(() => (turned = true));
    await h.write([Buffer.alloc(4096, 6)], 0);
    return !turned;
  };
  try {
    step = 0.1; // fast writes: on the calling thread
    assert.equal(await settlesInTurn(), true);
    assert.equal(await settlesInTurn(), true);
    step = SYNC_WRITE_SLOW_MS + 1; // this one is slow: it is made, then the handle backs off
    assert.equal(await settlesInTurn(), true);
    step = 0;
    assert.equal(await settlesInTurn(), false, 'within the back-off: through the pool');
    nowMs += SYNC_WRITE_BACKOFF_MS - 10;
    assert.equal(await settlesInTurn(), false, 'still within it');
    nowMs += 20;
    assert.equal(await settlesInTurn(), true, 'after it: on the calling thread again');
  } finally {
    await h.close();
  }
});
