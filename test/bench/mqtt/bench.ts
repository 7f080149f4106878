// MQTT benchmark (a script, not a test): QoS 1 messages per second through
// Landfall's MQTT source — each message in the WAL, fdatasynced, before its
// PUBACK — next to the broker's own throughput to a plain mqtt.js subscriber
// that acknowledges on receipt, on the same Mosquitto, in the same run.
//
//   npm run bench:mqtt -- [--messages 50000] [--bytes 200] [--runs 3] [--window 256] [--inflight 1000]
//
// Two shapes, each run for both consumers, alternating (so a noisy neighbour
// hurts both alike); the table shows medians:
//  - drain: the messages are queued in the consumer's persistent session
//    while it is away, then it connects; clock from connect to the last
//    message acknowledged by the consumer. The consumer is the only bottleneck.
//  - live: the consumer is subscribed and a publisher (a worker thread) sends
//    with `window` unacknowledged; clock from the first publish to the last
//    message acknowledged by the consumer. Includes the publisher and broker.
// The WAL lives in the OS temp dir (check that it is a real disk: the figure
// is about fdatasync). Results go to stdout and test/bench/results/mqtt-*.json.

import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { startMosquitto } from '../../harness/index.ts';
import { startNode } from '../../../ingest-node/src/node.ts';
import type { RunningNode } from '../../../ingest-node/src/node.ts';
import { defaultConfig } from '../../../ingest-node/src/config/load.ts';
import type { PublisherJob, PublisherResult } from './publisher.ts';

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '50000' },
    bytes: { type: 'string', default: '200' },
    runs: { type: 'string', default: '3' },
    window: { type: 'string', default: '256' },
    inflight: { type: 'string', default: '1000' },
  },
});
const MESSAGES = Number(args.messages);
const BYTES = Number(args.bytes);
const RUNS = Math.max(3, Number(args.runs));
const WINDOW = Number(args.window);
const INFLIGHT = Number(args.inflight);
const POLL_MS = 2;

const here = path.dirname(fileURLToPath(import.meta.url));
const broker = await startMosquitto({
  // A plain consumer's session must hold the whole backlog; the defaults (1000) would drop it.
  extraConfig: ['max_queued_messages 0', 'max_queued_bytes 0'],
});
const scratch = await mkdtemp(path.join(tmpdir(), 'landfall-mqtt-bench-'));
let seq = 0;

function publish(topicPrefix: string): Promise<PublisherResult> {
  const job: PublisherJob = {
    url: broker.url,
    topicPrefix,
    messages: MESSAGES,
    bytes: BYTES,
    window: WINDOW,
  };
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL('./publisher.ts', import.meta.url), { workerData: job });
    w.once('message', (m: PublisherResult) => resolve(m));
    w.once('error', reject);
    w.once('exit', (code) => {
      if (code !== 0) reject(new Error(`publisher exited with ${code}`));
    });
  });
}

async function until(probe: () => boolean, what: string, timeoutMs = 300_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!probe()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

interface Consumer {
  /**
   * Connects (creating or resuming the session) and resolves once subscribed,
   * with the moment the connection was up (messages may flow from then on).
   */
  start(): Promise<number>;
  acked(): number;
  stop(): Promise<void>;
  extra(): Record<string, number>;
}

function landfall(name: string): Consumer {
  let node: RunningNode | undefined;
  const config = defaultConfig({
    listen: { port: 0 },
    wal: { dir: path.join(scratch, name) },
    endpoint: { name: 'bench' },
    instance: { id: name },
    mqtt: {
      brokers: [{ url: broker.url }],
      topics: [{ filter: `${name}/#`, qos: 1 }],
      inflightMessagesMax: INFLIGHT,
    },
  });
  return {
    async start() {
      node = await startNode(config);
      await until(() => node?.mqtt?.status()[0]?.['connected'] === true, 'landfall connected');
      return performance.now();
    },
    acked: () => Number(node?.mqtt?.status()[0]?.['acked'] ?? 0),
    async stop() {
      await node?.shutdown('bench');
    },
    extra(): Record<string, number> {
      const s = node?.wal.stats();
      return s === undefined ? {} : { walAppends: s.appendsTotal, walSyncs: s.syncsTotal };
    },
  };
}

function plain(name: string): Consumer {
  let client: MqttClient | undefined;
  let received = 0;
  return {
    async start() {
      client = mqtt.connect(broker.url, {
        clientId: name,
        clean: false,
        protocolVersion: 5,
        reconnectPeriod: 0,
        properties: { sessionExpiryInterval: 3600 },
      });
      client.on('message', () => {
        received++;
      });
      const connectedAt = await new Promise<number>((resolve, reject) => {
        client?.once('connect', () => resolve(performance.now()));
        client?.once('error', reject);
      });
      await client.subscribeAsync(`${name}/#`, { qos: 1 });
      return connectedAt;
    },
    acked: () => received,
    async stop() {
      await client?.endAsync();
    },
    extra: () => ({}),
  };
}

interface Sample {
  readonly ms: number;
  readonly msgsPerS: number;
  readonly extra: Record<string, number>;
}

/** Backlog queued in the session while the consumer is away, then drained. */
async function drain(make: (name: string) => Consumer): Promise<Sample> {
  const name = `drain-${++seq}`;
  const session = make(name);
  await session.start(); // creates the session and its subscription
  await session.stop();
  await publish(name);
  const consumer = make(name);
  // From the connection being up (not from process start: Landfall's boot is not the point here).
  const t0 = await consumer.start();
  await until(() => consumer.acked() >= MESSAGES, `${name}: ${MESSAGES} acked`);
  const ms = performance.now() - t0;
  const extra = consumer.extra();
  await consumer.stop();
  return { ms, msgsPerS: (MESSAGES / ms) * 1000, extra };
}

/** Consumer subscribed, publisher sending meanwhile. */
async function live(make: (name: string) => Consumer): Promise<Sample & { publisherMsgsPerS: number }> {
  const name = `live-${++seq}`;
  const consumer = make(name);
  await consumer.start();
  const t0 = performance.now();
  const pub = await publish(name);
  await until(() => consumer.acked() >= MESSAGES, `${name}: ${MESSAGES} acked`);
  const ms = performance.now() - t0;
  const extra = consumer.extra();
  await consumer.stop();
  return { ms, msgsPerS: (MESSAGES / ms) * 1000, extra, publisherMsgsPerS: (MESSAGES / pub.ms) * 1000 };
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
};

const loadBefore = loadavg();
const runs: Record<string, Sample[]> = { drainLandfall: [], drainPlain: [], liveLandfall: [], livePlain: [] };
const publisherAlone: number[] = [];
try {
  // Warm-up (JIT, page cache, broker): not counted.
  await drain(landfall);
  await drain(plain);
  for (let i = 0; i < RUNS; i++) {
    const order = i % 2 === 0 ? (['landfall', 'plain'] as const) : (['plain', 'landfall'] as const);
    for (const who of order) {
      const make = who === 'landfall' ? landfall : plain;
      const d = await drain(make);
      const l = await live(make);
      (who === 'landfall' ? runs['drainLandfall'] : runs['drainPlain'])?.push(d);
      (who === 'landfall' ? runs['liveLandfall'] : runs['livePlain'])?.push(l);
    }
    // The publisher's own ceiling: nobody subscribed.
    const alone = await publish(`nobody-${i}`);
    publisherAlone.push((alone.messages / alone.ms) * 1000);
  }
} finally {
  await broker.stop();
  await rm(scratch, { recursive: true, force: true });
}

const loadAfter = loadavg();
const summary = Object.fromEntries(
  Object.entries(runs).map(([k, xs]) => [
    k,
    {
      medianMsgsPerS: Math.round(median(xs.map((x) => x.msgsPerS))),
      runsMsgsPerS: xs.map((x) => Math.round(x.msgsPerS)),
      medianMs: Math.round(median(xs.map((x) => x.ms))),
      ...(xs[0]?.extra.walSyncs !== undefined
        ? {
            medianMessagesPerFsync: Number(
              median(xs.map((x) => MESSAGES / (x.extra['walSyncs'] ?? 1))).toFixed(1),
            ),
          }
        : {}),
    },
  ]),
) as Record<
  string,
  { medianMsgsPerS: number; runsMsgsPerS: number[]; medianMs: number; medianMessagesPerFsync?: number }
>;

const fmt = (n: number | undefined): string =>
  n === undefined ? '-' : Math.round(n).toLocaleString('en-US');
const ratio = (a: string, b: string): string =>
  ((summary[a]?.medianMsgsPerS ?? 0) / (summary[b]?.medianMsgsPerS ?? 1)).toFixed(2);
const lines = [
  '',
  `MQTT QoS 1, ${MESSAGES} messages of ${BYTES} B, median of ${RUNS} runs (Mosquitto, ${cpus().length} CPUs, node ${process.version})`,
  '',
  '| shape | Landfall (PUBACK after WAL fdatasync) msg/s | plain subscriber msg/s | ratio | Landfall msgs per fsync |',
  '| --- | ---: | ---: | ---: | ---: |',
  `| drain (backlog in the session) | ${fmt(summary['drainLandfall']?.medianMsgsPerS)} | ${fmt(summary['drainPlain']?.medianMsgsPerS)} | ${ratio('drainLandfall', 'drainPlain')} | ${summary['drainLandfall']?.medianMessagesPerFsync ?? '-'} |`,
  `| live (publisher window ${WINDOW}) | ${fmt(summary['liveLandfall']?.medianMsgsPerS)} | ${fmt(summary['livePlain']?.medianMsgsPerS)} | ${ratio('liveLandfall', 'livePlain')} | ${summary['liveLandfall']?.medianMessagesPerFsync ?? '-'} |`,
  '',
  `publisher alone (no subscriber): ${fmt(median(publisherAlone))} msg/s; load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')} → ${loadAfter.map((x) => x.toFixed(2)).join(' ')}`,
  '',
];
console.log(lines.join('\n'));

const result = {
  at: new Date().toISOString(),
  node: process.version,
  cpus: cpus().length,
  loadavgBefore: loadBefore,
  loadavgAfter: loadAfter,
  options: {
    messages: MESSAGES,
    bytes: BYTES,
    runs: RUNS,
    window: WINDOW,
    inflightMessagesMax: INFLIGHT,
    walDir: tmpdir(),
  },
  summary,
  publisherAloneMedianMsgsPerS: Math.round(median(publisherAlone)),
  runs,
};
const resultsDir = path.join(here, '..', 'results');
await mkdir(resultsDir, { recursive: true });
const file = path.join(resultsDir, `mqtt-${result.at.replaceAll(':', '-')}.json`);
await writeFile(file, JSON.stringify(result, null, 2) + '\n');
console.log(`wrote ${path.relative(process.cwd(), file)}`);
