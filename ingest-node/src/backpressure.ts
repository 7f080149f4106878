// Admission control for the ingest path. Three bounds turn overload into
// 503 + Retry-After instead of memory growth or a full disk:
//  - in-flight bytes: decoded bytes held by requests not yet answered, plus
//    RECORD_OVERHEAD_BYTES per record;
//  - WAL retained bytes (delivery backlog), high/low watermarks;
//  - free space on the WAL volume, low/high watermarks.
// The watermarks have hysteresis so a node hovering at the limit does not flap
// between ready and not ready on every request. There is no queue: a request
// is admitted or refused at once.

import { statfs } from 'node:fs/promises';
import type { Clock } from './clock.ts';
import type { Logger } from './log.ts';
import type { WalStats } from './wal/types.ts';
import {
  DiskLowError,
  DrainingError,
  OverloadedError,
  WalBacklogError,
  WalUnavailableError,
} from './errors.ts';
import type { LandfallError } from './errors.ts';

/**
 * What one record costs in memory beyond its bytes (the Buffer view, its slot
 * in the records array, the WAL's per-frame bookkeeping: about 120 bytes
 * measured). HTTP and MQTT charge it per record against the in-flight budget
 * so many tiny records cannot hide behind a small byte count.
 */
export const RECORD_OVERHEAD_BYTES = 128;

export interface DiskSpace {
  readonly freeBytes: number;
  /** Null when the probe cannot tell (the WAL's FileSystem reports free bytes only). */
  readonly totalBytes: number | null;
}

/** Measures the WAL volume; injected so tests can fill a disk without filling one. */
export interface DiskSpaceProbe {
  measure(): Promise<DiskSpace>;
}

/** A probe on the WAL's own FileSystem abstraction (so fault-injecting filesystems reach it too). */
export function fileSystemProbe(
  fs: { statfs(path: string): Promise<{ readonly freeBytes: number }> },
  dir: string,
): DiskSpaceProbe {
  return {
    async measure() {
      return { freeBytes: (await fs.statfs(dir)).freeBytes, totalBytes: null };
    },
  };
}

export function statfsProbe(dir: string): DiskSpaceProbe {
  return {
    async measure() {
      const s = await statfs(dir);
      // bavail, not bfree: blocks reserved for root are not ours to fill.
      return { freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize };
    },
  };
}

/** Staleness bound of the WAL watermark on the request path (≈12 MB at 250 MB/s). */
const WAL_CHECK_INTERVAL_MS = 50;

export interface BackpressureOptions {
  readonly inflightBytesMax: number;
  readonly walBytesHigh: number;
  readonly walBytesLow: number;
  readonly diskFreeBytesLow: number;
  readonly diskFreeBytesHigh: number;
  readonly checkIntervalMs: number;
  readonly walStats: () => WalStats;
  readonly disk: DiskSpaceProbe;
  readonly clock: Clock;
  readonly log: Logger;
  /**
   * Called when the free space crosses a watermark (true: under the low one,
   * false: back over the high one), e.g. so the WAL gives back the files it
   * keeps for reuse. Awaited by the check that saw the crossing (refresh()),
   * so once it resolves the release is done; a failure is logged.
   */
  readonly onDiskLow?: (low: boolean) => Promise<void> | void;
}

export type NotReadyReason = 'draining' | 'wal_failed' | 'wal_state_failing' | 'wal_backlog' | 'disk_low';

export interface BackpressureSnapshot {
  readonly accepting: boolean;
  readonly reasons: readonly NotReadyReason[];
  readonly draining: boolean;
  readonly walFailed: boolean;
  /** A seal is not in the state file and the last state write failed: delivery waits behind it. */
  readonly walStateFailing: boolean;
  readonly walBacklog: boolean;
  readonly diskLow: boolean;
  readonly inflightBytes: number;
  readonly inflightBytesMax: number;
  readonly walRetainedBytes: number;
  readonly diskFreeBytes: number | null;
  readonly diskTotalBytes: number | null;
  readonly diskCheckedAtMs: number | null;
}

export class Backpressure {
  readonly #o: BackpressureOptions;
  #inflightBytes = 0;
  /** Shutdown: for good. */
  #draining = false;
  /** Drain mode (POST /v1/drain): until DELETE /v1/drain. */
  #drainMode = false;
  #walBacklog = false;
  #walFailed = false;
  #walStateFailing = false;
  #diskLow = false;
  #walRetainedBytes = 0;
  #disk: DiskSpace | null = null;
  #diskCheckedAtMs: number | null = null;
  #walCheckedAtMs = Number.NEGATIVE_INFINITY;
  #timer: NodeJS.Timeout | undefined;
  #checking: Promise<void> | undefined;

  constructor(options: BackpressureOptions) {
    this.#o = options;
  }

  /** Starts the periodic disk check (and runs one now so the first request sees real numbers). */
  async start(): Promise<void> {
    await this.refresh();
    this.#timer = setInterval(() => void this.refresh(), this.#o.checkIntervalMs);
    // The poll must not keep a finished process alive.
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Measures disk and WAL now. Never rejects: a failed statfs keeps the last state and is logged. */
  refresh(): Promise<void> {
    // One statfs at a time: a slow volume must not pile up checks.
    this.#checking ??= this.#measure().finally(() => {
      this.#checking = undefined;
    });
    return this.#checking;
  }

  async #measure(): Promise<void> {
    this.#checkWal();
    try {
      const disk = await this.#o.disk.measure();
      this.#disk = disk;
      this.#diskCheckedAtMs = this.#o.clock.nowMs();
      const wasLow = this.#diskLow;
      if (!wasLow && disk.freeBytes < this.#o.diskFreeBytesLow) this.#diskLow = true;
      else if (wasLow && disk.freeBytes >= this.#o.diskFreeBytesHigh) this.#diskLow = false;
      if (wasLow !== this.#diskLow) {
        const fields = {
          freeBytes: disk.freeBytes,
          low: this.#o.diskFreeBytesLow,
          high: this.#o.diskFreeBytesHigh,
        };
        if (this.#diskLow)
          this.#o.log.warn(fields, 'WAL volume free space under the low watermark: refusing writes');
        else this.#o.log.info(fields, 'WAL volume free space back over the high watermark: accepting writes');
        try {
          await this.#o.onDiskLow?.(this.#diskLow);
        } catch (err) {
          this.#o.log.error({ err }, 'acting on the WAL volume free-space watermark failed');
        }
      }
    } catch (err) {
      this.#o.log.error({ err }, 'measuring WAL volume free space failed; keeping the last state');
    }
  }

  #checkWal(): void {
    this.#walCheckedAtMs = this.#o.clock.monotonicMs();
    const stats = this.#o.walStats();
    // The durable WAL reports `failed` once it refuses writes until a restart.
    this.#walFailed = (stats as { failed?: unknown }).failed === true;
    // A seal the state file cannot record holds back every later commit
    // marker; the volume is refusing metadata writes, so send producers to a
    // healthy replica until a state write lands again.
    const stateFailing = (stats as { sealsUnrecorded?: unknown }).sealsUnrecorded === true;
    if (stateFailing !== this.#walStateFailing) {
      this.#walStateFailing = stateFailing;
      if (stateFailing)
        this.#o.log.error({}, 'WAL state file writes are failing with a seal unrecorded: refusing writes');
      else this.#o.log.info({}, 'WAL state file written again: accepting writes');
    }
    const retained = stats.retainedBytes;
    this.#walRetainedBytes = retained;
    const was = this.#walBacklog;
    if (!was && retained >= this.#o.walBytesHigh) this.#walBacklog = true;
    else if (was && retained <= this.#o.walBytesLow) this.#walBacklog = false;
    if (was !== this.#walBacklog) {
      const fields = { retainedBytes: retained, high: this.#o.walBytesHigh, low: this.#o.walBytesLow };
      if (this.#walBacklog) this.#o.log.warn(fields, 'WAL backlog over the high watermark: refusing writes');
      else this.#o.log.info(fields, 'WAL backlog under the low watermark: accepting writes');
    }
  }

  /**
   * Whether a new write may start; the error to answer with if not. The WAL
   * watermark is re-checked here, not only on the disk poll, because the
   * backlog can grow by hundreds of MB between two polls; but at most every
   * WAL_CHECK_INTERVAL_MS, since a WAL's stats() need not be cheap (the
   * durable WAL's is O(1): its sums are kept as segments change).
   */
  admit(): LandfallError | undefined {
    if (this.#draining || this.#drainMode) return new DrainingError();
    const now = this.#o.clock.monotonicMs();
    if (now - this.#walCheckedAtMs >= WAL_CHECK_INTERVAL_MS) this.#checkWal();
    if (this.#walFailed || this.#walStateFailing) return new WalUnavailableError();
    if (this.#walBacklog) return new WalBacklogError(this.#walRetainedBytes, this.#o.walBytesHigh);
    if (this.#diskLow) return new DiskLowError(this.#disk?.freeBytes ?? 0, this.#o.diskFreeBytesLow);
    if (this.#inflightBytes >= this.#o.inflightBytesMax) return new OverloadedError(this.#o.inflightBytesMax);
    return undefined;
  }

  /** Claims `n` bytes of the in-flight budget; false (and nothing claimed) when it would overflow. */
  tryReserve(n: number): boolean {
    if (this.#inflightBytes + n > this.#o.inflightBytesMax) return false;
    this.#inflightBytes += n;
    return true;
  }

  release(n: number): void {
    this.#inflightBytes -= n;
    if (this.#inflightBytes < 0) this.#inflightBytes = 0;
  }

  overloaded(): LandfallError {
    return new OverloadedError(this.#o.inflightBytesMax);
  }

  /** Shutdown has begun: refuse new writes, report not ready, for good. */
  beginDrain(): void {
    this.#draining = true;
  }

  /**
   * Drain mode (POST /v1/drain) on or off: the same refusal and readiness as
   * shutdown, but reversible. Turning it off does not undo a shutdown.
   */
  setDrainMode(on: boolean): void {
    this.#drainMode = on;
  }

  /** New writes are refused with LF_DRAINING (shutdown or drain mode). */
  get draining(): boolean {
    return this.#draining || this.#drainMode;
  }

  get inflightBytes(): number {
    return this.#inflightBytes;
  }

  snapshot(): BackpressureSnapshot {
    const reasons: NotReadyReason[] = [];
    if (this.draining) reasons.push('draining');
    if (this.#walFailed) reasons.push('wal_failed');
    if (this.#walStateFailing) reasons.push('wal_state_failing');
    if (this.#walBacklog) reasons.push('wal_backlog');
    if (this.#diskLow) reasons.push('disk_low');
    return {
      accepting: reasons.length === 0,
      reasons,
      draining: this.draining,
      walFailed: this.#walFailed,
      walStateFailing: this.#walStateFailing,
      walBacklog: this.#walBacklog,
      diskLow: this.#diskLow,
      inflightBytes: this.#inflightBytes,
      inflightBytesMax: this.#o.inflightBytesMax,
      walRetainedBytes: this.#walRetainedBytes,
      diskFreeBytes: this.#disk?.freeBytes ?? null,
      diskTotalBytes: this.#disk?.totalBytes ?? null,
      diskCheckedAtMs: this.#diskCheckedAtMs,
    };
  }

  /** Readiness re-checks the WAL so a probe sees recovery without waiting for a write. */
  ready(): BackpressureSnapshot {
    this.#checkWal();
    return this.snapshot();
  }
}
