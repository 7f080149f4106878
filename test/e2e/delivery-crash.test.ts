// SIGKILL under load, again and again. A child process runs the WAL and the
// delivery pipeline against a real MinIO with tiny segments (a seal every
// few appends) and an append loop that prints every acknowledged batch. The
// parent kills it at varied points: right after a pipeline step is reported
// (started, produced = compressed, uploaded, committing, committed = marker
// written, delivered = locally marked, deleted) or at a random time (mid
// append, mid seal), then starts it again on the same WAL directory. After
// the last kill a final run drains the backlog, and then:
//   - every acknowledged record is in a committed segment, with its seq;
//   - committed seqs are exactly 1..N: nothing lost, nothing delivered twice;
//   - every marker's artifacts exist with its size and SHA-256 (verify --deep):
//     no segment key holds an object other than the one its marker describes;
//   - every archive in the bucket has a marker (no orphan from a half-done
//     attempt) and the WAL directory holds nothing undelivered, nothing quarantined.
//
// This file is also the child: run with DELIVERY_CRASH_CHILD set, it
// is the node under test instead of the test.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { scratchDir, startMinio, waitFor, type MinioServer } from '../harness/index.ts';
import { systemClock } from '../../ingest-node/src/clock.ts';
import { NodeFileSystem } from '../../ingest-node/src/fs/node.ts';
import { silentLogger } from '../../ingest-node/src/log.ts';
import { run as commits } from '../../ingest-node/src/commands/commits.ts';
import { run as expand } from '../../ingest-node/src/commands/expand.ts';
import { run as verify } from '../../ingest-node/src/commands/verify.ts';
import type { CommandIo } from '../../ingest-node/src/commands/common.ts';
import { startPipeline } from '../../ingest-node/src/delivery/pipeline.ts';
import { openObjectStore } from '../../ingest-node/src/store/index.ts';
import { openWal } from '../../ingest-node/src/wal/wal.ts';
import { RecordFormat } from '../../ingest-node/src/wal/types.ts';

interface ChildConfig {
  readonly dir: string;
  readonly run: number;
  readonly bucket: string;
  readonly endpointUrl: string;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

const endpoint = 'orders';
const instance = 'orders-0';
const prefix = 'lf/crash';
/** Small segments: a seal every few appends, so kills land in every step. */
const segmentBytesMax = 16 * 1024;
const childEnv = 'DELIVERY_CRASH_CHILD';

function payload(run: number, batch: number, i: number): string {
  return `{"run":${run},"batch":${batch},"i":${i},"pad":"${'x'.repeat(40 + ((batch * 7 + i) % 50))}"}`;
}

async function openNode(cfg: ChildConfig, onEvent?: (line: string) => void) {
  const wal = await openWal({
    dir: path.join(cfg.dir, 'wal'),
    endpoint,
    instance,
    fs: new NodeFileSystem(),
    clock: systemClock,
    log: silentLogger,
    segmentBytesMax,
    segmentAgeMsMax: 3_600_000,
  });
  const opened = openObjectStore({
    kind: 's3',
    bucket: cfg.bucket,
    region: cfg.region,
    endpoint: cfg.endpointUrl,
    forcePathStyle: true,
    credentials: { mode: 'static', accessKeyId: cfg.accessKeyId, secretAccessKey: cfg.secretAccessKey },
  });
  const pipeline = await startPipeline({
    wal,
    store: opened.store,
    prefix,
    endpoint,
    instance,
    scratchDir: path.join(cfg.dir, 'scratch'),
    retry: { attemptsMax: 4, retryDelayMsBase: 50, retryDelayMsMax: 500 },
    segmentRetryDelayMsMax: 1_000,
    ...(onEvent !== undefined ? { onEvent: (e) => onEvent(`ev ${e.type} ${e.segmentId}`) } : {}),
  });
  return { wal, pipeline, close: () => opened.close() };
}

/** The child: WAL + pipeline + an append loop that reports every acknowledged batch. */
async function child(cfg: ChildConfig): Promise<void> {
  // Pipes to the parent are synchronous on Linux: a line written is readable after a SIGKILL.
  const say = (line: string): void => void process.stdout.write(`${line}\n`);
  const node = await openNode(cfg, say);
  say('ready');
  for (let batch = 0; ; batch++) {
    const payloads = Array.from({ length: 10 }, (_, i) => payload(cfg.run, batch, i));
    const r = await node.wal.append(
      payloads.map((p) => Buffer.from(p)),
      RecordFormat.ndjson,
    );
    say(`ack ${r.firstSeq} ${r.count} ${batch}`);
    await new Promise((res) => setTimeout(res, 1));
  }
}

const childConfigText = process.env[childEnv];
if (childConfigText !== undefined) {
  child(JSON.parse(childConfigText) as ChildConfig).catch((err: unknown) => {
    process.stderr.write(
      `child failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(3);
  });
} else {
  let minio: MinioServer;
  const children = new Set<ChildProcess>();
  before(async () => {
    minio = await startMinio();
  });
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await minio?.stop();
  });

  async function cli(
    fn: (args: readonly string[], io: CommandIo) => Promise<number>,
    args: string[],
    bucket: string,
  ) {
    const chunks: Buffer[] = [];
    let out = '';
    let err = '';
    const code = await fn([...args, '--bucket', bucket, '--prefix', prefix, '--endpoint', minio.endpoint], {
      out: (t) => (out += t),
      err: (t) => (err += t),
      env: {
        AWS_ACCESS_KEY_ID: minio.accessKeyId,
        AWS_SECRET_ACCESS_KEY: minio.secretAccessKey,
        AWS_REGION: minio.region,
      },
      stdout: new Writable({
        write(c: Buffer, _e, cb) {
          chunks.push(c);
          cb();
        },
      }),
    });
    return { code, stdout: Buffer.concat(chunks), out, err };
  }

  /** Kill targets, cycled: a pipeline step just reported, or a random moment. */
  const targets = [
    'time',
    'started',
    'produced',
    'uploaded',
    'committing',
    'committed',
    'delivered',
    'deleted',
  ] as const;
  const kills = 24;

  void test(`${kills} SIGKILLs at every delivery step: every acknowledged record committed once, every marker verifies`, async (t) => {
    const bucket = await minio.newBucket();
    const dir = scratchDir('crash');
    const cfg = (run: number): ChildConfig => ({
      dir,
      run,
      bucket,
      endpointUrl: minio.endpoint,
      region: minio.region,
      accessKeyId: minio.accessKeyId,
      secretAccessKey: minio.secretAccessKey,
    });
    /** seq → payload of every acknowledged record. */
    const acked = new Map<bigint, string>();
    const hits = new Map<string, number>();

    for (let run = 0; run < kills; run++) {
      const target = targets[run % targets.length]!;
      // Which occurrence of the event to kill at, and for 'time' when: varied, reproducible.
      const nth = 1 + ((run * 5) % 4);
      const afterMs = 100 + ((run * 137) % 500);
      const proc = spawn(process.execPath, [import.meta.filename], {
        env: { ...process.env, [childEnv]: JSON.stringify(cfg(run)) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.add(proc);
      let stderr = '';
      proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
        proc.on('exit', (code, signal) => r({ code, signal })),
      );
      let seen = 0;
      let killedOn: string | undefined;
      const kill = (why: string): void => {
        if (killedOn !== undefined) return;
        killedOn = why;
        proc.kill('SIGKILL');
      };
      let timer: NodeJS.Timeout | undefined;
      const lines = createInterface({ input: proc.stdout });
      lines.on('line', (line) => {
        const [kind, a, b, c] = line.split(' ');
        if (kind === 'ack') {
          const first = BigInt(a!);
          for (let i = 0; i < Number(b); i++) acked.set(first + BigInt(i), payload(run, Number(c), i));
        } else if (kind === 'ready') {
          // A fallback, so a step that does not come up in time still gets a kill.
          timer = setTimeout(
            () => kill(target === 'time' ? 'time' : `${target} (timeout)`),
            target === 'time' ? afterMs : 4_000,
          );
        } else if (kind === 'ev' && a === target && ++seen >= nth) kill(target);
      });
      const exit = await exited;
      clearTimeout(timer);
      children.delete(proc);
      await new Promise<void>((r) => (proc.stdout.readableEnded ? r() : proc.stdout.on('end', () => r())));
      assert.equal(exit.signal, 'SIGKILL', `run ${run} ended by itself (code ${exit.code}): ${stderr}`);
      hits.set(killedOn!, (hits.get(killedOn!) ?? 0) + 1);
    }
    t.diagnostic(
      `kills: ${[...hits].map(([k, n]) => `${k} ×${n}`).join(', ')}; ${acked.size} records acknowledged`,
    );
    const onTarget = [...hits].filter(([k]) => !k.includes('timeout')).reduce((n, [, v]) => n + v, 0);
    assert.ok(onTarget >= kills - 4, `most kills hit their step (${onTarget}/${kills})`);

    // The last restart: deliver everything, no load.
    const last = await openNode(cfg(kills));
    await waitFor(() => last.pipeline.stats().segmentsPending === 0, {
      what: 'the final drain',
      timeoutMs: 60_000,
    });
    await last.pipeline.stop();
    await last.wal.close();
    last.close();
    assert.deepEqual(
      last.wal.sealedSegments().filter((s) => s.status === 'sealed'),
      [],
    );
    const quarantine = path.join(dir, 'wal', 'quarantine');
    // Copies of torn tails recovery cut off (`*.tail`) are not quarantined segments.
    assert.deepEqual(
      (existsSync(quarantine) ? await readdir(quarantine) : []).filter((n) => !n.endsWith('.tail')),
      [],
      'nothing quarantined',
    );

    // What a consumer sees.
    const env = await cli(expand, ['--endpoint-name', endpoint, '--format', 'envelope', '--quiet'], bucket);
    assert.equal(env.code, 0, env.err);
    const records = env.stdout
      .toString()
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { seq: string; payload: string });
    const seqs = records.map((r) => BigInt(r.seq));
    assert.deepEqual(
      seqs,
      seqs.map((_, i) => BigInt(i + 1)),
      'committed seqs are exactly 1..N, in key order',
    );
    const bySeq = new Map(records.map((r) => [BigInt(r.seq), r.payload]));
    let missing = 0;
    for (const [seq, p] of acked) if (bySeq.get(seq) !== p) missing++;
    assert.equal(missing, 0, `${missing} acknowledged records are not committed as acknowledged`);
    t.diagnostic(
      `${records.length} records committed (${records.length - acked.size} durable but unacknowledged at a kill)`,
    );

    const v = await cli(verify, ['--endpoint-name', endpoint, '--deep', '--quiet'], bucket);
    assert.equal(v.code, 0, v.out);
    const markers = (await cli(commits, ['--endpoint-name', endpoint], bucket)).out.trim().split('\n');
    const archives: string[] = [];
    const s3 = minio.s3();
    let token: string | undefined;
    do {
      const page = await s3.send(
        new ListObjectsV2Command({
          Bucket: bucket,
          Prefix: `${prefix}/segments/`,
          ...(token ? { ContinuationToken: token } : {}),
        }),
      );
      for (const o of page.Contents ?? []) archives.push(o.Key ?? '');
      token = page.NextContinuationToken;
    } while (token !== undefined);
    assert.deepEqual(
      archives.map((k) => k.replace('/segments/', '/commits/').replace(/\.wal\.zst$/, '.json')),
      markers,
      'one archive per marker, no orphans',
    );
    t.diagnostic(`${markers.length} segments committed and verified`);
  });
}
