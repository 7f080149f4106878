// The chart's generated files stay in step with their sources (no API server
// needed): Chart.yaml ← package.json version, values.yaml + values.schema.json
// ← scripts/gen-chart-values.ts, crds/ ← the repo's crds/. Fix drift with
// `npm run gen:crds && npm run gen:chart`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { Value } from '@sinclair/typebox/value';
import { repoRoot } from '../harness/index.ts';
import { chartDir, chartDrift, schemaDefaults } from '../../scripts/gen-chart.ts';
import { ChartValues } from '../../scripts/gen-chart-values.ts';

void test('generated chart files match their sources (npm run gen:chart)', async () => {
  assert.deepEqual(await chartDrift(), []);
});

void test('Chart.yaml version and appVersion are the repository version', async () => {
  const pkg = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  const chart = yaml.load(await readFile(join(chartDir, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
  assert.equal(chart.version, pkg.version);
  assert.equal(chart.appVersion, pkg.version);
});

void test('values.yaml is exactly the schema defaults, and valid against the schema', async () => {
  const values = yaml.load(await readFile(join(chartDir, 'values.yaml'), 'utf8'));
  assert.deepEqual(values, schemaDefaults(ChartValues));
  assert.ok(Value.Check(ChartValues, values), JSON.stringify([...Value.Errors(ChartValues, values)]));
  const schema = JSON.parse(await readFile(join(chartDir, 'values.schema.json'), 'utf8')) as {
    additionalProperties?: boolean;
  };
  assert.equal(schema.additionalProperties, false, 'unknown top-level values are refused');
});

void test('every declared value is used by a template (no dead values)', async () => {
  const dir = join(chartDir, 'templates');
  const text = (await Promise.all((await readdir(dir)).map((f) => readFile(join(dir, f), 'utf8')))).join(
    '\n',
  );
  // Leaf paths of the schema (records such as podLabels are leaves).
  type Node = { properties?: Record<string, Node> };
  const leaves = (node: Node, path: string[] = []): string[][] =>
    node.properties
      ? Object.entries(node.properties).flatMap(([k, child]) => leaves(child, [...path, k]))
      : [path];
  const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  for (const path of leaves(ChartValues as Node)) {
    if (path[0] === 'global') continue;
    // The path itself, or an ancestor passed whole (to toYaml or a helper).
    const used = path.some((_, i) =>
      new RegExp(`\\.Values\\.${escape(path.slice(0, i + 1).join('.'))}(?![\\w.])`).test(text),
    );
    assert.ok(used, `value ${path.join('.')} is not used by any template`);
  }
});
