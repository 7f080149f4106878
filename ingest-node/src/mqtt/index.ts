// The MQTT source as the node starts it: one BrokerSource per configured
// broker, all writing into the node's WAL under its backpressure, counted in
// its registry. See source.ts for the acknowledgement contract, docs/edge.md
// for the user's view.

import type { Registry } from 'prom-client';
import type { NodeConfig } from '../config/schema.ts';
import type { Logger } from '../log.ts';
import type { WriteAheadLog } from '../wal/types.ts';
import { RECORD_BYTES_MAX_DEFAULT } from '../wal/format.ts';
import { BrokerCounters, registerMqttMetrics } from './metrics.ts';
import { resolveBrokers } from './options.ts';
import type { ReadFileFn } from './options.ts';
import { BrokerSource, defaultConnect } from './source.ts';
import type { MqttBackpressure, MqttConnect } from './source.ts';

export { BrokerSource, defaultConnect } from './source.ts';
export type { MqttBackpressure, MqttConnect } from './source.ts';
export { MqttConfigError, defaultClientId, resolveBrokers } from './options.ts';
export type { MqttConfig, MqttBrokerConfig, MqttTopicConfig } from './options.ts';
export { BrokerCounters } from './metrics.ts';

export interface MqttSourceDeps {
  readonly wal: Pick<WriteAheadLog, 'append'>;
  readonly backpressure: MqttBackpressure;
  readonly registry: Registry;
  readonly log: Logger;
  readonly connect?: MqttConnect;
  readonly readFile?: ReadFileFn;
  readonly random?: () => number;
  /**
   * The WAL's bound on one record. Defaults to what node.ts gives the WAL
   * (limits.recordBytesMax, at least RECORD_BYTES_MAX_DEFAULT).
   */
  readonly walRecordBytesMax?: number;
  /**
   * A directory that survives restarts (node.ts: wal.dir) where each broker source
   * remembers that it had a session, so a session lost while the node was down is
   * counted too. Without it only losses between two connections of one process are.
   */
  readonly stateDir?: string;
}

export interface MqttSource {
  readonly brokers: readonly BrokerSource[];
  /** Writes what is held, acknowledges it, disconnects (sessions stay). True when clean and in time. */
  stop(timeoutMs: number): Promise<boolean>;
  status(): Record<string, unknown>[];
  /** Messages in WAL appends under way, over every broker (drain mode waits for 0). */
  appendingMessages(): number;
}

/**
 * Starts one connection per broker in `config.mqtt.brokers`; undefined when
 * there are none. Rejects on a bad block or an unreadable secret file; does
 * not wait for any broker (an edge box may boot before its broker).
 */
export async function startMqttSource(
  config: NodeConfig,
  deps: MqttSourceDeps,
): Promise<MqttSource | undefined> {
  if (config.mqtt.brokers.length === 0) return undefined;
  const resolved = resolveBrokers(config.mqtt, config.endpoint.name, config.instance.id);
  const counters = resolved.map((b) => new BrokerCounters(b.name));
  const brokers = resolved.map(
    (broker, i) =>
      new BrokerSource({
        broker,
        mqtt: config.mqtt,
        wal: deps.wal,
        backpressure: deps.backpressure,
        log: deps.log,
        counters: counters[i] ?? new BrokerCounters(broker.name),
        connect: deps.connect ?? defaultConnect,
        ...(deps.readFile !== undefined ? { readFile: deps.readFile } : {}),
        random: deps.random ?? Math.random,
        recordBytesMax: config.limits.recordBytesMax,
        walRecordBytesMax:
          deps.walRecordBytesMax ?? Math.max(config.limits.recordBytesMax, RECORD_BYTES_MAX_DEFAULT),
        inflightBytesMax: config.limits.inflightBytesMax,
        ...(deps.stateDir !== undefined ? { stateDir: deps.stateDir } : {}),
      }),
  );
  const started: BrokerSource[] = [];
  try {
    for (const b of brokers) {
      await b.start();
      started.push(b);
    }
  } catch (err) {
    await Promise.all(started.map((b) => b.stop(performance.now() + 1_000)));
    throw err;
  }
  registerMqttMetrics(deps.registry, counters);
  return {
    brokers,
    async stop(timeoutMs) {
      const deadline = performance.now() + timeoutMs;
      const results = await Promise.all(brokers.map((b) => b.stop(deadline)));
      return results.every(Boolean);
    },
    status: () => brokers.map((b) => b.status()),
    appendingMessages: () => brokers.reduce((n, b) => n + b.appendingMessages, 0),
  };
}
