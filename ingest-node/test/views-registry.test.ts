// The views registry (views/registry.ts) on a real folder: load at start,
// reload on change (fs.watch, and the kubelet's `..data` symlink swap), bad
// files refused with the previous version kept, removals, name conflicts,
// and which version applies to a segment sealed when (viewsAt).
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import type { Clock } from '../src/clock.ts';
import type { Logger } from '../src/log.ts';
import { compileView, createParquetDb, type ParquetDb } from '../src/views/index.ts';
import {
  openViewRegistry,
  parseViewFile,
  type ReloadResult,
  type ViewRegistry,
} from '../src/views/registry.ts';
import { PAGE_VIEWS_YAML } from './fixtures/page-views.ts';

const PAGE_VIEWS = PAGE_VIEWS_YAML;
const CLICKS_V1 = `name: clicks
columns:
  - { name: event, type: VARCHAR, path: $.event }
filter: "event = 'click'"
`;
const CLICKS_V2 = CLICKS_V1.replace("'click'", "'click' OR event = 'tap'");
const MALICIOUS = CLICKS_V1.replace("event = 'click'", "read_text('/etc/passwd') IS NOT NULL");

let db: ParquetDb;
let dir: string;
let reg: ViewRegistry | undefined;
let metrics: Registry;
let nowMs = 1_000_000;
const clock: Clock = {
  nowMs: () => nowMs,
  nowMicros: () => BigInt(nowMs) * 1000n,
  monotonicMs: () => nowMs,
};
const logged: { level: string; obj: object; msg: string | undefined }[] = [];
const log: Logger = {
  debug: () => {},
  info: (obj, msg) => logged.push({ level: 'info', obj, msg }),
  warn: (obj, msg) => logged.push({ level: 'warn', obj, msg }),
  error: (obj, msg) => logged.push({ level: 'error', obj, msg }),
};
let waiters: { pred: (r: ReloadResult) => boolean; resolve: (r: ReloadResult) => void }[] = [];

function onReload(r: ReloadResult): void {
  for (const w of [...waiters])
    if (w.pred(r)) {
      waiters = waiters.filter((x) => x !== w);
      w.resolve(r);
    }
}

/** The next reload the watcher (or the re-scan) does that satisfies `pred`, within a deadline. */
function nextReload(
  what: string,
  pred: (r: ReloadResult) => boolean,
  timeoutMs = 5_000,
): Promise<ReloadResult> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for a reload: ${what}`)), timeoutMs);
    waiters.push({
      pred,
      resolve: (r) => {
        clearTimeout(timer);
        resolve(r);
      },
    });
  });
}

async function open(reloadIntervalMs = 60_000, watch = true): Promise<ViewRegistry> {
  reg = await openViewRegistry({
    dir,
    reloadIntervalMs,
    watch,
    compile: (spec) => db.withConnection((c) => compileView(c, spec)),
    clock,
    log,
    registry: metrics,
    onReload,
  });
  return reg;
}

async function errorsMetric(): Promise<number> {
  const m = await metrics.getSingleMetric('landfall_view_reload_errors_total')?.get();
  return m?.values[0]?.value ?? 0;
}

const names = (views: readonly { spec: { name: string } }[]): string[] => views.map((v) => v.spec.name);

before(async () => {
  db = await createParquetDb({ memoryLimitBytes: 64 * 1024 * 1024, threads: 1 });
});
after(async () => {
  await db.close();
});
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'lf-views-reg-'));
  metrics = new Registry();
  logged.length = 0;
  waiters = [];
  nowMs = 1_000_000;
});
afterEach(async () => {
  reg?.close();
  reg = undefined;
  await rm(dir, { recursive: true, force: true });
});

void describe('parseViewFile', () => {
  void test('one view, a list of views, an empty file; per-view errors keep the name', () => {
    assert.equal(parseViewFile('a.yaml', PAGE_VIEWS).length, 1);
    const list = parseViewFile(
      'b.json',
      JSON.stringify([{ name: 'x', columns: [{ name: 'a', type: 'INT', path: '$.a' }] }]),
    );
    assert.equal(list.length, 1);
    assert.equal(list[0]!.ok, false);
    if (!list[0]!.ok) {
      assert.equal(list[0]!.name, 'x');
      assert.equal(list[0]!.error.code, 'type_invalid');
      assert.equal(list[0]!.error.path, '[0].columns[0].type');
    }
    assert.deepEqual(parseViewFile('c.yaml', ''), []);
    assert.throws(() => parseViewFile('d.yaml', 'name: [unclosed'), { code: 'yaml_invalid' });
  });
});

void describe('views registry', () => {
  void test('loads every view file at start (yaml, yml, json list); dot files and other names are ignored', async () => {
    await writeFile(path.join(dir, 'page_views.yaml'), PAGE_VIEWS);
    await writeFile(path.join(dir, 'clicks.yml'), CLICKS_V1);
    await writeFile(
      path.join(dir, 'more.json'),
      JSON.stringify([{ name: 'raw_events', columns: [{ name: 'doc', type: 'JSON', path: '$' }] }]),
    );
    await writeFile(path.join(dir, '.hidden.yaml'), CLICKS_V1.replace('clicks', 'hidden'));
    await writeFile(path.join(dir, 'README.md'), '# not a view');
    const r = await open();
    assert.deepEqual(names(r.current()), ['clicks', 'page_views', 'raw_events']);
    // Loaded at start: they apply to every segment still pending, however old.
    assert.deepEqual(names(r.viewsAt(0)), ['clicks', 'page_views', 'raw_events']);
    assert.equal(r.reloadErrorsTotal, 0);
    const status = r.status()['views'] as { loaded: { name: string; since: string }[] };
    assert.deepEqual(
      status.loaded.map((v) => [v.name, v.since]),
      [
        ['clicks', 'start'],
        ['page_views', 'start'],
        ['raw_events', 'start'],
      ],
    );
    assert.ok(logged.some((l) => l.msg === 'views loaded'));
  });

  void test('a bad file at start is refused (logged, counted); the good ones load', async () => {
    await writeFile(path.join(dir, 'page_views.yaml'), PAGE_VIEWS);
    await writeFile(path.join(dir, 'broken.yaml'), 'name: broken\ncolumns: 3\n');
    const r = await open();
    assert.deepEqual(names(r.current()), ['page_views']);
    assert.equal(r.reloadErrorsTotal, 1);
    assert.equal(await errorsMetric(), 1);
    const e = logged.find((l) => l.level === 'error');
    assert.equal((e?.obj as { file?: string }).file, 'broken.yaml');
    assert.equal((e?.obj as { code?: string }).code, 'spec_invalid');
  });

  void test('an edit is picked up by the watcher; the new version applies to segments sealed after it', async () => {
    await writeFile(path.join(dir, 'clicks.yaml'), CLICKS_V1);
    const r = await open();
    const v1 = r.current()[0]!;
    nowMs = 2_000_000;
    const reloaded = nextReload('clicks v2', (x) => x.applied.includes('clicks'));
    await writeFile(path.join(dir, 'clicks.yaml'), CLICKS_V2);
    await reloaded;
    const v2 = r.current()[0]!;
    assert.notEqual(v2.specHash, v1.specHash);
    assert.equal(r.viewsAt(1_999_999)[0]!.specHash, v1.specHash, 'sealed before the change: v1');
    assert.equal(r.viewsAt(2_000_000)[0]!.specHash, v2.specHash, 'sealed at or after: v2');
    assert.ok(logged.some((l) => l.msg === 'views reloaded'));
  });

  void test('a bad edit (malicious expression, broken YAML) is refused and the previous version keeps running', async () => {
    await writeFile(path.join(dir, 'clicks.yaml'), CLICKS_V1);
    const r = await open();
    const v1 = r.current()[0]!.specHash;
    nowMs = 2_000_000;
    let refused = nextReload('malicious refused', (x) => x.errors.length > 0);
    await writeFile(path.join(dir, 'clicks.yaml'), MALICIOUS);
    let res = await refused;
    assert.equal(res.errors[0]!.code, 'expr_function_denied');
    assert.equal(res.errors[0]!.view, 'clicks');
    assert.deepEqual(res.applied, []);
    assert.equal(r.current()[0]!.specHash, v1);
    assert.equal(r.viewsAt(3_000_000)[0]!.specHash, v1);
    refused = nextReload('broken yaml refused', (x) => x.errors.length > 0);
    await writeFile(path.join(dir, 'clicks.yaml'), 'name: clicks\n  columns: [');
    res = await refused;
    assert.equal(res.errors[0]!.code, 'yaml_invalid');
    assert.equal(r.current()[0]!.specHash, v1);
    assert.equal(await errorsMetric(), 2);
    const refusals = logged.filter((l) => l.level === 'error');
    assert.equal(refusals.length, 2);
    assert.match(refusals[0]!.msg ?? '', /previous version of the view keeps running/);
    // A periodic re-scan of the same bad content does not log (or count) it again.
    await r.reload();
    assert.equal(await errorsMetric(), 2);
    // Fixed: applied.
    const fixed = nextReload('fixed', (x) => x.applied.includes('clicks'));
    await writeFile(path.join(dir, 'clicks.yaml'), CLICKS_V2);
    await fixed;
    assert.notEqual(r.current()[0]!.specHash, v1);
  });

  void test('a ConfigMap update (the kubelet swaps the ..data symlink) is picked up', async () => {
    // The kubelet's layout: ..<timestamp>/ holds the files, ..data points at
    // it, and each visible name is a symlink through ..data.
    const v1dir = path.join(dir, '..2026_11_26_10_00_00.1');
    await mkdir(v1dir);
    await writeFile(path.join(v1dir, 'clicks.yaml'), CLICKS_V1);
    await symlink(path.basename(v1dir), path.join(dir, '..data'));
    await symlink(path.join('..data', 'clicks.yaml'), path.join(dir, 'clicks.yaml'));
    const r = await open();
    const v1 = r.current()[0]!.specHash;
    nowMs = 2_000_000;
    const swapped = nextReload('swap', (x) => x.applied.includes('clicks'));
    const v2dir = path.join(dir, '..2026_11_26_10_05_00.2');
    await mkdir(v2dir);
    await writeFile(path.join(v2dir, 'clicks.yaml'), CLICKS_V2);
    await symlink(path.basename(v2dir), path.join(dir, '..data_tmp'));
    await rename(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
    await rm(v1dir, { recursive: true });
    await swapped;
    assert.notEqual(r.current()[0]!.specHash, v1);
    assert.deepEqual(names(r.current()), ['clicks']);
  });

  void test('the periodic re-scan catches what the watcher missed', async () => {
    await writeFile(path.join(dir, 'clicks.yaml'), CLICKS_V1);
    // No watcher: only the interval can see this one.
    const r = await open(100, false);
    const seen = nextReload('re-scan', (x) => x.applied.includes('page_views'));
    await writeFile(path.join(dir, 'page_views.yaml'), PAGE_VIEWS);
    await seen;
    assert.deepEqual(names(r.current()), ['clicks', 'page_views']);
  });

  void test('a removed file removes its views for segments sealed after; a new file adds views from now on', async () => {
    await writeFile(path.join(dir, 'clicks.yaml'), CLICKS_V1);
    await writeFile(path.join(dir, 'page_views.yaml'), PAGE_VIEWS);
    const r = await open();
    nowMs = 2_000_000;
    const gone = nextReload('removal', (x) => x.removed.includes('clicks'));
    await unlink(path.join(dir, 'clicks.yaml'));
    await gone;
    assert.deepEqual(names(r.current()), ['page_views']);
    assert.deepEqual(names(r.viewsAt(1_999_999)), ['clicks', 'page_views']);
    assert.deepEqual(names(r.viewsAt(2_000_000)), ['page_views']);
    nowMs = 3_000_000;
    const added = nextReload('addition', (x) => x.applied.includes('clicks'));
    await writeFile(path.join(dir, 'again.yaml'), CLICKS_V2);
    await added;
    assert.deepEqual(names(r.viewsAt(2_500_000)), ['page_views']);
    assert.deepEqual(names(r.viewsAt(3_000_000)), ['clicks', 'page_views']);
    // A view that never existed before applies from when it was added, not to older segments.
    nowMs = 4_000_000;
    const fresh = nextReload('a new view', (x) => x.applied.includes('raw_events'));
    await writeFile(
      path.join(dir, 'raw.yaml'),
      'name: raw_events\ncolumns:\n  - { name: doc, type: JSON, path: $ }\n',
    );
    await fresh;
    assert.deepEqual(names(r.viewsAt(3_999_999)), ['clicks', 'page_views']);
    assert.deepEqual(names(r.viewsAt(4_000_000)), ['clicks', 'page_views', 'raw_events']);
  });

  void test('two files defining one view: the one that had it keeps it, the newcomer is refused', async () => {
    await writeFile(path.join(dir, 'b.yaml'), CLICKS_V1);
    const r = await open();
    const v1 = r.current()[0]!.specHash;
    const refused = nextReload('conflict', (x) => x.errors.some((e) => e.code === 'name_conflict'));
    await writeFile(path.join(dir, 'a.yaml'), CLICKS_V2);
    const res = await refused;
    assert.equal(res.errors[0]!.file, 'a.yaml');
    assert.equal(r.current()[0]!.specHash, v1);
  });

  void test('a missing folder is no views (with a warning) until it appears', async () => {
    await rm(dir, { recursive: true });
    const r = await open(100);
    assert.deepEqual(r.current(), []);
    assert.ok(logged.some((l) => l.level === 'warn' && /does not exist/.test(l.msg ?? '')));
    const appeared = nextReload('folder appears', (x) => x.applied.includes('clicks'));
    await mkdir(dir);
    await writeFile(path.join(dir, 'clicks.yaml'), CLICKS_V1);
    await appeared;
    assert.deepEqual(names(r.current()), ['clicks']);
  });
});
