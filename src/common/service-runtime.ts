/**
 * The runtime every service role shares (aggregator, gateway, lifecycle): the tenant registry and
 * its buckets, the gRPC server with health and connection hygiene, `/metrics`, and the drain. A
 * role composes these with its own engine; signals are handled by `exitOnSignals` (signals.ts) in
 * the role's command.
 *
 * Buckets: every bucket a role opens goes through {@link openRoleBucket}, so each one has the same
 * metrics ({@link BucketMetrics}: `strata_bucket_*`) whatever its provider; a bucket handed in by
 * the caller (tests, `strata serve`) is wrapped in `nonClosing`, so closing the registry never
 * closes it.
 */
import { stat } from 'node:fs/promises';
import { Server, type ServerOptions, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { Counter, Gauge, type Registry } from 'prom-client';
import { BucketMetrics, nonClosing, withMetrics } from '../objstore/decorators.js';
import { describeBucket, openBucket, type Bucket, type BucketConfig } from '../objstore/index.js';
import { loadTenantsFile, openTenantsConfig } from '../tenancy/config.js';
import { TenantRegistry } from '../tenancy/tenants.js';
import { ErrorCode, StrataError } from '../errors.js';
import { splitListen } from './config.js';
import { grpcServerOptions, guardHandshakes, guardReceives, withHandshakeTimeout, type ConnectionConfig } from './connections.js';
import { addHealthService, type HealthState } from './health.js';
import type { Logger } from './logger.js';
import { startMetricsServer, type MetricsServer } from './metrics-server.js';
import { drainServer } from './signals.js';
import { tolerantRequests } from './grpc-status.js';
import { serverCredentials, type ServerTlsConfig } from './tls.js';

/** Where a role's tenants and buckets come from. */
export interface TenancyConfig {
  readonly tenantsFile?: string | undefined;
  readonly bucket?: BucketConfig | undefined;
}

/** Options of {@link openTenantRegistry}. */
export interface TenantRegistrySetup {
  /** The role's name, for messages. */
  readonly role: string;
  readonly config: TenancyConfig;
  readonly logger: Logger;
  /** The role's bucket metrics (one per metrics registry). */
  readonly bucketMetrics: BucketMetrics;
  /**
   * Without a tenants file: use this bucket for every tenant instead of opening `config.bucket`.
   * It stays its owner's: closing the registry does not close it.
   */
  readonly given?: Bucket | undefined;
  /** Called after every reload of the tenants file (for metrics). */
  readonly onReload?: (ok: boolean) => void;
  /** See TenantRegistryOptions.maxPartitionClients (default MAX_PARTITION_CLIENTS). */
  readonly maxPartitionClients?: number;
}

/** A bucket of a role: `given` or a new client for `cfg`, with the role's bucket metrics. */
export async function openRoleBucket(cfg: BucketConfig, metrics: BucketMetrics, given?: Bucket): Promise<Bucket> {
  return withMetrics(given ? nonClosing(given) : await openBucket(cfg, { s3Hooks: metrics.s3Hooks }), metrics);
}

/**
 * The tenant registry of a role: from `config.tenantsFile`, or one default tenant config over
 * `config.bucket`. Every bucket it opens goes through {@link openRoleBucket}.
 * @throws TypeError when the config has neither, or `given` comes with a tenants file
 */
export async function openTenantRegistry(s: TenantRegistrySetup): Promise<TenantRegistry> {
  const { config, given } = s;
  let tenantsConfig;
  if (config.tenantsFile !== undefined) tenantsConfig = await loadTenantsFile(config.tenantsFile);
  else if (config.bucket !== undefined) tenantsConfig = openTenantsConfig(config.bucket);
  else throw new TypeError(`the ${s.role} config has neither bucket nor tenantsFile`);
  if (given && config.tenantsFile !== undefined) throw new TypeError('the `bucket` option is for runs without a tenants file');
  // buckets open on first use: a filesystem bucket whose path is a file would otherwise start a
  // role that serves and can never store or read a block
  const def = tenantsConfig.defaultBucket;
  if (!given && def.type === 'filesystem') {
    const st = await stat(def.path).catch(() => null);
    if (st !== null && !st.isDirectory()) throw new StrataError(ErrorCode.CONFIG, `the bucket directory ${def.path} (bucket.path, --bucket-dir) is not a directory`);
  }
  // one wrapper for the given bucket, however many times the registry asks for it
  const shared = given ? withMetrics(nonClosing(given), s.bucketMetrics) : null;
  return new TenantRegistry(tenantsConfig, {
    logger: s.logger,
    openBucket: (cfg) => (shared ? Promise.resolve(shared) : openRoleBucket(cfg, s.bucketMetrics)),
    ...(s.onReload ? { onReload: s.onReload } : {}),
    ...(s.maxPartitionClients !== undefined ? { maxPartitionClients: s.maxPartitionClients } : {}),
  });
}

/** What a role's config holds for {@link listen}. */
export interface ListenConfig extends ConnectionConfig {
  readonly grpcListen: string;
  readonly metricsListen: string;
  readonly tls?: ServerTlsConfig | undefined;
}

/** One gRPC service to serve. */
export interface ServedService {
  readonly definition: ServiceDefinition;
  readonly implementation: UntypedServiceImplementation;
}

/** A role's listening servers. */
export interface Listening {
  readonly server: Server;
  readonly grpcPort: number;
  readonly metricsServer: MetricsServer;
  readonly metricsPort: number;
}

/**
 * Starts a role's gRPC server (its services with malformed messages refused as INVALID_ARGUMENT,
 * grpc.health.v1, TLS when configured, connection hygiene) and its `/metrics` server. Nothing is
 * left listening when it throws.
 */
export async function listen(
  config: ListenConfig,
  opts: { services: readonly ServedService[]; health: HealthState; metrics: Registry; serverOptions?: ServerOptions; /** The config key of grpc.max_receive_message_length, for errors. */ maxMessageName?: string; /** The service's own bound on a call (its calls are reset a grace after it). */ maxCallMs?: number },
): Promise<Listening> {
  const creds = withHandshakeTimeout(serverCredentials(config.tls), config.handshakeTimeoutMs);
  const server = new Server({ ...grpcServerOptions(config), ...opts.serverOptions });
  for (const s of opts.services) server.addService(tolerantRequests(s.definition), s.implementation);
  const health = addHealthService(server, opts.health);
  // every path the server answers: any other is refused with UNIMPLEMENTED and its error code
  const methods = new Set([...opts.services.map((s) => s.definition), health].flatMap((d) => Object.values(d).map((m) => m.path)));
  try {
    const { host, port } = splitListen(config.grpcListen);
    const grpcPort = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, creds, (err, p) =>
        err ? reject(new StrataError(ErrorCode.CONFIG, `cannot listen on ${config.grpcListen} (grpcListen): ${/EADDRINUSE/.test(err.message) ? 'the address is in use by another process' : err.message}`, { cause: err })) : resolve(p),
      ),
    );
    guardHandshakes(server, config.handshakeTimeoutMs);
    const refused = new Counter({
      name: 'strata_grpc_calls_refused_total',
      help: 'Calls refused or reset by the transport bounds (reason: max_concurrent_calls, request_receive_timeout, message_too_large, malformed_request, compressed_request, unknown_method, call_deadline)',
      labelNames: ['reason'],
      registers: [opts.metrics],
    });
    const maxMessage = opts.serverOptions?.['grpc.max_receive_message_length'];
    const receive = guardReceives(server, config, (reason) => refused.inc({ reason }), typeof maxMessage === 'number' && maxMessage >= 0 ? { bytes: maxMessage, name: opts.maxMessageName ?? 'the largest request message' } : undefined, opts.maxCallMs, methods);
    new Gauge({ name: 'strata_grpc_calls_open', help: 'Calls open over every connection (bounded by maxConcurrentCalls)', registers: [opts.metrics], collect() { this.set(receive.calls()); } });
    new Gauge({ name: 'strata_grpc_calls_waiting', help: 'Calls whose request waits for room in maxReceivingBytes (paused by flow control)', registers: [opts.metrics], collect() { this.set(receive.waiting()); } });
    new Gauge({ name: 'strata_grpc_receiving_bytes', help: 'Declared bytes of request messages being received (bounded by maxReceivingBytes)', registers: [opts.metrics], collect() { this.set(receive.receivingBytes()); } });
    const m = splitListen(config.metricsListen);
    const metricsServer = await startMetricsServer(opts.metrics, m.host, m.port);
    return { server, grpcPort, metricsServer, metricsPort: metricsServer.port };
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
}

/** Log fields every role prints once listening. */
export function listeningFields(l: Listening, config: ListenConfig & TenancyConfig, registry: TenantRegistry, bucketName?: string): Record<string, unknown> {
  const tc = registry.config;
  return {
    grpcPort: l.grpcPort,
    metricsPort: l.metricsPort,
    tls: config.tls ? (config.tls.clientCaFile !== undefined ? 'mtls' : 'tls') : 'off',
    bucket: bucketName ?? describeBucket(tc.defaultBucket),
    tenantsFile: config.tenantsFile ?? null,
    tenants: tc.tenants.size,
    authRequired: tc.authRequired,
  };
}

/**
 * The first step of a role's shutdown: health goes NOT_SERVING, new calls are refused, and calls in
 * flight get `graceMs` to finish before they are cancelled (with a warning).
 */
export async function drain(l: Listening, health: HealthState, graceMs: number, logger: Logger, what: string, beforeCancel?: () => Promise<void>): Promise<void> {
  health.setAll('NOT_SERVING');
  await drainServer(l.server, graceMs, async () => {
    logger.warn({ graceMs }, `${what} did not finish in time; cancelling them`);
    await beforeCancel?.();
  });
}
