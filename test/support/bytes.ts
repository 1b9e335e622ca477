/**
 * Byte helpers for tests: deterministic pseudo-random content (so a failure reproduces) and an
 * exact byte comparison that reports the first differing offset.
 */
import type { Test } from 'tap';

/**
 * `n` pseudo-random bytes from a xorshift32 generator seeded with `seed` (same seed, same bytes).
 */
export function seededBytes(n: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 0x9e3779b9;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out.writeUInt32LE(x, i);
  }
  for (; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** Every byte value 0..255 in order, `repeat` times, followed by every value in reverse. */
export function allByteValues(repeat = 1): Buffer {
  const out = Buffer.alloc(256 * repeat + 256);
  for (let r = 0; r < repeat; r++) for (let b = 0; b < 256; b++) out[r * 256 + b] = b;
  for (let b = 0; b < 256; b++) out[256 * repeat + b] = 255 - b;
  return out;
}

/**
 * Asserts that `actual` holds exactly the bytes of `expected` (type, length and content); on a
 * mismatch the message names the first differing offset instead of dumping megabytes.
 */
export function sameBytes(t: Test, actual: unknown, expected: Uint8Array, msg: string): boolean {
  if (!(actual instanceof Uint8Array)) return t.fail(`${msg}: expected bytes, got ${typeof actual}`);
  if (actual.length !== expected.length) {
    return t.fail(`${msg}: length ${actual.length}, expected ${expected.length}`, { diff: firstDiff(actual, expected) });
  }
  const equal = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength).equals(expected);
  if (!equal) return t.fail(`${msg}: content differs`, { diff: firstDiff(actual, expected) });
  return t.pass(msg);
}

function firstDiff(a: Uint8Array, b: Uint8Array): string {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return `first difference at offset ${i}: ${a[i]} vs ${b[i]}`;
  }
  return `equal for the first ${n} bytes`;
}
