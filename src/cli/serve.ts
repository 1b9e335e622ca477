/**
 * `strata serve`: the all-in-one process on the embedded default. One shard aggregator owning
 * every shard and one storage gateway share a filesystem bucket under `<data-dir>/bucket`; the WAL
 * lives in `<data-dir>/wal` and the gateway's LMDB cache in `<data-dir>/cache`. No other server is
 * needed. The same typed configs as `strata aggregator` / `strata gateway` are built underneath,
 * so every option of theirs can be set with `--aggregator-set` / `--gateway-set key=value`.
 *
 * With `--tenants-file`, both services get that file (`tenantsFile`) instead of the bucket: its
 * defaultBucket and per-tenant buckets are used, calls need the tenants' tokens, and each service
 * watches and reloads it on its own.
 */
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { createLogger, routeLibraryOutput } from '../common/logger.js';
import { exitOnSignals, SHUTDOWN_HARD_LIMIT_EXTRA_MS } from '../common/signals.js';
import { startService } from './service-command.js';
import { StrataError } from '../errors.js';
import { openBucket } from '../objstore/index.js';
import { parseAggregatorConfig, aggregatorConfigLayers, type AggregatorConfig } from '../shard-aggregator/config.js';
import { startAggregatorServer } from '../shard-aggregator/server.js';
import { parseGatewayConfig, gatewayConfigLayers, type GatewayConfig } from '../storage-gateway/config.js';
import { startGateway, type RunningGateway } from '../storage-gateway/gateway.js';

export interface ServeFlags {
  dataDir: string;
  numShards: string;
  writeListen: string;
  readListen: string;
  writeMetricsListen: string;
  readMetricsListen: string;
  logLevel: string;
  tenantsFile?: string;
  aggregatorSet: string[];
  gatewaySet: string[];
}

/** The two services' configs for an all-in-one process (exported for tests). */
export function serveConfigs(flags: ServeFlags): { aggregator: AggregatorConfig; gateway: GatewayConfig } {
  const dir = resolve(flags.dataDir);
  const numShards = Number(flags.numShards);
  const where: Record<string, unknown> =
    flags.tenantsFile !== undefined ? { tenantsFile: resolve(flags.tenantsFile) } : { bucket: { type: 'filesystem', path: join(dir, 'bucket') } };
  const aggregator = parseAggregatorConfig(
    {
      grpcListen: flags.writeListen,
      metricsListen: flags.writeMetricsListen,
      walDir: join(dir, 'wal'),
      ...where,
      numShards,
      shards: Array.from({ length: Number.isInteger(numShards) && numShards > 0 ? numShards : 0 }, (_, i) => i),
      logLevel: flags.logLevel,
    },
    aggregatorConfigLayers.parseSet(flags.aggregatorSet, '--aggregator-set'),
  );
  const gateway = parseGatewayConfig(
    {
      grpcListen: flags.readListen,
      metricsListen: flags.readMetricsListen,
      ...where,
      cacheDir: join(dir, 'cache'),
      logLevel: flags.logLevel,
    },
    gatewayConfigLayers.parseSet(flags.gatewaySet, '--gateway-set'),
  );
  return { aggregator, gateway };
}

async function serve(flags: ServeFlags): Promise<void> {
  let cfg: ReturnType<typeof serveConfigs>;
  try {
    cfg = serveConfigs(flags);
  } catch (err) {
    if (!(err instanceof StrataError)) throw err;
    process.stderr.write(`strata serve: ${err.message}\n`);
    process.exitCode = 2;
    return;
  }
  const logger = createLogger({ level: cfg.aggregator.logLevel, name: 'serve' });
  routeLibraryOutput(logger);
  // without a tenants file, both services share one bucket client; with one, each has its registry
  const starting = startService('serve', logger, async () => {
    const shared = cfg.aggregator.bucket !== undefined ? await openBucket(cfg.aggregator.bucket) : null;
    const bucket = shared ? { bucket: shared } : {};
    // a block the aggregator writes (late data replacing a block, or a window the gateway read
    // as empty) is read anew by the gateway at once: Seal's blocks are readable once it returns
    let gatewayRef: RunningGateway | null = null;
    const aggregator = await startAggregatorServer({
      config: cfg.aggregator,
      logger: logger.child({ role: 'aggregator' }),
      ...bucket,
      onFlushed: (b) => gatewayRef?.blockWritten(b.tenant, b.shard, b.windowStart),
    });
    const gateway = await startGateway({ config: cfg.gateway, logger: logger.child({ role: 'gateway' }), ...bucket });
    gatewayRef = gateway;
    await aggregator.ready;
    return { shared, aggregator, gateway };
  });
  // installed before the start finishes: a signal during a long start (WAL recovery) waits for it
  // and shuts down cleanly
  exitOnSignals(
    logger,
    async () => {
      const s = await starting;
      if (s) await Promise.all([s.aggregator.shutdown(), s.gateway.shutdown()]).then(() => s.shared?.close());
    },
    { hardLimitMs: Math.max(cfg.aggregator.shutdownGraceMs, cfg.gateway.shutdownGraceMs) + SHUTDOWN_HARD_LIMIT_EXTRA_MS },
  );
  const started = await starting;
  // the service that did start (the aggregator, when the gateway cannot listen) must not keep the process alive
  if (started === null) process.exit(process.exitCode ?? 1);
  const { shared, aggregator, gateway } = started;
  logger.info(
    {
      write: `${cfg.aggregator.grpcListen.replace(/:\d+$/, '')}:${aggregator.grpcPort}`,
      read: `${cfg.gateway.grpcListen.replace(/:\d+$/, '')}:${gateway.grpcPort}`,
      metrics: [aggregator.metricsPort, gateway.metricsPort],
      bucket: shared ? shared.name : null,
      tenantsFile: cfg.aggregator.tenantsFile ?? null,
      numShards: cfg.aggregator.numShards,
    },
    'strata is serving',
  );
}

const collect = (v: string, acc: string[]) => [...acc, v];

/** Registers `strata serve`. */
export function registerServeCommands(program: Command): void {
  program
    .command('serve')
    .description('run an aggregator (all shards) and a gateway in one process on a local filesystem bucket')
    .option('--data-dir <dir>', 'bucket, WAL and cache go under this directory', './data')
    .option('--num-shards <n>', 'number of shards', '16')
    .option('--write-listen <host:port>', 'gRPC write API', '127.0.0.1:7401')
    .option('--read-listen <host:port>', 'gRPC read API', '127.0.0.1:7402')
    .option('--write-metrics-listen <host:port>', "aggregator's /metrics", '127.0.0.1:9401')
    .option('--read-metrics-listen <host:port>', "gateway's /metrics", '127.0.0.1:9402')
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent', 'info')
    .option('--tenants-file <path>', "tenants file (YAML or JSON) for both services: its defaultBucket replaces <data-dir>/bucket, and calls need the tenants' tokens")
    .option('--aggregator-set <key=value>', 'any aggregator option (repeatable)', collect, [] as string[])
    .option('--gateway-set <key=value>', 'any gateway option (repeatable)', collect, [] as string[])
    .action(serve);
}
