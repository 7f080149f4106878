// Parquet materialisation in a child process with a hard address-space limit
// (issue 14, 15). DuckDB's memory_limit bounds only its buffer manager: an
// expression that grows each value by a factor (replace, regexp_replace, a
// format string that repeats its argument) allocates outside it, and in the
// node's own process that ends in the kernel's OOM killer, again after every
// restart. In a child under RLIMIT_AS it ends in a failed allocation or a
// dead child, which the producer (delivery/parquet-producers.ts) turns into
// `view_failed` DLQ rows for the view that caused it. The DuckDB work also
// leaves the event loop that answers requests.
//
// Node cannot set a resource limit on a child, so the child starts through
// `/bin/sh -c 'ulimit -v …; exec node child.ts'` (the image carries a
// static-enough dash for this: images/ingest-node.Dockerfile). The child's
// inputs are the segment file, the compiled views and its own scratch folder;
// its output is the files there and one JSON line on stdout (child.ts). A
// child that dies leaves nothing that is uploaded: its folder is removed and
// only a complete JSON answer names files.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { SegmentMismatchError } from '../delivery/producers.ts';
import { SegmentCorruptError } from '../wal/format.ts';
import {
  CHILD_NODE_FLAGS,
  CHILD_SCRIPT,
  decodeJson,
  encodeJson,
  type ChildAnswer,
  type ChildOutputs,
  type ChildRequest,
} from './child-protocol.ts';

export type { ChildOutputs, ChildRequest } from './child-protocol.ts';

/** The shell that sets the limit (POSIX `ulimit -v`, KiB). */
export const LIMIT_SHELL = '/bin/sh';
/** Bytes of stdout (the JSON answer) and stderr (kept for the reason) read from a child. */
const STDOUT_BYTES_MAX = 64 * 1024 * 1024;
const STDERR_TAIL_BYTES = 4096;

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
  | { readonly kind: 'ok'; readonly outputs: ChildOutputs; readonly wallMs: number }
  /** The child died or failed on the data (out of memory under its limit, a signal): `reason` says how. */
  | { readonly kind: 'died'; readonly reason: string; readonly wallMs: number };

export interface ChildRunnerOptions {
  /** RLIMIT_AS of each child (views.processAddressSpaceBytes). */
  readonly addressSpaceBytes: number;
  /** Children alive at once (views.processesMax); later runs wait. */
  readonly processesMax: number;
  /** Overrides for tests: the shell and the script. */
  readonly shell?: string;
  readonly script?: string;
}

export interface ChildRunner {
  readonly addressSpaceBytes: number;
  /** Children alive now. */
  running(): number;
  /**
   * Runs one child. Throws for a corrupt segment (SegmentCorruptError or a
   * mismatch, which the pipeline quarantines), for a failure outside the data
   * (MaterializerError: retried) and when `signal` aborts (the child is killed).
   */
  run(request: ChildRequest, signal?: AbortSignal): Promise<ChildOutcome>;
  /** Waits up to graceMs for running children, then kills them. */
  close(graceMs: number): Promise<void>;
}

function human(bytes: number): string {
  return bytes % 2 ** 30 === 0 ? `${bytes / 2 ** 30} GiB` : `${Math.round(bytes / 2 ** 20)} MiB`;
}

export function createChildRunner(o: ChildRunnerOptions): ChildRunner {
  const shell = o.shell ?? LIMIT_SHELL;
  const script = o.script ?? CHILD_SCRIPT;
  if (!existsSync(shell))
    throw new MaterializerError(
      `${shell} is missing: Parquet materialisation runs in a child process whose memory limit a POSIX shell sets (ulimit -v)`,
      'MATERIALIZER_SHELL_MISSING',
    );
  if (!Number.isInteger(o.processesMax) || o.processesMax < 1) throw new Error('processesMax must be ≥ 1');
  const kib = Math.floor(o.addressSpaceBytes / 1024);
  let active = 0;
  const waiters: (() => void)[] = [];
  const live = new Set<ChildProcess>();
  let closed = false;

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

  const once = (request: ChildRequest, signal?: AbortSignal): Promise<ChildOutcome> =>
    new Promise<ChildOutcome>((resolve, reject) => {
      const started = performance.now();
      const child = spawn(
        shell,
        [
          '-c',
          'ulimit -v "$1" || exit 125; shift; exec "$@"',
          'landfall-parquet',
          String(kib),
          process.execPath,
          ...CHILD_NODE_FLAGS,
          script,
        ],
        {
          stdio: ['pipe', 'pipe', 'pipe'],
          // glibc reserves 64 MiB of address space per malloc arena (one per
          // thread): under RLIMIT_AS that is budget spent on nothing.
          env: { ...process.env, MALLOC_ARENA_MAX: '2', NODE_OPTIONS: '' },
        },
      );
      live.add(child);
      const out: Buffer[] = [];
      let outBytes = 0;
      let err = Buffer.alloc(0);
      let aborted = false;
      const onAbort = (): void => {
        aborted = true;
        child.kill('SIGKILL');
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      child.stdout.on('data', (c: Buffer) => {
        outBytes += c.length;
        if (outBytes > STDOUT_BYTES_MAX) child.kill('SIGKILL');
        else out.push(c);
      });
      // The head says what failed (a V8 or DuckDB message), the tail where.
      let errHead = '';
      child.stderr.on('data', (c: Buffer) => {
        if (errHead.length < STDERR_TAIL_BYTES) errHead += c.toString('utf8').slice(0, STDERR_TAIL_BYTES);
        err = Buffer.concat([err, c]);
        if (err.length > STDERR_TAIL_BYTES) err = err.subarray(err.length - STDERR_TAIL_BYTES);
      });
      // A child that dies before reading its request closes stdin under us (EPIPE): the exit says why.
      child.stdin.on('error', () => {});
      child.stdin.end(encodeJson(request));
      child.on('error', (e) => {
        live.delete(child);
        signal?.removeEventListener('abort', onAbort);
        reject(
          new MaterializerError(
            `could not start the Parquet child process: ${e.message}`,
            'MATERIALIZER_SPAWN',
          ),
        );
      });
      child.on('close', (code, sig) => {
        live.delete(child);
        signal?.removeEventListener('abort', onAbort);
        const wallMs = performance.now() - started;
        if (aborted || closed) {
          reject(
            signal?.reason instanceof Error ? signal.reason : new Error('Parquet child process stopped'),
          );
          return;
        }
        const text = Buffer.concat(out).toString('utf8');
        const lines = text.split('\n').filter((l) => l !== '');
        const startedOk = lines[0] === '{"started":true}';
        const headLines = errHead
          .split('\n')
          .map((l) => l.replace(/^#\s*/, '').trim())
          .filter((l) => l !== '' && !/^-+/.test(l));
        const tail = (headLines.length > 0 ? headLines : err.toString('utf8').trim().split('\n'))
          .slice(0, 2)
          .join(' | ');
        if (!startedOk) {
          // Node or DuckDB did not come up under the limit, or the shell could
          // not set it: the configuration or the machine, not the data.
          reject(
            new MaterializerError(
              `the Parquet child process did not start (exit ${code ?? sig}, address-space limit ${human(o.addressSpaceBytes)}): ${tail}`,
              'MATERIALIZER_START',
            ),
          );
          return;
        }
        let answer: ChildAnswer | undefined;
        if (code === 0 && lines.length === 2) {
          try {
            answer = decodeJson(lines[1]!) as ChildAnswer;
          } catch {
            answer = undefined;
          }
        }
        if (answer === undefined) {
          const how = sig !== null ? `was killed by ${sig}` : `exited ${code}`;
          resolve({
            kind: 'died',
            reason: `the materialiser process ${how} under its ${human(o.addressSpaceBytes)} address-space limit${tail !== '' ? `: ${tail}` : ''}`,
            wallMs,
          });
          return;
        }
        if (answer.ok) {
          resolve({ kind: 'ok', outputs: answer.outputs, wallMs });
          return;
        }
        const e = answer.error;
        if (e.kind === 'defect') {
          reject(
            new SegmentCorruptError(
              e.offset ?? 0,
              (e.reason ?? 'crc') as ConstructorParameters<typeof SegmentCorruptError>[1],
              `read in the Parquet child: ${e.message}`,
            ),
          );
        } else if (e.kind === 'mismatch') reject(new SegmentMismatchError(e.message));
        else if (e.kind === 'outside') {
          const x = new MaterializerError(e.message, e.code ?? 'MATERIALIZER_IO');
          reject(x);
        } else
          resolve({
            kind: 'died',
            reason: `the materialiser failed under its ${human(o.addressSpaceBytes)} address-space limit: ${e.message}`,
            wallMs,
          });
      });
    });

  return {
    addressSpaceBytes: o.addressSpaceBytes,
    running: () => live.size,
    async run(request, signal) {
      if (closed) throw new MaterializerError('the Parquet child runner is closed', 'MATERIALIZER_CLOSED');
      signal?.throwIfAborted();
      await acquire(signal);
      try {
        await rm(request.scratchDir, { recursive: true, force: true });
        try {
          const outcome = await once(request, signal);
          // Nothing a dead child wrote may be mistaken for output.
          if (outcome.kind !== 'ok') await rm(request.scratchDir, { recursive: true, force: true });
          return outcome;
        } catch (err) {
          await rm(request.scratchDir, { recursive: true, force: true });
          throw err;
        }
      } finally {
        release();
      }
    },
    async close(graceMs) {
      if (live.size === 0) {
        closed = true;
        return;
      }
      const deadline = Date.now() + graceMs;
      while (live.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      closed = true;
      for (const c of live) c.kill('SIGKILL');
    },
  };
}
