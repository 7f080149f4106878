// Time is passed in, never read from globals, so tests can drive seal-by-age,
// retry backoff and idempotency windows without sleeping.

export interface Clock {
  /** Wall-clock milliseconds since the Unix epoch. */
  nowMs(): number;
  /** Wall-clock microseconds since the Unix epoch (ingest timestamps). */
  nowMicros(): bigint;
  /** Monotonic milliseconds, for durations and timeouts. */
  monotonicMs(): number;
}

export const systemClock: Clock = {
  nowMs: () => Date.now(),
  // timeOrigin + now() is wall time with sub-millisecond resolution.
  nowMicros: () => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)),
  monotonicMs: () => performance.now(),
};
