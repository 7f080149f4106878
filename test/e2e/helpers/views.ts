// Shared by test/e2e/views.test.ts and reprocess.test.ts: `landfall serve`
// against MinIO with a views folder, the bucket read back with the AWS SDK,
// Parquet read back with hyparquet (a pure-JS reader that shares no code
// with DuckDB), the node's JSON log lines.
import { join } from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { parquetMetadata, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import {
  repoRoot,
  startProcess,
  waitFor,
  type MinioServer,
  type ServerProcess,
} from '../../harness/index.ts';
import { logLines } from './cli-node.ts';
import { PAGE_VIEWS_YAML } from '../../../ingest-node/test/fixtures/page-views.ts';

export const CLI = join(repoRoot, 'ingest-node', 'src', 'cli.ts');

export const PAGE_VIEWS = PAGE_VIEWS_YAML;

/** The AWS variables a container (or a consumer's shell) has for MinIO. */
export function awsEnv(minio: MinioServer): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: minio.accessKeyId,
    AWS_SECRET_ACCESS_KEY: minio.secretAccessKey,
    AWS_REGION: minio.region,
  };
}

export interface ServeNode {
  readonly proc: ServerProcess;
  readonly url: string;
  /** The admin listener (/metrics, /v1/status). */
  readonly adminUrl: string;
  logs(): ReturnType<typeof logLines>;
}

/** `landfall serve` as a supervised child, configured by flags (config keys), credentials from AWS_*. */
export async function serve(
  name: string,
  minio: MinioServer,
  logPath: string,
  flags: readonly string[],
): Promise<ServeNode> {
  // The node refuses unknown LANDFALL_* variables: none of the test's own may reach it.
  const unset = Object.keys(process.env)
    .filter((k) => k.startsWith('LANDFALL_'))
    .flatMap((k) => ['-u', k]);
  const proc = startProcess({
    name,
    command: 'env',
    args: [...unset, process.execPath, CLI, 'serve', '--listen.port=0', ...flags],
    env: awsEnv(minio),
    logPath,
  });
  const listening = await waitFor(
    () => logLines(logPath).find((l) => l.msg === 'landfall ingest node listening'),
    { what: `${name} to listen`, timeoutMs: 20_000, intervalMs: 20, process: proc },
  );
  return {
    proc,
    url: String(listening.url),
    adminUrl: String(listening['adminUrl']),
    logs: () => logLines(logPath),
  };
}

/** Every key under a prefix, in key order. */
export async function listKeys(s3: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        Prefix: prefix,
        ...(token ? { ContinuationToken: token } : {}),
      }),
    );
    for (const o of page.Contents ?? []) keys.push(o.Key ?? '');
    token = page.NextContinuationToken;
  } while (token !== undefined);
  return keys;
}

export async function getBytes(s3: S3Client, bucket: string, key: string): Promise<Uint8Array> {
  const res = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return await res.Body!.transformToByteArray();
}

export async function getJson<T>(s3: S3Client, bucket: string, key: string): Promise<T> {
  return JSON.parse(Buffer.from(await getBytes(s3, bucket, key)).toString('utf8')) as T;
}

/** The marker as JSON, as a consumer reads it (not through our decoder). */
export interface MarkerJson {
  segmentId: string;
  epoch: string;
  instance: string;
  records: number;
  artifacts: { kind: string; view?: string; key: string; bytes: number; rows: number; sha256: string }[];
  views: {
    name: string;
    specSha256: string;
    rows?: { in: number; view: number; filtered: number; dlq: number; dlqByCode?: Record<string, number> };
  }[];
}

// Timestamps as raw µs, so sub-millisecond precision is compared too.
const parsers = {
  timestampFromMilliseconds: (ms: bigint) => ms * 1000n,
  timestampFromMicroseconds: (us: bigint) => us,
  timestampFromNanoseconds: (ns: bigint) => ns / 1000n,
  dateFromDays: (days: number) => days,
  stringFromBytes: (bytes: Uint8Array | undefined) => (bytes ? new TextDecoder().decode(bytes) : bytes),
};

function arrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}

/** A Parquet object's rows (NULL as null) and column types, read by hyparquet. */
export async function readParquetObject(
  s3: S3Client,
  bucket: string,
  key: string,
): Promise<{ rows: Record<string, unknown>[]; types: Record<string, string> }> {
  const file = arrayBuffer(await getBytes(s3, bucket, key));
  const rows = (await parquetReadObjects({ file, compressors, utf8: false, parsers })) as Record<
    string,
    unknown
  >[];
  const md = parquetMetadata(file);
  const types: Record<string, string> = {};
  for (const el of md.schema.slice(1)) {
    const logical = el.logical_type
      ? `${el.logical_type.type}${'isAdjustedToUTC' in el.logical_type ? (el.logical_type.isAdjustedToUTC ? '(utc)' : '(local)') : ''}${'unit' in el.logical_type ? `/${String(el.logical_type.unit)}` : ''}`
      : (el.converted_type ?? '');
    types[el.name] = `${el.type ?? 'group'}/${logical}`;
  }
  return {
    rows: rows.map((r) =>
      Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v === undefined ? null : v])),
    ),
    types,
  };
}

export function micros(iso: string): bigint {
  const ms = Date.parse(iso);
  const frac = /\.(\d+)Z$/.exec(iso)?.[1] ?? '';
  return BigInt(Math.floor(ms / 1000)) * 1_000_000n + BigInt((frac + '000000').slice(0, 6));
}

export async function post(url: string, lines: readonly string[]): Promise<void> {
  const res = await fetch(`${url}/v1/ingest`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-ndjson' },
    body: `${lines.join('\n')}\n`,
  });
  if (res.status !== 202) throw new Error(`ingest answered ${res.status}: ${await res.text()}`);
}
