// Drain mode (POST /v1/drain, issue #13): the node stops taking writes and
// empties itself into the bucket so its pod can go away with nothing
// acknowledged left behind. The operator turns it on before it lowers a
// StatefulSet or releases an Endpoint, and off (DELETE) when it changes its mind.
//
// The refusal itself is Backpressure's `draining` (the one shutdown uses):
// 503 LF_DRAINING + Retry-After for HTTP and MQTT alike, /readyz 503. This
// module adds what shutdown does differently: it is reversible, and it seals.
// A request admitted just before drain mode began may append after the first
// seal, so the open segment is sealed again whenever it holds bytes while
// draining. Sealed segments go to the delivery pipeline at once (it is driven
// by seals, never by age); `drained` is true only once none is left.
//
// Drain mode lives in memory only: a restarted pod accepts again, and the
// operator posts again for as long as it wants the node drained.

import type { Clock } from './clock.ts';
import type { Logger } from './log.ts';
import type { DurableWalStats, Wal, WriteAheadLog } from './wal/types.ts';

/** The `drain` object of /v1/status, POST and DELETE /v1/drain. */
export interface DrainState {
  readonly draining: boolean;
  /** Draining, and nothing open, sealed or pending in delivery. */
  readonly drained: boolean;
  /** Wall-clock ms when drain mode began; null when not draining. */
  readonly sinceMs: number | null;
}

export interface DrainModeOptions {
  readonly backpressure: { setDrainMode(on: boolean): void };
  readonly wal: WriteAheadLog;
  /** Segments the delivery pipeline still holds; undefined when the node delivers nowhere. */
  readonly deliveryPending?: (() => number) | undefined;
  /** Corrupt segments in quarantine/ now (-1: unknown): acknowledged data a human must look at; drained only at 0. */
  readonly quarantinedSegments?: (() => Promise<number>) | undefined;
  /** HTTP ingest requests admitted and not yet answered, and MQTT messages in an append under way: drained only at 0. */
  readonly writesInFlight?: () => number;
  /** Closes idle keep-alive connections so clients reconnect (to another replica). */
  readonly closeIdleConnections?: () => void;
  readonly clock: Clock;
  readonly log: Logger;
  /** How often a draining node looks for bytes appended after its last seal. Default 100 ms. */
  readonly sealCheckIntervalMs?: number;
}

/** The first seal is awaited this long before POST answers; a seal stuck on a failing state write goes on in the background. */
const FIRST_SEAL_WAIT_MS = 2_000;
const QUARANTINE_READ_INTERVAL_MS = 1_000;

function canSeal(wal: WriteAheadLog): wal is Wal {
  return typeof (wal as Partial<Wal>).seal === 'function';
}

export class DrainMode {
  readonly #o: DrainModeOptions;
  #sinceMs: number | null = null;
  #timer: NodeJS.Timeout | undefined;
  #sealing: Promise<void> | undefined;
  #stopped = false;
  /** Last count of quarantined segments; undefined until read (then not drained). */
  #quarantined: number | undefined;
  #quarantineReadAtMs = Number.NEGATIVE_INFINITY;
  #quarantineReading: Promise<void> | undefined;

  constructor(options: DrainModeOptions) {
    this.#o = options;
  }

  get draining(): boolean {
    return this.#sinceMs !== null;
  }

  state(): DrainState {
    return { draining: this.draining, drained: this.#drained(), sinceMs: this.#sinceMs };
  }

  #drained(): boolean {
    if (!this.draining) return false;
    const s = this.#o.wal.stats();
    if (s.openSegmentBytes > 0) return false;
    const undelivered =
      'undeliveredSegments' in s ? (s as DurableWalStats).undeliveredSegments : s.sealedSegments;
    if (undelivered > 0) return false;
    if ((this.#o.writesInFlight?.() ?? 0) > 0) return false;
    if (this.#o.quarantinedSegments !== undefined && this.#quarantined !== 0) return false;
    return (this.#o.deliveryPending?.() ?? 0) === 0;
  }

  /** Re-reads quarantine/ at most once a second while draining (a readdir, off the request path). */
  #readQuarantine(): Promise<void> {
    const read = this.#o.quarantinedSegments;
    const nowMs = this.#o.clock.monotonicMs();
    if (read === undefined || nowMs - this.#quarantineReadAtMs < QUARANTINE_READ_INTERVAL_MS)
      return this.#quarantineReading ?? Promise.resolve();
    this.#quarantineReadAtMs = nowMs;
    this.#quarantineReading ??= read()
      .then(
        (n) => {
          if (n !== 0 && this.#quarantined !== n)
            this.#o.log.warn(
              { quarantinedSegments: n },
              'drain mode: quarantine/ holds corrupt segments (acknowledged data a human must look at); this node will not report drained',
            );
          this.#quarantined = n;
        },
        (err: unknown) => {
          this.#quarantined = undefined;
          this.#o.log.error({ err }, 'drain mode: reading quarantine/ failed');
        },
      )
      .finally(() => {
        this.#quarantineReading = undefined;
      });
    return this.#quarantineReading;
  }

  /** Turns drain mode on (idempotent) and seals the open segment. */
  async begin(): Promise<DrainState> {
    if (this.#stopped) return this.state();
    if (this.#sinceMs === null) {
      this.#sinceMs = this.#o.clock.nowMs();
      this.#o.backpressure.setDrainMode(true);
      this.#o.closeIdleConnections?.();
      this.#o.log.info({}, 'drain mode: refusing new writes, sealing and delivering everything');
      const every = this.#o.sealCheckIntervalMs ?? 100;
      this.#timer = setInterval(() => {
        void this.#sealIfOpen();
        void this.#readQuarantine();
      }, every);
      this.#timer.unref();
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([this.#sealIfOpen(), this.#readQuarantine()]),
      new Promise<void>((r) => {
        timer = setTimeout(r, FIRST_SEAL_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
    return this.state();
  }

  /** Leaves drain mode: writes are accepted again (unless the node is shutting down). */
  end(): DrainState {
    if (this.#sinceMs !== null) {
      this.#sinceMs = null;
      clearInterval(this.#timer);
      this.#timer = undefined;
      this.#o.backpressure.setDrainMode(false);
      this.#o.log.info({}, 'drain mode ended: accepting writes again');
    }
    return this.state();
  }

  /** Shutdown: no more seals from here (the WAL is closing); the refusal stays. */
  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** One seal at a time; a failed seal is logged and tried again on the next tick. */
  #sealIfOpen(): Promise<void> {
    if (this.#stopped || !this.draining) return Promise.resolve();
    const wal = this.#o.wal;
    if (!canSeal(wal) || wal.stats().openSegmentBytes === 0) return Promise.resolve();
    this.#sealing ??= wal
      .seal('drain')
      .then(
        () => undefined,
        (err: unknown) => this.#o.log.error({ err }, 'drain mode: sealing the open segment failed; retrying'),
      )
      .finally(() => {
        this.#sealing = undefined;
      });
    return this.#sealing;
  }
}
