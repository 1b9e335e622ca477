/**
 * Every timestamp and value layout of a run, one table: each cut at every byte fails with a
 * CorruptionError, reserved layout codes are refused naming the field, NaN payloads of every
 * class, -0 and ±Inf round-trip in every layout at the edges and inside, and blocks of a format
 * version this build does not know are refused.
 */
import t from 'tap';
import fc from 'fast-check';
import { crc32c } from '@node-rs/crc32';
import { CorruptionError, UnsupportedVersionError } from '../../src/errors.js';
import { decodeFooter, encodeFooter, FOOTER_LEN, FooterField, FORMAT_VERSION, OLDEST_FORMAT_VERSION, type Footer } from '../../src/format/footer.js';
import { decodeRun, encodeRun, RUN_LZ4, splitRun, TS_SHARED, type Samples } from '../../src/format/run.js';
import { TS_DOD, TS_GRID, TS_RAW } from '../../src/format/timestamps.js';
import { V_CONST, V_EXCEPTIONS, V_FLOAT, V_NEAR, V_RATIO, V_SCALED } from '../../src/format/values.js';
import { makeSeries, prng, sameSamples } from '../support/series.js';

const N = 300;
const T0 = 1_800_000_000_000n;

function grid(n: number): BigInt64Array {
  return BigInt64Array.from({ length: n }, (_, i) => T0 + BigInt(i) * 15_000n);
}

function setBits(values: Float64Array, i: number, bits: bigint): Float64Array {
  new BigUint64Array(values.buffer, values.byteOffset, values.length)[i] = BigInt.asUintN(64, bits);
  return values;
}

/** Value shapes, one per value layout. */
const SHAPES: Record<string, (n: number) => Float64Array> = {
  constant: (n) => new Float64Array(n).fill(42.5),
  counter: (n) => Float64Array.from({ length: n }, (_, i) => 1e9 + i * 137 + ((i * 7) % 5)),
  decimals: (n) => Float64Array.from({ length: n }, (_, i) => Math.round(Math.sin(i / 10) * 5000) / 100),
  rate300: (n) => Float64Array.from({ length: n }, (_, i) => (1000 + ((i * 7919) % 3001)) / 300),
  ratio: (n) => makeSeries('ratio', n, T0, 3).values,
  float: (n) => makeSeries('float', n, T0, 4).values,
  // CPU seconds summed from 1/100 s ticks: decimals a few ulps off
  near: (n) => {
    const v = new Float64Array(n);
    let acc = 0;
    const r = prng(5);
    for (let i = 0; i < n; i++) v[i] = acc += Math.floor(r() * 40) * 0.01;
    return v;
  },
  // small steps on every other sample: the value deltas are TABLE material
  steps: (n) => {
    const r = prng(6);
    let acc = 0;
    return Float64Array.from({ length: n }, () => (acc += r() < 0.5 ? 0 : Math.floor(r() * 9) - 4));
  },
};

/** Timestamp shapes, one per timestamp layout (and TABLE residuals). */
const CLOCKS: Record<string, (n: number) => BigInt64Array> = {
  grid,
  jitterEveryOther: (n) => {
    const r = prng(7);
    return BigInt64Array.from({ length: n }, (_, i) => T0 + BigInt(i * 15_000 + (r() < 0.5 ? 0 : Math.floor(r() * 11) - 5)));
  },
  // the interval drifts: delta-of-delta is small where grid residuals grow
  drifting: (n) => {
    const r = prng(8);
    let t = T0;
    let d = 10_000;
    return BigInt64Array.from({ length: n }, () => {
      d += Math.floor(r() * 21) - 8;
      return (t += BigInt(d));
    });
  },
  huge: (n) => BigInt64Array.from({ length: n }, (_, i) => -(2n ** 62n) + BigInt(i) * 2n ** 55n),
};

function layoutOf(run: Uint8Array): { ts: number; val: number; lz4: boolean } {
  return { ts: run[0]! & 7, val: (run[0]! >> 3) & 15, lz4: (run[0]! & RUN_LZ4) !== 0 };
}

/** Runs covering every layout, plain, with exceptions, lz4-compressed and with shared timestamps. */
function cases(): { name: string; run: Uint8Array; samples: Samples; shared?: { layout: number; count: number; bytes: Uint8Array } }[] {
  const out: { name: string; run: Uint8Array; samples: Samples; shared?: { layout: number; count: number; bytes: Uint8Array } }[] = [];
  for (const [clock, ts] of Object.entries(CLOCKS)) {
    for (const [shape, make] of Object.entries(SHAPES)) {
      const plain: Samples = { timestamps: ts(N), values: make(N) };
      out.push({ name: `${shape} on ${clock}`, run: encodeRun(plain, { lz4: false }), samples: plain });
      // a stale marker at the end, -0 at the start and a NaN with a payload inside
      const v = make(N);
      setBits(v, N - 1, 0x7ff0000000000002n);
      setBits(v, 0, 0x8000000000000000n);
      setBits(v, 100, 0xfff4000012345678n);
      const exc: Samples = { timestamps: ts(N), values: v };
      out.push({ name: `${shape} with exceptions on ${clock}`, run: encodeRun(exc, { lz4: false }), samples: exc });
    }
  }
  // lz4 pays on a body that repeats itself
  const periodic: Samples = { timestamps: CLOCKS['drifting']!(N), values: Float64Array.from({ length: N }, (_, i) => [0.1, 2.7, 1e300, -3.25][i % 4]!) };
  out.push({ name: 'lz4 body', run: encodeRun(periodic), samples: periodic });
  // values-only runs and their page's timestamp vector
  for (const shape of ['counter', 'float']) {
    const s: Samples = { timestamps: CLOCKS['jitterEveryOther']!(N), values: SHAPES[shape]!(N) };
    const split = splitRun(encodeRun(s, { lz4: false }));
    out.push({ name: `shared timestamps, ${shape}`, run: split.valuesRun, samples: s, shared: { layout: split.layout, count: split.count, bytes: split.timestamps } });
  }
  return out;
}

const ALL = cases();

t.test('the table covers every timestamp and value layout, with and without exceptions, lz4 and shared timestamps', (t) => {
  const ts = new Set(ALL.map((c) => layoutOf(c.run).ts));
  const val = new Set(ALL.map((c) => layoutOf(c.run).val));
  for (const l of [TS_SHARED, TS_GRID, TS_DOD, TS_RAW]) t.ok(ts.has(l), `timestamp layout ${l}`);
  for (const l of [V_CONST, V_SCALED, V_RATIO, V_FLOAT, V_NEAR]) {
    t.ok(val.has(l), `value layout ${l}`);
    t.ok(val.has(l | V_EXCEPTIONS), `value layout ${l} with exceptions`);
  }
  t.ok(ALL.some((c) => layoutOf(c.run).lz4), 'an lz4 body');
  t.end();
});

t.test('every layout round-trips bit for bit', (t) => {
  for (const c of ALL) {
    const shared = c.shared ? { ...c.shared, origin: { object: 'page', offset: 0 } } : null;
    t.ok(sameSamples(decodeRun(c.run, { object: 'x.block', offset: 0 }, shared), c.samples), c.name);
  }
  t.end();
});

t.test('every layout cut at every byte, or with a byte more, fails with CorruptionError (never a wrong value)', (t) => {
  for (const c of ALL) {
    const shared = c.shared ? { ...c.shared, origin: { object: 'page', offset: 0 } } : null;
    let wrong = 0;
    for (let len = 0; len < c.run.length; len++) {
      try {
        decodeRun(c.run.slice(0, len), { object: 'x.block', offset: 0 }, shared);
        wrong++;
      } catch (err) {
        if (!(err instanceof CorruptionError)) throw err;
      }
    }
    const longer = new Uint8Array(c.run.length + 1);
    longer.set(c.run);
    try {
      decodeRun(longer, { object: 'x.block', offset: 0 }, shared);
      wrong++;
    } catch (err) {
      if (!(err instanceof CorruptionError)) throw err;
    }
    t.equal(wrong, 0, `${c.name}: all ${c.run.length} truncations and the extension rejected`);
  }
  // the shared timestamp vector itself, cut at every byte
  const c = ALL.find((x) => x.shared)!;
  let wrong = 0;
  for (let len = 0; len < c.shared!.bytes.length; len++) {
    try {
      decodeRun(c.run, { object: 'x.block', offset: 0 }, { ...c.shared!, bytes: c.shared!.bytes.slice(0, len), origin: { object: 'page', offset: 0 } });
      wrong++;
    } catch (err) {
      if (!(err instanceof CorruptionError)) throw err;
    }
  }
  t.equal(wrong, 0, 'every truncation of a shared timestamp vector rejected');
  t.end();
});

t.test('reserved timestamp and value layout codes are refused with CorruptionError naming the field', (t) => {
  const run = encodeRun({ timestamps: grid(10), values: SHAPES['counter']!(10) }, { lz4: false });
  for (const ts of [4, 5, 6, 7]) {
    const bad = run.slice();
    bad[0] = (bad[0]! & ~7) | ts;
    t.throws(() => decodeRun(bad), { name: 'CorruptionError', message: new RegExp(`unknown timestamp layout ${ts}`) }, `timestamp layout ${ts}`);
  }
  for (const val of [0, 6, 7, V_EXCEPTIONS, V_EXCEPTIONS | 6, V_EXCEPTIONS | 7]) {
    const bad = run.slice();
    bad[0] = (bad[0]! & 7) | (val << 3);
    t.throws(() => decodeRun(bad), { name: 'CorruptionError', message: new RegExp(`unknown value layout ${val}\\b`) }, `value layout ${val}`);
  }
  t.end();
});

const specialBits = fc.oneof(
  // NaN of any sign, quiet or signalling, any payload
  fc.tuple(fc.boolean(), fc.bigInt({ min: 1n, max: 2n ** 52n - 1n })).map(([neg, payload]) => (neg ? 0xfff0000000000000n : 0x7ff0000000000000n) | payload),
  fc.constantFrom(0x7ff0000000000002n, 0x7ff8000000000000n, 0xfff8000000000000n, 0x7ff0000000000001n, 0x7fffffffffffffffn),
  fc.constantFrom(0x8000000000000000n, 0x7ff0000000000000n, 0xfff0000000000000n),
);

t.test('NaN payloads of every class, -0 and ±Inf round-trip in every layout, at the edges and inside (property)', (t) => {
  const shapes = Object.keys(SHAPES);
  fc.assert(
    fc.property(
      fc.constantFrom(...shapes),
      fc.integer({ min: 2, max: 200 }),
      fc.nat({ max: 4 }),
      fc.nat({ max: 4 }),
      fc.array(fc.tuple(fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), specialBits), { maxLength: 12 }),
      fc.array(specialBits, { minLength: 9, maxLength: 9 }),
      (shape, n, lead, tail, inner, edge) => {
        const v = SHAPES[shape]!(n);
        for (let i = 0; i < Math.min(lead, n); i++) setBits(v, i, edge[i]!);
        for (let i = 0; i < Math.min(tail, n); i++) setBits(v, n - 1 - i, edge[4 + i]!);
        for (const [at, bits] of inner) setBits(v, Math.floor(at * n), bits);
        const s = { timestamps: grid(n), values: v };
        return sameSamples(decodeRun(encodeRun(s)), s) && sameSamples(decodeRun(encodeRun(s, { lz4: false })), s);
      },
    ),
    { numRuns: 400, seed: 14 },
  );
  t.end();
});

t.test('exceptions at the very edges: all but one value, and runs of them at both ends, round-trip', (t) => {
  for (const shape of Object.keys(SHAPES)) {
    for (const n of [2, 3, 9, 17, 130]) {
      const all = SHAPES[shape]!(n);
      for (let i = 1; i < n; i++) setBits(all, i, 0x7ff0000000000002n);
      t.ok(sameSamples(decodeRun(encodeRun({ timestamps: grid(n), values: all })), { timestamps: grid(n), values: all }), `${shape}, n=${n}: all but the first stale`);
      const ends = SHAPES[shape]!(n);
      const k = Math.floor(n / 8);
      for (let i = 0; i < k; i++) {
        setBits(ends, i, 0x8000000000000000n);
        setBits(ends, n - 1 - i, 0x7ff0000000000002n);
      }
      t.ok(sameSamples(decodeRun(encodeRun({ timestamps: grid(n), values: ends })), { timestamps: grid(n), values: ends }), `${shape}, n=${n}: ${k} at each end`);
    }
  }
  t.end();
});

function footer(version: number): Footer {
  return {
    version,
    pageCount: 0,
    samples: { offset: 0, length: 0, crc: 0 },
    index: { offset: 0, length: 0, crc: 0 },
    ioi: { offset: 0, length: 0, crc: 0 },
    tenant: 'acme',
    shard: 0,
    numShards: 1,
    seriesCount: 0,
    sampleCount: 0,
    minTime: 0n,
    maxTime: 0n,
    windowStart: 0n,
    windowEnd: 14_400_000n,
    createdAtMs: 0,
    blockId: '00112233445566778899aabbccddeeff',
  };
}

t.test('a block of a format version this build does not know is refused with UnsupportedVersionError naming it', (t) => {
  const good = encodeFooter(footer(FORMAT_VERSION));
  t.equal(decodeFooter(good, 0, FOOTER_LEN, { object: 'b', offset: 0 }).version, FORMAT_VERSION);
  for (const version of [0, OLDEST_FORMAT_VERSION - 1, FORMAT_VERSION + 1, 0xffff]) {
    if (version >= OLDEST_FORMAT_VERSION && version <= FORMAT_VERSION) continue;
    const b = good.slice();
    const dv = new DataView(b.buffer);
    dv.setUint16(FooterField.VERSION, version, true);
    dv.setUint32(FooterField.FOOTER_CRC, crc32c(b.subarray(0, FooterField.FOOTER_CRC)), true);
    t.throws(() => decodeFooter(b, 0, FOOTER_LEN, { object: 'acme/b', offset: 0 }), UnsupportedVersionError, `version ${version}`);
    t.throws(() => decodeFooter(b, 0, FOOTER_LEN, { object: 'acme/b', offset: 0 }), { message: new RegExp(`"acme/b" has format version ${version}; this build reads ${OLDEST_FORMAT_VERSION} to ${FORMAT_VERSION}`) });
  }
  t.end();
});
