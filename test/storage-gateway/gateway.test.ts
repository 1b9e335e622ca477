/**
 * Gateway behaviour against Ceph RGW, from its own counters: GETs per block cold and warm, single
 * flight, coalescing, negative caching, limits and request validation, corrupted objects
 * (DATA_LOSS naming the block), damaged cache entries, replaced blocks (injected clock), and the
 * cache's byte bound under load.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/storage-gateway/gateway.test.ts
 */
import t, { type Test } from 'tap';
import { constants, connect } from 'node:http2';
import { status, type ServiceError } from '@grpc/grpc-js';
import { encodeReadRequest, ENCODING_RAW, READ_METHOD_PATH, type ReadRequestFields } from '../../src/api/read-codec.js';
import type { RunningGateway } from '../../src/storage-gateway/gateway.js';
import { eventually } from '../support/aggregator.js';
import { QueryClient, QueryError } from '../../src/client/query.js';
import { GrpcError } from '../../src/common/grpc-status.js';
import { FOOTER_LEN } from '../../src/format/footer.js';
import { blockKey } from '../../src/format/key.js';
import { goldenSeries } from '../fixtures/golden.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { blockCacheId } from '../../src/storage-gateway/block-directory.js';
import { RETRY_PUSHBACK_TRAILER } from '../../src/api/headers.js';
import { READ_RETRY_PUSHBACK_MS } from '../../src/storage-gateway/budget.js';
import { openBucket, type Bucket, type BucketConfig } from '../../src/objstore/index.js';
import { KINDS, makeSeries } from '../support/series.js';
import { FORWARD, startFaultProxy } from '../support/faultproxy.js';
import {
  D,
  expected,
  gets,
  idBytes,
  makeDataSet,
  manualClock,
  mismatches,
  rawRead,
  type RawReadRequest,
  rgwBucket,
  startTestGateway,
  tempDir,
  testConfig,
  W0,
  writeBlock,
  writeDataSet,
  type SeriesData,
} from '../support/gateway.js';
import { encodeFrame } from '../../src/api/grpc-frame.js';

/** 400 series of one block (shard 0 of 1), 16 per index page: 25 pages. */
const BIG: SeriesData[] = Array.from({ length: 400 }, (_, i) => ({ id: BigInt(1000 + i), samples: makeSeries(KINDS[i % KINDS.length]!, 960, W0, i) }));

async function setup(t: Test): Promise<{ bucketConfig: BucketConfig; bucket: Bucket }> {
  const bucketConfig = await rgwBucket(t);
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  return { bucketConfig, bucket };
}

function clientFor(t: Test, port: number, numShards: number, extra: Partial<ConstructorParameters<typeof QueryClient>[0]> = {}): QueryClient {
  // one request per block window: these tests count the GETs and requests of single blocks
  const c = new QueryClient({ futureHorizonMs: null, endpoints: [`127.0.0.1:${port}`], numShards, dayRequestsAfterMs: null, ...extra });
  t.teardown(() => c.close());
  return c;
}

const ONE_WINDOW = { start: W0, end: W0 + D };

t.test('GETs per block: at most 3 cold, 1 when the index is cached, 0 warm', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  await writeBlock(bucket, 'big', 0, 1, W0, BIG, { seriesPerPage: 16 });
  // a 4 KiB first read holds the footer, the index of index and the last pages, not page 0
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { suffixBytes: 4096 }));
  const q = clientFor(t, gw.grpcPort, 1);
  const read = async (id: bigint): Promise<number> => {
    const before = await gets(gw);
    const r = await q.query('big', [id], ONE_WINDOW);
    t.same(mismatches(r.series, expected({ tenant: 'big', numShards: 1, windows: 1, series: BIG }, [id], W0, W0 + D)), [], `series ${id} exact`);
    return (await gets(gw)) - before;
  };
  t.equal(await read(1000n), 3, 'cold, page 0: suffix + index page + run');
  t.equal(await read(1000n), 0, 'warm: no GET');
  t.equal(await read(1001n), 1, 'same page, other series: the run only');
  t.equal(await read(1100n), 2, 'other page: page + run');
  t.equal(await read(1399n), 1, 'last page came with the suffix read: the run only');
  t.equal(await gets(gw, 'suffix'), 1, 'one suffix read for the block');
  t.ok((await gw.metrics.total('strata_gateway_cache_hits_total', { layer: 'open_block' })) >= 4, 'open block served from memory');
});

t.test('a new block whose index is like those opened before costs 2 GETs cold: the suffix read takes the whole index', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  for (const [tenant, w] of [['big', 0n], ['big', 1n], ['big', 2n], ['other', 0n]] as const) {
    await writeBlock(bucket, tenant, 0, 1, W0 + w * D, BIG.map((s) => ({ id: s.id, samples: { timestamps: s.samples.timestamps.map((x) => x + w * D), values: s.samples.values } })), { seriesPerPage: 16 });
  }
  const run = async (suffixMaxBytes: number): Promise<number[]> => {
    const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { suffixBytes: 4096, suffixMaxBytes }));
    const q = clientFor(t, gw.grpcPort, 1);
    const counts: number[] = [];
    for (const [tenant, w] of [['big', 0n], ['big', 1n], ['big', 2n], ['other', 0n]] as const) {
      const before = await gets(gw);
      const r = await q.query(tenant, [1000n], { start: W0 + w * D, end: W0 + (w + 1n) * D });
      t.equal(r.series[0]!.timestamps.length, 960, `${tenant} window ${w}: the series, whole`);
      t.equal(r.series[0]!.timestamps[0], BIG[0]!.samples.timestamps[0]! + w * D);
      counts.push((await gets(gw)) - before);
    }
    return counts;
  };
  t.same(await run(1 << 20), [3, 2, 2, 2], 'the first block of the gateway: suffix + page + run; then the suffix read holds the index (a tenant never seen takes the last index size)');
  t.same(await run(4096), [3, 3, 3, 3], 'suffixMaxBytes no larger than suffixBytes: every first read is suffixBytes');
});

t.test('concurrent misses share one fetch; nearby ranges share one GET', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  await writeBlock(bucket, 'big', 0, 1, W0, BIG, { seriesPerPage: 16 });
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { suffixBytes: 4096 }));
  const q = clientFor(t, gw.grpcPort, 1);
  const results = await Promise.all(Array.from({ length: 10 }, () => q.query('big', [1000n], ONE_WINDOW)));
  for (const r of results) t.equal(r.series[0]!.timestamps.length, 960);
  t.equal(await gets(gw), 3, '10 concurrent cold reads: the GETs of one');
  t.ok((await gw.metrics.total('strata_gateway_single_flight_joins_total')) >= 9, 'the others joined');

  const ids = BIG.slice(20, 70).map((s) => s.id); // 50 adjacent series over 4 pages
  const before = await gets(gw, 'range');
  const r = await q.query('big', ids, ONE_WINDOW);
  t.same(mismatches(r.series, expected({ tenant: 'big', numShards: 1, windows: 1, series: BIG }, ids, W0, W0 + D)), []);
  t.equal((await gets(gw, 'range')) - before, 2, 'one GET for the pages, one for the 50 runs');
  t.ok((await gw.metrics.total('strata_gateway_coalesced_ranges_total')) >= 50);
});

t.test('a window without a block is empty and negative-cached', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  await writeBlock(bucket, 'acme', 0, 2, W0, [{ id: 2n, samples: makeSeries('gauge', 10, W0, 1) }]);
  const clock = manualClock(Number(W0 + 10n * D)); // long after the windows ended
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { stalenessMs: 60_000, closedStalenessMs: 600_000, negativeTtlMs: 1000, uploadGraceMs: Number(2n * D) }), { now: clock.now });
  const q = clientFor(t, gw.grpcPort, 2);
  const r = await q.query('acme', [1n, 2n], { start: W0, end: W0 + 2n * D });
  t.equal(r.requests, 4);
  t.equal(r.blocksFound, 1, 'three of four (window, shard) pairs have no block');
  t.equal(r.series[0]!.timestamps.length, 0);
  t.equal(r.series[1]!.timestamps.length, 10);
  const before = await gets(gw);
  await q.query('acme', [1n], { start: W0, end: W0 + 2n * D });
  t.equal((await gets(gw)) - before, 0, 'missing blocks answered from the negative cache');
  clock.advance(1000);
  await q.query('acme', [1n], { start: W0, end: W0 + 2n * D });
  t.equal((await gets(gw)) - before, 0, 'a settled window keeps its entry');
  clock.advance(59_000);
  await q.query('acme', [1n], { start: W0, end: W0 + 2n * D });
  t.equal((await gets(gw)) - before, 0, 'a closed window keeps its entry past stalenessMs...');
  clock.advance(540_000);
  await q.query('acme', [1n], { start: W0, end: W0 + 2n * D });
  t.equal((await gets(gw)) - before, 2, '...and after closedStalenessMs the two missing blocks are looked up again');

  // a window that may still be uploading is re-checked after negativeTtlMs
  const recent = manualClock(Number(W0 + D + 60_000n));
  const gw2 = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { stalenessMs: 60_000, negativeTtlMs: 1000, uploadGraceMs: Number(2n * D) }), { now: recent.now });
  const q2 = clientFor(t, gw2.grpcPort, 2);
  await q2.query('acme', [1n], ONE_WINDOW);
  t.equal(await gets(gw2), 1);
  recent.advance(999);
  await q2.query('acme', [1n], ONE_WINDOW);
  t.equal(await gets(gw2), 1, 'within negativeTtlMs');
  recent.advance(1);
  await writeBlock(bucket, 'acme', 1, 2, W0, [{ id: 1n, samples: makeSeries('counter', 7, W0, 2) }]);
  const late = await q2.query('acme', [1n], ONE_WINDOW);
  t.equal(late.series[0]!.timestamps.length, 7, 'the block uploaded meanwhile is found after negativeTtlMs');
});

t.test('limits and malformed requests get INVALID_ARGUMENT / RESOURCE_EXHAUSTED / FAILED_PRECONDITION naming the field', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  await writeBlock(bucket, 'big', 0, 1, W0, BIG, { seriesPerPage: 16 });
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { maxSeriesPerRequest: 50, maxSamplesPerResponse: 20 * 960 }));
  const base = {
    tenant: 'big',
    shard: 0,
    num_shards: 1,
    window_start_ms: W0.toString(),
    series_ids: idBytes([1000n]),
    start_ms: W0.toString(),
    end_ms: (W0 + D).toString(),
    encoding: 'RAW' as const,
  };
  const refused = async (req: Partial<typeof base>, headers: Record<string, string>, code: status, re: RegExp, name: string): Promise<void> => {
    const err = await rawRead(gw.grpcPort, { ...base, ...req }, headers).then(
      () => null,
      (e: ServiceError) => e,
    );
    t.equal(err?.code, code, `${name}: ${status[code]}`);
    t.match(err?.details ?? '', re, `${name}: message`);
    // a limit of the request itself: retrying it would be refused again, so no retry pushback
    t.same(err?.metadata?.get(RETRY_PUSHBACK_TRAILER), [], `${name}: no retry pushback`);
  };
  // the query client splits a block's ids into requests the gateway takes (maxSeriesPerRequest)
  // (each within maxSamplesPerResponse too: 20 series of 960 samples)
  const split = clientFor(t, gw.grpcPort, 1, { encoding: 'runs', maxSeriesPerRequest: 20 });
  const ids45 = BIG.slice(100, 145).map((s) => s.id);
  const r45 = await split.query('big', ids45, ONE_WINDOW);
  t.equal(r45.requests, 3, '45 series: 3 requests of at most 20');
  t.same(mismatches(r45.series, expected({ tenant: 'big', numShards: 1, windows: 1, series: BIG }, ids45, W0, W0 + D)), [], '45 series: exact');
  // and a request the gateway refuses as too large for one response (45 x 960 samples, over
  // maxSamplesPerResponse 19,200) is read again in halves: 22 + 23, then 11 + 11 + 11 + 12
  const halving = clientFor(t, gw.grpcPort, 1, { encoding: 'raw' });
  const h45 = await halving.query('big', ids45, ONE_WINDOW);
  t.same(mismatches(h45.series, expected({ tenant: 'big', numShards: 1, windows: 1, series: BIG }, ids45, W0, W0 + D)), [], 'halved: exact');
  t.equal(h45.retries, 3, 'one request, split three times');
  t.equal(h45.blocksFound, 1);
  // one series over the limit alone cannot be split: the refusal is the query's error
  const tiny = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { maxSamplesPerResponse: 500 }));
  await t.rejects(clientFor(t, tiny.grpcPort, 1, { encoding: 'raw' }).query('big', [BIG[0]!.id], ONE_WINDOW), { name: 'QueryError', code: status.RESOURCE_EXHAUSTED, message: /maxSamplesPerResponse \(500\)/ });
  const ok = await rawRead(gw.grpcPort, base, { 'x-strata-block': `big/0/${W0}`, 'x-strata-tenant': 'big' });
  t.equal(ok.length, 1);
  t.equal(ok[0]!['block_id'], (await gw.directory.open(await gw.address('big', 0, W0)))!.blockId);
  await refused({ series_ids: idBytes(BIG.slice(0, 51).map((s) => s.id)) }, {}, status.INVALID_ARGUMENT, /series_ids.*51 series.*maxSeriesPerRequest \(50\)/, 'too many series');
  // duplicates do not count (read.proto: order and duplicates do not matter), up to 4 times the limit in ids
  const fifty = BIG.slice(0, 50).map((s) => s.id);
  await refused({ series_ids: idBytes([...fifty, ...fifty, BIG[50]!.id]) }, {}, status.INVALID_ARGUMENT, /series_ids.*51 series.*maxSeriesPerRequest \(50\)/, '51 distinct among 101 ids');
  await refused({ series_ids: idBytes(Array.from({ length: 201 }, () => BIG[0]!.id)) }, {}, status.INVALID_ARGUMENT, /series_ids.*201 ids, more than 4 times the gateway's maxSeriesPerRequest \(50\) even with duplicates/, 'too many ids');
  t.equal((await rawRead(gw.grpcPort, { ...base, series_ids: idBytes(Array.from({ length: 200 }, () => BIG[0]!.id)) }, { 'x-strata-block': `big/0/${W0}`, 'x-strata-tenant': 'big' })).length, 1, '200 ids of one series: one series read');
  await refused({ series_ids: idBytes(BIG.slice(0, 21).map((s) => s.id)) }, {}, status.RESOURCE_EXHAUSTED, /maxSamplesPerResponse \(19200\)/, 'too many samples');
  await refused({ series_ids: Buffer.alloc(7) }, {}, status.INVALID_ARGUMENT, /series_ids/, 'ragged ids');
  await refused({ window_start_ms: (W0 + 1n).toString() }, {}, status.INVALID_ARGUMENT, /window_start_ms/, 'unaligned window');
  await refused({ end_ms: (W0 - 1n).toString() }, {}, status.INVALID_ARGUMENT, /end_ms/, 'end before start');
  await refused({ tenant: 'Bad/Tenant' }, {}, status.INVALID_ARGUMENT, /tenant/, 'bad tenant');
  await refused({ shard: 3 }, {}, status.INVALID_ARGUMENT, /shard/, 'shard out of range');
  await refused({ num_shards: 2, series_ids: idBytes([1001n]) }, {}, status.INVALID_ARGUMENT, /series 1001 belongs to shard 1/, 'id of another shard');
  await refused({ num_shards: 2, series_ids: idBytes([1000n]) }, {}, status.FAILED_PRECONDITION, /written with 1 shards/, 'shard count differs from the block');
  await refused({}, { 'x-strata-block': `big/0/${W0 + D}` }, status.INVALID_ARGUMENT, /x-strata-block/, 'routing header disagrees');
  await refused({}, { 'x-strata-tenant': 'other' }, status.INVALID_ARGUMENT, /x-strata-tenant/, 'tenant header disagrees');
  t.ok((await gw.metrics.total('strata_gateway_requests_total', { code: 'INVALID_ARGUMENT' })) >= 8);

  // the auth hook sees tenant and token and refuses with its own status
  const seen: string[] = [];
  const guarded = await startTestGateway(t, testConfig(bucketConfig, tempDir(t)), {
    authorize: (ctx) => {
      seen.push(`${ctx.method} ${ctx.tenant} ${ctx.token}`);
      if (ctx.token !== 'secret') throw new GrpcError(status.PERMISSION_DENIED, `tenant ${ctx.tenant} is not yours`);
    },
  });
  const denied = await rawRead(guarded.grpcPort, base).then(
    () => null,
    (e: { code: number; details: string }) => e,
  );
  t.equal(denied?.code, status.PERMISSION_DENIED, 'the hook refuses: PERMISSION_DENIED');
  t.equal((await rawRead(guarded.grpcPort, base, { authorization: 'Bearer secret' })).length, 1, 'the hook allows');
  t.same(seen, ['Read big null', 'Read big secret']);

  // the gateway's own time limit
  const hurried = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { requestTimeoutMs: 1 }));
  const timedOut = await rawRead(hurried.grpcPort, base).then(
    () => null,
    (e: { code: number; details: string }) => e,
  );
  t.equal(timedOut?.code, status.DEADLINE_EXCEEDED, 'a cold read over requestTimeoutMs: DEADLINE_EXCEEDED');
  t.match(timedOut?.details ?? '', /read did not finish within requestTimeoutMs \(1 ms\)/);

  // the client honours its deadline: 1 ms for 40 windows that no cache has seen (one GET each)
  const slow = clientFor(t, gw.grpcPort, 1, { deadlineMs: 1 });
  const late = await slow.query('big', [1000n], { start: W0 + 100n * D, end: W0 + 140n * D }).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(late instanceof QueryError && late.code === status.DEADLINE_EXCEEDED, 'DEADLINE_EXCEEDED');
});

t.test('a corrupted object gives DATA_LOSS naming the block, never wrong samples', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  const [key, block] = await writeBlock(bucket, 'big', 0, 1, W0, BIG, { seriesPerPage: 16 });
  const good = await bucket.get(key);
  const victim = BIG[123]!;
  // locate the victim's run through a clean gateway, then damage that run, a page, the footer
  const gw0 = await startTestGateway(t, testConfig(bucketConfig, tempDir(t)));
  const addr = await gw0.address('big', 0, W0);
  t.equal(addr.key, key);
  const open = (await gw0.directory.open(addr))!;
  const [page] = await gw0.directory.pages(addr, open, [Math.floor(123 / 16)]);
  const e = page!.ids.indexOf(victim.id);
  const runOffset = page!.offsets[e]!;
  const cases: [string, number, RegExp][] = [
    ['run', runOffset + 3, new RegExp(`"${key}".*run of series ${victim.id}: checksum mismatch`)],
    ['index page', open.ioi.offsets[7]! + 2, new RegExp(`"${key}".*index page 7`)],
    ['footer', block.size - FOOTER_LEN + 20, new RegExp(`"${key}".*footer checksum mismatch`)],
  ];
  for (const [what, at, re] of cases) {
    const bad = Buffer.from(good);
    bad[at]! ^= 0x10;
    await bucket.put(key, bad);
    const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t)));
    const q = clientFor(t, gw.grpcPort, 1);
    const err = await q.query('big', [victim.id], ONE_WINDOW).then(
      () => null,
      (x: unknown) => x,
    );
    t.ok(err instanceof QueryError, `${what}: the query fails`);
    t.equal((err as QueryError).code, status.DATA_LOSS, `${what}: DATA_LOSS`);
    t.equal((err as QueryError).strataCode, 'ERR_STRATA_CORRUPT', `${what}: the strata-error-code trailer tells corruption apart`);
    t.match((err as QueryError).message, re, `${what}: names the block and what is damaged`);
    if (what === 'run') {
      const other = await q.query('big', [BIG[300]!.id], ONE_WINDOW);
      t.same(mismatches(other.series, expected({ tenant: 'big', numShards: 1, windows: 1, series: BIG }, [BIG[300]!.id], W0, W0 + D)), [], 'undamaged series still read exactly');
    }
  }
  await bucket.put(key, good);

  // a damaged cache entry is detected, dropped and fetched again
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t)));
  const q = clientFor(t, gw.grpcPort, 1);
  await q.query('big', [victim.id], ONE_WINDOW);
  const blockId = blockCacheId((await gw.address('big', 0, W0)).scope, 'big', block.footer.blockId);
  const len = page!.lengths[e]!;
  gw.store.deleteRange(blockId, runOffset, len);
  gw.store.putRange(blockId, runOffset, Buffer.alloc(len, 0xee));
  const again = await q.query('big', [victim.id], ONE_WINDOW);
  t.same(mismatches(again.series, expected({ tenant: 'big', numShards: 1, windows: 1, series: BIG }, [victim.id], W0, W0 + D)), [], 'exact after a damaged cache entry');
  t.equal(await gw.metrics.total('strata_gateway_cache_corrupt_total'), 1);
});

t.test('a block of a closed window is re-checked after closedStalenessMs, one of an open window after stalenessMs; a block the suffix read holds costs one GET cold', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  const small = BIG.slice(0, 12);
  const [, oldBlock] = await writeBlock(bucket, 'old', 0, 1, W0, small, { seriesPerPage: 4 });
  t.ok(oldBlock.size < 65_536, `the block (${oldBlock.size} bytes) fits the 64 KiB suffix read`);
  const later = small.map((s) => ({ id: s.id, samples: { timestamps: s.samples.timestamps.map((x) => x + 10n * D), values: s.samples.values } }));
  await writeBlock(bucket, 'new', 0, 1, W0 + 10n * D, later, { seriesPerPage: 4 });
  // the clock: the window W0 closed long ago; W0 + 10 D ended an hour ago (uploadGraceMs: 6 h)
  const clock = manualClock(Number(W0 + 11n * D) + 3_600_000);
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { stalenessMs: 60_000, closedStalenessMs: 3_600_000, uploadGraceMs: 6 * 3_600_000, suffixBytes: 65_536 }), { now: clock.now });
  const q = clientFor(t, gw.grpcPort, 1);
  const ids = small.map((s) => s.id);
  const oldWin = { start: W0, end: W0 + D };
  const newWin = { start: W0 + 10n * D, end: W0 + 11n * D };
  let before = await gets(gw);
  t.same(mismatches((await q.query('old', ids, oldWin)).series, expected({ tenant: 'old', numShards: 1, windows: 1, series: small }, ids, W0, W0 + D)), [], 'closed window: exact');
  t.equal((await gets(gw)) - before, 1, 'cold: one GET for a block the suffix read holds (tail, pages and runs)');
  before = await gets(gw);
  t.same(mismatches((await q.query('new', ids, newWin)).series, expected({ tenant: 'new', numShards: 1, windows: 1, series: later }, ids, newWin.start, newWin.end)), [], 'open window: exact');
  t.equal((await gets(gw)) - before, 1, 'cold: one GET again');
  before = await gets(gw);
  // 10 minutes of warm reads, a read every 20 s: the open window is re-checked, the closed one never
  for (let i = 0; i < 30; i++) {
    clock.advance(20_000);
    await q.query('old', ids, oldWin);
  }
  t.equal((await gets(gw)) - before, 0, 'no bucket request in 10 minutes of warm reads of a closed window');
  await q.query('new', ids, newWin);
  await eventually('the open window to be re-checked', async () => ((await gets(gw)) - before >= 1 ? true : null));
  t.equal((await gw.metrics.total('strata_gateway_cache_evictions_total')), 0, 'no re-check evicted anything');
  clock.advance(3_000_000); // past closedStalenessMs since the first read
  before = await gets(gw);
  await q.query('old', ids, oldWin);
  t.equal((await gets(gw)) - before, 1, 'after closedStalenessMs the closed window is re-checked with one suffix GET');
});

/**
 * Block v1 (100 series of BIG) written to `bucket`, a gateway on a manual clock reading it through
 * `readConfig` (staleness 60 s, 4 KiB suffix reads), and v1 read once; v2 (the same ids, other
 * samples from `seed`) is for the test to write over it.
 */
async function replacement(t: Test, bucket: Bucket, readConfig: BucketConfig, seed: number) {
  return replacementOn(t, bucket, readConfig, seed, manualClock());
}

async function replacementOn(t: Test, bucket: Bucket, readConfig: BucketConfig, seed: number, clock: ReturnType<typeof manualClock>) {
  const v1 = BIG.slice(0, 100);
  const v2 = v1.map((s, i) => ({ id: s.id, samples: makeSeries('float', 800 + i, W0, seed + i) }));
  const [, b1] = await writeBlock(bucket, 'big', 0, 1, W0, v1, { seriesPerPage: 16 });
  const gw = await startTestGateway(t, testConfig(readConfig, tempDir(t), { stalenessMs: 60_000, closedStalenessMs: 60_000, suffixBytes: 4096 }), { now: clock.now });
  const q = clientFor(t, gw.grpcPort, 1);
  const ds1 = { tenant: 'big', numShards: 1, windows: 1, series: v1 };
  const ds2 = { tenant: 'big', numShards: 1, windows: 1, series: v2 };
  const ids = [v1[0]!.id, v1[1]!.id];
  t.same(mismatches((await q.query('big', ids, ONE_WINDOW)).series, expected(ds1, ids, W0, W0 + D)), [], 'v1 served');
  return { v1, v2, b1, clock, gw, q, ds1, ds2, ids };
}

t.test('a replaced block is served within the staleness bound, never mixed with the old one', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  const { v1, v2, b1, clock, gw, q, ds1, ds2, ids } = await replacement(t, bucket, bucketConfig, 5000);
  const [, b2] = await writeBlock(bucket, 'big', 0, 1, W0, v2, { seriesPerPage: 16 });
  t.not(b2.footer.blockId, b1.footer.blockId);
  clock.advance(10_000);
  const before = await gets(gw);
  t.same(mismatches((await q.query('big', ids, ONE_WINDOW)).series, expected(ds1, ids, W0, W0 + D)), [], 'within the bound, cached v1 is still served');
  t.equal((await gets(gw)) - before, 0, 'without touching S3');
  // a series whose run is not cached: its range GET hits v2's bytes, fails the check, and the
  // read restarts on v2 (never a v1 index with v2 bytes)
  const fresh = [v1[50]!.id];
  t.same(mismatches((await q.query('big', fresh, ONE_WINDOW)).series, expected(ds2, fresh, W0, W0 + D)), [], 'a read that ran into v2 restarts on v2');
  t.equal(await gw.metrics.total('strata_gateway_block_replacements_total'), 1);
  clock.advance(60_000);
  t.same(mismatches((await q.query('big', ids, ONE_WINDOW)).series, expected(ds2, ids, W0, W0 + D)), [], 'after the bound, v2');
  const scope = (await gw.address('big', 0, W0)).scope;
  t.ok(gw.store.hasRange(blockCacheId(scope, 'big', b2.footer.blockId), b2.footer.ioi.offset, b2.size - b2.footer.ioi.offset), 'v2 cached');
  t.notOk(gw.store.hasRange(blockCacheId(scope, 'big', b1.footer.blockId), b1.footer.ioi.offset, b1.size - b1.footer.ioi.offset), 'v1 dropped from the cache');

  // staleness alone (no read running into the new bytes) also switches
  const [, b3] = await writeBlock(bucket, 'big', 0, 1, W0, v1, { seriesPerPage: 16 });
  clock.advance(59_999);
  const stillV2 = await q.query('big', ids, ONE_WINDOW);
  t.same(mismatches(stillV2.series, expected(ds2, ids, W0, W0 + D)), [], 'v2 just before the bound');
  clock.advance(1);
  const v3 = await q.query('big', ids, ONE_WINDOW);
  t.same(mismatches(v3.series, expected(ds1, ids, W0, W0 + D)), [], `block ${b3.footer.blockId} at the bound`);
});

t.test('a block checked while the clock ran ahead is re-checked once the clock steps back, not trusted for as long as the skew', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  const clock = manualClock();
  clock.advance(24 * 3600 * 1000); // the gateway runs a day ahead when it reads v1
  const { v2, gw, q, ds2, ids } = await replacementOn(t, bucket, bucketConfig, 9000, clock);
  await writeBlock(bucket, 'big', 0, 1, W0, v2, { seriesPerPage: 16 });
  clock.advance(-24 * 3600 * 1000); // the clock is put right
  const before = await gets(gw);
  t.same(mismatches((await q.query('big', ids, ONE_WINDOW)).series, expected(ds2, ids, W0, W0 + D)), [], 'v2: the check made "in the future" is no check');
  t.ok((await gets(gw)) > before, 'the block was asked for again');
});

t.test('a read that runs into a replacement while a background re-check that read the old block is in flight reads the new block, not DATA_LOSS', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  const proxy = await startFaultProxy(t, (bucketConfig as { endpoint: string }).endpoint, () => FORWARD);
  const viaProxy = { ...bucketConfig, endpoint: proxy.endpoint } as BucketConfig;
  const { v1, v2, clock, gw, q, ds1, ds2, ids } = await replacement(t, bucket, viaProxy, 7000);

  // past half the staleness bound a read starts a background re-check; its tail GET reads v1,
  // and its answer is held at the proxy while the object is replaced
  clock.advance(40_000);
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let fetched!: () => void;
  const v1TailRead = new Promise<void>((resolve) => (fetched = resolve));
  const first = proxy.seen.length + 1;
  proxy.setPolicy((n) => (n === first ? { kind: 'hold', fetched, release: released } : FORWARD));
  t.same(mismatches((await q.query('big', ids, ONE_WINDOW)).series, expected(ds1, ids, W0, W0 + D)), [], 'v1 from memory; a re-check starts');
  await v1TailRead;
  await writeBlock(bucket, 'big', 0, 1, W0, v2, { seriesPerPage: 16 });

  // a series whose run is not cached: its GET gets v2's bytes, which fail v1's checksum. The
  // held re-check is let go the moment the read asks the directory to look again.
  const dir = gw.directory as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const m of ['refresh', 'refreshAfter']) {
    const orig = dir[m];
    if (typeof orig !== 'function') continue;
    dir[m] = (...a: unknown[]) => {
      release();
      return orig.apply(gw.directory, a);
    };
  }
  const fresh = [v1[50]!.id];
  t.same(mismatches((await q.query('big', fresh, ONE_WINDOW)).series, expected(ds2, fresh, W0, W0 + D)), [], 'the read restarts on v2');
  t.equal(await gw.metrics.total('strata_gateway_block_replacements_total'), 1, 'one replacement seen');
});

/**
 * A gateway reading block `series` of tenant "big" (window W0) through a fault proxy that answers
 * 503 while `bucketDown.down` is set, with clock `clock` and the config `extra`.
 */
async function throughOutageProxy(t: Test, series: typeof BIG, clock: { now: () => number }, extra: Record<string, unknown>) {
  const { bucketConfig, bucket } = await setup(t);
  await writeBlock(bucket, 'big', 0, 1, W0, series, { seriesPerPage: 16 });
  const bucketDown = { down: false };
  const upstream = (bucketConfig as { endpoint: string }).endpoint;
  const proxy = await startFaultProxy(t, upstream, () => (bucketDown.down ? { kind: 'status', status: 503, code: 'ServiceUnavailable' } : FORWARD));
  const viaProxy = { ...bucketConfig, endpoint: proxy.endpoint, retry: { maxAttempts: 2, baseDelayMs: 5, maxDelayMs: 20 } } as BucketConfig;
  const gw = await startTestGateway(t, testConfig(viaProxy, tempDir(t), extra), { now: clock.now });
  return { bucket, bucketDown, proxy, gw, q: clientFor(t, gw.grpcPort, 1), ds: { tenant: 'big', numShards: 1, windows: 1, series } };
}

t.test('an S3 outage: cached blocks are served as last read up to maxStaleMs, counted, then UNAVAILABLE; healed after', async (t) => {
  const v1 = BIG.slice(0, 40);
  const clock = manualClock(Number(W0 + 10n * D));
  const { bucketDown, proxy, gw, q, ds } = await throughOutageProxy(t, v1, clock, { stalenessMs: 60_000, closedStalenessMs: 60_000, maxStaleMs: 3_600_000 });
  const ids = [v1[0]!.id, v1[1]!.id];
  t.same(mismatches((await q.query('big', ids, ONE_WINDOW)).series, expected(ds, ids, W0, W0 + D)), [], 'warm');
  bucketDown.down = true;
  clock.advance(120_000); // past stalenessMs: the read asks the bucket, which fails
  t.same(mismatches((await q.query('big', ids, ONE_WINDOW)).series, expected(ds, ids, W0, W0 + D)), [], 'served as last read during the outage');
  t.equal(await gw.metrics.total('strata_gateway_stale_serves_total'), 1, 'counted');
  const asked = proxy.seen.length;
  t.same(mismatches((await q.query('big', ids, ONE_WINDOW)).series, expected(ds, ids, W0, W0 + D)), [], 'again');
  t.equal(proxy.seen.length, asked, 'the next read does not wait for the bucket again at once');
  t.equal(await gw.metrics.total('strata_gateway_stale_serves_total'), 2);
  clock.advance(3_600_000); // past maxStaleMs
  const err = await q.query('big', ids, ONE_WINDOW).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof QueryError && err.code === status.UNAVAILABLE, `past maxStaleMs: UNAVAILABLE (${(err as Error | null)?.message})`);
  bucketDown.down = false;
  t.same(mismatches((await q.query('big', ids, ONE_WINDOW)).series, expected(ds, ids, W0, W0 + D)), [], 'the bucket is back: served fresh');
});

t.test('an S3 outage: a window last found without a block (a range ending now) answers "no block" as last read up to maxStaleMs, then UNAVAILABLE', async (t) => {
  const v1 = BIG.slice(0, 10);
  // "now" is inside the window after W0: it has no block yet (it is still being written)
  const clock = manualClock(Number(W0 + D + D / 2n));
  const { bucket, bucketDown, proxy, gw, q, ds } = await throughOutageProxy(t, v1, clock, { stalenessMs: 60_000, closedStalenessMs: 600_000, negativeTtlMs: 5_000, uploadGraceMs: Number(D), maxStaleMs: 3_600_000 });
  const ids = [v1[0]!.id, v1[1]!.id];
  const toNow = { start: W0, end: W0 + 2n * D };
  const want = expected(ds, ids, W0, W0 + D);
  t.same(mismatches((await q.query('big', ids, toNow)).series, want), [], 'bucket up: the closed window from its block, the current one empty');
  bucketDown.down = true;
  clock.advance(20_000); // past negativeTtlMs of the current window (its "no block" must be asked again), before half of stalenessMs
  t.same(mismatches((await q.query('big', ids, toNow)).series, want), [], 'bucket down: the current window answers "no block" as last found');
  t.equal(await gw.metrics.total('strata_gateway_stale_serves_total'), 1, 'counted as a stale serve');
  const asked = proxy.seen.length;
  t.same(mismatches((await q.query('big', ids, toNow)).series, want), [], 'again');
  t.equal(proxy.seen.length, asked, 'the next read does not wait for the bucket again at once');
  clock.advance(3_600_000); // past maxStaleMs (and past the closed window's staleness)
  const err = await q.query('big', ids, toNow).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof QueryError && err.code === status.UNAVAILABLE, `past maxStaleMs: UNAVAILABLE (${(err as Error | null)?.message})`);
  // the window's block has come meanwhile (written before the bucket is back: a retry of the
  // failed read still in flight must not find the window empty once more and be remembered so);
  // the bucket's answer replaces the remembered "no block"
  const v2 = v1.map((s) => ({ id: s.id, samples: { timestamps: s.samples.timestamps.map((x) => x + D), values: s.samples.values } }));
  await writeBlock(bucket, 'big', 0, 1, W0 + D, v2, { seriesPerPage: 16 });
  bucketDown.down = false;
  const current = { start: W0 + D, end: W0 + 2n * D };
  t.same(mismatches((await q.query('big', ids, current)).series, expected({ ...ds, series: v2 }, ids, current.start, current.end)), [], 'the bucket is back: the new block is read');
});

t.test('an S3 that hangs: a cached block past its staleness is served as last read after recheckTimeoutMs, not failed at the deadline', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  const v1 = BIG.slice(0, 40);
  await writeBlock(bucket, 'big', 0, 1, W0, v1, { seriesPerPage: 16 });
  let hang = false;
  const upstream = (bucketConfig as { endpoint: string }).endpoint;
  const proxy = await startFaultProxy(t, upstream, () => (hang ? { kind: 'stall' } : FORWARD));
  // each attempt of the bucket client ends at its socket timeout: the re-check fails after about
  // 2 s in the background, long after the copy was served
  const viaProxy = { ...bucketConfig, endpoint: proxy.endpoint, socketTimeoutMs: 1000, retry: { maxAttempts: 2, baseDelayMs: 5, maxDelayMs: 20 } } as BucketConfig;
  const clock = manualClock(Number(W0 + 10n * D));
  // without the re-check's own bound the read would wait for the bucket client past its deadline
  const gw = await startTestGateway(t, testConfig(viaProxy, tempDir(t), { stalenessMs: 60_000, closedStalenessMs: 60_000, maxStaleMs: 3_600_000, recheckTimeoutMs: 100, requestTimeoutMs: 1_500 }), { now: clock.now });
  const q = clientFor(t, gw.grpcPort, 1);
  const ds = { tenant: 'big', numShards: 1, windows: 1, series: v1 };
  const ids = [v1[0]!.id, v1[1]!.id];
  t.same(mismatches((await q.query('big', ids, ONE_WINDOW)).series, expected(ds, ids, W0, W0 + D)), [], 'warm');
  hang = true;
  clock.advance(120_000); // past stalenessMs: the read re-checks the block, and the bucket does not answer
  t.same(mismatches((await q.query('big', ids, ONE_WINDOW)).series, expected(ds, ids, W0, W0 + D)), [], 'served as last read while the bucket hangs');
  t.equal(await gw.metrics.total('strata_gateway_stale_serves_total'), 1, 'counted');
  t.ok(proxy.seen.some((r) => r.fault === 'stall'), 'the re-check did reach the hanging bucket');
});

/**
 * A Read call over a bare HTTP/2 stream that never reads its answer: with HTTP/2 flow control the
 * gateway can send one window (64 KiB) and holds the rest.
 */
function unreadCall(t: Test, port: number, fields: ReadRequestFields): { cancel(): void } {
  const session = connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 65535 } });
  t.teardown(() => session.destroy());
  const stream = session.request({ ':method': 'POST', ':path': READ_METHOD_PATH, 'content-type': 'application/grpc', te: 'trailers' });
  const body = encodeReadRequest(fields);
  stream.end(encodeFrame(body));
  stream.pause();
  stream.on('error', () => undefined); // cancelled below
  return { cancel: () => stream.close(constants.NGHTTP2_CANCEL) };
}

t.test('a RUNS answer needs the runs_version its runs have: runs_version 1 reads version 1 blocks and is refused a version 2 block with FAILED_PRECONDITION naming both; unset (clients before the field, taken as 2) and 2 or more read both, bit for bit as RAW', async (t) => {
  const window = 1795219200000n;
  const ids = goldenSeries().slice(0, 6).map((s) => s.id);
  const req = (encoding: 'RAW' | 'RUNS', runsVersion?: number): RawReadRequest => ({
    tenant: 'golden',
    shard: 3,
    num_shards: 8,
    window_start_ms: String(window),
    series_ids: idBytes(ids),
    start_ms: String(window),
    end_ms: String(window + 4n * 3600_000n),
    encoding,
    ...(runsVersion !== undefined ? { runs_version: runsVersion } : {}),
  });
  const bytesOf = (msgs: Record<string, unknown>[], field: string): number => msgs.reduce((n, m) => n + (m[field] as Buffer).length, 0);
  for (const [file, version] of [['golden-v1.block', 1], ['golden-v2.block', 2]] as const) {
    const { bucketConfig, bucket } = await setup(t);
    await bucket.put(blockKey('golden', 3, window), readFileSync(join(import.meta.dirname, '..', 'fixtures', file)));
    const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t)));
    const raw = await rawRead(gw.grpcPort, req('RAW'));
    t.ok(bytesOf(raw, 'values') > 0, `${file}: RAW answered`);
    for (const runsVersion of [undefined, 1, 2, 3]) {
      const what = `${file}, runs_version ${runsVersion ?? 'unset'}`;
      const got = await rawRead(gw.grpcPort, req('RUNS', runsVersion)).then(
        (msgs) => msgs,
        (e: unknown) => e as ServiceError,
      );
      if (version > (runsVersion ?? 2)) {
        t.equal((got as ServiceError).code, status.FAILED_PRECONDITION, `${what}: FAILED_PRECONDITION (${(got as ServiceError).details})`);
        t.match((got as ServiceError).details, `block "${blockKey('golden', 3, window)}" has format version 2, whose runs need RUNS version 2; the request's runs_version is ${runsVersion} (a client that decodes up to version ${runsVersion})`);
        t.match((got as ServiceError).details, 'read with encoding RAW, or upgrade the client');
        continue;
      }
      t.ok(Array.isArray(got), `${what}: answered (${(got as ServiceError).details ?? ''})`);
      const msgs = got as Record<string, unknown>[];
      t.ok(bytesOf(msgs, 'runs') > 0, `${what}: the stored runs`);
    }
    // the query client declares what it decodes: every sample as RAW gives it
    const viaRuns = await clientFor(t, gw.grpcPort, 8, { encoding: 'runs' }).query('golden', ids, { start: window, end: window + 4n * 3600_000n });
    const viaRaw = await clientFor(t, gw.grpcPort, 8, { encoding: 'raw' }).query('golden', ids, { start: window, end: window + 4n * 3600_000n });
    t.equal(viaRuns.series.length, ids.length, `${file}: every series through the query client`);
    t.ok(
      viaRuns.series.every((s, i) => Buffer.from(s.values.buffer, s.values.byteOffset, s.values.byteLength).equals(Buffer.from(viaRaw.series[i]!.values.buffer, viaRaw.series[i]!.values.byteOffset, viaRaw.series[i]!.values.byteLength)) && s.timestamps.every((ts, j) => ts === viaRaw.series[i]!.timestamps[j])),
      `${file}: RUNS and RAW give the same bits`,
    );
  }
});

t.test('read budgets: maxConcurrentReads, maxConcurrentReadsPerTenant and maxBytesInFlight refuse with RESOURCE_EXHAUSTED naming the limit, and free up when the cause is gone', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  await writeBlock(bucket, 'big', 0, 1, W0, BIG, { seriesPerPage: 16 });
  const req: RawReadRequest = { tenant: 'big', shard: 0, num_shards: 1, window_start_ms: String(W0), series_ids: idBytes(BIG.map((s) => s.id)), start_ms: String(W0), end_ms: String(W0 + D), encoding: 'RAW' };
  const refused = (what: RegExp) => async (gw: RunningGateway): Promise<void> => {
    const err = await rawRead(gw.grpcPort, req).then(
      () => null,
      (e: unknown) => e as ServiceError,
    );
    t.equal(err?.code, status.RESOURCE_EXHAUSTED, `RESOURCE_EXHAUSTED (${err?.details})`);
    t.match(err?.details ?? '', what);
    // a budget that other calls hold frees up by itself: the refusal tells clients when to retry
    t.same(err?.metadata?.get(RETRY_PUSHBACK_TRAILER), [String(READ_RETRY_PUSHBACK_MS)], 'retry pushback trailer');
  };
  const held = (gw: RunningGateway) => gw.metrics.total('strata_gateway_bytes_in_flight');
  for (const [name, limits, what] of [
    ['maxBytesInFlight', { maxBytesInFlight: 128 * 1024 }, /maxBytesInFlight \(131072\) is used up/],
    ['maxBytesInFlightPerTenant', { maxBytesInFlightPerTenant: 128 * 1024 }, /tenant "big" has used up maxBytesInFlightPerTenant \(131072\)/],
    ['maxConcurrentReads', { maxConcurrentReads: 1 }, /maxConcurrentReads \(1\) calls are being served/],
    ['maxConcurrentReadsPerTenant', { maxConcurrentReadsPerTenant: 1 }, /tenant "big" has maxConcurrentReadsPerTenant \(1\) calls/],
  ] as const) {
    const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { maxMessageBytes: 64 * 1024, ...limits }));
    // a client that does not read its 6 MB answer: the gateway holds at most two 64 KiB messages
    // of it (made, not sent; each charged twice its size: the encoding and the transport's copy),
    // one when the budget has no room for the second, and makes no more
    const slow = unreadCall(t, gw.grpcPort, { tenant: 'big', shard: 0, numShards: 1, windowStartMs: W0, seriesIds: idBytes(BIG.map((s) => s.id)), startMs: W0, endMs: W0 + D, encoding: ENCODING_RAW });
    await eventually(`${name}: a message of the unread answer to be held`, async () => ((await held(gw)) > 64 * 1024 ? true : null));
    t.ok((await held(gw)) <= 2 * 2 * 64 * 1024, `${name}: no more than two messages held (${await held(gw)} bytes charged)`);
    await refused(what)(gw);
    slow.cancel();
    await eventually(`${name}: the held bytes to be given back`, async () => ((await held(gw)) === 0 ? true : null));
    const again = await rawRead(gw.grpcPort, req);
    t.ok(again.length > 1, `${name}: served again once the slow client is gone (${again.length} messages)`);
  }
});

t.test('the query client retries a budget refusal after its retry pushback, and gets the whole answer once the budget frees up', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  await writeBlock(bucket, 'big', 0, 1, W0, BIG, { seriesPerPage: 16 });
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { maxMessageBytes: 64 * 1024, maxConcurrentReadsPerTenant: 1 }));
  const ids = BIG.slice(0, 20).map((s) => s.id);
  const refusals = () => gw.metrics.total('strata_gateway_requests_total', { code: 'RESOURCE_EXHAUSTED' });
  const held = () => gw.metrics.total('strata_gateway_bytes_in_flight');
  // a client that does not read its answer holds the tenant's only call slot
  const hold = async () => {
    const slow = unreadCall(t, gw.grpcPort, { tenant: 'big', shard: 0, numShards: 1, windowStartMs: W0, seriesIds: idBytes(BIG.map((s) => s.id)), startMs: W0, endMs: W0 + D, encoding: ENCODING_RAW });
    await eventually('the unread call to hold a message', async () => ((await held()) > 0 ? true : null));
    return slow;
  };

  const patient = clientFor(t, gw.grpcPort, 1, { encoding: 'raw' });
  let slow = await hold();
  const q = patient.query('big', ids, ONE_WINDOW);
  // refused, then refused again after the pushback: the client keeps trying while the slot is held
  await eventually('two refusals of the query', async () => ((await refusals()) >= 2 ? true : null));
  slow.cancel();
  const r = await q;
  t.same(mismatches(r.series, expected({ tenant: 'big', numShards: 1, windows: 1, series: BIG }, ids, W0, W0 + D)), [], 'exact once the slot is free');
  t.ok(r.retries >= 2, `retried after each pushback (${r.retries} retries)`);

  // without pushback retries the refusal is the query's error, at once
  const before = await refusals();
  const impatient = clientFor(t, gw.grpcPort, 1, { encoding: 'raw', maxPushbackRetries: 0 });
  slow = await hold();
  await t.rejects(impatient.query('big', ids, ONE_WINDOW), { name: 'QueryError', code: status.RESOURCE_EXHAUSTED, message: /maxConcurrentReadsPerTenant \(1\)/ });
  t.equal((await refusals()) - before, 1, 'one call: no retry');
  slow.cancel();
  t.throws(() => clientFor(t, gw.grpcPort, 1, { maxPushbackRetries: -1 }), /maxPushbackRetries/, 'a negative bound is refused');
});

t.test('a call whose last messages the client does not take stays counted until the client leaves or its time is up', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  await writeBlock(bucket, 'big', 0, 1, W0, BIG, { seriesPerPage: 16 });
  // 5 series in RAW: two messages of at most 40 KiB (77 KB); the client's 64 KiB window takes the
  // first and part of the second, so the call has written and ended its whole answer (it counts
  // as served) while the transport still holds the rest, and the status after it
  const five = BIG.slice(0, 5).map((s) => s.id);
  const fields: ReadRequestFields = { tenant: 'big', shard: 0, numShards: 1, windowStartMs: W0, seriesIds: idBytes(five), startMs: W0, endMs: W0 + D, encoding: ENCODING_RAW };
  const req: RawReadRequest = { tenant: 'big', shard: 0, num_shards: 1, window_start_ms: String(W0), series_ids: idBytes(five), start_ms: String(W0), end_ms: String(W0 + D), encoding: 'RAW' };
  const held = (gw: RunningGateway) => gw.metrics.total('strata_gateway_bytes_in_flight');
  for (const leave of ['cancel', 'deadline'] as const) {
    const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { maxMessageBytes: 40 * 1024, maxConcurrentReads: 1, ...(leave === 'deadline' ? { requestTimeoutMs: 6000 } : {}) }));
    t.equal((await rawRead(gw.grpcPort, req)).length, 2, `${leave}: the answer is two messages (and the block is cached: the next read is warm)`);
    const slow = unreadCall(t, gw.grpcPort, fields);
    await eventually(`${leave}: the answer to be counted as served with a message still held`, async () => ((await gw.metrics.total('strata_gateway_requests_total')) >= 2 && (await held(gw)) > 0 ? true : null));
    const err = await rawRead(gw.grpcPort, req).then(
      () => null,
      (e: unknown) => e as ServiceError,
    );
    t.equal(err?.code, status.RESOURCE_EXHAUSTED, `${leave}: the lingering call still counts against maxConcurrentReads (${err?.details})`);
    if (leave === 'cancel') slow.cancel();
    // within 5 s: the cancel must release the call, not its deadline (30 s by default)
    await eventually(`${leave}: the lingering call to be released`, async () => ((await held(gw)) === 0 ? true : null), leave === 'cancel' ? 5000 : 30_000);
    t.equal((await rawRead(gw.grpcPort, req)).length, 2, `${leave}: served again once the lingering call is gone`);
    if (leave === 'deadline') {
      // its stream too: reset CALL_RESET_GRACE_MS after requestTimeoutMs, so it no longer holds a
      // slot of maxConcurrentCalls (before, such streams stayed open until the client left)
      await eventually('deadline: the lingering stream to be reset', async () => ((await gw.metrics.total('strata_grpc_calls_open')) === 0 ? true : null), 30_000);
      t.equal(await gw.metrics.total('strata_grpc_calls_refused_total', { reason: 'call_deadline' }), 1, 'deadline: reset once, counted');
    }
    slow.cancel();
  }
});

t.test('the byte cache stays within its budget while every query stays exact', async (t) => {
  const { bucketConfig, bucket } = await setup(t);
  const ds = makeDataSet({ seed: 3, n: 120, numShards: 4, windows: 4 });
  await writeDataSet(bucket, ds);
  const budget = 96 * 1024;
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { cacheMaxBytes: budget }));
  const q = clientFor(t, gw.grpcPort, ds.numShards);
  const ids = ds.series.map((s) => s.id);
  let maxUsed = 0;
  for (let i = 0; i < ids.length; i += 10) {
    const some = ids.slice(i, i + 10);
    const r = await q.query(ds.tenant, some, { start: W0, end: W0 + 4n * D });
    const bad = mismatches(r.series, expected(ds, some, W0, W0 + 4n * D));
    if (bad.length > 0) t.fail(bad.join('; '));
    maxUsed = Math.max(maxUsed, gw.store.usedBytes);
  }
  t.ok(maxUsed <= budget, `cache peaked at ${maxUsed} of ${budget} bytes`);
  t.ok((await gw.metrics.total('strata_gateway_cache_evictions_total')) > 0, 'blocks were evicted');
  t.ok((await gw.metrics.total('strata_gateway_cache_evicted_bytes_total')) > 0);
});
