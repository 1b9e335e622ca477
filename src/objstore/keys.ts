/**
 * Key, prefix and range validation shared by the bucket providers. Pure functions, no I/O.
 */
import { InvalidArgumentError } from '../errors.js';
import type { ByteRange } from './bucket.js';

/** Longest key (after any bucket prefix) accepted; S3's own limit is 1024 bytes of UTF-8. */
export const MAX_KEY_BYTES = 1024;

/**
 * Checks that one `/`-separated path segment is valid: non-empty, not `.` or `..`, and without
 * backslash or NUL. Returns a reason, or undefined when the segment is fine.
 */
function segmentProblem(seg: string): string | undefined {
  if (seg === '') return 'has an empty path segment (leading, trailing or double "/")';
  if (seg === '.' || seg === '..') return `has a "${seg}" path segment`;
  if (seg.includes('\\')) return 'contains a backslash';
  if (seg.includes('\0')) return 'contains a NUL byte';
  return undefined;
}

/**
 * Validates an object key: a relative `/`-separated path with non-empty segments other than `.`
 * and `..`, no backslash, no NUL, at most {@link MAX_KEY_BYTES} bytes of UTF-8.
 * @throws InvalidArgumentError naming `field` when the key is not valid.
 */
export function validateKey(key: string, field = 'key'): void {
  if (typeof key !== 'string') throw new TypeError(`${field} must be a string, got ${typeof key}`);
  if (key === '') throw new InvalidArgumentError(field, 'object key is empty');
  if (key.startsWith('/')) throw new InvalidArgumentError(field, `object key ${JSON.stringify(key)} is absolute`);
  if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) {
    throw new InvalidArgumentError(field, `object key is longer than ${MAX_KEY_BYTES} bytes`);
  }
  for (const seg of key.split('/')) {
    const problem = segmentProblem(seg);
    if (problem !== undefined) throw new InvalidArgumentError(field, `object key ${JSON.stringify(key)} ${problem}`);
  }
}

/**
 * Validates a listing prefix: empty, or a string whose complete segments (all but the last) are
 * valid key segments and whose last, possibly partial, segment has no backslash or NUL. So
 * `""`, `"a/"`, `"a/b"` and `"a/.x"` are valid; `"/a"`, `"a//"`, `"../a"` are not.
 * @throws InvalidArgumentError naming `field` when the prefix is not valid.
 */
export function validateListPrefix(prefix: string, field = 'prefix'): void {
  if (typeof prefix !== 'string') throw new TypeError(`${field} must be a string, got ${typeof prefix}`);
  if (prefix === '') return;
  const segs = prefix.split('/');
  const last = segs.pop() ?? '';
  for (const seg of segs) {
    const problem = segmentProblem(seg);
    if (problem !== undefined) throw new InvalidArgumentError(field, `list prefix ${JSON.stringify(prefix)} ${problem}`);
  }
  if (last.includes('\\') || last.includes('\0')) {
    throw new InvalidArgumentError(field, `list prefix ${JSON.stringify(prefix)} contains a backslash or NUL byte`);
  }
}

/**
 * Normalises a bucket-level key prefix (config `prefix`): `""` or `undefined` stay empty;
 * otherwise trailing `/` are dropped, the rest must be a valid key, and the result ends in `/`.
 * @throws InvalidArgumentError naming `field` when the prefix is not a valid key path.
 */
export function normalizeKeyPrefix(prefix: string | undefined, field = 'prefix'): string {
  if (prefix === undefined || prefix === '') return '';
  const trimmed = prefix.replace(/\/+$/, '');
  validateKey(trimmed, field);
  return `${trimmed}/`;
}

/**
 * Validates a byte range: `offset` a non-negative safe integer and `length` a positive safe
 * integer, or `suffix` a positive safe integer (HTTP cannot express empty ranges).
 * @throws InvalidArgumentError naming the field.
 */
export function validateRange(range: ByteRange): void {
  if ('suffix' in range) {
    if (!Number.isSafeInteger(range.suffix) || range.suffix < 1) {
      throw new InvalidArgumentError('range.suffix', `must be a positive integer, got ${String(range.suffix)}`);
    }
    return;
  }
  if (!Number.isSafeInteger(range.offset) || range.offset < 0) {
    throw new InvalidArgumentError('range.offset', `must be a non-negative integer, got ${String(range.offset)}`);
  }
  if (!Number.isSafeInteger(range.length) || range.length < 1) {
    throw new InvalidArgumentError('range.length', `must be a positive integer, got ${String(range.length)}`);
  }
  if (!Number.isSafeInteger(range.offset + range.length)) {
    throw new InvalidArgumentError('range', `offset + length exceeds 2^53: ${range.offset} + ${range.length}`);
  }
}

/** `bytes=...` form of a range, for messages and the HTTP Range header. */
export function formatRange(range: ByteRange): string {
  if ('suffix' in range) return `bytes=-${range.suffix}`;
  return `bytes=${range.offset}-${range.offset + range.length - 1}`;
}

/**
 * Resolves a validated range against an object of `size` bytes: the absolute `[start, end)` to
 * return, or undefined when the range starts at or beyond the end (INVALID_RANGE). A suffix
 * longer than the object covers the whole object, including an empty one.
 */
export function resolveRange(range: ByteRange, size: number): { start: number; end: number } | undefined {
  if ('suffix' in range) return { start: Math.max(0, size - range.suffix), end: size };
  if (range.offset >= size) return undefined;
  return { start: range.offset, end: Math.min(size, range.offset + range.length) };
}

/** Orders strings by their UTF-8 bytes, which is S3's listing order (JS `<` compares UTF-16 units). */
export function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
