// Loads one sealed segment's records into a DuckDB temp table, once, for the
// raw Parquet and every view to read. The Appender is the fast path DuckDB
// offers from Node (about a microsecond a row here); payloads go in as BLOB,
// byte for byte, so the raw output and the DLQ keep the exact bytes received.
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { DuckDBConnection } from '@duckdb/node-api';

export interface SegmentRecord {
  /** Per-instance sequence number (u64). */
  readonly seq: bigint;
  /** Ingest time, microseconds since the Unix epoch (UTC). */
  readonly ingestTimeMicros: bigint;
  /** The record's exact bytes. */
  readonly payload: Uint8Array;
  /** MQTT topic, when the record came from one. */
  readonly topic?: string | undefined;
}

export interface LoadedRecords {
  /** Relation with the compiler's input columns (see compile.ts): seq, ingest_time, payload, topic. */
  readonly relation: string;
  readonly rows: number;
  readonly payloadBytes: number;
  readonly firstSeq: bigint | undefined;
  readonly lastSeq: bigint | undefined;
}

const MAX_U64 = (1n << 64n) - 1n;
const MIN_I64 = -(1n << 63n);
const MAX_I64 = (1n << 63n) - 1n;
/**
 * The append loop is synchronous native calls; it gives the event loop a turn
 * every this many rows so the HTTP path (acks, fsync callbacks) never waits
 * more than a few milliseconds behind a segment being materialised.
 */
export const DEFAULT_YIELD_EVERY_ROWS = 8192;

const TABLE = '__lf_records';
/** The relation the view compiler reads (compile.ts documents its columns). */
export const INPUT_RELATION = '__lf_input';

/**
 * Creates the temp table and view on `conn` and appends `records`. Temp
 * objects live and die with the connection, so a failed job leaves nothing.
 */
export async function loadRecords(
  conn: DuckDBConnection,
  records: Iterable<SegmentRecord> | AsyncIterable<SegmentRecord>,
  options: { yieldEveryRows?: number } = {},
): Promise<LoadedRecords> {
  const yieldEvery = options.yieldEveryRows ?? DEFAULT_YIELD_EVERY_ROWS;
  await conn.run(
    `CREATE TEMP TABLE ${TABLE} (seq UBIGINT NOT NULL, ingest_us BIGINT NOT NULL, payload BLOB NOT NULL, topic VARCHAR)`,
  );
  // Ingest time is appended as a plain BIGINT (no value object per row) and
  // turned into a TIMESTAMP by the view, which costs DuckDB next to nothing.
  await conn.run(
    `CREATE TEMP VIEW ${INPUT_RELATION} AS SELECT seq, make_timestamp(ingest_us) AS ingest_time, payload, topic FROM ${TABLE}`,
  );
  const appender = await conn.createAppender(TABLE, 'main', 'temp');
  let rows = 0;
  let payloadBytes = 0;
  let firstSeq: bigint | undefined;
  let lastSeq: bigint | undefined;
  const append = (r: SegmentRecord): void => {
    if (r.seq < 0n || r.seq > MAX_U64) throw new RangeError(`seq ${r.seq} is not a u64`);
    if (r.ingestTimeMicros < MIN_I64 || r.ingestTimeMicros > MAX_I64)
      throw new RangeError(`ingestTimeMicros ${r.ingestTimeMicros} is not an i64`);
    appender.appendUBigInt(r.seq);
    appender.appendBigInt(r.ingestTimeMicros);
    appender.appendBlob(r.payload);
    if (r.topic === undefined) appender.appendNull();
    else appender.appendVarchar(r.topic);
    appender.endRow();
    rows++;
    payloadBytes += r.payload.byteLength;
    firstSeq ??= r.seq;
    lastSeq = r.seq;
  };
  try {
    if (Symbol.iterator in records) {
      // Plain loop for arrays and sync iterators: `for await` would cost a
      // promise turn per row, more than the append itself.
      for (const r of records) {
        append(r);
        if (rows % yieldEvery === 0) await yieldToEventLoop();
      }
    } else {
      for await (const r of records) {
        append(r);
        if (rows % yieldEvery === 0) await yieldToEventLoop();
      }
    }
    appender.flushSync();
  } finally {
    appender.closeSync();
  }
  return { relation: INPUT_RELATION, rows, payloadBytes, firstSeq, lastSeq };
}
