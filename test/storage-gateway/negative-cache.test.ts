/**
 * The directory's negative cache ("no block at this key") is bounded by entries, the oldest misses
 * forgotten first: requests for windows without a block cannot grow it, and a forgotten key costs
 * one more look-up in the bucket, nothing else.
 */
import t from 'tap';
import { createLogger } from '../../src/common/logger.js';
import { blockKey } from '../../src/format/key.js';
import { openBucket } from '../../src/objstore/index.js';
import { BlockDirectory, type BlockAddress } from '../../src/storage-gateway/block-directory.js';
import { HotRangeCache } from '../../src/storage-gateway/cache/hot.js';
import { MemoryCacheStore } from '../../src/storage-gateway/cache/memory.js';
import { RangeFetcher } from '../../src/storage-gateway/fetcher.js';
import { GatewayMetrics } from '../../src/storage-gateway/metrics.js';
import { D, makeDataSet, tempDir, W0, writeDataSet } from '../support/gateway.js';

t.test('the negative cache holds at most negativeMaxEntries keys; the oldest misses go first', async (t) => {
  const ds = makeDataSet({ seed: 71, n: 5, numShards: 1, windows: 1 });
  const bucket = await openBucket({ type: 'filesystem', path: tempDir(t, 'negfs') });
  t.teardown(() => bucket.close());
  await writeDataSet(bucket, ds);
  const now = (): number => Number(W0 + 400n * D); // every window asked for is closed
  const metrics = new GatewayMetrics();
  const store = new HotRangeCache(new MemoryCacheStore({ maxBytes: 1 << 24 }), 1 << 20);
  const fetcher = new RangeFetcher({ store, hot: store, metrics, coalesce: { maxGapBytes: 1 << 16, maxGetBytes: 1 << 24 } });
  const directory = new BlockDirectory(
    { store, fetcher, metrics, now, logger: createLogger({ level: 'silent' }) },
    { suffixBytes: 4096, suffixMaxBytes: 4096, stalenessMs: 60_000, closedStalenessMs: 3_600_000, maxStaleMs: 0, negativeTtlMs: 5_000, uploadGraceMs: 0, openBlocksMaxBytes: 1 << 20, pagesMaxBytes: 1 << 20, negativeMaxEntries: 50 },
  );
  const addr = (w: number): BlockAddress => ({ tenant: ds.tenant, shard: 0, windowStart: W0 + BigInt(w) * D, windowEnd: W0 + BigInt(w + 1) * D, key: blockKey(ds.tenant, 0, W0 + BigInt(w) * D), bucket, scope: 's' });
  const gets = async (): Promise<number> => metrics.total('strata_gateway_s3_gets_total');
  // windows 1..200 have no block
  for (let w = 1; w <= 200; w++) t.equal(await directory.open(addr(w)), null, `window ${w}: no block`);
  t.equal(directory.negativeEntries, 50, 'at most 50 remembered');
  const before = await gets();
  for (let w = 151; w <= 200; w++) await directory.open(addr(w));
  t.equal(await gets(), before, 'the 50 latest misses are answered from the cache');
  await directory.open(addr(1));
  t.equal(await gets(), before + 1, 'an early one was forgotten: looked up again');
  t.equal(directory.negativeEntries, 50, 'still 50');
  t.not(await directory.open(addr(0)), null, 'the window with a block is found');
});
