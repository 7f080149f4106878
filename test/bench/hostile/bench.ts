// Hostile-body benchmark (a script, not a test): what one crafted request costs
// a real `landfall serve` child. For each body it prints the answer (status and
// code), the records the node wrote for it (from /v1/status: a refused request
// must write none), the CPU seconds the child spent on it (utime + stime from
// /proc/<pid>/stat, all threads, until the child is idle again — so work that
// goes on after the answer or after the client hung up is counted), and the
// child's peak RSS while it ran (VmHWM, reset before each case through
// /proc/<pid>/clear_refs).
//
// Goals (issue 14; reported, not asserted): peak RSS under 1 GiB and no request
// over 2 s of CPU.
//
//   npm run bench:hostile -- [--runs 3] [--validation none|json] [--cli path/to/cli.ts]
//                                    [--only substring,substring] [--timeout-ms 120000]
//                                    [--settle-max-ms 60000]
//
// --validation json is the costlier mode (every record is parsed). --timeout-ms is
// when the client gives up on an answer; --settle-max-ms bounds the wait for the
// node to go idle afterwards (raise both to measure code without the bounds).
//
// --cli lets the same table be taken from another checkout's node (e.g. the
// code before the bounds) to compare.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir, cpus, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gzipSync, zstdCompressSync } from 'node:zlib';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..', '..');
const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    validation: { type: 'string', default: 'none' },
    cli: { type: 'string', default: path.join(repoRoot, 'ingest-node', 'src', 'cli.ts') },
    only: { type: 'string', default: '' },
    'timeout-ms': { type: 'string', default: '120000' },
    'settle-max-ms': { type: 'string', default: '60000' },
  },
});
const RUNS = Math.max(1, Number(args.runs));
const TIMEOUT_MS = Number(args['timeout-ms']);
const SETTLE_MAX_MS = Number(args['settle-max-ms']);
const MiB = 1024 * 1024;
const CLK_TCK = 100; // Linux USER_HZ; /proc reports CPU time in these ticks.

interface Case {
  readonly name: string;
  readonly body: () => Buffer;
  readonly headers: Record<string, string>;
  /** Parallel copies sent at once (CPU is reported per request). */
  readonly concurrent?: number;
  /** Hang up this long after sending instead of waiting for the answer. */
  readonly hangUpAfterMs?: number;
}

const ndjson = { 'content-type': 'application/x-ndjson' };
const gz = { 'content-encoding': 'gzip' };
const zs = { 'content-encoding': 'zstd' };

/** Concatenated copies of `piece` up to about `bytes`. */
function repeatTo(piece: Buffer, bytes: number): Buffer {
  return Buffer.concat(Array.from({ length: Math.floor(bytes / piece.length) }, () => piece));
}

function skippableFrame(): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(0x184d2a50, 0);
  return b;
}

/** `decodedBytes` of zeros as concatenated 16 MiB members/frames (fast to build, like a real bomb). */
function bomb(kind: 'gzip' | 'zstd', decodedBytes: number): Buffer {
  const piece = Buffer.alloc(16 * MiB);
  const member = kind === 'gzip' ? gzipSync(piece, { level: 9 }) : zstdCompressSync(piece);
  return Buffer.concat(Array.from({ length: Math.ceil(decodedBytes / piece.length) }, () => member));
}

function largestLegal(): Buffer {
  // 100 000 records (the cap) filling 32 MiB (decodedBytesMax): the most a legal request can ask.
  const per = Math.floor((32 * MiB - 1024) / 100_000);
  const head = '{"event":"page_view","pad":"';
  const tail = '"}\n';
  const line = head + 'x'.repeat(per - head.length - tail.length) + tail;
  return gzipSync(Buffer.from(line.repeat(100_000)));
}

function legalFrames(): Buffer {
  const line = `{"pad":"${'x'.repeat(1000)}"}\n`;
  const frame = zstdCompressSync(Buffer.from(line.repeat(32)));
  return Buffer.concat(Array.from({ length: 1000 }, () => frame));
}

const recordioEmpty = (n: number): Buffer => Buffer.alloc(4 * n); // n zero-length records

const CASES: Case[] = [
  {
    name: 'records flood: NDJSON "1\\n" x 16 M (gzip)',
    body: () => gzipSync(Buffer.from('1\n'.repeat(16 * MiB - 1))),
    headers: { ...ndjson, ...gz },
  },
  {
    name: 'records flood: NDJSON x 4 M, unencoded 8 MiB',
    body: () => Buffer.from('1\n'.repeat(4 * MiB)),
    headers: ndjson,
  },
  {
    name: 'records flood: JSON array of {} x 10 M (gzip)',
    body: () => gzipSync(Buffer.from(`[${'{},'.repeat(10 * MiB)}{}]`)),
    headers: { 'content-type': 'application/json', ...gz },
  },
  {
    name: 'records flood: RecordIO empty x 8 M (gzip)',
    body: () => gzipSync(recordioEmpty(8 * MiB - 1)),
    headers: { 'content-type': 'application/x-recordio', ...gz },
  },
  {
    name: 'records flood x 8 concurrent (gzip NDJSON)',
    body: () => gzipSync(Buffer.from('1\n'.repeat(16 * MiB - 1))),
    headers: { ...ndjson, ...gz },
    concurrent: 8,
  },
  {
    name: 'zstd frame flood: 8 MiB of empty frames',
    body: () => repeatTo(zstdCompressSync(Buffer.alloc(0)), 8 * MiB),
    headers: { ...ndjson, ...zs },
  },
  {
    name: 'zstd frame flood: 8 MiB of 1-record frames',
    body: () => repeatTo(zstdCompressSync(Buffer.from('{"f":1}\n')), 8 * MiB),
    headers: { ...ndjson, ...zs },
  },
  {
    // A legal body (1000 zstd frames of 32 KiB: 32 MiB, 32 000 records) that is small, so it has
    // arrived before the hang-up: what is measured is the decoding that follows. The code before
    // the bounds finished it and wrote the records anyway.
    name: 'legal 1000-frame zstd body, client hangs up after 50 ms',
    body: legalFrames,
    headers: { ...ndjson, ...zs },
    hangUpAfterMs: 50,
  },
  {
    name: 'zstd skippable frames: 8 MiB of 8-byte frames',
    body: () => repeatTo(skippableFrame(), 8 * MiB),
    headers: { ...ndjson, ...zs },
  },
  {
    name: 'gzip member flood: 8 MiB of empty members',
    body: () => repeatTo(gzipSync(Buffer.alloc(0)), 8 * MiB),
    headers: { ...ndjson, ...gz },
  },
  { name: 'gzip bomb: 1 GiB of zeros', body: () => bomb('gzip', 1024 * MiB), headers: { ...ndjson, ...gz } },
  { name: 'zstd bomb: 1 GiB of zeros', body: () => bomb('zstd', 1024 * MiB), headers: { ...ndjson, ...zs } },
  {
    name: 'gzip inside gzip (inner: 1 GiB bomb)',
    body: () => gzipSync(bomb('gzip', 1024 * MiB)),
    headers: { ...ndjson, ...gz },
  },
  {
    name: 'Content-Encoding: gzip, gzip',
    body: () => gzipSync(gzipSync(Buffer.from('{"a":1}\n'))),
    headers: { ...ndjson, 'content-encoding': 'gzip, gzip' },
  },
  {
    name: 'huge single line: 32 MiB, no newline (gzip)',
    body: () => gzipSync(Buffer.alloc(32 * MiB - 1, 0x61)),
    headers: { ...ndjson, ...gz },
  },
  {
    name: 'deep JSON: application/json of 8 M "[" (gzip)',
    body: () => gzipSync(Buffer.alloc(8 * MiB, 0x5b)),
    headers: { 'content-type': 'application/json', ...gz },
  },
  {
    name: 'deep JSON: NDJSON lines nested 500 K deep',
    body: () => {
      const line = `${'['.repeat(500_000)}${']'.repeat(500_000)}\n`;
      return gzipSync(Buffer.from(line.repeat(30)));
    },
    headers: { ...ndjson, ...gz },
  },
  {
    name: 'largest legal request: 100 000 records, 32 MiB',
    body: largestLegal,
    headers: { ...ndjson, ...gz },
  },
];

// ---- the child and its /proc figures

async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at field 3; utime and stime are 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

async function statusKb(pid: number, key: 'VmHWM' | 'VmRSS'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
  return Number(m?.[1] ?? 0);
}

/** Resets the peak RSS (VmHWM) to the current RSS; false where the kernel does not allow it. */
async function resetPeak(pid: number): Promise<boolean> {
  try {
    await writeFile(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** Waits until the child spends < 10 ms of CPU in each of two 100 ms windows (at most --settle-max-ms). */
async function settle(pid: number): Promise<void> {
  let quiet = 0;
  let last = await cpuSeconds(pid);
  const deadline = Date.now() + SETTLE_MAX_MS;
  while (quiet < 2 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    const now = await cpuSeconds(pid);
    quiet = now - last < 0.01 ? quiet + 1 : 0;
    last = now;
  }
}

interface Child {
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly url: string;
  readonly adminUrl: string;
  readonly dir: string;
}

async function startChild(): Promise<Child> {
  const dir = await mkdtemp(path.join(tmpdir(), 'landfall-hostile-'));
  const proc = spawn(
    process.execPath,
    [
      args.cli,
      'serve',
      `--wal.dir=${path.join(dir, 'wal')}`,
      `--s3.localDir=${path.join(dir, 'bucket')}`,
      '--listen.port=0',
      `--validation=${args.validation}`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  proc.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  proc.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  const deadline = Date.now() + 30_000;
  for (;;) {
    const url = /"url":"(http:\/\/[^"]+)"[^\n]*listening/.exec(out)?.[1];
    const adminUrl = /"adminUrl":"(http:\/\/[^"]+)"[^\n]*listening/.exec(out)?.[1];
    if (url !== undefined && adminUrl !== undefined && proc.pid !== undefined)
      return { proc, pid: proc.pid, url, adminUrl, dir };
    if (proc.exitCode !== null || Date.now() > deadline)
      throw new Error(`landfall serve did not start:\n${out.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function nextSeq(url: string): Promise<bigint> {
  const res = await fetch(`${url}/v1/status`);
  const s = (await res.json()) as { wal: { nextSeq: string } };
  return BigInt(s.wal.nextSeq);
}

async function send(url: string, c: Case, body: Buffer): Promise<string> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), c.hangUpAfterMs ?? TIMEOUT_MS);
  try {
    const res = await fetch(`${url}/v1/ingest`, {
      method: 'POST',
      headers: c.headers,
      body: new Uint8Array(body),
      signal: ac.signal,
    });
    const text = await res.text();
    let code = '';
    try {
      code = (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? '';
    } catch {
      // Not JSON: the status alone says it.
    }
    return `${res.status} ${code}`.trim();
  } catch (err) {
    if (c.hangUpAfterMs !== undefined) return `hung up`;
    return `error: ${(err as Error).message}`;
  } finally {
    clearTimeout(timer);
  }
}

interface Row {
  readonly name: string;
  readonly bodyBytes: number;
  readonly answer: string;
  readonly written: bigint;
  readonly cpuMedianS: number;
  readonly cpuMaxS: number;
  readonly peakRssMiB: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
};

async function runCase(child: Child, c: Case, canReset: boolean): Promise<Row> {
  const body = c.body();
  const n = c.concurrent ?? 1;
  const cpus: number[] = [];
  const answers = new Set<string>();
  let peakKb = 0;
  let written = 0n;
  for (let run = 0; run < RUNS; run++) {
    await settle(child.pid);
    if (canReset) await resetPeak(child.pid);
    let sampled = 0;
    const sampler = canReset
      ? undefined
      : setInterval(() => {
          void statusKb(child.pid, 'VmRSS').then((kb) => (sampled = Math.max(sampled, kb)));
        }, 5);
    const seq0 = await nextSeq(child.adminUrl);
    const cpu0 = await cpuSeconds(child.pid);
    const results = await Promise.all(Array.from({ length: n }, () => send(child.url, c, body)));
    await settle(child.pid);
    const cpu1 = await cpuSeconds(child.pid);
    if (sampler !== undefined) clearInterval(sampler);
    peakKb = Math.max(peakKb, canReset ? await statusKb(child.pid, 'VmHWM') : sampled);
    written += (await nextSeq(child.adminUrl)) - seq0;
    cpus.push((cpu1 - cpu0) / n);
    for (const r of results) answers.add(r);
  }
  return {
    name: c.name,
    bodyBytes: body.length,
    answer: [...answers].join(', '),
    written: written / BigInt(RUNS),
    cpuMedianS: median(cpus),
    cpuMaxS: Math.max(...cpus),
    peakRssMiB: peakKb / 1024,
  };
}

const fmtBytes = (n: number): string =>
  n >= MiB ? `${(n / MiB).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;

async function main(): Promise<void> {
  const child = await startChild();
  // The child must not outlive the bench, however it is stopped.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      child.proc.kill('SIGKILL');
      process.exit(130);
    });
  }
  try {
    const canReset = await resetPeak(child.pid);
    const idleRss = (await statusKb(child.pid, 'VmRSS')) / 1024;
    console.log(
      `hostile bench: ${RUNS} run(s) per case, validation ${args.validation}, node ${process.version}, ` +
        `${cpus().length} cores, load ${loadavg()
          .map((l) => l.toFixed(2))
          .join(
            ' ',
          )}; child idle RSS ${idleRss.toFixed(0)} MiB; peak RSS by ${canReset ? 'VmHWM reset per case' : 'VmRSS sampling'}`,
    );
    const rows: Row[] = [];
    for (const c of CASES) {
      if (args.only !== '' && !args.only.split(',').some((o) => c.name.includes(o))) continue;
      const row = await runCase(child, c, canReset);
      rows.push(row);
      console.log(
        `${row.name}: ${row.answer}, written ${row.written}, cpu ${row.cpuMedianS.toFixed(2)} s (max ${row.cpuMaxS.toFixed(2)}), peak RSS ${row.peakRssMiB.toFixed(0)} MiB`,
      );
      if (child.proc.exitCode !== null) throw new Error(`the node exited (${child.proc.exitCode})`);
    }
    console.log('');
    console.log(
      '| body | sent | answer | records written | CPU s / request (median) | CPU s max | peak RSS MiB |',
    );
    console.log('| --- | --- | --- | --- | --- | --- | --- |');
    for (const r of rows) {
      console.log(
        `| ${r.name} | ${fmtBytes(r.bodyBytes)} | ${r.answer} | ${r.written} | ${r.cpuMedianS.toFixed(2)} | ${r.cpuMaxS.toFixed(2)} | ${r.peakRssMiB.toFixed(0)} |`,
      );
    }
    const worstCpu = Math.max(...rows.map((r) => r.cpuMaxS));
    const worstRss = Math.max(...rows.map((r) => r.peakRssMiB));
    console.log('');
    console.log(
      `worst CPU per request ${worstCpu.toFixed(2)} s (goal ≤ 2), worst peak RSS ${worstRss.toFixed(0)} MiB (goal < 1024)`,
    );
  } finally {
    child.proc.kill('SIGKILL');
    await new Promise((r) => child.proc.once('exit', r));
    await rm(child.dir, { recursive: true, force: true });
  }
}

await main();
