// Writes crds/*.yaml from the TypeBox API types. `--check` exits 1 when the
// checked-in files differ (CI and the drift test use it).
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { renderCrds } from '../src/api/crds.ts';

const crdDir = join(import.meta.dirname, '..', '..', 'crds');
const check = process.argv.includes('--check');
let drift = false;
for (const { file, text } of renderCrds()) {
  const path = join(crdDir, file);
  if (check) {
    const current = await readFile(path, 'utf8').catch(() => '');
    if (current !== text) {
      drift = true;
      console.error(`${path} is out of date: run npm run gen:crds`);
    }
  } else {
    await writeFile(path, text);
    console.log(`wrote ${path}`);
  }
}
if (drift) process.exitCode = 1;
