// The MQTT source against a scripted mqtt.js client: when PUBACKs are sent
// (only after the append resolved, in arrival order, only on the connection the
// message came in on), batching, bounds, backpressure, append failures,
// reconnect backoff, stop. Plus the config checks of the `mqtt` block.
// The same behaviour against a real Mosquitto: mqtt-broker.test.ts.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import type { IClientOptions, IPublishPacket, MqttClient } from 'mqtt';
import { defaultConfig } from '../src/config/load.ts';
import type { NodeConfig } from '../src/config/schema.ts';
import { startMqttSource, MqttConfigError, resolveBrokers, defaultClientId } from '../src/mqtt/index.ts';
import type { MqttBackpressure, MqttSource } from '../src/mqtt/index.ts';
import { readSecrets } from '../src/mqtt/options.ts';
import { decodeMqttPayload } from '../src/wal/format.ts';
import { RecordFormat } from '../src/wal/types.ts';
import type { RecordFormat as RecordFormatT } from '../src/wal/types.ts';
import { WalBacklogError } from '../src/errors.ts';
import { RECORD_OVERHEAD_BYTES } from '../src/backpressure.ts';
import type { LandfallError } from '../src/errors.ts';
import { PacketSizeGuard } from '../src/mqtt/packet-guard.ts';
import type { OversizePublish } from '../src/mqtt/packet-guard.ts';
import { MemoryWal } from './helpers/memory-wal.ts';
import { memoryLogger, metricValue, until } from './mqtt-helpers.ts';

type Callback = (err?: Error) => void;

/** Enough of mqtt.js's MqttClient for the source, driven by the test. */
class FakeClient extends EventEmitter {
  options: IClientOptions;
  connected = false;
  readonly sent: { cmd: string; messageId: number }[] = [];
  readonly connectTimesMs: number[] = [];
  readonly subscriptions: Record<string, { qos: number }>[] = [];
  ended = false;
  /** What happens on connect(): by default the broker accepts at once. */
  onConnect: (c: FakeClient) => void = (c) => c.accept(true);
  handleMessage: (packet: IPublishPacket, cb: Callback) => void = (_p, cb) => cb();
  readonly stream = { destroy: () => this.drop() };

  constructor(options: IClientOptions) {
    super();
    this.options = options;
  }
  connect(): this {
    this.connectTimesMs.push(performance.now());
    this.onConnect(this);
    return this;
  }
  reconnect(): this {
    return this.connect();
  }
  subscribe(
    map: Record<string, { qos: number }>,
    cb: (err: Error | null, granted: { topic: string; qos: number }[]) => void,
  ): this {
    this.subscriptions.push(map);
    cb(
      null,
      Object.entries(map).map(([topic, o]) => ({ topic, qos: o.qos })),
    );
    return this;
  }
  end(_force?: boolean, _opts?: object, cb?: () => void): this {
    this.ended = true;
    if (this.connected) this.drop();
    cb?.();
    return this;
  }
  _sendPacket(packet: { cmd: string; messageId: number }): void {
    assert.ok(this.connected, 'a packet sent on a closed connection');
    this.sent.push(packet);
  }
  accept(sessionPresent: boolean): void {
    this.connected = true;
    this.emit('connect', { cmd: 'connack', sessionPresent, returnCode: 0 });
  }
  drop(): void {
    this.connected = false;
    this.emit('close');
  }
  /** Hands a PUBLISH to the source; returns what it passed to the callback, or 'held'. */
  deliver(
    messageId: number,
    opts: { qos?: 0 | 1; topic?: string; body?: string; dup?: boolean } = {},
  ): {
    result: () => 'held' | 'ack-by-mqttjs' | 'deferred';
  } {
    let result: 'held' | 'ack-by-mqttjs' | 'deferred' = 'held';
    const packet = {
      cmd: 'publish',
      qos: opts.qos ?? 1,
      dup: opts.dup ?? false,
      retain: false,
      topic: opts.topic ?? 'site/a',
      payload: Buffer.from(opts.body ?? `m${messageId}`),
      messageId: (opts.qos ?? 1) === 0 ? undefined : messageId,
    } as IPublishPacket;
    this.handleMessage(packet, (err) => {
      result = err === undefined ? 'ack-by-mqttjs' : 'deferred';
    });
    return { result: () => result };
  }
  acked(): number[] {
    return this.sent.filter((p) => p.cmd === 'puback').map((p) => p.messageId);
  }
}

/** A WAL whose appends resolve only when the test says so, one by one. */
class GatedWal extends MemoryWal {
  readonly opened: { records: number; resolve: () => void }[] = [];
  override async append(records: readonly Uint8Array[], format: RecordFormatT) {
    await new Promise<void>((resolve) => this.opened.push({ records: records.length, resolve }));
    return super.append(records, format);
  }
}

class FakeBackpressure implements MqttBackpressure {
  refuse: LandfallError | undefined;
  budget = Number.MAX_SAFE_INTEGER;
  reserved = 0;
  admit(): LandfallError | undefined {
    return this.refuse;
  }
  tryReserve(n: number): boolean {
    if (this.reserved + n > this.budget) return false;
    this.reserved += n;
    return true;
  }
  release(n: number): void {
    this.reserved -= n;
  }
}

interface Rig {
  source: MqttSource;
  client: FakeClient;
  clients: FakeClient[];
  wal: MemoryWal;
  bp: FakeBackpressure;
  registry: Registry;
  log: ReturnType<typeof memoryLogger>;
  metric(name: string, labels?: Record<string, string | number>): Promise<number>;
}

function config(mqtt: Record<string, unknown> = {}, rest: Record<string, unknown> = {}): NodeConfig {
  return defaultConfig({
    endpoint: { name: 'edge' },
    instance: { id: 'box-1' },
    mqtt: {
      brokers: [{ url: 'mqtt://broker.local:1883', name: 'b1' }],
      topics: [{ filter: 'site/#', qos: 1 }],
      reconnectMinMs: 10,
      reconnectMaxMs: 80,
      ...mqtt,
    },
    ...rest,
  });
}

async function rig(
  c: NodeConfig = config(),
  opts: {
    wal?: MemoryWal;
    walRecordBytesMax?: number;
    stateDir?: string;
    random?: () => number;
    setup?: (f: FakeClient) => void;
  } = {},
): Promise<Rig> {
  const wal = opts.wal ?? new MemoryWal();
  const bp = new FakeBackpressure();
  const registry = new Registry();
  const log = memoryLogger();
  const clients: FakeClient[] = [];
  const source = await startMqttSource(c, {
    wal,
    backpressure: bp,
    registry,
    log,
    random: opts.random ?? (() => 0.5),
    ...(opts.walRecordBytesMax !== undefined ? { walRecordBytesMax: opts.walRecordBytesMax } : {}),
    ...(opts.stateDir !== undefined ? { stateDir: opts.stateDir } : {}),
    connect: (_url, options) => {
      const f = new FakeClient(options);
      opts.setup?.(f);
      clients.push(f);
      return f as unknown as MqttClient;
    },
  });
  assert.ok(source);
  const client = clients[0];
  assert.ok(client);
  return {
    source,
    client,
    clients,
    wal,
    bp,
    registry,
    log,
    metric: (name, labels) => metricValue(registry, name, { broker: 'b1', ...labels }),
  };
}

function walMessages(wal: MemoryWal): string[] {
  return wal.appends.flatMap((a) => {
    assert.equal(a.format, RecordFormat.mqtt);
    return a.records.map((r) => {
      const m = decodeMqttPayload(r);
      return `${m.topic} ${Buffer.from(m.message).toString()}`;
    });
  });
}

void describe('MQTT source: acknowledgement', () => {
  void it('connects with a persistent session, a stable client id and MQTT 5 flow-control properties', async () => {
    const r = await rig();
    const o = r.client.options;
    assert.equal(o.clean, false);
    assert.equal(o.clientId, 'landfall-edge-box-1');
    assert.equal(o.protocolVersion, 5);
    assert.equal(o.reconnectPeriod, 0, 'reconnects are the source’s own (backoff + jitter)');
    assert.deepEqual(o.properties, {
      sessionExpiryInterval: 604_800,
      receiveMaximum: 1000,
      maximumPacketSize: 16 * 1024 * 1024,
    });
    assert.deepEqual(r.client.subscriptions, [{ 'site/#': { qos: 1, rh: 1 } }]);
    assert.equal(await r.metric('landfall_mqtt_connected'), 1);
    assert.equal(await r.source.stop(1000), true);
  });

  void it('sends no PUBACK until the append resolves, then one per message in arrival order', async () => {
    const wal = new GatedWal();
    const r = await rig(config(), { wal });
    const d = [3, 1, 2].map((id) => r.client.deliver(id));
    const q0 = r.client.deliver(0, { qos: 0, topic: 'site/q0' });
    // mqtt.js must not ack QoS 1 itself (callback with an error) but must read on.
    assert.deepEqual(
      d.map((x) => x.result()),
      ['deferred', 'deferred', 'deferred'],
    );
    assert.equal(q0.result(), 'ack-by-mqttjs', 'QoS 0: nothing to ack, mqtt.js reads on');
    await until(() => wal.opened.length === 1, 'the batch handed to the WAL');
    assert.equal(wal.opened[0]?.records, 4, 'the burst is one append (one fsync)');
    assert.equal(await r.metric('landfall_mqtt_pending_messages'), 4);
    assert.deepEqual(r.client.acked(), [], 'no PUBACK while the append is open');
    wal.opened[0]?.resolve();
    await until(() => r.client.acked().length === 3, 'PUBACKs');
    assert.deepEqual(r.client.acked(), [3, 1, 2], 'PUBACKs in the order the PUBLISHes came');
    assert.equal(r.wal.appends.length, 1, 'the burst went into one append (one fsync)');
    assert.deepEqual(walMessages(r.wal), ['site/a m3', 'site/a m1', 'site/a m2', 'site/q0 m0']);
    assert.equal(await r.metric('landfall_mqtt_acks_total'), 3);
    assert.equal(await r.metric('landfall_mqtt_messages_received_total', { qos: 0 }), 1);
    assert.equal(await r.metric('landfall_mqtt_messages_written_total'), 4);
    assert.equal(r.bp.reserved, 0, 'in-flight bytes released');
    await r.source.stop(1000);
  });

  void it('messages arriving during an append form the next one; acks stay in order', async () => {
    const wal = new GatedWal();
    const r = await rig(config(), { wal });
    r.client.deliver(1);
    await until(() => wal.opened.length === 1, 'first append open');
    r.client.deliver(2);
    r.client.deliver(3);
    wal.opened[0]?.resolve();
    await until(() => r.client.acked().length === 1, 'first PUBACK');
    assert.deepEqual(r.client.acked(), [1]);
    await until(() => wal.opened.length === 2, 'second append open');
    assert.equal(wal.opened[1]?.records, 2, 'what arrived meanwhile is one append');
    wal.opened[1]?.resolve();
    await until(() => r.client.acked().length === 3, 'all PUBACKs');
    assert.deepEqual(r.client.acked(), [1, 2, 3]);
    assert.deepEqual(
      r.wal.appends.map((a) => a.records.length),
      [1, 2],
    );
    await r.source.stop(1000);
  });

  void it('a PUBACK is never sent on a later connection: the broker redelivers instead', async () => {
    const wal = new GatedWal();
    const r = await rig(config(), { wal });
    r.client.deliver(7);
    await until(() => wal.opened.length === 1, 'append open');
    r.client.drop();
    await until(() => r.client.connected, 'reconnected');
    wal.opened[0]?.resolve();
    await until(async () => (await r.metric('landfall_mqtt_acks_skipped_total')) === 1, 'ack skipped');
    assert.deepEqual(r.client.acked(), []);
    // The broker resends it with DUP on the resumed session; this time it is acked.
    r.client.deliver(7, { dup: true });
    await until(() => wal.opened.length === 2, 'second append open');
    wal.opened[1]?.resolve();
    await until(() => r.client.acked().length === 1, 'PUBACK of the redelivery');
    assert.equal(await r.metric('landfall_mqtt_messages_redelivered_total'), 1);
    assert.equal(walMessages(r.wal).length, 2, 'at-least-once: a duplicate, never a loss');
    await r.source.stop(1000);
  });

  void it('QoS 1 messages not yet appended are forgotten on disconnect (they come back); QoS 0 are kept', async () => {
    const r = await rig();
    r.bp.refuse = new WalBacklogError(2, 1);
    r.client.deliver(1);
    r.client.deliver(0, { qos: 0, topic: 'site/q0' });
    await until(async () => (await r.metric('landfall_mqtt_paused')) === 1, 'paused');
    r.client.drop();
    await until(() => r.client.connected, 'reconnected');
    r.bp.refuse = undefined;
    await until(() => r.wal.appends.length === 1, 'QoS 0 written after resume');
    assert.deepEqual(walMessages(r.wal), ['site/q0 m0']);
    await r.source.stop(1000);
  });

  void it('a QoS 0 message left in the pump of a closed connection is counted as dropped on disconnect, not shutdown', async () => {
    const r = await rig();
    r.client.onConnect = () => {}; // the broker does not answer yet
    r.client.drop();
    r.client.deliver(0, { qos: 0 });
    assert.equal(await r.metric('landfall_mqtt_messages_dropped_total', { reason: 'disconnect' }), 1);
    assert.equal(await r.metric('landfall_mqtt_messages_dropped_total', { reason: 'shutdown' }), 0);
    await r.source.stop(1000);
  });

  void it('an append failure acknowledges nothing and retries the same messages in order', async () => {
    const r = await rig();
    r.wal.failWith = Object.assign(new Error('EIO'), { code: 'WAL_WRITE_FAILED' });
    r.client.deliver(1);
    r.client.deliver(2);
    await until(
      async () => (await r.metric('landfall_mqtt_append_failures_total', { code: 'WAL_WRITE_FAILED' })) >= 1,
      'a failed append',
    );
    assert.deepEqual(r.client.acked(), []);
    r.wal.failWith = undefined;
    await until(() => r.client.acked().length === 2, 'acks after the retry');
    assert.deepEqual(r.client.acked(), [1, 2]);
    assert.deepEqual(walMessages(r.wal), ['site/a m1', 'site/a m2']);
    await r.source.stop(1000);
  });
});

void describe('MQTT source: bounds and backpressure', () => {
  void it('while the node refuses writes nothing is appended or acked; it resumes when admitted again', async () => {
    const r = await rig();
    r.bp.refuse = new WalBacklogError(10, 5);
    for (let i = 1; i <= 5; i++) r.client.deliver(i);
    await until(async () => (await r.metric('landfall_mqtt_paused')) === 1, 'paused');
    assert.ok(r.log.has('holding acknowledgements'));
    assert.equal(r.wal.appends.length, 0);
    assert.deepEqual(r.client.acked(), []);
    r.bp.refuse = undefined;
    await until(() => r.client.acked().length === 5, 'acks after resume');
    assert.equal(await r.metric('landfall_mqtt_paused'), 0);
    await r.source.stop(1000);
  });

  void it('the pause ends when the node accepts writes again even if nothing is held any more', async () => {
    const r = await rig();
    r.bp.refuse = new WalBacklogError(10, 5);
    r.client.deliver(1);
    r.client.deliver(2);
    await until(async () => (await r.metric('landfall_mqtt_paused')) === 1, 'paused');
    // The connection drops: its QoS 1 messages are let go (the broker has them, or lost them with its session).
    r.client.drop();
    await until(() => r.client.connected, 'reconnected');
    assert.equal(await r.metric('landfall_mqtt_pending_messages'), 0);
    await new Promise((resolve) => setTimeout(resolve, 250));
    assert.equal(await r.metric('landfall_mqtt_paused'), 1, 'still paused while the node refuses writes');
    r.bp.refuse = undefined;
    await until(
      async () => (await r.metric('landfall_mqtt_paused')) === 0,
      'resumed with nothing held',
      2000,
    );
    assert.deepEqual(
      r.source.status().map((s) => [s.paused, s.pauseReason]),
      [[false, null]],
    );
    assert.equal(r.wal.appends.length, 0);
    await r.source.stop(1000);
  });

  void it('past inflightMessagesMax (or the byte budget) the callback is held: mqtt.js stops reading', async () => {
    const r = await rig(config({ inflightMessagesMax: 3 }));
    r.bp.refuse = new WalBacklogError(10, 5);
    const d = [1, 2, 3, 4].map((id) => r.client.deliver(id, { qos: 0 }));
    assert.deepEqual(
      d.map((x) => x.result()),
      ['ack-by-mqttjs', 'ack-by-mqttjs', 'ack-by-mqttjs', 'held'],
    );
    assert.equal(await r.metric('landfall_mqtt_pending_messages'), 4);
    r.bp.refuse = undefined;
    await until(() => d[3]?.result() === 'ack-by-mqttjs', 'the held message released');
    await until(() => walMessages(r.wal).length === 4, 'all written');
    await r.source.stop(1000);

    const b = await rig();
    // Room for one 11-byte record (2 + 'site/a' + 3) and its per-record overhead, not two.
    b.bp.budget = 11 + RECORD_OVERHEAD_BYTES + 4;
    const first = b.client.deliver(1, { body: 'abc' });
    const second = b.client.deliver(2, { body: 'def' });
    assert.equal(first.result(), 'deferred');
    assert.equal(second.result(), 'held');
    await until(() => second.result() === 'deferred', 'budget freed by the first append');
    await until(() => b.client.acked().length === 2, 'both acked');
    await b.source.stop(1000);
  });

  void it('a message over limits.recordBytesMax is written and counted', async () => {
    const r = await rig(config({}, { limits: { recordBytesMax: 16 } }));
    r.client.deliver(1, { body: 'x'.repeat(100) });
    await until(() => r.client.acked().length === 1, 'acked');
    assert.equal(await r.metric('landfall_mqtt_messages_oversize_total'), 1);
    assert.ok(r.log.has('larger than limits.recordBytesMax'));
    await r.source.stop(1000);
  });

  void it('a message too large for a WAL record: QoS 1 is refused (no ack, connection closed), QoS 0 dropped and counted', async () => {
    const r = await rig(config({ protocolVersion: 4 }), { walRecordBytesMax: 64 });
    assert.equal(r.client.options.properties, undefined, 'MQTT 3.1.1 has no properties');
    r.client.deliver(0, { qos: 0, body: 'y'.repeat(100) });
    assert.equal(await r.metric('landfall_mqtt_messages_dropped_total', { reason: 'too_large' }), 1);
    const big = r.client.deliver(1, { body: 'x'.repeat(100) });
    assert.equal(big.result(), 'held', 'never acknowledged');
    assert.equal(r.client.connected, false, 'connection closed');
    assert.equal(await r.metric('landfall_mqtt_messages_refused_total'), 1);
    assert.ok(r.log.lines.some((l) => l.level === 'error' && l.msg?.includes('too large') === true));
    await until(() => r.client.connected, 'reconnected (the broker still has the message)');
    assert.deepEqual(r.client.acked(), []);
    await r.source.stop(1000);
  });
});

void describe('MQTT source: a topic too long to frame', () => {
  void it('is refused like a message too large (no throw inside mqtt.js’s packet loop)', async () => {
    const r = await rig(config({ topics: [{ filter: '#', qos: 1 }] }));
    const topic = '\ufffd'.repeat(22_000); // 66,000 bytes in UTF-8: what invalid UTF-8 from a broker becomes
    const d = r.client.deliver(1, { topic, body: 'x' });
    assert.equal(d.result(), 'held', 'never acknowledged');
    assert.equal(r.client.connected, false, 'connection closed');
    assert.equal(await r.metric('landfall_mqtt_messages_refused_total'), 1);
    await until(() => r.client.connected, 'reconnected');
    r.client.deliver(2, { qos: 0, topic, body: 'y' });
    assert.equal(await r.metric('landfall_mqtt_messages_dropped_total', { reason: 'too_large' }), 1);
    const logged = r.log.lines.find((l) => l.msg?.includes('too large') === true);
    assert.ok(logged);
    assert.ok(
      String((logged.fields as { topic?: string }).topic).length < 300,
      'the topic is cut in the log',
    );
    assert.equal(r.wal.appends.length, 0);
    await r.source.stop(1000);
  });
});

void describe('MQTT source: a message larger than the in-flight byte budget', () => {
  void it('is announced and refused like one too large for a WAL record, not held for ever', async () => {
    // A small box: passes the load check (1024 + 10 × 128 ≤ 4096), far below the WAL record bound.
    const limits = {
      decodedBytesMax: 1024,
      recordBytesMax: 1024,
      recordsPerRequestMax: 10,
      inflightBytesMax: 4096,
    };
    const max = 4096 - RECORD_OVERHEAD_BYTES;
    const v5 = await rig(config({}, { limits }));
    assert.equal(
      v5.client.options.properties?.maximumPacketSize,
      max,
      'the broker is told what can be stored',
    );
    await v5.source.stop(1000);

    const r = await rig(config({ protocolVersion: 4 }, { limits }));
    r.bp.budget = 4096;
    // record bytes = 2 + 'site/a' + body: one byte over what the budget can ever admit.
    const big = r.client.deliver(1, { body: 'x'.repeat(max - 8 + 1) });
    assert.equal(big.result(), 'held', 'never acknowledged');
    assert.equal(r.client.connected, false, 'refused: connection closed, not held with the socket unread');
    assert.equal(await r.metric('landfall_mqtt_messages_refused_total'), 1);
    assert.equal(await r.metric('landfall_mqtt_pending_messages'), 0);
    assert.equal(r.bp.reserved, 0);
    await until(() => r.client.connected, 'reconnected');
    // The largest message the budget admits goes through, alone.
    const largest = r.client.deliver(2, { body: 'y'.repeat(max - 8) });
    assert.equal(largest.result(), 'deferred');
    await until(() => r.client.acked().length === 1, 'the largest admissible message acked');
    await r.source.stop(1000);
  });
});

/** An MQTT packet as on the wire: fixed header (type, flags, remaining length), then the body. */
function wirePacket(type: number, flags: number, body: Buffer): Buffer {
  const len: number[] = [];
  let n = body.length;
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    len.push(b);
  } while (n > 0);
  return Buffer.concat([Buffer.from([(type << 4) | flags, ...len]), body]);
}

function wirePublish(qos: 0 | 1, topic: string, payloadBytes: number): Buffer {
  const t = Buffer.from(topic);
  const head = Buffer.alloc(2);
  head.writeUInt16BE(t.length);
  const id = qos > 0 ? Buffer.from([0, 7]) : Buffer.alloc(0);
  return wirePacket(3, qos << 1, Buffer.concat([head, t, id, Buffer.alloc(payloadBytes, 0x61)]));
}

void describe('MQTT source: PacketSizeGuard (MQTT 3.1.1 packets too large, seen at their fixed header)', () => {
  void it('passes every packet up to the bound, whatever the chunking, and stops at the first PUBLISH over it', () => {
    const max = 3 * 1024 * 1024;
    // Record bytes = 2 + topic (3) + payload: sizes around the 1-, 2-, 3- and 4-byte remaining lengths, and the bound.
    const fits = [0, 100, 122, 123, 16_000, 16_379, 16_380, 2_097_000, max - 5];
    const wire = Buffer.concat([
      wirePacket(2, 0, Buffer.from([0, 0])), // CONNACK
      ...fits.map((p, i) => wirePublish(i % 2 === 0 ? 1 : 0, 'a/b', p)),
      wirePacket(13, 0, Buffer.alloc(0)), // PINGRESP
      wirePacket(9, 0, Buffer.from([0, 1, 0])), // SUBACK
      wirePublish(1, 'a/b', max - 4), // one byte over
      wirePublish(0, 'a/b', 10),
    ]);
    for (const chunking of [1, 7, 1024, 65_536, wire.length]) {
      const seen: OversizePublish[] = [];
      const guard = new PacketSizeGuard(max, (p) => {
        seen.push(p);
        return true;
      });
      let consumedAtCut = -1;
      for (let i = 0; i < wire.length; i += chunking) {
        guard.push(wire.subarray(i, i + chunking));
        if (seen.length > 0 && consumedAtCut < 0) consumedAtCut = Math.min(wire.length, i + chunking);
      }
      assert.deepEqual(seen, [{ qos: 1, recordBytes: max + 1 }], `chunks of ${chunking}`);
      const cutAt = wire.length - wirePublish(0, 'a/b', 10).length - wirePublish(1, 'a/b', max - 4).length;
      assert.ok(
        consumedAtCut - cutAt <= Math.max(chunking, 5),
        `chunks of ${chunking}: seen at byte ${consumedAtCut}, the header ends by ${cutAt + 5}`,
      );
    }
  });

  void it('a QoS 0 PUBLISH over the bound is reported with its QoS; one let through (false) is skipped and the next one seen', () => {
    const seen: OversizePublish[] = [];
    const guard = new PacketSizeGuard(64, (p) => {
      seen.push(p);
      return p.qos > 0;
    });
    const wire = Buffer.concat([
      wirePublish(0, 'x', 62), // record 2 + 1 + 62 = 65
      wirePublish(0, 'x', 10),
      wirePublish(1, 'x', 70),
      wirePublish(1, 'x', 80), // after a stop: not seen
    ]);
    for (let i = 0; i < wire.length; i += 3) guard.push(wire.subarray(i, i + 3));
    assert.deepEqual(seen, [
      { qos: 0, recordBytes: 65 },
      { qos: 1, recordBytes: 73 },
    ]);
  });
});

void describe('MQTT source: connection', () => {
  void it('reconnects with bounded exponential backoff, and starts over after a connection that stayed up', async () => {
    let refuse = 5;
    const r = await rig(config({ reconnectMinMs: 10, reconnectMaxMs: 40 }), {
      random: () => 0.999,
      setup: (f) => {
        f.onConnect = (c) => {
          if (refuse-- > 0) setImmediate(() => c.drop());
          else c.accept(false);
        };
      },
    });
    await until(() => r.client.connected, 'connected after refusals', 5000);
    const t = r.client.connectTimesMs;
    const gaps = t.slice(1).map((v, i) => v - (t[i] ?? 0));
    const ceilings = [10, 20, 40, 40, 40];
    gaps.forEach((g, i) => {
      const c = ceilings[i] ?? 40;
      assert.ok(g >= c - 2, `gap ${i} = ${g.toFixed(1)} ms, want ≥ ${c}`);
      assert.ok(g < c + 200, `gap ${i} = ${g.toFixed(1)} ms, want about ${c}`);
    });
    assert.equal(
      await r.metric('landfall_mqtt_sessions_lost_total'),
      0,
      'the first connection has no session yet',
    );
    // Up for at least reconnectMaxMs: the next failure uses the shortest delay again.
    await until(() => performance.now() - (t[t.length - 1] ?? 0) >= 45, 'connection up for reconnectMaxMs');
    const before = t.length;
    const droppedAt = performance.now();
    r.client.drop();
    await until(() => r.client.connected, 'reconnected');
    const gap = (t[before] ?? 0) - droppedAt;
    assert.ok(
      gap >= 8 && gap < 10 + 200,
      `gap after a healthy connection ${gap.toFixed(1)} ms, want about 10`,
    );
    assert.equal(
      await r.metric('landfall_mqtt_sessions_lost_total'),
      1,
      'reconnect without a session is counted',
    );
    assert.ok(r.log.lines.some((l) => l.level === 'error' && l.msg?.includes('no session') === true));
    await r.source.stop(1000);
  });

  void it('a session lost while the node was down is counted after a restart (remembered in the state directory)', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'landfall-mqtt-state-'));
    const session = (present: boolean) => (f: FakeClient) => {
      f.onConnect = (c) => c.accept(present);
    };
    try {
      const first = await rig(config(), { stateDir, setup: session(false) });
      assert.equal(await first.metric('landfall_mqtt_sessions_lost_total'), 0, 'the first session ever');
      await first.source.stop(1000);
      assert.equal(readdirSync(stateDir).filter((n) => n.startsWith('mqtt-session-')).length, 1);
      const kept = await rig(config(), { stateDir, setup: session(true) });
      assert.equal(await kept.metric('landfall_mqtt_sessions_lost_total'), 0, 'the broker kept it');
      await kept.source.stop(1000);
      const lost = await rig(config(), { stateDir, setup: session(false) });
      assert.equal(await lost.metric('landfall_mqtt_sessions_lost_total'), 1, 'lost while the node was down');
      assert.ok(lost.log.lines.some((l) => l.level === 'error' && l.msg?.includes('no session') === true));
      await lost.source.stop(1000);
      // Another client id is another session: its first one is not a loss.
      const other = await rig(
        config({ brokers: [{ url: 'mqtt://broker.local:1883', name: 'b1', clientId: 'landfall-other' }] }),
        { stateDir, setup: session(false) },
      );
      assert.equal(await other.metric('landfall_mqtt_sessions_lost_total'), 0);
      await other.source.stop(1000);
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  });

  void it('a connection that is closed right after CONNACK keeps backing off (no tight reconnect loop)', async () => {
    let flaps = 4;
    const r = await rig(config({ reconnectMinMs: 10, reconnectMaxMs: 40 }), {
      random: () => 0.999,
      setup: (f) => {
        f.onConnect = (c) => {
          c.accept(true);
          if (flaps-- > 0) setImmediate(() => c.drop());
        };
      },
    });
    await until(() => r.client.connectTimesMs.length === 5 && r.client.connected, 'stable at last', 5000);
    const t = r.client.connectTimesMs;
    const gaps = t.slice(1).map((v, i) => v - (t[i] ?? 0));
    [10, 20, 40, 40].forEach((c, i) => {
      assert.ok((gaps[i] ?? 0) >= c - 2, `gap ${i} = ${(gaps[i] ?? 0).toFixed(1)} ms, want ≥ ${c}`);
    });
    await r.source.stop(1000);
  });

  void it('a reconnect attempt that throws (tls.connect on bad TLS material) is logged and retried, not an unhandled rejection', async () => {
    let throws = 2;
    const r = await rig(config({ reconnectMinMs: 10, reconnectMaxMs: 40 }), {
      setup: (f) => {
        const connect = f.connect.bind(f);
        f.reconnect = () => {
          if (throws-- > 0) throw new Error('error:05800074:x509 certificate routines::key values mismatch');
          return connect();
        };
      },
    });
    const rejections: unknown[] = [];
    const onRejection = (err: unknown): void => {
      rejections.push(err);
    };
    process.on('unhandledRejection', onRejection);
    try {
      r.client.drop();
      await until(() => r.client.connected, 'connected on the third attempt', 5000);
      assert.deepEqual(rejections, []);
      const failed = r.log.lines.filter((l) => l.msg === 'MQTT: reconnect attempt failed; retrying');
      assert.equal(failed.length, 2);
      assert.equal(r.client.connectTimesMs.length, 2, 'the initial connect and the one that worked');
    } finally {
      process.off('unhandledRejection', onRejection);
      await r.source.stop(1000);
    }
  });

  void it('stop writes and acknowledges what it holds, then disconnects cleanly', async () => {
    const r = await rig();
    r.bp.refuse = new WalBacklogError(10, 5); // e.g. draining: held, not written
    r.client.deliver(1);
    r.client.deliver(2);
    await until(async () => (await r.metric('landfall_mqtt_paused')) === 1, 'paused');
    assert.equal(await r.source.stop(2000), true);
    assert.deepEqual(r.client.acked(), [1, 2]);
    assert.equal(r.client.ended, true);
    assert.equal(r.bp.reserved, 0);
    // Nothing more is read once stopping.
    assert.equal(r.client.deliver(3).result(), 'held');
  });

  void it('stop gives up at its deadline when the WAL does not answer', async () => {
    const wal = new GatedWal();
    const r = await rig(config(), { wal });
    r.client.deliver(1);
    await until(() => wal.opened.length === 1, 'append open');
    const t0 = performance.now();
    assert.equal(await r.source.stop(200), false);
    assert.ok(performance.now() - t0 < 2000);
    assert.deepEqual(r.client.acked(), []);
  });
});

void describe('mqtt config block', () => {
  void it('defaults: no brokers, no source', async () => {
    const c = defaultConfig();
    assert.deepEqual(c.mqtt.brokers, []);
    const source = await startMqttSource(c, {
      wal: new MemoryWal(),
      backpressure: new FakeBackpressure(),
      registry: new Registry(),
      log: memoryLogger(),
    });
    assert.equal(source, undefined);
  });

  void it('a topic’s qos defaults to 1; unknown keys are refused', () => {
    const c = config({ topics: [{ filter: 'a/#' }] });
    assert.deepEqual(c.mqtt.topics, [{ filter: 'a/#', qos: 1 }]);
    assert.throws(
      () => config({ brokers: [{ url: 'mqtt://h', password: 'x' }] }),
      /password: Unexpected property/,
    );
    assert.throws(() => config({ brokers: [{ url: 'http://h' }] }), /url/);
    assert.throws(() => config({ topics: [{ filter: 'a', qos: 2 }] }), /qos/);
  });

  void it('sessionExpirySec is at least 60: 0 would let the broker discard unacknowledged messages on every disconnect', () => {
    assert.throws(() => config({ sessionExpirySec: 0 }), /sessionExpirySec/);
    assert.throws(() => config({ sessionExpirySec: 59 }), /sessionExpirySec/);
    assert.equal(config({ sessionExpirySec: 60 }).mqtt.sessionExpirySec, 60);
    assert.equal(config().mqtt.sessionExpirySec, 604_800);
  });

  void it('cross-key checks list every problem', () => {
    const c = config({
      reconnectMinMs: 100,
      reconnectMaxMs: 10,
      topics: [],
      brokers: [
        { url: 'mqtt://user:secret@h:1883' },
        { url: 'mqtt://h2', caFile: '/ca.pem' },
        { url: 'mqtts://h3', certFile: '/c.pem' },
        { url: 'mqtt://h4', passwordFile: '/p' },
        { url: 'mqtt://h5', name: 'x', topics: [{ filter: 'a', qos: 1 }] },
        { url: 'mqtt://h5', name: 'x', topics: [{ filter: 'b', qos: 1 }] },
      ],
    });
    const err = (() => {
      try {
        resolveBrokers(c.mqtt, 'e', 'i');
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    assert.ok(err instanceof MqttConfigError);
    const text = err.problems.join('\n');
    assert.match(text, /reconnectMinMs/);
    assert.match(text, /carries credentials/);
    assert.doesNotMatch(text, /secret/, 'the password is not repeated in the error');
    assert.match(text, /TLS files but its url is mqtt:/);
    assert.match(text, /certFile and .*keyFile go together/);
    assert.match(text, /passwordFile is set without/);
    assert.match(text, /name "x" is used twice/);
    assert.match(text, /client id "landfall-e-i"/);
    assert.match(text, /has no topics/);
  });

  void it('resolves names, client ids and topics', () => {
    const c = config({
      brokers: [
        { url: 'mqtts://Broker.Example:8883' },
        { url: 'ws://10.0.0.1/mqtt', clientId: 'custom', topics: [{ filter: 'x/#', qos: 0 }] },
      ],
    });
    const [a, b] = resolveBrokers(c.mqtt, 'edge', 'box-1');
    assert.equal(a?.name, 'broker.example-8883');
    assert.equal(a?.clientId, defaultClientId('edge', 'box-1'));
    assert.deepEqual(a?.topics, [{ filter: 'site/#', qos: 1 }]);
    assert.equal(b?.name, '10.0.0.1-80');
    assert.equal(b?.clientId, 'custom');
    assert.deepEqual(b?.topics, [{ filter: 'x/#', qos: 0 }]);
  });

  void it('a password over mqtt:// to another host is said at start (sent in clear); over TLS or to this host it is not', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lf-mqtt-pw-'));
    try {
      const passwordFile = join(dir, 'password');
      writeFileSync(passwordFile, 's3cret\n');
      const warned = async (url: string): Promise<boolean> => {
        const r = await rig(config({ brokers: [{ url, name: 'b1', username: 'u', passwordFile }] }));
        await r.source.stop(100);
        return r.log.has('password is sent in clear');
      };
      assert.equal(await warned('mqtt://broker.example.com:1883'), true);
      assert.equal(await warned('ws://10.0.0.7:8080/mqtt'), true);
      assert.equal(await warned('mqtt://127.0.0.1:1883'), false);
      assert.equal(await warned('mqtt://localhost:1883'), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  void it('reads the password file without its trailing newline, and names an unreadable file', async () => {
    const files: Record<string, string> = { '/p': 's3cret\r\n', '/q': 'two\nlines\n' };
    const read = async (p: string): Promise<Buffer> => {
      const v = files[p];
      if (v === undefined) throw Object.assign(new Error('ENOENT: no such file'), { code: 'ENOENT' });
      return Buffer.from(v);
    };
    const s = await readSecrets({ url: 'mqtt://h', username: 'u', passwordFile: '/p' }, read);
    assert.equal(s.password?.toString(), 's3cret');
    const q = await readSecrets({ url: 'mqtt://h', username: 'u', passwordFile: '/q' }, read);
    assert.equal(q.password?.toString(), 'two\nlines');
    await assert.rejects(
      readSecrets({ url: 'mqtts://h', caFile: '/missing.pem' }, read),
      /cannot read the MQTT CA file \/missing\.pem/,
    );
  });
});
