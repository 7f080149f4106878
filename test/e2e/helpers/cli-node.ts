// The real `landfall serve` as a supervised child process (test/harness/proc.ts:
// it cannot outlive the test process), on port 0. The URL and the recovery
// report come from the node's own JSON log lines.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, startProcess, waitFor } from '../../harness/proc.ts';
import type { ServerProcess } from '../../harness/proc.ts';

export const CLI = join(repoRoot, 'ingest-node', 'src', 'cli.ts');

export interface CliNode {
  readonly proc: ServerProcess;
  /** Resolves with the base URL once the node logged that it listens. */
  readonly listening: Promise<string>;
}

interface LogLine {
  readonly msg?: string;
  readonly url?: string;
  readonly [k: string]: unknown;
}

export function logLines(logPath: string): LogLine[] {
  let text: string;
  try {
    text = readFileSync(logPath, 'utf8');
  } catch {
    return [];
  }
  const out: LogLine[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      // a line cut by SIGKILL
    }
  }
  return out;
}

/** Starts `landfall serve` with `flags` (e.g. `--wal.dir=…`); logs go to `logPath`. */
export function startCliNode(name: string, logPath: string, flags: readonly string[]): CliNode {
  // The node reads LANDFALL_* variables as config and refuses unknown ones,
  // so the test's own knobs (LANDFALL_CRASH_ITERATIONS…) must not reach it.
  const unset = Object.keys(process.env)
    .filter((k) => k.startsWith('LANDFALL_'))
    .flatMap((k) => ['-u', k]);
  const proc = startProcess({
    name,
    command: 'env',
    args: [...unset, process.execPath, CLI, 'serve', '--listen.port=0', ...flags],
    logPath,
  });
  const listening = waitFor(
    () => logLines(logPath).find((l) => l.msg === 'landfall ingest node listening')?.url,
    { what: `${name} to listen`, timeoutMs: 20_000, intervalMs: 10, process: proc },
  );
  // A caller that kills the node before it listens does not await this.
  listening.catch(() => {});
  return { proc, listening };
}
