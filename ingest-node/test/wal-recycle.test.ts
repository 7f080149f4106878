// Recycled segment files (wal.recycleSegmentsMax): a delivered segment's file
// is kept and a later segment is written over it. The dangerous part is
// recovery: behind the new frames lie the old segment's frames with valid
// CRCs, here at exactly the same offsets (same header length, same record
// sizes), and a cut may leave any mix of new and old pages. Every
// acknowledged record must come back, no stale one ever, seqs gap-free.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { PowerCutFileSystem } from '../src/fs/power-cut.ts';
import { FaultFileSystem } from '../src/fs/fault.ts';
import type { FileSystem } from '../src/fs/types.ts';
import { openWal } from '../src/wal/wal.ts';
import { isWalError } from '../src/wal/errors.ts';
import { RecordFormat, WalErrorCode, type Wal } from '../src/wal/types.ts';
import { checkRecovered, dec, enc, readWalDir, walOptions } from './wal-helpers.ts';

const DIR = '/data/wal/orders';
const SEGMENT = /\/\d{20}\.wal$/;
/** Every record the same size, so every frame of a later segment lands where an older one's did. */
const rec = (tag: string, i: number): string => `${tag}${String(i).padStart(6, '0')}${'x'.repeat(90)}`;

async function deliverAll(wal: Wal): Promise<void> {
  for (const s of wal.sealedSegments()) {
    if (s.status === 'sealed') await wal.markDelivered(s.id);
    await wal.deleteSegment(s.id);
  }
}

async function names(fs: FileSystem): Promise<string[]> {
  return (await fs.readdir(DIR)).sort();
}

/** Segment A of `n` one-record groups, delivered and deleted: its file is now free. */
async function freeSegment(wal: Wal, n: number, tag = 'a'): Promise<void> {
  for (let i = 0; i < n; i++) await wal.append([enc(rec(tag, i))], RecordFormat.ndjson);
  await wal.seal();
  await deliverAll(wal);
}

void test('a delivered file is reused: renamed to <id>.free, then written over by the next segment, cut to its end at the seal', async () => {
  const mem = new PowerCutFileSystem({ seed: 1 });
  const wal = await openWal(walOptions(mem));
  await freeSegment(wal, 40);
  assert.deepEqual(await names(mem), ['00000000000000000001.free', 'epoch', 'state.json']);
  const freeBytes = (await mem.stat(path.join(DIR, '00000000000000000001.free'))).size;
  assert.equal(wal.stats().freeSegmentFiles, 1);
  assert.equal(wal.stats().freeSegmentBytes, freeBytes);
  assert.equal(wal.stats().retainedBytes, 0, 'free files are not backlog: delivery cannot shrink them');
  // Smaller than the free file: the seal cuts the old bytes off.
  for (let i = 0; i < 5; i++) await wal.append([enc(rec('b', i))], RecordFormat.ndjson);
  assert.equal(wal.stats().recycledSegmentsTotal, 1);
  assert.equal(wal.stats().freeSegmentFiles, 0);
  const b = (await wal.seal())!;
  assert.equal((await mem.stat(path.join(DIR, b.fileName))).size, b.bytes);
  assert.ok(b.bytes < freeBytes);
  await deliverAll(wal);
  // Larger than the free file (recycled from B's small one): writes go past its end.
  for (let i = 0; i < 60; i++) await wal.append([enc(rec('c', i))], RecordFormat.ndjson);
  const c = (await wal.seal())!;
  assert.equal(wal.stats().recycledSegmentsTotal, 2);
  assert.equal((await mem.stat(path.join(DIR, c.fileName))).size, c.bytes);
  await wal.close();
  const records = await readWalDir(mem, DIR);
  assert.deepEqual(
    records.map((r) => dec(r.payload)),
    Array.from({ length: 60 }, (_, i) => rec('c', i)),
  );
  assert.equal(records[0]!.seq, 46n);
});

void test('recycleSegmentsMax 0: delivered files are removed and new segments created, as before', async () => {
  const mem = new PowerCutFileSystem({ seed: 2 });
  const fs = new FaultFileSystem(mem);
  const renamed: string[] = [];
  fs.inject({ op: 'rename', times: Infinity, gate: (call) => void renamed.push(call.path) });
  const wal = await openWal(walOptions(fs, { recycleSegmentsMax: 0 }));
  await freeSegment(wal, 10);
  assert.deepEqual(await names(mem), ['epoch', 'state.json']);
  await wal.append([enc('next')], RecordFormat.ndjson);
  assert.equal(wal.stats().recycledSegmentsTotal, 0);
  assert.deepEqual(
    renamed.filter((p) => !p.endsWith('.tmp')),
    [],
    'only temp files (state, epoch) are renamed',
  );
  await wal.close();
  // A limit lowered between runs: free files beyond it are removed at open.
  const mem2 = new PowerCutFileSystem({ seed: 3 });
  const w2 = await openWal(walOptions(mem2, { recycleSegmentsMax: 3 }));
  for (let k = 0; k < 3; k++) {
    await w2.append([enc(`k${k}`)], RecordFormat.ndjson);
    await w2.seal();
  }
  await deliverAll(w2);
  assert.equal((await names(mem2)).filter((n) => n.endsWith('.free')).length, 3);
  await w2.close();
  const w3 = await openWal(walOptions(mem2, { recycleSegmentsMax: 1 }));
  assert.equal((await names(mem2)).filter((n) => n.endsWith('.free')).length, 1);
  assert.equal(w3.stats().freeSegmentFiles, 1);
  await w3.close();
});

type Cut = 'after-header' | 'in-group' | 'after-groups';

/**
 * Segment A of 30 one-record groups is delivered and freed; segment B is
 * written over it with records of the same size (so aligned frames), and the
 * power goes at `cut`. Returns what the checks need.
 */
async function alignedRun(seed: number, cut: Cut) {
  const mem = new PowerCutFileSystem({ seed });
  const fs = new FaultFileSystem(mem);
  const page = [16, 64, 512][seed % 3]!;
  const opts = walOptions(fs, { segmentBytesMax: 1 << 20 });
  const wal = await openWal(opts);
  await freeSegment(wal, 30);
  const acked = new Map<string, bigint>();
  const ackedGroups = cut === 'after-header' ? 0 : cut === 'in-group' ? 0 : 1 + (seed % 12);
  let crashed: PowerCutFileSystem | undefined;
  if (cut === 'after-header') {
    fs.inject({ op: 'write', path: SEGMENT, gate: () => void (crashed = mem.crash()) });
  } else {
    // The group after the acknowledged ones: written, then cut before its fdatasync returns.
    fs.inject({
      op: 'datasync',
      path: SEGMENT,
      skip: ackedGroups,
      gate: () => void (crashed = mem.crash({ tornTail: true, scatteredPageBytes: page })),
    });
  }
  let i = 0;
  for (let g = 0; g < ackedGroups; g++) {
    const p = rec('b', i++);
    const r = await wal.append([enc(p)], RecordFormat.ndjson);
    acked.set(p, r.firstSeq);
  }
  // One group of several records (the same sizes as A's), torn by the cut.
  const last = Array.from({ length: 1 + (seed % 5) }, () => rec('b', i++));
  const unackedBytes = last.length * (26 + last[0]!.length);
  await assert.rejects(wal.append(last.map(enc), RecordFormat.ndjson));
  assert.ok(crashed !== undefined);
  assert.equal(wal.stats().recycledSegmentsTotal, 1);
  const reopened = await openWal({ ...opts, fs: crashed });
  const records = await readWalDir(crashed, DIR);
  const stale = records.filter((r) => dec(r.payload).startsWith('a')).length;
  const check = checkRecovered(records, acked, undefined, 31n);
  const next = await reopened.append([enc('after')], RecordFormat.ndjson);
  await reopened.close();
  let copied = 0;
  const qdir = path.join(DIR, 'quarantine');
  for (const n of await crashed.readdir(qdir).catch(() => []))
    copied += (await crashed.stat(path.join(qdir, n))).size;
  return { records, acked, stale, check, next, reopened, copied, unackedBytes };
}

for (const cut of ['after-header', 'in-group', 'after-groups'] as const) {
  void test(`stale frames aligned at the new frames' offsets, cut ${cut}: acknowledged records back, no stale one, seqs gap-free`, async () => {
    let truncated = 0;
    for (let seed = 1; seed <= 30; seed++) {
      const o = await alignedRun(seed, cut);
      const where = `seed ${seed}`;
      assert.equal(o.stale, 0, `${where}: a stale record was read as data`);
      assert.equal(o.check.ackedLost, 0, `${where}: acknowledged records lost`);
      assert.deepEqual(o.check.seqErrors, [], where);
      assert.equal(o.reopened.recovery.quarantined.length, 0, `${where}: stale frames taken for corruption`);
      // The segment's own records start right after A's (seqs 1..30).
      if (o.records.length > 0) assert.equal(o.records[0]!.seq, 31n, where);
      assert.equal(o.next.firstSeq, 31n + BigInt(o.records.length), `${where}: the sequence goes on`);
      // Only what may be the segment's own bytes is copied, never the stale rest.
      assert.ok(o.copied <= o.unackedBytes, `${where}: ${o.copied} bytes copied to quarantine`);
      truncated += o.reopened.recovery.truncations.length;
    }
    assert.ok(truncated > 0);
  });
}

void test('the seal cut of a recycled file across a power cut: recovery cuts the stale rest, copies nothing of it', async () => {
  for (const at of ['truncate', 'sync'] as const) {
    for (let seed = 1; seed <= 10; seed++) {
      const mem = new PowerCutFileSystem({ seed });
      const fs = new FaultFileSystem(mem);
      const opts = walOptions(fs);
      const wal = await openWal(opts);
      await freeSegment(wal, 50);
      const acked = new Map<string, bigint>();
      for (let i = 0; i < 7; i++) {
        const p = rec('b', i);
        acked.set(p, (await wal.append([enc(p)], RecordFormat.ndjson)).firstSeq);
      }
      let crashed: PowerCutFileSystem | undefined;
      fs.inject({
        op: at,
        path: SEGMENT,
        gate: () => void (crashed = mem.crash({ tornTail: true, scatteredPageBytes: 64 })),
      });
      // (The seal's state write then fails for ever: not awaited.)
      void wal.seal().catch(() => {});
      for (let i = 0; i < 1000 && crashed === undefined; i++) await new Promise((r) => setImmediate(r));
      assert.ok(crashed !== undefined, `${at} seed ${seed}: no cut`);
      const reopened = await openWal({ ...opts, fs: crashed });
      const records = await readWalDir(crashed, DIR);
      assert.deepEqual(checkRecovered(records, acked, undefined, 51n), {
        ackedLost: 0,
        seqErrors: [],
        staleReturned: 0,
      });
      assert.equal(records.length, 7, `${at} seed ${seed}`);
      const t = reopened.recovery.truncations;
      // The shrink landed (nothing to cut) or did not (the stale rest is cut, not copied).
      assert.ok(
        t.length === 0 || (t.length === 1 && t[0]!.tail === 'stale' && t[0]!.copiedTo === undefined),
        JSON.stringify(t),
      );
      const seg = reopened.sealedSegments()[0]!;
      assert.equal((await crashed.stat(path.join(DIR, seg.fileName))).size, seg.bytes);
      await reopened.close();
    }
  }
});

void test('a full volume: a recycled file takes writes without new blocks; ENOSPC releases the free files', async () => {
  const mem = new PowerCutFileSystem({ seed: 5, capacityBytes: 64 * 1024 });
  const opts = walOptions(mem, { recycleSegmentsMax: 2 });
  const wal = await openWal(opts);
  // Two segments (~5 and ~2.5 KiB), both delivered: two free files.
  for (let i = 0; i < 40; i++) await wal.append([enc(rec('a', i))], RecordFormat.ndjson);
  await wal.seal();
  for (let i = 0; i < 20; i++) await wal.append([enc(rec('c', i))], RecordFormat.ndjson);
  await wal.seal();
  await deliverAll(wal);
  assert.equal(wal.stats().freeSegmentFiles, 2);
  // Fill what is left of the volume.
  const filler = await mem.open('/data/filler', 'createExclusive');
  await filler.write([new Uint8Array((await mem.statfs(DIR)).freeBytes)], 0);
  assert.equal((await mem.statfs(DIR)).freeBytes, 0);
  // The larger free file is taken: its records fit in blocks it already has.
  const acked: bigint[] = [];
  for (let i = 0; i < 30; i++)
    acked.push((await wal.append([enc(rec('b', i))], RecordFormat.ndjson)).lastSeq);
  assert.equal(wal.stats().recycledSegmentsTotal, 1);
  // Past its end the volume is full: the write fails, and the WAL gives the other free file back.
  let failed = 0;
  for (let i = 30; i < 60 && failed === 0; i++) {
    await wal.append([enc(rec('b', i))], RecordFormat.ndjson).then(
      (r) => acked.push(r.lastSeq),
      (err: unknown) => {
        assert.ok(isWalError(err, WalErrorCode.writeFailed), String(err));
        failed++;
      },
    );
  }
  assert.equal(failed, 1);
  assert.equal(wal.stats().freeSegmentFiles, 0);
  assert.equal((await names(mem)).filter((n) => n.endsWith('.free')).length, 0);
  assert.ok((await mem.statfs(DIR)).freeBytes > 2000, 'the free file’s space is back');
  // …which the next append uses.
  await wal.append([enc('after-enospc')], RecordFormat.ndjson);
  await wal.close();
  const records = await readWalDir(mem, DIR);
  assert.equal(records.at(-1)!.seq, BigInt(acked.length + 60 + 1));
  assert.equal(dec(records.at(-1)!.payload), 'after-enospc');
});

void test('a lost state file starts a new epoch and removes the free files (their stale seqs are not ordered against it)', async () => {
  const mem = new PowerCutFileSystem({ seed: 6 });
  const opts = walOptions(mem);
  const wal = await openWal(opts);
  await freeSegment(wal, 5);
  await wal.close();
  await mem.unlink(path.join(DIR, 'state.json'));
  const reopened = await openWal(opts);
  assert.equal(reopened.recovery.epochRotated, true);
  assert.equal(reopened.stats().freeSegmentFiles, 0);
  assert.deepEqual(
    (await names(mem)).filter((n) => n.endsWith('.free')),
    [],
  );
  await reopened.close();
});

// A delete whose directory sync failed after the rename (or the unlink) is
// retried: the file is already gone, and the retry must finish the delete,
// or retention (which stops at the first failure) would stop for good.
for (const recycleSegmentsMax of [2, 0]) {
  void test(`deleteSegment retried after its directory sync failed finishes (recycleSegmentsMax ${recycleSegmentsMax})`, async () => {
    const fs = new FaultFileSystem(new PowerCutFileSystem({ seed: 5 }));
    const wal = await openWal(walOptions(fs, { recycleSegmentsMax }));
    for (let i = 0; i < 3; i++) await wal.append([enc(rec('a', i))], RecordFormat.ndjson);
    const a = (await wal.seal())!;
    await wal.markDelivered(a.id);
    fs.inject({ op: 'syncDir', fault: 'EIO' });
    await assert.rejects(wal.deleteSegment(a.id), /EIO/);
    assert.equal(wal.sealedSegments().length, 1, 'still listed after the failed delete');
    await wal.deleteSegment(a.id);
    assert.deepEqual(wal.sealedSegments(), []);
    assert.equal(wal.stats().retainedBytes, 0);
    // And the WAL goes on: new records, their seqs after a's.
    const next = await wal.append([enc(rec('b', 0))], RecordFormat.ndjson);
    assert.equal(next.firstSeq, a.lastSeq + 1n);
    await wal.close();
  });
}

void test('a volume short of space (setVolumeLow): the free files go back to it and delivered files are removed, not kept, until it is back', async () => {
  const mem = new PowerCutFileSystem({ seed: 11 });
  const wal = await openWal(walOptions(mem, { recycleSegmentsMax: 2 }));
  await freeSegment(wal, 10, 'a');
  await freeSegment(wal, 10, 'b');
  assert.equal(wal.stats().freeSegmentFiles, 1, 'b was written over a');
  await wal.setVolumeLow(true);
  assert.equal(wal.stats().freeSegmentFiles, 0);
  assert.deepEqual(
    (await names(mem)).filter((n) => n.endsWith('.free')),
    [],
    'unlinked (and the directory synced: a power cut now keeps them gone)',
  );
  const disk = mem.crash();
  assert.deepEqual(
    (await names(disk)).filter((n) => n.endsWith('.free')),
    [],
  );
  const wal2 = await openWal(walOptions(disk, { recycleSegmentsMax: 2 }));
  await wal2.setVolumeLow(true);
  await freeSegment(wal2, 5, 'c');
  assert.equal(wal2.stats().freeSegmentFiles, 0, 'while low, a delivered file is removed');
  assert.deepEqual(
    (await names(disk)).filter((n) => SEGMENT.test(`/${n}`) || n.endsWith('.free')),
    [],
  );
  await wal2.setVolumeLow(false);
  await freeSegment(wal2, 5, 'd');
  assert.equal(wal2.stats().freeSegmentFiles, 1, 'back over the high watermark: kept again');
  await wal2.close();
});

void test('the volume going low while a delivered file is being renamed to <id>.free: that file is removed, not kept', async () => {
  const mem = new PowerCutFileSystem({ seed: 12 });
  const fs = new FaultFileSystem(mem);
  const wal = await openWal(walOptions(fs, { recycleSegmentsMax: 2 }));
  for (let i = 0; i < 10; i++) await wal.append([enc(rec('a', i))], RecordFormat.ndjson);
  const a = (await wal.seal())!;
  await wal.markDelivered(a.id);
  // setVolumeLow's release runs while the rename is held: it finds no free file yet.
  fs.inject({ op: 'rename', path: SEGMENT, gate: () => wal.setVolumeLow(true) });
  await wal.deleteSegment(a.id);
  assert.equal(wal.stats().freeSegmentFiles, 0);
  assert.deepEqual(
    (await names(mem)).filter((n) => n.endsWith('.free')),
    [],
  );
  await wal.close();
});
