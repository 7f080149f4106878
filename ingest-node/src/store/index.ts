// Builds the node's ObjectStore from its S3 target settings: a local folder
// (the embedded, no-cloud default) or an S3-compatible bucket with
// credentials from credentials.ts. The one place that wires an S3 client.
import type { S3Client } from '@aws-sdk/client-s3';
import type { Clock } from '../clock.ts';
import { createCredentialsProvider, type CredentialsConfig } from '../credentials.ts';
import type { FileSystem } from '../fs/types.ts';
import type { Logger } from '../log.ts';
import { LocalFolderObjectStore } from './local.ts';
import { createS3Client, S3ObjectStore } from './s3.ts';
import type { ObjectStore } from './types.ts';

export type ObjectStoreConfig =
  | { readonly kind: 'local'; readonly root: string }
  | {
      readonly kind: 's3';
      readonly bucket: string;
      readonly region: string;
      /** MinIO, R2…: path-style addressing unless forcePathStyle is false. */
      readonly endpoint?: string | undefined;
      readonly forcePathStyle?: boolean | undefined;
      readonly credentials?: CredentialsConfig | undefined;
      readonly partBytes?: number | undefined;
      readonly partConcurrency?: number | undefined;
      readonly conditionalCreate?: 'if-none-match' | 'head-then-put' | undefined;
      readonly checksums?: 'when_supported' | 'when_required' | undefined;
      readonly requestTimeoutMs?: number | undefined;
    };

export interface OpenedObjectStore {
  readonly store: ObjectStore;
  /** Releases sockets (the S3 client); the store must not be used after. */
  close(): void;
}

export function openObjectStore(
  cfg: ObjectStoreConfig,
  deps: { clock?: Clock; logger?: Logger; s3Client?: S3Client; fs?: FileSystem } = {},
): OpenedObjectStore {
  if (cfg.kind === 'local') {
    return {
      store: new LocalFolderObjectStore({
        root: cfg.root,
        ...(deps.clock ? { clock: deps.clock } : {}),
        // The node's own filesystem (the WAL's): power-cut tests cover the folder too.
        ...(deps.fs ? { fs: deps.fs } : {}),
      }),
      close: () => {},
    };
  }
  const client =
    deps.s3Client ??
    createS3Client({
      region: cfg.region,
      endpoint: cfg.endpoint,
      forcePathStyle: cfg.forcePathStyle,
      credentials: createCredentialsProvider(cfg.credentials ?? { mode: 'default' }, deps),
      checksums: cfg.checksums,
      requestTimeoutMs: cfg.requestTimeoutMs,
    });
  const store = new S3ObjectStore({
    client,
    bucket: cfg.bucket,
    ...(cfg.partBytes !== undefined ? { partBytes: cfg.partBytes } : {}),
    ...(cfg.partConcurrency !== undefined ? { partConcurrency: cfg.partConcurrency } : {}),
    ...(cfg.conditionalCreate !== undefined ? { conditionalCreate: cfg.conditionalCreate } : {}),
    ...(deps.clock ? { clock: deps.clock } : {}),
  });
  return { store, close: () => (deps.s3Client === undefined ? client.destroy() : undefined) };
}

export { StoreError, isRetryable, type StoreErrorCode } from './errors.ts';
export type * from './types.ts';
