/**
 * The aggregator as a real child process (`strata aggregator`), WAL on disk, blocks in the test
 * S3 server: bad input gets the right status and stores nothing, values round-trip bit-exactly
 * with last-write-wins, group commit, late samples, concurrent seals, graceful SIGTERM + restart.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/shard-aggregator/service.test.ts
 */
import { status } from '@grpc/grpc-js';
import t from 'tap';
import { blockKey, DEFAULT_BLOCK_DURATION_MS } from '../../src/format/key.js';
import { createTestBucket } from '../support/s3env.js';
import { collect } from '../support/async.js';
import {
  bitsBytes,
  bitsOf,
  openTestBucket,
  RawClient,
  readBlock,
  s3ConfigFor,
  startAggregator,
  tempDir,
  tsBytes,
} from '../support/aggregator.js';

const H = BigInt(DEFAULT_BLOCK_DURATION_MS);
const NOW = BigInt(Date.now());
/** A window two days ago, and the one after it. */
const W = ((NOW - 2n * 24n * 3600n * 1000n) / H) * H;
const W2 = W + H;
const STALE_NAN = 0x7ff0000000000002n;

const bucketName = await createTestBucket(t, { tag: 'aggsvc' });
const bucket = openTestBucket(t, bucketName);
const walDir = tempDir('aggsvc-wal');
const config = {
  walDir,
  bucket: s3ConfigFor(bucketName),
  numShards: 4,
  shards: [0, 1],
  maxSamplesPerRequest: 1000,
  maxRequestBytes: 256 * 1024,
  maxSampleAgeMs: 7 * 24 * 3600 * 1000,
  maxSampleFutureMs: 3600 * 1000,
  flushIdleMs: 3600 * 1000,
  verifyUpload: 'full',
};
let agg = await startAggregator(t, config);
let client = new RawClient(t, agg.address);

const hdr = (tenant: string, shard: number | string): Record<string, string> => ({ 'x-strata-tenant': tenant, 'x-strata-shard': String(shard) });
const series = (id: bigint, ts: bigint[], bits: bigint[]) => ({ id: id.toString(), timestamps: tsBytes(ts), values: bitsBytes(bits) });
const one = (id: bigint, n = 3, start = W) =>
  series(
    id,
    Array.from({ length: n }, (_, i) => start + BigInt(i) * 15000n),
    Array.from({ length: n }, (_, i) => bitsOf(i)),
  );

async function walOf(tenant: string): Promise<{ windows: number; bytes: bigint }> {
  const s = await client.status();
  const mine = s.windows.filter((w) => w.tenant === tenant);
  return { windows: mine.length, bytes: mine.reduce((n, w) => n + BigInt(w.wal_bytes), 0n) };
}

t.test('health is SERVING and Status reports ownership and the layout', async (t) => {
  t.equal(await client.health(), 'SERVING');
  const before = BigInt(Date.now());
  const s = await client.status();
  const after = BigInt(Date.now());
  t.equal(s.num_shards, 4);
  t.same(s.owned_shards, [0, 1]);
  t.equal(s.state, 'serving');
  t.equal(s.block_duration_ms, String(DEFAULT_BLOCK_DURATION_MS));
  // the accepted range is [now - maxSampleAgeMs, now + maxSampleFutureMs] at the moment it answered
  const min = BigInt(s.min_timestamp_ms);
  const max = BigInt(s.max_timestamp_ms);
  t.equal(max - min, BigInt(config.maxSampleAgeMs + config.maxSampleFutureMs), 'as wide as maxSampleAgeMs + maxSampleFutureMs');
  t.ok(min >= before - BigInt(config.maxSampleAgeMs) && min <= after - BigInt(config.maxSampleAgeMs), 'measured from the time of the call');
});

t.test('bad input gets the right status, names the field, and stores nothing', async (t) => {
  const tenant = 'bad';
  const ok = one(4n);
  const cases: { name: string; method?: 'Write' | 'Seal'; req: unknown; headers: Record<string, string>; code: status; msg: RegExp }[] = [
    { name: 'missing tenant header', req: { series: [ok] }, headers: { 'x-strata-shard': '0' }, code: status.INVALID_ARGUMENT, msg: /x-strata-tenant: missing header/ },
    { name: 'invalid tenant', req: { series: [ok] }, headers: hdr('Acme/../x', 0), code: status.INVALID_ARGUMENT, msg: /x-strata-tenant/ },
    { name: 'missing shard header', req: { series: [ok] }, headers: { 'x-strata-tenant': tenant }, code: status.INVALID_ARGUMENT, msg: /x-strata-shard: missing header/ },
    { name: 'shard not a number', req: { series: [ok] }, headers: hdr(tenant, 'zero'), code: status.INVALID_ARGUMENT, msg: /x-strata-shard/ },
    { name: 'shard with a leading zero (a proxy routes on the exact string)', req: { series: [ok] }, headers: hdr(tenant, '01'), code: status.INVALID_ARGUMENT, msg: /x-strata-shard: "01" is not a shard number in 0\.\.3/ },
    { name: 'shard beyond numShards', req: { series: [ok] }, headers: hdr(tenant, 4), code: status.INVALID_ARGUMENT, msg: /x-strata-shard.*0\.\.3/ },
    { name: 'shard not owned', req: { series: [ok] }, headers: hdr(tenant, 2), code: status.FAILED_PRECONDITION, msg: /shard 2 is not owned.*owns 0-1 of 4/ },
    { name: 'series of another shard', req: { series: [ok, one(5n)] }, headers: hdr(tenant, 0), code: status.INVALID_ARGUMENT, msg: /series\[1\]\.id.*belongs to shard 1/ },
    {
      name: 'timestamps not a multiple of 8 bytes',
      req: { series: [ok, { id: '8', timestamps: Buffer.alloc(12), values: Buffer.alloc(12) }] },
      headers: hdr(tenant, 0),
      code: status.INVALID_ARGUMENT,
      msg: /series\[1\]\.timestamps: 12 bytes/,
    },
    {
      name: 'values and timestamps of different lengths',
      req: { series: [{ id: '8', timestamps: tsBytes([W, W + 1n]), values: bitsBytes([1n]) }] },
      headers: hdr(tenant, 0),
      code: status.INVALID_ARGUMENT,
      msg: /series\[0\]\.values: 1 values for 2 timestamps/,
    },
    { name: 'empty series', req: { series: [ok, series(8n, [], [])] }, headers: hdr(tenant, 0), code: status.INVALID_ARGUMENT, msg: /series\[1\]\.timestamps: no samples/ },
    {
      name: 'timestamp older than accepted',
      req: { series: [ok, series(8n, [W, NOW - 8n * 24n * 3600n * 1000n], [1n, 2n])] },
      headers: hdr(tenant, 0),
      code: status.INVALID_ARGUMENT,
      msg: /series\[1\]\.timestamps: sample 1 .*outside the accepted range/,
    },
    {
      name: 'timestamp too far in the future',
      req: { series: [series(8n, [NOW + 2n * 3600n * 1000n], [1n])] },
      headers: hdr(tenant, 0),
      code: status.INVALID_ARGUMENT,
      msg: /series\[0\]\.timestamps: sample 0 .*outside the accepted range/,
    },
    {
      name: 'timestamp beyond 2^53',
      req: { series: [series(8n, [1n << 62n], [1n])] },
      headers: hdr(tenant, 0),
      code: status.INVALID_ARGUMENT,
      msg: /series\[0\]\.timestamps/,
    },
    { name: 'more samples than maxSamplesPerRequest', req: { series: [one(4n, 600), one(8n, 401)] }, headers: hdr(tenant, 0), code: status.RESOURCE_EXHAUSTED, msg: /1001 samples.*maxSamplesPerRequest \(1000\)/ },
    { name: 'request larger than maxRequestBytes', req: { series: [one(4n, 20000)] }, headers: hdr(tenant, 0), code: status.RESOURCE_EXHAUSTED, msg: /the request message is \d+ bytes, more than maxRequestBytes \(262144\); nothing of it was used/ },
    { name: 'malformed authorization', req: { series: [ok] }, headers: { ...hdr(tenant, 0), authorization: 'Basic abc' }, code: status.UNAUTHENTICATED, msg: /Bearer/ },
    { name: 'seal of an unaligned window', method: 'Seal', req: { window_start_ms: String(W + 1n) }, headers: hdr(tenant, 0), code: status.INVALID_ARGUMENT, msg: /window_start_ms.*not aligned/ },
    { name: 'seal of a shard not owned', method: 'Seal', req: { window_start_ms: String(W) }, headers: hdr(tenant, 3), code: status.FAILED_PRECONDITION, msg: /shard 3 is not owned/ },
  ];
  const before = await client.status();
  for (const c of cases) {
    const { err } = await client.call(c.method ?? 'Write', c.req, c.headers);
    t.equal(err?.code, c.code, `${c.name}: ${status[c.code]}`);
    t.match(err?.details ?? '', c.msg, `${c.name}: message`);
    const wal = await walOf(tenant);
    t.equal(wal.windows, 0, `${c.name}: no WAL for the tenant`);
  }
  const after = await client.status();
  t.equal(after.wal_bytes, before.wal_bytes, 'WAL bytes unchanged');
  t.equal(after.wal_requests, before.wal_requests, 'no WAL write happened');
  // the same tenant's valid request is accepted: the refusals above were about the input
  const { err } = await client.call('Write', { series: [ok] }, hdr(tenant, 0));
  t.equal(err, null, 'a valid request is accepted');
  t.equal((await walOf(tenant)).windows, 1);
  const sealed = await client.call('Seal', { window_start_ms: String(W) }, hdr(tenant, 0));
  t.equal(sealed.err, null);
  const blocks = await collect(bucket.list(`blocks/${tenant}/`));
  t.same(blocks.map((b) => b.key), [blockKey(tenant, 0, W)], 'only the valid samples reached a block');
  const got = await readBlock(bucket, blockKey(tenant, 0, W));
  t.same([...got.keys()], [4n], 'one series');
});

t.test('values round-trip bit-exactly; a repeated timestamp keeps the last write', async (t) => {
  const tenant = 'bits';
  const t0 = W + 1000n;
  const t1 = W + 2000n;
  const t2 = W + 3000n;
  const negZero = bitsOf(-0);
  const posInf = bitsOf(Infinity);
  const negInf = bitsOf(-Infinity);
  const qnanPayload = 0x7ff8000000000001n;
  const snanNeg = 0xfff0000000000001n;
  // request 1: unsorted, with t1 twice (position 3 wins over position 1)
  let r = await client.call('Write', { series: [series(4n, [t2, t1, t0, t1], [posInf, negZero, STALE_NAN, bitsOf(1.5)]), series(8n, [t0, t1], [qnanPayload, snanNeg])] }, hdr(tenant, 0));
  t.equal(r.err, null);
  // request 2: t2 again (a later request wins), and a sample in the next window
  r = await client.call('Write', { series: [series(4n, [t2, W2 + 5n], [negInf, negZero])] }, hdr(tenant, 0));
  t.equal(r.err, null);
  // request 3: the same series twice in one request: the later entry wins
  r = await client.call('Write', { series: [series(8n, [t1], [bitsOf(7)]), series(8n, [t1], [bitsOf(8)])] }, hdr(tenant, 0));
  t.equal(r.err, null);
  for (const w of [W, W2]) t.equal((await client.call('Seal', { window_start_ms: String(w) }, hdr(tenant, 0))).err, null);
  const a = await readBlock(bucket, blockKey(tenant, 0, W));
  t.same(a.get(4n), { ts: [t0, t1, t2], bits: [STALE_NAN, bitsOf(1.5), negInf] }, 'series 4 in window 1');
  t.same(a.get(8n), { ts: [t0, t1], bits: [qnanPayload, bitsOf(8)] }, 'series 8 in window 1');
  const b = await readBlock(bucket, blockKey(tenant, 0, W2));
  t.same(b.get(4n), { ts: [W2 + 5n], bits: [negZero] }, 'series 4 in window 2 (-0 kept)');
  t.equal(b.size, 1);
});

t.test('group commit: concurrent writes share synced WAL writes', async (t) => {
  const tenant = 'gc';
  const before = await client.status();
  const n = 64;
  const results = await Promise.all(Array.from({ length: n }, (_, i) => client.call('Write', { series: [one(BigInt(4 * (i + 1)), 50)] }, hdr(tenant, 0))));
  t.ok(results.every((r) => r.err === null), 'all acknowledged');
  const after = await client.status();
  const syncs = Number(after.wal_syncs) - Number(before.wal_syncs);
  const requests = Number(after.wal_requests) - Number(before.wal_requests);
  t.equal(requests, n, 'every request went through the WAL');
  t.ok(syncs < requests, `${syncs} synced writes for ${requests} requests`);
  const metrics = await (await fetch(`http://127.0.0.1:${agg.metricsPort}/metrics`)).text();
  t.match(metrics, /strata_aggregator_wal_syncs_total \d+/);
  t.match(metrics, /strata_aggregator_wal_group_requests_bucket\{le="64"\} \d+/);
  t.match(metrics, /strata_aggregator_samples_ingested_total\{tenant="_other"\} \d+/, "per-tenant label; tenants outside a tenants file are pooled");
});

t.test('late samples after a flush are merged into a replacement block', async (t) => {
  const tenant = 'late';
  const ts = (k: number) => W + BigInt(k) * 1000n;
  let r = await client.call('Write', { series: [series(4n, [ts(1), ts(2), ts(3)], [bitsOf(1), bitsOf(2), bitsOf(3)])] }, hdr(tenant, 0));
  t.equal(r.err, null);
  let s = await client.call('Seal', { window_start_ms: String(W) }, hdr(tenant, 0));
  const first = (s.res as { blocks: { replaced: boolean; samples: string; block_id: string }[] }).blocks;
  t.equal(first.length, 1);
  t.equal(first[0]!.replaced, false);
  t.equal((await walOf(tenant)).windows, 0, 'WAL deleted after the flush');
  // late: overwrite ts(2), add ts(0) and ts(4), and a new series
  r = await client.call('Write', { series: [series(4n, [ts(0), ts(2), ts(4)], [bitsOf(10), bitsOf(20), bitsOf(40)]), series(8n, [ts(5)], [bitsOf(5)])] }, hdr(tenant, 0));
  t.equal(r.err, null);
  s = await client.call('Seal', { window_start_ms: String(W) }, hdr(tenant, 0));
  const second = (s.res as { blocks: { replaced: boolean; samples: string; block_id: string }[] }).blocks;
  t.equal(second[0]!.replaced, true, 'the block was replaced');
  t.not(second[0]!.block_id, first[0]!.block_id);
  const got = await readBlock(bucket, blockKey(tenant, 0, W));
  t.same(got.get(4n), { ts: [ts(0), ts(1), ts(2), ts(3), ts(4)], bits: [10, 1, 20, 3, 40].map(bitsOf) });
  t.same(got.get(8n), { ts: [ts(5)], bits: [bitsOf(5)] });
  t.equal((await walOf(tenant)).windows, 0);
});

t.test('two concurrent seals of one window produce one block', async (t) => {
  const tenant = 'seal2';
  for (let i = 0; i < 5; i++) t.equal((await client.call('Write', { series: [one(BigInt(4 * (i + 1)), 100)] }, hdr(tenant, 0))).err, null);
  const [a, b] = await Promise.all([
    client.call('Seal', { window_start_ms: String(W) }, hdr(tenant, 0)),
    client.call('Seal', { window_start_ms: String(W) }, hdr(tenant, 0)),
  ]);
  t.equal(a.err, null);
  t.equal(b.err, null);
  const ids = [a, b].flatMap((x) => (x.res as { blocks: { block_id: string }[] }).blocks.map((bl) => bl.block_id));
  t.ok(ids.length >= 1, 'a seal reports the block');
  t.equal(new Set(ids).size, 1, 'both seals saw the same block');
  const objects = await collect(bucket.list(`blocks/${tenant}/`));
  t.equal(objects.length, 1, 'one block object');
  const got = await readBlock(bucket, blockKey(tenant, 0, W));
  t.equal(got.size, 5);
  const flushes = (await client.status()).last_flushes.filter((f) => f.block?.key === blockKey(tenant, 0, W));
  t.equal(flushes.length, 1, 'flushed once');
});

t.test('SIGTERM drains and exits 0; unflushed samples survive the restart', async (t) => {
  const tenant = 'restart';
  t.equal((await client.call('Write', { series: [one(4n, 10), one(9n, 10)] }, hdr(tenant, 0))).err?.code, status.INVALID_ARGUMENT, 'series 9 is shard 1: refused');
  t.equal((await client.call('Write', { series: [one(4n, 10)] }, hdr(tenant, 0))).err, null);
  t.equal((await client.call('Write', { series: [one(9n, 10)] }, hdr(tenant, 1))).err, null);
  agg.proc.kill('SIGTERM');
  const exit = await agg.exited;
  t.same(exit, { code: 0, signal: null }, 'exit code 0');
  t.ok(agg.logs.some((l) => l.msg === 'aggregator stopped'), 'logged the stop');
  agg = await startAggregator(t, config);
  client = new RawClient(t, agg.address);
  const wal = await walOf(tenant);
  t.equal(wal.windows, 2, 'both shards still have their WAL');
  for (const shard of [0, 1]) t.equal((await client.call('Seal', { window_start_ms: String(W) }, hdr(tenant, shard))).err, null);
  t.equal((await readBlock(bucket, blockKey(tenant, 0, W))).get(4n)?.ts.length, 10);
  t.equal((await readBlock(bucket, blockKey(tenant, 1, W))).get(9n)?.ts.length, 10);
});
