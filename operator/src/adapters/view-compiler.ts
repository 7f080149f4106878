// ADAPTER (interim): the operator's narrow view of the ingest node's view
// compiler. The real compiler is being written in ingest-node/src/views/; once
// it lands, `compileView` below delegates to it and the interim checker goes.
// Keep this surface small: the controllers only need "does it compile, and if
// not, the exact error" plus a stable hash of what compiled.
import { createHash } from 'node:crypto';
import type { ViewSpec } from '../api/view.ts';

export interface CompiledView {
  /** The view's name in S3 keys. */
  name: string;
  /** The spec as the node will read it (endpointRef stripped). */
  spec: Omit<ViewSpec, 'endpointRef'>;
  /** Hash of the spec, as the node writes it into commit markers. */
  specHash: string;
  /** The compiled statement, when the compiler produces one. */
  sql?: string;
}

export type CompileResult = { ok: true; view: CompiledView } | { ok: false; error: string };

export type ViewCompiler = (name: string, spec: ViewSpec) => Promise<CompileResult>;

export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function specHash(spec: unknown): string {
  return createHash('sha256').update(canonicalJson(spec)).digest('hex').slice(0, 16);
}

// --- interim checker ------------------------------------------------------
// Expressions may use columns and scalar functions only (DESIGN §6). Until the
// node's compiler (which parses with DuckDB) is importable, refuse anything
// that looks like a statement, a table function or file/network access.

const KEYWORDS = new Set(
  'and or not is null true false like ilike similar in between case when then else end cast try_cast as interval distinct collate escape'.split(
    ' ',
  ),
);
const FORBIDDEN_KEYWORDS = new Set(
  'select from with union intersect except copy attach detach pragma install load call set reset create insert update delete drop alter export import checkpoint vacuum use describe summarize show explain over window lateral join'.split(
    ' ',
  ),
);
const FORBIDDEN_FUNCTION =
  /^(read_|parquet_|glob$|getenv$|query$|query_table$|sniff_csv$|.*_scan$|duckdb_|pragma_|current_setting$|system$|shell$|httpfs|http_|s3_|file_|list_files$)/;

interface Token {
  kind: 'ident' | 'string' | 'number' | 'op' | 'paren';
  text: string;
}

function tokenize(expr: string): Token[] | string {
  const tokens: Token[] = [];
  let i = 0;
  while (i < expr.length) {
    const c = expr[i] ?? '';
    if (/\s/.test(c)) {
      i++;
    } else if (c === "'") {
      let j = i + 1;
      while (j < expr.length && !(expr[j] === "'" && expr[j + 1] !== "'")) j += expr[j] === "'" ? 2 : 1;
      if (j >= expr.length) return 'unterminated string literal';
      tokens.push({ kind: 'string', text: expr.slice(i, j + 1) });
      i = j + 1;
    } else if (c === '"') {
      const j = expr.indexOf('"', i + 1);
      if (j < 0) return 'unterminated quoted identifier';
      tokens.push({ kind: 'ident', text: expr.slice(i + 1, j).toLowerCase() });
      i = j + 1;
    } else if (/[A-Za-z_]/.test(c)) {
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(expr.slice(i));
      const text = m?.[0] ?? c;
      tokens.push({ kind: 'ident', text: text.toLowerCase() });
      i += text.length;
    } else if (/[0-9.]/.test(c)) {
      const m = /^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?/.exec(expr.slice(i));
      const text = m?.[0] ?? c;
      tokens.push({ kind: 'number', text });
      i += text.length;
    } else if (c === '(' || c === ')' || c === ',') {
      tokens.push({ kind: 'paren', text: c });
      i++;
    } else if (c === ';') {
      return 'a statement separator (;) is not allowed';
    } else if (c === '-' && expr[i + 1] === '-') {
      return 'comments are not allowed';
    } else if (c === '/' && expr[i + 1] === '*') {
      return 'comments are not allowed';
    } else {
      const m = /^(<=|>=|<>|!=|==|\|\||::|[-+*/%<>=])/.exec(expr.slice(i));
      if (!m) return `unexpected character '${c}'`;
      tokens.push({ kind: 'op', text: m[0] });
      i += m[0].length;
    }
  }
  return tokens;
}

/** Checks one scalar expression over `columns`; returns an error message or undefined. */
export function checkExpression(expr: string, columns: ReadonlySet<string>): string | undefined {
  const tokens = tokenize(expr);
  if (typeof tokens === 'string') return tokens;
  let depth = 0;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (!t) continue;
    if (t.text === '(') depth++;
    if (t.text === ')' && --depth < 0) return 'unbalanced parentheses';
    if (t.kind !== 'ident') continue;
    const next = tokens[i + 1];
    const prev = tokens[i - 1];
    if (FORBIDDEN_KEYWORDS.has(t.text))
      return `'${t.text.toUpperCase()}' is not allowed: expressions may use columns and scalar functions only`;
    if (next?.text === '(') {
      if (FORBIDDEN_FUNCTION.test(t.text))
        return `function ${t.text}() is not allowed: no table functions, file or network access`;
      continue;
    }
    // A type name after AS / :: (CAST(x AS DATE), x::DATE).
    if (prev?.text === 'as' || prev?.text === '::') continue;
    if (KEYWORDS.has(t.text)) continue;
    // INTERVAL 1 DAY and similar units.
    if (tokens[i - 2]?.text === 'interval') continue;
    if (!columns.has(t.text)) return `unknown column '${t.text}' (columns: ${[...columns].join(', ')})`;
  }
  if (depth !== 0) return 'unbalanced parentheses';
  return undefined;
}

function interimCheck(spec: ViewSpec): string | undefined {
  const columns = new Set(spec.columns.map((c) => c.name));
  if (columns.size !== spec.columns.length) return 'column names must be unique';
  if (spec.filter !== undefined) {
    const err = checkExpression(spec.filter, columns);
    if (err) return `filter: ${err}`;
  }
  for (const [i, p] of (spec.partitioning ?? []).entries()) {
    if (columns.has(p.alias)) return `partitioning[${i}].alias '${p.alias}' clashes with a column`;
    const err = checkExpression(p.expression, columns);
    if (err) return `partitioning[${i}].expression: ${err}`;
  }
  return undefined;
}

export const compileView: ViewCompiler = async (name, spec) => {
  const { endpointRef: _ref, ...nodeSpec } = spec;
  const err = interimCheck(spec);
  if (err) return { ok: false, error: err };
  const view = { ...nodeSpec, name };
  return { ok: true, view: { name, spec: view, specHash: specHash(view) } };
};
