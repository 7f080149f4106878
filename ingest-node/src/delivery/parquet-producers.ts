// Parquet artifacts of a sealed segment (DESIGN §5, §6; docs/views.md): raw
// Parquet (outputs.rawParquet) and, per view in force when the segment was
// sealed, the view's Parquet per Hive partition and its DLQ. One producer,
// so the segment is decoded once (the pipeline's verified record stream) and
// materialised once for all views in one DuckDB job; its files upload with
// the pipeline's uploader under keys that are a pure function of the segment
// (a retry, or a crash before the marker, writes the same keys again); the
// marker lists every file, the spec hash of every view applied and each
// view's row accounting.
//
// startParquetOutputs() is what node.ts wires in: the node's one DuckDB
// instance (created on first use, scratch on the WAL volume), the views
// registry (views.dir) and the producer.
import { copyFile, mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { Clock } from '../clock.ts';
import { silentLogger, type Logger } from '../log.ts';
import { createParquetDb, JOBS_DIR, SPILL_DIR, type ParquetDb } from '../parquet/duckdb.ts';
import type { ParquetFile } from '../parquet/outputs.ts';
import { compileView, type CompiledView } from '../views/compile.ts';
import {
  partitionFilesMaxDefault,
  type PartitionLimits,
  type SegmentOutputs,
  type ViewOutput,
} from '../views/materialize.ts';
import { openViewRegistry, type ViewRegistry } from '../views/registry.ts';
import {
  processAddressSpaceHeadroomBytes,
  viewsProcessAddressSpaceExtraBytesDefault,
  type ViewsConfig,
} from '../views/settings.ts';
import type { SealedSegment } from '../wal/types.ts';
import type { WalRecord } from '../wal/format.ts';
import { walToSegmentRecords } from '../parquet/wal-records.ts';
import { materializeSegmentJob } from '../parquet/segment-job.ts';
import { dayOfMicros } from '../parquet/raw-writer.ts';
import { dlqKey, formatSegmentId, rawKey, segmentKey, utcDate, viewKey, type SegmentRef } from './keys.ts';
import { markerBytesMax, type MarkerView, type MarkerViewRows } from './marker.ts';
import type { ArtifactProducer, ProducedFile, SegmentJob } from './producers.ts';
import {
  createChildRunner,
  MaterializerError,
  type ChildOutputs,
  type ChildRunner,
} from '../parquet/isolated.ts';
import { contentTypes } from './upload.ts';

/** The producer's kind: names its progress in state.json, so it stays. */
export const PARQUET_PRODUCER_KIND = 'parquet';

export interface ParquetProducerOptions {
  /**
   * In-process materialisation on this DuckDB instance: the reference the
   * child process is checked against (views-isolated.test.ts) and what unit
   * tests without a child use. A node uses `isolated`.
   */
  readonly db?: () => Promise<ParquetDb>;
  /** Materialisation in child processes under an address-space limit (parquet/isolated.ts). */
  readonly isolated?: IsolatedOptions;
  /** The views to apply to a segment (the registry's viewsAt its seal time). */
  readonly views: (segment: SealedSegment) => readonly CompiledView[];
  /** Also write raw Parquet. */
  readonly raw: boolean;
  readonly rowGroupRows?: number;
  /** Partition files per view per segment (views.partitionFilesMax); beyond it rows go to the DLQ. */
  readonly partitionFilesMax?: number;
  readonly log?: Logger;
  /** landfall_view_rows_total and friends go here. */
  readonly registry?: Registry;
  /**
   * Parquet field ids for the views' files (their Iceberg tables' ids, by view
   * then column name), asked once per segment; none: files without ids.
   */
  readonly fieldIds?: (
    views: readonly CompiledView[],
  ) => Promise<ReadonlyMap<string, Readonly<Record<string, number>>>>;
}

export interface IsolatedOptions {
  /** Its children (scratch folders, DuckDB settings, limits) are set up where it is created. */
  readonly runner: ChildRunner;
  /**
   * Attempts of one segment (in this process) whose records could not be
   * loaded under the limit, after which it is delivered without raw Parquet.
   */
  readonly loadFailuresMax?: number;
}

/** Attempts of a segment whose records cannot be loaded in a child before it goes out without raw Parquet. */
export const LOAD_FAILURES_MAX_DEFAULT = 3;

export { walToSegmentRecords } from '../parquet/wal-records.ts';

/** The marker's row accounting of one view over one segment. */
export function viewRows(v: ViewOutput): MarkerViewRows {
  return {
    in: v.rowsIn,
    view: v.viewRows,
    filtered: v.filteredRows,
    dlq: v.dlqRows,
    dlqByCode: { ...v.dlqByCode },
  };
}

/** The single partition value of a raw or DLQ file (`dt`). */
function dtOf(f: ParquetFile): string {
  const dt = f.partitions[0]?.[1];
  if (dt === undefined || dt === null || dt === '') throw new Error(`${f.localPath} has no dt partition`);
  return dt;
}

// Commit marker bytes, as upper bounds (numbers at their longest): what the
// marker holds besides its artifacts, one artifact besides its key and view
// name, one `views` entry with the row accounting of every DLQ code.
const markerHeadBytes = 4096;
const markerArtifactBytes = 256;
const markerViewBytes = 1536;

/** Day spans a segment's dates are listed for; a longer span is read for the dates its records carry. */
export const SEGMENT_DATE_SPAN_LISTED_MAX = 64;

/**
 * The UTC dates a segment's records carry, or a superset (raw and DLQ files
 * are one per date). The WAL's ingest times never go back (a record gets the
 * later of the clock and the last ingest time), so every record lies in
 * [firstIngestMicros, lastIngestMicros]: that span's days, a day of slack
 * each side, when it is short. A long span (wal.segmentAgeMsMax is at most 7
 * days, so a wall clock stepped forward) may hold few dates or many: its
 * records are read for the exact ones, so the marker's budget neither
 * reserves room for a jump's empty days nor leaves out dates past any cap.
 */
export async function segmentDates(
  segment: Pick<SealedSegment, 'firstIngestMicros' | 'lastIngestMicros'>,
  records: () => AsyncIterable<Pick<WalRecord, 'ingestMicros'>>,
): Promise<string[]> {
  const dayMicros = 86_400_000_000n;
  const first = segment.firstIngestMicros < dayMicros ? 0n : segment.firstIngestMicros - dayMicros;
  const last = segment.lastIngestMicros + dayMicros;
  const dates: string[] = [];
  if (last >= first && (last - first) / dayMicros < BigInt(SEGMENT_DATE_SPAN_LISTED_MAX)) {
    for (let t = first; t <= last; t += dayMicros) dates.push(utcDate(t));
    return dates;
  }
  const days = new Set<number>();
  for await (const r of records()) days.add(dayOfMicros(r.ingestMicros));
  for (const d of [...days].sort((a, b) => a - b)) dates.push(utcDate(BigInt(d) * dayMicros));
  return dates;
}

/**
 * What a segment's view partitions may take so that every key is valid and
 * the commit marker stays under markerBytesMax whatever the data: the marker
 * without view files is bounded from above (every other artifact it can
 * list, numbers at their longest), and the view files share the rest.
 */
export function segmentPartitionLimits(
  prefix: string,
  ref: SegmentRef,
  dates: readonly string[],
  views: readonly CompiledView[],
  raw: boolean,
  filesMax: number,
): PartitionLimits {
  let fixed = markerHeadBytes + markerArtifactBytes + segmentKey(prefix, ref).length;
  if (raw) for (const dt of dates) fixed += markerArtifactBytes + rawKey(prefix, ref, dt).length;
  for (const v of views) {
    const name = v.spec.name;
    fixed += markerViewBytes + name.length;
    for (const dt of dates) fixed += markerArtifactBytes + name.length + dlqKey(prefix, ref, name, dt).length;
  }
  return {
    filesMax,
    keyBytesBase: (view) => viewKey(prefix, ref, view, []).length,
    markerEntryBytes: (view) => markerArtifactBytes + view.length,
    markerBytes: markerBytesMax - fixed,
  };
}

/** The object key of every file of a materialised segment, with what the marker says about it. */
export function keyedFiles(
  prefix: string,
  ref: SegmentRef,
  out: Pick<SegmentOutputs, 'raw' | 'views'>,
): (Omit<ProducedFile, 'path'> & { file: ParquetFile })[] {
  const files: (Omit<ProducedFile, 'path'> & { file: ParquetFile })[] = [];
  const add = (kind: ProducedFile['kind'], key: string, file: ParquetFile, view?: string): void => {
    files.push({
      kind,
      ...(view !== undefined ? { view } : {}),
      key,
      bytes: file.sizeBytes,
      sha256: file.sha256,
      rows: file.rowCount,
      contentType: contentTypes.parquet,
      file,
    });
  };
  for (const f of out.raw) add('raw', rawKey(prefix, ref, dtOf(f)), f);
  for (const v of out.views) {
    for (const f of v.files) add('view', viewKey(prefix, ref, v.view, f.partitions), f, v.view);
    for (const f of v.dlqFiles) add('dlq', dlqKey(prefix, ref, v.view, dtOf(f)), f, v.view);
  }
  const seen = new Set<string>();
  for (const f of files) {
    // Two partitions that escape to one key would overwrite each other.
    if (seen.has(f.key)) throw new Error(`two Parquet files map to one key: ${f.key}`);
    seen.add(f.key);
  }
  return files;
}

/** Moves a file, copying when the two folders are on different file systems. */
async function moveFile(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    await copyFile(from, to);
    await rm(from, { force: true });
  }
}

interface ProducerMetrics {
  rows: Counter<'view' | 'outcome'>;
  dlq: Counter<'view' | 'code'>;
  seconds: Histogram;
  rawRows: Counter;
  childDeaths: Counter<'stage'>;
}

function registerMetrics(registry: Registry): ProducerMetrics {
  const fresh = (name: string): string => {
    if (registry.getSingleMetric(name) !== undefined) registry.removeSingleMetric(name);
    return name;
  };
  return {
    rows: new Counter({
      name: fresh('landfall_view_rows_total'),
      help: 'Rows through each view, by outcome (view, filtered, dlq), per segment materialised.',
      labelNames: ['view', 'outcome'] as const,
      registers: [registry],
    }),
    dlq: new Counter({
      name: fresh('landfall_view_dlq_rows_total'),
      help: 'Rows sent to a view’s DLQ, by error code.',
      labelNames: ['view', 'code'] as const,
      registers: [registry],
    }),
    rawRows: new Counter({
      name: fresh('landfall_raw_parquet_rows_total'),
      help: 'Rows written to raw Parquet.',
      registers: [registry],
    }),
    childDeaths: new Counter({
      name: fresh('landfall_parquet_child_deaths_total'),
      help: 'Parquet child processes that died or ran out of memory under views.processAddressSpaceBytes, by stage (all: every view at once; view: one view alone, whose rows then go to its DLQ as view_failed; load: raw Parquet or a view_failed DLQ, i.e. the records themselves).',
      labelNames: ['stage'] as const,
      registers: [registry],
    }),
    seconds: new Histogram({
      name: fresh('landfall_parquet_segment_seconds'),
      help: 'Time to materialise one sealed segment (decode, raw Parquet, every view and DLQ).',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers: [registry],
    }),
  };
}

/**
 * The producer. Its files are moved into the pipeline's scratch folder for
 * the job (which the pipeline removes after the upload), so DuckDB's own
 * job folder is gone before produce() returns.
 */
export function parquetProducer(o: ParquetProducerOptions): ArtifactProducer {
  const log = o.log ?? silentLogger;
  const metrics = o.registry !== undefined ? registerMetrics(o.registry) : undefined;
  /** Segments whose records could not be loaded in a child, by job id: attempts so far (bounded: in-flight segments only). */
  const loadFailures = new Map<string, number>();

  /**
   * Every view and raw Parquet in one child. When it dies (out of memory
   * under its limit, a signal), raw Parquet and each view run again in a
   * child of their own, so the view that kills its child is found: its rows
   * go to its DLQ as `view_failed` (written by one more child that does not
   * run the view) and the segment is delivered. A child that dies without
   * running any view expression (raw Parquet, or that view_failed DLQ) dies
   * on the records themselves under the limit: the segment is retried
   * (LOAD_FAILURES_MAX_DEFAULT attempts), then delivered with its archive
   * and without what could not be written (docs/durability.md).
   */
  async function produceIsolated(
    iso: IsolatedOptions,
    job: SegmentJob,
    jobId: string,
    views: readonly CompiledView[],
    limits: PartitionLimits,
    fieldIds: ReadonlyMap<string, Readonly<Record<string, number>>> | undefined,
  ): Promise<{
    out: Pick<SegmentOutputs, 'raw' | 'views' | 'rowsIn' | 'cleanup'>;
    markerViews?: MarkerView[];
  }> {
    const ref = job.ref;
    const releases: (() => Promise<void>)[] = [];
    let runs = 0;
    const cleanup = async (): Promise<void> => {
      for (const r of releases.splice(0)) await r();
    };
    const keyBytesBase: Record<string, number> = {};
    const markerEntryBytes: Record<string, number> = {};
    for (const v of views) {
      keyBytesBase[v.spec.name] = limits.keyBytesBase(v.spec.name);
      markerEntryBytes[v.spec.name] = limits.markerEntryBytes(v.spec.name);
    }
    const rawOptions = o.raw ? { endpoint: ref.endpoint, instance: ref.instance } : undefined;
    const run = async (part: {
      raw: boolean;
      views: readonly CompiledView[];
      failed?: Record<string, string>;
      markerBytes: number;
    }): Promise<{ outputs?: ChildOutputs; reason?: string }> => {
      const outcome = await iso.runner.run(
        {
          // One folder per run: the outputs of earlier steps are still held.
          jobId: `${jobId}-${runs++}`,
          segmentPath: job.segmentPath,
          segment: job.segment,
          ...(job.recordBytesMax !== undefined ? { recordBytesMax: job.recordBytesMax } : {}),
          ...(part.raw && rawOptions !== undefined ? { raw: rawOptions } : {}),
          ...(o.rowGroupRows !== undefined ? { rowGroupRows: o.rowGroupRows } : {}),
          views: part.views,
          ...(part.failed !== undefined ? { failedViews: part.failed } : {}),
          ...(fieldIds !== undefined ? { fieldIds: Object.fromEntries(fieldIds) } : {}),
          partitionLimits: {
            filesMax: limits.filesMax,
            keyBytesBase,
            markerEntryBytes,
            markerBytes: part.markerBytes,
          },
        },
        job.signal,
      );
      if (outcome.kind !== 'ok') return { reason: outcome.reason };
      releases.push(outcome.release);
      return { outputs: outcome.outputs };
    };
    const asOut = (raw: ChildOutputs['raw'], vs: ChildOutputs['views'], rowsIn: number) => ({
      raw,
      views: vs,
      rowsIn,
      cleanup,
    });
    try {
      const all = await run({ raw: o.raw, views, markerBytes: limits.markerBytes });
      // A view that threw (an allocation failure under the limit, in
      // practice) in a child it shared with other work may have failed for
      // what that work left behind, or left DuckDB unable to run the views
      // after it: a verdict of view_failed is only trusted from a child that
      // ran that view alone, as after a death.
      const shared = o.raw || views.length > 1;
      const threw = all.outputs?.views.filter((v) => v.failed !== undefined).map((v) => v.view) ?? [];
      if (all.outputs !== undefined && (threw.length === 0 || !shared)) {
        loadFailures.delete(jobId);
        return { out: asOut(all.outputs.raw, all.outputs.views, all.outputs.rowsIn) };
      }
      if (all.outputs === undefined) {
        metrics?.childDeaths.inc({ stage: 'all' });
        log.warn(
          { segment: job.segment.fileName, reason: all.reason, views: views.map((v) => v.spec.name) },
          'the Parquet child died: running raw Parquet and each view in a child of its own to find the cause',
        );
      } else
        log.warn(
          { segment: job.segment.fileName, failed: threw, views: views.map((v) => v.spec.name) },
          'a view failed in a Parquet child it shared with other work: running raw Parquet and each view in a child of its own',
        );
      let raw: ChildOutputs['raw'] = [];
      let rowsIn: number | undefined;
      const loadDeaths: string[] = [];
      if (o.raw) {
        const r = await run({ raw: true, views: [], markerBytes: limits.markerBytes });
        if (r.outputs !== undefined) {
          raw = r.outputs.raw;
          rowsIn = r.outputs.rowsIn;
        } else {
          metrics?.childDeaths.inc({ stage: 'load' });
          loadDeaths.push(`raw Parquet: ${r.reason}`);
        }
      }
      let budget = limits.markerBytes;
      const outs: ChildOutputs['views'][number][] = [];
      for (const v of views) {
        const one = await run({ raw: false, views: [v], markerBytes: budget });
        if (one.outputs !== undefined) {
          outs.push(...one.outputs.views);
          budget = one.outputs.markerBytesLeft;
          rowsIn ??= one.outputs.rowsIn;
          continue;
        }
        metrics?.childDeaths.inc({ stage: 'view' });
        const reason = one.reason ?? 'the materialiser process died';
        const failed = await run({
          raw: false,
          views: [v],
          failed: { [v.spec.name]: reason },
          markerBytes: budget,
        });
        if (failed.outputs !== undefined) {
          outs.push(...failed.outputs.views);
          rowsIn ??= failed.outputs.rowsIn;
        } else {
          metrics?.childDeaths.inc({ stage: 'load' });
          loadDeaths.push(`view ${v.spec.name}'s view_failed DLQ: ${failed.reason}`);
        }
      }
      if (loadDeaths.length === 0) {
        loadFailures.delete(jobId);
        return { out: asOut(raw, outs, rowsIn ?? job.segment.records) };
      }
      const attempts = (loadFailures.get(jobId) ?? 0) + 1;
      const max = iso.loadFailuresMax ?? LOAD_FAILURES_MAX_DEFAULT;
      if (attempts < max) {
        // Bounded: a segment is only here while it is being delivered.
        if (loadFailures.size >= 1_000) loadFailures.clear();
        loadFailures.set(jobId, attempts);
        throw new MaterializerError(
          `segment ${job.segment.fileName}: its records could not be loaded under the materialiser's limit (attempt ${attempts} of ${max}): ${loadDeaths.join('; ')}`,
          'MATERIALIZER_LOAD',
        );
      }
      loadFailures.delete(jobId);
      log.error(
        { segment: job.segment.fileName, attempts, failures: loadDeaths },
        'the records of this segment cannot be loaded under views.processAddressSpaceBytes: it is delivered with its segment archive (every record), without raw Parquet or the listed view DLQs; raise the limit and run `landfall reprocess` to rebuild them',
      );
      const markerViews: MarkerView[] = [];
      for (const v of views) {
        const done = outs.find((x) => x.view === v.spec.name);
        markerViews.push(
          done !== undefined
            ? { name: v.spec.name, specSha256: done.specHash, rows: viewRows(done) }
            : { name: v.spec.name, specSha256: v.specHash },
        );
      }
      return { out: asOut(raw, outs, rowsIn ?? job.segment.records), markerViews };
    } catch (err) {
      await cleanup();
      throw err;
    }
  }

  return {
    kind: PARQUET_PRODUCER_KIND,
    async produce(job: SegmentJob) {
      const views = o.views(job.segment);
      if (!o.raw && views.length === 0) return { files: [], views: [] };
      const started = performance.now();
      const ref = job.ref;
      const fieldIds = o.fieldIds !== undefined ? await o.fieldIds(views) : undefined;
      const jobId = `${ref.endpoint}-${ref.epoch}-${formatSegmentId(ref.segmentId)}`;
      const limits = segmentPartitionLimits(
        job.prefix,
        ref,
        await segmentDates(job.segment, () => job.records()),
        views,
        o.raw,
        o.partitionFilesMax ?? partitionFilesMaxDefault,
      );
      let out: Pick<SegmentOutputs, 'raw' | 'views' | 'rowsIn' | 'cleanup'>;
      let markerViews: MarkerView[] | undefined;
      if (o.isolated !== undefined) {
        const r = await produceIsolated(o.isolated, job, jobId, views, limits, fieldIds);
        out = r.out;
        markerViews = r.markerViews;
      } else {
        if (o.db === undefined) throw new Error('parquetProducer needs db or isolated');
        const db = await o.db();
        // The child's job, in process: the same files (views-isolated.test.ts compares the markers).
        out = await materializeSegmentJob(db, {
          jobId,
          records: walToSegmentRecords(job.records()),
          views,
          ...(o.raw ? { raw: { endpoint: ref.endpoint, instance: ref.instance } } : {}),
          ...(o.rowGroupRows !== undefined ? { rowGroupRows: o.rowGroupRows } : {}),
          ...(fieldIds !== undefined ? { fieldIds } : {}),
          partitionLimits: limits,
        });
      }
      try {
        if (out.rowsIn !== job.segment.records)
          throw new Error(
            `segment ${job.segment.fileName}: ${out.rowsIn} records materialised, state says ${job.segment.records}`,
          );
        for (const v of out.views)
          if (v.failed !== undefined)
            log.error(
              { segment: job.segment.fileName, view: v.view, specSha256: v.specHash, reason: v.failed },
              'view could not be materialised over this segment: every record is in its DLQ as view_failed; the segment is delivered',
            );
        const keyed = keyedFiles(job.prefix, ref, out);
        const files: ProducedFile[] = [];
        for (const [i, k] of keyed.entries()) {
          const local = path.join(job.scratchDir, `${i.toString().padStart(6, '0')}.parquet`);
          await mkdir(job.scratchDir, { recursive: true });
          await moveFile(k.file.localPath, local);
          const { file: _file, ...rest } = k;
          files.push({ ...rest, path: local });
        }
        markerViews ??= out.views.map((v) => ({
          name: v.view,
          specSha256: v.specHash,
          rows: viewRows(v),
        }));
        const seconds = (performance.now() - started) / 1000;
        if (metrics !== undefined) {
          metrics.seconds.observe(seconds);
          if (o.raw) metrics.rawRows.inc(out.raw.reduce((n, f) => n + f.rowCount, 0));
          for (const v of out.views) {
            metrics.rows.inc({ view: v.view, outcome: 'view' }, v.viewRows);
            metrics.rows.inc({ view: v.view, outcome: 'filtered' }, v.filteredRows);
            metrics.rows.inc({ view: v.view, outcome: 'dlq' }, v.dlqRows);
            for (const [code, n] of Object.entries(v.dlqByCode))
              if (n > 0) metrics.dlq.inc({ view: v.view, code }, n);
          }
        }
        log.debug(
          {
            segment: job.segment.fileName,
            records: out.rowsIn,
            files: files.length,
            durationMs: Math.round(seconds * 1000),
            views: markerViews.map((v) => ({ name: v.name, ...v.rows })),
          },
          'segment materialised',
        );
        return { files, views: markerViews };
      } finally {
        await out.cleanup();
      }
    },
  };
}

export interface ParquetOutputsConfig {
  readonly wal: { readonly dir: string };
  readonly outputs: { readonly rawParquet: boolean };
  readonly views: ViewsConfig;
}

export interface ParquetOutputs {
  /** Undefined when neither views.dir nor outputs.rawParquet is set: nothing to add to delivery. */
  readonly producer: ArtifactProducer | undefined;
  readonly registry: ViewRegistry | undefined;
  /** The one DuckDB instance (created on first use); undefined when there are no Parquet outputs. */
  readonly db?: () => Promise<ParquetDb>;
  /** The /v1/status section. */
  status(): Record<string, unknown>;
  /**
   * The WAL volume is short of space (backpressure.diskFreeBytesLow) or has
   * it back: when the DuckDB scratch folder is on that volume, no Parquet
   * child is kept between jobs while it is low (ChildRunner.setVolumeLow),
   * so their records pools go back to it.
   */
  setVolumeLow?(low: boolean): void;
  /**
   * Stops watching views.dir and closes DuckDB (after delivery has stopped).
   * A segment still being materialised (DuckDB cannot be interrupted) is
   * waited for at most `graceMs` (default 10 s); its work is redone at the next start.
   */
  close(graceMs?: number): Promise<void>;
}

/** The compaction schedule's DuckDB scratch (iceberg/schedule.ts), inside the DuckDB scratch folder. */
const COMPACTION_DIR = 'compaction';
/** Child processes' scratch folders, one per child, inside the DuckDB scratch folder. */
export const CHILDREN_DIR = 'children';

/** The DuckDB scratch folder: views.scratchDir, else `parquet` inside the WAL dir (the WAL volume). */
export function parquetScratchDir(config: ParquetOutputsConfig): string {
  return path.resolve(config.views.scratchDir ?? path.join(config.wal.dir, 'parquet'));
}

/**
 * The node's Parquet outputs from its config: one DuckDB instance (created
 * when first needed: the first view to compile, or the first segment), the
 * views registry when views.dir is set, and the producer for the pipeline.
 */
export async function startParquetOutputs(
  config: ParquetOutputsConfig,
  deps: {
    clock: Clock;
    log: Logger;
    registry?: Registry;
    fieldIds?: ParquetProducerOptions['fieldIds'];
    /** Runs after a View compiles, before it is used; a throw (a ViewError) refuses that version. */
    checkView?: (view: CompiledView) => Promise<void>;
  },
): Promise<ParquetOutputs> {
  const raw = config.outputs.rawParquet;
  const dir = config.views.dir;
  if (!raw && dir === undefined) {
    return { producer: undefined, registry: undefined, status: () => ({}), close: async () => {} };
  }
  const scratchDir = parquetScratchDir(config);
  const addressSpaceBytes =
    config.views.processAddressSpaceBytes ??
    config.views.memoryLimitBytes + viewsProcessAddressSpaceExtraBytesDefault;
  if (addressSpaceBytes < config.views.memoryLimitBytes + processAddressSpaceHeadroomBytes)
    throw new Error(
      `views.processAddressSpaceBytes (${addressSpaceBytes}) must be at least views.memoryLimitBytes + ${processAddressSpaceHeadroomBytes} (Node and DuckDB reserve that much address space before any work)`,
    );
  const childrenDir = path.join(scratchDir, CHILDREN_DIR);
  // A crashed run's children left their folders; the old in-process layout its jobs and spill.
  for (const d of [CHILDREN_DIR, JOBS_DIR, SPILL_DIR])
    await rm(path.join(scratchDir, d), { recursive: true, force: true });
  await mkdir(childrenDir, { recursive: true });
  // Another volume's space is no help to the WAL, and ending children costs CPU delivery needs then.
  const onWalVolume = await stat(config.wal.dir).then(
    async (w) => (await stat(childrenDir)).dev === w.dev,
    () => false, // no WAL folder (a tool, a test): no volume to share
  );
  const runner = createChildRunner({
    addressSpaceBytes,
    processesMax: config.views.processesMax,
    scratchDir: childrenDir,
    memoryLimitBytes: config.views.memoryLimitBytes,
    threads: config.views.threads,
    nice: config.views.processNice,
    jobTimeoutMs: config.views.processJobTimeoutMs,
    ...(deps.registry !== undefined ? { registry: deps.registry } : {}),
  });
  let creating: Promise<ParquetDb> | undefined;
  let closed = false;
  const db = (): Promise<ParquetDb> => {
    if (closed) return Promise.reject(new Error('Parquet outputs are closed'));
    // A failed creation (scratch not writable yet) is tried again next time.
    // Compile-only (no file reachable): segments are materialised in child processes.
    creating ??= createParquetDb({
      memoryLimitBytes: config.views.memoryLimitBytes,
      threads: 1,
    }).then(
      (d) => {
        deps.log.info({ memoryLimitBytes: d.memoryLimitBytes }, 'DuckDB for compiling views ready');
        return d;
      },
      (err: unknown) => {
        creating = undefined;
        throw err;
      },
    );
    return creating;
  };
  let fileDbCreating: Promise<ParquetDb> | undefined;
  const fileDb = (): Promise<ParquetDb> => {
    if (closed) return Promise.reject(new Error('Parquet outputs are closed'));
    fileDbCreating ??= createParquetDb({
      scratchDir: path.join(scratchDir, COMPACTION_DIR),
      memoryLimitBytes: config.views.memoryLimitBytes,
      threads: config.views.threads,
    }).catch((err: unknown) => {
      fileDbCreating = undefined;
      throw err;
    });
    return fileDbCreating;
  };
  let registry: ViewRegistry | undefined;
  if (dir !== undefined) {
    registry = await openViewRegistry({
      dir,
      reloadIntervalMs: config.views.reloadIntervalMs,
      compile: async (spec) => {
        const view = await (await db()).withConnection((c) => compileView(c, spec));
        await deps.checkView?.(view);
        return view;
      },
      clock: deps.clock,
      log: deps.log,
      ...(deps.registry !== undefined ? { registry: deps.registry } : {}),
    });
  }
  const reg = registry;
  const producer = parquetProducer({
    isolated: { runner },
    views: (segment) => reg?.viewsAt(segment.sealedAtMs) ?? [],
    raw,
    partitionFilesMax: config.views.partitionFilesMax,
    log: deps.log,
    ...(deps.registry !== undefined ? { registry: deps.registry } : {}),
    ...(deps.fieldIds !== undefined ? { fieldIds: deps.fieldIds } : {}),
  });
  return {
    producer,
    registry,
    // DuckDB with file access, for the Iceberg compaction schedule (compaction
    // rewrites the table's own files: its inputs are bounded, not record data).
    db: fileDb,
    status: () => ({
      ...reg?.status(),
      parquet: {
        scratchDir,
        rawParquet: raw,
        processesRunning: runner.running(),
        addressSpaceBytes,
        processes: runner.children(),
      },
    }),
    setVolumeLow(low) {
      if (onWalVolume) runner.setVolumeLow(low);
    },
    async close(graceMs = 10_000) {
      closed = true;
      await runner.close(graceMs);
      reg?.close();
      const compactionDb = fileDbCreating;
      fileDbCreating = undefined;
      if (compactionDb !== undefined)
        await compactionDb.then(
          (d) => d.close(),
          () => undefined,
        );
      const pending = creating;
      creating = undefined;
      if (pending === undefined) return;
      let timer: NodeJS.Timeout | undefined;
      const closing = pending.then(
        (d) => d.close(),
        () => undefined,
      );
      const late = await Promise.race([
        closing.then(() => false),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(true), graceMs);
        }),
      ]);
      clearTimeout(timer);
      if (late)
        deps.log.warn({ graceMs }, 'a segment is still being materialised; not waiting for DuckDB to close');
    },
  };
}
