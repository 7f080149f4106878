// The node's compaction schedule (`iceberg.compaction`, off by default): every
// `intervalMs`, each table a View of this node appends to is compacted
// (compact.ts), one table after another, on the node's own DuckDB (so the
// views' memory bound holds) and store. A run that fails is logged and the
// next one tries again; appends never wait for it (a compaction that loses a
// race with an append re-plans; one that loses too often gives up until the
// next interval).
//
// Replicas of an Endpoint each run their own schedule on the same tables:
// harmless (the catalog lets one replace win; the other re-plans and finds
// the files gone) but wasteful, so turn it on for one replica, or run
// `landfall iceberg compact` from a CronJob instead.
import { silentLogger, type Logger } from '../log.ts';
import type { ParquetDb } from '../parquet/duckdb.ts';
import type { ObjectStore } from '../store/types.ts';
import type { RestCatalog } from './catalog.ts';
import { compactTable, type CompactionResult } from './compact.ts';
import type { IcebergCompactionConfig } from './compaction-settings.ts';

export interface CompactionScheduleOptions {
  readonly config: IcebergCompactionConfig;
  readonly catalog: RestCatalog;
  readonly bucket: string;
  /** The delivery's store and prefix once it has opened them; undefined until then (the run is skipped). */
  readonly store: () => { readonly store: ObjectStore; readonly prefix: string } | undefined;
  readonly db: () => Promise<ParquetDb>;
  /** The tables to compact: the `iceberg` targets of the Views in force. */
  readonly tables: () => readonly { readonly namespace: string; readonly table: string }[];
  readonly conflictRetriesMax: number;
  readonly log?: Logger;
}

export interface CompactionSchedule {
  /** The /v1/status section. */
  status(): Record<string, unknown>;
  /** No new run; a run in progress stops before its next rewrite or commit. */
  stop(): Promise<void>;
}

export function startCompactionSchedule(o: CompactionScheduleOptions): CompactionSchedule {
  const log = o.log ?? silentLogger;
  const abort = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  const stats = {
    runs: 0,
    commits: 0,
    filesRewritten: 0,
    filesWritten: 0,
    lastRunAt: null as string | null,
    lastError: null as string | null,
  };

  const runOnce = async (): Promise<void> => {
    const opened = o.store();
    if (opened === undefined) return;
    const seen = new Set<string>();
    stats.runs++;
    stats.lastRunAt = new Date().toISOString();
    let failed: string | null = null;
    for (const t of o.tables()) {
      const name = `${t.namespace}.${t.table}`;
      if (seen.has(name)) continue;
      seen.add(name);
      if (abort.signal.aborted) return;
      let r: CompactionResult;
      try {
        r = await compactTable({
          catalog: o.catalog,
          store: opened.store,
          bucket: o.bucket,
          prefix: opened.prefix,
          db: await o.db(),
          namespace: t.namespace,
          table: t.table,
          targetFileBytes: o.config.targetFileBytes,
          minFiles: o.config.minFiles,
          binsMax: o.config.binsMax,
          conflictRetriesMax: o.conflictRetriesMax,
          signal: abort.signal,
          log,
        });
      } catch (err) {
        if (abort.signal.aborted) return;
        failed = `${name}: ${err instanceof Error ? err.message : String(err)}`;
        log.warn({ table: name, err }, 'iceberg compaction failed; the next run tries again');
        continue;
      }
      if (r.snapshotId !== null) {
        stats.commits++;
        stats.filesRewritten += r.bins.reduce((n, b) => n + b.files, 0);
        stats.filesWritten += r.bins.length;
      }
      log.debug(
        { table: name, dataFilesBefore: r.dataFilesBefore, dataFilesAfter: r.dataFilesAfter },
        'iceberg compaction run',
      );
    }
    stats.lastError = failed;
  };

  const schedule = (): void => {
    if (abort.signal.aborted) return;
    timer = setTimeout(() => {
      running = runOnce().finally(() => {
        running = undefined;
        schedule();
      });
    }, o.config.intervalMs);
    timer.unref();
  };
  schedule();

  return {
    status: () => ({ icebergCompaction: { intervalMs: o.config.intervalMs, ...stats } }),
    async stop() {
      abort.abort();
      clearTimeout(timer);
      await running?.catch(() => undefined);
    },
  };
}
