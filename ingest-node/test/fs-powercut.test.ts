// The power-cut model itself: what survives, what does not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PowerCutFileSystem } from '../src/fs/power-cut.ts';
import { writeFileAtomic, mkdirDurable } from '../src/fs/durable.ts';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

async function setup(): Promise<PowerCutFileSystem> {
  const fs = new PowerCutFileSystem({ seed: 1 });
  await mkdirDurable(fs, '/d');
  return fs;
}

void test('unsynced data is lost, synced data survives', async () => {
  const fs = await setup();
  const fh = await fs.open('/d/f', 'createExclusive');
  await fs.syncDir('/d');
  await fh.write([enc('hello ')], 0);
  await fh.datasync();
  await fh.write([enc('world')], 6);
  const after = fs.crash();
  assert.equal(dec(await after.readFile('/d/f')), 'hello ');
});

void test('a file whose directory entry was never synced is gone, even with its data synced', async () => {
  const fs = await setup();
  const fh = await fs.open('/d/f', 'createExclusive');
  await fh.write([enc('data')], 0);
  await fh.datasync();
  const after = fs.crash();
  await assert.rejects(after.readFile('/d/f'), { code: 'ENOENT' });
  assert.deepEqual(await after.readdir('/d'), []);
});

void test('rename and unlink are durable only after syncDir', async () => {
  const fs = await setup();
  await writeFileAtomic(fs, '/d/state', enc('v1'));
  // rename without the dir sync: the old version comes back
  const fh = await fs.open('/d/state.tmp', 'createTruncate');
  await fh.write([enc('v2')], 0);
  await fh.datasync();
  await fh.close();
  await fs.rename('/d/state.tmp', '/d/state');
  await fs.unlink('/d/state'); // also not durable
  const after = fs.crash();
  assert.equal(dec(await after.readFile('/d/state')), 'v1');
  // with it: the new version
  await writeFileAtomic(after, '/d/state', enc('v2'));
  const again = after.crash();
  assert.equal(dec(await again.readFile('/d/state')), 'v2');
  assert.deepEqual(await again.readdir('/d'), ['state']);
});

void test('a truncate that was not synced can be undone by the cut', async () => {
  const fs = await setup();
  const fh = await fs.open('/d/f', 'createExclusive');
  await fs.syncDir('/d');
  await fh.write([enc('0123456789')], 0);
  await fh.datasync();
  await fh.truncate(4);
  assert.equal(dec(fs.crash().durableContents('/d/f')!), '0123456789');
});

void test('torn tail: a seeded prefix of the unsynced appended bytes survives, sometimes zero-filled', async () => {
  const outcomes = new Set<string>();
  for (let seed = 1; seed <= 40; seed++) {
    const fs = new PowerCutFileSystem({ seed });
    await mkdirDurable(fs, '/d');
    const fh = await fs.open('/d/f', 'createExclusive');
    await fs.syncDir('/d');
    await fh.write([enc('AAAA')], 0);
    await fh.datasync();
    await fh.write([enc('BBBBBBBB')], 4);
    const got = dec(await fs.crash({ tornTail: true }).readFile('/d/f'));
    assert.ok(got.startsWith('AAAA'));
    assert.match(got.slice(4), /^B*\0*$/);
    outcomes.add(
      got.slice(4).includes('\0') ? 'zeros' : got.length === 4 ? 'none' : got.length === 12 ? 'all' : 'part',
    );
    // Same seed, same tail.
    const fs2 = new PowerCutFileSystem({ seed });
    await mkdirDurable(fs2, '/d');
    const fh2 = await fs2.open('/d/f', 'createExclusive');
    await fs2.syncDir('/d');
    await fh2.write([enc('AAAA')], 0);
    await fh2.datasync();
    await fh2.write([enc('BBBBBBBB')], 4);
    assert.equal(dec(await fs2.crash({ tornTail: true }).readFile('/d/f')), got);
  }
  assert.ok(outcomes.has('zeros') && outcomes.has('part'), [...outcomes].join());
});

void test('a sync in flight when the power goes covers nothing; every later operation rejects', async () => {
  const fs = await setup();
  const fh = await fs.open('/d/f', 'createExclusive');
  await fs.syncDir('/d');
  await fh.write([enc('x')], 0);
  const sync = fh.datasync();
  const after = fs.crash();
  await assert.rejects(sync, { code: 'EIO' });
  await assert.rejects(fh.write([enc('y')], 1), { code: 'EIO' });
  await assert.rejects(fs.readdir('/d'), { code: 'EIO' });
  assert.equal((await after.readFile('/d/f')).length, 0);
  assert.throws(() => fs.crash(), /already crashed/);
});

void test('armCrash cuts at the chosen operation', async () => {
  const fs = await setup();
  const rebooted = fs.armCrash(fs.opCount + 3);
  const fh = await fs.open('/d/f', 'createExclusive'); // op +1
  await fs.syncDir('/d'); // op +2
  await assert.rejects(fh.write([enc('x')], 0), { code: 'EIO' }); // op +3: cut before it
  assert.ok(fs.frozen);
  assert.deepEqual(await (await rebooted).readdir('/d'), ['f']);
});

void test('Node-style errors and capacity', async () => {
  const fs = new PowerCutFileSystem({ capacityBytes: 10 });
  await mkdirDurable(fs, '/d');
  await assert.rejects(fs.open('/d/none', 'read'), { code: 'ENOENT' });
  await assert.rejects(fs.open('/nope/f', 'createExclusive'), { code: 'ENOENT' });
  await assert.rejects(fs.mkdir('/d'), { code: 'EEXIST' });
  const fh = await fs.open('/d/f', 'createExclusive');
  await assert.rejects(fs.open('/d/f', 'createExclusive'), { code: 'EEXIST' });
  assert.equal(await fh.write([enc('12345'), enc('678')], 0), 8);
  await assert.rejects(fh.write([enc('abc')], 8), { code: 'ENOSPC' });
  assert.equal((await fs.statfs('/d')).freeBytes, 2);
  const st = await fs.stat('/d/f');
  assert.deepEqual({ ...st, mtimeMs: 0 }, { size: 8, isFile: true, isDirectory: false, mtimeMs: 0 });
  assert.ok(st.mtimeMs > 0);
  const buf = new Uint8Array(4);
  assert.equal(await fh.read(buf, 0, 4, 6), 2);
  assert.equal(dec(buf.subarray(0, 2)), '78');
  await fh.close();
  await assert.rejects(fh.datasync(), { code: 'EBADF' });
});

void test('link is a second name, durable only after the new parent is synced; rmdir removes empty folders', async () => {
  const fs = new PowerCutFileSystem({ jitterTicksMax: 0 });
  await fs.mkdir('/a/b', { recursive: true });
  await fs.syncDir('/');
  await fs.syncDir('/a');
  const fh = await fs.open('/a/tmp', 'createExclusive');
  await fh.write([new TextEncoder().encode('marker')], 0);
  await fh.sync();
  await fh.close();
  await fs.syncDir('/a');
  await fs.link('/a/tmp', '/a/b/m');
  await assert.rejects(fs.link('/a/tmp', '/a/b/m'), { code: 'EEXIST' });
  // Not yet durable: the new name's folder was not synced.
  assert.equal(fs.crash().durableContents('/a/b/m'), undefined);

  const fs2 = new PowerCutFileSystem({ jitterTicksMax: 0 });
  await fs2.mkdir('/a/b', { recursive: true });
  await fs2.syncDir('/');
  await fs2.syncDir('/a');
  const h2 = await fs2.open('/a/tmp', 'createExclusive');
  await h2.write([new TextEncoder().encode('marker')], 0);
  await h2.sync();
  await h2.close();
  await fs2.link('/a/tmp', '/a/b/m');
  await fs2.syncDir('/a/b');
  await fs2.unlink('/a/tmp');
  const after = fs2.crash();
  assert.equal(new TextDecoder().decode(await after.readFile('/a/b/m')), 'marker');
  await assert.rejects(after.rmdir('/a/b'), { code: 'ENOTEMPTY' });
  await after.unlink('/a/b/m');
  await after.rmdir('/a/b');
  // tmp's name was never synced into /a: only b survived the cut, and it is gone now.
  assert.deepEqual(await after.readdir('/a'), []);
});

void test('torn overwrite: each unsynced overwritten page survives new or stays old, never zeros', async () => {
  const PAGE = 8;
  const seen = { newPage: 0, oldPage: 0, mixedFile: 0 };
  for (let seed = 1; seed <= 40; seed++) {
    const fs = new PowerCutFileSystem({ seed });
    await mkdirDurable(fs, '/d');
    const fh = await fs.open('/d/f', 'createExclusive');
    await fs.syncDir('/d');
    const oldBytes = enc('o'.repeat(64));
    await fh.write([oldBytes], 0);
    await fh.datasync();
    // Overwrite pages 1..5 in place, unsynced (a recycled file's new frames).
    await fh.write([enc('n'.repeat(40))], PAGE);
    const after = fs.crash({ tornTail: true, scatteredPageBytes: PAGE });
    const got = dec(await after.readFile('/d/f'));
    assert.equal(got.length, 64, `seed ${seed}: the size did not change`);
    assert.equal(got.slice(0, PAGE), 'o'.repeat(PAGE), `seed ${seed}: an untouched page changed`);
    assert.equal(got.slice(48), 'o'.repeat(16), `seed ${seed}: an untouched page changed`);
    let kinds = 0;
    for (let p = PAGE; p < 48; p += PAGE) {
      const page = got.slice(p, p + PAGE);
      assert.ok(page === 'n'.repeat(PAGE) || page === 'o'.repeat(PAGE), `seed ${seed}: page ${p} is ${page}`);
      if (page[0] === 'n') {
        seen.newPage++;
        kinds |= 1;
      } else {
        seen.oldPage++;
        kinds |= 2;
      }
    }
    if (kinds === 3) seen.mixedFile++;
  }
  assert.ok(seen.newPage > 20 && seen.oldPage > 20 && seen.mixedFile > 5, JSON.stringify(seen));
});

void test('torn overwrite without pages: new bytes up to a point, old after; an unsynced shrink lands or not', async () => {
  const outcomes = new Set<string>();
  for (let seed = 1; seed <= 40; seed++) {
    const fs = new PowerCutFileSystem({ seed });
    await mkdirDurable(fs, '/d');
    const fh = await fs.open('/d/f', 'createExclusive');
    await fs.syncDir('/d');
    await fh.write([enc('oooooooooo')], 0);
    await fh.datasync();
    await fh.write([enc('nnnn')], 2);
    const got = dec(await fs.crash({ tornTail: true }).readFile('/d/f'));
    assert.match(got, /^oon*o*$/, `seed ${seed}`);
    assert.equal(got.length, 10);
    outcomes.add(got);
  }
  assert.ok(
    outcomes.has('oooooooooo') && outcomes.has('oonnnnoooo') && outcomes.size >= 4,
    [...outcomes].join(),
  );
  const sizes = new Set<number>();
  for (let seed = 1; seed <= 20; seed++) {
    const fs = new PowerCutFileSystem({ seed });
    await mkdirDurable(fs, '/d');
    const fh = await fs.open('/d/f', 'createExclusive');
    await fs.syncDir('/d');
    await fh.write([enc('0123456789')], 0);
    await fh.datasync();
    await fh.truncate(4);
    const got = dec(await fs.crash({ tornTail: true }).readFile('/d/f'));
    assert.ok(got === '0123' || got === '0123456789', got);
    sizes.add(got.length);
  }
  assert.deepEqual([...sizes].sort(), [10, 4]);
});

void test('a directory sync that returns after a later one never takes back what the later one made durable', async () => {
  let overtaken = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const fs = new PowerCutFileSystem({ seed, jitterTicksMax: 40 });
    await mkdirDurable(fs, '/d');
    await writeFileAtomic(fs, '/d/a', enc('x'));
    let earlierDone = false;
    const earlier = fs.syncDir('/d').then(() => void (earlierDone = true)); // its snapshot holds a, not b
    await fs.rename('/d/a', '/d/b');
    await fs.syncDir('/d');
    if (!earlierDone) overtaken++;
    await earlier;
    const after = fs.crash();
    assert.deepEqual(await after.readdir('/d'), ['b'], `seed ${seed}`);
  }
  assert.ok(overtaken > 5, `only ${overtaken} runs had the later sync return first`);
});
