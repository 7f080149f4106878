// What the consumer-side CLI commands (expand, verify, commits) share: the
// store from flags and the standard AWS environment, listing commit markers
// in key order, reading a segment archive, and a byte-exact, back-pressured
// stdout.
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { pipeline, type Readable, type Writable } from 'node:stream';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { CredentialsConfig } from '../credentials.ts';
import { commitsPrefix, normalizePrefix, parseCommitKey, type SegmentRef } from '../delivery/keys.ts';
import { decodeCommitMarker, markerBytesMax, type CommitMarker } from '../delivery/marker.ts';
import { createZstdDecompressor } from '../delivery/compress.ts';
import { HashTap } from '../store/hashing.ts';
import { openObjectStore, type ObjectStoreConfig, type OpenedObjectStore } from '../store/index.ts';
import type { ObjectStore } from '../store/types.ts';
import {
  readSegmentStream,
  RECORD_BYTES_MAX_LIMIT,
  type SegmentHeader,
  type WalRecord,
} from '../wal/format.ts';

/**
 * What a command gets from the CLI: cli.ts's CliIo, plus an optional binary
 * stdout (records are bytes, not text; default process.stdout).
 */
export interface CommandIo {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly isTTY?: boolean;
  readonly stdout?: Writable;
}

export interface Command {
  readonly name: string;
  readonly summary: string;
  help(): string;
  run(args: readonly string[], io: CommandIo): Promise<number>;
}

/** Exit codes: 0 fine, 1 a check failed or the data is bad, 2 usage. */
export const exitOk = 0;
export const exitFailed = 1;
export const exitUsage = 2;

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export const storeOptions = {
  bucket: { type: 'string' },
  endpoint: { type: 'string' },
  region: { type: 'string' },
  'path-style': { type: 'boolean' },
  'no-path-style': { type: 'boolean' },
  prefix: { type: 'string' },
  local: { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

export const selectOptions = {
  'endpoint-name': { type: 'string' },
  instance: { type: 'string' },
  epoch: { type: 'string' },
  after: { type: 'string' },
  until: { type: 'string' },
  limit: { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

export const storeHelp = [
  'Store (flags, else the standard AWS environment):',
  '  --bucket NAME          S3 bucket',
  '  --endpoint URL         S3-compatible endpoint (MinIO, R2); env AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL',
  '  --region REGION        env AWS_REGION / AWS_DEFAULT_REGION; default us-east-1',
  '  --path-style           path-style addressing (the default when an endpoint is set; --no-path-style to turn off)',
  "  --prefix PREFIX        the Endpoint's key prefix in the bucket (default: bucket root)",
  '  --local DIR            a local folder store instead of S3',
  '  Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY [/ AWS_SESSION_TOKEN], else the default AWS chain',
  '  (profile, IRSA web identity, Pod Identity, instance role).',
].join('\n');

export const selectHelp = [
  'Which commits (markers are listed in key order = time order within an instance):',
  '  --endpoint-name NAME   the Landfall Endpoint (required for a range)',
  '  --instance ID          one instance (ingest node); default all',
  '  --epoch EPOCH          one WAL epoch of that instance',
  '  --after KEY            start after this marker key (a consumer cursor; exclusive)',
  '  --until KEY            stop after this marker key (inclusive)',
  '  --limit N              at most N markers',
].join('\n');

export type ParsedValues = Record<string, string | boolean | undefined>;

export function parse(
  args: readonly string[],
  options: NonNullable<ParseArgsConfig['options']>,
): { values: ParsedValues; positionals: string[] } {
  try {
    const r = parseArgs({ args: [...args], options, allowPositionals: true, strict: true });
    return { values: r.values as ParsedValues, positionals: r.positionals };
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function str(v: ParsedValues, name: string): string | undefined {
  const x = v[name];
  return typeof x === 'string' ? x : undefined;
}

export { str as stringFlag };

/** The store the flags and environment name. */
export function storeFromFlags(
  v: ParsedValues,
  env: CommandIo['env'],
): OpenedObjectStore & { prefix: string } {
  const prefix = normalizePrefix(str(v, 'prefix') ?? '');
  const local = str(v, 'local');
  if (local !== undefined) {
    if (str(v, 'bucket') !== undefined) throw new UsageError('--local and --bucket exclude each other');
    return { ...openObjectStore({ kind: 'local', root: local }), prefix };
  }
  const bucket = str(v, 'bucket');
  if (bucket === undefined) throw new UsageError('name the store: --bucket NAME (S3) or --local DIR');
  const endpoint = str(v, 'endpoint') ?? env['AWS_ENDPOINT_URL_S3'] ?? env['AWS_ENDPOINT_URL'];
  const region = str(v, 'region') ?? env['AWS_REGION'] ?? env['AWS_DEFAULT_REGION'] ?? 'us-east-1';
  const forcePathStyle = v['no-path-style'] === true ? false : v['path-style'] === true ? true : undefined;
  const keyId = env['AWS_ACCESS_KEY_ID'];
  const secret = env['AWS_SECRET_ACCESS_KEY'];
  const credentials: CredentialsConfig =
    keyId !== undefined && keyId !== '' && secret !== undefined && secret !== ''
      ? {
          mode: 'static',
          accessKeyId: keyId,
          secretAccessKey: secret,
          ...(env['AWS_SESSION_TOKEN'] ? { sessionToken: env['AWS_SESSION_TOKEN'] } : {}),
        }
      : { mode: 'default' };
  const cfg: ObjectStoreConfig = { kind: 's3', bucket, region, endpoint, forcePathStyle, credentials };
  return { ...openObjectStore(cfg), prefix };
}

export interface MarkerSelection {
  readonly endpoint: string;
  readonly instance?: string | undefined;
  readonly epoch?: string | undefined;
  readonly after?: string | undefined;
  readonly until?: string | undefined;
  readonly limit?: number | undefined;
}

export function selectionFromFlags(v: ParsedValues): MarkerSelection {
  const endpoint = str(v, 'endpoint-name');
  if (endpoint === undefined) throw new UsageError('--endpoint-name NAME is required');
  const limitText = str(v, 'limit');
  let limit: number | undefined;
  if (limitText !== undefined) {
    limit = Number(limitText);
    if (!Number.isInteger(limit) || limit < 1) throw new UsageError(`--limit must be a positive integer`);
  }
  return {
    endpoint,
    instance: str(v, 'instance'),
    epoch: str(v, 'epoch'),
    after: str(v, 'after'),
    until: str(v, 'until'),
    limit,
  };
}

/** Listing pages: bounded, so memory never holds more than one page of keys. */
const listPageKeys = 1000;

/** Commit marker keys in key order, after the cursor, up to `until` / `limit`. */
export async function* listMarkerKeys(
  store: ObjectStore,
  prefix: string,
  sel: MarkerSelection,
): AsyncGenerator<{ key: string; ref: SegmentRef }, void, undefined> {
  const listPrefix = commitsPrefix(prefix, sel.endpoint, sel.instance, sel.epoch);
  let startAfter = sel.after;
  let n = 0;
  for (;;) {
    const page = await store.list({
      prefix: listPrefix,
      limit: listPageKeys,
      ...(startAfter !== undefined ? { startAfter } : {}),
    });
    for (const o of page.objects) {
      if (sel.until !== undefined && o.key > sel.until) return;
      let ref: SegmentRef;
      try {
        ref = parseCommitKey(prefix, o.key);
      } catch {
        continue; // not a marker (a stray object): consumers follow markers only
      }
      yield { key: o.key, ref };
      if (sel.limit !== undefined && ++n >= sel.limit) return;
    }
    const last = page.objects.at(-1);
    if (!page.truncated || last === undefined) return;
    startAfter = last.key;
  }
}

export async function getMarker(store: ObjectStore, key: string): Promise<CommitMarker | null> {
  const body = await store.get(key, { bytesMax: markerBytesMax });
  return body === null ? null : decodeCommitMarker(body);
}

/** Decompressed bytes of a `.wal.zst` object (or null when missing), tapped for size and sha256. */
export async function openArchive(
  store: ObjectStore,
  key: string,
): Promise<{ stream: Readable; tap: HashTap } | null> {
  const body = await store.getStream(key);
  if (body === null) return null;
  const tap = new HashTap();
  // The callback form forwards every stage's error to the last stream.
  return { stream: pipeline(body, createZstdDecompressor(), tap, () => {}), tap };
}

/** A local `.wal` (as is) or `.wal.zst` (decompressed) file. */
export function openLocalSegment(file: string): Readable {
  const src = createReadStream(file, { highWaterMark: 1 << 20 });
  return file.endsWith('.zst') ? pipeline(src, createZstdDecompressor(), () => {}) : src;
}

/**
 * A segment's records. Read with the frame format's own bound, not the
 * default: the node that wrote the segment may have taken records up to its
 * limits.recordBytesMax (up to 256 MiB), which the tools cannot know.
 */
export function records(
  source: Readable,
  onHeader?: (h: SegmentHeader) => void,
): AsyncGenerator<WalRecord, void, undefined> {
  return readSegmentStream(source as AsyncIterable<Uint8Array>, {
    recordBytesMax: RECORD_BYTES_MAX_LIMIT,
    ...(onHeader !== undefined ? { onHeader } : {}),
  });
}

/**
 * Batches small writes into ~64 KiB chunks and waits for 'drain': expanding a
 * large range never buffers more than a chunk or two in memory.
 */
export class Output {
  readonly #w: Writable;
  #chunks: Uint8Array[] = [];
  #bytes = 0;
  #error: Error | undefined;
  static readonly flushBytes = 64 * 1024;

  constructor(w: Writable) {
    this.#w = w;
    // A reader that went away (`| head`) must end the run, not crash it.
    w.on('error', (err: Error) => {
      this.#error = err;
    });
  }

  async write(...parts: Uint8Array[]): Promise<void> {
    if (this.#error !== undefined) throw outputError(this.#error);
    // Payloads are views into decoder chunks that are never reused: no copy
    // until the batch is joined.
    for (const p of parts) {
      this.#chunks.push(p);
      this.#bytes += p.length;
    }
    if (this.#bytes >= Output.flushBytes) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.#error !== undefined) throw outputError(this.#error);
    if (this.#bytes === 0) return;
    const buf = Buffer.concat(this.#chunks, this.#bytes);
    this.#chunks = [];
    this.#bytes = 0;
    if (!this.#w.write(buf)) {
      try {
        await once(this.#w, 'drain');
      } catch (err) {
        throw outputError(err as Error);
      }
    }
  }
}

/** stdout closed by its reader: a normal way for a pipeline like `expand … | head` to end. */
export class OutputClosedError extends Error {
  constructor(cause: Error) {
    super(`stdout closed: ${cause.message}`, { cause });
    this.name = 'OutputClosedError';
  }
}

function outputError(err: Error): Error {
  return (err as { code?: string }).code === 'EPIPE' ? new OutputClosedError(err) : err;
}

/** A throttled progress line on stderr for long runs. */
export function progress(io: CommandIo, quiet: boolean, everyMs = 2000): (line: () => string) => void {
  let last = Date.now();
  return (line) => {
    if (quiet) return;
    const now = Date.now();
    if (now - last < everyMs) return;
    last = now;
    io.err(`${line()}\n`);
  };
}

/** Runs a command body: usage errors exit 2 with the message, anything else 1. */
export async function guarded(
  name: string,
  io: CommandIo,
  help: () => string,
  body: () => Promise<number>,
): Promise<number> {
  try {
    return await body();
  } catch (err) {
    if (err instanceof OutputClosedError) return exitOk;
    if (err instanceof UsageError) {
      io.err(`landfall ${name}: ${err.message}\n\n${help()}`);
      return exitUsage;
    }
    io.err(`landfall ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    return exitFailed;
  }
}

export function wantsHelp(args: readonly string[]): boolean {
  return args.includes('--help') || args.includes('-h');
}
