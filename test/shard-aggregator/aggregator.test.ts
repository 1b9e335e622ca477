/**
 * The aggregator engine in-process, with an injected clock and a filesystem bucket: when windows
 * flush automatically, that re-flushing a WAL whose samples are already in the block (a crash
 * between upload and WAL deletion) changes nothing, and the limits that answer
 * RESOURCE_EXHAUSTED.
 */
import { cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import t, { type Test } from 'tap';
import { BlockReader } from '../../src/block/reader.js';
import { bucketSource } from '../../src/block/source.js';
import { createLogger } from '../../src/common/logger.js';
import { blockKey } from '../../src/format/key.js';
import { FilesystemBucket } from '../../src/objstore/fs.js';
import { Aggregator } from '../../src/shard-aggregator/aggregator.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import type { WireSeries } from '../../src/shard-aggregator/ingest.js';
import { AggregatorMetrics } from '../../src/shard-aggregator/metrics.js';
import { startAggregatorServer } from '../../src/shard-aggregator/server.js';
import { bitsBytes, bitsOf, RawClient, tempDir, tsBytes } from '../support/aggregator.js';

const H = 4 * 3600 * 1000;
const W = 1793491200000; // a window start
const logger = createLogger({ level: 'silent' });

function wire(id: bigint, ts: number[]): WireSeries {
  return { id, timestamps: tsBytes(ts.map(BigInt)), values: bitsBytes(ts.map((x) => bitsOf(x / 1000))) };
}

async function engine(t: Test, dir: string, clock: { now: number }, extra: Record<string, unknown> = {}): Promise<{ agg: Aggregator; bucket: FilesystemBucket }> {
  const config = parseAggregatorConfig({
    walDir: join(dir, 'wal'),
    bucket: { type: 'filesystem', path: join(dir, 'bucket') },
    numShards: 2,
    flushDelayMs: 60_000,
    flushIdleMs: 30_000,
    ...extra,
  });
  const bucket = new FilesystemBucket({ path: join(dir, 'bucket') });
  const agg = await Aggregator.open({ config, bucket, logger, metrics: new AggregatorMetrics(), now: () => clock.now, autoFlush: false });
  t.teardown(() => agg.close());
  return { agg, bucket };
}

t.test('a window flushes by itself only after windowEnd + flushDelayMs and flushIdleMs without writes', async (t) => {
  const clock = { now: W + H + 1000 };
  const { agg, bucket } = await engine(t, tempDir('agg-auto'), clock);
  const end = W + H;
  await agg.write('acme', 0, [wire(2n, [W + 1, W + 2])]);
  await agg.write('acme', 0, [wire(4n, [end + 5])]); // the next window, still current
  const open = () => agg.status().windows.map((w) => `${w.windowStart}:${w.state}`).sort();
  clock.now = end + 60_000 - 1; // idle long enough, delay not over
  await agg.tick();
  t.same(open(), [`${W}:open`, `${end}:open`], 'not before windowEnd + flushDelayMs');
  await agg.write('acme', 0, [wire(6n, [W + 3])]);
  clock.now = end + 60_000 + 10_000; // delay over, last write 10 s ago
  await agg.tick();
  t.same(open(), [`${W}:open`, `${end}:open`], 'not while writes keep coming');
  clock.now = end + 60_000 - 1 + 30_000;
  await agg.tick();
  t.same(open(), [`${end}:open`], 'flushed once idle; the current window stays');
  const r = await BlockReader.open(bucketSource(bucket, blockKey('acme', 0, BigInt(W))));
  t.equal(r.footer.sampleCount, 3);
  t.equal(r.footer.createdAtMs, clock.now, "the block's creation time is the aggregator's clock, not the machine's");
  t.equal(agg.status().lastFlushes[0]?.block?.samples, 3);
});

t.test('a window written more often than flushIdleMs after its end is flushed once its generation is flushMaxDelayMs old; later writes start the next', async (t) => {
  const clock = { now: W + H + 1000 };
  const { agg, bucket } = await engine(t, tempDir('agg-trickle'), clock, { flushMaxDelayMs: 120_000 });
  const end = W + H;
  const gens = () => agg.status().windows.filter((w) => w.windowStart === BigInt(W)).map((w) => w.state);
  // a late sample every 10 s, from the window's end on: never idle for flushIdleMs (30 s)
  let ts = W + 1;
  for (clock.now = end + 1000; clock.now < end + 121_000; clock.now += 10_000) {
    await agg.write('acme', 0, [wire(2n, [ts++])]);
    await agg.tick();
  }
  t.same(gens(), ['open'], 'not flushed while the trickle is younger than flushMaxDelayMs');
  clock.now = end + 121_000; // the generation was made by the first late write, at end + 1 s
  await agg.write('acme', 0, [wire(2n, [ts++])]);
  await agg.tick();
  t.same(gens(), [], 'flushed although writes keep coming');
  const first = await BlockReader.open(bucketSource(bucket, blockKey('acme', 0, BigInt(W))));
  t.equal(first.footer.sampleCount, ts - W - 1, 'every sample written so far');
  clock.now += 10_000;
  await agg.write('acme', 0, [wire(2n, [ts++])]);
  await agg.tick();
  t.same(gens(), ['open'], 'the next write opens the next generation, which waits its own flushMaxDelayMs');
});

t.test('flushing a WAL again after its block was uploaded (crash before deletion) changes nothing', async (t) => {
  const dir = tempDir('agg-reflush');
  const clock = { now: W + H + 1000 };
  let { agg, bucket } = await engine(t, dir, clock);
  const key = { tenant: 'acme', shard: 1, windowStart: BigInt(W) };
  await agg.write('acme', 1, [wire(1n, [W + 1, W + 2, W + 3]), wire(3n, [W + 4])]);
  await agg.write('acme', 1, [wire(1n, [W + 2])]); // overwrite, same value
  await agg.store.sealOpen(key);
  await agg.close();
  const backup = join(dir, 'backup');
  cpSync(join(dir, 'wal'), backup, { recursive: true });
  ({ agg, bucket } = await engine(t, dir, clock));
  const first = await agg.seal('acme', 1, BigInt(W), true); // the recovered, sealed WAL is flushed
  t.equal(first[0]?.samples, 4);
  t.equal(first[0]?.replaced, false);
  await agg.close();
  // as if the process died after the upload, before the WAL was deleted
  rmSync(join(dir, 'wal'), { recursive: true, force: true });
  cpSync(backup, join(dir, 'wal'), { recursive: true });
  ({ agg, bucket } = await engine(t, dir, clock));
  const second = await agg.seal('acme', 1, BigInt(W), true);
  t.equal(second[0]?.replaced, true, 'merged into the existing block');
  t.equal(second[0]?.samples, 4, 'no sample twice');
  t.equal(second[0]?.series, 2);
  const r = await BlockReader.open(bucketSource(bucket, blockKey('acme', 1, BigInt(W))));
  const s1 = await r.readSeries(1n);
  t.same([...s1!.timestamps], [BigInt(W + 1), BigInt(W + 2), BigInt(W + 3)]);
  t.same(agg.status().windows, [], 'WAL gone');
});

/** An aggregator of one shard with an in-flight budget of 20,000 bytes (and `extra` settings), and a client of it. */
async function limitedAggregator(t: Test, name: string, extra: Record<string, unknown> = {}): Promise<RawClient> {
  const dir = tempDir(name);
  const config = parseAggregatorConfig({
    walDir: join(dir, 'wal'),
    bucket: { type: 'filesystem', path: join(dir, 'bucket') },
    numShards: 1,
    grpcListen: '127.0.0.1:0',
    metricsListen: '127.0.0.1:0',
    inflightBytes: 20_000,
    flushIdleMs: 3600_000,
    ...extra,
  });
  const running = await startAggregatorServer({ config, logger, now: () => W + H + 1000 });
  t.teardown(() => running.shutdown());
  await running.ready;
  return new RawClient(t, `127.0.0.1:${running.grpcPort}`);
}

t.test('the in-flight budget charges 1 KiB per series besides 16 bytes per sample; maxSeriesPerRequest', async (t) => {
  const c = await limitedAggregator(t, 'agg-series-charge', { maxSeriesPerRequest: 15 });
  const hdr = { 'x-strata-tenant': 'acme', 'x-strata-shard': '0' };
  const sixteen = { series: Array.from({ length: 16 }, (_, i) => ({ id: String(5000 + i), timestamps: tsBytes([BigInt(W)]), values: bitsBytes([bitsOf(i)]) })) };
  const over = await c.call('Write', sixteen, hdr);
  t.equal(over.err?.code, status.RESOURCE_EXHAUSTED, '16 series, over maxSeriesPerRequest');
  t.match(over.err?.details ?? '', /request holds 16 series, more than maxSeriesPerRequest \(15\); split it/);
  // 8 requests of 15 one-sample series: 240 bytes of samples each, but 15,600 bytes charged, so
  // they do not fit the 20,000 bytes at once (by samples alone all 8 would: 1,920 bytes)
  const small = (k: number) => ({ series: Array.from({ length: 15 }, (_, i) => ({ id: String(1000 + 15 * k + i), timestamps: tsBytes([BigInt(W + k)]), values: bitsBytes([bitsOf(k + i)]) })) });
  const burst = await Promise.all(Array.from({ length: 8 }, (_, k) => c.call('Write', small(k), hdr)));
  const refused = burst.filter((r) => r.err?.code === status.RESOURCE_EXHAUSTED);
  t.ok(refused.length > 0, `${refused.length} of 8 refused`);
  t.match(refused[0]?.err?.details ?? '', /inflightBytes \(20000\) is used up/);
  t.ok(burst.some((r) => r.err === null), 'some accepted');
});

t.test('limits answer RESOURCE_EXHAUSTED: WAL quota (until a flush frees it) and in-flight budget', async (t) => {
  const c = await limitedAggregator(t, 'agg-limits', { walQuotaBytes: 2000 });
  const hdr = { 'x-strata-tenant': 'acme', 'x-strata-shard': '0' };
  const win = W;
  const req = (id: number, n: number) => ({
    series: [{ id: String(id), timestamps: tsBytes(Array.from({ length: n }, (_, i) => BigInt(win + i * 7919))), values: bitsBytes(Array.from({ length: n }, (_, i) => bitsOf(Math.sin(id + i)))) }],
  });
  // in-flight budget: 8 requests of 1000 samples (16 kB) at once, budget 20 kB
  const burst = await Promise.all(Array.from({ length: 8 }, (_, i) => c.call('Write', req(i + 1, 1000), hdr)));
  const refused = burst.filter((r) => r.err?.code === status.RESOURCE_EXHAUSTED);
  t.ok(refused.length > 0, `${refused.length} of 8 refused`);
  t.match(refused[0]?.err?.details ?? '', /inflightBytes \(20000\) is used up/);
  t.ok(burst.some((r) => r.err === null), 'some accepted');
  // quota: the WAL now holds more than 2000 bytes
  const over = await c.call('Write', req(99, 10), hdr);
  t.equal(over.err?.code, status.RESOURCE_EXHAUSTED);
  t.match(over.err?.details ?? '', /walQuotaBytes \(2000\) is used up: the WALs take \d+ bytes on disk/);
  const sealed = await c.call('Seal', { window_start_ms: String(win) }, hdr);
  t.equal(sealed.err, null);
  t.equal((await c.call('Write', req(99, 10), hdr)).err, null, 'accepted again after the flush');
});
