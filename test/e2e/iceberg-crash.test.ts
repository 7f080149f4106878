// kill -9 under load at the two windows of the Iceberg commit protocol
// (issue #17), again and again: the real `landfall serve` child on MinIO and
// Apache Iceberg's own REST catalog, a View with an iceberg target, HTTP
// producers keeping a ledger of every acknowledged id. Each cycle starts the
// node on the same WAL, lets the load run, then kills it at an exact point:
//
//   upload→commit  the segment's view files (and manifests) are in the bucket
//                  and the table commit request reaches the catalog: killed
//                  before the catalog sees it;
//   commit→marker  the catalog answered a table commit with 200 and the node
//                  sends its next commit marker PUT: killed before MinIO sees
//                  it (the table has the segment's snapshot, no marker names it).
//
// The points are exact because the node reaches MinIO and the catalog through
// pass-through proxies in this process (helpers/kill-proxy.ts) that SIGKILL
// it when the chosen request arrives: no test hook in the node. A final run
// drains (POST /v1/drain) and then PyIceberg (from PyPI, not our code) reads
// the table:
//   - every acknowledged id is in the current snapshot exactly once, no id
//     twice, none that was refused or never sent; the table holds exactly the
//     ids of the committed segment archives (`landfall expand`);
//   - row count = the sum of the markers' view rows;
//   - every marker's snapshot is in the table's history and an ancestor of
//     the current snapshot, and names the snapshot whose summary carries the
//     marker's segment; no segment identity is on two snapshots;
//   - every commit→marker kill's segment was later found by the summary
//     lookup (the restarted node's log), not appended again.
//
//   LANDFALL_ICEBERG_CRASH_KILLS=40 node --test test/e2e/iceberg-crash.test.ts  # kills (default 40, 20 per point)
//   LANDFALL_ICEBERG_CRASH_SEED=1234 …                                         # replay the load/arming schedule
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { seededRandom } from '../../ingest-node/src/fs/power-cut.ts';
import { scratchDir, startIcebergCatalog, startMinio, waitFor } from '../harness/index.ts';
import type { IcebergCatalog, MinioServer } from '../harness/index.ts';
import { logLines } from './helpers/cli-node.ts';
import { committedIdCounts } from './helpers/committed.ts';
import { startKillProxy, type KillProxy } from './helpers/kill-proxy.ts';
import { Ledger } from './helpers/ledger.ts';
import { startProducers } from './helpers/producers.ts';
import { getJson, listKeys, serve, type MarkerJson, type ServeNode } from './helpers/views.ts';

const KILLS = Math.max(2, Number(process.env['LANDFALL_ICEBERG_CRASH_KILLS'] ?? 40));
const SEED = Number(process.env['LANDFALL_ICEBERG_CRASH_SEED'] ?? Date.now() % 2 ** 31);
const PRODUCERS = 4;
const endpoint = 'clicks';
const instance = 'clicks-0';
const prefix = 'lf';
const namespace = 'crashloop';
const table = 'events';

const POINTS = ['upload→commit', 'commit→marker'] as const;
type Point = (typeof POINTS)[number];

const VIEW = `
name: events
columns:
  - { name: id,  type: VARCHAR, path: $.id, required: true }
  - { name: pad, type: VARCHAR, path: $.pad }
iceberg: { namespace: ${namespace}, table: ${table} }
`;

type TableMarker = MarkerJson & {
  tables?: { view: string; namespace: string; table: string; snapshotId?: string; error?: unknown }[];
};

const readTable = String.raw`
import collections, json, os, sys
from pyiceberg.catalog import load_catalog
cat = load_catalog('testbed', **json.loads(os.environ['TESTBED_ICEBERG_PROPS']))
t = cat.load_table(sys.argv[1])
ids = t.scan(selected_fields=('id',)).to_arrow().column('id').to_pylist()
snaps = []
for s in t.snapshots():
    p = s.summary.additional_properties
    snaps.append({
        'id': str(s.snapshot_id),
        'parent': None if s.parent_snapshot_id is None else str(s.parent_snapshot_id),
        'operation': str(s.summary.operation.value),
        'records': p.get('added-records'),
        'identity': '/'.join(str(p.get(k)) for k in ('landfall.endpoint', 'landfall.instance', 'landfall.epoch', 'landfall.segment-id')),
    })
by_id = {s['id']: s for s in snaps}
cur = t.current_snapshot()
ancestors = []
at = None if cur is None else str(cur.snapshot_id)
while at is not None and at in by_id:
    ancestors.append(at)
    at = by_id[at]['parent']
with open(sys.argv[2], 'w') as f:
    json.dump({
        'ids': ids,
        'snapshots': snaps,
        'history': [str(e.snapshot_id) for e in t.history()],
        'current': None if cur is None else str(cur.snapshot_id),
        'ancestors': ancestors,
    }, f)
`;

interface TableRead {
  ids: string[];
  snapshots: { id: string; parent: string | null; operation: string; records: string; identity: string }[];
  history: string[];
  current: string | null;
  ancestors: string[];
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The path of a request without its query, URL-decoded. */
const pathOf = (req: IncomingMessage): string => decodeURIComponent((req.url ?? '').split('?')[0]!);

/** The REST catalog's commit route (POST …/namespaces/{ns}/tables/{table}); creating a table posts to …/tables. */
const isTableCommit = (req: IncomingMessage): boolean =>
  req.method === 'POST' && new RegExp(`/namespaces/${namespace}/tables/${table}$`).test(pathOf(req));

let minio: MinioServer;
let s3: S3Client;
let catalog: IcebergCatalog;
let catalogProxy: KillProxy | undefined;
let s3Proxy: KillProxy | undefined;
let node: ServeNode | undefined;

before(async () => {
  minio = await startMinio();
  s3 = minio.s3();
  catalog = await startIcebergCatalog({ minio });
});
after(async () => {
  await node?.proc.stop({ graceMs: 0 });
  await catalogProxy?.close();
  await s3Proxy?.close();
  await catalog?.stop();
  await minio?.stop();
});

void test(
  `kill -9 under load between upload and table commit and between table commit and marker, ${KILLS} times: every acked id once in the Iceberg table`,
  { timeout: 300_000 + KILLS * 15_000 },
  async (t) => {
    const t0 = performance.now();
    t.diagnostic(`seed ${SEED} (replay with LANDFALL_ICEBERG_CRASH_SEED=${SEED}), ${KILLS} kills`);
    const rnd = seededRandom(SEED);

    // Where the next kill goes, and what the proxies saw since it was armed.
    let armed: Point | undefined;
    let committedSinceArm = false;
    const hits: Record<Point, number> = { 'upload→commit': 0, 'commit→marker': 0 };
    /** Marker keys whose PUT was the kill: their segment is in the table, unmarked. */
    const killedMarkers: string[] = [];
    const killNode = (point: Point): void => {
      if (armed !== point || node === undefined) return;
      armed = undefined;
      hits[point]++;
      process.kill(node.proc.pid, 'SIGKILL');
    };
    catalogProxy = await startKillProxy({
      upstream: catalog.uri,
      decide: (req) => (armed === 'upload→commit' && isTableCommit(req) ? 'kill' : 'pass'),
      kill: () => killNode('upload→commit'),
      onAnswer: (req, status) => {
        if (armed === 'commit→marker' && status === 200 && isTableCommit(req)) committedSinceArm = true;
      },
    });
    const markerPath = `/${minio.bucket}/${prefix}/commits/`;
    s3Proxy = await startKillProxy({
      upstream: minio.endpoint,
      decide: (req) =>
        armed === 'commit→marker' &&
        committedSinceArm &&
        req.method === 'PUT' &&
        pathOf(req).startsWith(markerPath)
          ? 'kill'
          : 'pass',
      kill: (req) => {
        killedMarkers.push(pathOf(req).slice(`/${minio.bucket}/`.length));
        killNode('commit→marker');
      },
    });

    const viewsDir = scratchDir('iceberg-crash-loop-views');
    await writeFile(path.join(viewsDir, 'events.yaml'), VIEW);
    const dir = scratchDir('iceberg-crash-loop');
    const flags = [
      `--s3.bucket=${minio.bucket}`,
      `--s3.endpointUrl=${s3Proxy.url}`,
      `--s3.prefix=${prefix}`,
      `--endpoint.name=${endpoint}`,
      `--instance.id=${instance}`,
      `--wal.dir=${path.join(dir, 'wal')}`,
      // Small, frequent segments: several sealed and in delivery at any moment.
      '--wal.segmentAgeMsMax=300',
      '--wal.segmentBytesMax=131072',
      `--views.dir=${viewsDir}`,
      '--views.threads=1',
      '--delivery.staleUploadAgeMs=0',
      '--delivery.segmentRetryDelayMsMax=500',
      `--iceberg.catalogUri=${catalogProxy.url}`,
      `--iceberg.warehouse=${catalog.warehouse}`,
    ];
    const ledger = new Ledger();
    const logs: string[] = [];
    const startNode = async (label: string): Promise<ServeNode> => {
      const logPath = path.join(dir, `node-${label}.log`);
      logs.push(logPath);
      node = await serve(`landfall-iceberg-crash-${label}`, minio, logPath, flags);
      return node;
    };

    for (let cycle = 0; cycle < KILLS; cycle++) {
      const point = POINTS[cycle % POINTS.length]!;
      const n = await startNode(String(cycle));
      const producers = startProducers({
        url: n.url,
        ledger,
        concurrency: PRODUCERS,
        random: rnd,
        idPrefix: `c${cycle}`,
        recordsMax: 20,
        padMax: 64,
        timeoutMs: 10_000,
      });
      // Load first (a backlog from the last kill is being delivered meanwhile), then arm.
      await sleep(300 + Math.floor(rnd() * 1200));
      committedSinceArm = false;
      armed = point;
      const exit = await Promise.race([n.proc.exited, sleep(90_000).then(() => undefined)]);
      armed = undefined;
      await producers.stop();
      assert.ok(exit !== undefined, `cycle ${cycle}: no ${point} kill within 90 s; log ${n.proc.logPath}`);
      assert.equal(
        exit.signal,
        'SIGKILL',
        `cycle ${cycle}: the node ended by itself (code ${exit.code}): ${n.proc.logTail()}`,
      );
      assert.equal(
        hits[point],
        Math.floor(cycle / POINTS.length) + 1,
        `cycle ${cycle}: killed, but not by the ${point} proxy`,
      );
    }
    const killsDoneMs = performance.now() - t0;

    // The last run: a little more load, then drain everything into the bucket and the table.
    const last = await startNode('final');
    const producers = startProducers({
      url: last.url,
      ledger,
      concurrency: PRODUCERS,
      random: rnd,
      idPrefix: 'final',
      recordsMax: 20,
      padMax: 64,
      timeoutMs: 10_000,
    });
    await sleep(1_000);
    await producers.stop();
    const drainRes = await fetch(`${last.adminUrl}/v1/drain`, { method: 'POST' });
    assert.equal(drainRes.status, 202, await drainRes.text());
    await waitFor(
      async () => {
        const s = (await (await fetch(`${last.adminUrl}/v1/status`)).json()) as {
          drain: { drained: boolean };
        };
        return s.drain.drained;
      },
      { what: 'the final drain', timeoutMs: 180_000, intervalMs: 250, process: last.proc },
    );
    await last.proc.stop({ graceMs: 10_000 });
    const drainedMs = performance.now() - t0;

    // What the producers were told.
    const acked = new Set<string>();
    const sent = new Set<string>();
    const refused = new Set<string>();
    let unknownRequests = 0;
    for (const r of ledger.requests) {
      assert.notEqual(r.outcome, undefined, `request ${r.id} never settled`);
      for (const id of r.recordIds) sent.add(id);
      if (r.outcome?.kind === 'acked') for (const id of r.recordIds) acked.add(id);
      else if (r.outcome?.kind === 'refused') for (const id of r.recordIds) refused.add(id);
      else unknownRequests++;
    }

    // What the bucket says: markers and segment archives.
    const markerKeys = await listKeys(s3, minio.bucket, `${prefix}/commits/${endpoint}/`);
    const markers: TableMarker[] = [];
    for (let i = 0; i < markerKeys.length; i += 32)
      markers.push(
        ...(await Promise.all(
          markerKeys.slice(i, i + 32).map((k) => getJson<TableMarker>(s3, minio.bucket, k)),
        )),
      );
    const archived = await committedIdCounts(minio, { endpointName: endpoint, prefix });

    // What PyIceberg reads.
    const outPath = path.join(dir, 'table.json');
    await catalog.python(readTable, [`${namespace}.${table}`, outPath], { timeoutMs: 180_000 });
    const r = JSON.parse(await readFile(outPath, 'utf8')) as TableRead;

    const counts = new Map<string, number>();
    for (const id of r.ids) counts.set(id, (counts.get(id) ?? 0) + 1);
    const twice = [...counts].filter(([, c]) => c > 1);
    assert.deepEqual(
      twice.slice(0, 10),
      [],
      `${twice.length} ids are in the table more than once (first 10 shown)`,
    );
    const missing = [...acked].filter((id) => !counts.has(id));
    assert.deepEqual(missing.slice(0, 10), [], `${missing.length} acknowledged ids are not in the table`);
    const stray = r.ids.filter((id) => !sent.has(id) || refused.has(id));
    assert.deepEqual(stray.slice(0, 10), [], 'ids in the table that were never sent, or refused');
    const archivedTwice = [...archived].filter(([, c]) => c > 1);
    assert.deepEqual(archivedTwice.slice(0, 10), [], 'ids committed in two segment archives');
    assert.deepEqual(
      [...counts.keys()].sort(),
      [...archived.keys()].sort(),
      'the table holds exactly the ids of the committed segments',
    );

    const viewRows = markers.reduce((sum, m) => sum + (m.views[0]?.rows?.view ?? 0), 0);
    assert.equal(r.ids.length, viewRows, 'rows in the table = the view rows the markers count');

    const identity = (m: TableMarker): string => `${endpoint}/${m.instance}/${m.epoch}/${m.segmentId}`;
    const bySegment = new Map<string, number>();
    for (const s of r.snapshots) bySegment.set(s.identity, (bySegment.get(s.identity) ?? 0) + 1);
    const appendedTwice = [...bySegment].filter(([, c]) => c > 1);
    assert.deepEqual(appendedTwice, [], 'segments with more than one snapshot');
    assert.ok(
      r.snapshots.every((s) => s.operation === 'append'),
      'only appends (no compaction configured)',
    );
    const history = new Set(r.history);
    const ancestors = new Set(r.ancestors);
    const snapOf = new Map(r.snapshots.map((s) => [s.identity, s]));
    for (const m of markers) {
      const snapshotId = m.tables?.[0]?.snapshotId;
      assert.ok(
        snapshotId !== undefined,
        `marker ${identity(m)} names no snapshot: ${JSON.stringify(m.tables)}`,
      );
      assert.ok(history.has(snapshotId), `marker ${identity(m)}: snapshot ${snapshotId} not in the history`);
      assert.ok(
        ancestors.has(snapshotId),
        `marker ${identity(m)}: snapshot ${snapshotId} not an ancestor of main`,
      );
      const s = snapOf.get(identity(m));
      assert.equal(
        s?.id,
        snapshotId,
        `marker ${identity(m)} names the snapshot whose summary is its segment`,
      );
      assert.equal(s.records, String(m.views[0]?.rows?.view), `marker ${identity(m)}: added-records`);
    }
    assert.equal(r.snapshots.length, markers.length, 'one snapshot per marker, none unmarked');

    // Each commit→marker kill left a segment in the table without a marker:
    // a later run must have found its snapshot, not appended it again.
    const found = new Map<string, string>();
    for (const l of logs.flatMap((p) => logLines(p)))
      if (l.msg === 'iceberg snapshot of this segment found (committed earlier)')
        found.set(String(l['segment']), String(l['snapshotId']));
    for (const key of killedMarkers) {
      const m = markers[markerKeys.indexOf(key)];
      assert.ok(m !== undefined, `the marker ${key} whose PUT was killed was written later`);
      assert.equal(
        found.get(m.segmentId),
        m.tables?.[0]?.snapshotId,
        `segment ${m.segmentId}: the restarted node found the snapshot committed before the kill`,
      );
    }

    const c = ledger.counts();
    t.diagnostic(
      `${KILLS} kills (${POINTS.map((p) => `${p} ×${hits[p]}`).join(', ')}) + a final drained run; ` +
        `${c.requests} requests: ${c.acked} acked (${acked.size} ids), ${c.refused} refused, ${unknownRequests} unknown (killed in flight)`,
    );
    t.diagnostic(
      `table: ${r.ids.length} rows (${r.ids.length - acked.size} durable but unacknowledged), ${r.snapshots.length} snapshots = ${markers.length} markers; ` +
        `${found.size} segments found by the summary lookup after a restart`,
    );
    t.diagnostic(
      `duration: ${(killsDoneMs / 1000).toFixed(1)} s for the kills, ${((drainedMs - killsDoneMs) / 1000).toFixed(1)} s final run + drain, ` +
        `${((performance.now() - t0) / 1000).toFixed(1)} s in all`,
    );
  },
);
