// Credentials for the user's bucket (DESIGN §5, §7):
//   - `default`: the AWS SDK's node chain: env, web identity token (IRSA:
//     AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), container credentials (EKS
//     Pod Identity: AWS_CONTAINER_CREDENTIALS_FULL_URI + token file), IMDS;
//   - `webIdentity`: IRSA with the role ARN from config (the token file from
//     the environment unless given);
//   - `assumeRole`: STS AssumeRole with an ExternalId into the user's account,
//     signed with a base identity (the default chain, or static keys), through
//     the SDK's fromTemporaryCredentials (one AssumeRole per call: it does not
//     cache, the wrapper below does);
//   - `static`: keys from config (MinIO, local development).
//
// Whatever the source, the result is cached in memory, refreshed before it
// expires (one refresh at a time, however many uploads ask), and never
// written anywhere: no file, no log line. A failed refresh keeps serving the
// current credentials while they are still valid, and is retried with a
// bounded backoff (not on every S3 call).
import {
  fromNodeProviderChain,
  fromTemporaryCredentials,
  fromTokenFile,
} from '@aws-sdk/credential-providers';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { systemClock, type Clock } from './clock.ts';
import { silentLogger, type Logger } from './log.ts';

export type CredentialsConfig =
  | { readonly mode: 'default' }
  | {
      /**
       * IRSA with the role named in config rather than only in the
       * environment the EKS webhook injects: the projected service-account
       * token (AWS_WEB_IDENTITY_TOKEN_FILE unless given) is exchanged with
       * STS AssumeRoleWithWebIdentity.
       */
      readonly mode: 'webIdentity';
      readonly roleArn: string;
      readonly tokenFile?: string | undefined;
      readonly sessionName?: string | undefined;
      readonly stsRegion?: string | undefined;
      readonly stsEndpoint?: string | undefined;
    }
  | {
      readonly mode: 'static';
      readonly accessKeyId: string;
      readonly secretAccessKey: string;
      readonly sessionToken?: string | undefined;
    }
  | {
      readonly mode: 'assumeRole';
      readonly roleArn: string;
      /** The customer-chosen secret that guards against the confused-deputy problem. */
      readonly externalId?: string | undefined;
      /** Shows up in the customer's CloudTrail; defaults to `landfall`. */
      readonly sessionName?: string | undefined;
      /** 900..43200; STS's default (3600) when omitted. */
      readonly durationSeconds?: number | undefined;
      /** Region of the STS endpoint (regional STS avoids a us-east-1 dependency). */
      readonly stsRegion?: string | undefined;
      /** A custom STS endpoint (MinIO, tests). */
      readonly stsEndpoint?: string | undefined;
      /** The identity that calls AssumeRole: the default chain unless given. */
      readonly source?:
        | { readonly mode: 'default' }
        | {
            readonly mode: 'static';
            readonly accessKeyId: string;
            readonly secretAccessKey: string;
            readonly sessionToken?: string | undefined;
          }
        | undefined;
    };

/**
 * Refresh this long before expiry (the SDK's own window is 5 min). A refresh
 * that fails still leaves this much time to try again before uploads fail.
 */
export const credentialsRefreshBeforeExpiryMsDefault = 5 * 60_000;
/**
 * After a failed refresh, while the current credentials are still valid, the
 * next attempt waits 1 s, doubling up to this cap (never past the expiry), so
 * an STS outage costs one call per interval instead of one per S3 request.
 */
export const credentialsRefreshRetryDelayMsMaxDefault = 60_000;
const refreshRetryDelayMsBase = 1_000;

export interface CredentialsDeps {
  readonly clock?: Clock;
  readonly logger?: Logger;
  readonly refreshBeforeExpiryMs?: number;
  /** Cap of the backoff between failed refreshes while the current credentials are valid. */
  readonly refreshRetryDelayMsMax?: number;
}

export function createCredentialsProvider(
  cfg: CredentialsConfig,
  deps: CredentialsDeps = {},
): AwsCredentialIdentityProvider {
  switch (cfg.mode) {
    case 'static':
      return staticProvider(cfg);
    case 'default':
      return cachedCredentials(fromNodeProviderChain(), { ...deps, what: 'default chain' });
    case 'webIdentity':
      return cachedCredentials(
        fromTokenFile({
          roleArn: cfg.roleArn,
          roleSessionName: cfg.sessionName ?? 'landfall',
          ...(cfg.tokenFile !== undefined ? { webIdentityTokenFile: cfg.tokenFile } : {}),
          clientConfig: {
            region: cfg.stsRegion ?? process.env['AWS_REGION'] ?? 'us-east-1',
            ...(cfg.stsEndpoint !== undefined ? { endpoint: cfg.stsEndpoint } : {}),
          },
        }),
        { ...deps, what: `web identity ${cfg.roleArn}` },
      );
    case 'assumeRole':
      return cachedCredentials(assumeRoleProvider(cfg, deps), { ...deps, what: `AssumeRole ${cfg.roleArn}` });
  }
}

function staticProvider(cfg: {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string | undefined;
}): AwsCredentialIdentityProvider {
  if (cfg.accessKeyId === '' || cfg.secretAccessKey === '')
    throw new Error('static credentials need an accessKeyId and a secretAccessKey');
  const identity: AwsCredentialIdentity = {
    accessKeyId: cfg.accessKeyId,
    secretAccessKey: cfg.secretAccessKey,
    ...(cfg.sessionToken !== undefined ? { sessionToken: cfg.sessionToken } : {}),
  };
  return async () => identity;
}

const sessionNamePattern = /^[\w+=,.@-]{2,64}$/;

/**
 * One STS AssumeRole per invocation (the SDK's fromTemporaryCredentials),
 * signed by cfg.source; cachedCredentials decides when. The parameters are
 * checked here, up front, not at the first upload.
 */
export function assumeRoleProvider(
  cfg: Extract<CredentialsConfig, { mode: 'assumeRole' }>,
  deps: CredentialsDeps = {},
): AwsCredentialIdentityProvider {
  const sessionName = cfg.sessionName ?? 'landfall';
  if (!sessionNamePattern.test(sessionName))
    throw new Error(`sessionName ${JSON.stringify(sessionName)} must be 2-64 of [A-Za-z0-9_+=,.@-]`);
  if (cfg.durationSeconds !== undefined && !(cfg.durationSeconds >= 900 && cfg.durationSeconds <= 43_200))
    throw new Error('durationSeconds must be in 900..43200');
  const source = cfg.source ?? { mode: 'default' };
  return fromTemporaryCredentials({
    params: {
      RoleArn: cfg.roleArn,
      RoleSessionName: sessionName,
      ...(cfg.externalId !== undefined ? { ExternalId: cfg.externalId } : {}),
      ...(cfg.durationSeconds !== undefined ? { DurationSeconds: cfg.durationSeconds } : {}),
    },
    masterCredentials:
      source.mode === 'static'
        ? staticProvider(source)
        : cachedCredentials(fromNodeProviderChain(), { ...deps, what: 'default chain (AssumeRole source)' }),
    clientConfig: {
      // Not the caller's (S3) region: regional STS only when asked for.
      region: cfg.stsRegion ?? 'us-east-1',
      ...(cfg.stsEndpoint !== undefined ? { endpoint: cfg.stsEndpoint } : {}),
      maxAttempts: 3,
    },
  });
}

/**
 * Caches `inner`'s credentials until shortly before they expire. Concurrent
 * callers share one refresh. Credentials without an expiration are kept for
 * good (static keys, long-lived env keys).
 */
export function cachedCredentials(
  inner: AwsCredentialIdentityProvider,
  opts: CredentialsDeps & { what?: string } = {},
): AwsCredentialIdentityProvider {
  const clock = opts.clock ?? systemClock;
  const logger = opts.logger ?? silentLogger;
  const windowMs = opts.refreshBeforeExpiryMs ?? credentialsRefreshBeforeExpiryMsDefault;
  const what = opts.what ?? 'credentials';
  const retryDelayMsMax = opts.refreshRetryDelayMsMax ?? credentialsRefreshRetryDelayMsMaxDefault;
  let current: { identity: AwsCredentialIdentity; refreshAtMs: number; expiresAtMs: number } | undefined;
  let inFlight: Promise<AwsCredentialIdentity> | undefined;
  let failedRefreshes = 0;

  const refresh = async (): Promise<AwsCredentialIdentity> => {
    const obtainedAtMs = clock.nowMs();
    try {
      const identity = await inner();
      const expiresAtMs = identity.expiration?.getTime() ?? Infinity;
      // Short-lived credentials: refresh at half-life rather than hammering
      // STS on every call once the window exceeds their whole lifetime.
      const leadMs = Math.min(windowMs, Math.max(0, (expiresAtMs - obtainedAtMs) / 2));
      current = { identity, refreshAtMs: expiresAtMs - leadMs, expiresAtMs };
      failedRefreshes = 0;
      logger.debug(
        { what, expiresAt: Number.isFinite(expiresAtMs) ? new Date(expiresAtMs).toISOString() : null },
        'credentials refreshed',
      );
      return identity;
    } catch (err) {
      const nowMs = clock.nowMs();
      if (current !== undefined && nowMs < current.expiresAtMs) {
        failedRefreshes++;
        const delayMs = Math.min(
          retryDelayMsMax,
          refreshRetryDelayMsBase * 2 ** Math.min(failedRefreshes - 1, 30),
        );
        // Next attempt after the backoff, but at the latest when they expire.
        current = { ...current, refreshAtMs: Math.min(nowMs + delayMs, current.expiresAtMs) };
        logger.warn(
          {
            what,
            err: (err as Error).message,
            expiresAt: new Date(current.expiresAtMs).toISOString(),
            retryInMs: current.refreshAtMs - nowMs,
          },
          'credentials refresh failed; using the current ones until they expire',
        );
        return current.identity;
      }
      throw err;
    }
  };

  return async () => {
    if (current !== undefined && clock.nowMs() < current.refreshAtMs) return current.identity;
    inFlight ??= refresh().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };
}
