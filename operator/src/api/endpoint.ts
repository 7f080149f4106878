// Endpoint (landfall.dev/v1alpha1): one ingest endpoint = one StatefulSet of
// ingest nodes, their disks and their identity. DESIGN §7.
//
// Fields that carry a `default` are non-optional in the TypeScript type: the
// apiserver fills them in (structural defaulting) and the operator runs the same
// defaulting (`withEndpointDefaults`) so it never sees a hole. The CRD generator
// leaves them out of `required`.
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import {
  Conditions,
  DNS_LABEL_PATTERN,
  DNS_SUBDOMAIN_PATTERN,
  LocalObjectReference,
  Quantity,
  StringEnum,
} from './common.ts';
import type { ObjectMeta } from './common.ts';
import { IcebergAuthSchema, IcebergSchema } from '../../../ingest-node/src/iceberg/settings.ts';

export const ENDPOINT_KIND = 'Endpoint';
export const ENDPOINT_PLURAL = 'endpoints';

// StatefulSet pod names carry a controller-revision-hash label of the
// StatefulSet name plus 11 characters, capped at 63; our children are named
// `<endpoint>-ingest` (+ `-headless`), so 40 keeps every derived name valid.
export const ENDPOINT_NAME_MAX = 40;

const ROLE_ARN_PATTERN = '^arn:aws[a-zA-Z-]*:iam::[0-9]{12}:role/[\\w+=,.@/-]{1,512}$';

export const S3Target = Type.Object(
  {
    bucket: Type.String({
      minLength: 3,
      maxLength: 63,
      pattern: '^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$',
      description:
        'Bucket that receives segments, Parquet and commit markers. Immutable: the commit log of an Endpoint lives in one bucket.',
      'x-kubernetes-validations': [{ rule: 'self == oldSelf', message: 'bucket is immutable' }],
    }),
    region: Type.String({
      default: 'us-east-1',
      minLength: 1,
      maxLength: 64,
      description: 'Region of the bucket (any non-empty value for S3-compatible stores).',
    }),
    prefix: Type.String({
      default: '',
      maxLength: 512,
      pattern: '^$|^[^/].*[^/]$|^[^/]$',
      description: 'Key prefix under which every artifact is written, without leading or trailing slash.',
    }),
    endpointUrl: Type.Optional(
      Type.String({
        maxLength: 2048,
        pattern: '^https?://[^\\s]+$',
        description: 'Custom S3 endpoint (MinIO, R2, ...). Unset means AWS S3 for the region.',
      }),
    ),
    forcePathStyle: Type.Boolean({
      default: false,
      description:
        'Address the bucket in the path (http://host/bucket/key) instead of the host; MinIO needs it.',
    }),
  },
  { description: 'Where the Endpoint delivers.' },
);

export const AssumeRole = Type.Object(
  {
    roleArn: Type.Optional(
      Type.String({
        pattern: ROLE_ARN_PATTERN,
        maxLength: 2048,
        description: 'IAM role the nodes assume with STS.',
      }),
    ),
    externalId: Type.Optional(
      Type.String({
        minLength: 2,
        maxLength: 1224,
        pattern: '^[\\w+=,.@:/-]+$',
        description:
          'ExternalId passed to AssumeRole (confused-deputy protection). Only valid with a roleArn.',
      }),
    ),
    sessionName: Type.Optional(
      Type.String({
        minLength: 2,
        maxLength: 64,
        pattern: '^[\\w+=,.@-]+$',
        description: 'Role session name; defaults to the pod name.',
      }),
    ),
  },
  {
    description: 'Assume an IAM role with STS (credentials held in memory, refreshed before expiry).',
    'x-kubernetes-validations': [
      {
        rule: '!has(self.externalId) || has(self.roleArn)',
        message: 'externalId is only valid with a roleArn',
      },
      { rule: 'has(self.externalId) || has(self.roleArn)', message: 'assumeRole needs a roleArn' },
    ],
  },
);

export const Credentials = Type.Object(
  {
    irsaRoleArn: Type.Optional(
      Type.String({
        pattern: ROLE_ARN_PATTERN,
        maxLength: 2048,
        description:
          'IAM role for service accounts: set as the eks.amazonaws.com/role-arn annotation of the Endpoint ServiceAccount.',
      }),
    ),
    assumeRole: Type.Optional(AssumeRole),
    secretRef: Type.Optional(
      LocalObjectReference(
        'Static keys (MinIO, R2, other S3-compatible stores): a Secret with the keys accessKeyId and secretAccessKey, passed to the nodes as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY env from secretKeyRef (never written into the ConfigMap). Read at container start: after rotating the keys, restart the pods.',
      ),
    ),
  },
  {
    description:
      'How the nodes get AWS credentials: one of irsaRoleArn, assumeRole or secretRef. Empty means the default chain (Pod Identity, instance profile, environment).',
    'x-kubernetes-validations': [
      {
        rule: '!(has(self.irsaRoleArn) && has(self.assumeRole))',
        message: 'irsaRoleArn and assumeRole are mutually exclusive',
      },
      {
        rule: '!(has(self.secretRef) && (has(self.irsaRoleArn) || has(self.assumeRole)))',
        message: 'secretRef (static keys) is mutually exclusive with irsaRoleArn and assumeRole',
      },
    ],
  },
);

export const Storage = Type.Object(
  {
    storageClassName: Type.Optional(
      Type.String({
        maxLength: 253,
        pattern: DNS_SUBDOMAIN_PATTERN,
        description:
          'StorageClass of the WAL volumes (local NVMe PVs). Unset means the cluster default class.',
      }),
    ),
    size: Quantity({ default: '10Gi', description: 'Size of each replica WAL volume.' }),
  },
  {
    default: { size: '10Gi' },
    description:
      'The WAL volume of each replica. Immutable: StatefulSet volumeClaimTemplates cannot change in place.',
    'x-kubernetes-validations': [{ rule: 'self == oldSelf', message: 'storage is immutable' }],
  },
);

export const SegmentPolicy = Type.Object(
  {
    segmentBytesMax: Type.Integer({
      default: 524288,
      minimum: 65536,
      maximum: 1073741824,
      description: 'Seal the open WAL segment when it reaches this many bytes.',
    }),
    segmentAgeMsMax: Type.Integer({
      default: 60000,
      minimum: 1000,
      maximum: 3600000,
      description:
        'Seal the open WAL segment when its first record is this old (ms); bounds delivery latency.',
    }),
  },
  {
    default: { segmentBytesMax: 524288, segmentAgeMsMax: 60000 },
    description: 'When a WAL segment seals: on size or on age, whichever comes first.',
  },
);

export const Outputs = Type.Object(
  {
    segments: Type.Boolean({
      default: true,
      description: 'Upload each sealed segment as segments/…/{id}.wal.zst.',
    }),
    rawParquet: Type.Boolean({
      default: false,
      description: 'Write raw Parquet (payload, seq, ingest time).',
    }),
  },
  {
    default: { segments: true, rawParquet: false },
    description: 'Artifacts per sealed segment besides the View Parquet. At least one must be on.',
    'x-kubernetes-validations': [
      {
        rule: 'self.segments || self.rawParquet',
        message: 'at least one of segments or rawParquet must be true',
      },
    ],
  },
);

const ResourceList = Type.Record(Type.String(), Quantity(), {
  description: 'Resource name (cpu, memory, ephemeral-storage) to quantity.',
});

export const Resources = Type.Object(
  {
    requests: Type.Optional(ResourceList),
    limits: Type.Optional(ResourceList),
  },
  {
    default: { requests: { cpu: '250m', memory: '512Mi' }, limits: { memory: '1Gi' } },
    description: 'Compute resources of the ingest-node container.',
  },
);

export const Limits = Type.Object(
  {
    bodyBytesMax: Type.Integer({
      default: 10485760,
      minimum: 1024,
      maximum: 104857600,
      description:
        'Largest request body as sent (before gzip/zstd decoding), in bytes; larger requests get 413. The decoded body may be up to the larger of this and 32 MiB.',
    }),
  },
  { default: { bodyBytesMax: 10485760 }, description: 'Request limits of the HTTP API.' },
);

/** A key of a Secret in the Endpoint's namespace. */
const SecretKeyRef = (description: string, defaultKey?: string) =>
  Type.Object(
    {
      name: Type.String({
        minLength: 1,
        maxLength: 253,
        pattern: DNS_SUBDOMAIN_PATTERN,
        description: 'Name of the Secret in the same namespace.',
      }),
      key: Type.String({
        minLength: 1,
        maxLength: 253,
        pattern: '^[-._a-zA-Z0-9]+$',
        ...(defaultKey !== undefined ? { default: defaultKey } : {}),
        description: 'Key in the Secret.',
      }),
    },
    { description },
  );

// MQTT 3.1.1 and 5 both know shared subscriptions; a CEL rule below needs them with several replicas.
const SHARED_PREFIX = '$share/';

export const MqttTopic = Type.Object(
  {
    filter: Type.String({
      minLength: 1,
      maxLength: 1024,
      description:
        'Topic filter, wildcards allowed (sensors/+/temp, site/#). With more than one replica use a shared subscription ($share/landfall/site/#) so each message goes to one replica.',
    }),
    qos: Type.Integer({
      minimum: 0,
      maximum: 1,
      default: 1,
      description: '1: a message is acknowledged only once it is durable in the WAL. 0: best effort.',
    }),
  },
  { description: 'A topic subscription.' },
);

const MqttTopics = (description: string) =>
  Type.Array(MqttTopic, {
    maxItems: 32,
    description,
    'x-kubernetes-list-type': 'map',
    'x-kubernetes-list-map-keys': ['filter'],
  });

export const MqttBroker = Type.Object(
  {
    url: Type.String({
      maxLength: 2048,
      pattern: '^(mqtt|mqtts|ws|wss)://[^\\s@]+$',
      description:
        'mqtt://host:1883, mqtts://host:8883, ws://host/mqtt or wss://...; no credentials in the URL (username and passwordSecretRef).',
    }),
    name: Type.Optional(
      Type.String({
        maxLength: 63,
        pattern: '^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$',
        description: 'Label for metrics and logs; defaults to host-port of the URL.',
      }),
    ),
    username: Type.Optional(Type.String({ minLength: 1, maxLength: 1024, description: 'MQTT username.' })),
    passwordSecretRef: Type.Optional(
      SecretKeyRef(
        'The password: a Secret key mounted as a file the node re-reads before every connect (rotation needs no restart).',
      ),
    ),
    caSecretRef: Type.Optional(
      SecretKeyRef(
        'PEM CA bundle that signed the broker certificate (mqtts/wss), mounted as a file.',
        'ca.crt',
      ),
    ),
    clientCertSecretRef: Type.Optional(
      LocalObjectReference(
        'Mutual TLS: a kubernetes.io/tls Secret (tls.crt, tls.key) mounted as files (mqtts/wss).',
      ),
    ),
    topics: Type.Optional(MqttTopics('Overrides mqtt.topics for this broker.')),
  },
  {
    description: 'A broker the nodes subscribe to (persistent session per replica).',
    'x-kubernetes-validations': [
      {
        rule: '!has(self.passwordSecretRef) || has(self.username)',
        message: 'passwordSecretRef needs a username',
      },
      {
        rule: "!(has(self.caSecretRef) || has(self.clientCertSecretRef)) || self.url.startsWith('mqtts://') || self.url.startsWith('wss://')",
        message: 'caSecretRef and clientCertSecretRef need an mqtts:// or wss:// url',
      },
    ],
  },
);

const nodeIceberg = IcebergSchema.properties;
const nodeIcebergAuth = IcebergAuthSchema.properties;

export const IcebergAuth = Type.Object(
  {
    type: StringEnum(['none', 'bearer', 'oauth2', 'sigv4'], {
      default: 'none',
      description:
        'none: no Authorization header. bearer: the token of tokenSecretRef. oauth2: client credentials (clientIdSecretRef, clientSecretSecretRef) exchanged at tokenUri for a bearer token the nodes cache and replace before it expires. sigv4: AWS Signature Version 4 with the nodes’ AWS identity (spec.credentials: IRSA, AssumeRole, the default chain), for AWS Glue’s and S3 Tables’ Iceberg REST endpoints.',
    }),
    tokenSecretRef: Type.Optional(
      SecretKeyRef(
        'bearer: the token, a Secret key mounted as a file the node re-reads when the kubelet updates it (rotation needs no restart).',
        'token',
      ),
    ),
    clientIdSecretRef: Type.Optional(
      SecretKeyRef('oauth2: the client id, a Secret key mounted as a file.', 'clientId'),
    ),
    clientSecretSecretRef: Type.Optional(
      SecretKeyRef(
        'oauth2: the client secret, a Secret key mounted as a file (read at each token request).',
        'clientSecret',
      ),
    ),
    tokenUri: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 2048,
        pattern: '^https?://[^\\s@]+$',
        description: nodeIcebergAuth.tokenUri.description ?? '',
      }),
    ),
    scope: Type.Optional(
      Type.String({ minLength: 1, maxLength: 1024, description: nodeIcebergAuth.scope.description ?? '' }),
    ),
    signingName: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 63,
        pattern: '^[a-z0-9-]+$',
        description: nodeIcebergAuth.signingName.description ?? '',
      }),
    ),
    signingRegion: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 63,
        pattern: '^[a-z0-9-]+$',
        description: nodeIcebergAuth.signingRegion.description ?? '',
      }),
    ),
  },
  {
    default: { type: 'none' },
    description:
      'How the nodes authenticate to the catalog. Credentials come from Secrets the kubelet mounts into the pods; the operator never reads them.',
    'x-kubernetes-validations': [
      {
        rule: "self.type != 'bearer' || has(self.tokenSecretRef)",
        message: 'type bearer needs tokenSecretRef',
      },
      {
        rule: "self.type != 'oauth2' || (has(self.clientIdSecretRef) && has(self.clientSecretSecretRef))",
        message: 'type oauth2 needs clientIdSecretRef and clientSecretSecretRef',
      },
      {
        rule: "self.type == 'bearer' || !has(self.tokenSecretRef)",
        message: 'tokenSecretRef is for type bearer',
      },
      {
        rule: "self.type == 'oauth2' || !(has(self.clientIdSecretRef) || has(self.clientSecretSecretRef) || has(self.tokenUri) || has(self.scope))",
        message: 'clientIdSecretRef, clientSecretSecretRef, tokenUri and scope are for type oauth2',
      },
      {
        rule: "self.type != 'sigv4' || has(self.signingName)",
        message: 'type sigv4 needs signingName (glue, s3tables)',
      },
      {
        rule: "self.type == 'sigv4' || !(has(self.signingName) || has(self.signingRegion))",
        message: 'signingName and signingRegion are for type sigv4',
      },
    ],
  },
);

export const EndpointIceberg = Type.Object(
  {
    catalogUri: Type.String({
      maxLength: 2048,
      pattern: '^https?://[^\\s@]+$',
      description:
        'Base URI of an Iceberg REST catalog (`http://catalog:8181`; routes under `/v1/`). No credentials in the URI (use auth).',
    }),
    warehouse: Type.Optional(
      Type.String({ minLength: 1, maxLength: 2048, description: nodeIceberg.warehouse.description ?? '' }),
    ),
    auth: IcebergAuth,
  },
  {
    description:
      'The Iceberg REST catalog the nodes commit View tables to: each View with spec.iceberg appends every segment’s files to its table (docs/iceberg.md).',
    'x-kubernetes-validations': [
      {
        rule: "self.auth.type != 'sigv4' || has(self.auth.signingRegion) || self.catalogUri.matches('^https?://[a-z0-9-]+[.][a-z]{2}(-[a-z]+)+-[0-9]+[.]amazonaws[.]com')",
        message: 'type sigv4 needs auth.signingRegion unless catalogUri is <service>.<region>.amazonaws.com',
      },
    ],
  },
);

export const Mqtt = Type.Object(
  {
    brokers: Type.Array(MqttBroker, {
      minItems: 1,
      maxItems: 16,
      description: 'Brokers to subscribe to.',
    }),
    topics: Type.Optional(
      MqttTopics('Topic filters subscribed on every broker that has no topics of its own.'),
    ),
    protocolVersion: Type.Integer({
      minimum: 4,
      maximum: 5,
      default: 5,
      description: '5 (MQTT 5) or 4 (MQTT 3.1.1, for old brokers).',
    }),
  },
  {
    description:
      'MQTT source: each replica subscribes with its own persistent session and acknowledges a QoS 1 message only once it is durable in its WAL (docs/edge.md).',
    'x-kubernetes-validations': [
      {
        rule: '(has(self.topics) && size(self.topics) > 0) || self.brokers.all(b, has(b.topics) && size(b.topics) > 0)',
        message: 'set mqtt.topics, or topics on every broker',
      },
    ],
  },
);

export const MQTT_SHARED_RULE = {
  rule: `!has(self.mqtt) || self.replicas <= 1 || ((!has(self.mqtt.topics) || self.mqtt.topics.all(t, t.filter.startsWith('${SHARED_PREFIX}'))) && self.mqtt.brokers.all(b, !has(b.topics) || b.topics.all(t, t.filter.startsWith('${SHARED_PREFIX}'))))`,
  message: `with more than one replica every MQTT topic filter must be a shared subscription (${SHARED_PREFIX}<group>/<filter>), or each replica would store every message`,
};

/** An object the apiserver keeps as given (a Kubernetes core type the StatefulSet apply validates). */
const KubeObjectField = (description: string, properties: Parameters<typeof Type.Object>[0] = {}) =>
  Type.Object(properties, { description, 'x-kubernetes-preserve-unknown-fields': true });

export const Toleration = Type.Object(
  {
    key: Type.Optional(
      Type.String({ maxLength: 317, description: 'Taint key; empty with Exists matches every taint.' }),
    ),
    operator: Type.Optional(
      StringEnum(['Exists', 'Equal'], { description: 'Exists or Equal (default Equal).' }),
    ),
    value: Type.Optional(Type.String({ maxLength: 63, description: 'Taint value (with Equal).' })),
    effect: Type.Optional(
      StringEnum(['NoSchedule', 'PreferNoSchedule', 'NoExecute'], {
        description: 'Taint effect to match; empty matches all.',
      }),
    ),
    tolerationSeconds: Type.Optional(
      Type.Integer({ description: 'With NoExecute: how long the pod stays bound after the taint appears.' }),
    ),
  },
  { description: 'A toleration (core/v1 Toleration).' },
);

export const PodTemplate = Type.Object(
  {
    metadata: Type.Optional(
      Type.Object(
        {
          annotations: Type.Optional(
            Type.Record(Type.String(), Type.String(), {
              maxProperties: 64,
              description:
                "Annotations of the pods (e.g. karpenter.sh/do-not-disrupt, cluster-autoscaler.kubernetes.io/safe-to-evict). landfall.dev/config-hash is the operator's.",
              'x-kubernetes-validations': [
                {
                  rule: "!('landfall.dev/config-hash' in self)",
                  message: 'landfall.dev/config-hash is set by the operator',
                },
              ],
            }),
          ),
        },
        { description: 'Metadata added to the pods.' },
      ),
    ),
    nodeSelector: Type.Optional(
      Type.Record(Type.String(), Type.String(), {
        maxProperties: 64,
        description: 'Node labels the pods must run on.',
      }),
    ),
    tolerations: Type.Optional(
      Type.Array(Toleration, { maxItems: 64, description: 'Tolerations of the pods.' }),
    ),
    affinity: Type.Optional(
      KubeObjectField(
        "core/v1 Affinity. Each of nodeAffinity, podAffinity and podAntiAffinity given here replaces the operator's; unset, podAntiAffinity stays the operator's (replicas preferably on different nodes).",
      ),
    ),
    topologySpreadConstraints: Type.Optional(
      Type.Array(
        KubeObjectField(
          "core/v1 TopologySpreadConstraint. Without a labelSelector the operator selects this Endpoint's pods.",
          {
            maxSkew: Type.Integer({ minimum: 1, description: 'Largest allowed difference of pod counts.' }),
            topologyKey: Type.String({
              minLength: 1,
              maxLength: 317,
              description: 'Node label, e.g. topology.kubernetes.io/zone.',
            }),
            whenUnsatisfiable: StringEnum(['DoNotSchedule', 'ScheduleAnyway'], {
              description: 'What to do when the spread cannot be met.',
            }),
          },
        ),
        { maxItems: 16, description: 'Spread the replicas over zones or nodes.' },
      ),
    ),
    priorityClassName: Type.Optional(
      Type.String({
        maxLength: 253,
        pattern: DNS_SUBDOMAIN_PATTERN,
        description: 'PriorityClass of the pods.',
      }),
    ),
    imagePullSecrets: Type.Optional(
      Type.Array(LocalObjectReference('A pull Secret for the image.'), {
        maxItems: 16,
        description: 'Pull Secrets for the ingest-node image (a private registry).',
      }),
    ),
  },
  {
    description:
      'Overrides of the pod template, as Strimzi (template.pod) and CloudNativePG users expect. A change rolls the pods.',
  },
);

const Annotations = (description: string) =>
  Type.Record(Type.String(), Type.String(), { maxProperties: 64, description });

const HOSTNAME_PATTERN = '^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';

export const ExposeService = Type.Object(
  {
    type: StringEnum(['ClusterIP', 'NodePort', 'LoadBalancer'], {
      default: 'ClusterIP',
      description:
        'Type of the client Service <endpoint>-ingest. NodePort and LoadBalancer reach producers outside the cluster; set tls.secretRef (or put an Ingress or Gateway with TLS in front) so data does not cross networks in clear text.',
    }),
    annotations: Type.Optional(
      Annotations(
        'Annotations of the client Service, e.g. service.beta.kubernetes.io/aws-load-balancer-scheme: internet-facing.',
      ),
    ),
    loadBalancerSourceRanges: Type.Optional(
      Type.Array(
        Type.String({
          maxLength: 43,
          pattern: '^[0-9a-fA-F:.]+/[0-9]{1,3}$',
          description: 'A CIDR, e.g. 203.0.113.0/24.',
        }),
        {
          maxItems: 64,
          description: 'Only these client networks may reach the load balancer (type LoadBalancer only).',
        },
      ),
    ),
  },
  {
    default: { type: 'ClusterIP' },
    description: 'The client Service.',
    'x-kubernetes-validations': [
      {
        rule: "!has(self.loadBalancerSourceRanges) || size(self.loadBalancerSourceRanges) == 0 || self.type == 'LoadBalancer'",
        message: 'loadBalancerSourceRanges needs type LoadBalancer',
      },
    ],
  },
);

export const ExposeIngress = Type.Object(
  {
    className: Type.Optional(
      Type.String({
        maxLength: 253,
        pattern: DNS_SUBDOMAIN_PATTERN,
        description: 'IngressClass; unset means the cluster default class.',
      }),
    ),
    host: Type.String({
      maxLength: 253,
      pattern: HOSTNAME_PATTERN,
      description: 'Host name producers use, e.g. ingest.example.com.',
    }),
    tlsSecretName: Type.Optional(
      Type.String({
        maxLength: 253,
        pattern: DNS_SUBDOMAIN_PATTERN,
        description:
          'kubernetes.io/tls Secret with the certificate for host (e.g. written by a cert-manager Certificate); the Ingress controller terminates TLS with it.',
      }),
    ),
    annotations: Type.Optional(
      Annotations(
        'Annotations of the Ingress (controller settings; with tls.secretRef the backend speaks HTTPS, e.g. nginx.ingress.kubernetes.io/backend-protocol: HTTPS).',
      ),
    ),
  },
  { description: 'An Ingress <endpoint>-ingest routing host to the client Service.' },
);

const ParentRef = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 253, description: 'Name of the Gateway.' }),
    namespace: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 63,
        pattern: DNS_LABEL_PATTERN,
        description: "Namespace of the Gateway; unset means the Endpoint's.",
      }),
    ),
    sectionName: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 253,
        pattern: DNS_SUBDOMAIN_PATTERN,
        description: 'Listener of the Gateway to attach to.',
      }),
    ),
  },
  { description: 'A Gateway the route attaches to.' },
);

export const ExposeHttpRoute = Type.Object(
  {
    parentRefs: Type.Array(ParentRef, {
      minItems: 1,
      maxItems: 32,
      description: 'Gateways (Gateway API) the route attaches to.',
    }),
    hostnames: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 253, pattern: HOSTNAME_PATTERN }), {
        maxItems: 16,
        description: 'Host names the route matches; unset means those of the listener.',
      }),
    ),
  },
  {
    description:
      'A Gateway API HTTPRoute <endpoint>-ingest to the client Service (needs the Gateway API CRDs in the cluster).',
  },
);

export const ExposeTls = Type.Object(
  {
    secretRef: LocalObjectReference(
      'A kubernetes.io/tls Secret (tls.crt, tls.key) mounted into the pods: the nodes serve HTTPS with it (listen.tls), and pick up a renewed certificate without a restart.',
    ),
  },
  { description: 'HTTPS on the ingest nodes themselves (end to end, whatever is in front).' },
);

export const Expose = Type.Object(
  {
    service: ExposeService,
    ingress: Type.Optional(ExposeIngress),
    httpRoute: Type.Optional(ExposeHttpRoute),
    tls: Type.Optional(ExposeTls),
  },
  {
    default: { service: { type: 'ClusterIP' } },
    description: 'How producers reach the Endpoint: the client Service, an Ingress, an HTTPRoute, and TLS.',
  },
);

export const EndpointSpec = Type.Object(
  {
    s3: S3Target,
    credentials: Type.Optional(Credentials),
    apiKeySecretRef: LocalObjectReference(
      'Secret whose every key is a valid API key (several at once allow rotation). Mounted read-only into the pods.',
    ),
    storage: Storage,
    segmentPolicy: SegmentPolicy,
    outputs: Outputs,
    replicas: Type.Integer({
      default: 1,
      minimum: 0,
      maximum: 64,
      description: 'Ingest nodes; each is an instance with its own WAL, volume and S3 keys.',
    }),
    resources: Resources,
    limits: Limits,
    validation: StringEnum(['none', 'json'], {
      default: 'none',
      description:
        'none: accept any record bytes (bad records go to the DLQ). json: reject a request with a non-JSON line (400).',
    }),
    mqtt: Type.Optional(Mqtt),
    iceberg: Type.Optional(EndpointIceberg),
    runtimeClassName: Type.Optional(
      Type.String({
        maxLength: 253,
        pattern: DNS_SUBDOMAIN_PATTERN,
        description: 'RuntimeClass of the pods, e.g. kata for microVM isolation.',
      }),
    ),
    image: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 1024,
        description: "Ingest-node image; defaults to the operator's --node-image.",
      }),
    ),
    podTemplate: Type.Optional(PodTemplate),
    expose: Expose,
  },
  { description: 'Desired state of an Endpoint.', 'x-kubernetes-validations': [MQTT_SHARED_RULE] },
);

export const EndpointStatus = Type.Object(
  {
    observedGeneration: Type.Optional(
      Type.Integer({ minimum: 0, description: 'The generation last reconciled.' }),
    ),
    conditions: Type.Optional(Conditions),
    replicas: Type.Optional(Type.Integer({ minimum: 0, description: 'Pods the StatefulSet has.' })),
    readyReplicas: Type.Optional(Type.Integer({ minimum: 0, description: 'Pods passing /readyz.' })),
    url: Type.Optional(
      Type.String({ description: 'In-cluster base URL of the ingest API (POST {url}/v1/ingest).' }),
    ),
    configHash: Type.Optional(
      Type.String({ description: 'Hash of the node configuration the pods run with.' }),
    ),
    views: Type.Optional(
      Type.Array(Type.String({ maxLength: 253 }), {
        maxItems: 256,
        description: 'Views compiled into the config.',
      }),
    ),
    selector: Type.Optional(
      Type.String({
        description:
          'Label selector of the pods, for the scale subresource (kubectl scale, HorizontalPodAutoscaler).',
      }),
    ),
  },
  { description: 'Observed state of an Endpoint.' },
);

export type EndpointSpec = Static<typeof EndpointSpec>;
export type EndpointStatus = Static<typeof EndpointStatus>;

export interface Endpoint {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec: EndpointSpec;
  status?: EndpointStatus;
}

export const ENDPOINT_NAME_RULE = {
  rule: `self.metadata.name.size() <= ${ENDPOINT_NAME_MAX}`,
  message: `metadata.name must be at most ${ENDPOINT_NAME_MAX} characters (derived StatefulSet pod names must stay valid)`,
};

export const ENDPOINT_PRINTER_COLUMNS = [
  { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
  { name: 'Replicas', type: 'integer', jsonPath: '.spec.replicas' },
  { name: 'Available', type: 'integer', jsonPath: '.status.readyReplicas', priority: 1 },
  { name: 'URL', type: 'string', jsonPath: '.status.url' },
  { name: 'Reason', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].reason', priority: 1 },
  { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
];

/** The spec with every schema default filled in, as the apiserver would. Does not mutate. */
export function withEndpointDefaults(spec: unknown): EndpointSpec {
  const out = Value.Default(EndpointSpec, structuredClone(spec)) as EndpointSpec;
  // TypeBox merges an object default into a partial object; the apiserver
  // uses it only when the field is absent. `resources` is the one object
  // whose children have no defaults of their own: `{ requests: … }` alone
  // must not gain the default memory limit.
  const given = (spec as { resources?: unknown } | null | undefined)?.resources;
  if (given !== undefined) out.resources = structuredClone(given) as EndpointSpec['resources'];
  return out;
}

/** Schema errors of a spec (after defaulting), for a clear status when the CRD is older than the operator. */
export function endpointSpecErrors(spec: unknown): string[] {
  return [...Value.Errors(EndpointSpec, spec)].map((e) => `spec${e.path.replaceAll('/', '.')}: ${e.message}`);
}

export { DNS_LABEL_PATTERN };
