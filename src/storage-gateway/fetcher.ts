/**
 * Range fetcher: the exact byte ranges of one block (index pages, runs), each checked against its
 * CRC32C, from the hot-range layer, the byte cache or the bucket. Misses for the same range share
 * one fetch (single flight); misses close together share one GET (coalescing). Bytes reach the
 * cache only after their checksum matched. A range read from the byte cache is checked on every
 * such read (a mismatch is counted, deleted and fetched again) and, once checked, kept in the hot
 * layer (cache/hot.ts), whose hits need no further check: nothing writes to those bytes.
 *
 * A fresh range that fails its check, or a range GET answered "not found" / "invalid range",
 * means the object changed under the block id we hold, or is damaged: it surfaces as
 * {@link RangeCheckError} so the caller can re-read the block's footer and decide which.
 */
import { crc32c } from '@node-rs/crc32';
import { ErrorCode, StrataError, hasCode } from '../errors.js';
import type { BucketReader } from '../objstore/bucket.js';
import type { HotRangeCache } from './cache/hot.js';
import type { CacheStore } from './cache/store.js';
import { planGets, type CoalesceOptions } from './coalesce.js';
import type { Counted, GatewayMetrics } from './metrics.js';
import { raceSignal } from './single-flight.js';
import { deferred, type Deferred } from '../common/deferred.js';
import { ownedCopy } from '../format/bytes.js';

/** A range to fetch and the CRC32C its bytes must have. `what` names it in errors. */
export interface RangeWant {
  readonly offset: number;
  readonly length: number;
  readonly crc: number;
  readonly what: string;
}

/** Bytes fresh from the bucket disagree with the block we hold (replaced or damaged object). */
export class RangeCheckError extends Error {
  constructor(
    readonly objectKey: string,
    readonly offset: number,
    readonly what: string,
    options?: { cause?: unknown },
  ) {
    super(`${what} of "${objectKey}" at offset ${offset}`, options);
    this.name = 'RangeCheckError';
  }
}


/** Dependencies of a {@link RangeFetcher}. */
export interface RangeFetcherDeps {
  readonly store: CacheStore;
  /**
   * The hot-range layer in front of `store` (usually the same object: it wraps the store), or
   * undefined for none. Ranges read from `store` that pass their check are added to it.
   */
  readonly hot?: HotRangeCache | undefined;
  readonly metrics: GatewayMetrics;
  readonly coalesce: CoalesceOptions;
}

/** A miss this call fetches itself (the others join a flight already running). */
interface Member {
  readonly want: RangeWant;
  readonly flight: Deferred<Buffer>;
  readonly key: string;
}

/** See the module comment. */
export class RangeFetcher {
  private readonly flights = new Map<string, Deferred<Buffer>>();
  private readonly hitsHot: Counted;
  private readonly missesHot: Counted;
  private readonly hitsRange: Counted;
  private readonly missesRange: Counted;

  constructor(private readonly deps: RangeFetcherDeps) {
    const { metrics } = deps;
    this.hitsHot = metrics.counted(metrics.cacheHits, { layer: 'hot_range' });
    this.missesHot = metrics.counted(metrics.cacheMisses, { layer: 'hot_range' });
    this.hitsRange = metrics.counted(metrics.cacheHits, { layer: 'range' });
    this.missesRange = metrics.counted(metrics.cacheMisses, { layer: 'range' });
  }

  /** Ranges being fetched right now (for tests). */
  get inflight(): number {
    return this.flights.size;
  }

  /**
   * The bytes of each wanted range of the block stored at `objectKey` in `bucket`, in input order.
   * `blockId` is its id in the byte cache (and for single flight): the block's cacheId, which
   * names the bucket location as well as the block (see block-directory.ts). The bytes must not be
   * written to (ranges from the hot layer are shared).
   * @throws RangeCheckError when fresh bytes fail their check; bucket errors as they come.
   */
  async fetch(bucket: BucketReader, objectKey: string, blockId: string, wants: readonly RangeWant[], signal?: AbortSignal): Promise<Buffer[]> {
    const r = this.fetchOrWait(bucket, objectKey, blockId, wants);
    return raceSignal(r instanceof Promise ? r : Promise.resolve(r), signal);
  }

  /**
   * Like {@link fetch}, but answers at once (no promise, no signal) when every range is in the
   * hot layer or the byte cache; otherwise a promise that is not raced against any signal (the
   * caller races it; its cancellation never cancels the shared GETs anyway).
   */
  fetchOrWait(bucket: BucketReader, objectKey: string, blockId: string, wants: readonly RangeWant[]): Buffer[] | Promise<Buffer[]> {
    const { store, hot, metrics } = this.deps;
    const out: Buffer[] = new Array<Buffer>(wants.length);
    let waits: Promise<unknown>[] | null = null;
    let toFetch: Member[] | null = null;
    const hotBlock = hot?.block(blockId);
    let hotHits = 0;
    let hits = 0;
    let misses = 0;
    try {
      for (let i = 0; i < wants.length; i++) {
        const w = wants[i]!;
        if (hotBlock) {
          const b = hotBlock.get(w.offset, w.length);
          if (b) {
            out[i] = b;
            hotHits++;
            continue;
          }
        }
        const cached = store.getRange(blockId, w.offset, w.length);
        if (cached) {
          if (crc32c(cached) === w.crc) {
            out[i] = cached;
            hits++;
            hot?.add(blockId, w.offset, cached);
            continue;
          }
          metrics.cacheCorrupt.inc();
          store.deleteRange(blockId, w.offset, w.length);
        }
        misses++;
        const key = `${blockId}/${w.offset}/${w.length}`;
        let flight = this.flights.get(key);
        if (flight) {
          metrics.singleFlightJoins.inc();
        } else {
          flight = deferred<Buffer>();
          this.flights.set(key, flight);
          (toFetch ??= []).push({ want: w, flight, key });
        }
        const at = i;
        (waits ??= []).push(flight.promise.then((b) => (out[at] = b)));
      }
    } catch (err) {
      // the byte cache failed (closed, an LMDB error) part-way: the flights this call registered
      // would never settle, and every later read of those ranges would join them and hang
      for (const m of toFetch ?? []) {
        this.release(m.key, m.flight);
        m.flight.reject(err);
      }
      for (const w of waits ?? []) w.catch(() => undefined);
      throw err;
    }
    if (hotHits > 0) {
      this.hitsHot.inc(hotHits);
      store.touchBlock(blockId); // the byte cache's recency follows the reads it did not see
    }
    if (hot && hits + misses > 0) this.missesHot.inc(hits + misses);
    if (hits > 0) this.hitsRange.inc(hits);
    if (misses > 0) this.missesRange.inc(misses);
    if (waits === null) return out;
    if (toFetch !== null) this.startGets(bucket, objectKey, blockId, toFetch);
    return Promise.all(waits).then(() => out);
  }

  /** Issues the coalesced GETs of this call's own misses; each settles its members' flights. */
  private startGets(bucket: BucketReader, objectKey: string, blockId: string, toFetch: Member[]): void {
    const { metrics } = this.deps;
    for (const get of planGets(toFetch.map((f) => f.want), this.deps.coalesce)) {
      const members = get.members.map((j) => toFetch[j]!);
      if (members.length > 1) metrics.coalescedRanges.inc(members.length);
      this.get(bucket, objectKey, get.offset, get.length).then(
        (data) => {
          for (const m of members) this.settle(objectKey, blockId, m, data, get.offset);
        },
        (err: unknown) => {
          for (const m of members) {
            this.release(m.key, m.flight);
            m.flight.reject(err);
          }
        },
      );
    }
  }

  /** Cuts one member's bytes out of a GET's data, checks them, caches them, wakes the waiters. */
  private settle(objectKey: string, blockId: string, m: Member, data: Buffer, dataOffset: number): void {
    const w = m.want;
    this.release(m.key, m.flight);
    const at = w.offset - dataOffset;
    const bytes = data.subarray(at, at + w.length);
    if (bytes.length !== w.length) {
      m.flight.reject(new RangeCheckError(objectKey, w.offset, `${w.what}: read ${bytes.length} of ${w.length} bytes`));
      return;
    }
    if (crc32c(bytes) !== w.crc) {
      m.flight.reject(new RangeCheckError(objectKey, w.offset, `${w.what}: checksum mismatch`));
      return;
    }
    try {
      this.deps.store.putRange(blockId, w.offset, bytes);
    } catch (err) {
      m.flight.reject(err);
      return;
    }
    // bytes of its own, unless the response is exactly them: a view would keep the whole buffer
    // it was cut from alive (a coalesced GET of up to maxGetBytes, gaps included, or a pooled
    // slab) for as long as an answer holds the run, and only the answer's messages are charged
    // to the bytes-in-flight budget
    m.flight.resolve(bytes.byteOffset === 0 && bytes.length === bytes.buffer.byteLength ? bytes : ownedCopy(bytes));
  }

  private release(key: string, flight: Deferred<Buffer>): void {
    if (this.flights.get(key) === flight) this.flights.delete(key);
  }

  /** One range GET, counted. "Not found" and "invalid range" mean the object changed. */
  private async get(bucket: BucketReader, objectKey: string, offset: number, length: number): Promise<Buffer> {
    const { metrics } = this.deps;
    metrics.s3Gets.inc({ kind: 'range' });
    try {
      const r = await bucket.getRange(objectKey, { offset, length });
      metrics.s3GetBytes.inc({ kind: 'range' }, r.data.length);
      return r.data;
    } catch (err) {
      metrics.s3GetErrors.inc({ code: err instanceof StrataError ? err.code : 'other' });
      if (hasCode(err, ErrorCode.NOT_FOUND) || hasCode(err, ErrorCode.INVALID_RANGE)) {
        throw new RangeCheckError(objectKey, offset, `range of ${length} bytes: ${(err as Error).message}`, { cause: err });
      }
      throw err;
    }
  }
}
