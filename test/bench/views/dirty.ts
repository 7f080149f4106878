// A dirty segment after a clean one (a script, not a test): the view's last
// segment was all view rows, so the next is first tried as clean
// (materialize.ts writeIfClean); this one has a record at fault every 1,000
// (missing_required), so the attempt is wasted and the segment classified.
// Wall and process CPU of that segment, alternating with --base DIR (another
// checkout's materialiser on the same instance and data).
//
//   node test/bench/views/dirty.ts [--rows 1000000] [--runs 3] [--base DIR]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import * as self from '../../../ingest-node/src/views/index.ts';
import { generate, VIEW } from './data.ts';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    runs: { type: 'string', default: '3' },
    base: { type: 'string' },
  },
});

const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const records = generate(Number(args.rows));
const dirty = records.map((r, i) => (i % 1000 === 999 ? { ...r, payload: Buffer.from('{"event":"x"}') } : r));
const primer = records.slice(0, 10_000);
const scratch = await mkdtemp(path.join(tmpdir(), 'lf-bench-dirty-'));
const db = await self.createParquetDb({
  scratchDir: scratch,
  memoryLimitBytes: 2048 * 1024 * 1024,
  threads: 2,
});
try {
  const modules: [string, typeof self][] = [['this checkout', self]];
  if (args.base !== undefined)
    modules.push([
      `--base ${args.base}`,
      (await import(
        pathToFileURL(path.resolve(args.base, 'ingest-node/src/views/index.ts')).href
      )) as typeof self,
    ]);
  const arms = [];
  for (const [i, [name, m]] of modules.entries())
    arms.push({
      name,
      m,
      view: await db.withConnection((c) =>
        m.compileView(c, { ...m.parseViewYaml(VIEW), name: `page_views_${i}` }),
      ),
      ms: [] as number[],
      cpu: [] as number[],
    });
  let job = 0;
  for (let run = 0; run < Number(args.runs); run++)
    for (const a of arms) {
      const first = await a.m.materializeSegment(db, {
        jobId: `dirty-${job++}`,
        records: primer,
        views: [a.view],
      });
      await first.cleanup();
      const t = performance.now();
      const c = cpuMs();
      const out = await a.m.materializeSegment(db, {
        jobId: `dirty-${job++}`,
        records: dirty,
        views: [a.view],
      });
      a.ms.push(performance.now() - t);
      a.cpu.push(cpuMs() - c);
      const v = out.views[0]!;
      if (v.dlqRows !== Math.floor(dirty.length / 1000)) throw new Error(`${a.name}: ${v.dlqRows} DLQ rows`);
      await out.cleanup();
      console.log(
        `run ${run + 1}: ${a.name} ${a.ms.at(-1)!.toFixed(0)} ms wall, ${a.cpu.at(-1)!.toFixed(0)} ms CPU`,
      );
    }
  for (const a of arms)
    console.log(
      `${a.name.padEnd(40)} ${median(a.ms).toFixed(0).padStart(6)} ms wall ${median(a.cpu).toFixed(0).padStart(6)} ms CPU (medians)`,
    );
} finally {
  await db.close();
  await rm(scratch, { recursive: true, force: true });
}
