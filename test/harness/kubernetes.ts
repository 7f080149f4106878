// A real Kubernetes control plane on loopback: etcd + kube-apiserver +
// kube-controller-manager. Without `node: true` there is no kubelet (Pods are
// created and stay Pending); with it, node.ts adds a scheduler, containerd and
// a kubelet named `localhost`, one node per machine at a time.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import {
  freePort,
  httpOk,
  retryOnPortClash,
  runTool,
  scratchDir,
  startProcess,
  testbedBinary,
  testbedVersions,
  waitFor,
} from './proc.ts';
import type { RunToolOptions, ServerProcess, ToolResult } from './proc.ts';
import { acquireNodeLock, startNodeOn, KUBERNETES_SERVICE_IP, POD_GATEWAY } from './node.ts';
import type { KubeNode, NodeLock, StartNodeOptions } from './node.ts';

const execFileP = promisify(execFile);

export interface StartKubernetesOptions {
  /** Start kube-controller-manager too (StatefulSets get Pods, namespaces get ServiceAccounts). Default true. */
  controllerManager?: boolean;
  /** Bound on the whole start-up; default 60 000. */
  readyTimeoutMs?: number;
  /**
   * Run each controller under its own ServiceAccount with the bootstrap RBAC
   * roles (`--use-service-account-credentials`), as a real cluster does. It
   * delays the controllers by ~5 s (each one creates its ServiceAccount and
   * waits for a token), so by default the controller-manager runs with
   * cluster-admin credentials instead. Default false.
   */
  controllerServiceAccounts?: boolean;
  /**
   * Add a real node (kube-scheduler, containerd, a kubelet named `localhost`,
   * a CNI bridge, local PVs): Pods run. Takes the machine's node lock first
   * (waiting for another test file's node), so a test file that uses it holds
   * the machine's only node until `stop()`. Needs `setup.sh node` and root.
   */
  node?: boolean | StartNodeOptions;
}

export interface KubernetesTestbed {
  /** `https://127.0.0.1:<port>` */
  readonly server: string;
  /** A kubeconfig (JSON, certificates inlined) for a cluster-admin user (O=system:masters). Use with kubectl/helm `--kubeconfig`. */
  readonly kubeconfigPath: string;
  /** The same kubeconfig, loaded. */
  readonly kubeConfig: KubeConfig;
  /** A bearer token that is also cluster-admin (from `--token-auth-file`). */
  readonly adminToken: string;
  /** PEM of the cluster CA (signs the serving cert and client certs). */
  readonly caPath: string;
  readonly etcdEndpoint: string;
  /** `KUBE_VERSION` from versions.env, e.g. `v1.37.2`. */
  readonly version: string;
  readonly dir: string;
  readonly logPaths: { etcd: string; apiserver: string; controllerManager?: string };
  /** Wall-clock ms from each start to its ready check passing (`total` from the call). */
  readonly startupMs: {
    pki: number;
    etcd: number;
    apiserver: number;
    controllerManager?: number;
    total: number;
  };
  /** The real node, when started with `node: true`. */
  readonly node?: KubeNode;
  /** Run the built kubectl against this cluster (`--kubeconfig` set). */
  kubectl(args: readonly string[], opts?: RunToolOptions): Promise<ToolResult>;
  /** Run the built helm against this cluster, with its config/cache/data folders in this run's scratch space. */
  helm(args: readonly string[], opts?: RunToolOptions): Promise<ToolResult>;
  /** Create a namespace and wait (bounded) until its `default` ServiceAccount exists, so Pods can be admitted. */
  newNamespace(prefix?: string, timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

interface Pki {
  ca: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  adminCert: string;
  adminKey: string;
  cmCert: string;
  cmKey: string;
  saKey: string;
  saPub: string;
  /** With a node: the API server's client cert for kubelets (logs, exec, port-forward) and the kubelet's own. */
  kubeletClientCert?: string;
  kubeletClientKey?: string;
  kubeletCert?: string;
  kubeletKey?: string;
}

// Only the sections `openssl req` insists on; every extension comes from -addext.
const minimalOpensslConf = '[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n';

async function openssl(cwd: string, args: readonly string[]): Promise<void> {
  try {
    await execFileP('openssl', args, { cwd, timeout: 20_000 });
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`openssl ${args.join(' ')} failed: ${e.stderr ?? e.message}`, { cause: err });
  }
}

/** CA, serving cert (SAN 127.0.0.1), admin and controller-manager client certs, SA key pair. EC P-256: ~0.1 s. */
async function makePki(dir: string, cmSubject: string, withNode: boolean): Promise<Pki> {
  const conf = join(dir, 'openssl.cnf');
  writeFileSync(conf, minimalOpensslConf);
  const p = (name: string): string => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await openssl(dir, [
    'req', '-config', conf, '-x509', '-new', ...ec, '-days', '2',
    '-keyout', p('ca.key'), '-out', p('ca.crt'), '-subj', '/CN=landfall-testbed-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
  ]); // prettier-ignore
  const leaf = (base: string, subj: string, ...ext: string[]): Promise<void> =>
    openssl(dir, [
      'req', '-config', conf, '-new', ...ec, '-days', '2',
      '-keyout', p(`${base}.key`), '-out', p(`${base}.crt`), '-subj', subj,
      '-CA', p('ca.crt'), '-CAkey', p('ca.key'),
      '-addext', 'basicConstraints=critical,CA:FALSE',
      '-addext', 'keyUsage=critical,digitalSignature,keyEncipherment',
      ...ext.flatMap((e) => ['-addext', e]),
    ]); // prettier-ignore
  await Promise.all([
    leaf(
      'apiserver',
      '/CN=kube-apiserver',
      'extendedKeyUsage=serverAuth',
      `subjectAltName=IP:127.0.0.1,IP:${POD_GATEWAY},IP:${KUBERNETES_SERVICE_IP},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc`,
    ),
    leaf('admin', '/O=system:masters/CN=landfall-admin', 'extendedKeyUsage=clientAuth'),
    leaf('controller-manager', cmSubject, 'extendedKeyUsage=clientAuth'),
    // system:masters for both: the kubelet's webhook authorizer asks the API
    // server, and the test bed runs no Node authorizer.
    ...(withNode
      ? [
          leaf(
            'kubelet-client',
            '/O=system:masters/CN=kube-apiserver-kubelet-client',
            'extendedKeyUsage=clientAuth',
          ),
          leaf(
            'kubelet',
            '/O=system:masters/O=system:nodes/CN=system:node:localhost',
            'extendedKeyUsage=clientAuth',
          ),
        ]
      : []),
    openssl(dir, [
      'genpkey',
      '-algorithm',
      'EC',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-out',
      p('sa.key'),
    ]).then(() => openssl(dir, ['pkey', '-in', p('sa.key'), '-pubout', '-out', p('sa.pub')])),
  ]);
  return {
    ca: p('ca.crt'),
    caKey: p('ca.key'),
    serverCert: p('apiserver.crt'),
    serverKey: p('apiserver.key'),
    adminCert: p('admin.crt'),
    adminKey: p('admin.key'),
    cmCert: p('controller-manager.crt'),
    cmKey: p('controller-manager.key'),
    saKey: p('sa.key'),
    saPub: p('sa.pub'),
    ...(withNode
      ? {
          kubeletClientCert: p('kubelet-client.crt'),
          kubeletClientKey: p('kubelet-client.key'),
          kubeletCert: p('kubelet.crt'),
          kubeletKey: p('kubelet.key'),
        }
      : {}),
  };
}

function writeKubeconfig(
  path: string,
  server: string,
  caPath: string,
  user: string,
  cert: string,
  key: string,
): void {
  const b64 = (f: string): string => readFileSync(f).toString('base64');
  // JSON is YAML: kubectl, helm and client-node all read it.
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'landfall-testbed', cluster: { server, 'certificate-authority-data': b64(caPath) } }],
    users: [{ name: user, user: { 'client-certificate-data': b64(cert), 'client-key-data': b64(key) } }],
    contexts: [
      { name: 'landfall-testbed', context: { cluster: 'landfall-testbed', user, namespace: 'default' } },
    ],
    'current-context': 'landfall-testbed',
  };
  writeFileSync(path, JSON.stringify(config, null, 2), { mode: 0o600 });
}

interface TlsOptions {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  rejectUnauthorized?: boolean;
}

/** GET over TLS, answering the status code (body discarded), with a per-attempt bound. */
function httpsStatus(url: string, tls: TlsOptions, attemptTimeoutMs = 1000): Promise<number> {
  return new Promise((resolveStatus, reject) => {
    const req = request(url, { method: 'GET', timeout: attemptTimeoutMs, ...tls }, (res) => {
      res.resume();
      resolveStatus(res.statusCode ?? 0);
    });
    req.once('timeout', () => req.destroy(new Error(`GET ${url}: no answer in ${attemptTimeoutMs} ms`)));
    req.once('error', reject);
    req.end();
  });
}

export async function startKubernetes(opts: StartKubernetesOptions = {}): Promise<KubernetesTestbed> {
  const etcdBin = testbedBinary('etcd');
  const apiserverBin = testbedBinary('kube-apiserver');
  const withCm = opts.controllerManager ?? true;
  const cmServiceAccounts = opts.controllerServiceAccounts ?? false;
  const cmSubject = cmServiceAccounts
    ? '/CN=system:kube-controller-manager'
    : '/O=system:masters/CN=system:kube-controller-manager';
  const cmBin = withCm ? testbedBinary('kube-controller-manager') : '';
  const version = testbedVersions()['KUBE_VERSION'] ?? 'unknown';
  const nodeOpts: StartNodeOptions | undefined =
    opts.node === true ? {} : opts.node === false ? undefined : opts.node;
  // Before the control plane starts: waiting for another file's node must not eat its deadline.
  const nodeLock: NodeLock | undefined =
    nodeOpts === undefined ? undefined : await acquireNodeLock(nodeOpts.lockTimeoutMs);
  const deadline = Date.now() + (opts.readyTimeoutMs ?? (nodeOpts === undefined ? 60_000 : 180_000));
  const remainingMs = (): number => Math.max(1, deadline - Date.now());

  const t0 = performance.now();
  const since = (t: number): number => Math.round(performance.now() - t);
  const startupMs: KubernetesTestbed['startupMs'] = { pki: 0, etcd: 0, apiserver: 0, total: 0 };
  const dir = scratchDir('kubernetes');
  const procs: ServerProcess[] = [];
  let node: KubeNode | undefined;
  const stopAll = async (): Promise<void> => {
    try {
      // The node first: the kubelet should not watch its API server vanish.
      await node?.stop();
    } finally {
      // The state is throwaway and kube-apiserver needs >10 s to honour SIGTERM.
      await Promise.all(procs.map((p) => p.stop({ graceMs: 300 })));
      // Without a node (start failed before it), the lock still has to go.
      if (node === undefined) await nodeLock?.release();
    }
  };

  try {
    const [pki, etcd] = await Promise.all([
      makePki(dir, cmSubject, nodeLock !== undefined).then((pki) => {
        startupMs.pki = since(t0);
        return pki;
      }),
      retryOnPortClash(async () => {
        const tEtcd = performance.now();
        const clientPort = await freePort();
        const peerPort = await freePort();
        const p = startProcess({
          name: 'etcd',
          command: etcdBin,
          args: [
            '--name=default',
            // A clash retry must not reuse a member bootstrapped with other URLs.
            `--data-dir=${join(dir, `etcd-${clientPort}`)}`,
            `--listen-client-urls=http://127.0.0.1:${clientPort}`,
            `--advertise-client-urls=http://127.0.0.1:${clientPort}`,
            `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
            `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
            `--initial-cluster=default=http://127.0.0.1:${peerPort}`,
            // Test state is throwaway: skip fsync so etcd does not dominate test time.
            '--unsafe-no-fsync',
            '--log-level=warn',
            // One member, no peers to lose: elect at once instead of after ~1 s.
            '--heartbeat-interval=10',
            '--election-timeout=100',
          ],
          logPath: join(dir, 'etcd.log'),
        });
        procs.push(p);
        const endpoint = `http://127.0.0.1:${clientPort}`;
        await waitFor(() => httpOk(`${endpoint}/health`), {
          what: 'etcd /health',
          timeoutMs: remainingMs(),
          process: p,
        });
        startupMs.etcd = since(tEtcd);
        return { endpoint };
      }),
    ]);

    const adminToken = randomBytes(24).toString('base64url');
    const tokenFile = join(dir, 'tokens.csv');
    writeFileSync(tokenFile, `${adminToken},landfall-admin-token,landfall-admin-token,"system:masters"\n`, {
      mode: 0o600,
    });

    const tls: TlsOptions = {
      ca: readFileSync(pki.ca),
      cert: readFileSync(pki.adminCert),
      key: readFileSync(pki.adminKey),
    };
    const server = await retryOnPortClash(async () => {
      const tApiserver = performance.now();
      const port = await freePort();
      const p = startProcess({
        name: 'kube-apiserver',
        command: apiserverBin,
        args: [
          '--bind-address=127.0.0.1',
          '--advertise-address=127.0.0.1',
          `--secure-port=${port}`,
          `--etcd-servers=${etcd.endpoint}`,
          `--tls-cert-file=${pki.serverCert}`,
          `--tls-private-key-file=${pki.serverKey}`,
          `--client-ca-file=${pki.ca}`,
          `--token-auth-file=${tokenFile}`,
          '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
          `--service-account-key-file=${pki.saPub}`,
          `--service-account-signing-key-file=${pki.saKey}`,
          '--authorization-mode=RBAC',
          // Configuration only: nothing may ever send traffic to it.
          '--service-cluster-ip-range=10.0.0.0/24',
          // Otherwise it keeps failing to reconcile the kubernetes Service onto loopback.
          '--endpoint-reconciler-type=none',
          `--cert-dir=${join(dir, 'apiserver-certs')}`,
          '--profiling=false',
          ...(pki.kubeletClientCert !== undefined && pki.kubeletClientKey !== undefined
            ? [
                `--kubelet-client-certificate=${pki.kubeletClientCert}`,
                `--kubelet-client-key=${pki.kubeletClientKey}`,
                '--kubelet-preferred-address-types=InternalIP',
              ]
            : []),
        ],
        logPath: join(dir, 'kube-apiserver.log'),
      });
      procs.push(p);
      const url = `https://127.0.0.1:${port}`;
      await waitFor(async () => (await httpsStatus(`${url}/readyz`, tls)) === 200, {
        what: 'kube-apiserver /readyz',
        timeoutMs: remainingMs(),
        process: p,
      });
      startupMs.apiserver = since(tApiserver);
      return url;
    });

    const kubeconfigPath = join(dir, 'admin.kubeconfig');
    writeKubeconfig(kubeconfigPath, server, pki.ca, 'landfall-admin', pki.adminCert, pki.adminKey);
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);

    let cmLog: string | undefined;
    if (withCm) {
      const cmKubeconfig = join(dir, 'controller-manager.kubeconfig');
      writeKubeconfig(cmKubeconfig, server, pki.ca, 'system:kube-controller-manager', pki.cmCert, pki.cmKey);
      cmLog = join(dir, 'kube-controller-manager.log');
      await retryOnPortClash(async () => {
        const tCm = performance.now();
        const port = await freePort();
        const p = startProcess({
          name: 'kube-controller-manager',
          command: cmBin,
          args: [
            `--kubeconfig=${cmKubeconfig}`,
            '--bind-address=127.0.0.1',
            `--secure-port=${port}`,
            `--cert-dir=${join(dir, 'controller-manager-certs')}`,
            '--controllers=*',
            ...(cmServiceAccounts ? ['--use-service-account-credentials'] : []),
            `--service-account-private-key-file=${pki.saKey}`,
            `--root-ca-file=${pki.ca}`,
            `--cluster-signing-cert-file=${pki.ca}`,
            `--cluster-signing-key-file=${pki.caKey}`,
            '--leader-elect=false',
          ],
          logPath: cmLog,
        });
        procs.push(p);
        await waitFor(
          async () =>
            (await httpsStatus(`https://127.0.0.1:${port}/healthz`, { rejectUnauthorized: false })) === 200,
          { what: 'kube-controller-manager /healthz', timeoutMs: remainingMs(), process: p },
        );
        startupMs.controllerManager = since(tCm);
      });
    }

    if (nodeLock !== undefined && pki.kubeletCert !== undefined && pki.kubeletKey !== undefined) {
      const kubeletKubeconfig = join(dir, 'kubelet.kubeconfig');
      writeKubeconfig(
        kubeletKubeconfig,
        server,
        pki.ca,
        'system:node:localhost',
        pki.kubeletCert,
        pki.kubeletKey,
      );
      node = await startNodeOn(
        {
          server,
          caPath: pki.ca,
          adminKubeconfigPath: kubeconfigPath,
          kubeletKubeconfigPath: kubeletKubeconfig,
          kubeConfig,
          dir,
          remainingMs,
        },
        nodeLock,
        nodeOpts,
      );
    }

    startupMs.total = since(t0);
    const core = kubeConfig.makeApiClient(CoreV1Api);
    let nsCounter = 0;
    return {
      server,
      kubeconfigPath,
      kubeConfig,
      adminToken,
      caPath: pki.ca,
      etcdEndpoint: etcd.endpoint,
      version,
      dir,
      logPaths: {
        etcd: join(dir, 'etcd.log'),
        apiserver: join(dir, 'kube-apiserver.log'),
        ...(cmLog === undefined ? {} : { controllerManager: cmLog }),
      },
      startupMs,
      ...(node === undefined ? {} : { node }),
      kubectl(args, toolOpts = {}) {
        return runTool(testbedBinary('kubectl'), [`--kubeconfig=${kubeconfigPath}`, ...args], toolOpts);
      },
      helm(args, toolOpts = {}) {
        const home = join(dir, 'helm');
        return runTool(testbedBinary('helm'), [`--kubeconfig=${kubeconfigPath}`, ...args], {
          ...toolOpts,
          env: {
            HELM_CONFIG_HOME: join(home, 'config'),
            HELM_CACHE_HOME: join(home, 'cache'),
            HELM_DATA_HOME: join(home, 'data'),
            ...toolOpts.env,
          },
        });
      },
      async newNamespace(prefix = 'test', timeoutMs = 20_000) {
        nsCounter += 1;
        const name = `${prefix}-${nsCounter}-${randomBytes(3).toString('hex')}`;
        await core.createNamespace({ body: { metadata: { name } } });
        if (withCm) {
          await waitFor(
            async () =>
              (await core.readNamespacedServiceAccount({ name: 'default', namespace: name })) !== undefined,
            { what: `ServiceAccount ${name}/default (created by kube-controller-manager)`, timeoutMs },
          );
        }
        return name;
      },
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
