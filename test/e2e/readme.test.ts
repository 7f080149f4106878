// The README's shell blocks, run as a newcomer runs them: in a fresh working
// directory, with the machine's own `node` (20 here, not the repo's 24) first
// on PATH, after `npm ci`. A command that only works with the repo's Node on
// PATH (`node ingest-node/src/cli.ts …` fails on 20 with
// ERR_UNKNOWN_FILE_EXTENSION) fails this test.
//
// Every ```sh block is either run here or named in NOT_RUN with the reason,
// so a new block cannot slip past unchecked.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, scratchDir, startProcess, waitFor } from '../harness/proc.ts';
import type { ServerProcess } from '../harness/proc.ts';

/** A login shell's PATH: the machine's node first, the repo's node_modules/.bin absent. */
const USER_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const NOT_RUN: ReadonlyMap<string, string> = new Map([
  ['npm ci && npm run setup:testbed && npm test', 'it is this test suite'],
]);

function shellBlocks(markdown: string): string[] {
  const blocks: string[] = [];
  const re = /^```sh\n([\s\S]*?)^```$/gm;
  for (let m = re.exec(markdown); m !== null; m = re.exec(markdown)) blocks.push(m[1]!.trim());
  return blocks;
}

const blocks = shellBlocks(readFileSync(join(repoRoot, 'README.md'), 'utf8'));
const startBlock = blocks.find((b) => b.endsWith('npm start'));
const sendBlock = blocks.find((b) => b.startsWith('curl ') && b.includes('/v1/ingest'));
const readBlock = blocks.find((b) => b.includes(' commits --endpoint-name'));

/** A fresh working directory that shares the repo's sources and its installed node_modules. */
function sandbox(): string {
  const dir = scratchDir('readme');
  mkdirSync(dir, { recursive: true });
  for (const entry of [
    'package.json',
    'package-lock.json',
    'node_modules',
    'ingest-node',
    'operator',
    'test',
    'docs',
  ]) {
    symlinkSync(join(repoRoot, entry), join(dir, entry));
  }
  return dir;
}

function sh(script: string, cwd: string): string {
  return execFileSync('bash', ['-euo', 'pipefail', '-c', script], {
    cwd,
    env: { ...process.env, PATH: USER_PATH },
    encoding: 'utf8',
    timeout: 60_000,
  });
}

let dir: string;
let node: ServerProcess | undefined;

before(() => {
  dir = sandbox();
});

after(async () => {
  if (node === undefined || !node.running()) return;
  // npm start is npm → sh → node: the whole process group goes.
  try {
    process.kill(-node.pid, 'SIGTERM');
  } catch {
    // already gone
  }
  await Promise.race([node.exited, new Promise((r) => setTimeout(r, 5000))]);
  try {
    process.kill(-node.pid, 'SIGKILL');
  } catch {
    // gone
  }
});

void test('every README shell block is run here or named with the reason it is not', () => {
  assert.ok(blocks.length >= 4, `found ${blocks.length} sh blocks`);
  for (const b of blocks) {
    const known = b === startBlock || b === sendBlock || b === readBlock || NOT_RUN.has(b);
    assert.ok(known, `README block neither run nor listed in NOT_RUN:\n${b}`);
  }
});

void test('the README runs as written with the machine’s own node first on PATH', async () => {
  const machineNode = sh('command -v node && node --version', dir);
  // The point of the test: whatever `node` a newcomer has, the commands work.
  // (On this machine kind it is Node 20; the repo's Node 24 is only on npm's PATH.)
  process.stdout.write(`# machine node: ${machineNode.replace('\n', ' ')}`);

  assert.ok(startBlock !== undefined && sendBlock !== undefined && readBlock !== undefined);
  // "after npm ci": the sandbox shares the installed node_modules.
  const start = startBlock.replace(/^npm ci && /, '');
  assert.equal(start, 'npm start');
  // setsid: npm start is a process tree; the watchdog (fd 4 is the supervisor's
  // pipe) and after() kill the whole group, so no node outlives the test.
  node = startProcess({
    name: 'readme-npm-start',
    command: 'setsid',
    args: ['bash', '-c', `{ while read -r _ <&4; do :; done; kill -9 -- -$$; } 2>/dev/null & exec ${start}`],
    cwd: dir,
    env: { PATH: USER_PATH },
  });
  const proc = node;
  await waitFor(
    async () => {
      try {
        return (await fetch('http://127.0.0.1:8080/readyz')).ok;
      } catch {
        return false;
      }
    },
    { what: 'npm start to listen on 127.0.0.1:8080', timeoutMs: 60_000, intervalMs: 100, process: proc },
  );

  const sent = sh(sendBlock, dir);
  const body = JSON.parse(sent) as { accepted: number; firstSeq: string; lastSeq: string };
  assert.deepEqual(body, { accepted: 2, firstSeq: '1', lastSeq: '2' });

  // "About ten seconds later the segment is delivered."
  const commits = join(dir, 'data', 'bucket');
  await waitFor(
    () => {
      if (!existsSync(commits)) return false;
      const found = sh(`find data/bucket -name '*.json' -path '*commits*'`, dir);
      return found.trim().length > 0;
    },
    { what: 'a commit marker in data/bucket', timeoutMs: 40_000, intervalMs: 250, process: proc },
  );

  const out = sh(readBlock, dir).split('\n');
  const markers = out.filter((l) => l.startsWith('data/bucket/') && l.endsWith('.json'));
  assert.equal(markers.length, 1, out.join('\n'));
  const keys = out.filter((l) => /^commits\/|\/commits\//.test(l) && !l.startsWith('data/'));
  assert.equal(keys.length, 1, `one key from landfall commits:\n${out.join('\n')}`);
  assert.ok(out.includes('{"event":"page_view","user":"u1"}'), out.join('\n'));
  assert.ok(out.includes('{"event":"click","user":"u2"}'), out.join('\n'));
  assert.ok(readdirSync(join(dir, 'data', 'wal')).length > 0);
});
