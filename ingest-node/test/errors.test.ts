// The error catalogue and docs/errors.md must list the same codes with the
// same status, retryability and Retry-After; and every error has the one body shape.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  DrainingError,
  LandfallError,
  PayloadTooLargeError,
  RecordTooLargeError,
  errorCatalogue,
} from '../src/errors.ts';

const DOC = new URL('../../docs/errors.md', import.meta.url);

interface DocRow {
  readonly status: number;
  readonly retryable: boolean;
  readonly retryAfter: number | undefined;
}

function docRows(): Map<string, DocRow> {
  const rows = new Map<string, DocRow>();
  for (const line of readFileSync(DOC, 'utf8').split('\n')) {
    const m = /^\|\s*`(LF_[A-Z0-9_]+)`\s*\|\s*(\d{3})\s*\|\s*(yes|no)\s*\|\s*(\d*)\s*\|/.exec(line);
    if (m === null) continue;
    const [, code = '', status = '', retryable = '', retryAfter = ''] = m;
    assert.ok(!rows.has(code), `${code} is listed twice in docs/errors.md`);
    rows.set(code, {
      status: Number(status),
      retryable: retryable === 'yes',
      retryAfter: retryAfter === '' ? undefined : Number(retryAfter),
    });
  }
  return rows;
}

void test('docs/errors.md lists exactly the catalogue, with matching status, retryable and Retry-After', () => {
  const rows = docRows();
  const codes = errorCatalogue().map((e) => e.code);
  const missing = codes.filter((c) => !rows.has(c));
  const extra = [...rows.keys()].filter((c) => !codes.includes(c));
  assert.deepEqual(missing, [], `codes missing from docs/errors.md: ${missing.join(', ')}`);
  assert.deepEqual(extra, [], `codes in docs/errors.md that the catalogue lacks: ${extra.join(', ')}`);
  for (const spec of errorCatalogue()) {
    const row = rows.get(spec.code);
    assert.deepEqual(
      row,
      { status: spec.statusCode, retryable: spec.retryable, retryAfter: spec.retryAfterSeconds },
      spec.code,
    );
  }
});

void test('the catalogue covers every status DESIGN §3 names', () => {
  const statuses = new Set(errorCatalogue().map((e) => e.statusCode));
  for (const s of [400, 401, 403, 411, 413, 415, 422, 503]) assert.ok(statuses.has(s), `no code for ${s}`);
});

void test('codes are LF_ UPPER_SNAKE and every 503 has a Retry-After', () => {
  for (const spec of errorCatalogue()) {
    assert.match(spec.code, /^LF_[A-Z0-9_]+$/);
    if (spec.statusCode === 503) assert.ok((spec.retryAfterSeconds ?? 0) > 0, spec.code);
  }
});

void test('an error renders its body and headers; templates fill in order', () => {
  const e = new PayloadTooLargeError(1024);
  assert.ok(e instanceof LandfallError);
  assert.equal(e.statusCode, 413);
  assert.deepEqual(e.toBody(), {
    error: {
      code: 'LF_PAYLOAD_TOO_LARGE',
      message: 'The request body exceeds limits.bodyBytesMax (1024 bytes)',
    },
  });
  assert.deepEqual(e.headers(), {});
  assert.deepEqual(new DrainingError().headers(), { 'retry-after': '1' });
  assert.equal(
    new RecordTooLargeError('line 3, 10 bytes', 5).message,
    'A record (line 3, 10 bytes) is larger than limits.recordBytesMax (5 bytes)',
  );
});
