// Metrics of the MQTT source, in the node's own registry. Like the HTTP
// counters in ../metrics.ts they are plain numbers kept by us and rendered at
// scrape time: a message is counted several times on the hot path, and
// prom-client's label validation per inc() would cost more than the count.
// Labels are bounded: one value per configured broker (≤ 16), QoS 0/1, and a
// small set of WAL error codes and drop reasons.

import type { Registry } from 'prom-client';
import { registerScrapeMetric } from '../metrics.ts';

/** The counters of one broker connection; the source mutates them directly. */
export class BrokerCounters {
  readonly broker: string;
  connected = 0;
  paused = 0;
  pending = 0;
  connects = 0;
  disconnects = 0;
  sessionsLost = 0;
  subscribeFailures = 0;
  readonly received: [number, number] = [0, 0];
  redelivered = 0;
  written = 0;
  writtenBytes = 0;
  acked = 0;
  ackSkipped = 0;
  oversize = 0;
  refusedTooLarge = 0;
  readonly appendFailures = new Map<string, number>();
  readonly dropped = new Map<string, number>();

  constructor(broker: string) {
    this.broker = broker;
  }

  countAppendFailure(code: string): void {
    this.appendFailures.set(code, (this.appendFailures.get(code) ?? 0) + 1);
  }

  countDropped(reason: 'too_large' | 'disconnect' | 'shutdown' | 'append_failed', n = 1): void {
    this.dropped.set(reason, (this.dropped.get(reason) ?? 0) + n);
  }
}

export function registerMqttMetrics(registry: Registry, brokers: readonly BrokerCounters[]): void {
  const per = (read: (b: BrokerCounters) => number) => () =>
    brokers.map((b) => ({ labels: { broker: b.broker }, value: read(b) }));
  const perMap = (key: string, read: (b: BrokerCounters) => Map<string, number>) => () =>
    brokers.flatMap((b) =>
      [...read(b)].map(([k, v]) => ({ labels: { broker: b.broker, [key]: k }, value: v })),
    );

  registerScrapeMetric(
    registry,
    'landfall_mqtt_connected',
    '1 while the connection to the broker is up (CONNACK received), 0 while connecting or backing off.',
    'gauge',
    per((b) => b.connected),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_paused',
    '1 while backpressure (WAL backlog, disk, WAL failure, draining) keeps the node from writing this broker’s messages; unacknowledged messages stay with the broker.',
    'gauge',
    per((b) => b.paused),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_pending_messages',
    'Messages received and not yet durable (waiting for or inside a WAL append).',
    'gauge',
    per((b) => b.pending),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_connects_total',
    'Successful connections (CONNACK) to the broker.',
    'counter',
    per((b) => b.connects),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_disconnects_total',
    'Connections lost or attempts failed (each is followed by a reconnect with backoff).',
    'counter',
    per((b) => b.disconnects),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_sessions_lost_total',
    'Reconnects where the broker had no session for the node (messages published meanwhile were not queued for it). Alert on > 0.',
    'counter',
    per((b) => b.sessionsLost),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_subscribe_failures_total',
    'Topic filters the broker refused in a SUBACK.',
    'counter',
    per((b) => b.subscribeFailures),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_messages_received_total',
    'PUBLISH packets received, by QoS.',
    'counter',
    () =>
      brokers.flatMap((b) => [
        { labels: { broker: b.broker, qos: 0 }, value: b.received[0] },
        { labels: { broker: b.broker, qos: 1 }, value: b.received[1] },
      ]),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_messages_redelivered_total',
    'PUBLISH packets with the DUP flag: the broker resent a message the node had not acknowledged (after a reconnect).',
    'counter',
    per((b) => b.redelivered),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_messages_written_total',
    'Messages made durable in the WAL.',
    'counter',
    per((b) => b.written),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_written_bytes_total',
    'WAL payload bytes (topic length + topic + message) of messages made durable.',
    'counter',
    per((b) => b.writtenBytes),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_acks_total',
    'PUBACKs sent, each after the message was durable in the WAL.',
    'counter',
    per((b) => b.acked),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_acks_skipped_total',
    'QoS 1 messages made durable after their connection was gone, so no PUBACK was sent; the broker redelivers them (a duplicate in the WAL).',
    'counter',
    per((b) => b.ackSkipped),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_messages_oversize_total',
    'Messages larger than limits.recordBytesMax, written anyway (see docs/edge.md).',
    'counter',
    per((b) => b.oversize),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_messages_refused_total',
    'QoS 1 messages too large for a WAL record: not acknowledged, connection closed; the broker keeps them. Alert on > 0.',
    'counter',
    per((b) => b.refusedTooLarge),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_messages_dropped_total',
    'QoS 0 messages lost, by reason (QoS 0 is best effort: the broker never resends them).',
    'counter',
    perMap('reason', (b) => b.dropped),
  );
  registerScrapeMetric(
    registry,
    'landfall_mqtt_append_failures_total',
    'WAL appends of MQTT messages that failed, by WAL error code; the messages are retried, never acknowledged before they are durable.',
    'counter',
    perMap('code', (b) => b.appendFailures),
  );
}
