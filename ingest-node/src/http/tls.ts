// HTTPS on the node (listen.tls). The certificate, key and client CA are files
// on a mounted volume that cert-manager or the kubelet swaps under us, so they
// are re-read when they change (fs.watch on the file and its directory, plus a
// stat poll because watch misses events on some volumes) and handed to
// server.setSecureContext: the next handshake gets the new certificate while
// connections already open keep theirs. A swap that does not load (a half
// written file, a key that does not match) keeps the previous material.
//
// At startup the same problems are configuration errors with a code, so a pod
// in CrashLoopBackOff says which file is wrong rather than an OpenSSL string.

import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import type { SecureContextOptions, Server as TlsServer, TLSSocket } from 'node:tls';
import type { Registry } from 'prom-client';
import { ConfigError } from '../config/load.ts';
import type { NodeConfig } from '../config/schema.ts';
import type { Logger } from '../log.ts';
import { watchFiles } from '../fs/watch-files.ts';
import type { FileWatch } from '../fs/watch-files.ts';
import { registerScrapeMetric } from '../metrics.ts';

export type TlsSettings = NodeConfig['listen']['tls'];

/** TLS 1.0 and 1.1 are deprecated (RFC 8996). */
export const TLS_MIN_VERSION = 'TLSv1.2';

/**
 * AEAD suites with forward secrecy only (Mozilla's "intermediate" list): the TLS 1.3
 * suites, then ECDHE with AES-GCM or ChaCha20-Poly1305 for TLS 1.2 clients.
 */
export const TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

export const TlsErrorCode = {
  fileUnreadable: 'LF_TLS_FILE_UNREADABLE',
  certificateInvalid: 'LF_TLS_CERTIFICATE_INVALID',
  keyInvalid: 'LF_TLS_KEY_INVALID',
  keyMismatch: 'LF_TLS_KEY_MISMATCH',
  clientCaInvalid: 'LF_TLS_CLIENT_CA_INVALID',
} as const;

/** A startup error in listen.tls: a ConfigError (the CLI exits 2) with a stable code. */
export class TlsConfigError extends ConfigError {
  readonly code: string;
  constructor(code: string, problem: string) {
    super([`${code}: ${problem}`]);
    this.name = 'TlsConfigError';
    this.code = code;
  }
}

interface Material {
  readonly key: Buffer;
  readonly cert: Buffer;
  readonly ca: Buffer | undefined;
  readonly notAfterMs: number;
  readonly subject: string;
}

interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  readonly clientCaFile: string | undefined;
}

function filesOf(s: TlsSettings): TlsFiles {
  if (s.certFile === undefined || s.keyFile === undefined)
    throw new Error('listen.tls needs certFile and keyFile');
  return { certFile: s.certFile, keyFile: s.keyFile, clientCaFile: s.clientCaFile };
}

async function readOne(key: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new TlsConfigError(TlsErrorCode.fileUnreadable, `${key} ${path}: ${(err as Error).message}`);
  }
}

/** Reads and checks the files; throws TlsConfigError naming what is wrong. */
async function readMaterial(f: TlsFiles): Promise<Material> {
  const cert = await readOne('listen.tls.certFile', f.certFile);
  const key = await readOne('listen.tls.keyFile', f.keyFile);
  const ca =
    f.clientCaFile === undefined ? undefined : await readOne('listen.tls.clientCaFile', f.clientCaFile);
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new TlsConfigError(
      TlsErrorCode.certificateInvalid,
      `listen.tls.certFile ${f.certFile} holds no PEM certificate: ${(err as Error).message}`,
    );
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new TlsConfigError(
      TlsErrorCode.keyInvalid,
      `listen.tls.keyFile ${f.keyFile} holds no PEM private key (an encrypted key is not supported): ${(err as Error).message}`,
    );
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new TlsConfigError(
      TlsErrorCode.keyMismatch,
      `listen.tls.keyFile ${f.keyFile} is not the private key of the certificate in listen.tls.certFile ${f.certFile} (subject ${leaf.subject.replace(/\n/g, ', ')})`,
    );
  }
  if (ca !== undefined) {
    try {
      new X509Certificate(ca);
    } catch (err) {
      throw new TlsConfigError(
        TlsErrorCode.clientCaInvalid,
        `listen.tls.clientCaFile ${f.clientCaFile ?? ''} holds no PEM certificate: ${(err as Error).message}`,
      );
    }
  }
  const material: Material = {
    key,
    cert,
    ca,
    notAfterMs: Date.parse(leaf.validTo),
    subject: leaf.subject.replace(/\n/g, ', '),
  };
  // Whatever else OpenSSL dislikes (a chain it cannot parse) fails here, not at the first handshake.
  try {
    createSecureContext(contextOptions(material));
  } catch (err) {
    throw new TlsConfigError(
      TlsErrorCode.certificateInvalid,
      `listen.tls: the certificate files do not load: ${(err as Error).message}`,
    );
  }
  return material;
}

function contextOptions(m: Material): SecureContextOptions {
  return {
    key: m.key,
    cert: m.cert,
    ...(m.ca === undefined ? {} : { ca: m.ca }),
    minVersion: TLS_MIN_VERSION,
    ciphers: TLS_CIPHERS,
    honorCipherOrder: true,
  };
}

async function signatureOf(f: TlsFiles): Promise<string> {
  const parts: string[] = [];
  for (const path of [f.certFile, f.keyFile, f.clientCaFile]) {
    if (path === undefined) continue;
    try {
      // stat follows the kubelet's ..data symlinks, so a Secret swap changes the inode.
      const st = await stat(path);
      parts.push(`${st.ino}:${st.size}:${st.mtimeMs}`);
    } catch {
      parts.push('missing');
    }
  }
  return parts.join('|');
}

/** Handshake failures by reason; the reasons are a fixed set so the label stays bounded. */
function failureReason(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ERR_SSL_UNSUPPORTED_PROTOCOL':
    case 'ERR_SSL_WRONG_VERSION_NUMBER':
    case 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION':
      return 'protocol_version';
    case 'ERR_SSL_NO_SHARED_CIPHER':
      return 'no_shared_cipher';
    case 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE':
      return 'client_certificate_missing';
    case 'ERR_SSL_CERTIFICATE_VERIFY_FAILED':
    case 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA':
      return 'client_certificate_invalid';
    case 'ERR_SSL_HTTP_REQUEST':
      return 'plain_http';
    case 'ERR_TLS_HANDSHAKE_TIMEOUT':
      return 'timeout';
    case 'ECONNRESET':
      return 'reset';
    default:
      return 'other';
  }
}

export interface NodeTlsDeps {
  readonly log: Logger;
  readonly registry: Registry;
}

export class NodeTls {
  readonly #settings: TlsSettings;
  readonly #files: TlsFiles;
  readonly #log: Logger;
  #material: Material;
  #signature: string;
  /** The main listener and the admin one: both get a renewed certificate. */
  readonly #servers: TlsServer[] = [];
  #watch: FileWatch | undefined;
  #reloading: Promise<boolean> | undefined;
  #lastProblem: string | undefined;
  #closed = false;
  readonly #handshakes = new Map<string, number>();
  readonly #failures = new Map<string, number>();
  readonly #reloads = { ok: 0, failed: 0 };

  private constructor(settings: TlsSettings, material: Material, signature: string, deps: NodeTlsDeps) {
    this.#settings = settings;
    this.#files = filesOf(settings);
    this.#material = material;
    this.#signature = signature;
    this.#log = deps.log;
    const r = deps.registry;
    registerScrapeMetric(
      r,
      'landfall_tls_handshakes_total',
      'TLS handshakes completed, by protocol version.',
      'counter',
      () => [...this.#handshakes].map(([version, value]) => ({ labels: { version }, value })),
    );
    registerScrapeMetric(
      r,
      'landfall_tls_handshake_failures_total',
      'TLS handshakes that failed, by reason (protocol_version, no_shared_cipher, client_certificate_missing, client_certificate_invalid, plain_http, timeout, reset, other).',
      'counter',
      () => [...this.#failures].map(([reason, value]) => ({ labels: { reason }, value })),
    );
    registerScrapeMetric(
      r,
      'landfall_tls_certificate_expiry_timestamp_seconds',
      'When the certificate being served expires (notAfter), in seconds since the Unix epoch.',
      'gauge',
      () => [{ value: Math.floor(this.#material.notAfterMs / 1000) }],
    );
    registerScrapeMetric(
      r,
      'landfall_tls_reloads_total',
      'Certificate file changes applied (ok) or refused, keeping the previous certificate (failed).',
      'counter',
      () => [
        { labels: { result: 'ok' }, value: this.#reloads.ok },
        { labels: { result: 'failed' }, value: this.#reloads.failed },
      ],
    );
  }

  /** Reads and checks the files (TlsConfigError when they are wrong). Starts nothing yet. */
  static async open(settings: TlsSettings, deps: NodeTlsDeps): Promise<NodeTls> {
    const files = filesOf(settings);
    const signature = await signatureOf(files);
    const material = await readMaterial(files);
    return new NodeTls(settings, material, signature, deps);
  }

  /** Options for https.createServer, merged over the plain HTTP server options. */
  serverOptions<T extends object>(
    httpOptions: T,
    handshakeTimeoutMs: number,
  ): T & SecureContextOptions & Record<string, unknown> {
    const auth = this.#settings.clientAuth;
    return {
      ...httpOptions,
      // Node's default is 120 s, and headersTimeout only starts after the
      // handshake: a client that never finishes one would hold a socket 12×
      // longer than one that never sends its headers.
      handshakeTimeout: handshakeTimeoutMs,
      ...contextOptions(this.#material),
      requestCert: auth !== 'none',
      rejectUnauthorized: auth === 'require',
    };
  }

  /** The certificate's subject and expiry, for the start log line. */
  get summary(): { subject: string; notAfter: string; clientAuth: string } {
    return {
      subject: this.#material.subject,
      notAfter: new Date(this.#material.notAfterMs).toISOString(),
      clientAuth: this.#settings.clientAuth,
    };
  }

  /** Counts handshakes on the server and starts watching the files. */
  attach(server: TlsServer): void {
    this.#servers.push(server);
    server.on('secureConnection', (socket: TLSSocket) => {
      // `request`: a client without a certificate is let in, one with a certificate the CA did not sign is not.
      if (
        this.#settings.clientAuth === 'request' &&
        !socket.authorized &&
        Object.keys(socket.getPeerCertificate()).length > 0
      ) {
        this.#count(this.#failures, 'client_certificate_invalid');
        socket.destroy();
        return;
      }
      this.#count(this.#handshakes, socket.getProtocol() ?? 'unknown');
    });
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
      // Node checks the client certificate after OpenSSL's handshake and then destroys the
      // socket, which surfaces here as a bare ECONNRESET: the socket still says why.
      const why = (socket as { authorizationError?: unknown }).authorizationError;
      const reason = why === undefined || why === null ? failureReason(err) : 'client_certificate_invalid';
      this.#count(this.#failures, reason);
    });
    if (this.#servers.length === 1) this.#startWatching();
  }

  #count(map: Map<string, number>, label: string): void {
    map.set(label, (map.get(label) ?? 0) + 1);
  }

  /** Re-reads the files if they changed. Resolves true when new material was applied. */
  reload(): Promise<boolean> {
    this.#reloading ??= this.#reload().finally(() => {
      this.#reloading = undefined;
    });
    return this.#reloading;
  }

  async #reload(): Promise<boolean> {
    const signature = await signatureOf(this.#files);
    if (signature === this.#signature || this.#closed) return false;
    let material: Material;
    try {
      material = await readMaterial(this.#files);
    } catch (err) {
      const problem = (err as Error).message;
      // A half-written swap changes the signature again when it completes; log each problem once.
      if (problem !== this.#lastProblem) {
        this.#reloads.failed++;
        this.#log.error({ problem }, 'TLS certificate reload failed; serving the previous certificate');
      }
      this.#lastProblem = problem;
      return false;
    }
    this.#signature = signature;
    this.#material = material;
    this.#lastProblem = undefined;
    for (const server of this.#servers) server.setSecureContext(contextOptions(material));
    this.#reloads.ok++;
    this.#log.info(
      { subject: material.subject, notAfter: new Date(material.notAfterMs).toISOString() },
      'TLS certificate reloaded; new connections use it',
    );
    return true;
  }

  #startWatching(): void {
    this.#watch = watchFiles({
      paths: [this.#files.certFile, this.#files.keyFile, this.#files.clientCaFile].filter(
        (p): p is string => p !== undefined,
      ),
      onChange: () => void this.reload(),
      // reload() compares the files' signature itself: the check is a reload.
      check: () => void this.reload(),
      checkIntervalMs: this.#settings.reloadIntervalMs,
      log: this.#log,
      what: 'the TLS files',
    });
  }

  close(): void {
    this.#closed = true;
    this.#watch?.close();
  }
}

/**
 * The subject CN of the client certificate on this connection, when the TLS
 * layer verified it against listen.tls.clientCaFile; undefined otherwise
 * (plain HTTP, no certificate, or one that did not verify).
 */
/**
 * Reads and checks the certificate files (TlsConfigError when they are
 * wrong) without building anything: the node calls it before it opens the
 * WAL, so a bad Secret fails the start before recovery and delivery run.
 */
export async function checkTlsFiles(settings: TlsSettings): Promise<void> {
  await readMaterial(filesOf(settings));
}

export function verifiedClientCommonName(socket: unknown): string | undefined {
  const s = socket as Partial<TLSSocket> | undefined;
  if (s?.authorized !== true || typeof s.getPeerCertificate !== 'function') return undefined;
  const cn: unknown = s.getPeerCertificate().subject?.CN;
  // A subject with several CNs is ambiguous: it maps to nothing.
  return typeof cn === 'string' && cn !== '' ? cn : undefined;
}
