// Shared by the MQTT tests and the MQTT benchmark: read MQTT records back out
// of a WAL directory, read a metric, a seeded PRNG, a logger that remembers.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Registry } from 'prom-client';
import type { Logger } from '../src/log.ts';
import { decodeMqttPayload, readSegment } from '../src/wal/format.ts';
import { RecordFormat } from '../src/wal/types.ts';

export interface MqttRecord {
  readonly topic: string;
  readonly message: string;
  readonly seq: bigint;
}

/**
 * Every MQTT record in the segment files of `walDir`, in seq order.
 * strict: every file must read cleanly to a batch end (after a graceful stop).
 * Otherwise a file is read up to its first incomplete or bad frame: the open
 * segment of a running node may end mid-write.
 */
export function readMqttRecords(walDir: string, opts: { strict: boolean }): MqttRecord[] {
  const out: MqttRecord[] = [];
  const files = readdirSync(walDir)
    .filter((f) => f.endsWith('.wal'))
    .sort();
  for (const f of files) {
    let bytes: Buffer;
    try {
      bytes = readFileSync(join(walDir, f));
    } catch (err) {
      // A delivered segment may be deleted between readdir and read.
      if (!opts.strict && (err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    try {
      const seg = readSegment(bytes, { requireBatchEnd: opts.strict });
      for (const r of seg.records) {
        if (r.format !== RecordFormat.mqtt) continue;
        const m = decodeMqttPayload(r.payload);
        out.push({ topic: m.topic, message: Buffer.from(m.message).toString('utf8'), seq: r.seq });
      }
    } catch (err) {
      if (opts.strict) throw new Error(`${f}: ${(err as Error).message}`, { cause: err });
    }
  }
  return out;
}

/** The value of one sample of a metric in `registry` (0 when absent), matching every given label. */
export async function metricValue(
  registry: Registry,
  name: string,
  labels: Record<string, string | number> = {},
): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (metric === undefined) return 0;
  const data = await metric.get();
  let sum = 0;
  for (const v of data.values) {
    const l = (v.labels ?? {}) as Record<string, string | number>;
    if (Object.entries(labels).every(([k, want]) => String(l[k]) === String(want))) sum += v.value;
  }
  return sum;
}

// One seeded PRNG for the repo's tests (mulberry32), shared with the power-cut filesystem.
export { seededRandom } from '../src/fs/power-cut.ts';

export interface LogLine {
  readonly level: string;
  readonly msg: string | undefined;
  readonly fields: object;
}

/** A Logger that keeps every line (and can echo them when LANDFALL_TEST_LOG=1). */
export function memoryLogger(): Logger & { readonly lines: LogLine[]; has(msg: string): boolean } {
  const lines: LogLine[] = [];
  const echo = process.env['LANDFALL_TEST_LOG'] === '1';
  const at =
    (level: string) =>
    (fields: object, msg?: string): void => {
      lines.push({ level, msg, fields });
      if (echo)
        console.log(
          level,
          msg,
          JSON.stringify(fields, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v)),
        );
    };
  return {
    lines,
    has: (msg) => lines.some((l) => l.msg?.includes(msg) === true),
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
  };
}

/** Polls `probe` until it returns true, or rejects naming `what` at the deadline. */
export async function until(
  probe: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
  intervalMs = 20,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await probe()) return;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
