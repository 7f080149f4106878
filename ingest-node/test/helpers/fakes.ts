// A clock the test moves by hand, and a volume whose free space the test sets.

import type { Clock } from '../../src/clock.ts';
import type { DiskSpace, DiskSpaceProbe } from '../../src/backpressure.ts';

export class FakeClock implements Clock {
  ms = 1_700_000_000_000;
  mono = 1_000;
  nowMs(): number {
    return this.ms;
  }
  nowMicros(): bigint {
    return BigInt(this.ms) * 1000n;
  }
  monotonicMs(): number {
    return this.mono;
  }
  advance(ms: number): void {
    this.ms += ms;
    this.mono += ms;
  }
}

export class FakeDisk implements DiskSpaceProbe {
  freeBytes = 100 * 1024 ** 3;
  totalBytes = 200 * 1024 ** 3;
  failWith: Error | undefined;
  async measure(): Promise<DiskSpace> {
    if (this.failWith !== undefined) throw this.failWith;
    return { freeBytes: this.freeBytes, totalBytes: this.totalBytes };
  }
}
