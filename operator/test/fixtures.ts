import { API_VERSION } from '../src/api/common.ts';
import { withEndpointDefaults } from '../src/api/endpoint.ts';
import type { Endpoint } from '../src/api/endpoint.ts';

export function endpoint(
  name: string,
  spec: Record<string, unknown>,
  extra: Partial<Endpoint['metadata']> = {},
): Endpoint {
  return {
    apiVersion: API_VERSION,
    kind: 'Endpoint',
    metadata: { name, namespace: 'tenant-a', uid: `uid-${name}`, generation: 1, ...extra },
    spec: withEndpointDefaults(spec),
  };
}
