// What compaction needs from avro.ts to write another engine's manifest back
// in that manifest's own schema: primitives carrying attributes (a date
// partition is `{"type": "int", "logicalType": "date"}`) are encoded as the
// primitive, and anything the encoder cannot write fails loudly instead of
// being silently left out (which made PyIceberg read a corrupt manifest).
// Checked with an independent Avro implementation (avsc).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inflateRawSync } from 'node:zlib';
import avsc from 'avsc';
import {
  AvroEncodeError,
  decodeAvroContainer,
  encodeAvro,
  encodeAvroContainer,
  type AvroSchema,
} from '../src/iceberg/avro.ts';

const partition = {
  type: 'record',
  name: 'r102',
  fields: [
    { name: 'kind', type: ['null', 'string'], 'field-id': 1000 },
    { name: 'd', type: ['null', { type: 'int', logicalType: 'date' }], 'field-id': 1001 },
    { name: 'at', type: { type: 'long', logicalType: 'timestamp-micros', 'adjust-to-utc': true } },
  ],
} as unknown as AvroSchema;

void test('primitives with attributes encode as the primitive: avsc and our decoder read the values back', () => {
  const value = { kind: 'a', d: 20454, at: 1_767_225_600_000_000n };
  const bytes = encodeAvro(partition, value);
  const type = avsc.Type.forSchema(partition as never, { logicalTypes: {} });
  const read = type.fromBuffer(bytes) as { kind: string; d: number; at: number };
  assert.deepEqual({ kind: read.kind, d: read.d, at: BigInt(read.at) }, value);
  const container = encodeAvroContainer(partition, [value, { kind: null, d: null, at: 0n }]);
  assert.deepEqual(decodeAvroContainer(container, inflateRawSync).objects, [
    { kind: 'a', d: 20454, at: 1_767_225_600_000_000n },
    { kind: null, d: null, at: 0n },
  ]);
});

void test('a named reference or an unsupported type is refused, never encoded as nothing', () => {
  const byReference = {
    type: 'record',
    name: 'x',
    fields: [{ name: 'p', type: 'r102' }],
  } as unknown as AvroSchema;
  assert.throws(() => encodeAvro(byReference, { p: {} }), AvroEncodeError);
  const fixed = { type: 'record', name: 'y', fields: [{ name: 'u', type: { type: 'fixed', size: 16 } }] };
  assert.throws(() => encodeAvro(fixed as unknown as AvroSchema, { u: Buffer.alloc(16) }), AvroEncodeError);
});
