// The error catalogue: every error a client can see from the ingest node has a
// stable code here, so clients and dashboards can branch on `code` rather than
// on message text. docs/errors.md lists the same codes; a test keeps the two in
// step. Modelled on fastify's lib/errors.js: one factory, one class per code.

export interface ErrorSpec {
  /** Stable, documented identifier (`LF_…`). Never reuse or rename one. */
  readonly code: string;
  readonly statusCode: number;
  /** Whether the same request may succeed later unchanged (drives clients' retry loops). */
  readonly retryable: boolean;
  /** Sent as `Retry-After` (seconds) on 503s, so well-behaved clients back off instead of hammering. */
  readonly retryAfterSeconds?: number;
  /** `%s` placeholders are filled from the constructor's arguments, in order. */
  readonly template: string;
}

export interface ErrorBody {
  readonly error: { readonly code: string; readonly message: string };
}

export class LandfallError extends Error {
  readonly code: string;
  readonly statusCode: number;
  readonly retryable: boolean;
  readonly retryAfterSeconds: number | undefined;

  constructor(spec: ErrorSpec, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'LandfallError';
    this.code = spec.code;
    this.statusCode = spec.statusCode;
    this.retryable = spec.retryable;
    this.retryAfterSeconds = spec.retryAfterSeconds;
  }

  toBody(): ErrorBody {
    return { error: { code: this.code, message: this.message } };
  }

  /** Extra headers the response must carry (Retry-After on retryable overload answers). */
  headers(): Record<string, string> {
    return this.retryAfterSeconds === undefined ? {} : { 'retry-after': String(this.retryAfterSeconds) };
  }
}

type Arg = string | number | bigint;

export interface LandfallErrorClass {
  new (...args: Arg[]): LandfallError;
  readonly spec: ErrorSpec;
}

function format(template: string, args: readonly Arg[]): string {
  let i = 0;
  return template.replace(/%s/g, () => (i < args.length ? String(args[i++]) : '%s'));
}

const registry = new Map<string, ErrorSpec>();

function defineError(spec: ErrorSpec): LandfallErrorClass {
  if (registry.has(spec.code)) throw new Error(`duplicate error code ${spec.code}`);
  if (spec.statusCode === 503 && spec.retryAfterSeconds === undefined) {
    throw new Error(`${spec.code}: every 503 carries Retry-After`);
  }
  registry.set(spec.code, spec);
  return class extends LandfallError {
    static readonly spec = spec;
    constructor(...args: Arg[]) {
      super(spec, format(spec.template, args));
    }
  };
}

// ---- 400: the request itself is malformed; retrying it unchanged fails again.
export const BadRequestError = defineError({
  code: 'LF_BAD_REQUEST',
  statusCode: 400,
  retryable: false,
  template: 'Bad request: %s',
});
export const EmptyBodyError = defineError({
  code: 'LF_EMPTY_BODY',
  statusCode: 400,
  retryable: false,
  template: 'The request holds no records (an empty body, only blank lines, or an empty JSON array)',
});
export const InvalidJsonError = defineError({
  code: 'LF_INVALID_JSON',
  statusCode: 400,
  retryable: false,
  template: '%s is not valid JSON: %s',
});
export const RecordioTruncatedError = defineError({
  code: 'LF_RECORDIO_TRUNCATED',
  statusCode: 400,
  retryable: false,
  template: 'RecordIO record %s is truncated: %s',
});
export const DecodeFailedError = defineError({
  code: 'LF_DECODE_FAILED',
  statusCode: 400,
  retryable: false,
  template: 'The %s body could not be decoded: %s',
});
export const ZstdSkippableFrameError = defineError({
  code: 'LF_ZSTD_SKIPPABLE_FRAME',
  statusCode: 400,
  retryable: false,
  template:
    'The zstd body holds a skippable frame at byte %s; skippable frames are not accepted (they carry no records and cost a decoder each)',
});
export const IdempotencyKeyInvalidError = defineError({
  code: 'LF_IDEMPOTENCY_KEY_INVALID',
  statusCode: 400,
  retryable: false,
  template: 'Idempotency-Key must be 1 to %s printable ASCII characters',
});

// ---- 401 / 403: who is asking.
export const ApiKeyMissingError = defineError({
  code: 'LF_API_KEY_MISSING',
  statusCode: 401,
  retryable: false,
  template: 'An API key is required: send it as X-API-Key or Authorization: Bearer',
});
export const ApiKeyInvalidError = defineError({
  code: 'LF_API_KEY_INVALID',
  statusCode: 401,
  retryable: false,
  template: 'The API key is not valid',
});
export const ForbiddenError = defineError({
  code: 'LF_FORBIDDEN',
  statusCode: 403,
  retryable: false,
  template: 'The API key does not have the "%s" scope',
});

// ---- 404 / 408 / 411 / 413 / 415 / 422 / 431.
export const NotFoundError = defineError({
  code: 'LF_NOT_FOUND',
  statusCode: 404,
  retryable: false,
  template: 'No route %s %s',
});
export const RequestTimeoutError = defineError({
  code: 'LF_REQUEST_TIMEOUT',
  statusCode: 408,
  retryable: true,
  template: 'The request was not received within http.requestTimeoutMs (%s ms)',
});
export const LengthRequiredError = defineError({
  code: 'LF_LENGTH_REQUIRED',
  statusCode: 411,
  retryable: false,
  template: 'POST /v1/ingest needs a body framed by Content-Length or Transfer-Encoding: chunked',
});
export const PayloadTooLargeError = defineError({
  code: 'LF_PAYLOAD_TOO_LARGE',
  statusCode: 413,
  retryable: false,
  template: 'The request body exceeds limits.bodyBytesMax (%s bytes)',
});
export const DecodedTooLargeError = defineError({
  code: 'LF_DECODED_TOO_LARGE',
  statusCode: 413,
  retryable: false,
  template: 'The decoded request body exceeds limits.decodedBytesMax (%s bytes)',
});
export const RecordTooLargeError = defineError({
  code: 'LF_RECORD_TOO_LARGE',
  statusCode: 413,
  retryable: false,
  template: 'A record (%s) is larger than limits.recordBytesMax (%s bytes)',
});
export const TooManyRecordsError = defineError({
  code: 'LF_TOO_MANY_RECORDS',
  statusCode: 413,
  retryable: false,
  template: 'The request holds more than limits.recordsPerRequestMax (%s) records',
});
export const TooManyFramesError = defineError({
  code: 'LF_TOO_MANY_FRAMES',
  statusCode: 413,
  retryable: false,
  template: 'The zstd body holds more than limits.framesPerBodyMax (%s) frames',
});
export const UnsupportedMediaTypeError = defineError({
  code: 'LF_UNSUPPORTED_MEDIA_TYPE',
  statusCode: 415,
  retryable: false,
  template:
    'Content-Type "%s" is not supported; use application/x-ndjson, application/json or application/x-recordio',
});
export const UnsupportedEncodingError = defineError({
  code: 'LF_UNSUPPORTED_ENCODING',
  statusCode: 415,
  retryable: false,
  template: 'Content-Encoding "%s" is not supported; use gzip, zstd or none',
});
export const JsonNotObjectError = defineError({
  code: 'LF_JSON_NOT_OBJECT',
  statusCode: 422,
  retryable: false,
  template: 'An application/json body must be an object or an array of objects: %s',
});
export const IdempotencyKeyReusedError = defineError({
  code: 'LF_IDEMPOTENCY_KEY_REUSED',
  statusCode: 422,
  retryable: false,
  template: 'This Idempotency-Key was already used with a different request body',
});

export const HeadersTooLargeError = defineError({
  code: 'LF_HEADERS_TOO_LARGE',
  statusCode: 431,
  retryable: false,
  template: 'The request headers are too large',
});
// ---- 500: a bug; the message stays generic so nothing internal leaks.
export const InternalError = defineError({
  code: 'LF_INTERNAL',
  statusCode: 500,
  retryable: true,
  template: 'Internal error',
});

// ---- 503: try again later (Retry-After says when); nothing of the request was written.
export const OverloadedError = defineError({
  code: 'LF_OVERLOADED',
  statusCode: 503,
  retryable: true,
  retryAfterSeconds: 1,
  template: 'Too many request bytes in flight (limits.inflightBytesMax = %s bytes)',
});
export const WalBacklogError = defineError({
  code: 'LF_WAL_BACKLOG',
  statusCode: 503,
  retryable: true,
  retryAfterSeconds: 5,
  template: 'The WAL retains %s bytes, over its high watermark (%s bytes): delivery to S3 is behind',
});
export const DiskLowError = defineError({
  code: 'LF_DISK_LOW',
  statusCode: 503,
  retryable: true,
  retryAfterSeconds: 30,
  template: 'The WAL volume has %s bytes free (low watermark %s bytes)',
});
export const DrainingError = defineError({
  code: 'LF_DRAINING',
  statusCode: 503,
  retryable: true,
  retryAfterSeconds: 1,
  template: 'This node is draining (shutting down, or drain mode); retry (another replica will answer)',
});
export const WalUnavailableError = defineError({
  code: 'LF_WAL_UNAVAILABLE',
  statusCode: 503,
  retryable: true,
  retryAfterSeconds: 5,
  template: 'The write-ahead log could not make the records durable; nothing was written',
});

export const ProcessingTimeoutError = defineError({
  code: 'LF_PROCESSING_TIMEOUT',
  statusCode: 503,
  retryable: true,
  retryAfterSeconds: 1,
  template:
    'The request body could not be decoded and split within limits.processingTimeoutMs (%s ms); nothing was written',
});
export const IdempotencyBusyError = defineError({
  code: 'LF_IDEMPOTENCY_BUSY',
  statusCode: 503,
  retryable: true,
  retryAfterSeconds: 1,
  template:
    'idempotency.entriesMax (%s) requests with an Idempotency-Key are still running; nothing was written',
});

/** Every code the node can answer with, in declaration order (docs and tests read this). */
export function errorCatalogue(): readonly ErrorSpec[] {
  return [...registry.values()];
}

export function isLandfallError(err: unknown): err is LandfallError {
  return err instanceof LandfallError;
}
