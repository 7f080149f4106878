// The repository's images, built as a user builds them (`docker build -f
// images/<name>.Dockerfile .`) and imported into the real node's containerd.
//
// No container registry is reachable from the build machines, so the base
// images are local: a Debian root filesystem from debootstrap (setup.sh) with
// the Node 24 binary of the `node` npm package (the one running this test) and
// npm added, passed to the Dockerfiles' BUILD_IMAGE / RUNTIME_IMAGE arguments.
// dockerd is Debian's, started here on its own socket with no iptables or
// bridge of its own (builds use the host network), in the node's cgroup so
// node-reap.sh reaps it with the node.
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeNode } from './node.ts';
import { startInNodeCgroup } from './node.ts';
import {
  repoRoot,
  runTool,
  scratchDir,
  testbedCacheDir,
  testbedVersions,
  waitFor,
  TestbedMissingError,
} from './proc.ts';
import type { RunToolOptions, ServerProcess, ToolResult } from './proc.ts';

const DOCKER_RUN_DIR = '/run/landfall-node/docker';
const DOCKER_SOCKET = `unix://${DOCKER_RUN_DIR}/docker.sock`;

function dockerStorageDriver(): string {
  return process.env['TESTBED_DOCKER_STORAGE_DRIVER'] ?? 'overlay2';
}

/** dockerd's layer store, kept between runs (a second build reuses the npm ci layers). */
export function dockerDataRoot(): string {
  return join(testbedCacheDir(), 'docker');
}

export interface Dockerd {
  readonly logPath: string;
  docker(args: readonly string[], opts?: RunToolOptions): Promise<ToolResult>;
  /** `docker <args>` with stdout+stderr to `logPath` (a build's RUN output); throws with the log's tail. */
  dockerLogged(args: readonly string[], logPath: string, cwd?: string): Promise<void>;
  stop(): Promise<void>;
}

function dockerBinaries(): { dockerd: string; docker: string } {
  for (const [dockerd, docker] of [
    ['/usr/sbin/dockerd', '/usr/bin/docker'],
    ['/usr/bin/dockerd', '/usr/bin/docker'],
  ] as const) {
    if (existsSync(dockerd) && existsSync(docker)) return { dockerd, docker };
  }
  throw new TestbedMissingError(
    'dockerd is not installed (Debian package docker.io): run `bash test/infra/setup.sh node`',
  );
}

/**
 * Start dockerd for image builds. Its layer store lives in the test-bed cache
 * (`$TESTBED_CACHE/docker`) so a second run reuses the npm ci layers; the
 * node's lock must be held (its folders are machine-wide).
 */
export async function startDockerd(node: KubeNode, logDir: string): Promise<Dockerd> {
  void node; // proof that the lock is held
  const bins = dockerBinaries();
  mkdirSync(DOCKER_RUN_DIR, { recursive: true });
  const dataRoot = dockerDataRoot();
  mkdirSync(dataRoot, { recursive: true });
  const logPath = join(logDir, 'dockerd.log');
  const p: ServerProcess = startInNodeCgroup({
    name: 'dockerd',
    command: bins.dockerd,
    args: [
      `--host=${DOCKER_SOCKET}`,
      `--exec-root=${DOCKER_RUN_DIR}/exec`,
      `--pidfile=${DOCKER_RUN_DIR}/docker.pid`,
      `--data-root=${dataRoot}`,
      // overlay2 on the cache's ext4: vfs (a full copy per layer) took 846 s
      // instead of ~300 s for a cold build here. TESTBED_DOCKER_STORAGE_DRIVER=vfs
      // for file systems overlayfs cannot sit on.
      `--storage-driver=${dockerStorageDriver()}`,
      // No bridge, NAT or FORWARD policy changes: builds use --network=host.
      '--iptables=false',
      '--ip-forward=false',
      '--ip-masq=false',
      '--bridge=none',
    ],
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
    logPath,
  });
  // The classic builder: BuildKit would fetch its Dockerfile frontend from a registry.
  const dockerEnv = {
    DOCKER_HOST: DOCKER_SOCKET,
    DOCKER_BUILDKIT: '0',
    DOCKER_CONFIG: join(logDir, 'docker-config'),
  };
  const docker = (args: readonly string[], opts: RunToolOptions = {}): Promise<ToolResult> =>
    runTool(bins.docker, args, { timeoutMs: 900_000, ...opts, env: { ...dockerEnv, ...opts.env } });
  const dockerLogged = (args: readonly string[], log: string, cwd?: string): Promise<void> =>
    new Promise((resolveRun, reject) => {
      const fd = openSync(log, 'a');
      const child = spawn(bins.docker, args, {
        cwd: cwd ?? logDir,
        env: { ...process.env, ...dockerEnv },
        stdio: ['ignore', fd, fd],
      });
      closeSync(fd);
      // A bound: a wedged build must fail the test, not hang it.
      const timer = setTimeout(() => child.kill('SIGKILL'), 1_200_000);
      child.once('error', reject);
      child.once('close', (code) => {
        clearTimeout(timer);
        if (code === 0) return resolveRun();
        const tail = readFileSync(log, 'utf8').split('\n').slice(-40).join('\n');
        reject(new Error(`docker ${args.join(' ')}: exit ${String(code)}; log ${log}:\n${tail}`));
      });
    });
  await waitFor(
    async () =>
      (await docker(['version', '--format', '{{.Server.Version}}'], { timeoutMs: 5000 })).stdout.trim() !==
      '',
    {
      what: 'dockerd answering on its socket',
      timeoutMs: 60_000,
      intervalMs: 250,
      process: p,
    },
  );
  return {
    logPath,
    docker,
    dockerLogged,
    async stop() {
      await p.stop({ graceMs: 5000 });
    },
  };
}

export interface RepoImages {
  /** e.g. `landfall.local/ingest-node:testbed` */
  ingestNode: string;
  operator: string;
  /** The local bases the Dockerfiles got as BUILD_IMAGE and RUNTIME_IMAGE. */
  base: { build: string; runtime: string };
  /** ms: base image, each `docker build`, `docker save`, `ctr import`. */
  timingsMs: { base: number; ingestNode: number; operator: number; save: number; import: number };
  /** Paths of the `docker build` logs. */
  buildLogs: { ingestNode: string; operator: string };
}

const IMAGE_TAG = 'testbed';

/**
 * The local base images: RUNTIME_IMAGE is Debian minbase + this Node 24 at
 * /nodejs/bin/node + the nonroot user (65532), as distroless's; BUILD_IMAGE
 * adds npm and `node` on PATH, as node:24-bookworm-slim has.
 */
async function buildNodeBases(dockerd: Dockerd, dir: string): Promise<{ build: string; runtime: string }> {
  const docker = (args: readonly string[], opts?: RunToolOptions): Promise<ToolResult> =>
    dockerd.docker(args, opts);
  const versions = testbedVersions();
  const suite = versions['DEBIAN_SUITE'] ?? 'bookworm';
  const npmVersion = versions['NPM_VERSION'] ?? '';
  const rootfs = join(testbedCacheDir(), 'bin', `debian-rootfs-${suite}.tar`);
  const npmTgz = join(testbedCacheDir(), 'bin', `npm-${npmVersion}.tgz`);
  for (const f of [rootfs, npmTgz]) {
    if (!existsSync(f))
      throw new TestbedMissingError(`${f} not found: run \`bash test/infra/setup.sh node\``);
  }
  const debian = `landfall.local/debian:${suite}`;
  const have = async (ref: string): Promise<boolean> =>
    docker(['image', 'inspect', ref], { timeoutMs: 30_000 }).then(
      () => true,
      () => false,
    );
  if (!(await have(debian))) await docker(['import', rootfs, debian]);

  const nodeVersion = process.version;
  if (!nodeVersion.startsWith('v24.')) {
    throw new TestbedMissingError(
      `the images need Node 24, this test runs on ${nodeVersion}: run it with npx node`,
    );
  }
  const tag = `${nodeVersion.slice(1)}-${suite}`;
  const runtime = `landfall.local/node-runtime:${tag}`;
  const build = `landfall.local/node-build:${tag}`;
  const ctx = join(dir, 'node-base');
  rmSync(ctx, { recursive: true, force: true });
  mkdirSync(ctx, { recursive: true });
  execFileSync('cp', [process.execPath, join(ctx, 'node')]);
  writeFileSync(
    join(ctx, 'Dockerfile'),
    [
      // What distroless's nodejs24 nonroot image has that the Dockerfiles rely on.
      `FROM ${debian}`,
      'COPY node /nodejs/bin/node',
      'RUN echo "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" >> /etc/passwd \\',
      ' && echo "nonroot:x:65532:" >> /etc/group \\',
      ' && mkdir -p /home/nonroot && chown 65532:65532 /home/nonroot',
      '',
    ].join('\n'),
  );
  await dockerd.dockerLogged(['build', '-t', runtime, ctx], join(dir, 'build-node-runtime.log'));

  // The build stage also needs npm, `node` on PATH, and to trust this
  // machine's TLS (an intercepting proxy's CA, if any) to reach the npm registry.
  const bctx = join(dir, 'node-build');
  rmSync(bctx, { recursive: true, force: true });
  mkdirSync(bctx, { recursive: true });
  execFileSync('tar', ['-xzf', npmTgz, '-C', bctx]);
  const caFile = [process.env['NODE_EXTRA_CA_CERTS'], '/etc/ssl/certs/ca-certificates.crt'].find(
    (f): f is string => f !== undefined && f !== '' && existsSync(f),
  );
  writeFileSync(join(bctx, 'ca.crt'), caFile === undefined ? '' : readFileSync(caFile));
  writeFileSync(
    join(bctx, 'Dockerfile'),
    [
      `FROM ${runtime}`,
      'COPY package /usr/local/lib/node_modules/npm',
      'COPY ca.crt /etc/ssl/certs/testbed-ca.crt',
      'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/testbed-ca.crt',
      'RUN ln -s /nodejs/bin/node /usr/local/bin/node \\',
      ' && ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm',
      '',
    ].join('\n'),
  );
  await dockerd.dockerLogged(['build', '-t', build, bctx], join(dir, 'build-node-build.log'));
  return { build, runtime };
}

/**
 * Build both images from this checkout with dockerd and import them into the
 * node's containerd. Pods use them with `imagePullPolicy: Never`.
 */
export async function buildRepoImages(node: KubeNode): Promise<RepoImages> {
  const dir = scratchDir('images');
  const dockerd = await startDockerd(node, dir);
  try {
    const t = performance.now();
    const lap = (() => {
      let last = t;
      return (): number => {
        const now = performance.now();
        const ms = Math.round(now - last);
        last = now;
        return ms;
      };
    })();
    const base = await buildNodeBases(dockerd, dir);
    const timingsMs = { base: lap(), ingestNode: 0, operator: 0, save: 0, import: 0 };
    const build = async (name: string): Promise<{ ref: string; log: string }> => {
      const ref = `landfall.local/${name}:${IMAGE_TAG}`;
      const log = join(dir, `build-${name}.log`);
      await dockerd.dockerLogged(
        [
          'build',
          '--network=host',
          '-f',
          `images/${name}.Dockerfile`,
          '--build-arg',
          `BUILD_IMAGE=${base.build}`,
          '--build-arg',
          `RUNTIME_IMAGE=${base.runtime}`,
          '-t',
          ref,
          '.',
        ],
        log,
        repoRoot,
      );
      return { ref, log };
    };
    const ingest = await build('ingest-node');
    timingsMs.ingestNode = lap();
    const operator = await build('operator');
    timingsMs.operator = lap();
    // Layers a rebuild replaced: vfs keeps full copies, so drop them now.
    await dockerd.docker(['image', 'prune', '-f']);
    const archive = join(dir, 'images.tar');
    await dockerd.docker(['save', '-o', archive, ingest.ref, operator.ref]);
    timingsMs.save = lap();
    await node.importImages(archive);
    rmSync(archive, { force: true });
    timingsMs.import = lap();
    return {
      ingestNode: ingest.ref,
      operator: operator.ref,
      base,
      timingsMs,
      buildLogs: { ingestNode: ingest.log, operator: operator.log },
    };
  } finally {
    await dockerd.stop();
  }
}
