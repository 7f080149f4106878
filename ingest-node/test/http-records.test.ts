// NDJSON and RecordIO are split from the chunks a body arrived (or was
// decoded) in, not from a concatenation of them (records.ts): the same
// records, errors and line numbers as splitting the whole body, with records
// inside one chunk left as views of it. And over HTTP on the real WAL: bodies
// that reach the server in several chunks (gzip and zstd decode in 64 KiB
// pieces; an unencoded body sent in pieces) land byte for byte.

import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { splitNdjson, splitNdjsonChunks, splitRecordio, splitRecordioChunks } from '../src/http/records.ts';
import type { SplitOptions } from '../src/http/records.ts';
import { readBody } from '../src/http/body.ts';
import { readSegment } from '../src/wal/format.ts';
import type { Wal } from '../src/wal/types.ts';
import { ingest, openDiskWal, startTestServer } from './helpers/server.ts';
import type { TestServer } from './helpers/server.ts';

/** `r` lies inside `chunk`'s bytes (small Buffers share a pool slab, so `.buffer` alone says nothing). */
function isViewOf(r: Buffer, chunk: Buffer): boolean {
  return (
    r.buffer === chunk.buffer &&
    r.byteOffset >= chunk.byteOffset &&
    r.byteOffset + r.length <= chunk.byteOffset + chunk.length
  );
}

type Outcome = { readonly records: string[] } | { readonly error: string };

function outcome(split: () => Buffer[]): Outcome {
  try {
    return { records: split().map((r) => r.toString('latin1')) };
  } catch (err) {
    return { error: `${(err as Error).constructor.name}: ${(err as Error).message}` };
  }
}

void describe('splitNdjsonChunks: the same as splitNdjson of the whole body', () => {
  // mulberry32: a small LCG's low bits repeat with a short period, and would leave cases out.
  let seed = 4321;
  const rand = (n: number): number => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) % n;
  };
  /** `body` cut at random places, empty chunks included. */
  const cut = (body: Buffer): Buffer[] => {
    const chunks: Buffer[] = [];
    let i = 0;
    while (i < body.length) {
      const n = rand(3) === 0 ? 0 : 1 + rand(12);
      // A copy, as a real chunk is: a record found in it cannot be the whole body's bytes by accident.
      chunks.push(Buffer.from(body.subarray(i, i + n)));
      i += n;
    }
    if (rand(4) === 0) chunks.push(Buffer.alloc(0));
    return chunks;
  };

  void it('random lines of blanks, CRs, tabs, JSON and not JSON; caps that bite; validation on and off', () => {
    const pieces = [' ', '\t', '\r', '\n', '\n', '\r\n', 'a', '{}', '{"k":1}', '{"s":"x y"}', '[', '\u00e9'];
    let errors = 0;
    let copies = 0;
    for (let k = 0; k < 6000; k++) {
      const body = Buffer.from(Array.from({ length: rand(30) }, () => pieces[rand(pieces.length)]).join(''));
      const o: SplitOptions = {
        recordBytesMax: rand(3) === 0 ? 1 + rand(10) : 1 << 20,
        recordsMax: rand(3) === 0 ? rand(5) : 1 << 20,
        validateJson: rand(2) === 0,
      };
      const chunks = cut(body);
      const expected = outcome(() => splitNdjson(body, o));
      assert.deepEqual(
        outcome(() => splitNdjsonChunks(chunks, o)),
        expected,
        `${JSON.stringify(chunks.map((c) => c.toString('latin1')))} ${JSON.stringify(o)}`,
      );
      if ('error' in expected) errors++;
      else {
        const got = splitNdjsonChunks(chunks, o);
        for (const r of got) if (!chunks.some((c) => isViewOf(r, c))) copies++;
      }
    }
    // The cases above are not all errors, nor all records inside one chunk.
    assert.ok(errors > 500 && errors < 5500, `${errors} errors`);
    assert.ok(copies > 500, `${copies} records copied`);
  });

  void it('a record inside one chunk is a view of that chunk; only one that straddles chunks is a copy', () => {
    const o: SplitOptions = { recordBytesMax: 1 << 20, recordsMax: 1 << 20, validateJson: false };
    const chunks = [Buffer.from('{"a":1}\n{"b"'), Buffer.from(':2}\r'), Buffer.from('\n{"c":3}\n{"d":4}')];
    const records = splitNdjsonChunks(chunks, o);
    assert.deepEqual(
      records.map((r) => r.toString()),
      ['{"a":1}', '{"b":2}', '{"c":3}', '{"d":4}'],
    );
    assert.ok(isViewOf(records[0]!, chunks[0]!));
    assert.ok(!chunks.some((c) => isViewOf(records[1]!, c)));
    assert.ok(isViewOf(records[2]!, chunks[2]!));
    assert.ok(isViewOf(records[3]!, chunks[2]!));
    // A line whose newline only opens the next chunk is still whole in one: a view, not a copy.
    const alone = [Buffer.from('{"e":5}'), Buffer.from('\n')];
    const [only] = splitNdjsonChunks(alone, o);
    assert.equal(only!.toString(), '{"e":5}');
    assert.ok(isViewOf(only!, alone[0]!));
  });

  void it('an oversize line across chunks is refused by its length (blank ones are skipped whatever their size)', () => {
    const o: SplitOptions = { recordBytesMax: 10, recordsMax: 100, validateJson: false };
    const chunks = [
      Buffer.from('{"a":1}\n' + 'x'.repeat(8)),
      Buffer.from('y'.repeat(8)),
      Buffer.from('\r\n'),
    ];
    assert.throws(() => splitNdjsonChunks(chunks, o), /line 2, 16 bytes/);
    const blank = [Buffer.from('{"a":1}\n  '), Buffer.from(' \t'.repeat(20)), Buffer.from('\r\n{"b":2}')];
    assert.deepEqual(
      splitNdjsonChunks(blank, o).map((r) => r.toString()),
      ['{"a":1}', '{"b":2}'],
    );
  });
});

void describe('splitRecordioChunks: the same as splitRecordio of the whole body', () => {
  let seed = 8765;
  const rand = (n: number): number => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) % n;
  };
  // A length with a low byte past 127 (202), so every bit of a length that straddles chunks counts.
  const payloads = [
    '',
    '{}',
    '{"k":1}',
    'not json',
    '{"s":"x y z w v"}',
    'x'.repeat(30),
    `"${'y'.repeat(200)}"`,
  ];
  /** Records, sometimes with a short tail (a cut length or payload), cut into random chunks. */
  const body = (): Buffer => {
    const parts: Buffer[] = [];
    for (let r = rand(7); r > 0; r--) {
      const p = Buffer.from(payloads[rand(payloads.length)]!);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(p.length);
      parts.push(len, p);
    }
    const whole = Buffer.concat(parts);
    return rand(4) === 0 ? whole.subarray(0, rand(whole.length + 1)) : whole;
  };

  void it('random records, truncated tails, caps that bite, validation on and off', () => {
    let errors = 0;
    let copies = 0;
    for (let k = 0; k < 6000; k++) {
      const whole = body();
      const chunks: Buffer[] = [];
      for (let i = 0; i < whole.length;) {
        const n = rand(3) === 0 ? 0 : 1 + rand(rand(2) === 0 ? 12 : 400);
        chunks.push(Buffer.from(whole.subarray(i, i + n)));
        i += n;
      }
      const o: SplitOptions = {
        recordBytesMax: rand(3) === 0 ? rand(12) : rand(3) === 0 ? 200 + rand(4) : 1 << 20,
        recordsMax: rand(3) === 0 ? rand(5) : 1 << 20,
        validateJson: rand(2) === 0,
      };
      const expected = outcome(() => splitRecordio(whole, o));
      assert.deepEqual(
        outcome(() => splitRecordioChunks(chunks, o)),
        expected,
        `${JSON.stringify(chunks.map((c) => c.toString('latin1')))} ${JSON.stringify(o)}`,
      );
      if ('error' in expected) errors++;
      else
        for (const r of splitRecordioChunks(chunks, o))
          if (r.length > 0 && !chunks.some((c) => isViewOf(r, c))) copies++;
    }
    assert.ok(errors > 500 && errors < 5500, `${errors} errors`);
    assert.ok(copies > 500, `${copies} records copied`);
  });

  void it('a payload inside one chunk is a view of it; one across chunks (or a length across them) still splits', () => {
    const o: SplitOptions = { recordBytesMax: 1 << 20, recordsMax: 1 << 20, validateJson: false };
    const chunks = [
      Buffer.from([0, 0, 0, 3, 0x61, 0x62, 0x63, 0, 0]),
      Buffer.from([0, 2, 0x64]),
      Buffer.from([0x65]),
    ];
    const records = splitRecordioChunks(chunks, o);
    assert.deepEqual(
      records.map((r) => r.toString()),
      ['abc', 'de'],
    );
    assert.ok(isViewOf(records[0]!, chunks[0]!));
    assert.ok(!chunks.some((c) => isViewOf(records[1]!, c)));
    // A payload that ends exactly where its chunk does is still a view.
    const exact = [Buffer.from([0, 0, 0, 2, 0x66, 0x67]), Buffer.from([0, 0, 0, 1, 0x68])];
    const [first, second] = splitRecordioChunks(exact, o);
    assert.equal(first!.toString() + second!.toString(), 'fgh');
    assert.ok(isViewOf(first!, exact[0]!));
    assert.ok(isViewOf(second!, exact[1]!));
  });
});

interface Stored {
  readonly seq: bigint;
  readonly payload: Buffer;
}

async function storedRecords(dir: string): Promise<Stored[]> {
  const out: Stored[] = [];
  for (const name of (await readdir(dir)).filter((n) => n.endsWith('.wal')).sort()) {
    const { records } = readSegment(await readFile(join(dir, name)), { requireBatchEnd: false });
    for (const r of records) out.push({ seq: r.seq, payload: Buffer.from(r.payload) });
  }
  return out;
}

/**
 * About 200 KiB of NDJSON whose lines straddle every 64 KiB boundary (the
 * decoders' output chunk size): CRLF and LF endings, blank lines between.
 */
function bigBody(): { body: Buffer; lines: string[] } {
  const lines: string[] = [];
  let text = '';
  for (let i = 0; text.length < 200 * 1024; i++) {
    const line = JSON.stringify({ i, pad: 'p'.repeat(97 + (i % 13)) });
    lines.push(line);
    text += line + (i % 3 === 0 ? '\r\n' : '\n') + (i % 7 === 0 ? ' \t\n' : '');
  }
  return { body: Buffer.from(text), lines };
}

/** POST `body` over a raw socket, one write per piece with a turn of the event loop between. */
async function postInPieces(url: string, pieces: readonly Buffer[]): Promise<string> {
  const { hostname, port } = new URL(url);
  const total = pieces.reduce((n, p) => n + p.length, 0);
  const socket = connect(Number(port), hostname);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let answer = '';
  socket.setEncoding('latin1').on('data', (d: string) => (answer += d));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.write(
    `POST /v1/ingest HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-ndjson\r\n` +
      `content-length: ${total}\r\nconnection: close\r\n\r\n`,
  );
  for (const p of pieces) {
    await new Promise<void>((resolve) => socket.write(p, () => resolve()));
    await new Promise<void>((resolve) => setTimeout(resolve, 1));
  }
  await closed;
  return answer;
}

void describe('bodies in several chunks, on the real WAL', () => {
  let dir: string | undefined;
  let t: TestServer<Wal> | undefined;
  afterEach(async () => {
    await t?.close();
    await t?.wal.close();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    t = undefined;
    dir = undefined;
  });

  const start = async (): Promise<TestServer<Wal>> => {
    dir = await mkdtemp(join(tmpdir(), 'landfall-http-records-'));
    const wal = await openDiskWal(dir);
    t = await startTestServer({ wal });
    return t;
  };

  void it('gzip and zstd bodies decoded in 64 KiB chunks, lines across their edges: every line, byte for byte', async () => {
    const s = await start();
    const { body, lines } = bigBody();
    const g = await ingest(s.url, gzipSync(body), { 'content-encoding': 'gzip' });
    assert.equal(g.status, 202, g.text);
    const z = await ingest(s.url, zstdCompressSync(body), { 'content-encoding': 'zstd' });
    assert.equal(z.status, 202, z.text);
    assert.equal((g.json as { accepted: number }).accepted, lines.length);
    assert.equal((z.json as { accepted: number }).accepted, lines.length);
    await s.wal.close();
    const stored = await storedRecords(dir!);
    assert.deepEqual(
      stored.map((r) => r.payload.toString()),
      [...lines, ...lines],
    );
    assert.deepEqual(
      stored.map((r) => r.seq),
      stored.map((_, i) => stored[0]!.seq + BigInt(i)),
    );
  });

  void it('a zstd RecordIO body decoded in 64 KiB chunks, payloads and lengths across their edges: byte for byte', async () => {
    const s = await start();
    const { lines } = bigBody();
    const parts: Buffer[] = [];
    for (const line of lines) {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(Buffer.byteLength(line));
      parts.push(len, Buffer.from(line));
    }
    const r = await ingest(s.url, zstdCompressSync(Buffer.concat(parts)), {
      'content-type': 'application/x-recordio',
      'content-encoding': 'zstd',
    });
    assert.equal(r.status, 202, r.text);
    assert.equal((r.json as { accepted: number }).accepted, lines.length);
    await s.wal.close();
    assert.deepEqual(
      (await storedRecords(dir!)).map((x) => x.payload.toString()),
      lines,
    );
  });

  void it('an unencoded body sent in pieces cut inside records, CRs and blank lines: every line, byte for byte', async () => {
    const s = await start();
    const { body, lines } = bigBody();
    const pieces: Buffer[] = [];
    // Cuts at odd places: inside a record, between \r and \n, inside a blank line.
    for (let i = 0, n = 1; i < body.length; i += n, n = (n * 7 + 3) % 9001)
      pieces.push(body.subarray(i, i + n));
    const answer = await postInPieces(s.url, pieces);
    assert.match(answer, /^HTTP\/1\.1 202 /);
    assert.match(answer, new RegExp(`"accepted":${lines.length}`));
    await s.wal.close();
    assert.deepEqual(
      (await storedRecords(dir!)).map((r) => r.payload.toString()),
      lines,
    );
  });
});

void describe('what a body holds while its records wait for the WAL', () => {
  const limits = {
    bodyBytesMax: 1 << 20,
    decodedBytesMax: 1 << 20,
    recordsPerRequestMax: 100_000,
    framesPerBodyMax: 1024,
  };
  const reservation = () => ({
    reserved: 0,
    records: 0,
    budget: { tryReserve: () => true, overloaded: () => new Error('overloaded') as never },
  });
  const watch = { arrived: () => {}, check: () => undefined };

  void it('a body sent a byte at a time comes back in few buffers, byte for byte', async () => {
    const { body } = bigBody();
    const text = body.subarray(0, 40_000);
    const pieces = [...text].map((b) => Buffer.from([b]));
    const chunks = await readBody(Readable.from(pieces), 'identity', limits, reservation(), watch, undefined);
    assert.deepEqual(Buffer.concat(chunks), text);
    // One Buffer per byte was ~200 bytes of heap per body byte, uncharged.
    assert.ok(chunks.length <= Math.ceil(text.length / 4096) + 1, `${chunks.length} buffers`);
    // Large chunks are kept as they came (no copy).
    const big = [body.subarray(0, 50_000), body.subarray(50_000, 100_000)];
    const kept = await readBody(Readable.from(big), 'identity', limits, reservation(), watch, undefined);
    assert.equal(kept.length, 2);
    assert.equal(kept[0]!.buffer, big[0]!.buffer);
  });

  void it('the records of a many-frame zstd body do not each keep a decoder output buffer', async () => {
    const ts = await startTestServer();
    try {
      let held: readonly Uint8Array[] = [];
      const append = ts.wal.append.bind(ts.wal);
      // What the real WAL keeps until the fsync acknowledges: the records as handed over.
      ts.wal.append = (records, format) => {
        held = records;
        return append(records, format);
      };
      const frames = Array.from({ length: 200 }, (_, i) => zstdCompressSync(Buffer.from(`{"i":${i}}\n`)));
      const a = await ingest(ts.url, Buffer.concat(frames), {
        'content-type': 'application/x-ndjson',
        'content-encoding': 'zstd',
      });
      assert.equal(a.status, 202);
      assert.equal(held.length, 200);
      let heldBytes = 0;
      for (const b of new Set(held.map((r) => r.buffer))) heldBytes += b.byteLength;
      const decoded = held.reduce((n, r) => n + r.byteLength, 0);
      // Was 64 KiB per frame (12.5 MiB here); now the records' bytes, in at most a few pool blocks.
      assert.ok(
        heldBytes <= decoded + 3 * 64 * 1024,
        `${heldBytes} bytes held for ${decoded} bytes of records`,
      );
    } finally {
      await ts.close();
    }
  });
});

void describe('small chunks in every order', () => {
  void it('any mix of small and large chunks comes back in order, byte for byte; a lone small body is not copied', async () => {
    const limits = {
      bodyBytesMax: 1 << 20,
      decodedBytesMax: 1 << 20,
      recordsPerRequestMax: 100_000,
      framesPerBodyMax: 1024,
    };
    const res = () => ({
      reserved: 0,
      records: 0,
      budget: { tryReserve: () => true, overloaded: () => new Error('x') as never },
    });
    const watch = { arrived: () => {}, check: () => undefined };
    const one = Buffer.from('{"a":1}\n');
    const alone = await readBody(Readable.from([one]), 'identity', limits, res(), watch, undefined);
    assert.equal(alone.length, 1);
    assert.equal(alone[0], one, 'the one small chunk as it came');
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 200; round++) {
      const pieces: Buffer[] = [];
      for (let k = rand(12); k >= 0; k--) {
        const size = rand(3) === 0 ? 4096 + rand(9000) : rand(5000);
        pieces.push(Buffer.from(Array.from({ length: size }, () => rand(256))));
      }
      const got = await readBody(Readable.from(pieces), 'identity', limits, res(), watch, undefined);
      assert.deepEqual(Buffer.concat(got), Buffer.concat(pieces), `round ${round}`);
    }
  });
});
