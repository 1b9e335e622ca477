/**
 * Key, prefix and range rules shared by the bucket providers (src/objstore/keys.ts), and the
 * backoff formula (src/common/backoff.ts).
 */
import fc from 'fast-check';
import t from 'tap';
import { ErrorCode, StrataError } from '../../src/errors.js';
import {
  compareUtf8,
  formatRange,
  normalizeKeyPrefix,
  resolveRange,
  validateKey,
  validateListPrefix,
  validateRange,
} from '../../src/objstore/keys.js';
import { backoffDelayMs } from '../../src/common/backoff.js';
import { INVALID_KEYS } from '../support/bucket-acceptance.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof StrataError ? err.code : `not a StrataError: ${String(err)}`;
  }
  return undefined;
}

t.test('validateKey() accepts relative slash paths and rejects the rest', async (t) => {
  for (const key of ['a', 'a/b', 'a/b/c.d', '.hidden', 'a..b', '...', 'a b', 'ä/😀', 'x'.repeat(1024)]) {
    t.equal(codeOf(() => validateKey(key)), undefined, `accepts ${JSON.stringify(key).slice(0, 40)}`);
  }
  for (const key of [...INVALID_KEYS, 'x'.repeat(1025), 'é'.repeat(513)]) {
    t.equal(codeOf(() => validateKey(key)), ErrorCode.INVALID_ARGUMENT, `rejects ${JSON.stringify(key).slice(0, 40)}`);
  }
});

t.test('validateListPrefix() allows a partial last segment only', async (t) => {
  for (const p of ['', 'a', 'a/', 'a/b', 'a/.', 'a/..', 'a/.x', '.']) {
    t.equal(codeOf(() => validateListPrefix(p)), undefined, `accepts ${JSON.stringify(p)}`);
  }
  for (const p of ['/', '/a', 'a//', '../', 'a/../b', './', 'a\\', 'a\0']) {
    t.equal(codeOf(() => validateListPrefix(p)), ErrorCode.INVALID_ARGUMENT, `rejects ${JSON.stringify(p)}`);
  }
});

t.test('normalizeKeyPrefix() yields "" or a key ending in "/"', async (t) => {
  t.equal(normalizeKeyPrefix(undefined), '');
  t.equal(normalizeKeyPrefix(''), '');
  t.equal(normalizeKeyPrefix('a'), 'a/');
  t.equal(normalizeKeyPrefix('a/b/'), 'a/b/');
  t.equal(normalizeKeyPrefix('a/b//'), 'a/b/');
  t.equal(codeOf(() => normalizeKeyPrefix('/a')), ErrorCode.INVALID_ARGUMENT, 'absolute');
  t.equal(codeOf(() => normalizeKeyPrefix('a/../b')), ErrorCode.INVALID_ARGUMENT, 'dot-dot');
  t.equal(codeOf(() => normalizeKeyPrefix('/')), ErrorCode.INVALID_ARGUMENT, 'only a slash');
});

t.test('resolveRange() and formatRange() agree with HTTP range semantics', async (t) => {
  const cases: [Parameters<typeof resolveRange>[0], number, { start: number; end: number } | undefined, string][] = [
    [{ offset: 0, length: 1 }, 10, { start: 0, end: 1 }, 'bytes=0-0'],
    [{ offset: 3, length: 4 }, 10, { start: 3, end: 7 }, 'bytes=3-6'],
    [{ offset: 8, length: 5 }, 10, { start: 8, end: 10 }, 'bytes=8-12'],
    [{ offset: 10, length: 1 }, 10, undefined, 'bytes=10-10'],
    [{ offset: 0, length: 1 }, 0, undefined, 'bytes=0-0'],
    [{ suffix: 3 }, 10, { start: 7, end: 10 }, 'bytes=-3'],
    [{ suffix: 30 }, 10, { start: 0, end: 10 }, 'bytes=-30'],
    [{ suffix: 1 }, 0, { start: 0, end: 0 }, 'bytes=-1'],
  ];
  for (const [range, size, want, header] of cases) {
    t.same(resolveRange(range, size), want, `${JSON.stringify(range)} of ${size} bytes`);
    t.equal(formatRange(range), header, `header of ${JSON.stringify(range)}`);
  }
  t.equal(codeOf(() => validateRange({ offset: 0, length: 0 })), ErrorCode.INVALID_ARGUMENT, 'empty range');
  t.equal(codeOf(() => validateRange({ suffix: 0 })), ErrorCode.INVALID_ARGUMENT, 'empty suffix');
});

t.test('compareUtf8() orders like the UTF-8 bytes', async (t) => {
  t.ok(compareUtf8('\uff5a', '\u{1f600}') < 0, 'U+FF5A before U+1F600 (UTF-16 order says otherwise)');
  t.ok('\uff5a' > '\u{1f600}', 'the UTF-16 order really differs');
  fc.assert(
    fc.property(fc.string({ unit: 'grapheme' }), fc.string({ unit: 'grapheme' }), (a, b) => {
      const want = Math.sign(Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
      return Math.sign(compareUtf8(a, b)) === want;
    }),
  );
  t.pass('matches Buffer.compare for random strings');
});

t.test('backoffDelayMs() is full jitter under a doubling, capped ceiling', async (t) => {
  const policy = { maxAttempts: 10, baseDelayMs: 100, maxDelayMs: 1000 };
  t.equal(backoffDelayMs(policy, 1, () => 0), 0, 'jitter can reach 0');
  t.equal(backoffDelayMs(policy, 1, () => 0.999), 99, 'first retry below 100 ms');
  t.equal(backoffDelayMs(policy, 2, () => 0.999), 199, 'second retry below 200 ms');
  t.equal(backoffDelayMs(policy, 4, () => 0.999), 799, 'fourth retry below 800 ms');
  t.equal(backoffDelayMs(policy, 5, () => 0.999), 999, 'capped at maxDelayMs');
  t.equal(backoffDelayMs(policy, 60, () => 0.5), 500, 'no overflow for large retry numbers');
});

t.test('backoffDelayMs() with equal jitter waits at least half the ceiling', async (t) => {
  const policy = { maxAttempts: Infinity, baseDelayMs: 100, maxDelayMs: 1000 };
  t.equal(backoffDelayMs(policy, 1, () => 0, 'equal'), 50, 'first retry: from 50 ms...');
  t.equal(backoffDelayMs(policy, 1, () => 0.999, 'equal'), 99, '...to below 100 ms');
  t.equal(backoffDelayMs(policy, 3, () => 0, 'equal'), 200);
  t.equal(backoffDelayMs(policy, 9, () => 0, 'equal'), 500, 'capped ceiling');
  t.equal(backoffDelayMs({ ...policy, baseDelayMs: 60_000, maxDelayMs: 60_000 }, 1, () => 0, 'equal'), 30_000);
});
