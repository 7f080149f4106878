// Checked-in expected output for the pure builders. `UPDATE_SNAPSHOTS=1 node
// --test operator/test/*.test.ts` rewrites them; review the diff like code.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';

const dir = join(import.meta.dirname, 'snapshots');
export const updating = process.env.UPDATE_SNAPSHOTS === '1';

export function matchSnapshot(name: string, docs: readonly unknown[]): void {
  const text = docs.map((d) => yaml.dump(d, { lineWidth: 120, noRefs: true, sortKeys: true })).join('---\n');
  const file = join(dir, `${name}.yaml`);
  if (updating) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(file, text);
    return;
  }
  let expected: string;
  try {
    expected = readFileSync(file, 'utf8');
  } catch {
    assert.fail(`no snapshot ${file}: run with UPDATE_SNAPSHOTS=1 and review it`);
  }
  assert.equal(text, expected, `${file} differs (UPDATE_SNAPSHOTS=1 to accept)`);
}
