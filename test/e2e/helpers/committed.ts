// What a consumer sees: every record id committed to MinIO for an endpoint,
// read back with the consumer CLI (`landfall expand`), with how often each
// appears. The end-to-end ledgers check acknowledged ids against it.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { run as expand } from '../../../ingest-node/src/commands/expand.ts';
import type { MinioServer } from '../../harness/index.ts';

export interface CommittedQuery {
  readonly endpointName: string;
  /** Default: the server's default bucket. */
  readonly bucket?: string;
  /** Default: `landfall`, the prefix the operator's Endpoints use. */
  readonly prefix?: string;
  /** Only this instance's segments. */
  readonly instance?: string;
}

/** Record id → times it is committed (a consumer reading every committed segment). */
export async function committedIdCounts(minio: MinioServer, q: CommittedQuery): Promise<Map<string, number>> {
  let out = '';
  let err = '';
  const code = await expand(
    [
      '--endpoint-name',
      q.endpointName,
      ...(q.instance !== undefined ? ['--instance', q.instance] : []),
      '--bucket',
      q.bucket ?? minio.bucket,
      '--prefix',
      q.prefix ?? 'landfall',
      '--quiet',
    ],
    {
      out: (t) => (out += t),
      err: (t) => (err += t),
      env: {
        AWS_ACCESS_KEY_ID: minio.accessKeyId,
        AWS_SECRET_ACCESS_KEY: minio.secretAccessKey,
        AWS_REGION: minio.region,
        AWS_ENDPOINT_URL_S3: minio.endpoint,
      },
      stdout: new Writable({
        write(c: Buffer, _e, cb) {
          out += c.toString('utf8');
          cb();
        },
      }),
    },
  );
  assert.equal(code, 0, err);
  const ids = new Map<string, number>();
  for (const line of out.split('\n')) {
    const id = /^\{"id":"([^"]+)"/.exec(line)?.[1];
    if (id !== undefined) ids.set(id, (ids.get(id) ?? 0) + 1);
  }
  return ids;
}
