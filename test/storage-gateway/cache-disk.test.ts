/**
 * A gateway whose byte-cache disk fills up (a real tmpfs filled with a ballast file): every read is
 * still answered exactly, from the bucket; below cacheMinFreeBytes nothing is written to the cache
 * (so that its commits do not fail: a failed commit costs reads nothing, but nothing is cached); once there is
 * room again reads are cached as before, and the gateway shuts down. lmdb rejects promises of its
 * own when a commit fails anyway; unhandled, they ended the gateway process (kriszyp/lmdb-js#368).
 */
import t from 'tap';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { QueryClient } from '../../src/client/query.js';
import { isLmdbCommitRejection } from '../../src/storage-gateway/cache/lmdb.js';
import { eventually } from '../support/aggregator.js';
import { D, dataSetClock, expected, makeDataSet, mismatches, rgwBucketWith, startTestGateway, testConfig, W0 } from '../support/gateway.js';
import { fill, tmpfs } from '../support/tmpfs.js';

const MiB = 1024 * 1024;

t.test('a full cache disk: reads answered from the bucket and not cached, cached again once there is room', async (t) => {
  const ds = makeDataSet({ seed: 31, n: 120, numShards: 4, windows: 3 });
  const bucketConfig = await rgwBucketWith(t, ds);
  const disk = tmpfs(t, 16 * MiB);
  const gw = await startTestGateway(t, testConfig(bucketConfig, join(disk, 'cache'), { cacheMaxBytes: 64 * MiB, cacheMinFreeBytes: 2 * MiB }));
  const client = new QueryClient({ endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: 4, encoding: 'runs', now: dataSetClock(), dayRequestsAfterMs: null });
  t.teardown(() => client.close());
  const ids = ds.series.map((s) => s.id);
  const want = expected(ds, ids, W0, W0 + 3n * D);
  const read = async (what: string): Promise<void> => {
    const r = await client.query(ds.tenant, ids, { start: W0, end: W0 + 3n * D });
    t.same(mismatches(r.series, want), [], `${what}: exact`);
  };
  const skipped = () => gw.metrics.total('strata_gateway_cache_writes_skipped_total');
  const failures = () => gw.metrics.total('strata_gateway_cache_write_failures_total');
  const gets = () => gw.metrics.total('strata_gateway_s3_gets_total');

  const low = () => gw.metrics.total('strata_gateway_cache_disk_low');
  t.equal(await low(), 0, 'room at start');
  // 1 MiB left: under cacheMinFreeBytes, so no range is written, while the cache's bookkeeping
  // (block rows, pointers, evictions: a few pages a commit) still fits
  const ballast = fill(disk, MiB);
  // the free space is checked every second
  await eventually('the cache to see its disk full', async () => ((await low()) === 1 ? true : null));
  await read('disk full');
  t.ok((await skipped()) > 0, `ranges not cached (${await skipped()})`);
  await read('disk full, again');
  t.equal(await gw.metrics.total('strata_gateway_requests_total', { code: 'INTERNAL' }), 0, 'no read failed');

  rmSync(ballast);
  await eventually('the cache to see room again', async () => ((await low()) === 0 ? true : null));
  const g0 = await gets();
  await eventually('reads cached again once there is room', async () => {
    await read('room again');
    await gw.store.flush();
    const before = await gets();
    await read('cached');
    return (await gets()) === before ? true : null;
  });
  t.ok((await gets()) > g0, 'the reads after the disk had room fetched what was not cached');
  t.equal(await failures(), 0, 'no cache write failed: none was tried on the full disk');
  await gw.shutdown();
  t.pass('shut down');
});

t.test('a cache disk filled to the last byte by another process: the gateway lives on, answers exactly, caches again once there is room, and shuts down in bounded time', async (t) => {
  const ds = makeDataSet({ seed: 32, n: 40, numShards: 2, windows: 2 });
  const bucketConfig = await rgwBucketWith(t, ds);
  const disk = tmpfs(t, 16 * MiB);
  // no free-space floor: the commits of the cache fail (ENOSPC), as when the disk fills between checks
  const gw = await startTestGateway(t, testConfig(bucketConfig, join(disk, 'cache'), { cacheMaxBytes: 64 * MiB, cacheMinFreeBytes: 0 }));
  const client = new QueryClient({ endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: 2, encoding: 'raw', now: dataSetClock(), dayRequestsAfterMs: null });
  t.teardown(() => client.close());
  const ballast = fill(disk);
  const ids = ds.series.map((s) => s.id);
  const want = expected(ds, ids, W0, W0 + 2n * D);
  const read = async (what: string): Promise<void> => {
    const r = await client.query(ds.tenant, ids, { start: W0, end: W0 + 2n * D });
    t.same(mismatches(r.series, want), [], `${what}: exact`);
  };
  await read('first read');
  await read('second read');
  const failures = () => gw.metrics.total('strata_gateway_cache_write_failures_total');
  await eventually('failed cache writes to be counted', async () => ((await failures()) > 0 ? true : null));
  // the commits that failed settle (rejected); once they have, the store is usable again
  await gw.store.flush().catch(() => undefined);
  const failed = await failures();

  // room again: lmdb's later commits succeed, and the ranges are cached
  rmSync(ballast);
  const gets = () => gw.metrics.total('strata_gateway_s3_gets_total');
  await eventually('reads cached again once there is room', async () => {
    await read('room again');
    await gw.store.flush();
    const before = await gets();
    await read('cached');
    return (await gets()) === before ? true : null;
  });
  t.equal(await failures(), failed, 'no cache write failed once there was room');
  const s0 = Date.now();
  await gw.shutdown();
  t.ok(Date.now() - s0 < 30_000, `shut down in ${Date.now() - s0} ms`);
});

t.test('isLmdbCommitRejection() tells lmdb failed commits from anything else', async (t) => {
  const commit = new Error('Commit failed (see commitError for details)');
  commit.stack = `Error: Commit failed\n    at rejectCommit (file:///app/node_modules/lmdb/write.js:612:17)`;
  const cause = Object.assign(new Error('No space left on device'), { code: 28 });
  cause.stack = `Error: No space left on device\n    at Function.<anonymous> (file:///app/node_modules/lmdb/write.js:516:7)`;
  t.ok(isLmdbCommitRejection(commit));
  t.ok(isLmdbCommitRejection(cause));
  t.notOk(isLmdbCommitRejection(new Error('Commit failed (see commitError for details)')), 'not from lmdb');
  t.notOk(isLmdbCommitRejection(Object.assign(new Error('boom'), { code: 'ENOSPC' })), 'not from lmdb either');
  t.notOk(isLmdbCommitRejection('Commit failed'), 'not an error');
});
