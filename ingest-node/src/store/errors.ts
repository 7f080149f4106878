// Every object-store failure the delivery pipeline sees is a StoreError with a
// stable code and a retryable bit, so the retry loop and the operator-facing
// status never have to understand AWS SDK error shapes, errno values or
// MinIO quirks. The classification lives here and nowhere else.

export type StoreErrorCode =
  /** 429/503 SlowDown and friends: the store asks us to back off. */
  | 'throttled'
  /** A 5xx answer, or a 4xx S3 documents as transient (RequestTimeout, conditional-write conflicts). */
  | 'server'
  /** No answer: refused, reset, DNS, socket timeout. */
  | 'network'
  /** Temporary credentials expired mid-flight; the provider refreshes them on the next attempt. */
  | 'credentials_expired'
  /** 403: the role or key may not do this. Retrying does not help until someone fixes IAM. */
  | 'access_denied'
  /** The bucket does not exist (or the name is wrong). */
  | 'no_such_bucket'
  /** A key the caller expected is missing. */
  | 'not_found'
  /** The bytes we sent are not the bytes we meant to send (sha256 mismatch). */
  | 'checksum_mismatch'
  /** A body bigger than the caller's bound. */
  | 'too_large'
  /** A key or argument this store cannot represent. */
  | 'invalid'
  /** Anything else: not retried, surfaced loudly. */
  | 'unknown';

const retryableCodes: ReadonlySet<StoreErrorCode> = new Set([
  'throttled',
  'server',
  'network',
  'credentials_expired',
]);

export class StoreError extends Error {
  readonly code: StoreErrorCode;
  readonly retryable: boolean;
  /** HTTP status from the store when there was an answer. */
  readonly status: number | undefined;
  /** The store's own error name (e.g. `SlowDown`, `ECONNREFUSED`), for logs. */
  readonly storeCode: string | undefined;

  constructor(
    code: StoreErrorCode,
    message: string,
    opts: { status?: number | undefined; storeCode?: string | undefined; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = 'StoreError';
    this.code = code;
    this.retryable = retryableCodes.has(code);
    this.status = opts.status;
    this.storeCode = opts.storeCode;
  }
}

/** The default predicate for retry.ts: only errors that say so are retried. */
export function isRetryable(err: unknown): boolean {
  return err instanceof StoreError
    ? err.retryable
    : (err as { retryable?: unknown } | null)?.retryable === true;
}

const networkErrnos = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);

const throttleNames = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'BandwidthLimitExceeded',
  'ProvisionedThroughputExceededException',
  'EC2ThrottledException',
]);

const transientNames = new Set([
  'RequestTimeout',
  'RequestTimeoutException',
  'InternalError',
  'ServiceUnavailable',
  // S3 answers 409 when two conditional writes race on one key; the loser retries.
  'ConditionalRequestConflict',
  'OperationAborted',
  // MinIO's answers while a node is starting or healing.
  'XMinioServerNotInitialized',
  'XMinioReadQuorum',
  'XMinioWriteQuorum',
  'XMinioStorageFull',
]);

const expiredNames = new Set([
  'ExpiredToken',
  'ExpiredTokenException',
  'TokenRefreshRequired',
  'RequestExpired',
]);

interface SdkErrorShape {
  name?: unknown;
  code?: unknown;
  Code?: unknown;
  message?: unknown;
  $metadata?: { httpStatusCode?: unknown };
  $retryable?: unknown;
  cause?: unknown;
  errors?: unknown;
}

/**
 * Turns whatever the SDK, the socket layer or fs threw into a StoreError.
 * `what` names the operation for the message (e.g. `put landfall/commits/…`).
 */
export function classifyError(err: unknown, what: string): StoreError {
  if (err instanceof StoreError) return err;
  const e = (err ?? {}) as SdkErrorShape;
  const status = typeof e.$metadata?.httpStatusCode === 'number' ? e.$metadata.httpStatusCode : undefined;
  const name = firstString(e.Code, e.name !== 'Error' ? e.name : undefined, e.code);
  const errno = findErrno(err);
  const message = `${what}: ${typeof e.message === 'string' && e.message !== '' ? e.message : (name ?? 'error')}`;
  const opts = { status, storeCode: name ?? errno, cause: err };

  if (errno !== undefined && status === undefined) return new StoreError('network', message, opts);
  if (name !== undefined && expiredNames.has(name))
    return new StoreError('credentials_expired', message, opts);
  if (status === 429 || (name !== undefined && throttleNames.has(name)))
    return new StoreError('throttled', message, opts);
  if (name === 'NoSuchBucket') return new StoreError('no_such_bucket', message, opts);
  if (name !== undefined && transientNames.has(name)) return new StoreError('server', message, opts);
  if (
    status === 403 ||
    name === 'AccessDenied' ||
    name === 'InvalidAccessKeyId' ||
    name === 'SignatureDoesNotMatch'
  )
    return new StoreError('access_denied', message, opts);
  if (name === 'NoSuchKey' || name === 'NotFound' || status === 404)
    return new StoreError('not_found', message, opts);
  if (name === 'BadDigest' || name === 'XAmzContentSHA256Mismatch' || name === 'InvalidDigest')
    return new StoreError('checksum_mismatch', message, opts);
  if (status !== undefined && status >= 500) return new StoreError('server', message, opts);
  // The SDK marks some failures retryable itself (e.g. a socket hang-up it gave up on).
  if (e.$retryable !== undefined && e.$retryable !== null) return new StoreError('network', message, opts);
  if (name === 'TimeoutError' || name === 'AbortError') return new StoreError('network', message, opts);
  return new StoreError('unknown', message, opts);
}

function firstString(...xs: unknown[]): string | undefined {
  for (const x of xs) if (typeof x === 'string' && x !== '') return x;
  return undefined;
}

// Node puts the errno on the error, on its cause, or (AggregateError from
// happy-eyeballs connects) on each inner error. Bounded depth: causes can cycle.
function findErrno(err: unknown, depth = 0): string | undefined {
  if (depth > 4 || err === null || typeof err !== 'object') return undefined;
  const e = err as SdkErrorShape;
  if (typeof e.code === 'string' && networkErrnos.has(e.code)) return e.code;
  if (Array.isArray(e.errors)) {
    for (const inner of e.errors as unknown[]) {
      const found = findErrno(inner, depth + 1);
      if (found !== undefined) return found;
    }
  }
  return findErrno(e.cause, depth + 1);
}
