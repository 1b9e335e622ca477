/**
 * A day merge that fails leaves nothing behind (src/lifecycle/day.ts): a 4-hour block damaged
 * inside a run (its footer and index intact, so the merge starts and fails part-way through the
 * scan) fails the merge pass after pass, and each time the merge's temp file in the work
 * directory is removed and its descriptor closed. Real blocks in Ceph RGW, a real work directory.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/lifecycle/day-failure.test.ts
 */
import { readdirSync, readlinkSync } from 'node:fs';
import t from 'tap';
import { BlockReader } from '../../src/block/reader.js';
import { bucketSource } from '../../src/block/source.js';
import { CorruptionError } from '../../src/errors.js';
import { DAY_MS, dayBlockKey } from '../../src/format/day-key.js';
import { runLifecyclePass } from '../../src/lifecycle/job.js';
import { openBucket } from '../../src/objstore/index.js';
import { openTenantsConfig } from '../../src/tenancy/config.js';
import { TenantRegistry } from '../../src/tenancy/tenants.js';
import { D, makeDataSet, rgwBucket, tempDir, W0, writeDataSet } from '../support/gateway.js';

const HOUR = 3600 * 1000;

/** The descriptors of this process open on files under `dir` (deleted ones included). */
function fdsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // the directory's own descriptor, closed since
      throw err;
    }
    if (target.startsWith(`${dir}/`)) out.push(target);
  }
  return out;
}

t.test('a day merge failing on a damaged 4-hour block leaves no temp file and no open descriptor, pass after pass', async (t) => {
  const ds = makeDataSet({ seed: 5, n: 40, numShards: 1, windows: 6, maxSamples: 200 }); // one day of one shard
  const bucketConfig = await rgwBucket(t);
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  const written = await writeDataSet(bucket, ds);
  t.equal(written.size, 6, 'six 4-hour blocks');

  // one byte inside a run of the fourth block: its footer and index still read, its run's CRC fails
  const damagedKey = [...written.keys()].sort()[3]!;
  const reader = await BlockReader.open(bucketSource(bucket, damagedKey));
  let runAt = -1;
  for await (const loc of reader.series()) {
    if (loc.length >= 8) {
      runAt = loc.offset + Math.floor(loc.length / 2);
      break;
    }
  }
  t.ok(runAt >= 0, 'a run to damage');
  const bytes = Buffer.from(await bucket.get(damagedKey));
  bytes[runAt] = bytes[runAt]! ^ 0x01;
  await bucket.put(damagedKey, bytes);

  const registry = new TenantRegistry(openTenantsConfig(bucketConfig));
  t.teardown(() => registry.close());
  const work = tempDir(t, 'day-fail-work');
  const now = Number(W0) + DAY_MS + 8 * HOUR + 1; // the day is closed for merging
  const fdsBefore = readdirSync('/proc/self/fd').length;
  const counts: number[] = [];
  for (let pass = 1; pass <= 3; pass++) {
    const errors: unknown[] = [];
    const r = await runLifecyclePass(registry, now, {
      blockDurationMs: Number(D),
      retentionGraceMs: HOUR,
      incompleteUploadMaxAgeMs: 24 * HOUR,
      deleteConcurrency: 4,
      days: { dayMergeAfterMs: 8 * HOUR, daySourceGraceMs: 3 * HOUR, workDir: work, now: () => now, onMergeError: (e) => errors.push(e.err) },
    });
    t.equal(r.dayMerges, 0, `pass ${pass}: no day block published`);
    t.equal(r.failures, 1, `pass ${pass}: the merge failed`);
    t.equal(errors.length, 1);
    t.ok(errors[0] instanceof CorruptionError, `pass ${pass}: a corruption error`);
    t.match((errors[0] as Error).message, damagedKey, 'naming the damaged block');
    t.same(readdirSync(work), [], `pass ${pass}: the work directory is empty`);
    t.same(fdsUnder(work), [], `pass ${pass}: no descriptor open in the work directory`);
    counts.push(readdirSync('/proc/self/fd').length);
  }
  t.ok(counts[2]! <= counts[0]!, `descriptors do not grow from pass to pass (${fdsBefore} before, ${counts.join(', ')} after each)`);
  await t.rejects(bucket.head(dayBlockKey(ds.tenant, 0, W0)), { code: 'ERR_STRATA_NOT_FOUND' }, 'no day block in the bucket');
});
