/**
 * Flush fairness between tenants (in-process aggregator, injected clock, real LevelDB WALs): one
 * tenant's own bucket hangs (a loopback TCP server that accepts connections and never answers),
 * its windows are queued first, and with flushConcurrency 2 another tenant's windows still flush
 * to its bucket on the real S3 server while the hanging flush is running. When the hanging
 * attempts end, each failure is logged (tenant, window, bucket, cause) and counted, and the
 * failing tenant's retry delay grows with the tenant's failures over all its windows.
 *
 * Run alone: node scripts/with-rgw.mjs -- npx tap test/shard-aggregator/flush-fairness.test.ts
 */
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { createLogger } from '../../src/common/logger.js';
import { blockKey } from '../../src/format/key.js';
import { Aggregator } from '../../src/shard-aggregator/aggregator.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import type { WireSeries } from '../../src/shard-aggregator/ingest.js';
import { AggregatorMetrics } from '../../src/shard-aggregator/metrics.js';
import { parseTenantsConfig } from '../../src/tenancy/config.js';
import { TenantRegistry } from '../../src/tenancy/tenants.js';
import { bitsBytes, bitsOf, eventually, openTestBucket, readBlock, tempDir, tsBytes } from '../support/aggregator.js';
import { FORWARD, startFaultProxy } from '../support/faultproxy.js';
import { createTestBucket, s3TestEnv } from '../support/s3env.js';
import { credentialEnvRefs, s3TenantBucket } from '../support/tenancy.js';

const H = 4 * 3600 * 1000;
const W = 1793491200000;
const SHARDS = 4;
const ts = Array.from({ length: 200 }, (_, k) => BigInt(W + k * 1000));
const valueOf = (tenant: string, shard: number, k: number): number => (tenant === 'good' ? 1 : -1) * (shard * 1000 + k + 0.25);
const wire = (tenant: string, shard: number): WireSeries => ({
  id: BigInt(shard), // series id % numShards = shard
  timestamps: tsBytes(ts),
  values: bitsBytes(ts.map((_, k) => bitsOf(valueOf(tenant, shard, k)))),
});

/**
 * Tenant `good` in the default bucket and tenant `other` in a bucket of its own reached through
 * `endpoint`, with one attempt per request and a socket timeout far beyond the tests.
 */
async function twoTenants(defaultBucket: string, other: string, otherBucket: string, endpoint: string): Promise<TenantRegistry> {
  const config = await parseTenantsConfig(
    {
      authRequired: false,
      defaultBucket: s3TenantBucket(defaultBucket, credentialEnvRefs(1)),
      tenants: {
        good: {},
        [other]: { bucket: s3TenantBucket(otherBucket, credentialEnvRefs(1), { endpoint, socketTimeoutMs: 3_600_000, retry: { maxAttempts: 1, baseDelayMs: 10, maxDelayMs: 10 } }) },
      },
    },
    'test',
  );
  return new TenantRegistry(config, { retireAfterMs: 1 });
}

/** A TCP server that accepts connections and never answers; `cut()` drops the open ones. */
async function startHangingServer(): Promise<{ port: number; connections: () => number; nextConnection: () => Promise<void>; cut: () => void; close: () => Promise<void> }> {
  const open = new Set<Socket>();
  let seen = 0;
  let waiters: (() => void)[] = [];
  const server = createServer((s) => {
    seen++;
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => undefined); // the client resets it at its timeout
    s.resume(); // read the request, never answer
    for (const w of waiters.splice(0)) w();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const cut = (): void => {
    for (const s of open) s.destroy();
  };
  return {
    port,
    connections: () => open.size,
    nextConnection: () => {
      const before = seen;
      return new Promise<void>((resolve) => {
        const check = (): void => (seen > before ? resolve() : void waiters.push(check));
        check();
      });
    },
    cut,
    close: () => {
      cut();
      waiters = [];
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

t.test("a tenant whose bucket hangs does not stop other tenants' flushes, and backs off", async (t) => {
  const dir = tempDir('flush-fair');
  const goodBucketName = await createTestBucket(t, { tag: 'fair' });
  const goodBucket = openTestBucket(t, goodBucketName);
  const hang = await startHangingServer();
  // only `cut()` ends a request of the bad tenant
  const reg = await twoTenants(goodBucketName, 'bad', 'strata-hanging', `http://127.0.0.1:${hang.port}`);
  const logs: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'info', dest: { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) } });
  const metrics = new AggregatorMetrics();
  const config = parseAggregatorConfig({
    walDir: join(dir, 'wal'),
    tenantsFile: '/unused',
    numShards: SHARDS,
    flushConcurrency: 2,
    // retries of the failing tenant must not come back during the test
    flushRetryBaseMs: 600_000,
    flushRetryMaxMs: 3_600_000,
  });
  const agg = await Aggregator.open({
    config,
    buckets: { acquire: (tenant, windowStart) => reg.acquireBucket(tenant, windowStart), ownBucket: (tenant) => (reg.config.tenants.get(tenant)?.bucket ?? null) !== null },
    tenantLabel: (tenant) => reg.label(tenant),
    logger,
    metrics,
    now: () => W + H + 1000,
    autoFlush: false,
  });
  t.teardown(async () => {
    await hang.close(); // the hanging requests fail at once, so the flusher can stop
    await agg.close();
    await reg.close();
  });

  for (const tenant of ['bad', 'good']) {
    for (let shard = 0; shard < SHARDS; shard++) await agg.write(tenant, shard, [wire(tenant, shard)]);
  }

  // the bad tenant's windows are queued first; its first flush hangs on its bucket
  const bad = hang.nextConnection();
  for (let shard = 0; shard < SHARDS; shard++) await agg.seal('bad', shard, BigInt(W), false);
  await bad;

  // the healthy tenant's windows flush while the bad tenant's flush is still hanging
  const blocks = await Promise.all(Array.from({ length: SHARDS }, (_, shard) => agg.seal('good', shard, BigInt(W), true)));
  t.same(
    blocks.map((b) => b.map((x) => [x.tenant, x.shard, x.samples])),
    Array.from({ length: SHARDS }, (_, shard) => [['good', shard, ts.length]]),
    "every window of the healthy tenant is flushed",
  );
  for (let shard = 0; shard < SHARDS; shard++) {
    const got = await readBlock(goodBucket, blockKey('good', shard, BigInt(W)));
    t.same(got.get(BigInt(shard)), { ts, bits: ts.map((_, k) => bitsOf(valueOf('good', shard, k))) }, `good shard ${shard}: its block is in its bucket, bit for bit`);
  }
  t.ok(hang.connections() >= 1, 'the bad tenant is still hanging meanwhile');
  t.equal(logs.filter((l) => l.msg === 'flush failed; the wal is kept').length, 0, 'no flush of the bad tenant ended meanwhile');
  t.same(
    agg.status().windows.map((w) => `${w.tenant}/${w.shard}`).sort(),
    ['bad/0', 'bad/1', 'bad/2', 'bad/3'],
    "only the bad tenant's WALs are left",
  );

  // the hanging requests end (as at a socket timeout): each failure is logged, counted, and backs off
  const failures = (): Record<string, unknown>[] => logs.filter((l) => l.msg === 'flush failed; the wal is kept' && l.tenant === 'bad');
  const retries = (): Record<string, unknown>[] => logs.filter((l) => l.msg === 'flush will be retried' && l.tenant === 'bad');
  for (let n = 1; n <= 2; n++) {
    const next = hang.nextConnection();
    hang.cut();
    await eventually(`failure ${n} of the bad tenant`, () => Promise.resolve(retries().length >= n ? true : null));
    await next; // the bad tenant's next window took the slot
  }
  const failed = failures();
  t.equal(failed.length, 2, 'two failures logged');
  for (const f of failed) {
    t.match(f, { level: 'error', tenant: 'bad', bucket: /strata-hanging/, window: /^bad\/\d+\/\d$/, reason: 'unavailable' }, 'the failure names tenant, bucket and window');
  }
  const [r1, r2] = retries();
  t.match(r1, { level: 'warn', tenant: 'bad', window: failed[0]?.window, failures: 1, tenantFailures: 1, cause: /\S/ }, 'the retry is a warning with the cause');
  t.match(r2, { level: 'warn', tenant: 'bad', window: failed[1]?.window, failures: 1, tenantFailures: 2 }, "a second window's failure counts for the tenant");
  t.ok((r2?.delayMs as number) >= 600_000, 'the tenant backs off: its retry waits at least the doubled base delay');
  t.ok((r2?.delayMs as number) <= 3_600_000, '...within flushRetryMaxMs');
  const errors = await metrics.flushErrors.get();
  t.same(
    errors.values.filter((v) => v.labels.tenant === reg.label('bad')).map((v) => [v.labels.reason, v.value]),
    [['unavailable', 2]],
    'counted in strata_aggregator_flush_errors_total',
  );
});

t.test('a tenant of a bucket of its own that worked, then stops answering, never holds every slot: a tenant of the default bucket arriving flushes at once', async (t) => {
  const dir = tempDir('flush-fair-own');
  const goodBucketName = await createTestBucket(t, { tag: 'fair-def' });
  const ownBucketName = await createTestBucket(t, { tag: 'fair-own' });
  // the own bucket through a proxy that forwards, then stalls every request (until the teardown)
  let stalling = false;
  const proxy = await startFaultProxy(t, s3TestEnv().endpoint, () => (stalling ? { kind: 'stall' } : FORWARD));
  const reg = await twoTenants(goodBucketName, 'own', ownBucketName, proxy.endpoint);
  const config = parseAggregatorConfig({ walDir: join(dir, 'wal'), tenantsFile: '/unused', numShards: SHARDS, flushConcurrency: 2, flushRetryBaseMs: 600_000, flushRetryMaxMs: 3_600_000 });
  const agg = await Aggregator.open({
    config,
    buckets: { acquire: (tenant, windowStart) => reg.acquireBucket(tenant, windowStart), ownBucket: (tenant) => (reg.config.tenants.get(tenant)?.bucket ?? null) !== null },
    tenantLabel: (tenant) => reg.label(tenant),
    logger: createLogger({ level: 'silent' }),
    metrics: new AggregatorMetrics(),
    now: () => W + H + 1000,
    autoFlush: false,
  });
  t.teardown(async () => {
    await agg.close();
    await reg.close();
  });
  // the tenant's bucket works: one window flushed
  await agg.write('own', 0, [wire('own', 0)]);
  t.equal((await agg.seal('own', 0, BigInt(W), true)).length, 1, 'a first flush of the own-bucket tenant succeeds');
  // then it stops answering, with its windows of every other shard sealed and nobody else flushing
  for (let shard = 1; shard < SHARDS; shard++) await agg.write('own', shard, [wire('own', shard)]);
  stalling = true;
  const stalled = proxy.seen.length;
  for (let shard = 1; shard < SHARDS; shard++) void agg.seal('own', shard, BigInt(W), true).catch(() => undefined);
  await eventually('a flush of the own-bucket tenant to hang on its bucket', () => Promise.resolve(proxy.seen.length > stalled ? true : null));
  // a tenant of the default bucket arrives: a slot is free for it
  await agg.write('good', 0, [wire('good', 0)]);
  // bounded, so that a regression fails here instead of hanging the file (the stall lasts an hour)
  let bound: NodeJS.Timeout | undefined;
  const blocks = await Promise.race([
    agg.seal('good', 0, BigInt(W), true),
    new Promise<never>((_, reject) => (bound = setTimeout(() => reject(new Error('the flush of the default bucket\'s tenant waited 60 s: no slot was left for it')), 60_000))),
  ]).finally(() => clearTimeout(bound));
  t.same(blocks.map((b) => [b.tenant, b.shard, b.samples]), [['good', 0, ts.length]], "the default bucket's tenant flushed while the other's bucket hangs");
  const got = await readBlock(openTestBucket(t, goodBucketName), blockKey('good', 0, BigInt(W)));
  t.same(got.get(0n), { ts, bits: ts.map((_, k) => bitsOf(valueOf('good', 0, k))) }, 'its block, bit for bit');
  t.same(
    agg.status().windows.map((w) => `${w.tenant}/${w.shard}`).sort(),
    ['own/1', 'own/2', 'own/3'],
    "the own-bucket tenant's windows are still in the WAL",
  );
});

t.test('closing does not wait for a flush blocked on a bucket that does not answer: it is left behind, and its WAL is kept', async (t) => {
  const dir = tempDir('flush-stop');
  const hang = await startHangingServer();
  const tenants = async () =>
    new TenantRegistry(
      await parseTenantsConfig(
        {
          authRequired: false,
          defaultBucket: { type: 'filesystem', path: join(dir, 'bucket') },
          tenants: { bad: { bucket: s3TenantBucket('strata-hanging', credentialEnvRefs(1), { endpoint: `http://127.0.0.1:${hang.port}`, socketTimeoutMs: 3_600_000, retry: { maxAttempts: 1, baseDelayMs: 10, maxDelayMs: 10 } }) } },
        },
        'test',
      ),
      { retireAfterMs: 1 },
    );
  const logs: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'info', dest: { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) } });
  const config = parseAggregatorConfig({ walDir: join(dir, 'wal'), tenantsFile: '/unused', numShards: 1 });
  const open = async (reg: TenantRegistry) =>
    Aggregator.open({
      config,
      buckets: { acquire: (tenant, windowStart) => reg.acquireBucket(tenant, windowStart), ownBucket: () => true },
      tenantLabel: (tenant) => reg.label(tenant),
      logger,
      metrics: new AggregatorMetrics(),
      now: () => W + H + 1000,
      autoFlush: false,
    });
  const reg = await tenants();
  t.teardown(async () => {
    await hang.close();
    await reg.close();
  });
  const agg = await open(reg);
  await agg.write('bad', 0, [wire('bad', 0)]);
  const hanging = hang.nextConnection();
  await agg.seal('bad', 0, BigInt(W), false);
  await hanging;
  const t0 = performance.now();
  await agg.close(300);
  const took = performance.now() - t0;
  t.ok(took < 5000, `closed in ${Math.round(took)} ms, not when the bucket's requests time out (an hour here)`);
  t.ok(hang.connections() >= 1, 'the flush was still hanging when close returned');
  t.match(logs.find((l) => l.msg === 'flushes still running at shutdown (a bucket that does not answer?); left behind, their WALs are kept and flushed after the restart'), { level: 'warn', flushes: 1, waitedMs: 300 });
  hang.cut();
  // the WAL of the window is still there for the next start
  const again = await open(reg);
  t.same(again.status().windows.map((w) => `${w.tenant}/${w.shard}/${w.samples}`), [`bad/0/${ts.length}`], 'the window and its samples are still in the WAL');
  await again.close(300);
});
