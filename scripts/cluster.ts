/**
 * Runs a local multi-process Strata cluster until Ctrl-C (see docs/cluster.md):
 *
 *   node --import tsx scripts/cluster.ts [--aggregators 2] [--gateways 3] [--shards 16]
 *       [--dir DIR] [--keep]
 *       [--s3-endpoint URL --s3-bucket NAME [--s3-region us-east-1]]
 *
 * Starts Ceph RGW through the test harness (scripts/rgw/rgw.mjs) unless --s3-endpoint is given
 * (credentials then come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), then K aggregators,
 * G gateways, nginx (writes, routed by x-strata-shard) and HAProxy (reads, hashed by
 * x-strata-block), all on loopback. Prints the endpoints and writes them to DIR/cluster.json.
 * SIGINT, SIGTERM and SIGHUP stop everything and remove the directory (unless --keep).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { BucketConfig } from '../src/objstore/index.js';
import { CLUSTER_DEFAULTS, startCluster, type Cluster } from './cluster/cluster.js';
import { formatExit } from './cluster/process.js';
import { DEFAULT_BUCKET, REGION, startRgw, USERS, type RunningRgw } from './rgw/rgw.mjs';

function fail(msg: string, code = 2): never {
  process.stderr.write(`cluster: ${msg}\n`);
  process.exit(code);
}

const options = {
  aggregators: { type: 'string' },
  gateways: { type: 'string' },
  shards: { type: 'string' },
  dir: { type: 'string' },
  keep: { type: 'boolean', default: false },
  's3-endpoint': { type: 'string' },
  's3-bucket': { type: 'string' },
  's3-region': { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

let values: ReturnType<typeof parseArgs<{ options: typeof options; strict: true }>>['values'];
try {
  ({ values } = parseArgs({ options, strict: true }));
} catch (err) {
  fail(`${(err as Error).message} (see --help)`);
}

if (values.help) {
  process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]!.replace(/^\/\*\*\n/, '').replace(/^ \* ?/gm, '') + '\n');
  process.exit(0);
}

function int(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!/^[1-9]\d*$/.test(v)) fail(`--${name} must be a positive integer, got "${v}"`);
  return Number(v);
}

const aggregators = int('aggregators', values.aggregators, CLUSTER_DEFAULTS.aggregators);
const gateways = int('gateways', values.gateways, CLUSTER_DEFAULTS.gateways);
const numShards = int('shards', values.shards, CLUSTER_DEFAULTS.numShards);
if (aggregators > numShards) fail(`--aggregators ${aggregators} is more than --shards ${numShards}: some would own no shard`);
if (values['s3-endpoint'] === undefined && (values['s3-bucket'] !== undefined || values['s3-region'] !== undefined)) fail('--s3-bucket and --s3-region need --s3-endpoint');

// the AWS SDK's once-per-process "Node 22 will be required" notice, as scripts/with-rgw.mjs does
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const log = (msg: string): void => {
  process.stderr.write(`${msg}\n`);
};

let rgw: RunningRgw | null = null;
let cluster: Cluster | null = null;
let exiting = false;
const starting = new AbortController();

async function shutdown(code: number): Promise<never> {
  exiting = true;
  try {
    if (cluster) {
      log('cluster: stopping');
      await cluster.stop();
    }
  } catch (err) {
    log(`cluster: stopping the services: ${(err as Error).message}`);
    code = code || 1;
  }
  try {
    if (rgw) await rgw.stop();
  } catch (err) {
    log(`cluster: stopping RGW: ${(err as Error).message}`);
    code = code || 1;
  }
  process.exit(code);
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    if (exiting) return;
    if (!cluster) starting.abort(new Error(`interrupted by ${sig}`));
    void shutdown(sig === 'SIGINT' ? 130 : sig === 'SIGTERM' ? 143 : 129);
  });
}

let bucket: BucketConfig;
let bucketNote = '';
try {
  if (values['s3-endpoint'] !== undefined) {
    const accessKeyId = process.env.AWS_ACCESS_KEY_ID;
    const secretAccessKey = process.env.AWS_SECRET_ACCESS_KEY;
    if (!accessKeyId || !secretAccessKey) fail('--s3-endpoint needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment');
    const name = values['s3-bucket'] ?? fail('--s3-endpoint needs --s3-bucket');
    bucket = {
      type: 's3',
      endpoint: values['s3-endpoint'],
      region: values['s3-region'] ?? 'us-east-1',
      bucket: name,
      forcePathStyle: true,
      credentials: { accessKeyId, secretAccessKey, ...(process.env.AWS_SESSION_TOKEN ? { sessionToken: process.env.AWS_SESSION_TOKEN } : {}) },
    };
    bucketNote = `${values['s3-endpoint']} bucket ${name}`;
  } else {
    log('cluster: starting Ceph RGW (scripts/rgw/rgw.mjs)');
    rgw = await startRgw({ signal: starting.signal, log });
    const user = USERS[0];
    bucket = { type: 's3', endpoint: rgw.endpoint, region: REGION, bucket: DEFAULT_BUCKET, forcePathStyle: true, credentials: { accessKeyId: user.accessKey, secretAccessKey: user.secretKey } };
    bucketNote = `${rgw.endpoint} bucket ${DEFAULT_BUCKET} (Ceph RGW in ${rgw.dir}; access key ${user.accessKey}, secret ${user.secretKey})`;
  }
  if (exiting) await forever(); // shutdown() exits
  cluster = await startCluster({
    bucket,
    aggregators,
    gateways,
    numShards,
    ...(values.dir !== undefined ? { dir: values.dir } : {}),
    keepDir: values.keep,
    log,
    onUnexpectedExit: (name, st, logFile) => {
      if (!exiting) log(`cluster: WARNING: ${name} exited (${formatExit(st)}); log ${logFile}`);
    },
  });
} catch (err) {
  if (exiting) await forever(); // shutdown() exits
  log(`cluster: ${(err as Error).message}`);
  await shutdown(1);
}

const c = cluster!;
const table = (rows: string[][]): string => {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => `  ${r.map((x, i) => x.padEnd(widths[i]!)).join('  ')}`.trimEnd()).join('\n');
};
const strata = 'node --import tsx src/cli/main.ts';
process.stdout.write(
  [
    '',
    `Strata local cluster: ${numShards} shards, ${aggregators} aggregators, ${gateways} gateways`,
    `  bucket  ${bucketNote}`,
    `  dir     ${c.dir}${values.keep ? ' (kept at exit)' : ' (removed at exit; --keep keeps it)'}`,
    '',
    `  write   ${c.writeEndpoint}   nginx, routes x-strata-shard to the owning aggregator`,
    `  read    ${c.readEndpoint}   HAProxy, hashes x-strata-block over the gateways`,
    `  stats   ${c.haproxyStatsUrl}`,
    '',
    table([
      ['process', 'grpc', 'metrics', 'shards'],
      ...c.aggregators.map((a) => [a.name, a.grpc, a.metricsUrl, a.shards.join(',')]),
      ...c.gateways.map((g) => [g.name, g.grpc, g.metricsUrl, '']),
    ]),
    '',
    'Try it:',
    `  node bench/gen-samples.mjs --size=quick --formats=bin --out=/tmp/strata-quick --start=${lastCompleteWindow()}`,
    `  ${strata} push /tmp/strata-quick/samples.bin --tenant demo --num-shards ${numShards} --target ${c.writeEndpoint} --seal`,
    `  ${strata} query --endpoint ${c.readEndpoint} --tenant demo --num-shards ${numShards} --series 1,2,3 --start ${lastCompleteWindow()} --end ${lastCompleteWindow() + 4 * 3600_000}`,
    '',
    `Endpoints as JSON: ${c.dir}/cluster.json. Ctrl-C stops everything.`,
    '',
  ].join('\n'),
);

/** Start of the last complete 4-hour window (inside the aggregators' accepted time range). */
function lastCompleteWindow(): number {
  const w = 4 * 3600_000;
  return Math.floor(Date.now() / w) * w - w;
}

await forever(); // until a signal

/** Never resolves; keeps the process alive until shutdown() exits it. */
function forever(): Promise<never> {
  setInterval(() => undefined, 1 << 30);
  return new Promise<never>(() => undefined);
}
