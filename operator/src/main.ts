#!/usr/bin/env node
// landfall-operator: reconciles Endpoint and View resources.
//
//   landfall-operator [--kubeconfig FILE] [--watch-namespaces NS,...] [--leader-elect]
//                     [--node-image IMAGE] [--metrics-port 8080] ...
//
// Without --kubeconfig: in-cluster config, else ~/.kube/config ($KUBECONFIG).
// SIGTERM/SIGINT: stop reconciling (in-flight reconciles finish, bounded),
// release the leader Lease, exit 0. Losing the Lease exits 1 at once (no
// graceful stop: a successor may already lead) so the pod restarts with clean
// caches, as client-go controllers do. CRDs missing or older than the
// operator: a clear error and exit 1 before anything else runs.
//
// Exit codes: 0 after --help or a clean stop; 2 for a usage error (unknown
// flag, bad value: one line on stderr naming it); 1 for a runtime failure
// (the API server unreachable, CRDs missing…), logged as a JSON line.
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { checkCrds } from './runtime/crd-check.ts';
import { KubeClient } from './runtime/kube.ts';
import { LeaderElector } from './runtime/leader.ts';
import { loadOrCreateMasterKey } from './runtime/operator-key.ts';
import { jsonLogger } from './runtime/log.ts';
import type { LogLevel, Logger } from './runtime/log.ts';
import { OperatorMetrics } from './runtime/metrics.ts';
import { Operator } from './operator.ts';

export const DEFAULT_NODE_IMAGE = 'ghcr.io/landfall/ingest-node:0.1.0';

const USAGE = `landfall-operator — reconciles landfall.dev Endpoints and Views

  --kubeconfig FILE          kubeconfig (default: in-cluster, then $KUBECONFIG / ~/.kube/config)
  --watch-namespaces NS,...  watch only these namespaces, each with its own list/watch (a Role in each
                             is enough; Nodes stay cluster-wide); empty: all (default)
  --namespace NS|all         one namespace to watch: the same as --watch-namespaces NS (default: all)
  --leader-elect             run only while holding the Lease (for several replicas)
  --lease-namespace NS       namespace of the Lease (default: $POD_NAMESPACE, then --namespace, then default)
  --lease-name NAME          (default: landfall-operator)
  --identity ID              leader identity (default: hostname_pid)
  --lease-duration-ms N      (default 15000)
  --renew-deadline-ms N      (default 10000)
  --retry-period-ms N        (default 2000)
  --node-image IMAGE         ingest-node image for Endpoints without spec.image (default ${DEFAULT_NODE_IMAGE})
  --allowed-images P1,P2     spec.image must start with one of these prefixes (default: any image)
  --operator-key-secret NAME Secret holding the master key the operator's status keys derive from,
                             created if missing (default landfall-operator-key)
  --operator-key-namespace NS  its namespace (default: $POD_NAMESPACE, then --lease-namespace, --namespace, default)
  --network-policy           a NetworkPolicy per Endpoint: ingest from anywhere, the nodes' admin port
                             (/metrics, /v1/status) from the operator's pods and the metrics namespace only
  --network-policy-operator-labels K=V,...  labels of the operator's pods (needed with --network-policy)
  --network-policy-metrics-namespace NS     namespace allowed to scrape the nodes (default monitoring; empty: none)
  --node-drain true|false    watch Nodes: drain, then move, a replica whose node is cordoned or being
                             removed (needs nodes list/watch cluster-wide; default true)
  --workers N                concurrent reconciles per controller (default 2)
  --resync-period-ms N       re-reconcile everything this often (default 300000)
  --crd-check-timeout-ms N   keep retrying the start-up CRD check this long before exiting 1 (default 30000)
  --metrics-port N           /metrics, /healthz, /readyz (default 8080; 0 = any free port, -1 = off)
  --metrics-host HOST        (default 0.0.0.0)
  --log-level LEVEL          debug|info|warn|error (default info)
`;

/** A command line the operator cannot run with: exit 2, nothing started. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

function int(v: string | undefined, name: string, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n))
    throw new UsageError(`--${name} must be an integer, got "${v}"`);
  return n;
}

/** k=v,k=v → a label map. */
function labelList(v: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of v.split(',')) {
    if (pair.trim() === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--network-policy-operator-labels: "${pair}" is not key=value`);
    out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  return out;
}

export function loadKubeConfig(path: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  return kc;
}

async function serveMetrics(
  metrics: OperatorMetrics,
  host: string,
  port: number,
  ready: () => boolean,
  log: Logger,
): Promise<Server> {
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/metrics') {
      metrics.registry
        .metrics()
        .then((text) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(text);
        })
        .catch((err: unknown) => {
          res.writeHead(500);
          res.end(String(err));
        });
    } else if (url === '/healthz') {
      res.writeHead(200).end('ok');
    } else if (url === '/readyz') {
      const ok = ready();
      res.writeHead(ok ? 200 : 503).end(ok ? 'ok' : 'not ready');
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const addr = server.address();
  log.info({ port: typeof addr === 'object' && addr ? addr.port : port }, 'metrics listening');
  return server;
}

function parse(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      options: {
        kubeconfig: { type: 'string' },
        namespace: { type: 'string' },
        'watch-namespaces': { type: 'string', default: '' },
        'leader-elect': { type: 'boolean', default: false },
        'lease-namespace': { type: 'string' },
        'lease-name': { type: 'string', default: 'landfall-operator' },
        identity: { type: 'string' },
        'lease-duration-ms': { type: 'string' },
        'renew-deadline-ms': { type: 'string' },
        'retry-period-ms': { type: 'string' },
        'node-image': { type: 'string', default: DEFAULT_NODE_IMAGE },
        'allowed-images': { type: 'string', default: '' },
        'operator-key-secret': { type: 'string', default: 'landfall-operator-key' },
        'operator-key-namespace': { type: 'string' },
        'network-policy': { type: 'boolean', default: false },
        'network-policy-operator-labels': { type: 'string', default: '' },
        'network-policy-metrics-namespace': { type: 'string', default: 'monitoring' },
        'node-drain': { type: 'string', default: 'true' },
        workers: { type: 'string' },
        'resync-period-ms': { type: 'string' },
        'crd-check-timeout-ms': { type: 'string' },
        'metrics-port': { type: 'string' },
        'metrics-host': { type: 'string', default: '0.0.0.0' },
        'log-level': { type: 'string', default: 'info' },
        help: { type: 'boolean', default: false },
      },
      strict: true,
    });
  } catch (err) {
    // node:util's parse errors (unknown option, missing value, positional) are the user's.
    if (String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS'))
      throw new UsageError((err as Error).message);
    throw err;
  }
}

export async function main(argv: string[] = process.argv.slice(2)): Promise<void> {
  const { values } = parse(argv);
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const level = values['log-level'] as LogLevel;
  if (!['debug', 'info', 'warn', 'error'].includes(level))
    throw new UsageError(`--log-level: unknown level ${level} (debug, info, warn or error)`);
  const networkPolicy = values['network-policy']
    ? {
        operatorPodLabels: labelList(values['network-policy-operator-labels']),
        metricsNamespace: values['network-policy-metrics-namespace'],
      }
    : undefined;
  if (networkPolicy !== undefined && Object.keys(networkPolicy.operatorPodLabels).length === 0)
    throw new UsageError(
      '--network-policy needs --network-policy-operator-labels (the labels of the operator pods)',
    );
  // Every number is checked before anything connects: a typo is exit 2 at once, not a failure later.
  const n = {
    crdCheckTimeoutMs: int(values['crd-check-timeout-ms'], 'crd-check-timeout-ms', 30_000),
    workers: int(values.workers, 'workers', 2),
    resyncPeriodMs: int(values['resync-period-ms'], 'resync-period-ms', 300_000),
    metricsPort: int(values['metrics-port'], 'metrics-port', 8080),
    leaseDurationMs: int(values['lease-duration-ms'], 'lease-duration-ms', 15_000),
    renewDeadlineMs: int(values['renew-deadline-ms'], 'renew-deadline-ms', 10_000),
    retryPeriodMs: int(values['retry-period-ms'], 'retry-period-ms', 2_000),
  };
  if (!['true', 'false'].includes(values['node-drain']))
    throw new UsageError(`--node-drain must be true or false, got "${values['node-drain']}"`);
  const identity = values.identity ?? `${hostname()}_${process.pid}`;
  const log = jsonLogger(level, { component: 'landfall-operator', identity });
  const namespace = values.namespace && values.namespace !== 'all' ? values.namespace : undefined;
  const watchNamespaces = [
    ...new Set(
      [...values['watch-namespaces'].split(','), ...(namespace !== undefined ? [namespace] : [])]
        .map((p) => p.trim())
        .filter((p) => p !== ''),
    ),
  ];
  for (const ns of watchNamespaces)
    if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(ns))
      throw new UsageError(`--watch-namespaces: "${ns}" is not a namespace name`);
  // Where the Lease and the key live when nothing else says: the one watched namespace.
  const onlyNamespace = watchNamespaces.length === 1 ? watchNamespaces[0] : undefined;
  const kubeConfig = loadKubeConfig(values.kubeconfig);
  const metrics = new OperatorMetrics(undefined, { defaultMetrics: true });
  await waitForCrds(new KubeClient(kubeConfig), n.crdCheckTimeoutMs, log);

  const operatorNamespace =
    values['operator-key-namespace'] ??
    process.env.POD_NAMESPACE ??
    values['lease-namespace'] ??
    onlyNamespace ??
    'default';
  const operatorKey = await loadOrCreateMasterKey(
    new KubeClient(kubeConfig),
    operatorNamespace,
    values['operator-key-secret'],
  );
  const operator = new Operator({
    kubeConfig,
    namespaces: watchNamespaces,
    nodeImage: values['node-image'],
    allowedImages: values['allowed-images']
      .split(',')
      .map((p) => p.trim())
      .filter((p) => p !== ''),
    operatorKey,
    ...(networkPolicy !== undefined ? { networkPolicy: { ...networkPolicy, operatorNamespace } } : {}),
    log,
    metrics,
    workers: n.workers,
    resyncPeriodMs: n.resyncPeriodMs,
    nodeDrain: values['node-drain'] === 'true',
  });

  let leading = !values['leader-elect'];
  const metricsPort = n.metricsPort;
  // Ready: a standby (campaigning is its job), or a leader whose caches
  // synced and whose workers run; never a leader still listing.
  const ready = (): boolean => !leading || operator.isSynced;
  const server =
    metricsPort >= 0
      ? await serveMetrics(metrics, values['metrics-host'], metricsPort, ready, log)
      : undefined;

  const elector = values['leader-elect']
    ? new LeaderElector({
        kubeConfig,
        namespace: values['lease-namespace'] ?? process.env.POD_NAMESPACE ?? onlyNamespace ?? 'default',
        name: values['lease-name'],
        identity,
        leaseDurationMs: n.leaseDurationMs,
        renewDeadlineMs: n.renewDeadlineMs,
        retryPeriodMs: n.retryPeriodMs,
        log,
        metrics,
      })
    : undefined;
  let shuttingDown = false;
  const shutdown = async (signal: string): Promise<void> => {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info({ signal }, 'shutting down');
    if (elector) {
      // The elector's run() ends: onStoppedLeading stops the operator and
      // the Lease is released before main() returns.
      elector.stop();
    } else {
      await operator.stop();
      server?.close();
    }
  };
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  process.once('SIGINT', () => void shutdown('SIGINT'));

  if (!elector) {
    metrics.leader.set(1);
    await operator.start();
    return;
  }

  metrics.leader.set(0);
  await elector.run({
    onStartedLeading: async () => {
      leading = true;
      await operator.start();
    },
    onStoppedLeading: async (reason) => {
      if (reason === 'lost') {
        // No graceful stop: in-flight reconciles would keep writing while a
        // successor may already lead. They are idempotent; the next leader
        // redoes them.
        log.error({}, 'leadership lost: exiting so a fresh process campaigns again');
        process.exit(1);
      }
      await operator.stop();
      elector?.stop();
    },
  });
  server?.close();
}

/** The start-up CRD check, retried (the apiserver publishes a new CRD's OpenAPI a few seconds late). */
async function waitForCrds(client: KubeClient, timeoutMs: number, log: Logger): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (let attempt = 1; ; attempt++) {
    try {
      const { warnings } = await checkCrds(client);
      for (const w of warnings) log.warn({}, w);
      return;
    } catch (err) {
      if (performance.now() >= deadline) throw err;
      log.warn({ err: (err as Error).message, attempt }, 'CRD check failed; retrying');
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`landfall-operator: ${err.message}\nSee landfall-operator --help.\n`);
      process.exit(2);
    }
    // Where the operator's logs go, in their format: a log pipeline sees why it stopped.
    jsonLogger('error', { component: 'landfall-operator' }).error({ err }, 'landfall-operator failed');
    process.exit(1);
  });
}
