/**
 * The gateway end to end against Ceph RGW: blocks written by BlockWriter into an RGW bucket, an
 * in-process gateway on loopback, the query client over gRPC. Random queries (over random series,
 * ranges across window boundaries, empty ones) must return exactly the written samples, bit for
 * bit, in both encodings.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/storage-gateway/read.test.ts
 */
import t from 'tap';
import { RUN_CODES_VERSION } from '../../src/format/run.js';
import { QueryClient } from '../../src/client/query.js';
import { openBucket } from '../../src/objstore/index.js';
import { prng } from '../support/series.js';
import { join } from 'node:path';
import { D, expected, idBytes, makeDataSet, mismatches, rawRead, rgwBucket, startTestGateway, tempDir, testConfig, W0, writeBlock, writeDataSet, dataSetClock } from '../support/gateway.js';

const DS = makeDataSet({ seed: 7, n: 80, numShards: 4, windows: 3 });

t.test('random queries return exactly the written samples, RAW and RUNS', async (t) => {
  const bucketConfig = await rgwBucket(t);
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  const written = await writeDataSet(bucket, DS);
  t.ok(written.size >= 10, `${written.size} blocks written`);
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t)));
  const r = prng(99);
  const allIds = DS.series.map((s) => s.id);
  let queries = 0;
  for (const encoding of ['raw', 'runs'] as const) {
    const client = new QueryClient({ endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: DS.numShards, encoding, now: dataSetClock() });
    t.teardown(() => client.close());
    for (let q = 0; q < 30; q++) {
      const ids = allIds.filter(() => r() < 0.15);
      if (r() < 0.3) ids.push(BigInt(Math.floor(r() * 1e9)) + 5000n); // ids nobody wrote
      const start = W0 - D / 2n + BigInt(Math.floor(r() * Number(D) * 4));
      const len = r() < 0.1 ? 0n : r() < 0.2 ? BigInt(Math.floor(r() * 3)) : BigInt(Math.floor(r() * Number(D) * 2.5));
      const res = await client.query(DS.tenant, ids, { start, end: start + len });
      const bad = mismatches(res.series, expected(DS, ids, start, start + len));
      if (bad.length > 0) t.fail(`${encoding} query ${q} [${start}, ${start + len}) of ${ids.length} ids: ${bad.slice(0, 3).join('; ')}`);
      queries++;
    }
    // everything at once, across all windows
    const res = await client.query(DS.tenant, allIds, { start: W0, end: W0 + 3n * D });
    t.same(mismatches(res.series, expected(DS, allIds, W0, W0 + 3n * D)), [], `${encoding}: all series over all windows, bit-exact`);
    t.equal(res.requests, DS.numShards, 'one request per (day, shard): the three windows are in one closed day');
  }
  t.equal(queries, 60);
  t.equal(await gw.metrics.total('strata_gateway_requests_total', { code: 'OK' }) > 0, true);
});

t.test('RUNS and RAW answers leave out series with no sample in the range (a gap across it)', async (t) => {
  const bucket = await openBucket({ type: 'filesystem', path: join(tempDir(t), 'bucket') });
  t.teardown(() => bucket.close());
  const H = 3_600_000n;
  const gap = { id: 1n, samples: { timestamps: BigInt64Array.of(W0, W0 + 3n * H), values: Float64Array.of(1, 2) } };
  const dense = { id: 2n, samples: { timestamps: BigInt64Array.from({ length: 240 }, (_, i) => W0 + BigInt(i) * 60_000n), values: new Float64Array(240).fill(0.5) } };
  await writeBlock(bucket, 'gap', 0, 1, W0, [gap, dense]);
  const gw = await startTestGateway(t, testConfig({ type: 'filesystem', path: join(tempDir(t), 'unused') }, tempDir(t)), { bucket });
  const seriesOf = async (encoding: 'RAW' | 'RUNS', start: bigint, end: bigint): Promise<bigint[]> => {
    const messages = await rawRead(gw.grpcPort, { tenant: 'gap', shard: 0, num_shards: 1, window_start_ms: String(W0), series_ids: idBytes([1n, 2n]), start_ms: String(start), end_ms: String(end), encoding, runs_version: RUN_CODES_VERSION });
    const ids = Buffer.concat(messages.map((m) => m['series_ids'] as Buffer));
    return [...new Set(Array.from({ length: ids.length / 8 }, (_, i) => ids.readBigUInt64LE(i * 8)))];
  };
  for (const encoding of ['RAW', 'RUNS'] as const) {
    t.same(await seriesOf(encoding, W0 + H, W0 + 2n * H), [2n], `${encoding}: series 1 has no sample in [1h, 2h) although its runs span it`);
    t.same(await seriesOf(encoding, W0 + H, W0 + 3n * H + 1n), [1n, 2n], `${encoding}: both when the range reaches series 1's second sample`);
    t.same(await seriesOf(encoding, W0 + H, W0 + H), [], `${encoding}: none in an empty range`);
    t.same(await seriesOf(encoding, W0, W0 + D), [1n, 2n], `${encoding}: both over the whole window`);
  }
});

t.test('series that share timestamps (version 2 pages) read back exactly in both encodings', async (t) => {
  const ds = makeDataSet({ seed: 11, n: 60, numShards: 2, windows: 2, targets: 3 });
  const bucketConfig = await rgwBucket(t);
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  await writeDataSet(bucket, ds);
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t)));
  const allIds = ds.series.map((s) => s.id);
  for (const encoding of ['raw', 'runs'] as const) {
    const client = new QueryClient({ futureHorizonMs: null, endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: ds.numShards, encoding });
    t.teardown(() => client.close());
    const res = await client.query(ds.tenant, allIds, { start: W0, end: W0 + 2n * D });
    t.same(mismatches(res.series, expected(ds, allIds, W0, W0 + 2n * D)), [], `${encoding}: every series, bit-exact`);
    const some = allIds.filter((_, i) => i % 5 === 1);
    const mid = W0 + D / 2n;
    const part = await client.query(ds.tenant, some, { start: mid, end: mid + D });
    t.same(mismatches(part.series, expected(ds, some, mid, mid + D)), [], `${encoding}: a few series over part of both windows`);
  }
});
