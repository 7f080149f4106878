// The worker thread behind archive-worker.ts: verifies, hashes and
// zstd-compresses the segment bytes the node's main thread hands it, so the
// thread that answers requests only moves buffers (issue 15: ack latency
// isolated from delivery). It lowers its own CPU priority first: on Linux
// setpriority(PRIO_PROCESS, 0) applies to the calling thread only, so the
// main thread keeps its priority and the acks win the CPU. All of the work
// runs on this thread, synchronously per piece: the compression too
// (zstd-frame.ts), which a node:zlib stream would send to libuv's thread
// pool at the node's own priority. Its imports are kept few (the segment
// check, the WAL format, zstd-frame.ts): every module costs this thread's
// isolate memory.
//
// Messages in (ArchiveRequest): begin, chunk (a transferred ArrayBuffer),
// end, abort. Out (ArchiveReply): ack (a chunk was verified, hashed and
// compressed, its output sent before it: the sender's window), out (a
// compressed piece), done, error. Several jobs may be in flight, told apart
// by id.
import { createHash, type Hash } from 'node:crypto';
import { getPriority, setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { SegmentCorruptError } from '../wal/format.ts';
import type { ArchiveReply, ArchiveRequest, ArchiveThreadData } from './archive-protocol.ts';
import { SegmentCheck, SegmentMismatchError } from './segment-verifier.ts';
import { ZstdFrameEncoder } from './zstd-frame.ts';

const port = parentPort;
if (port === null) throw new Error('archive-thread.ts runs as a worker thread');
const data = workerData as ArchiveThreadData;
if (data.nice > 0) {
  try {
    // Added to the node's own (this thread inherited it), as the Parquet children do.
    setPriority(Math.min(19, getPriority() + data.nice));
  } catch {
    // A sandbox that refuses it leaves the thread at the node's priority: slower acks, no harm.
  }
}

const post = (m: ArchiveReply, transfer?: ArrayBuffer[]): void => port.postMessage(m, transfer ?? []);

interface Job {
  readonly check: SegmentCheck;
  readonly zstd: ZstdFrameEncoder;
  readonly inHash: Hash;
  readonly outHash: Hash;
  outputBytes: number;
}

const jobs = new Map<number, Job>();

function send(id: number, job: Job, pieces: Uint8Array[]): void {
  for (const p of pieces) {
    job.outHash.update(p);
    job.outputBytes += p.byteLength;
    // Each piece owns its ArrayBuffer (ZstdFrameEncoder): moved, not copied.
    post({ t: 'out', id, buf: p.buffer as ArrayBuffer }, [p.buffer as ArrayBuffer]);
  }
}

function fail(id: number, job: Job, err: unknown): void {
  jobs.delete(id);
  job.zstd.close();
  if (err instanceof SegmentCorruptError)
    post({ t: 'error', id, kind: 'defect', message: err.message, offset: err.offset, reason: err.reason });
  else if (err instanceof SegmentMismatchError)
    post({ t: 'error', id, kind: 'mismatch', message: err.message });
  else post({ t: 'error', id, kind: 'other', message: (err as Error).message ?? String(err) });
}

function begin(m: Extract<ArchiveRequest, { t: 'begin' }>): void {
  let zstd: ZstdFrameEncoder;
  try {
    zstd = new ZstdFrameEncoder({ level: m.level, inputBytes: m.expect.bytes });
  } catch (err) {
    post({ t: 'error', id: m.id, kind: 'other', message: (err as Error).message });
    return;
  }
  jobs.set(m.id, {
    check: new SegmentCheck(m.expect, { recordBytesMax: m.recordBytesMax }),
    zstd,
    inHash: createHash('sha256'),
    outHash: createHash('sha256'),
    outputBytes: 0,
  });
}

function chunk(id: number, ab: ArrayBuffer): void {
  const job = jobs.get(id);
  if (job === undefined) return;
  const buf = Buffer.from(ab);
  try {
    // Checked before compressed: a defect ends the job before its bytes reach the frame.
    job.check.update(buf);
    job.inHash.update(buf);
    send(id, job, job.zstd.write(buf));
  } catch (err) {
    // Frees the piece now: this thread allocates too little for its garbage
    // collector to run often, so each piece would otherwise stay in memory
    // until one did (measured: +10-17 MiB of RSS per 16 MiB segment).
    ab.transfer(0);
    fail(id, job, err);
    return;
  }
  // Nothing here keeps a view of the piece (the check, the hashes and the
  // encoder copy what they keep), so its buffer goes back to be read into
  // again: on the main thread, a fresh 1 MiB buffer per read was external
  // memory that set off a full mark-compact of the node's heap every few
  // segments (issue 15).
  post({ t: 'ack', id, buf: ab }, [ab]);
}

function end(id: number): void {
  const job = jobs.get(id);
  if (job === undefined) return;
  try {
    // The whole segment checks out before the frame gets its end: a corrupt
    // segment never yields a complete archive.
    job.check.finish();
    send(id, job, job.zstd.end());
  } catch (err) {
    fail(id, job, err);
    return;
  }
  jobs.delete(id);
  post({
    t: 'done',
    id,
    inputBytes: job.check.bytes,
    inputSha256: job.inHash.digest('hex'),
    outputBytes: job.outputBytes,
    outputSha256: job.outHash.digest('hex'),
  });
}

port.on('message', (m: ArchiveRequest) => {
  switch (m.t) {
    case 'begin':
      begin(m);
      return;
    case 'chunk':
      chunk(m.id, m.buf);
      return;
    case 'end':
      end(m.id);
      return;
    case 'abort': {
      const job = jobs.get(m.id);
      jobs.delete(m.id);
      job?.zstd.close();
      return;
    }
  }
});
