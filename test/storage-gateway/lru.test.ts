/**
 * The byte-bounded LRU of the gateway's in-memory caches (src/storage-gateway/lru.ts).
 */
import t from 'tap';
import { ByteLru } from '../../src/storage-gateway/lru.js';

t.test('ByteLru evicts least recently used entries beyond its byte budget', async (t) => {
  const evicted: string[] = [];
  const lru = new ByteLru<string, number>(100, (k) => evicted.push(k));
  lru.set('a', 1, 40);
  lru.set('b', 2, 40);
  t.equal(lru.get('a'), 1);
  lru.set('c', 3, 40);
  t.same(evicted, ['b']);
  t.equal(lru.bytes, 80);
  lru.set('d', 4, 101);
  t.equal(lru.get('d'), undefined, 'an entry larger than the budget is not kept');
  lru.set('a', 5, 10);
  t.equal(lru.bytes, 50, 'replacing an entry replaces its size');
  t.equal(lru.peek('c'), 3);
  t.ok(lru.delete('c'));
  t.equal(lru.size, 1);
});
