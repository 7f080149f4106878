// The view engine end to end: the DESIGN §6 page_views view over a segment
// with every kind of row, read back from the Parquet files by hyparquet — a
// pure-JS Parquet reader that shares no code with DuckDB, so a writer bug
// cannot hide behind the same engine's reader. pyarrow is not on this
// machine; DuckDB's own reader is used only where hyparquet cannot see the
// value (nothing here).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import {
  compileView,
  createParquetDb,
  materializeSegment,
  parseViewYaml,
  validateView,
} from '../src/views/index.ts';
import type {
  CompiledView,
  ParquetDb,
  SegmentOutputs,
  SegmentRecord,
  ParquetFile,
} from '../src/views/index.ts';
import { sha256File } from '../src/parquet/outputs.ts';
import { PAGE_VIEWS_YAML } from './fixtures/page-views.ts';

const PAGE_VIEWS = PAGE_VIEWS_YAML;

// Ingest times: 2026-11-26T09:00:00Z plus a second per record.
const T0_MICROS = BigInt(Date.UTC(2026, 10, 26, 9)) * 1000n;
const micros = (iso: string): bigint => BigInt(Date.parse(iso)) * 1000n;

// [payload, expected outcome]
type Outcome = 'ok' | 'filtered' | `dlq:${string}:${string}`;
const CASES: [string | Buffer, Outcome][] = [
  ['{"event":"page_view","user":"u1","ts":"2026-11-26T10:00:00Z"}', 'ok'],
  // The offset is honoured: 01:30+02:00 is 23:30 UTC the day before.
  ['{"event":"page_view","user":"u2","ts":"2026-11-27T01:30:00+02:00"}', 'ok'],
  ['{"event":"page_view","ts":"2026-11-27T08:00:00.123456Z"}', 'ok'],
  ['{"event":"click","user":"u3","ts":"2026-11-26T10:00:00Z"}', 'filtered'],
  // The filter can be decided (event is fine), so a missing ts does not matter.
  ['{"event":"click"}', 'filtered'],
  ['{"event":"page_view","user":"u4","ts":"yesterday"}', 'dlq:cast_failed:viewed_at'],
  ['{"event":"page_view","user":"u5"}', 'dlq:missing_required:viewed_at'],
  // The filter reads event, which is missing: the row cannot be classified, so DLQ.
  ['{"user":"u6","ts":"2026-11-26T10:00:00Z"}', 'dlq:missing_required:event'],
  ['{"event":null,"ts":"2026-11-26T10:00:00Z"}', 'dlq:missing_required:event'],
  ['not json at all', 'dlq:invalid_json:'],
  ['', 'dlq:invalid_json:'],
  [Buffer.from([0xff, 0xfe, 0x7b, 0x7d]), 'dlq:invalid_json:'],
  ['{"event":"page_view","user":42,"ts":"2026-11-26T12:00:00Z"}', 'ok'],
  ['[1,2,3]', 'dlq:missing_required:event'],
  ['{"event":"page_view","user":"ü→😀","ts":"2026-11-26T13:00:00Z"}', 'ok'],
  ['{"event":"page_view","user":"u7","ts":"2026-11-26T14:00:00Z"} trailing', 'dlq:invalid_json:'],
];

const records: SegmentRecord[] = CASES.map(([p], i) => ({
  seq: 1000n + BigInt(i),
  ingestTimeMicros: T0_MICROS + BigInt(i) * 1_000_000n,
  payload: typeof p === 'string' ? Buffer.from(p) : p,
}));

let scratch: string;
let db: ParquetDb;
let compiled: CompiledView;
let out: SegmentOutputs;

// Timestamps come back as raw µs so sub-millisecond precision is checked too.
const parsers = {
  timestampFromMilliseconds: (ms: bigint) => ms * 1000n,
  timestampFromMicroseconds: (us: bigint) => us,
  timestampFromNanoseconds: (ns: bigint) => ns / 1000n,
  dateFromDays: (days: number) => days,
  stringFromBytes: (bytes: Uint8Array | undefined) => (bytes ? new TextDecoder().decode(bytes) : bytes),
};

async function readParquet(file: string): Promise<Record<string, unknown>[]> {
  const rows = (await parquetReadObjects({
    file: await asyncBufferFromFile(file),
    compressors,
    utf8: false,
    parsers,
  })) as Record<string, unknown>[];
  // hyparquet gives a NULL list or struct as undefined; compare SQL NULLs as null.
  return rows.map((r) =>
    Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v === undefined ? null : v])),
  );
}

async function schemaOf(file: string): Promise<Record<string, string>> {
  const md = await parquetMetadataAsync(await asyncBufferFromFile(file));
  const out: Record<string, string> = {};
  for (const el of md.schema.slice(1)) {
    const logical = el.logical_type
      ? `${el.logical_type.type}${'isAdjustedToUTC' in el.logical_type ? (el.logical_type.isAdjustedToUTC ? '(utc)' : '(local)') : ''}`
      : (el.converted_type ?? '');
    out[el.name] = `${el.type ?? 'group'}/${logical}`;
  }
  for (const rg of md.row_groups)
    for (const c of rg.columns)
      assert.equal(c.meta_data?.codec, 'ZSTD', `${file}: ${c.meta_data?.path_in_schema.join('.')}`);
  return out;
}

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'lf-views-'));
  db = await createParquetDb({ scratchDir: scratch, memoryLimitBytes: 256 << 20, threads: 2 });
  compiled = await db.withConnection((c) => compileView(c, parseViewYaml(PAGE_VIEWS)));
  out = await materializeSegment(db, {
    jobId: 'ep-01JEPOCH-00000000000000000007',
    records,
    views: [compiled],
  });
});

after(async () => {
  await db.close();
  await rm(scratch, { recursive: true, force: true });
});

void test('page_views: view rows, partitions and types as an independent reader sees them', async () => {
  const v = out.views[0]!;
  assert.deepEqual(
    v.files.map((f) => [f.partitionPath, f.partitions, f.rowCount]),
    [
      ['dt=2026-11-26/', [['dt', '2026-11-26']], 4],
      ['dt=2026-11-27/', [['dt', '2026-11-27']], 1],
    ],
  );
  const day1 = await readParquet(v.files[0]!.localPath);
  assert.deepEqual(day1, [
    { event: 'page_view', user_id: 'u1', viewed_at: micros('2026-11-26T10:00:00Z') },
    { event: 'page_view', user_id: 'u2', viewed_at: micros('2026-11-26T23:30:00Z') },
    { event: 'page_view', user_id: '42', viewed_at: micros('2026-11-26T12:00:00Z') },
    { event: 'page_view', user_id: 'ü→😀', viewed_at: micros('2026-11-26T13:00:00Z') },
  ]);
  const day2 = await readParquet(v.files[1]!.localPath);
  assert.deepEqual(day2, [
    { event: 'page_view', user_id: null, viewed_at: micros('2026-11-27T08:00:00Z') + 123_456n },
  ]);
  // The partition column lives in the path, not in the file (Hive style).
  assert.deepEqual(await schemaOf(v.files[0]!.localPath), {
    event: 'BYTE_ARRAY/UTF8',
    user_id: 'BYTE_ARRAY/UTF8',
    viewed_at: 'INT64/TIMESTAMP(local)',
  });
});

void test('page_views: exact DLQ rows, codes and raw payload bytes', async () => {
  const v = out.views[0]!;
  assert.equal(v.dlqFiles.length, 1);
  assert.equal(v.dlqFiles[0]!.partitionPath, 'dt=2026-11-26/');
  const rows = await readParquet(v.dlqFiles[0]!.localPath);
  const expected = CASES.flatMap(([, outcome], i) => {
    if (!outcome.startsWith('dlq:')) return [];
    const [, code, column] = outcome.split(':');
    return [{ code, column: column === '' ? null : column, seq: 1000n + BigInt(i), i }];
  });
  assert.deepEqual(
    rows.map((r) => ({ code: r['error_code'], column: r['column'], seq: r['seq'] })),
    expected.map(({ code, column, seq }) => ({ code, column, seq })),
  );
  for (const [k, r] of rows.entries()) {
    const i = expected[k]!.i;
    assert.deepEqual(
      Buffer.from(r['payload'] as Uint8Array),
      records[i]!.payload,
      `payload of seq ${String(r['seq'])}`,
    );
    assert.equal(r['ingest_time'], records[i]!.ingestTimeMicros);
    assert.equal(typeof r['error_message'], 'string');
  }
  const messages = rows.map((r) => r['error_message']);
  assert.ok(messages.includes('value yesterday at $.ts does not convert to TIMESTAMP'), messages.join('\n'));
  assert.ok(messages.includes('required value at $.ts is missing or null'));
  assert.ok(messages.includes('payload is not valid UTF-8'));
  assert.deepEqual(await schemaOf(v.dlqFiles[0]!.localPath), {
    error_code: 'BYTE_ARRAY/UTF8',
    error_message: 'BYTE_ARRAY/UTF8',
    column: 'BYTE_ARRAY/UTF8',
    payload: 'BYTE_ARRAY/',
    seq: 'INT64/UINT_64',
    ingest_time: 'INT64/TIMESTAMP(utc)',
  });
});

void test('page_views: row accounting is exact (rows in = view + filtered + DLQ)', () => {
  const v = out.views[0]!;
  const count = (pred: (o: Outcome) => boolean) => CASES.filter(([, o]) => pred(o)).length;
  assert.equal(out.rowsIn, CASES.length);
  assert.equal(v.rowsIn, CASES.length);
  assert.equal(
    v.viewRows,
    count((o) => o === 'ok'),
  );
  assert.equal(
    v.filteredRows,
    count((o) => o === 'filtered'),
  );
  assert.equal(
    v.dlqRows,
    count((o) => o.startsWith('dlq:')),
  );
  assert.equal(v.viewRows + v.filteredRows + v.dlqRows, v.rowsIn);
  assert.deepEqual(v.dlqByCode, {
    invalid_json: count((o) => o.startsWith('dlq:invalid_json')),
    missing_required: count((o) => o.startsWith('dlq:missing_required')),
    cast_failed: count((o) => o.startsWith('dlq:cast_failed')),
    expression_failed: 0,
    partition_value_too_long: 0,
    too_many_partitions: 0,
    view_failed: 0,
  });
  assert.equal(v.specHash, compiled.specHash);
  assert.equal(out.firstSeq, 1000n);
  assert.equal(out.lastSeq, 1000n + BigInt(CASES.length - 1));
});

void test('produced files: sizes and sha256 match the bytes on disk; cleanup removes them', async () => {
  const files: ParquetFile[] = [...out.views[0]!.files, ...out.views[0]!.dlqFiles];
  for (const f of files) {
    assert.equal((await stat(f.localPath)).size, f.sizeBytes);
    assert.equal(await sha256File(f.localPath), f.sha256);
    assert.ok(f.localPath.startsWith(out.jobDir + path.sep));
  }
  await out.cleanup();
  assert.deepEqual(await readdir(path.join(scratch, 'jobs')), []);
});

void test('types, defaults, nested values, strict integers, JSONPath indexes', async () => {
  const spec = validateView({
    name: 'typed',
    columns: [
      { name: 'id', type: 'UBIGINT', path: '$.id', required: true },
      { name: 'n', type: 'INTEGER', path: '$.n', default: -1 },
      { name: 'price', type: 'DECIMAL(10,2)', path: '$.price' },
      { name: 'ok', type: 'BOOLEAN', path: '$.ok' },
      { name: 'ratio', type: 'DOUBLE', path: '$.ratio' },
      { name: 'day', type: 'DATE', path: '$.day' },
      { name: 'at', type: 'TIMESTAMPTZ', path: '$.at' },
      { name: 'first_tag', type: 'VARCHAR', path: '$.tags[0]' },
      { name: 'tags', type: 'LIST(VARCHAR)', path: '$.tags' },
      { name: 'geo', type: 'STRUCT(lat DOUBLE, lon DOUBLE)', path: '$.geo' },
      { name: 'ua', type: 'VARCHAR', path: '$["user-agent"]', default: 'unknown' },
      { name: 'extra', type: 'JSON', path: '$.extra' },
    ],
  });
  const payloads = [
    '{"id":1,"n":5,"price":"12.345","ok":true,"ratio":0.5,"day":"2026-11-26","at":"2026-11-26T10:00:00+01:00","tags":["a","b"],"geo":{"lat":1.5,"lon":-2},"user-agent":"curl","extra":{"k":[1,2]}}',
    '{"id":"18446744073709551615"}',
    '{"id":3,"n":3.5}',
    '{"id":4,"n":"x"}',
    '{"id":-1}',
    '{"id":6,"tags":"not-a-list"}',
    '{"id":7,"n":1e3,"extra":null}',
  ];
  const c = await db.withConnection((conn) => compileView(conn, spec));
  const res = await materializeSegment(db, {
    jobId: 'typed',
    records: payloads.map((p, i) => ({
      seq: BigInt(i + 1),
      ingestTimeMicros: T0_MICROS,
      payload: Buffer.from(p),
    })),
    views: [c],
  });
  const v = res.views[0]!;
  const rows = await readParquet(v.files[0]!.localPath);
  assert.deepEqual(rows, [
    {
      id: 1n,
      n: 5,
      price: 12.35,
      ok: true,
      ratio: 0.5,
      day: 20783, // days since 1970-01-01
      at: micros('2026-11-26T09:00:00Z'),
      first_tag: 'a',
      tags: ['a', 'b'],
      geo: { lat: 1.5, lon: -2 },
      ua: 'curl',
      extra: { k: [1, 2] },
    },
    {
      id: 18446744073709551615n,
      n: -1,
      price: null,
      ok: null,
      ratio: null,
      day: null,
      at: null,
      first_tag: null,
      tags: null,
      geo: null,
      ua: 'unknown',
      extra: null,
    },
    {
      id: 7n,
      n: 1000,
      price: null,
      ok: null,
      ratio: null,
      day: null,
      at: null,
      first_tag: null,
      tags: null,
      geo: null,
      ua: 'unknown',
      extra: null,
    },
  ]);
  const dlq = await readParquet(v.dlqFiles[0]!.localPath);
  assert.deepEqual(
    dlq.map((r) => [r['seq'], r['error_code'], r['column']]),
    [
      [3n, 'cast_failed', 'n'], // 3.5 would round to 4: refused
      [4n, 'cast_failed', 'n'],
      [5n, 'cast_failed', 'id'], // -1 is not a UBIGINT
      [6n, 'cast_failed', 'tags'],
    ],
  );
  // Flattened Parquet schema: nested types show their group and leaf elements.
  assert.deepEqual(await schemaOf(v.files[0]!.localPath), {
    id: 'INT64/UINT_64',
    n: 'INT32/INT_32',
    price: 'INT64/DECIMAL',
    ok: 'BOOLEAN/',
    ratio: 'DOUBLE/',
    day: 'INT32/DATE',
    at: 'INT64/TIMESTAMP(utc)',
    first_tag: 'BYTE_ARRAY/UTF8',
    tags: 'group/LIST',
    list: 'group/',
    element: 'BYTE_ARRAY/UTF8',
    geo: 'group/',
    lat: 'DOUBLE/',
    lon: 'DOUBLE/',
    ua: 'BYTE_ARRAY/UTF8',
    extra: 'BYTE_ARRAY/JSON',
  });
  await res.cleanup();
});

void test('partition values: hour truncation, strings escaped, NULL → default partition; expression errors go to the DLQ', async () => {
  const spec = validateView({
    name: 'parts',
    columns: [
      { name: 'ts', type: 'TIMESTAMP', path: '$.at', required: true },
      { name: 'region', type: 'VARCHAR', path: '$.region' },
      { name: 'd', type: 'VARCHAR', path: '$.d' },
    ],
    partitioning: [
      { expression: "date_trunc('hour', ts)", alias: 'hr' },
      { expression: 'region', alias: 'r' },
      { expression: "strptime(coalesce(d, '2026-01-01'), '%Y-%m-%d')", alias: 'dd' },
    ],
  });
  const c = await db.withConnection((conn) => compileView(conn, spec));
  const payloads = [
    '{"at":"2026-11-26T13:45:00Z","region":"eu/west 1"}',
    '{"at":"2026-11-26T13:05:00Z"}',
    '{"at":"2026-11-26T14:05:00Z","region":"eu/west 1","d":"garbage"}',
  ];
  const res = await materializeSegment(db, {
    jobId: 'parts',
    records: payloads.map((p, i) => ({
      seq: BigInt(i + 1),
      ingestTimeMicros: T0_MICROS,
      payload: Buffer.from(p),
    })),
    views: [c],
  });
  const v = res.views[0]!;
  assert.deepEqual(
    v.files.map((f) => [f.partitionPath, f.partitions]),
    [
      [
        'hr=2026-11-26T13/r=__HIVE_DEFAULT_PARTITION__/dd=2026-01-01T00%3A00%3A00/',
        [
          ['hr', '2026-11-26T13'],
          ['r', null],
          ['dd', '2026-01-01T00:00:00'],
        ],
      ],
      [
        'hr=2026-11-26T13/r=eu%2Fwest%201/dd=2026-01-01T00%3A00%3A00/',
        [
          ['hr', '2026-11-26T13'],
          ['r', 'eu/west 1'],
          ['dd', '2026-01-01T00:00:00'],
        ],
      ],
    ],
  );
  assert.equal(v.dlqByCode.expression_failed, 1);
  const dlq = await readParquet(v.dlqFiles[0]!.localPath);
  assert.deepEqual(
    dlq.map((r) => [r['seq'], r['error_code'], r['column']]),
    [[3n, 'expression_failed', 'dd']],
  );
  await res.cleanup();
});

void test('several views over one load; async iterable input; empty outputs write no file', async () => {
  const all = await db.withConnection((conn) =>
    compileView(
      conn,
      validateView({ name: 'all_events', columns: [{ name: 'e', type: 'VARCHAR', path: '$.event' }] }),
    ),
  );
  const none = await db.withConnection((conn) =>
    compileView(
      conn,
      validateView({
        name: 'nothing',
        columns: [{ name: 'e', type: 'VARCHAR', path: '$.event' }],
        filter: "e = 'never'",
      }),
    ),
  );
  async function* gen(): AsyncGenerator<SegmentRecord> {
    for (const r of records) yield r;
  }
  const res = await materializeSegment(db, { jobId: 'multi', records: gen(), views: [compiled, all, none] });
  assert.deepEqual(
    res.views.map((v) => [v.view, v.viewRows, v.filteredRows, v.dlqRows, v.files.length, v.dlqFiles.length]),
    [
      ['page_views', 5, 2, 9, 2, 1],
      // Valid JSON with no `event` is still a row (the column is optional); invalid JSON is not.
      ['all_events', 12, 0, 4, 1, 1],
      ['nothing', 0, 12, 4, 0, 1],
    ],
  );
  const allRows = await readParquet(res.views[1]!.files[0]!.localPath);
  assert.equal(res.views[1]!.files[0]!.partitionPath, '');
  assert.equal(allRows.length, 12);
  await res.cleanup();
});

void test('randomised: every record lands where an independent JS reference says, values included', async () => {
  const spec = validateView({
    name: 'rand',
    columns: [
      { name: 'event', type: 'VARCHAR', path: '$.event', required: true },
      { name: 'n', type: 'INTEGER', path: '$.n' },
      { name: 'ts', type: 'TIMESTAMP', path: '$.ts', required: true },
    ],
    filter: "event IN ('a', 'b')",
    partitioning: [{ expression: 'n % 3', alias: 'p' }],
  });
  const c = await db.withConnection((conn) => compileView(conn, spec));
  let seed = 7;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const ABSENT = Symbol('absent');
  const events = ['a', 'b', 'c', null, ABSENT, 7] as const;
  const ns = [1, -5, 42, 2147483648, 3.5, '12', 'x', null, ABSENT] as const;
  const tss = [
    '2026-11-26T10:00:00Z',
    '2026-11-26T10:00:00.5+02:00',
    '2026-11-26 10:00:00',
    'nope',
    null,
    ABSENT,
  ] as const;
  type Expect = {
    status: 'ok' | 'filtered' | 'dlq';
    code?: string;
    column?: string | null;
    n?: number | null;
    ts?: bigint;
  };
  const recs: SegmentRecord[] = [];
  const expect = new Map<bigint, Expect>();
  for (let i = 0; i < 20_000; i++) {
    const seq = BigInt(i + 1);
    const roll = rand();
    let payload: Buffer;
    let e: Expect;
    if (roll < 0.03) {
      payload = Buffer.from(pick(['{"event":', 'garbage', '', '{"a":1}}']));
      e = { status: 'dlq', code: 'invalid_json', column: null };
    } else if (roll < 0.04) {
      payload = Buffer.from([0xc3, 0x28]);
      e = { status: 'dlq', code: 'invalid_json', column: null };
    } else {
      const obj: Record<string, unknown> = {};
      const ev = pick(events);
      const n = pick(ns);
      const ts = pick(tss);
      if (ev !== ABSENT) obj['event'] = ev;
      if (n !== ABSENT) obj['n'] = n;
      if (ts !== ABSENT) obj['ts'] = ts;
      payload = Buffer.from(JSON.stringify(obj));
      // The reference: the documented precedence, written independently of the SQL.
      const event = ev === ABSENT || ev === null ? null : String(ev);
      const nPresent = n !== ABSENT && n !== null;
      const nValue = !nPresent
        ? null
        : typeof n === 'number'
          ? Number.isInteger(n) && Math.abs(n) < 2 ** 31
            ? n
            : undefined
          : /^-?\d+$/.test(n)
            ? Number(n)
            : undefined;
      const tsValue =
        ts === ABSENT || ts === null
          ? null
          : ts === 'nope'
            ? undefined
            : micros(ts.includes('+') ? ts : ts.endsWith('Z') ? ts : `${ts.replace(' ', 'T')}Z`);
      if (event === null) e = { status: 'dlq', code: 'missing_required', column: 'event' };
      else if (event !== 'a' && event !== 'b') e = { status: 'filtered' };
      else if (nValue === undefined) e = { status: 'dlq', code: 'cast_failed', column: 'n' };
      else if (tsValue === null) e = { status: 'dlq', code: 'missing_required', column: 'ts' };
      else if (tsValue === undefined) e = { status: 'dlq', code: 'cast_failed', column: 'ts' };
      else e = { status: 'ok', n: nValue, ts: tsValue };
    }
    recs.push({ seq, ingestTimeMicros: T0_MICROS + BigInt(i), payload });
    expect.set(seq, e);
  }
  const res = await materializeSegment(db, { jobId: 'rand', records: recs, views: [c] });
  const v = res.views[0]!;
  const got = new Map<bigint, Expect>();
  for (const f of v.files) {
    const p = f.partitions[0]![1];
    for (const r of await readParquet(f.localPath)) {
      const n = r['n'] as number | null;
      assert.equal(p, n === null ? null : String(n % 3), 'partition value');
      // Rows carry no seq; match them by content below.
      got.set(BigInt(got.size + 1) * -1n, { status: 'ok', n, ts: r['ts'] as bigint });
    }
  }
  for (const f of v.dlqFiles)
    for (const r of await readParquet(f.localPath))
      got.set(r['seq'] as bigint, {
        status: 'dlq',
        code: r['error_code'] as string,
        column: r['column'] as string | null,
      });
  const want = [...expect.entries()];
  const wantDlq = want.filter(([, e]) => e.status === 'dlq');
  assert.deepEqual(
    [...got.entries()].filter(([, e]) => e.status === 'dlq').sort(([a], [b]) => (a < b ? -1 : 1)),
    wantDlq,
  );
  const key = (e: Expect) => `${e.n}|${e.ts}`;
  const okGot = [...got.values()]
    .filter((e) => e.status === 'ok')
    .map(key)
    .sort();
  const okWant = want
    .filter(([, e]) => e.status === 'ok')
    .map(([, e]) => key(e))
    .sort();
  assert.deepEqual(okGot, okWant);
  assert.equal(v.filteredRows, want.filter(([, e]) => e.status === 'filtered').length);
  assert.equal(v.viewRows + v.filteredRows + v.dlqRows, recs.length);
  assert.ok(v.viewRows > 1000 && v.dlqRows > 1000 && v.filteredRows > 1000, JSON.stringify(v.dlqByCode));
  await res.cleanup();
});
