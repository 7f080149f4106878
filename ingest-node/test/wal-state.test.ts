// state.json is assembled from cached, per-block encodings of the segment
// entries (issue 14: a step must not re-serialise the whole backlog). A stale
// cache would write an old entry back, so: after every kind of change, in any
// order, the written document must parse to exactly the state in memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { seededRandom } from '../src/fs/power-cut.ts';
import { WalState } from '../src/wal/state.ts';
import type { SealedSegment } from '../src/wal/types.ts';

const EPOCH = '01JGFJJZ000000000000000000';

function segment(id: bigint, n: number): SealedSegment {
  return {
    id,
    epoch: EPOCH,
    fileName: `${id.toString().padStart(20, '0')}.wal`,
    bytes: 100 + n,
    records: 1 + n,
    firstSeq: id * 10n,
    lastSeq: id * 10n + 9n,
    firstIngestMicros: 1n,
    lastIngestMicros: 2n,
    sealedAtMs: 1_700_000_000_000 + n,
    sealReason: 'size',
    status: n % 3 === 0 ? 'delivered' : 'sealed',
    progress: { delivery: { step: n, note: `"quoted" ✓ ${n}` } },
  };
}

function view(state: WalState): unknown[] {
  return [...state.segments.values()].map((s) => ({ ...s }));
}

void test('state.json written from cached blocks always equals the state in memory', () => {
  const rnd = seededRandom(14);
  const state = new WalState(EPOCH);
  let nextId = 1n;
  let n = 0;
  for (let step = 0; step < 3000; step++) {
    const ids = [...state.segments.keys()];
    const r = rnd();
    n++;
    if (r < 0.35 || ids.length === 0) state.addSegment(segment(nextId++, n));
    else if (r < 0.7) {
      // updateProgress / markDelivered: the entry object is replaced.
      const id = ids[Math.floor(rnd() * ids.length)]!;
      const cur = state.segments.get(id)!;
      state.segments.set(id, {
        ...cur,
        status: rnd() < 0.3 ? 'delivered' : cur.status,
        progress: { delivery: { step: n } },
      });
    } else if (r < 0.95) state.segments.delete(ids[Math.floor(rnd() * ids.length)]!);
    else if (r < 0.97) {
      // Out of order (recovery of an older file): the map is re-sorted.
      const gap = [...Array(Number(nextId)).keys()]
        .map(BigInt)
        .filter((i) => i > 0n && !state.segments.has(i));
      if (gap.length > 0) state.addSegment(segment(gap[Math.floor(rnd() * gap.length)]!, n));
    } else state.discard.add(`${String(n).padStart(20, '0')}.wal`);
    if (step % 7 === 0 || step > 2990) {
      const bytes = state.serialize(1_700_000_000_000 + step);
      const parsed = WalState.parse(bytes);
      assert.deepEqual(view(parsed), view(state), `step ${step}`);
      assert.deepEqual(
        [...parsed.segments.keys()],
        [...state.segments.keys()].sort((a, b) => (a < b ? -1 : 1)),
      );
      assert.equal(parsed.segmentIdHighWater, state.segmentIdHighWater);
      assert.equal(parsed.seqHighWater, state.seqHighWater);
      assert.deepEqual([...parsed.discard], [...state.discard]);
      // The running sums WAL stats read equal a recount.
      const all = [...state.segments.values()];
      const sealed = all.filter((x) => x.status === 'sealed');
      assert.equal(
        state.segments.bytesTotal,
        all.reduce((n, x) => n + x.bytes, 0),
      );
      assert.equal(state.segments.sealedCount, sealed.length);
      assert.equal(
        state.segments.sealedBytes,
        sealed.reduce((n, x) => n + x.bytes, 0),
      );
      assert.deepEqual(
        state.segments.delivered().map((x) => x.id),
        all
          .filter((x) => x.status === 'delivered')
          .map((x) => x.id)
          .sort((a, b) => (a < b ? -1 : 1)),
      );
    }
  }
  assert.ok(state.segments.size > 10);
});

void test('an empty state and a state whose every entry was deleted are valid documents', () => {
  const state = new WalState(EPOCH);
  assert.equal(WalState.parse(state.serialize(1)).segments.size, 0);
  state.addSegment(segment(5n, 1));
  state.addSegment(segment(300n, 2));
  state.serialize(2);
  state.segments.delete(5n);
  state.segments.delete(300n);
  assert.equal(WalState.parse(state.serialize(3)).segments.size, 0);
  assert.equal(WalState.parse(state.serialize(3)).segmentIdHighWater, 300n);
});
