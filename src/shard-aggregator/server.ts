/**
 * Runs an aggregator: gRPC server (Writer + grpc.health.v1, optionally over TLS/mTLS), Prometheus
 * /metrics, the tenant registry, WAL recovery, and graceful shutdown. Health is NOT_SERVING while
 * starting (WAL recovery) and draining.
 *
 * Tenancy: with `tenantsFile`, the registry is built from that file (its `defaultBucket` is the
 * bucket), authenticates Write/Seal/Status, resolves each tenant's bucket at every flush attempt,
 * and is reloaded when the file (or a secret file it references) changes and on SIGHUP; after a
 * successful reload, flushes waiting for a retry start at once. Without it, every tenant id is
 * accepted without a token and everything goes to `bucket`.
 *
 * Shutdown: NOT_SERVING → stop accepting calls and let in-flight ones finish (up to
 * shutdownGraceMs, then cancel them) → stop flushes (their WALs stay) → close the WALs (pending
 * groups are written first) → close the bucket clients and the metrics server.
 */
import type { Logger } from 'pino';
import { createLogger } from '../common/logger.js';
import { WRITER_SERVICE, writerServiceDefinition } from '../api/services.js';
import { HealthState } from '../common/health.js';
import { drain, listen, listeningFields, openTenantRegistry, type Listening } from '../common/service-runtime.js';
import { BucketMetrics } from '../objstore/decorators.js';
import type { Bucket } from '../objstore/index.js';
import { retentionOf } from '../tenancy/config.js';
import type { TenantRegistry } from '../tenancy/tenants.js';
import { Aggregator } from './aggregator.js';
import type { AggregatorConfig } from './config.js';
import type { FlushedBlock, TenantBuckets } from './flush-scheduler.js';
import { AggregatorMetrics } from './metrics.js';
import { registryAuth, writerService, type AuthHook, type ServerState } from './service.js';
import { DeletionMarkWatcher } from '../tenancy/deletion-marks.js';
import { mallocEnvWarning } from './malloc-env.js';


/** Options of {@link startAggregatorServer}. */
export interface AggregatorServerOptions {
  readonly config: AggregatorConfig;
  readonly logger?: Logger;
  /** Replaces the tenant registry's authentication (tests). */
  readonly authorize?: AuthHook;
  readonly now?: () => number;
  /**
   * Use this registry instead of building one from `config.tenantsFile` / `config.bucket` (it is
   * neither watched nor closed by the server).
   */
  readonly tenants?: TenantRegistry;
  /**
   * Without a tenants file: use this bucket (for every tenant) instead of opening `config.bucket`;
   * it is not closed at shutdown.
   */
  readonly bucket?: Bucket;
  /**
   * Called with every block written: `strata serve` tells its gateway, so that a block replaced
   * or added in a window the gateway already read is read anew at once.
   */
  readonly onFlushed?: (block: FlushedBlock) => Promise<void> | void;
}

/** A running aggregator. */
export interface RunningAggregator {
  readonly grpcPort: number;
  readonly metricsPort: number;
  readonly metrics: AggregatorMetrics;
  readonly health: HealthState;
  /** The tenant registry in force (authentication, buckets, reloads). */
  readonly tenants: TenantRegistry;
  /** The tenant deletion marks as this aggregator last read them (re-read every deletionMarksPollMs). */
  readonly deletionMarks: DeletionMarkWatcher;
  /** The engine (null until WAL recovery finished). */
  aggregator(): Aggregator | null;
  /** Resolves once the WAL is recovered and the server is SERVING. */
  readonly ready: Promise<void>;
  /** Graceful shutdown (see the module comment); idempotent. */
  shutdown(): Promise<void>;
}

/** How long the refusals of waiting writes get to reach their clients before the streams are cut. */
const REFUSALS_SEND_MS = 200;

/**
 * Starts the servers right away (health says NOT_SERVING, writes get UNAVAILABLE), then recovers
 * the WAL in the background; `ready` resolves when it is SERVING.
 */
export async function startAggregatorServer(opts: AggregatorServerOptions): Promise<RunningAggregator> {
  const { config } = opts;
  const logger = opts.logger ?? createLogger({ level: config.logLevel, name: 'aggregator' });
  const metrics = new AggregatorMetrics({ defaultMetrics: true });
  metrics.walQuotaBytes.set(config.walQuotaBytes);
  metrics.walMinFreeBytes.set(config.walMinFreeBytes);
  const health = new HealthState([WRITER_SERVICE]);
  let state: ServerState = 'starting';
  let agg: Aggregator | null = null;

  const bucketMetrics = new BucketMetrics(metrics.registry);
  const registry =
    opts.tenants ??
    (await openTenantRegistry({
      role: 'aggregator',
      config,
      logger,
      bucketMetrics,
      given: opts.bucket,
      onReload: (ok) => metrics.tenantReloads.inc({ result: ok ? 'ok' : 'refused' }),
    }));
  const ownRegistry = opts.tenants === undefined;
  const buckets: TenantBuckets = {
    acquire: (tenant, windowStart) => registry.acquireBucket(tenant, windowStart),
    ownBucket: (tenant) => {
      const t = registry.config.tenants.get(tenant);
      return t !== undefined && t.bucket !== null;
    },
  };
  const tenantLabel = (tenant: string): string => registry.label(tenant);
  const deletionMarks = new DeletionMarkWatcher(() => registry.defaultBucket(), { pollMs: config.deletionMarksPollMs, logger });
  let listening: Listening;
  try {
    listening = await listen(config, {
      services: [
        {
          definition: writerServiceDefinition(),
          implementation: writerService({
            config,
            metrics,
            logger,
            authorize: opts.authorize ?? registryAuth(registry),
            tenantLabel,
            aggregator: () => agg,
            state: () => state,
            refusal: (tenant) => deletionMarks.refusal(tenant),
          }),
        },
      ],
      health,
      metrics: metrics.registry,
      serverOptions: { 'grpc.max_receive_message_length': config.maxRequestBytes, 'grpc.max_send_message_length': 16 * 1024 * 1024 },
      maxMessageName: 'maxRequestBytes',
    });
  } catch (err) {
    if (ownRegistry) await registry.close();
    throw err;
  }
  logger.info({ ...listeningFields(listening, config, registry), walDir: config.walDir, numShards: config.numShards }, 'aggregator listening; recovering wal');
  const malloc = process.platform === 'linux' ? mallocEnvWarning(process.env) : null;
  if (malloc !== null) logger.warn(malloc);
  if (ownRegistry && config.tenantsFile !== undefined) registry.watch(config.tenantsFile);
  // the first read of the marks finishes before the aggregator serves (a failed read is logged and retried)
  const marksRead = deletionMarks.start();
  const stopRetryOnSwap = registry.onSwap(() => {
    const n = agg?.flusher.retryWaiting() ?? 0;
    if (n > 0) logger.info({ flushes: n }, 'tenants config changed; retrying failed flushes now');
  });

  let shuttingDown: Promise<void> | null = null;
  const ready = (async () => {
    const t0 = performance.now();
    const [a] = await Promise.all([Aggregator.open({ config, buckets, tenantLabel, logger, metrics, retentionOf: (t) => retentionOf(registry.config, t), ...(opts.now ? { now: opts.now } : {}), ...(opts.onFlushed ? { onFlushed: opts.onFlushed } : {}), markedForDeletion: (t) => deletionMarks.markOf(t) !== undefined }), marksRead]);
    if (state !== 'starting') {
      await a.close();
      return;
    }
    agg = a;
    state = 'serving';
    health.setAll('SERVING');
    logger.info({ ownedShards: [...a.owned].length, windows: a.store.all().length, seconds: (performance.now() - t0) / 1000 }, 'aggregator serving');
  })();
  ready.catch((err: unknown) => logger.fatal({ err }, 'cannot recover the wal'));

  const shutdown = (): Promise<void> =>
    (shuttingDown ??= (async () => {
      logger.info('aggregator draining');
      state = 'draining';
      // writes still waiting for a WAL at the end of the grace are answered UNAVAILABLE (retried by
      // clients) before the streams are cut: a cut stream reads as INTERNAL, which is not retried
      await drain(listening, health, config.shutdownGraceMs, logger, 'in-flight requests', async () => {
        if (agg?.refuseWaitingWrites()) await new Promise((r) => setTimeout(r, REFUSALS_SEND_MS));
      });
      await ready.catch(() => undefined);
      stopRetryOnSwap();
      await deletionMarks.close();
      if (agg) await agg.close();
      health.close();
      await listening.metricsServer.close();
      if (ownRegistry) await registry.close();
      logger.info('aggregator stopped');
    })());

  return { grpcPort: listening.grpcPort, metricsPort: listening.metricsPort, metrics, health, tenants: registry, deletionMarks, aggregator: () => agg, ready, shutdown };
}
