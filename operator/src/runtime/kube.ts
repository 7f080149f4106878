// A small raw client for the Kubernetes API on top of @kubernetes/client-node's
// KubeConfig (auth, TLS) and undici. Raw JSON in and out, so objects from
// lists, gets and watches all look the same, and we control what the typed
// client does not expose: server-side apply on subresources, the content type
// of every patch, and the apiserver's own error message (CEL rules, conflicts).
import { HttpMethod, RequestContext } from '@kubernetes/client-node';
import type { KubeConfig } from '@kubernetes/client-node';
import { fetch } from 'undici';
import { FIELD_MANAGER } from '../model/names.ts';

export interface ResourceType {
  apiVersion: string;
  kind: string;
  plural: string;
  namespaced: boolean;
}

export const Resources = {
  endpoint: { apiVersion: 'landfall.dev/v1alpha1', kind: 'Endpoint', plural: 'endpoints', namespaced: true },
  view: { apiVersion: 'landfall.dev/v1alpha1', kind: 'View', plural: 'views', namespaced: true },
  statefulSet: { apiVersion: 'apps/v1', kind: 'StatefulSet', plural: 'statefulsets', namespaced: true },
  pod: { apiVersion: 'v1', kind: 'Pod', plural: 'pods', namespaced: true },
  node: { apiVersion: 'v1', kind: 'Node', plural: 'nodes', namespaced: false },
  pvc: {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    plural: 'persistentvolumeclaims',
    namespaced: true,
  },
  configMap: { apiVersion: 'v1', kind: 'ConfigMap', plural: 'configmaps', namespaced: true },
  secret: { apiVersion: 'v1', kind: 'Secret', plural: 'secrets', namespaced: true },
  service: { apiVersion: 'v1', kind: 'Service', plural: 'services', namespaced: true },
  serviceAccount: { apiVersion: 'v1', kind: 'ServiceAccount', plural: 'serviceaccounts', namespaced: true },
  pdb: {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    plural: 'poddisruptionbudgets',
    namespaced: true,
  },
  ingress: { apiVersion: 'networking.k8s.io/v1', kind: 'Ingress', plural: 'ingresses', namespaced: true },
  networkPolicy: {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    plural: 'networkpolicies',
    namespaced: true,
  },
  httpRoute: {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    plural: 'httproutes',
    namespaced: true,
  },
  event: { apiVersion: 'v1', kind: 'Event', plural: 'events', namespaced: true },
  job: { apiVersion: 'batch/v1', kind: 'Job', plural: 'jobs', namespaced: true },
  lease: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', plural: 'leases', namespaced: true },
  crd: {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    plural: 'customresourcedefinitions',
    namespaced: false,
  },
} as const satisfies Record<string, ResourceType>;

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: string | Date;
    creationTimestamp?: string | Date;
    finalizers?: string[];
    ownerReferences?: { uid: string; kind: string; name: string; controller?: boolean }[];
  };
}

export interface KubeList<T> {
  items: T[];
  metadata: { resourceVersion?: string; continue?: string };
}

/** An error answer of the apiserver, with its Status message and reason. */
export class KubeApiError extends Error {
  readonly code: number;
  readonly reason: string;
  readonly body: unknown;
  constructor(code: number, message: string, reason: string, body: unknown) {
    super(message);
    this.name = 'KubeApiError';
    this.code = code;
    this.reason = reason;
    this.body = body;
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof KubeApiError && err.code === 404;
}
export function isConflict(err: unknown): boolean {
  return err instanceof KubeApiError && err.code === 409;
}

export function collectionPath(rt: ResourceType, namespace?: string): string {
  const prefix = rt.apiVersion.includes('/') ? `/apis/${rt.apiVersion}` : `/api/${rt.apiVersion}`;
  const ns = rt.namespaced && namespace ? `/namespaces/${encodeURIComponent(namespace)}` : '';
  return `${prefix}${ns}/${rt.plural}`;
}

export function objectPath(
  rt: ResourceType,
  namespace: string | undefined,
  name: string,
  subresource?: string,
): string {
  return `${collectionPath(rt, namespace)}/${encodeURIComponent(name)}${subresource ? `/${subresource}` : ''}`;
}

type Query = Record<string, string | number | boolean | undefined>;

export interface KubeClientOptions {
  /** Bound on one request (not on watches). */
  requestTimeoutMs?: number;
  fieldManager?: string;
}

export class KubeClient {
  readonly kubeConfig: KubeConfig;
  readonly fieldManager: string;
  private readonly requestTimeoutMs: number;

  constructor(kubeConfig: KubeConfig, opts: KubeClientOptions = {}) {
    this.kubeConfig = kubeConfig;
    this.fieldManager = opts.fieldManager ?? FIELD_MANAGER;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 30_000;
  }

  async request<T>(
    method: HttpMethod,
    path: string,
    opts: { query?: Query; body?: unknown; contentType?: string; signal?: AbortSignal } = {},
  ): Promise<T> {
    const cluster = this.kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error('kubeconfig has no current cluster');
    const url = new URL(cluster.server + path);
    for (const [k, v] of Object.entries(opts.query ?? {}))
      if (v !== undefined) url.searchParams.set(k, String(v));
    const ctx = new RequestContext(url.toString(), method);
    await this.kubeConfig.applySecurityAuthentication(ctx);
    const headers: Record<string, string> = { ...ctx.getHeaders(), Accept: 'application/json' };
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['Content-Type'] = opts.contentType ?? 'application/json';
    }
    const res = await fetch(url, {
      method,
      headers,
      body,
      dispatcher: ctx.getDispatcher(),
      signal: opts.signal
        ? AbortSignal.any([opts.signal, AbortSignal.timeout(this.requestTimeoutMs)])
        : AbortSignal.timeout(this.requestTimeoutMs),
    });
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = text;
    }
    if (res.status >= 400) {
      const status = parsed as { message?: string; reason?: string } | undefined;
      throw new KubeApiError(
        res.status,
        `${method} ${path}: ${res.status} ${status?.message ?? (text || res.statusText)}`,
        status?.reason ?? '',
        parsed,
      );
    }
    return parsed as T;
  }

  async get<T extends KubeObject>(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    opts: { signal?: AbortSignal } = {},
  ): Promise<T | undefined> {
    try {
      return await this.request<T>(HttpMethod.GET, objectPath(rt, namespace, name), opts);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async list<T extends KubeObject>(
    rt: ResourceType,
    opts: { namespace?: string; labelSelector?: string; limit?: number; continue?: string } = {},
  ): Promise<KubeList<T>> {
    return this.request<KubeList<T>>(HttpMethod.GET, collectionPath(rt, opts.namespace), {
      query: { labelSelector: opts.labelSelector, limit: opts.limit, continue: opts.continue },
    });
  }

  /** Every page of a list, and the resourceVersion to watch from. */
  async listAll<T extends KubeObject>(
    rt: ResourceType,
    opts: { namespace?: string; labelSelector?: string; pageSize?: number } = {},
  ): Promise<KubeList<T>> {
    const items: T[] = [];
    let cont: string | undefined;
    let resourceVersion: string | undefined;
    do {
      const page = await this.list<T>(rt, { ...opts, limit: opts.pageSize ?? 500, continue: cont });
      items.push(...page.items);
      cont = page.metadata.continue || undefined;
      resourceVersion = page.metadata.resourceVersion;
    } while (cont);
    return { items, metadata: { resourceVersion } };
  }

  /**
   * Server-side apply with the operator's one field manager. `force` takes
   * fields over from other managers: the operator is the authority for what it
   * applies (kubectl edits of a child are reverted, like any controller).
   */
  async apply<T extends KubeObject>(
    rt: ResourceType,
    obj: KubeObject,
    opts: { subresource?: 'status'; force?: boolean } = {},
  ): Promise<T> {
    const name = obj.metadata?.name;
    if (!name) throw new Error(`apply ${rt.kind} without metadata.name`);
    return this.request<T>(
      HttpMethod.PATCH,
      objectPath(rt, obj.metadata?.namespace, name, opts.subresource),
      {
        query: { fieldManager: this.fieldManager, force: opts.force ?? true },
        body: { ...obj, apiVersion: rt.apiVersion, kind: rt.kind },
        contentType: 'application/apply-patch+yaml',
      },
    );
  }

  async mergePatch<T extends KubeObject>(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    patch: unknown,
  ): Promise<T> {
    return this.request<T>(HttpMethod.PATCH, objectPath(rt, namespace, name), {
      query: { fieldManager: this.fieldManager },
      body: patch,
      contentType: 'application/merge-patch+json',
    });
  }

  async jsonPatch<T extends KubeObject>(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    ops: unknown[],
  ): Promise<T> {
    return this.request<T>(HttpMethod.PATCH, objectPath(rt, namespace, name), {
      query: { fieldManager: this.fieldManager },
      body: ops,
      contentType: 'application/json-patch+json',
    });
  }

  async create<T extends KubeObject>(
    rt: ResourceType,
    obj: KubeObject,
    opts: { signal?: AbortSignal } = {},
  ): Promise<T> {
    return this.request<T>(HttpMethod.POST, collectionPath(rt, obj.metadata?.namespace), {
      query: { fieldManager: this.fieldManager },
      body: { ...obj, apiVersion: rt.apiVersion, kind: rt.kind },
      signal: opts.signal,
    });
  }

  async replace<T extends KubeObject>(
    rt: ResourceType,
    obj: KubeObject,
    opts: { signal?: AbortSignal } = {},
  ): Promise<T> {
    const name = obj.metadata?.name;
    if (!name) throw new Error(`replace ${rt.kind} without metadata.name`);
    return this.request<T>(HttpMethod.PUT, objectPath(rt, obj.metadata?.namespace, name), {
      query: { fieldManager: this.fieldManager },
      body: { ...obj, apiVersion: rt.apiVersion, kind: rt.kind },
      signal: opts.signal,
    });
  }

  /**
   * Deletes an object; a 404 is success. With `preconditions` the apiserver
   * deletes only the object with that uid (and resourceVersion): a 409 when
   * the name now holds another object.
   */
  async delete(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    opts: { preconditions?: { uid?: string; resourceVersion?: string } } = {},
  ): Promise<void> {
    try {
      await this.request(HttpMethod.DELETE, objectPath(rt, namespace, name), {
        body: {
          kind: 'DeleteOptions',
          apiVersion: 'v1',
          propagationPolicy: 'Background',
          ...(opts.preconditions ? { preconditions: opts.preconditions } : {}),
        },
      });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
}
