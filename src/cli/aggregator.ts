/**
 * `strata aggregator`: runs a shard aggregator until SIGTERM/SIGINT (graceful drain).
 * Config: defaults < JSON file (--config or STRATA_AGGREGATOR_CONFIG) < STRATA_AGGREGATOR_* < flags.
 */
import { hostname } from 'node:os';
import type { Command } from 'commander';
import { runService, serviceCommand } from './service-command.js';
import { ErrorCode, StrataError } from '../errors.js';
import {
  ENV_CONFIG_FILE,
  aggregatorConfigLayers,
  ordinalFromHostname,
  parseAggregatorConfig,
  type AggregatorConfig,
} from '../shard-aggregator/config.js';
import { startAggregatorServer } from '../shard-aggregator/server.js';

interface AggregatorFlags {
  config?: string;
  listen?: string;
  metricsListen?: string;
  walDir?: string;
  numShards?: string;
  shards?: string;
  ordinal?: string;
  replicas?: string;
  ordinalFromHostname?: boolean;
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
export async function aggregatorConfigFrom(flags: AggregatorFlags, env: NodeJS.ProcessEnv, host = hostname()): Promise<AggregatorConfig> {
  const named: [keyof AggregatorFlags, string][] = [
    ['listen', 'grpcListen'],
    ['metricsListen', 'metricsListen'],
    ['walDir', 'walDir'],
    ['numShards', 'numShards'],
    ['shards', 'shards'],
    ['ordinal', 'ordinal'],
    ['replicas', 'replicas'],
    ['tenantsFile', 'tenantsFile'],
    ['logLevel', 'logLevel'],
  ];
  const [fromFile, fromEnv, fromFlags] = await aggregatorConfigLayers.commandLine(flags, named, env);
  if (flags.ordinalFromHostname) {
    const ordinal = ordinalFromHostname(host);
    if (ordinal === null) throw new StrataError(ErrorCode.CONFIG, `invalid aggregator config: --ordinal-from-hostname: host name "${host}" does not end in -<number>`);
    fromFlags.ordinal = ordinal;
  }
  return parseAggregatorConfig(fromFile, fromEnv, fromFlags);
}

/** Registers `strata aggregator`. */
export function registerAggregatorCommands(program: Command): void {
  serviceCommand(
    program,
    'aggregator',
    {
      description: 'run a shard aggregator: gRPC write API, LevelDB write-ahead log, flush of blocks to the bucket',
      envConfigFile: ENV_CONFIG_FILE,
      bucketDirHelp: 'use a filesystem bucket in <dir>',
    },
    (cmd) =>
      cmd
        .option('--wal-dir <dir>', 'write-ahead log directory (walDir)')
        .option('--num-shards <n>', 'total number of shards (numShards)')
        .option('--shards <list>', 'owned shards, e.g. 0-3,7 (shards)')
        .option('--ordinal <n>', 'StatefulSet ordinal: owns shards s with s % replicas == ordinal')
        .option('--replicas <n>', 'StatefulSet replica count')
        .option('--ordinal-from-hostname', 'take the ordinal from the host name suffix (pod-name-<n>)'),
  ).action(async (flags: AggregatorFlags) => {
    const service = await runService('aggregator', flags, () => aggregatorConfigFrom(flags, process.env), (config, logger) => startAggregatorServer({ config, logger }));
    if (!service) return;
    const { running, logger } = service;
    try {
      await running.ready;
    } catch (err) {
      logger.fatal({ err }, 'aggregator cannot start');
      await running.shutdown().catch(() => undefined);
      // 2: the config is wrong (walDir not a directory, or another aggregator's), as for a flag
      process.exit(err instanceof StrataError && err.code === ErrorCode.CONFIG ? 2 : 1);
    }
  });
}
