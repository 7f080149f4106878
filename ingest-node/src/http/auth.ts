// API keys. They come from a mounted file (or a directory of files: a
// Kubernetes Secret mounted as a volume), one key a line, so rotating is
// "add the new key, roll producers, remove the old key" with both valid in
// between. The file is re-read on change (fs.watch, plus a stat poll because
// watch misses events on some volumes); a reload that fails or finds no keys
// keeps the previous keys, since a half-written file must not lock everyone out.
//
// Comparison is constant time: both sides are hashed to 32 bytes and compared
// with crypto.timingSafeEqual against every key, without an early exit. Keys
// are never logged; only a short hash prefix (`id`) identifies one.

import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log.ts';
import { watchFiles } from '../fs/watch-files.ts';
import type { FileWatch } from '../fs/watch-files.ts';

export const SCOPES = ['ingest', 'status', 'drain'] as const;
export type Scope = (typeof SCOPES)[number];
/**
 * What a key line without scopes gets. Not `drain`: a producer's key must
 * never be able to stop a node taking writes, so that scope is named explicitly.
 */
export const DEFAULT_SCOPES: readonly Scope[] = ['ingest', 'status'];

export interface ApiKeyMatch {
  /** First 12 hex digits of the key's SHA-256: safe to log, scopes idempotency keys. */
  readonly id: string;
  readonly scopes: ReadonlySet<Scope>;
}

export interface ApiKeySource {
  /** The matching key, or undefined. Takes the same time whichever key (if any) matches. */
  verify(presented: string): ApiKeyMatch | undefined;
  /**
   * The `cert-cn:<CN>` line for a client certificate the TLS layer verified
   * against listen.tls.clientCaFile, or undefined. Optional: sources without it know no certificates.
   */
  verifyClientCertificate?(commonName: string): ApiKeyMatch | undefined;
  readonly size: number;
  close(): void;
}

interface KeyEntry extends ApiKeyMatch {
  readonly digest: Buffer;
}

const digestOf = (key: string): Buffer => createHash('sha256').update(key, 'utf8').digest();

/** Longest key accepted from a client; longer is not a key (and not worth hashing). */
const PRESENTED_KEY_LENGTH_MAX = 4096;

/** Prefix of a key-file line that grants scopes to a client certificate's subject CN instead of a key. */
export const CERT_CN_PREFIX = 'cert-cn:';

export interface ParsedKeys {
  readonly keys: KeyEntry[];
  /** `cert-cn:<CN>` lines by CN; never matched by a presented key. */
  readonly certs: Map<string, ApiKeyMatch>;
  /** Problems by origin and line number; never the key text. */
  readonly problems: string[];
}

/**
 * One key a line, optionally followed by scopes separated by spaces or commas
 * (default: DEFAULT_SCOPES, every scope but `drain`). `#` starts a comment at the start of a line or after
 * whitespace. Keys are printable ASCII without spaces. `sha256:<64 hex>`
 * stands for the key with that SHA-256: the key itself need not be stored
 * where the node reads it (the operator puts its own key's hash in a
 * ConfigMap, so it needs no Secret in the Endpoint's namespace).
 */
export function parseKeys(text: string, origin: string): ParsedKeys {
  const keys: KeyEntry[] = [];
  const certs = new Map<string, ApiKeyMatch>();
  const problems: string[] = [];
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = (lines[n] ?? '').replace(/(^|\s)#.*$/, '').trim();
    if (line === '') continue;
    const [key = '', ...rest] = line.split(/[\s,]+/);
    if (!/^[\x21-\x7e]+$/.test(key)) {
      problems.push(`${origin} line ${n + 1}: a key must be printable ASCII without spaces`);
      continue;
    }
    const scopes = new Set<Scope>();
    let bad = false;
    for (const [i, s] of rest.entries()) {
      if ((SCOPES as readonly string[]).includes(s)) scopes.add(s as Scope);
      else {
        // Not echoed: an unknown "scope" is as likely a second key on the line,
        // and this message is thrown at start and logged on reload.
        problems.push(
          `${origin} line ${n + 1}: word ${i + 2} (${s.length} characters) is not a scope (known: ${SCOPES.join(', ')})`,
        );
        bad = true;
      }
    }
    if (bad) continue;
    if (key.startsWith(CERT_CN_PREFIX)) {
      // A device that cannot keep a secret header proves itself with its certificate (mutual TLS).
      const cn = key.slice(CERT_CN_PREFIX.length);
      if (cn === '') problems.push(`${origin} line ${n + 1}: ${CERT_CN_PREFIX} needs a common name`);
      else
        certs.set(cn, {
          id: digestOf(key).toString('hex', 0, 6),
          scopes: scopes.size > 0 ? scopes : new Set(DEFAULT_SCOPES),
        });
      continue;
    }
    const hashed = /^sha256:([0-9a-f]{64})$/i.exec(key);
    const digest = hashed ? Buffer.from(hashed[1] ?? '', 'hex') : digestOf(key);
    keys.push({
      digest,
      id: digest.toString('hex', 0, 6),
      scopes: scopes.size > 0 ? scopes : new Set(DEFAULT_SCOPES),
    });
  }
  return { keys, certs, problems };
}

function verifyAgainst(keys: readonly KeyEntry[], presented: string): ApiKeyMatch | undefined {
  if (presented.length === 0 || presented.length > PRESENTED_KEY_LENGTH_MAX) return undefined;
  const digest = digestOf(presented);
  let match: KeyEntry | undefined;
  for (const k of keys) {
    // No early exit: every key is compared whether or not one already matched.
    const equal = timingSafeEqual(digest, k.digest);
    if (equal && match === undefined) match = k;
  }
  return match === undefined ? undefined : { id: match.id, scopes: match.scopes };
}

/** Keys given in code (tests, embedding). */
export function staticApiKeys(text: string): ApiKeySource {
  const { keys, certs, problems } = parseKeys(text, 'static keys');
  if (problems.length > 0) throw new Error(problems.join('; '));
  return {
    verify: (p) => verifyAgainst(keys, p),
    verifyClientCertificate: (cn) => certs.get(cn),
    size: keys.length + certs.size,
    close: () => {},
  };
}

export interface ApiKeyFileOptions {
  /** A file of keys, or a directory whose regular, non-dot files are all key files. */
  readonly path: string;
  readonly reloadIntervalMs: number;
  readonly log: Logger;
}

async function readKeySource(path: string): Promise<{ text: Array<[string, string]>; signature: string }> {
  const st = await stat(path);
  const files: string[] = [];
  if (st.isDirectory()) {
    // Kubernetes projects a Secret as `name -> ..data/name` symlinks; the `..` entries are its machinery.
    for (const name of (await readdir(path)).sort()) {
      if (name.startsWith('.')) continue;
      const full = join(path, name);
      if ((await stat(full)).isFile()) files.push(full);
    }
  } else {
    files.push(path);
  }
  const text: Array<[string, string]> = [];
  const sig: string[] = [];
  for (const f of files) {
    const fst = await stat(f);
    sig.push(`${f}:${fst.ino}:${fst.size}:${fst.mtimeMs}`);
    text.push([f, await readFile(f, 'utf8')]);
  }
  return { text, signature: sig.join('|') };
}

async function statSignature(path: string): Promise<string> {
  const st = await stat(path);
  if (!st.isDirectory()) return `${path}:${st.ino}:${st.size}:${st.mtimeMs}`;
  const sig: string[] = [];
  for (const name of (await readdir(path)).sort()) {
    if (name.startsWith('.')) continue;
    const fst = await stat(join(path, name));
    if (fst.isFile()) sig.push(`${join(path, name)}:${fst.ino}:${fst.size}:${fst.mtimeMs}`);
  }
  return sig.join('|');
}

export class FileApiKeySource implements ApiKeySource {
  readonly #o: ApiKeyFileOptions;
  #keys: readonly KeyEntry[] = [];
  #certs: ReadonlyMap<string, ApiKeyMatch> = new Map();
  #signature = '';
  #watch: FileWatch | undefined;
  #lastProblem: string | undefined;
  #reloading: Promise<boolean> | undefined;

  private constructor(options: ApiKeyFileOptions) {
    this.#o = options;
  }

  /** Reads the keys (failing if there are none or any line is bad) and starts watching. */
  static async open(options: ApiKeyFileOptions): Promise<FileApiKeySource> {
    const source = new FileApiKeySource(options);
    const problem = await source.#load();
    if (problem !== undefined) throw new Error(`auth.apiKeysFile: ${problem}`);
    source.#startWatching();
    return source;
  }

  get size(): number {
    return this.#keys.length + this.#certs.size;
  }

  verify(presented: string): ApiKeyMatch | undefined {
    return verifyAgainst(this.#keys, presented);
  }

  verifyClientCertificate(commonName: string): ApiKeyMatch | undefined {
    return this.#certs.get(commonName);
  }

  /** Re-reads now. Resolves true when the new keys were applied, false when the old ones were kept. */
  reload(): Promise<boolean> {
    this.#reloading ??= this.#load()
      .then((problem) => {
        if (problem === undefined) {
          this.#lastProblem = undefined;
          return true;
        }
        // The poll retries a bad file every interval; say so once, not every time.
        if (problem !== this.#lastProblem) {
          this.#o.log.error(
            { path: this.#o.path, problem },
            'API key reload failed; keeping the previous keys',
          );
        }
        this.#lastProblem = problem;
        return false;
      })
      .finally(() => {
        this.#reloading = undefined;
      });
    return this.#reloading;
  }

  async #load(): Promise<string | undefined> {
    let read: Awaited<ReturnType<typeof readKeySource>>;
    try {
      read = await readKeySource(this.#o.path);
    } catch (err) {
      return `cannot read ${this.#o.path}: ${(err as Error).message}`;
    }
    const keys: KeyEntry[] = [];
    const certs = new Map<string, ApiKeyMatch>();
    const problems: string[] = [];
    for (const [file, text] of read.text) {
      const parsed = parseKeys(text, file);
      keys.push(...parsed.keys);
      for (const [cn, match] of parsed.certs) certs.set(cn, match);
      problems.push(...parsed.problems);
    }
    if (problems.length > 0) return problems.join('; ');
    if (keys.length === 0 && certs.size === 0) return `no keys in ${this.#o.path}`;
    const changed = read.signature !== this.#signature;
    this.#keys = keys;
    this.#certs = certs;
    this.#signature = read.signature;
    if (changed) this.#o.log.info({ path: this.#o.path, keys: keys.length }, 'API keys loaded');
    return undefined;
  }

  #startWatching(): void {
    this.#watch = watchFiles({
      paths: [this.#o.path],
      onChange: () => void this.reload(),
      check: (changed) =>
        void statSignature(this.#o.path)
          .then((sig) => {
            if (sig !== this.#signature) changed();
          })
          .catch(() => changed()),
      checkIntervalMs: this.#o.reloadIntervalMs,
      log: this.#o.log,
      what: 'for API key changes',
    });
  }

  close(): void {
    this.#watch?.close();
  }
}

/** The key a request presents, from X-API-Key or Authorization: Bearer; undefined when it presents none. */
export function presentedKey(headers: Record<string, string | string[] | undefined>): string | undefined {
  const x = headers['x-api-key'];
  if (typeof x === 'string' && x !== '') return x.trim();
  const auth = headers.authorization;
  if (typeof auth === 'string' && auth.length > 7 && auth.slice(0, 7).toLowerCase() === 'bearer ')
    return auth.slice(7).trim();
  return undefined;
}
