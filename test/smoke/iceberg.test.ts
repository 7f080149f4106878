// Smoke: the test bed's Iceberg REST catalog (Apache Iceberg's own
// RESTCatalogServer, JDBC catalog, S3FileIO on MinIO) and the PyIceberg
// reader work together, with nothing of Landfall in between: PyIceberg's own
// writer appends, a fresh catalog client reads it back, and a catalog
// restart keeps the table (the JDBC catalog is a file).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { startIcebergCatalog, startMinio } from '../harness/index.ts';
import type { IcebergCatalog, MinioServer } from '../harness/index.ts';

let minio: MinioServer;
let catalog: IcebergCatalog;

before(async () => {
  minio = await startMinio();
  catalog = await startIcebergCatalog({ minio });
});

after(async () => {
  await catalog?.stop();
  await minio?.stop();
});

const py = String.raw`
import json, os, sys
import pyarrow as pa
from pyiceberg.catalog import load_catalog
cat = load_catalog('testbed', **json.loads(os.environ['TESTBED_ICEBERG_PROPS']))
op = sys.argv[1]
if op == 'write':
    cat.create_namespace_if_not_exists('smoke')
    data = pa.table({'id': pa.array([1, 2, 3], pa.int64()), 'name': pa.array(['a', 'b', None], pa.string())})
    t = cat.create_table('smoke.t', schema=data.schema)
    t.append(data)
    print(json.dumps({'location': t.location()}))
else:
    t = cat.load_table('smoke.t')
    rows = t.scan().to_arrow().sort_by('id').to_pylist()
    print(json.dumps({'rows': rows, 'snapshots': len(t.snapshots())}))
`;

void test('PyIceberg creates, appends and scans a table through the REST catalog on MinIO', async (t) => {
  t.diagnostic(`catalog start-up ms: ${catalog.startupMs}`);
  const w = JSON.parse((await catalog.python(py, ['write'])).stdout) as { location: string };
  assert.ok(w.location.startsWith(`s3://${catalog.bucket}/warehouse/`), w.location);
  // The table's files really are in MinIO (S3FileIO, not a local warehouse).
  const listed = await minio
    .s3()
    .send(new ListObjectsV2Command({ Bucket: catalog.bucket, Prefix: 'warehouse/smoke/' }));
  const keys = (listed.Contents ?? []).map((o) => o.Key ?? '');
  assert.ok(
    keys.some((k) => k.endsWith('.metadata.json')),
    keys.join(', '),
  );
  assert.ok(
    keys.some((k) => k.endsWith('.parquet')),
    keys.join(', '),
  );

  await catalog.stopServer();
  await catalog.startServer();
  const r = JSON.parse((await catalog.python(py, ['read'])).stdout) as { rows: unknown[]; snapshots: number };
  assert.deepEqual(r.rows, [
    { id: 1, name: 'a' },
    { id: 2, name: 'b' },
    { id: 3, name: null },
  ]);
  assert.equal(r.snapshots, 1);
});
