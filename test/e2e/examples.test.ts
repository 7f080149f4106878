// The user docs stay true to the code (no API server needed; helm.test.ts
// applies the examples to a real one):
//   - docs/openapi.yaml: every error code of ingest-node/src/errors.ts, under
//     the status it is sent with, and exactly the routes the server registers;
//     its Status schema is what a real node (startNode) serves on /v1/status;
//   - docs/examples: Endpoints and Views valid against the operator's schemas;
//   - docs/operations.md and the Grafana dashboard: every metric they name
//     exists, and every metric the code registers is documented;
//   - docs/aws.md: its policies are JSON and grant no more than the table says;
//   - relative links in these docs point at files that exist.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import yaml from 'js-yaml';
import { Ajv } from 'ajv';
import { Value } from '@sinclair/typebox/value';
import { repoRoot } from '../harness/index.ts';
import { errorCatalogue } from '../../ingest-node/src/errors.ts';
import { startNode } from '../../ingest-node/src/node.ts';
import { defaultConfig } from '../../ingest-node/src/config/load.ts';
import type { Wal } from '../../ingest-node/src/wal/types.ts';
import {
  ENDPOINT_NAME_MAX,
  EndpointSpec,
  endpointSpecErrors,
  withEndpointDefaults,
} from '../../operator/src/api/endpoint.ts';
import { ViewSpec, withViewDefaults } from '../../operator/src/api/view.ts';

const docsDir = join(repoRoot, 'docs');
const examplesDir = join(docsDir, 'examples');
const read = (...p: string[]): Promise<string> => readFile(join(repoRoot, ...p), 'utf8');

type Json = Record<string, unknown>;
interface OpenApi {
  paths: Record<string, Record<string, { responses: Record<string, Json> }>>;
  components: { responses: Record<string, Json>; schemas: Record<string, Json> };
}

void test('openapi.yaml lists every error code under its status, and nothing else', async () => {
  const api = yaml.load(await read('docs', 'openapi.yaml')) as OpenApi;
  const catalogue = new Map(errorCatalogue().map((e) => [e.code, e]));

  const enumCodes = (api.components.schemas.ErrorCode as { enum: string[] }).enum;
  assert.equal(new Set(enumCodes).size, enumCodes.length, 'ErrorCode has no duplicates');
  assert.deepEqual([...enumCodes].sort(), [...catalogue.keys()].sort(), 'ErrorCode enum = errors.ts');

  const deref = (r: Json): Json => {
    const ref = r.$ref as string | undefined;
    if (!ref) return r;
    const name = ref.replace('#/components/responses/', '');
    const target = api.components.responses[name];
    assert.ok(target, `dangling ${ref}`);
    return target;
  };
  const documented = new Map<string, Set<number>>();
  const note = (code: string, status: number, where: string): void => {
    const spec = catalogue.get(code);
    assert.ok(spec, `${where}: ${code} is not in errors.ts`);
    assert.equal(spec.statusCode, status, `${where}: ${code} is sent with ${spec.statusCode}, not ${status}`);
    documented.set(code, (documented.get(code) ?? new Set()).add(status));
  };
  for (const [path, ops] of Object.entries(api.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      for (const [status, raw] of Object.entries(op.responses)) {
        const r = deref(raw);
        const codes = (r['x-landfall-codes'] as string[] | undefined) ?? [];
        for (const code of codes) note(code, Number(status), `${method.toUpperCase()} ${path} ${status}`);
        if (Number(status) >= 400 && !(method === 'get' && path === '/readyz'))
          assert.ok(codes.length > 0, `${method.toUpperCase()} ${path} ${status} names its error codes`);
        if (status === '503' && codes.length > 0)
          assert.ok((r.headers as Json | undefined)?.['Retry-After'], `${path} 503 documents Retry-After`);
      }
    }
  }
  for (const [name, r] of Object.entries(api.components.responses)) {
    const status = r['x-landfall-status'] as number | undefined;
    if (status === undefined) continue; // referenced from operations, checked there
    for (const code of (r['x-landfall-codes'] as string[] | undefined) ?? [])
      note(code, status, `components.responses.${name}`);
  }
  const missing = [...catalogue.keys()].filter((c) => !documented.has(c));
  assert.deepEqual(missing, [], 'every code appears under a response');
});

void test('openapi.yaml has exactly the routes the ingest server registers', async () => {
  const api = yaml.load(await read('docs', 'openapi.yaml')) as OpenApi;
  const server = await read('ingest-node', 'src', 'http', 'server.ts');
  const registered = [...server.matchAll(/app\.(get|post|put|delete|patch)\('([^']+)'/g)]
    .map((m) => `${m[1]?.toUpperCase()} ${m[2]}`)
    .sort();
  const documented = Object.entries(api.paths)
    .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`))
    .sort();
  assert.ok(registered.length >= 5, registered.join(', '));
  assert.deepEqual(documented, registered);
});

/**
 * The Status schema with its $refs inlined and, for the test only, no field
 * beyond the documented ones (the published schema lets later versions add).
 */
function strictStatusSchema(api: OpenApi): Json {
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(walk);
    if (v === null || typeof v !== 'object') return v;
    const o = v as Json;
    const ref = o.$ref as string | undefined;
    if (ref !== undefined) {
      const target = api.components.schemas[ref.replace('#/components/schemas/', '')];
      assert.ok(target, `dangling ${ref}`);
      return walk(target);
    }
    const out: Json = Object.fromEntries(Object.entries(o).map(([k, x]) => [k, walk(x)]));
    if (o.properties !== undefined && typeof o.properties === 'object' && !('type' in o && o.type === 'null'))
      out.additionalProperties = false;
    return out;
  };
  return walk(api.components.schemas.Status) as Json;
}

void test('openapi.yaml Status is what a node serves on /v1/status (delivery, views, Parquet, auth)', async (t) => {
  const api = yaml.load(await read('docs', 'openapi.yaml')) as OpenApi;
  const schema = strictStatusSchema(api);
  const validate = new Ajv({ strict: true, allErrors: true, allowUnionTypes: true }).compile(schema);

  const dir = await mkdtemp(join(tmpdir(), 'landfall-status-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const keys = join(dir, 'keys');
  await writeFile(keys, 'writer ingest\nreader status\n');
  const views = join(dir, 'views');
  await mkdir(views);
  await writeFile(
    join(views, 'page-views.yaml'),
    'name: page_views\ncolumns:\n  - { name: event, type: VARCHAR, path: $.event, required: true }\n',
  );
  await writeFile(join(views, 'broken.yaml'), 'name: broken\ncolumns: [\n'); // refused: views.lastError
  const node = await startNode(
    defaultConfig(
      {
        listen: { host: '127.0.0.1', port: 0 },
        wal: { dir: join(dir, 'wal'), segmentAgeMsMax: 600_000 },
        auth: { apiKeysFile: keys },
        s3: { localDir: join(dir, 'bucket') },
        outputs: { rawParquet: true },
        views: { dir: views },
      },
      'status-0',
    ),
  );
  t.after(() => node.shutdown('test done'));
  const status = async (): Promise<Json> => {
    const res = await fetch(`${node.adminUrl}/v1/status`, { headers: { 'x-api-key': 'reader' } });
    assert.equal(res.status, 200);
    return (await res.json()) as Json;
  };
  const check = (body: Json, when: string): void => {
    assert.equal(validate(body), true, `${when}: ${JSON.stringify(validate.errors, null, 1)}`);
  };

  check(await status(), 'fresh');
  const res = await fetch(`${node.url}/v1/ingest`, {
    method: 'POST',
    headers: { 'x-api-key': 'writer', 'content-type': 'application/x-ndjson' },
    body: '{"event":"a"}\n{"other":1}\n',
  });
  assert.equal(res.status, 202, await res.text());
  const open = await status();
  check(open, 'open segment');
  await (node.wal as Wal).seal();
  await node.delivery?.pipeline.idle();
  const delivered = await status();
  check(delivered, 'delivered');
  // Every documented section and field is served (none is documented but absent).
  assert.deepEqual(Object.keys(delivered).sort(), Object.keys(schema.properties as Json).sort());
  const views0 = delivered.views as { loaded: unknown[]; lastError: unknown };
  assert.equal(views0.loaded.length, 1);
  assert.notEqual(views0.lastError, null, 'the broken file is reported');
  assert.equal((delivered.auth as Json).keys, 2);
  assert.equal((delivered.delivery as Json).segmentsDeliveredTotal, 1);
});

void test('the cert-manager Certificates name the Secrets and host the Ingress example uses', async () => {
  // The Certificate kind needs cert-manager's CRDs, which the test clusters lack: these files are
  // checked here for agreement with the Endpoint, not by the API server.
  const ep = yaml.load(await read('docs', 'examples', 'endpoint-ingress-tls.yaml')) as {
    metadata: { name: string };
    spec: {
      expose: { ingress: { host: string; tlsSecretName: string }; tls: { secretRef: { name: string } } };
    };
  };
  const certs = (
    yaml.loadAll(await read('docs', 'examples', 'cert-manager', 'certificate.yaml')) as Json[]
  ).map((d) => d as { kind: string; apiVersion: string; spec: { secretName: string; dnsNames: string[] } });
  assert.deepEqual(
    certs.map((c) => `${c.apiVersion} ${c.kind}`),
    ['cert-manager.io/v1 Certificate', 'cert-manager.io/v1 Certificate'],
  );
  const ingress = ep.spec.expose.ingress;
  assert.ok(
    certs.some((c) => c.spec.secretName === ingress.tlsSecretName && c.spec.dnsNames.includes(ingress.host)),
  );
  const service = `${ep.metadata.name}-ingest`;
  assert.ok(
    certs.some(
      (c) => c.spec.secretName === ep.spec.expose.tls.secretRef.name && c.spec.dnsNames.includes(service),
    ),
    'the nodes certificate names the client Service',
  );
});

void test('example Endpoints and Views are valid against the operator API', async () => {
  const files = (await readdir(examplesDir)).filter((f) => f.endsWith('.yaml'));
  const kinds: string[] = [];
  for (const f of files) {
    for (const doc of yaml.loadAll(await readFile(join(examplesDir, f), 'utf8')) as Json[]) {
      if (!doc) continue;
      const meta = doc.metadata as { name: string; namespace?: string };
      assert.equal(meta.namespace, undefined, `${f}: no namespace (applied with -n)`);
      kinds.push(String(doc.kind));
      if (doc.kind === 'Endpoint') {
        assert.ok(meta.name.length <= ENDPOINT_NAME_MAX, `${f}: name at most ${ENDPOINT_NAME_MAX}`);
        const spec = withEndpointDefaults(doc.spec);
        assert.deepEqual(endpointSpecErrors(spec), [], f);
        assert.ok(Value.Check(EndpointSpec, spec), f);
      } else if (doc.kind === 'View') {
        const spec = withViewDefaults(doc.spec);
        assert.ok(Value.Check(ViewSpec, spec), `${f}: ${JSON.stringify([...Value.Errors(ViewSpec, spec)])}`);
      }
    }
  }
  assert.deepEqual(
    [...new Set(kinds)].sort(),
    ['Endpoint', 'Secret', 'View'],
    'the examples cover the API-key Secret, Endpoints and a View',
  );
});

/** Metric names the code registers, with their types (histograms add _bucket/_sum/_count). */
async function registeredMetrics(): Promise<Set<string>> {
  const names = new Set<string>();
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith('.ts')) {
        for (const m of (await readFile(p, 'utf8')).matchAll(/'(landfall_[a-z0-9_]+)'/g))
          if (m[1] && !m[1].endsWith('_')) names.add(m[1]);
      }
    }
  };
  await walk(join(repoRoot, 'ingest-node', 'src'));
  await walk(join(repoRoot, 'operator', 'src'));
  return names;
}

const DEFAULT_METRICS = /^landfall_(operator_)?(process|nodejs)_/;
const base = (name: string): string => name.replace(/_(bucket|sum|count)$/, '');

void test('operations.md and the dashboard name only real metrics, and document all of them', async () => {
  const registered = await registeredMetrics();
  const known = (n: string): boolean =>
    registered.has(n) || registered.has(base(n)) || DEFAULT_METRICS.test(n) || n.endsWith('_*');
  const ops = await read('docs', 'operations.md');
  const dashboard = await read('docs', 'examples', 'grafana-dashboard.json');
  JSON.parse(dashboard);
  for (const [doc, text] of [
    ['operations.md', ops],
    ['grafana-dashboard.json', dashboard],
  ] as const) {
    const used = new Set([...text.matchAll(/\blandfall_[a-z0-9_]+\*?/g)].map((m) => m[0]));
    const unknown = [...used].filter((n) => !known(n) && n !== 'landfall_dev_endpoint');
    assert.deepEqual(unknown, [], `${doc} names metrics the code does not register`);
  }
  const documented = new Set([...ops.matchAll(/`(landfall_[a-z0-9_]+)/g)].map((m) => m[1]));
  const undocumented = [...registered].filter(
    (n) => !documented.has(n) && !documented.has(base(n)) && !n.startsWith('landfall_ingest_ack_seconds_'),
  );
  assert.deepEqual(undocumented, [], 'add these to the metrics tables of docs/operations.md');
});

void test('aws.md policies are valid JSON and grant only the documented S3 actions', async () => {
  const text = await read('docs', 'aws.md');
  const blocks = [...text.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => JSON.parse(m[1] ?? '') as Json);
  assert.ok(blocks.length >= 4, 'permission policy, IRSA trust, AssumeRole trust, base role policy');
  const actions = new Set<string>();
  for (const b of blocks)
    for (const s of b.Statement as { Action: string | string[] }[])
      for (const a of [s.Action].flat()) actions.add(a);
  const s3 = [...actions].filter((a) => a.startsWith('s3:')).sort();
  assert.deepEqual(s3, [
    's3:AbortMultipartUpload',
    's3:GetObject',
    's3:ListBucket',
    's3:ListBucketMultipartUploads',
    's3:PutObject',
  ]);
  for (const a of s3) assert.ok(text.includes(`| \`${a}\``), `${a} has a row saying which feature needs it`);
  // The S3 calls the store makes are the ones the table covers.
  const store = await read('ingest-node', 'src', 'store', 's3.ts');
  const commands = [...new Set([...store.matchAll(/new ([A-Za-z0-9]+)Command\(/g)].map((m) => m[1]))].sort();
  assert.deepEqual(commands, [
    'AbortMultipartUpload',
    'GetObject',
    'HeadObject',
    'ListMultipartUploads',
    'ListObjectsV2',
    'PutObject',
  ]);
});

void test('relative links in the install docs resolve', async () => {
  const files = [
    'docs/quickstart.md',
    'docs/aws.md',
    'docs/operations.md',
    'charts/landfall/README.md',
    'README.md',
  ];
  for (const f of files) {
    const text = await read(f);
    for (const m of text.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)) {
      const target = m[1] ?? '';
      if (/^[a-z]+:/.test(target)) continue;
      assert.ok(existsSync(resolve(dirname(join(repoRoot, f)), target)), `${f}: broken link ${target}`);
    }
  }
});
