/**
 * The object store failing during a flush: uploads through a loopback proxy that drops every
 * upload connection. The seal reports UNAVAILABLE, the WAL is kept, the flush is retried in the
 * background and succeeds once the store is back; the block then holds every sample.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/shard-aggregator/outage.test.ts
 */
import { status } from '@grpc/grpc-js';
import t from 'tap';
import { blockKey, DEFAULT_BLOCK_DURATION_MS } from '../../src/format/key.js';
import { FORWARD, startFaultProxy } from '../support/faultproxy.js';
import { createTestBucket, s3TestEnv } from '../support/s3env.js';
import { bitsBytes, bitsOf, eventually, openTestBucket, RawClient, readBlock, s3ConfigFor, startAggregator, tempDir, tsBytes } from '../support/aggregator.js';

const H = BigInt(DEFAULT_BLOCK_DURATION_MS);
const W = ((BigInt(Date.now()) - 24n * 3600n * 1000n) / H) * H;
const TENANT = 'outage';
const headers = { 'x-strata-tenant': TENANT, 'x-strata-shard': '0' };

t.test('an object store outage during a flush keeps the WAL and the flush succeeds later', async (t) => {
  const bucketName = await createTestBucket(t, { tag: 'aggout' });
  const bucket = openTestBucket(t, bucketName);
  let failing = false;
  const proxy = await startFaultProxy(t, s3TestEnv().endpoint, (_n, req) => (failing && (req.method === 'PUT' || req.method === 'POST') ? { kind: 'reset' } : FORWARD));
  const agg = await startAggregator(t, {
    walDir: tempDir('aggout-wal'),
    bucket: s3ConfigFor(bucketName, { endpoint: proxy.endpoint, retry: { maxAttempts: 2, baseDelayMs: 10, maxDelayMs: 50 } }),
    numShards: 1,
    flushIdleMs: 3600 * 1000,
    flushRetryBaseMs: 300,
    flushRetryMaxMs: 600,
  });
  const client = new RawClient(t, agg.address);
  const ids = [1n, 2n, 3n];
  const ts = Array.from({ length: 500 }, (_, k) => W + BigInt(k) * 1000n);
  for (const id of ids) {
    const r = await client.call('Write', { series: [{ id: String(id), timestamps: tsBytes(ts), values: bitsBytes(ts.map((_, k) => bitsOf(Number(id) + k / 8))) }] }, headers);
    t.equal(r.err, null, `series ${id} acknowledged`);
  }

  failing = true;
  const sealed = await client.call('Seal', { window_start_ms: String(W) }, headers);
  t.equal(sealed.err?.code, status.UNAVAILABLE, 'seal reports the failed flush as UNAVAILABLE');
  t.ok(proxy.seen.some((r) => r.fault === 'reset'), 'uploads were dropped');
  let st = await client.status();
  const wal = st.windows.filter((w) => w.tenant === TENANT);
  t.equal(wal.length, 1, 'the WAL is kept');
  t.equal(wal[0]?.samples, String(ids.length * ts.length), 'with every sample');
  t.match(st.last_flushes[0]?.error ?? '', /\S/, 'the failed flush is reported by Status');
  const metrics = await (await fetch(`http://127.0.0.1:${agg.metricsPort}/metrics`)).text();
  t.match(metrics, /strata_aggregator_flushes_total\{result="error"\} [1-9]/);
  t.match(metrics, /strata_bucket_s3_retries_total\{operation="[a-zA-Z]+"\} [1-9]/);

  failing = false;
  st = await eventually('the background retry to flush the window', async () => {
    const s = await client.status();
    return s.windows.some((w) => w.tenant === TENANT) ? null : s;
  });
  t.equal(st.last_flushes[0]?.error, '', 'the last flush succeeded');
  t.equal(st.last_flushes[0]?.block?.samples, String(ids.length * ts.length));
  const got = await readBlock(bucket, blockKey(TENANT, 0, W));
  t.same([...got.keys()], ids);
  for (const id of ids) t.same(got.get(id), { ts, bits: ts.map((_, k) => bitsOf(Number(id) + k / 8)) }, `series ${id} exact`);
});
