/**
 * The in-memory {@link CacheStore}: the same accounting and eviction as the LMDB store, nothing
 * persisted. For tests, embedded use and gateways without a local disk.
 */
import { ownedCopy } from '../../format/bytes.js';
import { BLOCK_ROW_CHARGE, BlockLedger, type BlockPointer, type CacheStore, type CacheStoreOptions } from './store.js';

/** Per-entry overhead charged on top of the bytes (map entry, Buffer object). */
const ENTRY_OVERHEAD = 96;

function rangeKey(offset: number, length: number): string {
  return `${offset}/${length}`;
}

/** A CacheStore in process memory. */
export class MemoryCacheStore implements CacheStore {
  private readonly ledger: BlockLedger;
  private readonly ranges = new Map<string, Map<string, Buffer>>();
  private readonly pointers = new Map<string, BlockPointer>();
  private readonly now: () => number;
  private readonly onEvict: CacheStoreOptions['onEvict'];
  private closed = false;

  constructor(opts: CacheStoreOptions) {
    this.ledger = new BlockLedger(opts.maxBytes);
    this.now = opts.now ?? Date.now;
    this.onEvict = opts.onEvict;
  }

  get maxBytes(): number {
    return this.ledger.maxBytes;
  }

  get usedBytes(): number {
    return this.ledger.usedBytes;
  }

  get blockCount(): number {
    return this.ledger.size;
  }

  getPointer(objectKey: string): BlockPointer | undefined {
    return this.pointers.get(objectKey);
  }

  setPointer(objectKey: string, pointer: BlockPointer): void {
    this.check();
    this.pointers.set(objectKey, pointer);
    const u = this.ledger.get(pointer.blockId) ?? this.ledger.charge(pointer.blockId, BLOCK_ROW_CHARGE, this.now());
    u.objectKey = objectKey;
    this.evict();
  }

  deletePointer(objectKey: string): void {
    this.pointers.delete(objectKey);
  }

  getRange(blockId: string, offset: number, length: number): Buffer | undefined {
    const b = this.ranges.get(blockId)?.get(rangeKey(offset, length));
    if (!b) return undefined;
    this.ledger.touch(blockId, this.now());
    return Buffer.from(b);
  }

  touchBlock(blockId: string): void {
    this.ledger.touch(blockId, this.now());
  }

  hasRange(blockId: string, offset: number, length: number): boolean {
    return this.ranges.get(blockId)?.has(rangeKey(offset, length)) ?? false;
  }

  putRange(blockId: string, offset: number, bytes: Uint8Array): void {
    this.check();
    const key = rangeKey(offset, bytes.length);
    let m = this.ranges.get(blockId);
    if (!m) {
      m = new Map();
      this.ranges.set(blockId, m);
    }
    const old = m.get(key);
    let delta = old ? -(old.length + key.length + ENTRY_OVERHEAD) : 0;
    if (!this.ledger.get(blockId)) delta += BLOCK_ROW_CHARGE;
    // not Buffer.from: it takes ranges under 4 KiB from Node's shared pool, and each small entry
    // would keep a whole slab (and whatever else is in it) alive
    m.set(key, ownedCopy(bytes));
    this.ledger.charge(blockId, delta + bytes.length + key.length + ENTRY_OVERHEAD, this.now());
    this.evict();
  }

  deleteRange(blockId: string, offset: number, length: number): void {
    const key = rangeKey(offset, length);
    const m = this.ranges.get(blockId);
    const old = m?.get(key);
    if (!m || !old) return;
    m.delete(key);
    this.ledger.charge(blockId, -(old.length + key.length + ENTRY_OVERHEAD), this.now());
  }

  dropBlock(blockId: string): void {
    const u = this.ledger.remove(blockId);
    this.forget(blockId, u?.objectKey ?? '');
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {
    this.closed = true;
    this.ranges.clear();
    this.pointers.clear();
  }

  private forget(blockId: string, objectKey: string): void {
    this.ranges.delete(blockId);
    if (objectKey !== '' && this.pointers.get(objectKey)?.blockId === blockId) this.pointers.delete(objectKey);
  }

  private evict(): void {
    for (const [id, u] of this.ledger.takeVictims()) {
      this.forget(id, u.objectKey);
      this.onEvict?.(id, u.charge);
    }
  }

  private check(): void {
    if (this.closed) throw new RangeError('cache store is closed');
  }
}
