// The segment archive's CPU work off the event loop that answers requests
// (issue 15): frame verification, the sha256 of both sides and the zstd
// compression all run on a worker thread at a lower priority
// (archive-thread.ts; the compression synchronously there, zstd-frame.ts,
// not on libuv's pool, whose threads keep the node's priority and serve the
// WAL's file calls). This thread only reads the segment and writes the
// archive through the node's FileSystem (the power-cut tests still see every
// byte). Before, each 1 MiB chunk cost the loop ~3 ms of CRC and sha256
// walking, and the zstd work competed with the acks at full weight.
//
// Bounds: the segment goes over in pieces of at most 1 MiB; at most
// `chunksInFlightMax` of a job's pieces are handed over and not yet
// processed by the worker (which takes each whole, synchronously), and none
// is sent while the archive file's write stream needs draining: a job holds
// a few MiB whatever the segment size (archive-worker.test.ts measures
// how far reading runs ahead of a slow sink). The worker starts on first use and ends after
// `idleMs` without a job; it keeps the process alive only while a job runs.
// A worker that dies fails its jobs with ArchiveWorkerError (outside the
// data: the pipeline retries) and the next job starts a new one.
import { once } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { SegmentCorruptError } from '../wal/format.ts';
import type { SealedSegment } from '../wal/types.ts';
import type { ArchiveReply, ArchiveRequest, ArchiveThreadData } from './archive-protocol.ts';
import type { CompressResult } from './compress.ts';
import { SegmentMismatchError } from './segment-verifier.ts';

const THREAD_SCRIPT = new URL('./archive-thread.ts', import.meta.url);

/** The worker failed or was stopped: nothing about the segment's data; retried. */
export class ArchiveWorkerError extends Error {
  readonly code = 'ARCHIVE_WORKER_FAILED';
  constructor(message: string) {
    super(message);
    this.name = 'ArchiveWorkerError';
  }
}

export interface ArchiveWorkerOptions {
  /** Niceness the worker thread adds to the node's (capped at 19); default 10, 0 = the node's own. */
  readonly nice?: number;
  /** The worker ends after this long without a job. Default 30 s. */
  readonly idleMs?: number;
  /** Pieces (≤ 1 MiB) handed over and not yet processed by the worker, per job. Default 2. */
  readonly chunksInFlightMax?: number;
}

export interface ArchiveJob {
  readonly expect: SealedSegment;
  readonly recordBytesMax?: number;
  readonly level: number;
  readonly signal?: AbortSignal;
}

interface Pending {
  readonly source: Readable;
  readonly sink: Writable;
  inFlight: number;
  wake: (() => void) | undefined;
  failure: Error | undefined;
  settle: ((r: CompressResult) => void) | undefined;
  fail: ((e: Error) => void) | undefined;
}

export const archiveNiceDefault = 10;
const IDLE_MS_DEFAULT = 30_000;
const CHUNKS_IN_FLIGHT_MAX_DEFAULT = 2;
/**
 * Largest piece handed over. A source read in pieces of this size (as
 * segmentArchiveProducer reads) hands each buffer over as it is; larger
 * chunks are copied piece by piece. Measured delivering 8 × 16 MiB segments
 * to MinIO: 1 MiB pieces, 2 in flight, cost the main thread ~20 % less CPU
 * than 256 KiB × 4 (fewer reads and messages) for 1 MiB more in flight.
 */
export const archivePieceBytes = 1024 * 1024;
const PIECE_BYTES = archivePieceBytes;
/** Handed-back piece buffers kept for reads: the window's worth for a job or two, ~4 MiB. */
const SPARE_BUFFERS_MAX = 4;

export class ArchiveWorker {
  readonly #nice: number;
  readonly #idleMs: number;
  readonly #window: number;
  #worker: Worker | undefined;
  readonly #jobs = new Map<number, Pending>();
  #nextId = 1;
  #idleTimer: NodeJS.Timeout | undefined;
  #closed = false;
  /** Piece buffers the worker has handed back, for the next reads (readBuffer): at most SPARE_BUFFERS_MAX. */
  readonly #spare: ArrayBuffer[] = [];

  constructor(o: ArchiveWorkerOptions = {}) {
    this.#nice = o.nice ?? archiveNiceDefault;
    this.#idleMs = o.idleMs ?? IDLE_MS_DEFAULT;
    this.#window = o.chunksInFlightMax ?? CHUNKS_IN_FLIGHT_MAX_DEFAULT;
    if (!Number.isInteger(this.#nice) || this.#nice < 0 || this.#nice > 19)
      throw new RangeError('nice must be an integer 0..19');
    if (!Number.isInteger(this.#window) || this.#window < 1)
      throw new RangeError('chunksInFlightMax must be ≥ 1');
  }

  /**
   * A buffer of `bytes` to read the next piece into: one the worker handed
   * back when it is of the piece size, else undefined (allocate one). Pass
   * it as the source's read buffers (segmentArchiveProducer does): a piece
   * read into it moves to the worker and comes back, so reading a segment
   * leaves no garbage on this thread.
   */
  readBuffer(bytes: number): Buffer | undefined {
    if (bytes !== PIECE_BYTES) return undefined;
    const ab = this.#spare.pop();
    return ab === undefined ? undefined : Buffer.from(ab);
  }

  /** Worker thread alive now (for tests and metrics). */
  get running(): boolean {
    return this.#worker !== undefined;
  }

  /** The worker's thread id, while it runs. */
  get threadId(): number | undefined {
    return this.#worker?.threadId;
  }

  #start(): Worker {
    if (this.#worker !== undefined) return this.#worker;
    const data: ArchiveThreadData = { nice: this.#nice };
    const w = new Worker(THREAD_SCRIPT, { workerData: data });
    w.on('message', (m: ArchiveReply) => this.#onMessage(m));
    const lost = (why: string): void => {
      if (this.#worker !== w) return;
      this.#worker = undefined;
      this.#clearIdle();
      const err = new ArchiveWorkerError(`the segment archive worker ${why}`);
      for (const [id, p] of this.#jobs) {
        this.#jobs.delete(id);
        this.#failJob(p, err);
      }
    };
    w.on('error', (e: Error) => lost(`failed: ${e.message}`));
    w.on('exit', (code) => lost(`exited ${code}`));
    this.#worker = w;
    return w;
  }

  #failJob(p: Pending, err: Error): void {
    p.failure ??= err;
    // Ends the reading loop even when the source has nothing more to give.
    if (!p.source.destroyed) p.source.destroy();
    const wake = p.wake;
    p.wake = undefined;
    wake?.();
    const fail = p.fail;
    p.fail = undefined;
    p.settle = undefined;
    fail?.(err);
  }

  #onMessage(m: ArchiveReply): void {
    const p = this.#jobs.get(m.id);
    if (p === undefined) return;
    switch (m.t) {
      case 'ack': {
        if (m.buf !== undefined && m.buf.byteLength === PIECE_BYTES && this.#spare.length < SPARE_BUFFERS_MAX)
          this.#spare.push(m.buf);
        p.inFlight--;
        const wake = p.wake;
        p.wake = undefined;
        wake?.();
        return;
      }
      case 'out':
        // Bounded by the sender's window: no chunk is sent while the sink needs draining.
        p.sink.write(Buffer.from(m.buf));
        return;
      case 'done': {
        this.#jobs.delete(m.id);
        const settle = p.settle;
        p.settle = undefined;
        p.fail = undefined;
        settle?.({
          inputBytes: m.inputBytes,
          inputSha256: m.inputSha256,
          outputBytes: m.outputBytes,
          outputSha256: m.outputSha256,
        });
        this.#armIdle();
        return;
      }
      case 'error': {
        this.#jobs.delete(m.id);
        let err: Error;
        if (m.kind === 'defect') {
          err = new SegmentCorruptError(
            m.offset ?? 0,
            (m.reason ?? 'crc') as ConstructorParameters<typeof SegmentCorruptError>[1],
          );
          err.message = m.message;
        } else if (m.kind === 'mismatch') err = new SegmentMismatchError(m.message);
        else err = new ArchiveWorkerError(m.message);
        this.#failJob(p, err);
        this.#armIdle();
        return;
      }
    }
  }

  #clearIdle(): void {
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }

  #armIdle(): void {
    if (this.#jobs.size > 0 || this.#worker === undefined) return;
    // Idle: the worker must not keep the process alive, and ends after a while.
    this.#worker.unref();
    this.#clearIdle();
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = undefined;
      if (this.#jobs.size === 0) this.#stopWorker();
    }, this.#idleMs);
    this.#idleTimer.unref();
  }

  #stopWorker(): void {
    const w = this.#worker;
    this.#worker = undefined;
    if (w !== undefined) void w.terminate();
  }

  /**
   * Verifies `source` (the exact sealed segment bytes) against `job.expect`,
   * compresses it into `sink` (which it ends) and returns both sides' sizes
   * and sha256. Throws SegmentCorruptError / SegmentMismatchError for a bad
   * segment, ArchiveWorkerError when the worker fails, the abort reason when
   * `job.signal` aborts. The sink is destroyed on failure.
   */
  async archive(source: Readable, sink: Writable, job: ArchiveJob): Promise<CompressResult> {
    const refuse = (err: unknown): never => {
      // Nobody else will end them: an open file handle, or an uncaught 'error' later.
      sink.on('error', () => {});
      source.on('error', () => {});
      sink.destroy();
      source.destroy();
      throw err;
    };
    if (this.#closed) refuse(new ArchiveWorkerError('the segment archive worker is closed'));
    if (job.signal?.aborted === true) refuse(job.signal.reason);
    const w = this.#start();
    this.#clearIdle();
    w.ref();
    const id = this.#nextId++;
    const p: Pending = {
      source,
      sink,
      inFlight: 0,
      wake: undefined,
      failure: undefined,
      settle: undefined,
      fail: undefined,
    };
    const result = new Promise<CompressResult>((resolve, reject) => {
      p.settle = resolve;
      p.fail = reject;
    });
    // Observed here, awaited below: a failure before the await must not go unhandled.
    result.catch(() => {});
    this.#jobs.set(id, p);
    const send = (m: ArchiveRequest, transfer?: ArrayBuffer[]): void => w.postMessage(m, transfer ?? []);
    const onAbort = (): void => {
      if (!this.#jobs.has(id)) return;
      this.#jobs.delete(id);
      send({ t: 'abort', id });
      const reason: unknown = job.signal?.reason;
      this.#failJob(p, reason instanceof Error ? reason : new Error('aborted'));
      this.#armIdle();
    };
    job.signal?.addEventListener('abort', onAbort, { once: true });
    const sinkError = (e: Error): void => {
      if (this.#jobs.delete(id)) {
        send({ t: 'abort', id });
        this.#failJob(p, e);
        this.#armIdle();
      }
    };
    sink.on('error', sinkError);
    try {
      send({
        t: 'begin',
        id,
        expect: job.expect,
        level: job.level,
        ...(job.recordBytesMax !== undefined ? { recordBytesMax: job.recordBytesMax } : {}),
      });
      try {
        for await (const chunk of source as AsyncIterable<Buffer>) {
          if (p.failure !== undefined) break;
          // Pieces of at most PIECE_BYTES: the window of them waiting in the
          // worker's queue is what bounds its memory.
          for (let at = 0; at < chunk.length && p.failure === undefined; at += PIECE_BYTES) {
            while (p.failure === undefined && p.inFlight >= this.#window)
              await new Promise<void>((r) => (p.wake = r));
            if (p.failure === undefined && sink.writableNeedDrain) await once(sink, 'drain');
            if (p.failure !== undefined) break;
            const piece = chunk.subarray(at, at + PIECE_BYTES);
            const ab =
              piece.byteOffset === 0 && piece.byteLength === piece.buffer.byteLength
                ? (piece.buffer as ArrayBuffer)
                : new Uint8Array(piece).buffer;
            p.inFlight++;
            send({ t: 'chunk', id, buf: ab }, [ab]);
          }
        }
      } catch (err) {
        // The segment could not be read (ENOENT, EIO): not the data's fault as far as we know.
        // (After a failure, the destroyed source ends the loop with a premature close.)
        if (p.failure === undefined) sinkError(err as Error);
      }
      if (p.failure === undefined) send({ t: 'end', id });
      const r = await result;
      sink.end();
      await once(sink, 'finish');
      return r;
    } catch (err) {
      if (!sink.destroyed) sink.destroy();
      throw err;
    } finally {
      job.signal?.removeEventListener('abort', onAbort);
      sink.off('error', sinkError);
      // A late error (the close of a destroyed file failing with EIO after a
      // power cut) has nobody left to tell: without a listener it would be an
      // uncaught exception. pipeline() leaves such listeners for the same reason.
      sink.on('error', () => {});
      source.on('error', () => {});
      if (!source.destroyed) source.destroy();
    }
  }

  /**
   * Stops the worker thread now, as a crash would: its jobs fail with
   * ArchiveWorkerError and the next job starts a new one (tests, and a
   * worker that must be replaced).
   */
  async terminateWorker(): Promise<void> {
    await this.#worker?.terminate();
  }

  /** Ends the worker; running jobs fail with ArchiveWorkerError. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#clearIdle();
    const w = this.#worker;
    if (w === undefined) return;
    await w.terminate();
  }
}
