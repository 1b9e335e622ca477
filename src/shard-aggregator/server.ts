/**
 * Runs an aggregator: gRPC server (Writer + grpc.health.v1), Prometheus /metrics, WAL recovery,
 * and graceful shutdown. Health is NOT_SERVING while starting (WAL recovery) and draining.
 *
 * Shutdown: NOT_SERVING → stop accepting calls and let in-flight ones finish (up to
 * shutdownGraceMs, then cancel them) → stop flushes (their WALs stay) → close the WALs (pending
 * groups are written first) → close the bucket and the metrics server.
 */
import { Server, ServerCredentials, type ServiceDefinition } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { addHealthService, HealthState } from '../common/health.js';
import { createLogger } from '../common/logger.js';
import { startMetricsServer, type MetricsServer } from '../common/metrics-server.js';
import { loadProto } from '../common/proto.js';
import type { Bucket } from '../objstore/bucket.js';
import { openBucket } from '../objstore/index.js';
import { Aggregator } from './aggregator.js';
import type { AggregatorConfig } from './config.js';
import { AggregatorMetrics } from './metrics.js';
import { allowAll, writerService, type AuthHook, type ServerState } from './service.js';

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
  readonly authorize?: AuthHook;
  readonly now?: () => number;
  /** Use this bucket instead of opening `config.bucket` (it is not closed at shutdown). */
  readonly bucket?: Bucket;
}

/** A running aggregator. */
export interface RunningAggregator {
  readonly grpcPort: number;
  readonly metricsPort: number;
  readonly metrics: AggregatorMetrics;
  readonly health: HealthState;
  /** The engine (null until WAL recovery finished). */
  aggregator(): Aggregator | null;
  /** Resolves once the WAL is recovered and the server is SERVING. */
  readonly ready: Promise<void>;
  /** Graceful shutdown (see the module comment); idempotent. */
  shutdown(): Promise<void>;
}

function splitHostPort(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[(.*)\]$/, '$1'), port: Number(listen.slice(i + 1)) };
}

/**
 * Starts the servers right away (health says NOT_SERVING, writes get UNAVAILABLE), then recovers
 * the WAL in the background; `ready` resolves when it is SERVING.
 */
export async function startAggregatorServer(opts: AggregatorServerOptions): Promise<RunningAggregator> {
  const { config } = opts;
  const logger = opts.logger ?? createLogger({ level: config.logLevel, name: 'aggregator' });
  const metrics = new AggregatorMetrics({ defaultMetrics: true });
  const health = new HealthState([WRITER_SERVICE]);
  let state: ServerState = 'starting';
  let agg: Aggregator | null = null;

  const bucket =
    opts.bucket ??
    (await openBucket(config.bucket, {
      s3Hooks: {
        onRetry: (e) => metrics.uploadRetries.inc({ operation: e.operation }),
        onRequest: (e) => {
          if (e.outcome === 'error' && e.httpStatus !== 404) metrics.uploadErrors.inc({ operation: e.operation });
        },
      },
    }));

  const server = new Server({
    'grpc.max_receive_message_length': config.maxRequestBytes,
    'grpc.max_send_message_length': 16 * 1024 * 1024,
  });
  server.addService(
    writerServiceDefinition(),
    writerService({ config, metrics, logger, authorize: opts.authorize ?? allowAll, aggregator: () => agg, state: () => state }),
  );
  addHealthService(server, health);
  const { host, port } = splitHostPort(config.grpcListen);
  const grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  let metricsServer: MetricsServer;
  try {
    const m = splitHostPort(config.metricsListen);
    metricsServer = await startMetricsServer(metrics.registry, m.host, m.port);
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
  logger.info({ grpcPort, metricsPort: metricsServer.port, walDir: config.walDir, bucket: bucket.name, numShards: config.numShards }, 'aggregator listening; recovering wal');

  let shuttingDown: Promise<void> | null = null;
  const ready = (async () => {
    const t0 = performance.now();
    const a = await Aggregator.open({ config, bucket, logger, metrics, ...(opts.now ? { now: opts.now } : {}) });
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
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          logger.warn({ graceMs: config.shutdownGraceMs }, 'in-flight requests did not finish in time; cancelling them');
          server.forceShutdown();
          resolve();
        }, config.shutdownGraceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      await ready.catch(() => undefined);
      if (agg) await agg.close();
      health.close();
      await metricsServer.close();
      if (!opts.bucket) await bucket.close();
      logger.info('aggregator stopped');
    })());

  return { grpcPort, metricsPort: metricsServer.port, metrics, health, aggregator: () => agg, ready, shutdown };
}
