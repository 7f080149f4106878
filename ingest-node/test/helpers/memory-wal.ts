// An in-memory WriteAheadLog for HTTP tests: it keeps every append, can be told
// to fail or to hold appends until released, and lets a test set the retained
// bytes that drive the backpressure watermarks.

import type { AppendResult, RecordFormat, WalStats, WriteAheadLog } from '../../src/wal/types.ts';

export interface RecordedAppend {
  readonly records: Buffer[];
  readonly format: RecordFormat;
}

export class MemoryWal implements WriteAheadLog {
  readonly appends: RecordedAppend[] = [];
  /** When set, append() calls that start from now reject with it (nothing is kept). */
  failWith: Error | undefined;
  /** Added to the real byte count in stats().retainedBytes. */
  retainedBytesExtra = 0;
  closed = false;
  #nextSeq = 1n;
  #bytes = 0;
  /** Appends waiting at the hold() gate right now: tests await this instead of sleeping. */
  waiting = 0;
  #gate: Promise<void> | undefined;
  #openGate: (() => void) | undefined;

  /** Holds every append until the returned function is called. */
  hold(): () => void {
    this.#gate = new Promise<void>((resolve) => {
      this.#openGate = resolve;
    });
    return () => {
      this.#gate = undefined;
      this.#openGate?.();
    };
  }

  async append(records: readonly Uint8Array[], format: RecordFormat): Promise<AppendResult> {
    if (this.closed) throw Object.assign(new Error('WAL closed'), { code: 'WAL_CLOSED' });
    // Whether this append fails is decided when it starts, as with a real write.
    const failure = this.failWith;
    if (this.#gate !== undefined) {
      this.waiting++;
      await this.#gate;
      this.waiting--;
    }
    if (failure !== undefined) throw failure;
    // Copy: the caller's buffers are its own.
    const copies = records.map((r) => Buffer.from(r));
    this.appends.push({ records: copies, format });
    const firstSeq = this.#nextSeq;
    this.#nextSeq += BigInt(records.length);
    for (const r of copies) this.#bytes += r.length + 26;
    return { firstSeq, lastSeq: this.#nextSeq - 1n, count: records.length };
  }

  /** Every record appended so far, as strings. */
  lines(): string[] {
    return this.appends.flatMap((a) => a.records.map((r) => r.toString('utf8')));
  }

  stats(): WalStats {
    return {
      epoch: 'test-epoch',
      openSegmentId: 1n,
      openSegmentBytes: this.#bytes,
      retainedBytes: this.#bytes + this.retainedBytesExtra,
      sealedSegments: 0,
      nextSeq: this.#nextSeq,
      appendsTotal: this.appends.length,
      syncsTotal: this.appends.length,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
