// `kubectl drain` of the real node (test/harness/node.ts) under producer load,
// issue 13's disruption part: the chart's operator in the cluster, the MinIO
// example Endpoint with 2 replicas on local PVs, producers with a ledger of
// acknowledged ids.
// - The PDB is accepted with maxUnavailable 0 and the API server's eviction
//   API refuses to evict a running ingest pod (429).
// - kubectl drain under load completes: the operator sees the cordon, drains
//   each replica (POST /v1/drain), and only once it is drained deletes its
//   claim and pod; the operator pod is SIGKILLed (force delete) in the middle
//   and its successor finishes the job.
// - Every old claim is deleted, and no commit marker of the old WAL epoch is
//   newer than its claim's deletion: delivery came first.
// - After uncordon the pods come back Ready on fresh local PVs (new claims,
//   new PVs, a new epoch in S3) and every acknowledged id is committed
//   (read back with `landfall expand`).
// The operator's own pod: on this one-node cluster an evicted operator would
// have nowhere to go and nobody would drain the ingest pods (kubectl drain
// would wait on the PDB for ever). So the chart gets a toleration for the
// unschedulable taint (a SIGKILLed operator comes back on the cordoned node)
// and kubectl drain a pod selector that leaves the operator alone.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { HttpMethod } from '@kubernetes/client-node';
import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import {
  buildRepoImages,
  repoRoot,
  startKubernetes,
  startMinio,
  waitFor,
  NODE_NAME,
} from '../harness/index.ts';
import type { KubernetesTestbed, MinioServer, RepoImages } from '../harness/index.ts';
import { Ledger } from './helpers/ledger.ts';
import { committedIdCounts } from './helpers/committed.ts';
import { KubeApiError, KubeClient, Resources } from '../../operator/src/runtime/kube.ts';
import type { KubeObject } from '../../operator/src/runtime/kube.ts';
import { Informer } from '../../operator/src/runtime/informer.ts';
import { silentLogger } from '../../operator/src/runtime/log.ts';

let kube: KubernetesTestbed;
let minio: MinioServer;
let images: RepoImages;
let ns = '';
let releaseNs = '';
let endpointName = '';
const API_KEY = 'lf_live_3f9c2e51b0d84a7e9d1c6b2a4f0e8d7c';
const REPLICAS = 2;
const t0 = performance.now();
const elapsed = (): string => `${((performance.now() - t0) / 1000).toFixed(0)} s`;
const note = (s: string): void => void process.stderr.write(`[node-drain ${elapsed()}] ${s}\n`);

type Obj = {
  kind: string;
  metadata: { name: string };
  spec?: Record<string, unknown>;
  stringData?: Record<string, string>;
};
type Cond = { type: string; status: string; reason: string; message: string };

before(async () => {
  minio = await startMinio();
  // 2 volumes for the first pods, 2 fresh ones for their replacements.
  kube = await startKubernetes({ node: { localVolumes: 4 } });
  assert.ok(kube.node !== undefined);
  images = await buildRepoImages(kube.node);
  note(`images ${images.operator} ${images.ingestNode}`);
});
after(async () => {
  await kube?.stop();
  await minio?.stop();
});

async function getJson<T>(args: string[]): Promise<T> {
  return JSON.parse((await kube.kubectl([...args, '-o', 'json'])).stdout) as T;
}

async function pods(): Promise<V1Pod[]> {
  return (await getJson<{ items: V1Pod[] }>(['get', 'pods', '-n', ns])).items;
}

async function diagnostics(): Promise<string> {
  const out: string[] = [];
  for (const args of [
    ['get', 'nodes,pods,pvc,pv,pdb', '-A', '-o', 'wide'],
    ['get', 'events', '-n', ns],
    ['get', 'endpoints.landfall.dev', '-n', ns, '-o', 'yaml'],
    ['logs', '-n', releaseNs, '-l', 'app.kubernetes.io/component=operator', '--tail=40'],
  ])
    out.push((await kube.kubectl(args).catch((e: unknown) => ({ stdout: String(e) }))).stdout);
  return out.join('\n');
}

void test('helm install (operator tolerates the cordon) → MinIO Endpoint, 2 replicas Ready on local PVs → PDB maxUnavailable 0 accepted, eviction refused with 429', async () => {
  const node = kube.node;
  assert.ok(node !== undefined);
  releaseNs = await kube.newNamespace('landfall-system');
  const [repo, tag] = images.operator.split(':');
  const [nodeRepo, nodeTag] = images.ingestNode.split(':');
  await kube.helm(
    ['install', 'lf', join(repoRoot, 'charts', 'landfall'), '-n', releaseNs,
      '--set', `image.repository=${repo ?? ''},image.tag=${tag ?? ''},image.pullPolicy=Never`,
      '--set', `nodeImage.repository=${nodeRepo ?? ''},nodeImage.tag=${nodeTag ?? ''}`,
      '--set', 'tolerations[0].key=node.kubernetes.io/unschedulable',
      '--set', 'tolerations[0].operator=Exists',
      '--set', 'tolerations[0].effect=NoSchedule'],
    { timeoutMs: 120_000 },
  ); // prettier-ignore
  await kube.kubectl(['rollout', 'status', 'deployment/lf-landfall', '-n', releaseNs, '--timeout=120s'], {
    timeoutMs: 130_000,
  });

  ns = await kube.newNamespace('analytics');
  const s3Host = await node.exposeHostPort(Number(new URL(minio.endpoint).port));
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
      // Markers every few seconds, so the old epoch has commits before the drain.
      d.spec = { ...d.spec, replicas: REPLICAS, segmentPolicy: { segmentAgeMsMax: 3000 } };
    }
  }
  await kube.kubectl(['apply', '-n', ns, '-f', join(repoRoot, 'docs', 'examples', 'api-keys-secret.yaml')]);
  await kube.kubectl(['apply', '-n', ns, '-f', '-'], {
    input: docs.map((d) => JSON.stringify(d)).join('\n---\n'),
  });
  endpointName = docs.find((d) => d.kind === 'Endpoint')?.metadata.name ?? '';
  assert.ok(endpointName !== '');
  try {
    await waitFor(
      async () => {
        const sts = await getJson<{ items: Array<{ status?: { readyReplicas?: number } }> }>([
          'get', 'statefulset', '-n', ns,
        ]); // prettier-ignore
        return sts.items.length === 1 && (sts.items[0]?.status?.readyReplicas ?? 0) >= REPLICAS;
      },
      { what: `${REPLICAS} ingest pods Ready`, timeoutMs: 240_000, intervalMs: 500 },
    );
  } catch (err) {
    throw new Error(`${String(err)}\n${await diagnostics()}`, { cause: err });
  }
  note('ingest pods Ready');

  // The PDB as the API server stores it, and as the disruption controller counts it.
  const pdbName = `${endpointName}-ingest`;
  type Pdb = {
    metadata: { generation: number };
    spec: { maxUnavailable?: number | string };
    status?: {
      observedGeneration?: number;
      expectedPods?: number;
      currentHealthy?: number;
      disruptionsAllowed?: number;
    };
  };
  const pdb = await waitFor(
    async () => {
      const p = await getJson<Pdb>(['get', 'pdb', pdbName, '-n', ns]);
      const s = p.status;
      return s?.observedGeneration === p.metadata.generation &&
        s.expectedPods === REPLICAS &&
        s.currentHealthy === REPLICAS
        ? p
        : undefined;
    },
    { what: 'the disruption controller counted both healthy pods', timeoutMs: 60_000, intervalMs: 500 },
  );
  assert.equal(pdb.spec.maxUnavailable, 0);
  // With maxUnavailable 1 (the old PDB) this would be 1 with both pods healthy.
  assert.equal(pdb.status?.disruptionsAllowed, 0);

  const client = new KubeClient(kube.kubeConfig);
  const victim = `${endpointName}-ingest-0`;
  const before = (await pods()).find((p) => p.metadata?.name === victim);
  assert.equal(before?.status?.phase, 'Running');
  const refused = await client
    .request(HttpMethod.POST, `/api/v1/namespaces/${ns}/pods/${victim}/eviction`, {
      body: { apiVersion: 'policy/v1', kind: 'Eviction', metadata: { name: victim, namespace: ns } },
    })
    .then(
      () => undefined,
      (err: unknown) => err,
    );
  assert.ok(refused instanceof KubeApiError, `the eviction was accepted: ${String(refused)}`);
  assert.equal(refused.code, 429, refused.message);
  assert.match(refused.message, /disruption budget/);
  const still = (await pods()).find((p) => p.metadata?.name === victim);
  assert.equal(still?.metadata?.uid, before?.metadata?.uid, 'the pod was not evicted');
  assert.equal(still?.metadata?.deletionTimestamp, undefined);
  note(`eviction of ${victim}: ${refused.code} ${refused.message.slice(0, 160)}`);
});

/** Ready, not terminating ingest pods by name → IP. */
async function podIps(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const p of await pods()) {
    const ready = p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
    if (ready && p.metadata?.deletionTimestamp === undefined && p.status?.podIP !== undefined)
      out.set(p.metadata?.name ?? '', p.status.podIP);
  }
  return out;
}

const committedIds = (): Promise<Map<string, number>> => committedIdCounts(minio, { endpointName });

interface Marker {
  instance: string;
  epoch: string;
  lastModified: Date;
}

/** Commit markers: {prefix}/commits/{endpoint}/{instance}/{epoch}/{segment}.json */
async function markers(): Promise<Marker[]> {
  const s3 = minio.s3();
  const out: Marker[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({
        Bucket: minio.bucket,
        Prefix: `landfall/commits/${endpointName}/`,
        ContinuationToken: token,
      }),
    );
    for (const o of page.Contents ?? []) {
      const parts = (o.Key ?? '').split('/');
      if (parts.length === 6 && o.LastModified)
        out.push({ instance: parts[3] ?? '', epoch: parts[4] ?? '', lastModified: o.LastModified });
    }
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return out;
}

void test('kubectl drain under load, operator SIGKILLed mid-way: drain completes, claims deleted only after delivery, pods back on fresh PVs after uncordon, 0 acknowledged ids lost', async () => {
  assert.ok(ns !== '', 'the first test set the Endpoint up');
  const node = kube.node;
  assert.ok(node !== undefined);
  const client = new KubeClient(kube.kubeConfig);

  // Claims as the API server changes them: the moment each old one got its deletionTimestamp.
  const claims = new Informer<V1PersistentVolumeClaim & KubeObject>({
    client,
    resource: Resources.pvc,
    namespace: ns,
    log: silentLogger,
    resyncPeriodMs: 0,
  });
  const claimDeleted = new Map<string, Date>(); // claim uid → deletionTimestamp
  const claimGone = new Set<string>();
  const track = (c: V1PersistentVolumeClaim & KubeObject): void => {
    const uid = c.metadata?.uid ?? '';
    const ts = c.metadata?.deletionTimestamp;
    if (ts !== undefined && !claimDeleted.has(uid)) claimDeleted.set(uid, new Date(ts));
  };
  claims.on('add', track);
  claims.on('update', track);
  claims.on('delete', (c) => {
    track(c);
    claimGone.add(c.metadata?.uid ?? '');
  });
  await claims.start();

  const oldClaims = claims
    .list()
    .map((c) => ({ name: c.metadata?.name ?? '', uid: c.metadata?.uid ?? '', pv: c.spec?.volumeName ?? '' }));
  assert.equal(oldClaims.length, REPLICAS);
  for (const c of oldClaims) assert.ok(node.localVolumes.includes(c.pv), `${c.name} on a local PV`);

  const ledger = new Ledger();
  let ips = await podIps();
  let stopped = false;
  const follow = (async () => {
    while (!stopped) {
      ips = await podIps().catch(() => ips);
      await new Promise((r) => setTimeout(r, 300));
    }
  })();
  let counter = 0;
  const producer = async (p: number): Promise<void> => {
    while (!stopped) {
      const targets = [...ips.values()];
      const ip = targets[counter % Math.max(1, targets.length)];
      const reqId = `drain.${p}.${counter++}`;
      const ids = Array.from({ length: 5 }, (_, j) => `${reqId}.${j}`);
      const req = ledger.add(reqId, ids);
      if (ip === undefined) {
        ledger.settle(req, { kind: 'unknown', reason: 'no Ready pod' });
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      try {
        const res = await fetch(`http://${ip}:8080/v1/ingest`, {
          method: 'POST',
          headers: { 'x-api-key': API_KEY, 'content-type': 'application/x-ndjson' },
          body: ids.map((id) => `{"id":"${id}","event":"page_view"}`).join('\n') + '\n',
          signal: AbortSignal.timeout(10_000),
        });
        const text = await res.text();
        ledger.settle(
          req,
          res.status === 202
            ? { kind: 'acked', firstSeq: undefined, lastSeq: undefined }
            : {
                kind: 'refused',
                status: res.status,
                code: /"code":"([A-Z_]+)"/.exec(text)?.[1],
                retryAfter: res.headers.get('retry-after'),
              },
        );
        if (res.status !== 202) await new Promise((r) => setTimeout(r, 100));
      } catch (err) {
        ledger.settle(req, { kind: 'unknown', reason: String(err) });
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  const producers = Promise.all([0, 1, 2].map((p) => producer(p)));

  let killedAt: string | undefined;
  let oldEpochs = new Map<string, Set<string>>();
  let drainMs: number | undefined;
  try {
    await waitFor(() => ledger.counts().acked >= 30, { what: '30 acknowledged requests', timeoutMs: 60_000 });
    // The old epoch of each replica has commits before the drain starts.
    const before = await waitFor(
      async () => {
        const m = await markers();
        const byPod = new Map<string, Set<string>>();
        for (const x of m) byPod.set(x.instance, (byPod.get(x.instance) ?? new Set()).add(x.epoch));
        return byPod.size === REPLICAS ? byPod : undefined;
      },
      { what: 'commit markers of both replicas', timeoutMs: 60_000, intervalMs: 1000 },
    );
    oldEpochs = before;
    note(
      `before the drain: ${ledger.counts().acked} acked; epochs ${JSON.stringify([...before].map(([k, v]) => [k, [...v]]))}`,
    );

    const drainStartMs = performance.now();
    const drain = kube.kubectl(
      ['drain', NODE_NAME, '--ignore-daemonsets', '--delete-emptydir-data',
        '--pod-selector=app.kubernetes.io/component!=operator', '--timeout=600s'],
      { timeoutMs: 620_000 },
    ); // prettier-ignore
    // The operator dies (SIGKILL: force delete, no grace) as soon as it reports the node drain.
    const killer = (async () => {
      const cond = await waitFor(
        async () => {
          const ep = await getJson<{ status?: { conditions?: Cond[] } }>([
            'get', 'endpoints.landfall.dev', endpointName, '-n', ns,
          ]); // prettier-ignore
          return ep.status?.conditions?.find((c) => c.type === 'NodeDrain');
        },
        { what: 'the NodeDrain condition', timeoutMs: 120_000, intervalMs: 200 },
      );
      await kube.kubectl(['delete', 'pod', '-n', releaseNs, '-l', 'app.kubernetes.io/component=operator',
        '--force', '--grace-period=0']); // prettier-ignore
      killedAt = `${cond.reason}: ${cond.message}`;
      note(`operator SIGKILLed at NodeDrain ${killedAt}`);
    })();
    // Awaited after the drain; a drain that fails first must not leave it unhandled.
    killer.catch(() => undefined);
    let drainOut: string;
    try {
      drainOut = (await drain).stdout;
    } catch (err) {
      throw new Error(`kubectl drain failed: ${String(err)}\n${await diagnostics()}`, { cause: err });
    }
    drainMs = performance.now() - drainStartMs;
    await killer;
    note(`kubectl drain completed in ${(drainMs / 1000).toFixed(1)} s:\n${drainOut}`);
    assert.match(drainOut, /drained/);
    assert.ok(killedAt !== undefined, 'the operator was killed during the drain');

    // Both old claims were deleted.
    for (const c of oldClaims) assert.ok(claimDeleted.has(c.uid), `${c.name} (${c.uid}) was deleted`);

    // While the node is cordoned the StatefulSet recreates pod and claim, and
    // both wait: the claim is WaitForFirstConsumer and the scheduler skips the
    // cordoned node, so nothing binds to it (there is no other node here).
    const recreated = await waitFor(
      () => {
        const cl = claims
          .list()
          .filter(
            (c) =>
              !oldClaims.some((o) => o.uid === c.metadata?.uid) &&
              c.metadata?.deletionTimestamp === undefined,
          );
        return cl.length === REPLICAS ? cl : undefined;
      },
      { what: 'the StatefulSet recreated both claims', timeoutMs: 60_000, intervalMs: 500 },
    );
    for (const c of recreated)
      assert.equal(c.status?.phase, 'Pending', `${c.metadata?.name ?? ''} waits for a schedulable node`);
    for (const p of await pods())
      assert.equal(
        p.spec?.nodeName,
        undefined,
        `${p.metadata?.name ?? ''} is not scheduled on the cordoned node`,
      );
    note('while cordoned: new claims Pending (WaitForFirstConsumer), new pods unscheduled');
    await kube.kubectl(['uncordon', NODE_NAME]);
    await waitFor(
      async () => {
        const sts = await getJson<{ status?: { readyReplicas?: number } }>([
          'get', 'statefulset', `${endpointName}-ingest`, '-n', ns,
        ]); // prettier-ignore
        return (sts.status?.readyReplicas ?? 0) >= REPLICAS;
      },
      { what: 'both replicas Ready again after uncordon', timeoutMs: 240_000, intervalMs: 500 },
    ).catch(async (err: unknown) => {
      throw new Error(`${String(err)}\n${await diagnostics()}`, { cause: err });
    });
    note('replicas Ready again');
    const ackedAfter = ledger.counts().acked;
    await waitFor(() => ledger.counts().acked >= ackedAfter + 30, {
      what: '30 more acknowledged on the new pods',
      timeoutMs: 60_000,
    });
  } finally {
    stopped = true;
    await producers;
    await follow;
  }

  // Fresh claims on fresh local PVs.
  const fresh = claims.list().filter((c) => c.metadata?.deletionTimestamp === undefined);
  assert.equal(fresh.length, REPLICAS);
  for (const c of fresh) {
    assert.ok(!oldClaims.some((o) => o.uid === c.metadata?.uid), `${c.metadata?.name ?? ''} is a new claim`);
    const pv = c.spec?.volumeName ?? '';
    assert.ok(node.localVolumes.includes(pv), `${pv} is a local PV`);
    assert.ok(!oldClaims.some((o) => o.pv === pv), `${pv} is not an old claim's PV`);
  }
  for (const p of await pods()) assert.equal(p.spec?.nodeName, NODE_NAME);

  // Every acknowledged id is committed; the new pods write a new epoch.
  const acked = ledger.requests.filter((r) => r.outcome?.kind === 'acked').flatMap((r) => r.recordIds);
  let missing: string[] = [];
  let all: Marker[] = [];
  await waitFor(
    async () => {
      const ids = await committedIds();
      missing = acked.filter((id) => !ids.has(id));
      all = await markers();
      const newEpochs = [...oldEpochs].every(([pod, epochs]) =>
        all.some((m) => m.instance === pod && !epochs.has(m.epoch)),
      );
      return missing.length === 0 && newEpochs;
    },
    {
      what: 'every acknowledged id committed, and a new epoch per replica',
      timeoutMs: 120_000,
      intervalMs: 2000,
    },
  ).catch((err: unknown) => {
    throw new Error(
      `${String(err)}: ${missing.length} of ${acked.length} acknowledged ids missing, e.g. ${missing.slice(0, 5).join(', ')}`,
    );
  });

  // Delivery before deletion: no marker of a replica's old WAL is newer than
  // the deletion of that replica's old claim (the API server's timestamp has
  // whole seconds: compare seconds).
  for (const c of oldClaims) {
    const pod = c.name.replace(/^data-/, '');
    const deletedAt = claimDeleted.get(c.uid);
    assert.ok(deletedAt !== undefined);
    const old = all.filter((m) => m.instance === pod && oldEpochs.get(pod)?.has(m.epoch) === true);
    assert.ok(old.length > 0);
    const last = Math.max(...old.map((m) => Math.floor(m.lastModified.getTime() / 1000)));
    assert.ok(
      last <= deletedAt.getTime() / 1000,
      `${pod}: a marker of its old epoch (${new Date(last * 1000).toISOString()}) is newer than the deletion of ${c.name} (${deletedAt.toISOString()})`,
    );
    note(
      `${pod}: ${old.length} old-epoch markers, last ${new Date(last * 1000).toISOString()}; ${c.name} deleted ${deletedAt.toISOString()}`,
    );
  }
  await claims.stop();

  const events = (await kube.kubectl(['get', 'events', '-n', ns, '--field-selector', `involvedObject.name=${endpointName}`])).stdout; // prettier-ignore
  const c = ledger.counts();
  note(
    `drain ${((drainMs ?? 0) / 1000).toFixed(1)} s; ${c.requests} requests, ${c.acked} acked (${c.ackedRecords} ids), ${c.refused} refused ${JSON.stringify([...ledger.refusals()])}, ${c.unknown} unknown; acknowledged ids missing in MinIO: ${missing.length}\n${events}`,
  );
  assert.match(events, /ReplicaMoved/);
  assert.equal(missing.length, 0);
});
