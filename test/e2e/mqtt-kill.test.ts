// Kill test of the MQTT source: a real `landfall serve` child process is
// SIGKILLed at seeded random moments (during start-up, or while messages
// flow) while a publisher sends QoS 1 messages with unique ids to a real
// Mosquitto and waits for the broker's PUBACKs. Afterwards every message the
// broker acknowledged to the publisher must be in the node's WAL: the node
// acknowledges only what is durable, so whatever it had not acknowledged when
// it died is redelivered on its persistent session when it comes back.
// Duplicates are allowed (at-least-once) and reported.
//
// MQTT_KILL_SEED and MQTT_KILLS override the seed and the
// number of kills (a failure prints the seed to replay it). Not LANDFALL_*: the
// child node would refuse those as unknown config keys.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import type { MqttClient } from 'mqtt';
import {
  keepArtifacts,
  repoRoot,
  scratchDir,
  startMosquitto,
  startProcess,
  waitFor,
} from '../harness/index.ts';
import type { MosquittoServer, ServerProcess } from '../harness/index.ts';
import { readMqttRecords, seededRandom } from '../../ingest-node/test/mqtt-helpers.ts';

const SEED = Number(process.env['MQTT_KILL_SEED'] ?? 20261126);
const KILLS = Number(process.env['MQTT_KILLS'] ?? 16);
const CLI = join(repoRoot, 'ingest-node', 'src', 'cli.ts');

let broker: MosquittoServer;
let work: string;
let pub: MqttClient | undefined;
const procs: ServerProcess[] = [];

before(async () => {
  // Unlimited session queue: while the node is dead the broker must keep everything it accepted.
  broker = await startMosquitto({ extraConfig: ['max_queued_messages 0'] });
  work = scratchDir('mqtt-kill');
});

after(async () => {
  await pub?.endAsync(true);
  for (const p of procs) await p.stop({ graceMs: 0 });
  await broker?.stop();
});

function countInLog(logPath: string, msg: string): number {
  try {
    return readFileSync(logPath, 'utf8')
      .split('\n')
      .filter((l) => l.includes(`"msg":"${msg}"`)).length;
  } catch {
    return 0;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

void test(`SIGKILLed node loses no message the broker acknowledged (seed ${SEED}, ${KILLS} kills)`, async (t) => {
  t.diagnostic(`seed ${SEED}: replay with MQTT_KILL_SEED=${SEED}`);
  const rand = seededRandom(SEED);
  const walDir = join(work, 'wal');
  mkdirSync(walDir, { recursive: true });
  const configPath = join(work, 'landfall.json');
  writeFileSync(
    configPath,
    JSON.stringify({
      listen: { port: 0 },
      wal: { dir: walDir },
      endpoint: { name: 'edge' },
      instance: { id: 'kill-1' },
      shutdown: { timeoutMs: 5000 },
      mqtt: {
        brokers: [{ url: broker.url }],
        topics: [{ filter: 'kill/#', qos: 1 }],
        reconnectMinMs: 20,
        reconnectMaxMs: 200,
      },
    }),
  );
  const logPath = join(work, 'node.log');
  const spawnNode = (): ServerProcess => {
    const p = startProcess({
      name: 'landfall',
      command: process.execPath,
      args: [CLI, 'serve', '--config', configPath],
      logPath,
      cwd: work,
    });
    procs.push(p);
    return p;
  };
  const waitSubscribed = async (before: number, p: ServerProcess): Promise<void> => {
    await waitFor(() => countInLog(logPath, 'MQTT: subscribed') > before, {
      what: 'the node subscribed',
      timeoutMs: 20_000,
      process: p,
    });
  };

  // The first start creates the session, so the broker queues for the node from then on.
  let node = spawnNode();
  await waitSubscribed(0, node);

  pub = await mqtt.connectAsync(broker.url, { clientId: 'kill-publisher', reconnectPeriod: 0 });
  const publisher = pub;
  const acked = new Set<number>();
  let nextId = 0;
  let publishing = true;
  // Paced (about 8 × 1 per ms at most) so the backlog a dead node leaves stays in the tens of
  // thousands and the test in its time budget; 8 publishes in flight keep the broker busy.
  const workers = Array.from({ length: 8 }, async () => {
    while (publishing) {
      const id = nextId++;
      await publisher.publishAsync(`kill/${id % 4}`, JSON.stringify({ id }), { qos: 1 });
      acked.add(id);
      await sleep(1);
    }
  });

  const kills: string[] = [];
  try {
    for (let k = 0; k < KILLS; k++) {
      let base = 0; // the first node is already subscribed
      if (k > 0) {
        base = countInLog(logPath, 'MQTT: subscribed');
        node = spawnNode();
      }
      // Some kills land during start-up (WAL recovery, connecting), most while messages flow.
      const early = rand() < 0.3;
      if (!early) await waitSubscribed(base, node);
      // The random moment itself: a seeded delay, not a synchronisation point.
      const delayMs = Math.floor(rand() * (early ? 400 : 500));
      await sleep(delayMs);
      await node.stop({ graceMs: 0 });
      kills.push(`${early ? 'start-up' : 'flowing'}+${delayMs}ms@${acked.size}`);
    }
  } finally {
    publishing = false;
    await Promise.all(workers);
  }
  t.diagnostic(`kills (phase+delay@broker-acked so far): ${kills.join(' ')}`);
  assert.equal(kills.length, KILLS);
  assert.ok(acked.size > 0);

  // A last node drains the session: everything the broker acknowledged must arrive.
  node = spawnNode();
  const want = [...acked];
  // On a timeout carry on: the strict check below says how many are missing.
  await waitFor(
    () => {
      const have = new Set(
        readMqttRecords(walDir, { strict: false })
          .map((r) => JSON.parse(r.message) as { id: number })
          .map((m) => m.id),
      );
      return want.every((id) => have.has(id));
    },
    {
      what: `all ${want.length} broker-acknowledged messages in the WAL`,
      timeoutMs: 30_000,
      intervalMs: 200,
      process: node,
    },
  ).catch((err: unknown) => t.diagnostic(String(err)));
  await node.stop({ graceMs: 10_000 });
  const exit = await node.exited;
  assert.equal(exit.code, 0, 'the last node stopped cleanly on SIGTERM');

  // The authoritative check: every segment reads strictly after the clean stop.
  const records = readMqttRecords(walDir, { strict: true });
  const ids = records.map((r) => (JSON.parse(r.message) as { id: number }).id);
  const seen = new Set(ids);
  const missing = want.filter((id) => !seen.has(id));
  const redeliveries = countInLog(logPath, 'MQTT: connected');
  t.diagnostic(
    `published ${nextId}, broker-acked ${acked.size}, WAL records ${records.length}, ` +
      `unique ${seen.size}, duplicates ${records.length - seen.size}, connections ${redeliveries}`,
  );
  if (missing.length > 0) keepArtifacts('mqtt kill test lost messages');
  assert.deepEqual(
    missing.slice(0, 20),
    [],
    `${missing.length} acknowledged messages missing (seed ${SEED})`,
  );
  for (const r of records) {
    const id = (JSON.parse(r.message) as { id: number }).id;
    assert.equal(r.topic, `kill/${id % 4}`);
  }
});
