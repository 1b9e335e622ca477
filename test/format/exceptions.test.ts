import t from 'tap';
import fc from 'fast-check';
import { decodeRun, encodeRun, type Samples } from '../../src/format/run.js';
import { V_CONST, V_EXCEPTIONS, V_FLOAT, V_SCALED } from '../../src/format/values.js';
import { CorruptionError } from '../../src/errors.js';
import { makeSeries, sameSamples } from '../support/series.js';

const STALE = 0x7ff0000000000002n;

/** One representative of every NaN payload class, and the other special values. */
const SPECIALS: readonly bigint[] = [
  STALE, // Prometheus' stale marker
  0x7ff8000000000000n, // canonical quiet NaN
  0xfff8000000000000n, // negative quiet NaN
  0x7ff0000000000001n, // signalling NaN, smallest payload
  0x7ff7ffffffffffffn, // signalling NaN, largest payload
  0x7fffffffffffffffn, // quiet NaN, every payload bit
  0xfff0000000000001n, // negative signalling NaN
  0xfff4000012345678n, // negative signalling NaN with a payload
  0x7ff0000000000000n, // +Inf
  0xfff0000000000000n, // -Inf
  0x8000000000000000n, // -0
  0x0000000000000001n, // smallest subnormal (an outlier among decimals)
  0x3fb999999999999an, // 0.1
];

function valueLayout(run: Uint8Array): number {
  return (run[0]! >> 3) & 15;
}

function grid(n: number, start = 1_800_000_000_000n): BigInt64Array {
  return BigInt64Array.from({ length: n }, (_, i) => start + BigInt(i) * 15_000n);
}

function counter(n: number): Float64Array {
  return Float64Array.from({ length: n }, (_, i) => 1000 + i * 7 + (i % 3));
}

function withValue(values: Float64Array, i: number, bits: bigint): Float64Array {
  const copy = values.slice();
  new BigUint64Array(copy.buffer)[i] = BigInt.asUintN(64, bits);
  return copy;
}

function roundTrips(s: Samples): boolean {
  return sameSamples(decodeRun(encodeRun(s)), s);
}

t.test('a stale marker at the end of a counter costs at most 16 bytes and keeps the compact layout', (t) => {
  for (const n of [120, 960]) {
    const ts = grid(n);
    const plain = encodeRun({ timestamps: ts, values: counter(n) }, { lz4: false });
    const s = { timestamps: ts, values: withValue(counter(n), n - 1, STALE) };
    const stale = encodeRun(s, { lz4: false });
    t.ok(sameSamples(decodeRun(stale), s), `${n} samples round-trip`);
    t.equal(valueLayout(stale), V_EXCEPTIONS | V_SCALED, 'scaled with exceptions');
    t.ok(stale.length - plain.length <= 16, `${n} samples: the marker costs ${stale.length - plain.length} bytes`);
  }
  t.end();
});

t.test('a stale marker at the end of a 2-decimal gauge or a constant keeps their layouts', (t) => {
  const n = 960;
  const gauge = makeSeries('gauge', n, 1_800_000_000_000n, 5);
  const plain = encodeRun(gauge, { lz4: false });
  const s = { timestamps: gauge.timestamps, values: withValue(gauge.values, n - 1, STALE) };
  const run = encodeRun(s, { lz4: false });
  t.ok(sameSamples(decodeRun(run), s));
  t.equal(valueLayout(run) & V_EXCEPTIONS, V_EXCEPTIONS);
  t.ok(run.length - plain.length <= 16, `gauge: ${run.length - plain.length} bytes`);
  const c = { timestamps: grid(n), values: withValue(new Float64Array(n).fill(42), n - 1, STALE) };
  const crun = encodeRun(c, { lz4: false });
  t.ok(sameSamples(decodeRun(crun), c));
  t.equal(valueLayout(crun), V_EXCEPTIONS | V_CONST);
  t.end();
});

t.test('every special value round-trips as an exception at the start, the end and inside a run', (t) => {
  const n = 200;
  const ts = grid(n);
  for (const bits of SPECIALS) {
    for (const at of [0, 1, n / 2, n - 2, n - 1]) {
      const s = { timestamps: ts, values: withValue(counter(n), at, bits) };
      const run = encodeRun(s, { lz4: false });
      t.ok(sameSamples(decodeRun(run), s), `0x${bits.toString(16)} at ${at}`);
    }
    // leading and trailing stretches of exceptions
    let v = counter(n);
    for (let i = 0; i < 5; i++) v = withValue(withValue(v, i, bits), n - 1 - i, bits);
    t.ok(roundTrips({ timestamps: ts, values: v }), `0x${bits.toString(16)} at both edges`);
  }
  t.end();
});

t.test('an outlier among decimals becomes an exception of the scaled layout', (t) => {
  const n = 480;
  const values = Float64Array.from({ length: n }, (_, i) => Math.round(2000 + 30 * Math.sin(i / 9)) / 100);
  values[77] = Math.PI;
  const s = { timestamps: grid(n), values };
  const run = encodeRun(s, { lz4: false });
  t.ok(sameSamples(decodeRun(run), s));
  t.equal(valueLayout(run), V_EXCEPTIONS | V_SCALED);
  t.end();
});

t.test('a value that would make every other step wider becomes an exception: 0.5, 12.25 or pi among integers, a full-precision float among decimals', (t) => {
  const n = 960;
  const integers = Float64Array.from({ length: n }, (_, i) => 1_000_000 + 37 * i + (i % 7));
  const decimals = Float64Array.from({ length: n }, (_, i) => Math.round(2000 + 30 * Math.sin(i / 9)) / 100);
  for (const [name, base] of [['integers', integers], ['2-decimal values', decimals]] as const) {
    const plain = encodeRun({ timestamps: grid(n), values: base }, { lz4: false }).length;
    // 0.7310585786300049 is m/D with D < 2^32, as most doubles are
    for (const odd of [0.5, 12.25, Math.PI, 0.7310585786300049]) {
      for (const at of [0, 480, n - 1]) {
        const s = { timestamps: grid(n), values: withValue(base, at, new BigUint64Array(new Float64Array([odd]).buffer)[0]!) };
        const run = encodeRun(s, { lz4: false });
        t.ok(sameSamples(decodeRun(run), s), `${name}, ${odd} at ${at}: round trip`);
        if (name === 'integers' || !Number.isInteger(odd * 100)) {
          t.equal(valueLayout(run), V_EXCEPTIONS | V_SCALED, `${name}, ${odd} at ${at}: an exception of the scaled layout`);
          // at an edge the exception list alone (10 bytes); inside, also the step it leaves in the layout
          t.ok(run.length - plain <= (at === 480 ? 64 : 16), `${name}, ${odd} at ${at}: ${run.length - plain} bytes more than without it`);
        }
      }
    }
  }
  t.end();
});

t.test('true floats with a few NaNs still round-trip (FLOAT with or without exceptions)', (t) => {
  const f = makeSeries('float', 300, 1_800_000_000_000n, 3);
  const s = { timestamps: f.timestamps, values: withValue(withValue(f.values, 0, STALE), 150, 0x7ff8000000000000n) };
  const run = encodeRun(s);
  t.ok(sameSamples(decodeRun(run), s));
  t.equal(valueLayout(run) & 7, V_FLOAT);
  t.end();
});

t.test('arbitrary bit patterns among regular values round-trip (property)', (t) => {
  const special = fc.oneof(
    fc.constantFrom(...SPECIALS),
    fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    // any NaN: exponent all ones, a non-zero payload, either sign
    fc.tuple(fc.boolean(), fc.bigInt({ min: 1n, max: (1n << 52n) - 1n })).map(([neg, p]) => (neg ? 0xfff0000000000000n : 0x7ff0000000000000n) | p),
  );
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 400 }),
      fc.constantFrom<'counter' | 'gauge' | 'const' | 'float' | 'ratio'>('counter', 'gauge', 'const', 'float', 'ratio'),
      fc.array(fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), special), { maxLength: 60 }),
      (n, kind, patches) => {
        const base = makeSeries(kind, n, 1_800_000_000_000n, n);
        let v = base.values;
        for (const [where, bits] of patches) v = withValue(v, Math.min(n - 1, Math.floor(where * n)), bits);
        return roundTrips({ timestamps: base.timestamps, values: v });
      },
    ),
    { numRuns: 300 },
  );
  t.end();
});

t.test('runs with exceptions cut at every byte, or with a trailing byte, fail with CorruptionError', (t) => {
  const n = 300;
  const cases: Samples[] = [
    { timestamps: grid(n), values: withValue(counter(n), n - 1, STALE) },
    { timestamps: grid(n), values: withValue(withValue(counter(n), 0, 0x8000000000000000n), 10, 0x7ff0000000000000n) },
    { timestamps: grid(n), values: withValue(new Float64Array(n).fill(3.5), 0, 0x7ff4000000000abcn) },
    { timestamps: grid(n), values: withValue(makeSeries('gauge', n, 0n, 8).values, 42, 0x400921fb54442d18n) },
  ];
  for (const s of cases) {
    const run = encodeRun(s, { lz4: false });
    t.ok(valueLayout(run) & V_EXCEPTIONS, 'has exceptions');
    let wrong = 0;
    for (let len = 0; len < run.length; len++) {
      try {
        decodeRun(run.subarray(0, len), { object: 'x.block', offset: 0 });
        wrong++;
      } catch (err) {
        if (!(err instanceof CorruptionError)) throw err;
      }
    }
    t.equal(wrong, 0, `every truncation of the ${run.length}-byte run is rejected`);
    const longer = new Uint8Array(run.length + 1);
    longer.set(run);
    t.throws(() => decodeRun(longer), CorruptionError, 'a trailing byte is rejected');
  }
  t.end();
});

t.test('bad exception lists are rejected with CorruptionError naming what is wrong', (t) => {
  // count byte, entry, then a CONST inner layout of 8 bytes; header: GRID ts of a 2-sample run
  const s = { timestamps: grid(2), values: Float64Array.from([1, 1]) };
  const run = encodeRun(s, { lz4: false });
  // the value section of a CONST run is its last 8 bytes
  const head = run.subarray(0, run.length - 8);
  const tail = run.subarray(run.length - 8);
  const make = (excBytes: number[]): Uint8Array => {
    const b = new Uint8Array(head.length + excBytes.length + 8);
    b.set(head);
    b[0] = (b[0]! & 7) | ((V_EXCEPTIONS | V_CONST) << 3);
    b.set(excBytes, head.length);
    b.set(tail, head.length + excBytes.length);
    return b;
  };
  t.ok(sameSamples(decodeRun(make([1, 8 * 1 + 1])), { timestamps: s.timestamps, values: withValue(Float64Array.from([1, 1]), 1, STALE) }), 'a well-formed list decodes');
  t.throws(() => decodeRun(make([0])), /0 exceptions/);
  t.throws(() => decodeRun(make([2, 1, 1])), /2 exceptions for 2 values/);
  t.throws(() => decodeRun(make([1, 8 * 2 + 1])), /exception index 2 beyond 2/);
  t.throws(() => decodeRun(make([1, 7])), /unknown exception class 7/);
  t.end();
});
