// The pure parts of the Iceberg writer: the hand-rolled Avro writer checked
// against an independent implementation (avsc) and against our own reader,
// the manifest schemas' field ids, exact JSON for long ids, and the mapping
// of View columns to an Iceberg schema.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import avsc from 'avsc';
import {
  decodeAvroContainer,
  encodeAvro,
  encodeAvroContainer,
  type AvroSchema,
} from '../src/iceberg/avro.ts';
import { parseJsonExact, stringifyJsonExact } from '../src/iceberg/catalog.ts';
import {
  encodeManifest,
  encodeManifestList,
  manifestEntrySchema,
  manifestFileSchema,
} from '../src/iceberg/manifest.ts';
import {
  canPromote,
  checkViewFitsTable,
  icebergType,
  nameMapping,
  typeChanges,
  viewToIcebergSchema,
} from '../src/iceberg/schema.ts';
import { IcebergError } from '../src/iceberg/errors.ts';
import { icebergTableCommit } from '../src/iceberg/delivery.ts';
import { icebergFieldIds } from '../src/iceberg/field-ids.ts';
import type { CompiledView } from '../src/views/compile.ts';
import { compileView, createParquetDb, parseViewYaml } from '../src/views/index.ts';
import {
  bindSpec,
  fieldSummaries,
  partitionAvroType,
  partitionsOfViewKey,
  partitionValue,
  specForView,
  type ViewPartitionLevel,
} from '../src/iceberg/partition.ts';
import { viewKey, type HivePartition } from '../src/delivery/keys.ts';
import { decodeFooter, footerFieldIds, footerMetrics } from '../src/iceberg/footer.ts';
import { DuckDBInstance } from '@duckdb/node-api';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** Decodes a container file with avsc (an independent Avro implementation). */
async function avscRead(buf: Buffer): Promise<{ metadata: Record<string, string>; objects: unknown[] }> {
  const objects: unknown[] = [];
  let metadata: Record<string, string> = {};
  const decoder = new avsc.streams.BlockDecoder({
    parseHook: (schema) => avsc.Type.forSchema(schema, { wrapUnions: false, registry: {} }),
  });
  decoder.on('metadata', (_type: unknown, _codec: unknown, header: { meta: Record<string, Buffer> }) => {
    metadata = Object.fromEntries(Object.entries(header.meta).map(([k, v]) => [k, v.toString('utf8')]));
  });
  decoder.on('data', (o: unknown) => objects.push(o));
  const done = new Promise<void>((resolve, reject) => {
    decoder.on('end', resolve);
    decoder.on('error', reject);
  });
  decoder.end(buf);
  await done;
  return { metadata, objects };
}

void test('Avro values encode as avsc encodes them (zig-zag longs, strings, unions, arrays, maps, records)', () => {
  const schema: AvroSchema = {
    type: 'record',
    name: 'r',
    fields: [
      { name: 'i', type: 'int' },
      { name: 'l', type: 'long' },
      { name: 's', type: 'string' },
      { name: 'b', type: 'bytes' },
      { name: 'o', type: ['null', 'long'] },
      { name: 'a', type: { type: 'array', items: 'int' } },
      { name: 'm', type: { type: 'map', values: 'boolean' } },
      { name: 'd', type: 'double' },
      { name: 'f', type: 'float' },
    ],
  };
  const t = avsc.Type.forSchema(schema as avsc.Schema, { wrapUnions: false });
  // avsc computes zig-zag in doubles: past ±2^51 it is avsc that rounds (our bigint path is checked below).
  for (const l of [0, 1, -1, 63, -64, 64, 300, -300, 2 ** 31, 2 ** 40 + 7, 2 ** 51 + 1, -(2 ** 51) - 1]) {
    const v = {
      i: -5,
      l,
      s: 'héllo',
      b: Buffer.from([0, 255]),
      o: l,
      a: [1, -2, 3],
      m: { x: true, y: false },
      d: 1.5,
      f: 0.25,
    };
    assert.deepEqual(encodeAvro(schema, v), t.toBuffer(v), `long ${l}`);
  }
  assert.deepEqual(
    encodeAvro(schema, { i: 0, l: 0, s: '', b: Buffer.alloc(0), o: null, a: [], m: {}, d: 0, f: 0 }),
    t.toBuffer({ i: 0, l: 0, s: '', b: Buffer.alloc(0), o: null, a: [], m: {}, d: 0, f: 0 }),
  );
});

void test('longs past 2^53 round-trip exactly through our writer and reader (bigint)', () => {
  const big = (1n << 62n) + 12345n;
  const buf = encodeAvroContainer('long', [big, -big, 0n]);
  assert.deepEqual(decodeAvroContainer(buf, inflateRawSync).objects, [big, -big, 0n]);
});

void test('a manifest reads back with avsc: header metadata, field ids in the schema, one ADDED entry per file', async () => {
  const schema = viewToIcebergSchema({
    view: 'pv',
    columns: [
      { name: 'event', type: 'VARCHAR' },
      { name: 'n', type: 'BIGINT' },
    ],
  });
  const buf = encodeManifest({
    schemaJson: JSON.stringify(schema),
    schemaId: 0,
    files: [
      { path: 's3://b/views/pv/dt=2026-01-01/a.parquet', rows: 3, bytes: 812 },
      { path: 's3://b/views/pv/dt=2026-01-02/b.parquet', rows: 1, bytes: 400 },
    ],
  });
  const { metadata, objects } = await avscRead(buf);
  assert.equal(metadata['format-version'], '2');
  assert.equal(metadata['content'], 'data');
  assert.equal(metadata['partition-spec'], '[]');
  assert.deepEqual(JSON.parse(metadata['schema'] ?? ''), schema);
  const written = JSON.parse(metadata['avro.schema'] ?? '') as {
    fields: { name: string; 'field-id': number }[];
  };
  assert.deepEqual(
    written.fields.map((f) => [f.name, f['field-id']]),
    [
      ['status', 0],
      ['snapshot_id', 1],
      ['sequence_number', 3],
      ['file_sequence_number', 4],
      ['data_file', 2],
    ],
  );
  assert.equal(objects.length, 2);
  const e = objects[0] as { status: number; snapshot_id: null; data_file: Record<string, unknown> };
  assert.equal(e.status, 1);
  assert.equal(e.snapshot_id, null);
  assert.equal(e.data_file['file_path'], 's3://b/views/pv/dt=2026-01-01/a.parquet');
  assert.equal(e.data_file['file_format'], 'PARQUET');
  assert.equal(e.data_file['record_count'], 3);
  assert.equal(e.data_file['file_size_in_bytes'], 812);
  // The same input gives the same bytes (a retried upload writes the same object).
  assert.deepEqual(
    encodeManifest({
      schemaJson: JSON.stringify(schema),
      schemaId: 0,
      files: [
        { path: 's3://b/views/pv/dt=2026-01-01/a.parquet', rows: 3, bytes: 812 },
        { path: 's3://b/views/pv/dt=2026-01-02/b.parquet', rows: 1, bytes: 400 },
      ],
    }),
    buf,
  );
});

void test('a manifest list carries the new manifest first, then the parent’s, with sequence numbers', async () => {
  const parentList = encodeManifestList({
    snapshotId: 11n,
    parentSnapshotId: null,
    sequenceNumber: 1n,
    inherited: [],
    added: { path: 's3://b/m1.avro', bytes: 100, files: 2, rows: 4 },
  });
  const inherited = decodeAvroContainer(parentList, inflateRawSync).objects as never[];
  const buf = encodeManifestList({
    snapshotId: 22n,
    parentSnapshotId: 11n,
    sequenceNumber: 2n,
    inherited,
    added: { path: 's3://b/m2.avro', bytes: 200, files: 1, rows: 7 },
  });
  const { metadata, objects } = await avscRead(buf);
  assert.equal(metadata['snapshot-id'], '22');
  assert.equal(metadata['parent-snapshot-id'], '11');
  assert.equal(metadata['sequence-number'], '2');
  const rows = objects as {
    manifest_path: string;
    sequence_number: number;
    added_snapshot_id: number;
    added_rows_count: number;
  }[];
  assert.deepEqual(
    rows.map((r) => [r.manifest_path, r.sequence_number, r.added_snapshot_id, r.added_rows_count]),
    [
      ['s3://b/m2.avro', 2, 22, 7],
      ['s3://b/m1.avro', 1, 11, 4],
    ],
  );
  const ids = (JSON.parse(metadata['avro.schema'] ?? '') as { fields: { 'field-id': number }[] }).fields.map(
    (f) => f['field-id'],
  );
  assert.deepEqual(ids, [500, 501, 502, 517, 515, 516, 503, 504, 505, 506, 512, 513, 514, 507, 519]);
});

void test('our reader takes a deflate container written by avsc (what Java engines write)', async () => {
  const t = avsc.Type.forSchema(manifestFileSchema as avsc.Schema, { wrapUnions: false });
  const chunks: Buffer[] = [];
  const enc = new avsc.streams.BlockEncoder(t, {
    codec: 'deflate',
    codecs: {
      deflate: (b: Buffer, cb: (e: Error | null, r?: Buffer) => void) => cb(null, deflateRawSync(b)),
    },
  });
  enc.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise<void>((r) => enc.on('end', () => r()));
  const entry = {
    manifest_path: 's3://x/m.avro',
    manifest_length: 10,
    partition_spec_id: 0,
    content: 0,
    sequence_number: 5,
    min_sequence_number: 5,
    added_snapshot_id: 99,
    added_files_count: 1,
    existing_files_count: 0,
    deleted_files_count: 0,
    added_rows_count: 3,
    existing_rows_count: 0,
    deleted_rows_count: 0,
    partitions: null,
    key_metadata: null,
  };
  enc.write(entry);
  enc.end();
  await ended;
  const got = decodeAvroContainer(Buffer.concat(chunks), inflateRawSync);
  assert.equal(got.metadata['avro.codec'], 'deflate');
  const o = got.objects[0] as Record<string, unknown>;
  assert.equal(o['manifest_path'], 's3://x/m.avro');
  assert.equal(o['added_snapshot_id'], 99n);
  assert.equal(o['partitions'], null);
  // And the manifest entry schema is one avsc accepts as valid Avro.
  assert.doesNotThrow(() => avsc.Type.forSchema(manifestEntrySchema as avsc.Schema, { wrapUnions: false }));
});

void test('corrupt containers are refused, never half-read', () => {
  const buf = encodeAvroContainer('long', [1n, 2n]);
  assert.throws(
    () => decodeAvroContainer(buf.subarray(0, buf.length - 3), inflateRawSync),
    /ends early|sync/,
  );
  const bad = Buffer.from(buf);
  bad[bad.length - 1] = bad[bad.length - 1]! ^ 0xff;
  assert.throws(() => decodeAvroContainer(bad, inflateRawSync), /sync marker/);
  assert.throws(() => decodeAvroContainer(Buffer.from('nope'), inflateRawSync), /not an Avro/);
});

void test('JSON with snapshot ids past 2^53 parses and prints exactly', () => {
  const text = '{"snapshot-id":9223372036854775807,"n":3,"x":1.5}';
  const v = parseJsonExact(text) as { 'snapshot-id': bigint; n: number };
  assert.equal(v['snapshot-id'], 9223372036854775807n);
  assert.equal(v.n, 3);
  assert.equal(stringifyJsonExact(v), text);
});

void test('View columns map to Iceberg types with ids 1..n and a name mapping; unsupported types are refused', () => {
  const s = viewToIcebergSchema({
    view: 'v',
    columns: [
      { name: 'a', type: 'VARCHAR' },
      { name: 'b', type: 'TIMESTAMP WITH TIME ZONE' },
      { name: 'c', type: 'DECIMAL(10,2)' },
      { name: 'd', type: 'DATE' },
      { name: 'e', type: 'JSON' },
      { name: 'f', type: 'BOOLEAN' },
      { name: 'g', type: 'DOUBLE' },
      { name: 'h', type: 'INTEGER' },
      { name: 'i', type: 'TIMESTAMP' },
    ],
  });
  assert.deepEqual(
    s.fields.map((f) => [f.id, f.name, f.type, f.required]),
    [
      [1, 'a', 'string', false],
      [2, 'b', 'timestamptz', false],
      [3, 'c', 'decimal(10, 2)', false],
      [4, 'd', 'date', false],
      [5, 'e', 'string', false],
      [6, 'f', 'boolean', false],
      [7, 'g', 'double', false],
      [8, 'h', 'int', false],
      [9, 'i', 'timestamp', false],
    ],
  );
  assert.deepEqual((JSON.parse(nameMapping(s)) as unknown[])[1], { 'field-id': 2, names: ['b'] });
  for (const t of ['UBIGINT', 'HUGEINT', 'VARCHAR[]', 'STRUCT(a INTEGER)', 'TINYINT'])
    assert.equal(icebergType(t), undefined, t);
  assert.throws(
    () => viewToIcebergSchema({ view: 'v', columns: [{ name: 'x', type: 'UBIGINT' }] }),
    (e: unknown) =>
      e instanceof IcebergError && e.code === 'ICEBERG_TYPE_UNSUPPORTED' && /x UBIGINT/.test(e.message),
  );
});

void test('a View fits its table by name and type; a new column is added after the last id; a changed type is refused with the column named', () => {
  const table = viewToIcebergSchema({
    view: 'v',
    columns: [
      { name: 'a', type: 'VARCHAR' },
      { name: 'b', type: 'BIGINT' },
    ],
  });
  // A View writing a subset (in any order) fits; the missing field reads as NULL.
  assert.deepEqual(
    checkViewFitsTable({ view: 'v', columns: [{ name: 'b', type: 'BIGINT' }] }, table).missing.map(
      (f) => f.name,
    ),
    ['a'],
  );
  assert.throws(
    () => checkViewFitsTable({ view: 'v', columns: [{ name: 'b', type: 'VARCHAR' }] }, table),
    (e: unknown) =>
      e instanceof IcebergError &&
      e.code === 'ICEBERG_SCHEMA_MISMATCH' &&
      /b: table has "long"/.test(e.message),
  );
  // A new column becomes a new optional field after the last assigned id (ids are never reused).
  assert.deepEqual(
    checkViewFitsTable({ view: 'v', columns: [{ name: 'c', type: 'VARCHAR' }] }, table, 7).added,
    [{ id: 8, name: 'c', required: false, type: 'string' }],
  );
});

void test('table commit: view files built with a View version this process does not know are recorded in the marker, never silently skipped', async () => {
  const db = await createParquetDb({ memoryLimitBytes: 64 << 20, threads: 1 });
  try {
    const view = await db.withConnection((c) =>
      compileView(
        c,
        parseViewYaml(
          'name: orders\ncolumns:\n  - { name: id, type: BIGINT, path: $.id }\niceberg: { namespace: shop, table: orders }\n',
        ),
      ),
    );
    let catalogCalls = 0;
    const commit = icebergTableCommit({
      config: { catalogUri: 'http://catalog.invalid', requestTimeoutMs: 1000, conflictRetriesMax: 1 },
      bucket: 'b',
      views: () => [view],
      fetch: () => {
        catalogCalls++;
        return Promise.reject(new Error('no catalog in this test'));
      },
    });
    const older = 'a'.repeat(64);
    const tables = await commit(
      {} as never,
      'lf',
    )({
      ref: { endpoint: 'e', instance: 'e-0', epoch: 'x', segmentId: 1n },
      segment: {} as never,
      artifacts: [],
      views: [{ name: 'orders', specSha256: older }],
      signal: new AbortController().signal,
    });
    assert.equal(catalogCalls, 0, 'nothing is appended with an unknown column mapping');
    assert.equal(tables.length, 1);
    assert.equal(tables[0]?.snapshotId, undefined);
    assert.equal(tables[0]?.error?.code, 'ICEBERG_VIEW_VERSION_UNKNOWN');
    assert.match(tables[0]?.error?.message ?? '', new RegExp(older));
  } finally {
    await db.close();
  }
});

void test('partition levels: date_trunc of a column → year/month/day/hour, a bare column → identity, anything else none', async () => {
  const db = await createParquetDb({ memoryLimitBytes: 64 << 20, threads: 1 });
  try {
    const levels = [
      ["date_trunc('day', ts)", 'dt'],
      ["date_trunc('hour', ts)", 'hr'],
      ["date_trunc('month', tz)", 'mo'],
      ["date_trunc('year', d)", 'yr'],
      ['Country', 'cc'],
      ['d', 'dd'],
      ['k', 'kk'],
      ["date_trunc('week', ts)", 'wk'], // no Iceberg transform
      ['lower(country)', 'lc'], // an expression
      ["date_trunc('hour', d)", 'dh'], // hour of a DATE: Iceberg has none
      ['ts', 'tsi'], // a timestamp's folder is rendered to the second: not an identity
      ['x', 'xi'], // DOUBLE: not supported as an identity source here
    ];
    // A View has at most 8 levels: two Views.
    const compiled = await Promise.all(
      [levels.slice(0, 6), levels.slice(6)].map((part) => {
        const yaml = [
          'name: p',
          'columns:',
          '  - { name: ts, type: TIMESTAMP, path: $.ts }',
          '  - { name: tz, type: TIMESTAMPTZ, path: $.tz }',
          '  - { name: d, type: DATE, path: $.d }',
          '  - { name: country, type: VARCHAR, path: $.c }',
          '  - { name: k, type: BIGINT, path: $.k }',
          '  - { name: x, type: DOUBLE, path: $.x }',
          'partitioning:',
          ...part.map(([e, a]) => `  - { expression: "${e}", alias: ${a} }`),
        ].join('\n');
        return db.withConnection((c) => compileView(c, parseViewYaml(yaml)));
      }),
    );
    assert.deepEqual(
      compiled
        .flatMap((v) => v.partitions)
        .map((p) => [p.alias, p.transform ? `${p.transform.transform}(${p.transform.source})` : null]),
      [
        ['dt', 'day(ts)'],
        ['hr', 'hour(ts)'],
        ['mo', 'month(tz)'],
        ['yr', 'year(d)'],
        ['cc', 'identity(country)'],
        ['dd', 'identity(d)'],
        ['kk', 'identity(k)'],
        ['wk', null],
        ['lc', null],
        ['dh', null],
        ['tsi', null],
        ['xi', null],
      ],
    );
  } finally {
    await db.close();
  }
});

void test('partition values: the real value from the folder text, typed per transform; the key decodes NULL and "" back', () => {
  const schema = viewToIcebergSchema({
    view: 'p',
    columns: [
      { name: 'ts', type: 'TIMESTAMP' },
      { name: 'c', type: 'VARCHAR' },
      { name: 'k', type: 'BIGINT' },
      { name: 'i', type: 'INTEGER' },
      { name: 'b', type: 'BOOLEAN' },
    ],
  });
  const levels: ViewPartitionLevel[] = [
    { alias: 'y', transform: { source: 'ts', transform: 'year' } },
    { alias: 'm', transform: { source: 'ts', transform: 'month' } },
    { alias: 'dt', transform: { source: 'ts', transform: 'day' } },
    { alias: 'h', transform: { source: 'ts', transform: 'hour' } },
    { alias: 'c', transform: { source: 'c', transform: 'identity' } },
    { alias: 'k', transform: { source: 'k', transform: 'identity' } },
    { alias: 'i', transform: { source: 'i', transform: 'identity' } },
    { alias: 'b', transform: { source: 'b', transform: 'identity' } },
    { alias: 'other' },
  ];
  const spec = specForView(levels, schema);
  assert.deepEqual(
    spec.fields.map((f) => [f.name, f.transform, f['source-id'], f['field-id']]),
    [
      ['y', 'year', 1, 1000],
      ['m', 'month', 1, 1001],
      ['dt', 'day', 1, 1002],
      ['h', 'hour', 1, 1003],
      ['c', 'identity', 2, 1004],
      ['k', 'identity', 3, 1005],
      ['i', 'identity', 4, 1006],
      ['b', 'identity', 5, 1007],
    ],
  );
  const bound = bindSpec(spec, schema, levels, 'ns.p');
  const value = (alias: string, text: string | null): unknown =>
    partitionValue(
      bound.find((b) => b.alias === alias)!,
      text,
    );
  assert.equal(value('y', '2026-01-01'), 56);
  assert.equal(value('y', '1969-01-01'), -1);
  assert.equal(value('m', '1970-02-01'), 1);
  assert.equal(value('m', '1969-12-01'), -1);
  assert.equal(value('dt', '1970-01-01'), 0);
  assert.equal(value('dt', '2026-11-26'), Date.UTC(2026, 10, 26) / 86_400_000);
  assert.equal(value('dt', '1900-03-01'), Date.UTC(1900, 2, 1) / 86_400_000);
  assert.equal(value('h', '2026-11-26T13'), Date.UTC(2026, 10, 26, 13) / 3_600_000);
  assert.equal(value('c', ''), '');
  assert.equal(value('c', null), null);
  assert.equal(value('c', '__HIVE_DEFAULT_PARTITION__'), '__HIVE_DEFAULT_PARTITION__');
  assert.equal(value('k', '-9223372036854775808'), -(2n ** 63n));
  assert.equal(value('i', '-2147483648'), -(2 ** 31));
  assert.equal(value('b', 'false'), false);
  for (const [alias, text] of [
    ['m', '2026-11-26'], // not a month start
    ['dt', '0044-03-15 (BC)'],
    ['i', '2147483648'],
    ['k', '1.5'],
    ['b', 'yes'],
  ] as const)
    assert.throws(
      () => value(alias, text),
      (e: unknown) => e instanceof IcebergError && e.code === 'ICEBERG_PARTITION_MISMATCH',
    );
  // A table partitioned by something the View's levels do not give.
  assert.throws(
    () => bindSpec(spec, schema, levels.slice(1), 'ns.p'),
    /ns\.p is partitioned by year\(ts\) \(y\); the View has no such partition level/,
  );

  // Keys: the folder encoding is undone (viewKey's inverse).
  const ref = { endpoint: 'web', instance: 'web-0', epoch: 'E1', segmentId: 7n };
  const parts: HivePartition[] = [
    ['c', null],
    ['e', ''],
    ['s', '__HIVE_DEFAULT_PARTITION__'],
    ['u', 'eu/west 1 ü'],
  ];
  assert.deepEqual(partitionsOfViewKey('lf/x', 'pv', viewKey('lf/x', ref, 'pv', parts)), parts);
  assert.deepEqual(partitionsOfViewKey('', 'pv', viewKey('', ref, 'pv', [])), []);
  assert.throws(() => partitionsOfViewKey('lf', 'pv', 'lf/views/other/a.parquet'), IcebergError);
});

void test('a partitioned manifest reads back with avsc: the tuple record by field id, typed; the list carries field summaries', async () => {
  const schema = viewToIcebergSchema({
    view: 'pv',
    columns: [
      { name: 'at', type: 'TIMESTAMPTZ' },
      { name: 'c', type: 'VARCHAR' },
    ],
  });
  const levels: ViewPartitionLevel[] = [
    { alias: 'dt', transform: { source: 'at', transform: 'day' } },
    { alias: 'c', transform: { source: 'c', transform: 'identity' } },
  ];
  const spec = specForView(levels, schema);
  const bound = bindSpec(spec, schema, levels, 'ns.pv');
  const tuples = [
    [partitionValue(bound[0]!, '2026-01-02'), partitionValue(bound[1]!, 'de')],
    [partitionValue(bound[0]!, '2026-01-01'), partitionValue(bound[1]!, null)],
    [partitionValue(bound[0]!, '2026-01-03'), partitionValue(bound[1]!, '')],
  ];
  const buf = encodeManifest({
    schemaJson: JSON.stringify(schema),
    schemaId: 0,
    spec: {
      specId: 0,
      fields: bound.map((b) => ({ field: b.field, avro: partitionAvroType(b.resultType) })),
    },
    files: tuples.map((t, i) => ({ path: `s3://b/${i}.parquet`, rows: 1, bytes: 10, partition: t })),
  });
  const { metadata, objects } = await avscRead(buf);
  assert.deepEqual(JSON.parse(metadata['partition-spec'] ?? ''), spec.fields);
  const written = JSON.parse(metadata['avro.schema'] ?? '') as {
    fields: { name: string; type: { fields: { name: string; type: unknown }[] } }[];
  };
  const partitionRecord = written.fields[4]!.type.fields.find((f) => f.name === 'partition')!.type as {
    fields: unknown[];
  };
  assert.deepEqual(partitionRecord.fields, [
    { name: 'dt', type: ['null', { type: 'int', logicalType: 'date' }], default: null, 'field-id': 1000 },
    { name: 'c', type: ['null', 'string'], default: null, 'field-id': 1001 },
  ]);
  const day = Date.UTC(2026, 0, 1) / 86_400_000;
  assert.deepEqual(
    objects.map((o) => ({ ...(o as { data_file: { partition: object } }).data_file.partition })),
    [
      { dt: day + 1, c: 'de' },
      { dt: day, c: null },
      { dt: day + 2, c: '' },
    ],
  );
  const summaries = fieldSummaries(bound, tuples);
  const int32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeInt32LE(n);
    return b;
  };
  assert.deepEqual(summaries, [
    { contains_null: false, contains_nan: false, lower_bound: int32(day), upper_bound: int32(day + 2) },
    {
      contains_null: true,
      contains_nan: false,
      lower_bound: Buffer.from(''),
      upper_bound: Buffer.from('de'),
    },
  ]);
  const list = await avscRead(
    encodeManifestList({
      snapshotId: 5n,
      parentSnapshotId: null,
      sequenceNumber: 1n,
      inherited: [],
      added: {
        path: 's3://b/m.avro',
        bytes: buf.length,
        files: 3,
        rows: 3,
        specId: 0,
        partitions: summaries,
      },
    }),
  );
  assert.deepEqual(
    (list.objects[0] as { partitions: object[] }).partitions.map((p) => ({ ...p })),
    summaries,
  );
});

void test('column metrics from a DuckDB-written footer: counts, nulls, bounds in Iceberg’s binary form per type', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lf-footer-'));
  const db = await DuckDBInstance.create(':memory:');
  const c = await db.connect();
  try {
    const file = path.join(dir, 'f.parquet');
    const long = 'ü'.repeat(40); // 80 bytes
    await c.run(`SET TimeZone = 'UTC'`);
    await c.run(
      `COPY (SELECT * FROM (VALUES
         (1::INTEGER, -5::BIGINT, 1.5::DOUBLE, true, DATE '1969-12-31', TIMESTAMP '2026-01-01 00:00:00.000001', -12.34::DECIMAL(10,2), 'b', '${long}'),
         (NULL, 7::BIGINT, -2.5::DOUBLE, false, DATE '2026-01-02', TIMESTAMP '1960-01-01', 99.99::DECIMAL(10,2), 'a', 'z'),
         (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
       ) t(i, l, d, b, dt, ts, dec, s, ls)) TO '${file}' (FORMAT parquet, ROW_GROUP_SIZE 2)`,
    );
    const meta = decodeFooter(readFileSync(file));
    const fields = viewToIcebergSchema({
      view: 'f',
      columns: [
        { name: 'i', type: 'INTEGER' },
        { name: 'l', type: 'BIGINT' },
        { name: 'd', type: 'DOUBLE' },
        { name: 'b', type: 'BOOLEAN' },
        { name: 'dt', type: 'DATE' },
        { name: 'ts', type: 'TIMESTAMP' },
        { name: 'dec', type: 'DECIMAL(10,2)' },
        { name: 's', type: 'VARCHAR' },
        { name: 'ls', type: 'VARCHAR' },
      ],
    }).fields;
    const m = footerMetrics(meta, fields);
    const byId = <T>(l: { key: number; value: T }[]): Record<number, T> =>
      Object.fromEntries(l.map((e) => [e.key, e.value]));
    assert.deepEqual(byId(m.value_counts), Object.fromEntries(fields.map((f) => [f.id, 3n])));
    assert.deepEqual(byId(m.null_value_counts), {
      1: 1n,
      2: 1n,
      3: 1n,
      4: 1n,
      5: 1n,
      6: 1n,
      7: 1n,
      8: 1n,
      9: 1n,
    });
    const lo = byId(m.lower_bounds);
    const hi = byId(m.upper_bounds);
    assert.deepEqual([lo[1]!.readInt32LE(0), hi[1]!.readInt32LE(0)], [1, 3]);
    assert.deepEqual([lo[2]!.readBigInt64LE(0), hi[2]!.readBigInt64LE(0)], [-5n, 7n]);
    assert.deepEqual([lo[3]!.readDoubleLE(0), hi[3]!.readDoubleLE(0)], [-2.5, 1.5]);
    assert.deepEqual([lo[4], hi[4]], [Buffer.from([0]), Buffer.from([1])]);
    assert.deepEqual([lo[5]!.readInt32LE(0), hi[5]!.readInt32LE(0)], [-1, Date.UTC(2026, 0, 2) / 86_400_000]);
    assert.deepEqual(
      [lo[6]!.readBigInt64LE(0), hi[6]!.readBigInt64LE(0)],
      [BigInt(Date.UTC(1960, 0, 1)) * 1000n, BigInt(Date.UTC(2026, 0, 1)) * 1000n + 1n],
    );
    // Decimals: the unscaled value, big-endian two's complement, fewest bytes.
    assert.deepEqual([lo[7], hi[7]], [Buffer.from([0xfb, 0x2e]), Buffer.from([0x27, 0x0f])]);
    assert.deepEqual([lo[8], hi[8]], [Buffer.from('a'), Buffer.from('b')]);
    // A string bound over 64 bytes ('ü'… sorts after 'z' in UTF-8): no upper bound (a cut one would be too low).
    assert.deepEqual([lo[9], hi[9]], [Buffer.from('z'), undefined]);
    assert.deepEqual(
      [...footerFieldIds(meta).values()],
      fields.map(() => undefined),
      'no FIELD_IDS in this COPY',
    );
  } finally {
    c.closeSync();
    db.closeSync();
    rmSync(dir, { recursive: true, force: true });
  }
});

void test('a lower string bound over 64 bytes is cut on a UTF-8 character boundary', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lf-footer-'));
  const db = await DuckDBInstance.create(':memory:');
  const c = await db.connect();
  try {
    const file = path.join(dir, 'f.parquet');
    await c.run(`COPY (SELECT 'a' || repeat('ü', 40) AS s) TO '${file}' (FORMAT parquet)`);
    const m = footerMetrics(decodeFooter(readFileSync(file)), [
      { id: 1, name: 's', required: false, type: 'string' },
    ]);
    // 'a' + 31 × 'ü' is 63 bytes: the 64th would split a character.
    assert.deepEqual(m.lower_bounds, [{ key: 1, value: Buffer.from(`a${'ü'.repeat(31)}`) }]);
    assert.deepEqual(m.upper_bounds, []);
  } finally {
    c.closeSync();
    db.closeSync();
    rmSync(dir, { recursive: true, force: true });
  }
});

void test('type promotions: int → long, float → double, decimal precision at the same scale; nothing else', () => {
  const ok = [
    ['int', 'long'],
    ['float', 'double'],
    ['decimal(10, 2)', 'decimal(12,2)'],
    ['string', 'string'],
  ];
  const no = [
    ['long', 'int'],
    ['string', 'long'],
    ['int', 'string'],
    ['double', 'float'],
    ['decimal(10, 2)', 'decimal(12, 3)'],
    ['decimal(10, 2)', 'decimal(9, 2)'],
    ['timestamp', 'timestamptz'],
  ];
  for (const [a, b] of ok) assert.equal(canPromote(a!, b!), true, `${a} → ${b}`);
  for (const [a, b] of no) assert.equal(canPromote(a!, b!), false, `${a} → ${b}`);
  const schema = {
    fields: [
      { id: 1, name: 'a', required: false, type: 'int' },
      { id: 2, name: 'b', required: false, type: 'string' },
    ],
  };
  assert.deepEqual(
    typeChanges(
      {
        view: 'v',
        columns: [
          { name: 'new', type: 'VARCHAR' },
          { name: 'a', type: 'BIGINT' },
          { name: 'b', type: 'BIGINT' },
        ],
      },
      schema,
    ),
    [{ index: 2, name: 'b', table: 'string', view: 'long' }],
  );
  const fit = checkViewFitsTable(
    { view: 'v', columns: [{ name: 'a', type: 'BIGINT' }] },
    { type: 'struct', 'schema-id': 0, ...schema },
  );
  assert.deepEqual(fit.promoted, [{ id: 1, name: 'a', required: false, type: 'long' }]);
});

void test('field-id lookup: a catalog that does not answer pauses the lookups (files go without ids), then they resume', async () => {
  let calls = 0;
  let now = 1_000_000;
  const lookup = icebergFieldIds({
    config: { catalogUri: 'http://catalog.invalid', requestTimeoutMs: 30_000, conflictRetriesMax: 1 },
    fetch: () => {
      calls++;
      return Promise.reject(new Error('connection refused'));
    },
    nowMs: () => now,
  });
  const view = {
    spec: { name: 'v', iceberg: { namespace: 'ns', table: 't' } },
    columns: [{ name: 'a', type: 'BIGINT' }],
  } as unknown as CompiledView;
  assert.equal((await lookup([view])).size, 0);
  assert.equal(calls, 1);
  now += 5_000;
  assert.equal((await lookup([view, view])).size, 0);
  assert.equal(calls, 1, 'paused: no request');
  now += 6_000;
  await lookup([view]);
  assert.equal(calls, 2, 'resumed');
});
