/**
 * The recency list, the recency map and the byte-bounded LRU of the gateway's in-memory caches
 * (src/storage-gateway/lru.ts).
 */
import t from 'tap';
import { ByteLru, RecencyList, RecencyMap } from '../../src/storage-gateway/lru.js';

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

t.test('RecencyList keeps its own nodes in least-recently-used order', async (t) => {
  interface N { id: number; prev: N | null; next: N | null }
  const list = new RecencyList<N>();
  const order = (): number[] => {
    const ids: number[] = [];
    for (let n = list.head; n; n = n.next) ids.push(n.id);
    return ids;
  };
  const backwards = (): number[] => {
    const ids: number[] = [];
    for (let n = list.tail; n; n = n.prev) ids.push(n.id);
    return ids;
  };
  const nodes: N[] = [1, 2, 3, 4].map((id) => ({ id, prev: null, next: null }));
  for (const n of nodes) list.append(n);
  t.same(order(), [1, 2, 3, 4]);
  list.touch(nodes[0]!);
  t.same(order(), [2, 3, 4, 1], 'a touched node moves to the most recently used end');
  list.touch(nodes[0]!);
  t.same(order(), [2, 3, 4, 1], 'touching the tail changes nothing');
  list.remove(nodes[2]!);
  t.same(order(), [2, 4, 1]);
  t.same(backwards(), [1, 4, 2], 'both directions stay linked');
  t.equal(nodes[2]!.prev, null);
  t.equal(nodes[2]!.next, null);
  list.remove(nodes[1]!);
  list.remove(nodes[0]!);
  t.same(order(), [4]);
  t.equal(list.head, list.tail);
  list.clear();
  t.same(order(), []);
});

t.test('RecencyMap orders by set and touch, not by get', async (t) => {
  const m = new RecencyMap<string, number>();
  m.set('a', 1);
  m.set('b', 2);
  m.set('c', 3);
  t.equal(m.get('a'), 1);
  t.same([...m.keys()], ['a', 'b', 'c'], 'get does not change the order');
  t.equal(m.touch('a'), 1);
  t.same([...m.keys()], ['b', 'c', 'a']);
  m.set('b', 20);
  t.same([...m.entries()], [['c', 3], ['a', 1], ['b', 20]]);
  t.same(m.oldest(), ['c', 3]);
  t.equal(m.delete('c'), 3);
  t.equal(m.delete('c'), undefined);
  t.equal(m.size, 2);
  t.equal(m.touch('zz'), undefined);
  m.clear();
  t.equal(m.oldest(), undefined);
});
