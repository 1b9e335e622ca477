/**
 * The DELETE of a 4-hour block held by a day block (docs/decisions/0008-day-source-delete-race.md),
 * against Ceph RGW: a block replaced by late data after the pass listed it is found changed by the
 * HEAD just before its DELETE and kept (counted as changed); the next pass folds the replacement
 * into the day block, and the one after deletes it. No sample is lost.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/lifecycle/delete-race.test.ts
 */
import { join } from 'node:path';
import t from 'tap';
import { BlockReader } from '../../src/block/reader.js';
import { bucketSource } from '../../src/block/source.js';
import { DAY_MS, dayBlockKey } from '../../src/format/day-key.js';
import { blockKey } from '../../src/format/key.js';
import { deleteSource } from '../../src/lifecycle/day.js';
import { runLifecyclePass, type LifecycleJobOptions } from '../../src/lifecycle/job.js';
import { openBucket, type Bucket } from '../../src/objstore/index.js';
import { openTenantsConfig } from '../../src/tenancy/config.js';
import { TenantRegistry } from '../../src/tenancy/tenants.js';
import { D, makeDataSet, rgwBucket, tempDir, W0, writeBlock, type SeriesData } from '../support/gateway.js';

const NOW = Number(W0) + 3 * DAY_MS;

t.test('a source replaced between the listing and its DELETE is kept and merged next pass', async (t) => {
  const cfg = await rgwBucket(t);
  const real = await openBucket(cfg);
  t.teardown(() => real.close());
  const dir = tempDir(t, 'delete-race');
  const ds = makeDataSet({ seed: 11, n: 12, numShards: 1, windows: 1, maxSamples: 8 });
  const shift = (s: readonly SeriesData[], ws: bigint): SeriesData[] =>
    s.filter((x) => x.samples.timestamps.length > 0).map((x) => ({ id: x.id, samples: { timestamps: x.samples.timestamps.map((ts) => ts - W0 + ws), values: x.samples.values } }));
  const w0 = shift(ds.series, W0);
  const w1 = shift(ds.series, W0 + D);
  await writeBlock(real, 'acme', 0, 1, W0, w0);
  await writeBlock(real, 'acme', 0, 1, W0 + D, w1);
  const count = (s: readonly SeriesData[]): number => s.reduce((n, x) => n + x.samples.timestamps.length, 0);

  // late data for window 0: one more series, stored by "an aggregator" right after the pass listed the block
  let newId = 1n;
  while (w0.some((x) => x.id === newId)) newId++;
  const late = [...w0, { id: newId, samples: { timestamps: BigInt64Array.from([W0 + 5n, W0 + 6n]), values: new Float64Array([1.5, 2.5]) } }].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  let replaceOnHead: string | null = null;
  const racing: Bucket = {
    name: real.name,
    get: (k, o) => real.get(k, o),
    getRange: (k, r, o) => real.getRange(k, r, o),
    head: async (k) => {
      if (k === replaceOnHead) {
        replaceOnHead = null;
        await writeBlock(real, 'acme', 0, 1, W0, late);
      }
      return real.head(k);
    },
    list: (p) => real.list(p),
    put: (k, b, o) => real.put(k, b, o),
    upload: (k, o) => real.upload(k, o),
    delete: (k) => real.delete(k),
    close: async () => undefined,
  };
  const reg = new TenantRegistry(openTenantsConfig(cfg), { openBucket: async () => racing });
  t.teardown(() => reg.close());
  const deleted: string[] = [];
  const changed: string[] = [];
  const opts: LifecycleJobOptions = {
    blockDurationMs: Number(D),
    retentionGraceMs: 0,
    incompleteUploadMaxAgeMs: DAY_MS,
    deleteConcurrency: 4,
    days: { dayMergeAfterMs: 0, daySourceGraceMs: 0, workDir: join(dir, 'work'), now: () => NOW, onSourceDeleted: (d) => deleted.push(d.key), onSourceChanged: (d) => changed.push(d.key) },
  };
  const dayKey = dayBlockKey('acme', 0, W0);
  const samplesInDay = async (): Promise<number> => (await BlockReader.open(bucketSource(real, dayKey))).footer.sampleCount;

  const p1 = await runLifecyclePass(reg, NOW, opts);
  t.same([p1.dayMerges, p1.daySourcesDeleted], [1, 0], 'pass 1 merges the day');
  t.equal(await samplesInDay(), count(w0) + count(w1));

  replaceOnHead = blockKey('acme', 0, W0);
  const p2 = await runLifecyclePass(reg, NOW, opts);
  t.same([p2.dayMerges, p2.daySourcesDeleted, p2.failures], [0, 1, 0], 'pass 2 deletes only the unchanged source');
  t.same(deleted, [blockKey('acme', 0, W0 + D)]);
  t.same(changed, [blockKey('acme', 0, W0)], 'the replaced one is reported changed');
  t.equal((await real.head(blockKey('acme', 0, W0))).size > 0, true, '...and kept');

  const p3 = await runLifecyclePass(reg, NOW, opts);
  t.same([p3.dayMerges, p3.daySourcesDeleted], [1, 0], 'pass 3 folds the replacement into the day block');
  t.equal(await samplesInDay(), count(w0) + count(w1) + 2, 'with its late samples');
  const p4 = await runLifecyclePass(reg, NOW, opts);
  t.same([p4.dayMerges, p4.daySourcesDeleted], [0, 1], 'pass 4 deletes it');
  await t.rejects(real.head(blockKey('acme', 0, W0)), { code: 'ERR_STRATA_NOT_FOUND' });
  t.equal(await samplesInDay(), count(w0) + count(w1) + 2, 'nothing lost');

  // deleteSource on its own: gone, changed, deleted
  const [k] = await writeBlock(real, 'acme', 0, 1, W0 + 2n * D, shift(ds.series, W0 + 2n * D));
  const info = await real.head(k);
  t.equal(await deleteSource(real, { ...info, etag: '"other"' }), 'changed');
  t.equal(await deleteSource(real, info), 'deleted');
  t.equal(await deleteSource(real, info), 'gone');
});
