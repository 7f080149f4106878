// `landfall iceberg compact --table NS.TABLE …`: rewrites a table's small data
// files, per partition, into fewer larger ones and commits a `replace`
// snapshot (iceberg/compact.ts, docs/iceberg.md "Compaction"). The same run a
// node does on `iceberg.compaction.intervalMs`, by hand or from a CronJob.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { restCatalogFrom } from '../iceberg/auth.ts';
import { createCredentialsProvider } from '../credentials.ts';
import {
  compactionBinsMaxDefault,
  compactionMinFilesDefault,
  compactionTargetFileBytesDefault,
  compactTable,
  type CompactionResult,
} from '../iceberg/compact.ts';
import {
  icebergAuthProblems,
  icebergConflictRetriesMaxDefault,
  icebergRefreshMarginMsDefault,
  icebergRequestTimeoutMsDefault,
  icebergTokenRetriesMaxDefault,
  type IcebergAuthConfig,
} from '../iceberg/settings.ts';
import { createParquetDb, type ParquetDb } from '../parquet/duckdb.ts';
import {
  exitOk,
  guarded,
  parse,
  storeFromFlags,
  storeHelp,
  storeOptions,
  stringFlag,
  UsageError,
  wantsHelp,
  type Command,
  type CommandIo,
  type ParsedValues,
} from './common.ts';

const MiB = 1024 * 1024;

export function help(): string {
  return [
    'landfall iceberg compact --table NS.TABLE --catalog-uri URI [--warehouse W] [options] [store]',
    '',
    "Compacts an Iceberg table Landfall appends to: the current snapshot's live data files are grouped by",
    'partition; a partition with at least --min-files files smaller than --target-file-bytes has them',
    'rewritten (DuckDB, the table field ids kept) into files of about that size, committed as one `replace`',
    'snapshot that the catalog accepts only if nothing else committed meanwhile (else it re-plans on the new',
    'snapshot and retries). Rows and content are unchanged. Old files are NOT deleted from the bucket:',
    'earlier snapshots still reference them; expiring snapshots is a separate job.',
    '',
    'Options:',
    '  --table NS.TABLE          the table (repeat for several)',
    '  --catalog-uri URI         Iceberg REST catalog base URI (as iceberg.catalogUri); env LANDFALL_ICEBERG_CATALOG_URI',
    '  --warehouse W             warehouse asked for (as iceberg.warehouse); env LANDFALL_ICEBERG_WAREHOUSE',
    '  --auth TYPE               catalog auth as iceberg.auth.type: none (default), bearer, oauth2, sigv4',
    '  --token-file F            bearer: the token file',
    '  --client-id-file F        oauth2: client id file (with --client-secret-file; --token-uri, --scope optional)',
    '  --client-secret-file F    oauth2: client secret file',
    '  --token-uri URI           oauth2: token endpoint (default <catalog-uri>/v1/oauth/tokens)',
    '  --scope S                 oauth2: scope of the token request',
    '  --signing-name N          sigv4: glue or s3tables (signed with the AWS default credential chain)',
    '  --signing-region R        sigv4: region (default: from the catalog URI)',
    `  --target-file-bytes N     files below this are small; a rewrite takes up to this many input bytes (default ${compactionTargetFileBytesDefault})`,
    `  --min-files N             small files a partition needs before it is rewritten (default ${compactionMinFilesDefault}, ≥ 2)`,
    `  --bins-max N              rewritten files per run at most (default ${compactionBinsMaxDefault})`,
    `  --conflict-retries-max N  catalog 409s (an append landed) re-planned before giving up (default ${icebergConflictRetriesMaxDefault})`,
    '  --dry-run                 plan only: print what would be rewritten, change nothing',
    '  --json                    one JSON object per table on stdout (else a line per table)',
    '  --scratch DIR             where inputs are downloaded (default: a temp folder, removed afterwards)',
    '  --threads N               DuckDB threads (default 2)',
    '  --memory-mb N             DuckDB memory limit (default 1024)',
    '',
    'The store must be the S3 bucket the data files are in (--bucket; --prefix as the node’s s3.prefix: new',
    'files go to {prefix}/iceberg/{namespace}/{table}/data/ and …/metadata/).',
    'Exit code: 0 done (also when there was nothing to do), 1 failed, 2 usage.',
    '',
    storeHelp,
    '',
  ].join('\n');
}

const options = {
  ...storeOptions,
  table: { type: 'string', multiple: true },
  'catalog-uri': { type: 'string' },
  warehouse: { type: 'string' },
  auth: { type: 'string' },
  'token-file': { type: 'string' },
  'client-id-file': { type: 'string' },
  'client-secret-file': { type: 'string' },
  'token-uri': { type: 'string' },
  scope: { type: 'string' },
  'signing-name': { type: 'string' },
  'signing-region': { type: 'string' },
  'target-file-bytes': { type: 'string' },
  'min-files': { type: 'string' },
  'bins-max': { type: 'string' },
  'conflict-retries-max': { type: 'string' },
  'dry-run': { type: 'boolean' },
  json: { type: 'boolean' },
  scratch: { type: 'string' },
  threads: { type: 'string' },
  'memory-mb': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function intFlag(flag: string, text: string | undefined, dflt: number, min: number): number {
  if (text === undefined) return dflt;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`${flag} must be an integer ≥ ${min}`);
  return n;
}

const AUTH_TYPES = ['none', 'bearer', 'oauth2', 'sigv4'] as const;

/** `--auth` and its files as an `iceberg.auth` block, checked by the node's own rules. */
function authFromFlags(values: ParsedValues, catalogUri: string): IcebergAuthConfig {
  const type = stringFlag(values, 'auth') ?? 'none';
  if (!(AUTH_TYPES as readonly string[]).includes(type))
    throw new UsageError(`--auth must be one of ${AUTH_TYPES.join(', ')}`);
  const opt = (k: keyof IcebergAuthConfig, flag: string): Partial<IcebergAuthConfig> => {
    const v = stringFlag(values, flag);
    return v === undefined ? {} : { [k]: v };
  };
  const auth = {
    type: type as IcebergAuthConfig['type'],
    refreshMarginMs: icebergRefreshMarginMsDefault,
    tokenRetriesMax: icebergTokenRetriesMaxDefault,
    ...opt('tokenFile', 'token-file'),
    ...opt('clientIdFile', 'client-id-file'),
    ...opt('clientSecretFile', 'client-secret-file'),
    ...opt('tokenUri', 'token-uri'),
    ...opt('scope', 'scope'),
    ...opt('signingName', 'signing-name'),
    ...opt('signingRegion', 'signing-region'),
  };
  const problems = icebergAuthProblems(auth, catalogUri);
  if (problems.length > 0) throw new UsageError(problems.join('; '));
  return auth;
}

function line(r: CompactionResult): string {
  const what = r.dryRun ? 'would rewrite' : 'rewrote';
  const files = r.bins.reduce((n, b) => n + b.files, 0);
  const commit =
    r.snapshotId !== null
      ? `; replace snapshot ${r.snapshotId}${r.conflicts > 0 ? ` after ${r.conflicts} conflict(s)` : ''}`
      : r.dryRun
        ? ''
        : '; nothing committed';
  return `${r.namespace}.${r.table}: ${what} ${files} files into ${r.bins.length}; data files ${r.dataFilesBefore} → ${r.dataFilesAfter}, manifests ${r.manifestsBefore} → ${r.manifestsAfter}${commit} (${r.durationMs} ms)\n`;
}

export async function run(args: readonly string[], io: CommandIo): Promise<number> {
  if (wantsHelp(args)) {
    io.out(help());
    return exitOk;
  }
  return guarded('iceberg', io, help, async () => {
    const { values, positionals } = parse(args, options);
    const [sub, ...rest] = positionals;
    if (sub !== 'compact')
      throw new UsageError(sub === undefined ? 'missing subcommand: compact' : `unknown subcommand "${sub}"`);
    if (rest.length > 0) throw new UsageError(`unexpected argument ${rest[0]}`);
    const tables = ((values['table'] as unknown as string[] | undefined) ?? []).map((t) => {
      const dot = t.indexOf('.');
      if (dot <= 0 || dot === t.length - 1) throw new UsageError(`--table ${t}: expected NAMESPACE.TABLE`);
      return { namespace: t.slice(0, dot), table: t.slice(dot + 1) };
    });
    if (tables.length === 0) throw new UsageError('name a table: --table NAMESPACE.TABLE');
    const catalogUri = stringFlag(values, 'catalog-uri') ?? io.env['LANDFALL_ICEBERG_CATALOG_URI'];
    if (catalogUri === undefined || !/^https?:\/\//.test(catalogUri))
      throw new UsageError('--catalog-uri http(s)://… is required');
    const warehouse = stringFlag(values, 'warehouse') ?? io.env['LANDFALL_ICEBERG_WAREHOUSE'];
    const bucket = stringFlag(values, 'bucket');
    if (bucket === undefined)
      throw new UsageError('--bucket is required (table data files are s3:// objects)');
    const targetFileBytes = intFlag(
      '--target-file-bytes',
      stringFlag(values, 'target-file-bytes'),
      compactionTargetFileBytesDefault,
      1024,
    );
    const minFiles = intFlag('--min-files', stringFlag(values, 'min-files'), compactionMinFilesDefault, 2);
    const binsMax = intFlag('--bins-max', stringFlag(values, 'bins-max'), compactionBinsMaxDefault, 1);
    const conflictRetriesMax = intFlag(
      '--conflict-retries-max',
      stringFlag(values, 'conflict-retries-max'),
      icebergConflictRetriesMaxDefault,
      0,
    );
    const threads = intFlag('--threads', stringFlag(values, 'threads'), 2, 1);
    const memoryMb = intFlag('--memory-mb', stringFlag(values, 'memory-mb'), 1024, 16);
    const dryRun = values['dry-run'] === true;
    const json = values['json'] === true;

    const opened = storeFromFlags(values, io.env);
    const auth = authFromFlags(values, catalogUri);
    // The same client (and auth) as the node's appends: a catalog that wants a token wants it here too.
    const catalog = restCatalogFrom(
      {
        catalogUri,
        ...(warehouse !== undefined ? { warehouse } : {}),
        requestTimeoutMs: icebergRequestTimeoutMsDefault,
        conflictRetriesMax,
        auth,
      },
      { awsCredentials: () => createCredentialsProvider({ mode: 'default' }) },
    );
    const ownScratch = stringFlag(values, 'scratch') === undefined;
    const scratch =
      stringFlag(values, 'scratch') ?? (await mkdtemp(path.join(tmpdir(), 'landfall-iceberg-compact-')));
    let db: ParquetDb | undefined;
    try {
      db = await createParquetDb({ scratchDir: scratch, memoryLimitBytes: memoryMb * MiB, threads });
      for (const t of tables) {
        const r = await compactTable({
          catalog,
          store: opened.store,
          bucket,
          prefix: opened.prefix,
          db,
          namespace: t.namespace,
          table: t.table,
          targetFileBytes,
          minFiles,
          binsMax,
          conflictRetriesMax,
          dryRun,
        });
        io.out(json ? `${JSON.stringify(r)}\n` : line(r));
      }
    } finally {
      await db?.close();
      opened.close();
      if (ownScratch) await rm(scratch, { recursive: true, force: true });
    }
    return exitOk;
  });
}

export const icebergCommand: Command = {
  name: 'iceberg',
  summary: 'Iceberg table maintenance: `iceberg compact` rewrites small data files (replace snapshot)',
  help,
  run,
};
