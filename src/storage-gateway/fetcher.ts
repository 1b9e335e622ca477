/**
 * Range fetcher: the exact byte ranges of one block (index pages, runs), each checked against its
 * CRC32C, from the byte cache or the bucket. Misses for the same range share one fetch (single
 * flight); misses close together share one GET (coalescing). Bytes reach the cache only after
 * their checksum matched.
 *
 * A fresh range that fails its check, or a range GET answered "not found" / "invalid range",
 * means the object changed under the block id we hold, or is damaged: it surfaces as
 * {@link RangeCheckError} so the caller can re-read the block's footer and decide which.
 */
import { crc32c } from '@node-rs/crc32';
import { ErrorCode, StrataError, hasCode } from '../errors.js';
import type { BucketReader } from '../objstore/bucket.js';
import type { CacheStore } from './cache/store.js';
import { planGets, type CoalesceOptions } from './coalesce.js';
import type { GatewayMetrics } from './metrics.js';
import { raceSignal } from './single-flight.js';

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

interface Deferred {
  readonly promise: Promise<Buffer>;
  resolve(b: Buffer): void;
  reject(err: unknown): void;
}

function deferred(): Deferred {
  let resolve!: (b: Buffer) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<Buffer>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined); // waiters handle it; an unwaited failure is not unhandled
  return { promise, resolve, reject };
}

/** Dependencies of a {@link RangeFetcher}. */
export interface RangeFetcherDeps {
  readonly store: CacheStore;
  readonly metrics: GatewayMetrics;
  readonly coalesce: CoalesceOptions;
}

/** See the module comment. */
export class RangeFetcher {
  private readonly flights = new Map<string, Deferred>();

  constructor(private readonly deps: RangeFetcherDeps) {}

  /** Ranges being fetched right now (for tests). */
  get inflight(): number {
    return this.flights.size;
  }

  /**
   * The bytes of each wanted range of the block stored at `objectKey` in `bucket`, in input order.
   * `blockId` is its id in the byte cache (and for single flight): the block's cacheId, which
   * names the bucket location as well as the block (see blocks.ts).
   * @throws RangeCheckError when fresh bytes fail their check; bucket errors as they come.
   */
  async fetch(bucket: BucketReader, objectKey: string, blockId: string, wants: readonly RangeWant[], signal?: AbortSignal): Promise<Buffer[]> {
    const { store, metrics } = this.deps;
    const out: Buffer[] = new Array<Buffer>(wants.length);
    const waits: Promise<unknown>[] = [];
    const toFetch: { want: RangeWant; flight: Deferred; key: string }[] = [];
    let hits = 0;
    let misses = 0;
    for (let i = 0; i < wants.length; i++) {
      const w = wants[i]!;
      const cached = store.getRange(blockId, w.offset, w.length);
      if (cached) {
        if (crc32c(cached) === w.crc) {
          out[i] = cached;
          hits++;
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
        flight = deferred();
        this.flights.set(key, flight);
        toFetch.push({ want: w, flight, key });
      }
      waits.push(flight.promise.then((b) => (out[i] = b)));
    }
    if (hits > 0) metrics.cacheHits.inc({ layer: 'range' }, hits);
    if (misses > 0) metrics.cacheMisses.inc({ layer: 'range' }, misses);
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
    await raceSignal(Promise.all(waits), signal);
    return out;
  }

  /** Cuts one member's bytes out of a GET's data, checks them, caches them, wakes the waiters. */
  private settle(objectKey: string, blockId: string, m: { want: RangeWant; flight: Deferred; key: string }, data: Buffer, dataOffset: number): void {
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
    m.flight.resolve(bytes);
  }

  private release(key: string, flight: Deferred): void {
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
