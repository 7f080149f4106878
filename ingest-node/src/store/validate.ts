// Argument checks both stores share, so they refuse exactly the same inputs.
import { StoreError } from './errors.ts';
import { sha256HexPattern } from './hashing.ts';
import { listLimitMax, type PutOptions } from './types.ts';

const metadataNamePattern = /^[a-z0-9][a-z0-9-]{0,63}$/;
// S3 sends metadata as HTTP headers: printable ASCII only, and ~2 KiB in total.
const metadataValuePattern = /^[\x20-\x7e]{0,1024}$/;

export function checkPutOptions(opts: PutOptions, what: string): void {
  if (opts.sha256 !== undefined && !sha256HexPattern.test(opts.sha256))
    throw new StoreError('invalid', `${what}: sha256 must be 64 lowercase hex digits`);
  if (
    opts.contentLength !== undefined &&
    (!Number.isSafeInteger(opts.contentLength) || opts.contentLength < 0)
  )
    throw new StoreError('invalid', `${what}: contentLength must be a non-negative integer`);
  for (const [name, value] of Object.entries(opts.metadata ?? {})) {
    if (name === 'sha256' || !metadataNamePattern.test(name) || !metadataValuePattern.test(value))
      throw new StoreError(
        'invalid',
        `${what}: metadata ${JSON.stringify(name)} is reserved or not plain ASCII`,
      );
  }
}

export function checkLimit(limit: number | undefined): number {
  if (limit === undefined) return listLimitMax;
  if (!Number.isInteger(limit) || limit < 1 || limit > listLimitMax)
    throw new StoreError('invalid', `list limit must be an integer in 1..${listLimitMax}`);
  return limit;
}

/** Reserved for the local store's own files; refused everywhere so both stores accept the same keys. */
export const reservedKeyTop = '.landfall';
/** Longest key both stores accept (S3's own limit). */
export const s3KeyBytesMax = 1024;
/** NAME_MAX on every Linux filesystem we expect, minus room for a `.json` sidecar suffix. */
export const keySegmentBytesMax = 250;

/**
 * The keys both stores accept: 1..1024 bytes of `/`-separated non-empty
 * segments, none `.` or `..`, no NUL or backslash. S3 itself would take more;
 * a folder could not, and keys.ts never makes such keys anyway. Returns the segments.
 */
export function checkObjectKey(key: string): string[] {
  const parts = key.split('/');
  const bad =
    key === '' ||
    Buffer.byteLength(key) > s3KeyBytesMax ||
    key.includes('\0') ||
    key.includes('\\') ||
    parts[0] === reservedKeyTop ||
    parts.some((p) => p === '' || p === '.' || p === '..' || Buffer.byteLength(p) > keySegmentBytesMax);
  if (bad) throw new StoreError('invalid', `invalid object key ${JSON.stringify(key.slice(0, 100))}`);
  return parts;
}
