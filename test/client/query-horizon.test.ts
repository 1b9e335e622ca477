/**
 * A query over a range far larger than its data (1970 to 2100): the plan stops at the client's
 * clock plus `futureHorizonMs` (no block can hold later samples: the aggregators refuse them),
 * the answers without series are dropped as they come in, and the samples are exactly those of
 * a query over the data's own range. Clocks are injected: nothing depends on the date of the run.
 *
 * Run alone: node scripts/with-rgw.mjs -- npx tap test/client/query-horizon.test.ts
 */
import { crc32c } from '@node-rs/crc32';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import fc from 'fast-check';
import { decodeReadResponse, encodeReadResponse } from '../../src/api/read-codec.js';
import { BlockAssembler, mergeSeries, QueryAnswers } from '../../src/client/block-assembler.js';
import { DEFAULT_FUTURE_HORIZON_MS, planBlockRequests, planQuery, type BlockLayout } from '../../src/client/query-plan.js';
import { QueryClient } from '../../src/client/query.js';
import { DAY_MS } from '../../src/format/day-key.js';
import { encodeRun } from '../../src/format/run.js';
import { openBucket } from '../../src/objstore/index.js';
import { aggregatorConfigSchema } from '../../src/shard-aggregator/config.js';
import { parseGatewayConfig } from '../../src/storage-gateway/config.js';
import { createTestBucket, s3BucketConfig, s3TestEnv } from '../support/s3env.js';
import { D, dataSetClock, expected, makeDataSet, mismatches, startTestGateway, tempDir, W0, writeDataSet } from '../support/gateway.js';
import { credentialEnvRefs, s3TenantBucket } from '../support/tenancy.js';

const H4 = 4 * 3600 * 1000;
const HOUR = 3600 * 1000;
/** 2100-01-01T00:00:00Z. */
const Y2100 = 4_102_444_800_000n;
/** A fixed clock: 30 days and 5 h after W0 (a window boundary is not special). */
const NOW = Number(W0) + 30 * DAY_MS + 5 * HOUR + 12_345;

t.test('the default futureHorizonMs covers the aggregators\' default maxSampleFutureMs', async (t) => {
  const aggregatorDefault = aggregatorConfigSchema.shape.maxSampleFutureMs.parse(undefined);
  t.equal(aggregatorDefault, HOUR, 'the write path refuses samples more than 1 h ahead by default');
  t.ok(DEFAULT_FUTURE_HORIZON_MS > aggregatorDefault, `${DEFAULT_FUTURE_HORIZON_MS} ms ahead, with room for clocks that disagree`);
});

t.test('planQuery() of 1970..2100 plans no window after now + futureHorizonMs', async (t) => {
  const layout: BlockLayout = { numShards: 16, blockDurationMs: H4, days: { nowMs: NOW, dayRequestsAfterMs: 8 * HOUR }, horizon: { nowMs: NOW, futureHorizonMs: DEFAULT_FUTURE_HORIZON_MS } };
  const plan = planQuery('acme', [1n], 0n, Y2100, layout);
  const latest = BigInt(NOW + DEFAULT_FUTURE_HORIZON_MS);
  t.same(plan.filter((r) => r.windowStart > latest), [], 'no window starts after now + horizon');
  const last = plan[plan.length - 1]!;
  t.equal(last.windowStart, (latest / BigInt(H4)) * BigInt(H4), 'the last window holds now + horizon');
  t.equal(last.end, last.windowStart + BigInt(H4), 'and is asked for whole');
  // the closed days since 1970 (one request each), then the 4-hour windows of the days not closed
  const closedDays = plan.filter((r) => r.windowMs === DAY_MS);
  t.equal(closedDays.length, Math.floor((NOW - 8 * HOUR) / DAY_MS), 'one request per closed day since the epoch');
  t.same(plan.slice(closedDays.length).map((r) => r.windowMs), plan.slice(closedDays.length).map(() => undefined), 'then block windows');
  t.equal(plan.length - closedDays.length, 6 + 2, 'the 6 windows of the day not closed yet, and 2 of today up to 07:00:12.345');
  let at = 0n;
  for (const r of plan) {
    if (r.start !== at) t.fail(`a gap or overlap at ${r.routingKey}`);
    at = r.end;
  }
  t.equal(at, last.end, 'the requests tile [0, the end of the horizon window)');

  const lazy = planBlockRequests('acme', [1n], 0n, Y2100, layout);
  t.equal(lazy.size, plan.length, 'counted before any request is made');
  t.equal(lazy.end, last.end, 'the end as planned');
  t.same([...lazy.requests].slice(-3), plan.slice(-3), 'made again on each iteration, in the same order');

  t.same(planQuery('acme', [1n], latest + BigInt(H4), Y2100, layout), [], 'a range wholly after the horizon: no request');
  const { horizon: _, ...free } = layout;
  t.ok(planBlockRequests('acme', [1n], 0n, Y2100, free).size > 150_000, 'without a horizon: every window up to 2100');
});

t.test('planQuery() of a range inside the horizon is the same with and without it', async (t) => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 16 }),
      fc.constantFrom(60_000, 3_600_000, H4, DAY_MS / 3, 7 * HOUR),
      fc.integer({ min: 0, max: 60 * DAY_MS }),
      fc.integer({ min: 0, max: 6 * HOUR }),
      fc.bigInt({ min: 0n, max: 40n * BigInt(DAY_MS) }),
      fc.bigInt({ min: 1n, max: 40n * BigInt(DAY_MS) }),
      (numShards, blockDurationMs, now, horizon, start, len) => {
        const end = start + len;
        const ids = [0n, 1n, 5n, 17n, (1n << 64n) - 1n];
        const days = { nowMs: now, dayRequestsAfterMs: 8 * HOUR };
        const free = planQuery('acme', ids, start, end, { numShards, blockDurationMs, days });
        const bounded = planQuery('acme', ids, start, end, { numShards, blockDurationMs, days, horizon: { nowMs: now, futureHorizonMs: horizon } });
        const latest = BigInt(now + horizon);
        if (end <= latest) return JSON.stringify(free, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) === JSON.stringify(bounded, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
        // past the horizon: the same requests, up to the window holding it
        const cut = (latest / BigInt(blockDurationMs) + 1n) * BigInt(blockDurationMs);
        return bounded.length <= free.length && bounded.every((r, i) => r.routingKey === free[i]!.routingKey && r.start === free[i]!.start && (r.end === free[i]!.end || r.end === cut)) && bounded.every((r) => r.windowStart <= latest);
      },
    ),
  );
  t.pass('property holds');
});

t.test('a query needing more than maxBlocksPerQuery fails at once, naming the bound', async (t) => {
  const plan = () => planQuery('acme', [1n, 2n], 0n, Y2100, { numShards: 16, blockDurationMs: H4, days: { nowMs: NOW, dayRequestsAfterMs: 8 * HOUR }, horizon: { nowMs: NOW, futureHorizonMs: DEFAULT_FUTURE_HORIZON_MS } }, 30_000);
  t.throws(plan, { code: 'ERR_STRATA_INVALID_ARGUMENT', message: /\(cut at the future horizon\) over 2 shards is \d+ block requests, more than 30000 \(the query client's maxBlocksPerQuery\)/ });
  // nothing listens on the endpoint: the refusal comes before any request
  const c = new QueryClient({ endpoints: ['127.0.0.1:1'], numShards: 16, now: () => NOW, maxBlocksPerQuery: 30_000, deadlineMs: 60_000 });
  t.teardown(() => c.close());
  const t0 = performance.now();
  await t.rejects(c.query('acme', [1n, 2n], { start: 0n, end: Y2100 }), { code: 'ERR_STRATA_INVALID_ARGUMENT', message: /more than 30000 \(the query client's maxBlocksPerQuery\)/ });
  t.ok(performance.now() - t0 < 1000, 'at once, not at the deadline');
  t.throws(() => new QueryClient({ endpoints: ['127.0.0.1:1'], numShards: 1, futureHorizonMs: -1 }), /futureHorizonMs/);
  t.throws(() => new QueryClient({ endpoints: ['127.0.0.1:1'], numShards: 1, maxBlocksPerQuery: 0 }), /maxBlocksPerQuery/);
});

/** A gateway's answer to one request, as a client assembles it: `ids` with runs, or none. */
function answer(blockId: string, ids: readonly bigint[], window: bigint, range: { start: bigint; end: bigint }): BlockAssembler {
  const asm = new BlockAssembler([1n, 2n, 3n], 'runs', range, `acme/0/${window}`);
  const runs = ids.map((id) => encodeRun({ timestamps: BigInt64Array.from({ length: 10 }, (_, i) => window + BigInt(i * 60_000)), values: Float64Array.from({ length: 10 }, (_, i) => Number(id) * 100 + i + 0.5) }));
  const meta = Buffer.alloc(ids.length * 16);
  ids.forEach((id, i) => {
    meta.writeBigUInt64LE(id, i * 8);
    meta.writeUInt32LE(runs[i]!.length, ids.length * 8 + i * 4);
    meta.writeUInt32LE(crc32c(runs[i]!), ids.length * 12 + i * 4);
  });
  const n = ids.length;
  asm.add(decodeReadResponse(encodeReadResponse({ blockId, seriesIds: [meta.subarray(0, n * 8)], runLengths: [meta.subarray(n * 8, n * 12)], runCrcs: [meta.subarray(n * 12)], runs })));
  asm.finish();
  return asm;
}

t.test('QueryAnswers holds only the answers with series, and gives them back in plan order', async (t) => {
  const N = 50_000;
  const withData = new Map<number, bigint[]>([
    [7, [1n, 3n]],
    [20_000, [2n]],
    [20_001, [1n, 2n, 3n]],
    [N - 1, [3n]],
  ]);
  const all: BlockAssembler[] = [];
  const answers = new QueryAnswers();
  // answered out of order (requests in flight finish as they do)
  const order = Array.from({ length: N }, (_, i) => (i % 2 === 0 ? i : N - i));
  const byIndex = new Map<number, BlockAssembler>();
  let maxHeld = 0;
  for (const i of order) {
    const window = BigInt(i) * BigInt(H4);
    const ids = withData.get(i);
    // a window without a block (blockId ''), or a block without any of the ids
    const a = ids ? answer('b'.repeat(32), ids, window, { start: window, end: window + BigInt(H4) }) : answer(i % 3 === 0 ? 'e'.repeat(32) : '', [], window, { start: window, end: window + BigInt(H4) });
    byIndex.set(i, a);
    answers.add(i, [a]);
    maxHeld = Math.max(maxHeld, answers.held);
  }
  for (let i = 0; i < N; i++) all.push(byIndex.get(i)!);
  t.equal(answers.requests, N, 'every answer counted');
  t.equal(answers.held, withData.size, 'only the answers with series are held');
  t.equal(maxHeld, withData.size, 'at no time more');
  t.equal(answers.blocksFound, withData.size + order.filter((i) => !withData.has(i) && i % 3 === 0).length, 'blocks found counted, held or not');
  t.equal(answers.messages, N, 'messages counted');
  t.same(answers.blocks().map((b) => all.indexOf(b)), [...withData.keys()].sort((a, b) => a - b), 'in plan order');
  const got = mergeSeries([1n, 2n, 3n], answers.blocks());
  const want = mergeSeries([1n, 2n, 3n], all);
  for (let k = 0; k < 3; k++) {
    t.same([...got[k]!.timestamps], [...want[k]!.timestamps], `series ${k + 1}: timestamps`);
    t.same([...new BigUint64Array(got[k]!.values.buffer, got[k]!.values.byteOffset, got[k]!.values.length)], [...new BigUint64Array(want[k]!.values.buffer, want[k]!.values.byteOffset, want[k]!.values.length)], `series ${k + 1}: value bits`);
  }
  t.equal(got[0]!.timestamps.length, 20, 'series 1: two blocks of 10 samples');
});

t.test('a query from 1970 to 2100 against a gateway returns exactly the samples of the data\'s own range', async (t) => {
  // a tenant with a retention, as a production store has: the gateway answers the days before it
  // without reading the bucket
  const ds = makeDataSet({ seed: 41, n: 12, numShards: 1, windows: 9 });
  const name = await createTestBucket(t, { tag: 'horizon' });
  const bucket = await openBucket({ type: 's3', ...s3BucketConfig(s3TestEnv(), name) });
  t.teardown(() => bucket.close());
  await writeDataSet(bucket, ds);
  const dir = tempDir(t, 'horizon');
  const tenantsFile = join(dir, 'tenants.json');
  writeFileSync(tenantsFile, JSON.stringify({ authRequired: false, retentionMs: 60 * DAY_MS, defaultBucket: s3TenantBucket(name, credentialEnvRefs(1)), tenants: {} }));
  const config = parseGatewayConfig({ tenantsFile, cacheDir: join(dir, 'cache'), grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', logLevel: 'silent' });
  const gw = await startTestGateway(t, config);
  const client = new QueryClient({ endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: 1, now: dataSetClock(), deadlineMs: 120_000 });
  t.teardown(() => client.close());
  const ids = ds.series.map((s) => s.id);
  const own = { start: W0, end: W0 + 9n * D };
  const sane = await client.query(ds.tenant, ids, own);
  const want = expected(ds, ids, own.start, own.end);
  t.same(mismatches(sane.series, want), [], 'the data\'s own range: exact');
  t.ok(want.reduce((n, s) => n + s.samples.timestamps.length, 0) > 1000, 'over a thousand samples');
  const t0 = performance.now();
  const huge = await client.query(ds.tenant, ids, { start: 0n, end: Y2100 });
  const ms = performance.now() - t0;
  t.same(mismatches(huge.series, want), [], '1970..2100: the same samples, bit for bit');
  const days = Math.floor(Number(W0) / DAY_MS) + 30;
  t.ok(huge.requests > days - 2 && huge.requests < days + 12, `${huge.requests} requests: one per closed day since 1970 and the open windows up to the horizon`);
  t.equal(huge.blocksFound, sane.blocksFound, 'the same blocks found');
  t.comment(`1970..2100: ${huge.requests} requests in ${ms.toFixed(0)} ms`);
});
