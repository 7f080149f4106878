// Wires informers, work queues and controllers into one runnable operator.
// Leader election lives outside (main.ts): a standby process never starts
// this, so it neither watches nor writes.
import { randomBytes } from 'node:crypto';
import type { KubeConfig, V1Node, V1Pod, V1StatefulSet } from '@kubernetes/client-node';
import type { Endpoint } from './api/endpoint.ts';
import type { View } from './api/view.ts';
import { createNodeViewCompiler } from './adapters/view-compiler.ts';
import type { ClosableViewCompiler } from './adapters/view-compiler.ts';
import { httpNodeStatusProbe } from './adapters/node-status.ts';
import type { NodeDrainControl, NodeStatusProbe } from './adapters/node-status.ts';
import { httpNodeDrainClient } from './adapters/node-drain.ts';
import type { NodeDrainClient } from './adapters/node-drain.ts';
import { EndpointController } from './controller/endpoint.ts';
import type { ReconcileResult } from './controller/endpoint.ts';
import { ViewController } from './controller/view.ts';
import { nodeLeaving } from './controller/node-drain.ts';
import { ViewCompileCache, viewsConfigMapSeed } from './controller/views.ts';
import { ENDPOINT_LABEL, MANAGED_BY, MANAGED_BY_LABEL } from './model/names.ts';
import { EventRecorder } from './runtime/events.ts';
import { Informer, NamespacedInformers, objectKey } from './runtime/informer.ts';
import { KubeClient, Resources } from './runtime/kube.ts';
import type { KubeObject } from './runtime/kube.ts';
import type { Logger } from './runtime/log.ts';
import type { NetworkPolicySettings } from './model/resources.ts';
import { OperatorMetrics } from './runtime/metrics.ts';
import { WorkQueue } from './runtime/workqueue.ts';

export interface OperatorOptions {
  kubeConfig: KubeConfig;
  /**
   * Watch only these namespaces: Endpoints, Views and their children are
   * listed and watched per namespace (a Role in each suffices). Unset or
   * empty: all namespaces. Nodes stay cluster-wide (nodeDrain).
   */
  namespaces?: readonly string[];
  /** One namespace to watch: the same as `namespaces: [namespace]`. */
  namespace?: string;
  nodeImage: string;
  /** Image prefixes an Endpoint's spec.image may start with; unset or empty: any. */
  allowedImages?: readonly string[];
  /** A NetworkPolicy per Endpoint; unset: none. */
  networkPolicy?: NetworkPolicySettings;
  /**
   * Master key the Endpoints' status keys are derived from (main.ts keeps it in
   * a Secret of the operator's namespace). Default: random, for this process
   * only (tests, embedding): a restart then changes every key and rolls the pods.
   */
  operatorKey?: Buffer;
  log: Logger;
  metrics?: OperatorMetrics;
  workers?: number;
  resyncPeriodMs?: number;
  watchTimeoutSeconds?: number;
  /** Default: the ingest node's compiler on a compile-only DuckDB, closed at stop(). */
  compiler?: ClosableViewCompiler;
  probe?: NodeStatusProbe;
  /** POST/DELETE /v1/drain; default HTTP (tests point it at nodes on localhost). */
  drainControl?: NodeDrainControl;
  /** The node's port on a pod IP; default 8080. */
  nodePort?: number;
  drainPollMs?: number;
  notReadyPollMs?: number;
  queueMaxKeys?: number;
  /** Bound on waiting for in-flight reconciles at stop(). */
  shutdownTimeoutMs?: number;
  /**
   * Watch Nodes and drain, then replace, a replica whose node is cordoned or
   * being removed (controller/node-drain.ts). Needs nodes list/watch,
   * cluster-wide. Default true.
   */
  nodeDrain?: boolean;
  drainClient?: NodeDrainClient;
  nodeDrainPollMs?: number;
}

type Reconciler = (key: string) => Promise<ReconcileResult>;

export class Operator {
  readonly metrics: OperatorMetrics;
  readonly client: KubeClient;
  private readonly opts: OperatorOptions;
  private readonly log: Logger;
  private readonly endpoints: NamespacedInformers<Endpoint & KubeObject>;
  private readonly views: NamespacedInformers<View & KubeObject>;
  private readonly statefulSets: NamespacedInformers<V1StatefulSet & KubeObject>;
  private readonly pods: NamespacedInformers<V1Pod & KubeObject>;
  /** The namespaces watched; empty: all. */
  readonly namespaces: readonly string[];
  private readonly nodes: Informer<V1Node & KubeObject> | undefined;
  private readonly endpointQueue: WorkQueue;
  private readonly viewQueue: WorkQueue;
  private readonly events: EventRecorder;
  private readonly endpointController: EndpointController;
  private readonly viewController: ViewController;
  private readonly compiler: ClosableViewCompiler;
  private workers: Promise<void>[] = [];
  private started = false;
  private synced = false;
  private stopRequested: (() => void) | undefined;

  constructor(opts: OperatorOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.metrics = opts.metrics ?? new OperatorMetrics();
    this.client = new KubeClient(opts.kubeConfig);
    this.namespaces = [
      ...new Set([...(opts.namespaces ?? []), ...(opts.namespace !== undefined ? [opts.namespace] : [])]),
    ].sort();
    const common = {
      client: this.client,
      log: opts.log,
      metrics: this.metrics,
      resyncPeriodMs: opts.resyncPeriodMs,
      watchTimeoutSeconds: opts.watchTimeoutSeconds,
    };
    // Children are watched through the label every one of them carries, so
    // the operator does not cache every pod of the cluster.
    const managed = `${MANAGED_BY_LABEL}=${MANAGED_BY}`;
    const ns = this.namespaces;
    this.endpoints = new NamespacedInformers({ ...common, resource: Resources.endpoint }, ns);
    this.views = new NamespacedInformers({ ...common, resource: Resources.view }, ns);
    this.statefulSets = new NamespacedInformers(
      { ...common, resource: Resources.statefulSet, labelSelector: managed, resyncPeriodMs: 0 },
      ns,
    );
    this.pods = new NamespacedInformers(
      { ...common, resource: Resources.pod, labelSelector: managed, resyncPeriodMs: 0 },
      ns,
    );
    // Cluster-scoped, unfiltered: which node is cordoned cannot be selected by label.
    this.nodes =
      opts.nodeDrain === false
        ? undefined
        : new Informer({ ...common, resource: Resources.node, resyncPeriodMs: 0 });
    const queue = { metrics: this.metrics, maxKeys: opts.queueMaxKeys };
    this.endpointQueue = new WorkQueue({ name: 'endpoint', ...queue });
    this.viewQueue = new WorkQueue({ name: 'view', ...queue });
    this.events = new EventRecorder({ client: this.client, log: opts.log });
    this.compiler = opts.compiler ?? createNodeViewCompiler();
    const compileCache = new ViewCompileCache(this.compiler.compile, {
      seed: viewsConfigMapSeed(this.client),
    });
    this.endpointController = new EndpointController({
      client: this.client,
      endpoints: this.endpoints,
      views: this.views,
      statefulSets: this.statefulSets,
      pods: this.pods,
      compileCache,
      events: this.events,
      log: opts.log,
      nodeImage: opts.nodeImage,
      allowedImages: opts.allowedImages,
      ...(opts.networkPolicy !== undefined ? { networkPolicy: opts.networkPolicy } : {}),
      operatorKey: opts.operatorKey ?? randomBytes(32),
      probe: opts.probe ?? httpNodeStatusProbe(),
      ...(opts.drainControl !== undefined ? { drainControl: opts.drainControl } : {}),
      ...(opts.nodePort !== undefined ? { nodePort: opts.nodePort } : {}),
      drainPollMs: opts.drainPollMs,
      notReadyPollMs: opts.notReadyPollMs,
      ...(this.nodes !== undefined
        ? {
            nodes: this.nodes,
            drainClient: opts.drainClient ?? httpNodeDrainClient(),
            nodeDrainPollMs: opts.nodeDrainPollMs,
          }
        : {}),
    });
    this.viewController = new ViewController({
      client: this.client,
      views: this.views,
      endpoints: this.endpoints,
      compileCache,
      events: this.events,
      log: opts.log,
      enqueueEndpoint: (key) => this.endpointQueue.add(key),
    });
    this.wireHandlers();
  }

  private wireHandlers(): void {
    const epQ = this.endpointQueue;
    const viewQ = this.viewQueue;
    const viewsOf = (ns: string | undefined, name: string | undefined): void => {
      for (const v of this.views.list()) {
        if (v.metadata.namespace === ns && v.spec?.endpointRef?.name === name) viewQ.add(objectKey(v));
      }
    };

    this.endpoints.on('add', (ep) => {
      epQ.add(objectKey(ep));
      viewsOf(ep.metadata.namespace, ep.metadata.name);
    });
    // Status writes are watch events too; only what can change the desired
    // state (spec → generation, annotations, finalizers, deletion) requeues.
    this.endpoints.on('update', (ep, old) => {
      const m = ep.metadata;
      const o = old?.metadata;
      if (
        m.generation !== o?.generation ||
        m.deletionTimestamp !== o?.deletionTimestamp ||
        JSON.stringify(m.annotations) !== JSON.stringify(o?.annotations) ||
        JSON.stringify(m.finalizers) !== JSON.stringify(o?.finalizers) ||
        JSON.stringify(m.labels) !== JSON.stringify(o?.labels)
      ) {
        epQ.add(objectKey(ep));
      }
    });
    this.endpoints.on('delete', (ep) => {
      epQ.add(objectKey(ep));
      viewsOf(ep.metadata.namespace, ep.metadata.name);
    });
    this.endpoints.on('resync', (ep) => epQ.add(objectKey(ep)));

    const viewChanged = (v: View & KubeObject): void => {
      viewQ.add(objectKey(v));
    };
    this.views.on('add', viewChanged);
    this.views.on('update', (v, old) => {
      if (v.metadata.generation !== old?.metadata.generation || v.metadata.deletionTimestamp) viewChanged(v);
    });
    this.views.on('resync', viewChanged);
    this.views.on('delete', (v) => {
      // Its Endpoint drops it from the config, and a sibling that lost a
      // name clash to it may now attach.
      if (v.spec?.endpointRef?.name) {
        epQ.add(`${v.metadata.namespace ?? ''}/${v.spec.endpointRef.name}`);
        viewsOf(v.metadata.namespace, v.spec.endpointRef.name);
      }
    });

    const toOwner = (obj: KubeObject): void => {
      const name = obj.metadata?.labels?.[ENDPOINT_LABEL];
      if (name) epQ.add(`${obj.metadata?.namespace ?? ''}/${name}`);
    };
    for (const inf of [this.statefulSets, this.pods]) {
      inf.on('add', toOwner);
      inf.on('update', toOwner);
      inf.on('delete', toOwner);
    }

    // A node cordoned, tainted for removal, or back: the Endpoints with a pod on it.
    const nodeChanged = (node: V1Node & KubeObject, old?: V1Node & KubeObject): void => {
      if (nodeLeaving(node) === undefined && nodeLeaving(old) === undefined) return;
      const name = node.metadata?.name;
      for (const p of this.pods.list()) if (p.spec?.nodeName === name) toOwner(p);
    };
    this.nodes?.on('add', (n) => nodeChanged(n));
    this.nodes?.on('update', nodeChanged);
    this.nodes?.on('delete', (n) => nodeChanged(n));
  }

  /** True once every informer listed and the workers run: what /readyz reports. */
  get isSynced(): boolean {
    return this.synced;
  }

  /**
   * Starts watching and reconciling; resolves once the caches are synced and
   * workers run, or when stop() is called meanwhile (then nothing runs).
   */
  async start(): Promise<void> {
    if (this.started) return;
    // Single use, like a client-go manager: its queues shut down for good at
    // stop(). A process that loses leadership exits and starts a new one.
    if (this.endpointQueue.isShuttingDown) throw new Error('an Operator cannot be restarted after stop()');
    this.started = true;
    const t0 = performance.now();
    const stopped = new Promise<'stopped'>((resolve) => (this.stopRequested = () => resolve('stopped')));
    const outcome = await Promise.race([
      Promise.all([
        this.statefulSets.start(),
        this.pods.start(),
        this.views.start(),
        this.endpoints.start(),
        this.nodes?.start(),
      ]),
      stopped,
    ]);
    if (outcome === 'stopped' || !this.started) return;
    this.log.info(
      {
        ms: Math.round(performance.now() - t0),
        namespaces: this.namespaces.length > 0 ? this.namespaces.join(',') : '(all)',
      },
      'caches synced',
    );
    const n = Math.max(1, this.opts.workers ?? 2);
    for (let i = 0; i < n; i++) {
      this.workers.push(
        this.worker(this.endpointQueue, 'endpoint', (k) => this.endpointController.reconcile(k)),
      );
      this.workers.push(this.worker(this.viewQueue, 'view', (k) => this.viewController.reconcile(k)));
    }
    this.synced = true;
  }

  /** Graceful: no new keys, in-flight reconciles finish (bounded), watches close, events flush. */
  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    this.synced = false;
    this.stopRequested?.();
    this.endpointQueue.shutDown();
    this.viewQueue.shutDown();
    const timeoutMs = this.opts.shutdownTimeoutMs ?? 20_000;
    const drained = await Promise.race([
      Promise.all(this.workers).then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs).unref()),
    ]);
    if (!drained) this.log.warn({ timeoutMs }, 'reconciles still running at shutdown');
    await Promise.all([
      this.endpoints.stop(),
      this.views.stop(),
      this.statefulSets.stop(),
      this.pods.stop(),
      this.nodes?.stop(),
    ]);
    await this.events.flush();
    await this.compiler.close();
    this.workers = [];
  }

  private async worker(queue: WorkQueue, controller: string, reconcile: Reconciler): Promise<void> {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      const end = this.metrics.reconcileDuration.startTimer({ controller });
      try {
        const result = await reconcile(key);
        queue.forget(key);
        if (result.requeueAfterMs !== undefined) {
          queue.addAfter(key, result.requeueAfterMs);
          this.metrics.reconcileTotal.inc({ controller, result: 'requeue' });
        } else {
          this.metrics.reconcileTotal.inc({ controller, result: 'success' });
        }
      } catch (err) {
        this.metrics.reconcileTotal.inc({ controller, result: 'error' });
        this.metrics.reconcileErrors.inc({ controller });
        const delayMs = queue.backoffMs(queue.failureCount(key));
        this.log.warn({ controller, key, err, retryInMs: delayMs }, 'reconcile failed');
        queue.addRateLimited(key);
      } finally {
        end();
        queue.done(key);
      }
    }
  }
}
