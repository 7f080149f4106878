// What the bench's disk can do, and what it did during a run (Linux only).
//
// A virtual disk's first write to a block can cost far more than a rewrite of
// a block it already holds (thin-provisioned images allocate on first write;
// ext4 also allocates the block and, for an append, journals the new size in
// every fdatasync). Measured on the CI machine's disk: appending 1 MiB +
// fdatasync ran ~1 GB/s for about a second, then ~300 MB/s, while rewriting
// an already-written file ran ~1.5 GB/s for as long as it was measured. So the
// baseline is taken both ways, and the append figure is split into its first
// second and the rest: a 10 s run of the node is mostly "the rest".
import { statSync, readFileSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

const MB = 1e6;
const SECTOR_BYTES = 512; // /proc/diskstats counts 512-byte sectors whatever the device's own

export interface DiskBaseline {
  /** Appending 1 MiB writes + fdatasync to a new file, over the whole time. */
  readonly appendMbPerS: number;
  /** The same after the first second (the burst, where the disk has one, left out). */
  readonly appendAfterFirstSecondMbPerS: number;
  /** Rewriting the file just written and synced, 1 MiB writes + fdatasync, wrapping around. */
  readonly overwriteMbPerS: number;
}

export async function diskBaseline(dir: string, seconds: number): Promise<DiskBaseline> {
  const file = path.join(dir, 'baseline');
  const fh = await open(file, 'w');
  const buf = Buffer.alloc(1024 * 1024, 7);
  try {
    let pos = 0;
    let posAt1s: number | undefined;
    let tAt1s = 0;
    const t0 = performance.now();
    for (let now = t0; now - t0 < seconds * 1000; now = performance.now()) {
      if (posAt1s === undefined && now - t0 >= 1000) {
        posAt1s = pos;
        tAt1s = now;
      }
      await fh.write(buf, 0, buf.length, pos);
      pos += buf.length;
      await fh.datasync();
    }
    const t1 = performance.now();
    const appendMbPerS = pos / MB / ((t1 - t0) / 1000);
    const appendAfterFirstSecondMbPerS =
      posAt1s === undefined ? appendMbPerS : (pos - posAt1s) / MB / ((t1 - tAt1s) / 1000);
    const fileBytes = pos;
    let written = 0;
    let at = 0;
    const t2 = performance.now();
    while (performance.now() - t2 < seconds * 1000) {
      if (at + buf.length > fileBytes) at = 0;
      await fh.write(buf, 0, buf.length, at);
      at += buf.length;
      written += buf.length;
      await fh.datasync();
    }
    const overwriteMbPerS = written / MB / ((performance.now() - t2) / 1000);
    return { appendMbPerS, appendAfterFirstSecondMbPerS, overwriteMbPerS };
  } finally {
    await fh.close();
    await rm(file, { force: true });
  }
}

export type DiskCounters = { readonly writtenBytes: number; readonly writes: number } | undefined;

/** The device a directory lives on, as /proc/diskstats names it, or undefined if it is not a block device there. */
export function diskOf(dir: string): { major: number; minor: number } | undefined {
  const dev = statSync(dir).dev;
  // Linux's new_encode_dev: major in bits 8-19, minor in bits 0-7 and 20-31.
  const major = (dev >> 8) & 0xfff;
  const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
  return major === 0 ? undefined : { major, minor };
}

/** Sectors and write requests the device completed so far (both monotonic). */
export function diskCounters(device: { major: number; minor: number } | undefined): DiskCounters {
  if (device === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync('/proc/diskstats', 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (Number(f[0]) === device.major && Number(f[1]) === device.minor) {
      // [0] major, [1] minor, [2] name, [3] reads completed, …, [7] writes completed, [8] merged, [9] sectors written.
      return { writes: Number(f[7]), writtenBytes: Number(f[9]) * SECTOR_BYTES };
    }
  }
  return undefined;
}

/** MB/s and write requests/s written to the device between two counter readings. */
export function diskRates(
  a: DiskCounters,
  b: DiskCounters,
  seconds: number,
): { mbPerS: number; writesPerS: number } | undefined {
  if (a === undefined || b === undefined || seconds <= 0) return undefined;
  return {
    mbPerS: (b.writtenBytes - a.writtenBytes) / MB / seconds,
    writesPerS: (b.writes - a.writes) / seconds,
  };
}
