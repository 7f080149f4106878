// `landfall commits`: committed segments in key order after a cursor: what a
// consumer follows (docs/s3-layout.md "Consuming"). Markers of one instance
// are written in segment order, so a cursor (the last key processed) never
// skips a segment that commits late.
import { formatMicrosIso } from '../delivery/marker.ts';
import { formatSegmentId } from '../delivery/keys.ts';
import {
  exitOk,
  getMarker,
  guarded,
  listMarkerKeys,
  parse,
  selectHelp,
  selectionFromFlags,
  selectOptions,
  storeFromFlags,
  storeHelp,
  storeOptions,
  UsageError,
  wantsHelp,
  type Command,
  type CommandIo,
} from './common.ts';

export function help(): string {
  return [
    'landfall commits --endpoint-name NAME [--instance ID] [--after CURSOR] [--limit N] [--json] [store]',
    '',
    'Lists commit marker keys in key order, one a line; pass the last one as --after next time.',
    'Keep one cursor per instance: key order is time order within an instance, not across instances.',
    '  --json     one JSON object a line instead: key, instance, epoch, segmentId, records, first/last seq',
    '             and ingest time, and the artifacts (reads each marker)',
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
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function run(args: readonly string[], io: CommandIo): Promise<number> {
  if (wantsHelp(args)) {
    io.out(help());
    return exitOk;
  }
  return guarded('commits', io, help, async () => {
    const { values, positionals } = parse(args, options);
    if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0]}`);
    const json = values['json'] === true;
    const sel = selectionFromFlags(values);
    const opened = storeFromFlags(values, io.env);
    try {
      for await (const { key } of listMarkerKeys(opened.store, opened.prefix, sel)) {
        if (!json) {
          io.out(`${key}\n`);
          continue;
        }
        const m = await getMarker(opened.store, key);
        if (m === null) throw new Error(`${key} vanished while listing`);
        io.out(
          `${JSON.stringify({
            key,
            endpoint: m.endpoint,
            instance: m.instance,
            epoch: m.epoch,
            segmentId: formatSegmentId(m.segmentId),
            records: m.records,
            firstSeq: m.firstSeq.toString(),
            lastSeq: m.lastSeq.toString(),
            firstIngestTime: formatMicrosIso(m.firstIngestMicros),
            lastIngestTime: formatMicrosIso(m.lastIngestMicros),
            segment: m.segment,
            artifacts: m.artifacts,
          })}\n`,
        );
      }
    } finally {
      opened.close();
    }
    return exitOk;
  });
}

export const commitsCommand: Command = {
  name: 'commits',
  summary: 'list committed segments (commit markers) in key order after a cursor',
  help,
  run,
};
