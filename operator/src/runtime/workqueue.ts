// A rate-limited work queue of object keys, in the shape of client-go's:
// - a key is in the queue at most once (dedupe), and never handed to two
//   workers at once: adding a key that is being processed marks it dirty and it
//   comes back after `done`;
// - failures back off exponentially per key, up to `maxDelayMs`;
// - bounded: at most `maxKeys` distinct keys are queued or waiting to retry.
//   Beyond that adds are refused (and counted); the periodic resync re-adds
//   every object, so a refused key is late, never lost.
import type { OperatorMetrics } from './metrics.ts';

export interface WorkQueueOptions {
  name: string;
  maxKeys?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  metrics?: OperatorMetrics;
}

export class WorkQueue {
  readonly name: string;
  private readonly maxKeys: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly metrics: OperatorMetrics | undefined;

  private readonly ready: string[] = [];
  private readonly queued = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly delayed = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly failures = new Map<string, number>();
  private readonly waiters: ((key: string | undefined) => void)[] = [];
  private shuttingDown = false;

  constructor(opts: WorkQueueOptions) {
    this.name = opts.name;
    this.maxKeys = opts.maxKeys ?? 10_000;
    this.baseDelayMs = opts.baseDelayMs ?? 200;
    this.maxDelayMs = opts.maxDelayMs ?? 300_000;
    this.metrics = opts.metrics;
  }

  get length(): number {
    return this.ready.length;
  }

  /**
   * Keys known to the queue: ready, processing or waiting to retry. A key both
   * processing and waiting to retry counts twice: a cheap, conservative bound.
   */
  get size(): number {
    return this.queued.size + this.processing.size + this.delayed.size;
  }

  /** Queues `key` now. Returns false when it was refused (shut down or full). */
  add(key: string): boolean {
    if (this.shuttingDown) return false;
    if (this.queued.has(key)) return true;
    if (this.processing.has(key)) {
      this.dirty.add(key);
      return true;
    }
    const pending = this.delayed.get(key);
    if (pending) {
      clearTimeout(pending.timer);
      this.delayed.delete(key);
    } else if (this.size >= this.maxKeys) {
      this.metrics?.queueDropped.inc({ queue: this.name });
      return false;
    }
    const waiter = this.waiters.shift();
    if (waiter) {
      this.processing.add(key);
      waiter(key);
    } else {
      this.queued.add(key);
      this.ready.push(key);
    }
    this.updateDepth();
    return true;
  }

  /** Queues `key` after `delayMs`; an earlier pending add wins. */
  addAfter(key: string, delayMs: number): boolean {
    if (this.shuttingDown) return false;
    if (delayMs <= 0) return this.add(key);
    if (this.queued.has(key)) return true;
    const at = Date.now() + delayMs;
    const pending = this.delayed.get(key);
    if (pending && pending.at <= at) return true;
    if (!pending && !this.processing.has(key) && this.size >= this.maxKeys) {
      this.metrics?.queueDropped.inc({ queue: this.name });
      return false;
    }
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, delayMs);
    timer.unref();
    this.delayed.set(key, { at, timer });
    return true;
  }

  /** Requeues after this key's next backoff step: base·2^failures, capped. */
  addRateLimited(key: string): boolean {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    this.metrics?.queueRetries.inc({ queue: this.name });
    return this.addAfter(key, this.backoffMs(n));
  }

  backoffMs(failures: number): number {
    return Math.min(this.baseDelayMs * 2 ** Math.min(failures, 30), this.maxDelayMs);
  }

  failureCount(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Resets the backoff of `key` (after a success). */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /** Waits for the next key; undefined once shut down. */
  async get(): Promise<string | undefined> {
    const key = this.ready.shift();
    if (key !== undefined) {
      this.queued.delete(key);
      this.processing.add(key);
      this.updateDepth();
      return key;
    }
    if (this.shuttingDown) return undefined;
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Marks `key` processed; a key added meanwhile is queued again. */
  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.delete(key)) this.add(key);
  }

  /** Stops handing out keys; workers blocked in get() receive undefined. */
  shutDown(): void {
    this.shuttingDown = true;
    for (const { timer } of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    for (const w of this.waiters.splice(0)) w(undefined);
  }

  get isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  /** Resolves when no key is being processed (for graceful shutdown), or after `timeoutMs`. */
  async drain(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.processing.size > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.processing.size === 0;
  }

  private updateDepth(): void {
    this.metrics?.queueDepth.set({ queue: this.name }, this.ready.length);
  }
}
