// The logger shape every module takes, and the one JSON-lines logger behind it
// (pino, which fastify already brings) for the node's CLI and the operator.
// `silentLogger` is for tests. Never log API keys or credentials: the paths in
// REDACT_PATHS are censored anyway, as a second line.
import { pino } from 'pino';

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const noop = (): void => {};
export const silentLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop };

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/**
 * Key material, wherever a caller might put it: request headers (x-api-key,
 * authorization; also under req/request/err), S3 and STS credentials, MQTT
 * passwords, the operator's keys. fast-redact paths: `*` is one level.
 */
export const REDACT_PATHS: readonly string[] = [
  'apiKey',
  '*.apiKey',
  'x-api-key',
  'authorization',
  'headers["x-api-key"]',
  'headers.authorization',
  '*.headers["x-api-key"]',
  '*.headers.authorization',
  '*.*.headers["x-api-key"]',
  '*.*.headers.authorization',
  'password',
  '*.password',
  'secretAccessKey',
  '*.secretAccessKey',
  'sessionToken',
  '*.sessionToken',
  'secret',
  '*.secret',
  'token',
  '*.token',
  'operatorKey',
  'masterKey',
  'clientSecret',
  '*.clientSecret',
  'client_secret',
  '*.client_secret',
  'access_token',
  '*.access_token',
];

const BIGINT_DEPTH_MAX = 6;

/**
 * Field names that hold key material at any depth and in any case (the paths
 * above stop at two levels and match case exactly): S3/STS credentials as the
 * SDK spells them, headers, passwords, tokens, the operator's keys.
 */
const SECRET_FIELD =
  /^(x-api-key|api-?key|authorization|password|passwd|secret|secret-?access-?key|session-?token|token|x-amz-security-token|operator-?key|master-?key|client[-_]?secret|(access|refresh|id|bearer)[-_]?token)$/i;
const CENSOR = '[REDACTED]';

/** Censors secret-named fields of a freshly serialized error and its causes, in place. */
function scrubSerializedError(e: Record<string, unknown>, depth: number): Record<string, unknown> {
  for (const k of Object.keys(e)) {
    if (SECRET_FIELD.test(k)) e[k] = CENSOR;
    else if (depth < BIGINT_DEPTH_MAX && e[k] !== null && typeof e[k] === 'object')
      e[k] =
        k === 'cause' || Object.getPrototypeOf(e[k]) !== Object.prototype
          ? scrubSerializedError(e[k] as Record<string, unknown>, depth + 1)
          : bigintsToStrings(e[k], depth + 1);
    else if (typeof e[k] === 'bigint') e[k] = e[k].toString();
  }
  return e;
}

/** bigints as decimal strings (JSON has no 64-bit integers; a number would round above 2^53). */
function bigintsToStrings(value: unknown, depth: number): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (depth >= BIGINT_DEPTH_MAX || value === null || typeof value !== 'object') return value;
  if (value instanceof Error) return value;
  if (Array.isArray(value)) {
    return value.some((v) => typeof v === 'bigint' || (v !== null && typeof v === 'object'))
      ? value.map((v) => bigintsToStrings(v, depth + 1))
      : value;
  }
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return value;
  let out: Record<string, unknown> | undefined;
  for (const [k, v] of Object.entries(value)) {
    const mapped = SECRET_FIELD.test(k) && v !== undefined ? CENSOR : bigintsToStrings(v, depth + 1);
    if (mapped !== v) (out ??= { ...(value as Record<string, unknown>) })[k] = mapped;
  }
  return out ?? value;
}

/** Every Error among the fields (not only `err`) keeps its type, stack, cause chain and own fields (code…). */
function fieldsOf(obj: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const [k, v] of Object.entries(obj)) {
    const mapped =
      v instanceof Error
        ? scrubSerializedError(pino.stdSerializers.errWithCause(v), 1)
        : SECRET_FIELD.test(k) && v !== undefined
          ? CENSOR
          : bigintsToStrings(v, 1);
    if (mapped !== v) (out ??= { ...obj })[k] = mapped;
  }
  return out ?? obj;
}

export interface JsonLoggerOptions {
  /** Fields on every line (the operator's component and identity). */
  readonly bindings?: Record<string, unknown>;
  /** Milliseconds since the epoch for the `time` field (tests). */
  readonly clock?: () => number;
}

/** The pino instance behind jsonLogger; it has child(), which the operator uses. */
export type PinoLogger = pino.Logger;

/**
 * JSON lines through `write`, one call per line: {"level":"info","time":ISO,
 * ...bindings, ...fields, "msg"}. Levels as names and ISO times, as the node
 * and the operator always wrote them, so log pipelines and tests keep parsing.
 */
export function jsonLogger(
  level: LogLevel,
  write: (line: string) => void,
  options: JsonLoggerOptions = {},
): PinoLogger {
  const clock = options.clock ?? Date.now;
  return pino(
    {
      level,
      base: options.bindings ?? null,
      timestamp: () => `,"time":"${new Date(clock()).toISOString()}"`,
      formatters: {
        level: (label) => ({ level: label }),
        bindings: (b) => bigintsToStrings(b, 1) as Record<string, unknown>,
        log: fieldsOf,
      },
      // fieldsOf already serialized every Error; pino's own `err` serializer would flatten the cause chain.
      serializers: { err: (v: unknown) => v },
      redact: { paths: [...REDACT_PATHS], censor: '[REDACTED]' },
    },
    { write },
  );
}
