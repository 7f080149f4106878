// The drainer path on the real node (issue 13, must-show): a pod deleted with
// a backlog while its node's kubelet is stopped. The chart's operator in the
// cluster, the MinIO example Endpoint with 2 replicas on local PVs and a
// one-hour segment age (acked records stay in the open WAL segment, nothing is
// delivered on the way), producers with a ledger of acknowledged ids against
// both pods; then
//   - the kubelet is SIGKILLed (containers keep running; the node goes
//     NotReady and gets the unreachable taints);
//   - the ingest container of ordinal 1 is SIGKILLed through the runtime
//     (crictl stop --timeout 0): its acked records stay undelivered on its
//     volume, and with no kubelet nothing restarts it;
//   - the Endpoint is scaled to 1 and pod ordinal 1 force-deleted;
//   - the operator lowers the StatefulSet and makes a drainer Job for the
//     claim, pinned to the node; the operator's container is then SIGKILLed
//     (crictl stop --timeout 0: with the kubelet down nothing restarts it);
//     the kubelet starts again, restarting the operator too; the Job runs
//     `landfall drain` on the real backlog (segmentsDelivered > 0) and only
//     after it is Complete is the claim deleted;
//   - every id acked by ordinal 1 is then in MinIO (only the drainer could
//     have delivered it), and after a scale to 0 every acked id of both pods
//     (read back with `landfall expand`).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
import type {
  V1Job,
  V1Node,
  V1PersistentVolume,
  V1PersistentVolumeClaim,
  V1Pod,
} from '@kubernetes/client-node';
import {
  buildRepoImages,
  repoRoot,
  startKubernetes,
  startMinio,
  waitFor,
  NODE_NAME,
} from '../harness/index.ts';
import type { KubernetesTestbed, MinioServer, RepoImages } from '../harness/index.ts';
import { KubeClient, Resources } from '../../operator/src/runtime/kube.ts';
import type { KubeObject } from '../../operator/src/runtime/kube.ts';
import { Ledger } from './helpers/ledger.ts';
import { committedIdCounts } from './helpers/committed.ts';

let kube: KubernetesTestbed;
let minio: MinioServer;
let images: RepoImages;
let client: KubeClient;
let ns = '';
let releaseNs = '';
const EP = 'clicks';
const CLAIM1 = `data-${EP}-ingest-1`;
const POD1 = `${EP}-ingest-1`;
const API_KEY = 'lf_live_3f9c2e51b0d84a7e9d1c6b2a4f0e8d7c';
const t0 = performance.now();
const at = (): string => `${((performance.now() - t0) / 1000).toFixed(1)} s`;
const note = (s: string): void => void process.stderr.write(`[node-drainer ${at()}] ${s}\n`);

type Obj = {
  kind: string;
  metadata: { name: string };
  spec?: Record<string, unknown>;
  stringData?: Record<string, string>;
};

before(async () => {
  minio = await startMinio();
  kube = await startKubernetes({ node: { localVolumes: 2 } });
  assert.ok(kube.node !== undefined);
  note(`node up (waited ${kube.node.startupMs.lock} ms for the machine lock)`);
  client = new KubeClient(kube.kubeConfig);
  images = await buildRepoImages(kube.node);
  releaseNs = await kube.newNamespace('landfall-system');
  const [repo, tag] = images.operator.split(':');
  const [nodeRepo, nodeTag] = images.ingestNode.split(':');
  await kube.helm(
    ['install', 'lf', join(repoRoot, 'charts', 'landfall'), '-n', releaseNs,
      '--set', `image.repository=${repo ?? ''},image.tag=${tag ?? ''},image.pullPolicy=Never`,
      '--set', `nodeImage.repository=${nodeRepo ?? ''},nodeImage.tag=${nodeTag ?? ''}`],
    { timeoutMs: 120_000 },
  ); // prettier-ignore
  await kube.kubectl(['rollout', 'status', 'deployment/lf-landfall', '-n', releaseNs, '--timeout=120s'], {
    timeoutMs: 130_000,
  });
  ns = await kube.newNamespace('analytics');
  const s3Host = await kube.node.exposeHostPort(Number(new URL(minio.endpoint).port));
  const docs = (
    yaml.loadAll(readFileSync(join(repoRoot, 'docs', 'examples', 'endpoint-minio.yaml'), 'utf8')) as Obj[]
  ).filter(Boolean);
  for (const d of docs) {
    if (d.kind === 'Secret')
      d.stringData = { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey };
    if (d.kind === 'Endpoint') {
      const s3 = d.spec?.['s3'] as Record<string, unknown>;
      s3['bucket'] = minio.bucket;
      s3['endpointUrl'] = `http://${s3Host}`;
      // The longest age and a large size: nothing seals while the test runs,
      // every acked record stays in the open segment until a drain.
      d.spec = {
        ...d.spec,
        replicas: 2,
        segmentPolicy: { segmentAgeMsMax: 3_600_000, segmentBytesMax: 256 * 1024 * 1024 },
      };
    }
  }
  await kube.kubectl(['apply', '-n', ns, '-f', join(repoRoot, 'docs', 'examples', 'api-keys-secret.yaml')]);
  await kube.kubectl(['apply', '-n', ns, '-f', '-'], {
    input: docs.map((d) => JSON.stringify(d)).join('\n---\n'),
  });
});

after(async () => {
  await kube?.stop();
  await minio?.stop();
});

async function diagnostics(): Promise<string> {
  const out = await Promise.all(
    [
      kube.kubectl(['get', 'nodes,pods,pvc,jobs,statefulsets', '-n', ns, '-o', 'wide']),
      kube.kubectl(['get', 'events', '-n', ns, '--sort-by=.lastTimestamp']),
      kube.kubectl(['get', 'endpoints.landfall.dev', EP, '-n', ns, '-o', 'yaml']),
      kube.kubectl(['logs', '-n', releaseNs, 'deployment/lf-landfall', '--tail=40']),
    ].map((p) => p.then((r) => r.stdout).catch((e: unknown) => String(e))),
  );
  return out.join('\n');
}

const withDiagnostics = async <T>(p: Promise<T>): Promise<T> =>
  p.catch(async (err: unknown) => {
    throw new Error(`${String(err)}\n${await diagnostics()}`, { cause: err });
  });

async function readyPods(): Promise<Map<string, string>> {
  const pods = await client.listAll<V1Pod & KubeObject>(Resources.pod, {
    namespace: ns,
    labelSelector: `landfall.dev/endpoint=${EP}`,
  });
  const out = new Map<string, string>();
  for (const p of pods.items) {
    const ready = p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
    if (ready && p.metadata?.deletionTimestamp === undefined && p.status?.podIP !== undefined)
      out.set(p.metadata?.name ?? '', p.status.podIP);
  }
  return out;
}

const committedIds = (): Promise<Map<string, number>> => committedIdCounts(minio, { endpointName: EP });

/** Two producers per pod, posting straight to its IP; every request id starts with the pod's name. */
function startLoad(targets: ReadonlyMap<string, string>): { ledger: Ledger; stop: () => Promise<void> } {
  const ledger = new Ledger();
  let stopped = false;
  let counter = 0;
  const producer = async (pod: string, ip: string, p: number): Promise<void> => {
    while (!stopped) {
      const reqId = `${pod}.${p}.${counter++}`;
      const ids = Array.from({ length: 5 }, (_, j) => `${reqId}.${j}`);
      const req = ledger.add(reqId, ids);
      try {
        const res = await fetch(`http://${ip}:8080/v1/ingest`, {
          method: 'POST',
          headers: { 'x-api-key': API_KEY, 'content-type': 'application/x-ndjson' },
          body: ids.map((id) => `{"id":"${id}","event":"page_view"}`).join('\n') + '\n',
          signal: AbortSignal.timeout(5000),
        });
        await res.text();
        ledger.settle(
          req,
          res.status === 202
            ? { kind: 'acked', firstSeq: undefined, lastSeq: undefined }
            : { kind: 'refused', status: res.status, code: undefined, retryAfter: null },
        );
        if (res.status !== 202) await new Promise((r) => setTimeout(r, 50));
      } catch (err) {
        ledger.settle(req, { kind: 'unknown', reason: String(err) });
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  const producers = Promise.all([...targets].flatMap(([pod, ip]) => [0, 1].map((p) => producer(pod, ip, p))));
  return {
    ledger,
    stop: async () => {
      stopped = true;
      await producers;
    },
  };
}

const ackedIds = (ledger: Ledger, podPrefix?: string): string[] =>
  ledger.requests
    .filter(
      (r) => r.outcome?.kind === 'acked' && (podPrefix === undefined || r.id.startsWith(`${podPrefix}.`)),
    )
    .flatMap((r) => r.recordIds);

async function missingIn(ids: readonly string[], timeoutMs: number): Promise<string[]> {
  let missing: string[] = [...ids];
  await waitFor(
    async () => {
      const got = await committedIds();
      missing = ids.filter((id) => !got.has(id));
      return missing.length === 0;
    },
    { what: 'acknowledged ids committed to MinIO', timeoutMs, intervalMs: 2000 },
  ).catch(() => undefined);
  return missing;
}

const nodeTaints = async (): Promise<string[]> =>
  ((await client.get<V1Node & KubeObject>(Resources.node, '', NODE_NAME))?.spec?.taints ?? []).map(
    (t) => `${t.key}:${t.effect}`,
  );

/** The drainer's container log from the node's pod-logs folder (still there after the Job is deleted). */
function drainerLogFromNode(): string {
  const node = kube.node;
  if (node === undefined) return '';
  const dir = join(node.stateDir, 'pod-logs');
  let out = '';
  for (const pod of readdirSync(dir).filter((d) => d.startsWith(`${ns}_${CLAIM1}-drain-`))) {
    const c = join(dir, pod, 'drainer');
    for (const f of readdirSync(c).sort()) out += readFileSync(join(c, f), 'utf8');
  }
  return out;
}

void test('a pod deleted with a backlog while its kubelet is stopped: the drainer delivers it once the kubelet is back, the claim goes only after, no acked id missing', async () => {
  const node = kube.node;
  assert.ok(node !== undefined);
  await withDiagnostics(
    waitFor(async () => (await readyPods()).size >= 2, {
      what: '2 pods Ready',
      timeoutMs: 240_000,
      intervalMs: 500,
    }),
  );
  const targets = await readyPods();
  note(`2 replicas Ready: ${[...targets].map(([p, ip]) => `${p}=${ip}`).join(', ')}`);
  const load = startLoad(targets);
  let stopped = false;
  try {
    await waitFor(
      () =>
        ackedIds(load.ledger, POD1).length >= 500 && ackedIds(load.ledger, `${EP}-ingest-0`).length >= 500,
      {
        what: '100 acked requests on each pod',
        timeoutMs: 120_000,
      },
    );
    // Nothing delivered so far: the backlog is all in the open segments.
    const early = await committedIds().then(
      (ids) => String(ids.size),
      (err: unknown) => `(expand: ${String(err).split('\n')[0] ?? ''})`,
    );
    note(`ids committed before the kubelet stops: ${early}`);

    await node.stopKubelet();
    note('kubelet SIGKILLed');
    const ps = await node.crictl([
      'ps',
      '-q',
      '--name',
      '^ingest-node$',
      '--label',
      `io.kubernetes.pod.name=${POD1}`,
    ]);
    const containers = ps.stdout.split('\n').filter((l) => l.trim() !== '');
    assert.equal(containers.length, 1, `one running ingest container of ${POD1}: ${ps.stdout}`);
    await node.crictl(['stop', '--timeout', '0', containers[0] ?? '']);
    note(`ingest container of ${POD1} SIGKILLed (crictl stop --timeout 0)`);
    await load.stop();
    stopped = true;
  } finally {
    if (!stopped) await load.stop();
  }
  const c = load.ledger.counts();
  const acked1 = ackedIds(load.ledger, POD1);
  const ackedAll = ackedIds(load.ledger);
  note(
    `producers stopped: ${c.requests} requests, ${c.acked} acked (${c.ackedRecords} ids, ${acked1.length} of them on ${POD1}), ${c.refused} refused, ${c.unknown} unknown`,
  );

  // The node lifecycle controller notices after its grace period; from then
  // on nothing new is scheduled on the node (unreachable:NoSchedule).
  const tNotReady = performance.now();
  await withDiagnostics(
    waitFor(async () => (await nodeTaints()).includes('node.kubernetes.io/unreachable:NoSchedule'), {
      what: 'the node tainted unreachable',
      timeoutMs: 180_000,
      intervalMs: 1000,
    }),
  );
  note(
    `node tainted ${(await nodeTaints()).join(', ')} (${((performance.now() - tNotReady) / 1000).toFixed(1)} s after the kubelet stopped)`,
  );

  await kube.kubectl(['scale', `endpoints.landfall.dev/${EP}`, '--replicas=1', '-n', ns]);
  await kube.kubectl(['delete', 'pod', POD1, '-n', ns, '--force', '--grace-period=0', '--wait=false']);
  note(`scaled to 1, ${POD1} force-deleted`);

  // The operator lowers the StatefulSet and makes the drainer while the kubelet is still down.
  const job = await withDiagnostics(
    waitFor(
      async () => {
        const sts = await client.get<KubeObject & { spec?: { replicas?: number } }>(
          Resources.statefulSet,
          ns,
          `${EP}-ingest`,
        );
        if (sts?.spec?.replicas !== 1) return undefined;
        return client.get<V1Job & KubeObject>(Resources.job, ns, `${CLAIM1}-drain`);
      },
      { what: 'StatefulSet at 1 and a drainer Job for claim 1', timeoutMs: 180_000, intervalMs: 500 },
    ),
  );
  const tJob = performance.now();
  const affinity = JSON.stringify(
    job.spec?.template.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution,
  );
  note(
    `drainer Job ${job.metadata?.name ?? ''} created; node affinity ${affinity}; tolerations ${JSON.stringify(job.spec?.template.spec?.tolerations ?? [])}`,
  );
  // Pinned to the volume's node: by the Job's own affinity when the claim
  // carries selected-node (dynamic provisioning), else by the local PV's node
  // affinity, which the scheduler applies to any pod of the claim.
  const claimNow = await client.get<V1PersistentVolumeClaim & KubeObject>(Resources.pvc, ns, CLAIM1);
  const pv = await client.get<V1PersistentVolume & KubeObject>(
    { apiVersion: 'v1', kind: 'PersistentVolume', plural: 'persistentvolumes', namespaced: false },
    undefined,
    claimNow?.spec?.volumeName ?? '',
  );
  const pvAffinity = JSON.stringify(pv?.spec?.nodeAffinity?.required);
  note(`claim ${CLAIM1} on PV ${pv?.metadata?.name ?? '?'}, its node affinity ${pvAffinity}`);
  const pinned = new RegExp(`"values":\\["${NODE_NAME}"\\]`);
  assert.ok(
    pinned.test(affinity) || pinned.test(pvAffinity),
    'the drainer is pinned to the node of the volume',
  );
  const claimBefore = await client.get<V1PersistentVolumeClaim & KubeObject>(Resources.pvc, ns, CLAIM1);
  assert.ok(
    claimBefore !== undefined && claimBefore.metadata?.deletionTimestamp === undefined,
    'the claim is kept while its drainer has not run',
  );
  // The scheduler has looked at the drainer pod (its PodScheduled condition is
  // set) with the node still unreachable: what it decided goes in the log.
  const drainerPodsNow = () =>
    client.listAll<V1Pod & KubeObject>(Resources.pod, {
      namespace: ns,
      labelSelector: `job-name=${CLAIM1}-drain`,
    });
  await waitFor(
    async () =>
      (await drainerPodsNow()).items.some((p) =>
        p.status?.conditions?.some((x) => x.type === 'PodScheduled'),
      ),
    { what: 'the drainer pod seen by the scheduler', timeoutMs: 60_000, intervalMs: 250 },
  );
  const drainerPods = await drainerPodsNow();
  for (const p of drainerPods.items)
    note(
      `drainer pod ${p.metadata?.name ?? ''} with the kubelet down: phase ${p.status?.phase ?? '?'}, node ${p.spec?.nodeName ?? '(none)'}, ${JSON.stringify(p.status?.conditions?.find((x) => x.type === 'PodScheduled')?.message ?? '')}`,
    );

  // In the middle: the drainer Job exists, its claim is still there. The
  // operator's container is SIGKILLed through the runtime (the kubelet is
  // down, so nothing restarts it until the kubelet is back); the restarted
  // process must find the Job, wait for it and only then delete the claim.
  const op = await node.crictl([
    'ps',
    '-q',
    '--name',
    '^operator$',
    '--label',
    `io.kubernetes.pod.namespace=${releaseNs}`,
  ]);
  const opContainers = op.stdout.split('\n').filter((l) => l.trim() !== '');
  assert.equal(opContainers.length, 1, `one running operator container: ${op.stdout}`);
  const claimAtKill = await client.get<V1PersistentVolumeClaim & KubeObject>(Resources.pvc, ns, CLAIM1);
  assert.ok(
    claimAtKill !== undefined && claimAtKill.metadata?.deletionTimestamp === undefined,
    'the claim is still there when the operator is killed',
  );
  await node.crictl(['stop', '--timeout', '0', opContainers[0] ?? '']);
  const tOperatorKilled = performance.now();
  note('operator container SIGKILLed (crictl stop --timeout 0) with the drainer Job created, its claim kept');

  // Watch the claim and the Job from here: the claim must not go before the Job is Complete.
  let jobCompleteAt: number | undefined;
  let claimGoneAt: number | undefined;
  let jobLog = '';
  let watching = true;
  const watch = (async () => {
    while (watching) {
      try {
        const now = performance.now();
        const [claim, j] = await Promise.all([
          client.get<V1PersistentVolumeClaim & KubeObject>(Resources.pvc, ns, CLAIM1),
          client.get<V1Job & KubeObject>(Resources.job, ns, `${CLAIM1}-drain`),
        ]);
        if (claim === undefined || claim.metadata?.deletionTimestamp !== undefined) claimGoneAt ??= now;
        if (
          j?.status?.conditions?.some((x) => x.type === 'Complete' && x.status === 'True') &&
          jobCompleteAt === undefined
        ) {
          jobCompleteAt = now;
          jobLog = (
            await kube.kubectl(['logs', '-n', ns, `job/${CLAIM1}-drain`]).catch(() => ({ stdout: '' }))
          ).stdout;
        }
      } catch {
        // the next round reads again
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  try {
    await node.startKubelet();
    const tKubelet = performance.now();
    note('kubelet started again, node Ready');
    await withDiagnostics(
      waitFor(() => claimGoneAt !== undefined, {
        what: `claim ${CLAIM1} deleted`,
        timeoutMs: 300_000,
        intervalMs: 500,
      }),
    );
    const opPods = await client.listAll<V1Pod & KubeObject>(Resources.pod, {
      namespace: releaseNs,
      labelSelector: 'app.kubernetes.io/component=operator',
    });
    const restarts = opPods.items.map(
      (p) => p.status?.containerStatuses?.find((x) => x.name === 'operator')?.restartCount ?? 0,
    );
    note(
      `operator restarts ${JSON.stringify(restarts)}; claim deleted ${((performance.now() - tOperatorKilled) / 1000).toFixed(1)} s after the operator was killed`,
    );
    assert.ok(
      restarts.some((r) => r >= 1),
      'the claim was deleted by a restarted operator process (restartCount >= 1)',
    );
    note(
      `drainer Complete seen ${(((jobCompleteAt ?? NaN) - tKubelet) / 1000).toFixed(1)} s after the kubelet came back (${(((jobCompleteAt ?? NaN) - tJob) / 1000).toFixed(1)} s after the Job was created); claim deleted ${(((claimGoneAt ?? NaN) - tKubelet) / 1000).toFixed(1)} s after the kubelet came back`,
    );
  } finally {
    watching = false;
    await watch;
  }
  assert.ok(
    jobCompleteAt !== undefined && claimGoneAt !== undefined && jobCompleteAt <= claimGoneAt,
    'the claim was deleted only after its drainer Job was Complete',
  );
  if (!/"segmentsDelivered"/.test(jobLog)) jobLog = drainerLogFromNode();
  const summaryLine =
    jobLog.split('\n').find((l) => l.includes('"segmentsDelivered"') && l.includes('"drained"')) ?? '';
  note(`drainer said: ${summaryLine.trim()}`);
  const summary = JSON.parse(summaryLine.slice(summaryLine.indexOf('{'))) as {
    drained: boolean;
    segmentsDelivered: number;
  };
  assert.equal(summary.drained, true);
  assert.ok(summary.segmentsDelivered > 0, 'the drainer delivered the backlog (not an empty volume)');

  // Only the drainer could have delivered ordinal 1's records: its pod never sealed a segment.
  const missing1 = await missingIn(acked1, 60_000);
  note(`${POD1}: ${acked1.length} acked ids, ${missing1.length} missing in MinIO after the drainer`);
  assert.deepEqual(missing1.slice(0, 10), []);

  // Ordinal 0's backlog (the kubelet was down for it too) goes on a scale to 0.
  await kube.kubectl(['scale', `endpoints.landfall.dev/${EP}`, '--replicas=0', '-n', ns]);
  await withDiagnostics(
    waitFor(
      async () =>
        (await client.listAll(Resources.pvc, { namespace: ns, labelSelector: `landfall.dev/endpoint=${EP}` }))
          .items.length === 0,
      { what: 'scaled to 0, every claim gone', timeoutMs: 300_000, intervalMs: 1000 },
    ),
  );
  const missing = await missingIn(ackedAll, 60_000);
  note(
    `all: ${c.requests} requests, ${c.acked} acked (${ackedAll.length} ids), ${c.refused} refused, ${c.unknown} unknown; acknowledged ids missing in MinIO: ${missing.length}${missing.length > 0 ? ` e.g. ${missing.slice(0, 5).join(', ')}` : ''}`,
  );
  assert.equal(missing.length, 0);
});
