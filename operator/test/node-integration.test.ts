// The operator's side of its contracts with the ingest node: the config it
// renders loads with the node's own loader, and Views compile with the node's
// own compiler (DuckDB, compile-only).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import yaml from 'js-yaml';
import {
  CONFIG_FILE,
  checkWithNodeLoader,
  quantityValue,
  walWatermarks,
} from '../src/adapters/node-config.ts';
import { createNodeViewCompiler } from '../src/adapters/view-compiler.ts';
import { withViewDefaults } from '../src/api/view.ts';
import { buildConfigMap } from '../src/model/resources.ts';
import { loadConfig } from '../../ingest-node/src/config/load.ts';
import { credentialsFromBlock } from '../../ingest-node/src/delivery/config.ts';
import { storeConfigFor } from '../../ingest-node/src/delivery/config.ts';
import { validateView } from '../../ingest-node/src/views/spec.ts';
import { endpoint } from './fixtures.ts';

const MiB = 1024 * 1024;
const loadRendered = (ep: ReturnType<typeof endpoint>, pod = 'clicks-ingest-1') => {
  const { configMap } = buildConfigMap(ep, []);
  assert.deepEqual(Object.keys(configMap.data ?? {}), [CONFIG_FILE], 'one config file');
  const file = JSON.parse(configMap.data?.[CONFIG_FILE] ?? '') as Record<string, unknown>;
  // As the pod runs it: the file, plus LANDFALL_INSTANCE_ID from the downward API.
  return loadConfig({ values: file, env: { LANDFALL_INSTANCE_ID: pod }, hostname: 'ignored' });
};

const compiler = createNodeViewCompiler();
after(() => compiler.close());

void test('config.json loads with the node loader and carries every Endpoint setting', () => {
  const ep = endpoint('clicks', {
    s3: {
      bucket: 'acme-events',
      region: 'eu-central-1',
      prefix: 'landfall/prod',
      endpointUrl: 'http://minio.storage:9000',
      forcePathStyle: true,
    },
    apiKeySecretRef: { name: 'k' },
    segmentPolicy: { segmentBytesMax: 1048576, segmentAgeMsMax: 5000 },
    outputs: { segments: true, rawParquet: true },
    validation: 'json',
    limits: { bodyBytesMax: 2048 },
  });
  const cfg = loadRendered(ep);
  assert.equal(cfg.endpoint.name, 'clicks');
  assert.equal(cfg.instance.id, 'clicks-ingest-1', 'the pod name is the instance id');
  assert.equal(cfg.wal.segmentBytesMax, 1048576);
  assert.equal(cfg.wal.segmentAgeMsMax, 5000);
  assert.equal(cfg.wal.dir, '/var/lib/landfall/wal');
  assert.equal(cfg.limits.bodyBytesMax, 2048);
  assert.equal(cfg.limits.decodedBytesMax, 32 * MiB, "the node's default stays when above the body limit");
  assert.equal(cfg.validation, 'json');
  assert.equal(cfg.listen.host, '0.0.0.0');
  assert.deepEqual(cfg.auth, {
    required: true,
    apiKeysFile: '/etc/landfall/api-keys',
    reloadIntervalMs: 5000,
  });
  assert.deepEqual(cfg.outputs, { segments: true, rawParquet: true });
  assert.deepEqual(cfg.credentials, { mode: 'default' });
  assert.deepEqual(cfg.mqtt.brokers, [], 'no MQTT source');
  // The node's own mapping of the s3 block to its store.
  assert.deepEqual(storeConfigFor(cfg.s3, credentialsFromBlock(cfg.credentials)), {
    store: {
      kind: 's3',
      bucket: 'acme-events',
      region: 'eu-central-1',
      endpoint: 'http://minio.storage:9000',
      forcePathStyle: true,
      credentials: { mode: 'default' },
    },
    prefix: 'landfall/prod',
  });
  assert.equal(cfg.views.dir, '/etc/landfall/views');
});

void test('a body limit above 32 MiB raises the decoded limit with it', () => {
  const ep = endpoint('big', {
    s3: { bucket: 'bbb' },
    apiKeySecretRef: { name: 'k' },
    limits: { bodyBytesMax: 100 * MiB },
  });
  const cfg = loadRendered(ep);
  assert.equal(cfg.limits.bodyBytesMax, 100 * MiB);
  assert.equal(cfg.limits.decodedBytesMax, 100 * MiB);
});

void test('credentials: IRSA is web identity, AssumeRole keeps its ExternalId, static keys stay out of the file', () => {
  const role = 'arn:aws:iam::123456789012:role/landfall-writer';
  const irsa = loadRendered(
    endpoint('a', {
      s3: { bucket: 'bbb' },
      apiKeySecretRef: { name: 'k' },
      credentials: { irsaRoleArn: role },
    }),
  );
  assert.deepEqual(irsa.credentials, { mode: 'webIdentity', roleArn: role });
  assert.deepEqual(credentialsFromBlock(irsa.credentials), {
    mode: 'webIdentity',
    roleArn: role,
    tokenFile: undefined,
    sessionName: undefined,
    stsRegion: undefined,
    stsEndpoint: undefined,
  });
  const assume = loadRendered(
    endpoint('b', {
      s3: { bucket: 'bbb' },
      apiKeySecretRef: { name: 'k' },
      credentials: { assumeRole: { roleArn: role, externalId: 'landfall-7f3a', sessionName: 'fixed' } },
    }),
  );
  assert.deepEqual(assume.credentials, {
    mode: 'assumeRole',
    roleArn: role,
    externalId: 'landfall-7f3a',
    sessionName: 'fixed',
  });
  const ep = endpoint('c', {
    s3: { bucket: 'bbb' },
    apiKeySecretRef: { name: 'k' },
    credentials: { secretRef: { name: 'minio-creds' } },
  });
  const { configMap } = buildConfigMap(ep, []);
  assert.doesNotMatch(JSON.stringify(configMap), /minio-creds|accessKeyId|secretAccessKey/);
  assert.deepEqual(loadRendered(ep).credentials, { mode: 'default' }, 'the default chain reads AWS_* env');
});

void test('mqtt: brokers and topics map to the node block, Secrets become files under /etc/landfall/mqtt', () => {
  const cfg = loadRendered(
    endpoint('edge', {
      s3: { bucket: 'bbb' },
      apiKeySecretRef: { name: 'k' },
      mqtt: {
        brokers: [
          {
            url: 'mqtts://broker.iot:8883',
            username: 'landfall',
            passwordSecretRef: { name: 'mqtt', key: 'password' },
            caSecretRef: { name: 'mqtt-ca' },
            clientCertSecretRef: { name: 'mqtt-client' },
          },
          { url: 'mqtt://plain.iot:1883', name: 'plain', topics: [{ filter: 'only/#', qos: 0 }] },
        ],
        topics: [{ filter: 'sensors/#' }],
      },
    }),
    'edge-ingest-0',
  );
  assert.deepEqual(cfg.mqtt.brokers, [
    {
      url: 'mqtts://broker.iot:8883',
      username: 'landfall',
      passwordFile: '/etc/landfall/mqtt/broker-0/password',
      caFile: '/etc/landfall/mqtt/broker-0/ca.crt',
      certFile: '/etc/landfall/mqtt/broker-0/tls.crt',
      keyFile: '/etc/landfall/mqtt/broker-0/tls.key',
    },
    { url: 'mqtt://plain.iot:1883', name: 'plain', topics: [{ filter: 'only/#', qos: 0 }] },
  ]);
  assert.deepEqual(cfg.mqtt.topics, [{ filter: 'sensors/#', qos: 1 }]);
  assert.equal(cfg.mqtt.protocolVersion, 5);
});

void test("the node's MQTT checks run at render time (a broker it would refuse fails the reconcile)", () => {
  const ep = endpoint('edge', {
    s3: { bucket: 'bbb' },
    apiKeySecretRef: { name: 'k' },
    mqtt: {
      brokers: [{ url: 'mqtt://same:1883' }, { url: 'mqtt://same:1883' }],
      topics: [{ filter: 'a/#' }],
    },
  });
  assert.throws(() => buildConfigMap(ep, []), /client id .* like mqtt\.brokers\[0\]/);
});

void test('views: one YAML file per compiled View, in the views ConfigMap; the node reads each back', () => {
  const spec = {
    name: 'page_views',
    source: 'payload' as const,
    columns: [{ name: 'event', type: 'VARCHAR', path: '$.event', required: true }],
    filter: "event = 'page_view'",
  };
  const { viewsConfigMap } = buildConfigMap(
    endpoint('clicks', { s3: { bucket: 'bbb' }, apiKeySecretRef: { name: 'k' } }),
    [{ name: 'page_views', spec: spec, specHash: 'abc' }],
  );
  assert.deepEqual(Object.keys(viewsConfigMap.data ?? {}), ['page_views.yaml']);
  const back = validateView(yaml.load(viewsConfigMap.data?.['page_views.yaml'] ?? ''));
  assert.equal(back.name, 'page_views');
  assert.equal(back.filter, "event = 'page_view'");
});

void test('a config the node would refuse fails the build instead of rolling pods onto it', () => {
  assert.throws(
    () => checkWithNodeLoader({ wal: { dir: '/x', segmentBytesMax: 1, segmentAgeMsMax: 1 } }),
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

void test('DuckDB gets a quarter of the container memory limit (the node default without a limit)', () => {
  const withLimit = (memory?: string) =>
    loadRendered(
      endpoint('m', {
        s3: { bucket: 'bbb' },
        apiKeySecretRef: { name: 'k' },
        resources: memory === undefined ? { requests: { cpu: '1' } } : { limits: { memory } },
      }),
    ).views.memoryLimitBytes;
  assert.equal(withLimit('1Gi'), 256 * MiB, 'the CRD default limit');
  assert.equal(withLimit('8Gi'), 2048 * MiB);
  assert.equal(withLimit('200Mi'), 64 * MiB, 'never below 64 MiB');
  assert.equal(withLimit(undefined), 512 * MiB, "no limit: the node's default");
  assert.equal(quantityValue('1.5Gi'), 1.5 * 1024 * MiB);
  assert.equal(quantityValue('2G'), 2e9);
  assert.equal(quantityValue('500m'), 0.5);
  assert.equal(quantityValue('1e3'), 1000);
  assert.equal(quantityValue('x'), undefined);
});

void test('the WAL watermarks are 70 % / 55 % of storage.size, so the WAL backlog fires before the disk fills', () => {
  const GiB = 1024 * MiB;
  const rendered = (size?: string | number) =>
    loadRendered(
      endpoint('w', {
        s3: { bucket: 'bbb' },
        apiKeySecretRef: { name: 'k' },
        ...(size === undefined ? {} : { storage: { size } }),
      }),
    ).backpressure;
  const d = rendered();
  assert.equal(d.walBytesHigh, 7 * GiB, 'the CRD default volume (10Gi)');
  assert.equal(d.walBytesLow, 5632 * MiB);
  assert.ok(d.walBytesHigh < 10 * GiB - d.diskFreeBytesLow, 'below the free-space watermark');
  assert.equal(d.diskFreeBytesLow, 512 * MiB, "the free-space watermarks stay the node's");
  const small = rendered('2Gi');
  assert.deepEqual([small.walBytesHigh, small.walBytesLow], [1433 * MiB, 1126 * MiB]);
  const big = rendered('200Gi');
  assert.deepEqual([big.walBytesHigh, big.walBytesLow], [140 * GiB, 110 * GiB]);
  // Decimal suffixes and plain bytes, rounded down to whole MiB.
  assert.deepEqual(walWatermarks(endpoint('w', { storage: { size: '500M' } }).spec), {
    walBytesHigh: 333 * MiB,
    walBytesLow: 262 * MiB,
    diskFreeBytesLow: 23 * MiB,
    diskFreeBytesHigh: 47 * MiB,
  });
  assert.deepEqual(
    [small.diskFreeBytesLow, small.diskFreeBytesHigh],
    [102 * MiB, 204 * MiB],
    'a 2Gi volume can get back to its free-space high watermark',
  );
  assert.deepEqual([big.diskFreeBytesLow, big.diskFreeBytesHigh], [512 * MiB, 1024 * MiB]);
  assert.equal(walWatermarks(endpoint('w', { storage: { size: 10 * GiB } }).spec)?.walBytesHigh, 7 * GiB);
  assert.equal(walWatermarks(endpoint('w', { storage: { size: 'lots' } }).spec), undefined);
});
