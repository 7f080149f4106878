// The one DuckDB instance a process uses for Parquet work (raw and views),
// created by a factory the caller owns and passes in: creating an instance is
// costly, and memory_limit/threads are only a bound if there is one instance.
//
// The sandbox (TESTBED.md, checked on 1.5.6): after the instance exists,
// `allowed_directories` is set to the scratch folder, then external access is
// switched off (it cannot be switched back on), then the configuration is
// locked. A user expression that slipped past expr.ts still cannot read
// /etc/passwd, write outside scratch, load an extension or change a setting.
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import type { DuckDBConnection } from '@duckdb/node-api';

export interface ParquetDbOptions {
  /**
   * Folder DuckDB may read and write (outputs, spill files); its `jobs/` and
   * `spill/` are wiped at creation (a crashed run's leftovers). Omit for a
   * compile-only instance (the operator): then no file is reachable at all.
   */
  readonly scratchDir?: string;
  /** DuckDB's memory_limit; it spills to `<scratchDir>/spill` beyond it. */
  readonly memoryLimitBytes: number;
  readonly threads: number;
}

export interface ParquetDb {
  readonly instance: DuckDBInstance;
  readonly scratchDir: string | undefined;
  readonly memoryLimitBytes: number;
  readonly threads: number;
  /**
   * Runs `fn` on a fresh connection, one job at a time. Serialising jobs keeps
   * the memory bound meaningful (one segment's records loaded at once) and a
   * fresh connection keeps temp tables from leaking between jobs.
   */
  withConnection<T>(fn: (conn: DuckDBConnection) => Promise<T>): Promise<T>;
  /** Closes the instance; pending jobs finish first. */
  close(): Promise<void>;
}

/**
 * Per-job output folders live under `<scratchDir>/jobs/`, DuckDB's spill
 * files under `<scratchDir>/spill/`, records files kept for the next segment
 * under `<scratchDir>/pool/` (parquet/records.ts filePool).
 */
export const JOBS_DIR = 'jobs';
export const SPILL_DIR = 'spill';
export const POOL_DIR = 'pool';

/**
 * Partition files one COPY may write (outputs.ts copyPartitionFiles groups
 * partitions by this many): each open writer buffers a row group, so this
 * bounds memory. DuckDB's own limit on open partition files
 * (`partitioned_write_max_open_files`, 100 by default) is set to it: past its
 * limit DuckDB closes a file and later writes a second one into the same
 * partition, which copyToParquet refuses (one file per partition) — a view
 * with 101-256 partitions over a few hundred thousand rows failed whole.
 */
export const PARTITION_FILES_PER_COPY = 256;

export function sqlString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

export async function createParquetDb(options: ParquetDbOptions): Promise<ParquetDb> {
  if (!Number.isInteger(options.threads) || options.threads < 1)
    throw new Error('threads must be a positive integer');
  if (!Number.isInteger(options.memoryLimitBytes) || options.memoryLimitBytes < 16 * 1024 * 1024)
    throw new Error('memoryLimitBytes must be an integer of at least 16 MiB');
  let scratchDir: string | undefined;
  if (options.scratchDir !== undefined) {
    scratchDir = path.resolve(options.scratchDir);
    if (scratchDir === path.parse(scratchDir).root)
      throw new Error('scratchDir cannot be the filesystem root');
    // Only our own subfolders are wiped (a crashed run's leftovers), never the
    // folder itself: a misconfigured path must not cost anyone their files.
    await rm(path.join(scratchDir, JOBS_DIR), { recursive: true, force: true });
    await rm(path.join(scratchDir, SPILL_DIR), { recursive: true, force: true });
    await rm(path.join(scratchDir, POOL_DIR), { recursive: true, force: true });
    await mkdir(path.join(scratchDir, JOBS_DIR), { recursive: true });
    await mkdir(path.join(scratchDir, SPILL_DIR), { recursive: true });
    await mkdir(path.join(scratchDir, POOL_DIR), { recursive: true });
  }
  const instance = await DuckDBInstance.create(':memory:', {
    threads: String(options.threads),
    memory_limit: `${Math.floor(options.memoryLimitBytes / 1024)}KiB`,
    // Nothing may be downloaded or loaded at run time; json, parquet and icu are built in.
    autoinstall_known_extensions: 'false',
    autoload_known_extensions: 'false',
  });
  const conn = await instance.connect();
  try {
    // Timestamps without an offset mean UTC, and TIMESTAMPTZ renders in UTC,
    // whatever the node's TZ: outputs must not depend on where they were built.
    await conn.run('LOAD icu');
    await conn.run("SET GLOBAL TimeZone = 'UTC'");
    if (scratchDir !== undefined) {
      await conn.run(`SET GLOBAL temp_directory = ${sqlString(path.join(scratchDir, SPILL_DIR))}`);
      await conn.run(`SET GLOBAL allowed_directories = [${sqlString(scratchDir + path.sep)}]`);
    } else {
      await conn.run("SET GLOBAL temp_directory = ''");
    }
    await conn.run(`SET GLOBAL partitioned_write_max_open_files = ${PARTITION_FILES_PER_COPY}`);
    await conn.run('SET GLOBAL enable_external_access = false');
    await conn.run('SET GLOBAL lock_configuration = true');
  } finally {
    conn.closeSync();
  }

  let tail: Promise<unknown> = Promise.resolve();
  let closed = false;
  const db: ParquetDb = {
    instance,
    scratchDir,
    memoryLimitBytes: options.memoryLimitBytes,
    threads: options.threads,
    withConnection<T>(fn: (conn: DuckDBConnection) => Promise<T>): Promise<T> {
      if (closed) return Promise.reject(new Error('the Parquet DuckDB instance is closed'));
      const run = tail.then(async () => {
        const c = await instance.connect();
        try {
          return await fn(c);
        } finally {
          c.closeSync();
        }
      });
      // The queue continues after a failed job; the failure goes to its caller.
      tail = run.catch(() => undefined);
      return run;
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await tail;
      instance.closeSync();
    },
  };
  return db;
}
