// The delivery pipeline's table commit (pipeline.ts `tableCommit`): per
// sealed segment, each View with an `iceberg` target appends its view files
// to its table (commit.ts, exactly once), and the commit marker lists the
// snapshots. Views are the ones in force when the segment was sealed (the
// same the Parquet producer applied), matched by spec hash.
import { formatSegmentId } from '../delivery/keys.ts';
import type { MarkerTable } from '../delivery/marker.ts';
import type { TableCommitContext } from '../delivery/pipeline.ts';
import { silentLogger, type Logger } from '../log.ts';
import type { ObjectStore } from '../store/types.ts';
import type { CompiledView } from '../views/compile.ts';
import type { SealedSegment } from '../wal/types.ts';
import type { AwsCredentialIdentityProvider } from '@smithy/types';
import type { CatalogAuth } from './auth.ts';
import { restCatalogFrom } from './auth.ts';
import { IcebergWriter } from './commit.ts';
import type { IcebergConfig } from './settings.ts';
import { partitionsOfViewKey } from './partition.ts';
import { IcebergError } from './errors.ts';
import type { IcebergErrorCode } from './errors.ts';

/**
 * Refusals caused by the View (or a table made for something else), not by the
 * catalog being away: retrying cannot help, so they go into the marker.
 */
const VIEW_CAUSED: ReadonlySet<IcebergErrorCode> = new Set([
  'ICEBERG_TYPE_UNSUPPORTED',
  'ICEBERG_SCHEMA_MISMATCH',
  'ICEBERG_TABLE_UNSUPPORTED',
  'ICEBERG_PARTITION_MISMATCH',
]);

export interface IcebergCommitOptions {
  /** `auth` unset: none. */
  readonly config: Omit<IcebergConfig, 'auth' | 'compaction'> & {
    readonly catalogUri: string;
    readonly auth?: IcebergConfig['auth'];
  };
  /** The bucket the node delivers to (data files are `s3://<bucket>/<key>`). */
  readonly bucket: string;
  readonly views: (segment: SealedSegment) => readonly CompiledView[];
  readonly log?: Logger;
  readonly fetch?: typeof fetch;
  /** The node's AWS credentials, for `iceberg.auth.type: sigv4` (made only then). */
  readonly awsCredentials?: () => AwsCredentialIdentityProvider;
  /** The node's one catalog auth (auth.ts CatalogClientDeps.auth). */
  readonly auth?: CatalogAuth;
}

/** The pipeline's `tableCommit` for a node, given its opened store and prefix. */
export function icebergTableCommit(
  o: IcebergCommitOptions,
): (store: ObjectStore, prefix: string) => (c: TableCommitContext) => Promise<readonly MarkerTable[]> {
  const log = o.log ?? silentLogger;
  const catalog = restCatalogFrom(o.config, {
    log,
    ...(o.fetch !== undefined ? { fetch: o.fetch } : {}),
    ...(o.awsCredentials !== undefined ? { awsCredentials: o.awsCredentials } : {}),
    ...(o.auth !== undefined ? { auth: o.auth } : {}),
  });
  return (store, prefix) => {
    const writer = new IcebergWriter({
      catalog,
      store,
      bucket: o.bucket,
      prefix,
      conflictRetriesMax: o.config.conflictRetriesMax,
    });
    return async (c) => {
      const tables: MarkerTable[] = [];
      const applied = new Map(c.views.map((v) => [v.name, v.specSha256]));
      for (const view of o.views(c.segment)) {
        const target = view.spec.iceberg;
        if (target === undefined) continue;
        const appliedHash = applied.get(view.spec.name);
        if (appliedHash === undefined) continue; // the View was not applied to this segment: nothing to append
        if (appliedHash !== view.specHash) {
          // Never silently: the marker says the table did not get these rows.
          const message = `the segment's ${view.spec.name} files were built with spec ${appliedHash}, this process knows ${view.specHash}: not appended; append them by hand or reprocess`;
          log.warn({ segment: formatSegmentId(c.ref.segmentId), view: view.spec.name }, message);
          tables.push({
            view: view.spec.name,
            namespace: target.namespace,
            table: target.table,
            error: { code: 'ICEBERG_VIEW_VERSION_UNKNOWN', message },
          });
          continue;
        }
        const files = c.artifacts
          .filter((a) => a.kind === 'view' && a.view === view.spec.name)
          .map((a) => ({ key: a.key, bytes: a.bytes, rows: a.rows }));
        const partitioning = view.partitions.map((p) => ({
          alias: p.alias,
          ...(p.transform !== undefined ? { transform: p.transform } : {}),
        }));
        let result: Awaited<ReturnType<IcebergWriter['append']>>;
        try {
          result = await writer.append({
            namespace: target.namespace,
            table: target.table,
            view: { view: view.spec.name, columns: view.columns, specSha256: view.specHash, partitioning },
            segment: {
              endpoint: c.ref.endpoint,
              instance: c.ref.instance,
              epoch: c.ref.epoch,
              segmentId: formatSegmentId(c.ref.segmentId),
            },
            // The partition values from the keys: all a delivery resumed after a restart has of them.
            files: files.map((f) => ({
              ...f,
              partitions: partitionsOfViewKey(prefix, view.spec.name, f.key),
            })),
          });
        } catch (err) {
          // A View its table cannot take must not hold back this segment and
          // every later one (delivery waits only on the store, the catalog and
          // credentials): the marker records why, the view files are delivered.
          if (!(err instanceof IcebergError) || !VIEW_CAUSED.has(err.code)) throw err;
          log.warn(
            { segment: formatSegmentId(c.ref.segmentId), view: view.spec.name, code: err.code, err },
            'iceberg append skipped: the View does not fit its table; the marker records why',
          );
          tables.push({
            view: view.spec.name,
            namespace: target.namespace,
            table: target.table,
            error: { code: err.code, message: err.message.slice(0, 1000) },
          });
          continue;
        }
        if (result === undefined) continue;
        log.info(
          {
            segment: formatSegmentId(c.ref.segmentId),
            view: view.spec.name,
            table: `${result.namespace}.${result.table}`,
            snapshotId: result.snapshotId,
            found: result.found,
            conflicts: result.conflicts,
          },
          result.found
            ? 'iceberg snapshot of this segment found (committed earlier)'
            : 'iceberg snapshot committed',
        );
        tables.push({
          view: view.spec.name,
          namespace: result.namespace,
          table: result.table,
          snapshotId: result.snapshotId,
        });
      }
      return tables;
    };
  };
}
