// POST /v1/ingest over real HTTP: every content type and encoding, each error
// status with its code, limits (including compression bombs) and the
// all-or-nothing rule.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { gzipSync, zstdCompressSync, createGzip, createZstdCompress } from 'node:zlib';
import { startTestServer, ingest, codeOf } from './helpers/server.ts';
import type { TestServer } from './helpers/server.ts';
import { RecordFormat } from '../src/wal/types.ts';

function recordio(...payloads: Array<string | Buffer>): Buffer {
  const parts: Buffer[] = [];
  for (const p of payloads) {
    const b = Buffer.isBuffer(p) ? p : Buffer.from(p);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    parts.push(len, b);
  }
  return Buffer.concat(parts);
}

/** A body sent chunked (no Content-Length), one chunk per element. */
function chunked(...chunks: Buffer[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      for (const c of chunks) controller.enqueue(new Uint8Array(c));
      controller.close();
    },
  });
}

/** Sends raw bytes over TCP and returns the raw response text. */
function rawRequest(url: string, request: string | Buffer): Promise<string> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.write(request);
    socket.setTimeout(3000, () => socket.destroy());
    // Half-close only after a moment so the server answers a complete request first.
    setTimeout(() => socket.end(), 200);
  });
}

/** Compressed bytes that decode to `decodedBytes` zeros, built fast by concatenating members/frames. */
async function bomb(kind: 'gzip' | 'zstd', decodedBytes: number): Promise<Buffer> {
  const piece = 16 * 1024 * 1024;
  const zeros = Buffer.alloc(piece);
  const member = kind === 'gzip' ? gzipSync(zeros, { level: 9 }) : zstdCompressSync(zeros);
  return Buffer.concat(Array.from({ length: Math.ceil(decodedBytes / piece) }, () => member));
}

void describe('POST /v1/ingest: content types', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
  });
  after(() => t.close());

  void it('NDJSON: one record a line, empty lines skipped, CRLF tolerated, last newline optional', async () => {
    const before = t.wal.appends.length;
    const a = await ingest(t.url, '{"a":1}\r\n\n{"b":2}\n   \n{"c":3}');
    assert.equal(a.status, 202);
    const body = a.json as { accepted: number; firstSeq: string; lastSeq: string };
    assert.equal(body.accepted, 3);
    assert.equal(typeof body.firstSeq, 'string');
    assert.equal(BigInt(body.lastSeq) - BigInt(body.firstSeq), 2n);
    assert.equal(t.wal.appends.length, before + 1, 'one append per request');
    const last = t.wal.appends.at(-1);
    assert.equal(last?.format, RecordFormat.ndjson);
    assert.deepEqual(
      last?.records.map((r) => r.toString()),
      ['{"a":1}', '{"b":2}', '{"c":3}'],
    );
  });

  void it('NDJSON: content-type parameters and aliases are accepted', async () => {
    for (const type of [
      'application/x-ndjson; charset=utf-8',
      'application/ndjson',
      'application/jsonl',
      'Application/X-NDJSON',
    ]) {
      const a = await ingest(t.url, '{"x":1}\n', { 'content-type': type });
      assert.equal(a.status, 202, type);
    }
  });

  void it('NDJSON: record bytes are stored exactly (no parsing without validation)', async () => {
    const a = await ingest(t.url, 'not json at all\n{"big":12345678901234567890}\n');
    assert.equal(a.status, 202);
    assert.deepEqual(
      t.wal.appends.at(-1)?.records.map((r) => r.toString()),
      ['not json at all', '{"big":12345678901234567890}'],
    );
  });

  void it('JSON: an object is one record', async () => {
    const a = await ingest(t.url, ' {"event":"x","n":[1,{"y":"}"}]} \n', {
      'content-type': 'application/json',
    });
    assert.equal(a.status, 202);
    assert.equal((a.json as { accepted: number }).accepted, 1);
    assert.equal(t.wal.appends.at(-1)?.format, RecordFormat.json);
    assert.deepEqual(t.wal.lines().at(-1), '{"event":"x","n":[1,{"y":"}"}]}');
  });

  void it('JSON: an array of objects is one record each, bytes kept exactly', async () => {
    const a = await ingest(t.url, '[{"a":"q\\"]"} , {"b":12345678901234567890},\n{"c":{}}]', {
      'content-type': 'application/json',
    });
    assert.equal(a.status, 202);
    assert.equal((a.json as { accepted: number }).accepted, 3);
    assert.deepEqual(
      t.wal.appends.at(-1)?.records.map((r) => r.toString()),
      ['{"a":"q\\"]"}', '{"b":12345678901234567890}', '{"c":{}}'],
    );
  });

  void it('JSON: a scalar or an array of non-objects is 422 LF_JSON_NOT_OBJECT', async () => {
    for (const body of ['42', '"s"', '[1,2]', '[{"a":1}, 3]', '[[]]']) {
      const a = await ingest(t.url, body, { 'content-type': 'application/json' });
      assert.equal(a.status, 422, body);
      assert.equal(codeOf(a), 'LF_JSON_NOT_OBJECT', body);
    }
  });

  void it('JSON: broken structure is 400 LF_INVALID_JSON', async () => {
    for (const body of [
      '{"a":1',
      '[{"a":1}',
      '{"a":1}}',
      '[{"a":1} {"b":2}]',
      '{"a":"unterminated}',
      'xyz',
      '{"a":1} trailing',
    ]) {
      const a = await ingest(t.url, body, { 'content-type': 'application/json' });
      assert.equal(a.status, 400, body);
      assert.equal(codeOf(a), 'LF_INVALID_JSON', body);
    }
  });

  void it('RecordIO: u32 big-endian length + payload, binary payloads kept', async () => {
    const bin = Buffer.from([0, 10, 13, 255, 0]);
    const a = await ingest(t.url, recordio('{"a":1}', bin, ''), { 'content-type': 'application/x-recordio' });
    assert.equal(a.status, 202);
    assert.equal((a.json as { accepted: number }).accepted, 3);
    const last = t.wal.appends.at(-1);
    assert.equal(last?.format, RecordFormat.recordio);
    assert.deepEqual(last?.records, [Buffer.from('{"a":1}'), bin, Buffer.alloc(0)]);
  });

  void it('RecordIO: a truncated record is 400 LF_RECORDIO_TRUNCATED and nothing is written', async () => {
    const appends = t.wal.appends.length;
    const whole = recordio('{"a":1}', '{"b":2}');
    const cases: Array<[Buffer, RegExp]> = [
      [whole.subarray(0, whole.length - 1), /record 2 .*declares 7 bytes but 6 follow/],
      [Buffer.concat([whole, Buffer.from([0, 0])]), /record 3 .*2 byte\(s\) left/],
    ];
    for (const [body, message] of cases) {
      const a = await ingest(t.url, body, { 'content-type': 'application/x-recordio' });
      assert.equal(a.status, 400);
      assert.equal(codeOf(a), 'LF_RECORDIO_TRUNCATED');
      assert.match((a.json as { error: { message: string } }).error.message, message);
    }
    assert.equal(t.wal.appends.length, appends);
  });

  void it('a chunked body (no Content-Length) is read like any other', async () => {
    const a = await ingest(
      t.url,
      chunked(Buffer.from('{"a":'), Buffer.from('1}\n{"b"'), Buffer.from(':2}\n')),
    );
    assert.equal(a.status, 202);
    assert.deepEqual(t.wal.lines().slice(-2), ['{"a":1}', '{"b":2}']);
  });

  void it('an empty body is 400 LF_EMPTY_BODY (so is one of blank lines or [])', async () => {
    const cases: Array<[string, string]> = [
      ['', 'application/x-ndjson'],
      ['\n\r\n  \n', 'application/x-ndjson'],
      ['[]', 'application/json'],
      [' ', 'application/json'],
      ['', 'application/x-recordio'],
    ];
    for (const [body, type] of cases) {
      const a = await ingest(t.url, body, { 'content-type': type });
      assert.equal(a.status, 400, JSON.stringify(body));
      assert.equal(codeOf(a), 'LF_EMPTY_BODY');
    }
  });

  void it('an unknown or missing Content-Type is 415 LF_UNSUPPORTED_MEDIA_TYPE', async () => {
    for (const type of [
      'text/plain',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
    ]) {
      const a = await ingest(t.url, '{"a":1}', { 'content-type': type });
      assert.equal(a.status, 415, type);
      assert.equal(codeOf(a), 'LF_UNSUPPORTED_MEDIA_TYPE');
    }
    const res = await fetch(`${t.url}/v1/ingest`, {
      method: 'POST',
      body: new Uint8Array(Buffer.from('{"a":1}')),
    });
    assert.equal(res.status, 415);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'LF_UNSUPPORTED_MEDIA_TYPE');
  });

  void it('411 LF_LENGTH_REQUIRED: a POST with neither Content-Length nor Transfer-Encoding', async () => {
    const raw = await rawRequest(
      t.url,
      'POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n',
    );
    assert.match(raw, /^HTTP\/1\.1 411 /);
    assert.match(raw, /"code":"LF_LENGTH_REQUIRED"/);
  });

  void it('malformed HTTP is answered 400 LF_BAD_REQUEST, not a crash', async () => {
    const raw = await rawRequest(t.url, 'POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n');
    assert.match(raw, /^HTTP\/1\.1 400 /);
    assert.match(raw, /LF_BAD_REQUEST/);
    assert.equal((await fetch(`${t.url}/healthz`)).status, 200);
  });
});

void describe('POST /v1/ingest: Content-Encoding', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({
      config: { limits: { decodedBytesMax: 1024 * 1024, bodyBytesMax: 4 * 1024 * 1024 } },
    });
  });
  after(() => t.close());

  const lines = Array.from({ length: 200 }, (_, i) => `{"i":${i},"pad":"${'x'.repeat(50)}"}`);
  const ndjson = Buffer.from(lines.join('\n') + '\n');

  for (const [name, encode] of [
    ['gzip', (b: Buffer) => gzipSync(b)],
    ['x-gzip', (b: Buffer) => gzipSync(b)],
    ['zstd', (b: Buffer) => zstdCompressSync(b)],
    ['identity', (b: Buffer) => b],
  ] as const) {
    void it(`${name}: decoded before splitting`, async () => {
      const a = await ingest(t.url, encode(ndjson), { 'content-encoding': name });
      assert.equal(a.status, 202, a.text);
      assert.equal((a.json as { accepted: number }).accepted, 200);
      assert.deepEqual(t.wal.lines().slice(-200), lines);
    });
  }

  void it('gzip streamed in small chunks (chunked transfer) decodes the same', async () => {
    const gz = gzipSync(ndjson);
    const pieces: Buffer[] = [];
    for (let i = 0; i < gz.length; i += 7) pieces.push(gz.subarray(i, i + 7));
    const a = await ingest(t.url, chunked(...pieces), { 'content-encoding': 'gzip' });
    assert.equal(a.status, 202);
    assert.equal((a.json as { accepted: number }).accepted, 200);
  });

  void it('zstd JSON array and RecordIO bodies', async () => {
    const a = await ingest(t.url, zstdCompressSync(Buffer.from('[{"a":1},{"b":2}]')), {
      'content-type': 'application/json',
      'content-encoding': 'zstd',
    });
    assert.equal(a.status, 202);
    const b = await ingest(t.url, gzipSync(recordio('r1', 'r2', 'r3')), {
      'content-type': 'application/x-recordio',
      'content-encoding': 'gzip',
    });
    assert.equal(b.status, 202);
    assert.equal((b.json as { accepted: number }).accepted, 3);
  });

  void it('an unknown encoding (or a list of them) is 415 LF_UNSUPPORTED_ENCODING', async () => {
    for (const enc of ['br', 'deflate', 'compress', 'gzip, zstd']) {
      const a = await ingest(t.url, '{"a":1}', { 'content-encoding': enc });
      assert.equal(a.status, 415, enc);
      assert.equal(codeOf(a), 'LF_UNSUPPORTED_ENCODING');
    }
  });

  void it('a corrupt or truncated compressed body is 400 LF_DECODE_FAILED', async () => {
    const gz = gzipSync(ndjson);
    for (const [enc, body] of [
      ['gzip', Buffer.from('definitely not gzip')],
      ['gzip', gz.subarray(0, gz.length - 10)],
      ['zstd', Buffer.from('not zstd either')],
      ['zstd', zstdCompressSync(ndjson).subarray(0, 20)],
    ] as const) {
      const a = await ingest(t.url, body, { 'content-encoding': enc });
      assert.equal(a.status, 400, `${enc} ${a.text}`);
      assert.equal(codeOf(a), 'LF_DECODE_FAILED');
    }
  });

  for (const kind of ['gzip', 'zstd'] as const) {
    void it(`a ${kind} bomb (1 GiB of zeros) stops at limits.decodedBytesMax with 413, without allocating it`, async () => {
      const appends = t.wal.appends.length;
      const body = await bomb(kind, 1024 * 1024 * 1024);
      assert.ok(body.length < t.config.limits.bodyBytesMax, `bomb is ${body.length} bytes`);
      const base = process.memoryUsage().arrayBuffers;
      let peak = base;
      const sampler = setInterval(() => {
        peak = Math.max(peak, process.memoryUsage().arrayBuffers);
      }, 1);
      const a = await ingest(t.url, body, { 'content-encoding': kind });
      clearInterval(sampler);
      peak = Math.max(peak, process.memoryUsage().arrayBuffers);
      assert.equal(a.status, 413);
      assert.equal(codeOf(a), 'LF_DECODED_TOO_LARGE');
      assert.equal(t.wal.appends.length, appends);
      // The request body itself and fetch's copies are in here too; 1 GiB is not.
      assert.ok(peak - base < 64 * 1024 * 1024, `arrayBuffers grew by ${peak - base} bytes`);
      assert.equal(t.server.backpressure.inflightBytes, 0, 'the in-flight reservation is released');
    });
  }
});

void describe('POST /v1/ingest: size limits', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({
      config: {
        limits: {
          bodyBytesMax: 64 * 1024,
          decodedBytesMax: 128 * 1024,
          recordBytesMax: 1024,
          recordsPerRequestMax: 4096,
          inflightBytesMax: 1024 * 1024,
        },
      },
    });
  });
  after(() => t.close());

  void it('a body announced over bodyBytesMax is 413 LF_PAYLOAD_TOO_LARGE before it is read', async () => {
    const a = await ingest(t.url, Buffer.alloc(100 * 1024, 0x61));
    assert.equal(a.status, 413);
    assert.equal(codeOf(a), 'LF_PAYLOAD_TOO_LARGE');
    assert.equal(a.headers.get('connection'), 'close');
  });

  void it('a chunked body that grows over bodyBytesMax is 413 LF_PAYLOAD_TOO_LARGE', async () => {
    const line = Buffer.from(`{"pad":"${'x'.repeat(500)}"}\n`);
    const a = await ingest(t.url, chunked(...Array.from({ length: 200 }, () => line)));
    assert.equal(a.status, 413);
    assert.equal(codeOf(a), 'LF_PAYLOAD_TOO_LARGE');
    assert.equal(t.server.backpressure.inflightBytes, 0);
    // The server is still fine for the next client.
    assert.equal((await ingest(t.url, '{"ok":1}\n')).status, 202);
  });

  void it('a record over recordBytesMax is 413 LF_RECORD_TOO_LARGE naming it, nothing written', async () => {
    const appends = t.wal.appends.length;
    const a = await ingest(t.url, `{"a":1}\n{"pad":"${'x'.repeat(2000)}"}\n`);
    assert.equal(a.status, 413);
    assert.equal(codeOf(a), 'LF_RECORD_TOO_LARGE');
    assert.match((a.json as { error: { message: string } }).error.message, /line 2/);
    const b = await ingest(t.url, recordio('ok', Buffer.alloc(5000)), {
      'content-type': 'application/x-recordio',
    });
    assert.equal(codeOf(b), 'LF_RECORD_TOO_LARGE');
    const c = await ingest(t.url, `[{"a":1},{"pad":"${'x'.repeat(2000)}"}]`, {
      'content-type': 'application/json',
    });
    assert.equal(codeOf(c), 'LF_RECORD_TOO_LARGE');
    assert.equal(t.wal.appends.length, appends);
  });
});

void describe('POST /v1/ingest: validation: json', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ config: { validation: 'json' } });
  });
  after(() => t.close());

  void it('valid JSON lines are accepted', async () => {
    const a = await ingest(t.url, '{"a":1}\n[1,2]\n"s"\n42\n');
    assert.equal(a.status, 202);
  });

  void it('a line that is not JSON is 400 LF_INVALID_JSON with its line number, and nothing is written', async () => {
    const appends = t.wal.appends.length;
    const a = await ingest(t.url, '{"a":1}\n\n{"b":2}\n{"c":\n{"d":4}\n');
    assert.equal(a.status, 400);
    assert.equal(codeOf(a), 'LF_INVALID_JSON');
    assert.match((a.json as { error: { message: string } }).error.message, /^Line 4 is not valid JSON/);
    assert.equal(t.wal.appends.length, appends, 'all or nothing: the good lines are not written either');
  });

  void it('invalid UTF-8 is not JSON', async () => {
    const a = await ingest(
      t.url,
      Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}\n')]),
    );
    assert.equal(codeOf(a), 'LF_INVALID_JSON');
  });

  void it('JSON bodies and RecordIO payloads are checked too', async () => {
    const a = await ingest(t.url, '[{"a":1},{"b":tru}]', { 'content-type': 'application/json' });
    assert.equal(codeOf(a), 'LF_INVALID_JSON');
    assert.match((a.json as { error: { message: string } }).error.message, /Array element 2/);
    const b = await ingest(t.url, recordio('{"a":1}', 'nope'), { 'content-type': 'application/x-recordio' });
    assert.equal(codeOf(b), 'LF_INVALID_JSON');
    assert.match((b.json as { error: { message: string } }).error.message, /Record 2/);
  });
});

void describe('POST /v1/ingest: WAL failure', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
  });
  after(() => t.close());

  void it('a failing append is 503 LF_WAL_UNAVAILABLE with Retry-After; nothing is acknowledged', async () => {
    t.wal.failWith = new Error('EIO: disk on fire');
    const a = await ingest(t.url, '{"a":1}\n{"b":2}\n');
    assert.equal(a.status, 503);
    assert.equal(codeOf(a), 'LF_WAL_UNAVAILABLE');
    assert.ok(Number(a.headers.get('retry-after')) > 0);
    assert.doesNotMatch(a.text, /disk on fire/, 'internal detail stays in the log');
    assert.equal(t.wal.appends.length, 0);
    t.wal.failWith = undefined;
    const b = await ingest(t.url, '{"a":1}\n');
    assert.equal(b.status, 202);
  });
});

void describe('POST /v1/ingest: malformed input never crashes the server', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({
      config: { limits: { bodyBytesMax: 64 * 1024, decodedBytesMax: 64 * 1024 } },
    });
  });
  after(() => t.close());

  void it('random bodies with random types and encodings get a 2xx or a coded 4xx', async () => {
    let seed = 42;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const types = ['application/x-ndjson', 'application/json', 'application/x-recordio', 'text/plain', ''];
    const encodings = ['', 'gzip', 'zstd', 'br'];
    const alphabet = Buffer.from('{}[]",:\\\n\r 0123456789abcdefnulltrue\x00\xff');
    for (let i = 0; i < 300; i++) {
      const len = rand(300);
      const body = Buffer.alloc(len);
      const binary = rand(2) === 0;
      for (let j = 0; j < len; j++) body[j] = binary ? rand(256) : (alphabet[rand(alphabet.length)] ?? 0);
      let payload: Buffer = body;
      const enc = encodings[rand(encodings.length)] ?? '';
      if (enc === 'gzip' && rand(2) === 0) payload = gzipSync(body);
      if (enc === 'zstd' && rand(2) === 0) payload = zstdCompressSync(body);
      const headers: Record<string, string> = { 'content-type': types[rand(types.length)] ?? '' };
      if (enc !== '') headers['content-encoding'] = enc;
      if (rand(4) === 0) headers['idempotency-key'] = `k${rand(5)}`;
      const a = await ingest(t.url, payload, headers);
      assert.ok(a.status === 202 || (a.status >= 400 && a.status < 500), `status ${a.status}: ${a.text}`);
      if (a.status !== 202) assert.match(codeOf(a) ?? '', /^LF_[A-Z_]+$/);
    }
    assert.equal(t.server.backpressure.inflightBytes, 0);
  });

  void it('random raw bytes on the socket get a 400 or a closed connection, and the server lives on', async () => {
    let seed = 7;
    for (let i = 0; i < 30; i++) {
      const junk = Buffer.alloc(200);
      for (let j = 0; j < junk.length; j++) {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        junk[j] = seed % 256;
      }
      const raw = await rawRequest(
        t.url,
        i % 2 === 0 ? junk : Buffer.concat([Buffer.from('POST /v1/ingest HTTP/1.1\r\n'), junk]),
      );
      assert.ok(raw === '' || /^HTTP\/1\.1 (400|408|411|413|415|431) /.test(raw), raw.slice(0, 60));
    }
    assert.equal((await fetch(`${t.url}/healthz`)).status, 200);
  });

  void it('random header values on the ingest route get a coded answer', async () => {
    let seed = 99;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const printable = (len: number): string =>
      Array.from({ length: len }, () => String.fromCharCode(0x20 + rand(0x5f)))
        .join('')
        .trim() || 'x';
    const names = [
      'content-type',
      'content-encoding',
      'idempotency-key',
      'x-api-key',
      'authorization',
      'transfer-encoding',
      'x-junk',
    ];
    for (let i = 0; i < 150; i++) {
      const headers: Record<string, string> = { 'content-type': 'application/x-ndjson' };
      for (let k = 0; k < 3; k++) headers[names[rand(names.length)] ?? 'x-junk'] = printable(rand(40) + 1);
      let a;
      try {
        a = await ingest(t.url, '{"a":1}\n', headers);
      } catch {
        continue; // fetch itself refuses some header values (e.g. transfer-encoding)
      }
      assert.ok(a.status === 202 || (a.status >= 400 && a.status < 500), `status ${a.status}: ${a.text}`);
      if (a.status !== 202) assert.match(codeOf(a) ?? '', /^LF_[A-Z_]+$/);
    }
    assert.equal((await fetch(`${t.url}/healthz`)).status, 200);
  });

  void it('several gzip members or zstd frames in one body are all decoded', async () => {
    // zstd matters most: node's decoder stops after the first frame of a chunk.
    for (const [name, make] of [
      ['gzip', () => createGzip()],
      ['zstd', () => createZstdCompress()],
    ] as const) {
      const enc = make();
      const out: Buffer[] = [];
      enc.on('data', (c: Buffer) => out.push(c));
      const done = new Promise((r) => enc.on('end', r));
      enc.end(Buffer.from('{"s":1}\n'));
      await done;
      const member = Buffer.concat(out);
      const a = await ingest(t.url, Buffer.concat([member, member, member]), { 'content-encoding': name });
      assert.equal(a.status, 202, a.text);
      assert.equal((a.json as { accepted: number }).accepted, 3);
    }
  });

  void it('garbage after the last gzip member or zstd frame is 400 LF_DECODE_FAILED, not silently dropped', async () => {
    for (const [name, encode] of [
      ['gzip', gzipSync],
      ['zstd', zstdCompressSync],
    ] as const) {
      const a = await ingest(
        t.url,
        Buffer.concat([encode(Buffer.from('{"s":1}\n')), Buffer.from('trailing junk')]),
        {
          'content-encoding': name,
        },
      );
      assert.equal(a.status, 400, `${name}: ${a.text}`);
      assert.equal(codeOf(a), 'LF_DECODE_FAILED');
    }
  });
});
