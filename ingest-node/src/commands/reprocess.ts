// `landfall reprocess`: rebuild one view's Parquet and DLQ from committed
// segments after the view was fixed (DESIGN §6: a change affects segments
// sealed after it; this rebuilds the older ones). For each commit marker in
// the range, in key order:
//
//   1. the segment archive the marker lists is read and checked against the
//      marker (size and SHA-256 of the exact WAL bytes, records, seqs), then
//      materialised with the new view (the same code a node runs);
//   2. the new view and DLQ files are uploaded to the keys a node would use
//      (views/{view}/{partitions}/{stem}.parquet, dlq/{view}/dt=…/{stem}.parquet):
//      the dataset folders show the fixed data in place, never a second copy;
//   3. a key the segment's previous build of this view wrote and the new one
//      does not (a partition or a DLQ file that is now empty) is overwritten
//      with a 0-row file of the same kind, since the node's credentials (and
//      the store interface) have no delete: readers of the folder see no stale rows;
//   4. last, the reprocess manifest
//      reprocess/{view}/{endpoint}/{instance}/{epoch}/{segmentId}.json
//      records what was built (spec hash, row accounting, every file) and what
//      it replaced. Commit markers are never rewritten: they are the
//      create-only receipts of the original delivery; the manifest is the
//      receipt of the rebuild, and the current truth for (view, segment).
//
// Every key is a function of (view, segment), so running it again (after a
// crash, or twice) writes the same keys: idempotent.
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pkg from '../../package.json' with { type: 'json' };
import {
  checkEpoch,
  checkName,
  formatSegmentId,
  normalizePrefix,
  viewKey,
  type SegmentRef,
} from '../delivery/keys.ts';
import {
  markerRef,
  type CommitMarker,
  type MarkerArtifact,
  type MarkerViewRows,
} from '../delivery/marker.ts';
import { keyedFiles, viewRows, walToSegmentRecords } from '../delivery/parquet-producers.ts';
import { defaultRetryPolicy } from '../delivery/retry.ts';
import { contentTypes, uploadFile } from '../delivery/upload.ts';
import { createParquetDb, JOBS_DIR, sqlString, type ParquetDb } from '../parquet/duckdb.ts';
import { sha256File } from '../parquet/outputs.ts';
import type { ObjectStore } from '../store/types.ts';
import { compileView, quoteIdent, type CompiledView } from '../views/compile.ts';
import { defaultPartitionLimits, materializeSegment } from '../views/materialize.ts';
import { parseViewFile } from '../views/registry.ts';
import { readFile } from 'node:fs/promises';
import {
  exitOk,
  getMarker,
  guarded,
  listMarkerKeys,
  openArchive,
  parse,
  progress,
  records,
  selectHelp,
  selectOptions,
  storeFromFlags,
  storeHelp,
  storeOptions,
  stringFlag,
  UsageError,
  wantsHelp,
  type Command,
  type CommandIo,
  type MarkerSelection,
} from './common.ts';

export const manifestFormat = 'landfall.reprocess-manifest';
export const manifestVersion = 1;
const writerName = `landfall-reprocess/${pkg.version}`;
const MiB = 1024 * 1024;
/** A manifest lists one segment's files of one view: a few KiB. */
const manifestBytesMax = 4 * MiB;

export function help(): string {
  return [
    'landfall reprocess --view FILE --endpoint-name NAME [range] [store] [options]',
    '',
    "Rebuilds one view's Parquet (and DLQ) from committed segments (their .wal.zst archives), with the view",
    'in FILE, after a view fix. New files go to the same keys a node writes (views/{view}/…, dlq/{view}/…);',
    'a key the previous build wrote and this one does not gets a 0-row file; then a manifest',
    'reprocess/{view}/{endpoint}/{instance}/{epoch}/{segmentId}.json records the build. Commit markers are',
    'never rewritten. Running it again writes the same keys (idempotent).',
    '',
    'Range (markers in key order; default: every commit of the endpoint):',
    '  --from SEGMENT_OR_KEY  first segment: a commit marker key (as `landfall commits` prints) or a segment id',
    '  --to SEGMENT_OR_KEY    last segment (inclusive), same forms',
    '  --instance ID, --epoch EPOCH, --limit N   as below',
    '',
    'Options:',
    '  --view FILE            the fixed view (YAML or JSON, one view)',
    '  --dry-run              build and count, upload nothing',
    '  --scratch DIR          DuckDB scratch folder (default: a temp folder, removed afterwards)',
    '  --threads N            DuckDB threads (default 2)',
    '  --memory-mb N          DuckDB memory limit (default 1024)',
    '  --quiet                no progress or summary on stderr',
    '',
    'Stdout: one line per segment (its marker key, row counts, the manifest key). Exit code: 0 done,',
    '1 a segment could not be rebuilt (bad data, a check failed; the run stops there), 2 usage.',
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
  view: { type: 'string' },
  from: { type: 'string' },
  to: { type: 'string' },
  'dry-run': { type: 'boolean' },
  scratch: { type: 'string' },
  threads: { type: 'string' },
  'memory-mb': { type: 'string' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** `{prefix}/reprocess/{view}/{endpoint}/{instance}/{epoch}/{segmentId}.json`: one per (view, segment). */
export function reprocessKey(prefix: string, view: string, ref: SegmentRef): string {
  const p = normalizePrefix(prefix);
  const parts = [
    'reprocess',
    checkName('view', view),
    checkName('endpoint', ref.endpoint),
    checkName('instance', ref.instance),
    checkEpoch(ref.epoch),
    `${formatSegmentId(ref.segmentId)}.json`,
  ];
  return p === '' ? parts.join('/') : `${p}/${parts.join('/')}`;
}

export interface ReprocessManifest {
  readonly format: typeof manifestFormat;
  readonly version: typeof manifestVersion;
  readonly view: string;
  readonly specSha256: string;
  readonly endpoint: string;
  readonly instance: string;
  readonly epoch: string;
  readonly segmentId: string;
  /** The commit marker of the segment this was built from. */
  readonly marker: string;
  /** What this build replaced: the original delivery's spec (marker) or an earlier reprocess. */
  readonly replaces: { readonly source: 'marker' | 'reprocess'; readonly specSha256: string | null };
  readonly rows: MarkerViewRows;
  /** The view and DLQ files of this build. */
  readonly artifacts: readonly MarkerArtifact[];
  /** Keys earlier builds wrote that this one does not: now 0-row files. */
  readonly superseded: readonly MarkerArtifact[];
  readonly createdAt: string;
  readonly writer: string;
}

function isManifest(x: unknown): x is ReprocessManifest {
  const m = x as Partial<ReprocessManifest> | null;
  return (
    m !== null &&
    typeof m === 'object' &&
    m.format === manifestFormat &&
    m.version === manifestVersion &&
    Array.isArray(m.artifacts) &&
    Array.isArray(m.superseded) &&
    typeof m.specSha256 === 'string'
  );
}

export async function readManifest(store: ObjectStore, key: string): Promise<ReprocessManifest | null> {
  const body = await store.get(key, { bytesMax: manifestBytesMax });
  if (body === null) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new Error(`${key} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  if (!isManifest(parsed)) throw new Error(`${key} is not a ${manifestFormat} v${manifestVersion}`);
  return parsed;
}

/** `--from`/`--to`: a commit key (contains '/') or a segment id. */
type Bound = { readonly key: string } | { readonly segmentId: bigint };

function parseBound(flag: string, text: string | undefined): Bound | undefined {
  if (text === undefined) return undefined;
  if (text.includes('/')) return { key: text };
  if (!/^\d{1,20}$/.test(text))
    throw new UsageError(`${flag} must be a commit marker key or a segment id, got ${JSON.stringify(text)}`);
  return { segmentId: BigInt(text) };
}

function positiveInt(flag: string, text: string | undefined, dflt: number, min = 1): number {
  if (text === undefined) return dflt;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${flag} must be an integer ≥ ${min}`);
  return n;
}

/** A 0-row Parquet file with the columns of a view file or of a DLQ file (cached per kind). */
class EmptyFiles {
  readonly #db: ParquetDb;
  readonly #view: CompiledView;
  readonly #made = new Map<'view' | 'dlq', { path: string; bytes: number; sha256: string }>();
  constructor(db: ParquetDb, view: CompiledView) {
    this.#db = db;
    this.#view = view;
  }
  async get(kind: 'view' | 'dlq'): Promise<{ path: string; bytes: number; sha256: string }> {
    const done = this.#made.get(kind);
    if (done !== undefined) return done;
    const file = path.join(this.#db.scratchDir!, JOBS_DIR, `empty-${kind}.parquet`);
    // The same columns and types the materialiser writes (partition columns live in the path).
    const select =
      kind === 'view'
        ? this.#view.columns.map((c) => `NULL::${c.type} AS ${quoteIdent(c.name)}`).join(', ')
        : 'NULL::VARCHAR AS error_code, NULL::VARCHAR AS error_message, NULL::VARCHAR AS "column", NULL::BLOB AS payload, NULL::UBIGINT AS seq, NULL::TIMESTAMPTZ AS ingest_time';
    await this.#db.withConnection((c) =>
      c.run(`COPY (SELECT ${select} LIMIT 0) TO ${sqlString(file)} (FORMAT parquet, COMPRESSION zstd)`),
    );
    const made = { path: file, bytes: (await stat(file)).size, sha256: await sha256File(file) };
    this.#made.set(kind, made);
    return made;
  }
}

interface Totals {
  segments: number;
  rowsIn: number;
  view: number;
  filtered: number;
  dlq: number;
  files: number;
  superseded: number;
}

async function reprocessSegment(o: {
  store: ObjectStore;
  prefix: string;
  db: ParquetDb;
  view: CompiledView;
  empties: EmptyFiles;
  markerKey: string;
  marker: CommitMarker;
  dryRun: boolean;
}): Promise<{ rows: MarkerViewRows; files: number; superseded: number; manifestKey: string }> {
  const { store, prefix, db, view, marker: m } = o;
  const name = view.spec.name;
  const ref = markerRef(m);
  const archive = m.artifacts.find((a) => a.kind === 'segment');
  if (archive === undefined)
    throw new Error(
      `${o.markerKey} lists no segment archive (the Endpoint has outputs.segments off): nothing to rebuild from`,
    );
  const opened = await openArchive(store, archive.key);
  if (opened === null) throw new Error(`${archive.key} (listed by ${o.markerKey}) is missing`);
  const out = await materializeSegment(db, {
    jobId: `reprocess-${ref.endpoint}-${ref.epoch}-${formatSegmentId(ref.segmentId)}`,
    records: walToSegmentRecords(records(opened.stream)),
    views: [view],
    // The keys a node writes, so a partition that fits a node's key fits here.
    partitionLimits: { ...defaultPartitionLimits(), keyBytesBase: (v) => viewKey(prefix, ref, v, []).length },
  });
  try {
    // The rebuild is only as good as its input: the exact bytes the marker describes.
    const problems: string[] = [];
    if (opened.tap.bytes !== m.segment.bytes || opened.tap.sha256 !== m.segment.sha256)
      problems.push(
        `segment is ${opened.tap.bytes} bytes sha256 ${opened.tap.sha256}, marker says ${m.segment.bytes} ${m.segment.sha256}`,
      );
    if (out.rowsIn !== m.records) problems.push(`${out.rowsIn} records, marker says ${m.records}`);
    if (out.firstSeq !== m.firstSeq || out.lastSeq !== m.lastSeq)
      problems.push(`seqs ${out.firstSeq}..${out.lastSeq}, marker says ${m.firstSeq}..${m.lastSeq}`);
    if (problems.length > 0)
      throw new Error(`${archive.key} does not match ${o.markerKey}: ${problems.join('; ')}`);

    const vo = out.views[0]!;
    const rows = viewRows(vo);
    const manifestKey = reprocessKey(prefix, name, ref);
    const files = keyedFiles(prefix, ref, { raw: [], views: [vo] });
    // What earlier builds of this view wrote for this segment: the last
    // reprocess (its files and what it had emptied), else the original delivery.
    const previous = await readManifest(store, manifestKey);
    const before: MarkerArtifact[] =
      previous !== null
        ? [...previous.artifacts, ...previous.superseded]
        : m.artifacts.filter((a) => (a.kind === 'view' || a.kind === 'dlq') && a.view === name);
    const newKeys = new Set(files.map((f) => f.key));
    const stale = new Map<string, 'view' | 'dlq'>();
    for (const a of before)
      if (!newKeys.has(a.key) && (a.kind === 'view' || a.kind === 'dlq')) stale.set(a.key, a.kind);
    if (o.dryRun) return { rows, files: files.length, superseded: stale.size, manifestKey };

    const upload = async (
      key: string,
      file: { path: string; bytes: number; sha256: string },
    ): Promise<void> => {
      const put = await uploadFile(store, key, file, {
        contentType: contentTypes.parquet,
        retry: defaultRetryPolicy,
      });
      if (put.bytes !== file.bytes || put.sha256 !== file.sha256)
        throw new Error(
          `upload of ${key} stored ${put.bytes} bytes ${put.sha256}, expected ${file.bytes} ${file.sha256}`,
        );
    };
    // New files first, then the empties, the manifest last: a crash at any
    // point leaves the previous manifest (or the marker) describing a set of
    // keys that a re-run overwrites again.
    for (const f of files) await upload(f.key, { path: f.file.localPath, bytes: f.bytes, sha256: f.sha256 });
    const superseded: MarkerArtifact[] = [];
    for (const [key, kind] of [...stale].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const empty = await o.empties.get(kind);
      await upload(key, empty);
      superseded.push({ kind, view: name, key, bytes: empty.bytes, rows: 0, sha256: empty.sha256 });
    }
    const manifest: ReprocessManifest = {
      format: manifestFormat,
      version: manifestVersion,
      view: name,
      specSha256: view.specHash,
      endpoint: ref.endpoint,
      instance: ref.instance,
      epoch: ref.epoch,
      segmentId: formatSegmentId(ref.segmentId),
      marker: o.markerKey,
      replaces:
        previous !== null
          ? { source: 'reprocess', specSha256: previous.specSha256 }
          : { source: 'marker', specSha256: m.views.find((v) => v.name === name)?.specSha256 ?? null },
      rows,
      artifacts: files.map((f) => ({
        kind: f.kind,
        view: name,
        key: f.key,
        bytes: f.bytes,
        rows: f.rows,
        sha256: f.sha256,
      })),
      superseded,
      createdAt: new Date().toISOString(),
      writer: writerName,
    };
    await store.put(manifestKey, Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`), {
      contentType: contentTypes.marker,
    });
    return { rows, files: files.length, superseded: superseded.length, manifestKey };
  } finally {
    await out.cleanup();
  }
}

export async function run(args: readonly string[], io: CommandIo): Promise<number> {
  if (wantsHelp(args)) {
    io.out(help());
    return exitOk;
  }
  return guarded('reprocess', io, help, async () => {
    const { values, positionals } = parse(args, options);
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
    const viewFile = stringFlag(values, 'view');
    if (viewFile === undefined) throw new UsageError('--view FILE is required');
    const endpoint = stringFlag(values, 'endpoint-name');
    if (endpoint === undefined) throw new UsageError('--endpoint-name NAME is required');
    const from = parseBound('--from', stringFlag(values, 'from'));
    const to = parseBound('--to', stringFlag(values, 'to'));
    const limit =
      stringFlag(values, 'limit') !== undefined
        ? positiveInt('--limit', stringFlag(values, 'limit'), 1)
        : undefined;
    const threads = positiveInt('--threads', stringFlag(values, 'threads'), 2);
    const memoryMb = positiveInt('--memory-mb', stringFlag(values, 'memory-mb'), 1024, 16);
    const dryRun = values['dry-run'] === true;
    const quiet = values['quiet'] === true;

    const candidates = parseViewFile(path.basename(viewFile), await readFile(viewFile, 'utf8'));
    if (candidates.length !== 1)
      throw new UsageError(`${viewFile} must hold exactly one view (it holds ${candidates.length})`);
    const cand = candidates[0]!;
    if (!cand.ok) throw new Error(`${viewFile}: invalid view: ${cand.error.code}: ${cand.error.message}`);

    const opened = storeFromFlags(values, io.env);
    const ownScratch = stringFlag(values, 'scratch') === undefined;
    const scratch =
      stringFlag(values, 'scratch') ?? (await mkdtemp(path.join(tmpdir(), 'landfall-reprocess-')));
    let db: ParquetDb | undefined;
    const totals: Totals = { segments: 0, rowsIn: 0, view: 0, filtered: 0, dlq: 0, files: 0, superseded: 0 };
    const say = (): string =>
      `reprocess: ${totals.segments} segments, ${totals.rowsIn} rows in → ${totals.view} view, ${totals.filtered} filtered, ${totals.dlq} DLQ; ${totals.files} files${totals.superseded > 0 ? `, ${totals.superseded} emptied` : ''}${dryRun ? ' (dry run: nothing uploaded)' : ''}`;
    const tick = progress(io, quiet);
    try {
      db = await createParquetDb({ scratchDir: scratch, memoryLimitBytes: memoryMb * MiB, threads });
      const view = await db.withConnection((c) => compileView(c, cand.spec));
      const empties = new EmptyFiles(db, view);
      if (!quiet) io.err(`reprocess: view ${view.spec.name} spec sha256 ${view.specHash}\n`);
      const sel: MarkerSelection = {
        endpoint,
        instance: stringFlag(values, 'instance'),
        epoch: stringFlag(values, 'epoch'),
        // Start just before --from (a key that sorts before it): the listing skips what precedes it.
        after:
          stringFlag(values, 'after') ??
          (from !== undefined && 'key' in from ? from.key.slice(0, -1) : undefined),
        until: stringFlag(values, 'until') ?? (to !== undefined && 'key' in to ? to.key : undefined),
      };
      let n = 0;
      for await (const { key, ref } of listMarkerKeys(opened.store, opened.prefix, sel)) {
        if (from !== undefined && ('key' in from ? key < from.key : ref.segmentId < from.segmentId)) continue;
        if (to !== undefined && ('key' in to ? key > to.key : ref.segmentId > to.segmentId)) continue;
        if (limit !== undefined && n >= limit) break;
        n++;
        const marker = await getMarker(opened.store, key);
        if (marker === null) throw new Error(`${key} vanished while listing`);
        const r = await reprocessSegment({
          store: opened.store,
          prefix: opened.prefix,
          db,
          view,
          empties,
          markerKey: key,
          marker,
          dryRun,
        });
        totals.segments++;
        totals.rowsIn += r.rows.in;
        totals.view += r.rows.view;
        totals.filtered += r.rows.filtered;
        totals.dlq += r.rows.dlq;
        totals.files += r.files;
        totals.superseded += r.superseded;
        io.out(
          `${dryRun ? 'would rebuild' : 'rebuilt'} ${key}: in ${r.rows.in}, view ${r.rows.view}, filtered ${r.rows.filtered}, dlq ${r.rows.dlq}${dryRun ? '' : ` → ${r.manifestKey}`}\n`,
        );
        tick(say);
      }
    } finally {
      await db?.close();
      opened.close();
      if (ownScratch) await rm(scratch, { recursive: true, force: true });
    }
    if (!quiet) io.err(`${say()}\n`);
    return exitOk;
  });
}

export const reprocessCommand: Command = {
  name: 'reprocess',
  summary: "rebuild a view's Parquet and DLQ from committed segments after a view fix",
  help,
  run,
};
