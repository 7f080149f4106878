// Compiling Views, shared by both controllers: the View controller reports
// the result, the Endpoint controller writes the views that compiled into its
// ConfigMap.
//
// Two kinds of failure, kept apart on purpose:
// - a spec error (the compiler's ok:false: a forbidden expression, a bad
//   column) belongs to that generation of the View: cached per
//   (uid, generation), since a spec does not change without its generation
//   changing, and reported as Compiled=False;
// - anything the compiler throws (DuckDB failed to start, out of memory, a
//   bug) says nothing about the View: it is not cached, the reconcile fails
//   and is retried with backoff, and nothing is written. A transient failure
//   must never rewrite the views ConfigMap without the Views it could not
//   compile: running pods would stop producing them.
// The last generation of each View that compiled stays in the config until a
// newer one compiles, so a broken edit does not stop a View's output either.
import type { View } from '../api/view.ts';
import { viewOutputName, withViewDefaults } from '../api/view.ts';
import type { CompileResult, CompiledView, ViewCompiler } from '../adapters/view-compiler.ts';

/** The compiler could not run (infrastructure, not the View's spec); retry later. */
export class CompilerUnavailableError extends Error {
  constructor(view: string, cause: unknown) {
    super(`compiling View ${view}: compiler unavailable: ${(cause as Error)?.message ?? String(cause)}`, {
      cause,
    });
    this.name = 'CompilerUnavailableError';
  }
}

export interface LastGood {
  generation: number;
  view: CompiledView;
}

export class ViewCompileCache {
  private readonly compiler: ViewCompiler;
  private readonly maxEntries: number;
  private readonly entries = new Map<string, Promise<CompileResult>>();
  /** View uid → the newest generation that compiled. Bounded like `entries`. */
  private readonly good = new Map<string, LastGood>();

  constructor(compiler: ViewCompiler, maxEntries = 2048) {
    this.compiler = compiler;
    this.maxEntries = maxEntries;
  }

  /** The result for the View's current generation; rejects with CompilerUnavailableError on infrastructure errors. */
  compile(view: View): Promise<CompileResult> {
    const generation = view.metadata.generation ?? 0;
    const key = `${uidOf(view)}/${generation}`;
    let result = this.entries.get(key);
    if (!result) {
      const running = this.run(view);
      result = running;
      this.entries.set(key, running);
      bound(this.entries, this.maxEntries);
      running.then(
        (r) => {
          if (!r.ok) return;
          const prev = this.good.get(uidOf(view));
          if (!prev || prev.generation <= generation) {
            this.good.delete(uidOf(view));
            this.good.set(uidOf(view), { generation, view: r.view });
            bound(this.good, this.maxEntries);
          }
        },
        // Not cached: the next reconcile asks the compiler again.
        () => {
          if (this.entries.get(key) === running) this.entries.delete(key);
        },
      );
    }
    return result;
  }

  /** The newest generation of this View that compiled, if any (older than or equal to the current one). */
  lastGood(view: View): LastGood | undefined {
    const g = this.good.get(uidOf(view));
    return g && g.generation <= (view.metadata.generation ?? 0) ? g : undefined;
  }

  private async run(view: View): Promise<CompileResult> {
    try {
      return await this.compiler(viewOutputName(view), withViewDefaults(view.spec));
    } catch (err) {
      throw new CompilerUnavailableError(view.metadata.name ?? '?', err);
    }
  }
}

function uidOf(view: View): string {
  return view.metadata.uid ?? `${view.metadata.namespace ?? ''}/${view.metadata.name ?? ''}`;
}

function bound(map: Map<string, unknown>, max: number): void {
  while (map.size > max) {
    const oldest = map.keys().next().value;
    if (oldest === undefined) break;
    map.delete(oldest);
  }
}

function created(v: View): string {
  const t = v.metadata.creationTimestamp;
  return t === undefined ? '' : typeof t === 'string' ? t : t.toISOString();
}

/** Views of one Endpoint, oldest first (the oldest keeps a contested output name). */
export function viewsOfEndpoint(all: readonly View[], namespace: string, endpoint: string): View[] {
  return all
    .filter(
      (v) =>
        v.metadata.namespace === namespace &&
        v.spec?.endpointRef?.name === endpoint &&
        !v.metadata.deletionTimestamp,
    )
    .sort(
      (a, b) =>
        created(a).localeCompare(created(b)) || (a.metadata.name ?? '').localeCompare(b.metadata.name ?? ''),
    );
}

export interface EndpointViews {
  compiled: CompiledView[];
  /** View object name → why it is not in the config (compile error or duplicate output name). */
  excluded: Map<string, { reason: 'CompileFailed' | 'DuplicateName'; message: string }>;
  /** View object name → its current generation failed to compile; this older one is in the config. */
  stale: Map<string, { generation: number; message: string }>;
}

export async function compileEndpointViews(
  cache: ViewCompileCache,
  views: readonly View[],
): Promise<EndpointViews> {
  const compiled: CompiledView[] = [];
  const excluded: EndpointViews['excluded'] = new Map();
  const stale: EndpointViews['stale'] = new Map();
  const owners = new Map<string, string>();
  for (const v of views) {
    const name = v.metadata.name ?? '';
    // Throws on an infrastructure error: the caller fails rather than
    // writing a config without this View.
    const result = await cache.compile(v);
    let view: CompiledView;
    if (result.ok) view = result.view;
    else {
      const last = cache.lastGood(v);
      if (!last) {
        excluded.set(name, { reason: 'CompileFailed', message: result.error });
        continue;
      }
      view = last.view;
      stale.set(name, { generation: last.generation, message: result.error });
    }
    const owner = owners.get(view.name);
    if (owner !== undefined) {
      excluded.set(name, {
        reason: 'DuplicateName',
        message: `view name '${view.name}' is already used by View ${owner} on this Endpoint`,
      });
      stale.delete(name);
      continue;
    }
    owners.set(view.name, name);
    compiled.push(view);
  }
  return { compiled, excluded, stale };
}
