// The operator's command line, as a process: --help exits 0, a usage error
// exits 2 with one line on stderr, a runtime failure exits 1 with a JSON log line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const MAIN = join(import.meta.dirname, '..', 'src', 'main.ts');

function run(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [MAIN, ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: tmpdir() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    p.on('error', reject);
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

void test('--help prints the flags and exits 0', async () => {
  const r = await run(['--help']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^landfall-operator — /);
  assert.match(r.stdout, /--network-policy/);
  assert.match(r.stdout, /--watch-namespaces NS,/);
  assert.equal(r.stderr, '');
});

void test('usage errors exit 2 with a message naming the problem', async () => {
  for (const [args, message] of [
    [['--no-such-flag'], /Unknown option '--no-such-flag'/],
    [['--workers', 'many'], /--workers must be an integer, got "many"/],
    [['--log-level', 'loud'], /--log-level: unknown level loud/],
    [['stray-positional'], /positional/i],
    [['--network-policy'], /--network-policy needs --network-policy-operator-labels/],
    [['--watch-namespaces', 'team-a,Team_B'], /--watch-namespaces: "Team_B" is not a namespace name/],
  ] as const) {
    const r = await run([...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /See landfall-operator --help/);
    assert.equal(r.stdout, '', 'nothing started, nothing logged');
  }
});

void test('a runtime failure (no API server behind the kubeconfig) exits 1 as a JSON log line', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'landfall-operator-main-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  // A port that was free a moment ago: connections are refused.
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
  const kubeconfig = join(dir, 'kubeconfig');
  await writeFile(
    kubeconfig,
    `apiVersion: v1
kind: Config
clusters: [{ name: c, cluster: { server: "https://127.0.0.1:${port}", insecure-skip-tls-verify: true } }]
users: [{ name: u, user: { token: t } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
current-context: x
`,
  );
  const r = await run(['--kubeconfig', kubeconfig, '--crd-check-timeout-ms', '0', '--metrics-port=-1']);
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const last = lines.at(-1)!;
  assert.equal(last.level, 'error');
  assert.equal(last.msg, 'landfall-operator failed');
  assert.equal(last.component, 'landfall-operator');
  const err = last.err as { message: string; stack: string };
  assert.match(`${err.message} ${JSON.stringify(err)}`, /ECONNREFUSED|connect/i);
  assert.match(err.stack, /\n\s+at /);
});
