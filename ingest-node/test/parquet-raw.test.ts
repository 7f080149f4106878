// Raw Parquet: every record, payload byte for byte (binary included), split by
// UTC ingest date, read back with hyparquet (independent of DuckDB).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { createParquetDb, materializeSegment } from '../src/views/index.ts';
import type { ParquetDb, SegmentRecord } from '../src/views/index.ts';

let scratch: string;
let db: ParquetDb;

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'lf-raw-'));
  db = await createParquetDb({ scratchDir: scratch, memoryLimitBytes: 128 << 20, threads: 2 });
});
after(async () => {
  await db.close();
  await rm(scratch, { recursive: true, force: true });
});

const parsers = {
  timestampFromMilliseconds: (ms: bigint) => ms * 1000n,
  timestampFromMicroseconds: (us: bigint) => us,
  timestampFromNanoseconds: (ns: bigint) => ns / 1000n,
  dateFromDays: (days: number) => days,
  stringFromBytes: (bytes: Uint8Array | undefined) => (bytes ? new TextDecoder().decode(bytes) : bytes),
};

void test('raw Parquet keeps every payload byte for byte, split by UTC ingest date', async () => {
  // 2026-11-26T23:59:59.999999Z and then past midnight: a segment spanning two dates.
  const beforeMidnight = BigInt(Date.UTC(2026, 10, 26, 23, 59, 59)) * 1000n + 999_999n;
  const records: SegmentRecord[] = [];
  for (let i = 0; i < 5000; i++) {
    const kind = i % 4;
    const payload =
      kind === 0
        ? Buffer.from(JSON.stringify({ i, s: 'x'.repeat(i % 50) }))
        : kind === 1
          ? randomBytes(1 + (i % 300)) // arbitrary binary, invalid UTF-8 most of the time
          : kind === 2
            ? Buffer.from(`line with\nnewline and \u0000 NUL ${i}`)
            : Buffer.alloc(0);
    records.push({
      seq: 5_000_000_000n + BigInt(i),
      ingestTimeMicros: beforeMidnight - 2499n + BigInt(i),
      payload,
      topic: i % 3 === 0 ? `sensors/${i % 7}/temp` : undefined,
    });
  }
  const out = await materializeSegment(db, {
    jobId: 'raw-1',
    records,
    views: [],
    raw: { endpoint: 'clicks', instance: 'clicks-0' },
    rowGroupRows: 2048, // DuckDB's smallest useful row group (one vector)
  });
  assert.equal(out.rowsIn, records.length);
  assert.deepEqual(
    out.raw.map((f) => [f.partitionPath, f.partitions]),
    [
      ['dt=2026-11-26/', [['dt', '2026-11-26']]],
      ['dt=2026-11-27/', [['dt', '2026-11-27']]],
    ],
  );
  assert.deepEqual(
    out.raw.map((f) => f.rowCount),
    [2500, 2500],
  );
  const read: Record<string, unknown>[] = [];
  for (const f of out.raw) {
    const file = await asyncBufferFromFile(f.localPath);
    const md = await parquetMetadataAsync(file);
    assert.deepEqual(
      md.schema.slice(1).map((e) => [e.name, e.type, e.converted_type ?? null]),
      [
        ['endpoint', 'BYTE_ARRAY', 'UTF8'],
        ['instance', 'BYTE_ARRAY', 'UTF8'],
        ['seq', 'INT64', 'UINT_64'],
        ['ingest_time', 'INT64', 'TIMESTAMP_MICROS'],
        ['topic', 'BYTE_ARRAY', 'UTF8'],
        ['payload', 'BYTE_ARRAY', null],
      ],
    );
    assert.ok(md.row_groups.length >= 2, 'rowGroupRows is honoured');
    for (const rg of md.row_groups) for (const c of rg.columns) assert.equal(c.meta_data?.codec, 'ZSTD');
    read.push(
      ...((await parquetReadObjects({ file, compressors, utf8: false, parsers })) as Record<
        string,
        unknown
      >[]),
    );
  }
  assert.equal(read.length, records.length);
  for (const [i, r] of read.entries()) {
    const want = records[i]!;
    assert.equal(r['seq'], want.seq, 'files are in seq order');
    assert.equal(r['endpoint'], 'clicks');
    assert.equal(r['instance'], 'clicks-0');
    assert.equal(r['ingest_time'], want.ingestTimeMicros);
    assert.equal(r['topic'], want.topic ?? null);
    assert.ok(Buffer.from(r['payload'] as Uint8Array).equals(want.payload), `payload of seq ${want.seq}`);
  }
  await out.cleanup();
});

void test('bad input is refused before anything is written', async () => {
  await assert.rejects(
    materializeSegment(db, {
      jobId: 'raw-bad',
      records: [{ seq: -1n, ingestTimeMicros: 0n, payload: Buffer.alloc(0) }],
      views: [],
      raw: { endpoint: 'e', instance: 'i' },
    }),
    /not a u64/,
  );
  await assert.rejects(
    materializeSegment(db, { jobId: '../escape', records: [], views: [] }),
    /safe folder name/,
  );
});
