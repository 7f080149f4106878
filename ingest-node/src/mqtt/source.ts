// The MQTT source: the node subscribes to brokers as a client and writes every
// message into the same WAL (and the same group commit) as HTTP, one frame per
// message with its topic (RecordFormat.mqtt, see docs/wal-format.md).
//
// Acknowledgement is the whole point. A QoS 1 message is PUBACKed only after
// the WAL append holding it resolved, i.e. after an fdatasync that began after
// it was written. Until then the broker owns it: if the node dies, the broker
// redelivers it on the persistent session (clean: false, stable client id).
// Duplicates are possible (at-least-once), loss is not.
//
// How that is done with mqtt.js (v5): the client calls `handleMessage(packet,
// cb)` for each PUBLISH and sends the PUBACK when cb() is called without an
// error; it handles the next packet only after that. Waiting in handleMessage
// for the fsync would therefore allow one message per fsync per connection.
// Instead, for QoS 1 we call cb(DEFERRED_ACK): mqtt.js then sends no PUBACK and
// moves on to the next packet, so the messages of a burst collect into one WAL
// append; when it resolves we send each PUBACK ourselves, in arrival order (the
// order MQTT requires), on the connection the message came in on. That last
// part uses mqtt.js's `_sendPacket`, an internal method: it is checked for at
// start-up, and test/e2e/mqtt*.test.ts prove the behaviour against Mosquitto.
//
// Flow control: at most `inflightMessagesMax` messages are held per broker
// (received, not yet durable). MQTT 5 announces it as Receive Maximum, so the
// broker stops sending unacknowledged QoS 1 messages at that point; past it
// (QoS 0 floods, MQTT 3.1.1 brokers) handleMessage keeps its callback, which
// stops mqtt.js reading the socket (TCP backpressure; PINGRESP is not read either,
// so meanwhile the source sends the PINGREQs and holds off mqtt.js's keepalive
// timeout, see #keepaliveWhileBlocked). Message bytes (plus the
// per-record overhead, as for HTTP) are also claimed from the node's in-flight
// byte budget shared with HTTP.
//
// Backpressure: while the node refuses writes (WAL backlog, disk low, WAL
// failed, draining) no append starts; unacknowledged messages stay with the
// broker, which queues what follows in the session. A 100 ms poll resumes once
// the watermarks allow (their hysteresis is the Backpressure's).

import { createHash } from 'node:crypto';
import { access, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import mqtt from 'mqtt';
import type { Duplex } from 'node:stream';
import type { IClientOptions, IConnackPacket, IPublishPacket, ISubscriptionGrant, MqttClient } from 'mqtt';
import type { Logger } from '../log.ts';
import { RECORD_OVERHEAD_BYTES } from '../backpressure.ts';
import type { Backpressure } from '../backpressure.ts';
import { OverloadedError } from '../errors.ts';
import type { LandfallError } from '../errors.ts';
import { encodeMqttPayload } from '../wal/format.ts';
import { RecordFormat, WalErrorCode } from '../wal/types.ts';
import type { WriteAheadLog } from '../wal/types.ts';
import type { BrokerCounters } from './metrics.ts';
import { readSecrets } from './options.ts';
import { PacketSizeGuard } from './packet-guard.ts';
import type { BrokerSecrets, MqttConfig, ReadFileFn, ResolvedBroker } from './options.ts';

/** Opens an mqtt.js client; tests pass their own. */
export type MqttConnect = (url: string, options: IClientOptions) => MqttClient;
export const defaultConnect: MqttConnect = (url, options) => mqtt.connect(url, options);

/** What the source needs of the node's admission control. */
export type MqttBackpressure = Pick<Backpressure, 'admit' | 'tryReserve' | 'release'>;

/** Passed to mqtt.js's handleMessage callback: "do not PUBACK, go on reading". Never surfaces. */
const DEFERRED_ACK = new Error('PUBACK deferred until the WAL append resolves');
/** How often a paused source re-asks backpressure (bounds resume latency; admit() is cheap). */
const PAUSE_POLL_MS = 100;
const APPEND_RETRY_MIN_MS = 100;
const APPEND_RETRY_MAX_MS = 5_000;
/** Warn about oversize messages at most this often (a device may send many). */
const OVERSIZE_WARN_INTERVAL_MS = 60_000;

interface Conn {
  readonly n: number;
  readonly connectedAtMs: number;
  open: boolean;
}

interface Item {
  readonly record: Uint8Array;
  readonly qos: 0 | 1;
  readonly messageId: number | undefined;
  /** The connection it arrived on: a PUBACK is only valid there. */
  readonly conn: Conn;
  /** Bytes claimed from the in-flight budget (released when the append settles). */
  reserved: number;
}

interface Blocked {
  readonly item: Item;
  readonly callback: (err?: Error) => void;
}

interface MqttInternals {
  _sendPacket(packet: { cmd: 'puback'; messageId: number }, cb?: (err?: Error) => void): void;
  readonly stream?: { cork?(): void; uncork?(): void; readonly destroyed?: boolean };
}

/** mqtt.js's keepalive (public API; a test's scripted client may lack it). */
interface MqttKeepalive {
  readonly connected?: boolean;
  readonly keepalive?: number;
  sendPing?(): void;
  reschedulePing?(force?: boolean): void;
}

export interface BrokerSourceOptions {
  readonly broker: ResolvedBroker;
  readonly mqtt: MqttConfig;
  readonly wal: Pick<WriteAheadLog, 'append'>;
  readonly backpressure: MqttBackpressure;
  readonly log: Logger;
  readonly counters: BrokerCounters;
  readonly connect: MqttConnect;
  readonly readFile?: ReadFileFn;
  /** [0, 1): jitter of the reconnect delay. */
  readonly random: () => number;
  /** limits.recordBytesMax: larger messages are written anyway, counted and logged. */
  readonly recordBytesMax: number;
  /** The WAL's own bound on one record: larger messages cannot be stored at all. */
  readonly walRecordBytesMax: number;
  /** limits.inflightBytesMax: a message must fit it (with the per-record overhead) to be admitted ever. */
  readonly inflightBytesMax: number;
  /** Where the source remembers it had a session (see MqttSourceDeps.stateDir). */
  readonly stateDir?: string;
}

/**
 * Throws if the CA, certificate and key would not make a TLS context (a key that does not
 * match the certificate, an empty or truncated PEM), as tls.connect would, synchronously.
 */
function checkTlsMaterial(s: BrokerSecrets): void {
  if (s.ca === undefined && s.cert === undefined && s.key === undefined) return;
  createSecureContext({
    ...(s.ca !== undefined ? { ca: s.ca } : {}),
    ...(s.cert !== undefined ? { cert: s.cert } : {}),
    ...(s.key !== undefined ? { key: s.key } : {}),
  });
}

/** One broker connection: subscribe, buffer, append, acknowledge, reconnect. */
export class BrokerSource {
  readonly #o: BrokerSourceOptions;
  readonly #log: Logger;
  readonly #c: BrokerCounters;
  #client: MqttClient | undefined;
  #secrets: BrokerSecrets = {};
  #conn: Conn | undefined;
  #connSeq = 0;
  #everConnected = false;
  /** The session marker file, when a state directory was given. */
  readonly #sessionFile: string | undefined;
  /** A session was established with this broker and client id before (by this process or an earlier one). */
  #hadSession = false;
  #sessionWrite: Promise<void> | undefined;
  /** Received, not yet handed to the WAL, in arrival order. */
  readonly #pending: Item[] = [];
  /** The append in progress (at most one per connection keeps PUBACKs in order). */
  #appending: Item[] | undefined;
  /** A message that did not fit the bounds: mqtt.js reads nothing more until it is taken. */
  #blocked: Blocked | undefined;
  #flushScheduled = false;
  #paused = false;
  #pauseReason: string | undefined;
  #pollTimer: NodeJS.Timeout | undefined;
  /** When the last PINGREQ was sent on mqtt.js's behalf while a callback is held. */
  #blockedPingMs: number | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #retryDelayMs = 0;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #reconnectAttempt = 0;
  #stopping = false;
  /** Set during stop: the final flush ignores backpressure (the node is draining on purpose). */
  #draining = false;
  #idleWaiters: (() => void)[] = [];
  #lastOversizeWarnMs = Number.NEGATIVE_INFINITY;
  /**
   * The largest message (record bytes) this source can store: one WAL record, and a cost
   * (bytes + per-record overhead) the in-flight byte budget can admit once it is free.
   * A larger one could never be admitted: held for ever, it would stall the session.
   */
  readonly #messageBytesMax: number;

  constructor(options: BrokerSourceOptions) {
    this.#o = options;
    this.#sessionFile =
      options.stateDir === undefined
        ? undefined
        : join(
            options.stateDir,
            `mqtt-session-${createHash('sha256')
              .update(`${options.broker.url}\0${options.broker.clientId}`)
              .digest('hex')
              .slice(0, 16)}.json`,
          );
    this.#messageBytesMax = Math.max(
      0,
      Math.min(options.walRecordBytesMax, options.inflightBytesMax - RECORD_OVERHEAD_BYTES),
    );
    this.#c = options.counters;
    this.#log = options.log;
  }

  get name(): string {
    return this.#o.broker.name;
  }

  /** Reads the secrets (rejects if a file is unreadable) and starts connecting; does not wait for the broker. */
  async start(): Promise<void> {
    this.#warnCleartextPassword();
    this.#secrets = await readSecrets(this.#o.broker.config, this.#o.readFile);
    this.#hadSession = await this.#readSessionMarker();
    const client = this.#o.connect(this.#o.broker.url, this.#clientOptions());
    if (typeof (client as unknown as Partial<MqttInternals>)._sendPacket !== 'function') {
      client.end(true);
      throw new Error(
        'mqtt.js has no _sendPacket: the MQTT source cannot send deferred PUBACKs with this version',
      );
    }
    this.#client = client;
    this.#guardPacketSize(client);
    client.handleMessage = (packet, callback) => this.#onPublish(packet, callback);
    client.on('connect', (connack) => this.#onConnect(connack));
    client.on('close', () => this.#onClose());
    client.on('error', (err) => {
      this.#log.warn({ broker: this.name, err }, 'MQTT connection error');
    });
    this.#log.info(
      { broker: this.name, url: this.#o.broker.url, clientId: this.#o.broker.clientId },
      'MQTT: connecting',
    );
    client.connect();
  }

  /**
   * A password sent over mqtt:// or ws:// crosses the network in clear. Not
   * refused (an in-cluster broker Service without TLS is a common setup, its
   * traffic on the pod network), but said once at start, unless the broker is
   * on this host.
   */
  #warnCleartextPassword(): void {
    const b = this.#o.broker;
    if (b.config.passwordFile === undefined) return;
    const url = new URL(b.url);
    if (url.protocol === 'mqtts:' || url.protocol === 'wss:') return;
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (host === 'localhost' || host === '::1' || /^127\./.test(host)) return;
    this.#log.warn(
      { broker: this.name, url: b.url },
      'MQTT: the broker password is sent in clear (the url is not mqtts:// or wss://); use TLS unless the network between node and broker is trusted',
    );
  }

  /**
   * MQTT 3.1.1 has no Maximum Packet Size: a PUBLISH too large to store would be buffered
   * whole by mqtt-packet (up to 256 MiB) before #onPublish could refuse it. Each connection's
   * bytes also go through a PacketSizeGuard, which closes the connection at a QoS 1 such
   * packet's fixed header (the connection is closed for it anyway: the broker keeps it). A
   * QoS 0 one is left to #onPublish, which drops it alone: closing the connection for it
   * would lose every QoS 0 message behind it and while reconnecting; its memory is bounded
   * by the broker's max_packet_size (docs/edge.md). (MQTT 5 brokers do not send either:
   * the bound is announced in CONNECT.)
   */
  #guardPacketSize(client: MqttClient): void {
    if (this.#o.mqtt.protocolVersion !== 4) return;
    const c = client as unknown as { streamBuilder?: (client: MqttClient) => Duplex };
    const build = c.streamBuilder;
    if (typeof build !== 'function') return; // a test's scripted client
    c.streamBuilder = (cl) => {
      const stream = build(cl);
      const guard = new PacketSizeGuard(this.#messageBytesMax, (p) => {
        if (p.qos === 0) return false;
        this.#tooLargeOnTheWire(p.recordBytes);
        stream.destroy();
        return true;
      });
      // Registered before mqtt.js pipes the stream (same tick), so it sees every chunk first.
      stream.on('data', (chunk: Buffer) => guard.push(chunk));
      return stream;
    };
  }

  #clientOptions(): IClientOptions {
    const m = this.#o.mqtt;
    const b = this.#o.broker;
    const s = this.#secrets;
    return {
      protocolVersion: m.protocolVersion,
      clientId: b.clientId,
      // The session (subscriptions, unacknowledged and queued messages) must outlive a crash.
      clean: false,
      keepalive: m.keepaliveSec,
      connectTimeout: m.connectTimeoutMs,
      // Reconnects are ours: bounded exponential backoff with jitter, and secrets re-read first.
      reconnectPeriod: 0,
      manualConnect: true,
      // We subscribe on every CONNACK ourselves (the config is the truth, not the last session).
      resubscribe: false,
      queueQoSZero: false,
      rejectUnauthorized: true,
      ...(b.config.username !== undefined ? { username: b.config.username } : {}),
      ...(s.password !== undefined ? { password: s.password } : {}),
      ...(s.ca !== undefined ? { ca: s.ca } : {}),
      ...(s.cert !== undefined ? { cert: s.cert } : {}),
      ...(s.key !== undefined ? { key: s.key } : {}),
      ...(m.protocolVersion === 5
        ? {
            properties: {
              sessionExpiryInterval: m.sessionExpirySec,
              receiveMaximum: m.inflightMessagesMax,
              // A PUBLISH larger than this could not be stored (one WAL record, within the
              // in-flight byte budget); MQTT 5 brokers must not send it (see docs/edge.md for
              // what that means and how to avoid it). The packet is larger than its record.
              maximumPacketSize: this.#messageBytesMax,
            },
          }
        : {}),
    };
  }

  // ---------------------------------------------------------------------------
  // Connection life cycle

  #onConnect(connack: IConnackPacket): void {
    const conn: Conn = { n: ++this.#connSeq, connectedAtMs: performance.now(), open: true };
    this.#conn = conn;
    this.#c.connected = 1;
    this.#c.connects++;
    const sessionPresent = connack.sessionPresent;
    if (!sessionPresent && (this.#everConnected || this.#hadSession)) {
      this.#c.sessionsLost++;
      this.#log.error(
        { broker: this.name, clientId: this.#o.broker.clientId },
        'MQTT: the broker had no session for the node; messages published while it was away were not queued for it (session expired, or the broker lost its state)',
      );
    }
    this.#everConnected = true;
    if (!this.#hadSession) {
      this.#hadSession = true;
      this.#sessionWrite = this.#writeSessionMarker();
    }
    this.#log.info({ broker: this.name, sessionPresent, connection: conn.n }, 'MQTT: connected');
    this.#subscribe(conn);
  }

  /** True when an earlier run had a session with this broker under this client id. */
  async #readSessionMarker(): Promise<boolean> {
    const file = this.#sessionFile;
    if (file === undefined) return false;
    try {
      await access(file);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.#log.warn({ broker: this.name, file, err }, 'MQTT: cannot read the session marker');
      }
      return false;
    }
  }

  /** Best effort: if it is lost, a later session loss after a restart goes uncounted. */
  async #writeSessionMarker(): Promise<void> {
    const file = this.#sessionFile;
    if (file === undefined) return;
    const b = this.#o.broker;
    const body = `${JSON.stringify({ url: b.url, clientId: b.clientId, since: new Date().toISOString() })}\n`;
    try {
      await writeFile(`${file}.tmp`, body);
      await rename(`${file}.tmp`, file);
    } catch (err) {
      this.#log.warn(
        { broker: this.name, file, err },
        'MQTT: cannot write the session marker; a session lost while the node is down will not be counted',
      );
    }
  }

  #subscribe(conn: Conn): void {
    const client = this.#client;
    if (client === undefined) return;
    const v5 = this.#o.mqtt.protocolVersion === 5;
    const map: Record<string, { qos: 0 | 1; rh?: number }> = {};
    // rh 1 (MQTT 5): retained messages only for a new subscription, not on every reconnect.
    for (const t of this.#o.broker.topics) map[t.filter] = v5 ? { qos: t.qos, rh: 1 } : { qos: t.qos };
    client.subscribe(map, (err, granted?: ISubscriptionGrant[]) => {
      if (!conn.open) return;
      if (err) {
        this.#log.error({ broker: this.name, err }, 'MQTT: subscribe failed; reconnecting');
        this.#c.subscribeFailures++;
        this.#dropConnection();
        return;
      }
      const refused = (granted ?? []).filter((g) => g.qos > 2);
      this.#c.subscribeFailures += refused.length;
      if (refused.length > 0) {
        this.#log.error(
          { broker: this.name, topics: refused.map((g) => ({ filter: g.topic, code: g.qos })) },
          'MQTT: the broker refused these topic filters (check its ACL); the others are subscribed',
        );
      }
      this.#log.info(
        { broker: this.name, topics: (granted ?? []).map((g) => ({ filter: g.topic, qos: g.qos })) },
        'MQTT: subscribed',
      );
    });
  }

  #onClose(): void {
    const conn = this.#conn;
    if (conn !== undefined) {
      conn.open = false;
      this.#conn = undefined;
      // Only a connection that stayed up a while starts the backoff over: one that the broker
      // (ACL, takeover) or we (a message we refuse) keep closing must not reconnect in a tight loop.
      if (performance.now() - conn.connectedAtMs >= this.#o.mqtt.reconnectMaxMs) this.#reconnectAttempt = 0;
      this.#log[this.#stopping ? 'info' : 'warn'](
        { broker: this.name, connection: conn.n },
        'MQTT: connection closed',
      );
    }
    this.#c.connected = 0;
    this.#c.disconnects++;
    // QoS 1 messages not yet handed to the WAL are redelivered on the resumed session:
    // forget them rather than write a copy now and another later. QoS 0 ones are never
    // resent, so they stay and are written.
    let released = 0;
    for (let i = this.#pending.length - 1; i >= 0; i--) {
      const item = this.#pending[i];
      if (item !== undefined && item.qos === 1 && !item.conn.open) {
        released += item.reserved;
        this.#pending.splice(i, 1);
      }
    }
    this.#o.backpressure.release(released);
    const blocked = this.#blocked;
    if (blocked !== undefined && !blocked.item.conn.open) {
      this.#blocked = undefined;
      if (blocked.item.qos === 0) this.#c.countDropped('disconnect');
      // That pump is dead; calling back lets mqtt.js drop it.
      blocked.callback(DEFERRED_ACK);
    }
    this.#updateGauges();
    if (!this.#stopping) this.#scheduleReconnect();
  }

  /** Closes the socket without DISCONNECT; 'close' then schedules a reconnect. */
  #dropConnection(): void {
    (this.#client as unknown as { stream?: { destroy(): void } } | undefined)?.stream?.destroy();
  }

  #scheduleReconnect(): void {
    if (this.#reconnectTimer !== undefined || this.#stopping) return;
    const m = this.#o.mqtt;
    const ceiling = Math.min(m.reconnectMaxMs, m.reconnectMinMs * 2 ** Math.min(this.#reconnectAttempt, 30));
    this.#reconnectAttempt++;
    // Equal jitter: never less than half the step, so a fleet that lost its broker
    // together spreads out without anyone retrying in a tight loop.
    const delayMs = Math.round(ceiling / 2 + (this.#o.random() * ceiling) / 2);
    this.#log.info({ broker: this.name, delayMs, attempt: this.#reconnectAttempt }, 'MQTT: reconnecting');
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      this.#reconnect().catch((err: unknown) => this.#reconnectFailed(err));
    }, delayMs);
    this.#reconnectTimer.unref();
  }

  async #reconnect(): Promise<void> {
    try {
      // Rotated passwords and certificates are picked up here, without a restart. Files
      // caught half-way through a rotation (a new key with the old certificate, an empty
      // or truncated key) are refused here and the previous ones kept: tls.connect would
      // throw on them, and the next attempt re-reads the files anyway.
      const secrets = await readSecrets(this.#o.broker.config, this.#o.readFile);
      checkTlsMaterial(secrets);
      this.#secrets = secrets;
      const client = this.#client;
      if (client !== undefined) Object.assign(client.options, this.#clientOptions());
    } catch (err) {
      this.#log.error({ broker: this.name, err }, 'MQTT: re-reading secrets failed; using the previous ones');
    }
    if (this.#stopping) return;
    try {
      // mqtt.js builds the socket synchronously here (tls.connect throws on bad TLS material).
      this.#client?.reconnect();
    } catch (err) {
      this.#reconnectFailed(err);
    }
  }

  /** A reconnect attempt that threw before it could open a socket: no 'close' follows, so retry from here. */
  #reconnectFailed(err: unknown): void {
    this.#log.error({ broker: this.name, err }, 'MQTT: reconnect attempt failed; retrying');
    this.#scheduleReconnect();
  }

  // ---------------------------------------------------------------------------
  // Messages

  #onPublish(packet: IPublishPacket, callback: (err?: Error) => void): void {
    const conn = this.#conn;
    const qos: 0 | 1 = packet.qos === 0 ? 0 : 1;
    // A destroyed stream: packets mqtt.js still parses from the chunk it was reading when the
    // PacketSizeGuard closed it (the refused packet itself among them: already counted).
    const dead = (this.#client as unknown as MqttInternals | undefined)?.stream?.destroyed === true;
    if (this.#stopping || conn === undefined || dead) {
      // Shutting down, or a packet left in the pump of a connection that closed: read nothing
      // more and acknowledge nothing; QoS 1 comes back next time.
      if (qos === 0) this.#c.countDropped(this.#stopping ? 'shutdown' : 'disconnect');
      return;
    }
    this.#c.received[qos]++;
    if (packet.dup) this.#c.redelivered++;
    const topic = packet.topic;
    const message = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    const topicBytes = Buffer.byteLength(topic);
    const recordBytes = 2 + topicBytes + message.length;
    // A topic over 65535 bytes cannot be framed (encodeMqttPayload would throw, inside mqtt.js's
    // packet loop: a crash). MQTT forbids it, but mqtt-packet turns each invalid UTF-8 byte
    // into a 3-byte U+FFFD, so a broker that forwards invalid UTF-8 could cause one.
    if (recordBytes > this.#messageBytesMax || topicBytes > 0xffff) {
      this.#tooLarge(qos, topic, recordBytes, callback);
      return;
    }
    if (recordBytes > this.#o.recordBytesMax) this.#oversize(topic, recordBytes);
    const item: Item = {
      record: encodeMqttPayload(topic, message),
      qos,
      messageId: packet.messageId,
      conn,
      reserved: 0,
    };
    if (!this.#admitItem(item)) {
      // Over a bound: keep the callback, so mqtt.js stops reading this socket.
      this.#blocked = { item, callback };
      this.#ensurePoll();
      this.#updateGauges();
      return;
    }
    this.#updateGauges();
    this.#scheduleFlush();
    callback(qos === 1 ? DEFERRED_ACK : undefined);
  }

  /** Queues the item if it fits the message bound and the in-flight byte budget. */
  #admitItem(item: Item): boolean {
    const held = this.#pending.length + (this.#appending?.length ?? 0);
    if (held >= this.#o.mqtt.inflightMessagesMax) return false;
    // Each message is one record: charged like an HTTP record, its bytes plus the per-record overhead.
    const cost = item.record.length + RECORD_OVERHEAD_BYTES;
    if (!this.#o.backpressure.tryReserve(cost)) return false;
    item.reserved = cost;
    this.#pending.push(item);
    return true;
  }

  #unblock(): void {
    const blocked = this.#blocked;
    if (blocked === undefined || !this.#admitItem(blocked.item)) return;
    this.#blocked = undefined;
    this.#updateGauges();
    this.#scheduleFlush();
    blocked.callback(blocked.item.qos === 1 ? DEFERRED_ACK : undefined);
  }

  #oversize(topic: string, recordBytes: number): void {
    this.#c.oversize++;
    const now = performance.now();
    if (now - this.#lastOversizeWarnMs < OVERSIZE_WARN_INTERVAL_MS) return;
    this.#lastOversizeWarnMs = now;
    this.#log.warn(
      {
        broker: this.name,
        topic,
        recordBytes,
        recordBytesMax: this.#o.recordBytesMax,
        oversizeTotal: this.#c.oversize,
      },
      'MQTT: message larger than limits.recordBytesMax; written anyway (the broker already accepted it). Logged at most once a minute; see landfall_mqtt_messages_oversize_total',
    );
  }

  /** Log fields of a message too large to store (its topic, when it was read). */
  #tooLargeFields(recordBytes: number, topic?: string): Record<string, unknown> {
    return {
      broker: this.name,
      ...(topic !== undefined
        ? {
            topic: topic.length > 256 ? `${topic.slice(0, 256)}…` : topic,
            topicBytes: Buffer.byteLength(topic),
          }
        : {}),
      recordBytes,
      messageBytesMax: this.#messageBytesMax,
      walRecordBytesMax: this.#o.walRecordBytesMax,
      inflightBytesMax: this.#o.inflightBytesMax,
    };
  }

  /** A QoS 1 PUBLISH refused at its fixed header (MQTT 3.1.1): the connection is closed before it is read. */
  #tooLargeOnTheWire(recordBytes: number): void {
    this.#c.received[1]++;
    this.#c.refusedTooLarge++;
    this.#log.error(
      this.#tooLargeFields(recordBytes),
      'MQTT: QoS 1 message too large to store (a WAL record, or limits.inflightBytesMax); not acknowledged, connection closed before reading it (the broker keeps it). Limit message size at the broker (mosquitto: max_packet_size) — see docs/edge.md',
    );
  }

  #tooLarge(qos: 0 | 1, topic: string, recordBytes: number, callback: (err?: Error) => void): void {
    const fields = this.#tooLargeFields(recordBytes, topic);
    if (qos === 0) {
      this.#c.countDropped('too_large');
      this.#log.error(
        fields,
        'MQTT: QoS 0 message too large to store (a WAL record, or limits.inflightBytesMax); dropped (QoS 0 is never resent)',
      );
      callback();
      return;
    }
    // Never acknowledge what we cannot store. Refusing keeps it with the broker, which resends it
    // on every reconnect: loud, and lossless, until an operator raises the bound or removes it.
    this.#c.refusedTooLarge++;
    this.#log.error(
      fields,
      'MQTT: QoS 1 message too large to store (a WAL record, or limits.inflightBytesMax); not acknowledged, closing the connection (the broker keeps it). Limit message size at the broker (mosquitto: max_packet_size) — see docs/edge.md',
    );
    this.#dropConnection();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    // setImmediate, not a microtask: mqtt.js hands over the packets of one socket read on
    // successive ticks, so a burst lands in one append (one fsync) instead of one each.
    setImmediate(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  #refusal(): LandfallError | undefined {
    if (this.#draining) return undefined;
    const refusal = this.#o.backpressure.admit();
    // The in-flight budget is claimed per message on arrival; refusing to write bytes that
    // are already claimed would only hold them longer.
    if (refusal instanceof OverloadedError) return undefined;
    return refusal;
  }

  #flush(): void {
    if (this.#appending !== undefined || this.#retryTimer !== undefined || this.#pending.length === 0) {
      // Nothing held any more (a closed connection let its QoS 1 messages go, and the broker
      // may have lost them with its session): nothing will come to write, so the pause ends
      // here once the node accepts writes again (the poll calls this while paused).
      if (this.#paused && this.#appending === undefined && this.#pending.length === 0) {
        if (this.#refusal() === undefined) this.#resume();
      }
      this.#unblock();
      return;
    }
    const refusal = this.#refusal();
    if (refusal !== undefined) {
      this.#pause(refusal.code);
      return;
    }
    this.#resume();
    const batch = this.#pending.splice(0, this.#pending.length);
    this.#appending = batch;
    this.#updateGauges();
    void this.#o.wal
      .append(
        batch.map((m) => m.record),
        RecordFormat.mqtt,
      )
      .then(
        () => this.#appended(batch),
        (err: unknown) => this.#appendFailed(batch, err),
      );
  }

  #appended(batch: Item[]): void {
    this.#appending = undefined;
    this.#retryDelayMs = 0;
    let released = 0;
    let bytes = 0;
    const client = this.#client as unknown as MqttInternals | undefined;
    // One writev for the batch's PUBACKs instead of a syscall each.
    const stream = client?.stream;
    stream?.cork?.();
    for (const m of batch) {
      released += m.reserved;
      bytes += m.record.length;
      if (m.qos === 0 || m.messageId === undefined) continue;
      // A PUBACK is only meaningful on the connection the PUBLISH came in on: on a new
      // session the same packet id may name a different message.
      // (mqtt.js's own `connected` too: its _sendPacket would queue a PUBACK for the next connection.)
      if (m.conn.open && m.conn === this.#conn && client !== undefined && this.#client?.connected === true) {
        client._sendPacket({ cmd: 'puback', messageId: m.messageId });
        this.#c.acked++;
      } else {
        this.#c.ackSkipped++;
      }
    }
    stream?.uncork?.();
    this.#c.written += batch.length;
    this.#c.writtenBytes += bytes;
    this.#o.backpressure.release(released);
    this.#afterAppend();
  }

  #appendFailed(batch: Item[], err: unknown): void {
    this.#appending = undefined;
    const code = (err as { code?: unknown }).code;
    const codeText = typeof code === 'string' ? code : 'unknown';
    this.#c.countAppendFailure(codeText);
    // Nothing of a failed append is durable: the messages go back to the front, in order.
    // QoS 1 ones whose connection is gone will be redelivered, so they are let go.
    let released = 0;
    const keep: Item[] = [];
    for (const m of batch) {
      if (m.qos === 1 && !m.conn.open) released += m.reserved;
      else keep.push(m);
    }
    this.#o.backpressure.release(released);
    this.#pending.unshift(...keep);
    if (this.#stopping) {
      this.#afterAppend();
      return;
    }
    this.#retryDelayMs = Math.min(APPEND_RETRY_MAX_MS, Math.max(APPEND_RETRY_MIN_MS, this.#retryDelayMs * 2));
    const level = codeText === WalErrorCode.recordTooLarge ? 'error' : 'warn';
    this.#log[level](
      { broker: this.name, err, messages: batch.length, retryInMs: this.#retryDelayMs },
      'MQTT: WAL append failed; nothing acknowledged, retrying',
    );
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#flush();
    }, this.#retryDelayMs);
    this.#retryTimer.unref();
    this.#afterAppend();
  }

  #afterAppend(): void {
    this.#updateGauges();
    for (const w of this.#idleWaiters.splice(0)) w();
    if (this.#stopping) return;
    this.#unblock();
    if (this.#pending.length > 0) this.#scheduleFlush();
  }

  // ---------------------------------------------------------------------------
  // Backpressure

  #pause(reason: string): void {
    if (!this.#paused || this.#pauseReason !== reason) {
      this.#log.warn(
        { broker: this.name, reason, pending: this.#pending.length },
        'MQTT: node not accepting writes; holding acknowledgements (the broker keeps the messages)',
      );
    }
    this.#paused = true;
    this.#pauseReason = reason;
    this.#c.paused = 1;
    this.#ensurePoll();
  }

  #resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#pauseReason = undefined;
    this.#c.paused = 0;
    this.#log.info({ broker: this.name, pending: this.#pending.length }, 'MQTT: accepting writes again');
  }

  #ensurePoll(): void {
    if (this.#pollTimer !== undefined || this.#stopping) return;
    this.#pollTimer = setInterval(() => {
      if (!this.#paused && this.#blocked === undefined) {
        clearInterval(this.#pollTimer);
        this.#pollTimer = undefined;
        this.#blockedPingMs = undefined;
        return;
      }
      this.#flush();
      this.#keepaliveWhileBlocked();
    }, PAUSE_POLL_MS);
    this.#pollTimer.unref();
  }

  /**
   * While a callback is held mqtt.js reads nothing, PINGRESP included, so its keepalive
   * would close the connection after 1.5 × keepalive, and the held messages would be
   * redelivered, again and again for as long as the node is paused. Meanwhile the source
   * stands in for it: a PINGREQ every half keepalive (the broker needs a packet from us
   * within 1.5 × keepalive), and mqtt.js's timeout held off. A connection that died
   * meanwhile is found when a write fails, or by mqtt.js's keepalive once reading resumes.
   */
  #keepaliveWhileBlocked(): void {
    const client = this.#client as unknown as MqttKeepalive | undefined;
    if (this.#blocked === undefined || client?.connected !== true) {
      this.#blockedPingMs = undefined;
      return;
    }
    const keepaliveMs = (client.keepalive ?? this.#o.mqtt.keepaliveSec) * 1000;
    if (keepaliveMs <= 0) return;
    const now = performance.now();
    // The first one at once: mqtt.js's last PINGREQ may be up to a keepalive old.
    if (this.#blockedPingMs === undefined || now - this.#blockedPingMs >= keepaliveMs / 2) {
      client.sendPing?.();
      this.#blockedPingMs = now;
    }
    client.reschedulePing?.(true);
  }

  #updateGauges(): void {
    this.#c.pending =
      this.#pending.length + (this.#appending?.length ?? 0) + (this.#blocked === undefined ? 0 : 1);
  }

  // ---------------------------------------------------------------------------
  // Stop

  /**
   * Stops reading, writes what is held (ignoring backpressure: the node is draining),
   * sends those PUBACKs, then disconnects (the session stays). Resolves true when all
   * of it finished before `deadlineMs` (monotonic, performance.now()).
   */
  async stop(deadlineMs: number): Promise<boolean> {
    if (this.#stopping) return true;
    this.#stopping = true;
    for (const t of [this.#reconnectTimer, this.#retryTimer]) if (t !== undefined) clearTimeout(t);
    this.#reconnectTimer = undefined;
    this.#retryTimer = undefined;
    if (this.#pollTimer !== undefined) clearInterval(this.#pollTimer);
    this.#pollTimer = undefined;
    let ok = true;
    const blocked = this.#blocked;
    if (blocked !== undefined) {
      // Its bytes were never claimed; the final append may take it anyway.
      this.#blocked = undefined;
      this.#pending.push(blocked.item);
    }
    this.#draining = true;
    if (!(await this.#idle(deadlineMs))) ok = false;
    if (ok && this.#pending.length > 0 && this.#appending === undefined) {
      this.#flush();
      if (!(await this.#idle(deadlineMs))) ok = false;
    }
    const lostQos0 = this.#pending.filter((m) => m.qos === 0).length;
    if (lostQos0 > 0) this.#c.countDropped('shutdown', lostQos0);
    this.#o.backpressure.release(this.#pending.reduce((n, m) => n + m.reserved, 0));
    this.#pending.length = 0;
    this.#updateGauges();
    await this.#sessionWrite;
    const client = this.#client;
    if (client !== undefined) {
      const remaining = Math.max(0, deadlineMs - performance.now());
      const ended = new Promise<boolean>((resolveEnd) => {
        const timer = setTimeout(() => resolveEnd(false), Math.min(remaining, 5_000));
        // A clean DISCONNECT: with clean: false the broker keeps the session and queues for it.
        client.end(false, {}, () => {
          clearTimeout(timer);
          resolveEnd(true);
        });
      });
      if (!(await ended)) {
        ok = false;
        client.end(true);
      }
    }
    this.#log.info({ broker: this.name, ok }, 'MQTT: stopped');
    return ok;
  }

  /** Resolves true once no append is in flight, false at the deadline. */
  #idle(deadlineMs: number): Promise<boolean> {
    if (this.#appending === undefined) return Promise.resolve(true);
    return new Promise((resolveIdle) => {
      const timer = setTimeout(() => resolveIdle(false), Math.max(0, deadlineMs - performance.now()));
      this.#idleWaiters.push(() => {
        clearTimeout(timer);
        resolveIdle(true);
      });
    });
  }

  /**
   * Messages in a WAL append under way: once it is durable they are
   * acknowledged, so a draining node is not drained before it ends (messages
   * only held, never appended, stay with the broker and need not be waited for).
   */
  get appendingMessages(): number {
    return this.#appending?.length ?? 0;
  }

  status(): Record<string, unknown> {
    return {
      broker: this.name,
      url: this.#o.broker.url,
      clientId: this.#o.broker.clientId,
      connected: this.#c.connected === 1,
      paused: this.#paused,
      pauseReason: this.#pauseReason ?? null,
      pending: this.#c.pending,
      acked: this.#c.acked,
      written: this.#c.written,
    };
  }
}
