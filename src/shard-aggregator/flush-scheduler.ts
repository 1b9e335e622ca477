/**
 * Flush scheduling: *when* the sealed WAL generations of one (tenant, shard, window) become its
 * block, and what happens around the build. The build itself (merge, write, verify) is
 * block-builder.ts, run on worker threads by build-pool.ts; this module runs on the main thread
 * and does only the scheduling and the bucket's I/O.
 *
 * ```
 * request ─ job (one per window) ─ slot (≤ concurrency) ─ seal gens ─ lease bucket ─ old block?
 *   ─ close gens ─ build on a worker (WAL merge, block chunks ─▶ bucket.upload(key))
 *   ─ complete (atomic publish, replaces) ─ verify on a worker (reads ◀─ bucket) ─ delete WALs
 *   failure: abort the upload, keep the WALs, retry after exponential backoff
 * ```
 *
 * Crash safety: a flush only deletes a WAL after the block holding its samples is published and
 * verified. If the process dies anywhere before that, the WAL is still sealed on disk and the
 * flush runs again after restart; it then merges the WAL into the block it may already have
 * published, which is idempotent because merging dedupes by (series, timestamp) with the WAL
 * winning. So every acknowledged sample ends up in the block exactly once. A worker that dies
 * fails its flush like any other error: the WALs are kept and the flush is retried.
 *
 * One flush per window at a time, at most `concurrency` flushes at once. A failed flush keeps
 * the WALs and is retried with exponential backoff.
 *
 * The bucket is resolved per tenant at the start of every attempt (`buckets.acquire`) and held
 * until the attempt ends, so a reloaded tenants config (e.g. fixed credentials) takes effect on
 * the next retry and never in the middle of an upload.
 */
import type { Logger } from 'pino';
import { BlockReader } from '../block/reader.js';
import { bucketSource } from '../block/source.js';
import { CorruptionError, ErrorCode, hasCode, StrataError } from '../errors.js';
import { blockKey } from '../format/key.js';
import type { Bucket, ObjectUpload } from '../objstore/bucket.js';
import { deferred, type Deferred } from '../common/deferred.js';
import { BuildCancelled, type WalReadOptions } from './block-builder.js';
import { BuildPool } from './build-pool.js';
import type { AggregatorMetrics } from './metrics.js';
import type { WalDb } from './wal-db.js';
import { windowId, type WalStore, type WindowKey } from './wal-store.js';
import { backoffDelayMs } from '../common/backoff.js';
import { throttledCollector } from '../common/gc.js';

/**
 * A full collection of the main thread before a flush starts (at most one per this many ms, so
 * flushes of several shards starting together share it): the request buffers of the ingest that
 * came before are dead, but V8 keeps them until about 64 MiB more external memory has come
 * (common/gc.ts), and the flush's workers need the memory now. A collection of the main heap
 * blocks it 17-24 ms (measured, `npm run bench -- scale`); a flush takes seconds to minutes.
 */
const COLLECT_BEFORE_FLUSH_MIN_INTERVAL_MS = 5000;
const collectBeforeFlush = throttledCollector(COLLECT_BEFORE_FLUSH_MIN_INTERVAL_MS);

/** What a successful flush wrote. */
export interface FlushedBlock {
  readonly tenant: string;
  readonly shard: number;
  readonly windowStart: bigint;
  readonly key: string;
  readonly blockId: string;
  readonly series: number;
  readonly samples: number;
  readonly bytes: number;
  /** True when an earlier version of the block was merged and replaced. */
  readonly replaced: boolean;
}

/** One finished flush attempt, for the status RPC. */
export interface FlushRecord {
  readonly window: WindowKey;
  readonly block: FlushedBlock | null;
  readonly finishedAtMs: number;
  readonly durationS: number;
  readonly error: string | null;
}

/** A bucket lent for one flush attempt. */
export interface BucketLease {
  readonly bucket: Bucket;
  /** Called exactly once when the attempt ends. */
  release(): void;
}

/** Where each tenant's blocks go (the tenant registry, or one bucket for all). */
export interface TenantBuckets {
  /** The bucket of `tenant`'s window as of now; rejects if it cannot be resolved (the flush is retried). */
  acquire(tenant: string, windowStart: bigint): Promise<BucketLease>;
}

/** One bucket for every tenant. */
export function singleBucket(bucket: Bucket): TenantBuckets {
  return { acquire: () => Promise.resolve({ bucket, release: () => undefined }) };
}

/** Why a flush failed, as a bounded metric label: the error code, or `other`. */
export function flushErrorReason(err: unknown): string {
  return err instanceof StrataError ? err.code.replace(/^ERR_STRATA_/, '').toLowerCase() : 'other';
}

/** What an operator should do about a flush error of this reason (empty if nothing specific). */
function flushErrorHint(reason: string): string {
  switch (reason) {
    case 'access_denied':
      return "the bucket refused the tenant's credentials: fix the credentials (or the bucket policy) in the tenants file or the secret it references, then reload (SIGHUP or a file change); the WAL is kept and the flush retried";
    case 'no_such_bucket':
      return "the tenant's bucket does not exist: create it or fix the bucket name in the tenants file, then reload; the WAL is kept and the flush retried";
    case 'config':
      return 'the tenant has no usable bucket in the config in force; fix the tenants file and reload; the WAL is kept and the flush retried';
    default:
      return '';
  }
}

/** Options of a {@link Flusher}. */
export interface FlusherOptions {
  readonly buckets: TenantBuckets;
  /** Bounded metric label of a tenant. */
  readonly tenantLabel: (tenant: string) => string;
  readonly store: WalStore;
  readonly numShards: number;
  readonly blockDurationMs: number;
  readonly concurrency: number;
  readonly verify: 'full' | 'footer';
  /** How the builder reads the WALs. */
  readonly wal: WalReadOptions;
  /** Worker threads that build and verify blocks (0: on the main thread). */
  readonly threads: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  readonly now: () => number;
  readonly logger: Logger;
  readonly metrics: AggregatorMetrics;
}


interface Job {
  readonly key: WindowKey;
  readonly id: string;
  /** The run queued or in progress, and the generations it covers (known once it starts). */
  current: { done: Deferred<FlushedBlock | null>; gens: Set<WalDb> | null } | null;
  /** A run requested while `current` was already past the point of picking its generations. */
  next: Deferred<FlushedBlock | null> | null;
  failures: number;
  retry: NodeJS.Timeout | null;
}

/** Thrown into a flush that is stopped by shutdown. */
const FlushStopped = BuildCancelled;
/** Flush records kept for the status RPC. */
const RECENT_FLUSHES = 32;

/** Schedules and runs flushes; see the module comment. */
export class Flusher {
  private readonly o: FlusherOptions;
  private readonly jobs = new Map<string, Job>();
  private readonly waiting: (() => void)[] = [];
  private running = 0;
  private stopping = false;
  private readonly active = new Set<Promise<unknown>>();
  /** Builds and verifies blocks (on worker threads unless `threads` is 0). */
  readonly pool: BuildPool;
  /** Most recent flushes, newest first. */
  readonly recent: FlushRecord[] = [];

  constructor(opts: FlusherOptions) {
    this.o = opts;
    this.pool = new BuildPool(opts.threads, opts.logger);
  }

  /** True while a flush of `key` runs, is queued, or waits for its retry. */
  busy(key: WindowKey): boolean {
    const j = this.jobs.get(windowId(key));
    return j !== undefined && (j.current !== null || j.retry !== null);
  }

  /** Generations being flushed right now (for status). */
  isFlushing(w: WalDb): boolean {
    for (const j of this.jobs.values()) if (j.current?.gens?.has(w)) return true;
    return false;
  }

  /**
   * Flushes every sealed generation of `key`. Resolves with the block written by a run that covers
   * every generation sealed when this was called (null if there was nothing to write), or rejects
   * with that run's error (the flush is then retried in the background).
   */
  request(key: WindowKey): Promise<FlushedBlock | null> {
    if (this.stopping) return Promise.reject(new FlushStopped());
    const id = windowId(key);
    let job = this.jobs.get(id);
    const sealed = this.o.store.gens(key).filter((g) => g.sealed);
    if (!job) {
      if (sealed.length === 0) return Promise.resolve(null);
      job = { key, id, current: null, next: null, failures: 0, retry: null };
      this.jobs.set(id, job);
    }
    if (job.current && (job.current.gens === null || sealed.every((g) => job.current!.gens!.has(g)))) return job.current.done.promise;
    if (job.current) {
      job.next ??= deferred();
      return job.next.promise;
    }
    if (job.retry) {
      clearTimeout(job.retry);
      job.retry = null;
    }
    const done = deferred<FlushedBlock | null>();
    this.start(job, done);
    return done.promise;
  }

  private start(job: Job, done: Deferred<FlushedBlock | null>): void {
    const current: NonNullable<Job['current']> = { done, gens: null };
    job.current = current;
    const run = (async () => {
      await this.acquire();
      try {
        if (this.stopping) throw new FlushStopped();
        const gens = this.o.store.gens(job.key).filter((g) => g.sealed);
        current.gens = new Set(gens);
        const block = await this.flushOnce(job.key, gens);
        job.failures = 0;
        done.resolve(block);
      } catch (err) {
        done.reject(err);
        if (!(err instanceof FlushStopped)) {
          job.failures++;
          this.scheduleRetry(job);
        }
      } finally {
        this.releaseSlot();
        job.current = null;
        const next = job.next;
        job.next = null;
        if (next && !this.stopping) this.start(job, next);
        else if (next) next.reject(new FlushStopped());
        else if (!job.retry && this.o.store.gens(job.key).length === 0) this.jobs.delete(job.id);
      }
    })();
    this.active.add(run);
    void run.finally(() => this.active.delete(run));
  }

  /**
   * Starts every flush that waits for its retry now instead of at the end of its backoff (after a
   * tenants config reload: fixed credentials should not wait up to retryMaxMs).
   */
  retryWaiting(): number {
    if (this.stopping) return 0;
    let n = 0;
    for (const job of this.jobs.values()) {
      if (!job.retry) continue;
      clearTimeout(job.retry);
      job.retry = null;
      n++;
      this.request(job.key).catch(() => undefined); // logged by flushOnce
    }
    return n;
  }

  private scheduleRetry(job: Job): void {
    if (this.stopping || job.retry) return;
    const delay = backoffDelayMs({ maxAttempts: Infinity, baseDelayMs: this.o.retryBaseMs, maxDelayMs: this.o.retryMaxMs }, job.failures, Math.random, 'equal');
    this.o.logger.info({ window: job.id, delayMs: delay, failures: job.failures }, 'flush will be retried');
    job.retry = setTimeout(() => {
      job.retry = null;
      this.request(job.key).catch(() => undefined); // logged by flushOnce
    }, delay);
    job.retry.unref();
  }

  private async acquire(): Promise<void> {
    if (this.running < this.o.concurrency) {
      this.running++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  private releaseSlot(): void {
    const next = this.waiting.shift();
    if (next) next(); // hand the slot over
    else this.running--;
  }

  /** Flushes `gens` (sealed, oldest first) of `key` into its block; see the module comment. */
  private async flushOnce(key: WindowKey, gens: WalDb[]): Promise<FlushedBlock | null> {
    const { logger, metrics } = this.o;
    const id = windowId(key);
    const t0 = performance.now();
    const objectKey = blockKey(key.tenant, key.shard, key.windowStart);
    const windowEnd = key.windowStart + BigInt(this.o.blockDurationMs);
    const tenantLabel = this.o.tenantLabel(key.tenant);
    collectBeforeFlush();
    const uses = gens.map((g) => this.o.store.use(g));
    let upload: ObjectUpload | null = null;
    let lease: BucketLease | null = null;
    try {
      for (const g of gens) await g.seal(this.o.now()); // completes a seal a failure interrupted
      if (gens.every((g) => g.counters.entries === 0)) {
        for (const g of gens) await this.o.store.remove(g);
        return null;
      }
      lease = await this.o.buckets.acquire(key.tenant, key.windowStart);
      const bucket = lease.bucket;
      let old: BlockReader | null = null;
      try {
        old = await BlockReader.open(bucketSource(bucket, objectKey));
      } catch (err) {
        if (!hasCode(err, ErrorCode.NOT_FOUND)) throw err;
      }
      if (old) {
        const f = old.footer;
        if (f.tenant !== key.tenant || f.shard !== key.shard || f.numShards !== this.o.numShards || f.windowStart !== key.windowStart || f.windowEnd !== windowEnd) {
          throw new CorruptionError(objectKey, old.size, `existing block is for ${f.tenant}/${f.windowStart}-${f.windowEnd}/shard ${f.shard} of ${f.numShards}`);
        }
      }
      logger.info({ window: id, tenant: key.tenant, bucket: bucket.name, key: objectKey, generations: gens.map((g) => g.identity.generation), replacing: old !== null }, 'flush started');
      // the builder opens the generations itself (LevelDB allows one opener per process); sealed,
      // they take no writes, and nothing here opens them again while the flush holds its use
      for (const g of gens) await g.close();
      if (this.stopping) throw new FlushStopped();
      upload = bucket.upload(objectKey);
      const built = await this.pool.build(
        {
          meta: { tenant: key.tenant, shard: key.shard, numShards: this.o.numShards, windowStart: key.windowStart, windowEnd },
          gens: gens.map((g) => g.dir),
          wal: this.o.wal,
          expectedSeries: old?.footer.seriesCount ?? 0,
          createdAtMs: this.o.now(),
        },
        upload,
        old ? bucketSource(bucket, objectKey) : null,
      );
      const { footer, size } = built.block;
      await upload.complete();
      upload = null;
      if (this.stopping) throw new FlushStopped();
      const verified = await this.pool.verify(bucketSource(bucket, objectKey), { blockId: footer.blockId, series: footer.seriesCount, samples: footer.sampleCount, size }, this.o.verify);
      for (const g of gens) await this.o.store.remove(g);
      const block: FlushedBlock = {
        tenant: key.tenant,
        shard: key.shard,
        windowStart: key.windowStart,
        key: objectKey,
        blockId: footer.blockId,
        series: footer.seriesCount,
        samples: footer.sampleCount,
        bytes: size,
        replaced: old !== null,
      };
      const seconds = (performance.now() - t0) / 1000;
      metrics.flushes.inc({ result: 'ok' });
      metrics.flushDuration.observe(seconds);
      metrics.flushBytes.inc({ tenant: tenantLabel }, size);
      metrics.flushSamples.inc({ tenant: tenantLabel }, footer.sampleCount);
      metrics.flushSeries.inc(footer.seriesCount);
      this.record({ window: key, block, finishedAtMs: this.o.now(), durationS: seconds, error: null });
      const MiB = 2 ** 20;
      logger.info(
        {
          window: id,
          tenant: key.tenant,
          bucket: bucket.name,
          key: objectKey,
          blockId: footer.blockId,
          series: footer.seriesCount,
          samples: footer.sampleCount,
          bytes: size,
          seconds,
          replaced: old !== null,
          builderHeapMiB: Math.round(Math.max(built.heap.totalHeapBytes, verified.totalHeapBytes) / MiB),
          builderMallocPeakMiB: Math.round(Math.max(built.heap.peakMallocedBytes, verified.peakMallocedBytes) / MiB),
        },
        'flush done',
      );
      return block;
    } catch (err) {
      if (upload) {
        await upload.abort().catch((e: unknown) => logger.warn({ window: id, key: objectKey, err: e }, 'aborting the block upload'));
      }
      const seconds = (performance.now() - t0) / 1000;
      if (!(err instanceof FlushStopped)) {
        const reason = flushErrorReason(err);
        const hint = flushErrorHint(reason);
        metrics.flushes.inc({ result: 'error' });
        metrics.flushErrors.inc({ tenant: tenantLabel, reason });
        this.record({ window: key, block: null, finishedAtMs: this.o.now(), durationS: seconds, error: (err as Error).message });
        logger.error(
          { window: id, tenant: key.tenant, bucket: lease?.bucket.name ?? null, key: objectKey, reason, err, ...(hint ? { hint } : {}) },
          'flush failed; the wal is kept',
        );
      }
      throw err;
    } finally {
      lease?.release();
      for (const u of uses) u.release();
    }
  }

  private record(r: FlushRecord): void {
    this.recent.unshift(r);
    if (this.recent.length > RECENT_FLUSHES) this.recent.length = RECENT_FLUSHES;
  }

  /** Stops: no new flushes, running ones abort their upload (WALs are kept), retries cancelled. */
  async close(): Promise<void> {
    this.stopping = true;
    for (const j of this.jobs.values()) {
      if (j.retry) clearTimeout(j.retry);
      j.retry = null;
    }
    for (const w of this.waiting.splice(0)) {
      this.running++; // queued runs get a slot, see `stopping` and give it back
      w();
    }
    this.pool.cancelAll();
    await Promise.allSettled([...this.active]);
    await this.pool.close();
  }
}
