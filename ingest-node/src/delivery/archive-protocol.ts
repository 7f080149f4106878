// Messages between archive-worker.ts (the node's main thread) and
// archive-thread.ts (the worker). Types only, so the worker loads little.
import type { SealedSegment } from '../wal/types.ts';

export interface ArchiveThreadData {
  /** Niceness the worker thread sets on itself (0 = the node's). */
  readonly nice: number;
}

export type ArchiveRequest =
  | {
      readonly t: 'begin';
      readonly id: number;
      readonly expect: SealedSegment;
      readonly recordBytesMax?: number;
      readonly level: number;
    }
  | { readonly t: 'chunk'; readonly id: number; readonly buf: ArrayBuffer }
  | { readonly t: 'end'; readonly id: number }
  | { readonly t: 'abort'; readonly id: number };

export type ArchiveReply =
  /** A piece was processed; its buffer comes back (moved) for the next read, when the piece was whole. */
  | { readonly t: 'ack'; readonly id: number; readonly buf?: ArrayBuffer }
  | { readonly t: 'out'; readonly id: number; readonly buf: ArrayBuffer }
  | {
      readonly t: 'done';
      readonly id: number;
      readonly inputBytes: number;
      readonly inputSha256: string;
      readonly outputBytes: number;
      readonly outputSha256: string;
    }
  | {
      readonly t: 'error';
      readonly id: number;
      /** defect: SegmentCorruptError; mismatch: SegmentMismatchError; other: anything else (retried). */
      readonly kind: 'defect' | 'mismatch' | 'other';
      readonly message: string;
      readonly offset?: number;
      readonly reason?: string;
    };
