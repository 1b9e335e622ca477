/**
 * `strata lifecycle`: runs the lifecycle role (retention, tenant deletion, cleanup of abandoned
 * uploads; src/lifecycle) until SIGTERM/SIGINT, or for one tick with `--once`.
 * Config: defaults < JSON file (--config or STRATA_LIFECYCLE_CONFIG) < STRATA_LIFECYCLE_* < flags.
 */
import type { Command } from 'commander';
import { ENV_CONFIG_FILE, lifecycleConfigLayers, parseLifecycleConfig, type LifecycleConfig } from '../lifecycle/config.js';
import { startLifecycle } from '../lifecycle/service.js';
import { runService } from './service-command.js';

interface LifecycleFlags {
  config?: string;
  metricsListen?: string;
  bucketDir?: string;
  tenantsFile?: string;
  intervalMs?: string;
  logLevel?: string;
  once?: boolean;
  set: string[];
  printConfig?: boolean;
}

/** Builds the validated config from the file, the environment and the flags. */
export async function lifecycleConfigFrom(flags: LifecycleFlags, env: NodeJS.ProcessEnv): Promise<LifecycleConfig> {
  const named: [keyof LifecycleFlags, string][] = [
    ['metricsListen', 'metricsListen'],
    ['tenantsFile', 'tenantsFile'],
    ['intervalMs', 'intervalMs'],
    ['logLevel', 'logLevel'],
  ];
  const [fromFile, fromEnv, fromFlags] = await lifecycleConfigLayers.commandLine(flags, named, env);
  return parseLifecycleConfig(fromFile, fromEnv, fromFlags);
}

/** Registers `strata lifecycle`. */
export function registerLifecycleCommands(program: Command): void {
  program
    .command('lifecycle')
    .description('run the lifecycle role: retention, tenant deletion, cleanup of abandoned uploads (one replica works at a time: a lease in the bucket)')
    .option('-c, --config <file>', `JSON config file (or ${ENV_CONFIG_FILE})`)
    .option('--metrics-listen <host:port>', 'Prometheus /metrics listen address (metricsListen)')
    .option('--bucket-dir <dir>', 'work on a filesystem bucket in <dir>')
    .option('--tenants-file <file>', 'tenants file: default bucket, tenant buckets, retention (tenantsFile)')
    .option('--interval-ms <ms>', 'time between passes (intervalMs)')
    .option('--once', 'take the lease, run a pass if one is due, give the lease up and exit')
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent')
    .option('--set <key=value>', 'set any config option (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--print-config', 'print the validated config (secrets hidden) and exit')
    .action(async (flags: LifecycleFlags) => {
      const once = flags.once === true;
      const service = await runService('lifecycle', flags, () => lifecycleConfigFrom(flags, process.env), (config, logger) => startLifecycle({ config, logger, timer: !once }), {
        untilSignal: !once,
      });
      if (!service || !once) return;
      const r = await service.running.tick();
      await service.running.shutdown();
      if (r.pass === null) {
        const why = {
          not_due: 'no pass due (see intervalMs)',
          lease_elsewhere: 'another replica holds the lease',
          lease_error: `cannot take the lease: ${r.error ?? 'unknown error'}`,
          clock_skew: `no pass: ${r.error ?? "this clock is off the bucket's"}; set the clock right`,
          stopped: 'the pass stopped part-way: the lease was lost (its renewals failed, see the log); the next pass continues',
          failed: `the pass failed: ${r.error ?? 'see the log'}`,
        }[r.skipped ?? (r.held ? 'not_due' : 'lease_elsewhere')];
        process.stderr.write(`strata lifecycle: ${why}\n`);
        // nothing (or not all) was done for a reason to fix: a scheduled run must not look fine
        if (r.skipped === 'lease_error' || r.skipped === 'clock_skew' || r.skipped === 'stopped' || r.skipped === 'failed') process.exitCode = 1;
      } else process.stdout.write(`${JSON.stringify(r.pass)}\n`);
      if (r.pass !== null && r.pass.failures > 0) process.exitCode = 1;
    });
}
