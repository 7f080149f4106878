// Parquet materialisation in child processes with a hard address-space limit
// (issue 14, 15). DuckDB's memory_limit bounds only its buffer manager: an
// expression that grows each value by a factor (replace, regexp_replace, a
// format string that repeats its argument) allocates outside it, and in the
// node's own process that ends in the kernel's OOM killer, again after every
// restart. In a child under RLIMIT_AS it ends in a failed allocation or a
// dead child, which the producer (delivery/parquet-producers.ts) turns into
// `view_failed` DLQ rows for the view that caused it. The DuckDB work also
// leaves the event loop that answers requests, at a lower CPU priority.
//
// Node cannot set a resource limit on a child, so a child starts through
// `/bin/sh -c 'ulimit -v …; exec node child.ts'` (the image carries a
// static-enough dash for this: images/ingest-node.Dockerfile). Starting one
// (Node, type stripping, DuckDB) costs ~0.55 CPU s, so children are kept for
// many jobs: a job takes an idle child or starts one, up to processesMax
// alive. A child is ended after jobsPerProcessMax jobs, after idleMsMax
// without work, when its peak RSS passes peakRssFractionMax of its limit,
// and after any job that failed in it. While the volume its scratch folder
// is on is short of space (setVolumeLow), a child ends after each job and
// idle ones end at once: a warm child keeps its records files for the next
// job (parquet/records.ts filePool, up to twice a segment's payloads), space
// the WAL needs more.
//
// A long-lived child can die of its own history (address space fragmented
// under RLIMIT_AS by earlier jobs) rather than of the job's data, so a death
// only counts against the data in a fresh child: a job whose warm child died,
// failed on the data or wrote a view as view_failed (a view that threw:
// an allocation failure, in practice) runs once more in a child started for
// it, and that outcome is the answer. A child in which a view threw is not
// reused either. A job that outlives jobTimeoutMs is killed and
// counts as a death on the data (no second run: a hang is the data's).
//
// A child's inputs are the segment file, the compiled views and its own
// scratch folder; each job's outputs are files under `<scratch>/jobs/<jobId>`
// and one JSON line on stdout (child.ts). A child that dies leaves nothing
// that is uploaded: its job's folder is removed and only a complete JSON
// answer names files; the parent removes an answered job's folder
// (`release`) when it is done with the files.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { Counter, type Registry } from 'prom-client';
import { SegmentMismatchError } from '../delivery/producers.ts';
import { SegmentCorruptError } from '../wal/format.ts';
import {
  CHILD_NODE_FLAGS,
  CHILD_SCRIPT,
  CHILD_STARTED_LINE,
  decodeJson,
  encodeJson,
  type ChildAnswer,
  type ChildOutputs,
  type ChildRequest,
  type ChildSetup,
} from './child-protocol.ts';
import { JOBS_DIR } from './duckdb.ts';
import { viewsProcessJobTimeoutMsDefault, viewsProcessNiceDefault } from '../views/settings.ts';

export type { ChildOutputs, ChildRequest } from './child-protocol.ts';

/**
 * A child must print its started line within this (Node, type stripping and
 * DuckDB: ~0.6 CPU s, 1.7 s wall on a loaded 2-core machine); else it is
 * killed and the start fails outside the data (retried with backoff).
 */
export const CHILD_START_TIMEOUT_MS = 60_000;
/** The shell that sets the limit (POSIX `ulimit -v`, KiB). */
export const LIMIT_SHELL = '/bin/sh';
/** Bytes of one stdout line (a JSON answer) read from a child; stderr kept per job (head and tail, for the reason). */
const STDOUT_LINE_BYTES_MAX = 64 * 1024 * 1024;
const STDERR_TAIL_BYTES = 4096;
/**
 * Jobs one child serves before it is replaced. Its start (~0.55 CPU s) is
 * then under 1% of the work (a segment takes 0.1–2 CPU s), and a slow leak
 * or fragmentation of its address space has at most this many jobs to grow.
 */
export const JOBS_PER_PROCESS_MAX_DEFAULT = 100;
/**
 * A child idle this long is ended, its memory (~150 MiB resident) freed. Twice
 * wal.segmentAgeMsMax's default (60 s): a node with a trickle of traffic,
 * sealing a segment a minute, keeps its child; a quiet one gives it back.
 */
export const IDLE_MS_MAX_DEFAULT = 120_000;
/**
 * A child whose peak RSS passed this fraction of its address-space limit is
 * replaced after its job: the allocator keeps what it grew to, and the next
 * job would start with less of the limit left than a fresh child has.
 */
export const PEAK_RSS_FRACTION_MAX_DEFAULT = 0.5;
/** A child asked to end (stdin closed) that has not exited after this is killed. */
const END_GRACE_MS = 10_000;

/** The child could not do its work for a reason outside the data (disk, a child that would not start): retried. */
export class MaterializerError extends Error {
  readonly code: string;
  constructor(message: string, code = 'MATERIALIZER_FAILED') {
    super(message);
    this.name = 'MaterializerError';
    this.code = code;
  }
}

export type ChildOutcome =
  | {
      readonly kind: 'ok';
      readonly outputs: ChildOutputs;
      readonly wallMs: number;
      /** Removes the job's folder (its outputs): call once the files are moved or given up. */
      readonly release: () => Promise<void>;
    }
  /** The child died or failed on the data (out of memory under its limit, a signal, a hang): `reason` says how. */
  | { readonly kind: 'died'; readonly reason: string; readonly wallMs: number };

export interface ChildRunnerOptions {
  /** RLIMIT_AS of each child (views.processAddressSpaceBytes). */
  readonly addressSpaceBytes: number;
  /** Children alive at once (views.processesMax); later runs wait. */
  readonly processesMax: number;
  /** Each child's scratch folder, fixed for its life, is a folder of its own under this one. */
  readonly scratchDir: string;
  /** DuckDB memory_limit and threads of each child (views.memoryLimitBytes, views.threads). */
  readonly memoryLimitBytes: number;
  readonly threads: number;
  /** Niceness each child adds to its own (views.processNice, 0–19). */
  readonly nice?: number;
  /** A job running longer is killed and counts as a death on the data (views.processJobTimeoutMs). */
  readonly jobTimeoutMs?: number;
  /** A child not up within this is killed; the start fails outside the data. Default CHILD_START_TIMEOUT_MS. */
  readonly startTimeoutMs?: number;
  readonly jobsPerProcessMax?: number;
  readonly idleMsMax?: number;
  readonly peakRssFractionMax?: number;
  /** landfall_parquet_child_* counters go here. */
  readonly registry?: Registry;
  /** Overrides for tests: the shell and the script. */
  readonly shell?: string;
  readonly script?: string;
}

export interface ChildInfo {
  readonly pid: number;
  readonly state: 'starting' | 'idle' | 'busy' | 'ending';
  readonly jobsServed: number;
  readonly peakRssBytes: number;
}

export interface ChildRunner {
  readonly addressSpaceBytes: number;
  /** Children alive now. */
  running(): number;
  /** The children alive now (status, tests). */
  children(): ChildInfo[];
  /**
   * Runs one job in a child. Throws for a corrupt segment (SegmentCorruptError
   * or a mismatch, which the pipeline quarantines), for a failure outside the
   * data (MaterializerError: retried) and when `signal` aborts (the child is
   * killed).
   */
  run(request: ChildRequest, signal?: AbortSignal): Promise<ChildOutcome>;
  /**
   * While `low`, no child is kept between jobs: idle children end now, busy
   * ones when their job is answered, and their folders (records pool
   * included) go once their outputs are released.
   */
  setVolumeLow(low: boolean): void;
  /** Ends idle children, waits up to graceMs for running jobs, then kills what is left; resolves when every child has exited. */
  close(graceMs: number): Promise<void>;
}

function human(bytes: number): string {
  return bytes % 2 ** 30 === 0 ? `${bytes / 2 ** 30} GiB` : `${Math.round(bytes / 2 ** 20)} MiB`;
}

type RetireReason = 'jobs' | 'rss' | 'idle' | 'failed' | 'timeout' | 'replaced' | 'volume_low' | 'close';

interface Child {
  readonly serial: number;
  readonly proc: ChildProcess;
  readonly dir: string;
  state: 'starting' | 'idle' | 'busy' | 'ending' | 'dead';
  readonly started: Promise<void>;
  readonly exited: Promise<void>;
  jobsServed: number;
  peakRssBytes: number;
  /** Answered jobs whose folders the parent still holds: the child's folder goes when it is dead and this is 0. */
  held: number;
  idleTimer?: NodeJS.Timeout;
  /** The running job's hooks. */
  onLine?: (line: string) => void;
  onClose?: (code: number | null, signal: NodeJS.Signals | null) => void;
  errHead: string;
  errTail: Buffer;
}

/** What the child's stderr says: the head what failed (a V8 or DuckDB message), else the tail where. */
function stderrReason(c: Child): string {
  const headLines = c.errHead
    .split('\n')
    .map((l) => l.replace(/^#\s*/, '').trim())
    .filter((l) => l !== '' && !/^-+/.test(l));
  return (headLines.length > 0 ? headLines : c.errTail.toString('utf8').trim().split('\n'))
    .slice(0, 2)
    .join(' | ');
}

/** Outcome of one job in one child, before the fresh-child rule. */
type Attempt =
  | {
      readonly kind: 'ok';
      readonly outputs: ChildOutputs;
      readonly wallMs: number;
      /** A view the request ran failed inside the child (its rows written as view_failed). */
      readonly viewFailed: boolean;
    }
  | { readonly kind: 'died'; readonly reason: string; readonly wallMs: number; readonly hung: boolean };

/** Child folders are unique in this process, whatever runner or scratch folder they belong to. */
let childSerial = 0;

export function createChildRunner(o: ChildRunnerOptions): ChildRunner {
  const shell = o.shell ?? LIMIT_SHELL;
  const script = o.script ?? CHILD_SCRIPT;
  if (!existsSync(shell))
    throw new MaterializerError(
      `${shell} is missing: Parquet materialisation runs in a child process whose memory limit a POSIX shell sets (ulimit -v)`,
      'MATERIALIZER_SHELL_MISSING',
    );
  if (!Number.isInteger(o.processesMax) || o.processesMax < 1) throw new Error('processesMax must be ≥ 1');
  const nice = o.nice ?? viewsProcessNiceDefault;
  if (!Number.isInteger(nice) || nice < 0 || nice > 19) throw new Error('nice must be an integer 0–19');
  const jobTimeoutMs = o.jobTimeoutMs ?? viewsProcessJobTimeoutMsDefault;
  const startTimeoutMs = o.startTimeoutMs ?? CHILD_START_TIMEOUT_MS;
  const jobsPerProcessMax = o.jobsPerProcessMax ?? JOBS_PER_PROCESS_MAX_DEFAULT;
  const idleMsMax = o.idleMsMax ?? IDLE_MS_MAX_DEFAULT;
  const peakRssBytesMax = (o.peakRssFractionMax ?? PEAK_RSS_FRACTION_MAX_DEFAULT) * o.addressSpaceBytes;
  const kib = Math.floor(o.addressSpaceBytes / 1024);
  const limitText = human(o.addressSpaceBytes);
  const metrics = o.registry !== undefined ? registerMetrics(o.registry) : undefined;

  let active = 0;
  const waiters: (() => void)[] = [];
  const children = new Set<Child>();
  /** Folders of exited children being removed: close() waits for them too. */
  const removals = new Set<Promise<void>>();
  let closed = false;
  let volumeLow = false;

  const acquire = async (signal?: AbortSignal): Promise<void> => {
    if (active < o.processesMax) {
      active++;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const go = (): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = (): void => {
        const i = waiters.indexOf(go);
        if (i >= 0) waiters.splice(i, 1);
        reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      waiters.push(go);
    });
  };
  const release = (): void => {
    const next = waiters.shift();
    if (next !== undefined) next();
    else active--;
  };

  const removeDirIfDone = async (c: Child): Promise<void> => {
    if (c.state === 'dead' && c.held === 0) await rm(c.dir, { recursive: true, force: true });
  };

  /** Asks a child to end (stdin closed: DuckDB closes, the process exits), killed if it does not. */
  const retire = (c: Child, reason: RetireReason, kill = false): void => {
    if (c.state === 'ending' || c.state === 'dead') return;
    c.state = 'ending';
    clearTimeout(c.idleTimer);
    metrics?.retired.inc({ reason });
    if (kill) c.proc.kill('SIGKILL');
    else {
      c.proc.stdin?.end();
      setTimeout(() => c.proc.kill('SIGKILL'), END_GRACE_MS).unref();
    }
  };

  const startChild = (): Child => {
    const serial = ++childSerial;
    const dir = path.join(o.scratchDir, `${process.pid}-${serial}`);
    const setup: ChildSetup = {
      scratchDir: dir,
      memoryLimitBytes: o.memoryLimitBytes,
      threads: o.threads,
      nice,
    };
    const proc = spawn(
      shell,
      [
        '-c',
        'ulimit -v "$1" || exit 125; shift; exec "$@"',
        'landfall-parquet',
        String(kib),
        process.execPath,
        ...CHILD_NODE_FLAGS,
        script,
        JSON.stringify(setup),
      ],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
        // glibc reserves 64 MiB of address space per malloc arena (one per
        // thread): under RLIMIT_AS that is budget spent on nothing.
        env: { ...process.env, MALLOC_ARENA_MAX: '2', NODE_OPTIONS: '' },
      },
    );
    metrics?.starts.inc();
    let startedResolve!: () => void;
    let startedReject!: (e: Error) => void;
    const started = new Promise<void>((res, rej) => {
      startedResolve = res;
      startedReject = rej;
    });
    // The job that started it awaits this; nobody may be left with an unhandled rejection.
    started.catch(() => undefined);
    let exitedResolve!: () => void;
    const exited = new Promise<void>((res) => {
      exitedResolve = res;
    });
    const c: Child = {
      serial,
      proc,
      dir,
      state: 'starting',
      started,
      exited,
      jobsServed: 0,
      peakRssBytes: 0,
      held: 0,
      errHead: '',
      errTail: Buffer.alloc(0),
    };
    children.add(c);
    let up = false;
    // A child that neither comes up nor exits (DuckDB stuck on a hung scratch
    // volume) would hold its slot, and all Parquet work, for ever.
    let startTimedOut = false;
    const startTimer = setTimeout(() => {
      if (up) return;
      startTimedOut = true;
      proc.kill('SIGKILL');
    }, startTimeoutMs);
    startTimer.unref();
    const onLine = (line: string): void => {
      if (!up) {
        if (line === CHILD_STARTED_LINE) {
          up = true;
          clearTimeout(startTimer);
          startedResolve();
        } else proc.kill('SIGKILL');
        return;
      }
      if (c.onLine !== undefined) c.onLine(line);
      // A line nobody asked for: the child is not speaking the protocol.
      else proc.kill('SIGKILL');
    };
    let partial: Buffer[] = [];
    let partialBytes = 0;
    proc.stdout.on('data', (chunk: Buffer) => {
      let from = 0;
      for (;;) {
        const nl = chunk.indexOf(10, from);
        if (nl < 0) break;
        partial.push(chunk.subarray(from, nl));
        const line = Buffer.concat(partial).toString('utf8');
        partial = [];
        partialBytes = 0;
        from = nl + 1;
        if (line !== '') onLine(line);
      }
      if (from < chunk.length) {
        partialBytes += chunk.length - from;
        if (partialBytes > STDOUT_LINE_BYTES_MAX) {
          partial = [];
          partialBytes = 0;
          proc.kill('SIGKILL');
        } else partial.push(chunk.subarray(from));
      }
    });
    // The head says what failed (a V8 or DuckDB message), the tail where.
    proc.stderr.on('data', (chunk: Buffer) => {
      if (c.errHead.length < STDERR_TAIL_BYTES)
        c.errHead += chunk.toString('utf8').slice(0, STDERR_TAIL_BYTES - c.errHead.length);
      c.errTail = Buffer.concat([c.errTail, chunk]);
      if (c.errTail.length > STDERR_TAIL_BYTES)
        c.errTail = c.errTail.subarray(c.errTail.length - STDERR_TAIL_BYTES);
    });
    // A child that dies before reading its request closes stdin under us (EPIPE): the exit says why.
    proc.stdin.on('error', () => {});
    let spawnError: Error | undefined;
    const gone = (code: number | null, sig: NodeJS.Signals | null): void => {
      if (c.state === 'dead') return;
      c.state = 'dead';
      clearTimeout(c.idleTimer);
      clearTimeout(startTimer);
      children.delete(c);
      if (!up) {
        // Node or DuckDB did not come up under the limit, or the shell could
        // not set it: the configuration or the machine, not the data.
        startedReject(
          closed
            ? new MaterializerError('the Parquet child runner is closed', 'MATERIALIZER_CLOSED')
            : spawnError !== undefined
              ? new MaterializerError(
                  `could not start the Parquet child process: ${spawnError.message}`,
                  'MATERIALIZER_SPAWN',
                )
              : new MaterializerError(
                  startTimedOut
                    ? `the Parquet child process did not start within ${startTimeoutMs} ms (address-space limit ${limitText}): ${stderrReason(c)}`
                    : `the Parquet child process did not start (exit ${code ?? sig}, address-space limit ${limitText}): ${stderrReason(c)}`,
                  'MATERIALIZER_START',
                ),
        );
      }
      c.onClose?.(code, sig);
      const removal = removeDirIfDone(c)
        .catch(() => undefined)
        .finally(() => {
          removals.delete(removal);
          exitedResolve();
        });
      removals.add(removal);
    };
    // A child that could not be spawned has no 'close' to wait for.
    proc.on('error', (e) => {
      spawnError = e;
      if (proc.pid === undefined) gone(null, null);
    });
    proc.on('close', gone);
    return c;
  };

  const alive = (): number => children.size;

  /** An idle child (unless `fresh`), or a new one once there is room for it. */
  const takeChild = async (fresh: boolean): Promise<Child> => {
    const refuseIfClosed = (): void => {
      if (closed) throw new MaterializerError('the Parquet child runner is closed', 'MATERIALIZER_CLOSED');
    };
    refuseIfClosed();
    if (!fresh) {
      for (const c of children)
        if (c.state === 'idle') {
          clearTimeout(c.idleTimer);
          c.state = 'busy';
          return c;
        }
    }
    while (alive() >= o.processesMax) {
      // Room is held by idle children (a fresh one is wanted) or by children
      // on their way out (each running job holds at most one other child).
      const idle = [...children].find((c) => c.state === 'idle');
      if (idle !== undefined) retire(idle, 'replaced');
      const ending = [...children].filter((c) => c.state === 'ending');
      await Promise.race((ending.length > 0 ? ending : [...children]).map((c) => c.exited));
      refuseIfClosed();
    }
    // close() waits for the children it saw: none may start after it began.
    refuseIfClosed();
    const c = startChild();
    await c.started;
    if (closed) {
      c.proc.kill('SIGKILL');
      refuseIfClosed();
    }
    c.state = 'busy';
    return c;
  };

  /** After an answered job: keep the child for the next one, or end it. */
  const settle = (c: Child): void => {
    if (c.state !== 'busy') return;
    if (closed) retire(c, 'close');
    else if (c.jobsServed >= jobsPerProcessMax) retire(c, 'jobs');
    else if (c.peakRssBytes > peakRssBytesMax) retire(c, 'rss');
    else if (volumeLow) retire(c, 'volume_low');
    else {
      c.state = 'idle';
      c.idleTimer = setTimeout(() => retire(c, 'idle'), idleMsMax);
      c.idleTimer.unref();
    }
  };

  /** One job in one child (busy). Resolves with its outcome; throws what the job throws. */
  const attempt = (c: Child, request: ChildRequest, signal?: AbortSignal): Promise<Attempt> =>
    new Promise<Attempt>((resolve, reject) => {
      const startedAt = performance.now();
      c.errHead = '';
      c.errTail = Buffer.alloc(0);
      let aborted = false;
      let hung = false;
      let garbled = false;
      const onAbort = (): void => {
        aborted = true;
        // Delivery stopping (the node closing): not the child's fault, not the data's.
        retire(c, 'close', true);
      };
      const timer = setTimeout(() => {
        hung = true;
        retire(c, 'timeout', true);
      }, jobTimeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        c.onLine = undefined;
        c.onClose = undefined;
      };
      c.onLine = (line) => {
        let answer: ChildAnswer;
        try {
          answer = decodeJson(line) as ChildAnswer;
        } catch {
          garbled = true;
          retire(c, 'failed', true);
          return;
        }
        done();
        const wallMs = performance.now() - startedAt;
        c.jobsServed++;
        metrics?.jobs.inc();
        if (answer.ok) {
          c.peakRssBytes = Math.max(c.peakRssBytes, answer.outputs.maxRssBytes);
          // A view that threw (an allocation failure under the limit, in
          // practice) leaves the child's DuckDB and heap in doubt: not reused.
          const viewFailed = answer.outputs.views.some(
            (v) => v.failed !== undefined && request.failedViews?.[v.view] === undefined,
          );
          if (viewFailed) retire(c, 'failed');
          else settle(c);
          resolve({ kind: 'ok', outputs: answer.outputs, wallMs, viewFailed });
          return;
        }
        const e = answer.error;
        if (e.kind === 'defect') {
          settle(c);
          reject(
            new SegmentCorruptError(
              e.offset ?? 0,
              (e.reason ?? 'crc') as ConstructorParameters<typeof SegmentCorruptError>[1],
              `read in the Parquet child: ${e.message}`,
            ),
          );
        } else if (e.kind === 'mismatch') {
          settle(c);
          reject(new SegmentMismatchError(e.message));
        } else if (e.kind === 'outside') {
          retire(c, 'failed');
          reject(new MaterializerError(e.message, e.code ?? 'MATERIALIZER_IO'));
        } else {
          retire(c, 'failed');
          resolve({
            kind: 'died',
            reason: `the materialiser failed under its ${limitText} address-space limit: ${e.message}`,
            wallMs,
            hung: false,
          });
        }
      };
      c.onClose = (code, sig) => {
        done();
        const wallMs = performance.now() - startedAt;
        if (aborted) {
          reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
          return;
        }
        if (closed && !hung) {
          reject(
            new MaterializerError('Parquet child process stopped: the runner closed', 'MATERIALIZER_CLOSED'),
          );
          return;
        }
        const tail = stderrReason(c);
        if (hung) {
          resolve({
            kind: 'died',
            reason: `the materialiser ran longer than views.processJobTimeoutMs (${jobTimeoutMs} ms) and was killed`,
            wallMs,
            hung: true,
          });
          return;
        }
        const how = garbled ? 'answered garbage' : sig !== null ? `was killed by ${sig}` : `exited ${code}`;
        resolve({
          kind: 'died',
          reason: `the materialiser process ${how} under its ${limitText} address-space limit${tail !== '' ? `: ${tail}` : ''}`,
          wallMs,
          hung: false,
        });
      };
      if (signal?.aborted === true) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      c.proc.stdin?.write(`${encodeJson(request)}\n`);
    });

  const jobDirOf = (c: Child, request: ChildRequest): string => path.join(c.dir, JOBS_DIR, request.jobId);

  /** Takes a child, runs the job; a dead job's folder is removed before anything else runs. */
  const runIn = async (
    fresh: boolean,
    request: ChildRequest,
    signal?: AbortSignal,
  ): Promise<{ child: Child; warm: boolean; result: Attempt }> => {
    const c = await takeChild(fresh);
    const warm = c.jobsServed > 0;
    const jobDir = jobDirOf(c, request);
    try {
      const result = await attempt(c, request, signal);
      if (result.kind !== 'ok') await rm(jobDir, { recursive: true, force: true });
      return { child: c, warm, result };
    } catch (err) {
      await rm(jobDir, { recursive: true, force: true });
      throw err;
    }
  };

  return {
    addressSpaceBytes: o.addressSpaceBytes,
    running: alive,
    children: () =>
      [...children].map((c) => ({
        pid: c.proc.pid ?? 0,
        state: c.state === 'dead' ? 'ending' : c.state,
        jobsServed: c.jobsServed,
        peakRssBytes: c.peakRssBytes,
      })),
    async run(request, signal) {
      if (closed) throw new MaterializerError('the Parquet child runner is closed', 'MATERIALIZER_CLOSED');
      signal?.throwIfAborted();
      await acquire(signal);
      try {
        if (closed) throw new MaterializerError('the Parquet child runner is closed', 'MATERIALIZER_CLOSED');
        const first = await runIn(false, request, signal);
        let { child, result } = first;
        const failed = result.kind === 'died' ? !result.hung : result.viewFailed;
        if (failed && first.warm) {
          // The child had served other jobs: its death, or a view's failure
          // in it, may be theirs (its heap, its fragmented address space), so
          // only a fresh child's outcome counts.
          if (result.kind === 'ok') await rm(jobDirOf(child, request), { recursive: true, force: true });
          metrics?.reruns.inc();
          ({ child, result } = await runIn(true, request, signal));
        }
        if (result.kind === 'died') return { kind: 'died', reason: result.reason, wallMs: result.wallMs };
        const jobDir = jobDirOf(child, request);
        child.held++;
        let released = false;
        return {
          kind: 'ok',
          outputs: result.outputs,
          wallMs: result.wallMs,
          release: async () => {
            if (released) return;
            released = true;
            await rm(jobDir, { recursive: true, force: true });
            child.held--;
            await removeDirIfDone(child);
          },
        };
      } finally {
        release();
      }
    },
    setVolumeLow(low) {
      volumeLow = low;
      if (low) for (const c of children) if (c.state === 'idle') retire(c, 'volume_low');
    },
    async close(graceMs) {
      closed = true;
      for (const c of children) if (c.state === 'idle') retire(c, 'close');
      const deadline = Date.now() + graceMs;
      const busy = (): boolean => [...children].some((c) => c.state === 'busy' || c.state === 'starting');
      while (busy() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const c of children) {
        if (c.state !== 'ending') metrics?.retired.inc({ reason: 'close' });
        if (c.state !== 'starting') c.state = 'ending';
        c.proc.kill('SIGKILL');
      }
      await Promise.all([...children].map((c) => c.exited));
      await Promise.all([...removals]);
    },
  };
}

interface RunnerMetrics {
  starts: Counter;
  jobs: Counter;
  reruns: Counter;
  retired: Counter<'reason'>;
}

function registerMetrics(registry: Registry): RunnerMetrics {
  const fresh = (name: string): string => {
    if (registry.getSingleMetric(name) !== undefined) registry.removeSingleMetric(name);
    return name;
  };
  return {
    starts: new Counter({
      name: fresh('landfall_parquet_child_starts_total'),
      help: 'Parquet child processes started (each costs ~0.55 CPU s: Node, type stripping, DuckDB).',
      registers: [registry],
    }),
    jobs: new Counter({
      name: fresh('landfall_parquet_child_jobs_total'),
      help: 'Jobs Parquet child processes answered; divided by landfall_parquet_child_starts_total, the jobs each child served.',
      registers: [registry],
    }),
    reruns: new Counter({
      name: fresh('landfall_parquet_child_reruns_total'),
      help: 'Jobs run again in a fresh child because the child that had served earlier jobs died or failed on them (only a fresh child’s death counts against the data).',
      registers: [registry],
    }),
    retired: new Counter({
      name: fresh('landfall_parquet_child_retired_total'),
      help: 'Parquet child processes ended, by reason (jobs: jobsPerProcessMax served; rss: peak RSS past its share of the limit; idle: no work for a while; failed: died or failed on a job; timeout: a job outlived views.processJobTimeoutMs; replaced: made room for a fresh child; close: the node stopped or the job was aborted).',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
  };
}
