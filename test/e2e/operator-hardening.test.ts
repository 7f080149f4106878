// The operator's failure handling against a real kube-apiserver + etcd +
// kube-controller-manager (no kubelet: Pods stay Pending), issue 13:
// - a compiler that cannot run never strips Views from the views ConfigMap;
// - leader election renews while the caches sync (no second leader during a
//   slow list), Lease calls are bounded, /readyz waits for the sync, and a
//   missing CRD stops the operator at start;
// - volumes of a deleted Endpoint are never adopted by a new one of the same name;
// - pod template overrides and the scale subresource.
// One control plane for the file; every wait is a poll with a deadline.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import yaml from 'js-yaml';
import type { V1ConfigMap } from '@kubernetes/client-node';
import { repoRoot, startKubernetes, waitFor } from '../harness/index.ts';
import type { KubernetesTestbed } from '../harness/index.ts';
import { Operator } from '../../operator/src/operator.ts';
import { createNodeViewCompiler } from '../../operator/src/adapters/view-compiler.ts';
import type { ClosableViewCompiler } from '../../operator/src/adapters/view-compiler.ts';
import { KubeClient, Resources } from '../../operator/src/runtime/kube.ts';
import type { KubeObject } from '../../operator/src/runtime/kube.ts';
import { jsonLogger } from '../../operator/src/runtime/log.ts';
import { OperatorMetrics } from '../../operator/src/runtime/metrics.ts';
import type { Endpoint } from '../../operator/src/api/endpoint.ts';
import type { View } from '../../operator/src/api/view.ts';

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

before(async () => {
  kube = await startKubernetes();
  client = new KubeClient(kube.kubeConfig);
  await installCrds();
});

after(async () => {
  await kube?.stop();
});

void describe('compile cache: a compiler that cannot run never strips Views', () => {
  let ns: string;
  const operators: Operator[] = [];
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
});
