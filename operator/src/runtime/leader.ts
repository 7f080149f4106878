// Lease-based leader election (coordination.k8s.io/v1), by hand, following
// client-go's leaderelection package:
// - acquire: create the Lease, or take it over when its holder is empty or
//   has not renewed for leaseDuration *as observed by us* (we time expiry from
//   when we last saw the record change, on our own monotonic clock, so clock
//   skew between operator pods cannot make two leaders);
// - every write is a replace with the read resourceVersion: two candidates
//   racing for an expired Lease cannot both win (the loser gets 409);
// - renew every retryPeriod; if no renew succeeded for renewDeadline the
//   leader steps down (renewDeadline < leaseDuration, so it stops before
//   anyone else may start);
// - release on shutdown: clear the holder so a successor starts at once
//   instead of waiting out the lease;
// - renewing starts the moment the Lease is ours and does not wait for
//   onStartedLeading (the operator's cache sync may take longer than a lease
//   duration: a leader that stopped renewing meanwhile would let a second one
//   in while it still starts its workers);
// - every Lease call is bounded: a leader's attempt may not outlive its renew
//   deadline (a hung request must not keep a leader that can no longer renew
//   believing it leads), a candidate's is bounded by callTimeoutMs.
import type { KubeConfig, V1Lease } from '@kubernetes/client-node';
import { KubeClient, Resources } from './kube.ts';
import type { KubeObject } from './kube.ts';
import type { Logger } from './log.ts';
import type { OperatorMetrics } from './metrics.ts';

export interface LeaderElectionOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  /** Bound on one Lease request of a candidate (a leader's is bounded by its renew deadline). Default renewDeadlineMs / 2. */
  callTimeoutMs?: number;
  log: Logger;
  metrics?: OperatorMetrics;
}

type LeaseObject = V1Lease & KubeObject;

/** metav1.MicroTime: RFC 3339 with exactly six fractional digits. */
function microTime(d = new Date()): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export interface LeaderCallbacks {
  /** Called once leadership is acquired; `signal` aborts when it is lost or on stop. */
  onStartedLeading: (signal: AbortSignal) => void | Promise<void>;
  /** Called once when leadership ends (lost or released). */
  onStoppedLeading: (reason: 'lost' | 'released') => void | Promise<void>;
  onNewLeader?: (identity: string) => void;
}

function apiCode(err: unknown): number | undefined {
  const e = err as { code?: unknown };
  return typeof e.code === 'number' ? e.code : undefined;
}

function timeOf(t: Date | string | undefined): string {
  return t === undefined ? '' : typeof t === 'string' ? t : t.toISOString();
}

export class LeaderElector {
  readonly identity: string;
  private readonly client: KubeClient;
  private readonly opts: Required<Omit<LeaderElectionOptions, 'metrics'>> & { metrics?: OperatorMetrics };
  private readonly log: Logger;
  private leading = false;
  private stopped = false;
  private observed: { holder: string; renewTime: string; atMs: number } | undefined;
  private lease: LeaseObject | undefined;
  /** While leading: when the last successful renew was sent (performance.now()). */
  private lastRenewMs = 0;
  private leaderAbort: AbortController | undefined;
  private wake: (() => void) | undefined;
  private lastLeader = '';

  constructor(opts: LeaderElectionOptions) {
    const leaseDurationMs = opts.leaseDurationMs ?? 15_000;
    const renewDeadlineMs = opts.renewDeadlineMs ?? 10_000;
    const retryPeriodMs = opts.retryPeriodMs ?? 2_000;
    if (!(renewDeadlineMs < leaseDurationMs))
      throw new Error('renewDeadlineMs must be below leaseDurationMs');
    if (!(retryPeriodMs < renewDeadlineMs)) throw new Error('retryPeriodMs must be below renewDeadlineMs');
    const callTimeoutMs = opts.callTimeoutMs ?? Math.max(500, Math.floor(renewDeadlineMs / 2));
    this.opts = { ...opts, leaseDurationMs, renewDeadlineMs, retryPeriodMs, callTimeoutMs };
    this.identity = opts.identity;
    this.client = new KubeClient(opts.kubeConfig, {
      requestTimeoutMs: Math.max(callTimeoutMs, renewDeadlineMs),
    });
    this.log = opts.log.child({ lease: `${opts.namespace}/${opts.name}`, identity: opts.identity });
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Campaigns until stopped; runs the callbacks on each gain/loss. Resolves after stop(). */
  async run(cb: LeaderCallbacks): Promise<void> {
    while (!this.stopped) {
      await this.acquire();
      if (this.stopped) break;
      this.leading = true;
      const leaderAbort = new AbortController();
      this.leaderAbort = leaderAbort;
      this.opts.metrics?.leader.set(1);
      this.opts.metrics?.leaderTransitions.inc();
      this.log.info({}, 'became leader');
      // Not awaited: the renew loop runs from now on, whatever onStartedLeading
      // does (client-go starts it in its own goroutine for the same reason).
      const started = (async () => {
        try {
          await cb.onStartedLeading(leaderAbort.signal);
        } catch (err) {
          this.log.error({ err }, 'onStartedLeading failed');
        }
      })();
      const reason = await this.renewLoop();
      this.leading = false;
      leaderAbort.abort();
      this.opts.metrics?.leader.set(0);
      this.opts.metrics?.leaderTransitions.inc();
      this.log.warn({ reason }, reason === 'lost' ? 'lost leadership' : 'released leadership');
      // Stop our work first, then hand the Lease over: a successor must not
      // reconcile while our last reconciles are still writing.
      await cb.onStoppedLeading(reason);
      if (reason === 'released') {
        // onStoppedLeading stopped the work; a start still in progress ends too.
        await started;
        await this.release();
      }
      // Like client-go, a process that lost the lease should exit and start
      // over; a caller that keeps us running campaigns again.
    }
  }

  /** Stops campaigning; a leader releases the Lease. */
  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  private async sleep(ms: number): Promise<void> {
    // Jitter like client-go's wait.JitterUntil so candidates spread out.
    const jittered = ms * (1 + Math.random() * 0.2);
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, jittered);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
    this.wake = undefined;
  }

  private async acquire(): Promise<void> {
    while (!this.stopped) {
      const attemptMs = performance.now();
      if (await this.tryAcquireOrRenew()) {
        // The renew deadline runs from when the winning write was sent.
        this.lastRenewMs = attemptMs;
        return;
      }
      await this.sleep(this.opts.retryPeriodMs);
    }
  }

  private async renewLoop(): Promise<'lost' | 'released'> {
    while (!this.stopped) {
      await this.sleep(this.opts.retryPeriodMs);
      if (this.stopped) break;
      const attemptMs = performance.now();
      // The attempt may not outlive the renew deadline: stepping down on time
      // is what keeps a successor from leading alongside us.
      const remainingMs = this.lastRenewMs + this.opts.renewDeadlineMs - attemptMs;
      if (remainingMs > 0 && (await this.tryAcquireOrRenew(AbortSignal.timeout(Math.ceil(remainingMs))))) {
        // Timed from the attempt's start: the apiserver may have written
        // the renewTime any time after it.
        this.lastRenewMs = attemptMs;
      } else if (performance.now() - this.lastRenewMs >= this.opts.renewDeadlineMs) {
        return 'lost';
      } else if (this.observed && this.observed.holder !== this.identity) {
        return 'lost';
      }
    }
    return 'released';
  }

  private leaseSeconds(): number {
    return Math.max(1, Math.ceil(this.opts.leaseDurationMs / 1000));
  }

  private async tryAcquireOrRenew(signal?: AbortSignal): Promise<boolean> {
    const { namespace, name } = this.opts;
    const bound = { signal: signal ?? AbortSignal.timeout(this.opts.callTimeoutMs) };
    const now = microTime();
    let lease: LeaseObject | undefined;
    try {
      lease = await this.client.get<LeaseObject>(Resources.lease, namespace, name, bound);
    } catch (err) {
      this.log.warn({ err: String(err) }, 'reading the Lease failed');
      return false;
    }
    if (!lease) {
      try {
        this.lease = await this.client.create<LeaseObject>(
          Resources.lease,
          {
            metadata: { name, namespace },
            spec: {
              holderIdentity: this.identity,
              leaseDurationSeconds: this.leaseSeconds(),
              acquireTime: now,
              renewTime: now,
              leaseTransitions: 0,
            },
          } as KubeObject,
          bound,
        );
        this.observe(this.identity, now);
        return true;
      } catch (createErr) {
        if (apiCode(createErr) !== 409)
          this.log.warn({ err: String(createErr) }, 'creating the Lease failed');
        return false;
      }
    }

    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    this.observe(holder, timeOf(spec.renewTime));
    const durationMs = (spec.leaseDurationSeconds ?? this.leaseSeconds()) * 1000;
    const expired = this.observed !== undefined && performance.now() > this.observed.atMs + durationMs;
    if (holder !== '' && holder !== this.identity && !expired) return false;

    const takingOver = holder !== this.identity;
    const body = {
      ...lease,
      spec: {
        ...spec,
        holderIdentity: this.identity,
        leaseDurationSeconds: this.leaseSeconds(),
        renewTime: now,
        acquireTime: takingOver ? now : spec.acquireTime,
        leaseTransitions: (spec.leaseTransitions ?? 0) + (takingOver && holder !== '' ? 1 : 0),
      },
    } as unknown as KubeObject;
    try {
      this.lease = await this.client.replace<LeaseObject>(Resources.lease, body, bound);
      this.observe(this.identity, now);
      return true;
    } catch (err) {
      // 409: someone else wrote first; we read again next round.
      if (apiCode(err) !== 409) this.log.warn({ err: String(err) }, 'updating the Lease failed');
      return false;
    }
  }

  private observe(holder: string, renewTime: string): void {
    if (!this.observed || this.observed.holder !== holder || this.observed.renewTime !== renewTime) {
      this.observed = { holder, renewTime, atMs: performance.now() };
    }
    if (holder !== this.lastLeader) {
      this.lastLeader = holder;
      if (holder) this.log.info({ leader: holder }, 'observed leader');
    }
  }

  private async release(): Promise<void> {
    const lease = this.lease;
    if (!lease?.metadata?.name) return;
    const bound = { signal: AbortSignal.timeout(this.opts.callTimeoutMs) };
    try {
      const current = await this.client.get<LeaseObject>(
        Resources.lease,
        this.opts.namespace,
        this.opts.name,
        bound,
      );
      if (current?.spec?.holderIdentity !== this.identity) return;
      const now = microTime();
      const body = {
        ...current,
        spec: {
          ...current.spec,
          holderIdentity: undefined,
          leaseDurationSeconds: 1,
          renewTime: now,
          acquireTime: now,
        },
      } as unknown as KubeObject;
      await this.client.replace(Resources.lease, body, bound);
      this.log.info({}, 'released the Lease');
    } catch (err) {
      this.log.warn(
        { err: String(err) },
        'releasing the Lease failed; the next leader waits for it to expire',
      );
    }
  }
}
