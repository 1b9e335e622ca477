/**
 * Runs a storage gateway: gRPC server (Read + grpc.health.v1, optionally over TLS/mTLS),
 * Prometheus /metrics, the tenant registry, the byte cache, and graceful shutdown.
 *
 * Tenancy: with `tenantsFile`, the registry is built from that file (its `defaultBucket` is the
 * bucket), authenticates every Read, resolves each tenant's bucket per call, and is reloaded when
 * the file (or a secret file it references) changes and on SIGHUP. Without it, every tenant id is
 * accepted without a token and every block is read from `bucket`.
 *
 * Shutdown: NOT_SERVING and new calls get UNAVAILABLE → in-flight calls finish (up to
 * shutdownGraceMs, then they are cancelled) → the byte cache is flushed and closed → the bucket
 * and the metrics server are closed.
 */
import type { Logger } from 'pino';
import { createLogger } from '../common/logger.js';
import { READ_SERVICE, readServiceDefinition } from '../api/services.js';
import { HealthState } from '../common/health.js';
import { drain, listen, listeningFields, openTenantRegistry, type Listening } from '../common/service-runtime.js';
import { BucketMetrics } from '../objstore/decorators.js';
import type { Bucket } from '../objstore/index.js';
import { retentionOf } from '../tenancy/config.js';
import type { TenantRegistry } from '../tenancy/tenants.js';
import type { BucketReader } from '../objstore/bucket.js';
import { blockKey } from '../format/key.js';
import { DeletionMarkWatcher } from '../tenancy/deletion-marks.js';
import { BlockDirectory, type BlockAddress } from './block-directory.js';
import { HotRangeCache } from './cache/hot.js';
import { LmdbCacheStore } from './cache/lmdb.js';
import { MemoryCacheStore } from './cache/memory.js';
import type { CacheStore } from './cache/store.js';
import type { GatewayConfig } from './config.js';
import { RangeFetcher } from './fetcher.js';
import { GatewayMetrics } from './metrics.js';
import { BlockReadExecutor } from './read.js';
import { DayIndexes } from './day-index.js';

/** After a failed load of a bucket's day-block index, the next is tried this much later. */
const DAY_INDEX_RETRY_MS = 60_000;
import { DayRouter } from './day.js';
import { readService, registryAuth, type AuthHook, type TenantBucket } from './service.js';
import { TenantBucketResolver } from './tenant-buckets.js';


/** Options of {@link startGateway}. */
export interface GatewayOptions {
  readonly config: GatewayConfig;
  readonly logger?: Logger;
  /** Replaces the tenant registry's authentication (tests). */
  readonly authorize?: AuthHook;
  /** Clock (ms since the epoch) for staleness, negative caching and cache recency. */
  readonly now?: () => number;
  /**
   * Without a tenants file: read from this bucket (for every tenant) instead of opening
   * `config.bucket`; it is not closed at shutdown.
   */
  readonly bucket?: BucketReader;
  /** Collect process metrics (CPU, memory) too; default true. */
  readonly defaultMetrics?: boolean;
}

/** A running gateway. */
export interface RunningGateway {
  readonly grpcPort: number;
  readonly metricsPort: number;
  readonly metrics: GatewayMetrics;
  readonly health: HealthState;
  readonly store: CacheStore;
  readonly directory: BlockDirectory;
  /** The tenant registry in force (authentication, buckets, reloads). */
  readonly tenants: TenantRegistry;
  /** The address of a block as the gateway resolves it now (tests and tools). */
  address(tenant: string, shard: number, windowStartMs: bigint): Promise<BlockAddress>;
  /**
   * Tells the gateway that the block of (`tenant`, `shard`, the window at `windowStartMs`) was
   * just written (a new block, or a replacement with late data): its cached state (a cached
   * block, or a cached "no block") is checked against the bucket now instead of after its
   * staleness bound. Used by `strata serve`, whose aggregator is in the same process.
   */
  blockWritten(tenant: string, shard: number, windowStartMs: bigint): Promise<void>;
  /** Graceful shutdown (see the module comment); idempotent. */
  shutdown(): Promise<void>;
}

/** How long {@link RunningGateway.blockWritten} waits for its check of the block, at most. */
const BLOCK_WRITTEN_CHECK_MS = 10_000;

/** Starts a gateway; it is SERVING when this resolves. */
export async function startGateway(opts: GatewayOptions): Promise<RunningGateway> {
  const { config } = opts;
  const logger = opts.logger ?? createLogger({ level: config.logLevel, name: 'gateway' });
  const now = opts.now ?? Date.now;
  const metrics = new GatewayMetrics({ defaultMetrics: opts.defaultMetrics ?? true });
  const health = new HealthState([READ_SERVICE]);
  const onEvict = (_blockId: string, bytes: number): void => {
    metrics.cacheEvictions.inc();
    metrics.cacheEvictedBytes.inc(bytes);
  };
  let lastWriteFailureLog = -Infinity;
  const byteCache: CacheStore =
    config.cacheType === 'memory'
      ? new MemoryCacheStore({ maxBytes: config.cacheMaxBytes, now, onEvict })
      : await LmdbCacheStore.open({
          dir: config.cacheDir!,
          maxBytes: config.cacheMaxBytes,
          now,
          onEvict,
          onReset: (reason) => logger.warn({ reason, dir: config.cacheDir }, 'cache reset'),
          maxPendingBytes: config.cachePendingMaxBytes,
          onWriteSkipped: () => metrics.cacheWritesSkipped.inc(),
          minFreeBytes: config.cacheMinFreeBytes,
          onLowDisk: (low, freeBytes) => {
            metrics.cacheDiskLow.set(low ? 1 : 0);
            if (low) logger.warn({ freeBytes, cacheMinFreeBytes: config.cacheMinFreeBytes, dir: config.cacheDir }, 'the cache disk has less than cacheMinFreeBytes free: reads are served and not cached until there is room');
            else logger.info({ freeBytes, dir: config.cacheDir }, 'the cache disk has room again: reads are cached');
          },
          onWriteFailed: (err) => {
            metrics.cacheWriteFailures.inc();
            const now = Date.now();
            if (now - lastWriteFailureLog >= 60_000) {
              lastWriteFailureLog = now;
              logger.warn({ err, dir: config.cacheDir }, 'cache writes fail (full disk?): reads are served from the bucket and not cached until they succeed');
            }
          },
          onMapReserveFailed: (reason) => logger.warn({ reason, dir: config.cacheDir }, 'the LMDB map is not reserved up front; it grows with the file, and its older mappings stay resident'),
        });
  // the hot-range layer wraps the byte cache: every write or drop through `store` reaches both
  const store = new HotRangeCache(byteCache, config.hotRangesMaxBytes);
  metrics.cacheSource = store;
  let registry: TenantRegistry;
  try {
    registry = await openTenantRegistry({
      role: 'gateway',
      config,
      logger,
      bucketMetrics: new BucketMetrics(metrics.registry),
      // the gateway only reads it
      given: opts.bucket as Bucket | undefined,
      onReload: (ok) => metrics.tenantReloads.inc({ result: ok ? 'ok' : 'refused' }),
    });
  } catch (err) {
    await store.close();
    throw err;
  }
  const tenantBuckets = new TenantBucketResolver(registry);
  const resolve = (tenant: string, windowStart: bigint): TenantBucket | Promise<TenantBucket> => tenantBuckets.resolve(tenant, windowStart);
  // tenants marked for deletion read as "no data" at once, as they will once their blocks are gone
  const deletionMarks = new DeletionMarkWatcher(() => registry.defaultBucket(), { pollMs: config.deletionMarksPollMs, logger });
  const fetcher = new RangeFetcher({ store, hot: config.hotRangesMaxBytes > 0 ? store : undefined, metrics, coalesce: { maxGapBytes: config.coalesceGapBytes, maxGetBytes: config.maxGetBytes } });
  const directory = new BlockDirectory(
    { store, fetcher, metrics, now, logger },
    {
      suffixBytes: config.suffixBytes,
      suffixMaxBytes: config.suffixMaxBytes,
      stalenessMs: config.stalenessMs,
      closedStalenessMs: config.closedStalenessMs,
      maxStaleMs: config.maxStaleMs,
      recheckTimeoutMs: config.recheckTimeoutMs,
      negativeTtlMs: config.negativeTtlMs,
      uploadGraceMs: config.uploadGraceMs,
      openBlocksMaxBytes: config.openBlocksMaxBytes,
      pagesMaxBytes: config.pagesMaxBytes,
    },
  );
  metrics.watchMemory('open_blocks', () => directory.memoryBytes.openBlocks);
  metrics.watchMemory('pages', () => directory.memoryBytes.pages);
  metrics.watchMemory('hot_ranges', () => store.hotBytes);
  if (byteCache instanceof LmdbCacheStore) metrics.watchMemory('cache_pending', () => byteCache.pendingBytes);
  const executor = new BlockReadExecutor(
    { directory, fetcher, metrics },
    { maxSamplesPerResponse: config.maxSamplesPerResponse, maxBytesPerResponse: config.maxBytesPerResponse, maxMessageBytes: config.maxMessageBytes },
  );
  const dayIndexes = new DayIndexes({ metrics, logger, now }, { refreshMs: config.dayIndexRefreshMs, retryMs: DAY_INDEX_RETRY_MS });
  const router = new DayRouter(
    { executor, directory, metrics, now, dayIndexes },
    {
      blockDurationMs: config.blockDurationMs,
      dayBlocksAfterMs: config.dayBlocksAfterMs,
      recheckMs: config.closedStalenessMs,
      maxMessageBytes: config.maxMessageBytes,
      maxSamplesPerResponse: config.maxSamplesPerResponse,
      maxBytesPerResponse: config.maxBytesPerResponse,
    },
  );
  let serving = false;
  const closeOwned = async (): Promise<void> => {
    try {
      await deletionMarks.close();
      // the byte cache is disposable: one that cannot be flushed or closed (a full disk) is
      // reported, and the shutdown goes on
      await store.close().catch((err: unknown) => logger.error({ err, dir: config.cacheDir }, 'closing the byte cache failed'));
    } finally {
      await registry.close();
    }
  };
  let listening: Listening;
  try {
    listening = await listen(config, {
      services: [
        {
          definition: readServiceDefinition(),
          implementation: readService({
            config,
            metrics,
            logger,
            authorize: opts.authorize ?? registryAuth(registry),
            resolve,
            tenantLabel: (t) => registry.label(t),
            executor: router,
            serving: () => serving,
            noData: (tenant, windowEnd) => {
              if (deletionMarks.markOf(tenant) !== undefined) return true;
              const retention = retentionOf(registry.config, tenant);
              return retention !== null && windowEnd + BigInt(retention) <= BigInt(Math.floor(now()));
            },
          }),
        },
      ],
      health,
      metrics: metrics.registry,
      serverOptions: {
        'grpc.max_send_message_length': config.maxMessageBytes + 1024,
        'grpc.max_receive_message_length': 16 * 1024 * 1024,
        // nothing reads channelz; with it on, grpc-js keeps per-call and per-message statistics
        'grpc.enable_channelz': 0,
      },
      maxMessageName: 'the largest Read request (16 MiB)',
      maxCallMs: config.requestTimeoutMs,
    });
  } catch (err) {
    await closeOwned();
    throw err;
  }
  await deletionMarks.start();
  serving = true;
  health.setAll('SERVING');
  logger.info(
    {
      ...listeningFields(listening, config, registry, opts.bucket?.name),
      cacheType: config.cacheType,
      cacheDir: config.cacheDir,
      cacheBytes: store.usedBytes,
      cacheBlocks: store.blockCount,
      hotRangesMaxBytes: config.hotRangesMaxBytes,
    },
    'gateway listening',
  );
  if (config.tenantsFile !== undefined) registry.watch(config.tenantsFile);

  let stopping: Promise<void> | null = null;
  const shutdown = (): Promise<void> =>
    (stopping ??= (async () => {
      logger.info('gateway draining');
      serving = false;
      await drain(listening, health, config.shutdownGraceMs, logger, 'in-flight reads');
      health.close();
      // no day-block index load outlives the buckets it reads
      dayIndexes.close();
      try {
        await closeOwned();
      } finally {
        await listening.metricsServer.close();
      }
      logger.info('gateway stopped');
    })());

  const address = async (tenant: string, shard: number, windowStartMs: bigint): Promise<BlockAddress> => {
    const { bucket, scope } = await resolve(tenant, windowStartMs);
    const windowEnd = windowStartMs + BigInt(config.blockDurationMs);
    return { tenant, shard, windowStart: windowStartMs, windowEnd, key: blockKey(tenant, shard, windowStartMs), bucket, scope };
  };

  const blockWritten = async (tenant: string, shard: number, windowStartMs: bigint): Promise<void> => {
    if (stopping) return;
    try {
      // bounded: the flush (and the Seal) waiting for it must not hang on a bucket that does not answer
      await directory.refreshAfter(await address(tenant, shard, windowStartMs), AbortSignal.timeout(BLOCK_WRITTEN_CHECK_MS));
    } catch (err) {
      // the next read checks it anyway, once its staleness bound has passed
      logger.warn({ err, tenant, shard, windowStartMs: String(windowStartMs) }, 'checking a block just written failed');
    }
  };

  return { grpcPort: listening.grpcPort, metricsPort: listening.metricsPort, metrics, health, store, directory, tenants: registry, address, blockWritten, shutdown };
}
