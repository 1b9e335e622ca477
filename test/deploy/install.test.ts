/**
 * docs/deploy.md's install steps, followed with the shipped configs: k8s/config/tenants.yaml gets
 * the bucket (step 2: a real RGW bucket) and a tenant whose token `strata tenant token` made
 * (step 3); `strata aggregator` and `strata gateway` run as real processes on the shipped
 * k8s/config/aggregator.json and gateway.json, with only what the pods' volumes and host names
 * provide overridden by environment variables (paths, loopback addresses, the ordinal); the
 * credentials come as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY as the pods get them (step 4);
 * then clients write, seal and read back with the token (step 6).
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/deploy/install.test.ts
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { status } from '@grpc/grpc-js';
import { parse, stringify } from 'yaml';
import { QueryClient, QueryError } from '../../src/client/query.js';
import { WriterClient } from '../../src/client/writer.js';
import { DEFAULT_BLOCK_DURATION_MS } from '../../src/format/key.js';
import { createTestBucket, s3TestEnv } from '../support/s3env.js';
import { startServiceProcess } from '../support/service-process.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const strata = (...args: string[]) => promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), ...args], { cwd: ROOT });
const D = BigInt(DEFAULT_BLOCK_DURATION_MS);

t.test('docs/deploy.md: the install steps work as written', async (t) => {
  const doc = readFileSync(join(ROOT, 'docs', 'deploy.md'), 'utf8');
  const install = doc.slice(doc.indexOf('## Install'), doc.indexOf('## How requests flow'));
  t.match(install, /Set the bucket in \*\*`k8s\/config\/tenants\.yaml`\*\*, under `defaultBucket`/, 'step 2 puts the bucket in the tenants file');
  t.match(install, /tenant token/, 'step 3 makes a tenant token');

  const env = s3TestEnv();
  const dir = mkdtempSync(join(tmpdir(), 'strata-install-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const f of ['aggregator.json', 'gateway.json', 'tenants.yaml']) copyFileSync(join(ROOT, 'k8s', 'config', f), join(dir, f));

  // step 2: the bucket goes into tenants.yaml's defaultBucket (credentials stay env references)
  const bucketName = await createTestBucket(t, { tag: 'install' });
  const tenants = parse(readFileSync(join(dir, 'tenants.yaml'), 'utf8')) as { authRequired: boolean; defaultBucket: Record<string, unknown>; tenants: Record<string, unknown> };
  t.equal(tenants.authRequired, true, 'the shipped file requires tokens');
  Object.assign(tenants.defaultBucket, { region: env.region, bucket: bucketName, endpoint: env.endpoint, forcePathStyle: true });

  // step 3: a token made by `strata tenant token`, its hash listed under the tenant
  const { stdout } = await strata('tenant', 'token');
  const token = /^token: (\S+)$/m.exec(stdout)?.[1];
  const hash = /^hash: +(sha256:[0-9a-f]{64})$/m.exec(stdout)?.[1];
  t.ok(token && hash, 'strata tenant token prints a token and its hash');
  tenants.tenants = { acme: { tokens: [hash] } };
  writeFileSync(join(dir, 'tenants.yaml'), stringify(tenants));

  // what the pods provide: volumes (paths), the Secret as AWS_* variables, the ordinal (host name)
  const podEnv = (prefix: string, extra: Record<string, string>): Record<string, string> => ({
    AWS_ACCESS_KEY_ID: env.accessKeyId,
    AWS_SECRET_ACCESS_KEY: env.secretAccessKey,
    [`${prefix}TENANTS_FILE`]: join(dir, 'tenants.yaml'),
    [`${prefix}GRPC_LISTEN`]: '127.0.0.1:0',
    [`${prefix}METRICS_LISTEN`]: '127.0.0.1:0',
    ...extra,
  });

  // the instruction step 2 used to give (a bucket in the service config too) is refused
  const both = await strata('aggregator', '--config', join(dir, 'aggregator.json'), '--set', `bucket=${JSON.stringify({ type: 'filesystem', path: join(dir, 'b') })}`, '--print-config').then(
    () => null,
    (e: { code: number; stderr: string }) => e,
  );
  t.equal(both?.code, 2, 'a bucket in aggregator.json as well: exit status 2');
  t.match(both?.stderr, /give either a bucket or a tenantsFile, not both/);

  // step 5: the services start on the shipped configs
  const aggConfig = JSON.parse(readFileSync(join(dir, 'aggregator.json'), 'utf8')) as { numShards: number; replicas: number };
  const aggregator = await startServiceProcess(t, ['aggregator', '--config', join(dir, 'aggregator.json')], podEnv('STRATA_AGGREGATOR_', { STRATA_AGGREGATOR_WAL_DIR: join(dir, 'wal'), STRATA_AGGREGATOR_ORDINAL: '0' }));
  const gateway = await startServiceProcess(t, ['gateway', '--config', join(dir, 'gateway.json')], podEnv('STRATA_GATEWAY_', { STRATA_GATEWAY_CACHE_DIR: join(dir, 'cache') }));
  const started = aggregator.logs.find((l) => l['msg'] === 'aggregator serving');
  t.equal(started?.['ownedShards'], aggConfig.numShards / aggConfig.replicas, 'pod 0 owns its share of the shards');

  // step 6: write, seal and read back with the token; series of the shards pod 0 owns
  const { numShards, replicas } = aggConfig;
  const owned = Array.from({ length: numShards }, (_, s) => s).filter((s) => s % replicas === 0);
  const address = `127.0.0.1:${aggregator.grpcPort}`;
  const writer = new WriterClient({ tenant: 'acme', numShards, shardTargets: new Map(owned.map((s) => [s, address])), authToken: token! });
  t.teardown(() => writer.close());
  const window = (BigInt(Date.now()) / D - 6n) * D; // a day ago: accepted whatever the date
  const ids = [0n, 4n, 68n, 2n ** 64n - 4n]; // shards 0, 4, 4 and 60
  const series = ids.map((id, i) => {
    const timestamps = new BigInt64Array(100).map((_, j) => window + BigInt(j) * 60_000n + BigInt(i));
    const values = new Float64Array(100).map((_, j) => Math.sin(j + i) * 1e6);
    values[7] = -0;
    return { id, timestamps, values };
  });
  t.same(await writer.write(series), { requests: 3, samples: 400, series: 4, retries: 0 });
  const blocks = await writer.seal(window, owned);
  t.same(blocks.map((b) => [b.shard, b.samples]), [[0, 100], [4, 200], [60, 100]], 'sealed into blocks of the bucket');

  const query = new QueryClient({ futureHorizonMs: null, endpoints: [`127.0.0.1:${gateway.grpcPort}`], numShards, token: token! });
  t.teardown(() => query.close());
  const r = await query.query('acme', ids, { start: window, end: window + D });
  t.same(r.series.map((s) => s.id), ids);
  for (const [i, s] of r.series.entries()) {
    t.same(Buffer.from(s.timestamps.buffer, s.timestamps.byteOffset, s.timestamps.byteLength), Buffer.from(series[i]!.timestamps.buffer), `series ${s.id}: timestamps exact`);
    t.same(Buffer.from(s.values.buffer, s.values.byteOffset, s.values.byteLength), Buffer.from(series[i]!.values.buffer), `series ${s.id}: value bits exact`);
  }

  // and without the token the same read is refused, with its code
  const anonymous = new QueryClient({ futureHorizonMs: null, endpoints: [`127.0.0.1:${gateway.grpcPort}`], numShards });
  t.teardown(() => anonymous.close());
  const refused = await anonymous.query('acme', ids, { start: window, end: window + D }).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(refused instanceof QueryError && refused.code === status.UNAUTHENTICATED, 'no token: UNAUTHENTICATED');
  t.equal((refused as QueryError).strataCode, 'ERR_STRATA_UNAUTHENTICATED');
});
