/**
 * The aggregator engine, independent of the gRPC transport: accepts validated writes into the
 * WALs, seals windows, decides when windows are flushed, and reports its state. The gRPC
 * handlers (service.ts) are a thin layer over it.
 */
import { windowStartOf } from '../format/key.js';
import { availableParallelism } from 'node:os';
import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { GrpcError } from '../common/grpc-status.js';
import { InvalidArgumentError } from '../errors.js';
import type { Bucket } from '../objstore/bucket.js';
import { OTHER_TENANT_LABEL } from '../tenancy/tenants.js';
import type { AggregatorConfig } from './config.js';
import { ownedShards } from './config.js';
import { Flusher, singleBucket, type FlushedBlock, type FlushRecord, type TenantBuckets } from './flush-scheduler.js';
import { EncodePool } from './encode-pool.js';
import type { IngestContext, WireSeries } from './ingest.js';
import type { AggregatorMetrics } from './metrics.js';
import type { WalEntry } from './wal-db.js';
import { fullMessage, isNoSpace, WalStore, WalStoreStopping, windowId, type WalUse, type WindowKey } from './wal-store.js';

/** Dependencies of an {@link Aggregator}. */
export interface AggregatorOptions {
  readonly config: AggregatorConfig;
  /** Where each tenant's blocks go, resolved at every flush attempt (e.g. the tenant registry)... */
  readonly buckets?: TenantBuckets;
  /** ...or one bucket for every tenant. */
  readonly bucket?: Bucket;
  /** Bounded metric label of a tenant (default: `_other` for all). */
  readonly tenantLabel?: (tenant: string) => string;
  readonly logger: Logger;
  readonly metrics: AggregatorMetrics;
  /** Clock (ms since the epoch); default Date.now. */
  readonly now?: () => number;
  /** Run the automatic flush check every `flushCheckIntervalMs` (default true; tests call tick()). */
  readonly autoFlush?: boolean;
  /**
   * A tenant's retention (ms) or null (kept forever): samples of windows already past it are
   * refused like samples older than maxSampleAgeMs (they would never be served). Default: none.
   */
  readonly retentionOf?: (tenant: string) => number | null;
  /** Called with every block written (see FlusherOptions.onFlushed). */
  readonly onFlushed?: (block: FlushedBlock) => Promise<void> | void;
  /** Whether a tenant is marked for deletion (see FlusherOptions.markedForDeletion). */
  readonly markedForDeletion?: (tenant: string) => boolean;
}

/** One WAL generation, for the status RPC. */
export interface WindowStatus {
  readonly tenant: string;
  readonly shard: number;
  readonly windowStart: bigint;
  readonly generation: number;
  readonly state: 'open' | 'sealed' | 'flushing';
  readonly walBytes: number;
  readonly samples: number;
  readonly lastWriteMs: number;
}

/** What the status RPC reports. */
export interface AggregatorStatus {
  readonly numShards: number;
  readonly ownedShards: number[];
  readonly windows: WindowStatus[];
  readonly walBytes: number;
  readonly lastFlushes: FlushRecord[];
  readonly walSyncs: number;
  readonly walRequests: number;
}

/** See the module comment. */
export class Aggregator {
  readonly config: AggregatorConfig;
  readonly owned: ReadonlySet<number>;
  readonly store: WalStore;
  readonly flusher: Flusher;
  private readonly logger: Logger;
  private readonly metrics: AggregatorMetrics;
  private readonly now: () => number;
  private readonly retentionOf: (tenant: string) => number | null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Validates and encodes requests on worker threads (config `encodeThreads`). */
  readonly encoder: EncodePool;

  private constructor(opts: AggregatorOptions, store: WalStore) {
    this.encoder = new EncodePool(opts.config.encodeThreads ?? availableParallelism(), opts.logger);
    this.config = opts.config;
    this.owned = new Set(ownedShards(opts.config));
    this.store = store;
    this.logger = opts.logger;
    this.metrics = opts.metrics;
    this.now = opts.now ?? Date.now;
    this.retentionOf = opts.retentionOf ?? (() => null);
    const buckets = opts.buckets ?? (opts.bucket ? singleBucket(opts.bucket) : null);
    if (!buckets) throw new TypeError('Aggregator needs `buckets` or `bucket`');
    this.flusher = new Flusher({
      buckets,
      tenantLabel: opts.tenantLabel ?? (() => OTHER_TENANT_LABEL),
      store,
      numShards: opts.config.numShards,
      blockDurationMs: opts.config.blockDurationMs,
      concurrency: opts.config.flushConcurrency,
      verify: opts.config.verifyUpload,
      wal: { writeBufferBytes: opts.config.walWriteBufferBytes, maxOpenSegments: opts.config.flushMaxOpenSegments },
      threads: opts.config.flushThreads ?? opts.config.flushConcurrency,
      retryBaseMs: opts.config.flushRetryBaseMs,
      retryMaxMs: opts.config.flushRetryMaxMs,
      now: this.now,
      logger: opts.logger,
      metrics: opts.metrics,
      ...(opts.onFlushed ? { onFlushed: opts.onFlushed } : {}),
      ...(opts.markedForDeletion ? { markedForDeletion: opts.markedForDeletion } : {}),
    });
  }

  /** Recovers the WALs, resumes interrupted flushes and starts the flush timer. */
  static async open(opts: AggregatorOptions): Promise<Aggregator> {
    const { config, metrics } = opts;
    const now = opts.now ?? Date.now;
    const store = await WalStore.open({
      dir: config.walDir,
      numShards: config.numShards,
      blockDurationMs: config.blockDurationMs,
      maxOpen: config.maxOpenWals,
      now,
      logger: opts.logger,
      db: {
        writeBufferBytes: config.walWriteBufferBytes,
        sync: config.walSync,
        maxOpenSegments: config.flushMaxOpenSegments,
        onCommit: (requests, _entries, ms) => {
          metrics.walSyncs.inc();
          metrics.walGroupRequests.observe(requests);
          metrics.walSyncDuration.observe(ms / 1000);
        },
      },
    });
    const self = new Aggregator(opts, store);
    metrics.walBytes.set(store.totalBytes());
    metrics.walDiskSource = () => store.diskUsage();
    for (const ww of store.all()) {
      if (!self.owned.has(ww.key.shard)) {
        opts.logger.warn({ window: ww.id }, 'wal of a shard this aggregator does not own; flushing it anyway');
      }
      if (ww.gens.some((g) => g.sealed)) self.flusher.request(ww.key).catch(() => undefined); // resume
    }
    if (opts.autoFlush !== false) {
      self.timer = setInterval(() => void self.tick(), config.flushCheckIntervalMs);
      self.timer.unref();
      void self.tick();
    }
    return self;
  }

  /**
   * What requests for `shard` (of `tenant`, whose retention narrows the accepted range) are checked
   * against, as of now.
   */
  ingestContext(shard: number, tenant?: string): IngestContext {
    const now = this.now();
    // never before the epoch, whatever maxSampleAgeMs says: a block's window cannot start before it
    let min = Math.max(0, now - this.config.maxSampleAgeMs);
    const retention = tenant === undefined ? null : this.retentionOf(tenant);
    if (retention !== null) {
      // the first window that has not ended `retention` ago starts after now - retention - duration
      const d = this.config.blockDurationMs;
      const expiredUpTo = now - retention - d;
      min = Math.max(min, Number(windowStartOf(BigInt(expiredUpTo), d)) + d);
    }
    return {
      shard,
      numShards: this.config.numShards,
      blockDurationMs: this.config.blockDurationMs,
      minTimestampMs: min,
      maxTimestampMs: now + this.config.maxSampleFutureMs,
      verifyEncoding: this.config.verifyEncoding,
    };
  }

  /**
   * Validates, encodes and durably stores one request for (tenant, shard); resolves once every
   * sample is in a synced WAL group. The caller checked the headers, ownership and limits.
   * @throws InvalidArgumentError for a malformed request (nothing stored).
   * @throws whatever `stillWanted` throws, asked once the request is encoded, before the WAL.
   */
  async write(tenant: string, shard: number, series: readonly WireSeries[], stillWanted?: () => void): Promise<{ samples: number; series: number }> {
    if (this.closed) throw new RangeError('the aggregator is closed');
    const prepared = await this.encoder.prepare(series, this.ingestContext(shard, tenant));
    // a request whose caller gave up while it was encoded (deadline, cancel) is not stored
    stillWanted?.();
    const byWindow = new Map<bigint, WalEntry[]>();
    for (const r of prepared.runs) {
      let list = byWindow.get(r.windowStart);
      if (!list) byWindow.set(r.windowStart, (list = []));
      list.push(r);
    }
    // one window at a time, so a request holds one WAL at a time whatever the number of windows
    // it spans (maxOpenWals holds inside a request, and waiting for a slot cannot deadlock)
    for (const [windowStart, entries] of byWindow) {
      for (;;) {
        let use: WalUse;
        try {
          use = await this.store.acquireWritable({ tenant, shard, windowStart });
        } catch (err) {
          throw this.walWriteError(tenant, shard, windowStart, err);
        }
        try {
          if (use.wal.sealed) continue; // sealed while it was being opened: the next generation
          await use.wal.append(entries, this.now());
          break;
        } catch (err) {
          throw this.walWriteError(tenant, shard, windowStart, err);
        } finally {
          use.release();
        }
      }
    }
    this.metrics.walBytes.set(this.store.totalBytes());
    return { samples: prepared.samples, series: prepared.series };
  }

  /**
   * Shutdown, at the end of its grace: writes waiting for a WAL slot give up at once with
   * UNAVAILABLE (nothing of them was stored), so they are answered before the streams are cut.
   * Whether any was waiting.
   */
  refuseWaitingWrites(): boolean {
    return this.store.refuseWaiters();
  }

  private walWriteError(tenant: string, shard: number, windowStart: bigint, err: unknown): GrpcError {
    const what = `cannot write the WAL of ${tenant}/shard ${shard}/window ${windowStart}`;
    const after = 'this request is not acknowledged (windows it spans may be stored already), retry it';
    if (err instanceof WalStoreStopping) {
      this.logger.info({ tenant, shard, window: windowStart.toString() }, 'a write waiting for a wal is refused: the aggregator is shutting down');
      return new GrpcError(status.UNAVAILABLE, `${what}: the aggregator is shutting down; ${after}`);
    }
    this.logger.error({ tenant, shard, window: windowStart.toString(), err }, 'cannot write the wal');
    // a full disk is a bound hit, as walQuotaBytes and walMinFreeBytes are: named, with its cause
    if (isNoSpace(err)) return new GrpcError(status.RESOURCE_EXHAUSTED, `${what}: the disk of walDir is full (${fullMessage(err)}); ${after} once there is room (walMinFreeBytes keeps room for the WALs)`);
    return new GrpcError(status.UNAVAILABLE, `${what}: ${fullMessage(err)}; ${after}`);
  }

  /**
   * Seals (tenant, shard, window) and flushes it. With `wait`, resolves with the block written
   * (none if there was nothing to flush) or rejects with the flush's error (it is then retried in
   * the background); without, returns once the flush is scheduled.
   */
  async seal(tenant: string, shard: number, windowStart: bigint, wait: boolean): Promise<FlushedBlock[]> {
    const dur = BigInt(this.config.blockDurationMs);
    if (windowStart % dur !== 0n) {
      throw new InvalidArgumentError('window_start_ms', `${windowStart} is not aligned to the block duration of ${this.config.blockDurationMs} ms`);
    }
    const key: WindowKey = { tenant, shard, windowStart };
    try {
      await this.store.sealOpen(key);
    } catch (err) {
      // disk trouble (ENOSPC, EIO): the seal can be retried, and heals once the cause is gone
      this.logger.error({ window: windowId(key), err }, 'cannot seal the wal');
      if (isNoSpace(err)) throw new GrpcError(status.RESOURCE_EXHAUSTED, `cannot seal the WAL of ${windowId(key)}: the disk of walDir is full (${fullMessage(err)}); retry the seal once there is room`);
      throw new GrpcError(status.UNAVAILABLE, `cannot seal the WAL of ${windowId(key)}: ${fullMessage(err)}; retry the seal`);
    }
    this.logger.info({ window: windowId(key) }, 'window sealed');
    const flushed = this.flusher.request(key);
    if (!wait) {
      flushed.catch(() => undefined);
      return [];
    }
    const block = await flushed;
    this.metrics.walBytes.set(this.store.totalBytes());
    return block ? [block] : [];
  }

  /**
   * Automatic flush: seals and flushes every open log whose window ended more than flushDelayMs
   * ago and that received no write for flushIdleMs. Resolves when the flushes it started are done
   * (the timer does not wait; tests with an injected clock do).
   */
  tick(): Promise<void> {
    if (this.closed) return Promise.resolve();
    const now = this.now();
    const { flushDelayMs, flushIdleMs, flushMaxDelayMs, blockDurationMs } = this.config;
    const started: Promise<unknown>[] = [];
    for (const ww of this.store.all()) {
      if (ww.gens.some((g) => g.sealed) && !this.flusher.busy(ww.key)) {
        // sealed but not being flushed nor waiting for a retry (e.g. its seal marker failed)
        started.push(this.flusher.request(ww.key).catch(() => undefined));
      }
      const open = this.store.openGen(ww.key);
      if (!open) continue;
      const windowEnd = Number(ww.key.windowStart) + blockDurationMs;
      const lastWrite = Math.max(open.counters.lastWriteMs, open.identity.createdAtMs);
      const idle = now - lastWrite >= flushIdleMs;
      // writes that keep coming after the end (a trickle of late data) flush each generation once
      // it is flushMaxDelayMs old, and later writes start the next one: never unflushed for ever
      const overdue = now - Math.max(open.identity.createdAtMs, windowEnd) >= flushMaxDelayMs;
      if (now >= windowEnd + flushDelayMs && (idle || overdue) && open.users === 0) {
        this.logger.info({ window: ww.id, generation: open.identity.generation }, idle ? 'window idle after its end; flushing' : 'window still written long after its end; flushing what it holds (flushMaxDelayMs)');
        started.push(
          this.store
            .sealOpen(ww.key)
            .then(
              () => this.flusher.request(ww.key).catch(() => undefined), // logged and retried by the flusher
              (err: unknown) => this.logger.error({ window: ww.id, err }, 'cannot seal an idle window; trying again at the next check'),
            )
            .finally(() => this.metrics.walBytes.set(this.store.totalBytes())),
        );
      }
    }
    this.metrics.openWindows.set(this.store.all().reduce((n, ww) => n + ww.gens.length, 0));
    this.metrics.walBytes.set(this.store.totalBytes());
    return Promise.all(started).then(() => undefined);
  }

  /** Open windows, WAL bytes, recent flushes. */
  status(): AggregatorStatus {
    const windows: WindowStatus[] = [];
    for (const ww of this.store.all()) {
      for (const g of ww.gens) {
        windows.push({
          tenant: ww.key.tenant,
          shard: ww.key.shard,
          windowStart: ww.key.windowStart,
          generation: g.identity.generation,
          state: this.flusher.isFlushing(g) ? 'flushing' : g.sealed ? 'sealed' : 'open',
          walBytes: g.counters.bytes,
          samples: g.counters.samples,
          lastWriteMs: g.counters.lastWriteMs,
        });
      }
    }
    return {
      numShards: this.config.numShards,
      ownedShards: [...this.owned].sort((a, b) => a - b),
      windows,
      walBytes: this.store.totalBytes(),
      lastFlushes: [...this.flusher.recent],
      walSyncs: this.store.syncTotals().syncs,
      walRequests: this.store.syncTotals().requests,
    };
  }

  /**
   * Stops the timer and running flushes (their WALs are kept) and closes the WALs. A flush that
   * does not stop within `flushWaitMs` (blocked on a bucket that does not answer) is left behind.
   */
  async close(flushWaitMs?: number): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.metrics.walDiskSource = null;
    if (this.timer) clearInterval(this.timer);
    await this.flusher.close(flushWaitMs);
    await this.encoder.close();
    await this.store.close();
  }
}
