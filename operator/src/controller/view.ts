// View controller: compile the View, say so in its status (the compiler's
// exact error when it fails), and requeue its Endpoint, whose ConfigMap
// carries every View of it that compiled. A compiler that cannot run
// (views.ts: CompilerUnavailableError) fails the reconcile, which is retried
// with backoff; the status is left as it was.
import type { Endpoint } from '../api/endpoint.ts';
import type { View, ViewStatus } from '../api/view.ts';
import type { EventSink } from '../runtime/events.ts';
import { Resources } from '../runtime/kube.ts';
import type { KubeClient, KubeObject } from '../runtime/kube.ts';
import type { Logger } from '../runtime/log.ts';
import { jsonEqual, mergeConditions } from './conditions.ts';
import type { ConditionInput } from './conditions.ts';
import type { ReconcileResult, Store } from './endpoint.ts';
import { compileEndpointViews, viewsOfEndpoint } from './views.ts';
import type { ViewCompileCache } from './views.ts';

export interface ViewControllerDeps {
  client: KubeClient;
  views: Store<View>;
  endpoints: Store<Endpoint>;
  compileCache: ViewCompileCache;
  events: EventSink;
  log: Logger;
  /** Requeues the Endpoint `namespace/name` so its ConfigMap follows the View. */
  enqueueEndpoint: (key: string) => void;
}

export class ViewController {
  private readonly d: ViewControllerDeps;

  constructor(deps: ViewControllerDeps) {
    this.d = deps;
  }

  async reconcile(key: string): Promise<ReconcileResult> {
    const view = this.d.views.getByKey(key);
    if (!view || view.metadata.deletionTimestamp) return {};
    const namespace = view.metadata.namespace ?? '';
    const endpointName = view.spec?.endpointRef?.name ?? '';
    const endpointKey = `${namespace}/${endpointName}`;

    const compiled = await this.d.compileCache.compile(view);
    const compiledCondition: ConditionInput = compiled.ok
      ? {
          type: 'Compiled',
          status: 'True',
          reason: 'Compiled',
          message: `compiled as view '${compiled.view.name}'`,
        }
      : { type: 'Compiled', status: 'False', reason: 'CompileFailed', message: compiled.error };

    let attached: ConditionInput;
    const endpoint = this.d.endpoints.getByKey(endpointKey);
    if (!endpoint) {
      attached = {
        type: 'Attached',
        status: 'False',
        reason: 'EndpointNotFound',
        message: `Endpoint '${endpointName}' not found in namespace '${namespace}'`,
      };
    } else {
      // Same rule as the Endpoint controller uses to build the config.
      const siblings = viewsOfEndpoint(this.d.views.list(), namespace, endpointName);
      const { excluded, stale } = await compileEndpointViews(this.d.compileCache, siblings);
      const name = view.metadata.name ?? '';
      const why = excluded.get(name);
      const older = stale.get(name);
      attached = why
        ? {
            type: 'Attached',
            status: 'False',
            reason: why.reason,
            message:
              why.reason === 'CompileFailed' ? 'not in the Endpoint config until it compiles' : why.message,
          }
        : older
          ? {
              type: 'Attached',
              status: 'True',
              reason: 'LastGoodGeneration',
              message: `generation ${older.generation} stays in the config of Endpoint '${endpointName}' until generation ${view.metadata.generation ?? 0} compiles`,
            }
          : {
              type: 'Attached',
              status: 'True',
              reason: 'InEndpointConfig',
              message: `in the config of Endpoint '${endpointName}'`,
            };
    }

    const current = view.status ?? {};
    const status: ViewStatus = {
      observedGeneration: view.metadata.generation,
      conditions: mergeConditions(
        current.conditions,
        [compiledCondition, attached],
        view.metadata.generation,
      ),
      ...(compiled.ok ? { specHash: compiled.view.specHash } : {}),
    };
    if (!jsonEqual(JSON.parse(JSON.stringify(status)), current)) {
      await this.d.client.apply(
        Resources.view,
        { metadata: { name: view.metadata.name, namespace }, status } as KubeObject,
        { subresource: 'status' },
      );
      const was = current.conditions?.find((c) => c.type === 'Compiled');
      if (!compiled.ok && (was?.status !== 'False' || was.message !== compiled.error)) {
        this.d.events.record(view, 'Warning', 'CompileFailed', compiled.error);
      } else if (compiled.ok && was?.status !== 'True') {
        this.d.events.record(view, 'Normal', 'Compiled', compiledCondition.message);
      }
    }
    if (endpoint) this.d.enqueueEndpoint(endpointKey);
    return {};
  }
}
