/**
 * Flush: turns the sealed WAL generations of one (tenant, shard, window) into its block.
 *
 * ```
 * sealed gens ──┐
 * old block? ───┴─ merge by series id (block < gen 1 < gen 2 ..., last write wins)
 *                  └─ BlockWriter ─ bucket.upload(key) ─ complete (atomic publish, replaces)
 *                                                          └─ verify (read back) ─ delete WALs
 * ```
 *
 * Crash safety: a flush only deletes a WAL after the block holding its samples is published and
 * verified. If the process dies anywhere before that, the WAL is still sealed on disk and the
 * flush runs again after restart; it then merges the WAL into the block it may already have
 * published, which is idempotent because merging dedupes by (series, timestamp) with the WAL
 * winning. So every acknowledged sample ends up in the block exactly once.
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
import { BlockWriter } from '../block/writer.js';
import { CorruptionError, ErrorCode, hasCode, StrataError } from '../errors.js';
import { blockKey } from '../format/key.js';
import { decodeRun, runTimeRange, type Samples } from '../format/run.js';
import type { Bucket } from '../objstore/bucket.js';
import { scanBlock } from './block-scan.js';
import { deferred, type Deferred } from '../common/deferred.js';
import { mergeSamples } from './merge.js';
import type { AggregatorMetrics } from './metrics.js';
import type { WalDb } from './wal-db.js';
import { windowId, type WalStore, type WindowKey } from './wal-store.js';

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
  /** The bucket of `tenant` as of now; rejects if it cannot be resolved (the flush is retried). */
  acquire(tenant: string): Promise<BucketLease>;
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
class FlushStopped extends Error {
  constructor() {
    super('flush stopped by shutdown');
    this.name = 'FlushStopped';
  }
}

/** Series merged between two checks for shutdown. */
const STOP_CHECK_EVERY = 256;
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
  /** Most recent flushes, newest first. */
  readonly recent: FlushRecord[] = [];

  constructor(opts: FlusherOptions) {
    this.o = opts;
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
    const delay = Math.min(this.o.retryMaxMs, this.o.retryBaseMs * 2 ** Math.min(job.failures - 1, 30));
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
    for (const g of gens) g.users++;
    let writer: BlockWriter | null = null;
    let lease: BucketLease | null = null;
    try {
      for (const g of gens) await g.seal(this.o.now()); // completes a seal a failure interrupted
      if (gens.every((g) => g.counters.entries === 0)) {
        for (const g of gens) await this.o.store.remove(g);
        return null;
      }
      lease = await this.o.buckets.acquire(key.tenant);
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
      const upload = bucket.upload(objectKey);
      writer = new BlockWriter(
        upload,
        { tenant: key.tenant, shard: key.shard, numShards: this.o.numShards, windowStart: key.windowStart, windowEnd },
        old ? { expectedSeries: old.footer.seriesCount } : {},
      );
      await this.merge(writer, old, gens);
      const { footer, size } = await writer.finish();
      writer = null;
      await this.verify(bucket, objectKey, footer.blockId, footer.seriesCount, footer.sampleCount, size);
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
      logger.info({ window: id, tenant: key.tenant, bucket: bucket.name, key: objectKey, blockId: footer.blockId, series: footer.seriesCount, samples: footer.sampleCount, bytes: size, seconds, replaced: old !== null }, 'flush done');
      return block;
    } catch (err) {
      if (writer) {
        await writer.abort().catch((e: unknown) => logger.warn({ window: id, key: objectKey, err: e }, 'aborting the block upload'));
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
      for (const g of gens) if (g.users > 0) this.o.store.release(g);
    }
  }

  /**
   * Merges the old block (if any) and the generations, series by series, into `writer`. A series
   * that is one WAL run and nothing else (the usual case: a batch node pushes each series' window
   * once) is copied as it is, lz4 applied, without decoding its samples; every other series is
   * decoded, merged (last write wins) and encoded again.
   */
  private async merge(writer: BlockWriter, old: BlockReader | null, gens: WalDb[]): Promise<void> {
    type Head = { id: bigint; samples: Samples | null; runs: Uint8Array[] };
    type Source = { it: AsyncIterator<Head>; head: Head | null; name: string };
    const sources: Source[] = [];
    if (old) {
      const it = (async function* () {
        for await (const s of scanBlock(old)) yield { id: s.id, samples: s.samples, runs: [] };
      })();
      sources.push({ it, head: null, name: old.source.name });
    }
    for (const g of gens) {
      const it = (async function* () {
        for await (const s of g.series()) yield { id: s.id, samples: null, runs: s.runs };
      })();
      sources.push({ it, head: null, name: g.dir });
    }
    try {
      for (const s of sources) {
        const r = await s.it.next();
        s.head = r.done ? null : r.value;
      }
      let n = 0;
      for (;;) {
        let min: bigint | null = null;
        for (const s of sources) if (s.head && (min === null || s.head.id < min)) min = s.head.id;
        if (min === null) break;
        // sources are in age order (block, then generations), so parts are oldest first
        const taken: { samples: Samples | null; runs: Uint8Array[]; name: string }[] = [];
        for (const s of sources) {
          if (s.head && s.head.id === min) {
            taken.push({ samples: s.head.samples, runs: s.head.runs, name: s.name });
            const r = await s.it.next();
            s.head = r.done ? null : r.value;
          }
        }
        const only = taken.length === 1 && taken[0]!.samples === null && taken[0]!.runs.length === 1 ? taken[0]! : null;
        if (only) {
          const origin = { object: `${only.name} series ${min} run 0`, offset: 0 };
          const run = only.runs[0]!;
          const range = runTimeRange(run, origin);
          // the writer packs the plain WAL run with lz4 (or shares its timestamps) as add() would
          await writer.addEncoded(min, run, range.count, range.first, range.last);
        } else {
          const parts: Samples[] = [];
          for (const p of taken) {
            if (p.samples) parts.push(p.samples);
            p.runs.forEach((r, i) => parts.push(decodeRun(r, { object: `${p.name} series ${min} run ${i}`, offset: 0 })));
          }
          const merged = mergeSamples(parts);
          if (merged.timestamps.length > 0) await writer.add(min, merged);
        }
        if (++n % STOP_CHECK_EVERY === 0 && this.stopping) throw new FlushStopped();
      }
    } finally {
      for (const s of sources) await s.it.return?.(undefined);
    }
  }

  /** Reads the published block back and checks it is the one just written. */
  private async verify(bucket: Bucket, objectKey: string, blockId: string, series: number, samples: number, size: number): Promise<void> {
    const r = await BlockReader.open(bucketSource(bucket, objectKey));
    const f = r.footer;
    if (f.blockId !== blockId || f.seriesCount !== series || f.sampleCount !== samples || r.size !== size) {
      throw new CorruptionError(
        objectKey,
        r.size,
        `uploaded block does not match what was written: block id ${f.blockId} vs ${blockId}, ${f.seriesCount} vs ${series} series, ${f.sampleCount} vs ${samples} samples, ${r.size} vs ${size} bytes`,
      );
    }
    if (this.o.verify === 'footer') return;
    let gotSeries = 0;
    let gotSamples = 0;
    for await (const s of scanBlock(r)) {
      gotSeries++;
      gotSamples += s.samples.timestamps.length;
    }
    if (gotSeries !== series || gotSamples !== samples) {
      throw new CorruptionError(objectKey, 0, `uploaded block holds ${gotSeries} series / ${gotSamples} samples, expected ${series} / ${samples}`);
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
    await Promise.allSettled([...this.active]);
  }
}
