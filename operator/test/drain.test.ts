import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { checkDrained } from '../src/controller/drain.ts';
import { httpNodeStatusProbe, parseNodeStatus } from '../src/adapters/node-status.ts';
import type { NodeDrainState, NodeStatusProbe } from '../src/adapters/node-status.ts';

const claim = (ordinal: number, phase: string): V1PersistentVolumeClaim => ({
  metadata: { name: `data-ep-ingest-${ordinal}` },
  status: { phase },
});
const pod = (ordinal: number, phase: string, ip?: string): V1Pod => ({
  metadata: { name: `ep-ingest-${ordinal}` },
  status: { phase, ...(ip ? { podIP: ip } : {}) },
});
const probeOf =
  (states: Record<string, NodeDrainState | Error>): NodeStatusProbe =>
  async (baseUrl) => {
    const s = states[baseUrl];
    if (s instanceof Error) throw s;
    if (!s) throw new Error(`unexpected probe of ${baseUrl}`);
    return s;
  };
const base = { statefulSetName: 'ep-ingest', apiKey: 'k' };

void test('no claims, or claims never bound: nothing was ever written, drained', async () => {
  const r = await checkDrained({ ...base, claims: [], pods: [], probe: probeOf({}) });
  assert.deepEqual(r, { drained: true, blockers: [], checked: 0 });
  const r2 = await checkDrained({
    ...base,
    claims: [claim(0, 'Pending'), claim(1, 'Pending')],
    pods: [pod(0, 'Pending'), pod(1, 'Pending')],
    probe: probeOf({}),
  });
  assert.equal(r2.drained, true);
});

void test('a bound claim whose pod cannot answer blocks, naming claim and pod', async () => {
  const r = await checkDrained({
    ...base,
    claims: [claim(0, 'Bound')],
    pods: [pod(0, 'Pending')],
    probe: probeOf({}),
  });
  assert.equal(r.drained, false);
  assert.deepEqual(r.blockers, [
    'data-ep-ingest-0 holds a WAL but pod ep-ingest-0 is Pending: cannot read /v1/status',
  ]);
  const gone = await checkDrained({ ...base, claims: [claim(3, 'Bound')], pods: [], probe: probeOf({}) });
  assert.match(gone.blockers[0] ?? '', /pod ep-ingest-3 is missing/, 'a scaled-down replica keeps its claim');
});

void test('running replicas are asked: a backlog or an error blocks, empty WALs drain', async () => {
  const r = await checkDrained({
    ...base,
    claims: [claim(0, 'Bound'), claim(1, 'Bound'), claim(2, 'Bound'), claim(3, 'Lost')],
    pods: [pod(0, 'Running', '10.0.0.1'), pod(1, 'Running', '10.0.0.2'), pod(2, 'Running', '10.0.0.3')],
    probe: probeOf({
      'http://10.0.0.1:8080': { undeliveredSegments: 0, openSegmentRecords: 0 },
      'http://10.0.0.2:8080': { undeliveredSegments: 2, openSegmentRecords: 5 },
      'http://10.0.0.3:8080': new Error('connect ECONNREFUSED'),
    }),
  });
  assert.equal(r.drained, false);
  assert.equal(r.checked, 4);
  assert.deepEqual(r.blockers, [
    'ep-ingest-1: 2 sealed segment(s) not delivered, 5 record(s) in the open segment',
    'ep-ingest-2: connect ECONNREFUSED',
    'data-ep-ingest-3 is Lost: its WAL cannot be checked',
  ]);
  const ok = await checkDrained({
    ...base,
    claims: [claim(0, 'Bound')],
    pods: [pod(0, 'Running', '10.0.0.1')],
    probe: probeOf({ 'http://10.0.0.1:8080': { undeliveredSegments: 0, openSegmentRecords: 0 } }),
  });
  assert.equal(ok.drained, true);
});

void test('claims of other StatefulSets sharing the prefix are ignored', async () => {
  const r = await checkDrained({
    ...base,
    claims: [{ metadata: { name: 'data-ep-ingest-extra-0' }, status: { phase: 'Bound' } }],
    pods: [],
    probe: probeOf({}),
  });
  assert.equal(r.drained, true);
});

void test('/v1/status parsing: undeliveredSegments is required, open records default to 0', () => {
  assert.deepEqual(parseNodeStatus({ wal: { undeliveredSegments: 3, openSegmentRecords: 7 } }), {
    undeliveredSegments: 3,
    openSegmentRecords: 7,
  });
  assert.deepEqual(parseNodeStatus({ wal: { undeliveredSegments: 0 } }), {
    undeliveredSegments: 0,
    openSegmentRecords: 0,
  });
  assert.throws(() => parseNodeStatus({ wal: {} }), /wal.undeliveredSegments/);
});

void test('the HTTP probe sends the status key and reads the answer', async () => {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(`${req.url ?? ''} ${String(req.headers['x-api-key'])}`);
    if (req.headers['x-api-key'] !== 'good') {
      res.writeHead(401).end('{"error":{"code":"LF_UNAUTHORIZED"}}');
      return;
    }
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ wal: { undeliveredSegments: 1 } }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const probe = httpNodeStatusProbe(2000);
    assert.deepEqual(await probe(url, 'good'), { undeliveredSegments: 1, openSegmentRecords: 0 });
    await assert.rejects(probe(url, 'bad'), /401/);
    assert.deepEqual(seen, ['/v1/status good', '/v1/status bad']);
  } finally {
    server.close();
  }
});
