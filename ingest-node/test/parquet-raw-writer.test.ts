// The Parquet child's raw writer (parquet/raw-writer.ts): the same rows,
// schema, partitions and codec as DuckDB's raw COPY (parquet/raw.ts) for
// the same records, read back with hyparquet (independent of both) and with
// DuckDB (the statistics a reader prunes on); and the child's outputs with
// raw Parquet on equal the in-process materialiser's.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { mkdir, mkdtemp, readFile, rm, stat, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { compileView, createParquetDb, materializeSegment, parseViewYaml } from '../src/views/index.ts';
import type { ParquetDb, ParquetFile, SegmentRecord } from '../src/views/index.ts';
import { dayOfMicros, RawParquetWriter, utcDate, writeAll } from '../src/parquet/raw-writer.ts';
import { materializeSegmentJob } from '../src/parquet/segment-job.ts';
import { sha256File } from '../src/parquet/outputs.ts';
import { ndjsonSample } from '../src/delivery/bench-zstd.ts';

let scratch: string;
let db: ParquetDb;

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'lf-raw-writer-'));
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

/** Binary, empty, multi-line, large and JSON payloads; topics on some; a segment across midnight and back. */
function mixedRecords(n: number): SegmentRecord[] {
  const beforeMidnight = BigInt(Date.UTC(2026, 10, 26, 23, 59, 59)) * 1000n + 999_999n;
  const records: SegmentRecord[] = [];
  for (let i = 0; i < n; i++) {
    const kind = i % 5;
    const payload =
      kind === 0
        ? Buffer.from(JSON.stringify({ i, s: 'x'.repeat(i % 50) }))
        : kind === 1
          ? randomBytes(1 + (i % 300))
          : kind === 2
            ? Buffer.from(`line with\nnewline, \u0001 and \u0000 NUL ${i}`)
            : kind === 3
              ? Buffer.alloc(0)
              : randomBytes(i % 97 === 4 ? 300_000 : 20);
    // Half-way, the clock steps back across midnight for 100 records: a date file is returned to.
    const back = i >= n / 2 && i < n / 2 + 100 ? -10_000_000n : 0n;
    records.push({
      seq: (i === 7 ? 1n << 63n : 5_000_000_000n) + BigInt(i),
      ingestTimeMicros: beforeMidnight - BigInt(n / 2) + BigInt(i) + back,
      payload,
      topic: i % 3 === 0 ? `sensors/${i % 7}/temp` : i % 11 === 0 ? '' : undefined,
    });
  }
  return records;
}

async function readRows(files: readonly ParquetFile[]): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  for (const f of files) {
    const file = await asyncBufferFromFile(f.localPath);
    rows.push(
      ...((await parquetReadObjects({ file, compressors, utf8: false, parsers })) as Record<
        string,
        unknown
      >[]),
    );
  }
  return rows;
}

async function writeRaw(
  dir: string,
  records: readonly SegmentRecord[],
  o: { rowGroupRows?: number; pageBytes?: number; batch?: number } = {},
): Promise<ParquetFile[]> {
  const w = new RawParquetWriter({
    dir,
    endpoint: 'clicks',
    instance: 'clicks-0',
    ...(o.rowGroupRows !== undefined ? { rowGroupRows: o.rowGroupRows } : {}),
    ...(o.pageBytes !== undefined ? { pageBytes: o.pageBytes } : {}),
  });
  const step = o.batch ?? 1000;
  for (let i = 0; i < records.length; i += step) await w.add(records.slice(i, i + step));
  return w.finish();
}

void test("the raw writer's files hold what DuckDB's raw COPY writes: rows, order, partitions, schema, codec", async () => {
  const records = mixedRecords(6000);
  const mine = await writeRaw(path.join(scratch, 'mine', 'raw'), records, {
    rowGroupRows: 2048,
    pageBytes: 16 * 1024,
    batch: 777,
  });
  const duck = await materializeSegment(db, {
    jobId: 'duck',
    records,
    views: [],
    raw: { endpoint: 'clicks', instance: 'clicks-0' },
    rowGroupRows: 2048,
  });
  assert.deepEqual(
    mine.map((f) => [
      path.relative(path.join(scratch, 'mine'), f.localPath),
      f.partitionPath,
      f.partitions,
      f.rowCount,
    ]),
    duck.raw.map((f) => [path.relative(duck.jobDir, f.localPath), f.partitionPath, f.partitions, f.rowCount]),
  );
  assert.equal(mine.length, 2);
  for (const f of mine) {
    assert.equal(f.sizeBytes, (await stat(f.localPath)).size);
    assert.equal(f.sha256, await sha256File(f.localPath));
    const md = await parquetMetadataAsync(await asyncBufferFromFile(f.localPath));
    const theirs = await parquetMetadataAsync(
      await asyncBufferFromFile(duck.raw.find((d) => d.partitionPath === f.partitionPath)!.localPath),
    );
    const schemaOf = (m: typeof md) =>
      m.schema.map((e) => [
        e.name === 'duckdb_schema' ? '' : e.name,
        e.type,
        e.repetition_type,
        e.converted_type,
        e.logical_type,
      ]);
    assert.deepEqual(schemaOf(md), schemaOf(theirs));
    assert.ok(md.row_groups.length >= 2, 'rowGroupRows is honoured');
    for (const rg of md.row_groups) {
      assert.ok(Number(rg.num_rows) <= 2048);
      for (const c of rg.columns) assert.equal(c.meta_data?.codec, 'ZSTD');
    }
  }
  const [a, b] = [await readRows(mine), await readRows(duck.raw)];
  assert.equal(a.length, records.length);
  assert.deepEqual(a, b);
  // And what went in: every payload byte for byte, file by file in seq order.
  const byDate = [...records].sort((x, y) =>
    Number(x.ingestTimeMicros / 86_400_000_000n - y.ingestTimeMicros / 86_400_000_000n),
  );
  for (const [i, r] of a.entries()) {
    const want = byDate[i]!;
    assert.equal(r['seq'], want.seq);
    assert.equal(r['ingest_time'], want.ingestTimeMicros);
    assert.equal(r['topic'], want.topic ?? null);
    assert.ok(Buffer.from(r['payload'] as Uint8Array).equals(want.payload), `payload of seq ${want.seq}`);
  }
  await duck.cleanup();
});

void test('DuckDB reads the statistics: min and max of seq (unsigned), ingest_time and topic, null counts', async () => {
  const records = mixedRecords(3000);
  const [file] = await writeRaw(path.join(scratch, 'stats', 'raw'), records.slice(0, 1400));
  const rows = await db.withConnection(async (c) =>
    (
      await c.runAndReadAll(
        `SELECT path_in_schema, stats_min_value, stats_max_value, stats_null_count, num_values
         FROM parquet_metadata('${file!.localPath}') ORDER BY column_id`,
      )
    ).getRowsJson(),
  );
  const some = records.slice(0, 1400);
  const topics = some.flatMap((r) => (r.topic !== undefined ? [r.topic] : [])).sort();
  assert.deepEqual(rows, [
    ['endpoint', 'clicks', 'clicks', '0', '1400'],
    ['instance', 'clicks-0', 'clicks-0', '0', '1400'],
    ['seq', '5000000000', String((1n << 63n) + 7n), '0', '1400'],
    ['ingest_time', rows[3]![1], rows[3]![2], '0', '1400'],
    ['topic', topics[0], topics[topics.length - 1], String(some.length - topics.length), '1400'],
    ['payload', null, null, '0', '1400'],
  ]);
  const [lo, hi] = await db.withConnection(
    async (c) =>
      (
        await c.runAndReadAll(
          `SELECT min(ingest_time)::VARCHAR, max(ingest_time)::VARCHAR FROM read_parquet('${file!.localPath}')`,
        )
      ).getRowsJson()[0]!,
  );
  assert.equal(rows[3]![1], lo);
  assert.equal(rows[3]![2], hi);
  // A filter on seq is answered from the statistics too (nothing past the max).
  const none = await db.withConnection(async (c) =>
    (
      await c.runAndReadAll(
        `SELECT count(*) FROM read_parquet('${file!.localPath}') WHERE seq > ${(1n << 63n) + 7n}`,
      )
    ).getRowsJson(),
  );
  assert.deepEqual(none, [['0']]);
});

void test('more dates than files kept open: the least recently written is suspended and resumed; same files as DuckDB writes', async () => {
  // 100 dates, round robin, then a long run per date: each date file is
  // suspended (row group written, handle closed) and opened again for append
  // many times. The WAL never gives this order (its ingest times do not go
  // back); a writer fed it still writes every row under its true date.
  const day = 86_400_000_000n;
  const base = BigInt(Date.UTC(2026, 0, 1)) * 1000n;
  const records: SegmentRecord[] = [];
  for (let i = 0; i < 1200; i++) {
    const d = i < 600 ? i % 100 : Math.floor((i - 600) / 6);
    records.push({
      seq: 10n + BigInt(i),
      ingestTimeMicros: base + BigInt(d) * day + BigInt(i),
      payload: Buffer.from(JSON.stringify({ i, d })),
      topic: i % 4 === 0 ? `t/${d}` : undefined,
    });
  }
  const mine = await writeRaw(path.join(scratch, 'dates', 'raw'), records, { rowGroupRows: 4, batch: 37 });
  const duck = await materializeSegment(db, {
    jobId: 'dates-duck',
    records,
    views: [],
    raw: { endpoint: 'clicks', instance: 'clicks-0' },
  });
  assert.equal(mine.length, 100);
  assert.deepEqual(
    mine.map((f) => [f.partitionPath, f.rowCount]),
    duck.raw.map((f) => [f.partitionPath, f.rowCount]),
  );
  for (const f of mine) {
    assert.equal(f.sizeBytes, (await stat(f.localPath)).size);
    assert.equal(f.sha256, await sha256File(f.localPath));
  }
  assert.deepEqual(await readRows(mine), await readRows(duck.raw));
  // DuckDB reads every file whole, each date's rows in seq order under their dt.
  const glob = path.join(scratch, 'dates', 'raw', '*', '*.parquet');
  const [[rows, bad, unordered]] = (await db.withConnection(async (c) =>
    (
      await c.runAndReadAll(
        `SELECT count(*), count(*) FILTER (WHERE strftime(ingest_time, '%Y-%m-%d') <> dt),
                count(*) FILTER (WHERE seq < prev)
         FROM (SELECT *, lag(seq) OVER (PARTITION BY filename ORDER BY file_row_number) AS prev
               FROM read_parquet('${glob}', hive_partitioning = true, filename = true, file_row_number = true))`,
      )
    ).getRowsJson(),
  )) as [[string, string, string]];
  assert.deepEqual([rows, bad, unordered], ['1200', '0', '0']);
  await duck.cleanup();
});

void test('the UTC date of a day number is the one DuckDB gives a partition', async () => {
  const days = [-719_528, -1, 0, 1, 10_957, 20_783, 2_932_896, 2_932_897];
  const theirs = await db.withConnection(async (c) =>
    (
      await c.runAndReadAll(
        `SELECT strftime(make_timestamp(d * 86400000000), '%Y-%m-%d') FROM unnest([${days.join(', ')}]::BIGINT[]) t(d)`,
      )
    ).getRowsJson(),
  );
  assert.deepEqual(
    days.map((d) => utcDate(d)),
    theirs.map((r) => r[0]),
  );
  assert.throws(() => utcDate(-719_529), /before year 0/);
});

void test('ingest times far from now (past 2^53 µs) land on the UTC date DuckDB gives them', async () => {
  const times = [
    (1n << 53n) + 1n,
    (1n << 60n) + 12_345n,
    9_223_371_331_200_000_000n, // 294246-12-31
    -(1n << 53n) - 1n,
    -62_167_219_200_000_000n, // 0000-01-01
    86_400_000_000n - 1n,
    -1n,
  ];
  const theirs = await db.withConnection(async (c) =>
    (
      await c.runAndReadAll(
        `SELECT strftime(make_timestamp(t), '%Y-%m-%d') FROM unnest([${times.join(', ')}]::BIGINT[]) u(t)`,
      )
    ).getRowsJson(),
  );
  assert.deepEqual(
    times.map((t) => utcDate(dayOfMicros(t))),
    theirs.map((r) => r[0]),
  );
  // And the writer files such a record under that date instead of refusing it.
  const dir = path.join(scratch, 'far', 'raw');
  const w = new RawParquetWriter({ dir, endpoint: 'e', instance: 'i' });
  await w.add([{ seq: 1n, ingestTimeMicros: (1n << 60n) + 12_345n, payload: Buffer.from('{}') }]);
  const files = await w.finish();
  assert.deepEqual(
    files.map((f) => path.relative(dir, f.localPath)),
    [path.join(`dt=${theirs[1]![0] as string}`, 'data_0.parquet')],
  );
});

void test('string statistics: none for a topic longer than 256 bytes, no signed-order min/max for topics', async () => {
  // The chunk's max (bytes: 'ü' > 'é' > 's'), longer than 256 bytes.
  const long = `ü/${'x'.repeat(300)}`;
  const records: SegmentRecord[] = [
    { seq: 1n, ingestTimeMicros: 0n, payload: Buffer.from('a'), topic: 'é/1' },
    { seq: 2n, ingestTimeMicros: 1n, payload: Buffer.from('b'), topic: 'sensors/2' },
  ];
  const [short] = await writeRaw(path.join(scratch, 'topic-short', 'raw'), records);
  const [longFile] = await writeRaw(path.join(scratch, 'topic-long', 'raw'), [
    ...records,
    { seq: 3n, ingestTimeMicros: 2n, payload: Buffer.from('c'), topic: long },
  ]);
  const stats = async (file: string): Promise<unknown[]> =>
    db.withConnection(async (c) =>
      (
        await c.runAndReadAll(
          `SELECT stats_min, stats_max, stats_min_value, stats_max_value FROM parquet_metadata('${file}')
           WHERE path_in_schema = 'topic'`,
        )
      ).getRowsJson(),
    );
  // Unsigned (byte) order: 'sensors/2' < 'é/1'; the deprecated signed fields are not written for topics.
  assert.deepEqual(await stats(short!.localPath), [[null, null, 'sensors/2', 'é/1']]);
  assert.deepEqual(await stats(longFile!.localPath), [[null, null, null, null]]);
  // The values themselves are all there.
  const got = await db.withConnection(async (c) =>
    (
      await c.runAndReadAll(`SELECT topic FROM read_parquet('${longFile!.localPath}') ORDER BY seq`)
    ).getRowsJson(),
  );
  assert.deepEqual(got, [['é/1'], ['sensors/2'], [long]]);
});

void test('bad input is refused and abort leaves nothing behind', async () => {
  const dir = path.join(scratch, 'bad', 'raw');
  const w = new RawParquetWriter({ dir, endpoint: 'e', instance: 'i' });
  await w.add([{ seq: 1n, ingestTimeMicros: 0n, payload: Buffer.from('ok') }]);
  await assert.rejects(w.add([{ seq: -1n, ingestTimeMicros: 0n, payload: Buffer.alloc(0) }]), /not a u64/);
  await assert.rejects(
    w.add([{ seq: 2n, ingestTimeMicros: -(1n << 60n), payload: Buffer.alloc(0) }]),
    /before year 0/,
  );
  await w.abort();
  await assert.rejects(stat(dir), { code: 'ENOENT' });
  assert.throws(
    () => new RawParquetWriter({ dir, endpoint: 'e', instance: 'i', rowGroupRows: 0 }),
    /positive/,
  );
});

void test('an empty segment writes no file', async () => {
  const w = new RawParquetWriter({ dir: path.join(scratch, 'empty', 'raw'), endpoint: 'e', instance: 'i' });
  await w.add([]);
  assert.deepEqual(await w.finish(), []);
});

void test('bytes per row no worse than DuckDB on repeated and on varied JSON events', async (t) => {
  const sample = ndjsonSample(8 << 20)
    .toString()
    .trimEnd()
    .split('\n');
  const base = BigInt(Date.UTC(2026, 0, 1)) * 1000n;
  const same = JSON.stringify({ event: 'page_view', user: 'u1', pad: 'x'.repeat(900) });
  const shapes: Record<string, (i: number) => string> = {
    repeated: () => same,
    varied: (i) =>
      JSON.stringify({
        event: ['page_view', 'click', 'search'][i % 3],
        user: `u${(i * 7919) % 100_000}`,
        session: ((i * 2654435761) >>> 0).toString(16).padStart(8, '0'),
        ts: new Date(Date.UTC(2026, 0, 1) + i * 37).toISOString(),
        latency_ms: (i * 131) % 800,
      }),
    sample: (i) => sample[i % sample.length]!,
    sample1k: (i) =>
      `[${sample.slice((i * 4) % (sample.length - 4), ((i * 4) % (sample.length - 4)) + 4).join(',')}]`,
  };
  for (const [name, payloadOf] of Object.entries(shapes)) {
    const records = Array.from({ length: 20_000 }, (_, i) => ({
      seq: BigInt(i + 1),
      ingestTimeMicros: base + BigInt(i) * 50n,
      payload: Buffer.from(payloadOf(i)),
    }));
    const [mine] = await writeRaw(path.join(scratch, `size-${name}`, 'raw'), records);
    const duck = await materializeSegment(db, {
      jobId: `size-${name}`,
      records,
      views: [],
      raw: { endpoint: 'clicks', instance: 'clicks-0' },
    });
    const theirs = duck.raw[0]!.sizeBytes;
    t.diagnostic(
      `${name}: ${(mine!.sizeBytes / records.length).toFixed(2)} B/row, DuckDB ${(theirs / records.length).toFixed(2)}`,
    );
    assert.ok(
      mine!.sizeBytes <= theirs * 1.02,
      `${name}: ${mine!.sizeBytes} bytes against DuckDB's ${theirs}`,
    );
    assert.deepEqual(await readRows([mine!]), await readRows(duck.raw));
    await duck.cleanup();
  }
});

void test("materializeSegmentJob: one read for raw Parquet and the views, the same rows as materializeSegment's raw COPY and views", async () => {
  const view = await db.withConnection(async (c) =>
    compileView(
      c,
      parseViewYaml(
        await readFile(new URL('../../docs/examples/views/page_views.yaml', import.meta.url), 'utf8'),
      ),
    ),
  );
  const base = BigInt(Date.UTC(2026, 10, 26, 23, 59)) * 1000n;
  const records: SegmentRecord[] = Array.from({ length: 3000 }, (_, i) => ({
    seq: BigInt(i + 1),
    ingestTimeMicros: base + BigInt(i) * 40_000n,
    payload:
      i % 97 === 5
        ? Buffer.from('not json')
        : i % 89 === 3
          ? randomBytes(12)
          : Buffer.from(
              JSON.stringify({
                event: i % 13 === 0 ? 'click' : 'page_view',
                user: `u${i % 50}`,
                ...(i % 71 === 1
                  ? {}
                  : { ts: new Date(Date.UTC(2026, 0, 1 + (i % 3), 0, 0, i % 60)).toISOString() }),
              }),
            ),
  }));
  const rows = async (files: readonly ParquetFile[]): Promise<string> =>
    JSON.stringify(await readRows(files), (_k, v: unknown) =>
      typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v,
    );
  // Only view rows: after the first such segment, a view's segment is first tried as clean (the NDJSON path).
  const clean = records.map((r, i) => ({
    ...r,
    payload: Buffer.from(JSON.stringify({ event: 'page_view', user: `u${i}`, ts: '2026-01-02T03:04:05Z' })),
  }));
  for (const [run, set] of [records, clean, clean].entries()) {
    const raw = { endpoint: 'clicks', instance: 'clicks-0' };
    const job = await materializeSegmentJob(db, { jobId: `job-${run}`, records: set, views: [view], raw });
    const ref = await materializeSegment(db, { jobId: `ref-${run}`, records: set, views: [view], raw });
    assert.equal(job.rowsIn, set.length);
    assert.equal(
      job.raw.reduce((s, f) => s + f.rowCount, 0),
      set.length,
    );
    assert.equal(await rows(job.raw), await rows(ref.raw));
    const [v, w] = [job.views[0]!, ref.views[0]!];
    assert.deepEqual(
      [v.viewRows, v.filteredRows, v.dlqRows, v.dlqByCode],
      [w.viewRows, w.filteredRows, w.dlqRows, w.dlqByCode],
    );
    if (set === records) assert.ok(v.dlqRows > 0 && v.filteredRows > 0 && v.viewRows > 0);
    else assert.equal(v.viewRows, set.length);
    assert.equal(await rows(v.files), await rows(w.files));
    assert.equal(await rows(v.dlqFiles), await rows(w.dlqFiles));
    await job.cleanup();
    await ref.cleanup();
  }
  // Raw alone (a retry after a view's child died): the same files, nothing else.
  const alone = await materializeSegmentJob(db, {
    jobId: 'alone',
    records,
    views: [],
    raw: { endpoint: 'clicks', instance: 'clicks-0' },
  });
  assert.deepEqual([alone.rowsIn, alone.firstSeq, alone.lastSeq, alone.views], [3000, 1n, 3000n, []]);
  assert.equal(
    alone.payloadBytes,
    records.reduce((s, r) => s + r.payload.byteLength, 0),
  );
  assert.deepEqual(
    alone.raw.map((f) => [f.partitionPath, f.rowCount]),
    [
      ['dt=2026-11-26/', 1500],
      ['dt=2026-11-27/', 1500],
    ],
  );
  await alone.cleanup();
  await assert.rejects(stat(alone.jobDir), { code: 'ENOENT' });
});

void test('materializeSegmentJob: a corrupt read ends the job with its error and leaves no raw file behind', async () => {
  const broken = (async function* () {
    yield [{ seq: 1n, ingestTimeMicros: 0n, payload: Buffer.from('{}') }];
    throw new Error('segment read failed');
  })();
  await assert.rejects(
    materializeSegmentJob(db, {
      jobId: 'broken',
      records: broken,
      views: [],
      raw: { endpoint: 'e', instance: 'i' },
    }),
    /segment read failed/,
  );
  await assert.rejects(stat(path.join(scratch, 'jobs', 'broken')), { code: 'ENOENT' });
});

void test('writeAll: a short write goes on from the byte it stopped at; a write that takes nothing fails as the disk', async () => {
  const got: Buffer[] = [];
  let calls = 0;
  const short = {
    writev: (bufs: Buffer[]) => {
      calls++;
      const all = Buffer.concat(bufs).subarray(0, 3);
      got.push(Buffer.from(all));
      return Promise.resolve({ bytesWritten: all.length, buffers: bufs });
    },
  } as unknown as FileHandle;
  const parts = [Buffer.from('ab'), Buffer.from('cdefg'), Buffer.alloc(0), Buffer.from('h')];
  await writeAll(short, parts, 8);
  assert.equal(Buffer.concat(got).toString(), 'abcdefgh');
  assert.equal(calls, 3);
  const stuck = { writev: () => Promise.resolve({ bytesWritten: 0, buffers: [] }) } as unknown as FileHandle;
  await assert.rejects(writeAll(stuck, parts, 8), { code: 'EIO' });
});

void test('materializeSegmentJob: a jobId that is no safe folder name is refused before any folder is touched', async () => {
  const outside = path.join(scratch, 'escape');
  await mkdir(outside, { recursive: true });
  for (const views of [
    [],
    [
      await db.withConnection(async (c) =>
        compileView(
          c,
          parseViewYaml(
            await readFile(new URL('../../docs/examples/views/page_views.yaml', import.meta.url), 'utf8'),
          ),
        ),
      ),
    ],
  ])
    await assert.rejects(
      materializeSegmentJob(db, {
        jobId: '../escape',
        records: [{ seq: 1n, ingestTimeMicros: 0n, payload: Buffer.from('{}') }],
        views,
        raw: { endpoint: 'e', instance: 'i' },
      }),
      /safe folder name/,
    );
  assert.ok((await stat(outside)).isDirectory(), 'the folder beside jobs/ is still there');
});

void test('date files waiting for their footer hold their metadata, not buffers: 1,000 dates of one record each', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const settle = async (): Promise<number> => {
    for (let i = 0; i < 4; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    return process.memoryUsage().arrayBuffers;
  };
  const dir = await mkdtemp(path.join(tmpdir(), 'lf-raw-mem-'));
  try {
    const w = new RawParquetWriter({ dir, endpoint: 'e', instance: 'e-0' });
    const day = 86_400_000_000n;
    const base = BigInt(Date.UTC(2026, 0, 1)) * 1000n;
    const before = await settle();
    for (let d = 0; d < 1000; d++)
      await w.add([
        { seq: BigInt(d), ingestTimeMicros: base + BigInt(d) * day, payload: Buffer.from('{"a":1}') },
      ]);
    const held = (await settle()) - before;
    // Each had pinned a 64 KiB block (a zstd output chunk, pooled slices of
    // its statistics): ~64 MiB here. Now their metadata: a few KiB each.
    assert.ok(
      held < 24 * 1024 * 1024,
      `${(held / 2 ** 20).toFixed(1)} MiB of buffers held for 1,000 waiting files`,
    );
    const files = await w.finish();
    assert.equal(files.length, 1000);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
