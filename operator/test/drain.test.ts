import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { checkDrained } from '../src/controller/drain.ts';
import {
  drainBlocker,
  httpNodeStatusProbe,
  NODE_REPLY_BYTES_MAX,
  parseNodeStatus,
} from '../src/adapters/node-status.ts';
import type { NodeDrainState, NodeStatusProbe } from '../src/adapters/node-status.ts';
import { startNode } from '../../ingest-node/src/node.ts';
import type { RunningNode } from '../../ingest-node/src/node.ts';
import { defaultConfig } from '../../ingest-node/src/config/load.ts';
import type { Wal } from '../../ingest-node/src/wal/types.ts';
import { makeTestCa } from '../../ingest-node/test/helpers/tls-ca.ts';

const clean: NodeDrainState = { openSegmentBytes: 0, sealedSegments: 0, segmentsPending: 0 };

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
      'http://10.0.0.1:8081': clean,
      'http://10.0.0.2:8081': {
        openSegmentBytes: 512,
        sealedSegments: 2,
        segmentsPending: 2,
        lastError: 'AccessDenied',
      },
      'http://10.0.0.3:8081': new Error('connect ECONNREFUSED'),
    }),
  });
  assert.equal(r.drained, false);
  assert.equal(r.checked, 4);
  assert.deepEqual(r.blockers, [
    'ep-ingest-1: 2 sealed segment(s) not delivered, 512 bytes in the open segment (sealed on age), last delivery error: AccessDenied',
    'ep-ingest-2: connect ECONNREFUSED',
    'data-ep-ingest-3 is Lost: its WAL cannot be checked',
  ]);
  const ok = await checkDrained({
    ...base,
    claims: [claim(0, 'Bound')],
    pods: [pod(0, 'Running', '10.0.0.1')],
    probe: probeOf({ 'http://10.0.0.1:8081': clean }),
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

void test('/v1/status parsing: the wal fields are required, delivery is optional', () => {
  const wal = { openSegmentBytes: 0, sealedSegments: 1 };
  assert.deepEqual(parseNodeStatus({ wal, delivery: { segmentsPending: 1, lastError: null } }), {
    openSegmentBytes: 0,
    sealedSegments: 1,
    segmentsPending: 1,
  });
  assert.deepEqual(
    parseNodeStatus({ wal, delivery: { segmentsPending: 1, lastError: { segmentId: 'x', message: 'boom' } } })
      .lastError,
    'boom',
  );
  assert.equal(parseNodeStatus({ wal }).segmentsPending, undefined);
  assert.throws(() => parseNodeStatus({ wal: {} }), /wal.openSegmentBytes/);
  assert.throws(() => parseNodeStatus({ wal, delivery: {} }), /delivery.segmentsPending/);
  // A segment sealed but not yet handed to the pipeline still blocks.
  assert.match(drainBlocker({ ...clean, sealedSegments: 1 }) ?? '', /1 sealed segment/);
  assert.match(
    drainBlocker({ ...clean, segmentsPending: undefined, sealedSegments: 1 }) ?? '',
    /no delivery target/,
  );
  assert.equal(drainBlocker(clean), undefined);
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
      .end(JSON.stringify({ wal: { openSegmentBytes: 0, sealedSegments: 1 } }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const probe = httpNodeStatusProbe(2000);
    assert.deepEqual(await probe(url, 'good'), {
      openSegmentBytes: 0,
      sealedSegments: 1,
      segmentsPending: undefined,
    });
    await assert.rejects(probe(url, 'bad'), /401/);
    assert.deepEqual(seen, ['/v1/status good', '/v1/status bad']);
  } finally {
    server.close();
  }
});

void test('an answer over NODE_REPLY_BYTES_MAX (a pod streaming without end) is refused, not read into memory', async () => {
  let sent = 0;
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    const more = (): void => {
      while (sent < 64 * NODE_REPLY_BYTES_MAX && !res.destroyed) {
        sent += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', more);
      }
      res.end();
    };
    more();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    await assert.rejects(
      httpNodeStatusProbe(10_000)(url, 'k'),
      new RegExp(`over ${NODE_REPLY_BYTES_MAX} bytes`),
    );
    assert.ok(sent < 16 * NODE_REPLY_BYTES_MAX, `the node stopped being read (${sent} bytes sent)`);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

// The contract with the real node: its /v1/status, served by startNode with
// delivery to a local folder, read by the operator's real HTTP probe through
// checkDrained at a "pod IP" (loopback, on the port the node got).
void test('against a real node: records in the open segment block, delivered they drain; no target blocks', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'landfall-drain-'));
  const nodes: RunningNode[] = [];
  t.after(async () => {
    for (const n of nodes) await n.shutdown('test done');
    await rm(dir, { recursive: true, force: true });
  });
  const keys = join(dir, 'keys');
  await writeFile(keys, 'writer-key ingest\noperator-key status\n');
  const ip = '127.0.0.1';
  let port = 0;
  const start = async (name: string, extra: Record<string, unknown>): Promise<RunningNode> => {
    const node = await startNode(
      defaultConfig(
        {
          listen: { host: ip, port: 0 },
          endpoint: { name: 'ep' },
          wal: { dir: join(dir, name, 'wal'), segmentAgeMsMax: 600_000 },
          auth: { apiKeysFile: keys },
          ...extra,
        },
        name,
      ),
    );
    nodes.push(node);
    port = Number(new URL(node.adminUrl).port);
    return node;
  };
  const ingest = async (node: RunningNode): Promise<void> => {
    const res = await fetch(`${node.url}/v1/ingest`, {
      method: 'POST',
      headers: { 'x-api-key': 'writer-key', 'content-type': 'application/x-ndjson' },
      body: '{"event":"a"}\n{"event":"b"}\n',
    });
    assert.equal(res.status, 202, await res.text());
  };
  const drain = (podIp: string) =>
    checkDrained({
      statefulSetName: 'ep-ingest',
      claims: [claim(0, 'Bound')],
      pods: [pod(0, 'Running', podIp)],
      apiKey: 'operator-key',
      probe: httpNodeStatusProbe(2000),
      port,
    });

  const bucket = join(dir, 'bucket');
  const node = await start('ep-ingest-0', { s3: { localDir: bucket } });
  assert.deepEqual(await drain(ip), { drained: true, blockers: [], checked: 1 }, 'a fresh node is drained');

  await ingest(node);
  const open = await drain(ip);
  assert.equal(open.drained, false);
  assert.match(open.blockers[0] ?? '', /^ep-ingest-0: \d+ bytes in the open segment/);

  await (node.wal as Wal).seal();
  await node.delivery?.pipeline.idle();
  const deadline = Date.now() + 10_000;
  let last = await drain(ip);
  while (!last.drained && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    last = await drain(ip);
  }
  assert.deepEqual(last.blockers, [], 'sealed and committed: drained');
  const commits = await readdir(join(bucket, 'commits', 'ep', 'ep-ingest-0'), { recursive: true });
  assert.ok(
    commits.some((f) => String(f).endsWith('.json')),
    'the commit marker is there',
  );
  await node.shutdown('next');

  // Without a delivery target sealed segments stay: the node says so.
  const stuck = await start('ep-ingest-1', {});
  await ingest(stuck);
  await (stuck.wal as Wal).seal();
  const blocked = await drain(ip);
  assert.equal(blocked.drained, false);
  assert.equal(
    blocked.blockers[0],
    'ep-ingest-0: 1 sealed segment(s) not delivered, no delivery target configured',
  );
});

// spec.expose.tls: the nodes serve HTTPS with a certificate for the Service
// name, and the operator reaches them by pod IP: the probe speaks TLS to a real
// node whose certificate it cannot verify (and does not send its key in clear).
void test('against a real HTTPS node: the drain check speaks TLS to the pod IP', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'landfall-drain-tls-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const ca = makeTestCa(dir);
  const srv = ca.issue('server', 'ep-ingest.tenant-a.svc', 'server');
  const keys = join(dir, 'keys');
  await writeFile(keys, 'operator-key status\n');
  const node = await startNode(
    defaultConfig(
      {
        listen: { host: '127.0.0.1', port: 0, tls: { certFile: srv.certFile, keyFile: srv.keyFile } },
        endpoint: { name: 'ep' },
        wal: { dir: join(dir, 'wal') },
        auth: { apiKeysFile: keys },
      },
      'ep-ingest-0',
    ),
  );
  t.after(() => node.shutdown('test done'));
  const port = Number(new URL(node.adminUrl).port);
  const drain = (tls: boolean) =>
    checkDrained({
      statefulSetName: 'ep-ingest',
      claims: [claim(0, 'Bound')],
      pods: [pod(0, 'Running', '127.0.0.1')],
      apiKey: 'operator-key',
      probe: httpNodeStatusProbe(2000),
      port,
      tls,
    });
  assert.deepEqual(await drain(true), { drained: true, blockers: [], checked: 1 });
  assert.match(node.adminUrl, /^https:/, 'the admin port speaks TLS like the main one');
  // Plain HTTP to the HTTPS port gets no answer: the scheme is what made the difference.
  assert.equal((await drain(false)).drained, false);
});
