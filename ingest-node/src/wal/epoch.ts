// The WAL epoch: created with the WAL directory, written into every segment
// header and every S3 key. A node that lost its disk (or its state file) gets
// a new epoch, so it can never overwrite what an earlier epoch delivered even
// though its segment ids start again. ULID layout (26 chars of Crockford
// base32: 48-bit ms timestamp, then 80 random bits), so epochs sort by
// creation time as plain strings and `commits/` listings are time-ordered.
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

export const EPOCH_PATTERN = /^[0-9A-HJKMNP-TV-Z]{26}$/;

export function newEpoch(nowMs: number, randomBytes: (n: number) => Uint8Array): string {
  if (!Number.isInteger(nowMs) || nowMs < 0 || nowMs >= 2 ** 48)
    throw new RangeError(`bad epoch time ${nowMs}`);
  let t = nowMs;
  const time: string[] = [];
  for (let i = 0; i < 10; i++) {
    time.push(ALPHABET[t % 32]!);
    t = Math.floor(t / 32);
  }
  let out = time.reverse().join('');
  // 80 random bits = 16 base32 digits of 5 bits.
  const r = randomBytes(10);
  let acc = 0;
  let bits = 0;
  for (const byte of r) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(acc >>> (bits - 5)) & 31]!;
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
  }
  return out;
}

/** The creation time encoded in an epoch (ms since the Unix epoch). */
export function epochTimeMs(epoch: string): number {
  let t = 0;
  for (let i = 0; i < 10; i++) t = t * 32 + ALPHABET.indexOf(epoch[i] ?? '0');
  return t;
}
