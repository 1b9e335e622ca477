import t from 'tap';
import fc from 'fast-check';
import { BitReader, BitWriter } from '../../src/format/bits.js';
import { decodeIntSeq, decodeIntSeqSparse, decodeIntSeqSums, encodeIntSeq } from '../../src/format/intseq.js';
import { crc32c } from '@node-rs/crc32';
import { checkRunInto } from '../../src/block/reader.js';
import { decodeRun, decodeRunInto, encodeRun, MAX_RUN_SAMPLES, readRunHeader, splitRun, type Samples } from '../../src/format/run.js';
import { CorruptionError, InvalidArgumentError } from '../../src/errors.js';
import { bytesOf, KINDS, makeSeries, prng, sameSamples } from '../support/series.js';

const ORIGIN = { object: 'blocks/acme/into.block', offset: 4096 };

/** Runs of every layout: each generated kind, lz4, DOD and RAW timestamps, a constant grid. */
function someRuns(): Uint8Array[] {
  const runs = KINDS.flatMap((k, i) => [1, 2, 130, 960].map((n) => encodeRun(makeSeries(k, n, 1_700_000_000_000n + BigInt(i), i * 10 + n))));
  const n = 600;
  const repeating = Float64Array.from({ length: n }, (_, i) => [Math.PI, Math.E, Math.SQRT2][i % 3]!);
  runs.push(encodeRun({ timestamps: BigInt64Array.from({ length: n }, (_, i) => BigInt(i * 10)), values: repeating }));
  const r = prng(3);
  let t0 = 2n ** 32n - 3_000_000n;
  const irregular = BigInt64Array.from({ length: n }, () => (t0 += BigInt(1 + Math.floor(r() * 100_000))));
  runs.push(encodeRun({ timestamps: irregular, values: Float64Array.from({ length: n }, (_, i) => i) }));
  runs.push(encodeRun({ timestamps: BigInt64Array.from([-(2n ** 63n), 0n, 2n ** 63n - 1n]), values: Float64Array.from([1, -0, NaN]) }));
  runs.push(encodeRun({ timestamps: BigInt64Array.from({ length: 2000 }, (_, i) => BigInt(i * 5000)), values: new Float64Array(2000).fill(7) }));
  return runs;
}

t.test('decodeRunInto() decodes runs back to back into one allocation, as decodeRun() does', (t) => {
  const runs = someRuns();
  t.ok(runs.some((run) => run[0]! & 0x80), 'an lz4 run is among them');
  const counts = runs.map((run) => readRunHeader(run).count);
  const total = counts.reduce((a, b) => a + b, 0);
  const ts = new BigInt64Array(total + 10).fill(-1n);
  const vs = new Float64Array(total + 10).fill(-1);
  let off = 5;
  for (const [i, run] of runs.entries()) {
    const n = decodeRunInto(run, ORIGIN, ts, vs, off);
    t.equal(n, counts[i], `run ${i}: returns its sample count`);
    const got = { timestamps: ts.subarray(off, off + n), values: vs.subarray(off, off + n) };
    t.ok(sameSamples(got, decodeRun(run, ORIGIN)), `run ${i}: same samples as decodeRun()`);
    off += n;
  }
  t.same(Array.from(ts.subarray(0, 5)), [-1n, -1n, -1n, -1n, -1n], 'nothing written before the offset');
  t.same(Array.from(ts.subarray(off)), Array(5).fill(-1n), 'nothing written after the last run');
  t.same(Array.from(vs.subarray(0, 5)), [-1, -1, -1, -1, -1]);
  t.same(Array.from(vs.subarray(off)), Array(5).fill(-1));
  // earlier runs are still intact after later ones were decoded (no shared scratch leaks out)
  let at = 5;
  for (const [i, run] of runs.entries()) {
    const n = counts[i]!;
    t.ok(sameSamples({ timestamps: ts.subarray(at, at + n), values: vs.subarray(at, at + n) }, decodeRun(run)), `run ${i} intact`);
    at += n;
  }
  t.end();
});

t.test('decodeRunInto() round-trips arbitrary samples at any offset (property)', (t) => {
  const tsArb = fc
    .uniqueArray(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), { minLength: 1, maxLength: 200 })
    .map((a) => BigInt64Array.from(a.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0))));
  fc.assert(
    fc.property(tsArb, fc.nat(20), fc.integer({ min: 0, max: 3 }), (timestamps, offset, shape) => {
      const n = timestamps.length;
      const values = Float64Array.from({ length: n }, (_, i) => [i * 0.25, 42, Math.sin(i) * 1e6, i % 2 ? NaN : -0][shape]!);
      const s: Samples = { timestamps, values };
      const ts = new BigInt64Array(offset + n);
      const vs = new Float64Array(offset + n);
      const got = decodeRunInto(encodeRun(s), ORIGIN, ts, vs, offset);
      return got === n && sameSamples({ timestamps: ts.subarray(offset), values: vs.subarray(offset) }, s);
    }),
    { numRuns: 200 },
  );
  t.end();
});

t.test('decodeRunInto() rejects arrays without room and bad offsets, leaving the arrays alone', (t) => {
  const run = encodeRun(makeSeries('gauge', 100, 0n, 1));
  const cases: [string, BigInt64Array, Float64Array, number, string][] = [
    ['short timestamps', new BigInt64Array(99), new Float64Array(100), 0, 'timestamps'],
    ['short values', new BigInt64Array(100), new Float64Array(99), 0, 'values'],
    ['offset leaves no room', new BigInt64Array(120), new Float64Array(120), 21, 'timestamps'],
    ['negative offset', new BigInt64Array(120), new Float64Array(120), -1, 'offset'],
    ['fractional offset', new BigInt64Array(120), new Float64Array(120), 0.5, 'offset'],
  ];
  for (const [name, ts, vs, offset, field] of cases) {
    ts.fill(3n);
    vs.fill(3);
    t.throws(() => decodeRunInto(run, ORIGIN, ts, vs, offset), InvalidArgumentError, name);
    try {
      decodeRunInto(run, ORIGIN, ts, vs, offset);
    } catch (err) {
      t.equal((err as InvalidArgumentError).field, field, `${name}: names ${field}`);
    }
    t.ok(ts.every((x) => x === 3n) && vs.every((x) => x === 3), `${name}: arrays untouched`);
  }
  t.equal(decodeRunInto(run, ORIGIN, new BigInt64Array(120), new Float64Array(120), 20), 100, 'exactly enough room');
  t.end();
});

t.test('decodeRunInto() throws the same corruption errors as decodeRun()', (t) => {
  const runs = someRuns().filter((_, i) => i % 3 === 0);
  let checked = 0;
  for (const run of runs) {
    const bad: Uint8Array[] = [];
    for (let len = 0; len < run.length; len += Math.max(1, run.length >> 5)) bad.push(run.subarray(0, len));
    const longer = new Uint8Array(run.length + 1);
    longer.set(run);
    bad.push(longer);
    for (let bit = 0; bit < Math.min(run.length * 8, 400); bit += 3) {
      const flipped = run.slice();
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      bad.push(flipped);
    }
    for (const buf of bad) {
      let expected: unknown = null;
      try {
        decodeRun(buf, ORIGIN);
      } catch (err) {
        expected = err;
      }
      if (!(expected instanceof CorruptionError)) continue;
      let n = 1;
      try {
        n = readRunHeader(buf).count;
      } catch {
        // the header itself is damaged: decodeRunInto fails on it before looking at the arrays
      }
      try {
        decodeRunInto(buf, ORIGIN, new BigInt64Array(n + 3), new Float64Array(n + 3), 3);
        t.fail('corrupt run accepted');
      } catch (err) {
        checked++;
        if (!(err instanceof CorruptionError) || err.message !== expected.message || err.offset !== expected.offset || err.object !== ORIGIN.object) {
          t.fail(`different error: ${(err as Error).message} vs ${expected.message}`);
        }
      }
    }
  }
  t.ok(checked > 100, `${checked} corrupt runs give decodeRun()'s error`);
  t.end();
});

t.test('decodeIntSeqSums() gives the running sums of what decodeIntSeq() reads, with the same errors', (t) => {
  const shapes: [string, (r: () => number) => number][] = [
    ['constant', () => 7],
    ['sparse', (r) => (r() < 0.05 ? Math.floor(r() * 20) - 10 : 0)],
    ['dense small', (r) => Math.floor(r() * 50) - 25],
    ['dense with outliers', (r) => (r() < 0.01 ? -(2 ** 40) : Math.floor(r() * 1000))],
    ['wide', (r) => Math.floor(r() * 2 ** 45) - 2 ** 44],
  ];
  for (const [name, gen] of shapes) {
    for (const n of [1, 2, 127, 128, 129, 1000]) {
      const r = prng(n);
      const x = Float64Array.from({ length: n }, () => gen(r));
      const w = new BitWriter();
      encodeIntSeq(w, x, 0, n);
      const bytes = w.finish().slice();
      for (const [acc0, div] of [[0, 1], [12345, 100], [-3, 300]] as const) {
        const want = new Float64Array(n);
        let acc = acc0;
        for (let i = 0; i < n; i++) {
          acc = x[i]! + acc;
          want[i] = acc / div;
        }
        const out = new Float64Array(n + 2);
        const br = new BitReader(bytes);
        const last = decodeIntSeqSums(br, out, 2, n, acc0, div);
        br.expectEnd('sequence');
        t.equal(last, acc, `${name}, n=${n}, div=${div}: last sum`);
        t.equal(Buffer.compare(bytesOf(out.subarray(2)), bytesOf(want)), 0, `${name}, n=${n}, div=${div}: sums`);
      }
      // truncated: the same error as decodeIntSeq
      for (const len of [0, bytes.length >> 1, bytes.length - 1]) {
        if (len >= bytes.length) continue;
        const errOf = (f: () => void): string => {
          try {
            f();
            return 'ok';
          } catch (err) {
            return (err as Error).message;
          }
        };
        const cut = bytes.subarray(0, len);
        const a = errOf(() => decodeIntSeq(new BitReader(cut), new Float64Array(n), 0, n));
        const b = errOf(() => decodeIntSeqSums(new BitReader(cut), new Float64Array(n), 0, n, 0, 1));
        t.equal(b, a, `${name}, n=${n}, truncated to ${len}`);
      }
    }
  }
  t.end();
});

t.test('decodeIntSeqSparse() returns constant and sparse sequences as base and exceptions', (t) => {
  const n = 500;
  const x = Float64Array.from({ length: n }, (_, i) => (i % 50 === 3 ? i : -2));
  const w = new BitWriter();
  encodeIntSeq(w, x, 0, n);
  const seq = decodeIntSeqSparse(new BitReader(w.finish()), new Float64Array(n), 0, n);
  t.ok(seq, 'sparse');
  t.equal(seq!.base, -2);
  t.same(Array.from(seq!.idx.subarray(0, seq!.count)), Array.from({ length: 10 }, (_, e) => e * 50 + 3));
  t.same(Array.from(seq!.val.subarray(0, seq!.count)), Array.from({ length: 10 }, (_, e) => e * 50 + 3));
  const dense = Float64Array.from({ length: n }, (_, i) => i * 3);
  const w2 = new BitWriter();
  encodeIntSeq(w2, dense, 0, n);
  const out = new Float64Array(n);
  t.equal(decodeIntSeqSparse(new BitReader(w2.finish()), out, 0, n), null, 'dense: decoded into out');
  t.same(Array.from(out), Array.from(dense));
  t.end();
});

t.test('BitReader.shared() leaves readers made with new BitReader() alone', (t) => {
  const w = new BitWriter();
  for (let i = 0; i < 3000; i++) w.rice(i % 97, 3);
  const bytes = w.finish().slice();
  const own = new BitReader(bytes);
  for (let i = 0; i < 1000; i++) t.equal(own.rice(3), i % 97) || t.bailout('mismatch');
  // decoding runs reuses the shared word buffer, with streams both longer and shorter
  for (const n of [10, 5000]) decodeRun(encodeRun(makeSeries('float', n, 0n, n)));
  for (let i = 1000; i < 3000; i++) if (own.rice(3) !== i % 97) t.fail(`value ${i}`);
  own.expectEnd('stream');
  const shared = BitReader.shared(bytes, 0, bytes.length);
  let ok = true;
  for (let i = 0; i < 3000; i++) if (shared.rice(3) !== i % 97) ok = false;
  shared.expectEnd('stream');
  t.ok(ok, 'a shared reader reads the same stream');
  t.end();
});

t.test('riceBlock() and riceSums() with k >= 31 detect a stream that ends early', (t) => {
  for (const k of [31, 40, 52]) {
    const w = new BitWriter();
    // quotient 0: with k = 31 a value fills the 32-bit window and is decoded inline
    for (let i = 0; i < 4; i++) w.rice(i, k);
    const bytes = w.finish().slice(0, -2);
    t.throws(() => new BitReader(bytes).riceBlock(new Float64Array(4), 0, 4, k, 0, false), CorruptionError, `riceBlock k=${k}`);
    t.throws(() => new BitReader(bytes).riceSums(new Float64Array(4), 0, 4, k, 0, true, 0, 1), CorruptionError, `riceSums k=${k}`);
  }
  t.end();
});

t.test('decodeRunInto() decodes a run whose timestamps its index page shares, as decodeRun() does', (t) => {
  const r = prng(11);
  for (const [i, kind] of KINDS.entries()) {
    const s = makeSeries(kind, 300 + i, 1_700_000_000_000n, i);
    const split = splitRun(encodeRun(s));
    const shared = { layout: split.layout, count: split.count, bytes: split.timestamps, origin: ORIGIN };
    const off = Math.floor(r() * 10);
    const ts = new BigInt64Array(off + split.count);
    const vs = new Float64Array(off + split.count);
    t.equal(decodeRunInto(split.valuesRun, ORIGIN, ts, vs, off, undefined, shared), split.count, `${kind}: its count`);
    t.ok(sameSamples({ timestamps: ts.subarray(off), values: vs.subarray(off) }, decodeRun(split.valuesRun, ORIGIN, shared)), `${kind}: the samples of decodeRun()`);
    t.throws(() => decodeRunInto(split.valuesRun, ORIGIN, ts, vs, off), CorruptionError, `${kind}: refused without the shared vector`);
    t.throws(() => decodeRunInto(split.valuesRun, ORIGIN, ts, vs, off, undefined, { ...shared, count: split.count - 1 }), /refers to/, `${kind}: refused with a vector of another length`);
    t.throws(() => decodeRunInto(encodeRun(s), ORIGIN, ts, vs, off, undefined, shared), /shares a vector/, `${kind}: a run with its own timestamps refuses a shared vector`);
  }
  t.end();
});

t.test('checkRunInto() checks a run against its index entry into a scratch it grows, and refuses one that disagrees', (t) => {
  const scratch = { timestamps: new BigInt64Array(0), values: new Float64Array(0) };
  const s = makeSeries(KINDS[0]!, 500, 1_700_000_000_000n, 1);
  const run = encodeRun(s);
  const loc = { id: 7n, page: 0, entry: 0, offset: 100, length: run.length, sampleCount: 500, minTime: s.timestamps[0]!, maxTime: s.timestamps[499]!, crc: crc32c(run), timestamps: null };
  checkRunInto('b.block', loc, run, scratch);
  t.ok(scratch.timestamps.length >= 500, 'grown to the run');
  t.ok(sameSamples({ timestamps: scratch.timestamps.subarray(0, 500), values: scratch.values.subarray(0, 500) }, s), 'holds the samples');
  const grown = scratch.timestamps;
  checkRunInto('b.block', loc, run, scratch);
  t.equal(scratch.timestamps, grown, 'kept for the next run');
  for (const [what, bad] of [
    ['fewer samples', { ...loc, sampleCount: 499 }],
    ['more samples', { ...loc, sampleCount: 501 }],
    ['another first time', { ...loc, minTime: loc.minTime + 1n }],
    ['another last time', { ...loc, maxTime: loc.maxTime - 1n }],
    ['more samples than a run may hold (not allocated)', { ...loc, sampleCount: MAX_RUN_SAMPLES * 64 }],
  ] as const) {
    t.throws(() => checkRunInto('b.block', bad, run, { timestamps: new BigInt64Array(0), values: new Float64Array(0) }), { name: 'CorruptionError', message: /series 7 disagrees with its index entry/ }, `an entry with ${what}`);
  }
  t.throws(() => checkRunInto('b.block', { ...loc, crc: loc.crc ^ 1 }, run, scratch), /checksum mismatch/, 'a damaged run');
  t.end();
});
