export * from './schema.ts';
export { ConfigError, defaultConfig, instanceIdFromHostname, isLoopbackHost, loadConfig } from './load.ts';
export type { LoadConfigOptions } from './load.ts';
export { VERSION } from './version.ts';
