/**
 * `strata lifecycle` SIGKILLed while it merges days into day blocks, and again while it deletes
 * the 4-hour blocks they hold, against Ceph RGW: after each kill every object under blocks/ is a
 * whole block (all its checksums verify), and a gateway answers each of the 30 days with every
 * sample exactly once; a restarted role finishes the work (30 day blocks, no 4-hour block left,
 * every sample still there once).
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/lifecycle/day-crash.test.ts
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { BlockReader } from '../../src/block/reader.js';
import { bucketSource } from '../../src/block/source.js';
import { BlockWriter } from '../../src/block/writer.js';
import { QueryClient } from '../../src/client/query.js';
import { DAY_MS, dayStartOf, parseDayKey } from '../../src/format/day-key.js';
import { blockKey, DEFAULT_BLOCK_DURATION_MS, parseBlockKey } from '../../src/format/key.js';
import type { Bucket } from '../../src/objstore/index.js';
import { collect, inBatches } from '../support/async.js';
import { createTestBucket, s3BucketConfig, s3TestEnv } from '../support/s3env.js';
import { openTestBucket, s3ConfigFor, tempDir } from '../support/aggregator.js';
import { mismatches, startTestGateway, testConfig, type SeriesData } from '../support/gateway.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const H = BigInt(DEFAULT_BLOCK_DURATION_MS);
const DAY = BigInt(DAY_MS);
const DAYS = 30;
/** The first day: 40 days ago, whatever the date. */
const D0 = dayStartOf(BigInt(Date.now())) - 40n * DAY;
const IDS = [7n, 11n, 1n << 63n];

/** The samples of series `id` in the window at `ws`: 3 samples, values unique per window. */
function samplesOf(id: bigint, ws: bigint): { timestamps: BigInt64Array; values: Float64Array } {
  const k = Number((ws - D0) / H);
  return { timestamps: BigInt64Array.from([ws, ws + 60_000n, ws + H - 1n]), values: Float64Array.from([k, k + 0.5, -k - Number(id % 1000n)]) };
}

async function writeAll(bucket: Bucket): Promise<number> {
  const windows = Array.from({ length: DAYS * 6 }, (_, i) => D0 + BigInt(i) * H);
  await inBatches(windows, 16, async (ws) => {
    const w = new BlockWriter(bucket.upload(blockKey('acme', 0, ws)), { tenant: 'acme', shard: 0, numShards: 1, windowStart: ws, windowEnd: ws + H });
    for (const id of IDS) await w.add(id, samplesOf(id, ws));
    await w.finish();
  });
  return windows.length;
}

function want(): SeriesData[] {
  return IDS.map((id) => {
    const parts = Array.from({ length: DAYS * 6 }, (_, i) => samplesOf(id, D0 + BigInt(i) * H));
    return { id, samples: { timestamps: BigInt64Array.from(parts.flatMap((p) => [...p.timestamps])), values: Float64Array.from(parts.flatMap((p) => [...p.values])) } };
  });
}

/** Every object under blocks/ is whole; returns the 4-hour and day blocks found. */
async function checkObjects(t: Test, bucket: Bucket): Promise<{ blocks: number; days: number; manifests: number }> {
  const keys = (await collect(bucket.list('blocks/'))).map((i) => i.key);
  let blocks = 0;
  let days = 0;
  let manifests = 0;
  for (const key of keys) {
    const d = parseDayKey(key);
    if (d?.kind === 'manifest') {
      manifests++;
      continue;
    }
    if (!d && !parseBlockKey(key)) t.fail(`unexpected object ${key}`);
    const r = await BlockReader.open(bucketSource(bucket, key));
    const v = await r.verify();
    const expect = d ? 6 * 3 * IDS.length : 3 * IDS.length;
    if (v.samples !== expect) t.fail(`${key}: ${v.samples} samples, expected ${expect}`);
    if (d) days++;
    else blocks++;
  }
  t.pass(`every object is whole: ${blocks} 4-hour blocks, ${days} day blocks, ${manifests} manifests`);
  return { blocks, days, manifests };
}

/** A fresh gateway reads the 30 days: every sample exactly once. */
async function checkReaders(t: Test, bucketName: string, what: string): Promise<void> {
  const gw = await startTestGateway(t, testConfig({ type: 's3', ...s3BucketConfig(s3TestEnv(), bucketName) }, tempDir('day-kill-gw'), { cacheType: 'memory', dayBlocksAfterMs: 0 }), { now: Date.now });
  const c = new QueryClient({ futureHorizonMs: null, endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: 1, dayRequestsAfterMs: 0 });
  try {
    const r = await c.query('acme', IDS, { start: D0, end: D0 + BigInt(DAYS) * DAY });
    t.equal(r.requests, DAYS, `${what}: one request per day`);
    t.same(mismatches(r.series, want()), [], `${what}: every sample of the 30 days exactly once`);
  } finally {
    c.close();
    await gw.shutdown();
  }
}

interface Role {
  /** Resolves with the signal the role died of once `until` said yes to a log line (and it was sent `signal`). */
  readonly done: Promise<NodeJS.Signals | null>;
}

/** Runs `strata lifecycle`, sends `signal` once `until` accepts a log record. */
function runRole(t: Test, cfgFile: string, until: (rec: Record<string, unknown>) => boolean | Promise<boolean>, signal: NodeJS.Signals): Role {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'lifecycle', '--config', cfgFile], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => proc.on('exit', (_c, s) => resolve(s)));
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
  });
  const done = new Promise<NodeJS.Signals | null>((resolve, reject) => {
    let buf = '';
    let chain = Promise.resolve();
    let sent = false;
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const rec = JSON.parse(line) as Record<string, unknown>;
        chain = chain.then(async () => {
          if (sent) return;
          if (await until(rec)) {
            sent = true;
            proc.kill(signal);
            resolve(await exited);
          }
        });
        chain.catch(reject);
      }
    });
    void exited.then((s) => {
      if (!sent) reject(new Error(`the lifecycle role exited (${s ?? proc.exitCode}) before the awaited log line`));
    });
  });
  return { done };
}

t.test('SIGKILL of the lifecycle role mid-merge and mid-deletion: nothing partial, no sample lost or doubled; a restart finishes', async (t) => {
  const name = await createTestBucket(t, { tag: 'day-kill' });
  const bucket = openTestBucket(t, name);
  const written = await writeAll(bucket);
  t.equal(written, 180, '30 days of 4-hour blocks');
  await checkReaders(t, name, 'before any merge');
  const dir = tempDir('day-kill');
  const work = join(dir, 'work');
  const cfgFile = join(dir, 'lifecycle.json');
  writeFileSync(
    cfgFile,
    JSON.stringify({
      bucket: s3ConfigFor(name),
      metricsListen: '127.0.0.1:0',
      deleteConcurrency: 1,
      instanceId: 'day-kill',
      leaseDurationMs: 3000,
      intervalMs: 1000,
      dayMergeAfterMs: 0,
      daySourceGraceMs: 0,
      dayWorkDir: work,
      logLevel: 'info',
    }),
  );

  // 1. killed while merging the 5th day (4 started, 3 or 4 published)
  let started = 0;
  const merging = runRole(t, cfgFile, (rec) => rec['msg'] === 'day merge started' && ++started === 5, 'SIGKILL');
  t.equal(await merging.done, 'SIGKILL', 'killed mid-merge');
  const a = await checkObjects(t, bucket);
  t.equal(a.blocks, 180, 'no 4-hour block deleted yet');
  t.ok(a.days >= 4 && a.days <= 5, `${a.days} day blocks published, each whole`);
  await checkReaders(t, name, 'after the kill mid-merge');

  // 2. restarted (same instance id: it takes its lease back at once): deletes the 4-hour blocks
  //    of the days merged (grace 0) and merges the others; killed while deleting
  let deleted = 0;
  const deleting = runRole(t, cfgFile, (rec) => rec['msg'] === 'day source deleted' && ++deleted === 10, 'SIGKILL');
  t.equal(await deleting.done, 'SIGKILL', 'killed mid-deletion');
  const b = await checkObjects(t, bucket);
  t.ok(b.days >= a.days, `${b.days} day blocks`);
  t.equal(b.manifests, b.days, 'each with its manifest');
  t.ok(b.blocks < 180 && b.blocks >= 180 - 11, `${180 - b.blocks} 4-hour blocks deleted before the kill`);
  await checkReaders(t, name, 'after the kill mid-deletion');

  // 3. restarted once more: runs until a pass finds nothing to do
  const finishing = runRole(
    t,
    cfgFile,
    async (rec) => rec['msg'] === 'lifecycle pass done' && (rec['dayMerges'] as number) === 0 && (rec['daySourcesDeleted'] as number) === 0,
    'SIGTERM',
  );
  await finishing.done;
  const c = await checkObjects(t, bucket);
  t.same(c, { blocks: 0, days: DAYS, manifests: DAYS }, 'the 4-hour blocks are gone, one day block per day');
  await checkReaders(t, name, 'at the end');
});
