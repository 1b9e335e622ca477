/**
 * Recency bookkeeping for the gateway's in-memory caches, in one place: {@link RecencyList}, the
 * intrusive list every cache orders its entries with; {@link RecencyMap}, a map on it that keeps
 * its entries in least-recently-used order; and {@link ByteLru}, an LRU bounded by bytes (each
 * value's size is given by the caller) built on that. Used for the opened blocks (footer + index
 * of index), the decoded index pages, the byte cache's per-block ledger (cache/store.ts) and the
 * hot-range layer (cache/hot.ts, whose entries are list nodes themselves).
 *
 * Why not a plain Map re-inserted on every use (delete, then set): each such use leaves a deleted
 * slot in V8's ordered hash table, and the cost grew with the number of entries (measured with
 * Node 20: ~0.4 µs per use at 1,500 entries, ~1.3 µs at 5,000), several times per warm read.
 * Here a use only relinks a list node; the Map changes only when an entry is added or removed.
 */

/** A node of a {@link RecencyList}: any object with these two links (the list owns them). */
export interface RecencyNode<N> {
  /** Towards the least recently used end. */
  prev: N | null;
  /** Towards the most recently used end. */
  next: N | null;
}

/**
 * The one recency list of the gateway's caches: an intrusive doubly linked list whose nodes are
 * the caller's own entries, least recently used at the head. Every operation is O(1) and
 * allocates nothing. {@link RecencyMap} keys it with a Map; the hot-range layer (cache/hot.ts)
 * keeps its entries in a two-level map (block id, offset) and links them here.
 */
export class RecencyList<N extends RecencyNode<N>> {
  /** Least recently used. */
  head: N | null = null;
  /** Most recently used. */
  tail: N | null = null;

  /** Adds `n` (not in the list) at the most recently used end. */
  append(n: N): void {
    n.prev = this.tail;
    n.next = null;
    if (this.tail) this.tail.next = n;
    else this.head = n;
    this.tail = n;
  }

  /** Moves `n` (in the list) to the most recently used end. */
  touch(n: N): void {
    if (n === this.tail) return;
    this.remove(n);
    this.append(n);
  }

  /** Takes `n` (in the list) out. */
  remove(n: N): void {
    if (n.prev) n.prev.next = n.next;
    else this.head = n.next;
    if (n.next) n.next.prev = n.prev;
    else this.tail = n.prev;
    n.prev = null;
    n.next = null;
  }

  clear(): void {
    this.head = null;
    this.tail = null;
  }
}

/** A node of a RecencyMap (internal). */
interface Node<K, V> extends RecencyNode<Node<K, V>> {
  readonly key: K;
  value: V;
}

/**
 * A map whose entries are ordered by recency: `set` adds at (or moves to) the most recently used
 * end, `touch` moves an entry there; iteration and {@link oldest} start at the least recently
 * used end. `get` and `peek` do not change the order. Every operation is O(1).
 */
export class RecencyMap<K, V> {
  private readonly map = new Map<K, Node<K, V>>();
  private readonly list = new RecencyList<Node<K, V>>();

  get size(): number {
    return this.map.size;
  }

  /** The value, without changing its recency. */
  get(key: K): V | undefined {
    return this.map.get(key)?.value;
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  /** Makes `key` the most recently used and returns its value (undefined when absent). */
  touch(key: K): V | undefined {
    const n = this.map.get(key);
    if (n === undefined) return undefined;
    this.list.touch(n);
    return n.value;
  }

  /** Adds or replaces `key` as the most recently used. */
  set(key: K, value: V): void {
    const n = this.map.get(key);
    if (n !== undefined) {
      n.value = value;
      this.list.touch(n);
      return;
    }
    const node: Node<K, V> = { key, value, prev: null, next: null };
    this.list.append(node);
    this.map.set(key, node);
  }

  /** Removes `key`; returns its value (undefined when absent). */
  delete(key: K): V | undefined {
    const n = this.map.get(key);
    if (n === undefined) return undefined;
    this.map.delete(key);
    this.list.remove(n);
    return n.value;
  }

  /** The least recently used entry, or undefined when empty. */
  oldest(): [K, V] | undefined {
    const h = this.list.head;
    return h ? [h.key, h.value] : undefined;
  }

  clear(): void {
    this.map.clear();
    this.list.clear();
  }

  /** Keys, least recently used first. Do not modify the map while iterating. */
  *keys(): IterableIterator<K> {
    for (let n = this.list.head; n; n = n.next) yield n.key;
  }

  /** Entries, least recently used first. Do not modify the map while iterating. */
  *entries(): IterableIterator<[K, V]> {
    for (let n = this.list.head; n; n = n.next) yield [n.key, n.value];
  }
}

/** LRU map with a byte budget. `get` and `set` make an entry the most recently used. */
export class ByteLru<K, V> {
  private readonly entries = new RecencyMap<K, { value: V; bytes: number }>();
  private used = 0;
  readonly maxBytes: number;

  /** `onEvict` is called for entries pushed out by the budget (not for `delete`). */
  constructor(maxBytes: number, private readonly onEvict?: (key: K, value: V) => void) {
    if (!(maxBytes >= 0)) throw new RangeError(`maxBytes must be >= 0, got ${maxBytes}`);
    this.maxBytes = maxBytes;
  }

  /** Bytes of the entries held. */
  get bytes(): number {
    return this.used;
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: K): V | undefined {
    return this.entries.touch(key)?.value;
  }

  /** The value without changing its recency. */
  peek(key: K): V | undefined {
    return this.entries.get(key)?.value;
  }

  /** Adds or replaces `key`; an entry larger than the whole budget is not kept. */
  set(key: K, value: V, bytes: number): void {
    this.delete(key);
    if (bytes > this.maxBytes) return;
    this.entries.set(key, { value, bytes });
    this.used += bytes;
    while (this.used > this.maxBytes) {
      const [k, e] = this.entries.oldest()!;
      this.entries.delete(k);
      this.used -= e.bytes;
      this.onEvict?.(k, e.value);
    }
  }

  delete(key: K): boolean {
    const e = this.entries.delete(key);
    if (e === undefined) return false;
    this.used -= e.bytes;
    return true;
  }

  clear(): void {
    this.entries.clear();
    this.used = 0;
  }
}
