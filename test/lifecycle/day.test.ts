/**
 * Day blocks against Ceph RGW, with an injected clock (src/lifecycle/day.ts, src/storage-gateway/
 * day.ts, src/client/query-plan.ts):
 *
 * - the day merge is bit-exact against the 4-hour blocks (every series read back from the day
 *   block equals the data set, NaN payloads and -0 included), its manifest names the day block
 *   and every 4-hour block it holds;
 * - readers (a gateway and the query client, one request per (day, shard)) get every sample
 *   exactly once before the merge, while it runs, after it, while the 4-hour blocks are deleted
 *   and after; the 4-hour blocks go only once daySourceGraceMs has passed;
 * - late data written after the day block (a 4-hour block appearing again after its deletion, and
 *   a 4-hour block replaced before it) is folded into the day block; readers see the old day or
 *   the new one, never a mix or a sample twice; the series the late block does not touch are
 *   copied from the day block as stored, not decoded and encoded again;
 * - a read racing the deletion of a 4-hour block after its gateway missed the day block finds
 *   its samples in the day block (the fresh look-up);
 * - config keys of the three parts are validated.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/lifecycle/day.test.ts
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { createTestBucket, s3BucketConfig, s3TestEnv } from '../support/s3env.js';
import { credentialEnvRefs, s3TenantBucket } from '../support/tenancy.js';
import { BlockReader } from '../../src/block/reader.js';
import { bucketSource } from '../../src/block/source.js';
import { planQuery } from '../../src/client/query-plan.js';
import { QueryClient } from '../../src/client/query.js';
import { DAY_MS, dayBlockKey, dayManifestKey, parseDayKey } from '../../src/format/day-key.js';
import { blockKey, parseBlockKey } from '../../src/format/key.js';
import type { Samples } from '../../src/format/run.js';
import { parseLifecycleConfig } from '../../src/lifecycle/config.js';
import { mergeDay, readDayManifest, type DayMergeResult } from '../../src/lifecycle/day.js';
import { ErrorCode, StrataError } from '../../src/errors.js';
import { mergeTwo } from '../../src/format/merge.js';
import { isBlockObject, runLifecyclePass, type LifecycleJobOptions, type LifecyclePassResult } from '../../src/lifecycle/job.js';
import { openBucket, type Bucket, type BucketConfig } from '../../src/objstore/index.js';
import { parseGatewayConfig } from '../../src/storage-gateway/config.js';
import type { RunningGateway } from '../../src/storage-gateway/gateway.js';
import { openTenantsConfig } from '../../src/tenancy/config.js';
import { TenantRegistry } from '../../src/tenancy/tenants.js';
import { collect } from '../support/async.js';
import { concat, D, expected, makeDataSet, manualClock, mismatches, rgwBucket, slice, startTestGateway, tempDir, testConfig, W0, writeBlock, writeDataSet, type DataSet, type SeriesData } from '../support/gateway.js';

const HOUR = 3600 * 1000;
const DAY = BigInt(DAY_MS);
const MERGE_AFTER = 8 * HOUR;
const GRACE = 3 * HOUR;
const HOUR_N = BigInt(HOUR);

interface Setup {
  readonly bucketConfig: BucketConfig;
  readonly bucket: Bucket;
  readonly registry: TenantRegistry;
  readonly clock: { now: () => number; advance(ms: number): void };
  readonly work: string;
}

async function setup(t: Test, startMs: number): Promise<Setup> {
  const bucketConfig = await rgwBucket(t);
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  const registry = new TenantRegistry(openTenantsConfig(bucketConfig));
  t.teardown(() => registry.close());
  return { bucketConfig, bucket, registry, clock: manualClock(startMs), work: tempDir(t, 'day-work') };
}

function passOpts(s: Setup, extra: Partial<LifecycleJobOptions['days']> = {}): LifecycleJobOptions {
  return {
    blockDurationMs: Number(D),
    retentionGraceMs: HOUR,
    incompleteUploadMaxAgeMs: 24 * HOUR,
    deleteConcurrency: 4,
    days: { dayMergeAfterMs: MERGE_AFTER, daySourceGraceMs: GRACE, workDir: s.work, now: s.clock.now, ...extra },
  };
}

function pass(s: Setup, extra: Partial<LifecycleJobOptions['days']> = {}): Promise<LifecyclePassResult> {
  return runLifecyclePass(s.registry, s.clock.now(), passOpts(s, extra));
}

async function listed(bucket: Bucket): Promise<{ blocks: string[]; days: string[]; manifests: string[] }> {
  const keys = (await collect(bucket.list('blocks/'))).map((i) => i.key);
  return {
    blocks: keys.filter((k) => parseBlockKey(k) !== null),
    days: keys.filter((k) => parseDayKey(k)?.kind === 'block'),
    manifests: keys.filter((k) => parseDayKey(k)?.kind === 'manifest'),
  };
}

function client(t: Test, gw: RunningGateway, ds: DataSet, now: () => number, encoding: 'raw' | 'runs' = 'runs'): QueryClient {
  const c = new QueryClient({ futureHorizonMs: null, endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: ds.numShards, encoding, now, dayRequestsAfterMs: MERGE_AFTER });
  t.teardown(() => c.close());
  return c;
}

/** Queries every series over [start, end) and returns the mismatches against `want`. */
async function check(c: QueryClient, ds: DataSet, start: bigint, end: bigint, want: SeriesData[] = expected(ds, ds.series.map((x) => x.id), start, end)): Promise<string[]> {
  const r = await c.query(ds.tenant, ds.series.map((x) => x.id), { start, end });
  return mismatches(r.series, want);
}

t.test('the query plan: one request per (day, shard) for closed days, per block window for the others', async (t) => {
  const now = Number(W0) + 30 * DAY_MS + 12 * HOUR; // day 30 is open (12 h in), day 29 ended 12 h ago
  const layout = { numShards: 4, blockDurationMs: Number(D), days: { nowMs: now, dayRequestsAfterMs: MERGE_AFTER } };
  const plan = planQuery('acme', [5n], W0 + 2n * HOUR_N, W0 + 30n * DAY + 8n * HOUR_N, layout);
  t.equal(plan.length, 30 + 2, '30 closed days (the first one from its 3rd hour), then the two windows of the open day');
  t.same(plan[0], { tenant: 'acme', shard: 1, windowStart: W0, ids: [5n], start: W0 + 2n * HOUR_N, end: W0 + DAY, routingKey: `acme/1/${W0}/${DAY_MS}`, windowMs: DAY_MS });
  t.same(plan[29]!.windowMs, DAY_MS);
  t.equal(plan[29]!.windowStart, W0 + 29n * DAY);
  t.same(plan[30], { tenant: 'acme', shard: 1, windowStart: W0 + 30n * DAY, ids: [5n], start: W0 + 30n * DAY, end: W0 + 30n * DAY + D, routingKey: `acme/1/${W0 + 30n * DAY}` });
  t.equal(plan[31]!.end, W0 + 30n * DAY + 8n * HOUR_N);
  const tiled = plan.every((r, i) => i === 0 || r.start === plan[i - 1]!.end);
  t.ok(tiled, 'the requests tile the range');
  t.equal(planQuery('acme', [5n], W0, W0 + 30n * DAY, { numShards: 4, blockDurationMs: Number(D) }).length, 180, 'without days: 180 block requests');
  t.throws(() => planQuery('acme', [5n, 6n], W0, W0 + 30n * DAY, layout, 59), /60 block requests, more than 59/);
});

t.test('day merge: bit-exact, readers see every sample once throughout, 4-hour blocks deleted after the grace only', async (t) => {
  const ds = makeDataSet({ seed: 41, n: 80, numShards: 2, windows: 12 }); // two days
  const s = await setup(t, Number(W0) + DAY_MS + MERGE_AFTER - 1);
  const written = await writeDataSet(s.bucket, ds);
  const gw = await startTestGateway(t, testConfig(s.bucketConfig, tempDir(t), { dayBlocksAfterMs: MERGE_AFTER }), { now: s.clock.now });
  const c = client(t, gw, ds, s.clock.now);
  const start = W0;
  const end = W0 + 2n * DAY;

  t.equal((await pass(s)).dayMerges, 0, 'a day younger than dayMergeAfterMs is not merged');
  s.clock.advance(DAY_MS + 1); // both days closed
  t.same(await check(c, ds, start, end), [], 'exact before the merge (day reads answered from the 4-hour blocks)');
  t.equal(await gw.metrics.total('strata_gateway_day_reads_total', { source: 'blocks' }), 4, 'one read per (day, shard)');
  t.equal(await gw.metrics.total('strata_gateway_requests_total'), 4);

  // reads while the merge runs
  const during = Array.from({ length: 4 }, () => check(c, ds, start, end));
  const merged = await pass(s);
  for (const m of await Promise.all(during)) t.same(m, [], 'exact while merging');
  t.equal(merged.dayMerges, 4, 'two days of two shards merged');
  t.equal(merged.daySourcesDeleted, 0, 'nothing deleted yet');
  t.equal(merged.failures, 0);
  const after = await listed(s.bucket);
  t.equal(after.days.length, 4);
  t.equal(after.manifests.length, 4);
  t.equal(after.blocks.length, written.size, 'the 4-hour blocks are all there');

  for (let day = 0; day < 2; day++) {
    const ds0 = W0 + BigInt(day) * DAY;
    for (let shard = 0; shard < 2; shard++) {
      const key = dayBlockKey(ds.tenant, shard, ds0);
      const r = await BlockReader.open(bucketSource(s.bucket, key));
      const v = await r.verify();
      const members = ds.series.filter((x) => x.id % 2n === BigInt(shard)).map((x) => ({ id: x.id, samples: slice(x.samples, ds0, ds0 + DAY) })).filter((x) => x.samples.timestamps.length > 0);
      t.equal(v.series, members.length, `${key}: every series of the day`);
      t.equal(v.samples, members.reduce((n, x) => n + x.samples.timestamps.length, 0), `${key}: every sample of the day`);
      t.equal(r.footer.windowStart, ds0);
      t.equal(r.footer.windowEnd, ds0 + DAY);
      const got: { id: bigint; timestamps: BigInt64Array; values: Float64Array }[] = [];
      for (const m of members) got.push({ id: m.id, ...(await r.readSeries(m.id))! });
      t.same(mismatches(got, members), [], `${key}: bit-exact against the data set`);
      const m = await readDayManifest(s.bucket, dayManifestKey(ds.tenant, shard, ds0));
      const sources = [...written.keys()].filter((k) => k.startsWith(`blocks/${ds.tenant}/`) && parseBlockKey(k)!.shard === shard && parseBlockKey(k)!.windowStartMs >= ds0 && parseBlockKey(k)!.windowStartMs < ds0 + DAY);
      t.same(m?.sources.map((x) => x.key).sort(), sources.sort(), `${key}: the manifest names the six 4-hour blocks`);
      t.equal(m?.dayEtag, (await s.bucket.head(key)).etag, 'and the day block it describes');
      t.equal(m?.dayBlockId, r.footer.blockId);
    }
  }

  t.same(await check(c, ds, start, end), [], 'exact right after the merge (the gateway may still answer from the 4-hour blocks)');
  s.clock.advance(HOUR + 1); // the gateway's negative cache of the day keys (closedStalenessMs) has expired
  const beforeDay = await gw.metrics.total('strata_gateway_day_reads_total', { source: 'day' });
  t.same(await check(c, ds, start, end), [], 'exact from the day blocks');
  t.equal((await gw.metrics.total('strata_gateway_day_reads_total', { source: 'day' })) - beforeDay, 4, 'answered from the day blocks');
  t.same(await check(c, ds, W0 + 5n * HOUR_N, W0 + DAY + 3n * HOUR_N), [], 'exact for a range cutting both days');

  const early = await pass(s);
  t.equal(early.daySourcesDeleted, 0, 'within the grace nothing is deleted');
  t.equal(early.dayMerges, 0, 'and nothing merged again');
  s.clock.advance(GRACE);
  const during2 = Array.from({ length: 4 }, () => check(c, ds, start, end));
  const deleting = await pass(s);
  for (const m of await Promise.all(during2)) t.same(m, [], 'exact while the 4-hour blocks are deleted');
  t.equal(deleting.daySourcesDeleted, written.size, 'past the grace every 4-hour block held goes');
  t.equal(deleting.failures, 0);
  t.same((await listed(s.bucket)).blocks, [], 'no 4-hour block left');
  t.same(await check(c, ds, start, end), [], 'exact after the deletion');

  // a cold gateway: one or two GETs per (day, shard) request
  const cold = await startTestGateway(t, testConfig(s.bucketConfig, tempDir(t), { dayBlocksAfterMs: MERGE_AFTER }), { now: s.clock.now });
  const c2 = client(t, cold, ds, s.clock.now, 'raw');
  t.same(await check(c2, ds, start, end), [], 'exact from a cold gateway (RAW)');
  const getsCold = await cold.metrics.total('strata_gateway_s3_gets_total');
  t.ok(getsCold >= 4 && getsCold <= 12, `${getsCold} GETs for 4 day blocks`);
  t.equal(await cold.metrics.total('strata_gateway_requests_total'), 4);
  // a 4-hour request of a merged window (an older client) is answered from the day block
  const old = new QueryClient({ futureHorizonMs: null, endpoints: [`127.0.0.1:${cold.grpcPort}`], numShards: ds.numShards, dayRequestsAfterMs: null });
  t.teardown(() => old.close());
  const r = await old.query(ds.tenant, ds.series.map((x) => x.id), { start, end });
  t.same(mismatches(r.series, expected(ds, ds.series.map((x) => x.id), start, end)), [], 'block-window requests of merged days are exact too');
  t.equal(r.requests, 24);
});

t.test('late data after the day block is folded in; readers see the old day or the new one, never both', async (t) => {
  const ds = makeDataSet({ seed: 43, n: 30, numShards: 1, windows: 6 });
  const s = await setup(t, Number(W0) + DAY_MS + MERGE_AFTER);
  const written = await writeDataSet(s.bucket, ds);
  t.equal((await pass(s)).dayMerges, 1);
  s.clock.advance(GRACE);
  t.equal((await pass(s)).daySourcesDeleted, written.size, 'the 4-hour blocks are gone');
  const gw = await startTestGateway(t, testConfig(s.bucketConfig, tempDir(t), { dayBlocksAfterMs: MERGE_AFTER }), { now: s.clock.now });
  const c = client(t, gw, ds, s.clock.now);
  const ids = ds.series.map((x) => x.id);
  const oldWant = expected(ds, ids, W0, W0 + DAY);
  t.same(await check(c, ds, W0, W0 + DAY, oldWant), [], 'the day as merged');

  // late samples for window 2 arrive after its 4-hour block was deleted: the aggregator writes a
  // block of the late samples alone. One repeats an existing timestamp with a new value (it wins).
  const w2 = W0 + 2n * D;
  const target = ds.series.find((x) => slice(x.samples, w2, w2 + D).timestamps.length > 0)!;
  const existing = slice(target.samples, w2, w2 + D).timestamps[0]!;
  const lateTs = [existing, w2 + D - 1n].filter((v, i, a) => a.indexOf(v) === i).sort((a, b) => (a < b ? -1 : 1));
  const late: Samples = { timestamps: BigInt64Array.from(lateTs), values: Float64Array.from(lateTs.map((_, i) => 1e6 + i)) };
  if (slice(target.samples, w2, w2 + D).timestamps.includes(w2 + D - 1n)) t.fail('the data set already has the late timestamp');
  await writeBlock(s.bucket, ds.tenant, 0, 1, w2, [{ id: target.id, samples: late }]);
  // the expected day: the late samples merged over window 2, later wins (bit-level merge)
  const newSeries = ds.series.map((x) => (x.id !== target.id ? x : { id: x.id, samples: concat([slice(x.samples, W0, w2), mergeTwo(slice(x.samples, w2, w2 + D), late), slice(x.samples, w2 + D, W0 + DAY)]) }));
  const newWant = expected({ ...ds, series: newSeries }, ids, W0, W0 + DAY);
  t.same(await check(c, ds, W0, W0 + DAY, oldWant), [], 'before the fold: still the old day, exactly (no sample twice)');

  const during = Array.from({ length: 3 }, () => c.query(ds.tenant, ids, { start: W0, end: W0 + DAY }));
  const merges: DayMergeResult[] = [];
  const folded = await pass(s, { onMerge: (d) => merges.push(d) });
  t.equal(folded.dayMerges, 1, 'the late block is folded into the day block');
  t.equal(merges[0]?.series, ds.series.length);
  t.equal(merges[0]?.seriesCopied, ds.series.length - 1, 'every series but the late one is copied from the day block as it was, not decoded again');
  for (const r of await Promise.all(during)) {
    const asOld = mismatches(r.series, oldWant).length === 0;
    const asNew = mismatches(r.series, newWant).length === 0;
    t.ok(asOld || asNew, 'during the fold: the old day or the new one');
  }
  const m = await readDayManifest(s.bucket, dayManifestKey(ds.tenant, 0, W0));
  t.same(m?.sources.map((x) => x.key), [blockKey(ds.tenant, 0, w2)], 'the manifest holds the late block');
  s.clock.advance(HOUR + 1); // past the gateway's closedStalenessMs
  t.same(await check(c, ds, W0, W0 + DAY, newWant), [], 'after the fold: the new day, exactly (the late value won)');
  s.clock.advance(GRACE);
  t.equal((await pass(s)).daySourcesDeleted, 1, 'the late block goes after the grace');
  t.same(await check(c, ds, W0, W0 + DAY, newWant), [], 'still exact');

  // a 4-hour block replaced while it exists (late data before the deletion): B' holds B and more
  const s2 = await setup(t, Number(W0) + DAY_MS + MERGE_AFTER);
  await writeDataSet(s2.bucket, ds);
  t.equal((await pass(s2)).dayMerges, 1);
  const w3 = W0 + 3n * D;
  const members = ds.series.map((x) => ({ id: x.id, samples: slice(x.samples, w3, w3 + D) })).filter((x) => x.samples.timestamps.length > 0);
  const extra = { id: 7_777n, samples: { timestamps: BigInt64Array.from([w3 + 5n]), values: Float64Array.from([-0]) } };
  const replaced = [...members, extra].sort((a, b) => (a.id < b.id ? -1 : 1));
  if (ds.series.some((x) => x.id === extra.id)) t.fail('id 7777 is in the data set');
  await writeBlock(s2.bucket, ds.tenant, 0, 1, w3, replaced);
  s2.clock.advance(GRACE);
  const merges2: DayMergeResult[] = [];
  const r2 = await pass(s2, { onMerge: (d) => merges2.push(d) });
  t.equal(r2.dayMerges, 1, 'the replaced block is merged again');
  t.equal(merges2[0]?.seriesCopied, ds.series.length - members.length + 1, "copied: the series B' does not hold, and the one only B' holds");
  t.equal(r2.daySourcesDeleted, 0, 'and the 4-hour blocks wait for their new grace');
  const day = await BlockReader.open(bucketSource(s2.bucket, dayBlockKey(ds.tenant, 0, W0)));
  const got = await day.readSeries(extra.id);
  t.same([...got!.timestamps], [w3 + 5n], 'the new series is in the day block');
  t.ok(Object.is(got!.values[0], -0), 'bit-exact (-0)');
  t.equal((await day.verify()).samples, ds.series.reduce((n, x) => n + slice(x.samples, W0, W0 + DAY).timestamps.length, 0) + 1, 'every other sample once');
});

t.test('a replica whose merge started from an older day block (it paused past its lease) does not replace the day block published since', async (t) => {
  const ds = makeDataSet({ seed: 47, n: 20, numShards: 1, windows: 6 });
  const s = await setup(t, Number(W0) + DAY_MS + MERGE_AFTER);
  await writeDataSet(s.bucket, ds);
  t.equal((await pass(s)).dayMerges, 1, 'the day is merged');
  const dayKey = dayBlockKey(ds.tenant, 0, W0);
  // what the paused replica listed: the day block as first merged, and a late 4-hour block
  const w2 = W0 + 2n * D;
  const target = ds.series[0]!;
  const late: Samples = { timestamps: BigInt64Array.from([w2 + 7n]), values: Float64Array.from([42.5]) };
  await writeBlock(s.bucket, ds.tenant, 0, 1, w2, [{ id: target.id, samples: late }]);
  const lateInfo = await s.bucket.head(blockKey(ds.tenant, 0, w2));
  const stale = { tenant: ds.tenant, shard: 0, dayStartMs: W0, sources: new Map([[lateInfo.key, lateInfo]]), day: await s.bucket.head(dayKey), manifest: null };
  // meanwhile the replica holding the lease folds that late block in, and a second late block
  t.equal((await pass(s)).dayMerges, 1, 'the other replica folds the late block in');
  const w4 = W0 + 4n * D;
  const late2: Samples = { timestamps: BigInt64Array.from([w4 + 9n]), values: Float64Array.from([-7.25]) };
  await writeBlock(s.bucket, ds.tenant, 0, 1, w4, [{ id: target.id, samples: late2 }]);
  t.equal((await pass(s)).dayMerges, 1, 'and the second one');
  const published = await s.bucket.head(dayKey);
  // the paused replica wakes up and publishes what it merged from the older day block
  const err = await mergeDay(s.bucket, stale, null, { workDir: s.work, now: s.clock.now, shouldContinue: () => true }).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof StrataError && err.code === ErrorCode.ALREADY_EXISTS, `refused (${(err as Error | null)?.message})`);
  t.equal((await s.bucket.head(dayKey)).etag, published.etag, 'the day block published since is still there');
  const day = await BlockReader.open(bucketSource(s.bucket, dayKey));
  const got = await day.readSeries(target.id);
  const ts = [...got!.timestamps];
  t.ok(ts.includes(w2 + 7n) && ts.includes(w4 + 9n), 'with both late samples');
});

t.test('a read racing the deletion of a 4-hour block finds the day block with a fresh look-up', async (t) => {
  const ds = makeDataSet({ seed: 47, n: 20, numShards: 1, windows: 6 });
  const s = await setup(t, Number(W0) + DAY_MS + MERGE_AFTER);
  await writeDataSet(s.bucket, ds);
  const gw = await startTestGateway(t, testConfig(s.bucketConfig, tempDir(t), { dayBlocksAfterMs: MERGE_AFTER }), { now: s.clock.now });
  const c = client(t, gw, ds, s.clock.now);
  t.same(await check(c, ds, W0, W0 + D), [], 'exact for the first window: the gateway remembers "no day block" and opened one 4-hour block');
  // a lifecycle whose grace is (wrongly) shorter than the gateway's staleness deletes at once
  t.equal((await pass(s, { daySourceGraceMs: 0 })).dayMerges, 1);
  t.ok((await pass(s, { daySourceGraceMs: 0 })).daySourcesDeleted > 0, 'the 4-hour blocks are deleted');
  t.same(await check(c, ds, W0, W0 + DAY), [], 'the whole day, exact: the missing 4-hour blocks sent the gateway to the bucket for the day block');
  t.equal(await gw.metrics.total('strata_gateway_day_reads_total', { source: 'day' }), 1, 'answered from the day block');
  t.same(await check(c, ds, W0, W0 + DAY), [], 'and again');
});

/**
 * A bucket with a day of `seed`'s data set whose windows 0 and 1 are past retention at the
 * clock's start (window 2 is not), and a gateway reading it through the same tenants file.
 */
async function retentionSetup(t: Test, tag: string, seed: number): Promise<{ s: Setup; gw: RunningGateway; ds: DataSet; ids: bigint[]; want: SeriesData[] }> {
  const name = await createTestBucket(t, { user: 1, tag });
  const dir = tempDir(t, tag);
  const now = Number(W0) + DAY_MS + MERGE_AFTER;
  const tenantsFile = join(dir, 'tenants.json');
  writeFileSync(tenantsFile, JSON.stringify({ authRequired: false, retentionMs: now - Number(W0 + 2n * D), defaultBucket: s3TenantBucket(name, credentialEnvRefs(1)) }));
  const ds = makeDataSet({ seed, n: 20, numShards: 1, windows: 6 });
  const bucketConfig = { type: 's3', ...s3BucketConfig(s3TestEnv(), name, {}, 1) } as BucketConfig;
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  await writeDataSet(bucket, ds);
  const registry = new TenantRegistry(openTenantsConfig(bucketConfig));
  t.teardown(() => registry.close());
  const s: Setup = { bucketConfig, bucket, registry, clock: manualClock(now), work: tempDir(t, `${tag}-work`) };
  const gw = await startTestGateway(t, testConfig({ type: 'filesystem', path: dir }, join(dir, 'cache'), { bucket: undefined, tenantsFile, dayBlocksAfterMs: MERGE_AFTER }), { now: s.clock.now });
  const ids = ds.series.map((x) => x.id);
  return { s, gw, ds, ids, want: expected(ds, ids, W0 + 2n * D, W0 + DAY) };
}

t.test('retention cuts a day read at the first window within retention, from the day block as from 4-hour requests', async (t) => {
  const { s, gw, ds, ids, want } = await retentionSetup(t, 'day-ret', 53);
  t.equal((await pass(s)).dayMerges, 1);
  t.same(await check(client(t, gw, ds, s.clock.now), ds, W0, W0 + DAY, want), [], 'a day request: the expired windows are left out');
  const perBlock = new QueryClient({ futureHorizonMs: null, endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: 1, dayRequestsAfterMs: null });
  t.teardown(() => perBlock.close());
  const r = await perBlock.query(ds.tenant, ids, { start: W0, end: W0 + DAY });
  t.same(mismatches(r.series, want), [], '4-hour requests: the same answer');
  t.ok((await gw.metrics.total('strata_gateway_day_reads_total', { source: 'day' })) >= 2, 'both answered from the day block');
});

t.test('retention cuts a day read that finds the day block only after its 4-hour blocks went missing (RUNS: the stored runs are not sent uncut)', async (t) => {
  const { s, gw, ds, want } = await retentionSetup(t, 'day-ret-gone', 57);
  const c = client(t, gw, ds, s.clock.now);
  // before the merge: the gateway learns "no day block" and opens one 4-hour block (window 2)
  t.same(await check(c, ds, W0 + 2n * D, W0 + 3n * D), [], 'exact before the merge');
  t.equal((await pass(s)).dayMerges, 1, 'the day is merged');
  t.ok((await pass(s, { daySourceGraceMs: 0 })).daySourcesDeleted > 0, 'its 4-hour blocks are deleted at once (a grace shorter than the staleness)');
  // the 4-hour blocks are missing now: a fresh look-up finds the day block, whose stored runs hold the expired windows too
  t.same(await check(c, ds, W0, W0 + DAY, want), [], 'exact, without the expired windows, from the day block found after all');
  t.ok((await gw.metrics.total('strata_gateway_day_reads_total', { source: 'day' })) >= 1, 'answered from the day block');
});

t.test('the counts of blocks deleted count 4-hour and day blocks, not day manifests (they go with their day block)', (t) => {
  t.ok(isBlockObject(blockKey('acme', 3, W0)), 'a 4-hour block');
  t.ok(isBlockObject(dayBlockKey('acme', 3, W0)), 'a day block');
  t.notOk(isBlockObject(dayManifestKey('acme', 3, W0)), 'a day manifest');
  t.notOk(isBlockObject('blocks/acme/other'), 'anything else');
  t.end();
});

t.test('config: the day options are validated', async (t) => {
  const lc = parseLifecycleConfig({ bucket: { type: 'filesystem', path: '/tmp/x' } });
  t.equal(lc.dayBlocks, true);
  t.equal(lc.dayMergeAfterMs, 8 * HOUR);
  t.equal(lc.daySourceGraceMs, 3 * HOUR);
  t.throws(() => parseLifecycleConfig({ bucket: { type: 'filesystem', path: '/tmp/x' }, dayMergeAfterMs: -1 }), /dayMergeAfterMs/);
  t.throws(() => parseLifecycleConfig({ bucket: { type: 'filesystem', path: '/tmp/x' }, dayBlocks: 'yes' }), /dayBlocks/);
  const gw = parseGatewayConfig({ bucket: { type: 'filesystem', path: '/tmp/x' }, cacheType: 'memory' });
  t.equal(gw.dayBlocksAfterMs, 8 * HOUR);
  t.throws(() => parseGatewayConfig({ bucket: { type: 'filesystem', path: '/tmp/x' }, cacheType: 'memory', dayBlocksAfterMs: 1.5 }), /dayBlocksAfterMs/);
});
