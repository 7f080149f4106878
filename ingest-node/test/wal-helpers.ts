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
import type { Timers, WalOptions } from '../src/wal/types.ts';

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
