// Per sealed segment: load the records for DuckDB once (parquet/records.ts:
// a scratch file DuckDB reads back in parallel), then write the raw Parquet
// and, per view, the view Parquet (ok rows, Hive-partitioned by the view's
// aliases) and the DLQ Parquet (dlq rows, partitioned by ingest date).
// Outputs land in `<scratch>/jobs/<jobId>/`; the caller uploads them under
// delivery/keys.ts (rawKey/viewKey/dlqKey with each file's `partitions`) and
// then calls `cleanup()`.
//
// Each view classifies every record once (compile.ts's SELECT) into a temp
// table, from which the view file, the DLQ file and the counts are written.
// Only DLQ rows carry their ordinal and payload in that table; their seq and
// ingest time are joined from the records' metadata when the (small) DLQ is
// written. The row accounting is checked, not assumed: records loaded, rows
// classified and rows DuckDB reports writing must agree, or the job fails
// rather than report numbers that lie.
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { DuckDBConnection } from '@duckdb/node-api';
import { JOBS_DIR } from '../parquet/duckdb.ts';
import type { ParquetDb } from '../parquet/duckdb.ts';
import { copyToParquet } from '../parquet/outputs.ts';
import type { ParquetFile } from '../parquet/outputs.ts';
import { writeRawParquet } from '../parquet/raw.ts';
import type { RawParquetOptions } from '../parquet/raw.ts';
import { loadRecords, META_TABLE, useInput } from '../parquet/records.ts';
import type { LoadedRecords } from '../parquet/records.ts';
import type { SegmentRecord } from '../parquet/records.ts';
import { DlqErrorCode, quoteIdent } from './compile.ts';
import type { CompiledView } from './compile.ts';

/** DLQ Parquet columns (docs/views.md), partitioned by dt = UTC date of ingest_time. */
export const DLQ_COLUMNS = [
  'error_code',
  'error_message',
  'column',
  'payload',
  'seq',
  'ingest_time',
] as const;

export interface MaterializeInput {
  /**
   * Names the job's scratch folder; unique among jobs that can be alive at
   * once, e.g. `${endpoint}-${epoch}-${segmentId}`. A leftover folder of the
   * same name (a crashed attempt) is replaced.
   */
  readonly jobId: string;
  /** The sealed segment's records, in seq order. */
  readonly records: Iterable<SegmentRecord> | AsyncIterable<SegmentRecord>;
  readonly views: readonly CompiledView[];
  /** Write raw Parquet too (omit for none). */
  readonly raw?: RawParquetOptions;
  readonly rowGroupRows?: number;
}

export interface ViewOutput {
  readonly view: string;
  readonly specHash: string;
  readonly rowsIn: number;
  readonly viewRows: number;
  readonly filteredRows: number;
  readonly dlqRows: number;
  /** DLQ rows per error code; every code present, 0 when none. */
  readonly dlqByCode: Readonly<Record<DlqErrorCode, number>>;
  readonly files: readonly ParquetFile[];
  readonly dlqFiles: readonly ParquetFile[];
  /** Wall time of this view's passes (for metrics and the benchmark). */
  readonly durationMs: number;
}

export interface SegmentOutputs {
  readonly jobDir: string;
  readonly rowsIn: number;
  readonly payloadBytes: number;
  readonly firstSeq: bigint | undefined;
  readonly lastSeq: bigint | undefined;
  readonly raw: readonly ParquetFile[];
  readonly views: readonly ViewOutput[];
  /** Wall time of loading the records into DuckDB, and of writing the raw Parquet. */
  readonly loadMs: number;
  readonly rawMs: number;
  /** Removes the job's scratch folder (after the upload, or to give up). */
  cleanup(): Promise<void>;
}

const JOB_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
const CLASSIFIED_TABLE = '__lf_classified_rows';

/**
 * The compiler decodes each payload to text itself (a UTF-8 validation per
 * row); the loaded records already carry that text (`payload_text`, NULL
 * exactly where decoding fails), so the view reads it instead. When the
 * compiled SQL does not have this exact shape the view runs unchanged, only
 * slower (views-materialize.test.ts checks that the fast form applies).
 */
export const COMPILED_TEXT_SQL = 'try(decode(payload)) AS __lf_text';
export function withLoadedText(sql: string): string {
  return sql.split(COMPILED_TEXT_SQL).length === 2
    ? sql.replace(COMPILED_TEXT_SQL, 'payload_text AS __lf_text')
    : sql;
}

async function materializeView(
  conn: DuckDBConnection,
  view: CompiledView,
  loaded: LoadedRecords,
  jobDir: string,
  rowGroupRows: number | undefined,
): Promise<ViewOutput> {
  const rowsIn = loaded.rows;
  const started = performance.now();
  const name = view.spec.name;
  const aliases = view.partitions.map((p) => p.alias);
  const out = [...view.columns.map((c) => c.name), ...aliases].map(quoteIdent).join(', ');
  const rg = rowGroupRows !== undefined ? { rowGroupRows } : {};
  // One classification pass into a temp table, then the view and DLQ files
  // and the counts from it: cheaper than classifying twice (measured: about a
  // quarter less CPU per segment), and seq, time and payload are kept for DLQ rows only.
  // (__lf_seq is the record's ordinal here, see parquet/records.ts.)
  // A `$topic` column needs each record's topic: the whole metadata table, joined.
  const withTopic = view.readsTopic && loaded.hasTopics;
  if (withTopic) {
    await loaded.loadMeta();
    await useInput(conn, 'views+topic', true);
  }
  try {
    await conn.run(
      `CREATE OR REPLACE TEMP TABLE ${CLASSIFIED_TABLE} AS
     SELECT __lf_status, __lf_error_code, __lf_error_message, __lf_error_column,
       CASE WHEN __lf_status = 'dlq' THEN __lf_seq END AS __lf_ordinal,
       CASE WHEN __lf_status = 'dlq' THEN __lf_payload END AS __lf_payload, ${out}
     FROM (\n${withLoadedText(view.sql)}\n)`,
    );
  } finally {
    if (withTopic) await useInput(conn, 'views', true);
  }
  try {
    const files = await copyToParquet(
      conn,
      `SELECT ${out} FROM ${CLASSIFIED_TABLE} WHERE __lf_status = 'ok'`,
      path.join(jobDir, 'views', name),
      { partitionBy: aliases, ...rg },
    );
    // seq and ingest time of the DLQ rows: few, fetched for them alone (or all, when most rows are bad).
    const dlqOrdinals = (
      await conn.runAndReadAll(
        `SELECT __lf_ordinal FROM ${CLASSIFIED_TABLE} WHERE __lf_status = 'dlq' ORDER BY __lf_ordinal LIMIT ${Math.ceil(rowsIn / 8) + 1}`,
      )
    )
      .getRows()
      .map((r) => Number(r[0]));
    if (dlqOrdinals.length > 0)
      await loaded.loadMeta(dlqOrdinals.length > rowsIn / 8 ? undefined : dlqOrdinals);
    const dlqFiles = await copyToParquet(
      conn,
      `SELECT c.__lf_error_code AS error_code, c.__lf_error_message AS error_message, c.__lf_error_column AS "column",
         c.__lf_payload AS payload, m.seq AS seq, CAST(make_timestamp(m.ingest_us) AS TIMESTAMPTZ) AS ingest_time,
         strftime(make_timestamp(m.ingest_us), '%Y-%m-%d') AS dt
       FROM ${CLASSIFIED_TABLE} c JOIN ${META_TABLE} m ON m.i = c.__lf_ordinal
       WHERE c.__lf_status = 'dlq' ORDER BY c.__lf_ordinal`,
      path.join(jobDir, 'dlq', name),
      { partitionBy: ['dt'], ...rg },
    );
    const counts = await conn.runAndReadAll(
      `SELECT __lf_status, __lf_error_code, count(*)::BIGINT FROM ${CLASSIFIED_TABLE} GROUP BY ALL`,
    );
    let okRows = 0;
    let filteredRows = 0;
    let dlqRows = 0;
    const dlqByCode = Object.fromEntries(Object.values(DlqErrorCode).map((c) => [c, 0])) as Record<
      DlqErrorCode,
      number
    >;
    for (const [status, code, n] of counts.getRows()) {
      const count = Number(n);
      if (status === 'ok') okRows += count;
      else if (status === 'filtered') filteredRows += count;
      else if (status === 'dlq') {
        dlqRows += count;
        if (!(typeof code === 'string' && code in dlqByCode))
          throw new Error(`unexpected DLQ code ${String(code)}`);
        dlqByCode[code as DlqErrorCode] += count;
      } else throw new Error(`unexpected row status ${String(status)}`);
    }
    const viewRows = files.reduce((sum, f) => sum + f.rowCount, 0);
    const dlqFileRows = dlqFiles.reduce((sum, f) => sum + f.rowCount, 0);
    // Three sources must agree: rows appended, rows classified (the table),
    // rows written (DuckDB's per-file stats).
    if (okRows + filteredRows + dlqRows !== rowsIn || viewRows !== okRows || dlqFileRows !== dlqRows)
      throw new Error(
        `view ${name}: row accounting does not add up: in=${rowsIn} ok=${okRows} filtered=${filteredRows} dlq=${dlqRows} viewFiles=${viewRows} dlqFiles=${dlqFileRows}`,
      );
    return {
      view: name,
      specHash: view.specHash,
      rowsIn,
      viewRows,
      filteredRows,
      dlqRows,
      dlqByCode,
      files,
      dlqFiles,
      durationMs: performance.now() - started,
    };
  } finally {
    await conn.run(`DROP TABLE IF EXISTS ${CLASSIFIED_TABLE}`);
  }
}

/** Materialises one segment: raw Parquet (optional) and every view with its DLQ. */
export async function materializeSegment(db: ParquetDb, input: MaterializeInput): Promise<SegmentOutputs> {
  if (db.scratchDir === undefined) throw new Error('this Parquet DuckDB instance has no scratch folder');
  if (!JOB_ID.test(input.jobId)) throw new Error(`jobId '${input.jobId}' is not a safe folder name`);
  const names = new Set<string>();
  for (const v of input.views) {
    if (names.has(v.spec.name)) throw new Error(`view ${v.spec.name} is listed twice`);
    names.add(v.spec.name);
  }
  const jobDir = path.join(db.scratchDir, JOBS_DIR, input.jobId);
  const cleanup = (): Promise<void> => rm(jobDir, { recursive: true, force: true });
  await cleanup();
  await mkdir(jobDir, { recursive: true });
  try {
    return await db.withConnection(async (conn) => {
      const t0 = performance.now();
      const loaded = await loadRecords(conn, input.records, { dir: jobDir });
      const t1 = performance.now();
      let raw: ParquetFile[] = [];
      if (input.raw) {
        // Raw Parquet needs every record's real seq, time and topic, in order.
        await loaded.loadMeta();
        await useInput(conn, 'full', loaded.hasTopics);
        raw = await writeRawParquet(conn, path.join(jobDir, 'raw'), {
          ...input.raw,
          ...(input.rowGroupRows !== undefined ? { rowGroupRows: input.rowGroupRows } : {}),
        });
        await useInput(conn, 'views', loaded.hasTopics);
      }
      const t2 = performance.now();
      const views: ViewOutput[] = [];
      for (const view of input.views) {
        views.push(await materializeView(conn, view, loaded, jobDir, input.rowGroupRows));
      }
      return {
        jobDir,
        rowsIn: loaded.rows,
        payloadBytes: loaded.payloadBytes,
        firstSeq: loaded.firstSeq,
        lastSeq: loaded.lastSeq,
        raw,
        views,
        loadMs: t1 - t0,
        rawMs: t2 - t1,
        cleanup,
      };
    });
  } catch (err) {
    await cleanup();
    throw err;
  }
}
