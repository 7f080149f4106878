// The view engine's public surface (docs/views.md).
//
// Operator: validate and compile a View without touching files —
//   const db = await createParquetDb({ memoryLimitBytes, threads: 1 });   // no scratchDir
//   const spec = validateView(crd.spec) // or parseViewYaml(text); throws ViewError {code, path}
//   const compiled = await db.withConnection((c) => compileView(c, spec)); // throws ViewError
//   compiled.specHash, compiled.sql
//
// Pipeline, once per process: createParquetDb({ scratchDir, memoryLimitBytes, threads });
// per sealed segment: materializeSegment(db, { jobId, records, views, raw }),
// upload each file (delivery/keys.ts: rawKey(prefix, ref, file.partitions[0][1]),
// viewKey(prefix, ref, view, file.partitions), dlqKey(prefix, ref, view, file.partitions[0][1])),
// then outputs.cleanup().
export { createParquetDb } from '../parquet/duckdb.ts';
export type { ParquetDb, ParquetDbOptions } from '../parquet/duckdb.ts';
export type { ParquetFile } from '../parquet/outputs.ts';
export type { SegmentRecord } from '../parquet/records.ts';
export { INPUT_RELATION } from '../parquet/records.ts';
export { RAW_PARQUET_COLUMNS, rawParquetSql } from '../parquet/raw.ts';
export type { RawParquetOptions } from '../parquet/raw.ts';
export { ViewError, ViewErrorCode, isViewError } from './errors.ts';
export {
  ViewSpecSchema,
  ViewColumnSchema,
  ViewPartitionSchema,
  parseViewYaml,
  validateView,
  viewSpecHash,
  viewToPlain,
  canonicalJson,
} from './spec.ts';
export type { ViewSpec, ViewSpecInput, ViewColumn, ViewPartition } from './spec.ts';
export { ALLOWED_FUNCTIONS, checkExpression } from './expr.ts';
export { compileView, DlqErrorCode } from './compile.ts';
export type { CompiledView, CompiledPartition, CompileOptions } from './compile.ts';
export { materializeSegment, DLQ_COLUMNS } from './materialize.ts';
export type { MaterializeInput, SegmentOutputs, ViewOutput } from './materialize.ts';
