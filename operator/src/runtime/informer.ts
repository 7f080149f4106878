// List + watch one resource into a local cache and tell handlers what changed.
//
// Written instead of client-node's makeInformer because that one neither asks
// for bookmarks nor recovers from a failed list/watch by itself, and its
// Watch aborts any watch that is quiet for 30 s. Here:
// - watches ask for bookmarks and resume from the last resourceVersion seen
//   (an event or a bookmark), so a reconnect replays nothing and misses nothing;
// - the client-side inactivity timeout is raised above the server's
//   timeoutSeconds, so a quiet watch ends the normal way (server closes it);
// - 410 Gone (compacted history) → full re-list, diffed against the cache so
//   handlers still see adds, updates and deletes;
// - errors back off exponentially (bounded) and retry forever;
// - a watchdog re-lists when nothing (not even a bookmark) arrived for
//   `watchdogMs`: a silently dead connection cannot freeze the cache;
// - every `resyncPeriodMs` each cached object is handed to the resync
//   handlers, so controllers re-check the world even without events.
import { Watch } from '@kubernetes/client-node';
import { collectionPath } from './kube.ts';
import type { KubeClient, KubeObject, ResourceType } from './kube.ts';
import type { Logger } from './log.ts';
import type { OperatorMetrics } from './metrics.ts';

export interface InformerOptions {
  client: KubeClient;
  resource: ResourceType;
  /** Unset: all namespaces. */
  namespace?: string;
  labelSelector?: string;
  log: Logger;
  metrics?: OperatorMetrics;
  /** Server-side watch timeout; jittered up to +50 % so informers do not reconnect in lockstep. */
  watchTimeoutSeconds?: number;
  /** Re-list when no event or bookmark arrived for this long. */
  watchdogMs?: number;
  resyncPeriodMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
}

type Handler<T> = (obj: T, old?: T) => void;

export function objectKey(obj: KubeObject): string {
  const ns = obj.metadata?.namespace;
  return ns ? `${ns}/${obj.metadata?.name ?? ''}` : (obj.metadata?.name ?? '');
}

interface WatchOutcome {
  reason: 'closed' | 'expired' | 'error' | 'inactive' | 'watchdog' | 'stopped';
  err?: unknown;
}

export class Informer<T extends KubeObject> {
  readonly resource: ResourceType;
  private readonly opts: InformerOptions;
  private readonly log: Logger;
  private readonly cache = new Map<string, T>();
  private readonly handlers = {
    add: [] as Handler<T>[],
    update: [] as Handler<T>[],
    delete: [] as Handler<T>[],
    resync: [] as Handler<T>[],
  };
  private resourceVersion = '';
  private stopped = true;
  private lastActivityMs = 0;
  private watchdogFired = false;
  private timers: NodeJS.Timeout[] = [];
  private loop: Promise<void> | undefined;
  private syncedResolve: (() => void) | undefined;
  private readonly synced: Promise<void>;
  private wakeSleep: (() => void) | undefined;
  /** Ends the current watch now, even one still waiting for response headers. */
  private kick: ((reason: WatchOutcome['reason']) => void) | undefined;

  constructor(opts: InformerOptions) {
    this.opts = opts;
    this.resource = opts.resource;
    this.log = opts.log.child({ informer: opts.resource.plural });
    this.synced = new Promise((resolve) => (this.syncedResolve = resolve));
  }

  on(event: 'add' | 'update' | 'delete' | 'resync', handler: Handler<T>): void {
    this.handlers[event].push(handler);
  }

  get(namespace: string | undefined, name: string): T | undefined {
    return this.cache.get(namespace ? `${namespace}/${name}` : name);
  }

  getByKey(key: string): T | undefined {
    return this.cache.get(key);
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  get lastResourceVersion(): string {
    return this.resourceVersion;
  }

  /** Starts listing and watching; resolves once the first list is in the cache. */
  async start(): Promise<void> {
    if (!this.stopped) return this.synced;
    this.stopped = false;
    this.loop = this.run();
    const watchdogMs = this.opts.watchdogMs ?? this.watchTimeoutSeconds() * 1000 * 2;
    const check = setInterval(() => this.checkWatchdog(watchdogMs), Math.min(watchdogMs / 4, 30_000));
    check.unref();
    this.timers.push(check);
    const resyncMs = this.opts.resyncPeriodMs ?? 300_000;
    if (resyncMs > 0) {
      const resync = setInterval(() => this.resync(), resyncMs);
      resync.unref();
      this.timers.push(resync);
    }
    return this.synced;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.kick?.('stopped');
    this.wakeSleep?.();
    await this.loop;
  }

  /** Hands every cached object to the resync handlers. */
  resync(): void {
    for (const obj of this.cache.values()) this.emit('resync', obj);
  }

  private watchTimeoutSeconds(): number {
    return this.opts.watchTimeoutSeconds ?? 300;
  }

  private checkWatchdog(watchdogMs: number): void {
    if (this.stopped || this.lastActivityMs === 0) return;
    if (Date.now() - this.lastActivityMs > watchdogMs) {
      this.log.warn(
        { quietMs: Date.now() - this.lastActivityMs },
        'watch silent past the watchdog: re-listing',
      );
      this.watchdogFired = true;
      this.lastActivityMs = Date.now();
      this.kick?.('watchdog');
      this.wakeSleep?.();
    }
  }

  private async sleep(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wakeSleep = () => {
        clearTimeout(t);
        resolve();
      };
    });
    this.wakeSleep = undefined;
  }

  private async run(): Promise<void> {
    let failures = 0;
    const base = this.opts.backoffBaseMs ?? 500;
    const max = this.opts.backoffMaxMs ?? 30_000;
    while (!this.stopped) {
      try {
        if (!this.resourceVersion || this.watchdogFired) {
          this.watchdogFired = false;
          await this.relist();
        }
        // stop() may have run while the list was in flight, when there was no
        // watch to kick yet: starting one now would never be cancelled.
        if (this.stopped) break;
        const outcome = await this.watchOnce();
        if (this.stopped) break;
        this.opts.metrics?.watchRestarts.inc({ resource: this.resource.plural, reason: outcome.reason });
        if (outcome.reason === 'expired' || outcome.reason === 'watchdog') {
          this.resourceVersion = '';
          failures = 0;
        } else if (outcome.reason === 'error') {
          throw outcome.err;
        } else {
          failures = 0;
        }
      } catch (err) {
        if (this.stopped) break;
        const delayMs = Math.min(base * 2 ** Math.min(failures, 20), max);
        failures++;
        this.opts.metrics?.watchRestarts.inc({ resource: this.resource.plural, reason: 'error' });
        this.log.warn({ err, delayMs, failures }, 'list/watch failed; retrying');
        await this.sleep(delayMs);
      }
    }
  }

  private async relist(): Promise<void> {
    const list = await this.opts.client.listAll<T>(this.resource, {
      namespace: this.opts.namespace,
      labelSelector: this.opts.labelSelector,
    });
    const fresh = new Map<string, T>();
    for (const item of list.items) {
      // List items carry no apiVersion/kind; watch events do. Make them alike.
      fresh.set(objectKey(item), { ...item, apiVersion: this.resource.apiVersion, kind: this.resource.kind });
    }
    const old = new Map(this.cache);
    this.cache.clear();
    for (const [k, v] of fresh) this.cache.set(k, v);
    for (const [k, obj] of fresh) {
      const prev = old.get(k);
      if (!prev) this.emit('add', obj);
      else if (prev.metadata?.resourceVersion !== obj.metadata?.resourceVersion)
        this.emit('update', obj, prev);
    }
    for (const [k, prev] of old) if (!fresh.has(k)) this.emit('delete', prev);
    this.resourceVersion = list.metadata.resourceVersion ?? '';
    this.lastActivityMs = Date.now();
    this.log.debug({ items: fresh.size, resourceVersion: this.resourceVersion }, 'listed');
    this.syncedResolve?.();
  }

  private async watchOnce(): Promise<WatchOutcome> {
    const timeoutSeconds = Math.round(this.watchTimeoutSeconds() * (1 + Math.random() * 0.5));
    const watch = new Watch(this.opts.client.kubeConfig);
    // Watch's inactivity timer (30 s by default, private in the typings) would
    // cut every quiet watch; let the server's timeoutSeconds end it instead.
    (watch as unknown as { requestTimeoutMs: number }).requestTimeoutMs = (timeoutSeconds + 30) * 1000;
    let gone = false;
    return new Promise<WatchOutcome>((resolvePromise) => {
      let settled = false;
      let controller: AbortController | undefined;
      const resolve = (outcome: WatchOutcome): void => {
        if (settled) return;
        settled = true;
        this.kick = undefined;
        controller?.abort();
        resolvePromise(outcome);
      };
      // Watch hands out its AbortController only once response headers
      // arrive; a connection stuck before that must still be escapable.
      this.kick = (reason) => resolve({ reason });
      const onEvent = (type: string, obj: T & { code?: number }): void => {
        if (settled) return;
        this.lastActivityMs = Date.now();
        this.opts.metrics?.watchEvents.inc({ resource: this.resource.plural, type });
        if (type === 'ERROR') {
          if (obj.code === 410) gone = true;
          this.log.debug({ status: obj }, 'watch ERROR event');
          resolve({
            reason: gone ? 'expired' : 'error',
            err: new Error(`watch ERROR event: ${JSON.stringify(obj)}`),
          });
          return;
        }
        const rv = obj.metadata?.resourceVersion;
        if (type === 'BOOKMARK') {
          if (rv) this.resourceVersion = rv;
          return;
        }
        const key = objectKey(obj);
        const prev = this.cache.get(key);
        if (type === 'DELETED') {
          this.cache.delete(key);
          this.emit('delete', obj);
        } else if (type === 'ADDED' || type === 'MODIFIED') {
          this.cache.set(key, obj);
          if (prev) this.emit('update', obj, prev);
          else this.emit('add', obj);
        }
        if (rv) this.resourceVersion = rv;
      };
      const onDone = (err: unknown): void => {
        if (this.stopped) resolve({ reason: 'stopped' });
        else if (gone || (err as { statusCode?: number } | undefined)?.statusCode === 410)
          resolve({ reason: 'expired' });
        else if (this.watchdogFired) resolve({ reason: 'watchdog' });
        else if ((err as Error | undefined)?.name === 'TimeoutError') resolve({ reason: 'inactive' });
        else if (err && (err as Error).name !== 'AbortError') resolve({ reason: 'error', err });
        else resolve({ reason: 'closed' });
      };
      watch
        .watch(
          collectionPath(this.resource, this.opts.namespace),
          {
            allowWatchBookmarks: true,
            resourceVersion: this.resourceVersion,
            timeoutSeconds,
            labelSelector: this.opts.labelSelector,
          },
          onEvent,
          onDone,
        )
        .then((abort) => {
          controller = abort;
          if (settled || this.stopped) abort.abort();
        })
        .catch((err: unknown) => resolve({ reason: 'error', err }));
    });
  }

  private emit(event: 'add' | 'update' | 'delete' | 'resync', obj: T, old?: T): void {
    for (const h of this.handlers[event]) {
      try {
        h(obj, old);
      } catch (err) {
        this.log.error({ err, event, key: objectKey(obj) }, 'informer handler threw');
      }
    }
  }
}

/**
 * One Informer per watched namespace behind the interface of one (the
 * operator's --watch-namespaces): each lists and watches only its namespace,
 * so the operator needs no cluster-wide list or watch. Undefined or empty
 * `namespaces`: one informer over all namespaces.
 */
export class NamespacedInformers<T extends KubeObject> {
  readonly resource: ResourceType;
  private readonly byNamespace = new Map<string | undefined, Informer<T>>();

  constructor(opts: Omit<InformerOptions, 'namespace'>, namespaces: readonly string[] | undefined) {
    this.resource = opts.resource;
    const list = namespaces === undefined || namespaces.length === 0 ? [undefined] : [...new Set(namespaces)];
    for (const ns of list)
      this.byNamespace.set(
        ns,
        new Informer<T>({
          ...opts,
          namespace: ns,
          log: ns === undefined ? opts.log : opts.log.child({ namespace: ns }),
        }),
      );
  }

  private informerOf(namespace: string | undefined): Informer<T> | undefined {
    return this.byNamespace.get(undefined) ?? this.byNamespace.get(namespace);
  }

  on(event: 'add' | 'update' | 'delete' | 'resync', handler: Handler<T>): void {
    for (const inf of this.byNamespace.values()) inf.on(event, handler);
  }

  get(namespace: string | undefined, name: string): T | undefined {
    return this.informerOf(namespace)?.get(namespace, name);
  }

  getByKey(key: string): T | undefined {
    const slash = key.indexOf('/');
    return this.informerOf(slash < 0 ? undefined : key.slice(0, slash))?.getByKey(key);
  }

  list(): T[] {
    return [...this.byNamespace.values()].flatMap((inf) => inf.list());
  }

  async start(): Promise<void> {
    await Promise.all([...this.byNamespace.values()].map((inf) => inf.start()));
  }

  async stop(): Promise<void> {
    await Promise.all([...this.byNamespace.values()].map((inf) => inf.stop()));
  }

  resync(): void {
    for (const inf of this.byNamespace.values()) inf.resync();
  }
}
