// Public surface of the WAL for the rest of the node.
export * from './types.ts';
export { WalError, isWalError } from './errors.ts';
export {
  openWal,
  systemTimers,
  SEGMENT_BYTES_MAX_DEFAULT,
  SEGMENT_AGE_MS_MAX_DEFAULT,
  QUEUE_BYTES_MAX_DEFAULT,
  GROUP_BYTES_MAX_DEFAULT,
} from './wal.ts';
export { segmentFileName, parseSegmentFileName, QUARANTINE_DIR, EPOCH_FILE } from './recovery.ts';
export { STATE_FILE } from './state.ts';
export {
  readSegment,
  readSegmentStream,
  SegmentDecoder,
  SegmentCorruptError,
  encodeMqttPayload,
  decodeMqttPayload,
  RECORD_BYTES_MAX_DEFAULT,
  type WalRecord,
  type SegmentHeader,
} from './format.ts';
