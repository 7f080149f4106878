// How the node authenticates to the Iceberg REST catalog (`iceberg.auth`):
// none, a bearer token read from a file (a mounted Secret, rotated by
// replacing the file), or OAuth2 client credentials (RFC 6749 §4.4) from
// files, exchanged at the catalog's (or an identity provider's) token
// endpoint, or AWS SigV4 with the node's own AWS credentials (Glue's and S3
// Tables' REST endpoints). Token values never leave this module except as the
// Authorization header: they are not in errors, logs or metrics.
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { SignatureV4 } from '@smithy/signature-v4';
import type { AwsCredentialIdentityProvider, Checksum, SourceData } from '@smithy/types';
import { silentLogger, type Logger } from '../log.ts';
import { RestCatalog } from './catalog.ts';
import { IcebergError } from './errors.ts';
import type { IcebergAuthConfig, IcebergConfig } from './settings.ts';

/** One catalog request as sent, for signers that cover the whole request. */
export interface CatalogRequest {
  readonly method: string;
  readonly url: URL;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string | undefined;
}

/** Supplies the `Authorization` header of catalog requests. */
export interface CatalogAuth {
  /**
   * Signs the whole request (SigV4): the headers to add. When set,
   * authorization() is not used.
   */
  sign?(request: CatalogRequest): Promise<Record<string, string>>;
  /** The header value (`Bearer …`), or undefined to send none. */
  authorization(): Promise<string | undefined>;
  /**
   * The catalog refused `value` (401, or 419 "credentials timed out"): drop
   * it so the next authorization() reads or fetches a fresh one.
   */
  rejected(value: string): void;
}

export const noCatalogAuth: CatalogAuth = {
  authorization: () => Promise.resolve(undefined),
  rejected: () => {},
};

/** `echo token > file` leaves a newline that is not part of the token. */
function secretText(raw: string): string {
  return raw.replace(/\r?\n$/, '').trim();
}

async function readSecretFile(path: string, what: string): Promise<string> {
  let raw: string;
  try {
    raw = await readFile(path, 'utf8');
  } catch (err) {
    throw new IcebergError(
      'ICEBERG_CATALOG_AUTH_FAILED',
      `cannot read the Iceberg catalog ${what} file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  const text = secretText(raw);
  if (text === '' || /[\r\n]/.test(text))
    throw new IcebergError(
      'ICEBERG_CATALOG_AUTH_FAILED',
      `the Iceberg catalog ${what} file ${path} ${text === '' ? 'is empty' : 'holds more than one line'}`,
    );
  return text;
}

/**
 * A token from a file, re-read when the file changes. A Kubernetes Secret
 * volume swaps a symlink on rotation, so the identity of the resolved file
 * (device, inode, size, mtime) is compared on every use; a stat per catalog
 * request is noise next to the request.
 */
export class BearerFileAuth implements CatalogAuth {
  readonly #path: string;
  #cached: { id: string; header: string } | undefined;

  constructor(path: string) {
    this.#path = path;
  }

  async authorization(): Promise<string> {
    let id: string;
    try {
      const s = await stat(this.#path);
      id = `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch (err) {
      throw new IcebergError(
        'ICEBERG_CATALOG_AUTH_FAILED',
        `cannot read the Iceberg catalog token file ${this.#path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    if (this.#cached?.id === id) return this.#cached.header;
    const header = `Bearer ${await readSecretFile(this.#path, 'token')}`;
    this.#cached = { id, header };
    return header;
  }

  rejected(value: string): void {
    // A rewrite within the file system's timestamp granularity keeps the same id: read it again anyway.
    if (this.#cached?.header === value) this.#cached = undefined;
  }
}

export interface OAuth2Options {
  readonly tokenUri: string;
  readonly clientIdFile: string;
  readonly clientSecretFile: string;
  readonly scope?: string;
  /** A token is replaced this long before it expires (at most half its lifetime). */
  readonly refreshMarginMs: number;
  /** Retries of one token request on a network error, timeout, 5xx or 429. */
  readonly retriesMax: number;
  readonly retryDelayMsBase: number;
  readonly retryDelayMsMax: number;
  readonly requestTimeoutMs: number;
  readonly fetch?: typeof fetch;
  readonly nowMs?: () => number;
  readonly sleep?: (ms: number) => Promise<unknown>;
  readonly log?: Logger;
}

interface CachedToken {
  readonly header: string;
  /** Replace at or after this time; undefined: until the catalog refuses it. */
  readonly refreshAtMs: number | undefined;
  readonly expiresAtMs: number | undefined;
}

/** `exp` (seconds) of a JWT, when the token is one; servers often omit `expires_in`. */
export function jwtExpiryMs(token: string): number | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[1] === undefined) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * OAuth2 client credentials. One token is shared by every request and fetched
 * by one request at a time; it is replaced `refreshMarginMs` before it
 * expires (from `expires_in`, else the JWT's `exp`; with neither it is kept
 * until the catalog answers 401). The client id and secret are read from
 * their files at each token request, so rotating them needs no restart.
 */
export class OAuth2ClientCredentialsAuth implements CatalogAuth {
  readonly #o: OAuth2Options;
  readonly #now: () => number;
  readonly #sleep: (ms: number) => Promise<unknown>;
  readonly #fetch: typeof fetch;
  readonly #log: Logger;
  #token: CachedToken | undefined;
  #inflight: Promise<CachedToken> | undefined;

  constructor(o: OAuth2Options) {
    this.#o = o;
    this.#now = o.nowMs ?? Date.now;
    this.#sleep = o.sleep ?? sleep;
    this.#fetch = o.fetch ?? fetch;
    this.#log = o.log ?? silentLogger;
  }

  async authorization(): Promise<string> {
    const t = this.#token;
    if (t !== undefined && (t.refreshAtMs === undefined || this.#now() < t.refreshAtMs)) return t.header;
    try {
      return (await this.#fetchShared()).header;
    } catch (err) {
      // A token that is due for refresh but not yet expired still works while the token endpoint is away.
      if (t?.expiresAtMs !== undefined && this.#now() < t.expiresAtMs) {
        this.#log.warn(
          { code: (err as IcebergError).code, message: (err as Error).message },
          'iceberg catalog token refresh failed; the current token is still valid and is used',
        );
        return t.header;
      }
      throw err;
    }
  }

  rejected(value: string): void {
    if (this.#token?.header === value) this.#token = undefined;
  }

  #fetchShared(): Promise<CachedToken> {
    this.#inflight ??= this.#fetchWithRetries().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #fetchWithRetries(): Promise<CachedToken> {
    for (let attempt = 0; ; attempt++) {
      try {
        const t = await this.#fetchOnce();
        this.#token = t;
        return t;
      } catch (err) {
        if (!(err instanceof IcebergError) || !err.retryable || attempt >= this.#o.retriesMax) throw err;
        const capMs = Math.min(this.#o.retryDelayMsMax, this.#o.retryDelayMsBase * 2 ** attempt);
        const delayMs = Math.round(capMs / 2 + Math.random() * (capMs / 2));
        this.#log.warn(
          {
            attempt: attempt + 1,
            retriesMax: this.#o.retriesMax,
            delayMs,
            code: err.code,
            message: err.message,
          },
          'iceberg catalog token request failed; retrying',
        );
        await this.#sleep(delayMs);
      }
    }
  }

  async #fetchOnce(): Promise<CachedToken> {
    const [clientId, clientSecret] = await Promise.all([
      readSecretFile(this.#o.clientIdFile, 'OAuth2 client id'),
      readSecretFile(this.#o.clientSecretFile, 'OAuth2 client secret'),
    ]);
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: clientId,
      client_secret: clientSecret,
    });
    if (this.#o.scope !== undefined) form.set('scope', this.#o.scope);
    const where = `POST ${this.#o.tokenUri}`;
    const sentAtMs = this.#now();
    let res: Response;
    let text: string;
    try {
      res = await this.#fetch(this.#o.tokenUri, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: form.toString(),
        signal: AbortSignal.timeout(this.#o.requestTimeoutMs),
      });
      text = await res.text();
    } catch (err) {
      throw new IcebergError(
        'ICEBERG_CATALOG_UNAVAILABLE',
        `${where}: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
    let body: Record<string, unknown> | undefined;
    try {
      const j: unknown = JSON.parse(text);
      if (j !== null && typeof j === 'object') body = j as Record<string, unknown>;
    } catch {
      body = undefined;
    }
    if (res.status !== 200) {
      // RFC 6749 §5.2 errors carry no secrets; an unknown body is not echoed (it might).
      const reason =
        typeof body?.['error'] === 'string'
          ? `${body['error']}${typeof body['error_description'] === 'string' ? `: ${body['error_description'].slice(0, 300)}` : ''}`
          : 'no OAuth2 error in the answer';
      const msg = `${where}: ${res.status} ${reason}`;
      if (res.status >= 500 || res.status === 429)
        throw new IcebergError('ICEBERG_CATALOG_UNAVAILABLE', msg, { status: res.status });
      throw new IcebergError('ICEBERG_CATALOG_AUTH_FAILED', msg, { status: res.status });
    }
    const token = body?.['access_token'];
    const type = body?.['token_type'];
    if (typeof token !== 'string' || token === '' || /[\r\n]/.test(token))
      throw new IcebergError('ICEBERG_CATALOG_AUTH_FAILED', `${where}: 200 without an access_token`);
    // `N_A` is what RFC 8693 servers put there; Iceberg's own client accepts it too.
    if (typeof type === 'string' && !['bearer', 'n_a'].includes(type.toLowerCase()))
      throw new IcebergError(
        'ICEBERG_CATALOG_AUTH_FAILED',
        `${where}: token_type ${type.slice(0, 40)} is not supported (bearer only)`,
      );
    // Some servers send the number as a string.
    const expiresIn = Number(body?.['expires_in'] ?? NaN);
    const expiresAtMs =
      Number.isFinite(expiresIn) && expiresIn > 0 ? sentAtMs + expiresIn * 1000 : jwtExpiryMs(token);
    let refreshAtMs: number | undefined;
    if (expiresAtMs !== undefined) {
      const lifetimeMs = Math.max(0, expiresAtMs - sentAtMs);
      refreshAtMs = sentAtMs + Math.max(lifetimeMs - this.#o.refreshMarginMs, lifetimeMs / 2);
    }
    this.#log.info(
      {
        tokenUri: this.#o.tokenUri,
        ...(expiresAtMs !== undefined ? { expiresInMs: expiresAtMs - sentAtMs } : {}),
      },
      'iceberg catalog OAuth2 token obtained',
    );
    return { header: `Bearer ${token}`, refreshAtMs, expiresAtMs };
  }
}

/** SHA-256 (and HMAC-SHA-256 with a key) from node:crypto, in the shape the SigV4 signer takes. */
class NodeSha256 implements Checksum {
  readonly #secret: SourceData | undefined;
  #h: Hash | Hmac;
  constructor(secret?: SourceData) {
    this.#secret = secret;
    this.#h = this.#fresh();
  }
  #fresh(): Hash | Hmac {
    if (this.#secret === undefined) return createHash('sha256');
    const key = this.#secret;
    return createHmac(
      'sha256',
      typeof key === 'string'
        ? key
        : Buffer.from(
            key instanceof ArrayBuffer ? key : key.buffer,
            key instanceof ArrayBuffer ? 0 : key.byteOffset,
            key.byteLength,
          ),
    );
  }
  update(data: Uint8Array): void {
    this.#h.update(data);
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.#h.digest()));
  }
  reset(): void {
    this.#h = this.#fresh();
  }
}

/** `glue.eu-west-1.amazonaws.com` → `eu-west-1`; undefined for any other host. */
export function regionOfAwsHost(host: string): string | undefined {
  return /^[a-z0-9-]+\.([a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com(?:\.cn)?$/.exec(host)?.[1];
}

/**
 * AWS Signature Version 4 on every catalog request (AWS Glue's Iceberg REST
 * endpoint signs as `glue`, S3 Tables' as `s3tables`), with the node's own
 * AWS credentials (the `credentials` block: default chain, IRSA,
 * AssumeRole), which refresh themselves. The whole request is signed, body
 * included, so nothing can be replayed against another path.
 */
export class SigV4Auth implements CatalogAuth {
  readonly #signer: SignatureV4;

  constructor(o: { signingName: string; region: string; credentials: AwsCredentialIdentityProvider }) {
    this.#signer = new SignatureV4({
      service: o.signingName,
      region: o.region,
      credentials: o.credentials,
      sha256: NodeSha256,
      // S3 alone wants the path escaped once; every other service twice.
      uriEscapePath: o.signingName !== 's3',
    });
  }

  async sign(r: CatalogRequest): Promise<Record<string, string>> {
    const query: Record<string, string> = {};
    for (const [k, v] of r.url.searchParams) query[k] = v;
    let signed;
    try {
      signed = await this.#signer.sign({
        method: r.method,
        protocol: r.url.protocol,
        hostname: r.url.hostname,
        ...(r.url.port !== '' ? { port: Number(r.url.port) } : {}),
        path: r.url.pathname,
        query,
        headers: { ...r.headers, host: r.url.host },
        ...(r.body !== undefined ? { body: r.body } : {}),
      });
    } catch (err) {
      throw new IcebergError(
        'ICEBERG_CATALOG_AUTH_FAILED',
        `no AWS credentials to sign catalog requests with: ${(err as Error).message}`,
      );
    }
    const out: Record<string, string> = {};
    // fetch sets Host from the URL itself (the same value).
    for (const [k, v] of Object.entries(signed.headers)) if (k.toLowerCase() !== 'host') out[k] = v;
    return out;
  }

  authorization(): Promise<undefined> {
    return Promise.resolve(undefined);
  }

  rejected(): void {}
}

/** The token endpoint the REST spec names when none is configured: `<catalogUri>/v1/oauth/tokens`. */
export function defaultTokenUri(catalogUri: string): string {
  return `${catalogUri.replace(/\/+$/, '')}/v1/oauth/tokens`;
}

/** The CatalogAuth of a node's `iceberg.auth` (config/load.ts checked the needed files are set). */
export function catalogAuthFrom(
  catalogUri: string,
  a: IcebergAuthConfig,
  deps: {
    requestTimeoutMs: number;
    fetch?: typeof fetch;
    log?: Logger;
    awsCredentials?: () => AwsCredentialIdentityProvider;
  },
): CatalogAuth {
  switch (a.type) {
    case 'sigv4': {
      const region = a.signingRegion ?? regionOfAwsHost(new URL(catalogUri).hostname);
      if (a.signingName === undefined || region === undefined)
        throw new Error(
          'iceberg.auth.type sigv4 needs iceberg.auth.signingName and iceberg.auth.signingRegion (or a catalogUri on <service>.<region>.amazonaws.com)',
        );
      if (deps.awsCredentials === undefined) throw new Error('iceberg.auth.type sigv4: no AWS credentials');
      return new SigV4Auth({ signingName: a.signingName, region, credentials: deps.awsCredentials() });
    }
    case 'none':
      return noCatalogAuth;
    case 'bearer':
      if (a.tokenFile === undefined) throw new Error('iceberg.auth.type bearer needs iceberg.auth.tokenFile');
      return new BearerFileAuth(a.tokenFile);
    case 'oauth2':
      if (a.clientIdFile === undefined || a.clientSecretFile === undefined)
        throw new Error(
          'iceberg.auth.type oauth2 needs iceberg.auth.clientIdFile and iceberg.auth.clientSecretFile',
        );
      return new OAuth2ClientCredentialsAuth({
        tokenUri: a.tokenUri ?? defaultTokenUri(catalogUri),
        clientIdFile: a.clientIdFile,
        clientSecretFile: a.clientSecretFile,
        ...(a.scope !== undefined ? { scope: a.scope } : {}),
        refreshMarginMs: a.refreshMarginMs,
        retriesMax: a.tokenRetriesMax,
        retryDelayMsBase: 200,
        retryDelayMsMax: 5_000,
        requestTimeoutMs: deps.requestTimeoutMs,
        ...(deps.fetch !== undefined ? { fetch: deps.fetch } : {}),
        ...(deps.log !== undefined ? { log: deps.log } : {}),
      });
  }
}

/** What a catalog client needs of the node's `iceberg` block (`auth` unset: none). */
export type CatalogClientConfig = Omit<IcebergConfig, 'auth' | 'compaction'> & {
  readonly catalogUri: string;
  readonly auth?: IcebergAuthConfig;
};

export interface CatalogClientDeps {
  readonly fetch?: typeof fetch;
  readonly log?: Logger;
  readonly awsCredentials?: () => AwsCredentialIdentityProvider;
  /**
   * One auth shared by the node's clients (appends, lookups, compaction), so
   * an OAuth2 token is fetched once, not once per client. Unset: made from config.
   */
  readonly auth?: CatalogAuth;
}

/** The node's catalog client from its `iceberg` config block (delivery, lookups, compaction, commands). */
export function restCatalogFrom(config: CatalogClientConfig, deps: CatalogClientDeps = {}): RestCatalog {
  return new RestCatalog({
    uri: config.catalogUri,
    ...(config.warehouse !== undefined ? { warehouse: config.warehouse } : {}),
    requestTimeoutMs: config.requestTimeoutMs,
    auth:
      deps.auth ??
      catalogAuthFrom(
        config.catalogUri,
        config.auth ?? { type: 'none', refreshMarginMs: 0, tokenRetriesMax: 0 },
        { requestTimeoutMs: config.requestTimeoutMs, ...deps },
      ),
    ...(deps.fetch !== undefined ? { fetch: deps.fetch } : {}),
  });
}
