// The operator against a real kube-apiserver + etcd + kube-controller-manager
// (no kubelet: Pods stay Pending). One control plane for the whole file; the
// operator runs in-process first, then as two child processes for leader
// election. Every wait is a poll with a deadline, never a fixed sleep.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import yaml from 'js-yaml';
import type { V1ConfigMap, V1Pod, V1PersistentVolumeClaim, V1StatefulSet } from '@kubernetes/client-node';
import { freePort, repoRoot, startKubernetes, startProcess, waitFor } from '../harness/index.ts';
import type { KubernetesTestbed, ServerProcess } from '../harness/index.ts';
import { Operator } from '../../operator/src/operator.ts';
import { KubeApiError, KubeClient, Resources } from '../../operator/src/runtime/kube.ts';
import type { KubeObject } from '../../operator/src/runtime/kube.ts';
import { jsonLogger } from '../../operator/src/runtime/log.ts';
import { OperatorMetrics } from '../../operator/src/runtime/metrics.ts';
import {
  CONFIG_HASH_ANNOTATION,
  FINALIZER,
  FORCE_DELETE_ANNOTATION,
} from '../../operator/src/model/names.ts';
import type { Endpoint } from '../../operator/src/api/endpoint.ts';
import type { View } from '../../operator/src/api/view.ts';

let kube: KubernetesTestbed;
let client: KubeClient;
let ns: string;
let operator: Operator | undefined;
const log = jsonLogger(process.env.LANDFALL_OPERATOR_LOG === '1' ? 'debug' : 'error');

type Cond = { type: string; status: string; reason: string; message: string };
type EndpointObj = Endpoint & KubeObject;
type ViewObj = View & KubeObject;

const endpointBody = (name: string, spec: Record<string, unknown> = {}): KubeObject =>
  ({
    metadata: { name, namespace: ns },
    spec: { s3: { bucket: 'landfall-e2e' }, apiKeySecretRef: { name: `${name}-keys` }, ...spec },
  }) as KubeObject;

const condition = (obj: { status?: { conditions?: Cond[] } } | undefined, type: string): Cond | undefined =>
  obj?.status?.conditions?.find((c) => c.type === type);

async function getEndpoint(name: string): Promise<EndpointObj | undefined> {
  return client.get<EndpointObj>(Resources.endpoint, ns, name);
}

async function getSts(name: string): Promise<(V1StatefulSet & KubeObject) | undefined> {
  return client.get<V1StatefulSet & KubeObject>(Resources.statefulSet, ns, `${name}-ingest`);
}

async function expectRejected(body: KubeObject, message: RegExp, update = false): Promise<string> {
  try {
    if (update) await client.replace(Resources.endpoint, body);
    else await client.create(Resources.endpoint, body);
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
  ns = await kube.newNamespace('op');
  // A PV pre-bound to clicks-ingest-0's future claim: the PV controller binds
  // a claim to a waiting PV as soon as the claim appears (a PV created after
  // the claim waits for its ~15 s resync). The deletion test needs one bound
  // claim: a replica whose WAL may hold data.
  await client.create(
    { apiVersion: 'v1', kind: 'PersistentVolume', plural: 'persistentvolumes', namespaced: false },
    {
      metadata: { name: `${ns}-wal-0` },
      spec: {
        capacity: { storage: '10Gi' },
        accessModes: ['ReadWriteOnce'],
        storageClassName: '',
        hostPath: { path: '/tmp/landfall-e2e-wal' },
        claimRef: { namespace: ns, name: 'data-clicks-ingest-0' },
      },
    } as KubeObject,
  );
  operator = new Operator({
    kubeConfig: kube.kubeConfig,
    nodeImage: 'ghcr.io/landfall/ingest-node:e2e',
    log,
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

void describe('operator in-process', () => {
  void test('an Endpoint gets its ServiceAccount, ConfigMap, Services, StatefulSet and PDB, owned by it', async () => {
    const t0 = performance.now();
    await client.apply(Resources.endpoint, endpointBody('clicks', { replicas: 2 }), { force: false });
    await waitFor(() => getSts('clicks'), {
      what: 'StatefulSet clicks-ingest',
      timeoutMs: 15_000,
      intervalMs: 10,
    });
    const latencyMs = performance.now() - t0;
    console.log(`# apply Endpoint → StatefulSet exists: ${latencyMs.toFixed(0)} ms`);

    const ep = await getEndpoint('clicks');
    assert.ok(ep?.metadata?.uid);
    const owned = async (rt: (typeof Resources)[keyof typeof Resources], name: string): Promise<void> => {
      const obj = await waitFor(() => client.get(rt, ns, name), {
        what: `${rt.kind} ${name}`,
        timeoutMs: 10_000,
      });
      const ref = obj.metadata?.ownerReferences?.find((r) => r.controller);
      assert.equal(ref?.uid, ep.metadata?.uid, `${rt.kind} ${name} is owned by the Endpoint`);
      assert.equal(ref?.kind, 'Endpoint');
    };
    await owned(Resources.serviceAccount, 'clicks-ingest');
    await owned(Resources.configMap, 'clicks-ingest');
    await owned(Resources.service, 'clicks-ingest');
    await owned(Resources.service, 'clicks-ingest-headless');
    await owned(Resources.statefulSet, 'clicks-ingest');
    await owned(Resources.pdb, 'clicks-ingest');
    assert.equal(
      await client.get(Resources.secret, ns, 'clicks-ingest-operator-key'),
      undefined,
      'no Secret of the operator in the Endpoint namespace (only the hash of its key, in the ConfigMap)',
    );
    const sts = await getSts('clicks');
    assert.equal(sts?.spec?.podManagementPolicy, 'Parallel');
    assert.ok(
      ep.metadata?.finalizers?.includes(FINALIZER) ||
        (await getEndpoint('clicks'))?.metadata?.finalizers?.includes(FINALIZER),
    );
    const managers = (
      sts as unknown as { metadata: { managedFields: { manager: string; operation: string }[] } }
    ).metadata.managedFields;
    assert.ok(
      managers.some((m) => m.manager === 'landfall-operator' && m.operation === 'Apply'),
      'applied server-side',
    );
  });

  void test('the controller-manager creates the Pods (Pending) and the status says not ready, with a reason', async () => {
    await waitFor(
      async () => {
        const pods = await client.list<V1Pod & KubeObject>(Resources.pod, {
          namespace: ns,
          labelSelector: 'landfall.dev/endpoint=clicks',
        });
        return pods.items.length === 2 && pods.items.every((p) => p.status?.phase === 'Pending');
      },
      { what: '2 Pending pods', timeoutMs: 20_000 },
    );
    const ep = await waitFor(
      async () => {
        const e = await getEndpoint('clicks');
        const ready = condition(e, 'Ready');
        return ready?.reason === 'ReplicasNotReady' && /not ready: clicks-ingest-0/.test(ready.message)
          ? e
          : undefined;
      },
      { what: 'Ready=False ReplicasNotReady naming the pods', timeoutMs: 20_000 },
    );
    const ready = condition(ep, 'Ready');
    assert.equal(ready?.status, 'False');
    console.log(`# Ready=${ready?.status} ${ready?.reason}: ${ready?.message}`);
    assert.equal(ep.status?.readyReplicas, 0);
    assert.equal(ep.status?.observedGeneration, ep.metadata?.generation);
    assert.equal(ep.status?.url, `http://clicks-ingest.${ns}.svc:80`);
    assert.equal(condition(ep, 'Degraded')?.status, 'False');
  });

  void test('changing the segment policy changes the pod template config hash (pods roll)', async () => {
    const before = (await getSts('clicks'))?.spec?.template.metadata?.annotations?.[CONFIG_HASH_ANNOTATION];
    assert.match(before ?? '', /^[0-9a-f]{16}$/);
    await client.mergePatch(Resources.endpoint, ns, 'clicks', {
      spec: { segmentPolicy: { segmentBytesMax: 1048576, segmentAgeMsMax: 5000 } },
    });
    const after = await waitFor(
      async () => {
        const h = (await getSts('clicks'))?.spec?.template.metadata?.annotations?.[CONFIG_HASH_ANNOTATION];
        return h && h !== before ? h : undefined;
      },
      { what: 'a new config hash on the pod template', timeoutMs: 15_000 },
    );
    const cm = await client.get<V1ConfigMap & KubeObject>(Resources.configMap, ns, 'clicks-ingest');
    const config = JSON.parse(cm?.data?.['config.json'] ?? '{}') as {
      wal: { segmentBytesMax: number; segmentAgeMsMax: number };
    };
    assert.deepEqual(
      { b: config.wal.segmentBytesMax, a: config.wal.segmentAgeMsMax },
      { b: 1048576, a: 5000 },
    );
    await waitFor(async () => (await getEndpoint('clicks'))?.status?.configHash === after, {
      what: 'status.configHash follows',
      timeoutMs: 10_000,
    });
  });

  void test('the CRD rejects invalid specs with the rule messages (CEL)', async () => {
    const role = 'arn:aws:iam::123456789012:role/writer';
    const msgs = [
      await expectRejected(
        endpointBody('bad-ext', { credentials: { assumeRole: { externalId: 'xyz-123' } } }),
        /externalId is only valid with a roleArn/,
      ),
      await expectRejected(
        endpointBody('bad-both', { credentials: { irsaRoleArn: role, assumeRole: { roleArn: role } } }),
        /irsaRoleArn and assumeRole are mutually exclusive/,
      ),
      await expectRejected(
        endpointBody('bad-outputs', { outputs: { segments: false, rawParquet: false } }),
        /at least one of segments or rawParquet must be true/,
      ),
      await expectRejected(
        endpointBody('a-name-that-is-far-too-long-for-a-statefulset-x'),
        /metadata.name must be at most 40 characters/,
      ),
      await expectRejected(
        endpointBody('bad-static', {
          credentials: { irsaRoleArn: role, secretRef: { name: 'minio-credentials' } },
        }),
        /secretRef \(static keys\) is mutually exclusive with irsaRoleArn and assumeRole/,
      ),
      await expectRejected(
        endpointBody('bad-mqtt-shared', {
          replicas: 2,
          mqtt: { brokers: [{ url: 'mqtt://broker:1883' }], topics: [{ filter: 'sensors/#' }] },
        }),
        /every MQTT topic filter must be a shared subscription/,
      ),
      await expectRejected(
        endpointBody('bad-mqtt-pw', {
          mqtt: {
            brokers: [{ url: 'mqtt://broker:1883', passwordSecretRef: { name: 's', key: 'pw' } }],
            topics: [{ filter: 'a' }],
          },
        }),
        /passwordSecretRef needs a username/,
      ),
      await expectRejected(
        endpointBody('bad-mqtt-topics', { mqtt: { brokers: [{ url: 'mqtt://broker:1883' }] } }),
        /set mqtt.topics, or topics on every broker/,
      ),
      await expectRejected(endpointBody('bad-enum', { validation: 'xml' }), /Unsupported value: "xml"/),
      await expectRejected(endpointBody('bad-bounds', { replicas: 1000 }), /spec.replicas/),
    ];
    // The operator writes the Endpoint too (finalizer, status), so a PUT of the
    // object read a moment ago can meet a newer resourceVersion (409): read again.
    for (let attempt = 1; ; attempt++) {
      const current = await getEndpoint('clicks');
      assert.ok(current);
      try {
        msgs.push(
          await expectRejected(
            {
              ...current,
              spec: { ...current.spec, s3: { ...current.spec.s3, bucket: 'another-bucket' } },
            } as KubeObject,
            /bucket is immutable/,
            true,
          ),
        );
        break;
      } catch (err) {
        if (attempt >= 5 || !/\b409\b/.test(String(err))) throw err;
      }
    }
    for (const m of msgs) console.log(`# rejected: ${m.replace(/^.*?422 /, '')}`);
  });

  void test('a View with a forbidden expression is Compiled=False with the error; fixed, it is True and in the ConfigMap', async () => {
    const view = (filter: string): KubeObject =>
      ({
        metadata: { name: 'page-views', namespace: ns },
        spec: {
          endpointRef: { name: 'clicks' },
          columns: [
            { name: 'event', type: 'VARCHAR', path: '$.event', required: true },
            { name: 'user_id', type: 'VARCHAR', path: '$.user' },
          ],
          filter,
        },
      }) as KubeObject;
    await client.apply(Resources.view, view("event IN (SELECT 'x' FROM read_csv('/etc/passwd'))"), {
      force: false,
    });
    const failed = await waitFor(
      async () => {
        const v = await client.get<ViewObj>(Resources.view, ns, 'page-views');
        return condition(v, 'Compiled')?.status === 'False' ? v : undefined;
      },
      { what: 'Compiled=False', timeoutMs: 15_000 },
    );
    const c = condition(failed, 'Compiled');
    console.log(`# Compiled=False ${c?.reason}: ${c?.message}`);
    assert.ok(c?.message);
    assert.equal(condition(failed, 'Attached')?.status, 'False');

    await client.apply(Resources.view, view("event = 'page_view'"), { force: false });
    await waitFor(
      async () =>
        condition(await client.get<ViewObj>(Resources.view, ns, 'page-views'), 'Compiled')?.status === 'True',
      { what: 'Compiled=True', timeoutMs: 15_000 },
    );
    const files = await waitFor(
      async () => {
        const m = await client.get<V1ConfigMap & KubeObject>(Resources.configMap, ns, 'clicks-ingest-views');
        return m?.data?.['page_views.yaml'] ? Object.keys(m.data) : undefined;
      },
      { what: 'page_views.yaml in the views ConfigMap', timeoutMs: 15_000 },
    );
    assert.deepEqual(files, ['page_views.yaml']);
    await waitFor(async () => (await getEndpoint('clicks'))?.status?.views?.includes('page_views'), {
      what: 'Endpoint status lists the view',
      timeoutMs: 10_000,
    });
  });

  void test("a View whose Endpoint doesn't exist says so", async () => {
    await client.apply(
      Resources.view,
      {
        metadata: { name: 'orphan', namespace: ns },
        spec: { endpointRef: { name: 'nope' }, columns: [{ name: 'a', type: 'VARCHAR', path: '$.a' }] },
      } as KubeObject,
      { force: false },
    );
    const v = await waitFor(
      async () => {
        const o = await client.get<ViewObj>(Resources.view, ns, 'orphan');
        return condition(o, 'Attached')?.reason === 'EndpointNotFound' ? o : undefined;
      },
      { what: 'Attached=False EndpointNotFound', timeoutMs: 15_000 },
    );
    assert.equal(condition(v, 'Attached')?.message, `Endpoint 'nope' not found in namespace '${ns}'`);
    assert.equal(condition(v, 'Compiled')?.status, 'True');
  });

  void test('deletion: never-bound volumes are deleted and the Endpoint goes; a bound volume with no running pod gets a drainer Job and waits until forced', async () => {
    const t0 = performance.now();
    const phase = (label: string): void =>
      console.log(`# deletion: ${label} at ${(performance.now() - t0).toFixed(0)} ms`);
    // An Endpoint whose claims were never bound has never written a WAL.
    await client.apply(Resources.endpoint, endpointBody('quick'), { force: false });
    await waitFor(() => getSts('quick'), { what: 'StatefulSet quick-ingest', timeoutMs: 15_000 });
    await waitFor(async () => (await getEndpoint('quick'))?.metadata?.finalizers?.includes(FINALIZER), {
      what: 'finalizer on quick',
      timeoutMs: 10_000,
    });
    await client.delete(Resources.endpoint, ns, 'quick');
    await waitFor(async () => (await getEndpoint('quick')) === undefined, {
      what: 'quick deleted',
      timeoutMs: 15_000,
    });

    phase('quick (never-bound claims) deleted without force');
    // clicks-ingest-0's claim is bound (PV from before()): a WAL may exist there, and its pod is Pending.
    const claim = 'data-clicks-ingest-0';
    await waitFor(() => client.get<V1PersistentVolumeClaim & KubeObject>(Resources.pvc, ns, claim), {
      what: `PVC ${claim}`,
      timeoutMs: 15_000,
    });
    await waitFor(
      async () =>
        (await client.get<V1PersistentVolumeClaim & KubeObject>(Resources.pvc, ns, claim))?.status?.phase ===
        'Bound',
      { what: `${claim} Bound`, timeoutMs: 30_000, intervalMs: 200 },
    );

    phase(`${claim} bound`);
    await client.delete(Resources.endpoint, ns, 'clicks');
    const draining = await waitFor(
      async () => {
        const e = await getEndpoint('clicks');
        return condition(e, 'Draining')?.status === 'True' ? e : undefined;
      },
      { what: 'Draining condition', timeoutMs: 15_000 },
    );
    const d = condition(draining, 'Draining');
    console.log(`# Draining ${d?.reason}: ${d?.message}`);
    // The pod could not be asked (Pending: no kubelet here), so the StatefulSet
    // went to 0 and the bound volume waits for its drainer (whose pod stays Pending too).
    assert.match(d?.message ?? '', /drainer Job data-clicks-ingest-0-drain/);
    assert.ok(draining.metadata?.deletionTimestamp);
    const job = await client.get<KubeObject>(Resources.job, ns, 'data-clicks-ingest-0-drain');
    const pvc = await client.get<V1PersistentVolumeClaim & KubeObject>(Resources.pvc, ns, claim);
    assert.equal(
      job?.metadata?.ownerReferences?.[0]?.uid,
      pvc?.metadata?.uid,
      'the Job is owned by the claim',
    );
    assert.equal((await getSts('clicks'))?.spec?.replicas, 0, 'no pod may run beside a drainer');

    phase('clicks waits (Draining)');
    await client.mergePatch(Resources.endpoint, ns, 'clicks', {
      metadata: { annotations: { [FORCE_DELETE_ANNOTATION]: 'true' } },
    });
    await waitFor(async () => (await getEndpoint('clicks')) === undefined, {
      what: 'clicks deleted',
      timeoutMs: 15_000,
    });
    phase('clicks deleted after the force annotation');
  });
});

void describe('leader election (two operator processes)', () => {
  const procs: ServerProcess[] = [];
  after(async () => {
    await Promise.all(procs.map((p) => p.stop({ graceMs: 2000 })));
  });

  async function metricsOf(port: number): Promise<{ leader: number; reconciles: number } | undefined> {
    try {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const leader = Number(/^landfall_operator_leader (\S+)$/m.exec(text)?.[1] ?? NaN);
      let reconciles = 0;
      for (const m of text.matchAll(/^landfall_operator_reconcile_total\{[^}]*\} (\S+)$/gm))
        reconciles += Number(m[1]);
      return { leader, reconciles };
    } catch {
      return undefined;
    }
  }

  void test('only the leader reconciles; killing it hands over to the other', async () => {
    await operator?.stop();
    operator = undefined;
    const ports = [await freePort(), await freePort()];
    const leaseArgs = [
      '--lease-duration-ms',
      '3000',
      '--renew-deadline-ms',
      '2000',
      '--retry-period-ms',
      '300',
    ];
    const start = (i: number): ServerProcess => {
      const p = startProcess({
        name: `operator-${i}`,
        command: process.execPath,
        args: [
          join(repoRoot, 'operator/src/main.ts'),
          '--kubeconfig',
          kube.kubeconfigPath,
          '--leader-elect',
          '--lease-namespace',
          ns,
          '--identity',
          `op-${i}`,
          '--metrics-host',
          '127.0.0.1',
          '--metrics-port',
          String(ports[i]),
          '--log-level',
          'info',
          ...leaseArgs,
        ],
      });
      procs.push(p);
      return p;
    };
    const [a, b] = [start(0), start(1)];
    const lease = () =>
      client.get<KubeObject & { spec?: { holderIdentity?: string } }>(
        Resources.lease,
        ns,
        'landfall-operator',
      );
    const first = await waitFor(async () => (await lease())?.spec?.holderIdentity, {
      what: 'a leader',
      timeoutMs: 15_000,
    });
    const leaderIdx = first === 'op-0' ? 0 : 1;
    const [leader, standby] = leaderIdx === 0 ? [a, b] : [b, a];
    const [leaderPort, standbyPort] = [ports[leaderIdx] ?? 0, ports[1 - leaderIdx] ?? 0];

    await client.apply(Resources.endpoint, endpointBody('led'), { force: false });
    await waitFor(() => getSts('led'), { what: 'StatefulSet led-ingest (by the leader)', timeoutMs: 15_000 });
    const lm = await waitFor(() => metricsOf(leaderPort), { what: 'leader metrics', timeoutMs: 5_000 });
    const sm = await waitFor(() => metricsOf(standbyPort), { what: 'standby metrics', timeoutMs: 5_000 });
    assert.equal(lm.leader, 1);
    assert.ok(lm.reconciles > 0, 'the leader reconciled');
    assert.equal(sm.leader, 0);
    assert.equal(sm.reconciles, 0, 'the standby did not reconcile');

    const killedAt = performance.now();
    process.kill(leader.pid, 'SIGKILL');
    await leader.exited;
    const next = await waitFor(
      async () => {
        const h = (await lease())?.spec?.holderIdentity;
        return h && h !== first ? h : undefined;
      },
      { what: 'the standby takes the Lease', timeoutMs: 20_000, intervalMs: 100 },
    );
    console.log(
      `# leader ${first} killed; ${next} leads after ${(performance.now() - killedAt).toFixed(0)} ms`,
    );
    await client.apply(Resources.endpoint, endpointBody('after-failover'), { force: false });
    await waitFor(() => getSts('after-failover'), {
      what: 'reconciled by the new leader',
      timeoutMs: 15_000,
    });
    assert.equal((await metricsOf(standbyPort))?.leader, 1);

    // Graceful stop releases the Lease at once (no waiting out the lease).
    await standby.stop({ graceMs: 10_000 });
    const released = await lease();
    assert.ok(
      !released?.spec?.holderIdentity,
      `Lease released, holder=${String(released?.spec?.holderIdentity)}`,
    );
  });
});

void test("the garbage collector removes a deleted Endpoint's children (owner references)", async () => {
  // Last, because the controller-manager's garbage collector discovers new
  // resource types (our CRDs) on a 30 s cycle; the tests before ran meanwhile.
  await waitFor(async () => (await getSts('clicks')) === undefined, {
    what: 'StatefulSet clicks-ingest collected',
    timeoutMs: 45_000,
    intervalMs: 250,
  });
  for (const [rt, name] of [
    [Resources.configMap, 'clicks-ingest'],
    [Resources.service, 'clicks-ingest'],
    [Resources.pdb, 'clicks-ingest'],
  ] as const) {
    await waitFor(async () => (await client.get(rt, ns, name)) === undefined, {
      what: `${rt.kind} collected`,
      timeoutMs: 10_000,
    });
  }
});
