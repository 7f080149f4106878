// Where one materializeSegment's time goes, phase by phase (a script, not a
// test): the bench's events, the bench's view, and every DuckDB statement the
// materialiser runs timed from the segment's start (wall and process CPU),
// by wrapping the connection's methods. The time before the first statement
// is the records file being written from JS memory.
//
//   node test/bench/views/phases.ts [--rows 1000000] [--runs 3] [--threads 2]
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DuckDBConnection } from '@duckdb/node-api';
import {
  compileView,
  createParquetDb,
  materializeSegment,
  parseViewYaml,
} from '../../../ingest-node/src/views/index.ts';
import { ceilingSql, generate, VIEW } from './data.ts';
import { threadTimes, diff } from './threads.ts';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    runs: { type: 'string', default: '3' },
    threads: { type: 'string', default: '2' },
  },
});
const ROWS = Number(args.rows);
const RUNS = Number(args.runs);

interface Mark {
  label: string;
  startMs: number;
  ms: number;
  cpuMs: number;
}
let marks: Mark[] | undefined;
let t0 = 0;
let c0 = 0;
let depth = 0;
let firstCpu = 0;
let ttFirst: Map<string, number> | undefined;
const cpu = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
function label(sql: string): string {
  const s = sql.replace(/\s+/g, ' ').trim();
  const copy = /^COPY \(/.test(s);
  const to = copy ? / TO '([^']*)'/.exec(s)?.[1] : undefined;
  if (copy && to !== undefined) return `COPY → ${path.relative(path.dirname(path.dirname(to)), to)}`;
  return s.slice(0, 110);
}
for (const method of ['run', 'runAndReadAll', 'createAppender'] as const) {
  const proto = DuckDBConnection.prototype as unknown as Record<
    string,
    (...a: unknown[]) => Promise<unknown>
  >;
  const orig = proto[method]!;
  proto[method] = async function (this: unknown, ...a: unknown[]) {
    // runAndReadAll calls run: only the outer call is timed.
    if (marks === undefined || depth > 0) return orig.apply(this, a);
    if (marks.length === 0) {
      firstCpu = cpu() - c0;
      ttFirst = threadTimes();
    }
    depth++;
    const s = performance.now();
    const c = cpu();
    try {
      return await orig.apply(this, a);
    } finally {
      depth--;
      marks.push({
        label: method === 'createAppender' ? `appender ${String(a[0])}` : label(String(a[0])),
        startMs: s - t0,
        ms: performance.now() - s,
        cpuMs: cpu() - c,
      });
    }
  };
}

const records = generate(ROWS);
const scratch = await mkdtemp(path.join(tmpdir(), 'lf-bench-phases-'));
const db = await createParquetDb({
  scratchDir: scratch,
  memoryLimitBytes: 2048 * 1024 * 1024,
  threads: Number(args.threads),
});
try {
  const compiled = await db.withConnection((c) => compileView(c, parseViewYaml(VIEW)));
  for (let run = 0; run < RUNS; run++) {
    marks = [];
    t0 = performance.now();
    c0 = cpu();
    const tt = threadTimes();
    ttFirst = tt;
    const out = await materializeSegment(db, { jobId: `phases-${run}`, records, views: [compiled] });
    const total = performance.now() - t0;
    const totalCpu = cpu() - c0;
    const threads = diff(tt, threadTimes());
    const m = marks;
    marks = undefined;
    console.log(
      `\nrun ${run + 1}/${RUNS}: ${total.toFixed(0)} ms wall, ${totalCpu.toFixed(0)} ms cpu (loadMs ${out.loadMs.toFixed(0)}), view rows ${out.views[0]!.viewRows}\n  CPU ms by thread kind: before the first statement ${JSON.stringify(diff(tt, ttFirst ?? tt))}, whole segment ${JSON.stringify(threads)}`,
    );
    const first = m[0]?.startMs ?? 0;
    console.log(
      `  ${'0'.padStart(6)} ${first.toFixed(0).padStart(6)} ms cpu ${firstCpu.toFixed(0).padStart(6)} ms  before the first statement (records file write)`,
    );
    let accounted = first;
    for (const x of m) {
      accounted += x.ms;
      console.log(
        `  ${x.startMs.toFixed(0).padStart(6)} ${x.ms.toFixed(0).padStart(6)} ms cpu ${x.cpuMs.toFixed(0).padStart(6)} ms  ${x.label}`,
      );
    }
    console.log(`  rest (JS between statements, cleanup): ${(total - accounted).toFixed(0)} ms`);
    await out.cleanup();
    // The bench's ceiling over the same data, for scale.
    const input = path.join(scratch, 'input.ndjson');
    if (run === 0)
      await writeFile(input, Buffer.concat(records.flatMap((r) => [r.payload, Buffer.from('\n')])));
    const target = path.join(scratch, `ceiling-${run}`);
    const s = performance.now();
    const c = cpu();
    await db.withConnection((conn) => conn.run(ceilingSql(input, target)));
    console.log(`  ceiling: ${(performance.now() - s).toFixed(0)} ms wall, ${(cpu() - c).toFixed(0)} ms cpu`);
    await rm(target, { recursive: true, force: true });
  }
} finally {
  await db.close();
  await rm(scratch, { recursive: true, force: true });
}
