export { buildServer } from './server.ts';
export type { IngestServer, ServerDeps } from './server.ts';
export { FileApiKeySource, parseKeys, presentedKey, staticApiKeys, SCOPES } from './auth.ts';
export type { ApiKeyMatch, ApiKeySource, Scope } from './auth.ts';
export { IdempotencyCache } from './idempotency.ts';
export { splitJson, splitNdjson, splitRecordio, splitRecords } from './records.ts';
export type { BodyFormat } from './records.ts';
