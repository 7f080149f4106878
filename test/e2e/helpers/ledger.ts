// What the producers were told, and the check that the WAL agrees with it.
//
// Every request carries records with ids unique across the whole test. The
// ledger remembers each request's records and its outcome as the client saw
// it: acknowledged (202, with firstSeq/lastSeq), refused (an HTTP error
// answer: by contract nothing of it was written), or unknown (no answer: the
// connection died, the process was killed, the power was cut). verifyWal()
// holds the records read back from the WAL against it:
//   - seqs run 1, 2, 3… in file order, no gap, no repeat;
//   - every record of every acknowledged request is there, at exactly the seqs
//     its 202 announced;
//   - nothing of a refused request is there;
//   - an unknown request is all there (contiguous, in order) or not at all;
//   - no record appears twice and none that no request sent.

export type Outcome =
  | { readonly kind: 'acked'; readonly firstSeq: bigint | undefined; readonly lastSeq: bigint | undefined }
  | {
      readonly kind: 'refused';
      readonly status: number;
      readonly code: string | undefined;
      readonly retryAfter: string | null;
    }
  | { readonly kind: 'unknown'; readonly reason: string };

export interface SentRequest {
  readonly id: string;
  readonly recordIds: readonly string[];
  /** Undefined while the request is still in flight. */
  outcome: Outcome | undefined;
  /** Milliseconds (performance.now()) when it was sent and answered. */
  readonly sentAt: number;
  answeredAt: number | undefined;
}

export interface LedgerCounts {
  readonly requests: number;
  readonly acked: number;
  readonly ackedRecords: number;
  readonly refused: number;
  readonly unknown: number;
  readonly pending: number;
}

export class Ledger {
  readonly requests: SentRequest[] = [];

  add(id: string, recordIds: readonly string[]): SentRequest {
    const r: SentRequest = {
      id,
      recordIds,
      outcome: undefined,
      sentAt: performance.now(),
      answeredAt: undefined,
    };
    this.requests.push(r);
    return r;
  }

  settle(r: SentRequest, outcome: Outcome): void {
    r.outcome = outcome;
    r.answeredAt = performance.now();
  }

  counts(): LedgerCounts {
    let acked = 0;
    let ackedRecords = 0;
    let refused = 0;
    let unknown = 0;
    let pending = 0;
    for (const r of this.requests) {
      const k = r.outcome?.kind;
      if (k === 'acked') {
        acked++;
        ackedRecords += r.recordIds.length;
      } else if (k === 'refused') refused++;
      else if (k === 'unknown') unknown++;
      else pending++;
    }
    return { requests: this.requests.length, acked, ackedRecords, refused, unknown, pending };
  }

  /** Refused answers by `status code` (e.g. `503 LF_WAL_UNAVAILABLE`). */
  refusals(): Map<string, number> {
    const out = new Map<string, number>();
    for (const r of this.requests) {
      if (r.outcome?.kind !== 'refused') continue;
      const key = `${r.outcome.status} ${r.outcome.code ?? '?'}`;
      out.set(key, (out.get(key) ?? 0) + 1);
    }
    return out;
  }
}

/** One record as read back from a segment file. */
export interface StoredRecord {
  readonly seq: bigint;
  readonly payload: Uint8Array;
  readonly file: string;
}

export interface Verdict {
  /** Empty when the WAL keeps every promise. At most `violationsMax` messages; `violationCount` has them all. */
  readonly violations: string[];
  readonly violationCount: number;
  readonly records: number;
  readonly ackedRequests: number;
  readonly ackedRecords: number;
  /** Records of acknowledged requests that are missing (the durability failure the teeth check looks for). */
  readonly lostAckedRecords: number;
  /** Unknown-outcome requests found whole / absent. */
  readonly unknownPresent: number;
  readonly unknownAbsent: number;
}

const ID_PATTERN = /^\{"id":"([^"]+)"/;
const textDecoder = new TextDecoder();

/** The record id a producer put first in its JSON payload. */
export function recordIdOf(payload: Uint8Array): string | undefined {
  return ID_PATTERN.exec(textDecoder.decode(payload.subarray(0, 120)))?.[1];
}

export function verifyWal(
  records: readonly StoredRecord[],
  ledger: Ledger,
  options: { readonly firstSeq?: bigint; readonly violationsMax?: number } = {},
): Verdict {
  const violationsMax = options.violationsMax ?? 25;
  const violations: string[] = [];
  let violationCount = 0;
  const fail = (msg: string): void => {
    violationCount++;
    if (violations.length < violationsMax) violations.push(msg);
  };

  // Sequence: gap-free and strictly increasing across every segment, in file order.
  const firstSeq = options.firstSeq ?? 1n;
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    const expected = i === 0 ? firstSeq : records[i - 1]!.seq + 1n;
    if (r.seq !== expected) fail(`seq ${r.seq} in ${r.file} where ${expected} was expected`);
  }

  const seqById = new Map<string, bigint>();
  for (const r of records) {
    const id = recordIdOf(r.payload);
    if (id === undefined) {
      fail(`record at seq ${r.seq} in ${r.file} has no id: ${textDecoder.decode(r.payload.subarray(0, 60))}`);
      continue;
    }
    if (seqById.has(id)) fail(`record ${id} appears twice (seqs ${seqById.get(id)} and ${r.seq})`);
    else seqById.set(id, r.seq);
  }

  const known = new Set<string>();
  let ackedRequests = 0;
  let ackedRecords = 0;
  let lostAckedRecords = 0;
  let unknownPresent = 0;
  let unknownAbsent = 0;
  for (const req of ledger.requests) {
    const n = req.recordIds.length;
    const seqs: (bigint | undefined)[] = req.recordIds.map((id) => {
      known.add(id);
      return seqById.get(id);
    });
    const present = seqs.filter((s) => s !== undefined).length;
    const inOrder = (): boolean => {
      const first = seqs[0];
      return first !== undefined && seqs.every((s, j) => s === first + BigInt(j));
    };
    const outcome = req.outcome;
    if (outcome?.kind === 'acked') {
      ackedRequests++;
      ackedRecords += n;
      if (present < n) {
        lostAckedRecords += n - present;
        fail(`acknowledged request ${req.id} lost ${n - present} of its ${n} records`);
        continue;
      }
      if (outcome.firstSeq !== undefined && outcome.lastSeq !== undefined) {
        if (outcome.lastSeq - outcome.firstSeq + 1n !== BigInt(n))
          fail(`request ${req.id}: 202 said ${outcome.firstSeq}..${outcome.lastSeq} for ${n} records`);
        seqs.forEach((s, j) => {
          if (s !== outcome.firstSeq! + BigInt(j))
            fail(
              `request ${req.id} record ${j}: acknowledged as seq ${outcome.firstSeq! + BigInt(j)}, found at ${s}`,
            );
        });
      } else if (!inOrder()) fail(`acknowledged request ${req.id}: records not contiguous and in order`);
    } else if (outcome?.kind === 'refused') {
      if (present > 0)
        fail(
          `request ${req.id} was refused (${outcome.status} ${outcome.code ?? '?'}) yet ${present} of its ${n} records are in the WAL`,
        );
    } else {
      // Unknown (or never answered): all or nothing.
      if (present === 0) unknownAbsent++;
      else if (present === n && inOrder()) unknownPresent++;
      else if (present === n)
        fail(`unanswered request ${req.id}: records present but not contiguous and in order`);
      else fail(`unanswered request ${req.id}: ${present} of its ${n} records present (partial)`);
    }
  }
  for (const id of seqById.keys()) if (!known.has(id)) fail(`record ${id} was never sent`);

  return {
    violations,
    violationCount,
    records: records.length,
    ackedRequests,
    ackedRecords,
    lostAckedRecords,
    unknownPresent,
    unknownAbsent,
  };
}

/** One line for test logs. */
export function describeVerdict(v: Verdict): string {
  return (
    `${v.records} records in the WAL; ${v.ackedRequests} acknowledged requests (${v.ackedRecords} records, ` +
    `${v.lostAckedRecords} lost); unanswered: ${v.unknownPresent} whole, ${v.unknownAbsent} absent; ` +
    `${v.violationCount} violations`
  );
}
