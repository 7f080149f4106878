// Errors an append can reject with. The HTTP layer maps `code` to a status
// (see WalErrorCode in types.ts); `cause` keeps the filesystem error.
import { WalErrorCode } from './types.ts';
import { errorCode } from '../fs/types.ts';

export class WalError extends Error {
  readonly code: WalErrorCode;
  /** Whether the same request may succeed later (503 + Retry-After rather than 4xx/5xx). */
  readonly retryable: boolean;

  constructor(code: WalErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WalError';
    this.code = code;
    this.retryable = code !== WalErrorCode.recordTooLarge;
  }

  /** The underlying filesystem error code (EIO, ENOSPC…), when there is one. */
  get fsCode(): string | undefined {
    return errorCode(this.cause);
  }
}

export function isWalError(err: unknown, code?: WalErrorCode): err is WalError {
  return err instanceof WalError && (code === undefined || err.code === code);
}
