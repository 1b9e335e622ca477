/**
 * How answers are cut into messages under maxMessageBytes (src/storage-gateway/answers.ts).
 */
import t from 'tap';
import fc from 'fast-check';
import { decodeReadResponse } from '../../src/api/read-codec.js';
import { MESSAGE_OVERHEAD_BYTES, planMessages, RawAnswer, rawMessages, RunsAnswer, runMessages } from '../../src/storage-gateway/answers.js';

t.test('planMessages() keeps every message within the budget and every unit once, in order', async (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 3000 }), { maxLength: 30 }),
      fc.constantFrom([16, 12], [1, 16]),
      fc.integer({ min: 160, max: 20_000 }),
      (sizes, [unit, frag], max) => {
        const plan = planMessages(sizes, unit!, frag!, max);
        if (plan.length === 0) return false;
        const next = sizes.map(() => 0);
        let lastItem = -1;
        for (const msg of plan) {
          let bytes = MESSAGE_OVERHEAD_BYTES;
          for (const f of msg) {
            if (f.item < lastItem || f.from !== next[f.item] || f.to <= f.from) return false;
            next[f.item] = f.to;
            lastItem = f.item;
            bytes += frag! + (f.to - f.from) * unit!;
          }
          if (bytes > max) return false;
        }
        return next.every((n, i) => n === sizes[i]);
      },
    ),
  );
  t.throws(() => planMessages([1], 16, 12, 100), RangeError, 'a budget with no room for one unit');
  t.pass('property holds');
});

t.test('rawMessages() and runMessages() split series across messages as planned', async (t) => {
  const ts = BigInt64Array.from({ length: 100 }, (_, i) => BigInt(i));
  const vs = Float64Array.from({ length: 100 }, (_, i) => i / 3);
  const max = MESSAGE_OVERHEAD_BYTES + 12 + 16 * 40;
  const encoded = rawMessages('ab'.repeat(16), [{ id: 7n, samples: { timestamps: ts, values: vs } }], max);
  t.ok(encoded.every((b) => b.length <= max), 'every message within the budget');
  const msgs = encoded.map(decodeReadResponse);
  t.equal(msgs.length, 3);
  t.equal(msgs[0]!.blockId, 'ab'.repeat(16));
  t.equal(msgs[1]!.blockId, '', 'only the first message names the block');
  t.same(msgs.map((m) => m.sampleCounts.readUInt32LE(0)), [40, 40, 20]);
  t.same(msgs.map((m) => m.seriesIds.readBigUInt64LE(0)), [7n, 7n, 7n]);
  t.equal(Buffer.compare(Buffer.concat(msgs.map((m) => m.values)), Buffer.from(vs.buffer)), 0);
  t.equal(Buffer.compare(Buffer.concat(msgs.map((m) => m.timestamps)), Buffer.from(ts.buffer)), 0);
  const runs = runMessages('', [{ id: 1n, run: Buffer.alloc(10, 1), crc: 5 }, { id: 2n, run: Buffer.alloc(30, 2), crc: 6 }], MESSAGE_OVERHEAD_BYTES + 2 * 16 + 25).map(decodeReadResponse);
  t.same(runs.map((m) => m.runs.length), [25, 15]);
  t.same(runs.map((m) => m.runCrcs.readUInt32LE(0)), [5, 6]);
  const empty = rawMessages('', [], 1 << 20);
  t.equal(empty.length, 1, 'an empty answer is one message');
  t.equal(empty[0]!.length, 0);
});

t.test('firstMessageMaxBytes, known before any message is made, is at least the first message (RAW and RUNS)', async (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.nat(300), { maxLength: 12 }),
      fc.integer({ min: 200, max: 8000 }),
      fc.boolean(),
      fc.boolean(),
      (sizes, max, named, exact) => {
        const blockId = named ? 'ab'.repeat(16) : '';
        const series = sizes.map((n, i) => ({
          id: BigInt(i * 1000 + 1),
          samples: { timestamps: BigInt64Array.from({ length: n }, (_, k) => BigInt(k)), values: Float64Array.from({ length: n }, (_, k) => k) },
        }));
        const total = sizes.reduce((a, b) => a + b, 0);
        // an upper bound of the samples (a run counts all its samples before the cut to the range)
        const raw = new RawAnswer(blockId, series.length, (i) => series[i]!.id, (i) => series[i]!.samples, max, exact ? total : total + 50);
        const rawBound = raw.firstMessageMaxBytes;
        const rawFirst = raw.next()!;
        const runs = new RunsAnswer(blockId, sizes.map((n, i) => ({ id: BigInt(i), run: Buffer.alloc(n, i), crc: i })), null, max);
        const runsBound = runs.firstMessageMaxBytes;
        const runsFirst = runs.next()!;
        return rawFirst.length <= rawBound && rawBound <= max && runsFirst.length <= runsBound && runsBound <= max;
      },
    ),
  );
  const small = new RawAnswer('', 1, () => 1n, () => ({ timestamps: new BigInt64Array(3), values: new Float64Array(3) }), 1 << 20, 3);
  t.equal(small.firstMessageMaxBytes, MESSAGE_OVERHEAD_BYTES + 12 + 3 * 16, 'a small answer: its own size, not the message budget');
  t.equal(new RawAnswer('', 1, () => 1n, () => ({ timestamps: new BigInt64Array(3), values: new Float64Array(3) }), 1 << 20).firstMessageMaxBytes, 1 << 20, 'no bound given: the message budget');
});
