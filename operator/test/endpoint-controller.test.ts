// The Endpoint controller against an in-memory fake API: the order of its
// steps, how a failing step surfaces (error, status, event), and that an
// unchanged status is not written again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Node, V1Pod, V1PodDisruptionBudget, V1StatefulSet } from '@kubernetes/client-node';
import { EndpointController } from '../src/controller/endpoint.ts';
import type { EndpointControllerDeps, Store } from '../src/controller/endpoint.ts';
import { ViewCompileCache } from '../src/controller/views.ts';
import type { Endpoint } from '../src/api/endpoint.ts';
import type { View } from '../src/api/view.ts';
import { KubeApiError } from '../src/runtime/kube.ts';
import type { KubeClient, KubeObject, ResourceType } from '../src/runtime/kube.ts';
import { silentLogger } from '../src/runtime/log.ts';
import { endpoint } from './fixtures.ts';

function store<T extends KubeObject>(items: T[] = []): Store<T> & { items: T[] } {
  return {
    items,
    getByKey: (key) => items.find((o) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}` === key),
    list: () => items,
  };
}

function fakeClient(
  failOn?: string,
  existing = new Map<string, KubeObject>(),
  lists = new Map<string, KubeObject[]>(),
) {
  const calls: string[] = [];
  const statuses: unknown[] = [];
  const applied: KubeObject[] = [];
  const patches: unknown[] = [];
  const client = {
    async apply(rt: ResourceType, obj: KubeObject, opts: { subresource?: string } = {}) {
      const what = `apply ${rt.kind}${opts.subresource ? '/status' : ''} ${obj.metadata?.name ?? ''}`;
      calls.push(what);
      if (failOn && what.startsWith(failOn)) throw new Error('boom from the apiserver');
      if (opts.subresource) statuses.push((obj as { status?: unknown }).status);
      else applied.push(obj);
      return { ...obj, metadata: { ...obj.metadata, resourceVersion: '1', generation: 1 } };
    },
    async jsonPatch(rt: ResourceType, _namespace: string, _name: string, ops: { op: string }[] = []) {
      calls.push(`jsonPatch ${rt.kind}`);
      patches.push(ops);
      return {};
    },
    async mergePatch(rt: ResourceType, _namespace: string, name: string) {
      calls.push(`mergePatch ${rt.kind} ${name}`);
      return {};
    },
    async get(rt: ResourceType, _namespace: string, name: string) {
      return existing.get(`${rt.kind} ${name}`);
    },
    async listAll(rt: ResourceType) {
      return { items: lists.get(rt.kind) ?? [], metadata: {} };
    },
    async create(rt: ResourceType, obj: KubeObject) {
      calls.push(`create ${rt.kind} ${obj.metadata?.name ?? ''}`);
      return obj;
    },
    async delete(
      rt: ResourceType,
      _namespace: string,
      name: string,
      opts: { preconditions?: { uid?: string } } = {},
    ) {
      calls.push(
        `delete ${rt.kind} ${name}${opts.preconditions?.uid ? ` uid=${opts.preconditions.uid}` : ''}`,
      );
    },
  };
  return { client: client as unknown as KubeClient, calls, statuses, applied, patches };
}

function controller(
  client: KubeClient,
  ep: Endpoint,
  allowedImages?: string[],
  more: Partial<EndpointControllerDeps> = {},
) {
  const events: string[] = [];
  const c = new EndpointController({
    client,
    endpoints: store([ep as Endpoint & KubeObject]),
    views: store<View & KubeObject>(),
    statefulSets: store<V1StatefulSet & KubeObject>(),
    pods: store<V1Pod & KubeObject>(),
    compileCache: new ViewCompileCache(async () => ({ ok: false, error: 'unused' })),
    events: { record: (_o, type, reason, message) => events.push(`${type} ${reason}: ${message}`) },
    log: silentLogger,
    nodeImage: 'img',
    allowedImages,
    operatorKey: Buffer.alloc(32, 7),
    probe: async () => ({ openSegmentBytes: 0, sealedSegments: 0, segmentsPending: 0 }),
    ...more,
  });
  return { c, events };
}

const ep = () =>
  endpoint(
    'clicks',
    { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' } },
    { resourceVersion: '7' },
  );

void test('a reconcile runs its steps in order and ends with the status', async () => {
  const f = fakeClient();
  const { c, events } = controller(f.client, ep());
  const result = await c.reconcile('tenant-a/clicks');
  assert.deepEqual(f.calls, [
    'jsonPatch Endpoint',
    'apply ServiceAccount clicks-ingest',
    'apply ConfigMap clicks-ingest-views',
    'apply ConfigMap clicks-ingest',
    'apply Service clicks-ingest-headless',
    'apply Service clicks-ingest',
    // No spec.expose.ingress / httpRoute and none exists: nothing to delete.
    'apply StatefulSet clicks-ingest',
    'apply PodDisruptionBudget clicks-ingest',
    'apply Endpoint/status clicks',
  ]);
  assert.deepEqual(events, ['Normal Created: StatefulSet clicks-ingest created']);
  assert.ok(result.requeueAfterMs, 'not ready yet: polled again');
  const status = f.statuses[0] as {
    url: string;
    observedGeneration: number;
    conditions: { type: string; reason: string }[];
  };
  assert.equal(status.url, 'http://clicks-ingest.tenant-a.svc:80');
  assert.equal(status.observedGeneration, 1);
  assert.deepEqual(
    status.conditions.map((x) => `${x.type}:${x.reason}`),
    ['Ready:RolloutPending', 'Degraded:AsExpected'],
  );
});

void test('a failing step names itself in the error, the Degraded condition and a Warning event', async () => {
  const f = fakeClient('apply StatefulSet');
  const { c, events } = controller(f.client, ep());
  await assert.rejects(c.reconcile('tenant-a/clicks'), /^Error: ensureStatefulSet: boom from the apiserver$/);
  assert.ok(!f.calls.includes('apply PodDisruptionBudget clicks-ingest'), 'later steps do not run');
  const status = f.statuses.at(-1) as {
    observedGeneration?: number;
    conditions: { type: string; status: string; reason: string; message: string }[];
  };
  const degraded = status.conditions.find((x) => x.type === 'Degraded');
  assert.deepEqual(
    [degraded?.status, degraded?.reason, degraded?.message],
    ['True', 'ReconcileFailed', 'ensureStatefulSet: boom from the apiserver'],
  );
  assert.equal(status.observedGeneration, undefined, 'a failed generation is not observed');
  assert.deepEqual(events, ['Warning ReconcileFailed: ensureStatefulSet: boom from the apiserver']);
});

void test('an unchanged status is not written again', async () => {
  const first = fakeClient();
  const e = ep();
  await controller(first.client, e).c.reconcile('tenant-a/clicks');
  const again = fakeClient();
  const withStatus = {
    ...e,
    metadata: { ...e.metadata, finalizers: ['landfall.dev/drain'] },
    status: first.statuses[0],
  } as Endpoint;
  await controller(again.client, withStatus).c.reconcile('tenant-a/clicks');
  assert.ok(!again.calls.some((x) => x.includes('/status')), again.calls.join('\n'));
  assert.ok(!again.calls.includes('jsonPatch Endpoint'), 'finalizer already there');
});

void test('force annotation on a deleting Endpoint removes the finalizer without a drain check', async () => {
  const f = fakeClient();
  const e = endpoint(
    'clicks',
    { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' } },
    {
      deletionTimestamp: '2026-01-01T00:00:00Z',
      finalizers: ['other.example/keep', 'landfall.dev/drain'],
      annotations: { 'landfall.dev/force-delete': 'true' },
    },
  );
  const { c, events } = controller(f.client, e);
  assert.deepEqual(await c.reconcile('tenant-a/clicks'), {});
  assert.deepEqual(f.calls, ['jsonPatch Endpoint']);
  assert.match(events[0] ?? '', /^Warning ForceDeleted: /);
});

void test('an image outside the allowlist is refused: nothing applied, Degraded ImageNotAllowed', async () => {
  const f = fakeClient();
  const e = endpoint('clicks', {
    s3: { bucket: 'acme-events' },
    apiKeySecretRef: { name: 'k' },
    image: 'evil.example/exfiltrate:1',
  });
  const { c, events } = controller(f.client, e, ['ghcr.io/landfall/']);
  assert.deepEqual(await c.reconcile('tenant-a/clicks'), {});
  assert.deepEqual(f.calls, ['apply Endpoint/status clicks']);
  const degraded = (f.statuses[0] as { conditions: { type: string; reason: string }[] }).conditions.find(
    (x) => x.type === 'Degraded',
  );
  assert.equal(degraded?.reason, 'ImageNotAllowed');
  assert.match(
    events[0] ?? '',
    /^Warning ImageNotAllowed: spec.image evil.example\/exfiltrate:1 is not allowed/,
  );

  const ok = fakeClient();
  const allowed = endpoint('clicks', {
    s3: { bucket: 'acme-events' },
    apiKeySecretRef: { name: 'k' },
    image: 'ghcr.io/landfall/ingest-node:0.2.0',
  });
  await controller(ok.client, allowed, ['ghcr.io/landfall/']).c.reconcile('tenant-a/clicks');
  assert.ok(ok.calls.includes('apply StatefulSet clicks-ingest'));
});

void test('spec.expose: the Ingress and HTTPRoute are applied when asked for, deleted once per generation when not (only its own)', async () => {
  const owned = (kind: string): KubeObject => ({
    metadata: {
      name: 'clicks-ingest',
      uid: `${kind}-uid`,
      ownerReferences: [{ kind: 'Endpoint', name: 'clicks', uid: 'uid-clicks', controller: true }],
    },
  });
  const f = fakeClient(undefined, new Map([['HTTPRoute clicks-ingest', owned('route')]]));
  const withIngress = endpoint(
    'clicks',
    {
      s3: { bucket: 'acme-events' },
      apiKeySecretRef: { name: 'k' },
      expose: { ingress: { host: 'ingest.example.com' } },
    },
    { resourceVersion: '7', generation: 3 },
  );
  const { c } = controller(f.client, withIngress);
  await c.reconcile('tenant-a/clicks');
  const exposure = (calls: string[]) => calls.filter((x) => /Ingress|HTTPRoute/.test(x));
  assert.deepEqual(exposure(f.calls), [
    'apply Ingress clicks-ingest',
    'delete HTTPRoute clicks-ingest uid=route-uid',
  ]);
  f.calls.length = 0;
  await c.reconcile('tenant-a/clicks');
  assert.deepEqual(exposure(f.calls), ['apply Ingress clicks-ingest'], 'a status poll deletes nothing');
  f.calls.length = 0;
  withIngress.metadata.generation = 4;
  await c.reconcile('tenant-a/clicks');
  assert.deepEqual(exposure(f.calls), [
    'apply Ingress clicks-ingest',
    'delete HTTPRoute clicks-ingest uid=route-uid',
  ]);
});

void test('spec.expose: a same-named Ingress/HTTPRoute the Endpoint does not control is never deleted nor applied over', async () => {
  const foreign = (owner?: string): KubeObject => ({
    metadata: {
      name: 'clicks-ingest',
      uid: 'theirs',
      ...(owner
        ? { ownerReferences: [{ kind: 'Endpoint', name: 'clicks', uid: owner, controller: true }] }
        : {}),
    },
  });
  // Without expose: a hand-made Ingress and an HTTPRoute of an earlier Endpoint of the same name stay.
  const f = fakeClient(
    undefined,
    new Map([
      ['Ingress clicks-ingest', foreign()],
      ['HTTPRoute clicks-ingest', foreign('uid-of-a-deleted-clicks')],
    ]),
  );
  const plain = controller(f.client, ep());
  await plain.c.reconcile('tenant-a/clicks');
  assert.deepEqual(
    f.calls.filter((x) => /Ingress|HTTPRoute/.test(x)),
    [],
  );
  // With expose.ingress over the hand-made one: not applied, Degraded ExposeConflict, the rest applied.
  const g = fakeClient(undefined, new Map([['Ingress clicks-ingest', foreign()]]));
  const withIngress = endpoint(
    'clicks',
    {
      s3: { bucket: 'acme-events' },
      apiKeySecretRef: { name: 'k' },
      expose: { ingress: { host: 'ingest.example.com' } },
    },
    { resourceVersion: '7' },
  );
  const { c, events } = controller(g.client, withIngress);
  const result = await c.reconcile('tenant-a/clicks');
  assert.ok(!g.calls.some((x) => /Ingress/.test(x)), g.calls.join(', '));
  assert.ok(g.calls.includes('apply StatefulSet clicks-ingest'), 'the other steps still run');
  assert.ok(result.requeueAfterMs, 'looked at again');
  const status = g.statuses.at(-1) as { conditions: { type: string; reason: string; message: string }[] };
  const degraded = status.conditions.find((x) => x.type === 'Degraded');
  assert.equal(degraded?.reason, 'ExposeConflict');
  assert.match(degraded?.message ?? '', /Ingress clicks-ingest exists and does not belong to this Endpoint/);
  assert.ok(events.some((e) => e.startsWith('Warning ExposeConflict:')));
});

/** The Endpoint's StatefulSet as the informer has it: controlled by the Endpoint, at `replicas`. */
function ownStatefulSet(e: Endpoint, replicas: number, annotations?: Record<string, string>): V1StatefulSet & KubeObject {
  return {
    metadata: {
      name: 'clicks-ingest',
      namespace: 'tenant-a',
      ...(annotations ? { annotations } : {}),
      ownerReferences: [{ apiVersion: 'landfall.dev/v1alpha1', kind: 'Endpoint', name: 'clicks', uid: e.metadata.uid ?? '', controller: true }],
    },
    spec: { replicas, selector: {}, serviceName: 'clicks-ingest-headless', template: {} },
  };
} // prettier-ignore

void test('scale-up over an unlabelled claim whose drainer succeeded: its Job is deleted and the StatefulSet is not held', async () => {
  const e = endpoint(
    'clicks',
    { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas: 2 },
    { resourceVersion: '7', creationTimestamp: '2026-01-01T00:00:00Z', finalizers: ['landfall.dev/drain'] },
  );
  // Made by an older operator (no uid label): drained, then kept.
  const claim = {
    metadata: { name: 'data-clicks-ingest-1', namespace: 'tenant-a', uid: 'claim-1', labels: { 'landfall.dev/endpoint': 'clicks' }, creationTimestamp: '2026-01-02T00:00:00Z' },
    status: { phase: 'Bound' },
  } as KubeObject; // prettier-ignore
  const job = (condition: string) =>
    ({
      metadata: { name: 'data-clicks-ingest-1-drain', namespace: 'tenant-a', uid: 'job-1', ownerReferences: [{ kind: 'PersistentVolumeClaim', name: 'data-clicks-ingest-1', uid: 'claim-1', controller: true }] },
      status: { conditions: [{ type: condition, status: 'True' }] },
    }) as KubeObject; // prettier-ignore
  const run = async (condition: string) => {
    const f = fakeClient(
      undefined,
      new Map(),
      new Map([
        ['PersistentVolumeClaim', [claim]],
        ['Job', [job(condition)]],
      ]),
    );
    const { c } = controller(f.client, e, undefined, {
      statefulSets: store([ownStatefulSet(e, 1)]),
    });
    await c.reconcile('tenant-a/clicks');
    const sts = f.applied.find((o) => o.kind === 'StatefulSet') as V1StatefulSet | undefined;
    return { replicas: sts?.spec?.replicas, calls: f.calls };
  };
  const done = await run('Complete');
  assert.equal(done.replicas, 2, 'a succeeded drainer holds nothing');
  assert.ok(done.calls.includes('delete Job data-clicks-ingest-1-drain uid=job-1'), done.calls.join('\n'));
  const running = await run('Suspended');
  assert.equal(running.replicas, 1, 'a drainer still at work holds its ordinal');
  assert.ok(!running.calls.some((x) => x.startsWith('delete Job')), running.calls.join('\n'));
});

void test('scale-up 1 → 3 over a failed drainer (S3 was down): its Job is deleted and the StatefulSet goes to 3, unless a pod of it is alive', async () => {
  const e = endpoint(
    'clicks',
    { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas: 3 },
    { resourceVersion: '7', creationTimestamp: '2026-01-01T00:00:00Z', finalizers: ['landfall.dev/drain'] },
  );
  const claim = (n: number) =>
    ({
      metadata: { name: `data-clicks-ingest-${n}`, namespace: 'tenant-a', uid: `claim-${n}`, labels: { 'landfall.dev/endpoint': 'clicks', 'landfall.dev/endpoint-uid': 'uid-clicks' } },
      status: { phase: 'Bound' },
    }) as KubeObject; // prettier-ignore
  const failedJob = {
    metadata: { name: 'data-clicks-ingest-1-drain', namespace: 'tenant-a', uid: 'job-1', ownerReferences: [{ kind: 'PersistentVolumeClaim', name: 'data-clicks-ingest-1', uid: 'claim-1', controller: true }] },
    status: { failed: 4, conditions: [{ type: 'Failed', status: 'True', reason: 'BackoffLimitExceeded' }] },
  } as KubeObject; // prettier-ignore
  const drainerPod = (phase: string) =>
    ({ metadata: { name: `data-clicks-ingest-1-drain-${phase}`, labels: { 'landfall.dev/drainer-endpoint': 'clicks', 'landfall.dev/drainer-claim': 'data-clicks-ingest-1' } }, status: { phase } }) as KubeObject; // prettier-ignore
  const run = async (drainerPods: KubeObject[]) => {
    const f = fakeClient(
      undefined,
      new Map(),
      new Map([
        ['PersistentVolumeClaim', [claim(0), claim(1)]],
        ['Job', [failedJob]],
        ['Pod', drainerPods],
      ]),
    );
    const { c, events } = controller(f.client, e, undefined, { statefulSets: store([ownStatefulSet(e, 1)]) });
    await c.reconcile('tenant-a/clicks');
    const sts = f.applied.find((o) => o.kind === 'StatefulSet') as V1StatefulSet | undefined;
    return { replicas: sts?.spec?.replicas, calls: f.calls, events };
  };
  const free = await run([drainerPod('Failed'), drainerPod('Failed')]);
  assert.equal(free.replicas, 3, 'nothing holds ordinal 1 any more: the pod delivers the WAL itself');
  assert.ok(free.calls.includes('delete Job data-clicks-ingest-1-drain uid=job-1'), free.calls.join('\n'));
  assert.ok(
    free.events.some((x) => /^Normal DrainerDeleted: drainer Job data-clicks-ingest-1-drain failed \(BackoffLimitExceeded\)/.test(x)),
    free.events.join('\n'),
  ); // prettier-ignore
  const held = await run([drainerPod('Failed'), drainerPod('Running')]);
  assert.equal(held.replicas, 1, 'a pod of the failed Job still runs on the volume: held');
  assert.ok(!held.calls.some((x) => x.startsWith('delete Job')), held.calls.join('\n'));
});

void test('one writer per WAL: a drainer pod alive after its Job was deleted (background) holds the scale-up and starts no second drainer', async () => {
  const claim = (n: number) =>
    ({
      metadata: { name: `data-clicks-ingest-${n}`, namespace: 'tenant-a', uid: `claim-${n}`, labels: { 'landfall.dev/endpoint': 'clicks', 'landfall.dev/endpoint-uid': 'uid-clicks' } },
      status: { phase: 'Bound' },
    }) as KubeObject; // prettier-ignore
  // `kubectl delete job data-clicks-ingest-1-drain`: the Job is gone, its pod is still terminating.
  const oldDrainer = (phase: string, deleting = true) =>
    ({ metadata: { name: `data-clicks-ingest-1-drain-${phase}`, labels: { 'landfall.dev/drainer-endpoint': 'clicks', 'landfall.dev/drainer-claim': 'data-clicks-ingest-1' }, ...(deleting ? { deletionTimestamp: '2026-01-03T00:00:00Z' } : {}) }, status: { phase } }) as KubeObject; // prettier-ignore
  const run = async (replicas: number, pods: KubeObject[]) => {
    const e = endpoint('clicks', { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas },
      { resourceVersion: '7', creationTimestamp: '2026-01-01T00:00:00Z', finalizers: ['landfall.dev/drain'] }); // prettier-ignore
    const f = fakeClient(undefined, new Map(), new Map([
      ['PersistentVolumeClaim', [claim(0), claim(1)]],
      ['Job', []],
      ['Pod', pods],
    ])); // prettier-ignore
    const { c } = controller(f.client, e, undefined, { statefulSets: store([ownStatefulSet(e, 1)]) });
    await c.reconcile('tenant-a/clicks');
    const sts = f.applied.find((o) => o.kind === 'StatefulSet') as V1StatefulSet | undefined;
    return { replicas: sts?.spec?.replicas, calls: f.calls, statuses: f.statuses };
  };
  const up = await run(3, [oldDrainer('Running')]);
  assert.equal(up.replicas, 1, 'ordinal 1 stays reclaiming while the old drainer pod is alive');
  assert.match(JSON.stringify(up.statuses.at(-1)), /ordinal 1: 1 drainer pod\(s\) of data-clicks-ingest-1 still alive though its Job is gone/); // prettier-ignore
  assert.equal(
    (await run(3, [oldDrainer('Succeeded', false)])).replicas,
    3,
    'a finished drainer pod holds nothing',
  );
  const reclaim = await run(1, [oldDrainer('Running')]);
  assert.ok(!reclaim.calls.some((x) => x.startsWith('create Job')), reclaim.calls.join('\n'));
  assert.match(JSON.stringify(reclaim.statuses.at(-1)), /drainer pod\(s\) still alive though Job data-clicks-ingest-1-drain is gone/); // prettier-ignore
  const after = await run(1, [oldDrainer('Failed', false)]);
  assert.ok(
    after.calls.includes('create Job data-clicks-ingest-1-drain'),
    'once it ended, a new drainer starts',
  );
});

void test('a drainer is started with its PodDisruptionBudget applied before its Job', async () => {
  const e = endpoint(
    'clicks',
    { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas: 1 },
    { resourceVersion: '7', creationTimestamp: '2026-01-01T00:00:00Z', finalizers: ['landfall.dev/drain'] },
  );
  const claim = {
    metadata: { name: 'data-clicks-ingest-1', namespace: 'tenant-a', uid: 'claim-1', labels: { 'landfall.dev/endpoint': 'clicks', 'landfall.dev/endpoint-uid': 'uid-clicks' } },
    status: { phase: 'Bound' },
  } as KubeObject; // prettier-ignore
  const f = fakeClient(undefined, new Map(), new Map([['PersistentVolumeClaim', [claim]]]));
  const { c } = controller(f.client, e, undefined, { statefulSets: store([ownStatefulSet(e, 1)]) });
  await c.reconcile('tenant-a/clicks');
  const pdbAt = f.calls.indexOf('apply PodDisruptionBudget data-clicks-ingest-1-drain');
  const jobAt = f.calls.indexOf('create Job data-clicks-ingest-1-drain');
  assert.ok(pdbAt >= 0 && jobAt >= 0 && pdbAt < jobAt, f.calls.join('\n'));
  const pdb = f.applied.find((o) => o.kind === 'PodDisruptionBudget' && o.metadata?.name === 'data-clicks-ingest-1-drain') as V1PodDisruptionBudget; // prettier-ignore
  assert.deepEqual(
    pdb.metadata?.ownerReferences?.map((r) => r.uid),
    ['claim-1'],
    'owned by the claim, like the Job',
  );
});

void test('namespace deletion: claims deleted under the finalizer before any drainer ran are a Warning each, and the finalizer is released without "Drained"', async () => {
  const e = endpoint(
    'clicks',
    { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas: 2 },
    { resourceVersion: '7', creationTimestamp: '2026-01-01T00:00:00Z', deletionTimestamp: '2026-01-03T00:00:00Z', finalizers: ['landfall.dev/drain'] },
  ); // prettier-ignore
  const claim = (n: number) =>
    ({
      metadata: {
        name: `data-clicks-ingest-${n}`, namespace: 'tenant-a', uid: `claim-${n}`,
        labels: { 'landfall.dev/endpoint': 'clicks', 'landfall.dev/endpoint-uid': 'uid-clicks' },
        deletionTimestamp: '2026-01-03T00:00:01Z', // the namespace controller's delete
      },
      status: { phase: 'Bound' },
    }) as KubeObject; // prettier-ignore
  const lists = new Map<string, KubeObject[]>([['PersistentVolumeClaim', [claim(0), claim(1)]]]);
  const f = fakeClient(undefined, new Map(), lists);
  const { c, events } = controller(f.client, e);
  await c.reconcile('tenant-a/clicks');
  assert.deepEqual(
    events.filter((x) => x.startsWith('Warning VolumeDeletedUndrained')).map((x) => x.split(' ')[2]),
    ['data-clicks-ingest-0', 'data-clicks-ingest-1'],
    events.join('\n'),
  );
  assert.ok(f.calls.includes('mergePatch Endpoint clicks'), 'the ledger is kept on the Endpoint');
  lists.set('PersistentVolumeClaim', []); // pvc-protection let them go: the volumes are released
  await c.reconcile('tenant-a/clicks');
  assert.ok(!f.calls.some((x) => x.startsWith('create Job')), 'no drainer could run');
  assert.ok(!events.some((x) => x.startsWith('Normal Drained')), events.join('\n'));
  assert.match(events.at(-1) ?? '', /^Warning VolumeDeletedUndrained: every replica drained, but 2 volume\(s\) were deleted before their drainer succeeded .*data-clicks-ingest-0, data-clicks-ingest-1; releasing the finalizer/); // prettier-ignore
  assert.equal(f.calls.filter((x) => x === 'jsonPatch Endpoint').length, 1, 'the finalizer is released');
});

void test("namespace deletion: a claim kept by a failed drainer, deleted before the finalizer's first poll, is reported undrained (the ledger knew it before the deletion)", async () => {
  const live = endpoint('clicks', { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas: 1 },
    { resourceVersion: '7', creationTimestamp: '2026-01-01T00:00:00Z', finalizers: ['landfall.dev/drain'] }); // prettier-ignore
  const claim = (n: number) =>
    ({
      metadata: { name: `data-clicks-ingest-${n}`, namespace: 'tenant-a', uid: `claim-${n}`, labels: { 'landfall.dev/endpoint': 'clicks', 'landfall.dev/endpoint-uid': 'uid-clicks' } },
      status: { phase: 'Bound' },
    }) as KubeObject; // prettier-ignore
  const failed = {
    metadata: { name: 'data-clicks-ingest-1-drain', namespace: 'tenant-a', uid: 'job-1', ownerReferences: [{ kind: 'PersistentVolumeClaim', name: 'data-clicks-ingest-1', uid: 'claim-1', controller: true }] },
    status: { conditions: [{ type: 'Failed', status: 'True', reason: 'BackoffLimitExceeded' }] },
  } as KubeObject; // prettier-ignore
  // Normal life: ordinal 1 was scaled down, its drainer failed (S3 down): the claim is kept.
  const lists = new Map<string, KubeObject[]>([
    ['PersistentVolumeClaim', [claim(0), claim(1)]],
    ['Job', [failed]],
  ]);
  const f = fakeClient(undefined, new Map(), lists);
  const eps = store([live as Endpoint & KubeObject]);
  const a = controller(f.client, live, undefined, {
    endpoints: eps,
    statefulSets: store([ownStatefulSet(live, 1)]),
  });
  await a.c.reconcile('tenant-a/clicks');
  assert.ok(
    a.events.some((x) => x.startsWith('Warning DrainerBlocked')),
    a.events.join('\n'),
  );
  assert.deepEqual(JSON.parse(eps.items[0]?.metadata.annotations?.['landfall.dev/wal-claims'] ?? '{}'), {
    'data-clicks-ingest-1/claim-1': 'pending',
  });
  const writes = () => f.calls.filter((x) => x.startsWith('mergePatch Endpoint')).length;
  assert.equal(writes(), 1);
  await a.c.reconcile('tenant-a/clicks');
  assert.equal(writes(), 1, 'written once per claim, not per poll');
  // kubectl delete namespace: the claim no pod uses is deleted before the first finalize poll.
  const dying = { ...live, metadata: { ...live.metadata, deletionTimestamp: '2026-01-03T00:00:00Z' } };
  lists.set('PersistentVolumeClaim', []);
  lists.set('Job', []);
  const b = controller(f.client, dying);
  await b.c.reconcile('tenant-a/clicks');
  assert.ok(
    b.events.some((x) => x.startsWith('Warning VolumeDeletedUndrained: data-clicks-ingest-1 was deleted')),
    b.events.join('\n'),
  );
  assert.ok(!b.events.some((x) => x.startsWith('Normal Drained')), b.events.join('\n'));
});

void test('scale-up: a claim handed back to its pod leaves the ledger; one still held stays pending', async () => {
  const ledger = { 'data-clicks-ingest-1/claim-1': 'pending', 'data-clicks-ingest-2/claim-2': 'pending' };
  const e = endpoint('clicks', { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas: 3 },
    { resourceVersion: '7', creationTimestamp: '2026-01-01T00:00:00Z', finalizers: ['landfall.dev/drain'], annotations: { 'landfall.dev/wal-claims': JSON.stringify(ledger) } }); // prettier-ignore
  const claim = (n: number) =>
    ({
      metadata: { name: `data-clicks-ingest-${n}`, namespace: 'tenant-a', uid: `claim-${n}`, labels: { 'landfall.dev/endpoint': 'clicks', 'landfall.dev/endpoint-uid': 'uid-clicks' } },
      status: { phase: 'Bound' },
    }) as KubeObject; // prettier-ignore
  // Ordinal 1's drainer failed and is dead (its Job goes); ordinal 2's still runs.
  const job = (n: number, status: object) =>
    ({ metadata: { name: `data-clicks-ingest-${n}-drain`, namespace: 'tenant-a', uid: `job-${n}`, ownerReferences: [{ kind: 'PersistentVolumeClaim', name: `data-clicks-ingest-${n}`, uid: `claim-${n}`, controller: true }] }, status }) as KubeObject; // prettier-ignore
  const f = fakeClient(undefined, new Map(), new Map([
    ['PersistentVolumeClaim', [claim(0), claim(1), claim(2)]],
    ['Job', [job(1, { conditions: [{ type: 'Failed', status: 'True', reason: 'DeadlineExceeded' }] }), job(2, { active: 1 })]],
  ])); // prettier-ignore
  const eps = store([e as Endpoint & KubeObject]);
  const { c } = controller(f.client, e, undefined, {
    endpoints: eps,
    statefulSets: store([ownStatefulSet(e, 1)]),
  });
  await c.reconcile('tenant-a/clicks');
  const sts = f.applied.find((o) => o.kind === 'StatefulSet') as V1StatefulSet | undefined;
  assert.equal(sts?.spec?.replicas, 2);
  assert.deepEqual(JSON.parse(eps.items[0]?.metadata.annotations?.['landfall.dev/wal-claims'] ?? '{}'), {
    'data-clicks-ingest-2/claim-2': 'pending',
  });
});

void test('deletion: a claim the operator drained and deleted itself is "Drained", also while terminating', async () => {
  const e = endpoint(
    'clicks',
    { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas: 1 },
    { resourceVersion: '7', creationTimestamp: '2026-01-01T00:00:00Z', deletionTimestamp: '2026-01-03T00:00:00Z', finalizers: ['landfall.dev/drain'] },
  ); // prettier-ignore
  const claim = (deleting: boolean) =>
    ({
      metadata: {
        name: 'data-clicks-ingest-0', namespace: 'tenant-a', uid: 'claim-0',
        labels: { 'landfall.dev/endpoint': 'clicks', 'landfall.dev/endpoint-uid': 'uid-clicks' },
        ...(deleting ? { deletionTimestamp: '2026-01-03T00:01:00Z' } : {}),
      },
      status: { phase: 'Bound' },
    }) as KubeObject; // prettier-ignore
  const done = {
    metadata: { name: 'data-clicks-ingest-0-drain', namespace: 'tenant-a', uid: 'job-0', ownerReferences: [{ kind: 'PersistentVolumeClaim', name: 'data-clicks-ingest-0', uid: 'claim-0', controller: true }] },
    status: { conditions: [{ type: 'Complete', status: 'True' }] },
  } as KubeObject; // prettier-ignore
  const lists = new Map<string, KubeObject[]>([
    ['PersistentVolumeClaim', [claim(false)]],
    ['Job', [done]],
  ]);
  const f = fakeClient(undefined, new Map(), lists);
  const { c, events } = controller(f.client, e);
  await c.reconcile('tenant-a/clicks');
  const deleted = f.calls.indexOf('delete PersistentVolumeClaim data-clicks-ingest-0 uid=claim-0');
  assert.ok(deleted > 0, f.calls.join('\n'));
  assert.equal(f.calls[deleted - 1], 'mergePatch Endpoint clicks', 'recorded drained just before the delete');
  lists.set('PersistentVolumeClaim', [claim(true)]); // pvc-protection: terminating a while; its Job deleted
  lists.set('Job', []);
  await c.reconcile('tenant-a/clicks');
  lists.set('PersistentVolumeClaim', []);
  await c.reconcile('tenant-a/clicks');
  assert.ok(!events.some((x) => x.startsWith('Warning VolumeDeletedUndrained')), events.join('\n'));
  assert.match(
    events.at(-1) ?? '',
    /^Normal Drained: every replica drained and every volume drained and deleted/,
  );
});

void test('deletion: a terminating claim whose drainer succeeds between two polls of the finalizer is "Drained": recorded before its Job is deleted', async () => {
  const e = endpoint('clicks', { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas: 1 },
    { resourceVersion: '7', creationTimestamp: '2026-01-01T00:00:00Z', deletionTimestamp: '2026-01-03T00:00:00Z', finalizers: ['landfall.dev/drain'] }); // prettier-ignore
  // kubectl delete pvc while its drainer runs: pvc-protection keeps the claim for the drainer pod.
  const terminating = {
    metadata: { name: 'data-clicks-ingest-0', namespace: 'tenant-a', uid: 'claim-0', deletionTimestamp: '2026-01-03T00:00:30Z', labels: { 'landfall.dev/endpoint': 'clicks', 'landfall.dev/endpoint-uid': 'uid-clicks' } },
    status: { phase: 'Bound' },
  } as KubeObject; // prettier-ignore
  const job = (status: object) =>
    ({ metadata: { name: 'data-clicks-ingest-0-drain', namespace: 'tenant-a', uid: 'job-0', ownerReferences: [{ kind: 'PersistentVolumeClaim', name: 'data-clicks-ingest-0', uid: 'claim-0', controller: true }] }, status }) as KubeObject; // prettier-ignore
  const lists = new Map<string, KubeObject[]>([['PersistentVolumeClaim', [terminating]], ['Job', [job({ active: 1 })]]]); // prettier-ignore
  const f = fakeClient(undefined, new Map(), lists);
  let jobLists = 0;
  const listAll = f.client.listAll.bind(f.client);
  f.client.listAll = async (rt: ResourceType, o?: Parameters<typeof listAll>[1]) => {
    // The finalizer's account (step 0) sees it running; the reclaim (step 3) sees it done.
    if (rt.kind === 'Job' && ++jobLists === 2) lists.set('Job', [job({ conditions: [{ type: 'Complete', status: 'True' }] })]); // prettier-ignore
    return listAll(rt, o);
  };
  const { c, events } = controller(f.client, e);
  await c.reconcile('tenant-a/clicks');
  const deleted = f.calls.indexOf('delete Job data-clicks-ingest-0-drain uid=job-0');
  assert.ok(deleted > 0, f.calls.join('\n'));
  assert.match(f.calls[deleted - 1] ?? '', /^mergePatch Endpoint clicks$/, 'recorded drained just before');
  lists.set('Job', []); // deleted
  await c.reconcile('tenant-a/clicks');
  lists.set('PersistentVolumeClaim', []); // pvc-protection let it go
  await c.reconcile('tenant-a/clicks');
  assert.ok(!events.some((x) => x.startsWith('Warning VolumeDeletedUndrained')), events.join('\n'));
  assert.match(events.at(-1) ?? '', /^Normal Drained: /);
});

void test('deletion: a ledger computed from a stale Endpoint is refused (409 on its resourceVersion) and retried quietly, never turning "drained" into "undrained"', async () => {
  const e = endpoint('clicks', { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas: 1 },
    { resourceVersion: '7', creationTimestamp: '2026-01-01T00:00:00Z', deletionTimestamp: '2026-01-03T00:00:00Z', finalizers: ['landfall.dev/drain'] }); // prettier-ignore
  const claim = (deleting: boolean) =>
    ({ metadata: { name: 'data-clicks-ingest-0', namespace: 'tenant-a', uid: 'claim-0', labels: { 'landfall.dev/endpoint': 'clicks', 'landfall.dev/endpoint-uid': 'uid-clicks' }, ...(deleting ? { deletionTimestamp: '2026-01-03T00:01:00Z' } : {}) }, status: { phase: 'Bound' } }) as KubeObject; // prettier-ignore
  const done = {
    metadata: { name: 'data-clicks-ingest-0-drain', namespace: 'tenant-a', uid: 'job-0', ownerReferences: [{ kind: 'PersistentVolumeClaim', name: 'data-clicks-ingest-0', uid: 'claim-0', controller: true }] },
    status: { conditions: [{ type: 'Complete', status: 'True' }] },
  } as KubeObject; // prettier-ignore
  const lists = new Map<string, KubeObject[]>([
    ['PersistentVolumeClaim', [claim(false)]],
    ['Job', [done]],
  ]);
  const f = fakeClient(undefined, new Map(), lists);
  // The apiserver: a merge patch with metadata.resourceVersion is refused unless it is the current one.
  let rv = 7;
  const server: string[] = [];
  f.client.mergePatch = async <T extends KubeObject>(_rt: ResourceType, _ns: string | undefined, _name: string, body: unknown) => {
    const m = (body as { metadata: { resourceVersion?: string; annotations: Record<string, string> } }).metadata;
    if (m.resourceVersion !== undefined && m.resourceVersion !== String(rv)) throw new KubeApiError(409, 'the object has been modified', 'Conflict', {});
    rv++;
    server.push(m.annotations['landfall.dev/wal-claims'] ?? '');
    return { metadata: { resourceVersion: String(rv) } } as T;
  }; // prettier-ignore
  const eps = store([e as Endpoint & KubeObject]);
  const { c, events } = controller(f.client, e, undefined, { endpoints: eps });
  await c.reconcile('tenant-a/clicks'); // pending (rv 8), then drained (rv 9) before the claim is deleted
  assert.deepEqual(server, [
    '{"data-clicks-ingest-0/claim-0":"pending"}',
    '{"data-clicks-ingest-0/claim-0":"drained"}',
  ]);
  // The informer's cache replaced by the older watch event (rv 8, "pending").
  const stale = { ...e, metadata: { ...e.metadata, resourceVersion: '8', annotations: { 'landfall.dev/wal-claims': server[0] ?? '' } } }; // prettier-ignore
  eps.items[0] = stale;
  lists.set('PersistentVolumeClaim', [claim(true)]);
  lists.set('Job', []);
  assert.deepEqual(await c.reconcile('tenant-a/clicks'), { requeueAfterMs: 1000 }, 'refused, retried soon');
  assert.equal(server.length, 2, 'the stale write is refused');
  assert.ok(!events.some((x) => x.startsWith('Warning')), events.join('\n'));
  // The cache catches up (rv 9, "drained"): nothing to write, and the end is "Drained".
  eps.items[0] = { ...e, metadata: { ...e.metadata, resourceVersion: '9', annotations: { 'landfall.dev/wal-claims': server[1] ?? '' } } }; // prettier-ignore
  await c.reconcile('tenant-a/clicks');
  lists.set('PersistentVolumeClaim', []);
  await c.reconcile('tenant-a/clicks');
  assert.ok(!events.some((x) => x.startsWith('Warning VolumeDeletedUndrained')), events.join('\n'));
  assert.match(events.at(-1) ?? '', /^Normal Drained: /);
});

void test('a replica left in drain mode that nothing drains gets DELETE /v1/drain; one on a leaving node, past the replicas or whose claim goes does not', async () => {
  const e = endpoint(
    'clicks',
    { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas: 2 },
    { resourceVersion: '7', finalizers: ['landfall.dev/drain'] },
  );
  const pod = (n: number, node: string, ready = false) =>
    ({
      metadata: { name: `clicks-ingest-${n}`, namespace: 'tenant-a', uid: `pod-${n}`, labels: { 'landfall.dev/endpoint': 'clicks' } },
      spec: { nodeName: node, containers: [] },
      status: { phase: 'Running', podIP: `10.0.0.${n}`, conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
    }) as V1Pod & KubeObject; // prettier-ignore
  const node = (name: string, unschedulable = false) =>
    ({ metadata: { name }, spec: { unschedulable } }) as V1Node & KubeObject;
  const run = async (pods: (V1Pod & KubeObject)[], existing = new Map<string, KubeObject>()) => {
    const f = fakeClient(undefined, existing);
    const undrained: string[] = [];
    const { c, events } = controller(f.client, e, undefined, {
      pods: store(pods),
      // Every replica asked reports drain mode.
      probe: async () => ({ openSegmentBytes: 0, sealedSegments: 0, segmentsPending: 0, draining: true }),
      drainControl: {
        drain: async () => assert.fail('nothing is drained here'),
        undrain: async (url) => void undrained.push(url),
      },
      nodes: {
        getByKey: (name) => (name === 'cordoned' ? node(name, true) : node(name)),
        list: () => [],
      },
    });
    await c.reconcile('tenant-a/clicks');
    return { undrained, events: events.filter((x) => /DrainReleased/.test(x)) };
  };
  // Cordoned then uncordoned mid-drain (or a scale-down reverted after a crash): released.
  const stray = await run([pod(0, 'a')]);
  assert.deepEqual(stray.undrained, ['http://10.0.0.0:8081']);
  assert.match(stray.events[0] ?? '', /clicks-ingest-0 was in drain mode/);
  // Ready: not in drain mode (it would fail /readyz): not even asked.
  assert.deepEqual((await run([pod(0, 'a', true)])).undrained, []);
  // On a leaving node: the node-drain flow's. Ordinal 2 >= 2 replicas: the scale-down's.
  assert.deepEqual((await run([pod(0, 'cordoned'), pod(2, 'a')])).undrained, []);
  // Its claim is being deleted: a node drain is replacing it.
  const deleting = new Map<string, KubeObject>([
    ['PersistentVolumeClaim data-clicks-ingest-0', { metadata: { name: 'data-clicks-ingest-0', deletionTimestamp: '2026-01-01T00:00:00Z' } }],
  ]); // prettier-ignore
  assert.deepEqual((await run([pod(0, 'a')], deleting)).undrained, []);
});

void test('deletion: drainers started without the View files (compiler down) are a warning in the log and an Event, not a debug line', async () => {
  const e = endpoint(
    'clicks',
    { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas: 1 },
    {
      resourceVersion: '7',
      creationTimestamp: '2026-01-01T00:00:00Z',
      deletionTimestamp: '2026-01-03T00:00:00Z',
      finalizers: ['landfall.dev/drain'],
    },
  );
  const view = {
    apiVersion: 'landfall.dev/v1alpha1',
    kind: 'View',
    metadata: { name: 'page-views', namespace: 'tenant-a', uid: 'view-1', generation: 1 },
    spec: { endpointRef: { name: 'clicks' } },
  } as unknown as View & KubeObject;
  const claim = {
    metadata: { name: 'data-clicks-ingest-0', namespace: 'tenant-a', uid: 'claim-0', labels: { 'landfall.dev/endpoint': 'clicks', 'landfall.dev/endpoint-uid': 'uid-clicks' } },
    status: { phase: 'Bound' },
  } as KubeObject; // prettier-ignore
  const f = fakeClient(undefined, new Map(), new Map([['PersistentVolumeClaim', [claim]]]));
  const warnings: string[] = [];
  const { c, events } = controller(f.client, e, undefined, {
    views: store([view]),
    compileCache: new ViewCompileCache(async () => {
      throw new Error('compiler down');
    }),
    log: { ...silentLogger, warn: (_o, msg) => void warnings.push(msg ?? ''), child: function () { return this; } },
  }); // prettier-ignore
  await c.reconcile('tenant-a/clicks');
  assert.ok(f.calls.includes('create Job data-clicks-ingest-0-drain'), f.calls.join('\n'));
  assert.ok(
    events.some((x) => /^Warning DrainerWithoutViews: .*compiler down.*without their View outputs/.test(x)),
    events.join('\n'),
  );
  assert.equal(warnings.length, 1);
});

/** A same-named object of someone else's: no controller owner reference, or another one's. */
const notOurs = (name: string, owner?: string): KubeObject => ({
  metadata: {
    name,
    namespace: 'tenant-a',
    uid: 'theirs',
    ...(owner ? { ownerReferences: [{ kind: 'Endpoint', name: 'x', uid: owner, controller: true }] } : {}),
  },
});

void test('ownership: a same-named ServiceAccount, ConfigMap, Service, PDB or StatefulSet the Endpoint does not control is left untouched and reported', async () => {
  const children = [
    'ServiceAccount clicks-ingest',
    'ConfigMap clicks-ingest-views',
    'ConfigMap clicks-ingest',
    'Service clicks-ingest-headless',
    'Service clicks-ingest',
    // Only in a live read: the informer's label-selected cache does not have it.
    'StatefulSet clicks-ingest',
    'PodDisruptionBudget clicks-ingest',
  ];
  for (const child of children)
    for (const owner of [undefined, 'uid-of-another-team']) {
      const name = child.split(' ')[1] ?? '';
      const f = fakeClient(undefined, new Map([[child, notOurs(name, owner)]]));
      const { c, events } = controller(f.client, ep());
      // A StatefulSet of another Endpoint (a deleted namesake) keeps its own reason: PreviousStatefulSet.
      const previous = child.startsWith('StatefulSet') && owner !== undefined;
      const reason = previous ? 'PreviousStatefulSet' : 'OwnershipConflict';
      const message = previous
        ? `${child} belongs to another Endpoint`
        : `${child} exists and does not belong to this Endpoint`;
      await assert.rejects(c.reconcile('tenant-a/clicks'), new RegExp(message), child);
      assert.ok(!f.calls.includes(`apply ${child}`), `${child} not applied: ${f.calls.join(', ')}`);
      // Nothing runs on a foreign ServiceAccount or behind a foreign Service.
      if (child !== 'PodDisruptionBudget clicks-ingest')
        assert.ok(!f.calls.includes('apply StatefulSet clicks-ingest'), `${child}: ${f.calls.join(', ')}`);
      const status = f.statuses.at(-1) as { conditions: { type: string; reason: string; message: string }[] };
      const degraded = status.conditions.find((x) => x.type === 'Degraded');
      assert.equal(degraded?.reason, reason, child);
      assert.match(degraded?.message ?? '', new RegExp(message));
      assert.ok(
        events.some((e) => e.startsWith('Warning ReconcileFailed:') && e.includes(message)),
        events.join('\n'),
      );
    }
});

void test('ownership: children the Endpoint controls are still applied (forced over edits)', async () => {
  const e = ep();
  const ours = (name: string): KubeObject => ({
    metadata: {
      name,
      namespace: 'tenant-a',
      uid: `u-${name}`,
      ownerReferences: [{ kind: 'Endpoint', name: 'clicks', uid: e.metadata.uid ?? '', controller: true }],
    },
  });
  const children = [
    'ServiceAccount clicks-ingest',
    'ConfigMap clicks-ingest-views',
    'ConfigMap clicks-ingest',
    'Service clicks-ingest-headless',
    'Service clicks-ingest',
    'StatefulSet clicks-ingest',
    'PodDisruptionBudget clicks-ingest',
  ];
  const f = fakeClient(undefined, new Map(children.map((k) => [k, ours(k.split(' ')[1] ?? '')])));
  const { c } = controller(f.client, e);
  await c.reconcile('tenant-a/clicks');
  for (const child of children)
    assert.ok(f.calls.includes(`apply ${child}`), `${child}: ${f.calls.join(', ')}`);
  const status = f.statuses.at(-1) as { conditions: { type: string; status: string }[] };
  assert.notEqual(status.conditions.find((x) => x.type === 'Degraded')?.status, 'True');
});

void test('ownership: a drainer is not started over a same-named ServiceAccount, ConfigMap or PDB its claim does not control', async () => {
  const e = endpoint(
    'clicks',
    { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas: 1 },
    { resourceVersion: '7', creationTimestamp: '2026-01-01T00:00:00Z', finalizers: ['landfall.dev/drain'] },
  );
  const claim = {
    metadata: { name: 'data-clicks-ingest-1', namespace: 'tenant-a', uid: 'claim-1', labels: { 'landfall.dev/endpoint': 'clicks', 'landfall.dev/endpoint-uid': 'uid-clicks' } },
    status: { phase: 'Bound' },
  } as KubeObject; // prettier-ignore
  for (const kind of ['ServiceAccount', 'ConfigMap', 'PodDisruptionBudget']) {
    const child = `${kind} data-clicks-ingest-1-drain`;
    const f = fakeClient(
      undefined,
      new Map([[child, notOurs('data-clicks-ingest-1-drain')]]),
      new Map([['PersistentVolumeClaim', [claim]]]),
    );
    const { c, events } = controller(f.client, e, undefined, { statefulSets: store([ownStatefulSet(e, 1)]) });
    await c.reconcile('tenant-a/clicks');
    assert.ok(!f.calls.includes(`apply ${child}`), `${child}: ${f.calls.join(', ')}`);
    assert.ok(!f.calls.includes('create Job data-clicks-ingest-1-drain'), `${child}: ${f.calls.join(', ')}`);
    assert.ok(
      events.some((x) => x.startsWith('Warning DrainerBlocked:') && x.includes(`${child} exists`)),
      events.join('\n'),
    );
  }
});
