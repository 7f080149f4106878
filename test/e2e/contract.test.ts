// The operator ↔ node contract, end to end: what the operator writes is what
// the node reads. Against a real kube-apiserver (no kubelet) and a real MinIO
// and Mosquitto:
//
//   1. apply an Endpoint (static S3 keys from a Secret, API keys from a
//      Secret, an MQTT broker with a password Secret) and a View;
//   2. take the pod template of the StatefulSet the operator built and do
//      what a kubelet would: materialise its ConfigMap, Secret and projected
//      volumes at their mount paths (in the kubelet's `..data` symlink layout),
//      the WAL volume and the emptyDirs; resolve its env (secretKeyRef,
//      configMapKeyRef, the downward API, service links); run the image's
//      entrypoint (images/ingest-node.Dockerfile) with the container's args;
//   3. POST events with the API key, publish MQTT messages, and see commit
//      markers (and the View's Parquet) appear in MinIO; the operator's own
//      status key and drain probe read the node's /v1/status.
//
// Where a pod and a local process must differ, the test says so and does it
// in one place (`local`): mount paths live under a temp root (every absolute
// path in args, env and the config file is mapped there, and must lie inside
// a volume the pod mounts), the node listens on a free loopback port (no pod
// network namespace), and the image's /nodejs/bin/node and /app are this
// Node and this repository.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import yaml from 'js-yaml';
import mqtt from 'mqtt';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import type {
  V1ConfigMap,
  V1Container,
  V1EnvVar,
  V1PodSpec,
  V1Secret,
  V1Service,
  V1StatefulSet,
  V1Volume,
} from '@kubernetes/client-node';
import {
  freePort,
  repoRoot,
  scratchDir,
  startKubernetes,
  startMinio,
  startMosquitto,
  startProcess,
  waitFor,
} from '../harness/index.ts';
import type { KubernetesTestbed, MinioServer, MosquittoServer, ServerProcess } from '../harness/index.ts';
import { Operator } from '../../operator/src/operator.ts';
import { KubeClient, Resources } from '../../operator/src/runtime/kube.ts';
import type { KubeObject } from '../../operator/src/runtime/kube.ts';
import { jsonLogger } from '../../operator/src/runtime/log.ts';
import { OperatorMetrics } from '../../operator/src/runtime/metrics.ts';
import { CONFIG_HASH_ANNOTATION } from '../../operator/src/model/names.ts';
import { deriveStatusKey } from '../../operator/src/model/operator-key.ts';
import { drainBlocker, httpNodeStatusProbe } from '../../operator/src/adapters/node-status.ts';
import type { Endpoint } from '../../operator/src/api/endpoint.ts';

// Named `landfall` on purpose: its Services (`landfall-ingest…`) would give a
// pod with service links env like LANDFALL_INGEST_SERVICE_HOST, which the
// node's config loader refuses as an unknown LANDFALL_* key.
const ENDPOINT = 'landfall';
const API_KEY = 'lf_contract_0123456789abcdef';
const MQTT_USER = 'landfall';
const MQTT_PASSWORD = 'mqtt-contract-secret';

let kube: KubernetesTestbed;
let minio: MinioServer;
let broker: MosquittoServer;
let client: KubeClient;
let operator: Operator | undefined;
let node: ServerProcess | undefined;
let ns: string;
const log = jsonLogger(process.env.LANDFALL_OPERATOR_LOG === '1' ? 'debug' : 'error');
const t0 = performance.now();
const phase = (what: string): void =>
  console.log(`# ${what} at ${((performance.now() - t0) / 1000).toFixed(1)} s`);

before(async () => {
  // The broker authenticates the node's user against a password file.
  const mqttDir = scratchDir('contract-mosquitto');
  mkdirSync(mqttDir, { recursive: true });
  const passwd = join(mqttDir, 'passwd');
  execFileSync('mosquitto_passwd', ['-b', '-c', passwd, MQTT_USER, MQTT_PASSWORD]);
  chmodSync(passwd, 0o600);
  [kube, minio, broker] = await Promise.all([
    startKubernetes({ controllerManager: false }),
    startMinio(),
    startMosquitto({ extraConfig: [`password_file ${passwd}`, 'allow_anonymous false'] }),
  ]);
  phase('control plane, MinIO and Mosquitto up');
  client = new KubeClient(kube.kubeConfig);
  for (const file of ['endpoints.landfall.dev.yaml', 'views.landfall.dev.yaml']) {
    const crd = yaml.load(readFileSync(join(repoRoot, 'crds', file), 'utf8')) as KubeObject;
    await client.create(Resources.crd, crd);
  }
  await waitFor(
    async () => {
      for (const name of ['endpoints.landfall.dev', 'views.landfall.dev']) {
        const crd = await client.get<
          KubeObject & { status?: { conditions?: { type: string; status: string }[] } }
        >(Resources.crd, undefined, name);
        if (!crd?.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True'))
          return false;
      }
      return true;
    },
    { what: 'CRDs Established', timeoutMs: 20_000 },
  );
  ns = await kube.newNamespace('contract');
  operator = new Operator({
    kubeConfig: kube.kubeConfig,
    nodeImage: 'ghcr.io/landfall/ingest-node:contract',
    operatorKey: OPERATOR_MASTER_KEY,
    log,
    metrics: new OperatorMetrics(),
    resyncPeriodMs: 60_000,
    drainPollMs: 500,
    notReadyPollMs: 5_000,
  });
  await operator.start();
});

const OPERATOR_MASTER_KEY = Buffer.alloc(32, 0x5a);

after(async () => {
  await node?.stop({ graceMs: 10_000 });
  await operator?.stop();
  await Promise.all([kube?.stop(), minio?.stop(), broker?.stop()]);
});

// --- what the image runs -------------------------------------------------------

interface Image {
  entrypoint: string[];
  cmd: string[];
  env: Record<string, string>;
  workdir: string;
}

/** ENTRYPOINT, CMD, ENV and WORKDIR of the final stage of the node's Dockerfile. */
function imageOf(dockerfile: string): Image {
  const text = readFileSync(join(repoRoot, dockerfile), 'utf8').replace(/\\\n/g, ' ');
  const stages = text.split(/^FROM\s/m);
  const last = stages[stages.length - 1] ?? '';
  const image: Image = { entrypoint: [], cmd: [], env: {}, workdir: '/' };
  for (const line of last.split('\n')) {
    const m = /^(ENTRYPOINT|CMD|ENV|WORKDIR)\s+(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, op, rest = ''] = m;
    if (op === 'ENTRYPOINT') image.entrypoint = JSON.parse(rest) as string[];
    else if (op === 'CMD') image.cmd = JSON.parse(rest) as string[];
    else if (op === 'WORKDIR') image.workdir = rest;
    else
      for (const kv of rest.split(/\s+/))
        image.env[kv.slice(0, kv.indexOf('='))] = kv.slice(kv.indexOf('=') + 1);
  }
  assert.ok(image.entrypoint.length > 0, `${dockerfile} has an exec-form ENTRYPOINT`);
  return image;
}

// --- a kubelet, for one pod, on a local directory ---------------------------------

interface Local {
  root: string;
  /** A path inside the container → the same path under the temp root. Throws for a path outside every mount. */
  path(p: string): string;
  writable(p: string): boolean;
}

function localFs(root: string, container: V1Container): Local {
  const mounts = [...(container.volumeMounts ?? [])].sort((a, b) => b.mountPath.length - a.mountPath.length);
  const mountOf = (p: string) => mounts.find((m) => p === m.mountPath || p.startsWith(`${m.mountPath}/`));
  return {
    root,
    path(p) {
      assert.ok(
        mountOf(p),
        `${p} is not inside any volume the pod mounts (the root file system is read-only)`,
      );
      return join(root, p);
    },
    writable(p) {
      return mountOf(p)?.readOnly !== true;
    },
  };
}

/**
 * The kubelet's atomic writer: files in `..<ts>/`, `..data` → it, each
 * top-level entry → `..data/<entry>`. An update writes a new `..<ts>/` and
 * swaps `..data` with one rename, as the kubelet does on a ConfigMap change.
 */
let writes = 0;
function atomicWrite(dir: string, files: Map<string, { data: Buffer; mode: number }>): void {
  mkdirSync(dir, { recursive: true });
  const ts = `..${new Date().toISOString().replace(/[-:.]/g, '_')}.${++writes}`;
  for (const [rel, f] of files) {
    const file = join(dir, ts, rel);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, f.data);
    chmodSync(file, f.mode);
  }
  const old = existsSync(join(dir, '..data')) ? readlinkSync(join(dir, '..data')) : undefined;
  symlinkSync(ts, join(dir, '..data_tmp'));
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  const tops = new Set([...files.keys()].map((k) => k.split('/')[0] ?? k));
  for (const entry of readdirSync(dir))
    if (!entry.startsWith('..') && !tops.has(entry)) rmSync(join(dir, entry));
  for (const top of tops) if (!existsSync(join(dir, top))) symlinkSync(join('..data', top), join(dir, top));
  if (old !== undefined) rmSync(join(dir, old), { recursive: true });
}

const configMapData = (cm: V1ConfigMap): Map<string, Buffer> =>
  new Map([
    ...Object.entries(cm.data ?? {}).map(([k, v]) => [k, Buffer.from(v)] as const),
    ...Object.entries(cm.binaryData ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')] as const),
  ]);
const secretData = (s: V1Secret): Map<string, Buffer> =>
  new Map(Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')] as const));

/** Keys of a ConfigMap/Secret as files: all of them, or the listed items. */
function select(
  what: string,
  data: Map<string, Buffer> | undefined,
  items: { key: string; path: string; mode?: number }[] | undefined,
  optional: boolean | undefined,
  mode: number,
  into: Map<string, { data: Buffer; mode: number }>,
): void {
  if (data === undefined) {
    assert.ok(optional, `${what} does not exist and is not optional: the pod would not start`);
    return;
  }
  const all = [...data.keys()].map((key): { key: string; path: string; mode?: number } => ({
    key,
    path: key,
  }));
  for (const item of items ?? all) {
    const value = data.get(item.key);
    assert.ok(value !== undefined || optional, `${what} has no key ${item.key}: the pod would not start`);
    if (value !== undefined) into.set(item.path, { data: value, mode: item.mode ?? mode });
  }
}

async function materialiseVolume(
  local: Local,
  mountPath: string,
  volume: V1Volume,
  claims: string[],
): Promise<void> {
  const dir = local.path(mountPath);
  const getCm = (name: string) => client.get<V1ConfigMap & KubeObject>(Resources.configMap, ns, name);
  const getSecret = (name: string) => client.get<V1Secret & KubeObject>(Resources.secret, ns, name);
  const files = new Map<string, { data: Buffer; mode: number }>();
  if (volume.configMap) {
    const cm = await getCm(volume.configMap.name ?? '');
    select(
      `ConfigMap ${volume.configMap.name}`,
      cm && configMapData(cm),
      volume.configMap.items,
      volume.configMap.optional,
      volume.configMap.defaultMode ?? 0o644,
      files,
    );
  } else if (volume.secret) {
    const s = await getSecret(volume.secret.secretName ?? '');
    select(
      `Secret ${volume.secret.secretName}`,
      s && secretData(s),
      volume.secret.items,
      volume.secret.optional,
      volume.secret.defaultMode ?? 0o644,
      files,
    );
  } else if (volume.projected) {
    const mode = volume.projected.defaultMode ?? 0o644;
    for (const src of volume.projected.sources ?? []) {
      if (src.secret) {
        const s = await getSecret(src.secret.name ?? '');
        select(
          `Secret ${src.secret.name}`,
          s && secretData(s),
          src.secret.items,
          src.secret.optional,
          mode,
          files,
        );
      } else if (src.configMap) {
        const cm = await getCm(src.configMap.name ?? '');
        select(
          `ConfigMap ${src.configMap.name}`,
          cm && configMapData(cm),
          src.configMap.items,
          src.configMap.optional,
          mode,
          files,
        );
      } else assert.fail(`projected source ${JSON.stringify(src)} is not emulated by this test`);
    }
  } else if (volume.emptyDir || claims.includes(volume.name)) {
    mkdirSync(dir, { recursive: true });
    return;
  } else assert.fail(`volume ${JSON.stringify(volume)} is not emulated by this test`);
  atomicWrite(dir, files);
}

/** The container env as the kubelet builds it: image ENV, service links, then the container's env. */
async function resolveEnv(
  pod: V1PodSpec,
  container: V1Container,
  image: Image,
  podName: string,
): Promise<Record<string, string>> {
  const env: Record<string, string> = { ...image.env };
  // The apiserver Service is always there; the namespace's Services only with service links.
  Object.assign(env, { KUBERNETES_SERVICE_HOST: '10.0.0.1', KUBERNETES_SERVICE_PORT: '443' });
  if (pod.enableServiceLinks !== false) {
    const services = await client.list<V1Service & KubeObject>(Resources.service, { namespace: ns });
    for (const s of services.items) {
      if (!s.spec?.clusterIP || s.spec.clusterIP === 'None') continue;
      const prefix = (s.metadata?.name ?? '').toUpperCase().replace(/-/g, '_');
      const port = s.spec.ports?.[0];
      env[`${prefix}_SERVICE_HOST`] = s.spec.clusterIP;
      env[`${prefix}_SERVICE_PORT`] = String(port?.port ?? '');
      env[`${prefix}_PORT`] = `tcp://${s.spec.clusterIP}:${port?.port ?? ''}`;
    }
  }
  assert.equal(container.envFrom, undefined, 'envFrom is not emulated by this test');
  for (const e of container.env ?? ([] as V1EnvVar[])) {
    if (e.value !== undefined) {
      assert.doesNotMatch(e.value, /\$\(/, `${e.name}: $(VAR) expansion is not emulated`);
      env[e.name] = e.value;
      continue;
    }
    const from = e.valueFrom;
    if (from?.fieldRef) {
      const field = from.fieldRef.fieldPath;
      const fields: Record<string, string> = {
        'metadata.name': podName,
        'metadata.namespace': ns,
        'spec.serviceAccountName': pod.serviceAccountName ?? 'default',
        'status.podIP': '127.0.0.1',
      };
      assert.ok(field in fields, `${e.name}: fieldRef ${field} is not emulated`);
      env[e.name] = fields[field] ?? '';
    } else if (from?.secretKeyRef) {
      const ref = from.secretKeyRef;
      const s = await client.get<V1Secret & KubeObject>(Resources.secret, ns, ref.name ?? '');
      const v = s && secretData(s).get(ref.key);
      assert.ok(v !== undefined || ref.optional, `${e.name}: Secret ${ref.name} key ${ref.key} is missing`);
      if (v !== undefined) env[e.name] = v.toString('utf8');
    } else if (from?.configMapKeyRef) {
      const ref = from.configMapKeyRef;
      const cm = await client.get<V1ConfigMap & KubeObject>(Resources.configMap, ns, ref.name ?? '');
      const v = cm && configMapData(cm).get(ref.key);
      assert.ok(
        v !== undefined || ref.optional,
        `${e.name}: ConfigMap ${ref.name} key ${ref.key} is missing`,
      );
      if (v !== undefined) env[e.name] = v.toString('utf8');
    } else assert.fail(`${e.name}: ${JSON.stringify(from)} is not emulated by this test`);
  }
  return env;
}

/** Absolute paths in the config file, mapped under the root; each must be inside a mount. */
function localConfig(local: Local, value: unknown, at: string, seen: Map<string, string>): unknown {
  if (typeof value === 'string' && value.startsWith('/')) {
    seen.set(at, value);
    return local.path(value);
  }
  if (Array.isArray(value)) return value.map((v, i) => localConfig(local, v, `${at}[${i}]`, seen));
  if (value !== null && typeof value === 'object')
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, localConfig(local, v, at ? `${at}.${k}` : k, seen)]),
    );
  return value;
}

// --- the test -------------------------------------------------------------------

void test('the pod the operator builds, run as a kubelet would, ingests over HTTP and MQTT and delivers to MinIO', async () => {
  const secret = (name: string, stringData: Record<string, string>): KubeObject =>
    ({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name, namespace: ns },
      type: 'Opaque',
      stringData,
    }) as KubeObject;
  await client.create(
    Resources.secret,
    secret('minio-credentials', { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey }),
  );
  await client.create(
    Resources.secret,
    secret(`${ENDPOINT}-keys`, { producers: `# contract test\n${API_KEY} ingest\n` }),
  );
  await client.create(Resources.secret, secret('mqtt-credentials', { password: `${MQTT_PASSWORD}\n` }));
  const spec: Endpoint['spec'] = {
    s3: {
      bucket: minio.bucket,
      region: minio.region,
      prefix: 'contract',
      endpointUrl: minio.endpoint,
      forcePathStyle: true,
    },
    credentials: { secretRef: { name: 'minio-credentials' } },
    apiKeySecretRef: { name: `${ENDPOINT}-keys` },
    storage: { size: '1Gi' },
    segmentPolicy: { segmentBytesMax: 65536, segmentAgeMsMax: 1000 },
    outputs: { segments: true, rawParquet: false },
    replicas: 1,
    resources: {},
    limits: { bodyBytesMax: 40 * 1024 * 1024 },
    validation: 'json',
    expose: { service: { type: 'ClusterIP' } },
    mqtt: {
      brokers: [
        {
          url: broker.url,
          username: MQTT_USER,
          passwordSecretRef: { name: 'mqtt-credentials', key: 'password' },
        },
      ],
      topics: [{ filter: 'sensors/#', qos: 1 }],
      protocolVersion: 5,
    },
  };
  await client.apply(
    Resources.endpoint,
    { metadata: { name: ENDPOINT, namespace: ns }, spec } as KubeObject,
    { force: false },
  );
  const applyView = (filter: string) =>
    client.apply(
      Resources.view,
      {
        metadata: { name: 'page-views', namespace: ns },
        spec: {
          endpointRef: { name: ENDPOINT },
          columns: [
            { name: 'event', type: 'VARCHAR', path: '$.event', required: true },
            { name: 'user_id', type: 'VARCHAR', path: '$.user' },
          ],
          filter,
        },
      } as KubeObject,
      { force: false },
    );
  await applyView("event = 'page_view'");
  // Settled: the View is in the Endpoint's config and the StatefulSet carries the status' config hash.
  const sts = await waitFor(
    async () => {
      const ep = await client.get<Endpoint & KubeObject>(Resources.endpoint, ns, ENDPOINT);
      const s = await client.get<V1StatefulSet & KubeObject>(Resources.statefulSet, ns, `${ENDPOINT}-ingest`);
      const hash = s?.spec?.template.metadata?.annotations?.[CONFIG_HASH_ANNOTATION];
      return ep?.status?.views?.includes('page_views') && hash && hash === ep.status.configHash
        ? s
        : undefined;
    },
    { what: 'Endpoint reconciled with its View', timeoutMs: 20_000 },
  );
  phase('operator built the StatefulSet');

  const pod = sts.spec?.template.spec;
  assert.ok(pod);
  assert.equal(pod.containers.length, 1);
  const container = pod.containers[0] as V1Container;
  const podName = `${sts.metadata?.name ?? ''}-0`;
  const image = imageOf('images/ingest-node.Dockerfile');
  const root = scratchDir('contract-pod');
  const local = localFs(root, container);

  // Volumes at their mount paths.
  const claims = (sts.spec?.volumeClaimTemplates ?? []).map((c) => c.metadata?.name ?? '');
  for (const m of container.volumeMounts ?? []) {
    const volume =
      pod.volumes?.find((v) => v.name === m.name) ?? (claims.includes(m.name) ? { name: m.name } : undefined);
    assert.ok(volume, `volumeMount ${m.name} has a volume or claim template`);
    await materialiseVolume(local, m.mountPath, volume, claims);
  }
  const env = await resolveEnv(pod, container, image, podName);
  assert.equal(env.AWS_ACCESS_KEY_ID, minio.accessKeyId, 'static keys from the Secret');
  assert.equal(env.LANDFALL_INSTANCE_ID, podName);
  assert.deepEqual(
    Object.keys(env).filter((k) => k.startsWith('LANDFALL_')),
    ['LANDFALL_INSTANCE_ID'],
    'the only LANDFALL_* env is the per-pod instance id (service links are off)',
  );

  // The command: the image entrypoint unless the container overrides it.
  const argv = [...(container.command ?? image.entrypoint), ...(container.args ?? image.cmd)];
  const toHost = (a: string): string => {
    if (a === '/nodejs/bin/node') return process.execPath;
    if (a.startsWith('/app/')) return join(repoRoot, a.slice('/app/'.length));
    return a.startsWith('/') ? local.path(a) : a;
  };
  const [cmd = '', ...args] = argv.map(toHost);
  assert.deepEqual(argv.slice(image.entrypoint.length), [
    'serve',
    '--config',
    '/etc/landfall/config/config.json',
  ]);

  // The config file as the node will read it, its paths under the root.
  const configArg = args[args.indexOf('--config') + 1] ?? '';
  const real = realpathSync(configArg);
  const paths = new Map<string, string>();
  const config = localConfig(local, JSON.parse(readFileSync(real, 'utf8')), '', paths);
  writeFileSync(real, JSON.stringify(config, null, 2));
  assert.ok(local.writable(paths.get('wal.dir') ?? '/'), 'wal.dir is on a writable volume');
  console.log(`# config paths: ${[...paths].map(([k, v]) => `${k}=${v}`).join(' ')}`);
  for (const p of paths.values()) mkdirSync(dirname(local.path(p)), { recursive: true });

  // No pod network namespace: listen on free loopback ports instead of 0.0.0.0:8080 and :8081.
  const port = await freePort();
  const adminPort = await freePort();
  const home = join(root, 'home', 'nonroot');
  mkdirSync(home, { recursive: true });
  node = startProcess({
    name: 'contract-node',
    // `env -i`: exactly the kubelet's env, nothing inherited from the test process.
    command: '/usr/bin/env',
    args: [
      '-i',
      ...Object.entries({ ...env, HOME: home }).map(([k, v]) => `${k}=${v}`),
      cmd,
      ...args,
      '--listen.host=127.0.0.1',
      `--listen.port=${port}`,
      '--listen.admin.host=127.0.0.1',
      `--listen.admin.port=${adminPort}`,
    ],
    cwd: join(repoRoot, image.workdir.replace(/^\/app\/?/, '')),
  });
  const url = `http://127.0.0.1:${port}`;
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  await waitFor(async () => (await fetch(`${url}/readyz`)).status === 200, {
    what: 'the node ready',
    timeoutMs: 20_000,
    process: node,
  });
  phase('node ready');

  // HTTP, with the key from the Endpoint's Secret.
  const events = [
    { event: 'page_view', user: 'u1' },
    { event: 'page_view', user: 'u2' },
    { event: 'click', user: 'u1' },
  ];
  const res = await fetch(`${url}/v1/ingest`, {
    method: 'POST',
    headers: { 'x-api-key': API_KEY, 'content-type': 'application/x-ndjson' },
    body: events.map((e) => JSON.stringify(e)).join('\n') + '\n',
  });
  assert.equal(res.status, 202, await res.text());
  const denied = await fetch(`${url}/v1/ingest`, {
    method: 'POST',
    headers: { 'x-api-key': 'wrong', 'content-type': 'application/json' },
    body: '{}',
  });
  assert.equal(denied.status, 401);
  // MQTT: the node logged in with the password from the mounted Secret and subscribed.
  let expected = events.length;
  const pub = await mqtt.connectAsync(broker.url, {
    clientId: 'contract-publisher',
    username: MQTT_USER,
    password: MQTT_PASSWORD,
    reconnectPeriod: 0,
  });
  try {
    const deadline = Date.now() + 15_000;
    let mqttRecords = 0;
    // Until the node's subscription is in place, QoS 1 messages to nobody are dropped: publish until one lands.
    while (mqttRecords === 0) {
      assert.ok(Date.now() < deadline, 'an MQTT message reached the node');
      await pub.publishAsync('sensors/door', JSON.stringify({ event: 'page_view', user: 'mqtt' }), {
        qos: 1,
      });
      await new Promise((r) => setTimeout(r, 200));
      const metrics = await (await fetch(`${adminUrl}/metrics`)).text();
      mqttRecords = Number(
        /^landfall_mqtt_messages_written_total(?:\{[^}]*\})? (\d+)/m.exec(metrics)?.[1] ?? 0,
      );
    }
    expected += mqttRecords;
  } finally {
    await pub.endAsync();
  }
  phase('events sent (HTTP and MQTT)');

  // Commit markers in MinIO under the Endpoint's prefix, endpoint and pod name.
  const s3 = minio.s3();
  const markerPrefix = `contract/commits/${ENDPOINT}/${podName}/`;
  type Marker = {
    records: number;
    artifacts: { kind: string; key: string; view?: string; rows: number }[];
    views?: { name: string; specSha256: string }[];
  };
  const readMarkers = async (): Promise<Marker[]> => {
    const list = await s3.send(new ListObjectsV2Command({ Bucket: minio.bucket, Prefix: markerPrefix }));
    return Promise.all(
      (list.Contents ?? []).map(async (o) => {
        const got = await s3.send(new GetObjectCommand({ Bucket: minio.bucket, Key: o.Key }));
        return JSON.parse((await got.Body?.transformToString()) ?? '{}') as Marker;
      }),
    );
  };
  const markers = await waitFor(
    async () => {
      const all = await readMarkers();
      return all.reduce((n, m) => n + m.records, 0) >= expected ? all : undefined;
    },
    {
      what: `commit markers under ${markerPrefix} for every record`,
      timeoutMs: 20_000,
      intervalMs: 250,
      process: node,
    },
  );
  phase(`${markers.length} commit marker(s) in MinIO`);
  const artifacts = markers.flatMap((m) => m.artifacts);
  const describe = (list: Marker['artifacts']) =>
    list.map((a) => `${a.kind}${a.view ? `(${a.view})` : ''} ${a.rows} rows`).join(', ');
  console.log(`# artifacts: ${describe(artifacts)}`);
  assert.ok(
    artifacts.some(
      (a) => a.kind === 'segment' && a.key.startsWith(`contract/segments/${ENDPOINT}/${podName}/`),
    ),
  );
  const views = artifacts.filter((a) => a.kind === 'view' && a.view === 'page_views');
  assert.ok(views.length > 0, `a page_views Parquet artifact: ${JSON.stringify(artifacts)}`);
  assert.ok(views.every((v) => v.key.startsWith('contract/views/page_views/') && v.key.endsWith('.parquet')));
  assert.equal(
    views.reduce((n, v) => n + v.rows, 0),
    markers.reduce((n, m) => n + m.records, 0) - 1,
    'every record but the one click',
  );

  // A View edit reaches the running node without a restart: the views
  // ConfigMap changes (not the pod template), the kubelet swaps `..data`,
  // the node reloads the folder, and later segments carry the new spec.
  const hashBefore = sts.spec?.template.metadata?.annotations?.[CONFIG_HASH_ANNOTATION];
  await applyView("event IN ('page_view', 'click')");
  const newHash = await waitFor(
    async () => {
      const v = await client.get<KubeObject & { status?: { specHash?: string } }>(
        Resources.view,
        ns,
        'page-views',
      );
      const cm = await client.get<V1ConfigMap & KubeObject>(
        Resources.configMap,
        ns,
        `${ENDPOINT}-ingest-views`,
      );
      return v?.status?.specHash && cm?.data?.['page_views.yaml']?.includes('click')
        ? v.status.specHash
        : undefined;
    },
    { what: 'the edited View in the views ConfigMap', timeoutMs: 15_000 },
  );
  const viewsMount = container.volumeMounts?.find((m) => m.name === 'views');
  const viewsVolume = pod.volumes?.find((v) => v.name === 'views');
  assert.ok(viewsMount && viewsVolume);
  await materialiseVolume(local, viewsMount.mountPath, viewsVolume, claims);
  const stsAfter = await client.get<V1StatefulSet & KubeObject>(
    Resources.statefulSet,
    ns,
    `${ENDPOINT}-ingest`,
  );
  assert.equal(
    stsAfter?.spec?.template.metadata?.annotations?.[CONFIG_HASH_ANNOTATION],
    hashBefore,
    'no roll',
  );
  // Send clicks until a segment built with the new spec counts them.
  const reloaded = await waitFor(
    async () => {
      const r = await fetch(`${url}/v1/ingest`, {
        method: 'POST',
        headers: { 'x-api-key': API_KEY, 'content-type': 'application/json' },
        body: JSON.stringify({ event: 'click', user: 'after-edit' }),
      });
      assert.equal(r.status, 202);
      const m = (await readMarkers()).find((x) => x.views?.some((v) => v.specSha256 === newHash));
      return m?.artifacts.some((a) => a.kind === 'view' && a.rows > 0) ? m : undefined;
    },
    {
      what: `a commit marker with the edited View (spec ${newHash.slice(0, 12)})`,
      timeoutMs: 20_000,
      intervalMs: 500,
      process: node,
    },
  );
  console.log(`# after the View edit: ${describe(reloaded.artifacts)}`);
  phase('the edited View reached the running node (no restart)');

  // The operator's own key (derived from its master key; only its hash is
  // in the ConfigMap, projected next to the user's keys) reads /v1/status,
  // and the drain check's parser finds the replica drained.
  const ep = await client.get<Endpoint & KubeObject>(Resources.endpoint, ns, ENDPOINT);
  assert.ok(ep);
  const operatorKey = deriveStatusKey(OPERATOR_MASTER_KEY, ep);
  const state = await waitFor(
    async () => {
      const s = await httpNodeStatusProbe(2000)(adminUrl, operatorKey);
      return drainBlocker(s) === undefined ? s : undefined;
    },
    { what: 'the node reports nothing undelivered', timeoutMs: 10_000, process: node },
  );
  assert.equal(state.segmentsPending, 0);
  const ingestOnly = await fetch(`${adminUrl}/v1/status`, { headers: { 'x-api-key': API_KEY } });
  assert.equal(ingestOnly.status, 403, 'an ingest-only key cannot read the status');

  // SIGTERM as the kubelet sends it: a clean drain, exit 0.
  const stopping = node;
  await stopping.stop({ graceMs: 20_000 });
  assert.deepEqual(await stopping.exited, { code: 0, signal: null }, stopping.logTail(20));
  phase('node drained and exited 0');
});
