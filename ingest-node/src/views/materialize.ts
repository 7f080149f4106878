// Per sealed segment: load the records for DuckDB once (parquet/records.ts:
// a scratch file DuckDB reads back in parallel), then write the raw Parquet
// and, per view, the view Parquet (ok rows, Hive-partitioned by the view's
// aliases) and the DLQ Parquet (dlq rows, partitioned by ingest date).
// Outputs land in `<scratch>/jobs/<jobId>/`; the caller uploads them under
// delivery/keys.ts (rawKey/viewKey/dlqKey with each file's `partitions`) and
// then calls `cleanup()`.
//
// Each view classifies every record once into temp tables, from which the
// view file, the DLQ file and the counts are written: a first pass
// (compile.ts fastSql) settles the rows that are fine, the full SELECT
// (compile.ts sql) classifies the others. When the view's last segment was
// all view rows, the first pass is tried straight into the view files
// (writeIfClean) and kept only if this segment is too; it then reads the
// records as NDJSON with read_json (fastSqlOverNdjson) when the loader could
// write them so. Only DLQ rows carry their ordinal and payload; their seq and
// ingest time are joined from the records' metadata when the (small) DLQ is
// written. The row accounting is checked, not assumed: records loaded, rows
// classified and rows DuckDB reports writing must agree, or the job fails
// rather than report numbers that lie.
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { DuckDBConnection } from '@duckdb/node-api';
import { JOBS_DIR, POOL_DIR } from '../parquet/duckdb.ts';
import type { ParquetDb } from '../parquet/duckdb.ts';
import { copyPartitionFiles, copyToParquet, PARTITION_FILES_PER_COPY } from '../parquet/outputs.ts';
import { hiveDefaultPartition, hiveEmptyPartition, hiveLevels } from '../delivery/keys.ts';
import type { HivePartition } from '../delivery/keys.ts';
import { keySegmentBytesMax, s3KeyBytesMax } from '../store/validate.ts';
import type { ParquetFile } from '../parquet/outputs.ts';
import { writeRawParquet } from '../parquet/raw.ts';
import type { RawParquetOptions } from '../parquet/raw.ts';
import { INPUT_RELATION, loadRecords, META_TABLE, RECORDS_RELATION, useInput } from '../parquet/records.ts';
import type { LoadedRecords } from '../parquet/records.ts';
import type { SegmentRecords } from '../parquet/records.ts';
import { DlqErrorCode, quoteIdent, ROW_STATUS, sqlString } from './compile.ts';
import { viewsPartitionFilesMaxDefault } from './settings.ts';
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
  readonly records: SegmentRecords;
  readonly views: readonly CompiledView[];
  /** Write raw Parquet too (omit for none). */
  readonly raw?: RawParquetOptions;
  readonly rowGroupRows?: number;
  /** Bounds on view partitions; defaultPartitionLimits() when omitted. */
  readonly partitionLimits?: PartitionLimits;
  /**
   * Parquet field ids for a view's files, by view name then column name (its
   * Iceberg table's ids, iceberg/field-ids.ts); a view not listed gets none.
   */
  readonly fieldIds?: ReadonlyMap<string, Readonly<Record<string, number>>>;
  /**
   * Views already known not to materialise over this segment (their child
   * process died, delivery/parquet-producers.ts), by name, with the reason:
   * their rows go straight to the DLQ as `view_failed`, the expression never runs.
   */
  readonly failedViews?: ReadonlyMap<string, string>;
}

/**
 * What a segment's view partitions may cost: the files per view, and what
 * their keys and commit marker entries may take (the producer knows the
 * prefix, the segment and the other artifacts; delivery/parquet-producers.ts).
 * Rows beyond these go to the view's DLQ, so no partition can make an
 * object key invalid or the marker exceed its cap (docs/views.md).
 */
export interface PartitionLimits {
  /** Partition files one view may write for one segment (views.partitionFilesMax). */
  readonly filesMax: number;
  /** Bytes of a view file's key besides its partition levels (prefix, view folder, file name). */
  keyBytesBase(view: string): number;
  /** Marker bytes one view file costs besides its key. */
  markerEntryBytes(view: string): number;
  /** Marker bytes the view files of all views may take together. */
  readonly markerBytes: number;
}

export { viewsPartitionFilesMaxDefault as partitionFilesMaxDefault } from './settings.ts';

/** Limits for a caller without a bucket in mind (`views check`, tests): a typical key, the whole marker. */
export function defaultPartitionLimits(filesMax = viewsPartitionFilesMaxDefault): PartitionLimits {
  return {
    filesMax,
    keyBytesBase: (view) => 200 + view.length,
    markerEntryBytes: (view) => 256 + view.length,
    markerBytes: 3 * 1024 * 1024,
  };
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
  /** Set when the view could not be materialised (every row is then a `view_failed` DLQ row): why. */
  readonly failed?: string;
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
  /**
   * Whether every record went to the NDJSON file that read_json reads
   * (parquet/records.ts): a view's clean write could read them so.
   */
  readonly recordsAsNdjson: boolean;
  /** What is left of partitionLimits.markerBytes after these views (the next view's budget when views run apart). */
  readonly markerBytesLeft: number;
  /** Removes the job's scratch folder (after the upload, or to give up). */
  cleanup(): Promise<void>;
}

const JOB_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
const CLASSIFIED_TABLE = '__lf_classified_rows';
/** The first pass's rows (compile.ts fastSql), the rest's input, and both as one relation. */
const FAST_TABLE = '__lf_fast_rows';
const REST_INPUT = '__lf_rest_input';
const CLASSIFIED_VIEW = '__lf_classified_all';
/** The classified rows as a table, when a partition verdict must update some (assignPartitions). */
const CLASSIFIED_COPY = '__lf_classified_copy';
const PARTS_TABLE = '__lf_partition_rows';
const PID = '__lf_pid';
/** Longest reason quoted in a view_failed DLQ row. */
const FAILED_MESSAGE_CHARS = 500;

/**
 * Bytes of `alias=<escapeHiveValue(v)>` for a VARCHAR `v`, in SQL, the same
 * as delivery/keys.ts computes them (views-poison.test.ts checks both agree).
 */
export function levelBytesSql(alias: string, v: string): string {
  const escaped = `strlen(${v}) + 2 * strlen(regexp_replace(${v}, '[A-Za-z0-9._-]', '', 'g')) + CASE WHEN starts_with(${v}, '__') THEN 2 ELSE 0 END`;
  return `(${Buffer.byteLength(alias) + 1} + CASE WHEN ${v} IS NULL THEN ${hiveDefaultPartition.length} WHEN ${v} = '' THEN ${hiveEmptyPartition.length} ELSE ${escaped} END)`;
}

/** The DLQ rows of a view, from the classified rows `rel`. */
function dlqSelectSql(rel: string): string {
  return `SELECT c.__lf_error_code AS error_code, c.__lf_error_message AS error_message, c.__lf_error_column AS "column",
         c.__lf_payload AS payload, m.seq AS seq, CAST(make_timestamp(m.ingest_us) AS TIMESTAMPTZ) AS ingest_time,
         strftime(make_timestamp(m.ingest_us), '%Y-%m-%d') AS dt
       FROM ${rel} c JOIN ${META_TABLE} m ON m.i = c.__lf_ordinal
       WHERE c.__lf_status = 'dlq' ORDER BY c.__lf_ordinal`;
}

/**
 * The DLQ files of the classified rows `rel`, one per ingest date: in one
 * COPY, or in one per PARTITION_FILES_PER_COPY dates when the records span
 * more (DuckDB keeps that many partition files open; past it, a date would
 * get a second file). The dates' metadata must be loaded.
 */
async function copyDlq(
  conn: DuckDBConnection,
  rel: string,
  loaded: LoadedRecords,
  dir: string,
  rowGroupRows: number | undefined,
): Promise<ParquetFile[]> {
  const options = { partitionBy: ['dt'], ...(rowGroupRows !== undefined ? { rowGroupRows } : {}) };
  if (loaded.ingestDaysAtMost() <= PARTITION_FILES_PER_COPY)
    return copyToParquet(conn, dlqSelectSql(rel), dir, options);
  const dates = (await conn.runAndReadAll(`SELECT DISTINCT dt FROM (${dlqSelectSql(rel)}) ORDER BY dt`))
    .getRows()
    .map((r) => String(r[0]));
  const files: ParquetFile[] = [];
  for (let k = 0; k < dates.length; k += PARTITION_FILES_PER_COPY) {
    const group = dates.slice(k, k + PARTITION_FILES_PER_COPY).map(sqlString);
    files.push(
      ...(await copyToParquet(
        conn,
        `SELECT * FROM (${dlqSelectSql(rel)}) WHERE dt IN (${group.join(', ')})`,
        path.join(dir, String(k)),
        options,
      )),
    );
  }
  return files;
}

/**
 * Rows `c` of the classified rows in partition `p` of PARTS_TABLE (whose
 * values are text; a DATE-valued partition is carried typed until then).
 */
function partitionMatchSql(view: CompiledView): string {
  return view.partitions
    .map((p) => {
      const a = quoteIdent(p.alias);
      return `${p.dateValued ? `CAST(c.${a} AS VARCHAR)` : `c.${a}`} IS NOT DISTINCT FROM p.${a}`;
    })
    .join(' AND ');
}

/**
 * The view columns and partition values as the classified rows carry them:
 * partition values as the text their folder is made of (compile.ts renders
 * them), except DATEs, whose folder DuckDB writes as that same text — kept
 * typed, one text per distinct value is made where text is needed
 * (assignPartitions) instead of one per row.
 */
function carriedSql(view: CompiledView): string {
  return [
    ...view.columns.map((c) => quoteIdent(c.name)),
    ...view.partitions.map((p) =>
      p.dateValued
        ? quoteIdent(p.alias)
        : `CAST(${quoteIdent(p.alias)} AS VARCHAR) AS ${quoteIdent(p.alias)}`,
    ),
  ].join(', ');
}

/** Budget shared by the views of one segment. */
interface Budget {
  markerBytes: number;
}

/**
 * Decides, per distinct partition of the view's ok rows, whether it gets a
 * file: its key must be valid (every level ≤ 250 bytes, the key ≤ 1024) and
 * it must be among the first `filesMax` (most rows first, then by value) whose
 * marker entries fit the budget. Rows of the others become DLQ rows. Returns
 * the kept partitions in id order (id = index + 1).
 */
async function assignPartitions(
  conn: DuckDBConnection,
  view: CompiledView,
  limits: PartitionLimits,
  budget: Budget,
  classified: string,
): Promise<{ kept: (readonly [string, string | null])[][]; rel: string }> {
  let rel = classified;
  const name = view.spec.name;
  const aliases = view.partitions.map((p) => p.alias);
  const q = aliases.map(quoteIdent);
  const base = limits.keyBytesBase(name);
  const entry = limits.markerEntryBytes(name);
  const levels = aliases.map((a, i) => `${levelBytesSql(a, q[i]!)} AS __lf_l${i}`);
  const pathBytes = aliases.map((_, i) => `__lf_l${i} + 1`).join(' + ');
  const tooLong = [
    ...aliases.map((a, i) => `WHEN __lf_l${i} > ${keySegmentBytesMax} THEN ${sqlString(a)}`),
    `WHEN __lf_path_bytes + ${base} > ${s3KeyBytesMax} THEN ${sqlString(aliases[aliases.length - 1]!)}`,
  ];
  const order = ['__lf_n DESC', ...q.map((c) => `${c} ASC NULLS FIRST`)].join(', ');
  await conn.run(
    `CREATE OR REPLACE TEMP TABLE ${PARTS_TABLE} AS
     WITH g AS (
       SELECT ${q.map((c) => `CAST(${c} AS VARCHAR) AS ${c}`).join(', ')}, __lf_n FROM (
         SELECT ${q.join(', ')}, count(*)::BIGINT AS __lf_n FROM ${rel} WHERE __lf_status = 'ok' GROUP BY ALL)
     ), l AS (SELECT *, ${levels.join(', ')} FROM g
     ), v AS (SELECT *, ${pathBytes} AS __lf_path_bytes FROM l
     ), t AS (SELECT *, CASE ${tooLong.join(' ')} END AS __lf_too_long FROM v
     ), r AS (
       SELECT *, CASE WHEN __lf_too_long IS NULL
         THEN row_number() OVER (PARTITION BY __lf_too_long IS NULL ORDER BY ${order}) END AS __lf_rank
       FROM t
     ), c AS (
       SELECT *, CASE WHEN __lf_rank IS NOT NULL
         THEN sum(${entry + base} + __lf_path_bytes) OVER (PARTITION BY __lf_rank IS NULL ORDER BY __lf_rank ROWS UNBOUNDED PRECEDING) END AS __lf_cum
       FROM r
     )
     SELECT *,
       CASE WHEN __lf_too_long IS NOT NULL THEN '${DlqErrorCode.partitionValueTooLong}'
            WHEN __lf_rank > ${limits.filesMax} OR __lf_cum > ${Math.max(0, Math.floor(budget.markerBytes))} THEN '${DlqErrorCode.tooManyPartitions}'
       END AS __lf_verdict,
       CASE WHEN __lf_too_long IS NULL AND __lf_rank <= ${limits.filesMax} AND __lf_cum <= ${Math.max(0, Math.floor(budget.markerBytes))} THEN __lf_rank END AS ${PID}
     FROM c`,
  );
  const match = partitionMatchSql(view);
  const refused = Number(
    (
      await conn.runAndReadAll(`SELECT count(*)::BIGINT FROM ${PARTS_TABLE} WHERE __lf_verdict IS NOT NULL`)
    ).getRows()[0]?.[0] ?? 0,
  );
  if (refused > 0) {
    const levelDetail = aliases
      .map(
        (a, i) =>
          `WHEN p.__lf_l${i} > ${keySegmentBytesMax} THEN 'partition ${a} needs ' || p.__lf_l${i} || ' bytes as a key level (${a}=<escaped value>), over the ${keySegmentBytesMax}-byte limit'`,
      )
      .join(' ');
    const message = `CASE WHEN p.__lf_verdict = '${DlqErrorCode.partitionValueTooLong}'
        THEN CASE ${levelDetail} ELSE 'the partition folders need ' || p.__lf_path_bytes || ' bytes, too many for an object key of at most ${s3KeyBytesMax} bytes' END
        ELSE ${sqlString(`view ${name} may write ${limits.filesMax} partition files per segment (views.partitionFilesMax) within the commit marker's size bound; this segment has more partitions, and this row's is not among those kept (most rows first)`)} END`;
    if (rel !== CLASSIFIED_TABLE) {
      // The two passes' rows are a view over two tables: one table to update (rare: a segment over its limits).
      await conn.run(`CREATE OR REPLACE TEMP TABLE ${CLASSIFIED_COPY} AS SELECT * FROM ${rel}`);
      rel = CLASSIFIED_COPY;
    }
    await conn.run(
      `UPDATE ${rel} AS c SET __lf_status = 'dlq', __lf_error_code = p.__lf_verdict,
         __lf_error_message = ${message},
         __lf_error_column = CASE WHEN p.__lf_verdict = '${DlqErrorCode.partitionValueTooLong}' THEN p.__lf_too_long ELSE ${sqlString(aliases[0]!)} END
       FROM ${PARTS_TABLE} p
       WHERE c.__lf_status = 'ok' AND p.__lf_verdict IS NOT NULL AND ${match}`,
    );
    // The classification kept payloads for its own DLQ rows only.
    await conn.run(
      `UPDATE ${rel} AS c SET __lf_payload = r.payload FROM ${RECORDS_RELATION} r
       WHERE c.__lf_status = 'dlq' AND c.__lf_payload IS NULL AND r.i = c.__lf_ordinal`,
    );
  }
  const kept = (
    await conn.runAndReadAll(
      `SELECT ${PID}, __lf_cum, ${q.join(', ')} FROM ${PARTS_TABLE} WHERE ${PID} IS NOT NULL ORDER BY ${PID}`,
    )
  ).getRows();
  const out: (readonly [string, string | null])[][] = [];
  for (const [i, row] of kept.entries()) {
    if (Number(row[0]) !== i + 1) throw new Error(`view ${name}: partition ids are not 1..n`);
    out.push(
      aliases.map((a, j): readonly [string, string | null] => {
        const v = row[j + 2];
        return [a, v === null || v === undefined ? null : String(v)];
      }),
    );
  }
  const last = kept[kept.length - 1];
  if (last !== undefined) budget.markerBytes -= Number(last[1]);
  return { kept: out, rel };
}

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

/** The NDJSON file read by read_json as `__lf_t` for one view's first pass (fastSqlOverNdjson). */
const NDJSON_RELATION = '__lf_ndjson';
const FAST_READ =
  /SELECT \*, try\(json_transform\(__lf_text, '(?:[^']|'')*'\)\) AS __lf_t\n {2}FROM __lf_src/;

/**
 * The first pass with its struct read by read_json from the segment's NDJSON
 * file (parquet/records.ts ndjsonLine: the same struct json_transform gives
 * over each payload's text, or NULL) instead of CSV text then
 * json_transform: one parse of each payload, in parallel, and no text per
 * row. It carries no ordinal, payload or text, so it serves only the write
 * of a clean segment, where every row is 'ok' and none is needed.
 * undefined when the SQL does not have the compiled shape.
 */
export function fastSqlOverNdjson(fastSql: string): string | undefined {
  if (fastSql.split(FAST_READ).length !== 2) return undefined;
  return fastSql.replace(
    FAST_READ,
    () =>
      `SELECT NULL::UBIGINT AS __lf_seq, NULL::BLOB AS __lf_payload, NULL::VARCHAR AS __lf_topic,\n` +
      `    NULL::VARCHAR AS __lf_text, __lf_t\n  FROM ${NDJSON_RELATION}`,
  );
}

/** Points NDJSON_RELATION at the file with this view's struct type. */
async function useNdjson(conn: DuckDBConnection, file: string, structType: string): Promise<void> {
  await conn.run(
    `CREATE OR REPLACE TEMP VIEW ${NDJSON_RELATION} AS SELECT v AS __lf_t FROM read_json(${sqlString(file)},
       format = 'newline_delimited', records = false, columns = {'v': ${sqlString(structType)}},
       ignore_errors = true, compression = 'uncompressed', maximum_object_size = ${NDJSON_OBJECT_BYTES_MAX})`,
  );
}
/** read_json's bound on a line: above records.ts's lineBytesMax default (longer payloads never reach the file). */
const NDJSON_OBJECT_BYTES_MAX = 2 * 1024 * 1024;

/**
 * Views whose last segment had only view rows (by spec hash): for them the
 * next segment is first written straight from the first pass (writeIfClean).
 * Only a guess that saves time: a wrong one costs one pass, never a row.
 */
const lastSegmentClean = new Map<string, boolean>();
const LAST_SEGMENT_CLEAN_MAX = 1024;
function rememberClean(view: CompiledView, clean: boolean): void {
  if (!lastSegmentClean.has(view.specHash) && lastSegmentClean.size >= LAST_SEGMENT_CLEAN_MAX)
    lastSegmentClean.clear();
  lastSegmentClean.set(view.specHash, clean);
}
const DATE_TEXT = /^[0-9]{4}-[0-9]{2}-[0-9]{2}$/;

/** Whether the view's segment is first tried as clean (writeIfClean), topics aside. */
function triesClean(view: CompiledView): boolean {
  return (
    view.fastSql !== undefined &&
    restSql(view.sql) !== undefined &&
    view.partitions.every((p) => p.dateValued) &&
    (lastSegmentClean.get(view.specHash) ?? view.filterSql === undefined)
  );
}

/** error()'s message in writeIfClean: a row that is not 'ok' (the segment is classified instead). */
const NOT_CLEAN = 'landfall: not a clean segment';

/**
 * The common segment — every record a view row, a few dates as partitions —
 * written with no table in between: the first pass's 'ok' rows straight into
 * the view files (about a third less CPU than the first pass into a table
 * and the files from it, measured). It stands only if it is what the
 * classification would have written: every record written, every partition
 * a plain date (DuckDB's folder for a DATE is its text; NULL and anything
 * else take the general path, which can tell a NULL from its folder's text)
 * and every partition kept by assignPartitions' rules (all kept: each key
 * level and key fits, no more files than allowed, the marker entries within
 * the budget). Otherwise the files are removed and undefined returned.
 */
async function writeIfClean(
  conn: DuckDBConnection,
  view: CompiledView,
  fastSql: string,
  rowsIn: number,
  dir: string,
  rowGroupRows: number | undefined,
  limits: PartitionLimits,
  budget: Budget,
  started: number,
  fieldIds: Readonly<Record<string, number>> | undefined,
  ndjsonFile: string | undefined,
): Promise<ViewOutput | undefined> {
  const name = view.spec.name;
  const aliases = view.partitions.map((p) => p.alias);
  const [first, ...others] = [...view.columns.map((c) => c.name), ...aliases].map(quoteIdent);
  // No WHERE: the attempt stands only if every row is 'ok', so the first row
  // that is not ends it (error() runs only for the rows that reach its
  // branch). Filtering the rows out and counting them came to the same
  // outcome at a few per cent more CPU (a selection on every chunk before the
  // Parquet writer), and a wrong guess read the whole segment before it could
  // be seen (docs/views.md, issue 15: test/bench/views/dirty.ts).
  const names = [
    `CASE WHEN __lf_status IS DISTINCT FROM '${ROW_STATUS.ok}' THEN error(${sqlString(NOT_CLEAN)}) ELSE ${first!} END AS ${first!}`,
    ...others,
  ].join(', ');
  let written: ParquetFile[];
  try {
    let source = withLoadedText(fastSql);
    const overNdjson =
      ndjsonFile !== undefined && view.fastStructType !== undefined ? fastSqlOverNdjson(fastSql) : undefined;
    if (overNdjson !== undefined) {
      await useNdjson(conn, ndjsonFile!, view.fastStructType!);
      source = overNdjson;
    }
    written = await copyToParquet(conn, `SELECT ${names} FROM (\n${source}\n)`, dir, {
      partitionBy: aliases,
      ...(rowGroupRows !== undefined ? { rowGroupRows } : {}),
      // The table's field ids, as the general path writes them (iceberg/field-ids.ts).
      ...(fieldIds !== undefined ? { fieldIds } : {}),
    });
  } catch (err) {
    // A guess gone wrong must cost no more than the pass: e.g. a segment
    // with so many dates that DuckDB runs out of memory with every file
    // open, which the general path bounds (partitionFilesMax, 256 files per COPY).
    if (isOutsideData(err) || invalidatesDb(err)) throw err;
    rememberClean(view, false);
    await rm(dir, { recursive: true, force: true });
    return undefined;
  }
  const rows = written.reduce((sum, f) => sum + f.rowCount, 0);
  let kept = rows === rowsIn;
  let markerBytes = 0;
  if (kept && aliases.length > 0) {
    const base = limits.keyBytesBase(name);
    const entry = limits.markerEntryBytes(name);
    kept = written.length <= Math.min(limits.filesMax, PARTITION_FILES_PER_COPY);
    for (const f of written) {
      if (!kept) break;
      kept = f.partitions.every(([, v]) => v !== null && DATE_TEXT.test(v));
      const levels = hiveLevels(f.partitions as readonly HivePartition[]).map((l) => Buffer.byteLength(l));
      const pathBytes = levels.reduce((sum, l) => sum + l + 1, 0);
      kept &&= levels.every((l) => l <= keySegmentBytesMax) && pathBytes + base <= s3KeyBytesMax;
      markerBytes += entry + base + pathBytes;
    }
    kept &&= markerBytes <= Math.max(0, Math.floor(budget.markerBytes));
  }
  rememberClean(view, rows === rowsIn);
  if (!kept) {
    await rm(dir, { recursive: true, force: true });
    return undefined;
  }
  budget.markerBytes -= markerBytes;
  const files = written.map((f) => ({
    ...f,
    partitionPath: hiveLevels(f.partitions as readonly HivePartition[])
      .map((l) => `${l}/`)
      .join(''),
  }));
  files.sort((a, b) => (a.partitionPath < b.partitionPath ? -1 : a.partitionPath > b.partitionPath ? 1 : 0));
  const dlqByCode = Object.fromEntries(Object.values(DlqErrorCode).map((c) => [c, 0])) as Record<
    DlqErrorCode,
    number
  >;
  return {
    view: name,
    specHash: view.specHash,
    rowsIn,
    viewRows: rows,
    filteredRows: 0,
    dlqRows: 0,
    dlqByCode,
    files,
    dlqFiles: [],
    durationMs: performance.now() - started,
  };
}

async function materializeView(
  conn: DuckDBConnection,
  view: CompiledView,
  loaded: LoadedRecords,
  jobDir: string,
  rowGroupRows: number | undefined,
  limits: PartitionLimits,
  budget: Budget,
  fieldIds: Readonly<Record<string, number>> | undefined,
): Promise<ViewOutput> {
  const rowsIn = loaded.rows;
  const started = performance.now();
  const name = view.spec.name;
  const aliases = view.partitions.map((p) => p.alias);
  const columns = view.columns.map((c) => quoteIdent(c.name)).join(', ');
  const partitioned = aliases.length > 0;
  const out = carriedSql(view);
  const rg = rowGroupRows !== undefined ? { rowGroupRows } : {};
  const ids = fieldIds !== undefined ? { fieldIds } : {};
  // The rows are classified once, into temp tables from which the view and
  // DLQ files and the counts are written: cheaper than classifying twice
  // (measured: about a quarter less CPU per segment), and seq, time and
  // payload are kept for DLQ rows only. (__lf_seq is the record's ordinal
  // here, see parquet/records.ts.) When the view compiled a first pass
  // (compile.ts fastSql), that pass settles the rows that are fine and
  // carries the text of the others, which the full classification then
  // reads instead of the records; the two tables are read as one relation.
  // A `$topic` column needs each record's topic: the whole metadata table, joined.
  const withTopic = view.readsTopic && loaded.hasTopics;
  const rest = view.fastSql === undefined ? undefined : restSql(view.sql);
  const classify = (sql: string): string =>
    `CREATE OR REPLACE TEMP TABLE ${CLASSIFIED_TABLE} AS
     SELECT __lf_status, __lf_error_code, __lf_error_message, __lf_error_column,
       ${partitioned ? '__lf_seq' : "CASE WHEN __lf_status = 'dlq' THEN __lf_seq END"} AS __lf_ordinal,
       CASE WHEN __lf_status = 'dlq' THEN __lf_payload END AS __lf_payload, ${out}
     FROM (\n${withLoadedText(sql)}\n)`;
  if (view.fastSql !== undefined && !withTopic && rowsIn > 0 && triesClean(view)) {
    const clean = await writeIfClean(
      conn,
      view,
      view.fastSql,
      rowsIn,
      path.join(jobDir, 'views', name),
      rowGroupRows,
      limits,
      budget,
      started,
      fieldIds,
      loaded.ndjsonFile,
    );
    if (clean !== undefined) return clean;
  }
  let rel = CLASSIFIED_TABLE;
  if (withTopic) {
    await loaded.loadMeta();
    await useInput(conn, 'views+topic', true);
  }
  try {
    if (view.fastSql !== undefined && rest !== undefined) {
      const unsettled = (c: string): string => `CASE WHEN __lf_status IS NULL THEN ${c} END`;
      await conn.run(
        `CREATE OR REPLACE TEMP TABLE ${FAST_TABLE} AS
         SELECT __lf_status, ${partitioned ? '__lf_seq' : unsettled('__lf_seq')} AS __lf_ordinal,
           ${unsettled('__lf_payload')} AS __lf_payload,
           ${view.readsTopic ? unsettled('__lf_topic') : 'NULL::VARCHAR'} AS __lf_topic, ${out}
         FROM (\n${withLoadedText(view.fastSql)}\n)`,
      );
      await conn.run(
        `CREATE OR REPLACE TEMP VIEW ${REST_INPUT} AS
         SELECT __lf_ordinal AS seq, NULL::TIMESTAMP AS ingest_time, __lf_payload AS payload,
           __lf_topic AS topic, try(decode(__lf_payload)) AS payload_text
         FROM ${FAST_TABLE} WHERE __lf_status IS NULL`,
      );
      await conn.run(classify(rest));
      const names = [...view.columns.map((c) => quoteIdent(c.name)), ...aliases.map(quoteIdent)].join(', ');
      await conn.run(
        `CREATE OR REPLACE TEMP VIEW ${CLASSIFIED_VIEW} AS
         SELECT __lf_status, NULL::VARCHAR AS __lf_error_code, NULL::VARCHAR AS __lf_error_message,
           NULL::VARCHAR AS __lf_error_column, __lf_ordinal, NULL::BLOB AS __lf_payload, ${names}
         FROM ${FAST_TABLE} WHERE __lf_status IS NOT NULL
         UNION ALL
         SELECT __lf_status, __lf_error_code, __lf_error_message, __lf_error_column, __lf_ordinal, __lf_payload, ${names}
         FROM ${CLASSIFIED_TABLE}`,
      );
      rel = CLASSIFIED_VIEW;
    } else await conn.run(classify(view.sql));
  } finally {
    if (withTopic) await useInput(conn, 'views', true);
  }
  try {
    let files: ParquetFile[];
    if (partitioned) {
      // A row's partition can still send it to the DLQ (a key it cannot have,
      // one partition too many): decided before anything is written.
      const assigned = await assignPartitions(conn, view, limits, budget, rel);
      const kept = assigned.kept;
      rel = assigned.rel;
      const pathOf = (partitions: ParquetFile['partitions']): string =>
        hiveLevels(partitions)
          .map((l) => `${l}/`)
          .join('');
      // The ok rows are now exactly the kept partitions'. When DuckDB's own
      // folders cannot collide (no value is the text of its NULL folder) and
      // one COPY can hold them, DuckDB partitions by the values themselves
      // (no join; the common case: a few dates); its folders are still
      // private, mapped back to the kept partitions by value.
      const direct =
        kept.length <= PARTITION_FILES_PER_COPY &&
        !kept.some((t) => t.some(([, v]) => v === hiveDefaultPartition));
      if (direct) {
        const byValues = new Map(kept.map((t) => [JSON.stringify(t.map(([, v]) => v)), t]));
        const written = await copyToParquet(
          conn,
          `SELECT ${[columns, ...aliases.map(quoteIdent)].join(', ')} FROM ${rel} WHERE __lf_status = 'ok'`,
          path.join(jobDir, 'views', name),
          { partitionBy: aliases, ...rg, ...ids },
        );
        files = written.map((f) => {
          const key = JSON.stringify(f.partitions.map(([, v]) => v));
          const t = byValues.get(key);
          if (t === undefined) throw new Error(`view ${name}: DuckDB wrote a partition not kept: ${key}`);
          byValues.delete(key);
          return { ...f, partitions: t, partitionPath: pathOf(t) };
        });
        files.sort((a, b) =>
          a.partitionPath < b.partitionPath ? -1 : a.partitionPath > b.partitionPath ? 1 : 0,
        );
      } else {
        const match = partitionMatchSql(view);
        files = await copyPartitionFiles(
          conn,
          `SELECT ${view.columns.map((c) => `c.${quoteIdent(c.name)}`).join(', ')}, p.${PID}
           FROM ${rel} c JOIN ${PARTS_TABLE} p ON ${match}
           WHERE c.__lf_status = 'ok' AND p.${PID} IS NOT NULL`,
          path.join(jobDir, 'views', name),
          { pidColumn: PID, pids: kept.length, partitionsOf: (pid) => kept[pid - 1]!, pathOf, ...rg, ...ids },
        );
      }
    } else {
      files = await copyToParquet(
        conn,
        `SELECT ${columns} FROM ${rel} WHERE __lf_status = 'ok'`,
        path.join(jobDir, 'views', name),
        { partitionBy: [], ...rg, ...ids },
      );
    }
    // seq and ingest time of the DLQ rows: few, fetched for them alone (or all, when most rows are bad).
    const dlqOrdinals = (
      await conn.runAndReadAll(
        `SELECT __lf_ordinal FROM ${rel} WHERE __lf_status = 'dlq' ORDER BY __lf_ordinal LIMIT ${Math.ceil(rowsIn / 8) + 1}`,
      )
    )
      .getRows()
      .map((r) => Number(r[0]));
    if (dlqOrdinals.length > 0)
      await loaded.loadMeta(dlqOrdinals.length > rowsIn / 8 ? undefined : dlqOrdinals);
    const dlqFiles = await copyDlq(conn, rel, loaded, path.join(jobDir, 'dlq', name), rowGroupRows);
    const counts = await conn.runAndReadAll(
      `SELECT __lf_status, __lf_error_code, count(*)::BIGINT FROM ${rel} GROUP BY ALL`,
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
    if (view.fastSql !== undefined) rememberClean(view, okRows === rowsIn);
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
    await dropClassified(conn);
  }
}

/** Drops what a view's classification left (views first: they read the tables). */
async function dropClassified(conn: DuckDBConnection): Promise<void> {
  for (const v of [CLASSIFIED_VIEW, REST_INPUT]) await conn.run(`DROP VIEW IF EXISTS ${v}`);
  for (const t of [CLASSIFIED_TABLE, CLASSIFIED_COPY, FAST_TABLE, PARTS_TABLE])
    await conn.run(`DROP TABLE IF EXISTS ${t}`);
}

/**
 * The full classification over the first pass's unsettled rows instead of
 * the records: compile.ts's SELECT reads INPUT_RELATION in exactly one
 * place, and REST_INPUT has its columns. undefined when the SQL does not
 * have that shape (the view then runs in one pass).
 */
function restSql(sql: string): string | undefined {
  const from = `FROM ${INPUT_RELATION}\n`;
  return sql.split(from).length === 2 ? sql.replace(from, `FROM ${REST_INPUT}\n`) : undefined;
}

/**
 * Failures that are not the data's or the view's: the disk (DuckDB's IO
 * errors, a Node errno) or the instance going away. They fail the segment,
 * which is retried; anything else a view raises is the view's outcome for
 * this segment and must not hold delivery back.
 */
export function isOutsideData(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return true;
  const message = err instanceof Error ? err.message : String(err);
  // DuckDB reports a full scratch volume as an out-of-memory error: "failed
  // to offload data block … This limit was set by the
  // 'max_temp_directory_size' setting" (which defaults to the free space).
  // That is the disk, not the data: retry, never DLQ the rows.
  const spillFailed =
    /^Out of Memory Error\b/i.test(message) &&
    /offload|max_temp_directory_size|temp(orary)? directory|No space left/i.test(message);
  return (
    spillFailed ||
    /^(IO|Connection|Interrupt|FATAL) Error\b/i.test(message) ||
    /instance is closed/.test(message)
  );
}

/**
 * A DuckDB INTERNAL error (an assertion inside DuckDB: e.g. `date_part` with
 * a specifier from the data it has no ICU extractor for) invalidates the
 * database: every later statement fails with "FATAL Error: … database has
 * been invalidated". It is the data's doing, but nothing more can run here.
 */
export function invalidatesDb(err: unknown): boolean {
  const message = err instanceof Error ? err.message : String(err);
  return /^INTERNAL Error\b/.test(message);
}

/**
 * A view that could not be materialised over a segment: every record goes to
 * its DLQ as `view_failed`, with the reason, so the segment is still
 * delivered and the rows can be rebuilt (`landfall reprocess`) once the view
 * is fixed.
 */
async function failView(
  conn: DuckDBConnection,
  view: CompiledView,
  loaded: LoadedRecords,
  jobDir: string,
  rowGroupRows: number | undefined,
  reason: string,
  started: number,
): Promise<ViewOutput> {
  const name = view.spec.name;
  await rm(path.join(jobDir, 'views', name), { recursive: true, force: true });
  await rm(path.join(jobDir, 'dlq', name), { recursive: true, force: true });
  await dropClassified(conn);
  await loaded.loadMeta();
  const message = reason.length > FAILED_MESSAGE_CHARS ? `${reason.slice(0, FAILED_MESSAGE_CHARS)}…` : reason;
  await conn.run(
    `CREATE OR REPLACE TEMP TABLE ${CLASSIFIED_TABLE} AS
     SELECT 'dlq' AS __lf_status, '${DlqErrorCode.viewFailed}' AS __lf_error_code,
       ${sqlString(`view ${name} could not be materialised over this segment: ${message}`)} AS __lf_error_message,
       NULL::VARCHAR AS __lf_error_column, i AS __lf_ordinal, payload AS __lf_payload
     FROM ${RECORDS_RELATION}`,
  );
  try {
    const dlqFiles = await copyDlq(
      conn,
      CLASSIFIED_TABLE,
      loaded,
      path.join(jobDir, 'dlq', name),
      rowGroupRows,
    );
    const dlqRows = dlqFiles.reduce((sum, f) => sum + f.rowCount, 0);
    if (dlqRows !== loaded.rows)
      throw new Error(`view ${name}: ${dlqRows} view_failed rows written for ${loaded.rows} records`);
    const dlqByCode = Object.fromEntries(Object.values(DlqErrorCode).map((c) => [c, 0])) as Record<
      DlqErrorCode,
      number
    >;
    dlqByCode[DlqErrorCode.viewFailed] = dlqRows;
    return {
      view: name,
      specHash: view.specHash,
      rowsIn: loaded.rows,
      viewRows: 0,
      filteredRows: 0,
      dlqRows,
      dlqByCode,
      files: [],
      dlqFiles,
      durationMs: performance.now() - started,
      failed: message,
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
  const poolDir = path.join(db.scratchDir, POOL_DIR);
  const cleanup = (): Promise<void> => rm(jobDir, { recursive: true, force: true });
  await cleanup();
  await mkdir(jobDir, { recursive: true });
  // Released once the job is done with the records (their arrays serve the next segment).
  let loaded: LoadedRecords | undefined;
  try {
    return await db.withConnection(async (conn) => {
      const t0 = performance.now();
      // The records as NDJSON (parquet/records.ts) when a view's clean segment
      // will read them so; otherwise the CSV file, which DuckDB reads in
      // parallel (raw Parquet reads every record; the NDJSON file is read
      // back as text in one thread).
      const ndjson =
        input.raw === undefined &&
        input.views.some(
          (v) => v.fastStructType !== undefined && !input.failedViews?.has(v.spec.name) && triesClean(v),
        );
      loaded = await loadRecords(conn, input.records, {
        dir: jobDir,
        ndjson,
        poolDir,
      });
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
      const limits = input.partitionLimits ?? defaultPartitionLimits();
      const budget: Budget = { markerBytes: limits.markerBytes };
      for (const view of input.views) {
        const started = performance.now();
        const knownFailed = input.failedViews?.get(view.spec.name);
        if (knownFailed !== undefined) {
          views.push(await failView(conn, view, loaded, jobDir, input.rowGroupRows, knownFailed, started));
          continue;
        }
        try {
          views.push(
            await materializeView(
              conn,
              view,
              loaded,
              jobDir,
              input.rowGroupRows,
              limits,
              budget,
              input.fieldIds?.get(view.spec.name),
            ),
          );
        } catch (err) {
          if (isOutsideData(err)) throw err;
          // Thrown on, not written as view_failed here: every statement on this
          // DuckDB would now fail as FATAL (outside the data: retried for ever).
          // The job fails on the data and the parent runs each view in a child
          // of its own (parquet/isolated.ts), where this view alone fails.
          if (invalidatesDb(err)) throw err;
          const reason = ((err as Error).message ?? String(err)).split('\n')[0] ?? 'failed';
          views.push(await failView(conn, view, loaded, jobDir, input.rowGroupRows, reason, started));
        }
      }
      // Every pass has read them: the next segment writes over them (page
      // cache and blocks already there) instead of into new files.
      await loaded.recycleFiles();
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
        recordsAsNdjson: loaded.ndjsonFile !== undefined,
        markerBytesLeft: budget.markerBytes,
        cleanup,
      };
    });
  } catch (err) {
    await cleanup();
    throw err;
  } finally {
    loaded?.release();
  }
}
