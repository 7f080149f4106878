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
