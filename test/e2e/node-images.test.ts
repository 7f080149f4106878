// The repository's images on a real kubelet. The test bed's node (kube-
// scheduler, containerd 2, a kubelet named `localhost`, test/harness/node.ts)
// runs the images `docker build -f images/<name>.Dockerfile .` made from this
// checkout (on local base images: no registry is reachable), imported into
// the node's containerd and run with imagePullPolicy: Never, with the
// securityContext the operator gives its pods:
//   - `--help` exits 0 through the image's own ENTRYPOINT;
//   - the process is UID/GID 65532, the root file system refuses writes, and
//     DuckDB's native binding loads and answers a query;
//   - kubectl logs and kubectl exec reach the container (the API server's
//     kubelet client certificate).
// And the harness itself: one node per machine (a second lock waits), and a
// missing part throws instead of skipping.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import {
  acquireNodeLock,
  buildRepoImages,
  nodeBinaries,
  repoRoot,
  startKubernetes,
  testbedCacheDir,
  waitFor,
  NODE_NAME,
  TestbedMissingError,
} from '../harness/index.ts';
import type { KubernetesTestbed, RepoImages } from '../harness/index.ts';

let kube: KubernetesTestbed;
let images: RepoImages;
let ns: string;

// What the operator sets on the node's container (operator/src/model/resources.ts).
const securityContext = {
  runAsNonRoot: true,
  readOnlyRootFilesystem: true,
  allowPrivilegeEscalation: false,
  capabilities: { drop: ['ALL'] },
};

// Printed once, then the container stays up for logs/exec/get pods.
const probe = `
import { writeFileSync } from 'node:fs';
let rootWrite = 'ok';
try { writeFileSync('/probe', 'x'); } catch (e) { rootWrite = e.code; }
const { DuckDBInstance } = await import('@duckdb/node-api');
const db = await DuckDBInstance.create(':memory:');
const c = await db.connect();
const rows = (await c.runAndReadAll('select 40 + 2 as answer')).getRowObjectsJson();
c.closeSync();
console.log('PROBE ' + JSON.stringify({ uid: process.getuid(), gid: process.getgid(), rootWrite, rows }));
setInterval(() => {}, 60_000);
`;

function pod(name: string, image: string, container: Record<string, unknown>): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, labels: { app: 'node-images' } },
    spec: {
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 1,
      automountServiceAccountToken: false,
      containers: [{ name: 'main', image, imagePullPolicy: 'Never', securityContext, ...container }],
    },
  };
}

async function getPod(name: string): Promise<V1Pod> {
  return JSON.parse((await kube.kubectl(['get', 'pod', name, '-n', ns, '-o', 'json'])).stdout) as V1Pod;
}

async function podSummary(name: string): Promise<string> {
  const p = await getPod(name).catch((e: unknown) => ({ error: String(e) }));
  const events = await kube
    .kubectl(['get', 'events', '-n', ns, '--field-selector', `involvedObject.name=${name}`])
    .then((r) => r.stdout)
    .catch(() => '');
  return `${JSON.stringify((p as V1Pod).status ?? p, null, 2)}\n${events}`;
}

async function waitPhase(name: string, phases: readonly string[], timeoutMs = 120_000): Promise<V1Pod> {
  try {
    return await waitFor(
      async () => {
        const p = await getPod(name);
        return phases.includes(p.status?.phase ?? '') ? p : undefined;
      },
      { what: `pod ${name} ${phases.join('|')}`, timeoutMs, intervalMs: 250 },
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${await podSummary(name)}`, { cause: err });
  }
}

void describe('the test-bed node harness', () => {
  void test('a missing node part throws TestbedMissingError naming it (never a skip)', () => {
    const empty = mkdtempSync(join(tmpdir(), 'lf-empty-cache-'));
    const saved = process.env['TESTBED_CACHE'];
    process.env['TESTBED_CACHE'] = empty;
    try {
      assert.throws(
        () => nodeBinaries(),
        (err: unknown) => {
          assert.ok(err instanceof TestbedMissingError, String(err));
          assert.match(err.message, /kubelet v1\.\d+\.\d+ not found .*setup\.sh node/);
          return true;
        },
      );
    } finally {
      if (saved === undefined) delete process.env['TESTBED_CACHE'];
      else process.env['TESTBED_CACHE'] = saved;
      rmSync(empty, { recursive: true, force: true });
    }
  });

  void test('a missing CoreDNS (only it) throws TestbedMissingError naming it and setup.sh node', () => {
    // Every other part present (links to the real cache), CoreDNS absent.
    const cache = mkdtempSync(join(tmpdir(), 'lf-no-coredns-'));
    const saved = process.env['TESTBED_CACHE'];
    try {
      mkdirSync(join(cache, 'bin'));
      const real = join(testbedCacheDir(), 'bin');
      for (const f of readdirSync(real))
        if (!f.startsWith('coredns-')) symlinkSync(join(real, f), join(cache, 'bin', f));
      process.env['TESTBED_CACHE'] = cache;
      assert.throws(
        () => nodeBinaries(),
        (err: unknown) => {
          assert.ok(err instanceof TestbedMissingError, String(err));
          assert.match(err.message, /coredns v\d+\.\d+\.\d+ not found .*setup\.sh node/);
          return true;
        },
      );
    } finally {
      if (saved === undefined) delete process.env['TESTBED_CACHE'];
      else process.env['TESTBED_CACHE'] = saved;
      rmSync(cache, { recursive: true, force: true });
    }
  });

  void test('one node per machine: a second lock waits and times out while the first is held', async () => {
    const first = await acquireNodeLock();
    try {
      await assert.rejects(acquireNodeLock(1500), /could not take the test-bed node lock/);
    } finally {
      await first.release();
    }
    // (That release lets go: the next describe's startKubernetes takes it again. Not
    // re-taken here at once: under --test-concurrency another file's node may get it first.)
  });
});

void describe('the images on a real kubelet', () => {
  before(async () => {
    kube = await startKubernetes({ node: true });
    const node = kube.node;
    assert.ok(node !== undefined);
    images = await buildRepoImages(node);
    ns = await kube.newNamespace('images');
    const imported = await node.images();
    for (const ref of [images.ingestNode, images.operator]) {
      assert.ok(imported.includes(ref), `${ref} imported into the node's containerd: ${imported.join(', ')}`);
    }
  });
  after(async () => {
    await kube?.stop();
  });

  for (const which of ['ingestNode', 'operator'] as const) {
    const slug = which === 'ingestNode' ? 'ingest-node' : 'operator';

    void test(`${slug}: --help through the image's ENTRYPOINT exits 0`, async () => {
      const name = `${slug}-help`;
      await kube.kubectl(['apply', '-n', ns, '-f', '-'], {
        input: JSON.stringify(pod(name, images[which], { args: ['--help'] })),
      });
      const p = await waitPhase(name, ['Succeeded', 'Failed']);
      const logs = (await kube.kubectl(['logs', '-n', ns, name])).stdout;
      const term = p.status?.containerStatuses?.[0]?.state?.terminated;
      assert.equal(p.status?.phase, 'Succeeded', `exit ${String(term?.exitCode)}: ${logs}`);
      assert.equal(term?.exitCode, 0);
      assert.equal(p.spec?.nodeName, NODE_NAME);
      assert.match(logs, which === 'ingestNode' ? /serve/ : /--leader-elect|--namespace/);
    });

    void test(`${slug}: UID 65532, read-only root, DuckDB loads; logs and exec work`, async () => {
      const name = `${slug}-probe`;
      await kube.kubectl(['apply', '-n', ns, '-f', '-'], {
        input: JSON.stringify(
          pod(name, images[which], {
            command: ['/nodejs/bin/node', '--input-type=module', '-e', probe],
          }),
        ),
      });
      const p = await waitPhase(name, ['Running', 'Failed', 'Succeeded']);
      assert.equal(p.status?.phase, 'Running', await podSummary(name));
      assert.equal(p.spec?.nodeName, NODE_NAME);
      assert.equal(p.status?.containerStatuses?.[0]?.image, images[which]);
      const line = await waitFor(
        async () => {
          const { stdout } = await kube.kubectl(['logs', '-n', ns, name]);
          return stdout.split('\n').find((l) => l.startsWith('PROBE '));
        },
        { what: `${name} printing its probe line`, timeoutMs: 60_000, intervalMs: 250 },
      );
      const result = JSON.parse(line.slice('PROBE '.length)) as {
        uid: number;
        gid: number;
        rootWrite: string;
        rows: unknown;
      };
      assert.deepEqual(result, { uid: 65532, gid: 65532, rootWrite: 'EROFS', rows: [{ answer: 42 }] });
      const exec = await kube.kubectl([
        'exec',
        '-n',
        ns,
        name,
        '--',
        '/nodejs/bin/node',
        '-p',
        'process.getuid()',
      ]);
      assert.equal(exec.stdout.trim(), '65532');
      const wide = await kube.kubectl(['get', 'pods', '-n', ns, '-o', 'wide']);
      const imgs = await kube.kubectl([
        'get',
        'pods',
        '-n',
        ns,
        '-o',
        'custom-columns=NAME:.metadata.name,STATUS:.status.phase,NODE:.spec.nodeName,IMAGE:.status.containerStatuses[0].image,IMAGE ID:.status.containerStatuses[0].imageID',
      ]);
      process.stderr.write(`[node-images] kubectl get pods -o wide:\n${wide.stdout}${imgs.stdout}`);
    });
  }

  void test('helm install with the local operator image: the operator Deployment is Ready in the cluster', async () => {
    const releaseNs = await kube.newNamespace('landfall-system');
    const [repo, tag] = images.operator.split(':');
    const [nodeRepo, nodeTag] = images.ingestNode.split(':');
    await kube.helm(
      [
        'install',
        'lf',
        join(repoRoot, 'charts', 'landfall'),
        '-n',
        releaseNs,
        '--set',
        `image.repository=${repo ?? ''},image.tag=${tag ?? ''},image.pullPolicy=Never`,
        '--set',
        `nodeImage.repository=${nodeRepo ?? ''},nodeImage.tag=${nodeTag ?? ''}`,
      ],
      { timeoutMs: 120_000 },
    );
    try {
      await kube.kubectl(['rollout', 'status', 'deployment/lf-landfall', '-n', releaseNs, '--timeout=120s'], {
        timeoutMs: 130_000,
      });
    } catch (err) {
      const pods = await kube
        .kubectl(['get', 'pods', '-n', releaseNs, '-o', 'wide'])
        .catch(() => ({ stdout: '' }));
      const logs = await kube
        .kubectl(['logs', '-n', releaseNs, 'deployment/lf-landfall', '--tail=40'])
        .catch((e: unknown) => ({ stdout: String(e) }));
      throw new Error(`${String(err)}\n${pods.stdout}\n${logs.stdout}`, { cause: err });
    }
    const pods = JSON.parse(
      (
        await kube.kubectl([
          'get',
          'pods',
          '-n',
          releaseNs,
          '-l',
          'app.kubernetes.io/name=landfall',
          '-o',
          'json',
        ])
      ).stdout,
    ) as { items: V1Pod[] };
    assert.equal(pods.items.length, 1);
    const op = pods.items[0];
    assert.equal(op?.spec?.nodeName, NODE_NAME);
    assert.equal(op?.status?.containerStatuses?.[0]?.image, images.operator);
    assert.equal(op?.status?.containerStatuses?.[0]?.ready, true);
    // It talks to the API server from inside the pod: it took its Lease.
    const lease = JSON.parse(
      (await kube.kubectl(['get', 'lease', 'lf-landfall', '-n', releaseNs, '-o', 'json'])).stdout,
    ) as { spec?: { holderIdentity?: string } };
    assert.equal(lease.spec?.holderIdentity, op?.metadata?.name);
    const wide = await kube.kubectl(['get', 'pods', '-n', releaseNs, '-o', 'wide']);
    process.stderr.write(`[node-images] operator in the cluster:\n${wide.stdout}`);
  });

  void test('timings', () => {
    const n = kube.node;
    assert.ok(n !== undefined);
    process.stderr.write(
      `[node-images] startup ms ${JSON.stringify({ ...kube.startupMs, node: n.startupMs })}; images ms ${JSON.stringify(images.timingsMs)}\n`,
    );
  });
});
