import t from 'tap';
import { collectGarbage, throttledCollector } from '../../src/common/gc.js';

t.test('collectGarbage() frees the buffers of dead arrays at once', async (t) => {
  collectGarbage();
  const before = process.memoryUsage().arrayBuffers;
  let keep: Uint8Array[] | null = Array.from({ length: 16 }, () => new Uint8Array(4 * 1024 * 1024).fill(1));
  const held = process.memoryUsage().arrayBuffers;
  t.ok(held - before >= 64 * 1024 * 1024, `64 MiB held (${((held - before) / 2 ** 20).toFixed(1)} MiB)`);
  t.equal(keep.length, 16);
  keep = null;
  collectGarbage();
  // V8 frees the backing stores of the dead buffers on a background thread once the collection
  // has found them (a CI run saw 28 of 64 MiB still counted right after it): wait for that, for
  // 5 s at most
  const until = Date.now() + 5000;
  let after = process.memoryUsage().arrayBuffers;
  while (after - before >= 8 * 1024 * 1024 && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    after = process.memoryUsage().arrayBuffers;
  }
  t.ok(after - before < 8 * 1024 * 1024, `given back after the collection (${((after - before) / 2 ** 20).toFixed(1)} MiB left)`);
});

t.test('throttledCollector() collects at most once per interval of its clock', (t) => {
  let now = 1000;
  const collect = throttledCollector(5000, () => now);
  t.equal(collect(), true, 'the first call collects');
  now += 4999;
  t.equal(collect(), false, 'within the interval: shared');
  now += 1;
  t.equal(collect(), true, 'once the interval passed');
  t.equal(collect(), false, 'and not again at the same moment');
  t.end();
});
