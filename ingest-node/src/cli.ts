#!/usr/bin/env node
// The `landfall` command. Each subcommand is one entry in `commands`: later
// issues add expand, verify, commits, views and reprocess by appending an
// entry (its run() living in its own module), nothing else changes.
//
//   landfall serve [--config FILE] [--<block>.<key>=VALUE …]
//   landfall drain [--timeout-ms N] [--config FILE] [--<block>.<key>=VALUE …]
//   landfall --help | --version | <command> --help

import { hostname } from 'node:os';
import { jsonLogger } from './log.ts';
import { ConfigError, loadConfig } from './config/load.ts';
import { configLeaves } from './config/schema.ts';
import type { NodeConfig } from './config/schema.ts';
import { VERSION } from './config/version.ts';
import { startNode } from './node.ts';
import { deliveryCommands } from './commands/index.ts';
import { drainCommand } from './commands/drain.ts';
import { icebergCommand } from './commands/iceberg.ts';
import { reprocessCommand } from './commands/reprocess.ts';
import { viewsCommand } from './commands/views.ts';

export interface CliIo {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly isTTY: boolean;
}

export interface CliCommand {
  readonly name: string;
  /** One line for `landfall --help`. */
  readonly summary: string;
  /** The full text of `landfall <name> --help`. */
  help(): string;
  /** Resolves the process exit code. */
  run(args: readonly string[], io: CliIo): Promise<number>;
}

export { jsonLogger };

const reachable = (url: string): string =>
  url.replace('//0.0.0.0', '//127.0.0.1').replace('//[::]', '//127.0.0.1');

function firstEventHint(url: string, adminUrl: string, authEnabled: boolean): string {
  const target = reachable(url);
  const admin = reachable(adminUrl);
  return [
    '',
    `  Landfall ${VERSION} is listening on ${url}. Send a first event:`,
    '',
    `    curl -sS -X POST ${target}/v1/ingest \\`,
    // HTTPS (listen.tls): curl must trust whatever signed the node's certificate.
    ...(url.startsWith('https:') ? ['      --cacert <the CA that signed listen.tls.certFile> \\'] : []),
    "      -H 'Content-Type: application/x-ndjson' \\",
    ...(authEnabled ? ["      -H 'X-API-Key: <a key from auth.apiKeysFile>' \\"] : []),
    `      --data-binary $'{"event":"hello","user":"u1"}\\n{"event":"click","user":"u2"}\\n'`,
    '',
    `  Status: curl -sS ${admin}/v1/status    Metrics: ${admin}/metrics   (the admin port, listen.admin)`,
    '',
  ].join('\n');
}

function serveHelp(): string {
  const rows = configLeaves().map((l) => {
    const d: unknown = l.schema.default;
    const def = d === undefined ? '' : ` (default ${JSON.stringify(d)})`;
    return `  ${l.flag}${def}\n      env ${l.env}`;
  });
  return [
    'landfall serve [--config FILE] [--<block>.<key>=VALUE ...]',
    '',
    'Runs an ingest node: POST /v1/ingest, /healthz, /readyz on listen.port; /metrics, /v1/status on listen.admin.port.',
    'Config sources, lowest precedence first: defaults < --config FILE (YAML or JSON, or LANDFALL_CONFIG)',
    '< LANDFALL_* environment variables < flags. Unknown keys are errors. Reference: docs/configuration.md.',
    '',
    'Without auth.apiKeysFile it serves without authentication, on a loopback address only.',
    '',
    'Keys:',
    ...rows,
    '',
  ].join('\n');
}

const serve: CliCommand = {
  name: 'serve',
  summary: 'run an ingest node (HTTP API + WAL)',
  help: serveHelp,
  async run(args, io) {
    let config: NodeConfig;
    try {
      config = loadConfig({ args, env: io.env, hostname: hostname() });
    } catch (err) {
      if (err instanceof ConfigError) {
        io.err(`landfall serve: ${err.message}\n`);
        return 2;
      }
      throw err;
    }
    const log = jsonLogger(config.log.level, io.out);
    let node;
    try {
      node = await startNode(config, { log, handleSignals: true });
    } catch (err) {
      // Files the config names that turn out wrong (listen.tls) are config errors too.
      if (err instanceof ConfigError) {
        io.err(`landfall serve: ${err.message}\n`);
        return 2;
      }
      log.error({ err }, 'could not start');
      return 1;
    }
    if (io.isTTY || !node.authEnabled)
      io.err(firstEventHint(node.url, node.adminUrl, node.authEnabled) + '\n');
    return (await node.stopped) ? 0 : 1;
  },
};

/** Every subcommand. Add new ones here (one entry each). */
export const commands: readonly CliCommand[] = [
  serve,
  drainCommand,
  ...deliveryCommands,
  viewsCommand,
  reprocessCommand,
  icebergCommand,
];

function mainHelp(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    `landfall ${VERSION}: HTTP → S3 ingest for Kubernetes`,
    '',
    'Usage: landfall <command> [options]',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Options:',
    '  --help       show this help (or `landfall <command> --help`)',
    '  --version    print the version',
    '',
  ].join('\n');
}

export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
    io.out(mainHelp());
    return first === undefined ? 2 : 0;
  }
  if (first === '--version' || first === '-v' || first === 'version') {
    io.out(`${VERSION}\n`);
    return 0;
  }
  const command = commands.find((c) => c.name === first);
  if (command === undefined) {
    io.err(`landfall: unknown command "${first}"\n\n${mainHelp()}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.out(command.help());
    return 0;
  }
  return command.run(rest, io);
}

if (import.meta.main) {
  const io: CliIo = {
    out: (t) => void process.stdout.write(t),
    err: (t) => void process.stderr.write(t),
    env: process.env,
    isTTY: process.stderr.isTTY,
  };
  main(process.argv.slice(2), io).then(
    (code) => {
      process.exitCode = code;
      // Whatever handle a library left open must not keep a stopped node alive.
      setTimeout(() => process.exit(code), 2000).unref();
    },
    (err: unknown) => {
      process.stderr.write(`landfall: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
