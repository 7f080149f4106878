// `landfall reprocess` on the local folder store: segments delivered with a
// view whose JSONPath is wrong (every row in the DLQ) are rebuilt with the
// fixed view: view files appear at the node's keys, the DLQ key that no
// longer has rows holds a 0-row file, the manifest records it all, the
// commit markers are untouched, and running it again writes the same keys.
// The MinIO / real-CLI version is test/e2e/reprocess.test.ts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { systemClock } from '../src/clock.ts';
import { run, reprocessKey, readManifest, type ReprocessManifest } from '../src/commands/reprocess.ts';
import { commitKey, parseCommitKey, type SegmentRef } from '../src/delivery/keys.ts';
import { parquetProducer } from '../src/delivery/parquet-producers.ts';
import { startPipeline } from '../src/delivery/pipeline.ts';
import { segmentArchiveProducer } from '../src/delivery/producers.ts';
import { NodeFileSystem } from '../src/fs/node.ts';
import { silentLogger } from '../src/log.ts';
import { LocalFolderObjectStore } from '../src/store/local.ts';
import { compileView, createParquetDb, parseViewYaml, type ParquetDb } from '../src/views/index.ts';
import { openWal } from '../src/wal/wal.ts';
import { RecordFormat } from '../src/wal/types.ts';
import { writeFile } from 'node:fs/promises';
import { PAGE_VIEWS_YAML } from './fixtures/page-views.ts';

const FIXED = PAGE_VIEWS_YAML;
// The typo: $.timestamp instead of $.ts, so every page_view misses a required value.
const WRONG = FIXED.replace('path: $.ts,', 'path: $.timestamp,');
const prefix = 'lf';
const endpoint = 'web';
const instance = 'web-0';

let root: string;
let bucket: string;
let store: LocalFolderObjectStore;
let refs: SegmentRef[];
let fixedFile: string;
const sent: string[][] = [
  [
    '{"event":"page_view","user":"u1","ts":"2026-11-26T10:00:00Z"}',
    '{"event":"click","user":"u2","ts":"2026-11-26T10:00:01Z"}',
    '{"event":"page_view","user":"u3","ts":"2026-11-27T09:00:00Z"}',
  ],
  ['{"event":"page_view","user":"u4","ts":"2026-11-27T10:00:00Z"}', 'not json'],
];

before(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'lf-reprocess-'));
  bucket = path.join(root, 'bucket');
  store = new LocalFolderObjectStore({ root: bucket });
  fixedFile = path.join(root, 'page_views.yaml');
  await writeFile(fixedFile, FIXED);
  const wal = await openWal({
    dir: path.join(root, 'wal'),
    endpoint,
    instance,
    fs: new NodeFileSystem(),
    clock: systemClock,
    log: silentLogger,
    segmentAgeMsMax: 3_600_000,
  });
  const db: ParquetDb = await createParquetDb({
    scratchDir: path.join(root, 'parquet'),
    memoryLimitBytes: 64 << 20,
    threads: 1,
  });
  const wrong = await db.withConnection((c) => compileView(c, parseViewYaml(WRONG)));
  const pipeline = await startPipeline({
    wal,
    store,
    prefix,
    endpoint,
    instance,
    scratchDir: path.join(root, 'scratch'),
    producers: [
      segmentArchiveProducer(),
      parquetProducer({ db: () => Promise.resolve(db), views: () => [wrong], raw: false }),
    ],
    staleUploadAgeMs: 0,
  });
  try {
    for (const batch of sent) {
      await wal.append(
        batch.map((p) => Buffer.from(p)),
        RecordFormat.ndjson,
      );
      await wal.seal();
    }
    await pipeline.idle();
  } finally {
    await pipeline.stop();
    await wal.close();
    await db.close();
  }
  const listed = await store.list({ prefix: `${prefix}/commits/` });
  refs = listed.objects.map((o) => parseCommitKey(prefix, o.key));
  assert.equal(refs.length, 2);
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function reprocess(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await run(
    [
      '--view',
      fixedFile,
      '--endpoint-name',
      endpoint,
      '--local',
      bucket,
      '--prefix',
      prefix,
      '--threads',
      '1',
      '--memory-mb',
      '64',
      ...args,
    ],
    { out: (t) => (out += t), err: (t) => (err += t), env: {} },
  );
  return { code, out, err };
}

async function rows(key: string): Promise<Record<string, unknown>[]> {
  const body = await store.get(key, { bytesMax: 64 << 20 });
  assert.ok(body, `${key} exists`);
  const file = body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength) as ArrayBuffer;
  return (await parquetReadObjects({ file, compressors })) as Record<string, unknown>[];
}

const stem = (ref: SegmentRef): string =>
  `${ref.instance}-${ref.epoch}-${ref.segmentId.toString().padStart(20, '0')}`;

void test('the wrong view sent every page_view to the DLQ', async () => {
  for (const ref of refs) {
    const marker = await store.get(commitKey(prefix, ref));
    const m = JSON.parse(marker!.toString()) as {
      artifacts: { kind: string }[];
      views: { rows: { view: number } }[];
    };
    assert.equal(m.artifacts.filter((a) => a.kind === 'view').length, 0);
    assert.equal(m.views[0]!.rows.view, 0);
  }
});

void test('a dry run counts and uploads nothing', async () => {
  const r = await reprocess('--dry-run');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /would rebuild .*: in 3, view 2, filtered 1, dlq 0\n/);
  assert.equal(await store.head(reprocessKey(prefix, 'page_views', refs[0]!)), null);
  assert.equal((await store.list({ prefix: `${prefix}/views/` })).objects.length, 0);
});

void test('reprocess with the fixed view: view rows at the node keys, emptied DLQ, a manifest; markers untouched', async () => {
  const markersBefore = await Promise.all(refs.map((r) => store.get(commitKey(prefix, r))));
  const r = await reprocess();
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out.trim().split('\n').length, 2);
  assert.match(r.err, /reprocess: 2 segments, 5 rows in → 3 view, 1 filtered, 1 DLQ; 4 files, 1 emptied/);
  const [a, b] = refs as [SegmentRef, SegmentRef];
  assert.deepEqual(
    (await rows(`${prefix}/views/page_views/dt=2026-11-26/${stem(a)}.parquet`)).map((x) => x['user_id']),
    ['u1'],
  );
  assert.deepEqual(
    (await rows(`${prefix}/views/page_views/dt=2026-11-27/${stem(a)}.parquet`)).map((x) => x['user_id']),
    ['u3'],
  );
  assert.deepEqual(
    (await rows(`${prefix}/views/page_views/dt=2026-11-27/${stem(b)}.parquet`)).map((x) => x['user_id']),
    ['u4'],
  );
  // Segment a has no DLQ rows any more: its old DLQ key now holds none (b's still has one).
  const today = new Date().toISOString().slice(0, 10);
  assert.deepEqual(await rows(`${prefix}/dlq/page_views/dt=${today}/${stem(a)}.parquet`), []);
  assert.deepEqual(
    (await rows(`${prefix}/dlq/page_views/dt=${today}/${stem(b)}.parquet`)).map((x) => x['error_code']),
    ['invalid_json'],
  );
  const m = (await readManifest(store, reprocessKey(prefix, 'page_views', a))) as ReprocessManifest;
  assert.equal(m.marker, commitKey(prefix, a));
  assert.equal(m.replaces.source, 'marker');
  assert.notEqual(m.replaces.specSha256, m.specSha256);
  assert.deepEqual(m.rows, {
    in: 3,
    view: 2,
    filtered: 1,
    dlq: 0,
    dlqByCode: {
      invalid_json: 0,
      missing_required: 0,
      cast_failed: 0,
      expression_failed: 0,
      partition_value_too_long: 0,
      too_many_partitions: 0,
      view_failed: 0,
    },
  });
  assert.deepEqual(
    m.artifacts.map((x) => [x.kind, x.rows]),
    [
      ['view', 1],
      ['view', 1],
    ],
  );
  assert.deepEqual(
    m.superseded.map((x) => [x.kind, x.key, x.rows]),
    [['dlq', `${prefix}/dlq/page_views/dt=${today}/${stem(a)}.parquet`, 0]],
  );
  const markersAfter = await Promise.all(refs.map((x) => store.get(commitKey(prefix, x))));
  assert.deepEqual(markersAfter, markersBefore, 'commit markers are never rewritten');

  // Again: the same keys, the same rows; the manifest now replaces a reprocess.
  const keysBefore = (await store.list({ prefix: `${prefix}/` })).objects.map((o) => o.key);
  const again = await reprocess();
  assert.equal(again.code, 0, again.err);
  const keysAfter = (await store.list({ prefix: `${prefix}/` })).objects.map((o) => o.key);
  assert.deepEqual(keysAfter, keysBefore);
  const m2 = (await readManifest(store, reprocessKey(prefix, 'page_views', a))) as ReprocessManifest;
  assert.equal(m2.replaces.source, 'reprocess');
  assert.equal(m2.replaces.specSha256, m.specSha256);
  assert.deepEqual(m2.artifacts, m.artifacts);
  assert.deepEqual(m2.superseded, m.superseded, 'the emptied key stays listed');
});

void test('--from/--to select segments by id or marker key', async () => {
  const [a, b] = refs as [SegmentRef, SegmentRef];
  let r = await reprocess('--dry-run', '--from', String(b.segmentId));
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(r.out.trim().split('\n').length, 1);
  assert.match(r.out, new RegExp(commitKey(prefix, b)));
  r = await reprocess('--dry-run', '--to', commitKey(prefix, a));
  assert.deepEqual(r.out.trim().split('\n').length, 1);
  assert.match(r.out, new RegExp(commitKey(prefix, a)));
  r = await reprocess('--dry-run', '--from', commitKey(prefix, a), '--to', commitKey(prefix, b));
  assert.deepEqual(r.out.trim().split('\n').length, 2);
  assert.equal((await reprocess('--from', 'x y')).code, 2);
  assert.equal(
    await run(['--endpoint-name', endpoint, '--local', bucket], { out: () => {}, err: () => {}, env: {} }),
    2,
  );
});
