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
import { createHash } from 'node:crypto';
import { Server, type ServiceDefinition } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { addHealthService, HealthState } from '../common/health.js';
import { tolerantRequests } from '../common/status.js';
import { grpcServerOptions, guardHandshakes, withHandshakeTimeout } from '../common/connections.js';
import { createLogger } from '../common/logger.js';
import { drainServer } from '../common/signals.js';
import { startMetricsServer, type MetricsServer } from '../common/metrics-server.js';
import { serverCredentials } from '../common/tls.js';
import { READ_METHOD } from '../client/query-codec.js';
import type { BucketReader } from '../objstore/bucket.js';
import { blockKey } from '../format/key.js';
import { splitListen } from '../common/config.js';
import { describeBucket, openBucket, type Bucket, type BucketConfig } from '../objstore/index.js';
import { loadTenantsFile, openTenantsConfig, retentionOf } from '../tenancy/config.js';
import { DeletionMarkWatcher } from '../tenancy/deletion-marks.js';
import { TenantRegistry } from '../tenancy/tenants.js';
import { BlockDirectory, type BlockAddress } from './blocks.js';
import { HotRangeCache } from './cache/hot.js';
import { LmdbCacheStore } from './cache/lmdb.js';
import { MemoryCacheStore } from './cache/memory.js';
import type { CacheStore } from './cache/store.js';
import type { GatewayConfig } from './config.js';
import { RangeFetcher } from './fetcher.js';
import { GatewayMetrics } from './metrics.js';
import { BlockReadExecutor } from './read.js';
import { DayRouter } from './day.js';
import { readService, registryAuth, type AuthHook, type TenantBucket } from './service.js';

/** Full name of the read service (also its health service name). */
export const READ_SERVICE = 'strata.read.v1.Read';

/**
 * The Read service (proto/read.proto) with the read API's own codec as serializers
 * (src/client/query-codec.ts; a test checks it against the .proto).
 */
export function readServiceDefinition(): ServiceDefinition {
  return { Read: READ_METHOD } as ServiceDefinition;
}

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
  /** Graceful shutdown (see the module comment); idempotent. */
  shutdown(): Promise<void>;
}

/** Tenants whose bucket and scope {@link startGateway}'s resolver remembers at most. */
const RESOLVED_TENANTS_MAX = 10_000;

/** The cache scope of a bucket location: 32 hex digits (see blocks.ts and docs/format/cache.md). */
function scopeOf(location: string): string {
  return createHash('sha256').update(location).digest('hex').slice(0, 32);
}

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
  const byteCache: CacheStore =
    config.cacheType === 'memory'
      ? new MemoryCacheStore({ maxBytes: config.cacheMaxBytes, now, onEvict })
      : await LmdbCacheStore.open({
          dir: config.cacheDir!,
          maxBytes: config.cacheMaxBytes,
          now,
          onEvict,
          onReset: (reason) => logger.warn({ reason, dir: config.cacheDir }, 'cache reset'),
        });
  // the hot-range layer wraps the byte cache: every write or drop through `store` reaches both
  const store = new HotRangeCache(byteCache, config.hotRangesMaxBytes);
  metrics.cacheSource = store;
  let registry: TenantRegistry;
  try {
    let tenantsConfig;
    if (config.tenantsFile !== undefined) tenantsConfig = await loadTenantsFile(config.tenantsFile);
    else if (config.bucket !== undefined) tenantsConfig = openTenantsConfig(config.bucket);
    else throw new TypeError('the gateway config has neither bucket nor tenantsFile');
    const given = opts.bucket;
    if (given && config.tenantsFile !== undefined) throw new TypeError('the `bucket` option is for runs without a tenants file');
    // a given bucket is shared with its owner: the registry must not close it
    const shared: Bucket | null = given
      ? (new Proxy(given, {
          get(target, prop) {
            if (prop === 'close') return () => Promise.resolve();
            const v: unknown = Reflect.get(target, prop, target);
            return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
          },
        }) as unknown as Bucket)
      : null;
    registry = new TenantRegistry(tenantsConfig, {
      logger,
      openBucket: (cfg) =>
        shared ? Promise.resolve(shared) : openBucket(cfg, { s3Hooks: { onRequest: (e) => metrics.s3Requests.inc({ operation: e.operation, outcome: e.outcome }) } }),
      onReload: (ok) => metrics.tenantReloads.inc({ result: ok ? 'ok' : 'refused' }),
    });
  } catch (err) {
    await store.close();
    throw err;
  }
  // A tenant's bucket and scope only change when the registry's config does (a reload swaps the
  // config object), so they are remembered per config: a warm call resolves with one Map lookup
  // instead of a location string, a SHA-256 and a promise.
  let resolvedFor: unknown = null;
  const resolved = new Map<string, TenantBucket>();
  const resolve = (tenant: string): TenantBucket | Promise<TenantBucket> => {
    const cfg = registry.config;
    if (cfg !== resolvedFor) {
      resolved.clear();
      resolvedFor = cfg;
    }
    const known = resolved.get(tenant);
    if (known) return known;
    let scope: string;
    let bucket: Promise<BucketReader>;
    try {
      // location and client are read from the same config (no await in between)
      scope = scopeOf(registry.bucketLocation(tenant));
      bucket = registry.bucketFor(tenant);
    } catch (err) {
      return Promise.reject(err);
    }
    return bucket.then((b) => {
      const tb: TenantBucket = { bucket: b, scope };
      if (registry.config === cfg) {
        if (resolved.size >= RESOLVED_TENANTS_MAX) resolved.clear(); // without auth any tenant id comes in
        resolved.set(tenant, tb);
      }
      return tb;
    });
  };
  // tenants marked for deletion read as "no data" at once, as they will once their blocks are gone
  const deletionMarks = new DeletionMarkWatcher(() => registry.defaultBucket(), { pollMs: config.deletionMarksPollMs, logger });
  const fetcher = new RangeFetcher({ store, hot: config.hotRangesMaxBytes > 0 ? store : undefined, metrics, coalesce: { maxGapBytes: config.coalesceGapBytes, maxGetBytes: config.maxGetBytes } });
  const directory = new BlockDirectory(
    { store, fetcher, metrics, now, logger },
    {
      suffixBytes: config.suffixBytes,
      stalenessMs: config.stalenessMs,
      closedStalenessMs: config.closedStalenessMs,
      maxStaleMs: config.maxStaleMs,
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
  const router = new DayRouter(
    { executor, directory, metrics, now },
    {
      blockDurationMs: config.blockDurationMs,
      dayBlocksAfterMs: config.dayBlocksAfterMs,
      recheckMs: config.closedStalenessMs,
      maxMessageBytes: config.maxMessageBytes,
      maxSamplesPerResponse: config.maxSamplesPerResponse,
    },
  );
  let serving = false;
  const server = new Server({
    ...grpcServerOptions(config),
    'grpc.max_send_message_length': config.maxMessageBytes + 1024,
    'grpc.max_receive_message_length': 16 * 1024 * 1024,
    // nothing reads channelz; with it on, grpc-js keeps per-call and per-message statistics
    'grpc.enable_channelz': 0,
  });
  server.addService(
    tolerantRequests(readServiceDefinition()),
    readService({
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
  );
  addHealthService(server, health);
  const closeOwned = async (): Promise<void> => {
    try {
      await deletionMarks.close();
      await store.close();
    } finally {
      await registry.close();
    }
  };
  let metricsServer: MetricsServer;
  let grpcPort: number;
  try {
    const creds = withHandshakeTimeout(serverCredentials(config.tls), config.handshakeTimeoutMs);
    const { host, port } = splitListen(config.grpcListen);
    grpcPort = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, creds, (err, p) => (err ? reject(err) : resolve(p))),
    );
    guardHandshakes(server, config.handshakeTimeoutMs);
    const m = splitListen(config.metricsListen);
    metricsServer = await startMetricsServer(metrics.registry, m.host, m.port);
  } catch (err) {
    server.forceShutdown();
    await closeOwned();
    throw err;
  }
  await deletionMarks.start();
  serving = true;
  health.setAll('SERVING');
  const tc = registry.config;
  logger.info(
    {
      grpcPort,
      metricsPort: metricsServer.port,
      tls: config.tls ? (config.tls.clientCaFile !== undefined ? 'mtls' : 'tls') : 'off',
      bucket: opts.bucket ? opts.bucket.name : describeBucket(tc.defaultBucket),
      tenantsFile: config.tenantsFile ?? null,
      tenants: tc.tenants.size,
      authRequired: tc.authRequired,
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
      health.setAll('NOT_SERVING');
      await drainServer(server, config.shutdownGraceMs, () => logger.warn({ graceMs: config.shutdownGraceMs }, 'in-flight reads did not finish in time; cancelling them'));
      health.close();
      try {
        await closeOwned();
      } finally {
        await metricsServer.close();
      }
      logger.info('gateway stopped');
    })());

  const address = async (tenant: string, shard: number, windowStartMs: bigint): Promise<BlockAddress> => {
    const { bucket, scope } = await resolve(tenant);
    const windowEnd = windowStartMs + BigInt(config.blockDurationMs);
    return { tenant, shard, windowStart: windowStartMs, windowEnd, key: blockKey(tenant, shard, windowStartMs), bucket, scope };
  };

  return { grpcPort, metricsPort: metricsServer.port, metrics, health, store, directory, tenants: registry, address, shutdown };
}
