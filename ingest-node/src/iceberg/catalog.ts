// A client for the Iceberg REST catalog protocol (Apache Iceberg's
// open-api/rest-catalog-open-api.yaml), just the calls an append needs:
// config, create namespace, create and load table, commit table updates.
// Written from the spec on purpose (no client package): the commit must be
// exactly one request with our requirements, and every answer mapped to
// "conflict", "maybe committed" or "broken" (errors.ts).
import type { CatalogAuth } from './auth.ts';
import { IcebergError } from './errors.ts';
import type { PartitionSpec } from './partition.ts';
import type { IcebergSchema } from './schema.ts';

export interface RestCatalogOptions {
  /** Base URI, e.g. `http://catalog:8181` (routes are under `/v1/`). */
  readonly uri: string;
  /** Passed as `?warehouse=` to `GET /v1/config`. */
  readonly warehouse?: string;
  /** The `Authorization` header of every call (auth.ts). Unset: none. */
  readonly auth?: CatalogAuth;
  /** Bound on each request. Default 30 s. */
  readonly requestTimeoutMs?: number;
  readonly fetch?: typeof fetch;
}

export interface Snapshot {
  readonly 'snapshot-id': bigint | number;
  readonly 'parent-snapshot-id'?: bigint | number;
  readonly 'sequence-number'?: bigint | number;
  readonly 'timestamp-ms': number;
  readonly 'manifest-list': string;
  readonly summary: Readonly<Record<string, string>>;
  readonly 'schema-id'?: number;
}

export interface TableMetadata {
  readonly 'format-version': number;
  readonly 'table-uuid': string;
  readonly location: string;
  readonly 'last-sequence-number'?: bigint | number;
  readonly 'current-schema-id': number;
  readonly 'last-column-id'?: number;
  readonly schemas: readonly IcebergSchema[];
  readonly 'default-spec-id': number;
  readonly 'partition-specs': readonly PartitionSpec[];
  readonly 'current-snapshot-id'?: bigint | number | null;
  readonly snapshots?: readonly Snapshot[];
  readonly refs?: Readonly<
    Record<string, { readonly 'snapshot-id': bigint | number; readonly type: string }>
  >;
  readonly properties?: Readonly<Record<string, string>>;
}

export interface LoadedTable {
  readonly metadataLocation: string | undefined;
  readonly metadata: TableMetadata;
}

export type TableRequirement =
  | { readonly type: 'assert-table-uuid'; readonly uuid: string }
  | { readonly type: 'assert-ref-snapshot-id'; readonly ref: string; readonly 'snapshot-id': bigint | null }
  | { readonly type: 'assert-current-schema-id'; readonly 'current-schema-id': number }
  | { readonly type: 'assert-last-assigned-field-id'; readonly 'last-assigned-field-id': number };

export type TableUpdate =
  | { readonly action: 'add-schema'; readonly schema: IcebergSchema; readonly 'last-column-id': number }
  | { readonly action: 'set-current-schema'; readonly 'schema-id': number }
  | { readonly action: 'set-properties'; readonly updates: Readonly<Record<string, string>> }
  | {
      readonly action: 'add-snapshot';
      readonly snapshot: {
        readonly 'snapshot-id': bigint;
        readonly 'parent-snapshot-id'?: bigint;
        readonly 'sequence-number': bigint;
        readonly 'timestamp-ms': number;
        readonly 'manifest-list': string;
        readonly summary: Readonly<Record<string, string>>;
        readonly 'schema-id': number;
      };
    }
  | {
      readonly action: 'set-snapshot-ref';
      readonly 'ref-name': string;
      readonly type: 'branch';
      readonly 'snapshot-id': bigint;
    };

/** JSON with integers past 2^53 (other writers' snapshot ids) kept exact as bigint. */
export function parseJsonExact(text: string): unknown {
  return JSON.parse(text, (_key, value: unknown, context?: { source?: string }) =>
    typeof value === 'number' &&
    !Number.isSafeInteger(value) &&
    context?.source !== undefined &&
    /^-?\d+$/.test(context.source)
      ? BigInt(context.source)
      : value,
  );
}

/** JSON.stringify that writes bigints as JSON integers. */
export function stringifyJsonExact(value: unknown): string {
  const marker = '\u0000big:';
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? `${marker}${v}` : v)).replace(
    /"\\u0000big:(-?\d+)"/g,
    '$1',
  );
}

/** A snapshot id (or sequence number) from metadata as a bigint. */
export function toBigInt(v: bigint | number | null | undefined): bigint | null {
  if (v === null || v === undefined) return null;
  return typeof v === 'bigint' ? v : BigInt(v);
}

function errorText(body: unknown): string {
  const e = (body as { error?: { message?: unknown; type?: unknown } } | null)?.error;
  if (e !== undefined && typeof e.message === 'string')
    return typeof e.type === 'string' ? `${e.type}: ${e.message}` : e.message;
  return typeof body === 'string' ? body.slice(0, 500) : (JSON.stringify(body)?.slice(0, 500) ?? '');
}

export class RestCatalog {
  readonly #o: RestCatalogOptions;
  readonly #base: string;
  readonly #fetch: typeof fetch;
  #prefix: Promise<string> | undefined;

  constructor(o: RestCatalogOptions) {
    this.#o = o;
    this.#base = o.uri.replace(/\/+$/, '');
    this.#fetch = o.fetch ?? fetch;
  }

  get uri(): string {
    return this.#base;
  }

  async #request(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: unknown; text: string }> {
    let r = await this.#send(method, path, body);
    // 401 (and the spec's 419 "credentials timed out") mean the request was not
    // acted on: once with fresh credentials (a rotated file, a new token) is safe, even for a commit.
    if ((r.status === 401 || r.status === 419) && r.authorization !== undefined) {
      this.#o.auth?.rejected(r.authorization);
      r = await this.#send(method, path, body);
      if ((r.status === 401 || r.status === 419) && r.authorization !== undefined) {
        this.#o.auth?.rejected(r.authorization);
        throw new IcebergError(
          'ICEBERG_CATALOG_AUTH_FAILED',
          `${method} ${path}: ${r.status} with fresh credentials: ${errorText(r.json)}`,
          { status: r.status },
        );
      }
    }
    return r;
  }

  async #send(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: unknown; text: string; authorization: string | undefined }> {
    let headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const url = `${this.#base}${path}`;
    const payload = body !== undefined ? stringifyJsonExact(body) : undefined;
    const auth = this.#o.auth;
    let authorization: string | undefined;
    if (auth?.sign !== undefined)
      headers = { ...headers, ...(await auth.sign({ method, url: new URL(url), headers, body: payload })) };
    else {
      authorization = await auth?.authorization();
      if (authorization !== undefined) headers['authorization'] = authorization;
    }
    let res: Response;
    let text: string;
    try {
      res = await this.#fetch(url, {
        method,
        headers,
        ...(payload !== undefined ? { body: payload } : {}),
        signal: AbortSignal.timeout(this.#o.requestTimeoutMs ?? 30_000),
      });
      text = await res.text();
    } catch (err) {
      throw new IcebergError(
        'ICEBERG_CATALOG_UNAVAILABLE',
        `${method} ${path}: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      );
    }
    let json: unknown = undefined;
    if (text !== '') {
      try {
        json = parseJsonExact(text);
      } catch {
        json = text;
      }
    }
    return { status: res.status, json, text, authorization };
  }

  #fail(method: string, path: string, r: { status: number; json: unknown }): never {
    const msg = `${method} ${path}: ${r.status} ${errorText(r.json)}`;
    if (r.status === 409) throw new IcebergError('ICEBERG_COMMIT_CONFLICT', msg, { status: r.status });
    if (r.status === 401) throw new IcebergError('ICEBERG_CATALOG_AUTH_FAILED', msg, { status: r.status });
    // 5xx (and 419 auth timeouts, 429) may hide a commit that happened: the caller looks before retrying.
    if (r.status >= 500 || r.status === 429 || r.status === 419)
      throw new IcebergError('ICEBERG_CATALOG_UNAVAILABLE', msg, { status: r.status });
    throw new IcebergError('ICEBERG_CATALOG_ERROR', msg, { status: r.status });
  }

  /** `/v1/{prefix}/` from the catalog's config (a catalog may serve several warehouses under prefixes). */
  #root(): Promise<string> {
    this.#prefix ??= (async () => {
      const q = this.#o.warehouse !== undefined ? `?warehouse=${encodeURIComponent(this.#o.warehouse)}` : '';
      const r = await this.#request('GET', `/v1/config${q}`);
      if (r.status !== 200) this.#fail('GET', '/v1/config', r);
      const c = r.json as { defaults?: Record<string, string>; overrides?: Record<string, string> };
      const prefix = c.overrides?.['prefix'] ?? c.defaults?.['prefix'];
      return prefix === undefined || prefix === '' ? '/v1/' : `/v1/${encodeURIComponent(prefix)}/`;
    })().catch((err: unknown) => {
      this.#prefix = undefined;
      throw err;
    });
    return this.#prefix;
  }

  async #tablePath(namespace: string, table?: string): Promise<string> {
    const ns = `${await this.#root()}namespaces/${encodeURIComponent(namespace)}`;
    return table === undefined ? ns : `${ns}/tables/${encodeURIComponent(table)}`;
  }

  /** Creates the namespace; one that exists already is fine. */
  async ensureNamespace(namespace: string): Promise<void> {
    const path = `${await this.#root()}namespaces`;
    const r = await this.#request('POST', path, { namespace: [namespace], properties: {} });
    if (r.status === 200 || r.status === 409) return;
    this.#fail('POST', path, r);
  }

  /** The table, or null when the catalog has none by that name. */
  async loadTable(namespace: string, table: string): Promise<LoadedTable | null> {
    const path = await this.#tablePath(namespace, table);
    const r = await this.#request('GET', path);
    if (r.status === 404) return null;
    if (r.status !== 200) this.#fail('GET', path, r);
    return this.#loaded(r.json);
  }

  #loaded(json: unknown): LoadedTable {
    const j = json as { 'metadata-location'?: string; metadata?: TableMetadata };
    if (j.metadata === undefined)
      throw new IcebergError('ICEBERG_CATALOG_ERROR', 'table answer without metadata');
    return { metadataLocation: j['metadata-location'], metadata: j.metadata };
  }

  /** Creates the table; when it exists already (a concurrent writer), loads it instead. */
  async createTable(
    namespace: string,
    table: string,
    schema: IcebergSchema,
    properties: Readonly<Record<string, string>>,
    spec: PartitionSpec = { 'spec-id': 0, fields: [] },
  ): Promise<LoadedTable> {
    const path = `${await this.#tablePath(namespace)}/tables`;
    const r = await this.#request('POST', path, {
      name: table,
      schema,
      'partition-spec': spec,
      'write-order': { 'order-id': 0, fields: [] },
      'stage-create': false,
      properties,
    });
    if (r.status === 200) return this.#loaded(r.json);
    if (r.status === 409) {
      const t = await this.loadTable(namespace, table);
      if (t !== null) return t;
    }
    this.#fail('POST', path, r);
  }

  /**
   * One atomic commit. Throws ICEBERG_COMMIT_CONFLICT when a requirement
   * failed (nothing changed), ICEBERG_CATALOG_UNAVAILABLE when the outcome is
   * unknown (the commit may have happened).
   */
  async commitTable(
    namespace: string,
    table: string,
    requirements: readonly TableRequirement[],
    updates: readonly TableUpdate[],
  ): Promise<LoadedTable> {
    const path = await this.#tablePath(namespace, table);
    const r = await this.#request('POST', path, {
      identifier: { namespace: [namespace], name: table },
      requirements,
      updates,
    });
    if (r.status !== 200) this.#fail('POST', path, r);
    return this.#loaded(r.json);
  }
}
