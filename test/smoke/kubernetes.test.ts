// Smoke: the real control plane does what the operator relies on.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ApiException,
  ApiextensionsV1Api,
  AppsV1Api,
  CoreV1Api,
  KubernetesObjectApi,
  PatchStrategy,
  VersionApi,
} from '@kubernetes/client-node';
import { loadYaml } from '@kubernetes/client-node';
import type { KubernetesObject, V1CustomResourceDefinition } from '@kubernetes/client-node';
import { startKubernetes, testbedVersions, waitFor } from '../harness/index.ts';
import type { KubernetesTestbed } from '../harness/index.ts';

let kube: KubernetesTestbed;
let namespace: string;

before(async () => {
  kube = await startKubernetes();
  namespace = await kube.newNamespace('smoke');
});

after(async () => {
  await kube?.stop();
});

const fieldManager = 'landfall-smoke';
const group = 'smoke.landfall.dev';

const crd: V1CustomResourceDefinition = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: `widgets.${group}` },
  spec: {
    group,
    scope: 'Namespaced',
    names: { plural: 'widgets', singular: 'widget', kind: 'Widget', listKind: 'WidgetList' },
    versions: [
      {
        name: 'v1',
        served: true,
        storage: true,
        schema: {
          openAPIV3Schema: {
            type: 'object',
            properties: {
              spec: {
                type: 'object',
                required: ['minReplicas', 'maxReplicas'],
                properties: {
                  minReplicas: { type: 'integer', minimum: 0 },
                  maxReplicas: { type: 'integer', minimum: 0 },
                  note: { type: 'string' },
                },
                // The typed model's name; the serializer writes `x-kubernetes-validations`
                // (and silently drops the dashed spelling: see docs/testbed.md).
                x_kubernetes_validations: [
                  {
                    rule: 'self.minReplicas <= self.maxReplicas',
                    message: 'minReplicas must not exceed maxReplicas',
                  },
                ],
              },
            },
          },
        },
      },
    ],
  },
};

interface Widget extends KubernetesObject {
  spec: { minReplicas: number; maxReplicas: number; note?: string };
}

const widget = (name: string, spec: Widget['spec']): Widget => ({
  apiVersion: `${group}/v1`,
  kind: 'Widget',
  metadata: { name, namespace },
  spec,
});

/** The API server's Status message from a client-node error (its body is JSON text or an object). */
function statusMessage(err: ApiException<unknown>): string {
  const body: unknown = typeof err.body === 'string' ? JSON.parse(err.body) : err.body;
  return (body as { message?: string }).message ?? String(err.body);
}

let crdReady: Promise<void> | undefined;
/** Create the CRD once and wait until the API server serves it. */
function ensureCrd(): Promise<void> {
  crdReady ??= (async () => {
    const ext = kube.kubeConfig.makeApiClient(ApiextensionsV1Api);
    await ext.createCustomResourceDefinition({ body: crd });
    await waitFor(
      async () => {
        const got = await ext.readCustomResourceDefinition({ name: `widgets.${group}` });
        return got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True');
      },
      { what: 'CRD Established', timeoutMs: 15_000 },
    );
  })();
  return crdReady;
}

void test('/version reports the pinned release', async (t) => {
  t.diagnostic(`start-up ms: ${JSON.stringify(kube.startupMs)}`);
  const info = await kube.kubeConfig.makeApiClient(VersionApi).getCode();
  assert.equal(info.gitVersion, 'v1.37.2');
  assert.equal(info.gitVersion, testbedVersions()['KUBE_VERSION']);
});

void test('CRD with a CEL rule; a custom object by server-side apply', async () => {
  await ensureCrd();
  const objects = KubernetesObjectApi.makeApiClient(kube.kubeConfig);
  const applied = await objects.patch(
    widget('w1', { minReplicas: 1, maxReplicas: 3 }),
    undefined,
    undefined,
    fieldManager,
    true,
    PatchStrategy.ServerSideApply,
  );
  assert.equal(applied.metadata?.name, 'w1');
  // Apply again with a change: same manager, so no conflict, and the change lands.
  const reapplied = await objects.patch(
    widget('w1', { minReplicas: 2, maxReplicas: 3, note: 'second apply' }),
    undefined,
    undefined,
    fieldManager,
    true,
    PatchStrategy.ServerSideApply,
  );
  assert.deepEqual(reapplied.spec, { minReplicas: 2, maxReplicas: 3, note: 'second apply' });
  const managers = reapplied.metadata?.managedFields?.map((f) => `${f.manager}/${f.operation}`);
  assert.deepEqual(managers, [`${fieldManager}/Apply`]);
});

void test('a CRD schema violation is rejected with 422 and the rule message', async () => {
  await ensureCrd();
  const objects = KubernetesObjectApi.makeApiClient(kube.kubeConfig);
  const apply = (w: Widget): Promise<Widget> =>
    objects.patch(w, undefined, undefined, fieldManager, true, PatchStrategy.ServerSideApply);

  await assert.rejects(apply(widget('bad-cel', { minReplicas: 5, maxReplicas: 1 })), (err: unknown) => {
    assert.ok(err instanceof ApiException, `expected ApiException, got ${String(err)}`);
    assert.equal(err.code, 422);
    assert.match(statusMessage(err), /minReplicas must not exceed maxReplicas/);
    return true;
  });
  await assert.rejects(apply(widget('bad-min', { minReplicas: -1, maxReplicas: 1 })), (err: unknown) => {
    assert.ok(err instanceof ApiException);
    assert.equal(err.code, 422);
    assert.match(statusMessage(err), /spec\.minReplicas.*should be greater than or equal to 0/);
    return true;
  });
});

void test('a Parallel StatefulSet gets its Pods from the controller-manager (Pending: no kubelet)', async () => {
  const apps = kube.kubeConfig.makeApiClient(AppsV1Api);
  const core = kube.kubeConfig.makeApiClient(CoreV1Api);
  const labels = { app: 'smoke-sts' };
  await apps.createNamespacedStatefulSet({
    namespace,
    body: {
      metadata: { name: 'smoke' },
      spec: {
        replicas: 2,
        // OrderedReady would create pod-0 only: it never becomes Ready here.
        podManagementPolicy: 'Parallel',
        serviceName: 'smoke',
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          // Never pulled: there is no kubelet.
          spec: { containers: [{ name: 'main', image: 'registry.invalid/landfall/none:0' }] },
        },
      },
    },
  });
  const pods = await waitFor(
    async () => {
      const list = await core.listNamespacedPod({ namespace, labelSelector: 'app=smoke-sts' });
      return list.items.length === 2 ? list.items : undefined;
    },
    { what: 'two Pods of StatefulSet smoke', timeoutMs: 20_000, intervalMs: 100 },
  );
  assert.deepEqual(pods.map((p) => p.metadata?.name).sort(), ['smoke-0', 'smoke-1']);
  for (const p of pods) assert.equal(p.status?.phase, 'Pending');
});

void test('client-node trap: a wire-shaped CRD loses x-kubernetes-* keys unless it goes through loadYaml', async () => {
  // KubernetesObjectApi serializes known kinds through the generated models,
  // which know `x_kubernetes_validations` and silently drop the spelling that
  // YAML files and the API use. dryRun: nothing is stored.
  const objects = KubernetesObjectApi.makeApiClient(kube.kubeConfig);
  const wire = {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `gadgets.${group}` },
    spec: {
      group,
      scope: 'Namespaced',
      names: { plural: 'gadgets', singular: 'gadget', kind: 'Gadget' },
      versions: [
        {
          name: 'v1',
          served: true,
          storage: true,
          schema: {
            openAPIV3Schema: {
              type: 'object',
              properties: {
                spec: {
                  type: 'object',
                  properties: { a: { type: 'string' } },
                  'x-kubernetes-preserve-unknown-fields': true,
                  'x-kubernetes-validations': [{ rule: 'has(self.a)', message: 'a is required' }],
                },
              },
            },
          },
        },
      ],
    },
  };
  // Plain JSON: the answer comes back as model class instances.
  const specSchema = (o: KubernetesObject): unknown =>
    JSON.parse(
      JSON.stringify(
        (o as V1CustomResourceDefinition).spec.versions[0]?.schema?.openAPIV3Schema?.properties?.['spec'],
      ),
    );
  const apply = (o: KubernetesObject): Promise<KubernetesObject> =>
    objects.patch(o, undefined, 'All', fieldManager, true, PatchStrategy.ServerSideApply);

  const lossy = await apply(wire);
  assert.deepEqual(
    specSchema(lossy),
    { type: 'object', properties: { a: { type: 'string' } } },
    'client-node stopped dropping x-kubernetes-*: update docs/testbed.md',
  );

  const viaLoadYaml = await apply(loadYaml<KubernetesObject>(JSON.stringify(wire)));
  assert.deepEqual(specSchema(viaLoadYaml), {
    type: 'object',
    properties: { a: { type: 'string' } },
    x_kubernetes_preserve_unknown_fields: true,
    x_kubernetes_validations: [{ rule: 'has(self.a)', message: 'a is required' }],
  });
});

void test('the built kubectl and helm work with the harness kubeconfig', async () => {
  const version = JSON.parse((await kube.kubectl(['version', '--output=json'])).stdout) as {
    clientVersion?: { gitVersion?: string };
    serverVersion?: { gitVersion?: string };
  };
  assert.equal(version.clientVersion?.gitVersion, kube.version);
  assert.equal(version.serverVersion?.gitVersion, kube.version);
  const applied = await kube.kubectl(
    ['apply', '--server-side', '--field-manager=landfall-smoke', '-f', '-'],
    {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: 'from-kubectl', namespace },
      }),
    },
  );
  assert.match(applied.stdout, /configmap\/from-kubectl serverside-applied/);
  const helm = await kube.helm(['version', '--short']);
  assert.match(helm.stdout, new RegExp(`^${testbedVersions()['HELM_VERSION'] ?? 'missing'}`));
  const releases = await kube.helm(['list', '--all-namespaces', '--output=json']);
  assert.deepEqual(JSON.parse(releases.stdout), []);
});
