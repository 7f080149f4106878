// "202 means durable", against kill -9: the real `landfall serve` child
// process on a WAL dir on the real disk, small segments (so seals and segment
// rotations happen all the time), 24 concurrent producers sending NDJSON
// batches of unique records, and SIGKILL at a seeded random moment. After each
// restart (recovery done, before new load) every segment file is read back
// with the WAL's strict reader and held against what the producers were told
// (helpers/ledger.ts): gap-free seqs from 1, every 202'd record at the seqs
// its 202 announced, unanswered requests all-or-nothing, refused ones absent.
//
// Some iterations first kill a node while it starts (during recovery), so a
// recovery cut short is recovered again.
//
// kill -9 leaves the page cache alone, so this cannot catch a missing fsync:
// ingest-powercut.test.ts does that. It catches acks before the write, lost
// or reordered seqs, partial requests, and recovery that mistakes a torn tail
// for corruption (or the reverse).
//
//   LANDFALL_CRASH_ITERATIONS=200 node --test test/e2e/ingest-crash.test.ts   # long mode
//   LANDFALL_CRASH_SEED=1234 …                                                # replay the random schedule
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { NodeFileSystem } from '../../ingest-node/src/fs/node.ts';
import { seededRandom } from '../../ingest-node/src/fs/power-cut.ts';
import { scratchDir, waitFor } from '../harness/proc.ts';
import { Ledger, describeVerdict, verifyWal } from './helpers/ledger.ts';
import { runProducers } from './helpers/producers.ts';
import { readWalDir } from './helpers/wal-dir.ts';
import type { SegmentCache } from './helpers/wal-dir.ts';
import { logLines, startCliNode } from './helpers/cli-node.ts';
import type { CliNode } from './helpers/cli-node.ts';

const ITERATIONS = Math.max(1, Number(process.env['LANDFALL_CRASH_ITERATIONS'] ?? 20));
const SEED = Number(process.env['LANDFALL_CRASH_SEED'] ?? Date.now() % 2 ** 31);
const PRODUCERS = 24;
/** Share of iterations that first kill a node before it listens (during recovery), on top of the kill under load. */
const STARTUP_KILL_SHARE = 0.15;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

void test(
  `SIGKILL under load: ${ITERATIONS} kills, every 202 survives, in order, all-or-nothing`,
  { timeout: 120_000 + ITERATIONS * 3_000 },
  async (t) => {
    t.diagnostic(`seed ${SEED} (replay with LANDFALL_CRASH_SEED=${SEED}), ${ITERATIONS} iterations`);
    const rnd = seededRandom(SEED);
    const dir = scratchDir('ingest-crash');
    const walDir = join(dir, 'wal');
    const fs = new NodeFileSystem();
    const ledger = new Ledger();
    const cache: SegmentCache = new Map();
    const flags = [
      `--wal.dir=${walDir}`,
      // 64 KiB segments: a seal (state file write + new segment + dir fsync) every ~150 requests.
      '--wal.segmentBytesMax=65536',
      '--wal.segmentAgeMsMax=200',
      '--endpoint.name=crash',
      '--instance.id=crash-0',
      '--log.level=info',
    ];
    let node: CliNode | undefined;
    let kills = 0;
    let startupKills = 0;
    let verifications = 0;
    let truncations = 0;
    let unknownWhole = 0;

    const verify = async (where: string, logPath: string): Promise<void> => {
      const opened = logLines(logPath).find((l) => l.msg === 'WAL opened');
      assert.ok(opened !== undefined, `${where}: no "WAL opened" line in ${logPath}`);
      assert.equal(opened['quarantined'], 0, `${where} (seed ${SEED}): recovery quarantined a segment`);
      truncations += Number(opened['truncations'] ?? 0);
      const contents = await readWalDir(fs, walDir, cache);
      assert.deepEqual(contents.unreadable, [], `${where} (seed ${SEED}): unreadable segments`);
      assert.deepEqual(contents.quarantined, [], `${where} (seed ${SEED}): quarantined files`);
      const verdict = verifyWal(contents.records, ledger);
      assert.deepEqual(verdict.violations, [], `${where} (seed ${SEED}): ${describeVerdict(verdict)}`);
      unknownWhole = verdict.unknownPresent;
      verifications++;
    };

    try {
      for (let i = 0; i < ITERATIONS; i++) {
        if (i > 0 && rnd() < STARTUP_KILL_SHARE) {
          // An extra kill that cuts a start short: anywhere from loading modules to recovering the WAL.
          node = startCliNode(`node-${i}-startup`, join(dir, `node-${i}-startup.log`), flags);
          await sleep(Math.floor(rnd() * 600));
          await node.proc.stop({ graceMs: 0 });
          startupKills++;
        }
        const logPath = join(dir, `node-${i}.log`);
        node = startCliNode(`node-${i}`, logPath, flags);
        const url = await node.listening;
        await verify(`after restart ${i}`, logPath);

        let stopped = false;
        const before = ledger.counts().acked;
        const load = runProducers({
          url,
          ledger,
          concurrency: PRODUCERS,
          random: rnd,
          idPrefix: `i${i}`,
          recordsMax: 8,
          padMax: 200,
          stop: () => stopped,
        });
        try {
          // Under load (the first 202 of this round came back), then a random moment.
          await waitFor(() => ledger.counts().acked > before, {
            what: 'a first 202',
            timeoutMs: 15_000,
            process: node.proc,
          });
          await sleep(Math.floor(rnd() * 500));
        } finally {
          stopped = true;
          await node.proc.stop({ graceMs: 0 }); // SIGKILL
          kills++;
          await load;
        }
      }

      // The last restart: check, then a clean SIGTERM (the open segment seals) and check again.
      const logPath = join(dir, 'node-final.log');
      node = startCliNode('node-final', logPath, flags);
      await node.listening;
      await verify('after the last restart', logPath);
      await node.proc.stop({ graceMs: 10_000 });
      const exit = await node.proc.exited;
      assert.equal(exit.code, 0, 'the final SIGTERM shut the node down cleanly');
      const contents = await readWalDir(fs, walDir, cache);
      assert.deepEqual(verifyWal(contents.records, ledger).violations, []);
    } finally {
      await node?.proc.stop({ graceMs: 0 });
    }

    const c = ledger.counts();
    t.diagnostic(
      `seed ${SEED}: ${kills} kills under load + ${startupKills} during startup, ${verifications} verifications; ` +
        `${c.requests} requests: ${c.acked} acknowledged (${c.ackedRecords} records), ${c.unknown} unanswered ` +
        `(${unknownWhole} of them whole in the WAL, the rest absent), ${c.refused} refused; ` +
        `${truncations} torn tails truncated by recovery`,
    );
    assert.equal(kills, ITERATIONS);
    assert.ok(c.acked >= kills * 5, `only ${c.acked} acknowledged requests over ${kills} kills`);
    assert.ok(c.unknown > 0, 'no kill caught a request in flight');
  },
);
