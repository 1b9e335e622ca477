/**
 * Tenant isolation on the write path, against Ceph RGW with the aggregator as a child process
 * and a YAML tenants file: two tenants with their own buckets owned by two different RGW users
 * (different keys, credentials by environment reference) and two on the default bucket. Each
 * tenant's blocks land only in its own bucket/prefix (listed with that bucket's own credentials;
 * the other user cannot see it); cross-tenant and malformed attempts are refused with the right
 * status and store nothing; Status needs a token and shows only the caller's tenant; the
 * per-tenant write limit and metrics; and no token, hash or credential appears in any log line,
 * /metrics, Status answer or error.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/tenancy/isolation.test.ts
 */
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { status } from '@grpc/grpc-js';
import t from 'tap';
import { stringify as toYaml } from 'yaml';
import { blockKey, DEFAULT_BLOCK_DURATION_MS } from '../../src/format/key.js';
import { S3Bucket } from '../../src/objstore/s3/index.js';
import { writerServiceDefinition } from '../../src/api/services.js';
import { hashToken, newToken } from '../../src/tenancy/config.js';
import { adminClient, createTestBucket, s3BucketConfig, s3TestEnv, type TestUser } from '../support/s3env.js';
import { credentialEnvRefs, leakedSecrets, metricValue, rawGrpcCall, s3Secrets, s3TenantBucket, scrape } from '../support/tenancy.js';
import { bitsBytes, bitsOf, RawClient, readBlock, startAggregator, tempDir, tsBytes } from '../support/aggregator.js';

const H = BigInt(DEFAULT_BLOCK_DURATION_MS);
const W = ((BigInt(Date.now()) - 2n * 24n * 3600n * 1000n) / H) * H;
const W2 = W + H;
const STALE_NAN = 0x7ff0000000000002n;
const NEG_ZERO = 0x8000000000000000n;

const env = s3TestEnv();
const TOKENS = { alpha: newToken(), beta: newToken(), gamma: newToken(), limited: newToken() };
type Tenant = keyof typeof TOKENS;
const bucketA = await createTestBucket(t, { user: 1, tag: 'ten-a' });
const bucketB = await createTestBucket(t, { user: 2, tag: 'ten-b' });
const bucketD = await createTestBucket(t, { user: 1, tag: 'ten-def' });
const PREFIX_A = 'alpha-data/';

const dir = tempDir('tenancy-iso');
const walDir = join(dir, 'wal');
const tenantsFile = join(dir, 'tenants.yaml');
writeFileSync(
  tenantsFile,
  toYaml({
    defaultBucket: s3TenantBucket(bucketD, credentialEnvRefs(1)),
    tenants: {
      alpha: { tokens: [hashToken(TOKENS.alpha)], bucket: s3TenantBucket(bucketA, credentialEnvRefs(1), { prefix: PREFIX_A }) },
      beta: { tokens: [hashToken(TOKENS.beta)], bucket: s3TenantBucket(bucketB, credentialEnvRefs(2)) },
      gamma: { tokens: [hashToken(TOKENS.gamma)] },
      limited: { tokens: [hashToken(TOKENS.limited)], limits: { maxSamplesPerWrite: 100 } },
    },
  }),
);
const agg = await startAggregator(t, { walDir, tenantsFile, numShards: 2, flushIdleMs: 3600_000, logLevel: 'trace' });
const client = new RawClient(t, agg.address);
/** Everything the aggregator answered (statuses, error details), for the secret grep. */
const answers: string[] = [];

const hdr = (tenant: string, shard: number, token?: string): Record<string, string> => ({
  'x-strata-tenant': tenant,
  'x-strata-shard': String(shard),
  ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}),
});
const series = (id: bigint, ts: bigint[], bits: bigint[]) => ({ id: id.toString(), timestamps: tsBytes(ts), values: bitsBytes(bits) });
/** The samples each tenant writes: two series per shard, special values included. */
function dataOf(tenant: Tenant, w = W): Map<bigint, { ts: bigint[]; bits: bigint[] }> {
  const base = BigInt(Object.keys(TOKENS).indexOf(tenant) + 1) * 1000n;
  const out = new Map<bigint, { ts: bigint[]; bits: bigint[] }>();
  for (const id of [base + 2n, base + 3n, base + 4n, base + 5n]) {
    const ts = Array.from({ length: 50 }, (_, k) => w + BigInt(k) * 15_000n);
    const bits = ts.map((_, k) => (k === 7 ? STALE_NAN : k === 8 ? NEG_ZERO : bitsOf(Number(id) + k / 4)));
    out.set(id, { ts, bits });
  }
  return out;
}

async function call(method: 'Write' | 'Seal' | 'Status', req: unknown, headers: Record<string, string>) {
  const r = await client.call(method, req, headers);
  answers.push(JSON.stringify(r.res ?? {}), r.err?.details ?? '', JSON.stringify(r.err?.metadata?.getMap() ?? {}));
  return r;
}

async function writeAndSeal(tenant: Tenant): Promise<{ bytes: number; samples: number }> {
  const data = dataOf(tenant);
  let samples = 0;
  for (const shard of [0, 1]) {
    const mine = [...data].filter(([id]) => Number(id % 2n) === shard).map(([id, s]) => series(id, s.ts, s.bits));
    const r = await call('Write', { series: mine }, hdr(tenant, shard, TOKENS[tenant]));
    if (r.err) throw r.err;
    samples += mine.length * 50;
  }
  let bytes = 0;
  for (const shard of [0, 1]) {
    const r = await call('Seal', { window_start_ms: String(W) }, hdr(tenant, shard, TOKENS[tenant]));
    if (r.err) throw r.err;
    for (const b of (r.res as { blocks: { bytes: string }[] }).blocks) bytes += Number(b.bytes);
  }
  return { bytes, samples };
}

/** Every key in `bucket`, listed as `user` with the raw SDK (or the error name when refused). */
async function listAs(bucket: string, user: TestUser): Promise<string[] | string> {
  const c = adminClient(env, user);
  try {
    const res = await c.send(new ListObjectsV2Command({ Bucket: bucket }));
    return (res.Contents ?? []).map((o) => o.Key ?? '').sort();
  } catch (err) {
    return (err as Error).name;
  } finally {
    c.destroy();
  }
}

t.test("each tenant's blocks land only in its own bucket and prefix, bit-exact", async (t) => {
  const written = new Map<Tenant, { bytes: number; samples: number }>();
  for (const tenant of ['alpha', 'beta', 'gamma', 'limited'] as const) written.set(tenant, await writeAndSeal(tenant));
  const keys = (tenant: string, prefix = '') => [0, 1].map((s) => prefix + blockKey(tenant, s, W));
  t.same(await listAs(bucketA, 1), keys('alpha', PREFIX_A), "alpha's bucket (user 1) holds alpha's blocks under its prefix, nothing else");
  t.same(await listAs(bucketB, 2), keys('beta'), "beta's bucket (user 2) holds beta's blocks only");
  t.same(await listAs(bucketD, 1), [...keys('gamma'), ...keys('limited')].sort(), 'the default bucket holds the default tenants only');
  t.equal(await listAs(bucketA, 2), 'AccessDenied', "user 2 cannot see alpha's bucket");
  t.equal(await listAs(bucketD, 2), 'AccessDenied', 'user 2 cannot see the default bucket');
  t.equal(await listAs(bucketB, 1), 'AccessDenied', "user 1 cannot see beta's bucket");

  const open = (bucket: string, user: TestUser, prefix?: string) => {
    const b = new S3Bucket(s3BucketConfig(env, bucket, prefix ? { prefix: PREFIX_A } : {}, user));
    t.teardown(() => b.close());
    return b;
  };
  const buckets: Record<Tenant, S3Bucket> = { alpha: open(bucketA, 1, PREFIX_A), beta: open(bucketB, 2), gamma: open(bucketD, 1), limited: open(bucketD, 1) };
  for (const tenant of ['alpha', 'beta', 'gamma', 'limited'] as const) {
    const got = new Map<bigint, { ts: bigint[]; bits: bigint[] }>();
    for (const shard of [0, 1]) for (const [id, s] of await readBlock(buckets[tenant], blockKey(tenant, shard, W))) got.set(id, s);
    t.same(got, dataOf(tenant), `${tenant}: every sample bit-exact in its own blocks`);
  }
  const metrics = await scrape(agg.metricsPort);
  for (const tenant of ['alpha', 'beta', 'gamma', 'limited'] as const) {
    t.equal(metricValue(metrics, `strata_aggregator_samples_ingested_total{tenant="${tenant}"}`), written.get(tenant)!.samples, `${tenant}: samples ingested`);
    t.equal(metricValue(metrics, `strata_aggregator_flush_bytes_total{tenant="${tenant}"}`), written.get(tenant)!.bytes, `${tenant}: bytes uploaded`);
  }
  t.equal(metricValue(metrics, 'strata_aggregator_samples_ingested_total{tenant="_other"}'), 0, 'no unconfigured tenant');
  answers.push(metrics);
});

t.test('cross-tenant and malformed attempts are refused with the right status and store nothing', async (t) => {
  const req = { series: [series(2n, [W2 + 1n], [bitsOf(1)])] };
  const hash = hashToken(TOKENS.alpha);
  const cases: [string, 'Write' | 'Seal', Record<string, string>, status, RegExp][] = [
    ["alpha's token for beta", 'Write', hdr('beta', 0, TOKENS.alpha), status.PERMISSION_DENIED, /does not grant access to tenant "beta"/],
    ["alpha's token to seal beta", 'Seal', hdr('beta', 0, TOKENS.alpha), status.PERMISSION_DENIED, /tenant "beta"/],
    ["beta's token for alpha", 'Write', hdr('alpha', 0, TOKENS.beta), status.PERMISSION_DENIED, /tenant "alpha"/],
    ['valid token, unknown tenant', 'Write', hdr('ghost', 0, TOKENS.alpha), status.PERMISSION_DENIED, /tenant "ghost"/],
    ['no token', 'Write', hdr('beta', 0), status.UNAUTHENTICATED, /missing bearer token/],
    ['no token, seal', 'Seal', hdr('beta', 0), status.UNAUTHENTICATED, /missing bearer token/],
    ['wrong token', 'Write', hdr('beta', 0, 'strata_wrong'), status.UNAUTHENTICATED, /invalid bearer token/],
    ['wrong token, unknown tenant', 'Write', hdr('ghost', 0, 'strata_wrong'), status.UNAUTHENTICATED, /invalid bearer token/],
    ['the hash used as the token', 'Write', hdr('alpha', 0, hash), status.UNAUTHENTICATED, /invalid bearer token/],
    ['not a bearer token', 'Write', { ...hdr('alpha', 0), authorization: `Basic ${TOKENS.alpha}` }, status.UNAUTHENTICATED, /must be "Bearer <token>"/],
    ['../a', 'Write', hdr('../a', 0, TOKENS.alpha), status.INVALID_ARGUMENT, /x-strata-tenant/],
    ['a/b', 'Write', hdr('a/b', 0, TOKENS.alpha), status.INVALID_ARGUMENT, /x-strata-tenant/],
    ['empty tenant', 'Write', hdr('', 0, TOKENS.alpha), status.INVALID_ARGUMENT, /x-strata-tenant: missing header/],
    ['300 characters', 'Write', hdr('a'.repeat(300), 0, TOKENS.alpha), status.INVALID_ARGUMENT, /x-strata-tenant/],
    ['upper case', 'Write', hdr('Alpha', 0, TOKENS.alpha), status.INVALID_ARGUMENT, /x-strata-tenant/],
    ['no tenant header', 'Write', { 'x-strata-shard': '0', authorization: `Bearer ${TOKENS.alpha}` }, status.INVALID_ARGUMENT, /x-strata-tenant: missing header/],
  ];
  for (const [name, method, headers, code, msg] of cases) {
    const r = await call(method, method === 'Write' ? req : { window_start_ms: String(W2) }, headers);
    t.equal(r.err?.code, code, `${name}: ${status[code]}`);
    t.match(r.err?.details ?? '', msg, `${name}: message`);
  }
  // non-ASCII tenant ids: grpc-js refuses to send them, so they go over raw HTTP/2 (latin1 bytes)
  const def = writerServiceDefinition()['Write']!;
  const body = def.requestSerialize(req);
  for (const tenant of ['alphá', 'ålpha', '\u00e0\u00e9', 'alpha\u00a0']) {
    const r = await rawGrpcCall(agg.address, def.path, hdr(tenant, 0, TOKENS.alpha), body);
    answers.push(r.details);
    t.equal(r.code, status.INVALID_ARGUMENT, `non-ASCII tenant ${JSON.stringify(tenant)}: INVALID_ARGUMENT`);
  }
  const utf8 = Buffer.from('álpha', 'utf8').toString('latin1'); // UTF-8 bytes on the wire
  t.equal((await rawGrpcCall(agg.address, def.path, hdr(utf8, 0, TOKENS.alpha), body)).code, status.INVALID_ARGUMENT, 'UTF-8 tenant id: INVALID_ARGUMENT');

  for (const tenant of ['alpha', 'beta', 'gamma', 'limited'] as const) {
    const s = await call('Status', {}, { authorization: `Bearer ${TOKENS[tenant]}` });
    t.same((s.res as { windows: unknown[] }).windows, [], `${tenant}: nothing in the WAL`);
  }
  const walRoot = join(walDir, 'wal');
  t.same(readdirSync(walRoot).sort(), ['alpha', 'beta', 'gamma', 'limited'], 'WAL directories of the configured tenants only');
  const gens = readdirSync(walRoot, { recursive: true }).map(String).filter((p) => p.split('/').length === 3);
  t.same(gens, [], 'and no WAL generation in them');
  t.equal((await listAs(bucketB, 2)).length, 2, "beta's bucket unchanged");
  t.equal((await listAs(bucketD, 1)).length, 4, 'the default bucket unchanged');
});

t.test("Status needs a token and shows only the caller's tenant", async (t) => {
  for (const tenant of ['alpha', 'beta'] as const) {
    const data = dataOf(tenant, W2);
    const mine = [...data].filter(([id]) => id % 2n === 0n).map(([id, s]) => series(id, s.ts, s.bits));
    t.equal((await call('Write', { series: mine }, hdr(tenant, 0, TOKENS[tenant]))).err, null, `${tenant} writes`);
  }
  for (const tenant of ['alpha', 'beta', 'gamma'] as const) {
    const r = await call('Status', {}, { authorization: `Bearer ${TOKENS[tenant]}` });
    const s = r.res as { windows: { tenant: string }[]; last_flushes: { block: { tenant: string } }[]; wal_bytes: string; wal_syncs: string; wal_requests: string };
    t.same([...new Set(s.windows.map((w) => w.tenant))], tenant === 'gamma' ? [] : [tenant], `${tenant} sees only its own windows`);
    t.ok(s.last_flushes.every((f) => f.block.tenant === tenant), `${tenant} sees only its own flushes`);
    t.ok(s.last_flushes.length > 0, `${tenant} sees its flushes`);
    t.equal(s.wal_syncs, '0', 'no aggregator-wide counters');
    if (tenant === 'gamma') t.equal(s.wal_bytes, '0', "gamma's WAL bytes only");
  }
  t.equal((await call('Status', {}, {})).err?.code, status.UNAUTHENTICATED, 'no token');
  t.equal((await call('Status', {}, { authorization: 'Bearer strata_wrong' })).err?.code, status.UNAUTHENTICATED, 'wrong token');
  for (const tenant of ['alpha', 'beta'] as const) t.equal((await call('Seal', { window_start_ms: String(W2) }, hdr(tenant, 0, TOKENS[tenant]))).err, null);
});

t.test('the per-tenant maxSamplesPerWrite answers RESOURCE_EXHAUSTED naming the limit', async (t) => {
  const n = (k: number) => series(1000n, Array.from({ length: k }, (_, i) => W2 + BigInt(i) * 1000n), Array.from({ length: k }, (_, i) => bitsOf(i)));
  let r = await call('Write', { series: [n(101)] }, hdr('limited', 0, TOKENS.limited));
  t.equal(r.err?.code, status.RESOURCE_EXHAUSTED);
  t.match(r.err?.details ?? '', /101 samples, more than the limit maxSamplesPerWrite \(100\) of tenant "limited"/);
  r = await call('Status', {}, { authorization: `Bearer ${TOKENS.limited}` });
  t.same((r.res as { windows: unknown[] }).windows, [], 'nothing stored');
  t.equal((await call('Write', { series: [n(100)] }, hdr('limited', 0, TOKENS.limited))).err, null, 'at the limit: accepted');
  t.equal((await call('Write', { series: [n(101)] }, hdr('gamma', 0, TOKENS.gamma))).err, null, 'other tenants are not limited');
});

t.test('no token, token hash or credential in any log line, /metrics, Status answer or error', async (t) => {
  answers.push(await scrape(agg.metricsPort));
  agg.proc.kill('SIGTERM');
  t.same(await agg.exited, { code: 0, signal: null });
  const text = [agg.output.stdout, agg.output.stderr, ...answers].join('\n');
  t.ok(agg.logs.length > 20, `${agg.logs.length} log lines checked`);
  t.ok(agg.logs.some((l) => l.msg === 'request failed'), 'refused requests were logged (trace level)');
  const secrets = [...Object.values(TOKENS), ...Object.values(TOKENS).map((tok) => hashToken(tok).slice('sha256:'.length)), ...s3Secrets()];
  t.same(leakedSecrets(text, secrets), [], 'no secret found');
  t.ok(text.includes(bucketB), 'the grep saw real output (bucket names are fine)');
});
