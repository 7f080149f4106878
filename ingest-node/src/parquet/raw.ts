// Raw Parquet (DESIGN §5: raw/{endpoint}/dt=YYYY-MM-DD/…): every record of a
// segment with no schema applied, the payload as the exact bytes received.
// Columnar and date-partitioned for time-bounded scans; one file per ingest
// date the segment spans (a segment sealed just after midnight spans two).
//
// | column      | type                      | what                                   |
// |-------------|---------------------------|----------------------------------------|
// | endpoint    | VARCHAR                   | the Endpoint's name                    |
// | instance    | VARCHAR                   | the ingest node instance id            |
// | seq         | UBIGINT                   | per-instance sequence number           |
// | ingest_time | TIMESTAMP WITH TIME ZONE  | when the node accepted the record (UTC)|
// | topic       | VARCHAR NULL              | MQTT topic, when there is one          |
// | payload     | BLOB                      | the record's bytes, unchanged          |
// Partition: dt = the UTC date of ingest_time (not a column inside the file).
import type { DuckDBConnection } from '@duckdb/node-api';
import { sqlString } from './duckdb.ts';
import { copyToParquet } from './outputs.ts';
import type { ParquetFile } from './outputs.ts';
import { INPUT_RELATION } from './records.ts';

export const RAW_PARQUET_COLUMNS = [
  'endpoint',
  'instance',
  'seq',
  'ingest_time',
  'topic',
  'payload',
] as const;

export interface RawParquetOptions {
  readonly endpoint: string;
  readonly instance: string;
  readonly rowGroupRows?: number;
}

/** The SELECT the raw output is written from, over the loaded records. */
export function rawParquetSql(options: RawParquetOptions): string {
  return [
    `SELECT ${sqlString(options.endpoint)} AS endpoint, ${sqlString(options.instance)} AS instance,`,
    '  seq, CAST(ingest_time AS TIMESTAMPTZ) AS ingest_time, topic, payload,',
    "  strftime(ingest_time, '%Y-%m-%d') AS dt",
    // No ORDER BY: records are loaded in seq order and DuckDB keeps insertion
    // order (preserve_insertion_order), so a sort would only cost time.
    `FROM ${INPUT_RELATION}`,
  ].join('\n');
}

/** Writes the raw Parquet for the records loaded on `conn` into `targetDir` (inside scratch). */
export async function writeRawParquet(
  conn: DuckDBConnection,
  targetDir: string,
  options: RawParquetOptions,
): Promise<ParquetFile[]> {
  return copyToParquet(conn, rawParquetSql(options), targetDir, {
    partitionBy: ['dt'],
    ...(options.rowGroupRows !== undefined ? { rowGroupRows: options.rowGroupRows } : {}),
  });
}
