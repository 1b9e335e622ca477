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
 * Fairness between tenants: one tenant's bucket that hangs must not stop every tenant's flushes.
 * - Waiting flushes queue per tenant (FIFO within a tenant, so a tenant's windows keep the order
 *   they were requested in), and a freed slot goes to the next tenant round-robin.
 * - A tenant holds at most `concurrency - 1` slots (at least 1), so with `concurrency` ≥ 2 a slot
 *   is always left for the other tenants. A tenant with a bucket of its own never holds more: its
 *   bucket can hang alone, and one attempt against a bucket that does not answer lasts as long as
 *   its requests' timeouts and retries (measured: 198 s with the defaults, while a tenant of the
 *   default bucket arriving waited for it when the hanging tenant had been allowed every slot). The
 *   one exception keeps a single healthy tenant of the shared default bucket at full speed: its
 *   flushes may take every slot while no other tenant has a flush queued, running or waiting for
 *   its retry (a hang of that bucket stalls every tenant of it alike).
 * - A failing tenant backs off as a whole: the retry delay grows with the tenant's consecutive
 *   failures (over all its windows, not only the window's own), and is at least as long as the
 *   failed attempt took (up to `retryMaxMs`), so an attempt that hung for minutes does not come
 *   back at once and keep slots busy. Every failure is logged and counted in
 *   `strata_aggregator_flush_errors_total`; an attempt still running after
 *   {@link SLOW_FLUSH_WARN_MS} logs a warning naming the tenant, window, bucket and what it waits
 *   for, and again at every further interval.
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

/**
 * A flush attempt still running after this long logs `flush still running` (warn), and again at
 * every further interval: a bucket that accepts connections and never answers keeps an attempt
 * busy for (socket timeout × attempts of its S3 client), and nothing else is logged meanwhile.
 * Large blocks can legitimately take minutes, so this is a warning, never a cancellation.
 */
export const SLOW_FLUSH_WARN_MS = 60_000;

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
  /**
   * Whether `tenant` writes to a bucket of its own (not the default one shared by the others):
   * one that may fail alone. Absent: none does.
   */
  ownBucket?(tenant: string): boolean;
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
    case 'failed_precondition':
      return "the window's block in the bucket was written with another numShards: change the shard count only as docs/deploy.md (resharding) says, or move the old blocks away; the WAL is kept and the flush retried";
    case 'unsupported_version':
      return "the window's block in the bucket has a format version this build does not read (written by a newer aggregator, before a rollback): run the newer build again; the WAL is kept and the flush retried";
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
  /**
   * Called with every block written (after its upload was verified and its WAL deleted); the
   * flush (and a Seal waiting for it) ends once it settled.
   */
  readonly onFlushed?: (block: FlushedBlock) => Promise<void> | void;
  /**
   * Whether `tenant` is marked for deletion: its WALs are dropped instead of flushed (the
   * lifecycle role deletes every block of a marked tenant, and its bucket may be gone from the
   * tenants file already, which would fail the flush for good).
   */
  readonly markedForDeletion?: (tenant: string) => boolean;
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
  /** Flushes waiting for a slot, per tenant (FIFO within a tenant); map order is the round-robin order. */
  private readonly waiting = new Map<string, (() => void)[]>();
  private running = 0;
  /** Slots held per tenant. */
  private readonly held = new Map<string, number>();
  /** Consecutive failed attempts per tenant (0: its last attempt succeeded; absent: none finished yet). */
  private readonly tenantFailures = new Map<string, number>();
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
    const tenant = job.key.tenant;
    const run = (async () => {
      await this.acquire(tenant);
      const t0 = performance.now();
      try {
        if (this.stopping) throw new FlushStopped();
        const gens = this.o.store.gens(job.key).filter((g) => g.sealed);
        current.gens = new Set(gens);
        const block = await this.flushOnce(job.key, gens);
        job.failures = 0;
        // no entry: not failing (keeping one per tenant ever written would grow with traffic)
        this.tenantFailures.delete(tenant);
        done.resolve(block);
      } catch (err) {
        done.reject(err);
        if (!(err instanceof FlushStopped)) {
          job.failures++;
          this.tenantFailures.set(tenant, (this.tenantFailures.get(tenant) ?? 0) + 1);
          this.scheduleRetry(job, performance.now() - t0, err);
        }
      } finally {
        this.releaseSlot(tenant);
        job.current = null;
        const next = job.next;
        job.next = null;
        if (next && !this.stopping) this.start(job, next);
        else if (next) next.reject(new FlushStopped());
        else if (!job.retry && this.o.store.gens(job.key).length === 0) this.jobs.delete(job.id);
        this.dispatch(); // the job set changed: a capped tenant may now be alone
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

  /**
   * Schedules the retry of a failed attempt that took `tookMs`: backoff over the larger of the
   * window's and the tenant's consecutive failures, and at least `tookMs` (all within retryMaxMs).
   */
  private scheduleRetry(job: Job, tookMs: number, err: unknown): void {
    if (this.stopping || job.retry) return;
    const tenantFailures = this.tenantFailures.get(job.key.tenant) ?? job.failures;
    const backoff = backoffDelayMs(
      { maxAttempts: Infinity, baseDelayMs: this.o.retryBaseMs, maxDelayMs: this.o.retryMaxMs },
      Math.max(job.failures, tenantFailures),
      Math.random,
      'equal',
    );
    const delay = Math.max(backoff, Math.min(this.o.retryMaxMs, Math.round(tookMs)));
    this.o.logger.warn(
      {
        window: job.id,
        tenant: job.key.tenant,
        delayMs: delay,
        failures: job.failures,
        tenantFailures,
        attemptSeconds: Math.round(tookMs) / 1000,
        reason: flushErrorReason(err),
        cause: err instanceof Error ? err.message : String(err),
      },
      'flush will be retried',
    );
    job.retry = setTimeout(() => {
      job.retry = null;
      this.request(job.key).catch(() => undefined); // logged by flushOnce
    }, delay);
    job.retry.unref();
  }

  /** Most slots one tenant may hold while other tenants have flushes (see the module comment). */
  private get tenantCap(): number {
    return Math.max(1, this.o.concurrency - 1);
  }

  /** Whether `tenant` may take one more slot now (a slot being free). */
  private mayTake(tenant: string): boolean {
    if ((this.held.get(tenant) ?? 0) < this.tenantCap) return true;
    // a bucket of its own may hang alone, whenever: the last slot is kept for the others
    if (this.o.buckets.ownBucket?.(tenant) === true) return false;
    // failing (a tenant of the default bucket, which every tenant shares, is not held back before
    // it fails: its flushes of several shards run side by side, as they must to scale)
    const failures = this.tenantFailures.get(tenant);
    if (failures !== undefined && failures !== 0) return false;
    for (const j of this.jobs.values()) if (j.key.tenant !== tenant) return false;
    return true;
  }

  private take(tenant: string): void {
    this.running++;
    this.held.set(tenant, (this.held.get(tenant) ?? 0) + 1);
  }

  /** Waits for a flush slot for `tenant`: per-tenant FIFO, round-robin across tenants. */
  private async acquire(tenant: string): Promise<void> {
    if (!this.waiting.has(tenant) && this.running < this.o.concurrency && this.mayTake(tenant)) {
      this.take(tenant);
      return;
    }
    await new Promise<void>((resolve) => {
      const q = this.waiting.get(tenant);
      if (q) q.push(resolve);
      else this.waiting.set(tenant, [resolve]);
      this.dispatch();
    });
  }

  private releaseSlot(tenant: string): void {
    this.running--;
    const n = (this.held.get(tenant) ?? 1) - 1;
    if (n > 0) this.held.set(tenant, n);
    else this.held.delete(tenant);
    this.dispatch();
  }

  /**
   * Hands free slots to waiting flushes: the first tenant in round-robin order that may take one
   * gets it, and moves to the end of the order.
   */
  private dispatch(): void {
    while (this.running < this.o.concurrency) {
      let granted = false;
      for (const [tenant, q] of this.waiting) {
        if (!this.mayTake(tenant)) continue;
        const next = q.shift()!;
        this.waiting.delete(tenant);
        if (q.length > 0) this.waiting.set(tenant, q); // to the end of the round
        this.take(tenant);
        next();
        granted = true;
        break;
      }
      if (!granted) return;
    }
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
    /** What the attempt is waiting for (for the slow-flush warning). */
    let stage = 'sealing the wal';
    const slow = setInterval(() => {
      logger.warn(
        { window: id, tenant: key.tenant, bucket: lease?.bucket.name ?? null, key: objectKey, stage, seconds: Math.round(performance.now() - t0) / 1000 },
        'flush still running; a bucket that does not answer holds a flush slot until its requests time out',
      );
    }, SLOW_FLUSH_WARN_MS);
    slow.unref();
    try {
      for (const g of gens) await g.seal(this.o.now()); // completes a seal a failure interrupted
      if (gens.every((g) => g.counters.entries === 0)) {
        for (const g of gens) await this.o.store.remove(g);
        return null;
      }
      if (this.o.markedForDeletion?.(key.tenant) === true) {
        const samples = gens.reduce((n, g) => n + g.counters.samples, 0);
        for (const g of gens) await this.o.store.remove(g);
        metrics.flushes.inc({ result: 'dropped' });
        logger.info({ window: id, tenant: key.tenant, samples }, 'wal of a tenant marked for deletion dropped instead of flushed');
        return null;
      }
      stage = "resolving the tenant's bucket";
      lease = await this.o.buckets.acquire(key.tenant, key.windowStart);
      const bucket = lease.bucket;
      let old: BlockReader | null = null;
      stage = 'reading the existing block';
      try {
        old = await BlockReader.open(bucketSource(bucket, objectKey));
      } catch (err) {
        if (!hasCode(err, ErrorCode.NOT_FOUND)) throw err;
      }
      if (old) {
        const f = old.footer;
        if (f.tenant !== key.tenant || f.shard !== key.shard || f.windowStart !== key.windowStart || f.windowEnd !== windowEnd) {
          throw new CorruptionError(objectKey, old.size, `existing block is for ${f.tenant}/${f.windowStart}-${f.windowEnd}/shard ${f.shard} of ${f.numShards}`);
        }
        if (f.numShards !== this.o.numShards) {
          // not damage: a layout change (numShards) over blocks of the old one, as the gateway says
          throw new StrataError(
            ErrorCode.FAILED_PRECONDITION,
            `existing block "${objectKey}" was written with ${f.numShards} shards; this aggregator's numShards is ${this.o.numShards}: a window's blocks cannot mix layouts`,
          );
        }
      }
      logger.info({ window: id, tenant: key.tenant, bucket: bucket.name, key: objectKey, generations: gens.map((g) => g.identity.generation), replacing: old !== null }, 'flush started');
      // the builder opens the generations itself (LevelDB allows one opener per process); sealed,
      // they take no writes, and nothing here opens them again while the flush holds its use
      for (const g of gens) await g.close();
      if (this.stopping) throw new FlushStopped();
      stage = 'building and uploading the block';
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
      stage = 'completing the upload';
      await upload.complete();
      upload = null;
      if (this.stopping) throw new FlushStopped();
      stage = 'verifying the block';
      const verified = await this.pool.verify(bucketSource(bucket, objectKey), { blockId: footer.blockId, series: footer.seriesCount, samples: footer.sampleCount, size }, this.o.verify);
      stage = 'deleting the wal';
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
      try {
        await this.o.onFlushed?.(block);
      } catch (err) {
        logger.warn({ err, key: objectKey }, 'a listener of written blocks failed');
      }
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
          { window: id, tenant: key.tenant, bucket: lease?.bucket.name ?? null, key: objectKey, reason, stage, seconds, err, ...(hint ? { hint } : {}) },
          'flush failed; the wal is kept',
        );
      }
      throw err;
    } finally {
      clearInterval(slow);
      lease?.release();
      for (const u of uses) u.release();
    }
  }

  private record(r: FlushRecord): void {
    this.recent.unshift(r);
    if (this.recent.length > RECENT_FLUSHES) this.recent.length = RECENT_FLUSHES;
  }

  /** Whether `tenant` writes to a bucket of its own (one that can fail alone). */
  ownBucket(tenant: string): boolean {
    return this.o.buckets.ownBucket?.(tenant) === true;
  }

  /**
   * Stops: no new flushes, running ones abort their upload (WALs are kept), retries cancelled.
   * Waits for running flushes at most `maxWaitMs`: a flush blocked on a bucket that does not
   * answer (a read or upload without an answer until the socket timeout and its retries, minutes)
   * is left behind, so a shutdown ends within its grace; its WAL is kept and flushed after the
   * restart, as after a crash.
   */
  async close(maxWaitMs = FLUSH_STOP_WAIT_MS): Promise<void> {
    this.stopping = true;
    for (const j of this.jobs.values()) {
      if (j.retry) clearTimeout(j.retry);
      j.retry = null;
    }
    for (const [tenant, q] of [...this.waiting]) {
      this.waiting.delete(tenant);
      for (const w of q) {
        this.take(tenant); // queued runs get a slot, see `stopping` and give it back
        w();
      }
    }
    this.pool.cancelAll();
    let timer: NodeJS.Timeout | undefined;
    const waited = await Promise.race([
      Promise.allSettled([...this.active]).then(() => true),
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), maxWaitMs);
      }),
    ]);
    clearTimeout(timer);
    if (!waited) {
      this.o.logger.warn({ flushes: this.active.size, waitedMs: maxWaitMs }, 'flushes still running at shutdown (a bucket that does not answer?); left behind, their WALs are kept and flushed after the restart');
    }
    await this.pool.close();
  }
}

/** How long {@link Flusher.close} waits for running flushes. */
export const FLUSH_STOP_WAIT_MS = 10_000;
