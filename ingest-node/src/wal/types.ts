// The contract between the WAL and its users (the HTTP and MQTT sources, the
// delivery pipeline, backpressure). The byte layout lives in ./format.ts;
// this file says only what callers may rely on.

/** What a record's payload is; stored in every frame so readers need no side channel. */
export const RecordFormat = {
  /** One NDJSON line, without its newline. */
  ndjson: 1,
  /** One JSON value (an object, or one element of a top-level array). */
  json: 2,
  /** One RecordIO record's payload (opaque bytes). */
  recordio: 3,
  /** One MQTT message: the payload carries the topic, see format.ts. */
  mqtt: 4,
} as const;
export type RecordFormat = (typeof RecordFormat)[keyof typeof RecordFormat];

export interface AppendResult {
  /** Sequence number of the first record of this append (per-instance, gap-free). */
  readonly firstSeq: bigint;
  /** Sequence number of the last record of this append. */
  readonly lastSeq: bigint;
  readonly count: number;
}

export interface WalStats {
  readonly epoch: string;
  readonly openSegmentId: bigint | null;
  readonly openSegmentBytes: number;
  /** Bytes of every segment file still on the volume (open + sealed-not-yet-deleted). */
  readonly retainedBytes: number;
  readonly sealedSegments: number;
  readonly nextSeq: bigint;
  readonly appendsTotal: number;
  readonly syncsTotal: number;
}

export interface WriteAheadLog {
  /**
   * Appends every record as one unit and resolves only after an fdatasync that
   * began after the records were written has returned. All or nothing: if it
   * rejects, none of the records will be visible after recovery.
   */
  append(records: readonly Uint8Array[], format: RecordFormat): Promise<AppendResult>;
  stats(): WalStats;
  /** Seals the open segment (if it holds records) and releases files. */
  close(): Promise<void>;
}
