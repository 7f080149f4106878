// The Helm chart's values: one TypeBox source for charts/landfall/values.yaml
// (defaults, with each description as a comment) and values.schema.json (which
// Helm checks on every install, upgrade, lint and template). Written by
// scripts/gen-chart.ts; a test fails when the checked-in files drift.
import { Type } from '@sinclair/typebox';
import { DNS_LABEL_PATTERN, QUANTITY_PATTERN, StringEnum } from '../operator/src/api/common.ts';

const Str = (def: string, description: string, extra: Record<string, unknown> = {}) =>
  Type.String({ default: def, description, ...extra });

const StringMap = (description: string) =>
  Type.Record(Type.String(), Type.String(), { default: {}, description });

const Quantity = Type.Union([Type.Integer(), Type.String({ pattern: QUANTITY_PATTERN })]);
const ResourceList = (def: Record<string, string>, description: string) =>
  Type.Record(Type.String(), Quantity, { default: def, description });

const Image = (repository: string, what: string, description: string) =>
  Type.Object(
    {
      repository: Str(repository, `Repository of the ${what} image.`, { minLength: 1 }),
      tag: Str('', 'Image tag; empty means the chart appVersion.'),
      digest: Str('', 'Image digest (sha256:…); when set it wins over the tag.', {
        pattern: '^$|^sha256:[a-f0-9]{64}$',
      }),
    },
    { additionalProperties: false, description },
  );

export const ChartValues = Type.Object(
  {
    image: Type.Object(
      {
        ...Image('ghcr.io/landfall/operator', 'operator', '').properties,
        pullPolicy: StringEnum(['Always', 'IfNotPresent', 'Never'], {
          default: 'IfNotPresent',
          description: 'Pull policy of the operator image.',
        }),
      },
      { additionalProperties: false, description: 'The operator image.' },
    ),
    nodeImage: Image(
      'ghcr.io/landfall/ingest-node',
      'ingest-node',
      'The ingest-node image of Endpoints without spec.image (--node-image).',
    ),
    allowedImages: Type.Array(Type.String({ minLength: 1 }), {
      default: [],
      description:
        "Image prefixes an Endpoint's spec.image must start with (--allowed-images), e.g. registry.example.com/landfall/. Empty: any image. Without it, whoever may create an Endpoint may run any image with the namespace's Secrets the Endpoint names.",
    }),
    imagePullSecrets: Type.Array(
      Type.Object({ name: Type.String({ minLength: 1 }) }, { additionalProperties: false }),
      {
        default: [],
        description: 'Pull secrets for the operator pod (the ingest pods use their own ServiceAccount).',
      },
    ),
    replicas: Type.Integer({
      default: 1,
      minimum: 1,
      maximum: 5,
      description:
        'Operator pods. Leader election is always on: one leads, the others stand by and take over within a lease duration.',
    }),
    watchNamespaces: Type.Array(Type.String({ pattern: DNS_LABEL_PATTERN, maxLength: 63 }), {
      default: [],
      uniqueItems: true,
      description:
        'Namespaces whose Endpoints and Views the operator reconciles (--watch-namespaces), each listed and watched on its own. Empty (with watchNamespace empty): all namespaces (ClusterRole). Set: the same rules as a Role in each of them, nothing cluster-wide but the read-only nodes role of nodeDrain.',
    }),
    watchNamespace: Str(
      '',
      'One namespace to watch: added to watchNamespaces (kept for existing values files).',
      { pattern: `^$|${DNS_LABEL_PATTERN}`, maxLength: 63 },
    ),
    nodeDrain: Type.Object(
      {
        enabled: Type.Boolean({
          default: true,
          description:
            'Watch Nodes (--node-drain): when a node running an ingest pod is cordoned or tainted for removal (kubectl drain, node-group upgrades, Karpenter, Cluster Autoscaler), drain that replica, then delete its claim and pod so it comes back on another node with a new volume. Adds a ClusterRole with nodes get/list/watch (read only), also with watchNamespace set.',
        }),
      },
      { additionalProperties: false, description: 'Node drains (docs/operations.md).' },
    ),
    workers: Type.Integer({
      default: 2,
      minimum: 1,
      maximum: 32,
      description: 'Concurrent reconciles per controller (--workers).',
    }),
    resyncPeriodMs: Type.Integer({
      default: 300000,
      minimum: 10000,
      description: 'Reconcile every Endpoint and View again this often (--resync-period-ms).',
    }),
    logLevel: StringEnum(['debug', 'info', 'warn', 'error'], {
      default: 'info',
      description: 'Operator log level (JSON lines on stdout).',
    }),
    leaderElection: Type.Object(
      {
        leaseDurationMs: Type.Integer({
          default: 15000,
          minimum: 1000,
          description: 'A standby takes the Lease once the leader has not renewed for this long.',
        }),
        renewDeadlineMs: Type.Integer({
          default: 10000,
          minimum: 500,
          description: 'A leader that could not renew for this long steps down (less than leaseDurationMs).',
        }),
        retryPeriodMs: Type.Integer({
          default: 2000,
          minimum: 100,
          description: 'How often the leader renews and standbys try.',
        }),
      },
      {
        additionalProperties: false,
        description:
          'Leader election (always on). The Lease is named after the release, in the release namespace.',
      },
    ),
    metrics: Type.Object(
      {
        port: Type.Integer({
          default: 8080,
          minimum: 1,
          maximum: 65535,
          description: 'Container port of /metrics, /healthz and /readyz.',
        }),
        service: Type.Object(
          {
            enabled: Type.Boolean({ default: true, description: 'Create a ClusterIP Service for /metrics.' }),
            port: Type.Integer({ default: 8080, minimum: 1, maximum: 65535, description: 'Service port.' }),
            annotations: StringMap('Annotations of the metrics Service (e.g. prometheus.io/scrape).'),
          },
          { additionalProperties: false, description: 'The metrics Service.' },
        ),
        serviceMonitor: Type.Object(
          {
            enabled: Type.Boolean({
              default: false,
              description: 'Create a ServiceMonitor (needs the Prometheus Operator CRDs).',
            }),
            interval: Str('30s', 'Scrape interval.'),
            scrapeTimeout: Str('10s', 'Scrape timeout.'),
            labels: StringMap('Extra labels, e.g. the release label your Prometheus selects on.'),
          },
          {
            additionalProperties: false,
            description: 'Prometheus Operator ServiceMonitor for the operator.',
          },
        ),
      },
      { additionalProperties: false, description: 'Operator metrics and probes.' },
    ),
    networkPolicy: Type.Object(
      {
        enabled: Type.Boolean({
          default: true,
          description:
            "A NetworkPolicy per Endpoint, rendered by the operator (it knows each Endpoint's pod labels; Endpoints live in namespaces the chart does not manage): ingest (port http) from anywhere; the admin port (/metrics, /v1/status) from the operator's pods and from metricsNamespace only. Needs a CNI that enforces NetworkPolicies. false: none, and the operator deletes the ones it made.",
        }),
        metricsNamespace: Str(
          'monitoring',
          "Namespace whose pods may scrape the ingest nodes' /metrics (Prometheus). Empty: only the operator reaches the admin port.",
          { pattern: `^$|${DNS_LABEL_PATTERN}`, maxLength: 63 },
        ),
      },
      { additionalProperties: false, description: 'NetworkPolicy of the ingest pods.' },
    ),
    resources: Type.Object(
      {
        requests: ResourceList({ cpu: '50m', memory: '192Mi' }, 'Requests of the operator container.'),
        limits: ResourceList({ memory: '512Mi' }, 'Limits of the operator container.'),
      },
      {
        additionalProperties: false,
        description: 'Operator container resources (it also loads DuckDB to compile Views).',
      },
    ),
    serviceAccount: Type.Object(
      {
        create: Type.Boolean({ default: true, description: 'Create the operator ServiceAccount.' }),
        name: Str('', 'Its name; empty means the release full name.'),
        annotations: StringMap('Annotations of the ServiceAccount.'),
      },
      { additionalProperties: false, description: 'The operator identity.' },
    ),
    rbac: Type.Object(
      {
        create: Type.Boolean({
          default: true,
          description: 'Create the (Cluster)Role and bindings the operator needs (see the chart README).',
        }),
      },
      { additionalProperties: false, description: 'RBAC.' },
    ),
    podAnnotations: StringMap('Extra annotations of the operator pods.'),
    podLabels: StringMap('Extra labels of the operator pods.'),
    priorityClassName: Str('', 'PriorityClass of the operator pods.'),
    nodeSelector: StringMap('Node selector of the operator pods.'),
    tolerations: Type.Array(Type.Record(Type.String(), Type.Unknown()), {
      default: [],
      description: 'Tolerations of the operator pods.',
    }),
    affinity: Type.Record(Type.String(), Type.Unknown(), {
      default: {},
      description: 'Affinity of the operator pods.',
    }),
    global: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), { description: 'Helm global values (unused here).' }),
    ),
  },
  {
    additionalProperties: false,
    title: 'Values of the landfall chart',
    description: 'Generated from scripts/gen-chart-values.ts by npm run gen:chart.',
  },
);
