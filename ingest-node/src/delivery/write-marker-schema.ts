// Regenerates docs/schemas/commit-marker.v1.json from the TypeBox schema in
// marker.ts (the one source). ingest-node/test/marker.test.ts fails when the
// checked-in file drifts from it.
//   node ingest-node/src/delivery/write-marker-schema.ts
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { commitMarkerJsonSchema } from './marker.ts';

export const markerSchemaPath = fileURLToPath(
  new URL('../../../docs/schemas/commit-marker.v1.json', import.meta.url),
);

if (import.meta.main) {
  const config = (await prettier.resolveConfig(markerSchemaPath)) ?? {};
  const text = await prettier.format(JSON.stringify(commitMarkerJsonSchema(), null, 2), {
    ...config,
    parser: 'json',
  });
  await writeFile(markerSchemaPath, text);
  console.log(`wrote ${markerSchemaPath}`);
}
