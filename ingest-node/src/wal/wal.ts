// The write-ahead log: "202 means durable". An append resolves only after its
// frames are in the segment file and an fdatasync that began after they were
// written has returned.
//
// Shape of the hot path (one writer, no locks): append() validates, counts
// bytes against queueBytesMax, queues, kicks the writer. The writer takes
// every queued append that fits one group (groupBytesMax, and what is left of
// the segment), assigns seqs, encodes all frames into one reused buffer and
// issues ONE write. Groups are pipelined: group N+1 is encoded and written
// while group N's fdatasync runs, up to pipelineDepth groups written and not
// yet acknowledged. At most one write and one fdatasync are in flight; a sync
// covers every group whose write completed before it started, and a group is
// acknowledged only when such a sync returns, in order, so a sync in
// progress never acknowledges records written after it began.
//
// Encoding ahead: while the pipeline is full (at depth 1: while a group's
// fdatasync runs), appends are encoded into the next group as they arrive
// (the "staged" group: seqs taken, nothing written). When the sync returns,
// that group goes out at once with whatever else arrived meanwhile; before,
// the whole group (~1 ms for 2 MB on this machine) was encoded between the
// sync's return and the next write, on the critical path of every cycle. The
// bytes on disk are the same as without it. A staged group is put back on
// the queue (its seqs returned) before anything that could move the write
// position under it: a failure's undo, a seal, a failed WAL.
//
// Failure of a group's write or sync (EIO, ENOSPC, short write): once the
// operation in flight settled, seqs rewind, the file is truncated back to the
// start of the first unacknowledged group and fsynced, every append of that
// group and of the groups written after it rejects (WAL_WRITE_FAILED) and the
// next group carries on. If
// the truncate or its fsync fails too, the segment is sealed at the group's
// start (the state file records that length, so recovery cuts the failed
// group off even if it reached the disk) and the next group opens a new
// segment. If even that state write fails, nothing can promise the failed
// group stays invisible: the WAL turns WAL_FAILED and refuses writes until a
// restart (readiness goes false). docs/wal-format.md has the full contract.
import path from 'node:path';
import { randomBytes as cryptoRandomBytes } from 'node:crypto';
import type { FileHandle, FileSystem } from '../fs/types.ts';
import { fsError } from '../fs/types.ts';
import type { Clock } from '../clock.ts';
import type { Logger } from '../log.ts';
import {
  FRAME_HEADER_BYTES,
  FrameFlags,
  RECORD_BYTES_MAX_DEFAULT,
  RECORD_BYTES_MAX_LIMIT,
  encodeFrameInto,
  encodeSegmentHeader,
} from './format.ts';
import { WalError } from './errors.ts';
import { freeFileName, quarantineFile, recoverWalDir, segmentFileName } from './recovery.ts';
import { StatePersister, type WalState } from './state.ts';
import { WalErrorCode } from './types.ts';
import type {
  AppendResult,
  DurableWalStats,
  JsonValue,
  RecordFormat,
  RecoveryReport,
  SealReason,
  SealedSegment,
  Timers,
  Wal,
  WalOptions,
} from './types.ts';

/**
 * 64 MiB: big enough that each sealed segment becomes one well-filled
 * Parquet file and a handful of multipart parts (S3 request cost and
 * small-file overhead scale with segment count), small enough that sealing,
 * compressing and transforming one segment fits comfortably in a small pod's
 * memory, and that recovering the open segment (read + scan) takes well
 * under a second on NVMe.
 */
export const SEGMENT_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;
/**
 * 60 s: under light traffic the age bound, not the size bound, decides how
 * stale S3 is; a minute matches the managed service's behaviour and keeps a
 * quiet endpoint to ~1,440 segments a day instead of thousands of tiny files.
 */
export const SEGMENT_AGE_MS_MAX_DEFAULT = 60_000;
/** The longest delay Node's setTimeout keeps (2^31 - 1 ms, ~24.8 days). */
const TIMER_MS_MAX = 2 ** 31 - 1;
/**
 * Hard cap on accepted-but-unacknowledged bytes. The HTTP layer bounds its
 * in-flight bytes below this; the cap is the WAL's own guarantee that a
 * stalled disk cannot make it buffer without bound.
 */
export const QUEUE_BYTES_MAX_DEFAULT = 256 * 1024 * 1024;
/**
 * One group = one write + one fdatasync. Larger groups raise throughput (the
 * sync cost is per call) but every append in the group waits for all of its
 * bytes; 8 MiB keeps a full group's write+sync near 10-30 ms on NVMe.
 */
export const GROUP_BYTES_MAX_DEFAULT = 8 * 1024 * 1024;
/**
 * Groups written but not yet acknowledged. 1 (measured, issue 15, 2 cores and
 * a local virtio disk, `npm run bench:ingest -- --pipeline-depth N`): at 2
 * the next group is written as soon as the previous one's sync starts, so it
 * holds only what arrived during a write: 1 KiB requests went from ~31 to ~17
 * per fdatasync and from 31.8k to 24–27k req/s; 64 KiB requests gained
 * nothing (208 vs 193 MB/s, p99 50 vs 65 ms). Depth 2+ stays for disks whose
 * writes are slow next to their syncs.
 */
export const PIPELINE_DEPTH_DEFAULT = 1;
/**
 * Recovery allows torn groups as deep as max(pipelineDepth, this): a WAL
 * written at the earlier default depth (2) and reopened at 1 after a power
 * cut recovers its torn tail as it would have, instead of quarantining the
 * open segment. At depth 1 a bad frame followed by one valid group cannot
 * be a torn write, so this only ever spares a tail that may be one.
 */
export const PIPELINE_DEPTH_RECOVERY_MIN = 2;
export const PIPELINE_DEPTH_LIMIT = 16;
/**
 * Delivered segment files kept for reuse (wal.recycleSegmentsMax). A new
 * segment written over an old file's blocks needs no block allocation and
 * makes its fdatasyncs cheaper (measured on ext4 over virtio: 2 MiB groups
 * 0.38 ms write + 0.98 ms sync instead of ~2 + 1.35 ms, 32 KiB syncs 0.17
 * instead of 0.28 ms). 2: one file to take at each rotation and one being
 * freed by delivery meanwhile; each costs up to segmentBytesMax of volume.
 */
export const RECYCLE_SEGMENTS_MAX_DEFAULT = 2;
export const RECYCLE_SEGMENTS_LIMIT = 64;
/**
 * Cap of the delay between retries of a seal's state write. The retries
 * themselves are not bounded: a seal that is never announced holds back every
 * later commit marker, so giving up would stall delivery until a restart.
 * Any other successful state write (a later seal, delivery progress) also
 * announces it, since it carries the same entry. 5 s, the Retry-After of the
 * 503 the node answers meanwhile: writes resume within one retry of the
 * volume recovering.
 */
const ANNOUNCE_BACKOFF_MS_MAX = 5_000;
const ANNOUNCE_BACKOFF_MS_BASE = 100;

export const systemTimers: Timers = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    // Never keep the process alive just to seal a segment.
    t.unref();
    return t;
  },
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

interface PendingAppend {
  readonly records: readonly Uint8Array[];
  readonly format: RecordFormat;
  readonly bytes: number;
  readonly resolve: (r: AppendResult) => void;
  readonly reject: (e: unknown) => void;
  firstSeq: number;
}

interface OpenSegment {
  readonly id: bigint;
  readonly fileName: string;
  readonly path: string;
  readonly handle: FileHandle;
  readonly epoch: string;
  readonly headerBytes: number;
  /**
   * The file's length: past writePos in a recycled file (an older segment's
   * stale bytes, cut off at the seal), else writePos.
   */
  fileBytes: number;
  /** Durable length: header + every acknowledged group. */
  bytes: number;
  /** Where the next group goes: `bytes` plus the groups in flight. */
  writePos: number;
  records: number;
  firstSeq: number;
  lastSeq: number;
  firstIngestMicros: number;
  lastIngestMicros: number;
  firstRecordMonoMs: number;
}

/** A group written (or being written) and not yet acknowledged or failed. */
interface InflightGroup {
  readonly seg: OpenSegment;
  readonly appends: readonly PendingAppend[];
  /** What the appends count against queueBytesMax. */
  readonly queuedBytes: number;
  readonly pos: number;
  /** Encoded length. */
  readonly bytes: number;
  readonly firstSeq: number;
  /** One past the last seq. */
  readonly endSeq: number;
  readonly ingest: number;
  /** The write completed (a sync that starts from now on covers it). */
  written: boolean;
}

/** The next group, being encoded while the pipeline is full (see "Encoding ahead"). */
interface StagedGroup {
  readonly seg: OpenSegment;
  /** Where it will be written: the segment's write position when it was begun. */
  readonly pos: number;
  readonly appends: PendingAppend[];
  queuedBytes: number;
  /** Encoded so far, from the start of `buf`. */
  bytes: number;
  buf: Buffer;
  readonly firstSeq: number;
  readonly ingest: number;
}

/** A delivered segment's file kept for a later segment to write over. */
interface FreeFile {
  readonly name: string;
  readonly bytes: number;
}

interface SealRequest {
  readonly reason: SealReason;
  readonly resolve: (s: SealedSegment | null) => void;
  readonly reject: (e: unknown) => void;
}

function isNoSpace(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

function sumBytes(group: readonly PendingAppend[]): number {
  let n = 0;
  for (const a of group) n += a.bytes;
  return n;
}

export async function openWal(options: WalOptions): Promise<Wal> {
  const recordBytesMax = options.recordBytesMax ?? RECORD_BYTES_MAX_DEFAULT;
  if (!(recordBytesMax > 0 && recordBytesMax <= RECORD_BYTES_MAX_LIMIT)) {
    throw new RangeError(`recordBytesMax must be in (0, ${RECORD_BYTES_MAX_LIMIT}]`);
  }
  const depth = options.pipelineDepth ?? PIPELINE_DEPTH_DEFAULT;
  if (!(Number.isInteger(depth) && depth >= 1 && depth <= PIPELINE_DEPTH_LIMIT)) {
    throw new RangeError(`pipelineDepth must be an integer in [1, ${PIPELINE_DEPTH_LIMIT}]`);
  }
  const recycleMax = options.recycleSegmentsMax ?? RECYCLE_SEGMENTS_MAX_DEFAULT;
  if (!(Number.isInteger(recycleMax) && recycleMax >= 0 && recycleMax <= RECYCLE_SEGMENTS_LIMIT)) {
    throw new RangeError(`recycleSegmentsMax must be an integer in [0, ${RECYCLE_SEGMENTS_LIMIT}]`);
  }
  const dir = path.resolve(options.dir);
  const recovered = await recoverWalDir({
    fs: options.fs,
    dir,
    clock: options.clock,
    log: options.log,
    recordBytesMax,
    pipelineDepth: Math.max(depth, PIPELINE_DEPTH_RECOVERY_MIN),
    recycleSegmentsMax: recycleMax,
    randomBytes: options.randomBytes ?? ((n) => cryptoRandomBytes(n)),
  });
  const free: FreeFile[] = [];
  for (const name of recovered.freeFiles)
    free.push({ name, bytes: (await options.fs.stat(path.join(dir, name))).size });
  return new WriteAheadLogImpl(options, dir, recordBytesMax, recovered, recycleMax, free);
}

class WriteAheadLogImpl implements Wal {
  readonly dir: string;
  readonly recovery: RecoveryReport;
  readonly #fs: FileSystem;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #timers: Timers;
  readonly #endpoint: string;
  readonly #instance: string;
  readonly #segmentBytesMax: number;
  readonly #segmentAgeMsMax: number;
  readonly #recordBytesMax: number;
  readonly #queueBytesMax: number;
  readonly #groupBytesMax: number;
  readonly #pipelineDepth: number;
  readonly #state: WalState;
  readonly #persister: StatePersister;
  readonly #recycleMax: number;
  /** Free files, at most #recycleMax (docs/wal-format.md "Recycled segment files"). */
  readonly #free: FreeFile[];
  /** deleteSegment calls turning a file into a free one right now (they count against #recycleMax). */
  #freeing = 0;
  /** setVolumeLow: while the volume is short of space, delivered files are removed, not kept. */
  #volumeLow = false;
  #recycledTotal = 0;

  // Writer loop
  #queue: PendingAppend[] = [];
  #queueHead = 0;
  #queuedBytes = 0;
  #queuedAppends = 0;
  #pumping = false;
  #pumpAgain = false;
  /** Groups written or being written, not yet acknowledged, in order (≤ pipelineDepth). */
  #inflight: InflightGroup[] = [];
  /** A group write (or a segment creation) is in flight; never two. */
  #writing = false;
  /** An fdatasync is in flight; never two. */
  #syncing = false;
  /** The first failure of a write or sync in flight; the undo runs once nothing is. */
  #fault: { readonly err: unknown } | undefined;
  #undoing = false;
  #sealRequests: SealRequest[] = [];
  #idleWaiters: (() => void)[] = [];
  #open: OpenSegment | undefined;
  #nextSeq: number;
  #nextSegmentId: bigint;
  #lastIngestMicros: number;
  #scratch: Buffer = Buffer.allocUnsafe(0);
  #staged: StagedGroup | undefined;
  #ageTimer: unknown;
  #failed: WalError | undefined;
  #closing: Promise<void> | undefined;
  /** The last state write's failure; null once one succeeds. */
  #stateLastError: { readonly message: string; readonly atMs: number } | null = null;

  // Seal announcements
  readonly #listeners = new Set<(s: SealedSegment) => void>();
  readonly #unannounced = new Set<bigint>();
  readonly #announcing = new Set<Promise<void>>();
  readonly #deliveredDurable = new Set<bigint>();

  // Counters
  #appendsTotal = 0;
  #recordsTotal = 0;
  #bytesTotal = 0;
  #syncsTotal = 0;
  // Submit to completion callback, so libuv pool queueing and a late event
  // loop count too: what a group waited for, not only what the disk took.
  #writeMsTotal = 0;
  #syncMsTotal = 0;
  #pipelinedWritesTotal = 0;
  #stagedAppendsTotal = 0;
  #groupWritesTotal = 0;
  #writeFailuresTotal = 0;
  #quarantinedTotal: number;

  constructor(
    options: WalOptions,
    dir: string,
    recordBytesMax: number,
    recovered: Awaited<ReturnType<typeof recoverWalDir>>,
    recycleMax: number,
    free: FreeFile[],
  ) {
    this.dir = dir;
    this.#recycleMax = recycleMax;
    this.#free = free;
    this.recovery = recovered.report;
    this.#fs = options.fs;
    this.#clock = options.clock;
    this.#log = options.log;
    this.#timers = options.timers ?? systemTimers;
    this.#endpoint = options.endpoint;
    this.#instance = options.instance;
    this.#segmentBytesMax = options.segmentBytesMax ?? SEGMENT_BYTES_MAX_DEFAULT;
    this.#segmentAgeMsMax = options.segmentAgeMsMax ?? SEGMENT_AGE_MS_MAX_DEFAULT;
    this.#recordBytesMax = recordBytesMax;
    this.#queueBytesMax = options.queueBytesMax ?? QUEUE_BYTES_MAX_DEFAULT;
    this.#groupBytesMax = options.groupBytesMax ?? GROUP_BYTES_MAX_DEFAULT;
    this.#pipelineDepth = options.pipelineDepth ?? PIPELINE_DEPTH_DEFAULT;
    this.#state = recovered.state;
    this.#nextSeq = recovered.nextSeq;
    this.#nextSegmentId = recovered.nextSegmentId;
    this.#lastIngestMicros = recovered.lastIngestMicros;
    this.#quarantinedTotal = recovered.report.quarantined.length;
    this.#persister = new StatePersister(this.#fs, dir, () =>
      this.#state.serializeParts(this.#clock.nowMs()),
    );
    for (const s of this.#state.segments.values())
      if (s.status === 'delivered') this.#deliveredDurable.add(s.id);
  }

  get epoch(): string {
    return this.#state.epoch;
  }

  // ---- append -----------------------------------------------------------------

  append(records: readonly Uint8Array[], format: RecordFormat): Promise<AppendResult> {
    if (this.#closing !== undefined)
      return Promise.reject(new WalError(WalErrorCode.closed, 'WAL is closed'));
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    if (records.length === 0) return Promise.reject(new TypeError('append needs at least one record'));
    let bytes = 0;
    for (const r of records) {
      if (r.byteLength > this.#recordBytesMax) {
        return Promise.reject(
          new WalError(
            WalErrorCode.recordTooLarge,
            `record of ${r.byteLength} bytes exceeds recordBytesMax ${this.#recordBytesMax}`,
          ),
        );
      }
      bytes += FRAME_HEADER_BYTES + r.byteLength;
    }
    // An append larger than the whole cap is still taken when nothing else
    // waits, or it could never be written at all.
    if (this.#queuedBytes > 0 && this.#queuedBytes + bytes > this.#queueBytesMax) {
      return Promise.reject(
        new WalError(
          WalErrorCode.overloaded,
          `WAL queue full (${this.#queuedBytes} + ${bytes} bytes > ${this.#queueBytesMax})`,
        ),
      );
    }
    return new Promise<AppendResult>((resolve, reject) => {
      this.#queue.push({ records, format, bytes, resolve, reject, firstSeq: 0 });
      this.#queuedBytes += bytes;
      this.#queuedAppends++;
      this.#kick();
    });
  }

  #kick(): void {
    if (this.#pumping) {
      this.#pumpAgain = true;
      return;
    }
    this.#pumping = true;
    try {
      do {
        this.#pumpAgain = false;
        this.#step();
      } while (this.#pumpAgain);
    } catch (err) {
      // #step handles I/O failures itself; reaching here is a bug. Fail
      // loudly rather than leave appends hanging.
      this.#log.error({ err, dir: this.dir }, 'WAL writer loop crashed');
      this.#failed = new WalError(WalErrorCode.failed, 'WAL writer loop crashed', { cause: err });
      this.#unstage();
      this.#rejectQueued(this.#failed);
    } finally {
      this.#pumping = false;
    }
    if (this.#idle()) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  #idle(): boolean {
    return (
      !this.#writing &&
      !this.#syncing &&
      !this.#undoing &&
      this.#inflight.length === 0 &&
      this.#staged === undefined &&
      this.#sealRequests.length === 0 &&
      this.#queueHead >= this.#queue.length
    );
  }

  #whenIdle(): Promise<void> {
    if (this.#idle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * One decision of the writer: starts whatever the pipeline allows now. Every
   * I/O completion calls #kick again. At most one write and one fdatasync are
   * in flight; writes and syncs may overlap, two syncs never do (a sync that
   * misses another's EIO on the same file would acknowledge lost bytes).
   */
  #step(): void {
    if (this.#undoing) return;
    if (this.#fault !== undefined) {
      // Let the write or sync in flight settle first: a sync that succeeds
      // still acknowledges what it covered, and no write may land after the
      // undo's truncate.
      if (!this.#writing && !this.#syncing) {
        this.#unstage();
        this.#startUndo();
      }
      return;
    }
    if (!this.#syncing) {
      // Every group whose write completed: one fdatasync that starts now covers them all.
      let n = 0;
      while (n < this.#inflight.length && this.#inflight[n]!.written) n++;
      if (n > 0) this.#startSync(n);
    }
    if (!this.#writing) this.#startWrite();
    this.#stageAhead();
  }

  #startWrite(): void {
    const hasQueued = this.#queueHead < this.#queue.length;
    const open = this.#open;
    const drained = this.#inflight.length === 0 && !this.#syncing;
    // Seals are answered before the failed check, as the writer always did: a
    // failed WAL still settles seal() (it reports the failure), or close()
    // would wait for ever on a request nothing serves.
    if (this.#sealRequests.length > 0 && drained) {
      // Seals happen between groups with nothing in flight: a sealed segment
      // holds only synced groups (recovery relies on it). A staged group goes
      // to the next segment.
      this.#unstage();
      const requests = this.#sealRequests;
      this.#sealRequests = [];
      this.#seal(requests[0]!.reason, requests);
      return;
    }
    if (this.#failed !== undefined) {
      this.#unstage();
      this.#rejectQueued(this.#failed);
      return;
    }
    if (this.#sealRequests.length > 0) return;
    if (this.#staged !== undefined) {
      // It fits the segment (it was only begun where it did): no full check.
      if (this.#inflight.length < this.#pipelineDepth) this.#writeGroup(this.#staged.seg);
      return;
    }
    if (open !== undefined && open.writePos > open.headerBytes) {
      const full =
        open.writePos >= this.#segmentBytesMax ||
        (hasQueued && this.#queue[this.#queueHead]!.bytes > this.#segmentBytesMax - open.writePos);
      if (full) {
        if (!drained) return;
        this.#seal('size', []);
        return;
      }
    }
    if (!hasQueued) return;
    if (open === undefined) {
      this.#writing = true;
      this.#createSegment().then(
        () => {
          this.#writing = false;
          this.#kick();
        },
        (err: unknown) => {
          this.#writing = false;
          this.#writeFailuresTotal++;
          this.#log.error({ err, dir: this.dir }, 'could not create a WAL segment');
          if (this.#queueHead >= this.#queue.length) {
            this.#kick();
            return;
          }
          const group = this.#takeGroup(this.#groupBytesMax);
          this.#settleFailed(
            group,
            sumBytes(group),
            new WalError(WalErrorCode.writeFailed, 'WAL segment creation failed', { cause: err }),
          );
          this.#kick();
        },
      );
      return;
    }
    if (this.#inflight.length >= this.#pipelineDepth) return;
    this.#writeGroup(open);
  }

  /**
   * Writes the next group at the segment's write position: the staged group,
   * if there is one, else a new one with at least one append (even if it
   * alone overflows the segment); either way with every further queued
   * append that fits.
   */
  #writeGroup(seg: OpenSegment): void {
    // A staged group is always for here (it is put back before anything moves
    // the write position); should that ever not hold, it is encoded afresh.
    if (this.#staged !== undefined && (this.#staged.seg !== seg || this.#staged.pos !== seg.writePos))
      this.#unstage();
    let g = this.#staged;
    this.#staged = undefined;
    const limitBytes = Math.min(this.#groupBytesMax, this.#segmentBytesMax - seg.writePos);
    if (g === undefined) {
      g = this.#beginGroup(seg, this.#queue[this.#queueHead]!.bytes);
      this.#encodeNext(g);
    }
    while (
      this.#queueHead < this.#queue.length &&
      g.bytes + this.#queue[this.#queueHead]!.bytes <= limitBytes
    )
      this.#encodeNext(g);
    const { appends, queuedBytes, buf, firstSeq, ingest } = g;
    const off = g.bytes;
    const seq = this.#nextSeq;
    // The write position moves on now, for the next group (seqs moved as the
    // frames were encoded); an undo rewinds both to the first failed group.
    const pos = seg.writePos;
    seg.writePos = pos + off;
    if (seg.writePos > seg.fileBytes) seg.fileBytes = seg.writePos;
    const group: InflightGroup = {
      seg,
      appends,
      queuedBytes,
      pos,
      bytes: off,
      firstSeq,
      endSeq: seq,
      ingest,
      written: false,
    };
    this.#groupWritesTotal++;
    if (this.#syncing) this.#pipelinedWritesTotal++;
    this.#inflight.push(group);
    this.#writing = true;
    const writeStartMs = this.#clock.monotonicMs();
    seg.handle.write([off === buf.length ? buf : buf.subarray(0, off)], pos).then(
      (n) => {
        this.#writing = false;
        this.#writeMsTotal += this.#clock.monotonicMs() - writeStartMs;
        if (n !== off)
          this.#fault ??= { err: fsError('EIO', 'write', seg.path, `short write (${n} of ${off} bytes)`) };
        else group.written = true;
        this.#kick();
      },
      (err: unknown) => {
        this.#writing = false;
        this.#writeMsTotal += this.#clock.monotonicMs() - writeStartMs;
        this.#fault ??= { err };
        this.#kick();
      },
    );
  }

  /**
   * While the pipeline is full, encodes queued appends into the staged group
   * (see "Encoding ahead"), as far as they fit where it will be written.
   */
  #stageAhead(): void {
    if (this.#writing || this.#undoing || this.#fault !== undefined || this.#failed !== undefined) return;
    if (this.#sealRequests.length > 0 || this.#queueHead >= this.#queue.length) return;
    const seg = this.#open;
    // Not full: #startWrite writes (or a seal or a new segment comes first).
    if (seg === undefined || this.#inflight.length < this.#pipelineDepth) return;
    const limitBytes = Math.min(this.#groupBytesMax, this.#segmentBytesMax - seg.writePos);
    let g = this.#staged;
    if (g === undefined) {
      // What does not fit here waits for #startWrite's own decision (a seal, one oversize append).
      if (this.#queue[this.#queueHead]!.bytes > limitBytes) return;
      g = this.#staged = this.#beginGroup(seg, this.#queue[this.#queueHead]!.bytes);
    }
    while (
      this.#queueHead < this.#queue.length &&
      g.bytes + this.#queue[this.#queueHead]!.bytes <= limitBytes
    ) {
      this.#encodeNext(g);
      this.#stagedAppendsTotal++;
    }
  }

  /** A new, empty group at the segment's write position, its buffer sized for `bytesHint`. */
  #beginGroup(seg: OpenSegment, bytesHint: number): StagedGroup {
    const ingest = Math.max(this.#lastIngestMicros, Number(this.#clock.nowMicros()));
    this.#lastIngestMicros = ingest;
    return {
      seg,
      pos: seg.writePos,
      appends: [],
      queuedBytes: 0,
      bytes: 0,
      buf: this.#buffer(bytesHint, 0),
      firstSeq: this.#nextSeq,
      ingest,
    };
  }

  /** Takes the queue's next append into group `g`: seqs, frames (the group's first frame starts the group). */
  #encodeNext(g: StagedGroup): void {
    const queue = this.#queue;
    const a = queue[this.#queueHead++]!;
    if (this.#queueHead === queue.length) {
      this.#queue = [];
      this.#queueHead = 0;
    } else if (this.#queueHead > 4096) {
      this.#queue = queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
    if (g.bytes + a.bytes > g.buf.length) g.buf = this.#buffer(g.bytes + a.bytes, g.bytes, g.buf);
    const buf = g.buf;
    let seq = this.#nextSeq;
    a.firstSeq = seq;
    let off = g.bytes;
    let flags: number = off === 0 ? FrameFlags.groupStart : 0;
    const records = a.records;
    const last = records.length - 1;
    for (let i = 0; i <= last; i++) {
      off = encodeFrameInto(
        buf,
        off,
        seq++,
        g.ingest,
        a.format,
        i === last ? flags | FrameFlags.batchEnd : flags,
        records[i]!,
      );
      flags = 0;
    }
    this.#nextSeq = seq;
    g.bytes = off;
    g.queuedBytes += a.bytes;
    g.appends.push(a);
  }

  /** Puts the staged group's appends back at the head of the queue, and returns its seqs. */
  #unstage(): void {
    const g = this.#staged;
    if (g === undefined) return;
    this.#staged = undefined;
    this.#queue = g.appends.concat(this.#queue.slice(this.#queueHead));
    this.#queueHead = 0;
    this.#nextSeq = g.firstSeq;
  }

  /** One fdatasync for the first `n` in-flight groups (all written before it starts). */
  #startSync(n: number): void {
    const seg = this.#inflight[0]!.seg;
    this.#syncing = true;
    const syncStartMs = this.#clock.monotonicMs();
    seg.handle.datasync().then(
      () => {
        this.#syncing = false;
        this.#syncsTotal++;
        this.#syncMsTotal += this.#clock.monotonicMs() - syncStartMs;
        // Acknowledged in order, each only after its own sync (which began
        // after its write and after every earlier group's sync returned).
        this.#acknowledge(this.#inflight.splice(0, n));
        this.#kick();
      },
      (err: unknown) => {
        this.#syncing = false;
        this.#fault ??= { err };
        this.#kick();
      },
    );
  }

  #acknowledge(groups: readonly InflightGroup[]): void {
    for (const g of groups) {
      const seg = g.seg;
      const count = g.endSeq - g.firstSeq;
      if (seg.records === 0) {
        seg.firstSeq = g.firstSeq;
        seg.firstIngestMicros = g.ingest;
        seg.firstRecordMonoMs = this.#clock.monotonicMs();
        if (this.#open === seg) this.#armAgeTimer(this.#segmentAgeMsMax);
      }
      seg.bytes = g.pos + g.bytes;
      seg.records += count;
      seg.lastSeq = g.endSeq - 1;
      seg.lastIngestMicros = g.ingest;
      this.#appendsTotal += g.appends.length;
      this.#recordsTotal += count;
      this.#bytesTotal += g.bytes;
      this.#queuedBytes -= g.queuedBytes;
      this.#queuedAppends -= g.appends.length;
      for (const a of g.appends) {
        const k = a.records.length;
        a.resolve({ firstSeq: BigInt(a.firstSeq), lastSeq: BigInt(a.firstSeq + k - 1), count: k });
      }
    }
  }

  /**
   * A write or sync failed and nothing is in flight any more: every group not
   * yet acknowledged fails (the failed one and the ones written after it),
   * and the file is cut back to the first of them.
   */
  #startUndo(): void {
    const cause = this.#fault?.err;
    this.#fault = undefined;
    const groups = this.#inflight;
    this.#inflight = [];
    const first = groups[0];
    if (first === undefined) return;
    this.#undoing = true;
    this.#writeFailuresTotal++;
    // The failed groups' seqs go to the next group, so acknowledged seqs stay gap-free.
    this.#nextSeq = first.firstSeq;
    this.#undoGroup(first.seg, first.pos, cause)
      .then(
        (failure) => {
          for (const g of groups) this.#settleFailed(g.appends, g.queuedBytes, failure);
        },
        (err: unknown) => {
          // #undoGroup turns its own failures into WAL_FAILED; this is a bug.
          this.#failed ??= new WalError(WalErrorCode.failed, 'WAL undo crashed', { cause: err });
          for (const g of groups) this.#settleFailed(g.appends, g.queuedBytes, this.#failed);
        },
      )
      .finally(() => {
        this.#undoing = false;
        this.#kick();
      });
  }

  #rejectQueued(err: unknown): void {
    const queue = this.#queue;
    for (let i = this.#queueHead; i < queue.length; i++) {
      const a = queue[i]!;
      this.#queuedBytes -= a.bytes;
      this.#queuedAppends--;
      a.reject(err);
    }
    this.#queue = [];
    this.#queueHead = 0;
  }

  /** Takes the next group off the queue: at least one append, then as many as fit `limitBytes`. */
  #takeGroup(limitBytes: number): PendingAppend[] {
    const queue = this.#queue;
    let i = this.#queueHead;
    let bytes = queue[i]!.bytes;
    i++;
    while (i < queue.length && bytes + queue[i]!.bytes <= limitBytes) {
      bytes += queue[i]!.bytes;
      i++;
    }
    const group = queue.slice(this.#queueHead, i);
    this.#queueHead = i;
    if (i === queue.length) {
      this.#queue = [];
      this.#queueHead = 0;
    } else if (i > 4096) {
      this.#queue = queue.slice(i);
      this.#queueHead = 0;
    }
    return group;
  }

  #settleFailed(group: readonly PendingAppend[], groupBytes: number, err: WalError): void {
    this.#queuedBytes -= groupBytes;
    this.#queuedAppends -= group.length;
    for (const a of group) a.reject(err);
  }

  /**
   * A buffer of at least `bytes` for a group: the reused scratch buffer up to
   * groupBytesMax, a buffer of its own beyond (one huge append). The first
   * `keep` bytes of `from` (a group being grown) are copied over. Only one
   * group is ever encoded at a time and it is encoded only while no write is
   * in flight, so one scratch buffer is enough.
   */
  #buffer(bytes: number, keep: number, from?: Buffer): Buffer {
    let buf: Buffer;
    if (bytes > this.#groupBytesMax) buf = Buffer.allocUnsafe(bytes);
    else {
      if (this.#scratch.length < bytes) {
        let size = Math.max(64 * 1024, this.#scratch.length);
        while (size < bytes) size *= 2;
        this.#scratch = Buffer.allocUnsafe(Math.min(size, this.#groupBytesMax));
      }
      buf = this.#scratch;
    }
    if (from !== undefined && from !== buf && keep > 0) from.copy(buf, 0, 0, keep);
    return buf;
  }

  /**
   * Makes a failed group invisible to recovery. Returns the error its appends
   * reject with.
   */
  async #undoGroup(seg: OpenSegment, pos: number, cause: unknown): Promise<WalError> {
    this.#log.error(
      { err: cause, dir: this.dir, fileName: seg.fileName, atBytes: pos },
      'WAL group write or sync failed; undoing it',
    );
    const failure = new WalError(WalErrorCode.writeFailed, `WAL write failed: ${(cause as Error).message}`, {
      cause,
    });
    try {
      if (isNoSpace(cause)) await this.#releaseFree();
      await seg.handle.truncate(pos);
      seg.fileBytes = pos;
      // fsync, not fdatasync: the truncate must be on disk before we reject,
      // or the failed group could reappear after a crash.
      await seg.handle.sync();
      seg.writePos = pos;
      return failure;
    } catch (err) {
      this.#log.error(
        { err, dir: this.dir, fileName: seg.fileName, atBytes: pos },
        'could not truncate the failed group; abandoning the segment',
      );
    }
    // Abandon the segment at the group's start. The state file carries that
    // length; recovery cuts the file back to it.
    this.#open = undefined;
    this.#clearAgeTimer();
    seg.handle
      .close()
      .catch((err: unknown) => this.#log.warn({ err, fileName: seg.fileName }, 'close failed'));
    let announced: SealedSegment | undefined;
    if (seg.records > 0) {
      seg.bytes = pos;
      announced = this.#sealedInfo(seg, 'write-failure');
      this.#state.addSegment(announced);
      this.#unannounced.add(announced.id);
    } else {
      this.#state.discard.add(seg.fileName);
    }
    try {
      await this.#persist();
    } catch (err) {
      this.#failed = new WalError(
        WalErrorCode.failed,
        'WAL could not undo a failed write durably; refusing writes until restart',
        { cause: err },
      );
      this.#log.error(
        { err, dir: this.dir },
        'WAL failed: state file write failed while abandoning a segment',
      );
      return this.#failed;
    }
    // That state write already recorded the seal.
    if (announced !== undefined) this.#emitSealed(announced);
    return failure;
  }

  // ---- segments -----------------------------------------------------------------

  async #createSegment(): Promise<OpenSegment> {
    const id = this.#nextSegmentId++;
    const fileName = segmentFileName(id);
    const file = path.join(this.dir, fileName);
    const header = encodeSegmentHeader({
      segmentId: id,
      createdMicros: this.#clock.nowMicros(),
      endpoint: this.#endpoint,
      instance: this.#instance,
      epoch: this.#state.epoch,
    });
    let handle: FileHandle | undefined;
    let fileBytes = header.length;
    const free = this.#takeFree();
    if (free !== undefined) {
      try {
        handle = await this.#recycle(free, file, header);
        fileBytes = Math.max(header.length, free.bytes);
        this.#recycledTotal++;
      } catch (err) {
        this.#log.warn(
          { err, dir: this.dir, fileName, freeFile: free.name },
          'could not reuse a free WAL segment file; creating a new one',
        );
      }
    }
    if (handle === undefined) {
      try {
        handle = await this.#fs.open(file, 'createExclusive');
        const n = await handle.write([header], 0);
        if (n !== header.length)
          throw fsError('EIO', 'write', file, `short write (${n} of ${header.length} bytes)`);
        // The new name must be durable before any record in it is acknowledged.
        // The header needs no sync of its own: the first group's fdatasync
        // covers it, and a file cut before that holds no record.
        await this.#fs.syncDir(this.dir);
      } catch (err) {
        if (handle !== undefined) await handle.close().catch(() => {});
        // Best effort: a record-less segment is removed at recovery anyway.
        await this.#fs.unlink(file).catch(() => {});
        if (isNoSpace(err)) await this.#releaseFree();
        throw err;
      }
    }
    const seg: OpenSegment = {
      id,
      fileName,
      path: file,
      handle,
      epoch: this.#state.epoch,
      headerBytes: header.length,
      fileBytes,
      bytes: header.length,
      writePos: header.length,
      records: 0,
      firstSeq: 0,
      lastSeq: 0,
      firstIngestMicros: 0,
      lastIngestMicros: 0,
      firstRecordMonoMs: 0,
    };
    this.#open = seg;
    this.#log.debug({ dir: this.dir, fileName, recycled: free !== undefined }, 'WAL segment created');
    return seg;
  }

  /** The largest free file, if any (it holds the most blocks a new segment need not allocate). */
  #takeFree(): FreeFile | undefined {
    if (this.#free.length === 0) return undefined;
    let best = 0;
    for (let i = 1; i < this.#free.length; i++) if (this.#free[i]!.bytes > this.#free[best]!.bytes) best = i;
    return this.#free.splice(best, 1)[0];
  }

  /**
   * Turns a free file into the new segment `file`: the header is written over
   * the old one and made durable first, and only then does the file get the
   * segment's name (fsync of the directory). So a file named as a segment
   * always starts with its own header; after it lie an older segment's stale
   * frames, which the first groups overwrite and the seal cuts off, and which
   * recovery tells from data by their seqs (docs/wal-format.md).
   */
  async #recycle(free: FreeFile, file: string, header: Uint8Array): Promise<FileHandle> {
    const freePath = path.join(this.dir, free.name);
    let renamed = false;
    let handle: FileHandle | undefined;
    try {
      const h = await this.#fs.open(freePath, 'readWrite');
      try {
        const n = await h.write([header], 0);
        if (n !== header.length)
          throw fsError('EIO', 'write', freePath, `short write (${n} of ${header.length} bytes)`);
        await h.datasync();
      } finally {
        await h.close().catch(() => {});
      }
      await this.#fs.rename(freePath, file);
      renamed = true;
      await this.#fs.syncDir(this.dir);
      // Reopened by its new name, so everything that follows a segment path sees it as one.
      handle = await this.#fs.open(file, 'readWrite');
      return handle;
    } catch (err) {
      // Best effort: a record-less segment is removed at recovery anyway, and
      // a free file is never needed.
      await this.#fs.unlink(renamed ? file : freePath).catch(() => {});
      throw err;
    }
  }

  /** Gives the volume its free files back (it is full or nearly: their blocks are better used by anything else). */
  async #releaseFree(why: 'full' | 'low' = 'full'): Promise<void> {
    const names = this.#free.splice(0).map((f) => f.name);
    if (names.length === 0) return;
    for (const name of names) await this.#fs.unlink(path.join(this.dir, name)).catch(() => {});
    await this.#fs.syncDir(this.dir).catch(() => {});
    this.#log.warn(
      { dir: this.dir, files: names.length },
      why === 'full'
        ? 'WAL volume full: released the free segment files'
        : 'WAL volume free space under the low watermark: released the free segment files',
    );
  }

  async setVolumeLow(low: boolean): Promise<void> {
    this.#volumeLow = low;
    if (low) await this.#releaseFree('low');
  }

  /**
   * Seals the open segment with nothing in flight. A recycled file is first
   * cut to the segment's exact end (fsync), before the seal is recorded, so a
   * sealed segment's file ends at its last frame as a new file's would.
   */
  #seal(reason: SealReason, requests: readonly SealRequest[]): void {
    const seg = this.#open;
    if (seg === undefined || seg.records === 0 || seg.fileBytes <= seg.bytes) {
      this.#sealAndReport(reason, requests);
      this.#pumpAgain = true;
      return;
    }
    this.#writing = true;
    const cut = async (): Promise<void> => {
      await seg.handle.truncate(seg.bytes);
      seg.fileBytes = seg.bytes;
      await seg.handle.sync();
    };
    cut().then(
      () => {
        this.#writing = false;
        this.#sealAndReport(reason, requests);
        this.#kick();
      },
      (err: unknown) => {
        // Readers read exactly `bytes`, and recovery cuts a sealed file back
        // to them (copying only what may be this segment's, not stale frames).
        this.#log.warn(
          { err, dir: this.dir, fileName: seg.fileName, bytes: seg.bytes },
          'could not cut a recycled WAL segment to its end at the seal; recovery will',
        );
        this.#writing = false;
        this.#sealAndReport(reason, requests);
        this.#kick();
      },
    );
  }

  #sealedInfo(seg: OpenSegment, reason: SealReason): SealedSegment {
    return {
      id: seg.id,
      epoch: seg.epoch,
      fileName: seg.fileName,
      bytes: seg.bytes,
      records: seg.records,
      firstSeq: BigInt(seg.firstSeq),
      lastSeq: BigInt(seg.lastSeq),
      firstIngestMicros: BigInt(seg.firstIngestMicros),
      lastIngestMicros: BigInt(seg.lastIngestMicros),
      sealedAtMs: this.#clock.nowMs(),
      sealReason: reason,
      status: 'sealed',
      progress: {},
    };
  }

  /**
   * Seals the open segment (only ever called from the writer loop, between
   * groups). Every byte in it was already fdatasynced; sealing only records it
   * in the state file, which happens off the loop so appends keep flowing.
   */
  #sealAndReport(reason: SealReason, requests: readonly SealRequest[]): void {
    const seg = this.#open;
    if (seg === undefined || seg.records === 0) {
      for (const r of requests) r.resolve(null);
      return;
    }
    this.#open = undefined;
    this.#clearAgeTimer();
    seg.handle
      .close()
      .catch((err: unknown) => this.#log.warn({ err, fileName: seg.fileName }, 'close failed'));
    const sealed = this.#sealedInfo(seg, reason);
    this.#state.addSegment(sealed);
    this.#unannounced.add(sealed.id);
    this.#log.info(
      {
        dir: this.dir,
        fileName: sealed.fileName,
        reason,
        bytes: sealed.bytes,
        records: sealed.records,
        firstSeq: String(sealed.firstSeq),
        lastSeq: String(sealed.lastSeq),
      },
      'WAL segment sealed',
    );
    const done = this.#announce(sealed);
    for (const r of requests) done.then(() => r.resolve(sealed), r.reject);
  }

  /**
   * Persists the state, retrying with capped backoff until it lands (or the
   * WAL closes: then recovery finds the segment unrecorded and seals it at the
   * next open), and then tells the listeners.
   */
  #announce(sealed: SealedSegment): Promise<void> {
    const task = (async () => {
      let backoffMs = ANNOUNCE_BACKOFF_MS_BASE;
      for (let attempt = 1; this.#unannounced.has(sealed.id); attempt++) {
        try {
          await this.#persist();
          break;
        } catch (err) {
          this.#log.error(
            { err, dir: this.dir, fileName: sealed.fileName, attempt, retryInMs: backoffMs },
            'WAL state write failed; the seal is retried until it is recorded',
          );
          if (this.#closing !== undefined) throw err;
          await new Promise<void>((r) => this.#timers.setTimeout(r, backoffMs));
          backoffMs = Math.min(backoffMs * 2, ANNOUNCE_BACKOFF_MS_MAX);
        }
      }
    })();
    this.#announcing.add(task);
    // The task's own failure is logged above; callers that care await `task`.
    task.then(
      () => this.#announcing.delete(task),
      () => this.#announcing.delete(task),
    );
    return task;
  }

  /**
   * Every state write goes through here. A write that started after this
   * call holds every seal recorded before it, so each seal still unannounced
   * at the call is announced once the write lands, whoever asked for it.
   */
  async #persist(): Promise<void> {
    const covered = this.#unannounced.size === 0 ? undefined : [...this.#unannounced];
    try {
      await this.#persister.persist();
    } catch (err) {
      // Only a failed write that carried a seal holds delivery back (and makes
      // the node refuse writes): a failed write after a delete, say, is
      // retried by the next one and must not flap readiness for the next seal.
      if (covered !== undefined)
        this.#stateLastError = { message: (err as Error).message, atMs: this.#clock.nowMs() };
      throw err;
    }
    this.#stateLastError = null;
    if (covered === undefined) return;
    for (const id of covered) {
      const s = this.#state.segments.get(id);
      if (s !== undefined) this.#emitSealed(s);
      else this.#unannounced.delete(id);
    }
  }

  #emitSealed(sealed: SealedSegment): void {
    // Once per seal: both the seal's own retry loop and any other state write may get here.
    if (!this.#unannounced.delete(sealed.id)) return;
    const current = this.#state.segments.get(sealed.id);
    if (current === undefined) return; // quarantined meanwhile
    for (const l of this.#listeners) {
      try {
        l(current);
      } catch (err) {
        this.#log.error({ err, fileName: sealed.fileName }, 'WAL onSealed listener threw');
      }
    }
  }

  #armAgeTimer(ms: number): void {
    this.#clearAgeTimer();
    this.#ageTimer = this.#timers.setTimeout(
      () => {
        this.#ageTimer = undefined;
        this.maybeSealByAge().catch((err: unknown) =>
          this.#log.error({ err, dir: this.dir }, 'WAL age seal failed'),
        );
      },
      // Node fires a longer timeout after 1 ms; maybeSealByAge arms again for the rest.
      Math.min(Math.max(0, ms), TIMER_MS_MAX),
    );
  }

  #clearAgeTimer(): void {
    if (this.#ageTimer !== undefined) {
      this.#timers.clearTimeout(this.#ageTimer);
      this.#ageTimer = undefined;
    }
  }

  #requestSeal(reason: SealReason): Promise<SealedSegment | null> {
    return new Promise((resolve, reject) => {
      this.#sealRequests.push({ reason, resolve, reject });
      this.#kick();
    });
  }

  seal(reason: SealReason = 'manual'): Promise<SealedSegment | null> {
    return this.#requestSeal(reason);
  }

  async maybeSealByAge(): Promise<boolean> {
    const seg = this.#open;
    if (seg === undefined || seg.records === 0 || this.#closing !== undefined) return false;
    const ageMs = this.#clock.monotonicMs() - seg.firstRecordMonoMs;
    if (ageMs < this.#segmentAgeMsMax) {
      // Early (timers and clock disagree): try again when it is due.
      if (this.#ageTimer === undefined) this.#armAgeTimer(this.#segmentAgeMsMax - ageMs);
      return false;
    }
    const sealed = await this.#requestSeal('age');
    return sealed !== null && sealed.id === seg.id;
  }

  // ---- sealed segments (delivery pipeline) ----------------------------------------

  onSealed(listener: (segment: SealedSegment) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  sealedSegments(): readonly SealedSegment[] {
    const out: SealedSegment[] = [];
    for (const s of this.#state.segments.values()) if (!this.#unannounced.has(s.id)) out.push(s);
    return out;
  }

  deliveredSegments(): readonly SealedSegment[] {
    return this.#state.segments.delivered();
  }

  segment(id: bigint): SealedSegment | undefined {
    return this.#state.segments.get(id);
  }

  segmentPath(id: bigint): string {
    return path.join(this.dir, segmentFileName(id));
  }

  async updateProgress(id: bigint, patch: { readonly [k: string]: JsonValue }): Promise<SealedSegment> {
    const seg = this.#mustGet(id);
    const next: SealedSegment = { ...seg, progress: { ...seg.progress, ...patch } };
    this.#state.segments.set(id, next);
    await this.#persist();
    return next;
  }

  async markDelivered(id: bigint, patch: { readonly [k: string]: JsonValue } = {}): Promise<SealedSegment> {
    const seg = this.#mustGet(id);
    const next: SealedSegment = { ...seg, status: 'delivered', progress: { ...seg.progress, ...patch } };
    this.#state.segments.set(id, next);
    await this.#persist();
    this.#deliveredDurable.add(id);
    return next;
  }

  async deleteSegment(id: bigint): Promise<void> {
    const seg = this.#mustGet(id);
    if (seg.status !== 'delivered')
      throw new Error(`segment ${seg.fileName} is not delivered; refusing to delete it`);
    // "delivered" must be durable before the file goes, or a crash in
    // between would look like a lost sealed segment.
    if (!this.#deliveredDurable.has(id)) {
      await this.#persist();
      this.#deliveredDurable.add(id);
    }
    await this.#freeOrUnlink(seg);
    this.#state.segments.delete(id);
    this.#deliveredDurable.delete(id);
    // Not critical: recovery drops a delivered entry whose file is gone.
    await this.#persist().catch((err: unknown) =>
      this.#log.warn({ err, dir: this.dir }, 'WAL state write failed'),
    );
  }

  /**
   * A delivered segment's file becomes a free file while there is room for
   * one (renamed, so no reader of segments sees it again), else it is removed.
   * Only a file that ends exactly at the segment's end: a longer one (a seal
   * at a failed write) may hold frames with seqs a later segment reused.
   */
  async #freeOrUnlink(seg: SealedSegment): Promise<void> {
    const file = path.join(this.dir, seg.fileName);
    // Already gone: an earlier attempt renamed or removed it and then failed
    // at its directory sync. Sync again and let the caller finish (a retry
    // that failed on the missing file for ever would stop retention).
    const gone = (err: unknown): boolean => (err as { code?: unknown } | null)?.code === 'ENOENT';
    const bytes = await this.#fs.stat(file).then(
      (st) => st.size,
      (err: unknown) => {
        if (gone(err)) return undefined;
        throw err;
      },
    );
    if (bytes === undefined) {
      await this.#fs.syncDir(this.dir);
      return;
    }
    if (
      this.#free.length + this.#freeing < this.#recycleMax &&
      !this.#volumeLow &&
      seg.sealReason !== 'write-failure' &&
      this.#closing === undefined
    ) {
      this.#freeing++;
      let freed: FreeFile | undefined;
      try {
        if (bytes === seg.bytes && this.#failed === undefined) {
          const name = freeFileName(seg.id);
          await this.#fs.rename(file, path.join(this.dir, name));
          freed = { name, bytes };
        }
      } finally {
        this.#freeing--;
      }
      // The volume went low (setVolumeLow) during the rename: the release
      // already ran and would not see this file.
      if (freed !== undefined && this.#volumeLow) {
        await this.#fs.unlink(path.join(this.dir, freed.name));
        await this.#fs.syncDir(this.dir);
        return;
      }
      if (freed !== undefined) {
        this.#free.push(freed);
        await this.#fs.syncDir(this.dir);
        return;
      }
    }
    await this.#fs.unlink(file).catch((err: unknown) => {
      if (!gone(err)) throw err;
    });
    await this.#fs.syncDir(this.dir);
  }

  async quarantineSegment(id: bigint, reason: string): Promise<void> {
    const seg = this.#mustGet(id);
    await quarantineFile(
      { fs: this.#fs, dir: this.dir, clock: this.#clock, log: this.#log },
      seg.fileName,
      reason,
    );
    this.#state.segments.delete(id);
    this.#unannounced.delete(id);
    this.#state.addQuarantined({ fileName: seg.fileName, reason, atMs: this.#clock.nowMs() });
    this.#quarantinedTotal++;
    await this.#persist();
  }

  #mustGet(id: bigint): SealedSegment {
    const seg = this.#state.segments.get(id);
    if (seg === undefined) throw new Error(`no sealed WAL segment ${id} in ${this.dir}`);
    return seg;
  }

  // ---- stats / close ---------------------------------------------------------------

  stats(): DurableWalStats {
    // Kept by the map as entries change: this is read on the request path.
    const segs = this.#state.segments;
    const sealedBytes = segs.bytesTotal;
    const undeliveredSegments = segs.sealedCount;
    const undeliveredBytes = segs.sealedBytes;
    const open = this.#open;
    let freeBytes = 0;
    for (const f of this.#free) freeBytes += f.bytes;
    return {
      epoch: this.#state.epoch,
      freeSegmentFiles: this.#free.length,
      freeSegmentBytes: freeBytes,
      recycledSegmentsTotal: this.#recycledTotal,
      openSegmentId: open?.id ?? null,
      openSegmentBytes: open?.bytes ?? 0,
      retainedBytes: sealedBytes + (open === undefined ? 0 : Math.max(open.bytes, open.fileBytes)),
      sealedSegments: this.#state.segments.size,
      nextSeq: BigInt(this.#nextSeq),
      appendsTotal: this.#appendsTotal,
      syncsTotal: this.#syncsTotal,
      pipelineDepth: this.#pipelineDepth,
      pipelineGroupsInFlight: this.#inflight.length,
      pipelinedWritesTotal: this.#pipelinedWritesTotal,
      stagedAppendsTotal: this.#stagedAppendsTotal,
      groupWritesTotal: this.#groupWritesTotal,
      writeSecondsTotal: this.#writeMsTotal / 1000,
      syncSecondsTotal: this.#syncMsTotal / 1000,
      queuedBytes: this.#queuedBytes,
      queuedAppends: this.#queuedAppends,
      undeliveredSegments,
      undeliveredBytes,
      recordsTotal: this.#recordsTotal,
      bytesTotal: this.#bytesTotal,
      writeFailuresTotal: this.#writeFailuresTotal,
      failed: this.#failed !== undefined,
      recoveryTruncationsTotal: this.recovery.truncations.length,
      recoveryTruncatedBytesTotal: this.recovery.truncations.reduce(
        (n, t) => n + (t.fromBytes - t.toBytes),
        0,
      ),
      quarantinedTotal: this.#quarantinedTotal,
      stateWriteFailuresTotal: this.#persister.failures,
      unannouncedSegments: this.#unannounced.size,
      stateLastError: this.#stateLastError,
      sealsUnrecorded: this.#unannounced.size > 0 && this.#stateLastError !== null,
    };
  }

  /**
   * Stops taking appends, writes everything already queued, seals the open
   * segment (or removes it if it holds no record) and waits for the state
   * file. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    await this.#whenIdle();
    if (this.#failed === undefined) {
      await new Promise<SealedSegment | null>((resolve, reject) => {
        this.#sealRequests.push({ reason: 'close', resolve, reject });
        this.#kick();
      }).catch((err: unknown) => this.#log.error({ err, dir: this.dir }, 'WAL seal on close failed'));
    }
    await this.#whenIdle();
    this.#clearAgeTimer();
    const open = this.#open;
    if (open !== undefined) {
      // Holds no acknowledged record (or the WAL failed): nothing to seal.
      this.#open = undefined;
      await open.handle.close().catch(() => {});
      if (open.records === 0) {
        await this.#fs.unlink(open.path).catch(() => {});
        await this.#fs.syncDir(this.dir).catch(() => {});
      }
    }
    await Promise.allSettled([...this.#announcing]);
    await this.#persister.idle();
  }
}
