// expand, verify and commits against segments the real pipeline delivered to
// a local folder store: byte-exact output in every format, cursors, checks
// that catch a tampered object, usage errors.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { systemClock } from '../src/clock.ts';
import { NodeFileSystem } from '../src/fs/node.ts';
import { silentLogger } from '../src/log.ts';
import { run as commits } from '../src/commands/commits.ts';
import { run as expand } from '../src/commands/expand.ts';
import { run as verify } from '../src/commands/verify.ts';
import type { CommandIo } from '../src/commands/common.ts';
import { commitKey, segmentKey } from '../src/delivery/keys.ts';
import { startPipeline } from '../src/delivery/pipeline.ts';
import { LocalFolderObjectStore } from '../src/store/local.ts';
import { openWal } from '../src/wal/wal.ts';
import { RecordFormat, type Wal } from '../src/wal/types.ts';
import { encodeMqttPayload } from '../src/wal/format.ts';

const prefix = 'tenants/acme';
const endpoint = 'orders';
const instance = 'orders-0';

interface Ran {
  code: number;
  stdout: Buffer;
  out: string;
  err: string;
}

async function cli(
  fn: (args: readonly string[], io: CommandIo) => Promise<number>,
  args: string[],
): Promise<Ran> {
  const chunks: Buffer[] = [];
  let out = '';
  let err = '';
  const stdout = new Writable({
    write(chunk: Buffer, _e, cb) {
      chunks.push(chunk);
      cb();
    },
  });
  const code = await fn(args, {
    out: (t) => (out += t),
    err: (t) => (err += t),
    env: {},
    stdout,
  });
  return { code, stdout: Buffer.concat(chunks), out, err };
}

void describe('landfall expand / verify / commits (local store)', () => {
  let root: string;
  let bucket: string;
  let w: Wal;
  let epoch: string;
  const segments: { id: bigint; payloads: Buffer[] }[] = [];
  const store = (): string[] => ['--local', bucket, '--prefix', prefix];

  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'landfall-commands-'));
    bucket = path.join(root, 'bucket');
    w = await openWal({
      dir: path.join(root, 'wal'),
      endpoint,
      instance,
      fs: new NodeFileSystem(),
      clock: systemClock,
      log: silentLogger,
    });
    epoch = w.epoch;
    const p = await startPipeline({
      wal: w,
      store: new LocalFolderObjectStore({ root: bucket }),
      prefix,
      endpoint,
      instance,
      scratchDir: path.join(root, 'scratch'),
      retention: { segments: 100 }, // keep the local files to expand them too
      staleUploadAgeMs: 0,
    });
    for (let s = 0; s < 3; s++) {
      const payloads = Array.from({ length: 20 + s }, (_, i) =>
        Buffer.from(JSON.stringify({ s, i, text: 'é ☃ "quoted"', n: i * 1.5 })),
      );
      await w.append(payloads, RecordFormat.ndjson);
      await w.seal();
      segments.push({ id: w.sealedSegments().at(-1)!.id, payloads });
    }
    await p.idle();
    await p.stop();
  });
  after(async () => {
    await w.close();
    await rm(root, { recursive: true, force: true });
  });

  const ndjson = (ps: Buffer[]): Buffer => Buffer.concat(ps.flatMap((p) => [p, Buffer.from('\n')]));

  void test('commits lists the markers in key order, after a cursor, bounded by --limit', async () => {
    const keys = segments.map((s) => commitKey(prefix, { endpoint, instance, epoch, segmentId: s.id }));
    const all = await cli(commits, ['--endpoint-name', endpoint, ...store()]);
    assert.equal(all.code, 0, all.err);
    assert.equal(all.out, keys.map((k) => `${k}\n`).join(''));
    const after1 = await cli(commits, [
      '--endpoint-name',
      endpoint,
      '--after',
      keys[0]!,
      '--limit',
      '1',
      ...store(),
    ]);
    assert.equal(after1.out, `${keys[1]}\n`);
    const json = await cli(commits, [
      '--endpoint-name',
      endpoint,
      '--instance',
      instance,
      '--json',
      ...store(),
    ]);
    const rows = json.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { key: string; records: number; firstSeq: string });
    assert.deepEqual(
      rows.map((r) => [r.key, r.records]),
      keys.map((k, i) => [k, segments[i]!.payloads.length]),
    );
    assert.equal(rows[0]!.firstSeq, '1');
  });

  void test('expand of the committed range writes every record byte for byte, in order', async () => {
    const r = await cli(expand, ['--endpoint-name', endpoint, ...store()]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(r.stdout, ndjson(segments.flatMap((s) => s.payloads)));
    assert.match(r.err, /3 segments, 63 records/);
    // From a cursor on.
    const cursor = commitKey(prefix, { endpoint, instance, epoch, segmentId: segments[0]!.id });
    const rest = await cli(expand, ['--endpoint-name', endpoint, '--after', cursor, '--quiet', ...store()]);
    assert.deepEqual(rest.stdout, ndjson(segments.slice(1).flatMap((s) => s.payloads)));
    assert.equal(rest.err, '');
  });

  void test('expand of one key (archive or marker) and of local .wal and .wal.zst files', async () => {
    const s = segments[1]!;
    const ref = { endpoint, instance, epoch, segmentId: s.id };
    const byArchive = await cli(expand, ['--key', segmentKey(prefix, ref), ...store()]);
    assert.deepEqual(byArchive.stdout, ndjson(s.payloads));
    const byMarker = await cli(expand, ['--key', commitKey(prefix, ref), ...store()]);
    assert.deepEqual(byMarker.stdout, ndjson(s.payloads));
    const local = await cli(expand, [w.segmentPath(s.id), path.join(bucket, segmentKey(prefix, ref))]);
    assert.equal(local.code, 0, local.err);
    assert.deepEqual(local.stdout, Buffer.concat([ndjson(s.payloads), ndjson(s.payloads)]));
  });

  void test('--format recordio and envelope; ndjson refuses a payload with a newline', async () => {
    const dir = path.join(root, 'odd');
    const w2 = await openWal({
      dir,
      endpoint,
      instance: 'odd-0',
      fs: new NodeFileSystem(),
      clock: systemClock,
      log: silentLogger,
    });
    const binary = Buffer.from([0, 1, 2, 0x0a, 0xff, 0xfe]);
    await w2.append([Buffer.from('{\n "pretty": true\n}')], RecordFormat.json);
    await w2.append([binary], RecordFormat.recordio);
    await w2.append([encodeMqttPayload('sensors/1', Buffer.from('21.5'))], RecordFormat.mqtt);
    await w2.seal();
    const file = w2.segmentPath(w2.sealedSegments()[0]!.id);
    const rio = await cli(expand, ['--format', 'recordio', file]);
    assert.equal(rio.code, 0, rio.err);
    const frames: Buffer[] = [];
    for (let at = 0; at < rio.stdout.length;) {
      const n = rio.stdout.readUInt32BE(at);
      frames.push(rio.stdout.subarray(at + 4, at + 4 + n));
      at += 4 + n;
    }
    assert.deepEqual(frames[1], binary);
    assert.equal(frames.length, 3);
    const env = await cli(expand, ['--format', 'envelope', file]);
    const lines = env.stdout
      .toString()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, string>);
    assert.equal(lines[0]!['payload'], '{\n "pretty": true\n}');
    assert.equal(lines[0]!['format'], 'json');
    assert.equal(Buffer.from(lines[1]!['payloadBase64']!, 'base64').toString('hex'), binary.toString('hex'));
    assert.equal(lines[2]!['topic'], 'sensors/1');
    assert.equal(lines[2]!['payload'], '21.5');
    assert.match(lines[0]!['ingestTime']!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    const nd = await cli(expand, [file]);
    assert.equal(nd.code, 1);
    assert.match(nd.err, /holds a newline/);
    await w2.close();
  });

  void test('verify passes for delivered markers and fails (exit 1) for a tampered archive', async () => {
    const ok = await cli(verify, ['--endpoint-name', endpoint, '--deep', ...store()]);
    assert.equal(ok.code, 0, ok.out + ok.err);
    assert.equal(ok.out.split('\n').filter((l) => l.startsWith('ok ')).length, 3);

    const ref = { endpoint, instance, epoch, segmentId: segments[2]!.id };
    const archive = path.join(bucket, segmentKey(prefix, ref));
    const original = await readFile(archive);
    try {
      // Same size, different bytes: only --deep can see it (the metadata still says the old sha256).
      const tampered = Buffer.from(original);
      tampered[tampered.length - 1] = tampered[tampered.length - 1]! ^ 1;
      await writeFile(archive, tampered);
      const shallow = await cli(verify, ['--key', commitKey(prefix, ref), ...store()]);
      assert.equal(shallow.code, 0);
      const deep = await cli(verify, ['--key', commitKey(prefix, ref), '--deep', ...store()]);
      assert.equal(deep.code, 1);
      assert.match(deep.out, /^FAIL .*content is/m);
      // A missing object fails even the shallow check.
      await rm(archive);
      const missing = await cli(verify, ['--endpoint-name', endpoint, ...store()]);
      assert.equal(missing.code, 1);
      assert.match(missing.out, /FAIL .*: .*missing/);
      assert.equal(missing.out.split('\n').filter((l) => l.startsWith('ok ')).length, 2);
    } finally {
      await writeFile(archive, original);
    }
  });

  void test('--help, and usage errors exit 2', async () => {
    for (const fn of [expand, verify, commits]) {
      const h = await cli(fn, ['--help']);
      assert.equal(h.code, 0);
      assert.match(h.out, /^landfall (expand|verify|commits)/);
    }
    const noStore = await cli(commits, ['--endpoint-name', endpoint]);
    assert.equal(noStore.code, 2);
    assert.match(noStore.err, /--bucket NAME/);
    const twoSources = await cli(expand, ['x.wal', '--key', 'k']);
    assert.equal(twoSources.code, 2);
    const badFlag = await cli(verify, ['--nope']);
    assert.equal(badFlag.code, 2);
  });
});
