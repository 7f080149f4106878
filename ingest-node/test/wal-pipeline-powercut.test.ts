// The pipelined group commit's own power cut: the power goes after group
// N+1's write completed and before group N's fdatasync returned, the one
// moment only the pipeline creates (two groups written, none of them synced).
// The disk then keeps any part of the unsynced bytes, page by page in any
// order (N+1's pages without N's, sometimes), or a prefix of them. After
// reboot every acknowledged record is there at its seq, recovery quarantines
// nothing, and the sequence goes on. A writer that acknowledged a group
// before the earlier group's sync completed loses acknowledged records here
// (checked by hand when this was written: see the report of issue 15).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PowerCutFileSystem, seededRandom } from '../src/fs/power-cut.ts';
import type { FileHandle, FileSystem } from '../src/fs/types.ts';
import { openWal } from '../src/wal/wal.ts';
import { RecordFormat, type Wal } from '../src/wal/types.ts';
import { TestDeliverer, checkRecovered, enc, readWalDir, tick, walOptions } from './wal-helpers.ts';

const DIR = '/data/wal/orders';
const SEGMENT = /\.wal$/;

interface Hooks {
  /** Before a segment's datasync reaches the disk; may hold it. */
  beforeDatasync(): Promise<void>;
  /** After a segment write completed, before the WAL sees it. */
  afterWrite(n: number): void;
}

/** `inner` with hooks around segment writes and datasyncs. */
function observed(inner: FileSystem, hooks: Hooks): FileSystem {
  const wrap = (h: FileHandle): FileHandle => ({
    path: h.path,
    write: async (buffers, position) => {
      const n = await h.write(buffers, position);
      if (SEGMENT.test(h.path)) hooks.afterWrite(n);
      return n;
    },
    read: (buffer, offset, length, position) => h.read(buffer, offset, length, position),
    datasync: async () => {
      if (SEGMENT.test(h.path)) await hooks.beforeDatasync();
      await h.datasync();
    },
    sync: () => h.sync(),
    truncate: (length) => h.truncate(length),
    stat: () => h.stat(),
    close: () => h.close(),
  });
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === 'open')
        return async (p: string, m: Parameters<FileSystem['open']>[1]) => wrap(await target.open(p, m));
      const v: unknown = Reflect.get(target, prop);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

interface Outcome {
  /** The cut came after a later group's write completed while the held sync was in flight. */
  readonly exercised: boolean;
  readonly acked: number;
  readonly ackedLost: number;
  readonly seqErrors: readonly string[];
  readonly quarantined: number;
  readonly tornGroups: number;
  readonly staleReturned: number;
  readonly recycled: number;
}

async function iteration(seed: number): Promise<Outcome> {
  const rnd = seededRandom(seed);
  const mem = new PowerCutFileSystem({ seed, jitterTicksMax: 2 });
  const scattered = rnd() < 0.6;
  // Most runs deliver and delete sealed segments at once (smaller segments,
  // a later cut): later segments are written over their files, and the cut
  // tears groups over an older segment's stale frames.
  const delivering = rnd() < 0.75;
  const crashOptions = {
    tornTail: true,
    ...(scattered ? { scatteredPageBytes: 64 + Math.floor(rnd() * 448) } : {}),
  };
  // Hold the k-th segment datasync; cut once a later write completes meanwhile.
  const holdAt = delivering ? 10 + Math.floor(rnd() * 60) : 2 + Math.floor(rnd() * 25);
  let syncs = 0;
  let holding = false;
  let exercised = false;
  let release: (() => void) | undefined;
  let rebooted: PowerCutFileSystem | undefined;
  const cut = (): void => {
    if (rebooted !== undefined) return;
    rebooted = mem.crash(crashOptions);
    release?.();
  };
  const fs = observed(mem, {
    beforeDatasync: () => {
      if (++syncs !== holdAt) return Promise.resolve();
      holding = true;
      return new Promise<void>((r) => (release = r));
    },
    afterWrite: (n) => {
      if (holding && n > 0 && rebooted === undefined) {
        exercised = true;
        cut();
      }
    },
  });
  const opts = walOptions(fs, {
    segmentBytesMax: delivering ? 1500 + Math.floor(rnd() * 3000) : 4000 + Math.floor(rnd() * 8000),
    groupBytesMax: 2048,
    pipelineDepth: 2,
  });
  const acked = new Map<string, bigint>();
  const wal: Wal = await openWal(opts);
  assert.equal(wal.stats().pipelineDepth, 2);
  const deliverer = delivering ? new TestDeliverer(wal, fs, DIR, () => mem.frozen) : undefined;
  let counter = 0;
  const producer = async (k: number): Promise<void> => {
    while (!mem.frozen && counter < 5000) {
      const n = 1 + Math.floor(rnd() * 3);
      const payloads = Array.from(
        { length: n },
        (_, j) => `p${k}-${counter}-${j}${'x'.repeat(Math.floor(rnd() * 60))}`,
      );
      counter++;
      try {
        const r = await wal.append(payloads.map(enc), RecordFormat.ndjson);
        payloads.forEach((p, j) => acked.set(p, r.firstSeq + BigInt(j)));
      } catch (err) {
        if (!mem.frozen) throw err; // no faults here: before the cut nothing may fail
      }
    }
  };
  // A held sync with no later write (the segment is full and must drain
  // first) is cut after a while anyway; such a run does not count.
  const watchdog = (async () => {
    for (let i = 0; rebooted === undefined; i++) {
      if (holding && i > 2000) cut();
      await tick();
    }
  })();
  await Promise.all([0, 1, 2, 3].map(producer));
  if (rebooted === undefined) cut();
  await watchdog;
  const recycled = wal.stats().recycledSegmentsTotal;
  await deliverer?.stop();
  const after = rebooted!;

  const reopened = await openWal({ ...opts, fs: after });
  const records = await readWalDir(after, DIR);
  const { ackedLost, seqErrors, staleReturned } = checkRecovered(records, acked, deliverer);
  if (deliverer !== undefined && deliverer.errors.length > 0)
    seqErrors.push(`delivery: ${String(deliverer.errors[0])}`);
  const next = await reopened.append([enc('after-reboot')], RecordFormat.ndjson);
  let last = records.at(-1)?.seq ?? 0n;
  for (const seq of deliverer?.read.values() ?? []) if (seq > last) last = seq;
  if (next.firstSeq !== last + 1n) seqErrors.push(`next seq ${next.firstSeq} after ${last}`);
  await reopened.close();
  return {
    exercised,
    acked: acked.size,
    ackedLost,
    seqErrors,
    quarantined: reopened.recovery.quarantined.length,
    tornGroups: reopened.recovery.truncations.filter((t) => t.tail === 'torn-groups').length,
    staleReturned,
    recycled,
  };
}

void test('power cut after group N+1 was written and before group N’s fdatasync returned: nothing acknowledged is lost', async (t) => {
  const ITERATIONS = 150;
  let exercised = 0;
  let acked = 0;
  let tornGroups = 0;
  let recycled = 0;
  for (let seed = 1; seed <= ITERATIONS; seed++) {
    const o = await iteration(seed);
    const where = `seed ${seed}`;
    assert.equal(o.ackedLost, 0, `${where}: ${o.ackedLost} of ${o.acked} acknowledged records lost`);
    assert.deepEqual(o.seqErrors, [], where);
    assert.equal(o.quarantined, 0, `${where}: torn unsynced groups were taken for corruption`);
    assert.equal(o.staleReturned, 0, `${where}: records of deleted segments came back`);
    recycled += o.recycled;
    if (o.exercised) exercised++;
    acked += o.acked;
    tornGroups += o.tornGroups;
  }
  t.diagnostic(
    `${exercised} of ${ITERATIONS} cuts fell between a later group's write and the earlier sync's return; ` +
      `${acked} acknowledged records survived; ${tornGroups} recoveries cut torn groups (a bad frame before a valid later group); ${recycled} segments written over free files`,
  );
  // The case must actually happen, and recovery must meet the pipeline's own tear.
  assert.ok(
    exercised >= ITERATIONS * 0.8,
    `only ${exercised} of ${ITERATIONS} runs cut at the pipelined moment`,
  );
  assert.ok(acked > ITERATIONS * 10, `only ${acked} acknowledged records`);
  assert.ok(tornGroups > 0, 'no run left a later group on disk behind a torn earlier one');
  assert.ok(recycled > ITERATIONS, `only ${recycled} segments written over free files`);
});
