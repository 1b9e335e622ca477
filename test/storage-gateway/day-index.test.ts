/**
 * The day-block index (src/tenancy/day-index.ts, src/storage-gateway/day-index.ts) against RGW:
 * the lifecycle pass writes it; while it is trusted, a gateway reads a closed day it does not
 * name from the 4-hour block with no GET for the day block (one GET for a block the suffix read
 * holds), a day it names from the day block, and a day block published after the listing whose
 * 4-hour block is gone from the day block after all; past the trust bound it looks for the day
 * block first again. Every answer bit-exact.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/storage-gateway/day-index.test.ts
 */
import t from 'tap';
import { QueryClient } from '../../src/client/query.js';
import { DAY_MS, dayBlockKey, dayManifestKey } from '../../src/format/day-key.js';
import { runLifecyclePass, type LifecycleJobOptions } from '../../src/lifecycle/job.js';
import { openBucket } from '../../src/objstore/index.js';
import { ErrorCode, StrataError } from '../../src/errors.js';
import { openTenantsConfig } from '../../src/tenancy/config.js';
import { DAY_INDEX_KEY, DAY_INDEX_MARGIN_MS, DAY_INDEX_MAX_BLOCKS, DAY_INDEX_MAX_BYTES, DAY_INDEX_MAX_GRACE_MS, DAY_INDEX_MAX_HELD_BYTES, DayIndex, DayIndexBuilder } from '../../src/tenancy/day-index.js';
import { TenantRegistry } from '../../src/tenancy/tenants.js';
import { eventually } from '../support/aggregator.js';
import { D, expected, gets, makeDataSet, manualClock, mismatches, rgwBucket, startTestGateway, tempDir, testConfig, W0, writeDataSet, type DataSet } from '../support/gateway.js';

const HOUR = 3600 * 1000;
const DAY = BigInt(DAY_MS);
const MERGE_AFTER = 8 * HOUR;
const GRACE = 3 * HOUR;

t.test('the index: runs of days per (tenant, shard); a malformed one is CORRUPT naming the field', async (t) => {
  const b = new DayIndexBuilder();
  for (const d of [5, 3, 4, 9, 4]) b.add({ tenant: 'acme', shard: 2, dayStartMs: BigInt(d) * DAY });
  b.add({ tenant: 'zeta', shard: 0, dayStartMs: 7n * DAY });
  const bytes = b.encode(1_000, 2_000);
  t.same(JSON.parse(bytes.toString()), { version: 1, listedAtMs: 1000, graceMs: 2000, tenants: { acme: { '2': [[3, 3], [9, 1]] }, zeta: { '0': [[7, 1]] } } });
  const ix = DayIndex.parse(bytes, 'x');
  t.same([2, 3, 4, 5, 6, 8, 9, 10].map((d) => ix.has('acme', 2, BigInt(d) * DAY)), [false, true, true, true, false, false, true, false]);
  t.equal(ix.has('acme', 1, 3n * DAY), false, 'another shard');
  t.equal(ix.has('zeta', 0, 7n * DAY), true);
  t.equal(ix.trustedUntilMs, 1000 + 2000 - DAY_INDEX_MARGIN_MS);
  const bad = (doc: unknown, re: RegExp, what: string): void => {
    let err: unknown = null;
    try {
      DayIndex.parse(Buffer.from(typeof doc === 'string' ? doc : JSON.stringify(doc)), 'lifecycle/day-blocks.json');
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof StrataError && err.code === ErrorCode.CORRUPT && re.test(err.message) && err.message.startsWith('lifecycle/day-blocks.json: '), `${what}: ${String(err)}`);
  };
  bad('{', /not JSON/, 'not JSON');
  bad({ version: 2, listedAtMs: 0, graceMs: 0, tenants: {} }, /version/, 'another version');
  bad({ version: 1, listedAtMs: 0, graceMs: 0, tenants: { acme: { x: [] } } }, /tenants\.acme/, 'a shard that is no number');
  bad({ version: 1, listedAtMs: 0, graceMs: 0, tenants: { acme: { '0': [[5, 2], [6, 1]] } } }, /tenants\.acme\.0: day runs not ascending/, 'overlapping runs');
  bad({ version: 1, listedAtMs: 0, graceMs: 0, tenants: { 'Not A Tenant': {} } }, /tenant "Not A Tenant"/, 'an invalid tenant');
  bad({ version: 1, listedAtMs: 0, graceMs: 0, tenants: {}, extra: 1 }, /extra/, 'an unknown field');
  // an index may come from a tenant's own bucket: its trust and its size once parsed are bounded
  bad({ version: 1, listedAtMs: 0, graceMs: DAY_INDEX_MAX_GRACE_MS + 1, tenants: {} }, /graceMs/, 'a grace over DAY_INDEX_MAX_GRACE_MS (trusted for ever)');
  const manyBad = { version: 1, listedAtMs: 0, graceMs: 0, tenants: { acme: { '0': Array.from({ length: 1000 }, () => [1.5, 1]) } } };
  bad(manyBad, /^(?:[^;]*;){4}[^;]*; and 995 more$/, 'a thousand bad runs: five named, the rest counted');
  const keys = Math.ceil(DAY_INDEX_MAX_HELD_BYTES / 256) + 1;
  const wide: Record<string, [number, number][]> = {};
  for (let i = 0; i < keys; i++) wide[String(i % 100_000)] = [[1, 1]];
  const tenantsWide: Record<string, typeof wide> = {};
  for (let k = 0; k * 100_000 < keys; k++) tenantsWide[`t${k}`] = wide;
  bad({ version: 1, listedAtMs: 0, graceMs: 0, tenants: tenantsWide }, /DAY_INDEX_MAX_HELD_BYTES/, 'an index that would take more memory than a reader holds');
  // the lifecycle writes at most DAY_INDEX_MAX_GRACE_MS, and no index a reader would refuse
  t.equal(DayIndex.parse(b.encode(1_000, DAY_INDEX_MAX_GRACE_MS * 2), 'x').graceMs, DAY_INDEX_MAX_GRACE_MS, 'a longer grace is written as the bound');
  const big = new DayIndexBuilder();
  for (let i = 0; i < keys; i++) big.add({ tenant: `t${Math.floor(i / 1000)}`, shard: i % 1000, dayStartMs: 0n });
  let err: unknown = null;
  try {
    big.encode(0, GRACE);
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof StrataError && err.code === ErrorCode.RESOURCE_EXHAUSTED && /DAY_INDEX_MAX_HELD_BYTES/.test(err.message), String(err).slice(0, 300));
});

t.test('the builder holds at most DAY_INDEX_MAX_BLOCKS day blocks, then makes no index and says why', async (t) => {
  const b = new DayIndexBuilder();
  for (let i = 0; i < DAY_INDEX_MAX_BLOCKS; i++) b.add({ tenant: 'acme', shard: i % 16, dayStartMs: BigInt(Math.floor(i / 16)) * DAY });
  t.equal(b.overflowed, false);
  t.ok(DayIndex.parse(b.encode(0, GRACE), 'x').has('acme', 15, 0n), 'at the bound: an index');
  b.add({ tenant: 'acme', shard: 0, dayStartMs: 0n });
  t.equal(b.overflowed, true);
  let err: unknown = null;
  try {
    b.encode(0, GRACE);
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof StrataError && err.code === ErrorCode.RESOURCE_EXHAUSTED && /DAY_INDEX_MAX_BLOCKS \(1000000\)/.test(err.message), String(err));
});

t.test('reads of closed days start where the index says, exact, while it is trusted', async (t) => {
  const clock = manualClock(Number(W0) + DAY_MS + MERGE_AFTER); // the day of W0 closed and due for merging
  const bucketConfig = await rgwBucket(t);
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  const registry = new TenantRegistry(openTenantsConfig(bucketConfig));
  t.teardown(() => registry.close());
  const passOpts = (grace: number): LifecycleJobOptions => ({
    blockDurationMs: Number(D),
    retentionGraceMs: HOUR,
    incompleteUploadMaxAgeMs: 24 * HOUR,
    deleteConcurrency: 4,
    days: { dayMergeAfterMs: MERGE_AFTER, daySourceGraceMs: grace, workDir: tempDir(t, 'day-work'), now: clock.now },
  });
  const small = (seed: number, tenant: string): DataSet => makeDataSet({ seed, n: 6, numShards: 1, windows: 6, tenant, maxSamples: 200 });

  // 'merged': its day merged by a pass, which writes the index
  const merged = small(81, 'merged');
  await writeDataSet(bucket, merged);
  const listedAt = clock.now();
  t.equal((await runLifecyclePass(registry, listedAt, passOpts(GRACE))).dayMerges, 1, 'the day is merged');
  const index = DayIndex.parse(await bucket.get(DAY_INDEX_KEY), DAY_INDEX_KEY);
  t.equal(index.listedAtMs, listedAt, 'listed from the pass start');
  t.equal(index.graceMs, GRACE, "the pass's daySourceGraceMs");
  t.ok(index.has('merged', 0, W0), 'the day block is named');

  // 'fresh': its 4-hour blocks written after the pass (no day block yet)
  const fresh = small(82, 'fresh');
  await writeDataSet(bucket, fresh);
  // 'gone': a day block published after the index was written, its 4-hour blocks already
  // deleted (a pass elsewhere with no grace; the index here is the older one)
  const gone = small(83, 'gone');
  {
    const other = await rgwBucket(t);
    const ob = await openBucket(other);
    t.teardown(() => ob.close());
    const reg = new TenantRegistry(openTenantsConfig(other));
    t.teardown(() => reg.close());
    await writeDataSet(ob, gone);
    await runLifecyclePass(reg, clock.now(), passOpts(GRACE));
    for (const key of [dayBlockKey('gone', 0, W0), dayManifestKey('gone', 0, W0)]) await bucket.put(key, await ob.get(key));
  }

  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { dayBlocksAfterMs: MERGE_AFTER }), { now: clock.now });
  const c = new QueryClient({ endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: 1, encoding: 'runs', now: clock.now, dayRequestsAfterMs: null });
  t.teardown(() => c.close());
  const blockGets = async (): Promise<number> => (await gets(gw, 'suffix')) + (await gets(gw, 'range'));
  const read = async (ds: DataSet, w: number): Promise<{ bad: string[]; gets: number }> => {
    const before = await blockGets();
    const ids = ds.series.map((s) => s.id);
    const start = W0 + BigInt(w) * D;
    const r = await c.query(ds.tenant, ids, { start, end: start + D });
    return { bad: mismatches(r.series, expected(ds, ids, start, start + D)), gets: (await blockGets()) - before };
  };

  // the first read of a closed day starts the index's load; until it is in, days are looked up first
  t.same((await read(fresh, 0)).bad, [], 'exact while the index loads');
  await eventually('the index loaded', async () => ((await gw.metrics.total('strata_gateway_day_index_loads_total', { result: 'ok' })) === 1 ? true : null));
  for (let w = 1; w < 4; w++) {
    const r = await read(fresh, w);
    t.same(r.bad, [], `fresh window ${w}: exact`);
    t.equal(r.gets, 1, `fresh window ${w}: one GET (the suffix read holds the block), none for a day block`);
  }
  const m = await read(merged, 1);
  t.same(m.bad, [], 'a day the index names: exact, from the day block');
  t.equal(await gw.metrics.total('strata_gateway_day_reads_total', { source: 'day' }), 1, 'answered by the day block');
  const g = await read(gone, 2);
  t.same(g.bad, [], 'a day block the index does not name, 4-hour block gone: exact, from the day block after all');
  t.equal(await gw.metrics.total('strata_gateway_day_reads_total', { source: 'day' }), 2);
  // the next reads of that day (another window, the same again): the directory knows the day
  // block now, so they are answered by it too, not "no data" until a fresh look-up is allowed
  for (const w of [3, 2]) t.same((await read(gone, w)).bad, [], `gone window ${w} again: exact`);
  t.equal(await gw.metrics.total('strata_gateway_day_reads_total', { source: 'day' }), 4);

  // past listedAt + grace - margin the index is not trusted: the day block is looked up first
  clock.advance(GRACE - DAY_INDEX_MARGIN_MS);
  const late = await read(fresh, 4);
  t.same(late.bad, [], 'exact');
  t.equal(late.gets, 2, 'the day block looked up first (none), then the 4-hour block');
  t.equal(await gets(gw, 'day_index'), 2, 'one load, and one more once it was due (refresh)');
});

t.test('an index that cannot be parsed is not used: reads look for the day block first, exact', async (t) => {
  const clock = manualClock(Number(W0) + 2 * DAY_MS + MERGE_AFTER); // two closed days
  const bucketConfig = await rgwBucket(t);
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  const ds = makeDataSet({ seed: 84, n: 6, numShards: 1, windows: 12, tenant: 'acme', maxSamples: 200 });
  await writeDataSet(bucket, ds);
  await bucket.put(DAY_INDEX_KEY, Buffer.from('{"version":1,'));
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { dayBlocksAfterMs: MERGE_AFTER }), { now: clock.now });
  const c = new QueryClient({ endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: 1, encoding: 'runs', now: clock.now, dayRequestsAfterMs: null });
  t.teardown(() => c.close());
  const ids = ds.series.map((s) => s.id);
  const read = async (w: number): Promise<number> => {
    const start = W0 + BigInt(w) * D;
    const before = (await gets(gw, 'suffix')) + (await gets(gw, 'range'));
    const r = await c.query('acme', ids, { start, end: start + D });
    t.same(mismatches(r.series, expected(ds, ids, start, start + D)), [], `window ${w}: exact`);
    return (await gets(gw, 'suffix')) + (await gets(gw, 'range')) - before;
  };
  await read(0); // the first day; starts the index's load
  await eventually('the load failed', async () => ((await gw.metrics.total('strata_gateway_day_index_loads_total', { result: 'error' })) === 1 ? true : null));
  t.equal(await read(6), 2, 'the second day: its day block looked up first (none), then the block');
});

t.test('an index larger than DAY_INDEX_MAX_BYTES is refused after one small read, not downloaded', async (t) => {
  const clock = manualClock(Number(W0) + 2 * DAY_MS + MERGE_AFTER);
  const bucketConfig = await rgwBucket(t);
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  const ds = makeDataSet({ seed: 85, n: 6, numShards: 1, windows: 6, tenant: 'acme', maxSamples: 200 });
  await writeDataSet(bucket, ds);
  await bucket.put(DAY_INDEX_KEY, Buffer.alloc(DAY_INDEX_MAX_BYTES + 1, 0x20));
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { dayBlocksAfterMs: MERGE_AFTER }), { now: clock.now });
  const c = new QueryClient({ endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: 1, encoding: 'runs', now: clock.now, dayRequestsAfterMs: null });
  t.teardown(() => c.close());
  const ids = ds.series.map((s) => s.id);
  const r = await c.query('acme', ids, { start: W0, end: W0 + D });
  t.same(mismatches(r.series, expected(ds, ids, W0, W0 + D)), [], 'exact meanwhile');
  await eventually('the load failed', async () => ((await gw.metrics.total('strata_gateway_day_index_loads_total', { result: 'error' })) === 1 ? true : null));
  t.equal(await gets(gw, 'day_index'), 1, 'one GET of its first bytes, none of the rest');
  // a valid index larger than the first read (whitespace after it): read in two, and used
  const b = new DayIndexBuilder();
  b.add({ tenant: 'acme', shard: 0, dayStartMs: W0 + DAY });
  await bucket.put(DAY_INDEX_KEY, Buffer.concat([b.encode(clock.now(), GRACE), Buffer.alloc(600_000, 0x20)]));
  clock.advance(10 * 60 * 1000); // past the retry delay
  const r2 = await c.query('acme', ids, { start: W0 + D, end: W0 + 2n * D });
  t.same(mismatches(r2.series, expected(ds, ids, W0 + D, W0 + 2n * D)), [], 'exact');
  await eventually('the index loaded', async () => ((await gw.metrics.total('strata_gateway_day_index_loads_total', { result: 'ok' })) === 1 ? true : null));
  t.equal(await gets(gw, 'day_index'), 3, 'two GETs for it: its first bytes, then the rest');
});

t.test('close() aborts a day-block index load in flight and starts none after it (the buckets are about to close)', async (t) => {
  const { DayIndexes } = await import('../../src/storage-gateway/day-index.js');
  const { GatewayMetrics } = await import('../../src/storage-gateway/metrics.js');
  const { createLogger } = await import('../../src/common/logger.js');
  const metrics = new GatewayMetrics();
  const warnings: unknown[] = [];
  const logger = createLogger({ level: 'silent' });
  logger.warn = ((...args: unknown[]) => void warnings.push(args)) as typeof logger.warn;
  const clock = manualClock(Number(W0));
  const indexes = new DayIndexes({ metrics, logger, now: clock.now }, { refreshMs: HOUR, retryMs: 60_000 });
  let started = 0;
  let aborted = 0;
  // a bucket that never answers: the load ends only by its signal
  const stalled = {
    name: 'stalled',
    getRange: (_key: string, _range: unknown, opts: { signal?: AbortSignal }) =>
      new Promise((_resolve, reject) => {
        started++;
        opts.signal!.addEventListener('abort', () => {
          aborted++;
          reject(opts.signal!.reason);
        });
      }),
  } as unknown as import('../../src/objstore/index.js').BucketReader;
  const at = { bucket: stalled, scope: 'stalled', tenant: 'acme', shard: 0 };
  t.equal(indexes.lookup(at, W0), 'unknown', 'no index yet');
  t.equal(started, 1, 'a load started');
  indexes.close();
  await eventually('the load aborted', async () => (aborted === 1 ? true : null));
  await new Promise((r) => setImmediate(r));
  clock.advance(2 * HOUR);
  t.equal(indexes.lookup(at, W0), 'unknown');
  t.equal(started, 1, 'no load after close');
  t.same(warnings, [], 'an abort at close is not reported as a failed load');
  t.equal(await metrics.total('strata_gateway_day_index_loads_total', { result: 'error' }), 0);
});
