/**
 * The gateway's byte cache: a small interface with two implementations, LMDB on local disk
 * ({@link LmdbCacheStore}, the default; survives restarts) and memory ({@link MemoryCacheStore}),
 * both run through one contract suite (test/support/cache-contract.ts).
 *
 * What it holds (key schema: docs/format/cache.md):
 * - **pointers**: object key → the block id last seen there, when it was checked, and where its
 *   tail (index of index + footer) starts. The tail is what a cold open reads first, so a pointer
 *   younger than the staleness bound lets a restarted gateway open the block without S3.
 * - **ranges**: (block id, offset, length) → the exact bytes of that range of that block: the tail,
 *   index pages and sample runs. Block ids are unique per written block, so a range is never
 *   stale; a replaced object gets a new block id and new keys.
 *
 * Size: every entry is charged against `maxBytes` (an estimate of the pages it occupies). The unit
 * of recency and eviction is a **block**: all the ranges of one block id, its pointer and its
 * bookkeeping row. When a put takes the total over `maxBytes`, least recently used blocks are
 * dropped until it fits again (the block just written last, so a block larger than the whole
 * budget is dropped too). One unit per block keeps the recency list small (one entry per cached
 * block, not per range) and makes eviction a prefix delete.
 *
 * Callers check every range they get against its CRC32C (a damaged cache entry is deleted and
 * refetched), so the store itself stores bytes, not trust.
 */

import { RecencyMap } from '../lru.js';

/** Where a block stands in an object, as last read from the bucket. */
export interface BlockPointer {
  /** Id of the block found there (32 hex digits; the gateway stores its cache id, see block-directory.ts). */
  readonly blockId: string;
  /** When the object was last read from the bucket and held this block (ms since the epoch). */
  readonly checkedAtMs: number;
  /** Offset of the tail (index of index followed by the footer) and the object's size. */
  readonly tailOffset: number;
  readonly size: number;
}

/** Byte cache of block ranges; see the module comment. Not safe for two processes at once. */
export interface CacheStore {
  /** The byte budget. */
  readonly maxBytes: number;
  /** Bytes charged for what is held (at most maxBytes after every call returns). */
  readonly usedBytes: number;
  /** Blocks with something cached. */
  readonly blockCount: number;
  getPointer(objectKey: string): BlockPointer | undefined;
  /** Records the block at `objectKey` (replacing any earlier pointer; the older block's ranges stay until dropped or evicted). */
  setPointer(objectKey: string, pointer: BlockPointer): void;
  deletePointer(objectKey: string): void;
  /**
   * A copy of the cached bytes of `[offset, offset + length)` of block `blockId`, or undefined.
   * A hit makes the block the most recently used.
   */
  getRange(blockId: string, offset: number, length: number): Buffer | undefined;
  hasRange(blockId: string, offset: number, length: number): boolean;
  /**
   * Makes a block the most recently used, as a hit on one of its ranges would (for a layer in
   * front that answered the read itself). No effect when the block is not cached.
   */
  touchBlock(blockId: string): void;
  /** Stores the bytes of a range (`bytes.length` is its length), then evicts to fit the budget. */
  putRange(blockId: string, offset: number, bytes: Uint8Array): void;
  deleteRange(blockId: string, offset: number, length: number): void;
  /** Forgets everything of a block (its ranges, bookkeeping and the pointer to it). */
  dropBlock(blockId: string): void;
  /** Resolves once every write made so far is stored. */
  flush(): Promise<void>;
  /** Flushes and releases the store; it must not be used afterwards. */
  close(): Promise<void>;
}

/** Called for every block evicted to fit the budget, with the bytes it was charged. */
export type EvictionListener = (blockId: string, bytes: number) => void;

/** Options shared by the implementations. */
export interface CacheStoreOptions {
  readonly maxBytes: number;
  /** Clock for recency bookkeeping (default Date.now). */
  readonly now?: () => number;
  readonly onEvict?: EvictionListener;
}

/** Charge of a block's pointer and bookkeeping rows. */
export const BLOCK_ROW_CHARGE = 256;

/** One cached block in the ledger. */
export interface LedgerUnit {
  /** Bytes charged for the block's ranges and rows. */
  charge: number;
  /** Last use (ms), and the last use written to persistent bookkeeping. */
  atimeMs: number;
  persistedAtimeMs: number;
  /** Object key the block was found under ('' when not known yet). */
  objectKey: string;
}

/**
 * The recency list and byte accounting of cached blocks, shared by the implementations: a
 * {@link RecencyMap}, least recently used first, so that marking a block used (every cache hit)
 * does not re-insert it into a Map (see lru.ts).
 */
export class BlockLedger {
  private readonly units = new RecencyMap<string, LedgerUnit>();
  private used = 0;

  constructor(readonly maxBytes: number) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) throw new RangeError(`cache maxBytes must be a positive integer, got ${maxBytes}`);
  }

  get usedBytes(): number {
    return this.used;
  }

  get size(): number {
    return this.units.size;
  }

  get(blockId: string): LedgerUnit | undefined {
    return this.units.get(blockId);
  }

  /** Marks a block used now; undefined when it is not cached. */
  touch(blockId: string, nowMs: number): LedgerUnit | undefined {
    const u = this.units.touch(blockId);
    if (!u) return undefined;
    u.atimeMs = nowMs;
    return u;
  }

  /** Adds `delta` bytes to a block (creating it as most recently used) and returns it. */
  charge(blockId: string, delta: number, nowMs: number): LedgerUnit {
    let u = this.touch(blockId, nowMs);
    if (!u) {
      u = { charge: 0, atimeMs: nowMs, persistedAtimeMs: 0, objectKey: '' };
      this.units.set(blockId, u);
    }
    u.charge += delta;
    this.used += delta;
    return u;
  }

  /** Restores a block at the most recent end (load in ascending atime order). */
  restore(blockId: string, unit: LedgerUnit): void {
    this.remove(blockId);
    this.units.set(blockId, unit);
    this.used += unit.charge;
  }

  remove(blockId: string): LedgerUnit | undefined {
    const u = this.units.delete(blockId);
    if (!u) return undefined;
    this.used -= u.charge;
    return u;
  }

  /** Removes and returns least recently used blocks until the charge fits the budget. */
  takeVictims(): [string, LedgerUnit][] {
    const out: [string, LedgerUnit][] = [];
    while (this.used > this.maxBytes && this.units.size > 0) {
      const [id, u] = this.units.oldest()!;
      this.remove(id);
      out.push([id, u]);
    }
    return out;
  }

  /** Block ids, least recently used first. */
  ids(): IterableIterator<string> {
    return this.units.keys();
  }
}
