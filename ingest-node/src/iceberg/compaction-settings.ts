// The node's `iceberg.compaction` config block (a part of `iceberg`, settings.ts).
// Kept apart from compact.ts so the config schema (which the operator imports)
// pulls in no DuckDB.
import { Type, type Static } from '@sinclair/typebox';

export const compactionTargetFileBytesDefault = 128 * 1024 * 1024;
export const compactionMinFilesDefault = 10;
export const compactionBinsMaxDefault = 100;

export const IcebergCompactionSchema = Type.Object(
  {
    intervalMs: Type.Integer({
      minimum: 0,
      default: 0,
      description:
        'Compact the tables of this node’s Views every this many ms (docs/iceberg.md “Compaction”): a partition with at least minFiles data files below targetFileBytes has them rewritten into one and committed as a replace snapshot. 0: never (run `landfall iceberg compact` instead). Turn it on for one replica of an Endpoint.',
    }),
    targetFileBytes: Type.Integer({
      minimum: 1024,
      default: compactionTargetFileBytesDefault,
      description:
        'Data files below this size are small; one rewrite takes up to this many input bytes (so new files come out about this size or smaller, Parquet recompressed).',
    }),
    minFiles: Type.Integer({
      minimum: 2,
      default: compactionMinFilesDefault,
      description: 'Small files a partition needs before they are rewritten.',
    }),
    binsMax: Type.Integer({
      minimum: 1,
      default: compactionBinsMaxDefault,
      description:
        'New files written per table per run at most: bounds one run’s work; the next run takes the rest.',
    }),
  },
  {
    additionalProperties: false,
    default: {},
    description: 'Scheduled compaction of the View tables (small files rewritten into fewer, larger ones).',
  },
);

export type IcebergCompactionConfig = Static<typeof IcebergCompactionSchema>;
