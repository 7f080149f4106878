// The test bed's cluster with its real node, by hand, until Ctrl-C:
//
//   npm run testbed:node              # control plane + scheduler + containerd + kubelet
//   npm run testbed:node -- --images  # and build + import this checkout's images
//
// Prints the kubeconfig to use with the built kubectl/helm. Everything it
// started (pods included) is reaped when it exits, however it exits.
import { parseArgs } from 'node:util';
import { buildRepoImages, startKubernetes, testbedBinary } from './index.ts';

const { values } = parseArgs({ options: { images: { type: 'boolean', default: false } } });
const kube = await startKubernetes({ node: true });
const node = kube.node;
if (node === undefined) throw new Error('startKubernetes({ node: true }) returned no node');
const lines = [
  `[testbed] cluster ${kube.server} with node ${node.name} Ready in ${kube.startupMs.total} ms`,
  `  export KUBECONFIG=${kube.kubeconfigPath}`,
  `  kubectl: ${testbedBinary('kubectl')}    helm: ${testbedBinary('helm')}`,
  `  crictl --runtime-endpoint ${node.runtimeEndpoint} ps -a`,
  `  logs: ${kube.dir} (kubelet.log, containerd.log, kube-scheduler.log, coredns.log, kube-apiserver.log)`,
  `  cluster DNS for pods: ${node.dnsServer}:53, domain ${node.clusterDomain} (CoreDNS; nothing forwarded)`,
  `  local PVs (StorageClass ${node.storageClass}): ${node.localVolumes.join(', ')}`,
];
process.stdout.write(`${lines.join('\n')}\n`);
if (values.images) {
  const images = await buildRepoImages(node);
  process.stdout.write(
    `  images (imagePullPolicy: Never): ${images.ingestNode} ${images.operator}; ms ${JSON.stringify(images.timingsMs)}\n`,
  );
}
process.stdout.write('Ctrl-C stops everything.\n');
const keepAlive = setInterval(() => {}, 60_000);
let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  clearInterval(keepAlive);
  kube.stop().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${String(err)}\n`);
      process.exit(1);
    },
  );
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
