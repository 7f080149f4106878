// The real test bed, for tests: import from here.
export { startMinio } from './minio.ts';
export type { MinioServer, StartMinioOptions } from './minio.ts';
export { startKubernetes } from './kubernetes.ts';
export type { KubernetesTestbed, StartKubernetesOptions } from './kubernetes.ts';
export {
  acquireNodeLock,
  nodeBinaries,
  CLUSTER_DOMAIN,
  nodeStateDir,
  LOCAL_STORAGE_CLASS,
  NODE_NAME,
  POD_CIDR,
  POD_GATEWAY,
} from './node.ts';
export type { KubeNode, NodeLock, StartNodeOptions } from './node.ts';
export { buildRepoImages, startDockerd } from './images.ts';
export type { Dockerd, RepoImages } from './images.ts';
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
export { icebergRestLibDir, pyicebergPython, startIcebergCatalog } from './iceberg.ts';
export type { IcebergCatalog, StartIcebergCatalogOptions } from './iceberg.ts';
