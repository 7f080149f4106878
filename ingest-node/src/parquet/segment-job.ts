// One segment's whole Parquet job as a node runs it (the Parquet child,
// child.ts, and the in-process reference, delivery/parquet-producers.ts):
// raw Parquet from the records as they are read, by raw-writer.ts, and the
// views through views/materialize.ts without raw, which then reads a clean
// segment as NDJSON. One read of the segment feeds both; the raw files are
// those raw.ts's DuckDB COPY writes (same rows, schema, partitions, codec),
// with no records file, join or sort behind them. materializeSegment with
// `raw` (the COPY) stays for callers that materialise from memory.
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import {
  defaultPartitionLimits,
  materializeSegment,
  type MaterializeInput,
  type SegmentOutputs,
} from '../views/materialize.ts';
import { JOBS_DIR, type ParquetDb } from './duckdb.ts';
import { RawParquetWriter } from './raw-writer.ts';
import type { SegmentRecord, SegmentRecords } from './records.ts';

function* slices(all: readonly SegmentRecord[]): Generator<readonly SegmentRecord[]> {
  for (let i = 0; i < all.length; i += SLICE_RECORDS) yield all.slice(i, i + SLICE_RECORDS);
}
const SLICE_RECORDS = 8192;
/** materialize.ts's rule for a job's folder name. */
const JOB_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

/** The records, also fed to the raw writer on their way (a batch at a time when they come in batches). */
async function* alsoToRaw(
  records: SegmentRecords,
  raw: RawParquetWriter,
  spent: { ms: number },
): AsyncGenerator<SegmentRecord | readonly SegmentRecord[]> {
  // An array goes on in slices: the loader's batch path, not a turn per record.
  const source:
    | Iterable<SegmentRecord | readonly SegmentRecord[]>
    | AsyncIterable<SegmentRecord | readonly SegmentRecord[]> = Array.isArray(records)
    ? slices(records as readonly SegmentRecord[])
    : records;
  for await (const item of source) {
    const t = performance.now();
    await raw.add(Array.isArray(item) ? (item as readonly SegmentRecord[]) : [item as SegmentRecord]);
    spent.ms += performance.now() - t;
    yield item;
  }
}

/** materializeSegment's outputs, raw Parquet written by raw-writer.ts (see the header). */
export async function materializeSegmentJob(db: ParquetDb, input: MaterializeInput): Promise<SegmentOutputs> {
  if (input.raw === undefined) return materializeSegment(db, input);
  if (db.scratchDir === undefined) throw new Error('this Parquet DuckDB instance has no scratch folder');
  // Checked before any folder is made or removed (materializeSegment checks it too, later).
  if (!JOB_ID.test(input.jobId)) throw new Error(`jobId '${input.jobId}' is not a safe folder name`);
  const jobDir = path.join(db.scratchDir, JOBS_DIR, input.jobId);
  const raw = new RawParquetWriter({
    dir: path.join(jobDir, 'raw'),
    ...input.raw,
    ...(input.rowGroupRows !== undefined ? { rowGroupRows: input.rowGroupRows } : {}),
  });
  const spent = { ms: 0 };
  const { raw: _, ...views } = input;
  try {
    if (input.views.length === 0) {
      // Raw alone (a retry after a view's child died): no view loader to feed.
      await rm(jobDir, { recursive: true, force: true });
      await mkdir(jobDir, { recursive: true });
      let payloadBytes = 0;
      let firstSeq: bigint | undefined;
      let lastSeq: bigint | undefined;
      for await (const item of alsoToRaw(input.records, raw, spent))
        for (const r of Array.isArray(item) ? (item as readonly SegmentRecord[]) : [item as SegmentRecord]) {
          payloadBytes += r.payload.byteLength;
          firstSeq ??= r.seq;
          lastSeq = r.seq;
        }
      const t = performance.now();
      const files = await raw.finish();
      return {
        jobDir,
        rowsIn: raw.rows,
        payloadBytes,
        firstSeq,
        lastSeq,
        raw: files,
        views: [],
        loadMs: 0,
        rawMs: spent.ms + performance.now() - t,
        recordsAsNdjson: false,
        markerBytesLeft: (input.partitionLimits ?? defaultPartitionLimits()).markerBytes,
        cleanup: () => rm(jobDir, { recursive: true, force: true }),
      };
    }
    const out = await materializeSegment(db, { ...views, records: alsoToRaw(input.records, raw, spent) });
    const t = performance.now();
    const files = await raw.finish();
    if (raw.rows !== out.rowsIn)
      throw new Error(`raw Parquet took ${raw.rows} records, the views ${out.rowsIn}`);
    return { ...out, raw: files, rawMs: spent.ms + performance.now() - t };
  } catch (err) {
    await raw.abort();
    await rm(jobDir, { recursive: true, force: true });
    throw err;
  }
}
