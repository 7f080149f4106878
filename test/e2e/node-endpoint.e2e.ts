// The user's path on the real node (kept out of the default test glob until it
// has run green three times in a row; run it with
// `npx node --test test/e2e/node-endpoint.e2e.ts`):
// helm install the chart with the locally built operator image, kubectl apply
// the MinIO example Endpoint (MinIO on this machine, reached from pods at the
// bridge address), the ingest pods Running and Ready on local PVs, events
// POSTed to a pod, commit markers in MinIO.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
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

let kube: KubernetesTestbed;
let minio: MinioServer;
let images: RepoImages;

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
  const releaseNs = await kube.newNamespace('landfall-system');
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

  const ns = await kube.newNamespace('analytics');
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

  const key = 'lf_live_3f9c2e51b0d84a7e9d1c6b2a4f0e8d7c';
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
