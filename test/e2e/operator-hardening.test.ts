// The operator's failure handling against a real kube-apiserver + etcd +
// (no controller-manager, no kubelet), issue 13:
// - a compiler that cannot run never strips Views from the views ConfigMap,
//   and the last good generation of a View survives an operator restart;
// - leader election renews while the caches sync (no second leader during a
//   slow list), Lease calls are bounded, /readyz waits for the sync, and a
//   missing CRD stops the operator at start;
// - volumes of a deleted Endpoint are never adopted by a new one of the same name;
// - pod template overrides and the scale subresource.
// One control plane for the file; every wait is a poll with a deadline.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { HttpMethod } from '@kubernetes/client-node';
import type { V1ConfigMap } from '@kubernetes/client-node';
import { freePort, repoRoot, scratchDir, startKubernetes, startProcess, waitFor } from '../harness/index.ts';
import type { KubernetesTestbed, ServerProcess } from '../harness/index.ts';
import { Operator } from '../../operator/src/operator.ts';
import { createNodeViewCompiler } from '../../operator/src/adapters/view-compiler.ts';
import type { ClosableViewCompiler } from '../../operator/src/adapters/view-compiler.ts';
import { KubeClient, Resources } from '../../operator/src/runtime/kube.ts';
import type { KubeObject } from '../../operator/src/runtime/kube.ts';
import { jsonLogger } from '../../operator/src/runtime/log.ts';
import { OperatorMetrics } from '../../operator/src/runtime/metrics.ts';
import type { Endpoint } from '../../operator/src/api/endpoint.ts';
import type { View } from '../../operator/src/api/view.ts';
import { VIEW_SOURCES_ANNOTATION } from '../../operator/src/model/names.ts';

let kube: KubernetesTestbed;
let client: KubeClient;
const log = jsonLogger(process.env.LANDFALL_OPERATOR_LOG === '1' ? 'debug' : 'error');

type Cond = { type: string; status: string; reason: string; message: string };
type EndpointObj = Endpoint & KubeObject;
type ViewObj = View & KubeObject;

const condition = (obj: { status?: { conditions?: Cond[] } } | undefined, type: string): Cond | undefined =>
  obj?.status?.conditions?.find((c) => c.type === type);

const endpointBody = (ns: string, name: string, spec: Record<string, unknown> = {}): KubeObject =>
  ({
    metadata: { name, namespace: ns },
    spec: { s3: { bucket: 'landfall-e2e' }, apiKeySecretRef: { name: `${name}-keys` }, ...spec },
  }) as KubeObject;

async function installCrds(): Promise<void> {
  for (const file of ['endpoints.landfall.dev.yaml', 'views.landfall.dev.yaml']) {
    const crd = yaml.load(await readFile(join(repoRoot, 'crds', file), 'utf8')) as KubeObject;
    await client.apply(Resources.crd, crd);
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
}

async function errorCount(metrics: OperatorMetrics, controller: string): Promise<number> {
  const m = await metrics.reconcileErrors.get();
  return m.values.filter((v) => v.labels.controller === controller).reduce((a, v) => a + v.value, 0);
}

/**
 * A plain-HTTP front for the apiserver that authenticates as admin and can
 * hold or swallow chosen requests: the slow list and the hung Lease call of a
 * real outage, at the network boundary, without a hook in the operator.
 */
interface ApiProxy {
  url: string;
  /** Requests matched by `hold` wait until release() (counted in `held`). */
  hold: ((req: IncomingMessage) => boolean) | undefined;
  /** Requests matched by `swallow` never get an answer. */
  swallow: ((req: IncomingMessage) => boolean) | undefined;
  held: number;
  release(): void;
  close(): Promise<void>;
}

async function startApiProxy(): Promise<ApiProxy> {
  const target = new URL(kube.server);
  const ca = await readFile(kube.caPath);
  let waiters: (() => void)[] = [];
  const proxy: ApiProxy = {
    url: '',
    hold: undefined,
    swallow: undefined,
    held: 0,
    release() {
      proxy.hold = undefined;
      for (const w of waiters) w();
      waiters = [];
    },
    async close() {
      proxy.release();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  const forward = (req: IncomingMessage, res: ServerResponse): void => {
    const headers = { ...req.headers, host: target.host, authorization: `Bearer ${kube.adminToken}` };
    const up = httpsRequest(
      { hostname: target.hostname, port: target.port, path: req.url, method: req.method, headers, ca },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  };
  const server = createServer((req, res) => {
    if (proxy.swallow?.(req)) return;
    if (proxy.hold?.(req)) {
      proxy.held++;
      waiters.push(() => forward(req, res));
      return;
    }
    forward(req, res);
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  proxy.url = `http://127.0.0.1:${port}`;
  return proxy;
}

/** A kubeconfig file for `server`; no credentials when it is the proxy (the proxy adds them). */
async function kubeconfigFor(server: string): Promise<string> {
  if (server === kube.server) return kube.kubeconfigPath;
  const path = join(scratchDir('operator-kubeconfig'), 'kubeconfig.json');
  await writeFile(
    path,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'p', cluster: { server, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'p', user: {} }],
      contexts: [{ name: 'p', context: { cluster: 'p', user: 'p' } }],
      'current-context': 'p',
    }),
  );
  return path;
}

interface OperatorProcess {
  proc: ServerProcess;
  port: number;
  metric(name: string): Promise<number | undefined>;
  readyz(): Promise<number | undefined>;
}

async function startOperatorProcess(
  identity: string,
  server: string,
  args: readonly string[],
): Promise<OperatorProcess> {
  const port = await freePort();
  const proc = startProcess({
    name: `operator-${identity}`,
    command: process.execPath,
    args: [
      join(repoRoot, 'operator/src/main.ts'),
      '--kubeconfig',
      await kubeconfigFor(server),
      '--identity',
      identity,
      '--metrics-host',
      '127.0.0.1',
      '--metrics-port',
      String(port),
      '--log-level',
      'info',
      ...args,
    ],
  });
  const get = async (path: string): Promise<Response | undefined> => {
    try {
      return await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(2000) });
    } catch {
      return undefined;
    }
  };
  return {
    proc,
    port,
    async metric(name) {
      const res = await get('/metrics');
      if (!res) return undefined;
      const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(await res.text());
      return m ? Number(m[1]) : undefined;
    },
    async readyz() {
      return (await get('/readyz'))?.status;
    },
  };
}

before(async () => {
  // No controller-manager: nothing here needs Pods, and the StatefulSets are read, not run.
  kube = await startKubernetes({ controllerManager: false });
  client = new KubeClient(kube.kubeConfig);
});

after(async () => {
  await kube?.stop();
});

void describe('start-up CRD check', () => {
  const crdCheckArgs = ['--namespace', 'default', '--crd-check-timeout-ms', '0'];
  const runToExit = async (identity: string) => {
    const op = await startOperatorProcess(identity, kube.server, crdCheckArgs);
    const exit = await op.proc.exited;
    return { code: exit.code, log: await readFile(op.proc.logPath, 'utf8') };
  };

  void test('no CRDs: a clear error and exit 1', async () => {
    const { code, log: out } = await runToExit('no-crds');
    console.log(`# ${out.trim().split('\n').at(-1) ?? ''}`);
    assert.equal(code, 1);
    assert.match(out, /landfall\.dev\/v1alpha1 is not served.*kubectl apply --server-side -f crds\//);
  });

  void test('CRDs older than the operator (a spec field missing): exit 1 naming it; current CRDs: it runs', async () => {
    const old = yaml.load(await readFile(join(repoRoot, 'crds', 'endpoints.landfall.dev.yaml'), 'utf8')) as {
      spec: {
        versions: {
          schema: { openAPIV3Schema: { properties: { spec: { properties: Record<string, unknown> } } } };
        }[];
      };
    };
    const specProps = old.spec.versions[0]?.schema.openAPIV3Schema.properties.spec.properties ?? {};
    delete specProps.runtimeClassName;
    await client.apply(Resources.crd, old as unknown as KubeObject);
    const view = yaml.load(await readFile(join(repoRoot, 'crds', 'views.landfall.dev.yaml'), 'utf8'));
    await client.apply(Resources.crd, view as KubeObject);
    // The apiserver publishes a CRD's OpenAPI a little after creating it.
    await waitFor(
      async () => {
        const doc = await client.request<{ components?: { schemas?: Record<string, unknown> } }>(
          HttpMethod.GET,
          '/openapi/v3/apis/landfall.dev/v1alpha1',
        );
        return JSON.stringify(doc.components?.schemas ?? {}).includes('segmentPolicy');
      },
      { what: 'the OpenAPI of the old CRD', timeoutMs: 30_000, intervalMs: 250 },
    );
    const { code, log: out } = await runToExit('old-crds');
    console.log(`# ${out.trim().split('\n').at(-1) ?? ''}`);
    assert.equal(code, 1);
    assert.match(out, /older than this operator: Endpoint spec lacks runtimeClassName/);

    await installCrds();
    const op = await startOperatorProcess('current-crds', kube.server, [
      '--namespace',
      'default',
      '--crd-check-timeout-ms',
      '30000',
    ]);
    try {
      await waitFor(async () => (await op.readyz()) === 200, {
        what: 'the operator runs with the current CRDs',
        timeoutMs: 40_000,
        intervalMs: 200,
        process: op.proc,
      });
    } finally {
      await op.proc.stop({ graceMs: 5000 });
    }
  });
});

void describe('compile cache: a compiler that cannot run never strips Views', () => {
  let ns: string;
  const operators: Operator[] = [];
  before(installCrds);
  after(async () => {
    for (const o of operators) await o.stop();
  });

  /** The node's real compiler, which throws while `broken` is set (DuckDB down, out of memory, ...). */
  function flakyCompiler(): ClosableViewCompiler & { broken: boolean; thrown: number } {
    const real = createNodeViewCompiler();
    const c = {
      broken: false,
      thrown: 0,
      compile: async (name: string, spec: View['spec']) => {
        if (c.broken) {
          c.thrown++;
          throw new Error('injected: DuckDB failed to start');
        }
        return real.compile(name, spec);
      },
      close: () => real.close(),
    };
    return c;
  }

  const startOperator = async (compiler: ClosableViewCompiler, metrics: OperatorMetrics) => {
    const op = new Operator({
      kubeConfig: kube.kubeConfig,
      namespace: ns,
      nodeImage: 'ghcr.io/landfall/ingest-node:e2e',
      log,
      metrics,
      compiler,
      notReadyPollMs: 60_000,
    });
    operators.push(op);
    await op.start();
    return op;
  };

  const viewBody = (filter: string): KubeObject =>
    ({
      metadata: { name: 'page-views', namespace: ns },
      spec: {
        endpointRef: { name: 'clicks' },
        columns: [{ name: 'event', type: 'VARCHAR', path: '$.event', required: true }],
        filter,
      },
    }) as KubeObject;

  const viewsFile = async (): Promise<string | undefined> =>
    (await client.get<V1ConfigMap & KubeObject>(Resources.configMap, ns, 'clicks-ingest-views'))?.data?.[
      'page_views.yaml'
    ];
  const getView = () => client.get<ViewObj>(Resources.view, ns, 'page-views');

  void test('an operator whose compiler throws keeps the ConfigMap, retries, and recovers', async () => {
    ns = await kube.newNamespace('compile');
    const first = await startOperator(flakyCompiler(), new OperatorMetrics());
    await client.apply(Resources.endpoint, endpointBody(ns, 'clicks'), { force: false });
    await client.apply(Resources.view, viewBody("event = 'page_view'"), { force: false });
    const good = await waitFor(
      async () => ((await viewsFile())?.includes('page_view') ? viewsFile() : false),
      {
        what: 'page_views.yaml in the views ConfigMap',
        timeoutMs: 20_000,
      },
    );
    await first.stop();

    // A fresh operator (empty cache) whose compiler cannot run: the case
    // that used to rewrite the ConfigMap without any View.
    const compiler = flakyCompiler();
    compiler.broken = true;
    const metrics = new OperatorMetrics();
    await startOperator(compiler, metrics);
    await waitFor(async () => (await errorCount(metrics, 'endpoint')) >= 2, {
      what: 'the Endpoint reconcile fails and is retried',
      timeoutMs: 20_000,
    });
    const ep = await waitFor(
      async () => {
        const e = await client.get<EndpointObj>(Resources.endpoint, ns, 'clicks');
        return /compiler unavailable/.test(condition(e, 'Degraded')?.message ?? '') ? e : undefined;
      },
      { what: 'Degraded names the compiler', timeoutMs: 10_000 },
    );
    console.log(`# Degraded ${condition(ep, 'Degraded')?.reason}: ${condition(ep, 'Degraded')?.message}`);
    assert.equal(await viewsFile(), good, 'the views ConfigMap still carries the View');
    assert.deepEqual(ep.status?.views, ['page_views'], 'the status too');
    assert.equal(condition(await getView(), 'Compiled')?.status, 'True', 'no Compiled=False for an outage');

    // An edit while the compiler is down changes nothing either.
    await client.apply(Resources.view, viewBody("event = 'click'"), { force: false });
    const before = compiler.thrown;
    await waitFor(() => compiler.thrown > before + 1, {
      what: 'the new generation tried',
      timeoutMs: 20_000,
    });
    assert.equal(await viewsFile(), good);

    // The compiler comes back: the backoff retry writes the new generation.
    compiler.broken = false;
    await waitFor(async () => (await viewsFile())?.includes("'click'"), {
      what: 'the new generation in the ConfigMap after recovery',
      timeoutMs: 30_000,
    });
    await waitFor(
      async () =>
        condition(await client.get<EndpointObj>(Resources.endpoint, ns, 'clicks'), 'Degraded')?.status ===
        'False',
      { what: 'Degraded=False after recovery', timeoutMs: 20_000 },
    );
  });

  void test('a spec error keeps the last good generation in the config and says so', async () => {
    const served = await viewsFile();
    assert.match(served ?? '', /'click'/);
    await client.apply(Resources.view, viewBody("event IN (SELECT 'x' FROM read_csv('/etc/passwd'))"), {
      force: false,
    });
    const v = await waitFor(
      async () => {
        const o = await getView();
        return condition(o, 'Compiled')?.status === 'False' ? o : undefined;
      },
      { what: 'Compiled=False for the broken generation', timeoutMs: 20_000 },
    );
    const attached = condition(v, 'Attached');
    console.log(`# Attached=${attached?.status} ${attached?.reason}: ${attached?.message}`);
    assert.equal(attached?.status, 'True');
    assert.equal(attached?.reason, 'LastGoodGeneration');
    assert.equal(await viewsFile(), served, 'the last good generation is still served');
  });

  void test('an operator restarted while the compiler fails keeps the last good generation: first an outage, then the spec error', async () => {
    // The View's current generation is the broken one of the test above; the
    // ConfigMap serves the generation before it.
    const served = await viewsFile();
    assert.match(served ?? '', /'click'/);
    const cm = await client.get<V1ConfigMap & KubeObject>(Resources.configMap, ns, 'clicks-ingest-views');
    console.log(
      `# ${VIEW_SOURCES_ANNOTATION}: ${cm?.metadata?.annotations?.[VIEW_SOURCES_ANNOTATION] ?? '(none)'}`,
    );
    for (const o of operators.splice(0)) await o.stop();

    // A new process (nothing in memory) whose compiler cannot run at all.
    const compiler = flakyCompiler();
    compiler.broken = true;
    const metrics = new OperatorMetrics();
    await startOperator(compiler, metrics);
    await waitFor(async () => (await errorCount(metrics, 'endpoint')) >= 2, {
      what: 'the Endpoint reconcile fails on the outage and is retried',
      timeoutMs: 20_000,
    });
    assert.equal(await viewsFile(), served, 'the outage changes nothing');

    // The compiler comes back and says the current generation is a spec
    // error: the View's last good generation is only in the ConfigMap now.
    compiler.broken = false;
    await waitFor(
      async () => {
        const m = await metrics.reconcileTotal.get();
        return m.values.some(
          (v) => v.labels.controller === 'endpoint' && v.labels.result !== 'error' && v.value >= 1,
        );
      },
      { what: 'an Endpoint reconcile that succeeds after the outage', timeoutMs: 30_000 },
    );
    const ep = await client.get<EndpointObj>(Resources.endpoint, ns, 'clicks');
    console.log(`# after the restart: views ${JSON.stringify(ep?.status?.views)}`);
    assert.equal(await viewsFile(), served, 'the last good generation is still served after the restart');
    assert.deepEqual(ep?.status?.views, ['page_views']);
    const attached = condition(await getView(), 'Attached');
    assert.equal(attached?.reason, 'LastGoodGeneration', attached?.message);
    assert.equal(condition(await getView(), 'Compiled')?.status, 'False');
  });
});

void describe('leader election under a slow list and hung Lease calls', () => {
  let ns: string;
  let proxy: ApiProxy;
  const procs: OperatorProcess[] = [];
  const lease = { duration: 2000, renew: 1500, retry: 300 };
  const leaseArgs = (): string[] => [
    '--leader-elect',
    '--namespace',
    ns,
    '--lease-namespace',
    ns,
    '--lease-duration-ms',
    String(lease.duration),
    '--renew-deadline-ms',
    String(lease.renew),
    '--retry-period-ms',
    String(lease.retry),
  ];
  const holder = async (): Promise<string | undefined> =>
    (
      await client.get<KubeObject & { spec?: { holderIdentity?: string } }>(
        Resources.lease,
        ns,
        'landfall-operator',
      )
    )?.spec?.holderIdentity;

  before(async () => {
    await installCrds();
    ns = await kube.newNamespace('leader');
    proxy = await startApiProxy();
  });
  after(async () => {
    await Promise.all(procs.map((p) => p.proc.stop({ graceMs: 3000 })));
    await proxy?.close();
  });

  void test('a leader whose cache sync outlasts the lease keeps renewing; no second leader meanwhile', async () => {
    await client.apply(Resources.endpoint, endpointBody(ns, 'slow'), { force: false });
    // The leader's first list of Endpoints hangs (a slow apiserver, a huge
    // cluster); its Lease calls pass.
    proxy.hold = (req) =>
      req.method === 'GET' &&
      /\/apis\/landfall\.dev\/v1alpha1\/namespaces\/[^/]+\/endpoints(\?|$)/.test(req.url ?? '') &&
      !/[?&]watch=/.test(req.url ?? '');
    const a = await startOperatorProcess('op-a', proxy.url, leaseArgs());
    procs.push(a);
    await waitFor(() => proxy.held > 0, {
      what: 'op-a leads and lists (held)',
      timeoutMs: 30_000,
      process: a.proc,
    });
    assert.equal(await holder(), 'op-a');
    assert.equal(await a.readyz(), 503, 'not ready while its caches sync');

    const b = await startOperatorProcess('op-b', kube.server, leaseArgs());
    procs.push(b);
    await waitFor(async () => (await b.metric('landfall_operator_leader')) === 0, {
      what: 'op-b campaigning',
      timeoutMs: 30_000,
      process: b.proc,
    });
    // Three lease durations with op-b campaigning: on the old code op-a
    // stopped renewing while it synced and op-b took the Lease after one.
    const windowEnd = performance.now() + 3 * lease.duration;
    const seen = new Set<string>();
    let polls = 0;
    while (performance.now() < windowEnd) {
      seen.add((await holder()) ?? '(none)');
      assert.equal(await b.metric('landfall_operator_leader'), 0, 'op-b never leads');
      polls++;
      await new Promise((r) => setTimeout(r, 100));
    }
    console.log(
      `# ${polls} polls over ${3 * lease.duration} ms of slow sync: holders ${[...seen].join(', ')}`,
    );
    assert.deepEqual([...seen], ['op-a'], 'op-a held the Lease throughout');
    assert.equal(proxy.held, 1, 'op-a was still syncing');
    assert.equal(await a.readyz(), 503);

    proxy.release();
    await waitFor(async () => (await a.readyz()) === 200, {
      what: 'op-a ready once synced',
      timeoutMs: 20_000,
      process: a.proc,
    });
    await waitFor(() => client.get(Resources.statefulSet, ns, 'slow-ingest'), {
      what: 'op-a reconciles after the sync',
      timeoutMs: 20_000,
      process: a.proc,
    });
    assert.equal(await holder(), 'op-a');
  });

  void test('a leader whose Lease calls hang steps down and exits 1; the standby takes over', async () => {
    const a = procs[0];
    if (!a?.proc.running()) assert.fail('op-a still leads from the test before');
    proxy.swallow = (req) => (req.url ?? '').includes('/apis/coordination.k8s.io/');
    const exit = await waitFor(async () => (a.proc.running() ? undefined : a.proc.exited), {
      what: 'op-a to step down and exit',
      timeoutMs: 30_000,
      intervalMs: 100,
    });
    assert.equal(exit.code, 1, 'leadership lost exits 1');
    assert.match(await readFile(a.proc.logPath, 'utf8'), /leadership lost/);
    await waitFor(async () => (await holder()) === 'op-b', {
      what: 'op-b takes over',
      timeoutMs: 30_000,
    });
  });
});

void describe('volumes of a deleted Endpoint are never adopted by a new one of the same name', () => {
  let ns: string;
  let operator: Operator | undefined;
  before(async () => {
    await installCrds();
    ns = await kube.newNamespace('reborn');
    operator = new Operator({
      kubeConfig: kube.kubeConfig,
      namespace: ns,
      nodeImage: 'ghcr.io/landfall/ingest-node:e2e',
      log,
      metrics: new OperatorMetrics(),
      drainPollMs: 500,
    });
    await operator.start();
  });
  after(async () => {
    await operator?.stop();
  });

  type Sts = KubeObject & {
    spec: { volumeClaimTemplates: { metadata: { name: string; labels: Record<string, string> } }[] };
  };

  void test('claims carry the Endpoint uid; a re-created Endpoint waits (ForeignVolumes) until they are gone', async () => {
    await client.apply(Resources.endpoint, endpointBody(ns, 'reborn'), { force: false });
    const sts = await waitFor(() => client.get<Sts>(Resources.statefulSet, ns, 'reborn-ingest'), {
      what: 'StatefulSet reborn-ingest',
      timeoutMs: 20_000,
    });
    const first = await client.get<EndpointObj>(Resources.endpoint, ns, 'reborn');
    const template = sts.spec.volumeClaimTemplates[0]?.metadata;
    assert.equal(template?.labels['landfall.dev/endpoint-uid'], first?.metadata?.uid);
    // The claim the StatefulSet controller makes from that template (no
    // controller-manager runs here): name data-<sts>-0, the template's labels.
    await client.create(Resources.pvc, {
      metadata: { name: 'data-reborn-ingest-0', namespace: ns, labels: template?.labels },
      spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '10Gi' } } },
    } as KubeObject);

    // The Endpoint goes with the force annotation (the finalizer would delete
    // its own drained claims): the claim stays behind, as after any force delete.
    await waitFor(
      async () =>
        (await client.get<EndpointObj>(Resources.endpoint, ns, 'reborn'))?.metadata?.finalizers?.length,
      { what: 'the finalizer', timeoutMs: 10_000 },
    );
    await client.mergePatch(Resources.endpoint, ns, 'reborn', {
      metadata: { annotations: { 'landfall.dev/force-delete': 'true' } },
    });
    await client.delete(Resources.endpoint, ns, 'reborn');
    await waitFor(async () => (await client.get(Resources.endpoint, ns, 'reborn')) === undefined, {
      what: 'Endpoint reborn deleted',
      timeoutMs: 20_000,
    });
    await client.delete(Resources.statefulSet, ns, 'reborn-ingest');
    await waitFor(async () => (await client.get(Resources.statefulSet, ns, 'reborn-ingest')) === undefined, {
      what: 'the old StatefulSet gone',
      timeoutMs: 10_000,
    });

    // Same name, another bucket.
    await client.apply(Resources.endpoint, endpointBody(ns, 'reborn', { s3: { bucket: 'another-bucket' } }), {
      force: false,
    });
    const blocked = await waitFor(
      async () => {
        const e = await client.get<EndpointObj>(Resources.endpoint, ns, 'reborn');
        return condition(e, 'Degraded')?.reason === 'ForeignVolumes' ? e : undefined;
      },
      { what: 'Degraded ForeignVolumes', timeoutMs: 20_000 },
    );
    const message = condition(blocked, 'Degraded')?.message ?? '';
    console.log(`# Degraded ForeignVolumes: ${message}`);
    assert.match(
      message,
      new RegExp(`data-reborn-ingest-0 \\(Endpoint uid ${first?.metadata?.uid ?? '?'}\\)`),
    );
    assert.notEqual(blocked.metadata?.uid, first?.metadata?.uid);
    assert.equal(await client.get(Resources.statefulSet, ns, 'reborn-ingest'), undefined, 'no StatefulSet');

    // Once the old claim is deleted (after checking it holds nothing), the new Endpoint proceeds.
    await client.delete(Resources.pvc, ns, 'data-reborn-ingest-0');
    // What the pvc-protection controller does for a claim no pod uses.
    await client.mergePatch(Resources.pvc, ns, 'data-reborn-ingest-0', { metadata: { finalizers: null } });
    const fresh = await waitFor(() => client.get<Sts>(Resources.statefulSet, ns, 'reborn-ingest'), {
      what: 'the new StatefulSet',
      timeoutMs: 60_000,
      intervalMs: 200,
    });
    assert.equal(
      fresh.spec.volumeClaimTemplates[0]?.metadata.labels['landfall.dev/endpoint-uid'],
      blocked.metadata?.uid,
    );
  });
});

void describe('pod template overrides and the scale subresource', () => {
  let ns: string;
  let operator: Operator | undefined;
  before(async () => {
    await installCrds();
    ns = await kube.newNamespace('placed');
    operator = new Operator({
      kubeConfig: kube.kubeConfig,
      namespace: ns,
      nodeImage: 'ghcr.io/landfall/ingest-node:e2e',
      log,
      metrics: new OperatorMetrics(),
    });
    await operator.start();
  });
  after(async () => {
    await operator?.stop();
  });

  type PodSpecLike = {
    nodeSelector?: Record<string, string>;
    tolerations?: { key?: string; effect?: string }[];
    affinity?: Record<string, unknown>;
    topologySpreadConstraints?: {
      topologyKey: string;
      labelSelector?: { matchLabels?: Record<string, string> };
    }[];
    priorityClassName?: string;
    imagePullSecrets?: { name: string }[];
  };
  type Sts = KubeObject & {
    spec: {
      replicas: number;
      template: { metadata: { annotations: Record<string, string> }; spec: PodSpecLike };
    };
  };

  const podTemplate = {
    metadata: { annotations: { 'karpenter.sh/do-not-disrupt': 'true' } },
    nodeSelector: { 'node.kubernetes.io/instance-type': 'i4i.large' },
    tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'ingest', effect: 'NoSchedule' }],
    affinity: {
      nodeAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: {
          nodeSelectorTerms: [
            {
              matchExpressions: [
                { key: 'karpenter.sh/capacity-type', operator: 'In', values: ['on-demand'] },
              ],
            },
          ],
        },
      },
    },
    topologySpreadConstraints: [
      { maxSkew: 1, topologyKey: 'topology.kubernetes.io/zone', whenUnsatisfiable: 'ScheduleAnyway' },
    ],
    priorityClassName: 'landfall-critical',
    imagePullSecrets: [{ name: 'registry-creds' }],
  };

  void test('nodeSelector, tolerations, affinity, spread, priority, pull secrets and annotations reach the StatefulSet', async () => {
    await client.apply(Resources.endpoint, endpointBody(ns, 'placed', { podTemplate }), { force: false });
    const sts = await waitFor(() => client.get<Sts>(Resources.statefulSet, ns, 'placed-ingest'), {
      what: 'StatefulSet placed-ingest (the apiserver validated its pod template)',
      timeoutMs: 20_000,
    });
    const pod = sts.spec.template.spec;
    assert.deepEqual(pod.nodeSelector, podTemplate.nodeSelector);
    assert.deepEqual(
      pod.tolerations?.map((t) => `${t.key ?? ''}:${t.effect ?? ''}`),
      ['dedicated:NoSchedule'],
    );
    assert.ok(pod.affinity?.nodeAffinity, "the user's node affinity");
    assert.ok(pod.affinity?.podAntiAffinity, "the operator's anti-affinity stays");
    assert.equal(
      pod.topologySpreadConstraints?.[0]?.labelSelector?.matchLabels?.['landfall.dev/endpoint'],
      'placed',
    );
    assert.equal(pod.priorityClassName, 'landfall-critical');
    assert.deepEqual(pod.imagePullSecrets, [{ name: 'registry-creds' }]);
    assert.equal(sts.spec.template.metadata.annotations['karpenter.sh/do-not-disrupt'], 'true');

    // The CRD checks what it types, and keeps the config hash the operator's.
    await assert.rejects(
      client.create(
        Resources.endpoint,
        endpointBody(ns, 'bad-toleration', {
          podTemplate: { tolerations: [{ key: 'a', operator: 'Maybe' }] },
        }),
      ),
      /Unsupported value: "Maybe"/,
    );
    await assert.rejects(
      client.create(
        Resources.endpoint,
        endpointBody(ns, 'bad-annotation', {
          podTemplate: { metadata: { annotations: { 'landfall.dev/config-hash': 'x' } } },
        }),
      ),
      /landfall.dev\/config-hash is set by the operator/,
    );
  });

  void test('kubectl scale goes through the scale subresource to the StatefulSet; status.selector is the pods', async () => {
    await kube.kubectl(['scale', 'endpoints.landfall.dev/placed', '--replicas=3', '-n', ns]);
    await waitFor(
      async () => (await client.get<Sts>(Resources.statefulSet, ns, 'placed-ingest'))?.spec.replicas === 3,
      {
        what: 'StatefulSet at 3 replicas',
        timeoutMs: 20_000,
      },
    );
    const scale = await waitFor(
      async () => {
        const s = await client.request<{ spec: { replicas: number }; status: { selector?: string } }>(
          HttpMethod.GET,
          `/apis/landfall.dev/v1alpha1/namespaces/${ns}/endpoints/placed/scale`,
        );
        return s.status.selector ? s : undefined;
      },
      { what: 'the scale subresource with a selector', timeoutMs: 20_000 },
    );
    assert.equal(scale.spec.replicas, 3);
    assert.equal(
      scale.status.selector,
      'app.kubernetes.io/name=landfall,app.kubernetes.io/component=ingest-node,landfall.dev/endpoint=placed',
    );
  });
});
