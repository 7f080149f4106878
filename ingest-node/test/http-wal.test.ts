// The HTTP API on the real WAL (NodeFileSystem on a temp dir): what a 202
// acknowledged is in the segment file, byte for byte and seq for seq;
// concurrent requests share fsyncs; a failed write is a 503 and leaves nothing
// behind after recovery.

import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { readSegment } from '../src/wal/format.ts';
import type { Wal } from '../src/wal/types.ts';
import { RecordFormat } from '../src/wal/types.ts';
import { NodeFileSystem } from '../src/fs/node.ts';
import { FaultFileSystem } from '../src/fs/fault.ts';
import type { FileSystem } from '../src/fs/types.ts';
import { codeOf, ingest, openDiskWal, startTestServer } from './helpers/server.ts';
import type { TestServer } from './helpers/server.ts';

interface Stored {
  readonly seq: bigint;
  readonly format: number;
  readonly payload: string;
}

async function openOn(dir: string, fs: FileSystem = new NodeFileSystem()): Promise<Wal> {
  return openDiskWal(dir, { fs });
}

/** Every record in every segment file of `dir`, in order. */
async function storedRecords(dir: string): Promise<Stored[]> {
  const out: Stored[] = [];
  for (const name of (await readdir(dir)).filter((n) => n.endsWith('.wal')).sort()) {
    const { records } = readSegment(await readFile(join(dir, name)), { requireBatchEnd: false });
    for (const r of records)
      out.push({ seq: r.seq, format: r.format, payload: Buffer.from(r.payload).toString('latin1') });
  }
  return out;
}

void describe('HTTP on the real WAL', () => {
  let dir: string | undefined;
  let t: TestServer<Wal> | undefined;
  afterEach(async () => {
    await t?.close();
    await t?.wal.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    t = undefined;
    dir = undefined;
  });

  void it('what a 202 acknowledged is in the segment, with the seqs it announced', async () => {
    dir = await mkdtemp(join(tmpdir(), 'landfall-http-wal-'));
    t = await startTestServer({ wal: await openOn(dir) });
    const a = await ingest(t.url, '{"a":1}\r\n\n{"b":"é"}\n');
    const b = await ingest(t.url, gzipSync('[{"c":3},{"d":4}]'), {
      'content-type': 'application/json',
      'content-encoding': 'gzip',
    });
    assert.equal(a.status, 202);
    assert.equal(b.status, 202);
    const ja = a.json as { firstSeq: string; lastSeq: string };
    const jb = b.json as { firstSeq: string; lastSeq: string };
    await t.wal.close();
    const stored = await storedRecords(dir);
    assert.deepEqual(
      stored.map((r) => [r.seq.toString(), r.format, Buffer.from(r.payload, 'latin1').toString('utf8')]),
      [
        [ja.firstSeq, RecordFormat.ndjson, '{"a":1}'],
        [ja.lastSeq, RecordFormat.ndjson, '{"b":"é"}'],
        [jb.firstSeq, RecordFormat.json, '{"c":3}'],
        [jb.lastSeq, RecordFormat.json, '{"d":4}'],
      ],
    );
  });

  void it('concurrent requests all get distinct contiguous seqs and share fsyncs (group commit)', async () => {
    dir = await mkdtemp(join(tmpdir(), 'landfall-http-wal-'));
    t = await startTestServer({ wal: await openOn(dir) });
    const n = 64;
    const answers = await Promise.all(
      Array.from({ length: n }, (_, i) => ingest(t!.url, `{"i":${i}}\n{"i2":${i}}\n`)),
    );
    const seqs: bigint[] = [];
    for (const a of answers) {
      assert.equal(a.status, 202);
      const j = a.json as { firstSeq: string; lastSeq: string };
      assert.equal(BigInt(j.lastSeq) - BigInt(j.firstSeq), 1n, 'one request is one contiguous run');
      seqs.push(BigInt(j.firstSeq), BigInt(j.lastSeq));
    }
    seqs.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
    for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], (seqs[i - 1] ?? 0n) + 1n);
    const stats = t.wal.stats();
    assert.equal(stats.appendsTotal, n);
    assert.ok(stats.syncsTotal <= n, `syncs ${stats.syncsTotal} for ${n} appends`);
  });

  void it('a failed fdatasync is 503 LF_WAL_UNAVAILABLE, and after recovery none of that request is there', async () => {
    dir = await mkdtemp(join(tmpdir(), 'landfall-http-wal-'));
    const fs = new FaultFileSystem(new NodeFileSystem());
    t = await startTestServer({ wal: await openOn(dir, fs) });
    assert.equal((await ingest(t.url, '{"ok":1}\n')).status, 202);
    fs.inject({ op: 'datasync', fault: 'EIO' });
    const failed = await ingest(t.url, '{"lost":1}\n{"lost":2}\n');
    assert.equal(failed.status, 503);
    assert.equal(codeOf(failed), 'LF_WAL_UNAVAILABLE');
    assert.ok(Number(failed.headers.get('retry-after')) > 0);
    await t.close();
    await t.wal.close().catch(() => {});
    // Recovery (a fresh open) decides what is durable.
    const reopened = await openOn(dir);
    await reopened.close();
    const payloads = (await storedRecords(dir)).map((r) => r.payload);
    assert.ok(payloads.includes('{"ok":1}'));
    assert.ok(!payloads.some((p) => p.includes('lost')), `found ${payloads.join(' ')}`);
    t = undefined;
  });
});
