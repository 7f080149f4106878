// The node's `iceberg` config block: the REST catalog View tables are committed to.
import { Type, type Static } from '@sinclair/typebox';
import { IcebergCompactionSchema } from './compaction-settings.ts';

export const icebergRequestTimeoutMsDefault = 30_000;
export const icebergConflictRetriesMaxDefault = 20;

export const icebergRefreshMarginMsDefault = 60_000;
export const icebergTokenRetriesMaxDefault = 4;

export const IcebergAuthSchema = Type.Object(
  {
    type: Type.Union(
      [Type.Literal('none'), Type.Literal('bearer'), Type.Literal('oauth2'), Type.Literal('sigv4')],
      {
        default: 'none',
        description:
          'none: no Authorization header. bearer: `Authorization: Bearer <tokenFile>`. oauth2: client credentials (clientIdFile, clientSecretFile) exchanged at tokenUri for a bearer token that is cached and replaced before it expires. sigv4: AWS Signature Version 4 with the node’s AWS credentials (the `credentials` block), for AWS Glue’s and S3 Tables’ Iceberg REST endpoints.',
      },
    ),
    tokenFile: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'bearer: the file holding the token (one line; a trailing newline is ignored). Re-read when the file changes and after a 401, so rotation needs no restart. Never logged.',
      }),
    ),
    clientIdFile: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'oauth2: the file holding the client id. Read at each token request.',
      }),
    ),
    clientSecretFile: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'oauth2: the file holding the client secret. Read at each token request; never logged.',
      }),
    ),
    tokenUri: Type.Optional(
      Type.String({
        minLength: 1,
        pattern: '^https?://',
        description:
          'oauth2: the token endpoint. Unset: `<catalogUri>/v1/oauth/tokens` (the REST spec’s route; Polaris serves it). Set it for an external identity provider (Keycloak, Entra ID…).',
      }),
    ),
    scope: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'oauth2: the `scope` of the token request (Polaris: `PRINCIPAL_ROLE:ALL`; Iceberg’s own clients send `catalog`). Unset: no scope is sent.',
      }),
    ),
    signingName: Type.Optional(
      Type.String({
        minLength: 1,
        pattern: '^[a-z0-9-]+$',
        description:
          'sigv4: the service name requests are signed for: `glue` (AWS Glue), `s3tables` (S3 Tables).',
      }),
    ),
    signingRegion: Type.Optional(
      Type.String({
        minLength: 1,
        pattern: '^[a-z0-9-]+$',
        description:
          'sigv4: the region requests are signed for. Unset: the region in catalogUri’s host (`glue.<region>.amazonaws.com`).',
      }),
    ),
    refreshMarginMs: Type.Integer({
      minimum: 0,
      default: icebergRefreshMarginMsDefault,
      description:
        'oauth2: a token is replaced this long before it expires (at most half-way through its life). Expiry from `expires_in`, else the JWT `exp`; with neither, the token is kept until the catalog answers 401.',
    }),
    tokenRetriesMax: Type.Integer({
      minimum: 0,
      maximum: 20,
      default: icebergTokenRetriesMaxDefault,
      description:
        'oauth2: retries of a token request after a network error, timeout, 5xx or 429, with jittered backoff from 200 ms doubling to 5 s. A 400/401 (bad client) is not retried at once; the segment’s delivery backoff tries again later.',
    }),
  },
  {
    additionalProperties: false,
    default: {},
    description: 'How the node authenticates to the Iceberg REST catalog.',
  },
);

export type IcebergAuthConfig = Static<typeof IcebergAuthSchema>;

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
    auth: IcebergAuthSchema,
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

/** Problems of an `iceberg.auth` block, for config/load.ts. */
export function icebergAuthProblems(a: IcebergAuthConfig, catalogUri?: string): string[] {
  const p: string[] = [];
  const set = (k: keyof IcebergAuthConfig): boolean => a[k] !== undefined;
  if (a.type === 'bearer' && !set('tokenFile'))
    p.push('iceberg.auth.type is bearer but iceberg.auth.tokenFile is not set');
  if (a.type === 'oauth2') {
    if (!set('clientIdFile')) p.push('iceberg.auth.type is oauth2 but iceberg.auth.clientIdFile is not set');
    if (!set('clientSecretFile'))
      p.push('iceberg.auth.type is oauth2 but iceberg.auth.clientSecretFile is not set');
  }
  if (a.type !== 'bearer' && set('tokenFile'))
    p.push(`iceberg.auth.tokenFile is set but iceberg.auth.type is ${a.type} (set type: bearer)`);
  if (a.type !== 'oauth2')
    for (const k of ['clientIdFile', 'clientSecretFile', 'tokenUri', 'scope'] as const)
      if (set(k)) p.push(`iceberg.auth.${k} is set but iceberg.auth.type is ${a.type} (set type: oauth2)`);
  if (a.type === 'sigv4') {
    if (!set('signingName'))
      p.push('iceberg.auth.type is sigv4 but iceberg.auth.signingName is not set (glue, s3tables)');
    if (
      !set('signingRegion') &&
      !/\.[a-z]{2}(-[a-z]+)+-\d+\.amazonaws\.com(\.cn)?(:\d+)?(\/|$)/.test(catalogUri ?? '')
    )
      p.push(
        'iceberg.auth.type is sigv4 but iceberg.auth.signingRegion is not set and iceberg.catalogUri names no region (<service>.<region>.amazonaws.com)',
      );
  } else
    for (const k of ['signingName', 'signingRegion'] as const)
      if (set(k)) p.push(`iceberg.auth.${k} is set but iceberg.auth.type is ${a.type} (set type: sigv4)`);
  return p;
}
