// Compiling Views, shared by both controllers: the View controller reports
// the result, the Endpoint controller writes the views that compiled into its
// ConfigMap. Results are cached per (uid, generation): a spec does not change
// without its generation changing, and compiling may be costly (DuckDB).
import type { View } from '../api/view.ts';
import { viewOutputName, withViewDefaults } from '../api/view.ts';
import type { CompileResult, CompiledView, ViewCompiler } from '../adapters/view-compiler.ts';

export class ViewCompileCache {
  private readonly compiler: ViewCompiler;
  private readonly maxEntries: number;
  private readonly entries = new Map<string, Promise<CompileResult>>();

  constructor(compiler: ViewCompiler, maxEntries = 2048) {
    this.compiler = compiler;
    this.maxEntries = maxEntries;
  }

  compile(view: View): Promise<CompileResult> {
    const key = `${view.metadata.uid ?? view.metadata.name}/${view.metadata.generation ?? 0}`;
    let result = this.entries.get(key);
    if (!result) {
      result = this.run(view);
      this.entries.set(key, result);
      while (this.entries.size > this.maxEntries) {
        const oldest = this.entries.keys().next().value;
        if (oldest === undefined) break;
        this.entries.delete(oldest);
      }
    }
    return result;
  }

  private async run(view: View): Promise<CompileResult> {
    try {
      return await this.compiler(viewOutputName(view), withViewDefaults(view.spec));
    } catch (err) {
      return { ok: false, error: (err as Error).message };
    }
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
}

export async function compileEndpointViews(
  cache: ViewCompileCache,
  views: readonly View[],
): Promise<EndpointViews> {
  const compiled: CompiledView[] = [];
  const excluded: EndpointViews['excluded'] = new Map();
  const owners = new Map<string, string>();
  for (const v of views) {
    const name = v.metadata.name ?? '';
    const result = await cache.compile(v);
    if (!result.ok) {
      excluded.set(name, { reason: 'CompileFailed', message: result.error });
      continue;
    }
    const owner = owners.get(result.view.name);
    if (owner !== undefined) {
      excluded.set(name, {
        reason: 'DuplicateName',
        message: `view name '${result.view.name}' is already used by View ${owner} on this Endpoint`,
      });
      continue;
    }
    owners.set(result.view.name, name);
    compiled.push(result.view);
  }
  return { compiled, excluded };
}
