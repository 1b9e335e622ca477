/**
 * A RUNS answer is decoded into one pair of arrays for all its blocks. When the range keeps a small part
 * of each run (an hour read from a day block), the series returned must not keep the whole
 * decoded block alive; and what they hold is bit for bit the samples of the range.
 *
 * Run alone: npx tap test/client/assembler-retention.test.ts
 */
import { crc32c } from '@node-rs/crc32';
import t from 'tap';
import { decodeReadResponse, encodeReadResponse } from '../../src/api/read-codec.js';
import { BlockAssembler, mergeSeries } from '../../src/client/block-assembler.js';
import { encodeRun } from '../../src/format/run.js';

const N = 5760; // a day at 15 s
const S = 200;
const DAY0 = 1_700_006_400_000n; // a UTC midnight

t.test('an hour read from day-long runs keeps about an hour of samples alive', async (t) => {
  const ids: bigint[] = [];
  const runs: Uint8Array[] = [];
  const all: { ts: BigInt64Array; vs: Float64Array }[] = [];
  for (let s = 0; s < S; s++) {
    const ts = BigInt64Array.from({ length: N }, (_, i) => DAY0 + BigInt(i * 15_000));
    const vs = Float64Array.from({ length: N }, (_, i) => i * s + 0.5);
    new BigUint64Array(vs.buffer)[300] = 0x7ff0000000000002n; // a stale marker in the range: its bits must come through
    ids.push(BigInt(s * 4));
    runs.push(encodeRun({ timestamps: ts, values: vs }));
    all.push({ ts, vs });
  }
  const meta = Buffer.alloc(S * 16);
  ids.forEach((id, i) => {
    meta.writeBigUInt64LE(id, i * 8);
    meta.writeUInt32LE(runs[i]!.length, S * 8 + i * 4);
    meta.writeUInt32LE(crc32c(runs[i]!), S * 12 + i * 4);
  });
  const msg = encodeReadResponse({ seriesIds: [meta.subarray(0, S * 8)], runLengths: [meta.subarray(S * 8, S * 12)], runCrcs: [meta.subarray(S * 12)], runs });
  const range = { start: DAY0 + 3_600_000n, end: DAY0 + 7_200_000n };
  const asm = new BlockAssembler(ids, 'runs', range, 'day');
  asm.add(decodeReadResponse(msg));
  asm.finish();
  const out = mergeSeries(ids, [asm]);
  const keptBytes = out.reduce((n, s) => n + s.timestamps.byteLength + s.values.byteLength, 0);
  const buffers = new Set<ArrayBufferLike>();
  for (const s of out) buffers.add(s.timestamps.buffer).add(s.values.buffer);
  const held = [...buffers].reduce((n, b) => n + b.byteLength, 0);
  t.equal(keptBytes, S * 240 * 16, 'an hour: 240 samples of each series');
  t.ok(held <= 2 * keptBytes, `${held} bytes held for ${keptBytes} kept (a day of samples: ${S * N * 16})`);
  let wrong = 0;
  out.forEach((s, i) => {
    const from = 240; // 01:00 at 15 s
    const want = all[i]!;
    const ts = Buffer.from(want.ts.buffer, from * 8, 240 * 8);
    const vs = Buffer.from(want.vs.buffer, from * 8, 240 * 8);
    if (!Buffer.from(s.timestamps.buffer, s.timestamps.byteOffset, s.timestamps.byteLength).equals(ts)) wrong++;
    else if (!Buffer.from(s.values.buffer, s.values.byteOffset, s.values.byteLength).equals(vs)) wrong++;
  });
  t.equal(wrong, 0, 'every series exact, bit for bit');
});

t.test('the runs of every block are decoded into one pair of arrays for the whole answer', async (t) => {
  // 3 blocks (4 h each) x 3 series; the range cuts the first and last block; series 8 has no
  // samples in the middle block
  const H4 = 4n * 3_600_000n;
  const ids = [0n, 4n, 8n];
  const want = new Map<bigint, { ts: bigint[]; vs: number[] }>(ids.map((id) => [id, { ts: [], vs: [] }]));
  const range = { start: DAY0 + 3_600_000n, end: DAY0 + 3n * H4 - 3_600_000n };
  const blocks = [0, 1, 2].map((b) => {
    const present = ids.filter((id) => !(id === 8n && b === 1));
    const runs = present.map((id) => {
      const ts = BigInt64Array.from({ length: 960 }, (_, i) => DAY0 + BigInt(b) * H4 + BigInt(i * 15_000));
      const vs = Float64Array.from({ length: 960 }, (_, i) => (i % 7 === 0 ? -0 : Number(id) * 1000 + b * 960 + i + 0.25));
      ts.forEach((x, i) => {
        if (x >= range.start && x < range.end) {
          want.get(id)!.ts.push(x);
          want.get(id)!.vs.push(vs[i]!);
        }
      });
      return encodeRun({ timestamps: ts, values: vs });
    });
    const n = present.length;
    const meta = Buffer.alloc(n * 16);
    present.forEach((id, i) => {
      meta.writeBigUInt64LE(id, i * 8);
      meta.writeUInt32LE(runs[i]!.length, n * 8 + i * 4);
      meta.writeUInt32LE(crc32c(runs[i]!), n * 12 + i * 4);
    });
    const asm = new BlockAssembler(ids, 'runs', range, `block-${b}`);
    asm.add(decodeReadResponse(encodeReadResponse({ seriesIds: [meta.subarray(0, n * 8)], runLengths: [meta.subarray(n * 8, n * 12)], runCrcs: [meta.subarray(n * 12)], runs })));
    asm.finish();
    return asm;
  });
  const out = mergeSeries(ids, blocks);
  t.same(out.map((s) => s.id), ids);
  t.equal(new Set(out.flatMap((s) => [s.timestamps.buffer])).size, 1, 'one timestamp buffer for every series');
  t.equal(new Set(out.flatMap((s) => [s.values.buffer])).size, 1, 'one value buffer for every series');
  const kept = out.reduce((n, s) => n + s.timestamps.length, 0);
  t.equal(kept, 3 * 960 * 3 - 960 - 3 * 2 * 240, 'what the range keeps of every run');
  t.ok(out[0]!.timestamps.buffer.byteLength <= 2 * kept * 8, 'no more than twice what is kept');
  for (const s of out) {
    const w = want.get(s.id)!;
    t.same([...s.timestamps], w.ts, `series ${s.id}: timestamps`);
    t.same(
      [...new BigUint64Array(s.values.buffer, s.values.byteOffset, s.values.length)],
      [...new BigUint64Array(Float64Array.from(w.vs).buffer)],
      `series ${s.id}: value bits (-0 kept)`,
    );
  }
  t.same(mergeSeries([4n, 4n], blocks).map((s) => s.timestamps.length), [out[1]!.timestamps.length, out[1]!.timestamps.length], 'an id asked twice gets the same samples twice');
});

t.test('a run that claims more samples than a run may hold is a malformed response, before anything is sized by it', async (t) => {
  const run = Buffer.from([0, 0x80, 0x80, 0x80, 0x10, 1, 2, 3]); // encoding 0, count 2^25 (uvarint), junk
  const meta = Buffer.alloc(16);
  meta.writeBigUInt64LE(4n, 0);
  meta.writeUInt32LE(run.length, 8);
  meta.writeUInt32LE(crc32c(run), 12);
  const asm = new BlockAssembler([4n], 'runs', { start: 0n, end: 1n << 62n }, 'blk');
  asm.add(decodeReadResponse(encodeReadResponse({ seriesIds: [meta.subarray(0, 8)], runLengths: [meta.subarray(8, 12)], runCrcs: [meta.subarray(12)], runs: [run] })));
  t.throws(() => asm.finish(), { name: 'ResponseFormatError', message: /block blk: a run that claims 33554432 samples/ });
});
