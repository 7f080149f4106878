// Power cuts through the embedded default end to end: HTTP → WAL → delivery
// into the local folder (s3.localDir), all on one PowerCutFileSystem (an
// in-memory disk that keeps only what a completed datasync/syncDir made
// durable). The WAL, the state file, the pipeline's scratch files and every
// file the local-folder store writes (temp, link/rename, sidecars, new key
// folders) go through it. At a seeded random filesystem operation the power
// goes; a fresh node starts on what the disk kept, seals, and delivers. Then
// every commit marker in the folder is read back: well-formed, its artifacts
// present with the sizes and sha256 it lists, its segment archive
// decompressing to the exact bytes and records it describes; and over all
// committed segments every acknowledged record is there exactly once, with
// gap-free seqs (helpers/ledger.ts).
//
// Teeth: the same run with the store's directory fsyncs switched off must
// lose acknowledged records from the committed set, and the check must say so.
//
// Not covered here: the Parquet outputs (`npm start` also turns on raw
// Parquet and views). DuckDB writes its own files on the real disk; they are
// scratch, rebuilt from the WAL after a crash, and only listed by a marker
// once uploaded through the same store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { zstdDecompressSync } from 'node:zlib';
import { PowerCutFileSystem, seededRandom } from '../../ingest-node/src/fs/power-cut.ts';
import { FaultFileSystem } from '../../ingest-node/src/fs/fault.ts';
import { defaultConfig } from '../../ingest-node/src/config/load.ts';
import { startNode } from '../../ingest-node/src/node.ts';
import type { RunningNode } from '../../ingest-node/src/node.ts';
import { decodeCommitMarker, markerRef } from '../../ingest-node/src/delivery/marker.ts';
import { commitKey } from '../../ingest-node/src/delivery/keys.ts';
import { LocalFolderObjectStore } from '../../ingest-node/src/store/local.ts';
import { readSegment } from '../../ingest-node/src/wal/format.ts';
import { describeVerdict, verifyWal } from './helpers/ledger.ts';
import type { StoredRecord, Verdict } from './helpers/ledger.ts';
import { bounded, loadUntilPowerCut } from './helpers/power-cut-load.ts';
import { durableWal } from './helpers/wal-dir.ts';

const DIR = '/var/lib/landfall/wal/dpc';
const BUCKET = '/var/lib/landfall/bucket';
const ITERATIONS = Math.max(1, Number(process.env['LANDFALL_POWERCUT_ITERATIONS'] ?? 12));
const SEED_BASE = Number(process.env['LANDFALL_POWERCUT_SEED'] ?? 1);
const TEETH_ITERATIONS = 8;

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

interface Committed {
  readonly markers: number;
  readonly records: StoredRecord[];
  readonly problems: string[];
}

/** Every marker in the folder, checked, and the records of the segments they commit. */
async function readCommitted(store: LocalFolderObjectStore): Promise<Committed> {
  const problems: string[] = [];
  const records: StoredRecord[] = [];
  const keys: string[] = [];
  for (let after: string | undefined; ;) {
    const page = await store.list({
      prefix: 'commits/',
      ...(after !== undefined ? { startAfter: after } : {}),
    });
    keys.push(...page.objects.map((o) => o.key));
    if (!page.truncated) break;
    after = page.objects.at(-1)?.key;
  }
  for (const key of keys) {
    const body = await store.get(key);
    if (body === null) {
      problems.push(`${key}: listed, then gone`);
      continue;
    }
    let m;
    try {
      m = decodeCommitMarker(body);
    } catch (err) {
      problems.push(`${key}: malformed marker: ${(err as Error).message}`);
      continue;
    }
    if (commitKey('', markerRef(m)) !== key)
      problems.push(`${key}: marker describes ${commitKey('', markerRef(m))}`);
    for (const a of m.artifacts) {
      const bytes = await store.get(a.key, { bytesMax: 1 << 30 });
      if (bytes === null || bytes.length !== a.bytes || sha256(bytes) !== a.sha256) {
        problems.push(`${key}: artifact ${a.key} missing or differs`);
        continue;
      }
      if (a.kind !== 'segment') continue;
      const seg = zstdDecompressSync(bytes);
      if (seg.length !== m.segment.bytes || sha256(seg) !== m.segment.sha256)
        problems.push(`${key}: segment archive does not hold the segment the marker describes`);
      const rs = [...readSegment(seg).records];
      if (rs.length !== m.records || rs[0]?.seq !== m.firstSeq || rs.at(-1)?.seq !== m.lastSeq)
        problems.push(
          `${key}: ${rs.length} records ${rs[0]?.seq}..${rs.at(-1)?.seq}, marker ${m.records} ${m.firstSeq}..${m.lastSeq}`,
        );
      for (const r of rs) records.push({ seq: r.seq, payload: r.payload, file: a.key });
    }
  }
  records.sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));
  return { markers: keys.length, records, problems };
}

interface Outcome {
  readonly verdict: Verdict;
  readonly cutAtOp: number;
  readonly acked: number;
  readonly markers: number;
  readonly problems: readonly string[];
  readonly undelivered: number;
}

async function iteration(seed: number, variant: 'correct' | 'no-store-dir-fsync'): Promise<Outcome> {
  const rnd = seededRandom(seed);
  const mem = new PowerCutFileSystem({ seed, jitterTicksMax: 2 });
  const fs = new FaultFileSystem(mem);
  if (variant === 'no-store-dir-fsync')
    fs.inject({ op: 'syncDir', path: (p) => p.startsWith(BUCKET), fault: 'drop', times: Infinity });
  const config = defaultConfig({
    listen: { port: 0 },
    // Small segments sealed often: deliveries (and their markers) are in every run.
    wal: { dir: DIR, segmentBytesMax: 8192 + Math.floor(rnd() * 16384), segmentAgeMsMax: 100 },
    endpoint: { name: 'dpc' },
    instance: { id: 'dpc-0' },
    s3: { localDir: BUCKET },
    delivery: { segmentRetryDelayMsMax: 100, retryDelayMsMax: 20 },
  });
  const node = await startNode(config, { fs, apiKeys: null });
  const torn = rnd() < 0.7;
  const cutAtOp = 200 + Math.floor(rnd() * 3000);
  const { ledger, rebooted, oldShutdown } = await loadUntilPowerCut({
    node,
    mem,
    fs,
    cutAtOp,
    torn,
    random: rnd,
    concurrency: 8,
    idPrefix: `d${seed}`,
  });

  let fresh: RunningNode | undefined;
  try {
    // The teeth variant keeps its broken store after the reboot too.
    const after = new FaultFileSystem(rebooted);
    if (variant === 'no-store-dir-fsync')
      after.inject({ op: 'syncDir', path: (p) => p.startsWith(BUCKET), fault: 'drop', times: Infinity });
    fresh = await startNode(config, { fs: after, apiKeys: null });
    const wal = durableWal(fresh.wal);
    await wal.seal('manual');
    const idle = await bounded(
      fresh.delivery!.pipeline.idle().then(() => true),
      30_000,
    );
    assert.ok(idle, `seed ${seed}: delivery did not finish after the reboot`);
    const committed = await readCommitted(new LocalFolderObjectStore({ root: BUCKET, fs: rebooted }));
    return {
      verdict: verifyWal(committed.records, ledger),
      cutAtOp,
      acked: ledger.counts().acked,
      markers: committed.markers,
      problems: committed.problems,
      undelivered: wal.stats().undeliveredSegments,
    };
  } finally {
    await fresh?.shutdown('test');
    await bounded(oldShutdown, 10_000);
  }
}

void test(
  `power cut through the embedded default: ${ITERATIONS} seeded cuts, every 202 in a committed segment exactly once`,
  { timeout: 300_000 },
  async (t) => {
    let acked = 0;
    let markers = 0;
    for (let s = 0; s < ITERATIONS; s++) {
      const seed = SEED_BASE + s;
      const o = await iteration(seed, 'correct');
      const where = `seed ${seed} (cut at op ${o.cutAtOp})`;
      assert.deepEqual(o.problems, [], `${where}: markers`);
      assert.deepEqual(o.verdict.violations, [], `${where}: ${describeVerdict(o.verdict)}`);
      assert.equal(o.undelivered, 0, `${where}: segments left undelivered`);
      acked += o.acked;
      markers += o.markers;
    }
    t.diagnostic(
      `seeds ${SEED_BASE}..${SEED_BASE + ITERATIONS - 1}: ${acked} acknowledged requests, ${markers} markers`,
    );
    assert.ok(acked >= ITERATIONS * 20, `only ${acked} acknowledged requests in ${ITERATIONS} runs`);
    assert.ok(markers >= ITERATIONS * 2, `only ${markers} markers in ${ITERATIONS} runs`);
  },
);

void test(
  'the delivery power-cut check has teeth: without the store’s directory fsyncs, committed records are lost and detected',
  { timeout: 300_000 },
  async (t) => {
    let runsWithAcks = 0;
    let runsDetected = 0;
    for (let s = 0; s < TEETH_ITERATIONS; s++) {
      const seed = 2000 + SEED_BASE + s;
      const o = await iteration(seed, 'no-store-dir-fsync');
      if (o.acked === 0) continue;
      runsWithAcks++;
      if (o.verdict.lostAckedRecords > 0 || o.problems.length > 0) runsDetected++;
    }
    t.diagnostic(`${runsDetected} of ${runsWithAcks} runs lost committed data`);
    assert.ok(runsWithAcks >= TEETH_ITERATIONS / 2, `only ${runsWithAcks} runs acknowledged anything`);
    assert.ok(
      runsDetected >= Math.max(1, Math.ceil(runsWithAcks * 0.5)),
      `only ${runsDetected} of ${runsWithAcks} runs lost data: the check is blind`,
    );
  },
);
