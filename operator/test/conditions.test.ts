import { test } from 'node:test';
import assert from 'node:assert/strict';
import { jsonEqual, mergeConditions } from '../src/controller/conditions.ts';

void test('lastTransitionTime moves only when the status flips', () => {
  const t1 = new Date('2026-01-01T00:00:00.123Z');
  const t2 = new Date('2026-01-01T00:05:00Z');
  const first = mergeConditions(
    undefined,
    [{ type: 'Ready', status: 'False', reason: 'A', message: 'x' }],
    1,
    t1,
  );
  assert.equal(first[0]?.lastTransitionTime, '2026-01-01T00:00:00Z');
  const same = mergeConditions(first, [{ type: 'Ready', status: 'False', reason: 'B', message: 'y' }], 2, t2);
  assert.equal(same[0]?.lastTransitionTime, '2026-01-01T00:00:00Z', 'reason changed, status did not');
  assert.equal(same[0]?.observedGeneration, 2);
  const flipped = mergeConditions(
    same,
    [{ type: 'Ready', status: 'True', reason: 'C', message: 'z' }],
    2,
    t2,
  );
  assert.equal(flipped[0]?.lastTransitionTime, '2026-01-01T00:05:00Z');
});

void test('jsonEqual ignores key order and undefined members', () => {
  assert.ok(jsonEqual({ a: 1, b: [1, { c: 2 }] }, { b: [1, { c: 2 }], a: 1, d: undefined }));
  assert.ok(!jsonEqual({ a: 1 }, { a: 2 }));
  assert.ok(!jsonEqual([1, 2], [2, 1]));
});
