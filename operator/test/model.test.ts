import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildEndpointResources } from '../src/model/resources.ts';
import { buildDrainerJob } from '../src/model/drainer.ts';
import type { BuildContext } from '../src/model/resources.ts';
import { CONFIG_HASH_ANNOTATION, IRSA_ANNOTATION, endpointUrl } from '../src/model/names.ts';
import type { CompiledView } from '../src/adapters/view-compiler.ts';
import { nodeViewInput } from '../src/adapters/view-compiler.ts';
import { validateView, viewSpecHash, viewToPlain } from '../../ingest-node/src/views/spec.ts';
import { withViewDefaults } from '../src/api/view.ts';
import type { ViewSpec } from '../src/api/view.ts';
import { deriveStatusKey, statusKeyLine } from '../src/model/operator-key.ts';
import { staticApiKeys } from '../../ingest-node/src/http/auth.ts';
import { matchSnapshot } from './snapshot.ts';
import { endpoint } from './fixtures.ts';

// What the compiler returns for a valid view, without DuckDB (spec
// normalisation and hashing are pure; the expression check is not needed here).
function compiledView(name: string, spec: ViewSpec): CompiledView {
  const normalised = validateView(nodeViewInput(name, spec));
  return { name, spec: viewToPlain(normalised), specHash: viewSpecHash(normalised) };
}

const ctx: BuildContext = {
  nodeImage: 'ghcr.io/landfall/ingest-node:0.1.0',
  views: [],
  operatorKeyLine: statusKeyLine('lfo_snapshot'),
};

function docs(r: ReturnType<typeof buildEndpointResources>): unknown[] {
  return [
    r.serviceAccount,
    r.configMap,
    r.viewsConfigMap,
    r.headlessService,
    r.service,
    r.statefulSet,
    r.pdb,
  ];
}

const minimal = () =>
  endpoint('clicks', { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'clicks-keys' } });

void test('snapshot: minimal Endpoint (all defaults)', () => {
  matchSnapshot('minimal', docs(buildEndpointResources(minimal(), ctx)));
});

void test('snapshot: the NetworkPolicy (ingest from anywhere, the admin port from the operator and the metrics namespace)', () => {
  const r = buildEndpointResources(minimal(), {
    ...ctx,
    networkPolicy: {
      operatorNamespace: 'landfall-system',
      operatorPodLabels: { 'app.kubernetes.io/name': 'landfall', 'app.kubernetes.io/component': 'operator' },
      metricsNamespace: 'monitoring',
    },
  });
  assert.ok(r.networkPolicy);
  matchSnapshot('network-policy', [r.networkPolicy]);
  // The named ports it admits are the container's.
  const ports = r.statefulSet.spec?.template.spec?.containers[0]?.ports?.map((p) => [
    p.name,
    p.containerPort,
  ]);
  assert.deepEqual(ports, [
    ['http', 8080],
    ['admin', 8081],
  ]);
  // The client Service does not carry the admin port.
  assert.deepEqual(
    r.service.spec?.ports?.map((p) => p.targetPort),
    ['http'],
  );
  assert.equal(buildEndpointResources(minimal(), ctx).networkPolicy, undefined, 'off unless configured');
});

void test('snapshot: every option (IRSA, MinIO, Kata, storage class, views)', () => {
  const ep = endpoint('telemetry', {
    s3: {
      bucket: 'edge-data',
      region: 'eu-central-1',
      prefix: 'landfall/prod',
      endpointUrl: 'http://minio.storage:9000',
      forcePathStyle: true,
    },
    credentials: { irsaRoleArn: 'arn:aws:iam::123456789012:role/landfall-writer' },
    apiKeySecretRef: { name: 'telemetry-keys' },
    storage: { storageClassName: 'local-nvme', size: '200Gi' },
    segmentPolicy: { segmentBytesMax: 134217728, segmentAgeMsMax: 30000 },
    outputs: { segments: true, rawParquet: true },
    replicas: 3,
    resources: { requests: { cpu: 2, memory: '4Gi' }, limits: { cpu: 4, memory: '8Gi' } },
    limits: { bodyBytesMax: 1048576 },
    validation: 'json',
    runtimeClassName: 'kata',
    image: 'registry.local/landfall/ingest-node:dev',
  });
  const compiled = compiledView(
    'page_views',
    withViewDefaults({
      endpointRef: { name: 'telemetry' },
      columns: [
        { name: 'event', type: 'VARCHAR', path: '$.event', required: true },
        { name: 'viewed_at', type: 'TIMESTAMP', path: '$.ts', required: true },
      ],
      filter: "event = 'page_view'",
      partitioning: [{ expression: "date_trunc('day', viewed_at)", alias: 'dt' }],
    }),
  );
  matchSnapshot('full', docs(buildEndpointResources(ep, { ...ctx, views: [compiled] })));
});

void test('snapshot: MinIO with static keys from a Secret, MQTT source', () => {
  const ep = endpoint('sensors', {
    s3: { bucket: 'edge-data', endpointUrl: 'http://minio.minio.svc:9000', forcePathStyle: true },
    credentials: { secretRef: { name: 'minio-credentials' } },
    apiKeySecretRef: { name: 'sensors-keys' },
    mqtt: {
      brokers: [
        {
          url: 'mqtts://mosquitto.iot.svc:8883',
          username: 'landfall',
          passwordSecretRef: { name: 'mqtt-credentials', key: 'password' },
          caSecretRef: { name: 'mqtt-ca' },
        },
      ],
      topics: [{ filter: 'sensors/#', qos: 1 }],
    },
  });
  matchSnapshot('minio-mqtt', docs(buildEndpointResources(ep, ctx)));
});

void test('snapshot: AssumeRole with ExternalId', () => {
  const ep = endpoint('billing', {
    s3: { bucket: 'billing-events' },
    credentials: {
      assumeRole: { roleArn: 'arn:aws:iam::123456789012:role/writer', externalId: 'landfall-7f3a' },
    },
    apiKeySecretRef: { name: 'billing-keys' },
  });
  matchSnapshot('assume-role', docs(buildEndpointResources(ep, ctx)));
});

void test('every object has a controller owner reference to the Endpoint and the common labels', () => {
  const r = buildEndpointResources(minimal(), ctx);
  for (const obj of docs(r) as {
    metadata: { ownerReferences: unknown[]; labels: Record<string, string> };
  }[]) {
    assert.deepEqual(obj.metadata.ownerReferences, [
      {
        apiVersion: 'landfall.dev/v1alpha1',
        kind: 'Endpoint',
        name: 'clicks',
        uid: 'uid-clicks',
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    assert.equal(obj.metadata.labels['landfall.dev/endpoint'], 'clicks');
  }
});

void test('IRSA annotation only when an irsaRoleArn is given', () => {
  assert.equal(buildEndpointResources(minimal(), ctx).serviceAccount.metadata?.annotations, undefined);
  const ep = endpoint('x', {
    s3: { bucket: 'bbb' },
    apiKeySecretRef: { name: 'k' },
    credentials: { irsaRoleArn: 'arn:aws:iam::123456789012:role/r' },
  });
  assert.equal(
    buildEndpointResources(ep, ctx).serviceAccount.metadata?.annotations?.[IRSA_ANNOTATION],
    'arn:aws:iam::123456789012:role/r',
  );
});

void test('config hash: changes with the config file, not with views, scaling or the key Secret', () => {
  const hashOf = (spec: Record<string, unknown>, views = ctx.views) =>
    buildEndpointResources(
      endpoint('clicks', { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, ...spec }),
      {
        ...ctx,
        views,
      },
    ).statefulSet.spec?.template.metadata?.annotations?.[CONFIG_HASH_ANNOTATION];
  const base = hashOf({});
  assert.match(base ?? '', /^[0-9a-f]{16}$/);
  assert.equal(hashOf({}), base, 'deterministic');
  assert.notEqual(hashOf({ segmentPolicy: { segmentBytesMax: 1048576 } }), base);
  assert.equal(hashOf({ replicas: 3 }), base, 'scaling does not roll pods');
  assert.equal(hashOf({ apiKeySecretRef: { name: 'other' } }), base, 'the Secret is mounted, not hashed');
  const v = compiledView(
    'v',
    withViewDefaults({
      endpointRef: { name: 'clicks' },
      columns: [{ name: 'a', type: 'VARCHAR', path: '$.a' }],
    }),
  );
  assert.equal(hashOf({}, [v]), base, 'views reach running pods through their own ConfigMap');
  assert.notEqual(hashOf({ limits: { bodyBytesMax: 2048 } }), base);
  assert.equal(
    hashOf({ credentials: { secretRef: { name: 's' } } }),
    base,
    'the same file: static keys are env, and the env change alone rolls the pods',
  );
});

void test('StatefulSet hardening and shape', () => {
  const sts = buildEndpointResources(minimal(), ctx).statefulSet;
  const pod = sts.spec?.template.spec;
  const c = pod?.containers[0];
  assert.equal(sts.spec?.podManagementPolicy, 'Parallel');
  assert.equal(pod?.securityContext?.runAsNonRoot, true);
  assert.equal(pod?.securityContext?.seccompProfile?.type, 'RuntimeDefault');
  assert.equal(c?.securityContext?.readOnlyRootFilesystem, true);
  assert.deepEqual(c?.securityContext?.capabilities?.drop, ['ALL']);
  assert.equal(c?.readinessProbe?.httpGet?.path, '/readyz');
  assert.equal(c?.livenessProbe?.httpGet?.path, '/healthz');
  assert.equal(pod?.runtimeClassName, undefined);
  assert.equal(sts.spec?.volumeClaimTemplates?.[0]?.spec?.storageClassName, undefined);
});

const envOf = (spec: Record<string, unknown>) =>
  buildEndpointResources(
    endpoint('e', { s3: { bucket: 'bbb' }, apiKeySecretRef: { name: 'k' }, ...spec }),
    ctx,
  ).statefulSet.spec?.template.spec?.containers[0]?.env ?? [];

void test('static keys: AWS_* env from secretKeyRef, only with credentials.secretRef', () => {
  const names = (env: ReturnType<typeof envOf>) => env.map((e) => e.name);
  assert.deepEqual(names(envOf({})), ['POD_NAME', 'POD_NAMESPACE', 'LANDFALL_INSTANCE_ID']);
  const env = envOf({ credentials: { secretRef: { name: 'minio-credentials' } } });
  assert.deepEqual(
    env.filter((e) => e.name.startsWith('AWS_')),
    [
      {
        name: 'AWS_ACCESS_KEY_ID',
        valueFrom: { secretKeyRef: { name: 'minio-credentials', key: 'accessKeyId' } },
      },
      {
        name: 'AWS_SECRET_ACCESS_KEY',
        valueFrom: { secretKeyRef: { name: 'minio-credentials', key: 'secretAccessKey' } },
      },
    ],
  );
  assert.ok(
    env.every((e) => e.value === undefined),
    'no literal values',
  );
});

void test('AssumeRole without a session name uses the pod name; with one, the file has it', () => {
  const role = 'arn:aws:iam::123456789012:role/writer';
  const without = envOf({ credentials: { assumeRole: { roleArn: role } } });
  assert.deepEqual(
    without.find((e) => e.name === 'LANDFALL_CREDENTIALS_SESSION_NAME')?.valueFrom?.fieldRef?.fieldPath,
    'metadata.name',
  );
  const withName = envOf({ credentials: { assumeRole: { roleArn: role, sessionName: 'fixed' } } });
  assert.equal(
    withName.find((e) => e.name === 'LANDFALL_CREDENTIALS_SESSION_NAME'),
    undefined,
  );
});

void test('the container runs the image entrypoint with serve --config, and mounts views and MQTT Secrets', () => {
  const r = buildEndpointResources(
    endpoint('e', {
      s3: { bucket: 'bbb' },
      apiKeySecretRef: { name: 'k' },
      mqtt: {
        brokers: [
          { url: 'mqtt://a:1883', username: 'u', passwordSecretRef: { name: 's', key: 'pw' } },
          { url: 'mqtt://b:1883' },
        ],
        topics: [{ filter: 't' }],
      },
    }),
    ctx,
  );
  const pod = r.statefulSet.spec?.template.spec;
  const c = pod?.containers[0];
  assert.equal(c?.command, undefined, 'the image entrypoint (the node CLI)');
  assert.deepEqual(c?.args, ['serve', '--config', '/etc/landfall/config/config.json']);
  assert.deepEqual(
    c?.volumeMounts?.map((m) => `${m.name}:${m.mountPath}`),
    [
      'data:/var/lib/landfall',
      'config:/etc/landfall/config',
      'views:/etc/landfall/views',
      'api-keys:/etc/landfall/api-keys',
      'mqtt:/etc/landfall/mqtt',
      'tmp:/tmp',
    ],
  );
  assert.equal(pod?.volumes?.find((v) => v.name === 'views')?.configMap?.name, 'e-ingest-views');
  assert.deepEqual(pod?.volumes?.find((v) => v.name === 'mqtt')?.projected?.sources, [
    { secret: { name: 's', items: [{ key: 'pw', path: 'broker-0/password' }] } },
  ]);
  const none = buildEndpointResources(
    endpoint('e', { s3: { bucket: 'bbb' }, apiKeySecretRef: { name: 'k' } }),
    ctx,
  );
  assert.equal(
    none.statefulSet.spec?.template.spec?.volumes?.find((v) => v.name === 'mqtt'),
    undefined,
  );
});

void test("the operator's status key: derived per Endpoint uid, only its hash reaches the nodes, scopes status and drain only", () => {
  const master = Buffer.alloc(32, 1);
  const a = minimal();
  const key = deriveStatusKey(master, a);
  assert.match(key, /^lfo_[A-Za-z0-9_-]{43}$/);
  assert.equal(deriveStatusKey(master, a), key, 'stable');
  const recreated = { ...a, metadata: { ...a.metadata, uid: 'uid-other' } };
  assert.notEqual(deriveStatusKey(master, recreated), key, 'a new Endpoint of the same name gets a new key');
  assert.notEqual(deriveStatusKey(Buffer.alloc(32, 2), a), key);
  assert.throws(() => deriveStatusKey(Buffer.alloc(16), a), /at least 32 bytes/);
  const line = statusKeyLine(key);
  assert.ok(!line.includes(key), 'the key itself is not in the ConfigMap');
  // The node's own key-file parser accepts the line: status and drain, never ingest.
  const keys = staticApiKeys(line);
  assert.deepEqual([...(keys.verify(key)?.scopes ?? [])].sort(), ['drain', 'status']);
  assert.equal(keys.verify(deriveStatusKey(master, recreated)), undefined);
});

void test('snapshot: pod template overrides (placement, priority, pull secrets, annotations)', () => {
  const ep = endpoint('placed', {
    s3: { bucket: 'acme-events' },
    apiKeySecretRef: { name: 'placed-keys' },
    replicas: 3,
    podTemplate: {
      metadata: { annotations: { 'karpenter.sh/do-not-disrupt': 'true' } },
      nodeSelector: { 'node.kubernetes.io/instance-type': 'i4i.large' },
      tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'ingest', effect: 'NoSchedule' }],
      affinity: {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [
              {
                matchExpressions: [
                  { key: 'karpenter.sh/capacity-type', operator: 'In', values: ['on-demand'] },
                ],
              },
            ],
          },
        },
      },
      topologySpreadConstraints: [
        { maxSkew: 1, topologyKey: 'topology.kubernetes.io/zone', whenUnsatisfiable: 'DoNotSchedule' },
      ],
      priorityClassName: 'landfall-critical',
      imagePullSecrets: [{ name: 'registry-creds' }],
    },
  });
  const sts = buildEndpointResources(ep, ctx).statefulSet;
  const pod = sts.spec?.template.spec;
  // The operator's anti-affinity stays beside the user's node affinity; the
  // spread constraint selects this Endpoint's pods; the config hash is ours.
  assert.ok(pod?.affinity?.podAntiAffinity && pod.affinity.nodeAffinity);
  assert.deepEqual(pod?.topologySpreadConstraints?.[0]?.labelSelector?.matchLabels, {
    'app.kubernetes.io/name': 'landfall',
    'app.kubernetes.io/component': 'ingest-node',
    'landfall.dev/endpoint': 'placed',
  });
  assert.equal(sts.spec?.template.metadata?.annotations?.['karpenter.sh/do-not-disrupt'], 'true');
  assert.match(sts.spec?.template.metadata?.annotations?.[CONFIG_HASH_ANNOTATION] ?? '', /^[0-9a-f]{16}$/);
  matchSnapshot('pod-template', [sts]);
});

const exposeDocs = (r: ReturnType<typeof buildEndpointResources>): unknown[] =>
  [r.service, r.headlessService, r.ingress, r.httpRoute, r.configMap, r.statefulSet].filter(
    (d) => d !== undefined,
  );

void test('snapshot: expose as a LoadBalancer with source ranges and HTTPS on the nodes', () => {
  const ep = endpoint('edge', {
    s3: { bucket: 'acme-events' },
    apiKeySecretRef: { name: 'edge-keys' },
    expose: {
      service: {
        type: 'LoadBalancer',
        annotations: { 'service.beta.kubernetes.io/aws-load-balancer-scheme': 'internet-facing' },
        loadBalancerSourceRanges: ['203.0.113.0/24', '2001:db8::/32'],
      },
      tls: { secretRef: { name: 'edge-tls' } },
    },
  });
  const r = buildEndpointResources(ep, ctx);
  matchSnapshot('expose-loadbalancer-tls', exposeDocs(r));
  assert.equal(endpointUrl(ep), 'https://edge-ingest.tenant-a.svc:443', 'status.url');
  assert.equal(endpointUrl(minimal()), 'http://clicks-ingest.tenant-a.svc:80');
  assert.equal(r.ingress, undefined);
  assert.equal(r.httpRoute, undefined);
  const config = JSON.parse(r.configMap.data?.['config.json'] ?? '{}') as {
    listen: { tls?: { certFile: string; keyFile: string } };
  };
  assert.deepEqual(config.listen.tls, {
    certFile: '/etc/landfall/tls/tls.crt',
    keyFile: '/etc/landfall/tls/tls.key',
  });
});

void test('snapshot: expose through an Ingress with a TLS Secret (cert-manager)', () => {
  const ep = endpoint('clicks', {
    s3: { bucket: 'acme-events' },
    apiKeySecretRef: { name: 'clicks-keys' },
    expose: {
      ingress: {
        className: 'nginx',
        host: 'ingest.example.com',
        tlsSecretName: 'ingest-example-com-tls',
        annotations: { 'nginx.ingress.kubernetes.io/proxy-body-size': '16m' },
      },
    },
  });
  const r = buildEndpointResources(ep, ctx);
  matchSnapshot('expose-ingress', exposeDocs(r));
  assert.equal(r.service.spec?.type, 'ClusterIP');
  assert.equal(r.ingress?.spec?.rules?.[0]?.http?.paths[0]?.backend.service?.port?.number, 80);
});

void test('snapshot: expose through a Gateway API HTTPRoute, NodePort Service', () => {
  const ep = endpoint('sensors', {
    s3: { bucket: 'acme-events' },
    apiKeySecretRef: { name: 'sensors-keys' },
    expose: {
      service: { type: 'NodePort' },
      httpRoute: {
        parentRefs: [{ name: 'public', namespace: 'gateways', sectionName: 'https' }],
        hostnames: ['sensors.example.com'],
      },
      tls: { secretRef: { name: 'sensors-tls' } },
    },
  });
  const r = buildEndpointResources(ep, ctx);
  matchSnapshot('expose-httproute', exposeDocs(r));
  // With HTTPS on the nodes the route's backend is the Service's 443.
  assert.equal(r.httpRoute?.spec.rules[0]?.backendRefs[0]?.port, 443);
});

void test('disruption: the PDB allows no voluntary eviction (1 replica too); Karpenter and the Cluster Autoscaler keep off the node; podTemplate may override', () => {
  for (const replicas of [1, 3]) {
    const r = buildEndpointResources(
      endpoint('clicks', { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas }),
      ctx,
    );
    assert.equal(r.pdb.spec?.maxUnavailable, 0, `${replicas} replica(s)`);
    assert.equal(r.pdb.spec?.minAvailable, undefined);
    assert.deepEqual(r.pdb.spec?.selector?.matchLabels, r.statefulSet.spec?.selector.matchLabels);
    const annotations = r.statefulSet.spec?.template.metadata?.annotations ?? {};
    assert.equal(annotations['karpenter.sh/do-not-disrupt'], 'true');
    assert.equal(annotations['cluster-autoscaler.kubernetes.io/safe-to-evict'], 'false');
  }
  const optedOut = buildEndpointResources(
    endpoint('clicks', {
      s3: { bucket: 'acme-events' },
      apiKeySecretRef: { name: 'k' },
      podTemplate: { metadata: { annotations: { 'karpenter.sh/do-not-disrupt': 'false' } } },
    }),
    ctx,
  );
  const annotations = optedOut.statefulSet.spec?.template.metadata?.annotations ?? {};
  assert.equal(annotations['karpenter.sh/do-not-disrupt'], 'false', "the user's value wins");
  assert.equal(annotations['cluster-autoscaler.kubernetes.io/safe-to-evict'], 'false');
});

const icebergEndpoint = () =>
  endpoint('orders', {
    s3: { bucket: 'lake' },
    apiKeySecretRef: { name: 'orders-keys' },
    iceberg: {
      catalogUri: 'https://polaris.data.svc:8181/api/catalog',
      warehouse: 'analytics',
      auth: {
        type: 'oauth2',
        clientIdSecretRef: { name: 'polaris-client' },
        clientSecretSecretRef: { name: 'polaris-client' },
        scope: 'PRINCIPAL_ROLE:ALL',
      },
    },
  });

const icebergView = () =>
  compiledView(
    'orders',
    withViewDefaults({
      endpointRef: { name: 'orders' },
      columns: [{ name: 'id', type: 'BIGINT', path: '$.id', required: true }],
      iceberg: { namespace: 'shop', table: 'orders' },
    }),
  );

void test('snapshot: an Iceberg catalog with OAuth2 client credentials, a View with a table', () => {
  matchSnapshot(
    'iceberg-oauth2',
    docs(buildEndpointResources(icebergEndpoint(), { ...ctx, views: [icebergView()] })),
  );
});

void test('iceberg: the node config names mounted files, never a Secret; the Secrets are one projected folder', () => {
  const r = buildEndpointResources(icebergEndpoint(), { ...ctx, views: [icebergView()] });
  const config = JSON.parse(r.configMap.data?.['config.json'] ?? '{}') as { iceberg?: unknown };
  assert.deepEqual(config.iceberg, {
    catalogUri: 'https://polaris.data.svc:8181/api/catalog',
    warehouse: 'analytics',
    auth: {
      type: 'oauth2',
      clientIdFile: '/etc/landfall/iceberg/client-id',
      clientSecretFile: '/etc/landfall/iceberg/client-secret',
      scope: 'PRINCIPAL_ROLE:ALL',
    },
  });
  assert.doesNotMatch(JSON.stringify(r.configMap.data), /polaris-client/, 'no Secret name in the ConfigMap');
  assert.match(
    r.viewsConfigMap.data?.['orders.yaml'] ?? '',
    /iceberg:\n {2}namespace: shop\n {2}table: orders/,
  );
  const pod = r.statefulSet.spec?.template.spec;
  assert.deepEqual(pod?.volumes?.find((v) => v.name === 'iceberg')?.projected?.sources, [
    { secret: { name: 'polaris-client', items: [{ key: 'clientId', path: 'client-id' }] } },
    { secret: { name: 'polaris-client', items: [{ key: 'clientSecret', path: 'client-secret' }] } },
  ]);
  const c = pod?.containers[0];
  assert.deepEqual(
    c?.volumeMounts?.find((m) => m.name === 'iceberg'),
    { name: 'iceberg', mountPath: '/etc/landfall/iceberg', readOnly: true },
  );
  assert.ok(
    !(c?.env ?? []).some((e) => e.valueFrom?.secretKeyRef?.name === 'polaris-client'),
    'no catalog credential in the environment',
  );

  // Bearer: one file; none: no volume, auth none.
  const bearer = buildEndpointResources(
    endpoint('b', {
      s3: { bucket: 'lake' },
      apiKeySecretRef: { name: 'k' },
      iceberg: { catalogUri: 'http://c:8181', auth: { type: 'bearer', tokenSecretRef: { name: 'tok' } } },
    }),
    ctx,
  );
  const icebergOf = (r: typeof bearer): unknown =>
    (JSON.parse(r.configMap.data?.['config.json'] ?? '{}') as { iceberg?: unknown }).iceberg;
  assert.deepEqual(icebergOf(bearer), {
    catalogUri: 'http://c:8181',
    auth: { type: 'bearer', tokenFile: '/etc/landfall/iceberg/token' },
  });
  assert.deepEqual(
    bearer.statefulSet.spec?.template.spec?.volumes?.find((v) => v.name === 'iceberg')?.projected?.sources,
    [{ secret: { name: 'tok', items: [{ key: 'token', path: 'token' }] } }],
  );
  const none = buildEndpointResources(
    endpoint('n', {
      s3: { bucket: 'lake' },
      apiKeySecretRef: { name: 'k' },
      iceberg: { catalogUri: 'http://c:8181' },
    }),
    ctx,
  );
  assert.deepEqual(icebergOf(none), {
    catalogUri: 'http://c:8181',
    auth: { type: 'none' },
  });
  assert.equal(
    none.statefulSet.spec?.template.spec?.volumes?.find((v) => v.name === 'iceberg'),
    undefined,
  );
});

void test('iceberg: the drainer mounts the catalog credentials too (a drain commits its segments to the tables)', () => {
  const ep = icebergEndpoint();
  const d = buildDrainerJob({
    ep: { ...ep, metadata: { ...ep.metadata, creationTimestamp: new Date('2026-01-01T00:00:00Z') } },
    claim: {
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: { name: 'data-orders-ingest-1', namespace: 'tenant-a', uid: 'claim-uid' },
      status: { phase: 'Bound' },
    },
    instance: 'orders-ingest-1',
    nodeImage: 'img:1',
    views: [icebergView()],
  });
  const pod = d.job.spec?.template.spec;
  assert.ok(
    pod?.containers[0]?.volumeMounts?.some(
      (m) => m.name === 'iceberg' && m.mountPath === '/etc/landfall/iceberg',
    ),
  );
  assert.equal(pod?.volumes?.find((v) => v.name === 'iceberg')?.projected?.sources?.length, 2);
  assert.match(
    d.configMap.data?.['config.json'] ?? '',
    /"clientSecretFile": "\/etc\/landfall\/iceberg\/client-secret"/,
  );
});
