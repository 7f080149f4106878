// Scale-down and volume reclaim decisions (controller/lifecycle.ts) and the
// drainer Job builder (model/drainer.ts): pure functions, no I/O; and a few
// reconciles of the Endpoint controller against a fake client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Job, V1PersistentVolumeClaim, V1Pod, V1StatefulSet } from '@kubernetes/client-node';
import { planScale, reclaimAction, ownClaims, scaleUpClaim } from '../src/controller/lifecycle.ts';
import { EndpointController } from '../src/controller/endpoint.ts';
import type { Store } from '../src/controller/endpoint.ts';
import { ViewCompileCache } from '../src/controller/views.ts';
import type { Endpoint } from '../src/api/endpoint.ts';
import type { View } from '../src/api/view.ts';
import type { KubeClient, KubeObject, ResourceType } from '../src/runtime/kube.ts';
import { silentLogger } from '../src/runtime/log.ts';
import type { ReplicaDrain } from '../src/controller/lifecycle.ts';
import { buildDrainerJob, drainerOutcome } from '../src/model/drainer.ts';
import { buildStatefulSet, terminationGracePeriodSeconds } from '../src/model/resources.ts';
import { drainerName } from '../src/model/names.ts';
import { ShutdownSchema } from '../../ingest-node/src/config/schema.ts';
import { endpoint } from './fixtures.ts';

const drained: ReplicaDrain = { kind: 'drained' };
const gone: ReplicaDrain = { kind: 'gone', why: 'pod Pending, no IP' };
const waiting = (why: string): ReplicaDrain => ({ kind: 'waiting', why });

void test('scale-down: the StatefulSet is lowered only past the ordinals that drained or cannot be asked', () => {
  const plan = (replicas: [number, ReplicaDrain][], drainFrom?: number) =>
    planScale({
      desired: 1,
      current: 4,
      drainFrom,
      replicas: new Map(replicas),
      reclaiming: [],
      undrainFailed: false,
    });
  assert.deepEqual(
    plan([
      [1, drained],
      [2, waiting('3 sealed segment(s) not delivered')],
      [3, drained],
    ]),
    { replicas: 3, drainFrom: 1, waiting: ['ordinal 2: 3 sealed segment(s) not delivered'] },
    'ordinal 3 may go, 2 holds the rest',
  );
  assert.deepEqual(
    plan([
      [1, drained],
      [2, gone],
      [3, drained],
    ]),
    { replicas: 1, drainFrom: 1, waiting: [] },
    'a pod that cannot be asked is not waited for (the drainer takes its volume)',
  );
  assert.equal(plan([[3, waiting('x')]]).replicas, 4, 'the highest waits: nothing goes yet');
});

void test('scale-up: a reverted scale-down drops the annotation; never over a volume a drainer holds', () => {
  const base = { drainFrom: 1, replicas: new Map<number, ReplicaDrain>(), undrainFailed: false };
  assert.deepEqual(planScale({ ...base, desired: 3, current: 3, reclaiming: [] }), {
    replicas: 3,
    drainFrom: undefined,
    waiting: [],
  });
  assert.deepEqual(
    planScale({ ...base, desired: 3, current: 3, reclaiming: [], undrainFailed: true }).drainFrom,
    1,
    'kept while a DELETE /v1/drain failed: retried on the next poll',
  );
  const up = planScale({ ...base, drainFrom: undefined, desired: 4, current: 1, reclaiming: [2, 3] });
  assert.equal(up.replicas, 2, 'ordinal 2 waits for its drainer');
  assert.match(up.waiting[0] ?? '', /ordinal 2: its volume is being drained by a drainer Job/);
});

const claim = (
  ordinal: number,
  phase: string,
  extra: Partial<NonNullable<V1PersistentVolumeClaim['metadata']>> = {},
): V1PersistentVolumeClaim => ({
  metadata: {
    name: `data-clicks-ingest-${ordinal}`,
    uid: `claim-uid-${ordinal}`,
    labels: { 'landfall.dev/endpoint-uid': 'uid-clicks' },
    creationTimestamp: new Date('2026-01-02T00:00:00Z'),
    ...extra,
  },
  status: { phase },
});

const job = (owner: string, condition?: string): V1Job => ({
  metadata: { name: 'x', ownerReferences: [{ apiVersion: 'v1', kind: 'PersistentVolumeClaim', name: 'c', uid: owner, controller: true }] },
  status: condition ? { conditions: [{ type: condition, status: 'True', reason: 'R', message: 'M' }] } : {},
}); // prettier-ignore

void test('scale-up: a failed drainer with no live pod gives the volume back; a running one, or a live pod, holds it', () => {
  const c = claim(1, 'Bound');
  const failed = (status: V1Job['status'] = {}): V1Job => {
    const j = job('claim-uid-1', 'Failed');
    return { ...j, status: { ...j.status, ...status } };
  };
  assert.equal(scaleUpClaim({ claim: c, job: undefined, livePods: 0 }).kind, 'free');
  assert.equal(scaleUpClaim({ claim: c, job: job('claim-uid-1'), livePods: 1 }).kind, 'held', 'running');
  assert.equal(
    scaleUpClaim({ claim: c, job: job('claim-uid-1', 'Complete'), livePods: 0 }).kind,
    'deleteJob',
  );
  const gone = scaleUpClaim({ claim: c, job: failed(), livePods: 0 });
  assert.equal(gone.kind, 'deleteJob', 'failed, nothing alive: the pod delivers the WAL itself');
  assert.match(gone.kind === 'deleteJob' ? gone.why : '', /failed \(R\) and none of its pods is alive/);
  assert.equal(scaleUpClaim({ claim: c, job: failed(), livePods: 1 }).kind, 'held', 'a pod of it still runs');
  assert.equal(scaleUpClaim({ claim: c, job: failed({ active: 1 }), livePods: 0 }).kind, 'held');
  assert.equal(scaleUpClaim({ claim: c, job: failed({ terminating: 1 }), livePods: 0 }).kind, 'held');
  const deleting = claim(1, 'Bound', { deletionTimestamp: new Date() });
  assert.equal(
    scaleUpClaim({ claim: deleting, job: undefined, livePods: 0 }).kind,
    'held',
    'the claim is going',
  );
});

function store<T extends KubeObject>(items: T[] = []): Store<T> {
  return {
    getByKey: (key) => items.find((o) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}` === key),
    list: () => items,
  };
}

/** An Endpoint controller over a fake client: what it applies, creates, deletes and records. */
function fakeController(input: {
  ep: Endpoint;
  statefulSets?: (V1StatefulSet & KubeObject)[];
  list: (kind: string) => KubeObject[];
  create?: (kind: string, obj: KubeObject) => KubeObject;
}) {
  const calls: string[] = [];
  const applied: KubeObject[] = [];
  const events: string[] = [];
  const client = {
    async apply(_rt: ResourceType, obj: KubeObject) {
      applied.push(obj);
      return { ...obj, metadata: { ...obj.metadata, resourceVersion: '1' } };
    },
    async jsonPatch(rt: ResourceType, _ns: string, _n: string, ops: unknown) {
      calls.push(`jsonPatch ${rt.kind} ${JSON.stringify(ops)}`);
      return {};
    },
    async mergePatch(rt: ResourceType, _ns: string, name: string, body: unknown) {
      calls.push(`mergePatch ${rt.kind} ${name} ${JSON.stringify(body)}`);
      return {};
    },
    async get() {
      return undefined;
    },
    async listAll(rt: ResourceType) {
      return { items: input.list(rt.kind), metadata: {} };
    },
    async create(rt: ResourceType, obj: KubeObject) {
      calls.push(`create ${rt.kind} ${obj.metadata?.name ?? ''}`);
      return input.create ? input.create(rt.kind, obj) : obj;
    },
    async delete(rt: ResourceType, _ns: string, name: string, opts?: unknown) {
      calls.push(`delete ${rt.kind} ${name} ${JSON.stringify(opts ?? {})}`);
    },
  } as unknown as KubeClient;
  const controller = new EndpointController({
    client,
    endpoints: store([input.ep as Endpoint & KubeObject]),
    views: store<View & KubeObject>(),
    statefulSets: store(input.statefulSets ?? []),
    pods: store<V1Pod & KubeObject>(),
    compileCache: new ViewCompileCache(async () => ({ ok: false, error: 'unused' })),
    events: { record: (_o, type, reason, message) => void events.push(`${type} ${reason}: ${message}`) },
    log: silentLogger,
    nodeImage: 'img',
    operatorKey: Buffer.alloc(32, 7),
    probe: async () => ({ openSegmentBytes: 0, sealedSegments: 0, segmentsPending: 0 }),
  });
  return { controller, calls, applied, events };
}

const ownedClaim = (n: number, extra: Record<string, unknown> = {}): KubeObject =>
  ({
    metadata: {
      name: `data-clicks-ingest-${n}`,
      namespace: 'tenant-a',
      uid: `claim-${n}`,
      labels: { 'landfall.dev/endpoint': 'clicks', 'landfall.dev/endpoint-uid': 'uid-clicks' },
      ...extra,
    },
    status: { phase: 'Bound' },
  }) as KubeObject;

void test('scale-up 1 → 3 over a failed drainer (S3 was down): its Job is deleted and the StatefulSet goes to 3', async () => {
  const ep = endpoint('clicks', { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas: 3 }, {
    resourceVersion: '7', creationTimestamp: '2026-01-01T00:00:00Z', finalizers: ['landfall.dev/drain'],
  }); // prettier-ignore
  const sts = {
    metadata: {
      name: 'clicks-ingest',
      namespace: 'tenant-a',
      ownerReferences: [{ apiVersion: 'landfall.dev/v1alpha1', kind: 'Endpoint', name: 'clicks', uid: 'uid-clicks', controller: true }], // prettier-ignore
    },
    spec: { replicas: 1, template: { metadata: { annotations: {} } } },
  } as unknown as V1StatefulSet & KubeObject;
  const failedJob = {
    metadata: {
      name: 'data-clicks-ingest-1-drain',
      uid: 'job-1',
      ownerReferences: [{ kind: 'PersistentVolumeClaim', name: 'data-clicks-ingest-1', uid: 'claim-1', controller: true }], // prettier-ignore
    },
    status: { failed: 4, conditions: [{ type: 'Failed', status: 'True', reason: 'BackoffLimitExceeded' }] },
  } as KubeObject;
  const run = async (drainerPods: KubeObject[]) => {
    const f = fakeController({
      ep,
      statefulSets: [sts],
      list: (kind) =>
        kind === 'PersistentVolumeClaim'
          ? [ownedClaim(0), ownedClaim(1)]
          : kind === 'Job'
            ? [failedJob]
            : kind === 'Pod'
              ? drainerPods
              : [],
    });
    await f.controller.reconcile('tenant-a/clicks');
    const applied = f.applied.find((o) => o.kind === 'StatefulSet') as V1StatefulSet | undefined;
    return { ...f, replicas: applied?.spec?.replicas };
  };
  const pod = (phase: string) => ({ metadata: { name: `data-clicks-ingest-1-drain-${phase}` }, status: { phase } }) as KubeObject; // prettier-ignore

  const free = await run([pod('Failed'), pod('Failed')]);
  assert.equal(free.replicas, 3, 'nothing holds ordinal 1 any more');
  assert.ok(
    free.calls.includes('delete Job data-clicks-ingest-1-drain {"preconditions":{"uid":"job-1"}}'),
    free.calls.join('\n'),
  );
  assert.ok(
    free.events.some((e) => /^Normal DrainerDeleted: drainer Job data-clicks-ingest-1-drain failed/.test(e)),
  );

  const held = await run([pod('Failed'), pod('Running')]);
  assert.equal(held.replicas, 1, 'a pod of the failed Job still runs on the volume: held');
  assert.ok(!held.calls.some((c) => c.startsWith('delete Job')));
});

void test('reclaim: a claim is deleted only after its drainer succeeded, and only with the uid label', () => {
  const c = claim(2, 'Bound');
  const act = (j: V1Job | undefined, labelled = true, podExists = false) =>
    reclaimAction({ claim: c, labelled, podExists, job: j }).kind;
  assert.equal(act(undefined, true, true), 'wait', 'the pod is still there: no drainer beside it');
  assert.equal(act(undefined), 'startDrainer');
  assert.equal(act(job('claim-uid-2')), 'wait', 'running');
  assert.equal(act(job('claim-uid-2', 'Failed')), 'blocked', 'failed: the claim is kept');
  assert.equal(act(job('claim-uid-2', 'Complete')), 'deleteClaim');
  assert.equal(act(job('claim-uid-2', 'Complete'), false), 'keep', 'unlabelled: never deleted');
  assert.equal(act(job('an-older-claim', 'Complete')), 'wait', "an earlier claim's Job proves nothing");
  assert.equal(reclaimAction({ claim: claim(2, 'Pending'), labelled: true, podExists: false, job: undefined }).kind, 'deleteClaim'); // prettier-ignore
  assert.equal(reclaimAction({ claim: claim(2, 'Lost'), labelled: true, podExists: false, job: undefined }).kind, 'blocked'); // prettier-ignore
  assert.equal(drainerOutcome(undefined), 'missing');
  // Deleted, its finished drainer pod would keep it (pvc-protection): the Job goes.
  const deleting = claim(2, 'Bound', { deletionTimestamp: new Date() });
  assert.equal(reclaimAction({ claim: deleting, labelled: true, podExists: false, job: job('claim-uid-2', 'Complete') }).kind, 'deleteJob'); // prettier-ignore
  assert.equal(reclaimAction({ claim: deleting, labelled: true, podExists: false, job: job('claim-uid-2') }).kind, 'wait', 'a running drainer is left to finish'); // prettier-ignore
});

void test("own claims: this uid, or unlabelled and younger than the Endpoint; never another Endpoint's", () => {
  const own = ownClaims({
    claims: [
      claim(0, 'Bound'),
      claim(1, 'Bound', { labels: { 'landfall.dev/endpoint-uid': 'uid-other' } }),
      claim(2, 'Bound', { labels: {} }),
      claim(3, 'Bound', { labels: {}, creationTimestamp: new Date('2025-01-01T00:00:00Z') }),
      { metadata: { name: 'data-clicks-ingest-x', labels: { 'landfall.dev/endpoint-uid': 'uid-clicks' } } },
    ],
    statefulSetName: 'clicks-ingest',
    uid: 'uid-clicks',
    endpointCreated: '2026-01-01T00:00:00Z',
  });
  assert.deepEqual(
    own.map((c) => [c.ordinal, c.labelled]),
    [
      [0, true],
      [2, false],
    ],
  );
});

void test('the drainer Job: the pod it replaces, on its node, self-sufficient, owned by the claim', () => {
  const ep = endpoint(
    'clicks',
    {
      s3: { bucket: 'acme-events' },
      apiKeySecretRef: { name: 'k' },
      credentials: { secretRef: { name: 'minio-creds' }, irsaRoleArn: 'arn:aws:iam::1:role/x' },
      podTemplate: { tolerations: [{ key: 'dedicated', operator: 'Exists' }] },
    },
    { creationTimestamp: new Date('2026-01-01T00:00:00Z') },
  ) as Parameters<typeof buildStatefulSet>[0];
  const c = claim(2, 'Bound', { annotations: { 'volume.kubernetes.io/selected-node': 'node-a' } });
  const d = buildDrainerJob({
    ep,
    claim: c,
    instance: 'clicks-ingest-2',
    nodeImage: 'img:1',
    views: [{ name: 'page_views', spec: { name: 'page_views', columns: [] }, specHash: 'h' }],
  });
  const owner = { apiVersion: 'v1', kind: 'PersistentVolumeClaim', name: 'data-clicks-ingest-2', uid: 'claim-uid-2', controller: true }; // prettier-ignore
  for (const o of [d.job, d.configMap, d.serviceAccount]) {
    assert.equal(o.metadata?.name, 'data-clicks-ingest-2-drain');
    assert.deepEqual(o.metadata?.ownerReferences, [owner], 'owned by the claim, never by the Endpoint');
  }
  assert.equal(
    d.serviceAccount.metadata?.annotations?.['eks.amazonaws.com/role-arn'],
    'arn:aws:iam::1:role/x',
  );
  assert.deepEqual(Object.keys(d.configMap.data ?? {}).sort(), ['config.json', 'page_views.yaml']);
  assert.doesNotMatch(d.configMap.data?.['config.json'] ?? '', /minio-creds|landfall-operator-status-key/);
  const spec = d.job.spec;
  assert.equal(spec?.backoffLimit, 3);
  assert.ok((spec?.activeDeadlineSeconds ?? 0) > 0);
  const pod = spec?.template.spec;
  assert.equal(pod?.restartPolicy, 'Never');
  assert.equal(pod?.serviceAccountName, 'data-clicks-ingest-2-drain');
  assert.deepEqual(
    pod?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms,
    [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: ['node-a'] }] }],
  );
  // Runs on its volume's node even while that node is cordoned or tainted for removal.
  assert.deepEqual(pod?.tolerations, [
    { key: 'node.kubernetes.io/unschedulable', operator: 'Exists', effect: 'NoSchedule' },
    { key: 'karpenter.sh/disrupted', operator: 'Exists', effect: 'NoSchedule' },
    { key: 'karpenter.sh/disruption', operator: 'Exists', effect: 'NoSchedule' },
    { key: 'ToBeDeletedByClusterAutoscaler', operator: 'Exists', effect: 'NoSchedule' },
    { key: 'dedicated', operator: 'Exists' },
  ]);
  assert.deepEqual(spec?.template.metadata?.annotations, {
    'karpenter.sh/do-not-disrupt': 'true',
    'cluster-autoscaler.kubernetes.io/safe-to-evict': 'false',
  });
  const labels = spec?.template.metadata?.labels ?? {};
  assert.equal(labels['app.kubernetes.io/component'], 'drainer', "never the StatefulSet's selector");
  assert.equal(labels['landfall.dev/endpoint'], undefined);
  const ctr = pod?.containers[0];
  assert.deepEqual(ctr?.args?.slice(0, 3), ['drain', '--config', '/etc/landfall/config/config.json']);
  const env = Object.fromEntries((ctr?.env ?? []).map((e) => [e.name, e.value ?? e.valueFrom]));
  assert.equal(env['LANDFALL_INSTANCE_ID'], 'clicks-ingest-2', "the replaced pod's instance id (S3 keys)");
  assert.deepEqual(env['AWS_ACCESS_KEY_ID'], { secretKeyRef: { name: 'minio-creds', key: 'accessKeyId' } });
  // Same user, same read-only root, and the claim where the StatefulSet mounts it.
  const sts = buildStatefulSet(ep, { nodeImage: 'img:1', views: [] }, 'h').spec?.template.spec;
  assert.deepEqual(pod?.securityContext, sts?.securityContext);
  assert.deepEqual(ctr?.securityContext, sts?.containers[0]?.securityContext);
  const dataMount = (mounts: { name: string; mountPath: string }[] | undefined) =>
    mounts?.find((m) => m.name === 'data')?.mountPath;
  assert.equal(dataMount(ctr?.volumeMounts), dataMount(sts?.containers[0]?.volumeMounts));
  assert.deepEqual(pod?.volumes?.find((v) => v.name === 'data')?.persistentVolumeClaim, {
    claimName: 'data-clicks-ingest-2',
  });
  assert.equal(ctr?.image, 'img:1');
});

void test('names: drainer names fit a label value; grace period outlasts the shutdown budget', () => {
  const long = `data-${'e'.repeat(50)}-ingest-12`;
  const n = drainerName(long);
  assert.ok(n.length <= 63, n);
  assert.notEqual(drainerName(`${long}3`), n);
  const budgetS = (ShutdownSchema.properties.timeoutMs.default as number) / 1000;
  assert.ok(terminationGracePeriodSeconds() >= budgetS + 10, `${terminationGracePeriodSeconds()} s`);
});
