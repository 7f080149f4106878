// `landfall iceberg compact`: usage errors exit 2 with the reason and the
// help, before anything is opened (the compaction itself runs against the
// real catalog in test/e2e/iceberg-compact.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { run } from '../src/commands/iceberg.ts';

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await run(args, { out: (t) => (out += t), err: (t) => (err += t), env: {} });
  return { code, out, err };
}

const base = ['compact', '--table=ns.t', '--catalog-uri=http://catalog.invalid', '--bucket=b'];

void test('--help exits 0 and names the flags', async () => {
  const r = await cli(['--help']);
  assert.equal(r.code, 0);
  for (const flag of ['--table', '--target-file-bytes', '--min-files', '--dry-run', '--json'])
    assert.ok(r.out.includes(flag), flag);
});

void test('usage errors exit 2 with the reason', async () => {
  const cases: [string[], RegExp][] = [
    [[], /missing subcommand: compact/],
    [['vacuum'], /unknown subcommand "vacuum"/],
    [['compact', '--catalog-uri=http://c', '--bucket=b'], /--table NAMESPACE\.TABLE/],
    [
      ['compact', '--table=nodot', '--catalog-uri=http://c', '--bucket=b'],
      /nodot: expected NAMESPACE\.TABLE/,
    ],
    [['compact', '--table=ns.t', '--bucket=b'], /--catalog-uri/],
    [['compact', '--table=ns.t', '--catalog-uri=http://c'], /--bucket is required/],
    [[...base, '--min-files=1'], /--min-files must be an integer ≥ 2/],
    [[...base, '--target-file-bytes=x'], /--target-file-bytes must be an integer/],
    [[...base, '--frobnicate'], /frobnicate/],
    // Catalog auth flags are the node's iceberg.auth block, checked by the same rules.
    [[...base, '--auth=kerberos'], /--auth must be one of none, bearer, oauth2, sigv4/],
    [[...base, '--auth=bearer'], /iceberg.auth.tokenFile is not set/],
    [[...base, '--auth=oauth2', '--client-id-file=/id'], /iceberg.auth.clientSecretFile is not set/],
    [[...base, '--token-file=/t'], /tokenFile is set but iceberg.auth.type is none/],
    [[...base, '--auth=sigv4', '--signing-name=glue'], /signingRegion is not set/],
  ];
  for (const [args, want] of cases) {
    const r = await cli(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.err, want, args.join(' '));
  }
});
