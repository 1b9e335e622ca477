/**
 * A run of a format version 1 block that uses a code version 2 added (shared timestamps, NEAR,
 * exceptions, TABLE sequences) is damage: it is refused with a CorruptionError that names the code
 * and the versions, never decoded. The same runs decode as format version 2, and runs made only of
 * version 1 codes decode the same under both.
 */
import t, { type Test } from 'tap';
import { CorruptionError, ErrorCode } from '../../src/errors.js';
import { decodeRun, decodeRunInto, encodeRun, readRunHeader, splitRun, TS_SHARED, type Samples } from '../../src/format/run.js';
import { TS_GRID } from '../../src/format/timestamps.js';
import { V_EXCEPTIONS, V_NEAR, V_SCALED } from '../../src/format/values.js';
import { prng, sameSamples } from '../support/series.js';

const N = 300;
const T0 = 1_800_000_000_000n;

function grid(n: number, jitter?: (i: number) => number): BigInt64Array {
  return BigInt64Array.from({ length: n }, (_, i) => T0 + BigInt(i) * 15_000n + BigInt(jitter ? jitter(i) : 0));
}

const counter = (n: number): Float64Array => Float64Array.from({ length: n }, (_, i) => 1e9 + i * 137 + ((i * 7) % 5));

/** Asserts that `f` throws a CorruptionError whose message says `what` and names both versions. */
function refused(t: Test, f: () => unknown, what: RegExp, msg: string): void {
  let err: unknown = null;
  try {
    f();
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof CorruptionError, `${msg}: CorruptionError`);
  const m = (err as Error | null)?.message ?? '';
  t.match(m, what, `${msg}: names the code`);
  t.match(m, /format version 2, in a block of format version 1/, `${msg}: names the versions`);
  t.equal((err as CorruptionError | null)?.code, ErrorCode.CORRUPT, `${msg}: data loss class`);
}

t.test('runs with codes of version 2 are refused as version 1, decoded as version 2', (t) => {
  // exceptions: a counter ending in Prometheus' stale marker
  const stale = counter(N);
  new BigUint64Array(stale.buffer)[N - 1] = 0x7ff0000000000002n;
  // NEAR: CPU seconds summed from 1/100 s ticks
  const near = new Float64Array(N);
  for (let i = 0, acc = 0; i < N; i++) near[i] = acc += 0.01 * (1 + (i % 7));
  // TABLE: jitter of -5..5 ms on every other scrape, on plain counter values
  const r = prng(9);
  const jittered = grid(N, () => (r() < 0.5 ? 0 : Math.floor(r() * 5 + 1) * (r() < 0.5 ? -1 : 1)));
  const cases: [string, Samples, RegExp, (run: Uint8Array) => void][] = [
    ['exceptions', { timestamps: grid(N), values: stale }, /value layout \d+ \(exceptions\)/, (run) => t.ok(((run[0]! >> 3) & 15) & V_EXCEPTIONS)],
    ['near', { timestamps: grid(N), values: near }, /value layout 5 \(NEAR\)/, (run) => t.equal((run[0]! >> 3) & 15, V_NEAR)],
    ['table', { timestamps: jittered, values: counter(N) }, /integer sequence layout 3 \(TABLE\)/, (run) => t.equal(run[0]! & 7, TS_GRID)],
  ];
  for (const [name, s, what, layout] of cases) {
    // codes 2: the codes of format versions 2 and 3 (BINNED, of version 4, left out)
    const run = encodeRun(s, { lz4: false, codes: 2 });
    layout(run);
    refused(t, () => decodeRun(run, { object: name, offset: 0 }, null, 1), what, `${name}, decodeRun`);
    const ts = new BigInt64Array(N);
    const vs = new Float64Array(N);
    refused(t, () => decodeRunInto(run, { object: name, offset: 0 }, ts, vs, 0, 1), what, `${name}, decodeRunInto`);
    // the refusal leaves the decoder as it was: version 2 (the default) decodes the same bytes
    t.ok(sameSamples(decodeRun(run), s), `${name} decodes as version 2`);
    t.ok(sameSamples(decodeRun(run, undefined, null, 2), s), `${name} decodes as version 2, explicitly`);
  }
  // shared timestamps
  const own = encodeRun({ timestamps: grid(N), values: counter(N) });
  const split = splitRun(own);
  t.equal(readRunHeader(split.valuesRun).encoding & 7, TS_SHARED);
  const shared = { layout: split.layout, count: split.count, bytes: split.timestamps, origin: { object: 'page', offset: 0 } };
  refused(t, () => decodeRun(split.valuesRun, { object: 'shared', offset: 0 }, shared, 1), /timestamp layout 0 \(shared timestamps\)/, 'shared');
  t.ok(sameSamples(decodeRun(split.valuesRun, undefined, shared), { timestamps: grid(N), values: counter(N) }), 'shared decodes as version 2');
  t.end();
});

t.test('runs of version 1 codes decode the same as version 1 and 2', (t) => {
  // increments over more than TABLE's 64 symbols, so version 2 writes them as version 1 did
  const r = prng(5);
  const wide = new Float64Array(N);
  for (let i = 0, acc = 1e6; i < N; i++) wide[i] = acc += Math.floor(r() * 5000);
  const cases: Samples[] = [
    { timestamps: grid(N), values: wide },
    { timestamps: grid(N, (i) => (i % 10 === 3 ? 4 : 0)), values: Float64Array.from({ length: N }, (_, i) => Math.round(Math.sin(i / 10) * 5000) / 100) },
    { timestamps: grid(N), values: new Float64Array(N).fill(1) },
  ];
  for (const s of cases) {
    // codes 2: BINNED (format version 4) left out, which these increments would take
    const run = encodeRun(s, { codes: 2 });
    t.ok(sameSamples(decodeRun(run, undefined, null, 1), s), 'as version 1');
    t.ok(sameSamples(decodeRun(run, undefined, null, 2), s), 'as version 2');
    t.ok(sameSamples(decodeRun(run), s), 'as version 4');
  }
  t.equal((readRunHeader(encodeRun(cases[0]!, { codes: 2 })).encoding >> 3) & 15, V_SCALED);
  t.end();
});

t.test('a run with a BINNED sequence is refused as format version 1, decoded as versions 2 to 4', (t) => {
  // increments over more than TABLE's 64 symbols: BINNED with codes 3, DENSE with codes 2
  const r = prng(5);
  const wide = new Float64Array(N);
  for (let i = 0, acc = 1e6; i < N; i++) wide[i] = acc += Math.floor(r() * 5000);
  const s = { timestamps: grid(N), values: wide };
  const run = encodeRun(s, { lz4: false });
  t.ok(encodeRun(s, { lz4: false, codes: 2 }).length > run.length, 'BINNED is smaller than what codes 2 write');
  t.throws(() => decodeRun(run, { object: 'b', offset: 0 }, null, 1), { name: 'CorruptionError', message: /integer sequence layout 3 \(TABLE\) is format version 2, in a block of format version 1/ }, 'as version 1');
  // no writer made a TABLE header of one symbol: a block of version 2 or 3 that holds BINNED runs
  // (written by an older build rolled back onto a WAL of this one) still reads
  for (const version of [2, 3, 4]) t.ok(sameSamples(decodeRun(run, undefined, null, version), s), `as version ${version}`);
  t.ok(sameSamples(decodeRun(run), s), 'as the current version, after the refusal');
  t.throws(() => encodeRun(s, { codes: 1 }), { name: 'InvalidArgumentError', message: /codes/ }, 'codes 1 is not a choice');
  t.end();
});
