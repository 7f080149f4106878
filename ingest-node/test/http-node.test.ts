// The composition root and the `landfall` CLI: startNode wires config → WAL →
// server; shutdown drains (in-flight requests finish), closes the WAL (the open
// segment seals) and reports success; the CLI serves, stops on SIGTERM with
// exit code 0, and refuses a bad config with exit code 2.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startNode } from '../src/node.ts';
import { defaultConfig } from '../src/config/load.ts';
import { main } from '../src/cli.ts';
import type { CliIo } from '../src/cli.ts';
import { MemoryWal } from './helpers/memory-wal.ts';
import { ingest } from './helpers/server.ts';
import { openLocalSegment, records } from '../src/commands/common.ts';

const CLI = fileURLToPath(new URL('../src/cli.ts', import.meta.url));

void describe('startNode', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'landfall-node-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  void it('serves on the real WAL and seals the open segment on shutdown', async () => {
    const walDir = join(dir, 'wal');
    const node = await startNode(defaultConfig({ listen: { port: 0 }, wal: { dir: walDir } }));
    assert.equal(node.authEnabled, false);
    const a = await ingest(node.url, '{"hello":"world"}\n');
    assert.equal(a.status, 202);
    assert.equal(await node.shutdown('test'), true);
    assert.equal(await node.stopped, true);
    assert.equal(await node.shutdown('again'), true, 'idempotent');
    const stats = node.wal.stats();
    assert.equal(stats.openSegmentId, null, 'closed WAL has no open segment');
    assert.ok((await readdir(walDir)).some((n) => n.endsWith('.wal')));
    await assert.rejects(fetch(`${node.url}/healthz`));
  });

  void it('a record over 16 MiB, taken under a higher limits.recordBytesMax, is delivered (archive and raw Parquet), not quarantined as a corrupt frame', async () => {
    const MiB = 1024 * 1024;
    const base = join(dir, 'big-record');
    const bucket = join(base, 'bucket');
    const node = await startNode(
      defaultConfig({
        listen: { port: 0 },
        wal: { dir: join(base, 'wal'), segmentAgeMsMax: 300 },
        s3: { localDir: bucket },
        outputs: { rawParquet: true },
        views: { threads: 1, memoryLimitBytes: 256 * MiB },
        limits: {
          recordBytesMax: 24 * MiB,
          bodyBytesMax: 64 * MiB,
          decodedBytesMax: 64 * MiB,
          inflightBytesMax: 512 * MiB,
        },
      }),
    );
    try {
      const a = await ingest(node.url, `${JSON.stringify({ event: 'y'.repeat(17 * MiB) })}\n`);
      assert.equal(a.status, 202);
      const stats = () => node.delivery!.pipeline.stats();
      for (let i = 0; stats().segmentsDeliveredTotal + stats().quarantinedTotal < 1; i++) {
        assert.ok(i < 3000, 'the segment was delivered or quarantined');
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(
        stats().quarantinedTotal,
        0,
        'the segment was quarantined: its record read as a corrupt frame',
      );
      assert.equal(stats().segmentsDeliveredTotal, 1);
      const files = await readdir(bucket, { recursive: true });
      assert.ok(
        files.some((f) => f.startsWith('raw/') && f.endsWith('.parquet')),
        'raw Parquet written',
      );
      const archive = files.find((f) => f.startsWith('segments/') && f.endsWith('.wal.zst'));
      assert.ok(archive !== undefined, 'archive written');
      // The tools (landfall expand, verify, reprocess) read it back whole.
      const back: number[] = [];
      for await (const r of records(openLocalSegment(join(bucket, archive)))) back.push(r.payload.byteLength);
      assert.deepEqual(back, [17 * MiB + '{"event":""}'.length]);
    } finally {
      await node.shutdown('test');
    }
  });

  void it('shutdown lets in-flight requests finish, refuses new ones, then closes the WAL', async () => {
    const wal = new MemoryWal();
    const node = await startNode(defaultConfig({ listen: { port: 0 } }), {
      openWal: async () => wal,
      apiKeys: null,
    });
    const release = wal.hold();
    const inflight = ingest(node.url, '{"a":1}\n');
    await new Promise((r) => setTimeout(r, 50));
    const stopping = node.shutdown('test');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(node.server.backpressure.ready().accepting, false);
    assert.equal(wal.closed, false, 'the WAL stays open while a request waits for it');
    release();
    assert.equal((await inflight).status, 202);
    assert.equal(await stopping, true);
    assert.equal(wal.closed, true);
  });

  void it('shutdown is bounded by shutdown.timeoutMs', async () => {
    const wal = new MemoryWal();
    const node = await startNode(defaultConfig({ listen: { port: 0 }, shutdown: { timeoutMs: 200 } }), {
      openWal: async () => wal,
    });
    wal.hold(); // never released: the request would wait forever
    const stuck = ingest(node.url, '{"a":1}\n').catch((err: unknown) => err);
    await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    assert.equal(await node.shutdown('test'), false, 'not clean: a request was cut off');
    assert.ok(Date.now() - started < 2000);
    assert.ok((await stuck) instanceof Error, 'the stuck client saw its connection closed');
  });

  void it('a start that fails after the WAL opened closes the WAL', async () => {
    const wal = new MemoryWal();
    const config = defaultConfig({ listen: { port: 0 }, auth: { apiKeysFile: join(dir, 'no-such-keys') } });
    await assert.rejects(startNode(config, { openWal: async () => wal }), /auth.apiKeysFile/);
    assert.equal(wal.closed, true);
  });
});

function captureIo(
  env: Record<string, string> = {},
): CliIo & { outText: () => string; errText: () => string } {
  let out = '';
  let err = '';
  return {
    out: (t) => void (out += t),
    err: (t) => void (err += t),
    env,
    isTTY: false,
    outText: () => out,
    errText: () => err,
  };
}

void describe('landfall CLI', () => {
  void it('--help lists the commands, --version prints the version, unknown commands are exit 2', async () => {
    const io = captureIo();
    assert.equal(await main(['--help'], io), 0);
    assert.match(io.outText(), /serve\s+run an ingest node/);
    const v = captureIo();
    assert.equal(await main(['--version'], v), 0);
    assert.match(v.outText(), /^\d+\.\d+\.\d+\n$/);
    const u = captureIo();
    assert.equal(await main(['frobnicate'], u), 2);
    assert.match(u.errText(), /unknown command "frobnicate"/);
    const h = captureIo();
    assert.equal(await main(['serve', '--help'], h), 0);
    assert.match(h.outText(), /--wal\.segmentBytesMax/);
    assert.match(h.outText(), /LANDFALL_WAL_SEGMENT_BYTES_MAX/);
  });

  void it('serve refuses a bad config with every problem and exit code 2', async () => {
    const io = captureIo({ LANDFALL_LISTEN_PORT: 'x' });
    assert.equal(await main(['serve', '--wal.dirr=/x'], io), 2);
    assert.match(io.errText(), /unknown flag --wal\.dirr/);
    const open = captureIo();
    assert.equal(await main(['serve', '--listen.host=0.0.0.0'], open), 2);
    assert.match(open.errText(), /API keys are required/);
  });

  void it('serve runs as a process with keys: 401 without, 202 with, exits 0 on SIGTERM after sealing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'landfall-cli-'));
    let stop = (): void => {};
    try {
      const keys = join(dir, 'keys');
      await writeFile(keys, 'cli-test-key-0123456789\n');
      const child = spawn(
        process.execPath,
        [CLI, 'serve', '--listen.port=0', `--wal.dir=${join(dir, 'wal')}`, '--auth.apiKeysFile', keys],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { PATH: process.env.PATH ?? '' },
        },
      );
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      stop = () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      };
      const deadline = Date.now() + 10_000;
      let url: string | undefined;
      while (url === undefined && Date.now() < deadline) {
        const m = /"url":"(http:\/\/[^"]+)"[^\n]*listening/.exec(stdout);
        url = m?.[1];
        if (url === undefined) await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(url !== undefined, `never listened:\n${stdout}\n${stderr}`);
      assert.equal((await ingest(url, '{"a":1}\n')).status, 401);
      assert.equal((await ingest(url, '{"a":1}\n', { 'x-api-key': 'cli-test-key-0123456789' })).status, 202);
      child.kill('SIGTERM');
      assert.equal(await exited, 0, stderr);
      assert.match(stdout, /"msg":"stopped"/);
      assert.match(stdout, /"msg":"WAL segment sealed"/);
      assert.ok(!stdout.includes('cli-test-key-0123456789'), 'the key is never logged');
      assert.ok(!stdout.includes('AUTH DISABLED'));
    } finally {
      // A failed assertion must not leave a server running.
      stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

void describe('WAL metrics conventions', () => {
  void it('counts since start are *_total counters; quarantine/ files are a gauge read from the folder', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'landfall-node-metrics-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const walDir = join(dir, 'wal');
    const config = defaultConfig({ listen: { port: 0 }, wal: { dir: walDir } });
    const scrape = async (url: string): Promise<string> => (await fetch(`${url}/metrics`)).text();

    const first = await startNode(config);
    assert.equal((await ingest(first.url, '{"a":1}\n')).status, 202);
    let text = await scrape(first.adminUrl);
    for (const name of [
      'landfall_wal_appends_total',
      'landfall_wal_syncs_total',
      'landfall_wal_write_failures_total',
      'landfall_wal_recovery_truncations_total',
      'landfall_wal_quarantined_segments_total',
    ])
      assert.match(text, new RegExp(`^# TYPE ${name} counter$`, 'm'), name);
    assert.match(text, /^landfall_wal_appends_total 1$/m);
    assert.match(text, /^# TYPE landfall_wal_quarantine_files gauge$/m);
    assert.match(text, /^landfall_wal_quarantine_files\{kind="segment"\} 0$/m, 'no quarantine/ folder: 0');
    assert.doesNotMatch(text, /^landfall_wal_appends /m, 'the old gauge name is gone');
    assert.equal(await first.shutdown('restart'), true);

    // What an earlier process quarantined is still there after a restart: the gauge says so
    // (the counter of this process is 0), until a human moves the files away.
    await mkdir(join(walDir, 'quarantine'), { recursive: true });
    await writeFile(join(walDir, 'quarantine', '00000000000000000007.wal'), 'corrupt');
    // A tail copy (recovery keeps one before each truncation) is not a quarantined segment.
    await writeFile(join(walDir, 'quarantine', '00000000000000000008.wal.100-120.tail'), 'torn');
    const second = await startNode(config);
    t.after(() => second.shutdown('test done'));
    text = await scrape(second.adminUrl);
    assert.match(text, /^landfall_wal_quarantine_files\{kind="segment"\} 1$/m);
    assert.match(text, /^landfall_wal_quarantine_files\{kind="tail"\} 1$/m);
    assert.match(text, /^landfall_wal_quarantined_segments_total 0$/m);
    await rm(join(walDir, 'quarantine', '00000000000000000007.wal'));
    assert.match(await scrape(second.adminUrl), /^landfall_wal_quarantine_files\{kind="segment"\} 0$/m);
  });
});
