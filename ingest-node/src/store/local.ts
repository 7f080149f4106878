// ObjectStore over a local folder standing in for the bucket: the embedded
// default (`npm start` with no cloud) and what a single-box user points DuckDB
// at. Every file access goes through the FileSystem interface (fs/types.ts),
// the WAL's, so the power-cut tests cover delivery into it end to end. It
// keeps the same promises the S3 store does:
//   - a reader never sees a half-written object: write a temp file, fsync,
//     rename into place, fsync the directory (and every directory created on
//     the way, so a new key's folders survive a power cut too);
//   - createIfAbsent is atomic: link(2) of a complete temp file fails with
//     EEXIST when the key exists, exactly like a 412;
//   - keys cannot escape the folder (`..`, `.`, empty segments are refused).
//
// Layout under the root:
//   <key>                          the object's bytes, nothing else
//   .landfall/meta/<key>.json      sidecar metadata (sha256, user metadata)
//   .landfall/tmp/<random>         in-progress writes, removed on success
// Keys starting with `.landfall/` are reserved.
//
// The sidecar is renamed into place just before the object, so after a crash
// between the two a retried put (delivery is at-least-once) converges; head()
// ignores a sidecar whose recorded size does not match the object.
import { createHash, randomUUID } from 'node:crypto';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { systemClock, type Clock } from '../clock.ts';
import { mkdirDurable } from '../fs/durable.ts';
import { NodeFileSystem } from '../fs/node.ts';
import { fileReadStream } from '../fs/streams.ts';
import type { FileHandle, FileSystem } from '../fs/types.ts';
import { classifyError, StoreError } from './errors.ts';
import { sha256HexPattern } from './hashing.ts';
import { checkLimit, checkObjectKey, checkPutOptions, reservedKeyTop } from './validate.ts';
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

interface Sidecar {
  readonly bytes: number;
  readonly sha256: string;
  readonly metadata: Record<string, string>;
  readonly contentType?: string;
}

export interface LocalFolderObjectStoreOptions {
  /** The folder that stands in for the bucket; created on first write. */
  readonly root: string;
  readonly clock?: Clock;
  /** Default: the real disk. Tests pass FaultFileSystem or PowerCutFileSystem. */
  readonly fs?: FileSystem;
}

export class LocalFolderObjectStore implements ObjectStore {
  readonly description: string;
  readonly #root: string;
  readonly #tmpDir: string;
  readonly #metaDir: string;
  readonly #clock: Clock;
  readonly #fs: FileSystem;

  constructor(opts: LocalFolderObjectStoreOptions) {
    this.#fs = opts.fs ?? new NodeFileSystem();
    this.#root = path.resolve(opts.root);
    this.#tmpDir = path.join(this.#root, reservedKeyTop, 'tmp');
    this.#metaDir = path.join(this.#root, reservedKeyTop, 'meta');
    this.#clock = opts.clock ?? systemClock;
    this.description = `file://${this.#root}`;
  }

  async put(key: string, body: ObjectBody, opts: PutOptions = {}): Promise<PutResult> {
    const what = `put ${this.description}/${key}`;
    const file = this.#objectPath(key);
    checkPutOptions(opts, what);
    const written = await this.#writeTemp(body, opts, what);
    let metaTmp: string | undefined;
    try {
      metaTmp = await this.#writeSidecarTemp(written.sha256, written.bytes, opts, what);
      const metaFile = this.#metaPath(key);
      await this.#mkdirs(path.dirname(metaFile), path.dirname(file), what);
      await this.#fs.rename(metaTmp, metaFile);
      metaTmp = undefined;
      await this.#fs.rename(written.tmp, file);
      await this.#fs.syncDir(path.dirname(metaFile));
      await this.#fs.syncDir(path.dirname(file));
    } catch (err) {
      await this.#unlinkQuiet(written.tmp);
      if (metaTmp !== undefined) await this.#unlinkQuiet(metaTmp);
      throw classifyFsError(err, what);
    }
    return { key, bytes: written.bytes, sha256: written.sha256, multipart: false };
  }

  async createIfAbsent(
    key: string,
    body: Buffer,
    opts: Omit<PutOptions, 'contentLength'> = {},
  ): Promise<CreateResult> {
    const what = `createIfAbsent ${this.description}/${key}`;
    const file = this.#objectPath(key);
    checkPutOptions(opts, what);
    const written = await this.#writeTemp(body, opts, what);
    let metaTmp: string | undefined;
    try {
      metaTmp = await this.#writeSidecarTemp(written.sha256, written.bytes, opts, what);
      const metaFile = this.#metaPath(key);
      await this.#mkdirs(path.dirname(metaFile), path.dirname(file), what);
      try {
        // link(2) never replaces: the atomic "create only if absent".
        await this.#fs.link(written.tmp, file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') return { created: false };
        throw err;
      }
      await this.#fs.rename(metaTmp, metaFile);
      metaTmp = undefined;
      await this.#fs.syncDir(path.dirname(file));
      await this.#fs.syncDir(path.dirname(metaFile));
      return { created: true };
    } catch (err) {
      throw classifyFsError(err, what);
    } finally {
      await this.#unlinkQuiet(written.tmp);
      if (metaTmp !== undefined) await this.#unlinkQuiet(metaTmp);
    }
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const what = `head ${this.description}/${key}`;
    const file = this.#objectPath(key);
    let st;
    try {
      st = await this.#fs.stat(file);
    } catch (err) {
      if (isMissing(err)) return null;
      throw classifyFsError(err, what);
    }
    if (!st.isFile) return null;
    const side = await this.#readSidecar(key, st.size);
    return {
      key,
      bytes: st.size,
      sha256: side?.sha256 ?? null,
      metadata: side !== null ? { ...side.metadata, sha256: side.sha256 } : {},
      lastModifiedMs: Math.floor(st.mtimeMs),
    };
  }

  async list(opts: ListOptions): Promise<ListResult> {
    const limit = checkLimit(opts.limit);
    const prefix = Buffer.from(opts.prefix);
    const after = opts.startAfter !== undefined ? Buffer.from(opts.startAfter) : undefined;
    const objects: ListedObject[] = [];
    try {
      for await (const entry of this.#walk(this.#root, '', prefix, after)) {
        if (objects.length === limit) return { objects, truncated: true };
        objects.push(entry);
      }
    } catch (err) {
      throw classifyFsError(err, `list ${this.description}/${opts.prefix}`);
    }
    return { objects, truncated: false };
  }

  async get(key: string, opts: GetOptions = {}): Promise<Buffer | null> {
    const what = `get ${this.description}/${key}`;
    const file = this.#objectPath(key);
    const bytesMax = opts.bytesMax ?? getBytesMaxDefault;
    let handle: FileHandle;
    try {
      handle = await this.#fs.open(file, 'read');
    } catch (err) {
      if (isMissing(err)) return null;
      throw classifyFsError(err, what);
    }
    try {
      // Stat the open handle, not the path: a concurrent put renames a new
      // file into place, and we must read the one we sized.
      const st = await handle.stat();
      if (!st.isFile) return null;
      if (st.size > bytesMax)
        throw new StoreError('too_large', `${what}: ${st.size} bytes exceeds the bound of ${bytesMax}`);
      const buf = Buffer.allocUnsafe(st.size);
      let got = 0;
      while (got < buf.length) {
        const n = await handle.read(buf, got, buf.length - got, got);
        if (n === 0) break;
        got += n;
      }
      return got === buf.length ? buf : buf.subarray(0, got);
    } catch (err) {
      throw classifyFsError(err, what);
    } finally {
      await handle.close();
    }
  }

  async getTail(key: string, bytes: number): Promise<Buffer | null> {
    if (!Number.isInteger(bytes) || bytes < 1 || bytes > getBytesMaxDefault)
      throw new RangeError(`getTail: ${bytes} bytes is outside 1..${getBytesMaxDefault}`);
    const what = `get ${this.description}/${key} (last ${bytes} bytes)`;
    let handle: FileHandle;
    try {
      handle = await this.#fs.open(this.#objectPath(key), 'read');
    } catch (err) {
      if (isMissing(err)) return null;
      throw classifyFsError(err, what);
    }
    try {
      const st = await handle.stat();
      if (!st.isFile) return null;
      const n = Math.min(bytes, st.size);
      const buf = Buffer.allocUnsafe(n);
      let got = 0;
      while (got < n) {
        const r = await handle.read(buf, got, n - got, st.size - n + got);
        if (r === 0) break;
        got += r;
      }
      return got === n ? buf : buf.subarray(0, got);
    } catch (err) {
      throw classifyFsError(err, what);
    } finally {
      await handle.close();
    }
  }

  async getStream(key: string): Promise<Readable | null> {
    const what = `get ${this.description}/${key}`;
    const file = this.#objectPath(key);
    try {
      if (!(await this.#fs.stat(file)).isFile) return null;
    } catch (err) {
      if (isMissing(err)) return null;
      throw classifyFsError(err, what);
    }
    return fileReadStream(this.#fs, file);
  }

  /** There are no multipart uploads here: removes temp files older than the bound instead. */
  async abortStaleMultipartUploads(_prefix: string, olderThanMs: number): Promise<number> {
    const cutoffMs = this.#clock.nowMs() - olderThanMs;
    let names: string[];
    try {
      names = await this.#fs.readdir(this.#tmpDir);
    } catch (err) {
      if (isMissing(err)) return 0;
      throw classifyFsError(err, `clean ${this.#tmpDir}`);
    }
    let removed = 0;
    for (const name of names) {
      const file = path.join(this.#tmpDir, name);
      try {
        if ((await this.#fs.stat(file)).mtimeMs < cutoffMs) {
          await this.#fs.unlink(file);
          removed++;
        }
      } catch (err) {
        if (!isMissing(err)) throw classifyFsError(err, `clean ${file}`);
      }
    }
    return removed;
  }

  /** `mkdir -p` of both, each new directory made durable (fsync of its parent). */
  async #mkdirs(a: string, b: string, what: string): Promise<void> {
    try {
      await mkdirDurable(this.#fs, a);
      if (b !== a) await mkdirDurable(this.#fs, b);
    } catch (err) {
      throw classifyFsError(err, what);
    }
  }

  async #unlinkQuiet(file: string): Promise<void> {
    try {
      await this.#fs.unlink(file);
    } catch {
      // already gone (renamed into place, or never created)
    }
  }

  #objectPath(key: string): string {
    return path.join(this.#root, ...checkObjectKey(key));
  }

  #metaPath(key: string): string {
    const parts = checkObjectKey(key);
    const last = parts.pop() ?? '';
    return path.join(this.#metaDir, ...parts, `${last}.json`);
  }

  async #writeTemp(
    body: ObjectBody,
    opts: PutOptions,
    what: string,
  ): Promise<{ tmp: string; bytes: number; sha256: string }> {
    await this.#mkdirs(this.#tmpDir, this.#tmpDir, what);
    const tmp = path.join(this.#tmpDir, randomUUID());
    const hash = createHash('sha256');
    let bytes = 0;
    let handle: FileHandle | undefined;
    const append = async (buf: Uint8Array): Promise<void> => {
      const n = await handle!.write([buf], bytes);
      if (n !== buf.byteLength)
        throw new StoreError('server', `${what}: short write (${n} of ${buf.byteLength} bytes)`);
      hash.update(buf);
      bytes += n;
    };
    try {
      handle = await this.#fs.open(tmp, 'createExclusive');
      if (Buffer.isBuffer(body)) await append(body);
      else {
        for await (const chunk of body) {
          await append(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
          if (opts.signal?.aborted === true) throw new StoreError('network', `${what}: aborted`);
        }
      }
      const sha256 = hash.digest('hex');
      if (opts.contentLength !== undefined && opts.contentLength !== bytes)
        throw new StoreError(
          'checksum_mismatch',
          `${what}: expected ${opts.contentLength} bytes, got ${bytes}`,
        );
      if (opts.sha256 !== undefined && opts.sha256 !== sha256)
        throw new StoreError('checksum_mismatch', `${what}: expected sha256 ${opts.sha256}, got ${sha256}`);
      await handle.sync();
      return { tmp, bytes, sha256 };
    } catch (err) {
      if (!Buffer.isBuffer(body)) body.destroy();
      await handle?.close().catch(() => {});
      handle = undefined;
      await this.#unlinkQuiet(tmp);
      throw classifyFsError(err, what);
    } finally {
      await handle?.close();
    }
  }

  async #writeSidecarTemp(sha256: string, bytes: number, opts: PutOptions, what: string): Promise<string> {
    const side: Sidecar = {
      bytes,
      sha256,
      metadata: { ...opts.metadata },
      ...(opts.contentType !== undefined ? { contentType: opts.contentType } : {}),
    };
    const { tmp } = await this.#writeTemp(Buffer.from(JSON.stringify(side)), {}, what);
    return tmp;
  }

  async #readSidecar(key: string, size: number): Promise<Sidecar | null> {
    try {
      const side = JSON.parse(
        Buffer.from(await this.#fs.readFile(this.#metaPath(key))).toString('utf8'),
      ) as Partial<Sidecar>;
      if (side.bytes !== size || typeof side.sha256 !== 'string' || !sha256HexPattern.test(side.sha256))
        return null;
      return { bytes: side.bytes, sha256: side.sha256, metadata: { ...side.metadata } };
    } catch {
      // Missing or torn sidecar: the object is still there, only its checksum is unknown.
      return null;
    }
  }

  // Yields objects in S3 key order (UTF-8 byte order of the whole key). A
  // directory's keys all start with `name/`, so sorting siblings by `name` or
  // `name/` and recursing gives global order; subtrees wholly outside the
  // prefix or at/below the cursor are never read.
  async *#walk(
    dir: string,
    keyPrefix: string,
    prefix: Buffer,
    after: Buffer | undefined,
  ): AsyncGenerator<ListedObject> {
    let names;
    try {
      names = await this.#fs.readdir(dir);
    } catch (err) {
      if (isMissing(err) || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return;
      throw err;
    }
    const entries: { name: string; isDir: boolean; bytes: number; mtimeMs: number }[] = [];
    for (const name of names) {
      if (keyPrefix === '' && name === reservedKeyTop) continue;
      try {
        const st = await this.#fs.stat(path.join(dir, name));
        if (st.isDirectory || st.isFile)
          entries.push({ name, isDir: st.isDirectory, bytes: st.size, mtimeMs: st.mtimeMs });
      } catch (err) {
        if (!isMissing(err)) throw err;
      }
    }
    const items = entries
      .map((e) => ({ ...e, sortKey: Buffer.from(`${keyPrefix}${e.name}${e.isDir ? '/' : ''}`) }))
      .sort((a, b) => Buffer.compare(a.sortKey, b.sortKey));
    for (const item of items) {
      const k = item.sortKey;
      if (item.isDir) {
        const overlapsPrefix = startsWith(k, prefix) || startsWith(prefix, k);
        const allAtOrBeforeCursor =
          after !== undefined && Buffer.compare(after, k) > 0 && !startsWith(after, k);
        if (!overlapsPrefix || allAtOrBeforeCursor) continue;
        yield* this.#walk(path.join(dir, item.name), k.toString(), prefix, after);
      } else {
        if (!startsWith(k, prefix)) continue;
        if (after !== undefined && Buffer.compare(k, after) <= 0) continue;
        yield { key: k.toString(), bytes: item.bytes, lastModifiedMs: Math.floor(item.mtimeMs) };
      }
    }
  }
}

function startsWith(buf: Buffer, prefix: Buffer): boolean {
  return buf.length >= prefix.length && buf.subarray(0, prefix.length).equals(prefix);
}

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR';
}

const transientFsCodes = new Set(['ENOSPC', 'EIO', 'EMFILE', 'ENFILE', 'EAGAIN', 'EBUSY', 'EDQUOT']);

function classifyFsError(err: unknown, what: string): StoreError {
  if (err instanceof StoreError) return err;
  const code = (err as NodeJS.ErrnoException | null)?.code;
  const message = `${what}: ${err instanceof Error ? err.message : String(err)}`;
  const opts = { storeCode: code, cause: err };
  if (code !== undefined && transientFsCodes.has(code)) return new StoreError('server', message, opts);
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS')
    return new StoreError('access_denied', message, opts);
  // A key that is a "directory" of another key: S3 allows it, a folder cannot.
  if (code === 'ENOTDIR' || code === 'EISDIR' || code === 'ENAMETOOLONG' || code === 'EEXIST')
    return new StoreError('invalid', message, opts);
  return classifyError(err, what);
}
