import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FRAME_HEADER_BYTES,
  FrameFlags,
  SegmentCorruptError,
  SegmentDecoder,
  checkFrame,
  decodeMqttPayload,
  decodeSegmentHeader,
  encodeFrame,
  encodeFrameInto,
  encodeMqttPayload,
  encodeSegmentHeader,
  readSegment,
  readSegmentStream,
  scanSegment,
  type SegmentHeader,
} from '../src/wal/format.ts';
import { crc32c } from '@node-rs/crc32';
import { RecordFormat } from '../src/wal/types.ts';
import { newEpoch, epochTimeMs, EPOCH_PATTERN } from '../src/wal/epoch.ts';
import { seededRandom } from '../src/fs/power-cut.ts';
import { buildSegment, dec, enc, seededBytes } from './wal-helpers.ts';

void test('segment header round-trips and is CRC-protected', () => {
  const h = {
    segmentId: 18446744073709551615n,
    createdMicros: 1_735_689_600_123_456n,
    endpoint: 'orders',
    instance: 'orders-0 ünïcode',
    epoch: '01JGFJJZ000000000000000000',
  };
  const bytes = encodeSegmentHeader(h);
  const r = decodeSegmentHeader(bytes);
  assert.ok(r.ok);
  assert.deepEqual(r.header, { ...h, version: 1, headerBytes: bytes.length });
  assert.equal(dec(bytes.subarray(0, 8)), 'LANDFALL');
  for (let i = 0; i < bytes.length; i++) {
    const bad = bytes.slice();
    bad[i] = bad[i]! ^ 0x10;
    assert.equal(decodeSegmentHeader(bad).ok, false, `flip at byte ${i} must be detected`);
  }
  assert.deepEqual(decodeSegmentHeader(bytes.subarray(0, 20)), { ok: false, defect: 'short' });
  assert.deepEqual(decodeSegmentHeader(new Uint8Array(64)), { ok: false, defect: 'magic' });
  assert.throws(() => encodeSegmentHeader({ ...h, endpoint: 'x'.repeat(256) }), RangeError);
});

void test('frame layout is the documented one (little-endian, CRC over everything after the crc field)', () => {
  const f = encodeFrame({
    seq: 0x0102030405n,
    ingestMicros: 1_735_689_600_000_001n,
    format: RecordFormat.json,
    flags: FrameFlags.batchEnd | FrameFlags.groupStart,
    payload: enc('{"a":1}'),
  });
  const dv = new DataView(f.buffer, f.byteOffset, f.byteLength);
  assert.equal(f.length, FRAME_HEADER_BYTES + 7);
  assert.equal(dv.getUint32(0, true), 7);
  assert.equal(dv.getBigUint64(8, true), 0x0102030405n);
  assert.equal(dv.getBigInt64(16, true), 1_735_689_600_000_001n);
  assert.equal(f[24], 2);
  assert.equal(f[25], 3);
  assert.equal(dec(f.subarray(26)), '{"a":1}');
  assert.equal(checkFrame(f, 0, 1024), f.length);
  // Every single-bit flip anywhere in the frame is caught, the length field included.
  for (let i = 0; i < f.length; i++) {
    const bad = Buffer.from(f);
    bad[i] = bad[i]! ^ 0x01;
    assert.ok(checkFrame(bad, 0, 1024) < 0, `flip at byte ${i}`);
  }
});

void test('encodeFrameInto writes the CRC over bytes [8, end) at any offset, for any payload view', () => {
  const rnd = seededRandom(7);
  const bytes = seededBytes(8);
  const buf = Buffer.alloc(300 * 1024);
  for (let k = 0; k < 300; k++) {
    const size =
      k % 50 === 0 ? 0 : k % 37 === 0 ? 70_000 + Math.floor(rnd() * 100_000) : Math.floor(rnd() * 700);
    // A view inside a larger buffer, as a record split from a request body is (a Buffer or not), or a copy.
    const backing = bytes(size + 16);
    const view = backing.subarray(5, 5 + size);
    const payload =
      k % 3 === 0
        ? new Uint8Array(view)
        : k % 3 === 1
          ? Buffer.from(view.buffer, view.byteOffset, view.byteLength)
          : view;
    const offset = Math.floor(rnd() * 1000);
    const seq = Math.floor(rnd() * 2 ** 52);
    const end = encodeFrameInto(buf, offset, seq, Math.floor(rnd() * 2 ** 52), k % 5, k % 4, payload);
    assert.equal(end, offset + FRAME_HEADER_BYTES + size);
    assert.equal(buf.readUInt32LE(offset + 4), crc32c(buf.subarray(offset + 8, end)) >>> 0, `frame ${k}`);
    assert.equal(checkFrame(buf.subarray(0, end), offset, 1 << 20), end);
  }
});

void test('whole-buffer reader and chunked decoder agree on random segments', async () => {
  const rnd = seededRandom(42);
  const bytes = seededBytes(43);
  for (let round = 0; round < 20; round++) {
    const groups: string[][][] = [];
    for (let g = 0; g < 1 + Math.floor(rnd() * 5); g++) {
      const group: string[][] = [];
      for (let a = 0; a < 1 + Math.floor(rnd() * 4); a++) {
        group.push(
          Array.from({ length: 1 + Math.floor(rnd() * 3) }, () =>
            Buffer.from(bytes(Math.floor(rnd() * 300))).toString('latin1'),
          ),
        );
      }
      groups.push(group);
    }
    const seg = buildSegment(groups, { firstSeq: 1 + Math.floor(rnd() * 1000) });
    const whole = [...readSegment(seg.bytes).records].map((r) => ({ ...r, payload: Buffer.from(r.payload) }));
    assert.equal(whole.length, seg.frames.length);
    // Random chunking, down to 1-byte chunks.
    const chunks: Uint8Array[] = [];
    for (let at = 0; at < seg.bytes.length;) {
      const n = 1 + Math.floor(rnd() * (round % 2 === 0 ? 7 : 700));
      chunks.push(seg.bytes.subarray(at, at + n));
      at += n;
    }
    let header: SegmentHeader | undefined;
    const streamed = [];
    for await (const r of readSegmentStream(
      (async function* () {
        yield* chunks;
      })(),
      { onHeader: (h) => (header = h) },
    )) {
      streamed.push({ ...r, payload: Buffer.from(r.payload) });
    }
    assert.deepEqual(streamed, whole);
    assert.equal(header!.segmentId, 1n);
  }
});

void test('readers reject a corrupt length without allocating it', () => {
  const seg = buildSegment([[['a', 'b']], [['c']]]);
  const bad = Buffer.from(seg.bytes);
  bad.writeUInt32LE(0xfffffff0, seg.frames[1]); // claims ~4 GiB
  assert.throws(
    () => [...readSegment(bad).records],
    (e: unknown) => e instanceof SegmentCorruptError && e.reason === 'length' && e.offset === seg.frames[1],
  );
  const d = new SegmentDecoder({ recordBytesMax: 1024 });
  assert.throws(
    () => d.push(bad),
    (e: unknown) => e instanceof SegmentCorruptError && e.reason === 'length',
  );
  // A length under the cap but beyond the data: the whole-buffer reader calls it truncated.
  const short = Buffer.from(seg.bytes);
  short.writeUInt32LE(1000, seg.frames[2]);
  assert.throws(
    () => [...readSegment(short).records],
    (e: unknown) => e instanceof SegmentCorruptError && e.reason === 'truncated',
  );
});

void test('strict readers: partial batch at the end and seq gaps are corruption', () => {
  const seg = buildSegment([[['a', 'b', 'c']]]);
  const cut = seg.bytes.subarray(0, seg.frames[2]); // ends after b, before the batch end
  assert.throws(
    () => [...readSegment(cut).records],
    (e: unknown) => e instanceof SegmentCorruptError && e.reason === 'partial-batch',
  );
  assert.equal([...readSegment(cut, { requireBatchEnd: false }).records].length, 2);
  const d = new SegmentDecoder();
  d.push(cut);
  assert.throws(
    () => d.end(),
    (e: unknown) => e instanceof SegmentCorruptError && e.reason === 'partial-batch',
  );
  const a = buildSegment([[['a']]], { firstSeq: 1 });
  const b = buildSegment([[['b']]], { firstSeq: 3 });
  const gap = Buffer.concat([a.bytes, b.bytes.subarray(b.headerBytes)]);
  assert.throws(
    () => [...readSegment(gap).records],
    (e: unknown) => e instanceof SegmentCorruptError && e.reason === 'seq',
  );
});

void test('MQTT payload carries its topic', () => {
  const p = encodeMqttPayload('sensors/ä/temp', enc('21.5'));
  assert.equal(p[0]! | (p[1]! << 8), Buffer.byteLength('sensors/ä/temp'));
  const { topic, message } = decodeMqttPayload(p);
  assert.equal(topic, 'sensors/ä/temp');
  assert.equal(dec(message), '21.5');
  assert.deepEqual(decodeMqttPayload(encodeMqttPayload('', new Uint8Array(0))), {
    topic: '',
    message: new Uint8Array(0),
  });
  assert.throws(() => decodeMqttPayload(Uint8Array.of(5, 0, 1)), RangeError);
});

void test('epochs are ULIDs that sort by creation time', () => {
  const rnd = seededBytes(1);
  const a = newEpoch(1_700_000_000_000, rnd);
  const b = newEpoch(1_700_000_000_001, rnd);
  const c = newEpoch(1_800_000_000_000, rnd);
  for (const e of [a, b, c]) assert.match(e, EPOCH_PATTERN);
  assert.ok(a < b && b < c);
  assert.equal(epochTimeMs(a), 1_700_000_000_000);
  assert.notEqual(newEpoch(1, seededBytes(2)), newEpoch(1, seededBytes(3)));
});

// The recovery scan's classification; wal-recovery.test.ts asserts what
// openWal then does with each outcome.
void test('scanSegment corruption table', async (t) => {
  const groups = [[['a1', 'a2'], ['b1']], [['c1', 'c2', 'c3']], [['d1'], ['e1', 'e2']]];
  const seg = buildSegment(groups);
  const n = seg.bytes.length;
  const cases: {
    name: string;
    bytes: Uint8Array;
    goodBytes: number;
    records: number;
    tail: string;
    corrupt: boolean;
    header?: boolean;
  }[] = [
    { name: 'clean', bytes: seg.bytes, goodBytes: n, records: 9, tail: 'clean', corrupt: false },
    {
      name: 'torn payload of the last frame',
      bytes: seg.bytes.subarray(0, n - 1),
      goodBytes: seg.appendEnds[3]!,
      records: 7,
      tail: 'torn',
      corrupt: false,
    },
    {
      name: 'torn frame header',
      bytes: seg.bytes.subarray(0, seg.frames[8]! + 10),
      goodBytes: seg.appendEnds[3]!,
      records: 7,
      tail: 'torn',
      corrupt: false,
    },
    {
      name: 'partial batch at tail (frames whole, batch end missing)',
      bytes: seg.bytes.subarray(0, seg.frames[8]),
      goodBytes: seg.appendEnds[3]!,
      records: 7,
      tail: 'partial-batch',
      corrupt: false,
    },
    {
      name: 'zero-filled tail',
      bytes: Buffer.concat([seg.bytes, Buffer.alloc(4096)]),
      goodBytes: n,
      records: 9,
      tail: 'zeros',
      corrupt: false,
    },
    {
      name: 'zero-filled inside the last group',
      bytes: Buffer.concat([seg.bytes.subarray(0, seg.groupStarts[2]), Buffer.alloc(100)]),
      goodBytes: seg.appendEnds[2]!,
      records: 6,
      tail: 'zeros',
      corrupt: false,
    },
    {
      name: 'bad CRC mid-file (a later group follows)',
      bytes: flip(seg.bytes, seg.frames[3]! + 27),
      goodBytes: seg.appendEnds[1]!,
      records: 3,
      tail: 'bad-frame',
      corrupt: true,
    },
    {
      name: 'bad CRC in the last group (torn write, out of order)',
      bytes: flip(seg.bytes, seg.frames[6]! + 27),
      goodBytes: seg.appendEnds[2]!,
      records: 6,
      tail: 'bad-frame',
      corrupt: false,
    },
    {
      name: 'corrupt length field mid-file',
      bytes: setU32(seg.bytes, seg.frames[1]!, 0x7fffffff),
      goodBytes: seg.headerBytes,
      records: 0,
      tail: 'bad-frame',
      corrupt: true,
    },
    {
      name: 'corrupt length field in the last frame',
      bytes: setU32(seg.bytes, seg.frames[8]!, 1),
      goodBytes: seg.appendEnds[3]!,
      records: 7,
      tail: 'bad-frame',
      corrupt: false,
    },
    {
      name: 'truncated segment header',
      bytes: seg.bytes.subarray(0, seg.headerBytes - 5),
      goodBytes: 0,
      records: 0,
      tail: 'torn',
      corrupt: false,
      header: false,
    },
    {
      name: 'bad header CRC with frames after it',
      bytes: flip(seg.bytes, 20),
      goodBytes: 0,
      records: 0,
      tail: 'torn',
      corrupt: true,
      header: false,
    },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      const s = scanSegment(c.bytes);
      assert.equal(s.header !== undefined, c.header ?? true);
      assert.equal(s.goodBytes, c.goodBytes);
      assert.equal(s.records, c.records);
      assert.equal(s.tail, c.tail);
      assert.equal(s.corruptAt !== undefined, c.corrupt);
      if (c.records > 0) assert.equal(s.firstSeq, 1n);
    });
  }
});

function flip(b: Uint8Array, at: number): Buffer {
  const out = Buffer.from(b);
  out[at] = out[at]! ^ 0x40;
  return out;
}

function setU32(b: Uint8Array, at: number, v: number): Buffer {
  const out = Buffer.from(b);
  out.writeUInt32LE(v, at);
  return out;
}

// The CRC the WAL frames and headers carry must be CRC32C (Castagnoli), the
// one docs/wal-format.md names and other readers implement. Known answers
// from RFC 3720 B.4 (iSCSI) plus the usual check value.
void test('CRC32C known answers (RFC 3720 B.4, "123456789")', () => {
  const vectors: [string, Uint8Array, number][] = [
    ['32 bytes of zeros', new Uint8Array(32), 0x8a9136aa],
    ['32 bytes of 0xFF', new Uint8Array(32).fill(0xff), 0x62a8ab43],
    ['0..31 ascending', Uint8Array.from({ length: 32 }, (_, i) => i), 0x46dd794e],
    ['31..0 descending', Uint8Array.from({ length: 32 }, (_, i) => 31 - i), 0x113fdb5c],
    ['"123456789"', new TextEncoder().encode('123456789'), 0xe3069283],
  ];
  for (const [name, bytes, want] of vectors) assert.equal(crc32c(bytes) >>> 0, want, name);
  // And the frames carry exactly that function over bytes [8, end).
  const frame = encodeFrame({
    seq: 1n,
    ingestMicros: 2n,
    format: 1,
    flags: 3,
    payload: new TextEncoder().encode('123456789'),
  });
  assert.equal(frame.readUInt32LE(4), crc32c(frame.subarray(8)) >>> 0);
});
