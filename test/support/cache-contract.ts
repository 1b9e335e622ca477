/**
 * The contract every CacheStore implementation passes (LMDB and memory): round trips with copy
 * semantics, pointers, dropping, byte accounting, least-recently-used eviction by block, and a
 * property test of random operation sequences. Driven by a factory, like the bucket acceptance
 * suite.
 */
import type { Test } from 'tap';
import fc from 'fast-check';
import type { CacheStore, CacheStoreOptions } from '../../src/storage-gateway/cache/store.js';

/** Makes a store for one test; the factory registers its clean-up on `t`. */
export type StoreFactory = (t: Test, opts: CacheStoreOptions) => Promise<CacheStore>;

const A = 'a'.repeat(32);
const B = 'b'.repeat(32);
const C = 'c'.repeat(32);
const E = 'e'.repeat(32);

function bytes(n: number, fill: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (fill + i * 7) & 0xff;
  return b;
}

/** Runs the contract as subtests of `t`. */
export function cacheStoreContract(t: Test, factory: StoreFactory): void {
  t.test('putRange then getRange returns an independent copy of the bytes', async (t) => {
    const s = await factory(t, { maxBytes: 1 << 20 });
    const src = bytes(3000, 1);
    s.putRange(A, 100, src);
    src[0] = 0xff; // the store kept its own copy
    const got = s.getRange(A, 100, 3000)!;
    t.same([...got.subarray(0, 4)], [...bytes(3000, 1).subarray(0, 4)]);
    t.equal(Buffer.compare(got, bytes(3000, 1)), 0);
    got[1] = 0xff;
    t.equal(Buffer.compare(s.getRange(A, 100, 3000)!, bytes(3000, 1)), 0, 'returned buffers are copies');
    t.equal(s.getRange(A, 100, 2999), undefined, 'the key includes the length');
    t.equal(s.getRange(B, 100, 3000), undefined);
    t.ok(s.hasRange(A, 100, 3000));
    t.notOk(s.hasRange(A, 101, 3000));
    t.equal(s.blockCount, 1);
    t.ok(s.usedBytes >= 3000);
  });

  t.test('putting a range again does not charge it twice; deleteRange gives its bytes back', async (t) => {
    const s = await factory(t, { maxBytes: 1 << 20 });
    s.putRange(A, 0, bytes(100, 1));
    const one = s.usedBytes;
    s.putRange(A, 0, bytes(100, 1));
    t.equal(s.usedBytes, one);
    s.putRange(A, 100, bytes(5000, 2));
    t.ok(s.usedBytes > one + 5000);
    s.deleteRange(A, 100, 5000);
    t.equal(s.usedBytes, one);
    t.equal(s.getRange(A, 100, 5000), undefined);
    s.deleteRange(A, 100, 5000);
    t.equal(s.usedBytes, one, 'deleting a missing range is a no-op');
  });

  t.test('pointers: set, replace, delete; dropBlock removes the block and a pointer to it', async (t) => {
    const s = await factory(t, { maxBytes: 1 << 20 });
    t.equal(s.getPointer('k1'), undefined);
    const p = { blockId: A, checkedAtMs: 123, tailOffset: 1000, size: 1400 };
    s.setPointer('k1', p);
    s.putRange(A, 1000, bytes(400, 3));
    t.same(s.getPointer('k1'), p);
    s.setPointer('k2', { blockId: B, checkedAtMs: 5, tailOffset: 0, size: 10 });
    s.putRange(B, 0, bytes(10, 4));
    s.dropBlock(A);
    t.equal(s.getPointer('k1'), undefined);
    t.equal(s.getRange(A, 1000, 400), undefined);
    t.same(s.getPointer('k2')?.blockId, B, 'other blocks untouched');
    t.ok(s.getRange(B, 0, 10));
    // a pointer moved to a newer block survives dropping the older one
    s.setPointer('k2', { blockId: C, checkedAtMs: 6, tailOffset: 0, size: 10 });
    s.dropBlock(B);
    t.equal(s.getPointer('k2')?.blockId, C);
    s.deletePointer('k2');
    t.equal(s.getPointer('k2'), undefined);
    t.equal(s.blockCount, 1, 'block C (its pointer row) is still accounted');
  });

  t.test('evicts whole blocks, least recently used first, to stay within maxBytes', async (t) => {
    const evicted: string[] = [];
    let clock = 1000;
    const s = await factory(t, { maxBytes: 64 * 1024, now: () => clock++, onEvict: (id) => evicted.push(id) });
    for (const [id, fill] of [[A, 1], [B, 2], [C, 3]] as const) {
      s.putRange(id, 0, bytes(12_000, fill));
      s.putRange(id, 12_000, bytes(6000, fill));
    }
    t.same(evicted, []);
    t.ok(s.getRange(A, 0, 12_000), 'A is now the most recently used');
    s.putRange(E, 0, bytes(15_000, 4));
    t.same(evicted, [B], 'B was the least recently used');
    t.equal(s.getRange(B, 0, 12_000), undefined);
    t.equal(s.getRange(B, 12_000, 6000), undefined, 'all of B went');
    t.ok(s.getRange(C, 0, 12_000));
    t.ok(s.usedBytes <= s.maxBytes, `${s.usedBytes} <= ${s.maxBytes}`);
    // a block larger than the whole budget does not stay (being the most recent, it goes last)
    s.putRange('f'.repeat(32), 0, bytes(70 * 1024, 5));
    t.ok(s.usedBytes <= s.maxBytes);
    t.equal(s.getRange('f'.repeat(32), 0, 70 * 1024), undefined);
    t.equal(s.blockCount, 0);
  });

  t.test('random operations keep the budget and never return other bytes than were put', async (t) => {
    const ids = [A, B, C, E];
    const op = fc.oneof(
      fc.record({ kind: fc.constant('put' as const), block: fc.integer({ min: 0, max: 3 }), offset: fc.integer({ min: 0, max: 5 }), length: fc.integer({ min: 1, max: 9000 }) }),
      fc.record({ kind: fc.constant('get' as const), block: fc.integer({ min: 0, max: 3 }), offset: fc.integer({ min: 0, max: 5 }), length: fc.integer({ min: 1, max: 9000 }) }),
      fc.record({ kind: fc.constant('drop' as const), block: fc.integer({ min: 0, max: 3 }), offset: fc.constant(0), length: fc.constant(0) }),
      fc.record({ kind: fc.constant('del' as const), block: fc.integer({ min: 0, max: 3 }), offset: fc.integer({ min: 0, max: 5 }), length: fc.integer({ min: 1, max: 9000 }) }),
    );
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 60 }), async (ops) => {
        const s = await factory(t, { maxBytes: 40_000 });
        try {
          for (const o of ops) {
            const id = ids[o.block]!;
            const off = o.offset * 10_000;
            const fill = o.block * 31 + o.offset + o.length;
            if (o.kind === 'put') s.putRange(id, off, bytes(o.length, fill));
            else if (o.kind === 'drop') s.dropBlock(id);
            else if (o.kind === 'del') s.deleteRange(id, off, o.length);
            else {
              const got = s.getRange(id, off, o.length);
              if (got && Buffer.compare(got, bytes(o.length, fill)) !== 0) return false;
            }
            if (s.usedBytes > s.maxBytes || s.usedBytes < 0) return false;
          }
          return true;
        } finally {
          runs++;
          await s.close();
        }
      }),
      { numRuns: 60 },
    );
    t.equal(runs >= 60, true);
  });
}
