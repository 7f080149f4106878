// The clean write (materialize.ts writeIfClean: a segment guessed to be all
// view rows written straight from the first pass) and the integer columns'
// fraction test (compile.ts castFailedSql), each with a cheap path in front
// of the exact one: the clean write has no WHERE and stops at the first row
// that is not 'ok' (error()), and an integer whose text is the value's own
// spelling skips the '.'/exponent test. Every integer spelling below sits in
// an otherwise clean segment that follows a clean one, so the clean write is
// tried on it; where it lands (the view with its value, or the DLQ with its
// code and column) is written here from docs/views.md, not from the SQL, and
// must be the same through the full classification (fastPath: false).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { compileView, createParquetDb, materializeSegment, validateView } from '../src/views/index.ts';
import type { CompiledView, ParquetDb, SegmentRecord, ViewOutput } from '../src/views/index.ts';

let scratch: string;
let db: ParquetDb;

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'lf-views-clean-'));
  db = await createParquetDb({ scratchDir: scratch, memoryLimitBytes: 256 << 20, threads: 2 });
});

after(async () => {
  await db.close();
  await rm(scratch, { recursive: true, force: true });
});

type Expected = { value: bigint } | { code: 'cast_failed' | 'missing_required' | 'invalid_json' };

/** `n`'s JSON text → where the record must land, per column type (docs/views.md, Types). */
const SPELLINGS: readonly [string, Record<'INTEGER' | 'BIGINT' | 'UTINYINT', Expected>][] = [
  ['12', { INTEGER: { value: 12n }, BIGINT: { value: 12n }, UTINYINT: { value: 12n } }],
  ['-12', { INTEGER: { value: -12n }, BIGINT: { value: -12n }, UTINYINT: { code: 'cast_failed' } }],
  ['-0', { INTEGER: { value: 0n }, BIGINT: { value: 0n }, UTINYINT: { value: 0n } }],
  ['1.0', { INTEGER: { value: 1n }, BIGINT: { value: 1n }, UTINYINT: { value: 1n } }],
  ['1e2', { INTEGER: { value: 100n }, BIGINT: { value: 100n }, UTINYINT: { value: 100n } }],
  ['1E2', { INTEGER: { value: 100n }, BIGINT: { value: 100n }, UTINYINT: { value: 100n } }],
  ['0.1e1', { INTEGER: { value: 1n }, BIGINT: { value: 1n }, UTINYINT: { value: 1n } }],
  [
    '3.5',
    { INTEGER: { code: 'cast_failed' }, BIGINT: { code: 'cast_failed' }, UTINYINT: { code: 'cast_failed' } },
  ],
  [
    '3.7',
    { INTEGER: { code: 'cast_failed' }, BIGINT: { code: 'cast_failed' }, UTINYINT: { code: 'cast_failed' } },
  ],
  [
    '"15E-1"',
    { INTEGER: { code: 'cast_failed' }, BIGINT: { code: 'cast_failed' }, UTINYINT: { code: 'cast_failed' } },
  ],
  [
    '"5e-1"',
    { INTEGER: { code: 'cast_failed' }, BIGINT: { code: 'cast_failed' }, UTINYINT: { code: 'cast_failed' } },
  ],
  [
    '12.5e-1',
    { INTEGER: { code: 'cast_failed' }, BIGINT: { code: 'cast_failed' }, UTINYINT: { code: 'cast_failed' } },
  ],
  [
    '"3.5"',
    { INTEGER: { code: 'cast_failed' }, BIGINT: { code: 'cast_failed' }, UTINYINT: { code: 'cast_failed' } },
  ],
  ['"12"', { INTEGER: { value: 12n }, BIGINT: { value: 12n }, UTINYINT: { value: 12n } }],
  ['"+12"', { INTEGER: { value: 12n }, BIGINT: { value: 12n }, UTINYINT: { value: 12n } }],
  ['"012"', { INTEGER: { value: 12n }, BIGINT: { value: 12n }, UTINYINT: { value: 12n } }],
  ['" 7 "', { INTEGER: { value: 7n }, BIGINT: { value: 7n }, UTINYINT: { value: 7n } }],
  ['"1e3"', { INTEGER: { value: 1000n }, BIGINT: { value: 1000n }, UTINYINT: { code: 'cast_failed' } }],
  ['256', { INTEGER: { value: 256n }, BIGINT: { value: 256n }, UTINYINT: { code: 'cast_failed' } }],
  [
    '2147483648',
    { INTEGER: { code: 'cast_failed' }, BIGINT: { value: 2147483648n }, UTINYINT: { code: 'cast_failed' } },
  ],
  [
    'true',
    { INTEGER: { code: 'cast_failed' }, BIGINT: { code: 'cast_failed' }, UTINYINT: { code: 'cast_failed' } },
  ],
  [
    '"x"',
    { INTEGER: { code: 'cast_failed' }, BIGINT: { code: 'cast_failed' }, UTINYINT: { code: 'cast_failed' } },
  ],
  [
    '[1]',
    { INTEGER: { code: 'cast_failed' }, BIGINT: { code: 'cast_failed' }, UTINYINT: { code: 'cast_failed' } },
  ],
  [
    'null',
    {
      INTEGER: { code: 'missing_required' },
      BIGINT: { code: 'missing_required' },
      UTINYINT: { code: 'missing_required' },
    },
  ],
];

function segment(payloads: readonly string[]): SegmentRecord[] {
  return payloads.map((p, i) => ({
    seq: BigInt(i + 1),
    ingestTimeMicros: 1_796_000_000_000_000n + BigInt(i),
    payload: Buffer.from(p),
  }));
}

const clean = (n: number): string[] =>
  Array.from({ length: n }, (_, i) =>
    JSON.stringify({ id: `c${i}`, n: i % 100, ts: '2026-11-26T10:00:00Z' }),
  );

/** Where the record `id` landed: its view value, or its DLQ code and column. */
async function placeOf(v: ViewOutput, id: string): Promise<unknown> {
  const rows = async (file: string, where: string): Promise<Record<string, unknown>[]> =>
    db.withConnection(async (c) =>
      (await c.runAndReadAll(`SELECT * FROM read_parquet('${file}') WHERE ${where}`)).getRowObjects(),
    );
  const found: unknown[] = [];
  for (const f of v.files)
    for (const r of await rows(f.localPath, `id = '${id}'`)) found.push({ value: r['n'] });
  for (const f of v.dlqFiles)
    for (const r of await rows(f.localPath, `json_extract_string(decode(payload), '$.id') = '${id}'`))
      found.push({ code: r['error_code'], column: r['column'] });
  return found;
}

void test('integer spellings in a segment tried as clean land where docs/views.md says, as through the full classification', async () => {
  for (const type of ['INTEGER', 'BIGINT', 'UTINYINT'] as const) {
    const spec = validateView({
      name: `ints_${type.toLowerCase()}`,
      columns: [
        { name: 'id', type: 'VARCHAR', path: '$.id', required: true },
        { name: 'n', type, path: '$.n', required: true },
        { name: 'ts', type: 'TIMESTAMP', path: '$.ts', required: true },
      ],
      partitioning: [{ expression: "date_trunc('day', ts)", alias: 'dt' }],
    });
    const twoPass = await db.withConnection((c) => compileView(c, spec));
    const full = await db.withConnection((c) => compileView(c, spec, { fastPath: false }));
    assert.notEqual(twoPass.fastSql, undefined);
    let job = 0;
    const run = async (
      view: CompiledView,
      payloads: string[],
    ): Promise<{ v: ViewOutput; recordsAsNdjson: boolean; cleanup: () => Promise<void> }> => {
      const out = await materializeSegment(db, {
        jobId: `ints-${type}-${job++}`,
        records: segment(payloads),
        views: [view],
      });
      const v = out.views[0]!;
      assert.equal(v.failed, undefined);
      assert.equal(v.viewRows + v.filteredRows + v.dlqRows, payloads.length);
      return { v, recordsAsNdjson: out.recordsAsNdjson, cleanup: () => out.cleanup() };
    };
    for (const [text, byType] of SPELLINGS) {
      const expected = byType[type];
      const payloads = [...clean(500), `{"id":"x","n":${text},"ts":"2026-11-26T11:00:00Z"}`, ...clean(10)];
      // A clean segment first: the next one is tried as clean (writeIfClean).
      const primer = await materializeSegment(db, {
        jobId: `ints-${type}-${job++}`,
        records: segment(clean(50)),
        views: [twoPass],
      });
      assert.equal(primer.views[0]!.viewRows, 50);
      await primer.cleanup();
      const want =
        'value' in expected
          ? [{ value: type === 'BIGINT' ? expected.value : Number(expected.value) }]
          : [{ code: expected.code, column: 'n' }];
      for (const [arm, view] of [
        ['two-pass', twoPass],
        ['full', full],
      ] as const) {
        const { v, recordsAsNdjson, cleanup } = await run(view, payloads);
        if (arm === 'two-pass') {
          // The loader wrote every record as a line for read_json: the clean write was tried.
          assert.equal(recordsAsNdjson, true, `${type} ${text}`);
        }
        assert.deepEqual(await placeOf(v, 'x'), want, `${type} ${text} (${arm})`);
        assert.equal(
          v.viewRows,
          'value' in expected ? payloads.length : payloads.length - 1,
          `${type} ${text} (${arm})`,
        );
        await cleanup();
      }
    }
  }
});

void test('a segment tried as clean with one row of each kind at fault falls back to the classification, row for row', async () => {
  const spec = validateView({
    name: 'faults',
    columns: [
      { name: 'id', type: 'VARCHAR', path: '$.id', required: true },
      { name: 'n', type: 'INTEGER', path: '$.n' },
      { name: 'ts', type: 'TIMESTAMP', path: '$.ts', required: true },
    ],
    partitioning: [{ expression: "date_trunc('day', ts)", alias: 'dt' }],
  });
  const twoPass = await db.withConnection((c) => compileView(c, spec));
  const faults: [string, string, string | null][] = [
    ['{"id":"a","n":1.5,"ts":"2026-11-26T10:00:00Z"}', 'cast_failed', 'n'],
    ['{"id":"b","n":1,"ts":"yesterday"}', 'cast_failed', 'ts'],
    ['{"id":"c","n":1}', 'missing_required', 'ts'],
    ['{"id":"d","n":1,"ts":"2026-11-26T10:00:00Z"', 'invalid_json', null],
    ['{"n":1,"ts":"2026-11-26T10:00:00Z"}', 'missing_required', 'id'],
  ];
  for (const [i, [payload, code, column]] of faults.entries()) {
    const primer = await materializeSegment(db, {
      jobId: `faults-p${i}`,
      records: segment(clean(50)),
      views: [twoPass],
    });
    assert.equal(primer.views[0]!.viewRows, 50);
    await primer.cleanup();
    // The row at fault in the middle: rows after it must not be lost either.
    const payloads = [...clean(300), payload, ...clean(300)];
    const out = await materializeSegment(db, {
      jobId: `faults-${i}`,
      records: segment(payloads),
      views: [twoPass],
    });
    const v = out.views[0]!;
    assert.equal(v.failed, undefined);
    assert.deepEqual([v.viewRows, v.filteredRows, v.dlqRows], [600, 0, 1], payload);
    assert.equal(v.dlqByCode[code as keyof typeof v.dlqByCode], 1, payload);
    const dlq = await db.withConnection(async (c) =>
      (
        await c.runAndReadAll(
          `SELECT error_code, "column", seq, decode(payload) AS p FROM read_parquet('${v.dlqFiles[0]!.localPath}')`,
        )
      ).getRowObjects(),
    );
    assert.deepEqual(dlq, [{ error_code: code, column, seq: 301n, p: payload }], payload);
    await out.cleanup();
  }
});

void test('the clean write keeps the Iceberg field ids, its first column included (now a CASE)', async () => {
  const spec = validateView({
    name: 'ids',
    columns: [
      { name: 'id', type: 'VARCHAR', path: '$.id', required: true },
      { name: 'n', type: 'INTEGER', path: '$.n' },
      { name: 'ts', type: 'TIMESTAMP', path: '$.ts', required: true },
    ],
    partitioning: [{ expression: "date_trunc('day', ts)", alias: 'dt' }],
  });
  const view = await db.withConnection((c) => compileView(c, spec));
  const fieldIds = new Map([['ids', { id: 7, n: 8, ts: 9 }]]);
  const idsOf = async (file: string): Promise<unknown> =>
    db.withConnection(async (c) =>
      (
        await c.runAndReadAll(
          `SELECT name, field_id FROM parquet_schema('${file}') WHERE field_id IS NOT NULL ORDER BY field_id`,
        )
      ).getRows(),
    );
  for (const [i, payloads] of [clean(50), clean(300)].entries()) {
    // The second segment follows a clean one: written by the clean write.
    const out = await materializeSegment(db, {
      jobId: `ids-${i}`,
      records: segment(payloads),
      views: [view],
      fieldIds,
    });
    if (i === 1) assert.equal(out.recordsAsNdjson, true);
    const v = out.views[0]!;
    assert.equal(v.viewRows, payloads.length);
    assert.deepEqual(await idsOf(v.files[0]!.localPath), [
      ['id', 7n],
      ['n', 8n],
      ['ts', 9n],
    ]);
    await out.cleanup();
  }
});
