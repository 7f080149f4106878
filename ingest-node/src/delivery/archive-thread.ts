// The worker thread behind archive-worker.ts: verifies and hashes the
// segment bytes the node's main thread hands it and drives their zstd
// stream, so the thread that answers requests only moves buffers (issue 15:
// ack latency isolated from delivery). It lowers its own CPU priority first:
// on Linux setpriority(PRIO_PROCESS, 0) applies to the calling thread only,
// so the main thread keeps its priority and the acks win the CPU. (The zstd
// work itself runs on libuv's thread pool, whose threads keep the node's
// priority.)
//
// Messages in (ArchiveRequest): begin, chunk (a transferred ArrayBuffer),
// end, abort. Out (ArchiveReply): ack (a chunk was taken by the verifier:
// the sender's window), out (a compressed chunk), done, error. Several jobs
// may be in flight, told apart by id.
import { getPriority, setPriority } from 'node:os';
import { PassThrough, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parentPort, workerData } from 'node:worker_threads';
import { HashTap } from '../store/hashing.ts';
import { SegmentCorruptError } from '../wal/format.ts';
import type { ArchiveReply, ArchiveRequest, ArchiveThreadData } from './archive-protocol.ts';
import { createZstdCompressor } from './compress.ts';
import { SegmentMismatchError, SegmentVerifier } from './producers.ts';

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

/** A transferable copy: Buffers may be views of a larger (pooled) ArrayBuffer. */
function own(b: Buffer): ArrayBuffer {
  const ab = new ArrayBuffer(b.length);
  new Uint8Array(ab).set(b);
  return ab;
}

const jobs = new Map<number, PassThrough>();

function begin(m: Extract<ArchiveRequest, { t: 'begin' }>): void {
  const { id } = m;
  const src = new PassThrough();
  jobs.set(id, src);
  const verifier = new SegmentVerifier(
    m.expect,
    m.recordBytesMax !== undefined ? { recordBytesMax: m.recordBytesMax } : {},
  );
  const inTap = new HashTap();
  const outTap = new HashTap();
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      const ab = own(chunk);
      post({ t: 'out', id, buf: ab }, [ab]);
      cb();
    },
  });
  pipeline(
    src,
    verifier,
    inTap,
    createZstdCompressor({ level: m.level, inputBytes: m.expect.bytes }),
    outTap,
    sink,
  ).then(
    () => {
      jobs.delete(id);
      post({
        t: 'done',
        id,
        inputBytes: inTap.bytes,
        inputSha256: inTap.sha256,
        outputBytes: outTap.bytes,
        outputSha256: outTap.sha256,
      });
    },
    (err: unknown) => {
      jobs.delete(id);
      if (err instanceof SegmentCorruptError)
        post({
          t: 'error',
          id,
          kind: 'defect',
          message: err.message,
          offset: err.offset,
          reason: err.reason,
        });
      else if (err instanceof SegmentMismatchError)
        post({ t: 'error', id, kind: 'mismatch', message: err.message });
      else post({ t: 'error', id, kind: 'other', message: (err as Error).message ?? String(err) });
    },
  );
}

port.on('message', (m: ArchiveRequest) => {
  switch (m.t) {
    case 'begin':
      begin(m);
      return;
    case 'chunk': {
      const src = jobs.get(m.id);
      if (src === undefined) return;
      // The callback runs once the chunk left PassThrough's buffer (Transform
      // holds it while the readable side is full): the sender's window then
      // bounds what waits here.
      src.write(Buffer.from(m.buf), () => post({ t: 'ack', id: m.id }));
      return;
    }
    case 'end':
      jobs.get(m.id)?.end();
      return;
    case 'abort': {
      const src = jobs.get(m.id);
      jobs.delete(m.id);
      src?.destroy(new Error('aborted'));
      return;
    }
  }
});
