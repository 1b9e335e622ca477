/**
 * The tenants file changing under a running aggregator (child process, Ceph RGW):
 *
 * - wrong bring-your-own-bucket credentials (a tenant pointing at RGW user 2's bucket with user 1's
 *   keys): writes are acknowledged and kept in the WAL, the flush keeps retrying with a clear error
 *   in the logs and in `strata_aggregator_flush_errors_total`; rewriting the file to reference
 *   secret files with the right keys reloads it and the flush succeeds with nothing lost;
 *   rotating the keys in those secret files takes effect the same way; SIGHUP reloads;
 * - a tenant added while writes are running can write, and no in-flight write fails;
 * - a broken file is refused and the old config stays in force;
 * - no token, hash or credential appears in any output of the process.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/tenancy/reload.test.ts
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import t, { type Test } from 'tap';
import { blockKey, DEFAULT_BLOCK_DURATION_MS } from '../../src/format/key.js';
import { S3Bucket } from '../../src/objstore/s3/index.js';
import { hashToken, newToken } from '../../src/tenancy/config.js';
import { createTestBucket, s3BucketConfig, s3TestEnv } from '../support/s3env.js';
import { credentialEnvRefs, leakedSecrets, metricValue, replaceFile, s3Secrets, s3TenantBucket, scrape } from '../support/tenancy.js';
import { bitsBytes, bitsOf, eventually, RawClient, readBlock, startAggregator, tempDir, tsBytes, type StatusResponse } from '../support/aggregator.js';

const H = BigInt(DEFAULT_BLOCK_DURATION_MS);
const W = ((BigInt(Date.now()) - 24n * 3600n * 1000n) / H) * H;
const STALE_NAN = 0x7ff0000000000002n;

const env = s3TestEnv();
const TOKENS = { alpha: newToken(), byob: newToken(), delta: newToken() };
const bucketA = await createTestBucket(t, { user: 1, tag: 'rel-a' });
const bucketC = await createTestBucket(t, { user: 2, tag: 'rel-byob' });
const bucketD = await createTestBucket(t, { user: 1, tag: 'rel-def' });

const dir = tempDir('tenancy-reload');
const secretsDir = join(dir, 'secrets');
mkdirSync(secretsDir);
const KEY_ID_FILE = join(secretsDir, 'access-key-id');
const SECRET_FILE = join(secretsDir, 'secret-access-key');
const fileRefs = { accessKeyId: { file: KEY_ID_FILE }, secretAccessKey: { file: SECRET_FILE } };
const tenantsFile = join(dir, 'tenants.json');

/** The tenants file: alpha on its own bucket, byob on user 2's bucket with `byobCredentials`. */
function tenantsConfig(byobCredentials: Record<string, unknown>, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    defaultBucket: s3TenantBucket(bucketD, credentialEnvRefs(1)),
    tenants: {
      alpha: { tokens: [hashToken(TOKENS.alpha)], bucket: s3TenantBucket(bucketA, credentialEnvRefs(1)) },
      byob: { tokens: [hashToken(TOKENS.byob)], bucket: s3TenantBucket(bucketC, byobCredentials) },
      ...extra,
    },
  });
}
function writeKeys(user: 1 | 2): void {
  replaceFile(KEY_ID_FILE, `${user === 1 ? env.accessKeyId : env.accessKeyId2}\n`);
  replaceFile(SECRET_FILE, `${user === 1 ? env.secretAccessKey : env.secretAccessKey2}\n`);
}

// byob starts with user 1's keys (by environment reference) for user 2's bucket: wrong
writeFileSync(tenantsFile, tenantsConfig(credentialEnvRefs(1)));
const agg = await startAggregator(t, { walDir: join(dir, 'wal'), tenantsFile, numShards: 1, flushIdleMs: 3600_000, flushRetryBaseMs: 200, flushRetryMaxMs: 800, logLevel: 'debug' });
const client = new RawClient(t, agg.address);
const answers: string[] = [];
const bucketOfC = new S3Bucket(s3BucketConfig(env, bucketC, {}, 2));
t.teardown(() => bucketOfC.close());

const hdr = (tenant: string, token: string): Record<string, string> => ({ 'x-strata-tenant': tenant, 'x-strata-shard': '0', authorization: `Bearer ${token}` });
const series = (id: bigint, ts: bigint[], bits: bigint[]) => ({ id: id.toString(), timestamps: tsBytes(ts), values: bitsBytes(bits) });

async function call(method: 'Write' | 'Seal' | 'Status', req: unknown, headers: Record<string, string>) {
  const r = await client.call(method, req, headers);
  answers.push(JSON.stringify(r.res ?? {}), r.err?.details ?? '');
  return r;
}
async function statusOf(tenant: keyof typeof TOKENS): Promise<StatusResponse> {
  const r = await call('Status', {}, { authorization: `Bearer ${TOKENS[tenant]}` });
  if (r.err) throw r.err;
  return r.res as unknown as StatusResponse;
}
const flushFailures = () => agg.logs.filter((l) => l.msg === 'flush failed; the wal is kept' && l.tenant === 'byob');
const reloads = async (result: 'ok' | 'refused') => metricValue(await scrape(agg.metricsPort), `strata_aggregator_tenants_reloads_total{result="${result}"}`);

/** Writes `n` requests of byob samples (special values included); returns what was sent. */
async function writeByob(t: Test, w: bigint, first: number, n: number): Promise<Map<bigint, { ts: bigint[]; bits: bigint[] }>> {
  const sent = new Map<bigint, { ts: bigint[]; bits: bigint[] }>();
  for (let r = 0; r < n; r++) {
    const id = BigInt(first + r);
    const ts = Array.from({ length: 200 }, (_, k) => w + BigInt(k) * 10_000n);
    const bits = ts.map((_, k) => (k % 50 === 3 ? STALE_NAN : bitsOf(Number(id) * 1.5 + k)));
    const res = await call('Write', { series: [series(id, ts, bits)] }, hdr('byob', TOKENS.byob));
    t.equal(res.err, null, `byob request ${r} acknowledged`);
    sent.set(id, { ts, bits });
  }
  return sent;
}

t.test('wrong BYOB credentials keep the WAL and retry with a clear error; a reload with fixed credentials flushes everything', async (t) => {
  const sent = await writeByob(t, W, 1, 3);
  const sealed = await call('Seal', { window_start_ms: String(W) }, hdr('byob', TOKENS.byob));
  t.equal(sealed.err?.code, status.UNAVAILABLE, 'seal: UNAVAILABLE while the bucket refuses the credentials');
  t.match(sealed.err?.details ?? '', /access denied/);

  await eventually('three failed flush attempts', async () => (flushFailures().length >= 3 ? true : null), 20_000);
  const line = flushFailures()[0]!;
  t.equal(line.reason, 'access_denied', 'the log names the reason');
  t.equal(line.bucket, `s3://${bucketC}`, 'and the bucket');
  t.match(String(line.hint), /credentials.*reload/, 'and says what to do');
  t.match(JSON.stringify(line.err), /access denied/i);
  let st = await statusOf('byob');
  t.equal(st.windows.length, 1, 'the WAL is kept');
  t.equal(st.windows[0]!.samples, '600', 'with every sample');
  t.match(st.last_flushes[0]?.error ?? '', /access denied/, 'Status shows the error');
  const metrics = await scrape(agg.metricsPort);
  t.ok(metricValue(metrics, 'strata_aggregator_flush_errors_total{tenant="byob",reason="access_denied"}') >= 3, 'the errors are counted per tenant and reason');
  answers.push(metrics);

  // fix: the file now references secret files holding user 2's keys
  writeKeys(2);
  const okBefore = await reloads('ok');
  replaceFile(tenantsFile, tenantsConfig(fileRefs));
  st = await eventually('the flush after the reload', async () => {
    const s = await statusOf('byob');
    return s.windows.length === 0 ? s : null;
  });
  t.ok((await reloads('ok')) > okBefore, 'the file change was reloaded');
  t.equal(st.last_flushes[0]?.error, '', 'the last flush succeeded');
  t.equal(st.last_flushes[0]?.block?.samples, '600');
  t.same(await readBlock(bucketOfC, blockKey('byob', 0, W)), sent, 'every sample bit-exact in the block, in the right bucket');
});

t.test('rotating the keys in the secret files takes effect without a restart; SIGHUP reloads', async (t) => {
  const w = W - H;
  const okBefore = await reloads('ok');
  writeKeys(1); // wrong again: the watcher of the secrets directory reloads
  await eventually('the reload after the secret change', async () => ((await reloads('ok')) > okBefore ? true : null), 10_000);
  const sent = await writeByob(t, w, 10, 2);
  const failuresBefore = flushFailures().length;
  t.equal((await call('Seal', { window_start_ms: String(w) }, hdr('byob', TOKENS.byob))).err?.code, status.UNAVAILABLE, 'the rotated (wrong) keys are used');
  await eventually('the failure to be logged', async () => (flushFailures().length > failuresBefore ? true : null));
  writeKeys(2);
  await eventually('the flush after rotating back', async () => ((await statusOf('byob')).windows.length === 0 ? true : null));
  t.same(await readBlock(bucketOfC, blockKey('byob', 0, w)), sent, 'nothing lost');

  const before = await reloads('ok');
  agg.proc.kill('SIGHUP');
  await eventually('the reload after SIGHUP', async () => ((await reloads('ok')) > before ? true : null), 10_000);
  t.pass('SIGHUP reloaded the tenants file');
});

t.test('a tenant added while writes are running can write; a broken file keeps the old config', async (t) => {
  const w = W + H;
  let stop = false;
  const acked: { id: bigint; ts: bigint[]; bits: bigint[] }[] = [];
  const failures: string[] = [];
  const writer = async (k: number) => {
    for (let i = 0; !stop; i++) {
      const id = BigInt(k * 100_000 + i);
      const ts = Array.from({ length: 20 }, (_, j) => w + BigInt(j) * 1000n);
      const bits = ts.map((_, j) => bitsOf(Number(id) + j / 2));
      const r = await call('Write', { series: [series(id, ts, bits)] }, hdr('alpha', TOKENS.alpha));
      if (r.err) failures.push(`${status[r.err.code]}: ${r.err.details}`);
      else acked.push({ id, ts, bits });
    }
  };
  const writers = [1, 2, 3, 4].map(writer);
  const deltaWrite = () => call('Write', { series: [series(7n, [w + 1n], [bitsOf(7)])] }, hdr('delta', TOKENS.delta));
  t.equal((await deltaWrite()).err?.code, status.UNAUTHENTICATED, 'delta is unknown before the reload');
  replaceFile(tenantsFile, tenantsConfig(fileRefs, { delta: { tokens: [hashToken(TOKENS.delta)] } }));
  await eventually('delta can write', async () => ((await deltaWrite()).err === null ? true : null));
  t.pass('the added tenant can write');

  const refusedBefore = await reloads('refused');
  replaceFile(tenantsFile, '{"tenants": {"alpha": ');
  await eventually('the broken file to be refused', async () => ((await reloads('refused')) > refusedBefore ? true : null), 10_000);
  // the log line is written after the counter moves: wait for the line itself
  const refusal = await eventually('the refusal to be logged', async () => agg.logs.find((l) => l.msg === 'tenants config refused; keeping the previous one' && /not valid JSON/.test(String(l.err))) ?? null, 10_000);
  t.match(String(refusal.err), /not valid JSON/, 'the refusal is logged with its reason');
  t.equal((await deltaWrite()).err, null, 'the old config stays in force (delta)');
  const beforeStop = acked.length;
  await eventually('more alpha writes after the broken file', async () => (acked.length > beforeStop + 4 ? true : null));
  stop = true;
  await Promise.all(writers);
  t.same(failures, [], `no in-flight write failed during the reloads (${acked.length} acknowledged)`);
  t.equal((await call('Seal', { window_start_ms: String(w) }, hdr('alpha', TOKENS.alpha))).err, null);
  t.equal((await call('Seal', { window_start_ms: String(w) }, hdr('delta', TOKENS.delta))).err, null);
  const bucketOfA = new S3Bucket(s3BucketConfig(env, bucketA));
  t.teardown(() => bucketOfA.close());
  const got = await readBlock(bucketOfA, blockKey('alpha', 0, w));
  t.same(got, new Map(acked.map((a) => [a.id, { ts: a.ts, bits: a.bits }])), "every acknowledged alpha sample is in alpha's block");
  const bucketOfD = new S3Bucket(s3BucketConfig(env, bucketD));
  t.teardown(() => bucketOfD.close());
  t.same(await readBlock(bucketOfD, blockKey('delta', 0, w)), new Map([[7n, { ts: [w + 1n], bits: [bitsOf(7)] }]]), "delta's block is in the default bucket");
});

t.test('no token, token hash or credential in any output of the process', async (t) => {
  answers.push(await scrape(agg.metricsPort));
  agg.proc.kill('SIGTERM');
  t.same(await agg.exited, { code: 0, signal: null });
  const text = [agg.output.stdout, agg.output.stderr, ...answers].join('\n');
  t.ok(flushFailures().length >= 4, 'the failed flushes (with their S3 errors) are part of the grep');
  const secrets = [...Object.values(TOKENS), ...Object.values(TOKENS).map((tok) => hashToken(tok).slice('sha256:'.length)), ...s3Secrets()];
  t.same(leakedSecrets(text, secrets), [], 'no secret found');
});
