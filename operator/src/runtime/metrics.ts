// Operator metrics. A Registry is passed in (never prom-client's global one) so
// two operators in one test process do not share counters.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class OperatorMetrics {
  readonly registry: Registry;
  readonly reconcileTotal: Counter<'controller' | 'result'>;
  readonly reconcileErrors: Counter<'controller'>;
  readonly reconcileDuration: Histogram<'controller'>;
  readonly queueDepth: Gauge<'queue'>;
  readonly queueRetries: Counter<'queue'>;
  readonly queueDropped: Counter<'queue'>;
  readonly leader: Gauge;
  readonly leaderTransitions: Counter;
  readonly watchRestarts: Counter<'resource' | 'reason'>;
  readonly watchEvents: Counter<'resource' | 'type'>;

  constructor(registry: Registry = new Registry(), opts: { defaultMetrics?: boolean } = {}) {
    this.registry = registry;
    if (opts.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'landfall_operator_' });
    const registers = [registry];
    this.reconcileTotal = new Counter({
      name: 'landfall_operator_reconcile_total',
      help: 'Reconciles by controller and result (success, error, requeue).',
      labelNames: ['controller', 'result'],
      registers,
    });
    this.reconcileErrors = new Counter({
      name: 'landfall_operator_reconcile_errors_total',
      help: 'Reconciles that failed and were requeued with backoff.',
      labelNames: ['controller'],
      registers,
    });
    this.reconcileDuration = new Histogram({
      name: 'landfall_operator_reconcile_duration_seconds',
      help: 'Time of one reconcile.',
      labelNames: ['controller'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.queueDepth = new Gauge({
      name: 'landfall_operator_queue_depth',
      help: 'Keys waiting in the work queue (ready, not counting delayed retries).',
      labelNames: ['queue'],
      registers,
    });
    this.queueRetries = new Counter({
      name: 'landfall_operator_queue_retries_total',
      help: 'Keys requeued with backoff.',
      labelNames: ['queue'],
      registers,
    });
    this.queueDropped = new Counter({
      name: 'landfall_operator_queue_dropped_total',
      help: 'Keys refused because the queue was full (the periodic resync re-adds them).',
      labelNames: ['queue'],
      registers,
    });
    this.leader = new Gauge({
      name: 'landfall_operator_leader',
      help: '1 while this process holds the leader Lease (or runs without leader election).',
      registers,
    });
    this.leaderTransitions = new Counter({
      name: 'landfall_operator_leader_transitions_total',
      help: 'Times this process gained or lost leadership.',
      registers,
    });
    this.watchRestarts = new Counter({
      name: 'landfall_operator_watch_restarts_total',
      help: 'Watch restarts by resource and reason (closed, error, expired, watchdog, relist).',
      labelNames: ['resource', 'reason'],
      registers,
    });
    this.watchEvents = new Counter({
      name: 'landfall_operator_watch_events_total',
      help: 'Watch events received by resource and type.',
      labelNames: ['resource', 'type'],
      registers,
    });
  }
}
