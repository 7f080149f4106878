// Scale-down and deletion on the real node (issue 13, must-show): helm install
// the chart with the locally built images, the MinIO example Endpoint on
// local PVs, producers posting to the Ready pods with a ledger of every
// acknowledged id; then
//   - scale 3 → 1 (the operator pod SIGKILLed in the middle) → 0: every acked
//     id committed to MinIO (read back with `landfall expand`), the removed
//     ordinals' claims deleted, each only after its drainer Job was seen
//     Complete;
//   - delete an Endpoint with `kubectl delete --cascade=foreground` under load,
//     the operator's process SIGKILLed (crictl stop --timeout 0) once the
//     finalizer has drained the replicas and made the first drainer Job: it
//     goes without the force annotation, its claims too, no acked id lost.
// One helm install for the file. Waits are polls with deadlines.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
import type { V1Job, V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { buildRepoImages, repoRoot, startKubernetes, startMinio, waitFor } from '../harness/index.ts';
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
let endpointDoc: Obj | undefined;
const API_KEY = 'lf_live_3f9c2e51b0d84a7e9d1c6b2a4f0e8d7c';

type Obj = {
  kind: string;
  metadata: { name: string };
  spec?: Record<string, unknown>;
  stringData?: Record<string, string>;
};
type Cond = { type: string; status: string; reason: string; message: string };

before(async () => {
  minio = await startMinio();
  // Scale test: 3 volumes; deletion test: 2 more (a deleted claim's local PV stays Released).
  kube = await startKubernetes({ node: { localVolumes: 6 } });
  assert.ok(kube.node !== undefined);
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
      endpointDoc = d;
    }
  }
  await kube.kubectl(['apply', '-n', ns, '-f', join(repoRoot, 'docs', 'examples', 'api-keys-secret.yaml')]);
  await kube.kubectl(['apply', '-n', ns, '-f', '-'], {
    input: docs
      .filter((d) => d.kind !== 'Endpoint')
      .map((d) => JSON.stringify(d))
      .join('\n---\n'),
  });
});

after(async () => {
  await kube?.stop();
  await minio?.stop();
});

async function applyEndpoint(name: string, replicas: number): Promise<void> {
  assert.ok(endpointDoc);
  const doc = { ...endpointDoc, metadata: { name }, spec: { ...endpointDoc.spec, replicas } };
  await kube.kubectl(['apply', '-n', ns, '-f', '-'], { input: JSON.stringify(doc) });
  await waitForReady(name, replicas);
}

async function diagnostics(name: string): Promise<string> {
  const out = await Promise.all(
    [
      kube.kubectl(['get', 'pods,pvc,jobs,statefulsets', '-n', ns, '-o', 'wide']),
      kube.kubectl(['get', 'events', '-n', ns, '--sort-by=.lastTimestamp']),
      kube.kubectl(['get', 'endpoints.landfall.dev', name, '-n', ns, '-o', 'yaml']),
      kube.kubectl(['logs', '-n', releaseNs, 'deployment/lf-landfall', '--tail=40']),
    ].map((p) => p.then((r) => r.stdout).catch((e: unknown) => String(e))),
  );
  return out.join('\n');
}

async function waitForReady(name: string, replicas: number): Promise<void> {
  await waitFor(async () => (await readyPods(name)).size >= replicas, {
    what: `${replicas} ${name} pods Ready`,
    timeoutMs: 240_000,
    intervalMs: 500,
  }).catch(async (err: unknown) => {
    throw new Error(`${String(err)}\n${await diagnostics(name)}`, { cause: err });
  });
}

async function readyPods(name: string): Promise<Map<string, string>> {
  const pods = await client.listAll<V1Pod & KubeObject>(Resources.pod, {
    namespace: ns,
    labelSelector: `landfall.dev/endpoint=${name}`,
  });
  const out = new Map<string, string>();
  for (const p of pods.items) {
    const ready = p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
    if (ready && p.metadata?.deletionTimestamp === undefined && p.status?.podIP !== undefined)
      out.set(p.metadata?.name ?? '', p.status.podIP);
  }
  return out;
}

const committedIds = (name: string): Promise<Map<string, number>> =>
  committedIdCounts(minio, { endpointName: name });

/** Producers posting to the Ready pods of an Endpoint (following them), every outcome in the ledger. */
function startLoad(name: string): { ledger: Ledger; stop: () => Promise<void> } {
  const ledger = new Ledger();
  let ips = new Map<string, string>();
  let stopped = false;
  const follow = (async () => {
    while (!stopped) {
      ips = await readyPods(name).catch(() => ips);
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  let counter = 0;
  const producer = async (p: number): Promise<void> => {
    while (!stopped) {
      const targets = [...ips.values()];
      const ip = targets[counter % Math.max(1, targets.length)];
      const reqId = `${name}.${p}.${counter++}`;
      const ids = Array.from({ length: 5 }, (_, j) => `${reqId}.${j}`);
      const req = ledger.add(reqId, ids);
      if (ip === undefined) {
        ledger.settle(req, { kind: 'unknown', reason: 'no Ready pod' });
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      try {
        const res = await fetch(`http://${ip}:8080/v1/ingest`, {
          method: 'POST',
          headers: { 'x-api-key': API_KEY, 'content-type': 'application/x-ndjson' },
          body: ids.map((id) => `{"id":"${id}","event":"page_view"}`).join('\n') + '\n',
          signal: AbortSignal.timeout(10_000),
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
  const producers = Promise.all([0, 1, 2].map((p) => producer(p)));
  return {
    ledger,
    stop: async () => {
      stopped = true;
      await producers;
      await follow;
    },
  };
}

async function expectAllCommitted(name: string, ledger: Ledger, label: string): Promise<number> {
  const acked = ledger.requests.filter((r) => r.outcome?.kind === 'acked').flatMap((r) => r.recordIds);
  let missing: string[] = [];
  await waitFor(
    async () => {
      const ids = await committedIds(name);
      missing = acked.filter((id) => !ids.has(id));
      return missing.length === 0;
    },
    { what: 'every acknowledged id committed to MinIO', timeoutMs: 60_000, intervalMs: 2000 },
  ).catch(() => undefined);
  const c = ledger.counts();
  process.stderr.write(
    `[node-scale] ${label}: ${c.requests} requests, ${c.acked} acked (${c.ackedRecords} ids), ${c.refused} refused, ${c.unknown} unknown; acknowledged ids missing in MinIO: ${missing.length}${missing.length > 0 ? ` e.g. ${missing.slice(0, 5).join(', ')}` : ''}\n`,
  );
  return missing.length;
}

type ReclaimSeen = { jobSeenAt?: number; jobCompleteAt?: number; deletedAt?: number; summary?: string };

/**
 * Watches an Endpoint's claims and drainer Jobs (every 200 ms) and records,
 * per claim, when its Job was first seen Complete and when the claim was first
 * seen deleting or gone; a claim deleted before its Job was seen Complete is a
 * violation.
 */
function watchReclaim(name: string): {
  stop: () => Promise<void>;
  claims: Map<string, ReclaimSeen>;
} {
  const claims = new Map<string, ReclaimSeen>();
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      try {
        const [pvcs, jobs] = await Promise.all([
          client.listAll<V1PersistentVolumeClaim & KubeObject>(Resources.pvc, {
            namespace: ns,
            labelSelector: `landfall.dev/endpoint=${name}`,
          }),
          client.listAll<V1Job & KubeObject>(Resources.job, {
            namespace: ns,
            labelSelector: `landfall.dev/drainer-endpoint=${name}`,
          }),
        ]);
        const now = performance.now();
        const present = new Set<string>();
        for (const p of pvcs.items) {
          const n = p.metadata?.name ?? '';
          present.add(n);
          const e = claims.get(n) ?? {};
          claims.set(n, e);
          if (p.metadata?.deletionTimestamp !== undefined) e.deletedAt ??= now;
        }
        for (const [n, e] of claims) if (!present.has(n)) e.deletedAt ??= now;
        for (const j of jobs.items) {
          const claim = j.metadata?.ownerReferences?.[0]?.name ?? '';
          const e = claims.get(claim);
          const complete = j.status?.conditions?.some((c) => c.type === 'Complete' && c.status === 'True');
          if (e) e.jobSeenAt ??= now;
          if (e && complete && e.jobCompleteAt === undefined) {
            e.jobCompleteAt = now;
            const logs = await kube
              .kubectl(['logs', '-n', ns, `job/${j.metadata?.name ?? ''}`, '--tail=1'])
              .catch(() => ({ stdout: '' }));
            e.summary = logs.stdout.trim();
          }
        }
      } catch {
        // the next round reads again
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  return {
    claims,
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}

/** SIGKILL of the operator's process (crictl stop --timeout 0), not a pod delete: the kubelet restarts it in the same pod. */
async function killOperatorContainer(): Promise<void> {
  assert.ok(kube.node !== undefined);
  const ps = await kube.node.crictl([
    'ps',
    '-q',
    '--name',
    '^operator$',
    '--label',
    `io.kubernetes.pod.namespace=${releaseNs}`,
  ]);
  const ids = ps.stdout.split('\n').filter((l) => l.trim() !== '');
  assert.equal(ids.length, 1, `one running operator container: ${ps.stdout}`);
  await kube.node.crictl(['stop', '--timeout', '0', ids[0] ?? '']);
}

const operatorRestarts = async (): Promise<number> =>
  Math.max(
    0,
    ...(
      await client.listAll<V1Pod & KubeObject>(Resources.pod, {
        namespace: releaseNs,
        labelSelector: 'app.kubernetes.io/component=operator',
      })
    ).items.map((p) => p.status?.containerStatuses?.find((c) => c.name === 'operator')?.restartCount ?? 0),
  );

const stsReplicas = async (name: string): Promise<number | undefined> =>
  (
    await client.get<KubeObject & { spec?: { replicas?: number } }>(
      Resources.statefulSet,
      ns,
      `${name}-ingest`,
    )
  )?.spec?.replicas;

void test('scale 3 → 1 → 0 under load, the operator SIGKILLed in the middle: no acked id missing, claims deleted only after their drainers succeeded', async () => {
  const t0 = performance.now();
  const phase = (label: string): void => {
    process.stderr.write(`[node-scale] ${label} at ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  };
  await applyEndpoint('clicks', 3);
  phase('3 replicas Ready');
  const load = startLoad('clicks');
  const reclaim = watchReclaim('clicks');
  try {
    await waitFor(() => load.ledger.counts().acked >= 30, { what: '30 acked requests', timeoutMs: 60_000 });
    await kube.kubectl(['scale', 'endpoints.landfall.dev/clicks', '--replicas=1', '-n', ns]);
    // In the middle: as soon as the operator has started on it (drain mode
    // posted, the StatefulSet held with the drain-from annotation), usually
    // before the StatefulSet is lowered.
    await waitFor(
      async () => {
        const s = await client.get<KubeObject & { spec?: { replicas?: number } }>(
          Resources.statefulSet,
          ns,
          'clicks-ingest',
        );
        return (
          s?.metadata?.annotations?.['landfall.dev/drain-from-ordinal'] !== undefined ||
          s?.spec?.replicas !== 3
        );
      },
      { what: 'the scale-down started', timeoutMs: 60_000, intervalMs: 50 },
    );
    const stsAtKill = await stsReplicas('clicks');
    await kube.kubectl(['delete', 'pod', '-n', releaseNs, '-l', 'app.kubernetes.io/component=operator',
      '--grace-period=0', '--force', '--wait=false']); // prettier-ignore
    phase(`operator SIGKILLed (StatefulSet at ${stsAtKill ?? '?'} replicas)`);
    await waitFor(
      async () => {
        const e = reclaim.claims;
        return (
          (await stsReplicas('clicks')) === 1 &&
          ['data-clicks-ingest-1', 'data-clicks-ingest-2'].every((c) => e.get(c)?.deletedAt !== undefined)
        );
      },
      { what: 'StatefulSet at 1, claims of ordinals 1 and 2 deleted', timeoutMs: 300_000, intervalMs: 1000 },
    ).catch(async (err: unknown) => {
      throw new Error(`${String(err)}\n${await diagnostics('clicks')}`, { cause: err });
    });
    phase('3 → 1 done');
    const acked1 = load.ledger.counts().acked;
    await waitFor(() => load.ledger.counts().acked >= acked1 + 20, {
      what: '20 more acked',
      timeoutMs: 60_000,
    });
    await kube.kubectl(['scale', 'endpoints.landfall.dev/clicks', '--replicas=0', '-n', ns]);
    await waitFor(
      async () =>
        (await stsReplicas('clicks')) === 0 &&
        reclaim.claims.get('data-clicks-ingest-0')?.deletedAt !== undefined,
      { what: 'StatefulSet at 0, claim of ordinal 0 deleted', timeoutMs: 300_000, intervalMs: 1000 },
    ).catch(async (err: unknown) => {
      throw new Error(`${String(err)}\n${await diagnostics('clicks')}`, { cause: err });
    });
    phase('1 → 0 done');
    await waitFor(
      async () =>
        (
          await client.listAll(Resources.pvc, {
            namespace: ns,
            labelSelector: 'landfall.dev/endpoint=clicks',
          })
        ).items.length === 0,
      { what: 'every claim of clicks gone (not only deleting)', timeoutMs: 60_000, intervalMs: 500 },
    );
  } finally {
    await load.stop();
    await reclaim.stop();
  }
  for (const [claim, e] of reclaim.claims)
    process.stderr.write(
      `[node-scale] ${claim}: drainer Complete seen at ${(((e.jobCompleteAt ?? NaN) - t0) / 1000).toFixed(1)} s, claim deleting at ${(((e.deletedAt ?? NaN) - t0) / 1000).toFixed(1)} s; drainer said ${e.summary ?? '?'}\n`,
    );
  for (const c of ['data-clicks-ingest-0', 'data-clicks-ingest-1', 'data-clicks-ingest-2']) {
    const e = reclaim.claims.get(c);
    assert.ok(e?.jobCompleteAt !== undefined, `${c}: its drainer Job was seen Complete`);
    assert.ok(
      e.deletedAt !== undefined && e.jobCompleteAt <= e.deletedAt,
      `${c}: deleted only after its drainer succeeded`,
    );
  }
  const ep = await client.get<KubeObject & { status?: { conditions?: Cond[] } }>(
    { apiVersion: 'landfall.dev/v1alpha1', kind: 'Endpoint', plural: 'endpoints', namespaced: true },
    ns,
    'clicks',
  );
  assert.equal(ep?.status?.conditions?.find((c) => c.type === 'Ready')?.reason, 'ScaledToZero');
  const missing = await expectAllCommitted('clicks', load.ledger, 'scale 3 → 1 → 0');
  assert.ok(load.ledger.counts().acked > 0);
  assert.equal(missing, 0);
});

void test('kubectl delete --cascade=foreground under load, the operator SIGKILLed in the middle: the Endpoint goes without force, its claims too, no acked id missing', async () => {
  const t0 = performance.now();
  await applyEndpoint('orders', 2);
  const load = startLoad('orders');
  const reclaim = watchReclaim('orders');
  try {
    await waitFor(() => load.ledger.counts().acked >= 30, { what: '30 acked requests', timeoutMs: 60_000 });
    await kube.kubectl([
      'delete',
      'endpoints.landfall.dev',
      'orders',
      '-n',
      ns,
      '--cascade=foreground',
      '--wait=false',
    ]);
    // In the middle: the finalizer has drained the replicas and made the
    // first drainer Job, no claim is deleted yet. The operator's container is
    // SIGKILLed through the runtime; the kubelet restarts it in place.
    await waitFor(
      async () =>
        (
          await client.listAll(Resources.job, {
            namespace: ns,
            labelSelector: 'landfall.dev/drainer-endpoint=orders',
          })
        ).items.length > 0,
      { what: 'the first drainer Job of orders', timeoutMs: 300_000, intervalMs: 100 },
    ).catch(async (err: unknown) => {
      throw new Error(`${String(err)}\n${await diagnostics('orders')}`, { cause: err });
    });
    const claimsAtKill = (
      await client.listAll<V1PersistentVolumeClaim & KubeObject>(Resources.pvc, {
        namespace: ns,
        labelSelector: 'landfall.dev/endpoint=orders',
      })
    ).items.filter((c) => c.metadata?.deletionTimestamp === undefined).length;
    await killOperatorContainer();
    process.stderr.write(
      `[node-scale] operator SIGKILLed ${((performance.now() - t0) / 1000).toFixed(1)} s in, the first drainer Job of orders created, ${claimsAtKill} of 2 claims not deleting\n`,
    );
    assert.equal(claimsAtKill, 2, 'the operator was killed before any claim of orders was deleted');
    await waitFor(async () => (await client.get(Resources.endpoint, ns, 'orders')) === undefined, {
      what: 'Endpoint orders gone (no force)',
      timeoutMs: 300_000,
      intervalMs: 1000,
    }).catch(async (err: unknown) => {
      throw new Error(`${String(err)}\n${await diagnostics('orders')}`, { cause: err });
    });
    process.stderr.write(
      `[node-scale] foreground delete finished in ${((performance.now() - t0) / 1000).toFixed(1)} s (incl. install)\n`,
    );
  } finally {
    await load.stop();
    await reclaim.stop();
  }
  assert.ok(
    (await operatorRestarts()) >= 1,
    'the finalizer was released by a restarted operator process (restartCount >= 1)',
  );
  const left = await client.listAll(Resources.pvc, {
    namespace: ns,
    labelSelector: 'landfall.dev/endpoint=orders',
  });
  assert.deepEqual(
    left.items.map((c) => c.metadata?.name),
    [],
    'no claim of orders left',
  );
  for (const c of ['data-orders-ingest-0', 'data-orders-ingest-1']) {
    const e = reclaim.claims.get(c);
    process.stderr.write(`[node-scale] ${c}: drainer said ${e?.summary ?? '?'}\n`);
    assert.ok(
      e?.jobCompleteAt !== undefined && e.deletedAt !== undefined && e.jobCompleteAt <= e.deletedAt,
      `${c}: deleted only after its drainer succeeded`,
    );
  }
  const missing = await expectAllCommitted('orders', load.ledger, 'foreground delete');
  assert.equal(missing, 0);
});
