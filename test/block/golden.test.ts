import t, { type Test } from 'tap';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BlockReader } from '../../src/block/reader.js';
import { fileSource } from '../../src/block/source.js';
import { sameSamples } from '../support/series.js';
import { readFileSync } from 'node:fs';
import { readRunHeader, TS_SHARED, type Samples } from '../../src/format/run.js';
import { V_EXCEPTIONS } from '../../src/format/values.js';
import { GOLDEN_BLOCK_ID, GOLDEN_CREATED_AT, GOLDEN_META, goldenSeries, goldenSeriesV2, goldenSeriesV3 } from '../fixtures/golden.js';
import { PAGE_WIDE_IDS } from '../../src/index/page.js';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');
const path = join(fixtures, 'golden-v1.block');

/** Opens a committed fixture and checks its footer and every sample against `recipe`. */
async function readsAsRecipe(t: Test, file: string, version: number, recipe: { id: bigint; samples: Samples }[]): Promise<BlockReader> {
  const r = await BlockReader.open(fileSource(file));
  const f = r.footer;
  t.equal(f.version, version);
  t.equal(f.blockId, GOLDEN_BLOCK_ID);
  t.equal(f.createdAtMs, GOLDEN_CREATED_AT);
  t.equal(f.tenant, GOLDEN_META.tenant);
  t.equal(f.shard, GOLDEN_META.shard);
  t.equal(f.numShards, GOLDEN_META.numShards);
  t.equal(f.windowStart, GOLDEN_META.windowStart);
  t.equal(f.windowEnd, GOLDEN_META.windowEnd);
  t.equal(f.seriesCount, recipe.length);
  t.equal(f.sampleCount, recipe.reduce((a, s) => a + s.samples.timestamps.length, 0));
  t.equal(f.minTime, GOLDEN_META.windowStart);
  t.equal(f.maxTime, GOLDEN_META.windowEnd - 1n);
  for (const s of recipe) {
    const got = await r.readSeries(s.id);
    t.ok(got && sameSamples(got, s.samples), `series ${s.id}`);
  }
  t.same(await r.verify(), { series: f.seriesCount, samples: f.sampleCount });
  return r;
}

t.test('the committed version 1 block reads back exactly as its recipe', async (t) => {
  await readsAsRecipe(t, path, 1, goldenSeries());
});

t.test('the committed version 2 block reads back exactly as its recipe, with shared timestamps and exceptions', async (t) => {
  const file = join(fixtures, 'golden-v2.block');
  const r = await readsAsRecipe(t, file, 2, goldenSeriesV2());
  // the fixture exercises what version 2 adds
  const bytes = readFileSync(file);
  let shared = 0;
  let exceptions = 0;
  let vectors = 0;
  for (let p = 0; p < r.ioi.pageCount; p++) vectors += (await r.page(p)).vectors.length;
  for await (const loc of r.series()) {
    const enc = readRunHeader(bytes.subarray(loc.offset, loc.offset + loc.length)).encoding;
    if ((enc & 7) === TS_SHARED) shared++;
    if ((enc >> 3) & V_EXCEPTIONS) exceptions++;
  }
  t.ok(vectors >= 3, `${vectors} timestamp vectors`);
  t.ok(shared >= 18, `${shared} runs share timestamps`);
  t.ok(exceptions >= 12, `${exceptions} runs with exceptions`);
});

t.test('the committed version 3 block reads back exactly as its recipe, with ids 2^53 and more apart in full pages', async (t) => {
  const file = join(fixtures, 'golden-v3.block');
  const recipe = goldenSeriesV3();
  const r = await readsAsRecipe(t, file, 3, recipe);
  const bytes = readFileSync(file);
  // 7 series a page, whatever the gaps between their ids
  t.equal(r.ioi.pageCount, Math.ceil(recipe.length / 7));
  let wide = 0;
  for (let p = 0; p < r.ioi.pageCount; p++) if (bytes[r.ioi.offsets[p]!]! & PAGE_WIDE_IDS) wide++;
  t.ok(wide >= 2, `${wide} pages with wide ids`);
  // the spread target's series still share their timestamps
  const spread = new Set(recipe.slice(-9, -1).map((s) => s.id));
  let shared = 0;
  for await (const loc of r.series()) {
    if (spread.has(loc.id) && (readRunHeader(bytes.subarray(loc.offset, loc.offset + loc.length)).encoding & 7) === TS_SHARED) shared++;
  }
  t.ok(shared >= 6, `${shared} of 8 spread series share timestamps`);
});

