// Which claims a StatefulSet would adopt that are not its Endpoint's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { foreignClaims } from '../src/controller/volumes.ts';

const claim = (name: string, created: string, uid?: string): V1PersistentVolumeClaim => ({
  metadata: {
    name,
    creationTimestamp: new Date(created),
    labels: { 'landfall.dev/endpoint': 'clicks', ...(uid ? { 'landfall.dev/endpoint-uid': uid } : {}) },
  },
});

void test('claims of another uid, or unlabelled and older than the Endpoint, are foreign; only mounted ordinals count', () => {
  const claims = [
    claim('data-clicks-ingest-0', '2026-01-01T00:00:00Z', 'old-uid'),
    claim('data-clicks-ingest-1', '2026-01-01T00:00:00Z'), // before the label existed
    claim('data-clicks-ingest-2', '2026-03-01T00:00:00Z'), // unlabelled, but made for us
    claim('data-clicks-ingest-3', '2026-03-01T00:00:00Z', 'new-uid'),
    claim('data-clicks-ingest-10', '2026-01-01T00:00:00Z', 'old-uid'), // not mounted at 4 replicas
    claim('data-other-ingest-0', '2026-01-01T00:00:00Z', 'old-uid'),
  ];
  const found = foreignClaims({
    claims,
    statefulSetName: 'clicks-ingest',
    replicas: 4,
    uid: 'new-uid',
    endpointCreated: '2026-02-01T00:00:00Z',
  });
  assert.deepEqual(found, [
    { name: 'data-clicks-ingest-0', uid: 'old-uid' },
    { name: 'data-clicks-ingest-1', uid: undefined },
  ]);
  assert.deepEqual(
    foreignClaims({
      claims,
      statefulSetName: 'clicks-ingest',
      replicas: 11,
      uid: 'new-uid',
      endpointCreated: '2026-02-01T00:00:00Z',
    }).map((f) => f.name),
    ['data-clicks-ingest-0', 'data-clicks-ingest-1', 'data-clicks-ingest-10'],
    'scaling up would adopt ordinal 10',
  );
});
