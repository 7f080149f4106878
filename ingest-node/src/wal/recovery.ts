// What openWal does before it accepts a write: establish the epoch, load the
// state file, and bring every segment file to a known state. The rules (and
// the corruption table they implement) are in docs/wal-format.md "Recovery".
import path from 'node:path';
import type { FileSystem } from '../fs/types.ts';
import { errorCode } from '../fs/types.ts';
import { mkdirDurable, writeFileAtomic } from '../fs/durable.ts';
import type { Clock } from '../clock.ts';
import type { Logger } from '../log.ts';
import { EPOCH_PATTERN, newEpoch } from './epoch.ts';
import {
  SEGMENT_HEADER_BYTES_MAX,
  checkFrame,
  FrameFlags,
  findGroupStart,
  frameSeqNumber,
  ownTailEnd,
  scanSegment,
} from './format.ts';
import { STATE_FILE, WalState } from './state.ts';
import type { RecoveryReport, SealedSegment } from './types.ts';

export const EPOCH_FILE = 'epoch';
export const QUARANTINE_DIR = 'quarantine';

/**
 * What quarantine/ holds now: `segments` are corrupt segments (acknowledged
 * data a human must look at: nothing may delete the volume under them),
 * `tails` the copies recovery keeps of truncated tails (torn, unacknowledged
 * groups after a crash; kept for forensics). A missing folder is 0/0; a
 * folder that cannot be read is -1/-1 (unknown: callers treat it as "not empty").
 */
export async function quarantineCounts(
  fs: Pick<FileSystem, 'readdir'>,
  walDir: string,
): Promise<{ segments: number; tails: number }> {
  try {
    const names = await fs.readdir(path.join(walDir, QUARANTINE_DIR));
    const tails = names.filter((n) => n.endsWith('.tail')).length;
    return { segments: names.length - tails, tails };
  } catch (err) {
    const n = errorCode(err) === 'ENOENT' ? 0 : -1;
    return { segments: n, tails: n };
  }
}
const SEGMENT_FILE = /^(\d{20})\.wal$/;
/**
 * A delivered segment's file kept for reuse (docs/wal-format.md, "Recycled
 * segment files"): named after the segment it held, with an extension no
 * reader of segments matches.
 */
const FREE_FILE = /^(\d{20})\.free$/;

export function freeFileName(id: bigint): string {
  return `${id.toString().padStart(20, '0')}.free`;
}

export function segmentFileName(id: bigint): string {
  return `${id.toString().padStart(20, '0')}.wal`;
}

export function parseSegmentFileName(name: string): bigint | undefined {
  const m = SEGMENT_FILE.exec(name);
  return m === null ? undefined : BigInt(m[1]!);
}

export interface RecoveryContext {
  readonly fs: FileSystem;
  readonly dir: string;
  readonly clock: Clock;
  readonly log: Logger;
  readonly recordBytesMax: number;
  /**
   * wal.pipelineDepth: at most this many write groups were written and not
   * acknowledged at a crash, so a bad frame with more valid groups after it
   * is damage to synced data (quarantined), never a torn tail.
   */
  readonly pipelineDepth: number;
  /** wal.recycleSegmentsMax: free files kept beyond it (the setting was lowered) are removed. */
  readonly recycleSegmentsMax: number;
  readonly randomBytes: (n: number) => Uint8Array;
}

export interface Recovered {
  readonly state: WalState;
  readonly nextSegmentId: bigint;
  readonly nextSeq: number;
  readonly lastIngestMicros: number;
  readonly report: RecoveryReport;
  /** Free files (names in the WAL dir) a new segment may take, lowest id first. */
  readonly freeFiles: string[];
}

interface Report {
  created: boolean;
  epochRotated: boolean;
  recoveredSegments: number;
  truncations: {
    fileName: string;
    fromBytes: number;
    toBytes: number;
    tail: string;
    copiedTo?: string;
  }[];
  quarantined: { fileName: string; reason: string }[];
  removedEmpty: string[];
  missing: string[];
}

export async function recoverWalDir(ctx: RecoveryContext): Promise<Recovered> {
  const { fs, dir, log } = ctx;
  const report: Report = {
    created: await mkdirDurable(fs, dir),
    epochRotated: false,
    recoveredSegments: 0,
    truncations: [],
    quarantined: [],
    removedEmpty: [],
    missing: [],
  };
  const names = await fs.readdir(dir);
  let dirDirty = false;
  for (const name of names) {
    // Leftovers of an atomic write cut short: the target still holds the old version.
    if (name.endsWith('.tmp')) {
      await fs.unlink(path.join(dir, name)).catch(() => {});
      dirDirty = true;
    }
  }
  const segments = names
    .map((name) => ({ name, id: parseSegmentFileName(name) }))
    .filter((s): s is { name: string; id: bigint } => s.id !== undefined)
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

  // --- epoch and state -------------------------------------------------------
  const epochFile = await readEpochFile(fs, dir, log);
  let state: WalState | undefined;
  let stateProblem: string | undefined;
  try {
    state = WalState.parse(await fs.readFile(path.join(dir, STATE_FILE)));
  } catch (err) {
    if (errorCode(err) === 'ENOENT') stateProblem = 'missing';
    else {
      stateProblem = `unreadable (${(err as Error).message})`;
      await quarantineFile(ctx, STATE_FILE, stateProblem);
      report.quarantined.push({ fileName: STATE_FILE, reason: stateProblem });
    }
  }
  if (state !== undefined && (epochFile === undefined || epochFile === state.epoch)) {
    if (epochFile === undefined) {
      log.warn({ dir, epoch: state.epoch }, 'WAL epoch file missing; restored from the state file');
      await writeEpochFile(fs, dir, state.epoch, ctx.clock.nowMs());
    }
  } else {
    // A fresh directory gets its first epoch. A directory that lost its state
    // (or whose state disagrees with its epoch) also gets a new one: without
    // the state's high-water marks, segment ids and seqs could repeat, and a
    // new epoch keeps repeated ids from ever colliding in S3.
    const fresh = epochFile === undefined && stateProblem === 'missing' && segments.length === 0;
    const epoch = newEpoch(ctx.clock.nowMs(), ctx.randomBytes);
    await writeEpochFile(fs, dir, epoch, ctx.clock.nowMs());
    if (!fresh) {
      report.epochRotated = true;
      log.warn(
        { dir, oldEpoch: epochFile ?? state?.epoch, epoch, state: stateProblem ?? 'epoch mismatch' },
        'WAL state lost or inconsistent: starting a new epoch',
      );
    }
    if (state === undefined) state = new WalState(epoch);
    else state.epoch = epoch;
  }

  // --- free files ---------------------------------------------------------------
  // Kept only while the state that orders seqs is the one they were freed
  // under: their stale frames are told from data by seq (below the next
  // expected one), which a new epoch's restarted bookkeeping cannot promise.
  const freeFiles: string[] = [];
  const freeNames = names.filter((n) => FREE_FILE.test(n)).sort();
  for (const name of freeNames) {
    if (!report.epochRotated && stateProblem === undefined && freeFiles.length < ctx.recycleSegmentsMax) {
      freeFiles.push(name);
      continue;
    }
    await fs.unlink(path.join(dir, name));
    dirDirty = true;
  }

  // --- segment files ------------------------------------------------------------
  const onDisk = new Set(segments.map((s) => s.name));
  for (const seg of [...state.segments.values()]) {
    if (onDisk.has(seg.fileName)) continue;
    state.segments.delete(seg.id);
    if (seg.status === 'delivered') continue; // deleted after delivery; the state update was cut short
    report.missing.push(seg.fileName);
    log.error(
      {
        dir,
        fileName: seg.fileName,
        records: seg.records,
        firstSeq: String(seg.firstSeq),
        lastSeq: String(seg.lastSeq),
      },
      'sealed WAL segment is missing from disk: its records were not delivered',
    );
  }
  let maxFileId = 0n;
  let seqSeenMax = 0;
  // The segment open at the crash can only be the highest id on disk: the
  // writer drains its pipeline and seals a segment before it creates the next.
  // Only there may several write groups have been unsynced at once.
  const openId = segments.at(-1)?.id;
  // The seq the next segment's first frame must have. Seqs are gap-free per
  // instance and a segment's first seq is one past the previous segment's
  // last (or past seqHighWater, written at every open before any segment is
  // created): every earlier segment is either recorded in the state
  // (seqHighWater covers it) or still on disk and scanned first, in id order.
  // Without a trusted state it is only a lower bound, from what is on disk.
  const stateTrusted = stateProblem === undefined && !report.epochRotated;
  let nextSeq: number | undefined = stateTrusted ? Number(state.seqHighWater) + 1 : undefined;
  const seen = (lastSeq: number): void => {
    nextSeq = Math.max(nextSeq ?? 0, lastSeq + 1);
  };
  for (const { name, id } of segments) {
    if (id > maxFileId) maxFileId = id;
    const file = path.join(dir, name);
    if (state.discard.has(name)) {
      // Abandoned after a failed write, before it held an acknowledged record.
      await fs.unlink(file);
      dirDirty = true;
      report.removedEmpty.push(name);
      continue;
    }
    const known = state.segments.get(id);
    if (known !== undefined) {
      seen(Number(known.lastSeq));
      const size = (await fs.stat(file)).size;
      if (size < known.bytes) {
        state.segments.delete(id);
        await quarantineFile(ctx, name, `sealed segment is ${size} bytes, state says ${known.bytes}`);
        report.quarantined.push({ fileName: name, reason: 'shorter than sealed' });
      } else if (size > known.bytes) {
        // Sealed at a write failure whose truncate failed: the tail is that
        // failed group, which must stay invisible.
        // A seal whose truncate of a recycled file failed leaves an older
        // segment's stale frames there too: copy only what may be this one's.
        const tailBytes = await readTail(fs, file, known.bytes, size);
        const own = ownTailEnd(tailBytes, 0, Number(known.lastSeq) + 1, ctx.recordBytesMax);
        const copiedTo = await copyTailToQuarantine(ctx, name, tailBytes.subarray(0, own), known.bytes);
        await truncateFile(fs, file, known.bytes);
        report.truncations.push({
          fileName: name,
          fromBytes: size,
          toBytes: known.bytes,
          tail: 'abandoned',
          ...(copiedTo !== undefined ? { copiedTo } : {}),
        });
        log.warn(
          { dir, fileName: name, fromBytes: size, toBytes: known.bytes },
          'truncated abandoned tail of sealed WAL segment',
        );
      }
      continue;
    }
    // Not recorded as sealed: it was open at the crash (or its seal's state
    // write was cut short). Scan it.
    const bytes = await fs.readFile(file);
    const scan = scanSegment(bytes, {
      recordBytesMax: ctx.recordBytesMax,
      ...(nextSeq !== undefined ? { firstSeq: nextSeq, firstSeqExact: stateTrusted } : {}),
    });
    if (scan.header === undefined) {
      if (scan.corruptAt === undefined && bytes.length <= SEGMENT_HEADER_BYTES_MAX) {
        // Cut while being created: no record can have been acknowledged in it.
        await fs.unlink(file);
        dirDirty = true;
        report.removedEmpty.push(name);
        log.warn(
          { dir, fileName: name, defect: scan.headerDefect, bytes: bytes.length },
          'removed WAL segment with a torn header',
        );
      } else if (
        id === openId &&
        // Within the pipeline's reach: the header goes with the first group's
        // sync, so at most pipelineDepth groups (that one included) were
        // unsynced; a file with more is a synced segment whose header rotted.
        groupStartsAfter(bytes, 0, ctx.recordBytesMax, ctx.pipelineDepth + 1, scan.newSeqMin) <=
          ctx.pipelineDepth
      ) {
        // The open segment's header is synced only by its first group's
        // fdatasync; the disk may have written later pages and not the
        // header's. No group of it was acknowledged then: a torn tail (the
        // whole file), kept in quarantine/ and removed.
        const copiedTo = await copyTailToQuarantine(ctx, name, bytes, 0);
        await fs.unlink(file);
        dirDirty = true;
        report.removedEmpty.push(name);
        report.truncations.push({
          fileName: name,
          fromBytes: bytes.length,
          toBytes: 0,
          tail: 'torn-groups',
          ...(copiedTo !== undefined ? { copiedTo } : {}),
        });
        log.warn(
          { dir, fileName: name, defect: scan.headerDefect, bytes: bytes.length, copiedTo },
          'removed the open WAL segment: its header never reached the disk',
        );
      } else {
        seqSeenMax = Math.max(seqSeenMax, maxValidSeq(bytes, 0, ctx.recordBytesMax));
        seen(seqSeenMax);
        const reason = `segment header ${scan.headerDefect ?? 'bad'} with data after it`;
        await quarantineFile(ctx, name, reason);
        report.quarantined.push({ fileName: name, reason });
      }
      continue;
    }
    // A bad frame followed by a valid later group start: in a sealed (but
    // unrecorded) segment every group was synced, so that is damage to synced
    // data. In the open segment the pipelined writer writes group N+1 while
    // group N's fdatasync runs, so the disk may have kept N+1 and not all of
    // N: neither was acknowledged (acks wait for N's sync), and it is a torn
    // tail like any other: cut at the last batch end, with a copy kept.
    // Only within the pipeline's reach: group N torn means at most
    // pipelineDepth − 1 later groups were written after it; with more after
    // the bad frame, synced (acknowledged) groups follow it, which is damage,
    // not a crash (and the highest segment on disk may be a sealed one whose
    // seal's state write was cut short, every group of it synced).
    const tornGroups =
      scan.corruptAt !== undefined &&
      id === openId &&
      groupStartsAfter(bytes, scan.corruptAt + 1, ctx.recordBytesMax, ctx.pipelineDepth, scan.newSeqMin) <
        ctx.pipelineDepth;
    if ((scan.corruptAt !== undefined && !tornGroups) || scan.header.segmentId !== id) {
      seqSeenMax = Math.max(seqSeenMax, maxValidSeq(bytes, scan.header.headerBytes, ctx.recordBytesMax));
      seen(seqSeenMax);
      const reason =
        scan.corruptAt !== undefined
          ? `bad frame (${scan.defect ?? 'bad'}) at byte ${scan.corruptAt} followed by a later write group`
          : `header says segment ${scan.header.segmentId}`;
      await quarantineFile(ctx, name, reason);
      report.quarantined.push({ fileName: name, reason });
      continue;
    }
    if (scan.goodBytes < bytes.length) {
      // A tail is usually an unacknowledged group cut by the crash, but on a
      // disk without atomic page writes a torn page can also damage the end
      // of an acknowledged group, which then looks the same. Never cut bytes
      // that might be someone's data without keeping a copy.
      // In a recycled file the tail also holds an older segment's stale
      // frames: those are not copied (megabytes at every restart), only what
      // may be this segment's own bytes.
      const own = ownTailEnd(bytes, scan.goodBytes, scan.newSeqMin, ctx.recordBytesMax);
      const copiedTo = await copyTailToQuarantine(
        ctx,
        name,
        bytes.subarray(scan.goodBytes, own),
        scan.goodBytes,
      );
      await truncateFile(fs, file, scan.goodBytes);
      const tail = tornGroups
        ? 'torn-groups'
        : own === scan.goodBytes && scan.tail === 'stale'
          ? 'stale'
          : scan.tail;
      report.truncations.push({
        fileName: name,
        fromBytes: bytes.length,
        toBytes: scan.goodBytes,
        tail,
        ...(copiedTo !== undefined ? { copiedTo } : {}),
      });
      log.warn(
        {
          dir,
          fileName: name,
          tail,
          defect: scan.defect,
          fromBytes: bytes.length,
          toBytes: scan.goodBytes,
          records: scan.records,
          copiedTo,
        },
        'truncated WAL segment tail to the last complete batch',
      );
    }
    if (scan.records === 0) {
      await fs.unlink(file);
      dirDirty = true;
      report.removedEmpty.push(name);
      continue;
    }
    const sealed: SealedSegment = {
      id,
      epoch: scan.header.epoch,
      fileName: name,
      bytes: scan.goodBytes,
      records: scan.records,
      firstSeq: scan.firstSeq!,
      lastSeq: scan.lastSeq!,
      firstIngestMicros: scan.firstIngestMicros!,
      lastIngestMicros: scan.lastIngestMicros!,
      sealedAtMs: ctx.clock.nowMs(),
      sealReason: 'recovery',
      status: 'sealed',
      progress: {},
    };
    state.addSegment(sealed);
    seen(Number(sealed.lastSeq));
    report.recoveredSegments++;
  }
  state.discard.clear();
  for (const q of report.quarantined) state.addQuarantined({ ...q, atMs: ctx.clock.nowMs() });
  if (dirDirty) await fs.syncDir(dir);
  if (maxFileId > state.segmentIdHighWater) state.segmentIdHighWater = maxFileId;
  if (BigInt(seqSeenMax) > state.seqHighWater) state.seqHighWater = BigInt(seqSeenMax);
  if (state.seqHighWater >= BigInt(Number.MAX_SAFE_INTEGER)) throw new Error('WAL seq space exhausted');
  let lastIngestMicros = 0;
  for (const s of state.segments.values())
    lastIngestMicros = Math.max(lastIngestMicros, Number(s.lastIngestMicros));
  // The state is written at every open, so it always exists after the first.
  await writeFileAtomic(fs, path.join(dir, STATE_FILE), state.serializeParts(ctx.clock.nowMs()));
  const r: RecoveryReport = report;
  log.info(
    {
      dir,
      epoch: state.epoch,
      created: r.created,
      epochRotated: r.epochRotated,
      sealedSegments: state.segments.size,
      recoveredSegments: r.recoveredSegments,
      truncations: r.truncations.length,
      quarantined: r.quarantined.length,
    },
    'WAL opened',
  );
  return {
    state,
    nextSegmentId: state.segmentIdHighWater + 1n,
    nextSeq: Number(state.seqHighWater) + 1,
    lastIngestMicros,
    report: r,
    freeFiles,
  };
}

async function readEpochFile(fs: FileSystem, dir: string, log: Logger): Promise<string | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await fs.readFile(path.join(dir, EPOCH_FILE));
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const doc = JSON.parse(new TextDecoder().decode(bytes)) as { epoch?: unknown };
    if (typeof doc.epoch === 'string' && EPOCH_PATTERN.test(doc.epoch)) return doc.epoch;
  } catch {
    // fall through
  }
  log.error({ dir }, 'WAL epoch file unreadable');
  return undefined;
}

async function writeEpochFile(fs: FileSystem, dir: string, epoch: string, nowMs: number): Promise<void> {
  const doc = JSON.stringify({ epoch, createdAtMs: nowMs, formatVersion: 1 }) + '\n';
  await writeFileAtomic(fs, path.join(dir, EPOCH_FILE), new TextEncoder().encode(doc));
}

async function truncateFile(fs: FileSystem, file: string, length: number): Promise<void> {
  const fh = await fs.open(file, 'readWrite');
  try {
    await fh.truncate(length);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Moves a file out of the WAL dir into quarantine/, never deleting it. The
 * name keeps the original and, if that is taken, gains a timestamp.
 */
export async function quarantineFile(
  ctx: Pick<RecoveryContext, 'fs' | 'dir' | 'clock' | 'log'>,
  name: string,
  reason: string,
): Promise<string> {
  const { fs, dir } = ctx;
  const qdir = path.join(dir, QUARANTINE_DIR);
  await mkdirDurable(fs, qdir);
  let target = path.join(qdir, name);
  try {
    await fs.stat(target);
    target = path.join(qdir, `${name}.${ctx.clock.nowMs()}`);
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') throw err;
  }
  await fs.rename(path.join(dir, name), target);
  await fs.syncDir(qdir);
  await fs.syncDir(dir);
  ctx.log.error({ dir, fileName: name, quarantinedAs: target, reason }, 'WAL file quarantined');
  return target;
}

/**
 * Copies a tail about to be cut (`tail`, which starts at byte `at` of the
 * file) to quarantine/<name>.<at>-<end>.tail, durably, before the caller
 * truncates. An all-zero tail (the size reached the disk, the data did not)
 * holds nothing and is not copied. Returns the copy's path, if one was made.
 */
export async function copyTailToQuarantine(
  ctx: Pick<RecoveryContext, 'fs' | 'dir' | 'log'>,
  name: string,
  tail: Uint8Array,
  at: number,
): Promise<string | undefined> {
  let zero = true;
  for (let i = 0; i < tail.length && zero; i++) zero = tail[i] === 0;
  if (zero) return undefined;
  const qdir = path.join(ctx.dir, QUARANTINE_DIR);
  const end = at + tail.length;
  const target = path.join(qdir, `${name}.${at}-${end}.tail`);
  try {
    await mkdirDurable(ctx.fs, qdir);
    await writeFileAtomic(ctx.fs, target, tail);
  } catch (err) {
    // A full volume must not keep the node from starting: the truncation is
    // what frees the space, and delivery then drains the backlog. The copy is
    // forensics; losing it is logged loudly, never a crash loop.
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOSPC' && code !== 'EDQUOT') throw err; // (writeFileAtomic removed its temp file)
    ctx.log.error(
      { dir: ctx.dir, fileName: name, fromBytes: at, toBytes: end, err },
      'no space to copy a WAL segment tail to quarantine; truncating it without a copy',
    );
    return undefined;
  }
  ctx.log.warn(
    { dir: ctx.dir, fileName: name, fromBytes: at, toBytes: end, copiedTo: target },
    'copied a WAL segment tail to quarantine before truncating it',
  );
  return target;
}

async function readTail(fs: FileSystem, file: string, from: number, size: number): Promise<Uint8Array> {
  const fh = await fs.open(file, 'read');
  try {
    const buf = new Uint8Array(size - from);
    let got = 0;
    while (got < buf.length) {
      const n = await fh.read(buf, got, buf.length - got, from + got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  } finally {
    await fh.close();
  }
}

/**
 * Valid group-start frames at or after `from` (in valid chains) with a seq of
 * at least `seqMin`, counted up to `limit`. Lower seqs are a recycled file's
 * stale frames: they prove nothing about this segment.
 */
function groupStartsAfter(
  bytes: Uint8Array,
  from: number,
  recordBytesMax: number,
  limit: number,
  seqMin: number,
): number {
  let n = 0;
  let p = findGroupStart(bytes, from, seqMin, recordBytesMax);
  while (p >= 0) {
    let q = p;
    let end = checkFrame(bytes, q, recordBytesMax);
    while (end >= 0 && frameSeqNumber(bytes, q) >= seqMin) {
      if ((bytes[q + 25]! & FrameFlags.groupStart) !== 0 && ++n >= limit) return n;
      q = end;
      end = checkFrame(bytes, q, recordBytesMax);
    }
    p = findGroupStart(bytes, q + 1, seqMin, recordBytesMax);
  }
  return n;
}

/** Highest seq of any valid frame chain found from `from` on (seqs in a quarantined file stay used). */
function maxValidSeq(bytes: Uint8Array, from: number, recordBytesMax: number): number {
  let max = 0;
  let p =
    checkFrame(bytes, from, recordBytesMax) >= 0 ? from : findGroupStart(bytes, from, 1, recordBytesMax);
  while (p >= 0) {
    let q = p;
    let end = checkFrame(bytes, q, recordBytesMax);
    while (end >= 0) {
      max = Math.max(max, frameSeqNumber(bytes, q));
      q = end;
      end = checkFrame(bytes, q, recordBytesMax);
    }
    p = findGroupStart(bytes, q + 1, 1, recordBytesMax);
  }
  return max;
}
