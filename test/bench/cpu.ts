// Where a benchmark's CPU went, from /proc (Linux): the server process split by
// thread kind, its child processes (the Parquet children) and any other process
// named by pid (MinIO). Two snapshots, at the start and the end of a measured
// window, and their difference in cores (1.0 = one core busy for the window).
// Differences are taken per thread and per process, then summed per group: a
// thread or process that exits inside the window is missed (its CPU until
// then is not counted), and one that starts inside it is counted from zero.
import { readdirSync, readFileSync } from 'node:fs';

const TICKS_PER_S = 100; // USER_HZ: 100 on every Linux the bench runs on (getconf CLK_TCK)

/** utime + stime (ticks) and the thread name of one /proc stat file. */
function readStat(file: string): { comm: string; ppid: number; ticks: number } | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined; // exited between the listing and the read
  }
  // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split at the last ')'.
  const close = text.lastIndexOf(')');
  const comm = text.slice(text.indexOf('(') + 1, close);
  const f = text.slice(close + 2).split(' ');
  // After comm: [0] state, [1] ppid, …, [11] utime, [12] stime.
  return { comm, ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) };
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** The thread kind a Node thread name stands for (names as Node 24 sets them). */
function threadKind(pid: number, tid: number, comm: string): string {
  if (tid === pid) return 'main';
  if (comm.startsWith('libuv-worker')) return 'libuv pool';
  if (comm.startsWith('V8Worker') || comm.startsWith('DelayedTaskSche')) return 'V8 (GC, compiler)';
  if (comm.startsWith('WorkerThread')) return 'worker threads';
  if (comm.startsWith('DuckDB') || comm.startsWith('duckdb')) return 'DuckDB';
  return 'other threads';
}

/** Ticks per thread (`t<tid>`) or process (`p<pid>`), with the group each belongs to. */
export type CpuSnapshot = ReadonlyMap<string, { readonly group: string; readonly ticks: number }>;

/**
 * Ticks per group: `server:<thread kind>` for `serverPid`'s threads,
 * `children` for its descendant processes (all their threads), and
 * `<name>` for each extra process (all its threads and descendants).
 */
export function cpuSnapshot(
  serverPid: number,
  extra: Readonly<Record<string, number | undefined>>,
): CpuSnapshot {
  const out = new Map<string, { group: string; ticks: number }>();
  for (const tid of listDir(`/proc/${serverPid}/task`)) {
    const s = readStat(`/proc/${serverPid}/task/${tid}/stat`);
    if (s !== undefined)
      out.set(`t${tid}`, { group: `server:${threadKind(serverPid, Number(tid), s.comm)}`, ticks: s.ticks });
  }
  // Every process's parent, to find descendants (the Parquet children, MinIO's own helpers).
  const parent = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const name of listDir('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const s = readStat(`/proc/${pid}/stat`);
    if (s === undefined) continue;
    parent.set(pid, s.ppid);
    ticks.set(pid, s.ticks);
  }
  const under = (pid: number, root: number): boolean => {
    for (
      let p = parent.get(pid), hops = 0;
      p !== undefined && p > 1 && hops < 64;
      p = parent.get(p), hops++
    ) {
      if (p === root) return true;
    }
    return false;
  };
  const extraPids = Object.entries(extra).filter((e): e is [string, number] => e[1] !== undefined);
  for (const [pid, t] of ticks) {
    const named = extraPids.find(([, root]) => pid === root || under(pid, root));
    if (named !== undefined) out.set(`p${pid}`, { group: named[0], ticks: t });
    else if (under(pid, serverPid)) out.set(`p${pid}`, { group: 'children', ticks: t });
  }
  return out;
}

/** Cores per group between two snapshots `wallS` seconds apart, largest first. */
export function cpuCores(a: CpuSnapshot, b: CpuSnapshot, wallS: number): Record<string, number> {
  const sums = new Map<string, number>();
  for (const [id, { group, ticks }] of b) {
    const before = a.get(id);
    // A reused id in another group is another thread or process: counted from zero.
    const d = ticks - (before !== undefined && before.group === group ? before.ticks : 0);
    sums.set(group, (sums.get(group) ?? 0) + Math.max(0, d));
  }
  const rows = [...sums].map(([g, t]): [string, number] => [g, t / TICKS_PER_S / wallS]);
  rows.sort((x, y) => y[1] - x[1]);
  return Object.fromEntries(rows.filter(([, c]) => c > 0));
}
