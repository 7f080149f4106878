// "202 means durable", against a power cut: the one failure kill -9 cannot
// show, because a killed process leaves the page cache behind and a missing
// fsync goes unnoticed. The node runs in-process on a PowerCutFileSystem (an
// in-memory disk that knows what a completed datasync/syncDir made durable),
// with the real WAL and real HTTP from concurrent fetch producers. At a
// seeded random filesystem operation the power goes: in one synchronous step
// the disk freezes (that operation and every later or in-flight one fails)
// and every connection is dropped unanswered, so no answer can leave after
// the cut. A fresh node then starts on what the disk kept (sometimes with torn
// tails: a random part of the unsynced bytes, sometimes zero-filled), and
// every segment is read back with the WAL's reader and checked against what
// the producers were told (helpers/ledger.ts).
//
// Teeth: the same run through a filesystem whose datasync does nothing must
// lose acknowledged records, and the check must say so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PowerCutFileSystem, seededRandom } from '../../ingest-node/src/fs/power-cut.ts';
import { FaultFileSystem } from '../../ingest-node/src/fs/fault.ts';
import type { FileHandle, FileSystem } from '../../ingest-node/src/fs/types.ts';
import { defaultConfig } from '../../ingest-node/src/config/load.ts';
import { startNode } from '../../ingest-node/src/node.ts';
import type { RunningNode } from '../../ingest-node/src/node.ts';
import { describeVerdict, verifyWal } from './helpers/ledger.ts';
import type { Verdict } from './helpers/ledger.ts';
import { bounded, loadUntilPowerCut } from './helpers/power-cut-load.ts';
import { durableWal, readWalDir } from './helpers/wal-dir.ts';

const DIR = '/var/lib/landfall/wal/pc';
const ITERATIONS = Math.max(1, Number(process.env['LANDFALL_POWERCUT_ITERATIONS'] ?? 24));
const SEED_BASE = Number(process.env['LANDFALL_POWERCUT_SEED'] ?? 1);
const TEETH_ITERATIONS = 10;

/** The broken disk of the teeth check: datasync returns at once and makes nothing durable. */
function withoutDatasync(inner: FileSystem): FileSystem {
  const wrap = (h: FileHandle): FileHandle => ({
    path: h.path,
    write: (buffers, position) => h.write(buffers, position),
    read: (buffer, offset, length, position) => h.read(buffer, offset, length, position),
    datasync: async () => {},
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
  readonly verdict: Verdict;
  readonly cutAtOp: number;
  readonly torn: boolean;
  readonly acked: number;
  readonly unknown: number;
  readonly quarantined: number;
  /** Torn tails recovery copied to quarantine/ before cutting them (not quarantined segments). */
  readonly tailCopies: number;
  readonly unreadable: readonly string[];
  /** The rebooted node's first request: its 202's firstSeq, or why it failed. */
  readonly after: { readonly firstSeq: bigint } | { readonly error: string };
}

async function iteration(seed: number, variant: 'correct' | 'no-datasync'): Promise<Outcome> {
  const rnd = seededRandom(seed);
  const mem = new PowerCutFileSystem({ seed, jitterTicksMax: 2 });
  // The FaultFileSystem only counts operations (a gate, no faults) to place the cut.
  const fs = new FaultFileSystem(variant === 'no-datasync' ? withoutDatasync(mem) : mem);
  const config = defaultConfig({
    listen: { port: 0 },
    // Small segments: seals, state-file writes and new segments (dir fsyncs) are in every run.
    wal: { dir: DIR, segmentBytesMax: 8192 + Math.floor(rnd() * 32768), segmentAgeMsMax: 100 },
    endpoint: { name: 'pc' },
    instance: { id: 'pc-0' },
  });
  const node = await startNode(config, { fs, apiKeys: null });
  const torn = rnd() < 0.7;
  const cutAtOp = 1 + Math.floor(rnd() * 600);
  // Half the torn cuts keep unsynced pages in any order: with the pipelined
  // writer a later group's pages may survive an earlier, unsynced group's.
  const scatteredPageBytes = torn && rnd() < 0.5 ? 256 + Math.floor(rnd() * 3840) : undefined;
  const { ledger, rebooted, oldShutdown } = await loadUntilPowerCut({
    node,
    mem,
    fs,
    cutAtOp,
    torn,
    ...(scatteredPageBytes !== undefined ? { scatteredPageBytes } : {}),
    random: rnd,
    concurrency: 16,
    idPrefix: `s${seed}`,
  });

  let fresh: RunningNode | undefined;
  try {
    fresh = await startNode(config, { fs: rebooted, apiKeys: null });
    const contents = await readWalDir(rebooted, DIR);
    const verdict = verifyWal(contents.records, ledger);
    // The recovered node takes writes and continues the sequence.
    let after: Outcome['after'];
    const res = await fetch(`${fresh.url}/v1/ingest`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-ndjson' },
      body: '{"id":"after-reboot"}\n',
    });
    const text = await res.text();
    after =
      res.status === 202
        ? { firstSeq: BigInt((JSON.parse(text) as { firstSeq: string }).firstSeq) }
        : { error: `${res.status} ${text}` };
    const last = contents.records.at(-1)?.seq ?? 0n;
    if ('firstSeq' in after && after.firstSeq !== last + 1n)
      after = { error: `first seq after reboot ${after.firstSeq}, last recovered ${last}` };
    const c = ledger.counts();
    return {
      verdict,
      cutAtOp,
      torn,
      acked: c.acked,
      unknown: c.unknown,
      quarantined: durableWal(fresh.wal).recovery.quarantined.length + contents.quarantined.length,
      tailCopies: contents.tailCopies.length,
      unreadable: contents.unreadable,
      after,
    };
  } finally {
    await fresh?.shutdown('test');
    await bounded(oldShutdown, 10_000);
  }
}

void test(
  `power cut through the node: ${ITERATIONS} seeded cuts under HTTP load, every 202 survives`,
  { timeout: 180_000 },
  async (t) => {
    let acked = 0;
    let unknown = 0;
    let unknownWhole = 0;
    let tornRuns = 0;
    let tailCopies = 0;
    for (let s = 0; s < ITERATIONS; s++) {
      const seed = SEED_BASE + s;
      const o = await iteration(seed, 'correct');
      const where = `seed ${seed} (cut at op ${o.cutAtOp}, torn tail ${o.torn})`;
      assert.deepEqual(o.verdict.violations, [], `${where}: ${describeVerdict(o.verdict)}`);
      assert.deepEqual(o.unreadable, [], `${where}: unreadable segments`);
      assert.equal(o.quarantined, 0, `${where}: recovery quarantined a file`);
      assert.ok('firstSeq' in o.after, `${where}: after reboot: ${'error' in o.after ? o.after.error : ''}`);
      acked += o.acked;
      unknown += o.unknown;
      unknownWhole += o.verdict.unknownPresent;
      if (o.torn) tornRuns++;
      tailCopies += o.tailCopies;
    }
    t.diagnostic(
      `seeds ${SEED_BASE}..${SEED_BASE + ITERATIONS - 1}: ${acked} acknowledged requests survived; ` +
        `${unknown} cut off unanswered (${unknownWhole} of them whole in the WAL, the rest absent); ` +
        `${tornRuns} runs with torn tails, ${tailCopies} non-zero tails copied to quarantine/ before truncation`,
    );
    // The runs must exercise acknowledgements and requests cut off mid-flight.
    assert.ok(acked >= ITERATIONS * 20, `only ${acked} acknowledged requests in ${ITERATIONS} runs`);
    assert.ok(unknown >= ITERATIONS, `only ${unknown} requests cut off in ${ITERATIONS} runs`);
  },
);

void test('the power-cut check has teeth: with datasync a no-op, acknowledged records are lost and detected', async (t) => {
  let runsWithAcks = 0;
  let runsDetected = 0;
  let lost = 0;
  for (let s = 0; s < TEETH_ITERATIONS; s++) {
    const seed = 1000 + SEED_BASE + s;
    let o: Outcome;
    try {
      o = await iteration(seed, 'no-datasync');
    } catch (err) {
      // A disk that never syncs may leave nothing a node can start on; that is detection too.
      t.diagnostic(`seed ${seed}: the rebooted node did not start: ${(err as Error).message}`);
      runsWithAcks++;
      runsDetected++;
      continue;
    }
    if (o.acked === 0) continue;
    runsWithAcks++;
    lost += o.verdict.lostAckedRecords;
    if (o.verdict.lostAckedRecords > 0) runsDetected++;
  }
  t.diagnostic(`${runsDetected} of ${runsWithAcks} runs with acknowledgements lost some (${lost} records)`);
  assert.ok(runsWithAcks >= TEETH_ITERATIONS / 2, `only ${runsWithAcks} runs acknowledged anything`);
  assert.ok(
    runsDetected >= Math.max(1, Math.ceil(runsWithAcks * 0.8)),
    `without datasync only ${runsDetected} of ${runsWithAcks} runs lost an acknowledged record: the check is blind`,
  );
});
