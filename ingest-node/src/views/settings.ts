// The node's `views` config block (config/schema.ts takes it into
// configBlocks): where view files live and the DuckDB instance that
// materialises them (and raw Parquet, outputs.rawParquet). TypeBox only, no
// runtime imports, so the config loader stays light.
import { Type, type Static } from '@sinclair/typebox';

const MiB = 1024 * 1024;

export const viewsReloadIntervalMsDefault = 5_000;
export const viewsMemoryLimitBytesDefault = 512 * MiB;
export const viewsThreadsDefault = 2;
/** Matches views/materialize.ts partitionFilesMaxDefault (kept here so the config loader stays light). */
export const viewsPartitionFilesMaxDefault = 1_000;
export const viewsProcessesMaxDefault = 1;
/** Niceness a Parquet child adds to the node's: its work yields the CPU to the acks. */
export const viewsProcessNiceDefault = 10;
/**
 * A Parquet child's job is killed after this long and counts as a death on
 * the data. Generous: a 20 MiB segment takes ~4 s here (operations.md),
 * minutes when DuckDB spills or the machine is loaded, and a legitimate job
 * cut short costs its views' rows (view_failed); the bound is for a job that
 * never ends.
 */
export const viewsProcessJobTimeoutMsDefault = 600_000;
/** Default views.processAddressSpaceBytes beyond memoryLimitBytes. */
export const viewsProcessAddressSpaceExtraBytesDefault = 3072 * MiB;
/**
 * Address space a Parquet child takes beyond DuckDB's memory_limit before it
 * does any work (measured on Node 24 + DuckDB 1.5 with parquet/isolated.ts
 * CHILD_NODE_FLAGS: ~1.55 GB for Node, ~2.0 GB once the modules are loaded
 * and DuckDB is up).
 */
export const processAddressSpaceHeadroomBytes = 2048 * MiB;
/** A view file is a few KiB; anything near this is a mistake (or an attack on the parser). */
export const viewFileBytesMax = 1 * MiB;
/** Views one node applies at once: each is one classification pass per sealed segment. */
export const viewsCountMax = 64;

export const ViewsSchema = Type.Object(
  {
    dir: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'Folder of view files (`*.yaml`, `*.yml`, `*.json`; one view, or a list of views, per file), e.g. a mounted ConfigMap. Loaded at start and reloaded on change; a file that does not parse or a view that does not compile is refused (logged, landfall_view_reload_errors_total) and the previous version of that view keeps running. Unset: no views.',
      }),
    ),
    reloadIntervalMs: Type.Integer({
      minimum: 100,
      default: viewsReloadIntervalMsDefault,
      description:
        'Fallback re-scan of views.dir, for volumes where file watching misses events (a ConfigMap update swaps a symlink).',
    }),
    scratchDir: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'The only folder DuckDB may read and write: each segment’s Parquet files before upload, and spill files. Default: `parquet` inside wal.dir (on the WAL volume, never the read-only root file system).',
      }),
    ),
    memoryLimitBytes: Type.Integer({
      minimum: 16 * MiB,
      default: viewsMemoryLimitBytesDefault,
      description:
        'DuckDB memory_limit of each Parquet child process (views and raw Parquet); beyond it DuckDB spills to scratchDir. Keep it well under the container memory limit.',
    }),
    threads: Type.Integer({
      minimum: 1,
      maximum: 64,
      default: viewsThreadsDefault,
      description: 'DuckDB threads of each Parquet child process.',
    }),
    processesMax: Type.Integer({
      minimum: 1,
      maximum: 16,
      default: viewsProcessesMaxDefault,
      description:
        'Parquet child processes alive at once. Each sealed segment’s raw Parquet, views and DLQ are written by a child process (off the event loop that answers requests, at processNice, under processAddressSpaceBytes); further segments wait for one. A child is kept for the next segments (its start costs ~0.55 CPU s) and replaced after 100 jobs, after 2 minutes idle, when its peak RSS passes half of processAddressSpaceBytes, or after a job that failed in it.',
    }),
    processAddressSpaceBytes: Type.Optional(
      Type.Integer({
        minimum: 2560 * MiB,
        description:
          'Hard address-space limit (RLIMIT_AS, via `ulimit -v` in /bin/sh) of each Parquet child process: the bound on what one segment’s materialisation can take, including allocations DuckDB’s memoryLimitBytes does not see (an expression that grows each value by a factor). A view whose child dies under it gets that segment’s rows in its DLQ as `view_failed`; the segment is delivered (docs/durability.md). Address space, not resident memory: Node and DuckDB reserve about 2 GB before any work, so it must be at least memoryLimitBytes + 2 GiB. Default: memoryLimitBytes + 3 GiB.',
      }),
    ),
    processNice: Type.Integer({
      minimum: 0,
      maximum: 19,
      default: viewsProcessNiceDefault,
      description:
        'Niceness each Parquet child process adds to the node’s own (capped at 19), set by the child on itself before DuckDB starts its threads: Parquet and view work yields the CPU to the node’s request handling (acks). The segment archive’s worker thread (frame verification, sha256 and zstd compression) takes the same niceness. 0: the same priority as the node.',
    }),
    processJobTimeoutMs: Type.Integer({
      minimum: 1_000,
      default: viewsProcessJobTimeoutMsDefault,
      description:
        'A Parquet child’s job (one segment, or one step of finding a culprit view) running longer than this is killed and counts as the child dying on the data: the view that hangs gets that segment’s rows in its DLQ as `view_failed` (docs/durability.md). Generous on purpose: a legitimate job cut short costs its views’ rows.',
    }),
    partitionFilesMax: Type.Integer({
      minimum: 1,
      maximum: 100_000,
      default: viewsPartitionFilesMaxDefault,
      description:
        'Partition files one view may write per sealed segment. A segment with more partitions keeps the ones with the most rows and sends the rest to the view’s DLQ (`too_many_partitions`) instead of failing: record data never stalls delivery. The commit marker’s 4 MiB bound can keep fewer (docs/views.md).',
    }),
  },
  {
    additionalProperties: false,
    default: {},
    description:
      'Views: typed Parquet (and a DLQ) per sealed segment from view files (docs/views.md). The DuckDB settings apply to raw Parquet too.',
  },
);

export type ViewsConfig = Static<typeof ViewsSchema>;
