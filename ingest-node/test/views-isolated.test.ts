// Issues 14 and 15: Parquet materialisation in a child process under a hard
// address-space limit (parquet/isolated.ts). On the real WAL, the real
// delivery pipeline and the local folder store:
// - the child gives the same commit markers (same artifacts, byte for byte:
//   the marker holds every file's sha256) as the in-process materialiser;
// - a view whose expression grows each value by a factor (replace), which in
//   the node's own process grows its RSS without bound (shown below in a
//   watched child), kills only its own child: that segment is committed with
//   the view's rows in its DLQ as `view_failed`, raw Parquet and the other
//   view are written, the next segment flows, and this process stays small;
// - a segment whose records cannot be loaded under the limit at all is
//   retried a bounded number of times, then delivered without raw Parquet;
// - a corrupt segment read in the child is still quarantined.
import { after, afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cp, mkdtemp, open, readdir, rm, writeFile } from 'node:fs/promises';
import { getPriority, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parquetReadObjects } from 'hyparquet';
import { Registry } from 'prom-client';
import { compressors } from 'hyparquet-compressors';
import { systemClock, type Clock } from '../src/clock.ts';
import { NodeFileSystem } from '../src/fs/node.ts';
import { silentLogger } from '../src/log.ts';
import { parseCommitKey } from '../src/delivery/keys.ts';
import { encodeCommitMarker, readCommitMarker, type CommitMarker } from '../src/delivery/marker.ts';
import { parquetProducer, type IsolatedOptions } from '../src/delivery/parquet-producers.ts';
import { startPipeline, type PipelineStats } from '../src/delivery/pipeline.ts';
import { segmentArchiveProducer, type ArtifactProducer } from '../src/delivery/producers.ts';
import {
  MaterializerError,
  createChildRunner,
  type ChildRequest,
  type ChildRunner,
  type ChildRunnerOptions,
} from '../src/parquet/isolated.ts';
import { LocalFolderObjectStore } from '../src/store/local.ts';
import {
  compileView,
  createParquetDb,
  validateView,
  type CompiledView,
  type ParquetDb,
} from '../src/views/index.ts';
import { openWal } from '../src/wal/wal.ts';
import { waitFor } from '../../test/harness/proc.ts';
import { RecordFormat, type SealedSegment, type Wal } from '../src/wal/types.ts';

const prefix = 'lf';
const endpoint = 'web';
const instance = 'web-0';
const MiB = 1024 * 1024;
/** The smallest limit the config allows: a growing expression does not get far. */
const LIMIT_BYTES = 2560 * MiB;

let root: string;
let compiler: ParquetDb;
const runners: ChildRunner[] = [];

beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'lf-views-isolated-'));
  compiler = await createParquetDb({ memoryLimitBytes: 64 * MiB, threads: 1 });
});
afterEach(async () => {
  for (const r of runners.splice(0)) await r.close(0);
  await compiler.close();
  await rm(root, { recursive: true, force: true });
});
after(() => {
  // Nothing of ours is left running; the test runner may exit.
});

const REGION_VIEW = {
  name: 'by_region',
  columns: [
    { name: 'id', type: 'INTEGER', path: '$.id', required: true },
    { name: 'region', type: 'VARCHAR', path: '$.region' },
    { name: 'pad', type: 'VARCHAR', path: '$.pad' },
  ],
  partitioning: [{ expression: 'region', alias: 'r' }],
};

/** 1,000 copies of each character of `pad`: 2 KB become 2 MB per row, ~4 GB per 2,048-row vector. */
const GROWING_VIEW = {
  name: 'growing',
  columns: [
    { name: 'id', type: 'INTEGER', path: '$.id', required: true },
    { name: 'pad', type: 'VARCHAR', path: '$.pad' },
  ],
  filter: `length(replace(pad, 'p', '${'x'.repeat(1000)}')) > 0`,
};

const compile = (spec: object): Promise<CompiledView> =>
  compiler.withConnection((c) => compileView(c, validateView(spec)));

function childRunner(overrides: Partial<ChildRunnerOptions> = {}): ChildRunner {
  const runner = createChildRunner({
    addressSpaceBytes: LIMIT_BYTES,
    processesMax: 1,
    scratchDir: path.join(root, 'children'),
    memoryLimitBytes: 128 * MiB,
    threads: 1,
    ...overrides,
  });
  runners.push(runner);
  return runner;
}

function isolated(overrides: Partial<IsolatedOptions> = {}): IsolatedOptions {
  return { runner: overrides.runner ?? childRunner(), ...overrides };
}

/** The entries of `<child>/<sub>` in every child's scratch folder, as `<child>/<sub>/<name>`. */
async function inChildren(sub: string): Promise<string[]> {
  const found: string[] = [];
  for (const c of await readdir(path.join(root, 'children')).catch(() => []))
    for (const e of await readdir(path.join(root, 'children', c, sub)).catch(() => []))
      found.push(`${c}/${sub}/${e}`);
  return found;
}

/** Job folders (outputs) left in the children's scratch folders. */
const jobFolders = (): Promise<string[]> => inChildren('jobs');

/** The WAL of these tests: the real disk, segments sealed only when asked. */
function openTestWal(dir: string): Promise<Wal> {
  return openWal({
    dir,
    endpoint,
    instance,
    fs: new NodeFileSystem(),
    clock: systemClock,
    log: silentLogger,
    segmentAgeMsMax: 3_600_000,
  });
}

/** Appends each batch as its own sealed segment and closes the WAL. */
async function writeWal(dir: string, batches: readonly (readonly string[])[]): Promise<void> {
  const wal = await openTestWal(dir);
  try {
    for (const batch of batches) {
      await wal.append(
        batch.map((p) => Buffer.from(p)),
        RecordFormat.ndjson,
      );
      await wal.seal();
    }
  } finally {
    await wal.close();
  }
}

/** Marker times from this clock are fixed, so two deliveries of one WAL can be compared byte for byte. */
const fixedClock: Clock = {
  nowMs: () => 1_800_000_000_000,
  nowMicros: () => 1_800_000_000_000_000n,
  monotonicMs: () => performance.now(),
};

interface Delivered {
  markers: CommitMarker[];
  store: LocalFolderObjectStore;
  stats: PipelineStats;
  quarantined: number;
}

/**
 * Delivers every sealed segment of the WAL in `walDir` with these producers,
 * waiting (bounded by attempts, not time) for `expect` markers.
 */
/** A delivery here takes seconds; a stalled one fails the test instead of holding the suite. */
const DELIVER_WAIT_MS_MAX = 240_000;

async function deliver(
  walDir: string,
  bucket: string,
  parquet: ArtifactProducer,
  expect: number,
): Promise<Delivered> {
  const wal = await openTestWal(walDir);
  const store = new LocalFolderObjectStore({ root: bucket });
  let quarantined = 0;
  const pipeline = await startPipeline({
    wal,
    store,
    prefix,
    endpoint,
    instance,
    clock: fixedClock,
    scratchDir: path.join(path.dirname(bucket), `scratch-${path.basename(bucket)}`),
    producers: [segmentArchiveProducer(), parquet],
    retry: { attemptsMax: 1, retryDelayMsBase: 1, retryDelayMsMax: 1 },
    segmentRetryDelayMsMax: 50,
    staleUploadAgeMs: 0,
    onEvent: (e) => {
      if (e.type === 'quarantined') quarantined++;
    },
  });
  try {
    const deadline = Date.now() + DELIVER_WAIT_MS_MAX;
    for (;;) {
      const s = pipeline.stats();
      if (s.segmentsDeliveredTotal + quarantined >= expect) break;
      if (Date.now() > deadline)
        assert.fail(
          `${s.segmentsDeliveredTotal} of ${expect} delivered after ${DELIVER_WAIT_MS_MAX} ms; last error ${JSON.stringify(s.lastError)}`,
        );
      if (s.segmentFailuresTotal >= 20)
        assert.fail(
          `${s.segmentsDeliveredTotal} of ${expect} delivered; stalled on ${JSON.stringify(s.lastError)}`,
        );
      await new Promise((r) => setTimeout(r, 20));
    }
    const stats = pipeline.stats();
    const listed = await store.list({ prefix: `${prefix}/commits/` });
    const markers: CommitMarker[] = [];
    for (const o of listed.objects) {
      const m = await readCommitMarker(store, prefix, parseCommitKey(prefix, o.key));
      assert.ok(m);
      markers.push(m);
    }
    markers.sort((a, b) => (a.segmentId < b.segmentId ? -1 : 1));
    return { markers, store, stats, quarantined };
  } finally {
    await pipeline.stop();
    await wal.close();
  }
}

async function parquetRows(store: LocalFolderObjectStore, key: string): Promise<Record<string, unknown>[]> {
  const body = await store.get(key, { bytesMax: 256 * MiB });
  assert.ok(body, `${key} exists`);
  const file = body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength) as ArrayBuffer;
  return (await parquetReadObjects({ file, compressors, utf8: false })) as Record<string, unknown>[];
}

function checkAccounting(m: CommitMarker): void {
  for (const v of m.views) {
    const r = v.rows;
    assert.ok(r, `view ${v.name} has its row accounting`);
    assert.equal(r.in, m.records);
    assert.equal(r.in, r.view + r.filtered + r.dlq);
  }
}

function record(id: number, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ id, region: ['eu', 'us', '', null][id % 4], ...extra });
}

void test('the child process writes the same artifacts as the in-process materialiser: markers byte-identical', async () => {
  const views = [
    await compile(REGION_VIEW),
    await compile({ ...REGION_VIEW, name: 'flat', partitioning: [] }),
  ];
  const batches = [
    Array.from({ length: 3000 }, (_, i) => record(i, { pad: 'p'.repeat(i % 50) })),
    // DLQ rows (id not an integer, not JSON), a payload that is not UTF-8, an empty one.
    ['{"id":"x"}', 'not json', '\u00ff\u00fe', '', record(7)],
  ];
  const walA = path.join(root, 'wal-a');
  await writeWal(walA, batches);
  const walB = path.join(root, 'wal-b');
  await cp(walA, walB, { recursive: true });

  const db = await createParquetDb({
    scratchDir: path.join(root, 'inproc'),
    memoryLimitBytes: 128 * MiB,
    threads: 1,
  });
  let a: Delivered;
  try {
    a = await deliver(
      walA,
      path.join(root, 'bucket-a'),
      parquetProducer({ db: () => Promise.resolve(db), views: () => views, raw: true }),
      2,
    );
  } finally {
    await db.close();
  }
  const runner = childRunner();
  const b = await deliver(
    walB,
    path.join(root, 'bucket-b'),
    parquetProducer({ isolated: isolated({ runner }), views: () => views, raw: true }),
    2,
  );
  assert.equal(a.markers.length, 2);
  assert.equal(b.stats.segmentFailuresTotal, 0);
  for (const [i, ma] of a.markers.entries()) {
    checkAccounting(ma);
    assert.ok(ma.artifacts.some((x) => x.kind === 'raw'));
    assert.ok(ma.artifacts.some((x) => x.kind === 'view'));
    assert.equal(encodeCommitMarker(b.markers[i]!).toString(), encodeCommitMarker(ma).toString());
  }
  assert.ok(a.markers[1]!.views.every((v) => (v.rows?.dlq ?? 0) >= 3));
  // One child served both segments; every job's folder is gone, and the child's once it ended.
  assert.equal(runner.children().length, 1);
  assert.equal(runner.children()[0]!.jobsServed, 2);
  assert.deepEqual(await jobFolders(), []);
  await runner.close(0);
  assert.deepEqual(await readdir(path.join(root, 'children')).catch(() => []), []);
});

const fixture = fileURLToPath(new URL('./fixtures/view-rss-child.ts', import.meta.url));
const killerScript = fileURLToPath(new URL('./fixtures/parquet-child-killer.ts', import.meta.url));

/** The in-process materialiser in a child of its own, its RSS watched; killed past `killAboveBytes`. */
function inProcessPeak(
  filter: string,
  records: number,
  killAboveBytes: number,
): Promise<{ peak: number; killed: boolean }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [fixture, filter, String(records)], { stdio: 'ignore' });
    let peak = 0;
    let killed = false;
    const watch = setInterval(() => {
      try {
        const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p.pid}/status`, 'utf8'));
        peak = Math.max(peak, Number(m?.[1] ?? 0) * 1024);
      } catch {
        // exited
      }
      if (peak > killAboveBytes && !killed) {
        killed = true;
        p.kill('SIGKILL');
      }
    }, 20);
    p.on('error', reject);
    p.on('exit', () => {
      clearInterval(watch);
      resolve({ peak, killed });
    });
  });
}

void test('a view whose expression grows each value by a factor: in process it grows without bound; in the child only its rows go to the DLQ, the segment and the next one are committed', async () => {
  // Before: the same filter, materialised in process (DuckDB memory_limit 256
  // MiB), passes 1.5 GiB of RSS and keeps growing (stopped there; unwatched it
  // ran to 4 GiB in 6 s on this machine, and the node was OOM-killed).
  const before = await inProcessPeak(GROWING_VIEW.filter, 20_000, 1536 * MiB);
  console.log(
    `in process: peak RSS ${(before.peak / MiB).toFixed(0)} MiB, killed at the watch bound: ${before.killed}`,
  );
  assert.ok(before.killed, `the in-process materialiser stayed under 1.5 GiB (${before.peak} bytes)`);

  const region = await compile(REGION_VIEW);
  const growing = await compile(GROWING_VIEW);
  const pad = 'p'.repeat(2000);
  const walDir = path.join(root, 'wal');
  await writeWal(walDir, [
    Array.from({ length: 4096 }, (_, i) => record(i, { pad })),
    // The next segment: short values, which the same view handles.
    Array.from({ length: 100 }, (_, i) => record(10_000 + i, { pad: 'p' })),
  ]);
  const d = await deliver(
    walDir,
    path.join(root, 'bucket'),
    parquetProducer({ isolated: isolated(), views: () => [growing, region], raw: true }),
    2,
  );
  assert.equal(d.markers.length, 2);
  assert.equal(d.stats.segmentFailuresTotal, 0, 'no attempt failed: the culprit was found within one');
  const [m1, m2] = d.markers as [CommitMarker, CommitMarker];
  for (const m of d.markers) {
    checkAccounting(m);
    assert.ok(m.artifacts.some((a) => a.kind === 'raw'));
    assert.equal(m.views.find((v) => v.name === 'by_region')?.rows?.view, m.records);
  }
  const g1 = m1.views.find((v) => v.name === 'growing')?.rows;
  assert.equal(g1?.dlq, 4096);
  assert.equal(g1?.dlqByCode?.['view_failed'], 4096);
  assert.equal(m2.views.find((v) => v.name === 'growing')?.rows?.view, 100);
  const rows = [];
  for (const a of m1.artifacts.filter((x) => x.kind === 'dlq' && x.view === 'growing'))
    rows.push(...(await parquetRows(d.store, a.key)));
  assert.equal(rows.length, 4096);
  assert.equal(rows[0]!['error_code'], 'view_failed');
  const message = Buffer.from(rows[0]!['error_message'] as Uint8Array).toString();
  console.log(`view_failed message: ${message}`);
  // Either DuckDB's allocation failed under the limit and the child wrote the
  // DLQ itself, or the child died and a child of its own found the view.
  assert.match(message, /Out of Memory Error|address-space limit/);
  // This process (the node's stand-in) never held the growth.
  const rss = process.resourceUsage().maxRSS * 1024;
  console.log(`this process's peak RSS: ${(rss / MiB).toFixed(0)} MiB`);
  assert.ok(rss < 1024 * MiB, `peak RSS ${rss}`);
});

void test("a view whose child is killed: raw Parquet and each view run in a child of their own; the culprit's rows go to its DLQ as view_failed in the same attempt", async () => {
  const region = await compile(REGION_VIEW);
  const killer = await compile({ ...REGION_VIEW, name: 'killer' });
  const walDir = path.join(root, 'wal');
  await writeWal(walDir, [
    Array.from({ length: 50 }, (_, i) => record(i)),
    Array.from({ length: 5 }, (_, i) => record(100 + i)),
  ]);
  const registry = new Registry();
  const runner = childRunner({ script: killerScript, registry });
  const d = await deliver(
    walDir,
    path.join(root, 'bucket'),
    parquetProducer({ isolated: isolated({ runner }), views: () => [killer, region], raw: true, registry }),
    2,
  );
  assert.equal(d.markers.length, 2);
  assert.equal(d.stats.segmentFailuresTotal, 0);
  for (const m of d.markers) {
    checkAccounting(m);
    assert.ok(m.artifacts.some((a) => a.kind === 'raw'));
    assert.equal(m.views.find((v) => v.name === 'by_region')?.rows?.view, m.records);
    assert.equal(m.views.find((v) => v.name === 'killer')?.rows?.dlqByCode?.['view_failed'], m.records);
    const rows = [];
    for (const a of m.artifacts.filter((x) => x.kind === 'dlq' && x.view === 'killer'))
      rows.push(...(await parquetRows(d.store, a.key)));
    assert.equal(rows.length, m.records);
    assert.match(
      Buffer.from(rows[0]!['error_message'] as Uint8Array).toString(),
      /the materialiser process was killed by SIGKILL under its 2560 MiB address-space limit/,
    );
  }
  // Per segment: the child of all, then the killer's own child.
  const metrics = await registry.metrics();
  assert.match(metrics, /landfall_parquet_child_deaths_total\{stage="all"\} 2/);
  assert.match(metrics, /landfall_parquet_child_deaths_total\{stage="view"\} 2/);
  assert.deepEqual(await jobFolders(), []);
});

void test('a record that makes DuckDB raise an INTERNAL error (it invalidates the database): only that view of that segment is view_failed; the segment and the next one are delivered', async () => {
  // date_part with a specifier from the data: 'epoch' has no ICU extractor for a TIMESTAMPTZ.
  const dp = await compile({
    name: 'dp',
    columns: [
      { name: 'unit', type: 'VARCHAR', path: '$.unit' },
      { name: 'ts', type: 'TIMESTAMPTZ', path: '$.ts', required: true },
    ],
    partitioning: [{ expression: "date_part(coalesce(unit, 'year'), ts)", alias: 'part' }],
  });
  const region = await compile(REGION_VIEW);
  const good = (i: number): string =>
    JSON.stringify({ id: i, region: 'eu', unit: 'year', ts: '2026-11-26T10:00:00Z' });
  const walDir = path.join(root, 'wal');
  await writeWal(walDir, [
    [
      ...Array.from({ length: 29 }, (_, i) => good(i)),
      '{"id":99,"unit":"epoch","ts":"2026-11-26T10:00:00Z"}',
    ],
    Array.from({ length: 10 }, (_, i) => good(100 + i)),
  ]);
  const d = await deliver(
    walDir,
    path.join(root, 'bucket'),
    parquetProducer({ isolated: isolated(), views: () => [dp, region], raw: true }),
    2,
  );
  assert.equal(d.markers.length, 2);
  assert.equal(d.stats.segmentFailuresTotal, 0, 'no attempt failed outside the data');
  const [first, second] = d.markers;
  for (const m of d.markers) {
    checkAccounting(m);
    assert.ok(m.artifacts.some((a) => a.kind === 'raw'));
    assert.equal(m.views.find((v) => v.name === 'by_region')?.rows?.view, m.records);
  }
  assert.equal(first!.views.find((v) => v.name === 'dp')?.rows?.dlqByCode?.['view_failed'], 30);
  assert.equal(second!.views.find((v) => v.name === 'dp')?.rows?.view, 10);
  assert.deepEqual(await jobFolders(), []);
});

void test('records that cannot be loaded under the limit: retried a bounded number of times, then delivered without raw Parquet; the next segment flows', async () => {
  const region = await compile(REGION_VIEW);
  const walDir = path.join(root, 'wal');
  await writeWal(walDir, [[record(1), record(2)], [record(3)]]);
  // A child that dies whatever it is asked stands for records whose load
  // alone exceeds the limit (the script exists and starts, then dies).
  const script = path.join(root, 'dies.ts');
  const fh = await open(script, 'w');
  await fh.writeFile(
    "process.stdout.write('{\"started\":true}\\n'); process.stdin.once('data', () => process.kill(process.pid, 'SIGKILL'));\n",
  );
  await fh.close();
  const runner = childRunner({ script });
  const d = await deliver(
    walDir,
    path.join(root, 'bucket'),
    parquetProducer({ isolated: isolated({ runner, loadFailuresMax: 3 }), views: () => [region], raw: true }),
    2,
  );
  assert.equal(d.markers.length, 2);
  // Two failed attempts per segment, the third delivers.
  assert.equal(d.stats.segmentFailuresTotal, 4);
  for (const m of d.markers) {
    assert.ok(
      m.artifacts.some((a) => a.kind === 'segment'),
      'the archive holds every record',
    );
    assert.equal(m.artifacts.filter((a) => a.kind !== 'segment').length, 0);
    assert.deepEqual(
      m.views.map((v) => [v.name, v.rows]),
      [['by_region', undefined]],
    );
  }
});

void test('a corrupt segment read in the child is quarantined, not delivered', async () => {
  const region = await compile(REGION_VIEW);
  const walDir = path.join(root, 'wal');
  await writeWal(walDir, [[record(1), record(2)], [record(3)]]);
  const files = (await readdir(walDir)).filter((f) => f.endsWith('.wal')).sort();
  // Flip a payload byte of the first segment: its frame CRC no longer matches.
  const fh = await open(path.join(walDir, files[0]!), 'r+');
  const { size } = await fh.stat();
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, size - 8);
  b[0] = b[0]! ^ 0xff;
  await fh.write(b, 0, 1, size - 8);
  await fh.close();
  // Only the Parquet producer reads the segment here: the child must find the defect itself.
  const parquet = parquetProducer({ isolated: isolated(), views: () => [region], raw: true });
  const wal = await openTestWal(walDir);
  const store = new LocalFolderObjectStore({ root: path.join(root, 'bucket') });
  let quarantined = 0;
  const pipeline = await startPipeline({
    wal,
    store,
    prefix,
    endpoint,
    instance,
    scratchDir: path.join(root, 'scratch'),
    producers: [parquet],
    retry: { attemptsMax: 1, retryDelayMsBase: 1, retryDelayMsMax: 1 },
    segmentRetryDelayMsMax: 50,
    staleUploadAgeMs: 0,
    onEvent: (e) => {
      if (e.type === 'quarantined') quarantined++;
    },
  });
  try {
    while (pipeline.stats().segmentsDeliveredTotal + quarantined < 2) {
      assert.ok(pipeline.stats().segmentFailuresTotal < 20, JSON.stringify(pipeline.stats().lastError));
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(quarantined, 1);
    assert.equal(pipeline.stats().segmentsDeliveredTotal, 1);
  } finally {
    await pipeline.stop();
    await wal.close();
  }
});

/** Niceness of every thread of a process (/proc/<pid>/task/<tid>/stat, field 19). */
async function threadNiceness(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    const s = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    // Fields from 3 on follow the last ') '; field 19 is the 17th of them.
    out.push(Number(s.slice(s.lastIndexOf(') ') + 2).split(' ')[16]));
  }
  return out;
}

void test('one long-lived child serves the segments at a lower CPU priority: every thread, DuckDB’s included, at the node’s niceness + views.processNice', async () => {
  const region = await compile(REGION_VIEW);
  const walDir = path.join(root, 'wal');
  await writeWal(walDir, [[record(1), record(2)], [record(3)], [record(4)]]);
  const registry = new Registry();
  const runner = childRunner({ nice: 7, threads: 3, registry });
  const d = await deliver(
    walDir,
    path.join(root, 'bucket'),
    parquetProducer({ isolated: isolated({ runner }), views: () => [region], raw: true }),
    3,
  );
  assert.equal(d.markers.length, 3);
  const [child] = runner.children();
  assert.ok(child);
  assert.equal(runner.children().length, 1);
  assert.equal(child.jobsServed, 3);
  assert.equal(child.state, 'idle');
  const expected = Math.min(19, getPriority() + 7);
  const nice = await threadNiceness(child.pid);
  console.log(`child ${child.pid}: ${nice.length} threads, niceness ${[...new Set(nice)].join(',')}`);
  // Node's own threads, the libuv pool and DuckDB's 3 threads.
  assert.ok(nice.length >= 4, `${nice.length} threads`);
  assert.deepEqual(
    nice.filter((n) => n !== expected),
    [],
  );
  const metrics = await registry.metrics();
  assert.match(metrics, /landfall_parquet_child_starts_total 1\n/);
  assert.match(metrics, /landfall_parquet_child_jobs_total 3\n/);
  await runner.close(0);
  assert.throws(() => process.kill(child.pid, 0), /ESRCH/);
  assert.match(await registry.metrics(), /landfall_parquet_child_retired_total\{reason="close"\} 1/);
});

void test('children are recycled after jobsPerProcessMax jobs, past their peak-RSS share of the limit, and when idle', async () => {
  const region = await compile(REGION_VIEW);
  const cases: [Partial<ChildRunnerOptions>, string, number, number][] = [
    // The third child is kept: it has served one job.
    [{ jobsPerProcessMax: 2 }, 'jobs', 2, 1],
    // Any child's peak RSS passes a thousandth of its limit: one job each.
    [{ peakRssFractionMax: 0.001 }, 'rss', 3, 3],
  ];
  for (const [i, [overrides, reason, starts, retired]] of cases.entries()) {
    const walDir = path.join(root, `wal-${i}`);
    await writeWal(walDir, [[record(1)], [record(2)], [record(3)]]);
    const registry = new Registry();
    const runner = childRunner({ ...overrides, registry });
    const d = await deliver(
      walDir,
      path.join(root, `bucket-${i}`),
      parquetProducer({ isolated: isolated({ runner }), views: () => [region], raw: true }),
      3,
    );
    assert.equal(d.markers.length, 3);
    assert.equal(d.stats.segmentFailuresTotal, 0);
    const metrics = await registry.metrics();
    assert.match(metrics, new RegExp(`landfall_parquet_child_starts_total ${starts}\\n`), reason);
    assert.match(
      metrics,
      new RegExp(`landfall_parquet_child_retired_total\\{reason="${reason}"\\} ${retired}`),
    );
    assert.match(metrics, /landfall_parquet_child_jobs_total 3\n/);
  }
  const walDir = path.join(root, 'wal-idle');
  await writeWal(walDir, [[record(1)]]);
  const registry = new Registry();
  const runner = childRunner({ idleMsMax: 100, registry });
  await deliver(
    walDir,
    path.join(root, 'bucket-idle'),
    parquetProducer({ isolated: isolated({ runner }), views: () => [region], raw: true }),
    1,
  );
  for (let i = 0; runner.running() > 0; i++) {
    assert.ok(i < 1000, 'the idle child ended');
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.match(await registry.metrics(), /landfall_parquet_child_retired_total\{reason="idle"\} 1/);
  assert.deepEqual(await jobFolders(), []);
});

/** A WAL with the given sealed segments of records; the first segment and its path, the WAL closed. */
async function sealedSegment(
  batches: readonly (readonly string[])[],
): Promise<{ segment: SealedSegment; segmentPath: string }> {
  const walDir = path.join(root, 'wal');
  await writeWal(walDir, batches);
  const wal = await openTestWal(walDir);
  const segment = wal.segment(1n)!;
  const segmentPath = wal.segmentPath(1n);
  await wal.close();
  return { segment, segmentPath };
}

/** A runner request for one view over `seg`. */
function oneViewRequest(
  jobId: string,
  seg: { segment: SealedSegment; segmentPath: string },
  view: CompiledView,
): ChildRequest {
  return {
    jobId,
    segmentPath: seg.segmentPath,
    segment: seg.segment,
    views: [view],
    partitionLimits: {
      filesMax: 100,
      keyBytesBase: { [view.spec.name]: 100 },
      markerEntryBytes: { [view.spec.name]: 300 },
      markerBytes: 1 << 20,
    },
  };
}

/** Records files kept in the children's pools (parquet/records.ts filePool). */
const pooledFiles = (): Promise<string[]> => inChildren('pool');

/** The test harness's poll (test/harness/proc.ts waitFor), 20 s at most. */
const until = (what: string, check: () => Promise<boolean> | boolean): Promise<true> =>
  waitFor(async () => (await check()) || undefined, { what, timeoutMs: 20_000, intervalMs: 20 });

void test('while the WAL volume is low, no child is kept between jobs: idle children end at once, busy ones after their job, and their records pools go with their folders; kept again once it is back', async () => {
  const region = await compile(REGION_VIEW);
  const seg = await sealedSegment([[record(1), record(2), record(3)]]);
  let n = 0;
  const registry = new Registry();
  const runner = childRunner({ registry });
  const job = async (): Promise<void> => {
    const out = await runner.run(oneViewRequest(`job-${n++}`, seg, region));
    assert.equal(out.kind, 'ok');
    if (out.kind === 'ok') await out.release();
  };
  const retiredLow = async (): Promise<number> =>
    Number(
      /landfall_parquet_child_retired_total\{reason="volume_low"\} (\d+)/.exec(
        await registry.metrics(),
      )?.[1] ?? 0,
    );

  await job();
  assert.equal(runner.running(), 1);
  await until('the warm child keeps its records file', async () => (await pooledFiles()).length === 1);

  runner.setVolumeLow(true);
  await until('the idle child ended', () => runner.running() === 0);
  await until(
    'its folder, pool included, was removed',
    async () => (await readdir(path.join(root, 'children'))).length === 0,
  );
  assert.equal(await retiredLow(), 1);

  // A job while low: its child ends once it is answered, its pool with it.
  await job();
  await until('the child ended after its job', () => runner.running() === 0);
  await until('no records file kept', async () => (await readdir(path.join(root, 'children'))).length === 0);
  assert.equal(await retiredLow(), 2);

  runner.setVolumeLow(false);
  await job();
  await job();
  assert.equal(runner.running(), 1);
  assert.equal(runner.children()[0]?.jobsServed, 2);
  await until('the pool is used again', async () => (await pooledFiles()).length === 1);
  assert.equal(await retiredLow(), 2);
  assert.deepEqual(await jobFolders(), []);
});

void test('the blame rule, on the runner: a job whose warm child dies runs once more in a fresh child, whose death is the answer; a fresh child’s death is the answer at once', async () => {
  const region = await compile(REGION_VIEW);
  const killer = await compile({ ...REGION_VIEW, name: 'killer' });
  const seg = await sealedSegment([[record(1), record(2)]]);
  let n = 0;
  const request = (view: CompiledView): ChildRequest => oneViewRequest(`job-${n++}`, seg, view);
  const registry = new Registry();
  const runner = childRunner({ script: killerScript, registry });
  const fresh = await runner.run(request(killer));
  assert.equal(fresh.kind, 'died');
  assert.match(await registry.metrics(), /landfall_parquet_child_reruns_total 0\n/);
  const ok = await runner.run(request(region));
  assert.equal(ok.kind, 'ok');
  await ok.release();
  assert.equal(runner.children()[0]?.jobsServed, 1);
  const warm = await runner.run(request(killer));
  assert.equal(warm.kind, 'died');
  assert.match(warm.reason, /was killed by SIGKILL/);
  const metrics = await registry.metrics();
  assert.match(metrics, /landfall_parquet_child_reruns_total 1\n/);
  // The first job's child, the one that served the region view, and the fresh one of the rerun.
  assert.match(metrics, /landfall_parquet_child_starts_total 3\n/);
  assert.deepEqual(await jobFolders(), []);
});

void test('a warm child killed mid-job (its own history, not the data): the job runs again in a fresh child and succeeds; no view is blamed', async () => {
  const stall = await compile({ ...REGION_VIEW, name: 'stall_once' });
  const walDir = path.join(root, 'wal');
  await writeWal(walDir, [
    Array.from({ length: 20 }, (_, i) => record(i)),
    Array.from({ length: 30 }, (_, i) => record(100 + i)),
  ]);
  const stallFile = path.join(root, 'stalled.pid');
  process.env['LANDFALL_TEST_STALL_FILE'] = stallFile;
  const registry = new Registry();
  const runner = childRunner({ script: killerScript, registry });
  // The second segment's job stalls in the child that served the first; kill it then.
  let killed: number | undefined;
  const killer = (async () => {
    for (let i = 0; i < 3000 && killed === undefined; i++) {
      try {
        killed = Number(readFileSync(stallFile, 'utf8'));
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    assert.ok(killed !== undefined && killed > 0, 'the warm child stalled');
    assert.equal(runner.children()[0]?.pid, killed);
    assert.equal(runner.children()[0]?.jobsServed, 1);
    process.kill(killed, 'SIGKILL');
  })();
  try {
    // Together: if the killer fails, the stalled job would otherwise keep delivery waiting.
    const [d] = await Promise.all([
      deliver(
        walDir,
        path.join(root, 'bucket'),
        parquetProducer({ isolated: isolated({ runner }), views: () => [stall], raw: true, registry }),
        2,
      ),
      killer,
    ]);
    assert.equal(d.markers.length, 2);
    assert.equal(d.stats.segmentFailuresTotal, 0);
    for (const m of d.markers) {
      checkAccounting(m);
      assert.ok(m.artifacts.some((a) => a.kind === 'raw'));
      assert.equal(m.views[0]?.rows?.view, m.records);
      assert.equal(m.views[0]?.rows?.dlq, 0);
    }
    const metrics = await registry.metrics();
    assert.match(metrics, /landfall_parquet_child_reruns_total 1\n/);
    assert.match(metrics, /landfall_parquet_child_starts_total 2\n/);
    assert.doesNotMatch(metrics, /landfall_parquet_child_deaths_total\{/);
    assert.deepEqual(await jobFolders(), []);
  } finally {
    delete process.env['LANDFALL_TEST_STALL_FILE'];
  }
});

void test('a view that fails inside a warm child (written as view_failed there): the job runs again in a fresh child, whose outcome counts', async () => {
  const flaky = await compile({ ...REGION_VIEW, name: 'fails_when_warm' });
  const walDir = path.join(root, 'wal');
  await writeWal(walDir, [[record(1), record(2)], [record(3)]]);
  const registry = new Registry();
  const runner = childRunner({ script: killerScript, registry });
  const d = await deliver(
    walDir,
    path.join(root, 'bucket'),
    parquetProducer({ isolated: isolated({ runner }), views: () => [flaky], raw: true }),
    2,
  );
  assert.equal(d.markers.length, 2);
  for (const m of d.markers) {
    checkAccounting(m);
    assert.equal(m.views[0]?.rows?.view, m.records);
  }
  const metrics = await registry.metrics();
  assert.match(metrics, /landfall_parquet_child_reruns_total 1\n/);
  assert.match(metrics, /landfall_parquet_child_retired_total\{reason="failed"\} 1/);
  assert.deepEqual(await jobFolders(), []);
});

void test('a job that outlives views.processJobTimeoutMs: its child is killed, a death on the data; the view that hangs gets view_failed, the rest is delivered', async () => {
  const region = await compile(REGION_VIEW);
  const hang = await compile({ ...REGION_VIEW, name: 'hang' });
  const walDir = path.join(root, 'wal');
  await writeWal(walDir, [Array.from({ length: 10 }, (_, i) => record(i))]);
  const registry = new Registry();
  // Generous for the small jobs here, tiny beside the 10 min default.
  const runner = childRunner({ script: killerScript, jobTimeoutMs: 5_000, registry });
  const d = await deliver(
    walDir,
    path.join(root, 'bucket'),
    parquetProducer({ isolated: isolated({ runner }), views: () => [hang, region], raw: true, registry }),
    1,
  );
  assert.equal(d.markers.length, 1);
  assert.equal(d.stats.segmentFailuresTotal, 0);
  const m = d.markers[0]!;
  checkAccounting(m);
  assert.ok(m.artifacts.some((a) => a.kind === 'raw'));
  assert.equal(m.views.find((v) => v.name === 'by_region')?.rows?.view, 10);
  assert.equal(m.views.find((v) => v.name === 'hang')?.rows?.dlqByCode?.['view_failed'], 10);
  const rows = [];
  for (const a of m.artifacts.filter((x) => x.kind === 'dlq' && x.view === 'hang'))
    rows.push(...(await parquetRows(d.store, a.key)));
  assert.match(
    Buffer.from(rows[0]!['error_message'] as Uint8Array).toString(),
    /ran longer than views.processJobTimeoutMs \(5000 ms\)/,
  );
  const metrics = await registry.metrics();
  // All views at once, then the hanging view alone (in a warm child: a hang is not run again).
  assert.match(metrics, /landfall_parquet_child_retired_total\{reason="timeout"\} 2/);
  assert.doesNotMatch(metrics, /landfall_parquet_child_reruns_total [1-9]/);
});

void test('a child that never comes up is killed after startTimeoutMs: the start fails outside the data (MATERIALIZER_START), nothing is left running', async () => {
  const silent = path.join(root, 'silent-child.mjs');
  // Neither the started line nor an exit: a child stuck before DuckDB is up.
  await writeFile(silent, 'setInterval(() => {}, 1000);\n');
  const seg = await sealedSegment([[record(1)]]);
  const view = await compile(REGION_VIEW);
  const runner = childRunner({ script: silent, startTimeoutMs: 500 });
  await assert.rejects(
    runner.run(oneViewRequest('never-up', seg, view)),
    (e: unknown) =>
      e instanceof MaterializerError && e.code === 'MATERIALIZER_START' && /within 500 ms/.test(e.message),
  );
  assert.equal(runner.running(), 0);
});
