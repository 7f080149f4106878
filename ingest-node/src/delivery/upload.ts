// Uploads one local artifact file (segment archive, Parquet) with retries. A
// stream cannot be replayed, so every attempt opens the file afresh; the
// size and sha256 the caller computed when it wrote the file travel with
// every attempt, so a retry can never publish different bytes.
import { createReadStream } from 'node:fs';
import { fileReadStream } from '../fs/streams.ts';
import type { FileSystem } from '../fs/types.ts';
import type { ObjectStore, PutResult } from '../store/types.ts';
import type { ArtifactKind } from './keys.ts';
import type { MarkerArtifact } from './marker.ts';
import { defaultRetryPolicy, withRetry, type RetryDeps, type RetryPolicy } from './retry.ts';

export interface LocalArtifactFile {
  readonly path: string;
  readonly bytes: number;
  readonly sha256: string;
}

export interface UploadFileOptions {
  readonly contentType?: string;
  readonly metadata?: Readonly<Record<string, string>>;
  readonly retry?: RetryPolicy;
  readonly retryDeps?: RetryDeps;
  /** The filesystem the file lives on; default the real disk. */
  readonly fs?: FileSystem;
}

export async function uploadFile(
  store: ObjectStore,
  key: string,
  file: LocalArtifactFile,
  opts: UploadFileOptions = {},
): Promise<PutResult> {
  const signal = opts.retryDeps?.signal;
  return withRetry(
    () =>
      store.put(
        key,
        opts.fs !== undefined ? fileReadStream(opts.fs, file.path) : createReadStream(file.path),
        {
          contentLength: file.bytes,
          sha256: file.sha256,
          ...(opts.contentType !== undefined ? { contentType: opts.contentType } : {}),
          ...(opts.metadata !== undefined ? { metadata: opts.metadata } : {}),
          ...(signal !== undefined ? { signal } : {}),
        },
      ),
    opts.retry ?? defaultRetryPolicy,
    opts.retryDeps ?? {},
  );
}

/** The marker entry for an uploaded artifact. */
export function markerArtifact(
  kind: ArtifactKind,
  put: PutResult,
  rows: number,
  view?: string,
): MarkerArtifact {
  return {
    kind,
    key: put.key,
    bytes: put.bytes,
    rows,
    sha256: put.sha256,
    ...(view !== undefined ? { view } : {}),
  };
}

export const contentTypes = {
  segment: 'application/zstd',
  parquet: 'application/vnd.apache.parquet',
  marker: 'application/json',
} as const;
