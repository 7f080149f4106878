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
// Across operator restarts too: the views ConfigMap is the last good output,
// and records which View generation each file came from
// (VIEW_SOURCES_ANNOTATION); a View whose current generation does not compile
// and that this process never compiled is looked up there (`seed`) before it
// would be left out.
import yaml from 'js-yaml';
import type { V1ConfigMap } from '@kubernetes/client-node';
import type { View } from '../api/view.ts';
import type { Endpoint } from '../api/endpoint.ts';
import { Resources } from '../runtime/kube.ts';
import type { KubeClient, KubeObject } from '../runtime/kube.ts';
import { VIEW_SOURCES_ANNOTATION, childNames } from '../model/names.ts';
import { viewOutputName, withViewDefaults } from '../api/view.ts';
import type { CompileResult, CompiledView, ViewCompiler, ViewSource } from '../adapters/view-compiler.ts';

/**
 * The last good generation of a View as recorded outside this process (the
 * views ConfigMap), or undefined. Rejects when it cannot be read: the caller
 * fails rather than writing a config without the View.
 */
export type LastGoodSeed = (view: View) => Promise<LastGood | undefined>;

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

/**
 * The seed from the views ConfigMap of the View's Endpoint: the file that
 * VIEW_SOURCES_ANNOTATION says came from this View's uid. Only a ConfigMap
 * owned by that Endpoint counts (the operator wrote it).
 */
export function viewsConfigMapSeed(client: KubeClient): LastGoodSeed {
  return async (view) => {
    const namespace = view.metadata.namespace ?? '';
    const endpoint = view.spec?.endpointRef?.name ?? '';
    if (namespace === '' || endpoint === '') return undefined;
    const name = childNames({ metadata: { name: endpoint, namespace } } as Endpoint).viewsConfigMap;
    const cm = await client.get<V1ConfigMap & KubeObject>(Resources.configMap, namespace, name);
    if (!cm?.metadata?.ownerReferences?.some((r) => r.kind === 'Endpoint' && r.name === endpoint))
      return undefined;
    let sources: Record<string, Partial<ViewSource>>;
    try {
      sources = JSON.parse(cm.metadata.annotations?.[VIEW_SOURCES_ANNOTATION] ?? '{}') as typeof sources;
    } catch {
      return undefined;
    }
    const uid = uidOf(view);
    for (const [file, src] of Object.entries(sources)) {
      const text = cm.data?.[file];
      if (src.uid !== uid || typeof src.generation !== 'number' || text === undefined) continue;
      const spec = yaml.load(text) as CompiledView['spec'] | undefined;
      const outputName = (spec as { name?: unknown } | undefined)?.name;
      if (typeof outputName !== 'string') continue;
      return {
        generation: src.generation,
        view: { name: outputName, spec: spec as CompiledView['spec'], specHash: src.specHash ?? '' },
      };
    }
    return undefined;
  };
}

export class ViewCompileCache {
  private readonly compiler: ViewCompiler;
  private readonly maxEntries: number;
  private readonly entries = new Map<string, Promise<CompileResult>>();
  /** View uid → the newest generation that compiled. Bounded like `entries`. */
  private readonly good = new Map<string, LastGood>();

  private readonly seed: LastGoodSeed | undefined;
  /** `uid/generation` the seed had nothing for: not asked again (bounded like `entries`). */
  private readonly unseeded = new Map<string, true>();

  constructor(compiler: ViewCompiler, opts: { maxEntries?: number; seed?: LastGoodSeed } = {}) {
    this.compiler = compiler;
    this.maxEntries = opts.maxEntries ?? 2048;
    this.seed = opts.seed;
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
          if (r.ok) this.remember(view, { generation, view: r.view });
        },
        // Not cached: the next reconcile asks the compiler again.
        () => {
          if (this.entries.get(key) === running) this.entries.delete(key);
        },
      );
    }
    return result;
  }

  /** The newest generation of this View that compiled in this process, if any (older than or equal to the current one). */
  lastGood(view: View): LastGood | undefined {
    const g = this.good.get(uidOf(view));
    return g && g.generation <= (view.metadata.generation ?? 0) ? g : undefined;
  }

  /** lastGood, else what the seed (the views ConfigMap) recorded: survives an operator restart. */
  async recall(view: View): Promise<LastGood | undefined> {
    const known = this.lastGood(view);
    if (known !== undefined || this.seed === undefined) return known;
    const generation = view.metadata.generation ?? 0;
    const key = `${uidOf(view)}/${generation}`;
    if (this.unseeded.has(key)) return undefined;
    const seeded = await this.seed(view);
    if (seeded === undefined || seeded.generation > generation) {
      this.unseeded.set(key, true);
      bound(this.unseeded, this.maxEntries);
      return undefined;
    }
    this.remember(view, seeded);
    return this.lastGood(view);
  }

  private remember(view: View, g: LastGood): void {
    const prev = this.good.get(uidOf(view));
    if (prev && prev.generation > g.generation) return;
    this.good.delete(uidOf(view));
    this.good.set(uidOf(view), g);
    bound(this.good, this.maxEntries);
  }

  private async run(view: View): Promise<CompileResult> {
    try {
      return await this.compiler(viewOutputName(view), withViewDefaults(view.spec));
    } catch (err) {
      throw new CompilerUnavailableError(view.metadata.name ?? '?', err);
    }
  }
}

export function uidOf(view: View): string {
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
    if (result.ok) view = withSource(result.view, v, v.metadata.generation ?? 0);
    else {
      const last = await cache.recall(v);
      if (!last) {
        excluded.set(name, { reason: 'CompileFailed', message: result.error });
        continue;
      }
      view = withSource(last.view, v, last.generation);
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

function withSource(compiled: CompiledView, v: View, generation: number): CompiledView {
  return { ...compiled, source: { uid: uidOf(v), generation, specHash: compiled.specHash } };
}
