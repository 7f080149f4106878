// The S3 layout of DESIGN §5, one test per line, plus what must be refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  artifactKey,
  commitKey,
  commitsPrefix,
  dlqKey,
  escapeHiveValue,
  unescapeHiveValue,
  formatSegmentId,
  KeyLayoutError,
  normalizePrefix,
  parseCommitKey,
  parseSegmentId,
  rawKey,
  segmentKey,
  utcDate,
  viewKey,
  type SegmentRef,
} from '../src/delivery/keys.ts';

const ref: SegmentRef = {
  endpoint: 'orders',
  instance: 'orders-0',
  epoch: '01JDX3M6B8Q4Z0V9N2K7C5T1RA',
  segmentId: 42n,
};
const id = '00000000000000000042';

void test('segments: {prefix}/segments/{endpoint}/{instance}/{epoch}/{segmentId}.wal.zst', () => {
  assert.equal(segmentKey('lf', ref), `lf/segments/orders/orders-0/01JDX3M6B8Q4Z0V9N2K7C5T1RA/${id}.wal.zst`);
});

void test('raw: {prefix}/raw/{endpoint}/dt=YYYY-MM-DD/{instance}-{epoch}-{segmentId}.parquet', () => {
  assert.equal(
    rawKey('lf', ref, '2025-11-26'),
    `lf/raw/orders/dt=2025-11-26/orders-0-01JDX3M6B8Q4Z0V9N2K7C5T1RA-${id}.parquet`,
  );
});

void test('views: {prefix}/views/{view}/{hive partitions}/{instance}-{epoch}-{segmentId}.parquet', () => {
  assert.equal(
    viewKey('lf', ref, 'page_views', [['dt', '2025-11-26']]),
    `lf/views/page_views/dt=2025-11-26/orders-0-01JDX3M6B8Q4Z0V9N2K7C5T1RA-${id}.parquet`,
  );
  assert.equal(
    viewKey('lf', ref, 'page_views', [
      ['dt', '2025-11-26'],
      ['country', 'DE'],
    ]),
    `lf/views/page_views/dt=2025-11-26/country=DE/orders-0-01JDX3M6B8Q4Z0V9N2K7C5T1RA-${id}.parquet`,
  );
  assert.equal(
    viewKey('lf', ref, 'v', []),
    `lf/views/v/orders-0-01JDX3M6B8Q4Z0V9N2K7C5T1RA-${id}.parquet`,
    'no partitioning: straight under the view',
  );
});

void test('dlq: {prefix}/dlq/{view}/dt=YYYY-MM-DD/{instance}-{epoch}-{segmentId}.parquet', () => {
  assert.equal(
    dlqKey('lf', ref, 'page_views', '2025-11-26'),
    `lf/dlq/page_views/dt=2025-11-26/orders-0-01JDX3M6B8Q4Z0V9N2K7C5T1RA-${id}.parquet`,
  );
});

void test('commits: {prefix}/commits/{endpoint}/{instance}/{epoch}/{segmentId}.json', () => {
  assert.equal(commitKey('lf', ref), `lf/commits/orders/orders-0/01JDX3M6B8Q4Z0V9N2K7C5T1RA/${id}.json`);
});

void test('artifactKey dispatches to the same functions', () => {
  assert.equal(artifactKey('lf', ref, { kind: 'segment' }), segmentKey('lf', ref));
  assert.equal(artifactKey('lf', ref, { kind: 'raw', dt: '2025-01-02' }), rawKey('lf', ref, '2025-01-02'));
  assert.equal(
    artifactKey('lf', ref, { kind: 'view', view: 'v', partitions: [['dt', 'x']] }),
    viewKey('lf', ref, 'v', [['dt', 'x']]),
  );
  assert.equal(
    artifactKey('lf', ref, { kind: 'dlq', view: 'v', dt: '2025-01-02' }),
    dlqKey('lf', ref, 'v', '2025-01-02'),
  );
});

void test('keys are pure: the same inputs give the same key, every time', () => {
  const again = { ...ref };
  assert.equal(commitKey('lf', ref), commitKey('lf', again));
  assert.equal(
    segmentKey('lf', ref),
    segmentKey('lf/', again),
    'a trailing slash on the prefix is the same prefix',
  );
});

void test('prefixes: empty means the bucket root; nested prefixes are allowed', () => {
  assert.equal(commitKey('', ref), `commits/orders/orders-0/01JDX3M6B8Q4Z0V9N2K7C5T1RA/${id}.json`);
  assert.equal(
    segmentKey('tenants/acme/landfall', ref).split('/').slice(0, 4).join('/'),
    'tenants/acme/landfall/segments',
  );
  assert.equal(normalizePrefix('a/b/'), 'a/b');
  for (const bad of ['/abs', 'a//b', 'a/../b', '..', '.', 'a/./b', 'a b', 'a\\b', '//']) {
    assert.throws(() => normalizePrefix(bad), KeyLayoutError, bad);
  }
});

void test('segment ids are 20-digit zero-padded u64, so key order is numeric order', () => {
  assert.equal(formatSegmentId(0n), '00000000000000000000');
  assert.equal(formatSegmentId((1n << 64n) - 1n), '18446744073709551615');
  assert.throws(() => formatSegmentId(-1n), KeyLayoutError);
  assert.throws(() => formatSegmentId(1n << 64n), KeyLayoutError);
  assert.equal(parseSegmentId('00000000000000000042'), 42n);
  assert.throws(() => parseSegmentId('42'), KeyLayoutError);
  assert.throws(() => parseSegmentId('99999999999999999999'), KeyLayoutError);

  const ids = [9n, 10n, 100n, 1n, 99_999n, 2n ** 40n];
  const keys = ids.map((segmentId) => commitKey('lf', { ...ref, segmentId }));
  const byKey = [...keys].sort();
  const byId = [...ids]
    .sort((a, b) => (a < b ? -1 : 1))
    .map((segmentId) => commitKey('lf', { ...ref, segmentId }));
  assert.deepEqual(byKey, byId);
});

void test('epochs (ULIDs) sort by creation time, so listing commits/ in key order is time order', () => {
  const older = { ...ref, epoch: '01JDX3M6B8Q4Z0V9N2K7C5T1RA', segmentId: 999n };
  const newer = { ...ref, epoch: '01JDY00000000000000000000A', segmentId: 1n };
  assert.ok(commitKey('lf', older) < commitKey('lf', newer));
});

void test('names that would break the layout are refused', () => {
  const bad = ['', '.', '..', 'a/b', '../x', '-x', '.hidden', 'a=b', 'a b', 'ü', 'x'.repeat(129), 'a\\b'];
  for (const name of bad) {
    assert.throws(() => segmentKey('lf', { ...ref, endpoint: name }), KeyLayoutError, `endpoint ${name}`);
    assert.throws(() => commitKey('lf', { ...ref, instance: name }), KeyLayoutError, `instance ${name}`);
    assert.throws(() => viewKey('lf', ref, name, []), KeyLayoutError, `view ${name}`);
    assert.throws(() => dlqKey('lf', ref, name, '2025-01-01'), KeyLayoutError, `dlq view ${name}`);
    assert.throws(() => viewKey('lf', ref, 'v', [[name, 'x']]), KeyLayoutError, `partition name ${name}`);
  }
  // The epoch sits between dashes in Parquet names: letters and digits only.
  for (const epoch of ['', 'a-b', 'a/b', '..', 'a.b', 'x'.repeat(65)]) {
    assert.throws(() => rawKey('lf', { ...ref, epoch }, '2025-01-01'), KeyLayoutError, `epoch ${epoch}`);
  }
  for (const dt of ['2025-1-1', '2025-02-30', '20250101', '2025-01-01T00', '']) {
    assert.throws(() => rawKey('lf', ref, dt), KeyLayoutError, `dt ${dt}`);
  }
  // Kubernetes-style names with dots and dashes are fine.
  assert.doesNotThrow(() =>
    segmentKey('lf', { ...ref, endpoint: 'my.endpoint-1', instance: 'my-endpoint-1-0' }),
  );
  try {
    segmentKey('lf', { ...ref, endpoint: 'a/b' });
  } catch (err) {
    assert.equal((err as KeyLayoutError).code, 'INVALID_KEY_COMPONENT');
  }
});

void test('Hive partition values are escaped so user data cannot change the path', () => {
  assert.equal(escapeHiveValue('2025-11-26'), '2025-11-26');
  assert.equal(escapeHiveValue('a/b'), 'a%2Fb');
  assert.equal(escapeHiveValue('../..'), '..%2F..');
  assert.equal(escapeHiveValue('x=y%z'), 'x%3Dy%25z');
  assert.equal(escapeHiveValue('2025-11-26 10:00:00'), '2025-11-26%2010%3A00%3A00');
  assert.equal(escapeHiveValue('Zürich'), 'Z%C3%BCrich');
  // Injective: NULL, '' and the texts of the two reserved names are four folders.
  assert.equal(escapeHiveValue(null), '__HIVE_DEFAULT_PARTITION__');
  assert.equal(escapeHiveValue(''), '__LANDFALL_EMPTY__');
  assert.equal(escapeHiveValue('__HIVE_DEFAULT_PARTITION__'), '%5F_HIVE_DEFAULT_PARTITION__');
  assert.equal(escapeHiveValue('__LANDFALL_EMPTY__'), '%5F_LANDFALL_EMPTY__');
  assert.equal(escapeHiveValue('_x'), '_x');
  assert.equal(escapeHiveValue('__'), '%5F_');
  for (const v of [
    null,
    '',
    '__HIVE_DEFAULT_PARTITION__',
    '__LANDFALL_EMPTY__',
    '__',
    '%5F_',
    'a/b',
    'Zürich',
    '漢字',
  ])
    assert.equal(unescapeHiveValue(escapeHiveValue(v)), v);
  assert.throws(() => unescapeHiveValue('__other'), /not an escaped partition value/);
  assert.throws(() => unescapeHiveValue('a%2fb'), /not an escaped partition value/);
  const key = viewKey('lf', ref, 'v', [['city', '../../commits']]);
  assert.equal(key.split('/').length, 5, key);
  assert.ok(!key.split('/').includes('..'));
});

void test('utcDate gives the UTC calendar day of a µs timestamp', () => {
  assert.equal(utcDate(BigInt(Date.UTC(2025, 10, 26, 23, 59, 59, 999)) * 1000n + 999n), '2025-11-26');
  assert.equal(utcDate(BigInt(Date.UTC(2025, 10, 27)) * 1000n), '2025-11-27');
});

void test('commitsPrefix and parseCommitKey: what a consumer lists and how it reads a key back', () => {
  assert.equal(commitsPrefix('lf', 'orders'), 'lf/commits/orders/');
  assert.equal(commitsPrefix('lf', 'orders', 'orders-0'), 'lf/commits/orders/orders-0/');
  assert.equal(
    commitsPrefix('lf', 'orders', 'orders-0', ref.epoch),
    'lf/commits/orders/orders-0/01JDX3M6B8Q4Z0V9N2K7C5T1RA/',
  );
  assert.equal(commitsPrefix('', 'orders'), 'commits/orders/');
  assert.throws(() => commitsPrefix('lf', 'orders', undefined, ref.epoch), KeyLayoutError);

  assert.deepEqual(parseCommitKey('lf', commitKey('lf', ref)), ref);
  assert.deepEqual(parseCommitKey('', commitKey('', ref)), ref);
  for (const bad of [
    'lf/commits/orders/orders-0/E1/42.json',
    'lf/commits/orders/orders-0/00000000000000000042.json',
    'other/commits/orders/orders-0/E1/00000000000000000042.json',
    'lf/segments/orders/orders-0/E1/00000000000000000042.wal.zst',
    'lf/commits/orders/orders-0/E-1/00000000000000000042.json',
  ]) {
    assert.throws(() => parseCommitKey('lf', bad), KeyLayoutError, bad);
  }
});
