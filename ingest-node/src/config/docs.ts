// Renders docs/configuration.md from the schema, so the reference can never
// disagree with what the loader accepts. `node ingest-node/src/config/docs.ts --write`
// regenerates it; `--check` (and a test) fails when it is stale.

import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { TObject, TSchema } from '@sinclair/typebox';
import { NodeConfigSchema, configLeaves } from './schema.ts';
import type { ConfigLeaf } from './schema.ts';

export const CONFIG_DOC_PATH = fileURLToPath(new URL('../../../docs/configuration.md', import.meta.url));

function humanBytes(n: number): string {
  const units: Array<[number, string]> = [
    [1024 ** 3, 'GiB'],
    [1024 ** 2, 'MiB'],
    [1024, 'KiB'],
  ];
  for (const [size, unit] of units) if (n >= size && n % size === 0) return `${n / size} ${unit}`;
  return `${n} B`;
}

function humanMs(n: number): string {
  if (n >= 3_600_000 && n % 3_600_000 === 0) return `${n / 3_600_000} h`;
  if (n >= 60_000 && n % 60_000 === 0) return `${n / 60_000} min`;
  if (n >= 1000 && n % 1000 === 0) return `${n / 1000} s`;
  return `${n} ms`;
}

function typeOf(schema: TSchema): string {
  if (Array.isArray(schema.anyOf)) {
    return (schema.anyOf as TSchema[])
      .map((s) => (s.const === undefined ? typeOf(s) : `\`${String(s.const)}\``))
      .join(' \\| ');
  }
  const range: string[] = [];
  if (typeof schema.minimum === 'number') range.push(`≥ ${schema.minimum}`);
  if (typeof schema.maximum === 'number') range.push(`≤ ${schema.maximum}`);
  return String(schema.type) + (range.length > 0 ? ` (${range.join(', ')})` : '');
}

function defaultOf(leaf: ConfigLeaf): string {
  const d: unknown = leaf.schema.default;
  if (d === undefined) return leaf.optional ? '(unset)' : '';
  const name = leaf.path[leaf.path.length - 1] ?? '';
  if (typeof d === 'number' && /Bytes/.test(name) && d >= 1024) return `\`${d}\` (${humanBytes(d)})`;
  if (typeof d === 'number' && /Ms/.test(name) && d >= 1000) return `\`${d}\` (${humanMs(d)})`;
  return `\`${JSON.stringify(d)}\``;
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function table(leaves: readonly ConfigLeaf[]): string[] {
  const rows = ['| key | type | default | env | description |', '| --- | --- | --- | --- | --- |'];
  for (const leaf of leaves) {
    const description = typeof leaf.schema.description === 'string' ? leaf.schema.description : '';
    rows.push(
      `| \`${leaf.dotted}\` | ${typeOf(leaf.schema)} | ${defaultOf(leaf)} | \`${leaf.env}\` | ${cell(description)} |`,
    );
  }
  return rows;
}

export function renderConfigDocs(schema: TObject = NodeConfigSchema): string {
  const leaves = configLeaves(schema);
  const out: string[] = [
    '<!-- Generated from ingest-node/src/config/schema.ts by `node ingest-node/src/config/docs.ts --write`. Do not edit by hand: a test fails when this file drifts from the schema. -->',
    '',
    '# Configuration',
    '',
    'The ingest node reads one configuration, validated once at startup against one schema',
    '(`ingest-node/src/config/schema.ts`; the operator generates its CRD and Helm values schema from the same',
    'definitions). Sources are merged, each overriding the one before it:',
    '',
    '1. the defaults below;',
    '2. a config file, YAML or JSON (`--config FILE`, or `LANDFALL_CONFIG=FILE`);',
    '3. environment variables `LANDFALL_<BLOCK>_<KEY>` (the key in UPPER_SNAKE_CASE, listed below);',
    '4. command-line flags `--<block>.<key>=VALUE` (or `--<block>.<key> VALUE`; a boolean flag alone means true).',
    '',
    'Unknown keys are errors, wherever they come from (a file key, a `LANDFALL_…` variable, a flag), and the error',
    'names the key, its path and its source. Every problem is reported at once. Units are part of the names:',
    '`…Bytes` are bytes, `…Ms` milliseconds. Relative paths are relative to the working directory.',
    '',
    '```yaml',
    '# landfall.yaml',
    'listen: { host: 0.0.0.0, port: 8080 }',
    'auth: { apiKeysFile: /etc/landfall/keys }',
    'wal: { dir: /var/lib/landfall/wal, segmentBytesMax: 67108864, segmentAgeMsMax: 60000 }',
    'endpoint: { name: clicks }',
    'validation: json',
    '```',
    '',
    '```sh',
    'landfall serve --config landfall.yaml --listen.port=9090   # flags win over the file',
    'LANDFALL_LIMITS_BODY_BYTES_MAX=1048576 landfall serve       # so does env',
    '```',
    '',
  ];
  for (const [key, child] of Object.entries(schema.properties)) {
    const ofBlock = leaves.filter((l) => l.path[0] === key);
    out.push(`## \`${key}\``, '');
    if (typeof child.description === 'string') out.push(child.description, '');
    out.push(...table(ofBlock), '');
  }
  return out.join('\n');
}

if (import.meta.main) {
  const mode = process.argv[2] ?? '--check';
  const rendered = renderConfigDocs();
  if (mode === '--write') {
    writeFileSync(CONFIG_DOC_PATH, rendered);
    console.log(`wrote ${CONFIG_DOC_PATH}`);
  } else {
    let current = '';
    try {
      current = readFileSync(CONFIG_DOC_PATH, 'utf8');
    } catch {
      // A missing file is drift like any other.
    }
    if (current !== rendered) {
      console.error(`${CONFIG_DOC_PATH} is stale: run node ingest-node/src/config/docs.ts --write`);
      process.exitCode = 1;
    }
  }
}
