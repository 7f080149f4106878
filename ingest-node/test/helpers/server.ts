// Starts an ingest server on 127.0.0.1:0 with a MemoryWal, a fake disk and a
// config built from overrides, and hands back what tests poke at.

import { Registry } from 'prom-client';
import { buildServer } from '../../src/http/server.ts';
import type { IngestServer } from '../../src/http/server.ts';
import type { ApiKeySource } from '../../src/http/auth.ts';
import { defaultConfig } from '../../src/config/load.ts';
import type { NodeConfig } from '../../src/config/schema.ts';
import type { Logger } from '../../src/log.ts';
import { silentLogger } from '../../src/log.ts';
import type { Wal, WalOptions, WriteAheadLog } from '../../src/wal/types.ts';
import { openWal } from '../../src/wal/wal.ts';
import { NodeFileSystem } from '../../src/fs/node.ts';
import { systemClock } from '../../src/clock.ts';
import { MemoryWal } from './memory-wal.ts';
import { FakeClock, FakeDisk } from './fakes.ts';

export interface TestServer<W extends WriteAheadLog = MemoryWal> {
  readonly url: string;
  /** The admin listener (/metrics, /v1/status). */
  readonly adminUrl: string;
  readonly server: IngestServer;
  readonly wal: W;
  readonly clock: FakeClock;
  readonly disk: FakeDisk;
  readonly config: NodeConfig;
  close(): Promise<void>;
}

export interface TestServerOptions<W extends WriteAheadLog> {
  readonly config?: Record<string, unknown>;
  readonly apiKeys?: ApiKeySource | null | undefined;
  readonly wal?: W;
  readonly log?: Logger;
  /** The server's clock; a FakeClock the test moves by hand when absent. */
  readonly clock?: FakeClock;
}

/** The durable WAL on the real disk in `dir`, for a test server's tests of what reaches the segments. */
export function openDiskWal(dir: string, overrides: Partial<WalOptions> = {}): Promise<Wal> {
  return openWal({
    dir,
    endpoint: 'test',
    instance: 'test-0',
    fs: new NodeFileSystem(),
    clock: systemClock,
    log: silentLogger,
    ...overrides,
  });
}

export async function startTestServer<W extends WriteAheadLog = MemoryWal>(
  options: TestServerOptions<W> = {},
): Promise<TestServer<W>> {
  const config = defaultConfig({ ...options.config, listen: { port: 0 } });
  const wal = (options.wal ?? new MemoryWal()) as W;
  const clock = options.clock ?? new FakeClock();
  const disk = new FakeDisk();
  const server = await buildServer({
    config,
    wal,
    clock,
    disk,
    log: options.log ?? silentLogger,
    registry: new Registry(),
    // Auth is off unless the test passes keys, or passes `apiKeys: undefined` to open config.auth.apiKeysFile.
    apiKeys: 'apiKeys' in options ? options.apiKeys : null,
  });
  const url = await server.listen(0, 0);
  return {
    url,
    adminUrl: server.adminUrl ?? '',
    server,
    wal,
    clock,
    disk,
    config,
    async close() {
      await server.close();
    },
  };
}

export interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly json: unknown;
}

/** POST /v1/ingest with fetch; the body is read and parsed when JSON. */
export async function ingest(
  url: string,
  body: string | Uint8Array | ReadableStream<Uint8Array> | undefined,
  headers: Record<string, string> = {},
): Promise<Answer> {
  const res = await fetch(`${url}/v1/ingest`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-ndjson', ...headers },
    ...(body === undefined ? {} : { body }),
    ...(body instanceof ReadableStream ? { duplex: 'half' } : {}),
  });
  return read(res);
}

export async function read(res: Response): Promise<Answer> {
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** The error code of an error answer, or undefined. */
export function codeOf(answer: Answer): string | undefined {
  const j = answer.json as { error?: { code?: string } } | undefined;
  return j?.error?.code;
}

/** Polls a condition every few ms until it holds; fails the test after `timeoutMs`. */
export async function until(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
