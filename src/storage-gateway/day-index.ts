/**
 * The gateway's copy of each bucket's day-block index (src/tenancy/day-index.ts): where a read of
 * a closed day starts. A day the index names is read from its day block; a day it does not name
 * is read from its 4-hour blocks directly, without first asking the bucket for a day block that
 * does not exist (the day block is still looked up when a 4-hour block is missing). Without an
 * index that can be trusted now (none written, unreadable, or past `trustedUntilMs`), reads look
 * for the day block first, as they do without the index.
 *
 * Loads never hold up a read: a read that finds no index, or one due for a refresh, starts a load
 * in the background and is answered with what is known now. One GET per bucket location per
 * `refreshMs` (`retryMs` after a failed load); the previous index is kept while a load fails.
 * Bounded: at most DAY_INDEX_MAX_BYTES read per load (a larger object is refused after its first
 * {@link FIRST_READ_BYTES}, not downloaded), DAY_INDEX_MAX_HELD_BYTES per parsed index, 30 s per
 * load, {@link MAX_HELD_BYTES} of parsed indexes and {@link MAX_LOCATIONS} locations held (past
 * either, all are forgotten and loaded again as reads need them, not before `retryMs`).
 */
import type { Logger } from '../common/logger.js';
import { ErrorCode, StrataError } from '../errors.js';
import type { BucketReader } from '../objstore/index.js';
import { DAY_INDEX_KEY, DAY_INDEX_MARGIN_MS, DAY_INDEX_MAX_BYTES, DayIndex } from '../tenancy/day-index.js';
import type { GatewayMetrics } from './metrics.js';

/** Where a read of a closed day starts. */
export type DaySource = 'day' | 'blocks' | 'unknown';

export interface DayIndexesOptions {
  /** How long a loaded index is used before it is loaded again. */
  readonly refreshMs: number;
  /** How long after a failed load the next is tried. */
  readonly retryMs: number;
}

/** Bucket locations whose index is held, at most (then all are forgotten and loaded again). */
const MAX_LOCATIONS = 10_000;
/** Bytes of index held over all locations, at most (then all are forgotten and loaded again). */
const MAX_HELD_BYTES = 64 * 1024 * 1024;
/** A load that takes longer than this is abandoned (and tried again `retryMs` later). */
const LOAD_TIMEOUT_MS = 30_000;
/** The first read of an index: all of a small one; of a larger one, its size (the rest is read only when it is within DAY_INDEX_MAX_BYTES). */
const FIRST_READ_BYTES = 256 * 1024;

interface Entry {
  readonly scope: string;
  index: DayIndex | null;
  /** Bytes of the index this entry holds. */
  bytes: number;
  nextLoadMs: number;
  loading: boolean;
}

/** See the module comment. */
export class DayIndexes {
  private readonly byScope = new Map<string, Entry>();
  private heldBytes = 0;
  /** After everything was forgotten (a bound was hit), no index is loaded again before this. */
  private reloadNotBeforeMs = 0;
  /** Aborts the loads in flight at {@link close}; none starts after it. */
  private readonly closing = new AbortController();

  constructor(
    private readonly deps: { readonly metrics: GatewayMetrics; readonly logger: Logger; readonly now: () => number },
    private readonly opts: DayIndexesOptions,
  ) {}

  /** Where a read of (`tenant`, `shard`, the day at `dayStartMs`) in `bucket` (at `scope`) starts. */
  lookup(at: { readonly bucket: BucketReader; readonly scope: string; readonly tenant: string; readonly shard: number }, dayStartMs: bigint): DaySource {
    const now = this.deps.now();
    let e = this.byScope.get(at.scope);
    if (!e) {
      if (this.byScope.size >= MAX_LOCATIONS) this.forgetAll();
      e = { scope: at.scope, index: null, bytes: 0, nextLoadMs: this.reloadNotBeforeMs, loading: false };
      this.byScope.set(at.scope, e);
    }
    if (!e.loading && now >= e.nextLoadMs && !this.closing.signal.aborted) this.load(at.bucket, e);
    const index = e.index;
    // an index listed later than this clock (by more than the margin) is not believed either
    if (index === null || now >= index.trustedUntilMs || index.listedAtMs > now + DAY_INDEX_MARGIN_MS) return 'unknown';
    return index.has(at.tenant, at.shard, dayStartMs) ? 'day' : 'blocks';
  }

  /** Stops loading: the loads in flight are aborted (their buckets are about to close), and no other starts. */
  close(): void {
    this.closing.abort();
  }

  private forgetAll(): void {
    this.byScope.clear();
    this.heldBytes = 0;
    this.reloadNotBeforeMs = this.deps.now() + this.opts.retryMs;
  }

  private hold(e: Entry, index: DayIndex | null, bytes: number): void {
    if (this.byScope.get(e.scope) !== e) return; // forgotten while it loaded
    this.heldBytes += bytes - e.bytes;
    e.index = index;
    e.bytes = bytes;
    if (this.heldBytes > MAX_HELD_BYTES) {
      this.forgetAll();
      this.deps.logger.warn({ maxBytes: MAX_HELD_BYTES }, 'day-block indexes over their memory bound: all forgotten, loaded again as reads need them');
    }
  }

  private load(bucket: BucketReader, e: Entry): void {
    e.loading = true;
    this.deps.metrics.s3Gets.inc({ kind: 'day_index' });
    const where = `${bucket.name}/${DAY_INDEX_KEY}`;
    const signal = AbortSignal.any([AbortSignal.timeout(LOAD_TIMEOUT_MS), this.closing.signal]);
    // the first FIRST_READ_BYTES, then the rest when the object is not larger than DAY_INDEX_MAX_BYTES
    const read = async (): Promise<Buffer> => {
      const first = await bucket.getRange(DAY_INDEX_KEY, { offset: 0, length: FIRST_READ_BYTES }, { signal });
      if (first.size > DAY_INDEX_MAX_BYTES) throw new StrataError(ErrorCode.CORRUPT, `${where}: ${first.size} bytes, more than the ${DAY_INDEX_MAX_BYTES} a gateway reads`);
      if (first.data.length >= first.size) return Buffer.from(first.data);
      this.deps.metrics.s3Gets.inc({ kind: 'day_index' });
      const rest = await bucket.getRange(DAY_INDEX_KEY, { offset: first.data.length, length: first.size - first.data.length }, { signal });
      return Buffer.concat([first.data, rest.data]);
    };
    read()
      .then(
        (data) => {
          const index = DayIndex.parse(data, where);
          this.hold(e, index, index.heldBytes);
          e.nextLoadMs = this.deps.now() + this.opts.refreshMs;
          this.deps.metrics.dayIndexLoads.inc({ result: 'ok' });
        },
        (err: unknown) => {
          if (err instanceof StrataError && err.code === ErrorCode.NOT_FOUND) {
            this.hold(e, null, 0);
            e.nextLoadMs = this.deps.now() + this.opts.refreshMs;
            this.deps.metrics.dayIndexLoads.inc({ result: 'missing' });
            return;
          }
          throw err;
        },
      )
      .catch((err: unknown) => {
        if (this.closing.signal.aborted) return; // stopped: nothing to report
        e.nextLoadMs = this.deps.now() + this.opts.retryMs;
        this.deps.metrics.dayIndexLoads.inc({ result: 'error' });
        this.deps.logger.warn({ err, bucket: bucket.name, key: DAY_INDEX_KEY }, 'loading the day-block index failed; reads of closed days look for the day block first meanwhile');
      })
      .finally(() => {
        e.loading = false;
      });
  }
}
