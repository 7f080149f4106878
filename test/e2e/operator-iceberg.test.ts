// The Iceberg fields of the API on a real kube-apiserver (+ etcd and
// kube-controller-manager, no kubelet) with the operator in-process: the
// catalog on the Endpoint (spec.iceberg) and the table on the View
// (spec.iceberg) reach the node config, the views ConfigMap and the
// StatefulSet; the catalog's credentials only as Secret projections the
// kubelet mounts (the operator reads no Secret); bad values are refused by
// the CRD's schema and CEL rules.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import yaml from 'js-yaml';
import type { V1ConfigMap, V1StatefulSet } from '@kubernetes/client-node';
import { repoRoot, startKubernetes, waitFor } from '../harness/index.ts';
import type { KubernetesTestbed } from '../harness/index.ts';
import { Operator } from '../../operator/src/operator.ts';
import { KubeApiError, KubeClient, Resources } from '../../operator/src/runtime/kube.ts';
import type { KubeObject } from '../../operator/src/runtime/kube.ts';
import { jsonLogger } from '../../operator/src/runtime/log.ts';
import { OperatorMetrics } from '../../operator/src/runtime/metrics.ts';
import { loadConfig } from '../../ingest-node/src/config/load.ts';
import { parseViewYaml } from '../../ingest-node/src/views/spec.ts';

let kube: KubernetesTestbed;
let client: KubeClient;
let ns: string;
let operator: Operator | undefined;

type Cond = { type: string; status: string; reason: string; message: string };
const condition = (obj: { status?: { conditions?: Cond[] } } | undefined, type: string): Cond | undefined =>
  obj?.status?.conditions?.find((c) => c.type === type);

const endpointBody = (name: string, iceberg: unknown): KubeObject =>
  ({
    metadata: { name, namespace: ns },
    spec: { s3: { bucket: 'lake' }, apiKeySecretRef: { name: `${name}-keys` }, iceberg },
  }) as KubeObject;

async function expectRejected(
  rt: (typeof Resources)[keyof typeof Resources],
  body: KubeObject,
  message: RegExp,
): Promise<string> {
  try {
    await client.create(rt, body);
  } catch (err) {
    assert.ok(err instanceof KubeApiError, String(err));
    assert.equal(err.code, 422, err.message);
    assert.match(err.message, message);
    return err.message;
  }
  assert.fail(`expected the apiserver to reject ${JSON.stringify(body)}`);
}

before(async () => {
  kube = await startKubernetes();
  client = new KubeClient(kube.kubeConfig);
  for (const file of ['endpoints.landfall.dev.yaml', 'views.landfall.dev.yaml']) {
    const crd = yaml.load(await readFile(join(repoRoot, 'crds', file), 'utf8')) as KubeObject;
    await client.create(Resources.crd, crd);
  }
  await waitFor(
    async () => {
      for (const name of ['endpoints.landfall.dev', 'views.landfall.dev']) {
        const crd = await client.get<KubeObject & { status?: { conditions?: Cond[] } }>(
          Resources.crd,
          undefined,
          name,
        );
        if (condition(crd, 'Established')?.status !== 'True') return false;
      }
      return true;
    },
    { what: 'CRDs Established', timeoutMs: 20_000 },
  );
  ns = await kube.newNamespace('ice');
  operator = new Operator({
    kubeConfig: kube.kubeConfig,
    nodeImage: 'ghcr.io/landfall/ingest-node:e2e',
    log: jsonLogger('error'),
    metrics: new OperatorMetrics(),
    resyncPeriodMs: 60_000,
    drainPollMs: 500,
    notReadyPollMs: 5_000,
  });
  await operator.start();
});

after(async () => {
  await operator?.stop();
  await kube?.stop();
});

void test('an Endpoint with a catalog (OAuth2 from a Secret) and a View with a table: node config, views ConfigMap, projected Secret', async () => {
  await client.apply(
    Resources.endpoint,
    endpointBody('orders', {
      catalogUri: 'https://polaris.data.svc:8181/api/catalog',
      warehouse: 'analytics',
      auth: {
        type: 'oauth2',
        clientIdSecretRef: { name: 'polaris-client' },
        clientSecretSecretRef: { name: 'polaris-client' },
        scope: 'PRINCIPAL_ROLE:ALL',
      },
    }),
    { force: false },
  );
  await client.apply(
    Resources.view,
    {
      metadata: { name: 'orders', namespace: ns },
      spec: {
        endpointRef: { name: 'orders' },
        columns: [
          { name: 'id', type: 'BIGINT', path: '$.id', required: true },
          { name: 'sku', type: 'VARCHAR', path: '$.sku' },
        ],
        iceberg: { namespace: 'shop' },
      },
    } as KubeObject,
    { force: false },
  );

  // The apiserver's defaulting: the Secret keys the CRD names.
  const ep = await client.get<KubeObject & { spec: { iceberg: { auth: Record<string, unknown> } } }>(
    Resources.endpoint,
    ns,
    'orders',
  );
  assert.deepEqual(ep?.spec.iceberg.auth['clientIdSecretRef'], { name: 'polaris-client', key: 'clientId' });
  assert.deepEqual(ep?.spec.iceberg.auth['clientSecretSecretRef'], {
    name: 'polaris-client',
    key: 'clientSecret',
  });

  const cm = await waitFor(
    () => client.get<V1ConfigMap & KubeObject>(Resources.configMap, ns, 'orders-ingest'),
    {
      what: 'ConfigMap orders-ingest',
      timeoutMs: 15_000,
    },
  );
  const configText = cm.data?.['config.json'] ?? '';
  assert.doesNotMatch(configText, /polaris-client/, 'no Secret in the ConfigMap, only file paths');
  // The node's own loader takes the rendered config as is.
  const config = loadConfig({
    values: JSON.parse(configText) as Record<string, unknown>,
    hostname: 'orders-ingest-0',
  });
  assert.deepEqual(
    { ...config.iceberg, auth: { ...config.iceberg.auth } },
    {
      catalogUri: 'https://polaris.data.svc:8181/api/catalog',
      warehouse: 'analytics',
      requestTimeoutMs: 30_000,
      conflictRetriesMax: 20,
      // Compaction stays off (the schedule is the node's default; the operator sets none).
      compaction: { intervalMs: 0, targetFileBytes: 134_217_728, minFiles: 10, binsMax: 100 },
      auth: {
        type: 'oauth2',
        clientIdFile: '/etc/landfall/iceberg/client-id',
        clientSecretFile: '/etc/landfall/iceberg/client-secret',
        scope: 'PRINCIPAL_ROLE:ALL',
        refreshMarginMs: 60_000,
        tokenRetriesMax: 4,
      },
    },
  );

  const viewsCm = await waitFor(
    async () => {
      const m = await client.get<V1ConfigMap & KubeObject>(Resources.configMap, ns, 'orders-ingest-views');
      return m?.data?.['orders.yaml'] !== undefined ? m : undefined;
    },
    { what: 'orders.yaml in the views ConfigMap', timeoutMs: 30_000 },
  );
  // The node's view loader reads the file the operator wrote: the table target is there.
  const view = parseViewYaml(viewsCm.data?.['orders.yaml'] ?? '');
  assert.deepEqual(view.iceberg, { namespace: 'shop', table: 'orders' });

  const sts = await waitFor(
    () => client.get<V1StatefulSet & KubeObject>(Resources.statefulSet, ns, 'orders-ingest'),
    {
      what: 'StatefulSet orders-ingest',
      timeoutMs: 15_000,
    },
  );
  const pod = sts.spec?.template.spec;
  assert.deepEqual(pod?.volumes?.find((v) => v.name === 'iceberg')?.projected, {
    defaultMode: 0o440,
    sources: [
      { secret: { name: 'polaris-client', items: [{ key: 'clientId', path: 'client-id' }] } },
      { secret: { name: 'polaris-client', items: [{ key: 'clientSecret', path: 'client-secret' }] } },
    ],
  });
  assert.deepEqual(
    pod?.containers[0]?.volumeMounts?.find((m) => m.name === 'iceberg'),
    { name: 'iceberg', mountPath: '/etc/landfall/iceberg', readOnly: true },
  );
  assert.ok(
    !JSON.stringify(pod?.containers[0]?.env ?? []).includes('polaris-client'),
    'no catalog credential in the environment',
  );
});

void test('the CRDs refuse bad catalog and table values', async () => {
  const msgs = [
    await expectRejected(
      Resources.endpoint,
      endpointBody('no-token', { catalogUri: 'http://c:8181', auth: { type: 'bearer' } }),
      /type bearer needs tokenSecretRef/,
    ),
    await expectRejected(
      Resources.endpoint,
      endpointBody('half-oauth', {
        catalogUri: 'http://c:8181',
        auth: { type: 'oauth2', clientIdSecretRef: { name: 'c' } },
      }),
      /type oauth2 needs clientIdSecretRef and clientSecretSecretRef/,
    ),
    await expectRejected(
      Resources.endpoint,
      endpointBody('stray-scope', { catalogUri: 'http://c:8181', auth: { scope: 'catalog' } }),
      /clientIdSecretRef, clientSecretSecretRef, tokenUri and scope are for type oauth2/,
    ),
    await expectRejected(
      Resources.endpoint,
      endpointBody('stray-token', {
        catalogUri: 'http://c:8181',
        auth: {
          type: 'oauth2',
          tokenSecretRef: { name: 't' },
          clientIdSecretRef: { name: 'c' },
          clientSecretSecretRef: { name: 'c' },
        },
      }),
      /tokenSecretRef is for type bearer/,
    ),
    await expectRejected(
      Resources.endpoint,
      endpointBody('sigv4-no-name', {
        catalogUri: 'https://glue.eu-west-1.amazonaws.com/iceberg',
        auth: { type: 'sigv4' },
      }),
      /type sigv4 needs signingName/,
    ),
    await expectRejected(
      Resources.endpoint,
      endpointBody('sigv4-no-region', {
        catalogUri: 'https://catalog.example/iceberg',
        auth: { type: 'sigv4', signingName: 'glue' },
      }),
      /type sigv4 needs auth.signingRegion unless catalogUri/,
    ),
    await expectRejected(
      Resources.endpoint,
      endpointBody('stray-signing', { catalogUri: 'http://c:8181', auth: { signingName: 'glue' } }),
      /signingName and signingRegion are for type sigv4/,
    ),
    await expectRejected(
      Resources.endpoint,
      endpointBody('creds-in-uri', { catalogUri: 'https://user:pw@c:8181' }),
      /spec\.iceberg\.catalogUri/,
    ),
    await expectRejected(
      Resources.endpoint,
      endpointBody('bad-type', { catalogUri: 'http://c:8181', auth: { type: 'basic' } }),
      /spec\.iceberg\.auth\.type.*supported values/i,
    ),
    await expectRejected(
      Resources.endpoint,
      endpointBody('no-uri', { warehouse: 'w' }),
      /spec\.iceberg\.catalogUri: Required value/,
    ),
    await expectRejected(
      Resources.view,
      {
        metadata: { name: 'bad-table', namespace: ns },
        spec: {
          endpointRef: { name: 'orders' },
          columns: [{ name: 'a', type: 'VARCHAR', path: '$.a' }],
          iceberg: { namespace: 'Shop-1', table: 'x' },
        },
      } as KubeObject,
      /spec\.iceberg\.namespace/,
    ),
    await expectRejected(
      Resources.view,
      {
        metadata: { name: 'no-ns', namespace: ns },
        spec: {
          endpointRef: { name: 'orders' },
          columns: [{ name: 'a', type: 'VARCHAR', path: '$.a' }],
          iceberg: { table: 'x' },
        },
      } as KubeObject,
      /spec\.iceberg\.namespace: Required value/,
    ),
  ];
  for (const m of msgs) console.log(`# rejected: ${m.replace(/^.*?422 /, '')}`);
  // The AWS endpoints pass: the region comes from the host, or is given.
  for (const [name, iceberg] of [
    [
      'glue',
      {
        catalogUri: 'https://glue.eu-west-1.amazonaws.com/iceberg',
        warehouse: '123456789012',
        auth: { type: 'sigv4', signingName: 'glue' },
      },
    ],
    [
      'tables',
      {
        catalogUri: 'https://tables.internal/iceberg',
        auth: { type: 'sigv4', signingName: 's3tables', signingRegion: 'us-east-1' },
      },
    ],
  ] as const)
    await client.create(Resources.endpoint, endpointBody(`sigv4-${name}`, iceberg));
});
