// WAL records as the materialiser takes them (parquet/records.ts
// SegmentRecord), shared by the producer and the Parquet child process.
import type { SegmentRecord } from './records.ts';
import { decodeMqttPayload, type WalRecord } from '../wal/format.ts';
import { RecordFormat } from '../wal/types.ts';

/** An MQTT record's payload is its message, with the topic beside it. */
function toSegmentRecord(r: WalRecord): SegmentRecord {
  if (r.format === RecordFormat.mqtt) {
    let m: { topic: string; message: Uint8Array } | undefined;
    try {
      m = decodeMqttPayload(r.payload);
    } catch {
      // CRC-checked bytes our own writer framed: cannot happen short of a
      // bug, and the record must still go somewhere (its view DLQ, as is).
    }
    if (m !== undefined)
      return { seq: r.seq, ingestTimeMicros: r.ingestMicros, payload: m.message, topic: m.topic };
  }
  return { seq: r.seq, ingestTimeMicros: r.ingestMicros, payload: r.payload };
}

/** WAL records as the materialiser takes them. */
export async function* walToSegmentRecords(records: AsyncIterable<WalRecord>): AsyncGenerator<SegmentRecord> {
  for await (const r of records) yield toSegmentRecord(r);
}

/** The same a batch at a time (wal/format.ts readSegmentBatches): the materialiser's fast path for arrays. */
export async function* walBatchesToSegmentRecords(
  batches: AsyncIterable<readonly WalRecord[]>,
): AsyncGenerator<SegmentRecord[]> {
  for await (const batch of batches) yield batch.map(toSegmentRecord);
}
