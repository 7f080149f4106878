// Loads the operator's master key (model/operator-key.ts) from its one Secret
// in the operator's own namespace, creating it on first start. RBAC: `get` on
// that Secret by name and `create` on Secrets in that namespace only.
import { randomBytes } from 'node:crypto';
import type { V1Secret } from '@kubernetes/client-node';
import { OPERATOR_MASTER_KEY_BYTES, OPERATOR_MASTER_KEY_FIELD } from '../model/operator-key.ts';
import { MANAGED_BY, MANAGED_BY_LABEL } from '../model/names.ts';
import { KubeApiError, Resources } from './kube.ts';
import type { KubeClient, KubeObject } from './kube.ts';

function keyOf(secret: V1Secret, where: string): Buffer {
  const raw = secret.data?.[OPERATOR_MASTER_KEY_FIELD];
  const key = raw ? Buffer.from(raw, 'base64') : Buffer.alloc(0);
  if (key.length < OPERATOR_MASTER_KEY_BYTES)
    throw new Error(
      `${where}: data.${OPERATOR_MASTER_KEY_FIELD} must hold at least ${OPERATOR_MASTER_KEY_BYTES} bytes; delete the Secret to have a new one generated`,
    );
  return key;
}

export async function loadOrCreateMasterKey(
  client: KubeClient,
  namespace: string,
  name: string,
): Promise<Buffer> {
  const where = `Secret ${namespace}/${name}`;
  for (let attempt = 0; attempt < 3; attempt++) {
    const existing = await client.get<V1Secret & KubeObject>(Resources.secret, namespace, name);
    if (existing) return keyOf(existing, where);
    const key = randomBytes(OPERATOR_MASTER_KEY_BYTES);
    try {
      await client.create(Resources.secret, {
        metadata: {
          name,
          namespace,
          labels: { [MANAGED_BY_LABEL]: MANAGED_BY, 'app.kubernetes.io/part-of': 'landfall' },
        },
        type: 'Opaque',
        data: { [OPERATOR_MASTER_KEY_FIELD]: key.toString('base64') },
      } as KubeObject);
      return key;
    } catch (err) {
      // Another operator replica created it first: read theirs.
      if (!(err instanceof KubeApiError && err.code === 409)) throw err;
    }
  }
  throw new Error(`${where}: created concurrently and still not readable`);
}
