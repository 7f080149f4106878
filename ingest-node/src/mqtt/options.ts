// From the `mqtt` config block to what one broker connection needs: a stable
// client id, a metrics label, the topics, and the secrets read from files.
// Checks that span keys live here (the schema checks each key alone), and run
// when the node starts, so a bad block fails the start with every problem listed.

import { readFile } from 'node:fs/promises';
import type { NodeConfig } from '../config/schema.ts';

export type MqttConfig = NodeConfig['mqtt'];
export type MqttBrokerConfig = MqttConfig['brokers'][number];
export type MqttTopicConfig = MqttConfig['topics'][number];

export class MqttConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`invalid mqtt configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'MqttConfigError';
    this.problems = problems;
  }
}

export interface ResolvedBroker {
  readonly config: MqttBrokerConfig;
  /** Metrics label and log field. */
  readonly name: string;
  readonly url: string;
  readonly clientId: string;
  readonly topics: readonly MqttTopicConfig[];
}

const DEFAULT_PORTS: Readonly<Record<string, number>> = {
  'mqtt:': 1883,
  'mqtts:': 8883,
  'ws:': 80,
  'wss:': 443,
};

function labelOf(url: URL): string {
  const port = url.port === '' ? String(DEFAULT_PORTS[url.protocol] ?? 0) : url.port;
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const cleaned = `${host}-${port}`
    .replace(/[^a-z0-9._-]+/g, '-')
    .slice(0, 63)
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '');
  return cleaned === '' ? 'broker' : cleaned;
}

/**
 * The client id the broker knows the node's session by. It must not change
 * across restarts (the session and its queued messages hang off it) and must
 * differ between instances (two connections with one id take each other over).
 */
export function defaultClientId(endpoint: string, instance: string): string {
  return `landfall-${endpoint}-${instance}`;
}

/** Validates the block as a whole and resolves each broker; throws MqttConfigError listing every problem. */
export function resolveBrokers(config: MqttConfig, endpoint: string, instance: string): ResolvedBroker[] {
  const problems: string[] = [];
  if (config.reconnectMinMs > config.reconnectMaxMs) {
    problems.push(
      `mqtt.reconnectMinMs (${config.reconnectMinMs}) must not exceed mqtt.reconnectMaxMs (${config.reconnectMaxMs})`,
    );
  }
  const names = new Set<string>();
  const ids = new Map<string, string>();
  const out: ResolvedBroker[] = [];
  config.brokers.forEach((b, i) => {
    const at = `mqtt.brokers[${i}]`;
    let url: URL;
    try {
      url = new URL(b.url);
    } catch {
      problems.push(`${at}.url "${b.url}" is not a URL`);
      return;
    }
    // Secrets belong in files: a password in the URL would end up in the ConfigMap, logs and metrics.
    if (url.password !== '' || url.username !== '') {
      problems.push(`${at}.url carries credentials: use ${at}.username and ${at}.passwordFile instead`);
      return;
    }
    const secure = url.protocol === 'mqtts:' || url.protocol === 'wss:';
    if (!secure && (b.caFile !== undefined || b.certFile !== undefined || b.keyFile !== undefined)) {
      problems.push(`${at} sets TLS files but its url is ${url.protocol}// (use mqtts:// or wss://)`);
    }
    if ((b.certFile === undefined) !== (b.keyFile === undefined)) {
      problems.push(`${at}.certFile and ${at}.keyFile go together (mutual TLS needs both)`);
    }
    if (b.passwordFile !== undefined && b.username === undefined) {
      problems.push(`${at}.passwordFile is set without ${at}.username`);
    }
    const name = b.name ?? labelOf(url);
    if (names.has(name)) {
      problems.push(`${at}: broker name "${name}" is used twice (set a distinct ${at}.name)`);
    }
    names.add(name);
    const clientId = b.clientId ?? defaultClientId(endpoint, instance);
    // One id twice on one broker: the two connections would take each other over forever.
    const key = `${url.protocol}//${url.host}`;
    const seen = ids.get(key + ' ' + clientId);
    if (seen !== undefined) {
      problems.push(
        `${at} connects to ${url.host} with client id "${clientId}" like ${seen}: set a clientId`,
      );
    }
    ids.set(key + ' ' + clientId, at);
    const topics = b.topics ?? config.topics;
    if (topics.length === 0) problems.push(`${at} has no topics (set mqtt.topics or ${at}.topics)`);
    out.push({ config: b, name, url: b.url, clientId, topics });
  });
  if (problems.length > 0) throw new MqttConfigError(problems);
  return out;
}

export interface BrokerSecrets {
  readonly password?: Buffer;
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

export type ReadFileFn = (path: string) => Promise<Buffer>;

/** Reads the password and TLS files of one broker. A missing or unreadable file rejects naming it. */
export async function readSecrets(b: MqttBrokerConfig, read: ReadFileFn = readFile): Promise<BrokerSecrets> {
  const load = async (path: string | undefined, what: string): Promise<Buffer | undefined> => {
    if (path === undefined) return undefined;
    try {
      return await read(path);
    } catch (err) {
      throw new Error(`cannot read the MQTT ${what} file ${path}: ${(err as Error).message}`, { cause: err });
    }
  };
  const [passwordRaw, ca, cert, key] = await Promise.all([
    load(b.passwordFile, 'password'),
    load(b.caFile, 'CA'),
    load(b.certFile, 'client certificate'),
    load(b.keyFile, 'client key'),
  ]);
  // `echo secret > file` leaves a newline that is not part of the password.
  let password = passwordRaw;
  if (password !== undefined && password[password.length - 1] === 0x0a) {
    const cr = password[password.length - 2] === 0x0d ? 1 : 0;
    password = password.subarray(0, password.length - 1 - cr);
  }
  return {
    ...(password !== undefined ? { password } : {}),
    ...(ca !== undefined ? { ca } : {}),
    ...(cert !== undefined ? { cert } : {}),
    ...(key !== undefined ? { key } : {}),
  };
}
