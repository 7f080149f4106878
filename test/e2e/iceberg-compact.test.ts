// Compaction of a Landfall Iceberg table (ingest-node/src/iceberg/compact.ts,
// `landfall iceberg compact`) against the real REST catalog (Apache Iceberg's
// RESTCatalogServer, S3FileIO on MinIO), checked by PyIceberg (from PyPI, not
// our code): same rows (count and a checksum of the sorted rows, also read at
// the snapshot before), fewer data files, a `replace` snapshot; the rewritten
// file carries the table's field ids; an append that lands while the
// compaction runs is kept (the catalog's 409, re-planned on the new head);
// appends after a compaction are still exactly once.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { RestCatalog } from '../../ingest-node/src/iceberg/catalog.ts';
import { IcebergWriter, type SegmentAppend } from '../../ingest-node/src/iceberg/commit.ts';
import { compactTable, type CompactionResult } from '../../ingest-node/src/iceberg/compact.ts';
import { createParquetDb, type ParquetDb } from '../../ingest-node/src/parquet/duckdb.ts';
import { openObjectStore, type OpenedObjectStore } from '../../ingest-node/src/store/index.ts';
import { startIcebergCatalog, startMinio, waitFor } from '../harness/index.ts';
import type { IcebergCatalog, MinioServer } from '../harness/index.ts';
import { awsEnv, CLI, listKeys, post, serve } from './helpers/views.ts';

let minio: MinioServer;
let catalog: IcebergCatalog;
let opened: OpenedObjectStore;
let duck: DuckDBInstance;
let conn: DuckDBConnection;
let db: ParquetDb;
const scratch = mkdtempSync(path.join(tmpdir(), 'lf-iceberg-compact-'));

before(async () => {
  minio = await startMinio();
  catalog = await startIcebergCatalog({ minio });
  opened = openObjectStore({
    kind: 's3',
    bucket: minio.bucket,
    region: minio.region,
    endpoint: minio.endpoint,
    forcePathStyle: true,
    credentials: { mode: 'static', accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
  });
  duck = await DuckDBInstance.create(':memory:');
  conn = await duck.connect();
  await conn.run(`SET TimeZone = 'UTC'`);
  db = await createParquetDb({
    scratchDir: path.join(scratch, 'duckdb'),
    memoryLimitBytes: 256 * 1024 * 1024,
    threads: 1,
  });
});

after(async () => {
  await db?.close();
  conn?.closeSync();
  duck?.closeSync();
  opened?.close();
  await catalog?.stop();
  await minio?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

const columns = [
  { name: 'event', type: 'VARCHAR' },
  { name: 'n', type: 'BIGINT' },
  { name: 'at', type: 'TIMESTAMP WITH TIME ZONE' },
  { name: 'price', type: 'DECIMAL(10,2)' },
];

/** A small View file (rows n = first..first+rows-1), as a segment's would be, uploaded. */
async function viewFile(key: string, first: number, rows: number): Promise<SegmentAppend['files'][number]> {
  const local = path.join(scratch, `${first}.parquet`);
  await conn.run(
    `COPY (SELECT CASE WHEN i % 7 = 0 THEN NULL ELSE 'e' || (i % 5) END AS event, i::BIGINT AS n,
             TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i) AS at, (i / 100)::DECIMAL(10,2) AS price
           FROM range(${first}, ${first + rows}) t(i)) TO '${local}' (FORMAT parquet, COMPRESSION zstd)`,
  );
  const body = readFileSync(local);
  await opened.store.put(key, body);
  return { key, bytes: body.length, rows };
}

function segment(table: string, seg: number, files: SegmentAppend['files']): SegmentAppend {
  return {
    namespace: 'landfall',
    table,
    view: { view: table, columns, specSha256: 'b'.repeat(64) },
    segment: {
      endpoint: 'web',
      instance: 'web-0',
      epoch: '01EPOCH',
      segmentId: String(seg).padStart(20, '0'),
    },
    files,
  };
}

function writer(): IcebergWriter {
  return new IcebergWriter({
    catalog: new RestCatalog({ uri: catalog.uri, warehouse: catalog.warehouse }),
    store: opened.store,
    bucket: minio.bucket,
    prefix: 'lf',
  });
}

/** Appends segments `from..to` (one file of `rows` rows each) to `table`. */
async function feed(table: string, from: number, to: number, rows: number): Promise<void> {
  const w = writer();
  for (let s = from; s <= to; s++) {
    const f = await viewFile(`lf/views/${table}/seg-${s}.parquet`, s * 1000, rows);
    const r = await w.append(segment(table, s, [f]));
    assert.equal(r?.found, false);
  }
}

// Row content, order-independent: every row as JSON, sorted, hashed.
const inspect = String.raw`
import hashlib, json, os, sys
from pyiceberg.catalog import load_catalog
import pyarrow.fs as pafs, pyarrow.parquet as pq
cat = load_catalog('testbed', **json.loads(os.environ['TESTBED_ICEBERG_PROPS']))
t = cat.load_table(('landfall', sys.argv[1]))
def digest(snapshot_id=None):
    rows = t.scan(snapshot_id=snapshot_id).to_arrow().to_pylist()
    lines = sorted(json.dumps({k: (None if v is None else str(v)) for k, v in r.items()}, sort_keys=True) for r in rows)
    return len(rows), hashlib.sha256('\n'.join(lines).encode()).hexdigest(), sorted(r['n'] for r in rows)
count, checksum, ns = digest()
snap = t.current_snapshot()
files = [task.file for task in t.scan().plan_files()]
p = json.loads(os.environ['TESTBED_ICEBERG_PROPS'])
fs = pafs.S3FileSystem(endpoint_override=p['s3.endpoint'].split('://')[1], scheme='http', access_key=p['s3.access-key-id'],
                       secret_key=p['s3.secret-access-key'], region=p['s3.region'])
ids = {}
for f in files:
    if '/compacted-' in f.file_path:
        s = pq.read_schema(f.file_path[len('s3://'):], filesystem=fs)
        ids[f.file_path] = [[x.name, int(x.metadata[b'PARQUET:field_id'])] if x.metadata else [x.name, None] for x in s]
out = {
  'count': count, 'checksum': checksum, 'n': ns,
  'files': len(files), 'paths': sorted(f.file_path for f in files),
  'fileRows': sum(f.record_count for f in files),
  'operation': snap.summary.operation.value if snap else None,
  'summary': dict(snap.summary.additional_properties) if snap else {},
  'snapshots': [[str(s.snapshot_id), s.summary.operation.value, s.summary.additional_properties.get('landfall.segment-id')] for s in t.snapshots()],
  'fieldIds': ids,
  'schema': [[f.field_id, f.name] for f in t.schema().fields],
}
if len(sys.argv) > 2:
    c, h, _ = digest(int(sys.argv[2]))
    out['at'] = {'count': c, 'checksum': h}
print(json.dumps(out))
`;

interface Inspect {
  count: number;
  checksum: string;
  n: number[];
  files: number;
  paths: string[];
  fileRows: number;
  operation: string | null;
  summary: Record<string, string>;
  snapshots: [string, string, string | null][];
  fieldIds: Record<string, [string, number | null][]>;
  schema: [number, string][];
  at?: { count: number; checksum: string };
}

async function look(table: string, atSnapshot?: string): Promise<Inspect> {
  const args = atSnapshot === undefined ? [table] : [table, atSnapshot];
  return JSON.parse((await catalog.python(inspect, args)).stdout) as Inspect;
}

/** `landfall iceberg compact …` as a child process; its stdout JSON lines. */
function cli(args: readonly string[]): Promise<CompactionResult[]> {
  return new Promise((resolve, reject) => {
    const p = spawn(
      process.execPath,
      [
        CLI,
        'iceberg',
        'compact',
        ...args,
        '--json',
        `--catalog-uri=${catalog.uri}`,
        `--warehouse=${catalog.warehouse}`,
        `--bucket=${minio.bucket}`,
        `--endpoint=${minio.endpoint}`,
        '--prefix=lf',
        '--threads=1',
        '--memory-mb=256',
      ],
      { env: { PATH: process.env['PATH'] ?? '', ...awsEnv(minio) }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0) reject(new Error(`landfall iceberg compact exited ${code}: ${err}`));
      else
        resolve(
          out
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l) as CompactionResult),
        );
    });
  });
}

const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);
const rowsOf = (segs: number[], rows: number): number[] =>
  segs.flatMap((s) => range(s * 1000, s * 1000 + rows)).sort((x, y) => x - y);

void test('landfall iceberg compact: 24 small files → 1, same rows and checksum, a replace snapshot; appends stay exactly once', async () => {
  const segments = 24;
  const rows = 40;
  await feed('small', 1, segments, rows);
  const before = await look('small');
  assert.equal(before.files, segments);
  assert.equal(before.count, segments * rows);
  assert.deepEqual(before.n, rowsOf(range(1, segments + 1), rows));

  // A dry run plans, changes nothing.
  const [dry] = await cli(['--table=landfall.small', '--min-files=5', '--dry-run']);
  assert.equal(dry?.dryRun, true);
  assert.equal(dry?.snapshotId, null);
  assert.equal(dry?.bins.length, 1);
  assert.equal(dry?.bins[0]?.files, segments);
  assert.equal((await look('small')).snapshots.length, segments, 'a dry run commits nothing');

  const started = Date.now();
  const [r] = await cli(['--table=landfall.small', '--min-files=5']);
  const tookMs = Date.now() - started;
  assert.ok(r !== undefined && r.snapshotId !== null);
  assert.deepEqual([r.dataFilesBefore, r.dataFilesAfter, r.conflicts], [segments, 1, 0]);
  // One manifest per segment before; after, one adding the new file and one recording the deletions.
  assert.deepEqual([r.manifestsBefore, r.manifestsAfter], [segments, 2]);
  const after = await look('small', before.snapshots.at(-1)![0]);
  assert.equal(after.files, 1, 'one data file in the current snapshot');
  assert.equal(after.count, before.count, 'same row count');
  assert.equal(after.checksum, before.checksum, 'same content (checksum of the sorted rows)');
  assert.deepEqual(
    after.at,
    { count: before.count, checksum: before.checksum },
    'the snapshot before reads the same',
  );
  assert.equal(after.fileRows, before.count, 'the manifest counts what the file holds');
  assert.equal(after.operation, 'replace');
  assert.equal(after.snapshots.at(-1)?.[0], r.snapshotId);
  assert.deepEqual(
    [after.summary['deleted-data-files'], after.summary['added-data-files'], after.summary['added-records']],
    [String(segments), '1', String(segments * rows)],
  );
  // The rewritten file carries the table's field ids.
  assert.deepEqual(Object.values(after.fieldIds), [after.schema.map(([id, name]) => [name, id])]);
  console.log(
    `# compaction: ${segments} files (${r.bins[0]!.inputBytes} B) → 1 (${r.bins[0]!.outputBytes} B); ${r.durationMs} ms in the run, ${tookMs} ms with the CLI process`,
  );

  // Exactly once after a compaction: a retried segment finds its snapshot, a new one appends once.
  const f5 = `lf/views/small/seg-5.parquet`;
  const again = await writer().append(
    segment('small', 5, [{ key: f5, bytes: (await opened.store.head(f5))!.bytes, rows }]),
  );
  assert.equal(again?.found, true, 'the retried segment finds its snapshot across the replace');
  await feed('small', segments + 1, segments + 1, rows);
  const appended = await look('small');
  assert.deepEqual(appended.n, rowsOf(range(1, segments + 2), rows), 'every row once');
  assert.equal(appended.files, 2);

  // Compacting again takes the compacted file (an EXISTING entry now) and the new one.
  const [r2] = await cli(['--table=landfall.small', '--min-files=2']);
  assert.deepEqual([r2?.dataFilesBefore, r2?.dataFilesAfter], [2, 1]);
  // The manifest of nothing but earlier deletions is left behind.
  assert.deepEqual([r2?.manifestsBefore, r2?.manifestsAfter], [3, 2]);
  const twice = await look('small');
  assert.equal(twice.files, 1);
  assert.equal(twice.checksum, appended.checksum);
  assert.deepEqual(
    twice.snapshots.map((s) => s[1]),
    [...Array<string>(segments).fill('append'), 'replace', 'append', 'replace'],
  );
});

void test('an append that lands while compaction runs is kept: 409, re-planned on the new head, committed', async () => {
  const rows = 10;
  await feed('busy', 1, 6, rows);
  const before = await look('busy');
  assert.equal(before.files, 6);
  let landed = 0;
  const r = await compactTable({
    catalog: new RestCatalog({ uri: catalog.uri, warehouse: catalog.warehouse }),
    store: opened.store,
    bucket: minio.bucket,
    prefix: 'lf',
    db,
    namespace: 'landfall',
    table: 'busy',
    minFiles: 3,
    // The files are rewritten; before the first commit a writer appends segment 7 (a replica's segment).
    beforeCommit: async (attempt) => {
      if (attempt === 0) {
        await feed('busy', 7, 7, rows);
        landed++;
      }
    },
  });
  assert.equal(landed, 1);
  assert.ok(r.conflicts >= 1, 'the catalog refused the first commit (main moved)');
  assert.ok(r.snapshotId !== null);
  assert.deepEqual([r.bins.length, r.bins[0]?.files, r.dataFilesAfter], [1, 6, 2]);
  const after = await look('busy');
  assert.deepEqual(after.n, rowsOf(range(1, 8), rows), 'the concurrent append is not lost, no row twice');
  assert.equal(after.files, 2);
  assert.deepEqual(
    after.snapshots.map((s) => [s[1], s[2]]),
    [...range(1, 8).map((s) => ['append', String(s).padStart(20, '0')]), ['replace', null]],
  );
  // And segment 7's retry still finds its snapshot.
  const k7 = 'lf/views/busy/seg-7.parquet';
  const again = await writer().append(
    segment('busy', 7, [{ key: k7, bytes: (await opened.store.head(k7))!.bytes, rows }]),
  );
  assert.equal(again?.found, true);
});

void test('nothing to do: too few small files, no snapshot', async () => {
  await feed('few', 1, 3, 5);
  const r = await compactTable({
    catalog: new RestCatalog({ uri: catalog.uri, warehouse: catalog.warehouse }),
    store: opened.store,
    bucket: minio.bucket,
    prefix: 'lf',
    db,
    namespace: 'landfall',
    table: 'few',
    minFiles: 4,
  });
  assert.deepEqual([r.snapshotId, r.bins.length, r.dataFilesBefore, r.dataFilesAfter], [null, 0, 3, 3]);
  assert.equal((await look('few')).snapshots.length, 3);
});

const SERVE_VIEW = `
name: orders
columns:
  - { name: id,  type: BIGINT,  path: $.id, required: true }
  - { name: sku, type: VARCHAR, path: $.sku }
iceberg: { namespace: served, table: orders }
`;

const servedScan = String.raw`
import json, os
from pyiceberg.catalog import load_catalog
cat = load_catalog('testbed', **json.loads(os.environ['TESTBED_ICEBERG_PROPS']))
t = cat.load_table('served.orders')
print(json.dumps({
  'ids': sorted(t.scan().to_arrow().column('id').to_pylist()),
  'files': len(list(t.scan().plan_files())),
  'operations': [s.summary.operation.value for s in t.snapshots()],
}))
`;

void test('landfall serve with iceberg.compaction.intervalMs: a table fed every few hundred ms is compacted while appends go on, every row once', async () => {
  const viewsDir = path.join(scratch, 'serve-views');
  const dir = path.join(scratch, 'serve-node');
  await mkdir(viewsDir, { recursive: true });
  await writeFile(path.join(viewsDir, 'orders.yaml'), SERVE_VIEW);
  const node = await serve('landfall-iceberg-compact', minio, path.join(dir, 'node.log'), [
    `--s3.bucket=${minio.bucket}`,
    `--s3.endpointUrl=${minio.endpoint}`,
    '--s3.prefix=lf4',
    '--endpoint.name=shop',
    '--instance.id=shop-0',
    `--wal.dir=${path.join(dir, 'wal')}`,
    '--wal.segmentAgeMsMax=200',
    `--views.dir=${viewsDir}`,
    '--views.threads=1',
    '--delivery.staleUploadAgeMs=0',
    `--iceberg.catalogUri=${catalog.uri}`,
    `--iceberg.warehouse=${catalog.warehouse}`,
    '--iceberg.compaction.intervalMs=1500',
    '--iceberg.compaction.minFiles=4',
  ]);
  const markerCount = async (): Promise<number> =>
    (await listKeys(minio.s3(), minio.bucket, 'lf4/commits/shop/')).length;
  try {
    // One small segment per batch: post, wait for its marker, again.
    const batches = 16;
    const perBatch = 5;
    for (let b = 0; b < batches; b++) {
      await post(
        node.url,
        range(0, perBatch).map((i) => JSON.stringify({ id: b * 100 + i, sku: `s${b}` })),
      );
      await waitFor(async () => ((await markerCount()) > b ? true : undefined), {
        what: `marker ${b + 1}`,
        timeoutMs: 60_000,
        intervalMs: 50,
        process: node.proc,
      });
      // Half the batches before a compaction has to run, half after (appends on top of a replace).
      if (b === batches / 2 - 1)
        await waitFor(() => node.logs().find((l) => l.msg === 'iceberg compaction committed'), {
          what: 'a scheduled compaction',
          timeoutMs: 60_000,
          intervalMs: 100,
          process: node.proc,
        });
    }
    const r = JSON.parse((await catalog.python(servedScan)).stdout) as {
      ids: number[];
      files: number;
      operations: string[];
    };
    const want = range(0, batches).flatMap((b) => range(0, perBatch).map((i) => b * 100 + i));
    assert.deepEqual(r.ids, want, 'every posted row once');
    assert.equal(r.operations.filter((o) => o === 'append').length, batches, 'one append per segment');
    assert.ok(r.operations.includes('replace'));
    assert.ok(r.files < batches, `${r.files} data files for ${batches} segments`);
    const committed = node.logs().filter((l) => l.msg === 'iceberg compaction committed');
    console.log(
      `# scheduled compaction: ${batches} segments → ${r.files} data files; ${committed.length} replace snapshot(s): ${committed.map((l) => `${String(l['filesDeleted'])}→${String(l['filesAdded'])}`).join(', ')}`,
    );
  } finally {
    await node.proc.stop({ graceMs: 5_000 });
  }
});

// A partitioned table written by another engine (PyIceberg: its own manifests,
// deflate-compressed, identity partitions on a string and a date): compaction groups by
// partition and carries the partition tuples as they are.
const pyTable = String.raw`
import json, os, sys, hashlib
from datetime import date, datetime, timezone
import pyarrow as pa
from pyiceberg.catalog import load_catalog
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField, LongType, StringType, TimestamptzType, DateType
from pyiceberg.partitioning import PartitionSpec, PartitionField
from pyiceberg.transforms import IdentityTransform
cat = load_catalog('testbed', **json.loads(os.environ['TESTBED_ICEBERG_PROPS']))
schema = Schema(NestedField(1, 'id', LongType(), required=False), NestedField(2, 'kind', StringType(), required=False),
                NestedField(3, 'at', TimestamptzType(), required=False), NestedField(4, 'd', DateType(), required=False))
arrow = pa.schema([pa.field('id', pa.int64()), pa.field('kind', pa.string()), pa.field('at', pa.timestamp('us', tz='UTC')),
                   pa.field('d', pa.date32())])
def batch(b):
    rows = [(b * 100 + i, 'a' if i % 2 else 'b', datetime(2026, 1, 1 + (i % 3 == 0), 12, i, tzinfo=timezone.utc)) for i in range(6)]
    return pa.table({'id': [r[0] for r in rows], 'kind': [r[1] for r in rows], 'at': [r[2] for r in rows],
                     'd': [r[2].date() for r in rows]}, schema=arrow)
def state(t):
    rows = t.scan().to_arrow().to_pylist()
    lines = sorted(json.dumps({k: str(v) for k, v in r.items()}, sort_keys=True) for r in rows)
    files = list(t.scan().plan_files())
    return {'count': len(rows), 'checksum': hashlib.sha256('\n'.join(lines).encode()).hexdigest(),
            'files': len(files), 'partitions': sorted(set(str(f.file.partition) for f in files)),
            'prunedFiles': len(list(t.scan(row_filter="kind == 'a'").plan_files())),
            'prunedRows': len(t.scan(row_filter="kind == 'a'").to_arrow()),
            'operation': t.current_snapshot().summary.operation.value}
if sys.argv[1] == 'create':
    cat.create_namespace_if_not_exists('pyw')
    t = cat.create_table('pyw.events', schema=schema, partition_spec=PartitionSpec(
        PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name='kind'),
        PartitionField(source_id=4, field_id=1001, transform=IdentityTransform(), name='d')))
    for b in range(10):
        t.append(batch(b))
elif sys.argv[1] == 'append':
    t = cat.load_table('pyw.events')
    t.append(batch(10))
t = cat.load_table('pyw.events')
print(json.dumps(state(t)))
`;

interface PyState {
  count: number;
  checksum: string;
  files: number;
  partitions: string[];
  prunedFiles: number;
  prunedRows: number;
  operation: string;
}

void test('a partitioned table another engine wrote: compacted per partition, partition tuples kept, pruning still works, that engine appends after', async () => {
  const before = JSON.parse((await catalog.python(pyTable, ['create'])).stdout) as PyState;
  // 10 appends × (2 kinds × 2 days) = 40 files in 4 partitions.
  assert.equal(before.files, 40);
  assert.equal(before.partitions.length, 4);
  const r = await compactTable({
    catalog: new RestCatalog({ uri: catalog.uri, warehouse: catalog.warehouse }),
    store: opened.store,
    bucket: minio.bucket,
    prefix: 'lf',
    db,
    namespace: 'pyw',
    table: 'events',
    minFiles: 5,
  });
  assert.deepEqual(
    r.bins.map((b) => b.files),
    [10, 10, 10, 10],
  );
  assert.deepEqual([r.dataFilesBefore, r.dataFilesAfter], [40, 4]);
  const after = JSON.parse((await catalog.python(pyTable, ['read'])).stdout) as PyState;
  assert.deepEqual(
    { ...after, operation: undefined },
    { ...before, files: 4, prunedFiles: 2, operation: undefined },
    'same rows and content, the same partitions, one file each; a filter on kind still prunes to its partitions',
  );
  assert.equal(before.prunedFiles, 20);
  assert.equal(after.operation, 'replace');
  // PyIceberg appends on top of our replace snapshot (it reads our manifest list and manifests).
  const more = JSON.parse((await catalog.python(pyTable, ['append'])).stdout) as PyState;
  assert.equal(more.count, before.count + 6);
  assert.equal(more.operation, 'append');
});
