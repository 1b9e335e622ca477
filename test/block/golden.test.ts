import t from 'tap';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BlockReader } from '../../src/block/reader.js';
import { fileSource } from '../../src/block/source.js';
import { sameSamples } from '../support/series.js';
import { GOLDEN_BLOCK_ID, GOLDEN_CREATED_AT, GOLDEN_META, goldenSeries } from '../fixtures/golden.js';

const path = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'golden-v1.block');

t.test('the committed version 1 block reads back exactly as its recipe', async (t) => {
  const r = await BlockReader.open(fileSource(path));
  const f = r.footer;
  t.equal(f.version, 1);
  t.equal(f.blockId, GOLDEN_BLOCK_ID);
  t.equal(f.createdAtMs, GOLDEN_CREATED_AT);
  t.equal(f.tenant, GOLDEN_META.tenant);
  t.equal(f.shard, GOLDEN_META.shard);
  t.equal(f.numShards, GOLDEN_META.numShards);
  t.equal(f.windowStart, GOLDEN_META.windowStart);
  t.equal(f.windowEnd, GOLDEN_META.windowEnd);
  const recipe = goldenSeries();
  t.equal(f.seriesCount, recipe.length);
  t.equal(f.sampleCount, recipe.reduce((a, s) => a + s.samples.timestamps.length, 0));
  t.equal(f.minTime, GOLDEN_META.windowStart);
  t.equal(f.maxTime, GOLDEN_META.windowEnd - 1n);
  for (const s of recipe) {
    const got = await r.readSeries(s.id);
    t.ok(got && sameSamples(got, s.samples), `series ${s.id}`);
  }
  t.same(await r.verify(), { series: f.seriesCount, samples: f.sampleCount });
});
