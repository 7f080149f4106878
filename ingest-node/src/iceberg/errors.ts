// Errors of the Iceberg table commit (delivery side: never an HTTP answer).
// `retryable` drives delivery/retry.ts and the pipeline's per-segment backoff.

export type IcebergErrorCode =
  /** The catalog said the table changed under us (409): reload and try again. */
  | 'ICEBERG_COMMIT_CONFLICT'
  /** Conflicts kept coming past the bound: the segment is retried later with backoff. */
  | 'ICEBERG_COMMIT_CONFLICTS_EXHAUSTED'
  /** A 5xx, a timeout or a network error: the commit may or may not have happened. */
  | 'ICEBERG_CATALOG_UNAVAILABLE'
  /**
   * The catalog's credentials cannot be had: a token or client file missing
   * or empty, the token endpoint refused the client (400/401), or the
   * catalog refused a fresh token. Delivery backs off and tries again, so a
   * fixed Secret heals it without a restart.
   */
  | 'ICEBERG_CATALOG_AUTH_FAILED'
  /** Any other catalog answer (400, 401, 403, 404…): needs a human. */
  | 'ICEBERG_CATALOG_ERROR'
  | 'ICEBERG_TYPE_UNSUPPORTED'
  | 'ICEBERG_SCHEMA_MISMATCH'
  /** The table's metadata is something this writer cannot append to (format v1/v3, files we cannot read). */
  | 'ICEBERG_TABLE_UNSUPPORTED'
  /** The table is partitioned in a way the View's partition levels do not give (or a file's value does not parse). */
  | 'ICEBERG_PARTITION_MISMATCH'
  /**
   * The segment's view files were built with a View version this process no
   * longer knows (its registry keeps versions in memory only: a restart or a
   * drainer between the files and the table commit), so their columns cannot
   * be mapped: recorded in the marker, not appended.
   */
  | 'ICEBERG_VIEW_VERSION_UNKNOWN';

const retryableCodes = new Set<IcebergErrorCode>([
  'ICEBERG_COMMIT_CONFLICT',
  'ICEBERG_COMMIT_CONFLICTS_EXHAUSTED',
  'ICEBERG_CATALOG_UNAVAILABLE',
]);

export class IcebergError extends Error {
  override name = 'IcebergError';
  readonly code: IcebergErrorCode;
  readonly retryable: boolean;
  /** HTTP status of the catalog's answer, when there was one. */
  readonly status: number | undefined;

  constructor(code: IcebergErrorCode, message: string, opts: { status?: number; cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.code = code;
    this.retryable = retryableCodes.has(code);
    this.status = opts.status;
  }
}
