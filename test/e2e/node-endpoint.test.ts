// The user's path on the real node (test/harness/node.ts):
// helm install the chart with the locally built operator image, kubectl apply
// the MinIO example Endpoint (MinIO on this machine, reached from pods at the
// bridge address), the ingest pods Running and Ready on local PVs, events
// POSTed to a pod, commit markers in MinIO; a segment policy change rolls the
// pods one at a time while producers run, and every acknowledged id is in
// MinIO after (read back with `landfall expand`); deleting the Endpoint drains.
//
// Between those: the node's cluster DNS (CoreDNS on the bridge) seen from a
// pod, and the operator ↔ node contract on a second Endpoint with MQTT (a
// password Secret, Mosquitto on this machine) and a View: what the operator
// renders (ConfigMap, Secrets, projected keys, env) is what the node in the
// real pod reads; a View edit reaches the running pod without a restart; the
// operator's derived status key reads /v1/status; SIGTERM drains and exits 0.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
import mqtt from 'mqtt';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import type { V1Pod } from '@kubernetes/client-node';
import {
  buildRepoImages,
  repoRoot,
  scratchDir,
  startKubernetes,
  startMinio,
  startMosquitto,
  waitFor,
  CLUSTER_DOMAIN,
  NODE_NAME,
  POD_GATEWAY,
} from '../harness/index.ts';
import type { KubernetesTestbed, MinioServer, MosquittoServer, RepoImages } from '../harness/index.ts';
import { deriveStatusKey, OPERATOR_MASTER_KEY_FIELD } from '../../operator/src/model/operator-key.ts';
import { ADMIN_PORT, CONFIG_HASH_ANNOTATION } from '../../operator/src/model/names.ts';
import { drainBlocker, httpNodeStatusProbe } from '../../operator/src/adapters/node-status.ts';
import type { Endpoint } from '../../operator/src/api/endpoint.ts';
import { Ledger } from './helpers/ledger.ts';
import { committedIdCounts } from './helpers/committed.ts';

let kube: KubernetesTestbed;
let minio: MinioServer;
let broker: MosquittoServer;
let images: RepoImages;
// Set by the first test, used by the next ones.
let ns = '';
let endpointName = '';
let releaseNs = '';
let s3Host = '';
const API_KEY = 'lf_live_3f9c2e51b0d84a7e9d1c6b2a4f0e8d7c';
const MQTT_USER = 'landfall';
const MQTT_PASSWORD = 'mqtt-contract-secret';

before(async () => {
  // The broker authenticates the node's user against a password file.
  const mqttDir = scratchDir('node-endpoint-mosquitto');
  mkdirSync(mqttDir, { recursive: true });
  const passwd = join(mqttDir, 'passwd');
  execFileSync('mosquitto_passwd', ['-b', '-c', passwd, MQTT_USER, MQTT_PASSWORD]);
  chmodSync(passwd, 0o600);
  [minio, broker] = await Promise.all([
    startMinio(),
    startMosquitto({ extraConfig: [`password_file ${passwd}`, 'allow_anonymous false'] }),
  ]);
  kube = await startKubernetes({ node: true });
  assert.ok(kube.node !== undefined);
  process.stderr.write(`[node-endpoint] node startupMs ${JSON.stringify(kube.node.startupMs)}\n`);
  images = await buildRepoImages(kube.node);
});
after(async () => {
  await kube?.stop();
  await minio?.stop();
  await broker?.stop();
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
  releaseNs = await kube.newNamespace('landfall-system');
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

  ns = await kube.newNamespace('analytics');
  s3Host = await node.exposeHostPort(Number(new URL(minio.endpoint).port));
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
  endpointName = name;
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

  const key = API_KEY;
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

/** Pods of a namespace, by name. */
async function podsIn(namespace: string): Promise<V1Pod[]> {
  return (
    JSON.parse((await kube.kubectl(['get', 'pods', '-n', namespace, '-o', 'json'])).stdout) as {
      items: V1Pod[];
    }
  ).items.sort((a, b) => (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? ''));
}

/** Runs an ES module `script` with the image's own Node inside the pod's container; its stdout. */
async function nodeInPod(
  namespace: string,
  pod: string,
  script: string,
  args: readonly string[] = [],
): Promise<string> {
  const r = await kube.kubectl(
    ['exec', '-n', namespace, pod, '--', '/nodejs/bin/node', '--input-type=module', '-e', script, ...args],
    { timeoutMs: 60_000 },
  );
  return r.stdout;
}

void test('cluster DNS: a pod resolves Service and headless per-pod names and gets HTTP answers through them', async () => {
  assert.ok(ns !== '', 'the first test set the Endpoint up');
  const pods = await podsIn(ns);
  assert.equal(pods.length, 2);
  const [from, to] = pods as [V1Pod, V1Pod];
  const headless = `${endpointName}-ingest-headless`;
  const service = `${endpointName}-ingest`;
  const clusterIp = (
    await kube.kubectl(['get', 'service', service, '-n', ns, '-o', 'jsonpath={.spec.clusterIP}'])
  ).stdout.trim();
  assert.match(clusterIp, /^10\.0\.0\.\d+$/);
  const names = {
    perPod: `${to.metadata?.name ?? ''}.${headless}.${ns}.svc.${CLUSTER_DOMAIN}`,
    headless: `${headless}.${ns}.svc.${CLUSTER_DOMAIN}`,
    // Through the pod's search list (kubelet-written resolv.conf).
    short: headless,
    clusterIp: `${service}.${ns}.svc.${CLUSTER_DOMAIN}`,
  };
  const script = `
    import { promises as dns } from 'node:dns';
    import { readFileSync } from 'node:fs';
    const names = JSON.parse(process.argv[1]);
    const out = { resolvConf: readFileSync('/etc/resolv.conf', 'utf8') };
    for (const [k, n] of Object.entries(names))
      out[k] = (await dns.lookup(n, { all: true, family: 4 })).map((a) => a.address).sort();
    for (const k of ['perPod', 'headless']) {
      const r = await fetch('http://' + names[k] + ':8080/readyz', { signal: AbortSignal.timeout(10000) });
      out[k + 'Http'] = r.status;
    }
    // Nothing is forwarded out of the machine: other names do not resolve.
    out.outside = await dns.lookup('example.com').then(() => 'resolved', (e) => e.code);
    console.log(JSON.stringify(out));
  `;
  const got = JSON.parse(await nodeInPod(ns, from.metadata?.name ?? '', script, [JSON.stringify(names)])) as {
    resolvConf: string;
    perPod: string[];
    headless: string[];
    short: string[];
    clusterIp: string[];
    perPodHttp: number;
    headlessHttp: number;
    outside: string;
  };
  process.stderr.write(`[node-endpoint] DNS from ${from.metadata?.name ?? ''}: ${JSON.stringify(got)}\n`);
  assert.match(got.resolvConf, new RegExp(`^nameserver ${POD_GATEWAY.replace(/\./g, '\\.')}$`, 'm'));
  assert.match(
    got.resolvConf,
    new RegExp(`^search ${ns}\\.svc\\.${CLUSTER_DOMAIN.replace(/\./g, '\\.')} `, 'm'),
  );
  const podIpsSorted = pods.map((p) => p.status?.podIP ?? '').sort();
  assert.deepEqual(got.perPod, [to.status?.podIP]);
  assert.deepEqual(got.headless, podIpsSorted);
  assert.deepEqual(got.short, podIpsSorted);
  // A ClusterIP Service resolves to its address; with no kube-proxy nothing routes it (docs/testbed.md).
  assert.deepEqual(got.clusterIp, [clusterIp]);
  assert.equal(got.perPodHttp, 200);
  assert.equal(got.headlessHttp, 200);
  assert.notEqual(got.outside, 'resolved');
});

// The operator ↔ node contract, on a second Endpoint in its own namespace.
// Named `landfall` on purpose: were service links on, its Services
// (`landfall-ingest…`) would give the pod env like LANDFALL_INGEST_SERVICE_HOST,
// which the node's config loader refuses as an unknown LANDFALL_* key.
const CONTRACT_ENDPOINT = 'landfall';
const CONTRACT_KEY = 'lf_contract_0123456789abcdef';

void test('the contract on a real pod: MQTT with a password Secret, a View hot-reloaded without a restart, the operator status key, SIGTERM drains with exit 0', async () => {
  const node = kube.node;
  assert.ok(node !== undefined && releaseNs !== '' && s3Host !== '', 'the first test installed the chart');
  const cns = await kube.newNamespace('contract');
  const brokerHost = await node.exposeHostPort(broker.port);
  const secret = (name: string, stringData: Record<string, string>): object => ({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name },
    type: 'Opaque',
    stringData,
  });
  const spec = {
    s3: {
      bucket: minio.bucket,
      region: minio.region,
      prefix: 'contract',
      endpointUrl: `http://${s3Host}`,
      forcePathStyle: true,
    },
    credentials: { secretRef: { name: 'minio-credentials' } },
    apiKeySecretRef: { name: `${CONTRACT_ENDPOINT}-keys` },
    storage: { storageClassName: node.storageClass, size: '1Gi' },
    segmentPolicy: { segmentBytesMax: 65536, segmentAgeMsMax: 1000 },
    outputs: { segments: true, rawParquet: false },
    replicas: 1,
    limits: { bodyBytesMax: 40 * 1024 * 1024 },
    validation: 'json',
    expose: { service: { type: 'ClusterIP' } },
    mqtt: {
      brokers: [
        {
          url: `mqtt://${brokerHost}`,
          username: MQTT_USER,
          passwordSecretRef: { name: 'mqtt-credentials', key: 'password' },
        },
      ],
      topics: [{ filter: 'sensors/#', qos: 1 }],
      protocolVersion: 5,
    },
  };
  const view = (filter: string): object => ({
    apiVersion: 'landfall.dev/v1alpha1',
    kind: 'View',
    metadata: { name: 'page-views' },
    spec: {
      endpointRef: { name: CONTRACT_ENDPOINT },
      columns: [
        { name: 'event', type: 'VARCHAR', path: '$.event', required: true },
        { name: 'user_id', type: 'VARCHAR', path: '$.user' },
      ],
      filter,
    },
  });
  const apply = (objs: object[]) =>
    kube.kubectl(['apply', '-n', cns, '-f', '-'], {
      input: objs.map((o) => JSON.stringify(o)).join('\n---\n'),
    });
  await apply([
    secret('minio-credentials', { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey }),
    secret(`${CONTRACT_ENDPOINT}-keys`, { producers: `# contract test\n${CONTRACT_KEY} ingest\n` }),
    secret('mqtt-credentials', { password: `${MQTT_PASSWORD}\n` }),
    { apiVersion: 'landfall.dev/v1alpha1', kind: 'Endpoint', metadata: { name: CONTRACT_ENDPOINT }, spec },
    view("event = 'page_view'"),
  ]);
  const getJson = async <T>(args: string[]): Promise<T> =>
    JSON.parse((await kube.kubectl(['get', ...args, '-n', cns, '-o', 'json'])).stdout) as T;
  type Sts = {
    spec?: { template?: { metadata?: { annotations?: Record<string, string> } } };
    status?: { readyReplicas?: number };
  };
  const stsName = `statefulset/${CONTRACT_ENDPOINT}-ingest`;
  // Settled: the View is in the Endpoint's config, the StatefulSet carries the status' config hash, its pod Ready.
  const hashBefore = await waitFor(
    async () => {
      const ep = await getJson<Endpoint>([`endpoints.landfall.dev/${CONTRACT_ENDPOINT}`]);
      const sts = await getJson<Sts>([stsName]).catch(() => undefined);
      const hash = sts?.spec?.template?.metadata?.annotations?.[CONFIG_HASH_ANNOTATION];
      return ep.status?.views?.includes('page_views') &&
        hash !== undefined &&
        hash === ep.status.configHash &&
        (sts?.status?.readyReplicas ?? 0) >= 1
        ? hash
        : undefined;
    },
    {
      what: 'contract Endpoint reconciled with its View, its pod Ready',
      timeoutMs: 240_000,
      intervalMs: 500,
    },
  );
  const [pod] = await podsIn(cns);
  assert.ok(pod?.metadata?.name !== undefined && pod.status?.podIP !== undefined);
  const podName = pod.metadata.name;
  const podUid = pod.metadata.uid;
  const url = `http://${pod.status.podIP}:8080`;
  // /v1/status (and /metrics, /v1/drain) are on the admin port, never on 8080.
  const adminUrl = `http://${pod.status.podIP}:${ADMIN_PORT}`;
  assert.equal(pod.spec?.nodeName, NODE_NAME);
  const container = pod.spec?.containers[0];
  // For the record: every pod of the cluster, their node and the images built from this checkout.
  const all = await kube.kubectl(['get', 'pods', '-A', '-o', 'wide']);
  const imgs = await kube.kubectl(['get', 'pods', '-A', '-o', 'custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,IMAGE:.status.containerStatuses[0].image,IMAGE-ID:.status.containerStatuses[0].imageID']); // prettier-ignore
  process.stderr.write(`[node-endpoint] kubectl get pods -A -o wide\n${all.stdout}${imgs.stdout}`);
  // The image's ENTRYPOINT with the operator's args, as the kubelet runs it.
  assert.equal(container?.command, undefined);
  assert.deepEqual(container?.args, ['serve', '--config', '/etc/landfall/config/config.json']);

  // The env the kubelet built (read inside the container): static keys from
  // the Secret, and the only LANDFALL_* is the per-pod instance id.
  const env = JSON.parse(await nodeInPod(cns, podName, 'console.log(JSON.stringify(process.env))')) as Record<
    string,
    string
  >;
  assert.equal(env['AWS_ACCESS_KEY_ID'], minio.accessKeyId, 'static keys from the Secret');
  assert.equal(env['LANDFALL_INSTANCE_ID'], podName);
  assert.deepEqual(
    Object.keys(env).filter((k) => k.startsWith('LANDFALL_')),
    ['LANDFALL_INSTANCE_ID'],
    'the only LANDFALL_* env is the per-pod instance id (service links are off)',
  );

  // HTTP, with the key from the Endpoint's Secret.
  const events = [
    { event: 'page_view', user: 'u1' },
    { event: 'page_view', user: 'u2' },
    { event: 'click', user: 'u1' },
  ];
  const res = await fetch(`${url}/v1/ingest`, {
    method: 'POST',
    headers: { 'x-api-key': CONTRACT_KEY, 'content-type': 'application/x-ndjson' },
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
    // Until the node's subscription is in place, QoS 1 messages to nobody are dropped: publish until one lands.
    const mqttRecords = await waitFor(
      async () => {
        await pub.publishAsync('sensors/door', JSON.stringify({ event: 'page_view', user: 'mqtt' }), {
          qos: 1,
        });
        await new Promise((r) => setTimeout(r, 200));
        const metrics = await (await fetch(`${adminUrl}/metrics`)).text();
        const n = Number(
          /^landfall_mqtt_messages_written_total(?:\{[^}]*\})? (\d+)/m.exec(metrics)?.[1] ?? 0,
        );
        return n > 0 ? n : undefined;
      },
      { what: 'an MQTT message written by the node', timeoutMs: 30_000, intervalMs: 100 },
    );
    expected += mqttRecords;
  } finally {
    await pub.endAsync();
  }

  // Commit markers in MinIO under the Endpoint's prefix, endpoint and pod name.
  const s3 = minio.s3();
  const markerPrefix = `contract/commits/${CONTRACT_ENDPOINT}/${podName}/`;
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
    { what: `commit markers under ${markerPrefix} for every record`, timeoutMs: 60_000, intervalMs: 250 },
  );
  const artifacts = markers.flatMap((m) => m.artifacts);
  const describe = (list: Marker['artifacts']) =>
    list.map((a) => `${a.kind}${a.view ? `(${a.view})` : ''} ${a.rows} rows`).join(', ');
  process.stderr.write(`[node-endpoint] contract artifacts: ${describe(artifacts)}\n`);
  assert.ok(
    artifacts.some(
      (a) => a.kind === 'segment' && a.key.startsWith(`contract/segments/${CONTRACT_ENDPOINT}/${podName}/`),
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

  // A View edit reaches the running pod without a restart: the views
  // ConfigMap changes (not the pod template), the kubelet swaps the volume's
  // `..data`, the node reloads the folder, and later segments carry the new spec.
  await apply([view("event IN ('page_view', 'click')")]);
  const newHash = await waitFor(
    async () => {
      const v = await getJson<{ status?: { specHash?: string } }>(['views.landfall.dev/page-views']);
      const cm = await getJson<{ data?: Record<string, string> }>([
        `configmap/${CONTRACT_ENDPOINT}-ingest-views`,
      ]);
      return v.status?.specHash && cm.data?.['page_views.yaml']?.includes('click')
        ? v.status.specHash
        : undefined;
    },
    { what: 'the edited View in the views ConfigMap', timeoutMs: 30_000, intervalMs: 250 },
  );
  // Send clicks until a segment built with the new spec counts them.
  const reloaded = await waitFor(
    async () => {
      const r = await fetch(`${url}/v1/ingest`, {
        method: 'POST',
        headers: { 'x-api-key': CONTRACT_KEY, 'content-type': 'application/json' },
        body: JSON.stringify({ event: 'click', user: 'after-edit' }),
      });
      assert.equal(r.status, 202);
      const m = (await readMarkers()).find((x) => x.views?.some((v) => v.specSha256 === newHash));
      return m?.artifacts.some((a) => a.kind === 'view' && a.rows > 0) ? m : undefined;
    },
    {
      what: `a commit marker with the edited View (spec ${newHash.slice(0, 12)})`,
      // The kubelet refreshes ConfigMap volumes on its sync (syncFrequency 10 s + its cache).
      timeoutMs: 120_000,
      intervalMs: 500,
    },
  );
  process.stderr.write(`[node-endpoint] after the View edit: ${describe(reloaded.artifacts)}\n`);
  const stsAfter = await getJson<Sts>([stsName]);
  assert.equal(
    stsAfter.spec?.template?.metadata?.annotations?.[CONFIG_HASH_ANNOTATION],
    hashBefore,
    'no roll',
  );
  const [same] = await podsIn(cns);
  assert.equal(same?.metadata?.uid, podUid, 'the same pod');
  assert.equal(same?.status?.containerStatuses?.[0]?.restartCount, 0, 'no container restart');

  // The operator's own key (derived from its master key in the release's
  // Secret; only its hash is in the ConfigMap, projected next to the user's
  // keys) reads /v1/status, and the drain check's parser finds the replica drained.
  const master = (
    await kube.kubectl([
      'get', 'secret', 'lf-landfall-operator-key', '-n', releaseNs,
      '-o', `jsonpath={.data.${OPERATOR_MASTER_KEY_FIELD}}`,
    ])
  ).stdout; // prettier-ignore
  const ep = await getJson<Endpoint>([`endpoints.landfall.dev/${CONTRACT_ENDPOINT}`]);
  const operatorKey = deriveStatusKey(Buffer.from(master, 'base64'), ep);
  const state = await waitFor(
    async () => {
      const st = await httpNodeStatusProbe(2000)(adminUrl, operatorKey);
      return drainBlocker(st) === undefined ? st : undefined;
    },
    { what: 'the node reports nothing undelivered', timeoutMs: 30_000 },
  );
  assert.equal(state.segmentsPending, 0);
  const ingestOnly = await fetch(`${adminUrl}/v1/status`, { headers: { 'x-api-key': CONTRACT_KEY } });
  assert.equal(ingestOnly.status, 403, 'an ingest-only key cannot read the status');

  // SIGTERM, as the kubelet sends it, to the container's PID 1 (the node): a
  // clean drain and exit 0, then the kubelet restarts the container in place.
  await nodeInPod(cns, podName, "process.kill(1, 'SIGTERM')");
  const terminated = await waitFor(
    async () => {
      const [p] = await podsIn(cns);
      const cs = p?.status?.containerStatuses?.[0];
      return p?.metadata?.uid === podUid && (cs?.restartCount ?? 0) >= 1
        ? cs?.lastState?.terminated
        : undefined;
    },
    { what: 'the node container exited after SIGTERM and was restarted', timeoutMs: 60_000, intervalMs: 500 },
  );
  assert.equal(terminated.exitCode, 0, JSON.stringify(terminated));
});

async function podIps(): Promise<Map<string, string>> {
  const pods = (
    JSON.parse((await kube.kubectl(['get', 'pods', '-n', ns, '-o', 'json'])).stdout) as { items: V1Pod[] }
  ).items;
  const out = new Map<string, string>();
  for (const p of pods) {
    const ready = p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
    if (ready && p.metadata?.deletionTimestamp === undefined && p.status?.podIP !== undefined)
      out.set(p.metadata?.name ?? '', p.status.podIP);
  }
  return out;
}

const committedIds = (): Promise<Map<string, number>> => committedIdCounts(minio, { endpointName });

void test('a segment policy change rolls the pods one at a time; a producer ledger loses no acknowledged id', async () => {
  assert.ok(ns !== '', 'the first test set the Endpoint up');
  const ledger = new Ledger();
  let ips = await podIps();
  let stopped = false;
  const seen = { maxNotReady: 0 };
  // Follows the pods: a restarted pod comes back with another IP.
  const follow = (async () => {
    while (!stopped) {
      ips = await podIps().catch(() => ips);
      seen.maxNotReady = Math.max(seen.maxNotReady, 2 - ips.size);
      await new Promise((r) => setTimeout(r, 300));
    }
  })();
  let counter = 0;
  const producer = async (p: number): Promise<void> => {
    while (!stopped) {
      const targets = [...ips.values()];
      const ip = targets[counter % Math.max(1, targets.length)];
      const reqId = `roll.${p}.${counter++}`;
      const ids = Array.from({ length: 5 }, (_, j) => `${reqId}.${j}`);
      const req = ledger.add(reqId, ids);
      if (ip === undefined) {
        ledger.settle(req, { kind: 'unknown', reason: 'no Ready pod' });
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      try {
        const res = await fetch(`http://${ip}:8080/v1/ingest`, {
          method: 'POST',
          headers: { 'x-api-key': API_KEY, 'content-type': 'application/x-ndjson' },
          body: ids.map((id) => `{"id":"${id}","event":"page_view"}`).join('\n') + '\n',
          signal: AbortSignal.timeout(10_000),
        });
        await res.text();
        ledger.settle(
          req,
          res.status === 202
            ? { kind: 'acked', firstSeq: undefined, lastSeq: undefined }
            : { kind: 'refused', status: res.status, code: undefined, retryAfter: null },
        );
      } catch (err) {
        ledger.settle(req, { kind: 'unknown', reason: String(err) });
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  const producers = Promise.all([0, 1, 2].map((p) => producer(p)));

  const sts = `statefulset/${endpointName}-ingest`;
  const revision = async (): Promise<{
    current?: string;
    update?: string;
    ready?: number;
    updated?: number;
  }> => {
    const o = JSON.parse((await kube.kubectl(['get', sts, '-n', ns, '-o', 'json'])).stdout) as {
      status?: {
        currentRevision?: string;
        updateRevision?: string;
        readyReplicas?: number;
        updatedReplicas?: number;
      };
    };
    return {
      current: o.status?.currentRevision,
      update: o.status?.updateRevision,
      ready: o.status?.readyReplicas,
      updated: o.status?.updatedReplicas,
    };
  };
  const before = await revision();
  try {
    // Traffic first, then the change.
    await waitFor(() => ledger.counts().acked >= 20, { what: '20 acknowledged requests', timeoutMs: 30_000 });
    await kube.kubectl([
      'patch', 'endpoints.landfall.dev', endpointName, '-n', ns, '--type=merge',
      '-p', JSON.stringify({ spec: { segmentPolicy: { segmentAgeMsMax: 5000 } } }),
    ]); // prettier-ignore
    await waitFor(
      async () => {
        const r = await revision();
        return r.update !== before.update && r.current === r.update && r.ready === 2 && r.updated === 2;
      },
      { what: `${sts} rolled to a new revision with both pods Ready`, timeoutMs: 300_000, intervalMs: 500 },
    );
    // Some traffic on the new pods too.
    const ackedAfterRoll = ledger.counts().acked;
    await waitFor(() => ledger.counts().acked >= ackedAfterRoll + 20, {
      what: '20 more acknowledged',
      timeoutMs: 30_000,
    });
  } finally {
    stopped = true;
    await producers;
    await follow;
  }
  assert.ok(seen.maxNotReady <= 1, `at most one pod down at a time (saw ${seen.maxNotReady})`);

  const acked = ledger.requests.filter((r) => r.outcome?.kind === 'acked').flatMap((r) => r.recordIds);
  let missing: string[] = [];
  await waitFor(
    async () => {
      const ids = await committedIds();
      missing = acked.filter((id) => !ids.has(id));
      return missing.length === 0;
    },
    { what: 'every acknowledged id committed to MinIO', timeoutMs: 120_000, intervalMs: 2000 },
  ).catch((err: unknown) => {
    throw new Error(
      `${String(err)}: ${missing.length} of ${acked.length} acknowledged ids missing, e.g. ${missing.slice(0, 5).join(', ')}`,
    );
  });
  const c = ledger.counts();
  process.stderr.write(
    `[node-endpoint] rolling update: ${c.requests} requests, ${c.acked} acked (${c.ackedRecords} ids), ${c.refused} refused, ${c.unknown} unknown; acknowledged ids missing in MinIO: ${missing.length}\n`,
  );
  assert.equal(missing.length, 0);
});

void test('deleting the Endpoint: the finalizer drains, then it and its pods are gone', async () => {
  assert.ok(ns !== '');
  await kube.kubectl(['delete', 'endpoints.landfall.dev', endpointName, '-n', ns, '--wait=false']);
  await waitFor(
    async () => {
      const r = await kube.kubectl(['get', 'endpoints.landfall.dev', '-n', ns, '-o', 'name']);
      return r.stdout.trim() === '';
    },
    { what: `Endpoint ${endpointName} gone (finalizer released)`, timeoutMs: 180_000, intervalMs: 1000 },
  );
  await waitFor(
    async () => (await kube.kubectl(['get', 'pods', '-n', ns, '-o', 'name'])).stdout.trim() === '',
    { what: 'the ingest pods gone', timeoutMs: 120_000, intervalMs: 1000 },
  );
});
