// The views a node applies, from a folder of view files (`views.dir`; in
// Kubernetes a mounted ConfigMap). Loaded at start, reloaded on change:
// fs.watch on the folder (the kubelet updates a ConfigMap by swapping the
// `..data` symlink, which shows up as an event on the folder, never on the
// file names we read through) plus a periodic re-scan, because watches miss
// events on some volumes.
//
// A file that does not parse, or a view that does not validate or compile,
// is refused: logged once per content, counted in
// landfall_view_reload_errors_total, and the previous version of that view
// (if any) keeps running. A reload never takes a good view away because a
// neighbour is bad.
//
// Changes apply to segments sealed after them (DESIGN §6): every view keeps a
// short history of versions with the wall-clock time they took effect, and
// the Parquet producer asks for the views in force at a segment's seal time
// (viewsAt). The versions loaded at start apply to everything still pending
// (the history is memory only). `landfall reprocess` rebuilds older segments.
import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import yaml from 'js-yaml';
import { Counter, Gauge, type Registry } from 'prom-client';
import { systemClock, type Clock } from '../clock.ts';
import { silentLogger, type Logger } from '../log.ts';
import type { CompiledView } from './compile.ts';
import { isViewError, ViewError, ViewErrorCode } from './errors.ts';
import { validateView, type ViewSpec } from './spec.ts';
import { viewFileBytesMax, viewsCountMax } from './settings.ts';

/** What the registry accepts as a view file; dot files are the kubelet's machinery (`..data`). */
export const VIEW_FILE_PATTERN = /^[^.].*\.(ya?ml|json)$/;
/** Versions kept per view: enough to cover the segments a pipeline has in flight after a burst of edits. */
export const VIEW_VERSIONS_MAX = 16;
/** Files in the folder beyond which the rest are ignored (and reported): bounds each scan. */
export const VIEW_FILES_MAX = 256;
/** Editors and the kubelet produce bursts of events: one scan per burst. */
const DEBOUNCE_MS = 100;

export interface ViewVersion {
  readonly name: string;
  /** Undefined: the view was removed at `sinceMs`. */
  readonly compiled: CompiledView | undefined;
  /** The file it came from (base name). */
  readonly file: string;
  /** Wall-clock ms from which sealed segments use it; -Infinity for the versions loaded at start. */
  readonly sinceMs: number;
}

export interface ViewLoadError {
  readonly file: string;
  /** The view's name when it could be read from the file. */
  readonly view: string | undefined;
  /** A ViewError code, or `file_unreadable` / `name_conflict` / `too_many_views`. */
  readonly code: string;
  readonly path: string;
  readonly message: string;
}

export interface ReloadResult {
  /** Views added or changed by this scan (their new versions apply from now on). */
  readonly applied: readonly string[];
  readonly removed: readonly string[];
  /** Problems found in files that changed since the last scan (already logged). */
  readonly errors: readonly ViewLoadError[];
}

export interface ViewRegistryOptions {
  readonly dir: string;
  /** Compiles a validated spec (the node's DuckDB instance); throws ViewError for a bad expression. */
  readonly compile: (spec: ViewSpec) => Promise<CompiledView>;
  readonly reloadIntervalMs: number;
  /** Watch the folder (default true); off, only the periodic re-scan sees changes. */
  readonly watch?: boolean;
  readonly clock?: Clock;
  readonly log?: Logger;
  /** landfall_view_* metrics go here. */
  readonly registry?: Registry;
  /** Observes every scan that changed something or found a problem (tests). Must not throw. */
  readonly onReload?: (result: ReloadResult) => void;
}

export interface ViewRegistry {
  readonly dir: string;
  /** The views in force now. */
  current(): readonly CompiledView[];
  /** The views in force for a segment sealed at `sealedAtMs` (wall clock). */
  viewsAt(sealedAtMs: number): readonly CompiledView[];
  /** Every version still remembered, oldest first per view. */
  versions(): readonly ViewVersion[];
  /** Scans the folder now (scans never overlap; a call during one waits for the next). */
  reload(): Promise<ReloadResult>;
  /** The /v1/status section. */
  status(): Record<string, unknown>;
  readonly reloadErrorsTotal: number;
  close(): void;
}

interface FileState {
  /** sha256 of the content last read (a refused content is not re-parsed until it changes). */
  readonly hash: string;
  /** View names this file defined when last read successfully (or as far as it could be read). */
  readonly names: readonly string[];
}

interface ReadFile {
  readonly hash: string;
  readonly text: string;
  /** Why the content cannot be used at all (too big). */
  readonly problem?: string;
}

type Candidate =
  | { readonly ok: true; readonly spec: ViewSpec }
  | { readonly ok: false; readonly name: string | undefined; readonly error: ViewLoadError };

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function errorFields(err: unknown): { code: string; path: string; message: string } {
  if (isViewError(err)) return { code: err.code, path: err.path, message: err.message };
  return { code: 'compile_failed', path: '', message: err instanceof Error ? err.message : String(err) };
}

function nameOf(obj: unknown): string | undefined {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return undefined;
  const n = (obj as Record<string, unknown>)['name'];
  return typeof n === 'string' && /^[a-z_][a-z0-9_]{0,62}$/.test(n) ? n : undefined;
}

/**
 * Parses one view file: a single view spec, or a list of them (the operator
 * renders a list). Throws ViewError (yaml_invalid) when the file itself is
 * unusable; per-view problems come back as failed candidates.
 */
export function parseViewFile(file: string, text: string): Candidate[] {
  if (Buffer.byteLength(text) > viewFileBytesMax)
    throw new ViewError(ViewErrorCode.yamlInvalid, '', `a view file is at most ${viewFileBytesMax} bytes`);
  let doc: unknown;
  try {
    // JSON_SCHEMA: no YAML timestamps or other implicit types (as parseViewYaml).
    doc = yaml.load(text, { schema: yaml.JSON_SCHEMA, json: false });
  } catch (err) {
    throw new ViewError(
      ViewErrorCode.yamlInvalid,
      '',
      (err as Error).message.split('\n')[0] ?? 'invalid YAML',
      { cause: err },
    );
  }
  if (doc === undefined || doc === null) return [];
  const items = Array.isArray(doc) ? doc : [doc];
  return items.map((item, i): Candidate => {
    const prefix = Array.isArray(doc) ? `[${i}]` : '';
    try {
      return { ok: true, spec: validateView(item) };
    } catch (err) {
      const f = errorFields(err);
      return {
        ok: false,
        name: nameOf(item),
        error: {
          file,
          view: nameOf(item),
          code: f.code,
          path: prefix && f.path ? `${prefix}.${f.path}` : prefix || f.path,
          message: f.message,
        },
      };
    }
  });
}

class FolderViewRegistry implements ViewRegistry {
  readonly dir: string;
  readonly #o: ViewRegistryOptions;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #files = new Map<string, FileState>();
  /** Per view name, versions oldest first; the last is in force now. */
  readonly #versions = new Map<string, ViewVersion[]>();
  /** Views whose oldest versions were dropped (VIEW_VERSIONS_MAX). */
  readonly #pruned = new Set<string>();
  #scan: Promise<ReloadResult> | undefined;
  #again: Promise<ReloadResult> | undefined;
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #closed = false;
  #started = false;
  #dirMissingLogged = false;
  /** Files (and '*' for "too many") already reported as unreadable: said once, not every scan. */
  readonly #unreadable = new Set<string>();
  #errorsTotal = 0;
  #reloadsTotal = 0;
  #lastError: (ViewLoadError & { atMs: number }) | undefined;
  #errorCounter: Counter | undefined;

  constructor(o: ViewRegistryOptions) {
    this.dir = path.resolve(o.dir);
    this.#o = o;
    this.#clock = o.clock ?? systemClock;
    this.#log = o.log ?? silentLogger;
    if (o.registry !== undefined) this.#registerMetrics(o.registry);
  }

  get reloadErrorsTotal(): number {
    return this.#errorsTotal;
  }

  current(): readonly CompiledView[] {
    const out: CompiledView[] = [];
    for (const list of this.#versions.values()) {
      const v = list.at(-1)?.compiled;
      if (v !== undefined) out.push(v);
    }
    return out.sort((a, b) => (a.spec.name < b.spec.name ? -1 : 1));
  }

  viewsAt(sealedAtMs: number): readonly CompiledView[] {
    const out: CompiledView[] = [];
    for (const list of this.#versions.values()) {
      let pick: ViewVersion | undefined;
      for (const v of list) if (v.sinceMs <= sealedAtMs) pick = v;
      // Sealed before the first version: the view did not exist yet, unless
      // older versions were forgotten (then the oldest kept is the best guess).
      if (pick === undefined && this.#pruned.has(list[0]?.name ?? '')) pick = list[0];
      if (pick?.compiled !== undefined) out.push(pick.compiled);
    }
    return out.sort((a, b) => (a.spec.name < b.spec.name ? -1 : 1));
  }

  versions(): readonly ViewVersion[] {
    return [...this.#versions.values()].flat();
  }

  reload(): Promise<ReloadResult> {
    if (this.#scan === undefined) {
      this.#scan = this.#doScan().finally(() => {
        this.#scan = undefined;
      });
      return this.#scan;
    }
    // A scan is running and may have read the folder before the change that
    // prompted this call: queue exactly one more.
    this.#again ??= this.#scan
      .catch(() => undefined)
      .then(() => {
        this.#again = undefined;
        return this.reload();
      });
    return this.#again;
  }

  async #doScan(): Promise<ReloadResult> {
    const errors: ViewLoadError[] = [];
    const nowMs = this.#started ? this.#clock.nowMs() : -Infinity;
    const read = await this.#readFolder(errors);
    // Which files changed (new content) and which are gone.
    const changed = [...read.keys()].filter((f) => this.#files.get(f)?.hash !== read.get(f)!.hash).sort();
    const gone = [...this.#files.keys()].filter((f) => !read.has(f));
    if (changed.length === 0 && gone.length === 0 && errors.length === 0) {
      this.#started = true;
      return { applied: [], removed: [], errors: [] };
    }

    // What each file defines now. A view stays with the file that already
    // had it: unchanged files claim first, so a new file cannot take a view over.
    const defined = new Map<string, { file: string; compiled: CompiledView | 'keep' }>();
    const claim = (name: string, file: string, compiled: CompiledView | 'keep'): boolean => {
      const owner = defined.get(name);
      if (owner !== undefined && owner.file !== file) {
        errors.push({
          file,
          view: name,
          code: ViewErrorCode.nameConflict,
          path: 'name',
          message: `view '${name}' is already defined in ${owner.file}`,
        });
        return false;
      }
      defined.set(name, { file, compiled });
      return true;
    };
    const newStates = new Map<string, FileState>();
    for (const file of [...read.keys()].sort()) {
      if (changed.includes(file)) continue;
      const before = this.#files.get(file)!;
      for (const n of before.names) claim(n, file, 'keep');
      newStates.set(file, before);
    }
    for (const file of changed) {
      const r = read.get(file)!;
      const before = this.#files.get(file)?.names ?? [];
      // A view this file had keeps its current version when its new text is refused.
      const keep = (name: string, names: string[]): void => {
        if (before.includes(name) && !names.includes(name) && claim(name, file, 'keep')) names.push(name);
      };
      let candidates: Candidate[];
      try {
        if (r.problem !== undefined) throw new ViewError(ViewErrorCode.yamlInvalid, '', r.problem);
        candidates = parseViewFile(file, r.text);
      } catch (err) {
        const f = errorFields(err);
        errors.push({ file, view: undefined, code: f.code, path: f.path, message: f.message });
        const names: string[] = [];
        for (const n of before) keep(n, names);
        newStates.set(file, { hash: r.hash, names });
        continue;
      }
      const names: string[] = [];
      let unknownFailure = false;
      for (const cand of candidates) {
        if (!cand.ok) {
          errors.push(cand.error);
          if (cand.name === undefined) unknownFailure = true;
          else keep(cand.name, names);
          continue;
        }
        const spec = cand.spec;
        let compiled: CompiledView;
        try {
          compiled = await this.#o.compile(spec);
        } catch (err) {
          const f = errorFields(err);
          errors.push({ file, view: spec.name, code: f.code, path: f.path, message: f.message });
          keep(spec.name, names);
          continue;
        }
        const same = this.#activeVersion(spec.name)?.compiled?.specHash === compiled.specHash;
        if (claim(spec.name, file, same ? 'keep' : compiled)) names.push(spec.name);
      }
      // A failure we cannot attribute to a name must not silently drop the
      // file's other views: keep whatever it had and does not mention now.
      if (unknownFailure) for (const n of before) keep(n, names);
      newStates.set(file, { hash: r.hash, names });
    }

    // Apply: new versions for changed views, removals for views no file defines.
    const applied: string[] = [];
    const removed: string[] = [];
    let count = [...defined].filter(([n, d]) => d.compiled === 'keep' && this.#isActive(n)).length;
    for (const [name, d] of [...defined].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (d.compiled === 'keep') continue;
      if (count >= viewsCountMax && !this.#isActive(name)) {
        errors.push({
          file: d.file,
          view: name,
          code: 'too_many_views',
          path: '',
          message: `a node applies at most ${viewsCountMax} views; '${name}' is not loaded`,
        });
        continue;
      }
      if (!this.#isActive(name)) count++;
      this.#push({ name, compiled: d.compiled, file: d.file, sinceMs: nowMs });
      applied.push(name);
    }
    for (const name of [...this.#versions.keys()].sort()) {
      if (defined.has(name) || !this.#isActive(name)) continue;
      const last = this.#activeVersion(name)!;
      this.#push({ name, compiled: undefined, file: last.file, sinceMs: nowMs });
      removed.push(name);
    }
    this.#files.clear();
    for (const [f, s] of newStates) this.#files.set(f, s);

    for (const e of errors) {
      this.#errorsTotal++;
      this.#errorCounter?.inc();
      this.#lastError = { ...e, atMs: this.#clock.nowMs() };
      this.#log.error(
        { dir: this.dir, file: e.file, view: e.view, code: e.code, path: e.path, error: e.message },
        e.view !== undefined && this.#isActive(e.view)
          ? 'view refused; the previous version of the view keeps running'
          : 'view refused',
      );
    }
    if (applied.length > 0 || removed.length > 0) {
      this.#reloadsTotal++;
      this.#log.info(
        {
          dir: this.dir,
          applied: applied.map((n) => ({ name: n, specSha256: this.#activeVersion(n)?.compiled?.specHash })),
          removed,
          views: this.current().map((v) => v.spec.name),
        },
        this.#started ? 'views reloaded' : 'views loaded',
      );
    }
    this.#started = true;
    const result: ReloadResult = { applied, removed, errors };
    try {
      this.#o.onReload?.(result);
    } catch (err) {
      this.#log.warn({ err }, 'views onReload listener threw');
    }
    return result;
  }

  /**
   * The folder's view files: base name → content. A vanished file is gone; a
   * file that cannot be read keeps its last state and is reported once.
   */
  async #readFolder(errors: ViewLoadError[]): Promise<Map<string, ReadFile>> {
    const out = new Map<string, ReadFile>();
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((n) => VIEW_FILE_PATTERN.test(n)).sort();
      this.#dirMissingLogged = false;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        if (!this.#dirMissingLogged)
          this.#log.warn({ dir: this.dir }, 'views.dir does not exist (yet): no views until it does');
        this.#dirMissingLogged = true;
        return out;
      }
      throw err;
    }
    if (names.length > VIEW_FILES_MAX) {
      if (!this.#unreadable.has('*'))
        errors.push({
          file: names[VIEW_FILES_MAX]!,
          view: undefined,
          code: 'too_many_files',
          path: '',
          message: `views.dir holds ${names.length} view files; only the first ${VIEW_FILES_MAX} are read`,
        });
      this.#unreadable.add('*');
      names = names.slice(0, VIEW_FILES_MAX);
    } else this.#unreadable.delete('*');
    for (const name of names) {
      const full = path.join(this.dir, name);
      try {
        // stat follows the kubelet's symlinks (name -> ..data/name).
        const st = await stat(full);
        if (!st.isFile()) continue;
        if (st.size > viewFileBytesMax) {
          out.set(name, {
            hash: sha256(`oversized:${st.size}:${st.mtimeMs}`),
            text: '',
            problem: `a view file is at most ${viewFileBytesMax} bytes, this one is ${st.size}`,
          });
        } else {
          const text = await readFile(full, 'utf8');
          out.set(name, { hash: sha256(text), text });
        }
        this.#unreadable.delete(name);
      } catch (err) {
        // Mid-swap a symlink can point at a file that is no longer there: gone, not broken.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        if (!this.#unreadable.has(name))
          errors.push({
            file: name,
            view: undefined,
            code: 'file_unreadable',
            path: '',
            message: (err as Error).message,
          });
        this.#unreadable.add(name);
        const prev = this.#files.get(name);
        if (prev !== undefined) out.set(name, { hash: prev.hash, text: '' });
      }
    }
    return out;
  }

  #activeVersion(name: string): ViewVersion | undefined {
    return this.#versions.get(name)?.at(-1);
  }

  #isActive(name: string): boolean {
    return this.#activeVersion(name)?.compiled !== undefined;
  }

  #push(v: ViewVersion): void {
    const list = this.#versions.get(v.name) ?? [];
    list.push(v);
    while (list.length > VIEW_VERSIONS_MAX) {
      list.shift();
      this.#pruned.add(v.name);
    }
    this.#versions.set(v.name, list);
  }

  start(): void {
    const trigger = (): void => {
      if (this.#closed) return;
      clearTimeout(this.#debounce);
      this.#debounce = setTimeout(() => void this.#reloadQuietly(), DEBOUNCE_MS);
      this.#debounce.unref();
    };
    const watchFolder = (warn: boolean): void => {
      if (this.#o.watch === false || this.#watcher !== undefined || this.#closed) return;
      try {
        // The folder, not the files: a ConfigMap update renames `..data`, and
        // the file names are symlinks through it whose own inodes never change.
        const w = watch(this.dir, { persistent: false }, () => trigger());
        w.on('error', () => {
          w.close();
          if (this.#watcher === w) this.#watcher = undefined;
        });
        this.#watcher = w;
      } catch (err) {
        if (warn)
          this.#log.warn(
            { err, dir: this.dir },
            'cannot watch views.dir for changes; relying on the periodic re-scan',
          );
      }
    };
    watchFolder(true);
    this.#timer = setInterval(() => {
      // A folder created after start gets its watch here.
      watchFolder(false);
      void this.#reloadQuietly();
    }, this.#o.reloadIntervalMs);
    this.#timer.unref();
  }

  async #reloadQuietly(): Promise<void> {
    if (this.#closed) return;
    try {
      await this.reload();
    } catch (err) {
      this.#errorsTotal++;
      this.#errorCounter?.inc();
      this.#log.error({ err, dir: this.dir }, 'scanning views.dir failed; the current views keep running');
    }
  }

  status(): Record<string, unknown> {
    return {
      views: {
        dir: this.dir,
        loaded: this.current().map((v) => {
          const ver = this.#activeVersion(v.spec.name)!;
          return {
            name: v.spec.name,
            specSha256: v.specHash,
            file: ver.file,
            since: Number.isFinite(ver.sinceMs) ? new Date(ver.sinceMs).toISOString() : 'start',
          };
        }),
        reloadsTotal: this.#reloadsTotal,
        reloadErrorsTotal: this.#errorsTotal,
        lastError:
          this.#lastError === undefined
            ? null
            : { ...this.#lastError, at: new Date(this.#lastError.atMs).toISOString(), atMs: undefined },
      },
    };
  }

  close(): void {
    this.#closed = true;
    this.#watcher?.close();
    clearInterval(this.#timer);
    clearTimeout(this.#debounce);
  }

  #registerMetrics(registry: Registry): void {
    // A registry reused by a restarted node (tests) gets fresh collectors.
    const fresh = (name: string): string => {
      if (registry.getSingleMetric(name) !== undefined) registry.removeSingleMetric(name);
      return name;
    };
    this.#errorCounter = new Counter({
      name: fresh('landfall_view_reload_errors_total'),
      help: 'View files or views refused at load or reload (the previous version keeps running).',
      registers: [registry],
    });
    const reloads = (): number => this.#reloadsTotal;
    new Counter({
      name: fresh('landfall_view_reloads_total'),
      help: 'Scans of views.dir that changed the views in force.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(reloads());
      },
    });
    const loaded = (): number => this.current().length;
    new Gauge({
      name: fresh('landfall_views_loaded'),
      help: 'Views in force.',
      registers: [registry],
      collect() {
        this.set(loaded());
      },
    });
  }
}

/**
 * Loads the folder (a missing folder is no views, with a warning) and starts
 * watching it. Bad files at start are refused like at any reload: the node
 * starts with the views that are good.
 */
export async function openViewRegistry(options: ViewRegistryOptions): Promise<ViewRegistry> {
  const r = new FolderViewRegistry(options);
  await r.reload();
  r.start();
  return r;
}
