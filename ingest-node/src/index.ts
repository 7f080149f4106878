// Public surface of @landfall/ingest-node for embedders and the other packages
// (the operator generates its CRD and Helm values schema from the config blocks).

export { startNode } from './node.ts';
export type { NodeDeps, RunningNode } from './node.ts';
export { buildServer } from './http/server.ts';
export type { IngestServer, ServerDeps } from './http/server.ts';
export { FileApiKeySource, staticApiKeys } from './http/auth.ts';
export type { ApiKeyMatch, ApiKeySource, Scope } from './http/auth.ts';
export * from './config/index.ts';
export * from './errors.ts';
export { Backpressure, fileSystemProbe, statfsProbe } from './backpressure.ts';
export type { BackpressureSnapshot, DiskSpace, DiskSpaceProbe, NotReadyReason } from './backpressure.ts';
export { createMetrics } from './metrics.ts';
export type { NodeMetrics } from './metrics.ts';
export { commands, main as cliMain } from './cli.ts';
export type { CliCommand, CliIo } from './cli.ts';
