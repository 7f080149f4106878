// Endpoint controller: one reconcile is a list of named steps, each applying
// one part of the desired state with server-side apply (one field manager).
// Status is computed from what the StatefulSet and its pods report.
import type { V1Job, V1Node, V1PersistentVolumeClaim, V1Pod, V1StatefulSet } from '@kubernetes/client-node';
import type { Endpoint, EndpointSpec, EndpointStatus } from '../api/endpoint.ts';
import { endpointSpecErrors, withEndpointDefaults } from '../api/endpoint.ts';
import type { View } from '../api/view.ts';
import { httpNodeDrainControl } from '../adapters/node-status.ts';
import type { NodeDrainControl, NodeStatusProbe } from '../adapters/node-status.ts';
import type { NodeDrainClient } from '../adapters/node-drain.ts';
import type { CompiledView } from '../adapters/view-compiler.ts';
import {
  CONFIG_HASH_ANNOTATION,
  DATA_VOLUME,
  DRAIN_FROM_ANNOTATION,
  CLAIMS_ANNOTATION,
  DRAINER_CLAIM_LABEL,
  DRAINER_ENDPOINT_LABEL,
  ENDPOINT_LABEL,
  ENDPOINT_UID_LABEL,
  FINALIZER,
  FORCE_DELETE_ANNOTATION,
  childNames,
  drainerName,
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
  buildNetworkPolicy,
  buildServiceAccount,
  buildServices,
  buildStatefulSet,
} from '../model/resources.ts';
import type { NetworkPolicySettings } from '../model/resources.ts';
import type { EventSink } from '../runtime/events.ts';
import { Resources, isConflict, isNotFound } from '../runtime/kube.ts';
import type { KubeClient, KubeObject, ResourceType } from '../runtime/kube.ts';
import type { Logger } from '../runtime/log.ts';
import { buildDrainerJob, buildDrainerPdb, drainerOutcome } from '../model/drainer.ts';
import { jsonEqual, mergeConditions } from './conditions.ts';
import type { Condition, ConditionInput } from './conditions.ts';
import {
  claimKey,
  drainReplica,
  dropPendingClaims,
  markClaimDrained,
  markClaimPending,
  ownClaims,
  parseClaimLedger,
  planScale,
  reachable,
  reclaimAction,
  releaseStrayDrains,
  scaleUpClaim,
  settleClaims,
  undrainedClaims,
  undrainReplica,
} from './lifecycle.ts';
import type { ClaimLedger, NodeAccess, ReplicaDrain } from './lifecycle.ts';
import { drainLeavingNodes, nodeLeaving } from './node-drain.ts';
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
  /** POST/DELETE /v1/drain on a node; default: HTTP. */
  drainControl?: NodeDrainControl;
  /** The node's port on a pod IP; default ADMIN_PORT (the admin listener: /v1/status, /v1/drain) (tests run nodes elsewhere). */
  nodePort?: number;
  /** How often a draining Endpoint (scale-down, deletion, drainer Jobs) re-checks. */
  drainPollMs?: number;
  /** A NetworkPolicy per Endpoint (model/resources.ts buildNetworkPolicy); unset: none, and ours are deleted. */
  networkPolicy?: NetworkPolicySettings;
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
  /** This Endpoint's WAL claims (drainScaleDown), for reclaimVolumes. */
  claims?: V1PersistentVolumeClaim[];
  /** The StatefulSet replicas drainScaleDown decided on (spec.replicas unless draining). */
  statefulSetReplicas?: number;
  /** The drain-from annotation drainScaleDown decided on. */
  drainFrom?: number;
  /** Why a scale-down or a volume reclaim is not finished: the Draining condition. */
  draining: string[];
  /** The NodeDrain condition while a pod of this Endpoint is on a leaving node. */
  nodeDrain?: ConditionInput;
}

type Step = { name: string; run: (ctx: Ctx) => Promise<void> };

/**
 * The claim ledger was computed from a stale Endpoint (its write got 409 on
 * the resourceVersion): nothing is wrong, the reconcile is retried shortly on
 * the informer's fresher copy, without a ReconcileFailed event.
 */
class StaleLedger extends Error {
  constructor(cause: unknown) {
    super('the claim ledger was read from a stale Endpoint: retried on a fresh read', { cause });
    this.name = 'StaleLedger';
  }
}

/** How soon a reconcile whose ledger write was stale is retried. */
const STALE_LEDGER_RETRY_MS = 1000;

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
  /** Endpoint keys whose NetworkPolicy was deleted (or never was) while the operator runs without one. */
  private readonly networkPolicySwept = new Set<string>();

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
    { name: 'ensureNetworkPolicy', run: (c) => this.ensureNetworkPolicy(c) },
    { name: 'drainScaleDown', run: (c) => this.drainScaleDown(c) },
    { name: 'ensureStatefulSet', run: (c) => this.ensureStatefulSet(c) },
    { name: 'ensurePdb', run: (c) => this.ensurePdb(c) },
    { name: 'reclaimVolumes', run: (c) => this.reclaimVolumes(c) },
    { name: 'drainLeavingNodes', run: (c) => this.drainLeavingNodes(c) },
    { name: 'releaseStrayDrains', run: (c) => this.releaseStrayDrains(c) },
  ];

  async reconcile(key: string): Promise<ReconcileResult> {
    const ep = this.d.endpoints.getByKey(key);
    if (!ep) {
      this.exposureSwept.delete(key);
      this.networkPolicySwept.delete(key);
      return {}; // gone: the garbage collector removes the children (owner references)
    }
    if (ep.metadata.deletionTimestamp)
      try {
        return await this.finalize(ep);
      } catch (err) {
        if (!(err instanceof StaleLedger)) throw err;
        this.log.info({ key }, err.message);
        return { requeueAfterMs: STALE_LEDGER_RETRY_MS };
      }

    const spec = withEndpointDefaults(ep.spec);
    const ctx: Ctx = {
      ep: { ...ep, spec },
      key,
      namespace: ep.metadata.namespace ?? '',
      views: [],
      excludedViews: 0,
      configHash: '',
      draining: [],
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
        if (err instanceof StaleLedger) {
          this.log.info({ key, step: step.name }, err.message);
          return { requeueAfterMs: STALE_LEDGER_RETRY_MS };
        }
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
      await this.updateStatus(ctx, [...this.drainingCondition(ctx), ...nodeDrain], {
        type: 'Degraded',
        status: 'True',
        reason: 'ExposeConflict',
        message: ctx.exposeConflict,
      });
      return { requeueAfterMs: nodeDrainPollMs ?? this.d.notReadyPollMs ?? 30_000 };
    }
    const ready = await this.updateStatus(ctx, [...this.drainingCondition(ctx), ...nodeDrain]);
    // A replica on a leaving node is polled often: kubectl drain is waiting on it.
    if (nodeDrainPollMs !== undefined) return { requeueAfterMs: nodeDrainPollMs };
    // Draining replicas and drainer Jobs change nothing we watch: poll them.
    if (ctx.draining.length > 0) return { requeueAfterMs: this.d.drainPollMs ?? 10_000 };
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

  /**
   * The Endpoint's own children (ServiceAccount, ConfigMaps, Services, PDB,
   * StatefulSet) are applied only over objects it controls: a same-named
   * object made by hand or by another tool is left untouched and the reconcile
   * stops here (Degraded OwnershipConflict), since the pods would otherwise
   * run as that ServiceAccount, or be served by that Service.
   */
  private async applyOwnedOrBlock(ctx: Ctx, rt: ResourceType, obj: KubeObject): Promise<void> {
    const conflict = await this.applyOwned(ctx, rt, obj);
    if (conflict !== undefined) throw new StepBlocked('OwnershipConflict', conflict);
  }

  private async ensureServiceAccount(ctx: Ctx): Promise<void> {
    await this.applyOwnedOrBlock(ctx, Resources.serviceAccount, buildServiceAccount(ctx.ep));
  }

  private async ensureConfigMap(ctx: Ctx): Promise<void> {
    const { configMap, viewsConfigMap, hash } = buildConfigMap(
      ctx.ep,
      ctx.views,
      statusKeyLine(deriveStatusKey(this.d.operatorKey, ctx.ep)),
    );
    ctx.configHash = hash;
    await this.applyOwnedOrBlock(ctx, Resources.configMap, viewsConfigMap);
    await this.applyOwnedOrBlock(ctx, Resources.configMap, configMap);
  }

  private async ensureServices(ctx: Ctx): Promise<void> {
    const { headless, client } = buildServices(ctx.ep);
    await this.applyOwnedOrBlock(ctx, Resources.service, headless);
    await this.applyOwnedOrBlock(ctx, Resources.service, client);
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

  /**
   * Applied when the operator runs with one (the chart's networkPolicy.enabled),
   * else deleted once per Endpoint and operator run (it may have been on before).
   * Like the Ingress, a same-named object the Endpoint does not control is left alone.
   */
  private async ensureNetworkPolicy(ctx: Ctx): Promise<void> {
    const settings = this.d.networkPolicy;
    if (settings !== undefined) {
      const conflict = await this.applyOwned(
        ctx,
        Resources.networkPolicy,
        buildNetworkPolicy(ctx.ep, settings),
      );
      if (conflict !== undefined) this.log.warn({ key: ctx.key }, conflict);
      return;
    }
    if (this.networkPolicySwept.has(ctx.key)) return;
    if (await this.deleteOwned(ctx, Resources.networkPolicy, childNames(ctx.ep).networkPolicy))
      this.networkPolicySwept.add(ctx.key);
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
    const conflict = await this.applyControlled(
      { uid: ctx.ep.metadata.uid, kind: 'Endpoint', name: ctx.ep.metadata.name },
      'this Endpoint',
      rt,
      obj,
    );
    if (conflict === undefined) return undefined;
    const hint =
      rt === Resources.ingress || rt === Resources.httpRoute ? ', or drop the field from spec.expose' : '';
    return `${conflict}. Delete or rename it to let the operator create its own${hint}`;
  }

  /**
   * Applies obj unless its name (in obj's namespace) holds an object whose
   * controller owner reference is not `owner`; returns that conflict, the
   * object left untouched. A live read, not a cache. An object controlled by
   * an earlier owner of the same kind and name (another uid: a deleted
   * Endpoint or claim re-created under its name — only one can exist at a
   * time) is this owner's predecessor's, made by this operator, and taken
   * over: the garbage collector would remove it anyway.
   */
  private async applyControlled(
    owner: { uid: string | undefined; kind: string; name: string | undefined },
    ownerDescription: string,
    rt: ResourceType,
    obj: KubeObject,
  ): Promise<string | undefined> {
    const name = obj.metadata?.name ?? '';
    const existing = await this.d.client.get(rt, obj.metadata?.namespace, name);
    const controlled = (existing?.metadata?.ownerReferences ?? []).some(
      (r) =>
        r.controller === true &&
        owner.uid !== undefined &&
        (r.uid === owner.uid || (r.kind === owner.kind && owner.name !== undefined && r.name === owner.name)),
    );
    if (existing !== undefined && !controlled) {
      const owner = existing.metadata?.ownerReferences?.find((r) => r.controller === true);
      const whose = owner
        ? `it is controlled by ${owner.kind} ${owner.name} (uid ${owner.uid})`
        : 'it has no controller owner reference (made by hand or by another tool)';
      return `${rt.kind} ${name} exists and does not belong to ${ownerDescription}: ${whose}; not applied, left untouched`;
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
    // A live read, not the label-selected cache: a same-named StatefulSet
    // without our labels (made by hand) must be seen too, and left untouched.
    const cached = await this.d.client.get<V1StatefulSet & KubeObject>(
      Resources.statefulSet,
      ctx.namespace,
      stsName,
    );
    const uid = ctx.ep.metadata.uid ?? '';
    const controller = cached?.metadata?.ownerReferences?.find((r) => r.controller);
    if (cached && controller?.uid !== uid)
      throw controller?.kind === 'Endpoint'
        ? new StepBlocked(
            'PreviousStatefulSet',
            `StatefulSet ${stsName} belongs to another Endpoint (uid ${controller.uid}), e.g. a deleted one of the same name: waiting for the garbage collector to remove it`,
          )
        : new StepBlocked(
            'OwnershipConflict',
            `StatefulSet ${stsName} exists and does not belong to this Endpoint: ${controller ? `it is controlled by ${controller.kind} ${controller.name} (uid ${controller.uid})` : 'it has no controller owner reference (made by hand or by another tool)'}; not applied, left untouched. Delete or rename it to let the operator create its own`,
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
      replicas: Math.max(ctx.ep.spec.replicas, ctx.statefulSetReplicas ?? 0),
      uid,
      endpointCreated: ctx.ep.metadata.creationTimestamp,
    });
    if (foreign.length > 0)
      throw new StepBlocked(
        'ForeignVolumes',
        `volume claims ${foreign.map((f) => `${f.name} (${f.uid ? `Endpoint uid ${f.uid}` : 'unlabelled, older than this Endpoint'})`).join(', ')} belong to an earlier Endpoint named ${ctx.ep.metadata.name ?? ''}; the StatefulSet would adopt them. Check they hold nothing undelivered, then delete them, or label them ${ENDPOINT_UID_LABEL}=${uid} to adopt them on purpose`,
      );
    if (desired.spec && ctx.statefulSetReplicas !== undefined)
      desired.spec.replicas = ctx.statefulSetReplicas;
    if (ctx.drainFrom !== undefined && desired.metadata)
      desired.metadata.annotations = {
        ...desired.metadata.annotations,
        [DRAIN_FROM_ANNOTATION]: String(ctx.drainFrom),
      };
    ctx.previousHash = cached?.spec?.template.metadata?.annotations?.[CONFIG_HASH_ANNOTATION];
    // Ours: forced (kubectl edits reverted). Absent: not forced, so one made
    // between the read and this apply is a conflict (409), not a takeover.
    ctx.statefulSet = await this.d.client.apply<V1StatefulSet & KubeObject>(Resources.statefulSet, desired, {
      force: cached !== undefined,
    });
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

  // --- scale-down and volume reclaim (controller/lifecycle.ts) ---------------

  private nodeAccess(ep: Endpoint & { spec: EndpointSpec }): NodeAccess {
    return {
      apiKey: deriveStatusKey(this.d.operatorKey, ep),
      control: this.d.drainControl ?? httpNodeDrainControl(),
      probe: this.d.probe,
      tls: servesTls(ep),
      ...(this.d.nodePort !== undefined ? { port: this.d.nodePort } : {}),
    };
  }

  private podOf(namespace: string, statefulSet: string, ordinal: number): V1Pod | undefined {
    return this.d.pods.getByKey(`${namespace}/${statefulSet}-${ordinal}`);
  }

  private async listClaims(ep: Endpoint): Promise<(V1PersistentVolumeClaim & KubeObject)[]> {
    const claims = await this.d.client.listAll<V1PersistentVolumeClaim & KubeObject>(Resources.pvc, {
      namespace: ep.metadata.namespace ?? '',
      labelSelector: `${ENDPOINT_LABEL}=${ep.metadata.name ?? ''}`,
    });
    return claims.items;
  }

  private async listDrainerJobs(ep: Endpoint): Promise<Map<string, V1Job>> {
    const jobs = await this.d.client.listAll<V1Job & KubeObject>(Resources.job, {
      namespace: ep.metadata.namespace ?? '',
      labelSelector: `${DRAINER_ENDPOINT_LABEL}=${ep.metadata.name ?? ''}`,
    });
    return new Map(jobs.items.map((j) => [j.metadata?.name ?? '', j]));
  }

  /**
   * Scale-down drains first: while spec.replicas is below the StatefulSet's
   * replicas, the ordinals to go get POST /v1/drain (every poll: drain mode
   * does not survive a restart) and the StatefulSet is lowered only past the
   * ones that report drained (or cannot be asked: the drainer takes their
   * volume). The ordinals told to drain are kept in an annotation on the
   * StatefulSet, so a reverted scale-down (even after an operator restart)
   * sends DELETE /v1/drain to those wanted again. A scale-up never starts a
   * pod on a volume a drainer Job still holds.
   */
  private async drainScaleDown(ctx: Ctx): Promise<void> {
    const stsName = childNames(ctx.ep).statefulSet;
    const cached = this.d.statefulSets.getByKey(`${ctx.namespace}/${stsName}`);
    const desired = ctx.ep.spec.replicas;
    const uid = ctx.ep.metadata.uid ?? '';
    if (!cached || cached.metadata?.ownerReferences?.find((r) => r.controller)?.uid !== uid) return;
    const current = cached.spec?.replicas ?? 1;
    const annotation = cached.metadata?.annotations?.[DRAIN_FROM_ANNOTATION];
    const drainFrom = annotation !== undefined && /^\d+$/.test(annotation) ? Number(annotation) : undefined;
    if (desired === current && drainFrom === undefined) return;

    const access = this.nodeAccess(ctx.ep);
    const replicas = new Map<number, ReplicaDrain>();
    for (let k = desired; k < current; k++)
      replicas.set(k, await drainReplica(this.podOf(ctx.namespace, stsName, k), access));
    let undrainFailed = false;
    if (drainFrom !== undefined)
      for (let k = drainFrom; k < Math.min(desired, current); k++) {
        const err = await undrainReplica(this.podOf(ctx.namespace, stsName, k), access);
        if (err !== undefined) {
          undrainFailed = true;
          ctx.draining.push(`${stsName}-${k}: wanted again, DELETE /v1/drain failed: ${err}`);
        } else if (reachable(this.podOf(ctx.namespace, stsName, k)))
          this.d.events.record(
            ctx.ep,
            'Normal',
            'DrainReverted',
            `${stsName}-${k} wanted again: takes writes`,
          );
      }
    const reclaiming: number[] = [];
    const holds = new Map<number, string>();
    const handedBack: { claim: V1PersistentVolumeClaim; ordinal: number }[] = [];
    if (desired > current) {
      const claims = await this.listClaims(ctx.ep);
      ctx.claims = claims;
      const jobs = await this.listDrainerJobs(ctx.ep);
      // Read live, once: no pod may start on a volume a drainer pod is still
      // alive on, whatever its Job says (or if its Job is gone).
      const livePods = await this.liveDrainerPods(ctx.ep);
      for (const c of ownClaims({
        claims,
        statefulSetName: stsName,
        uid,
        endpointCreated: ctx.ep.metadata.creationTimestamp,
      })) {
        if (c.ordinal >= desired) continue;
        const claimName = c.claim.metadata?.name ?? '';
        const job = jobs.get(drainerName(claimName));
        // A finished drainer holds nothing (an unlabelled claim is kept after
        // it; a failed one leaves the WAL to the pod) once none of its pods
        // is alive: the pod may have the volume back. Its Job goes first: it
        // would vouch at a later scale-down for a WAL the pod has written to since.
        const hold = scaleUpClaim({ claim: c.claim, job, livePods: livePods.get(claimName) ?? 0 });
        if (hold.kind === 'held') {
          reclaiming.push(c.ordinal);
          holds.set(c.ordinal, hold.why);
          continue;
        }
        if (hold.kind === 'deleteJob' && job !== undefined) {
          await this.deleteDrainerJob(ctx.namespace, job);
          if (drainerOutcome(job) === 'failed')
            this.d.events.record(ctx.ep, 'Normal', 'DrainerDeleted', hold.why);
        }
        handedBack.push(c);
      }
    }
    const plan = planScale({ desired, current, drainFrom, replicas, reclaiming, holds, undrainFailed });
    // Back with their pods (below the replicas applied): no longer the
    // ledger's to account for (controller/lifecycle.ts markClaimPending).
    const ledger = dropPendingClaims(
      this.claimLedger(ctx.ep),
      handedBack.filter((c) => c.ordinal < plan.replicas).map((c) => c.claim),
    );
    if (ledger !== undefined) await this.writeClaimLedger(ctx.ep, ledger);
    ctx.statefulSetReplicas = plan.replicas;
    ctx.drainFrom = plan.drainFrom;
    for (const w of plan.waiting) ctx.draining.push(`${stsName}: ${w}`);
    if (desired < current) {
      const message =
        plan.replicas === desired
          ? `scaling ${current} → ${desired}: ordinals ${desired}..${current - 1} drained or not running`
          : `scaling ${current} → ${desired}: held at ${plan.replicas} until drained: ${plan.waiting.join('; ')}`;
      this.d.events.record(ctx.ep, 'Normal', 'ScaleDown', message);
    }
  }

  /**
   * Every WAL claim of this Endpoint with no pod to serve it (ordinal at or
   * above the StatefulSet's replicas) is drained by a drainer Job on its node
   * and then deleted — only a claim labelled with this Endpoint's uid, and
   * only after its Job succeeded. Returns one line per claim not finished.
   */
  private async reclaimClaims(
    ep: Endpoint & { spec: EndpointSpec },
    replicas: number,
    views: CompiledView[],
    claims?: V1PersistentVolumeClaim[],
  ): Promise<{ pending: string[]; remaining: number }> {
    const namespace = ep.metadata.namespace ?? '';
    const stsName = childNames(ep).statefulSet;
    const all = claims ?? (await this.listClaims(ep));
    const own = ownClaims({
      claims: all,
      statefulSetName: stsName,
      uid: ep.metadata.uid ?? '',
      endpointCreated: ep.metadata.creationTimestamp,
    }).filter((c) => c.ordinal >= replicas);
    if (own.length === 0) return { pending: [], remaining: 0 };
    const jobs = await this.listDrainerJobs(ep);
    const pending: string[] = [];
    let remaining = 0;
    let livePods: Map<string, number> | undefined;
    for (const { claim, ordinal, labelled } of own) {
      const name = claim.metadata?.name ?? '';
      // A live read, not the cache: a pod that still runs on this volume must never meet a drainer.
      const podExists =
        (await this.d.client.get(Resources.pod, namespace, `${stsName}-${ordinal}`)) !== undefined;
      const job = jobs.get(drainerName(name));
      // Nor a drainer pod whose Job is gone (read live, once per call, only when needed).
      if (job === undefined && livePods === undefined) livePods = await this.liveDrainerPods(ep);
      const action = reclaimAction({
        claim,
        labelled,
        podExists,
        job,
        liveDrainerPods: livePods?.get(name) ?? 0,
      });
      if (action.kind === 'startDrainer' || action.kind === 'wait' || action.kind === 'blocked') {
        // Accounted for from now on, not only by the finalizer: a claim a
        // namespace deletion removes before the finalizer's first poll is
        // then reported undrained, not "Drained". Written once per claim.
        const ledger = markClaimPending(this.claimLedger(ep), claim);
        if (ledger !== undefined) await this.writeClaimLedger(ep, ledger);
      }
      switch (action.kind) {
        case 'startDrainer': {
          const d = buildDrainerJob({
            ep,
            claim,
            instance: `${stsName}-${ordinal}`,
            nodeImage: this.d.nodeImage,
            views,
          });
          // Each only over an object the claim controls (or none): a same-named
          // one of someone else's is left untouched and no drainer starts.
          const claimRef = { uid: claim.metadata?.uid, kind: 'PersistentVolumeClaim', name };
          const claimOwner = `volume claim ${name}`;
          const conflict =
            (await this.applyControlled(claimRef, claimOwner, Resources.serviceAccount, d.serviceAccount)) ??
            (await this.applyControlled(claimRef, claimOwner, Resources.configMap, d.configMap)) ??
            // Before the Job: no moment where `kubectl drain` may evict its pod.
            (await this.applyControlled(claimRef, claimOwner, Resources.pdb, d.pdb));
          if (conflict !== undefined) {
            const why = `${name}: drainer not started: ${conflict}`;
            this.d.events.record(ep, 'Warning', 'DrainerBlocked', why);
            pending.push(why);
            remaining++;
            break;
          }
          try {
            await this.d.client.create(Resources.job, d.job);
          } catch (err) {
            if (!isConflict(err)) throw err; // created meanwhile: the next poll reads it
          }
          this.d.events.record(
            ep,
            'Normal',
            'DrainerStarted',
            `${name} has no pod: drainer Job ${d.job.metadata?.name ?? ''} delivers what it holds`,
          );
          pending.push(`${name}: drainer Job ${d.job.metadata?.name ?? ''} started`);
          remaining++;
          break;
        }
        case 'deleteClaim': {
          // Recorded first: a finalizer that sees it terminating, or gone, knows it was drained.
          await this.markClaimDrained(ep, claim, all);
          await this.d.client.delete(Resources.pvc, namespace, name, {
            preconditions: { uid: claim.metadata?.uid },
          });
          this.d.events.record(ep, 'Normal', 'VolumeReclaimed', `${action.why}: deleted`);
          // Its finished pod would keep the claim (pvc-protection): the Job goes now, not with the claim.
          if (job !== undefined) await this.deleteDrainerJob(namespace, job);
          pending.push(`${name}: being deleted`);
          remaining++;
          break;
        }
        case 'deleteJob': {
          // Its drainer succeeded: recorded first, so a finalizer that sees the
          // claim gone (without the Job) does not take it for one deleted undrained.
          if (job?.metadata?.ownerReferences?.find((r) => r.controller)?.uid === claim.metadata?.uid)
            await this.markClaimDrained(ep, claim, all);
          if (job !== undefined) await this.deleteDrainerJob(namespace, job);
          pending.push(action.why);
          remaining++;
          break;
        }
        case 'keep':
          break;
        case 'wait': {
          // A drainer started by an operator without drainer PDBs gets its PDB now.
          if (
            job !== undefined &&
            drainerOutcome(job) === 'running' &&
            job.metadata?.ownerReferences?.find((r) => r.controller)?.uid === claim.metadata?.uid &&
            claim.metadata?.deletionTimestamp === undefined
          )
            try {
              const conflict = await this.applyControlled(
                { uid: claim.metadata?.uid, kind: 'PersistentVolumeClaim', name },
                `volume claim ${name}`,
                Resources.pdb,
                buildDrainerPdb(ep, claim),
              );
              if (conflict !== undefined) this.log.warn({ claim: name }, conflict);
            } catch (err) {
              // Best effort (a terminating namespace refuses new objects): the drainer runs on.
              this.log.warn({ err, claim: name }, 'drainer PodDisruptionBudget not applied');
            }
          pending.push(action.why);
          remaining++;
          break;
        }
        case 'blocked':
          this.d.events.record(ep, 'Warning', 'DrainerBlocked', action.why);
          pending.push(action.why);
          remaining++;
          break;
      }
    }
    return { pending, remaining };
  }

  /** The claim ledger (CLAIMS_ANNOTATION) as the Endpoint in hand has it. */
  private claimLedger(ep: Endpoint): ClaimLedger {
    return parseClaimLedger(ep.metadata.annotations?.[CLAIMS_ANNOTATION]);
  }

  /**
   * Writes the claim ledger on the Endpoint (a merge patch of one annotation),
   * and on the object in hand. The patch carries the resourceVersion the
   * ledger was read at: one computed from a stale Endpoint (an informer cache
   * behind our own last write) gets 409 and the reconcile is retried on a
   * fresh read, rather than overwriting "drained" with what an older ledger
   * made of it.
   */
  private async writeClaimLedger(ep: Endpoint, ledger: ClaimLedger): Promise<void> {
    const value = Object.keys(ledger).length > 0 ? JSON.stringify(ledger) : undefined;
    if (ep.metadata.annotations?.[CLAIMS_ANNOTATION] === value) return;
    const rv = ep.metadata.resourceVersion;
    let updated: KubeObject | undefined;
    try {
      updated = await this.d.client.mergePatch<Endpoint & KubeObject>(
        Resources.endpoint,
        ep.metadata.namespace ?? '',
        ep.metadata.name ?? '',
        {
          metadata: {
            ...(rv !== undefined ? { resourceVersion: rv } : {}),
            annotations: { [CLAIMS_ANNOTATION]: value ?? null },
          },
        },
      );
    } catch (err) {
      if (isConflict(err)) throw new StaleLedger(err);
      throw err;
    }
    const annotations = { ...ep.metadata.annotations };
    if (value === undefined) delete annotations[CLAIMS_ANNOTATION];
    else annotations[CLAIMS_ANNOTATION] = value;
    ep.metadata.annotations = annotations;
    // The next write of this reconcile follows this one, not the read.
    const next = updated?.metadata?.resourceVersion;
    if (next !== undefined) ep.metadata.resourceVersion = next;
  }

  /** Before the operator deletes a claim it drained (its drainer succeeded, or its replica reported drained). */
  private async markClaimDrained(
    ep: Endpoint,
    claim: V1PersistentVolumeClaim,
    claims?: readonly V1PersistentVolumeClaim[],
  ): Promise<void> {
    const present = new Set((claims ?? (await this.listClaims(ep))).map(claimKey));
    await this.writeClaimLedger(ep, markClaimDrained(this.claimLedger(ep), claim, present));
  }

  /**
   * Per claim name, its drainer pods that are not finished (Succeeded or
   * Failed; a terminating one is alive), read live: one list of the
   * Endpoint's drainer pods, whatever Job (if any) they belong to.
   */
  private async liveDrainerPods(ep: Endpoint): Promise<Map<string, number>> {
    const pods = await this.d.client.listAll<V1Pod & KubeObject>(Resources.pod, {
      namespace: ep.metadata.namespace ?? '',
      labelSelector: `${DRAINER_ENDPOINT_LABEL}=${ep.metadata.name ?? ''}`,
    });
    const alive = new Map<string, number>();
    for (const p of pods.items) {
      const claim = p.metadata?.labels?.[DRAINER_CLAIM_LABEL];
      if (claim === undefined || p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed') continue;
      alive.set(claim, (alive.get(claim) ?? 0) + 1);
    }
    return alive;
  }

  private async deleteDrainerJob(namespace: string, job: V1Job): Promise<void> {
    try {
      await this.d.client.delete(Resources.job, namespace, job.metadata?.name ?? '', {
        preconditions: { uid: job.metadata?.uid },
      });
    } catch (err) {
      if (!isConflict(err)) throw err; // replaced meanwhile: the next poll looks again
    }
  }

  private async reclaimVolumes(ctx: Ctx): Promise<void> {
    const replicas = ctx.statefulSet?.spec?.replicas;
    if (replicas === undefined) return;
    const { pending } = await this.reclaimClaims(ctx.ep, replicas, ctx.views, ctx.claims);
    ctx.draining.push(...pending);
  }

  private drainingCondition(ctx: Ctx): ConditionInput[] {
    if (ctx.draining.length === 0) return [];
    return [
      {
        type: 'Draining',
        status: 'True',
        reason: 'ScaleDown',
        message: ctx.draining.join('; ').slice(0, 4000),
      },
    ];
  }

  private async ensurePdb(ctx: Ctx): Promise<void> {
    await this.applyOwnedOrBlock(ctx, Resources.pdb, buildPdb(ctx.ep));
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
        deleteClaim: async (name, uid) => {
          await this.markClaimDrained(ep, { metadata: { name, uid } });
          await this.d.client.delete(Resources.pvc, ns, name, { preconditions: { uid } });
        },
        deletePod: (name, uid) => this.d.client.delete(Resources.pod, ns, name, { preconditions: { uid } }),
        event: (type, reason, message) => this.d.events.record(ep, type, reason, message),
      },
    });
    ctx.nodeDrain = outcome.condition;
  }

  /** lifecycle.ts releaseStrayDrains: DELETE /v1/drain to a replica left in drain mode that nothing drains. */
  private async releaseStrayDrains(ctx: Ctx): Promise<void> {
    const nodes = this.d.nodes;
    const ns = ctx.namespace;
    const { released, failed } = await releaseStrayDrains({
      pods: this.podsOf(ctx),
      statefulSetName: childNames(ctx.ep).statefulSet,
      desired: ctx.ep.spec.replicas,
      leaving: (name) => (nodes === undefined ? undefined : nodeLeaving(nodes.getByKey(name))),
      // Only node drains delete the claim of a wanted ordinal; without them
      // the operator may not even read claims one by one (RBAC: get comes with nodeDrain).
      claimDeleting: async (pod) => {
        if (nodes === undefined) return false;
        const claim = await this.d.client.get(
          Resources.pvc,
          ns,
          `${DATA_VOLUME}-${pod.metadata?.name ?? ''}`,
        );
        return claim?.metadata?.deletionTimestamp !== undefined;
      },
      access: this.nodeAccess(ctx.ep),
    });
    for (const name of released)
      this.d.events.record(
        ctx.ep,
        'Normal',
        'DrainReleased',
        `${name} was in drain mode, but its node is not leaving and its ordinal is wanted: takes writes again`,
      );
    ctx.draining.push(...failed);
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
    const full = { ...ep, spec };
    const names = childNames(full);
    // 0. Account for every claim: one deleted under the finalizer before its
    //    drainer succeeded (a namespace deletion deletes the claims itself,
    //    and refuses new Jobs) was not drained, and is never reported so.
    const claims = await this.listClaims(full);
    const jobs = await this.listDrainerJobs(full);
    const settled = settleClaims({
      ledger: this.claimLedger(ep),
      claims: ownClaims({
        claims,
        statefulSetName: names.statefulSet,
        uid: ep.metadata.uid ?? '',
        endpointCreated: ep.metadata.creationTimestamp,
      }).map(({ claim }) => ({ claim, job: jobs.get(drainerName(claim.metadata?.name ?? '')) })),
    });
    if (settled.changed) await this.writeClaimLedger(ep, settled.ledger);
    for (const name of settled.undrained) {
      const why = `${name} was deleted (by someone else: a namespace deletion?) before its drainer succeeded: what its WAL held undelivered is not delivered`;
      this.log.warn({ key, claim: name }, why);
      this.d.events.record(ep, 'Warning', 'VolumeDeletedUndrained', why);
    }
    // 1. Every replica that can be asked drains (refuses writes, delivers
    //    everything) and is waited for; one that cannot (gone, terminating,
    //    not running — e.g. a foreground cascade deleted it) is the volume
    //    path's.
    const access = this.nodeAccess(full);
    const waiting: string[] = [];
    const pods = this.podsOf({ ep: full, namespace } as Ctx);
    for (const pod of pods.sort((a, b) =>
      (a.metadata?.name ?? '').localeCompare(b.metadata?.name ?? '', 'en', { numeric: true }),
    )) {
      const r = await drainReplica(pod, access);
      if (r.kind === 'waiting') waiting.push(`${pod.metadata?.name ?? '?'}: ${r.why}`);
    }
    // 2. Then no pod may run on a volume: the StatefulSet goes to 0 (its pods
    //    deliver what is left on SIGTERM) ...
    if (waiting.length === 0) {
      const sts = this.d.statefulSets.getByKey(`${namespace}/${names.statefulSet}`);
      if (
        sts?.metadata?.ownerReferences?.some((r) => r.uid === ep.metadata.uid) === true &&
        sts.metadata.deletionTimestamp === undefined &&
        (sts.spec?.replicas ?? 1) > 0
      ) {
        try {
          await this.d.client.mergePatch(Resources.statefulSet, namespace, names.statefulSet, {
            spec: { replicas: 0 },
          });
        } catch (err) {
          // Gone already (a foreground cascade): its pods are going too.
          if (!isNotFound(err)) throw err;
        }
        this.d.events.record(
          ep,
          'Normal',
          'ScaleDown',
          `every replica drained: ${names.statefulSet} scaled to 0`,
        );
      }
      // 3. ... and every volume is drained by a drainer Job and deleted.
      let views: CompiledView[] = [];
      try {
        const ctx = { ep: full, namespace, views: [], excludedViews: 0 } as unknown as Ctx;
        await this.collectViews(ctx);
        views = ctx.views;
      } catch (err) {
        // A drainer started now commits its segments without their View
        // outputs: loud, so that someone can re-run those Views.
        const why = `Views not compiled (${(err as Error).message.slice(0, 300)}): drainers started now deliver the segments without their View outputs`;
        this.log.warn({ err, key }, why);
        this.d.events.record(ep, 'Warning', 'DrainerWithoutViews', why);
      }
      const reclaim = await this.reclaimClaims(full, 0, views, claims);
      waiting.push(...reclaim.pending);
      if (reclaim.remaining === 0 && this.podsOf({ ep: full, namespace } as Ctx).length > 0)
        waiting.push('waiting for the pods to terminate');
    }
    if (waiting.length === 0) {
      const lost = undrainedClaims(this.claimLedger(ep));
      if (lost.length > 0) {
        const why = `every replica drained, but ${lost.length} volume(s) were deleted before their drainer succeeded (their undelivered records are not delivered): ${lost.join(', ')}; releasing the finalizer`;
        this.log.warn({ key, claims: lost }, why);
        this.d.events.record(ep, 'Warning', 'VolumeDeletedUndrained', why.slice(0, 1000));
      } else
        this.d.events.record(
          ep,
          'Normal',
          'Drained',
          'every replica drained and every volume drained and deleted: releasing the finalizer',
        );
      await this.removeFinalizer(ep);
      return {};
    }
    const message =
      `waiting for delivery before deletion (set annotation ${FORCE_DELETE_ANNOTATION}: "true" to skip): ${waiting.join('; ')}`.slice(
        0,
        4000,
      );
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
