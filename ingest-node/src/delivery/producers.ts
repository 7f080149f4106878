// What the delivery pipeline makes out of one sealed segment, as a list of
// artifact producers. Each producer reads the segment (exactly the `bytes`
// the state file records), writes local files into a scratch folder of its
// own and describes them; the pipeline uploads them under their
// deterministic keys, records them in the segment's progress and, once every
// producer is done, writes the commit marker that lists them all.
//
// Today there is one producer, the `.wal.zst` archive. Raw, view and DLQ
// Parquet (views/materialize.ts) become one more entry in the list: a
// producer whose produce() feeds `job.records()` to materializeSegment and
// returns its files with rawKey/viewKey/dlqKey keys and `views` spec hashes.
import path from 'node:path';
import { pipeline as streamPipeline, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { NodeFileSystem } from '../fs/node.ts';
import { fileReadStream, fileWriteStream } from '../fs/streams.ts';
import type { FileSystem } from '../fs/types.ts';
import { HashTap } from '../store/hashing.ts';
import { readSegmentBatches, readSegmentStream, type WalRecord } from '../wal/format.ts';
import type { SealedSegment } from '../wal/types.ts';
import { ArchiveWorker, archivePieceBytes } from './archive-worker.ts';
import { zstdLevel } from './compress.ts';
import { segmentKey, type ArtifactKind, type SegmentRef } from './keys.ts';
import type { MarkerView } from './marker.ts';
import { SegmentVerifier } from './segment-verifier.ts';
import { contentTypes } from './upload.ts';

/** One sealed segment, as a producer sees it. */
export interface SegmentJob {
  readonly segment: SealedSegment;
  /** The identity its keys are made of (the segment's own epoch). */
  readonly ref: SegmentRef;
  /** Bucket prefix (normalised). */
  readonly prefix: string;
  /** A fresh, empty folder for this producer's files; the pipeline removes it afterwards. */
  readonly scratchDir: string;
  /**
   * The filesystem the segment and scratchDir live on (the WAL's). Files a
   * producer writes into scratchDir go through it, so the power-cut tests
   * cover them; the pipeline reads every ProducedFile through it too.
   */
  readonly fs: FileSystem;
  readonly signal: AbortSignal;
  /**
   * The exact sealed bytes (`segment.bytes` of them), checked as they stream:
   * every frame's CRC, gap-free seqs, a final batch end, the header's id and
   * epoch, and the record count and seqs the state file recorded. A mismatch
   * fails the stream with SegmentCorruptError; the pipeline then quarantines.
   */
  openSegment(): Readable;
  /** The records of the same verified stream, in seq order. */
  records(): AsyncIterable<WalRecord>;
  /**
   * The segment file on the real disk, and the record bound its frames are
   * checked against: for a producer that reads it in another process
   * (parquet/isolated.ts), which cannot use `fs`.
   */
  readonly segmentPath: string;
  readonly recordBytesMax?: number;
}

/** A local file ready to upload, and what the marker will say about it. */
export interface ProducedFile {
  readonly kind: ArtifactKind;
  /** Set exactly for `view` and `dlq` files. */
  readonly view?: string;
  readonly key: string;
  readonly path: string;
  readonly bytes: number;
  readonly sha256: string;
  /** Records (segment archive) or Parquet rows. */
  readonly rows: number;
  readonly contentType: string;
}

export interface ProducedArtifacts {
  readonly files: readonly ProducedFile[];
  /**
   * Size and sha256 of the exact sealed segment, when this producer read all
   * of it: the marker's `segment` field. Without any producer that reports it
   * the pipeline hashes the segment itself.
   */
  readonly segment?: { readonly bytes: number; readonly sha256: string };
  /** View specs applied (the marker's `views`), including views that produced no file. */
  readonly views?: readonly MarkerView[];
}

export interface ArtifactProducer {
  /** Unique within a pipeline; names this producer's progress in state.json, so keep it stable. */
  readonly kind: string;
  produce(job: SegmentJob): Promise<ProducedArtifacts>;
}

export { SegmentCheck, SegmentMismatchError, SegmentVerifier, isSegmentDefect } from './segment-verifier.ts';

const realDisk = new NodeFileSystem();

/**
 * Reads exactly `segment.bytes` of the file: a longer file's tail is not the
 * segment's. `chunkBytes` sets the read size (default 1 MiB).
 */
export function openSegmentFile(
  file: string,
  segment: SealedSegment,
  fs: FileSystem = realDisk,
  chunkBytes?: number,
  takeBuffer?: (bytes: number) => Buffer | undefined,
): Readable {
  return fileReadStream(fs, file, {
    start: 0,
    end: Math.max(0, segment.bytes - 1),
    ...(chunkBytes !== undefined ? { chunkBytes } : {}),
    ...(takeBuffer !== undefined ? { takeBuffer } : {}),
  });
}

/**
 * The segment file's exact bytes through a SegmentVerifier. The callback form
 * of pipeline() forwards a read error (ENOENT, EIO) to the returned stream,
 * which pipe() would not.
 */
export function openVerifiedSegment(
  file: string,
  segment: SealedSegment,
  recordBytesMax?: number,
  fs: FileSystem = realDisk,
): Readable {
  const verifier = new SegmentVerifier(segment, recordBytesMax !== undefined ? { recordBytesMax } : {});
  return streamPipeline(openSegmentFile(file, segment, fs), verifier, () => {});
}

/** The records of a verified segment stream, in seq order. */
export function segmentRecords(source: Readable, recordBytesMax?: number): AsyncIterable<WalRecord> {
  return readSegmentStream(
    source as AsyncIterable<Uint8Array>,
    recordBytesMax !== undefined ? { recordBytesMax } : {},
  );
}

/** segmentRecords a chunk's records at a time (wal/format.ts readSegmentBatches). */
export function segmentRecordBatches(source: Readable, recordBytesMax?: number): AsyncIterable<WalRecord[]> {
  return readSegmentBatches(
    source as AsyncIterable<Uint8Array>,
    recordBytesMax !== undefined ? { recordBytesMax } : {},
  );
}

/** Size and sha256 of the verified segment bytes, for pipelines without an archive producer. */
export async function hashSegment(job: SegmentJob): Promise<{ bytes: number; sha256: string }> {
  const tap = new HashTap();
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  await pipeline(job.openSegment(), tap, sink, { signal: job.signal });
  return { bytes: tap.bytes, sha256: tap.sha256 };
}

export interface SegmentArchiveOptions {
  /** zstd level; default compress.ts zstdLevel (1, measured). */
  readonly level?: number;
  /**
   * Where the verification, hashing and compression run: by default a worker
   * thread of this producer's own at a lower priority (archive-worker.ts);
   * pass one to share it or set its options.
   */
  readonly worker?: ArchiveWorker;
}

/** An ArtifactProducer with resources to release (the archive's worker thread). */
export interface ClosableProducer extends ArtifactProducer {
  close(): Promise<void>;
}

/**
 * `segments/…/{segmentId}.wal.zst`: zstd (one frame, content checksum) of the
 * exact sealed bytes, verified frame by frame on the way through, with the
 * sha256 of both sides from the same pass, all three on a worker thread
 * (archive-worker.ts); this thread reads the segment and writes the archive
 * through `job.fs`. The file is scratch: no fsync, a crash simply compresses
 * again (level 1 takes ~0.2 s for 64 MiB).
 */
export function segmentArchiveProducer(opts: SegmentArchiveOptions = {}): ClosableProducer {
  const worker = opts.worker ?? new ArchiveWorker();
  return {
    kind: 'segment',
    async produce(job) {
      const file = path.join(job.scratchDir, `${job.ref.segmentId.toString().padStart(20, '0')}.wal.zst`);
      const r = await worker.archive(
        // Reads of the worker's piece size, into the buffers it hands back:
        // each read buffer is moved to the worker as it is and returns,
        // neither copied nor left as this thread's garbage.
        openSegmentFile(job.segmentPath, job.segment, job.fs, archivePieceBytes, (bytes) =>
          worker.readBuffer(bytes),
        ),
        fileWriteStream(job.fs, file),
        {
          expect: job.segment,
          level: opts.level ?? zstdLevel,
          signal: job.signal,
          ...(job.recordBytesMax !== undefined ? { recordBytesMax: job.recordBytesMax } : {}),
        },
      );
      return {
        files: [
          {
            kind: 'segment',
            key: segmentKey(job.prefix, job.ref),
            path: file,
            bytes: r.outputBytes,
            sha256: r.outputSha256,
            rows: job.segment.records,
            contentType: contentTypes.segment,
          },
        ],
        segment: { bytes: r.inputBytes, sha256: r.inputSha256 },
      };
    },
    close: () => worker.close(),
  };
}
