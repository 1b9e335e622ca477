/**
 * The `strata` command line. Each group of commands lives in its own module and registers itself
 * on the program here.
 */
import { Command } from 'commander';
import { registerBlockCommands } from './block.js';
import { registerAggregatorCommands } from './aggregator.js';
import { registerPushCommands } from './push.js';
import { registerTenantCommands } from './tenant.js';
import { registerGatewayCommands } from './gateway.js';
import { registerQueryCommands } from './query.js';
import { registerServeCommands } from './serve.js';
import { registerDemoCommands } from './demo.js';
import { registerLifecycleCommands } from './lifecycle.js';
import { registerBucketCommands } from './bucket.js';
import { versionLine } from '../common/version.js';
import { ErrorCode, StrataError } from '../errors.js';
// command modules: one import and one register call each, in this order
// (block) (aggregator, push) (gateway, query) (serve, demo) (lifecycle, bucket)

const program = new Command('strata')
  .description('Strata: a lossless time-series sample store on S3-compatible object storage')
  .version(`strata ${versionLine()}`, '-V, --version', 'print the version and git commit of this build')
  .showHelpAfterError();
registerBlockCommands(program);
registerAggregatorCommands(program);
registerPushCommands(program);
registerTenantCommands(program);
registerGatewayCommands(program);
registerQueryCommands(program);
registerServeCommands(program);
registerDemoCommands(program);
registerLifecycleCommands(program);
registerBucketCommands(program);

// `strata query ... | head`: nobody reads the rest; as Unix tools do, stop without a word
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  // a command with a handler of its own (the bucket tools: their exit status says what they found) decides
  if (process.stdout.listenerCount('error') > 1) return;
  if (err.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
  throw err;
});

try {
  await program.parseAsync(process.argv);
} catch (err) {
  // what a command did not handle itself: one line naming the command, not a stack trace; 2 for
  // flags, config and input, 1 for anything else (a damaged block, a missing file, a server error)
  const command = process.argv.slice(2).find((a) => !a.startsWith('-')) ?? '';
  const usage = err instanceof StrataError && (err.code === ErrorCode.CONFIG || err.code === ErrorCode.INVALID_ARGUMENT);
  process.stderr.write(`strata${command ? ` ${command}` : ''}: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = usage ? 2 : 1;
}
