// WAL records as the materialiser takes them (parquet/records.ts
// SegmentRecord), shared by the producer and the Parquet child process.
import type { SegmentRecord } from './records.ts';
import { decodeMqttPayload, type WalRecord } from '../wal/format.ts';
import { RecordFormat } from '../wal/types.ts';

/** WAL records as the materialiser takes them: an MQTT record's payload is its message, with the topic beside it. */
export async function* walToSegmentRecords(records: AsyncIterable<WalRecord>): AsyncGenerator<SegmentRecord> {
  for await (const r of records) {
    if (r.format === RecordFormat.mqtt) {
      let m: { topic: string; message: Uint8Array } | undefined;
      try {
        m = decodeMqttPayload(r.payload);
      } catch {
        // CRC-checked bytes our own writer framed: cannot happen short of a
        // bug, and the record must still go somewhere (its view DLQ, as is).
      }
      if (m !== undefined) {
        yield { seq: r.seq, ingestTimeMicros: r.ingestMicros, payload: m.message, topic: m.topic };
        continue;
      }
    }
    yield { seq: r.seq, ingestTimeMicros: r.ingestMicros, payload: r.payload };
  }
}
