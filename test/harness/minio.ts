// A real MinIO server on a free loopback port, one per call.
import { randomBytes } from 'node:crypto';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import type { S3ClientConfig } from '@aws-sdk/client-s3';
import {
  freePort,
  httpOk,
  retryOnPortClash,
  scratchDir,
  startProcess,
  testbedBinary,
  waitFor,
  ServerStartError,
} from './proc.ts';
import type { ServerProcess } from './proc.ts';

export interface StartMinioOptions {
  /** Default `us-east-1`. */
  region?: string;
  /** Bound on the wait for `/minio/health/ready`; default 30 000. */
  readyTimeoutMs?: number;
  /** Start the server under `nice -n <nice>` (every thread it makes inherits it); default 0. */
  nice?: number;
  /** Keep the objects here instead of a scratch folder on the run's disk (e.g. a tmpfs). */
  dataDir?: string;
}

export interface MinioServer {
  /** `http://127.0.0.1:<port>`; use with `forcePathStyle: true`. */
  readonly endpoint: string;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** A fresh bucket created for this server. */
  readonly bucket: string;
  readonly dataDir: string;
  readonly logPath: string;
  /** Create another empty bucket and return its name. */
  newBucket(): Promise<string>;
  /** A new S3 client for this server (destroyed by stop()). */
  s3(overrides?: Partial<S3ClientConfig>): S3Client;
  /** Take the server down, keeping its port and data (an S3 outage). SIGTERM, SIGKILL after `graceMs` (default 1000; 0 = SIGKILL at once). */
  stopServer(opts?: { graceMs?: number }): Promise<void>;
  /** Bring it back on the same port with the same data; resolves when ready. */
  startServer(): Promise<void>;
  stop(): Promise<void>;
  /** Wall-clock ms of the last start (spawn to ready check passing). */
  readonly startupMs: number;
  /** The running server's pid (a restart changes it); undefined while it is down. */
  readonly pid: number | undefined;
}

let bucketCounter = 0;

function bucketName(): string {
  bucketCounter += 1;
  return `landfall-${process.pid}-${bucketCounter}-${randomBytes(3).toString('hex')}`;
}

export async function startMinio(opts: StartMinioOptions = {}): Promise<MinioServer> {
  const bin = testbedBinary('minio');
  const region = opts.region ?? 'us-east-1';
  const readyTimeoutMs = opts.readyTimeoutMs ?? 30_000;
  const nice = opts.nice ?? 0;
  const accessKeyId = 'landfall-test';
  const secretAccessKey = randomBytes(18).toString('base64url');
  const dataDir = opts.dataDir ?? scratchDir('minio');
  // Beside a scratch folder even when the objects live elsewhere (a tmpfs): the run's artifacts keep it.
  const logPath = `${opts.dataDir !== undefined ? scratchDir('minio') : dataDir}.log`;
  let port = 0;
  let proc: ServerProcess | undefined;
  const clients = new Set<S3Client>();

  let startupMs = 0;
  const launch = async (): Promise<void> => {
    const t0 = performance.now();
    const consolePort = await freePort();
    const p = startProcess({
      name: 'minio',
      command: nice > 0 ? 'nice' : bin,
      args: [
        ...(nice > 0 ? ['-n', String(nice), bin] : []),
        'server',
        '--address',
        `127.0.0.1:${port}`,
        '--console-address',
        `127.0.0.1:${consolePort}`,
        dataDir,
      ],
      env: {
        MINIO_ROOT_USER: accessKeyId,
        MINIO_ROOT_PASSWORD: secretAccessKey,
        MINIO_SITE_REGION: region,
        MINIO_BROWSER: 'off',
        MINIO_UPDATE: 'off',
      },
      logPath,
    });
    proc = p;
    try {
      await waitFor(() => httpOk(`http://127.0.0.1:${port}/minio/health/ready`), {
        what: `minio ready on port ${port}`,
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
    await launch();
  });

  const endpoint = `http://127.0.0.1:${port}`;
  const s3 = (overrides: Partial<S3ClientConfig> = {}): S3Client => {
    const client = new S3Client({
      endpoint,
      region,
      credentials: { accessKeyId, secretAccessKey },
      forcePathStyle: true,
      ...overrides,
    });
    clients.add(client);
    return client;
  };
  const admin = s3();
  const newBucket = async (): Promise<string> => {
    const name = bucketName();
    await admin.send(new CreateBucketCommand({ Bucket: name }));
    return name;
  };
  const bucket = await newBucket();

  return {
    endpoint,
    region,
    accessKeyId,
    secretAccessKey,
    bucket,
    dataDir,
    logPath,
    newBucket,
    s3,
    async stopServer({ graceMs = 1000 } = {}) {
      await proc?.stop({ graceMs });
    },
    async startServer() {
      if (proc?.running() === true) return;
      try {
        await launch();
      } catch (err) {
        // Same port by contract: a clash here is the caller's problem to see.
        if (err instanceof ServerStartError) err.message = `restart on port ${port}: ${err.message}`;
        throw err;
      }
    },
    get startupMs() {
      return startupMs;
    },
    get pid() {
      return proc?.running() === true ? proc.pid : undefined;
    },
    async stop() {
      for (const c of clients) c.destroy();
      clients.clear();
      await proc?.stop({ graceMs: 1000 });
    },
  };
}
