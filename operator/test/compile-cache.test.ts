// The View compile cache: a spec error belongs to a generation and is cached;
// an infrastructure error (the compiler throws, DuckDB does not start) is not
// cached, rejects, and never takes a View out of an Endpoint's config; the
// last generation that compiled stays until a newer one does.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import type { CompileResult } from '../src/adapters/view-compiler.ts';
import { createNodeViewCompiler } from '../src/adapters/view-compiler.ts';
import type { View } from '../src/api/view.ts';
import { CompilerUnavailableError, ViewCompileCache, compileEndpointViews } from '../src/controller/views.ts';

const view = (name: string, generation: number, filter = "event = 'x'"): View => ({
  apiVersion: 'landfall.dev/v1alpha1',
  kind: 'View',
  metadata: { name, namespace: 'tenant-a', uid: `uid-${name}`, generation },
  spec: {
    endpointRef: { name: 'clicks' },
    columns: [{ name: 'event', type: 'VARCHAR', path: '$.event' }],
    filter,
  },
});

/** A compiler whose answers the test scripts: 'ok', 'bad' (spec error) or 'throw'. */
function scripted() {
  const calls: string[] = [];
  let mode: 'ok' | 'bad' | 'throw' = 'ok';
  const compile = async (name: string, spec: View['spec']): Promise<CompileResult> => {
    calls.push(`${name}:${spec.filter ?? ''}:${mode}`);
    if (mode === 'throw') throw new Error('DuckDB failed to start');
    if (mode === 'bad') return { ok: false, error: `bad filter ${spec.filter ?? ''}` };
    return { ok: true, view: { name, spec: { name } as never, specHash: `h-${spec.filter ?? ''}` } };
  };
  return {
    compile,
    calls,
    set: (m: typeof mode) => {
      mode = m;
    },
  };
}

void test('a spec error is cached per generation; an infrastructure error is not', async () => {
  const c = scripted();
  const cache = new ViewCompileCache(c.compile);
  c.set('bad');
  assert.equal((await cache.compile(view('a', 1))).ok, false);
  assert.equal((await cache.compile(view('a', 1))).ok, false);
  assert.equal(c.calls.length, 1, 'the spec error of generation 1 is remembered');

  c.set('throw');
  await assert.rejects(cache.compile(view('a', 2)), CompilerUnavailableError);
  await assert.rejects(cache.compile(view('a', 2)), /compiler unavailable: DuckDB failed to start/);
  assert.equal(c.calls.length, 3, 'each attempt asks the compiler again');
  c.set('ok');
  assert.equal((await cache.compile(view('a', 2))).ok, true, 'recovers once the compiler works');
});

void test('an infrastructure error rejects the whole Endpoint config instead of shrinking it', async () => {
  const c = scripted();
  const cache = new ViewCompileCache(c.compile);
  const views = [view('a', 1), view('b', 1)];
  assert.deepEqual((await compileEndpointViews(cache, views)).compiled.map((v) => v.name).sort(), ['a', 'b']);
  c.set('throw');
  await assert.rejects(
    compileEndpointViews(cache, [view('a', 1), view('b', 2, "event = 'y'")]),
    CompilerUnavailableError,
  );
});

void test('the last good generation stays in the config while a newer one fails to compile', async () => {
  const c = scripted();
  const cache = new ViewCompileCache(c.compile);
  await compileEndpointViews(cache, [view('a', 1)]);
  c.set('bad');
  const r = await compileEndpointViews(cache, [view('a', 2, 'broken(')]);
  assert.deepEqual(
    r.compiled.map((v) => v.specHash),
    ["h-event = 'x'"],
    'generation 1 is still served',
  );
  assert.deepEqual(r.stale.get('a'), { generation: 1, message: 'bad filter broken(' });
  assert.equal(r.excluded.size, 0);
  // A View that never compiled is excluded as before.
  const fresh = await compileEndpointViews(cache, [view('new', 1, 'broken(')]);
  assert.equal(fresh.compiled.length, 0);
  assert.equal(fresh.excluded.get('new')?.reason, 'CompileFailed');
  // The fix replaces it.
  c.set('ok');
  const fixed = await compileEndpointViews(cache, [view('a', 3, "event = 'z'")]);
  assert.deepEqual(
    fixed.compiled.map((v) => v.specHash),
    ["h-event = 'z'"],
  );
  assert.equal(fixed.stale.size, 0);
});

void test('a new cache (an operator restart) takes the last good generation from its seed, asked once per generation', async () => {
  const c = scripted();
  const first = new ViewCompileCache(c.compile);
  const served = (await compileEndpointViews(first, [view('a', 1)])).compiled;
  assert.deepEqual(served[0]?.source, { uid: 'uid-a', generation: 1, specHash: "h-event = 'x'" });
  const asked: string[] = [];
  let seedFails = false;
  const cache = new ViewCompileCache(c.compile, {
    seed: async (v) => {
      asked.push(`${v.metadata.name ?? ''}/${v.metadata.generation ?? 0}`);
      if (seedFails) throw new Error('configmaps "clicks-ingest-views" is forbidden');
      return v.metadata.name === 'a' && served[0] ? { generation: 1, view: served[0] } : undefined;
    },
  });
  c.set('bad');
  seedFails = true;
  await assert.rejects(
    compileEndpointViews(cache, [view('a', 2, 'broken(')]),
    /forbidden/,
    'an unreadable seed fails the config instead of shrinking it',
  );
  seedFails = false;
  const r = await compileEndpointViews(cache, [view('a', 2, 'broken('), view('b', 1, 'broken(')]);
  assert.deepEqual(
    r.compiled.map((v) => [v.specHash, v.source?.generation]),
    [["h-event = 'x'", 1]],
  );
  assert.deepEqual(r.stale.get('a'), { generation: 1, message: 'bad filter broken(' });
  assert.equal(r.excluded.get('b')?.reason, 'CompileFailed', 'nothing recorded for b: excluded');
  await compileEndpointViews(cache, [view('a', 2, 'broken('), view('b', 1, 'broken(')]);
  assert.deepEqual(asked, ['a/2', 'a/2', 'b/1'], 'a found once, b not found once: neither asked again');
});

const compiler = createNodeViewCompiler({
  openDb: async (v) => {
    opens++;
    if (opens === 1) throw new Error('duckdb: cannot allocate memory');
    return v.createParquetDb({ memoryLimitBytes: 64 * 1024 * 1024, threads: 1 });
  },
});
let opens = 0;
after(() => compiler.close());

void test('a DuckDB that failed to start is started again on the next compile', async () => {
  const cache = new ViewCompileCache(compiler.compile);
  const v = view('page-views', 1, "event = 'page_view'");
  await assert.rejects(cache.compile(v), /compiler unavailable: duckdb: cannot allocate memory/);
  const r = await cache.compile(v);
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(opens, 2);
});
