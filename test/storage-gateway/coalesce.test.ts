/**
 * How the gateway plans GETs: nearby ranges of a block share one GET
 * (src/storage-gateway/coalesce.ts).
 */
import t from 'tap';
import fc from 'fast-check';
import { planGets } from '../../src/storage-gateway/coalesce.js';

t.test('planGets() coalesces ranges by gap and size', async (t) => {
  const cases: { name: string; ranges: [number, number][]; gap: number; max: number; want: [number, number, number[]][] }[] = [
    { name: 'nothing', ranges: [], gap: 10, max: 100, want: [] },
    { name: 'one', ranges: [[5, 3]], gap: 10, max: 100, want: [[5, 3, [0]]] },
    { name: 'adjacent', ranges: [[0, 10], [10, 10]], gap: 0, max: 100, want: [[0, 20, [0, 1]]] },
    { name: 'gap at the limit joins', ranges: [[0, 10], [20, 5]], gap: 10, max: 100, want: [[0, 25, [0, 1]]] },
    { name: 'gap over the limit splits', ranges: [[0, 10], [21, 5]], gap: 10, max: 100, want: [[0, 10, [0]], [21, 5, [1]]] },
    { name: 'unsorted input', ranges: [[50, 10], [0, 10], [12, 3]], gap: 5, max: 100, want: [[0, 15, [1, 2]], [50, 10, [0]]] },
    { name: 'size cap', ranges: [[0, 40], [40, 40], [80, 40]], gap: 0, max: 100, want: [[0, 80, [0, 1]], [80, 40, [2]]] },
    { name: 'a range over the cap alone', ranges: [[0, 500], [500, 1]], gap: 10, max: 100, want: [[0, 500, [0]], [500, 1, [1]]] },
    { name: 'duplicates and overlaps', ranges: [[0, 10], [0, 10], [5, 20]], gap: 0, max: 100, want: [[0, 25, [0, 1, 2]]] },
  ];
  for (const c of cases) {
    const got = planGets(c.ranges.map(([offset, length]) => ({ offset, length })), { maxGapBytes: c.gap, maxGetBytes: c.max });
    t.same(got.map((g) => [g.offset, g.length, [...g.members]]), c.want, c.name);
  }
});

t.test('planGets() covers every range exactly once, inside its GET', async (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ offset: fc.integer({ min: 0, max: 1e6 }), length: fc.integer({ min: 1, max: 5e4 }) }), { maxLength: 50 }),
      fc.integer({ min: 0, max: 1e5 }),
      fc.integer({ min: 1, max: 2e5 }),
      (ranges, gap, max) => {
        const plan = planGets(ranges, { maxGapBytes: gap, maxGetBytes: max });
        const seen = plan.flatMap((g) => [...g.members]).sort((a, b) => a - b);
        if (seen.join() !== ranges.map((_, i) => i).join()) return false;
        for (const g of plan) {
          if (g.members.length > 1 && g.length > max) return false;
          for (const m of g.members) {
            const r = ranges[m]!;
            if (r.offset < g.offset || r.offset + r.length > g.offset + g.length) return false;
          }
        }
        return true;
      },
    ),
  );
  t.pass('property holds');
});
