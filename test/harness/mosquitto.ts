// A real Mosquitto broker (Debian's) on a free loopback port, with persistence.
import { writeFileSync, mkdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { freePort, retryOnPortClash, scratchDir, startProcess, testbedBinary, waitFor } from './proc.ts';
import type { ServerProcess } from './proc.ts';

export interface StartMosquittoOptions {
  /** Bound on the wait for the listener; default 10 000. */
  readyTimeoutMs?: number;
  /** Extra lines appended to mosquitto.conf. */
  extraConfig?: readonly string[];
}

export interface MosquittoServer {
  /** `mqtt://127.0.0.1:<port>` */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly logPath: string;
  /** Take the broker down (SIGTERM saves its persistence file; graceMs 0 = SIGKILL, nothing saved). */
  stopServer(opts?: { graceMs?: number }): Promise<void>;
  /** Bring it back on the same port and persistence; resolves when it listens. */
  startServer(): Promise<void>;
  stop(): Promise<void>;
  /** Wall-clock ms of the last start (spawn to ready check passing). */
  readonly startupMs: number;
}

async function tcpAccepts(host: string, port: number, attemptTimeoutMs = 500): Promise<boolean> {
  return new Promise((resolveOk) => {
    const sock = connect({ host, port });
    const done = (ok: boolean): void => {
      sock.destroy();
      resolveOk(ok);
    };
    sock.setTimeout(attemptTimeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

export async function startMosquitto(opts: StartMosquittoOptions = {}): Promise<MosquittoServer> {
  const bin = testbedBinary('mosquitto');
  const readyTimeoutMs = opts.readyTimeoutMs ?? 10_000;
  const host = '127.0.0.1';
  const dataDir = scratchDir('mosquitto');
  const persistDir = join(dataDir, 'persist');
  mkdirSync(persistDir, { recursive: true });
  const confPath = join(dataDir, 'mosquitto.conf');
  const logPath = `${dataDir}.log`;
  let port = 0;
  let proc: ServerProcess | undefined;

  let startupMs = 0;
  const launch = async (): Promise<void> => {
    const t0 = performance.now();
    const p = startProcess({ name: 'mosquitto', command: bin, args: ['-c', confPath], logPath });
    proc = p;
    try {
      await waitFor(() => tcpAccepts(host, port), {
        what: `mosquitto listening on port ${port}`,
        timeoutMs: readyTimeoutMs,
        process: p,
      });
    } catch (err) {
      await p.stop({ graceMs: 0 });
      throw err;
    }
    startupMs = Math.round(performance.now() - t0);
  };

  await retryOnPortClash(async () => {
    port = await freePort();
    writeFileSync(
      confPath,
      [
        `listener ${port} ${host}`,
        'allow_anonymous true',
        'persistence true',
        `persistence_location ${persistDir}/`,
        'log_dest stderr',
        'log_type error',
        'log_type warning',
        'log_type notice',
        'log_type information',
        'connection_messages true',
        // As root, mosquitto drops to user `mosquitto`, which cannot write a
        // persistence folder the test created: stay root (tests only).
        ...(process.getuid?.() === 0 ? ['user root'] : []),
        ...(opts.extraConfig ?? []),
        '',
      ].join('\n'),
    );
    await launch();
  });

  return {
    url: `mqtt://${host}:${port}`,
    host,
    port,
    dataDir,
    logPath,
    async stopServer({ graceMs = 2000 } = {}) {
      await proc?.stop({ graceMs });
    },
    async startServer() {
      if (proc?.running() === true) return;
      await launch();
    },
    get startupMs() {
      return startupMs;
    },
    async stop() {
      await proc?.stop({ graceMs: 2000 });
    },
  };
}
