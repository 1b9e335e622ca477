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
import { Server, type ServiceDefinition } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { addHealthService, HealthState } from '../common/health.js';
import { tolerantRequests } from '../common/status.js';
import { grpcServerOptions, guardHandshakes, withHandshakeTimeout } from '../common/connections.js';
import { createLogger } from '../common/logger.js';
import { drainServer } from '../common/signals.js';
import { startMetricsServer, type MetricsServer } from '../common/metrics-server.js';
import { loadProto } from '../common/proto.js';
import { serverCredentials } from '../common/tls.js';
import { splitListen } from '../common/config.js';
import { describeBucket, openBucket, type Bucket, type BucketConfig, type S3Hooks } from '../objstore/index.js';
import { loadTenantsFile, openTenantsConfig, retentionOf } from '../tenancy/config.js';
import { TenantRegistry } from '../tenancy/tenants.js';
import { Aggregator } from './aggregator.js';
import type { AggregatorConfig } from './config.js';
import type { TenantBuckets } from './flush-scheduler.js';
import { AggregatorMetrics } from './metrics.js';
import { registryAuth, writerService, type AuthHook, type ServerState } from './service.js';
import { DeletionMarkWatcher } from '../tenancy/deletion-marks.js';

/** Full name of the write service (also its health service name). */
export const WRITER_SERVICE = 'strata.write.v1.Writer';

/** Loads the Writer service definition from proto/write.proto. */
export function writerServiceDefinition(): ServiceDefinition {
  const pkg = loadProto('write.proto') as unknown as { strata: { write: { v1: { Writer: { service: ServiceDefinition } } } } };
  return pkg.strata.write.v1.Writer.service;
}

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

/**
 * Starts the servers right away (health says NOT_SERVING, writes get UNAVAILABLE), then recovers
 * the WAL in the background; `ready` resolves when it is SERVING.
 */
export async function startAggregatorServer(opts: AggregatorServerOptions): Promise<RunningAggregator> {
  const { config } = opts;
  const logger = opts.logger ?? createLogger({ level: config.logLevel, name: 'aggregator' });
  const metrics = new AggregatorMetrics({ defaultMetrics: true });
  metrics.walQuotaBytes.set(config.walQuotaBytes);
  const health = new HealthState([WRITER_SERVICE]);
  let state: ServerState = 'starting';
  let agg: Aggregator | null = null;

  const s3Hooks: S3Hooks = {
    onRetry: (e) => metrics.uploadRetries.inc({ operation: e.operation }),
    onRequest: (e) => {
      if (e.outcome === 'error' && e.httpStatus !== 404) metrics.uploadErrors.inc({ operation: e.operation });
    },
  };
  let registry: TenantRegistry;
  if (opts.tenants) registry = opts.tenants;
  else {
    let tenantsConfig;
    if (config.tenantsFile !== undefined) tenantsConfig = await loadTenantsFile(config.tenantsFile);
    else if (config.bucket !== undefined) tenantsConfig = openTenantsConfig(config.bucket);
    else throw new TypeError('the aggregator config has neither bucket nor tenantsFile');
    const given = opts.bucket;
    if (given && config.tenantsFile !== undefined) throw new TypeError('the `bucket` option is for runs without a tenants file');
    // a given bucket is shared with its owner: the registry must not close it
    const shared: Bucket | null = given
      ? new Proxy(given, {
          get(target, prop) {
            if (prop === 'close') return () => Promise.resolve();
            const v: unknown = Reflect.get(target, prop, target);
            return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
          },
        })
      : null;
    registry = new TenantRegistry(tenantsConfig, {
      logger,
      openBucket: (cfg) => (shared ? Promise.resolve(shared) : openBucket(cfg, { s3Hooks })),
      onReload: (ok) => metrics.tenantReloads.inc({ result: ok ? 'ok' : 'refused' }),
    });
  }
  const ownRegistry = opts.tenants === undefined;
  const buckets: TenantBuckets = { acquire: (tenant) => registry.acquireBucket(tenant) };
  const tenantLabel = (tenant: string): string => registry.label(tenant);
  const deletionMarks = new DeletionMarkWatcher(() => registry.defaultBucket(), { pollMs: config.deletionMarksPollMs, logger });
  let creds;
  try {
    creds = withHandshakeTimeout(serverCredentials(config.tls), config.handshakeTimeoutMs);
  } catch (err) {
    if (ownRegistry) await registry.close();
    throw err;
  }

  const server = new Server({
    ...grpcServerOptions(config),
    'grpc.max_receive_message_length': config.maxRequestBytes,
    'grpc.max_send_message_length': 16 * 1024 * 1024,
  });
  server.addService(
    tolerantRequests(writerServiceDefinition()),
    writerService({
      config,
      metrics,
      logger,
      authorize: opts.authorize ?? registryAuth(registry),
      tenantLabel,
      aggregator: () => agg,
      state: () => state,
      refusal: (tenant) => deletionMarks.refusal(tenant),
    }),
  );
  addHealthService(server, health);
  const { host, port } = splitListen(config.grpcListen);
  let grpcPort: number;
  let metricsServer: MetricsServer;
  try {
    grpcPort = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, creds, (err, p) => (err ? reject(err) : resolve(p))),
    );
    guardHandshakes(server, config.handshakeTimeoutMs);
    try {
      const m = splitListen(config.metricsListen);
      metricsServer = await startMetricsServer(metrics.registry, m.host, m.port);
    } catch (err) {
      server.forceShutdown();
      throw err;
    }
  } catch (err) {
    if (ownRegistry) await registry.close();
    throw err;
  }
  const tc = registry.config;
  logger.info(
    {
      grpcPort,
      metricsPort: metricsServer.port,
      tls: config.tls ? (config.tls.clientCaFile !== undefined ? 'mtls' : 'tls') : 'off',
      walDir: config.walDir,
      bucket: describeBucket(tc.defaultBucket),
      tenantsFile: config.tenantsFile ?? null,
      tenants: tc.tenants.size,
      authRequired: tc.authRequired,
      numShards: config.numShards,
    },
    'aggregator listening; recovering wal',
  );
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
    const [a] = await Promise.all([Aggregator.open({ config, buckets, tenantLabel, logger, metrics, retentionOf: (t) => retentionOf(registry.config, t), ...(opts.now ? { now: opts.now } : {}) }), marksRead]);
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
      health.setAll('NOT_SERVING');
      await drainServer(server, config.shutdownGraceMs, () => logger.warn({ graceMs: config.shutdownGraceMs }, 'in-flight requests did not finish in time; cancelling them'));
      await ready.catch(() => undefined);
      stopRetryOnSwap();
      await deletionMarks.close();
      if (agg) await agg.close();
      health.close();
      await metricsServer.close();
      if (ownRegistry) await registry.close();
      logger.info('aggregator stopped');
    })());

  return { grpcPort, metricsPort: metricsServer.port, metrics, health, tenants: registry, deletionMarks, aggregator: () => agg, ready, shutdown };
}
