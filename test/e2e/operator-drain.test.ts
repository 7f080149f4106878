// Scale-down and deletion drain (issue 13) against a real kube-apiserver +
// controller-manager (no kubelet) and real ingest nodes: each "pod" is a node
// started in this process on its own loopback address (127.0.0.<n+1>, one
// port), and the test writes that address into the pod's status, as a kubelet
// would. The operator reaches the nodes with its real HTTP drain control and
// status probe, with the key it derives (scopes status drain).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { readFile } from 'node:fs/promises';
import { HttpMethod } from '@kubernetes/client-node';
import type { V1Job, V1PersistentVolumeClaim, V1Pod, V1StatefulSet } from '@kubernetes/client-node';
import { freePort, repoRoot, startKubernetes, waitFor } from '../harness/index.ts';
import type { KubernetesTestbed } from '../harness/index.ts';
import { Operator } from '../../operator/src/operator.ts';
import { KubeClient, Resources } from '../../operator/src/runtime/kube.ts';
import type { KubeObject } from '../../operator/src/runtime/kube.ts';
import { jsonLogger } from '../../operator/src/runtime/log.ts';
import { OperatorMetrics } from '../../operator/src/runtime/metrics.ts';
import { deriveStatusKey, statusKeyLine } from '../../operator/src/model/operator-key.ts';
import { DRAIN_FROM_ANNOTATION } from '../../operator/src/model/names.ts';
import type { Endpoint } from '../../operator/src/api/endpoint.ts';
import { startNode } from '../../ingest-node/src/node.ts';
import type { RunningNode } from '../../ingest-node/src/node.ts';
import { defaultConfig } from '../../ingest-node/src/config/load.ts';

type Cond = { type: string; status: string; reason: string; message: string };
type EndpointObj = Endpoint & KubeObject;
type Sts = V1StatefulSet & KubeObject;

let kube: KubernetesTestbed;
let client: KubeClient;
let ns: string;
let operator: Operator | undefined;
let dir: string;
let port: number;
/** The nodes' admin port (/v1/status, /v1/drain): what the operator calls. */
let adminPort: number;
const operatorKey = Buffer.alloc(32, 9);
const nodes = new Map<string, RunningNode>();
const log = jsonLogger(process.env.LANDFALL_OPERATOR_LOG === '1' ? 'debug' : 'error');

const condition = (obj: { status?: { conditions?: Cond[] } } | undefined, type: string): Cond | undefined =>
  obj?.status?.conditions?.find((c) => c.type === type);

before(async () => {
  kube = await startKubernetes();
  client = new KubeClient(kube.kubeConfig);
  for (const file of ['endpoints.landfall.dev.yaml', 'views.landfall.dev.yaml']) {
    const crd = yaml.load(await readFile(join(repoRoot, 'crds', file), 'utf8')) as KubeObject;
    await client.apply(Resources.crd, crd);
  }
  await waitFor(
    async () => {
      const crd = await client.get<KubeObject & { status?: { conditions?: Cond[] } }>(
        Resources.crd,
        undefined,
        'endpoints.landfall.dev',
      );
      return condition(crd, 'Established')?.status === 'True';
    },
    { what: 'CRD Established', timeoutMs: 20_000 },
  );
  ns = await kube.newNamespace('drain');
  // Ordinal 2's claim of Endpoint "scale" is bound (a WAL may be there): it gets a drainer.
  await client.create(
    { apiVersion: 'v1', kind: 'PersistentVolume', plural: 'persistentvolumes', namespaced: false },
    {
      metadata: { name: `${ns}-wal-2` },
      spec: {
        capacity: { storage: '10Gi' },
        accessModes: ['ReadWriteOnce'],
        storageClassName: '',
        hostPath: { path: '/tmp/landfall-e2e-drain-wal' },
        claimRef: { namespace: ns, name: 'data-scale-ingest-2' },
      },
    } as KubeObject,
  );
  dir = await mkdtemp(join(tmpdir(), 'landfall-op-drain-'));
  port = await freePort();
  adminPort = await freePort();
  operator = new Operator({
    kubeConfig: kube.kubeConfig,
    namespace: ns,
    nodeImage: 'ghcr.io/landfall/ingest-node:e2e',
    log,
    metrics: new OperatorMetrics(),
    operatorKey,
    nodePort: adminPort,
    drainPollMs: 300,
    notReadyPollMs: 2000,
  });
  await operator.start();
});

after(async () => {
  await operator?.stop();
  for (const n of nodes.values()) await n.shutdown('test done').catch(() => undefined);
  await kube?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Each Endpoint's replicas on their own loopback addresses: "scale" 127.0.0.1-3, "gone" 127.0.0.11-12. */
let base = 1;
const ip = (ordinal: number): string => `127.0.0.${base + ordinal}`;

async function createEndpoint(name: string, replicas: number): Promise<EndpointObj> {
  await client.apply(
    Resources.endpoint,
    {
      metadata: { name, namespace: ns },
      spec: { s3: { bucket: 'landfall-e2e' }, apiKeySecretRef: { name: `${name}-keys` }, replicas },
    } as KubeObject,
    { force: false },
  );
  return waitFor(
    async () => {
      const ep = await client.get<EndpointObj>(Resources.endpoint, ns, name);
      return ep?.metadata?.finalizers?.length ? ep : undefined;
    },
    { what: `Endpoint ${name} with its finalizer`, timeoutMs: 15_000 },
  );
}

/** A node for ordinal n of an Endpoint, on 127.0.0.<n+1>, with the operator's key; `deliver`: to a local folder. */
async function startReplica(ep: EndpointObj, ordinal: number, deliver: boolean): Promise<RunningNode> {
  const name = ep.metadata?.name ?? '';
  const instance = `${name}-ingest-${ordinal}`;
  const keys = join(dir, `${instance}.keys`);
  await writeFile(keys, `writer-key ingest\n${statusKeyLine(deriveStatusKey(operatorKey, ep))}`);
  const node = await startNode(
    defaultConfig(
      {
        listen: { host: ip(ordinal), port, admin: { host: ip(ordinal), port: adminPort } },
        endpoint: { name },
        wal: { dir: join(dir, instance, 'wal'), segmentAgeMsMax: 600_000 },
        auth: { apiKeysFile: keys },
        ...(deliver ? { s3: { localDir: join(dir, 'bucket') } } : {}),
      },
      instance,
    ),
  );
  nodes.set(instance, node);
  return node;
}

/** What a kubelet would report: Running and Ready (or not) on the node's address (or, `failed`, a pod that stopped). */
async function setPodStatus(podName: string, ordinal: number, failed = false, ready = true): Promise<void> {
  const pod = await waitFor(() => client.get<V1Pod & KubeObject>(Resources.pod, ns, podName), {
    what: `pod ${podName}`,
    timeoutMs: 20_000,
  });
  const now = new Date().toISOString();
  await client.request(HttpMethod.PATCH, `/api/v1/namespaces/${ns}/pods/${podName}/status`, {
    body: {
      metadata: { resourceVersion: pod.metadata?.resourceVersion },
      status: failed
        ? { phase: 'Failed', conditions: [{ type: 'Ready', status: 'False', lastTransitionTime: now }] }
        : {
            phase: 'Running',
            podIP: ip(ordinal),
            podIPs: [{ ip: ip(ordinal) }],
            conditions: [{ type: 'Ready', status: ready ? 'True' : 'False', lastTransitionTime: now }],
          },
    },
    contentType: 'application/merge-patch+json',
  });
}

async function ingest(ordinal: number, n = 2): Promise<number> {
  const res = await fetch(`http://${ip(ordinal)}:${port}/v1/ingest`, {
    method: 'POST',
    headers: { 'x-api-key': 'writer-key', 'content-type': 'application/x-ndjson' },
    body: Array.from({ length: n }, (_, i) => `{"n":${i}}`).join('\n') + '\n',
  });
  await res.text();
  return res.status;
}

const sts = (name: string) => client.get<Sts>(Resources.statefulSet, ns, `${name}-ingest`);
const endpointOf = (name: string) => client.get<EndpointObj>(Resources.endpoint, ns, name);

void test('scale-down drains the ordinals first, a revert takes writes again, a volume without a pod gets a drainer and is deleted only after it succeeded', async () => {
  const t0 = performance.now();
  const phase = (label: string): void =>
    console.log(`# scale: ${label} at ${(performance.now() - t0).toFixed(0)} ms`);
  const ep = await createEndpoint('scale', 3);
  await waitFor(async () => (await sts('scale'))?.spec?.replicas === 3, {
    what: 'StatefulSet at 3',
    timeoutMs: 15_000,
  });
  await startReplica(ep, 0, true);
  await startReplica(ep, 1, true);
  await startReplica(ep, 2, false); // no delivery target: never drained
  for (const k of [0, 1, 2]) await setPodStatus(`scale-ingest-${k}`, k);
  for (const k of [0, 1, 2]) assert.equal(await ingest(k), 202);
  phase('3 replicas take writes');

  await client.mergePatch(Resources.endpoint, ns, 'scale', { spec: { replicas: 1 } });
  const held = await waitFor(
    async () => {
      const e = await endpointOf('scale');
      const d = condition(e, 'Draining');
      return d?.status === 'True' && /ordinal 2/.test(d.message) && !/ordinal 1/.test(d.message)
        ? d
        : undefined;
    },
    { what: 'Draining names ordinal 2 only (ordinal 1 delivered)', timeoutMs: 20_000 },
  );
  console.log(`# Draining ${held.reason}: ${held.message}`);
  assert.match(held.message, /ordinal 2: .*no delivery target configured/);
  assert.doesNotMatch(held.message, /ordinal 1/, 'ordinal 1 delivered and reports drained');
  const s = await sts('scale');
  assert.equal(s?.spec?.replicas, 3, 'held: the highest ordinal is not drained');
  assert.equal(s?.metadata?.annotations?.[DRAIN_FROM_ANNOTATION], '1');
  assert.equal(await ingest(1), 503, 'ordinal 1 is in drain mode: writes refused');
  assert.equal(await ingest(2), 503);
  assert.equal(await ingest(0), 202, 'ordinal 0 stays');
  const committed = await readdir(join(dir, 'bucket'), { recursive: true });
  assert.ok(
    committed.some((f) => String(f).includes('scale-ingest-1') && String(f).startsWith('commits')),
    "ordinal 1's records are committed",
  );
  phase('held at 3 while ordinal 2 cannot deliver');

  // Reverted: the ordinals wanted again leave drain mode.
  await client.mergePatch(Resources.endpoint, ns, 'scale', { spec: { replicas: 3 } });
  await waitFor(
    async () => {
      const e = await endpointOf('scale');
      const a = (await sts('scale'))?.metadata?.annotations?.[DRAIN_FROM_ANNOTATION];
      return condition(e, 'Draining') === undefined && a === undefined;
    },
    { what: 'Draining and the annotation gone', timeoutMs: 20_000 },
  );
  assert.equal(await ingest(1), 202, 'ordinal 1 takes writes again');
  assert.equal(await ingest(2), 202);
  phase('revert: DELETE /v1/drain');

  // An operator that crashed between a scale-down's POST /v1/drain and its
  // annotation, the scale-down then reverted: nothing records the drain. The
  // replica fails /readyz (the kubelet marks it not Ready) and the operator
  // takes it out of drain mode.
  const posted = await fetch(`http://${ip(1)}:${adminPort}/v1/drain`, {
    method: 'POST',
    headers: { 'x-api-key': deriveStatusKey(operatorKey, ep), 'content-type': 'application/json' },
    body: '{}',
  });
  await posted.text();
  assert.equal(posted.status, 202);
  assert.equal(await ingest(1), 503, 'in drain mode, annotation-less');
  await setPodStatus('scale-ingest-1', 1, false, false);
  await waitFor(async () => (await ingest(1)) === 202, {
    what: 'the stray drain mode of ordinal 1 released (DELETE /v1/drain)',
    timeoutMs: 20_000,
  });
  await setPodStatus('scale-ingest-1', 1);
  phase('stray drain mode released');

  // Down again; ordinal 2's node dies (its pod Failed): not waited for, its volume gets a drainer.
  await client.mergePatch(Resources.endpoint, ns, 'scale', { spec: { replicas: 1 } });
  await nodes.get('scale-ingest-2')?.shutdown('pod failed');
  nodes.delete('scale-ingest-2');
  await setPodStatus('scale-ingest-2', 2, true);
  await waitFor(async () => (await sts('scale'))?.spec?.replicas === 1, {
    what: 'StatefulSet lowered to 1',
    timeoutMs: 30_000,
  });
  phase('lowered to 1');
  const job = await waitFor(
    () => client.get<V1Job & KubeObject>(Resources.job, ns, 'data-scale-ingest-2-drain'),
    { what: 'the drainer Job of ordinal 2', timeoutMs: 30_000 },
  );
  const claim2 = await client.get<V1PersistentVolumeClaim & KubeObject>(
    Resources.pvc,
    ns,
    'data-scale-ingest-2',
  );
  assert.equal(job.metadata?.ownerReferences?.[0]?.uid, claim2?.metadata?.uid, 'owned by the claim');
  const env = job.spec?.template.spec?.containers[0]?.env ?? [];
  assert.equal(env.find((e) => e.name === 'LANDFALL_INSTANCE_ID')?.value, 'scale-ingest-2');
  for (const kind of [Resources.configMap, Resources.serviceAccount])
    assert.ok(await client.get(kind, ns, 'data-scale-ingest-2-drain'), `${kind.kind} of the drainer`);
  // Ordinal 1's claim was never bound (no PV): nothing to drain, deleted.
  await waitFor(async () => (await client.get(Resources.pvc, ns, 'data-scale-ingest-1')) === undefined, {
    what: 'the never-bound claim of ordinal 1 deleted',
    timeoutMs: 30_000,
  });
  // The drainer's pod cannot run here (no kubelet): the claim stays.
  await new Promise((r) => setTimeout(r, 1500));
  const stillThere = await client.get<KubeObject>(Resources.pvc, ns, 'data-scale-ingest-2');
  assert.equal(
    stillThere?.metadata?.deletionTimestamp,
    undefined,
    'kept while its drainer has not succeeded',
  );
  assert.match(
    condition(await endpointOf('scale'), 'Draining')?.message ?? '',
    /drainer Job data-scale-ingest-2-drain/,
  );
  phase('drainer Job running, claim kept');

  // What the Job controller writes when `landfall drain` exits 0. Its
  // startTime as it is now: the Job controller may have set it since `job`
  // was read, and it is immutable once set.
  const now = new Date().toISOString();
  const startTime =
    (await client.get<typeof job>(Resources.job, ns, 'data-scale-ingest-2-drain'))?.status?.startTime ??
    job.status?.startTime ??
    now;
  await client.request(
    HttpMethod.PATCH,
    `/apis/batch/v1/namespaces/${ns}/jobs/data-scale-ingest-2-drain/status`,
    {
      body: {
        status: {
          startTime,
          completionTime: now,
          succeeded: 1,
          active: 0,
          ready: 0,
          terminating: 0,
          conditions: [
            { type: 'SuccessCriteriaMet', status: 'True', lastTransitionTime: now, lastProbeTime: now },
            { type: 'Complete', status: 'True', lastTransitionTime: now, lastProbeTime: now },
          ],
        },
      },
      contentType: 'application/merge-patch+json',
    },
  );
  await waitFor(
    async () => {
      const c = await client.get<KubeObject>(Resources.pvc, ns, 'data-scale-ingest-2');
      return c === undefined || c.metadata?.deletionTimestamp !== undefined;
    },
    { what: 'claim 2 deleted after its drainer succeeded', timeoutMs: 30_000 },
  );
  // Its finished pod would keep the claim (pvc-protection): the Job goes with it.
  await waitFor(
    async () => (await client.get(Resources.job, ns, 'data-scale-ingest-2-drain')) === undefined,
    {
      what: 'the succeeded drainer Job deleted',
      timeoutMs: 30_000,
    },
  );
  phase('claim deleted after the drainer succeeded, then its Job');
});

void test('deletion: every live replica drains first (writes refused), one that cannot be asked is not waited for; then scaled to 0, volumes reclaimed, finalizer released', async () => {
  base = 11;
  const ep = await createEndpoint('gone', 2);
  await waitFor(async () => (await sts('gone'))?.spec?.replicas === 2, {
    what: 'StatefulSet at 2',
    timeoutMs: 15_000,
  });
  await startReplica(ep, 0, true);
  await startReplica(ep, 1, false);
  for (const k of [0, 1]) await setPodStatus(`gone-ingest-${k}`, k);
  assert.equal(await ingest(0, 5), 202);
  assert.equal(await ingest(1, 5), 202);

  await client.delete(Resources.endpoint, ns, 'gone');
  const d = await waitFor(
    async () => {
      const c = condition(await endpointOf('gone'), 'Draining');
      return c?.status === 'True' && /gone-ingest-1/.test(c.message) ? c : undefined;
    },
    { what: 'Draining names gone-ingest-1', timeoutMs: 20_000 },
  );
  console.log(`# Draining ${d.reason}: ${d.message}`);
  assert.match(d.message, /gone-ingest-1: .*no delivery target configured/);
  assert.equal(await ingest(0), 503, 'a deleting Endpoint takes no writes');
  assert.equal((await sts('gone'))?.spec?.replicas, 2, 'not scaled down while a live replica holds records');

  await nodes.get('gone-ingest-1')?.shutdown('pod failed');
  nodes.delete('gone-ingest-1');
  await setPodStatus('gone-ingest-1', 1, true);
  await waitFor(async () => (await endpointOf('gone')) === undefined, {
    what: 'Endpoint gone without force',
    timeoutMs: 60_000,
  });
  const committed = await readdir(join(dir, 'bucket'), { recursive: true });
  assert.ok(committed.some((f) => String(f).includes('gone-ingest-0') && String(f).startsWith('commits')));
});
