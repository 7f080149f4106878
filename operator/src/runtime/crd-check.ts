// Start-up check that the installed CRDs are the ones this operator was built
// against. Helm never upgrades CRDs, so "new operator, old CRDs" is the usual
// upgrade mistake; without this check it shows up later as watches failing
// with 404, or as fields the apiserver silently prunes from every Endpoint.
//
// Only discovery and the published OpenAPI are read: every authenticated
// client may (the system:discovery role), so the operator needs no RBAC on
// customresourcedefinitions and a namespace-scoped install stays
// namespace-scoped.
import { HttpMethod } from '@kubernetes/client-node';
import type { TSchema } from '@sinclair/typebox';
import { EndpointSpec } from '../api/endpoint.ts';
import { GROUP, VERSION } from '../api/common.ts';
import { ViewSpec } from '../api/view.ts';
import { KubeApiError } from './kube.ts';
import type { KubeClient } from './kube.ts';

/** The CRDs are missing or older than the operator: a human has to apply them. */
export class CrdCheckError extends Error {
  constructor(message: string) {
    super(
      `${message}. Apply the CRDs of this operator's release first: kubectl apply --server-side -f crds/ (the chart's crds/ folder holds the same files)`,
    );
    this.name = 'CrdCheckError';
  }
}

/** Resources (and subresources) the operator uses, as discovery lists them. */
export const REQUIRED_RESOURCES = [
  'endpoints',
  'endpoints/status',
  'endpoints/scale',
  'views',
  'views/status',
] as const;

interface ApiResourceList {
  resources?: { name: string }[];
}

interface OpenApiSchema {
  properties?: Record<string, OpenApiSchema>;
  allOf?: OpenApiSchema[];
  $ref?: string;
}

function specFields(schema: TSchema): string[] {
  return Object.keys((schema as { properties?: object }).properties ?? {}).sort();
}

function resolve(doc: { components?: { schemas?: Record<string, OpenApiSchema> } }, s?: OpenApiSchema) {
  let cur = s;
  for (let i = 0; i < 4 && cur; i++) {
    const ref = cur.$ref ?? cur.allOf?.[0]?.$ref;
    if (!ref) return cur;
    cur = doc.components?.schemas?.[ref.replace('#/components/schemas/', '')];
  }
  return cur;
}

/**
 * Throws CrdCheckError when the landfall.dev API is not served, a resource the
 * operator uses is missing, or an installed schema lacks a spec field this
 * operator knows. An OpenAPI document that cannot be read skips the field
 * check (returned as a warning), it does not fail the start.
 */
export async function checkCrds(client: KubeClient): Promise<{ warnings: string[] }> {
  const gv = `${GROUP}/${VERSION}`;
  let list: ApiResourceList;
  try {
    list = await client.request<ApiResourceList>(HttpMethod.GET, `/apis/${gv}`);
  } catch (err) {
    if (err instanceof KubeApiError && err.code === 404)
      throw new CrdCheckError(`the API ${gv} is not served: the Endpoint and View CRDs are not installed`);
    throw err;
  }
  const served = new Set((list.resources ?? []).map((r) => r.name));
  const missing = REQUIRED_RESOURCES.filter((r) => !served.has(r));
  if (missing.length > 0)
    throw new CrdCheckError(
      `the installed ${gv} CRDs are older than this operator: ${missing.join(', ')} not served`,
    );

  const warnings: string[] = [];
  let doc: { components?: { schemas?: Record<string, OpenApiSchema> } };
  try {
    doc = await client.request(HttpMethod.GET, `/openapi/v3/apis/${gv}`);
  } catch (err) {
    warnings.push(
      `the OpenAPI of ${gv} could not be read, spec fields not checked: ${(err as Error).message}`,
    );
    return { warnings };
  }
  const schemas = doc.components?.schemas ?? {};
  const problems: string[] = [];
  for (const [kind, spec] of [
    ['Endpoint', EndpointSpec],
    ['View', ViewSpec],
  ] as const) {
    const key = Object.keys(schemas).find((k) => k.endsWith(`.${VERSION}.${kind}`));
    const installed = resolve(doc, resolve(doc, key ? schemas[key] : undefined)?.properties?.spec);
    if (!installed?.properties) {
      warnings.push(`the OpenAPI of ${gv} has no ${kind} spec schema, spec fields not checked`);
      continue;
    }
    const have = new Set(Object.keys(installed.properties));
    const lacking = specFields(spec).filter((f) => !have.has(f));
    if (lacking.length > 0) problems.push(`${kind} spec lacks ${lacking.join(', ')}`);
  }
  if (problems.length > 0)
    throw new CrdCheckError(`the installed ${gv} CRDs are older than this operator: ${problems.join('; ')}`);
  return { warnings };
}
