// Scale-down and volume reclaim decisions (controller/lifecycle.ts) and the
// drainer Job builder (model/drainer.ts): pure functions, no I/O.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Job, V1PersistentVolumeClaim, V1PodDisruptionBudget } from '@kubernetes/client-node';
import {
  dropPendingClaims,
  markClaimDrained,
  markClaimPending,
  ownClaims,
  parseClaimLedger,
  planScale,
  reclaimAction,
  scaleUpClaim,
  settleClaims,
  undrainedClaims,
} from '../src/controller/lifecycle.ts';
import type { ReplicaDrain } from '../src/controller/lifecycle.ts';
import { buildDrainerJob, drainerOutcome } from '../src/model/drainer.ts';
import { buildPdb, buildStatefulSet, terminationGracePeriodSeconds } from '../src/model/resources.ts';
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

void test('one writer per WAL: a drainer pod still alive (its Job gone, or done) holds the ordinal and starts no second drainer', () => {
  const c = claim(1, 'Bound');
  // `kubectl delete job` (background propagation): the Job is gone, its pod still runs or terminates.
  const gone = scaleUpClaim({ claim: c, job: undefined, livePods: 1 });
  assert.equal(gone.kind, 'held', 'no ingest pod beside a live drainer pod');
  assert.match(
    gone.kind === 'held' ? gone.why : '',
    /drainer pod\(s\) of data-clicks-ingest-1 still alive though its Job is gone/,
  );
  assert.equal(scaleUpClaim({ claim: c, job: job('claim-uid-1', 'Complete'), livePods: 1 }).kind, 'held');
  const up = planScale({ desired: 3, current: 1, drainFrom: undefined, replicas: new Map(), reclaiming: [1], holds: new Map([[1, 'why-1']]), undrainFailed: false }); // prettier-ignore
  assert.deepEqual(up, {
    replicas: 1,
    drainFrom: undefined,
    waiting: ['ordinal 1: why-1; scaling up to it afterwards'],
  });
  const second = reclaimAction({ claim: claim(2, 'Bound'), labelled: true, podExists: false, job: undefined, liveDrainerPods: 1 }); // prettier-ignore
  assert.equal(second.kind, 'wait', 'no second drainer beside the old one');
  assert.match(
    second.kind === 'wait' ? second.why : '',
    /drainer pod\(s\) still alive though Job data-clicks-ingest-2-drain is gone/,
  );
  assert.equal(reclaimAction({ claim: claim(2, 'Bound'), labelled: true, podExists: false, job: undefined, liveDrainerPods: 0 }).kind, 'startDrainer'); // prettier-ignore
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

void test("the finalizer's claim ledger: a claim deleted by someone else before its drainer succeeded is undrained, never drained", () => {
  const bound = (n: number) => claim(n, 'Bound');
  const deleting = (n: number) => claim(n, 'Bound', { deletionTimestamp: new Date() });
  const own = (n: number, condition?: string) => job(`claim-uid-${n}`, condition);
  // First pass: every claim seen is pending.
  const first = settleClaims({ ledger: {}, claims: [{ claim: bound(0), job: undefined }, { claim: bound(1), job: own(1) }] });
  assert.deepEqual(first.ledger, { 'data-clicks-ingest-0/claim-uid-0': 'pending', 'data-clicks-ingest-1/claim-uid-1': 'pending' });
  assert.deepEqual(first.undrained, []);
  // The namespace controller deletes them: 0 has no drainer, 1's drainer still runs (it may yet succeed).
  const second = settleClaims({ ledger: first.ledger, claims: [{ claim: deleting(0), job: undefined }, { claim: deleting(1), job: own(1) }] });
  assert.deepEqual(second.undrained, ['data-clicks-ingest-0']);
  assert.equal(second.ledger['data-clicks-ingest-1/claim-uid-1'], 'pending');
  // Then 1 is gone without its drainer having succeeded: undrained too; reported once.
  const third = settleClaims({ ledger: second.ledger, claims: [{ claim: deleting(0), job: undefined }] });
  assert.deepEqual(third.undrained, ['data-clicks-ingest-1']);
  assert.deepEqual(settleClaims({ ledger: third.ledger, claims: [] }).undrained, [], 'reported once');
  assert.deepEqual(undrainedClaims(third.ledger), ['data-clicks-ingest-0', 'data-clicks-ingest-1']);
  // Failed drainer, deleted claim: undrained. Succeeded drainer, deleted claim: drained.
  assert.deepEqual(settleClaims({ ledger: {}, claims: [{ claim: deleting(2), job: own(2, 'Failed') }] }).undrained, ['data-clicks-ingest-2']);
  const ok = settleClaims({ ledger: {}, claims: [{ claim: deleting(2), job: own(2, 'Complete') }] });
  assert.deepEqual([ok.undrained, ok.ledger], [[], { 'data-clicks-ingest-2/claim-uid-2': 'drained' }]);
  assert.deepEqual(settleClaims({ ledger: {}, claims: [{ claim: deleting(2), job: job('an-older-claim', 'Complete') }] }).undrained, ['data-clicks-ingest-2'], "an earlier claim's Job proves nothing");
  // The operator's own delete after a drain is recorded first: terminating, then gone, it stays drained.
  const marked = markClaimDrained(first.ledger, bound(0));
  assert.equal(marked['data-clicks-ingest-0/claim-uid-0'], 'drained');
  assert.deepEqual(settleClaims({ ledger: marked, claims: [{ claim: deleting(0), job: undefined }, { claim: bound(1), job: own(1) }] }).undrained, []);
  const gone = settleClaims({ ledger: marked, claims: [{ claim: bound(1), job: own(1) }] });
  assert.deepEqual([gone.undrained, gone.ledger], [[], { 'data-clicks-ingest-1/claim-uid-1': 'pending' }], 'a drained entry goes with its claim');
  assert.deepEqual(markClaimDrained({ 'a/1': 'drained', 'b/2': 'drained' }, bound(0), new Set(['b/2'])), { 'b/2': 'drained', 'data-clicks-ingest-0/claim-uid-0': 'drained' }, 'pruned');
  assert.deepEqual(parseClaimLedger('{"a/1":"drained","b/2":"nonsense"}'), { 'a/1': 'drained' });
  assert.deepEqual(parseClaimLedger('not json'), {});
  // Never bound: nothing was written on it, its deletion loses nothing.
  const unbound = settleClaims({ ledger: {}, claims: [{ claim: claim(3, 'Pending', { deletionTimestamp: new Date() }), job: undefined }] });
  assert.deepEqual([unbound.undrained, unbound.ledger, unbound.changed], [[], {}, false]);
}); // prettier-ignore

void test('the claim ledger outside the finalizer: a Bound claim left without a pod is pending once; a claim handed back leaves', () => {
  const c = claim(1, 'Bound');
  assert.deepEqual(markClaimPending({}, c), { 'data-clicks-ingest-1/claim-uid-1': 'pending' });
  assert.equal(
    markClaimPending({ 'data-clicks-ingest-1/claim-uid-1': 'pending' }, c),
    undefined,
    'one write per claim',
  );
  assert.equal(
    markClaimPending({ 'data-clicks-ingest-1/claim-uid-1': 'drained' }, c),
    undefined,
    'never back from drained',
  );
  assert.equal(markClaimPending({}, claim(1, 'Pending')), undefined, 'never bound: nothing to account for');
  const ledger = {
    'data-clicks-ingest-1/claim-uid-1': 'pending',
    'data-clicks-ingest-2/claim-uid-2': 'drained',
  } as const;
  assert.deepEqual(dropPendingClaims(ledger, [c, claim(2, 'Bound')]), {
    'data-clicks-ingest-2/claim-uid-2': 'drained',
  });
  assert.equal(dropPendingClaims(ledger, [claim(3, 'Bound')]), undefined);
  // Deleted before the finalizer's first poll: gone while pending is undrained.
  const settled = settleClaims({ ledger: markClaimPending({}, c) ?? {}, claims: [] });
  assert.deepEqual(settled.undrained, ['data-clicks-ingest-1']);
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
  for (const o of [d.job, d.configMap, d.serviceAccount, d.pdb]) {
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

void test('the drainer pod is protected from eviction: its own PDB, and disruptions do not use up its retries', () => {
  const ep = endpoint('clicks', { s3: { bucket: 'acme-events' }, apiKeySecretRef: { name: 'k' }, replicas: 2 }, {
    creationTimestamp: new Date('2026-01-01T00:00:00Z'),
  }) as Parameters<typeof buildStatefulSet>[0]; // prettier-ignore
  const d = buildDrainerJob({ ep, claim: claim(2, 'Bound'), instance: 'clicks-ingest-2', nodeImage: 'img', views: [] }); // prettier-ignore
  const other = buildDrainerJob({ ep, claim: claim(3, 'Bound'), instance: 'clicks-ingest-3', nodeImage: 'img', views: [] }); // prettier-ignore
  const selects = (pdb: V1PodDisruptionBudget, labels: Record<string, string> | undefined) =>
    Object.entries(pdb.spec?.selector?.matchLabels ?? {}).every(([k, v]) => labels?.[k] === v);
  const podLabels = d.job.spec?.template.metadata?.labels;
  // The Endpoint's PDB selects only the ingest pods (the StatefulSet's selector); the drainer's selects its pod.
  assert.equal(selects(buildPdb(ep), podLabels), false);
  assert.equal(selects(d.pdb, podLabels), true, 'the drainer PDB selects the drainer pod');
  assert.equal(
    selects(d.pdb, other.job.spec?.template.metadata?.labels),
    false,
    "not another claim's drainer",
  );
  const ingest = buildStatefulSet(ep, { nodeImage: 'img', views: [] }, 'h').spec?.template.metadata?.labels;
  assert.equal(selects(d.pdb, ingest), false, 'not the ingest pods');
  // An integer minAvailable: a Job has no scale subresource, which maxUnavailable would need.
  assert.deepEqual(d.pdb.spec?.minAvailable, 1);
  assert.equal(d.pdb.spec?.maxUnavailable, undefined);
  assert.equal(d.pdb.metadata?.name, 'data-clicks-ingest-2-drain');
  assert.equal(d.pdb.metadata?.namespace, 'tenant-a');
  assert.deepEqual(d.job.spec?.podFailurePolicy, {
    rules: [{ action: 'Ignore', onPodConditions: [{ type: 'DisruptionTarget' }] }],
  });
  assert.equal(d.job.spec?.template.spec?.restartPolicy, 'Never', 'podFailurePolicy requires it');
});

void test('names: drainer names fit a label value; grace period outlasts the shutdown budget', () => {
  const long = `data-${'e'.repeat(50)}-ingest-12`;
  const n = drainerName(long);
  assert.ok(n.length <= 63, n);
  assert.notEqual(drainerName(`${long}3`), n);
  const budgetS = (ShutdownSchema.properties.timeoutMs.default as number) / 1000;
  assert.ok(terminationGracePeriodSeconds() >= budgetS + 10, `${terminationGracePeriodSeconds()} s`);
});
