import t, { type Test } from 'tap';
import fc from 'fast-check';
import { BitReader, BitWriter } from '../../src/format/bits.js';
import { decodeIntSeq, encodeIntSeq } from '../../src/format/intseq.js';
import { decodeRun, encodeRun, lz4Run, RUN_LZ4, runTimeRange, type Samples } from '../../src/format/run.js';
import { TS_DOD, TS_GRID, TS_RAW } from '../../src/format/timestamps.js';
import { V_CONST, V_FLOAT, V_RATIO, V_SCALED } from '../../src/format/values.js';
import { CorruptionError, ErrorCode, InvalidArgumentError, StrataError } from '../../src/errors.js';
import { bytesOf, KINDS, makeSeries, prng, sameSamples } from '../support/series.js';

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/** A value given by its bits: [high 32, low 32]. */
type Bits = readonly [number, number];

/**
 * Float64Array of `values`, those given as bits written as bits: a NaN's payload does not survive
 * a trip through a JS number or array (V8 may canonicalize it), only a typed array keeps it.
 */
function f64(values: readonly (number | Bits)[]): Float64Array {
  const out = new Float64Array(values.length);
  const words = new Uint32Array(out.buffer);
  values.forEach((v, i) => {
    if (typeof v === 'number') out[i] = v;
    else {
      words[2 * i] = v[1] >>> 0;
      words[2 * i + 1] = v[0] >>> 0;
    }
  });
  return out;
}

function layout(run: Uint8Array): { ts: number; val: number; lz4: boolean } {
  return { ts: run[0]! & 7, val: (run[0]! >> 3) & 15, lz4: (run[0]! & RUN_LZ4) !== 0 };
}

function roundTrip(t: Test, s: Samples, msg: string): Uint8Array {
  const run = encodeRun(s);
  const back = decodeRun(run);
  t.ok(sameSamples(back, s), msg);
  return run;
}

t.test('BitWriter.rice() and BitReader.rice()/riceBlock() round-trip any value and parameter', (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 52 }), fc.integer({ min: 0, max: 53 }), fc.double({ min: 0, max: 1, noNaN: true })), { minLength: 1, maxLength: 60 }),
      (ops) => {
        const w = new BitWriter(4);
        const vals = ops.map(([k, bits, f]) => {
          const z = Math.min(Math.floor(f * 2 ** bits), Number.MAX_SAFE_INTEGER);
          w.rice(z, k);
          return [k, z] as const;
        });
        const buf = w.finish();
        const r = new BitReader(buf);
        for (const [k, z] of vals) if (r.rice(k) !== z) return false;
        r.expectEnd('test stream');
        const r2 = new BitReader(buf);
        const out = new Float64Array(1);
        for (const [k, z] of vals) {
          r2.riceBlock(out, 0, 1, k, 0, false);
          if (out[0] !== z) return false;
        }
        return true;
      },
    ),
    { numRuns: 400 },
  );
  t.end();
});

t.test('BitReader throws a CorruptionError past the end of the stream', (t) => {
  const w = new BitWriter();
  w.write(5, 3);
  const r = new BitReader(w.finish());
  t.equal(r.read(3), 5);
  r.read(5); // zero padding of the last byte
  t.throws(() => r.read(1), CorruptionError);
  t.end();
});

t.test('encodeIntSeq() round-trips constant, sparse and dense sequences and consumes them exactly', (t) => {
  const shapes: [string, (r: () => number, i: number) => number][] = [
    ['constant', () => 7],
    ['sparse', (r) => (r() < 0.05 ? Math.floor(r() * 20) - 10 : 0)],
    ['dense small', (r) => Math.floor(r() * 50) - 25],
    ['dense with outliers', (r) => (r() < 0.01 ? -(2 ** 40) : Math.floor(r() * 1000))],
    ['limits', (r) => (r() < 0.5 ? 2 ** 51 - 1 : -(2 ** 51) + 1)],
  ];
  for (const [name, gen] of shapes) {
    for (const n of [1, 2, 127, 128, 129, 1000]) {
      const r = prng(n);
      const x = Float64Array.from({ length: n }, (_, i) => gen(r, i));
      const w = new BitWriter();
      encodeIntSeq(w, x, 0, n);
      const bytes = w.finish();
      const br = new BitReader(bytes);
      const out = new Float64Array(n);
      decodeIntSeq(br, out, 0, n);
      br.expectEnd('sequence');
      t.same(Array.from(out), Array.from(x), `${name}, n=${n}`);
    }
  }
  t.end();
});

t.test('encodeRun() round-trips special float values bit for bit', (t) => {
  const specials: (number | Bits)[] = [
    [0x7ff00000, 0x00000002], // Prometheus stale marker
    [0x7ff80000, 0x00000000], // quiet NaN
    [0xfff80000, 0x12345678], // negative NaN with payload
    [0x7ff00000, 0x00000001], // signalling NaN
    -0,
    0,
    Infinity,
    -Infinity,
    Number.MIN_VALUE, // smallest subnormal
    -Number.MIN_VALUE,
    [0x000fffff, 0xffffffff], // largest subnormal
    Number.MAX_VALUE,
    -Number.MAX_VALUE,
    Number.EPSILON,
    2 ** 53,
    -(2 ** 53) - 2,
    0.1,
    1e-300,
  ];
  const n = specials.length;
  const ts = BigInt64Array.from({ length: n }, (_, i) => BigInt(i * 1000));
  roundTrip(t, { timestamps: ts, values: f64(specials) }, 'all specials in one run');
  for (const v of specials) {
    const name = typeof v === 'number' ? (Object.is(v, -0) ? '-0' : String(v)) : `bits ${v[0].toString(16)}:${v[1].toString(16)}`;
    const s = { timestamps: ts.slice(0, 3), values: f64([v, v, v]) };
    const run = roundTrip(t, s, `constant run of ${name}`);
    t.equal(layout(run).val, V_CONST);
    roundTrip(t, { timestamps: ts.slice(0, 3), values: f64([1, v, 2.5]) }, `${name} among decimals`);
  }
  t.end();
});

t.test('encodeRun() round-trips arbitrary bit patterns and int64 timestamps (property)', (t) => {
  const tsArb = fc
    .uniqueArray(fc.bigInt({ min: I64_MIN, max: I64_MAX }), { minLength: 1, maxLength: 300 })
    .map((a) => BigInt64Array.from(a.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0))));
  fc.assert(
    fc.property(tsArb, fc.array(fc.tuple(fc.integer(), fc.integer()), { minLength: 300, maxLength: 300 }), (ts, bits) => {
      const values = f64(Array.from({ length: ts.length }, (_, i): Bits => [bits[i]![0], bits[i]![1]]));
      const s = { timestamps: ts, values };
      return sameSamples(decodeRun(encodeRun(s)), s);
    }),
    { numRuns: 200 },
  );
  // narrow timestamps near the int64 limits use the offset layouts
  for (const base of [I64_MIN, I64_MAX - 10_000_000n, -1n, 0n, 2n ** 32n - 5n]) {
    const ts = BigInt64Array.from({ length: 600 }, (_, i) => base + BigInt(i * 15000 + (i % 7 === 0 ? 3 : 0)));
    const values = Float64Array.from({ length: 600 }, (_, i) => i * 0.25);
    const run = roundTrip(t, { timestamps: ts, values }, `timestamps from ${base}`);
    t.not(layout(run).ts, TS_RAW, `offset layout from ${base}`);
  }
  t.end();
});

t.test('encodeRun() picks the layout by what the data is', (t) => {
  const n = 960;
  const start = 1_795_219_200_000n;
  const grid = BigInt64Array.from({ length: n }, (_, i) => start + BigInt(i * 15000));
  const cases: { name: string; values: Float64Array; val: number }[] = [
    { name: 'constant', values: new Float64Array(n).fill(42.5), val: V_CONST },
    { name: 'integer counter', values: Float64Array.from({ length: n }, (_, i) => 1e9 + i * 137 + (i % 5)), val: V_SCALED },
    { name: '2-decimal gauge', values: Float64Array.from({ length: n }, (_, i) => Math.round(Math.sin(i / 10) * 5000) / 100), val: V_SCALED },
    { name: 'rate over 300 s', values: Float64Array.from({ length: n }, (_, i) => (1000 + ((i * 7919) % 3001)) / 300), val: V_SCALED },
    { name: 'hit ratio', values: makeSeries('ratio', n, start, 3).values, val: V_RATIO },
    { name: 'full-entropy float', values: makeSeries('float', n, start, 4).values, val: V_FLOAT },
  ];
  for (const c of cases) {
    const run = roundTrip(t, { timestamps: grid, values: c.values }, c.name);
    t.equal(layout(run).val, c.val, `${c.name} value layout`);
    t.equal(layout(run).ts, TS_GRID, `${c.name} timestamp layout`);
  }
  const jittered = makeSeries('gauge', n, start, 5);
  const run = roundTrip(t, jittered, 'jittered grid');
  t.equal(layout(run).ts, TS_GRID);
  t.ok(run.length < n * 1.5, `jittered gauge takes ${run.length} bytes for ${n} samples`);
  const irregular = BigInt64Array.from({ length: n }, (_, i) => start + BigInt(i * 1000 + Math.floor(prng(i)() * 997)));
  const irr = roundTrip(t, { timestamps: irregular, values: new Float64Array(n) }, 'irregular timestamps');
  t.ok([TS_DOD, TS_GRID].includes(layout(irr).ts));
  const wide = BigInt64Array.from([I64_MIN, 0n, I64_MAX]);
  t.equal(layout(roundTrip(t, { timestamps: wide, values: new Float64Array(3) }, 'full int64 span')).ts, TS_RAW);
  const gap = grid.slice();
  for (let i = 500; i < n; i++) gap[i] = gap[i]! + 3_600_000n; // an hour without scrapes
  t.equal(layout(roundTrip(t, { timestamps: gap, values: new Float64Array(n) }, 'grid with a gap')).ts, TS_GRID);
  t.end();
});

t.test('long regular constant runs round-trip although they take a few bytes', (t) => {
  for (const n of [1600, 2880, 100_000]) {
    const timestamps = BigInt64Array.from({ length: n }, (_, i) => 1_700_000_000_000n + BigInt(i * 5000));
    const run = roundTrip(t, { timestamps, values: new Float64Array(n).fill(1) }, `${n} samples`);
    t.ok(run.length < 40, `${n} samples in ${run.length} bytes`);
  }
  t.end();
});

t.test('every generated series type round-trips', (t) => {
  for (const kind of KINDS) {
    for (const n of [1, 2, 3, 130, 1000]) roundTrip(t, makeSeries(kind, n, 1_700_000_000_000n, n), `${kind} x ${n}`);
  }
  t.end();
});

t.test('lz4Run() of an lz4-free run is what encodeRun() writes with lz4; runTimeRange() reads count, first and last', (t) => {
  let lz4Seen = 0;
  for (const kind of KINDS) {
    for (const n of [1, 2, 130, 1000, 5000]) {
      const s = makeSeries(kind, n, 1_700_000_000_000n + BigInt(n), n * 7);
      const plain = encodeRun(s, { lz4: false });
      const want = encodeRun(s);
      const got = lz4Run(plain);
      t.equal(Buffer.compare(Buffer.from(got), Buffer.from(want)), 0, `${kind} x ${n}: same bytes`);
      if (got[0]! & RUN_LZ4) lz4Seen++;
      t.same(runTimeRange(plain), { count: n, first: s.timestamps[0], last: s.timestamps[n - 1] }, `${kind} x ${n}: time range`);
      t.same(runTimeRange(want), { count: n, first: s.timestamps[0], last: s.timestamps[n - 1] }, `${kind} x ${n}: time range of the lz4 run`);
    }
  }
  // a periodic high-entropy series: the value codec stores raw floats, lz4 finds the period
  const cycle = [Math.PI * 1e-7, Math.E * 123.456, 1 / 3, Math.SQRT2 * 1e9];
  const periodic: Samples = {
    timestamps: BigInt64Array.from({ length: 2000 }, (_, i) => 1_700_000_000_000n + BigInt(i * 15_000 + ((i * 7919) % 13))),
    values: Float64Array.from({ length: 2000 }, (_, i) => cycle[i % cycle.length]!),
  };
  const packed = lz4Run(encodeRun(periodic, { lz4: false }));
  t.equal(Buffer.compare(Buffer.from(packed), Buffer.from(encodeRun(periodic))), 0, 'periodic: same bytes');
  if (packed[0]! & RUN_LZ4) lz4Seen++;
  t.ok(lz4Seen > 0, `lz4 was kept for ${lz4Seen} runs`);
  t.ok(sameSamples(decodeRun(packed), periodic), 'the lz4 run decodes to the samples');
  t.throws(() => lz4Run(packed), CorruptionError, 'an lz4 run is refused');
  t.end();
});

t.test('encodeRun() rejects malformed input with InvalidArgumentError naming the field', (t) => {
  const bad: [string, Samples, string][] = [
    ['empty', { timestamps: new BigInt64Array(0), values: new Float64Array(0) }, 'samples'],
    ['length mismatch', { timestamps: new BigInt64Array([1n, 2n]), values: new Float64Array(1) }, 'values'],
    ['repeated timestamp', { timestamps: new BigInt64Array([1n, 1n]), values: new Float64Array(2) }, 'timestamps'],
    ['decreasing timestamps', { timestamps: new BigInt64Array([5n, 2n]), values: new Float64Array(2) }, 'timestamps'],
    ['decreasing across int64', { timestamps: new BigInt64Array([I64_MAX, I64_MIN]), values: new Float64Array(2) }, 'timestamps'],
  ];
  for (const [name, s, field] of bad) {
    try {
      encodeRun(s);
      t.fail(`${name}: accepted`);
    } catch (err) {
      t.ok(err instanceof InvalidArgumentError && err.field === field && err.code === ErrorCode.INVALID_ARGUMENT, `${name}: ${(err as Error).message}`);
    }
  }
  t.end();
});

t.test('decodeRun() rejects truncated, extended and garbage input with CorruptionError', (t) => {
  const runs = KINDS.map((k, i) => encodeRun(makeSeries(k, 300, 1_700_000_000_000n, i)));
  runs.push(encodeRun({ timestamps: BigInt64Array.from([I64_MIN, I64_MAX]), values: Float64Array.from([1, 2]) }));
  runs.push(encodeRun({ timestamps: BigInt64Array.from({ length: 400 }, (_, i) => BigInt(i)), values: new Float64Array(400).fill(0.5).map((v, i) => (i % 50 === 0 ? i : v)) }));
  for (const run of runs) {
    for (let len = 0; len < run.length; len++) {
      t.throws(() => decodeRun(run.subarray(0, len), { object: 'x.block', offset: 100 }), CorruptionError, `truncated to ${len} of ${run.length}`);
    }
    const longer = new Uint8Array(run.length + 1);
    longer.set(run);
    longer[run.length] = 0x5a;
    t.throws(() => decodeRun(longer), CorruptionError, `one trailing byte after a ${run.length}-byte run`);
  }
  // random bytes: a typed error or a result, never another exception
  const r = prng(99);
  let decoded = 0;
  for (let i = 0; i < 3000; i++) {
    const buf = Uint8Array.from({ length: 1 + Math.floor(r() * 64) }, () => Math.floor(r() * 256));
    try {
      decodeRun(buf);
      decoded++;
    } catch (err) {
      if (!(err instanceof StrataError)) throw err;
    }
  }
  t.ok(decoded < 3000, `random inputs mostly rejected (${decoded} decoded)`);
  t.end();
});

t.test('corruption errors name the object and an offset inside the run', (t) => {
  const run = encodeRun(makeSeries('gauge', 200, 0n, 1));
  try {
    decodeRun(run.subarray(0, run.length - 3), { object: 'blocks/acme/x.block', offset: 5000 });
    t.fail('expected an error');
  } catch (err) {
    t.ok(err instanceof CorruptionError);
    const e = err as CorruptionError;
    t.equal(e.object, 'blocks/acme/x.block');
    t.ok(e.offset >= 5000 && e.offset <= 5000 + run.length, `offset ${e.offset}`);
    t.match(e.message, /blocks\/acme\/x\.block/);
  }
  t.end();
});

t.test('values are compared bit-exactly, not with ==', (t) => {
  const a = f64([[0x7ff00000, 2]]);
  const b = f64([[0x7ff80000, 0]]);
  t.not(Buffer.compare(bytesOf(a), bytesOf(b)), 0, 'two NaNs with different payloads differ');
  t.end();
});
