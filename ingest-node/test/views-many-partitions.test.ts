// Many partitions in one segment: a view's partitions (up to
// views.partitionFilesMax, written PARTITION_FILES_PER_COPY per COPY) and the
// DLQ's ingest dates must each get exactly one file, whatever DuckDB's own
// limit on open partition files (100 by default: past it DuckDB closes a
// file and later writes a second one into the same partition).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import {
  compileView,
  createParquetDb,
  materializeSegment,
  parseViewYaml,
  type ParquetDb,
  type SegmentRecord,
} from '../src/views/index.ts';

let scratch: string;
let db: ParquetDb;
before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'lf-views-parts-'));
  db = await createParquetDb({ scratchDir: scratch, memoryLimitBytes: 512 << 20, threads: 2 });
});
after(async () => {
  await db.close();
  await rm(scratch, { recursive: true, force: true });
});

void test('a view with 101-256 partitions over 200,000 rows: one file each, every row in the view', async () => {
  const parts = 150;
  const spec = parseViewYaml(
    `name: ids\ncolumns:\n  - { name: id, type: INTEGER, path: $.id, required: true }\npartitioning:\n  - { expression: "id % ${parts}", alias: p }\n`,
  );
  const view = await db.withConnection((c) => compileView(c, spec));
  const n = 200_000;
  const records: SegmentRecord[] = Array.from({ length: n }, (_, i) => ({
    seq: BigInt(i + 1),
    ingestTimeMicros: 1_790_000_000_000_000n,
    payload: Buffer.from(`{"id":${i}}`),
  }));
  const out = await materializeSegment(db, { jobId: 'parts', records, views: [view] });
  try {
    const v = out.views[0]!;
    assert.equal(v.failed, undefined, v.failed);
    assert.equal(v.viewRows, n);
    assert.equal(v.files.length, parts);
    assert.equal(new Set(v.files.map((f) => f.partitionPath)).size, parts);
    assert.equal(
      v.files.reduce((s, f) => s + f.rowCount, 0),
      n,
    );
  } finally {
    await out.cleanup();
  }
});

void test('DLQ rows over more ingest dates than one COPY writes: one file per date, every row, in groups', async () => {
  const spec = parseViewYaml(
    `name: strict\ncolumns:\n  - { name: id, type: INTEGER, path: $.id, required: true }\n`,
  );
  const view = await db.withConnection((c) => compileView(c, spec));
  const dates = 300;
  const perDate = 3;
  const day = 86_400_000_000n;
  const start = 1_790_000_000_000_000n;
  const records: SegmentRecord[] = [];
  for (let d = 0; d < dates; d++)
    for (let k = 0; k < perDate; k++)
      records.push({
        seq: BigInt(records.length + 1),
        ingestTimeMicros: start + BigInt(d) * day + BigInt(k),
        // Every record a DLQ row (missing_required), one in three of them not JSON at all.
        payload: Buffer.from(k === 2 ? 'not json' : `{"other":${d}}`),
      });
  const out = await materializeSegment(db, { jobId: 'dlq-dates', records, views: [view] });
  try {
    const v = out.views[0]!;
    assert.equal(v.failed, undefined, v.failed);
    assert.equal(v.viewRows, 0);
    assert.equal(v.dlqRows, records.length);
    assert.equal(v.dlqFiles.length, dates);
    const dts = v.dlqFiles.map((f) => f.partitions[0]![1]);
    assert.equal(new Set(dts).size, dates, 'one file per date');
    // Each file holds its date's rows, seq and ingest date true.
    let rows = 0;
    for (const f of [v.dlqFiles[0]!, v.dlqFiles[dates - 1]!, v.dlqFiles[137]!]) {
      const got = (await parquetReadObjects({
        file: await asyncBufferFromFile(f.localPath),
        compressors,
      })) as { seq: bigint; ingest_time: unknown }[];
      assert.equal(got.length, perDate);
      for (const r of got) {
        const rec = records[Number(r.seq) - 1]!;
        const dt = new Date(Number(rec.ingestTimeMicros / 1000n)).toISOString().slice(0, 10);
        assert.equal(dt, f.partitions[0]![1]);
      }
      rows += got.length;
    }
    assert.equal(rows, 3 * perDate);
    assert.equal(
      v.dlqFiles.reduce((s, f) => s + f.rowCount, 0),
      records.length,
    );
  } finally {
    await out.cleanup();
  }
});
