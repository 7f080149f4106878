// The one interface the delivery pipeline writes through. Small on purpose:
// S3ObjectStore (AWS S3, MinIO, R2) and LocalFolderObjectStore (the embedded,
// no-cloud default) both implement it, and one contract test suite runs
// against both (ingest-node/test/store-contract.test.ts).
//
// Every method either succeeds or throws a StoreError (./errors.ts) whose
// `retryable` bit tells delivery/retry.ts whether to try again.
import type { Readable } from 'node:stream';

export type ObjectBody = Buffer | Readable;

export interface PutOptions {
  /**
   * Exact body length in bytes. Lets a Readable of known size go up as one PUT
   * when small, and makes the store verify the length.
   */
  readonly contentLength?: number;
  /**
   * Lowercase hex sha256 of the body, when the caller already knows it (it
   * hashed the file while writing it). Stored as `x-amz-meta-sha256`. The store
   * hashes the bytes as it sends them and fails with `checksum_mismatch`
   * instead of completing the object if they differ.
   */
  readonly sha256?: string;
  /** Extra user metadata (lowercase ASCII names; values ASCII). `sha256` is reserved. */
  readonly metadata?: Readonly<Record<string, string>>;
  readonly contentType?: string;
  /** Aborts an in-flight upload (shutdown). */
  readonly signal?: AbortSignal;
}

export interface PutResult {
  readonly key: string;
  readonly bytes: number;
  /** Hex sha256 of the bytes that were stored (computed while sending). */
  readonly sha256: string;
  /** True when the body went up as a multipart upload. */
  readonly multipart: boolean;
}

export type CreateResult = { readonly created: true } | { readonly created: false };

export interface ObjectInfo {
  readonly key: string;
  readonly bytes: number;
  /** From `x-amz-meta-sha256`; null for objects written by something else. */
  readonly sha256: string | null;
  /** User metadata without the `x-amz-meta-` prefix (includes `sha256` when set). */
  readonly metadata: Readonly<Record<string, string>>;
  readonly lastModifiedMs: number;
}

export interface ListOptions {
  /** Only keys starting with this (not necessarily ending in `/`). */
  readonly prefix: string;
  /** Only keys strictly greater than this one, in byte order: a consumer's cursor. */
  readonly startAfter?: string;
  /** At most this many keys (default and maximum: `listLimitMax`). */
  readonly limit?: number;
}

export interface ListedObject {
  readonly key: string;
  readonly bytes: number;
  readonly lastModifiedMs: number;
}

export interface ListResult {
  /** In ascending key (UTF-8 byte) order. */
  readonly objects: readonly ListedObject[];
  /** True when more keys follow; continue with `startAfter` = the last key. */
  readonly truncated: boolean;
}

export interface GetOptions {
  /**
   * The largest body the caller will hold in memory; a bigger object fails
   * with `too_large` before it is read. Default `getBytesMaxDefault`.
   */
  readonly bytesMax?: number;
  readonly signal?: AbortSignal;
}

/** A listing page is bounded so one call never buffers an unbounded bucket. */
export const listLimitMax = 10_000;
/** Markers are a few KiB; 16 MiB is far beyond any sane marker and still harmless. */
export const getBytesMaxDefault = 16 * 1024 * 1024;

export interface ObjectStore {
  /** A short description for logs and /v1/status (`s3://bucket`, `file:///data/bucket`). */
  readonly description: string;

  /**
   * Writes (or overwrites) `key`. Large or unknown-length bodies go up as a
   * multipart upload with bounded part size and concurrency; a failed upload
   * is aborted, never completed.
   */
  put(key: string, body: ObjectBody, opts?: PutOptions): Promise<PutResult>;

  /**
   * Writes `key` only if nothing is there yet (S3 `If-None-Match: *`).
   * `{created: false}` means an object already exists; the caller decides
   * whether it is the same one (see delivery/marker.ts).
   */
  createIfAbsent(key: string, body: Buffer, opts?: Omit<PutOptions, 'contentLength'>): Promise<CreateResult>;

  /** Size and metadata, or null when the key does not exist. */
  head(key: string, opts?: { signal?: AbortSignal }): Promise<ObjectInfo | null>;

  /** Keys under a prefix, in key order, after a cursor, at most `limit`. */
  list(opts: ListOptions): Promise<ListResult>;

  /** The whole body (bounded by `bytesMax`), or null when the key does not exist. */
  get(key: string, opts?: GetOptions): Promise<Buffer | null>;

  /**
   * The last `bytes` bytes of the body (all of it when it is shorter), or null
   * when the key does not exist: a Parquet footer without the whole file.
   * Optional: stores without ranged reads leave it out (callers do without).
   */
  getTail?(key: string, bytes: number, opts?: { signal?: AbortSignal }): Promise<Buffer | null>;

  /** The body as a stream (for large artifacts), or null when the key does not exist. */
  getStream(key: string, opts?: { signal?: AbortSignal }): Promise<Readable | null>;

  /**
   * Aborts multipart uploads under `prefix` started more than `olderThanMs`
   * ago (a crash mid-upload leaves them billing). Returns how many it aborted.
   * The local store removes its stale temp files instead.
   */
  abortStaleMultipartUploads(prefix: string, olderThanMs: number): Promise<number>;
}
