// The record loader (parquet/records.ts): payloads go to DuckDB through a
// scratch file its CSV reader takes back, and the few it cannot carry through
// a side table. Every payload must come back byte for byte, whichever way it
// went, with its seq, ingest time and topic, in order; the materialiser's
// outputs built on it (raw Parquet, view, DLQ) must not tell the difference.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, open, readdir, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { INPUT_RELATION, loadRecords, RECORDS_RELATION, useInput } from '../src/parquet/records.ts';
import { COMPILED_TEXT_SQL, withLoadedText } from '../src/views/materialize.ts';
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
  scratch = await mkdtemp(path.join(tmpdir(), 'lf-views-loader-'));
  db = await createParquetDb({ scratchDir: scratch, memoryLimitBytes: 256 << 20, threads: 2 });
});
after(async () => {
  await db.close();
  await rm(scratch, { recursive: true, force: true });
});

/** Payloads that stress the file's framing, and ordinary ones between them. */
function awkwardPayloads(): Buffer[] {
  const out: Buffer[] = [
    Buffer.from(''),
    Buffer.from('{"a":\n1}'),
    Buffer.from('{"a":\r\n1}\r'),
    Buffer.from('line\rbreak'),
    Buffer.from('nul\u0000byte'),
    Buffer.from([0x01]),
    Buffer.from('quote \u0001 inside'),
    Buffer.from('\u0001\u0001 doubled'),
    Buffer.from('unit \u001f separator'),
    Buffer.from('\ufeff{"bom":true}'),
    Buffer.from('NULL'),
    Buffer.from('"quoted"'),
    Buffer.from('  spaced  '),
    Buffer.from('back\\slash \\x41'),
    Buffer.from([0xff, 0xfe, 0x7b, 0x7d]),
    Buffer.from([0x7b, 0xc3]), // a truncated UTF-8 sequence at the end
    Buffer.from([0x80, 0x7b, 0x7d]), // a continuation byte at the start
    Buffer.from('ü→😀'),
    Buffer.from('x'.repeat(5000)), // larger than the test's lineBytesMax
  ];
  return out;
}

function records(payloads: Buffer[], spread = 1): SegmentRecord[] {
  return payloads.map((payload, i) => ({
    seq: 9_000_000_000n + BigInt(i),
    ingestTimeMicros: 1_790_000_000_000_000n + BigInt(i * spread),
    payload,
    ...(i % 4 === 1 ? { topic: `t/${i}` } : {}),
  }));
}

/** Consecutive slices of 1, 2, 3, … records. */
function batches<T>(xs: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let at = 0, n = 1; at < xs.length; at += n, n++) out.push(xs.slice(at, at + n));
  return out;
}

async function* asAsync<T>(xs: readonly T[]): AsyncGenerator<T> {
  for (const x of xs) yield x;
}

/** Payloads NDJSON_FILE takes one per line ('{' … '}', one line), some awkward for a CSV reader or a JSON one. */
function ndjsonPayloads(n: number): Buffer[] {
  const odd = [
    '{"q":"\u0001 quote"}',
    '{"nul":"\u0000"}',
    '{"tab":"a\tb"}',
    '{"a":1} {"a":2}',
    '{"a":1}\u000b}',
    '{,}',
    '{"s":"\\u00e9 ü→😀"}',
    '{"back":"\\\\"}',
    '{"quote":"\\""}',
  ].map((t) => Buffer.from(t));
  return Array.from({ length: n }, (_, i) =>
    i % 5 === 2 ? odd[i % odd.length]! : Buffer.from(`{"i":${i}}`),
  );
}

void test('every payload comes back byte for byte with its seq, time and topic, in order (tiny buffers, both iterable kinds, CSV and NDJSON files)', async () => {
  // Ordinary payloads between the awkward ones, so the tiny buffers flush
  // often and an invalid one sits in the middle of a buffer.
  const payloads: Buffer[] = [];
  for (const [i, p] of awkwardPayloads().entries()) {
    payloads.push(p);
    for (let k = 0; k < 7; k++) payloads.push(Buffer.from(`{"i":${i},"k":${k}}`));
  }
  // [label, payloads, NDJSON file asked for, side rows, NDJSON file kept]
  const cases: [string, Buffer[], boolean, number | undefined, boolean][] = [
    // 0x01 (3), not UTF-8 (3), too large (1): the side table.
    ['csv', payloads, false, 7, false],
    // The first payload is empty: the CSV file from the start.
    ['ndjson, switched at once', payloads, true, 7, false],
    // NDJSON lines over several buffers, then the CSV file from the first payload it cannot take.
    ['ndjson, then csv', [...ndjsonPayloads(60), ...payloads], true, 7, false],
    // A buffer the CSV reader would not give back (a CR, a 0x1F, bytes not UTF-8 inside '{…}'): moved to the CSV file.
    ...(['{"cr":"a\rb"}', '{"us":"a\u001fb"}', '{\u00ff}'] as const).map(
      (bad): [string, Buffer[], boolean, number | undefined, boolean] => [
        `ndjson, buffer refused for ${JSON.stringify(bad)}`,
        [
          ...ndjsonPayloads(40),
          Buffer.from(bad, bad.includes('\u00ff') ? 'latin1' : 'utf8'),
          ...ndjsonPayloads(40),
        ],
        true,
        undefined, // records after the switch that hold a 0x01 go to the side table too
        false,
      ],
    ),
    // A payload from '{' to '}' over two lines, amid lines the fast path takes: the CSV file from it on.
    [
      'ndjson, then a payload with a newline',
      [...ndjsonPayloads(30), Buffer.from('{"a":\n1}'), ...ndjsonPayloads(30)],
      true,
      undefined,
      false,
    ],
    ['ndjson, every record', ndjsonPayloads(120), true, 0, true],
  ];
  for (const [label, input, ndjson, sideRows, kept] of cases) {
    const recs = records(input);
    // Payloads as views into one shared ArrayBuffer (as a WAL reader hands
    // them out), not Buffers, and a yield every few records: the array
    // loop's fast path for NDJSON lines (takeRun) stops and resumes often.
    const shared = Buffer.concat(input);
    let at = 0;
    const views = recs.map((r) => {
      const payload = new Uint8Array(shared.buffer, shared.byteOffset + at, r.payload.byteLength);
      at += r.payload.byteLength;
      return { ...r, payload };
    });
    for (const [kind, source, yieldEveryRows] of [
      ['array', recs, undefined],
      ['array of Uint8Array views', views, 5],
      // Below 1 counts as 1 (it once made the batch loop take nothing and yield for ever).
      ['array, yield every 0', recs, 0],
      ['async', asAsync(recs), undefined],
      // As the Parquet child reads a segment: batches of uneven size, a yield every 5 records.
      ['async batches', asAsync(batches(views)), 5],
    ] as const) {
      const dir = path.join(
        scratch,
        'jobs',
        `exact-${cases.findIndex((c) => c[0] === label)}-${kind.replaceAll(' ', '-')}`,
      );
      await mkdir(dir, { recursive: true });
      const at = `${label} (${kind})`;
      await db.withConnection(async (conn) => {
        const loaded = await loadRecords(conn, source, {
          dir,
          chunkBytes: 256,
          lineBytesMax: 200,
          ndjson,
          ...(yieldEveryRows !== undefined ? { yieldEveryRows } : {}),
        });
        assert.equal(loaded.rows, recs.length);
        assert.equal(loaded.firstSeq, recs[0]!.seq);
        assert.equal(loaded.lastSeq, recs.at(-1)!.seq);
        assert.equal(
          loaded.payloadBytes,
          input.reduce((n, p) => n + p.length, 0),
        );
        if (sideRows !== undefined) assert.equal(loaded.sideRows, sideRows, at);
        assert.equal(loaded.ndjsonFile !== undefined, kept, at);
        assert.equal(loaded.hasTopics, true);
        const views = await conn.runAndReadAll(
          `SELECT seq, payload, payload_text IS NULL FROM ${INPUT_RELATION} ORDER BY seq`,
        );
        assert.deepEqual(
          views.getRows().map(([seq, , noText]) => [seq, noText]),
          recs.map((r, i) => [BigInt(i), !isUtf8Like(r.payload)]),
          'views shape: the ordinal, and text exactly where the payload is UTF-8',
        );
        await loaded.loadMeta();
        await useInput(conn, 'full', loaded.hasTopics);
        const full = await conn.runAndReadAll(
          `SELECT seq, epoch_us(ingest_time), topic, payload FROM ${INPUT_RELATION}`,
        );
        const rows = full.getRows();
        assert.equal(rows.length, recs.length);
        for (const [i, [seq, us, topic, payload]] of rows.entries()) {
          const r = recs[i]!;
          assert.equal(seq, r.seq, `row ${i} in order`);
          assert.equal(us, r.ingestTimeMicros);
          assert.equal(topic, r.topic ?? null);
          assert.ok(
            Buffer.from((payload as { bytes: Uint8Array }).bytes).equals(Buffer.from(r.payload)),
            `payload ${i} exact (${at})`,
          );
        }
        const n = await conn.runAndReadAll(`SELECT count(*) FROM ${RECORDS_RELATION}`);
        assert.equal(n.getRows()[0]![0], BigInt(recs.length));
        // Its metadata arrays go to the next load (this loop's next case reuses them).
        loaded.release();
        await assert.rejects(loaded.loadMeta(), /after release/);
      });
    }
  }
});

function isUtf8Like(p: Uint8Array): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(p);
    return true;
  } catch {
    return false;
  }
}

void test('materialised outputs: DLQ rows keep exact bytes, seq and time; raw Parquet holds every record in order; two views', async () => {
  const payloads = [
    ...awkwardPayloads(),
    Buffer.from('{"e":"x","n":1}'),
    Buffer.from('{"e":"y","n":"z"}'),
    Buffer.from('{"e":"x","n":2}'),
  ];
  const recs = records(payloads, 86_400_000_000 / 4); // a quarter day apart: several dt
  const strict = await db.withConnection((c) =>
    compileView(
      c,
      parseViewYaml('name: strict\ncolumns:\n  - { name: n, type: INTEGER, path: $.n, required: true }\n'),
    ),
  );
  const loose = await db.withConnection((c) =>
    compileView(c, parseViewYaml('name: loose\ncolumns:\n  - { name: e, type: VARCHAR, path: $.e }\n')),
  );
  assert.notEqual(withLoadedText(strict.sql), strict.sql, `the compiled SQL still has ${COMPILED_TEXT_SQL}`);
  const out = await materializeSegment(db, {
    jobId: 'outputs',
    records: recs,
    views: [strict, loose],
    raw: { endpoint: 'ep', instance: 'ep-0' },
  });
  try {
    const read = async (file: string) =>
      (await parquetReadObjects({
        file: await asyncBufferFromFile(file),
        compressors,
        utf8: false,
        parsers: {
          timestampFromMilliseconds: (ms: bigint) => ms * 1000n,
          timestampFromMicroseconds: (us: bigint) => us,
          timestampFromNanoseconds: (ns: bigint) => ns / 1000n,
          dateFromDays: (days: number) => days,
          stringFromBytes: (b: Uint8Array | undefined) => (b ? new TextDecoder().decode(b) : b),
        },
      })) as Record<string, unknown>[];
    const raw = [];
    for (const f of out.raw) raw.push(...(await read(f.localPath)));
    assert.deepEqual(
      raw.map((r) => [r['seq'], r['topic'] ?? null, Buffer.from(r['payload'] as Uint8Array).toString('hex')]),
      recs.map((r) => [r.seq, r.topic ?? null, Buffer.from(r.payload).toString('hex')]),
    );
    for (const v of out.views) {
      assert.equal(v.rowsIn, recs.length);
      assert.equal(v.viewRows + v.filteredRows + v.dlqRows, recs.length);
      const dlq = [];
      for (const f of v.dlqFiles) dlq.push(...(await read(f.localPath)));
      assert.equal(dlq.length, v.dlqRows);
      for (const d of dlq) {
        const i = Number((d['seq'] as bigint) - recs[0]!.seq);
        const r = recs[i]!;
        assert.ok(
          Buffer.from(d['payload'] as Uint8Array).equals(Buffer.from(r.payload)),
          `${v.view} dlq ${i}`,
        );
        assert.equal(d['ingest_time'], r.ingestTimeMicros, `${v.view} dlq ${i} ingest time`);
      }
      // DLQ rows are written in seq order.
      const seqs = dlq.map((d) => d['seq'] as bigint);
      assert.deepEqual(
        seqs,
        [...seqs].sort((a, b) => (a < b ? -1 : 1)),
      );
    }
    const [s, l] = out.views as [(typeof out.views)[0], (typeof out.views)[0]];
    assert.equal(s.viewRows, 2);
    // Without a required column, every record that is one JSON value is a view row (JS's parser agrees here).
    const json = recs.filter((r) => {
      try {
        JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(r.payload));
        return true;
      } catch {
        return false;
      }
    });
    assert.equal(l.viewRows, json.length);
  } finally {
    await out.cleanup();
  }
});

void test('loads running at once after one that gave its buffers and metadata arrays back do not share them', async () => {
  // Same chunk size and record count everywhere: every load can take what the first gave back.
  const make = (base: bigint): SegmentRecord[] =>
    ndjsonPayloads(400).map((p, i) => ({
      seq: base + BigInt(i),
      ingestTimeMicros: 1_790_000_000_000_000n + base + BigInt(i),
      payload: Buffer.from(p.toString().replace('{', `{"from":${base},`)),
    }));
  const other = await createParquetDb({ scratchDir: scratch, memoryLimitBytes: 256 << 20, threads: 1 });
  try {
    const load = (d: ParquetDb, name: string, recs: SegmentRecord[]) =>
      d.withConnection(async (conn) => {
        const dir = path.join(scratch, 'jobs', name);
        await mkdir(dir, { recursive: true });
        const loaded = await loadRecords(conn, recs, {
          dir,
          chunkBytes: 512,
          lineBytesMax: 200,
          ndjson: true,
        });
        // Give the other load time to fill the same buffers and arrays, were they shared.
        await new Promise((r) => setTimeout(r, 20));
        await loaded.loadMeta();
        await useInput(conn, 'full', loaded.hasTopics);
        const rows = (
          await conn.runAndReadAll(`SELECT seq, epoch_us(ingest_time), payload FROM ${INPUT_RELATION}`)
        ).getRows();
        loaded.release();
        return rows.map(([seq, us, payload]) => [
          seq,
          us,
          Buffer.from((payload as { bytes: Uint8Array }).bytes).toString(),
        ]);
      });
    const expect = (recs: SegmentRecord[]) =>
      recs.map((r) => [r.seq, r.ingestTimeMicros, Buffer.from(r.payload).toString()]);
    const first = make(1_000n);
    assert.deepEqual(await load(db, 'pool-first', first), expect(first));
    const a = make(2_000_000n);
    const b = make(3_000_000n);
    const [ra, rb] = await Promise.all([load(db, 'pool-a', a), load(other, 'pool-b', b)]);
    assert.deepEqual(ra, expect(a));
    assert.deepEqual(rb, expect(b));
  } finally {
    await other.close();
  }
});

void test('records files kept in the pool are written over: the next segment reads exactly its own records, and the pool stays bounded', async () => {
  const poolDir = path.join(scratch, 'pool');
  const make = (base: bigint, n: number): SegmentRecord[] =>
    ndjsonPayloads(n).map((p, i) => ({
      seq: base + BigInt(i),
      ingestTimeMicros: 1_790_000_000_000_000n + BigInt(i),
      payload: Buffer.from(p.toString().replace('{', `{"from":${base},`)),
    }));
  const load = (name: string, recs: SegmentRecord[], ndjson: boolean) =>
    db.withConnection(async (conn) => {
      const dir = path.join(scratch, 'jobs', name);
      await mkdir(dir, { recursive: true });
      const pooledBefore = (await readdir(poolDir)).length;
      const loaded = await loadRecords(conn, recs, {
        dir,
        chunkBytes: 512,
        lineBytesMax: 200,
        ndjson,
        poolDir,
      });
      const taken = pooledBefore - (await readdir(poolDir)).length;
      const written = await stat(path.join(dir, ndjson ? 'records.ndjson' : 'records.csv'));
      await loaded.loadMeta();
      await useInput(conn, 'full', loaded.hasTopics);
      const rows = (await conn.runAndReadAll(`SELECT seq, payload FROM ${INPUT_RELATION}`)).getRows();
      loaded.release();
      await loaded.recycleFiles();
      assert.deepEqual(await readdir(dir), [], 'the job folder keeps no records file');
      return {
        taken,
        bytes: written.size,
        rows: rows.map(([seq, p]) => [seq, Buffer.from((p as { bytes: Uint8Array }).bytes).toString()]),
      };
    });
  const expect = (recs: SegmentRecord[]) => recs.map((r) => [r.seq, Buffer.from(r.payload).toString()]);
  const lineBytes = (recs: SegmentRecord[]) => recs.reduce((n, r) => n + r.payload.byteLength + 1, 0);
  for (const ndjson of [true, false]) {
    await rm(poolDir, { recursive: true, force: true });
    await mkdir(poolDir);
    // A large segment, then smaller ones written over its file: no line of it may survive.
    const big = make(1_000n, 600);
    assert.deepEqual((await load(`over-${ndjson}-big`, big, ndjson)).rows, expect(big));
    assert.equal((await readdir(poolDir)).length, 1, 'the file went to the pool');
    for (const [k, n] of [40, 1, 300].entries()) {
      const small = make(BigInt(10_000 * (k + 1)), n);
      const out = await load(`over-${ndjson}-${k}`, small, ndjson);
      assert.equal(out.taken, 1, 'the pooled file was taken');
      assert.deepEqual(out.rows, expect(small));
      if (ndjson) assert.equal(out.bytes, lineBytes(small), 'cut at what this segment wrote');
    }
  }
  // Two loads at once, one pooled file: each gets a file of its own.
  const a = make(5_000_000n, 200);
  const b = make(6_000_000n, 250);
  const [ra, rb] = await Promise.all([load('over-a', a, true), load('over-b', b, true)]);
  assert.deepEqual(ra.rows, expect(a));
  assert.deepEqual(rb.rows, expect(b));
  // Three files given back at once: the pool keeps its bound, the rest are removed.
  const c = make(7_000_000n, 10);
  await Promise.all([load('over-c1', c, true), load('over-c2', c, true), load('over-c3', c, true)]);
  assert.equal((await readdir(poolDir)).length <= 2, true);
});

void test('a write of the records file that fails (ENOSPC) fails the load and leaves no descriptor open on its files', async () => {
  const probe = await open('/dev/null', 'r');
  const proto = Object.getPrototypeOf(probe) as { write: (...a: unknown[]) => Promise<unknown> };
  await probe.close();
  const write = proto.write;
  const recs = Array.from({ length: 20_000 }, (_, i) => ({
    seq: BigInt(i),
    ingestTimeMicros: 1n,
    payload: Buffer.from(`{"i":${i}}`),
  }));
  const openOn = async (dir: string): Promise<string[]> => {
    const out: string[] = [];
    for (const fd of await readdir('/proc/self/fd')) {
      const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
      if (target.startsWith(dir)) out.push(target);
    }
    return out;
  };
  for (const ndjson of [true, false]) {
    const dir = path.join(scratch, 'jobs', `enospc-${ndjson}`);
    await mkdir(dir, { recursive: true });
    proto.write = () => Promise.reject(Object.assign(new Error('injected ENOSPC'), { code: 'ENOSPC' }));
    try {
      await assert.rejects(
        db.withConnection((conn) =>
          loadRecords(conn, recs, {
            dir,
            ndjson,
            chunkBytes: 64 * 1024,
            poolDir: path.join(scratch, 'pool'),
          }),
        ),
        /ENOSPC/,
      );
    } finally {
      proto.write = write;
    }
    assert.deepEqual(await openOn(dir), [], `ndjson ${ndjson}: no descriptor left open`);
  }
});
