/**
 * Tenant isolation on the read path, against Ceph RGW with an in-process gateway reading a YAML
 * tenants file: two tenants with their own buckets owned by two different RGW users (credentials
 * by environment reference) and two on the default bucket. Each tenant reads back only its own
 * samples, bit-exact (the data sets share series ids); cross-tenant, mismatched and malformed
 * requests are refused with the right status; the per-tenant maxSeriesPerRead; a reload adds a
 * tenant, and one that moves a tenant to another bucket holding a block with the same key and the
 * same block id serves the new bucket's bytes (every cache layer is scoped by bucket location);
 * per-tenant metrics; no token, hash or credential in any log line, /metrics or error; and the
 * gateway over TLS refusing plaintext.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/tenancy/read.test.ts
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Writable } from 'node:stream';
import { status } from '@grpc/grpc-js';
import t from 'tap';
import { stringify as toYaml } from 'yaml';
import { encodeReadRequest, ENCODING_RAW, READ_METHOD_PATH } from '../../src/api/read-codec.js';
import { QueryClient, QueryError } from '../../src/client/query.js';
import { createLogger } from '../../src/common/logger.js';
import { S3Bucket } from '../../src/objstore/s3/index.js';
import { parseGatewayConfig } from '../../src/storage-gateway/config.js';
import { hashToken, newToken } from '../../src/tenancy/config.js';
import { makeTestCerts } from '../support/certs.js';
import { createTestBucket, s3BucketConfig, s3TestEnv, type TestUser } from '../support/s3env.js';
import { credentialEnvRefs, leakedSecrets, metricValue, rawGrpcCall, replaceFile, s3Secrets, s3TenantBucket, scrape } from '../support/tenancy.js';
import { eventually } from '../support/aggregator.js';
import { D, expected, idBytes, makeDataSet, mismatches, rawRead, startTestGateway, tempDir, W0, writeBlock, writeDataSet, type DataSet } from '../support/gateway.js';

const env = s3TestEnv();
const TOKENS = { alpha: newToken(), beta: newToken(), gamma: newToken(), limited: newToken(), delta: newToken(), mover: newToken() };
type Tenant = keyof typeof TOKENS;
const NUM_SHARDS = 2;
const WINDOW = { start: W0, end: W0 + D };
const bucketA = await createTestBucket(t, { user: 1, tag: 'rd-a' });
const bucketB = await createTestBucket(t, { user: 2, tag: 'rd-b' });
const bucketD = await createTestBucket(t, { user: 1, tag: 'rd-def' });
const PREFIX_A = 'alpha-data/';

function open(bucket: string, user: TestUser, prefix?: string): S3Bucket {
  const b = new S3Bucket(s3BucketConfig(env, bucket, prefix !== undefined ? { prefix } : {}, user));
  t.teardown(() => b.close());
  return b;
}
const buckets = { alpha: open(bucketA, 1, PREFIX_A), beta: open(bucketB, 2), def: open(bucketD, 1), aRoot: open(bucketA, 1) };

// every data set includes the series ids 0 and 2^64-1, so tenants ask for the same ids
const data = new Map<Tenant, DataSet>();
for (const [i, tenant] of (['alpha', 'beta', 'gamma', 'limited', 'delta'] as const).entries()) {
  data.set(tenant, makeDataSet({ seed: 100 + i, n: 12, numShards: NUM_SHARDS, windows: 1, tenant, maxSamples: 300 }));
}
await writeDataSet(buckets.alpha, data.get('alpha')!);
await writeDataSet(buckets.beta, data.get('beta')!);
for (const tenant of ['gamma', 'limited', 'delta'] as const) await writeDataSet(buckets.def, data.get(tenant)!);

const dir = tempDir(t, 'tenancy-read');
const tenantsFile = join(dir, 'tenants.yaml');
type TenantsDoc = { defaultBucket: unknown; tenants: Record<string, unknown> };
function tenantsDoc(extra: Record<string, unknown> = {}): TenantsDoc {
  return {
    defaultBucket: s3TenantBucket(bucketD, credentialEnvRefs(1)),
    tenants: {
      alpha: { tokens: [hashToken(TOKENS.alpha)], bucket: s3TenantBucket(bucketA, credentialEnvRefs(1), { prefix: PREFIX_A }) },
      beta: { tokens: [hashToken(TOKENS.beta)], bucket: s3TenantBucket(bucketB, credentialEnvRefs(2)) },
      gamma: { tokens: [hashToken(TOKENS.gamma)] },
      limited: { tokens: [hashToken(TOKENS.limited)], limits: { maxSeriesPerRead: 2 } },
      mover: { tokens: [hashToken(TOKENS.mover)] },
      ...extra,
    },
  };
}
writeFileSync(tenantsFile, toYaml(tenantsDoc()));

const logLines: string[] = [];
const logger = createLogger({
  level: 'trace',
  name: 'gateway',
  dest: new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(chunk.toString('utf8'));
      cb();
    },
  }),
});
const config = parseGatewayConfig({ tenantsFile, cacheType: 'memory', grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', stalenessMs: 3_600_000, logLevel: 'trace' });
const gw = await startTestGateway(t, config, { logger });
const endpoint = `127.0.0.1:${gw.grpcPort}`;
/** Everything the gateway answered (error details), for the secret grep. */
const answers: string[] = [];

function client(token?: string): QueryClient {
  const c = new QueryClient({ futureHorizonMs: null, endpoints: [endpoint], numShards: NUM_SHARDS, ...(token !== undefined ? { token } : {}) });
  t.teardown(() => c.close());
  return c;
}
async function refusal(p: Promise<unknown>): Promise<QueryError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  if (!(err instanceof QueryError)) throw new Error(`expected a QueryError, got ${String(err)}`);
  answers.push(err.message);
  return err;
}
const allIds = (tenant: Tenant): bigint[] => data.get(tenant)!.series.map((s) => s.id);

t.test('each tenant reads only its own samples, bit-exact, from its own bucket', async (t) => {
  for (const tenant of ['alpha', 'beta', 'gamma', 'limited'] as const) {
    const ids = tenant === 'limited' ? allIds(tenant).slice(0, 2) : allIds(tenant);
    const r = await client(TOKENS[tenant]).query(tenant, ids, WINDOW);
    t.same(mismatches(r.series, expected(data.get(tenant)!, ids, W0, W0 + D)), [], `${tenant}: every sample bit-exact`);
    t.ok(r.blocksFound >= 1, `${tenant}: read from its blocks`);
  }
  // the ids another tenant wrote answer with this tenant's samples (or none), never the other's
  const foreign = allIds('beta');
  const r = await client(TOKENS.alpha).query('alpha', foreign, WINDOW);
  t.same(mismatches(r.series, expected(data.get('alpha')!, foreign, W0, W0 + D)), [], "alpha asking for beta's ids gets alpha's samples only");
  t.ok(r.series.some((s) => s.timestamps.length > 0), 'shared ids (0, 2^64-1) answered from alpha');
  const metrics = await scrape(gw.metricsPort);
  answers.push(metrics);
  t.ok(metricValue(metrics, 'strata_gateway_tenant_requests_total{tenant="alpha",code="OK"}') >= 2 * NUM_SHARDS, 'per-tenant reads');
  let betaSamples = 0;
  for (const s of expected(data.get('beta')!, allIds('beta'), W0, W0 + D)) betaSamples += s.samples.timestamps.length;
  t.equal(metricValue(metrics, 'strata_gateway_tenant_samples_served_total{tenant="beta"}'), betaSamples, "beta's samples served");
});

t.test('cross-tenant, mismatched and unauthenticated reads are refused', async (t) => {
  const cases: [string, Promise<unknown>, status, RegExp][] = [
    ["alpha's token reading beta", client(TOKENS.alpha).query('beta', [0n], WINDOW), status.PERMISSION_DENIED, /does not grant access to tenant "beta"/],
    ["beta's token reading alpha", client(TOKENS.beta).query('alpha', [0n], WINDOW), status.PERMISSION_DENIED, /tenant "alpha"/],
    ['valid token, unknown tenant', client(TOKENS.alpha).query('ghost', [0n], WINDOW), status.PERMISSION_DENIED, /tenant "ghost"/],
    ['no token', client().query('alpha', [0n], WINDOW), status.UNAUTHENTICATED, /missing bearer token/],
    ['wrong token', client('strata_wrong').query('alpha', [0n], WINDOW), status.UNAUTHENTICATED, /invalid bearer token/],
    ['the hash as the token', client(hashToken(TOKENS.alpha)).query('alpha', [0n], WINDOW), status.UNAUTHENTICATED, /invalid bearer token/],
    ['wrong token, unknown tenant', client('strata_wrong').query('ghost', [0n], WINDOW), status.UNAUTHENTICATED, /invalid bearer token/],
  ];
  for (const [name, p, code, re] of cases) {
    const err = await refusal(p);
    t.equal(err.code, code, `${name}: ${status[code]}`);
    t.match(err.message, re, `${name}: message`);
  }

  const base = {
    tenant: 'alpha',
    shard: 0,
    num_shards: NUM_SHARDS,
    window_start_ms: W0.toString(),
    series_ids: idBytes([0n]),
    start_ms: W0.toString(),
    end_ms: (W0 + D).toString(),
    encoding: 'RAW' as const,
  };
  const raw = async (req: Partial<typeof base>, headers: Record<string, string>): Promise<{ code: number; details: string } | null> => {
    const err = await rawRead(gw.grpcPort, { ...base, ...req }, headers).then(
      () => null,
      (e: { code: number; details: string }) => e,
    );
    if (err) answers.push(err.details);
    return err;
  };
  const auth = (token: string) => ({ authorization: `Bearer ${token}` });
  t.equal((await rawRead(gw.grpcPort, base, { ...auth(TOKENS.alpha), 'x-strata-tenant': 'alpha', 'x-strata-block': `alpha/0/${W0}` })).length, 1, 'a well-formed read passes');
  // x-strata-tenant is optional (docs/protocol.md): the request's tenant and the token are enough
  t.equal((await rawRead(gw.grpcPort, base, auth(TOKENS.alpha))).length, 1, 'a read without x-strata-tenant passes');
  const refused: [string, Partial<typeof base>, Record<string, string>, status, RegExp][] = [
    ["beta's header and token naming alpha's block", {}, { ...auth(TOKENS.beta), 'x-strata-tenant': 'beta' }, status.INVALID_ARGUMENT, /x-strata-tenant.*"beta".*"alpha"/],
    ["beta's token naming alpha's block", {}, { ...auth(TOKENS.beta), 'x-strata-tenant': 'alpha' }, status.PERMISSION_DENIED, /tenant "alpha"/],
    ['no tenant header, no token', {}, {}, status.UNAUTHENTICATED, /token/],
    ["no tenant header, beta's token naming alpha's block", {}, auth(TOKENS.beta), status.PERMISSION_DENIED, /tenant "alpha"/],
    ["alpha's header and token naming beta's block", { tenant: 'beta' }, { ...auth(TOKENS.alpha), 'x-strata-tenant': 'alpha' }, status.INVALID_ARGUMENT, /x-strata-tenant/],
    ["routing header naming alpha's block, body beta's", { tenant: 'beta' }, { ...auth(TOKENS.beta), 'x-strata-block': `alpha/0/${W0}` }, status.INVALID_ARGUMENT, /x-strata-block/],
    ['not a bearer token', {}, { authorization: `Basic ${TOKENS.alpha}`, 'x-strata-tenant': 'alpha' }, status.UNAUTHENTICATED, /must be "Bearer <token>"/],
    ['../a', { tenant: '../a' }, auth(TOKENS.alpha), status.INVALID_ARGUMENT, /tenant/],
    ['a/b', { tenant: 'a/b' }, auth(TOKENS.alpha), status.INVALID_ARGUMENT, /tenant/],
    ['empty tenant', { tenant: '' }, auth(TOKENS.alpha), status.INVALID_ARGUMENT, /tenant/],
    ['300 characters', { tenant: 'a'.repeat(300) }, auth(TOKENS.alpha), status.INVALID_ARGUMENT, /tenant/],
    ['upper case', { tenant: 'Alpha' }, auth(TOKENS.alpha), status.INVALID_ARGUMENT, /tenant/],
    ['non-ASCII in the body', { tenant: 'alphá' }, auth(TOKENS.alpha), status.INVALID_ARGUMENT, /tenant/],
  ];
  for (const [name, req, headers, code, re] of refused) {
    const err = await raw(req, headers);
    t.equal(err?.code, code, `${name}: ${status[code]}`);
    t.match(err?.details ?? '', re, `${name}: message`);
  }
  // non-ASCII tenant headers: grpc-js refuses to send them, so they go over raw HTTP/2 (latin1)
  const body = encodeReadRequest({ tenant: 'alpha', shard: 0, numShards: NUM_SHARDS, windowStartMs: W0, seriesIds: idBytes([0n]), startMs: W0, endMs: W0 + D, encoding: ENCODING_RAW });
  for (const tenant of ['alphá', 'ålpha', Buffer.from('álpha', 'utf8').toString('latin1')]) {
    const r = await rawGrpcCall(endpoint, READ_METHOD_PATH, { 'x-strata-tenant': tenant, authorization: `Bearer ${TOKENS.alpha}` }, body);
    answers.push(r.details);
    t.equal(r.code, status.INVALID_ARGUMENT, `non-ASCII tenant header ${JSON.stringify(tenant)}: INVALID_ARGUMENT`);
    t.match(r.details, /x-strata-tenant/, 'naming the header');
  }
});

t.test("the tenant's maxSeriesPerRead answers RESOURCE_EXHAUSTED naming the limit", async (t) => {
  const ids = allIds('limited');
  const shard0 = ids.filter((id) => id % BigInt(NUM_SHARDS) === 0n).slice(0, 3);
  t.equal(shard0.length, 3, 'three ids of one shard');
  const err = await refusal(client(TOKENS.limited).query('limited', shard0, WINDOW));
  t.equal(err.code, status.RESOURCE_EXHAUSTED);
  t.match(err.message, /3 series, more than the limit maxSeriesPerRead \(2\) of tenant "limited"/);
  const ok = await client(TOKENS.limited).query('limited', shard0.slice(0, 2), WINDOW);
  t.same(mismatches(ok.series, expected(data.get('limited')!, shard0.slice(0, 2), W0, W0 + D)), [], 'at the limit: served');
  const other = await client(TOKENS.gamma).query('gamma', allIds('gamma'), WINDOW);
  t.equal(other.series.length, allIds('gamma').length, 'other tenants are not limited');
});

t.test('a reload adds a tenant, and moving a tenant to another bucket never serves the old bytes', async (t) => {
  const deltaIds = allIds('delta');
  t.equal((await refusal(client(TOKENS.delta).query('delta', deltaIds, WINDOW))).code, status.UNAUTHENTICATED, 'delta unknown before the reload');

  // mover: one block in the default bucket, then a block under the same key and with the same
  // block id but other samples at the root of bucket A
  const blockId = 'c0ffee'.padEnd(32, '0');
  const first = makeDataSet({ seed: 7, n: 6, numShards: 1, windows: 1, tenant: 'mover', maxSamples: 200 });
  const second = makeDataSet({ seed: 8, n: 6, numShards: 1, windows: 1, tenant: 'mover', maxSamples: 200 });
  const ids = [0n, (1n << 64n) - 1n];
  const one = (ds: DataSet) => ds.series.filter((s) => ids.includes(s.id) && s.samples.timestamps.length > 0);
  await writeBlock(buckets.def, 'mover', 0, 1, W0, one(first), { blockId });
  await writeBlock(buckets.aRoot, 'mover', 0, 1, W0, one(second), { blockId });
  const mover = new QueryClient({ futureHorizonMs: null, endpoints: [endpoint], numShards: 1, token: TOKENS.mover });
  t.teardown(() => mover.close());
  t.ok(one(first).length > 0 && one(second).length > 0, 'both blocks hold samples');
  t.same(mismatches((await mover.query('mover', ids, WINDOW)).series, expected(first, ids, W0, W0 + D)), [], 'mover reads its block in the default bucket');

  const reloads = gw.tenants.reloads.ok;
  replaceFile(
    tenantsFile,
    toYaml(
      tenantsDoc({
        delta: { tokens: [hashToken(TOKENS.delta)] },
        mover: { tokens: [hashToken(TOKENS.mover)], bucket: s3TenantBucket(bucketA, credentialEnvRefs(1)) },
      }),
    ),
  );
  await eventually('the reload', () => Promise.resolve(gw.tenants.reloads.ok > reloads ? true : null));
  const r = await client(TOKENS.delta).query('delta', deltaIds, WINDOW);
  t.same(mismatches(r.series, expected(data.get('delta')!, deltaIds, W0, W0 + D)), [], 'delta reads after the reload');
  // staleness is an hour, so anything keyed by object key or block id alone would answer from the cache
  t.same(mismatches((await mover.query('mover', ids, WINDOW)).series, expected(second, ids, W0, W0 + D)), [], "mover reads its new bucket's block, not the cached old one");
  const metrics = await scrape(gw.metricsPort);
  answers.push(metrics);
  t.equal(metricValue(metrics, 'strata_gateway_tenant_reloads_total{result="ok"}'), gw.tenants.reloads.ok, 'reloads counted');

  // a broken file is refused and the config in force stays
  const failed = gw.tenants.reloads.failed;
  replaceFile(tenantsFile, 'tenants: [');
  await eventually('the refused reload', () => Promise.resolve(gw.tenants.reloads.failed > failed ? true : null));
  t.equal((await client(TOKENS.delta).query('delta', deltaIds, WINDOW)).series.length, deltaIds.length, 'delta still reads');
});

t.test('no token, token hash or credential in any log line, /metrics or error', async (t) => {
  answers.push(await scrape(gw.metricsPort));
  await gw.shutdown();
  const text = [...logLines, ...answers].join('\n');
  t.ok(logLines.length > 20, `${logLines.length} log lines checked`);
  t.ok(logLines.some((l) => l.includes('read refused')), 'refused reads were logged');
  const secrets = [...Object.values(TOKENS), ...Object.values(TOKENS).map((tok) => hashToken(tok).slice('sha256:'.length)), ...s3Secrets()];
  t.same(leakedSecrets(text, secrets), [], 'no secret found');
  t.ok(text.includes(bucketD), 'the grep saw real output (bucket names are fine)');
});

t.test('the gateway serves over TLS and refuses plaintext', async (t) => {
  const certs = makeTestCerts(t);
  const tlsDir = tempDir(t, 'tenancy-read-tls');
  const file = join(tlsDir, 'tenants.yaml');
  writeFileSync(file, toYaml({ defaultBucket: s3TenantBucket(bucketD, credentialEnvRefs(1)), tenants: { gamma: { tokens: [hashToken(TOKENS.gamma)] } } }));
  const tlsGw = await startTestGateway(
    t,
    parseGatewayConfig({ tenantsFile: file, cacheType: 'memory', grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', logLevel: 'silent', tls: { certFile: certs.serverCert, keyFile: certs.serverKey } }),
  );
  const at = [`127.0.0.1:${tlsGw.grpcPort}`];
  const secure = new QueryClient({ futureHorizonMs: null, endpoints: at, numShards: NUM_SHARDS, token: TOKENS.gamma, tls: { caFile: certs.caCert }, deadlineMs: 10_000 });
  const plain = new QueryClient({ futureHorizonMs: null, endpoints: at, numShards: NUM_SHARDS, token: TOKENS.gamma, deadlineMs: 3_000 });
  const rogue = new QueryClient({ futureHorizonMs: null, endpoints: at, numShards: NUM_SHARDS, token: TOKENS.gamma, tls: { caFile: certs.rogueCaCert }, deadlineMs: 3_000 });
  t.teardown(() => [secure, plain, rogue].forEach((c) => c.close()));
  const ids = allIds('gamma');
  t.same(mismatches((await secure.query('gamma', ids, WINDOW)).series, expected(data.get('gamma')!, ids, W0, W0 + D)), [], 'TLS: every sample bit-exact');
  const p = await refusal(plain.query('gamma', ids, WINDOW));
  t.equal(p.code, status.UNAVAILABLE, 'plaintext: refused (UNAVAILABLE)');
  const r = await refusal(rogue.query('gamma', ids, WINDOW));
  t.equal(r.code, status.UNAVAILABLE, 'a client not trusting the server certificate: UNAVAILABLE');

  // strata query: token from a file or STRATA_TOKEN, TLS flags
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  const tokenFile = join(tlsDir, 'token');
  writeFileSync(tokenFile, `${TOKENS.gamma}\n`);
  const id = ids.find((x) => (data.get('gamma')!.series.find((s) => s.id === x)?.samples.timestamps.length ?? 0) > 0)!;
  const run = (extra: string[], envExtra: Record<string, string> = {}) =>
    promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', join(root, 'src', 'cli', 'main.ts'), 'query', '--endpoint', at[0]!, '--tenant', 'gamma', '--num-shards', String(NUM_SHARDS), '--series', String(id), '--start', String(W0), '--end', String(W0 + D), '--deadline-ms', '5000', ...extra],
      { cwd: root, env: { ...process.env, STRATA_TOKEN: '', ...envExtra } },
    );
  const want = expected(data.get('gamma')!, [id], W0, W0 + D)[0]!.samples.timestamps.length;
  const viaFile = await run(['--token-file', tokenFile, '--tls-ca', certs.caCert]);
  t.equal(viaFile.stdout.trim().split('\n').length, want, 'strata query --token-file --tls-ca: every sample');
  const viaEnv = await run(['--tls-ca', certs.caCert, '--tls-server-name', 'localhost'], { STRATA_TOKEN: TOKENS.gamma });
  t.equal(viaEnv.stdout, viaFile.stdout, 'STRATA_TOKEN and --tls-server-name: the same answer');
  const noToken = await run(['--tls-ca', certs.caCert]).then(
    () => null,
    (e: { code: number; stderr: string }) => e,
  );
  t.equal(noToken?.code, 1, 'no token: exit status 1');
  t.match(noToken?.stderr ?? '', /UNAUTHENTICATED/);
  t.notMatch(viaFile.stderr + viaEnv.stderr + (noToken?.stderr ?? ''), TOKENS.gamma, 'the token is not printed');
});
