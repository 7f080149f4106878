// Kubernetes Events on the objects the operator manages (what `kubectl
// describe endpoint x` shows). Repeats of the same event within
// `dedupeWindowMs` are dropped here rather than sent: a reconcile loop that
// fails every few seconds must not flood etcd. The dedupe memory is bounded.
import type { KubeClient, KubeObject } from './kube.ts';
import { Resources } from './kube.ts';
import type { Logger } from './log.ts';

export type EventType = 'Normal' | 'Warning';

export interface EventSink {
  record(obj: KubeObject, type: EventType, reason: string, message: string): void;
}

export class EventRecorder implements EventSink {
  private readonly client: KubeClient;
  private readonly log: Logger;
  private readonly component: string;
  private readonly dedupeWindowMs: number;
  private readonly maxRemembered: number;
  private readonly recent = new Map<string, number>();
  private readonly inflight = new Set<Promise<void>>();

  constructor(opts: {
    client: KubeClient;
    log: Logger;
    component?: string;
    dedupeWindowMs?: number;
    maxRemembered?: number;
  }) {
    this.client = opts.client;
    this.log = opts.log;
    this.component = opts.component ?? 'landfall-operator';
    this.dedupeWindowMs = opts.dedupeWindowMs ?? 600_000;
    this.maxRemembered = opts.maxRemembered ?? 4096;
  }

  record(obj: KubeObject, type: EventType, reason: string, message: string): void {
    const m = obj.metadata;
    if (!m?.name || !m.namespace) return;
    const key = `${m.uid ?? m.name}|${type}|${reason}|${message}`;
    const now = Date.now();
    const last = this.recent.get(key);
    if (last !== undefined && now - last < this.dedupeWindowMs) return;
    this.recent.delete(key);
    this.recent.set(key, now);
    while (this.recent.size > this.maxRemembered) {
      const oldest = this.recent.keys().next().value;
      if (oldest === undefined) break;
      this.recent.delete(oldest);
    }
    const ts = new Date().toISOString();
    const event = {
      metadata: { namespace: m.namespace, generateName: `${m.name}.` },
      involvedObject: {
        apiVersion: obj.apiVersion,
        kind: obj.kind,
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resourceVersion: m.resourceVersion,
      },
      type,
      reason,
      message: message.slice(0, 1024),
      source: { component: this.component },
      reportingComponent: this.component,
      reportingInstance: this.component,
      firstTimestamp: ts,
      lastTimestamp: ts,
      count: 1,
    };
    // Fire and forget, but tracked: an event is never worth failing a reconcile.
    const p = this.client
      .create(Resources.event, event as KubeObject)
      .then(() => undefined)
      .catch((err: unknown) => this.log.debug({ err, reason }, 'could not record event'))
      .finally(() => this.inflight.delete(p));
    this.inflight.add(p);
  }

  /** Waits for events still being sent (graceful shutdown). */
  async flush(): Promise<void> {
    await Promise.allSettled([...this.inflight]);
  }
}
