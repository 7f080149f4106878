// The segment archive on its worker thread (delivery/archive-worker.ts): the
// same archive and checksums as compressing on the main thread, the same
// refusal of a corrupt or mismatched segment, a bounded hand-over, a lower
// priority for the worker thread only, and no worker left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { readFileSync, readdirSync } from 'node:fs';
import { getPriority, tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { createZstdDecompress, zstdDecompressSync } from 'node:zlib';
import { ArchiveWorker, ArchiveWorkerError, archivePieceBytes } from '../src/delivery/archive-worker.ts';
import { ndjsonSample } from '../src/delivery/bench-zstd.ts';
import { SegmentMismatchError, segmentArchiveProducer, type SegmentJob } from '../src/delivery/producers.ts';
import { NodeFileSystem } from '../src/fs/node.ts';
import type { FileHandle, FileSystem, OpenMode } from '../src/fs/types.ts';
import { FrameFlags, SegmentCorruptError, encodeFrame, encodeSegmentHeader } from '../src/wal/format.ts';
import type { SealedSegment } from '../src/wal/types.ts';

function segment(
  records: number,
  payloadBytes = 900,
  random = false,
  payloads?: readonly Buffer[],
): { bytes: Buffer; state: SealedSegment } {
  const parts: Uint8Array[] = [
    encodeSegmentHeader({
      segmentId: 7n,
      createdMicros: 1n,
      endpoint: 'e',
      instance: 'e-0',
      epoch: 'EPOCH1',
    }),
  ];
  for (let i = 0; i < records; i++)
    parts.push(
      encodeFrame({
        seq: 100n + BigInt(i),
        ingestMicros: 1_000_000n + BigInt(i),
        format: 1,
        flags: i % 3 === 2 || i === records - 1 ? FrameFlags.batchEnd : 0,
        payload:
          payloads?.[i] ??
          Buffer.from(
            `{"i":${i},"pad":"${random ? randomBytes(payloadBytes).toString('base64') : 'z'.repeat(payloadBytes + (i % 50))}"}`,
          ),
      }),
    );
  const bytes = Buffer.concat(parts);
  return {
    bytes,
    state: {
      id: 7n,
      epoch: 'EPOCH1',
      fileName: '00000000000000000007.wal',
      bytes: bytes.length,
      records,
      firstSeq: 100n,
      lastSeq: 100n + BigInt(records - 1),
      firstIngestMicros: 1_000_000n,
      lastIngestMicros: 1_000_000n + BigInt(records - 1),
      sealedAtMs: 0,
      sealReason: 'size',
      status: 'sealed',
      progress: {},
    },
  };
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function collector(): { sink: Writable; bytes: () => Buffer } {
  const out: Buffer[] = [];
  return {
    sink: new Writable({
      write(c: Buffer, _e, cb) {
        out.push(c);
        cb();
      },
    }),
    bytes: () => Buffer.concat(out),
  };
}

function chunks(b: Buffer, size: number): Readable {
  const cs: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) cs.push(Buffer.from(b.subarray(i, i + size)));
  return Readable.from(cs);
}

interface ThreadCpu {
  readonly name: string;
  readonly nice: number;
  /** utime + stime, in clock ticks. */
  readonly ticks: number;
}

/** This process's threads by id: name, niceness and CPU time, from /proc. */
function threads(): Map<string, ThreadCpu> {
  const out = new Map<string, ThreadCpu>();
  for (const t of readdirSync('/proc/self/task')) {
    try {
      const name = readFileSync(`/proc/self/task/${t}/comm`, 'utf8').trim();
      const st = readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      out.set(t, { name, nice: Number(f[16]), ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out;
}

/** Niceness of this process's threads named like Node's worker threads. */
function workerThreadNices(): number[] {
  return [...threads().values()].filter((t) => t.name === 'WorkerThread').map((t) => t.nice);
}

void test('the worker makes the same archive and checksums as the bytes themselves, under any chunking', async () => {
  const { bytes, state } = segment(3000);
  const w = new ArchiveWorker({ idleMs: 60_000 });
  try {
    for (const size of [1, 777, 65_536, 1 << 20]) {
      if (size === 1 && bytes.length > 200_000) {
        // One-byte chunks of a 2.8 MB segment would take minutes of messages: a prefix segment instead.
        const small = segment(20);
        const c = collector();
        const r = await w.archive(chunks(small.bytes, 1), c.sink, { expect: small.state, level: 1 });
        assert.equal(r.inputSha256, sha(small.bytes));
        assert.deepEqual(zstdDecompressSync(c.bytes()), small.bytes);
        continue;
      }
      const c = collector();
      const r = await w.archive(chunks(bytes, size), c.sink, { expect: state, level: 1 });
      const archive = c.bytes();
      assert.equal(r.inputBytes, bytes.length);
      assert.equal(r.inputSha256, sha(bytes));
      assert.equal(r.outputBytes, archive.length);
      assert.equal(r.outputSha256, sha(archive));
      assert.deepEqual(zstdDecompressSync(archive), bytes, `chunks of ${size}`);
    }
  } finally {
    await w.close();
  }
});

void test('a corrupt frame and a state mismatch are refused as on the main thread, and the worker goes on', async () => {
  const { bytes, state } = segment(500);
  const w = new ArchiveWorker({ idleMs: 60_000 });
  try {
    const bad = Buffer.from(bytes);
    bad[bytes.length >> 1] = bad[bytes.length >> 1]! ^ 0x40;
    const c1 = collector();
    await assert.rejects(w.archive(chunks(bad, 4096), c1.sink, { expect: state, level: 1 }), (e: unknown) => {
      assert.ok(e instanceof SegmentCorruptError, String(e));
      assert.match(e.message, /^WAL segment corrupt at byte \d+: /);
      assert.ok(e.offset > 0 && e.offset <= bytes.length >> 1);
      return true;
    });
    assert.ok(c1.sink.destroyed, 'the sink of a refused segment is destroyed');
    const c2 = collector();
    await assert.rejects(
      w.archive(chunks(bytes, 4096), c2.sink, { expect: { ...state, records: 499 }, level: 1 }),
      (e: unknown) => e instanceof SegmentMismatchError && /499/.test(e.message),
    );
    // A truncated read (fewer bytes than the state records) is corruption too.
    await assert.rejects(
      w.archive(chunks(bytes.subarray(0, bytes.length - 10), 4096), collector().sink, {
        expect: state,
        level: 1,
      }),
      (e: unknown) => e instanceof SegmentCorruptError && e.reason === 'truncated',
    );
    // The same worker still serves a good segment afterwards.
    const c3 = collector();
    const r = await w.archive(chunks(bytes, 65_536), c3.sink, { expect: state, level: 1 });
    assert.equal(r.inputSha256, sha(bytes));
  } finally {
    await w.close();
  }
});

void test('a read error fails the job with that error; an abort stops it', async () => {
  const { bytes, state } = segment(2000);
  const w = new ArchiveWorker({ idleMs: 60_000 });
  try {
    const failing = new Readable({
      read() {
        this.destroy(Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' }));
      },
    });
    await assert.rejects(w.archive(failing, collector().sink, { expect: state, level: 1 }), /EIO/);
    const ac = new AbortController();
    // A source that never ends: only the abort can finish the job.
    const endless = new Readable({ read() {} });
    endless.push(bytes.subarray(0, 4096));
    const job = w.archive(endless, collector().sink, { expect: state, level: 1, signal: ac.signal });
    setTimeout(() => ac.abort(new Error('stop now')), 50);
    await assert.rejects(job, /stop now/);
    assert.ok(endless.destroyed, 'the source is destroyed');
  } finally {
    await w.close();
  }
});

void test('the hand-over is bounded: a slow sink holds the reader back', async () => {
  // Random payloads: the archive is about as large as the input, so the
  // sink's buffer is no hiding place for input bytes.
  const { bytes, state } = segment(6_000, 3000, true); // ~24 MB
  const window = 2;
  const chunk = 1 << 20;
  const w = new ArchiveWorker({ idleMs: 60_000, chunksInFlightMax: window });
  let read = 0;
  let settled = 0;
  let maxGap = 0;
  let at = 0;
  const source = new Readable({
    highWaterMark: 1,
    read() {
      if (at >= bytes.length) {
        this.push(null);
        return;
      }
      const c = Buffer.from(bytes.subarray(at, at + chunk));
      at += c.length;
      read += c.length;
      maxGap = Math.max(maxGap, read - settled);
      this.push(c);
    },
  });
  // What has reached the sink, decompressed: input the worker has wholly processed.
  const unzstd = createZstdDecompress();
  unzstd.on('data', (c: Buffer) => (settled += c.length));
  const sink = new Writable({
    highWaterMark: 64 * 1024,
    write(c: Buffer, _e, cb) {
      unzstd.write(c);
      setTimeout(cb, 3);
    },
  });
  try {
    const r = await w.archive(source, sink, { expect: state, level: 1 });
    assert.equal(r.inputBytes, bytes.length);
  } finally {
    await w.close();
  }
  // Unbounded, the reader would run ~24 MB ahead of the slow sink; bounded,
  // by the read chunk, the window of pieces and the sink's buffer.
  assert.ok(maxGap <= 8 * chunk, `read ahead of the sink by ${maxGap} bytes`);
  process.stdout.write(`# read ran ahead of the slow sink by at most ${maxGap} bytes\n`);
});

void test('the worker thread runs 10 nicer than the node, the main thread keeps its own, and it ends when idle or closed', async () => {
  const { bytes, state } = segment(200);
  const w = new ArchiveWorker({ idleMs: 200 });
  const gate = new Readable({ read() {} });
  gate.push(bytes.subarray(0, 100));
  const job = w.archive(gate, collector().sink, { expect: state, level: 1 });
  // While the job waits for more bytes, the worker thread exists: read its niceness from /proc.
  let nices: number[] = [];
  // The thread adds 10 to the node's niceness once its modules are loaded.
  const base = getPriority();
  const want = Math.min(19, base + 10);
  for (let i = 0; i < 200 && !nices.includes(want); i++) {
    await new Promise((r) => setTimeout(r, 20));
    nices = workerThreadNices();
  }
  assert.ok(nices.includes(want), `worker threads' niceness: ${nices.join(', ')}, want ${want}`);
  assert.equal(getPriority(), base, 'the main thread keeps its priority');
  gate.push(bytes.subarray(100));
  gate.push(null);
  await job;
  assert.equal(w.running, true);
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(w.running, false, 'the idle worker ended');
  // A closed worker refuses new jobs.
  await w.close();
  await assert.rejects(
    w.archive(chunks(bytes, 4096), collector().sink, { expect: state, level: 1 }),
    ArchiveWorkerError,
  );
});

void test("the compression runs on the niced worker thread too, not on libuv's pool at the node's priority", async () => {
  const base = getPriority();
  // The pool's threads start with the first call that needs them, at the
  // priority of the thread making it: in a node that is the main thread
  // (the WAL's file calls). Start them here the same way, or a pool first
  // used by the niced worker would be niced too and hide what this checks.
  await readFile('/proc/self/stat');
  const pool = [...threads().values()].filter((t) => t.name === 'libuv-worker');
  assert.ok(pool.length > 0, 'the libuv pool threads are there (named libuv-worker)');
  for (const t of pool) assert.equal(t.nice, base, "the pool runs at the node's priority");
  // NDJSON events at level 9: zstd is most of the job's CPU (~0.1 s).
  const lines = ndjsonSample(8 * 1024 * 1024)
    .toString()
    .trimEnd()
    .split('\n');
  const { bytes, state } = segment(
    lines.length,
    0,
    false,
    lines.map((l) => Buffer.from(l)),
  );
  const w = new ArchiveWorker({ idleMs: 60_000 });
  try {
    // Warm up (the worker's start and module loading are not the point).
    const small = segment(20);
    await w.archive(chunks(small.bytes, 4096), collector().sink, { expect: small.state, level: 1 });
    const before = threads();
    const c = collector();
    const r = await w.archive(chunks(bytes, 1 << 20), c.sink, { expect: state, level: 9 });
    const after = threads();
    assert.deepEqual(zstdDecompressSync(c.bytes()), bytes);
    assert.ok(r.outputBytes < bytes.length / 4);
    const gained = (pick: (t: ThreadCpu) => boolean): number => {
      let sum = 0;
      for (const [id, t] of after) if (pick(t)) sum += t.ticks - (before.get(id)?.ticks ?? 0);
      return sum;
    };
    const niced = gained((t) => t.name === 'WorkerThread' && t.nice === Math.min(19, base + 10));
    const poolTicks = gained((t) => t.name === 'libuv-worker');
    process.stdout.write(`# CPU ticks: worker thread ${niced}, libuv pool ${poolTicks}\n`);
    // zstd on the pool (a node:zlib stream) put most of the job there.
    assert.ok(niced > 0 && poolTicks * 4 <= niced, `worker thread ${niced} ticks, pool ${poolTicks}`);
  } finally {
    await w.close();
  }
});

void test('a worker that dies fails its job as retryable (ArchiveWorkerError) and the next job starts a new one', async () => {
  const { bytes, state } = segment(300);
  const w = new ArchiveWorker({ idleMs: 60_000 });
  try {
    const gate = new Readable({ read() {} });
    gate.push(bytes.subarray(0, 100));
    const job = w.archive(gate, collector().sink, { expect: state, level: 1 });
    for (let i = 0; i < 200 && w.threadId === undefined; i++) await new Promise((r) => setTimeout(r, 10));
    const first = w.threadId;
    assert.ok(first !== undefined);
    await w.terminateWorker();
    await assert.rejects(job, ArchiveWorkerError);
    const c = collector();
    const r = await w.archive(chunks(bytes, 4096), c.sink, { expect: state, level: 1 });
    assert.equal(r.inputSha256, sha(bytes));
    assert.notEqual(w.threadId, first, 'a new worker thread');
  } finally {
    await w.close();
  }
});

/** The job segmentArchiveProducer gets for a segment file (it reads the file itself, nothing else). */
function archiveJob(
  segment: SealedSegment,
  segmentPath: string,
  scratchDir: string,
  fs: FileSystem,
): SegmentJob {
  return {
    segment,
    ref: { endpoint: 'e', instance: 'e-0', epoch: 'EPOCH1', segmentId: 7n },
    prefix: '',
    scratchDir,
    fs,
    signal: new AbortController().signal,
    segmentPath,
    openSegment: () => {
      throw new Error('the archive producer reads the file itself');
    },
    records: () => {
      throw new Error('unused');
    },
  };
}

void test('segmentArchiveProducer through the real disk: archive file, checksums and close', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'lf-archive-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const { bytes, state } = segment(1500);
  const segPath = path.join(dir, state.fileName);
  await writeFile(segPath, Buffer.concat([bytes, Buffer.from('tail beyond the sealed bytes')]));
  const scratch = path.join(dir, 'scratch');
  const producer = segmentArchiveProducer();
  // The real disk, with the segment's read buffers kept to look at afterwards.
  const disk = new NodeFileSystem();
  const reads: Uint8Array[] = [];
  const bound = <T extends object>(t: T, k: string | symbol): unknown => {
    const v: unknown = Reflect.get(t, k);
    return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
  };
  const fs = new Proxy(disk, {
    get: (t, k) =>
      k === 'open'
        ? async (p: string, mode: OpenMode): Promise<FileHandle> => {
            const h = await t.open(p, mode);
            if (p !== segPath) return h;
            return new Proxy(h, {
              get: (ht, hk) =>
                hk === 'read'
                  ? (buf: Uint8Array, off: number, len: number, pos: number) => {
                      reads.push(buf);
                      return ht.read(buf, off, len, pos);
                    }
                  : bound(ht, hk),
            });
          }
        : bound(t, k),
  });
  await mkdir(scratch);
  const job = archiveJob(state, segPath, scratch, fs);
  const out = await producer.produce(job);
  await producer.close();
  assert.deepEqual(out.segment, { bytes: bytes.length, sha256: sha(bytes) });
  const [f] = out.files;
  assert.ok(f !== undefined);
  const archive = await readFile(f.path);
  assert.equal(f.bytes, archive.length);
  assert.equal(f.sha256, sha(archive));
  assert.deepEqual(zstdDecompressSync(archive), bytes);
  assert.deepEqual(await readdir(scratch), [path.basename(f.path)]);
  // Read in the worker's piece size, each buffer moved to the worker as it
  // was read (detached here): no copy, and no garbage on this thread.
  assert.ok(reads.length >= Math.ceil(bytes.length / archivePieceBytes), `${reads.length} reads`);
  for (const b of reads.slice(0, -1)) assert.equal(b.byteLength, 0, 'a read buffer was moved, not copied');
});

void test('the worker hands each piece buffer back and the next reads go into it: a segment read leaves no garbage, the archive is the same', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'lf-archive-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const worker = new ArchiveWorker();
  let supplied = 0;
  let asked = 0;
  const readBuffer = worker.readBuffer.bind(worker);
  worker.readBuffer = (bytes: number): Buffer | undefined => {
    asked++;
    const b = readBuffer(bytes);
    if (b !== undefined) {
      assert.equal(b.byteLength, archivePieceBytes);
      supplied++;
    }
    return b;
  };
  const producer = segmentArchiveProducer({ worker });
  // Random payloads: a piece read into a buffer the worker still used would change the archive.
  for (const [k, records] of [12_000, 10_000].entries()) {
    const { bytes, state } = segment(records, 900, true);
    const segPath = path.join(dir, `${k}-${state.fileName}`);
    await writeFile(segPath, bytes);
    const scratch = path.join(dir, `scratch-${k}`);
    await mkdir(scratch);
    const out = await producer.produce(archiveJob(state, segPath, scratch, new NodeFileSystem()));
    assert.deepEqual(out.segment, { bytes: bytes.length, sha256: sha(bytes) });
    const archive = await readFile(out.files[0]!.path);
    assert.deepEqual(zstdDecompressSync(archive), bytes);
  }
  await producer.close();
  // Every read asked; fresh buffers are a few per job (the window in flight,
  // the stream's read-ahead and the read under way, before any came back),
  // not one per piece.
  assert.ok(asked >= 25, `${asked} reads`);
  assert.ok(supplied >= asked - 8, `${supplied} of ${asked} reads into handed-back buffers`);
});
