// Smoke: the real Mosquitto delivers QoS 1, and keeps a queued message across a restart.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { startMosquitto } from '../harness/index.ts';
import type { MosquittoServer } from '../harness/index.ts';

let broker: MosquittoServer;
const clients: MqttClient[] = [];

before(async () => {
  broker = await startMosquitto();
});

after(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)));
  await broker?.stop();
});

async function client(opts: mqtt.IClientOptions = {}): Promise<MqttClient> {
  // reconnectPeriod 0: a broken connection must fail the test, not retry silently.
  const c = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  clients.push(c);
  return c;
}

/** The next message on `topic`, or a rejection after `timeoutMs`. */
function nextMessage(c: MqttClient, topic: string, timeoutMs = 5000): Promise<mqtt.IPublishPacket> {
  return new Promise((resolveMsg, reject) => {
    const onMessage = (t: string, _payload: Buffer, packet: mqtt.IPublishPacket): void => {
      if (t !== topic) return;
      clearTimeout(timer);
      c.off('message', onMessage);
      resolveMsg(packet);
    };
    const timer = setTimeout(() => {
      c.off('message', onMessage);
      reject(new Error(`no message on ${topic} within ${timeoutMs} ms`));
    }, timeoutMs);
    c.on('message', onMessage);
  });
}

/** The CONNACK of a client connecting now, or a rejection after `timeoutMs`. */
function connack(c: MqttClient, timeoutMs = 5000): Promise<mqtt.IConnackPacket> {
  return new Promise((resolveAck, reject) => {
    const timer = setTimeout(() => reject(new Error(`no CONNACK within ${timeoutMs} ms`)), timeoutMs);
    c.once('connect', (packet) => {
      clearTimeout(timer);
      resolveAck(packet);
    });
    c.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

void test('QoS 1 publish is received', async (t) => {
  t.diagnostic(`start-up ms: ${broker.startupMs}`);
  const sub = await client();
  const pub = await client();
  const topic = `landfall/smoke/${Date.now()}`;
  const granted = await sub.subscribeAsync(topic, { qos: 1 });
  assert.equal(granted[0]?.qos, 1);
  const received = nextMessage(sub, topic);
  await pub.publishAsync(topic, '{"hello":"world"}', { qos: 1 });
  const packet = await received;
  assert.equal(packet.payload.toString(), '{"hello":"world"}');
  assert.equal(packet.qos, 1);
});

void test('a QoS 1 message queued for an offline session survives a broker restart', async () => {
  const topic = `landfall/smoke/persist/${Date.now()}`;
  const clientId = `landfall-smoke-${process.pid}`;
  const first = await client({ clientId, clean: false });
  await first.subscribeAsync(topic, { qos: 1 });
  await first.endAsync();

  const pub = await client();
  await pub.publishAsync(topic, 'queued while offline', { qos: 1 });
  await pub.endAsync();

  await broker.stopServer(); // SIGTERM: mosquitto writes its persistence file
  await broker.startServer();

  // The message may arrive right after CONNACK, before connectAsync resolves,
  // so listen from the start with manual connect.
  const again = mqtt.connect(broker.url, {
    clientId,
    clean: false,
    reconnectPeriod: 0,
    connectTimeout: 5000,
  });
  clients.push(again);
  const received = nextMessage(again, topic);
  const ack = await connack(again);
  assert.equal(ack.sessionPresent, true, 'session lost across restart: persistence not saved');
  const packet = await received;
  assert.equal(packet.payload.toString(), 'queued while offline');
});
