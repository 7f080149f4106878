// The state file's promise under power cuts: once updateProgress (or
// markDelivered) resolves, a cut at any later point keeps that change, since
// the rename that installed it was followed by an fsync of the directory.
// The same harness with that one directory fsync switched off must lose
// resolved changes, which is what proves it can catch a missing one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { PowerCutFileSystem, seededRandom } from '../src/fs/power-cut.ts';
import { FaultFileSystem } from '../src/fs/fault.ts';
import { openWal } from '../src/wal/wal.ts';
import { STATE_FILE, WalState } from '../src/wal/state.ts';
import { RecordFormat, type Wal } from '../src/wal/types.ts';
import { enc, walOptions } from './wal-helpers.ts';

const DIR = '/data/wal/orders';
const STATE_TMP = path.join(DIR, `${STATE_FILE}.tmp`);

type Variant = 'correct' | 'no-state-dir-fsync';

async function iteration(seed: number, variant: Variant): Promise<{ resolved: number; lost: string[] }> {
  const rnd = seededRandom(seed);
  const mem = new PowerCutFileSystem({ seed, jitterTicksMax: 2 });
  const fs = new FaultFileSystem(mem);
  if (variant === 'no-state-dir-fsync') {
    // Only the directory fsync right after the state file's rename.
    let afterStateRename = false;
    fs.inject({
      op: ['open', 'rename', 'unlink', 'mkdir'],
      times: Infinity,
      gate: (call) => void (afterStateRename = call.op === 'rename' && call.path === STATE_TMP),
    });
    fs.inject({ op: 'syncDir', path: (p) => p === DIR && afterStateRename, fault: 'drop', times: Infinity });
  }
  const opts = walOptions(fs);
  const wal: Wal = await openWal(opts);
  const ids: bigint[] = [];
  for (let i = 0; i < 3; i++) {
    await wal.append([enc(`r${i}`)], RecordFormat.ndjson);
    ids.push((await wal.seal())!.id);
  }
  const rebooted = mem.armCrash(mem.opCount + 1 + Math.floor(rnd() * 150));
  // id → the last value whose write resolved before the cut
  const resolved = new Map<bigint, number>();
  const writers = [0, 1].map(async (w) => {
    for (let k = 1; !mem.frozen && k < 400; k++) {
      const id = ids[Math.floor(rnd() * ids.length)]!;
      const v = k * 2 + w;
      try {
        if (k % 5 === 0) await wal.markDelivered(id, { [`w${w}`]: v });
        else await wal.updateProgress(id, { [`w${w}`]: v });
        if (!mem.frozen) resolved.set(id * 10n + BigInt(w), v);
      } catch {
        // The cut: the outcome of this write is unknown, as for a real caller.
      }
    }
  });
  await Promise.all(writers);
  if (!mem.frozen) mem.crash();
  const after = await rebooted;
  const state = WalState.parse(await after.readFile(path.join(DIR, STATE_FILE)));
  const lost: string[] = [];
  for (const [key, v] of resolved) {
    const id = key / 10n;
    const w = Number(key % 10n);
    const got = state.segments.get(id)?.progress[`w${w}`];
    // A later write may have landed without resolving: at least, never less.
    if (typeof got !== 'number' || got < v)
      lost.push(`segment ${id} w${w}: resolved ${v}, found ${JSON.stringify(got)}`);
  }
  // The reopened WAL takes the state as it is.
  const reopened = await openWal({ ...opts, fs: after });
  await reopened.close();
  return { resolved: resolved.size, lost };
}

void test('power cut at random points: every resolved state change survives', async () => {
  let resolved = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const o = await iteration(seed, 'correct');
    assert.deepEqual(o.lost, [], `seed ${seed}`);
    resolved += o.resolved;
  }
  assert.ok(resolved > 40, `only ${resolved} resolved changes in 40 runs`);
});

void test('the state power-cut test has teeth: without the dir fsync after the rename, resolved changes are lost', async () => {
  let runsWithLoss = 0;
  let runsWithChanges = 0;
  for (let seed = 1; seed <= 30; seed++) {
    const o = await iteration(500 + seed, 'no-state-dir-fsync');
    if (o.resolved > 0) runsWithChanges++;
    if (o.lost.length > 0) runsWithLoss++;
  }
  assert.ok(runsWithChanges >= 15, `only ${runsWithChanges} runs resolved a change`);
  assert.ok(runsWithLoss >= runsWithChanges / 2, `only ${runsWithLoss} of ${runsWithChanges} runs lost one`);
});
