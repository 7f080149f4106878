// Smoke: the harness itself — clear errors for a missing bed, no orphaned
// servers however the test process ends, artifacts kept only on failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { scratchDir, startMinio, testbedBinary, waitFor, TestbedMissingError } from '../harness/index.ts';

const fixture = join(import.meta.dirname, 'fixtures', 'child-with-server.ts');

/** Alive means it exists and is not a zombie waiting for a reaper. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return false;
  }
}

async function accepts(port: number): Promise<boolean> {
  return new Promise((resolveOk) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolveOk(true);
    });
    s.once('error', () => resolveOk(false));
  });
}

interface ChildReport {
  port: number;
  pids: number[];
  runDir: string;
}

/** Start the fixture in its own node process and read its one-line report. */
async function startChild(mode: string) {
  const artifacts = scratchDir('child-artifacts');
  const child = spawn(process.execPath, [fixture, mode], {
    env: { ...process.env, TESTBED_ARTIFACTS: artifacts },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const lines = createInterface({ input: child.stdout });
  const [line] = (await Promise.race([
    once(lines, 'line'),
    exited.then(() => {
      throw new Error(`fixture exited before reporting: ${stderr}`);
    }),
  ])) as [string];
  const report = JSON.parse(line) as ChildReport;
  assert.ok(report.pids.length > 0);
  return { child, report, exited, artifacts, stderr: () => stderr };
}

void test('a missing binary throws an error that names npm run setup:testbed', async () => {
  const saved = process.env['TESTBED_CACHE'];
  process.env['TESTBED_CACHE'] = scratchDir('empty-cache');
  try {
    assert.throws(() => testbedBinary('kube-apiserver'), TestbedMissingError);
    assert.throws(() => testbedBinary('helm'), /npm run setup:testbed/);
    await assert.rejects(
      startMinio(),
      (e: Error) => e instanceof TestbedMissingError && /setup:testbed/.test(e.message),
    );
  } finally {
    if (saved === undefined) delete process.env['TESTBED_CACHE'];
    else process.env['TESTBED_CACHE'] = saved;
  }
});

void test('SIGKILL of the test process leaves no server running', async () => {
  const { child, report, exited } = await startChild('hold');
  for (const pid of report.pids) assert.ok(alive(pid), `server ${pid} should run while the child lives`);
  child.kill('SIGKILL');
  await exited;
  await waitFor(() => report.pids.every((pid) => !alive(pid)), {
    what: `servers ${report.pids.join(',')} to die after their test process was SIGKILLed`,
    timeoutMs: 5000,
  });
  assert.equal(await accepts(report.port), false, 'the broker port still accepts connections');
  // Killed without a chance to clean up: its artifacts stay, as evidence.
  assert.ok(existsSync(report.runDir));
});

void test('a passing process that forgot stop() still exits, reaps its server and deletes its artifacts', async () => {
  const { report, exited } = await startChild('exit0');
  const [code] = await exited;
  assert.equal(code, 0);
  await waitFor(() => report.pids.every((pid) => !alive(pid)), { what: 'servers to die', timeoutMs: 5000 });
  assert.equal(existsSync(report.runDir), false, `${report.runDir} should be deleted on success`);
});

void test('a failing process keeps its artifacts and prints where they are', async () => {
  const { report, exited, stderr } = await startChild('exit1');
  const [code] = await exited;
  assert.equal(code, 1);
  await waitFor(() => report.pids.every((pid) => !alive(pid)), { what: 'servers to die', timeoutMs: 5000 });
  assert.match(stderr(), new RegExp(`kept in ${report.runDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  assert.ok(readdirSync(report.runDir).some((f) => f.startsWith('mosquitto') && f.endsWith('.log')));
});
