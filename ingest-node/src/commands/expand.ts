// `landfall expand`: segments back into records, byte for byte. Sources: local
// `.wal` / `.wal.zst` files, one object key, or every committed segment in a
// range of commit markers (key order). Committed segments are checked against
// their marker (size and sha256 of the exact WAL bytes, record count, seqs);
// a mismatch stops the run with exit code 1.
import { formatMicrosIso } from '../delivery/marker.ts';
import { decodeMqttPayload, type SegmentHeader, type WalRecord } from '../wal/format.ts';
import { RecordFormat } from '../wal/types.ts';
import {
  exitOk,
  getMarker,
  guarded,
  listMarkerKeys,
  openArchive,
  openLocalSegment,
  Output,
  parse,
  progress,
  records,
  selectHelp,
  selectionFromFlags,
  selectOptions,
  storeFromFlags,
  storeHelp,
  storeOptions,
  stringFlag,
  UsageError,
  wantsHelp,
  type Command,
  type CommandIo,
} from './common.ts';
import type { CommitMarker } from '../delivery/marker.ts';
import type { ObjectStore } from '../store/types.ts';

export type ExpandFormat = 'ndjson' | 'recordio' | 'envelope';

export function help(): string {
  return [
    'landfall expand FILE...                         local .wal or .wal.zst files',
    'landfall expand --key KEY [store]               one object: a .wal.zst archive or a commit marker (.json)',
    'landfall expand --endpoint-name NAME [range] [store]   every committed segment in the range, in key order',
    '',
    'Writes the records to stdout, payloads byte for byte:',
    '  --format ndjson     (default) each payload and a newline; a payload holding a newline is an error',
    '  --format recordio   each record as length u32 big-endian | payload (the application/x-recordio wire format)',
    '  --format envelope   one JSON object a line: seq, ingestTime, format, payload (UTF-8) or payloadBase64',
    '  --quiet             no progress or summary on stderr',
    '',
    'Committed segments are checked against their marker (size and SHA-256 of the segment, records, seqs).',
    'Exit code: 0 done, 1 bad data or a failed check, 2 usage.',
    '',
    selectHelp,
    '',
    storeHelp,
    '',
  ].join('\n');
}

const options = {
  ...storeOptions,
  ...selectOptions,
  key: { type: 'string' },
  format: { type: 'string' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const formatNames: Record<number, string> = {
  [RecordFormat.ndjson]: 'ndjson',
  [RecordFormat.json]: 'json',
  [RecordFormat.recordio]: 'recordio',
  [RecordFormat.mqtt]: 'mqtt',
};
const newline = Buffer.from('\n');
const utf8 = new TextDecoder('utf-8', { fatal: true });

function utf8OrUndefined(b: Uint8Array): string | undefined {
  try {
    return utf8.decode(b);
  } catch {
    return undefined;
  }
}

/** The function that writes one record in the chosen format. */
export function recordWriter(format: ExpandFormat, out: Output): (r: WalRecord) => Promise<void> {
  switch (format) {
    case 'ndjson':
      return async (r) => {
        if (r.payload.includes(0x0a))
          throw new Error(
            `record seq ${r.seq} holds a newline, so it cannot be one NDJSON line: use --format recordio or envelope`,
          );
        await out.write(r.payload, newline);
      };
    case 'recordio':
      return async (r) => {
        const len = Buffer.alloc(4);
        len.writeUInt32BE(r.payload.length);
        await out.write(len, r.payload);
      };
    case 'envelope':
      return async (r) => {
        const o: Record<string, unknown> = {
          seq: r.seq.toString(),
          ingestTime: formatMicrosIso(r.ingestMicros),
          format: formatNames[r.format] ?? String(r.format),
        };
        let body = r.payload;
        if (r.format === RecordFormat.mqtt) {
          const m = decodeMqttPayload(r.payload);
          o['topic'] = m.topic;
          body = m.message;
        }
        const text = utf8OrUndefined(body);
        if (text !== undefined) o['payload'] = text;
        else o['payloadBase64'] = Buffer.from(body).toString('base64');
        await out.write(Buffer.from(`${JSON.stringify(o)}\n`));
      };
  }
}

interface Counts {
  segments: number;
  records: number;
}

async function expandMarker(
  store: ObjectStore,
  key: string,
  m: CommitMarker,
  write: (r: WalRecord) => Promise<void>,
  counts: Counts,
): Promise<void> {
  const art = m.artifacts.find((a) => a.kind === 'segment');
  if (art === undefined)
    throw new Error(`${key} lists no segment archive (the Endpoint has outputs.segments off)`);
  const opened = await openArchive(store, art.key);
  if (opened === null) throw new Error(`${art.key} (listed by ${key}) is missing`);
  let header: SegmentHeader | undefined;
  let n = 0;
  let first: bigint | undefined;
  let last: bigint | undefined;
  for await (const r of records(opened.stream, (h) => (header = h))) {
    n++;
    first ??= r.seq;
    last = r.seq;
    await write(r);
  }
  const problems: string[] = [];
  if (opened.tap.bytes !== m.segment.bytes || opened.tap.sha256 !== m.segment.sha256)
    problems.push(
      `segment is ${opened.tap.bytes} bytes sha256 ${opened.tap.sha256}, marker says ${m.segment.bytes} ${m.segment.sha256}`,
    );
  if (n !== m.records) problems.push(`${n} records, marker says ${m.records}`);
  if (first !== m.firstSeq || last !== m.lastSeq)
    problems.push(`seqs ${first}..${last}, marker says ${m.firstSeq}..${m.lastSeq}`);
  if (header !== undefined && (header.segmentId !== m.segmentId || header.epoch !== m.epoch))
    problems.push(`header is segment ${header.segmentId} of epoch ${header.epoch}`);
  if (problems.length > 0) throw new Error(`${art.key} does not match ${key}: ${problems.join('; ')}`);
  counts.segments++;
  counts.records += n;
}

export async function run(args: readonly string[], io: CommandIo): Promise<number> {
  if (wantsHelp(args)) {
    io.out(help());
    return exitOk;
  }
  return guarded('expand', io, help, async () => {
    const { values, positionals } = parse(args, options);
    const format = (stringFlag(values, 'format') ?? 'ndjson') as ExpandFormat;
    if (!['ndjson', 'recordio', 'envelope'].includes(format))
      throw new UsageError(`--format must be ndjson, recordio or envelope`);
    const key = stringFlag(values, 'key');
    const ranged = stringFlag(values, 'endpoint-name') !== undefined;
    const sources = [positionals.length > 0, key !== undefined, ranged].filter(Boolean).length;
    if (sources !== 1)
      throw new UsageError('give exactly one source: FILE..., --key KEY or --endpoint-name NAME');
    const quiet = values['quiet'] === true;
    const out = new Output(io.stdout ?? process.stdout);
    const write = recordWriter(format, out);
    const counts: Counts = { segments: 0, records: 0 };
    const tick = progress(io, quiet);
    const say = (): string => `expand: ${counts.segments} segments, ${counts.records} records`;

    if (positionals.length > 0) {
      for (const file of positionals) {
        for await (const r of records(openLocalSegment(file))) {
          await write(r);
          counts.records++;
        }
        counts.segments++;
        tick(say);
      }
    } else {
      const opened = storeFromFlags(values, io.env);
      try {
        if (key !== undefined) {
          if (key.endsWith('.json')) {
            const m = await getMarker(opened.store, key);
            if (m === null) throw new Error(`${key} does not exist`);
            await expandMarker(opened.store, key, m, write, counts);
          } else {
            const a = await openArchive(opened.store, key);
            if (a === null) throw new Error(`${key} does not exist`);
            for await (const r of records(a.stream)) {
              await write(r);
              counts.records++;
            }
            counts.segments++;
          }
        } else {
          for await (const { key: mk } of listMarkerKeys(
            opened.store,
            opened.prefix,
            selectionFromFlags(values),
          )) {
            const m = await getMarker(opened.store, mk);
            if (m === null) throw new Error(`${mk} vanished while listing`);
            await expandMarker(opened.store, mk, m, write, counts);
            tick(say);
          }
        }
      } finally {
        opened.close();
      }
    }
    await out.flush();
    if (!quiet) io.err(`${say()}\n`);
    return exitOk;
  });
}

export const expandCommand: Command = {
  name: 'expand',
  summary: 'segments (local, one key, or a committed range) → records on stdout',
  help,
  run,
};
