// View (landfall.dev/v1alpha1): a typed Parquet projection of one Endpoint's
// records (DESIGN §6). The view spec itself is the ingest node's
// (`ViewSpecSchema`, ingest-node/src/views/spec.ts): the CRD is generated from
// it, so a View the apiserver accepts has the shape the node reads. Whether its
// expressions are allowed (columns and scalar functions only) is decided by the
// node's compiler and reported in the `Compiled` condition.
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import {
  ViewColumnSchema,
  ViewPartitionSchema,
  ViewSpecSchema,
} from '../../../ingest-node/src/views/spec.ts';
import { Conditions, LocalObjectReference } from './common.ts';
import type { ObjectMeta } from './common.ts';

export const VIEW_KIND = 'View';
export const VIEW_PLURAL = 'views';

const node = ViewSpecSchema.properties;

export const ViewSpec = Type.Object(
  {
    endpointRef: LocalObjectReference('The Endpoint (same namespace) whose records this view reads.'),
    // Optional here: a View is named by its object; spec.name only overrides it.
    name: Type.Optional(
      Type.String({
        ...node.name,
        description:
          'View name in S3 keys (views/{name}/, dlq/{name}/); defaults to metadata.name with - turned into _.',
      }),
    ),
    source: node.source,
    // List-maps keyed by name/alias: the apiserver refuses duplicates up front
    // and server-side apply merges entries by key.
    columns: Type.Array(ViewColumnSchema, {
      ...node.columns,
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['name'],
    }),
    filter: node.filter,
    partitioning: Type.Optional(
      Type.Array(ViewPartitionSchema, {
        ...node.partitioning,
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['alias'],
      }),
    ),
    // The table; the catalog is the Endpoint's spec.iceberg.
    iceberg: node.iceberg,
  },
  {
    description: 'Desired state of a View: the view spec of DESIGN §6 plus the Endpoint it belongs to.',
    'x-kubernetes-validations': [
      {
        rule: 'self.endpointRef.name == oldSelf.endpointRef.name',
        message: 'endpointRef is immutable: create a new View for another Endpoint',
      },
    ],
  },
);

export const ViewStatus = Type.Object(
  {
    observedGeneration: Type.Optional(
      Type.Integer({ minimum: 0, description: 'The generation last compiled.' }),
    ),
    conditions: Type.Optional(Conditions),
    specHash: Type.Optional(
      Type.String({ description: 'Hash of the compiled spec, as written in commit markers.' }),
    ),
  },
  { description: 'Observed state of a View.' },
);

export type ViewSpec = Static<typeof ViewSpec>;
export type ViewStatus = Static<typeof ViewStatus>;

export interface View {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec: ViewSpec;
  status?: ViewStatus;
}

export const VIEW_PRINTER_COLUMNS = [
  { name: 'Endpoint', type: 'string', jsonPath: '.spec.endpointRef.name' },
  { name: 'Compiled', type: 'string', jsonPath: '.status.conditions[?(@.type=="Compiled")].status' },
  { name: 'Attached', type: 'string', jsonPath: '.status.conditions[?(@.type=="Attached")].status' },
  {
    name: 'Message',
    type: 'string',
    jsonPath: '.status.conditions[?(@.type=="Compiled")].message',
    priority: 1,
  },
  { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
];

export function withViewDefaults(spec: unknown): ViewSpec {
  return Value.Default(ViewSpec, structuredClone(spec)) as ViewSpec;
}

/** The name the view has in S3 keys and in the node config. */
export function viewOutputName(view: Pick<View, 'metadata' | 'spec'>): string {
  return view.spec.name ?? (view.metadata.name ?? '').replaceAll('-', '_').replaceAll('.', '_');
}
