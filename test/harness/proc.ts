// Process plumbing shared by every real test server: where the binaries are,
// free ports, a per-run artifacts folder, and supervised child processes that
// cannot outlive the test process however it ends.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot: string = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

const versionsFile = join(repoRoot, 'test', 'infra', 'versions.env');

/** Root of the build cache that `test/infra/setup.sh` fills (env `TESTBED_CACHE` overrides). */
export function testbedCacheDir(): string {
  return process.env['TESTBED_CACHE'] ?? join(homedir(), '.cache', 'landfall');
}

/** The pinned versions from `test/infra/versions.env` (e.g. `{ KUBE_VERSION: 'v1.37.2' }`). */
export function testbedVersions(): Record<string, string> {
  const versions: Record<string, string> = {};
  for (const line of readFileSync(versionsFile, 'utf8').split('\n')) {
    const m = /^\s*([A-Z0-9_]+)=(\S+)\s*$/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined) versions[m[1]] = m[2];
  }
  return versions;
}

export type TestbedBinaryName =
  'minio' | 'etcd' | 'kube-apiserver' | 'kube-controller-manager' | 'kubectl' | 'helm' | 'mosquitto';

const versionKey: Record<Exclude<TestbedBinaryName, 'mosquitto'>, string> = {
  minio: 'MINIO_VERSION',
  etcd: 'ETCD_VERSION',
  'kube-apiserver': 'KUBE_VERSION',
  'kube-controller-manager': 'KUBE_VERSION',
  kubectl: 'KUBE_VERSION',
  helm: 'HELM_VERSION',
};

export class TestbedMissingError extends Error {
  override name = 'TestbedMissingError';
}

/**
 * Absolute path of a built test-bed binary. Throws (never skips) when it is
 * missing, because a test that silently skips its real server proves nothing.
 */
export function testbedBinary(name: TestbedBinaryName): string {
  if (name === 'mosquitto') {
    for (const p of ['/usr/sbin/mosquitto', '/usr/bin/mosquitto', '/usr/local/sbin/mosquitto']) {
      if (existsSync(p)) return p;
    }
    throw new TestbedMissingError(
      'mosquitto is not installed (looked in /usr/sbin, /usr/bin, /usr/local/sbin): run `npm run setup:testbed`',
    );
  }
  const key = versionKey[name];
  const version = testbedVersions()[key];
  if (version === undefined) throw new TestbedMissingError(`${key} is not set in ${versionsFile}`);
  const path = join(testbedCacheDir(), 'bin', `${name}-${version}`);
  if (!isExecutableFile(path)) {
    throw new TestbedMissingError(
      `test-bed binary ${name} ${version} not found at ${path}: run \`npm run setup:testbed\` ` +
        '(builds every server into $TESTBED_CACHE/bin, default ~/.cache/landfall/bin)',
    );
  }
  return path;
}

function isExecutableFile(path: string): boolean {
  try {
    const st = statSync(path);
    return st.isFile() && (st.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** A TCP port that was free a moment ago on 127.0.0.1 (races are retried by the start functions). */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => (port > 0 ? resolvePort(port) : reject(new Error('no port from listen(0)'))));
    });
  });
}

// ---------------------------------------------------------------------------
// Artifacts: one folder per test process, kept when the process fails.

let runDirPath: string | undefined;
let keepReason: string | undefined;
let dirCounter = 0;

/**
 * `test/.artifacts/<run>/` for this process (env `TESTBED_ARTIFACTS` moves
 * the parent). Server logs and data dirs live here. On exit it is deleted if
 * the process succeeded, and kept (path printed) if any test failed, the
 * process crashed, or {@link keepArtifacts} / `TESTBED_KEEP_ARTIFACTS=1` asked.
 */
export function runDir(): string {
  if (runDirPath !== undefined) return runDirPath;
  const parent = process.env['TESTBED_ARTIFACTS'] ?? join(repoRoot, 'test', '.artifacts');
  const script = basename(process.argv[1] ?? 'node').replace(/\.(test\.)?[cm]?[jt]s$/, '');
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  runDirPath = join(parent, `${stamp}-${script}-${process.pid}`);
  mkdirSync(runDirPath, { recursive: true });
  installExitHook();
  return runDirPath;
}

/** A fresh, empty folder inside {@link runDir}, named after `label`. */
export function scratchDir(label: string): string {
  dirCounter += 1;
  const dir = join(runDir(), `${label}-${dirCounter}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Keep this run's artifacts folder even if every test passes. */
export function keepArtifacts(reason = 'requested'): void {
  keepReason ??= reason;
}

// ---------------------------------------------------------------------------
// Supervised processes.

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StartProcessOptions {
  /** Short label used in log names and errors, e.g. `minio`. */
  name: string;
  command: string;
  args: readonly string[];
  env?: Record<string, string>;
  cwd?: string;
  /** Appended to (so a restarted server keeps one log); default `<runDir>/<name>-<n>.log`. */
  logPath?: string;
}

export interface ServerProcess {
  readonly name: string;
  readonly pid: number;
  readonly logPath: string;
  /** Resolves when the server process has exited, for any reason. */
  readonly exited: Promise<ExitInfo>;
  running(): boolean;
  /** SIGTERM, then SIGKILL once `graceMs` (default 2000) passes; resolves when it is gone. */
  stop(opts?: { graceMs?: number }): Promise<void>;
  /** The last `lines` lines of the server's log, for error messages. */
  logTail(lines?: number): string;
}

const live = new Set<SupervisedProcess>();

// The supervisor is bash, which starts a watchdog that blocks reading the
// stdin pipe from this process and then `exec`s the server in its own place,
// so the server keeps bash's PID (signals and exit codes are the server's).
// When this process ends in any way, SIGKILL included, the kernel closes the
// pipe, the watchdog reads EOF and SIGKILLs the server. No orphans.
const supervisorScript = [
  'exec 4<&0',
  '{ while read -r _ <&4; do :; done; kill -9 $$ 2>/dev/null; } &',
  'exec "$@" </dev/null',
].join('\n');

class SupervisedProcess implements ServerProcess {
  readonly name: string;
  readonly pid: number;
  readonly logPath: string;
  readonly exited: Promise<ExitInfo>;
  #child: ChildProcess;
  #exit: ExitInfo | undefined;

  constructor(opts: StartProcessOptions) {
    this.name = opts.name;
    this.logPath = opts.logPath ?? join(runDir(), `${opts.name}-${++dirCounter}.log`);
    mkdirSync(dirname(this.logPath), { recursive: true });
    const logFd = openSync(this.logPath, 'a');
    try {
      this.#child = spawn('bash', ['-c', supervisorScript, 'supervise', opts.command, ...opts.args], {
        cwd: opts.cwd ?? runDir(),
        env: { ...process.env, ...opts.env },
        stdio: ['pipe', logFd, logFd],
      });
    } finally {
      closeSync(logFd);
    }
    if (this.#child.pid === undefined) {
      throw new Error(`could not spawn ${opts.name} (${opts.command}); see ${this.logPath}`);
    }
    this.pid = this.#child.pid;
    // Neither the child nor our end of its pipe may keep the test process
    // alive: if a test forgets stop(), exiting still closes the pipe.
    this.#child.unref();
    const stdin = this.#child.stdin as (NodeJS.WritableStream & { unref?: () => void }) | null;
    stdin?.unref?.();
    stdin?.on('error', () => {}); // EPIPE once the watchdog is gone: expected
    this.exited = new Promise((resolveExit) => {
      this.#child.once('exit', (code, signal) => {
        this.#exit = { code, signal };
        live.delete(this);
        // Closing the pipe lets the watchdog exit too.
        this.#child.stdin?.destroy();
        resolveExit(this.#exit);
      });
    });
    live.add(this);
    installExitHook();
  }

  running(): boolean {
    return this.#exit === undefined;
  }

  async stop(opts: { graceMs?: number } = {}): Promise<void> {
    if (!this.running()) return;
    const graceMs = opts.graceMs ?? 2000;
    this.#child.kill(graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
    if (graceMs > 0 && !(await within(this.exited, graceMs))) this.#child.kill('SIGKILL');
    if (!(await within(this.exited, 10_000))) {
      throw new Error(`${this.name} (pid ${this.pid}) did not exit 10 s after SIGKILL`);
    }
  }

  killNow(): void {
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }

  logTail(lines = 40): string {
    try {
      return readFileSync(this.logPath, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

async function within(p: Promise<unknown>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((r) => {
    timer = setTimeout(() => r(false), timeoutMs);
  });
  try {
    return await Promise.race([p.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Start `command` under the supervisor, logging stdout+stderr to a file. */
export function startProcess(opts: StartProcessOptions): ServerProcess {
  return new SupervisedProcess(opts);
}

/** Every supervised process this test process started that is still running. */
export function liveProcesses(): readonly ServerProcess[] {
  return [...live];
}

let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', (code) => {
    for (const p of live) p.killNow();
    if (runDirPath === undefined) return;
    const failed = code !== 0 || (process.exitCode !== undefined && process.exitCode !== 0);
    const keep = failed || keepReason !== undefined || process.env['TESTBED_KEEP_ARTIFACTS'] === '1';
    if (keep) {
      const why = failed
        ? `exit code ${String(process.exitCode ?? code)}`
        : (keepReason ?? 'TESTBED_KEEP_ARTIFACTS=1');
      process.stderr.write(`[testbed] logs and data kept in ${runDirPath} (${why})\n`);
    } else {
      try {
        rmSync(runDirPath, { recursive: true, force: true });
      } catch {
        // a server killed a moment ago may still be closing files: best effort
      }
    }
  });
}

// ---------------------------------------------------------------------------
// Waiting.

export class ServerStartError extends Error {
  override name = 'ServerStartError';
  /** The log says the port was taken between freePort() and bind: worth a retry. */
  readonly addressInUse: boolean;
  constructor(message: string, logTail: string) {
    super(`${message}\n--- log tail ---\n${logTail}`);
    this.addressInUse = /address already in use|EADDRINUSE/i.test(logTail);
  }
}

export interface WaitForOptions {
  /** What we are waiting for, for the timeout message. */
  what: string;
  timeoutMs: number;
  intervalMs?: number;
  /** Fail at once, with its log tail, if this process exits while we wait. */
  process?: ServerProcess;
}

/**
 * Poll `probe` until it returns something other than `undefined`/`false`, or
 * throw after `timeoutMs`. Errors thrown by `probe` count as "not yet" (the
 * last one is reported on timeout).
 */
export async function waitFor<T>(
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  opts: WaitForOptions,
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  const intervalMs = opts.intervalMs ?? 50;
  let lastError: unknown;
  for (;;) {
    if (opts.process !== undefined && !opts.process.running()) {
      const info = await opts.process.exited;
      throw new ServerStartError(
        `${opts.process.name} exited (code ${String(info.code)}, signal ${String(info.signal)}) ` +
          `while waiting for ${opts.what}; log: ${opts.process.logPath}`,
        opts.process.logTail(),
      );
    }
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const cause = lastError instanceof Error ? `: last error ${lastError.message}` : '';
      const log = opts.process === undefined ? '' : `; log: ${opts.process.logPath}`;
      throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}${cause}${log}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** `fetch(url)` answered 200 within a short per-attempt bound. */
export async function httpOk(url: string, attemptTimeoutMs = 1000): Promise<boolean> {
  const res = await fetch(url, { signal: AbortSignal.timeout(attemptTimeoutMs) });
  await res.body?.cancel();
  return res.status === 200;
}

/**
 * Run `start` up to `attempts` times while it fails because a freshly picked
 * port was taken by someone else in the meantime.
 */
export async function retryOnPortClash<T>(start: () => Promise<T>, attempts = 3): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await start();
    } catch (err) {
      if (i >= attempts || !(err instanceof ServerStartError) || !err.addressInUse) throw err;
    }
  }
}

export interface RunToolOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Written to the tool's stdin (e.g. a manifest for `kubectl apply -f -`). */
  input?: string;
  /** Killed (SIGKILL) and rejected after this; default 60 000. */
  timeoutMs?: number;
}

export interface ToolResult {
  stdout: string;
  stderr: string;
}

/** Run a short-lived command line tool to completion; rejects on a non-zero exit with its stderr. */
export async function runTool(
  command: string,
  args: readonly string[],
  opts: RunToolOptions = {},
): Promise<ToolResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise((resolveRun, reject) => {
    const child = spawn(command, args, {
      cwd: opts.cwd ?? runDir(),
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const line = `${basename(command)} ${args.join(' ')}`;
      if (code === 0) resolveRun({ stdout, stderr });
      else if (signal === 'SIGKILL') reject(new Error(`${line}: killed after ${timeoutMs} ms\n${stderr}`));
      else reject(new Error(`${line}: exit ${String(code ?? signal)}\n${stderr}`));
    });
    child.stdin.on('error', () => {}); // the tool may exit without reading its input
    child.stdin.end(opts.input ?? '');
  });
}
