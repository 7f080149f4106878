// The MQTT source of a whole node (startNode) against a real Mosquitto:
// messages reach the WAL with their topics; a node whose WAL never confirms
// never acknowledges (the broker redelivers to the next node); backpressure
// stops acknowledging without losing anything; reconnect after a broker
// restart; TLS with a client certificate, a password file (re-read on
// reconnect) and WebSockets.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { startMosquitto, freePort } from '../../test/harness/index.ts';
import type { MosquittoServer } from '../../test/harness/index.ts';
import { startNode } from '../src/node.ts';
import type { RunningNode } from '../src/node.ts';
import { defaultConfig } from '../src/config/load.ts';
import type { AppendResult, DurableWalStats, RecordFormat, WriteAheadLog } from '../src/wal/types.ts';
import { decodeMqttPayload } from '../src/wal/format.ts';
import { openWal } from '../src/wal/wal.ts';
import { Registry } from 'prom-client';
import { startMqttSource } from '../src/mqtt/index.ts';
import { MemoryWal } from './helpers/memory-wal.ts';
import { memoryLogger, metricValue, readMqttRecords, until } from './mqtt-helpers.ts';

let broker: MosquittoServer;
let dir: string;
const nodes: RunningNode[] = [];
const clients: MqttClient[] = [];

before(async () => {
  // No cap on what the broker queues for an absent session: the tests count every message.
  broker = await startMosquitto({ extraConfig: ['max_queued_messages 0'] });
  dir = mkdtempSync(join(tmpdir(), 'landfall-mqtt-'));
});

after(async () => {
  await Promise.all(nodes.map((n) => n.shutdown('test end')));
  await Promise.all(clients.map((c) => c.endAsync(true)));
  await broker?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function nodeConfig(
  name: string,
  mqttBlock: Record<string, unknown> = {},
  rest: Record<string, unknown> = {},
) {
  return defaultConfig({
    listen: { port: 0 },
    wal: { dir: join(dir, name) },
    endpoint: { name: 'edge' },
    instance: { id: name },
    shutdown: { timeoutMs: 2000 },
    mqtt: {
      brokers: [{ url: broker.url }],
      topics: [{ filter: `${name}/#`, qos: 1 }],
      reconnectMinMs: 20,
      reconnectMaxMs: 200,
      ...mqttBlock,
    },
    ...rest,
  });
}

async function start(
  config: ReturnType<typeof nodeConfig>,
  deps: Parameters<typeof startNode>[1] = {},
): Promise<{ node: RunningNode; log: ReturnType<typeof memoryLogger> }> {
  const log = memoryLogger();
  const node = await startNode(config, { log, ...deps });
  nodes.push(node);
  return { node, log };
}

async function subscribed(log: ReturnType<typeof memoryLogger>, n = 1): Promise<void> {
  await until(() => log.lines.filter((l) => l.msg === 'MQTT: subscribed').length >= n, 'MQTT: subscribed');
}

function metric(
  node: RunningNode,
  name: string,
  labels: Record<string, string | number> = {},
): Promise<number> {
  return metricValue(node.server.metrics.registry, name, labels);
}

/** A source on the real broker, its WAL taking records of at most 1 KiB, with no backpressure. */
async function kibRecordSource(config: ReturnType<typeof nodeConfig>) {
  const wal = new MemoryWal();
  const registry = new Registry();
  const log = memoryLogger();
  const source = await startMqttSource(config, {
    wal,
    registry,
    log,
    backpressure: { admit: () => undefined, tryReserve: () => true, release: () => {} },
    walRecordBytesMax: 1024,
  });
  assert.ok(source);
  return { source, registry, log, wal };
}

async function publisher(url = broker.url): Promise<MqttClient> {
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000 });
  clients.push(c);
  return c;
}

/** Publishes `ids` with QoS 1 and resolves once the broker acknowledged every one. */
async function publishAll(
  c: MqttClient,
  topic: (id: number) => string,
  ids: readonly number[],
): Promise<void> {
  await Promise.all(ids.map((id) => c.publishAsync(topic(id), JSON.stringify({ id }), { qos: 1 })));
}

const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);

/** A WAL whose appends never resolve: a node on it can never have acknowledged anything. */
class StuckWal implements WriteAheadLog {
  received = 0;
  append(records: readonly Uint8Array[], _format: RecordFormat): Promise<AppendResult> {
    this.received += records.length;
    return new Promise(() => {});
  }
  stats(): DurableWalStats {
    return new MemoryWal().stats() as DurableWalStats;
  }
  async close(): Promise<void> {}
}

void describe('MQTT source on a real broker', () => {
  void it('QoS 1 and QoS 0 messages land in the WAL with their topics, batched into group commits', async (t) => {
    const { node, log } = await start(nodeConfig('basic'));
    await subscribed(log);
    const pub = await publisher();
    const ids = range(0, 500);
    await publishAll(pub, (id) => `basic/site-${id % 3}/temp`, ids);
    await Promise.all(range(1000, 20).map((id) => pub.publishAsync('basic/q0', `{"id":${id}}`, { qos: 0 })));
    await until(
      async () => (await metric(node, 'landfall_mqtt_messages_written_total')) === 520,
      '520 written',
    );
    await until(async () => (await metric(node, 'landfall_mqtt_acks_total')) === 500, '500 PUBACKs');
    assert.equal(await metric(node, 'landfall_mqtt_messages_received_total', { qos: 1 }), 500);
    assert.equal(await metric(node, 'landfall_mqtt_messages_received_total', { qos: 0 }), 20);
    assert.equal(await metric(node, 'landfall_mqtt_connected'), 1);
    const appends = node.wal.stats().appendsTotal;
    t.diagnostic(`520 messages in ${appends} WAL appends`);
    assert.ok(appends < 520, 'messages that arrive together share an append');
    assert.equal(await node.shutdown('test'), true);

    const records = readMqttRecords(join(dir, 'basic'), { strict: true });
    assert.equal(records.length, 520);
    for (const r of records) {
      const id = (JSON.parse(r.message) as { id: number }).id;
      assert.equal(r.topic, id >= 1000 ? 'basic/q0' : `basic/site-${id % 3}/temp`);
    }
    assert.deepEqual(
      records
        .map((r) => (JSON.parse(r.message) as { id: number }).id)
        .filter((id) => id < 1000)
        .sort((a, b) => a - b),
      ids,
    );
  });

  void it('a node whose WAL append never resolves acknowledges nothing: the broker redelivers to the next node', async () => {
    const stuck = new StuckWal();
    const cfg = nodeConfig('stuck', {}, { shutdown: { timeoutMs: 300 } });
    const first = await start(cfg, { openWal: async () => stuck });
    await subscribed(first.log);
    const pub = await publisher();
    await publishAll(pub, (id) => `stuck/${id}`, range(0, 50));
    await until(
      async () => (await metric(first.node, 'landfall_mqtt_messages_received_total', { qos: 1 })) === 50,
      'all 50 read by the node',
    );
    assert.ok(stuck.received > 0, 'an append is open');
    assert.equal(await metric(first.node, 'landfall_mqtt_acks_total'), 0);
    assert.equal(await first.node.shutdown('test'), false, 'stop gave up on the append that never resolved');

    // Same endpoint and instance: same client id, same session. Real WAL this time.
    const second = await start(nodeConfig('stuck'));
    await until(
      async () => (await metric(second.node, 'landfall_mqtt_acks_total')) >= 50,
      'redelivered and acked',
    );
    assert.ok((await metric(second.node, 'landfall_mqtt_messages_redelivered_total')) >= 1, 'DUP flag seen');
    assert.ok(
      second.log.lines.some(
        (l) =>
          l.msg === 'MQTT: connected' && (l.fields as { sessionPresent?: boolean }).sessionPresent === true,
      ),
    );
    assert.equal(await second.node.shutdown('test'), true);
    const got = new Set(readMqttRecords(join(dir, 'stuck'), { strict: true }).map((r) => r.topic));
    assert.deepEqual(
      [...got].sort(),
      range(0, 50)
        .map((id) => `stuck/${id}`)
        .sort(),
    );
  });

  void it('backpressure: while the WAL is over its watermark nothing is acknowledged or lost; it resumes below the low one', async (t) => {
    const wal = new MemoryWal();
    wal.retainedBytesExtra = 4 * 1024 * 1024; // over walBytesHigh from the start
    const cfg = nodeConfig(
      'bp',
      { inflightMessagesMax: 10 },
      { backpressure: { walBytesHigh: 2 * 1024 * 1024, walBytesLow: 1024 * 1024 } },
    );
    const { node, log } = await start(cfg, { openWal: async () => wal, apiKeys: null });
    await subscribed(log);
    const pub = await publisher();
    await publishAll(pub, (id) => `bp/${id}`, range(0, 100)); // the broker takes all 100
    await until(async () => (await metric(node, 'landfall_mqtt_paused')) === 1, 'paused');
    await until(async () => (await metric(node, 'landfall_mqtt_pending_messages')) >= 10, 'window full');
    const held = await metric(node, 'landfall_mqtt_pending_messages');
    t.diagnostic(`held while paused: ${held} (receive maximum 10)`);
    assert.ok(held <= 11, 'the broker respected Receive Maximum (or the node stopped reading)');
    assert.equal(wal.appends.length, 0);
    assert.equal(await metric(node, 'landfall_mqtt_acks_total'), 0);
    assert.equal((await fetch(`${node.url}/readyz`)).status, 503);

    wal.retainedBytesExtra = 1536 * 1024; // between the watermarks: still refusing (hysteresis)
    await node.server.backpressure.refresh();
    assert.equal(node.server.backpressure.admit()?.code, 'LF_WAL_BACKLOG');
    wal.retainedBytesExtra = 0;
    await until(
      async () => (await metric(node, 'landfall_mqtt_acks_total')) === 100,
      'all 100 acked after resume',
    );
    assert.equal(await metric(node, 'landfall_mqtt_paused'), 0);
    const ids = wal.appends.flatMap((a) => a.records.map((r) => decodeMqttPayload(r).topic));
    assert.deepEqual(
      [...new Set(ids)].sort(),
      range(0, 100)
        .map((id) => `bp/${id}`)
        .sort(),
    );
    assert.ok(log.has('accepting writes again'));
  });

  void it('paused past inflightMessagesMax (MQTT 3.1.1): the connection outlives the keepalive while the socket is not read', async () => {
    const wal = new MemoryWal();
    wal.retainedBytesExtra = 4 * 1024 * 1024; // over walBytesHigh: the node refuses writes
    const cfg = nodeConfig(
      'heldping',
      { protocolVersion: 4, inflightMessagesMax: 10, keepaliveSec: 1 },
      { backpressure: { walBytesHigh: 2 * 1024 * 1024, walBytesLow: 1024 * 1024 } },
    );
    const { node, log } = await start(cfg, { openWal: async () => wal, apiKeys: null });
    await subscribed(log);
    const pub = await publisher();
    // Mosquitto sends up to 20 unacknowledged (max_inflight_messages): 10 held, then a callback held.
    await publishAll(pub, (id) => `heldping/${id}`, range(0, 100));
    await until(async () => (await metric(node, 'landfall_mqtt_pending_messages')) === 11, 'holding');
    await new Promise((resolve) => setTimeout(resolve, 5_000)); // over 3 × 1.5 × keepalive
    assert.equal(await metric(node, 'landfall_mqtt_disconnects_total'), 0, 'no keepalive timeout');
    assert.equal(await metric(node, 'landfall_mqtt_connected'), 1);
    wal.retainedBytesExtra = 0;
    await until(async () => (await metric(node, 'landfall_mqtt_acks_total')) === 100, 'all acked', 15_000);
    const topics = new Set(wal.appends.flatMap((a) => a.records.map((r) => decodeMqttPayload(r).topic)));
    assert.equal(topics.size, 100);
    assert.equal(await metric(node, 'landfall_mqtt_messages_redelivered_total'), 0);
    assert.equal(await node.shutdown('test'), true);
  });

  void it('drain mode: MQTT publishes are not acknowledged while draining (they stay with the broker), delivered after DELETE', async () => {
    const cfg = nodeConfig('drain', {}, { s3: { localDir: join(dir, 'drain-bucket') } });
    const { node, log } = await start(cfg, { apiKeys: null });
    await subscribed(log);
    const pub = await publisher();
    await publishAll(pub, (id) => `drain/${id}`, range(0, 50));
    await until(async () => (await metric(node, 'landfall_mqtt_acks_total')) === 50, '50 acked');

    const posted = await fetch(`${node.adminUrl}/v1/drain`, { method: 'POST' });
    assert.equal(posted.status, 202);
    await publishAll(pub, (id) => `drain/${id}`, range(50, 50)); // the broker takes them
    await until(async () => (await metric(node, 'landfall_mqtt_paused')) === 1, 'paused by drain mode');
    assert.equal(await metric(node, 'landfall_mqtt_acks_total'), 50, 'nothing acknowledged while draining');
    // Drained: the 50 acknowledged messages are delivered, the 50 held ones were never written.
    await until(async () => {
      const st = (await (await fetch(`${node.adminUrl}/v1/status`)).json()) as {
        drain: { drained: boolean };
      };
      return st.drain.drained;
    }, 'drained');
    assert.equal(node.wal.stats().nextSeq, 51n);
    assert.equal(await metric(node, 'landfall_mqtt_acks_total'), 50);

    assert.equal((await fetch(`${node.adminUrl}/v1/drain`, { method: 'DELETE' })).status, 200);
    await until(
      async () => (await metric(node, 'landfall_mqtt_acks_total')) === 100,
      'all 100 acked after DELETE',
    );
    assert.equal(node.wal.stats().nextSeq, 101n);
  });

  void it('drain mode: an MQTT append under way when drain mode begins holds `drained` until it is durable and delivered', async () => {
    // The node's real WAL, whose appends wait at a gate while it is shut: the
    // moment between a message taken from the broker and its PUBACK.
    let gateOpen = true;
    let openGate: () => void = () => {};
    let held = 0;
    const cfg = nodeConfig('drain-inflight', {}, { s3: { localDir: join(dir, 'drain-inflight-bucket') } });
    const { node, log } = await start(cfg, {
      apiKeys: null,
      openWal: async (options) => {
        const real = await openWal(options);
        return new Proxy(real, {
          get(target, prop) {
            if (prop === 'append')
              return async (records: readonly Uint8Array[], format: RecordFormat) => {
                if (!gateOpen) {
                  held++;
                  await new Promise<void>((r) => (openGate = r));
                }
                return target.append(records, format);
              };
            const v = Reflect.get(target, prop, target) as unknown;
            return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
          },
        });
      },
    });
    await subscribed(log);
    const pub = await publisher();
    gateOpen = false;
    await publishAll(pub, (id) => `drain-inflight/${id}`, [0]);
    await until(() => held === 1, 'the append of message 0 held at the gate');

    assert.equal((await fetch(`${node.adminUrl}/v1/drain`, { method: 'POST' })).status, 202);
    const drained = async (): Promise<boolean> =>
      ((await (await fetch(`${node.adminUrl}/v1/status`)).json()) as { drain: { drained: boolean } }).drain
        .drained;
    // Nothing open, sealed or pending, no HTTP request: only the append under way is left.
    assert.equal(node.wal.stats().openSegmentBytes, 0);
    assert.equal(await drained(), false, 'not drained while an MQTT append is under way');
    assert.equal(await metric(node, 'landfall_mqtt_acks_total'), 0);

    gateOpen = true;
    openGate();
    await until(async () => (await metric(node, 'landfall_mqtt_acks_total')) === 1, 'message 0 acknowledged');
    await until(drained, 'drained once the acknowledged message is delivered');
    assert.equal(node.wal.stats().nextSeq, 2n);
    assert.equal((node.wal.stats() as DurableWalStats).undeliveredSegments, 0, 'its segment was delivered');
  });

  void it('a message too large for a WAL record: an MQTT 5 broker does not send it; over MQTT 3.1.1 it is refused, never acked', async () => {
    const pub = await publisher();
    const noBackpressure = { admit: () => undefined, tryReserve: () => true, release: () => {} };
    for (const protocolVersion of [5, 4] as const) {
      const wal = new MemoryWal();
      const registry = new Registry();
      const log = memoryLogger();
      const cfg = nodeConfig(`big${protocolVersion}`, { protocolVersion });
      const source = await startMqttSource(cfg, {
        wal,
        registry,
        log,
        backpressure: noBackpressure,
        walRecordBytesMax: 1024,
      });
      assert.ok(source);
      try {
        await subscribed(log);
        await pub.publishAsync(`big${protocolVersion}/large`, Buffer.alloc(2048, 1), { qos: 1 });
        await pub.publishAsync(`big${protocolVersion}/small`, 'ok', { qos: 1 });
        const m = (name: string) => metricValue(registry, name);
        if (protocolVersion === 5) {
          // Maximum Packet Size 1024 in CONNECT: Mosquitto discards the large one (and logs it), the rest flows.
          await until(async () => (await m('landfall_mqtt_acks_total')) === 1, 'the small one acked');
          assert.deepEqual(
            wal.appends.flatMap((a) => a.records.map((r) => decodeMqttPayload(r).topic)),
            ['big5/small'],
          );
        } else {
          await until(
            async () => (await m('landfall_mqtt_messages_refused_total')) >= 2,
            'refused on every redelivery',
          );
          assert.equal(await m('landfall_mqtt_acks_total'), 0, 'never acknowledged: the broker keeps it');
          assert.equal(wal.appends.length, 0);
        }
      } finally {
        await source.stop(1000);
      }
    }
  });

  void it('over MQTT 3.1.1 a message too large is refused at its fixed header, not buffered whole first', async () => {
    const pub = await publisher();
    let bytesRead = 0;
    const wal = new MemoryWal();
    const registry = new Registry();
    const log = memoryLogger();
    const source = await startMqttSource(nodeConfig('wire4', { protocolVersion: 4 }), {
      wal,
      registry,
      log,
      backpressure: { admit: () => undefined, tryReserve: () => true, release: () => {} },
      walRecordBytesMax: 1024,
      connect: (url, options) => {
        const client = mqtt.connect(url, options);
        // Counts what the node's connections read (wrapped before the source wraps it).
        const c = client as unknown as { streamBuilder: (cl: MqttClient) => NodeJS.ReadableStream };
        const build = c.streamBuilder;
        c.streamBuilder = (cl) => {
          const stream = build(cl);
          stream.on('data', (chunk: Buffer) => {
            bytesRead += chunk.length;
          });
          return stream;
        };
        return client;
      },
    });
    assert.ok(source);
    try {
      await subscribed(log);
      await pub.publishAsync('wire4/large', Buffer.alloc(16 * 1024 * 1024, 1), { qos: 1 });
      const m = (name: string) => metricValue(registry, name);
      await until(
        async () => (await m('landfall_mqtt_messages_refused_total')) >= 2,
        'refused on every redelivery',
      );
      assert.equal(await m('landfall_mqtt_acks_total'), 0, 'never acknowledged: the broker keeps it');
      assert.equal(wal.appends.length, 0);
      assert.ok(
        bytesRead < 4 * 1024 * 1024,
        `read ${bytesRead} bytes over ${await m('landfall_mqtt_connects_total')} connections: not the 16 MiB message`,
      );
      assert.ok(log.has('connection closed before reading it'));
    } finally {
      await source.stop(1000);
    }
  });

  void it('over MQTT 3.1.1 a QoS 1 message too large that arrives whole in one read is refused once per delivery, not again by the parser', async () => {
    const pub = await publisher();
    const { source, registry, log } = await kibRecordSource(nodeConfig('wire1', { protocolVersion: 4 }));
    try {
      await subscribed(log);
      await pub.publishAsync('wire1/large', Buffer.alloc(4096, 1), { qos: 1 });
      const refused = () => metricValue(registry, 'landfall_mqtt_messages_refused_total');
      await until(async () => (await refused()) >= 3, 'refused on every redelivery');
      await source.stop(1000);
      const atHeader = log.lines.filter((l) =>
        String(l.msg).includes('connection closed before reading it'),
      ).length;
      assert.equal(await refused(), atHeader, 'each delivery refused once, at its fixed header');
      assert.ok(!log.has('closing the connection (the broker keeps it)'), 'the parser never saw it');
    } finally {
      await source.stop(1000);
    }
  });

  void it('over MQTT 3.1.1 a QoS 0 message too large is dropped alone: the connection stays, every small QoS 0 message around it is written, it is counted once', async () => {
    const pub = await publisher();
    const { source, registry, log, wal } = await kibRecordSource(
      nodeConfig('wire0', { protocolVersion: 4, topics: [{ filter: 'wire0/#', qos: 0 }] }),
    );
    try {
      await subscribed(log);
      for (let i = 0; i < 100; i++) {
        if (i === 50) await pub.publishAsync('wire0/big', Buffer.alloc(4096, 1), { qos: 0 });
        await pub.publishAsync('wire0/small', JSON.stringify({ i }), { qos: 0 });
      }
      const m = (name: string, labels: Record<string, string> = {}) => metricValue(registry, name, labels);
      const small = (): number =>
        wal.appends.flatMap((a) => a.records).filter((r) => decodeMqttPayload(r).topic === 'wire0/small')
          .length;
      await until(() => small() === 100, 'every small QoS 0 message written');
      assert.equal(await m('landfall_mqtt_messages_dropped_total', { reason: 'too_large' }), 1);
      assert.equal(await m('landfall_mqtt_messages_received_total', { qos: '0' }), 101);
      assert.equal(await m('landfall_mqtt_disconnects_total'), 0);
    } finally {
      await source.stop(1000);
    }
  });

  void it('a message larger than limits.inflightBytesMax (within the WAL bound): MQTT 5 broker does not send it; the rest flows', async () => {
    // A small box: passes the load check (1 MiB + 1000 × 128 ≤ 2 MiB); the WAL bound stays 16 MiB.
    const cfg = nodeConfig(
      'budget',
      {},
      {
        limits: {
          decodedBytesMax: 1024 * 1024,
          recordsPerRequestMax: 1000,
          inflightBytesMax: 2 * 1024 * 1024,
        },
      },
    );
    const { node, log } = await start(cfg);
    await subscribed(log);
    const pub = await publisher();
    await pub.publishAsync('budget/big', Buffer.alloc(3 * 1024 * 1024, 0x61), { qos: 1 });
    await publishAll(pub, (id) => `budget/small/${id}`, range(0, 5));
    await until(
      async () => (await metric(node, 'landfall_mqtt_acks_total')) === 5,
      'the five small ones acked',
    );
    const records = readMqttRecords(join(dir, 'budget'), { strict: true });
    assert.deepEqual(
      records.map((r) => r.topic).sort(),
      range(0, 5).map((id) => `budget/small/${id}`),
    );
    assert.equal(await metric(node, 'landfall_mqtt_pending_messages'), 0);
  });

  void it('reconnects after the broker restarts, with the session intact', async () => {
    const own = await startMosquitto({ extraConfig: ['max_queued_messages 0'] });
    try {
      const { node, log } = await start(nodeConfig('restart', { brokers: [{ url: own.url }] }));
      await subscribed(log);
      await own.stopServer(); // SIGTERM: mosquitto saves the session
      await until(async () => (await metric(node, 'landfall_mqtt_connected')) === 0, 'disconnected');
      await own.startServer();
      await until(
        async () => (await metric(node, 'landfall_mqtt_connects_total')) === 2,
        'reconnected',
        15_000,
      );
      assert.equal(await metric(node, 'landfall_mqtt_sessions_lost_total'), 0);
      const pub = await publisher(own.url);
      await publishAll(pub, (id) => `restart/${id}`, range(0, 10));
      await until(
        async () => (await metric(node, 'landfall_mqtt_acks_total')) === 10,
        'acked after reconnect',
      );
      await pub.endAsync();
      await node.shutdown('test');
    } finally {
      await own.stop();
    }
  });
});

void describe('MQTT source: a session lost while the node was down', () => {
  void it('is counted by the restarted node (the session is remembered in wal.dir)', async () => {
    const own = await startMosquitto({ extraConfig: ['max_queued_messages 0'] });
    try {
      const cfg = nodeConfig('lostsession', { brokers: [{ url: own.url }] });
      const a = await start(cfg);
      await subscribed(a.log);
      assert.equal(await metric(a.node, 'landfall_mqtt_sessions_lost_total'), 0, 'the first session ever');
      assert.equal(await a.node.shutdown('test'), true);
      await own.stopServer({ graceMs: 0 }); // SIGKILL: the broker loses the session
      await own.startServer();
      const b = await start(cfg);
      await subscribed(b.log);
      assert.equal(await metric(b.node, 'landfall_mqtt_sessions_lost_total'), 1);
      assert.ok(b.log.lines.some((l) => l.level === 'error' && l.msg?.includes('no session') === true));
      assert.equal(await b.node.shutdown('test'), true);
    } finally {
      await own.stop();
    }
  });
});

void describe('MQTT source: paused when the broker loses the session', () => {
  void it('landfall_mqtt_paused returns to 0 once the WAL drains, though nothing is held any more', async () => {
    const own = await startMosquitto({ extraConfig: ['max_queued_messages 0'] });
    const wal = new MemoryWal();
    wal.retainedBytesExtra = 4 * 1024 * 1024; // over walBytesHigh: the node refuses writes
    try {
      const cfg = nodeConfig(
        'pausedlost',
        { brokers: [{ url: own.url }] },
        { backpressure: { walBytesHigh: 2 * 1024 * 1024, walBytesLow: 1024 * 1024 } },
      );
      const { node, log } = await start(cfg, { openWal: async () => wal, apiKeys: null });
      await subscribed(log);
      const pub = await publisher(own.url);
      await publishAll(pub, (id) => `pausedlost/${id}`, range(0, 3));
      await pub.endAsync(true);
      await until(async () => (await metric(node, 'landfall_mqtt_paused')) === 1, 'paused');
      await own.stopServer({ graceMs: 0 }); // SIGKILL: the session and the 3 messages are gone
      await own.startServer();
      await until(
        async () => (await metric(node, 'landfall_mqtt_connects_total')) >= 2,
        'reconnected',
        15_000,
      );
      assert.equal(await metric(node, 'landfall_mqtt_pending_messages'), 0);
      wal.retainedBytesExtra = 0;
      await node.server.backpressure.refresh();
      assert.equal(node.server.backpressure.admit(), undefined);
      await until(async () => (await metric(node, 'landfall_mqtt_paused')) === 0, 'resumed', 3000);
      assert.deepEqual(
        node.mqtt?.status().map((s) => [s.paused, s.pauseReason]),
        [[false, null]],
      );
      assert.equal(await node.shutdown('test'), true);
    } finally {
      await own.stop();
    }
  });
});

void describe('MQTT source: TLS, passwords, WebSockets', () => {
  let tls: MosquittoServer;
  let pki: string;
  let tlsPort: number;
  let wsPort: number;

  before(async () => {
    pki = mkdtempSync(join(tmpdir(), 'landfall-mqtt-pki-'));
    const ssl = (...args: string[]): void => {
      execFileSync('openssl', args, { cwd: pki, stdio: 'pipe' });
    };
    ssl(
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-days',
      '2',
      '-subj',
      '/CN=landfall test CA',
    );
    writeFileSync(join(pki, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
    for (const who of ['server', 'client']) {
      ssl(
        'req',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        `${who}.key`,
        '-out',
        `${who}.csr`,
        '-subj',
        `/CN=${who}`,
      );
      ssl(
        'x509',
        '-req',
        '-in',
        `${who}.csr`,
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-CAcreateserial',
        '-out',
        `${who}.pem`,
        '-days',
        '2',
        '-extfile',
        'san.ext',
      );
    }
    execFileSync('mosquitto_passwd', ['-b', '-c', join(pki, 'passwd'), 'landfall', 'right-password'], {
      stdio: 'pipe',
    });
    tlsPort = await freePort();
    wsPort = await freePort();
    tls = await startMosquitto({
      extraConfig: [
        `password_file ${join(pki, 'passwd')}`,
        `listener ${tlsPort} 127.0.0.1`,
        `cafile ${join(pki, 'ca.pem')}`,
        `certfile ${join(pki, 'server.pem')}`,
        `keyfile ${join(pki, 'server.key')}`,
        'require_certificate true',
        `listener ${wsPort} 127.0.0.1`,
        'protocol websockets',
      ],
    });
  });

  after(async () => {
    await tls?.stop();
    rmSync(pki, { recursive: true, force: true });
  });

  void it('mqtts with CA and client certificate, username + password file, and ws://; a fixed password file is picked up on reconnect', async () => {
    writeFileSync(join(pki, 'good'), 'right-password\n');
    writeFileSync(join(pki, 'bad'), 'wrong-password\n');
    const tlsBroker = {
      url: `mqtts://127.0.0.1:${tlsPort}`,
      name: 'tls',
      caFile: join(pki, 'ca.pem'),
      certFile: join(pki, 'client.pem'),
      keyFile: join(pki, 'client.key'),
      username: 'landfall',
      passwordFile: join(pki, 'good'),
      topics: [{ filter: 'sec/tls/#', qos: 1 }],
    };
    const cfg = nodeConfig('sec', {
      brokers: [
        tlsBroker,
        {
          url: `ws://127.0.0.1:${wsPort}/mqtt`,
          name: 'ws',
          clientId: 'landfall-sec-ws',
          topics: [{ filter: 'sec/ws/#', qos: 1 }],
        },
        { ...tlsBroker, name: 'badpw', clientId: 'landfall-sec-badpw', passwordFile: join(pki, 'bad') },
      ],
    });
    const { node, log } = await start(cfg);
    await subscribed(log, 2);
    const pub = await publisher(tls.url);
    await publishAll(pub, (id) => `sec/${id % 2 === 0 ? 'tls' : 'ws'}/${id}`, range(0, 20));
    await until(
      async () =>
        (await metric(node, 'landfall_mqtt_acks_total', { broker: 'tls' })) === 10 &&
        (await metric(node, 'landfall_mqtt_acks_total', { broker: 'ws' })) === 10,
      'both connections acked their 10',
    );
    assert.equal(await metric(node, 'landfall_mqtt_connected', { broker: 'badpw' }), 0);
    await until(
      async () => (await metric(node, 'landfall_mqtt_disconnects_total', { broker: 'badpw' })) >= 2,
      'refused, retrying',
    );
    assert.ok(
      log.lines.some(
        (l) =>
          l.msg === 'MQTT connection error' &&
          /not authori[sz]ed/i.test(String((l.fields as { err?: Error }).err?.message)),
      ),
    );
    writeFileSync(join(pki, 'bad'), 'right-password\n'); // the operator fixes the Secret
    await until(
      async () => (await metric(node, 'landfall_mqtt_connected', { broker: 'badpw' })) === 1,
      'connected with the new password',
    );
    assert.equal(await node.shutdown('test'), true);
  });

  void it('a certificate rotation caught half-way (new key, old certificate; an empty key) keeps the previous TLS material and reconnects', async () => {
    copyFileSync(join(pki, 'client.pem'), join(pki, 'rot.pem'));
    copyFileSync(join(pki, 'client.key'), join(pki, 'rot.key'));
    writeFileSync(join(pki, 'rot-pw'), 'right-password\n');
    const cfg = nodeConfig('rot', {
      brokers: [
        {
          url: `mqtts://127.0.0.1:${tlsPort}`,
          name: 'tls',
          clientId: 'landfall-rot',
          caFile: join(pki, 'ca.pem'),
          certFile: join(pki, 'rot.pem'),
          keyFile: join(pki, 'rot.key'),
          username: 'landfall',
          passwordFile: join(pki, 'rot-pw'),
          topics: [{ filter: 'rot/#', qos: 1 }],
        },
      ],
    });
    const { node, log } = await start(cfg);
    await subscribed(log);
    const rejections: unknown[] = [];
    const onRejection = (err: unknown): void => {
      rejections.push(err);
    };
    process.on('unhandledRejection', onRejection);
    try {
      // Takes the session over on the plain listener: the node's connection is closed and it reconnects.
      const kick = async (n: number): Promise<void> => {
        const taker = await mqtt.connectAsync(tls.url, { clientId: 'landfall-rot', reconnectPeriod: 0 });
        await taker.endAsync(true);
        await until(
          async () =>
            (await metric(node, 'landfall_mqtt_connects_total', { broker: 'tls' })) >= n &&
            (await metric(node, 'landfall_mqtt_connected', { broker: 'tls' })) === 1,
          `reconnected (${n})`,
        );
      };
      const refused = (): number =>
        log.lines.filter((l) => l.msg === 'MQTT: re-reading secrets failed; using the previous ones').length;
      copyFileSync(join(pki, 'server.key'), join(pki, 'rot.key')); // the key first, the certificate not yet
      await kick(2);
      assert.ok(refused() >= 1, 'the mismatched pair was refused');
      writeFileSync(join(pki, 'rot.key'), ''); // a key file being rewritten
      const before = refused();
      await kick(3);
      assert.ok(refused() > before, 'the empty key was refused');
      copyFileSync(join(pki, 'client.key'), join(pki, 'rot.key')); // the rotation completes
      const pub = await publisher(tls.url);
      await publishAll(pub, (id) => `rot/${id}`, range(0, 5));
      await until(
        async () => (await metric(node, 'landfall_mqtt_acks_total', { broker: 'tls' })) === 5,
        'acked over the connection kept alive',
      );
      assert.deepEqual(rejections, []);
    } finally {
      process.off('unhandledRejection', onRejection);
    }
    assert.equal(await node.shutdown('test'), true);
  });
});
