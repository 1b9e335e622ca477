/**
 * The encoders keep scratch arrays between calls (module state, grown on demand). A run's encoding
 * must not depend on what the thread encoded before it: an aggregator's workers start fresh after
 * every restart, and a block rebuilt there must hold what the first build held.
 *
 * This file is its own process, so its first encode sees the scratch arrays at their initial size.
 */
import t from 'tap';
import { checkRunDecodesTo, decodeRun, encodeRun, encodeRunChecked, type Samples } from '../../src/format/run.js';
import { V_EXCEPTIONS, V_SCALED } from '../../src/format/values.js';
import { KINDS, makeSeries, prng, sameSamples } from '../support/series.js';

const STALE = 0x7ff0000000000002n;
const NEG_ZERO = 0x8000000000000000n;

/** A quarter-step counter with a stale marker every `every` samples and -0 every 3·`every`. */
function withSpecials(n: number, every: number): Samples {
  const timestamps = BigInt64Array.from({ length: n }, (_, i) => 1_800_000_000_000n + BigInt(i) * 500n);
  const values = Float64Array.from({ length: n }, (_, i) => 61_000 + i * 0.25);
  const bits = new BigUint64Array(values.buffer);
  for (let i = 3; i < n; i += every) bits[i] = STALE;
  for (let i = 5; i < n; i += 3 * every) bits[i] = NEG_ZERO;
  return { timestamps, values };
}

const bytes = (s: Samples): Buffer => Buffer.from(encodeRun(s, { lz4: false }));

t.test('a run with hundreds of exceptions: the same bytes first thing in a thread and later', (t) => {
  const s = withSpecials(8000, 40); // 267 exceptions, more than the scratch list starts with
  const first = bytes(s);
  t.equal((first[0]! >> 3) & 15, V_EXCEPTIONS | V_SCALED, 'scaled values with exceptions');
  t.ok(first.length < 8000 / 4, `${first.length} bytes for 8,000 samples`);
  t.ok(sameSamples(decodeRun(first), s), 'round-trips bit for bit');
  bytes(withSpecials(20000, 9)); // grows every scratch list well beyond
  t.same(bytes(s), first, 'encoded again after a bigger run: the same bytes');
  t.end();
});

t.test('runs of every kind and length encode to the same bytes in any order', (t) => {
  const rand = prng(7);
  const runs: Samples[] = [];
  for (let i = 0; i < 240; i++) {
    const n = 1 + Math.floor(rand() * (i % 3 === 0 ? 6000 : 400));
    const s = i % 4 === 0 ? withSpecials(n, 10 + Math.floor(rand() * 90)) : makeSeries(KINDS[i % KINDS.length]!, n, 1_800_000_000_000n, i);
    runs.push(s);
  }
  const forward = runs.map(bytes);
  const order = runs.map((_, i) => i).sort(() => rand() - 0.5);
  let differ = 0;
  let wrong = 0;
  for (const i of order) {
    const again = bytes(runs[i]!);
    if (!again.equals(forward[i]!)) differ++;
    if (!sameSamples(decodeRun(again), runs[i]!)) wrong++;
  }
  t.equal(differ, 0, 'no run encodes differently in another order');
  t.equal(wrong, 0, 'every run round-trips');
  t.end();
});

t.test('the codec self-check: a run that does not decode to its samples is named, sample and bits', (t) => {
  const s = withSpecials(500, 40);
  const run = encodeRun(s, { lz4: false });
  t.doesNotThrow(() => checkRunDecodesTo(run, s, 'series 7'), 'the run of the samples passes');
  t.same(encodeRunChecked(s, { lz4: false }, 'series 7'), run, 'encodeRunChecked returns what encodeRun makes');
  // the same samples but one value: its bits differ at sample 123
  const other = { timestamps: s.timestamps, values: s.values.slice() };
  new BigUint64Array(other.values.buffer)[123] = 0x7ff8dead00000001n;
  t.throws(() => checkRunDecodesTo(run, other, 'series 7'), { code: 'ERR_STRATA_INTERNAL', message: /^series 7: the encoded run .* decodes to a different sample 123: .* value bits [0-9a-f]{16}, written \d+ \/ 7ff8dead00000001$/ });
  // a run of fewer samples, and bytes that do not decode at all
  const shorter = { timestamps: s.timestamps.subarray(0, 499), values: s.values.subarray(0, 499) };
  t.throws(() => checkRunDecodesTo(run, shorter, 'series 7'), { code: 'ERR_STRATA_INTERNAL', message: /decodes to 500 samples/ });
  t.throws(() => checkRunDecodesTo(run.subarray(0, run.length - 3), s, 'series 7'), { code: 'ERR_STRATA_INTERNAL', message: /does not decode/ });
  t.end();
});

t.test('the self-check of a run larger than its scratch arrays', (t) => {
  const s = withSpecials(200_000, 97);
  const run = encodeRunChecked(s, { lz4: false }, 'series 9');
  t.ok(sameSamples(decodeRun(run), s), 'a run of 200,000 samples passes and round-trips');
  const other = { timestamps: s.timestamps, values: s.values.slice() };
  new BigUint64Array(other.values.buffer)[150_000] = 0n;
  t.throws(() => checkRunDecodesTo(run, other, 'series 9'), { code: 'ERR_STRATA_INTERNAL', message: /different sample 150000: / });
  t.end();
});

t.test('after a series larger than SCRATCH_KEEP_SAMPLES the scratch is given back, and runs encode the same before and after', async (t) => {
  const { SCRATCH_KEEP_SAMPLES } = await import('../../src/format/bytes.js');
  const small = KINDS.map((kind, i) => makeSeries(kind, 3000, 1_800_000_000_000n, 100 + i));
  const before = small.map(bytes);
  const big = withSpecials(SCRATCH_KEEP_SAMPLES * 4, 1000);
  const bigRun = encodeRunChecked(big, { lz4: false }, 'big');
  t.ok(sameSamples(decodeRun(bigRun), big), 'the large series round-trips');
  t.same(small.map(bytes), before, 'the same bytes after the scratch was shrunk');
  t.same(Buffer.from(encodeRun(big, { lz4: false })), Buffer.from(bigRun), 'and the large one again');
});
