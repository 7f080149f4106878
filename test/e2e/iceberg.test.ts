// Views as Iceberg tables, end to end: `landfall serve` → MinIO + Apache
// Iceberg's own REST catalog (RESTCatalogServer, S3FileIO). Each sealed
// segment's view files are appended to the view's table in one snapshot
// before the commit marker, which names the snapshot. PyIceberg (from PyPI,
// not our code) loads the table and scans exactly the rows the markers count
// as view rows, with the declared types; every snapshot is one marker's.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { scratchDir, startIcebergCatalog, startMinio, waitFor } from '../harness/index.ts';
import { logLines } from './helpers/cli-node.ts';
import type { IcebergCatalog, MinioServer } from '../harness/index.ts';
import { getJson, listKeys, post, serve, type MarkerJson, type ServeNode } from './helpers/views.ts';

const endpoint = 'web';
const instance = 'web-0';
const prefix = 'lf';

let minio: MinioServer;
let s3: S3Client;
let catalog: IcebergCatalog;
let node: ServeNode | undefined;

before(async () => {
  minio = await startMinio();
  s3 = minio.s3();
  catalog = await startIcebergCatalog({ minio });
});
after(async () => {
  await node?.proc.stop({ graceMs: 5_000 });
  await catalog?.stop();
  await minio?.stop();
});

const VIEW = `
name: page_views
columns:
  - { name: event,     type: VARCHAR,       path: $.event, required: true }
  - { name: user_id,   type: VARCHAR,       path: $.user }
  - { name: viewed_at, type: TIMESTAMPTZ,   path: $.ts,    required: true }
  - { name: n,         type: BIGINT,        path: $.n }
  - { name: price,     type: "DECIMAL(10,2)", path: $.price }
filter: "event = 'page_view'"
partitioning:
  - { expression: "date_trunc('day', viewed_at)", alias: dt }
iceberg: { namespace: landfall }
`;

type TableMarker = MarkerJson & {
  tables?: { view: string; namespace: string; table: string; snapshotId: string }[];
};

async function markers(): Promise<TableMarker[]> {
  const keys = await listKeys(s3, minio.bucket, `${prefix}/commits/${endpoint}/`);
  return Promise.all(keys.map((key) => getJson<TableMarker>(s3, minio.bucket, key)));
}

async function nthMarker(n: number): Promise<TableMarker[]> {
  return waitFor(
    async () => {
      const ms = await markers();
      return ms.length >= n ? ms : undefined;
    },
    { what: `commit marker #${n}`, timeoutMs: 60_000, intervalMs: 100, process: node!.proc },
  );
}

const scan = String.raw`
import json, os
from pyiceberg.catalog import load_catalog
cat = load_catalog('testbed', **json.loads(os.environ['TESTBED_ICEBERG_PROPS']))
t = cat.load_table('landfall.page_views')
rows = t.scan().to_arrow().sort_by([('n', 'ascending')])
# A second reader: pyarrow alone over the files PyIceberg's plan lists.
import pyarrow.fs as pafs, pyarrow.parquet as pq
p = json.loads(os.environ['TESTBED_ICEBERG_PROPS'])
fs = pafs.S3FileSystem(endpoint_override=p['s3.endpoint'].split('://')[1], scheme='http', access_key=p['s3.access-key-id'],
                       secret_key=p['s3.secret-access-key'], region=p['s3.region'])
files = sorted(task.file.file_path for task in t.scan().plan_files())
direct = sorted(n for f in files for n in pq.read_table(f[len('s3://'):], filesystem=fs).column('n').to_pylist())
print(json.dumps({
  'schema': [[f.field_id, f.name, str(f.field_type), f.required] for f in t.schema().fields],
  'arrow': {x.name: str(x.type) for x in rows.schema},
  'rows': [{k: (str(v) if v is not None and k in ('viewed_at', 'price') else v) for k, v in r.items()} for r in rows.to_pylist()],
  'snapshots': [{'id': str(s.snapshot_id), 'segment': s.summary.additional_properties.get('landfall.segment-id'),
                 'records': s.summary.additional_properties.get('added-records')} for s in t.snapshots()],
  'current': str(t.current_snapshot().snapshot_id),
  'files': files,
  'direct': direct,
  'spec': [[f.name, str(f.transform), f.source_id] for f in t.spec().fields],
  # The Parquet field ids the node wrote into each data file.
  'file_ids': sorted(set(json.dumps({x.name: int(x.metadata[b'PARQUET:field_id']) for x in pq.read_schema(f[len('s3://'):], filesystem=fs)
                                     if x.metadata and b'PARQUET:field_id' in x.metadata}) for f in files)),
  # A filter on the partition source column: PyIceberg plans only the matching day's files.
  'nov28': {'files': sorted(task.file.file_path for task in t.scan(row_filter="viewed_at >= '2026-11-28T00:00:00+00:00'").plan_files()),
            'n': sorted(t.scan(row_filter="viewed_at >= '2026-11-28T00:00:00+00:00'").to_arrow().column('n').to_pylist())},
}))
`;

interface Scan {
  files: string[];
  direct: number[];
  schema: [number, string, string, boolean][];
  arrow: Record<string, string>;
  rows: Record<string, unknown>[];
  snapshots: { id: string; segment: string; records: string }[];
  current: string;
  spec: [string, string, number][];
  nov28: { files: string[]; n: number[] };
  file_ids: string[];
}

const pv = (user: string, ts: string, n: number, price: string): string =>
  JSON.stringify({ event: 'page_view', user, ts, n, price });

void test('landfall serve appends each segment’s view rows to an Iceberg table that PyIceberg scans exactly', async () => {
  const viewsDir = scratchDir('iceberg-views');
  await writeFile(path.join(viewsDir, 'page_views.yaml'), VIEW);
  const dir = scratchDir('iceberg-node');
  node = await serve('landfall-iceberg', minio, path.join(dir, 'node.log'), [
    `--s3.bucket=${minio.bucket}`,
    `--s3.endpointUrl=${minio.endpoint}`,
    `--s3.prefix=${prefix}`,
    `--endpoint.name=${endpoint}`,
    `--instance.id=${instance}`,
    `--wal.dir=${path.join(dir, 'wal')}`,
    '--wal.segmentAgeMsMax=400',
    `--views.dir=${viewsDir}`,
    '--views.threads=1',
    '--delivery.staleUploadAgeMs=0',
    `--iceberg.catalogUri=${catalog.uri}`,
    `--iceberg.warehouse=${catalog.warehouse}`,
  ]);

  // Round 1: two days, a filtered row, two DLQ rows.
  await post(node.url, [
    pv('u1', '2026-11-26T10:00:00Z', 1, '1.50'),
    pv('u2', '2026-11-27T01:30:00+02:00', 2, '2.25'),
    pv('u3', '2026-11-27T08:00:00.123456Z', 3, '0.01'),
    '{"event":"click","user":"x","ts":"2026-11-26T10:00:00Z"}',
    '{"event":"page_view","user":"bad","ts":"yesterday"}',
    'not json',
  ]);
  await nthMarker(1);
  // Round 2: another segment, another snapshot.
  await post(node.url, [
    pv('u4', '2026-11-28T00:00:00Z', 4, '10'),
    pv('u5', '2026-11-28T00:00:01Z', 5, '99.99'),
  ]);
  const ms = await nthMarker(2);
  assert.equal(ms.length, 2);

  // Every marker names its table and snapshot; the view rows they count add up.
  const counted = ms.reduce((sum, m) => sum + (m.views[0]?.rows?.view ?? 0), 0);
  assert.equal(counted, 5);
  for (const m of ms) {
    assert.equal(m.tables?.length, 1, 'the marker names the table');
    assert.deepEqual(
      { view: m.tables[0]!.view, namespace: m.tables[0]!.namespace, table: m.tables[0]!.table },
      { view: 'page_views', namespace: 'landfall', table: 'page_views' },
    );
    assert.match(m.tables[0]!.snapshotId, /^[0-9]+$/);
  }

  const r = JSON.parse((await catalog.python(scan)).stdout) as Scan;
  assert.deepEqual(r.schema, [
    [1, 'event', 'string', false],
    [2, 'user_id', 'string', false],
    [3, 'viewed_at', 'timestamptz', false],
    [4, 'n', 'long', false],
    [5, 'price', 'decimal(10, 2)', false],
  ]);
  assert.deepEqual(r.arrow, {
    event: 'string',
    user_id: 'string',
    viewed_at: 'timestamp[us, tz=UTC]',
    n: 'int64',
    price: 'decimal128(10, 2)',
  });
  assert.equal(r.rows.length, counted, 'the table holds exactly the rows the markers count');
  assert.deepEqual(r.rows, [
    { event: 'page_view', user_id: 'u1', viewed_at: '2026-11-26 10:00:00+00:00', n: 1, price: '1.50' },
    { event: 'page_view', user_id: 'u2', viewed_at: '2026-11-26 23:30:00+00:00', n: 2, price: '2.25' },
    { event: 'page_view', user_id: 'u3', viewed_at: '2026-11-27 08:00:00.123456+00:00', n: 3, price: '0.01' },
    { event: 'page_view', user_id: 'u4', viewed_at: '2026-11-28 00:00:00+00:00', n: 4, price: '10.00' },
    { event: 'page_view', user_id: 'u5', viewed_at: '2026-11-28 00:00:01+00:00', n: 5, price: '99.99' },
  ]);
  // One snapshot per marker, in marker order, each the one its marker names.
  assert.deepEqual(
    r.snapshots.map((s) => [s.id, s.segment, s.records]),
    ms.map((m) => [m.tables![0]!.snapshotId, m.segmentId, String(m.views[0]!.rows!.view)]),
  );
  assert.equal(r.current, ms[1]!.tables![0]!.snapshotId);
  // The table's files are exactly the markers' view artifacts, and pyarrow
  // reading them directly agrees with PyIceberg's scan.
  assert.deepEqual(
    r.files,
    ms
      .flatMap((m) =>
        m.artifacts.filter((a) => a.kind === 'view').map((a) => `s3://${minio.bucket}/${a.key}`),
      )
      .sort(),
  );
  assert.deepEqual(r.direct, [1, 2, 3, 4, 5]);
  // The View's date_trunc('day', viewed_at) AS dt is the table's partition spec, and prunes.
  assert.deepEqual(r.spec, [['dt', 'day', 3]]);
  assert.deepEqual(
    r.nov28.files,
    r.files.filter((f) => f.includes('/dt=2026-11-28/')),
  );
  assert.ok(r.nov28.files.length > 0 && r.nov28.files.length < r.files.length);
  assert.deepEqual(r.nov28.n, [4, 5]);
  // Every data file carries the table's field ids (no name mapping needed).
  assert.deepEqual(
    r.file_ids.map((x) => JSON.parse(x) as unknown),
    [{ event: 1, user_id: 2, viewed_at: 3, n: 4, price: 5 }],
  );
});

const CRASH_VIEW = `
name: orders
columns:
  - { name: id,  type: BIGINT,  path: $.id, required: true }
  - { name: sku, type: VARCHAR, path: $.sku }
iceberg: { namespace: crash, table: orders }
`;

const crashScan = String.raw`
import json, os
from pyiceberg.catalog import load_catalog
cat = load_catalog('testbed', **json.loads(os.environ['TESTBED_ICEBERG_PROPS']))
t = cat.load_table('crash.orders')
print(json.dumps({
  'ids': sorted(t.scan().to_arrow().column('id').to_pylist()),
  'snapshots': [[str(s.snapshot_id), s.summary.additional_properties.get('landfall.segment-id')] for s in t.snapshots()],
}))
`;

void test('kill -9 between the table commit and the marker, then a restart: the snapshot is found, no row twice', async () => {
  const crashPrefix = 'lf2';
  const viewsDir = scratchDir('iceberg-crash-views');
  await writeFile(path.join(viewsDir, 'orders.yaml'), CRASH_VIEW);
  const dir = scratchDir('iceberg-crash-node');
  const flags = [
    `--s3.bucket=${minio.bucket}`,
    `--s3.endpointUrl=${minio.endpoint}`,
    `--s3.prefix=${crashPrefix}`,
    `--endpoint.name=shop`,
    `--instance.id=shop-0`,
    `--wal.dir=${path.join(dir, 'wal')}`,
    '--wal.segmentAgeMsMax=400',
    `--views.dir=${viewsDir}`,
    '--views.threads=1',
    '--delivery.staleUploadAgeMs=0',
    '--delivery.segmentRetryDelayMsMax=500',
    `--iceberg.catalogUri=${catalog.uri}`,
    `--iceberg.warehouse=${catalog.warehouse}`,
  ];
  const log1 = path.join(dir, 'node-1.log');
  const first = await serve('landfall-iceberg-crash', minio, log1, flags);
  const epoch = logLines(log1).find((l) => l.msg === 'WAL opened')?.['epoch'];
  assert.equal(typeof epoch, 'string');
  // The marker's key is taken by something unreadable: the node commits the
  // table, then cannot write its marker, and keeps retrying: the window
  // between the two steps, held open.
  const markerKey = `${crashPrefix}/commits/shop/shop-0/${String(epoch)}/00000000000000000001.json`;
  await s3.send(new PutObjectCommand({ Bucket: minio.bucket, Key: markerKey, Body: 'not a marker' }));
  await post(
    first.url,
    [1, 2, 3].map((id) => JSON.stringify({ id, sku: `s${id}` })),
  );
  const committed = await waitFor(() => first.logs().find((l) => l.msg === 'iceberg snapshot committed'), {
    what: 'the table commit',
    timeoutMs: 60_000,
    intervalMs: 50,
    process: first.proc,
  });
  await waitFor(
    () =>
      first.logs().some((l) => l.msg === 'delivering the segment failed; it stays on disk and is retried'),
    {
      what: 'the marker write to fail',
      timeoutMs: 30_000,
      process: first.proc,
    },
  );
  await first.proc.stop({ graceMs: 0 }); // SIGKILL
  await s3.send(new DeleteObjectCommand({ Bucket: minio.bucket, Key: markerKey }));

  const log2 = path.join(dir, 'node-2.log');
  const second = await serve('landfall-iceberg-crash-2', minio, log2, flags);
  try {
    const found = await waitFor(
      () => second.logs().find((l) => l.msg === 'iceberg snapshot of this segment found (committed earlier)'),
      {
        what: 'the restarted node to find its snapshot',
        timeoutMs: 60_000,
        intervalMs: 50,
        process: second.proc,
      },
    );
    assert.equal(found['snapshotId'], committed['snapshotId']);
    const marker = await waitFor(
      async () => {
        const keys = await listKeys(s3, minio.bucket, `${crashPrefix}/commits/shop/`);
        return keys.includes(markerKey) ? getJson<TableMarker>(s3, minio.bucket, markerKey) : undefined;
      },
      { what: 'the marker after the restart', timeoutMs: 60_000, intervalMs: 100, process: second.proc },
    );
    assert.equal(marker.tables?.[0]?.snapshotId, committed['snapshotId']);
    assert.equal(marker.views[0]?.rows?.view, 3);
    const r = JSON.parse((await catalog.python(crashScan)).stdout) as {
      ids: number[];
      snapshots: string[][];
    };
    assert.deepEqual(r.ids, [1, 2, 3], 'every row once');
    assert.deepEqual(r.snapshots, [[String(committed['snapshotId']), '00000000000000000001']]);
  } finally {
    await second.proc.stop({ graceMs: 5_000 });
  }
});

void test('kill -9 between the upload and the table commit (catalog down), restart: committed once', async () => {
  const p = 'lf3';
  const viewsDir = scratchDir('iceberg-crash2-views');
  await writeFile(
    path.join(viewsDir, 'orders.yaml'),
    CRASH_VIEW.replace('namespace: crash', 'namespace: crash2'),
  );
  const dir = scratchDir('iceberg-crash2-node');
  const flags = [
    `--s3.bucket=${minio.bucket}`,
    `--s3.endpointUrl=${minio.endpoint}`,
    `--s3.prefix=${p}`,
    `--endpoint.name=shop`,
    `--instance.id=shop-0`,
    `--wal.dir=${path.join(dir, 'wal')}`,
    '--wal.segmentAgeMsMax=400',
    `--views.dir=${viewsDir}`,
    '--views.threads=1',
    '--delivery.staleUploadAgeMs=0',
    '--delivery.segmentRetryDelayMsMax=500',
    '--iceberg.requestTimeoutMs=2000',
    `--iceberg.catalogUri=${catalog.uri}`,
    `--iceberg.warehouse=${catalog.warehouse}`,
  ];
  const first = await serve('landfall-iceberg-crash2', minio, path.join(dir, 'node-1.log'), flags);
  await catalog.stopServer();
  try {
    await post(
      first.url,
      [7, 8].map((id) => JSON.stringify({ id, sku: `s${id}` })),
    );
    // The view files are uploaded; the commit cannot reach the catalog.
    await waitFor(
      () =>
        first
          .logs()
          .some(
            (l) =>
              l.msg === 'delivering the segment failed; it stays on disk and is retried' &&
              JSON.stringify(l).includes('ICEBERG_CATALOG_UNAVAILABLE'),
          ),
      { what: 'the table commit to fail', timeoutMs: 60_000, intervalMs: 50, process: first.proc },
    );
    await first.proc.stop({ graceMs: 0 }); // SIGKILL
  } finally {
    await catalog.startServer();
  }
  const second = await serve('landfall-iceberg-crash2-2', minio, path.join(dir, 'node-2.log'), flags);
  try {
    const marker = await waitFor(
      async () => {
        const keys = await listKeys(s3, minio.bucket, `${p}/commits/shop/`);
        return keys.length > 0 ? getJson<TableMarker>(s3, minio.bucket, keys[0]!) : undefined;
      },
      { what: 'the marker after the restart', timeoutMs: 60_000, intervalMs: 100, process: second.proc },
    );
    const r = JSON.parse(
      (await catalog.python(crashScan.replace("'crash.orders'", "'crash2.orders'"))).stdout,
    ) as {
      ids: number[];
      snapshots: string[][];
    };
    assert.deepEqual(r.ids, [7, 8], 'every row once');
    assert.deepEqual(r.snapshots, [[marker.tables?.[0]?.snapshotId, marker.segmentId]]);
  } finally {
    await second.proc.stop({ graceMs: 5_000 });
  }
});

const MISFIT_VIEW = `
name: orders
columns:
  - { name: id,  type: BIGINT,  path: $.id, required: true }
  - { name: sku, type: VARCHAR, path: $.sku }
iceberg: { namespace: misfit, table: orders }
`;

// Someone made misfit.orders with `id` as a string: the View's BIGINT files cannot go in.
const makeMisfitTable = String.raw`
import json, os
from pyiceberg.catalog import load_catalog
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField, StringType
cat = load_catalog('testbed', **json.loads(os.environ['TESTBED_ICEBERG_PROPS']))
cat.create_namespace_if_not_exists('misfit')
cat.create_table('misfit.orders', schema=Schema(NestedField(1, 'id', StringType(), required=False), NestedField(2, 'sku', StringType(), required=False)))
print('ok')
`;

const misfitSnapshots = String.raw`
import json, os
from pyiceberg.catalog import load_catalog
cat = load_catalog('testbed', **json.loads(os.environ['TESTBED_ICEBERG_PROPS']))
print(json.dumps(len(cat.load_table('misfit.orders').snapshots())))
`;

void test('a View its table cannot take does not hold delivery back: the marker records why, later segments flow; a reload is refused (iceberg_type_change)', async () => {
  const misfitPrefix = 'lf3';
  const viewsDir = scratchDir('iceberg-misfit-views');
  await writeFile(path.join(viewsDir, 'orders.yaml'), MISFIT_VIEW);
  const dir = scratchDir('iceberg-misfit-node');
  const misfit = await serve('landfall-iceberg-misfit', minio, path.join(dir, 'node.log'), [
    `--s3.bucket=${minio.bucket}`,
    `--s3.endpointUrl=${minio.endpoint}`,
    `--s3.prefix=${misfitPrefix}`,
    '--endpoint.name=misfit',
    '--instance.id=misfit-0',
    `--wal.dir=${path.join(dir, 'wal')}`,
    '--wal.segmentAgeMsMax=400',
    `--views.dir=${viewsDir}`,
    '--views.threads=1',
    '--delivery.staleUploadAgeMs=0',
    `--iceberg.catalogUri=${catalog.uri}`,
    `--iceberg.warehouse=${catalog.warehouse}`,
  ]);
  try {
    // The table is made (id a string) after the View loaded: the load-time
    // check could not see it, so the commit is what finds the misfit.
    assert.equal((await catalog.python(makeMisfitTable)).stdout.trim(), 'ok');
    const delivered = async (n: number): Promise<TableMarker[]> =>
      waitFor(
        async () => {
          const keys = await listKeys(s3, minio.bucket, `${misfitPrefix}/commits/misfit/`);
          return keys.length >= n
            ? Promise.all(keys.map((key) => getJson<TableMarker>(s3, minio.bucket, key)))
            : undefined;
        },
        { what: `misfit marker #${n}`, timeoutMs: 60_000, intervalMs: 100, process: misfit.proc },
      );
    await post(
      misfit.url,
      [1, 2].map((id) => JSON.stringify({ id, sku: `s${id}` })),
    );
    await delivered(1);
    await post(
      misfit.url,
      [3].map((id) => JSON.stringify({ id, sku: `s${id}` })),
    );
    const ms = await delivered(2);
    for (const m of ms) {
      const t = m.tables?.[0] as
        { snapshotId?: string; error?: { code: string; message: string } } | undefined;
      assert.equal(t?.snapshotId, undefined, 'no snapshot for a View the table cannot take');
      assert.equal(t?.error?.code, 'ICEBERG_SCHEMA_MISMATCH');
      assert.match(t?.error?.message ?? '', /id: table has "string", view writes long/);
      assert.equal(
        m.artifacts.filter((a) => a.kind === 'view').length > 0,
        true,
        'the view files still go out',
      );
    }
    assert.equal(
      ms.reduce((sum, m) => sum + (m.views[0]?.rows?.view ?? 0), 0),
      3,
    );
    assert.equal(JSON.parse((await catalog.python(misfitSnapshots)).stdout), 0, 'nothing appended');
    // A reload of the View (any edit) is checked against the table as it is now: refused, coded, on the column.
    await writeFile(path.join(viewsDir, 'orders.yaml'), `${MISFIT_VIEW}# edited\n`);
    const refused = await waitFor(() => misfit.logs().find((l) => l['code'] === 'iceberg_type_change'), {
      what: 'the View reload to be refused',
      timeoutMs: 60_000,
      intervalMs: 100,
      process: misfit.proc,
    });
    assert.equal(refused['path'], 'columns[0].type');
    assert.match(String(refused['error']), /misfit\.orders has id as string; long is not a promotion of it/);
  } finally {
    await misfit.proc.stop({ graceMs: 5_000 });
  }
});
