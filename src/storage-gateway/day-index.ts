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
 */
import type { Logger } from '../common/logger.js';
import { ErrorCode, StrataError } from '../errors.js';
import type { BucketReader } from '../objstore/index.js';
import { DAY_INDEX_KEY, DayIndex } from '../tenancy/day-index.js';
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

interface Entry {
  index: DayIndex | null;
  nextLoadMs: number;
  loading: boolean;
}

/** See the module comment. */
export class DayIndexes {
  private readonly byScope = new Map<string, Entry>();

  constructor(
    private readonly deps: { readonly metrics: GatewayMetrics; readonly logger: Logger; readonly now: () => number },
    private readonly opts: DayIndexesOptions,
  ) {}

  /** Where a read of (`tenant`, `shard`, the day at `dayStartMs`) in `bucket` (at `scope`) starts. */
  lookup(at: { readonly bucket: BucketReader; readonly scope: string; readonly tenant: string; readonly shard: number }, dayStartMs: bigint): DaySource {
    const now = this.deps.now();
    let e = this.byScope.get(at.scope);
    if (!e) {
      if (this.byScope.size >= MAX_LOCATIONS) this.byScope.clear();
      e = { index: null, nextLoadMs: 0, loading: false };
      this.byScope.set(at.scope, e);
    }
    if (!e.loading && now >= e.nextLoadMs) this.load(at.bucket, e);
    const index = e.index;
    if (index === null || now >= index.trustedUntilMs) return 'unknown';
    return index.has(at.tenant, at.shard, dayStartMs) ? 'day' : 'blocks';
  }

  private load(bucket: BucketReader, e: Entry): void {
    e.loading = true;
    this.deps.metrics.s3Gets.inc({ kind: 'day_index' });
    bucket
      .get(DAY_INDEX_KEY)
      .then(
        (data) => {
          e.index = DayIndex.parse(data, `${bucket.name}/${DAY_INDEX_KEY}`);
          e.nextLoadMs = this.deps.now() + this.opts.refreshMs;
          this.deps.metrics.dayIndexLoads.inc({ result: 'ok' });
        },
        (err: unknown) => {
          if (err instanceof StrataError && err.code === ErrorCode.NOT_FOUND) {
            e.index = null;
            e.nextLoadMs = this.deps.now() + this.opts.refreshMs;
            this.deps.metrics.dayIndexLoads.inc({ result: 'missing' });
            return;
          }
          throw err;
        },
      )
      .catch((err: unknown) => {
        e.nextLoadMs = this.deps.now() + this.opts.retryMs;
        this.deps.metrics.dayIndexLoads.inc({ result: 'error' });
        this.deps.logger.warn({ err, bucket: bucket.name, key: DAY_INDEX_KEY }, 'loading the day-block index failed; reads of closed days look for the day block first meanwhile');
      })
      .finally(() => {
        e.loading = false;
      });
  }
}
