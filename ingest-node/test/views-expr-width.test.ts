// Issue 14: view functions whose result length is an argument (lpad, rpad,
// format, printf) allocate each row's result outside DuckDB's memory_limit,
// so `lpad(x, 100000000, 'a')` in a filter could exhaust the node on every
// segment, after every restart. They take only a constant width within
// EXPR_WIDTH_MAX, checked when the view loads; and a child process proves a
// view at that bound stays small while the hostile one never runs.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EXPR_WIDTH_MAX, formatWidths } from '../src/views/expr.ts';
import { ViewError, checkExpression, createParquetDb } from '../src/views/index.ts';
import type { ParquetDb } from '../src/views/index.ts';

let db: ParquetDb;
before(async () => {
  db = await createParquetDb({ memoryLimitBytes: 64 << 20, threads: 1 });
});
after(async () => {
  await db.close();
});

const COLUMNS = new Set(['event', 'n']);
const check = (text: string) => db.withConnection((c) => checkExpression(c, text, COLUMNS, 'filter'));

void test('a width, pad length or format width that is not a constant within the bound is refused at load', async () => {
  const refused: [string, RegExp][] = [
    ["length(lpad(event, 100000000, 'a')) > 0", /lpad\(\): argument 2 must be a constant integer 0\.\.1024/],
    ["length(rpad(event, 1025, 'a')) > 0", /rpad\(\)/],
    ["length(lpad(event, n, 'a')) > 0", /lpad\(\): argument 2 must be a constant/],
    ["length(lpad(event, 10 * 1000, 'a')) > 0", /lpad\(\)/],
    ["length(lpad(event, CAST(10 AS BIGINT), 'a')) > 0", /lpad\(\)/],
    ["length(format('{:>100000000}', event)) > 0", /format\(\): width or precision 100000000 is over 1024/],
    ["length(format('{:>{}}', event, n)) > 0", /format\(\): a width or precision taken from an argument/],
    ['length(format(event, n)) > 0', /format\(\): the format string must be a constant/],
    ["length(printf('%100000000d', n)) > 0", /printf\(\): width or precision 100000000/],
    ["length(printf('%.5000f', n)) > 0", /printf\(\): width or precision 5000/],
    ["length(printf('%*d', n, n)) > 0", /printf\(\): a width or precision taken from an argument/],
    ["length(printf('%-0+.*f', n, n)) > 0", /printf\(\)/],
  ];
  for (const [text, message] of refused) {
    await assert.rejects(
      check(text),
      (err: unknown) => err instanceof ViewError && err.code === 'expr_width' && message.test(err.message),
      text,
    );
  }
});

void test('a function that can multiply its input (replace, regexp_replace, array_to_string) over a constant is refused at load: it would be evaluated there, unbounded', async () => {
  let nested = "'a'";
  for (let i = 0; i < 9; i++) nested = `replace(${nested}, 'a', 'aaaaaaaaaa')`; // 10^9 bytes if evaluated
  const refused = [
    `length(${nested}) > 0`,
    "length(regexp_replace('a', '.', 'aaaaaaaaaa', 'g')) > 0",
    "length(array_to_string(string_split('aaaa', ''), 'bbbbbbbbbb')) > 0",
    "event = replace(event, 'x', replace('y', 'y', 'yyyyyyyyyy'))",
  ];
  for (const text of refused) {
    await assert.rejects(
      check(text),
      (err: unknown) =>
        err instanceof ViewError && err.code === 'expr_width' && /must read a column/.test(err.message),
      text,
    );
  }
  // Over a column they run per row, in a Parquet child under its address-space limit.
  for (const text of [
    "replace(event, 'a', 'b') = 'x'",
    "regexp_replace(lower(event), '[^a-z]', '', 'g') <> ''",
    "array_to_string(string_split(event, '/'), '.') <> ''",
  ])
    await check(text);
});

void test('ordinary widths pass', async () => {
  for (const text of [
    "lpad(event, 10, '0') = 'x'",
    `length(rpad(event, ${EXPR_WIDTH_MAX}, ' ')) > 0`,
    "format('{}-{:>8}-{:.3f}', event, n, 1.5) <> ''",
    "format('{{literal}} {}', event) <> ''",
    "printf('%05d %s %%', n, event) <> ''",
    "printf('%-10.2f', 1.5) <> ''",
  ])
    await check(text);
  assert.deepEqual(formatWidths('fmt', '{0:*^20.3}{{99999}}'), [20, 3]);
  assert.deepEqual(formatWidths('printf', '%1$08.3f %%99999d'), [8, 3]);
});

const child = fileURLToPath(new URL('./fixtures/view-rss-child.ts', import.meta.url));

/** The child's resident set, from /proc (Linux). */
function rssBytes(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * Runs the child, watching its RSS from outside: past `killAboveBytes` it is
 * killed (so a hostile expression that gets through fails the test instead
 * of exhausting a shared machine). Address-space limits (ulimit -v) do not
 * work here: V8 and DuckDB reserve far more than they use.
 */
function runChild(
  filter: string,
  records: number,
  killAboveBytes = 2 * 2 ** 30,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [child, filter, String(records)], {
      cwd: path.dirname(child),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let peak = 0;
    const watch = setInterval(() => {
      peak = Math.max(peak, rssBytes(p.pid ?? 0));
      if (peak > killAboveBytes) p.kill('SIGKILL');
    }, 20);
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('error', reject);
    p.on('exit', (code, signal) => {
      clearInterval(watch);
      const line = out.trim().split('\n').pop() ?? '';
      try {
        resolve({ ...(JSON.parse(line) as Record<string, unknown>), watchedPeakRssBytes: peak });
      } catch {
        reject(
          new Error(
            `child exited ${code ?? signal} (peak RSS seen ${peak} bytes): ${out}\n${err.slice(-2000)}`,
          ),
        );
      }
    });
  });
}

void test('node memory: a hostile width never runs; a view at the bound over 20,000 2 KiB records stays far under 1 GiB of RSS', async () => {
  // Before the bound this loaded and, per 2,048-row vector, asked for ~2 GB
  // of strings the memory_limit (256 MiB here) does not see: the child was
  // killed at 2 GiB of RSS.
  const hostile = await runChild("length(lpad(pad, 1000000, 'x')) > 0", 20_000);
  assert.equal(hostile['refused'], 'expr_width', JSON.stringify(hostile));

  const bounded = await runChild(
    `length(lpad(pad, ${EXPR_WIDTH_MAX}, 'x')) + length(format('{:>${EXPR_WIDTH_MAX}}', event)) + length(printf('%${EXPR_WIDTH_MAX}s', event)) > 0`,
    20_000,
  );
  assert.equal(bounded['viewRows'], 20_000, JSON.stringify(bounded));
  const rss = Number(bounded['maxRssBytes']);
  console.log(`peak RSS of the child at the width bound: ${(rss / 2 ** 20).toFixed(0)} MiB`);
  assert.ok(rss < 1024 * 2 ** 20, `peak RSS ${rss} bytes`);
});
