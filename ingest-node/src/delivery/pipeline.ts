// The delivery pipeline: sealed WAL segments → artifacts in the bucket →
// commit marker → local delete. Driven by the WAL's state file, so a restart
// resumes exactly where it stopped and never redoes committed work.
//
// Per sealed segment (DESIGN §2, §5; docs/s3-layout.md "Order of writes"):
//
//   (a) resumed segment (found at start, or retried): if its commit marker
//       already exists, it is delivered: mark it and go to (e). Covers a
//       crash between the marker and the local mark.
//   (b) each artifact producer (producers.ts) reads exactly the `bytes` the
//       state records, verifying every frame; a corrupt segment is
//       quarantined, never deleted, never delivered.
//   (c) its files upload under deterministic keys (instance and epoch in
//       every key), then the producer's artifacts are recorded in the
//       segment's progress, so a restart skips the producer (after a HEAD
//       check that the objects are still the ones recorded).
//   (d) the commit marker, last, with If-None-Match (a 412 is read back and
//       compared). Markers of one WAL are written in (epoch, segment id)
//       order: artifacts of several segments upload concurrently, but marker
//       N+1 waits until every earlier sealed segment is delivered, so a
//       consumer's StartAfter cursor never skips a segment that commits late.
//   (e) markDelivered, then delete the local file (or keep the newest few,
//       see retention).
//
// Failure handling: every store call retries with full-jitter backoff
// (retry.ts, bounded). A step that still fails puts the segment back in the
// queue with a per-segment backoff (bounded delay, unbounded attempts: "gave
// up" never means "dropped"); the next attempt checks for the marker first,
// since a lost answer may have hidden a successful write. Nothing here ever
// blocks the WAL's append path: during an S3 outage the WAL keeps accepting
// until its retained-bytes watermark, which the HTTP layer enforces.
import path from 'node:path';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { systemClock, type Clock } from '../clock.ts';
import { NodeFileSystem } from '../fs/node.ts';
import { removeTree } from '../fs/streams.ts';
import type { FileSystem } from '../fs/types.ts';
import { silentLogger, type Logger } from '../log.ts';
import { isRetryable } from '../store/errors.ts';
import type { ObjectStore } from '../store/types.ts';
import type { JsonValue, SealedSegment, Wal } from '../wal/types.ts';
import { commitKey, normalizePrefix, formatSegmentId, type SegmentRef } from './keys.ts';
import {
  MarkerError,
  parseMarkerViewRows,
  readCommitMarker,
  writeCommitMarker,
  writerName,
  type CommitMarker,
  type MarkerArtifact,
  type MarkerTable,
  type MarkerView,
} from './marker.ts';
import {
  hashSegment,
  isSegmentDefect,
  openVerifiedSegment,
  segmentArchiveProducer,
  segmentRecords,
  type ArtifactProducer,
  type ClosableProducer,
  type ProducedFile,
  type SegmentJob,
} from './producers.ts';
import { backoffDelayMs, defaultRetryPolicy, withRetry, type RetryPolicy } from './retry.ts';
import {
  segmentRetryDelayMsMaxDefault,
  segmentsAheadMaxDefault,
  segmentsInFlightMaxDefault,
  staleUploadAgeMsDefault,
  staleUploadCheckIntervalMsDefault,
  uploadsInFlightMaxDefault,
} from './settings.ts';
import { uploadFile } from './upload.ts';

/** The part of the WAL the pipeline uses. */
export type PipelineWal = Pick<
  Wal,
  | 'onSealed'
  | 'sealedSegments'
  | 'deliveredSegments'
  | 'segment'
  | 'segmentPath'
  | 'updateProgress'
  | 'markDelivered'
  | 'deleteSegment'
  | 'quarantineSegment'
>;

export interface RetentionOptions {
  /** Keep at most this many delivered segments on disk (newest first). */
  readonly segments?: number;
  /** Keep at most this many bytes of delivered segments on disk. */
  readonly bytes?: number;
}

export interface PipelineOptions {
  readonly wal: PipelineWal;
  readonly store: ObjectStore;
  /** Bucket prefix (`''` = bucket root). */
  readonly prefix?: string;
  readonly endpoint: string;
  readonly instance: string;
  /**
   * A folder only this pipeline uses, on a volume with room for
   * segmentsInFlightMax compressed segments (the WAL volume is fine). Emptied
   * at start.
   */
  readonly scratchDir: string;
  /**
   * The WAL's filesystem: segments are read, scratch files written and
   * produced files uploaded through it. Default: the real disk.
   */
  readonly fs?: FileSystem;
  /** What each segment becomes. Default: the `.wal.zst` archive only. */
  readonly producers?: readonly ArtifactProducer[];
  /** Segments being read, compressed or uploaded at once. Default 2. */
  readonly segmentsInFlightMax?: number;
  /**
   * Segments whose artifacts are uploaded and that wait for an earlier
   * segment's marker. Bounds the work done ahead of a stuck segment. Default 8.
   */
  readonly segmentsAheadMax?: number;
  /** Artifact uploads at once, over all segments (each has the store's own part concurrency). Default 4. */
  readonly uploadsInFlightMax?: number;
  /** Retries of one store call (retry.ts). */
  readonly retry?: RetryPolicy;
  /** Cap of the backoff before a failed segment is tried again. Default 60 s. */
  readonly segmentRetryDelayMsMax?: number;
  /** Delivered segments to keep on disk after delivery; default none (delete at once). */
  readonly retention?: RetentionOptions;
  /**
   * Abort multipart uploads under our key space older than this at start (a
   * crash mid-upload leaves billed parts). Far beyond any upload's duration.
   * 0 turns it off. Default 24 h.
   */
  readonly staleUploadAgeMs?: number;
  /**
   * The stale-upload sweep runs again this often after the one at start (a
   * node that runs for months would otherwise clean only at its last start).
   * One sweep at a time. 0: only at start. Default 1 h.
   */
  readonly staleUploadCheckIntervalMs?: number;
  readonly recordBytesMax?: number;
  readonly clock?: Clock;
  readonly log?: Logger;
  /** Registers the pipeline's metrics (landfall_delivery_*) here. */
  readonly registry?: Registry;
  /** Uniform in [0, 1): backoff jitter. */
  readonly random?: () => number;
  /** Observes each step (tests, tracing). Must not throw. */
  readonly onEvent?: (event: PipelineEvent) => void;
  /**
   * Table commits (iceberg/delivery.ts): called once per delivery attempt of
   * a segment, after its artifacts are in the store, in marker order, right
   * before the marker, which lists what it returns as `tables`. It must be
   * idempotent across attempts (a crash after it and before the marker runs
   * it again). A throw fails the attempt like a failed upload.
   */
  readonly tableCommit?: (c: TableCommitContext) => Promise<readonly MarkerTable[]>;
}

export interface TableCommitContext {
  readonly ref: SegmentRef;
  readonly segment: SealedSegment;
  readonly artifacts: readonly MarkerArtifact[];
  readonly views: readonly MarkerView[];
  readonly signal: AbortSignal;
}

export type PipelineEventType =
  | 'started'
  | 'produced'
  | 'uploaded'
  | 'committing'
  | 'tables'
  | 'committed'
  | 'delivered'
  | 'deleted'
  | 'failed'
  | 'quarantined';

export interface PipelineEvent {
  readonly type: PipelineEventType;
  readonly segmentId: bigint;
  readonly epoch: string;
  readonly detail?: string;
}

export interface PipelineStats {
  /** Sealed segments not yet delivered, and their bytes. */
  readonly segmentsPending: number;
  readonly bytesPending: number;
  /** Age of the oldest record of the oldest undelivered segment ("archival lag"); 0 when none. */
  readonly oldestUndeliveredAgeMs: number;
  readonly segmentsInFlight: number;
  readonly segmentsWaiting: number;
  readonly uploadsInFlight: number;
  readonly segmentsDeliveredTotal: number;
  readonly segmentBytesDeliveredTotal: number;
  readonly uploadsTotal: number;
  readonly uploadedBytesTotal: number;
  readonly uploadFailuresTotal: number;
  readonly uploadRetriesTotal: number;
  readonly markersWrittenTotal: number;
  /** Markers found already written (a crash or a lost answer after the write). */
  readonly markersFoundTotal: number;
  readonly segmentFailuresTotal: number;
  readonly quarantinedTotal: number;
  readonly deletedTotal: number;
  readonly staleUploadsAbortedTotal: number;
  readonly lastSealToCommitMs: number | null;
  readonly lastError: { readonly segmentId: string; readonly message: string; readonly atMs: number } | null;
}

export interface Pipeline {
  stats(): PipelineStats;
  /** The /v1/status section. */
  status(): Record<string, unknown>;
  /** Resolves once no sealed segment is waiting for delivery (or the pipeline stopped). */
  idle(): Promise<void>;
  /**
   * Starts no new step; lets the steps in flight finish for up to `graceMs`
   * (default 10 s), then aborts them (an aborted upload is discarded, and a
   * half-done segment resumes from its recorded progress at the next start).
   * The WAL is not touched after this resolves. Idempotent.
   */
  stop(opts?: { graceMs?: number }): Promise<void>;
}

export {
  segmentRetryDelayMsMaxDefault,
  segmentsAheadMaxDefault,
  segmentsInFlightMaxDefault,
  staleUploadAgeMsDefault,
  staleUploadCheckIntervalMsDefault,
  uploadsInFlightMaxDefault,
};
/** How far below a segment id the ordering check looks for a seal the WAL has not announced yet. */
const unannouncedScanIds = 1024n;
/** Re-check of a marker turn blocked by such a seal. */
const turnRecheckMs = 1_000;
/** Top-level folders our keys live in: stale multipart uploads are aborted there. */
const keyFolders = ['segments', 'raw', 'views', 'dlq'] as const;

class StoppedError extends Error {
  constructor() {
    super('delivery pipeline stopped');
    this.name = 'StoppedError';
  }
}

class Semaphore {
  #free: number;
  readonly #waiters: (() => void)[] = [];
  constructor(max: number) {
    this.#free = max;
  }
  async acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((r) => this.#waiters.push(r));
  }
  release(): void {
    const next = this.#waiters.shift();
    if (next !== undefined) next();
    else this.#free++;
  }
}

// ---- progress in state.json ------------------------------------------------------

/** What the pipeline keeps in a segment's `progress.delivery`. */
interface DeliveryProgress {
  /** The exact sealed segment (the marker's `segment`), once a producer read it. */
  segment?: { bytes: number; sha256: string };
  /** Uploaded artifacts by producer kind: a producer listed here is done. */
  artifacts: Record<string, MarkerArtifact[]>;
  views: Record<string, MarkerView[]>;
}

const progressKey = 'delivery';

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function parseArtifact(x: unknown): MarkerArtifact | undefined {
  if (!isRecord(x)) return undefined;
  const { kind, key, bytes, rows, sha256, view } = x;
  if (
    (kind !== 'segment' && kind !== 'raw' && kind !== 'view' && kind !== 'dlq') ||
    typeof key !== 'string' ||
    typeof bytes !== 'number' ||
    typeof rows !== 'number' ||
    typeof sha256 !== 'string' ||
    (view !== undefined && typeof view !== 'string')
  )
    return undefined;
  return { kind, key, bytes, rows, sha256, ...(view !== undefined ? { view } : {}) };
}

/** Progress is JSON from disk: anything malformed is dropped (the work is redone, never trusted). */
export function parseDeliveryProgress(progress: SealedSegment['progress']): DeliveryProgress {
  const out: DeliveryProgress = { artifacts: {}, views: {} };
  const p = progress[progressKey];
  if (!isRecord(p)) return out;
  const seg = p['segment'];
  if (isRecord(seg) && typeof seg['bytes'] === 'number' && typeof seg['sha256'] === 'string')
    out.segment = { bytes: seg['bytes'], sha256: seg['sha256'] };
  const arts = p['artifacts'];
  if (isRecord(arts)) {
    for (const [kind, list] of Object.entries(arts)) {
      if (!Array.isArray(list)) continue;
      const parsed = list.map(parseArtifact);
      if (parsed.every((a) => a !== undefined)) out.artifacts[kind] = parsed;
    }
  }
  const views = p['views'];
  if (isRecord(views)) {
    for (const [kind, list] of Object.entries(views)) {
      if (!Array.isArray(list)) continue;
      const parsed = list.filter(
        (v): v is { name: string; specSha256: string } =>
          isRecord(v) && typeof v['name'] === 'string' && typeof v['specSha256'] === 'string',
      );
      out.views[kind] = parsed.map((v) => {
        // The optional row accounting travels with the view into the marker.
        const rows = parseMarkerViewRows((v as { rows?: unknown }).rows);
        return { name: v.name, specSha256: v.specSha256, ...(rows !== undefined ? { rows } : {}) };
      });
    }
  }
  return out;
}

function progressJson(p: DeliveryProgress): JsonValue {
  return {
    ...(p.segment !== undefined ? { segment: { ...p.segment } } : {}),
    artifacts: Object.fromEntries(
      Object.entries(p.artifacts).map(([k, list]) => [
        k,
        list.map((a) => ({
          kind: a.kind,
          key: a.key,
          bytes: a.bytes,
          rows: a.rows,
          sha256: a.sha256,
          ...(a.view !== undefined ? { view: a.view } : {}),
        })),
      ]),
    ),
    views: Object.fromEntries(Object.entries(p.views).map(([k, list]) => [k, list.map((v) => ({ ...v }))])),
  };
}

// ---- the pipeline ----------------------------------------------------------------

interface Entry {
  readonly id: bigint;
  readonly epoch: string;
  state: 'queued' | 'running' | 'waiting';
  /** Look for an existing marker before doing anything (resumed or retried). */
  checkMarker: boolean;
  attempts: number;
  /** Monotonic ms before which it is not retried. */
  notBeforeMs: number;
}

function compareSegments(a: { epoch: string; id: bigint }, b: { epoch: string; id: bigint }): number {
  if (a.epoch !== b.epoch) return a.epoch < b.epoch ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function checkBound(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max)
    throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${value}`);
  return value;
}

class DeliveryPipeline implements Pipeline {
  readonly #o: PipelineOptions;
  readonly #wal: PipelineWal;
  readonly #store: ObjectStore;
  readonly #prefix: string;
  readonly #producers: readonly ArtifactProducer[];
  /** The default archive producer, made (and closed) here; producers passed in are their owner's. */
  readonly #ownProducer: ClosableProducer | undefined;
  readonly #fs: FileSystem;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #random: () => number;
  readonly #retry: RetryPolicy;
  readonly #inFlightMax: number;
  readonly #aheadMax: number;
  readonly #uploads: Semaphore;
  readonly #keepSegments: number;
  readonly #keepBytes: number;
  readonly #abort = new AbortController();
  readonly #entries = new Map<bigint, Entry>();
  readonly #running = new Set<Promise<void>>();
  readonly #turnWaiters = new Set<{ entry: Entry; resolve: () => void; reject: (e: Error) => void }>();
  readonly #idleWaiters: (() => void)[] = [];
  #producing = 0;
  #uploading = 0;
  #unsubscribe: (() => void) | undefined;
  #pumpTimer: NodeJS.Timeout | undefined;
  #turnTimer: NodeJS.Timeout | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweep: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #retention: Promise<void> | undefined;
  #retentionAgain = false;
  #background: Promise<void> | undefined;
  #sealToCommit: Histogram | undefined;
  readonly #n = {
    segmentsDelivered: 0,
    segmentBytesDelivered: 0,
    uploads: 0,
    uploadedBytes: 0,
    uploadFailures: 0,
    uploadRetries: 0,
    markersWritten: 0,
    markersFound: 0,
    segmentFailures: 0,
    quarantined: 0,
    deleted: 0,
    staleUploadsAborted: 0,
  };
  #lastSealToCommitMs: number | null = null;
  #lastError: PipelineStats['lastError'] = null;

  constructor(o: PipelineOptions) {
    this.#o = o;
    this.#wal = o.wal;
    this.#store = o.store;
    this.#prefix = normalizePrefix(o.prefix ?? '');
    if (o.producers === undefined) {
      const own = segmentArchiveProducer();
      this.#ownProducer = own;
      this.#producers = [own];
    } else this.#producers = o.producers;
    if (this.#producers.length === 0)
      throw new RangeError('the delivery pipeline needs at least one producer');
    const kinds = new Set(this.#producers.map((p) => p.kind));
    if (kinds.size !== this.#producers.length) throw new RangeError('producer kinds must be unique');
    this.#fs = o.fs ?? new NodeFileSystem();
    this.#clock = o.clock ?? systemClock;
    this.#log = o.log ?? silentLogger;
    this.#random = o.random ?? Math.random;
    this.#retry = o.retry ?? defaultRetryPolicy;
    this.#inFlightMax = checkBound(
      'segmentsInFlightMax',
      o.segmentsInFlightMax ?? segmentsInFlightMaxDefault,
      1,
      64,
    );
    this.#aheadMax = checkBound('segmentsAheadMax', o.segmentsAheadMax ?? segmentsAheadMaxDefault, 0, 10_000);
    this.#uploads = new Semaphore(
      checkBound('uploadsInFlightMax', o.uploadsInFlightMax ?? uploadsInFlightMaxDefault, 1, 64),
    );
    const r = o.retention ?? {};
    const none = r.segments === undefined && r.bytes === undefined;
    this.#keepSegments = none ? 0 : (r.segments ?? Infinity);
    this.#keepBytes = none ? 0 : (r.bytes ?? Infinity);
    if (o.registry !== undefined) this.#registerMetrics(o.registry);
  }

  async start(): Promise<void> {
    // Leftovers of a crashed attempt: producers start from an empty folder.
    await this.#fs.mkdir(this.#o.scratchDir, { recursive: true });
    for (const name of await this.#fs.readdir(this.#o.scratchDir))
      await removeTree(this.#fs, path.join(this.#o.scratchDir, name));
    // sealedSegments() and onSealed() in the same tick: no seal is missed or seen twice.
    const existing = this.#wal.sealedSegments();
    this.#unsubscribe = this.#wal.onSealed((s) => {
      if (this.#stopping !== undefined) return;
      this.#add(s, false);
      this.#pump();
    });
    for (const s of existing) this.#add(s, true);
    this.#log.info(
      {
        store: this.#store.description,
        prefix: this.#prefix,
        pending: this.#entries.size,
        delivered: existing.length - this.#entries.size,
      },
      'delivery pipeline started',
    );
    const staleAgeMs = this.#o.staleUploadAgeMs ?? staleUploadAgeMsDefault;
    this.#background = Promise.all([
      staleAgeMs > 0 ? this.#sweepStaleUploads(staleAgeMs) : Promise.resolve(),
      this.#applyRetention(),
    ]).then(() => undefined);
    const sweepEveryMs = checkBound(
      'staleUploadCheckIntervalMs',
      this.#o.staleUploadCheckIntervalMs ?? staleUploadCheckIntervalMsDefault,
      0,
      7 * 24 * 3600_000,
    );
    if (staleAgeMs > 0 && sweepEveryMs > 0) {
      this.#sweepTimer = setInterval(() => void this.#sweepStaleUploads(staleAgeMs), sweepEveryMs);
      this.#sweepTimer.unref();
    }
    this.#pump();
  }

  // ---- scheduling --------------------------------------------------------------

  #add(s: SealedSegment, resumed: boolean): void {
    if (s.status === 'delivered') {
      void this.#applyRetention();
      return;
    }
    if (this.#entries.has(s.id)) return;
    this.#entries.set(s.id, {
      id: s.id,
      epoch: s.epoch,
      state: 'queued',
      checkMarker: resumed,
      attempts: 0,
      notBeforeMs: 0,
    });
  }

  #lowestPending(): Entry | undefined {
    let low: Entry | undefined;
    for (const e of this.#entries.values()) if (low === undefined || compareSegments(e, low) < 0) low = e;
    return low;
  }

  #pump(): void {
    if (this.#stopping !== undefined) return;
    clearTimeout(this.#pumpTimer);
    this.#pumpTimer = undefined;
    const now = this.#clock.monotonicMs();
    while (this.#producing < this.#inFlightMax) {
      // Work ahead of a stuck segment is bounded: once segmentsAheadMax wait
      // for their turn, only the segment everything waits on may start.
      let waiting = 0;
      for (const e of this.#entries.values()) if (e.state === 'waiting') waiting++;
      const only = waiting >= this.#aheadMax ? this.#lowestPending() : undefined;
      let next: Entry | undefined;
      let dueAtMs = Infinity;
      for (const e of this.#entries.values()) {
        if (e.state !== 'queued' || (only !== undefined && e !== only)) continue;
        if (e.notBeforeMs > now) dueAtMs = Math.min(dueAtMs, e.notBeforeMs);
        else if (next === undefined || compareSegments(e, next) < 0) next = e;
      }
      if (next === undefined) {
        if (dueAtMs !== Infinity) {
          this.#pumpTimer = setTimeout(() => this.#pump(), Math.max(1, dueAtMs - now));
          this.#pumpTimer.unref();
        }
        return;
      }
      next.state = 'running';
      this.#producing++;
      const task = this.#run(next);
      this.#running.add(task);
      void task.finally(() => {
        this.#running.delete(task);
        this.#checkIdle();
      });
    }
  }

  async #run(entry: Entry): Promise<void> {
    const slot = { held: true };
    const release = (): void => {
      if (!slot.held) return;
      slot.held = false;
      this.#producing--;
      this.#pump();
    };
    try {
      await this.#deliver(entry, release);
    } catch (err) {
      await this.#failed(entry, err);
    } finally {
      release();
      // A failure after the slot was released requeued the entry with a
      // backoff: the pump must (re)arm its timer for it.
      this.#pump();
      this.#checkTurns();
      this.#checkIdle();
    }
  }

  async #failed(entry: Entry, err: unknown): Promise<void> {
    const seg = this.#wal.segment(entry.id);
    if (this.#stopping !== undefined && (err instanceof StoppedError || this.#abort.signal.aborted)) {
      entry.state = 'queued';
      return;
    }
    if (seg !== undefined && isSegmentDefect(err)) {
      const reason = `delivery: ${errorMessage(err)}`;
      this.#log.error(
        { err, fileName: seg.fileName, bytes: seg.bytes },
        'WAL segment is corrupt: quarantining it (kept on disk, not delivered)',
      );
      try {
        await this.#wal.quarantineSegment(entry.id, reason);
        this.#n.quarantined++;
        this.#entries.delete(entry.id);
        this.#emit('quarantined', entry, reason);
        return;
      } catch (qerr) {
        this.#log.error({ err: qerr, fileName: seg.fileName }, 'quarantining the segment failed; will retry');
      }
    }
    if (seg === undefined) {
      // Quarantined or deleted by someone else meanwhile: nothing left to deliver.
      this.#entries.delete(entry.id);
      return;
    }
    entry.attempts++;
    entry.state = 'queued';
    entry.checkMarker = true;
    const delayMs = backoffDelayMs(
      {
        attemptsMax: 1,
        retryDelayMsBase: Math.min(1_000, this.#o.segmentRetryDelayMsMax ?? segmentRetryDelayMsMaxDefault),
        retryDelayMsMax: this.#o.segmentRetryDelayMsMax ?? segmentRetryDelayMsMaxDefault,
      },
      Math.min(entry.attempts, 30),
      this.#random,
    );
    entry.notBeforeMs = this.#clock.monotonicMs() + delayMs;
    this.#n.segmentFailures++;
    const message = errorMessage(err);
    this.#lastError = { segmentId: formatSegmentId(entry.id), message, atMs: this.#clock.nowMs() };
    // A conflict or a permission problem needs a human; a store outage does not.
    const level = isRetryable(err) ? 'warn' : 'error';
    this.#log[level](
      { err, fileName: seg.fileName, attempt: entry.attempts, retryInMs: delayMs },
      'delivering the segment failed; it stays on disk and is retried',
    );
    this.#emit('failed', entry, message);
  }

  #emit(type: PipelineEventType, entry: { id: bigint; epoch: string }, detail?: string): void {
    if (this.#o.onEvent === undefined) return;
    try {
      this.#o.onEvent({
        type,
        segmentId: entry.id,
        epoch: entry.epoch,
        ...(detail !== undefined ? { detail } : {}),
      });
    } catch (err) {
      this.#log.warn({ err }, 'delivery onEvent listener threw');
    }
  }

  #checkStopping(): void {
    if (this.#stopping !== undefined) throw new StoppedError();
  }

  /** After stop() gave up waiting, the WAL is no longer ours to write. */
  #checkAborted(): void {
    if (this.#abort.signal.aborted) throw new StoppedError();
  }

  #withRetry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return withRetry(fn, this.#retry, {
      signal: this.#abort.signal,
      random: this.#random,
      isRetryable,
      onRetry: ({ attempt, error, delayMs }) =>
        this.#log.warn({ err: error, attempt, delayMs }, `${what} failed; retrying`),
    });
  }

  // ---- one segment ---------------------------------------------------------------

  async #deliver(entry: Entry, releaseSlot: () => void): Promise<void> {
    const seg = this.#wal.segment(entry.id);
    if (seg === undefined) {
      this.#entries.delete(entry.id);
      return;
    }
    const ref: SegmentRef = {
      endpoint: this.#o.endpoint,
      instance: this.#o.instance,
      epoch: seg.epoch,
      segmentId: seg.id,
    };
    this.#emit('started', entry);

    // (a) A marker may exist already: a crash (or a lost answer) after it was written.
    if (entry.checkMarker) {
      const existing = await this.#withRetry('reading the commit marker', () =>
        readCommitMarker(this.#store, this.#prefix, ref),
      );
      if (existing !== null) {
        this.#checkMarkerIdentity(existing, seg);
        this.#n.markersFound++;
        this.#log.info(
          { fileName: seg.fileName, key: commitKey(this.#prefix, ref) },
          'commit marker already written: marking the segment delivered',
        );
        releaseSlot();
        await this.#finish(entry, seg, commitKey(this.#prefix, ref));
        return;
      }
      entry.checkMarker = false;
    }

    // (b, c) Artifacts, skipping producers whose uploads are recorded and still in the store.
    const progress = parseDeliveryProgress(seg.progress);
    for (const [kind, arts] of Object.entries(progress.artifacts)) {
      if (!this.#producers.some((p) => p.kind === kind)) continue;
      for (const a of arts) {
        this.#checkStopping();
        const info = await this.#withRetry('checking an uploaded artifact', () => this.#store.head(a.key));
        if (info === null || info.bytes !== a.bytes || (info.sha256 !== null && info.sha256 !== a.sha256)) {
          this.#log.warn(
            { key: a.key, fileName: seg.fileName },
            'recorded artifact is missing or differs; rebuilding',
          );
          delete progress.artifacts[kind];
          break;
        }
      }
    }
    const jobRoot = path.join(this.#o.scratchDir, `${seg.epoch}-${formatSegmentId(seg.id)}`);
    try {
      for (const producer of this.#producers) {
        if (progress.artifacts[producer.kind] !== undefined) continue;
        this.#checkStopping();
        const dir = path.join(jobRoot, producer.kind);
        await removeTree(this.#fs, dir);
        await this.#fs.mkdir(dir, { recursive: true });
        const produced = await producer.produce(this.#job(seg, ref, dir));
        this.#emit('produced', entry, producer.kind);
        const artifacts = await Promise.all(produced.files.map((f) => this.#upload(f)));
        progress.artifacts[producer.kind] = artifacts;
        if (produced.views !== undefined) progress.views[producer.kind] = [...produced.views];
        if (produced.segment !== undefined) progress.segment = { ...produced.segment };
        this.#checkAborted();
        await this.#wal.updateProgress(seg.id, { [progressKey]: progressJson(progress) });
        await removeTree(this.#fs, dir);
        this.#emit('uploaded', entry, producer.kind);
      }
      if (progress.segment === undefined) {
        this.#checkStopping();
        progress.segment = await hashSegment(this.#job(seg, ref, jobRoot));
      }
    } finally {
      await removeTree(this.#fs, jobRoot);
    }
    const segmentSum = progress.segment;
    // (d) The marker, in order. Waiting holds no slot: the segment everything
    // waits on must always be able to run.
    entry.state = 'waiting';
    releaseSlot();
    await this.#turn(entry);
    this.#checkStopping();
    entry.state = 'running';
    this.#emit('committing', entry);
    const views = new Map<string, MarkerView>();
    for (const list of Object.values(progress.views)) for (const v of list) views.set(v.name, v);
    const artifacts = this.#producers.flatMap((p) => progress.artifacts[p.kind] ?? []);
    let tables: readonly MarkerTable[] = [];
    if (this.#o.tableCommit !== undefined) {
      tables = await this.#o.tableCommit({
        ref,
        segment: seg,
        artifacts,
        views: [...views.values()],
        signal: this.#abort.signal,
      });
      this.#checkStopping();
      this.#emit(
        'tables',
        entry,
        tables.map((t) => `${t.namespace}.${t.table}@${t.snapshotId ?? t.error?.code ?? '?'}`).join(','),
      );
    }
    const marker: CommitMarker = {
      endpoint: ref.endpoint,
      instance: ref.instance,
      epoch: ref.epoch,
      segmentId: seg.id,
      records: seg.records,
      firstSeq: seg.firstSeq,
      lastSeq: seg.lastSeq,
      firstIngestMicros: seg.firstIngestMicros,
      lastIngestMicros: seg.lastIngestMicros,
      segment: segmentSum,
      artifacts,
      views: [...views.values()],
      ...(tables.length > 0 ? { tables } : {}),
      createdAtMs: this.#clock.nowMs(),
      writer: writerName,
    };
    // From here on a lost answer may hide a written marker: a retry must look first.
    entry.checkMarker = true;
    const written = await this.#withRetry('writing the commit marker', () =>
      writeCommitMarker(this.#store, this.#prefix, marker, { signal: this.#abort.signal }),
    );
    if (written.created) this.#n.markersWritten++;
    else this.#n.markersFound++;
    this.#emit('committed', entry, written.key);

    // (e)
    await this.#finish(entry, seg, written.key);
  }

  #checkMarkerIdentity(m: CommitMarker, seg: SealedSegment): void {
    const diffs: string[] = [];
    if (m.records !== seg.records) diffs.push(`records ${m.records} vs ${seg.records}`);
    if (m.firstSeq !== seg.firstSeq || m.lastSeq !== seg.lastSeq)
      diffs.push(`seqs ${m.firstSeq}..${m.lastSeq} vs ${seg.firstSeq}..${seg.lastSeq}`);
    if (m.firstIngestMicros !== seg.firstIngestMicros || m.lastIngestMicros !== seg.lastIngestMicros)
      diffs.push('ingest times');
    if (m.instance !== this.#o.instance || m.endpoint !== this.#o.endpoint) diffs.push('endpoint/instance');
    if (diffs.length > 0)
      throw new MarkerError(
        'COMMIT_MARKER_CONFLICT',
        `the commit marker of ${seg.fileName} describes another segment: ${diffs.join('; ')}`,
        { differences: diffs },
      );
  }

  #job(seg: SealedSegment, ref: SegmentRef, dir: string): SegmentJob {
    const file = this.#wal.segmentPath(seg.id);
    const rbm = this.#o.recordBytesMax;
    return {
      segment: seg,
      ref,
      prefix: this.#prefix,
      scratchDir: dir,
      fs: this.#fs,
      signal: this.#abort.signal,
      segmentPath: file,
      ...(rbm !== undefined ? { recordBytesMax: rbm } : {}),
      openSegment: () => openVerifiedSegment(file, seg, rbm, this.#fs),
      records: () => segmentRecords(openVerifiedSegment(file, seg, rbm, this.#fs), rbm),
    };
  }

  async #upload(f: ProducedFile): Promise<MarkerArtifact> {
    await this.#uploads.acquire();
    this.#uploading++;
    try {
      this.#checkStopping();
      const put = await uploadFile(
        this.#store,
        f.key,
        { path: f.path, bytes: f.bytes, sha256: f.sha256 },
        {
          contentType: f.contentType,
          fs: this.#fs,
          retry: this.#retry,
          retryDeps: {
            signal: this.#abort.signal,
            random: this.#random,
            onRetry: ({ attempt, error, delayMs }) => {
              this.#n.uploadFailures++;
              this.#n.uploadRetries++;
              this.#log.warn({ err: error, key: f.key, attempt, delayMs }, 'upload failed; retrying');
            },
          },
        },
      ).catch((err: unknown) => {
        this.#n.uploadFailures++;
        throw err;
      });
      if (put.bytes !== f.bytes || put.sha256 !== f.sha256)
        throw new Error(
          `upload of ${f.key} stored ${put.bytes} bytes ${put.sha256}, expected ${f.bytes} ${f.sha256}`,
        );
      this.#n.uploads++;
      this.#n.uploadedBytes += put.bytes;
      return {
        kind: f.kind,
        key: f.key,
        bytes: f.bytes,
        rows: f.rows,
        sha256: f.sha256,
        ...(f.view !== undefined ? { view: f.view } : {}),
      };
    } finally {
      this.#uploading--;
      this.#uploads.release();
    }
  }

  async #finish(entry: Entry, seg: SealedSegment, markerKey: string): Promise<void> {
    const committedAtMs = this.#clock.nowMs();
    const current = this.#wal.segment(seg.id) ?? seg;
    this.#checkAborted();
    await this.#wal.markDelivered(seg.id, {
      [progressKey]: { ...(progressJsonOf(current) ?? {}), marker: markerKey, committedAtMs },
    });
    this.#entries.delete(entry.id);
    this.#n.segmentsDelivered++;
    this.#n.segmentBytesDelivered += seg.bytes;
    const latencyMs = Math.max(0, committedAtMs - seg.sealedAtMs);
    this.#lastSealToCommitMs = latencyMs;
    this.#sealToCommit?.observe(latencyMs / 1000);
    this.#emit('delivered', entry, markerKey);
    this.#checkTurns();
    await this.#applyRetention();
  }

  // ---- marker order ---------------------------------------------------------------

  /** What `entry` waits for before its marker, or undefined when it may commit. */
  #blocker(entry: Entry): string | undefined {
    for (const e of this.#entries.values())
      if (e !== entry && compareSegments(e, entry) < 0) return `segment ${e.id} (${e.state})`;
    // A seal the WAL recorded but has not announced yet (its state write is
    // being retried) would otherwise be overtaken.
    const low = entry.id > unannouncedScanIds ? entry.id - unannouncedScanIds : 0n;
    for (let id = entry.id - 1n; id >= low && id >= 0n; id--) {
      const s = this.#wal.segment(id);
      if (s !== undefined && s.status === 'sealed' && compareSegments(s, entry) < 0)
        return `unannounced segment ${id}`;
    }
    return undefined;
  }

  #turn(entry: Entry): Promise<void> {
    if (this.#blocker(entry) === undefined) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#turnWaiters.add({ entry, resolve, reject });
      this.#armTurnTimer();
    });
  }

  #checkTurns(): void {
    for (const w of [...this.#turnWaiters]) {
      const blocker = this.#blocker(w.entry);
      if (blocker !== undefined) {
        // Not our failure, but what holds delivery back: status and lastError say so.
        if (blocker.startsWith('unannounced'))
          this.#lastError = {
            segmentId: formatSegmentId(w.entry.id),
            message: `commit marker waits for ${blocker}: its seal is not yet recorded in the WAL state file`,
            atMs: this.#clock.nowMs(),
          };
        continue;
      }
      this.#turnWaiters.delete(w);
      w.resolve();
    }
    this.#armTurnTimer();
  }

  #armTurnTimer(): void {
    // Only an unannounced seal can unblock without an event of ours; poll for it, slowly.
    if (this.#turnWaiters.size === 0 || this.#turnTimer !== undefined || this.#stopping !== undefined) return;
    this.#turnTimer = setTimeout(() => {
      this.#turnTimer = undefined;
      this.#checkTurns();
    }, turnRecheckMs);
    this.#turnTimer.unref();
  }

  // ---- retention, stale uploads -------------------------------------------------------

  #applyRetention(): Promise<void> {
    if (this.#retention !== undefined) {
      this.#retentionAgain = true;
      return this.#retention;
    }
    this.#retention = (async () => {
      do {
        this.#retentionAgain = false;
        // After every delivery: only the delivered few, never the whole backlog.
        const delivered = this.#wal.deliveredSegments();
        let count = delivered.length;
        let bytes = delivered.reduce((n, s) => n + s.bytes, 0);
        for (const s of delivered) {
          if (count <= this.#keepSegments && bytes <= this.#keepBytes) break;
          if (this.#stopping !== undefined) return;
          try {
            await this.#wal.deleteSegment(s.id);
            this.#n.deleted++;
            this.#emit('deleted', s);
          } catch (err) {
            // Delivered data is safe in the bucket; the next pass deletes it.
            this.#log.warn({ err, fileName: s.fileName }, 'deleting a delivered segment failed');
            break;
          }
          count--;
          bytes -= s.bytes;
        }
      } while (this.#retentionAgain && this.#stopping === undefined);
    })().finally(() => {
      this.#retention = undefined;
      this.#checkIdle();
    });
    return this.#retention;
  }

  /** One sweep at a time: a slow listing never piles up sweeps. */
  #sweepStaleUploads(olderThanMs: number): Promise<void> {
    if (this.#stopping !== undefined) return Promise.resolve();
    this.#sweep ??= this.#abortStaleUploads(olderThanMs).finally(() => {
      this.#sweep = undefined;
    });
    return this.#sweep;
  }

  async #abortStaleUploads(olderThanMs: number): Promise<void> {
    for (const folder of keyFolders) {
      const prefix = this.#prefix === '' ? `${folder}/` : `${this.#prefix}/${folder}/`;
      try {
        const n = await this.#withRetry('aborting stale multipart uploads', () =>
          this.#store.abortStaleMultipartUploads(prefix, olderThanMs),
        );
        this.#n.staleUploadsAborted += n;
        if (n > 0) this.#log.info({ prefix, aborted: n, olderThanMs }, 'aborted stale multipart uploads');
      } catch (err) {
        if (this.#abort.signal.aborted) return;
        // Not fatal: the next sweep tries again, and a bucket lifecycle rule is the second line.
        this.#log.warn({ err, prefix }, 'could not abort stale multipart uploads');
      }
    }
  }

  // ---- idle, stop, stats ----------------------------------------------------------------

  #checkIdle(): void {
    const busy = this.#entries.size > 0 || this.#running.size > 0 || this.#retention !== undefined;
    if (busy && this.#stopping === undefined) return;
    for (const r of this.#idleWaiters.splice(0)) r();
  }

  idle(): Promise<void> {
    return new Promise((r) => {
      this.#idleWaiters.push(r);
      this.#checkIdle();
    });
  }

  stop(opts: { graceMs?: number } = {}): Promise<void> {
    this.#stopping ??= (async () => {
      const graceMs = opts.graceMs ?? 10_000;
      this.#unsubscribe?.();
      clearTimeout(this.#pumpTimer);
      clearTimeout(this.#turnTimer);
      clearInterval(this.#sweepTimer);
      // Waiting segments hold nothing but a place in line: they resume at the next start.
      for (const w of [...this.#turnWaiters]) {
        this.#turnWaiters.delete(w);
        w.reject(new StoppedError());
      }
      this.#checkIdle();
      const settled = Promise.allSettled([...this.#running, this.#background, this.#retention, this.#sweep]);
      let timer: NodeJS.Timeout | undefined;
      const late = await Promise.race([
        settled.then(() => false),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(true), graceMs);
        }),
      ]);
      clearTimeout(timer);
      if (late) {
        this.#log.warn({ graceMs }, 'delivery steps still running at stop: aborting them');
        this.#abort.abort(new StoppedError());
      }
      // A store call that ignores the abort must not hold shutdown: give up on
      // it (it can no longer touch the WAL, see #checkAborted).
      const abandoned = await Promise.race([
        Promise.allSettled([...this.#running, this.#background, this.#retention, this.#sweep]).then(
          () => false,
        ),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(true), graceMs);
        }),
      ]);
      clearTimeout(timer);
      if (abandoned) this.#log.error({ graceMs }, 'delivery steps ignored the abort; abandoning them');
      this.#abort.abort(new StoppedError());
      await this.#ownProducer?.close();
      this.#log.info({ pending: this.#entries.size }, 'delivery pipeline stopped');
    })();
    return this.#stopping;
  }

  stats(): PipelineStats {
    let bytesPending = 0;
    let oldestMicros: bigint | undefined;
    let waiting = 0;
    for (const e of this.#entries.values()) {
      if (e.state === 'waiting') waiting++;
      const s = this.#wal.segment(e.id);
      if (s === undefined) continue;
      bytesPending += s.bytes;
      if (oldestMicros === undefined || s.firstIngestMicros < oldestMicros)
        oldestMicros = s.firstIngestMicros;
    }
    const n = this.#n;
    return {
      segmentsPending: this.#entries.size,
      bytesPending,
      oldestUndeliveredAgeMs:
        oldestMicros === undefined ? 0 : Math.max(0, this.#clock.nowMs() - Number(oldestMicros / 1000n)),
      segmentsInFlight: this.#producing,
      segmentsWaiting: waiting,
      uploadsInFlight: this.#uploading,
      segmentsDeliveredTotal: n.segmentsDelivered,
      segmentBytesDeliveredTotal: n.segmentBytesDelivered,
      uploadsTotal: n.uploads,
      uploadedBytesTotal: n.uploadedBytes,
      uploadFailuresTotal: n.uploadFailures,
      uploadRetriesTotal: n.uploadRetries,
      markersWrittenTotal: n.markersWritten,
      markersFoundTotal: n.markersFound,
      segmentFailuresTotal: n.segmentFailures,
      quarantinedTotal: n.quarantined,
      deletedTotal: n.deleted,
      staleUploadsAbortedTotal: n.staleUploadsAborted,
      lastSealToCommitMs: this.#lastSealToCommitMs,
      lastError: this.#lastError,
    };
  }

  status(): Record<string, unknown> {
    const s = this.stats();
    return {
      delivery: {
        store: this.#store.description,
        prefix: this.#prefix,
        segmentsPending: s.segmentsPending,
        bytesPending: s.bytesPending,
        oldestUndeliveredAgeMs: s.oldestUndeliveredAgeMs,
        segmentsInFlight: s.segmentsInFlight,
        segmentsWaiting: s.segmentsWaiting,
        segmentsDeliveredTotal: s.segmentsDeliveredTotal,
        segmentFailuresTotal: s.segmentFailuresTotal,
        quarantinedTotal: s.quarantinedTotal,
        lastSealToCommitMs: s.lastSealToCommitMs,
        lastError: s.lastError,
      },
    };
  }

  #registerMetrics(registry: Registry): void {
    const stats = (): PipelineStats => this.stats();
    // A pipeline restarted in the same process (same registry) replaces the
    // previous one's collectors instead of failing on a duplicate name.
    const fresh = (name: string): string => {
      if (registry.getSingleMetric(name) !== undefined) registry.removeSingleMetric(name);
      return name;
    };
    const gauge = (name: string, help: string, value: (s: PipelineStats) => number): void => {
      new Gauge({
        name: fresh(name),
        help,
        registers: [registry],
        collect() {
          this.set(value(stats()));
        },
      });
    };
    const counter = (name: string, help: string, value: (s: PipelineStats) => number): void => {
      new Counter({
        name: fresh(name),
        help,
        registers: [registry],
        collect() {
          this.reset();
          this.inc(value(stats()));
        },
      });
    };
    gauge(
      'landfall_delivery_segments_pending',
      'Sealed segments not yet delivered.',
      (s) => s.segmentsPending,
    );
    gauge(
      'landfall_delivery_bytes_pending',
      'Bytes of sealed segments not yet delivered.',
      (s) => s.bytesPending,
    );
    gauge(
      'landfall_delivery_oldest_undelivered_age_seconds',
      'Archival lag: age of the oldest record in a sealed segment not yet delivered (0 when none).',
      (s) => s.oldestUndeliveredAgeMs / 1000,
    );
    gauge(
      'landfall_delivery_segments_in_flight',
      'Segments being read, compressed or uploaded.',
      (s) => s.segmentsInFlight,
    );
    gauge('landfall_delivery_uploads_in_flight', 'Artifact uploads in progress.', (s) => s.uploadsInFlight);
    counter(
      'landfall_delivery_segments_delivered_total',
      'Segments whose commit marker is written.',
      (s) => s.segmentsDeliveredTotal,
    );
    counter(
      'landfall_delivery_segment_bytes_delivered_total',
      'Bytes of WAL segments delivered (before compression).',
      (s) => s.segmentBytesDeliveredTotal,
    );
    counter('landfall_delivery_uploads_total', 'Artifacts uploaded.', (s) => s.uploadsTotal);
    counter(
      'landfall_delivery_uploaded_bytes_total',
      'Bytes of artifacts uploaded.',
      (s) => s.uploadedBytesTotal,
    );
    counter(
      'landfall_delivery_upload_failures_total',
      'Upload attempts that failed.',
      (s) => s.uploadFailuresTotal,
    );
    counter(
      'landfall_delivery_upload_retries_total',
      'Upload attempts retried.',
      (s) => s.uploadRetriesTotal,
    );
    counter(
      'landfall_delivery_markers_written_total',
      'Commit markers written.',
      (s) => s.markersWrittenTotal,
    );
    counter(
      'landfall_delivery_markers_found_total',
      'Commit markers found already written (after a crash or a lost answer).',
      (s) => s.markersFoundTotal,
    );
    counter(
      'landfall_delivery_segment_failures_total',
      'Segment delivery attempts that failed and were rescheduled.',
      (s) => s.segmentFailuresTotal,
    );
    counter(
      'landfall_delivery_segments_quarantined_total',
      'Segments found corrupt and quarantined.',
      (s) => s.quarantinedTotal,
    );
    counter(
      'landfall_delivery_segments_deleted_total',
      'Delivered segments deleted from the volume.',
      (s) => s.deletedTotal,
    );
    counter(
      'landfall_delivery_stale_uploads_aborted_total',
      'Stale multipart uploads aborted (at start and every staleUploadCheckIntervalMs).',
      (s) => s.staleUploadsAbortedTotal,
    );
    this.#sealToCommit = new Histogram({
      name: fresh('landfall_delivery_seal_to_commit_seconds'),
      help: 'From a segment seal to its commit marker.',
      buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
      registers: [registry],
    });
  }
}

function progressJsonOf(seg: SealedSegment): Record<string, JsonValue> | undefined {
  const p = seg.progress[progressKey];
  return isRecord(p) ? p : undefined;
}

/**
 * Starts delivering: every sealed segment already in the WAL (resuming from
 * its recorded progress) and every one sealed from now on. Resolves once the
 * scratch folder is clean and the WAL subscription is in place; stale
 * multipart uploads are aborted in the background.
 */
export async function startPipeline(options: PipelineOptions): Promise<Pipeline> {
  const p = new DeliveryPipeline(options);
  await p.start();
  return p;
}
