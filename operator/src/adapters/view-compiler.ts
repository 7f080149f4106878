// The operator's narrow view of the ingest node's view compiler
// (ingest-node/src/views/): validate the spec, check every expression with
// DuckDB's own parser against the node's allowlists, and build the SQL — the
// exact code the node runs per sealed segment, so "Compiled=True" means the
// node will accept the view. The controllers only need "does it compile, and
// if not, the exact error", plus the normalised spec and its hash.
import type { ViewSpec } from '../api/view.ts';
import type { ParquetDb } from '../../../ingest-node/src/views/index.ts';
import type * as NodeViews from '../../../ingest-node/src/views/index.ts';
import type { ViewSpecInput } from '../../../ingest-node/src/views/spec.ts';

export interface CompiledView {
  /** The view's name in S3 keys. */
  name: string;
  /** The normalised spec, as the node reads it (viewToPlain). */
  spec: ViewSpecInput;
  /** viewSpecHash: what the node writes into commit markers. */
  specHash: string;
  /** The compiled SELECT, for debugging. Not written to the ConfigMap: the node compiles itself. */
  sql?: string;
  /**
   * The View object and generation this came from, recorded on the views
   * ConfigMap (VIEW_SOURCES_ANNOTATION) so that a restarted operator finds
   * the last good generation of a View there (controller/views.ts).
   */
  source?: ViewSource;
}

export interface ViewSource {
  uid: string;
  generation: number;
  specHash: string;
}

export type CompileResult = { ok: true; view: CompiledView } | { ok: false; error: string };

export type ViewCompiler = (name: string, spec: ViewSpec) => Promise<CompileResult>;

export interface ClosableViewCompiler {
  compile: ViewCompiler;
  close(): Promise<void>;
}

export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The CRD spec as the node's view spec: endpointRef dropped, the output name set. */
export function nodeViewInput(name: string, spec: ViewSpec): Record<string, unknown> {
  const { endpointRef: _ref, name: _name, ...rest } = spec;
  return { name, ...rest };
}

/**
 * The node's compiler on a compile-only DuckDB (no scratch folder: no file is
 * reachable), created on first use. One connection at a time, one thread:
 * compiling is rare (once per View generation) and must stay small beside
 * the operator's informers.
 */
export function createNodeViewCompiler(
  opts: {
    memoryLimitBytes?: number;
    /** How the DuckDB is opened; tests inject a failing one. */
    openDb?: (views: typeof NodeViews) => Promise<ParquetDb>;
  } = {},
): ClosableViewCompiler {
  let db: Promise<ParquetDb> | undefined;
  // Loaded on first use: DuckDB is a native module the rest of the operator
  // (and its unit tests) need not pay for.
  let views: Promise<typeof NodeViews> | undefined;
  const open =
    opts.openDb ??
    ((v: typeof NodeViews) =>
      v.createParquetDb({ memoryLimitBytes: opts.memoryLimitBytes ?? 64 * 1024 * 1024, threads: 1 }));
  const getDb = async (): Promise<ParquetDb> => {
    const v = await (views ??= import('../../../ingest-node/src/views/index.ts'));
    const opening = (db ??= open(v));
    try {
      return await opening;
    } catch (err) {
      // A failed start is not remembered: the next compile tries again
      // (the caller sees the error and retries with backoff).
      if (db === opening) db = undefined;
      throw err;
    }
  };
  return {
    async compile(name, spec) {
      const v = await (views ??= import('../../../ingest-node/src/views/index.ts'));
      let normalised;
      try {
        normalised = v.validateView(nodeViewInput(name, spec));
      } catch (err) {
        if (v.isViewError(err)) return { ok: false, error: err.message };
        throw err;
      }
      const parquet = await getDb();
      try {
        const compiled = await parquet.withConnection((conn) => v.compileView(conn, normalised));
        return {
          ok: true,
          view: { name, spec: v.viewToPlain(compiled.spec), specHash: compiled.specHash, sql: compiled.sql },
        };
      } catch (err) {
        if (v.isViewError(err)) return { ok: false, error: err.message };
        throw err;
      }
    },
    async close() {
      const current = db;
      db = undefined;
      if (current) await (await current).close();
    },
  };
}
