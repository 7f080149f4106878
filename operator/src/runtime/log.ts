// The operator logs through the node's JSON-lines logger (pino, with the
// same redaction of key material, error stacks and causes, bigints as
// strings), so the two halves write the same lines. Tests pass `silentLogger`.
import { jsonLogger as nodeJsonLogger } from '../../../ingest-node/src/log.ts';
import type { LogLevel } from '../../../ingest-node/src/log.ts';

export type { LogLevel };

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: object): Logger;
}

export function jsonLogger(
  level: LogLevel = 'info',
  bindings: Record<string, unknown> = {},
  write: (line: string) => void = (l) => process.stdout.write(l),
): Logger {
  return nodeJsonLogger(level, write, { bindings });
}

const noop = (): void => {};
export const silentLogger: Logger = {
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  child: () => silentLogger,
};
