// The operator's side of its contracts with the ingest node: the config it
// renders loads with the node's own loader, and Views compile with the node's
// own compiler (DuckDB, compile-only).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { CONFIG_FILE, DELIVERY_FILE, VIEWS_FILE, checkWithNodeLoader } from '../src/adapters/node-config.ts';
import { createNodeViewCompiler } from '../src/adapters/view-compiler.ts';
import { withViewDefaults } from '../src/api/view.ts';
import { buildConfigMap } from '../src/model/resources.ts';
import { loadConfig } from '../../ingest-node/src/config/load.ts';
import { endpoint } from './fixtures.ts';

const compiler = createNodeViewCompiler();
after(() => compiler.close());

void test('config.json loads with the node loader and carries the Endpoint settings', () => {
  const ep = endpoint('clicks', {
    s3: { bucket: 'acme-events' },
    apiKeySecretRef: { name: 'k' },
    segmentPolicy: { segmentBytesMax: 1048576, segmentAgeMsMax: 5000 },
    validation: 'json',
    limits: { bodyBytesMax: 2048 },
  });
  const { configMap } = buildConfigMap(ep, []);
  assert.deepEqual(Object.keys(configMap.data ?? {}).sort(), [CONFIG_FILE, DELIVERY_FILE, VIEWS_FILE].sort());
  const file = JSON.parse(configMap.data?.[CONFIG_FILE] ?? '') as Record<string, unknown>;
  const cfg = loadConfig({ values: file, hostname: 'clicks-ingest-1' });
  assert.equal(cfg.endpoint.name, 'clicks');
  assert.equal(cfg.instance.id, 'clicks-ingest-1', 'the pod name is the instance id');
  assert.equal(cfg.wal.segmentBytesMax, 1048576);
  assert.equal(cfg.wal.segmentAgeMsMax, 5000);
  assert.equal(cfg.wal.dir, '/var/lib/landfall/wal');
  assert.equal(cfg.limits.bodyBytesMax, 2048);
  assert.equal(cfg.validation, 'json');
  assert.equal(cfg.listen.host, '0.0.0.0');
  assert.equal(cfg.auth.apiKeysFile, '/etc/landfall/api-keys');
});

void test('a config the node would refuse fails the build instead of rolling pods onto it', () => {
  assert.throws(
    () => checkWithNodeLoader({ wal: { dir: '/x', segmentBytesMax: 1, segmentAgeMsMax: 1 } } as never),
    /segmentBytesMax/,
  );
});

const spec = (filter: string) =>
  withViewDefaults({
    endpointRef: { name: 'clicks' },
    columns: [
      { name: 'event', type: 'varchar', path: '$.event', required: true },
      { name: 'ts', type: 'TIMESTAMP', path: "$['ts']" },
    ],
    filter,
    partitioning: [{ expression: "date_trunc('day', ts)", alias: 'dt' }],
  });

void test('the node compiler accepts a good view and normalises it', async () => {
  const r = await compiler.compile('page_views', spec("event = 'page_view'"));
  assert.ok(r.ok, r.ok ? '' : r.error);
  assert.equal(r.view.name, 'page_views');
  assert.equal(r.view.spec.columns[0]?.type, 'VARCHAR', 'types canonical');
  assert.equal(r.view.spec.columns[1]?.path, '$.ts', 'paths canonical');
  assert.match(r.view.specHash, /^[0-9a-f]{64}$/);
  assert.match(r.view.sql ?? '', /SELECT/);
});

void test('forbidden expressions are refused with the exact reason', async () => {
  const cases: [string, RegExp][] = [
    ["event IN (SELECT 1 FROM read_csv('/etc/passwd'))", /^filter: /],
    ["getenv('HOME') = 'x'", /^filter: /],
    ['1; DROP TABLE x', /^filter: /],
    ['nope = 1', /^filter: /],
  ];
  for (const [filter, message] of cases) {
    const r = await compiler.compile('v', spec(filter));
    assert.equal(r.ok, false, filter);
    if (!r.ok) assert.match(r.error, message, r.error);
  }
});

void test('spec errors the CRD cannot see come back as compile errors', async () => {
  const r = await compiler.compile('v', {
    ...spec("event = 'x'"),
    partitioning: [{ expression: "date_trunc('day', ts)", alias: 'event' }],
  });
  assert.equal(r.ok, false);
  if (!r.ok) assert.match(r.error, /alias 'event' is also a column name/);
});
