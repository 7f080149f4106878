// The node's `iceberg` config block: the REST catalog View tables are committed to.
import { Type, type Static } from '@sinclair/typebox';
import { IcebergCompactionSchema } from './compaction-settings.ts';

export const icebergRequestTimeoutMsDefault = 30_000;
export const icebergConflictRetriesMaxDefault = 20;

export const IcebergSchema = Type.Object(
  {
    catalogUri: Type.Optional(
      Type.String({
        minLength: 1,
        pattern: '^https?://',
        description:
          'Base URI of an Iceberg REST catalog (`http://catalog:8181`; routes under `/v1/`). Views with an `iceberg` target append each segment’s files to their table there, then the commit marker names the snapshot (docs/iceberg.md). Needs s3.bucket. Unset: no table commits.',
      }),
    ),
    warehouse: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'Sent as `warehouse` to the catalog’s `GET /v1/config` (which warehouse or prefix to use).',
      }),
    ),
    requestTimeoutMs: Type.Integer({
      minimum: 100,
      default: icebergRequestTimeoutMsDefault,
      description: 'Bound on each catalog request; a timed-out commit is looked up again before any retry.',
    }),
    conflictRetriesMax: Type.Integer({
      minimum: 0,
      maximum: 1_000,
      default: icebergConflictRetriesMaxDefault,
      description:
        'Commit conflicts (409: another writer moved the table) retried at once, with jitter, before the segment goes back to delivery’s backoff.',
    }),
    compaction: IcebergCompactionSchema,
  },
  {
    additionalProperties: false,
    default: {},
    description: 'Apache Iceberg tables from views, through an Iceberg REST catalog.',
  },
);

export type IcebergConfig = Static<typeof IcebergSchema>;
