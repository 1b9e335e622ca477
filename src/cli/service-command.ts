/**
 * What `strata aggregator` and `strata gateway` have in common: the options shared by every
 * service (bucket, tenants file, TLS, log level, `--set`, `--print-config`) and loading the
 * validated config, where a config error exits with status 2 and `--print-config` prints the
 * config with its credentials hidden.
 */
import type { Command } from 'commander';
import { redactSecrets } from '../common/config.js';
import { StrataError } from '../errors.js';

/** Adds the options every service command has (after its own ones). */
export function addServiceOptions(cmd: Command, bucketDirHelp: string): Command {
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
 * Builds the config of service `name`. Returns null when the command is done: the config was
 * invalid (message on stderr, exit status 2) or `--print-config` printed it.
 */
export async function loadServiceConfig<C>(name: string, flags: { readonly printConfig?: boolean }, build: () => Promise<C>): Promise<C | null> {
  let config: C;
  try {
    config = await build();
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
