/**
 * What the gateway keeps must be no bigger than what its budgets charge: ranges cut from one
 * coalesced GET, and ranges in the in-memory byte cache, hold buffers of their own, not views of
 * the (much larger) buffer they came from.
 *
 * Run alone: npx tap test/storage-gateway/retention.test.ts
 */
import { crc32c } from '@node-rs/crc32';
import t from 'tap';
import { openBucket } from '../../src/objstore/index.js';
import { MemoryCacheStore } from '../../src/storage-gateway/cache/memory.js';
import { RangeFetcher } from '../../src/storage-gateway/fetcher.js';
import { GatewayMetrics } from '../../src/storage-gateway/metrics.js';
import { tempDir } from '../support/gateway.js';

t.test('ranges of one coalesced GET come back as buffers of their own', async (t) => {
  const bucket = await openBucket({ type: 'filesystem', path: tempDir(t, 'retfs') });
  t.teardown(() => bucket.close());
  // 32 ranges of 1,000 bytes, 50 KB apart: one GET of about 1.6 MB covers them all
  const object = Buffer.alloc(32 * 50_000);
  for (let i = 0; i < object.length; i++) object[i] = (i * 131) % 251;
  await bucket.put('obj', object);
  const wants = Array.from({ length: 32 }, (_, i) => {
    const offset = i * 50_000;
    return { offset, length: 1000, crc: crc32c(object.subarray(offset, offset + 1000)), what: `range ${i}` };
  });
  const metrics = new GatewayMetrics();
  const store = new MemoryCacheStore({ maxBytes: 1 << 26 });
  const fetcher = new RangeFetcher({ store, metrics, coalesce: { maxGapBytes: 1 << 16, maxGetBytes: 1 << 24 } });
  const got = await fetcher.fetch(bucket, 'obj', 'b'.repeat(32), wants);
  t.equal(await metrics.total('strata_gateway_s3_gets_total'), 1, 'one GET for the 32 ranges');
  t.same(
    got.map((b, i) => b.equals(object.subarray(wants[i]!.offset, wants[i]!.offset + 1000))),
    wants.map(() => true),
    'the bytes of each range',
  );
  t.same(
    got.map((b) => b.buffer.byteLength),
    wants.map(() => 1000),
    'each range keeps its own 1,000 bytes alive, not the whole GET',
  );
});

t.test('the in-memory byte cache holds small ranges in buffers of their own', async (t) => {
  const store = new MemoryCacheStore({ maxBytes: 1 << 26 });
  const id = 'c'.repeat(32);
  // small ranges, as Buffer.from would take them from Node's shared pool
  for (let i = 0; i < 64; i++) store.putRange(id, i * 1000, Buffer.alloc(300, i));
  // the entries are private: reach them the way a heap snapshot would, through the store's maps
  const ranges = (store as unknown as { ranges: Map<string, Map<string, Buffer>> }).ranges.get(id)!;
  t.equal(ranges.size, 64);
  t.same(
    [...ranges.values()].map((b) => b.buffer.byteLength),
    [...ranges.values()].map(() => 300),
    'no entry keeps a pool slab (8 KiB shared with other data) alive',
  );
});
