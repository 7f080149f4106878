// CPU time of this process's threads by kind (name without its number), from
// /proc (Linux): the main thread, the GC's helpers (V8Worker), libuv's pool
// (DuckDB's threads are started from it and carry its name).
import { readFileSync, readdirSync } from 'node:fs';
export function threadTimes(): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ticks = Number(f[11]) + Number(f[12]);
      out.set(name.replace(/\d+$/, ''), (out.get(name.replace(/\d+$/, '')) ?? 0) + ticks * 10);
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out;
}
export function diff(a: Map<string, number>, b: Map<string, number>): Record<string, number> {
  const o: Record<string, number> = {};
  for (const [k, v] of b) {
    const d = v - (a.get(k) ?? 0);
    if (d > 0) o[k] = d;
  }
  return o;
}
