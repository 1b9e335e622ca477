/**
 * Last-write-wins ordering: normalizeSamples (inside one request) and mergeSamples (across
 * requests, generations and the old block), against a simple reference model; value bits exact.
 */
import fc from 'fast-check';
import t from 'tap';
import type { Samples } from '../../src/format/run.js';
import { isStrictlyIncreasing, mergeSamples, normalizeSamples } from '../../src/format/merge.js';

/** Samples from (timestamp, value bit pattern) pairs. */
function make(pairs: readonly (readonly [bigint, bigint])[]): Samples {
  const ts = new BigInt64Array(pairs.map((p) => p[0]));
  const bits = new BigUint64Array(pairs.map((p) => p[1]));
  return { timestamps: ts, values: new Float64Array(bits.buffer) };
}

function pairsOf(s: Samples): [bigint, bigint][] {
  const bits = new BigUint64Array(s.values.buffer, s.values.byteOffset, s.values.length);
  return [...s.timestamps].map((ts, i) => [ts, bits[i]!]);
}

/** Reference: replay writes in order into a map, then sort. */
function model(parts: readonly (readonly (readonly [bigint, bigint])[])[]): [bigint, bigint][] {
  const m = new Map<bigint, bigint>();
  for (const p of parts) for (const [ts, v] of p) m.set(ts, v);
  return [...m.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

const sample = fc.tuple(fc.bigInt({ min: -20n, max: 20n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }));

t.test('normalizeSamples() sorts and keeps the last of repeated timestamps', (t) => {
  fc.assert(
    fc.property(fc.array(sample, { minLength: 1, maxLength: 40 }), (pairs) => {
      const got = pairsOf(normalizeSamples(make(pairs)));
      t.same(got, model([pairs]));
      return true;
    }),
  );
  const sorted = make([[1n, 1n], [2n, 2n]]);
  t.equal(normalizeSamples(sorted), sorted, 'strictly increasing input is returned as is');
  t.end();
});

t.test('mergeSamples() of sorted parts keeps the newest part on equal timestamps', (t) => {
  fc.assert(
    fc.property(fc.array(fc.array(sample, { maxLength: 30 }), { minLength: 1, maxLength: 5 }), (raw) => {
      const parts = raw.map((p) => model([p])); // each part strictly increasing, like a run
      const merged = mergeSamples(parts.map(make));
      t.ok(isStrictlyIncreasing(merged.timestamps));
      t.same(pairsOf(merged), model(parts));
      return true;
    }),
  );
  t.end();
});

t.test('mergeSamples() table: disjoint, interleaved, overlapping, NaN payloads', (t) => {
  const STALE = 0x7ff0000000000002n;
  const NEG0 = 0x8000000000000000n;
  const cases: { name: string; parts: [bigint, bigint][][]; want: [bigint, bigint][] }[] = [
    { name: 'nothing', parts: [], want: [] },
    { name: 'one part', parts: [[[1n, 1n]]], want: [[1n, 1n]] },
    { name: 'newer after older', parts: [[[1n, 1n]], [[2n, 2n]]], want: [[1n, 1n], [2n, 2n]] },
    { name: 'newer before older', parts: [[[5n, 1n]], [[2n, 2n]]], want: [[2n, 2n], [5n, 1n]] },
    { name: 'interleaved', parts: [[[1n, 1n], [3n, 3n]], [[2n, 2n], [4n, 4n]]], want: [[1n, 1n], [2n, 2n], [3n, 3n], [4n, 4n]] },
    { name: 'overlap: newer wins', parts: [[[1n, 1n], [2n, 2n]], [[2n, STALE]]], want: [[1n, 1n], [2n, STALE]] },
    { name: 'three generations', parts: [[[1n, 1n]], [[1n, NEG0]], [[1n, STALE]]], want: [[1n, STALE]] },
  ];
  for (const c of cases) t.same(pairsOf(mergeSamples(c.parts.map(make))), c.want, c.name);
  t.end();
});
