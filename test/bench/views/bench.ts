// View engine benchmark (a script, not a test): 1M generated page_view-like
// events through the materialiser into a 6-column typed, day-partitioned
// view, next to the ceiling — plain DuckDB `read_ndjson` → the same Parquet on
// the same data, on the same instance. Runs alternate (view, ceiling, view…)
// so a noisy neighbour hurts both sides alike; the table shows the medians.
//
//   npm run bench:views -- [--rows 1000000] [--runs 3] [--threads 2] [--list] [--one-pass] [--csv] [--base DIR]
//
// --list adds an alternating arm: the same view compiled without the
// typed JSON reader (compileView's typedReader: false, the list extraction
// for every row), i.e. the materialiser as it was before it. --one-pass adds
// one with the typed reader but without the first pass for fine rows
// (fastPath: false): every row through the full classification. --csv adds
// one whose clean segments are read as CSV text then json_transform
// (compileView's ndjson: false), i.e. without the NDJSON records file.
// --base DIR adds one running the materialiser of another checkout of this
// repository (DIR/ingest-node/src/views/index.ts, e.g. `git worktree add DIR
// <commit>` or an extracted `git archive`, with node_modules resolvable from
// it) on this run's instance and data: a change that has no switch, before
// and after in one process.
//
// Goal (not an assertion): the materialiser at ≥ 0.8× the ceiling's rows/s.
// The materialiser's time includes loading the records from JS memory into
// DuckDB (a scratch file, parquet/records.ts); the ceiling's file is written before its clock starts.
import { mkdir, mkdtemp, rm, writeFile, readdir, stat } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type * as Views from '../../../ingest-node/src/views/index.ts';
import {
  compileView,
  createParquetDb,
  materializeSegment,
  parseViewYaml,
} from '../../../ingest-node/src/views/index.ts';
import { ceilingSql, generate, VIEW } from './data.ts';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    runs: { type: 'string', default: '3' },
    threads: { type: 'string', default: '2' },
    'memory-mb': { type: 'string', default: '2048' },
    list: { type: 'boolean', default: false },
    'one-pass': { type: 'boolean', default: false },
    csv: { type: 'boolean', default: false },
    base: { type: 'string' },
  },
});
const ROWS = Number(args.rows);
const RUNS = Math.max(3, Number(args.runs));
const THREADS = Number(args.threads);
const MEMORY_LIMIT_BYTES = Number(args['memory-mb']) * 1024 * 1024;

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(path.join(e.parentPath, e.name))).size;
  }
  return total;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function main(): Promise<void> {
  console.log(`generating ${ROWS.toLocaleString()} events…`);
  const records = generate(ROWS);
  const payloadBytes = records.reduce((s, r) => s + r.payload.byteLength, 0);
  const scratch = await mkdtemp(path.join(tmpdir(), 'lf-bench-views-'));
  const db = await createParquetDb({
    scratchDir: scratch,
    memoryLimitBytes: MEMORY_LIMIT_BYTES,
    threads: THREADS,
  });
  try {
    const compiled = await db.withConnection((c) => compileView(c, parseViewYaml(VIEW)));
    const listed = await db.withConnection((c) =>
      compileView(c, parseViewYaml(VIEW), { typedReader: false }),
    );
    const onePassView = await db.withConnection((c) =>
      compileView(c, parseViewYaml(VIEW), { fastPath: false }),
    );
    // Another name: the clean-segment guess is kept per spec hash.
    const csvView = await db.withConnection((c) =>
      compileView(c, { ...parseViewYaml(VIEW), name: 'page_views_csv' }, { ndjson: false }),
    );
    // Another checkout's materialiser, its own compile of the same view (another name: the clean guess is per spec hash).
    const baseModule =
      args.base !== undefined
        ? ((await import(
            pathToFileURL(path.resolve(args.base, 'ingest-node/src/views/index.ts')).href
          )) as typeof Views)
        : undefined;
    const baseView =
      baseModule !== undefined
        ? await db.withConnection((c) =>
            baseModule.compileView(c, { ...baseModule.parseViewYaml(VIEW), name: 'page_views_base' }),
          )
        : undefined;
    // The ceiling's input file, written once, before any clock starts.
    const ndjson = path.join(scratch, 'input.ndjson');
    const nl = Buffer.from('\n');
    await writeFile(ndjson, Buffer.concat(records.flatMap((r) => [r.payload, nl])));

    // CPU time (all threads of this process) next to wall time: on a shared
    // machine wall time swings with the neighbours, CPU time much less.
    const cpuMs = (): number => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    };
    const view = { ms: [] as number[], cpuMs: [] as number[], loadMs: [] as number[], bytes: 0, rows: 0 };
    const ceiling = { ms: [] as number[], cpuMs: [] as number[], bytes: 0 };
    const list = { ms: [] as number[], cpuMs: [] as number[] };
    const onePass = { ms: [] as number[], cpuMs: [] as number[] };
    const csv = { ms: [] as number[], cpuMs: [] as number[], loadMs: [] as number[] };
    const base = { ms: [] as number[], cpuMs: [] as number[], loadMs: [] as number[] };
    for (let run = 0; run < RUNS; run++) {
      const t0 = performance.now();
      const c0 = cpuMs();
      const out = await materializeSegment(db, { jobId: `bench-${run}`, records, views: [compiled] });
      view.ms.push(performance.now() - t0);
      view.cpuMs.push(cpuMs() - c0);
      view.loadMs.push(out.loadMs);
      const v = out.views[0]!;
      if (v.viewRows !== ROWS)
        throw new Error(`expected ${ROWS} view rows, got ${v.viewRows} (dlq ${v.dlqRows})`);
      view.rows = v.viewRows;
      view.bytes = v.files.reduce((s, f) => s + f.sizeBytes, 0);
      await out.cleanup();

      const target = path.join(scratch, `ceiling-${run}`);
      const t1 = performance.now();
      const c1 = cpuMs();
      await db.withConnection((c) => c.run(ceilingSql(ndjson, target)));
      ceiling.ms.push(performance.now() - t1);
      ceiling.cpuMs.push(cpuMs() - c1);
      ceiling.bytes = await dirBytes(target);
      await rm(target, { recursive: true, force: true });
      if (args.list) {
        const t2 = performance.now();
        const c2 = cpuMs();
        const o = await materializeSegment(db, { jobId: `bench-list-${run}`, records, views: [listed] });
        list.ms.push(performance.now() - t2);
        list.cpuMs.push(cpuMs() - c2);
        if (o.views[0]!.viewRows !== ROWS) throw new Error('list extraction: not every row in the view');
        await o.cleanup();
      }
      if (args['one-pass']) {
        const t3 = performance.now();
        const c3 = cpuMs();
        const o = await materializeSegment(db, { jobId: `bench-one-${run}`, records, views: [onePassView] });
        onePass.ms.push(performance.now() - t3);
        onePass.cpuMs.push(cpuMs() - c3);
        if (o.views[0]!.viewRows !== ROWS) throw new Error('one pass: not every row in the view');
        await o.cleanup();
      }
      if (args.csv) {
        const t4 = performance.now();
        const c4 = cpuMs();
        const o = await materializeSegment(db, { jobId: `bench-csv-${run}`, records, views: [csvView] });
        csv.ms.push(performance.now() - t4);
        csv.cpuMs.push(cpuMs() - c4);
        csv.loadMs.push(o.loadMs);
        if (o.views[0]!.viewRows !== ROWS) throw new Error('csv: not every row in the view');
        await o.cleanup();
      }
      if (baseModule !== undefined && baseView !== undefined) {
        const t5 = performance.now();
        const c5 = cpuMs();
        const o = await baseModule.materializeSegment(db, {
          jobId: `bench-base-${run}`,
          records,
          views: [baseView],
        });
        base.ms.push(performance.now() - t5);
        base.cpuMs.push(cpuMs() - c5);
        base.loadMs.push(o.loadMs);
        if (o.views[0]!.viewRows !== ROWS) throw new Error('base: not every row in the view');
        await o.cleanup();
      }
      console.log(
        `run ${run + 1}/${RUNS}: materialiser ${view.ms.at(-1)!.toFixed(0)} ms (load ${out.loadMs.toFixed(0)} ms, cpu ${view.cpuMs.at(-1)!.toFixed(0)} ms), ceiling ${ceiling.ms.at(-1)!.toFixed(0)} ms (cpu ${ceiling.cpuMs.at(-1)!.toFixed(0)} ms)` +
          (args.list
            ? `, list extraction ${list.ms.at(-1)!.toFixed(0)} ms (cpu ${list.cpuMs.at(-1)!.toFixed(0)} ms)`
            : '') +
          (args['one-pass']
            ? `, one pass ${onePass.ms.at(-1)!.toFixed(0)} ms (cpu ${onePass.cpuMs.at(-1)!.toFixed(0)} ms)`
            : '') +
          (args.csv
            ? `, csv ${csv.ms.at(-1)!.toFixed(0)} ms (load ${csv.loadMs.at(-1)!.toFixed(0)} ms, cpu ${csv.cpuMs.at(-1)!.toFixed(0)} ms)`
            : '') +
          (baseModule !== undefined
            ? `, base ${base.ms.at(-1)!.toFixed(0)} ms (load ${base.loadMs.at(-1)!.toFixed(0)} ms, cpu ${base.cpuMs.at(-1)!.toFixed(0)} ms)`
            : ''),
      );
    }
    const viewRowsPerS = ROWS / (median(view.ms) / 1000);
    const ceilingRowsPerS = ROWS / (median(ceiling.ms) / 1000);
    const ratio = viewRowsPerS / ceilingRowsPerS;
    const cpuRatio = median(ceiling.cpuMs) / median(view.cpuMs);
    const rowsFmt = (x: number) => `${Math.round(x).toLocaleString('en-US')}`;
    console.log('');
    console.log(
      `| ${'path'.padEnd(44)} | ${'median ms'.padStart(9)} | ${'rows/s'.padStart(10)} | ${'bytes/row'.padStart(9)} |`,
    );
    console.log(`| ${'-'.repeat(44)} | ${'-'.repeat(9)} | ${'-'.repeat(10)} | ${'-'.repeat(9)} |`);
    console.log(
      `| ${'materialiser (load + view + DLQ)'.padEnd(44)} | ${median(view.ms).toFixed(0).padStart(9)} | ${rowsFmt(viewRowsPerS).padStart(10)} | ${(view.bytes / ROWS).toFixed(2).padStart(9)} |`,
    );
    console.log(
      `| ${'  of which loading records'.padEnd(44)} | ${median(view.loadMs).toFixed(0).padStart(9)} | ${''.padStart(10)} | ${''.padStart(9)} |`,
    );
    if (args.list)
      console.log(
        `| ${'materialiser, list extraction (before)'.padEnd(44)} | ${median(list.ms).toFixed(0).padStart(9)} | ${rowsFmt(ROWS / (median(list.ms) / 1000)).padStart(10)} | ${''.padStart(9)} |`,
      );
    if (args['one-pass'])
      console.log(
        `| ${'materialiser, one pass (before)'.padEnd(44)} | ${median(onePass.ms).toFixed(0).padStart(9)} | ${rowsFmt(ROWS / (median(onePass.ms) / 1000)).padStart(10)} | ${''.padStart(9)} |`,
      );
    if (args.csv)
      console.log(
        `| ${'materialiser, records as CSV only (before)'.padEnd(44)} | ${median(csv.ms).toFixed(0).padStart(9)} | ${rowsFmt(ROWS / (median(csv.ms) / 1000)).padStart(10)} | ${''.padStart(9)} |`,
      );
    if (baseModule !== undefined)
      console.log(
        `| ${'materialiser of --base'.padEnd(44)} | ${median(base.ms).toFixed(0).padStart(9)} | ${rowsFmt(ROWS / (median(base.ms) / 1000)).padStart(10)} | ${''.padStart(9)} |`,
      );
    console.log(
      `| ${'ceiling: DuckDB read_ndjson → Parquet'.padEnd(44)} | ${median(ceiling.ms).toFixed(0).padStart(9)} | ${rowsFmt(ceilingRowsPerS).padStart(10)} | ${(ceiling.bytes / ROWS).toFixed(2).padStart(9)} |`,
    );
    console.log('');
    console.log(`ratio materialiser / ceiling: ${ratio.toFixed(2)}× wall-clock rows/s (goal ≥ 0.80×)`);
    console.log(
      `CPU time per run (median): materialiser ${median(view.cpuMs).toFixed(0)} ms, ceiling ${median(ceiling.cpuMs).toFixed(0)} ms → ${cpuRatio.toFixed(2)}×`,
    );
    if (args.list)
      console.log(
        `list extraction (before): ${(ROWS / (median(list.ms) / 1000) / ceilingRowsPerS).toFixed(2)}× the ceiling by wall clock, CPU ${median(list.cpuMs).toFixed(0)} ms → ${(median(ceiling.cpuMs) / median(list.cpuMs)).toFixed(2)}×`,
      );

    if (args['one-pass'])
      console.log(
        `one pass (before): ${(ROWS / (median(onePass.ms) / 1000) / ceilingRowsPerS).toFixed(2)}× the ceiling by wall clock, CPU ${median(onePass.cpuMs).toFixed(0)} ms → ${(median(ceiling.cpuMs) / median(onePass.cpuMs)).toFixed(2)}×`,
      );
    if (args.csv)
      console.log(
        `records as CSV only (before): ${(ROWS / (median(csv.ms) / 1000) / ceilingRowsPerS).toFixed(2)}× the ceiling by wall clock (load ${median(csv.loadMs).toFixed(0)} ms), CPU ${median(csv.cpuMs).toFixed(0)} ms → ${(median(ceiling.cpuMs) / median(csv.cpuMs)).toFixed(2)}×`,
      );
    if (baseModule !== undefined)
      console.log(
        `--base ${args.base}: ${(ROWS / (median(base.ms) / 1000) / ceilingRowsPerS).toFixed(2)}× the ceiling by wall clock (load ${median(base.loadMs).toFixed(0)} ms), CPU ${median(base.cpuMs).toFixed(0)} ms → ${(median(ceiling.cpuMs) / median(base.cpuMs)).toFixed(2)}×`,
      );
    const result = {
      benchmark: 'views',
      at: new Date().toISOString(),
      machine: {
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model,
        totalMemBytes: totalmem(),
        node: process.version,
      },
      params: {
        rows: ROWS,
        runs: RUNS,
        threads: THREADS,
        memoryLimitBytes: MEMORY_LIMIT_BYTES,
        payloadBytes,
      },
      view: {
        columns: compiled.columns,
        medianMs: median(view.ms),
        runsMs: view.ms,
        cpuMedianMs: median(view.cpuMs),
        cpuRunsMs: view.cpuMs,
        loadMedianMs: median(view.loadMs),
        rowsPerSecond: viewRowsPerS,
        parquetBytes: view.bytes,
        bytesPerRow: view.bytes / ROWS,
      },
      ceiling: {
        medianMs: median(ceiling.ms),
        runsMs: ceiling.ms,
        cpuMedianMs: median(ceiling.cpuMs),
        cpuRunsMs: ceiling.cpuMs,
        rowsPerSecond: ceilingRowsPerS,
        parquetBytes: ceiling.bytes,
        bytesPerRow: ceiling.bytes / ROWS,
      },
      ...(args.list
        ? { listExtraction: { medianMs: median(list.ms), runsMs: list.ms, cpuMedianMs: median(list.cpuMs) } }
        : {}),
      ...(args['one-pass']
        ? {
            onePass: {
              medianMs: median(onePass.ms),
              runsMs: onePass.ms,
              cpuMedianMs: median(onePass.cpuMs),
              cpuRunsMs: onePass.cpuMs,
            },
          }
        : {}),
      ...(args.csv
        ? {
            csv: {
              medianMs: median(csv.ms),
              runsMs: csv.ms,
              loadMedianMs: median(csv.loadMs),
              cpuMedianMs: median(csv.cpuMs),
              cpuRunsMs: csv.cpuMs,
            },
          }
        : {}),
      ...(baseModule !== undefined
        ? {
            base: {
              dir: args.base,
              medianMs: median(base.ms),
              runsMs: base.ms,
              loadMedianMs: median(base.loadMs),
              cpuMedianMs: median(base.cpuMs),
              cpuRunsMs: base.cpuMs,
            },
          }
        : {}),
      ratio,
      cpuRatio,
      goalRatio: 0.8,
    };
    const resultsDir = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'results');
    await mkdir(resultsDir, { recursive: true });
    const file = path.join(resultsDir, `views-${result.at.replaceAll(':', '-')}.json`);
    await writeFile(file, JSON.stringify(result, null, 2) + '\n');
    console.log(`result: ${path.relative(process.cwd(), file)}`);
  } finally {
    await db.close();
    await rm(scratch, { recursive: true, force: true });
  }
}

await main();
