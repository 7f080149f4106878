// Turns the TypeBox API types into CustomResourceDefinitions. The CRDs in
// crds/ are generated from here (`npm run gen:crds`) and a test fails when the
// checked-in files drift, so the schema the apiserver enforces and the types
// the operator compiles against cannot disagree.
import type { TSchema } from '@sinclair/typebox';
import yaml from 'js-yaml';
import { API_VERSION, GROUP, VERSION } from './common.ts';
import {
  ENDPOINT_KIND,
  ENDPOINT_NAME_RULE,
  ENDPOINT_PLURAL,
  ENDPOINT_PRINTER_COLUMNS,
  EndpointSpec,
  EndpointStatus,
} from './endpoint.ts';
import { VIEW_KIND, VIEW_PLURAL, VIEW_PRINTER_COLUMNS, ViewSpec, ViewStatus } from './view.ts';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

// Keywords a structural schema accepts (apiextensions.k8s.io/v1 JSONSchemaProps).
// Everything else TypeBox emits ($id, const, additionalProperties:false, …) is
// dropped or rewritten below.
const KEEP = new Set([
  'type',
  'description',
  'default',
  'format',
  'pattern',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'minLength',
  'maxLength',
  'minItems',
  'maxItems',
  'minProperties',
  'maxProperties',
  'uniqueItems',
  'nullable',
  'required',
]);

/** A TypeBox schema as an OpenAPI v3 structural schema. */
export function toStructural(schema: TSchema | JsonObject): JsonObject {
  const s = schema as Record<string, unknown>;
  const out: JsonObject = {};

  // A union of string literals → enum.
  const anyOf = s.anyOf as Record<string, unknown>[] | undefined;
  if (anyOf && anyOf.every((a) => typeof a.const === 'string')) {
    out.type = 'string';
    out.enum = anyOf.map((a) => a.const as string);
  } else if (anyOf && s['x-kubernetes-int-or-string'] === true) {
    out['x-kubernetes-int-or-string'] = true;
    out.anyOf = [{ type: 'integer' }, { type: 'string' }];
  } else if (
    anyOf &&
    anyOf.every((a) => ['string', 'number', 'integer', 'boolean'].includes(a.type as string))
  ) {
    // A scalar of several types (a view column default: string, number or
    // boolean). Structural schemas have no such union: keep any value and
    // leave the check to the consumer's own validation (the View compiler).
    out['x-kubernetes-preserve-unknown-fields'] = true;
  } else if (anyOf) {
    throw new Error(`unsupported union in CRD schema: ${JSON.stringify(s)}`);
  }
  if (typeof s.const === 'string') {
    out.type = 'string';
    out.enum = [s.const];
  }

  for (const [key, value] of Object.entries(s)) {
    if (key.startsWith('x-kubernetes-')) {
      if (key !== 'x-kubernetes-int-or-string') out[key] = value as Json;
    } else if (KEEP.has(key)) {
      out[key] = value as Json;
    }
  }

  if (s.properties) {
    const props: JsonObject = {};
    for (const [name, child] of Object.entries(s.properties as Record<string, TSchema>)) {
      props[name] = toStructural(child);
    }
    out.properties = props;
    // A defaulted field is filled in before validation; listing it as required
    // would only confuse `kubectl explain`.
    const required = ((s.required as string[] | undefined) ?? []).filter(
      (name) => (s.properties as Record<string, Record<string, unknown>>)[name]?.default === undefined,
    );
    if (required.length > 0) out.required = required;
    else delete out.required;
  }
  if (s.patternProperties) {
    // Type.Record(Type.String(), X) → a map with values X.
    const values = Object.values(s.patternProperties as Record<string, TSchema>);
    if (values.length !== 1 || !values[0]) throw new Error('only single-pattern records are supported');
    out.type = 'object';
    out.additionalProperties = toStructural(values[0]);
  }
  if (s.items) out.items = toStructural(s.items as TSchema);
  return ordered(out);
}

// Readers of the YAML expect type and description first and children last.
const ORDER = ['type', 'description', 'enum', 'default', 'x-kubernetes-int-or-string', 'anyOf'];
const LAST = ['required', 'properties', 'additionalProperties', 'items', 'x-kubernetes-validations'];
function ordered(o: JsonObject): JsonObject {
  const rank = (k: string): number => {
    const first = ORDER.indexOf(k);
    if (first >= 0) return first;
    const last = LAST.indexOf(k);
    return last >= 0 ? 100 + last : 50;
  };
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => rank(a) - rank(b)));
}

interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
  priority?: number;
}

interface CrdInput {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  spec: TSchema;
  status: TSchema;
  rootRules?: JsonObject[];
  /** The scale subresource (kubectl scale, HorizontalPodAutoscaler). */
  scale?: { specReplicasPath: string; statusReplicasPath: string; labelSelectorPath: string };
  printerColumns: readonly PrinterColumn[];
  description: string;
}

function crd(input: CrdInput): JsonObject {
  const root: JsonObject = {
    type: 'object',
    description: input.description,
    properties: {
      apiVersion: { type: 'string', description: 'APIVersion of this representation of the object.' },
      kind: { type: 'string', description: 'Kind of the object.' },
      metadata: { type: 'object' },
      spec: toStructural(input.spec),
      status: toStructural(input.status),
    },
    required: ['spec'],
  };
  if (input.rootRules) root['x-kubernetes-validations'] = input.rootRules;
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: `${input.plural}.${GROUP}`,
      labels: { 'app.kubernetes.io/part-of': 'landfall' },
    },
    spec: {
      group: GROUP,
      names: {
        kind: input.kind,
        listKind: `${input.kind}List`,
        plural: input.plural,
        singular: input.singular,
        shortNames: input.shortNames,
        categories: ['landfall'],
      },
      scope: 'Namespaced',
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: input.scale ? { status: {}, scale: input.scale } : { status: {} },
          additionalPrinterColumns: input.printerColumns as unknown as Json[],
          schema: { openAPIV3Schema: root },
        },
      ],
    },
  };
}

export function endpointCrd(): JsonObject {
  return crd({
    kind: ENDPOINT_KIND,
    plural: ENDPOINT_PLURAL,
    singular: 'endpoint',
    shortNames: ['lfe'],
    spec: EndpointSpec,
    status: EndpointStatus,
    rootRules: [ENDPOINT_NAME_RULE],
    scale: {
      specReplicasPath: '.spec.replicas',
      statusReplicasPath: '.status.replicas',
      labelSelectorPath: '.status.selector',
    },
    printerColumns: ENDPOINT_PRINTER_COLUMNS,
    description:
      'An HTTP ingest endpoint: a StatefulSet of ingest nodes that make records durable on local disk and deliver them to S3.',
  });
}

export function viewCrd(): JsonObject {
  return crd({
    kind: VIEW_KIND,
    plural: VIEW_PLURAL,
    singular: 'view',
    shortNames: ['lfv'],
    spec: ViewSpec,
    status: ViewStatus,
    printerColumns: VIEW_PRINTER_COLUMNS,
    description: "A typed Parquet view of an Endpoint's records, compiled to SQL per sealed segment.",
  });
}

const HEADER = `# GENERATED by \`npm run gen:crds\` from operator/src/api (${API_VERSION}). Do not edit.\n`;

/** The checked-in file name and text of every CRD. */
export function renderCrds(): { file: string; text: string }[] {
  return [endpointCrd(), viewCrd()].map((c) => ({
    file: `${(c.metadata as JsonObject).name as string}.yaml`,
    text: HEADER + yaml.dump(c, { lineWidth: 120, noRefs: true, sortKeys: false }),
  }));
}
