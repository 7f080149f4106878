// The clean write's COPY alone (a script, not a test): the statement
// materialize.ts writeIfClean runs for the bench's view over the bench's
// events as an NDJSON file, from this checkout and, with --base DIR, from
// another one, alternating with the ceiling in one process and one DuckDB
// instance; wall and process CPU, medians. The records file, the GC of a heap
// holding the records and the rest of materializeSegment are left out, so a
// few per cent in the SQL show through the noise bench.ts --base has.
//
//   node test/bench/views/copy-ab.ts [--rows 1000000] [--runs 9] [--base DIR]
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import type { DuckDBConnection } from '@duckdb/node-api';
import * as self from '../../../ingest-node/src/views/index.ts';
import { ceilingSql, generate, VIEW } from './data.ts';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    runs: { type: 'string', default: '9' },
    base: { type: 'string' },
  },
});
const RUNS = Number(args.runs);

interface Arm {
  readonly dir: string;
  readonly compileView: typeof self.compileView;
  readonly parseViewYaml: typeof self.parseViewYaml;
  readonly fastSqlOverNdjson: (fastSql: string) => string | undefined;
}
async function arm(dir: string): Promise<Arm> {
  const at = (p: string): string => pathToFileURL(path.resolve(dir, p)).href;
  const views = (await import(at('ingest-node/src/views/index.ts'))) as typeof self;
  const m = (await import(at('ingest-node/src/views/materialize.ts'))) as Pick<Arm, 'fastSqlOverNdjson'>;
  return { ...views, dir, fastSqlOverNdjson: m.fastSqlOverNdjson };
}

/**
 * writeIfClean's statement as the checkout builds it: with error() at the
 * first row that is not 'ok' when its materialize.ts has that, else the
 * WHERE the code before it had.
 */
async function cleanCopy(conn: DuckDBConnection, a: Arm, file: string, out: string): Promise<string> {
  const view = await a.compileView(conn, a.parseViewYaml(VIEW));
  const over = a.fastSqlOverNdjson(view.fastSql!)!.replace(
    '__lf_ndjson',
    `(SELECT v AS __lf_t FROM read_json('${file}', format = 'newline_delimited', records = false,
      columns = {'v': '${view.fastStructType!}'}, ignore_errors = true, compression = 'uncompressed',
      maximum_object_size = 2097152))`,
  );
  const names = [...view.columns.map((c) => c.name), ...view.partitions.map((p) => p.alias)].map(
    (n) => `"${n}"`,
  );
  const noWhere = (await readFile(path.join(a.dir, 'ingest-node/src/views/materialize.ts'), 'utf8')).includes(
    'error(${sqlString(NOT_CLEAN)})',
  );
  const select = noWhere
    ? `SELECT CASE WHEN __lf_status IS DISTINCT FROM 'ok' THEN error('not clean') ELSE ${names[0]!} END AS ${names[0]!}, ${names.slice(1).join(', ')} FROM (${over})`
    : `SELECT ${names.join(', ')} FROM (${over}) WHERE __lf_status = 'ok'`;
  return `COPY (${select}) TO '${out}' (FORMAT parquet, COMPRESSION zstd, RETURN_STATS, PARTITION_BY (${view.partitions.map((p) => `"${p.alias}"`).join(', ')}))`;
}

const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const scratch = await mkdtemp(path.join(tmpdir(), 'lf-bench-copy-ab-'));
const db = await self.createParquetDb({
  scratchDir: scratch,
  memoryLimitBytes: 2048 * 1024 * 1024,
  threads: 2,
});
try {
  const input = path.join(scratch, 'input.ndjson');
  const nl = Buffer.from('\n');
  await writeFile(
    input,
    Buffer.concat(generate(Number(args.rows)).flatMap((r) => [Buffer.from(r.payload), nl])),
  );
  const arms: [string, Arm | undefined][] = [
    ['ceiling', undefined],
    ['this checkout', await arm(path.resolve(import.meta.dirname, '../../..'))],
  ];
  if (args.base !== undefined) arms.push([`--base ${args.base}`, await arm(args.base)]);
  const times = new Map(arms.map(([n]) => [n, { ms: [] as number[], cpu: [] as number[] }]));
  for (let run = 0; run < RUNS; run++)
    for (const [name, a] of arms) {
      const out = path.join(scratch, `out-${run}`);
      await db.withConnection(async (conn) => {
        const sql = a === undefined ? ceilingSql(input, out) : await cleanCopy(conn, a, input, out);
        const t = performance.now();
        const c = cpuMs();
        await conn.run(sql);
        times.get(name)!.ms.push(performance.now() - t);
        times.get(name)!.cpu.push(cpuMs() - c);
      });
      await rm(out, { recursive: true, force: true });
    }
  const ceiling = times.get('ceiling')!;
  for (const [name, t] of times)
    console.log(
      `${name.padEnd(40)} ${median(t.ms).toFixed(0).padStart(6)} ms wall ${median(t.cpu).toFixed(0).padStart(6)} ms CPU  ` +
        `(×${(median(t.cpu) / median(ceiling.cpu)).toFixed(3)} the ceiling's CPU)`,
    );
} finally {
  await db.close();
  await rm(scratch, { recursive: true, force: true });
}
