/**
 * What `strata aggregator` and `strata gateway` have in common: the options shared by every
 * service (config file, listen addresses, bucket, tenants file, TLS, log level, `--set`,
 * `--print-config`), loading the validated config (a config error exits with status 2,
 * `--print-config` prints the config with its credentials hidden) and starting the service (a
 * config problem found while starting, such as an unreadable TLS file, also exits with 2; any
 * other failure with 1).
 */
import { serverCredentials, type ServerTlsConfig } from '../common/tls.js';
import type { Command } from 'commander';
import { redactSecrets } from '../common/config.js';
import { createLogger, routeLibraryOutput, type Logger } from '../common/logger.js';
import { exitOnSignals, SHUTDOWN_HARD_LIMIT_EXTRA_MS } from '../common/signals.js';
import { ErrorCode, StrataError } from '../errors.js';
import { loadTenantsFile } from '../tenancy/config.js';

/** Adds the command of a service with the options every service has, then `own` adds its own. */
export function serviceCommand(program: Command, name: string, spec: { description: string; envConfigFile: string; bucketDirHelp: string }, own: (cmd: Command) => Command): Command {
  const cmd = program
    .command(name)
    .description(spec.description)
    .option('-c, --config <file>', `JSON config file (or ${spec.envConfigFile})`)
    .option('--listen <host:port>', 'gRPC listen address (grpcListen)')
    .option('--metrics-listen <host:port>', 'Prometheus /metrics listen address (metricsListen)');
  return addServiceOptions(own(cmd), spec.bucketDirHelp);
}

/** Adds the options every service command has after the config file and listen addresses. */
function addServiceOptions(cmd: Command, bucketDirHelp: string): Command {
  return cmd
    .option('--bucket-dir <dir>', bucketDirHelp)
    .option('--tenants-file <file>', 'tenants file: default bucket, per-tenant buckets, tokens, limits (tenantsFile)')
    .option('--tls-cert <file>', 'serve gRPC over TLS with this PEM certificate chain (tls.certFile)')
    .option('--tls-key <file>', 'PEM private key of --tls-cert (tls.keyFile)')
    .option('--tls-client-ca <file>', 'require client certificates signed by this PEM CA: mTLS (tls.clientCaFile)')
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent')
    .option('--set <key=value>', 'set any config option (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--print-config', 'print the validated config (secrets hidden) and exit');
}

/**
 * Builds the config of service `name`, and validates the tenants file it names (every bucket in
 * it range-checked, secrets resolvable), so `--print-config` refuses what the service would.
 * Returns null when the command is done: the config was invalid (message on stderr, exit status 2)
 * or `--print-config` printed it.
 */
export async function loadServiceConfig<C extends { readonly tenantsFile?: string | undefined }>(
  name: string,
  flags: { readonly printConfig?: boolean },
  build: () => Promise<C>,
): Promise<C | null> {
  let config: C;
  try {
    config = await build();
    if (config.tenantsFile !== undefined) await loadTenantsFile(config.tenantsFile);
    // the TLS files are read and matched as the service reads them at start
    const tls = (config as { readonly tls?: ServerTlsConfig }).tls;
    if (tls !== undefined) serverCredentials(tls);
  } catch (err) {
    if (!(err instanceof StrataError)) throw err;
    process.stderr.write(`strata ${name}: ${err.message}\n`);
    process.exitCode = 2;
    return null;
  }
  if (flags.printConfig) {
    process.stdout.write(`${JSON.stringify(redactSecrets(config), null, 2)}\n`);
    return null;
  }
  return config;
}

/**
 * Starts service `name`. Returns null when it cannot start: a CONFIG error (message on stderr,
 * exit status 2) or any other failure (logged, exit status 1).
 */
export async function startService<R>(name: string, logger: Logger, start: () => Promise<R>): Promise<R | null> {
  try {
    return await start();
  } catch (err) {
    if (err instanceof StrataError && err.code === ErrorCode.CONFIG) {
      logger.fatal({ err: err.message }, `${name} cannot start`);
      process.stderr.write(`strata ${name}: ${err.message}\n`);
      process.exitCode = 2;
      return null;
    }
    logger.fatal({ err }, `${name} cannot start`);
    process.exit(1); // what did start (servers, stores) must not keep the process alive
  }
}

/**
 * The body of a service command: config (or `--print-config`), logger, start, and a graceful stop
 * on SIGTERM/SIGINT. Returns the running service, or null when the command is done (see
 * {@link loadServiceConfig} and {@link startService}). `start` gets the config and the logger.
 */
export async function runService<C extends { readonly tenantsFile?: string | undefined; readonly logLevel: string }, R extends { shutdown(): Promise<unknown> }>(
  name: string,
  flags: { readonly printConfig?: boolean },
  build: () => Promise<C>,
  start: (config: C, logger: Logger) => Promise<R>,
  opts: { readonly untilSignal?: boolean } = {},
): Promise<{ running: R; logger: Logger } | null> {
  const config = await loadServiceConfig(name, flags, build);
  if (!config) return null;
  const logger = createLogger({ level: config.logLevel, name });
  routeLibraryOutput(logger);
  const starting = startService(name, logger, () => start(config, logger));
  // installed before the start finishes: a signal during a long start (WAL recovery) waits for it
  // and shuts down cleanly
  if (opts.untilSignal ?? true) {
    const grace = (config as { readonly shutdownGraceMs?: number }).shutdownGraceMs ?? 0;
    exitOnSignals(logger, async () => (await starting)?.shutdown(), { hardLimitMs: grace + SHUTDOWN_HARD_LIMIT_EXTRA_MS });
  }
  const running = await starting;
  if (!running) return null;
  return { running, logger };
}

