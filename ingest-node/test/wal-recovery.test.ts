// Recovery on open: the corruption table of docs/wal-format.md, end to end
// through openWal on the in-memory filesystem.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { FaultFileSystem } from '../src/fs/fault.ts';
import { PowerCutFileSystem } from '../src/fs/power-cut.ts';
import type { FileSystem } from '../src/fs/types.ts';
import { openWal } from '../src/wal/wal.ts';
import { readSegment, SegmentCorruptError } from '../src/wal/format.ts';
import { RecordFormat, type WalOptions } from '../src/wal/types.ts';
import { WalState, STATE_FILE } from '../src/wal/state.ts';
import {
  buildSegment,
  dec,
  enc,
  memoryLogger,
  readWalDir,
  walOptions,
  type BuiltSegment,
} from './wal-helpers.ts';

const DIR = '/data/wal/orders';

async function putFile(fs: FileSystem, file: string, bytes: Uint8Array): Promise<void> {
  const fh = await fs.open(file, 'createTruncate');
  await fh.write([bytes], 0);
  await fh.datasync();
  await fh.close();
  await fs.syncDir(path.dirname(file));
}

/** A WAL dir with its epoch and state, then `bytes` as unsealed segment 1. */
async function dirWithSegment(
  bytes: Uint8Array,
): Promise<{ fs: PowerCutFileSystem; opts: WalOptions; epoch: string }> {
  const fs = new PowerCutFileSystem({ jitterTicksMax: 0 });
  const opts = walOptions(fs);
  const wal = await openWal(opts);
  const epoch = wal.epoch;
  await wal.close();
  await putFile(fs, path.join(DIR, '00000000000000000001.wal'), bytes);
  return { fs, opts: { ...opts, log: memoryLogger() }, epoch };
}

function flip(b: Uint8Array, at: number): Buffer {
  const out = Buffer.from(b);
  out[at] = out[at]! ^ 0x40;
  return out;
}

function setU32(b: Uint8Array, at: number, v: number): Buffer {
  const out = Buffer.from(b);
  out.writeUInt32LE(v, at);
  return out;
}

type Outcome =
  | { kind: 'sealed'; records: number; bytes: number; truncated: boolean; tail?: string }
  | { kind: 'quarantined' }
  | { kind: 'removed' };

const groups = [[['a1', 'a2'], ['b1']], [['c1', 'c2', 'c3']], [['d1'], ['e1', 'e2']]];
const seg: BuiltSegment = buildSegment(groups);
const n = seg.bytes.length;

// Group 2 re-encoded with seqs from 100: CRCs valid, sequence broken.
const seqBroken = (() => {
  const a = buildSegment(groups.slice(0, 1));
  const b = buildSegment(groups.slice(1), { firstSeq: 100 });
  return Buffer.concat([a.bytes, b.bytes.subarray(b.headerBytes)]);
})();

const table: { name: string; bytes: Uint8Array; expect: Outcome }[] = [
  {
    name: 'clean segment',
    bytes: seg.bytes,
    expect: { kind: 'sealed', records: 9, bytes: n, truncated: false },
  },
  {
    name: 'torn payload (last frame cut short)',
    bytes: seg.bytes.subarray(0, n - 1),
    expect: { kind: 'sealed', records: 7, bytes: seg.appendEnds[3]!, truncated: true },
  },
  {
    name: 'torn frame header',
    bytes: seg.bytes.subarray(0, seg.frames[8]! + 5),
    expect: { kind: 'sealed', records: 7, bytes: seg.appendEnds[3]!, truncated: true },
  },
  {
    name: 'partial batch at tail',
    bytes: seg.bytes.subarray(0, seg.frames[8]),
    expect: { kind: 'sealed', records: 7, bytes: seg.appendEnds[3]!, truncated: true },
  },
  {
    name: 'zero-filled tail',
    bytes: Buffer.concat([seg.bytes, Buffer.alloc(8192)]),
    expect: { kind: 'sealed', records: 9, bytes: n, truncated: true },
  },
  {
    name: 'bad CRC in the last group (a torn, unacknowledged write)',
    bytes: flip(seg.bytes, seg.frames[6]! + 27),
    expect: { kind: 'sealed', records: 6, bytes: seg.appendEnds[2]!, truncated: true },
  },
  // In the open segment a later group start no longer proves the bad frame
  // was synced: the pipelined writer writes group N+1 while N's fdatasync
  // runs, so the disk may keep N+1 and lose part of N (both unacknowledged).
  {
    name: 'bad CRC mid-file, later group follows (torn unsynced groups in the open segment)',
    bytes: flip(seg.bytes, seg.frames[3]! + 27),
    expect: { kind: 'sealed', records: 3, bytes: seg.appendEnds[1]!, truncated: true, tail: 'torn-groups' },
  },
  {
    name: 'corrupt length field mid-file (open segment)',
    bytes: setU32(seg.bytes, seg.frames[4]!, 0xffffffff),
    expect: { kind: 'sealed', records: 3, bytes: seg.appendEnds[1]!, truncated: true, tail: 'torn-groups' },
  },
  {
    name: 'zeroed page mid-file, later group follows (open segment)',
    bytes: (() => {
      const out = Buffer.from(seg.bytes);
      out.fill(0, seg.frames[3], seg.frames[5]);
      return out;
    })(),
    expect: { kind: 'sealed', records: 3, bytes: seg.appendEnds[1]!, truncated: true, tail: 'torn-groups' },
  },
  // But only within the pipeline's reach (wal.pipelineDepth, 2 here): with
  // two valid groups after it, the bad frame is in a synced, acknowledged
  // group — damage, quarantined whole, never cut as a torn tail.
  {
    name: 'bad CRC in the first group, two later groups follow (synced data: quarantined)',
    bytes: flip(seg.bytes, seg.frames[0]! + 27),
    expect: { kind: 'quarantined' },
  },
  {
    name: 'corrupt length field in the last frame',
    bytes: setU32(seg.bytes, seg.frames[8]!, 1),
    expect: { kind: 'sealed', records: 7, bytes: seg.appendEnds[3]!, truncated: true },
  },
  {
    name: 'seq out of order mid-file (open segment)',
    bytes: seqBroken,
    expect: {
      kind: 'sealed',
      records: 3,
      bytes: buildSegment(groups.slice(0, 1)).bytes.length,
      truncated: true,
      tail: 'torn-groups',
    },
  },
  {
    name: 'truncated segment header (cut while being created)',
    bytes: seg.bytes.subarray(0, seg.headerBytes - 3),
    expect: { kind: 'removed' },
  },
  { name: 'empty file', bytes: new Uint8Array(0), expect: { kind: 'removed' } },
  {
    name: 'header only, no record',
    bytes: seg.bytes.subarray(0, seg.headerBytes),
    expect: { kind: 'removed' },
  },
  // The header is synced by the first group's fdatasync only: in the open
  // segment a lost header page with later pages kept is a torn tail.
  {
    name: 'bad header CRC with two groups after it (open segment, within the pipeline: removed, copy kept)',
    bytes: flip(buildSegment(groups.slice(0, 2)).bytes, 17),
    expect: { kind: 'removed' },
  },
  {
    name: 'bad header CRC with three groups after it (more than the pipeline holds: synced, quarantined)',
    bytes: flip(seg.bytes, 17),
    expect: { kind: 'quarantined' },
  },
  {
    name: 'first frame torn (nothing complete)',
    bytes: seg.bytes.subarray(0, seg.frames[1]),
    expect: { kind: 'removed' },
  },
];

for (const c of table) {
  void test(`recovery: ${c.name}`, async () => {
    const { fs, opts } = await dirWithSegment(c.bytes);
    const wal = await openWal(opts);
    const r = wal.recovery;
    const names = await fs.readdir(DIR);
    switch (c.expect.kind) {
      case 'sealed': {
        assert.equal(r.recoveredSegments, 1);
        const [s] = wal.sealedSegments();
        assert.ok(s);
        assert.equal(s.records, c.expect.records);
        assert.equal(s.bytes, c.expect.bytes);
        assert.equal(s.sealReason, 'recovery');
        assert.equal((await fs.stat(path.join(DIR, s.fileName))).size, c.expect.bytes);
        assert.equal(r.truncations.length, c.expect.truncated ? 1 : 0);
        assert.equal(wal.stats().recoveryTruncationsTotal, c.expect.truncated ? 1 : 0);
        // The cut groups' seqs are handed out again, as for any torn tail (within
        // the pipeline's reach nothing of them was acknowledged).
        assert.equal(wal.stats().nextSeq, BigInt(c.expect.records + 1));
        if (c.expect.tail !== undefined) {
          const [t] = r.truncations;
          assert.equal(t?.tail, c.expect.tail);
          assert.equal(r.quarantined.length, 0);
          // Never cut without a copy: the cut groups are in quarantine/, byte for byte.
          assert.ok(t.copiedTo !== undefined, 'the cut tail was copied');
          assert.deepEqual(
            Buffer.from(fs.durableContents(t.copiedTo) ?? []),
            Buffer.from(c.bytes.subarray(c.expect.bytes)),
          );
        }
        break;
      }
      case 'quarantined': {
        assert.equal(r.quarantined.length, 1);
        assert.equal(wal.stats().quarantinedTotal, 1);
        assert.ok(!names.includes('00000000000000000001.wal'));
        // Kept byte for byte, never deleted.
        const kept = await fs.readFile(path.join(DIR, 'quarantine', '00000000000000000001.wal'));
        assert.deepEqual(Buffer.from(kept), Buffer.from(c.bytes));
        assert.equal(wal.sealedSegments().length, 0);
        const state = WalState.parse(await fs.readFile(path.join(DIR, STATE_FILE)));
        assert.equal(state.quarantined[0]?.fileName, '00000000000000000001.wal');
        const errors = (opts.log as ReturnType<typeof memoryLogger>).entries.filter(
          (e) => e.level === 'error',
        );
        assert.ok(errors.some((e) => e.msg === 'WAL file quarantined'));
        // Seqs in the quarantined file are never reused.
        assert.ok(wal.stats().nextSeq > BigInt(seg.lastSeq) || c.name.includes('seq'));
        break;
      }
      case 'removed':
        assert.deepEqual(r.removedEmpty, ['00000000000000000001.wal']);
        if (c.name.includes('copy kept')) {
          assert.equal(r.quarantined.length, 0);
          const t = r.truncations[0];
          assert.equal(t?.tail, 'torn-groups');
          assert.ok(t.copiedTo !== undefined);
          assert.deepEqual(Buffer.from(fs.durableContents(t.copiedTo) ?? []), Buffer.from(c.bytes));
        }
        assert.ok(!names.includes('00000000000000000001.wal'));
        assert.equal(wal.sealedSegments().length, 0);
        break;
    }
    // New writes go to a fresh segment with a fresh id, and seqs continue.
    const before = wal.stats().nextSeq;
    const res = await wal.append([enc('new')], RecordFormat.ndjson);
    assert.equal(res.firstSeq, before);
    assert.equal(wal.stats().openSegmentId, 2n);
    await wal.close();
    const all = await readWalDir(fs, DIR);
    assert.equal(dec(all.at(-1)!.payload), 'new');
    for (let i = 1; i < all.length; i++) assert.equal(all[i]!.seq, all[i - 1]!.seq + 1n);
  });
}

// The same damage in a segment that was not the open one at the crash (a
// later segment file exists, so the writer had drained and sealed it: every
// group in it was synced) is damage to synced data: quarantined as before.
const sealedEarlier: { name: string; bytes: Uint8Array }[] = [
  { name: 'bad CRC mid-file', bytes: flip(seg.bytes, seg.frames[3]! + 27) },
  { name: 'corrupt length field mid-file', bytes: setU32(seg.bytes, seg.frames[4]!, 0xffffffff) },
  { name: 'seq out of order mid-file', bytes: seqBroken },
  { name: 'bad header CRC with data after it', bytes: flip(seg.bytes, 17) },
];
for (const c of sealedEarlier) {
  void test(`recovery: ${c.name} in a segment sealed before the crash (a later segment exists): quarantined`, async () => {
    const { fs, opts } = await dirWithSegment(c.bytes);
    // Segment 2 was created (header only) when the crash came; its seal's state write for 1 never landed.
    const next = buildSegment([], { id: 2n });
    await putFile(fs, path.join(DIR, '00000000000000000002.wal'), next.bytes);
    const wal = await openWal(opts);
    const r = wal.recovery;
    assert.deepEqual(
      r.quarantined.map((q) => q.fileName),
      ['00000000000000000001.wal'],
    );
    assert.deepEqual(r.truncations, []);
    assert.deepEqual(r.removedEmpty, ['00000000000000000002.wal']);
    const kept = await fs.readFile(path.join(DIR, 'quarantine', '00000000000000000001.wal'));
    assert.deepEqual(Buffer.from(kept), Buffer.from(c.bytes));
    assert.equal(wal.sealedSegments().length, 0);
    if (!c.name.includes('seq')) assert.ok(wal.stats().nextSeq > BigInt(seg.lastSeq));
    await wal.close();
  });
}

void test('recovery: a sealed segment shorter than the state says is quarantined', async () => {
  const fs = new PowerCutFileSystem({ jitterTicksMax: 0 });
  const opts = walOptions(fs);
  let wal = await openWal(opts);
  await wal.append([enc('one'), enc('two')], RecordFormat.ndjson);
  const sealed = await wal.seal();
  await wal.close();
  const file = path.join(DIR, sealed!.fileName);
  const bytes = await fs.readFile(file);
  await putFile(fs, file, bytes.subarray(0, bytes.length - 3));
  wal = await openWal(opts);
  assert.equal(wal.recovery.quarantined.length, 1);
  assert.equal(wal.sealedSegments().length, 0);
  assert.equal(wal.stats().nextSeq, 3n, 'seqs of the quarantined segment are not reused');
  await wal.close();
});

void test('recovery: bytes past a sealed length (a failed write that could not be truncated) are cut off', async () => {
  const fs = new PowerCutFileSystem({ jitterTicksMax: 0 });
  const opts = walOptions(fs);
  let wal = await openWal(opts);
  await wal.append([enc('one')], RecordFormat.ndjson);
  const sealed = (await wal.seal())!;
  await wal.close();
  const file = path.join(DIR, sealed.fileName);
  const extra = buildSegment([[['ghost']]], { firstSeq: 2 });
  const bytes = await fs.readFile(file);
  await putFile(fs, file, Buffer.concat([bytes, extra.bytes.subarray(extra.headerBytes)]));
  wal = await openWal(opts);
  assert.equal(wal.recovery.truncations[0]?.tail, 'abandoned');
  assert.equal((await fs.stat(file)).size, sealed.bytes);
  assert.deepEqual(
    (await readWalDir(fs, DIR)).map((r) => dec(r.payload)),
    ['one'],
  );
  await wal.close();
});

void test('a sealed segment a reader finds corrupt is quarantined on request, never deleted', async () => {
  const fs = new PowerCutFileSystem({ jitterTicksMax: 0 });
  const opts = walOptions(fs);
  let wal = await openWal(opts);
  await wal.append([enc('one'), enc('two')], RecordFormat.ndjson);
  await wal.append([enc('three')], RecordFormat.ndjson);
  const sealed = (await wal.seal())!;
  const file = wal.segmentPath(sealed.id);
  const bytes = Buffer.from(await fs.readFile(file));
  bytes[bytes.length - 2] = bytes[bytes.length - 2]! ^ 1;
  await putFile(fs, file, bytes);
  assert.throws(
    () => [...readSegment(bytes.subarray(0, sealed.bytes)).records],
    (e: unknown) => e instanceof SegmentCorruptError && e.reason === 'crc',
  );
  await wal.quarantineSegment(sealed.id, 'crc mismatch while delivering');
  assert.equal(wal.sealedSegments().length, 0);
  assert.equal(wal.stats().quarantinedTotal, 1);
  await wal.close();
  wal = await openWal(opts);
  assert.deepEqual(await fs.readdir(path.join(DIR, 'quarantine')), [sealed.fileName]);
  const state = WalState.parse(await fs.readFile(path.join(DIR, STATE_FILE)));
  assert.equal(state.quarantined[0]?.reason, 'crc mismatch while delivering');
  assert.equal(wal.stats().nextSeq, 4n);
  await wal.close();
});

void test('recovery: an unreadable state file starts a new epoch and rescans every segment', async () => {
  const fs = new PowerCutFileSystem({ jitterTicksMax: 0 });
  const opts = walOptions(fs, { segmentBytesMax: 200 });
  let wal = await openWal(opts);
  const epoch1 = wal.epoch;
  for (let i = 0; i < 10; i++) await wal.append([enc(`record-${i}`)], RecordFormat.ndjson);
  await wal.close();
  const segments = (await fs.readdir(DIR)).filter((f) => f.endsWith('.wal')).length;
  await putFile(fs, path.join(DIR, STATE_FILE), enc('{"version":1,"epo'));
  wal = await openWal(opts);
  assert.notEqual(wal.epoch, epoch1);
  assert.equal(wal.recovery.epochRotated, true);
  assert.equal(wal.recovery.recoveredSegments, segments);
  // Recovered segments keep the epoch they were written under (their S3 keys).
  assert.ok(wal.sealedSegments().every((s) => s.epoch === epoch1));
  assert.ok((await fs.readdir(path.join(DIR, 'quarantine'))).includes(STATE_FILE));
  const res = await wal.append([enc('after')], RecordFormat.ndjson);
  assert.equal(res.firstSeq, 11n);
  await wal.close();
  assert.equal((await readWalDir(fs, DIR)).length, 11);
});

void test('recovery: state entries whose files are gone', async () => {
  const fs = new PowerCutFileSystem({ jitterTicksMax: 0 });
  const opts = walOptions(fs);
  let wal = await openWal(opts);
  await wal.append([enc('a')], RecordFormat.ndjson);
  const s1 = (await wal.seal())!;
  await wal.append([enc('b')], RecordFormat.ndjson);
  const s2 = (await wal.seal())!;
  await wal.markDelivered(s1.id);
  await wal.close();
  await fs.unlink(path.join(DIR, s1.fileName)); // delivered: deleted, state update lost
  await fs.unlink(path.join(DIR, s2.fileName)); // sealed: lost work, must be reported
  wal = await openWal(opts);
  assert.deepEqual(wal.recovery.missing, [s2.fileName]);
  assert.equal(wal.sealedSegments().length, 0);
  assert.equal(wal.stats().nextSeq, 3n);
  const r = await wal.append([enc('c')], RecordFormat.ndjson);
  assert.equal(r.firstSeq, 3n);
  assert.equal(wal.stats().openSegmentId, 3n, 'segment ids are never reused');
  await wal.close();
});

// Issue 14: on a disk without atomic page writes, writing a new group
// rewrites the page that holds the end of the previous, acknowledged group;
// a torn page then damages acknowledged bytes, which recovery cannot tell from
// an unacknowledged torn tail. It used to cut them without a copy.
void test('recovery: a torn page at a group boundary is copied to quarantine/ before truncation', async () => {
  const PAGE = 64;
  // The page that straddles the start of the last group: its first half holds
  // the old (acknowledged) bytes garbled, its second half the new group.
  const boundary = seg.groupStarts[2]!;
  const pageStart = Math.floor(boundary / PAGE) * PAGE;
  const torn = Buffer.from(seg.bytes);
  for (let i = pageStart; i < Math.min(pageStart + PAGE, torn.length); i++)
    torn[i] = (torn[i]! * 31 + 7) & 0xff;
  const { fs, opts } = await dirWithSegment(torn);
  const wal = await openWal(opts);
  const [t] = wal.recovery.truncations;
  assert.ok(t, 'the torn tail was truncated');
  assert.ok(t.toBytes <= pageStart, `kept ${t.toBytes} bytes past the torn page at ${pageStart}`);
  const name = '00000000000000000001.wal';
  const copy = path.join(DIR, 'quarantine', `${name}.${t.toBytes}-${torn.length}.tail`);
  assert.equal(t.copiedTo, copy);
  // Byte for byte what was cut, and durable: it survives a power cut right after open.
  assert.deepEqual(Buffer.from(fs.durableContents(copy) ?? []), torn.subarray(t.toBytes));
  assert.equal((await fs.stat(path.join(DIR, name))).size, t.toBytes);
  const rebooted = fs.crash();
  assert.deepEqual(Buffer.from(await rebooted.readFile(copy)), torn.subarray(t.toBytes));
  await wal.close().catch(() => {});
});

void test('recovery: an all-zero tail is truncated without a copy (it holds nothing)', async () => {
  const { fs, opts } = await dirWithSegment(Buffer.concat([seg.bytes, Buffer.alloc(8192)]));
  const wal = await openWal(opts);
  assert.equal(wal.recovery.truncations.length, 1);
  assert.equal(wal.recovery.truncations[0]!.copiedTo, undefined);
  assert.ok(!(await fs.readdir(DIR)).includes('quarantine'));
  await wal.close();
});

void test('recovery: an abandoned tail past a sealed length is copied before it is cut', async () => {
  const fs = new PowerCutFileSystem({ jitterTicksMax: 0 });
  const opts = walOptions(fs);
  const wal = await openWal(opts);
  await wal.append([enc('kept')], RecordFormat.ndjson);
  const sealed = (await wal.seal())!;
  await wal.close();
  const file = path.join(DIR, sealed.fileName);
  const fh = await fs.open(file, 'readWrite');
  await fh.write([enc('failed group bytes')], sealed.bytes);
  await fh.datasync();
  await fh.close();
  const reopened = await openWal(opts);
  const [t] = reopened.recovery.truncations;
  assert.equal(t?.tail, 'abandoned');
  assert.ok(t.copiedTo !== undefined);
  assert.equal(dec(await fs.readFile(t.copiedTo)), 'failed group bytes');
  assert.equal((await fs.stat(file)).size, sealed.bytes);
  await reopened.close();
});

// A full volume: the copy cannot be written. Recovery must still truncate (that
// frees the space) and open, not crash-loop the node until someone frees space.
void test('recovery: no space for the tail copy: the tail is truncated anyway and the WAL opens', async () => {
  const torn = Buffer.concat([seg.bytes, Buffer.from('torn group that never completed')]);
  const { fs, opts } = await dirWithSegment(torn);
  const faulty = new FaultFileSystem(fs, [
    { op: ['open', 'write', 'mkdir'], path: /quarantine/, fault: 'ENOSPC' },
  ]);
  const log = memoryLogger();
  const wal = await openWal({ ...opts, fs: faulty, log });
  const [t] = wal.recovery.truncations;
  assert.ok(t, 'the tail was truncated');
  assert.equal(t.copiedTo, undefined);
  assert.equal((await fs.stat(path.join(DIR, '00000000000000000001.wal'))).size, seg.bytes.length);
  assert.ok(faulty.injected.length > 0, 'the copy met ENOSPC');
  assert.ok(
    log.entries.some((l) => l.level === 'error' && /no space to copy/.test(String(l.msg))),
    'the lost copy is logged as an error',
  );
  await wal.close();
});
