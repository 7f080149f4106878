// The check at View load (views.dir reload, node start): a View whose column
// type changed in a way its Iceberg table cannot promote (string → int, long →
// int…) is refused there, with the views error `iceberg_type_change` on the
// column, so the previous version keeps running, rather than found at the
// first commit, after the files are written, and recorded in every marker
// from then on. A table the catalog does not have yet, or a catalog that
// cannot be asked now, does not block a load: the commit still checks.
import { silentLogger, type Logger } from '../log.ts';
import type { CompiledView } from '../views/compile.ts';
import { ViewError, ViewErrorCode } from '../views/errors.ts';
import type { CatalogAuth } from './auth.ts';
import { restCatalogFrom, type CatalogClientConfig } from './auth.ts';
import type { RestCatalog } from './catalog.ts';
import type { AwsCredentialIdentityProvider } from '@smithy/types';
import { typeChanges } from './schema.ts';

export function icebergViewCheck(o: {
  readonly config: CatalogClientConfig;
  readonly log?: Logger;
  readonly fetch?: typeof fetch;
  /** The node's AWS credentials, for `iceberg.auth.type: sigv4`. */
  readonly awsCredentials?: () => AwsCredentialIdentityProvider;
  /** The node's one catalog auth (auth.ts CatalogClientDeps.auth). */
  readonly auth?: CatalogAuth;
}): (view: CompiledView) => Promise<void> {
  const log = o.log ?? silentLogger;
  // A load (node start, a reload) waits for this: bounded shorter than a commit's requests.
  // With the node's catalog auth: a catalog that wants a token for appends wants it for lookups too.
  const catalog = restCatalogFrom(
    { ...o.config, requestTimeoutMs: Math.min(o.config.requestTimeoutMs, 5_000) },
    {
      log,
      ...(o.fetch !== undefined ? { fetch: o.fetch } : {}),
      ...(o.awsCredentials !== undefined ? { awsCredentials: o.awsCredentials } : {}),
      ...(o.auth !== undefined ? { auth: o.auth } : {}),
    },
  );
  return async (view) => {
    const target = view.spec.iceberg;
    if (target === undefined) return;
    let t: Awaited<ReturnType<RestCatalog['loadTable']>>;
    try {
      t = await catalog.loadTable(target.namespace, target.table);
    } catch (err) {
      log.warn(
        { view: view.spec.name, table: `${target.namespace}.${target.table}`, err },
        'iceberg table not checked at View load (the catalog did not answer); the commit checks it',
      );
      return;
    }
    if (t === null) return;
    const schema = t.metadata.schemas.find((s) => s['schema-id'] === t.metadata['current-schema-id']);
    if (schema === undefined) return;
    const changes = typeChanges({ view: view.spec.name, columns: view.columns }, schema);
    const first = changes[0];
    if (first === undefined) return;
    throw new ViewError(
      ViewErrorCode.icebergTypeChange,
      `columns[${first.index}].type`,
      `table ${target.namespace}.${target.table} has ${first.name} as ${first.table}; ${first.view} is not a promotion of it (Iceberg promotes int → long, float → double, decimal(P,S) → decimal(P',S) with P' ≥ P): keep the type, or use another column name or table`,
    );
  };
}
