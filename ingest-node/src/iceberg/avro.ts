// Avro, just what Iceberg manifests need: a schema-driven binary encoder and
// the object container file around it (Avro 1.11 spec, "Object Container
// Files"). Hand-rolled rather than a dependency: Landfall only ever writes
// two fixed schemas (manifest.ts), with no codec, so the whole format is the
// table below. Tests decode what this writes with an independent Avro
// implementation (avsc), and PyIceberg reads the manifests end to end.
//
// | part                | bytes                                                                 |
// | ------------------- | --------------------------------------------------------------------- |
// | magic               | `O` `b` `j` 0x01                                                      |
// | file metadata       | map<bytes>: `avro.schema` (the writer schema, JSON), `avro.codec`     |
// |                     | (`null`), and the caller's keys (Iceberg puts its own there)          |
// | sync marker         | 16 bytes (here: derived from the content, so equal input, equal file) |
// | block, repeated     | long count, long byte size, the encoded objects, the sync marker      |
//
// | type                      | encoding                                                 |
// | ------------------------- | -------------------------------------------------------- |
// | null                      | nothing                                                  |
// | boolean                   | one byte, 0 or 1                                         |
// | int, long                 | zig-zag varint                                           |
// | float, double             | 4 / 8 bytes little-endian IEEE 754                       |
// | bytes, string             | long length, then the bytes (strings UTF-8)              |
// | record                    | its fields in schema order, nothing between              |
// | array                     | blocks of (long count, items), ended by a 0 count        |
// | map                       | blocks of (long count, (string key, value)…), 0 count    |
// | union                     | long branch index, then the branch's encoding            |
// | int/long + logicalType    | as the int/long (Iceberg's `date` partition values)      |
import { createHash } from 'node:crypto';

export type AvroPrimitive = 'null' | 'boolean' | 'int' | 'long' | 'float' | 'double' | 'bytes' | 'string';

export interface AvroField {
  readonly name: string;
  readonly type: AvroSchema;
  readonly default?: unknown;
  readonly doc?: string;
  /** Iceberg's field id, carried as a schema attribute. */
  readonly 'field-id'?: number;
}

export type AvroSchema =
  | AvroPrimitive
  /** A logical type on an int or long: encoded as the int or long. */
  | { readonly type: 'int' | 'long'; readonly logicalType: string }
  | readonly AvroSchema[] // a union
  | { readonly type: 'record'; readonly name: string; readonly fields: readonly AvroField[] }
  | {
      readonly type: 'array';
      readonly items: AvroSchema;
      readonly 'element-id'?: number;
      readonly logicalType?: 'map';
    }
  | {
      readonly type: 'map';
      readonly values: AvroSchema;
      readonly 'key-id'?: number;
      readonly 'value-id'?: number;
    };

export class AvroEncodeError extends Error {
  override name = 'AvroEncodeError';
}

/** A growable byte buffer. */
class Sink {
  #buf = Buffer.allocUnsafe(1024);
  #len = 0;

  #reserve(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.#len + n));
    this.#buf.copy(next, 0, 0, this.#len);
    this.#buf = next;
  }

  byte(b: number): void {
    this.#reserve(1);
    this.#buf[this.#len++] = b;
  }

  bytes(b: Uint8Array): void {
    this.#reserve(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
  }

  long(v: bigint | number): void {
    let n = typeof v === 'bigint' ? v : BigInt(v);
    if (n < -(1n << 63n) || n >= 1n << 63n) throw new AvroEncodeError(`${n} is outside a 64-bit long`);
    // Zig-zag: small magnitudes of either sign get short encodings.
    n = n >= 0n ? n << 1n : (-n << 1n) - 1n;
    while (n >= 0x80n) {
      this.byte(Number(n & 0x7fn) | 0x80);
      n >>= 7n;
    }
    this.byte(Number(n));
  }

  double(v: number): void {
    this.#reserve(8);
    this.#buf.writeDoubleLE(v, this.#len);
    this.#len += 8;
  }

  float(v: number): void {
    this.#reserve(4);
    this.#buf.writeFloatLE(v, this.#len);
    this.#len += 4;
  }

  get length(): number {
    return this.#len;
  }

  result(): Buffer {
    return Buffer.from(this.#buf.subarray(0, this.#len));
  }
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array);
}

/** Which branch of a union a value takes: only `[null, T]` / `[T, null]` unions occur in manifests. */
function unionBranch(branches: readonly AvroSchema[], value: unknown, path: string): number {
  const nullIndex = branches.indexOf('null');
  if (value === null || value === undefined) {
    if (nullIndex < 0) throw new AvroEncodeError(`${path}: null for a union without null`);
    return nullIndex;
  }
  const other = branches.findIndex((_, i) => i !== nullIndex);
  if (other < 0 || branches.length > 2)
    throw new AvroEncodeError(`${path}: only [null, T] unions are supported`);
  return other;
}

const primitiveNames: ReadonlySet<string> = new Set<AvroPrimitive>([
  'null',
  'boolean',
  'int',
  'long',
  'float',
  'double',
  'bytes',
  'string',
]);

function encodeValue(sink: Sink, schema: AvroSchema, value: unknown, path: string): void {
  if (Array.isArray(schema)) {
    const branches = schema as readonly AvroSchema[];
    const i = unionBranch(branches, value, path);
    sink.long(i);
    encodeValue(sink, branches[i]!, value, path);
    return;
  }
  if (typeof schema === 'string') {
    switch (schema) {
      case 'null':
        if (value !== null && value !== undefined) throw new AvroEncodeError(`${path}: expected null`);
        return;
      case 'boolean':
        if (typeof value !== 'boolean') throw new AvroEncodeError(`${path}: expected a boolean`);
        sink.byte(value ? 1 : 0);
        return;
      case 'int':
        if (typeof value !== 'number' || !Number.isInteger(value) || value < -(2 ** 31) || value >= 2 ** 31)
          throw new AvroEncodeError(`${path}: expected a 32-bit int, got ${String(value)}`);
        sink.long(value);
        return;
      case 'long':
        if (typeof value === 'bigint') sink.long(value);
        else if (typeof value === 'number' && Number.isSafeInteger(value)) sink.long(value);
        else throw new AvroEncodeError(`${path}: expected a long, got ${String(value)}`);
        return;
      case 'float':
        if (typeof value !== 'number') throw new AvroEncodeError(`${path}: expected a number`);
        sink.float(value);
        return;
      case 'double':
        if (typeof value !== 'number') throw new AvroEncodeError(`${path}: expected a number`);
        sink.double(value);
        return;
      case 'bytes':
        if (!(value instanceof Uint8Array)) throw new AvroEncodeError(`${path}: expected bytes`);
        sink.long(value.length);
        sink.bytes(value);
        return;
      case 'string': {
        if (typeof value !== 'string') throw new AvroEncodeError(`${path}: expected a string`);
        const b = Buffer.from(value, 'utf8');
        sink.long(b.length);
        sink.bytes(b);
        return;
      }
      default:
        // A named reference: never silently encoded as nothing.
        throw new AvroEncodeError(`${path}: type ${String(schema)} is not supported`);
    }
  }
  // A primitive with attributes (`{"type": "int", "logicalType": "date"}`, as
  // other writers' manifests have): encoded as the primitive.
  const annotated = (schema as { readonly type?: unknown }).type;
  if (
    typeof annotated === 'string' &&
    annotated !== 'record' &&
    annotated !== 'array' &&
    annotated !== 'map'
  ) {
    if (!primitiveNames.has(annotated))
      throw new AvroEncodeError(`${path}: type ${annotated} is not supported`);
    encodeValue(sink, annotated as AvroPrimitive, value, path);
    return;
  }
  const complex = schema as Exclude<AvroSchema, AvroPrimitive | readonly AvroSchema[]>;
  switch (complex.type) {
    case 'int':
    case 'long':
      encodeValue(sink, complex.type, value, path);
      return;
    case 'record': {
      if (!isRecord(value))
        throw new AvroEncodeError(`${path}: expected an object for record ${complex.name}`);
      for (const f of complex.fields) encodeValue(sink, f.type, value[f.name], `${path}.${f.name}`);
      return;
    }
    case 'array': {
      if (!Array.isArray(value)) throw new AvroEncodeError(`${path}: expected an array`);
      const items: readonly unknown[] = value;
      if (items.length > 0) {
        sink.long(items.length);
        items.forEach((item, i) => encodeValue(sink, complex.items, item, `${path}[${i}]`));
      }
      sink.long(0);
      return;
    }
    case 'map': {
      if (!isRecord(value)) throw new AvroEncodeError(`${path}: expected an object for a map`);
      const entries = Object.entries(value);
      if (entries.length > 0) {
        sink.long(entries.length);
        for (const [k, v] of entries) {
          encodeValue(sink, 'string', k, path);
          encodeValue(sink, complex.values, v, `${path}[${JSON.stringify(k)}]`);
        }
      }
      sink.long(0);
      return;
    }
  }
}

/** One datum in Avro binary (no container). */
export function encodeAvro(schema: AvroSchema, value: unknown): Buffer {
  const sink = new Sink();
  encodeValue(sink, schema, value, '$');
  return sink.result();
}

const magic = Buffer.from([0x4f, 0x62, 0x6a, 0x01]);
/** Objects per block: a manifest of thousands of files is still a few small blocks. */
const blockObjectsMax = 1000;

/**
 * An Avro object container file holding `objects`, uncompressed. `metadata`
 * adds string entries to the header (Iceberg's `schema`, `partition-spec`,
 * `format-version`…). The sync marker is a hash of the content, so the same
 * input always gives the same bytes (a retried upload writes the same object).
 */
export function encodeAvroContainer(
  schema: AvroSchema,
  objects: readonly unknown[],
  metadata: Readonly<Record<string, string>> = {},
): Buffer {
  const schemaJson = JSON.stringify(schema);
  const blocks: Buffer[] = [];
  for (let i = 0; i < objects.length; i += blockObjectsMax) {
    const sink = new Sink();
    const chunk = objects.slice(i, i + blockObjectsMax);
    chunk.forEach((o, j) => encodeValue(sink, schema, o, `$[${i + j}]`));
    blocks.push(sink.result());
  }
  const hash = createHash('sha256').update(schemaJson);
  for (const [k, v] of Object.entries(metadata)) hash.update(`\0${k}\0${v}`);
  for (const b of blocks) hash.update(b);
  const sync = hash.digest().subarray(0, 16);

  const out = new Sink();
  out.bytes(magic);
  const meta: Record<string, Uint8Array> = {
    'avro.schema': Buffer.from(schemaJson, 'utf8'),
    'avro.codec': Buffer.from('null', 'utf8'),
  };
  for (const [k, v] of Object.entries(metadata)) meta[k] = Buffer.from(v, 'utf8');
  encodeValue(out, { type: 'map', values: 'bytes' }, meta, 'metadata');
  out.bytes(sync);
  blocks.forEach((b, i) => {
    out.long(Math.min(blockObjectsMax, objects.length - i * blockObjectsMax));
    out.long(b.length);
    out.bytes(b);
    out.bytes(sync);
  });
  return out.result();
}

// ---- reading ----------------------------------------------------------------
// Only to carry a parent snapshot's manifest list into the next one. Decoded
// with the schema in the file's own header (a manifest list written by
// another engine has its own field order, extra fields, and is usually
// deflate-compressed); longs come back as bigint.

export class AvroDecodeError extends Error {
  override name = 'AvroDecodeError';
}

/** Nesting bound: manifest schemas are 4 deep; a hostile file cannot recurse us away. */
const depthMax = 32;

class Source {
  pos = 0;
  readonly buf: Buffer;
  constructor(buf: Buffer) {
    this.buf = buf;
  }

  need(n: number): void {
    if (n < 0 || this.pos + n > this.buf.length) throw new AvroDecodeError('Avro data ends early');
  }

  byte(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }

  long(): bigint {
    let shift = 0n;
    let n = 0n;
    for (let i = 0; ; i++) {
      if (i >= 10) throw new AvroDecodeError('varint longer than 10 bytes');
      const b = this.byte();
      n |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) break;
      shift += 7n;
    }
    return n & 1n ? -(n >> 1n) - 1n : n >> 1n;
  }

  count(): number {
    const n = this.long();
    if (n > BigInt(this.buf.length - this.pos) * 8n + 8n)
      throw new AvroDecodeError(`implausible length ${n}`);
    return Number(n);
  }

  take(n: number): Buffer {
    this.need(n);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
}

type SchemaJson = string | SchemaJson[] | { [k: string]: unknown };

function decodeValue(
  src: Source,
  schema: SchemaJson,
  named: Map<string, SchemaJson>,
  depth: number,
): unknown {
  if (depth > depthMax) throw new AvroDecodeError('schema nests too deep');
  if (Array.isArray(schema)) {
    const i = Number(src.long());
    const branch = schema[i];
    if (branch === undefined) throw new AvroDecodeError(`union branch ${i} out of range`);
    return decodeValue(src, branch, named, depth + 1);
  }
  if (typeof schema === 'string') {
    switch (schema) {
      case 'null':
        return null;
      case 'boolean':
        return src.byte() !== 0;
      case 'int':
        return Number(src.long());
      case 'long':
        return src.long();
      case 'float':
        src.need(4);
        src.pos += 4;
        return src.buf.readFloatLE(src.pos - 4);
      case 'double':
        src.need(8);
        src.pos += 8;
        return src.buf.readDoubleLE(src.pos - 8);
      case 'bytes':
        return Buffer.from(src.take(src.count()));
      case 'string':
        return src.take(src.count()).toString('utf8');
      default: {
        const n = named.get(schema);
        if (n === undefined) throw new AvroDecodeError(`unknown type ${schema}`);
        return decodeValue(src, n, named, depth + 1);
      }
    }
  }
  const type = schema['type'] as SchemaJson;
  if (typeof type !== 'string' || !['record', 'array', 'map', 'enum', 'fixed'].includes(type))
    return decodeValue(src, type, named, depth + 1);
  switch (type) {
    case 'record': {
      const out: Record<string, unknown> = {};
      for (const f of schema['fields'] as { name: string; type: SchemaJson }[])
        out[f.name] = decodeValue(src, f.type, named, depth + 1);
      return out;
    }
    case 'array':
    case 'map': {
      const items: unknown[] = [];
      const entries: Record<string, unknown> = {};
      for (;;) {
        let n = Number(src.long());
        if (n === 0) break;
        if (n < 0) {
          n = -n;
          src.long(); // block byte size
        }
        if (n > src.buf.length - src.pos + 1) throw new AvroDecodeError(`implausible block count ${n}`);
        for (let i = 0; i < n; i++) {
          if (type === 'array') items.push(decodeValue(src, schema['items'] as SchemaJson, named, depth + 1));
          else {
            const k = src.take(src.count()).toString('utf8');
            entries[k] = decodeValue(src, schema['values'] as SchemaJson, named, depth + 1);
          }
        }
      }
      return type === 'array' ? items : entries;
    }
    case 'enum':
      return (schema['symbols'] as string[])[Number(src.long())];
    default:
      return Buffer.from(src.take(Number(schema['size'])));
  }
}

/** Named types by name (and full name), so a later reference resolves whatever branch a value took. */
function collectNames(schema: SchemaJson, named: Map<string, SchemaJson>, depth: number): void {
  if (depth > depthMax) throw new AvroDecodeError('schema nests too deep');
  if (Array.isArray(schema)) {
    for (const s of schema) collectNames(s, named, depth + 1);
    return;
  }
  if (typeof schema === 'string') return;
  const name = schema['name'];
  if (typeof name === 'string') {
    named.set(name, schema);
    const ns = schema['namespace'];
    if (typeof ns === 'string') named.set(`${ns}.${name}`, schema);
  }
  const t = schema['type'];
  if (typeof t !== 'string' || !['record', 'array', 'map', 'enum', 'fixed'].includes(t))
    collectNames(t as SchemaJson, named, depth + 1);
  if (t === 'record')
    for (const f of schema['fields'] as { type: SchemaJson }[]) collectNames(f.type, named, depth + 1);
  if (t === 'array') collectNames(schema['items'] as SchemaJson, named, depth + 1);
  if (t === 'map') collectNames(schema['values'] as SchemaJson, named, depth + 1);
}

export interface AvroContainer {
  readonly schema: unknown;
  readonly metadata: Readonly<Record<string, string>>;
  readonly objects: readonly unknown[];
}

/** Reads an Avro object container file (codec `null` or `deflate`). */
export function decodeAvroContainer(buf: Buffer, inflate: (b: Buffer) => Buffer): AvroContainer {
  const src = new Source(buf);
  if (!src.take(4).equals(magic)) throw new AvroDecodeError('not an Avro container file');
  const meta = decodeValue(src, { type: 'map', values: 'bytes' }, new Map(), 0) as Record<string, Buffer>;
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta)) metadata[k] = v.toString('utf8');
  const sync = src.take(16);
  const schemaText = metadata['avro.schema'];
  if (schemaText === undefined) throw new AvroDecodeError('no avro.schema in the header');
  const schema = JSON.parse(schemaText) as SchemaJson;
  const codec = metadata['avro.codec'] ?? 'null';
  if (codec !== 'null' && codec !== 'deflate') throw new AvroDecodeError(`unsupported codec ${codec}`);
  const named = new Map<string, SchemaJson>();
  collectNames(schema, named, 0);
  const objects: unknown[] = [];
  while (src.pos < buf.length) {
    const count = Number(src.long());
    const size = src.count();
    let block = src.take(size);
    if (!src.take(16).equals(sync)) throw new AvroDecodeError('sync marker mismatch');
    if (codec === 'deflate') block = inflate(block);
    const b = new Source(block);
    for (let i = 0; i < count; i++) objects.push(decodeValue(b, schema, named, 0));
  }
  return { schema, metadata, objects };
}
