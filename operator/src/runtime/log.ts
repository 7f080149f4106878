// JSON-lines logger with the same shape as the ingest node's Logger, so the
// two log the same way and tests can pass `silentLogger`.
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: object): Logger;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

function errorFields(obj: object): object {
  const out: Record<string, unknown> = { ...obj };
  for (const [k, v] of Object.entries(out)) {
    if (v instanceof Error) out[k] = { name: v.name, message: v.message };
  }
  return out;
}

export function jsonLogger(
  level: LogLevel = 'info',
  bindings: object = {},
  write: (line: string) => void = (l) => process.stdout.write(l),
): Logger {
  const emit = (l: LogLevel, obj: object, msg?: string): void => {
    if (RANK[l] < RANK[level]) return;
    write(
      JSON.stringify({ time: new Date().toISOString(), level: l, ...bindings, ...errorFields(obj), msg }) +
        '\n',
    );
  };
  return {
    debug: (o, m) => emit('debug', o, m),
    info: (o, m) => emit('info', o, m),
    warn: (o, m) => emit('warn', o, m),
    error: (o, m) => emit('error', o, m),
    child: (b) => jsonLogger(level, { ...bindings, ...b }, write),
  };
}

const noop = (): void => {};
export const silentLogger: Logger = {
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  child: () => silentLogger,
};
