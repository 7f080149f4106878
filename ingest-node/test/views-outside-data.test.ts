// Which materialiser failures hold a segment back (retried: the disk, the
// instance) and which are the view's own outcome (its rows go to the DLQ as
// view_failed). A full scratch volume must be the former: DuckDB reports it as
// an out-of-memory error that names the temp directory limit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isOutsideData } from '../src/views/materialize.ts';

void test('the disk and the instance are outside the data; a view error is not', () => {
  const outside = [
    Object.assign(new Error('write failed'), { code: 'ENOSPC' }),
    new Error('IO Error: Could not write file "x": No space left on device'),
    new Error('INTERRUPT Error: Interrupted!'),
    new Error(
      "Out of Memory Error: failed to offload data block of size 256.0 KiB (1.0 GiB/1.0 GiB used).\nThis limit was set by the 'max_temp_directory_size' setting.",
    ),
    new Error('the DuckDB instance is closed'),
  ];
  for (const err of outside) assert.equal(isOutsideData(err), true, err.message);
  const view = [
    new Error('Conversion Error: Could not convert string "x" to INT32'),
    new Error('Out of Memory Error: could not allocate block of size 256.0 KiB (128.0 MiB/128.0 MiB used)'),
    new Error('Permission Error: Cannot access file "/etc/passwd"'),
    new Error('Binder Error: Referenced column "nope" not found'),
  ];
  for (const err of view) assert.equal(isOutsideData(err), false, err.message);
});
