// The benchmark's publisher, run in a worker thread so its JavaScript does not
// share an event loop with the consumer being measured. Publishes `messages`
// QoS 1 messages with at most `window` unacknowledged, and reports how long
// the broker took to acknowledge them all.

import { parentPort, workerData } from 'node:worker_threads';
import mqtt from 'mqtt';

export interface PublisherJob {
  readonly url: string;
  readonly topicPrefix: string;
  readonly messages: number;
  readonly bytes: number;
  readonly window: number;
}

export interface PublisherResult {
  readonly ms: number;
  readonly messages: number;
}

const job = workerData as PublisherJob;

function body(id: number, bytes: number): Buffer {
  const head = `{"id":${id},"sensor":"s-${id % 97}","v":${(id % 1000) / 10},"pad":"`;
  const pad = Math.max(0, bytes - head.length - 2);
  return Buffer.from(head + 'x'.repeat(pad) + '"}');
}

const client = await mqtt.connectAsync(job.url, {
  clientId: `bench-pub-${process.pid}-${Date.now()}`,
  reconnectPeriod: 0,
  protocolVersion: 5,
});
const t0 = performance.now();
let next = 0;
await Promise.all(
  Array.from({ length: job.window }, async () => {
    while (next < job.messages) {
      const id = next++;
      await client.publishAsync(`${job.topicPrefix}/${id % 16}`, body(id, job.bytes), { qos: 1 });
    }
  }),
);
const ms = performance.now() - t0;
await client.endAsync();
parentPort?.postMessage({ ms, messages: job.messages } satisfies PublisherResult);
