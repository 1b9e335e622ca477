/**
 * `strata gateway`: runs a storage gateway until SIGTERM/SIGINT (graceful drain).
 * Config: defaults < JSON file (--config or STRATA_GATEWAY_CONFIG) < STRATA_GATEWAY_* < flags.
 */
import type { Command } from 'commander';
import { runService, serviceCommand } from './service-command.js';
import { ENV_CONFIG_FILE, gatewayConfigLayers, parseGatewayConfig, type GatewayConfig } from '../storage-gateway/config.js';
import { startGateway } from '../storage-gateway/gateway.js';

interface GatewayFlags {
  config?: string;
  listen?: string;
  metricsListen?: string;
  cacheDir?: string;
  cacheMaxBytes?: string;
  cacheType?: string;
  stalenessMs?: string;
  bucketDir?: string;
  tenantsFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  logLevel?: string;
  set: string[];
  printConfig?: boolean;
}

/** Builds the validated config from the file, the environment and the flags. */
export async function gatewayConfigFrom(flags: GatewayFlags, env: NodeJS.ProcessEnv): Promise<GatewayConfig> {
  const named: [keyof GatewayFlags, string][] = [
    ['listen', 'grpcListen'],
    ['metricsListen', 'metricsListen'],
    ['cacheDir', 'cacheDir'],
    ['cacheMaxBytes', 'cacheMaxBytes'],
    ['cacheType', 'cacheType'],
    ['stalenessMs', 'stalenessMs'],
    ['tenantsFile', 'tenantsFile'],
    ['logLevel', 'logLevel'],
  ];
  const [fromFile, fromEnv, fromFlags] = await gatewayConfigLayers.commandLine(flags, named, env);
  return parseGatewayConfig(fromFile, fromEnv, fromFlags);
}

/** Registers `strata gateway`. */
export function registerGatewayCommands(program: Command): void {
  serviceCommand(
    program,
    'gateway',
    {
      description: 'run a storage gateway: gRPC read API over blocks in the bucket, LMDB cache, /metrics',
      envConfigFile: ENV_CONFIG_FILE,
      bucketDirHelp: 'read blocks from a filesystem bucket in <dir>',
    },
    (cmd) =>
      cmd
        .option('--cache-dir <dir>', 'LMDB cache directory (cacheDir)')
        .option('--cache-max-bytes <n>', 'byte budget of the cache (cacheMaxBytes)')
        .option('--cache-type <type>', 'lmdb or memory (cacheType)')
        .option('--staleness-ms <ms>', 'serve a replaced block within this (stalenessMs)'),
  ).action(async (flags: GatewayFlags) => {
    await runService('gateway', flags, () => gatewayConfigFrom(flags, process.env), (config, logger) => startGateway({ config, logger }));
  });
}
