// The protocol between the node and its Parquet children (isolated.ts starts
// them, child.ts is one): the child's setup as its one argument, then one
// request per line on stdin and one answer per line on stdout, as JSON with
// bigints. Light on purpose: the child loads this, not the runner.
import { fileURLToPath } from 'node:url';
import type { CompiledView } from '../views/compile.ts';
import type { ViewOutput } from '../views/materialize.ts';
import type { SealedSegment } from '../wal/types.ts';
import type { ParquetFile } from './outputs.ts';
import type { RawParquetOptions } from './raw.ts';

export const CHILD_SCRIPT = fileURLToPath(new URL('./child.ts', import.meta.url));
/**
 * Node's type stripping runs a WebAssembly module, and V8 reserves as much
 * address space for its memory as the limit leaves (measured: under a 4 GiB
 * limit the child held 3.5 GB before its first line; under 2.5 GiB it could
 * not start). 2,048 pages (128 MiB) strip every module of the node and make
 * the child's footprint independent of the limit: ~2 GB with DuckDB up.
 */
export const CHILD_NODE_FLAGS = ['--wasm-max-mem-pages=2048'] as const;
/** Exit code child.ts uses for "could not start" (DuckDB did not come up under the limit). */
export const CHILD_EXIT_SETUP = 125;
/** The line a child prints once, when Node and DuckDB are up, before it reads any request. */
export const CHILD_STARTED_LINE = '{"started":true}';

/** What a child is for its whole life (its one argument, JSON): one DuckDB instance, one scratch folder. */
export interface ChildSetup {
  /** The child's own scratch folder (DuckDB may touch nothing else); each job writes under `jobs/<jobId>`. */
  readonly scratchDir: string;
  readonly memoryLimitBytes: number;
  readonly threads: number;
  /** Niceness the child gives itself before DuckDB starts its threads (0: the node's own). */
  readonly nice: number;
}

/** Partition limits as data: the per-view numbers PartitionLimits computes. */
export interface ChildPartitionLimits {
  readonly filesMax: number;
  readonly keyBytesBase: Readonly<Record<string, number>>;
  readonly markerEntryBytes: Readonly<Record<string, number>>;
  readonly markerBytes: number;
}

export interface ChildRequest {
  /**
   * Names the job's folder, `<scratchDir>/jobs/<jobId>`, which holds its
   * outputs until the parent removes it: unique among the jobs whose outputs
   * the parent still holds.
   */
  readonly jobId: string;
  readonly segmentPath: string;
  readonly segment: SealedSegment;
  readonly recordBytesMax?: number;
  readonly raw?: RawParquetOptions;
  readonly rowGroupRows?: number;
  readonly views: readonly CompiledView[];
  /** Views to write as `view_failed` without running them, with the reason. */
  readonly failedViews?: Readonly<Record<string, string>>;
  /** Parquet field ids by view, then column (the views' Iceberg tables' ids, iceberg/field-ids.ts). */
  readonly fieldIds?: Readonly<Record<string, Readonly<Record<string, number>>>>;
  readonly partitionLimits: ChildPartitionLimits;
}

export interface ChildOutputs {
  readonly rowsIn: number;
  readonly raw: readonly ParquetFile[];
  readonly views: readonly ViewOutput[];
  readonly markerBytesLeft: number;
  readonly loadMs: number;
  /** The raw writer's own time; with views it runs as the loader reads the records, so loadMs holds it too. */
  readonly rawMs: number;
  /** The child's own view of its peak resident set over its life (getrusage): the runner recycles a child that grew. */
  readonly maxRssBytes: number;
}

export type ChildAnswer =
  | { readonly ok: true; readonly outputs: ChildOutputs }
  | {
      readonly ok: false;
      readonly error: {
        /** defect: the segment file is corrupt; outside: disk or instance (retry); data: anything else. */
        readonly kind: 'defect' | 'mismatch' | 'outside' | 'data';
        readonly message: string;
        readonly code?: string;
        readonly offset?: number;
        readonly reason?: string;
      };
    };

/** JSON with bigints (seqs, ids, times) as `{"$bigint": "…"}`. */
export function encodeJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? { $bigint: v.toString() } : v));
}
export function decodeJson(text: string): unknown {
  return JSON.parse(text, (_k, v: unknown) => {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const keys = Object.keys(v);
      const b = (v as { $bigint?: unknown }).$bigint;
      if (keys.length === 1 && typeof b === 'string') return BigInt(b);
    }
    return v;
  });
}
