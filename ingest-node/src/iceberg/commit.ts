// Appending one segment's View files to the View's Iceberg table, exactly once.
//
// Protocol (docs/iceberg.md "Commit protocol"), per sealed segment, after the
// View's Parquet files are in the bucket and before the commit marker:
//
//   1. load the table (create namespace and table on first use);
//   2. look for a snapshot whose summary names this segment (landfall.endpoint,
//      .instance, .epoch, .segment-id): found means an earlier attempt
//      committed (a crash or a lost answer after the commit) → use its id;
//   3. write the segment's manifest (same key and bytes on every attempt) and
//      a manifest list: the new manifest plus every manifest of the parent;
//   4. commit add-snapshot + set main, requiring main to still be the parent
//      (`assert-ref-snapshot-id`) and the table to be the same (`assert-table-uuid`);
//   5. 409 (another writer moved main): reload and go to 2, at most
//      `conflictRetriesMax` times; an unknown outcome (5xx, timeout) is thrown
//      as retryable and the pipeline's next attempt starts again at 1, so it
//      finds the snapshot if the commit did happen.
//
// The commit marker, written after this, names the table and snapshot id.
import { randomBytes } from 'node:crypto';
import { inflateRawSync } from 'node:zlib';
import type { ObjectStore } from '../store/types.ts';
import { decodeAvroContainer } from './avro.ts';
import type { RestCatalog } from './catalog.ts';
import { toBigInt, type LoadedTable, type Snapshot, type TableMetadata } from './catalog.ts';
import { IcebergError } from './errors.ts';
import {
  encodeManifest,
  encodeManifestList,
  manifestFileEntryFrom,
  type ManifestFileEntry,
} from './manifest.ts';
import {
  bindSpec,
  fieldSummaries,
  partitionAvroType,
  partitionValue,
  specForView,
  type BoundPartitionField,
  type ViewPartitionLevel,
} from './partition.ts';
import type { HivePartition } from '../delivery/keys.ts';
import { decodeFooter, footerBytesNeeded, footerFieldIds, footerMetrics, FooterError } from './footer.ts';
import {
  checkViewFitsTable,
  nameMapping,
  viewToIcebergSchema,
  type IcebergSchema,
  type ViewColumns,
} from './schema.ts';

/** Summary keys that identify the segment a snapshot appended. */
export const summaryKeys = {
  endpoint: 'landfall.endpoint',
  instance: 'landfall.instance',
  epoch: 'landfall.epoch',
  segmentId: 'landfall.segment-id',
  view: 'landfall.view',
  specSha256: 'landfall.spec-sha256',
} as const;

export interface SegmentIdentity {
  readonly endpoint: string;
  readonly instance: string;
  readonly epoch: string;
  /** 20-digit zero-padded, as in keys and markers. */
  readonly segmentId: string;
}

export interface SegmentAppend {
  readonly namespace: string;
  readonly table: string;
  readonly view: ViewColumns & {
    readonly specSha256: string;
    /** The View's partition levels (a new table's spec is derived from them); none: unpartitioned. */
    readonly partitioning?: readonly ViewPartitionLevel[];
  };
  readonly segment: SegmentIdentity;
  /** The View's Parquet objects of this segment (keys in the node's bucket). */
  readonly files: readonly {
    readonly key: string;
    readonly bytes: number;
    readonly rows: number;
    /** The file's decoded partition levels (partition.ts partitionsOfViewKey), by alias. */
    readonly partitions?: readonly HivePartition[];
  }[];
}

export interface TableCommit {
  readonly namespace: string;
  readonly table: string;
  /** Decimal string (a long). */
  readonly snapshotId: string;
  /** True when an earlier attempt's snapshot was found instead of a new commit. */
  readonly found: boolean;
  /** 409s met on the way. */
  readonly conflicts: number;
}

export interface IcebergWriterOptions {
  readonly catalog: RestCatalog;
  /** The node's store: data files are already there; manifests go there too. */
  readonly store: ObjectStore;
  /** The store's bucket (data file paths are `s3://<bucket>/<key>`). */
  readonly bucket: string;
  /** Key prefix for manifests: `<prefix>/iceberg/<namespace>/<table>/metadata/`. */
  readonly prefix: string;
  /** 409s tolerated in one call before giving up (retryable) to the pipeline's backoff. Default 20. */
  readonly conflictRetriesMax?: number;
  readonly nowMs?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly random?: () => number;
}

type Footer = ReturnType<typeof decodeFooter>;

/** First ranged read of a data file's tail: a flat View file's footer is a few KiB. */
const footerTailBytes = 64 * 1024;
/** Footers fetched at once per append (a segment may have up to views.partitionFilesMax files). */
const footerReadsConcurrent = 8;

/** Upper bound on parent manifest lists we read back (they are small Avro files). */
const manifestListBytesMax = 64 * 1024 * 1024;

export function snapshotOfSegment(m: TableMetadata, s: SegmentIdentity): Snapshot | undefined {
  return m.snapshots?.find(
    (snap) =>
      snap.summary[summaryKeys.segmentId] === s.segmentId &&
      snap.summary[summaryKeys.epoch] === s.epoch &&
      snap.summary[summaryKeys.instance] === s.instance &&
      snap.summary[summaryKeys.endpoint] === s.endpoint,
  );
}

/** A positive id below 2^53: exact as a JSON number in any reader. */
function newSnapshotId(): bigint {
  const b = randomBytes(8);
  b[0] = b[0]! & 0x1f;
  const id = b.readBigUInt64BE() & ((1n << 53n) - 1n);
  return id === 0n ? 1n : id;
}

/**
 * Readers resolve a file's columns by its Parquet field ids when it has them
 * (the name mapping is only for files without): ids that are not the table's
 * would read another column's values, so such a file is refused.
 */
function checkFileFieldIds(meta: Footer, schema: IcebergSchema, key: string): void {
  const byName = new Map(schema.fields.map((f) => [f.name, f.id]));
  for (const [name, id] of footerFieldIds(meta)) {
    if (id === undefined) continue;
    if (byName.get(name) !== id)
      throw new IcebergError(
        'ICEBERG_SCHEMA_MISMATCH',
        `${key}: column ${name} has Parquet field id ${id}, the table's field ${name} is ${byName.get(name) ?? 'absent'}`,
      );
  }
}

/** A file's tuple: each spec field's value from the View level it is bound to. */
function partitionTuple(
  bound: readonly BoundPartitionField[],
  levels: readonly HivePartition[],
  key: string,
): ReturnType<typeof partitionValue>[] {
  return bound.map((b) => {
    const level = levels.find(([alias]) => alias === b.alias);
    if (level === undefined)
      throw new IcebergError('ICEBERG_PARTITION_MISMATCH', `${key} has no partition level ${b.alias}`);
    return partitionValue(b, level[1]);
  });
}

function s3Uri(bucket: string, key: string): string {
  return `s3://${bucket}/${key}`;
}

export class IcebergWriter {
  readonly #o: IcebergWriterOptions;

  constructor(o: IcebergWriterOptions) {
    this.#o = o;
  }

  #metadataKey(a: SegmentAppend, name: string): string {
    const p = this.#o.prefix === '' ? '' : `${this.#o.prefix}/`;
    return `${p}iceberg/${a.namespace}/${a.table}/metadata/${name}`;
  }

  async #ensureTable(a: SegmentAppend): Promise<LoadedTable> {
    const c = this.#o.catalog;
    const t = await c.loadTable(a.namespace, a.table);
    if (t !== null) return t;
    await c.ensureNamespace(a.namespace);
    const schema = viewToIcebergSchema(a.view);
    return c.createTable(
      a.namespace,
      a.table,
      schema,
      {
        'format-version': '2',
        'schema.name-mapping.default': nameMapping(schema),
        'landfall.view': a.view.view,
      },
      specForView(a.view.partitioning ?? [], schema),
    );
  }

  /**
   * Each file's Parquet footer (undefined: the store has no ranged reads, or
   * the footer does not decode; that file's entry then carries no stats).
   */
  async #footers(files: SegmentAppend['files']): Promise<(Footer | undefined)[]> {
    const store = this.#o.store;
    if (store.getTail === undefined) return files.map(() => undefined);
    const getTail = store.getTail.bind(store);
    const out: (Footer | undefined)[] = [];
    for (let i = 0; i < files.length; i += footerReadsConcurrent) {
      const batch = files.slice(i, i + footerReadsConcurrent);
      out.push(
        ...(await Promise.all(
          batch.map(async (f) => {
            let tail = await getTail(f.key, Math.min(footerTailBytes, f.bytes));
            if (tail === null) throw new Error(`view file ${f.key} is missing from the store`);
            try {
              const need = footerBytesNeeded(tail);
              if (need > tail.length && need <= f.bytes) tail = await getTail(f.key, need);
              return tail === null ? undefined : decodeFooter(tail);
            } catch (err) {
              if (err instanceof FooterError) return undefined;
              throw err;
            }
          }),
        )),
      );
    }
    return out;
  }

  /** The parent's manifests, read back through the node's store. */
  async #parentManifests(m: TableMetadata, parent: bigint | null): Promise<ManifestFileEntry[]> {
    if (parent === null) return [];
    const snap = m.snapshots?.find((s) => toBigInt(s['snapshot-id']) === parent);
    if (snap === undefined)
      throw new IcebergError(
        'ICEBERG_TABLE_UNSUPPORTED',
        `main points at snapshot ${parent}, which the table does not list`,
      );
    const prefix = `s3://${this.#o.bucket}/`;
    const list = snap['manifest-list'];
    if (!list.startsWith(prefix))
      throw new IcebergError(
        'ICEBERG_TABLE_UNSUPPORTED',
        `the parent snapshot's manifest list ${list} is outside the node's bucket (${prefix}): this version appends only to tables whose snapshots it can read`,
      );
    const body = await this.#o.store.get(list.slice(prefix.length), { bytesMax: manifestListBytesMax });
    if (body === null)
      throw new IcebergError(
        'ICEBERG_TABLE_UNSUPPORTED',
        `the parent snapshot's manifest list ${list} is missing`,
      );
    let objects: readonly unknown[];
    try {
      objects = decodeAvroContainer(body, inflateRawSync).objects;
    } catch (err) {
      throw new IcebergError(
        'ICEBERG_TABLE_UNSUPPORTED',
        `manifest list ${list}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    return objects.map(manifestFileEntryFrom);
  }

  /** The schema the append writes with, and the schema change it needs first (new View columns). */
  #checkAppendable(
    a: SegmentAppend,
    m: TableMetadata,
  ): {
    schema: IcebergSchema;
    evolve: { schema: IcebergSchema; lastColumnId: number } | undefined;
    specId: number;
    bound: BoundPartitionField[];
  } {
    if (m['format-version'] !== 2)
      throw new IcebergError(
        'ICEBERG_TABLE_UNSUPPORTED',
        `table ${a.namespace}.${a.table} is format v${m['format-version']}; this version appends to v2 tables`,
      );
    const spec = m['partition-specs'].find((s) => s['spec-id'] === m['default-spec-id']);
    if (spec === undefined)
      throw new IcebergError('ICEBERG_TABLE_UNSUPPORTED', 'the default partition spec is not listed');
    const schema = m.schemas.find((s) => s['schema-id'] === m['current-schema-id']);
    if (schema === undefined)
      throw new IcebergError('ICEBERG_TABLE_UNSUPPORTED', 'the current schema is not listed');
    // The table's spec as it is: a View whose partitioning changed keeps
    // appending as long as its levels still give every spec field.
    const bound = bindSpec(spec, schema, a.view.partitioning ?? [], `${a.namespace}.${a.table}`);
    const specId = spec['spec-id'];
    const fit = checkViewFitsTable(a.view, schema, m['last-column-id'] ?? 0);
    if (fit.added.length === 0 && fit.promoted.length === 0)
      return { schema, evolve: undefined, specId, bound };
    const promoted = new Map(fit.promoted.map((f) => [f.id, f]));
    const evolved: IcebergSchema = {
      type: 'struct',
      'schema-id': Math.max(...m.schemas.map((s) => s['schema-id'])) + 1,
      fields: [...schema.fields.map((f) => promoted.get(f.id) ?? f), ...fit.added],
    };
    return {
      schema: evolved,
      evolve: { schema: evolved, lastColumnId: Math.max(...evolved.fields.map((f) => f.id)) },
      specId,
      bound,
    };
  }

  /**
   * Appends the segment's files in one snapshot, or finds the snapshot an
   * earlier attempt committed. Undefined when the View wrote no rows for the
   * segment (nothing to append, no snapshot).
   */
  async append(a: SegmentAppend): Promise<TableCommit | undefined> {
    if (a.files.length === 0) return undefined;
    const conflictsMax = this.#o.conflictRetriesMax ?? 20;
    const sleep = this.#o.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
    const random = this.#o.random ?? Math.random;
    const nowMs = this.#o.nowMs ?? Date.now;
    const c = this.#o.catalog;
    const name = `${a.segment.instance}-${a.segment.epoch}-${a.segment.segmentId}`;

    let loaded = await this.#ensureTable(a);
    let footers: (Footer | undefined)[] | undefined;
    for (let conflicts = 0; ;) {
      const m = loaded.metadata;
      const mine = snapshotOfSegment(m, a.segment);
      if (mine !== undefined)
        return {
          namespace: a.namespace,
          table: a.table,
          snapshotId: String(toBigInt(mine['snapshot-id'])),
          found: true,
          conflicts,
        };
      const { schema, evolve, specId, bound } = this.#checkAppendable(a, m);
      const tuples = a.files.map((f) => partitionTuple(bound, f.partitions ?? [], f.key));
      footers ??= await this.#footers(a.files);
      const metrics = footers.map((meta, i) => {
        if (meta === undefined) return undefined;
        checkFileFieldIds(meta, schema, a.files[i]!.key);
        return footerMetrics(meta, schema.fields);
      });

      // The manifest: a pure function of the segment's files, the schema and the spec.
      const manifest = encodeManifest({
        schemaJson: JSON.stringify(schema),
        schemaId: schema['schema-id'],
        spec: {
          specId,
          fields: bound.map((b) => ({ field: b.field, avro: partitionAvroType(b.resultType) })),
        },
        files: a.files.map((f, i) => ({
          path: s3Uri(this.#o.bucket, f.key),
          rows: f.rows,
          bytes: f.bytes,
          partition: tuples[i]!,
          ...(metrics[i] !== undefined ? { metrics: metrics[i] } : {}),
        })),
      });
      const manifestKey = this.#metadataKey(a, `${name}-m0.avro`);
      await this.#o.store.put(manifestKey, manifest, { contentType: 'avro/binary' });

      // No snapshot yet: no main ref (older metadata says current-snapshot-id -1).
      const head = toBigInt(m.refs?.['main']?.['snapshot-id'] ?? m['current-snapshot-id']);
      const parent = head === null || head < 0n ? null : head;
      const inherited = await this.#parentManifests(m, parent);
      const snapshotId = newSnapshotId();
      const sequenceNumber = (toBigInt(m['last-sequence-number']) ?? 0n) + 1n;
      const rows = a.files.reduce((n, f) => n + f.rows, 0);
      const list = encodeManifestList({
        snapshotId,
        parentSnapshotId: parent,
        sequenceNumber,
        inherited,
        added: {
          path: s3Uri(this.#o.bucket, manifestKey),
          bytes: manifest.length,
          files: a.files.length,
          rows,
          specId,
          partitions: fieldSummaries(bound, tuples),
        },
      });
      const listKey = this.#metadataKey(a, `snap-${snapshotId}-${name}.avro`);
      await this.#o.store.put(listKey, list, { contentType: 'avro/binary' });

      try {
        loaded = await c.commitTable(
          a.namespace,
          a.table,
          [
            { type: 'assert-table-uuid', uuid: m['table-uuid'] },
            { type: 'assert-ref-snapshot-id', ref: 'main', 'snapshot-id': parent },
            // A View that added columns evolves the schema in the same commit: only from the schema it saw.
            ...(evolve !== undefined
              ? ([
                  { type: 'assert-current-schema-id', 'current-schema-id': m['current-schema-id'] },
                  {
                    type: 'assert-last-assigned-field-id',
                    'last-assigned-field-id': m['last-column-id'] ?? 0,
                  },
                ] as const)
              : []),
          ],
          [
            ...(evolve !== undefined
              ? ([
                  { action: 'add-schema', schema: evolve.schema, 'last-column-id': evolve.lastColumnId },
                  { action: 'set-current-schema', 'schema-id': -1 },
                  {
                    action: 'set-properties',
                    updates: { 'schema.name-mapping.default': nameMapping(evolve.schema) },
                  },
                ] as const)
              : []),
            {
              action: 'add-snapshot',
              snapshot: {
                'snapshot-id': snapshotId,
                ...(parent !== null ? { 'parent-snapshot-id': parent } : {}),
                'sequence-number': sequenceNumber,
                'timestamp-ms': nowMs(),
                'manifest-list': s3Uri(this.#o.bucket, listKey),
                'schema-id': schema['schema-id'],
                summary: {
                  operation: 'append',
                  'added-data-files': String(a.files.length),
                  'added-records': String(rows),
                  'added-files-size': String(a.files.reduce((n, f) => n + f.bytes, 0)),
                  [summaryKeys.endpoint]: a.segment.endpoint,
                  [summaryKeys.instance]: a.segment.instance,
                  [summaryKeys.epoch]: a.segment.epoch,
                  [summaryKeys.segmentId]: a.segment.segmentId,
                  [summaryKeys.view]: a.view.view,
                  [summaryKeys.specSha256]: a.view.specSha256,
                },
              },
            },
            { action: 'set-snapshot-ref', 'ref-name': 'main', type: 'branch', 'snapshot-id': snapshotId },
          ],
        );
        return {
          namespace: a.namespace,
          table: a.table,
          snapshotId: String(snapshotId),
          found: false,
          conflicts,
        };
      } catch (err) {
        if (!(err instanceof IcebergError) || err.code !== 'ICEBERG_COMMIT_CONFLICT') throw err;
        conflicts++;
        if (conflicts > conflictsMax)
          throw new IcebergError(
            'ICEBERG_COMMIT_CONFLICTS_EXHAUSTED',
            `${a.namespace}.${a.table}: ${conflicts} commit conflicts in a row; the segment is retried later`,
            { cause: err },
          );
        // Concurrent writers back off a little, with jitter, before reloading.
        await sleep(Math.floor(random() * Math.min(2_000, 50 * 2 ** Math.min(conflicts, 6))));
        const again = await c.loadTable(a.namespace, a.table);
        if (again === null)
          throw new IcebergError('ICEBERG_CATALOG_ERROR', `${a.namespace}.${a.table} vanished`);
        loaded = again;
      }
    }
  }
}
