// A Parquet child process (isolated.ts starts it under an address-space
// limit and keeps it for many jobs). Its setup (ChildSetup, JSON) is its one
// argument: it lowers its own CPU priority, starts its one DuckDB instance
// on its scratch folder, prints `{"started":true}`, then reads ChildRequests
// (one JSON line each) from stdin, materialises each segment (raw Parquet,
// views, DLQ) into `<scratch>/jobs/<jobId>` and prints one ChildAnswer line
// per request. Nothing else goes to stdout. It ends when stdin ends. The
// segment is read and verified here, from the file, as the pipeline would
// (delivery/producers.ts openVerifiedSegment), once: the records go to the
// raw Parquet writer and the view loader together (segment-job.ts).
import { readdirSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { createInterface } from 'node:readline';
import { SegmentMismatchError, openVerifiedSegment, segmentRecordBatches } from '../delivery/producers.ts';
import { walBatchesToSegmentRecords } from './wal-records.ts';
import { isOutsideData, type PartitionLimits } from '../views/materialize.ts';
import { SegmentCorruptError } from '../wal/format.ts';
import { createParquetDb, type ParquetDb } from './duckdb.ts';
import { materializeSegmentJob } from './segment-job.ts';
import {
  CHILD_EXIT_SETUP,
  CHILD_STARTED_LINE,
  decodeJson,
  encodeJson,
  type ChildAnswer,
  type ChildOutputs,
  type ChildRequest,
  type ChildSetup,
} from './child-protocol.ts';

/**
 * Raises this process's niceness by `nice` (capped at 19), on every thread
 * that exists now (Linux keeps a niceness per thread: V8's and libuv's
 * threads started with Node). DuckDB's threads, started after this from the
 * main thread, inherit it: delivery work yields the CPU to the node's acks.
 */
function lowerPriority(nice: number): void {
  if (nice === 0) return;
  const target = Math.min(19, getPriority() + nice);
  setPriority(target);
  let tids: string[] = [];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    // Not Linux: the process-wide call above is all there is.
  }
  for (const tid of tids) {
    try {
      setPriority(Number(tid), target);
    } catch {
      // A thread that ended since the listing.
    }
  }
}

function limitsOf(r: ChildRequest): PartitionLimits {
  const l = r.partitionLimits;
  const pick = (m: Readonly<Record<string, number>>, view: string): number => {
    const v = m[view];
    if (v === undefined) throw new Error(`no partition limits for view ${view}`);
    return v;
  };
  return {
    filesMax: l.filesMax,
    keyBytesBase: (view) => pick(l.keyBytesBase, view),
    markerEntryBytes: (view) => pick(l.markerEntryBytes, view),
    markerBytes: l.markerBytes,
  };
}

/** stdout is a pipe: Node writes it synchronously, so a line is out before the next job starts. */
function answer(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** The job, as materializeSegmentJob runs it (raw Parquet from the records as they are read). */
async function materialize(db: ParquetDb, request: ChildRequest): Promise<Omit<ChildOutputs, 'maxRssBytes'>> {
  const out = await materializeSegmentJob(db, {
    jobId: request.jobId,
    records: walBatchesToSegmentRecords(
      segmentRecordBatches(
        openVerifiedSegment(request.segmentPath, request.segment, request.recordBytesMax),
        request.recordBytesMax,
      ),
    ),
    views: request.views,
    ...(request.raw !== undefined ? { raw: request.raw } : {}),
    ...(request.rowGroupRows !== undefined ? { rowGroupRows: request.rowGroupRows } : {}),
    partitionLimits: limitsOf(request),
    ...(request.failedViews !== undefined
      ? { failedViews: new Map(Object.entries(request.failedViews)) }
      : {}),
    ...(request.fieldIds !== undefined ? { fieldIds: new Map(Object.entries(request.fieldIds)) } : {}),
  });
  return {
    rowsIn: out.rowsIn,
    raw: out.raw,
    views: out.views,
    markerBytesLeft: out.markerBytesLeft,
    loadMs: out.loadMs,
    rawMs: out.rawMs,
  };
}

async function serve(db: ParquetDb, request: ChildRequest): Promise<ChildAnswer> {
  try {
    const out = await materialize(db, request);
    return {
      ok: true,
      outputs: {
        ...out,
        maxRssBytes: process.resourceUsage().maxRSS * 1024,
      },
    };
  } catch (err) {
    const message = ((err as Error).message ?? String(err)).split('\n')[0] ?? 'failed';
    const code = (err as { code?: unknown }).code;
    if (err instanceof SegmentCorruptError)
      return { ok: false, error: { kind: 'defect', message, offset: err.offset, reason: err.reason } };
    if (err instanceof SegmentMismatchError) return { ok: false, error: { kind: 'mismatch', message } };
    if (isOutsideData(err))
      return {
        ok: false,
        error: { kind: 'outside', message, ...(typeof code === 'string' ? { code } : {}) },
      };
    return { ok: false, error: { kind: 'data', message } };
  }
}

const setup = JSON.parse(process.argv[2] ?? '{}') as ChildSetup;
let db: ParquetDb;
try {
  lowerPriority(setup.nice);
  db = await createParquetDb({
    scratchDir: setup.scratchDir,
    memoryLimitBytes: setup.memoryLimitBytes,
    threads: setup.threads,
  });
} catch (err) {
  process.stderr.write(`DuckDB did not start: ${(err as Error).message}\n`);
  process.exit(CHILD_EXIT_SETUP);
}
answer(CHILD_STARTED_LINE);
try {
  // One job at a time: the runner sends the next request after this answer.
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    if (line === '') continue;
    answer(encodeJson(await serve(db, decodeJson(line) as ChildRequest)));
  }
} finally {
  await db.close();
}
