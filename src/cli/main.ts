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

await program.parseAsync(process.argv);
