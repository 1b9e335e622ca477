/**
 * Block directory: turns (tenant, shard, window) into the block currently stored there, opened:
 * footer and index of index decoded (typed arrays) and kept in a byte-bounded in-memory LRU, plus
 * the decoded index pages the reads needed (a second LRU).
 *
 * Freshness. An opened block remembers when its object was last read from the bucket. Younger
 * than its staleness bound, it is used as is (from memory, or after a restart from the byte
 * cache's pointer and tail); past half of that, a read also starts a background re-check; past
 * it, the read waits for a fresh suffix read. A fresh read that finds another block id drops the
 * old block from the caches: a gateway serves a replaced block within the bound, and since every
 * cached range is keyed by block id, it never mixes two versions. The bound is `stalenessMs` for
 * a window that ended less than `uploadGraceMs` ago (it may still be uploaded or re-flushed), and
 * `closedStalenessMs` for a closed one, whose block changes only when late data replaces it: warm
 * reads of old data cost no bucket request.
 *
 * Cold reads. The first read of a block is a suffix GET. Whatever of the index pages and runs it
 * holds goes to the caches (checked against their CRCs first), so a block the suffix read holds
 * whole costs that one GET. Its length is `suffixBytes`, or more when blocks of the same tenant
 * and window length opened before had a larger index (pages + index of index + footer): then it
 * asks for that much and a quarter more, up to `suffixMaxBytes`, so that the read of a new
 * block's series costs the suffix read and its run, 2 GETs, not 3 (suffix, page, run). A
 * tenant's blocks of one window length have similar indexes (about the same series); a tenant
 * never seen takes the last index size seen for that window length. A re-check of a block
 * already known reads `suffixBytes`.
 *
 * Outages. When the bucket cannot be reached (UNAVAILABLE), or does not answer a re-check within
 * `recheckTimeoutMs` (a bucket that hangs fails only after its client's retries, minutes later),
 * a block last read less than `maxStaleMs` ago is served as it was (counted in
 * `stale_serves_total`, logged), and its next reads skip the bucket for STALE_RETRY_MS; a re-check
 * that times out goes on, and its answer is used by the reads after it.
 *
 * A missing object is "no block" and is remembered (negative cache) for `negativeTtlMs` while
 * its window may still be uploading (it ended less than `uploadGraceMs` ago), else for
 * `closedStalenessMs`. The entry outlives that bound (the map is bounded by entries, not time):
 * during an outage, a "no block" last confirmed less than `maxStaleMs` ago is served like a stale
 * block, so a range ending now (whose current window has no block until it is sealed) keeps
 * working while the bucket is down.
 *
 * Tenancy. Each address carries the bucket it is read from and a `scope` naming that bucket's
 * location. Every cache key includes the scope: opened blocks, the negative cache and the tail
 * single flight are keyed by `<scope>/<object key>`, the byte cache's pointers likewise, and its
 * ranges and the page LRU by the block's `cacheId`, a digest of (scope, tenant, block id). Two
 * tenants, or one tenant whose bucket a reload changed, never share a cache entry, even if their
 * object keys or block ids were equal.
 */
import { createHash } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import type { Logger } from 'pino';
import { BlockReader } from '../block/reader.js';
import { CorruptionError, ErrorCode, StrataError, hasCode } from '../errors.js';
import { decodeFooter, FOOTER_LEN, type Footer } from '../format/footer.js';
import type { IndexOfIndex } from '../index/index-of-index.js';
import { type IndexPage, vectorBytes } from '../index/page.js';
import type { BucketReader, RangeResult } from '../objstore/bucket.js';
import type { CacheStore } from './cache/store.js';
import type { RangeFetcher } from './fetcher.js';
import { ByteLru, RecencyMap } from './lru.js';
import type { Counted, GatewayMetrics } from './metrics.js';
import { raceSignal, SingleFlight } from './single-flight.js';

/** After a read served a block stale, the next reads of it do the same this long without asking the bucket. */
export const STALE_RETRY_MS = 5000;
/** Default of BlockDirectoryOptions.recheckTimeoutMs. */
export const DEFAULT_RECHECK_TIMEOUT_MS = 2000;
/** Blocks remembered as served stale, at most. */
const MAX_OUTAGE_ENTRIES = 100_000;

/** Which block to read: its identity and object key. */
export interface BlockLocation {
  readonly tenant: string;
  readonly shard: number;
  readonly windowStart: bigint;
  readonly windowEnd: bigint;
  /** blockKey(tenant, shard, windowStart). */
  readonly key: string;
}

/** A block location and the bucket it is read from. */
export interface BlockAddress extends BlockLocation {
  readonly bucket: BucketReader;
  /**
   * Names the bucket's location (e.g. a digest of TenantRegistry.bucketLocation); part of every
   * cache key of the block (see the module comment). No '/' in it.
   */
  readonly scope: string;
}

/** The key of an address in the directory's maps and the byte cache's pointers. */
export function scopedKey(addr: Pick<BlockAddress, 'scope' | 'key'>): string {
  return `${addr.scope}/${addr.key}`;
}

/**
 * The id a block's ranges have in the byte cache: 32 hex digits of SHA-256 over scope, tenant and
 * block id, so bytes cached for one bucket location or tenant never answer for another.
 */
export function blockCacheId(scope: string, tenant: string, blockId: string): string {
  return createHash('sha256').update(`${scope}\n${tenant}\n${blockId}`).digest('hex').slice(0, 32);
}

/** A block whose footer and index of index are decoded. */
export interface OpenBlock {
  /** Object key (in errors). */
  readonly key: string;
  /** {@link scopedKey} of its address. */
  readonly scopedKey: string;
  /** The block id of its footer (sent to clients). */
  readonly blockId: string;
  /** {@link blockCacheId}: the id of its ranges in the byte cache and of its decoded pages. */
  readonly cacheId: string;
  readonly footer: Footer;
  readonly ioi: IndexOfIndex;
  readonly size: number;
  /** Offset of the tail: index of index, then footer. */
  readonly tailOffset: number;
  /** When the object was last read from the bucket and held this block. */
  readonly checkedAtMs: number;
  /** Keys of its pages in the page LRU, made on first use (see pageKey). */
  readonly pageKeys: (string | undefined)[];
}

/** Settings of a {@link BlockDirectory}. */
export interface BlockDirectoryOptions {
  readonly suffixBytes: number;
  /** The most a first read of a block asks for when earlier blocks had larger indexes (see the module comment). */
  readonly suffixMaxBytes: number;
  readonly stalenessMs: number;
  /** The staleness bound of a block of a closed window (see the module comment). */
  readonly closedStalenessMs: number;
  /** While the bucket is unreachable, a block last checked less than this ago is served as is. */
  readonly maxStaleMs: number;
  /**
   * A re-check of a block that has a copy young enough to serve (maxStaleMs) and takes longer
   * than this serves that copy, while the re-check goes on (default {@link DEFAULT_RECHECK_TIMEOUT_MS}).
   */
  readonly recheckTimeoutMs?: number;
  readonly negativeTtlMs: number;
  readonly uploadGraceMs: number;
  readonly openBlocksMaxBytes: number;
  readonly pagesMaxBytes: number;
  /** Entries of the negative cache, at most (default {@link MAX_NEGATIVE}). */
  readonly negativeMaxEntries?: number;
}

/** Dependencies of a {@link BlockDirectory}. */
export interface BlockDirectoryDeps {
  readonly store: CacheStore;
  readonly fetcher: RangeFetcher;
  readonly metrics: GatewayMetrics;
  readonly now: () => number;
  readonly logger: Logger;
}

/**
 * Key of a decoded page in the page LRU, `<cacheId>/<page>`. Made once per opened block and page:
 * a Map lookup with a string made fresh on every read would hash it every time.
 */
function pageKey(block: OpenBlock, page: number): string {
  return (block.pageKeys[page] ??= `${block.cacheId}/${page}`);
}

/**
 * What an open block and a decoded page cost in memory besides their index bytes (objects, typed
 * arrays and their backing stores), so the budgets bound RSS: measured as RSS growth over 20,000
 * of each kept alive, 3.1-3.4 KiB per open block with 1-4 pages (its index of index counted
 * apart) and 1.1 KiB per page besides its entries.
 */
const OPEN_BLOCK_OVERHEAD = 3 * 1024;
const PAGE_OVERHEAD = 1152;
/** Bytes of one page's slot in OpenBlock.pageKeys and its key string once made. */
const PAGE_KEY_BYTES = 64;
/** Bytes of one decoded page entry: id, offset, length, count, min/max time (8 each), crc and timestamp vector reference (4 each). */
const PAGE_ENTRY_BYTES = 56;
/**
 * What one shared timestamp vector of a decoded page costs besides its bytes (its object, origin,
 * view and min/max times): measured as 273-280 bytes with 100 and 512 vectors per page.
 */
const PAGE_VECTOR_OVERHEAD = 288;
/** What a decoded page is charged in the page budget. */
export function pageCharge(page: IndexPage): number {
  return PAGE_OVERHEAD + page.count * PAGE_ENTRY_BYTES + page.vectors.length * PAGE_VECTOR_OVERHEAD + vectorBytes(page);
}
/**
 * Entries of the negative cache ("no block" at a key), at most: about 150 bytes each. Requests for
 * windows without a block (valid, or made up by a client) would otherwise grow it for as long as
 * closedStalenessMs, and pruning it walked the whole map on every miss.
 */
const MAX_NEGATIVE = 100_000;
/** Reads of the tail tried before giving up on an object that keeps changing under us. */
const TAIL_ATTEMPTS = 3;
/** (scope, tenant, window length) whose index size is remembered for the first read of their next blocks. */
const INDEX_HINTS_MAX = 10_000;

/** See the module comment. */
export class BlockDirectory {
  private readonly open_: ByteLru<string, OpenBlock>;
  private readonly pages_: ByteLru<string, IndexPage>;
  /**
   * Block keys found to have no block, and when (ms); at most negativeMaxEntries, the oldest misses
   * forgotten first. An entry answers "no block" for {@link negativeTtlOf} after it was made, and
   * stays after that as the answer to serve while the bucket cannot be reached (maxStaleMs).
   */
  private readonly negative = new Map<string, number>();

  /** Entries of the negative cache now. */
  get negativeEntries(): number {
    return this.negative.size;
  }
  /** Blocks served stale because the bucket was unreachable: until when not to ask it again. */
  private readonly outage = new Map<string, number>();
  private readonly tails = new SingleFlight<string, OpenBlock | null>();
  /** Index bytes (pages + tail) of the last block opened, per `<scope>/<tenant>/<window length>`, and per window length. */
  private readonly indexHints = new RecencyMap<string, number>();
  private readonly lastIndexBytes = new Map<bigint, number>();
  private readonly openHits: Counted;
  private readonly pageHits: Counted;

  constructor(
    private readonly deps: BlockDirectoryDeps,
    private readonly opts: BlockDirectoryOptions,
  ) {
    this.open_ = new ByteLru(opts.openBlocksMaxBytes);
    this.pages_ = new ByteLru(opts.pagesMaxBytes);
    this.openHits = deps.metrics.counted(deps.metrics.cacheHits, { layer: 'open_block' });
    this.pageHits = deps.metrics.counted(deps.metrics.cacheHits, { layer: 'page' });
  }

  /** Bytes charged to the open-block and page budgets. */
  get memoryBytes(): { readonly openBlocks: number; readonly pages: number } {
    return { openBlocks: this.open_.bytes, pages: this.pages_.bytes };
  }

  /** Opened blocks held in memory (for tests). */
  get openCount(): number {
    return this.open_.size;
  }

  /** The block at `addr`, or null when the window has no block. */
  async open(addr: BlockAddress, signal?: AbortSignal): Promise<OpenBlock | null> {
    const known = this.openCached(addr);
    return known !== undefined ? known : this.refreshOrStale(addr, signal);
  }

  /**
   * Re-reads the tail like {@link refresh}. When the bucket cannot be reached (UNAVAILABLE) and
   * the block was last read from it less than `maxStaleMs` ago, answers that copy instead (a
   * stored block only changes by being replaced whole, and cached ranges are keyed by block id,
   * so the copy is never mixed with its successor), counts it, and answers the next reads the
   * same way for {@link STALE_RETRY_MS} before asking the bucket again.
   */
  async refreshOrStale(addr: BlockAddress, signal?: AbortSignal): Promise<OpenBlock | null> {
    const fresh = this.refresh(addr, signal);
    // a bucket that hangs (connects, never answers) fails only after its client's retries, minutes
    // later, past any read's deadline: a re-check slower than recheckTimeoutMs serves the copy
    // young enough to serve (maxStaleMs), if there is one, and goes on for the reads after it
    const recheckMs = this.opts.recheckTimeoutMs ?? DEFAULT_RECHECK_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const slow =
      this.opts.maxStaleMs > 0
        ? new Promise<'slow'>((resolve) => {
            timer = setTimeout(() => resolve('slow'), recheckMs);
            timer.unref();
          })
        : null;
    try {
      const first = slow ? await Promise.race([fresh, slow]) : await fresh;
      if (first === 'slow') {
        const copy = this.staleCopy(addr, this.deps.now());
        if (copy === undefined) return await fresh;
        fresh.then(
          () => this.outage.delete(scopedKey(addr)),
          (err: unknown) => this.deps.logger.warn({ err, key: addr.key }, 'block re-check failed after its copy was served'),
        );
        return this.serveStale(addr, copy, `the bucket did not answer within recheckTimeoutMs (${recheckMs} ms)`, null);
      }
      this.outage.delete(scopedKey(addr));
      return first;
    } catch (err) {
      if (!hasCode(err, ErrorCode.UNAVAILABLE)) throw err;
      const stale = this.staleCopy(addr, this.deps.now());
      if (stale === undefined) throw err;
      return this.serveStale(addr, stale, 'the bucket cannot be reached', err);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Answers `stale` (a block, or null: "no block") for `addr`, counts and logs it, and answers the
   * next reads the same way for STALE_RETRY_MS.
   */
  private serveStale(addr: BlockAddress, stale: OpenBlock | null, why: string, err: unknown): OpenBlock | null {
    const now = this.deps.now();
    if (this.outage.size >= MAX_OUTAGE_ENTRIES) this.outage.clear(); // bounded: at worst the next reads ask the bucket again
    this.outage.set(scopedKey(addr), now + STALE_RETRY_MS);
    this.deps.metrics.staleServes.inc();
    const checkedAtMs = stale?.checkedAtMs ?? this.negative.get(scopedKey(addr)) ?? now;
    const what = stale ? 'serving the block as last read' : 'answering "no block" as last read';
    this.deps.logger.warn({ key: addr.key, ageMs: now - checkedAtMs, maxStaleMs: this.opts.maxStaleMs, ...(err === null ? {} : { err }) }, `${why}; ${what}`);
    return stale;
  }

  /**
   * What the bucket last said of `addr`, if that was less than `maxStaleMs` ago: the block as last
   * read, or null when it had no block then; undefined when there is nothing young enough.
   */
  private staleCopy(addr: BlockAddress, now: number): OpenBlock | null | undefined {
    if (this.opts.maxStaleMs <= 0) return undefined;
    const mem = this.open_.get(scopedKey(addr));
    if (mem) return ageOf(mem.checkedAtMs, now) < this.opts.maxStaleMs ? mem : undefined;
    if (this.absentWithin(addr, now, this.opts.maxStaleMs)) return null;
    return this.openFromStore(addr, now, this.opts.maxStaleMs) ?? undefined;
  }

  /** Whether the bucket said less than `maxAgeMs` ago that `addr` has no block (an entry made before the clock stepped back is not trusted). */
  private absentWithin(addr: BlockAddress, now: number, maxAgeMs: number): boolean {
    const at = this.negative.get(scopedKey(addr));
    return at !== undefined && at <= now && now - at < maxAgeMs;
  }

  /** How long a "no block" found at `at` is answered without asking the bucket: see the module comment. */
  private negativeTtlOf(addr: BlockLocation, at: number): number {
    return addr.windowEnd + BigInt(this.opts.uploadGraceMs) > BigInt(at) ? this.opts.negativeTtlMs : this.opts.closedStalenessMs;
  }

  /**
   * The block at `addr` (null: the window has no block) when memory, the negative cache or the
   * byte cache can say so now; undefined when the tail has to be read ({@link refresh}). Counts
   * the lookup like {@link open}.
   */
  openCached(addr: BlockAddress): OpenBlock | null | undefined {
    const { metrics } = this.deps;
    const now = this.deps.now();
    const sk = scopedKey(addr);
    const mem = this.open_.get(sk);
    const staleness = this.stalenessOf(addr, now);
    if (mem) {
      const age = ageOf(mem.checkedAtMs, now);
      if (age >= staleness && this.servedThroughOutage(sk, age, now)) return mem;
      if (age < staleness) {
        this.openHits.inc();
        if (age >= staleness / 2 && !this.tails.get(sk)) {
          this.refresh(addr).catch((err: unknown) => this.deps.logger.warn({ err, key: addr.key }, 'background block re-check failed'));
        }
        return mem;
      }
    }
    metrics.cacheMisses.inc({ layer: 'open_block' });
    const at = this.negative.get(sk);
    if (at !== undefined) {
      if (at > now) {
        this.negative.delete(sk); // made before the clock stepped back
      } else if (now - at < this.negativeTtlOf(addr, at)) {
        metrics.negativeHits.inc();
        return null;
      } else if (this.servedThroughOutage(sk, now - at, now)) {
        return null; // past its bound, but the bucket was unreachable a moment ago
      }
    }
    if (!mem) {
      const stored = this.openFromStore(addr, now, staleness);
      if (stored) return stored;
    }
    return undefined;
  }

  /**
   * Whether an answer (a block, or "no block") checked `age` ms ago is served again without asking
   * the bucket, because it was unreachable a moment ago ({@link serveStale}); counted. An outage
   * entry that no longer applies is dropped.
   */
  private servedThroughOutage(sk: string, age: number, now: number): boolean {
    const outage = this.outage.get(sk);
    if (outage === undefined) return false;
    if (outage > now && age < this.opts.maxStaleMs) {
      this.deps.metrics.staleServes.inc();
      return true;
    }
    this.outage.delete(sk);
    return false;
  }

  /** How long a check of the block at `addr` holds: see the module comment. */
  private stalenessOf(addr: BlockLocation, now: number): number {
    return addr.windowEnd + BigInt(this.opts.uploadGraceMs) > BigInt(now) ? this.opts.stalenessMs : this.opts.closedStalenessMs;
  }

  /** Re-reads the block's tail from the bucket (shared by concurrent callers). */
  refresh(addr: BlockAddress, signal?: AbortSignal): Promise<OpenBlock | null> {
    return raceSignal(this.tails.do(scopedKey(addr), () => this.readTail(addr)).promise, signal);
  }

  /**
   * Like {@link refresh}, but with a tail read that starts after this call. A read already in
   * flight (a background re-check) may have read the object before the caller saw it change (a
   * run of a replacing block failing the old block's checksum) and would answer the block being
   * replaced, so the caller would take the replacement for damage: it is waited for, then a read
   * of its own is made (shared only with reads that start after it).
   */
  async refreshAfter(addr: BlockAddress, signal?: AbortSignal): Promise<OpenBlock | null> {
    const running = this.tails.get(scopedKey(addr));
    if (running) {
      await raceSignal(
        running.then(
          () => undefined,
          () => undefined,
        ),
        signal,
      );
    }
    return this.refresh(addr, signal);
  }

  /** Decoded index pages `nos` of `block` (opened at `addr`), in input order. */
  async pages(addr: BlockAddress, block: OpenBlock, nos: readonly number[], signal?: AbortSignal): Promise<IndexPage[]> {
    const r = this.pagesOrWait(addr, block, nos);
    return r instanceof Promise ? raceSignal(r, signal) : r;
  }

  /**
   * Like {@link pages}, but answers at once when every page is decoded in memory or its bytes are
   * in the byte cache; otherwise a promise not raced against any signal (the caller races it).
   */
  pagesOrWait(addr: BlockAddress, block: OpenBlock, nos: readonly number[]): IndexPage[] | Promise<IndexPage[]> {
    const out = new Array<IndexPage>(nos.length);
    let need: number[] | null = null;
    for (let i = 0; i < nos.length; i++) {
      const p = this.pages_.get(pageKey(block, nos[i]!));
      if (p) out[i] = p;
      else (need ??= []).push(i);
    }
    const hits = nos.length - (need?.length ?? 0);
    if (hits > 0) this.pageHits.inc(hits);
    if (need === null) return out;
    const missing = need;
    this.deps.metrics.cacheMisses.inc({ layer: 'page' }, missing.length);
    const { ioi } = block;
    const bytes = this.deps.fetcher.fetchOrWait(
      addr.bucket,
      block.key,
      block.cacheId,
      missing.map((i) => {
        const p = nos[i]!;
        return { offset: ioi.offsets[p]!, length: ioi.lengths[p]!, crc: ioi.crcs[p]!, what: `index page ${p}` };
      }),
    );
    const decode = (got: Buffer[]): IndexPage[] => {
      for (let j = 0; j < missing.length; j++) {
        const i = missing[j]!;
        const p = nos[i]!;
        const page = BlockReader.decodePageBytes(block.key, ioi, p, got[j]!, block.footer.samples.length, block.footer.version);
        this.pages_.set(pageKey(block, p), page, pageCharge(page));
        out[i] = page;
      }
      return out;
    };
    return bytes instanceof Promise ? bytes.then(decode) : decode(bytes);
  }

  /** Opens the block from the byte cache when its pointer is fresh enough; null otherwise. */
  private openFromStore(addr: BlockAddress, now: number, maxAgeMs: number): OpenBlock | null {
    const { store, metrics, logger } = this.deps;
    const ptr = store.getPointer(scopedKey(addr));
    if (!ptr || ageOf(ptr.checkedAtMs, now) >= maxAgeMs) return null;
    const tail = store.getRange(ptr.blockId, ptr.tailOffset, ptr.size - ptr.tailOffset);
    if (!tail) {
      metrics.cacheMisses.inc({ layer: 'tail' });
      return null;
    }
    try {
      const block = decodeTail(addr, tail, ptr.tailOffset, ptr.size, ptr.checkedAtMs);
      if (block.cacheId !== ptr.blockId) throw new CorruptionError(addr.key, ptr.tailOffset, `cached tail holds block ${block.blockId} (cache id ${block.cacheId}), pointer says ${ptr.blockId}`);
      metrics.cacheHits.inc({ layer: 'tail' });
      this.remember(block);
      return block;
    } catch (err) {
      if (!(err instanceof StrataError)) throw err;
      metrics.cacheCorrupt.inc();
      logger.warn({ err, key: addr.key }, 'dropping damaged cached block tail');
      store.dropBlock(ptr.blockId);
      return null;
    }
  }

  private async readTail(addr: BlockAddress): Promise<OpenBlock | null> {
    for (let attempt = 1; ; attempt++) {
      const now = this.deps.now();
      const first = await this.get(addr, this.suffixFor(addr), 'suffix');
      if (!first) return this.missing(addr, now);
      const size = first.size;
      if (size < FOOTER_LEN || first.data.length < FOOTER_LEN) {
        throw new CorruptionError(addr.key, 0, `object of ${size} bytes is too small to be a block`);
      }
      const footer = decodeFooter(first.data, first.data.length - FOOTER_LEN, size, { object: addr.key, offset: first.offset });
      let r = first;
      if (footer.ioi.offset < first.offset) {
        // the index of index did not fit in the first read: read exactly the tail
        const second = await this.get(addr, size - footer.ioi.offset, 'suffix');
        if (!second) return this.missing(addr, now);
        if (second.size !== size) {
          if (attempt < TAIL_ATTEMPTS) continue; // replaced between the two reads
          throw new StrataError(ErrorCode.UNAVAILABLE, `block "${addr.key}" keeps changing while it is read`);
        }
        r = second;
      }
      const tailOffset = footer.ioi.offset;
      const tail = r.data.subarray(tailOffset - r.offset);
      let block: OpenBlock;
      try {
        block = decodeTail(addr, tail, tailOffset, size, now);
      } catch (err) {
        // a tail read apart from its footer may belong to a replacement of the same size: read
        // both again before calling the block damaged
        if (r !== first && err instanceof CorruptionError && attempt < TAIL_ATTEMPTS) continue;
        throw err;
      }
      this.install(addr, block, tail);
      this.cachePagesIn(block, r);
      this.noteIndexBytes(addr, size - (block.ioi.pageCount > 0 ? Math.min(block.ioi.offsets[0]!, tailOffset) : tailOffset));
      return block;
    }
  }

  /** The length of the first read of `addr` (see the module comment). */
  private suffixFor(addr: BlockAddress): number {
    const { suffixBytes, suffixMaxBytes } = this.opts;
    if (suffixMaxBytes <= suffixBytes) return suffixBytes;
    const sk = scopedKey(addr);
    if (this.open_.peek(sk) !== undefined || this.deps.store.getPointer(sk) !== undefined) return suffixBytes; // a re-check
    const len = addr.windowEnd - addr.windowStart;
    const hint = this.indexHints.get(`${addr.scope}/${addr.tenant}/${len}`) ?? this.lastIndexBytes.get(len) ?? 0;
    return Math.min(suffixMaxBytes, Math.max(suffixBytes, Math.ceil(hint * 1.25)));
  }

  private noteIndexBytes(addr: BlockAddress, bytes: number): void {
    if (this.opts.suffixMaxBytes <= this.opts.suffixBytes) return;
    const len = addr.windowEnd - addr.windowStart;
    this.indexHints.set(`${addr.scope}/${addr.tenant}/${len}`, bytes);
    while (this.indexHints.size > INDEX_HINTS_MAX) this.indexHints.delete(this.indexHints.oldest()![0]);
    if (!this.lastIndexBytes.has(len) && this.lastIndexBytes.size >= 64) this.lastIndexBytes.clear(); // window lengths are few
    this.lastIndexBytes.set(len, bytes);
  }

  /** One suffix GET, counted; null when the object does not exist. */
  private async get(addr: BlockAddress, suffix: number, kind: string): Promise<RangeResult | null> {
    const { metrics } = this.deps;
    metrics.s3Gets.inc({ kind });
    try {
      const r = await addr.bucket.getRange(addr.key, { suffix });
      metrics.s3GetBytes.inc({ kind }, r.data.length);
      return r;
    } catch (err) {
      metrics.s3GetErrors.inc({ code: err instanceof StrataError ? err.code : 'other' });
      if (hasCode(err, ErrorCode.NOT_FOUND)) return null;
      throw err;
    }
  }

  private missing(addr: BlockAddress, now: number): null {
    const { store } = this.deps;
    const sk = scopedKey(addr);
    const old = this.open_.peek(sk)?.cacheId ?? store.getPointer(sk)?.blockId;
    if (old !== undefined) store.dropBlock(old);
    this.open_.delete(sk);
    store.deletePointer(sk);
    // re-inserted, so the map's order is the order of the last misses: past its bound the oldest
    // entries go, one per miss (forgetting one early costs a look-up in the bucket, or a failed
    // read during an outage, nothing else)
    this.negative.delete(sk);
    this.negative.set(sk, now);
    if (this.negative.size > (this.opts.negativeMaxEntries ?? MAX_NEGATIVE)) this.negative.delete(this.negative.keys().next().value!);
    return null;
  }

  /** Makes `block` the current one at its key, dropping a replaced one. */
  private install(addr: BlockAddress, block: OpenBlock, tail: Buffer): void {
    const { store, metrics, logger } = this.deps;
    const sk = block.scopedKey;
    const mem = this.open_.peek(sk);
    const old = mem?.cacheId ?? store.getPointer(sk)?.blockId;
    if (old !== undefined && old !== block.cacheId) {
      metrics.blockReplacements.inc();
      logger.info({ key: addr.key, blockId: block.blockId, oldBlockId: mem?.blockId ?? null }, 'block replaced');
      store.dropBlock(old);
    }
    this.negative.delete(sk);
    store.putRange(block.cacheId, block.tailOffset, tail);
    store.setPointer(sk, { blockId: block.cacheId, checkedAtMs: block.checkedAtMs, tailOffset: block.tailOffset, size: block.size });
    this.remember(block);
  }

  private remember(block: OpenBlock): void {
    // page keys: a slot per page, and the key strings made for pages read
    this.open_.set(block.scopedKey, block, OPEN_BLOCK_OVERHEAD + block.ioi.byteSize + block.pageKeys.length * PAGE_KEY_BYTES);
  }

  /**
   * Index pages that came along in the suffix read go to the byte cache (checked first). When the
   * read holds the whole object, the pages are decoded too and every run goes to the byte cache
   * (each checked against its entry's CRC), so reads of the block need no other GET.
   */
  private cachePagesIn(block: OpenBlock, r: RangeResult): void {
    const { ioi } = block;
    const { store } = this.deps;
    const whole = r.offset === 0 && r.data.length === block.size;
    for (let p = 0; p < ioi.pageCount; p++) {
      const off = ioi.offsets[p]!;
      const len = ioi.lengths[p]!;
      if (off < r.offset) continue;
      const bytes = r.data.subarray(off - r.offset, off - r.offset + len);
      if (bytes.length !== len || crc32c(bytes) !== ioi.crcs[p]) continue;
      if (!store.hasRange(block.cacheId, off, len)) store.putRange(block.cacheId, off, bytes);
      if (whole) this.cacheRunsOf(block, p, bytes, r.data);
    }
  }

  /** Decodes page `p` (its checked `bytes`) into the page LRU and caches its runs held in `object`. */
  private cacheRunsOf(block: OpenBlock, p: number, bytes: Buffer, object: Buffer): void {
    const { store } = this.deps;
    let page: IndexPage;
    try {
      page = BlockReader.decodePageBytes(block.key, block.ioi, p, bytes, block.footer.samples.length, block.footer.version);
    } catch (err) {
      if (err instanceof StrataError) return; // a read of the page reports it, naming the block
      throw err;
    }
    this.pages_.set(pageKey(block, p), page, pageCharge(page));
    for (let e = 0; e < page.count; e++) {
      const off = page.offsets[e]!;
      const run = object.subarray(off, off + page.lengths[e]!);
      if (run.length === page.lengths[e] && crc32c(run) === page.crcs[e] && !store.hasRange(block.cacheId, off, run.length)) store.putRange(block.cacheId, off, run);
    }
  }
}

/**
 * Decodes a block's tail (index of index + footer, `tail[0]` at `tailOffset` of an object of
 * `size` bytes) and checks that the footer names the block `addr` asks for.
 */
export function decodeTail(addr: BlockAddress, tail: Uint8Array, tailOffset: number, size: number, checkedAtMs: number): OpenBlock {
  if (tail.length !== size - tailOffset || tail.length < FOOTER_LEN) {
    throw new CorruptionError(addr.key, tailOffset, `tail of ${tail.length} bytes for an object of ${size} bytes`);
  }
  const footer = decodeFooter(tail, tail.length - FOOTER_LEN, size, { object: addr.key, offset: tailOffset });
  if (footer.ioi.offset !== tailOffset) throw new CorruptionError(addr.key, size - FOOTER_LEN, `index of index at ${footer.ioi.offset}, expected ${tailOffset}`);
  if (footer.tenant !== addr.tenant || footer.shard !== addr.shard || footer.windowStart !== addr.windowStart) {
    throw new CorruptionError(
      addr.key,
      size - FOOTER_LEN,
      `footer names tenant ${footer.tenant}, shard ${footer.shard}, window ${footer.windowStart}; the key names tenant ${addr.tenant}, shard ${addr.shard}, window ${addr.windowStart}`,
    );
  }
  const ioi = BlockReader.decodeIndexOfIndex(addr.key, footer, tail.subarray(0, footer.ioi.length));
  return {
    key: addr.key,
    scopedKey: scopedKey(addr),
    blockId: footer.blockId,
    cacheId: blockCacheId(addr.scope, addr.tenant, footer.blockId),
    footer,
    ioi,
    size,
    tailOffset,
    checkedAtMs,
    pageKeys: new Array<string | undefined>(footer.pageCount),
  };
}

/**
 * How long ago a block was checked. A check time ahead of the clock (the clock stepped back, or
 * a cache written while it ran ahead) counts as infinitely old: trusting it would serve a block
 * that was replaced or deleted meanwhile for as long as the clock was ahead.
 */
export function ageOf(checkedAtMs: number, now: number): number {
  return checkedAtMs > now ? Infinity : now - checkedAtMs;
}
