// Commit marker v1: round trip, validation, the published JSON Schema (drift
// and independent validation with Ajv), and the write-once protocol against
// both stores (the S3 one on a real MinIO, where the 412 comes from).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Ajv } from 'ajv';
import { startMinio, type MinioServer } from '../../test/harness/index.ts';
import { commitKey, segmentKey, rawKey, viewKey, dlqKey } from '../src/delivery/keys.ts';
import {
  commitMarkerJsonSchema,
  decodeCommitMarker,
  encodeCommitMarker,
  formatMicrosIso,
  MarkerError,
  parseMicrosIso,
  readCommitMarker,
  writeCommitMarker,
  writerName,
  type CommitMarker,
} from '../src/delivery/marker.ts';
import { markerSchemaPath } from '../src/delivery/write-marker-schema.ts';
import { sha256Hex } from '../src/store/hashing.ts';
import { LocalFolderObjectStore } from '../src/store/local.ts';
import { createS3Client, S3ObjectStore } from '../src/store/s3.ts';
import type { ObjectStore } from '../src/store/types.ts';

const ref = { endpoint: 'orders', instance: 'orders-0', epoch: '01JDX3M6B8Q4Z0V9N2K7C5T1RA', segmentId: 42n };
const h = (s: string): string => sha256Hex(Buffer.from(s));

function sampleMarker(over: Partial<CommitMarker> = {}): CommitMarker {
  return {
    ...ref,
    records: 1234,
    firstSeq: 1000n,
    lastSeq: 2233n,
    firstIngestMicros: 1_764_136_020_123_456n,
    lastIngestMicros: 1_764_136_079_999_999n,
    segment: { bytes: 524_288, sha256: h('segment bytes') },
    artifacts: [
      { kind: 'segment', key: segmentKey('lf', ref), bytes: 81_234, rows: 1234, sha256: h('zst') },
      { kind: 'raw', key: rawKey('lf', ref, '2025-11-26'), bytes: 40_000, rows: 1234, sha256: h('raw') },
      {
        kind: 'view',
        view: 'page_views',
        key: viewKey('lf', ref, 'page_views', [['dt', '2025-11-26']]),
        bytes: 9_000,
        rows: 1200,
        sha256: h('view'),
      },
      {
        kind: 'dlq',
        view: 'page_views',
        key: dlqKey('lf', ref, 'page_views', '2025-11-26'),
        bytes: 3_000,
        rows: 34,
        sha256: h('dlq'),
      },
    ],
    views: [{ name: 'page_views', specSha256: h('spec') }],
    createdAtMs: Date.UTC(2025, 10, 26, 5, 48, 1, 512),
    writer: writerName,
    ...over,
  };
}

function markerCode(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof MarkerError, String(err));
    return err.code;
  }
  return 'ok';
}

async function markerCodeAsync(p: Promise<unknown>): Promise<MarkerError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof MarkerError, String(err));
    return err;
  }
  assert.fail('expected a MarkerError');
}

void describe('commit marker format', () => {
  void test('encode → decode is the identity, and the JSON is the documented shape', () => {
    const m = sampleMarker();
    const bytes = encodeCommitMarker(m);
    assert.deepEqual(decodeCommitMarker(bytes), m);
    const json = JSON.parse(bytes.toString()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(json), [
      'format',
      'version',
      'endpoint',
      'instance',
      'epoch',
      'segmentId',
      'records',
      'firstSeq',
      'lastSeq',
      'firstIngestTime',
      'lastIngestTime',
      'segment',
      'artifacts',
      'views',
      'createdAt',
      'writer',
    ]);
    assert.equal(json['format'], 'landfall.commit-marker');
    assert.equal(json['version'], 1);
    assert.equal(json['segmentId'], '00000000000000000042');
    assert.equal(json['firstSeq'], '1000');
    assert.equal(json['firstIngestTime'], '2025-11-26T05:47:00.123456Z');
    assert.equal(json['createdAt'], '2025-11-26T05:48:01.512Z');
    assert.ok(bytes.toString().endsWith('}\n'));
    assert.equal(encodeCommitMarker(m).toString(), bytes.toString(), 'encoding is deterministic');
  });

  void test('seqs keep full u64 precision as strings', () => {
    const m = sampleMarker({ firstSeq: (1n << 64n) - 2n, lastSeq: (1n << 64n) - 1n, records: 2 });
    const back = decodeCommitMarker(encodeCommitMarker(m));
    assert.equal(back.lastSeq, 18_446_744_073_709_551_615n);
    assert.match(encodeCommitMarker(m).toString(), /"lastSeq": "18446744073709551615"/);
  });

  void test('µs timestamps round-trip exactly', () => {
    for (const us of [0n, 1n, 999_999n, 1_764_136_020_123_456n, 253_402_300_799_999_999n]) {
      assert.equal(parseMicrosIso(formatMicrosIso(us)), us);
    }
    assert.equal(formatMicrosIso(1_000_000n), '1970-01-01T00:00:01.000000Z');
  });

  void test('invalid markers are refused at encode time with INVALID_COMMIT_MARKER', () => {
    const a0 = sampleMarker().artifacts[0]!;
    const bad: [string, Partial<CommitMarker>][] = [
      ['bad sha256', { segment: { bytes: 1, sha256: 'ABC' } }],
      ['lastSeq < firstSeq', { firstSeq: 10n, lastSeq: 9n }],
      ['more records than the seq span', { firstSeq: 1n, lastSeq: 2n, records: 3 }],
      ['zero records', { records: 0 }],
      ['no artifacts', { artifacts: [] }],
      ['duplicate artifact key', { artifacts: [a0, a0] }],
      ['view on a segment artifact', { artifacts: [{ ...a0, view: 'v' }] }],
      ['view artifact without view', { artifacts: [{ ...a0, kind: 'view' }] }],
      ['two segment artifacts', { artifacts: [a0, { ...a0, key: 'other' }] }],
      ['negative bytes', { artifacts: [{ ...a0, bytes: -1 }] }],
      ['fractional rows', { artifacts: [{ ...a0, rows: 1.5 }] }],
      ['bad endpoint', { endpoint: 'a/b' }],
      ['bad epoch', { epoch: 'a-b' }],
      ['segment id too big', { segmentId: 1n << 64n }],
      ['seq over u64', { firstSeq: 1n, lastSeq: 1n << 64n }],
      ['time before 1970', { firstIngestMicros: -1n }],
      ['duplicate view', { views: [sampleMarker().views[0]!, sampleMarker().views[0]!] }],
    ];
    for (const [why, over] of bad)
      assert.equal(
        markerCode(() => encodeCommitMarker(sampleMarker(over))),
        'INVALID_COMMIT_MARKER',
        why,
      );
  });

  void test('decode refuses non-markers and other versions, and ignores unknown fields', () => {
    const good = JSON.parse(encodeCommitMarker(sampleMarker()).toString()) as Record<string, unknown>;
    assert.equal(
      markerCode(() => decodeCommitMarker('not json')),
      'INVALID_COMMIT_MARKER',
    );
    assert.equal(
      markerCode(() => decodeCommitMarker('[]')),
      'INVALID_COMMIT_MARKER',
    );
    assert.equal(
      markerCode(() => decodeCommitMarker(JSON.stringify({ ...good, format: 'x' }))),
      'INVALID_COMMIT_MARKER',
    );
    assert.equal(
      markerCode(() => decodeCommitMarker(JSON.stringify({ ...good, version: 2 }))),
      'UNSUPPORTED_COMMIT_MARKER',
    );
    assert.equal(
      markerCode(() => decodeCommitMarker(JSON.stringify({ ...good, firstSeq: 1000 }))),
      'INVALID_COMMIT_MARKER',
    );
    assert.equal(
      markerCode(() => decodeCommitMarker(JSON.stringify({ ...good, records: undefined }))),
      'INVALID_COMMIT_MARKER',
    );
    const extended = { ...good, futureField: { anything: true } };
    assert.deepEqual(decodeCommitMarker(JSON.stringify(extended)), sampleMarker());
  });
});

void describe('published JSON Schema (docs/schemas/commit-marker.v1.json)', () => {
  void test('is exactly what the TypeBox schema generates (regenerate: node ingest-node/src/delivery/write-marker-schema.ts)', async () => {
    const published = JSON.parse(await readFile(markerSchemaPath, 'utf8')) as unknown;
    assert.deepEqual(published, commitMarkerJsonSchema());
  });

  void test('an independent validator (Ajv, strict) accepts encoded markers and rejects broken ones', async () => {
    const schema = JSON.parse(await readFile(markerSchemaPath, 'utf8')) as Record<string, unknown>;
    const ajv = new Ajv({ strict: true, allErrors: true });
    const validate = ajv.compile(schema);
    for (const m of [
      sampleMarker(),
      sampleMarker({ views: [], artifacts: [sampleMarker().artifacts[0]!] }),
      sampleMarker({ firstSeq: 0n, lastSeq: (1n << 64n) - 1n, records: 5 }),
    ]) {
      const doc = JSON.parse(encodeCommitMarker(m).toString()) as unknown;
      assert.equal(validate(doc), true, JSON.stringify(validate.errors));
    }
    const good = JSON.parse(encodeCommitMarker(sampleMarker()).toString()) as Record<string, unknown>;
    for (const broken of [
      { ...good, version: 2 },
      { ...good, firstSeq: 1000 },
      { ...good, segmentId: '42' },
      { ...good, artifacts: [] },
      { ...good, artifacts: [{ kind: 'view', key: 'k', bytes: 1, rows: 1, sha256: h('x') }] },
      { ...good, firstIngestTime: '2025-11-26T05:47:00Z' },
      { ...good, segment: { bytes: 1 } },
    ]) {
      assert.equal(validate(broken), false, JSON.stringify(broken).slice(0, 200));
      assert.notEqual(
        markerCode(() => decodeCommitMarker(JSON.stringify(broken))),
        'ok',
        'decode agrees',
      );
    }
  });
});

function writeProtocol(
  name: string,
  setup: () => Promise<{ store: ObjectStore; teardown: () => Promise<void> }>,
): void {
  void describe(`writeCommitMarker on ${name}`, () => {
    let store: ObjectStore;
    let teardown: () => Promise<void>;
    before(async () => {
      ({ store, teardown } = await setup());
    });
    after(async () => {
      await teardown?.();
    });

    void test('first write creates the marker at its deterministic key', async () => {
      const m = sampleMarker();
      assert.deepEqual(await writeCommitMarker(store, 'lf', m), { key: commitKey('lf', ref), created: true });
      assert.deepEqual(await readCommitMarker(store, 'lf', ref), m);
      assert.equal(await readCommitMarker(store, 'lf', { ...ref, segmentId: 43n }), null);
      const info = await store.head(commitKey('lf', ref));
      assert.equal(info?.sha256, sha256Hex(encodeCommitMarker(m)));
    });

    void test('a retry with the same delivery (new createdAt and writer) is success, not an error', async () => {
      const again = sampleMarker({
        createdAtMs: Date.UTC(2025, 10, 27),
        writer: 'landfall-ingest-node/9.9.9',
      });
      // Artifact order is not part of the identity.
      const reordered = { ...again, artifacts: [...again.artifacts].reverse() };
      assert.deepEqual(await writeCommitMarker(store, 'lf', reordered), {
        key: commitKey('lf', ref),
        created: false,
      });
      // The stored marker is untouched.
      assert.equal((await readCommitMarker(store, 'lf', ref))?.createdAtMs, sampleMarker().createdAtMs);
    });

    void test('a different delivery for the same segment is a loud COMMIT_MARKER_CONFLICT', async () => {
      const arts = sampleMarker().artifacts.map((a) =>
        a.kind === 'raw' ? { ...a, sha256: h('other raw') } : a,
      );
      const err = await markerCodeAsync(writeCommitMarker(store, 'lf', sampleMarker({ artifacts: arts })));
      assert.equal(err.code, 'COMMIT_MARKER_CONFLICT');
      assert.equal(err.retryable, false);
      assert.equal(err.key, commitKey('lf', ref));
      assert.equal(err.differences.length, 1);
      assert.match(
        err.differences[0]!,
        /^artifact lf\/raw\/orders\/dt=2025-11-26\/.*: raw::40000:1234:[0-9a-f]{64} → raw::40000:1234:[0-9a-f]{64}$/,
      );

      const moreRecords = await markerCodeAsync(
        writeCommitMarker(
          store,
          'lf',
          sampleMarker({ records: 1233, segment: { bytes: 1, sha256: h('x') } }),
        ),
      );
      assert.equal(moreRecords.code, 'COMMIT_MARKER_CONFLICT');
      assert.deepEqual(
        moreRecords.differences.map((d) => d.split(':')[0]),
        ['records', 'segment.bytes', 'segment.sha256'],
      );

      const extraView = await markerCodeAsync(
        writeCommitMarker(
          store,
          'lf',
          sampleMarker({ views: [...sampleMarker().views, { name: 'v2', specSha256: h('2') }] }),
        ),
      );
      assert.deepEqual(extraView.differences, [`view v2: (absent) → ${h('2')}`]);
    });

    void test('an unreadable object at the marker key is a conflict too', async () => {
      const other = { ...ref, segmentId: 7n };
      await store.put(commitKey('lf', other), Buffer.from('garbage'));
      const err = await markerCodeAsync(writeCommitMarker(store, 'lf', sampleMarker({ segmentId: 7n })));
      assert.equal(err.code, 'COMMIT_MARKER_CONFLICT');
      assert.match(err.message, /unreadable/);
    });
  });
}

writeProtocol('LocalFolderObjectStore', async () => {
  const root = await mkdtemp(path.join(tmpdir(), 'landfall-marker-'));
  return {
    store: new LocalFolderObjectStore({ root }),
    teardown: () => rm(root, { recursive: true, force: true }),
  };
});

let minio: MinioServer | undefined;
writeProtocol('S3ObjectStore (MinIO, If-None-Match: *)', async () => {
  minio = await startMinio();
  const client = createS3Client({
    region: minio.region,
    endpoint: minio.endpoint,
    credentials: { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
  });
  return {
    store: new S3ObjectStore({ client, bucket: minio.bucket }),
    teardown: async () => {
      client.destroy();
      await minio?.stop();
    },
  };
});
