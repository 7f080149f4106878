// Prometheus metrics of one node, in a Registry of its own (never prom-client's
// global one) so several nodes in one test process do not collide. Gauges that
// mirror other components' state are read at scrape time, not pushed.

import type { Registry } from 'prom-client';
import { Gauge, collectDefaultMetrics } from 'prom-client';
import type { Backpressure } from './backpressure.ts';
import type { WriteAheadLog } from './wal/types.ts';
import type { FileSystem } from './fs/types.ts';
import { quarantineCounts } from './wal/recovery.ts';

export interface NodeMetrics {
  readonly registry: Registry;
  countRequest(route: string, method: string, statusCode: number): void;
  countRejection(code: string): void;
  /** One 202: its records, payload bytes and receive-to-ack seconds. */
  countAccepted(records: number, payloadBytes: number, ackSeconds: number): void;
}

export interface MetricsSources {
  readonly wal: Pick<WriteAheadLog, 'stats'>;
  readonly backpressure: Backpressure;
}

export interface Sample {
  readonly labels?: Record<string, string | number>;
  readonly value: number;
  readonly metricName?: string;
}

/**
 * A metric whose values are plain numbers kept by us and rendered at scrape
 * time. prom-client's Counter/Histogram validate labels and allocate on every
 * inc/observe, which measurably slows a 1 KiB ingest request; these do not.
 */
export function registerScrapeMetric(
  registry: Registry,
  name: string,
  help: string,
  type: 'counter' | 'gauge' | 'histogram',
  values: () => Sample[],
): void {
  const metric = {
    name,
    help,
    type,
    aggregator: 'sum',
    get: () => ({ name, help, type, aggregator: 'sum', values: values() }),
    reset: () => {},
  };
  registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0]);
}

const ACK_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function createMetrics(
  registry: Registry,
  sources: MetricsSources,
  defaultMetrics = true,
): NodeMetrics {
  const registers = [registry];
  if (defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'landfall_' });

  // Bounded: routes are the registered ones (unknown URLs count as "unmatched"),
  // methods are the parser's known set, statuses and codes are small sets.
  const requests = new Map<string, { route: string; method: string; status: number; n: number }>();
  registerScrapeMetric(
    registry,
    'landfall_http_requests_total',
    'HTTP requests answered, by route, method and status code.',
    'counter',
    () =>
      [...requests.values()].map((r) => ({
        labels: { route: r.route, method: r.method, status: r.status },
        value: r.n,
      })),
  );
  const rejections = new Map<string, number>();
  registerScrapeMetric(
    registry,
    'landfall_http_errors_total',
    'Error answers by error code (see docs/errors.md).',
    'counter',
    () => [...rejections].map(([code, n]) => ({ labels: { code }, value: n })),
  );
  let records = 0;
  let payloadBytes = 0;
  registerScrapeMetric(
    registry,
    'landfall_ingest_records_total',
    'Records made durable and acknowledged with 202.',
    'counter',
    () => [{ value: records }],
  );
  registerScrapeMetric(
    registry,
    'landfall_ingest_bytes_total',
    'Record payload bytes (decoded) made durable and acknowledged with 202.',
    'counter',
    () => [{ value: payloadBytes }],
  );
  const ackCounts = new Float64Array(ACK_BUCKETS_S.length + 1);
  let ackSum = 0;
  let ackCount = 0;
  registerScrapeMetric(
    registry,
    'landfall_ingest_ack_seconds',
    'Time from receiving a POST /v1/ingest to its 202 (includes reading the body and the group fsync).',
    'histogram',
    () => {
      const out: Sample[] = [];
      let acc = 0;
      ACK_BUCKETS_S.forEach((le, i) => {
        acc += ackCounts[i] ?? 0;
        out.push({ labels: { le }, value: acc, metricName: 'landfall_ingest_ack_seconds_bucket' });
      });
      out.push({ labels: { le: '+Inf' }, value: ackCount, metricName: 'landfall_ingest_ack_seconds_bucket' });
      out.push({ value: ackSum, metricName: 'landfall_ingest_ack_seconds_sum' });
      out.push({ value: ackCount, metricName: 'landfall_ingest_ack_seconds_count' });
      return out;
    },
  );

  const bp = sources.backpressure;
  new Gauge({
    name: 'landfall_inflight_bytes',
    help: 'Decoded request bytes held by requests not yet answered.',
    registers,
    collect() {
      this.set(bp.inflightBytes);
    },
  });
  new Gauge({
    name: 'landfall_inflight_bytes_max',
    help: 'limits.inflightBytesMax.',
    registers,
    collect() {
      this.set(bp.snapshot().inflightBytesMax);
    },
  });
  new Gauge({
    name: 'landfall_ready',
    help: '1 while the node accepts writes, 0 while draining or over a watermark.',
    registers,
    collect() {
      this.set(bp.ready().accepting ? 1 : 0);
    },
  });
  const reasons = ['draining', 'wal_failed', 'wal_state_failing', 'wal_backlog', 'disk_low'] as const;
  new Gauge({
    name: 'landfall_backpressure_active',
    help: '1 while the given reason refuses writes.',
    labelNames: ['reason'] as const,
    registers,
    collect() {
      const active = new Set(bp.snapshot().reasons);
      for (const r of reasons) this.set({ reason: r }, active.has(r) ? 1 : 0);
    },
  });
  new Gauge({
    name: 'landfall_volume_free_bytes',
    help: 'Free bytes on the WAL volume at the last check.',
    registers,
    collect() {
      const free = bp.snapshot().diskFreeBytes;
      if (free !== null) this.set(free);
    },
  });

  const wal = sources.wal;
  // WAL bigints (seq, segment id) become float64, as every Prometheus sample
  // is (text with more digits would be parsed back to the same float). They
  // cannot pass 2^53 - 1, where floats stop being exact: the WAL refuses to
  // open once its seq gets there (wal/recovery.ts; frames carry seqs as plain
  // numbers, wal/format.ts), a segment is opened only to take a record so
  // segment ids stay at or below the seq, and from 0 a node taking 10 million
  // records/s would need 28 years. /v1/status has them exact, as strings.
  const walGauge = (
    name: string,
    help: string,
    read: (s: ReturnType<typeof wal.stats>) => number | bigint | null,
  ) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        const v = read(wal.stats());
        if (v !== null) this.set(Number(v));
      },
    });
  walGauge(
    'landfall_wal_retained_bytes',
    'Bytes of WAL segment files on the volume (open + sealed, not yet deleted).',
    (s) => s.retainedBytes,
  );
  walGauge('landfall_wal_open_segment_bytes', 'Bytes in the open WAL segment.', (s) => s.openSegmentBytes);
  walGauge('landfall_wal_open_segment_id', 'Id of the open WAL segment.', (s) => s.openSegmentId);
  walGauge(
    'landfall_wal_sealed_segments',
    'Sealed WAL segments still on the volume.',
    (s) => s.sealedSegments,
  );
  walGauge(
    'landfall_wal_next_seq',
    'Sequence number the next record will get (below 2^53 by the WAL; exact in /v1/status wal.nextSeq).',
    (s) => s.nextSeq,
  );
  // Counts since start are counters (reset at a restart, which rate() and increase() handle).
  const walCounter = (
    name: string,
    help: string,
    read: (s: ReturnType<typeof wal.stats>) => number | bigint | null,
  ) =>
    registerScrapeMetric(registry, name, help, 'counter', () => {
      const v = read(wal.stats());
      return v === null ? [] : [{ value: Number(v) }];
    });
  walCounter(
    'landfall_wal_appends_total',
    'WAL appends since start (one per accepted request).',
    (s) => s.appendsTotal,
  );
  walCounter(
    'landfall_wal_syncs_total',
    'WAL fdatasyncs since start (rate of appends / rate of syncs = group-commit batch size).',
    (s) => s.syncsTotal,
  );

  // The durable WAL reports more than the core contract; export what it has.
  type Extra = Partial<Record<string, unknown>>;
  const extra = (s: ReturnType<typeof wal.stats>, key: string): number | bigint | null => {
    const v = (s as unknown as Extra)[key];
    return typeof v === 'number' || typeof v === 'bigint' ? v : typeof v === 'boolean' ? Number(v) : null;
  };
  const extraGauge = (name: string, help: string, key: string) => walGauge(name, help, (s) => extra(s, key));
  const extraCounter = (name: string, help: string, key: string) =>
    walCounter(name, help, (s) => extra(s, key));
  extraGauge(
    'landfall_wal_queued_bytes',
    'Bytes of appends accepted by the WAL and not yet durable.',
    'queuedBytes',
  );
  extraGauge(
    'landfall_wal_undelivered_segments',
    'Sealed segments not yet delivered (no commit marker).',
    'undeliveredSegments',
  );
  extraGauge(
    'landfall_wal_undelivered_bytes',
    'Bytes of sealed segments not yet delivered.',
    'undeliveredBytes',
  );
  extraGauge(
    'landfall_wal_pipeline_depth',
    'Group-commit pipeline depth (wal.pipelineDepth): write groups that may be written and not yet acknowledged.',
    'pipelineDepth',
  );
  extraGauge(
    'landfall_wal_pipeline_groups_in_flight',
    'Write groups written or being written and not yet acknowledged, now.',
    'pipelineGroupsInFlight',
  );
  extraGauge(
    'landfall_wal_free_segment_files',
    'Delivered segment files kept for new segments to be written over (wal.recycleSegmentsMax).',
    'freeSegmentFiles',
  );
  extraGauge(
    'landfall_wal_free_segment_bytes',
    'Bytes of the free segment files (counted in landfall_wal_retained_bytes).',
    'freeSegmentBytes',
  );
  extraCounter(
    'landfall_wal_recycled_segments_total',
    'Segments written over a free (recycled) file since start.',
    'recycledSegmentsTotal',
  );
  extraCounter(
    'landfall_wal_pipelined_writes_total',
    "Group writes started while an earlier group's fdatasync ran (/ its group writes: how often the pipeline overlaps).",
    'pipelinedWritesTotal',
  );
  extraCounter(
    'landfall_wal_staged_appends_total',
    "Appends encoded into the next write group while the pipeline was full (during an earlier group's fdatasync), off the critical path between a sync's return and the next write.",
    'stagedAppendsTotal',
  );
  extraCounter(
    'landfall_wal_group_writes_total',
    'WAL write groups written since start.',
    'groupWritesTotal',
  );
  extraCounter(
    'landfall_wal_write_seconds_total',
    'Seconds WAL group writes took, from submit to completion (the I/O pool queue and event-loop delay included); / landfall_wal_group_writes_total = mean per group.',
    'writeSecondsTotal',
  );
  extraCounter(
    'landfall_wal_sync_seconds_total',
    'Seconds WAL fdatasyncs took, from submit to completion (the I/O pool queue and event-loop delay included); / landfall_wal_syncs_total = mean per sync.',
    'syncSecondsTotal',
  );
  extraCounter(
    'landfall_wal_write_failures_total',
    'WAL groups whose write or fdatasync failed since start.',
    'writeFailuresTotal',
  );
  extraGauge('landfall_wal_failed', '1 once the WAL refuses writes until a restart.', 'failed');
  extraGauge(
    'landfall_wal_unannounced_segments',
    'Sealed segments whose seal is not yet in the state file (delivery waits for them).',
    'unannouncedSegments',
  );
  extraCounter(
    'landfall_wal_recovery_truncations_total',
    'Torn WAL tails truncated at recovery (since start).',
    'recoveryTruncationsTotal',
  );
  extraCounter(
    'landfall_wal_quarantined_segments_total',
    'Files moved to quarantine/ since start; what is there now is landfall_wal_quarantine_files.',
    'quarantinedTotal',
  );

  return {
    registry,
    countRequest(route, method, statusCode) {
      const key = `${route} ${method} ${statusCode}`;
      const r = requests.get(key);
      if (r === undefined) requests.set(key, { route, method, status: statusCode, n: 1 });
      else r.n++;
    },
    countRejection(code) {
      rejections.set(code, (rejections.get(code) ?? 0) + 1);
    },
    countAccepted(n, bytes, seconds) {
      records += n;
      payloadBytes += bytes;
      ackSum += seconds;
      ackCount++;
      let i = 0;
      while (i < ACK_BUCKETS_S.length && seconds > (ACK_BUCKETS_S[i] ?? Infinity)) i++;
      ackCounts[i] = (ackCounts[i] ?? 0) + 1;
    },
  };
}

/**
 * Files in the WAL's quarantine/ folder now, read at scrape time: unlike the
 * counter it survives restarts, so an alert on it stays until a human has
 * looked and moved the files away. Two kinds: `segment` (a corrupt segment,
 * acknowledged data that is not delivered: alert on it) and `tail` (the copy
 * recovery keeps of a tail before truncating it: every crash that tore its
 * last group leaves one, so it is expected and only kept for forensics).
 * -1 when the folder cannot be read.
 */
export function registerQuarantineGauge(
  registry: Registry,
  fs: Pick<FileSystem, 'readdir'>,
  walDir: string,
): void {
  const name = 'landfall_wal_quarantine_files';
  const help =
    'Files in the WAL quarantine/ folder now: kind=segment is corrupt acknowledged data kept for a human, kind=tail the copies of truncated tails.';
  const metric = {
    name,
    help,
    type: 'gauge',
    aggregator: 'sum',
    get: async () => {
      const { segments, tails } = await quarantineCounts(fs, walDir);
      return {
        name,
        help,
        type: 'gauge',
        aggregator: 'sum',
        values: [
          { value: segments, labels: { kind: 'segment' } },
          { value: tails, labels: { kind: 'tail' } },
        ],
      };
    },
    reset: () => {},
  };
  registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0]);
}
