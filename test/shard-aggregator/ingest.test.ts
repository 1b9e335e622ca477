/**
 * Request validation and encoding (prepareWrite): every malformed shape names its field, runs are
 * split by window, sorted, deduplicated (last wins) and decode back bit-exactly.
 */
import t from 'tap';
import { InvalidArgumentError } from '../../src/errors.js';
import { decodeRun } from '../../src/format/run.js';
import { countSamples, prepareWrite, type IngestContext, type WireSeries } from '../../src/shard-aggregator/ingest.js';
import { bitsBytes, bitsOf, tsBytes } from '../support/aggregator.js';

const H = 4 * 3600 * 1000;
const W = 1793491200000; // aligned to 4 h
const ctx: IngestContext = { shard: 1, numShards: 4, blockDurationMs: H, minTimestampMs: W - 10 * H, maxTimestampMs: W + 10 * H, verifyEncoding: true };
const s = (id: bigint | string, ts: bigint[], bits: bigint[]): WireSeries => ({ id, timestamps: tsBytes(ts), values: bitsBytes(bits) });
const w = BigInt(W);

t.test('prepareWrite() rejects malformed series, naming the field', async (t) => {
  const good = s(5n, [w], [1n]);
  const cases: { name: string; series: WireSeries[]; field: string; msg: RegExp }[] = [
    { name: 'odd timestamp bytes', series: [good, { id: 5n, timestamps: Buffer.alloc(7), values: Buffer.alloc(8) }], field: 'series[1].timestamps', msg: /7 bytes/ },
    { name: 'odd value bytes', series: [{ id: 5n, timestamps: Buffer.alloc(8), values: Buffer.alloc(9) }], field: 'series[0].values', msg: /9 bytes/ },
    { name: 'length mismatch', series: [{ id: 5n, timestamps: Buffer.alloc(16), values: Buffer.alloc(8) }], field: 'series[0].values', msg: /1 values for 2 timestamps/ },
    { name: 'empty', series: [s(5n, [], [])], field: 'series[0].timestamps', msg: /no samples/ },
    { name: 'other shard', series: [good, s(6n, [w], [1n])], field: 'series[1].id', msg: /belongs to shard 2, not to shard 1/ },
    { name: 'id not a number', series: [s('x', [w], [1n])], field: 'series[0].id', msg: /not an unsigned 64-bit integer/ },
    { name: 'too old', series: [s(5n, [w, w - 11n * BigInt(H)], [1n, 2n])], field: 'series[0].timestamps', msg: /sample 1 .* outside the accepted range/ },
    { name: 'too new', series: [s(5n, [w + 11n * BigInt(H)], [1n])], field: 'series[0].timestamps', msg: /sample 0/ },
    { name: 'huge', series: [s(5n, [-(1n << 63n)], [1n])], field: 'series[0].timestamps', msg: /outside/ },
  ];
  for (const c of cases) {
    await t.rejects(prepareWrite(c.series, ctx), { constructor: InvalidArgumentError, field: c.field, message: c.msg }, c.name);
  }
  t.equal(countSamples([good, s(9n, [w, w + 1n], [1n, 2n])]), 3);
});

t.test('prepareWrite() sorts, keeps the last repeated timestamp, splits by window, keeps bits', async (t) => {
  const NAN = 0x7ff0000000000002n;
  const r = await prepareWrite(
    [
      s(5n, [w + 2n, w + 1n, w + 2n, w - 1n, w + BigInt(H)], [bitsOf(1), NAN, bitsOf(3), bitsOf(-0), bitsOf(Infinity)]),
      s((1n << 64n) - 3n, [w], [bitsOf(9)]), // 2^64 - 3 ≡ 1 (mod 4)
    ],
    ctx,
  );
  t.equal(r.samples, 6, 'samples received');
  t.equal(r.series, 2);
  const runs = r.runs.map((x) => {
    const d = decodeRun(x.run);
    return { window: x.windowStart, id: x.id, ts: [...d.timestamps], bits: [...new BigUint64Array(d.values.buffer, d.values.byteOffset, d.values.length)], samples: x.samples };
  });
  t.same(runs, [
    { window: w - BigInt(H), id: 5n, ts: [w - 1n], bits: [bitsOf(-0)], samples: 1 },
    { window: w, id: 5n, ts: [w + 1n, w + 2n], bits: [NAN, bitsOf(3)], samples: 2 },
    { window: w + BigInt(H), id: 5n, ts: [w + BigInt(H)], bits: [bitsOf(Infinity)], samples: 1 },
    { window: w, id: (1n << 64n) - 3n, ts: [w], bits: [bitsOf(9)], samples: 1 },
  ]);
});

t.test('prepareWrite() handles series longer than its scratch space and many series', async (t) => {
  const n = 100_000;
  const ts = Array.from({ length: n }, (_, i) => w + BigInt(i) * 100n);
  // (irregular values: a 100,000-sample run of a perfectly regular series trips decodeRun's
  // samples-per-byte sanity bound, see the report on src/format/run.ts)
  const r = await prepareWrite([s(1n, ts, ts.map((_, i) => bitsOf(Math.sqrt(i)))), ...Array.from({ length: 300 }, (_, i) => s(BigInt(4 * i + 1), [w], [1n]))], ctx);
  t.equal(r.runs.length, 301);
  t.equal(decodeRun(r.runs[0]!.run).timestamps.length, n);
});
