/**
 * The hot-range layer: a small in-memory LRU, bounded by bytes, of range bytes that already
 * passed their CRC32C, in front of the byte cache. It wraps the {@link CacheStore} it fronts, so
 * every write, delete or drop that goes through the store also drops the hot copy of that range
 * (or block); everything else is passed through unchanged.
 *
 * Why: a warm read of a run from the byte cache costs a key encoding, an LMDB lookup, a copy out
 * of LMDB's reused buffer and a CRC32C of the bytes, every time. The fetcher puts a range here
 * once it has been read from the byte cache and checked, so later reads of it are a Map lookup.
 * Bytes only enter after their check (and nothing writes to them afterwards), so the corruption
 * check of a cached range happens once per trip into memory instead of once per read: damage on
 * disk is still found the next time the range comes from the byte cache, and never served.
 *
 * Hits count as `cache_hits_total{layer="hot_range"}`; a range found here does not count for the
 * `range` layer (the byte cache), whose hits and misses keep meaning "looked up in the byte
 * cache". A hit marks the block used in the byte cache too (see {@link CacheStore.touchBlock}),
 * so the byte cache's recency still follows the reads.
 *
 * Bytes returned by {@link get} are shared, not copies: callers must not write to them.
 */
import { ownedCopy } from '../../format/bytes.js';
import { RecencyList, type RecencyNode } from '../lru.js';
import type { BlockPointer, CacheStore } from './store.js';

/**
 * Bytes charged per hot entry on top of its length: the entry, its Map slot and Buffer objects
 * (~300 bytes of heap) and the bytes' own allocation outside the heap (~400 more; measured with
 * Node 20 as resident memory per entry).
 */
export const HOT_ENTRY_OVERHEAD = 768;

/** One hot range; it is its own node of the recency list. */
interface HotEntry extends RecencyNode<HotEntry> {
  readonly blockId: string;
  readonly offset: number;
  readonly bytes: Buffer;
  readonly charge: number;
}

/** The hot ranges of one block, looked up once per read of the block (see {@link HotRangeCache.block}). */
export interface HotBlock {
  /** Like {@link HotRangeCache.get} for this block. */
  get(offset: number, length: number): Buffer | undefined;
}

/** A CacheStore with the hot-range layer in front; see the module comment. */
export class HotRangeCache implements CacheStore {
  /**
   * The entries of each block by offset. The block id is the block's cacheId string, the same
   * object on every read (its hash is kept), and the offset a small number: a lookup builds no key
   * string. The entries are also the nodes of the recency list, so a hit moves no Map entry.
   */
  private readonly blocks = new Map<string, HotBlockEntries>();
  private readonly recency = new RecencyList<HotEntry>();
  private used = 0;
  private count = 0;

  /**
   * @param inner the byte cache in front of which this layer sits.
   * @param hotMaxBytes the layer's budget (0 turns it off: nothing is kept).
   */
  constructor(
    readonly inner: CacheStore,
    readonly hotMaxBytes: number,
  ) {
    if (!Number.isSafeInteger(hotMaxBytes) || hotMaxBytes < 0) throw new RangeError(`hot range budget must be a non-negative integer, got ${hotMaxBytes}`);
  }

  /** Bytes held in the hot layer (charged, overhead included). */
  get hotBytes(): number {
    return this.used;
  }

  /** Ranges held in the hot layer. */
  get hotCount(): number {
    return this.count;
  }

  /**
   * The checked bytes of a range if the hot layer holds them (shared: do not write to them), and
   * marks the entry most recently used. Does not touch the byte cache (see {@link touchBlock}).
   */
  get(blockId: string, offset: number, length: number): Buffer | undefined {
    return this.blocks.get(blockId)?.get(offset, length);
  }

  /** The hot ranges of a block, or undefined when it has none. */
  block(blockId: string): HotBlock | undefined {
    return this.blocks.get(blockId);
  }

  /**
   * Keeps bytes of a range that passed their check. They are copied into memory of their own
   * (a pooled Buffer would keep its whole slab alive), so the caller keeps `bytes`.
   */
  add(blockId: string, offset: number, bytes: Uint8Array): void {
    const charge = bytes.length + HOT_ENTRY_OVERHEAD;
    if (charge > this.hotMaxBytes) return;
    const own = ownedCopy(bytes);
    let entries = this.blocks.get(blockId);
    if (!entries) {
      entries = new HotBlockEntries(this);
      this.blocks.set(blockId, entries);
    }
    const old = entries.map.get(offset);
    if (old) this.remove(old);
    const e: HotEntry = { blockId, offset, bytes: own, charge, prev: null, next: null };
    this.recency.append(e);
    entries.map.set(offset, e);
    this.used += charge;
    this.count++;
    while (this.used > this.hotMaxBytes && this.recency.head) this.remove(this.recency.head);
  }

  /** Makes `e` the most recently used (for HotBlockEntries, on a hit). @internal */
  markUsed(e: HotEntry): void {
    this.recency.touch(e);
  }

  // --- CacheStore, passed through (writes drop the hot copy first) ---

  get maxBytes(): number {
    return this.inner.maxBytes;
  }

  get usedBytes(): number {
    return this.inner.usedBytes;
  }

  get blockCount(): number {
    return this.inner.blockCount;
  }

  getPointer(objectKey: string): BlockPointer | undefined {
    return this.inner.getPointer(objectKey);
  }

  setPointer(objectKey: string, pointer: BlockPointer): void {
    this.inner.setPointer(objectKey, pointer);
  }

  deletePointer(objectKey: string): void {
    this.inner.deletePointer(objectKey);
  }

  getRange(blockId: string, offset: number, length: number): Buffer | undefined {
    return this.inner.getRange(blockId, offset, length);
  }

  hasRange(blockId: string, offset: number, length: number): boolean {
    return this.inner.hasRange(blockId, offset, length);
  }

  putRange(blockId: string, offset: number, bytes: Uint8Array): void {
    this.forget(blockId, offset, bytes.length);
    this.inner.putRange(blockId, offset, bytes);
  }

  deleteRange(blockId: string, offset: number, length: number): void {
    this.forget(blockId, offset, length);
    this.inner.deleteRange(blockId, offset, length);
  }

  touchBlock(blockId: string): void {
    this.inner.touchBlock(blockId);
  }

  dropBlock(blockId: string): void {
    const entries = this.blocks.get(blockId);
    if (entries) for (const e of [...entries.map.values()]) this.remove(e);
    this.inner.dropBlock(blockId);
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  async close(): Promise<void> {
    this.blocks.clear();
    this.recency.clear();
    this.used = 0;
    this.count = 0;
    await this.inner.close();
  }

  /** Drops the hot copy of a range, if there is one. */
  private forget(blockId: string, offset: number, length: number): void {
    const e = this.blocks.get(blockId)?.map.get(offset);
    if (e !== undefined && e.bytes.length === length) this.remove(e);
  }

  /** Takes an entry out of the list, the block's map and the accounting. */
  private remove(e: HotEntry): void {
    this.recency.remove(e);
    this.used -= e.charge;
    this.count--;
    const entries = this.blocks.get(e.blockId);
    if (entries?.map.get(e.offset) === e) {
      entries.map.delete(e.offset);
      if (entries.map.size === 0) this.blocks.delete(e.blockId);
    }
  }
}

/** The hot entries of one block by offset. */
class HotBlockEntries implements HotBlock {
  readonly map = new Map<number, HotEntry>();

  constructor(private readonly cache: HotRangeCache) {}

  get(offset: number, length: number): Buffer | undefined {
    const e = this.map.get(offset);
    if (e === undefined || e.bytes.length !== length) return undefined;
    this.cache.markUsed(e);
    return e.bytes;
  }
}
