/**
 * BINNED integer sequences (format version 4): the bins, the layout the encoder picks for wide
 * distributions, exact round trips of any sequence the coder accepts (also as running sums), and
 * CorruptionError for cut or damaged ones.
 */
import t from 'tap';
import fc from 'fast-check';
import { BitReader, BitWriter } from '../../src/format/bits.js';
import { CorruptionError } from '../../src/errors.js';
import { decodeRun, encodeRun } from '../../src/format/run.js';
import {
  BIN_MAX_CODE,
  BIN_MAX_T,
  binCount,
  binOf,
  binOffsetBits,
  binStart,
  decodeIntSeq,
  decodeIntSeqSums,
  encodeIntSeq,
  INTSEQ_LIMIT,
  SEQ_TABLE,
} from '../../src/format/intseq.js';
import { prng, sameSamples } from '../support/series.js';

function encode(x: readonly number[]): Uint8Array {
  const w = new BitWriter();
  encodeIntSeq(w, Float64Array.from(x), 0, x.length);
  return w.finish();
}

/** Whether a sequence was written as BINNED: a TABLE header of one symbol. */
function isBinned(bytes: Uint8Array): boolean {
  const r = new BitReader(bytes);
  if (r.read(2) !== SEQ_TABLE) return false;
  r.varBits();
  return r.read(6) === 0;
}

/** Decodes n elements, plainly and as running sums, and checks that the stream is used up. */
function decoded(bytes: Uint8Array, n: number): { plain: number[]; sums: number[] } {
  const out = new Float64Array(n);
  const r = new BitReader(bytes);
  decodeIntSeq(r, out, 0, n);
  r.expectEnd('sequence');
  const sums = new Float64Array(n);
  const r2 = new BitReader(bytes);
  decodeIntSeqSums(r2, sums, 0, n, 7, 1);
  r2.expectEnd('sequence');
  return { plain: Array.from(out), sums: Array.from(sums) };
}

/** Counter increments: a rate of about 400 per scrape, each scrape's rate off by a log-normal factor. */
function increments(n: number, seed: number): number[] {
  const r = prng(seed);
  return Array.from({ length: n }, () => Math.round(400 * Math.exp(0.25 * 2 * (r() + r() + r() - 1.5))));
}

t.test('every distance falls in exactly one bin of each parameter, and the bins cover 0..2^53', (t) => {
  const r = prng(3);
  for (let tt = 0; tt <= BIN_MAX_T; tt++) {
    const zs = [0, 1, 2, 3, 4, 15, 16, 17, 31, 32, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 52, 2 ** 53 - 1];
    for (let i = 0; i < 2000; i++) zs.push(Math.floor(r() * 2 ** Math.floor(r() * 54)));
    let ok = true;
    for (const z of zs) {
      const b = binOf(z, tt);
      const s = binStart(b, tt);
      if (!(b >= 0 && b < binCount(tt) && s <= z && z - s < 2 ** binOffsetBits(b, tt))) ok = false;
    }
    t.ok(ok, `t = ${tt}: start <= z < start + 2^offset bits, bin < ${binCount(tt)}`);
    // consecutive bins tile the line: each starts where the previous one ends
    let tiled = binStart(0, tt) === 0;
    for (let b = 1; b < binCount(tt); b++) if (binStart(b, tt) !== binStart(b - 1, tt) + 2 ** binOffsetBits(b - 1, tt)) tiled = false;
    t.ok(tiled, `t = ${tt}: bins tile 0..2^53`);
    t.equal(binStart(binCount(tt) - 1, tt) + 2 ** binOffsetBits(binCount(tt) - 1, tt), 2 ** 53, `t = ${tt}: the last bin ends at 2^53`);
  }
  t.end();
});

t.test('counter increments take BINNED, smaller than what Rice partitions give, and decode exactly', (t) => {
  const x = increments(960, 1);
  const bytes = encode(x);
  t.ok(isBinned(bytes), 'BINNED layout');
  const bits = (bytes.length * 8) / x.length;
  // the same increments as a run with codes 2 (Rice partitions) for comparison
  const ts = BigInt64Array.from({ length: x.length }, (_, i) => 1_800_000_000_000n + BigInt(i) * 15_000n);
  let acc = 1e6;
  const values = Float64Array.from(x, (d) => (acc += d));
  const v3 = encodeRun({ timestamps: ts, values }, { lz4: false });
  const v2 = encodeRun({ timestamps: ts, values }, { lz4: false, codes: 2 });
  t.ok(v3.length < v2.length, `run ${v3.length} bytes with BINNED, ${v2.length} without (${bits.toFixed(2)} bits per increment)`);
  t.ok(sameSamples(decodeRun(v3), { timestamps: ts, values }), 'the run decodes exactly');
  const got = decoded(bytes, x.length);
  t.same(got.plain, x);
  let s = 7;
  t.same(got.sums, x.map((d) => (s += d)), 'running sums');
  t.end();
});

t.test('a gauge that often keeps its value, and jitter with outliers beyond 64 values, take BINNED', (t) => {
  const r = prng(2);
  const sticky = Array.from({ length: 960 }, () => (r() < 0.35 ? 0 : Math.round((r() + r() + r() - 1.5) * 120)));
  const outliers = Array.from({ length: 960 }, (_, i) => (i % 151 === 7 ? 15_000 : r() < 0.5 ? 0 : Math.floor(r() * 5 + 1) * (r() < 0.5 ? -1 : 1)));
  for (const [name, x] of [['sticky', sticky], ['outliers', outliers]] as const) {
    const bytes = encode(x);
    t.ok(isBinned(bytes), `${name}: BINNED`);
    t.same(decoded(bytes, x.length).plain, x, `${name}: exact`);
  }
  t.end();
});

t.test('any sequence the coder accepts round-trips exactly, as elements and as running sums (property)', (t) => {
  const limit = INTSEQ_LIMIT - 1;
  const element = fc.oneof(
    fc.integer({ min: -1000, max: 1000 }),
    fc.integer({ min: -(2 ** 31), max: 2 ** 31 }),
    fc.double({ min: -limit, max: limit, noNaN: true }).map((v) => Math.trunc(v)),
    fc.constantFrom(0, 1, -1, limit, -limit, 2 ** 32, -(2 ** 32), 2 ** 50),
  );
  fc.assert(
    fc.property(
      fc.array(element, { minLength: 1, maxLength: 400 }),
      fc.integer({ min: 1, max: 1 << 20 }),
      fc.integer({ min: 0, max: 2000 }),
      (sparse, scale, n) => {
        // a dense body with a spread of `scale`, and the arbitrary elements spread through it
        const r = prng(scale + n);
        const x = Array.from({ length: n }, () => Math.round((r() + r() - 1) * scale));
        for (let i = 0; i < sparse.length; i++) x.splice(Math.floor(r() * (x.length + 1)), 0, sparse[i]!);
        const bytes = encode(x);
        const got = decoded(bytes, x.length);
        let s = 7;
        return got.plain.every((v, i) => v === x[i]) && got.sums.every((v, i) => v === (s += x[i]!));
      },
    ),
    { numRuns: 300 },
  );
  t.end();
});

t.test('distances up to 2^53 - 1 (elements at both ends of the coder range) round-trip', (t) => {
  const limit = INTSEQ_LIMIT - 1;
  const r = prng(8);
  const x = Array.from({ length: 500 }, () => Math.round((r() * 2 - 1) * 1000));
  x[10] = limit;
  x[20] = -limit;
  x[30] = limit - 1;
  const bytes = encode(x);
  t.same(decoded(bytes, x.length).plain, x);
  t.end();
});

t.test('BINNED sequences cut at every byte, or with damaged headers, fail with CorruptionError', (t) => {
  const x = increments(300, 4);
  const bytes = encode(x);
  t.ok(isBinned(bytes));
  let allCorrupt = true;
  for (let cut = 0; cut < bytes.length; cut++) {
    try {
      const r = new BitReader(bytes.subarray(0, cut));
      decodeIntSeq(r, new Float64Array(x.length), 0, x.length);
      r.expectEnd('sequence');
      allCorrupt = false;
    } catch (e) {
      if (!(e instanceof CorruptionError)) allCorrupt = false;
    }
  }
  t.ok(allCorrupt, `cut at each of ${bytes.length} bytes: CorruptionError`);

  // headers written by hand: center 0, then the BINNED fields
  const header = (zig: number, tt: number, lo: number, a: number, lengths: (w: BitWriter) => void): Uint8Array => {
    const w = new BitWriter();
    w.write(SEQ_TABLE, 2);
    w.varBits(0);
    w.write(0, 6);
    w.write(zig, 1);
    w.write(tt, 2);
    w.write(lo, 9);
    w.write(a - 1, 6);
    lengths(w);
    // elements: ones (no code of the hand-made tables below starts with a one)
    w.write(0xffffffff, 32);
    w.write(0xffffffff, 32);
    return w.finish();
  };
  const fails = (bytes: Uint8Array, what: RegExp, msg: string): void => {
    t.throws(() => decodeIntSeq(new BitReader(bytes), new Float64Array(4), 0, 4), { name: 'CorruptionError', message: what }, msg);
  };
  const ones = (w: BitWriter): void => {
    w.write(1, 4);
    w.write(1, 1); // step 0
  };
  fails(header(0, 3, binCount(3) - 1, 2, ones), /beyond the 408 of parameter 3/, 'bins past 2^53');
  fails(header(0, 0, 0, 1, ones), /one bin/, 'one bin');
  fails(header(0, 0, 0, 2, (w) => w.write(0, 4)), /first code length 0/, 'first length 0');
  fails(header(0, 0, 0, 2, (w) => w.write(BIN_MAX_CODE + 1, 4)), new RegExp(`first code length ${BIN_MAX_CODE + 1} outside 1\\.\\.${BIN_MAX_CODE}`), 'a first length past BIN_MAX_CODE');
  fails(header(0, 0, 0, 2, (w) => { w.write(BIN_MAX_CODE, 4); w.write(1, 3); }), new RegExp(`code length ${BIN_MAX_CODE + 1} outside 1\\.\\.${BIN_MAX_CODE}`), 'a length past BIN_MAX_CODE');
  fails(header(0, 0, 0, 3, (w) => { w.write(1, 4); w.write(1, 4); w.write(2, 3); }), /run of 2 absent bins reaches its last bin/, 'absent bins to the end');
  fails(header(0, 0, 0, 3, (w) => { w.write(1, 4); w.write(1, 1); w.write(1, 1); }), /prefix code/, 'three codes of one bit');
  fails(header(0, 0, 0, 2, (w) => { w.write(1, 4); w.write(0, 16); }), /token out of range/, 'a length token past 8');
  fails(header(0, 0, 0, 2, (w) => { w.write(2, 4); w.write(1, 1); }), /code that is not in its table/, 'a code not in the table');
  t.end();
});

t.test('runs whose sequences are BINNED keep NaN payloads, -0 and exceptions at their edges, and every cut is a CorruptionError', (t) => {
  const n = 600;
  const ts = BigInt64Array.from({ length: n }, (_, i) => 1_800_000_000_000n + BigInt(i) * 15_000n + BigInt(i % 7 === 3 ? 2 : 0));
  const inc = increments(n, 11);
  let acc = 5e6;
  const values = Float64Array.from(inc, (d) => (acc += d));
  const bits = new BigUint64Array(values.buffer);
  bits[0] = 0x7ff0000000000002n; // Prometheus' stale marker, first
  bits[n - 1] = 0x7ff0000000000002n; // and last
  bits[200] = 0x7ff8000000000001n; // a NaN with a payload inside
  bits[300] = 0xfff0000000000abcn; // a negative NaN with another payload
  values[400] = -0;
  const samples = { timestamps: ts, values };
  const run = encodeRun(samples, { lz4: false });
  t.ok(run.length < encodeRun(samples, { lz4: false, codes: 2 }).length, 'smaller than without BINNED');
  const got = decodeRun(run);
  t.ok(sameSamples(got, samples), 'bit for bit');
  t.equal(new BigUint64Array(got.values.buffer, got.values.byteOffset, n)[200], 0x7ff8000000000001n, 'NaN payload kept');
  t.ok(Object.is(got.values[400], -0), '-0 kept');
  let allCorrupt = true;
  for (let cut = 0; cut < run.length; cut++) {
    try {
      decodeRun(run.subarray(0, cut));
      allCorrupt = false;
    } catch (e) {
      if (!(e instanceof CorruptionError)) allCorrupt = false;
    }
  }
  t.ok(allCorrupt, `cut at each of ${run.length} bytes: CorruptionError`);
  t.end();
});

t.test('arbitrary float bit patterns round-trip through runs with BINNED sequences (property)', (t) => {
  fc.assert(
    fc.property(fc.array(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), { minLength: 1, maxLength: 300 }), fc.integer({ min: 0, max: 3 }), (patterns, style) => {
      // style 0: raw patterns; 1: a counter with the patterns as outliers; 2: small steps; 3: NaN-heavy
      const n = patterns.length;
      const values = new Float64Array(n);
      const bits = new BigUint64Array(values.buffer);
      let acc = 1000;
      for (let i = 0; i < n; i++) {
        if (style === 0) bits[i] = patterns[i]!;
        else if (style === 1) values[i] = i % 17 === 5 ? new Float64Array(new BigUint64Array([patterns[i]!]).buffer)[0]! : (acc += Number(patterns[i]! % 1000n));
        else if (style === 2) values[i] = (acc += Number(patterns[i]! % 7n) - 3) / 100;
        else bits[i] = i % 3 === 0 ? 0x7ff0000000000000n | (patterns[i]! & 0xfffffffffffffn) | 1n : BigInt(i * 1000);
      }
      const ts = BigInt64Array.from({ length: n }, (_, i) => BigInt(i) * 15_000n + BigInt(Number(patterns[i]! % 5n)));
      return sameSamples(decodeRun(encodeRun({ timestamps: ts, values })), { timestamps: ts, values });
    }),
    { numRuns: 300 },
  );
  t.end();
});
