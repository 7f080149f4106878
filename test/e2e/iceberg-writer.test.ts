// The Iceberg writer (ingest-node/src/iceberg) against the real REST catalog
// (Apache Iceberg's RESTCatalogServer, S3FileIO on MinIO), read back by
// PyIceberg: the manifests and snapshots Landfall writes are a table another
// engine scans; a repeated append finds its own snapshot; concurrent writers
// each land every segment exactly once through the catalog's 409s.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { RestCatalog } from '../../ingest-node/src/iceberg/catalog.ts';
import { IcebergWriter, type SegmentAppend } from '../../ingest-node/src/iceberg/commit.ts';
import { IcebergError } from '../../ingest-node/src/iceberg/errors.ts';
import { icebergFieldIds } from '../../ingest-node/src/iceberg/field-ids.ts';
import { icebergViewCheck } from '../../ingest-node/src/iceberg/view-check.ts';
import { ViewError } from '../../ingest-node/src/views/errors.ts';
import type { CompiledView } from '../../ingest-node/src/views/compile.ts';
import { partitionsOfViewKey, type ViewPartitionLevel } from '../../ingest-node/src/iceberg/partition.ts';
import { viewKey, type HivePartition } from '../../ingest-node/src/delivery/keys.ts';
import { openObjectStore, type OpenedObjectStore } from '../../ingest-node/src/store/index.ts';
import { startIcebergCatalog, startMinio } from '../harness/index.ts';
import type { IcebergCatalog, MinioServer } from '../harness/index.ts';

let minio: MinioServer;
let catalog: IcebergCatalog;
let opened: OpenedObjectStore;
const scratch = mkdtempSync(path.join(tmpdir(), 'lf-iceberg-writer-'));

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
});

after(async () => {
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

/** Writes `rows` rows (n = first..first+rows-1) as a View file would be, uploads it, returns its key. */
async function viewFile(
  key: string,
  first: number,
  rows: number,
  extra = '',
): Promise<{ key: string; bytes: number; rows: number }> {
  const db = await DuckDBInstance.create(':memory:');
  const c = await db.connect();
  const local = path.join(scratch, `${first}.parquet`);
  await c.run(`SET TimeZone = 'UTC'`);
  await c.run(
    `COPY (SELECT 'e' || i AS event, i::BIGINT AS n, TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i) AS at,
             (i / 100)::DECIMAL(10,2) AS price${extra}
           FROM range(${first}, ${first + rows}) t(i)) TO '${local}' (FORMAT parquet)`,
  );
  c.closeSync();
  db.closeSync();
  const body = readFileSync(local);
  await opened.store.put(key, body);
  return { key, bytes: body.length, rows };
}

function append(
  table: string,
  instance: string,
  segment: number,
  files: SegmentAppend['files'],
  viewColumns: SegmentAppend['view']['columns'] = columns,
): SegmentAppend {
  return {
    namespace: 'landfall',
    table,
    view: { view: 'pv', columns: viewColumns, specSha256: 'a'.repeat(64) },
    segment: {
      endpoint: 'web',
      instance,
      epoch: '01TESTEPOCH',
      segmentId: String(segment).padStart(20, '0'),
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

const scan = String.raw`
import json, os, sys
from pyiceberg.catalog import load_catalog
cat = load_catalog('testbed', **json.loads(os.environ['TESTBED_ICEBERG_PROPS']))
t = cat.load_table(('landfall', sys.argv[1]))
rows = t.scan().to_arrow()
print(json.dumps({
  'schema': [[f.field_id, f.name, str(f.field_type)] for f in t.schema().fields],
  'arrow': [str(x.type) for x in rows.schema],
  'n': sorted(rows.column('n').to_pylist()),
  'snapshots': [dict(s.summary.additional_properties, operation=s.summary.operation.value) for s in t.snapshots()],
  'price': str(sorted(rows.column('price').to_pylist())[-1]),
}))
`;

interface Scan {
  schema: [number, string, string][];
  arrow: string[];
  n: number[];
  snapshots: Record<string, string>[];
  price: string;
}

const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);

void test('appended segments scan in PyIceberg with the declared types; a repeated append finds its snapshot', async () => {
  const w = writer();
  const a = await viewFile('lf/views/pv/dt=2026-01-01/seg1.parquet', 0, 5);
  const b = await viewFile('lf/views/pv/dt=2026-01-02/seg1.parquet', 5, 3);
  const c = await viewFile('lf/views/pv/dt=2026-01-01/seg2.parquet', 100, 4);
  const first = await w.append(append('pv', 'web-0', 1, [a, b]));
  const second = await w.append(append('pv', 'web-0', 2, [c]));
  assert.ok(first !== undefined && second !== undefined);
  assert.equal(first.found, false);
  assert.notEqual(first.snapshotId, second.snapshotId);
  // A retry of segment 1 (a crash after the commit, before the marker): no new snapshot.
  const again = await writer().append(append('pv', 'web-0', 1, [a, b]));
  assert.deepEqual({ found: again?.found, id: again?.snapshotId }, { found: true, id: first.snapshotId });
  // A View with no rows in a segment has nothing to append.
  assert.equal(await w.append(append('pv', 'web-0', 3, [])), undefined);

  const r = JSON.parse((await catalog.python(scan, ['pv'])).stdout) as Scan;
  assert.deepEqual(r.schema, [
    [1, 'event', 'string'],
    [2, 'n', 'long'],
    [3, 'at', 'timestamptz'],
    [4, 'price', 'decimal(10, 2)'],
  ]);
  assert.deepEqual(r.arrow, ['string', 'int64', 'timestamp[us, tz=UTC]', 'decimal128(10, 2)']);
  assert.deepEqual(r.n, [...range(0, 8), ...range(100, 104)]);
  assert.equal(r.price, '1.03');
  assert.deepEqual(
    r.snapshots.map((s) => [s['operation'], s['landfall.segment-id'], s['added-records']]),
    [
      ['append', '00000000000000000001', '8'],
      ['append', '00000000000000000002', '4'],
    ],
  );
});

void test('two writers committing to one table at once: every segment exactly once', async () => {
  const segments = 6;
  const jobs: Promise<unknown>[] = [];
  let conflicts = 0;
  for (const instance of ['web-0', 'web-1']) {
    const w = writer();
    jobs.push(
      (async () => {
        for (let s = 1; s <= segments; s++) {
          const base = (instance === 'web-0' ? 0 : 1000) + s * 10;
          const f = await viewFile(`lf/views/pv2/${instance}-${s}.parquet`, base, 2);
          const res = await w.append(append('pv2', instance, s, [f]));
          conflicts += res?.conflicts ?? 0;
        }
      })(),
    );
  }
  await Promise.all(jobs);
  const r = JSON.parse((await catalog.python(scan, ['pv2'])).stdout) as Scan;
  const want = ['web-0', 'web-1'].flatMap((i) =>
    range(1, segments + 1).flatMap((s) => {
      const base = (i === 'web-0' ? 0 : 1000) + s * 10;
      return [base, base + 1];
    }),
  );
  assert.deepEqual(
    r.n,
    want.sort((x, y) => x - y),
  );
  assert.equal(r.snapshots.length, 2 * segments);
  const ids = r.snapshots.map((s) => `${s['landfall.instance']}/${s['landfall.segment-id']}`);
  assert.equal(new Set(ids).size, ids.length);
  console.log(`# concurrent writers: ${conflicts} commit conflicts (409) retried`);
});

const evolvedScan = String.raw`
import json, os
from pyiceberg.catalog import load_catalog
cat = load_catalog('testbed', **json.loads(os.environ['TESTBED_ICEBERG_PROPS']))
t = cat.load_table(('landfall', 'pv3'))
rows = t.scan(selected_fields=('n', 'extra')).to_arrow().sort_by('n').to_pylist()
print(json.dumps({'schema': [[f.field_id, f.name, str(f.field_type)] for f in t.schema().fields], 'rows': rows,
                  'schemas': len(t.schemas())}))
`;

void test('a View that adds a column adds an Iceberg field: old snapshots read NULL for it, new rows have it', async () => {
  const w = writer();
  await w.append(append('pv3', 'web-0', 1, [await viewFile('lf/views/pv3/a.parquet', 0, 2)]));
  const wider = [...columns, { name: 'extra', type: 'VARCHAR' }];
  const f = await viewFile('lf/views/pv3/b.parquet', 10, 2, `, 'x' || i AS extra`);
  const res = await w.append(append('pv3', 'web-0', 2, [f], wider));
  assert.equal(res?.found, false);
  const r = JSON.parse((await catalog.python(evolvedScan)).stdout) as {
    schema: [number, string, string][];
    rows: { n: number; extra: string | null }[];
    schemas: number;
  };
  assert.deepEqual(r.schema.at(-1), [5, 'extra', 'string']);
  assert.equal(r.schemas, 2);
  assert.deepEqual(r.rows, [
    { n: 0, extra: null },
    { n: 1, extra: null },
    { n: 10, extra: 'x10' },
    { n: 11, extra: 'x11' },
  ]);
  // A changed type is refused, and nothing is committed.
  await assert.rejects(
    w.append(append('pv3', 'web-0', 3, [f], [...columns, { name: 'extra', type: 'BIGINT' }])),
    /ICEBERG_SCHEMA_MISMATCH|extra: table has "string", view writes long/,
  );
});

// ---- partition specs -----------------------------------------------------------

const partScan = String.raw`
import json, os, sys
from pyiceberg.catalog import load_catalog
from pyiceberg.expressions import EqualTo, IsNull, GreaterThanOrEqual, LessThan
cat = load_catalog('testbed', **json.loads(os.environ['TESTBED_ICEBERG_PROPS']))
t = cat.load_table(('landfall', sys.argv[1]))
filters = {'all': None, 'de': EqualTo('country', 'de'), 'empty': EqualTo('country', ''),
           'null': IsNull('country'), 'day2': GreaterThanOrEqual('at', '2026-01-02T00:00:00+00:00'),
           'before_feb': LessThan('at', '2026-02-01T00:00:00')}
out = {'spec': [[f.name, str(f.transform), f.source_id, f.field_id] for f in t.spec().fields],
       'specs': len(t.specs()),
       'partitions': sorted(json.dumps({k: (None if v is None else str(v)) for k, v in r['partition'].items()}, sort_keys=True)
                            for r in t.inspect.files().to_pylist())}
# PyIceberg's own transforms over the rows: the tuples the files should carry.
import datetime
from pyiceberg.utils.datetime import date_to_days, datetime_to_micros
def internal(v):
    if isinstance(v, datetime.datetime): return datetime_to_micros(v)
    if isinstance(v, datetime.date): return date_to_days(v)
    return v
sch = t.schema()
def tup(r):
    out = {}
    for f in t.spec().fields:
        src = sch.find_field(f.source_id)
        out[f.name] = f.transform.transform(src.field_type)(internal(r[src.name]))
    return json.dumps(out, sort_keys=True)
out['computed'] = sorted(set(tup(r) for r in t.scan().to_arrow().to_pylist()))
out['stored'] = sorted(json.dumps({k: internal(v) for k, v in r['partition'].items()}, sort_keys=True)
                       for r in t.inspect.files().to_pylist())
for name in sys.argv[2:]:
    scan = t.scan() if filters[name] is None else t.scan(row_filter=filters[name])
    out[name] = {'files': len(list(scan.plan_files())), 'n': sorted(scan.to_arrow().column('n').to_pylist())}
print(json.dumps(out))
`;

interface PartScan {
  spec: [string, string, number, number][];
  specs: number;
  partitions: string[];
  computed: string[];
  stored: string[];
  [filter: string]: unknown;
}
type Filtered = { files: number; n: number[] };

/** A View file at the key the node would give it (keys.ts viewKey, so the folder encoding is Landfall's). */
async function partitionFile(
  view: string,
  segment: number,
  partitions: HivePartition[],
  selectSql: string,
): Promise<SegmentAppend['files'][number]> {
  const ref = { endpoint: 'web', instance: 'web-0', epoch: '01TESTEPOCH', segmentId: BigInt(segment) };
  const key = viewKey('lf', ref, view, partitions);
  const db = await DuckDBInstance.create(':memory:');
  const c = await db.connect();
  const local = path.join(scratch, `p-${view}-${segment}-${Math.random().toString(36).slice(2)}.parquet`);
  await c.run(`SET TimeZone = 'UTC'`);
  await c.run(`COPY (${selectSql}) TO '${local}' (FORMAT parquet)`);
  const rows = Number((await c.runAndReadAll(`SELECT count(*) FROM '${local}'`)).getRows()[0]![0]);
  c.closeSync();
  db.closeSync();
  const body = readFileSync(local);
  await opened.store.put(key, body);
  // What iceberg/delivery.ts does: the values back from the key.
  return { key, bytes: body.length, rows, partitions: partitionsOfViewKey('lf', view, key) };
}

const countryColumns = [
  { name: 'event', type: 'VARCHAR' },
  { name: 'n', type: 'BIGINT' },
  { name: 'at', type: 'TIMESTAMP WITH TIME ZONE' },
  { name: 'country', type: 'VARCHAR' },
];
// dt = date_trunc('day', at), country = country, lc = lower(event) (no Iceberg transform: not in the spec).
const countryLevels: ViewPartitionLevel[] = [
  { alias: 'dt', transform: { source: 'at', transform: 'day' } },
  { alias: 'cc', transform: { source: 'country', transform: 'identity' } },
  { alias: 'lc' },
];

function countryRows(first: number, rows: number, day: string, country: string | null): string {
  const c = country === null ? 'NULL::VARCHAR' : `'${country}'`;
  return `SELECT 'e' AS event, i::BIGINT AS n, TIMESTAMPTZ '${day} 00:00:00+00' + to_seconds(i) AS at, ${c} AS country
          FROM range(${first}, ${first + rows}) t(i)`;
}

void test('a View partitioned by day(at) and identity(country) makes a partitioned table; scans prune by partition', async () => {
  const w = writer();
  const level = (day: string, country: string | null): HivePartition[] => [
    ['dt', day],
    ['cc', country],
    ['lc', 'e'],
  ];
  const seg1 = [
    await partitionFile('pp', 1, level('2026-01-01', 'de'), countryRows(0, 3, '2026-01-01', 'de')),
    await partitionFile('pp', 1, level('2026-01-01', ''), countryRows(10, 2, '2026-01-01', '')),
    await partitionFile('pp', 1, level('2026-01-02', null), countryRows(20, 2, '2026-01-02', null)),
  ];
  const seg2 = [
    // A real value that spells the folder names: its own partition, the text itself.
    await partitionFile(
      'pp',
      2,
      level('2026-01-02', '__HIVE_DEFAULT_PARTITION__'),
      countryRows(30, 1, '2026-01-02', '__HIVE_DEFAULT_PARTITION__'),
    ),
    await partitionFile('pp', 2, level('2026-01-03', 'fr/x y'), countryRows(40, 2, '2026-01-03', 'fr/x y')),
  ];
  // The folder encoding stays in the key, never in the tuple.
  assert.match(seg1[1]!.key, /cc=__LANDFALL_EMPTY__\//);
  assert.match(seg1[2]!.key, /cc=__HIVE_DEFAULT_PARTITION__\//);
  const view = (files: SegmentAppend['files'], s: number): SegmentAppend => {
    const a = append('pp', 'web-0', s, files, countryColumns);
    return { ...a, view: { ...a.view, partitioning: countryLevels } };
  };
  assert.equal((await w.append(view(seg1, 1)))?.found, false);
  assert.equal((await w.append(view(seg2, 2)))?.found, false);

  const r = JSON.parse(
    (await catalog.python(partScan, ['pp', 'all', 'de', 'empty', 'null', 'day2'])).stdout,
  ) as PartScan;
  assert.deepEqual(r.spec, [
    ['dt', 'day', 3, 1000],
    ['cc', 'identity', 4, 1001],
  ]);
  assert.deepEqual(r.partitions, [
    '{"cc": "", "dt": "2026-01-01"}',
    '{"cc": "__HIVE_DEFAULT_PARTITION__", "dt": "2026-01-02"}',
    '{"cc": "de", "dt": "2026-01-01"}',
    '{"cc": "fr/x y", "dt": "2026-01-03"}',
    '{"cc": null, "dt": "2026-01-02"}',
  ]);
  // The tuples are what PyIceberg's own transforms give for the rows in each file.
  assert.deepEqual(r.stored, r.computed);
  const all = r['all'] as Filtered;
  assert.deepEqual(all, { files: 5, n: [0, 1, 2, 10, 11, 20, 21, 30, 40, 41] });
  // Each filter plans fewer files than the table has, and returns exactly its rows.
  assert.deepEqual(r['de'], { files: 1, n: [0, 1, 2] });
  assert.deepEqual(r['empty'], { files: 1, n: [10, 11] });
  assert.deepEqual(r['null'], { files: 1, n: [20, 21] });
  assert.deepEqual(r['day2'], { files: 3, n: [20, 21, 30, 40, 41] });
});

void test('hour, month and year of a timestamp and identity of a DATE: the tuples are PyIceberg’s transforms of the rows', async () => {
  const w = writer();
  const columns = [
    { name: 'n', type: 'BIGINT' },
    { name: 'at', type: 'TIMESTAMP' },
    { name: 'd', type: 'DATE' },
  ];
  const levels: ViewPartitionLevel[] = [
    { alias: 'y', transform: { source: 'at', transform: 'year' } },
    { alias: 'm', transform: { source: 'at', transform: 'month' } },
    { alias: 'h', transform: { source: 'at', transform: 'hour' } },
    { alias: 'dd', transform: { source: 'd', transform: 'identity' } },
  ];
  // The folder texts views/compile.ts renders for these levels.
  const file = (s: number, at: string, d: string, n: number): Promise<SegmentAppend['files'][number]> =>
    partitionFile(
      'ph',
      s,
      [
        ['y', `${at.slice(0, 4)}-01-01`],
        ['m', `${at.slice(0, 7)}-01`],
        ['h', at.slice(0, 13).replace(' ', 'T')],
        ['dd', d],
      ],
      `SELECT ${n}::BIGINT AS n, TIMESTAMP '${at}' AS at, DATE '${d}' AS d`,
    );
  const files = [
    await file(1, '2026-01-31 23:59:59', '1969-12-31', 1),
    await file(1, '2026-02-01 00:00:00', '2026-02-01', 2),
    await file(1, '1969-12-31 23:00:00', '1900-03-01', 3),
  ];
  const a = append('ph', 'web-0', 1, files, columns);
  await w.append({ ...a, view: { ...a.view, partitioning: levels } });
  const r = JSON.parse((await catalog.python(partScan, ['ph', 'all', 'before_feb'])).stdout) as PartScan;
  assert.deepEqual(
    r.spec.map(([name, t]) => [name, t]),
    [
      ['y', 'year'],
      ['m', 'month'],
      ['h', 'hour'],
      ['dd', 'identity'],
    ],
  );
  // PyIceberg renders year/month/hour tuples as the ints the spec defines.
  const hours = (iso: string): number => Date.parse(`${iso}:00:00Z`) / 3_600_000;
  assert.deepEqual(
    r.partitions.map((p) => JSON.parse(p) as Record<string, string>),
    [
      { dd: '1900-03-01', h: String(hours('1969-12-31T23')), m: '-1', y: '-1' },
      { dd: '1969-12-31', h: String(hours('2026-01-31T23')), m: String(56 * 12), y: '56' },
      { dd: '2026-02-01', h: String(hours('2026-02-01T00')), m: String(56 * 12 + 1), y: '56' },
    ].sort((x, y) => (JSON.stringify(x) < JSON.stringify(y) ? -1 : 1)),
  );
  assert.deepEqual(r.stored, r.computed);
  assert.equal(r.stored.length, 3);
  assert.deepEqual(r['before_feb'], { files: 2, n: [1, 3] });
});

void test('an existing unpartitioned table keeps taking a partitioned View; a table partitioned otherwise is refused', async () => {
  const w = writer();
  // Created by an unpartitioned View.
  await w.append(append('pu', 'web-0', 1, [await viewFile('lf/views/pu/a.parquet', 0, 2)]));
  const f = await viewFile('lf/views/pu/dt=2026-01-01/b.parquet', 10, 2);
  const a = append('pu', 'web-0', 2, [{ ...f, partitions: [['dt', '2026-01-01']] }]);
  const partitioned = {
    ...a,
    view: {
      ...a.view,
      partitioning: [{ alias: 'dt', transform: { source: 'at', transform: 'day' as const } }],
    },
  };
  assert.equal((await w.append(partitioned))?.found, false);
  const r = JSON.parse((await catalog.python(partScan, ['pu', 'all'])).stdout) as PartScan;
  assert.deepEqual([r.spec, r.specs], [[], 1], 'no spec change');
  assert.deepEqual(r['all'], { files: 2, n: [0, 1, 10, 11] });

  // pp is partitioned by day(at), identity(country): a View without those levels cannot say where its rows go.
  const b = append(
    'pp',
    'web-0',
    9,
    [await viewFile('lf/views/pp/c.parquet', 50, 1)],
    countryColumns.slice(0, 3),
  );
  await assert.rejects(w.append(b), (err: unknown) => {
    assert.ok(err instanceof IcebergError);
    assert.equal(err.code, 'ICEBERG_PARTITION_MISMATCH');
    assert.match(err.message, /partitioned by day\(at\) \(dt\)/);
    return true;
  });
});

// ---- column stats ---------------------------------------------------------------

const statsScan = String.raw`
import json, os, sys
from pyiceberg.catalog import load_catalog
from pyiceberg.expressions import GreaterThanOrEqual, EqualTo
cat = load_catalog('testbed', **json.loads(os.environ['TESTBED_ICEBERG_PROPS']))
t = cat.load_table(('landfall', sys.argv[1]))
files = t.inspect.files().to_pylist()
def show(m):
    return {c: {k: (None if v is None else str(v)) for k, v in s.items()} for c, s in m.items()}
out = {'metrics': sorted((show(f['readable_metrics']) for f in files), key=lambda m: m['n']['lower_bound']),
       'all': len(list(t.scan().plan_files()))}
for name, f in {'n_ge_100': GreaterThanOrEqual('n', 100), 'event_e500': EqualTo('event', 'e500'),
                'price_ge_5': GreaterThanOrEqual('price', '5.00'),
                'at_ge': GreaterThanOrEqual('at', '2026-01-01T00:03:20+00:00')}.items():
    s = t.scan(row_filter=f)
    out[name] = {'files': len(list(s.plan_files())), 'n': sorted(s.to_arrow().column('n').to_pylist())}
print(json.dumps(out))
`;

void test('manifest entries carry column stats from each file’s footer; filters on non-partition columns prune by them', async () => {
  const w = writer();
  const rows = (first: number, count: number): string =>
    `SELECT CASE WHEN i % 2 = 0 THEN 'e' || i END AS event, i::BIGINT AS n,
            TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i) AS at, (i / 100)::DECIMAL(10,2) AS price
     FROM range(${first}, ${first + count}) t(i)`;
  const files = [
    await partitionFile('ps', 1, [], rows(0, 4)),
    await partitionFile('ps', 2, [], rows(100, 3)),
    await partitionFile('ps', 3, [], rows(500, 2)),
  ];
  for (const [i, f] of files.entries()) await w.append(append('ps', 'web-0', i + 1, [f]));
  const r = JSON.parse((await catalog.python(statsScan, ['ps'])).stdout) as {
    metrics: Record<string, Record<string, string | null>>[];
    all: number;
    [k: string]: unknown;
  };
  const pick = (m: Record<string, Record<string, string | null>>, col: string) => {
    const { value_count, null_value_count, lower_bound, upper_bound } = m[col]!;
    return [value_count, null_value_count, lower_bound, upper_bound];
  };
  assert.deepEqual(
    r.metrics.map((m) => ({
      event: pick(m, 'event'),
      n: pick(m, 'n'),
      at: pick(m, 'at'),
      price: pick(m, 'price'),
    })),
    [
      {
        event: ['4', '2', 'e0', 'e2'],
        n: ['4', '0', '0', '3'],
        at: ['4', '0', '2026-01-01 00:00:00+00:00', '2026-01-01 00:00:03+00:00'],
        price: ['4', '0', '0.00', '0.03'],
      },
      {
        event: ['3', '1', 'e100', 'e102'],
        n: ['3', '0', '100', '102'],
        at: ['3', '0', '2026-01-01 00:01:40+00:00', '2026-01-01 00:01:42+00:00'],
        price: ['3', '0', '1.00', '1.02'],
      },
      {
        event: ['2', '1', 'e500', 'e500'],
        n: ['2', '0', '500', '501'],
        at: ['2', '0', '2026-01-01 00:08:20+00:00', '2026-01-01 00:08:21+00:00'],
        price: ['2', '0', '5.00', '5.01'],
      },
    ],
  );
  assert.equal(r.all, 3);
  assert.deepEqual(r['n_ge_100'], { files: 2, n: [100, 101, 102, 500, 501] });
  assert.deepEqual(r['event_e500'], { files: 1, n: [500] });
  assert.deepEqual(r['price_ge_5'], { files: 1, n: [500, 501] });
  assert.deepEqual(r['at_ge'], { files: 1, n: [500, 501] });
});

// ---- Parquet field ids --------------------------------------------------------------

const idsScan = String.raw`
import json, os, sys
from pyiceberg.catalog import load_catalog
import pyarrow.fs as pafs, pyarrow.parquet as pq
p = json.loads(os.environ['TESTBED_ICEBERG_PROPS'])
cat = load_catalog('testbed', **p)
t = cat.load_table(('landfall', sys.argv[1]))
fs = pafs.S3FileSystem(endpoint_override=p['s3.endpoint'].split('://')[1], scheme='http', access_key=p['s3.access-key-id'],
                       secret_key=p['s3.secret-access-key'], region=p['s3.region'])
s = pq.read_schema(sys.argv[2], filesystem=fs)
print(json.dumps({
  'file_ids': {f.name: int(f.metadata[b'PARQUET:field_id']) for f in s if f.metadata and b'PARQUET:field_id' in f.metadata},
  'schema': [[f.field_id, f.name] for f in t.schema().fields],
  'rows': t.scan(selected_fields=('n', 'extra', 'z')).to_arrow().sort_by('n').to_pylist(),
}))
`;

void test('field ids for a View’s files are its table’s, stable across a View edit; a file with other ids is refused', async () => {
  // pv3 (test 3): event 1, n 2, at 3, price 4, extra 5. The View now writes extra and n, reordered, and a new z.
  const edited = [
    { name: 'extra', type: 'VARCHAR' },
    { name: 'n', type: 'BIGINT' },
    { name: 'z', type: 'INTEGER' },
  ];
  const compiled = {
    spec: { name: 'pv', iceberg: { namespace: 'landfall', table: 'pv3' } },
    columns: edited,
  } as unknown as CompiledView;
  const lookup = icebergFieldIds({
    config: {
      catalogUri: catalog.uri,
      warehouse: catalog.warehouse,
      requestTimeoutMs: 10_000,
      conflictRetriesMax: 5,
    },
  });
  const ids = (await lookup([compiled])).get('pv');
  assert.deepEqual(ids, { extra: 5, n: 2, z: 6 });
  // A table that does not exist yet: the ids it will be created with.
  const fresh = { ...compiled, spec: { name: 'nv', iceberg: { namespace: 'landfall', table: 'new_one' } } };
  assert.deepEqual((await lookup([fresh as CompiledView])).get('nv'), { extra: 1, n: 2, z: 3 });

  const fieldIds = (m: Record<string, number>): string =>
    `FIELD_IDS {${Object.entries(m)
      .map(([k, v]) => `${k}: ${v}`)
      .join(', ')}}`;
  const write = async (key: string, m: Record<string, number>): Promise<SegmentAppend['files'][number]> => {
    const db = await DuckDBInstance.create(':memory:');
    const c = await db.connect();
    const local = path.join(scratch, `ids-${m['n']}-${m['z']}.parquet`);
    await c.run(
      `COPY (SELECT 'x' || i AS extra, i::BIGINT AS n, i::INTEGER AS z FROM range(20, 22) t(i))
       TO '${local}' (FORMAT parquet, ${fieldIds(m)})`,
    );
    c.closeSync();
    db.closeSync();
    const body = readFileSync(local);
    await opened.store.put(key, body);
    return { key, bytes: body.length, rows: 2 };
  };
  const w = writer();
  // Wrong ids (the View's column order, 1..3): refused before anything is committed.
  const wrong = await write('lf/views/pv3/ids-wrong.parquet', { extra: 1, n: 2, z: 3 });
  await assert.rejects(w.append(append('pv3', 'web-0', 40, [wrong], edited)), (err: unknown) => {
    assert.ok(err instanceof IcebergError);
    assert.equal(err.code, 'ICEBERG_SCHEMA_MISMATCH');
    assert.match(err.message, /column extra has Parquet field id 1, the table's field extra is 5/);
    return true;
  });
  const right = await write('lf/views/pv3/ids-right.parquet', ids);
  assert.equal((await w.append(append('pv3', 'web-0', 41, [right], edited)))?.found, false);
  const r = JSON.parse((await catalog.python(idsScan, ['pv3', `${minio.bucket}/${right.key}`])).stdout) as {
    file_ids: Record<string, number>;
    schema: [number, string][];
    rows: { n: number; extra: string | null; z: number | null }[];
  };
  assert.deepEqual(r.file_ids, { extra: 5, n: 2, z: 6 });
  assert.deepEqual(r.schema.at(-1), [6, 'z']);
  assert.deepEqual(
    r.rows.filter((x) => x.n >= 20),
    [
      { n: 20, extra: 'x20', z: 20 },
      { n: 21, extra: 'x21', z: 21 },
    ],
  );
});

// ---- type changes -------------------------------------------------------------------

void test('a type change the table cannot promote is refused at View load (iceberg_type_change); int → long is promoted', async () => {
  const check = icebergViewCheck({
    config: {
      catalogUri: catalog.uri,
      warehouse: catalog.warehouse,
      requestTimeoutMs: 10_000,
      conflictRetriesMax: 5,
    },
  });
  const view = (table: string, columns: { name: string; type: string }[]): CompiledView =>
    ({ spec: { name: 'pv', iceberg: { namespace: 'landfall', table } }, columns }) as unknown as CompiledView;
  // pv3 has extra as string (test 3).
  await assert.rejects(
    check(
      view('pv3', [
        { name: 'n', type: 'BIGINT' },
        { name: 'extra', type: 'BIGINT' },
      ]),
    ),
    (err: unknown) => {
      assert.ok(err instanceof ViewError);
      assert.equal(err.code, 'iceberg_type_change');
      assert.equal(err.path, 'columns[1].type');
      assert.match(err.message, /has extra as string; long is not a promotion of it/);
      return true;
    },
  );
  // Unchanged, added and dropped columns load; so does a table that does not exist yet.
  await check(
    view('pv3', [
      { name: 'n', type: 'BIGINT' },
      { name: 'new_col', type: 'DOUBLE' },
    ]),
  );
  await check(view('no_such_table', [{ name: 'n', type: 'VARCHAR' }]));

  // int → long: allowed at load, and the commit promotes the field; the old file reads as long.
  const w = writer();
  const intFile = await partitionFile('pi', 1, [], 'SELECT i::INTEGER AS n FROM range(0, 2) t(i)');
  await w.append(append('pi', 'web-0', 1, [intFile], [{ name: 'n', type: 'INTEGER' }]));
  const wide = [{ name: 'n', type: 'BIGINT' }];
  await check(view('pi', wide));
  const longFile = await partitionFile(
    'pi',
    2,
    [],
    'SELECT (i + 5000000000)::BIGINT AS n FROM range(0, 2) t(i)',
  );
  assert.equal((await w.append(append('pi', 'web-0', 2, [longFile], wide)))?.found, false);
  const r = JSON.parse(
    (
      await catalog.python(scan.replace("'price': str(sorted(rows.column('price').to_pylist())[-1]),", ''), [
        'pi',
      ])
    ).stdout,
  ) as Scan;
  assert.deepEqual(r.schema, [[1, 'n', 'long']]);
  assert.deepEqual(r.n, [0, 1, 5000000000, 5000000001]);
});
