/**
 * Time-partitioned tenant buckets (src/tenancy/partitions.ts): templates parsed and refused with
 * the field named; ISO weeks at year boundaries; and against Ceph RGW, with real buckets created
 * and deleted: the aggregator's flush creates the bucket of each block's window, the gateway's
 * resolver and a gateway read a window from its partition (a missing partition reads as no block), the bucket
 * tool's listing spans the partitions, retention drops a partition whole once every window it can
 * hold has expired (and not a minute before), a second pass finds nothing to do, and tenant
 * deletion drops every partition left.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/tenancy/partitions.test.ts
 */
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CreateMultipartUploadCommand, HeadBucketCommand } from '@aws-sdk/client-s3';
import t from 'tap';
import { stringify as toYaml } from 'yaml';
import { BlockReader } from '../../src/block/reader.js';
import { bucketSource } from '../../src/block/source.js';
import { createLogger } from '../../src/common/logger.js';
import { blockKey } from '../../src/format/key.js';
import { distinctBuckets, runLifecyclePass } from '../../src/lifecycle/job.js';
import { Aggregator } from '../../src/shard-aggregator/aggregator.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import type { WireSeries } from '../../src/shard-aggregator/ingest.js';
import { AggregatorMetrics } from '../../src/shard-aggregator/metrics.js';
import { TenantBucketResolver } from '../../src/storage-gateway/tenant-buckets.js';
import { parseTenantsConfig } from '../../src/tenancy/config.js';
import { markTenantDeleted } from '../../src/tenancy/deletion-marks.js';
import { ensureBucket, isoWeekOf, isoWeekStart, needsLocationConstraint, parseBucketTemplate, parsePartitionName, partitionLastWindowEnd, partitionOf } from '../../src/tenancy/partitions.js';
import { TenantRegistry } from '../../src/tenancy/tenants.js';
import { bitsBytes, bitsOf, tempDir, tsBytes } from '../support/aggregator.js';
import { idBytes, rawRead, startTestGateway, testConfig } from '../support/gateway.js';
import { adminClient, s3BucketConfig, s3TestEnv } from '../support/s3env.js';
import { ErrorCode, ObjectStoreError } from '../../src/errors.js';
import { credentialEnvRefs, s3TenantBucket } from '../support/tenancy.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const run = promisify(execFile);
const DAY = 24 * 3600 * 1000;
const H4 = 4 * 3600 * 1000;
/** Sunday 2026-11-01 00:00 UTC: the last day of ISO week 2026-W44; the next day starts W45. */
const W = 1793491200000;
const wire = (id: bigint, ts: number[]): WireSeries => ({ id, timestamps: tsBytes(ts.map(BigInt)), values: bitsBytes(ts.map((x) => bitsOf(x / 1000))) });

t.test('templates: kinds, ISO weeks at year ends, names parsed back', async (t) => {
  const week = parseBucketTemplate('m-{tenant}-{isoyear}-w{isoweek}', 'acme');
  t.equal(week.kind, 'week');
  // 2021-01-03 (a Sunday) is in 2020-W53; 2021-01-04 starts 2021-W01; 2024-12-30 is in 2025-W01
  t.same(isoWeekOf(Date.UTC(2021, 0, 3)), { isoyear: 2020, isoweek: 53, mondayMs: Date.UTC(2020, 11, 28) });
  t.same(isoWeekOf(Date.UTC(2021, 0, 4)), { isoyear: 2021, isoweek: 1, mondayMs: Date.UTC(2021, 0, 4) });
  t.same(isoWeekOf(Date.UTC(2024, 11, 30, 23)), { isoyear: 2025, isoweek: 1, mondayMs: Date.UTC(2024, 11, 30) });
  t.equal(isoWeekStart(2020, 53), Date.UTC(2020, 11, 28));
  t.same(partitionOf(week, W), { name: 'm-acme-2026-w44', startMs: W - 6 * DAY, endMs: W + DAY });
  t.same(partitionOf(week, W + DAY), { name: 'm-acme-2026-w45', startMs: W + DAY, endMs: W + 8 * DAY });
  t.same(parsePartitionName(week, 'm-acme-2020-w53'), { name: 'm-acme-2020-w53', startMs: Date.UTC(2020, 11, 28), endMs: Date.UTC(2021, 0, 4) });
  t.equal(parsePartitionName(week, 'm-acme-2021-w53'), null, '2021 has no week 53');
  t.equal(parsePartitionName(week, 'm-other-2021-w01'), null, "another tenant's name");
  const month = parseBucketTemplate('{tenant}.{year}.{month}', 'acme');
  t.same(partitionOf(month, W + 5), { name: 'acme.2026.11', startMs: W, endMs: Date.UTC(2026, 11, 1) });
  t.equal(parsePartitionName(month, 'acme.2026.13'), null);
  const day = parseBucketTemplate('d-{year}{month}{day}-{tenant}', 'acme');
  t.same(partitionOf(day, W + 20 * H4 / 5), { name: 'd-20261101-acme', startMs: W, endMs: W + DAY });
  t.equal(parsePartitionName(day, 'd-20260230-acme'), null, 'no 30 February');
  // a new partition on AWS outside us-east-1 names its region; RGW and us-east-1 do not
  t.equal(needsLocationConstraint({ type: 's3', region: 'eu-west-1', bucket: 'x' }), true);
  t.equal(needsLocationConstraint({ type: 's3', region: 'eu-west-1', bucket: 'x', endpoint: 'https://s3.eu-west-1.amazonaws.com' }), true);
  t.equal(needsLocationConstraint({ type: 's3', region: 'us-east-1', bucket: 'x' }), false);
  t.equal(needsLocationConstraint({ type: 's3', region: 'default', bucket: 'x', endpoint: 'http://rgw.storage.svc:7480' }), false);
  // the last window a partition holds: 4-hour blocks end at its end; 5-hour blocks (starting at
  // multiples of 5 hours since the epoch) may run past it: the last one starts at W + 23 h
  t.equal(partitionLastWindowEnd({ name: '', startMs: W, endMs: W + DAY }, H4), W + DAY);
  t.equal((W + 23 * 3600 * 1000) % (5 * 3600 * 1000), 0);
  t.equal(partitionLastWindowEnd({ name: '', startMs: W, endMs: W + DAY }, 5 * 3600 * 1000), W + DAY + 4 * 3600 * 1000);
});

t.test('a bad template is refused with the field named', async (t) => {
  const load = (tenants: Record<string, unknown>, defaultBucket: Record<string, unknown> = { type: 'filesystem', path: '/tmp/unused' }) =>
    parseTenantsConfig({ authRequired: false, defaultBucket, tenants }, 'tenants.yaml', {});
  const s3 = (bucket: string, extra: Record<string, unknown> = {}) => ({ type: 's3', endpoint: 'http://127.0.0.1:1', region: 'r', bucket, ...extra });
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ a: { bucket: s3('m-{tenant}-{week}') } }, /tenants\.a\.bucket\.bucket: unknown placeholder \{week\}/],
    [{ a: { bucket: s3('m-{tenant}-{isoweek}') } }, /tenants\.a\.bucket\.bucket: .* must partition time one way/],
    [{ a: { bucket: s3('m-{year}-{isoweek}') } }, /tenants\.a\.bucket\.bucket: .* must partition time one way/],
    [{ a: { bucket: s3('m-{year}-{month') } }, /tenants\.a\.bucket\.bucket: "\{" without "\}"/],
    [{ a_b: { bucket: s3('m-{tenant}-{year}-{month}') } }, /tenants\.a_b\.bucket\.bucket: .* renders "m-a_b-" for tenant "a_b": bucket names hold only/],
    [{ a: { bucket: s3('M-{year}-{month}') } }, /tenants\.a\.bucket\.bucket: .* bucket names hold only a-z/],
    [{ a: { bucket: s3(`${'x'.repeat(60)}{year}{month}`) } }, /tenants\.a\.bucket\.bucket: .* renders names of 66 characters/],
    [{ a: { bucket: s3('m-{tenant}-{year}-{month}', { prefix: 'p' }) } }, /tenants\.a\.bucket\.prefix: not allowed with a bucket name template/],
    [{ a: { bucket: s3('m-{year}-{month}') }, b: { bucket: s3('m-{year}-{month}') } }, /tenants\.b\.bucket\.bucket: renders the same bucket names as tenants\.a\.bucket\.bucket/],
    [{ a: { bucket: s3('m-{year}-{month}') }, b: { bucket: s3('m-2026-11') } }, /tenants\.a\.bucket\.bucket: "m-\{year\}-\{month\}" renders "m-2026-11", the bucket of tenants\.b\.bucket\.bucket/],
  ];
  for (const [tenants, message] of cases) await t.rejects(load(tenants), { code: 'ERR_STRATA_CONFIG', message }, JSON.stringify(tenants));
  await t.rejects(load({}, s3('m-{year}-{month}')), { code: 'ERR_STRATA_CONFIG', message: /defaultBucket\.bucket: a bucket name template/ });
  const ok = await load({ a: { bucket: s3('m-{tenant}-{year}-{month}') }, b: { bucket: s3('m-{tenant}-{year}-{month}') } });
  t.equal(ok.tenants.get('a')!.partitions!.kind, 'month', 'one template for two tenants is fine with {tenant} in it');
});

t.test('on RGW: a partition bucket refused for bad credentials is ACCESS_DENIED with the reason, not a STORAGE error named "Unknown"', async (t) => {
  const env = s3TestEnv();
  const name = `strata-pt-${randomBytes(3).toString('hex')}-acme-2026-w50`;
  const good = s3BucketConfig(env, name);
  const bad = { type: 's3' as const, ...good, credentials: { ...good.credentials!, secretAccessKey: 'not-the-secret' } };
  const err = await ensureBucket(bad).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof ObjectStoreError, String(err));
  t.equal((err as ObjectStoreError).code, ErrorCode.ACCESS_DENIED);
  t.match((err as Error).message, `checking bucket "${name}": access denied (`);
  t.notMatch((err as Error).message, /Unknown$/);
});

t.test('on RGW: flushes create partitions, reads and the bucket tool find them, retention and tenant deletion drop them whole', async (t) => {
  const env = s3TestEnv();
  const dir = tempDir('partitions');
  const tag = `strata-pt-${randomBytes(3).toString('hex')}`;
  const template = `${tag}-{tenant}-{isoyear}-w{isoweek}`;
  const admin = adminClient(env, 2);
  const exists = async (name: string): Promise<boolean> =>
    admin.send(new HeadBucketCommand({ Bucket: name })).then(
      () => true,
      () => false,
    );
  const w44 = `${tag}-acme-2026-w44`;
  const w45 = `${tag}-acme-2026-w45`;
  const tenantsDoc = {
    authRequired: false,
    retentionMs: 10 * DAY,
    defaultBucket: { type: 'filesystem', path: join(dir, 'default') },
    tenants: { acme: { bucket: s3TenantBucket(template, credentialEnvRefs(2)) } },
  };
  const cfg = await parseTenantsConfig(tenantsDoc, 'test');
  const reg = new TenantRegistry(cfg, { retireAfterMs: 1 });
  t.teardown(async () => {
    // whatever a failed run left behind
    for (const name of [w44, w45]) {
      if (!(await exists(name))) continue;
      const b = await reg.partitionBucket('acme', name);
      for await (const o of b.list('')) await b.delete(o.key);
      await reg.dropPartition('acme', name);
    }
    await reg.close();
    admin.destroy();
  });

  // the aggregator's flush: each window goes to the bucket of its week, created on the way
  let now = W + H4 + 1000;
  const agg = await Aggregator.open({
    config: parseAggregatorConfig({ walDir: join(dir, 'wal'), tenantsFile: '/unused', numShards: 1, flushRetryBaseMs: 60_000, flushRetryMaxMs: 60_000 }),
    buckets: { acquire: (tenant, windowStart) => reg.acquireBucket(tenant, windowStart) },
    tenantLabel: (tenant) => reg.label(tenant),
    logger: createLogger({ level: 'silent' }),
    metrics: new AggregatorMetrics(),
    now: () => now,
    autoFlush: false,
  });
  t.teardown(() => agg.close());
  t.notOk(await exists(w44), 'no partition before the first flush');
  await agg.write('acme', 0, [wire(1n, [W + 1, W + 2])]);
  const [b44] = await agg.seal('acme', 0, BigInt(W), true);
  // the last window of week 44 (Sunday 20:00-24:00)
  now = W + 6 * H4 + 1000;
  await agg.write('acme', 0, [wire(1n, [W + 5 * H4 + 7])]);
  const [b44last] = await agg.seal('acme', 0, BigInt(W + 5 * H4), true);
  now = W + DAY + H4 + 1000;
  await agg.write('acme', 0, [wire(1n, [W + DAY + 5])]);
  const [b45] = await agg.seal('acme', 0, BigInt(W + DAY), true);
  t.ok(await exists(w44), 'the Sunday window created week 44');
  t.ok(await exists(w45), 'the Monday window created week 45');
  t.equal(b44!.key, blockKey('acme', 0, BigInt(W)));

  // the gateway's resolver: each window from its partition; a week without a bucket holds no block
  const resolver = new TenantBucketResolver(reg);
  const r44 = await resolver.resolve('acme', BigInt(W));
  const r45 = await resolver.resolve('acme', BigInt(W + DAY));
  t.equal(r44.bucket.name, `s3://${w44}`);
  t.not(r44.scope, r45.scope, 'each partition is its own cache scope');
  t.equal(resolver.resolve('acme', BigInt(W + 4 * H4)), r44, 'a later window of the same week: remembered');
  const reader = await BlockReader.open(bucketSource(r45.bucket, b45!.key));
  t.equal(reader.footer.windowStart, BigInt(W + DAY));
  t.equal(reader.size, b45!.bytes);
  const r47 = await resolver.resolve('acme', BigInt(W + 15 * DAY));
  await t.rejects(r47.bucket.get(blockKey('acme', 0, BigInt(W + 15 * DAY))), { code: 'ERR_STRATA_NOT_FOUND' }, 'a missing partition: no block');
  t.same(await collectKeys(r47.bucket), [], 'and an empty listing');

  // a gateway given the same tenants file: each window from its partition, a missing partition as a window without a block
  const file = join(dir, 'tenants.yaml');
  writeFileSync(file, toYaml(tenantsDoc));
  const gw = await startTestGateway(t, testConfig({ type: 'filesystem', path: dir }, join(dir, 'cache'), { bucket: undefined, tenantsFile: file }), { now: () => W + DAY + H4 + 1000 });
  const read = (windowStart: number) =>
    rawRead(gw.grpcPort, { tenant: 'acme', shard: 0, num_shards: 1, window_start_ms: String(windowStart), series_ids: idBytes([1n]), start_ms: '0', end_ms: String(W + 30 * DAY), encoding: 'RAW' });
  const noBlock = await read(W + DAY + 2 * H4); // week 45 exists, this window has no block
  const sunday = await read(W);
  const monday = await read(W + DAY);
  t.notSame(sunday, noBlock, 'the Sunday window is read from week 44');
  t.notSame(monday, noBlock, 'the Monday window from week 45');
  t.notSame(sunday, monday);
  t.same(await read(W + 15 * DAY), noBlock, 'a window of a week without a bucket reads as a window without a block');

  // the bucket tool's listing spans the partitions (the default bucket first)
  t.same((await reg.partitionsOf('acme')).map((p) => p.name), [w44, w45]);
  t.same(
    (await distinctBuckets(reg)).map((b) => b.partition?.p.name ?? 'default'),
    ['default', w44, w45],
  );
  const ls = await run(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'bucket', 'ls', '--json', '--tenants-file', file], { cwd: ROOT });
  t.same(
    ls.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { bucket: string; key: string })
      .map((e) => [e.bucket, e.key]),
    [[`s3://${w44}`, b44!.key], [`s3://${w44}`, b44last!.key], [`s3://${w45}`, b45!.key]],
    'strata bucket ls lists every partition',
  );

  // retention 10 days (+ 1 hour of grace): week 44's last window ends at W + 1 day
  const opts = { blockDurationMs: H4, retentionGraceMs: 3600_000, incompleteUploadMaxAgeMs: DAY, deleteConcurrency: 4 };
  const dropped: string[] = [];
  const due = W + DAY + 10 * DAY + 3600_000;
  const early = await runLifecyclePass(reg, due - 1, { ...opts, onBucketDropped: (d) => dropped.push(d.bucket) });
  t.same([early.bucketsDropped, early.blocksDeleted.retention, early.bytesDeleted.retention], [0, 1, b44!.bytes], 'one millisecond early: the bucket is kept, its first window went by itself');
  t.ok(await exists(w44));
  t.same(await collectKeys(r44.bucket), [b44last!.key]);
  const dry = await runLifecyclePass(reg, due, { ...opts, dryRun: true });
  t.same([dry.bucketsDropped, dry.blocksDeleted.retention], [1, 1], 'the dry run says what would go');
  t.ok(await exists(w44), '...and deletes nothing');
  t.same(await collectKeys(r44.bucket), [b44last!.key]);
  // the bucket tool's dry run shows the bucket that would be dropped whole, as of that time
  const tool = await run(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'bucket', 'retention', '--dry-run', '--at', new Date(due).toISOString(), '--tenants-file', file], { cwd: ROOT });
  t.same(
    tool.stdout.trim().split('\n'),
    [
      `delete\tretention\tacme\t${new Date(W + 5 * H4).toISOString()}\tshard 0\t${b44last!.bytes}\ts3://${w44}\t${b44last!.key}`,
      `drop\tretention\tacme\t${new Date(W - 6 * DAY).toISOString()}..${new Date(W + DAY).toISOString()}\t1 objects\t${b44last!.bytes}\ts3://${w44}\t(whole bucket)`,
    ],
    'strata bucket retention --dry-run names the partition dropped whole',
  );
  t.match(tool.stderr, /dry run: 1 blocks \(\d+ bytes\) and 0 incomplete uploads would be removed, 1 partition buckets dropped whole/);
  await t.rejects(run(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'bucket', 'retention', '--dry-run', '--at', 'soon', '--tenants-file', file], { cwd: ROOT }), /--at: "soon" is neither/);
  t.ok(await exists(w44), 'the tool deleted nothing');
  // an upload an aggregator never finished, in the week that goes
  await admin.send(new CreateMultipartUploadCommand({ Bucket: w44, Key: blockKey('acme', 0, BigInt(W + 2 * H4)) }));
  const pass = await runLifecyclePass(reg, due, { ...opts, onBucketDropped: (d) => dropped.push(`${d.bucket} ${d.reason} ${d.objects} ${d.bytes} ${d.existed}`) });
  t.same([pass.bucketsDropped, pass.blocksDeleted.retention, pass.bytesDeleted.retention, pass.debrisRemoved, pass.failures], [1, 1, b44last!.bytes, 1, 0], 'dropped: its block, its incomplete upload, then the bucket');
  t.same(dropped, [`s3://${w44} retention 1 ${b44last!.bytes} true`]);
  t.notOk(await exists(w44), 'week 44 is gone');
  t.ok(await exists(w45), 'week 45 stays (its windows have not all expired)');
  await t.rejects(r44.bucket.get(b44!.key), { code: 'ERR_STRATA_NOT_FOUND' }, 'a read of the dropped week: no block');
  const again = await runLifecyclePass(reg, due, opts);
  t.same([again.bucketsDropped, again.blocksDeleted.retention, again.failures], [0, 0, 0], 'a second pass has nothing to do');

  // tenant deletion drops every partition left, whatever its age
  await markTenantDeleted(await reg.defaultBucket(), 'acme', due);
  const del = await runLifecyclePass(reg, due, opts);
  t.same([del.bucketsDropped, del.blocksDeleted.tenant_deleted, del.failures], [1, 1, 0]);
  t.same(del.reports.map((r) => [r.tenant, r.blocksRemoved, r.blocksLeft]), [['acme', 1, 0]]);
  t.notOk(await exists(w45), 'week 45 is gone');
  t.same(await reg.partitionsOf('acme'), [], 'no partition left');
});

async function collectKeys(b: { list(p: string): AsyncIterable<{ key: string }> }): Promise<string[]> {
  const out: string[] = [];
  for await (const o of b.list('')) out.push(o.key);
  return out;
}
