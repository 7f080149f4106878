// The views benchmarks' data (bench.ts, phases.ts): the view and 1M-ish generated page_view-like events.
import type { SegmentRecord } from '../../../ingest-node/src/views/index.ts';
import { seededRandom } from '../../../ingest-node/src/fs/power-cut.ts';

export const VIEW = `
name: page_views
columns:
  - { name: event,       type: VARCHAR,   path: $.event, required: true }
  - { name: user_id,     type: VARCHAR,   path: $.user }
  - { name: page,        type: VARCHAR,   path: $.page }
  - { name: viewed_at,   type: TIMESTAMP, path: $.ts,    required: true }
  - { name: duration_ms, type: INTEGER,   path: $.duration_ms }
  - { name: country,     type: VARCHAR,   path: $.country }
partitioning:
  - { expression: "date_trunc('day', viewed_at)", alias: dt }
`;

// The ceiling: the same columns, types and partitioning, with DuckDB's own reader.
export function ceilingSql(input: string, output: string): string {
  return `COPY (
    SELECT event, "user" AS user_id, page, ts AS viewed_at, duration_ms, country, CAST(date_trunc('day', ts) AS DATE) AS dt
    FROM read_ndjson('${input}', columns = {event: 'VARCHAR', user: 'VARCHAR', page: 'VARCHAR', ts: 'TIMESTAMP',
      duration_ms: 'INTEGER', country: 'VARCHAR', referrer: 'VARCHAR', session: 'VARCHAR'})
  ) TO '${output}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (dt))`;
}

// Deterministic PRNG (mulberry32): the same data on every run and machine.
const rng = seededRandom;

/**
 * Realistic cardinalities: 8 event types (page_view ~60 %), ~100k users,
 * 2,000 pages with a Zipf-like skew, 40 countries, a referrer on a third of
 * events, session ids; timestamps increasing over about two days (two partitions).
 */
export function generate(n: number): SegmentRecord[] {
  const rand = rng(42);
  const events = [
    'page_view',
    'page_view',
    'page_view',
    'page_view',
    'page_view',
    'page_view',
    'click',
    'scroll',
    'add_to_cart',
    'checkout',
    'signup',
    'search',
  ];
  const countries = Array.from({ length: 40 }, (_, i) =>
    String.fromCharCode(65 + (i % 26), 65 + ((i * 7) % 26)),
  );
  const referrers = [
    'https://www.google.com/',
    'https://news.ycombinator.com/',
    'https://t.co/abc',
    'https://duckduckgo.com/',
  ];
  const startMs = Date.UTC(2026, 10, 25, 12);
  const stepMs = (2 * 86_400_000) / n;
  const records: SegmentRecord[] = new Array<SegmentRecord>(n);
  for (let i = 0; i < n; i++) {
    const tsMs = startMs + Math.floor(i * stepMs);
    const pageRank = Math.floor(2000 * Math.pow(rand(), 3));
    const event: Record<string, unknown> = {
      event: events[Math.floor(rand() * events.length)],
      user: `u_${Math.floor(rand() * 100_000).toString(36)}`,
      page: `/docs/section-${pageRank % 40}/page-${pageRank}`,
      ts: new Date(tsMs).toISOString(),
      duration_ms: Math.floor(rand() * 30_000),
      country: countries[Math.floor(Math.pow(rand(), 2) * countries.length)],
      session: `s_${Math.floor(i / 20).toString(36)}`,
    };
    if (rand() < 0.33) event['referrer'] = referrers[Math.floor(rand() * referrers.length)];
    records[i] = {
      seq: BigInt(i + 1),
      ingestTimeMicros: BigInt(tsMs) * 1000n + 500n,
      payload: Buffer.from(JSON.stringify(event)),
    };
  }
  return records;
}
