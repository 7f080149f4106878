// The load generator of the ingest benchmark, run by bench.ts as a child
// process so autocannon's event loop never competes with the server's (they
// still share the machine's cores). One JSON argument in; on stdout, a line
// `warm` when the warm-up is over (the parent starts its server-side counters
// then) and a final line of JSON results.
//
//   node test/bench/ingest/load.ts '{"url":"http://127.0.0.1:8080","shape":"1k","connections":64,"durationS":10,"warmupS":2}'
import { createRequire } from 'node:module';
import { buildBody } from './bodies.ts';
import type { Shape } from './bodies.ts';

export interface LoadOptions {
  readonly url: string;
  readonly shape: Shape;
  readonly connections: number;
  readonly durationS: number;
  readonly warmupS: number;
}

export interface LoadResult {
  readonly durationS: number;
  /** Responses with status 202 (the only success). */
  readonly ok: number;
  readonly statusCounts: Record<string, number>;
  readonly errors: number;
  readonly timeouts: number;
  /** The load generator's own CPU (user + sys) over the measured run, seconds. */
  readonly cpuS: number;
  /** Latency of 202 responses, ms. */
  readonly latencyMs: {
    readonly p50: number;
    readonly p95: number;
    readonly p99: number;
    readonly max: number;
    readonly mean: number;
  };
}

interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  statusCodeStats: Record<string, { count: number }>;
}
interface AutocannonInstance extends PromiseLike<AutocannonResult> {
  on(event: 'response', fn: (client: unknown, statusCode: number, bytes: number, ms: number) => void): void;
}
type Autocannon = (opts: Record<string, unknown>) => AutocannonInstance;

// autocannon is CommonJS without type declarations.
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function run(o: LoadOptions, durationS: number, record: boolean): Promise<LoadResult> {
  const { body } = buildBody(o.shape);
  const cpu0 = process.cpuUsage();
  let latencies = new Float64Array(1 << 16);
  let n = 0;
  const instance = autocannon({
    url: `${o.url}/v1/ingest`,
    method: 'POST',
    headers: { 'content-type': 'application/x-ndjson' },
    body,
    connections: o.connections,
    pipelining: 1,
    duration: durationS,
    timeout: 30,
  });
  if (record) {
    instance.on('response', (_client, statusCode, _bytes, ms) => {
      if (statusCode !== 202) return;
      if (n === latencies.length) {
        const grown = new Float64Array(latencies.length * 2);
        grown.set(latencies);
        latencies = grown;
      }
      latencies[n++] = ms;
    });
  }
  const r = await instance;
  const cpu = process.cpuUsage(cpu0);
  const sorted = latencies.subarray(0, n).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  const statusCounts: Record<string, number> = {};
  for (const [code, s] of Object.entries(r.statusCodeStats)) statusCounts[code] = s.count;
  return {
    durationS: r.duration,
    ok: statusCounts['202'] ?? 0,
    statusCounts,
    errors: r.errors,
    timeouts: r.timeouts,
    cpuS: (cpu.user + cpu.system) / 1e6,
    latencyMs: {
      p50: percentile(sorted, 50),
      p95: percentile(sorted, 95),
      p99: percentile(sorted, 99),
      max: n === 0 ? Number.NaN : sorted[n - 1]!,
      mean: n === 0 ? Number.NaN : sum / n,
    },
  };
}

if (import.meta.main) {
  const o = JSON.parse(process.argv[2] ?? '{}') as LoadOptions;
  if (o.warmupS > 0) await run(o, o.warmupS, false);
  process.stdout.write('warm\n');
  const result = await run(o, o.durationS, true);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
