import t from 'tap';
import fc from 'fast-check';
import { BitReader, BitWriter } from '../../src/format/bits.js';
import { decodeIntSeq, decodeIntSeqSums, encodeIntSeq, SEQ_TABLE, TABLE_MAX_SYMBOLS } from '../../src/format/intseq.js';
import { decodeRun, encodeRun } from '../../src/format/run.js';
import { CorruptionError } from '../../src/errors.js';
import { prng, sameSamples } from '../support/series.js';

function encode(x: number[]): Uint8Array {
  const w = new BitWriter();
  encodeIntSeq(w, Float64Array.from(x), 0, x.length);
  return w.finish();
}

/** Scrape jitter on every other scrape: -5..5 ms, half of them 0. */
function jitter(n: number, seed: number): number[] {
  const r = prng(seed);
  return Array.from({ length: n }, () => (r() < 0.5 ? 0 : Math.floor(r() * 5 + 1) * (r() < 0.5 ? -1 : 1)));
}

t.test('jitter residuals take the TABLE layout at under 3 bits each and decode exactly', (t) => {
  const x = jitter(960, 1);
  const bytes = encode(x);
  t.equal(bytes[0]! >> 6, SEQ_TABLE, 'TABLE layout');
  t.ok((bytes.length * 8) / x.length < 3, `${((bytes.length * 8) / x.length).toFixed(2)} bits per element`);
  const out = new Float64Array(x.length);
  const r = new BitReader(bytes);
  decodeIntSeq(r, out, 0, x.length);
  r.expectEnd('sequence');
  t.same(Array.from(out), x);
  const sums = new Float64Array(x.length);
  const r2 = new BitReader(bytes);
  decodeIntSeqSums(r2, sums, 0, x.length, 100, 4);
  let acc = 100;
  t.same(Array.from(sums), x.map((v) => (acc += v) / 4), 'running sums');
  t.end();
});

t.test('any sequence in a small range round-trips through the cheapest layout (property)', (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
      fc.integer({ min: 1, max: TABLE_MAX_SYMBOLS + 2 }),
      fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 700 }),
      (base, range, us) => {
        // skewed: small offsets far more common than large ones
        const x = us.map((u) => base + Math.floor(u * u * u * range));
        const bytes = encode(x);
        const out = new Float64Array(x.length);
        const r = new BitReader(bytes);
        decodeIntSeq(r, out, 0, x.length);
        r.expectEnd('sequence');
        return out.every((v, i) => v === x[i]);
      },
    ),
    { numRuns: 400 },
  );
  t.end();
});

t.test('TABLE sequences cut at every byte, or with garbage tables, fail with CorruptionError', (t) => {
  const x = jitter(500, 2);
  const bytes = encode(x);
  t.equal(bytes[0]! >> 6, SEQ_TABLE);
  for (let len = 0; len < bytes.length; len++) {
    t.throws(() => {
      const r = new BitReader(bytes.subarray(0, len));
      decodeIntSeq(r, new Float64Array(x.length), 0, x.length);
      r.expectEnd('sequence');
    }, CorruptionError, `cut to ${len} bytes`);
  }
  // code lengths that over-fill the code space: layout 3, min 0, 2 symbols of length 1, 1 and then a third... use 3 symbols of length 1
  const w = new BitWriter();
  w.write(SEQ_TABLE, 2);
  w.varBits(0);
  w.write(2, 6); // 3 symbols
  for (let s = 0; s < 3; s++) w.write(1, 4);
  w.write(0, 8);
  t.throws(() => decodeIntSeq(new BitReader(w.finish()), new Float64Array(4), 0, 4), /do not form a prefix code/);
  t.end();
});

t.test('runs on a jittered grid round-trip with TABLE residuals', (t) => {
  const r = prng(5);
  let ts = 1_800_000_000_000n;
  const timestamps = BigInt64Array.from({ length: 960 }, () => (ts += 15_000n) + BigInt(r() < 0.5 ? Math.floor(r() * 11) - 5 : 0));
  const s = { timestamps, values: Float64Array.from({ length: 960 }, (_, i) => i) };
  t.ok(sameSamples(decodeRun(encodeRun(s)), s));
  t.end();
});
