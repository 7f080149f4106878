// The node-drain flow (controller/node-drain.ts) against in-memory fakes of
// the pods' drain API and the Kubernetes writes: which replica is drained,
// that nothing is deleted before the replica reports drained (by its flag and
// by its figures), the claim before the pod, and nothing at all for a pod that
// cannot be asked. The real thing runs in test/e2e/node-drain.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Node, V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { drainLeavingNodes, nodeLeaving } from '../src/controller/node-drain.ts';
import type { NodeDrainEffects } from '../src/controller/node-drain.ts';
import type { NodeDrainClient, NodeDrainMode } from '../src/adapters/node-drain.ts';
import { parseDrainMode } from '../src/adapters/node-drain.ts';

const node = (name: string, spec: V1Node['spec'] = {}): V1Node => ({ metadata: { name }, spec });
const pod = (ordinal: number, nodeName: string, extra: Partial<V1Pod['status']> = {}): V1Pod => ({
  metadata: { name: `ep-ingest-${ordinal}`, uid: `pod-uid-${ordinal}` },
  spec: { nodeName, containers: [] },
  status: {
    phase: 'Running',
    podIP: `10.0.0.${ordinal + 1}`,
    conditions: [{ type: 'Ready', status: 'True' }],
    ...extra,
  },
});

interface NodeState {
  draining: boolean;
  /** Undelivered left once draining; drained when 0. */
  left: number;
  /** Makes the node's own flag lie (say drained while figures show a backlog). */
  flagLies?: boolean;
  down?: boolean;
}

function fakeNodes(states: Record<string, NodeState>): { client: NodeDrainClient; posts: string[] } {
  const posts: string[] = [];
  const mode = (s: NodeState): NodeDrainMode => ({
    draining: s.draining,
    drained: s.draining && (s.left === 0 || s.flagLies === true),
    sinceMs: s.draining ? 1 : null,
  });
  const get = (url: string): NodeState => {
    const s = states[url];
    if (s === undefined) throw new Error(`unexpected call to ${url}`);
    if (s.down === true) throw new Error('connect ECONNREFUSED');
    return s;
  };
  return {
    posts,
    client: {
      drain: async (url, key) => {
        assert.equal(key, 'k');
        const s = get(url);
        posts.push(url);
        s.draining = true;
        return mode(s);
      },
      status: async (url) => {
        const s = get(url);
        return {
          drain: mode(s),
          backlog: s.left > 0 ? `${s.left} sealed segment(s) not delivered` : undefined,
        };
      },
    },
  };
}

function effects(claims: Record<string, V1PersistentVolumeClaim> = {}) {
  const calls: string[] = [];
  const events: string[] = [];
  const fx: NodeDrainEffects = {
    getClaim: async (name) => claims[name],
    deleteClaim: async (name, uid) => void calls.push(`delete claim ${name} uid=${uid}`),
    deletePod: async (name, uid) => void calls.push(`delete pod ${name} uid=${uid}`),
    event: (type, reason, message) => void events.push(`${type} ${reason}: ${message}`),
  };
  return { fx, calls, events };
}

const claim = (ordinal: number, deleting = false): V1PersistentVolumeClaim => ({
  metadata: {
    name: `data-ep-ingest-${ordinal}`,
    uid: `claim-uid-${ordinal}`,
    ...(deleting ? { deletionTimestamp: new Date() } : {}),
  },
  spec: { volumeName: `local-pv-${ordinal}` },
});

void test('nodeLeaving: a cordon, or the NoSchedule taint Karpenter or the Cluster Autoscaler sets before removing a node', () => {
  assert.equal(nodeLeaving(undefined), undefined);
  assert.equal(nodeLeaving(node('a')), undefined);
  assert.equal(nodeLeaving(node('a', { unschedulable: true })), 'cordoned');
  assert.match(
    nodeLeaving(node('a', { taints: [{ key: 'karpenter.sh/disrupted', effect: 'NoSchedule' }] })) ?? '',
    /Karpenter/,
  );
  assert.match(
    nodeLeaving(node('a', { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', effect: 'NoSchedule' }] })) ??
      '',
    /Cluster Autoscaler/,
  );
  // The autoscaler's soft "maybe later" taint is not a removal.
  assert.equal(
    nodeLeaving(
      node('a', { taints: [{ key: 'DeletionCandidateOfClusterAutoscaler', effect: 'PreferNoSchedule' }] }),
    ),
    undefined,
  );
});

void test('no pod on a leaving node: no condition, no call to any pod', async () => {
  const { client, posts } = fakeNodes({});
  const { fx, calls } = effects();
  const out = await drainLeavingNodes({
    pods: [pod(0, 'n1'), pod(1, 'n2')],
    node: (n) => node(n),
    apiKey: 'k',
    client,
    tls: false,
    effects: fx,
  });
  assert.equal(out.condition, undefined);
  assert.deepEqual([posts, calls], [[], []]);
});

void test('a cordoned node: its lowest replica drains first; claim then pod are deleted only once it is drained', async () => {
  const states: Record<string, NodeState> = {
    'http://10.0.0.1:8081': { draining: false, left: 2 },
    'http://10.0.0.2:8081': { draining: false, left: 1 },
  };
  const { client, posts } = fakeNodes(states);
  const { fx, calls, events } = effects({ 'data-ep-ingest-0': claim(0), 'data-ep-ingest-1': claim(1) });
  const pods = [pod(0, 'n1'), pod(1, 'n1'), pod(2, 'n2')];
  const input = {
    pods,
    node: (n: string) => node(n, n === 'n1' ? { unschedulable: true } : {}),
    apiKey: 'k',
    client,
    tls: false,
    effects: fx,
  };
  let out = await drainLeavingNodes(input);
  assert.equal(out.condition?.reason, 'DrainingReplica');
  assert.match(out.condition?.message ?? '', /node n1 is cordoned: pod ep-ingest-0 is draining/);
  assert.deepEqual(posts, ['http://10.0.0.1:8081'], 'one replica at a time');
  assert.deepEqual(calls, [], 'nothing deleted while it drains');
  assert.deepEqual(events, [
    'Normal NodeDrainStarted: node n1 is cordoned: draining pod ep-ingest-0 (writes refused, everything delivered) before its volume is replaced',
  ]);

  const s0 = states['http://10.0.0.1:8081'] as NodeState;
  s0.left = 1;
  out = await drainLeavingNodes(input);
  assert.equal(out.condition?.reason, 'DrainingReplica');
  assert.match(out.condition?.message ?? '', /left: 1 sealed segment/);
  assert.deepEqual(calls, []);

  // The node's flag says drained but its figures do not agree: still wait.
  s0.flagLies = true;
  out = await drainLeavingNodes(input);
  assert.equal(out.condition?.reason, 'DrainingReplica');
  assert.deepEqual(calls, []);

  s0.left = 0;
  out = await drainLeavingNodes(input);
  assert.equal(out.condition?.reason, 'ReplicaTerminating');
  assert.deepEqual(calls, [
    'delete claim data-ep-ingest-0 uid=claim-uid-0',
    'delete pod ep-ingest-0 uid=pod-uid-0',
  ]);
  assert.match(
    events.at(-1) ?? '',
    /^Normal ReplicaMoved: .*deleted claim data-ep-ingest-0 \(PV local-pv-0\)/,
  );
  assert.equal(
    (states['http://10.0.0.2:8081'] as NodeState).draining,
    false,
    'the next replica was not touched',
  );

  // While pod 0 terminates, pod 1 waits.
  pods[0] = { ...pod(0, 'n1'), metadata: { ...pod(0, 'n1').metadata, deletionTimestamp: new Date() } };
  const postsBefore = posts.length;
  out = await drainLeavingNodes(input);
  assert.equal(out.condition?.reason, 'ReplicaTerminating');
  assert.equal(posts.length, postsBefore);

  // Its replacement starts on n2 (scheduled, not Ready yet, first start): pod 1 still waits.
  pods[0] = pod(0, 'n2', { conditions: [{ type: 'Ready', status: 'False' }], containerStatuses: [] });
  out = await drainLeavingNodes(input);
  assert.equal(out.condition?.reason, 'WaitingForReplacement');
  assert.equal(posts.length, postsBefore);

  // Ready: pod 1's turn.
  pods[0] = pod(0, 'n2');
  out = await drainLeavingNodes(input);
  assert.equal(out.condition?.reason, 'DrainingReplica');
  assert.deepEqual(posts.slice(postsBefore), ['http://10.0.0.2:8081']);
});

void test('an operator restarted mid-way continues with the replica already draining, and a claim already deleting is not deleted again', async () => {
  const states: Record<string, NodeState> = {
    'http://10.0.0.1:8081': { draining: false, left: 0 },
    'http://10.0.0.2:8081': { draining: true, left: 0 },
  };
  const { client, posts } = fakeNodes(states);
  const { fx, calls } = effects({ 'data-ep-ingest-1': claim(1, true) });
  const out = await drainLeavingNodes({
    pods: [pod(0, 'n1'), pod(1, 'n1')],
    node: (n) => node(n, { unschedulable: true }),
    apiKey: 'k',
    client,
    tls: false,
    effects: fx,
  });
  assert.equal(out.condition?.reason, 'ReplicaTerminating');
  assert.deepEqual(posts, ['http://10.0.0.2:8081']);
  assert.deepEqual(calls, ['delete pod ep-ingest-1 uid=pod-uid-1']);
});

void test('a pod that cannot be asked is never deleted; the condition and a Warning say why', async () => {
  const { client, posts } = fakeNodes({ 'https://10.0.0.2:8081': { draining: false, left: 0, down: true } });
  const { fx, calls, events } = effects({ 'data-ep-ingest-0': claim(0), 'data-ep-ingest-1': claim(1) });
  const out = await drainLeavingNodes({
    pods: [pod(0, 'n1', { phase: 'Pending', podIP: undefined }), pod(1, 'n1')],
    node: (n) => node(n, { unschedulable: true }),
    apiKey: 'k',
    client,
    tls: true,
    port: 8080,
    effects: fx,
  });
  assert.equal(out.condition?.reason, 'ReplicaUnreachable');
  assert.match(
    out.condition?.message ?? '',
    /pod ep-ingest-0 is Pending with no IP; pod ep-ingest-1 does not answer/,
  );
  assert.match(out.condition?.message ?? '', /nothing deleted/);
  assert.deepEqual([posts, calls], [[], []]);
  assert.match(events[0] ?? '', /^Warning NodeDrainBlocked: /);
});

void test('parseDrainMode reads the drain object of POST /v1/drain and of /v1/status', () => {
  assert.deepEqual(parseDrainMode({ draining: true, drained: false, sinceMs: 5 }, 'x'), {
    draining: true,
    drained: false,
    sinceMs: 5,
  });
  assert.deepEqual(
    parseDrainMode({ wal: {}, drain: { draining: false, drained: false, sinceMs: null } }, 'x'),
    {
      draining: false,
      drained: false,
      sinceMs: null,
    },
  );
  assert.throws(() => parseDrainMode({ ok: true }, 'POST /v1/drain'), /POST \/v1\/drain: no drain object/);
});
