/**
 * Writes the golden block fixture of the current format version (2) from its recipe in
 * test/fixtures/golden.ts (see its README). `golden-v1.block` was written by a version 1 build and
 * cannot be made again by this one.
 */
import { BlockWriter } from '../src/block/writer.js';
import { fileSink } from '../src/block/source.js';
import { GOLDEN_BLOCK_ID, GOLDEN_CREATED_AT, GOLDEN_META, GOLDEN_SERIES_PER_PAGE, goldenSeriesV2 } from '../test/fixtures/golden.js';

const path = process.argv[2];
if (!path) throw new Error('usage: make-golden-block.ts <output file>');
const w = new BlockWriter(await fileSink(path), GOLDEN_META, {
  blockId: GOLDEN_BLOCK_ID,
  now: () => GOLDEN_CREATED_AT,
  seriesPerPage: GOLDEN_SERIES_PER_PAGE,
});
for (const s of goldenSeriesV2()) await w.add(s.id, s.samples);
const { size, footer } = await w.finish();
console.log(`wrote ${path}: ${size} bytes, ${footer.seriesCount} series, ${footer.sampleCount} samples, ${footer.pageCount} pages`);
