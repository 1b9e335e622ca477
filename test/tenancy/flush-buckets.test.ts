/**
 * The aggregator engine resolves each tenant's bucket from the tenant registry at every flush
 * attempt (in-process, filesystem buckets, injected clock): blocks go to the tenant's own bucket;
 * after a swap the next flush uses the new bucket; a tenant removed from the file keeps its WAL
 * (its data never falls back to the default bucket) until it is back, and waiting flushes retry
 * at once after a swap; flush errors are counted per tenant and reason. And the server's `bucket`
 * option (one given bucket for every tenant, left open at shutdown).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { createLogger } from '../../src/common/logger.js';
import { blockKey } from '../../src/format/key.js';
import { FilesystemBucket } from '../../src/objstore/fs.js';
import { Aggregator } from '../../src/shard-aggregator/aggregator.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import type { WireSeries } from '../../src/shard-aggregator/ingest.js';
import { AggregatorMetrics } from '../../src/shard-aggregator/metrics.js';
import { startAggregatorServer } from '../../src/shard-aggregator/server.js';
import { hashToken, newToken, parseTenantsConfig } from '../../src/tenancy/config.js';
import { TenantRegistry } from '../../src/tenancy/tenants.js';
import { bitsBytes, bitsOf, tempDir, tsBytes } from '../support/aggregator.js';

const H = 4 * 3600 * 1000;
const W = 1793491200000;
const wire = (id: bigint, ts: number[]): WireSeries => ({ id, timestamps: tsBytes(ts.map(BigInt)), values: bitsBytes(ts.map((x) => bitsOf(x / 1000))) });

t.test('every flush attempt resolves the tenant bucket from the registry in force', async (t) => {
  const dir = tempDir('flush-buckets');
  const bucketDir = (name: string) => join(dir, name);
  const file = (tenants: Record<string, unknown>) =>
    parseTenantsConfig({ defaultBucket: { type: 'filesystem', path: bucketDir('default') }, tenants }, 'test', {});
  const own = [hashToken(newToken())];
  const shared = [hashToken(newToken())];
  const reg = new TenantRegistry(await file({ own: { tokens: own, bucket: { type: 'filesystem', path: bucketDir('own-1') } }, shared: { tokens: shared } }), { retireAfterMs: 1 });
  t.teardown(() => reg.close());
  const metrics = new AggregatorMetrics();
  const config = parseAggregatorConfig({ walDir: join(dir, 'wal'), tenantsFile: '/unused', numShards: 1, flushRetryBaseMs: 60_000, flushRetryMaxMs: 60_000 });
  const agg = await Aggregator.open({
    config,
    buckets: { acquire: (tenant) => reg.acquireBucket(tenant) },
    tenantLabel: (tenant) => reg.label(tenant),
    logger: createLogger({ level: 'silent' }),
    metrics,
    now: () => W + H + 1000,
    autoFlush: false,
  });
  t.teardown(() => agg.close());
  const blockFile = (bucket: string, tenant: string) => join(bucketDir(bucket), blockKey(tenant, 0, BigInt(W)));

  await agg.write('own', 0, [wire(1n, [W + 1])]);
  await agg.write('shared', 0, [wire(1n, [W + 1])]);
  await agg.seal('own', 0, BigInt(W), true);
  await agg.seal('shared', 0, BigInt(W), true);
  t.ok(existsSync(blockFile('own-1', 'own')), "own's block is in its own bucket");
  t.notOk(existsSync(blockFile('default', 'own')), '...and not in the default bucket');
  t.ok(existsSync(blockFile('default', 'shared')), "shared's block is in the default bucket");

  // the tenant moves to another bucket: the next flush goes there
  reg.swap(await file({ own: { tokens: own, bucket: { type: 'filesystem', path: bucketDir('own-2') } }, shared: { tokens: shared } }));
  await agg.write('own', 0, [wire(2n, [W + 2])]);
  await agg.seal('own', 0, BigInt(W), true);
  t.ok(existsSync(blockFile('own-2', 'own')), 'after the swap, the new bucket');

  // removed from the file: the flush fails (WAL kept), nothing goes to the default bucket
  reg.swap(await file({ shared: { tokens: shared } }));
  await agg.write('own', 0, [wire(3n, [W + 3])]);
  await t.rejects(agg.seal('own', 0, BigInt(W), true), { code: 'ERR_STRATA_CONFIG', message: /tenant "own" is not in the tenants config/ });
  t.notOk(existsSync(blockFile('default', 'own')), 'not flushed to the default bucket');
  t.equal(agg.status().windows.filter((w) => w.tenant === 'own').length, 1, 'the WAL is kept');
  const errors = await metrics.flushErrors.get();
  t.same(errors.values.map((v) => [v.labels, v.value]), [[{ tenant: '_other', reason: 'config' }, 1]], 'counted (an unconfigured tenant is labelled _other)');

  // back in the file: a waiting flush retries at once when asked (the server does it on every swap)
  reg.swap(await file({ own: { tokens: own, bucket: { type: 'filesystem', path: bucketDir('own-2') } }, shared: { tokens: shared } }));
  t.equal(agg.flusher.retryWaiting(), 1, 'one flush was waiting for its retry');
  // wait for that flush itself: asking for the window's flush joins the one running
  await agg.flusher.request({ tenant: 'own', shard: 0, windowStart: BigInt(W) });
  t.same(agg.status().windows, [], 'flushed');
  t.same((await metrics.flushBytes.get()).values.map((v) => v.labels.tenant).sort(), ['own', 'shared'], 'bytes uploaded per tenant');
});

t.test('startAggregatorServer({ bucket }) uses that bucket for every tenant and leaves it open', async (t) => {
  const dir = tempDir('given-bucket');
  const given = new FilesystemBucket({ path: join(dir, 'given') });
  const config = parseAggregatorConfig({ walDir: join(dir, 'wal'), bucket: { type: 'filesystem', path: join(dir, 'unused') }, numShards: 1, grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', flushIdleMs: 3600_000 });
  // the samples are stamped in the fixed window W, so the server runs on a clock just after it
  const running = await startAggregatorServer({ config, logger: createLogger({ level: 'silent' }), bucket: given, now: () => W + H + 1000 });
  let stopped = false;
  const shutdown = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await running.shutdown();
  };
  t.teardown(shutdown);
  t.teardown(() => given.close());
  await running.ready;
  const agg = running.aggregator()!;
  await agg.write('anyone', 0, [wire(1n, [W + 1])]);
  const [block] = await agg.seal('anyone', 0, BigInt(W), true);
  await shutdown();
  t.equal((await given.head(block!.key)).size, block!.bytes, 'the block is in the given bucket, which is still open after shutdown');
  t.notOk(existsSync(join(dir, 'unused', block!.key)));
});
