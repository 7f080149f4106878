// The real test bed, for tests: import from here.
export { startMinio } from './minio.ts';
export type { MinioServer, StartMinioOptions } from './minio.ts';
export { startKubernetes } from './kubernetes.ts';
export type { KubernetesTestbed, StartKubernetesOptions } from './kubernetes.ts';
export { startMosquitto } from './mosquitto.ts';
export type { MosquittoServer, StartMosquittoOptions } from './mosquitto.ts';
export {
  freePort,
  keepArtifacts,
  liveProcesses,
  repoRoot,
  runDir,
  runTool,
  scratchDir,
  startProcess,
  testbedBinary,
  testbedCacheDir,
  testbedVersions,
  waitFor,
  ServerStartError,
  TestbedMissingError,
} from './proc.ts';
export type {
  ExitInfo,
  ServerProcess,
  StartProcessOptions,
  TestbedBinaryName,
  WaitForOptions,
} from './proc.ts';
