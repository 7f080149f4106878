// A segment whose records span many UTC ingest dates, through the real node
// (HTTP, WAL, the Parquet child, delivery) to a real MinIO, the node's wall
// clock injected and stepped between appends:
// - 70 dates in one segment (more than the raw writer keeps open at once):
//   delivered at its first attempt with one raw file and one DLQ file per
//   date, every record in them under its true `dt`, and the segment sealed
//   after it flows. Before the fix the raw writer threw at the 65th date; the
//   child's failure counted as a load failure, the segment was retried, then
//   delivered without raw Parquet.
// - a clock that steps back within a segment: the WAL keeps ingest times
//   from going back (each record gets the latest time seen), so the segment
//   is one run of dates and is delivered like any other.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { startMinio, type MinioServer } from '../../test/harness/index.ts';
import { getJson, listKeys, readParquetObject, type MarkerJson } from '../../test/e2e/helpers/views.ts';
import type { Clock } from '../src/clock.ts';
import { defaultConfig } from '../src/config/load.ts';
import { startNode, type RunningNode } from '../src/node.ts';
import { rawKey } from '../src/delivery/keys.ts';
import { segmentDates, segmentPartitionLimits } from '../src/delivery/parquet-producers.ts';
import { openWal } from '../src/wal/wal.ts';
import type { Wal } from '../src/wal/types.ts';

const endpoint = 'trickle';
const instance = 'trickle-0';
const DAY_MS = 86_400_000;
const VIEW = `name: ids
columns:
  - { name: id, type: INTEGER, path: $.id, required: true }
`;

let minio: MinioServer;
let s3: S3Client;

before(async () => {
  minio = await startMinio();
  s3 = minio.s3();
  // The node's S3 client takes the SDK's default credentials chain.
  process.env['AWS_ACCESS_KEY_ID'] = minio.accessKeyId;
  process.env['AWS_SECRET_ACCESS_KEY'] = minio.secretAccessKey;
});
after(async () => {
  await minio?.stop();
});

/** The node's clock: real time plus an offset the test steps (monotonic time stays real). */
class SteppedClock implements Clock {
  offsetMs = 0;
  nowMs(): number {
    return Date.now() + this.offsetMs;
  }
  nowMicros(): bigint {
    return (
      BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) + BigInt(this.offsetMs) * 1000n
    );
  }
  monotonicMs(): number {
    return performance.now();
  }
}

interface Harness {
  node: RunningNode;
  /** The node's WAL, to seal segments when the test says. */
  wal: Wal;
  clock: SteppedClock;
  bucket: string;
  prefix: string;
  close(): Promise<void>;
}

async function startTrickleNode(name: string): Promise<Harness> {
  const root = await mkdtemp(path.join(tmpdir(), `lf-${name}-`));
  const viewsDir = path.join(root, 'views');
  await mkdir(viewsDir);
  await writeFile(path.join(viewsDir, 'ids.yaml'), VIEW);
  const bucket = await minio.newBucket();
  const prefix = `lf/${name}`;
  const clock = new SteppedClock();
  let wal: Wal | undefined;
  const node = await startNode(
    defaultConfig({
      listen: { port: 0 },
      endpoint: { name: endpoint },
      instance: { id: instance },
      // Sealed only when the test says so (the age bound is monotonic time).
      wal: { dir: path.join(root, 'wal'), segmentAgeMsMax: 3_600_000 },
      s3: { bucket, prefix, region: minio.region, endpointUrl: minio.endpoint, forcePathStyle: true },
      outputs: { rawParquet: true },
      delivery: { staleUploadAgeMs: 0, segmentRetryDelayMsMax: 100, retryDelayMsMax: 20 },
      views: { dir: viewsDir, threads: 1, memoryLimitBytes: 128 * 1024 * 1024 },
    }),
    {
      clock,
      apiKeys: null,
      openWal: async (o) => (wal = await openWal(o)),
    },
  );
  assert.ok(wal);
  return {
    node,
    wal,
    clock,
    bucket,
    prefix,
    async close() {
      await node.shutdown('test');
      await rm(root, { recursive: true, force: true });
    },
  };
}

async function post(node: RunningNode, lines: readonly string[]): Promise<void> {
  const res = await fetch(`${node.url}/v1/ingest`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-ndjson' },
    body: lines.join('\n') + '\n',
  });
  assert.equal(res.status, 202, await res.text());
}

/**
 * Waits for `n` delivered segments. A segment that keeps failing fails the
 * test (20 failed attempts, retries every ≤ 100 ms) with the pipeline's last
 * error; there is no time bound to trip on a slow machine.
 */
async function delivered(h: Harness, n: number): Promise<MarkerJson[]> {
  const pipeline = h.node.delivery!.pipeline;
  for (;;) {
    const s = pipeline.stats();
    if (s.segmentsDeliveredTotal >= n) break;
    if (s.segmentFailuresTotal >= 20)
      assert.fail(`${s.segmentsDeliveredTotal} of ${n} delivered; stalled on ${JSON.stringify(s.lastError)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const keys = await listKeys(s3, h.bucket, `${h.prefix}/commits/`);
  const markers = await Promise.all(keys.map((k) => getJson<MarkerJson>(s3, h.bucket, k)));
  return markers.sort((a, b) => (BigInt(a.segmentId) < BigInt(b.segmentId) ? -1 : 1));
}

const dateOfMicros = (us: bigint): string => new Date(Number(us / 1000n)).toISOString().slice(0, 10);

/** Every row of the marker's files of one kind, each checked to lie in its file's `dt`. */
async function rowsOf(h: Harness, m: MarkerJson, kind: string): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  for (const a of m.artifacts.filter((x) => x.kind === kind)) {
    const dt = /\/dt=(\d{4}-\d{2}-\d{2})\//.exec(a.key)?.[1];
    assert.ok(dt, a.key);
    const file = await readParquetObject(s3, h.bucket, a.key);
    assert.equal(file.rows.length, a.rows, a.key);
    for (const r of file.rows) assert.equal(dateOfMicros(r['ingest_time'] as bigint), dt, a.key);
    rows.push(...file.rows);
  }
  return rows;
}

void test('a segment spanning 70 ingest dates is delivered at its first attempt: one raw and one DLQ file per date, every record, and the next segment flows', async () => {
  const h = await startTrickleNode('many-dates');
  try {
    const DATES = 70;
    // Midday, so the steps do not straddle a date boundary whatever the real time is.
    const start = Math.floor(Date.now() / DAY_MS) * DAY_MS + DAY_MS / 2;
    for (let d = 0; d < DATES; d++) {
      h.clock.offsetMs = start + d * DAY_MS - Date.now();
      // One view row and one DLQ row (not JSON) per date.
      await post(h.node, [JSON.stringify({ id: d }), `not json ${d}`]);
    }
    await h.wal.seal();
    await post(h.node, [JSON.stringify({ id: 1000 })]);
    await h.wal.seal();

    const markers = await delivered(h, 2);
    assert.equal(markers.length, 2);
    const stats = h.node.delivery!.pipeline.stats();
    assert.equal(stats.segmentFailuresTotal, 0, JSON.stringify(stats.lastError));
    const [m] = markers;
    assert.equal(m!.records, 2 * DATES);
    const rawKeys = m!.artifacts.filter((a) => a.kind === 'raw').map((a) => a.key);
    assert.equal(rawKeys.length, DATES, 'one raw file per ingest date');
    assert.equal(m!.artifacts.filter((a) => a.kind === 'dlq').length, DATES, 'one DLQ file per ingest date');
    const raw = await rowsOf(h, m!, 'raw');
    assert.equal(raw.length, 2 * DATES);
    // Every record once, in seq order within each file; payloads as sent.
    const seqs = raw.map((r) => r['seq'] as bigint).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    assert.equal(new Set(seqs).size, 2 * DATES);
    assert.deepEqual(
      new Set(raw.map((r) => Buffer.from(r['payload'] as Uint8Array).toString('utf8'))),
      new Set(Array.from({ length: DATES }, (_, d) => [JSON.stringify({ id: d }), `not json ${d}`]).flat()),
    );
    const dlq = await rowsOf(h, m!, 'dlq');
    assert.equal(dlq.length, DATES);
    assert.ok(dlq.every((r) => r['error_code'] === 'invalid_json'));
    assert.deepEqual(m!.views[0]?.rows, {
      in: 2 * DATES,
      view: DATES,
      filtered: 0,
      dlq: DATES,
      dlqByCode: {
        invalid_json: DATES,
        missing_required: 0,
        cast_failed: 0,
        expression_failed: 0,
        partition_value_too_long: 0,
        too_many_partitions: 0,
        view_failed: 0,
      },
    });
    assert.equal(markers[1]!.artifacts.filter((a) => a.kind === 'raw').length, 1);
  } finally {
    await h.close();
  }
});

void test('a clock that steps back within a segment: ingest times do not go back, the segment is delivered at its first attempt', async () => {
  const h = await startTrickleNode('clock-back');
  try {
    const start = Math.floor(Date.now() / DAY_MS) * DAY_MS + DAY_MS / 2;
    const steps = [0, 3 * DAY_MS, -40 * DAY_MS, 2 * DAY_MS, -400 * DAY_MS, 5 * DAY_MS];
    for (const [i, s] of steps.entries()) {
      h.clock.offsetMs = start + s - Date.now();
      await post(h.node, [JSON.stringify({ id: i })]);
    }
    await h.wal.seal();
    const markers = await delivered(h, 1);
    assert.equal(h.node.delivery!.pipeline.stats().segmentFailuresTotal, 0);
    const raw = await rowsOf(h, markers[0]!, 'raw');
    raw.sort((a, b) => ((a['seq'] as bigint) < (b['seq'] as bigint) ? -1 : 1));
    const times = raw.map((r) => r['ingest_time'] as bigint);
    for (let i = 1; i < times.length; i++)
      assert.ok(times[i]! >= times[i - 1]!, 'ingest time never goes back');
    // The steps forward are kept (+3 d, then +5 d once the clock passes +3 d again); those back are not.
    assert.deepEqual(
      [...new Set(times.map(dateOfMicros))],
      [0, 3, 5].map((d) => new Date(start + d * DAY_MS).toISOString().slice(0, 10)),
    );
  } finally {
    await h.close();
  }
});

void test("the marker's budget counts every date a segment's records carry: a short span listed, a long one read", async () => {
  const DAY_US = 86_400_000_000n;
  const day = (d: number): bigint => BigInt(Date.UTC(2026, 0, 1)) * 1000n + BigInt(d) * DAY_US + DAY_US / 2n;
  const iso = (d: number): string => new Date(Number(day(d) / 1000n)).toISOString().slice(0, 10);
  let reads = 0;
  const from = (ds: readonly number[]) => () => {
    reads++;
    return (async function* () {
      for (const d of ds) yield { ingestMicros: day(d) };
    })();
  };
  // A short span: its days and one each side, the records not read.
  assert.deepEqual(
    await segmentDates({ firstIngestMicros: day(0), lastIngestMicros: day(3) }, from([0, 3])),
    [-1, 0, 1, 2, 3, 4].map(iso),
  );
  assert.equal(reads, 0);
  // A clock stepped forward 30 years: two dates, not the span's 10,000 days.
  const years = 30 * 365;
  assert.deepEqual(
    await segmentDates({ firstIngestMicros: day(0), lastIngestMicros: day(years) }, from([0, 0, years])),
    [iso(0), iso(years)],
  );
  assert.equal(reads, 1);
  // 1,500 dates (a clock stepped forward a day at a time): every one (the budget listed 1,000 at most).
  const many = Array.from({ length: 1500 }, (_, i) => i);
  const dates = await segmentDates({ firstIngestMicros: day(0), lastIngestMicros: day(1499) }, from(many));
  assert.deepEqual(dates, many.map(iso));
  // Ends that do not bound the records (not what the WAL writes): the records are read.
  assert.deepEqual(
    await segmentDates({ firstIngestMicros: day(10), lastIngestMicros: day(2) }, from([10, 2, 400])),
    [iso(2), iso(10), iso(400)],
  );
  // Each date costs the marker one raw entry.
  const ref = { endpoint, instance, epoch: '01JBQ8ZK1M4X9Q2W7YV3T5R6PA', segmentId: 1n };
  const entry = 256 + rawKey('lf', ref, dates[0]!).length;
  const budget = (ds: readonly string[]): number =>
    segmentPartitionLimits('lf', ref, ds, [], true, 1000).markerBytes;
  assert.equal(budget(dates.slice(0, 1000)) - budget(dates), 500 * entry);
});
