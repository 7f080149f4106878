// Parquet field ids for a View's files, asked before they are written: the ids
// of the View's Iceberg table, so readers resolve the columns by id (no name
// mapping) and a View edit (a column dropped, reordered, added) never moves
// an id. Columns the table lacks get the ids the commit will give them
// (commit.ts: after the table's last-column-id, in View column order, the
// same rule checkViewFitsTable applies); a table that does not exist yet gets
// 1..n, as it will be created.
//
// Anything that stops the lookup (the catalog away, a View that no longer fits
// its table) writes that View's files without ids: the table's name mapping
// reads them, and the commit decides about the fit as before. The commit
// checks the ids a file carries against the table's (a table evolved in
// between by another writer): a file whose ids are not the table's is refused,
// never appended to be read wrong.
//
// The lookup sits in front of every segment's materialisation, so a catalog
// that is away must not slow the uploads down (the commit waits for it
// anyway, the uploads need not): each request is bounded by
// lookupTimeoutMsMax, and after an unanswered one the lookups pause for
// pauseAfterFailureMs (files written meanwhile go without ids).
import { IcebergError } from './errors.ts';
import { silentLogger, type Logger } from '../log.ts';
import type { CompiledView } from '../views/compile.ts';
import type { CatalogAuth } from './auth.ts';
import { restCatalogFrom, type CatalogClientConfig } from './auth.ts';
import type { AwsCredentialIdentityProvider } from '@smithy/types';
import { checkViewFitsTable, viewToIcebergSchema } from './schema.ts';

const lookupTimeoutMsMax = 5_000;
const pauseAfterFailureMs = 10_000;

export interface IcebergFieldIdsOptions {
  readonly config: CatalogClientConfig;
  readonly log?: Logger;
  readonly fetch?: typeof fetch;
  /** The node's AWS credentials, for `iceberg.auth.type: sigv4`. */
  readonly awsCredentials?: () => AwsCredentialIdentityProvider;
  /** The node's one catalog auth (auth.ts CatalogClientDeps.auth). */
  readonly auth?: CatalogAuth;
  readonly nowMs?: () => number;
}

export function icebergFieldIds(
  o: IcebergFieldIdsOptions,
): (views: readonly CompiledView[]) => Promise<ReadonlyMap<string, Readonly<Record<string, number>>>> {
  const log = o.log ?? silentLogger;
  // With the node's catalog auth: a catalog that wants a token for appends wants it for lookups too.
  const catalog = restCatalogFrom(
    { ...o.config, requestTimeoutMs: Math.min(o.config.requestTimeoutMs, lookupTimeoutMsMax) },
    {
      log,
      ...(o.fetch !== undefined ? { fetch: o.fetch } : {}),
      ...(o.awsCredentials !== undefined ? { awsCredentials: o.awsCredentials } : {}),
      ...(o.auth !== undefined ? { auth: o.auth } : {}),
    },
  );
  const nowMs = o.nowMs ?? Date.now;
  let pausedUntilMs = 0;
  return async (views) => {
    const out = new Map<string, Readonly<Record<string, number>>>();
    for (const view of views) {
      const target = view.spec.iceberg;
      if (target === undefined || nowMs() < pausedUntilMs) continue;
      const columns = { view: view.spec.name, columns: view.columns };
      try {
        const t = await catalog.loadTable(target.namespace, target.table);
        let fields: readonly { readonly name: string; readonly id: number }[];
        if (t === null) fields = viewToIcebergSchema(columns).fields;
        else {
          const m = t.metadata;
          const schema = m.schemas.find((s) => s['schema-id'] === m['current-schema-id']);
          if (schema === undefined) continue;
          const fit = checkViewFitsTable(columns, schema, m['last-column-id'] ?? 0);
          fields = [...schema.fields, ...fit.added];
        }
        const written = new Set(view.columns.map((c) => c.name));
        out.set(
          view.spec.name,
          Object.fromEntries(fields.filter((f) => written.has(f.name)).map((f) => [f.name, f.id])),
        );
      } catch (err) {
        if (err instanceof IcebergError && err.code === 'ICEBERG_CATALOG_UNAVAILABLE')
          pausedUntilMs = nowMs() + pauseAfterFailureMs;
        log.warn(
          { view: view.spec.name, table: `${target.namespace}.${target.table}`, err },
          'iceberg field ids unknown: this segment’s view files are written without them (the table’s name mapping reads them)',
        );
      }
    }
    return out;
  };
}
