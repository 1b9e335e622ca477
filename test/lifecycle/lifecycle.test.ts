/**
 * The lifecycle role against Ceph RGW, with an injected clock: retention per tenant and by
 * default, in the default bucket and in a tenant's own bucket (of another RGW user), the exact
 * boundary; the schedule kept in the lease object across a restart; the lease between two
 * replicas (one works, the other takes over only after expiry, the old one then stops); tenant
 * deletion with its report; abandoned multipart uploads and filesystem temp files removed past
 * their bound only; `strata bucket retention --dry-run`; and a gateway given the same tenants file
 * answering an expired window, or any window of a tenant marked for deletion, exactly as a window
 * without a block, before and after the deletion.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/lifecycle/lifecycle.test.ts
 */
import { execFile } from 'node:child_process';
import { mkdirSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CreateMultipartUploadCommand } from '@aws-sdk/client-s3';
import t, { type Test } from 'tap';
import { stringify as toYaml } from 'yaml';
import { blockKey } from '../../src/format/key.js';
import { parseLifecycleConfig } from '../../src/lifecycle/config.js';
import { runLifecyclePass } from '../../src/lifecycle/job.js';
import { Lease, LEASE_PREFIX, leaseKey } from '../../src/lifecycle/lease.js';
import { startLifecycle, type RunningLifecycle } from '../../src/lifecycle/service.js';
import { FilesystemBucket, FS_TEMP_PREFIX, type Bucket } from '../../src/objstore/index.js';
import { S3Bucket } from '../../src/objstore/s3/index.js';
import { openTenantsConfig } from '../../src/tenancy/config.js';
import { deletionMarkKey, markTenantDeleted, readDeletionReport } from '../../src/tenancy/deletion-marks.js';
import { TenantRegistry } from '../../src/tenancy/tenants.js';
import { collect } from '../support/async.js';
import { FORWARD, startFaultProxy } from '../support/faultproxy.js';
import { adminClient, createTestBucket, pendingMultipartUploads, s3BucketConfig, s3TestEnv, type TestUser } from '../support/s3env.js';
import { credentialEnvRefs, s3TenantBucket } from '../support/tenancy.js';
import { D, idBytes, makeDataSet, manualClock, rawRead, startTestGateway, tempDir, testConfig, W0, writeBlock } from '../support/gateway.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const run = promisify(execFile);
const env = s3TestEnv();
const DAY = 24 * 3600 * 1000;
const HOUR = 3600 * 1000;
/** The clock of the tests: 30 days after the data set's first window. */
const NOW = Number(W0) + 30 * DAY;
const NUM_SHARDS = 4;

function open(bucket: string, user: TestUser): S3Bucket {
  const b = new S3Bucket(s3BucketConfig(env, bucket, {}, user));
  t.teardown(() => b.close());
  return b;
}

/** Samples of the blocks written by {@link block}, by key. */
const samplesOf = new Map<string, number>();

/** Writes a small real block of `tenant` for the window starting at `windowStart`. */
async function block(bucket: Bucket, tenant: string, shard: number, windowStart: bigint, seed = 1): Promise<string> {
  const ds = makeDataSet({ seed, n: 16, numShards: NUM_SHARDS, windows: 1, tenant, maxSamples: 20 });
  const members = ds.series.filter((s) => s.id % BigInt(NUM_SHARDS) === BigInt(shard) && s.samples.timestamps.length > 0);
  if (members.length === 0) throw new Error(`seed ${seed} has no series of shard ${shard}`);
  samplesOf.set(blockKey(tenant, shard, windowStart), members.reduce((n, s) => n + s.samples.timestamps.length, 0));
  const shifted = members.map((s) => ({ id: s.id, samples: { timestamps: s.samples.timestamps.map((ts) => ts - W0 + windowStart), values: s.samples.values } }));
  const [key] = await writeBlock(bucket, tenant, shard, NUM_SHARDS, windowStart, shifted);
  return key;
}

async function keys(bucket: Bucket, prefix = 'blocks/'): Promise<string[]> {
  return (await collect(bucket.list(prefix))).map((i) => i.key);
}

function writeTenants(dir: string, doc: Record<string, unknown>): string {
  const file = join(dir, 'tenants.yaml');
  writeFileSync(file, toYaml(doc));
  return file;
}

const baseConfig = (tenantsFile: string, extra: Record<string, unknown> = {}) =>
  // day blocks have their own tests (day.test.ts): these count and list the 4-hour blocks
  parseLifecycleConfig({ tenantsFile, metricsListen: '127.0.0.1:0', logLevel: 'silent', retentionGraceMs: HOUR, intervalMs: 6 * HOUR, leaseDurationMs: 60_000, dayBlocks: false, ...extra });

async function startRole(tt: Test, tenantsFile: string, now: () => number, extra: Record<string, unknown> = {}): Promise<RunningLifecycle> {
  const role = await startLifecycle({ config: baseConfig(tenantsFile, extra), now, timer: false, defaultMetrics: false });
  tt.teardown(() => role.shutdown());
  return role;
}

/** A default bucket (test user 1) and a tenant's own bucket (user 2), open, and a directory for the tenants file. */
async function twoBuckets(t: Test, defTag: string, ownTag: string): Promise<{ defName: string; ownName: string; def: Bucket; own: Bucket; dir: string }> {
  const defName = await createTestBucket(t, { user: 1, tag: defTag });
  const ownName = await createTestBucket(t, { user: 2, tag: ownTag });
  return { defName, ownName, def: open(defName, 1), own: open(ownName, 2), dir: tempDir(t, defTag) };
}

t.test('a tick without the timer (strata lifecycle --once) renews the lease while its pass runs: a pass longer than leaseDurationMs runs to its end', async (t) => {
  const name = await createTestBucket(t, { user: 1, tag: 'lc-once' });
  const bucket = open(name, 1);
  const dir = tempDir(t, 'lc-once');
  // every deletion's answer held 400 ms, so the pass (one deletion at a time, 12 of them) lasts
  // longer than the 3 s lease whatever the machine's speed
  const proxy = await startFaultProxy(t, env.endpoint, (_n, req) =>
    req.method === 'DELETE' ? { kind: 'hold', fetched: () => undefined, release: new Promise<void>((r) => setTimeout(r, 400)) } : FORWARD,
  );
  const file = writeTenants(dir, { authRequired: false, retentionMs: 7 * DAY, defaultBucket: s3TenantBucket(name, credentialEnvRefs(1), { endpoint: proxy.endpoint }) });
  const expired: string[] = [];
  for (let i = 0; i < 12; i++) expired.push(await block(bucket, 'acme', i % NUM_SHARDS, W0 + BigInt(Math.floor(i / NUM_SHARDS)) * D));
  const t0 = Date.now();
  const role = await startRole(t, file, () => NOW + (Date.now() - t0), { retentionGraceMs: 0, leaseDurationMs: 3000, deleteConcurrency: 1 });
  const r = await role.tick();
  t.ok(Date.now() - t0 > 3000, `the pass outlasted the lease (${Date.now() - t0} ms)`);
  t.not(r.pass, null, `the pass ran to its end (${r.skipped ?? ''} ${r.error ?? ''})`);
  t.same(r.pass?.blocksDeleted, { retention: 12, tenant_deleted: 0 }, 'every expired block deleted');
  t.same(await keys(bucket), [], 'none left');
});

t.test('a tick whose lease cannot be renewed while its pass runs reports the pass as stopped, not as "no pass due"', async (t) => {
  const name = await createTestBucket(t, { user: 1, tag: 'lc-stop' });
  const bucket = open(name, 1);
  const dir = tempDir(t, 'lc-stop');
  // deletions held 400 ms each (the pass outlasts the 3 s lease); once the pass deletes, every
  // write of the lease is refused, so its renewals fail and the lease runs out
  let deleting = false;
  const proxy = await startFaultProxy(t, env.endpoint, (_n, req) => {
    if (req.method === 'DELETE') {
      deleting = true;
      return { kind: 'hold', fetched: () => undefined, release: new Promise<void>((r) => setTimeout(r, 400)) };
    }
    return deleting && req.method === 'PUT' && (req.url ?? '').includes(LEASE_PREFIX) ? { kind: 'status', status: 503, code: 'SlowDown' } : FORWARD;
  });
  const file = writeTenants(dir, { authRequired: false, retentionMs: 7 * DAY, defaultBucket: s3TenantBucket(name, credentialEnvRefs(1), { endpoint: proxy.endpoint }) });
  for (let i = 0; i < 12; i++) await block(bucket, 'acme', i % NUM_SHARDS, W0 + BigInt(Math.floor(i / NUM_SHARDS)) * D);
  const t0 = Date.now();
  const role = await startRole(t, file, () => NOW + (Date.now() - t0), { retentionGraceMs: 0, leaseDurationMs: 3000, deleteConcurrency: 1 });
  const r = await role.tick();
  t.equal(r.pass, null, 'no pass result');
  t.equal(r.skipped, 'stopped', 'reported as stopped');
  const left = (await keys(bucket)).length;
  t.ok(left > 0 && left < 12, `stopped part-way (${left} of 12 blocks left)`);
});

t.test('retention deletes expired blocks in the default and own buckets, at the exact boundary; the schedule survives a restart', async (t) => {
  const { defName, ownName, def, own, dir } = await twoBuckets(t, 'lc-def', 'lc-own');
  const file = writeTenants(dir, {
    authRequired: false,
    retentionMs: 7 * DAY,
    defaultBucket: s3TenantBucket(defName, credentialEnvRefs(1)),
    tenants: {
      short: { retentionMs: DAY },
      own: { bucket: s3TenantBucket(ownName, credentialEnvRefs(2)) },
    },
  });
  // with retentionGraceMs 0: deleted once windowEnd + retention <= NOW
  const boundary = BigInt(NOW - 7 * DAY) - D; // ends exactly retention before NOW
  const expired = [await block(def, 'acme', 0, W0), await block(def, 'acme', 3, boundary), await block(def, 'short', 0, W0 + 28n * BigInt(DAY)), await block(own, 'own', 1, W0 + D)];
  const kept = [
    await block(def, 'acme', 0, boundary + D), // one window later: not yet
    await block(def, 'acme', 1, W0 + 29n * BigInt(DAY)),
    await block(def, 'short', 0, W0 + 29n * BigInt(DAY)), // ends 20 h before NOW: within its 1 d
    await block(own, 'own', 1, W0 + 25n * BigInt(DAY)),
  ];
  t.equal(boundary % D, 0n, 'the boundary window is aligned');
  const clock = manualClock(NOW);
  const role = await startRole(t, file, clock.now, { retentionGraceMs: 0 });
  const first = await role.tick();
  t.equal(first.held, true, 'the only replica takes the lease');
  t.same(first.pass?.blocksDeleted, { retention: 4, tenant_deleted: 0 }, 'four blocks past retention deleted');
  t.equal(first.pass?.buckets, 2, 'the default bucket and the own bucket were visited');
  t.same([...(await keys(def)), ...(await keys(own))].sort(), [...kept].sort(), 'exactly the blocks within retention are left');
  for (const k of expired) t.notOk((await keys(def)).includes(k) || (await keys(own)).includes(k), `${k} is gone`);
  t.equal(await role.metrics.blocksDeleted.get().then((m) => m.values.find((v) => v.labels.reason === 'retention')?.value), 4, 'metric counts the deletions');

  t.equal((await role.tick()).pass, null, 'no second pass within intervalMs');
  await role.shutdown();
  const restarted = await startRole(t, file, clock.now, { retentionGraceMs: 0 });
  const again = await restarted.tick();
  t.equal(again.held, true, 'the restarted role takes the released lease');
  t.equal(again.pass, null, 'the schedule survived the restart: no pass before intervalMs');
  clock.advance(6 * HOUR);
  const later = await restarted.tick();
  t.same(later.pass?.blocksDeleted, { retention: 2, tenant_deleted: 0 }, 'after intervalMs a pass runs; two more windows expired meanwhile');
  t.same([...(await keys(def)), ...(await keys(own))].sort(), [kept[1]!, kept[3]!].sort(), 'the next acme window and the short window went at their boundaries');
});

t.test('a host clock far from the bucket clock runs no pass (nothing deleted) and says so; a last run recorded in the future does not hold back the next pass', async (t) => {
  const defName = await createTestBucket(t, { user: 1, tag: 'lc-skew' });
  const def = open(defName, 1);
  const dir = tempDir(t, 'lc-skew');
  const file = writeTenants(dir, { authRequired: false, retentionMs: 7 * DAY, defaultBucket: s3TenantBucket(defName, credentialEnvRefs(1)) });
  const expired = await block(def, 'acme', 0, W0);
  const clock = manualClock(NOW);
  const ahead = await startLifecycle({ config: baseConfig(file), now: clock.now, hostClock: () => Date.now() + DAY, timer: false, defaultMetrics: false });
  t.teardown(() => ahead.shutdown());
  const refused = await ahead.tick();
  t.equal(refused.held, true, 'the lease is taken (it is how the skew is measured)');
  t.equal(refused.pass, null, 'no pass');
  t.same(await keys(def), [expired], 'nothing deleted');
  t.equal((await ahead.metrics.passes.get()).values.find((v) => v.labels.result === 'clock_skew')?.value, 1, 'counted as clock_skew');
  await ahead.shutdown();

  // a pass recorded by a clock that ran a year ahead: the next replica, on a right clock, runs at once
  const future = await startLifecycle({ config: baseConfig(file), now: () => NOW + 365 * DAY, timer: false, defaultMetrics: false });
  await block(def, 'later', 0, W0);
  t.ok((await future.tick()).pass !== null, 'a pass by the clock a year ahead');
  await future.shutdown();
  const right = await startLifecycle({ config: baseConfig(file, { instanceId: 'right' }), now: clock.now, timer: false, defaultMetrics: false });
  t.teardown(() => right.shutdown());
  await block(def, 'acme', 1, W0);
  let pass = null;
  for (let i = 0; i < 3 && pass === null; i++) {
    // the released lease is free at once; the first tick may only take it
    pass = (await right.tick()).pass;
  }
  t.ok(pass !== null, 'the right clock runs a pass without waiting a year');
  t.same(await keys(def), [], 'and deletes what its retention says');
});

t.test('a bucket that cannot be listed fails alone: the pass serves the others, reports it, and is recorded', async (t) => {
  const { defName, ownName, def, own, dir } = await twoBuckets(t, 'lc-fail-def', 'lc-fail-own');
  const file = writeTenants(dir, {
    authRequired: false,
    retentionMs: 7 * DAY,
    defaultBucket: s3TenantBucket(defName, credentialEnvRefs(1)),
    tenants: {
      // listed before the tenant with a bucket that works: its failure must not stop that one
      gone: { bucket: s3TenantBucket(`${ownName}-missing`, credentialEnvRefs(2)) },
      own: { bucket: s3TenantBucket(ownName, credentialEnvRefs(2)) },
    },
  });
  const expired = [await block(def, 'acme', 0, W0), await block(own, 'own', 1, W0 + D)];
  // two tenants marked for deletion: one in the default bucket, one whose bucket fails
  const doomed = await block(def, 'doomed', 0, W0 + 20n * D);
  await markTenantDeleted(def, 'doomed', NOW - HOUR);
  await markTenantDeleted(def, 'gone', NOW - HOUR);
  const clock = manualClock(NOW);
  const role = await startRole(t, file, clock.now, { retentionGraceMs: 0 });
  const first = await role.tick();
  t.same(first.pass?.blocksDeleted, { retention: 2, tenant_deleted: 1 }, 'the expired blocks of the default and the working own bucket are deleted, and the marked tenant\'s');
  t.equal(first.pass?.failures, 1, 'the missing bucket is one failure');
  for (const k of [...expired, doomed]) t.notOk((await keys(def)).includes(k) || (await keys(own)).includes(k), `${k} is gone`);
  // the failing bucket holds back only the deletion of a tenant whose blocks it can hold
  t.match(await readDeletionReport(def, 'doomed'), { blocksRemoved: 1, blocksLeft: 0 }, 'complete: its blocks cannot be in the failing bucket');
  t.ok(((await readDeletionReport(def, 'gone'))?.blocksLeft ?? 0) > 0, 'not complete: its own bucket could not be listed');
  t.equal((await role.tick()).pass, null, 'the pass was recorded: none again before intervalMs');
});

t.test('two replicas: one works; the other takes over only after the lease expired; the old holder then stops', async (t) => {
  const defName = await createTestBucket(t, { user: 1, tag: 'lc-lease' });
  const def = open(defName, 1);
  const dir = tempDir(t, 'lc');
  const file = writeTenants(dir, { authRequired: false, retentionMs: DAY, defaultBucket: s3TenantBucket(defName, credentialEnvRefs(1)) });
  await block(def, 'acme', 0, W0);
  const clock = manualClock(NOW);
  const a = await startRole(t, file, clock.now, { instanceId: 'replica-a' });
  const b = await startRole(t, file, clock.now, { instanceId: 'replica-b' });
  const ra = await a.tick();
  t.equal(ra.held, true, 'a holds the lease');
  t.equal(ra.pass?.blocksDeleted.retention, 1, 'a ran the pass');
  const rb = await b.tick();
  t.equal(rb.held, false, 'b does not get the lease while it is valid');
  t.equal(rb.pass, null, 'b does no work');
  t.equal(rb.skipped, 'lease_elsewhere', 'and says why');
  clock.advance(30_000);
  t.equal((await a.tick()).held, true, 'a renews its lease');
  t.equal(a.lease.record?.expiresMs, NOW + 90_000, 'for another leaseDurationMs');
  t.equal(a.lease.record?.lastRunMs, NOW, 'keeping the time of its last run');
  clock.advance(59_000);
  t.equal((await b.tick()).held, false, 'not even a second before it expires');
  clock.advance(1_000);
  const taken = await b.tick();
  t.equal(taken.held, true, 'b takes the lease once it expired (a did not renew again)');
  t.equal(b.lease.record?.term, 2, 'in a new term');
  t.equal(b.lease.record?.lastRunMs, NOW, "b knows a's last run: no pass before intervalMs");
  t.equal(taken.pass, null);
  t.equal(taken.skipped, 'not_due', 'no pass due yet');
  const back = await a.tick();
  t.equal(back.held, false, 'a sees the newer term and stops working');
  t.equal(a.lease.held(), false);
  t.ok(await def.head(leaseKey(2)), 'the lease term is an object in the default bucket');
});

t.test("the lease keeps the bucket's time: with a replica whose clock runs 12 minutes ahead, one replica holds it at a time once that replica has measured its skew", async (t) => {
  const bucket = new FilesystemBucket({ path: tempDir(t, 'lc-skew') });
  const clock = manualClock(NOW);
  const AHEAD = 12 * 60_000;
  const DURATION = 5 * 60_000;
  // the bucket's clock is the machine's: the healthy replica's host clock; the other runs ahead
  const healthy = new Lease(async () => bucket, 'healthy', DURATION, clock.now, () => Date.now());
  const skewed = new Lease(async () => bucket, 'skewed', DURATION, () => clock.now() + AHEAD, () => Date.now() + AHEAD);
  t.equal((await healthy.acquire()).held, true, 'the healthy replica takes the lease');
  // before its first write a replica knows no skew: by its clock the term has expired (once)
  t.equal((await skewed.acquire()).held, true, 'the skewed replica, not knowing its skew yet, takes the next term');
  t.ok(skewed.clockSkewMs !== null && Math.abs(skewed.clockSkewMs - AHEAD) < 5000, `and measures its skew: ${skewed.clockSkewMs} ms`);
  // that term was written by its clock, implausibly far ahead: the healthy replica takes it over
  await healthy.acquire();
  const holders: string[] = [];
  for (let round = 0; round < 9; round++) {
    clock.advance(DURATION / 3);
    const s = await skewed.acquire();
    const h = await healthy.acquire();
    t.ok(s.held !== h.held, `round ${round}: exactly one replica holds the lease (skewed ${s.held}, healthy ${h.held})`);
    t.notOk(skewed.held() && healthy.held(), `round ${round}: never both by their own reckoning`);
    holders.push(s.held ? 'skewed' : 'healthy');
  }
  t.equal(new Set(holders.slice(1)).size, 1, `the lease stays with one holder: ${holders.join(', ')}`);
  // the holder stops renewing: the other takes over once the term expired by the bucket's clock
  const [holder, other] = holders.at(-1) === 'skewed' ? [skewed, healthy] : [healthy, skewed];
  clock.advance(DURATION / 2);
  t.equal((await other.acquire()).held, false, 'not before the term expired');
  clock.advance(DURATION / 2 + 5000); // past the expiry by more than a measured skew's error
  t.equal((await other.acquire()).held, true, 'then the other replica takes over');
  t.equal((await holder.acquire()).held, false, 'and the old holder leaves it');
});

t.test('tenant deletion removes every block of the tenant in its own bucket, reports it, and resumes', async (t) => {
  const { defName, ownName, def, own, dir } = await twoBuckets(t, 'lc-del', 'lc-delown');
  const file = writeTenants(dir, {
    authRequired: false,
    defaultBucket: s3TenantBucket(defName, credentialEnvRefs(1)),
    tenants: { gone: { bucket: s3TenantBucket(ownName, credentialEnvRefs(2)) } },
  });
  const goneKeys: string[] = [];
  for (let w = 0; w < 5; w++) goneKeys.push(await block(own, 'gone', w % 2, W0 + BigInt(w) * D, w + 1));
  goneKeys.push(await block(def, 'gone', 0, W0)); // written before it had its own bucket
  const others = [await block(def, 'acme', 0, W0), await block(own, 'stay', 0, W0)];
  const listed = (await collect(own.list('blocks/gone/'))).concat(await collect(def.list('blocks/gone/')));
  t.equal(listed.length, 6, 'six blocks of the tenant (one key in both buckets)');
  const { created } = await markTenantDeleted(def, 'gone', NOW - HOUR);
  t.equal(created, true);
  t.equal((await markTenantDeleted(def, 'gone', NOW)).created, false, 'marking twice keeps the first mark');
  // a damaged mark of another tenant: reported, and it does not stop the pass
  await def.put(deletionMarkKey('broken'), Buffer.from('{"tenant":'));
  others.push(await block(def, 'broken', 0, W0));

  const role = await startRole(t, file, manualClock(NOW).now);
  const r = await role.tick();
  t.same(r.pass?.blocksDeleted, { retention: 0, tenant_deleted: 6 }, 'every block of the tenant in both buckets');
  t.equal(r.pass?.failures, 1, 'the damaged mark is one failure; its tenant is not deleted');
  t.same(await keys(own, 'blocks/gone/'), [], 'none left in its own bucket');
  t.same(await keys(def, 'blocks/gone/'), [], 'none left in the default bucket');
  t.same([...(await keys(def)), ...(await keys(own))].sort(), [...others].sort(), "other tenants' blocks are untouched");
  const report = await readDeletionReport(def, 'gone');
  const bytes = listed.reduce((a, b) => a + b.size, 0);
  t.same(report, { tenant: 'gone', markedMs: NOW - HOUR, blocksRemoved: 6, bytesRemoved: bytes, lastPassMs: NOW, blocksLeft: 0 }, 'the report says what was removed');

  // a block flushed after the mark (an aggregator that had not seen it yet) goes at the next pass
  await block(own, 'gone', 0, W0 + 9n * D);
  const clock2 = manualClock(NOW + 6 * HOUR);
  const role2 = await startRole(t, file, clock2.now, { instanceId: 'other' });
  await role.shutdown();
  const r2 = await role2.tick();
  t.equal(r2.pass?.blocksDeleted.tenant_deleted, 1, 'the late block is deleted too');
  t.match(await readDeletionReport(def, 'gone'), { blocksRemoved: 7, blocksLeft: 0 }, 'the report adds up over passes');
});

t.test('a tenant marked with its own bucket that then left the tenants file is not reported as deleted: its blocks there are left, and said so', async (t) => {
  const { defName, ownName, def, own, dir } = await twoBuckets(t, 'lc-leave', 'lc-leaveown');
  const withLeaver = {
    authRequired: false,
    defaultBucket: s3TenantBucket(defName, credentialEnvRefs(1)),
    tenants: { leaver: { bucket: s3TenantBucket(ownName, credentialEnvRefs(2)) } },
  };
  const file = writeTenants(dir, withLeaver);
  const leaverKeys = [await block(own, 'leaver', 0, W0), await block(own, 'leaver', 1, W0 + D, 2)];
  const cli = (...args: string[]) => run(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), ...args], { cwd: ROOT });
  await cli('tenant', 'delete', 'leaver', '--yes', '--tenants-file', file);
  const unknown = await cli('tenant', 'delete', 'nobody', '--yes', '--tenants-file', file);
  t.match(unknown.stderr, `tenant "nobody" is not in ${file}: only its blocks in the default bucket will be deleted`);
  // the operator takes the tenant out of the file before its deletion is done
  writeTenants(dir, { ...withLeaver, tenants: {} });
  const role = await startRole(t, file, manualClock(NOW).now);
  const r = await role.tick();
  t.equal(r.pass?.blocksDeleted.tenant_deleted, 0);
  t.match(await readDeletionReport(def, 'leaver'), { blocksRemoved: 0, blocksLeft: 1 }, 'not complete: its own bucket was not visited');
  t.match(await readDeletionReport(def, 'nobody'), { blocksRemoved: 0, blocksLeft: 0 }, 'a tenant with no bucket of its own and no block: done');
  t.equal(r.pass?.failures, 1);
  t.same(await keys(own, 'blocks/leaver/'), leaverKeys.sort(), 'its blocks are still there');
  // put back, the next pass deletes them and completes
  writeTenants(dir, withLeaver);
  const role2 = await startRole(t, file, manualClock(NOW + 6 * HOUR).now, { instanceId: 'second' });
  await role.shutdown();
  const r2 = await role2.tick();
  t.equal(r2.pass?.blocksDeleted.tenant_deleted, 2);
  t.same(await keys(own, 'blocks/leaver/'), []);
  t.match(await readDeletionReport(def, 'leaver'), { blocksRemoved: 2, blocksLeft: 0 });
});

t.test('abandoned multipart uploads and filesystem temp files are removed past their bound only', async (t) => {
  const name = await createTestBucket(t, { user: 1, tag: 'lc-debris' });
  const client = adminClient(env, 1);
  t.teardown(() => client.destroy());
  await client.send(new CreateMultipartUploadCommand({ Bucket: name, Key: blockKey('acme', 0, W0) }));
  t.same(await pendingMultipartUploads(client, name), [blockKey('acme', 0, W0)], 'one abandoned upload');
  const s3 = open(name, 1);
  const dir = tempDir(t, 'lc-fs');
  const fs = new FilesystemBucket({ path: dir });
  const tmpDir = join(dir, 'blocks', 'acme', String(W0).padStart(16, '0'));
  mkdirSync(tmpDir, { recursive: true });
  const oldTmp = join(tmpDir, `${FS_TEMP_PREFIX}old`);
  const newTmp = join(tmpDir, `${FS_TEMP_PREFIX}new`);
  writeFileSync(oldTmp, 'left by a crash');
  writeFileSync(newTmp, 'being written');
  const realNow = Date.now();
  utimesSync(oldTmp, (realNow - 3 * HOUR) / 1000, (realNow - 3 * HOUR) / 1000);
  t.same((await collect(fs.listIncompleteUploads(''))).map((u) => u.key).sort(), [`blocks/acme/${String(W0).padStart(16, '0')}/${FS_TEMP_PREFIX}new`, `blocks/acme/${String(W0).padStart(16, '0')}/${FS_TEMP_PREFIX}old`]);
  const opts = { blockDurationMs: Number(D), retentionGraceMs: 0, incompleteUploadMaxAgeMs: 2 * HOUR, deleteConcurrency: 4 };
  const fsRegistry = new TenantRegistry(openTenantsConfig({ type: 'filesystem', path: dir }));
  t.teardown(() => fsRegistry.close());
  const fsPass = await runLifecyclePass(fsRegistry, realNow, opts);
  t.equal(fsPass.debrisRemoved, 1, 'the temp file older than the bound is removed');
  t.notOk(existsSync(oldTmp), 'old temp file gone');
  t.ok(existsSync(newTmp), 'a recent temp file (a write in progress) stays');

  const s3Registry = new TenantRegistry(openTenantsConfig({ type: 's3', ...s3BucketConfig(env, name) }));
  t.teardown(() => s3Registry.close());
  const young = await runLifecyclePass(s3Registry, realNow, opts);
  t.equal(young.debrisRemoved, 0, 'an upload younger than the bound stays');
  t.equal((await pendingMultipartUploads(client, name)).length, 1);
  const removed: string[] = [];
  const old = await runLifecyclePass(s3Registry, realNow + 3 * HOUR, { ...opts, onDebris: (d) => removed.push(d.upload.key) });
  t.equal(old.debrisRemoved, 1, 'past the bound it is aborted');
  t.same(removed, [blockKey('acme', 0, W0)]);
  t.same(await pendingMultipartUploads(client, name), [], 'RGW has no unfinished upload left');
  t.same(await keys(s3), [], 'and no object appeared');
});

t.test('strata bucket retention --dry-run, ls and usage show what is there and what would go, deleting nothing', async (t) => {
  const dir = tempDir(t, 'lc-cli');
  const bucketDir = join(dir, 'bucket');
  const fs = new FilesystemBucket({ path: bucketDir });
  const now = Date.now();
  const oldWindow = BigInt(now - 40 * DAY) - (BigInt(now - 40 * DAY) % D);
  const newWindow = BigInt(now) - (BigInt(now) % D);
  const oldKey = await block(fs, 'acme', 0, oldWindow);
  const newKey = await block(fs, 'acme', 0, newWindow, 2);
  const file = writeTenants(dir, { authRequired: false, retentionMs: 30 * DAY, defaultBucket: { type: 'filesystem', path: bucketDir } });
  const cli = (...args: string[]) => run(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), ...args], { cwd: ROOT });
  const dry = await cli('bucket', 'retention', '--dry-run', '--json', '--tenants-file', file);
  const lines = dry.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  t.same(lines.map((l) => [l['key'], l['reason']]), [[oldKey, 'retention']], 'the expired block, and only it');
  t.match(dry.stderr, /1 blocks .* would be removed/);
  t.same(await keys(fs), [oldKey, newKey].sort(), 'nothing deleted');
  const ls = await cli('bucket', 'ls', '--json', '--tenants-file', file);
  t.same(ls.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { key: string }).key), [oldKey, newKey].sort());
  const usage = JSON.parse((await cli('bucket', 'usage', '--json', '--bucket-path', bucketDir)).stdout) as Record<string, number>;
  t.equal(usage['blocks'], 2);
  t.equal(usage['samples'], samplesOf.get(oldKey)! + samplesOf.get(newKey)!, 'samples summed from the block footers');
  t.ok(usage['samples']! > 0);
  const verify = await cli('bucket', 'verify', '--no-progress', '--bucket-path', bucketDir);
  t.match(verify.stdout, /2 blocks checked, \d+ bytes, 0 corrupt/);
  const refused = await cli('bucket', 'retention', '--tenants-file', file).then(
    () => null,
    (e: { stderr: string }) => e.stderr,
  );
  t.match(refused, /--dry-run/, 'without --dry-run it refuses');
});

t.test('a gateway with the same tenants file answers an expired window as a window without a block, before and after the deletion', async (t) => {
  const name = await createTestBucket(t, { user: 1, tag: 'lc-gw' });
  const def = open(name, 1);
  const dir = tempDir(t, 'lc-gw');
  const file = writeTenants(dir, { authRequired: false, retentionMs: 7 * DAY, defaultBucket: s3TenantBucket(name, credentialEnvRefs(1)) });
  const expiredWindow = W0; // ends 30 days - 4 h before NOW
  const liveWindow = W0 + 28n * BigInt(DAY);
  await block(def, 'acme', 0, expiredWindow);
  await block(def, 'acme', 0, liveWindow);
  const ids = makeDataSet({ seed: 1, n: 16, numShards: NUM_SHARDS, windows: 1, tenant: 'acme', maxSamples: 20 }).series.map((s) => s.id).filter((id) => id % BigInt(NUM_SHARDS) === 0n);
  const clock = manualClock(NOW);
  const gw = await startTestGateway(t, testConfig({ type: 'filesystem', path: dir }, join(dir, 'cache'), { bucket: undefined, tenantsFile: file }), { now: clock.now });
  const read = (windowStart: bigint) =>
    rawRead(gw.grpcPort, { tenant: 'acme', shard: 0, num_shards: NUM_SHARDS, window_start_ms: String(windowStart), series_ids: idBytes(ids), start_ms: '0', end_ms: String(NOW), encoding: 'RAW' });
  const noBlock = await read(W0 + 2n * D);
  const live = await read(liveWindow);
  t.notSame(live, noBlock, 'a window within retention has data');
  t.same(await read(expiredWindow), noBlock, 'an expired window (block still there) reads as no data');
  const role = await startRole(t, file, clock.now);
  t.equal((await role.tick()).pass?.blocksDeleted.retention, 1);
  t.same(await read(expiredWindow), noBlock, 'after the deletion: the same answer');
  t.same(await read(liveWindow), live, 'the live window is unchanged');

  // a tenant marked for deletion reads as no data at once (a gateway reads the marks before serving)
  await markTenantDeleted(def, 'acme', NOW);
  const gw2 = await startTestGateway(t, testConfig({ type: 'filesystem', path: dir }, join(dir, 'cache2'), { bucket: undefined, tenantsFile: file }), { now: clock.now });
  const read2 = (windowStart: bigint) =>
    rawRead(gw2.grpcPort, { tenant: 'acme', shard: 0, num_shards: NUM_SHARDS, window_start_ms: String(windowStart), series_ids: idBytes(ids), start_ms: '0', end_ms: String(NOW), encoding: 'RAW' });
  const noBlock2 = await read2(W0 + 2n * D);
  t.same(await read2(liveWindow), noBlock2, "a marked tenant's live window reads as no data");
  clock.advance(6 * HOUR);
  t.equal((await role.tick()).pass?.blocksDeleted.tenant_deleted, 1, 'then its block is deleted');
  t.same(await read2(liveWindow), noBlock2, 'with the same answer');
});

/** A tenants file of no tenants over a new default bucket (test user 1). */
async function emptyTenants(t: Test, tag: string): Promise<string> {
  const defName = await createTestBucket(t, { user: 1, tag });
  return writeTenants(tempDir(t, tag), { authRequired: false, retentionMs: 7 * DAY, defaultBucket: s3TenantBucket(defName, credentialEnvRefs(1)), tenants: {} });
}

/** Polls the role's pass counter of `result` (the test's timeout bounds the wait). */
async function passesReach(role: RunningLifecycle, result: string, n: number): Promise<void> {
  const count = async (): Promise<number> => (await role.metrics.passes.get()).values.find((v) => v.labels.result === result)?.value ?? 0;
  while ((await count()) < n) await new Promise((r) => setTimeout(r, 10));
}

t.test('with its timer, a pass starts intervalMs after the last one, not at the lease renewal after that', async (t) => {
  const file = await emptyTenants(t, 'lc-timer');
  // the lease is renewed every 20 s; passes are due every 1.5 s
  const role = await startLifecycle({ config: baseConfig(file, { intervalMs: 1500, leaseDurationMs: 60_000 }), defaultMetrics: false });
  t.teardown(() => role.shutdown());
  // waits for the passes themselves
  await passesReach(role, 'ok', 1);
  const first = Date.now();
  await passesReach(role, 'ok', 3);
  const took = Date.now() - first;
  t.ok(took >= 1500, `two more passes took ${took} ms: not back to back`);
  t.ok(took < 20_000, `two more passes took ${took} ms, less than one renewal period (20 s; they were 40 s apart when passes waited for renewals)`);
});

t.test('with its timer, a pass that records no run (clocks apart) is tried again at the lease renewals, not at once', async (t) => {
  const file = await emptyTenants(t, 'lc-retry');
  const config = baseConfig(file, { intervalMs: 1000, leaseDurationMs: 3000 });
  // one pass recorded, so the next is due a second later
  const first = await startLifecycle({ config, timer: false, defaultMetrics: false });
  t.not((await first.tick()).pass, null);
  await first.shutdown();
  // a host clock a day from the bucket's: no pass runs; each attempt waits for a renewal (1 s)
  const role = await startLifecycle({ config, hostClock: () => Date.now() + DAY, defaultMetrics: false });
  t.teardown(() => role.shutdown());
  await passesReach(role, 'clock_skew', 1);
  const at = Date.now();
  await passesReach(role, 'clock_skew', 3);
  const took = Date.now() - at;
  t.ok(took >= 1500, `two more attempts took ${took} ms, at the renewals (they came every 100 ms)`);
});
