// The other routes (/healthz, /readyz, /metrics, /v1/status), unknown routes,
// and the HTTP timeouts, over real HTTP.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { codeOf, ingest, read, startTestServer } from './helpers/server.ts';
import type { TestServer } from './helpers/server.ts';

void describe('routes', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ config: { endpoint: { name: 'clicks' }, instance: { id: 'clicks-0' } } });
    await ingest(t.url, '{"a":1}\n{"b":2}\n');
    await ingest(t.url, 'x', { 'content-type': 'text/plain' });
  });
  after(() => t.close());

  void it('GET /healthz is 200', async () => {
    const a = await read(await fetch(`${t.url}/healthz`));
    assert.equal(a.status, 200);
    assert.deepEqual(a.json, { status: 'ok' });
  });

  void it('GET /readyz is 200 {ready: true} when accepting', async () => {
    const a = await read(await fetch(`${t.url}/readyz`));
    assert.equal(a.status, 200);
    assert.deepEqual(a.json, { ready: true, reasons: [] });
  });

  void it('GET /metrics is Prometheus text with the ingest, backpressure and WAL series', async () => {
    const res = await fetch(`${t.adminUrl}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    const text = await res.text();
    for (const line of [
      'landfall_http_requests_total{route="/v1/ingest",method="POST",status="202"} 1',
      'landfall_http_requests_total{route="/v1/ingest",method="POST",status="415"} 1',
      'landfall_http_errors_total{code="LF_UNSUPPORTED_MEDIA_TYPE"} 1',
      'landfall_ingest_records_total 2',
      'landfall_ingest_bytes_total 14',
      'landfall_ingest_ack_seconds_count 1',
      'landfall_inflight_bytes 0',
      'landfall_ready 1',
      'landfall_backpressure_active{reason="wal_backlog"} 0',
      'landfall_wal_next_seq 3',
      'landfall_wal_appends_total 1',
      '# TYPE landfall_wal_appends_total counter',
      '# TYPE landfall_wal_syncs_total counter',
    ]) {
      assert.ok(text.includes(line), `missing: ${line}`);
    }
    assert.match(text, /^landfall_wal_retained_bytes \d+$/m);
    assert.match(text, /^landfall_volume_free_bytes \d+$/m);
  });

  void it('/metrics and /v1/status are served on the admin port only; ingest on the main port only; probes on both', async () => {
    assert.notEqual(t.adminUrl, t.url);
    for (const path of ['/metrics', '/v1/status']) {
      const main = await read(await fetch(`${t.url}${path}`));
      assert.equal(main.status, 404, `${path} on the main port`);
      assert.equal(codeOf(main), 'LF_NOT_FOUND');
      assert.equal((await fetch(`${t.adminUrl}${path}`)).status, 200, `${path} on the admin port`);
    }
    const viaAdmin = await read(
      await fetch(`${t.adminUrl}/v1/ingest`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-ndjson' },
        body: '{"a":1}\n',
      }),
    );
    assert.equal(viaAdmin.status, 404, 'no ingest through the admin port');
    for (const path of ['/healthz', '/readyz']) {
      assert.equal((await fetch(`${t.url}${path}`)).status, 200, `${path} on the main port`);
      assert.equal((await fetch(`${t.adminUrl}${path}`)).status, 200, `${path} on the admin port`);
    }
  });

  void it('GET /v1/status is JSON with version, identity, WAL stats (seqs as strings) and backpressure', async () => {
    const a = await read(await fetch(`${t.adminUrl}/v1/status`));
    assert.equal(a.status, 200);
    const s = a.json as {
      version: string;
      endpoint: string;
      instance: string;
      ready: boolean;
      wal: { nextSeq: string; retainedBytes: number; epoch: string };
      backpressure: { accepting: boolean; inflightBytes: number };
    };
    assert.match(s.version, /^\d+\.\d+\.\d+/);
    assert.equal(s.endpoint, 'clicks');
    assert.equal(s.instance, 'clicks-0');
    assert.equal(s.ready, true);
    assert.equal(s.wal.nextSeq, '3');
    assert.equal(s.wal.epoch, 'test-epoch');
    assert.equal(s.backpressure.accepting, true);
    assert.equal(s.backpressure.inflightBytes, 0);
  });

  void it('an unknown route is 404 LF_NOT_FOUND', async () => {
    for (const [method, path] of [
      ['GET', '/nope'],
      ['GET', '/v1/ingest'],
      ['POST', '/v1/ingest/extra'],
    ] as const) {
      const a = await read(
        await fetch(t.url + path, { method, ...(method === 'POST' ? { body: 'x' } : {}) }),
      );
      assert.equal(a.status, 404, `${method} ${path}`);
      assert.equal(codeOf(a), 'LF_NOT_FOUND');
    }
  });
});

void describe('timeouts', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ config: { http: { headersTimeoutMs: 1000, requestTimeoutMs: 1000 } } });
  });
  after(() => t.close());

  /** Opens a connection, writes `first`, and resolves what the server says (and whether it closed). */
  function stall(first: string): Promise<{ text: string; ms: number }> {
    const { port } = new URL(t.url);
    const started = Date.now();
    return new Promise((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1');
      let text = '';
      socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
      socket.on('error', reject);
      socket.on('close', () => resolve({ text, ms: Date.now() - started }));
      socket.write(first);
      // A guard so a broken server cannot hang the test.
      setTimeout(() => socket.destroy(), 5000).unref();
    });
  }

  void it('slow headers (slowloris) get 408 LF_REQUEST_TIMEOUT and a closed connection', async () => {
    const r = await stall('POST /v1/ingest HTTP/1.1\r\nHost: x\r\n');
    assert.match(r.text, /^HTTP\/1\.1 408 /);
    assert.match(r.text, /LF_REQUEST_TIMEOUT/);
    assert.ok(r.ms < 4000, `took ${r.ms} ms`);
  });

  void it('a body that stops arriving is cut off at requestTimeoutMs, and nothing is written', async () => {
    const before = t.wal.appends.length;
    const r = await stall(
      'POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100\r\n\r\n{"a":1}\n',
    );
    assert.match(r.text, /^HTTP\/1\.1 408 /);
    assert.ok(r.ms < 4000, `took ${r.ms} ms`);
    assert.equal(t.wal.appends.length, before);
    assert.equal(t.server.backpressure.inflightBytes, 0, 'the reservation of the cut-off body is released');
    assert.equal((await fetch(`${t.url}/healthz`)).status, 200);
  });
});
