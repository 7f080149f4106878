// The typed JSON reader (compile.ts: json_transform for views whose paths
// are all object keys) and the two-pass classification built on it (a first
// pass settling the rows that are fine, the full SELECT for the rest) against
// the one-pass and the list extraction they replace: the same awkward records
// through every compilation of each view must give the same view rows, the
// same DLQ rows (code, column, message, payload, seq) and the same counts. The records are written as raw text, so they hold what
// JSON.stringify never makes: duplicate keys, keys differing only in case,
// number spellings, escapes, NUL, lone surrogates, payloads that are not
// objects, and bytes that are not JSON or not UTF-8.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { compileView, createParquetDb, materializeSegment, validateView } from '../src/views/index.ts';
import type { ParquetDb, SegmentRecord, ViewOutput } from '../src/views/index.ts';
import { ndjsonLine } from '../src/parquet/records.ts';
import { fastSqlOverNdjson } from '../src/views/materialize.ts';

let scratch: string;
let db: ParquetDb;

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'lf-views-typed-'));
  db = await createParquetDb({ scratchDir: scratch, memoryLimitBytes: 256 << 20, threads: 2 });
});

after(async () => {
  await db.close();
  await rm(scratch, { recursive: true, force: true });
});

const VALUES = [
  '"a"',
  '"A"',
  '""',
  '"x\\u0000y"',
  '"\\ud800"',
  '"caf\\u00e9 \\"q\\" \\\\ /"',
  '"ü→😀"',
  '"12"',
  '" 7 "',
  '"3.5"',
  '"1e3"',
  '"true"',
  '"t"',
  '"2026-11-26T10:00:00Z"',
  '"2026-11-27T01:30:00+02:00"',
  '"2026-11-26 10:00:00"',
  '"2026-11-26"',
  '"nope"',
  '"NaN"',
  '0',
  '-0',
  '1',
  '-5',
  '42',
  '3.5',
  '1.0',
  '1E5',
  '0.1e1',
  '1e400',
  '2147483648',
  '12345678901234567890123',
  '18446744073709551615',
  'true',
  'false',
  'null',
  '[]',
  '[1,"2",null]',
  '{}',
  '{"b":1}',
  '{"b":"x","B":"y"}',
  '{"b":{"c":[1,2]}}',
  '[{"b":1}]',
];
const KEYS = ['a', 'A', 'b', 'n', 'ts', 'o', 'my key', '', 'x', "it's", 'ü.k'];

/** A payload as text: an object of random keys (duplicates and case twins included), or something else. */
function payload(rand: () => number): Buffer {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const roll = rand();
  if (roll < 0.02) return Buffer.from([0xc3, 0x28]);
  if (roll < 0.05)
    return Buffer.from(pick(['{"a":', 'garbage', '', '   ', '{"a":1}}', '{"a":1} x', '{"a":1,}']));
  if (roll < 0.1) return Buffer.from(pick(VALUES));
  const members: string[] = [];
  const n = Math.floor(rand() * 7);
  for (let i = 0; i < n; i++) {
    const key = pick(KEYS);
    // Nested objects for the two-level paths: a.b, o.b, o.B.
    const value = rand() < 0.25 ? `{${JSON.stringify(pick(['b', 'B']))}:${pick(VALUES)}}` : pick(VALUES);
    members.push(`${JSON.stringify(key)}:${value}`);
  }
  // A third get well-formed members after the random ones (the first of
  // duplicate keys counts), so that the typed view has rows to keep.
  if (rand() < 0.35)
    members.push(
      '"n":1,"ts":"2026-11-26T10:00:00Z","a":"1.5","b":2.5,"A":true,"o":{"b":[1,2],"B":7},"x":{"b":1,"c":"q"}',
    );
  const ws = pick(['', ' ', '\n', '\t ']);
  return Buffer.from(`${ws}{${members.join(`,${ws}`)}}${ws}`);
}

const VIEWS = [
  validateView({
    name: 'text',
    columns: [
      { name: 'a', type: 'VARCHAR', path: '$.a', required: true },
      { name: 'a_upper', type: 'VARCHAR', path: '$.A' },
      { name: 'b', type: 'VARCHAR', path: '$.b', default: 'dflt' },
      { name: 'spaced', type: 'VARCHAR', path: '$["my key"]' },
      { name: 'quoted', type: 'VARCHAR', path: '$["it\'s"]' },
      { name: 'dotted', type: 'VARCHAR', path: '$["ü.k"]' },
      { name: 'ob', type: 'VARCHAR', path: '$.o.b' },
      { name: 'o_upper_b', type: 'VARCHAR', path: '$.o.B' },
      { name: 'o', type: 'JSON', path: '$.x' },
    ],
    partitioning: [{ expression: 'length(a) % 4', alias: 'p' }],
  }),
  validateView({
    name: 'typed',
    columns: [
      { name: 'n', type: 'INTEGER', path: '$.n' },
      { name: 'big', type: 'BIGINT', path: '$.o.B' },
      { name: 'f', type: 'DOUBLE', path: '$.b' },
      { name: 'ok', type: 'BOOLEAN', path: '$.A' },
      { name: 'ts', type: 'TIMESTAMP', path: '$.ts', required: true },
      { name: 'd', type: 'DECIMAL(10,2)', path: '$.a' },
      { name: 'l', type: 'INTEGER[]', path: '$.o.b' },
      { name: 's', type: 'STRUCT(b INTEGER, c VARCHAR)', path: '$.x' },
    ],
    filter: 'coalesce(n, 1) % 2 = 1',
    partitioning: [{ expression: "date_trunc('day', ts)", alias: 'dt' }],
  }),
  // Optional values under the filter and the partitions: NULL dates (the
  // DATE partition carried typed), a partition expression that raises (a
  // strict CAST of text), a filter that is NULL for some rows.
  validateView({
    name: 'nullable',
    columns: [
      { name: 'n', type: 'BIGINT', path: '$.n' },
      { name: 'ts', type: 'TIMESTAMP', path: '$.ts' },
      { name: 'a', type: 'VARCHAR', path: '$.a' },
      { name: 'ok', type: 'BOOLEAN', path: '$.A', default: false },
      { name: 'ob', type: 'JSON', path: '$.o.b' },
    ],
    filter: 'n <> 0 OR ok',
    partitioning: [
      { expression: "date_trunc('day', ts)", alias: 'day' },
      { expression: 'CAST(a AS INTEGER) % 3', alias: 'r' },
    ],
  }),
];

/** Every output row of a view, comparable: view rows by content, DLQ rows by seq. */
async function rowsOf(v: ViewOutput): Promise<{ view: string[]; dlq: string[] }> {
  const read = async (file: string): Promise<string[]> =>
    db.withConnection(async (c) =>
      (await c.runAndReadAll(`SELECT * FROM read_parquet('${file}')`))
        .getRowsJson()
        .map((r) => JSON.stringify(r)),
    );
  const view: string[] = [];
  for (const f of v.files) for (const r of await read(f.localPath)) view.push(`${f.partitionPath} ${r}`);
  const dlq: string[] = [];
  for (const f of v.dlqFiles) dlq.push(...(await read(f.localPath)));
  return { view: view.sort(), dlq: dlq.sort() };
}

void test('flat key paths compile to json_transform; index paths, the whole payload and colliding paths do not', async () => {
  const sqlOf = async (columns: object[]): Promise<string> =>
    (await db.withConnection((c) => compileView(c, validateView({ name: 'v', columns })))).sql;
  assert.match(await sqlOf([{ name: 'a', type: 'VARCHAR', path: '$.a.b' }]), /json_transform/);
  assert.match(
    await sqlOf([
      { name: 'a', type: 'VARCHAR', path: '$.a' },
      { name: 't', type: 'VARCHAR', path: '$topic' },
    ]),
    /json_transform/,
  );
  for (const columns of [
    [{ name: 'a', type: 'VARCHAR', path: '$.a[0]' }],
    [{ name: 'a', type: 'JSON', path: '$' }],
    [{ name: 't', type: 'VARCHAR', path: '$topic' }],
    [
      { name: 'a', type: 'VARCHAR', path: '$.a' },
      { name: 'b', type: 'VARCHAR', path: '$.a.b' },
    ],
    [
      { name: 'a', type: 'VARCHAR', path: '$.a' },
      { name: 'b', type: 'JSON', path: '$.a' },
    ],
  ])
    assert.doesNotMatch(await sqlOf(columns), /json_transform/, JSON.stringify(columns));
});

void test('randomised: the two-pass path, the one-pass typed reader and the list extraction put every record in the same place', async () => {
  let seed = 11;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const records: SegmentRecord[] = [];
  for (let i = 0; i < 20_000; i++)
    records.push({
      seq: BigInt(i + 1),
      ingestTimeMicros: 1_796_000_000_000_000n + BigInt(i),
      payload: payload(rand),
    });
  for (const spec of VIEWS) {
    const twoPass = await db.withConnection((c) => compileView(c, spec));
    const typed = await db.withConnection((c) => compileView(c, spec, { fastPath: false }));
    const listed = await db.withConnection((c) => compileView(c, spec, { typedReader: false }));
    assert.notEqual(twoPass.fastSql, undefined);
    assert.equal(typed.fastSql, undefined);
    assert.match(typed.sql, /json_transform/);
    assert.doesNotMatch(listed.sql, /json_transform/);
    assert.equal(listed.fastSql, undefined);
    const outs = [];
    for (const [arm, view] of [
      ['two-pass', twoPass],
      ['typed', typed],
      ['listed', listed],
    ] as const)
      outs.push({
        arm,
        out: await materializeSegment(db, { jobId: `${arm}-${spec.name}`, records, views: [view] }),
      });
    const [va, ra] = [outs[0]!.out.views[0]!, await rowsOf(outs[0]!.out.views[0]!)];
    assert.equal(va.failed, undefined, `${spec.name}: two-pass`);
    // Not a vacuous comparison: every outcome occurs.
    assert.ok(va.viewRows > 500 && va.dlqRows > 500, `${spec.name}: ${JSON.stringify(va.dlqByCode)}`);
    if (spec.filter !== undefined) assert.ok(va.filteredRows > 50, `${spec.name}: filtered`);
    assert.equal(ra.view.length, va.viewRows);
    for (const { arm, out } of outs.slice(1)) {
      const vb = out.views[0]!;
      assert.equal(vb.failed, undefined, `${spec.name}: ${arm}`);
      assert.deepEqual(
        { view: va.viewRows, filtered: va.filteredRows, dlq: va.dlqByCode },
        { view: vb.viewRows, filtered: vb.filteredRows, dlq: vb.dlqByCode },
        `${spec.name}: two-pass vs ${arm}`,
      );
      const rb = await rowsOf(vb);
      assert.deepEqual(ra.view, rb.view, `${spec.name}: view rows, two-pass vs ${arm}`);
      assert.deepEqual(ra.dlq, rb.dlq, `${spec.name}: DLQ rows, two-pass vs ${arm}`);
    }
    for (const { out } of outs) await out.cleanup();
  }
});

/** Everything a ViewOutput says about its files, and their rows: what must not depend on the path taken. */
async function outcomeOf(v: ViewOutput): Promise<unknown> {
  return {
    counts: [v.rowsIn, v.viewRows, v.filteredRows, v.dlqRows, v.dlqByCode, v.failed],
    files: v.files.map((f) => [f.partitionPath, f.partitions, f.rowCount]),
    dlqFiles: v.dlqFiles.map((f) => [f.partitionPath, f.partitions, f.rowCount]),
    rows: await rowsOf(v),
  };
}

void test('segments written straight from the first pass (every record a view row, dates as partitions) are what the classification writes; any other segment falls back', async () => {
  const event = (i: number, day: number): string =>
    JSON.stringify({
      id: i,
      ts: new Date(Date.UTC(2026, 10, 25 + day, i % 24, i % 60)).toISOString(),
      user: `u${i % 97}`,
    });
  const segment = (payloads: string[]): SegmentRecord[] =>
    payloads.map((p, i) => ({
      seq: BigInt(i + 1),
      ingestTimeMicros: 1_796_000_000_000_000n + BigInt(i),
      payload: Buffer.from(p),
    }));
  const clean = segment(Array.from({ length: 3000 }, (_, i) => event(i, i % 3)));
  // One record at fault (a fractional id), one a JSON scalar, one with an offset.
  const dirty = segment([
    ...clean.slice(0, 1000).map((r) => r.payload.toString()),
    '{"id":3.7,"ts":"2026-11-25T00:00:00Z"}',
    '42',
    '{"id":1,"ts":"2026-11-27T01:30:00+02:00"}',
  ]);
  const specs = [
    validateView({
      name: 'daily',
      columns: [
        { name: 'id', type: 'INTEGER', path: '$.id', required: true },
        { name: 'ts', type: 'TIMESTAMP', path: '$.ts', required: true },
        { name: 'user', type: 'VARCHAR', path: '$.user' },
      ],
      partitioning: [{ expression: "date_trunc('day', ts)", alias: 'dt' }],
    }),
    validateView({
      name: 'flat',
      columns: [
        { name: 'id', type: 'BIGINT', path: '$.id' },
        { name: 'user', type: 'VARCHAR', path: '$.user' },
      ],
    }),
  ];
  const limitsCases = [
    undefined,
    // Fewer files than partitions: too_many_partitions for the smallest.
    { filesMax: 2, keyBytesBase: () => 200, markerEntryBytes: () => 256, markerBytes: 1 << 20 },
    // A marker budget for two partitions' entries only.
    {
      filesMax: 100,
      keyBytesBase: () => 200,
      markerEntryBytes: () => 256,
      markerBytes: 2 * (256 + 200 + 14),
    },
  ];
  // More dates than one COPY may write (PARTITION_FILES_PER_COPY).
  const wide = segment(Array.from({ length: 600 }, (_, i) => event(i, i % 300)));
  for (const [li, partitionLimits] of limitsCases.entries())
    for (const base of specs) {
      // A name per limits case: the guess of the last segment (by spec hash) starts afresh.
      const spec = { ...base, name: `${base.name}_${li}` };
      const twoPass = await db.withConnection((c) => compileView(c, spec));
      const onePass = await db.withConnection((c) => compileView(c, spec, { fastPath: false }));
      for (const [si, records] of [clean, dirty, clean, dirty, dirty, clean, wide, clean].entries()) {
        const job = `${spec.name}-${li}-${si}`;
        const limits = partitionLimits !== undefined ? { partitionLimits } : {};
        const a = await materializeSegment(db, { jobId: `a-${job}`, records, views: [twoPass], ...limits });
        const b = await materializeSegment(db, { jobId: `b-${job}`, records, views: [onePass], ...limits });
        const [oa, ob] = [await outcomeOf(a.views[0]!), await outcomeOf(b.views[0]!)];
        assert.deepEqual(oa, ob, job);
        await a.cleanup();
        await b.cleanup();
      }
    }
});

void test('a clean segment read as NDJSON (read_json, one parse per line) is kept only where the text path keeps it, row for row', async () => {
  // Payloads the NDJSON file takes (one line, '{' … '}'), awkward for a JSON
  // line reader: what it might read differently from json_transform over the
  // text (whitespace JSON does not have, a second document, NaN, trailing
  // commas, raw control bytes in strings, lone surrogates, key case, nesting).
  const weird = [
    '{"a":1} {"a":2}',
    '{"a":1}\u000b}',
    '{"a":1}\f}',
    '{"a":1}/*c*/}',
    '{"a":1}  }',
    '{"a":1}}',
    '{"a":1]}',
    '{"a":NaN}',
    '{"a":Infinity,"n":-Infinity}',
    '{"a":1,}',
    '{"x":[1,2,]}',
    '{"a":"x\ty"}',
    '{"a":"\u0000"}',
    '{"a":"\\u0000z"}',
    '{"a":"\\ud800"}',
    '{}',
    '{ }',
    '{"a":{"x":1}}',
    '{"o":5}',
    '{"o":"s"}',
    '{"o":{"B":1,"b":2}}',
    '{"A":"upper","a":"lower"}',
    '{"a":"dup","a":"dup2"}',
    '{"a" : 1 , "n" : 3 }',
    '{"n":1e999}',
    '{"n":-0}',
    '{"n":3.7}',
    '{"n":"12"}',
    '{"n":true}',
    '{"n":01}',
    '{"ts":"2026-11-26T10:00:00+02:00","n":1}',
    '{"ts":"2026-11-26 10:00:00","n":1}',
    '{"ts":null,"n":1}',
    '{"\\u0061":"escaped key"}',
    '{"x":"a string in a JSON column","n":1}',
    '{"x":{"b":1,"c":"q"},"n":1}',
  ];
  let seed = 5;
  const rand = (): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const sampled: string[] = [];
  while (sampled.length < 40) {
    const p = payload(rand);
    if (ndjsonLine(p, 1 << 20)) sampled.push(p.toString('latin1'));
  }
  const specs = [
    {
      spec: validateView({
        name: 'ndjson_plain',
        columns: [
          { name: 'a', type: 'VARCHAR', path: '$.a' },
          { name: 'ob', type: 'VARCHAR', path: '$.o.b' },
          { name: 'n', type: 'INTEGER', path: '$.n' },
          { name: 'x', type: 'JSON', path: '$.x' },
        ],
      }),
      primer: '{"a":"p","n":1}',
    },
    {
      // The typed view without $.a and $.o.b: keys differing only in case
      // cannot both be struct fields, so such a view has no NDJSON pass.
      spec: {
        ...VIEWS[1]!,
        name: 'ndjson_typed',
        columns: VIEWS[1]!.columns.filter((c) => c.name !== 'd' && c.name !== 'l'),
      },
      primer: '{"n":1,"ts":"2026-11-26T10:00:00Z"}',
    },
  ];
  const rec = (p: Buffer, i: number): SegmentRecord => ({
    seq: BigInt(i + 1),
    ingestTimeMicros: 1_796_000_000_000_000n + BigInt(i),
    payload: p,
  });
  const twins = await db.withConnection((c) => compileView(c, VIEWS[1]!));
  assert.equal(twins.fastStructType, undefined, '$.a and $.A: no NDJSON pass');
  let job = 0;
  let keptWeird = 0;
  let overNdjson = 0;
  let jobs = 0;
  for (const { spec, primer } of specs) {
    const twoPass = await db.withConnection((c) => compileView(c, spec));
    const onePass = await db.withConnection((c) => compileView(c, spec, { fastPath: false }));
    assert.notEqual(twoPass.fastStructType, undefined);
    assert.notEqual(
      fastSqlOverNdjson(twoPass.fastSql!),
      undefined,
      'the first pass has the shape read_json replaces',
    );
    const primed = [rec(Buffer.from(primer), 0), rec(Buffer.from(primer), 1)];
    for (const text of [...weird, ...sampled]) {
      const p = Buffer.from(text, 'latin1');
      assert.ok(ndjsonLine(p, 1 << 20), JSON.stringify(text));
      // A clean segment first, so that the next one is tried as clean.
      const first = await materializeSegment(db, { jobId: `nd-${job++}`, records: primed, views: [twoPass] });
      assert.equal(first.views[0]!.viewRows, 2);
      await first.cleanup();
      const records = [...primed, rec(p, 2)];
      const a = await materializeSegment(db, { jobId: `nd-${job++}`, records, views: [twoPass] });
      jobs++;
      const b = await materializeSegment(db, { jobId: `nd-${job++}`, records, views: [onePass] });
      assert.deepEqual(
        await outcomeOf(a.views[0]!),
        await outcomeOf(b.views[0]!),
        `${spec.name}: ${JSON.stringify(text)}`,
      );
      if (a.views[0]!.viewRows === 3 && weird.includes(text)) keptWeird++;
      // The NDJSON file held all three records, so the clean pass read it (read_json).
      if (a.recordsAsNdjson) overNdjson++;
      await a.cleanup();
      await b.cleanup();
    }
  }
  // Not vacuous: some of the awkward ones are view rows (the NDJSON pass kept them).
  assert.ok(keptWeird > 10, String(keptWeird));
  // And the NDJSON path was the one taken (a fallback to the CSV text would also keep them).
  assert.equal(overNdjson, jobs, `${overNdjson} of ${jobs} jobs read the records as NDJSON`);
});

void test('integer-like keys: the typed reader reads each column from its own key (struct fields follow the JSON text, "1" before "b")', async () => {
  const spec = validateView({
    name: 'int_keys',
    columns: [
      { name: 'b', type: 'VARCHAR', path: '$.b' },
      { name: 'one', type: 'VARCHAR', path: '$["1"]' },
      { name: 'o_z', type: 'VARCHAR', path: '$.o.z' },
      { name: 'o_10', type: 'INTEGER', path: '$.o["10"]' },
      { name: 'o_2', type: 'VARCHAR', path: '$.o["2"]' },
    ],
  });
  const records: SegmentRecord[] = [
    '{"b":"B","1":"ONE","o":{"z":"Z","10":10,"2":"TWO"}}',
    '{"1":"one","b":"b","o":{"2":"two","z":"z","10":"x"}}',
    '{"b":"only b"}',
  ].map((p, i) => ({
    seq: BigInt(i + 1),
    ingestTimeMicros: 1_796_000_000_000_000n,
    payload: Buffer.from(p),
  }));
  const outs = [];
  for (const [arm, options] of [
    ['two-pass', {}],
    ['typed', { fastPath: false }],
    ['listed', { typedReader: false }],
  ] as const) {
    const view = await db.withConnection((c) => compileView(c, spec, options));
    const out = await materializeSegment(db, { jobId: `int-keys-${arm}`, records, views: [view] });
    outs.push(await outcomeOf(out.views[0]!));
    await out.cleanup();
  }
  const listed = outs[2] as { rows: { view: string[] } };
  // The reference: each column its own key's value ("x" is no INTEGER: that record is a DLQ row).
  assert.deepEqual(listed.rows.view, [' ["B","ONE","Z",10,"TWO"]', ' ["only b",null,null,null,null]']);
  assert.deepEqual(outs[0], outs[2], 'two-pass vs list extraction');
  assert.deepEqual(outs[1], outs[2], 'one-pass typed vs list extraction');
});
