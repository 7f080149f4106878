// Per sealed segment: load the records into DuckDB once, then write the raw
// Parquet and, per view, the view Parquet (ok rows, Hive-partitioned by the
// view's aliases) and the DLQ Parquet (dlq rows, partitioned by ingest date).
// Outputs land in `<scratch>/jobs/<jobId>/`; the caller uploads them under
// delivery/keys.ts (rawKey/viewKey/dlqKey with each file's `partitions`) and
// then calls `cleanup()`.
//
// Each view costs two passes over the records: one COPY of the ok rows, and
// one that keeps only the rows that are not ok (with payloads for DLQ rows
// only), from which the DLQ file and the counts come. Two independent passes
// also make the row accounting a real check: ok + filtered + dlq must equal
// the rows loaded, or the job fails rather than report numbers that lie.
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { DuckDBConnection } from '@duckdb/node-api';
import { JOBS_DIR } from '../parquet/duckdb.ts';
import type { ParquetDb } from '../parquet/duckdb.ts';
import { copyToParquet } from '../parquet/outputs.ts';
import type { ParquetFile } from '../parquet/outputs.ts';
import { writeRawParquet } from '../parquet/raw.ts';
import type { RawParquetOptions } from '../parquet/raw.ts';
import { loadRecords } from '../parquet/records.ts';
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
}

export interface SegmentOutputs {
  readonly jobDir: string;
  readonly rowsIn: number;
  readonly payloadBytes: number;
  readonly firstSeq: bigint | undefined;
  readonly lastSeq: bigint | undefined;
  readonly raw: readonly ParquetFile[];
  readonly views: readonly ViewOutput[];
  /** Removes the job's scratch folder (after the upload, or to give up). */
  cleanup(): Promise<void>;
}

const JOB_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
const REST_TABLE = '__lf_not_ok';

async function materializeView(
  conn: DuckDBConnection,
  view: CompiledView,
  rowsIn: number,
  jobDir: string,
  rowGroupRows: number | undefined,
): Promise<ViewOutput> {
  const name = view.spec.name;
  const aliases = view.partitions.map((p) => p.alias);
  const out = [...view.columns.map((c) => c.name), ...aliases].map(quoteIdent).join(', ');
  const rg = rowGroupRows !== undefined ? { rowGroupRows } : {};
  const files = await copyToParquet(
    conn,
    `SELECT ${out} FROM (\n${view.sql}\n) WHERE __lf_status = 'ok'`,
    path.join(jobDir, 'views', name),
    { partitionBy: aliases, ...rg },
  );
  await conn.run(
    `CREATE OR REPLACE TEMP TABLE ${REST_TABLE} AS
     SELECT __lf_status, __lf_error_code, __lf_error_message, __lf_error_column, __lf_seq, __lf_ingest_time,
       CASE WHEN __lf_status = 'dlq' THEN __lf_payload END AS __lf_payload
     FROM (\n${view.sql}\n) WHERE __lf_status <> 'ok'`,
  );
  try {
    const dlqFiles = await copyToParquet(
      conn,
      `SELECT __lf_error_code AS error_code, __lf_error_message AS error_message, __lf_error_column AS "column",
         __lf_payload AS payload, __lf_seq AS seq, CAST(__lf_ingest_time AS TIMESTAMPTZ) AS ingest_time,
         strftime(__lf_ingest_time, '%Y-%m-%d') AS dt
       FROM ${REST_TABLE} WHERE __lf_status = 'dlq'`,
      path.join(jobDir, 'dlq', name),
      { partitionBy: ['dt'], ...rg },
    );
    const counts = await conn.runAndReadAll(
      `SELECT __lf_status, __lf_error_code, count(*)::BIGINT FROM ${REST_TABLE} GROUP BY ALL`,
    );
    let filteredRows = 0;
    let dlqRows = 0;
    const dlqByCode = Object.fromEntries(Object.values(DlqErrorCode).map((c) => [c, 0])) as Record<
      DlqErrorCode,
      number
    >;
    for (const [status, code, n] of counts.getRows()) {
      const count = Number(n);
      if (status === 'filtered') filteredRows += count;
      else if (status === 'dlq') {
        dlqRows += count;
        if (!(typeof code === 'string' && code in dlqByCode))
          throw new Error(`unexpected DLQ code ${String(code)}`);
        dlqByCode[code as DlqErrorCode] += count;
      } else throw new Error(`unexpected row status ${String(status)}`);
    }
    const viewRows = files.reduce((sum, f) => sum + f.rowCount, 0);
    const dlqFileRows = dlqFiles.reduce((sum, f) => sum + f.rowCount, 0);
    if (viewRows + filteredRows + dlqRows !== rowsIn || dlqFileRows !== dlqRows)
      throw new Error(
        `view ${name}: row accounting does not add up: in=${rowsIn} view=${viewRows} filtered=${filteredRows} dlq=${dlqRows} dlqFile=${dlqFileRows}`,
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
    };
  } finally {
    await conn.run(`DROP TABLE IF EXISTS ${REST_TABLE}`);
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
      const loaded = await loadRecords(conn, input.records);
      const raw = input.raw
        ? await writeRawParquet(conn, path.join(jobDir, 'raw'), {
            ...input.raw,
            ...(input.rowGroupRows !== undefined ? { rowGroupRows: input.rowGroupRows } : {}),
          })
        : [];
      const views: ViewOutput[] = [];
      for (const view of input.views) {
        views.push(await materializeView(conn, view, loaded.rows, jobDir, input.rowGroupRows));
      }
      return {
        jobDir,
        rowsIn: loaded.rows,
        payloadBytes: loaded.payloadBytes,
        firstSeq: loaded.firstSeq,
        lastSeq: loaded.lastSeq,
        raw,
        views,
        cleanup,
      };
    });
  } catch (err) {
    await cleanup();
    throw err;
  }
}
