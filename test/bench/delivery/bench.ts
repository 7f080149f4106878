// Delivery figures on the real MinIO: for a 64 MiB segment of NDJSON events
// (bench-zstd.ts's ndjsonSample: page views with ids, timestamps, user agents),
// seal → commit marker latency and its steps (verify + compress, upload,
// marker), compression ratio and MB/s, archive upload MB/s; plus a 64 MiB
// incompressible multipart upload for the store's raw MB/s. Median of N runs.
// Prints; asserts nothing.
//
//   npm run bench:delivery -- [runs=3]
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { scratchDir, startMinio } from '../../harness/index.ts';
import { systemClock } from '../../../ingest-node/src/clock.ts';
import { NodeFileSystem } from '../../../ingest-node/src/fs/node.ts';
import { silentLogger } from '../../../ingest-node/src/log.ts';
import { ndjsonSample } from '../../../ingest-node/src/delivery/bench-zstd.ts';
import { readCommitMarker } from '../../../ingest-node/src/delivery/marker.ts';
import { startPipeline, type PipelineEvent } from '../../../ingest-node/src/delivery/pipeline.ts';
import { uploadFile } from '../../../ingest-node/src/delivery/upload.ts';
import { sha256Hex } from '../../../ingest-node/src/store/hashing.ts';
import { openObjectStore } from '../../../ingest-node/src/store/index.ts';
import { openWal } from '../../../ingest-node/src/wal/wal.ts';
import { RecordFormat, type SealedSegment } from '../../../ingest-node/src/wal/types.ts';

const MiB = 1024 * 1024;
const runs = Number(process.argv[2] ?? 3);
const segmentBytes = 64 * MiB;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const minio = await startMinio();
const opened = openObjectStore({
  kind: 's3',
  bucket: minio.bucket,
  region: minio.region,
  endpoint: minio.endpoint,
  forcePathStyle: true,
  credentials: { mode: 'static', accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
});
const lines = ndjsonSample(segmentBytes + 4 * MiB)
  .toString()
  .trimEnd()
  .split('\n')
  .map((l) => Buffer.from(l));

interface Run {
  sealToMarkerMs: number;
  compressMs: number;
  uploadMs: number;
  markerMs: number;
  segmentBytes: number;
  archiveBytes: number;
  records: number;
}

const results: Run[] = [];
for (let run = 0; run < runs; run++) {
  const dir = scratchDir(`bench-delivery-${run}`);
  const wal = await openWal({
    dir: path.join(dir, 'wal'),
    endpoint: 'bench',
    instance: 'bench-0',
    fs: new NodeFileSystem(),
    clock: systemClock,
    log: silentLogger,
    segmentBytesMax: segmentBytes,
    segmentAgeMsMax: 3_600_000,
  });
  const at = new Map<string, number>();
  let sealed: SealedSegment | undefined;
  let sealedAt = 0;
  // Only the first (64 MiB, size-sealed) segment is measured.
  wal.onSealed((s) => {
    if (sealed !== undefined) return;
    sealed = s;
    sealedAt = Date.now();
  });
  const pipeline = await startPipeline({
    wal,
    store: opened.store,
    prefix: `bench/run${run}`,
    endpoint: 'bench',
    instance: 'bench-0',
    scratchDir: path.join(dir, 'scratch'),
    staleUploadAgeMs: 0,
    onEvent: (e: PipelineEvent) => {
      if (e.segmentId === sealed?.id && !at.has(e.type)) at.set(e.type, Date.now());
    },
  });
  // Batches as an HTTP layer would append them; stop once the first segment sealed by size.
  for (let i = 0; i < lines.length && sealed === undefined; i += 2000)
    await wal.append(lines.slice(i, i + 2000), RecordFormat.ndjson);
  while (!at.has('committed')) await new Promise((r) => setTimeout(r, 5));
  const seg = sealed!;
  const marker = await readCommitMarker(opened.store, `bench/run${run}`, {
    endpoint: 'bench',
    instance: 'bench-0',
    epoch: seg.epoch,
    segmentId: seg.id,
  });
  const archive = marker!.artifacts.find((a) => a.kind === 'segment')!;
  const r: Run = {
    sealToMarkerMs: at.get('committed')! - seg.sealedAtMs,
    compressMs: at.get('produced')! - at.get('started')!,
    uploadMs: at.get('uploaded')! - at.get('produced')!,
    markerMs: at.get('committed')! - at.get('committing')!,
    segmentBytes: seg.bytes,
    archiveBytes: archive.bytes,
    records: seg.records,
  };
  results.push(r);
  console.error(
    `run ${run + 1}: seal→marker ${r.sealToMarkerMs} ms (announce ${sealedAt - seg.sealedAtMs} ms, verify+compress ${r.compressMs} ms, ` +
      `upload ${r.uploadMs} ms, marker ${r.markerMs} ms), ${(r.segmentBytes / MiB).toFixed(1)} MiB → ${(r.archiveBytes / MiB).toFixed(2)} MiB`,
  );
  await pipeline.stop();
  await wal.close();
}

// The store alone: 64 MiB of random bytes (multipart, 8 MiB parts × 4 in flight).
const putMs: number[] = [];
const file = path.join(scratchDir('bench-put'), 'random.bin');
const data = randomBytes(64 * MiB);
await writeFile(file, data);
const sha = sha256Hex(data);
for (let run = 0; run < runs; run++) {
  const t0 = performance.now();
  await uploadFile(opened.store, `bench/put/${run}.bin`, { path: file, bytes: data.length, sha256: sha });
  putMs.push(performance.now() - t0);
}

const mb = (bytes: number, ms: number): string => ((bytes / 1e6) * (1000 / ms)).toFixed(0);
const m = (f: (r: Run) => number): number => median(results.map(f));
const segMiB = m((r) => r.segmentBytes) / MiB;
console.log(
  `delivery of one ${segMiB.toFixed(1)} MiB NDJSON segment to MinIO (median of ${runs} runs, ${m((r) => r.records)} records):`,
);
console.log(`  seal → commit marker      ${m((r) => r.sealToMarkerMs).toFixed(0)} ms`);
console.log(
  `  verify + compress (zstd 1) ${m((r) => r.compressMs).toFixed(0)} ms = ${mb(
    m((r) => r.segmentBytes),
    m((r) => r.compressMs),
  )} MB/s of segment, ratio ${(m((r) => r.segmentBytes) / m((r) => r.archiveBytes)).toFixed(2)}`,
);
console.log(
  `  archive upload           ${m((r) => r.uploadMs).toFixed(0)} ms for ${(m((r) => r.archiveBytes) / MiB).toFixed(2)} MiB = ${mb(
    m((r) => r.archiveBytes),
    m((r) => r.uploadMs),
  )} MB/s (incl. the state-file write)`,
);
console.log(`  commit marker            ${m((r) => r.markerMs).toFixed(0)} ms`);
console.log(
  `  store alone: 64 MiB multipart put ${median(putMs).toFixed(0)} ms = ${mb(64 * MiB, median(putMs))} MB/s`,
);
opened.close();
await minio.stop();
