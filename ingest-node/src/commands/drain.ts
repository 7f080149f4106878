// `landfall drain`: the drainer (issue #13). A WAL volume whose pod is gone
// (a scale-down, a deleted Endpoint, a node taken away) still holds
// acknowledged records; this delivers them and says whether anything is left,
// so the volume is deleted only once its exit code is 0.
//
// It is the node's own storage half (node.ts openNodeStorage: the same WAL
// recovery, Parquet outputs and delivery pipeline, from the same config
// sources as `landfall serve`) without a listener: it never takes a write.
// Running it twice, or again after a crash mid-way, is safe: delivery resumes
// from the WAL's state file and every key is deterministic (docs/s3-layout.md).
import { hostname } from 'node:os';
import { open, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { systemClock } from '../clock.ts';
import { ConfigError, loadConfig } from '../config/load.ts';
import type { NodeConfig } from '../config/schema.ts';
import { jsonLogger, type Logger } from '../log.ts';
import { openNodeStorage } from '../node.ts';
import { quarantineCounts } from '../wal/recovery.ts';
import { NodeFileSystem } from '../fs/node.ts';
import { decodeSegmentHeader, SEGMENT_HEADER_BYTES_MAX } from '../wal/format.ts';
import { exitFailed, exitOk, exitUsage, type Command, type CommandIo } from './common.ts';

/** Default bound on the whole run. */
export const DRAIN_TIMEOUT_MS_DEFAULT = 600_000;
/** Longest --timeout-ms (a day): a drainer that needs more should be looked at. */
const DRAIN_TIMEOUT_MS_MAX = 86_400_000;

export function help(): string {
  return [
    'landfall drain [--timeout-ms N] [--config FILE] [--<block>.<key>=VALUE ...]',
    '',
    'Delivers everything a WAL directory holds and exits: the drainer for a volume whose pod is gone.',
    'Opens wal.dir (recovering it as `landfall serve` does: torn tails, unsealed segments), seals what',
    'is open, delivers every sealed segment to the configured target (s3.bucket or s3.localDir, with',
    'the same outputs and views as the node) and stops. Never listens for writes. Same config sources',
    'as `landfall serve` (see `landfall serve --help`); the instance id is taken from the WAL',
    "segments' headers when they name one (keys must be the writer's).",
    'Never run it on a WAL directory a node is still using: there is no lock.',
    '',
    `  --timeout-ms N   bound on the whole run (default ${DRAIN_TIMEOUT_MS_DEFAULT}); when it is spent, exit 1`,
    '',
    'Prints one JSON line on stdout at the end (logs go to stderr):',
    '  {"drained":true,"segmentsDelivered":N,"segmentsLeft":0,"bytesLeft":0,"openSegmentBytes":0,...}',
    'Exit 0: nothing undelivered is left (also for a missing or empty wal.dir). 1: something is left',
    '(timeout, store unreachable); run it again, it resumes. 2: usage or config error.',
    '',
  ].join('\n');
}

export interface DrainSummary {
  readonly drained: boolean;
  /** Segments whose commit marker this run wrote or found. */
  readonly segmentsDelivered: number;
  readonly segmentsLeft: number;
  readonly bytesLeft: number;
  readonly openSegmentBytes: number;
  /** Segments found corrupt (now or before) and kept in quarantine/: never delivered, never deleted. */
  readonly quarantinedSegments: number;
  readonly walDir: string;
  readonly instance: string | null;
  readonly durationMs: number;
}

function takeTimeout(args: readonly string[]): { timeoutMs: number; rest: string[] } | string {
  const rest: string[] = [];
  let raw: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (a === '--timeout-ms') {
      raw = args[i + 1];
      if (raw === undefined) return '--timeout-ms needs a value';
      i++;
    } else if (a.startsWith('--timeout-ms=')) raw = a.slice('--timeout-ms='.length);
    else rest.push(a);
  }
  if (raw === undefined) return { timeoutMs: DRAIN_TIMEOUT_MS_DEFAULT, rest };
  const n = Number(raw);
  if (!/^[0-9]+$/.test(raw) || !Number.isSafeInteger(n) || n < 1 || n > DRAIN_TIMEOUT_MS_MAX)
    return `--timeout-ms must be an integer in 1..${DRAIN_TIMEOUT_MS_MAX}, got "${raw}"`;
  return { timeoutMs: n, rest };
}

/** Segment files (`<20 digits>.wal`) in the WAL dir, lowest id first; [] when the dir is missing. */
async function segmentFiles(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter((n) => /^[0-9]{20}\.wal$/.test(n)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

const nodeFs = new NodeFileSystem();

/** Corrupt segments kept in quarantine/ (-1: the folder cannot be read); tail copies are not counted. */
async function countQuarantined(dir: string): Promise<number> {
  return (await quarantineCounts(nodeFs, dir)).segments;
}

/** The endpoint and instance the newest segment was written by, if its header reads. */
async function writerOf(
  dir: string,
  files: readonly string[],
): Promise<{ endpoint: string; instance: string } | undefined> {
  for (const name of [...files].reverse()) {
    const fh = await open(join(dir, name), 'r').catch(() => undefined);
    if (fh === undefined) continue;
    try {
      const buf = new Uint8Array(SEGMENT_HEADER_BYTES_MAX);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      const h = decodeSegmentHeader(buf.subarray(0, bytesRead));
      if (h.ok) return { endpoint: h.header.endpoint, instance: h.header.instance };
    } finally {
      await fh.close();
    }
  }
  return undefined;
}

export async function run(args: readonly string[], io: CommandIo): Promise<number> {
  const startedMs = systemClock.monotonicMs();
  const parsed = takeTimeout(args);
  if (typeof parsed === 'string') {
    io.err(`landfall drain: ${parsed}\n`);
    return exitUsage;
  }
  let config: NodeConfig;
  try {
    config = loadConfig({ args: parsed.rest, env: io.env, hostname: hostname() });
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(`landfall drain: ${err.message}\n`);
      return exitUsage;
    }
    throw err;
  }
  if (config.s3.bucket === undefined && config.s3.localDir === undefined) {
    io.err('landfall drain: no delivery target: set s3.bucket (or s3.localDir)\n');
    return exitUsage;
  }
  const log: Logger = jsonLogger(config.log.level, io.err);
  const walDir = resolve(config.wal.dir);
  const summary = (s: Omit<DrainSummary, 'walDir' | 'durationMs'>): DrainSummary => ({
    ...s,
    walDir,
    durationMs: Math.round(systemClock.monotonicMs() - startedMs),
  });
  const print = (s: DrainSummary): number => {
    io.out(`${JSON.stringify(s)}\n`);
    return s.drained ? exitOk : exitFailed;
  };

  const files = await segmentFiles(walDir);
  if (files.length === 0) {
    const quarantined = await countQuarantined(walDir);
    log.info({ walDir, quarantinedSegments: quarantined }, 'drain: no WAL segment here; nothing to deliver');
    return print(
      summary({
        drained: quarantined === 0,
        segmentsDelivered: 0,
        segmentsLeft: 0,
        bytesLeft: 0,
        openSegmentBytes: 0,
        quarantinedSegments: quarantined,
        instance: null,
      }),
    );
  }
  const writer = await writerOf(walDir, files);
  if (writer !== undefined && writer.endpoint !== config.endpoint.name) {
    io.err(
      `landfall drain: ${walDir} holds endpoint "${writer.endpoint}", the config says "${config.endpoint.name}"\n`,
    );
    return exitUsage;
  }
  if (writer !== undefined && writer.instance !== config.instance.id) {
    // A Job's host name is not the pod's: the keys (and the seqs in them) are the writer's.
    log.info(
      { configured: config.instance.id, instance: writer.instance },
      "drain: using the instance id from the WAL segments' headers",
    );
    config = { ...config, instance: { id: writer.instance } };
  }

  // Whatever happens, the WAL is closed before exit: a SIGTERM ends the wait, not the close.
  const stop = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    log.warn({ signal }, 'drain: signal received; stopping (what is left stays in the WAL)');
    stop.abort();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    const deadlineMs = startedMs + parsed.timeoutMs;
    const stopGraceMs = Math.min(2_000, Math.floor(parsed.timeoutMs / 10));
    const storage = await openNodeStorage(config, { log });
    let left;
    try {
      left = await storage.deliverBacklog(deadlineMs - stopGraceMs, stop.signal);
    } finally {
      const graceMs = Math.max(0, Math.min(stopGraceMs, deadlineMs - systemClock.monotonicMs()));
      await storage.close(graceMs);
    }
    const stats = storage.delivery?.pipeline.stats();
    // Corrupt segments in quarantine/ are acknowledged data a human must look
    // at: a volume holding any is not drained (exit 1), so nothing deletes it.
    const quarantined = await countQuarantined(walDir);
    const drained =
      left.segments === 0 &&
      left.openSegmentBytes === 0 &&
      (stats?.segmentsPending ?? 0) === 0 &&
      quarantined === 0;
    const s = summary({
      drained,
      segmentsDelivered: stats?.segmentsDeliveredTotal ?? 0,
      segmentsLeft: left.segments,
      bytesLeft: left.bytes,
      openSegmentBytes: left.openSegmentBytes,
      quarantinedSegments: quarantined,
      instance: config.instance.id,
    });
    if (drained) log.info({ ...s }, 'drain: every segment delivered');
    else
      log.error(
        { ...s, lastError: stats?.lastError ?? null },
        'drain: segments left undelivered; run it again (it resumes)',
      );
    return print(s);
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}

export const drainCommand: Command = {
  name: 'drain',
  summary: 'deliver everything a WAL directory holds, then exit (the drainer; no listener)',
  help,
  run,
};
