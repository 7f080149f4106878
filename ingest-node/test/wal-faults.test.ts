// Injected EIO / ENOSPC / short writes: the affected appends fail, nothing of
// them is visible after reopen, and the WAL keeps accepting writes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { PowerCutFileSystem } from '../src/fs/power-cut.ts';
import { FaultFileSystem, type Fault } from '../src/fs/fault.ts';
import { NodeFileSystem } from '../src/fs/node.ts';
import type { FsOp } from '../src/fs/types.ts';
import { openWal } from '../src/wal/wal.ts';
import { isWalError } from '../src/wal/errors.ts';
import { RecordFormat, WalErrorCode, type Wal } from '../src/wal/types.ts';
import { dec, enc, readWalDir, tick, walOptions } from './wal-helpers.ts';

const SEGMENT = /\.wal$/;

/** Appends ok-1, fails one group with the given fault, appends ok-2; checks what a reopen sees. */
async function failOneGroup(
  fs: FaultFileSystem,
  dir: string,
  op: FsOp,
  fault: Fault,
  expectCode: string,
): Promise<Wal> {
  const opts = walOptions(fs, { dir });
  const wal = await openWal(opts);
  const ok1 = await wal.append([enc('ok-1')], RecordFormat.ndjson);
  // Until both appends failed: whether they share a group depends on the
  // pipeline (the second may be written while the first one's sync runs).
  fs.inject({ op, path: SEGMENT, fault, times: Infinity });
  const failed = await Promise.allSettled([
    wal.append([enc('bad-1a'), enc('bad-1b')], RecordFormat.ndjson),
    wal.append([enc('bad-2')], RecordFormat.ndjson),
  ]);
  fs.clear();
  for (const f of failed) {
    assert.equal(f.status, 'rejected');
    assert.ok(isWalError(f.reason, WalErrorCode.writeFailed), String(f.reason));
    assert.equal(f.reason.fsCode, expectCode);
    assert.ok(f.reason.retryable);
  }
  const failures = wal.stats().writeFailuresTotal;
  assert.ok(failures === 1 || failures === 2, `${failures} write failures`);
  assert.equal(wal.stats().failed, false);
  // The failed group's seqs are reused: acknowledged seqs stay gap-free.
  const ok2 = await wal.append([enc('ok-2')], RecordFormat.ndjson);
  assert.equal(ok2.firstSeq, ok1.lastSeq + 1n);
  await wal.close();
  const reopened = await openWal(opts);
  assert.deepEqual(
    (await readWalDir(fs, opts.dir)).map((r) => `${r.seq}:${dec(r.payload)}`),
    ['1:ok-1', '2:ok-2'],
  );
  return reopened;
}

const faults: { op: FsOp; fault: Fault; code: string }[] = [
  { op: 'write', fault: 'EIO', code: 'EIO' },
  { op: 'write', fault: 'ENOSPC', code: 'ENOSPC' },
  { op: 'write', fault: 'short', code: 'EIO' },
  { op: 'datasync', fault: 'EIO', code: 'EIO' },
  { op: 'datasync', fault: 'ENOSPC', code: 'ENOSPC' },
];

for (const f of faults) {
  void test(`${f.op} ${typeof f.fault === 'string' ? f.fault : f.fault.code}: the group fails, the WAL goes on (in-memory)`, async () => {
    const fs = new FaultFileSystem(new PowerCutFileSystem({ seed: 5 }));
    const wal = await failOneGroup(fs, '/data/wal/orders', f.op, f.fault, f.code);
    assert.equal(wal.recovery.truncations.length, 0, 'the failed group was already truncated away');
    await wal.close();
  });
}

void test('short write and failed datasync on the real filesystem', async (t) => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'landfall-wal-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  for (const f of faults.filter((x) => x.fault === 'short' || x.op === 'datasync')) {
    const fs = new FaultFileSystem(new NodeFileSystem());
    const wal = await failOneGroup(
      fs,
      path.join(root, `${f.op}-${f.code}-${f.fault === 'short' ? 'short' : 'err'}`),
      f.op,
      f.fault,
      f.code,
    );
    await wal.close();
  }
});

void test('a datasync that flushed yet reported EIO: the failed group stays invisible across a power cut', async () => {
  const mem = new PowerCutFileSystem({ seed: 10 });
  const fs = new FaultFileSystem(mem);
  const opts = walOptions(fs);
  const wal = await openWal(opts);
  await wal.append([enc('ok-1')], RecordFormat.ndjson);
  fs.inject({ op: 'datasync', path: SEGMENT, fault: { code: 'EIO', applied: true } });
  await assert.rejects(wal.append([enc('bad')], RecordFormat.ndjson), (e: unknown) =>
    isWalError(e, WalErrorCode.writeFailed),
  );
  // The bad group did reach the disk; only the durable truncate hides it.
  const after = mem.crash({ tornTail: true });
  const wal2 = await openWal({ ...opts, fs: after });
  assert.deepEqual(
    (await readWalDir(after, opts.dir)).map((r) => dec(r.payload)),
    ['ok-1'],
  );
  await wal2.close();
});

void test('truncate fails too: the segment is sealed at the group start and a new one takes the writes', async () => {
  const mem = new PowerCutFileSystem({ seed: 11 });
  const fs = new FaultFileSystem(mem);
  const opts = walOptions(fs);
  const wal = await openWal(opts);
  await wal.append([enc('ok-1')], RecordFormat.ndjson);
  const sealedEvents: bigint[] = [];
  wal.onSealed((s) => sealedEvents.push(s.id));
  fs.inject({ op: 'datasync', path: SEGMENT, fault: 'EIO' });
  fs.inject({ op: 'truncate', path: SEGMENT, fault: 'EIO' });
  await assert.rejects(wal.append([enc('bad')], RecordFormat.ndjson), (e: unknown) =>
    isWalError(e, WalErrorCode.writeFailed),
  );
  const [abandoned] = wal.sealedSegments();
  assert.equal(abandoned?.sealReason, 'write-failure');
  assert.equal(abandoned.records, 1);
  // The file still holds the failed group's bytes; the sealed length excludes them.
  assert.ok((await mem.stat(wal.segmentPath(abandoned.id))).size > abandoned.bytes);
  assert.deepEqual(sealedEvents, [abandoned.id]);
  const ok2 = await wal.append([enc('ok-2')], RecordFormat.ndjson);
  assert.equal(ok2.firstSeq, 2n);
  assert.equal(wal.stats().openSegmentId, 2n);
  // Crash now (no clean close): recovery must still hide "bad".
  const after = mem.crash();
  const wal2 = await openWal({ ...opts, fs: after });
  assert.deepEqual(
    (await readWalDir(after, opts.dir)).map((r) => dec(r.payload)),
    ['ok-1', 'ok-2'],
  );
  await wal2.close();
});

void test('truncate and the state write both fail: WAL_FAILED until restart, nothing acknowledged is lost', async () => {
  const mem = new PowerCutFileSystem({ seed: 12 });
  const fs = new FaultFileSystem(mem);
  const opts = walOptions(fs);
  const wal = await openWal(opts);
  await wal.append([enc('ok-1')], RecordFormat.ndjson);
  fs.inject({ op: 'write', path: SEGMENT, fault: 'short' });
  fs.inject({ op: 'truncate', path: SEGMENT, fault: 'EIO' });
  fs.inject({ op: 'open', path: /state\.json\.tmp$/, fault: 'EIO', times: Infinity });
  await assert.rejects(wal.append([enc('bad')], RecordFormat.ndjson), (e: unknown) =>
    isWalError(e, WalErrorCode.failed),
  );
  assert.equal(wal.stats().failed, true);
  await assert.rejects(wal.append([enc('later')], RecordFormat.ndjson), (e: unknown) =>
    isWalError(e, WalErrorCode.failed),
  );
  await wal.close();
  fs.clear();
  const wal2 = await openWal(opts);
  assert.deepEqual(
    (await readWalDir(fs, opts.dir)).map((r) => dec(r.payload)),
    ['ok-1'],
  );
  assert.equal((await wal2.append([enc('ok-2')], RecordFormat.ndjson)).firstSeq, 2n);
  await wal2.close();
});

void test('segment creation failures (open, header write, dir fsync) fail the group; the next one succeeds', async () => {
  for (const op of ['open', 'write', 'syncDir'] as const) {
    const fs = new FaultFileSystem(new PowerCutFileSystem({ seed: 13 }));
    const opts = walOptions(fs);
    const wal = await openWal(opts);
    fs.inject({ op, path: op === 'syncDir' ? opts.dir : SEGMENT, fault: 'ENOSPC' });
    await assert.rejects(wal.append([enc('bad')], RecordFormat.ndjson), (e: unknown) =>
      isWalError(e, WalErrorCode.writeFailed),
    );
    assert.equal((await wal.append([enc('ok')], RecordFormat.ndjson)).firstSeq, 1n, op);
    await wal.close();
    const wal2 = await openWal(opts);
    assert.deepEqual(
      (await readWalDir(fs, opts.dir)).map((r) => dec(r.payload)),
      ['ok'],
      op,
    );
    await wal2.close();
  }
});

void test('a failing state write is retried and the seal is announced once it lands', async () => {
  const fs = new FaultFileSystem(new PowerCutFileSystem({ seed: 14 }));
  const opts = walOptions(fs);
  const wal = await openWal(opts);
  await wal.append([enc('a')], RecordFormat.ndjson);
  const announced: bigint[] = [];
  wal.onSealed((s) => announced.push(s.id));
  fs.inject({ op: 'rename', path: /state\.json\.tmp$/, fault: 'EIO', times: 2 });
  const sealing = wal.seal();
  // The retry waits on the injected timers: drive them.
  const timers = opts.timers as unknown as { runDue(): number };
  const clock = opts.clock as unknown as { advance(ms: number): void };
  while (announced.length === 0) {
    clock.advance(1000);
    timers.runDue();
    await new Promise((r) => setImmediate(r));
  }
  const sealed = await sealing;
  assert.deepEqual(announced, [sealed!.id]);
  assert.equal(wal.stats().stateWriteFailuresTotal, 2);
  await wal.close();
});

// Issue 14: ENOSPC for ~13 s made a seal's state write fail 8 times; the WAL
// then gave up, the seal was never announced until a restart, and every later
// segment's marker waited behind it, with nothing in readiness or stats.
void test('a seal whose state write fails 8 times (ENOSPC ~13 s) is still announced, and readiness shows it meanwhile', async () => {
  const fs = new FaultFileSystem(new PowerCutFileSystem({ seed: 15 }));
  const opts = walOptions(fs);
  const wal = await openWal(opts);
  const timers = opts.timers as unknown as { runDue(): number };
  const clock = opts.clock as unknown as { advance(ms: number): void };
  await wal.append([enc('a')], RecordFormat.ndjson);
  const announced: bigint[] = [];
  wal.onSealed((s) => announced.push(s.id));
  const stopFailing = fs.inject({
    op: 'rename',
    path: /state\.json\.tmp$/,
    fault: 'ENOSPC',
    times: Infinity,
  });
  const sealing = wal.seal();
  // ~13 s of a full volume: at least 8 failed attempts (100 ms, doubling).
  for (let ms = 0; ms < 13_500; ms += 100) {
    clock.advance(100);
    timers.runDue();
    for (let i = 0; i < 20; i++) await tick();
  }
  assert.ok(wal.stats().stateWriteFailuresTotal >= 8, `${wal.stats().stateWriteFailuresTotal} failures`);
  assert.deepEqual(announced, []);
  const during = wal.stats();
  assert.equal(during.unannouncedSegments, 1);
  assert.equal(during.sealsUnrecorded, true);
  assert.match(during.stateLastError?.message ?? '', /ENOSPC/);
  // The volume has room again: the seal's own retry (capped backoff) records and announces it.
  stopFailing();
  for (let ms = 0; ms < 60_000 && announced.length === 0; ms += 1000) {
    clock.advance(1000);
    timers.runDue();
    for (let i = 0; i < 20; i++) await tick();
  }
  const sealed = await sealing;
  assert.deepEqual(announced, [sealed!.id]);
  const after = wal.stats();
  assert.equal(after.unannouncedSegments, 0);
  assert.equal(after.sealsUnrecorded, false);
  assert.equal(after.stateLastError, null);
  await wal.close();
});

void test('any later state write announces a seal still waiting for its own retry, once', async () => {
  const fs = new FaultFileSystem(new PowerCutFileSystem({ seed: 16 }));
  const opts = walOptions(fs);
  const wal = await openWal(opts);
  const timers = opts.timers as unknown as { runDue(): number; pending: Map<number, unknown> };
  const clock = opts.clock as unknown as { advance(ms: number): void };
  await wal.append([enc('a')], RecordFormat.ndjson);
  const announced: bigint[] = [];
  wal.onSealed((s) => announced.push(s.id));
  fs.inject({ op: 'rename', path: /state\.json\.tmp$/, fault: 'ENOSPC', times: 8 });
  const first = wal.seal();
  // Burn the 8 failures (the last at 11.3 s); the next retry (16.3 s) is not yet due.
  for (let ms = 0; ms < 12_800; ms += 100) {
    clock.advance(100);
    timers.runDue();
    for (let i = 0; i < 20; i++) await tick();
  }
  assert.equal(wal.stats().stateWriteFailuresTotal, 8);
  assert.deepEqual(announced, []);
  // The next seal's state write lands and carries the first seal's entry too.
  await wal.append([enc('b')], RecordFormat.ndjson);
  const second = await wal.seal();
  assert.deepEqual(announced, [1n, second!.id]);
  // The first seal's pending retry finds it announced and stops: no second announcement.
  for (let i = 0; i < 5; i++) {
    clock.advance(30_000);
    timers.runDue();
    for (let j = 0; j < 20; j++) await tick();
  }
  assert.equal((await first)!.id, 1n);
  assert.deepEqual(announced, [1n, second!.id]);
  await wal.close();
});

void test('a failed WAL still settles seal() and close(): shutdown never hangs on a dead disk', async () => {
  const fs = new FaultFileSystem(new PowerCutFileSystem({ seed: 12 }));
  const wal = await openWal(walOptions(fs));
  await wal.append([enc('ok-1')], RecordFormat.ndjson);
  // A short write whose undo (truncate) fails, with the state file unwritable: WAL_FAILED.
  fs.inject({ op: 'write', path: SEGMENT, fault: 'short' });
  fs.inject({ op: 'truncate', path: SEGMENT, fault: 'EIO' });
  fs.inject({ op: 'open', path: /state\.json\.tmp$/, fault: 'EIO', times: Infinity });
  await assert.rejects(wal.append([enc('bad')], RecordFormat.ndjson));
  assert.equal(wal.stats().failed, true);
  // Bounded waits only to turn a hang into a failure message; settling at all is the point.
  const settles = async (p: Promise<unknown>, what: string): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      p.then(
        () => 'settled',
        () => 'settled',
      ),
      new Promise<string>((r) => {
        timer = setTimeout(() => r('hung'), 5_000);
      }),
    ]);
    clearTimeout(timer);
    assert.equal(outcome, 'settled', `${what} on a failed WAL`);
  };
  await settles(wal.seal('drain'), 'seal()');
  await settles(wal.close(), 'close()');
});
