/**
 * The encoding workers (encode-pool.ts) on real worker threads with their heap limits: a request
 * of many one-sample series (what `strata push` sends of a file sorted by time) is encoded slice
 * by slice, so its objects never hold a worker's heap; errors still name the series by its number
 * in the whole request.
 */
import t from 'tap';
import pino from 'pino';
import { InvalidArgumentError } from '../../src/errors.js';
import { decodeRun } from '../../src/format/run.js';
import { EncodePool, ENCODE_SLICE_SERIES } from '../../src/shard-aggregator/encode-pool.js';
import type { IngestContext, WireSeries } from '../../src/shard-aggregator/ingest.js';

const H = 4 * 3600 * 1000;
const W = 1793491200000; // aligned to 4 h
const ctx: IngestContext = { shard: 0, numShards: 1, blockDurationMs: H, minTimestampMs: W - 10 * H, maxTimestampMs: W + 10 * H, verifyEncoding: false };

/** `n` series of one sample each, ids from `first`, one request buffer (as gRPC hands them out). */
function oneSampleSeries(n: number, first: number): WireSeries[] {
  const buf = Buffer.alloc(16 * n);
  const out: WireSeries[] = [];
  for (let i = 0; i < n; i++) {
    buf.writeBigInt64LE(BigInt(W + (i % 15000)), 16 * i);
    buf.writeDoubleLE((first + i) * 0.25, 16 * i + 8);
    out.push({ id: String(first + i), timestamps: buf.subarray(16 * i, 16 * i + 8), values: buf.subarray(16 * i + 8, 16 * i + 16) });
  }
  return out;
}

t.test('requests of 100,000 one-sample series, four at once on one worker: every run, exact', async (t) => {
  const pool = new EncodePool(1, pino({ level: 'silent' }));
  t.teardown(() => pool.close());
  const n = 100_000;
  const requests = [0, 1, 2, 3].map((k) => oneSampleSeries(n, 1 + k * n));
  const prepared = await Promise.all(requests.map((r) => pool.prepare(r, ctx)));
  prepared.forEach((p, k) => {
    t.equal(p.series, n, `request ${k}: series`);
    t.equal(p.samples, n, `request ${k}: samples`);
    t.equal(p.runs.length, n, `request ${k}: one run per series`);
    let bad = 0;
    p.runs.forEach((r, i) => {
      const id = 1 + k * n + i;
      const d = decodeRun(r.run);
      if (r.id !== BigInt(id) || r.windowStart !== BigInt(W) || d.timestamps.length !== 1 || d.timestamps[0] !== BigInt(W + (i % 15000)) || d.values[0] !== id * 0.25) bad++;
    });
    t.equal(bad, 0, `request ${k}: every run decodes to its sample`);
  });
});

t.test('a malformed series in a later slice rejects the whole request, named by its number in the request', async (t) => {
  const pool = new EncodePool(1, pino({ level: 'silent' }));
  t.teardown(() => pool.close());
  const series = oneSampleSeries(3 * ENCODE_SLICE_SERIES, 1);
  const bad = 2 * ENCODE_SLICE_SERIES + 5;
  const ts = Buffer.alloc(8);
  ts.writeBigInt64LE(BigInt(W + 20 * H));
  series[bad] = { ...series[bad]!, timestamps: ts };
  await t.rejects(pool.prepare(series, ctx), new InvalidArgumentError(`series[${bad}].timestamps`, `sample 0 of series ${bad + 1} at ${W + 20 * H} ms (${new Date(W + 20 * H).toISOString()}) is outside the accepted range [${ctx.minTimestampMs}, ${ctx.maxTimestampMs}] (${new Date(ctx.minTimestampMs).toISOString()} .. ${new Date(ctx.maxTimestampMs).toISOString()})`));
});
