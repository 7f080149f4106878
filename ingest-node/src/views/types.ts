// Column types a view may declare. An allowlist rather than "any DuckDB type":
// every type here has a Parquet mapping that Spark, Trino, Snowflake and
// DuckDB read the same way, and a documented JSON → value cast (docs/views.md).
// The type text is parsed here, never spliced into SQL as written: the SQL
// gets `renderType()` of the parsed tree.
import { ViewError, ViewErrorCode } from './errors.ts';

export const SCALAR_TYPES = [
  'VARCHAR',
  'BOOLEAN',
  'TINYINT',
  'SMALLINT',
  'INTEGER',
  'BIGINT',
  'UTINYINT',
  'USMALLINT',
  'UINTEGER',
  'UBIGINT',
  'HUGEINT',
  'FLOAT',
  'DOUBLE',
  'DATE',
  'TIMESTAMP',
  'TIMESTAMPTZ',
  'JSON',
] as const;
export type ScalarTypeName = (typeof SCALAR_TYPES)[number];

export const INTEGER_TYPES: ReadonlySet<string> = new Set([
  'TINYINT',
  'SMALLINT',
  'INTEGER',
  'BIGINT',
  'UTINYINT',
  'USMALLINT',
  'UINTEGER',
  'UBIGINT',
  'HUGEINT',
]);

export type ViewType =
  | { readonly kind: 'scalar'; readonly name: ScalarTypeName }
  | { readonly kind: 'decimal'; readonly precision: number; readonly scale: number }
  | { readonly kind: 'list'; readonly element: ViewType }
  | {
      readonly kind: 'struct';
      readonly fields: readonly { readonly name: string; readonly type: ViewType }[];
    };

/** Same rule as view and column names: lower-case SQL identifiers that never need quoting games. */
export const IDENTIFIER_PATTERN = '^[a-z_][a-z0-9_]{0,62}$';
const IDENTIFIER = new RegExp(IDENTIFIER_PATTERN);
/** Nesting bound: deeper types are almost always a mistake, and each level costs a cast per row. */
export const MAX_TYPE_DEPTH = 8;
export const MAX_STRUCT_FIELDS = 256;

type Token = { readonly text: string; readonly pos: number };

function tokenize(text: string, path: string): Token[] {
  const tokens: Token[] = [];
  const re = /\s*(?:([A-Za-z_][A-Za-z0-9_]*)|([0-9]+)|(\[\]|[(),]))/y;
  let pos = 0;
  while (pos < text.length) {
    if (/^\s*$/.test(text.slice(pos))) break;
    re.lastIndex = pos;
    const m = re.exec(text);
    if (!m)
      throw new ViewError(ViewErrorCode.typeInvalid, path, `unexpected character at ${pos} in '${text}'`);
    const tok = m[1] ?? m[2] ?? m[3] ?? '';
    tokens.push({ text: tok, pos: m.index + m[0].length - tok.length });
    pos = re.lastIndex;
  }
  return tokens;
}

/** Parses `INTEGER`, `DECIMAL(18,2)`, `LIST(VARCHAR)`, `VARCHAR[]`, `STRUCT(a INTEGER, b DOUBLE[])`. */
export function parseType(text: string, path = 'type'): ViewType {
  const tokens = tokenize(text, path);
  let i = 0;
  const fail = (msg: string): never => {
    throw new ViewError(ViewErrorCode.typeInvalid, path, `${msg} in '${text}'`);
  };
  const peek = (): string | undefined => tokens[i]?.text;
  const expect = (want: string): void => {
    if (peek() !== want)
      fail(`expected '${want}'${peek() === undefined ? ' at end' : ` before '${peek()}'`}`);
    i++;
  };
  const integer = (what: string): number => {
    const t = peek();
    if (t === undefined || !/^[0-9]+$/.test(t)) return fail(`expected ${what}`);
    i++;
    return Number(t);
  };
  const parse = (depth: number): ViewType => {
    if (depth > MAX_TYPE_DEPTH) fail(`types nest at most ${MAX_TYPE_DEPTH} deep`);
    const word = peek();
    if (word === undefined || !/^[A-Za-z_]/.test(word)) return fail('expected a type name');
    i++;
    const upper = word.toUpperCase();
    let type: ViewType;
    if (upper === 'DECIMAL') {
      expect('(');
      const precision = integer('a precision');
      expect(',');
      const scale = integer('a scale');
      expect(')');
      if (precision < 1 || precision > 38) fail('DECIMAL precision must be 1..38');
      if (scale > precision) fail('DECIMAL scale must be 0..precision');
      type = { kind: 'decimal', precision, scale };
    } else if (upper === 'LIST') {
      expect('(');
      const element = parse(depth + 1);
      expect(')');
      type = { kind: 'list', element };
    } else if (upper === 'STRUCT') {
      expect('(');
      const fields: { name: string; type: ViewType }[] = [];
      const seen = new Set<string>();
      for (;;) {
        const name = peek();
        if (name === undefined || !IDENTIFIER.test(name))
          fail(`expected a STRUCT field name (lower-case identifier)${name ? `, got '${name}'` : ''}`);
        i++;
        if (seen.has(name!)) fail(`duplicate STRUCT field '${name}'`);
        seen.add(name!);
        fields.push({ name: name!, type: parse(depth + 1) });
        if (fields.length > MAX_STRUCT_FIELDS) fail(`a STRUCT has at most ${MAX_STRUCT_FIELDS} fields`);
        if (peek() === ',') {
          i++;
          continue;
        }
        expect(')');
        break;
      }
      type = { kind: 'struct', fields };
    } else if ((SCALAR_TYPES as readonly string[]).includes(upper)) {
      type = { kind: 'scalar', name: upper as ScalarTypeName };
    } else {
      return fail(
        `type '${word}' is not allowed (allowed: ${SCALAR_TYPES.join(', ')}, DECIMAL(p,s), LIST(T), T[], STRUCT(name T, …))`,
      );
    }
    while (peek() === '[]') {
      i++;
      depth++;
      if (depth > MAX_TYPE_DEPTH) fail(`types nest at most ${MAX_TYPE_DEPTH} deep`);
      type = { kind: 'list', element: type };
    }
    return type;
  };
  const type = parse(1);
  if (i !== tokens.length) fail(`unexpected '${peek()}'`);
  return type;
}

/** Canonical DuckDB SQL for a parsed type: the form hashed, compiled and shown back to users. */
export function renderType(type: ViewType): string {
  switch (type.kind) {
    case 'scalar':
      return type.name;
    case 'decimal':
      return `DECIMAL(${type.precision},${type.scale})`;
    case 'list': {
      const inner = renderType(type.element);
      return `${inner}[]`;
    }
    case 'struct':
      // Field names are identifiers (checked), quoting them only keeps keywords like "order" legal.
      return `STRUCT(${type.fields.map((f) => `"${f.name}" ${renderType(f.type)}`).join(', ')})`;
  }
}

/** Whether values of this type come from the JSON text (`json_extract`) rather than from a scalar string. */
export function isNestedOrJson(type: ViewType): boolean {
  return type.kind === 'list' || type.kind === 'struct' || (type.kind === 'scalar' && type.name === 'JSON');
}
