/**
 * planQuery() and rankEndpoints(): a query splits into exactly the (window, shard) requests whose
 * clipped ranges tile the query range for every series, and rendezvous hashing routes each block
 * to a stable gateway.
 */
import t from 'tap';
import fc from 'fast-check';
import { planQuery, rankEndpoints } from '../../src/client/query-plan.js';

const H4 = 4 * 3600 * 1000;

t.test('planQuery() tiles [start, end) per series with one request per (window, shard)', async (t) => {
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), { minLength: 1, maxLength: 20 }),
      fc.integer({ min: 1, max: 16 }),
      fc.integer({ min: 60_000, max: 10 * H4 }),
      fc.bigInt({ min: -2n * BigInt(H4), max: 50n * BigInt(H4) }),
      fc.bigInt({ min: 0n, max: 8n * BigInt(H4) }),
      (ids, numShards, duration, start, len) => {
        const end = start + len;
        const plan = planQuery('acme', [...ids, ...ids], start, end, { numShards, blockDurationMs: duration });
        const d = BigInt(duration);
        const from = start < 0n ? 0n : start;
        if (end <= from) return plan.length === 0;
        const keys = new Set(plan.map((r) => r.routingKey));
        if (keys.size !== plan.length) return false;
        for (const r of plan) {
          if (r.windowStart % d !== 0n || r.start < r.windowStart || r.end > r.windowStart + d || r.end <= r.start) return false;
          if (r.ids.some((id) => id % BigInt(numShards) !== BigInt(r.shard))) return false;
          if (r.routingKey !== `acme/${r.shard}/${r.windowStart}`) return false;
        }
        for (const id of ids) {
          const mine = plan.filter((r) => r.ids.includes(id));
          let at = from;
          for (const r of mine) {
            if (r.start !== at) return false;
            at = r.end;
          }
          if (at !== end) return false;
        }
        return true;
      },
    ),
  );
  t.pass('property holds');
});

t.test('planQuery() edge cases', async (t) => {
  t.same(planQuery('acme', [], 0n, 100n, { numShards: 2, blockDurationMs: H4 }), [], 'no ids');
  t.same(planQuery('acme', [1n], 100n, 100n, { numShards: 2, blockDurationMs: H4 }), [], 'empty range');
  t.same(planQuery('acme', [1n], -100n, 0n, { numShards: 2, blockDurationMs: H4 }), [], 'before the epoch');
  t.throws(() => planQuery('acme', [1n], 200n, 100n, { numShards: 2, blockDurationMs: H4 }), { field: 'end', message: 'invalid end: 100 is before start 200; the range is [start, end)' }, 'a reversed range is refused, naming end');
  const p = planQuery('acme', [5n, 3n, 4n], BigInt(H4) - 1n, BigInt(H4) + 1n, { numShards: 2, blockDurationMs: H4 });
  t.same(
    p.map((r) => [r.shard, r.windowStart, r.ids, r.start, r.end]),
    [
      [0, 0n, [4n], BigInt(H4) - 1n, BigInt(H4)],
      [1, 0n, [3n, 5n], BigInt(H4) - 1n, BigInt(H4)],
      [0, BigInt(H4), [4n], BigInt(H4), BigInt(H4) + 1n],
      [1, BigInt(H4), [3n, 5n], BigInt(H4), BigInt(H4) + 1n],
    ],
    'window by window, shard by shard, ids sorted',
  );
  t.throws(() => planQuery('Acme!', [1n], 0n, 1n, { numShards: 1, blockDurationMs: H4 }), /tenant/);
  t.throws(() => planQuery('acme', [1n << 64n], 0n, 1n, { numShards: 1, blockDurationMs: H4 }), /not a uint64/);
  t.throws(() => planQuery('acme', [1n], 0n, 1000n * BigInt(H4), { numShards: 1, blockDurationMs: H4 }, 999), /1000 block requests, more than 999/);
  // a shard with more ids than maxSeriesPerRequest: several requests for the block, consecutive ids
  const many = Array.from({ length: 25 }, (_, i) => BigInt(2 * i)); // all in shard 0 of 2
  const split = planQuery('acme', [...many, 1n], 0n, BigInt(H4) + 1n, { numShards: 2, blockDurationMs: H4 }, 1000, 10);
  t.same(
    split.map((r) => [r.shard, r.windowStart, r.ids.length, r.ids[0], r.routingKey]),
    [
      [0, 0n, 10, 0n, 'acme/0/0'],
      [0, 0n, 10, 20n, 'acme/0/0'],
      [0, 0n, 5, 40n, 'acme/0/0'],
      [1, 0n, 1, 1n, 'acme/1/0'],
      [0, BigInt(H4), 10, 0n, `acme/0/${H4}`],
      [0, BigInt(H4), 10, 20n, `acme/0/${H4}`],
      [0, BigInt(H4), 5, 40n, `acme/0/${H4}`],
      [1, BigInt(H4), 1, 1n, `acme/1/${H4}`],
    ],
    'maxSeriesPerRequest 10: 25 ids of a shard in 3 requests per window',
  );
  t.same(split.filter((r) => r.windowStart === 0n && r.shard === 0).flatMap((r) => r.ids), many, 'every id once, in order');
  t.throws(() => planQuery('acme', many, 0n, 2n * BigInt(H4), { numShards: 2, blockDurationMs: H4 }, 5, 10), /6 block requests, more than 5/, 'maxBlocks counts the split requests');
  t.throws(() => planQuery('acme', many, 0n, 1n, { numShards: 2, blockDurationMs: H4 }, 5, 0), /maxSeriesPerRequest/);
});

t.test('rankEndpoints() is stable and moves only the blocks of a removed gateway', async (t) => {
  const eps = ['10.0.0.1:7402', '10.0.0.2:7402', '10.0.0.3:7402', '10.0.0.4:7402'];
  const keys = Array.from({ length: 2000 }, (_, i) => `acme/${i % 32}/${Math.floor(i / 32) * H4}`);
  const first = new Map(keys.map((k) => [k, rankEndpoints(k, eps)[0]!]));
  const counts = new Map<string, number>();
  for (const e of first.values()) counts.set(e, (counts.get(e) ?? 0) + 1);
  for (const e of eps) t.ok((counts.get(e) ?? 0) > 350, `${e} owns ${counts.get(e)} of 2000 blocks`);
  t.same(rankEndpoints(keys[0]!, [...eps].reverse()), rankEndpoints(keys[0]!, eps), 'order of the list does not matter');
  const removed = eps[1]!;
  const without = eps.filter((e) => e !== removed);
  let moved = 0;
  for (const k of keys) {
    const now = rankEndpoints(k, without)[0];
    if (now !== first.get(k)) {
      moved++;
      if (first.get(k) !== removed) t.fail(`${k} moved although its gateway stayed`);
      if (now !== rankEndpoints(k, eps)[1]) t.fail(`${k} did not move to its second choice`);
    }
  }
  t.equal(moved, counts.get(removed), 'exactly the removed gateway\'s blocks moved');
});
