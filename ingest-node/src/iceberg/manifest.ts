// The two Avro files of an Iceberg (format v2) append that Landfall writes
// itself: the manifest (one `manifest_entry` per data file) and the manifest
// list (one `manifest_file` per manifest). Field ids and names are the
// spec's (Iceberg table spec, "Manifests" and "Manifest Lists"); readers
// match fields by id.
//
// | file          | header metadata                                   | objects                           |
// | ------------- | ------------------------------------------------- | --------------------------------- |
// | manifest      | schema, schema-id, partition-spec (the spec's     | manifest_entry: status 1 (ADDED), |
// |               | fields, JSON), partition-spec-id, format-version  | snapshot and sequence numbers     |
// |               | 2, content data                                   | null (inherited from the list),   |
// |               |                                                   | data_file (path, PARQUET, rows,   |
// |               |                                                   | bytes, partition tuple, column    |
// |               |                                                   | sizes, value/null counts, lower/  |
// |               |                                                   | upper bounds by field id)         |
// | manifest list | snapshot-id, parent-snapshot-id, sequence-number, | manifest_file: path, length,      |
// |               | format-version 2                                  | spec id, content 0, sequence      |
// |               |                                                   | numbers, added snapshot, counts,  |
// |               |                                                   | partition field summaries         |
//
// The partition tuple (`data_file.partition`, id 102) is a record with one
// optional field per spec field, named and numbered as the spec's (1000…),
// typed as the transform's result (partition.ts). Each field summary in the
// manifest list (id 507) holds contains_null, contains_nan (false: no float
// partitions) and the lowest and highest non-null value of that field over
// the manifest's files, in Iceberg's single-value binary form (int and date
// 4 bytes LE, long 8 bytes LE, boolean 1 byte, string UTF-8).
//
// A manifest's entries carry no snapshot id or sequence number: in v2 they
// are inherited from the manifest list entry that adds the manifest. So the
// manifest of a segment is the same bytes whatever snapshot ends up adding
// it, and only the (small) manifest list is rewritten when a commit is
// retried after a conflict.
import { encodeAvroContainer, type AvroField, type AvroSchema } from './avro.ts';
import type { FileMetrics } from './footer.ts';
import type { FieldSummary, PartitionField, PartitionValue } from './partition.ts';

const optional = (name: string, id: number, type: AvroSchema): AvroField => ({
  name,
  type: ['null', type],
  default: null,
  'field-id': id,
});
const required = (name: string, id: number, type: AvroSchema): AvroField => ({ name, type, 'field-id': id });

/** A map with non-string keys, the way Iceberg writes it to Avro. */
function intKeyedMap(name: string, keyId: number, valueId: number, value: AvroSchema): AvroSchema {
  return {
    type: 'array',
    logicalType: 'map',
    items: {
      type: 'record',
      name: `k${keyId}_v${valueId}`,
      fields: [required('key', keyId, 'int'), required('value', valueId, value)],
    },
    'element-id': keyId, // unused by readers for maps; kept for tools that expect it
  } satisfies AvroSchema & { readonly 'element-id': number };
}

/** `data_file` fields after `partition`. */
const dataFileTail: readonly AvroField[] = [
  required('record_count', 103, 'long'),
  required('file_size_in_bytes', 104, 'long'),
  optional('column_sizes', 108, intKeyedMap('column_sizes', 117, 118, 'long')),
  optional('value_counts', 109, intKeyedMap('value_counts', 119, 120, 'long')),
  optional('null_value_counts', 110, intKeyedMap('null_value_counts', 121, 122, 'long')),
  optional('nan_value_counts', 137, intKeyedMap('nan_value_counts', 138, 139, 'long')),
  optional('lower_bounds', 125, intKeyedMap('lower_bounds', 126, 127, 'bytes')),
  optional('upper_bounds', 128, intKeyedMap('upper_bounds', 129, 130, 'bytes')),
  optional('key_metadata', 131, 'bytes'),
  optional('split_offsets', 132, { type: 'array', items: 'long', 'element-id': 133 }),
  optional('equality_ids', 135, { type: 'array', items: 'int', 'element-id': 136 }),
  optional('sort_order_id', 140, 'int'),
];

/** A partition tuple's fields: one optional field per spec field, the transform's result type. */
export interface PartitionTupleField {
  readonly field: PartitionField;
  readonly avro: AvroSchema;
}

/** `manifest_entry` of a table whose spec gives `partition` (none: unpartitioned, an empty record). */
export function manifestEntrySchemaFor(partition: readonly PartitionTupleField[]): AvroSchema {
  return {
    type: 'record',
    name: 'manifest_entry',
    fields: [
      required('status', 0, 'int'),
      optional('snapshot_id', 1, 'long'),
      optional('sequence_number', 3, 'long'),
      optional('file_sequence_number', 4, 'long'),
      required('data_file', 2, {
        type: 'record',
        name: 'r2',
        fields: [
          required('content', 134, 'int'),
          required('file_path', 100, 'string'),
          required('file_format', 101, 'string'),
          required('partition', 102, {
            type: 'record',
            name: 'r102',
            fields: partition.map((p) => optional(p.field.name, p.field['field-id'], p.avro)),
          }),
          ...dataFileTail,
        ],
      }),
    ],
  };
}

export const manifestEntrySchema: AvroSchema = manifestEntrySchemaFor([]);

export const manifestFileSchema: AvroSchema = {
  type: 'record',
  name: 'manifest_file',
  fields: [
    required('manifest_path', 500, 'string'),
    required('manifest_length', 501, 'long'),
    required('partition_spec_id', 502, 'int'),
    required('content', 517, 'int'),
    required('sequence_number', 515, 'long'),
    required('min_sequence_number', 516, 'long'),
    required('added_snapshot_id', 503, 'long'),
    required('added_files_count', 504, 'int'),
    required('existing_files_count', 505, 'int'),
    required('deleted_files_count', 506, 'int'),
    required('added_rows_count', 512, 'long'),
    required('existing_rows_count', 513, 'long'),
    required('deleted_rows_count', 514, 'long'),
    optional('partitions', 507, {
      type: 'array',
      'element-id': 508,
      items: {
        type: 'record',
        name: 'r508',
        fields: [
          required('contains_null', 509, 'boolean'),
          optional('contains_nan', 518, 'boolean'),
          optional('lower_bound', 510, 'bytes'),
          optional('upper_bound', 511, 'bytes'),
        ],
      },
    }),
    optional('key_metadata', 519, 'bytes'),
  ],
};

export interface DataFile {
  /** Absolute URI, e.g. `s3://bucket/landfall/views/page_views/dt=…/….parquet`. */
  readonly path: string;
  readonly rows: number;
  readonly bytes: number;
  /** The file's partition tuple, one value per spec field (none for an unpartitioned table). */
  readonly partition?: readonly PartitionValue[];
  /** Column metrics by field id (footer.ts); none: the entry carries no stats. */
  readonly metrics?: FileMetrics;
}

export interface ManifestInput {
  /** The table schema (Iceberg JSON), as the header's `schema`. */
  readonly schemaJson: string;
  readonly schemaId: number;
  /** The spec the files are partitioned by; unpartitioned spec 0 when omitted. */
  readonly spec?: { readonly specId: number; readonly fields: readonly PartitionTupleField[] };
  readonly files: readonly DataFile[];
}

/** The manifest adding `files` to a table under one partition spec. */
export function encodeManifest(m: ManifestInput): Buffer {
  if (m.files.length === 0) throw new RangeError('a manifest needs at least one data file');
  const fields = m.spec?.fields ?? [];
  return encodeAvroContainer(
    manifestEntrySchemaFor(fields),
    m.files.map((f) => ({
      status: 1,
      snapshot_id: null,
      sequence_number: null,
      file_sequence_number: null,
      data_file: {
        content: 0,
        file_path: f.path,
        file_format: 'PARQUET',
        partition: Object.fromEntries(fields.map((p, i) => [p.field.name, f.partition?.[i] ?? null])),
        record_count: f.rows,
        file_size_in_bytes: f.bytes,
        column_sizes: f.metrics?.column_sizes ?? null,
        value_counts: f.metrics?.value_counts ?? null,
        null_value_counts: f.metrics?.null_value_counts ?? null,
        nan_value_counts: null,
        lower_bounds: f.metrics?.lower_bounds ?? null,
        upper_bounds: f.metrics?.upper_bounds ?? null,
        key_metadata: null,
        split_offsets: null,
        equality_ids: null,
        sort_order_id: null,
      },
    })),
    {
      schema: m.schemaJson,
      'schema-id': String(m.schemaId),
      'partition-spec': JSON.stringify(fields.map((p) => p.field)),
      'partition-spec-id': String(m.spec?.specId ?? 0),
      'format-version': '2',
      content: 'data',
    },
  );
}

export interface ManifestListInput {
  readonly snapshotId: bigint;
  readonly parentSnapshotId: bigint | null;
  readonly sequenceNumber: bigint;
  /** Manifests of earlier snapshots, carried over as they are (they keep their own sequence numbers). */
  readonly inherited: readonly ManifestFileEntry[];
  /** The new manifest. */
  readonly added: {
    readonly path: string;
    readonly bytes: number;
    readonly files: number;
    readonly rows: number;
    /** Default 0 (unpartitioned). */
    readonly specId?: number;
    /** One per spec field (none for an unpartitioned table). */
    readonly partitions?: readonly FieldSummary[];
  };
}

/** A `manifest_file` as read back from a manifest list (decoded by the caller). */
export interface ManifestFileEntry {
  readonly manifest_path: string;
  readonly manifest_length: bigint | number;
  readonly partition_spec_id: number;
  readonly content: number;
  readonly sequence_number: bigint | number;
  readonly min_sequence_number: bigint | number;
  readonly added_snapshot_id: bigint | number;
  readonly added_files_count: number;
  readonly existing_files_count: number;
  readonly deleted_files_count: number;
  readonly added_rows_count: bigint | number;
  readonly existing_rows_count: bigint | number;
  readonly deleted_rows_count: bigint | number;
  readonly partitions: null | readonly unknown[];
  readonly key_metadata: null | Uint8Array;
}

export function encodeManifestList(l: ManifestListInput): Buffer {
  const added: ManifestFileEntry = {
    manifest_path: l.added.path,
    manifest_length: l.added.bytes,
    partition_spec_id: l.added.specId ?? 0,
    content: 0,
    sequence_number: l.sequenceNumber,
    min_sequence_number: l.sequenceNumber,
    added_snapshot_id: l.snapshotId,
    added_files_count: l.added.files,
    existing_files_count: 0,
    deleted_files_count: 0,
    added_rows_count: l.added.rows,
    existing_rows_count: 0,
    deleted_rows_count: 0,
    partitions: l.added.partitions ?? [],
    key_metadata: null,
  };
  return encodeAvroContainer(manifestFileSchema, [added, ...l.inherited], {
    'snapshot-id': l.snapshotId.toString(),
    'parent-snapshot-id': l.parentSnapshotId === null ? 'null' : l.parentSnapshotId.toString(),
    'sequence-number': l.sequenceNumber.toString(),
    'format-version': '2',
  });
}

/** A manifest list entry as decoded (v1 or v2 list) in the v2 shape this module writes. */
export function manifestFileEntryFrom(o: unknown): ManifestFileEntry {
  const e = o as Partial<ManifestFileEntry> & Record<string, unknown>;
  // v1 lists name the counts differently and carry no content/sequence numbers.
  return {
    manifest_path: e.manifest_path as string,
    manifest_length: e.manifest_length as bigint,
    partition_spec_id: e.partition_spec_id as number,
    content: e.content ?? 0,
    sequence_number: (e.sequence_number as bigint | undefined) ?? 0n,
    min_sequence_number: (e.min_sequence_number as bigint | undefined) ?? 0n,
    added_snapshot_id: e.added_snapshot_id as bigint,
    added_files_count: (e.added_files_count ?? e['added_data_files_count'] ?? 0) as number,
    existing_files_count: (e.existing_files_count ?? e['existing_data_files_count'] ?? 0) as number,
    deleted_files_count: (e.deleted_files_count ?? e['deleted_data_files_count'] ?? 0) as number,
    added_rows_count: (e.added_rows_count as bigint | undefined) ?? 0n,
    existing_rows_count: (e.existing_rows_count as bigint | undefined) ?? 0n,
    deleted_rows_count: (e.deleted_rows_count as bigint | undefined) ?? 0n,
    partitions: (e.partitions as unknown[] | null | undefined) ?? null,
    key_metadata: e.key_metadata ?? null,
  };
}
