// The S3 layout (DESIGN §5, docs/s3-layout.md) as pure functions. Every key
// is a function of (prefix, endpoint, instance, epoch, segment id, artifact)
// and nothing else (no clock, no randomness), so a retried upload after a
// crash writes the same key and can never leave a second copy behind.
//
//   {prefix}/segments/{endpoint}/{instance}/{epoch}/{segmentId}.wal.zst
//   {prefix}/raw/{endpoint}/dt=YYYY-MM-DD/{instance}-{epoch}-{segmentId}.parquet
//   {prefix}/views/{view}/{hive partitions}/{instance}-{epoch}-{segmentId}.parquet
//   {prefix}/dlq/{view}/dt=YYYY-MM-DD/{instance}-{epoch}-{segmentId}.parquet
//   {prefix}/commits/{endpoint}/{instance}/{epoch}/{segmentId}.json
//
// Names are checked here, once, so a bad name fails at config time rather
// than producing a key that escapes its folder or sorts out of time order.

/** The identity of one sealed segment: everything its keys are made of. */
export interface SegmentRef {
  readonly endpoint: string;
  readonly instance: string;
  /** Created with the WAL directory; sorts by creation time (a ULID). */
  readonly epoch: string;
  readonly segmentId: bigint;
}

export type ArtifactKind = 'segment' | 'raw' | 'view' | 'dlq';

export type ArtifactSpec =
  | { readonly kind: 'segment' }
  | { readonly kind: 'raw'; readonly dt: string }
  | { readonly kind: 'view'; readonly view: string; readonly partitions: readonly HivePartition[] }
  | { readonly kind: 'dlq'; readonly view: string; readonly dt: string };

/** One `name=value` level of a Hive-style partition path, in order; a NULL value is `null`. */
export type HivePartition = readonly [name: string, value: string | null];

/**
 * 20 digits hold every u64, so zero-padded ids sort as numbers do: key order
 * is segment order is time order.
 */
export const segmentIdDigits = 20;
const segmentIdMax = (1n << 64n) - 1n;

export class KeyLayoutError extends Error {
  readonly code = 'INVALID_KEY_COMPONENT';
  constructor(message: string) {
    super(message);
    this.name = 'KeyLayoutError';
  }
}

// Kubernetes object names (endpoint, pod/instance) are DNS-1123; view names
// are SQL-ish identifiers. Both fit here. No `/`, no leading dot (so no `.`
// or `..`), no `=` (Hive), bounded length (S3 keys are ≤ 1024 bytes).
const namePattern = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
// The epoch sits between two `-` in Parquet file names, so it has none itself:
// `{instance}-{epoch}-{segmentId}` then splits unambiguously from the right.
const epochPattern = /^[A-Za-z0-9]{1,64}$/;
const prefixSegmentPattern = /^[A-Za-z0-9_][A-Za-z0-9._=-]{0,127}$/;
const dtPattern = /^(\d{4})-(\d{2})-(\d{2})$/;

export function checkName(what: string, name: string): string {
  if (!namePattern.test(name))
    throw new KeyLayoutError(
      `${what} ${JSON.stringify(name)} is not a valid name: use 1-128 of [A-Za-z0-9._-], not starting with '.' or '-'`,
    );
  return name;
}

export function checkEpoch(epoch: string): string {
  if (!epochPattern.test(epoch))
    throw new KeyLayoutError(
      `epoch ${JSON.stringify(epoch)} must be 1-64 ASCII letters or digits (e.g. a ULID)`,
    );
  return epoch;
}

/**
 * Normalizes a bucket prefix: `""` (bucket root), or `/`-separated names with
 * no empty, `.` or `..` segments. A trailing `/` is tolerated and dropped.
 */
export function normalizePrefix(prefix: string): string {
  const trimmed = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  if (trimmed === '') return '';
  for (const seg of trimmed.split('/')) {
    if (!prefixSegmentPattern.test(seg))
      throw new KeyLayoutError(
        `prefix ${JSON.stringify(prefix)} has an invalid segment ${JSON.stringify(seg)} (empty, '.', '..' or a character outside [A-Za-z0-9._=-])`,
      );
  }
  return trimmed;
}

export function formatSegmentId(segmentId: bigint): string {
  if (segmentId < 0n || segmentId > segmentIdMax)
    throw new KeyLayoutError(`segment id ${segmentId} is outside 0..2^64-1`);
  return segmentId.toString().padStart(segmentIdDigits, '0');
}

export function parseSegmentId(text: string): bigint {
  if (!/^\d{20}$/.test(text)) throw new KeyLayoutError(`segment id ${JSON.stringify(text)} is not 20 digits`);
  const id = BigInt(text);
  formatSegmentId(id); // range check
  return id;
}

/** `YYYY-MM-DD` (UTC) of a µs timestamp: the `dt=` partition of raw and DLQ files. */
export function utcDate(micros: bigint): string {
  return new Date(Number(micros / 1000n)).toISOString().slice(0, 10);
}

export function checkDt(dt: string): string {
  const m = dtPattern.exec(dt);
  const ok = m !== null && new Date(`${dt}T00:00:00Z`).toISOString().slice(0, 10) === dt;
  if (!ok) throw new KeyLayoutError(`dt ${JSON.stringify(dt)} is not a calendar date YYYY-MM-DD`);
  return dt;
}

function join(prefix: string, ...parts: string[]): string {
  const p = normalizePrefix(prefix);
  return p === '' ? parts.join('/') : `${p}/${parts.join('/')}`;
}

function checkRef(ref: SegmentRef): { endpoint: string; instance: string; epoch: string; id: string } {
  return {
    endpoint: checkName('endpoint', ref.endpoint),
    instance: checkName('instance', ref.instance),
    epoch: checkEpoch(ref.epoch),
    id: formatSegmentId(ref.segmentId),
  };
}

/** `{instance}-{epoch}-{segmentId}`: the file name stem of every Parquet artifact. */
export function parquetStem(ref: SegmentRef): string {
  const r = checkRef(ref);
  return `${r.instance}-${r.epoch}-${r.id}`;
}

export function segmentKey(prefix: string, ref: SegmentRef): string {
  const r = checkRef(ref);
  return join(prefix, 'segments', r.endpoint, r.instance, r.epoch, `${r.id}.wal.zst`);
}

export function rawKey(prefix: string, ref: SegmentRef, dt: string): string {
  return join(
    prefix,
    'raw',
    checkName('endpoint', ref.endpoint),
    `dt=${checkDt(dt)}`,
    `${parquetStem(ref)}.parquet`,
  );
}

export function viewKey(
  prefix: string,
  ref: SegmentRef,
  view: string,
  partitions: readonly HivePartition[],
): string {
  checkName('endpoint', ref.endpoint);
  return join(
    prefix,
    'views',
    checkName('view', view),
    ...hiveLevels(partitions),
    `${parquetStem(ref)}.parquet`,
  );
}

export function dlqKey(prefix: string, ref: SegmentRef, view: string, dt: string): string {
  checkName('endpoint', ref.endpoint);
  return join(prefix, 'dlq', checkName('view', view), `dt=${checkDt(dt)}`, `${parquetStem(ref)}.parquet`);
}

export function commitKey(prefix: string, ref: SegmentRef): string {
  const r = checkRef(ref);
  return join(prefix, 'commits', r.endpoint, r.instance, r.epoch, `${r.id}.json`);
}

export function artifactKey(prefix: string, ref: SegmentRef, spec: ArtifactSpec): string {
  switch (spec.kind) {
    case 'segment':
      return segmentKey(prefix, ref);
    case 'raw':
      return rawKey(prefix, ref, spec.dt);
    case 'view':
      return viewKey(prefix, ref, spec.view, spec.partitions);
    case 'dlq':
      return dlqKey(prefix, ref, spec.view, spec.dt);
  }
}

/**
 * The prefix a consumer lists (with StartAfter = its cursor) to follow an
 * endpoint's commits: all instances, or one instance, or one epoch of it.
 * Always ends in `/` so `ep` never matches `ep2`.
 */
export function commitsPrefix(prefix: string, endpoint: string, instance?: string, epoch?: string): string {
  const parts = ['commits', checkName('endpoint', endpoint)];
  if (instance !== undefined) parts.push(checkName('instance', instance));
  if (epoch !== undefined) {
    if (instance === undefined) throw new KeyLayoutError('an epoch needs an instance');
    parts.push(checkEpoch(epoch));
  }
  return `${join(prefix, ...parts)}/`;
}

/** Inverse of commitKey: which segment a listed marker key belongs to. */
export function parseCommitKey(prefix: string, key: string): SegmentRef {
  const p = normalizePrefix(prefix);
  const head = p === '' ? 'commits/' : `${p}/commits/`;
  const rest = key.startsWith(head) ? key.slice(head.length).split('/') : [];
  const [endpoint, instance, epoch, file] = rest;
  const m = file !== undefined ? /^(\d{20})\.json$/.exec(file) : null;
  if (rest.length !== 4 || endpoint === undefined || instance === undefined || epoch === undefined || !m?.[1])
    throw new KeyLayoutError(
      `${JSON.stringify(key)} is not a commit marker key under prefix ${JSON.stringify(p)}`,
    );
  const ref: SegmentRef = { endpoint, instance, epoch, segmentId: parseSegmentId(m[1]) };
  if (commitKey(p, ref) !== key)
    throw new KeyLayoutError(`${JSON.stringify(key)} is not a canonical commit key`);
  return ref;
}

// Partition values come from user data, so their encoding must be injective
// (two different values never share a folder, or one file would overwrite
// the other) and must not let a value change the path. Hive's convention,
// made injective (docs/s3-layout.md "Partition values"):
//   NULL            → __HIVE_DEFAULT_PARTITION__ (what Hive, Spark, Trino and DuckDB read as NULL)
//   ''              → __LANDFALL_EMPTY__ (Hive writes '' as NULL, and `alias=` breaks Spark)
//   anything else   → every byte outside [A-Za-z0-9._-] percent-escaped (so `/`, `=`, `%`,
//                     `:`, spaces and non-ASCII cannot change or garble the path), and a
//                     value starting with `__` has its first `_` written `%5F`, so no value
//                     can spell one of the two names above (readers decode `%5F` back to `_`).
// Dots stay: a level is always `name=value`, so a value of `..` can never become a `..` segment.
export const hiveDefaultPartition = '__HIVE_DEFAULT_PARTITION__';
export const hiveEmptyPartition = '__LANDFALL_EMPTY__';

export function escapeHiveValue(value: string | null): string {
  if (value === null) return hiveDefaultPartition;
  if (value === '') return hiveEmptyPartition;
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9._-]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out.startsWith('__') ? `%5F${out.slice(1)}` : out;
}

/** Inverse of escapeHiveValue (throws on text it cannot have made). */
export function unescapeHiveValue(text: string): string | null {
  if (text === hiveDefaultPartition) return null;
  if (text === hiveEmptyPartition) return '';
  if (text === '' || text.startsWith('__') || !/^(?:[A-Za-z0-9._-]|%[0-9A-F]{2})+$/.test(text))
    throw new KeyLayoutError(`${JSON.stringify(text)} is not an escaped partition value`);
  let value: string;
  try {
    value = decodeURIComponent(text);
  } catch {
    throw new KeyLayoutError(`${JSON.stringify(text)} does not decode to UTF-8`);
  }
  if (escapeHiveValue(value) !== text)
    throw new KeyLayoutError(`${JSON.stringify(text)} is not the canonical escape of its value`);
  return value;
}

/** The `name=value` path levels of a view file, outermost first. */
export function hiveLevels(partitions: readonly HivePartition[]): string[] {
  return partitions.map(([name, value]) => `${checkName('partition', name)}=${escapeHiveValue(value)}`);
}
