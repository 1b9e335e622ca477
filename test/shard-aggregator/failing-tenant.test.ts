/**
 * `walOwnBucketTenantPercent`: a tenant with a bucket of its own (here one that does not exist on
 * RGW, so its flushes fail) is refused writes once its WALs take that share of `walQuotaBytes`,
 * naming the option and the tenant, while a tenant of the default bucket keeps writing; its
 * acknowledged data stays in the WAL. Before, it filled the whole quota and every tenant's writes
 * were refused. Also: a flush over a block of another numShards, and the WAL of a tenant marked
 * for deletion.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/shard-aggregator/failing-tenant.test.ts
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import t from 'tap';
import { stringify as toYaml } from 'yaml';
import { WriterClient, type SeriesData, type WriteCallError } from '../../src/client/writer.js';
import { createLogger } from '../../src/common/logger.js';
import { DEFAULT_BLOCK_DURATION_MS } from '../../src/format/key.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import { startAggregatorServer } from '../../src/shard-aggregator/server.js';
import { eventually, tempDir } from '../support/aggregator.js';
import { credentialEnvRefs, s3TenantBucket } from '../support/tenancy.js';

const H = BigInt(DEFAULT_BLOCK_DURATION_MS);
const W = ((BigInt(Date.now()) - 2n * 24n * 3600n * 1000n) / H) * H;
const MiB = 2 ** 20;

/** `n` samples of random bits (about 8 bytes each in a run) for series `id`. */
function noisy(id: bigint, n: number, seed: number): SeriesData {
  let x = seed >>> 0 || 1;
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    values[i] = (x >>> 0) / 7 + i;
  }
  return { id, timestamps: BigInt64Array.from({ length: n }, (_, i) => W + BigInt(i) * 100n), values };
}

t.test('a tenant with its own bucket is bounded to walOwnBucketTenantPercent of walQuotaBytes; the others keep writing', async (t) => {
  const dir = tempDir('failing-tenant');
  const file = join(dir, 'tenants.yaml');
  writeFileSync(
    file,
    toYaml({
      authRequired: false,
      defaultBucket: { type: 'filesystem', path: join(dir, 'bucket') },
      // a bucket that does not exist: every flush of this tenant fails
      tenants: { down: { bucket: s3TenantBucket(`strata-missing-${process.pid}`, credentialEnvRefs(1)) } },
    }),
  );
  const config = parseAggregatorConfig({
    walDir: join(dir, 'wal'),
    tenantsFile: file,
    numShards: 1,
    grpcListen: '127.0.0.1:0',
    metricsListen: '127.0.0.1:0',
    flushIdleMs: 3600_000,
    walQuotaBytes: 64 * MiB,
    walWriteBufferBytes: 256 * 1024,
    walOwnBucketTenantPercent: 1, // 671,088 bytes
  });
  const running = await startAggregatorServer({ config, logger: createLogger({ level: 'silent' }) });
  t.teardown(() => running.shutdown());
  await running.ready;
  const client = (tenant: string) => {
    const c = new WriterClient({ tenant, numShards: 1, target: `127.0.0.1:${running.grpcPort}`, retry: { maxAttempts: 1 } });
    t.teardown(() => c.close());
    return c;
  };
  const down = client('down');
  const ok = client('acme');
  // about 830,000 bytes of runs, more than its bound, written while nothing had failed yet
  await down.write([noisy(1n, 200_000, 7)]);
  const sealed = await down.seal(W).then(
    () => null,
    (e: unknown) => e as WriteCallError,
  );
  t.equal(sealed?.code, status.UNAVAILABLE, 'its flush fails: the bucket does not exist');
  const refused = await down.write([noisy(2n, 10, 8)]).then(
    () => null,
    (e: unknown) => e as WriteCallError,
  );
  t.equal(refused?.code, status.RESOURCE_EXHAUSTED, 'the failing tenant is refused');
  t.match(refused?.details, /^tenant "down" holds \d+ bytes of WAL on disk: a tenant with a bucket of its own may hold at most walOwnBucketTenantPercent \(1 %\) of walQuotaBytes \(67108864\): 671088 bytes,/);
  t.same(await ok.write([noisy(3n, 1000, 9)]), { requests: 1, samples: 1000, series: 1, retries: 0 }, 'another tenant keeps writing');
  const agg = running.aggregator()!;
  await eventually('the first window stays in the WAL', async () => (agg.store.tenantBytes('down') >= 800_000 ? true : null));
});

t.test('a window whose block was written with another numShards: the flush fails as FAILED_PRECONDITION naming both counts, not as corrupt data', async (t) => {
  const dir = tempDir('reshard-flush');
  const start = async (numShards: number) => {
    const config = parseAggregatorConfig({ walDir: join(dir, `wal-${numShards}`), bucket: { type: 'filesystem', path: join(dir, 'bucket') }, numShards, grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', flushIdleMs: 3600_000 });
    const running = await startAggregatorServer({ config, logger: createLogger({ level: 'silent' }) });
    t.teardown(() => running.shutdown());
    await running.ready;
    const c = new WriterClient({ tenant: 'acme', numShards, target: `127.0.0.1:${running.grpcPort}`, retry: { maxAttempts: 1 } });
    t.teardown(() => c.close());
    return c;
  };
  const two = await start(2);
  await two.write([noisy(2n, 10, 1)]);
  await two.seal(W, [0]);
  const three = await start(3);
  await three.write([noisy(3n, 10, 2)]);
  const err = await three.seal(W, [0]).then(
    () => null,
    (e: unknown) => e as WriteCallError,
  );
  t.equal(err?.code, status.FAILED_PRECONDITION, 'the Seal says why its flush failed (the flush is retried in the background)');
  t.match(err?.details, /existing block "blocks\/acme\/\d+\/00000\.block" was written with 2 shards; this aggregator's numShards is 3/);
  t.notMatch(err?.details, /corrupt/);
});

t.test('the WAL of a tenant marked for deletion is dropped, not flushed (its bucket may be gone from the tenants file)', async (t) => {
  const { markTenantDeleted } = await import('../../src/tenancy/deletion-marks.js');
  const { FilesystemBucket } = await import('../../src/objstore/index.js');
  const dir = tempDir('marked-flush');
  const bucketDir = join(dir, 'bucket');
  const config = parseAggregatorConfig({ walDir: join(dir, 'wal'), bucket: { type: 'filesystem', path: bucketDir }, numShards: 1, grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', flushIdleMs: 3600_000, deletionMarksPollMs: 100 });
  const running = await startAggregatorServer({ config, logger: createLogger({ level: 'silent' }) });
  t.teardown(() => running.shutdown());
  await running.ready;
  const c = new WriterClient({ tenant: 'gone', numShards: 1, target: `127.0.0.1:${running.grpcPort}`, retry: { maxAttempts: 1 } });
  t.teardown(() => c.close());
  await c.write([noisy(5n, 1000, 3)]);
  const bucket = new FilesystemBucket({ path: bucketDir });
  await markTenantDeleted(bucket, 'gone', Date.now());
  await eventually('the aggregator saw the mark', async () => (running.deletionMarks.markOf('gone') !== undefined ? true : null));
  // its Seal calls are refused now; the aggregator's own flush (window closed, or a restart) runs
  t.same(await running.aggregator()!.seal('gone', 0, W, true), [], 'no block written');
  t.equal(running.aggregator()!.store.tenantBytes('gone'), 0, 'its WAL is gone');
  const blocks: string[] = [];
  for await (const o of bucket.list('blocks/')) blocks.push(o.key);
  t.same(blocks, []);
  t.equal(await running.metrics.registry.getSingleMetric('strata_aggregator_flushes_total')!.get().then((m) => m.values.find((v) => v.labels['result'] === 'dropped')?.value), 1);
});
