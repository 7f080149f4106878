// Shared by the wal*.test.ts files: a manual clock and timers, a logger that
// remembers, seeded randomness, and a reader that returns what a WAL dir holds.
import path from 'node:path';
import type { Clock } from '../src/clock.ts';
import type { Logger } from '../src/log.ts';
import type { FileSystem } from '../src/fs/types.ts';
import { seededRandom } from '../src/fs/power-cut.ts';
import {
  FrameFlags,
  encodeFrame,
  encodeSegmentHeader,
  readSegment,
  type WalRecord,
} from '../src/wal/format.ts';
import { WalState, STATE_FILE } from '../src/wal/state.ts';
import type { Timers, Wal, WalOptions } from '../src/wal/types.ts';

export class ManualClock implements Clock {
  ms: number;
  mono = 1000;
  constructor(startMs = Date.UTC(2025, 0, 1)) {
    this.ms = startMs;
  }
  nowMs(): number {
    return this.ms;
  }
  nowMicros(): bigint {
    return BigInt(this.ms) * 1000n;
  }
  monotonicMs(): number {
    return this.mono;
  }
  advance(ms: number): void {
    this.ms += ms;
    this.mono += ms;
  }
}

/** Timers driven by a ManualClock's monotonic time: fire with runDue(). */
export class ManualTimers implements Timers {
  readonly #clock: ManualClock;
  #next = 1;
  readonly pending = new Map<number, { at: number; fn: () => void }>();
  constructor(clock: ManualClock) {
    this.#clock = clock;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.pending.set(id, { at: this.#clock.monotonicMs() + ms, fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number);
  }
  runDue(): number {
    let n = 0;
    for (const [id, t] of [...this.pending]) {
      if (t.at <= this.#clock.monotonicMs()) {
        this.pending.delete(id);
        t.fn();
        n++;
      }
    }
    return n;
  }
}

export interface LogEntry {
  level: 'debug' | 'info' | 'warn' | 'error';
  obj: object;
  msg: string | undefined;
}

export function memoryLogger(): Logger & { entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const at =
    (level: LogEntry['level']) =>
    (obj: object, msg?: string): void => {
      entries.push({ level, obj, msg });
    };
  return { entries, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

export function seededBytes(seed: number): (n: number) => Uint8Array {
  const rnd = seededRandom(seed);
  return (n) => Uint8Array.from({ length: n }, () => Math.floor(rnd() * 256));
}

export function walOptions(fs: FileSystem, overrides: Partial<WalOptions> = {}): WalOptions {
  const clock = new ManualClock();
  return {
    dir: '/data/wal/orders',
    endpoint: 'orders',
    instance: 'orders-0',
    fs,
    clock,
    log: memoryLogger(),
    timers: new ManualTimers(clock),
    randomBytes: seededBytes(7),
    ...overrides,
  };
}

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

/** Every record of every sealed segment the state file lists, in seq order, strictly read. */
export async function readWalDir(fs: FileSystem, dir: string): Promise<WalRecord[]> {
  const state = WalState.parse(await fs.readFile(path.join(dir, STATE_FILE)));
  const out: WalRecord[] = [];
  for (const seg of state.segments.values()) {
    const bytes = (await fs.readFile(path.join(dir, seg.fileName))).subarray(0, seg.bytes);
    const { records } = readSegment(bytes);
    for (const r of records) out.push(r);
  }
  return out;
}

export function deferred<T = void>(): {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
} {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

export interface BuiltSegment {
  readonly bytes: Buffer;
  readonly headerBytes: number;
  /** Offset of every frame, in order. */
  readonly frames: number[];
  /** Offset after each append (a batch end), in order. */
  readonly appendEnds: number[];
  /** Offset where each group starts. */
  readonly groupStarts: number[];
  readonly lastSeq: number;
}

/**
 * Builds segment bytes the way the WAL writes them: groups of appends of
 * records, seqs from `firstSeq`, batch-end and group-start flags set.
 */
export function buildSegment(
  groups: readonly (readonly (readonly string[])[])[],
  opts: { id?: bigint; epoch?: string; firstSeq?: number; endpoint?: string; instance?: string } = {},
): BuiltSegment {
  const header = encodeSegmentHeader({
    segmentId: opts.id ?? 1n,
    createdMicros: 1_735_689_600_000_000n,
    endpoint: opts.endpoint ?? 'orders',
    instance: opts.instance ?? 'orders-0',
    epoch: opts.epoch ?? '01JGFJJZ000000000000000000',
  });
  const parts: Uint8Array[] = [header];
  let off = header.length;
  let seq = opts.firstSeq ?? 1;
  const frames: number[] = [];
  const appendEnds: number[] = [];
  const groupStarts: number[] = [];
  for (const group of groups) {
    groupStarts.push(off);
    let first = true;
    for (const append of group) {
      append.forEach((payload, i) => {
        const flags =
          (first ? FrameFlags.groupStart : 0) | (i === append.length - 1 ? FrameFlags.batchEnd : 0);
        first = false;
        const f = encodeFrame({
          seq: BigInt(seq++),
          ingestMicros: 1_735_689_600_000_000n,
          format: 1,
          flags,
          payload: enc(payload),
        });
        frames.push(off);
        parts.push(f);
        off += f.length;
      });
      appendEnds.push(off);
    }
  }
  return {
    bytes: Buffer.concat(parts),
    headerBytes: header.length,
    frames,
    appendEnds,
    groupStarts,
    lastSeq: seq - 1,
  };
}

/**
 * A delivery loop for power-cut runs: every sealed segment is read (exactly
 * its bytes, strictly), marked delivered and deleted as soon as it is
 * announced, so deleted files become free files and new segments are written
 * over them (wal.recycleSegmentsMax). Errors after the cut are expected and
 * ignored; `errors` keeps the ones before it.
 */
export class TestDeliverer {
  /** payload → seq of every record read from a segment before it was deleted. */
  readonly read = new Map<string, bigint>();
  /** Payloads of segments whose deleteSegment resolved: they must never come back. */
  readonly deleted = new Set<string>();
  readonly errors: unknown[] = [];
  #chain: Promise<void> = Promise.resolve();
  readonly #off: () => void;

  constructor(wal: Wal, fs: FileSystem, dir: string, frozen: () => boolean) {
    this.#off = wal.onSealed((seg) => {
      this.#chain = this.#chain.then(async () => {
        if (frozen()) return;
        try {
          const bytes = (await fs.readFile(path.join(dir, seg.fileName))).subarray(0, seg.bytes);
          const payloads: string[] = [];
          for (const r of readSegment(bytes).records) {
            payloads.push(dec(r.payload));
            this.read.set(dec(r.payload), r.seq);
          }
          await wal.markDelivered(seg.id);
          await wal.deleteSegment(seg.id);
          for (const p of payloads) this.deleted.add(p);
        } catch (err) {
          if (!frozen()) this.errors.push(err);
        }
      });
    });
  }

  async stop(): Promise<void> {
    this.#off();
    await this.#chain;
  }
}

/**
 * After a reboot: the records in the WAL dir plus those a TestDeliverer read
 * before deleting must hold every acknowledged record at its seq, seqs
 * gap-free from 1 across both, and no record of a deleted segment may be in
 * the dir again (a recycled file's stale frame read as data).
 */
export function checkRecovered(
  records: readonly WalRecord[],
  acked: ReadonlyMap<string, bigint>,
  deliverer: TestDeliverer | undefined,
  /** The first seq the run wrote (records before it were deleted by the test itself). */
  firstSeq = 1n,
): { ackedLost: number; seqErrors: string[]; staleReturned: number } {
  const found = new Map<string, bigint>(deliverer?.read ?? []);
  const seqErrors: string[] = [];
  let staleReturned = 0;
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    const p = dec(r.payload);
    if (deliverer?.deleted.has(p) === true) staleReturned++;
    found.set(p, r.seq);
    if (i > 0 && r.seq !== records[i - 1]!.seq + 1n) seqErrors.push(`gap ${records[i - 1]!.seq} → ${r.seq}`);
  }
  const seqs = new Set<bigint>(found.values());
  const max = [...seqs].reduce((m, s) => (s > m ? s : m), 0n);
  if (records.length > 0 && records.at(-1)!.seq !== max)
    seqErrors.push(`the dir ends at ${records.at(-1)!.seq}, seqs went to ${max}`);
  for (let s = firstSeq; s <= max; s++) {
    if (!seqs.has(s)) {
      seqErrors.push(`seq ${s} missing`);
      break;
    }
  }
  let ackedLost = 0;
  for (const [p, seq] of acked) {
    const at = found.get(p);
    if (at === undefined) ackedLost++;
    else if (at !== seq) seqErrors.push(`${p} acked as ${seq}, found at ${at}`);
  }
  return { ackedLost, seqErrors, staleReturned };
}
