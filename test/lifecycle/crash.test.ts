/**
 * Tenant deletion with real processes against Ceph RGW:
 *
 * - an aggregator refuses Write and Seal of a tenant marked for deletion with FAILED_PRECONDITION
 *   naming the tenant and the mark (marked before it started, and marked while it runs), and
 *   still takes other tenants' writes;
 * - `strata lifecycle` SIGKILLed in the middle of deleting a tenant's blocks: every block left is
 *   whole (its checksums verify), no other tenant's block changed, and `strata lifecycle --once`
 *   (the same instance id, so it takes the lease at once) deletes the rest and reports it.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/lifecycle/crash.test.ts
 */
import { execFile, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { status } from '@grpc/grpc-js';
import t from 'tap';
import { BlockReader } from '../../src/block/reader.js';
import { bucketSource } from '../../src/block/source.js';
import { blockKey, DEFAULT_BLOCK_DURATION_MS } from '../../src/format/key.js';
import { BlockWriter } from '../../src/block/writer.js';
import type { Bucket } from '../../src/objstore/index.js';
import { deletionMarkKey, markTenantDeleted, readDeletionReport } from '../../src/tenancy/deletion-marks.js';
import { collect, inBatches } from '../support/async.js';
import { createTestBucket } from '../support/s3env.js';
import { credentialEnvRefs, s3TenantBucket } from '../support/tenancy.js';
import { bitsBytes, bitsOf, eventually, openTestBucket, RawClient, s3ConfigFor, startAggregator, tempDir, tsBytes } from '../support/aggregator.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const run = promisify(execFile);
const H = BigInt(DEFAULT_BLOCK_DURATION_MS);
const W = ((BigInt(Date.now()) - 2n * 24n * 3600n * 1000n) / H) * H;

/** A small real block: series `shard` (one shard of one) with 3 samples. */
async function tinyBlock(bucket: Bucket, tenant: string, windowStart: bigint): Promise<string> {
  const key = blockKey(tenant, 0, windowStart);
  const w = new BlockWriter(bucket.upload(key), { tenant, shard: 0, numShards: 1, windowStart, windowEnd: windowStart + H });
  await w.add(7n, { timestamps: BigInt64Array.from([windowStart, windowStart + 1000n, windowStart + 2000n]), values: Float64Array.from([1, 2, 3]) });
  await w.finish();
  return key;
}

t.test('an aggregator refuses writes of a marked tenant with FAILED_PRECONDITION', async (t) => {
  const name = await createTestBucket(t, { tag: 'lc-agg' });
  const bucket = openTestBucket(t, name);
  await markTenantDeleted(bucket, 'doomed', Date.now());
  const agg = await startAggregator(t, { walDir: tempDir('lc-agg-wal'), bucket: s3ConfigFor(name), numShards: 1, deletionMarksPollMs: 100, flushIdleMs: 3600 * 1000 });
  const client = new RawClient(t, agg.address);
  const write = (tenant: string) =>
    client.call('Write', { series: [{ id: '7', timestamps: tsBytes([W, W + 1000n]), values: bitsBytes([bitsOf(1), bitsOf(2)]) }] }, { 'x-strata-tenant': tenant, 'x-strata-shard': '0' });
  const refused = await write('doomed');
  t.equal(refused.err?.code, status.FAILED_PRECONDITION, 'marked before start: refused');
  t.match(refused.err?.details, new RegExp(`tenant "doomed" is marked for deletion \\(mark ${deletionMarkKey('doomed')}`), 'the message names the tenant and the mark');
  const seal = await client.call('Seal', { window_start_ms: String(W) }, { 'x-strata-tenant': 'doomed', 'x-strata-shard': '0' });
  t.equal(seal.err?.code, status.FAILED_PRECONDITION, 'Seal refused too');
  const ok = await write('acme');
  t.equal(ok.err, null, 'another tenant writes');

  await markTenantDeleted(bucket, 'acme', Date.now());
  const later = await eventually('the new mark to be seen', async () => {
    const r = await write('acme');
    return r.err ? r.err : null;
  });
  t.equal(later.code, status.FAILED_PRECONDITION, 'marked while running: refused after the next poll');
  t.match(later.details, /tenant "acme" is marked for deletion/);
});

t.test("an aggregator refuses samples of windows already past the tenant's retention", async (t) => {
  const name = await createTestBucket(t, { tag: 'lc-ret' });
  const dir = tempDir('lc-ret');
  const tenantsFile = join(dir, 'tenants.json');
  // W is two days ago: past a 1-day retention, within a 30-day one
  writeFileSync(tenantsFile, JSON.stringify({ authRequired: false, retentionMs: 24 * 3600 * 1000, defaultBucket: s3TenantBucket(name, credentialEnvRefs(1)), tenants: { long: { retentionMs: 30 * 24 * 3600 * 1000 } } }));
  const agg = await startAggregator(t, { walDir: tempDir('lc-ret-wal'), tenantsFile, numShards: 1, flushIdleMs: 3600 * 1000 });
  const client = new RawClient(t, agg.address);
  const write = (tenant: string) =>
    client.call('Write', { series: [{ id: '7', timestamps: tsBytes([W, W + 1000n]), values: bitsBytes([bitsOf(1), bitsOf(2)]) }] }, { 'x-strata-tenant': tenant, 'x-strata-shard': '0' });
  const refused = await write('short');
  t.equal(refused.err?.code, status.INVALID_ARGUMENT, 'a window past the default retention is refused');
  t.match(refused.err?.details, /outside the accepted range/);
  t.equal((await write('long')).err, null, "a tenant whose own retention covers it writes");
});

t.test('SIGKILL of the lifecycle role during a tenant deletion: nothing partial, nothing else lost, the rerun finishes', async (t) => {
  const name = await createTestBucket(t, { tag: 'lc-kill' });
  const bucket = openTestBucket(t, name);
  const DOOMED = 300;
  const windows = Array.from({ length: DOOMED }, (_, i) => W - BigInt(i) * H);
  await inBatches(windows, 16, (w) => tinyBlock(bucket, 'doomed', w));
  const keep = new Map<string, string>();
  await inBatches(windows.slice(0, 20), 16, async (w) => {
    const key = await tinyBlock(bucket, 'keep', w);
    keep.set(key, (await bucket.head(key)).etag);
  });
  await markTenantDeleted(bucket, 'doomed', Date.now());
  const dir = tempDir('lc-kill');
  const cfgFile = join(dir, 'lifecycle.json');
  writeFileSync(cfgFile, JSON.stringify({ bucket: s3ConfigFor(name), metricsListen: '127.0.0.1:0', deleteConcurrency: 1, instanceId: 'lc-test', leaseDurationMs: 60_000, logLevel: 'info', dayBlocks: false }));
  const cli = [process.execPath, '--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'lifecycle', '--config', cfgFile] as const;
  const proc = spawn(cli[0], cli.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' } });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => proc.on('exit', (_c, s) => resolve(s)));
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
  });
  const bytesOf = new Map((await collect(bucket.list('blocks/doomed/'))).map((i) => [i.key, i.size]));
  const allBytes = [...bytesOf.values()].reduce((a, b) => a + b, 0);
  let deleted = 0;
  await new Promise<void>((resolve, reject) => {
    let buf = '';
    proc.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const rec = JSON.parse(line) as Record<string, unknown>;
        if (rec['msg'] === 'block deleted') {
          t.equal(rec['reason'], 'tenant_deleted');
          if (++deleted === 10) {
            proc.kill('SIGKILL');
            resolve();
          }
        }
      }
    });
    void exited.then(() => reject(new Error('the lifecycle role exited before deleting 10 blocks')));
  });
  t.equal(await exited, 'SIGKILL', 'killed mid-deletion');
  const left = (await collect(bucket.list('blocks/doomed/'))).map((i) => i.key);
  t.ok(left.length > 0 && left.length <= DOOMED - 10, `killed part-way: ${left.length} of ${DOOMED} blocks left`);
  for (const key of left) {
    const r = await BlockReader.open(bucketSource(bucket, key));
    const checked = await r.verify();
    if (checked.samples !== 3) t.fail(`${key}: ${checked.samples} samples`);
  }
  t.pass('every block left is whole: all checksums verify, 3 samples each');
  for (const [key, etag] of keep) t.equal((await bucket.head(key)).etag, etag, `${key} unchanged`);
  const partial = await readDeletionReport(bucket, 'doomed');
  t.ok(partial !== null && partial.pending !== undefined && partial.pending.length > 0, 'the killed pass left its report with the batch it was deleting pending');
  t.ok(partial!.blocksRemoved <= DOOMED - left.length, `the killed pass counted ${partial!.blocksRemoved} of the ${DOOMED - left.length} it removed`);
  t.ok(partial!.blocksLeft >= 1, `a report of a pass that did not finish never says blocksLeft: 0 (${partial!.blocksLeft})`);

  const again = await run(cli[0], [...cli.slice(1), '--once'], { cwd: ROOT, env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', STRATA_LIFECYCLE_LOG_LEVEL: 'warn' } });
  const pass = JSON.parse(again.stdout.trim().split('\n').pop()!) as { blocksDeleted: { tenant_deleted: number }; failures: number };
  t.equal(pass.blocksDeleted.tenant_deleted, left.length, 'the rerun deleted exactly the blocks left');
  t.equal(pass.failures, 0);
  t.same(await collect(bucket.list('blocks/doomed/')), [], 'no block of the tenant remains');
  const report = await readDeletionReport(bucket, 'doomed');
  t.match(report, { tenant: 'doomed', blocksRemoved: DOOMED, bytesRemoved: allBytes, blocksLeft: 0 }, 'the report counts every block removed, by both passes, once');
  t.equal(report?.pending, undefined, 'nothing pending');
  t.equal((await collect(bucket.list('blocks/keep/'))).length, 20, "the other tenant's 20 blocks are all there");
  for (const [key, etag] of keep) t.equal((await bucket.head(key)).etag, etag);
});
