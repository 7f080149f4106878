// ObjectStore over the S3 API: AWS S3, MinIO and R2 (custom endpoint,
// path-style addressing). The S3 client is passed in (or built by
// createS3Client from config) so tests and the credential provider decide how
// it talks, never this module.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type PutObjectCommandInput,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { systemClock, type Clock } from '../clock.ts';
import { classifyError, StoreError } from './errors.ts';
import { HashTap, sha256Hex, sha256HexPattern } from './hashing.ts';
import { checkLimit, checkObjectKey, checkPutOptions } from './validate.ts';
import {
  getBytesMaxDefault,
  type CreateResult,
  type GetOptions,
  type ListOptions,
  type ListResult,
  type ListedObject,
  type ObjectBody,
  type ObjectInfo,
  type ObjectStore,
  type PutOptions,
  type PutResult,
} from './types.ts';

/** S3's floor for every part but the last. */
export const s3PartBytesMin = 5 * 1024 * 1024;
/**
 * 8 MiB parts × 4 in flight = 32 MiB of buffered body per upload: the memory
 * bound of one artifact upload. 8 MiB is the part size the AWS CLI and most
 * S3 tooling default to; a 128 MiB segment archive is ~16 parts.
 */
export const s3PartBytesDefault = 8 * 1024 * 1024;
export const s3PartConcurrencyDefault = 4;
/** S3 allows 10,000 parts; a bound on list pages keeps a cleanup call finite. */
const listUploadsPagesMax = 100;

export interface S3ClientConfig {
  readonly region: string;
  /** Custom endpoint for MinIO, R2 and other S3-compatible stores (`http://127.0.0.1:9000`). */
  readonly endpoint?: string | undefined;
  /** Path-style addressing (`endpoint/bucket/key`): what MinIO and most self-hosted stores need. */
  readonly forcePathStyle?: boolean | undefined;
  /** A provider from credentials.ts; omitted means the SDK's own default chain. */
  readonly credentials?: AwsCredentialIdentityProvider | AwsCredentialIdentity | undefined;
  /** SDK-level attempts per request (parts retry cheaply here; delivery/retry.ts retries whole steps). */
  readonly maxAttempts?: number | undefined;
  /** Socket inactivity bound per request. */
  readonly requestTimeoutMs?: number | undefined;
  readonly connectTimeoutMs?: number | undefined;
  /**
   * `when_supported` (SDK default) adds CRC32 checksums to every upload;
   * `when_required` turns that off for S3-compatible stores that reject them.
   */
  readonly checksums?: 'when_supported' | 'when_required' | undefined;
}

export function createS3Client(cfg: S3ClientConfig): S3Client {
  return new S3Client({
    region: cfg.region,
    ...(cfg.endpoint !== undefined ? { endpoint: cfg.endpoint } : {}),
    forcePathStyle: cfg.forcePathStyle ?? cfg.endpoint !== undefined,
    ...(cfg.credentials !== undefined ? { credentials: cfg.credentials } : {}),
    maxAttempts: cfg.maxAttempts ?? 3,
    requestHandler: {
      requestTimeout: cfg.requestTimeoutMs ?? 60_000,
      connectionTimeout: cfg.connectTimeoutMs ?? 5_000,
    },
    ...(cfg.checksums === 'when_required'
      ? { requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' }
      : {}),
  });
}

export interface S3ObjectStoreOptions {
  readonly client: S3Client;
  readonly bucket: string;
  readonly partBytes?: number;
  readonly partConcurrency?: number;
  /** Bodies up to this size go up as one PutObject (default: one part). */
  readonly singlePutBytesMax?: number;
  /**
   * How createIfAbsent is made conditional. `if-none-match` (AWS S3 since
   * 2024, MinIO, R2) is atomic. `head-then-put` is for stores without
   * conditional writes: safe here because each instance is the only writer of
   * its own keys, but not atomic.
   */
  readonly conditionalCreate?: 'if-none-match' | 'head-then-put';
  /** Send `x-amz-checksum-sha256` so the store itself rejects a corrupted single PUT. */
  readonly serverChecksums?: boolean;
  readonly clock?: Clock;
}

export class S3ObjectStore implements ObjectStore {
  readonly description: string;
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #partBytes: number;
  readonly #partConcurrency: number;
  readonly #singlePutBytesMax: number;
  readonly #conditionalCreate: 'if-none-match' | 'head-then-put';
  readonly #serverChecksums: boolean;
  readonly #clock: Clock;

  constructor(opts: S3ObjectStoreOptions) {
    this.#client = opts.client;
    this.#bucket = opts.bucket;
    this.#partBytes = opts.partBytes ?? s3PartBytesDefault;
    if (this.#partBytes < s3PartBytesMin)
      throw new RangeError(`partBytes must be at least ${s3PartBytesMin}`);
    this.#partConcurrency = opts.partConcurrency ?? s3PartConcurrencyDefault;
    if (!Number.isInteger(this.#partConcurrency) || this.#partConcurrency < 1 || this.#partConcurrency > 64)
      throw new RangeError('partConcurrency must be an integer in 1..64');
    this.#singlePutBytesMax = Math.min(opts.singlePutBytesMax ?? this.#partBytes, this.#partBytes);
    this.#conditionalCreate = opts.conditionalCreate ?? 'if-none-match';
    this.#serverChecksums = opts.serverChecksums ?? true;
    this.#clock = opts.clock ?? systemClock;
    this.description = `s3://${opts.bucket}`;
  }

  async put(key: string, body: ObjectBody, opts: PutOptions = {}): Promise<PutResult> {
    checkObjectKey(key);
    const what = `put ${this.description}/${key}`;
    checkPutOptions(opts, what);
    if (Buffer.isBuffer(body)) {
      if (body.length <= this.#singlePutBytesMax) return this.#putBuffer(key, body, opts, what, false);
      return this.#putMultipart(key, Readable.from([body]), { ...opts, contentLength: body.length }, what);
    }
    if (opts.contentLength !== undefined && opts.contentLength <= this.#singlePutBytesMax) {
      // Small enough to hold: one request instead of the multipart machinery.
      const buf = await readBounded(body, opts.contentLength, what);
      return this.#putBuffer(key, buf, opts, what, false);
    }
    return this.#putMultipart(key, body, opts, what);
  }

  async createIfAbsent(
    key: string,
    body: Buffer,
    opts: Omit<PutOptions, 'contentLength'> = {},
  ): Promise<CreateResult> {
    checkObjectKey(key);
    const what = `createIfAbsent ${this.description}/${key}`;
    checkPutOptions(opts, what);
    if (this.#conditionalCreate === 'head-then-put') {
      if ((await this.head(key, opts)) !== null) return { created: false };
      await this.#putBuffer(key, body, opts, what, false);
      return { created: true };
    }
    try {
      await this.#putBuffer(key, body, opts, what, true);
      return { created: true };
    } catch (err) {
      const cause = err instanceof StoreError ? err.cause : err;
      const e = cause as { name?: string; $metadata?: { httpStatusCode?: number } } | undefined;
      if (e?.$metadata?.httpStatusCode === 412 || e?.name === 'PreconditionFailed') return { created: false };
      throw err;
    }
  }

  async head(key: string, opts: { signal?: AbortSignal | undefined } = {}): Promise<ObjectInfo | null> {
    checkObjectKey(key);
    try {
      const out = await this.#client.send(
        new HeadObjectCommand({ Bucket: this.#bucket, Key: key }),
        signalOpt(opts.signal),
      );
      const metadata = { ...(out.Metadata ?? {}) };
      const sha = metadata['sha256'];
      return {
        key,
        bytes: out.ContentLength ?? 0,
        sha256: sha !== undefined && sha256HexPattern.test(sha) ? sha : null,
        metadata,
        lastModifiedMs: out.LastModified?.getTime() ?? 0,
      };
    } catch (err) {
      const e = classifyError(err, `head ${this.description}/${key}`);
      // HEAD answers carry no body, so a missing bucket also looks like 404 here;
      // the next write reports it as no_such_bucket.
      if (e.code === 'not_found') return null;
      throw e;
    }
  }

  async list(opts: ListOptions): Promise<ListResult> {
    const limit = checkLimit(opts.limit);
    const objects: ListedObject[] = [];
    let token: string | undefined;
    for (;;) {
      const want = Math.min(1000, limit - objects.length);
      let out;
      try {
        out = await this.#client.send(
          new ListObjectsV2Command({
            Bucket: this.#bucket,
            Prefix: opts.prefix,
            MaxKeys: want,
            ...(token === undefined && opts.startAfter !== undefined ? { StartAfter: opts.startAfter } : {}),
            ...(token !== undefined ? { ContinuationToken: token } : {}),
          }),
        );
      } catch (err) {
        throw classifyError(err, `list ${this.description}/${opts.prefix}`);
      }
      for (const o of out.Contents ?? []) {
        if (o.Key === undefined) continue;
        objects.push({ key: o.Key, bytes: o.Size ?? 0, lastModifiedMs: o.LastModified?.getTime() ?? 0 });
      }
      const more = out.IsTruncated === true && out.NextContinuationToken !== undefined;
      if (!more) return { objects, truncated: false };
      if (objects.length >= limit) return { objects, truncated: true };
      token = out.NextContinuationToken;
    }
  }

  async get(key: string, opts: GetOptions = {}): Promise<Buffer | null> {
    const bytesMax = opts.bytesMax ?? getBytesMaxDefault;
    const what = `get ${this.description}/${key}`;
    const res = await this.#getObject(key, what, opts.signal);
    if (res === null) return null;
    if (res.bytes !== undefined && res.bytes > bytesMax) {
      res.body.destroy();
      throw new StoreError('too_large', `${what}: ${res.bytes} bytes exceeds the bound of ${bytesMax}`);
    }
    return readBounded(res.body, bytesMax, what, true);
  }

  async getTail(key: string, bytes: number, opts: { signal?: AbortSignal } = {}): Promise<Buffer | null> {
    if (!Number.isInteger(bytes) || bytes < 1 || bytes > getBytesMaxDefault)
      throw new RangeError(`getTail: ${bytes} bytes is outside 1..${getBytesMaxDefault}`);
    const what = `get ${this.description}/${key} (last ${bytes} bytes)`;
    const res = await this.#getObject(key, what, opts.signal, `bytes=-${bytes}`);
    if (res === null) return null;
    return readBounded(res.body, bytes, what, true);
  }

  async getStream(key: string, opts: { signal?: AbortSignal } = {}): Promise<Readable | null> {
    const res = await this.#getObject(key, `get ${this.description}/${key}`, opts.signal);
    return res === null ? null : res.body;
  }

  async abortStaleMultipartUploads(prefix: string, olderThanMs: number): Promise<number> {
    const cutoffMs = this.#clock.nowMs() - olderThanMs;
    const what = `abortStaleMultipartUploads ${this.description}/${prefix}`;
    let aborted = 0;
    // AWS filters uploads by prefix server-side; MinIO matches the prefix only
    // against whole keys and answers nothing for a "directory". So: ask with
    // the prefix, and if that finds nothing, scan unfiltered (bounded pages)
    // and filter here.
    let found = 0;
    for (const serverPrefix of prefix === '' ? [''] : [prefix, '']) {
      if (serverPrefix === '' && found > 0) break;
      for await (const u of this.#listUploads(serverPrefix, what)) {
        if (!u.key.startsWith(prefix)) continue;
        found++;
        if (u.initiatedMs >= cutoffMs) continue;
        try {
          await this.#client.send(
            new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key: u.key, UploadId: u.uploadId }),
          );
          aborted++;
        } catch (err) {
          const e = classifyError(err, `${what}: abort ${u.key}`);
          // Completed or aborted by someone else meanwhile: nothing left to clean.
          if (e.code !== 'not_found' && e.storeCode !== 'NoSuchUpload') throw e;
        }
      }
    }
    return aborted;
  }

  async *#listUploads(
    prefix: string,
    what: string,
  ): AsyncGenerator<{ key: string; uploadId: string; initiatedMs: number }> {
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (let page = 0; page < listUploadsPagesMax; page++) {
      let out;
      try {
        out = await this.#client.send(
          new ListMultipartUploadsCommand({
            Bucket: this.#bucket,
            ...(prefix !== '' ? { Prefix: prefix } : {}),
            MaxUploads: 1000,
            ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
            ...(uploadIdMarker !== undefined ? { UploadIdMarker: uploadIdMarker } : {}),
          }),
        );
      } catch (err) {
        throw classifyError(err, what);
      }
      for (const u of out.Uploads ?? []) {
        if (u.Key === undefined || u.UploadId === undefined) continue;
        yield { key: u.Key, uploadId: u.UploadId, initiatedMs: u.Initiated?.getTime() ?? 0 };
      }
      if (out.IsTruncated !== true || out.NextKeyMarker === undefined) return;
      keyMarker = out.NextKeyMarker;
      uploadIdMarker = out.NextUploadIdMarker;
    }
  }

  async #putBuffer(
    key: string,
    body: Buffer,
    opts: PutOptions,
    what: string,
    ifNoneMatch: boolean,
  ): Promise<PutResult> {
    const sha256 = sha256Hex(body);
    if (opts.sha256 !== undefined && opts.sha256 !== sha256)
      throw new StoreError('checksum_mismatch', `${what}: expected sha256 ${opts.sha256}, got ${sha256}`);
    if (opts.contentLength !== undefined && opts.contentLength !== body.length)
      throw new StoreError(
        'checksum_mismatch',
        `${what}: expected ${opts.contentLength} bytes, got ${body.length}`,
      );
    const input: PutObjectCommandInput = {
      Bucket: this.#bucket,
      Key: key,
      Body: body,
      ContentLength: body.length,
      Metadata: { ...opts.metadata, sha256 },
      ...(opts.contentType !== undefined ? { ContentType: opts.contentType } : {}),
      ...(ifNoneMatch ? { IfNoneMatch: '*' } : {}),
      ...(this.#serverChecksums
        ? { ChecksumAlgorithm: 'SHA256', ChecksumSHA256: Buffer.from(sha256, 'hex').toString('base64') }
        : {}),
    };
    const command = new PutObjectCommand(input);
    // SigV4 signs the body's sha256 (x-amz-content-sha256), and for a buffer
    // body the SDK hashes it again on this thread unless the header is set:
    // it is the sha256 just computed over this very buffer, so the request is
    // the same, with one pass over the bytes instead of two.
    command.middlewareStack.add(
      (next) => (args) => {
        const req = args.request as { headers?: Record<string, string> };
        if (req.headers !== undefined) req.headers['x-amz-content-sha256'] = sha256;
        return next(args);
      },
      { step: 'build', name: 'landfallPayloadSha256' },
    );
    try {
      await this.#client.send(command, signalOpt(opts.signal));
    } catch (err) {
      throw classifyError(err, what);
    }
    return { key, bytes: body.length, sha256, multipart: false };
  }

  async #putMultipart(key: string, body: Readable, opts: PutOptions, what: string): Promise<PutResult> {
    const tap = new HashTap({ sha256: opts.sha256, bytes: opts.contentLength, what });
    // The tap fails in its flush on a mismatch, before the uploader sees the
    // end of the body, so it aborts instead of completing a wrong object.
    const feeding = pipeline(body, tap);
    const abortController = new AbortController();
    const onAbort = (): void => abortController.abort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.signal?.aborted === true) abortController.abort();
    const upload = new Upload({
      client: this.#client,
      params: {
        Bucket: this.#bucket,
        Key: key,
        Body: tap,
        ...(opts.contentLength !== undefined ? { ContentLength: opts.contentLength } : {}),
        Metadata: { ...opts.metadata, ...(opts.sha256 !== undefined ? { sha256: opts.sha256 } : {}) },
        ...(opts.contentType !== undefined ? { ContentType: opts.contentType } : {}),
      },
      partSize: this.#partBytes,
      queueSize: this.#partConcurrency,
      leavePartsOnError: false,
      abortController,
    });
    // If the uploader fails, the body must be torn down too, or the feed
    // would wait forever on a consumer that left.
    const uploading = upload.done().then(
      () => undefined,
      (err: unknown) => {
        body.destroy();
        tap.destroy();
        throw err;
      },
    );
    try {
      const [up, feed] = await Promise.allSettled([uploading, feeding]);
      // Our own checksum verdict is more telling than the uploader's generic
      // "aborted" that follows it.
      if (feed.status === 'rejected' && feed.reason instanceof StoreError) throw feed.reason;
      if (up.status === 'rejected') throw classifyError(up.reason, what);
      if (feed.status === 'rejected') throw classifyError(feed.reason, what);
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
    return { key, bytes: tap.bytes, sha256: tap.sha256, multipart: tap.bytes > this.#partBytes };
  }

  async #getObject(
    key: string,
    what: string,
    signal: AbortSignal | undefined,
    range?: string,
  ): Promise<{ body: Readable; bytes: number | undefined } | null> {
    checkObjectKey(key);
    try {
      const out = await this.#client.send(
        new GetObjectCommand({
          Bucket: this.#bucket,
          Key: key,
          ...(range !== undefined ? { Range: range } : {}),
        }),
        signalOpt(signal),
      );
      if (!(out.Body instanceof Readable))
        throw new StoreError('unknown', `${what}: body is not a Node stream`);
      return { body: out.Body, bytes: out.ContentLength };
    } catch (err) {
      const e = classifyError(err, what);
      if (e.code === 'not_found' && e.storeCode !== 'NoSuchBucket') return null;
      throw e;
    }
  }
}

function signalOpt(signal: AbortSignal | undefined): { abortSignal: AbortSignal } | undefined {
  return signal !== undefined ? { abortSignal: signal } : undefined;
}

/** Reads a stream into memory, failing once it passes `bytesMax`. */
export async function readBounded(
  body: Readable,
  bytesMax: number,
  what: string,
  isCap = false,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of body) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
      total += buf.length;
      if (total > bytesMax) {
        body.destroy();
        throw isCap
          ? new StoreError('too_large', `${what}: body exceeds the bound of ${bytesMax} bytes`)
          : new StoreError('checksum_mismatch', `${what}: body is longer than contentLength ${bytesMax}`);
      }
      chunks.push(buf);
    }
  } catch (err) {
    throw classifyError(err, what);
  }
  return Buffer.concat(chunks, total);
}
