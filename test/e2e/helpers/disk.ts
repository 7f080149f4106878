// A WAL-volume free-space probe the test sets by hand (the node's `disk` dep),
// counting its measurements so a test can wait for the node to have looked.
import type { DiskSpace, DiskSpaceProbe } from '../../../ingest-node/src/backpressure.ts';

export class SettableDisk implements DiskSpaceProbe {
  freeBytes: number;
  totalBytes = 200 * 1024 ** 3;
  measurements = 0;
  constructor(freeBytes = 100 * 1024 ** 3) {
    this.freeBytes = freeBytes;
  }
  async measure(): Promise<DiskSpace> {
    this.measurements++;
    return { freeBytes: this.freeBytes, totalBytes: this.totalBytes };
  }
}
