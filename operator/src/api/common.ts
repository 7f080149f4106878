// Shared schema pieces for the landfall.dev API. Everything here is TypeBox so
// the same definitions give us TypeScript types, runtime defaulting/checking in
// the operator and the OpenAPI v3 schema of the generated CRDs.
import { Type } from '@sinclair/typebox';
import type { TLiteral, TUnion, SchemaOptions } from '@sinclair/typebox';

export const GROUP = 'landfall.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

/** A string enum. Emitted as `anyOf` of `const`s by TypeBox; the CRD generator folds it into `enum`. */
export function StringEnum<const T extends string>(
  values: readonly T[],
  options: SchemaOptions = {},
): TUnion<TLiteral<T>[]> {
  return Type.Union(
    values.map((v) => Type.Literal(v)),
    options,
  );
}

/** A Kubernetes quantity ("500m", "1Gi", 2). */
export const Quantity = (options: SchemaOptions = {}) =>
  Type.Union([Type.Integer(), Type.String({ pattern: QUANTITY_PATTERN })], {
    'x-kubernetes-int-or-string': true,
    ...options,
  });

// The apiserver's own quantity grammar, shortened: digits with an optional
// fraction and a binary/decimal suffix or an exponent.
export const QUANTITY_PATTERN =
  '^[+]?([0-9]+([.][0-9]*)?|[.][0-9]+)(([KMGTPE]i)|[numkMGTPE]|([eE][-+]?[0-9]+))?$';

/** An RFC 1123 DNS label, the shape of most object names we reference. */
export const DNS_LABEL_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';
/** An RFC 1123 DNS subdomain (Secret names, RuntimeClass names). */
export const DNS_SUBDOMAIN_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';

/** metav1.Condition, as every Kubernetes API describes it. */
export const Condition = Type.Object(
  {
    type: Type.String({ description: 'Type of condition in CamelCase.', maxLength: 316 }),
    status: StringEnum(['True', 'False', 'Unknown'], { description: 'Status of the condition.' }),
    observedGeneration: Type.Optional(
      Type.Integer({ minimum: 0, description: 'The .metadata.generation the condition was set for.' }),
    ),
    lastTransitionTime: Type.String({
      format: 'date-time',
      description: 'Last time the condition went from one status to another.',
    }),
    reason: Type.String({
      maxLength: 1024,
      minLength: 1,
      pattern: '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$',
      description: 'Programmatic identifier of the reason for the last transition, in CamelCase.',
    }),
    message: Type.String({ maxLength: 32768, description: 'Human-readable details about the transition.' }),
  },
  { description: 'A condition, in the shape of metav1.Condition.' },
);

export const Conditions = Type.Array(Condition, {
  description: 'The latest observations of the resource, one per type.',
  maxItems: 16,
  'x-kubernetes-list-type': 'map',
  'x-kubernetes-list-map-keys': ['type'],
});

export const LocalObjectReference = (description: string) =>
  Type.Object(
    {
      name: Type.String({
        minLength: 1,
        maxLength: 253,
        pattern: DNS_SUBDOMAIN_PATTERN,
        description: 'Name of the object in the same namespace.',
      }),
    },
    { description },
  );

/** The part of ObjectMeta the operator reads. Kept loose: the apiserver owns it. */
export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  creationTimestamp?: string | Date;
  deletionTimestamp?: string | Date;
  finalizers?: string[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
