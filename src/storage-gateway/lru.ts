/**
 * A small in-memory LRU bounded by bytes (each value's size is given by the caller). Used for the
 * gateway's opened blocks (footer + index of index) and decoded index pages.
 */

/** LRU map with a byte budget. `get` and `set` make an entry the most recently used. */
export class ByteLru<K, V> {
  private readonly map = new Map<K, { value: V; bytes: number }>();
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
    return this.map.size;
  }

  get(key: K): V | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    this.map.delete(key);
    this.map.set(key, e);
    return e.value;
  }

  /** The value without changing its recency. */
  peek(key: K): V | undefined {
    return this.map.get(key)?.value;
  }

  /** Adds or replaces `key`; an entry larger than the whole budget is not kept. */
  set(key: K, value: V, bytes: number): void {
    this.delete(key);
    if (bytes > this.maxBytes) return;
    this.map.set(key, { value, bytes });
    this.used += bytes;
    while (this.used > this.maxBytes) {
      const [k, e] = this.map.entries().next().value as [K, { value: V; bytes: number }];
      this.map.delete(k);
      this.used -= e.bytes;
      this.onEvict?.(k, e.value);
    }
  }

  delete(key: K): boolean {
    const e = this.map.get(key);
    if (!e) return false;
    this.map.delete(key);
    this.used -= e.bytes;
    return true;
  }

  clear(): void {
    this.map.clear();
    this.used = 0;
  }
}
