// The Parquet child process (isolated.ts starts it under an address-space
// limit). Reads one ChildRequest (JSON) from stdin, prints `{"started":true}`
// once Node and DuckDB are up, materialises the segment (raw Parquet, views,
// DLQ) into its scratch folder and prints one ChildAnswer line. Nothing else
// goes to stdout. The segment is read and verified here, from the file, as
// the pipeline would (delivery/producers.ts openVerifiedSegment).
import { SegmentMismatchError, openVerifiedSegment, segmentRecords } from '../delivery/producers.ts';
import { walToSegmentRecords } from './wal-records.ts';
import { isOutsideData, materializeSegment, type PartitionLimits } from '../views/materialize.ts';
import { SegmentCorruptError } from '../wal/format.ts';
import { createParquetDb, type ParquetDb } from './duckdb.ts';
import {
  CHILD_EXIT_SETUP,
  decodeJson,
  encodeJson,
  type ChildAnswer,
  type ChildRequest,
} from './child-protocol.ts';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
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

function answer(a: ChildAnswer): void {
  process.stdout.write(`${encodeJson(a)}\n`);
}

const request = decodeJson(await readStdin()) as ChildRequest;
let db: ParquetDb;
try {
  db = await createParquetDb({
    scratchDir: request.scratchDir,
    memoryLimitBytes: request.memoryLimitBytes,
    threads: request.threads,
  });
} catch (err) {
  process.stderr.write(`DuckDB did not start: ${(err as Error).message}\n`);
  process.exit(CHILD_EXIT_SETUP);
}
process.stdout.write('{"started":true}\n');
try {
  const out = await materializeSegment(db, {
    jobId: request.jobId,
    records: walToSegmentRecords(
      segmentRecords(
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
  answer({
    ok: true,
    outputs: {
      rowsIn: out.rowsIn,
      raw: out.raw,
      views: out.views,
      markerBytesLeft: out.markerBytesLeft,
      loadMs: out.loadMs,
      rawMs: out.rawMs,
      maxRssBytes: process.resourceUsage().maxRSS * 1024,
    },
  });
} catch (err) {
  const message = ((err as Error).message ?? String(err)).split('\n')[0] ?? 'failed';
  const code = (err as { code?: unknown }).code;
  if (err instanceof SegmentCorruptError)
    answer({ ok: false, error: { kind: 'defect', message, offset: err.offset, reason: err.reason } });
  else if (err instanceof SegmentMismatchError) answer({ ok: false, error: { kind: 'mismatch', message } });
  else if (isOutsideData(err))
    answer({
      ok: false,
      error: { kind: 'outside', message, ...(typeof code === 'string' ? { code } : {}) },
    });
  else answer({ ok: false, error: { kind: 'data', message } });
} finally {
  await db.close();
}
