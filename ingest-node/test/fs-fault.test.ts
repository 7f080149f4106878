import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FaultFileSystem } from '../src/fs/fault.ts';
import { PowerCutFileSystem } from '../src/fs/power-cut.ts';
import { mkdirDurable } from '../src/fs/durable.ts';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

async function setup(): Promise<{ mem: PowerCutFileSystem; fs: FaultFileSystem }> {
  const mem = new PowerCutFileSystem({ jitterTicksMax: 0 });
  await mkdirDurable(mem, '/d');
  return { mem, fs: new FaultFileSystem(mem) };
}

void test('rules match op and path, skip the first calls, apply a number of times', async () => {
  const { fs } = await setup();
  fs.inject({ op: 'datasync', path: /\.wal$/, fault: 'EIO', skip: 1, times: 2 });
  const a = await fs.open('/d/a.wal', 'createExclusive');
  const b = await fs.open('/d/b.log', 'createExclusive');
  await a.datasync(); // skipped
  await b.datasync(); // other path
  await assert.rejects(a.datasync(), { code: 'EIO' });
  await assert.rejects(a.datasync(), { code: 'EIO' });
  await a.datasync(); // used up
  assert.equal(fs.calls.datasync, 5);
  assert.deepEqual(
    fs.injected.map((c) => [c.op, c.path, c.n]),
    [
      ['datasync', '/d/a.wal', 3],
      ['datasync', '/d/a.wal', 4],
    ],
  );
});

void test('short write lands half the bytes and says so', async () => {
  const { mem, fs } = await setup();
  fs.inject({ op: 'write', fault: 'short' });
  const fh = await fs.open('/d/f', 'createExclusive');
  assert.equal(await fh.write([enc('abcd'), enc('efgh')], 0), 4);
  assert.equal(new TextDecoder().decode(await mem.readFile('/d/f')), 'abcd');
});

void test('ENOSPC, custom codes, applied faults, dropped syncs, removal', async () => {
  const { mem, fs } = await setup();
  const remove = fs.inject({ op: 'open', path: '/d/x', fault: 'ENOSPC', times: Infinity });
  await assert.rejects(fs.open('/d/x', 'createExclusive'), { code: 'ENOSPC' });
  await assert.rejects(fs.open('/d/x', 'createExclusive'), { code: 'ENOSPC' });
  remove();
  const fh = await fs.open('/d/x', 'createExclusive');
  await fs.syncDir('/d');
  fs.inject({ op: 'write', fault: { code: 'EIO', applied: true } });
  await assert.rejects(fh.write([enc('landed')], 0), { code: 'EIO' });
  assert.equal((await mem.readFile('/d/x')).length, 6, 'the write took effect anyway');
  fs.inject({ op: 'datasync', fault: 'drop' });
  await fh.datasync(); // reports success
  assert.equal(mem.durableContents('/d/x')!.length, 0, 'but nothing reached the disk');
  fs.inject({ op: 'rename', fault: { code: 'EXDEV' } });
  await assert.rejects(fs.rename('/d/x', '/d/y'), { code: 'EXDEV' });
});

void test('a gate holds a call open until released', async () => {
  const { fs } = await setup();
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  fs.inject({ op: 'syncDir', gate: () => gate });
  let done = false;
  const p = fs.syncDir('/d').then(() => (done = true));
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
  assert.equal(done, false);
  release();
  await p;
  assert.equal(done, true);
});

void test('a gate-only rule does not hide a later fault rule', async () => {
  const { fs } = await setup();
  const seen: string[] = [];
  fs.inject({ op: 'open', times: Infinity, gate: (c) => void seen.push(c.path) });
  fs.inject({ op: 'open', path: '/d/bad', fault: 'EIO' });
  await assert.rejects(fs.open('/d/bad', 'createExclusive'), { code: 'EIO' });
  await fs.open('/d/good', 'createExclusive');
  assert.deepEqual(seen, ['/d/bad', '/d/good']);
});
