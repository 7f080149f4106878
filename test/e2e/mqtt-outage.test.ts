// MQTT source through an S3 outage: a real `landfall serve` child subscribes
// to a real Mosquitto (QoS 1, `sensors/+/temp` and friends) and delivers to a
// real MinIO with small, fast seals. A publisher sends QoS 1 messages with
// unique ids and waits for each PUBACK. Once some messages are committed,
// MinIO is stopped for OUTAGE_MS while publishing goes on: the broker must
// keep acknowledging (the node acknowledges what is durable in its WAL, and
// the WAL does not need S3). Then MinIO comes back, and the commit markers
// must come to cover every message the broker acknowledged, each with its
// original topic, read back with `landfall expand --format envelope`.
// Duplicates are allowed (at-least-once) and reported.
//
// MQTT_OUTAGE_MS overrides the outage (not LANDFALL_*: the child node would
// refuse those as unknown config keys).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import { scratchDir, startMinio, startMosquitto, waitFor } from '../harness/index.ts';
import type { MinioServer, MosquittoServer } from '../harness/index.ts';
import { logLines, startCliNode } from './helpers/cli-node.ts';
import type { CliNode } from './helpers/cli-node.ts';
import { run as expand } from '../../ingest-node/src/commands/expand.ts';

const OUTAGE_MS = Number(process.env['MQTT_OUTAGE_MS'] ?? 15_000);
const ENDPOINT = 'edge';
const PREFIX = 'lf/mqtt-outage';
const TOPICS = ['sensors/a/temp', 'sensors/b/temp', 'sensors/c/temp', 'plant/1/pressure'];

let broker: MosquittoServer;
let minio: MinioServer;
let node: CliNode | undefined;
let pub: MqttClient | undefined;

before(async () => {
  [broker, minio] = await Promise.all([
    startMosquitto({ extraConfig: ['max_queued_messages 0'] }),
    startMinio(),
  ]);
  // The child reads the standard AWS variables (credentials.mode default).
  process.env['AWS_ACCESS_KEY_ID'] = minio.accessKeyId;
  process.env['AWS_SECRET_ACCESS_KEY'] = minio.secretAccessKey;
  process.env['AWS_REGION'] = minio.region;
});

after(async () => {
  await pub?.endAsync(true).catch(() => {});
  await node?.proc.stop({ graceMs: 0 });
  await broker?.stop();
  await minio?.stop();
});

interface Envelope {
  readonly seq: string;
  readonly topic?: string;
  readonly payload?: string;
}

/** Every committed record, via `landfall expand --format envelope` (in process). */
async function committed(): Promise<Envelope[]> {
  const chunks: Buffer[] = [];
  let err = '';
  const code = await expand(
    [
      '--endpoint-name',
      ENDPOINT,
      '--format',
      'envelope',
      '--quiet',
      '--bucket',
      minio.bucket,
      '--prefix',
      PREFIX,
    ],
    {
      out: () => {},
      err: (t) => (err += t),
      env: {
        AWS_ACCESS_KEY_ID: minio.accessKeyId,
        AWS_SECRET_ACCESS_KEY: minio.secretAccessKey,
        AWS_REGION: minio.region,
        AWS_ENDPOINT_URL_S3: minio.endpoint,
      },
      stdout: new Writable({
        write(c: Buffer, _e, cb) {
          chunks.push(c);
          cb();
        },
      }),
    },
  );
  assert.equal(code, 0, err);
  const text = Buffer.concat(chunks).toString('utf8');
  return text === ''
    ? []
    : text
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l) as Envelope);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

void test(`MQTT messages acknowledged during a ${OUTAGE_MS / 1000} s S3 outage are all delivered, with their topics`, async (t) => {
  const work = scratchDir('mqtt-outage');
  const walDir = join(work, 'wal');
  mkdirSync(walDir, { recursive: true });
  const configPath = join(work, 'landfall.json');
  writeFileSync(
    configPath,
    JSON.stringify({
      wal: { dir: walDir, segmentAgeMsMax: 500, segmentBytesMax: 16_384 },
      endpoint: { name: ENDPOINT },
      instance: { id: 'edge-0' },
      shutdown: { timeoutMs: 5000 },
      s3: { bucket: minio.bucket, region: minio.region, prefix: PREFIX, endpointUrl: minio.endpoint },
      // Short backoffs so delivery resumes within a few seconds of MinIO's return.
      delivery: { retryAttemptsMax: 4, retryDelayMsMax: 500, segmentRetryDelayMsMax: 1_000 },
      mqtt: {
        brokers: [{ url: broker.url }],
        topics: [
          { filter: 'sensors/+/temp', qos: 1 },
          { filter: 'plant/#', qos: 1 },
        ],
        reconnectMinMs: 20,
        reconnectMaxMs: 200,
      },
    }),
  );
  const logPath = join(work, 'node.log');
  node = startCliNode('landfall', logPath, [`--config=${configPath}`]);
  const proc = node.proc;
  await node.listening;
  await waitFor(() => logLines(logPath).some((l) => l.msg === 'MQTT: subscribed'), {
    what: 'the node subscribed',
    timeoutMs: 20_000,
    process: proc,
  });

  pub = await mqtt.connectAsync(broker.url, { clientId: 'outage-publisher', reconnectPeriod: 0 });
  const publisher = pub;
  const acked = new Map<number, string>(); // id → topic
  let nextId = 0;
  let publishing = true;
  let outage = false;
  let ackedInOutage = 0;
  const workers = Array.from({ length: 4 }, async () => {
    while (publishing) {
      const id = nextId++;
      const topic = TOPICS[id % TOPICS.length]!;
      await publisher.publishAsync(topic, JSON.stringify({ id, v: id * 0.5 }), { qos: 1 });
      acked.set(id, topic);
      if (outage) ackedInOutage++;
      await sleep(2);
    }
  });

  let back: number | undefined;
  try {
    // Some messages committed before the outage.
    await waitFor(async () => (await committed()).length >= 50, {
      what: 'the first commits',
      timeoutMs: 15_000,
      intervalMs: 200,
      process: proc,
    });
    const ackedBefore = acked.size;
    await minio.stopServer();
    outage = true;
    const outageStart = performance.now();
    // The outage itself is the thing under test: its length is a duration, not a wait for an event.
    await sleep(OUTAGE_MS);
    outage = false;
    t.diagnostic(
      `broker-acked before the outage ${ackedBefore}, during it ${ackedInOutage} ` +
        `(${Math.round(performance.now() - outageStart)} ms)`,
    );
    assert.ok(ackedInOutage > 100, `the broker kept acknowledging during the outage (${ackedInOutage})`);
    await minio.startServer();
    back = performance.now();
    // A little more traffic after the return, then stop publishing.
    const target = acked.size + 200;
    await waitFor(() => acked.size >= target, { what: '200 more acks', timeoutMs: 10_000, process: proc });
  } finally {
    publishing = false;
    await Promise.all(workers);
  }
  assert.ok(proc.running(), 'the node lived through the outage');

  // Until the commit markers cover every message the broker acknowledged.
  let records: Envelope[] = [];
  const missingOf = (rs: Envelope[]): number[] => {
    const have = new Set(rs.map((r) => (JSON.parse(r.payload ?? '{}') as { id: number }).id));
    return [...acked.keys()].filter((id) => !have.has(id));
  };
  await waitFor(
    async () => {
      records = await committed();
      return missingOf(records).length === 0;
    },
    {
      what: `all ${acked.size} acknowledged messages committed`,
      timeoutMs: 30_000,
      intervalMs: 250,
      process: proc,
    },
  ).catch((err: unknown) => t.diagnostic(String(err)));
  const deliveredMs = Math.round(performance.now() - (back ?? 0));

  const ids = records.map((r) => (JSON.parse(r.payload ?? '{}') as { id: number }).id);
  const unique = new Set(ids);
  const missing = missingOf(records);
  t.diagnostic(
    `published ${nextId}, broker-acked ${acked.size}, committed records ${records.length}, ` +
      `unique ${unique.size}, duplicates ${records.length - unique.size}, ` +
      `all committed ${deliveredMs} ms after MinIO returned`,
  );
  assert.deepEqual(missing.slice(0, 20), [], `${missing.length} acknowledged messages not committed`);
  for (const r of records) {
    const { id } = JSON.parse(r.payload ?? '{}') as { id: number };
    assert.equal(r.topic, TOPICS[id % TOPICS.length], `message ${id} keeps its topic`);
  }

  await proc.stop({ graceMs: 10_000 });
  assert.equal((await proc.exited).code, 0, 'the node stopped cleanly on SIGTERM');
});
