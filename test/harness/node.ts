// A real Kubernetes node on this machine: kube-scheduler, containerd and a
// kubelet named `localhost`, pods on a CNI bridge of their own, local PVs.
// Started by `startKubernetes({ node: true })` after the control plane.
//
// The node writes outside its own folders (cgroups, the bridge, shim sockets,
// /var/log/containers), so it is machine-wide state: node-reap.sh holds a
// lock for one node per machine and cleans all of that when the test process
// ends, however it ends (it waits for EOF on a pipe from this process, like
// the supervisor in proc.ts). A missing prerequisite throws; nothing skips.
// It never touches another kubelet's state: pods go under the cgroup root
// /landfall-node-pods (not the default /kubepods), the reaper removes host-wide
// things (iptables chains, the device-plugin socket) only if this node created
// them, and start-up refuses to run beside another kubelet.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { CoreV1Api } from '@kubernetes/client-node';
import type { KubeConfig } from '@kubernetes/client-node';
import {
  freePort,
  repoRoot,
  runDir,
  runTool,
  startProcess,
  testbedCacheDir,
  testbedVersions,
  waitFor,
  TestbedMissingError,
} from './proc.ts';
import type { RunToolOptions, ServerProcess, ToolResult } from './proc.ts';

/** The node's name, as kind and a single-node kubeadm cluster would not call it but our kubelet does (`--hostname-override`). */
export const NODE_NAME = 'localhost';
/** Pod addresses: only on this machine's own bridge, no route or masquerade out. */
export const POD_CIDR = '10.251.0.0/24';
export const POD_GATEWAY = '10.251.0.1';
export const NODE_BRIDGE = 'lfnode0';
/** The API server's `kubernetes` Service (first address of `--service-cluster-ip-range`). */
export const KUBERNETES_SERVICE_IP = '10.0.0.1';
/** The kubelet's `clusterDomain`, served by CoreDNS on {@link POD_GATEWAY}:53. */
export const CLUSTER_DOMAIN = 'cluster.local';
const SERVICE_CIDR = '10.0.0.0/24';
/** The StorageClass of deploy/kind/storageclass.yaml, and of this node's local PVs. */
export const LOCAL_STORAGE_CLASS = 'local-nvme';
const CNI_NETWORK = 'landfall-node';
const RUN_DIR = '/run/landfall-node';
const CGROUP = 'landfall-node';
/** The kubelet's `cgroupRoot`: it makes `/landfall-node-pods/kubepods/…`, a sibling of CGROUP, never the host's `/kubepods`. */
const POD_CGROUP_ROOT = 'landfall-node-pods';
/** The kubelet's device-plugin socket: a fixed path whatever `--root-dir` says, shared with any other kubelet. */
const DEVICE_PLUGIN_SOCKET = '/var/lib/kubelet/device-plugins/kubelet.sock';
/** The kubelet's iptables chains (any kubelet's: same names). */
const KUBELET_CHAINS = ['KUBE-FIREWALL', 'KUBE-KUBELET-CANARY', 'KUBE-IPTABLES-HINT'];
/** Under the state dir: the host-wide things this node created, one a line; node-reap.sh removes only these. */
const HOST_OWNED_FILE = 'host-owned';

export interface StartNodeOptions {
  /** Local PVs to create (folders under the node's state dir), 10 Gi each on paper. Default 4. */
  localVolumes?: number;
  /** How long to wait for another test file's node to finish (the lock). Default 30 min. */
  lockTimeoutMs?: number;
}

export interface KubeNode {
  readonly name: string;
  readonly podCidr: string;
  /** The bridge's own address: how pods reach this machine. */
  readonly gateway: string;
  readonly storageClass: string;
  /** Names of the local PVs created (all Available at start). */
  readonly localVolumes: readonly string[];
  /** `unix://…` CRI endpoint of the node's containerd. */
  readonly runtimeEndpoint: string;
  /** kubelet root, containerd root, pod logs and PV folders (removed when the node stops). */
  readonly stateDir: string;
  /** The cluster DNS server pods use (`clusterDNS`): CoreDNS on the bridge address. */
  readonly dnsServer: string;
  readonly clusterDomain: string;
  readonly logPaths: {
    scheduler: string;
    containerd: string;
    kubelet: string;
    coredns: string;
    reaper: string;
  };
  /** ms from the call: lock taken, scheduler healthy, containerd serving CRI, CoreDNS ready, node Ready. */
  readonly startupMs: {
    lock: number;
    scheduler: number;
    containerd: number;
    dns: number;
    nodeReady: number;
  };
  crictl(args: readonly string[], opts?: RunToolOptions): Promise<ToolResult>;
  /** `ctr -n k8s.io …` against the node's containerd (the kubelet's namespace). */
  ctr(args: readonly string[], opts?: RunToolOptions): Promise<ToolResult>;
  /** Import a `docker save` / OCI archive into the kubelet's image store (pods then use `imagePullPolicy: Never`). */
  importImages(archivePath: string): Promise<void>;
  /** Names of the images the kubelet can run. */
  images(): Promise<string[]>;
  /**
   * Make a server of this machine listening on 127.0.0.1:`port` reachable from
   * pods as `10.251.0.1:port` (a DNAT on the bridge only; nothing else sees it).
   * Returns that `host:port`.
   */
  exposeHostPort(port: number): Promise<string>;
  /**
   * SIGKILL the kubelet alone, as a crashed or hung kubelet: containerd and
   * the pods' containers keep running (their shims are not the kubelet's
   * children), the node stops reporting and goes NotReady after the node
   * lifecycle controller's grace period.
   */
  stopKubelet(): Promise<void>;
  /** Start the kubelet again with the same flags and config; resolves when the node is Ready. */
  startKubelet(): Promise<void>;
  stop(): Promise<void>;
}

/** What the control plane hands the node (kubernetes.ts). */
export interface NodeClusterContext {
  server: string;
  caPath: string;
  /** Admin kubeconfig: the scheduler runs with it. */
  adminKubeconfigPath: string;
  /** The kubelet's own kubeconfig (client cert CN=system:node:localhost). */
  kubeletKubeconfigPath: string;
  kubeConfig: KubeConfig;
  /** The control plane's scratch folder (configs and logs go there). */
  dir: string;
  remainingMs: () => number;
}

interface NodeBinaries {
  kubelet: string;
  scheduler: string;
  containerdDir: string;
  cniDir: string;
  crictl: string;
  pause: string;
  runc: string;
  coredns: string;
}

function cached(name: string, versionKey: string): string {
  const version = testbedVersions()[versionKey];
  if (version === undefined)
    throw new TestbedMissingError(`${versionKey} is not set in test/infra/versions.env`);
  const path = join(testbedCacheDir(), 'bin', `${name}-${version}`);
  if (!existsSync(path)) {
    throw new TestbedMissingError(
      `test-bed node part ${name} ${version} not found at ${path}: run \`bash test/infra/setup.sh node\``,
    );
  }
  return path;
}

function onPath(
  cmd: string,
  dirs = ['/usr/sbin', '/usr/bin', '/sbin', '/bin', '/usr/local/sbin', '/usr/local/bin'],
): string {
  for (const d of dirs) {
    const p = join(d, cmd);
    if (existsSync(p)) return p;
  }
  throw new TestbedMissingError(
    `${cmd} is not installed (looked in ${dirs.join(', ')}): run \`bash test/infra/setup.sh node\``,
  );
}

/** The node's build products and Debian tools; throws {@link TestbedMissingError} naming the first one missing. */
export function nodeBinaries(): NodeBinaries {
  const b: NodeBinaries = {
    kubelet: cached('kubelet', 'KUBE_VERSION'),
    scheduler: cached('kube-scheduler', 'KUBE_VERSION'),
    containerdDir: cached('containerd', 'CONTAINERD_VERSION'),
    cniDir: cached('cni-plugins', 'CNI_PLUGINS_VERSION'),
    crictl: cached('crictl', 'CRICTL_VERSION'),
    pause: cached('pause', 'KUBE_VERSION'),
    coredns: cached('coredns', 'COREDNS_VERSION'),
    runc: onPath('runc'),
  };
  onPath('iptables');
  onPath('ip');
  onPath('sysctl');
  onPath('flock', ['/usr/bin', '/bin']);
  if (process.getuid?.() !== 0)
    throw new TestbedMissingError('the real node needs root (cgroups, mounts, the bridge)');
  return b;
}

/** The machine-wide state folder of the node (fixed, so a later run can clean up after a killed one). */
export function nodeStateDir(): string {
  return process.env['TESTBED_NODE_DIR'] ?? join(testbedCacheDir(), 'node');
}

// ---------------------------------------------------------------------------
// The lock and the reaper.

export interface NodeLock {
  readonly logPath: string;
  readonly waitedMs: number;
  /** Clean everything up and release the lock. */
  release(): Promise<void>;
}

const reapScript = join(repoRoot, 'test', 'harness', 'node-reap.sh');

function reaperEnv(): Record<string, string> {
  return {
    NODE_STATE_DIR: nodeStateDir(),
    NODE_RUN_DIR: RUN_DIR,
    NODE_BRIDGE,
    NODE_CNI_NETWORK: CNI_NETWORK,
    // images.ts's dockerd: its overlay mounts, if it was killed mid-build.
    NODE_DOCKER_DIR: join(testbedCacheDir(), 'docker'),
  };
}

/** Take the one-node-per-machine lock (waiting for another test file's node) and clean what a killed run left. */
export async function acquireNodeLock(timeoutMs = 30 * 60_000): Promise<NodeLock> {
  const t0 = performance.now();
  const logPath = join(runDir(), 'node-reap.log');
  const logFd = openSync(logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn('bash', [reapScript, 'hold'], {
      // Its own process group: a runner that kills ours must not kill the clean-up.
      detached: true,
      env: { ...process.env, ...reaperEnv(), NODE_LOCK_WAIT_S: String(Math.ceil(timeoutMs / 1000)) },
      stdio: ['pipe', 'pipe', logFd],
    });
  } finally {
    closeSync(logFd);
  }
  child.unref();
  const stdin = child.stdin as (NodeJS.WritableStream & { unref?: () => void }) | null;
  stdin?.unref?.();
  stdin?.on('error', () => {});
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const locked = await new Promise<boolean>((resolveLocked) => {
    let out = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => {
      out += d;
      if (out.includes('locked\n')) resolveLocked(true);
    });
    void exited.then(() => resolveLocked(false));
  });
  child.stdout?.destroy();
  if (!locked) {
    const tail = safeRead(logPath).split('\n').slice(-20).join('\n');
    throw new Error(
      `could not take the test-bed node lock (node-reap.sh exit ${String(await exited)}):\n${tail}`,
    );
  }
  let released: Promise<void> | undefined;
  return {
    logPath,
    waitedMs: Math.round(performance.now() - t0),
    release() {
      released ??= (async () => {
        child.stdin?.end();
        // A referenced timer: the unref'd reaper alone would let the process exit mid clean-up.
        let timer: NodeJS.Timeout | undefined;
        const done = await Promise.race([
          exited.then(() => true),
          new Promise<false>((r) => (timer = setTimeout(() => r(false), 120_000))),
        ]);
        clearTimeout(timer);
        if (!done) throw new Error(`node-reap.sh did not finish cleaning in 120 s; see ${logPath}`);
      })();
      return released;
    },
  };
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** The cgroup.procs files the node's processes join, so node-reap.sh finds their descendants (shims). */
function cgroupProcsFiles(): string[] {
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    mkdirSync(join('/sys/fs/cgroup', CGROUP), { recursive: true });
    return [join('/sys/fs/cgroup', CGROUP, 'cgroup.procs')];
  }
  // cgroup v1: the pids hierarchy tracks every descendant and, unlike cpuset, needs no set-up.
  for (const h of ['pids', 'systemd']) {
    if (existsSync(join('/sys/fs/cgroup', h, 'cgroup.procs'))) {
      mkdirSync(join('/sys/fs/cgroup', h, CGROUP), { recursive: true });
      return [join('/sys/fs/cgroup', h, CGROUP, 'cgroup.procs')];
    }
  }
  throw new TestbedMissingError('no pids (v1) or unified (v2) cgroup hierarchy under /sys/fs/cgroup');
}

/** Start `command` under the supervisor inside the node's cgroup. */
export function startInNodeCgroup(opts: {
  name: string;
  command: string;
  args: readonly string[];
  env?: Record<string, string>;
  logPath: string;
}): ServerProcess {
  const files = cgroupProcsFiles();
  return startProcess({
    name: opts.name,
    command: 'bash',
    args: [
      '-c',
      'for f in $NODE_CGROUP_PROCS; do echo $$ > "$f"; done; exec "$@"',
      'cgexec',
      opts.command,
      ...opts.args,
    ],
    env: { ...opts.env, NODE_CGROUP_PROCS: files.join(' ') },
    logPath: opts.logPath,
  });
}

/** Every cgroup hierarchy's root (v2: the one; v1: one per mounted controller set, and the hybrid `unified`). */
function cgroupHierarchies(): string[] {
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) return ['/sys/fs/cgroup'];
  let names: string[];
  try {
    names = readdirSync('/sys/fs/cgroup');
  } catch {
    return [];
  }
  return names.map((n) => join('/sys/fs/cgroup', n)).filter((d) => existsSync(join(d, 'cgroup.procs')));
}

/** Whether the cgroup `dir` or any cgroup below it holds a process. */
function cgroupTreeHasProcs(dir: string): boolean {
  let text: string;
  try {
    text = readFileSync(join(dir, 'cgroup.procs'), 'utf8');
  } catch {
    return false;
  }
  if (text.trim() !== '') return true;
  let entries: string[];
  try {
    entries = readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
  } catch {
    return false;
  }
  return entries.some((e) => cgroupTreeHasProcs(join(dir, e)));
}

/**
 * Why another kubelet (k3s, kubeadm, …) seems to run on this machine, or
 * undefined. Its device-plugin socket is at the same fixed path as ours, and
 * its pods sit in the root cgroup `kubepods` (cgroupfs) or `kubepods.slice`
 * (systemd). Called after node-reap.sh cleaned, so nothing found is ours.
 */
export function otherKubelet(): string | undefined {
  if (existsSync(DEVICE_PLUGIN_SOCKET)) {
    return `${DEVICE_PLUGIN_SOCKET} exists and is not the test bed's (if no other kubelet runs here, remove it)`;
  }
  for (const h of cgroupHierarchies()) {
    for (const name of ['kubepods', 'kubepods.slice']) {
      const dir = join(h, name);
      if (existsSync(dir) && cgroupTreeHasProcs(dir))
        return `cgroup ${dir} holds processes (another kubelet's pods)`;
    }
  }
  return undefined;
}

/**
 * Create the kubelet's cgroupRoot in every hierarchy: with cgroupfs the
 * kubelet refuses to start unless it exists in each v1 controller it uses
 * (cpu, cpuacct, cpuset, memory, pids, systemd, hugetlb), and on v2 unless
 * those controllers are available in it.
 */
function createPodCgroupRoot(): void {
  const hierarchies = cgroupHierarchies();
  if (hierarchies.length === 0) {
    throw new TestbedMissingError('no cgroup hierarchy mounted under /sys/fs/cgroup');
  }
  for (const h of hierarchies) {
    const dir = join(h, POD_CGROUP_ROOT);
    mkdirSync(dir, { recursive: true });
    // v1 cpuset: a new cgroup starts with no CPUs or memory nodes unless copied from its parent.
    for (const f of ['cpuset.cpus', 'cpuset.mems']) {
      if (!existsSync(join(dir, f))) continue;
      try {
        if (readFileSync(join(dir, f), 'utf8').trim() === '') {
          writeFileSync(join(dir, f), readFileSync(join(h, f), 'utf8').trim());
        }
      } catch {
        // The kubelet's own cgroup code copies it too; it says so if it cannot.
      }
    }
  }
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    const available = readFileSync('/sys/fs/cgroup/cgroup.controllers', 'utf8').split(/\s+/);
    for (const c of ['cpu', 'cpuset', 'memory', 'hugetlb', 'pids']) {
      if (!available.includes(c)) continue;
      try {
        writeFileSync('/sys/fs/cgroup/cgroup.subtree_control', `+${c}`);
      } catch {
        // Already enabled or not enableable: the kubelet names what is missing.
      }
    }
  }
}

/** The kubelet chains that exist now, as `<iptables|ip6tables> <table> <chain>` lines. */
async function existingKubeletChains(): Promise<Set<string>> {
  const found = new Set<string>();
  for (const ipt of ['iptables', 'ip6tables']) {
    for (const table of ['filter', 'nat', 'mangle']) {
      const out = await runTool(ipt, ['-t', table, '-S'], { timeoutMs: 20_000 }).then(
        (r) => r.stdout,
        () => '',
      );
      for (const line of out.split('\n')) {
        const chain = /^-N (\S+)$/.exec(line)?.[1];
        if (chain !== undefined && KUBELET_CHAINS.includes(chain)) found.add(`${ipt} ${table} ${chain}`);
      }
    }
  }
  return found;
}

/**
 * Record, before the kubelet starts, which host-wide things it will create:
 * the kubelet chains that do not exist yet and the device-plugin socket
 * (otherKubelet() made sure it is absent). node-reap.sh deletes only those.
 */
async function recordHostOwned(state: string): Promise<void> {
  const existing = await existingKubeletChains();
  const owned = ['device-plugin-socket'];
  for (const ipt of ['iptables', 'ip6tables']) {
    for (const table of ['filter', 'nat', 'mangle']) {
      for (const chain of KUBELET_CHAINS) {
        const line = `${ipt} ${table} ${chain}`;
        if (!existing.has(line)) owned.push(line);
      }
    }
  }
  writeFileSync(join(state, HOST_OWNED_FILE), owned.join('\n') + '\n');
}

// ---------------------------------------------------------------------------
// The pause image, built without any registry or dockerd: an OCI archive of one
// layer holding the static pause binary (setup.sh builds it from the release's
// pause.c).

function tarFile(name: string, data: Buffer, mode = 0o755): Buffer {
  const header = Buffer.alloc(512, 0);
  const put = (s: string, off: number, len: number): void => {
    header.write(s.slice(0, len), off, 'utf8');
  };
  const oct = (n: number, len: number): string => n.toString(8).padStart(len - 1, '0') + '\0';
  put(name, 0, 100);
  put(oct(mode, 8), 100, 8);
  put(oct(0, 8), 108, 8);
  put(oct(0, 8), 116, 8);
  put(oct(data.length, 12), 124, 12);
  put(oct(0, 12), 136, 12);
  header.fill(' ', 148, 156);
  put('0', 156, 1);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  let sum = 0;
  for (const b of header) sum += b;
  put(oct(sum, 7) + ' ', 148, 8);
  const pad = Buffer.alloc((512 - (data.length % 512)) % 512, 0);
  return Buffer.concat([header, data, pad]);
}

function tarArchive(files: ReadonlyArray<[string, Buffer]>): Buffer {
  return Buffer.concat([...files.map(([n, d]) => tarFile(n, d, 0o644)), Buffer.alloc(1024, 0)]);
}

export function pauseImageName(): string {
  return `landfall.local/pause:${testbedVersions()['KUBE_VERSION'] ?? 'dev'}`;
}

/** An OCI image archive (`ctr images import` reads it) with the pause binary as its entrypoint. */
export function writePauseArchive(pauseBin: string, path: string): void {
  const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
  const layer = Buffer.concat([tarFile('pause', readFileSync(pauseBin), 0o755), Buffer.alloc(1024, 0)]);
  const layerGz = gzipSync(layer);
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Entrypoint: ['/pause'], User: '65535:65535' },
      rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layer)}`] },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: `sha256:${sha(config)}`,
        size: config.length,
      },
      layers: [
        {
          mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
          digest: `sha256:${sha(layerGz)}`,
          size: layerGz.length,
        },
      ],
    }),
  );
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${sha(manifest)}`,
          size: manifest.length,
          platform: { architecture: 'amd64', os: 'linux' },
          annotations: { 'io.containerd.image.name': pauseImageName() },
        },
      ],
    }),
  );
  writeFileSync(
    path,
    tarArchive([
      ['oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}')],
      ['index.json', index],
      [`blobs/sha256/${sha(config)}`, config],
      [`blobs/sha256/${sha(manifest)}`, manifest],
      [`blobs/sha256/${sha(layerGz)}`, layerGz],
    ]),
  );
}

// ---------------------------------------------------------------------------
// Start.

function containerdConfig(state: string, bins: NodeBinaries): string {
  // containerd 2.x config (version 4). restrict_oom_score_adj: root here lacks
  // CAP_SYS_RESOURCE, and without it every sandbox fails with "can't get final
  // child's PID from pipe: EOF". NRI and /opt are off: they write outside our folders.
  return `version = 4
root = "${state}/containerd"
state = "${RUN_DIR}/containerd"
imports = []
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs", "io.containerd.differ.v1.erofs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[plugins.'io.containerd.server.v1.grpc']
  address = "${RUN_DIR}/containerd.sock"

[plugins.'io.containerd.server.v1.ttrpc']
  address = "${RUN_DIR}/containerd.sock.ttrpc"

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  cdi_spec_dirs = []
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "${bins.runc}"
        Root = "${RUN_DIR}/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["${bins.cniDir}"]
    conf_dir = "${state}/cni/net.d"
    max_conf_num = 1

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "${pauseImageName()}"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`;
}

/**
 * Cluster DNS for the node's pods: the cluster domain and reverse zones from
 * the API server (headless Services get per-pod names), nothing forwarded:
 * other names are refused, since nothing may leave the machine.
 */
function corednsConfig(kubeconfigPath: string, readyPort: number): string {
  return `${CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {
  bind ${POD_GATEWAY}
  errors
  ready 127.0.0.1:${readyPort}
  kubernetes ${CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {
    kubeconfig ${kubeconfigPath}
    pods insecure
    ttl 5
  }
}
`;
}

function cniConfig(state: string): string {
  // isGateway gives the bridge POD_GATEWAY (this machine, as pods see it) but,
  // without isDefaultGateway or ipMasq, pods get no route out of the subnet.
  return JSON.stringify(
    {
      cniVersion: '1.0.0',
      name: CNI_NETWORK,
      plugins: [
        {
          type: 'bridge',
          bridge: NODE_BRIDGE,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            dataDir: join(state, 'cni', 'ipam'),
            ranges: [[{ subnet: POD_CIDR, gateway: POD_GATEWAY }]],
            // The service range only (no default route): see the DNAT rule in startNodeOn.
            routes: [{ dst: SERVICE_CIDR }],
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    },
    null,
    2,
  );
}

function kubeletConfig(state: string, caPath: string, port: number, healthzPort: number): string {
  return JSON.stringify(
    {
      apiVersion: 'kubelet.config.k8s.io/v1beta1',
      kind: 'KubeletConfiguration',
      address: POD_GATEWAY,
      port,
      readOnlyPort: 0,
      healthzBindAddress: '127.0.0.1',
      healthzPort,
      authentication: {
        anonymous: { enabled: false },
        webhook: { enabled: true },
        x509: { clientCAFile: caPath },
      },
      authorization: { mode: 'Webhook' },
      cgroupDriver: 'cgroupfs',
      // Pods under /landfall-node-pods/kubepods, not the host's /kubepods (another kubelet's).
      cgroupRoot: `/${POD_CGROUP_ROOT}`,
      // This kind of machine runs cgroup v1, which kubelet 1.35+ refuses by default.
      failCgroupV1: false,
      failSwapOn: false,
      containerRuntimeEndpoint: `unix://${RUN_DIR}/containerd.sock`,
      podLogsDir: join(state, 'pod-logs'),
      // Images are imported, never pulled: GC would delete them under disk pressure elsewhere on the machine.
      imageGCHighThresholdPercent: 100,
      imageGCLowThresholdPercent: 99,
      // A shared build machine's disk is often >90 % full; don't evict test pods for it.
      evictionHard: {
        'memory.available': '1Mi',
        'nodefs.available': '1%',
        'imagefs.available': '1%',
        'nodefs.inodesFree': '1%',
      },
      // Pods with dnsPolicy ClusterFirst (the default) get CoreDNS and the
      // usual search list; resolvConf '' leaves them no upstream beyond it.
      clusterDNS: [POD_GATEWAY],
      clusterDomain: CLUSTER_DOMAIN,
      resolvConf: '',
      serializeImagePulls: false,
      syncFrequency: '10s',
      fileCheckFrequency: '10s',
      nodeStatusUpdateFrequency: '5s',
      maxPods: 110,
    },
    null,
    2,
  );
}

function localPvManifest(names: readonly string[], paths: readonly string[]): string {
  return names
    .map((name, i) =>
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'PersistentVolume',
        metadata: { name, labels: { 'app.kubernetes.io/part-of': 'landfall' } },
        spec: {
          capacity: { storage: '10Gi' },
          accessModes: ['ReadWriteOnce'],
          volumeMode: 'Filesystem',
          persistentVolumeReclaimPolicy: 'Retain',
          storageClassName: LOCAL_STORAGE_CLASS,
          local: { path: paths[i] },
          nodeAffinity: {
            required: {
              nodeSelectorTerms: [
                {
                  matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: [NODE_NAME] }],
                },
              ],
            },
          },
        },
      }),
    )
    .join('\n---\n');
}

async function forwardPolicyDrops(): Promise<boolean> {
  const { stdout } = await runTool('iptables', ['-S', 'FORWARD'], { timeoutMs: 20_000 });
  return /^-P FORWARD DROP/m.test(stdout);
}

/** Start scheduler, containerd and kubelet against a running control plane; the lock must be held. */
export async function startNodeOn(
  cluster: NodeClusterContext,
  lock: NodeLock,
  opts: StartNodeOptions = {},
): Promise<KubeNode> {
  const t0 = performance.now();
  const since = (): number => Math.round(performance.now() - t0);
  const bins = nodeBinaries();
  // Before anything host-wide: beside another kubelet, ours would clobber its device-plugin socket.
  const other = otherKubelet();
  if (other !== undefined) {
    throw new TestbedMissingError(
      `the test bed's node does not run beside another kubelet: ${other}. Run the node tests on a machine without a Kubernetes node (k3s, kubeadm).`,
    );
  }
  const state = nodeStateDir();
  for (const d of ['kubelet', 'containerd', 'pod-logs', 'pvs', 'cni/net.d', 'cni/ipam']) {
    mkdirSync(join(state, d), { recursive: true });
  }
  mkdirSync(RUN_DIR, { recursive: true });
  const procs: ServerProcess[] = [];
  const startupMs = { lock: lock.waitedMs, scheduler: 0, containerd: 0, dns: 0, nodeReady: 0 };
  const logPaths = {
    scheduler: join(cluster.dir, 'kube-scheduler.log'),
    containerd: join(cluster.dir, 'containerd.log'),
    kubelet: join(cluster.dir, 'kubelet.log'),
    coredns: join(cluster.dir, 'coredns.log'),
    reaper: lock.logPath,
  };
  const runtimeEndpoint = `unix://${RUN_DIR}/containerd.sock`;
  const crictl = (args: readonly string[], o: RunToolOptions = {}): Promise<ToolResult> =>
    runTool(
      bins.crictl,
      [`--runtime-endpoint=${runtimeEndpoint}`, `--image-endpoint=${runtimeEndpoint}`, ...args],
      o,
    );
  const ctr = (args: readonly string[], o: RunToolOptions = {}): Promise<ToolResult> =>
    runTool(
      join(bins.containerdDir, 'ctr'),
      [`--address=${RUN_DIR}/containerd.sock`, '-n', 'k8s.io', ...args],
      {
        timeoutMs: 600_000,
        ...o,
      },
    );
  const stopAll = async (): Promise<void> => {
    // The kubelet first, so it does not restart what containerd is asked to drop.
    for (const p of [...procs].reverse()) await p.stop({ graceMs: 1000 });
  };

  try {
    if (await forwardPolicyDrops()) {
      // Docker's daemon sets FORWARD's policy to DROP; pod-to-pod traffic on the bridge crosses FORWARD.
      await runTool('iptables', ['-I', 'FORWARD', '-i', NODE_BRIDGE, '-o', NODE_BRIDGE, '-m', 'comment', '--comment', 'landfall-node', '-j', 'ACCEPT']); // prettier-ignore
    }

    // The bridge exists before any pod (the CNI plugin adopts it): its address
    // is the node's InternalIP and the kubelet's, because the kubelet refuses a
    // loopback node IP and the API server then has no address to reach it by
    // for logs, exec and port-forward.
    await runTool('ip', ['link', 'add', NODE_BRIDGE, 'type', 'bridge']).catch((err: unknown) => {
      if (!/File exists/.test(String(err))) throw err;
    });
    await runTool('ip', [
      'addr',
      'replace',
      `${POD_GATEWAY}/${POD_CIDR.split('/')[1] ?? '24'}`,
      'dev',
      NODE_BRIDGE,
    ]);
    await runTool('ip', ['link', 'set', NODE_BRIDGE, 'up']);

    // The one Service pods can use without kube-proxy: `kubernetes`
    // (10.0.0.1:443, what in-cluster clients dial) DNAT'ed to the API server on
    // 127.0.0.1, which route_localnet allows for this bridge only. The API
    // server stays bound to loopback, unreachable from outside the machine.
    const apiPort = new URL(cluster.server).port;
    await runTool('sysctl', ['-w', `net.ipv4.conf.${NODE_BRIDGE}.route_localnet=1`]);
    await runTool('iptables', ['-t', 'nat', '-A', 'PREROUTING', '-i', NODE_BRIDGE, '-d', KUBERNETES_SERVICE_IP, '-p', 'tcp', '--dport', '443', '-m', 'comment', '--comment', 'landfall-node', '-j', 'DNAT', '--to-destination', `127.0.0.1:${apiPort}`]); // prettier-ignore

    // Scheduler (needs only the API server), in parallel with containerd.
    const schedulerReady = (async () => {
      const port = await freePort();
      const p = startProcess({
        name: 'kube-scheduler',
        command: bins.scheduler,
        args: [
          `--kubeconfig=${cluster.adminKubeconfigPath}`,
          `--authentication-kubeconfig=${cluster.adminKubeconfigPath}`,
          `--authorization-kubeconfig=${cluster.adminKubeconfigPath}`,
          '--bind-address=127.0.0.1',
          `--secure-port=${port}`,
          '--leader-elect=false',
        ],
        logPath: logPaths.scheduler,
      });
      procs.push(p);
      await waitFor(async () => (await fetchInsecureStatus(`https://127.0.0.1:${port}/healthz`)) === 200, {
        what: 'kube-scheduler /healthz',
        timeoutMs: cluster.remainingMs(),
        process: p,
      });
      startupMs.scheduler = since();
    })();

    // CoreDNS as a host process in the node's cgroup (reaped with it): it
    // reaches the API server on loopback with the admin kubeconfig, needs no
    // image, and listens only on the bridge address, which pods reach directly.
    const dnsReady = (async () => {
      const readyPort = await freePort();
      const corefile = join(cluster.dir, 'Corefile');
      writeFileSync(corefile, corednsConfig(cluster.adminKubeconfigPath, readyPort));
      const p = startInNodeCgroup({
        name: 'coredns',
        command: bins.coredns,
        args: ['-conf', corefile],
        logPath: logPaths.coredns,
      });
      procs.push(p);
      // /ready answers 200 once the kubernetes plugin has synced Services and EndpointSlices.
      await waitFor(
        async () =>
          (await fetch(`http://127.0.0.1:${readyPort}/ready`, { signal: AbortSignal.timeout(1000) }))
            .status === 200,
        { what: 'CoreDNS /ready', timeoutMs: cluster.remainingMs(), intervalMs: 200, process: p },
      );
      startupMs.dns = since();
    })();
    // Awaited after the kubelet; until then a failure must not be an unhandled rejection.
    void dnsReady.catch(() => undefined);

    const cdConfig = join(cluster.dir, 'containerd.toml');
    writeFileSync(cdConfig, containerdConfig(state, bins));
    writeFileSync(join(state, 'cni', 'net.d', `10-${CNI_NETWORK}.conflist`), cniConfig(state));
    const containerd = startInNodeCgroup({
      name: 'containerd',
      command: join(bins.containerdDir, 'containerd'),
      args: [`--config=${cdConfig}`],
      // The shim is found on PATH; runc is named by absolute path in the config.
      env: { PATH: `${bins.containerdDir}:/usr/sbin:/usr/bin:/sbin:/bin` },
      logPath: logPaths.containerd,
    });
    procs.push(containerd);
    await waitFor(
      async () => {
        const { stdout } = await crictl(['info'], { timeoutMs: 5000 });
        const info = JSON.parse(stdout) as {
          status?: { conditions?: Array<{ type: string; status: boolean }> };
        };
        const cond = info.status?.conditions ?? [];
        // Only these two: containerd 2 adds ContainerdHasNoDeprecationWarnings, which is not readiness.
        const ok = (type: string): boolean => cond.some((c) => c.type === type && c.status);
        return ok('RuntimeReady') && ok('NetworkReady');
      },
      {
        what: 'containerd CRI RuntimeReady and NetworkReady',
        timeoutMs: cluster.remainingMs(),
        intervalMs: 200,
        process: containerd,
      },
    );
    startupMs.containerd = since();
    const pauseArchive = join(cluster.dir, 'pause.oci.tar');
    writePauseArchive(bins.pause, pauseArchive);
    await ctr(['images', 'import', pauseArchive]);

    createPodCgroupRoot();
    await recordHostOwned(state);
    const kubeletPort = await freePort();
    const kubeletHealthz = await freePort();
    const kubeletConfigPath = join(cluster.dir, 'kubelet-config.json');
    writeFileSync(kubeletConfigPath, kubeletConfig(state, cluster.caPath, kubeletPort, kubeletHealthz));
    const startKubeletProcess = (): ServerProcess =>
      startInNodeCgroup({
        name: 'kubelet',
        command: bins.kubelet,
        args: [
          `--config=${kubeletConfigPath}`,
          `--kubeconfig=${cluster.kubeletKubeconfigPath}`,
          `--root-dir=${join(state, 'kubelet')}`,
          // Its default is /var/lib/kubelet/pki whatever --root-dir says.
          `--cert-dir=${join(state, 'kubelet', 'pki')}`,
          `--hostname-override=${NODE_NAME}`,
          `--node-ip=${POD_GATEWAY}`,
          '--v=1',
        ],
        env: { PATH: `${bins.containerdDir}:/usr/sbin:/usr/bin:/sbin:/bin` },
        logPath: logPaths.kubelet,
      });
    let kubelet = startKubeletProcess();
    procs.push(kubelet);
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    const nodeReady = (proc: ServerProcess, timeoutMs: number): Promise<unknown> =>
      waitFor(
        async () => {
          const node = await core.readNode({ name: NODE_NAME });
          return node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
        },
        { what: `node ${NODE_NAME} Ready`, timeoutMs, intervalMs: 200, process: proc },
      );
    await nodeReady(kubelet, cluster.remainingMs());
    startupMs.nodeReady = since();
    await schedulerReady;
    await dnsReady;

    // Local PVs and the StorageClass the chart's kind values use.
    const count = opts.localVolumes ?? 4;
    const names: string[] = [];
    const paths: string[] = [];
    for (let i = 0; i < count; i++) {
      const p = join(state, 'pvs', `pv${i}`);
      mkdirSync(p, { recursive: true, mode: 0o777 });
      names.push(`${NODE_NAME}-local-${i}`);
      paths.push(p);
    }
    const kubectl = (args: readonly string[], o: RunToolOptions = {}): Promise<ToolResult> =>
      runTool(
        join(testbedCacheDir(), 'bin', `kubectl-${testbedVersions()['KUBE_VERSION'] ?? ''}`),
        [`--kubeconfig=${cluster.adminKubeconfigPath}`, ...args],
        o,
      );
    await kubectl(['apply', '-f', join(repoRoot, 'deploy', 'kind', 'storageclass.yaml')]);
    if (count > 0) await kubectl(['apply', '-f', '-'], { input: localPvManifest(names, paths) });

    return {
      name: NODE_NAME,
      podCidr: POD_CIDR,
      gateway: POD_GATEWAY,
      storageClass: LOCAL_STORAGE_CLASS,
      localVolumes: names,
      runtimeEndpoint,
      dnsServer: POD_GATEWAY,
      clusterDomain: CLUSTER_DOMAIN,
      stateDir: state,
      logPaths,
      startupMs,
      crictl,
      ctr,
      async importImages(archivePath) {
        await ctr(['images', 'import', archivePath]);
      },
      async exposeHostPort(port) {
        await runTool('iptables', ['-t', 'nat', '-A', 'PREROUTING', '-i', NODE_BRIDGE, '-d', POD_GATEWAY, '-p', 'tcp', '--dport', String(port), '-m', 'comment', '--comment', 'landfall-node', '-j', 'DNAT', '--to-destination', `127.0.0.1:${port}`]); // prettier-ignore
        return `${POD_GATEWAY}:${port}`;
      },
      async images() {
        const { stdout } = await ctr(['images', 'list', '-q']);
        return stdout.split('\n').filter((l) => l !== '' && !l.startsWith('sha256:'));
      },
      async stopKubelet() {
        await kubelet.stop({ graceMs: 0 });
      },
      async startKubelet() {
        if (kubelet.running()) throw new Error('the kubelet is running: stopKubelet() first');
        const next = startKubeletProcess();
        // Same place in the stop order: before containerd.
        procs.splice(procs.indexOf(kubelet), 1, next);
        kubelet = next;
        await nodeReady(next, 120_000);
      },
      async stop() {
        try {
          await stopAll();
        } finally {
          await lock.release();
        }
      },
    };
  } catch (err) {
    await stopAll().catch(() => {});
    throw err;
  }
}

async function fetchInsecureStatus(url: string): Promise<number> {
  const { request } = await import('node:https');
  return new Promise((resolveStatus, reject) => {
    const req = request(url, { method: 'GET', timeout: 1000, rejectUnauthorized: false }, (res) => {
      res.resume();
      resolveStatus(res.statusCode ?? 0);
    });
    req.once('timeout', () => req.destroy(new Error(`GET ${url}: no answer in 1000 ms`)));
    req.once('error', reject);
    req.end();
  });
}
