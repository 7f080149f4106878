// state.json: what survives a restart besides the segment files themselves.
// Written whole, atomically (temp + fdatasync + rename + fsync dir), never on
// the per-request path: only on seal, on pipeline progress, on delete. The
// segment entries are kept encoded in blocks (SegmentMap), so a write
// re-encodes only the block a step changed; the file goes out as one writev.
//
// Schema (version 1); u64 values are decimal strings so JSON keeps them exact:
//
//   {
//     "version": 1,
//     "epoch": "01JC…",               // the WAL epoch (copy of the epoch file)
//     "segmentIdHighWater": "12",     // highest segment id ever used here
//     "seqHighWater": "12345",        // highest seq in any sealed segment
//     "updatedAtMs": 1700000000000,
//     "segments": [                   // sealed segments still on disk, id order
//       { "id": "11", "epoch": "01JC…", "fileName": "00000000000000000011.wal",
//         "bytes": 67108890, "records": 1024, "firstSeq": "1", "lastSeq": "1024",
//         "firstIngestMicros": "…", "lastIngestMicros": "…", "sealedAtMs": …,
//         "sealReason": "size", "status": "sealed", "progress": {} }
//     ],
//     "discard": ["00000000000000000013.wal"],  // abandoned, record-less: delete at open
//     "quarantined": [{ "fileName": "…", "reason": "…", "atMs": … }]  // last 100
//   }
//
// The high-water marks are why a restart never reuses a segment id or a seq
// even after every segment was delivered and deleted.
import path from 'node:path';
import type { FileSystem } from '../fs/types.ts';
import { writeFileAtomic } from '../fs/durable.ts';
import type { JsonValue, SealReason, SealedSegment } from './types.ts';

export const STATE_FILE = 'state.json';
export const STATE_VERSION = 1;
/** Quarantine history kept in the state file (the files themselves are all kept). */
const QUARANTINE_HISTORY_MAX = 100;

export interface QuarantineEntry {
  readonly fileName: string;
  readonly reason: string;
  readonly atMs: number;
}

const utf8 = new TextEncoder();
const SEPARATOR = utf8.encode(',\n');
const DOCUMENT_END = utf8.encode('\n]}\n');
/** Segment entries per cached block of state.json (ids `k·64 … k·64+63`). */
const BLOCK_IDS = 64n;

function encodeSegment(s: SealedSegment): string {
  return JSON.stringify({
    id: s.id.toString(),
    epoch: s.epoch,
    fileName: s.fileName,
    bytes: s.bytes,
    records: s.records,
    firstSeq: s.firstSeq.toString(),
    lastSeq: s.lastSeq.toString(),
    firstIngestMicros: s.firstIngestMicros.toString(),
    lastIngestMicros: s.lastIngestMicros.toString(),
    sealedAtMs: s.sealedAtMs,
    sealReason: s.sealReason,
    status: s.status,
    progress: s.progress,
  });
}

/**
 * The sealed segments by id, which also keeps their part of state.json
 * encoded, in blocks of BLOCK_IDS consecutive ids. A change (set, delete)
 * marks only its block stale, so a state write re-encodes at most the few
 * entries next to the one a step changed, and assembles the rest from cached
 * bytes: its cost on the event loop no longer grows with the backlog (issue
 * 14: every step used to re-serialise every pending segment). The bytes go
 * out as one writev of the blocks, off the loop.
 */
export class SegmentMap extends Map<bigint, SealedSegment> {
  /** Encoded blocks by block number; absent = stale (or empty). */
  readonly #blocks = new Map<bigint, Uint8Array>();
  /** Block numbers that hold at least one entry, ascending once sorted. */
  readonly #blockIds = new Set<bigint>();
  #blockIdsSorted = true;
  #lastBlock = -1n;
  /** Sums kept as entries change, so WAL stats (read by backpressure on requests) cost O(1), not O(backlog). */
  bytesTotal = 0;
  sealedCount = 0;
  sealedBytes = 0;

  /** Ids of delivered entries: retention looks at these after every delivery, not at the backlog. */
  readonly #delivered = new Set<bigint>();

  #count(seg: SealedSegment, sign: 1 | -1): void {
    this.bytesTotal += sign * seg.bytes;
    if (seg.status === 'sealed') {
      this.sealedCount += sign;
      this.sealedBytes += sign * seg.bytes;
    } else if (sign === 1) this.#delivered.add(seg.id);
    else this.#delivered.delete(seg.id);
  }

  /** The delivered entries, in id order; O(delivered), however long the backlog. */
  delivered(): SealedSegment[] {
    const out: SealedSegment[] = [];
    for (const id of this.#delivered) out.push(this.get(id)!);
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  override set(id: bigint, seg: SealedSegment): this {
    const old = this.get(id);
    if (old !== undefined) this.#count(old, -1);
    super.set(id, seg);
    this.#count(seg, 1);
    const b = id / BLOCK_IDS;
    this.#blocks.delete(b);
    if (!this.#blockIds.has(b)) {
      this.#blockIds.add(b);
      if (b < this.#lastBlock) this.#blockIdsSorted = false;
      else this.#lastBlock = b;
    }
    return this;
  }

  override delete(id: bigint): boolean {
    const old = this.get(id);
    const had = super.delete(id);
    if (old !== undefined) {
      this.#count(old, -1);
      this.#blocks.delete(id / BLOCK_IDS);
    }
    return had;
  }

  override clear(): void {
    super.clear();
    this.#delivered.clear();
    this.bytesTotal = 0;
    this.sealedCount = 0;
    this.sealedBytes = 0;
    this.#blocks.clear();
    this.#blockIds.clear();
    this.#blockIdsSorted = true;
    this.#lastBlock = -1n;
  }

  /** The entries, as `entry,\nentry…` pieces in id order (empty blocks skipped). */
  encodedBlocks(): Uint8Array[] {
    if (!this.#blockIdsSorted) {
      const sorted = [...this.#blockIds].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      this.#blockIds.clear();
      for (const b of sorted) this.#blockIds.add(b);
      this.#blockIdsSorted = true;
    }
    const out: Uint8Array[] = [];
    for (const b of this.#blockIds) {
      let bytes = this.#blocks.get(b);
      if (bytes === undefined) {
        const entries: string[] = [];
        for (let id = b * BLOCK_IDS; id < (b + 1n) * BLOCK_IDS; id++) {
          const seg = this.get(id);
          if (seg !== undefined) entries.push(encodeSegment(seg));
        }
        if (entries.length === 0) {
          this.#blockIds.delete(b);
          continue;
        }
        bytes = utf8.encode(entries.join(',\n'));
        this.#blocks.set(b, bytes);
      }
      out.push(bytes);
    }
    return out;
  }
}

export class WalState {
  epoch: string;
  segmentIdHighWater = 0n;
  seqHighWater = 0n;
  /** By id; kept in ascending id order (ids only grow, recovery inserts in order). */
  readonly segments = new SegmentMap();
  readonly discard = new Set<string>();
  quarantined: QuarantineEntry[] = [];
  #lastId: bigint | undefined;

  constructor(epoch: string) {
    this.epoch = epoch;
  }

  addSegment(seg: SealedSegment): void {
    const last = this.#lastId;
    this.segments.set(seg.id, seg);
    if (last !== undefined && seg.id < last) this.#sort();
    else if (last === undefined || seg.id > last) this.#lastId = seg.id;
    if (seg.id > this.segmentIdHighWater) this.segmentIdHighWater = seg.id;
    if (seg.lastSeq > this.seqHighWater) this.seqHighWater = seg.lastSeq;
  }

  addQuarantined(entry: QuarantineEntry): void {
    this.quarantined.push(entry);
    if (this.quarantined.length > QUARANTINE_HISTORY_MAX)
      this.quarantined = this.quarantined.slice(-QUARANTINE_HISTORY_MAX);
  }

  #sort(): void {
    const sorted = [...this.segments.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    this.segments.clear();
    for (const s of sorted) this.segments.set(s.id, s);
    this.#lastId = sorted.at(-1)?.id;
  }

  /**
   * The document as pieces to write back to back: the small fields, then the
   * segment entries from SegmentMap's cached blocks.
   */
  serializeParts(nowMs: number): Uint8Array[] {
    const head = JSON.stringify({
      version: STATE_VERSION,
      epoch: this.epoch,
      segmentIdHighWater: this.segmentIdHighWater.toString(),
      seqHighWater: this.seqHighWater.toString(),
      updatedAtMs: nowMs,
      discard: [...this.discard],
      quarantined: this.quarantined,
    });
    // `{…,"segments":[` + entries + `]}`: the head's closing brace makes way.
    const parts: Uint8Array[] = [utf8.encode(`${head.slice(0, -1)},"segments":[\n`)];
    for (const block of this.segments.encodedBlocks()) {
      if (parts.length > 1) parts.push(SEPARATOR);
      parts.push(block);
    }
    parts.push(DOCUMENT_END);
    return parts;
  }

  serialize(nowMs: number): Uint8Array {
    return Buffer.concat(this.serializeParts(nowMs));
  }

  /** Throws on anything that is not a valid version-1 state document. */
  static parse(bytes: Uint8Array): WalState {
    const doc: unknown = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
    const o = obj(doc, 'state');
    if (o['version'] !== STATE_VERSION)
      throw new Error(`state.json: unsupported version ${String(o['version'])}`);
    const state = new WalState(str(o['epoch'], 'epoch'));
    state.segmentIdHighWater = u64(o['segmentIdHighWater'], 'segmentIdHighWater');
    state.seqHighWater = u64(o['seqHighWater'], 'seqHighWater');
    for (const raw of arr(o['segments'], 'segments')) {
      const s = obj(raw, 'segment');
      const status = str(s['status'], 'status');
      if (status !== 'sealed' && status !== 'delivered') throw new Error(`state.json: bad status ${status}`);
      state.addSegment({
        id: u64(s['id'], 'id'),
        epoch: str(s['epoch'], 'segment epoch'),
        fileName: fileName(s['fileName']),
        bytes: int(s['bytes'], 'bytes'),
        records: int(s['records'], 'records'),
        firstSeq: u64(s['firstSeq'], 'firstSeq'),
        lastSeq: u64(s['lastSeq'], 'lastSeq'),
        firstIngestMicros: u64(s['firstIngestMicros'], 'firstIngestMicros'),
        lastIngestMicros: u64(s['lastIngestMicros'], 'lastIngestMicros'),
        sealedAtMs: int(s['sealedAtMs'], 'sealedAtMs'),
        sealReason: str(s['sealReason'], 'sealReason') as SealReason,
        status,
        progress: obj(s['progress'] ?? {}, 'progress') as { [k: string]: JsonValue },
      });
    }
    for (const f of arr(o['discard'] ?? [], 'discard')) state.discard.add(fileName(f));
    for (const raw of arr(o['quarantined'] ?? [], 'quarantined')) {
      const q = obj(raw, 'quarantined');
      state.quarantined.push({
        fileName: str(q['fileName'], 'fileName'),
        reason: str(q['reason'], 'reason'),
        atMs: int(q['atMs'], 'atMs'),
      });
    }
    return state;
  }
}

/**
 * Serializes state writes and coalesces them like group commit: a caller's
 * promise resolves after a write that *started* after its call has landed,
 * so it always covers the caller's change; N changes during one write cost
 * one more write, not N.
 */
export class StatePersister {
  readonly #fs: FileSystem;
  readonly #path: string;
  readonly #snapshot: () => readonly Uint8Array[];
  #inflight: Promise<void> | undefined;
  #next: { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } | undefined;
  writes = 0;
  failures = 0;

  constructor(fs: FileSystem, dir: string, snapshot: () => readonly Uint8Array[]) {
    this.#fs = fs;
    this.#path = path.join(dir, STATE_FILE);
    this.#snapshot = snapshot;
  }

  persist(): Promise<void> {
    if (this.#inflight === undefined) return this.#start();
    if (this.#next === undefined) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.#next = { promise, resolve, reject };
    }
    return this.#next.promise;
  }

  /** Resolves when no write is in flight or queued (errors are the callers' to see). */
  async idle(): Promise<void> {
    while (this.#inflight !== undefined) await this.#inflight.catch(() => {});
  }

  #start(): Promise<void> {
    const run = (async () => {
      try {
        await writeFileAtomic(this.#fs, this.#path, this.#snapshot());
        this.writes++;
      } catch (err) {
        this.failures++;
        throw err;
      }
    })();
    const inflight = run.finally(() => {
      this.#inflight = undefined;
      const next = this.#next;
      if (next !== undefined) {
        this.#next = undefined;
        this.#start().then(next.resolve, next.reject);
      }
    });
    // The chained promise mirrors `run`; callers observe `run`, so the
    // chain's copy of a rejection is handled here.
    inflight.catch(() => {});
    this.#inflight = inflight;
    return run;
  }
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new Error(`state.json: ${what} is not an object`);
  return v as Record<string, unknown>;
}
function arr(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new Error(`state.json: ${what} is not an array`);
  return v;
}
function str(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new Error(`state.json: ${what} is not a string`);
  return v;
}
function int(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw new Error(`state.json: ${what} is not a count`);
  return v;
}
function u64(v: unknown, what: string): bigint {
  if (typeof v !== 'string' || !/^\d{1,20}$/.test(v))
    throw new Error(`state.json: ${what} is not a u64 string`);
  return BigInt(v);
}
function fileName(v: unknown): string {
  const s = str(v, 'fileName');
  if (s.includes('/') || s.includes('\\') || s === '.' || s === '..')
    throw new Error(`state.json: bad file name ${s}`);
  return s;
}
