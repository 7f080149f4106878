// The user's path on the real node (test/harness/node.ts):
// helm install the chart with the locally built operator image, kubectl apply
// the MinIO example Endpoint (MinIO on this machine, reached from pods at the
// bridge address), the ingest pods Running and Ready on local PVs, events
// POSTed to a pod, commit markers in MinIO; a segment policy change rolls the
// pods one at a time while producers run, and every acknowledged id is in
// MinIO after (read back with `landfall expand`); deleting the Endpoint drains.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { Writable } from 'node:stream';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import type { V1Pod } from '@kubernetes/client-node';
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
import { run as expand } from '../../ingest-node/src/commands/expand.ts';

let kube: KubernetesTestbed;
let minio: MinioServer;
let images: RepoImages;
// Set by the first test, used by the next ones.
let ns = '';
let endpointName = '';
let releaseNs = '';
const API_KEY = 'lf_live_3f9c2e51b0d84a7e9d1c6b2a4f0e8d7c';

before(async () => {
  minio = await startMinio();
  kube = await startKubernetes({ node: true });
  assert.ok(kube.node !== undefined);
  images = await buildRepoImages(kube.node);
});
after(async () => {
  await kube?.stop();
  await minio?.stop();
});

type Obj = {
  kind: string;
  metadata: { name: string };
  spec?: Record<string, unknown>;
  stringData?: Record<string, string>;
};

void test('helm install → Endpoint (MinIO example) → ingest pods Ready on local PVs → events → commit markers', async () => {
  const node = kube.node;
  assert.ok(node !== undefined);
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
    }
  }
  await kube.kubectl(['apply', '-n', ns, '-f', join(repoRoot, 'docs', 'examples', 'api-keys-secret.yaml')]);
  await kube.kubectl(['apply', '-n', ns, '-f', '-'], {
    input: docs.map((d) => JSON.stringify(d)).join('\n---\n'),
  });

  const endpoint = docs.find((d) => d.kind === 'Endpoint');
  assert.ok(endpoint !== undefined);
  const name = endpoint.metadata.name;
  endpointName = name;
  const replicas = Number(endpoint.spec?.['replicas'] ?? 1);
  try {
    await waitFor(
      async () => {
        const sts = JSON.parse(
          (await kube.kubectl(['get', 'statefulset', '-n', ns, '-o', 'json'])).stdout,
        ) as {
          items: Array<{ status?: { readyReplicas?: number } }>;
        };
        return sts.items.length === 1 && (sts.items[0]?.status?.readyReplicas ?? 0) >= replicas;
      },
      { what: `${replicas} ingest pods Ready`, timeoutMs: 240_000, intervalMs: 500 },
    );
  } catch (err) {
    const pods = await kube
      .kubectl(['get', 'pods,pvc', '-n', ns, '-o', 'wide'])
      .catch(() => ({ stdout: '' }));
    const ev = await kube.kubectl(['get', 'events', '-n', ns]).catch(() => ({ stdout: '' }));
    const op = await kube
      .kubectl(['logs', '-n', releaseNs, 'deployment/lf-landfall', '--tail=30'])
      .catch(() => ({ stdout: '' }));
    throw new Error(`${String(err)}\n${pods.stdout}\n${ev.stdout}\n${op.stdout}`, { cause: err });
  }
  const pods = (
    JSON.parse((await kube.kubectl(['get', 'pods', '-n', ns, '-o', 'json'])).stdout) as { items: V1Pod[] }
  ).items;
  assert.equal(pods.length, replicas);
  const pvcs = (
    await kube.kubectl(['get', 'pvc', '-n', ns, '-o', 'jsonpath={.items[*].spec.volumeName}'])
  ).stdout.split(' ');
  assert.equal(pvcs.length, replicas);
  for (const pv of pvcs) assert.ok(node.localVolumes.includes(pv), `${pv} is one of the node's local PVs`);
  for (const p of pods) {
    assert.equal(p.spec?.nodeName, NODE_NAME);
    assert.equal(p.status?.containerStatuses?.[0]?.image, images.ingestNode);
  }

  const key = API_KEY;
  let sent = 0;
  for (const p of pods) {
    const res = await fetch(`http://${p.status?.podIP ?? ''}:8080/v1/ingest`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/x-ndjson' },
      body:
        Array.from({ length: 10 }, (_, i) =>
          JSON.stringify({ event: 'page_view', n: i, pod: p.metadata?.name }),
        ).join('\n') + '\n',
    });
    assert.equal(res.status, 202, await res.text());
    sent += 10;
  }
  const s3 = minio.s3();
  const markers = await waitFor(
    async () => {
      const list = await s3.send(
        new ListObjectsV2Command({ Bucket: minio.bucket, Prefix: `landfall/commits/${name}/` }),
      );
      const keys = (list.Contents ?? []).map((o) => o.Key ?? '');
      return pods.every((p) => keys.some((k) => k.includes(`/${p.metadata?.name ?? ''}/`)))
        ? keys
        : undefined;
    },
    { what: 'commit markers in MinIO from every ingest pod', timeoutMs: 60_000, intervalMs: 500 },
  );
  const wide = await kube.kubectl(['get', 'pods,pvc', '-n', ns, '-o', 'wide']);
  process.stderr.write(`[node-endpoint] ${sent} events, ${markers.length} markers\n${wide.stdout}`);
});

async function podIps(): Promise<Map<string, string>> {
  const pods = (
    JSON.parse((await kube.kubectl(['get', 'pods', '-n', ns, '-o', 'json'])).stdout) as { items: V1Pod[] }
  ).items;
  const out = new Map<string, string>();
  for (const p of pods) {
    const ready = p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
    if (ready && p.metadata?.deletionTimestamp === undefined && p.status?.podIP !== undefined)
      out.set(p.metadata?.name ?? '', p.status.podIP);
  }
  return out;
}

/** Every record id committed to MinIO for the Endpoint, read back with the consumer CLI (`landfall expand`). */
async function committedIds(): Promise<Set<string>> {
  let out = '';
  let err = '';
  const code = await expand(
    ['--endpoint-name', endpointName, '--bucket', minio.bucket, '--prefix', 'landfall', '--quiet'],
    {
      out: (t) => (out += t),
      err: (t) => (err += t),
      env: {
        AWS_ACCESS_KEY_ID: minio.accessKeyId,
        AWS_SECRET_ACCESS_KEY: minio.secretAccessKey,
        AWS_REGION: minio.region,
        AWS_ENDPOINT_URL_S3: minio.endpoint,
      },
      stdout: new Writable({
        write(c: Buffer, _e, cb) {
          out += c.toString('utf8');
          cb();
        },
      }),
    },
  );
  assert.equal(code, 0, err);
  const ids = new Set<string>();
  for (const line of out.split('\n')) {
    const m = /^\{"id":"([^"]+)"/.exec(line);
    if (m?.[1] !== undefined) ids.add(m[1]);
  }
  return ids;
}

void test('a segment policy change rolls the pods one at a time; a producer ledger loses no acknowledged id', async () => {
  assert.ok(ns !== '', 'the first test set the Endpoint up');
  const ledger = new Ledger();
  let ips = await podIps();
  let stopped = false;
  const seen = { maxNotReady: 0 };
  // Follows the pods: a restarted pod comes back with another IP.
  const follow = (async () => {
    while (!stopped) {
      ips = await podIps().catch(() => ips);
      seen.maxNotReady = Math.max(seen.maxNotReady, 2 - ips.size);
      await new Promise((r) => setTimeout(r, 300));
    }
  })();
  let counter = 0;
  const producer = async (p: number): Promise<void> => {
    while (!stopped) {
      const targets = [...ips.values()];
      const ip = targets[counter % Math.max(1, targets.length)];
      const reqId = `roll.${p}.${counter++}`;
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
      } catch (err) {
        ledger.settle(req, { kind: 'unknown', reason: String(err) });
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  const producers = Promise.all([0, 1, 2].map((p) => producer(p)));

  const sts = `statefulset/${endpointName}-ingest`;
  const revision = async (): Promise<{
    current?: string;
    update?: string;
    ready?: number;
    updated?: number;
  }> => {
    const o = JSON.parse((await kube.kubectl(['get', sts, '-n', ns, '-o', 'json'])).stdout) as {
      status?: {
        currentRevision?: string;
        updateRevision?: string;
        readyReplicas?: number;
        updatedReplicas?: number;
      };
    };
    return {
      current: o.status?.currentRevision,
      update: o.status?.updateRevision,
      ready: o.status?.readyReplicas,
      updated: o.status?.updatedReplicas,
    };
  };
  const before = await revision();
  try {
    // Traffic first, then the change.
    await waitFor(() => ledger.counts().acked >= 20, { what: '20 acknowledged requests', timeoutMs: 30_000 });
    await kube.kubectl([
      'patch', 'endpoints.landfall.dev', endpointName, '-n', ns, '--type=merge',
      '-p', JSON.stringify({ spec: { segmentPolicy: { segmentAgeMsMax: 5000 } } }),
    ]); // prettier-ignore
    await waitFor(
      async () => {
        const r = await revision();
        return r.update !== before.update && r.current === r.update && r.ready === 2 && r.updated === 2;
      },
      { what: `${sts} rolled to a new revision with both pods Ready`, timeoutMs: 300_000, intervalMs: 500 },
    );
    // Some traffic on the new pods too.
    const ackedAfterRoll = ledger.counts().acked;
    await waitFor(() => ledger.counts().acked >= ackedAfterRoll + 20, {
      what: '20 more acknowledged',
      timeoutMs: 30_000,
    });
  } finally {
    stopped = true;
    await producers;
    await follow;
  }
  assert.ok(seen.maxNotReady <= 1, `at most one pod down at a time (saw ${seen.maxNotReady})`);

  const acked = ledger.requests.filter((r) => r.outcome?.kind === 'acked').flatMap((r) => r.recordIds);
  let missing: string[] = [];
  await waitFor(
    async () => {
      const ids = await committedIds();
      missing = acked.filter((id) => !ids.has(id));
      return missing.length === 0;
    },
    { what: 'every acknowledged id committed to MinIO', timeoutMs: 120_000, intervalMs: 2000 },
  ).catch((err: unknown) => {
    throw new Error(
      `${String(err)}: ${missing.length} of ${acked.length} acknowledged ids missing, e.g. ${missing.slice(0, 5).join(', ')}`,
    );
  });
  const c = ledger.counts();
  process.stderr.write(
    `[node-endpoint] rolling update: ${c.requests} requests, ${c.acked} acked (${c.ackedRecords} ids), ${c.refused} refused, ${c.unknown} unknown; acknowledged ids missing in MinIO: ${missing.length}\n`,
  );
  assert.equal(missing.length, 0);
});

void test('deleting the Endpoint: the finalizer drains, then it and its pods are gone', async () => {
  assert.ok(ns !== '');
  await kube.kubectl(['delete', 'endpoints.landfall.dev', endpointName, '-n', ns, '--wait=false']);
  await waitFor(
    async () => {
      const r = await kube.kubectl(['get', 'endpoints.landfall.dev', '-n', ns, '-o', 'name']);
      return r.stdout.trim() === '';
    },
    { what: `Endpoint ${endpointName} gone (finalizer released)`, timeoutMs: 180_000, intervalMs: 1000 },
  );
  await waitFor(
    async () => (await kube.kubectl(['get', 'pods', '-n', ns, '-o', 'name'])).stdout.trim() === '',
    { what: 'the ingest pods gone', timeoutMs: 120_000, intervalMs: 1000 },
  );
});
