/**
 * Runs a storage gateway: gRPC server (Read + grpc.health.v1), Prometheus /metrics, the byte
 * cache, and graceful shutdown.
 *
 * Shutdown: NOT_SERVING and new calls get UNAVAILABLE → in-flight calls finish (up to
 * shutdownGraceMs, then they are cancelled) → the byte cache is flushed and closed → the bucket
 * and the metrics server are closed.
 */
import { Server, ServerCredentials, type ServiceDefinition } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { addHealthService, HealthState } from '../common/health.js';
import { createLogger } from '../common/logger.js';
import { startMetricsServer, type MetricsServer } from '../common/metrics-server.js';
import { READ_METHOD } from '../client/query-codec.js';
import type { BucketReader } from '../objstore/bucket.js';
import { openBucket } from '../objstore/index.js';
import { BlockDirectory } from './blocks.js';
import { LmdbCacheStore } from './cache/lmdb.js';
import { MemoryCacheStore } from './cache/memory.js';
import type { CacheStore } from './cache/store.js';
import type { GatewayConfig } from './config.js';
import { RangeFetcher } from './fetcher.js';
import { GatewayMetrics } from './metrics.js';
import { BlockReadExecutor } from './read.js';
import { allowAll, readService, type AuthHook } from './service.js';

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
  readonly authorize?: AuthHook;
  /** Clock (ms since the epoch) for staleness, negative caching and cache recency. */
  readonly now?: () => number;
  /** Read from this bucket instead of opening `config.bucket` (it is not closed at shutdown). */
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
  /** Graceful shutdown (see the module comment); idempotent. */
  shutdown(): Promise<void>;
}

function splitHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[(.*)\]$/, '$1'), port: Number(listen.slice(i + 1)) };
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
  const store: CacheStore =
    config.cacheType === 'memory'
      ? new MemoryCacheStore({ maxBytes: config.cacheMaxBytes, now, onEvict })
      : await LmdbCacheStore.open({
          dir: config.cacheDir!,
          maxBytes: config.cacheMaxBytes,
          now,
          onEvict,
          onReset: (reason) => logger.warn({ reason, dir: config.cacheDir }, 'cache reset'),
        });
  metrics.cacheSource = store;
  const bucket =
    opts.bucket ??
    (await openBucket(config.bucket, {
      s3Hooks: { onRequest: (e) => metrics.s3Requests.inc({ operation: e.operation, outcome: e.outcome }) },
    }));
  const fetcher = new RangeFetcher({ bucket, store, metrics, coalesce: { maxGapBytes: config.coalesceGapBytes, maxGetBytes: config.maxGetBytes } });
  const directory = new BlockDirectory(
    { bucket, store, fetcher, metrics, now, logger },
    {
      suffixBytes: config.suffixBytes,
      stalenessMs: config.stalenessMs,
      negativeTtlMs: config.negativeTtlMs,
      uploadGraceMs: config.uploadGraceMs,
      openBlocksMaxBytes: config.openBlocksMaxBytes,
      pagesMaxBytes: config.pagesMaxBytes,
    },
  );
  const executor = new BlockReadExecutor(
    { directory, fetcher, metrics },
    { maxSamplesPerResponse: config.maxSamplesPerResponse, maxBytesPerResponse: config.maxBytesPerResponse, maxMessageBytes: config.maxMessageBytes },
  );
  let serving = false;
  const server = new Server({
    'grpc.max_send_message_length': config.maxMessageBytes + 1024,
    'grpc.max_receive_message_length': 16 * 1024 * 1024,
  });
  server.addService(readServiceDefinition(), readService({ config, metrics, logger, authorize: opts.authorize ?? allowAll, executor, serving: () => serving }));
  addHealthService(server, health);
  const closeOwned = async (): Promise<void> => {
    await store.close();
    if (!opts.bucket) await (bucket as Partial<{ close(): Promise<void> }>).close?.();
  };
  let metricsServer: MetricsServer;
  let grpcPort: number;
  try {
    const { host, port } = splitHostPort(config.grpcListen);
    grpcPort = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const m = splitHostPort(config.metricsListen);
    metricsServer = await startMetricsServer(metrics.registry, m.host, m.port);
  } catch (err) {
    server.forceShutdown();
    await closeOwned();
    throw err;
  }
  serving = true;
  health.setAll('SERVING');
  logger.info(
    { grpcPort, metricsPort: metricsServer.port, bucket: bucket.name, cacheType: config.cacheType, cacheDir: config.cacheDir, cacheBytes: store.usedBytes, cacheBlocks: store.blockCount },
    'gateway listening',
  );

  let stopping: Promise<void> | null = null;
  const shutdown = (): Promise<void> =>
    (stopping ??= (async () => {
      logger.info('gateway draining');
      serving = false;
      health.setAll('NOT_SERVING');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          logger.warn({ graceMs: config.shutdownGraceMs }, 'in-flight reads did not finish in time; cancelling them');
          server.forceShutdown();
          resolve();
        }, config.shutdownGraceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      health.close();
      try {
        await closeOwned();
      } finally {
        await metricsServer.close();
      }
      logger.info('gateway stopped');
    })());

  return { grpcPort, metricsPort: metricsServer.port, metrics, health, store, directory, shutdown };
}
