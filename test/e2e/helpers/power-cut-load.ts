// One power cut under load, shared by the node-level power-cut suites
// (ingest-powercut: WAL only; delivery-powercut: WAL + delivery to a local
// folder): producers write to a node running on a PowerCutFileSystem until the
// filesystem's `cutAtOp`-th call, when the disk "loses power" in one
// synchronous step and no answer reaches a client after it.
import type { PowerCutFileSystem } from '../../../ingest-node/src/fs/power-cut.ts';
import type { FaultFileSystem } from '../../../ingest-node/src/fs/fault.ts';
import type { FsOp } from '../../../ingest-node/src/fs/types.ts';
import type { RunningNode } from '../../../ingest-node/src/node.ts';
import { Ledger } from './ledger.ts';
import { runProducers } from './producers.ts';

/** Every FileSystem operation: the cut can land on any of them. */
export const ALL_FS_OPS: readonly FsOp[] = [
  'open',
  'readFile',
  'rename',
  'unlink',
  'link',
  'rmdir',
  'readdir',
  'mkdir',
  'syncDir',
  'stat',
  'statfs',
  'write',
  'read',
  'datasync',
  'sync',
  'truncate',
  'fstat',
  'close',
];

/** Resolves with `p`'s outcome, or undefined after `ms` (a cleanup bound, never a synchronisation). */
export async function bounded<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export interface PowerCutLoadOptions {
  /** The node under test, started on `fs`. */
  readonly node: RunningNode;
  /** The simulated disk under `fs`; crashed at the cut. */
  readonly mem: PowerCutFileSystem;
  /** The node's filesystem: counts the calls that lead to the cut. */
  readonly fs: FaultFileSystem;
  readonly cutAtOp: number;
  /** Keep a torn tail at the cut (a page half written). */
  readonly torn: boolean;
  /** With torn: unsynced pages of this size survive each on its own, in any order (PowerCutFileSystem). */
  readonly scatteredPageBytes?: number;
  readonly random: () => number;
  readonly concurrency: number;
  readonly idPrefix: string;
}

export interface PowerCutLoad {
  readonly ledger: Ledger;
  /** The disk as it comes back after the cut. */
  readonly rebooted: PowerCutFileSystem;
  /** The old node winding down on the frozen disk; await it (bounded) when done. */
  readonly oldShutdown: Promise<boolean>;
}

export async function loadUntilPowerCut(o: PowerCutLoadOptions): Promise<PowerCutLoad> {
  const { node, mem } = o;
  const ledger = new Ledger();
  let rebooted: PowerCutFileSystem | undefined;
  let stopped = false;
  const cut = (): void => {
    if (rebooted !== undefined) return;
    // One synchronous step: the disk stops, and nothing else reaches a client.
    rebooted = mem.crash({
      tornTail: o.torn,
      ...(o.scatteredPageBytes !== undefined ? { scatteredPageBytes: o.scatteredPageBytes } : {}),
    });
    stopped = true;
    node.server.app.server.close();
    node.server.app.server.closeAllConnections();
  };
  let ops = 0;
  o.fs.inject({ op: ALL_FS_OPS, times: Infinity, gate: () => void (++ops === o.cutAtOp && cut()) });
  // Should the load be too slow to reach cutAtOp, the power goes anyway.
  const fallback = setTimeout(cut, 5_000);
  let oldShutdown: Promise<boolean> | undefined;
  try {
    await runProducers({
      url: node.url,
      ledger,
      concurrency: o.concurrency,
      random: o.random,
      idPrefix: o.idPrefix,
      recordsMax: 6,
      padMax: 120,
      stop: () => stopped,
      timeoutMs: 10_000,
    });
  } finally {
    clearTimeout(fallback);
    cut();
    // The old node's WAL fails on the frozen disk; let it wind down in the background.
    oldShutdown = node.shutdown('power cut').catch(() => false);
  }
  return { ledger, rebooted: rebooted!, oldShutdown };
}
