// The contract between the WAL and its users (the HTTP and MQTT sources, the
// delivery pipeline, backpressure). The byte layout lives in ./format.ts;
// this file says only what callers may rely on.

import type { FileSystem } from '../fs/types.ts';
import type { Clock } from '../clock.ts';
import type { Logger } from '../log.ts';

/** What a record's payload is; stored in every frame so readers need no side channel. */
export const RecordFormat = {
  /** One NDJSON line, without its newline. */
  ndjson: 1,
  /** One JSON value (an object, or one element of a top-level array). */
  json: 2,
  /** One RecordIO record's payload (opaque bytes). */
  recordio: 3,
  /** One MQTT message: the payload carries the topic, see format.ts. */
  mqtt: 4,
} as const;
export type RecordFormat = (typeof RecordFormat)[keyof typeof RecordFormat];

export interface AppendResult {
  /** Sequence number of the first record of this append (per-instance, gap-free). */
  readonly firstSeq: bigint;
  /** Sequence number of the last record of this append. */
  readonly lastSeq: bigint;
  readonly count: number;
}

export interface WalStats {
  readonly epoch: string;
  readonly openSegmentId: bigint | null;
  readonly openSegmentBytes: number;
  /**
   * Bytes of the open segment and of every sealed segment not yet deleted: what
   * the backlog watermarks (walBytesHigh/Low) count. Free files (reused by new
   * segments, freeSegmentBytes) are not in it: delivery cannot shrink them, so
   * counting them could hold the backlog above walBytesLow for ever.
   */
  readonly retainedBytes: number;
  readonly sealedSegments: number;
  readonly nextSeq: bigint;
  readonly appendsTotal: number;
  readonly syncsTotal: number;
}

export interface WriteAheadLog {
  /**
   * Appends every record as one unit and resolves only after an fdatasync that
   * began after the records were written has returned. All or nothing: if it
   * rejects, none of the records will be visible after recovery.
   */
  append(records: readonly Uint8Array[], format: RecordFormat): Promise<AppendResult>;
  stats(): WalStats;
  /** Seals the open segment (if it holds records) and releases files. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------
// Beyond the core contract: what the node, the delivery pipeline, the status
// route and backpressure use. Everything here is additive; the three methods
// above are unchanged.

/** `err.code` of every error the WAL rejects an append with (see errors.ts). */
export const WalErrorCode = {
  /** Queued bytes would exceed queueBytesMax: answer 503 + Retry-After. */
  overloaded: 'WAL_OVERLOADED',
  /** close() was called: answer 503 (the node is draining). */
  closed: 'WAL_CLOSED',
  /** The write or fdatasync of this append's group failed (EIO, ENOSPC, short write); nothing of it will be visible. 503. */
  writeFailed: 'WAL_WRITE_FAILED',
  /** The WAL could not undo a failed write durably and refuses all writes until restart. 503, readiness false. */
  failed: 'WAL_FAILED',
  /** One record exceeds recordBytesMax: 413. */
  recordTooLarge: 'WAL_RECORD_TOO_LARGE',
} as const;
export type WalErrorCode = (typeof WalErrorCode)[keyof typeof WalErrorCode];

export type JsonValue =
  null | boolean | number | string | readonly JsonValue[] | { readonly [k: string]: JsonValue };

/**
 * Pipeline status of a sealed segment: `sealed` (on disk, waiting for
 * delivery) → `delivered` (commit marker written; may be deleted). Deleted
 * segments leave the state file. Finer progress (artifacts uploaded, upload
 * ids…) goes in `progress`, owned by the delivery pipeline.
 */
export type SegmentStatus = 'sealed' | 'delivered';

export type SealReason = 'size' | 'age' | 'close' | 'manual' | 'drain' | 'recovery' | 'write-failure';

export interface SealedSegment {
  readonly id: bigint;
  /** The epoch in the segment's header (the WAL's epoch when it was written). */
  readonly epoch: string;
  /** File name inside the WAL dir, e.g. `00000000000000000001.wal`. */
  readonly fileName: string;
  /** Length of the segment: read exactly this many bytes of the file. */
  readonly bytes: number;
  readonly records: number;
  readonly firstSeq: bigint;
  readonly lastSeq: bigint;
  readonly firstIngestMicros: bigint;
  readonly lastIngestMicros: bigint;
  readonly sealedAtMs: number;
  readonly sealReason: SealReason;
  readonly status: SegmentStatus;
  /** Free-form per-segment pipeline progress, persisted with the state file. */
  readonly progress: { readonly [k: string]: JsonValue };
}

export interface DurableWalStats extends WalStats {
  /** Delivered segments' files kept for new segments to write over (wal.recycleSegmentsMax), and their bytes (not in retainedBytes; on the volume, so in statfs). */
  readonly freeSegmentFiles: number;
  readonly freeSegmentBytes: number;
  /** Segments written over a free file since open. */
  readonly recycledSegmentsTotal: number;
  /** Bytes of appends accepted but not yet acknowledged (queued + being written). */
  readonly queuedBytes: number;
  readonly queuedAppends: number;
  /** Configured bound on groups written but not yet acknowledged (group-commit pipeline depth). */
  readonly pipelineDepth: number;
  /** Groups written or being written and not yet acknowledged, now. */
  readonly pipelineGroupsInFlight: number;
  /** Group writes started while an fdatasync of an earlier group was in flight (the pipeline at work). */
  readonly pipelinedWritesTotal: number;
  /**
   * Appends encoded into the next group while the pipeline was full (at depth
   * 1: during an fdatasync), instead of between the sync's return and the
   * next write (wal.ts, "Encoding ahead").
   */
  readonly stagedAppendsTotal: number;
  /** Group writes started (pipelinedWritesTotal / this: how often the pipeline overlaps). */
  readonly groupWritesTotal: number;
  /**
   * Seconds from each group write's and each fdatasync's start to its completion
   * callback, summed (the pool's queue and a busy event loop included): divided
   * by groupWritesTotal and syncsTotal, the mean time a group waited for each.
   */
  readonly writeSecondsTotal: number;
  readonly syncSecondsTotal: number;
  /** Sealed segments not yet delivered, and their bytes (the delivery backlog). */
  readonly undeliveredSegments: number;
  readonly undeliveredBytes: number;
  readonly recordsTotal: number;
  readonly bytesTotal: number;
  /** Groups whose write or sync failed (each failed all its appends). */
  readonly writeFailuresTotal: number;
  /** True once the WAL refuses writes until restart (see WAL_FAILED). */
  readonly failed: boolean;
  /** Tails truncated at recovery, and their bytes (since open). */
  readonly recoveryTruncationsTotal: number;
  readonly recoveryTruncatedBytesTotal: number;
  /** Segments moved to quarantine/ (at recovery or later, since open). */
  readonly quarantinedTotal: number;
  /** State file writes that failed (each is retried). */
  readonly stateWriteFailuresTotal: number;
  /** Sealed segments whose seal is not yet in the state file, so delivery has not been told. */
  readonly unannouncedSegments: number;
  /** The last state write's error, until a state write succeeds. */
  readonly stateLastError: { readonly message: string; readonly atMs: number } | null;
  /**
   * True while a seal waits for a state write and the last one failed: every
   * later segment's commit marker waits behind it. Readiness reports it.
   */
  readonly sealsUnrecorded: boolean;
}

export interface RecoveryReport {
  /** True when the WAL dir (and its epoch) were created by this open. */
  readonly created: boolean;
  /** True when a new epoch replaced a lost or unreadable state (see docs). */
  readonly epochRotated: boolean;
  /** Unsealed segments found and sealed. */
  readonly recoveredSegments: number;
  readonly truncations: readonly {
    readonly fileName: string;
    readonly fromBytes: number;
    readonly toBytes: number;
    readonly tail: string;
    /** Where the cut bytes were copied first (quarantine/); absent for an all-zero tail. */
    readonly copiedTo?: string;
  }[];
  readonly quarantined: readonly { readonly fileName: string; readonly reason: string }[];
  /** Segment files removed because they held no record (a crash while creating them). */
  readonly removedEmpty: readonly string[];
  /** Sealed segments the state file lists but the disk no longer has. */
  readonly missing: readonly string[];
}

/** How the age timer is scheduled; tests pass a manual one (or call maybeSealByAge). */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface WalOptions {
  /** The endpoint's WAL directory (created, with its parents, if missing). */
  readonly dir: string;
  readonly endpoint: string;
  readonly instance: string;
  /** Seal when the open segment reaches this size. Default SEGMENT_BYTES_MAX_DEFAULT. */
  readonly segmentBytesMax?: number;
  /** Seal when the open segment's first record is this old. Default SEGMENT_AGE_MS_MAX_DEFAULT. */
  readonly segmentAgeMsMax?: number;
  readonly fs: FileSystem;
  readonly clock: Clock;
  readonly log: Logger;
  /** Bound on one record's payload (≤ RECORD_BYTES_MAX_LIMIT). Default RECORD_BYTES_MAX_DEFAULT. */
  readonly recordBytesMax?: number;
  /** Hard cap on accepted-but-unacknowledged bytes; beyond it appends reject with WAL_OVERLOADED. */
  readonly queueBytesMax?: number;
  /** Bound on one group (one write + one fdatasync). */
  readonly groupBytesMax?: number;
  /**
   * Groups written but not yet acknowledged (1…16; 1 = write, sync, ack,
   * then the next group). Default PIPELINE_DEPTH_DEFAULT (2).
   */
  readonly pipelineDepth?: number;
  /**
   * Delivered segment files kept as free files for new segments to write
   * over (0…64; 0 removes them as soon as they are deleted). Default
   * RECYCLE_SEGMENTS_MAX_DEFAULT (2).
   */
  readonly recycleSegmentsMax?: number;
  readonly timers?: Timers;
  /** Randomness for the epoch (tests pass a seeded one). Default crypto.randomBytes. */
  readonly randomBytes?: (n: number) => Uint8Array;
}

export interface Wal extends WriteAheadLog {
  readonly dir: string;
  readonly epoch: string;
  readonly recovery: RecoveryReport;
  stats(): DurableWalStats;
  /**
   * Called once per segment after its seal is recorded durably in the state
   * file. To resume after a restart, call sealedSegments() and subscribe in
   * the same tick: no seal is reported in between. Returns an unsubscribe.
   */
  onSealed(listener: (segment: SealedSegment) => void): () => void;
  /** Sealed and delivered segments still on disk, in id (= time) order. */
  sealedSegments(): readonly SealedSegment[];
  /** Only the delivered ones (retention), in id order; costs O(delivered), not O(backlog). */
  deliveredSegments(): readonly SealedSegment[];
  segment(id: bigint): SealedSegment | undefined;
  /** Absolute path of a segment file. */
  segmentPath(id: bigint): string;
  /** Merges `patch` into the segment's progress and persists it before resolving. */
  updateProgress(id: bigint, patch: { readonly [k: string]: JsonValue }): Promise<SealedSegment>;
  /** Marks a segment delivered (its commit marker exists), durably. */
  markDelivered(id: bigint, patch?: { readonly [k: string]: JsonValue }): Promise<SealedSegment>;
  /** Removes a delivered segment's file and its state entry. Rejects for an undelivered segment. */
  deleteSegment(id: bigint): Promise<void>;
  /** Moves a sealed segment to quarantine/ (a reader found it corrupt); it is never deleted. */
  quarantineSegment(id: bigint, reason: string): Promise<void>;
  /** Seals the open segment now if it holds records; resolves once that seal is durable in the state file. */
  seal(reason?: SealReason): Promise<SealedSegment | null>;
  /** Seals the open segment if its first record is older than segmentAgeMsMax; true if it did. */
  maybeSealByAge(): Promise<boolean>;
  /**
   * The volume's free space is under backpressure's low watermark (true) or
   * back over its high one (false). While low, the free segment files
   * (recycleSegmentsMax) go back to the volume and delivered files are
   * removed instead of kept: up to recycleSegmentsMax × segmentBytesMax that
   * the node, refusing writes meanwhile, needs more than faster writes.
   */
  setVolumeLow(low: boolean): Promise<void>;
}
