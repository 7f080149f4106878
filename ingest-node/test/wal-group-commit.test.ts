// Group commit: many appends share one write + one fdatasync, and nothing is
// acknowledged by a sync that began before its bytes were written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PowerCutFileSystem } from '../src/fs/power-cut.ts';
import { FaultFileSystem } from '../src/fs/fault.ts';
import { openWal } from '../src/wal/wal.ts';
import { isWalError } from '../src/wal/errors.ts';
import { FrameFlags } from '../src/wal/format.ts';
import { RecordFormat, WalErrorCode, type AppendResult } from '../src/wal/types.ts';
import { dec, deferred, enc, readWalDir, tick, walOptions } from './wal-helpers.ts';
import type { ManualClock } from './wal-helpers.ts';

const DIR = '/data/wal/orders';

void test('N concurrent appends share far fewer syncs, and seqs are gap-free in arrival order', async () => {
  const fs = new FaultFileSystem(new PowerCutFileSystem({ seed: 3 }));
  const wal = await openWal(walOptions(fs));
  const syncsBefore = fs.calls.datasync;
  const N = 500;
  const results = await Promise.all(
    Array.from({ length: N }, (_, i) =>
      wal.append(
        Array.from({ length: 1 + (i % 3) }, (_, j) => enc(`${i}.${j}`)),
        RecordFormat.ndjson,
      ),
    ),
  );
  const syncs = fs.calls.datasync - syncsBefore;
  assert.ok(syncs <= 10, `${syncs} datasyncs for ${N} appends`);
  assert.equal(wal.stats().appendsTotal, N);
  let next = 1n;
  for (const [i, r] of results.entries()) {
    assert.equal(r.firstSeq, next, `append ${i}`);
    assert.equal(r.count, 1 + (i % 3));
    assert.equal(r.lastSeq, r.firstSeq + BigInt(r.count - 1));
    next = r.lastSeq + 1n;
  }
  await wal.close();
  const records = await readWalDir(fs, DIR);
  assert.equal(records.length, Number(next - 1n));
  assert.equal(dec(records[0]!.payload), '0.0');
  assert.equal(dec(records.at(-1)!.payload), `${N - 1}.${(N - 1) % 3}`);
});

void test('a sync already in progress does not acknowledge an append that arrived during it (pipeline depth 1)', async () => {
  const held: { release: () => void; n: number }[] = [];
  const fs = new FaultFileSystem(new PowerCutFileSystem({ jitterTicksMax: 0 }));
  const wal = await openWal(walOptions(fs, { pipelineDepth: 1 }));
  await wal.append([enc('warm-up: creates the segment')], RecordFormat.ndjson);
  fs.inject({
    op: 'datasync',
    path: /\.wal$/,
    times: Infinity,
    gate: (call) => {
      const d = deferred();
      held.push({ release: () => d.resolve(), n: call.n });
      return d.promise;
    },
  });
  const settled: string[] = [];
  const a = wal.append([enc('first')], RecordFormat.ndjson).then((r) => (settled.push('a'), r));
  while (held.length === 0) await tick();
  // The first group's sync is now in progress: an append arriving now must wait for another sync.
  const b = wal.append([enc('second')], RecordFormat.ndjson).then((r) => (settled.push('b'), r));
  const c = wal.append([enc('third')], RecordFormat.ndjson).then((r) => (settled.push('c'), r));
  for (let i = 0; i < 20; i++) await tick();
  assert.deepEqual(settled, []);
  assert.equal(held.length, 1, 'one sync in flight at a time');
  held[0]!.release();
  const ra: AppendResult = await a;
  for (let i = 0; i < 20; i++) await tick();
  assert.deepEqual(settled, ['a'], 'b and c were written after the first sync began');
  assert.equal(held.length, 2, 'b and c share the second sync');
  held[1]!.release();
  const [rb, rc] = await Promise.all([b, c]);
  assert.deepEqual(settled, ['a', 'b', 'c']);
  assert.deepEqual([ra.firstSeq, rb.firstSeq, rc.firstSeq], [2n, 3n, 4n]);
  assert.equal(wal.stats().syncsTotal, 3);
  fs.clear();
  await wal.close();
});

// Depth 2: group N+1 is written while group N's fdatasync runs, yet it is
// acknowledged only by a sync that began after its write, and only after N.
void test('pipelined: the next group is written during a sync, and acknowledged only by a later sync, in order', async () => {
  const held: { release: () => void; n: number }[] = [];
  const mem = new PowerCutFileSystem({ jitterTicksMax: 0 });
  const fs = new FaultFileSystem(mem);
  const wal = await openWal(walOptions(fs, { pipelineDepth: 2 }));
  assert.equal(wal.stats().pipelineDepth, 2);
  await wal.append([enc('warm-up: creates the segment')], RecordFormat.ndjson);
  const file = wal.segmentPath(wal.stats().openSegmentId!);
  fs.inject({
    op: 'datasync',
    path: /\.wal$/,
    times: Infinity,
    gate: (call) => {
      const d = deferred();
      held.push({ release: () => d.resolve(), n: call.n });
      return d.promise;
    },
  });
  const settled: string[] = [];
  const a = wal.append([enc('first')], RecordFormat.ndjson).then((r) => (settled.push('a'), r));
  while (held.length === 0) await tick();
  const b = wal.append([enc('second')], RecordFormat.ndjson).then((r) => (settled.push('b'), r));
  const written = async (s: string): Promise<boolean> =>
    Buffer.from(await mem.readFile(file)).includes(Buffer.from(s));
  while (!(await written('second'))) await tick();
  // b's bytes are in the file while a's sync is still held: that is the pipeline.
  assert.equal(wal.stats().pipelinedWritesTotal, 1);
  assert.equal(wal.stats().pipelineGroupsInFlight, 2);
  // Depth 2: c must wait for a slot (a and b are in flight).
  const c = wal.append([enc('third')], RecordFormat.ndjson).then((r) => (settled.push('c'), r));
  for (let i = 0; i < 20; i++) await tick();
  assert.equal(await written('third'), false, 'no third group in flight at depth 2');
  assert.deepEqual(settled, []);
  assert.equal(held.length, 1, 'never two syncs at once');
  held[0]!.release();
  await a;
  for (let i = 0; i < 20; i++) await tick();
  assert.deepEqual(settled, ['a'], 'the sync that began before b was written does not acknowledge b');
  assert.equal(held.length, 2, 'b gets a sync of its own');
  assert.ok(await written('third'), 'c is written while b syncs');
  held[1]!.release();
  await b;
  for (let i = 0; i < 20; i++) await tick();
  assert.deepEqual(settled, ['a', 'b']);
  assert.equal(held.length, 3);
  held[2]!.release();
  const rc = await c;
  assert.deepEqual(settled, ['a', 'b', 'c']);
  assert.equal(rc.firstSeq, 4n);
  fs.clear();
  await wal.close();
});

void test('pipelined: a failed sync fails its group and every group written after it; the file is cut back to the first', async () => {
  const held: { release: (err?: Error) => void }[] = [];
  const mem = new PowerCutFileSystem({ jitterTicksMax: 0 });
  const fs = new FaultFileSystem(mem);
  const opts = walOptions(fs, { pipelineDepth: 2 });
  const wal = await openWal(opts);
  const ok = await wal.append([enc('ok-1')], RecordFormat.ndjson);
  fs.inject({
    op: 'datasync',
    path: /\.wal$/,
    times: 1,
    gate: () => {
      const d = deferred();
      held.push({ release: () => d.resolve() });
      return d.promise;
    },
  });
  fs.inject({ op: 'datasync', path: /\.wal$/, fault: 'EIO', times: 1 });
  const a = wal.append([enc('bad-a')], RecordFormat.ndjson);
  while (held.length === 0) await tick();
  const b = wal.append([enc('bad-b')], RecordFormat.ndjson);
  while (wal.stats().pipelinedWritesTotal === 0) await tick();
  held[0]!.release(); // a's sync goes on and fails (EIO)
  const [ra, rb] = await Promise.allSettled([a, b]);
  for (const r of [ra, rb]) {
    assert.equal(r.status, 'rejected');
    assert.ok(isWalError(r.reason, WalErrorCode.writeFailed), String(r.reason));
  }
  assert.equal(wal.stats().writeFailuresTotal, 1);
  const next = await wal.append([enc('ok-2')], RecordFormat.ndjson);
  assert.equal(next.firstSeq, ok.lastSeq + 1n, "the failed groups' seqs are reused");
  await wal.close();
  assert.deepEqual(
    (await readWalDir(fs, DIR)).map((r) => dec(r.payload)),
    ['ok-1', 'ok-2'],
  );
});

// Encoding ahead (wal.ts): appends that arrive while a group's fdatasync runs
// are encoded into the next group then, not after the sync returns, and that
// group is written at once; a failure, a seal or a close puts it back.
const holdSyncs = (fs: FaultFileSystem, held: { release: () => void }[], fault?: 'EIO'): void => {
  fs.inject({
    op: 'datasync',
    path: /\.wal$/,
    times: 1,
    gate: () => {
      const d = deferred();
      held.push({ release: () => d.resolve() });
      return d.promise;
    },
    ...(fault !== undefined ? { fault } : {}),
  });
};

void test('appends arriving during a sync are encoded ahead, then written as one group the moment it returns', async () => {
  const held: { release: () => void }[] = [];
  const mem = new PowerCutFileSystem({ jitterTicksMax: 0 });
  const fs = new FaultFileSystem(mem);
  const wal = await openWal(walOptions(fs, { pipelineDepth: 1 }));
  await wal.append([enc('warm-up')], RecordFormat.ndjson);
  const file = wal.segmentPath(wal.stats().openSegmentId!);
  holdSyncs(fs, held);
  const a = wal.append([enc('a')], RecordFormat.ndjson);
  while (held.length === 0) await tick();
  const writesBefore = fs.calls.write;
  const b = wal.append([enc('b1'), enc('b2')], RecordFormat.ndjson);
  const c = wal.append([enc('c')], RecordFormat.recordio);
  for (let i = 0; i < 10; i++) await tick();
  assert.equal(wal.stats().stagedAppendsTotal, 2, 'b and c were encoded while the sync ran');
  assert.equal(fs.calls.write, writesBefore, 'and nothing was written');
  assert.equal(Buffer.from(await mem.readFile(file)).includes(Buffer.from('b1')), false);
  held[0]!.release();
  await a;
  // d arrives after the sync returned and before the staged group is written: it joins it.
  const [rb, rc] = await Promise.all([b, c]);
  assert.equal(fs.calls.write, writesBefore + 1, 'b and c went out in one write');
  assert.deepEqual([rb.firstSeq, rb.lastSeq, rc.firstSeq], [3n, 4n, 5n]);
  await wal.close();
  const records = await readWalDir(fs, DIR);
  assert.deepEqual(
    records.map((r) => [dec(r.payload), r.seq, r.format, r.flags]),
    [
      ['warm-up', 1n, RecordFormat.ndjson, FrameFlags.groupStart | FrameFlags.batchEnd],
      ['a', 2n, RecordFormat.ndjson, FrameFlags.groupStart | FrameFlags.batchEnd],
      ['b1', 3n, RecordFormat.ndjson, FrameFlags.groupStart],
      ['b2', 4n, RecordFormat.ndjson, FrameFlags.batchEnd],
      ['c', 5n, RecordFormat.recordio, FrameFlags.batchEnd],
    ],
  );
});

void test('a failed sync puts the group encoded ahead back: its appends are written after the undo, seqs gap-free', async () => {
  const held: { release: () => void }[] = [];
  const fs = new FaultFileSystem(new PowerCutFileSystem({ jitterTicksMax: 0 }));
  const wal = await openWal(walOptions(fs, { pipelineDepth: 1 }));
  const ok = await wal.append([enc('ok-1')], RecordFormat.ndjson);
  holdSyncs(fs, held, 'EIO');
  const bad = wal.append([enc('bad')], RecordFormat.ndjson);
  while (held.length === 0) await tick();
  const b = wal.append([enc('b')], RecordFormat.ndjson);
  const c = wal.append([enc('c1'), enc('c2')], RecordFormat.ndjson);
  for (let i = 0; i < 10; i++) await tick();
  assert.equal(wal.stats().stagedAppendsTotal, 2);
  held[0]!.release(); // the held sync fails: bad is undone; b and c were never written
  await assert.rejects(bad, (err: unknown) => isWalError(err, WalErrorCode.writeFailed));
  const [rb, rc] = await Promise.all([b, c]);
  assert.equal(rb.firstSeq, ok.lastSeq + 1n, "the failed group's seq goes to b");
  assert.deepEqual([rc.firstSeq, rc.lastSeq], [rb.lastSeq + 1n, rb.lastSeq + 2n]);
  await wal.close();
  assert.deepEqual(
    (await readWalDir(fs, DIR)).map((r) => [dec(r.payload), r.seq]),
    [
      ['ok-1', 1n],
      ['b', 2n],
      ['c1', 3n],
      ['c2', 4n],
    ],
  );
});

void test('a seal asked for while a group is encoded ahead puts it in the next segment, in order', async () => {
  const held: { release: () => void }[] = [];
  const fs = new FaultFileSystem(new PowerCutFileSystem({ jitterTicksMax: 0 }));
  const wal = await openWal(walOptions(fs, { pipelineDepth: 1 }));
  await wal.append([enc('one')], RecordFormat.ndjson);
  holdSyncs(fs, held);
  const two = wal.append([enc('two')], RecordFormat.ndjson);
  while (held.length === 0) await tick();
  const three = wal.append([enc('three')], RecordFormat.ndjson);
  for (let i = 0; i < 10; i++) await tick();
  assert.equal(wal.stats().stagedAppendsTotal, 1);
  const sealed = wal.seal('age');
  held[0]!.release();
  const s = await sealed;
  assert.ok(s !== null);
  assert.deepEqual([s.firstSeq, s.lastSeq], [1n, 2n], 'the sealed segment ends with the synced group');
  const r3 = await three;
  assert.equal(r3.firstSeq, 3n);
  await two;
  await wal.close();
  const segs = wal.sealedSegments();
  assert.equal(segs.length, 2);
  assert.deepEqual([segs[1]!.firstSeq, segs[1]!.lastSeq], [3n, 3n]);
});

void test('groups encoded ahead respect groupBytesMax and the segment size bound', async () => {
  const held: { release: () => void }[] = [];
  const fs = new FaultFileSystem(new PowerCutFileSystem({ jitterTicksMax: 0 }));
  const wal = await openWal(walOptions(fs, { pipelineDepth: 1, groupBytesMax: 1000, segmentBytesMax: 4000 }));
  await wal.append([new Uint8Array(74)], RecordFormat.recordio);
  holdSyncs(fs, held);
  const first = wal.append([new Uint8Array(74)], RecordFormat.recordio);
  while (held.length === 0) await tick();
  const payload = new Uint8Array(74); // 100-byte frames
  const rest = Array.from({ length: 60 }, () => wal.append([payload], RecordFormat.recordio));
  for (let i = 0; i < 10; i++) await tick();
  assert.equal(wal.stats().stagedAppendsTotal, 10, 'one group of at most 1000 bytes is encoded ahead');
  held[0]!.release();
  await first;
  await Promise.all(rest);
  await wal.close();
  const segs = wal.sealedSegments();
  for (const s of segs) assert.ok(s.bytes <= 4000, `segment ${s.fileName} is ${s.bytes} bytes`);
  assert.equal(
    segs.reduce((n, s) => n + s.records, 0),
    62,
  );
  const records = await readWalDir(fs, DIR);
  assert.deepEqual(
    records.map((r) => r.seq),
    Array.from({ length: 62 }, (_, i) => BigInt(i + 1)),
  );
});

void test('groups respect groupBytesMax and the segment size bound', async () => {
  const fs = new FaultFileSystem(new PowerCutFileSystem({ jitterTicksMax: 0 }));
  const wal = await openWal(walOptions(fs, { groupBytesMax: 1000, segmentBytesMax: 4000 }));
  const writes: number[] = [];
  const payload = new Uint8Array(74); // 100-byte frames
  const before = fs.calls.write;
  await Promise.all(Array.from({ length: 100 }, () => wal.append([payload], RecordFormat.recordio)));
  writes.push(fs.calls.write - before);
  const st = wal.stats();
  assert.ok(fs.calls.datasync >= 10, 'at most 10 frames of 100 bytes per group');
  await wal.close();
  for (const s of wal.sealedSegments())
    assert.ok(s.bytes <= 4000, `segment ${s.fileName} is ${s.bytes} bytes`);
  assert.equal(st.recordsTotal, 100);
});

void test('hard cap on queued bytes rejects with WAL_OVERLOADED, and the WAL recovers once it drains', async () => {
  const gate = deferred();
  const fs = new FaultFileSystem(new PowerCutFileSystem({ jitterTicksMax: 0 }));
  const wal = await openWal(walOptions(fs, { queueBytesMax: 10_000 }));
  fs.inject({ op: 'datasync', path: /\.wal$/, gate: () => gate.promise });
  const big = new Uint8Array(3000);
  const accepted = [wal.append([big], RecordFormat.recordio), wal.append([big], RecordFormat.recordio)];
  accepted.push(wal.append([big], RecordFormat.recordio));
  await assert.rejects(
    wal.append([big], RecordFormat.recordio),
    (e: unknown) => isWalError(e, WalErrorCode.overloaded) && e.retryable,
  );
  assert.equal(wal.stats().queuedAppends, 3);
  gate.resolve();
  await Promise.all(accepted);
  assert.equal(wal.stats().queuedBytes, 0);
  await wal.append([big], RecordFormat.recordio);
  await wal.close();
});

void test('record size bound, empty appends and appends after close are refused', async () => {
  const fs = new PowerCutFileSystem({ jitterTicksMax: 0 });
  const wal = await openWal(walOptions(fs, { recordBytesMax: 100 }));
  await assert.rejects(wal.append([new Uint8Array(101)], RecordFormat.json), (e: unknown) =>
    isWalError(e, WalErrorCode.recordTooLarge),
  );
  await assert.rejects(wal.append([], RecordFormat.json), TypeError);
  const r = await wal.append([new Uint8Array(100), new Uint8Array(0)], RecordFormat.json);
  assert.equal(r.count, 2);
  await wal.close();
  await assert.rejects(wal.append([enc('x')], RecordFormat.json), (e: unknown) =>
    isWalError(e, WalErrorCode.closed),
  );
  await wal.close(); // idempotent
});

void test('close() writes what is queued before sealing', async () => {
  const fs = new PowerCutFileSystem({ seed: 9 });
  const wal = await openWal(walOptions(fs));
  const pending = Array.from({ length: 50 }, (_, i) => wal.append([enc(`r${i}`)], RecordFormat.ndjson));
  const closed = wal.close();
  const results = await Promise.all(pending);
  await closed;
  assert.equal(results.at(-1)!.lastSeq, 50n);
  assert.equal(wal.sealedSegments().length, 1);
  assert.equal(wal.sealedSegments()[0]!.sealReason, 'close');
  assert.equal((await readWalDir(fs, DIR)).length, 50);
});

void test('writeSecondsTotal and syncSecondsTotal add up each group write and fdatasync, submit to completion', async () => {
  const fs = new FaultFileSystem(new PowerCutFileSystem({ jitterTicksMax: 0 }));
  const opts = walOptions(fs, { pipelineDepth: 1 });
  const clock = opts.clock as ManualClock;
  const wal = await openWal(opts);
  await wal.append([enc('warm-up: creates the segment')], RecordFormat.ndjson);
  const before = wal.stats();
  // Each write takes 3 ms and each fdatasync 7 ms on the WAL's clock.
  const slow = (ms: number) => async (): Promise<void> => {
    await tick();
    clock.advance(ms);
  };
  fs.inject({ op: 'write', path: /\.wal$/, times: Infinity, gate: slow(3) });
  fs.inject({ op: 'datasync', path: /\.wal$/, times: Infinity, gate: slow(7) });
  for (let i = 0; i < 4; i++) await wal.append([enc(`r${i}`)], RecordFormat.ndjson);
  const after = wal.stats();
  const groups = after.groupWritesTotal - before.groupWritesTotal;
  const syncs = after.syncsTotal - before.syncsTotal;
  assert.equal(groups, 4);
  assert.equal(syncs, 4);
  assert.ok(Math.abs(after.writeSecondsTotal - before.writeSecondsTotal - 4 * 0.003) < 1e-9);
  assert.ok(Math.abs(after.syncSecondsTotal - before.syncSecondsTotal - 4 * 0.007) < 1e-9);
  fs.clear();
  await wal.close();
});
