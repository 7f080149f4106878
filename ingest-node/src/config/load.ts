// Builds the node config from its sources, lowest precedence first:
//   schema defaults < config file (YAML or JSON) < LANDFALL_* env < --flags
// and validates the merged result once. Every problem is reported at the same
// time, each naming the key's path and the source it came from, because a pod
// in CrashLoopBackOff should say everything wrong in one log line.

import { readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { extname } from 'node:path';
import { load as loadYaml } from 'js-yaml';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { TypeCheck } from '@sinclair/typebox/compiler';
import { Value } from '@sinclair/typebox/value';
import type { TObject, TSchema } from '@sinclair/typebox';
import { NodeConfigSchema, adminPortOf, configLeaves } from './schema.ts';
import type { ConfigLeaf, NodeConfig } from './schema.ts';
import { RECORD_OVERHEAD_BYTES } from '../backpressure.ts';
import { icebergAuthProblems } from '../iceberg/settings.ts';

/** Env vars with the LANDFALL_ prefix that are not config keys. */
const RESERVED_ENV = new Set(['LANDFALL_CONFIG']);

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export interface LoadConfigOptions {
  /** Command-line arguments after the subcommand: `--config FILE` and `--<dotted.key>[=value]`. */
  readonly args?: readonly string[];
  /** Defaults to no env at all, so tests never pick up the caller's environment by accident. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** A config file; `--config` in args and LANDFALL_CONFIG in env override it in that order. */
  readonly configFile?: string;
  /** Values given in code (embedding, tests): above the file, below env and flags. Checked like a file. */
  readonly values?: Readonly<Record<string, unknown>>;
  /** Used when instance.id is unset. */
  readonly hostname?: string;
}

type Source = string;
type Plain = Record<string, unknown>;

let compiled: TypeCheck<typeof NodeConfigSchema> | undefined;
const leafByDotted = new Map<string, ConfigLeaf>();
const leafByEnv = new Map<string, ConfigLeaf>();
for (const leaf of configLeaves()) {
  leafByDotted.set(leaf.dotted, leaf);
  leafByEnv.set(leaf.env, leaf);
}

function isPlainObject(v: unknown): v is Plain {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses --flags into dotted keys; `--config` is pulled out separately. */
function parseArgs(
  args: readonly string[],
  problems: string[],
): { configFile?: string; values: Map<string, string> } {
  const values = new Map<string, string>();
  let configFile: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? '';
    if (!arg.startsWith('--')) {
      problems.push(`unexpected argument "${arg}" (flags look like --wal.dir=./data)`);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    let value = eq === -1 ? undefined : arg.slice(eq + 1);
    const leaf = leafByDotted.get(name);
    const isBool = leaf !== undefined && leaf.schema.type === 'boolean';
    if (value === undefined) {
      const next = args[i + 1];
      if (isBool && (next === undefined || next.startsWith('--'))) value = 'true';
      else if (next !== undefined && !next.startsWith('--')) {
        value = next;
        i++;
      }
    }
    if (name === 'config') {
      if (value === undefined) problems.push('--config needs a file path');
      else configFile = value;
      continue;
    }
    if (leaf === undefined) {
      problems.push(`unknown flag --${name}${suggest(name)}`);
      continue;
    }
    if (value === undefined) {
      problems.push(`flag --${name} needs a value`);
      continue;
    }
    values.set(name, value);
  }
  return configFile === undefined ? { values } : { configFile, values };
}

function suggest(dotted: string): string {
  const block = dotted.split('.')[0] ?? '';
  const siblings = [...leafByDotted.keys()].filter((k) => k.startsWith(block + '.'));
  return siblings.length > 0 ? ` (keys under ${block}: ${siblings.join(', ')})` : '';
}

/** Turns an env/flag string into the leaf's type; leaves it as a string when it cannot, so validation names it. */
function coerce(schema: TSchema, raw: string): unknown {
  switch (schema.type) {
    case 'integer':
    case 'number':
      return /^-?\d+(\.\d+)?$/.test(raw.trim()) ? Number(raw.trim()) : raw;
    case 'boolean': {
      const v = raw.trim().toLowerCase();
      if (v === 'true' || v === '1' || v === 'yes') return true;
      if (v === 'false' || v === '0' || v === 'no') return false;
      return raw;
    }
    default:
      return raw;
  }
}

function readConfigFile(file: string, problems: string[]): Plain | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    problems.push(`cannot read config file ${file}: ${(err as Error).message}`);
    return undefined;
  }
  let parsed: unknown;
  try {
    parsed = extname(file).toLowerCase() === '.json' ? JSON.parse(text) : loadYaml(text);
  } catch (err) {
    problems.push(
      `config file ${file} is not valid ${extname(file) === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message}`,
    );
    return undefined;
  }
  if (parsed === undefined || parsed === null) return {};
  if (!isPlainObject(parsed)) {
    problems.push(`config file ${file} must hold a mapping of config blocks at its top level`);
    return undefined;
  }
  return parsed;
}

/** Copies `from` into `into`, recording each leaf's source and rejecting keys the schema does not have. */
function mergeChecked(
  schema: TObject,
  into: Plain,
  from: Plain,
  prefix: readonly string[],
  source: Source,
  sources: Map<string, Source>,
  problems: string[],
): void {
  for (const [key, value] of Object.entries(from)) {
    const path = [...prefix, key];
    const dotted = path.join('.');
    const child = schema.properties[key];
    if (child === undefined) {
      const allowed = Object.keys(schema.properties).join(', ');
      problems.push(
        `unknown key "${dotted}" in ${source}` +
          (prefix.length > 0 ? ` (allowed under ${prefix.join('.')}: ${allowed})` : ` (allowed: ${allowed})`),
      );
      continue;
    }
    if (child.type === 'object' && typeof child.properties === 'object' && isPlainObject(value)) {
      const target = isPlainObject(into[key]) ? into[key] : (into[key] = {});
      mergeChecked(child as TObject, target, value, path, source, sources, problems);
      continue;
    }
    into[key] = value;
    sources.set(dotted, source);
  }
}

function setPath(into: Plain, path: readonly string[], value: unknown): void {
  let node = into;
  for (const seg of path.slice(0, -1)) {
    const next = node[seg];
    node = isPlainObject(next) ? next : (node[seg] = {});
  }
  node[path[path.length - 1] ?? ''] = value;
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h) || h === '::ffff:127.0.0.1';
}

/** A host name made safe for S3 keys: lower case, [a-z0-9._-], at most 63 characters. */
export function instanceIdFromHostname(name: string): string {
  const cleaned = name
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .slice(0, 63)
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '');
  return cleaned.length > 0 ? cleaned : 'node';
}

/** Rules that span keys; the schema checks each key alone. */
function crossCheck(c: NodeConfig, problems: string[]): void {
  const b = c.backpressure;
  if (b.walBytesLow > b.walBytesHigh) {
    problems.push(
      `backpressure.walBytesLow (${b.walBytesLow}) must not exceed backpressure.walBytesHigh (${b.walBytesHigh})`,
    );
  }
  if (b.diskFreeBytesHigh < b.diskFreeBytesLow) {
    problems.push(
      `backpressure.diskFreeBytesHigh (${b.diskFreeBytesHigh}) must be at least backpressure.diskFreeBytesLow (${b.diskFreeBytesLow})`,
    );
  }
  const l = c.limits;
  // A request is charged its decoded bytes plus a fixed overhead per record
  // (backpressure.ts), so the largest legal request costs both maxima at once;
  // a budget below that would refuse it with 503 for ever, a retry loop.
  const largestRequestChargeBytes = l.decodedBytesMax + l.recordsPerRequestMax * RECORD_OVERHEAD_BYTES;
  if (largestRequestChargeBytes > l.inflightBytesMax) {
    problems.push(
      `limits.decodedBytesMax (${l.decodedBytesMax}) + limits.recordsPerRequestMax (${l.recordsPerRequestMax}) × ${RECORD_OVERHEAD_BYTES} bytes per record = ${largestRequestChargeBytes} must not exceed limits.inflightBytesMax (${l.inflightBytesMax}), or a largest request could never be admitted`,
    );
  }
  if (c.http.headersTimeoutMs > c.http.requestTimeoutMs) {
    problems.push(
      `http.headersTimeoutMs (${c.http.headersTimeoutMs}) must not exceed http.requestTimeoutMs (${c.http.requestTimeoutMs})`,
    );
  }
  const t = c.listen.tls;
  if ((t.certFile === undefined) !== (t.keyFile === undefined)) {
    problems.push('listen.tls.certFile and listen.tls.keyFile must be set together');
  }
  if (t.certFile === undefined && (t.clientCaFile !== undefined || t.clientAuth !== 'none')) {
    problems.push('listen.tls.clientCaFile and listen.tls.clientAuth need listen.tls.certFile and keyFile');
  }
  if (t.clientAuth !== 'none' && t.clientCaFile === undefined) {
    problems.push(`listen.tls.clientAuth "${t.clientAuth}" needs listen.tls.clientCaFile`);
  }
  // A CA with clientAuth none checks nothing: refuse it rather than let an
  // operator believe mutual TLS guards a node that accepts anyone.
  if (t.certFile !== undefined && t.clientCaFile !== undefined && t.clientAuth === 'none') {
    problems.push(
      'listen.tls.clientCaFile is set but listen.tls.clientAuth is "none": set it to "require" or "request"',
    );
  }
  const adminPort = adminPortOf(c.listen);
  if (adminPort !== 0 && adminPort === c.listen.port) {
    problems.push(
      `listen.admin.port ${adminPort} is listen.port too: /metrics and /v1/status need a port of their own`,
    );
  }
  if (adminPort > 65535)
    problems.push('listen.port is 65535: set listen.admin.port (its default is listen.port + 1)');
  problems.push(...icebergAuthProblems(c.iceberg.auth, c.iceberg.catalogUri));
  if (c.auth.required === true && c.auth.apiKeysFile === undefined) {
    problems.push('auth.required is true but auth.apiKeysFile is not set');
  }
  if (c.auth.required !== false && c.auth.apiKeysFile === undefined && !isLoopbackHost(c.listen.host)) {
    problems.push(
      `listen.host "${c.listen.host}" is not a loopback address, so API keys are required: set auth.apiKeysFile, or auth.required=false to accept unauthenticated writes`,
    );
  }
  // The admin port can stop the node taking writes (POST /v1/drain) and shows its status: never open without keys.
  if (c.auth.required !== false && c.auth.apiKeysFile === undefined && !isLoopbackHost(c.listen.admin.host)) {
    problems.push(
      `listen.admin.host "${c.listen.admin.host}" is not a loopback address, so API keys are required (the admin port serves /v1/status and /v1/drain): set auth.apiKeysFile, or auth.required=false to accept that`,
    );
  }
}

/**
 * Merges and validates the config. Throws ConfigError listing every problem.
 * Pure apart from reading the config file: env and hostname are passed in.
 */
export function loadConfig(options: LoadConfigOptions = {}): NodeConfig {
  const problems: string[] = [];
  const env = options.env ?? {};
  const parsedArgs = parseArgs(options.args ?? [], problems);
  const merged: Plain = {};
  const sources = new Map<string, Source>();

  const configFile = parsedArgs.configFile ?? env.LANDFALL_CONFIG ?? options.configFile;
  if (configFile !== undefined && configFile !== '') {
    const fromFile = readConfigFile(configFile, problems);
    if (fromFile !== undefined) {
      mergeChecked(NodeConfigSchema, merged, fromFile, [], `config file ${configFile}`, sources, problems);
    }
  }

  if (options.values !== undefined) {
    mergeChecked(NodeConfigSchema, merged, options.values, [], 'values given in code', sources, problems);
  }

  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith('LANDFALL_') || raw === undefined || RESERVED_ENV.has(name)) continue;
    const leaf = leafByEnv.get(name);
    if (leaf === undefined) {
      problems.push(`unknown environment variable ${name} (no config key maps to it)`);
      continue;
    }
    setPath(merged, leaf.path, coerce(leaf.schema, raw));
    sources.set(leaf.dotted, `env ${name}`);
  }

  for (const [dotted, raw] of parsedArgs.values) {
    const leaf = leafByDotted.get(dotted);
    if (leaf === undefined) continue; // already reported by parseArgs
    setPath(merged, leaf.path, coerce(leaf.schema, raw));
    sources.set(dotted, `flag --${dotted}`);
  }

  if (problems.length > 0) throw new ConfigError(problems);

  const withDefaults = Value.Default(NodeConfigSchema, merged);
  compiled ??= TypeCompiler.Compile(NodeConfigSchema);
  for (const e of compiled.Errors(withDefaults)) {
    const dotted = e.path.replace(/^\//, '').replace(/\//g, '.');
    const from = sources.get(dotted);
    problems.push(
      `${dotted === '' ? '(top level)' : dotted}${from === undefined ? '' : ` (from ${from})`}: ${e.message}`,
    );
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const valid = withDefaults as Omit<NodeConfig, 'instance'> & { instance: { id?: string } };
  const config: NodeConfig = {
    ...valid,
    instance: { id: valid.instance.id ?? instanceIdFromHostname(options.hostname ?? osHostname()) },
  };
  crossCheck(config, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

/** The defaults with `overrides` merged in, no env, no file: for tests and embedding. */
export function defaultConfig(
  overrides: Readonly<Record<string, unknown>> = {},
  hostname = 'local',
): NodeConfig {
  return loadConfig({ values: overrides, env: {}, hostname });
}
