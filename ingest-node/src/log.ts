// The logger shape every module takes. fastify's pino logger satisfies it; so
// does `silentLogger` for tests. Never log API keys or credentials.

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const noop = (): void => {};
export const silentLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop };

const LEVELS = { debug: 20, info: 30, warn: 40, error: 50 } as const;
export type Level = keyof typeof LEVELS;

function serializeErrors(_key: string, value: unknown): unknown {
  if (value instanceof Error) {
    const e = value as Error & { code?: unknown };
    return {
      name: e.name,
      message: e.message,
      ...(e.code !== undefined ? { code: e.code } : {}),
      stack: e.stack,
    };
  }
  return typeof value === 'bigint' ? value.toString() : value;
}

/** JSON lines on stdout, pino-compatible field names, so any log pipeline parses them. */
export function jsonLogger(
  level: Level,
  write: (line: string) => void,
  clock: () => number = Date.now,
): Logger {
  const min = LEVELS[level];
  const at =
    (name: Level) =>
    (obj: object, msg?: string): void => {
      if (LEVELS[name] < min) return;
      write(
        JSON.stringify({ level: name, time: new Date(clock()).toISOString(), ...obj, msg }, serializeErrors) +
          '\n',
      );
    };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
