// Commit marker v1: the delivery receipt. One module owns the format; the
// schema below is the single source of truth, docs/schemas/commit-marker.v1.json
// is generated from it (write-marker-schema.ts, drift-tested), and
// docs/commit-marker.md explains it to consumers.
//
// A marker is written LAST, with If-None-Match: *, after every artifact it
// lists is confirmed in the store. If the marker exists, the segment is
// delivered: that is the whole contract.
//
// {
//   "format": "landfall.commit-marker",     constant, identifies the document
//   "version": 1,                           bumped only for breaking changes
//   "endpoint": "orders",                   Endpoint name
//   "instance": "orders-0",                 ingest node instance (pod)
//   "epoch": "01JDX3…",                     WAL epoch (ULID): new disk, new epoch
//   "segmentId": "00000000000000000042",    20-digit zero-padded u64
//   "records": 1234,                        records in the segment
//   "firstSeq": "1000", "lastSeq": "2233",  per-instance sequence numbers, decimal strings (u64)
//   "firstIngestTime": "2025-11-26T05:47:00.123456Z",   RFC 3339 UTC, µs
//   "lastIngestTime":  "2025-11-26T05:47:59.999999Z",
//   "segment": { "bytes": 524288, "sha256": "…" },      the exact sealed WAL file (before zstd)
//   "artifacts": [                                       every object this segment produced
//     { "kind": "segment", "key": "…/00000000000000000042.wal.zst", "bytes": 81234, "rows": 1234, "sha256": "…" },
//     { "kind": "raw",     "key": "…", "bytes": …, "rows": …, "sha256": "…" },
//     { "kind": "view", "view": "page_views", "key": "…", "bytes": …, "rows": …, "sha256": "…" },
//     { "kind": "dlq",  "view": "page_views", "key": "…", "bytes": …, "rows": …, "sha256": "…" }
//   ],
//   "views": [ { "name": "page_views", "specSha256": "…",       the view specs these files were built with,
//                "rows": { "in": 1234, "view": 1100, "filtered": 120, "dlq": 14,   and (optional) each view's
//                          "dlqByCode": { "cast_failed": 14, … } } } ],           row accounting
//   "createdAt": "2025-11-26T05:48:01.512Z",
//   "writer": "landfall-ingest-node/0.1.0"
// }
//
// Readers ignore fields they do not know: adding an optional field keeps
// version 1; removing or changing the meaning of one is version 2.
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import pkg from '../../package.json' with { type: 'json' };
import type { ObjectStore } from '../store/types.ts';
import { commitKey, formatSegmentId, parseSegmentId, type ArtifactKind, type SegmentRef } from './keys.ts';

export const markerFormat = 'landfall.commit-marker';
export const markerVersion = 1;
export const writerName = `landfall-ingest-node/${pkg.version}`;
/** A marker listing thousands of view partitions is still far below this. */
export const markerBytesMax = 4 * 1024 * 1024;

const u64Max = (1n << 64n) - 1n;
const namePattern = '^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$';
const sha256Pattern = '^[0-9a-f]{64}$';
const timeUsPattern = '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{6}Z$';

const Sha256 = Type.String({ pattern: sha256Pattern, description: 'Lowercase hex SHA-256 of the bytes.' });
const Seq = Type.String({
  pattern: '^(0|[1-9][0-9]{0,19})$',
  description:
    'A per-instance sequence number (u64) as a decimal string: JSON numbers lose precision past 2^53.',
});
const Count = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const ArtifactCommon = {
  key: Type.String({
    minLength: 1,
    maxLength: 1024,
    description: 'Object key in the bucket (prefix included).',
  }),
  bytes: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'Object size in bytes.' }),
  rows: Type.Integer({
    minimum: 0,
    maximum: Number.MAX_SAFE_INTEGER,
    description: 'Records (segment), rows (Parquet) it holds.',
  }),
  sha256: Sha256,
};

const ViewRowsSchema = Type.Object(
  {
    in: Type.Integer({
      minimum: 0,
      maximum: Number.MAX_SAFE_INTEGER,
      description: 'Records the view saw: every record of the segment.',
    }),
    view: Type.Integer({
      minimum: 0,
      maximum: Number.MAX_SAFE_INTEGER,
      description: 'Rows in the view files (the sum of its `view` artifacts).',
    }),
    filtered: Type.Integer({
      minimum: 0,
      maximum: Number.MAX_SAFE_INTEGER,
      description: 'Rows the view’s filter left out (counted, not stored).',
    }),
    dlq: Type.Integer({
      minimum: 0,
      maximum: Number.MAX_SAFE_INTEGER,
      description: 'Rows in the view’s DLQ files (the sum of its `dlq` artifacts).',
    }),
    dlqByCode: Type.Optional(
      Type.Record(Type.String({ pattern: '^[a-z_]{1,64}$' }), Count, {
        description: 'DLQ rows per error code (docs/views.md); they add up to `dlq`.',
      }),
    ),
  },
  { description: 'Row accounting of the view over this segment: in = view + filtered + dlq.' },
);

export const CommitMarkerV1Schema = Type.Object(
  {
    format: Type.Literal(markerFormat),
    version: Type.Literal(markerVersion),
    endpoint: Type.String({ pattern: namePattern }),
    instance: Type.String({ pattern: namePattern }),
    epoch: Type.String({ pattern: '^[A-Za-z0-9]{1,64}$', description: 'WAL epoch; sorts by creation time.' }),
    segmentId: Type.String({
      pattern: '^[0-9]{20}$',
      description: 'Zero-padded u64: key order is time order.',
    }),
    records: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
    firstSeq: Seq,
    lastSeq: Seq,
    firstIngestTime: Type.String({ pattern: timeUsPattern, description: 'RFC 3339, UTC, microseconds.' }),
    lastIngestTime: Type.String({ pattern: timeUsPattern, description: 'RFC 3339, UTC, microseconds.' }),
    segment: Type.Object(
      { bytes: Count, sha256: Sha256 },
      { description: 'The sealed WAL segment file exactly as written locally, before compression.' },
    ),
    artifacts: Type.Array(
      Type.Union([
        Type.Object({ kind: Type.Union([Type.Literal('segment'), Type.Literal('raw')]), ...ArtifactCommon }),
        Type.Object({
          kind: Type.Union([Type.Literal('view'), Type.Literal('dlq')]),
          view: Type.String({ pattern: namePattern }),
          ...ArtifactCommon,
        }),
      ]),
      { minItems: 1, maxItems: 100_000 },
    ),
    views: Type.Array(
      Type.Object({
        name: Type.String({ pattern: namePattern }),
        specSha256: Type.String({
          pattern: sha256Pattern,
          description: 'SHA-256 of the canonical view spec these files were built with.',
        }),
        rows: Type.Optional(ViewRowsSchema),
      }),
      { maxItems: 10_000 },
    ),
    tables: Type.Optional(
      Type.Array(
        Type.Object({
          view: Type.String({ pattern: namePattern }),
          namespace: Type.String({ minLength: 1, maxLength: 255 }),
          table: Type.String({ minLength: 1, maxLength: 255 }),
          snapshotId: Type.Optional(
            Type.String({
              pattern: '^-?[0-9]{1,19}$',
              description:
                'The Iceberg snapshot that appended this segment’s view files (a long, as a string). Absent when `error` is set.',
            }),
          ),
          error: Type.Optional(
            Type.Object(
              {
                code: Type.String({ pattern: '^ICEBERG_[A-Z_]{1,64}$' }),
                message: Type.String({ maxLength: 1000 }),
              },
              {
                description:
                  'Set instead of snapshotId when the View itself cannot go into its table (a column type Iceberg cannot take, a type change the table cannot promote, a table this writer cannot append to). The view files are delivered as usual; only the table append was skipped, so delivery never waits on a View (docs/iceberg.md).',
              },
            ),
          ),
        }),
        {
          maxItems: 10_000,
          description:
            'Iceberg tables of this segment’s views, each appended to (snapshotId) or skipped for a reason of the View (error) before the marker was written (docs/iceberg.md). Absent when no view has a table.',
        },
      ),
    ),
    createdAt: Type.String({
      pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z$',
      description: 'When the marker was written: RFC 3339, UTC, milliseconds.',
    }),
    writer: Type.String({ minLength: 1, maxLength: 200 }),
  },
  {
    $id: 'urn:landfall:schema:commit-marker:v1',
    title: 'Landfall commit marker v1',
    description:
      'Written last, once per sealed segment, after every artifact it lists is in the bucket. If it exists, the segment is delivered.',
  },
);

export type CommitMarkerJson = Static<typeof CommitMarkerV1Schema>;

export interface MarkerArtifact {
  readonly kind: ArtifactKind;
  readonly key: string;
  readonly bytes: number;
  readonly rows: number;
  readonly sha256: string;
  /** Set exactly for `view` and `dlq` artifacts. */
  readonly view?: string;
}

/** One view's row accounting over a segment: in = view + filtered + dlq. */
// A type, not an interface: it is stored as JSON in state.json progress.
export type MarkerViewRows = {
  readonly in: number;
  readonly view: number;
  readonly filtered: number;
  readonly dlq: number;
  readonly dlqByCode?: Readonly<Record<string, number>>;
};

export interface MarkerView {
  readonly name: string;
  readonly specSha256: string;
  /** Optional (markers before it, and producers that do not count, have none). */
  readonly rows?: MarkerViewRows;
}

const viewRowsChecker = TypeCompiler.Compile(ViewRowsSchema);

/** A view's `rows` from untrusted JSON (progress in state.json), or undefined when absent or malformed. */
export function parseMarkerViewRows(x: unknown): MarkerViewRows | undefined {
  if (!viewRowsChecker.Check(x)) return undefined;
  const r = x;
  return {
    in: r.in,
    view: r.view,
    filtered: r.filtered,
    dlq: r.dlq,
    ...(r.dlqByCode !== undefined ? { dlqByCode: { ...r.dlqByCode } } : {}),
  };
}

/** One View's Iceberg append for a segment. */
// A type, not an interface: it is stored as JSON in state.json progress.
export type MarkerTable = {
  readonly view: string;
  readonly namespace: string;
  readonly table: string;
  /** The snapshot that appended the segment's view files; absent when `error` says why not. */
  readonly snapshotId?: string;
  /** Why the View's files were not appended (a reason of the View, never of the store or catalog). */
  readonly error?: { readonly code: string; readonly message: string };
};

/** The in-code marker: seqs, ids and times are bigints (µs); JSON has strings. */
export interface CommitMarker {
  readonly endpoint: string;
  readonly instance: string;
  readonly epoch: string;
  readonly segmentId: bigint;
  readonly records: number;
  readonly firstSeq: bigint;
  readonly lastSeq: bigint;
  readonly firstIngestMicros: bigint;
  readonly lastIngestMicros: bigint;
  readonly segment: { readonly bytes: number; readonly sha256: string };
  readonly artifacts: readonly MarkerArtifact[];
  readonly views: readonly MarkerView[];
  /** Iceberg snapshots of this segment (optional: views without tables, older markers). */
  readonly tables?: readonly MarkerTable[];
  readonly createdAtMs: number;
  readonly writer: string;
}

export type MarkerErrorCode =
  'INVALID_COMMIT_MARKER' | 'UNSUPPORTED_COMMIT_MARKER' | 'COMMIT_MARKER_CONFLICT' | 'COMMIT_MARKER_VANISHED';

export class MarkerError extends Error {
  readonly code: MarkerErrorCode;
  /** Only COMMIT_MARKER_VANISHED (a concurrent delete) is worth retrying. */
  readonly retryable: boolean;
  readonly key: string | undefined;
  /** For a conflict: which fields differ, `field: stored → ours`. */
  readonly differences: readonly string[];

  constructor(
    code: MarkerErrorCode,
    message: string,
    opts: { key?: string; differences?: readonly string[] } = {},
  ) {
    super(message);
    this.name = 'MarkerError';
    this.code = code;
    this.retryable = code === 'COMMIT_MARKER_VANISHED';
    this.key = opts.key;
    this.differences = opts.differences ?? [];
  }
}

const checker = TypeCompiler.Compile(CommitMarkerV1Schema);

/** The JSON Schema document published as docs/schemas/commit-marker.v1.json. */
export function commitMarkerJsonSchema(): Record<string, unknown> {
  return { $schema: 'http://json-schema.org/draft-07/schema#', ...structuredJson(CommitMarkerV1Schema) };
}

function structuredJson(x: unknown): Record<string, unknown> {
  // Drops TypeBox's symbol-keyed bookkeeping; what is left is plain JSON Schema.
  return JSON.parse(JSON.stringify(x)) as Record<string, unknown>;
}

export function formatMicrosIso(micros: bigint): string {
  if (micros < 0n) throw new MarkerError('INVALID_COMMIT_MARKER', `ingest time ${micros}µs is before 1970`);
  const ms = micros / 1000n;
  const iso = new Date(Number(ms)).toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  return `${iso.slice(0, 19)}.${(micros % 1_000_000n).toString().padStart(6, '0')}Z`;
}

export function parseMicrosIso(text: string): bigint {
  if (!new RegExp(timeUsPattern).test(text))
    throw new MarkerError(
      'INVALID_COMMIT_MARKER',
      `${JSON.stringify(text)} is not an RFC 3339 UTC time with µs`,
    );
  const seconds = Date.parse(`${text.slice(0, 19)}Z`);
  if (Number.isNaN(seconds))
    throw new MarkerError('INVALID_COMMIT_MARKER', `${JSON.stringify(text)} is not a time`);
  return BigInt(seconds) * 1000n + BigInt(text.slice(20, 26));
}

/** Checks what the schema cannot say. Returns the problems; empty means valid. */
function semanticProblems(m: CommitMarker): string[] {
  const problems: string[] = [];
  if (m.firstSeq < 0n || m.lastSeq > u64Max) problems.push('seq outside u64');
  if (m.lastSeq < m.firstSeq) problems.push(`lastSeq ${m.lastSeq} < firstSeq ${m.firstSeq}`);
  // Seqs are gap-free per instance, so a segment's span is at least its count.
  else if (BigInt(m.records) > m.lastSeq - m.firstSeq + 1n)
    problems.push(`records ${m.records} exceed the seq span ${m.firstSeq}..${m.lastSeq}`);
  for (const t of m.tables ?? [])
    if ((t.snapshotId === undefined) === (t.error === undefined))
      problems.push(
        `table ${t.namespace}.${t.table} of view ${t.view} needs exactly one of snapshotId and error`,
      );
  const keys = new Set<string>();
  let segments = 0;
  for (const a of m.artifacts) {
    if (keys.has(a.key)) problems.push(`artifact key listed twice: ${a.key}`);
    keys.add(a.key);
    if (a.kind === 'segment') segments++;
    const needsView = a.kind === 'view' || a.kind === 'dlq';
    if (needsView !== (a.view !== undefined))
      problems.push(`artifact ${a.key}: 'view' must be set exactly for view/dlq`);
  }
  if (segments > 1) problems.push('more than one segment artifact');
  const names = new Set<string>();
  for (const v of m.views) {
    if (names.has(v.name)) problems.push(`view listed twice: ${v.name}`);
    names.add(v.name);
    const r = v.rows;
    if (r === undefined) continue;
    // The accounting must add up, and agree with the files listed.
    if (r.in !== r.view + r.filtered + r.dlq)
      problems.push(
        `view ${v.name}: rows in ${r.in} ≠ view ${r.view} + filtered ${r.filtered} + dlq ${r.dlq}`,
      );
    if (r.in !== m.records) problems.push(`view ${v.name}: rows in ${r.in} ≠ records ${m.records}`);
    if (r.dlqByCode !== undefined) {
      const byCode = Object.values(r.dlqByCode).reduce((a, b) => a + b, 0);
      if (byCode !== r.dlq) problems.push(`view ${v.name}: dlqByCode adds up to ${byCode}, dlq is ${r.dlq}`);
    }
    const sum = (kind: ArtifactKind): number =>
      m.artifacts.filter((a) => a.kind === kind && a.view === v.name).reduce((a, b) => a + b.rows, 0);
    if (sum('view') !== r.view)
      problems.push(`view ${v.name}: view files hold ${sum('view')} rows, rows.view is ${r.view}`);
    if (sum('dlq') !== r.dlq)
      problems.push(`view ${v.name}: dlq files hold ${sum('dlq')} rows, rows.dlq is ${r.dlq}`);
  }
  return problems;
}

function rowsJson(r: MarkerViewRows): MarkerViewRows {
  return {
    in: r.in,
    view: r.view,
    filtered: r.filtered,
    dlq: r.dlq,
    ...(r.dlqByCode !== undefined ? { dlqByCode: { ...r.dlqByCode } } : {}),
  };
}

function toJson(m: CommitMarker): CommitMarkerJson {
  // Field order here is the order in the file: identity, counts, contents, provenance.
  return {
    format: markerFormat,
    version: markerVersion,
    endpoint: m.endpoint,
    instance: m.instance,
    epoch: m.epoch,
    segmentId: formatSegmentId(m.segmentId),
    records: m.records,
    firstSeq: m.firstSeq.toString(),
    lastSeq: m.lastSeq.toString(),
    firstIngestTime: formatMicrosIso(m.firstIngestMicros),
    lastIngestTime: formatMicrosIso(m.lastIngestMicros),
    segment: { bytes: m.segment.bytes, sha256: m.segment.sha256 },
    artifacts: m.artifacts.map((a) =>
      a.kind === 'view' || a.kind === 'dlq'
        ? { kind: a.kind, view: a.view ?? '', key: a.key, bytes: a.bytes, rows: a.rows, sha256: a.sha256 }
        : { kind: a.kind, key: a.key, bytes: a.bytes, rows: a.rows, sha256: a.sha256 },
    ),
    views: m.views.map((v) => ({
      name: v.name,
      specSha256: v.specSha256,
      ...(v.rows !== undefined ? { rows: rowsJson(v.rows) } : {}),
    })),
    ...(m.tables !== undefined && m.tables.length > 0
      ? {
          tables: m.tables.map((t) => ({
            view: t.view,
            namespace: t.namespace,
            table: t.table,
            ...(t.snapshotId !== undefined ? { snapshotId: t.snapshotId } : {}),
            ...(t.error !== undefined ? { error: { code: t.error.code, message: t.error.message } } : {}),
          })),
        }
      : {}),
    createdAt: new Date(m.createdAtMs).toISOString(),
    writer: m.writer,
  };
}

function fromJson(j: CommitMarkerJson): CommitMarker {
  return {
    endpoint: j.endpoint,
    instance: j.instance,
    epoch: j.epoch,
    segmentId: parseSegmentId(j.segmentId),
    records: j.records,
    firstSeq: BigInt(j.firstSeq),
    lastSeq: BigInt(j.lastSeq),
    firstIngestMicros: parseMicrosIso(j.firstIngestTime),
    lastIngestMicros: parseMicrosIso(j.lastIngestTime),
    segment: { bytes: j.segment.bytes, sha256: j.segment.sha256 },
    artifacts: j.artifacts.map((a) => ({
      kind: a.kind,
      key: a.key,
      bytes: a.bytes,
      rows: a.rows,
      sha256: a.sha256,
      ...('view' in a ? { view: a.view } : {}),
    })),
    views: j.views.map((v) => ({
      name: v.name,
      specSha256: v.specSha256,
      ...(v.rows !== undefined ? { rows: rowsJson(v.rows) } : {}),
    })),
    ...(j.tables !== undefined
      ? {
          tables: j.tables.map((t) => ({
            ...t,
            ...(t.error !== undefined ? { error: { ...t.error } } : {}),
          })),
        }
      : {}),
    createdAtMs: Date.parse(j.createdAt),
    writer: j.writer,
  };
}

function schemaProblems(j: unknown): string[] {
  return [...checker.Errors(j)].slice(0, 10).map((e) => `${e.path || '/'}: ${e.message}`);
}

/** Validates and serializes: canonical field order, 2-space JSON, trailing newline. */
export function encodeCommitMarker(m: CommitMarker): Buffer {
  let json: CommitMarkerJson;
  try {
    json = toJson(m);
  } catch (err) {
    throw new MarkerError('INVALID_COMMIT_MARKER', `commit marker: ${(err as Error).message}`);
  }
  const problems = [...schemaProblems(json), ...semanticProblems(m)];
  if (problems.length > 0)
    throw new MarkerError('INVALID_COMMIT_MARKER', `commit marker is invalid: ${problems.join('; ')}`);
  const body = Buffer.from(`${JSON.stringify(json, null, 2)}\n`);
  if (body.length > markerBytesMax)
    throw new MarkerError(
      'INVALID_COMMIT_MARKER',
      `commit marker is ${body.length} bytes, over ${markerBytesMax}`,
    );
  return body;
}

/** Parses and validates a stored marker; unknown extra fields are ignored. */
export function decodeCommitMarker(bytes: Uint8Array | string): CommitMarker {
  const text = typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8');
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new MarkerError('INVALID_COMMIT_MARKER', `commit marker is not JSON: ${(err as Error).message}`);
  }
  const head = raw as { format?: unknown; version?: unknown } | null;
  if (head === null || typeof head !== 'object' || head.format !== markerFormat)
    throw new MarkerError(
      'INVALID_COMMIT_MARKER',
      `not a commit marker (format ${JSON.stringify(head?.format)})`,
    );
  if (head.version !== markerVersion)
    throw new MarkerError(
      'UNSUPPORTED_COMMIT_MARKER',
      `commit marker version ${JSON.stringify(head.version)} is not supported by ${writerName} (reads ${markerVersion})`,
    );
  const problems = schemaProblems(raw);
  if (problems.length > 0)
    throw new MarkerError('INVALID_COMMIT_MARKER', `commit marker is invalid: ${problems.join('; ')}`);
  let m: CommitMarker;
  try {
    m = fromJson(raw as CommitMarkerJson);
  } catch (err) {
    throw err instanceof MarkerError ? err : new MarkerError('INVALID_COMMIT_MARKER', (err as Error).message);
  }
  const semantic = semanticProblems(m);
  if (semantic.length > 0)
    throw new MarkerError('INVALID_COMMIT_MARKER', `commit marker is invalid: ${semantic.join('; ')}`);
  return m;
}

export function markerRef(m: CommitMarker): SegmentRef {
  return { endpoint: m.endpoint, instance: m.instance, epoch: m.epoch, segmentId: m.segmentId };
}

/**
 * What makes two markers "the same delivery": identity, counts, the segment's
 * own checksum, every artifact (as a set) and the view specs. createdAt and
 * writer are provenance: a retry after a crash legitimately differs there.
 */
export function markerDifferences(stored: CommitMarker, ours: CommitMarker): string[] {
  const diffs: string[] = [];
  const same = (field: string, a: unknown, b: unknown): void => {
    if (a !== b) diffs.push(`${field}: ${String(a)} → ${String(b)}`);
  };
  same('endpoint', stored.endpoint, ours.endpoint);
  same('instance', stored.instance, ours.instance);
  same('epoch', stored.epoch, ours.epoch);
  same('segmentId', stored.segmentId, ours.segmentId);
  same('records', stored.records, ours.records);
  same('firstSeq', stored.firstSeq, ours.firstSeq);
  same('lastSeq', stored.lastSeq, ours.lastSeq);
  same('firstIngestTime', stored.firstIngestMicros, ours.firstIngestMicros);
  same('lastIngestTime', stored.lastIngestMicros, ours.lastIngestMicros);
  same('segment.bytes', stored.segment.bytes, ours.segment.bytes);
  same('segment.sha256', stored.segment.sha256, ours.segment.sha256);
  const art = (a: MarkerArtifact): string => `${a.kind}:${a.view ?? ''}:${a.bytes}:${a.rows}:${a.sha256}`;
  const storedArts = new Map(stored.artifacts.map((a) => [a.key, art(a)]));
  const ourArts = new Map(ours.artifacts.map((a) => [a.key, art(a)]));
  for (const [key, desc] of storedArts) same(`artifact ${key}`, desc, ourArts.get(key) ?? '(absent)');
  for (const [key, desc] of ourArts) if (!storedArts.has(key)) same(`artifact ${key}`, '(absent)', desc);
  const storedViews = new Map(stored.views.map((v) => [v.name, v.specSha256]));
  const ourViews = new Map(ours.views.map((v) => [v.name, v.specSha256]));
  for (const [name, h] of storedViews) same(`view ${name}`, h, ourViews.get(name) ?? '(absent)');
  for (const [name, h] of ourViews) if (!storedViews.has(name)) same(`view ${name}`, '(absent)', h);
  return diffs;
}

export interface WriteMarkerResult {
  readonly key: string;
  /** False: an identical marker was already there (a retry after a lost answer or a crash). */
  readonly created: boolean;
}

/**
 * Writes the marker at its deterministic key, only if absent. If one is
 * already there and describes the same delivery, that is success (the
 * segment was committed before); if it differs, that is a loud
 * COMMIT_MARKER_CONFLICT: two different deliveries claim one segment, which
 * means an epoch was reused or artifacts were rebuilt differently.
 *
 * Store errors (StoreError) propagate with their retryable bit.
 */
export async function writeCommitMarker(
  store: ObjectStore,
  prefix: string,
  marker: CommitMarker,
  opts: { signal?: AbortSignal } = {},
): Promise<WriteMarkerResult> {
  const key = commitKey(prefix, markerRef(marker));
  const body = encodeCommitMarker(marker);
  const res = await store.createIfAbsent(key, body, {
    contentType: 'application/json',
    ...(opts.signal !== undefined ? { signal: opts.signal } : {}),
  });
  if (res.created) return { key, created: true };
  const existing = await store.get(key, {
    bytesMax: markerBytesMax,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  if (existing === null)
    throw new MarkerError('COMMIT_MARKER_VANISHED', `commit marker ${key} existed and then did not`, { key });
  let stored: CommitMarker;
  try {
    stored = decodeCommitMarker(existing);
  } catch (err) {
    const why = (err as Error).message;
    throw new MarkerError('COMMIT_MARKER_CONFLICT', `commit marker ${key} exists but is unreadable: ${why}`, {
      key,
      differences: [why],
    });
  }
  const differences = markerDifferences(stored, marker);
  if (differences.length > 0)
    throw new MarkerError(
      'COMMIT_MARKER_CONFLICT',
      `commit marker ${key} already exists with different contents: ${differences.slice(0, 5).join('; ')}`,
      { key, differences },
    );
  return { key, created: false };
}

/** Reads the marker of a segment, or null if the segment is not (yet) delivered. */
export async function readCommitMarker(
  store: ObjectStore,
  prefix: string,
  ref: SegmentRef,
): Promise<CommitMarker | null> {
  const body = await store.get(commitKey(prefix, ref), { bytesMax: markerBytesMax });
  return body === null ? null : decodeCommitMarker(body);
}
