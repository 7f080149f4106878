// Splits a decoded request body into records without copying: every record is
// a subarray of the body Buffer. This is the hot path for 64 KiB NDJSON
// bodies, so it works on bytes (indexOf 0x0a) and never builds a string per
// line unless validation asks for it. The records keep their exact bytes:
// what a producer sent is what lands in the WAL and in S3.
//
// NDJSON and RecordIO are split from the chunks the body arrived (or was
// decoded) in, not from one Buffer.concat of them: that copy was a fresh
// 64 KiB ArrayBuffer per request, and at a few thousand requests a second
// those external bytes alone made V8 run a full mark-compact every ~160 ms
// (measured, issue 15). Only a record that straddles two chunks is copied,
// into a buffer of its own. JSON bodies are still joined for their scanner.

import { isUtf8 } from 'node:buffer';
import type { LandfallError } from '../errors.ts';
import {
  EmptyBodyError,
  InvalidJsonError,
  JsonNotObjectError,
  RecordTooLargeError,
  RecordioTruncatedError,
  TooManyRecordsError,
} from '../errors.ts';

export interface SplitOptions {
  readonly recordBytesMax: number;
  /** limits.recordsPerRequestMax: the split stops with 413 at the first record past it. */
  readonly recordsMax: number;
  /** `validation: json`: every record must parse as JSON (and be UTF-8). */
  readonly validateJson: boolean;
}

const LF = 0x0a;
const CR = 0x0d;
const SP = 0x20;
const TAB = 0x09;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Deepest nesting the application/json scanner follows; deeper is refused rather than risking the stack or time. */
const JSON_DEPTH_MAX = 512;

function isBlank(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const c = buf[i];
    if (c !== SP && c !== TAB && c !== CR) return false;
  }
  return true;
}

function checkJson(buf: Buffer, start: number, end: number, where: string): void {
  const slice = buf.subarray(start, end);
  if (!isUtf8(slice)) throw new InvalidJsonError(where, 'it is not UTF-8');
  try {
    JSON.parse(slice.toString('utf8'));
  } catch (err) {
    throw new InvalidJsonError(where, (err as Error).message);
  }
}

/** validation: json looks at `stop` after this many bytes parsed (JSON.parse of one record cannot be interrupted). */
const VALIDATE_CHECK_BYTES = 1024 * 1024;

/** Why a split should stop now (client gone, processing time up), or undefined. */
export type StopCheck = () => LandfallError | undefined;

/** validation: json for one request: parses each record, and between records asks whether to stop. */
class JsonValidator {
  readonly #stop: StopCheck | undefined;
  #sinceCheck = 0;

  constructor(stop: StopCheck | undefined) {
    this.#stop = stop;
  }

  check(buf: Buffer, start: number, end: number, where: string): void {
    checkJson(buf, start, end, where);
    this.#sinceCheck += end - start;
    if (this.#sinceCheck >= VALIDATE_CHECK_BYTES && this.#stop !== undefined) {
      this.#sinceCheck = 0;
      const err = this.#stop();
      if (err !== undefined) throw err;
    }
  }
}

/**
 * One record per line. Empty (or blank) lines are skipped; a `\r` before the
 * `\n` is dropped; the last line needs no newline. Line numbers in errors are
 * 1-based and count skipped lines, so they match the producer's file.
 */
export function splitNdjson(buf: Buffer, o: SplitOptions, stop?: StopCheck): Buffer[] {
  const v = o.validateJson ? new JsonValidator(stop) : undefined;
  const out: Buffer[] = [];
  const len = buf.length;
  let start = 0;
  let line = 0;
  while (start < len) {
    const nl = buf.indexOf(LF, start);
    const next = nl === -1 ? len : nl;
    line++;
    let end = next;
    if (end > start && buf[end - 1] === CR) end--;
    if (end > start) {
      const first = buf[start];
      // Only a line that starts with whitespace can be blank: the common case pays one compare.
      if (!((first === SP || first === TAB || first === CR) && isBlank(buf, start, end))) {
        if (end - start > o.recordBytesMax)
          throw new RecordTooLargeError(`line ${line}, ${end - start} bytes`, o.recordBytesMax);
        if (out.length >= o.recordsMax) throw new TooManyRecordsError(o.recordsMax);
        v?.check(buf, start, end, `Line ${line}`);
        out.push(buf.subarray(start, end));
      }
    }
    start = next + 1;
  }
  return out;
}

/**
 * splitNdjson of the concatenation of `chunks`, with the same records, errors
 * and line numbers, without concatenating: records inside one chunk are
 * subarrays of it; a record that straddles chunks is copied into a buffer of
 * its own (at most recordBytesMax bytes: an oversize line is refused from its
 * length, and a blank one skipped, without being copied).
 */
export function splitNdjsonChunks(chunks: readonly Buffer[], o: SplitOptions, stop?: StopCheck): Buffer[] {
  if (chunks.length === 1) return splitNdjson(chunks[0]!, o, stop);
  const v = o.validateJson ? new JsonValidator(stop) : undefined;
  const out: Buffer[] = [];
  let line = 0;
  // A line that began in an earlier chunk: its bytes so far, as pieces (none
  // empty) kept only while they could still make a record (at most
  // recordBytesMax and a CR), so a long line cut into many small chunks costs
  // no piece per chunk; past that only its length, last byte and whether it
  // has content (a byte that is not blank) are kept, which is all a blank
  // line's skip or an oversize line's error needs.
  let pieces: Buffer[] | undefined = [];
  let pieceBytes = 0;
  let content = false;
  let lastByte = -1;
  const take = (buf: Buffer, start: number, next: number): void => {
    let end = next;
    if (end > start && buf[end - 1] === CR) end--;
    if (end === start) return;
    const first = buf[start];
    // Only a line that starts with whitespace can be blank: the common case pays one compare.
    if ((first === SP || first === TAB || first === CR) && isBlank(buf, start, end)) return;
    if (end - start > o.recordBytesMax)
      throw new RecordTooLargeError(`line ${line}, ${end - start} bytes`, o.recordBytesMax);
    if (out.length >= o.recordsMax) throw new TooManyRecordsError(o.recordsMax);
    v?.check(buf, start, end, `Line ${line}`);
    out.push(buf.subarray(start, end));
  };
  const addPiece = (buf: Buffer, start: number, end: number): void => {
    content ||= !isBlank(buf, start, end);
    lastByte = buf[end - 1]!;
    pieceBytes += end - start;
    if (pieces === undefined) return;
    if (pieceBytes > o.recordBytesMax + 1) pieces = undefined;
    else pieces.push(start === 0 && end === buf.length ? buf : buf.subarray(start, end));
  };
  const takePieces = (): void => {
    const kept = pieces;
    pieces = [];
    const bytes = pieceBytes;
    pieceBytes = 0;
    const hasContent = content;
    content = false;
    // Whole in one chunk after all (its newline opened the next one): no copy.
    if (kept?.length === 1) {
      take(kept[0]!, 0, bytes);
      return;
    }
    if (!hasContent) return;
    const end = lastByte === CR ? bytes - 1 : bytes;
    // (The pieces are gone only past recordBytesMax and a CR.)
    if (end > o.recordBytesMax || kept === undefined)
      throw new RecordTooLargeError(`line ${line}, ${end} bytes`, o.recordBytesMax);
    if (out.length >= o.recordsMax) throw new TooManyRecordsError(o.recordsMax);
    const record = Buffer.allocUnsafe(end);
    let at = 0;
    for (const p of kept) {
      if (at >= end) break;
      at += p.copy(record, at, 0, Math.min(p.length, end - at));
    }
    v?.check(record, 0, end, `Line ${line}`);
    out.push(record);
  };
  for (const buf of chunks) {
    const len = buf.length;
    let start = 0;
    while (start < len) {
      const nl = buf.indexOf(LF, start);
      if (nl === -1) {
        addPiece(buf, start, len);
        break;
      }
      line++;
      if (pieceBytes === 0) take(buf, start, nl);
      else {
        if (nl > start) addPiece(buf, start, nl);
        takePieces();
      }
      start = nl + 1;
    }
  }
  if (pieceBytes > 0) {
    line++;
    takePieces();
  }
  return out;
}

/** The body as one Buffer (the JSON splitter needs it whole). */
function whole(chunks: readonly Buffer[]): Buffer {
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

/** RecordIO: `length u32 big-endian | payload`, repeated. A short tail is an error, never silently dropped. */
export function splitRecordio(buf: Buffer, o: SplitOptions, stop?: StopCheck): Buffer[] {
  const v = o.validateJson ? new JsonValidator(stop) : undefined;
  const out: Buffer[] = [];
  const len = buf.length;
  let i = 0;
  let n = 0;
  while (i < len) {
    n++;
    if (n > o.recordsMax) throw new TooManyRecordsError(o.recordsMax);
    if (len - i < 4)
      throw new RecordioTruncatedError(n, `${len - i} byte(s) left where a 4-byte length was expected`);
    const size = buf.readUInt32BE(i);
    i += 4;
    if (size > o.recordBytesMax)
      throw new RecordTooLargeError(`record ${n}, ${size} bytes`, o.recordBytesMax);
    if (len - i < size)
      throw new RecordioTruncatedError(n, `it declares ${size} bytes but ${len - i} follow`);
    v?.check(buf, i, i + size, `Record ${n}`);
    out.push(buf.subarray(i, i + size));
    i += size;
  }
  return out;
}

/**
 * splitRecordio of the concatenation of `chunks`, with the same records and
 * errors, without concatenating: a payload inside one chunk is a subarray of
 * it; one that straddles chunks is copied into a buffer of its own (at most
 * recordBytesMax bytes: the length is checked first).
 */
export function splitRecordioChunks(chunks: readonly Buffer[], o: SplitOptions, stop?: StopCheck): Buffer[] {
  if (chunks.length === 1) return splitRecordio(chunks[0]!, o, stop);
  const v = o.validateJson ? new JsonValidator(stop) : undefined;
  const out: Buffer[] = [];
  /** Bytes of all chunks not consumed yet. */
  let left = 0;
  for (const chunk of chunks) left += chunk.length;
  let c = 0;
  let at = 0;
  /** The chunk the next byte is in (left > 0). */
  const current = (): Buffer => {
    while (at === chunks[c]!.length) {
      c++;
      at = 0;
    }
    return chunks[c]!;
  };
  const readLength = (): number => {
    const cur = current();
    let size: number;
    if (cur.length - at >= 4) size = cur.readUInt32BE(at);
    else {
      size = 0;
      for (let k = 0; k < 4; k++) size = size * 256 + current()[at++]!;
      left -= 4;
      return size;
    }
    at += 4;
    left -= 4;
    return size;
  };
  const take = (size: number): Buffer => {
    if (size === 0) return Buffer.alloc(0);
    const cur = current();
    left -= size;
    if (cur.length - at >= size) {
      at += size;
      return cur.subarray(at - size, at);
    }
    const record = Buffer.allocUnsafe(size);
    for (let got = 0; got < size;) {
      const piece = current();
      const k = Math.min(piece.length - at, size - got);
      piece.copy(record, got, at, at + k);
      got += k;
      at += k;
    }
    return record;
  };
  let n = 0;
  while (left > 0) {
    n++;
    if (n > o.recordsMax) throw new TooManyRecordsError(o.recordsMax);
    if (left < 4)
      throw new RecordioTruncatedError(n, `${left} byte(s) left where a 4-byte length was expected`);
    const size = readLength();
    if (size > o.recordBytesMax)
      throw new RecordTooLargeError(`record ${n}, ${size} bytes`, o.recordBytesMax);
    if (left < size) throw new RecordioTruncatedError(n, `it declares ${size} bytes but ${left} follow`);
    const record = take(size);
    v?.check(record, 0, size, `Record ${n}`);
    out.push(record);
  }
  return out;
}

function skipWs(buf: Buffer, i: number): number {
  const len = buf.length;
  while (i < len) {
    const c = buf[i];
    if (c === SP || c === TAB || c === LF || c === CR) i++;
    else break;
  }
  return i;
}

/** Index just past the string that opens at `i`. */
function skipString(buf: Buffer, i: number): number {
  let j = i + 1;
  for (;;) {
    const q = buf.indexOf(QUOTE, j);
    if (q === -1) throw new InvalidJsonError('The body', 'a string is not terminated');
    let backslashes = 0;
    for (let k = q - 1; k > i && buf[k] === BACKSLASH; k--) backslashes++;
    if (backslashes % 2 === 0) return q + 1;
    j = q + 1;
  }
}

/**
 * Index just past the object or array that opens at `i`. This matches brackets
 * and strings only; it does not check the full grammar (validation: json does),
 * because ingest accepts any record bytes and views send bad JSON to the DLQ.
 */
function skipComposite(buf: Buffer, i: number): number {
  const closers: number[] = [];
  const len = buf.length;
  for (; i < len; i++) {
    const c = buf[i];
    if (c === QUOTE) {
      i = skipString(buf, i) - 1;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (closers.length >= JSON_DEPTH_MAX)
        throw new InvalidJsonError('The body', `it nests deeper than ${JSON_DEPTH_MAX}`);
      closers.push(c + 2); // '}' is '{' + 2, ']' is '[' + 2
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      if (closers.pop() !== c)
        throw new InvalidJsonError('The body', `unexpected "${String.fromCharCode(c)}" at byte ${i}`);
      if (closers.length === 0) return i + 1;
    }
  }
  throw new InvalidJsonError('The body', 'it ends inside an object or array');
}

function startsScalar(c: number | undefined): boolean {
  // A string, number, true, false or null.
  return (
    c === QUOTE ||
    c === 0x2d ||
    (c !== undefined && c >= 0x30 && c <= 0x39) ||
    c === 0x74 ||
    c === 0x66 ||
    c === 0x6e
  );
}

/** application/json: one object (one record) or an array of objects (one record each). */
export function splitJson(buf: Buffer, o: SplitOptions, stop?: StopCheck): Buffer[] {
  const v = o.validateJson ? new JsonValidator(stop) : undefined;
  const len = buf.length;
  let i = skipWs(buf, 0);
  if (i === len) return [];
  const first = buf[i];
  const out: Buffer[] = [];
  if (first === 0x7b) {
    const end = skipComposite(buf, i);
    if (skipWs(buf, end) !== len)
      throw new InvalidJsonError('The body', `unexpected data after the object at byte ${end}`);
    if (end - i > o.recordBytesMax)
      throw new RecordTooLargeError(`the body, ${end - i} bytes`, o.recordBytesMax);
    v?.check(buf, i, end, 'The body');
    out.push(buf.subarray(i, end));
    return out;
  }
  if (first !== 0x5b) {
    if (startsScalar(first)) throw new JsonNotObjectError('the body is a JSON scalar');
    throw new InvalidJsonError('The body', `unexpected "${String.fromCharCode(first ?? 0)}" at byte ${i}`);
  }
  i = skipWs(buf, i + 1);
  if (buf[i] === 0x5d) {
    if (skipWs(buf, i + 1) !== len)
      throw new InvalidJsonError('The body', `unexpected data after the array at byte ${i + 1}`);
    return out;
  }
  for (let n = 1; ; n++) {
    const c = buf[i];
    if (c !== 0x7b) {
      if (startsScalar(c) || c === 0x5b) throw new JsonNotObjectError(`array element ${n} is not an object`);
      throw new InvalidJsonError(
        'The body',
        i >= len ? 'the array is not closed' : `unexpected "${String.fromCharCode(c ?? 0)}" at byte ${i}`,
      );
    }
    // Before scanning the element, so an array of many tiny objects stops here without walking the rest.
    if (n > o.recordsMax) throw new TooManyRecordsError(o.recordsMax);
    const end = skipComposite(buf, i);
    if (end - i > o.recordBytesMax)
      throw new RecordTooLargeError(`array element ${n}, ${end - i} bytes`, o.recordBytesMax);
    v?.check(buf, i, end, `Array element ${n}`);
    out.push(buf.subarray(i, end));
    i = skipWs(buf, end);
    const sep = buf[i];
    if (sep === 0x2c /* , */) {
      i = skipWs(buf, i + 1);
      continue;
    }
    if (sep === 0x5d) {
      if (skipWs(buf, i + 1) !== len)
        throw new InvalidJsonError('The body', `unexpected data after the array at byte ${i + 1}`);
      return out;
    }
    throw new InvalidJsonError(
      'The body',
      i >= len ? 'the array is not closed' : `expected "," or "]" at byte ${i}`,
    );
  }
}

export type BodyFormat = 'ndjson' | 'json' | 'recordio';

/**
 * Counts records while a body is still arriving (or being decoded), chunk by
 * chunk, by exactly the rules the splitter applies afterwards, so
 * limits.recordsPerRequestMax fires before the rest of a flood is decoded and
 * each record can be charged to the in-flight budget as it appears. `count`
 * never runs ahead of what the splitter will find for a well-formed body.
 */
export interface RecordCounter {
  readonly count: number;
  feed(chunk: Buffer): void;
  /** The body ended: a last record without its terminator counts now. */
  end(): void;
}

/** NDJSON: a line counts once it holds a byte that is not blank (space, tab, CR), as in splitNdjson. */
class NdjsonCounter implements RecordCounter {
  count = 0;
  /** The current line, so far, has a byte that is not blank. */
  #content = false;

  feed(chunk: Buffer): void {
    const len = chunk.length;
    let start = 0;
    while (start < len) {
      const nl = chunk.indexOf(LF, start);
      const end = nl === -1 ? len : nl;
      if (!this.#content && end > start) {
        const first = chunk[start];
        this.#content = !((first === SP || first === TAB || first === CR) && isBlank(chunk, start, end));
      }
      if (nl === -1) return;
      if (this.#content) this.count++;
      this.#content = false;
      start = nl + 1;
    }
  }

  end(): void {
    if (this.#content) this.count++;
    this.#content = false;
  }
}

/** RecordIO: a record counts once its 4-byte length is complete; its payload is skipped without looking. */
class RecordioCounter implements RecordCounter {
  count = 0;
  /** Payload bytes of the current record still to come. */
  #skip = 0;
  readonly #header = Buffer.alloc(4);
  #headerBytes = 0;

  feed(chunk: Buffer): void {
    const len = chunk.length;
    let i = 0;
    while (i < len) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, len - i);
        this.#skip -= n;
        i += n;
        continue;
      }
      let size: number;
      if (this.#headerBytes === 0 && len - i >= 4) {
        size = chunk.readUInt32BE(i);
        i += 4;
      } else {
        const n = Math.min(4 - this.#headerBytes, len - i);
        chunk.copy(this.#header, this.#headerBytes, i, i + n);
        this.#headerBytes += n;
        i += n;
        if (this.#headerBytes < 4) return;
        this.#headerBytes = 0;
        size = this.#header.readUInt32BE(0);
      }
      this.count++;
      this.#skip = size;
    }
  }

  end(): void {
    // A short tail is the splitter's error to report (LF_RECORDIO_TRUNCATED).
  }
}

/**
 * A counter for `format`, or undefined for application/json: finding array
 * elements needs the bracket-and-string scan, so there the splitter counts
 * (it stops at the first element past the cap) and the records are charged
 * after the split.
 */
export function recordCounter(format: BodyFormat): RecordCounter | undefined {
  if (format === 'ndjson') return new NdjsonCounter();
  if (format === 'recordio') return new RecordioCounter();
  return undefined;
}

/** Splits a body given as the chunks it arrived (or was decoded) in. */
export function splitRecords(
  format: BodyFormat,
  chunks: readonly Buffer[],
  o: SplitOptions,
  stop?: StopCheck,
): Buffer[] {
  const records =
    format === 'ndjson'
      ? splitNdjsonChunks(chunks, o, stop)
      : format === 'json'
        ? splitJson(whole(chunks), o, stop)
        : splitRecordioChunks(chunks, o, stop);
  if (records.length === 0) throw new EmptyBodyError();
  return records;
}
