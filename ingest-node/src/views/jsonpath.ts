// The JSONPath subset a column may use: a root `$` followed by object keys and
// non-negative array indexes. No wildcards, slices, filters or recursive
// descent: one path must address at most one value, or "the column's value"
// stops meaning anything. Parsed here and re-rendered for DuckDB with every
// key quoted, so a key can never be read as DuckDB path syntax.
import { ViewError, ViewErrorCode } from './errors.ts';

export type PathSegment = { readonly key: string } | { readonly index: number };

/**
 * Not a JSONPath: the record's MQTT topic (NULL for HTTP records). The JSONPath
 * parser refuses `$topic` (a key needs `.` or `[`), so it cannot shadow a payload path.
 */
export const TOPIC_PATH = '$topic';

export const MAX_PATH_SEGMENTS = 32;
export const MAX_PATH_LENGTH = 1024;
/** Larger indexes are almost always a typo; bounding them keeps paths short. */
export const MAX_PATH_INDEX = 1_000_000;

// `.name` accepts the characters JSON keys usually have (user-agent, $ref, 0).
const DOT_KEY = /\.([A-Za-z0-9_$-]+)/y;
// `["any key"]` / `['any key']`: anything but quotes, backslashes and control characters.
// eslint-disable-next-line no-control-regex -- refusing control characters is the point
const BRACKET_KEY = /\[(?:"([^"\\\u0000-\u001f]*)"|'([^'\\\u0000-\u001f]*)')\]/y;
const INDEX = /\[([0-9]+)\]/y;

export function parseJsonPath(text: string, path = 'path'): PathSegment[] {
  const fail = (msg: string): never => {
    throw new ViewError(ViewErrorCode.pathInvalid, path, `${msg} in '${text}'`);
  };
  if (text.length > MAX_PATH_LENGTH) fail(`a path is at most ${MAX_PATH_LENGTH} characters`);
  if (!text.startsWith('$')) fail("a path starts with '$'");
  const segments: PathSegment[] = [];
  let pos = 1;
  while (pos < text.length) {
    let m: RegExpExecArray | null;
    DOT_KEY.lastIndex = pos;
    BRACKET_KEY.lastIndex = pos;
    INDEX.lastIndex = pos;
    if ((m = DOT_KEY.exec(text))) {
      segments.push({ key: m[1] ?? '' });
      pos = DOT_KEY.lastIndex;
    } else if ((m = BRACKET_KEY.exec(text))) {
      segments.push({ key: m[1] ?? m[2] ?? '' });
      pos = BRACKET_KEY.lastIndex;
    } else if ((m = INDEX.exec(text))) {
      const index = Number(m[1]);
      if (index > MAX_PATH_INDEX) fail(`array index ${index} is above ${MAX_PATH_INDEX}`);
      segments.push({ index });
      pos = INDEX.lastIndex;
    } else {
      const rest = text.slice(pos);
      if (/^\[\s*-/.test(rest)) fail('negative array indexes are not supported');
      if (/^(\.\.|\.\*|\[\*)/.test(rest)) fail('wildcards and recursive descent are not supported');
      fail(`unexpected '${rest.slice(0, 16)}' at ${pos} (use .key, ["key"] or [index])`);
    }
    if (segments.length > MAX_PATH_SEGMENTS) fail(`a path has at most ${MAX_PATH_SEGMENTS} segments`);
  }
  return segments;
}

/** The canonical user-facing form: `.key` where that is unambiguous, `["key"]` otherwise. */
export function renderJsonPath(segments: readonly PathSegment[]): string {
  return (
    '$' +
    segments
      .map((s) =>
        'index' in s ? `[${s.index}]` : /^[A-Za-z0-9_$-]+$/.test(s.key) ? `.${s.key}` : `["${s.key}"]`,
      )
      .join('')
  );
}

/** DuckDB's path syntax, every key double-quoted (keys never contain `"` or `\`: the parser refuses them). */
export function renderDuckDbPath(segments: readonly PathSegment[]): string {
  return '$' + segments.map((s) => ('index' in s ? `[${s.index}]` : `."${s.key}"`)).join('');
}
