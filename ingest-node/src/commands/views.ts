// `landfall views check FILE [--sample NDJSON]`: what a node would do with a
// view file before it is deployed. Validates every view in the file (the
// same parser the node's views.dir uses), compiles it with DuckDB, prints the
// columns, the partitioning and the compiled SQL; with a sample of payloads
// (NDJSON, one record a line, like an ingest request body), materialises it
// and shows where each row went: view rows per partition, filtered, DLQ rows
// per code with the first few reasons. Exit 1 when any view is invalid.
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createParquetDb, type ParquetDb } from '../parquet/duckdb.ts';
import type { SegmentRecord } from '../parquet/records.ts';
import { compileView, type CompiledView } from '../views/compile.ts';
import { materializeSegment, type ViewOutput } from '../views/materialize.ts';
import { parseViewFile } from '../views/registry.ts';
import {
  exitFailed,
  exitOk,
  guarded,
  parse,
  stringFlag,
  UsageError,
  wantsHelp,
  type Command,
  type CommandIo,
} from './common.ts';

export function help(): string {
  return [
    'landfall views check FILE [--sample NDJSON] [--show N] [--quiet-sql]',
    '',
    'Checks a view file (YAML or JSON: one view, or a list) the way a node loading it from views.dir does:',
    'validates the spec, checks every expression with DuckDB, prints the columns, the partitioning and the',
    'compiled SQL.',
    '  --sample FILE   also run the view over these payloads (one record a line; blank lines are skipped)',
    '                  and show rows in, view rows per partition, filtered, and DLQ rows per error code',
    '  --show N        DLQ rows to show with their reason (default 10)',
    '  --memory-mb N   DuckDB memory limit for the sample (default 256)',
    '  --quiet-sql     do not print the compiled SQL',
    '',
    'Exit code: 0 every view is valid, 1 a view (or the file) is invalid, 2 usage.',
    '',
  ].join('\n');
}

const options = {
  sample: { type: 'string' },
  show: { type: 'string' },
  'memory-mb': { type: 'string' },
  'quiet-sql': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Largest sample read: a sample is for a look, not a backfill (use reprocess). */
const sampleBytesMax = 256 * 1024 * 1024;
const MiB = 1024 * 1024;

/** Sample payloads: one a line, `\r\n` tolerated, blank lines skipped; seq = the line number. */
export function sampleRecords(buf: Buffer, ingestTimeMicros: bigint): SegmentRecord[] {
  const out: SegmentRecord[] = [];
  let start = 0;
  let line = 0;
  while (start < buf.length) {
    const nl = buf.indexOf(0x0a, start);
    const next = nl === -1 ? buf.length : nl;
    line++;
    let end = next;
    if (end > start && buf[end - 1] === 0x0d) end--;
    const payload = buf.subarray(start, end);
    if (payload.toString('latin1').trim() !== '') out.push({ seq: BigInt(line), ingestTimeMicros, payload });
    start = next + 1;
  }
  return out;
}

function describeView(v: CompiledView, showSql: boolean): string {
  const width = Math.max(...v.spec.columns.map((c) => c.name.length), 4);
  const typeWidth = Math.max(...v.columns.map((c) => c.type.length), 4);
  const lines = [
    `${v.spec.name}: valid`,
    `  spec sha256: ${v.specHash}`,
    '  columns:',
    ...v.spec.columns.map(
      (c) =>
        `    ${c.name.padEnd(width)}  ${c.type.padEnd(typeWidth)}  ${c.path}${c.required ? '  required' : ''}${c.default !== undefined ? `  default ${JSON.stringify(c.default)}` : ''}`,
    ),
    `  filter: ${v.filterSql ?? '(none: every row that converts is a view row)'}`,
    v.partitions.length === 0
      ? '  partitioning: (none: one file per segment)'
      : `  partitioning: ${v.partitions.map((p) => `${p.alias} = ${p.expressionSql} (${p.type})`).join(', ')}`,
  ];
  if (showSql) lines.push('  compiled SQL:', ...v.sql.split('\n').map((l) => `    ${l}`));
  return `${lines.join('\n')}\n`;
}

async function describeSample(db: ParquetDb, o: ViewOutput, show: number): Promise<string> {
  const lines = [
    `  sample: ${o.rowsIn} rows in → ${o.viewRows} view, ${o.filteredRows} filtered, ${o.dlqRows} DLQ`,
  ];
  for (const f of o.files)
    lines.push(`    view ${f.partitionPath === '' ? '(one file)' : f.partitionPath}: ${f.rowCount} rows`);
  const codes = Object.entries(o.dlqByCode).filter(([, n]) => n > 0);
  if (codes.length > 0) lines.push(`    DLQ by code: ${codes.map(([c, n]) => `${c} ${n}`).join(', ')}`);
  if (o.dlqFiles.length > 0 && show > 0) {
    const files = o.dlqFiles.map((f) => `'${f.localPath.replaceAll("'", "''")}'`).join(', ');
    const rows = await db.withConnection(async (c) =>
      (
        await c.runAndReadAll(
          `SELECT seq, error_code, "column", error_message FROM read_parquet([${files}]) ORDER BY seq LIMIT ${show}`,
        )
      ).getRowsJson(),
    );
    lines.push(`    first DLQ rows (line: code column: message):`);
    // getRowsJson: seq as a decimal string, the rest strings or null.
    for (const [seq, code, column, message] of rows as (string | null)[][])
      lines.push(`      ${seq}: ${code}${column !== null ? ` ${column}` : ''}: ${message}`);
  }
  return `${lines.join('\n')}\n`;
}

export async function run(args: readonly string[], io: CommandIo): Promise<number> {
  if (wantsHelp(args)) {
    io.out(help());
    return exitOk;
  }
  return guarded('views', io, help, async () => {
    const { values, positionals } = parse(args, options);
    const [sub, file, ...extra] = positionals;
    if (sub !== 'check')
      throw new UsageError(sub === undefined ? 'missing subcommand: check' : `unknown subcommand "${sub}"`);
    if (file === undefined || extra.length > 0) throw new UsageError('give exactly one view FILE');
    const showText = stringFlag(values, 'show') ?? '10';
    const show = Number(showText);
    if (!Number.isInteger(show) || show < 0) throw new UsageError('--show must be a non-negative integer');
    const memoryMb = Number(stringFlag(values, 'memory-mb') ?? '256');
    if (!Number.isInteger(memoryMb) || memoryMb < 16)
      throw new UsageError('--memory-mb must be an integer ≥ 16');
    const samplePath = stringFlag(values, 'sample');

    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new Error(`cannot read ${file}: ${(err as Error).message}`, { cause: err });
    }
    let candidates;
    try {
      candidates = parseViewFile(path.basename(file), text);
    } catch (err) {
      io.out(`${file}: invalid: ${(err as { code?: string }).code ?? 'error'}: ${(err as Error).message}\n`);
      return exitFailed;
    }
    if (candidates.length === 0) {
      io.out(`${file}: holds no view\n`);
      return exitFailed;
    }
    let sample: SegmentRecord[] | undefined;
    if (samplePath !== undefined) {
      const st = await stat(samplePath);
      if (st.size > sampleBytesMax)
        throw new UsageError(
          `--sample is ${st.size} bytes; at most ${sampleBytesMax} (use landfall reprocess for more)`,
        );
      sample = sampleRecords(await readFile(samplePath), BigInt(Date.now()) * 1000n);
    }
    const scratch =
      sample !== undefined ? await mkdtemp(path.join(tmpdir(), 'landfall-views-check-')) : undefined;
    const db = await createParquetDb({
      ...(scratch !== undefined ? { scratchDir: scratch } : {}),
      memoryLimitBytes: memoryMb * MiB,
      threads: 1,
    });
    let invalid = 0;
    try {
      for (const cand of candidates) {
        if (!cand.ok) {
          invalid++;
          const e = cand.error;
          io.out(`${e.view ?? file}: invalid: ${e.code}: ${e.message}\n`);
          continue;
        }
        let compiled: CompiledView;
        try {
          compiled = await db.withConnection((c) => compileView(c, cand.spec));
        } catch (err) {
          invalid++;
          // A ViewError's message starts with the spec path already.
          const e = err as { code?: string; message: string };
          io.out(`${cand.spec.name}: invalid: ${e.code ?? 'error'}: ${e.message}\n`);
          continue;
        }
        io.out(describeView(compiled, values['quiet-sql'] !== true));
        if (sample !== undefined) {
          const out = await materializeSegment(db, {
            jobId: `check-${compiled.spec.name}`,
            records: sample,
            views: [compiled],
          });
          try {
            io.out(await describeSample(db, out.views[0]!, show));
          } finally {
            await out.cleanup();
          }
        }
      }
    } finally {
      await db.close();
      if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
    }
    return invalid > 0 ? exitFailed : exitOk;
  });
}

export const viewsCommand: Command = {
  name: 'views',
  summary: 'views check FILE [--sample NDJSON]: validate a view, show its SQL, try it on sample payloads',
  help,
  run,
};
