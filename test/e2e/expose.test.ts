// Endpoint spec.expose against a real kube-apiserver (no controller-manager:
// nothing here needs Pods). The landfall CRDs and the Gateway API HTTPRoute CRD
// (which test/infra/setup.sh takes from the Gateway API Go module into the
// test-bed cache) are installed, then:
//   - every expose variant the builders render (Services of each type, the
//     Ingress, the HTTPRoute, and the NetworkPolicy) passes `kubectl apply --dry-run=server`;
//   - Endpoints with each variant pass, and the CEL rules refuse the
//     combinations that make no sense;
//   - the Endpoint controller (in-process, real client) never deletes nor
//     applies over a same-named Ingress / HTTPRoute it does not own.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { repoRoot, startKubernetes, waitFor } from '../harness/index.ts';
import { testbedCacheDir, testbedVersions } from '../harness/proc.ts';
import type { KubernetesTestbed } from '../harness/index.ts';
import { withEndpointDefaults } from '../../operator/src/api/endpoint.ts';
import type { Endpoint } from '../../operator/src/api/endpoint.ts';
import { API_VERSION } from '../../operator/src/api/common.ts';
import { buildEndpointResources } from '../../operator/src/model/resources.ts';
import { EndpointController } from '../../operator/src/controller/endpoint.ts';
import type { Store } from '../../operator/src/controller/endpoint.ts';
import { ViewCompileCache } from '../../operator/src/controller/views.ts';
import { KubeClient, Resources } from '../../operator/src/runtime/kube.ts';
import type { KubeObject } from '../../operator/src/runtime/kube.ts';
import { silentLogger } from '../../operator/src/runtime/log.ts';

const NS = 'tenant-a';
const HTTPROUTE_CRD = join(
  testbedCacheDir(),
  `gateway-api-${testbedVersions()['GATEWAY_API_VERSION'] ?? 'unset'}`,
  'httproutes.yaml',
);

let kube: KubernetesTestbed;

const base = (name: string) => ({
  s3: { bucket: 'acme-events' },
  apiKeySecretRef: { name: `${name}-keys` },
});

function endpointObject(name: string, expose: Record<string, unknown>): Endpoint {
  return {
    apiVersion: API_VERSION,
    kind: 'Endpoint',
    metadata: { name, namespace: NS, uid: `0000-${name}` },
    spec: withEndpointDefaults({ ...base(name), expose }),
  };
}

const VARIANTS: Record<string, Record<string, unknown>> = {
  'cluster-ip': {},
  'node-port': { service: { type: 'NodePort' } },
  'load-balancer': {
    service: {
      type: 'LoadBalancer',
      annotations: { 'service.beta.kubernetes.io/aws-load-balancer-scheme': 'internet-facing' },
      loadBalancerSourceRanges: ['203.0.113.0/24', '2001:db8::/32'],
    },
    tls: { secretRef: { name: 'edge-tls' } },
  },
  ingress: {
    ingress: {
      className: 'nginx',
      host: 'ingest.example.com',
      tlsSecretName: 'ingest-example-com-tls',
      annotations: { 'nginx.ingress.kubernetes.io/proxy-body-size': '16m' },
    },
  },
  'http-route': {
    httpRoute: {
      parentRefs: [{ name: 'public', namespace: 'gateways', sectionName: 'https' }],
      hostnames: ['sensors.example.com'],
    },
    tls: { secretRef: { name: 'sensors-tls' } },
  },
};

async function dryRun(objects: readonly unknown[]): Promise<string> {
  const list = { apiVersion: 'v1', kind: 'List', items: objects };
  return (
    await kube.kubectl(['apply', '--dry-run=server', '-n', NS, '-o', 'json', '-f', '-'], {
      input: JSON.stringify(list),
    })
  ).stdout;
}

async function refusal(objects: readonly unknown[]): Promise<string> {
  try {
    await dryRun(objects);
  } catch (err) {
    return String(err);
  }
  return 'accepted';
}

void describe('Endpoint spec.expose on a real API server', { timeout: 180_000 }, () => {
  before(async () => {
    kube = await startKubernetes({ controllerManager: false });
    await kube.kubectl(['create', 'namespace', NS]);
    // create, not apply: the HTTPRoute CRD is larger than apply's last-applied annotation allows.
    for (const file of [
      join(repoRoot, 'crds', 'endpoints.landfall.dev.yaml'),
      join(repoRoot, 'crds', 'views.landfall.dev.yaml'),
      HTTPROUTE_CRD,
    ])
      await kube.kubectl(['create', '-f', file]);
    await waitFor(
      async () => {
        for (const crd of ['endpoints.landfall.dev', 'httproutes.gateway.networking.k8s.io']) {
          const out = await kube.kubectl([
            'get',
            'crd',
            crd,
            '-o',
            'jsonpath={.status.conditions[?(@.type=="Established")].status}',
          ]);
          if (out.stdout.trim() !== 'True') return false;
        }
        return true;
      },
      { what: 'CRDs Established', timeoutMs: 30_000, intervalMs: 200 },
    );
  });
  after(async () => {
    await kube?.stop();
  });

  for (const [name, expose] of Object.entries(VARIANTS)) {
    void test(`${name}: the Endpoint and what the operator renders for it pass --dry-run=server`, async () => {
      const ep = endpointObject(name, expose);
      const r = buildEndpointResources(ep, {
        nodeImage: 'ghcr.io/landfall/ingest-node:0.1.0',
        views: [],
        networkPolicy: {
          operatorNamespace: 'landfall-system',
          operatorPodLabels: {
            'app.kubernetes.io/name': 'landfall',
            'app.kubernetes.io/component': 'operator',
          },
          metricsNamespace: 'monitoring',
        },
      });
      const objects = [
        r.service,
        r.headlessService,
        r.ingress,
        r.httpRoute,
        r.statefulSet,
        r.networkPolicy,
      ].filter((o) => o !== undefined);
      const out = JSON.parse(await dryRun([{ ...ep, metadata: { name, namespace: NS } }, ...objects])) as {
        items: { kind: string; spec?: Record<string, unknown> }[];
      };
      const kinds = out.items.map((o) => o.kind);
      assert.deepEqual(kinds, ['Endpoint', ...objects.map((o) => o.kind ?? '')]);
      const service = out.items.find((o) => o.kind === 'Service');
      assert.equal(
        service?.spec?.type,
        (expose.service as { type?: string } | undefined)?.type ?? 'ClusterIP',
      );
      // The NetworkPolicy's named ports are the container's.
      const policy = out.items.find((o) => o.kind === 'NetworkPolicy');
      assert.deepEqual(
        (policy?.spec?.ingress as { ports: { port: string }[] }[]).map((rule) => rule.ports[0]?.port),
        ['http', 'admin', 'admin'],
      );
      if (r.httpRoute !== undefined) {
        const route = out.items.find((o) => o.kind === 'HTTPRoute');
        // The Gateway API CRD defaulted the parentRef: the route is the real schema's, not a guess.
        const parent = (route?.spec?.parentRefs as { group?: string; kind?: string }[] | undefined)?.[0];
        assert.equal(parent?.kind, 'Gateway');
        assert.equal(parent?.group, 'gateway.networking.k8s.io');
      }
    });
  }

  void test('a Service applied as NodePort, then as ClusterIP (server-side apply, as the operator does)', async () => {
    const apply = async (expose: Record<string, unknown>): Promise<string> => {
      const r = buildEndpointResources(endpointObject('flip', expose), { nodeImage: 'img', views: [] });
      // No owner reference: no Endpoint object exists here for it to point at.
      const service = { ...r.service, metadata: { ...r.service.metadata, ownerReferences: undefined } };
      const out = await kube.kubectl(
        [
          'apply',
          '--server-side',
          '--force-conflicts',
          '--field-manager=landfall-operator',
          '-o',
          'json',
          '-f',
          '-',
        ],
        { input: JSON.stringify(service) },
      );
      return (JSON.parse(out.stdout) as { spec: { type: string } }).spec.type;
    };
    assert.equal(await apply({ service: { type: 'NodePort' } }), 'NodePort');
    assert.equal(await apply({}), 'ClusterIP');
    assert.equal(
      await apply({ service: { type: 'LoadBalancer', loadBalancerSourceRanges: ['10.0.0.0/8'] } }),
      'LoadBalancer',
    );
    assert.equal(await apply({}), 'ClusterIP');
  });

  void test('a same-named Ingress / HTTPRoute the Endpoint does not own is never deleted nor applied over', async () => {
    const client = new KubeClient(kube.kubeConfig);
    // The user's own objects, under a field manager of their own.
    const user = new KubeClient(kube.kubeConfig, { fieldManager: 'kubectl-create' });
    type Cond = { type: string; status: string; reason: string; message: string };
    type EndpointObj = Endpoint & KubeObject & { status?: { conditions?: Cond[] } };
    const empty = <T>(): Store<T> => ({ getByKey: () => undefined, list: () => [] });
    const events: string[] = [];
    // One reconcile of a fresh controller each time: as after an operator restart.
    const reconcile = async (name: string): Promise<void> => {
      const ep = await client.get<EndpointObj>(Resources.endpoint, NS, name);
      assert.ok(ep, name);
      const c = new EndpointController({
        client,
        endpoints: { getByKey: (k) => (k === `${NS}/${name}` ? ep : undefined), list: () => [ep] },
        views: empty(),
        statefulSets: empty(),
        pods: empty(),
        compileCache: new ViewCompileCache(async () => ({ ok: false, error: 'unused' })),
        events: { record: (_o, type, reason, message) => events.push(`${type} ${reason}: ${message}`) },
        log: silentLogger,
        nodeImage: 'ghcr.io/landfall/ingest-node:0.1.0',
        operatorKey: Buffer.alloc(32, 7),
        probe: async () => ({ openSegmentBytes: 0, sealedSegments: 0, segmentsPending: 0 }),
      });
      await c.reconcile(`${NS}/${name}`);
    };
    const createEndpoint = (name: string, expose: Record<string, unknown>) =>
      client.create<EndpointObj>(Resources.endpoint, {
        apiVersion: API_VERSION,
        kind: 'Endpoint',
        metadata: { name, namespace: NS },
        spec: { ...base(name), expose },
      } as KubeObject);
    // What the old docs told users to write in front of the Service: no owner reference.
    const handIngress = (name: string, host: string): KubeObject =>
      ({
        apiVersion: 'networking.k8s.io/v1',
        kind: 'Ingress',
        metadata: { name: `${name}-ingest`, namespace: NS },
        spec: {
          rules: [
            {
              host,
              http: {
                paths: [
                  {
                    path: '/',
                    pathType: 'Prefix',
                    backend: { service: { name: `${name}-ingest`, port: { number: 80 } } },
                  },
                ],
              },
            },
          ],
        },
      }) as KubeObject;
    type IngressObj = KubeObject & { spec: { rules: { host: string }[] } };

    // 1. No expose.ingress / httpRoute: the hand-made Ingress and HTTPRoute survive, twice.
    await createEndpoint('handmade', {});
    const ing = await user.create<IngressObj>(Resources.ingress, handIngress('handmade', 'mine.example.com'));
    const route = await user.create<KubeObject>(Resources.httpRoute, {
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'HTTPRoute',
      metadata: { name: 'handmade-ingest', namespace: NS },
      spec: {
        parentRefs: [{ name: 'public' }],
        rules: [{ backendRefs: [{ name: 'handmade-ingest', port: 80 }] }],
      },
    } as KubeObject);
    await reconcile('handmade');
    await reconcile('handmade');
    const ingAfter = await client.get<IngressObj>(Resources.ingress, NS, 'handmade-ingest');
    assert.equal(ingAfter?.metadata?.uid, ing.metadata?.uid, 'the hand-made Ingress is still there');
    assert.equal(ingAfter?.metadata?.resourceVersion, ing.metadata?.resourceVersion, 'and untouched');
    const routeAfter = await client.get<KubeObject>(Resources.httpRoute, NS, 'handmade-ingest');
    assert.equal(routeAfter?.metadata?.uid, route.metadata?.uid, 'the hand-made HTTPRoute is still there');
    const handmade = await client.get<EndpointObj>(Resources.endpoint, NS, 'handmade');
    assert.notEqual(
      handmade?.status?.conditions?.find((x) => x.type === 'Degraded')?.reason,
      'ExposeConflict',
    );
    assert.ok(await client.get(Resources.statefulSet, NS, 'handmade-ingest'), 'the rest was applied');

    // 2. expose.ingress over a foreign same-named Ingress: Degraded ExposeConflict, Ingress untouched.
    await createEndpoint('taken', { ingress: { className: 'nginx', host: 'ingest.example.com' } });
    const taken = await user.create<IngressObj>(Resources.ingress, handIngress('taken', 'mine.example.com'));
    await reconcile('taken');
    const takenAfter = await client.get<IngressObj & { metadata: { managedFields?: { manager: string }[] } }>(
      Resources.ingress,
      NS,
      'taken-ingest',
    );
    assert.equal(takenAfter?.metadata.resourceVersion, taken.metadata?.resourceVersion, 'not applied over');
    assert.equal(takenAfter?.spec.rules[0]?.host, 'mine.example.com');
    assert.deepEqual(takenAfter?.metadata.ownerReferences ?? [], []);
    assert.ok(!(takenAfter?.metadata.managedFields ?? []).some((m) => m.manager === 'landfall-operator'));
    const ep = await client.get<EndpointObj>(Resources.endpoint, NS, 'taken');
    const degraded = ep?.status?.conditions?.find((x) => x.type === 'Degraded');
    assert.equal(degraded?.status, 'True', JSON.stringify(ep?.status));
    assert.equal(degraded?.reason, 'ExposeConflict');
    assert.match(degraded?.message ?? '', /Ingress taken-ingest exists and does not belong to this Endpoint/);
    console.log(`# ${degraded?.message ?? ''}`);
    assert.ok(await client.get(Resources.statefulSet, NS, 'taken-ingest'), 'the rest was still applied');

    // 3. The user removes theirs: the next reconcile creates the operator's own Ingress.
    await user.delete(Resources.ingress, NS, 'taken-ingest');
    await waitFor(async () => (await client.get(Resources.ingress, NS, 'taken-ingest')) === undefined, {
      what: 'the hand-made Ingress gone',
      timeoutMs: 10_000,
      intervalMs: 100,
    });
    await reconcile('taken');
    const own = await client.get<IngressObj>(Resources.ingress, NS, 'taken-ingest');
    assert.equal(own?.spec.rules[0]?.host, 'ingest.example.com');
    assert.equal(own?.metadata?.ownerReferences?.[0]?.uid, ep?.metadata?.uid);
    const healed = await client.get<EndpointObj>(Resources.endpoint, NS, 'taken');
    assert.notEqual(healed?.status?.conditions?.find((x) => x.type === 'Degraded')?.reason, 'ExposeConflict');
  });

  void test('CEL and schema refuse expose combinations that make no sense', async () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [
        { service: { type: 'NodePort', loadBalancerSourceRanges: ['203.0.113.0/24'] } },
        /loadBalancerSourceRanges needs type LoadBalancer/,
      ],
      [
        { service: { loadBalancerSourceRanges: ['10.0.0.0/8'] } },
        /loadBalancerSourceRanges needs type LoadBalancer/,
      ],
      [{ service: { type: 'ExternalName' } }, /Unsupported value: "ExternalName"/],
      [
        { httpRoute: { parentRefs: [] } },
        /parentRefs: Invalid value: 0: .*at least 1|should have at least 1 items/,
      ],
      [{ ingress: { className: 'nginx' } }, /host: Required value|missing required field "host"/],
      [{ tls: {} }, /secretRef: Required value|missing required field "secretRef"/],
      [{ service: { type: 'LoadBalancer', loadBalancerSourceRanges: ['not-a-cidr'] } }, /should match/],
    ];
    for (const [expose, message] of cases) {
      const ep = endpointObject('bad', {});
      const raw = { ...ep, metadata: { name: 'bad', namespace: NS }, spec: { ...base('bad'), expose } };
      assert.match(await refusal([raw]), message, JSON.stringify(expose));
    }
    // The same shapes with the right type pass.
    const ok = {
      ...endpointObject('ok', {}),
      metadata: { name: 'ok', namespace: NS },
      spec: {
        ...base('ok'),
        expose: { service: { type: 'LoadBalancer', loadBalancerSourceRanges: ['203.0.113.0/24'] } },
      },
    };
    assert.equal(await refusal([ok]), 'accepted');
  });
});
