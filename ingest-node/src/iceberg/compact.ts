// Compaction of one Iceberg table: many small data files of a partition
// rewritten into one, committed as a `replace` snapshot (docs/iceberg.md
// "Compaction"). A table fed every 10–60 s gets one small file per segment;
// readers pay per file (a request, a footer, a plan entry), so the small ones
// are merged.
//
//   1. plan: the current snapshot (main) → its manifest list → its manifests;
//      live data files grouped by (partition spec id, partition tuple); files
//      below `targetFileBytes` in groups of at least `minFiles` are packed
//      into bins of at most `targetFileBytes` (input bytes);
//   2. rewrite each bin: download its files to a scratch folder, DuckDB reads
//      them (union by name: an older file without a later column reads NULL,
//      as the table does), COPY to one ZSTD Parquet file with the table's field
//      ids (FIELD_IDS), the row count checked against the manifests', upload;
//   3. commit one snapshot, operation `replace`: manifests that held a
//      replaced file are rewritten (the file DELETED, the others EXISTING, with
//      the snapshot ids and sequence numbers they had), a new manifest ADDs the
//      new files, every other manifest is reused as is; requirements
//      `assert-table-uuid` and `assert-ref-snapshot-id main = the planned
//      snapshot`, so the catalog refuses it if anything landed meanwhile;
//   4. 409 (an append landed): reload, keep the bins whose inputs are all
//      still live (appends only add files, so normally all of them), rebuild
//      the manifests on the new head, commit again; at most
//      `conflictRetriesMax` times. Rewritten files are not redone.
//
// Old data files are never deleted: earlier snapshots still reference them,
// and removing them is snapshot expiry's job (not part of Landfall). Manifest
// entries are carried generically (the whole `data_file` record, partition
// tuple, stats and all), in the Avro schema of the manifest they came from.
import { randomBytes, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { inflateRawSync } from 'node:zlib';
import type { ParquetDb } from '../parquet/duckdb.ts';
import { sqlString } from '../parquet/duckdb.ts';
import { JOBS_DIR } from '../parquet/duckdb.ts';
import type { ObjectStore } from '../store/types.ts';
import { silentLogger, type Logger } from '../log.ts';
import { decodeAvroContainer, encodeAvroContainer, type AvroSchema } from './avro.ts';
import { toBigInt, type LoadedTable, type RestCatalog, type TableMetadata } from './catalog.ts';
import { IcebergError } from './errors.ts';
import { manifestFileEntryFrom, manifestFileSchema, type ManifestFileEntry } from './manifest.ts';
import type { IcebergSchema } from './schema.ts';
import {
  compactionBinsMaxDefault,
  compactionMinFilesDefault,
  compactionTargetFileBytesDefault,
} from './compaction-settings.ts';

export {
  compactionBinsMaxDefault,
  compactionMinFilesDefault,
  compactionTargetFileBytesDefault,
} from './compaction-settings.ts';

export interface CompactOptions {
  readonly catalog: RestCatalog;
  /** Where the data files and manifests are (the node's bucket). */
  readonly store: ObjectStore;
  readonly bucket: string;
  /** Key prefix: new files go under `<prefix>/iceberg/<namespace>/<table>/{data,metadata}/`. */
  readonly prefix: string;
  /** A DuckDB with a scratch folder: inputs are downloaded under its `jobs/`. */
  readonly db: ParquetDb;
  readonly namespace: string;
  readonly table: string;
  /** Files at or above this size are left alone; a bin's inputs add up to at most this. */
  readonly targetFileBytes?: number;
  /** A partition needs at least this many small files to be rewritten. */
  readonly minFiles?: number;
  /** Bins rewritten in one run (bounds one run's work; the next run takes the rest). */
  readonly binsMax?: number;
  readonly conflictRetriesMax?: number;
  /** Plan only: nothing is downloaded, written or committed. */
  readonly dryRun?: boolean;
  /** Stops the run before its next rewrite or commit (a node shutting down). */
  readonly signal?: AbortSignal;
  readonly log?: Logger;
  readonly nowMs?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
  /**
   * Called after the files are rewritten and uploaded, before each commit
   * attempt (with the attempt number, 0 first). Tests land an append here to
   * take the conflict path deterministically.
   */
  readonly beforeCommit?: (attempt: number) => Promise<void>;
}

export interface CompactionBin {
  readonly specId: number;
  /** The partition tuple, as JSON (bytes as hex, longs as strings). */
  readonly partition: string;
  readonly files: number;
  readonly rows: number;
  readonly inputBytes: number;
  /** Set once rewritten (not in a dry run). */
  readonly outputPath?: string;
  readonly outputBytes?: number;
}

export interface CompactionResult {
  readonly namespace: string;
  readonly table: string;
  readonly dryRun: boolean;
  /** The snapshot planned from (the last one, after conflicts); null for a table without snapshots. */
  readonly baseSnapshotId: string | null;
  /** The replace snapshot; null when nothing was committed. */
  readonly snapshotId: string | null;
  /** Live data files of the current snapshot before and after (after = before in a dry run or no-op). */
  readonly dataFilesBefore: number;
  readonly dataFilesAfter: number;
  /** Manifests of the current snapshot before and after. */
  readonly manifestsBefore: number;
  readonly manifestsAfter: number;
  readonly bins: readonly CompactionBin[];
  /** Bins whose rewritten file was dropped because an input was no longer live after a conflict. */
  readonly binsDropped: number;
  readonly conflicts: number;
  readonly durationMs: number;
}

/** Upper bounds on what one run holds in memory. */
const manifestListBytesMax = 64 * 1024 * 1024;
const manifestBytesMax = 256 * 1024 * 1024;
const manifestsMax = 200_000;
const manifestReadConcurrency = 8;

interface ManifestData {
  readonly schema: AvroSchema;
  readonly metadata: Readonly<Record<string, string>>;
  readonly entries: readonly Record<string, unknown>[];
}

interface ListEntry {
  /** Normalized to the v2 `manifest_file` fields this writer encodes. */
  readonly file: ManifestFileEntry;
}

interface LiveFile {
  readonly path: string;
  readonly key: string;
  readonly bytes: number;
  readonly rows: number;
  readonly specId: number;
  readonly partitionKey: string;
  readonly manifestPath: string;
  /** The entry as read, for carrying its data_file record. */
  readonly entry: Record<string, unknown>;
}

interface Bin {
  readonly specId: number;
  readonly partitionKey: string;
  readonly inputs: readonly LiveFile[];
  readonly rows: number;
  readonly inputBytes: number;
  output?: { readonly path: string; readonly key: string; readonly bytes: number };
}

interface Snapshot {
  readonly id: bigint | null;
  readonly manifests: readonly ListEntry[];
  readonly data: ReadonlyMap<string, ManifestData>;
  readonly live: readonly LiveFile[];
}

function jsonKey(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => {
    if (typeof x === 'bigint') return x.toString();
    if (x !== null && typeof x === 'object' && (x as { type?: unknown }).type === 'Buffer')
      return Buffer.from((x as { data: number[] }).data).toString('hex');
    return x;
  });
}

/** A positive id below 2^53: exact as a JSON number in any reader. */
function newSnapshotId(): bigint {
  const b = randomBytes(8);
  const id = b.readBigUInt64BE() & ((1n << 53n) - 1n);
  return id === 0n ? 1n : id;
}

const primitives = new Set(['null', 'boolean', 'int', 'long', 'float', 'double', 'bytes', 'string']);

/**
 * Whether avro.ts's encoder can write `schema` back exactly: primitives,
 * `[null, T]` unions, records, arrays, maps. A manifest of another writer
 * using named references, enums or fixed is refused, never half-written.
 */
function encodable(schema: unknown, depth = 0): boolean {
  if (depth > 32) return false;
  if (typeof schema === 'string') return primitives.has(schema);
  if (Array.isArray(schema))
    return (
      schema.length === 2 &&
      schema.filter((s) => s === 'null').length === 1 &&
      schema.every((s) => encodable(s, depth + 1))
    );
  if (schema === null || typeof schema !== 'object') return false;
  const s = schema as Record<string, unknown>;
  switch (s['type']) {
    case 'record':
      return (
        Array.isArray(s['fields']) &&
        (s['fields'] as { type: unknown }[]).every((f) => encodable(f.type, depth + 1))
      );
    case 'array':
      return encodable(s['items'], depth + 1);
    case 'map':
      return encodable(s['values'], depth + 1);
    default:
      return typeof s['type'] === 'string' && primitives.has(s['type']);
  }
}

const num = (v: unknown): number => (typeof v === 'bigint' ? Number(v) : (v as number));

export class TableCompactor {
  readonly #o: CompactOptions;
  readonly #log: Logger;
  /** Manifests are immutable: read once per run, whatever the retries. */
  readonly #manifests = new Map<string, ManifestData>();
  readonly #bucketPrefix: string;

  constructor(o: CompactOptions) {
    this.#o = o;
    this.#log = o.log ?? silentLogger;
    this.#bucketPrefix = `s3://${o.bucket}/`;
  }

  #key(kind: 'data' | 'metadata', name: string): string {
    const p = this.#o.prefix === '' ? '' : `${this.#o.prefix}/`;
    return `${p}iceberg/${this.#o.namespace}/${this.#o.table}/${kind}/${name}`;
  }

  #inBucket(uri: string, what: string): string {
    if (!uri.startsWith(this.#bucketPrefix))
      throw new IcebergError(
        'ICEBERG_TABLE_UNSUPPORTED',
        `${what} ${uri} is outside the bucket (${this.#bucketPrefix}): compaction reads through the node's store`,
      );
    return uri.slice(this.#bucketPrefix.length);
  }

  async #get(uri: string, what: string, bytesMax: number): Promise<Buffer> {
    const body = await this.#o.store.get(this.#inBucket(uri, what), { bytesMax });
    if (body === null) throw new IcebergError('ICEBERG_TABLE_UNSUPPORTED', `${what} ${uri} is missing`);
    return body;
  }

  async #manifest(uri: string): Promise<ManifestData> {
    const cached = this.#manifests.get(uri);
    if (cached !== undefined) return cached;
    const body = await this.#get(uri, 'manifest', manifestBytesMax);
    let c;
    try {
      c = decodeAvroContainer(body, inflateRawSync);
    } catch (err) {
      throw new IcebergError('ICEBERG_TABLE_UNSUPPORTED', `manifest ${uri}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const data: ManifestData = {
      schema: c.schema as AvroSchema,
      metadata: c.metadata,
      entries: c.objects as Record<string, unknown>[],
    };
    this.#manifests.set(uri, data);
    return data;
  }

  /** The head of main: its manifests and live data files. */
  async #read(m: TableMetadata): Promise<Snapshot> {
    const head = toBigInt(m.refs?.['main']?.['snapshot-id'] ?? m['current-snapshot-id']);
    if (head === null || head < 0n) return { id: null, manifests: [], data: new Map(), live: [] };
    const snap = m.snapshots?.find((s) => toBigInt(s['snapshot-id']) === head);
    if (snap === undefined)
      throw new IcebergError('ICEBERG_TABLE_UNSUPPORTED', `main points at snapshot ${head}, not listed`);
    const listBody = await this.#get(snap['manifest-list'], 'manifest list', manifestListBytesMax);
    let objects: readonly unknown[];
    try {
      objects = decodeAvroContainer(listBody, inflateRawSync).objects;
    } catch (err) {
      throw new IcebergError(
        'ICEBERG_TABLE_UNSUPPORTED',
        `manifest list ${snap['manifest-list']}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    if (objects.length > manifestsMax)
      throw new IcebergError(
        'ICEBERG_TABLE_UNSUPPORTED',
        `${objects.length} manifests in one snapshot (bound ${manifestsMax})`,
      );
    const manifests = objects.map((o) => ({ file: manifestFileEntryFrom(o) }));
    for (const { file } of manifests)
      if (file.content !== 0 && file.added_files_count + file.existing_files_count > 0)
        throw new IcebergError(
          'ICEBERG_TABLE_UNSUPPORTED',
          `the table has delete files (${file.manifest_path}): compacting around row deletes is not supported`,
        );
    const data = new Map<string, ManifestData>();
    for (let i = 0; i < manifests.length; i += manifestReadConcurrency) {
      const chunk = manifests.slice(i, i + manifestReadConcurrency);
      const read = await Promise.all(chunk.map((e) => this.#manifest(e.file.manifest_path)));
      chunk.forEach((e, j) => data.set(e.file.manifest_path, read[j]!));
    }
    const live: LiveFile[] = [];
    for (const { file } of manifests) {
      const md = data.get(file.manifest_path)!;
      for (const entry of md.entries) {
        if (entry['status'] === 2) continue;
        const df = entry['data_file'] as Record<string, unknown>;
        const p = df['file_path'] as string;
        // Only Parquet data files in the node's bucket are candidates; the rest stay as they are.
        if ((df['content'] ?? 0) !== 0 || String(df['file_format']).toUpperCase() !== 'PARQUET') continue;
        if (!p.startsWith(this.#bucketPrefix)) continue;
        live.push({
          path: p,
          key: p.slice(this.#bucketPrefix.length),
          bytes: num(df['file_size_in_bytes']),
          rows: num(df['record_count']),
          specId: file.partition_spec_id,
          partitionKey: jsonKey(df['partition'] ?? {}),
          manifestPath: file.manifest_path,
          entry,
        });
      }
    }
    return { id: head, manifests, data, live };
  }

  #plan(s: Snapshot): Bin[] {
    const target = this.#o.targetFileBytes ?? compactionTargetFileBytesDefault;
    const minFiles = this.#o.minFiles ?? compactionMinFilesDefault;
    const binsMax = this.#o.binsMax ?? compactionBinsMaxDefault;
    const groups = new Map<string, LiveFile[]>();
    for (const f of s.live) {
      if (f.bytes >= target) continue;
      const k = `${f.specId}\0${f.partitionKey}`;
      let g = groups.get(k);
      if (g === undefined) groups.set(k, (g = []));
      g.push(f);
    }
    const bins: Bin[] = [];
    for (const g of groups.values()) {
      if (g.length < minFiles) continue;
      // Manifest order is commit order: a bin keeps neighbouring segments together.
      let cur: LiveFile[] = [];
      let bytes = 0;
      const flush = (): void => {
        if (cur.length >= 2)
          bins.push({
            specId: cur[0]!.specId,
            partitionKey: cur[0]!.partitionKey,
            inputs: cur,
            rows: cur.reduce((n, f) => n + f.rows, 0),
            inputBytes: bytes,
          });
        cur = [];
        bytes = 0;
      };
      for (const f of g) {
        if (bytes + f.bytes > target) flush();
        cur.push(f);
        bytes += f.bytes;
      }
      flush();
    }
    return bins.slice(0, binsMax);
  }

  /** The table's current schema: field ids for the rewritten file, by column name. */
  #schema(m: TableMetadata): IcebergSchema {
    const schema = m.schemas.find((s) => s['schema-id'] === m['current-schema-id']);
    if (schema === undefined)
      throw new IcebergError('ICEBERG_TABLE_UNSUPPORTED', 'the current schema is not listed');
    return schema;
  }

  /** Downloads a bin's inputs, writes them as one file, uploads it. */
  async #rewrite(bin: Bin, schema: IcebergSchema, runId: string, index: number): Promise<void> {
    const db = this.#o.db;
    if (db.scratchDir === undefined) throw new Error('compaction needs a DuckDB with a scratch folder');
    const dir = path.join(db.scratchDir, JOBS_DIR, `iceberg-compact-${runId}-${index}`);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    try {
      const locals: string[] = [];
      for (const [i, f] of bin.inputs.entries()) {
        const body = await this.#o.store.getStream(f.key);
        if (body === null)
          throw new IcebergError('ICEBERG_TABLE_UNSUPPORTED', `data file ${f.path} is missing`);
        const local = path.join(dir, `in-${String(i).padStart(6, '0')}.parquet`);
        await pipeline(body, createWriteStream(local));
        locals.push(local);
      }
      const out = path.join(dir, 'out.parquet');
      const ids = new Map(schema.fields.map((f) => [f.name, f.id]));
      const rows = await db.withConnection(async (c) => {
        const source = `read_parquet([${locals.map(sqlString).join(', ')}], union_by_name = true)`;
        const described = (await c.runAndReadAll(`DESCRIBE SELECT * FROM ${source}`)).getRowObjectsJson() as {
          column_name: string;
        }[];
        const columns = described.map((d) => d.column_name);
        const unknown = columns.filter((n) => !ids.has(n));
        if (unknown.length > 0)
          throw new IcebergError(
            'ICEBERG_SCHEMA_MISMATCH',
            `data files have columns the table's current schema lacks (${unknown.join(', ')}): not rewritten`,
          );
        const quoted = (n: string): string => `"${n.replaceAll('"', '""')}"`;
        const fieldIds = `{${columns.map((n) => `${sqlString(n)}: ${ids.get(n)!}`).join(', ')}}`;
        const r = await c.runAndReadAll(
          `COPY (SELECT ${columns.map(quoted).join(', ')} FROM ${source}) TO ${sqlString(out)} ` +
            `(FORMAT parquet, COMPRESSION zstd, FIELD_IDS ${fieldIds}, RETURN_STATS)`,
        );
        const stats = r.getRowObjectsJson() as { count: string | number }[];
        return stats.reduce((n, s) => n + Number(s.count), 0);
      });
      // The manifests' record counts are what readers trust: a rewrite that disagrees is never committed.
      if (rows !== bin.rows)
        throw new Error(
          `rewrite of ${bin.inputs.length} files wrote ${rows} rows, the manifests count ${bin.rows}: not committed`,
        );
      const bytes = (await stat(out)).size;
      const key = this.#key('data', `compacted-${runId}-${String(index).padStart(5, '0')}.parquet`);
      await this.#o.store.put(key, createReadStream(out), {
        contentLength: bytes,
        contentType: 'application/vnd.apache.parquet',
      });
      bin.output = { path: `${this.#bucketPrefix}${key}`, key, bytes };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** Writes the manifests and manifest list of the replace snapshot on `base`. */
  async #snapshotFiles(
    base: Snapshot,
    bins: readonly Bin[],
    snapshotId: bigint,
    sequenceNumber: bigint,
    runId: string,
  ): Promise<{
    list: string;
    manifests: number;
    added: number;
    deleted: number;
    addedRows: number;
    deletedRows: number;
  }> {
    const replaced = new Set(bins.flatMap((b) => b.inputs.map((f) => f.path)));
    const listEntries: ManifestFileEntry[] = [];
    let written = 0;
    const put = async (data: Buffer): Promise<string> => {
      const key = this.#key('metadata', `compact-${snapshotId}-${runId}-m${written++}.avro`);
      await this.#o.store.put(key, data, { contentType: 'avro/binary' });
      return `${this.#bucketPrefix}${key}`;
    };
    let deleted = 0;
    let deletedRows = 0;

    // Manifests that hold a replaced file are rewritten, merged into one per
    // (spec, Avro schema): a segment's manifest usually holds just its files,
    // and one small manifest per replaced file would be as bad as the files.
    const touched = new Map<string, { md: ManifestData; files: ManifestFileEntry[] }>();
    for (const { file } of base.manifests) {
      const md = base.data.get(file.manifest_path)!;
      const live = md.entries.filter((e) => e['status'] !== 2);
      // A manifest with nothing live (an earlier compaction's deletions) is left behind.
      if (live.length === 0) continue;
      if (!live.some((e) => replaced.has((e['data_file'] as { file_path: string }).file_path))) {
        listEntries.push(file);
        continue;
      }
      if (!encodable(md.schema))
        throw new IcebergError(
          'ICEBERG_TABLE_UNSUPPORTED',
          `manifest ${file.manifest_path} uses Avro this writer cannot write back`,
        );
      const k = `${file.partition_spec_id}\0${JSON.stringify(md.schema)}`;
      const t = touched.get(k) ?? { md, files: [] };
      t.files.push(file);
      touched.set(k, t);
    }
    for (const { md, files: sources } of touched.values()) {
      // Entries keep what inheritance gave them, written out: they are no longer ADDED by their manifest.
      const entries: Record<string, unknown>[] = [];
      let existing = 0;
      let existingRows = 0;
      let dels = 0;
      let delRows = 0;
      let minSeq: bigint | null = null;
      for (const file of sources) {
        for (const e of base.data.get(file.manifest_path)!.entries) {
          if (e['status'] === 2) continue; // deletions of an earlier snapshot are not carried
          const df = e['data_file'] as Record<string, unknown>;
          const inheritedSeq = e['status'] === 1 ? toBigInt(file.sequence_number) : null;
          const seq = toBigInt(e['sequence_number'] as bigint | null) ?? inheritedSeq;
          const fileSeq = toBigInt(e['file_sequence_number'] as bigint | null) ?? inheritedSeq;
          const snap = toBigInt(e['snapshot_id'] as bigint | null) ?? toBigInt(file.added_snapshot_id);
          const gone = replaced.has(df['file_path'] as string);
          const rows = num(df['record_count']);
          if (gone) {
            dels++;
            delRows += rows;
          } else {
            existing++;
            existingRows += rows;
            if (seq !== null && (minSeq === null || seq < minSeq)) minSeq = seq;
          }
          entries.push({
            ...e,
            status: gone ? 2 : 0,
            snapshot_id: gone ? snapshotId : snap,
            sequence_number: seq,
            file_sequence_number: fileSeq,
          });
        }
      }
      const body = encodeAvroContainer(md.schema, entries, this.#headerOf(md));
      // The sources' partition summary still holds when they agree (entries only went away); else none.
      const summaries = new Set(sources.map((f) => jsonKey(f.partitions)));
      listEntries.push({
        manifest_path: await put(body),
        manifest_length: body.length,
        partition_spec_id: sources[0]!.partition_spec_id,
        content: 0,
        sequence_number: sequenceNumber,
        min_sequence_number: minSeq ?? sequenceNumber,
        added_snapshot_id: snapshotId,
        added_files_count: 0,
        existing_files_count: existing,
        deleted_files_count: dels,
        added_rows_count: 0,
        existing_rows_count: existingRows,
        deleted_rows_count: delRows,
        partitions: summaries.size === 1 ? sources[0]!.partitions : null,
        key_metadata: null,
      });
      deleted += dels;
      deletedRows += delRows;
    }

    // One manifest per (spec, Avro schema of the inputs' manifests) ADDs the
    // rewritten files: each entry is written in the schema its template came in.
    const bySchema = new Map<string, { specId: number; md: ManifestData; bins: Bin[] }>();
    for (const b of bins) {
      const md = base.data.get(b.inputs[0]!.manifestPath)!;
      const k = `${b.specId}\0${JSON.stringify(md.schema)}`;
      const g = bySchema.get(k) ?? { specId: b.specId, md, bins: [] };
      g.bins.push(b);
      bySchema.set(k, g);
    }
    let added = 0;
    let addedRows = 0;
    for (const { specId, md, bins: group } of bySchema.values()) {
      if (!encodable(md.schema))
        throw new IcebergError(
          'ICEBERG_TABLE_UNSUPPORTED',
          `manifest ${group[0]!.inputs[0]!.manifestPath} uses Avro this writer cannot write back`,
        );
      const entries = group.map((b) => {
        const template = b.inputs[0]!.entry;
        const df = template['data_file'] as Record<string, unknown>;
        return {
          ...template,
          status: 1,
          snapshot_id: null,
          sequence_number: null,
          file_sequence_number: null,
          data_file: {
            ...df,
            content: 0,
            file_path: b.output!.path,
            file_format: 'PARQUET',
            partition: df['partition'],
            record_count: BigInt(b.rows),
            file_size_in_bytes: BigInt(b.output!.bytes),
            // Per-file stats of the inputs do not describe the new file; counts add up, the rest is unknown.
            ...this.#summedCounts(b),
            column_sizes: null,
            nan_value_counts: null,
            lower_bounds: null,
            upper_bounds: null,
            key_metadata: null,
            split_offsets: null,
            equality_ids: null,
            sort_order_id: null,
          },
        };
      });
      const body = encodeAvroContainer(md.schema, entries, this.#headerOf(md));
      const rows = group.reduce((n, b) => n + b.rows, 0);
      listEntries.unshift({
        manifest_path: await put(body),
        manifest_length: body.length,
        partition_spec_id: specId,
        content: 0,
        sequence_number: sequenceNumber,
        min_sequence_number: sequenceNumber,
        added_snapshot_id: snapshotId,
        added_files_count: group.length,
        existing_files_count: 0,
        deleted_files_count: 0,
        added_rows_count: rows,
        existing_rows_count: 0,
        deleted_rows_count: 0,
        partitions: null,
        key_metadata: null,
      });
      added += group.length;
      addedRows += rows;
    }

    const list = encodeAvroContainer(manifestFileSchema, listEntries, {
      'snapshot-id': snapshotId.toString(),
      'parent-snapshot-id': base.id === null ? 'null' : base.id.toString(),
      'sequence-number': sequenceNumber.toString(),
      'format-version': '2',
    });
    const listKey = this.#key('metadata', `snap-${snapshotId}-compact-${runId}.avro`);
    await this.#o.store.put(listKey, list, { contentType: 'avro/binary' });
    return {
      list: `${this.#bucketPrefix}${listKey}`,
      manifests: listEntries.length,
      added,
      deleted,
      addedRows,
      deletedRows,
    };
  }

  #headerOf(md: ManifestData): Record<string, string> {
    const h: Record<string, string> = {};
    for (const [k, v] of Object.entries(md.metadata)) if (!k.startsWith('avro.')) h[k] = v;
    return h;
  }

  /** value_counts / null_value_counts of the new file: the inputs' sums, for columns every input counts. */
  #summedCounts(b: Bin): { value_counts: unknown; null_value_counts: unknown } {
    const sum = (field: string): unknown => {
      const totals = new Map<number, bigint>();
      for (const [i, f] of b.inputs.entries()) {
        const list = (f.entry['data_file'] as Record<string, unknown>)[field] as
          { key: number; value: bigint }[] | null | undefined;
        if (!Array.isArray(list)) return null;
        const seen = new Set<number>();
        for (const kv of list) {
          seen.add(kv.key);
          if (i === 0 || totals.has(kv.key))
            totals.set(kv.key, (totals.get(kv.key) ?? 0n) + BigInt(kv.value));
        }
        for (const k of totals.keys()) if (!seen.has(k)) totals.delete(k);
      }
      return [...totals].map(([key, value]) => ({ key, value }));
    };
    return { value_counts: sum('value_counts'), null_value_counts: sum('null_value_counts') };
  }

  async #load(): Promise<LoadedTable> {
    const t = await this.#o.catalog.loadTable(this.#o.namespace, this.#o.table);
    if (t === null)
      throw new IcebergError(
        'ICEBERG_CATALOG_ERROR',
        `table ${this.#o.namespace}.${this.#o.table} not found`,
      );
    if (t.metadata['format-version'] !== 2)
      throw new IcebergError(
        'ICEBERG_TABLE_UNSUPPORTED',
        `table ${this.#o.namespace}.${this.#o.table} is format v${t.metadata['format-version']}; compaction needs v2`,
      );
    return t;
  }

  async run(): Promise<CompactionResult> {
    const t0 = Date.now();
    const o = this.#o;
    const nowMs = o.nowMs ?? Date.now;
    const sleep = o.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
    const conflictsMax = o.conflictRetriesMax ?? 20;
    const runId = randomUUID().slice(0, 8);
    let loaded = await this.#load();
    let base = await this.#read(loaded.metadata);
    const filesBefore = base.live.length;
    const manifestsBefore = base.manifests.length;
    const bins = this.#plan(base);
    const describe = (b: Bin): CompactionBin => ({
      specId: b.specId,
      partition: b.partitionKey,
      files: b.inputs.length,
      rows: b.rows,
      inputBytes: b.inputBytes,
      ...(b.output !== undefined ? { outputPath: b.output.path, outputBytes: b.output.bytes } : {}),
    });
    const result = (
      extra: Pick<CompactionResult, 'snapshotId' | 'dataFilesAfter' | 'conflicts' | 'binsDropped'> &
        Partial<Pick<CompactionResult, 'manifestsAfter'>>,
      done: readonly Bin[],
    ): CompactionResult => ({
      namespace: o.namespace,
      table: o.table,
      dryRun: o.dryRun === true,
      baseSnapshotId: base.id === null ? null : base.id.toString(),
      dataFilesBefore: filesBefore,
      manifestsBefore,
      manifestsAfter: base.manifests.length,
      bins: done.map(describe),
      durationMs: Date.now() - t0,
      ...extra,
    });
    if (o.dryRun === true || bins.length === 0)
      return result({ snapshotId: null, dataFilesAfter: filesBefore, conflicts: 0, binsDropped: 0 }, bins);

    const schema = this.#schema(loaded.metadata);
    let live: Bin[] = [];
    for (const [i, b] of bins.entries()) {
      o.signal?.throwIfAborted();
      try {
        await this.#rewrite(b, schema, runId, i);
        live.push(b);
      } catch (err) {
        // One partition's odd files must not stop the others.
        if (!(err instanceof IcebergError) || err.code !== 'ICEBERG_SCHEMA_MISMATCH') throw err;
        this.#log.warn({ table: `${o.namespace}.${o.table}`, err }, 'iceberg compaction skipped a bin');
      }
    }
    let dropped = 0;
    for (let conflicts = 0; ;) {
      if (live.length === 0)
        return result(
          { snapshotId: null, dataFilesAfter: base.live.length, conflicts, binsDropped: dropped },
          [],
        );
      o.signal?.throwIfAborted();
      await o.beforeCommit?.(conflicts);
      const m = loaded.metadata;
      const snapshotId = newSnapshotId();
      const sequenceNumber = (toBigInt(m['last-sequence-number']) ?? 0n) + 1n;
      const files = await this.#snapshotFiles(base, live, snapshotId, sequenceNumber, runId);
      const inBytes = live.reduce((n, b) => n + b.inputBytes, 0);
      const outBytes = live.reduce((n, b) => n + b.output!.bytes, 0);
      try {
        await o.catalog.commitTable(
          o.namespace,
          o.table,
          [
            { type: 'assert-table-uuid', uuid: m['table-uuid'] },
            { type: 'assert-ref-snapshot-id', ref: 'main', 'snapshot-id': base.id },
          ],
          [
            {
              action: 'add-snapshot',
              snapshot: {
                'snapshot-id': snapshotId,
                ...(base.id !== null ? { 'parent-snapshot-id': base.id } : {}),
                'sequence-number': sequenceNumber,
                'timestamp-ms': nowMs(),
                'manifest-list': files.list,
                'schema-id': m['current-schema-id'],
                summary: {
                  operation: 'replace',
                  'added-data-files': String(files.added),
                  'deleted-data-files': String(files.deleted),
                  'added-records': String(files.addedRows),
                  'deleted-records': String(files.deletedRows),
                  'added-files-size': String(outBytes),
                  'removed-files-size': String(inBytes),
                  'landfall.compaction': runId,
                },
              },
            },
            { action: 'set-snapshot-ref', 'ref-name': 'main', type: 'branch', 'snapshot-id': snapshotId },
          ],
        );
        const dataFilesAfter = base.live.length - files.deleted + files.added;
        this.#log.info(
          {
            table: `${o.namespace}.${o.table}`,
            snapshotId: snapshotId.toString(),
            filesDeleted: files.deleted,
            filesAdded: files.added,
            dataFilesAfter,
            conflicts,
          },
          'iceberg compaction committed',
        );
        return result(
          {
            snapshotId: snapshotId.toString(),
            dataFilesAfter,
            manifestsAfter: files.manifests,
            conflicts,
            binsDropped: dropped,
          },
          live,
        );
      } catch (err) {
        if (!(err instanceof IcebergError) || err.code !== 'ICEBERG_COMMIT_CONFLICT') throw err;
        conflicts++;
        if (conflicts > conflictsMax)
          throw new IcebergError(
            'ICEBERG_COMMIT_CONFLICTS_EXHAUSTED',
            `${o.namespace}.${o.table}: ${conflicts} commit conflicts in a row; compaction gives up (the rewritten files are left unreferenced)`,
            { cause: err },
          );
        await sleep(Math.floor(Math.random() * Math.min(2_000, 50 * 2 ** Math.min(conflicts, 6))));
        loaded = await this.#load();
        base = await this.#read(loaded.metadata);
        // Appends only add files; a bin loses out only if another compaction took one of its inputs.
        // Inputs are taken from the new head (the manifest that holds each may have changed).
        const stillLive = new Map(base.live.map((f) => [f.path, f]));
        const kept: Bin[] = [];
        for (const b of live) {
          const inputs = b.inputs.map((f) => stillLive.get(f.path));
          if (inputs.every((f) => f !== undefined)) kept.push({ ...b, inputs });
        }
        dropped += live.length - kept.length;
        if (kept.length < live.length)
          this.#log.warn(
            { table: `${o.namespace}.${o.table}`, dropped: live.length - kept.length },
            'iceberg compaction: inputs replaced meanwhile; those rewritten files stay unreferenced',
          );
        live = kept;
      }
    }
  }
}

/** Compacts one table (see TableCompactor). */
export function compactTable(o: CompactOptions): Promise<CompactionResult> {
  return new TableCompactor(o).run();
}
