/**
 * A RUNS answer is decoded into one pair of arrays per block. When the range keeps a small part
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
