// `landfall verify`: a commit marker against the objects it lists. For each
// artifact: it exists, its size is the marker's `bytes`, its
// `x-amz-meta-sha256` is the marker's `sha256`. With --deep the bytes are
// downloaded and hashed too, and the segment archive is decompressed and
// checked against the marker's `segment` (size, sha256), record count and
// seqs (docs/commit-marker.md "Verifying a marker").
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { commitKey } from '../delivery/keys.ts';
import { markerRef, type CommitMarker, type MarkerArtifact } from '../delivery/marker.ts';
import { HashTap } from '../store/hashing.ts';
import type { ObjectStore } from '../store/types.ts';
import {
  exitFailed,
  exitOk,
  getMarker,
  guarded,
  listMarkerKeys,
  openArchive,
  parse,
  progress,
  records,
  selectHelp,
  selectionFromFlags,
  selectOptions,
  storeFromFlags,
  storeHelp,
  storeOptions,
  stringFlag,
  UsageError,
  wantsHelp,
  type Command,
  type CommandIo,
} from './common.ts';

export function help(): string {
  return [
    'landfall verify --key MARKER_KEY [--deep] [store]',
    'landfall verify --endpoint-name NAME [range] [--deep] [store]',
    '',
    'Checks that every artifact a commit marker lists exists with the size and SHA-256 the marker records',
    '(HEAD: size and x-amz-meta-sha256). Prints one line per marker: "ok KEY" or "FAIL KEY: why".',
    '  --deep     also download and hash every artifact, and decompress the segment archive and check it',
    '             against the marker (segment size and SHA-256, records, first/last seq)',
    '  --quiet    no progress or summary on stderr',
    '',
    'Exit code: 0 every marker checked out, 1 any mismatch, missing object or unreadable marker, 2 usage.',
    '',
    selectHelp,
    '',
    storeHelp,
    '',
  ].join('\n');
}

const options = {
  ...storeOptions,
  ...selectOptions,
  key: { type: 'string' },
  deep: { type: 'boolean' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

async function hashObject(
  store: ObjectStore,
  key: string,
): Promise<{ bytes: number; sha256: string } | null> {
  const body = await store.getStream(key);
  if (body === null) return null;
  const tap = new HashTap();
  await pipeline(body, tap, new Writable({ write: (_c, _e, cb) => cb() }));
  return { bytes: tap.bytes, sha256: tap.sha256 };
}

async function checkArtifact(store: ObjectStore, a: MarkerArtifact, deep: boolean): Promise<string[]> {
  const info = await store.head(a.key);
  if (info === null) return [`${a.key}: missing`];
  const problems: string[] = [];
  if (info.bytes !== a.bytes) problems.push(`${a.key}: ${info.bytes} bytes, marker says ${a.bytes}`);
  if (info.sha256 === null) {
    if (!deep) problems.push(`${a.key}: no sha256 metadata (use --deep to hash the bytes)`);
  } else if (info.sha256 !== a.sha256)
    problems.push(`${a.key}: metadata sha256 ${info.sha256}, marker says ${a.sha256}`);
  if (deep) {
    const h = await hashObject(store, a.key);
    if (h === null) problems.push(`${a.key}: vanished`);
    else if (h.bytes !== a.bytes || h.sha256 !== a.sha256)
      problems.push(
        `${a.key}: content is ${h.bytes} bytes sha256 ${h.sha256}, marker says ${a.bytes} ${a.sha256}`,
      );
  }
  return problems;
}

async function checkSegment(store: ObjectStore, m: CommitMarker, a: MarkerArtifact): Promise<string[]> {
  const opened = await openArchive(store, a.key);
  if (opened === null) return [`${a.key}: vanished`];
  let n = 0;
  let first: bigint | undefined;
  let last: bigint | undefined;
  let headerProblem: string | undefined;
  try {
    for await (const r of records(opened.stream, (h) => {
      if (h.segmentId !== m.segmentId || h.epoch !== m.epoch)
        headerProblem = `${a.key}: header is segment ${h.segmentId} of epoch ${h.epoch}`;
    })) {
      n++;
      first ??= r.seq;
      last = r.seq;
    }
  } catch (err) {
    return [`${a.key}: does not decode: ${(err as Error).message}`];
  }
  const problems: string[] = headerProblem !== undefined ? [headerProblem] : [];
  if (opened.tap.bytes !== m.segment.bytes || opened.tap.sha256 !== m.segment.sha256)
    problems.push(
      `${a.key}: decompressed segment is ${opened.tap.bytes} bytes sha256 ${opened.tap.sha256}, marker says ${m.segment.bytes} ${m.segment.sha256}`,
    );
  if (n !== m.records) problems.push(`${a.key}: ${n} records, marker says ${m.records}`);
  if (first !== m.firstSeq || last !== m.lastSeq)
    problems.push(`${a.key}: seqs ${first}..${last}, marker says ${m.firstSeq}..${m.lastSeq}`);
  return problems;
}

/** Every problem with one marker and its artifacts; empty means it checks out. */
export async function verifyMarker(
  store: ObjectStore,
  prefix: string,
  key: string,
  deep: boolean,
): Promise<string[]> {
  let m: CommitMarker | null;
  try {
    m = await getMarker(store, key);
  } catch (err) {
    return [`unreadable: ${(err as Error).message}`];
  }
  if (m === null) return ['missing'];
  const problems: string[] = [];
  if (commitKey(prefix, markerRef(m)) !== key)
    problems.push(`the marker describes ${commitKey(prefix, markerRef(m))}, not its own key`);
  for (const a of m.artifacts) {
    const p = await checkArtifact(store, a, deep);
    problems.push(...p);
    if (deep && a.kind === 'segment' && p.length === 0) problems.push(...(await checkSegment(store, m, a)));
  }
  return problems;
}

export async function run(args: readonly string[], io: CommandIo): Promise<number> {
  if (wantsHelp(args)) {
    io.out(help());
    return exitOk;
  }
  return guarded('verify', io, help, async () => {
    const { values, positionals } = parse(args, options);
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}`);
    const key = stringFlag(values, 'key');
    const ranged = stringFlag(values, 'endpoint-name') !== undefined;
    if ((key !== undefined) === ranged)
      throw new UsageError('give exactly one of --key KEY or --endpoint-name NAME');
    const deep = values['deep'] === true;
    const quiet = values['quiet'] === true;
    const opened = storeFromFlags(values, io.env);
    let checked = 0;
    let failed = 0;
    const tick = progress(io, quiet);
    const one = async (mk: string): Promise<void> => {
      const problems = await verifyMarker(opened.store, opened.prefix, mk, deep);
      checked++;
      if (problems.length === 0) io.out(`ok ${mk}\n`);
      else {
        failed++;
        io.out(`FAIL ${mk}: ${problems.join('; ')}\n`);
      }
      tick(() => `verify: ${checked} markers, ${failed} failed`);
    };
    try {
      if (key !== undefined) await one(key);
      else
        for await (const { key: mk } of listMarkerKeys(
          opened.store,
          opened.prefix,
          selectionFromFlags(values),
        ))
          await one(mk);
    } finally {
      opened.close();
    }
    if (!quiet) io.err(`verify: ${checked} markers, ${failed} failed\n`);
    return failed > 0 ? exitFailed : exitOk;
  });
}

export const verifyCommand: Command = {
  name: 'verify',
  summary: 'check commit markers against the objects they list (size, SHA-256)',
  help,
  run,
};
