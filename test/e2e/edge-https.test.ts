// docs/edge.md "HTTPS with your own CA", run as written: its openssl block in a
// scratch folder, a node started with its `listen` block (paths pointed at the
// scratch folder, port 0), and its curl line against that node (the node's port
// for 8443, --resolve for the example name: the only edits).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import yaml from 'js-yaml';
import { repoRoot, scratchDir } from '../harness/index.ts';
import { startNode } from '../../ingest-node/src/node.ts';
import { defaultConfig } from '../../ingest-node/src/config/load.ts';

const doc = readFileSync(join(repoRoot, 'docs', 'edge.md'), 'utf8');
const section = doc.slice(doc.indexOf('## HTTPS with your own CA'), doc.indexOf('## Several brokers'));

function blocks(lang: string): string[] {
  const re = new RegExp('^```' + lang + '\\n([\\s\\S]*?)^```$', 'gm');
  return [...section.matchAll(re)].map((m) => m[1] ?? '');
}

// Asynchronous: the node answering curl runs in this process.
const bash = async (script: string, cwd: string, env: Record<string, string> = {}): Promise<string> =>
  (
    await promisify(execFile)('bash', ['-euo', 'pipefail', '-c', script], {
      cwd,
      env: { ...process.env, ...env },
      encoding: 'utf8',
      timeout: 60_000,
    })
  ).stdout;

void test('docs/edge.md: the openssl commands, the listen block and the curl line work as written', async (t) => {
  const [openssl = '', curl = ''] = blocks('sh');
  assert.ok(openssl.includes('openssl req -x509') && curl.startsWith('curl --cacert'), 'the two sh blocks');
  const listenYaml = blocks('yaml').find((b) => b.includes('tls: { certFile'));
  assert.ok(listenYaml, 'the listen block');

  const dir = scratchDir('edge-https');
  mkdirSync(dir, { recursive: true });
  await bash(openssl, dir);
  const leaf = await bash('openssl x509 -in box-1.crt -noout -ext subjectAltName,extendedKeyUsage', dir);
  assert.match(leaf, /DNS:box-1\.site-42\.lan, IP Address:192\.0\.2\.10/);
  assert.match(leaf, /TLS Web Server Authentication/);
  assert.match(await bash('openssl verify -CAfile site-ca.crt box-1.crt', dir), /box-1\.crt: OK/);

  const fromDoc = yaml.load(listenYaml.replaceAll('/etc/landfall/tls/', `${dir}/`)) as {
    listen: Record<string, unknown>;
    auth: Record<string, unknown>;
  };
  writeFileSync(join(dir, 'api-keys'), 'edge-producer-key ingest\n');
  const node = await startNode(
    defaultConfig({
      listen: { ...fromDoc.listen, port: 0 },
      auth: { ...fromDoc.auth, apiKeysFile: join(dir, 'api-keys') },
      wal: { dir: join(dir, 'wal') },
    }),
  );
  t.after(() => node.shutdown('test done'));
  const port = new URL(node.url).port;
  assert.equal(node.config.listen.host, '0.0.0.0');

  const asRun = `${curl.trim().replace(':8443/', `:${port}/`)} --resolve box-1.site-42.lan:${port}:127.0.0.1`;
  const answer = await bash(asRun, dir, { KEY: 'edge-producer-key' });
  assert.match(answer, /^\{"accepted":1,"firstSeq":"\d+","lastSeq":"\d+"\}$/);
  // Without --cacert the same line fails: the box's certificate is trusted only through the site CA.
  await assert.rejects(bash(asRun.replace('--cacert site-ca.crt ', ''), dir, { KEY: 'edge-producer-key' }));
});
