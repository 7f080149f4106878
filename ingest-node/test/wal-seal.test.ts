// Sealing (size, age, close), the epoch, the state file and the delivery
// pipeline's view of sealed segments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { PowerCutFileSystem } from '../src/fs/power-cut.ts';
import { FaultFileSystem } from '../src/fs/fault.ts';
import { openWal, SEGMENT_AGE_MS_MAX_DEFAULT, SEGMENT_BYTES_MAX_DEFAULT } from '../src/wal/wal.ts';
import { readSegment } from '../src/wal/format.ts';
import { WalState, STATE_FILE } from '../src/wal/state.ts';
import { RecordFormat, type SealedSegment } from '../src/wal/types.ts';
import { ManualClock, ManualTimers, dec, enc, readWalDir, seededBytes, walOptions } from './wal-helpers.ts';

const DIR = '/data/wal/orders';

void test('defaults are the documented ones', () => {
  assert.equal(SEGMENT_BYTES_MAX_DEFAULT, 64 * 1024 * 1024);
  assert.equal(SEGMENT_AGE_MS_MAX_DEFAULT, 60_000);
});

void test('seal by size: segments stay within segmentBytesMax and are announced in order', async () => {
  const fs = new PowerCutFileSystem({ seed: 2 });
  const wal = await openWal(walOptions(fs, { segmentBytesMax: 1024 }));
  const announced: SealedSegment[] = [];
  wal.onSealed((s) => announced.push(s));
  for (let i = 0; i < 40; i++) await wal.append([new Uint8Array(100).fill(i)], RecordFormat.recordio);
  await wal.close();
  assert.ok(announced.length >= 5);
  let nextSeq = 1n;
  for (const [i, s] of announced.entries()) {
    assert.ok(s.bytes <= 1024, `${s.fileName}: ${s.bytes}`);
    assert.equal(s.firstSeq, nextSeq);
    assert.equal(s.records, Number(s.lastSeq - s.firstSeq + 1n));
    assert.equal(s.sealReason, i === announced.length - 1 ? 'close' : 'size');
    assert.equal(s.fileName, `${String(i + 1).padStart(20, '0')}.wal`);
    nextSeq = s.lastSeq + 1n;
    const bytes = await fs.readFile(path.join(DIR, s.fileName));
    assert.equal(bytes.length, s.bytes);
    const { header, records } = readSegment(bytes);
    assert.equal(header.segmentId, s.id);
    assert.equal(header.endpoint, 'orders');
    assert.equal(header.instance, 'orders-0');
    assert.equal(header.epoch, wal.epoch);
    assert.equal([...records].length, s.records);
  }
  assert.equal(nextSeq, 41n);
  assert.deepEqual(wal.sealedSegments(), announced);
});

void test('a segment that reaches its size is sealed at once, not at the next append', async () => {
  const fs = new PowerCutFileSystem({ seed: 2 });
  const wal = await openWal(walOptions(fs, { segmentBytesMax: 300 }));
  await wal.append([new Uint8Array(400)], RecordFormat.recordio); // alone larger than a segment
  await new Promise((r) => setImmediate(r));
  assert.equal(wal.stats().openSegmentId, null);
  await wal.close();
  assert.equal(wal.sealedSegments().length, 1);
});

void test('seal by age through the injected clock and timers', async () => {
  const fs = new PowerCutFileSystem({ seed: 4 });
  const clock = new ManualClock();
  const timers = new ManualTimers(clock);
  const wal = await openWal(walOptions(fs, { clock, timers, segmentAgeMsMax: 60_000 }));
  const announced: SealedSegment[] = [];
  wal.onSealed((s) => announced.push(s));
  assert.equal(timers.pending.size, 0, 'no timer while there is nothing to seal');
  await wal.append([enc('a')], RecordFormat.ndjson);
  assert.equal(timers.pending.size, 1);
  clock.advance(59_999);
  assert.equal(timers.runDue(), 0);
  assert.equal(await wal.maybeSealByAge(), false);
  await wal.append([enc('b')], RecordFormat.ndjson);
  clock.advance(1);
  assert.equal(timers.runDue(), 1);
  while (announced.length === 0) await new Promise((r) => setImmediate(r));
  assert.equal(announced[0]!.sealReason, 'age');
  assert.equal(announced[0]!.records, 2);
  assert.equal(timers.pending.size, 0);
  // An idle WAL never seals an empty segment.
  clock.advance(10 * 60_000);
  assert.equal(await wal.maybeSealByAge(), false);
  // The age counts from the segment's first record.
  await wal.append([enc('c')], RecordFormat.ndjson);
  clock.advance(30_000);
  assert.equal(await wal.maybeSealByAge(), false);
  clock.advance(30_000);
  assert.equal(await wal.maybeSealByAge(), true);
  assert.equal(announced.length, 2);
  await wal.close();
  assert.equal(timers.pending.size, 0);
});

void test('seal by age past the longest timer (2^31 - 1 ms): armed in steps Node can keep, sealed on time', async () => {
  // Node fires a longer timeout after 1 ms (TimeoutOverflowWarning): armed
  // with the whole age, the WAL would wake every millisecond until it is due.
  const TIMER_MS_MAX = 2 ** 31 - 1;
  const fs = new PowerCutFileSystem({ seed: 5 });
  const clock = new ManualClock();
  const timers = new ManualTimers(clock);
  const ageMs = 30 * 24 * 3600_000;
  const wal = await openWal(walOptions(fs, { clock, timers, segmentAgeMsMax: ageMs }));
  const announced: SealedSegment[] = [];
  wal.onSealed((s) => announced.push(s));
  await wal.append([enc('a')], RecordFormat.ndjson);
  const armedIn = (): number => [...timers.pending.values()][0]!.at - clock.monotonicMs();
  const armed = (): number => timers.pending.size;
  assert.equal(armed(), 1);
  assert.equal(armedIn(), TIMER_MS_MAX);
  clock.advance(TIMER_MS_MAX);
  assert.equal(timers.runDue(), 1);
  while (armed() === 0) await new Promise((r) => setImmediate(r));
  assert.equal(armedIn(), ageMs - TIMER_MS_MAX, 'armed again for what is left');
  assert.equal(announced.length, 0);
  clock.advance(ageMs - TIMER_MS_MAX);
  assert.equal(timers.runDue(), 1);
  while (announced.length === 0) await new Promise((r) => setImmediate(r));
  assert.equal(announced[0]!.sealReason, 'age');
  await wal.close();
});

void test('close seals a segment with records and removes an empty one', async () => {
  const fs = new FaultFileSystem(new PowerCutFileSystem({ seed: 6 }));
  const opts = walOptions(fs);
  let wal = await openWal(opts);
  fs.inject({ op: 'datasync', path: /\.wal$/, fault: 'EIO' });
  await assert.rejects(wal.append([enc('x')], RecordFormat.ndjson)); // leaves an open, empty segment
  assert.equal(wal.stats().openSegmentId, 1n);
  await wal.close();
  assert.deepEqual(
    (await fs.readdir(DIR)).filter((f) => f.endsWith('.wal')),
    [],
  );
  wal = await openWal(opts);
  await wal.append([enc('y')], RecordFormat.ndjson);
  await wal.close();
  assert.deepEqual(
    wal.sealedSegments().map((s) => [s.sealReason, s.records]),
    [['close', 1]],
  );
});

void test('the epoch persists across reopen; a wiped directory gets a new, later one', async () => {
  const fs = new PowerCutFileSystem({ seed: 8 });
  const clock = new ManualClock();
  let wal = await openWal(walOptions(fs, { clock, randomBytes: seededBytes(1) }));
  const e1 = wal.epoch;
  assert.equal(wal.recovery.created, true);
  await wal.append([enc('a')], RecordFormat.ndjson);
  await wal.close();
  wal = await openWal(walOptions(fs, { clock, randomBytes: seededBytes(2) }));
  assert.equal(wal.epoch, e1);
  assert.equal(wal.recovery.created, false);
  await wal.close();
  // Disk lost: a fresh volume, later in time.
  const fresh = new PowerCutFileSystem({ seed: 9 });
  clock.advance(1000);
  wal = await openWal(walOptions(fresh, { clock, randomBytes: seededBytes(1) }));
  assert.notEqual(wal.epoch, e1);
  assert.ok(wal.epoch > e1, 'epochs sort by creation time');
  assert.equal(wal.recovery.epochRotated, false, 'a fresh dir is not a rotation');
  await wal.close();
  // The epoch file alone lost: restored from the state file, unchanged.
  await fs.unlink(path.join(DIR, 'epoch'));
  wal = await openWal(walOptions(fs, { clock }));
  assert.equal(wal.epoch, e1);
  await wal.close();
  assert.ok((await fs.readdir(DIR)).includes('epoch'));
});

void test('the WAL directory and its parents are created durably', async () => {
  const fs = new PowerCutFileSystem({ seed: 10 });
  const wal = await openWal(walOptions(fs));
  await wal.append([enc('a')], RecordFormat.ndjson);
  const after = fs.crash();
  const wal2 = await openWal(walOptions(after));
  assert.equal(wal2.epoch, wal.epoch);
  assert.equal(wal2.sealedSegments()[0]?.records, 1);
  await wal2.close();
});

void test('state file: a crash at any point of its own write leaves the old or the new version', async () => {
  // One seal's state write is about 6 filesystem operations: cut at each, and after.
  for (let cut = 0; cut < 12; cut++) {
    const mem = new PowerCutFileSystem({ seed: 100 + cut, jitterTicksMax: 0 });
    const opts = walOptions(mem);
    const wal = await openWal(opts);
    await wal.append([enc('a')], RecordFormat.ndjson);
    const before = WalState.parse(await mem.readFile(path.join(DIR, STATE_FILE)));
    const rebooted = mem.armCrash(mem.opCount + 1 + cut, { tornTail: true });
    // After the cut the seal's state write retries on (manual) timers forever: do not wait for it.
    let sealed = false;
    void wal.seal().then(
      () => (sealed = true),
      () => (sealed = true),
    );
    while (!sealed && !mem.frozen) await new Promise((r) => setImmediate(r));
    if (!mem.frozen) mem.crash();
    const after = await rebooted;
    const raw = await after.readFile(path.join(DIR, STATE_FILE));
    const state = WalState.parse(raw); // never torn, never half-written
    assert.ok(
      state.segments.size === before.segments.size || state.segments.size === before.segments.size + 1,
    );
    const wal2 = await openWal({ ...opts, fs: after });
    assert.equal(wal2.recovery.epochRotated, false, `cut ${cut}`);
    assert.deepEqual(
      (await readWalDir(after, DIR)).map((r) => dec(r.payload)),
      ['a'],
      `cut ${cut}`,
    );
    await wal2.close();
  }
});

void test('delivery pipeline: progress, delivered, delete survive restarts; ids and seqs never repeat', async () => {
  const fs = new PowerCutFileSystem({ seed: 12 });
  const opts = walOptions(fs);
  let wal = await openWal(opts);
  await wal.append([enc('a')], RecordFormat.ndjson);
  const s1 = (await wal.seal())!;
  await wal.append([enc('b')], RecordFormat.ndjson);
  const s2 = (await wal.seal())!;
  await wal.updateProgress(s1.id, { raw: { key: 'raw/x.parquet', rows: 1 } });
  await assert.rejects(wal.deleteSegment(s1.id), /not delivered/);
  await wal.markDelivered(s1.id, { commit: 'commits/x.json' });
  assert.equal(wal.stats().undeliveredSegments, 1);
  assert.equal(wal.stats().undeliveredBytes, s2.bytes);
  await wal.close();

  // Restart: the pipeline resumes from the state file.
  wal = await openWal(opts);
  const [r1, r2] = wal.sealedSegments();
  assert.equal(r1?.status, 'delivered');
  assert.deepEqual(r1.progress, { raw: { key: 'raw/x.parquet', rows: 1 }, commit: 'commits/x.json' });
  assert.equal(r2?.status, 'sealed');
  await wal.deleteSegment(s1.id);
  assert.ok(!(await fs.readdir(DIR)).includes(s1.fileName));
  await wal.markDelivered(s2.id);
  await wal.deleteSegment(s2.id);
  // The two files are kept for reuse (wal.recycleSegmentsMax, default 2), apart from the backlog.
  assert.equal(wal.stats().freeSegmentFiles, 2);
  assert.equal(wal.stats().freeSegmentBytes, s1.bytes + s2.bytes);
  assert.equal(wal.stats().retainedBytes, 0);
  await wal.close();

  // Everything delivered and deleted: the next segment and seq still move on.
  wal = await openWal(opts);
  assert.equal(wal.sealedSegments().length, 0);
  const r = await wal.append([enc('c')], RecordFormat.ndjson);
  assert.equal(r.firstSeq, 3n);
  assert.equal(wal.stats().openSegmentId, 3n);
  await wal.close();
});

void test('resume recipe: sealedSegments() then onSealed() in the same tick misses nothing and repeats nothing', async () => {
  const fs = new PowerCutFileSystem({ seed: 13 });
  const wal = await openWal(walOptions(fs, { segmentBytesMax: 200 }));
  const seen: bigint[] = [];
  const writes = Array.from({ length: 30 }, (_, i) => wal.append([enc(`record-${i}`)], RecordFormat.ndjson));
  for (let i = 0; i < 30; i++) await new Promise((r) => setImmediate(r));
  // Subscribe mid-stream, as a restarted delivery loop would.
  for (const s of wal.sealedSegments()) seen.push(s.id);
  wal.onSealed((s) => seen.push(s.id));
  await Promise.all(writes);
  await wal.close();
  const all = wal.sealedSegments().map((s) => s.id);
  assert.deepEqual(seen, all);
});
