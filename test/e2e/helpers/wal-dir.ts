// Reads back everything a WAL directory holds, with the WAL's own strict
// reader (readSegment: header CRC, every frame's CRC, seq continuity within
// the segment, ends on a batch end), through the same FileSystem abstraction
// the node wrote it with: the real disk, or a PowerCutFileSystem after reboot.
import path from 'node:path';
import type { FileSystem } from '../../../ingest-node/src/fs/types.ts';
import { errorCode } from '../../../ingest-node/src/fs/types.ts';
import { QUARANTINE_DIR, parseSegmentFileName, readSegment } from '../../../ingest-node/src/wal/index.ts';
import type { Wal, WriteAheadLog } from '../../../ingest-node/src/wal/index.ts';
import type { StoredRecord } from './ledger.ts';

export interface WalDirContents {
  /** Segment file names, in id (= write) order. */
  readonly segments: readonly string[];
  /** Every record of every segment, in segment then frame order. */
  readonly records: readonly StoredRecord[];
  /** Files recovery moved to quarantine/ (should always be empty in these tests). */
  readonly quarantined: readonly string[];
  /**
   * Copies of tails recovery cut off (`{segment}.{from}-{to}.tail` in
   * quarantine/): kept before every non-zero truncation, so a crash that tore
   * the last group leaves one. Not a quarantined segment.
   */
  readonly tailCopies: readonly string[];
  /** Segments the strict reader refused, with why (should always be empty). */
  readonly unreadable: readonly string[];
}

/**
 * Records of segments already read, by file name. A sealed segment never
 * changes, so a caller that reads the same directory again and again (the
 * crash loop) passes one and only new or changed-size files are read again.
 */
export type SegmentCache = Map<string, { readonly bytes: number; readonly records: readonly StoredRecord[] }>;

export async function readWalDir(fs: FileSystem, dir: string, cache?: SegmentCache): Promise<WalDirContents> {
  const names = await fs.readdir(dir);
  const segments = names
    .map((name) => ({ name, id: parseSegmentFileName(name) }))
    .filter((s): s is { name: string; id: bigint } => s.id !== undefined)
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map((s) => s.name);
  const records: StoredRecord[] = [];
  const unreadable: string[] = [];
  for (const name of segments) {
    const file = path.join(dir, name);
    const cached = cache?.get(name);
    if (cached !== undefined && cached.bytes === (await fs.stat(file)).size) {
      for (const r of cached.records) records.push(r);
      continue;
    }
    const bytes = await fs.readFile(file);
    const own: StoredRecord[] = [];
    try {
      for (const r of readSegment(bytes).records) own.push({ seq: r.seq, payload: r.payload, file: name });
      cache?.set(name, { bytes: bytes.length, records: own });
    } catch (err) {
      unreadable.push(`${name}: ${(err as Error).message}`);
    }
    for (const r of own) records.push(r);
  }
  let inQuarantine: string[] = [];
  try {
    inQuarantine = await fs.readdir(path.join(dir, QUARANTINE_DIR));
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') throw err;
  }
  const quarantined = inQuarantine.filter((n) => !n.endsWith('.tail'));
  const tailCopies = inQuarantine.filter((n) => n.endsWith('.tail'));
  return { segments, records, quarantined, tailCopies, unreadable };
}

/** The node's WAL as the durable one (startNode opens a `Wal` unless a test replaces openWal). */
export function durableWal(wal: WriteAheadLog): Wal {
  if (!('recovery' in wal)) throw new Error('expected the durable WAL (openWal), got a test double');
  return wal as Wal;
}
