// View (landfall.dev/v1alpha1): a typed Parquet projection of one Endpoint's
// records (DESIGN §6). The CRD checks the shape; whether the expressions are
// allowed (columns and scalar functions only) is decided by the view compiler
// and reported in the `Compiled` condition.
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { Conditions, LocalObjectReference, StringEnum } from './common.ts';
import type { ObjectMeta } from './common.ts';

export const VIEW_KIND = 'View';
export const VIEW_PLURAL = 'views';

const IDENTIFIER_PATTERN = '^[a-z_][a-z0-9_]{0,62}$';

export const ViewColumn = Type.Object(
  {
    name: Type.String({ pattern: IDENTIFIER_PATTERN, description: 'Column name in the Parquet output.' }),
    type: Type.String({
      minLength: 1,
      maxLength: 64,
      pattern: '^[A-Za-z][A-Za-z0-9_ ]*(\\([0-9, ]+\\))?$',
      description:
        'DuckDB type of the column (VARCHAR, BIGINT, DOUBLE, BOOLEAN, TIMESTAMP, DATE, DECIMAL(p,s), JSON, …).',
    }),
    path: Type.String({
      minLength: 1,
      maxLength: 1024,
      pattern: '^\\$',
      description: 'JSONPath into the record ($.a.b); a value that does not cast sends the row to the DLQ.',
    }),
    required: Type.Boolean({
      default: false,
      description: 'A row whose value is missing (or null) goes to the DLQ instead of the view.',
    }),
  },
  { description: 'One typed column.' },
);

export const ViewPartition = Type.Object(
  {
    expression: Type.String({
      minLength: 1,
      maxLength: 4096,
      description: "Scalar expression over the view's columns, e.g. date_trunc('day', viewed_at).",
    }),
    alias: Type.String({
      pattern: IDENTIFIER_PATTERN,
      description: 'Hive partition key (alias=value in the S3 key).',
    }),
  },
  { description: 'One Hive-style partition level.' },
);

export const ViewSpec = Type.Object(
  {
    endpointRef: LocalObjectReference('The Endpoint (same namespace) whose records this view reads.'),
    name: Type.Optional(
      Type.String({
        pattern: IDENTIFIER_PATTERN,
        description: 'View name in S3 keys (views/{name}/…); defaults to metadata.name with - turned into _.',
      }),
    ),
    source: StringEnum(['payload'], {
      default: 'payload',
      description: 'What the paths address: the record payload.',
    }),
    columns: Type.Array(ViewColumn, {
      minItems: 1,
      maxItems: 512,
      description: 'Output columns, in order.',
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['name'],
    }),
    filter: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 4096,
        description:
          "Scalar boolean expression over the columns; rows where it is not true are skipped (e.g. event = 'page_view').",
      }),
    ),
    partitioning: Type.Optional(
      Type.Array(ViewPartition, {
        maxItems: 8,
        description: 'Hive partitioning of the output, outermost first.',
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['alias'],
      }),
    ),
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
export type ViewColumn = Static<typeof ViewColumn>;

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
