// Endpoint controller: one reconcile is a list of named steps, each applying
// one part of the desired state with server-side apply (one field manager).
// Status is computed from what the StatefulSet and its pods report.
import type { V1Node, V1PersistentVolumeClaim, V1Pod, V1StatefulSet } from '@kubernetes/client-node';
import type { Endpoint, EndpointSpec, EndpointStatus } from '../api/endpoint.ts';
import { endpointSpecErrors, withEndpointDefaults } from '../api/endpoint.ts';
import type { View } from '../api/view.ts';
import type { NodeStatusProbe } from '../adapters/node-status.ts';
import type { NodeDrainClient } from '../adapters/node-drain.ts';
import type { CompiledView } from '../adapters/view-compiler.ts';
import {
  CONFIG_HASH_ANNOTATION,
  ENDPOINT_LABEL,
  ENDPOINT_UID_LABEL,
  FINALIZER,
  FORCE_DELETE_ANNOTATION,
  childNames,
  endpointUrl,
  selectorLabels,
  servesTls,
} from '../model/names.ts';
import { deriveStatusKey, statusKeyLine } from '../model/operator-key.ts';
import {
  buildConfigMap,
  buildPdb,
  buildHttpRoute,
  buildIngress,
  buildServiceAccount,
  buildServices,
  buildStatefulSet,
} from '../model/resources.ts';
import type { EventSink } from '../runtime/events.ts';
import { Resources, isConflict } from '../runtime/kube.ts';
import type { KubeClient, KubeObject, ResourceType } from '../runtime/kube.ts';
import type { Logger } from '../runtime/log.ts';
import { jsonEqual, mergeConditions } from './conditions.ts';
import type { Condition, ConditionInput } from './conditions.ts';
import { checkDrained } from './drain.ts';
import { drainLeavingNodes } from './node-drain.ts';
import { compileEndpointViews, viewsOfEndpoint } from './views.ts';
import { foreignClaims } from './volumes.ts';
import type { ViewCompileCache } from './views.ts';

/** Read access to an informer cache. */
export interface Store<T> {
  getByKey(key: string): T | undefined;
  list(): T[];
}

export interface ReconcileResult {
  requeueAfterMs?: number;
}

export interface EndpointControllerDeps {
  client: KubeClient;
  endpoints: Store<Endpoint>;
  views: Store<View>;
  statefulSets: Store<V1StatefulSet>;
  pods: Store<V1Pod>;
  compileCache: ViewCompileCache;
  events: EventSink;
  log: Logger;
  nodeImage: string;
  /** Image prefixes spec.image may start with; unset or empty: any image. --node-image is always allowed. */
  allowedImages?: readonly string[];
  /** The operator's master key: each Endpoint's status key is derived from it (model/operator-key.ts). */
  operatorKey: Buffer;
  probe: NodeStatusProbe;
  /** How often a deleting Endpoint re-checks its replicas. */
  drainPollMs?: number;
  /** How often a not-yet-ready Endpoint re-reads its pods even without events. */
  notReadyPollMs?: number;
  /** The Nodes (cluster-scoped informer); unset: node drains are not watched (controller/node-drain.ts). */
  nodes?: Store<V1Node>;
  /** POST /v1/drain and the drain state of a pod; required with `nodes`. */
  drainClient?: NodeDrainClient;
  /** How often a replica on a leaving node is polled while it drains. */
  nodeDrainPollMs?: number;
}

/** Everything one reconcile learns, passed from step to step. */
interface Ctx {
  ep: Endpoint & { spec: EndpointSpec };
  key: string;
  namespace: string;
  views: CompiledView[];
  excludedViews: number;
  configHash: string;
  statefulSet?: V1StatefulSet;
  previousHash?: string;
  /** A same-named Ingress/HTTPRoute this Endpoint does not control (Degraded ExposeConflict). */
  exposeConflict?: string;
  /** The NodeDrain condition while a pod of this Endpoint is on a leaving node. */
  nodeDrain?: ConditionInput;
}

type Step = { name: string; run: (ctx: Ctx) => Promise<void> };

/** A step that cannot proceed for a reason of its own (the Degraded reason), retried with backoff. */
class StepBlocked extends Error {
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.name = 'StepBlocked';
    this.reason = reason;
  }
}

export class EndpointController {
  private readonly d: EndpointControllerDeps;
  private readonly log: Logger;
  /** Endpoint key → the generation whose dropped Ingress/HTTPRoute were deleted; one entry per live Endpoint. */
  private readonly exposureSwept = new Map<string, number>();

  constructor(deps: EndpointControllerDeps) {
    this.d = deps;
    this.log = deps.log.child({ controller: 'endpoint' });
  }

  /** The steps of a reconcile, in order. Each one is idempotent. */
  private readonly steps: Step[] = [
    { name: 'ensureFinalizer', run: (c) => this.ensureFinalizer(c) },
    { name: 'collectViews', run: (c) => this.collectViews(c) },
    { name: 'ensureServiceAccount', run: (c) => this.ensureServiceAccount(c) },
    { name: 'ensureConfigMap', run: (c) => this.ensureConfigMap(c) },
    { name: 'ensureServices', run: (c) => this.ensureServices(c) },
    { name: 'ensureExposure', run: (c) => this.ensureExposure(c) },
    { name: 'ensureStatefulSet', run: (c) => this.ensureStatefulSet(c) },
    { name: 'ensurePdb', run: (c) => this.ensurePdb(c) },
    { name: 'drainLeavingNodes', run: (c) => this.drainLeavingNodes(c) },
  ];

  async reconcile(key: string): Promise<ReconcileResult> {
    const ep = this.d.endpoints.getByKey(key);
    if (!ep) {
      this.exposureSwept.delete(key);
      return {}; // gone: the garbage collector removes the children (owner references)
    }
    if (ep.metadata.deletionTimestamp) return this.finalize(ep);

    const spec = withEndpointDefaults(ep.spec);
    const ctx: Ctx = {
      ep: { ...ep, spec },
      key,
      namespace: ep.metadata.namespace ?? '',
      views: [],
      excludedViews: 0,
      configHash: '',
    };
    const errors = endpointSpecErrors(spec);
    if (errors.length > 0) {
      // Only possible when the installed CRD is older than the operator.
      await this.updateStatus(ctx, [], {
        type: 'Degraded',
        status: 'True',
        reason: 'InvalidSpec',
        message: errors.join('; '),
      });
      return {};
    }
    const imageProblem = this.imageProblem(spec.image);
    if (imageProblem) {
      // Nothing is applied: the pods keep the image they run.
      await this.updateStatus(ctx, [], {
        type: 'Degraded',
        status: 'True',
        reason: 'ImageNotAllowed',
        message: imageProblem,
      });
      this.d.events.record(ep, 'Warning', 'ImageNotAllowed', imageProblem);
      return {};
    }
    for (const step of this.steps) {
      try {
        await step.run(ctx);
      } catch (err) {
        const message = `${step.name}: ${(err as Error).message}`;
        this.d.events.record(ep, 'Warning', 'ReconcileFailed', message);
        await this.updateStatus(ctx, [], {
          type: 'Degraded',
          status: 'True',
          reason: err instanceof StepBlocked ? err.reason : 'ReconcileFailed',
          message,
        }).catch((statusErr: unknown) =>
          this.log.debug({ err: statusErr, key }, 'status update after failure failed too'),
        );
        throw new Error(message, { cause: err });
      }
    }
    const nodeDrain = ctx.nodeDrain !== undefined ? [ctx.nodeDrain] : [];
    const nodeDrainPollMs = ctx.nodeDrain !== undefined ? (this.d.nodeDrainPollMs ?? 2000) : undefined;
    if (ctx.exposeConflict !== undefined) {
      // Everything else is applied; the Endpoint is Degraded until the name is free.
      this.d.events.record(ep, 'Warning', 'ExposeConflict', ctx.exposeConflict);
      await this.updateStatus(ctx, nodeDrain, {
        type: 'Degraded',
        status: 'True',
        reason: 'ExposeConflict',
        message: ctx.exposeConflict,
      });
      return { requeueAfterMs: nodeDrainPollMs ?? this.d.notReadyPollMs ?? 30_000 };
    }
    const ready = await this.updateStatus(ctx, nodeDrain);
    if (nodeDrainPollMs !== undefined) return { requeueAfterMs: nodeDrainPollMs };
    // Pods change without touching our objects' generations; watch events on
    // pods requeue us, this poll is only a safety net while converging.
    return ready ? {} : { requeueAfterMs: this.d.notReadyPollMs ?? 30_000 };
  }

  private imageProblem(image: string | undefined): string | undefined {
    const allowed = this.d.allowedImages ?? [];
    if (image === undefined || allowed.length === 0 || image === this.d.nodeImage) return undefined;
    if (allowed.some((prefix) => image.startsWith(prefix))) return undefined;
    return `spec.image ${image} is not allowed by the operator (allowed prefixes: ${allowed.join(', ')})`;
  }

  // --- steps -----------------------------------------------------------------

  private async ensureFinalizer(ctx: Ctx): Promise<void> {
    const m = ctx.ep.metadata;
    if (m.finalizers?.includes(FINALIZER)) return;
    // A JSON patch guarded by the resourceVersion: other owners' finalizers
    // stay, and a concurrent change makes this fail and retry on a fresh read.
    // (Server-side apply of just metadata.finalizers is refused for a CR: the
    // apiserver validates the partial object and misses the required spec.)
    await this.d.client.jsonPatch(Resources.endpoint, ctx.namespace, m.name ?? '', [
      { op: 'test', path: '/metadata/resourceVersion', value: m.resourceVersion },
      m.finalizers
        ? { op: 'add', path: '/metadata/finalizers/-', value: FINALIZER }
        : { op: 'add', path: '/metadata/finalizers', value: [FINALIZER] },
    ]);
  }

  private async collectViews(ctx: Ctx): Promise<void> {
    const views = viewsOfEndpoint(this.d.views.list(), ctx.namespace, ctx.ep.metadata.name ?? '');
    const result = await compileEndpointViews(this.d.compileCache, views);
    ctx.views = result.compiled;
    ctx.excludedViews = result.excluded.size;
  }

  private async ensureServiceAccount(ctx: Ctx): Promise<void> {
    await this.d.client.apply(Resources.serviceAccount, buildServiceAccount(ctx.ep));
  }

  private async ensureConfigMap(ctx: Ctx): Promise<void> {
    const { configMap, viewsConfigMap, hash } = buildConfigMap(
      ctx.ep,
      ctx.views,
      statusKeyLine(deriveStatusKey(this.d.operatorKey, ctx.ep)),
    );
    ctx.configHash = hash;
    await this.d.client.apply(Resources.configMap, viewsConfigMap);
    await this.d.client.apply(Resources.configMap, configMap);
  }

  private async ensureServices(ctx: Ctx): Promise<void> {
    const { headless, client } = buildServices(ctx.ep);
    await this.d.client.apply(Resources.service, headless);
    await this.d.client.apply(Resources.service, client);
  }

  /**
   * The Ingress and HTTPRoute of spec.expose: applied when asked for, deleted
   * when not. Only objects this Endpoint controls (a controller owner reference
   * with its uid) are ever touched: a same-named Ingress or HTTPRoute made by
   * hand (as the old docs suggested) or by someone else is left alone; when the
   * Endpoint asks for one over such an object nothing is applied and the
   * Endpoint is Degraded (ExposeConflict), the other steps still run. The
   * deletes run once per generation (and after an operator restart), not on
   * every status poll; a 404 (also: no Gateway API in the cluster) is nothing
   * to delete.
   */
  private async ensureExposure(ctx: Ctx): Promise<void> {
    const names = childNames(ctx.ep);
    const ingress = buildIngress(ctx.ep);
    const route = buildHttpRoute(ctx.ep);
    const conflicts: string[] = [];
    if (ingress !== undefined) {
      const conflict = await this.applyOwned(ctx, Resources.ingress, ingress);
      if (conflict) conflicts.push(conflict);
    }
    if (route !== undefined) {
      const conflict = await this.applyOwned(ctx, Resources.httpRoute, route);
      if (conflict) conflicts.push(conflict);
    }
    ctx.exposeConflict = conflicts.length > 0 ? conflicts.join('; ') : undefined;
    const generation = ctx.ep.metadata.generation ?? 0;
    if (this.exposureSwept.get(ctx.key) === generation) return;
    let swept = true;
    if (ingress === undefined)
      swept = (await this.deleteOwned(ctx, Resources.ingress, names.ingress)) && swept;
    if (route === undefined)
      swept = (await this.deleteOwned(ctx, Resources.httpRoute, names.httpRoute)) && swept;
    if (swept) this.exposureSwept.set(ctx.key, generation);
  }

  /** The object's controller owner reference is this Endpoint. */
  private controls(ctx: Ctx, obj: KubeObject): boolean {
    const uid = ctx.ep.metadata.uid;
    return (
      uid !== undefined &&
      (obj.metadata?.ownerReferences ?? []).some((r) => r.controller === true && r.uid === uid)
    );
  }

  /** Applies obj unless its name holds an object this Endpoint does not control; returns that conflict. */
  private async applyOwned(ctx: Ctx, rt: ResourceType, obj: KubeObject): Promise<string | undefined> {
    const name = obj.metadata?.name ?? '';
    const existing = await this.d.client.get(rt, ctx.namespace, name);
    if (existing !== undefined && !this.controls(ctx, existing)) {
      const owner = existing.metadata?.ownerReferences?.find((r) => r.controller === true);
      const whose = owner
        ? `it is controlled by ${owner.kind} ${owner.name} (uid ${owner.uid})`
        : 'it has no controller owner reference (made by hand or by another tool)';
      return `${rt.kind} ${name} exists and does not belong to this Endpoint: ${whose}; not applied, left untouched. Delete or rename it to let the operator create its own, or drop the field from spec.expose`;
    }
    // Ours: force our fields back (a kubectl edit is reverted). Absent: no
    // force, so one made by someone else between the read and this apply is a
    // conflict (409), not a takeover; the retry reads it and reports it.
    await this.d.client.apply(rt, obj, { force: existing !== undefined });
    return undefined;
  }

  /** Deletes the named object only if this Endpoint controls it (uid precondition); false: try again later. */
  private async deleteOwned(ctx: Ctx, rt: ResourceType, name: string): Promise<boolean> {
    const existing = await this.d.client.get(rt, ctx.namespace, name);
    if (existing === undefined || !this.controls(ctx, existing)) return true;
    try {
      await this.d.client.delete(rt, ctx.namespace, name, {
        preconditions: { uid: existing.metadata?.uid },
      });
    } catch (err) {
      if (!isConflict(err)) throw err;
      return false; // replaced between the read and the delete: look again next time
    }
    return true;
  }

  private async ensureStatefulSet(ctx: Ctx): Promise<void> {
    const desired = buildStatefulSet(
      ctx.ep,
      {
        nodeImage: this.d.nodeImage,
        views: ctx.views,
        operatorKeyLine: statusKeyLine(deriveStatusKey(this.d.operatorKey, ctx.ep)),
      },
      ctx.configHash,
    );
    const stsName = desired.metadata?.name ?? '';
    const cached = this.d.statefulSets.getByKey(`${ctx.namespace}/${stsName}`);
    const uid = ctx.ep.metadata.uid ?? '';
    const owner = cached?.metadata?.ownerReferences?.find((r) => r.controller)?.uid;
    if (cached && owner !== uid)
      throw new StepBlocked(
        'PreviousStatefulSet',
        `StatefulSet ${stsName} belongs to another Endpoint (uid ${owner ?? 'none'}), e.g. a deleted one of the same name: waiting for the garbage collector to remove it`,
      );
    // Claim templates are immutable: an existing StatefulSet keeps its own
    // (one made before the uid label existed keeps them unlabelled).
    if (cached?.spec?.volumeClaimTemplates && desired.spec)
      desired.spec.volumeClaimTemplates = cached.spec.volumeClaimTemplates;
    const claims = await this.d.client.listAll<V1PersistentVolumeClaim & KubeObject>(Resources.pvc, {
      namespace: ctx.namespace,
      labelSelector: `${ENDPOINT_LABEL}=${ctx.ep.metadata.name ?? ''}`,
    });
    const foreign = foreignClaims({
      claims: claims.items,
      statefulSetName: stsName,
      replicas: ctx.ep.spec.replicas,
      uid,
      endpointCreated: ctx.ep.metadata.creationTimestamp,
    });
    if (foreign.length > 0)
      throw new StepBlocked(
        'ForeignVolumes',
        `volume claims ${foreign.map((f) => `${f.name} (${f.uid ? `Endpoint uid ${f.uid}` : 'unlabelled, older than this Endpoint'})`).join(', ')} belong to an earlier Endpoint named ${ctx.ep.metadata.name ?? ''}; the StatefulSet would adopt them. Check they hold nothing undelivered, then delete them, or label them ${ENDPOINT_UID_LABEL}=${uid} to adopt them on purpose`,
      );
    ctx.previousHash = cached?.spec?.template.metadata?.annotations?.[CONFIG_HASH_ANNOTATION];
    ctx.statefulSet = await this.d.client.apply<V1StatefulSet & KubeObject>(Resources.statefulSet, desired);
    if (!cached) {
      this.d.events.record(
        ctx.ep,
        'Normal',
        'Created',
        `StatefulSet ${desired.metadata?.name ?? ''} created`,
      );
    } else if (ctx.previousHash && ctx.previousHash !== ctx.configHash) {
      this.d.events.record(
        ctx.ep,
        'Normal',
        'ConfigChanged',
        `config ${ctx.previousHash} → ${ctx.configHash}: rolling the pods one at a time`,
      );
    }
  }

  private async ensurePdb(ctx: Ctx): Promise<void> {
    await this.d.client.apply(Resources.pdb, buildPdb(ctx.ep));
  }

  /** controller/node-drain.ts: drain, then replace, a replica whose node is cordoned or being removed. */
  private async drainLeavingNodes(ctx: Ctx): Promise<void> {
    const nodes = this.d.nodes;
    const client = this.d.drainClient;
    if (nodes === undefined || client === undefined) return;
    const ep = ctx.ep;
    const ns = ctx.namespace;
    const outcome = await drainLeavingNodes({
      pods: this.podsOf(ctx),
      node: (name) => nodes.getByKey(name),
      apiKey: deriveStatusKey(this.d.operatorKey, ep),
      client,
      tls: servesTls(ep),
      effects: {
        getClaim: (name) => this.d.client.get<V1PersistentVolumeClaim & KubeObject>(Resources.pvc, ns, name),
        deleteClaim: (name, uid) => this.d.client.delete(Resources.pvc, ns, name, { preconditions: { uid } }),
        deletePod: (name, uid) => this.d.client.delete(Resources.pod, ns, name, { preconditions: { uid } }),
        event: (type, reason, message) => this.d.events.record(ep, type, reason, message),
      },
    });
    ctx.nodeDrain = outcome.condition;
  }

  // --- status ----------------------------------------------------------------

  private podsOf(ctx: Ctx): V1Pod[] {
    const name = ctx.ep.metadata.name;
    return this.d.pods
      .list()
      .filter(
        (p) => p.metadata?.namespace === ctx.namespace && p.metadata?.labels?.[ENDPOINT_LABEL] === name,
      );
  }

  /** Ready/Degraded from the StatefulSet and its pods. */
  private readiness(ctx: Ctx): {
    ready: ConditionInput;
    degraded: ConditionInput;
    replicas: number;
    readyReplicas: number;
  } {
    const desired = ctx.ep.spec.replicas;
    const stsName = childNames(ctx.ep).statefulSet;
    // The apply answer and the watch cache: take whichever is newer.
    const cached = this.d.statefulSets.getByKey(`${ctx.namespace}/${stsName}`);
    const applied = ctx.statefulSet;
    const sts =
      cached && applied
        ? Number(cached.metadata?.resourceVersion ?? 0) >= Number(applied.metadata?.resourceVersion ?? 0)
          ? cached
          : applied
        : (cached ?? applied);
    const st = sts?.status;
    const replicas = st?.replicas ?? 0;
    const readyReplicas = st?.readyReplicas ?? 0;
    const ok: ConditionInput = {
      type: 'Degraded',
      status: 'False',
      reason: 'AsExpected',
      message: 'no problems observed',
    };
    if (!sts) {
      return {
        ready: {
          type: 'Ready',
          status: 'False',
          reason: 'StatefulSetMissing',
          message: `StatefulSet ${stsName} not found`,
        },
        degraded: ok,
        replicas,
        readyReplicas,
      };
    }
    if (desired === 0) {
      return {
        ready: { type: 'Ready', status: 'False', reason: 'ScaledToZero', message: 'spec.replicas is 0' },
        degraded: ok,
        replicas,
        readyReplicas,
      };
    }
    if ((st?.observedGeneration ?? 0) < (sts.metadata?.generation ?? 0)) {
      return {
        ready: {
          type: 'Ready',
          status: 'False',
          reason: 'RolloutPending',
          message: `StatefulSet generation ${sts.metadata?.generation ?? 0} not yet observed by its controller`,
        },
        degraded: ok,
        replicas,
        readyReplicas,
      };
    }
    const updated = st?.updatedReplicas ?? 0;
    if (readyReplicas >= desired && updated >= desired) {
      return {
        ready: {
          type: 'Ready',
          status: 'True',
          reason: 'AllReplicasReady',
          message: `${readyReplicas}/${desired} replicas ready`,
        },
        degraded: ok,
        replicas,
        readyReplicas,
      };
    }
    const notReady = this.podsOf(ctx)
      .filter((p) => !p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'))
      .map((p) => `${p.metadata?.name ?? '?'} (${podProblem(p)})`)
      .sort();
    const detail = notReady.length > 0 ? `; not ready: ${notReady.join(', ')}` : '';
    const rolling = updated < desired && readyReplicas >= desired - 1;
    return {
      ready: {
        type: 'Ready',
        status: 'False',
        reason: rolling ? 'RollingUpdate' : 'ReplicasNotReady',
        message: `${readyReplicas}/${desired} replicas ready${rolling ? `, ${updated}/${desired} on the current config` : ''}${detail}`,
      },
      degraded:
        readyReplicas > 0 && !rolling
          ? {
              type: 'Degraded',
              status: 'True',
              reason: 'ReplicasUnavailable',
              message: `${desired - readyReplicas} of ${desired} replicas unavailable${detail}`,
            }
          : ok,
      replicas,
      readyReplicas,
    };
  }

  /** Writes status if it changed; returns whether the Endpoint is Ready. */
  private async updateStatus(ctx: Ctx, extra: ConditionInput[], override?: ConditionInput): Promise<boolean> {
    const ep = ctx.ep;
    const current = ep.status ?? {};
    const r = this.readiness(ctx);
    let inputs: ConditionInput[] = [r.ready, r.degraded, ...extra];
    if (override) inputs = inputs.map((c) => (c.type === override.type ? override : c));
    const conditions = mergeConditions(current.conditions, inputs, ep.metadata.generation);
    const failed = override?.type === 'Degraded' && override.status === 'True';
    const status: EndpointStatus = {
      // A failed reconcile has not brought the children to this generation.
      observedGeneration: failed ? current.observedGeneration : ep.metadata.generation,
      conditions,
      replicas: r.replicas,
      readyReplicas: r.readyReplicas,
      url: endpointUrl(ep),
      // For the scale subresource: what an HPA counts (the StatefulSet's pods).
      selector: Object.entries(selectorLabels(ep))
        .map(([k, v]) => `${k}=${v}`)
        .join(','),
      configHash: ctx.configHash || current.configHash,
      // A failed reconcile may not have collected the views: it reports what runs.
      views: failed ? current.views : ctx.views.map((v) => v.name).sort(),
    };
    if (status.views === undefined) delete status.views;
    if (status.observedGeneration === undefined) delete status.observedGeneration;
    if (!status.configHash) delete status.configHash;
    const wasReady = current.conditions?.find((c) => c.type === 'Ready')?.status;
    if (!jsonEqual(JSON.parse(JSON.stringify(status)), current)) {
      await this.d.client.apply(
        Resources.endpoint,
        { metadata: { name: ep.metadata.name, namespace: ep.metadata.namespace }, status } as KubeObject,
        { subresource: 'status' },
      );
      if (r.ready.status !== wasReady && !override) {
        if (r.ready.status === 'True') this.d.events.record(ep, 'Normal', 'Ready', r.ready.message);
        else if (wasReady === 'True') this.d.events.record(ep, 'Warning', 'NotReady', r.ready.message);
      }
    }
    return r.ready.status === 'True';
  }

  // --- deletion ----------------------------------------------------------------

  private async finalize(ep: Endpoint): Promise<ReconcileResult> {
    if (!ep.metadata.finalizers?.includes(FINALIZER)) return {};
    const namespace = ep.metadata.namespace ?? '';
    const key = `${namespace}/${ep.metadata.name ?? ''}`;
    if (ep.metadata.annotations?.[FORCE_DELETE_ANNOTATION] === 'true') {
      this.d.events.record(
        ep,
        'Warning',
        'ForceDeleted',
        `${FORCE_DELETE_ANNOTATION}=true: deleting without waiting for delivery; undelivered segments on the volumes are not uploaded`,
      );
      await this.removeFinalizer(ep);
      this.log.warn({ key }, 'finalizer removed by force annotation');
      return {};
    }
    const spec = withEndpointDefaults(ep.spec);
    const names = childNames({ ...ep, spec });
    const claims = await this.d.client.listAll<V1PersistentVolumeClaim & KubeObject>(Resources.pvc, {
      namespace,
      labelSelector: `${ENDPOINT_LABEL}=${ep.metadata.name ?? ''}`,
    });
    const result = await checkDrained({
      statefulSetName: names.statefulSet,
      claims: claims.items,
      pods: this.podsOf({ ep: { ...ep, spec }, namespace } as Ctx),
      apiKey: deriveStatusKey(this.d.operatorKey, ep),
      probe: this.d.probe,
      tls: servesTls({ ...ep, spec }),
    });
    if (result.drained) {
      this.d.events.record(
        ep,
        'Normal',
        'Drained',
        `${result.checked} replica volume(s) checked: nothing undelivered; releasing the finalizer`,
      );
      await this.removeFinalizer(ep);
      return {};
    }
    const message = `waiting for delivery before deletion (set annotation ${FORCE_DELETE_ANNOTATION}: "true" to skip): ${result.blockers.join('; ')}`;
    this.d.events.record(ep, 'Normal', 'Draining', message);
    const conditions = mergeConditions(
      ep.status?.conditions ?? [],
      [
        ...((ep.status?.conditions ?? []) as Condition[]).filter((c) => c.type !== 'Draining'),
        { type: 'Draining', status: 'True', reason: 'WaitingForDelivery', message },
      ],
      ep.metadata.generation,
    );
    if (!jsonEqual(conditions, ep.status?.conditions)) {
      await this.d.client.apply(
        Resources.endpoint,
        {
          metadata: { name: ep.metadata.name, namespace },
          status: { ...ep.status, conditions },
        } as KubeObject,
        { subresource: 'status' },
      );
    }
    return { requeueAfterMs: this.d.drainPollMs ?? 10_000 };
  }

  private async removeFinalizer(ep: Endpoint): Promise<void> {
    const finalizers = ep.metadata.finalizers ?? [];
    const i = finalizers.indexOf(FINALIZER);
    if (i < 0) return;
    // test + remove: if the list changed under us the patch fails and the
    // reconcile retries on a fresh read, never removing someone else's entry.
    await this.d.client.jsonPatch(Resources.endpoint, ep.metadata.namespace, ep.metadata.name ?? '', [
      { op: 'test', path: `/metadata/finalizers/${i}`, value: FINALIZER },
      { op: 'remove', path: `/metadata/finalizers/${i}` },
    ]);
  }
}

function podProblem(p: V1Pod): string {
  const waiting = p.status?.containerStatuses?.find((c) => c.state?.waiting)?.state?.waiting?.reason;
  if (waiting) return waiting;
  const scheduled = p.status?.conditions?.find((c) => c.type === 'PodScheduled');
  if (scheduled?.status === 'False') return `${scheduled.reason ?? 'Unschedulable'}`;
  if (p.status?.phase === 'Pending' && !p.spec?.nodeName) return 'Pending, not scheduled';
  return p.status?.phase ?? 'Unknown';
}
