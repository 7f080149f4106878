// The WAL's bigint gauges (seq, segment id) against the top of the seq space:
// exported exactly at 2^53 - 1, and the WAL refuses to go past it, so the
// float64 every Prometheus sample is never rounds them (metrics.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { NodeFileSystem } from '../src/fs/node.ts';
import { openWal } from '../src/wal/wal.ts';
import { STATE_FILE } from '../src/wal/state.ts';
import { startTestServer } from './helpers/server.ts';
import { walOptions } from './wal-helpers.ts';

const TOP = 2n ** 53n - 1n; // Number.MAX_SAFE_INTEGER

async function setSeqHighWater(dir: string, seq: bigint): Promise<void> {
  const file = path.join(dir, STATE_FILE);
  const state = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  await writeFile(file, JSON.stringify({ ...state, seqHighWater: seq.toString() }));
}

void test('landfall_wal_next_seq is exact at 2^53 - 1; the WAL does not open past it', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'landfall-metrics-bigint-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const options = walOptions(new NodeFileSystem(), { dir });
  await (await openWal(options)).close();

  await setSeqHighWater(dir, TOP - 1n);
  const wal = await openWal(options);
  assert.equal(wal.stats().nextSeq, TOP);
  const t1 = await startTestServer({ wal });
  try {
    const text = await (await fetch(`${t1.adminUrl}/metrics`)).text();
    assert.match(text, /^landfall_wal_next_seq 9007199254740991$/m);
    const status = (await (await fetch(`${t1.adminUrl}/v1/status`)).json()) as { wal: { nextSeq: string } };
    assert.equal(status.wal.nextSeq, '9007199254740991');
  } finally {
    await t1.close();
    await wal.close();
  }

  await setSeqHighWater(dir, TOP);
  await assert.rejects(openWal(options), /WAL seq space exhausted/);
});
