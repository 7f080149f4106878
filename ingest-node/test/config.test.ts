// The config loader: one schema, sources merged defaults < file < env < flags,
// unknown keys rejected with their path and source, cross-key rules, and the
// generated reference kept in step with the schema.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ConfigError,
  defaultConfig,
  instanceIdFromHostname,
  isLoopbackHost,
  loadConfig,
} from '../src/config/load.ts';
import { NodeConfigSchema, adminPortOf, configBlocks, configLeaves } from '../src/config/schema.ts';
import { CONFIG_DOC_PATH, renderConfigDocs } from '../src/config/docs.ts';

function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  assert.fail('expected a ConfigError');
}

void describe('config', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'landfall-config-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const file = async (name: string, text: string): Promise<string> => {
    const path = join(dir, name);
    await writeFile(path, text);
    return path;
  };

  void it('defaults alone are a valid config: loopback, ./data, auth off, validation none', () => {
    const c = loadConfig({ hostname: 'pod-0' });
    assert.equal(c.listen.host, '127.0.0.1');
    assert.equal(c.listen.port, 8080);
    assert.equal(c.wal.dir, './data');
    assert.equal(c.auth.apiKeysFile, undefined);
    assert.equal(c.validation, 'none');
    assert.equal(c.instance.id, 'pod-0');
    assert.equal(c.endpoint.name, 'default');
    assert.ok(c.backpressure.walBytesLow < c.backpressure.walBytesHigh);
    assert.ok(c.backpressure.diskFreeBytesLow < c.backpressure.diskFreeBytesHigh);
  });

  void it('a YAML file sets keys; a JSON file too', async () => {
    const y = await file(
      'a.yaml',
      'listen:\n  port: 9000\nwal: { dir: /var/wal, segmentBytesMax: 1048576 }\nvalidation: json\n',
    );
    const c = loadConfig({ configFile: y });
    assert.equal(c.listen.port, 9000);
    assert.equal(c.wal.dir, '/var/wal');
    assert.equal(c.wal.segmentBytesMax, 1048576);
    assert.equal(c.wal.segmentAgeMsMax, 60_000, 'unset keys of a set block keep their defaults');
    assert.equal(c.validation, 'json');
    const j = await file('a.json', JSON.stringify({ endpoint: { name: 'clicks' } }));
    assert.equal(loadConfig({ configFile: j }).endpoint.name, 'clicks');
  });

  void it('an unknown key is rejected with its path, its source and the allowed keys', async () => {
    const y = await file('typo.yaml', 'wal:\n  dirr: /x\nlimits:\n  bodyBytesMax: 10\n');
    const problems = problemsOf(() => loadConfig({ configFile: y }));
    assert.equal(problems.length, 1);
    assert.match(problems[0] ?? '', /unknown key "wal\.dirr" in config file .*typo\.yaml/);
    assert.match(problems[0] ?? '', /allowed under wal: dir, segmentBytesMax, segmentAgeMsMax/);
  });

  void it('wal.segmentAgeMsMax is at most 7 days (a segment spans one raw Parquet date file per day it lives)', () => {
    const week = 7 * 24 * 3600_000;
    assert.equal(loadConfig({ args: [`--wal.segmentAgeMsMax=${week}`] }).wal.segmentAgeMsMax, week);
    const problems = problemsOf(() => loadConfig({ args: [`--wal.segmentAgeMsMax=${week + 1}`] }));
    assert.ok(
      problems.some((p) => /^wal\.segmentAgeMsMax \(from flag --wal\.segmentAgeMsMax\)/.test(p)),
      problems.join('\n'),
    );
  });

  void it('unknown top-level blocks, env vars and flags are rejected too, all reported at once', async () => {
    const y = await file('top.yaml', 'walz: {}\n');
    const problems = problemsOf(() =>
      loadConfig({
        configFile: y,
        env: { LANDFALL_WAL_DIRR: 'x', LANDFALL_WAL_DIR: '/ok' },
        args: ['--listen.prot=1'],
      }),
    );
    assert.equal(problems.length, 3, problems.join('\n'));
    assert.ok(problems.some((p) => /unknown flag --listen\.prot/.test(p)));
    assert.ok(problems.some((p) => /unknown key "walz"/.test(p)));
    assert.ok(problems.some((p) => /unknown environment variable LANDFALL_WAL_DIRR/.test(p)));
  });

  void it('precedence: defaults < file < values in code < env < flags', async () => {
    const y = await file('p.yaml', 'listen: { port: 1001 }\nwal: { dir: /from-file }\n');
    const env = { LANDFALL_LISTEN_PORT: '1002' };
    assert.equal(loadConfig({ configFile: y }).listen.port, 1001);
    assert.equal(loadConfig({ configFile: y, values: { listen: { port: 1005 } } }).listen.port, 1005);
    assert.equal(loadConfig({ configFile: y, values: { listen: { port: 1005 } }, env }).listen.port, 1002);
    const c = loadConfig({ configFile: y, env, args: ['--listen.port', '1003'] });
    assert.equal(c.listen.port, 1003);
    assert.equal(c.wal.dir, '/from-file', 'a flag for one key leaves the rest of the block alone');
    assert.equal(loadConfig({ configFile: y, env, args: ['--listen.port=1004'] }).listen.port, 1004);
  });

  void it('--config beats LANDFALL_CONFIG, which beats the configFile option', async () => {
    const a = await file('ca.yaml', 'listen: { port: 2001 }\n');
    const b = await file('cb.yaml', 'listen: { port: 2002 }\n');
    const c = await file('cc.yaml', 'listen: { port: 2003 }\n');
    assert.equal(loadConfig({ configFile: a }).listen.port, 2001);
    assert.equal(loadConfig({ configFile: a, env: { LANDFALL_CONFIG: b } }).listen.port, 2002);
    assert.equal(
      loadConfig({ configFile: a, env: { LANDFALL_CONFIG: b }, args: ['--config', c] }).listen.port,
      2003,
    );
  });

  void it('env and flag strings are coerced to the key type; bad values name key and source', () => {
    const c = loadConfig({
      env: {
        LANDFALL_LIMITS_BODY_BYTES_MAX: '1024',
        LANDFALL_AUTH_REQUIRED: 'false',
        LANDFALL_VALIDATION: 'json',
      },
    });
    assert.equal(c.limits.bodyBytesMax, 1024);
    assert.equal(c.auth.required, false);
    assert.equal(c.validation, 'json');
    const problems = problemsOf(() =>
      loadConfig({ env: { LANDFALL_LISTEN_PORT: 'eighty' }, args: ['--validation=yaml'] }),
    );
    assert.ok(
      problems.some((p) => /^listen\.port \(from env LANDFALL_LISTEN_PORT\): Expected integer/.test(p)),
      problems.join('\n'),
    );
    assert.ok(
      problems.some((p) => /^validation \(from flag --validation\)/.test(p)),
      problems.join('\n'),
    );
  });

  void it('a boolean flag alone means true', () => {
    const c = loadConfig({ args: ['--auth.required', '--auth.apiKeysFile', '/keys'] });
    assert.equal(c.auth.required, true);
    assert.equal(c.auth.apiKeysFile, '/keys');
  });

  void it('range checks come from the schema', () => {
    const problems = problemsOf(() =>
      loadConfig({ values: { listen: { port: 70000 }, wal: { segmentBytesMax: 10 } } }),
    );
    assert.ok(problems.some((p) => p.startsWith('listen.port (from values given in code)')));
    assert.ok(problems.some((p) => p.startsWith('wal.segmentBytesMax')));
  });

  void it('cross-key rules: watermarks ordered, timeouts ordered, limits consistent', () => {
    const problems = problemsOf(() =>
      loadConfig({
        values: {
          backpressure: { walBytesHigh: 10, walBytesLow: 20, diskFreeBytesLow: 20, diskFreeBytesHigh: 10 },
          http: { headersTimeoutMs: 5000, requestTimeoutMs: 2000 },
          limits: { decodedBytesMax: 2000, inflightBytesMax: 1000 },
        },
      }),
    );
    assert.equal(problems.length, 4, problems.join('\n'));
  });

  void it('the largest legal request (decoded bytes + per-record overhead) must fit the in-flight budget', () => {
    // 1,000 bytes + 10 records × 128 = 2,280 > 2,000: such a request would be refused for ever.
    const problems = problemsOf(() =>
      loadConfig({
        values: { limits: { decodedBytesMax: 1000, recordsPerRequestMax: 10, inflightBytesMax: 2000 } },
      }),
    );
    assert.equal(problems.length, 1, problems.join('\n'));
    assert.match(problems[0] ?? '', /= 2280 must not exceed limits.inflightBytesMax \(2000\)/);
    const fits = loadConfig({
      values: { limits: { decodedBytesMax: 1000, recordsPerRequestMax: 10, inflightBytesMax: 2280 } },
    });
    assert.equal(fits.limits.inflightBytesMax, 2280);
    // The defaults fit: 32 MiB + 100,000 × 128 ≤ 256 MiB.
    assert.equal(loadConfig({}).limits.inflightBytesMax, 256 * 1024 * 1024);
  });

  void it('auth: a non-loopback host needs keys unless auth.required is false; required needs a file', () => {
    const open = problemsOf(() => loadConfig({ values: { listen: { host: '0.0.0.0' } } }));
    assert.match(open[0] ?? '', /not a loopback address, so API keys are required/);
    assert.equal(
      loadConfig({ values: { listen: { host: '0.0.0.0' }, auth: { required: false } } }).auth.required,
      false,
    );
    assert.equal(
      loadConfig({ values: { listen: { host: '0.0.0.0' }, auth: { apiKeysFile: '/k' } } }).auth.apiKeysFile,
      '/k',
    );
    assert.match(
      problemsOf(() => loadConfig({ values: { auth: { required: true } } }))[0] ?? '',
      /auth.apiKeysFile is not set/,
    );
    // The admin port (/v1/drain, /v1/status) alone open to the network needs keys too.
    const admin = problemsOf(() => loadConfig({ values: { listen: { admin: { host: '0.0.0.0' } } } }));
    assert.match(admin[0] ?? '', /listen.admin.host "0.0.0.0" is not a loopback address/);
    assert.equal(
      loadConfig({ values: { listen: { admin: { host: '0.0.0.0' } }, auth: { apiKeysFile: '/k' } } }).listen
        .admin.host,
      '0.0.0.0',
    );
  });

  void it('file problems: unreadable, not YAML, not a mapping', async () => {
    assert.match(
      problemsOf(() => loadConfig({ configFile: join(dir, 'missing.yaml') }))[0] ?? '',
      /cannot read config file/,
    );
    const bad = await file('bad.yaml', 'listen: [\n');
    assert.match(problemsOf(() => loadConfig({ configFile: bad }))[0] ?? '', /is not valid YAML/);
    const list = await file('list.yaml', '- a\n- b\n');
    assert.match(problemsOf(() => loadConfig({ configFile: list }))[0] ?? '', /mapping/);
    const empty = await file('empty.yaml', '');
    assert.equal(loadConfig({ configFile: empty }).listen.port, 8080);
  });

  void it('instance.id defaults to a sanitized host name; names are S3-safe', () => {
    assert.equal(instanceIdFromHostname('Clicks-Ingest-0'), 'clicks-ingest-0');
    assert.equal(instanceIdFromHostname('my host!.local'), 'my-host-.local');
    assert.equal(instanceIdFromHostname('---'), 'node');
    assert.ok(problemsOf(() => loadConfig({ values: { endpoint: { name: 'Bad/Name' } } })).length > 0);
  });

  void it('isLoopbackHost', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '::1', '[::1]']) assert.ok(isLoopbackHost(h), h);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', 'example.com']) assert.ok(!isLoopbackHost(h), h);
  });

  void it('listen.admin: loopback, listen.port + 1 unless set (a free one with listen.port 0), never listen.port', () => {
    const d = loadConfig({});
    assert.deepEqual([d.listen.admin.host, adminPortOf(d.listen)], ['127.0.0.1', 8081]);
    assert.equal(adminPortOf(loadConfig({ values: { listen: { port: 9000 } } }).listen), 9001);
    assert.equal(adminPortOf(loadConfig({ values: { listen: { port: 0 } } }).listen), 0);
    assert.equal(adminPortOf(loadConfig({ values: { listen: { admin: { port: 9100 } } } }).listen), 9100);
    assert.match(
      problemsOf(() => loadConfig({ values: { listen: { port: 9000, admin: { port: 9000 } } } })).join('\n'),
      /listen\.admin\.port 9000 is listen\.port too/,
    );
    assert.ok(problemsOf(() => loadConfig({ values: { listen: { port: 65535 } } })).length > 0);
  });

  void it('defaultConfig(overrides) is the test/embedding shortcut', () => {
    assert.equal(defaultConfig({ listen: { port: 0 } }).listen.port, 0);
  });
});

void describe('config schema', () => {
  void it('is one closed TypeBox object per block (the operator generates its CRD from these)', () => {
    for (const [name, block] of Object.entries(configBlocks)) {
      assert.equal(block.type, 'object', name);
      assert.equal(block.additionalProperties, false, name);
      assert.equal(NodeConfigSchema.properties[name as keyof typeof configBlocks], block);
    }
    assert.equal(NodeConfigSchema.additionalProperties, false);
  });

  void it('env names are LANDFALL_<BLOCK>_<KEY> in UPPER_SNAKE_CASE, and every leaf is described', () => {
    const byPath = new Map(configLeaves().map((l) => [l.dotted, l]));
    assert.equal(byPath.get('wal.segmentBytesMax')?.env, 'LANDFALL_WAL_SEGMENT_BYTES_MAX');
    assert.equal(
      byPath.get('backpressure.diskFreeBytesLow')?.env,
      'LANDFALL_BACKPRESSURE_DISK_FREE_BYTES_LOW',
    );
    assert.equal(byPath.get('validation')?.env, 'LANDFALL_VALIDATION');
    for (const leaf of configLeaves()) assert.ok(typeof leaf.schema.description === 'string', leaf.dotted);
  });

  void it('docs/configuration.md is generated from the schema and up to date', () => {
    const current = readFileSync(CONFIG_DOC_PATH, 'utf8');
    assert.equal(current, renderConfigDocs(), 'stale: run node ingest-node/src/config/docs.ts --write');
  });
});
