// The ingest node's HTTP API (DESIGN §3) on fastify. Everything it uses is
// passed in (WAL, config, clock, logger, disk probe, metrics registry, API
// keys) so tests can run it against a test double and a fake disk.
//
// POST /v1/ingest reads the body itself from the raw stream: fastify's parsers
// are replaced by one that hands the stream through, so bodies are never
// buffered beyond the limits and never turned into strings on the hot path.

import { createHash } from 'node:crypto';
import { createServer as createHttpServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Readable } from 'node:stream';
import type { Socket } from 'node:net';
import type { Server as TlsServer } from 'node:tls';
import Fastify from 'fastify';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Registry } from 'prom-client';
import type { Clock } from '../clock.ts';
import { systemClock } from '../clock.ts';
import type { Logger } from '../log.ts';
import { silentLogger } from '../log.ts';
import type { NodeConfig } from '../config/schema.ts';
import { adminPortOf } from '../config/schema.ts';
import { VERSION } from '../config/version.ts';
import type { DurableWalStats, Wal, WriteAheadLog, WalStats } from '../wal/types.ts';
import { RecordFormat, WalErrorCode } from '../wal/types.ts';
import { Backpressure, statfsProbe } from '../backpressure.ts';
import type { DiskSpaceProbe } from '../backpressure.ts';
import { createMetrics } from '../metrics.ts';
import { DrainMode } from '../drain.ts';
import type { NodeMetrics } from '../metrics.ts';
import {
  ApiKeyInvalidError,
  ApiKeyMissingError,
  BadRequestError,
  ForbiddenError,
  HeadersTooLargeError,
  IdempotencyKeyInvalidError,
  IdempotencyKeyReusedError,
  InternalError,
  LandfallError,
  LengthRequiredError,
  NotFoundError,
  DecodedTooLargeError,
  DrainingError,
  OverloadedError,
  PayloadTooLargeError,
  ProcessingTimeoutError,
  RecordTooLargeError,
  RequestTimeoutError,
  UnsupportedEncodingError,
  UnsupportedMediaTypeError,
  WalUnavailableError,
} from '../errors.ts';
import { FileApiKeySource, presentedKey } from './auth.ts';
import type { ApiKeySource, Scope } from './auth.ts';
import { chargeRecords, readBody } from './body.ts';
import type { BodyEncoding, BodyWatch, Reservation } from './body.ts';
import { IdempotencyCache } from './idempotency.ts';
import type { Claim } from './idempotency.ts';
import { recordCounter, splitRecords } from './records.ts';
import type { BodyFormat } from './records.ts';
import { NodeTls, verifiedClientCommonName } from './tls.ts';

export interface ServerDeps {
  readonly config: NodeConfig;
  readonly wal: WriteAheadLog;
  readonly clock?: Clock;
  readonly log?: Logger;
  /** Free space of the WAL volume; defaults to statfs on config.wal.dir. */
  readonly disk?: DiskSpaceProbe;
  /**
   * The WAL volume went under backpressure.diskFreeBytesLow (true) or back
   * over diskFreeBytesHigh (false), after the WAL has acted on it: others
   * holding space there for speed give it back (the Parquet children).
   */
  readonly onDiskLow?: (low: boolean) => void;
  /** A registry of this node's own; one is created when absent. */
  readonly registry?: Registry;
  /**
   * The keys. Undefined: opened from config.auth.apiKeysFile when set, else
   * auth is off. null: auth is off whatever the config says (tests).
   */
  readonly apiKeys?: ApiKeySource | null;
  /** Extra sections of /v1/status (the sealer and uploader add theirs). */
  readonly status?: () => Record<string, unknown>;
  /** Process metrics (event loop, GC, heap); off in tests to keep them fast. */
  readonly defaultMetrics?: boolean;
  /**
   * Segments the delivery pipeline still holds (for `drained`); absent when
   * the node delivers nowhere.
   */
  readonly deliveryPending?: () => number;
  /** Corrupt segments in the WAL's quarantine/ now (-1: unknown); drain mode reports drained only at 0. */
  readonly quarantinedSegments?: () => Promise<number>;
  /**
   * MQTT messages in a WAL append under way (they are acknowledged once it is
   * durable); drain mode reports drained only at 0. The MQTT source starts
   * after the server, hence a function.
   */
  readonly mqttAppending?: () => number;
}

export interface IngestServer {
  readonly app: FastifyInstance;
  readonly backpressure: Backpressure;
  readonly metrics: NodeMetrics;
  readonly idempotency: IdempotencyCache;
  readonly apiKeys: ApiKeySource | null;
  /** HTTPS (listen.tls), or undefined when the node speaks plain HTTP. */
  readonly tls: NodeTls | undefined;
  /** Drain mode (POST/DELETE /v1/drain). */
  readonly drain: DrainMode;
  /**
   * Listens on config.listen and config.listen.admin (or the given ports) and
   * returns the base URL of the main listener; adminUrl is set from then on.
   */
  listen(port?: number, adminPort?: number): Promise<string>;
  /** Base URL of the admin listener (/metrics, /v1/status), once listening. */
  readonly adminUrl: string | undefined;
  /** Readiness false and new writes 503 LF_DRAINING; in-flight requests carry on. */
  beginDrain(): void;
  /** Drains, waits for in-flight requests, closes connections. Does not close the WAL (the node does). */
  close(): Promise<void>;
}

/**
 * Routes served by the admin listener (listen.admin) and never on listen.port:
 * adding a route here is all it takes to move it there. Every other route is
 * served on listen.port only, except SHARED_ROUTES.
 */
export const ADMIN_ROUTES: ReadonlySet<string> = new Set(['/metrics', '/v1/status', '/v1/drain']);
/** On both listeners: the kubelet probes listen.port, a local check may use either. */
const SHARED_ROUTES: ReadonlySet<string> = new Set(['/healthz', '/readyz']);

/** Set on requests the admin listener hands to the router. */
const VIA_ADMIN = Symbol('landfall.viaAdmin');
type AdminMarked = IncomingMessage & { [VIA_ADMIN]?: true };

/**
 * A route constraint on which listener a request came in through. find-my-way
 * derives it once per request (one property read) and matches it in the
 * router: no per-request hook, which would cost the ingest path far more.
 */
const listenerConstraint = {
  name: 'listener',
  storage<H>() {
    const handlers = new Map<string, H>();
    return {
      get: (value: string): H | null => handlers.get(value) ?? null,
      set: (value: string, handler: H) => {
        handlers.set(value, handler);
      },
    };
  },
  deriveConstraint: (req: AdminMarked) => (req[VIA_ADMIN] === true ? 'admin' : 'main'),
  validate(value: unknown) {
    if (value !== 'admin' && value !== 'main') throw new Error(`listener constraint: ${String(value)}`);
  },
  mustMatchWhenDerived: false,
};

function urlOf(scheme: string, host: string, port: number): string {
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

const FORMAT_BY_TYPE: ReadonlyMap<string, BodyFormat> = new Map([
  ['application/x-ndjson', 'ndjson'],
  ['application/ndjson', 'ndjson'],
  ['application/jsonl', 'ndjson'],
  ['application/x-jsonlines', 'ndjson'],
  ['application/json', 'json'],
  ['application/x-recordio', 'recordio'],
]);

const WAL_FORMAT: Readonly<Record<BodyFormat, RecordFormat>> = {
  ndjson: RecordFormat.ndjson,
  json: RecordFormat.json,
  recordio: RecordFormat.recordio,
};

/** Fastify's own 4xx errors (bad URL, malformed media type…) mapped onto the catalogue. */
function fromFastifyError(err: { code?: string; statusCode?: number; message: string }): LandfallError {
  if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return new UnsupportedMediaTypeError('(malformed)');
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    return new BadRequestError(err.message);
  }
  return new InternalError();
}

function parseFormat(header: string | undefined): BodyFormat {
  if (header === undefined) throw new UnsupportedMediaTypeError('(none)');
  // Producers send the same header on every request: the exact string is the fast path.
  const exact = FORMAT_BY_TYPE.get(header);
  if (exact !== undefined) return exact;
  const semi = header.indexOf(';');
  const type = (semi === -1 ? header : header.slice(0, semi)).trim().toLowerCase();
  const format = FORMAT_BY_TYPE.get(type);
  if (format === undefined) throw new UnsupportedMediaTypeError(type.slice(0, 100));
  return format;
}

function parseEncoding(header: string | undefined): BodyEncoding {
  if (header === undefined) return 'identity';
  const v = header.trim().toLowerCase();
  if (v === '' || v === 'identity') return 'identity';
  if (v === 'gzip' || v === 'x-gzip') return 'gzip';
  if (v === 'zstd') return 'zstd';
  throw new UnsupportedEncodingError(v.slice(0, 100));
}

/** The client closed the connection before it was answered: the work stops and nothing is written. */
const clientGone = (): LandfallError =>
  new BadRequestError('the client closed the connection before the request was answered');

function walStatsJson(s: WalStats): Record<string, unknown> {
  return {
    epoch: s.epoch,
    openSegmentId: s.openSegmentId === null ? null : String(s.openSegmentId),
    openSegmentBytes: s.openSegmentBytes,
    retainedBytes: s.retainedBytes,
    sealedSegments: s.sealedSegments,
    nextSeq: String(s.nextSeq),
    appendsTotal: s.appendsTotal,
    syncsTotal: s.syncsTotal,
    // The durable WAL's view of its state file: a seal it could not record holds delivery back.
    ...('unannouncedSegments' in s
      ? {
          unannouncedSegments: (s as DurableWalStats).unannouncedSegments,
          stateLastError: (s as DurableWalStats).stateLastError,
        }
      : {}),
  };
}

function writeRawError(socket: Socket, err: LandfallError): void {
  const body = JSON.stringify(err.toBody());
  const reason =
    err.statusCode === 408
      ? 'Request Timeout'
      : err.statusCode === 431
        ? 'Request Header Fields Too Large'
        : 'Bad Request';
  socket.write(
    `HTTP/1.1 ${err.statusCode} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export async function buildServer(deps: ServerDeps): Promise<IngestServer> {
  const { config, wal } = deps;
  const clock = deps.clock ?? systemClock;
  const log = deps.log ?? silentLogger;
  const registry = deps.registry ?? new Registry();
  const limits = config.limits;
  const validateJson = config.validation === 'json';
  const splitOptions = {
    recordBytesMax: limits.recordBytesMax,
    recordsMax: limits.recordsPerRequestMax,
    validateJson,
  };
  // Before the keys and the listener (startNode checked the files before the WAL too).
  const tls =
    config.listen.tls.certFile === undefined
      ? undefined
      : await NodeTls.open(config.listen.tls, { log, registry });

  let apiKeys: ApiKeySource | null;
  let ownsKeys = false;
  if (deps.apiKeys !== undefined) apiKeys = deps.apiKeys;
  else if (config.auth.apiKeysFile !== undefined) {
    apiKeys = await FileApiKeySource.open({
      path: config.auth.apiKeysFile,
      reloadIntervalMs: config.auth.reloadIntervalMs,
      log,
    });
    ownsKeys = true;
  } else apiKeys = null;

  const backpressure = new Backpressure({
    ...config.backpressure,
    inflightBytesMax: limits.inflightBytesMax,
    walStats: () => wal.stats(),
    disk: deps.disk ?? statfsProbe(config.wal.dir),
    clock,
    log,
    onDiskLow: async (low) => {
      // The durable WAL's free files go back to a volume short of space.
      if ('setVolumeLow' in wal && typeof wal.setVolumeLow === 'function')
        await (wal as Pick<Wal, 'setVolumeLow'>).setVolumeLow(low);
      deps.onDiskLow?.(low);
    },
  });
  await backpressure.start();
  const metrics = createMetrics(registry, { wal, backpressure }, deps.defaultMetrics ?? false);
  let ingestInFlight = 0;
  const drain = new DrainMode({
    backpressure,
    wal,
    deliveryPending: deps.deliveryPending,
    quarantinedSegments: deps.quarantinedSegments,
    // HTTP requests between admission and answer: their records may still
    // append; and MQTT messages in an append under way, acknowledged once it
    // is durable. (Not backpressure.inflightBytes: MQTT messages held while
    // draining keep their reservation and stay with the broker unacknowledged.)
    writesInFlight: () => ingestInFlight + (deps.mqttAppending?.() ?? 0),
    closeIdleConnections: () => app.server.closeIdleConnections(),
    clock,
    log,
  });
  const idempotency = new IdempotencyCache({
    windowMs: config.idempotency.windowMs,
    entriesMax: config.idempotency.entriesMax,
    clock,
  });

  const httpOptions = {
    headersTimeout: config.http.headersTimeoutMs,
    // Node checks the two timeouts above only this often (default 30 s): keep it a fraction of them.
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(config.http.headersTimeoutMs / 4))),
  };
  const app = Fastify({
    // No request logging: it would cost more than the rest of a 1 KiB request. Errors are logged below.
    logger: false,
    requestTimeout: config.http.requestTimeoutMs,
    keepAliveTimeout: config.http.keepAliveTimeoutMs,
    http: httpOptions,
    // fastify hands `https` (not `http`) to https.createServer, so it carries the HTTP options too.
    // Typed as a plain object: the server stays an http.Server to the routes below.
    ...(tls === undefined
      ? {}
      : ({ https: tls.serverOptions(httpOptions, config.http.headersTimeoutMs) } as object)),
    forceCloseConnections: 'idle',
    return503OnClosing: true,
    routerOptions: { constraints: { listener: listenerConstraint } },
    clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket) {
      if (err.code === 'ECONNRESET' || socket.destroyed) return;
      let answer: LandfallError;
      if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT')
        answer = new RequestTimeoutError(config.http.requestTimeoutMs);
      else if (err.code === 'HPE_HEADER_OVERFLOW') answer = new HeadersTooLargeError();
      else answer = new BadRequestError('malformed HTTP request');
      metrics.countRejection(answer.code);
      if (socket.writable) writeRawError(socket, answer);
      socket.destroy();
    },
  });

  app.addHook('onRoute', (route) => {
    if (SHARED_ROUTES.has(route.url)) return;
    route.constraints = { ...route.constraints, listener: ADMIN_ROUTES.has(route.url) ? 'admin' : 'main' };
  });
  // The admin listener: the same router, reached through a server of its own.
  // HTTPS with the node's certificate when listen.tls is set (the operator's
  // status key does not cross the pod network in clear), but never asking for a
  // client certificate: the operator and Prometheus have none.
  const adminOptions = {
    ...httpOptions,
    requestTimeout: config.http.requestTimeoutMs,
    keepAliveTimeout: config.http.keepAliveTimeoutMs,
  };
  const toRouter = (req: IncomingMessage, res: ServerResponse): void => {
    (req as AdminMarked)[VIA_ADMIN] = true;
    app.routing(req, res);
  };
  const adminServer =
    tls === undefined
      ? createHttpServer(adminOptions, toRouter)
      : createHttpsServer(
          {
            ...tls.serverOptions(adminOptions, config.http.headersTimeoutMs),
            requestCert: false,
            rejectUnauthorized: false,
          },
          toRouter,
        );
  if (tls !== undefined) tls.attach(adminServer as TlsServer);
  adminServer.on('clientError', (_err, socket) => socket.destroy());
  let adminUrl: string | undefined;

  // The ingest route reads the raw stream itself, under its limits.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));

  // Metrics and auth are called from the handlers rather than from onRequest /
  // onResponse hooks: two no-op hooks alone cost a third more CPU per 1 KiB request.
  const SCOPE_BY_ROUTE: ReadonlyMap<string, Scope> = new Map([
    ['/v1/ingest', 'ingest'],
    ['/v1/status', 'status'],
    ['/v1/drain', 'drain'],
  ]);

  app.setErrorHandler((error: unknown, request, reply) => {
    let err: LandfallError;
    if (error instanceof LandfallError) err = error;
    else {
      err = fromFastifyError(error as { code?: string; statusCode?: number; message: string });
      // fastify may fail a request (a malformed media type…) before our handler runs;
      // an unauthenticated client still gets 401, not a hint about what the route accepts.
      const scope = SCOPE_BY_ROUTE.get(request.routeOptions.url ?? '');
      if (scope !== undefined) err = authFailure(request, scope) ?? err;
      if (err.statusCode >= 500)
        log.error({ err: error, method: request.method, url: request.url }, 'unhandled error');
    }
    metrics.countRejection(err.code);
    metrics.countRequest(request.routeOptions.url ?? 'unmatched', request.method, err.statusCode);
    // A body we stopped reading would otherwise be drained (or block) before the next request.
    if (!request.raw.complete) void reply.header('connection', 'close');
    void reply
      .code(err.statusCode)
      .headers(err.headers())
      .type('application/json')
      .send(JSON.stringify(err.toBody()));
  });
  app.setNotFoundHandler((request, reply) => {
    const err = new NotFoundError(request.method, request.url.slice(0, 200));
    metrics.countRejection(err.code);
    metrics.countRequest('unmatched', request.method, 404);
    void reply.code(404).type('application/json').send(JSON.stringify(err.toBody()));
  });

  /** The answer to a rejected append; nothing of it was written (the WAL's contract). */
  const walRefusal = (err: unknown, records: number): LandfallError => {
    const code = (err as { code?: unknown } | null)?.code;
    if (code === WalErrorCode.overloaded) return new OverloadedError(limits.inflightBytesMax);
    if (code === WalErrorCode.closed) return new DrainingError();
    if (code === WalErrorCode.recordTooLarge)
      return new RecordTooLargeError('refused by the WAL', limits.recordBytesMax);
    log.error({ err, records }, 'WAL append failed; answering 503');
    return new WalUnavailableError();
  };

  /** The id of the request's key ('' with auth off), or why it may not use `scope`. */
  const checkKey = (request: FastifyRequest, scope: Scope): string | LandfallError => {
    if (apiKeys === null) return '';
    const presented = presentedKey(request.headers);
    const match =
      presented !== undefined
        ? apiKeys.verify(presented)
        : apiKeys.verifyClientCertificate?.(verifiedClientCommonName(request.raw.socket) ?? '');
    if (presented === undefined && match === undefined) return new ApiKeyMissingError();
    if (match === undefined) return new ApiKeyInvalidError();
    if (!match.scopes.has(scope)) return new ForbiddenError(scope);
    return match.id;
  };
  const authFailure = (request: FastifyRequest, scope: Scope): LandfallError | undefined => {
    const r = checkKey(request, scope);
    return typeof r === 'string' ? undefined : r;
  };
  const authorize = (request: FastifyRequest, scope: Scope): string => {
    const r = checkKey(request, scope);
    if (typeof r !== 'string') throw r;
    return r;
  };

  app.post('/v1/ingest', async (request, reply) => {
    const startedMs = clock.monotonicMs();
    // First, before anything about the request is looked at or its body read.
    const keyId = authorize(request, 'ingest');
    const headers = request.headers;
    const contentLength = headers['content-length'];
    if (contentLength === undefined && headers['transfer-encoding'] === undefined)
      throw new LengthRequiredError();
    const format = parseFormat(headers['content-type']);
    const encodingHeader = headers['content-encoding'];
    const encoding = parseEncoding(encodingHeader);
    const idemHeader = headers['idempotency-key'];
    const idemKey = typeof idemHeader === 'string' && idempotency.enabled ? idemHeader : undefined;
    if (
      idemKey !== undefined &&
      (idemKey.length === 0 ||
        idemKey.length > config.idempotency.keyLengthMax ||
        !/^[\x20-\x7e]+$/.test(idemKey))
    ) {
      throw new IdempotencyKeyInvalidError(config.idempotency.keyLengthMax);
    }
    // Refuse an announced oversize body before reading a byte of it.
    if (contentLength !== undefined) {
      const announced = Number(contentLength);
      if (announced > limits.bodyBytesMax) throw new PayloadTooLargeError(limits.bodyBytesMax);
      // Unencoded, the body as sent is the decoded body.
      if (encoding === 'identity' && announced > limits.decodedBytesMax) {
        throw new DecodedTooLargeError(limits.decodedBytesMax);
      }
    }
    const refusal = backpressure.admit();
    if (refusal !== undefined) throw refusal;
    // Counted from admission to the answer, so drain mode never reports
    // drained while an admitted request may still append (it has reserved no
    // bytes yet while its body is on the way).
    ingestInFlight++;

    const reservation: Reservation = { reserved: 0, records: 0, budget: backpressure };
    let claim: Claim | undefined;
    // Processing time runs from the whole body having arrived (a slow sender costs no CPU
    // and is bounded by http.requestTimeoutMs) to the records being handed to the WAL.
    let deadlineMs = Number.POSITIVE_INFINITY;
    const socket = request.raw.socket;
    const check = (): LandfallError | undefined => {
      // Nobody is left to answer: stop the work, write nothing.
      if (socket.destroyed) return clientGone();
      if (clock.monotonicMs() > deadlineMs) return new ProcessingTimeoutError(limits.processingTimeoutMs);
      return undefined;
    };
    const watch: BodyWatch = {
      arrived() {
        deadlineMs = clock.monotonicMs() + limits.processingTimeoutMs;
      },
      check,
    };
    try {
      const stream = (request.body as Readable | undefined) ?? request.raw;
      // The fingerprint covers what changes the records: media type, encoding and the bytes as sent.
      const hash =
        idemKey === undefined ? undefined : createHash('sha256').update(`${format}\n${encoding}\n`, 'utf8');
      const body = await readBody(stream, encoding, limits, reservation, watch, recordCounter(format), hash);

      if (idemKey !== undefined && hash !== undefined) {
        const waitStartMs = clock.monotonicMs();
        claim = await idempotency.claim(`${keyId}\n${idemKey}`, hash.digest('hex'));
        // Waiting for a duplicate to finish is not this request's processing.
        deadlineMs += clock.monotonicMs() - waitStartMs;
        if (claim.kind === 'replay') {
          void reply
            .code(claim.answer.statusCode)
            .header('idempotent-replayed', 'true')
            .type('application/json');
          metrics.countRequest('/v1/ingest', 'POST', claim.answer.statusCode);
          return claim.answer.body;
        }
        if (claim.kind === 'mismatch') throw new IdempotencyKeyReusedError();
      }

      const records = splitRecords(format, body, splitOptions, check);
      // The chunks no record views need not wait for the WAL: this frame lives until the append returns.
      body.length = 0;
      // application/json is counted by its splitter; the others were charged as they were decoded.
      // Last look before the append: once it starts, the records will be written.
      const stop = chargeRecords(reservation, records.length, limits.recordsPerRequestMax) ?? check();
      if (stop !== undefined) throw stop;
      let result;
      try {
        result = await wal.append(records, WAL_FORMAT[format]);
      } catch (err) {
        throw walRefusal(err, records.length);
      }
      const answer = `{"accepted":${result.count},"firstSeq":"${result.firstSeq}","lastSeq":"${result.lastSeq}"}`;
      if (claim?.kind === 'owner') claim.complete({ statusCode: 202, body: answer });
      let payloadBytes = 0;
      for (const r of records) payloadBytes += r.length;
      metrics.countAccepted(result.count, payloadBytes, (clock.monotonicMs() - startedMs) / 1000);
      metrics.countRequest('/v1/ingest', 'POST', 202);
      void reply.code(202).type('application/json');
      // While draining, tell keep-alive clients to reconnect (to another replica).
      if (backpressure.draining) void reply.header('connection', 'close');
      return answer;
    } finally {
      // Whatever happened, the owner settles so duplicates waiting on it wake up.
      if (claim?.kind === 'owner') claim.complete(undefined);
      backpressure.release(reservation.reserved);
      ingestInFlight--;
    }
  });

  app.get('/healthz', async (_request, reply) => {
    metrics.countRequest('/healthz', 'GET', 200);
    void reply.type('application/json');
    return '{"status":"ok"}';
  });

  app.get('/readyz', async (_request, reply) => {
    const s = backpressure.ready();
    metrics.countRequest('/readyz', 'GET', s.accepting ? 200 : 503);
    void reply.code(s.accepting ? 200 : 503).type('application/json');
    return JSON.stringify({ ready: s.accepting, reasons: s.reasons });
  });

  app.get('/metrics', async (_request, reply) => {
    metrics.countRequest('/metrics', 'GET', 200);
    void reply.type(registry.contentType);
    return registry.metrics();
  });

  app.get('/v1/status', async (request, reply) => {
    authorize(request, 'status');
    metrics.countRequest('/v1/status', 'GET', 200);
    const bp = backpressure.ready();
    void reply.type('application/json');
    return JSON.stringify({
      version: VERSION,
      endpoint: config.endpoint.name,
      instance: config.instance.id,
      ready: bp.accepting,
      validation: config.validation,
      auth: apiKeys === null ? { enabled: false } : { enabled: true, keys: apiKeys.size },
      wal: walStatsJson(wal.stats()),
      backpressure: bp,
      idempotency: { entries: idempotency.size, entriesMax: config.idempotency.entriesMax },
      ...deps.status?.(),
      drain: drain.state(),
    });
  });

  // The body is ignored (empty or `{}`): there is nothing to configure.
  app.post('/v1/drain', async (request, reply) => {
    authorize(request, 'drain');
    const state = await drain.begin();
    metrics.countRequest('/v1/drain', 'POST', 202);
    void reply.code(202).type('application/json');
    return JSON.stringify({ drain: state });
  });

  app.delete('/v1/drain', async (request, reply) => {
    authorize(request, 'drain');
    const state = drain.end();
    metrics.countRequest('/v1/drain', 'DELETE', 200);
    void reply.type('application/json');
    return JSON.stringify({ drain: state });
  });

  tls?.attach(app.server as unknown as TlsServer);
  await app.ready();

  let closed = false;
  return {
    app,
    backpressure,
    metrics,
    idempotency,
    apiKeys,
    tls,
    drain,
    get adminUrl() {
      return adminUrl;
    },
    async listen(port = config.listen.port, adminPort = adminPortOf(config.listen, port)) {
      const url = await app.listen({ host: config.listen.host, port });
      const host = config.listen.admin.host;
      await new Promise<void>((resolve, reject) => {
        adminServer.once('error', reject);
        adminServer.listen(adminPort, host, () => {
          adminServer.off('error', reject);
          resolve();
        });
      });
      const address = adminServer.address();
      adminUrl = urlOf(
        tls === undefined ? 'http' : 'https',
        host,
        typeof address === 'object' && address !== null ? address.port : adminPort,
      );
      return url;
    },
    beginDrain() {
      backpressure.beginDrain();
    },
    async close() {
      if (closed) return;
      closed = true;
      backpressure.beginDrain();
      drain.stop();
      // server.close() closes the connections idle at that moment only; a keep-alive
      // connection whose request was in flight turns idle later and would hold close()
      // open until keepAliveTimeoutMs. Sweep until everything is closed.
      const adminClosed = new Promise<void>((resolve) => {
        if (!adminServer.listening) resolve();
        else adminServer.close(() => resolve());
      });
      const sweeper = setInterval(() => {
        app.server.closeIdleConnections();
        adminServer.closeIdleConnections();
      }, 50);
      try {
        await app.close();
        adminServer.closeIdleConnections();
        await adminClosed;
      } finally {
        clearInterval(sweeper);
        backpressure.stop();
        tls?.close();
        if (ownsKeys) apiKeys?.close();
      }
    },
  };
}
