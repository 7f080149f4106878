// Errors a view definition can be rejected with. The operator copies `code`,
// `path` and `message` into the View's `Compiled` condition, so all three are
// part of the contract (docs/views.md lists the codes); branch on `code`, never
// on the message text.

export const ViewErrorCode = {
  /** The YAML does not parse. */
  yamlInvalid: 'yaml_invalid',
  /** The spec does not match the schema (unknown key, wrong type, bad identifier…). */
  specInvalid: 'spec_invalid',
  /** A column type is not in the allowlist or is malformed. */
  typeInvalid: 'type_invalid',
  /** A column path is outside the supported JSONPath subset. */
  pathInvalid: 'path_invalid',
  /** A `default` does not cast to its column's type, or sits on a required column. */
  defaultInvalid: 'default_invalid',
  /** Two columns/aliases share a name, or a name is reserved. */
  nameConflict: 'name_conflict',
  /** DuckDB's parser rejects the expression. */
  exprSyntax: 'expr_syntax',
  /** More than one statement, or a clause (FROM, WHERE, LIMIT, AS…) around the expression. */
  exprNotExpression: 'expr_not_expression',
  /** A subquery (`(SELECT …)`, `IN (SELECT …)`, `EXISTS`). */
  exprSubquery: 'expr_subquery',
  /** A window function (`… OVER (…)`). */
  exprWindow: 'expr_window',
  /** An aggregate function (sum, count…) or aggregate modifiers (FILTER, ORDER BY, DISTINCT). */
  exprAggregate: 'expr_aggregate',
  /** A function outside the allowlist (file, env, network access, volatile functions…). */
  exprFunctionDenied: 'expr_function_denied',
  /** A syntax node outside the allowlist (*, lambdas, parameters, positional refs…). */
  exprNodeDenied: 'expr_node_denied',
  /** A column reference that is not one of the view's own columns. */
  exprUnknownColumn: 'expr_unknown_column',
  /** DuckDB cannot bind the expression over the view's typed columns (type mismatch, bad arguments). */
  exprBind: 'expr_bind',
  /** The expression has the wrong result type (a filter must be BOOLEAN). */
  exprType: 'expr_type',
  /**
   * A width, precision or count argument (lpad, rpad, format, printf) that is
   * not a constant within EXPR_WIDTH_MAX: each row's result is allocated
   * outside DuckDB's memory limit, so one such filter could exhaust the node.
   */
  exprWidth: 'expr_width',
  /**
   * A column's type changed in a way the View's Iceberg table cannot promote
   * its field to (string → int…; iceberg/view-check.ts).
   */
  icebergTypeChange: 'iceberg_type_change',
} as const;
export type ViewErrorCode = (typeof ViewErrorCode)[keyof typeof ViewErrorCode];

export class ViewError extends Error {
  readonly code: ViewErrorCode;
  /** Where in the spec, as `columns[1].type`, `filter`, `partitioning[0].expression`; '' for the whole spec. */
  readonly path: string;

  constructor(code: ViewErrorCode, path: string, message: string, options?: { cause?: unknown }) {
    super(path ? `${path}: ${message}` : message, options);
    this.name = 'ViewError';
    this.code = code;
    this.path = path;
  }
}

export function isViewError(err: unknown, code?: ViewErrorCode): err is ViewError {
  return err instanceof ViewError && (code === undefined || err.code === code);
}
