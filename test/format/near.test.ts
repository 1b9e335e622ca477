import t from 'tap';
import fc from 'fast-check';
import { decodeRun, encodeRun, type Samples } from '../../src/format/run.js';
import { V_EXCEPTIONS, V_NEAR } from '../../src/format/values.js';
import { CorruptionError } from '../../src/errors.js';
import { sameSamples } from '../support/series.js';

function grid(n: number): BigInt64Array {
  return BigInt64Array.from({ length: n }, (_, i) => 1_800_000_000_000n + BigInt(i) * 15_000n);
}

function valueLayout(run: Uint8Array): number {
  return (run[0]! >> 3) & 15;
}

/** CPU seconds as process-exporter reports them: a float sum of 1/100 s ticks. */
function tickSums(n: number, seed: number): Float64Array {
  const v = new Float64Array(n);
  let acc = seed / 100;
  for (let i = 0; i < n; i++) {
    acc += ((i * 7 + seed) % 13) * 0.01;
    v[i] = acc;
  }
  return v;
}

function bitsOf(v: number): bigint {
  return new BigUint64Array(Float64Array.of(v).buffer)[0]!;
}

function fromBits(b: bigint): number {
  return new Float64Array(BigUint64Array.of(BigInt.asUintN(64, b)).buffer)[0]!;
}

t.test('float sums of decimals take the NEAR layout and round-trip bit for bit', (t) => {
  for (const seed of [0, 1, 7, 99]) {
    const s = { timestamps: grid(480), values: tickSums(480, seed) };
    const run = encodeRun(s, { lz4: false });
    t.ok(sameSamples(decodeRun(run), s), `seed ${seed}`);
    t.equal(valueLayout(run) & 7, V_NEAR, `seed ${seed}: NEAR`);
    t.ok(run.length / 480 < 2.5, `seed ${seed}: ${(run.length / 480).toFixed(2)} bytes/sample`);
  }
  t.end();
});

t.test('NEAR keeps -0, values next to zero and both signs exact', (t) => {
  const base = tickSums(200, 3);
  const values = Float64Array.from(base, (v, i) => (i % 2 ? -v : v));
  values[5] = -0;
  values[6] = 0;
  values[7] = fromBits(1n); // smallest subnormal: one ulp above 0
  values[8] = fromBits(0x8000000000000001n); // one ulp below -0
  const s = { timestamps: grid(200), values };
  t.ok(sameSamples(decodeRun(encodeRun(s)), s));
  t.end();
});

t.test('decimals moved by any few ulps round-trip (property)', (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 9 }),
      fc.array(fc.tuple(fc.integer({ min: -1e9, max: 1e9 }), fc.integer({ min: -40, max: 40 })), { minLength: 1, maxLength: 300 }),
      fc.array(fc.tuple(fc.nat(), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })), { maxLength: 5 }),
      (e, pts, raw) => {
        const values = Float64Array.from(pts, ([m, r]) => fromBits(bitsOf(m / 10 ** e) + BigInt(r)));
        const u = new BigUint64Array(values.buffer);
        for (const [i, b] of raw) u[i % values.length] = b; // arbitrary bit patterns among them
        const s: Samples = { timestamps: grid(values.length), values };
        return sameSamples(decodeRun(encodeRun(s)), s);
      },
    ),
    { numRuns: 300 },
  );
  t.end();
});

t.test('NEAR runs cut at every byte fail with CorruptionError', (t) => {
  const values = tickSums(300, 5);
  new BigUint64Array(values.buffer)[299] = 0x7ff0000000000002n; // and a stale marker at the end
  const run = encodeRun({ timestamps: grid(300), values }, { lz4: false });
  t.equal(valueLayout(run), V_EXCEPTIONS | V_NEAR);
  let wrong = 0;
  for (let len = 0; len < run.length; len++) {
    try {
      decodeRun(run.subarray(0, len));
      wrong++;
    } catch (err) {
      if (!(err instanceof CorruptionError)) throw err;
    }
  }
  t.equal(wrong, 0, `every truncation of the ${run.length}-byte run is rejected`);
  t.end();
});
