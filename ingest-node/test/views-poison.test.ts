// Issue 14, the view half: record data must never stop delivery. Each case is
// a segment whose records are fine as records but awkward for a view's
// partitions: on the real WAL, the real delivery pipeline and the local
// folder store, the segment and the one sealed after it must both be
// committed, and what the view could not place must be in its DLQ under its
// own code. Before the fix each of these retried the first segment forever
// (and every later marker waited behind it).
import { afterEach, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { systemClock } from '../src/clock.ts';
import { NodeFileSystem } from '../src/fs/node.ts';
import { silentLogger } from '../src/log.ts';
import { parseCommitKey } from '../src/delivery/keys.ts';
import { markerBytesMax, readCommitMarker, type CommitMarker } from '../src/delivery/marker.ts';
import { parquetProducer } from '../src/delivery/parquet-producers.ts';
import { startPipeline } from '../src/delivery/pipeline.ts';
import { segmentArchiveProducer } from '../src/delivery/producers.ts';
import { LocalFolderObjectStore } from '../src/store/local.ts';
import {
  compileView,
  createParquetDb,
  validateView,
  type CompiledView,
  type ParquetDb,
} from '../src/views/index.ts';
import { escapeHiveValue } from '../src/delivery/keys.ts';
import { levelBytesSql } from '../src/views/materialize.ts';
import { openWal } from '../src/wal/wal.ts';
import { RecordFormat } from '../src/wal/types.ts';

const prefix = 'lf';
const endpoint = 'web';
const instance = 'web-0';

let root: string;
let db: ParquetDb | undefined;

beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'lf-views-poison-'));
});
afterEach(async () => {
  await db?.close();
  db = undefined;
  await rm(root, { recursive: true, force: true });
});

/** A view partitioned on the payload's `region`, as written. */
const REGION_VIEW = {
  name: 'by_region',
  columns: [
    { name: 'id', type: 'INTEGER', path: '$.id', required: true },
    { name: 'region', type: 'VARCHAR', path: '$.region' },
  ],
  partitioning: [{ expression: 'region', alias: 'r' }],
};

interface Delivered {
  markers: CommitMarker[];
  store: LocalFolderObjectStore;
  failures: number;
}

/**
 * Appends each batch as its own sealed segment, through the real pipeline,
 * and waits (bounded) for every segment's marker. A stalled segment fails the
 * test with the pipeline's last error instead of hanging.
 */
async function deliver(
  batches: readonly (readonly string[])[],
  view: object = REGION_VIEW,
  producerOptions: Record<string, unknown> = {},
  viewsOf: (compiled: CompiledView) => CompiledView[] = (c) => [c],
): Promise<Delivered> {
  const wal = await openWal({
    dir: path.join(root, 'wal'),
    endpoint,
    instance,
    fs: new NodeFileSystem(),
    clock: systemClock,
    log: silentLogger,
    segmentAgeMsMax: 3_600_000,
  });
  const store = new LocalFolderObjectStore({ root: path.join(root, 'bucket') });
  const pdb = async (): Promise<ParquetDb> =>
    (db ??= await createParquetDb({
      scratchDir: path.join(root, 'parquet'),
      memoryLimitBytes: 128 << 20,
      threads: 1,
    }));
  const compiled = await (await pdb()).withConnection((c) => compileView(c, validateView(view)));
  const pipeline = await startPipeline({
    wal,
    store,
    prefix,
    endpoint,
    instance,
    scratchDir: path.join(root, 'scratch'),
    producers: [
      segmentArchiveProducer(),
      parquetProducer({ db: pdb, views: () => viewsOf(compiled), raw: true, ...producerOptions }),
    ],
    retry: { attemptsMax: 1, retryDelayMsBase: 1, retryDelayMsMax: 1 },
    segmentRetryDelayMsMax: 50,
    staleUploadAgeMs: 0,
  });
  try {
    for (const batch of batches) {
      await wal.append(
        batch.map((p) => Buffer.from(p)),
        RecordFormat.ndjson,
      );
      await wal.seal();
    }
    // A stall is a segment that keeps failing: with retries every ≤ 50 ms, 20
    // failed attempts without a delivery between them is one, whatever the
    // machine's speed. The wall-clock bound only keeps a hang from lasting
    // forever; a slow disk (thousands of files, each fsynced) stays under it.
    const deadline = performance.now() + 600_000;
    let delivered = 0;
    let failuresAtLastDelivery = 0;
    while (pipeline.stats().segmentsDeliveredTotal < batches.length) {
      const s = pipeline.stats();
      if (s.segmentsDeliveredTotal > delivered) {
        delivered = s.segmentsDeliveredTotal;
        failuresAtLastDelivery = s.segmentFailuresTotal;
      }
      if (s.segmentFailuresTotal - failuresAtLastDelivery >= 20 || performance.now() > deadline)
        assert.fail(
          `${s.segmentsDeliveredTotal} of ${batches.length} segments delivered; stalled on ${JSON.stringify(s.lastError)}`,
        );
      await new Promise((r) => setTimeout(r, 20));
    }
    const failures = pipeline.stats().segmentFailuresTotal;
    const listed = await store.list({ prefix: `${prefix}/commits/` });
    const markers: CommitMarker[] = [];
    for (const o of listed.objects) {
      const m = await readCommitMarker(store, prefix, parseCommitKey(prefix, o.key));
      assert.ok(m);
      markers.push(m);
    }
    return { markers, store, failures };
  } finally {
    await pipeline.stop();
    await wal.close();
  }
}

async function parquetRows(store: LocalFolderObjectStore, key: string): Promise<Record<string, unknown>[]> {
  const body = await store.get(key, { bytesMax: 256 << 20 });
  assert.ok(body, `${key} exists`);
  const file = body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength) as ArrayBuffer;
  return (await parquetReadObjects({ file, compressors, utf8: false })) as Record<string, unknown>[];
}

function viewKeys(m: CommitMarker): string[] {
  const stem = `${instance}-${m.epoch}-${m.segmentId.toString().padStart(20, '0')}`;
  return m.artifacts
    .filter((a) => a.kind === 'view')
    .map((a) => a.key.replace(`${prefix}/views/by_region/`, '').replace(`/${stem}.parquet`, ''))
    .sort();
}

async function dlqRows(
  d: Delivered,
  m: CommitMarker,
): Promise<{ id: number; code: string; column: unknown; message: string }[]> {
  const out: { id: number; code: string; column: unknown; message: string }[] = [];
  for (const a of m.artifacts.filter((x) => x.kind === 'dlq'))
    for (const r of await parquetRows(d.store, a.key))
      out.push({
        id: (JSON.parse(Buffer.from(r['payload'] as Uint8Array).toString()) as { id: number }).id,
        code: r['error_code'] as string,
        column: r['column'],
        message: Buffer.from(r['error_message'] as Uint8Array).toString(),
      });
  return out.sort((a, b) => a.id - b.id);
}

function checkAccounting(m: CommitMarker): void {
  for (const v of m.views) {
    const r = v.rows;
    assert.ok(r);
    assert.equal(r.in, m.records);
    assert.equal(r.in, r.view + r.filtered + r.dlq);
  }
}

void test('"" and a missing value are two partitions, the literal default-partition name a third; nothing stalls', async () => {
  const d = await deliver([
    [
      '{"id":1,"region":""}',
      '{"id":2}',
      '{"id":3,"region":null}',
      '{"id":4,"region":"__HIVE_DEFAULT_PARTITION__"}',
      '{"id":5,"region":"eu"}',
      '{"id":6,"region":"__x"}',
    ],
    ['{"id":7,"region":"eu"}'],
  ]);
  assert.equal(d.markers.length, 2, 'both segments committed');
  assert.equal(d.failures, 0, 'no attempt failed');
  const [m1, m2] = d.markers as [CommitMarker, CommitMarker];
  checkAccounting(m1);
  assert.deepEqual(viewKeys(m1), [
    'r=%5F_HIVE_DEFAULT_PARTITION__',
    'r=%5F_x',
    'r=__HIVE_DEFAULT_PARTITION__',
    'r=__LANDFALL_EMPTY__',
    'r=eu',
  ]);
  // Each key holds exactly its own rows.
  const byKey = new Map<string, number[]>();
  for (const a of m1.artifacts.filter((x) => x.kind === 'view'))
    byKey.set(
      /r=([^/]+)\//.exec(a.key)![1]!,
      (await parquetRows(d.store, a.key)).map((r) => Number(r['id'])).sort(),
    );
  assert.deepEqual(Object.fromEntries(byKey), {
    '%5F_HIVE_DEFAULT_PARTITION__': [4],
    '%5F_x': [6],
    __HIVE_DEFAULT_PARTITION__: [2, 3],
    __LANDFALL_EMPTY__: [1],
    eu: [5],
  });
  assert.deepEqual(viewKeys(m2), ['r=eu']);
});

void test('a partition value longer than a key allows goes to the DLQ (ASCII and CJK); the rest of the segment and the next one are committed', async () => {
  const ascii = 'a'.repeat(300);
  const cjk = '漢'.repeat(30);
  const fits = 'b'.repeat(200);
  const d = await deliver([
    [
      JSON.stringify({ id: 1, region: ascii }),
      JSON.stringify({ id: 2, region: cjk }),
      JSON.stringify({ id: 3, region: 'eu' }),
      JSON.stringify({ id: 4, region: fits }),
    ],
    ['{"id":5,"region":"eu"}'],
  ]);
  assert.equal(d.markers.length, 2);
  assert.equal(d.failures, 0);
  const m1 = d.markers[0]!;
  checkAccounting(m1);
  assert.deepEqual(viewKeys(m1), [`r=${fits}`, 'r=eu']);
  assert.deepEqual(m1.views[0]?.rows?.dlqByCode?.['partition_value_too_long'], 2);
  const dlq = await dlqRows(d, m1);
  assert.deepEqual(
    dlq.map((r) => [r.id, r.code, r.column]),
    [
      [1, 'partition_value_too_long', 'r'],
      [2, 'partition_value_too_long', 'r'],
    ],
  );
  assert.match(dlq[0]!.message, /byte/);
});

void test('a segment with more partitions than views.partitionFilesMax: the excess rows go to the DLQ', async () => {
  const rows = Array.from({ length: 40 }, (_, i) => JSON.stringify({ id: i, region: `p${i % 10}` }));
  // p0 has 4 rows like every other: the 3 kept are the first in value order.
  const d = await deliver([rows, ['{"id":100,"region":"eu"}']], REGION_VIEW, { partitionFilesMax: 3 });
  assert.equal(d.markers.length, 2);
  const m1 = d.markers[0]!;
  checkAccounting(m1);
  assert.deepEqual(viewKeys(m1), ['r=p0', 'r=p1', 'r=p2']);
  assert.equal(m1.views[0]?.rows?.view, 12);
  assert.equal(m1.views[0]?.rows?.dlqByCode?.['too_many_partitions'], 28);
  const dlq = await dlqRows(d, m1);
  assert.equal(dlq.length, 28);
  assert.ok(dlq.every((r) => r.code === 'too_many_partitions' && r.column === 'r'));
});

void test('partitions whose artifacts would make the marker exceed 4 MiB: the marker stays under its cap, the rest goes to the DLQ', async () => {
  // Four levels of ~240 bytes: a ~1 KiB key, ~1.2 KiB of marker per view file; 4,000 of them are ~4.7 MiB.
  const n = 4_000;
  const long = (c: string, i: number): string => `${c.repeat(222)}${i.toString().padStart(6, '0')}`;
  const rows = Array.from({ length: n }, (_, i) =>
    JSON.stringify({ id: i, a: long('a', i), b: long('b', i), c: long('c', i), d: long('d', i) }),
  );
  const wide = {
    name: 'by_region',
    columns: [
      { name: 'id', type: 'INTEGER', path: '$.id', required: true },
      ...['a', 'b', 'c', 'd'].map((x) => ({ name: x, type: 'VARCHAR', path: `$.${x}` })),
    ],
    partitioning: ['a', 'b', 'c', 'd'].map((x) => ({ expression: x, alias: `p${x}` })),
  };
  const d = await deliver([rows, [JSON.stringify({ id: -1, a: 'x', b: 'y', c: 'z', d: 'w' })]], wide, {
    partitionFilesMax: 100_000,
  });
  assert.equal(d.markers.length, 2);
  const m1 = d.markers[0]!;
  checkAccounting(m1);
  const views = m1.artifacts.filter((a) => a.kind === 'view').length;
  const dropped = m1.views[0]?.rows?.dlqByCode?.['too_many_partitions'] ?? 0;
  assert.ok(
    views > 1000 && dropped > 0,
    `${views} view files, ${dropped} rows to the DLQ: ${JSON.stringify(m1.views[0]?.rows)}`,
  );
  assert.equal(views + dropped, n);
  const body = await d.store.get(
    `${prefix}/commits/${endpoint}/${instance}/${m1.epoch}/${m1.segmentId.toString().padStart(20, '0')}.json`,
    { bytesMax: markerBytesMax },
  );
  assert.ok(body !== null && body.length <= markerBytesMax);
  console.log(
    `${views} view files kept, ${dropped} rows to the DLQ, marker ${body.length} bytes of ${markerBytesMax}`,
  );
});

void test('a view that raises on a segment: every row of it goes to its DLQ as view_failed; other views and the next segment are delivered', async () => {
  const d = await deliver(
    [['{"id":1,"region":"eu"}', '{"id":2,"region":"us"}'], ['{"id":3,"region":"eu"}']],
    REGION_VIEW,
    {},
    (c) => [
      // A failure no row-level try() catches, standing for any error a view
      // can raise on some data (an internal limit, an allocation): it must not hold delivery.
      {
        ...c,
        spec: { ...c.spec, name: 'broken' },
        sql: c.sql.replace(
          "ELSE 'ok' END AS __lf_status",
          "ELSE error('injected: the view raised') END AS __lf_status",
        ),
        // The first pass settles fine rows without `sql`: it raises too.
        fastSql: c.fastSql?.replace(
          "ELSE 'ok' END AS __lf_status",
          "ELSE error('injected: the view raised') END AS __lf_status",
        ),
      },
      c,
    ],
  );
  assert.equal(d.markers.length, 2);
  assert.equal(d.failures, 0);
  for (const m of d.markers) {
    checkAccounting(m);
    const broken = m.views.find((v) => v.name === 'broken');
    assert.equal(broken?.rows?.dlq, m.records);
    assert.equal(broken?.rows?.dlqByCode?.['view_failed'], m.records);
    assert.equal(m.views.find((v) => v.name === 'by_region')?.rows?.view, m.records);
  }
  const m1 = d.markers[0]!;
  const rows = [];
  for (const a of m1.artifacts.filter((x) => x.kind === 'dlq' && x.view === 'broken'))
    rows.push(...(await parquetRows(d.store, a.key)));
  assert.deepEqual(
    rows.map((r) => [Buffer.from(r['payload'] as Uint8Array).toString(), r['error_code']]).sort(),
    [
      ['{"id":1,"region":"eu"}', 'view_failed'],
      ['{"id":2,"region":"us"}', 'view_failed'],
    ],
  );
  assert.match(Buffer.from(rows[0]!['error_message'] as Uint8Array).toString(), /injected: the view raised/);
});

void test("a timestamp past the range ICU can cast (it raises even under TRY_CAST) is that row's cast_failed, not the whole segment's view_failed", async () => {
  const far = '294247-01-10T04:00:54.775806';
  const good = (i: number): string =>
    JSON.stringify({ id: i, at: '2026-11-26T10:00:00+02:00', tz: '2026-11-26T10:00:00Z' });
  for (const [column, bad] of [
    ['at', JSON.stringify({ id: 99, at: far, tz: '2026-11-26T10:00:00Z' })],
    ['tz', JSON.stringify({ id: 99, at: '2026-11-26T10:00:00+02:00', tz: far })],
  ] as const) {
    const d = await deliver([[...Array.from({ length: 20 }, (_, i) => good(i)), bad], [good(100)]], {
      name: `times_${column}`,
      columns: [
        { name: 'id', type: 'INTEGER', path: '$.id', required: true },
        { name: 'at', type: 'TIMESTAMP', path: '$.at' },
        { name: 'tz', type: 'TIMESTAMPTZ', path: '$.tz' },
      ],
    });
    assert.equal(d.markers.length, 2);
    assert.equal(d.failures, 0);
    for (const m of d.markers) checkAccounting(m);
    const rows = d.markers[0]!.views[0]!.rows!;
    assert.equal(rows.view, 20, column);
    assert.deepEqual(
      Object.entries(rows.dlqByCode ?? {}).filter(([, n]) => n > 0),
      [['cast_failed', 1]],
      column,
    );
    await rm(path.join(root, 'wal'), { recursive: true, force: true });
    await rm(path.join(root, 'bucket'), { recursive: true, force: true });
  }
});

void test('the key-level length the materialiser computes in SQL is the one delivery/keys.ts makes', async () => {
  const pdb = (db = await createParquetDb({ memoryLimitBytes: 64 << 20, threads: 1 }));
  const values: (string | null)[] = [
    null,
    '',
    '__',
    '_',
    '__x',
    '__HIVE_DEFAULT_PARTITION__',
    'a/b c',
    '漢字',
    'é',
    '..',
    '%2F',
  ];
  let seed = 7;
  const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  const alphabet = ['a', 'Z', '0', '_', '-', '.', '/', '=', '%', ' ', ':', 'ü', '漢', '😀', '\t'];
  for (let i = 0; i < 300; i++)
    values.push(Array.from({ length: rnd(12) }, () => alphabet[rnd(alphabet.length)]).join(''));
  const got = await pdb.withConnection(async (c) => {
    const rows = [];
    for (const v of values) {
      const r = await c.runAndReadAll(`SELECT ${levelBytesSql('alias', '$1::VARCHAR')}`, [v]);
      rows.push(Number(r.getRows()[0]![0]));
    }
    return rows;
  });
  assert.deepEqual(
    got,
    values.map((v) => Buffer.byteLength(`alias=${escapeHiveValue(v)}`)),
  );
});
