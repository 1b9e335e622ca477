/**
 * The warm read path's pieces: the hot-range layer (HotRangeCache: the store contract through it,
 * checked bytes kept until a write, delete, drop or the budget removes them, never stale bytes),
 * CacheStore.touchBlock, the recency list behind the LRUs, counters counted in memory, raceSignal
 * with a signal aborted already, the executor answering a warm read without waiting (and a cold
 * one with the signal), and, against
 * Ceph RGW, hot hits in the metrics and a damaged cache entry behind a hot copy that is still
 * found and never served.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/storage-gateway/hot.test.ts
 */
import t from 'tap';
import fc from 'fast-check';
import { status } from '@grpc/grpc-js';
import { QueryClient } from '../../src/client/query.js';
import { GrpcError } from '../../src/common/grpc-status.js';
import { createLogger } from '../../src/common/logger.js';
import { openBucket } from '../../src/objstore/index.js';
import { blockKey } from '../../src/format/key.js';
import { BlockDirectory, type BlockAddress } from '../../src/storage-gateway/block-directory.js';
import { HOT_ENTRY_OVERHEAD, HotRangeCache } from '../../src/storage-gateway/cache/hot.js';
import { LmdbCacheStore } from '../../src/storage-gateway/cache/lmdb.js';
import { MemoryCacheStore } from '../../src/storage-gateway/cache/memory.js';
import type { CacheStore, CacheStoreOptions } from '../../src/storage-gateway/cache/store.js';
import { RangeFetcher } from '../../src/storage-gateway/fetcher.js';
import { RecencyMap } from '../../src/storage-gateway/lru.js';
import { raceSignal } from '../../src/storage-gateway/single-flight.js';
import { GatewayMetrics } from '../../src/storage-gateway/metrics.js';
import { BlockReadExecutor, type ReadQuery } from '../../src/storage-gateway/read.js';
import { drain, type Answer } from '../../src/storage-gateway/answers.js';
import { KINDS, makeSeries } from '../support/series.js';
import { cacheStoreContract } from '../support/cache-contract.js';
import { D, expected, mismatches, rgwBucket, startTestGateway, tempDir, testConfig, W0, writeBlock, type SeriesData } from '../support/gateway.js';

const A = 'a'.repeat(32);
const B = 'b'.repeat(32);
const C = 'c'.repeat(32);

function bytes(n: number, fill: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (fill + i * 13) & 0xff;
  return b;
}

t.test('HotRangeCache passes the cache store contract (over memory and over LMDB)', async (t) => {
  t.test('over MemoryCacheStore', async (t) => {
    cacheStoreContract(t, async (_t, opts) => new HotRangeCache(new MemoryCacheStore(opts), 64 * 1024));
  });
  t.test('over LmdbCacheStore', async (t) => {
    cacheStoreContract(t, async (tt, opts) => {
      const s = new HotRangeCache(await LmdbCacheStore.open({ ...opts, dir: tempDir(tt, 'lmdb') }), 64 * 1024);
      tt.teardown(() => s.close());
      return s;
    });
  });
});

t.test('the hot layer keeps checked bytes until a write, delete, drop or its budget removes them', async (t) => {
  const inner = new MemoryCacheStore({ maxBytes: 1 << 20 });
  const hot = new HotRangeCache(inner, 3 * (1000 + HOT_ENTRY_OVERHEAD));
  const src = bytes(1000, 1);
  inner.putRange(A, 0, src);
  hot.add(A, 0, src);
  src[0] = 99;
  t.same(hot.get(A, 0, 1000), bytes(1000, 1), 'add copies the bytes in');
  t.equal(hot.get(A, 0, 1000), hot.get(A, 0, 1000), 'a hit is shared, not copied');
  t.equal(hot.get(A, 0, 999), undefined, 'another length at the same offset is a miss');
  t.equal(hot.block(A)?.get(0, 1000)?.length, 1000, 'per-block lookup');
  t.equal(hot.block(B), undefined);

  // budget: three entries fit; a fourth evicts the least recently used
  hot.add(A, 1000, bytes(1000, 2));
  hot.add(B, 0, bytes(1000, 3));
  t.ok(hot.get(A, 0, 1000), 'A/0 used: now the most recent');
  hot.add(C, 0, bytes(1000, 4));
  t.equal(hot.get(A, 1000, 1000), undefined, 'A/1000, the least recently used, went');
  t.ok(hot.get(A, 0, 1000) && hot.get(B, 0, 1000) && hot.get(C, 0, 1000));
  t.equal(hot.hotCount, 3);
  t.ok(hot.hotBytes <= hot.hotMaxBytes);
  hot.add(C, 1, bytes(hot.hotMaxBytes, 5));
  t.equal(hot.get(C, 1, hot.hotMaxBytes), undefined, 'a range larger than the budget is not kept');
  t.equal(hot.hotCount, 3, '...and evicts nothing');

  // writes, deletes and drops through the store drop the hot copy
  hot.putRange(A, 0, bytes(1000, 6));
  t.equal(hot.get(A, 0, 1000), undefined, 'putRange drops the hot copy');
  hot.deleteRange(B, 0, 1000);
  t.equal(hot.get(B, 0, 1000), undefined, 'deleteRange drops the hot copy');
  t.equal(inner.getRange(B, 0, 1000), undefined, '...and reaches the store');
  hot.add(C, 7, bytes(10, 7));
  hot.dropBlock(C);
  t.equal(hot.get(C, 0, 1000), undefined, 'dropBlock drops every hot range of the block');
  t.equal(hot.get(C, 7, 10), undefined);
  t.equal(hot.hotCount, 0);
  t.equal(hot.hotBytes, 0);

  const off = new HotRangeCache(new MemoryCacheStore({ maxBytes: 1 << 20 }), 0);
  off.add(A, 0, bytes(10, 1));
  t.equal(off.get(A, 0, 10), undefined, 'a budget of 0 keeps nothing');
  t.throws(() => new HotRangeCache(inner, -1), RangeError);
});

t.test('the hot layer never answers with other bytes than were last written', async (t) => {
  const ids = [A, B, C];
  const op = fc.oneof(
    fc.record({ kind: fc.constantFrom('put' as const, 'get' as const, 'hot' as const, 'del' as const), block: fc.integer({ min: 0, max: 2 }), offset: fc.integer({ min: 0, max: 3 }), length: fc.integer({ min: 1, max: 3000 }) }),
    fc.record({ kind: fc.constant('drop' as const), block: fc.integer({ min: 0, max: 2 }), offset: fc.constant(0), length: fc.constant(0) }),
  );
  await fc.assert(
    fc.property(fc.array(op, { maxLength: 80 }), fc.integer({ min: 0, max: 8000 }), (ops, budget) => {
      const hot = new HotRangeCache(new MemoryCacheStore({ maxBytes: 12_000 }), budget);
      const model = new Map<string, Buffer>();
      let fill = 0;
      for (const o of ops) {
        const id = ids[o.block]!;
        const key = `${id}/${o.offset}/${o.length}`;
        if (o.kind === 'put') {
          const b = bytes(o.length, ++fill);
          hot.putRange(id, o.offset, b);
          model.set(key, b);
        } else if (o.kind === 'del') {
          hot.deleteRange(id, o.offset, o.length);
          model.delete(key);
        } else if (o.kind === 'drop') {
          hot.dropBlock(id);
          for (const k of [...model.keys()]) if (k.startsWith(`${id}/`)) model.delete(k);
        } else if (o.kind === 'get') {
          // what the fetcher does: a checked range from the store goes to the hot layer
          const got = hot.getRange(id, o.offset, o.length);
          if (got) {
            if (!got.equals(model.get(key)!)) return false;
            hot.add(id, o.offset, got);
          }
        } else {
          const got = hot.get(id, o.offset, o.length);
          if (got && !got.equals(model.get(key) ?? Buffer.alloc(0))) return false;
        }
        if (hot.hotBytes > budget || hot.hotBytes < 0) return false;
      }
      return true;
    }),
    { numRuns: 200 },
  );
  t.pass('200 random sequences');
});

t.test('touchBlock makes a block the most recently used (memory and LMDB)', async (t) => {
  const stores: [string, (opts: CacheStoreOptions) => Promise<CacheStore>][] = [
    ['memory', async (opts) => new MemoryCacheStore(opts)],
    ['lmdb', async (opts) => LmdbCacheStore.open({ ...opts, dir: tempDir(t, 'lmdb') })],
  ];
  for (const [name, make] of stores) {
    const evicted: string[] = [];
    let clock = 1000;
    const s = await make({ maxBytes: 64 * 1024, now: () => clock++, onEvict: (id) => evicted.push(id) });
    s.putRange(A, 0, bytes(20_000, 1));
    s.putRange(B, 0, bytes(20_000, 2));
    s.touchBlock(A);
    s.touchBlock('f'.repeat(32)); // not cached: no effect
    s.putRange(C, 0, bytes(30_000, 3));
    t.same(evicted, [B], `${name}: B, not the touched A, was the least recently used`);
    t.ok(s.getRange(A, 0, 20_000), `${name}: A kept`);
    await s.close();
  }
});

t.test('RecencyMap keeps entries least recently used first', async (t) => {
  const m = new RecencyMap<string, number>();
  m.set('a', 1);
  m.set('b', 2);
  m.set('c', 3);
  t.same([...m.keys()], ['a', 'b', 'c']);
  t.equal(m.get('a'), 1, 'get does not move');
  t.same(m.oldest(), ['a', 1]);
  t.equal(m.touch('a'), 1);
  t.same([...m.keys()], ['b', 'c', 'a'], 'touch moves to the most recent end');
  t.equal(m.touch('zz'), undefined);
  m.set('b', 20);
  t.same([...m.entries()], [['c', 3], ['a', 1], ['b', 20]], 'set of a present key replaces and moves it');
  t.equal(m.delete('a'), 1);
  t.equal(m.delete('a'), undefined);
  t.same([...m.keys()], ['c', 'b']);
  t.ok(m.has('c'));
  t.equal(m.size, 2);
  m.delete('b');
  m.delete('c');
  t.equal(m.oldest(), undefined);
  m.set('x', 9);
  t.same([...m.keys()], ['x'], 'usable after emptying');
  m.clear();
  t.equal(m.size, 0);
});

t.test('counters counted in memory show on collection, under the same names and labels', async (t) => {
  const m = new GatewayMetrics();
  const hits = m.counted(m.cacheHits, { layer: 'hot_range' });
  t.equal(m.counted(m.cacheHits, { layer: 'hot_range' }), hits, 'one object per label set');
  hits.inc();
  hits.inc(4);
  m.cacheHits.inc({ layer: 'hot_range' }, 2); // prom-client's own inc still adds up
  const served = m.counted(m.samplesServed);
  served.inc(10);
  t.equal(await m.total('strata_gateway_cache_hits_total', { layer: 'hot_range' }), 7);
  t.equal(await m.total('strata_gateway_samples_served_total'), 10);
  hits.inc();
  const text = await m.registry.metrics();
  t.match(text, /strata_gateway_cache_hits_total\{layer="hot_range"\} 8/);
  t.match(text, /strata_gateway_samples_served_total 10/);
  t.equal(await m.total('strata_gateway_cache_hits_total', { layer: 'hot_range' }), 8, 'flushed once, not twice');
});

t.test('raceSignal with a signal aborted already still observes the work it gives up on', async (t) => {
  // a read's signal is made when it first waits, and may be aborted then (deadline passed): the
  // shared work it started (a tail read, a GET) goes on, and may fail after nobody waits for it
  const ac = new AbortController();
  ac.abort(new GrpcError(status.DEADLINE_EXCEEDED, 'too late'));
  let fail!: (e: Error) => void;
  const work = new Promise<number>((_resolve, reject) => {
    fail = reject;
  });
  const seen: unknown[] = [];
  const onUnhandled = (e: unknown): void => void seen.push(e);
  process.on('unhandledRejection', onUnhandled);
  t.teardown(() => process.off('unhandledRejection', onUnhandled));
  await t.rejects(raceSignal(work, ac.signal), /too late/);
  fail(new Error('the cache store was closed meanwhile'));
  await new Promise((r) => setImmediate(r)); // unhandled rejections are reported before the next macrotask
  t.same(seen, [], 'no unhandled rejection');
});

/** 40 series of one block (shard 0 of 1), 8 per index page. */
const SERIES: SeriesData[] = Array.from({ length: 40 }, (_, i) => ({ id: BigInt(500 + i), samples: makeSeries(KINDS[i % KINDS.length]!, 720, W0, 40 + i) }));

/** The samples of a whole answer (made to its end). */
function samplesOf(answer: Answer): number {
  drain(answer);
  return answer.samples;
}

t.test('a warm read is answered without waiting; a cold one waits with the signal', async (t) => {
  const dir = tempDir(t, 'hotfs');
  const bucket = await openBucket({ type: 'filesystem', path: dir });
  t.teardown(() => bucket.close());
  await writeBlock(bucket, 'warm', 0, 1, W0, SERIES, { seriesPerPage: 8 });
  const metrics = new GatewayMetrics();
  const store = new HotRangeCache(new MemoryCacheStore({ maxBytes: 1 << 26 }), 1 << 20);
  const fetcher = new RangeFetcher({ store, hot: store, metrics, coalesce: { maxGapBytes: 1 << 16, maxGetBytes: 1 << 24 } });
  const directory = new BlockDirectory(
    { store, fetcher, metrics, now: Date.now, logger: createLogger({ level: 'silent' }) },
    { suffixBytes: 4096, suffixMaxBytes: 4096, stalenessMs: 60_000, closedStalenessMs: 60_000, maxStaleMs: 0, negativeTtlMs: 1000, uploadGraceMs: 0, openBlocksMaxBytes: 1 << 20, pagesMaxBytes: 1 << 20 },
  );
  const executor = new BlockReadExecutor({ directory, fetcher, metrics }, { maxSamplesPerResponse: 1e6, maxBytesPerResponse: 1 << 26, maxMessageBytes: 1 << 20 });
  const block: BlockAddress = { tenant: 'warm', shard: 0, windowStart: W0, windowEnd: W0 + D, key: blockKey('warm', 0, W0), bucket, scope: 's' };
  const query = (ids: bigint[]): ReadQuery => ({ block, numShards: 1, ids: BigUint64Array.from(ids), start: W0, end: W0 + D, encoding: 'raw' });
  const aborted = (): AbortSignal => {
    const ac = new AbortController();
    ac.abort(new GrpcError(status.DEADLINE_EXCEEDED, 'too late'));
    return ac.signal;
  };

  let asked = 0;
  const cold = executor.readNow(query([510n]), () => {
    asked++;
    return undefined;
  });
  t.ok(cold instanceof Promise, 'cold: a promise');
  t.ok(asked > 0, 'cold: the signal was asked for');
  t.equal(samplesOf(await cold), 720);
  const hotBefore = await metrics.total('strata_gateway_cache_hits_total', { layer: 'hot_range' });
  const rangeBefore = await metrics.total('strata_gateway_cache_hits_total', { layer: 'range' });
  for (let i = 0; i < 2; i++) {
    // the second read takes the run from the byte cache into the hot layer; the third hits it
    asked = 0;
    const warm = executor.readNow(query([510n]), () => {
      asked++;
      return aborted();
    });
    t.notOk(warm instanceof Promise, `warm read ${i + 1}: answered at once`);
    t.equal(asked, 0, `warm read ${i + 1}: no signal made`);
    t.equal(samplesOf(warm as Awaited<typeof warm>), 720);
  }
  t.equal((await metrics.total('strata_gateway_cache_hits_total', { layer: 'hot_range' })) - hotBefore, 1, 'one hot hit');
  t.equal((await metrics.total('strata_gateway_cache_hits_total', { layer: 'range' })) - rangeBefore, 1, 'one byte-cache hit');

  // a read that has to wait is aborted by its signal; the shared GET still fills the cache
  const err = await Promise.resolve(executor.readNow(query([520n]), aborted)).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof GrpcError && err.grpcCode === status.DEADLINE_EXCEEDED, 'a cold read with an aborted signal: rejected with the reason');
  t.equal(samplesOf(await executor.read(query([520n]))), 720, 'the same read without a signal');
});

t.test('against RGW: warm reads hit the hot layer; a damaged cache entry behind a hot copy is still caught', async (t) => {
  const bucketConfig = await rgwBucket(t);
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  await writeBlock(bucket, 'hot', 0, 1, W0, SERIES, { seriesPerPage: 8 });
  const victimIndex = 13;
  const victim = SERIES[victimIndex]!.id;
  // where the runs are (a first gateway), to size the hot layer to about two runs
  const gw0 = await startTestGateway(t, testConfig(bucketConfig, tempDir(t)));
  const addr0 = await gw0.address('hot', 0, W0);
  const open0 = (await gw0.directory.open(addr0))!;
  const pages0 = await gw0.directory.pages(addr0, open0, [0, 1, 2, 3, 4]);
  const maxRun = Math.max(...pages0.map((p) => Math.max(...p.lengths)));
  // the smallest suffix read, so the victim's run is not in it (the block is small enough that the
  // default 64 KiB suffix holds most of it)
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { hotRangesMaxBytes: 2 * (maxRun + HOT_ENTRY_OVERHEAD), suffixBytes: 4096 }));
  t.ok(gw.store instanceof HotRangeCache, 'the store is fronted by the hot layer');
  const store = gw.store as HotRangeCache;
  const q = new QueryClient({ futureHorizonMs: null, endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: 1 });
  t.teardown(() => q.close());
  const ds = { tenant: 'hot', numShards: 1, windows: 1, series: SERIES };
  let bad = 0;
  const read = async (id: bigint): Promise<void> => {
    const r = await q.query('hot', [id], { start: W0, end: W0 + D });
    if (mismatches(r.series, expected(ds, [id], W0, W0 + D)).length > 0) bad++;
  };
  const hits = (layer: string): Promise<number> => gw.metrics.total('strata_gateway_cache_hits_total', { layer });
  await read(victim); // cold
  const rangeBefore = await hits('range');
  await read(victim); // byte cache, checked, into the hot layer
  const gets = await gw.metrics.total('strata_gateway_s3_gets_total');
  t.equal(await hits('hot_range'), 0);
  await read(victim);
  await read(victim);
  t.equal(await hits('hot_range'), 2, 'then hot hits');
  t.equal((await hits('range')) - rangeBefore, 1, 'the byte cache was asked once');
  t.equal(await gw.metrics.total('strata_gateway_s3_gets_total'), gets, 'no GET');

  // damage the victim's run on "disk" (underneath the hot layer)
  const addr = await gw.address('hot', 0, W0);
  const open = (await gw.directory.open(addr))!;
  const page = pages0[Math.floor(victimIndex / 8)]!;
  const e = page.ids.indexOf(victim);
  const at = page.offsets[e]!;
  const len = page.lengths[e]!;
  t.ok(store.get(open.cacheId, at, len), 'the run is hot');
  store.inner.deleteRange(open.cacheId, at, len);
  store.inner.putRange(open.cacheId, at, Buffer.alloc(len, 0xee));
  await read(victim);
  t.equal(await gw.metrics.total('strata_gateway_cache_corrupt_total'), 0, 'the hot copy (checked when it came in) is served');
  // the other runs push the victim out of the hot layer; its next read meets the damaged entry
  for (const s of SERIES) {
    if (s.id === victim) continue;
    await read(s.id);
    await read(s.id);
  }
  t.equal(store.get(open.cacheId, at, len), undefined, 'the victim left the hot layer');
  await read(victim);
  t.equal(await gw.metrics.total('strata_gateway_cache_corrupt_total'), 1, 'the damaged entry is caught, dropped and fetched again');
  await read(victim);
  t.equal(bad, 0, 'every answer exact');
  t.ok(store.hotBytes <= store.hotMaxBytes);
});
