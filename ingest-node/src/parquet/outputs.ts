// One COPY … TO … (FORMAT parquet) and the description of what it wrote:
// path, partition, rows, bytes, sha256. The pipeline uploads from these
// descriptions and the commit marker lists them, so they come from the files
// on disk (size, hash) and from DuckDB's own per-file stats (rows).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { DuckDBConnection } from '@duckdb/node-api';
import { PARTITION_FILES_PER_COPY, sqlString } from './duckdb.ts';

export interface ParquetFile {
  /** Absolute path of the file in the scratch folder. */
  readonly localPath: string;
  /**
   * Hive partition folders, with a trailing slash: `dt=2026-11-26/`; '' when
   * the output is not partitioned. For view files it is the path the S3 key
   * has (delivery/keys.ts hiveLevels()).
   */
  readonly partitionPath: string;
  /**
   * Decoded partition values in partition order, as `[alias, value]`: what
   * delivery/keys.ts viewKey() takes (it does its own escaping). NULL is `null`.
   */
  readonly partitions: readonly (readonly [alias: string, value: string | null])[];
  readonly rowCount: number;
  readonly sizeBytes: number;
  /** Hex sha256 of the file's bytes. */
  readonly sha256: string;
}

export interface CopyOptions {
  /** Hive partition columns of `selectSql`, outermost first; none → one file. */
  readonly partitionBy: readonly string[];
  /** Parquet row-group size; DuckDB's default (122,880) when omitted. */
  readonly rowGroupRows?: number;
  /** Parquet field ids by column name (an Iceberg table's ids); columns not named get none. */
  readonly fieldIds?: Readonly<Record<string, number>>;
}

export const PARQUET_FILE_NAME = 'data.parquet';

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * Writes `selectSql` as ZSTD Parquet under `targetDir` (a fresh folder inside
 * the scratch folder) and describes the files. An empty result writes no file.
 *
 * Partition folders are DuckDB's own naming, which is not injective (NULL and
 * the text `__HIVE_DEFAULT_PARTITION__` share a folder, and one file then
 * overwrites the other) and not bounded in length: use `partitionBy` only for
 * values the node makes itself (the `dt` of raw and DLQ files). View
 * partitions, which come from user data, go through copyPartitionFiles().
 */
export async function copyToParquet(
  conn: DuckDBConnection,
  selectSql: string,
  targetDir: string,
  options: CopyOptions,
): Promise<ParquetFile[]> {
  const partitioned = options.partitionBy.length > 0;
  const target = partitioned ? targetDir : path.join(targetDir, PARQUET_FILE_NAME);
  const copyOptions = ['FORMAT parquet', 'COMPRESSION zstd', 'RETURN_STATS'];
  if (options.rowGroupRows !== undefined) {
    if (!Number.isInteger(options.rowGroupRows) || options.rowGroupRows < 1)
      throw new Error('rowGroupRows must be a positive integer');
    copyOptions.push(`ROW_GROUP_SIZE ${options.rowGroupRows}`);
  }
  const ids = Object.entries(options.fieldIds ?? {});
  if (ids.length > 0) {
    if (!ids.every(([, id]) => Number.isInteger(id) && id > 0 && id < 2 ** 31))
      throw new Error('field ids must be positive 32-bit integers');
    copyOptions.push(`FIELD_IDS {${ids.map(([name, id]) => `${quoteIdent(name)}: ${id}`).join(', ')}}`);
  }
  if (partitioned) {
    copyOptions.push(`PARTITION_BY (${options.partitionBy.map(quoteIdent).join(', ')})`);
    copyOptions.push(`FILENAME_PATTERN 'data_{i}'`);
  }
  // DuckDB creates the last folder level only.
  await mkdir(targetDir, { recursive: true });
  const reader = await conn.runAndReadAll(
    `COPY (${selectSql}) TO ${sqlString(target)} (${copyOptions.join(', ')})`,
  );
  const stats = reader.getRowObjectsJson() as {
    filename: string;
    count: string | number;
    partition_keys: { key: string; value: string | null }[] | null;
  }[];
  const files: ParquetFile[] = [];
  for (const s of stats) {
    const rowCount = Number(s.count);
    if (rowCount === 0) {
      // Only the unpartitioned writer leaves an empty file; an empty artifact
      // is noise in S3 and in the marker, the counts already say "0 rows".
      await rm(s.filename, { force: true });
      continue;
    }
    const relDir = path.relative(targetDir, path.dirname(s.filename));
    const partitionPath = relDir === '' ? '' : `${relDir.split(path.sep).join('/')}/`;
    const decoded = new Map((s.partition_keys ?? []).map((kv) => [kv.key, kv.value]));
    const partitions = options.partitionBy.map((alias): readonly [string, string | null] => [
      alias,
      decoded.get(alias) ?? null,
    ]);
    // One file per partition folder is what the S3 layout has room for
    // ({instance}-{epoch}-{segmentId}.parquet). DuckDB only splits a folder
    // when asked to (FILE_SIZE_BYTES…); if it ever does, fail loudly rather
    // than let two files race for one key.
    if (!/^data(_0)?\.parquet$/.test(path.basename(s.filename)))
      throw new Error(`DuckDB wrote more than one file into ${relDir || targetDir}: ${s.filename}`);
    const st = await stat(s.filename);
    files.push({
      localPath: s.filename,
      partitionPath,
      partitions,
      rowCount,
      sizeBytes: st.size,
      sha256: await sha256File(s.filename),
    });
  }
  files.sort((a, b) => (a.localPath < b.localPath ? -1 : a.localPath > b.localPath ? 1 : 0));
  return files;
}

export { PARTITION_FILES_PER_COPY } from './duckdb.ts';

/**
 * View files, one per partition, where the partition of each row is an id the
 * caller assigned (`pidColumn`, 1..n, a column of `selectSql` that is not
 * written) and `partitionsOf(id)` says what it stands for. The folders DuckDB
 * writes (`<pidColumn>=<id>/`) are private; `partitionPath` is the caller's
 * (`pathOf`). So the encoding of user values never depends on DuckDB's,
 * and a segment with many partitions is written PARTITION_FILES_PER_COPY ids
 * at a time, within the memory limit.
 */
export async function copyPartitionFiles(
  conn: DuckDBConnection,
  selectSql: string,
  targetDir: string,
  options: {
    readonly pidColumn: string;
    readonly pids: number;
    readonly partitionsOf: (pid: number) => ParquetFile['partitions'];
    readonly pathOf: (partitions: ParquetFile['partitions']) => string;
    readonly rowGroupRows?: number;
    readonly fieldIds?: Readonly<Record<string, number>>;
  },
): Promise<ParquetFile[]> {
  const files: ParquetFile[] = [];
  const byPid = new Map<number, ParquetFile>();
  for (let first = 1; first <= options.pids; first += PARTITION_FILES_PER_COPY) {
    const last = Math.min(options.pids, first + PARTITION_FILES_PER_COPY - 1);
    const written = await copyToParquet(
      conn,
      `SELECT * FROM (${selectSql}) WHERE ${quoteIdent(options.pidColumn)} BETWEEN ${first} AND ${last}`,
      path.join(targetDir, `${first}`),
      {
        partitionBy: [options.pidColumn],
        ...(options.rowGroupRows !== undefined ? { rowGroupRows: options.rowGroupRows } : {}),
        ...(options.fieldIds !== undefined ? { fieldIds: options.fieldIds } : {}),
      },
    );
    for (const f of written) {
      const pid = Number(f.partitions[0]?.[1]);
      if (!Number.isInteger(pid) || pid < first || pid > last || byPid.has(pid))
        throw new Error(`unexpected partition file ${f.localPath}`);
      const partitions = options.partitionsOf(pid);
      const file = { ...f, partitions, partitionPath: options.pathOf(partitions) };
      byPid.set(pid, file);
      files.push(file);
    }
  }
  files.sort((a, b) => (a.partitionPath < b.partitionPath ? -1 : a.partitionPath > b.partitionPath ? 1 : 0));
  return files;
}
