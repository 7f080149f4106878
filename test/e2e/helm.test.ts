// The Helm chart against a real kube-apiserver + etcd + kube-controller-manager
// (no kubelet: Pods stay Pending). One control plane for the file:
//   - helm lint / template (values schema, watchNamespaces → a Role in each, ServiceMonitor);
//   - helm install: CRDs Established, the operator Deployment as rendered;
//   - the operator from this workspace, run with the chart's own args under the
//     chart's ServiceAccount (a TokenRequest token): the example Endpoint and
//     View reconcile to a StatefulSet, statuses and events, the Endpoint's
//     deletion passes the drain check, and nothing is forbidden. That is the
//     proof that the chart's RBAC is enough;
//   - kubectl apply --dry-run=server of every example and kind manifest.
// Every wait is a poll or a watch with a deadline, never a fixed sleep.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { freePort, repoRoot, scratchDir, startKubernetes, startProcess, waitFor } from '../harness/index.ts';
import type { KubernetesTestbed, ServerProcess } from '../harness/index.ts';

const chartDir = join(repoRoot, 'charts', 'landfall');
const examplesDir = join(repoRoot, 'docs', 'examples');
const kindDir = join(repoRoot, 'deploy', 'kind');
const RELEASE = 'lf';
const FULLNAME = 'lf-landfall';

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    finalizers?: string[];
    [k: string]: unknown;
  };
  spec?: Record<string, unknown> & { [k: string]: unknown };
  status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] } & Record<
    string,
    unknown
  >;
  [k: string]: unknown;
}
type Rule = { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] };

let kube: KubernetesTestbed;
let releaseNs: string;
let operator: ServerProcess | undefined;

const docs = (text: string): Obj[] => (yaml.loadAll(text) as (Obj | null)[]).filter((d): d is Obj => !!d);

async function getJson<T = Obj>(args: string[]): Promise<T | undefined> {
  try {
    return JSON.parse((await kube.kubectl(['get', ...args, '-o', 'json'])).stdout) as T;
  } catch (err) {
    if (/NotFound|not found/.test(String(err))) return undefined;
    throw err;
  }
}

const cond = (o: Obj | undefined, type: string) => o?.status?.conditions?.find((c) => c.type === type);

/**
 * Runs the workspace operator as the chart's pod would: the container args of
 * the installed Deployment (downward-API identity filled in, metrics on a free
 * loopback port, debug logs) and a kubeconfig holding a TokenRequest token of
 * the chart's ServiceAccount. Resolves once it leads.
 */
async function runChartOperator(
  ns: string,
  fullname: string,
): Promise<{ proc: ServerProcess; logPath: string; port: number }> {
  const token = (await kube.kubectl(['create', 'token', fullname, '-n', ns, '--duration=1h'])).stdout.trim();
  assert.ok(token.length > 100, 'a TokenRequest token');
  const dir = scratchDir(`operator-${fullname}`);
  const kubeconfig = join(dir, 'kubeconfig.json');
  await writeFile(
    kubeconfig,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster: { server: kube.server, 'certificate-authority': kube.caPath } }],
      users: [{ name: fullname, user: { token } }],
      contexts: [{ name: 'sa', context: { cluster: 'c', user: fullname } }],
      'current-context': 'sa',
    }),
    { mode: 0o600 },
  );
  const dep = (await getJson(['deployment', fullname, '-n', ns])) as Obj;
  const container = (dep.spec as { template: { spec: { containers: { args: string[] }[] } } }).template.spec
    .containers[0];
  const port = await freePort();
  const args = (container?.args ?? []).map((a) =>
    a === '--identity=$(POD_NAME)'
      ? '--identity=e2e-operator-0'
      : a.startsWith('--metrics-port=')
        ? `--metrics-port=${port}`
        : a.startsWith('--log-level=')
          ? '--log-level=debug'
          : a,
  );
  assert.ok(args.includes(`--lease-namespace=${ns}`));
  const logPath = join(dir, 'operator.log');
  const proc = startProcess({
    name: `operator-${fullname}`,
    command: process.execPath,
    args: [
      join(repoRoot, 'operator', 'src', 'main.ts'),
      `--kubeconfig=${kubeconfig}`,
      ...args,
      '--metrics-host=127.0.0.1',
    ],
    logPath,
  });
  await waitFor(
    async () => {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      return res.ok && /^landfall_operator_leader 1$/m.test(await res.text());
    },
    { what: `${fullname} to lead`, timeoutMs: 20_000, intervalMs: 200, process: proc },
  );
  return { proc, logPath, port };
}

/** A SubjectAccessReview for a ServiceAccount (`kubectl auth can-i --as`, with its groups); namespace '': cluster-wide. */
async function canI(
  sa: string,
  verb: string,
  resource: string,
  group: string,
  namespace: string,
  name?: string,
): Promise<boolean> {
  const saNs = sa.split(':')[2] ?? '';
  const review = {
    apiVersion: 'authorization.k8s.io/v1',
    kind: 'SubjectAccessReview',
    spec: {
      user: sa,
      groups: ['system:serviceaccounts', `system:serviceaccounts:${saNs}`, 'system:authenticated'],
      resourceAttributes: { verb, resource, group, namespace, ...(name ? { name } : {}) },
    },
  };
  const out = await kube.kubectl(['create', '-f', '-', '-o', 'json'], { input: JSON.stringify(review) });
  return (JSON.parse(out.stdout) as { status: { allowed: boolean } }).status.allowed;
}

async function forbiddenLines(logPath: string): Promise<string[]> {
  return (await readFile(logPath, 'utf8')).split('\n').filter((l) => /forbidden|\b403\b/i.test(l));
}

before(async () => {
  kube = await startKubernetes();
});

after(async () => {
  await operator?.stop({ graceMs: 3000 });
  await kube?.stop();
});

void describe('chart', () => {
  void test('helm lint --strict and helm template', async () => {
    await kube.helm(['lint', '--strict', chartDir]);

    const all = docs((await kube.helm(['template', RELEASE, chartDir, '-n', 'landfall-system'])).stdout);
    const kinds = all.map((d) => `${d.kind}/${d.metadata.name}`).sort();
    assert.deepEqual(kinds, [
      `ClusterRole/${FULLNAME}`,
      `ClusterRole/${FULLNAME}-nodes`,
      `ClusterRoleBinding/${FULLNAME}`,
      `ClusterRoleBinding/${FULLNAME}-nodes`,
      `Deployment/${FULLNAME}`,
      `Role/${FULLNAME}-leader-election`,
      `RoleBinding/${FULLNAME}-leader-election`,
      `Service/${FULLNAME}-metrics`,
      `ServiceAccount/${FULLNAME}`,
    ]);
    const dep = all.find((d) => d.kind === 'Deployment') as Obj;
    const pod = (dep.spec as { template: { spec: Record<string, unknown> } }).template.spec;
    const c = (pod.containers as Record<string, unknown>[])[0] as {
      image: string;
      args: string[];
      securityContext: Record<string, unknown>;
      livenessProbe: { httpGet: { path: string } };
      readinessProbe: { httpGet: { path: string } };
      resources: Record<string, unknown>;
    };
    assert.equal(c.image, 'ghcr.io/landfall/operator:0.1.0');
    assert.ok(c.args.includes('--leader-elect'));
    assert.ok(c.args.includes('--watch-namespaces='), 'empty: all namespaces');
    assert.deepEqual(c.securityContext, {
      runAsNonRoot: true,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    });
    assert.deepEqual(pod.securityContext, {
      runAsNonRoot: true,
      runAsUser: 65532,
      runAsGroup: 65532,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    assert.equal(c.livenessProbe.httpGet.path, '/healthz');
    assert.equal(c.readinessProbe.httpGet.path, '/readyz');
    assert.ok(c.resources.requests && c.resources.limits);

    // One namespace: the same rules in a Role there, nothing cluster-wide.
    const scoped = docs(
      (
        await kube.helm([
          'template',
          RELEASE,
          chartDir,
          '-n',
          'landfall-system',
          '--set',
          'watchNamespace=apps',
          '--set',
          'metrics.serviceMonitor.enabled=true',
        ])
      ).stdout,
    );
    // Nothing cluster-scoped but the read-only nodes role of node drains
    // (Nodes have no namespace; without it a kubectl drain waits on the PDB).
    assert.deepEqual(
      scoped.filter((d) => d.kind.startsWith('Cluster')).map((d) => `${d.kind} ${d.metadata.name}`),
      [`ClusterRole ${FULLNAME}-nodes`, `ClusterRoleBinding ${FULLNAME}-nodes`],
      'with watchNamespace only the nodes role is cluster-scoped',
    );
    assert.deepEqual((scoped.find((d) => d.kind === 'ClusterRole') as Obj).rules, [
      { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch'] },
    ]);
    const noNodes = docs(
      (
        await kube.helm([
          'template',
          RELEASE,
          chartDir,
          '--set',
          'watchNamespace=apps',
          '--set',
          'nodeDrain.enabled=false',
        ])
      ).stdout,
    );
    assert.ok(
      !noNodes.some((d) => d.kind.startsWith('Cluster')),
      'nothing cluster-scoped with watchNamespace and nodeDrain.enabled=false',
    );
    const role = scoped.find((d) => d.kind === 'Role' && d.metadata.name === FULLNAME) as Obj;
    assert.equal(role.metadata.namespace, 'apps');
    const clusterRole = all.find((d) => d.kind === 'ClusterRole' && d.metadata.name === FULLNAME) as Obj;
    assert.deepEqual(role.rules, clusterRole.rules);
    const args = (
      (scoped.find((d) => d.kind === 'Deployment') as Obj).spec as {
        template: { spec: { containers: { args: string[] }[] } };
      }
    ).template.spec.containers[0]?.args;
    assert.ok(args?.includes('--watch-namespaces=apps'), JSON.stringify(args));
    // A list: a Role and RoleBinding in each namespace, the same rules, nothing more cluster-wide.
    const listed = docs(
      (
        await kube.helm([
          'template',
          RELEASE,
          chartDir,
          '--set',
          'watchNamespaces={team-a,team-b}',
          '--set',
          'watchNamespace=team-c',
        ])
      ).stdout,
    );
    assert.deepEqual(
      listed
        .filter((d) => d.kind.startsWith('Cluster'))
        .map((d) => d.metadata.name)
        .sort(),
      [`${FULLNAME}-nodes`, `${FULLNAME}-nodes`],
    );
    for (const kind of ['Role', 'RoleBinding'])
      assert.deepEqual(
        listed
          .filter((d) => d.kind === kind && d.metadata.name === FULLNAME)
          .map((d) => d.metadata.namespace)
          .sort(),
        ['team-a', 'team-b', 'team-c'],
        `a ${kind} in each watched namespace`,
      );
    for (const r of listed.filter((d) => d.kind === 'Role' && d.metadata.name === FULLNAME))
      assert.deepEqual(r.rules, clusterRole.rules);
    const listedArgs = (
      (listed.find((d) => d.kind === 'Deployment') as Obj).spec as {
        template: { spec: { containers: { args: string[] }[] } };
      }
    ).template.spec.containers[0]?.args;
    assert.ok(listedArgs?.includes('--watch-namespaces=team-a,team-b,team-c'), JSON.stringify(listedArgs));
    assert.ok(scoped.some((d) => d.kind === 'ServiceMonitor'));

    // values.schema.json refuses typos and nonsense.
    await assert.rejects(kube.helm(['template', RELEASE, chartDir, '--set', 'replica=2']), /replica/);
    await assert.rejects(kube.helm(['template', RELEASE, chartDir, '--set', 'replicas=0']), /minimum/);
    await assert.rejects(
      kube.helm(['template', RELEASE, chartDir, '--set', 'watchNamespace=Not_A_Namespace']),
      /watchNamespace/,
    );
    await assert.rejects(
      kube.helm(['template', RELEASE, chartDir, '--set', 'watchNamespaces={ok,Not_A_Namespace}']),
      /watchNamespaces/,
    );
  });
});

void describe('installed chart', () => {
  let appNs: string;

  void test('helm install: CRDs Established, operator Deployment created', async () => {
    releaseNs = await kube.newNamespace('landfall-system');
    const out = await kube.helm(['install', RELEASE, chartDir, '-n', releaseNs], { timeoutMs: 60_000 });
    assert.match(out.stdout, /STATUS: deployed/);
    assert.match(out.stdout, /get endpoints\.landfall\.dev/, 'NOTES.txt shows the next step');
    // Event-driven wait with a deadline.
    await kube.kubectl(
      [
        'wait',
        '--for=condition=Established',
        'crd/endpoints.landfall.dev',
        'crd/views.landfall.dev',
        '--timeout=30s',
      ],
      { timeoutMs: 40_000 },
    );
    const dep = await getJson(['deployment', FULLNAME, '-n', releaseNs]);
    assert.ok(dep, 'operator Deployment exists');
    // The Endpoint NOTES.txt suggests is one the API server accepts.
    const notesEndpoint = /<<'YAML'\n([\s\S]*?)\nYAML\n/.exec(out.stdout)?.[1];
    assert.ok(notesEndpoint, 'NOTES.txt carries an Endpoint to apply');
    await kube.kubectl(['apply', '--dry-run=server', '-n', 'default', '-f', '-'], { input: notesEndpoint });
    // The chart's CRDs are the repo's.
    for (const f of ['endpoints.landfall.dev.yaml', 'views.landfall.dev.yaml']) {
      assert.equal(
        await readFile(join(chartDir, 'crds', f), 'utf8'),
        await readFile(join(repoRoot, 'crds', f), 'utf8'),
      );
    }
  });

  void test('the operator runs under the chart ServiceAccount and reconciles the examples', async () => {
    appNs = await kube.newNamespace('analytics');
    const run = await runChartOperator(releaseNs, FULLNAME);
    operator = run.proc;
    const proc = run.proc;
    const logPath = run.logPath;
    // Leading comes before the informer caches sync, and /readyz waits for both.
    await waitFor(async () => (await fetch(`http://127.0.0.1:${run.port}/readyz`)).status === 200, {
      what: 'operator /readyz',
      timeoutMs: 20_000,
      intervalMs: 100,
      process: proc,
    });
    assert.equal((await fetch(`http://127.0.0.1:${run.port}/healthz`)).status, 200);
    const lease = await getJson<{ spec: { holderIdentity?: string } }>(['lease', FULLNAME, '-n', releaseNs]);
    assert.equal(lease?.spec.holderIdentity, 'e2e-operator-0');

    for (const f of ['api-keys-secret.yaml', 'endpoint-minio.yaml', 'view-page-views.yaml'])
      await kube.kubectl(['apply', '-n', appNs, '-f', join(examplesDir, f)]);

    const sts: Obj = await waitFor(() => getJson(['statefulset', 'clicks-ingest', '-n', appNs]), {
      what: 'StatefulSet clicks-ingest',
      timeoutMs: 30_000,
      intervalMs: 200,
      process: proc,
    });
    const image = (sts.spec as { template: { spec: { containers: { image: string }[] } } }).template.spec
      .containers[0]?.image;
    assert.equal(image, 'ghcr.io/landfall/ingest-node:0.1.0', "the chart's --node-image");
    for (const kind of ['serviceaccount', 'configmap', 'service', 'poddisruptionbudget', 'networkpolicy'])
      assert.ok(await getJson([kind, 'clicks-ingest', '-n', appNs]), `${kind} clicks-ingest`);
    // The operator's key: one master Secret at home; in the Endpoint's
    // namespace only the hash of the derived status key, in a ConfigMap.
    assert.ok(await getJson(['secret', `${FULLNAME}-operator-key`, '-n', releaseNs]), 'master key Secret');
    const cm = await getJson<{ data: Record<string, string> }>(['configmap', 'clicks-ingest', '-n', appNs]);
    assert.match(cm?.data['landfall-operator-status-key'] ?? '', /^sha256:[0-9a-f]{64} status drain\n$/);
    const secrets = await getJson<{ items: { metadata: { name: string } }[] }>([
      'secrets',
      '-n',
      appNs,
      '-l',
      'app.kubernetes.io/managed-by=landfall-operator',
    ]);
    assert.deepEqual(
      secrets?.items.map((x) => x.metadata.name),
      [],
      'the operator created no Secret in the Endpoint namespace',
    );

    // Status subresources and the finalizer were written.
    const view = await waitFor(
      async () => {
        const v = await getJson(['views.landfall.dev', 'page-views', '-n', appNs]);
        return cond(v, 'Attached')?.status === 'True' ? v : undefined;
      },
      { what: 'View page-views Attached', timeoutMs: 30_000, intervalMs: 200, process: proc },
    );
    assert.equal(cond(view, 'Compiled')?.status, 'True');
    const ep = await waitFor(
      async () => {
        const e = await getJson(['endpoints.landfall.dev', 'clicks', '-n', appNs]);
        const views = e?.status?.views as string[] | undefined;
        return e?.status?.observedGeneration !== undefined && views?.includes('page_views') ? e : undefined;
      },
      { what: 'Endpoint clicks status with page_views', timeoutMs: 30_000, intervalMs: 200, process: proc },
    );
    assert.ok(ep.metadata.finalizers?.includes('landfall.dev/drain'));
    assert.notEqual(cond(ep, 'Degraded')?.reason, 'ReconcileFailed', JSON.stringify(ep.status));
    await waitFor(
      async () => {
        const events = await getJson<{ items: { reason: string; source?: { component?: string } }[] }>([
          'events',
          '-n',
          appNs,
        ]);
        return events?.items.some(
          (e) => e.reason === 'Created' && e.source?.component === 'landfall-operator',
        );
      },
      { what: 'a Created event from the operator', timeoutMs: 15_000, intervalMs: 200, process: proc },
    );

    // spec.expose: the Ingress example gets its Ingress (created under the chart's RBAC), and
    // dropping expose.ingress deletes it again.
    await kube.kubectl(['apply', '-n', appNs, '-f', join(examplesDir, 'endpoint-ingress-tls.yaml')]);
    const ingress: Obj = await waitFor(() => getJson(['ingress', 'public-ingest', '-n', appNs]), {
      what: 'Ingress public-ingest',
      timeoutMs: 30_000,
      intervalMs: 200,
      process: proc,
    });
    assert.deepEqual((ingress.spec as { tls?: unknown }).tls, [
      { hosts: ['ingest.example.com'], secretName: 'ingest-example-com-tls' },
    ]);
    await kube.kubectl([
      'patch',
      'endpoints.landfall.dev',
      'public',
      '-n',
      appNs,
      '--type=json',
      '-p',
      '[{"op":"remove","path":"/spec/expose/ingress"}]',
    ]);
    await waitFor(async () => (await getJson(['ingress', 'public-ingest', '-n', appNs])) === undefined, {
      what: 'Ingress public-ingest deleted once expose.ingress is dropped',
      timeoutMs: 30_000,
      intervalMs: 200,
      process: proc,
    });
    await kube.kubectl(['delete', 'endpoints.landfall.dev', 'public', '-n', appNs, '--wait=false']);

    // Deletion: the drain check (claims, the key Secret) runs and releases the
    // finalizer (no claim was ever bound, so nothing can be undelivered).
    await kube.kubectl(['delete', 'endpoints.landfall.dev', 'clicks', '-n', appNs, '--wait=false']);
    await waitFor(
      async () => (await getJson(['endpoints.landfall.dev', 'clicks', '-n', appNs])) === undefined,
      {
        what: 'Endpoint clicks deleted through the finalizer',
        timeoutMs: 30_000,
        intervalMs: 200,
        process: proc,
      },
    );

    assert.deepEqual(await forbiddenLines(logPath), [], 'no request of the operator was forbidden');
  });

  void test('watchNamespaces: a Role in each is enough, an Endpoint elsewhere is not reconciled, no cluster-wide access to those kinds', async () => {
    // The cluster-wide operator of the test above would reconcile every namespace.
    await operator?.stop({ graceMs: 3000 });
    operator = undefined;
    const ns = await kube.newNamespace('landfall-scoped');
    const watched = [await kube.newNamespace('team-a'), await kube.newNamespace('team-b')];
    const unwatched = await kube.newNamespace('team-c');
    await kube.helm(
      ['install', 'scoped', chartDir, '-n', ns, '--set', `watchNamespaces={${watched.join(',')}}`],
      { timeoutMs: 60_000 },
    );
    assert.equal(await getJson(['clusterrole', 'scoped-landfall']), undefined, 'nothing cluster-wide');
    const sa = `system:serviceaccount:${ns}:scoped-landfall`;
    // The rendered RBAC as the real apiserver authorizes it.
    const kinds: [string, string, string[]][] = [
      ['endpoints', 'landfall.dev', ['list', 'watch', 'patch']],
      ['views', 'landfall.dev', ['list', 'watch']],
      ['statefulsets', 'apps', ['get', 'list', 'watch', 'create', 'patch']],
      ['serviceaccounts', '', ['get', 'create', 'patch']],
      ['services', '', ['get', 'create', 'patch']],
      ['poddisruptionbudgets', 'policy', ['get', 'create', 'patch']],
      ['pods', '', ['list', 'watch', 'get']],
      ['configmaps', '', ['get', 'create', 'patch']],
      ['persistentvolumeclaims', '', ['list', 'delete']],
      ['jobs', 'batch', ['create', 'list', 'delete']],
    ];
    const denied: string[] = [];
    for (const [resource, group, verbs] of kinds)
      for (const verb of verbs) {
        for (const w of watched)
          assert.equal(await canI(sa, verb, resource, group, w), true, `${verb} ${resource} in ${w}`);
        if (await canI(sa, verb, resource, group, '')) denied.push(`${verb} ${resource} cluster-wide`);
        if (await canI(sa, verb, resource, group, unwatched))
          denied.push(`${verb} ${resource} in ${unwatched}`);
      }
    assert.deepEqual(denied, [], 'no access to these kinds outside the watched namespaces');
    assert.equal(await canI(sa, 'list', 'nodes', '', ''), true, 'Nodes stay readable cluster-wide');
    assert.equal(await canI(sa, 'patch', 'nodes', '', ''), false);

    const run = await runChartOperator(ns, 'scoped-landfall');
    try {
      // First the Endpoint nobody watches, then the watched ones: once those
      // are reconciled, the first one had every chance.
      for (const target of [unwatched, ...watched])
        for (const f of ['api-keys-secret.yaml', 'endpoint-minio.yaml', 'view-page-views.yaml'])
          await kube.kubectl(['apply', '-n', target, '-f', join(examplesDir, f)]);
      for (const w of watched) {
        await waitFor(() => getJson(['statefulset', 'clicks-ingest', '-n', w]), {
          what: `StatefulSet ${w}/clicks-ingest`,
          timeoutMs: 30_000,
          intervalMs: 200,
          process: run.proc,
        });
        await waitFor(
          async () =>
            cond(await getJson(['views.landfall.dev', 'page-views', '-n', w]), 'Attached')?.status === 'True',
          { what: `View Attached in ${w}`, timeoutMs: 30_000, intervalMs: 200, process: run.proc },
        );
      }
      const other = await getJson(['endpoints.landfall.dev', 'clicks', '-n', unwatched]);
      assert.ok(other !== undefined);
      assert.equal(other.status, undefined, 'no status on the unwatched Endpoint');
      assert.equal(other.metadata.finalizers, undefined, 'no finalizer on the unwatched Endpoint');
      assert.equal(await getJson(['statefulset', 'clicks-ingest', '-n', unwatched]), undefined);
      assert.equal(await getJson(['configmap', 'clicks-ingest', '-n', unwatched]), undefined);
      assert.deepEqual(
        await forbiddenLines(run.logPath),
        [],
        'no request of the scoped operator was forbidden (it lists and watches each namespace on its own)',
      );
    } finally {
      await run.proc.stop({ graceMs: 3000 });
    }
  });

  void test('the ServiceAccount can do no more than the chart says', async () => {
    const sa = `system:serviceaccount:${releaseNs}:${FULLNAME}`;
    const can = (verb: string, resource: string, group = '', namespace = appNs, name?: string) =>
      canI(sa, verb, resource, group, namespace, name);
    assert.equal(await can('create', 'statefulsets', 'apps'), true);
    assert.equal(await can('list', 'secrets'), false, 'no listing of Secrets');
    // Secrets it did not create are out of reach: no get (and no patch or
    // update, whose answer is the whole Secret) anywhere but its own key.
    for (const verb of ['get', 'patch', 'update', 'create', 'watch', 'delete'])
      assert.equal(await can(verb, 'secrets', '', appNs, 'clicks-keys'), false, `${verb} a user's Secret`);
    for (const verb of ['get', 'patch', 'update'])
      assert.equal(
        await can(verb, 'secrets', '', releaseNs, 'some-other-secret'),
        false,
        `${verb} another Secret at home`,
      );
    assert.equal(await can('get', 'secrets', '', releaseNs, `${FULLNAME}-operator-key`), true, 'its own key');
    assert.equal(await can('patch', 'secrets', '', releaseNs, `${FULLNAME}-operator-key`), false);
    assert.equal(await can('create', 'secrets', '', releaseNs), true, 'creating its key on first start');
    assert.equal(await can('delete', 'statefulsets', 'apps'), false);
    // Drained claims are deleted (only after their drainer Job succeeded); drainer Jobs are created and listed.
    assert.equal(await can('delete', 'persistentvolumeclaims'), true);
    assert.equal(await can('create', 'jobs', 'batch'), true);
    assert.equal(await can('list', 'jobs', 'batch'), true);
    assert.equal(await can('delete', 'jobs', 'batch'), true, 'a succeeded drainer Job, with its claim');
    assert.equal(await can('update', 'jobs', 'batch'), false);
    assert.equal(await can('delete', 'persistentvolumes'), false);
    assert.equal(await can('create', 'pods'), false);
    // Node drains: a drained replica's pod is deleted; Nodes are read, cluster-wide, never written.
    assert.equal(await can('delete', 'pods'), true);
    for (const verb of ['get', 'list', 'watch'])
      assert.equal(await can(verb, 'nodes', '', ''), true, `${verb} nodes`);
    for (const verb of ['patch', 'update', 'delete'])
      assert.equal(await can(verb, 'nodes', '', ''), false, `${verb} nodes`);
    // spec.expose: Ingress and HTTPRoute are read (ownership), applied and, once dropped from the Endpoint, deleted.
    for (const verb of ['get', 'create', 'patch', 'delete']) {
      assert.equal(await can(verb, 'ingresses', 'networking.k8s.io'), true, `${verb} ingresses`);
      assert.equal(await can(verb, 'httproutes', 'gateway.networking.k8s.io'), true, `${verb} httproutes`);
      // The per-Endpoint NetworkPolicy: applied, or deleted once networkPolicy.enabled is false.
      assert.equal(await can(verb, 'networkpolicies', 'networking.k8s.io'), true, `${verb} networkpolicies`);
    }
    assert.equal(await can('delete', 'services'), false, 'no other child is deleted by the operator');
    assert.equal(await can('update', 'leases', 'coordination.k8s.io', appNs), false, 'Leases only at home');
    // The rendered ClusterRole is the one installed.
    const installed = await getJson<{ rules: Rule[] }>(['clusterrole', FULLNAME]);
    assert.ok(installed?.rules.some((r) => r.resources.includes('endpoints/status')));
  });

  void test('every example and kind manifest passes kubectl apply --dry-run=server', async () => {
    const files = [
      ...(await readdir(examplesDir)).filter((f) => f.endsWith('.yaml')).map((f) => join(examplesDir, f)),
      ...(await readdir(kindDir)).filter((f) => f.endsWith('.yaml')).map((f) => join(kindDir, f)),
    ];
    assert.ok(files.length >= 8, files.join(' '));
    for (const file of files) {
      const out = await kube.kubectl(['apply', '--dry-run=server', '-n', appNs, '-f', file]);
      assert.match(out.stdout, /\(server dry run\)/, file);
    }
    // The CRDs Helm installed kept their CEL rules (x-kubernetes-validations).
    const both = yaml.load(await readFile(join(examplesDir, 'endpoint-aws-irsa.yaml'), 'utf8')) as Obj;
    (both.spec as { credentials: Record<string, unknown> }).credentials.assumeRole = {
      roleArn: 'arn:aws:iam::123456789012:role/other',
    };
    await assert.rejects(
      kube.kubectl(['apply', '--dry-run=server', '-n', appNs, '-f', '-'], { input: JSON.stringify(both) }),
      /irsaRoleArn and assumeRole are mutually exclusive/,
    );
  });
});
