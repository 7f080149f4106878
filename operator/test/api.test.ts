import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { renderCrds, toStructural } from '../src/api/crds.ts';
import { EndpointSpec, endpointSpecErrors, withEndpointDefaults } from '../src/api/endpoint.ts';
import { viewOutputName, withViewDefaults } from '../src/api/view.ts';

const crdDir = join(import.meta.dirname, '..', '..', 'crds');

void test('checked-in CRDs match the TypeScript API types (run `npm run gen:crds` when this fails)', async () => {
  for (const { file, text } of renderCrds()) {
    const current = await readFile(join(crdDir, file), 'utf8');
    assert.equal(current, text, `crds/${file} drifted from operator/src/api`);
  }
});

void test('generated CRDs are structural: no TypeBox-only keywords left', () => {
  for (const { text } of renderCrds()) {
    const forbidden = /\b(const|\$id|patternProperties|additionalProperties: false)\b/;
    assert.doesNotMatch(text, forbidden);
    const doc = yaml.load(text) as {
      spec: { names: { kind: string }; versions: { subresources: unknown }[] };
    };
    assert.deepEqual(
      doc.spec.versions[0]?.subresources,
      doc.spec.names.kind === 'Endpoint'
        ? {
            status: {},
            // kubectl scale and HorizontalPodAutoscalers; the operator fills status.selector.
            scale: {
              specReplicasPath: '.spec.replicas',
              statusReplicasPath: '.status.replicas',
              labelSelectorPath: '.status.selector',
            },
          }
        : { status: {} },
    );
  }
});

void test('string unions become enums, defaulted fields are not required', () => {
  const s = toStructural({
    type: 'object',
    required: ['a', 'b'],
    properties: {
      a: {
        anyOf: [
          { const: 'x', type: 'string' },
          { const: 'y', type: 'string' },
        ],
        default: 'x',
      },
      b: { type: 'string' },
    },
  });
  assert.deepEqual(s, {
    type: 'object',
    required: ['b'],
    properties: { a: { type: 'string', enum: ['x', 'y'], default: 'x' }, b: { type: 'string' } },
  });
});

void test('object defaults spell out their fields (the apiserver validates a default without nested defaulting)', () => {
  const check = (schema: Record<string, unknown>, path: string): void => {
    const props = schema.properties as Record<string, Record<string, unknown>> | undefined;
    const d = schema.default as Record<string, unknown> | undefined;
    if (props && d && typeof d === 'object') {
      for (const [k, child] of Object.entries(props)) {
        if (child.default !== undefined)
          assert.deepEqual(d[k], child.default, `${path}.${k}: parent default disagrees`);
      }
    }
    for (const [k, child] of Object.entries(props ?? {})) check(child, `${path}.${k}`);
  };
  check(EndpointSpec, 'spec');
});

void test('endpoint defaults match the CRD defaults and fill nested objects', () => {
  const spec = withEndpointDefaults({ s3: { bucket: 'b-1' }, apiKeySecretRef: { name: 'keys' } });
  assert.equal(spec.replicas, 1);
  assert.equal(spec.s3.region, 'us-east-1');
  assert.equal(spec.s3.forcePathStyle, false);
  assert.deepEqual(spec.segmentPolicy, { segmentBytesMax: 524288, segmentAgeMsMax: 60000 });
  assert.deepEqual(spec.outputs, { segments: true, rawParquet: false });
  assert.equal(spec.storage.size, '10Gi');
  assert.equal(spec.validation, 'none');
  assert.equal(spec.limits.bodyBytesMax, 10485760);
  assert.deepEqual(endpointSpecErrors(spec), []);
});

void test('resources default only when absent, as the apiserver does it', () => {
  const base = { s3: { bucket: 'b-1' }, apiKeySecretRef: { name: 'keys' } };
  assert.deepEqual(withEndpointDefaults(base).resources, {
    requests: { cpu: '250m', memory: '512Mi' },
    limits: { memory: '1Gi' },
  });
  assert.deepEqual(withEndpointDefaults({ ...base, resources: { requests: { cpu: '1' } } }).resources, {
    requests: { cpu: '1' },
  });
  assert.deepEqual(withEndpointDefaults({ ...base, resources: {} }).resources, {});
});

void test('endpointSpecErrors names the bad field', () => {
  const spec = withEndpointDefaults({
    s3: { bucket: 'b-1' },
    apiKeySecretRef: { name: 'keys' },
    replicas: -1,
  });
  const errors = endpointSpecErrors(spec);
  assert.ok(
    errors.some((e) => e.startsWith('spec.replicas')),
    errors.join('\n'),
  );
});

void test('view defaults and output name', () => {
  const spec = withViewDefaults({
    endpointRef: { name: 'e' },
    columns: [{ name: 'a', type: 'VARCHAR', path: '$.a' }],
  });
  assert.equal(spec.source, 'payload');
  assert.equal(spec.columns[0]?.required, false);
  assert.equal(viewOutputName({ metadata: { name: 'page-views' }, spec }), 'page_views');
  assert.equal(viewOutputName({ metadata: { name: 'x' }, spec: { ...spec, name: 'pv' } }), 'pv');
});
