/**
 * Writes the golden block fixture of a format version (`2` or `3`, default 3: the newest) from its
 * recipe in test/fixtures/golden.ts (see its README). `golden-v1.block` was written by a version 1
 * build and cannot be made again by this one; today's writer writes the version 2 recipe as
 * version 3 (its last series lies 2^53 beyond the one before), so `golden-v2.block` cannot either.
 */
import { BlockWriter } from '../src/block/writer.js';
import { fileSink } from '../src/block/source.js';
import { GOLDEN_BLOCK_ID, GOLDEN_CREATED_AT, GOLDEN_META, GOLDEN_SERIES_PER_PAGE, goldenSeriesV2, goldenSeriesV3 } from '../test/fixtures/golden.js';

const path = process.argv[2];
if (!path) throw new Error('usage: make-golden-block.ts <output file> [2|3]');
const recipe = process.argv[3] === '2' ? goldenSeriesV2() : goldenSeriesV3();
const w = new BlockWriter(await fileSink(path), GOLDEN_META, {
  blockId: GOLDEN_BLOCK_ID,
  now: () => GOLDEN_CREATED_AT,
  seriesPerPage: GOLDEN_SERIES_PER_PAGE,
});
for (const s of recipe) await w.add(s.id, s.samples);
const { size, footer } = await w.finish();
console.log(`wrote ${path}: format version ${footer.version}, ${size} bytes, ${footer.seriesCount} series, ${footer.sampleCount} samples, ${footer.pageCount} pages`);
