// A real Iceberg REST catalog: Apache Iceberg's own RESTCatalogServer (the
// iceberg-open-api test fixture) on a free loopback port, backed by a JDBC
// catalog (SQLite, in the run folder) and S3FileIO on a test MinIO. And the
// PyIceberg venv, the independent reader tests check tables with. Both come
// from `bash test/infra/setup.sh iceberg`.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { MinioServer } from './minio.ts';
import {
  freePort,
  httpOk,
  retryOnPortClash,
  runTool,
  scratchDir,
  startProcess,
  testbedCacheDir,
  testbedVersions,
  waitFor,
  ServerStartError,
  TestbedMissingError,
} from './proc.ts';
import type { RunToolOptions, ServerProcess, ToolResult } from './proc.ts';

const setupHint = 'run `bash test/infra/setup.sh iceberg`';

function versionOf(key: string): string {
  const v = testbedVersions()[key];
  if (v === undefined) throw new TestbedMissingError(`${key} is not set in test/infra/versions.env`);
  return v;
}

/** The folder of the catalog's jars (`<cache>/bin/iceberg-rest-<version>/lib`). */
export function icebergRestLibDir(): string {
  const dir = join(testbedCacheDir(), 'bin', `iceberg-rest-${versionOf('ICEBERG_VERSION')}`, 'lib');
  const fixture = join(dir, `iceberg-open-api-${versionOf('ICEBERG_VERSION')}-test-fixtures.jar`);
  if (!existsSync(fixture)) {
    throw new TestbedMissingError(
      `the Iceberg REST catalog is not in the test-bed cache (${dir}): ${setupHint}`,
    );
  }
  return dir;
}

/** The PyIceberg venv's python (`<cache>/bin/pyiceberg-<v>-pyarrow-<v>/bin/python`). */
export function pyicebergPython(): string {
  const v = testbedVersions();
  const dir = join(
    testbedCacheDir(),
    'bin',
    `pyiceberg-${v['PYICEBERG_VERSION'] ?? '?'}-pyarrow-${v['PYARROW_VERSION'] ?? '?'}`,
  );
  const py = join(dir, 'bin', 'python');
  let ok: boolean;
  try {
    ok = statSync(py).isFile();
  } catch {
    ok = false;
  }
  if (!ok) throw new TestbedMissingError(`PyIceberg is not in the test-bed cache (${dir}): ${setupHint}`);
  return py;
}

const javaCandidates = ['/usr/lib/jvm/java-17-openjdk-amd64/bin/java', '/usr/bin/java'];

function javaBinary(): string {
  for (const j of javaCandidates) if (existsSync(j)) return j;
  throw new TestbedMissingError(
    `no Java 17 (looked at ${javaCandidates.join(', ')}): apt-get install openjdk-17-jre-headless`,
  );
}

export interface StartIcebergCatalogOptions {
  /** The MinIO the warehouse lives in (its bucket unless `bucket` is given). */
  minio: MinioServer;
  bucket?: string;
  /** Key prefix of the warehouse in the bucket; default `warehouse`. */
  warehousePrefix?: string;
  /** Bound on the wait for `GET /v1/config`; default 60 000 (a cold JVM on a busy machine). */
  readyTimeoutMs?: number;
}

export interface IcebergCatalog {
  /** `http://127.0.0.1:<port>` (the REST catalog's base URI; routes under `/v1/`). */
  readonly uri: string;
  /** `s3://<bucket>/<prefix>`: where the catalog puts table metadata. */
  readonly warehouse: string;
  readonly bucket: string;
  readonly logPath: string;
  /** The SQLite file of the JDBC catalog (kept across stopServer/startServer). */
  readonly dbPath: string;
  /** Properties a PyIceberg `load_catalog('x', **props)` needs to reach this catalog and MinIO. */
  readonly pyicebergProperties: Record<string, string>;
  /**
   * Runs a Python script with the PyIceberg venv. The catalog's properties are
   * in env `TESTBED_ICEBERG_PROPS` (JSON) for the script to pass to `load_catalog`.
   */
  python(script: string, args?: readonly string[], opts?: RunToolOptions): Promise<ToolResult>;
  stopServer(opts?: { graceMs?: number }): Promise<void>;
  startServer(): Promise<void>;
  stop(): Promise<void>;
  /** Wall-clock ms of the last start (spawn to ready check passing). */
  readonly startupMs: number;
}

export async function startIcebergCatalog(opts: StartIcebergCatalogOptions): Promise<IcebergCatalog> {
  const lib = icebergRestLibDir();
  const python = pyicebergPython();
  const java = javaBinary();
  const { minio } = opts;
  const bucket = opts.bucket ?? minio.bucket;
  const warehouse = `s3://${bucket}/${opts.warehousePrefix ?? 'warehouse'}`;
  const readyTimeoutMs = opts.readyTimeoutMs ?? 60_000;
  const dataDir = scratchDir('iceberg-rest');
  const dbPath = join(dataDir, 'catalog.db');
  const logPath = `${dataDir}.log`;
  let port = 0;
  let proc: ServerProcess | undefined;
  let startupMs = 0;

  const launch = async (): Promise<void> => {
    const t0 = performance.now();
    // RESTCatalogServer reads its catalog properties from CATALOG_* variables
    // (RCKUtils: `__` is `-`, `_` is `.`).
    const p = startProcess({
      name: 'iceberg-rest',
      command: java,
      args: ['-Xmx512m', '-XX:+UseSerialGC', '-cp', `${lib}/*`, 'org.apache.iceberg.rest.RESTCatalogServer'],
      env: {
        CATALOG_REST_PORT: String(port),
        CATALOG_URI: `jdbc:sqlite:file:${dbPath}`,
        CATALOG_JDBC_SCHEMA__VERSION: 'V1',
        // One JDBC connection: SQLite has one writer, and two pooled connections of
        // the same server upgrading read transactions at once get SQLITE_BUSY at
        // once (the busy handler is skipped to avoid a deadlock), seen as 500s.
        CATALOG_CLIENTS: '1',
        CATALOG_WAREHOUSE: warehouse,
        CATALOG_IO__IMPL: 'org.apache.iceberg.aws.s3.S3FileIO',
        CATALOG_S3_ENDPOINT: minio.endpoint,
        CATALOG_S3_PATH__STYLE__ACCESS: 'true',
        CATALOG_S3_ACCESS__KEY__ID: minio.accessKeyId,
        CATALOG_S3_SECRET__ACCESS__KEY: minio.secretAccessKey,
        CATALOG_CLIENT_REGION: minio.region,
        AWS_REGION: minio.region,
      },
      cwd: dataDir,
      logPath,
    });
    proc = p;
    try {
      await waitFor(() => httpOk(`http://127.0.0.1:${port}/v1/config`), {
        what: `iceberg REST catalog ready on port ${port}`,
        timeoutMs: readyTimeoutMs,
        intervalMs: 200,
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

  const uri = `http://127.0.0.1:${port}`;
  const pyicebergProperties: Record<string, string> = {
    type: 'rest',
    uri,
    's3.endpoint': minio.endpoint,
    's3.access-key-id': minio.accessKeyId,
    's3.secret-access-key': minio.secretAccessKey,
    's3.region': minio.region,
    's3.path-style-access': 'true',
  };
  return {
    uri,
    warehouse,
    bucket,
    logPath,
    dbPath,
    pyicebergProperties,
    python(script, args = [], o = {}) {
      return runTool(python, ['-c', script, ...args], {
        ...o,
        env: { ...o.env, TESTBED_ICEBERG_PROPS: JSON.stringify(pyicebergProperties) },
      });
    },
    async stopServer({ graceMs = 1000 } = {}) {
      await proc?.stop({ graceMs });
    },
    async startServer() {
      if (proc?.running() === true) return;
      try {
        await launch();
      } catch (err) {
        if (err instanceof ServerStartError) err.message = `restart on port ${port}: ${err.message}`;
        throw err;
      }
    },
    get startupMs() {
      return startupMs;
    },
    async stop() {
      await proc?.stop({ graceMs: 1000 });
    },
  };
}
