import t from 'tap';
import { TenantBucketResolver } from '../../src/storage-gateway/tenant-buckets.js';
import { ALL_PARTITION_CLIENTS } from '../../src/tenancy/tenants.js';
import { mkdtempSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { grpcStatusOf } from '../../src/common/grpc-status.js';
import { ErrorCode, InvalidArgumentError, StrataError } from '../../src/errors.js';
import type { Bucket, BucketConfig } from '../../src/objstore/index.js';
import { hashToken, loadTenantsFile, newToken, parseTenantsConfig, retentionOf } from '../../src/tenancy/config.js';
import { OTHER_TENANT_LABEL, TenantRegistry } from '../../src/tenancy/tenants.js';
import { createLogger } from '../../src/common/logger.js';

const dir = mkdtempSync(join(tmpdir(), 'strata-tenancy-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const TOKEN_A = newToken();
const TOKEN_A2 = newToken();
const TOKEN_B = newToken();
const SECRET = 'S3CR3T-value-that-must-not-leak';
const ENV = { ACME_KEY_ID: 'AKIDACME', ACME_SECRET: SECRET };

function fileConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    defaultBucket: { type: 'filesystem', path: join(dir, 'default') },
    tenants: {
      acme: {
        tokens: [hashToken(TOKEN_A), hashToken(TOKEN_A2)],
        bucket: { type: 's3', endpoint: 'http://127.0.0.1:1', region: 'us-east-1', bucket: 'acme-metrics', forcePathStyle: true, credentials: { accessKeyId: { env: 'ACME_KEY_ID' }, secretAccessKey: { env: 'ACME_SECRET' } } },
        limits: { maxSamplesPerWrite: 1000 },
      },
      beta: { tokens: [hashToken(TOKEN_B)], limits: { maxSeriesPerRead: 10 } },
    },
    ...extra,
  };
}

/** A schedule() for TenantRegistry whose timers fire only when the test says so. */
function manualTimers(): { schedule: (fn: () => void, ms: number) => () => void; pending(): number[]; fire(): Promise<void> } {
  const due = new Map<() => void, number>();
  return {
    schedule: (fn, ms) => {
      due.set(fn, ms);
      return () => due.delete(fn);
    },
    pending: () => [...due.values()],
    async fire() {
      const fns = [...due.keys()];
      due.clear();
      for (const fn of fns) fn();
      await new Promise((r) => setImmediate(r)); // closes run as promises
    },
  };
}

function grpcCode(fn: () => unknown): string {
  try {
    fn();
    return 'OK';
  } catch (err) {
    if (err instanceof InvalidArgumentError) return `INVALID_ARGUMENT(${err.field})`;
    if (err instanceof StrataError) return status[grpcStatusOf(err)];
    throw err;
  }
}

t.test('authenticate() answers every case without revealing whether a tenant exists', async (t) => {
  const reg = new TenantRegistry(await parseTenantsConfig(fileConfig(), 'test', ENV));
  const cases: [string, string | null, string | null, string][] = [
    ['own token', 'acme', TOKEN_A, 'OK'],
    ['second own token', 'acme', TOKEN_A2, 'OK'],
    ['no token', 'acme', null, 'UNAUTHENTICATED'],
    ['empty token', 'acme', '', 'UNAUTHENTICATED'],
    ['wrong token', 'acme', 'strata_nope', 'UNAUTHENTICATED'],
    ['token hash used as token', 'acme', hashToken(TOKEN_A), 'UNAUTHENTICATED'],
    ["acme's token for beta", 'beta', TOKEN_A, 'PERMISSION_DENIED'],
    ["beta's token for acme", 'acme', TOKEN_B, 'PERMISSION_DENIED'],
    ['valid token, unknown tenant', 'ghost', TOKEN_B, 'PERMISSION_DENIED'],
    ['wrong token, unknown tenant', 'ghost', 'strata_nope', 'UNAUTHENTICATED'],
    ['path escape', '../a', TOKEN_A, 'INVALID_ARGUMENT(x-strata-tenant)'],
    ['slash', 'a/b', TOKEN_A, 'INVALID_ARGUMENT(x-strata-tenant)'],
    ['empty tenant', '', TOKEN_A, 'INVALID_ARGUMENT(x-strata-tenant)'],
    ['missing tenant', null, TOKEN_A, 'INVALID_ARGUMENT(x-strata-tenant)'],
    ['300 characters', 'a'.repeat(300), TOKEN_A, 'INVALID_ARGUMENT(x-strata-tenant)'],
    ['non-ASCII', 'acmé', TOKEN_A, 'INVALID_ARGUMENT(x-strata-tenant)'],
  ];
  for (const [name, tenant, token, want] of cases) t.equal(grpcCode(() => reg.authenticate(tenant, token)), want, name);
  t.same(reg.authenticate('acme', TOKEN_A).limits, { maxSamplesPerWrite: 1000 });
  t.same(reg.authenticate('beta', TOKEN_B).limits, { maxSeriesPerRead: 10 });
  t.equal(reg.label('acme'), 'acme');
  t.equal(reg.label('ghost'), OTHER_TENANT_LABEL);
  const open = new TenantRegistry(await parseTenantsConfig({ ...fileConfig(), authRequired: false }, 'test', ENV));
  t.equal(grpcCode(() => open.authenticate('anyone', null)), 'OK', 'authRequired: false needs no token');
  t.equal(grpcCode(() => open.authenticate('../x', null)), 'INVALID_ARGUMENT(x-strata-tenant)');
});

t.test('the tenants file is validated with the offending path named and no secret echoed', async (t) => {
  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['unknown top-level key', fileConfig({ extra: 1 }), /\(root\)|extra/],
    ['unknown tenant key', { ...fileConfig(), tenants: { acme: { tokens: [], colour: 'red' } } }, /tenants\.acme/],
    ['tenant id escaping its prefix', { ...fileConfig(), tenants: { '../a': {} } }, /tenants\.\.\.\/a/],
    ['upper-case tenant id', { ...fileConfig(), tenants: { Acme: {} } }, /tenants\.Acme/],
    ['300-character tenant id', { ...fileConfig(), tenants: { ['a'.repeat(300)]: {} } }, /tenants\.a{300}/],
    ['raw token instead of hash', { ...fileConfig(), tenants: { acme: { tokens: [TOKEN_A] } } }, /tenants\.acme\.tokens\.0/],
    ['inline secret', { ...fileConfig(), tenants: { acme: { bucket: { type: 's3', region: 'r', bucket: 'bkt', credentials: { accessKeyId: 'AKID', secretAccessKey: SECRET } } } } }, /tenants\.acme\.bucket\.credentials\.accessKeyId: must be \{ env: VARIABLE \} or \{ file: PATH \}/],
    ['missing env var', { ...fileConfig(), tenants: { acme: { bucket: { type: 's3', region: 'r', bucket: 'bkt', credentials: { accessKeyId: { env: 'NOPE_ID' }, secretAccessKey: { env: 'ACME_SECRET' } } } } } }, /tenants\.acme\.bucket\.credentials\.accessKeyId: environment variable NOPE_ID is not set/],
    ['missing secret file', { ...fileConfig(), tenants: { acme: { bucket: { type: 's3', region: 'r', bucket: 'bkt', credentials: { accessKeyId: { file: '/nonexistent/id' }, secretAccessKey: { env: 'ACME_SECRET' } } } } } }, /accessKeyId: cannot read file \/nonexistent\/id/],
    ['duplicate token', { ...fileConfig(), tenants: { a: { tokens: [hashToken(TOKEN_A)] }, b: { tokens: [hashToken(TOKEN_A)] } } }, /tenants\.b\.tokens: a token hash is also listed for tenant a/],
    ['bad bucket type', { ...fileConfig(), defaultBucket: { type: 'ftp' } }, /defaultBucket/],
    ['retention below a minute', fileConfig({ retentionMs: 59_999 }), /retentionMs: must be an integer of at least 60000 ms/],
    ['retention as a string', fileConfig({ retentionMs: '7d' }), /retentionMs/],
    ["a tenant's fractional retention", { ...fileConfig(), tenants: { acme: { retentionMs: 86_400_000.5 } } }, /tenants\.acme\.retentionMs/],
  ];
  for (const [name, raw, re] of bad) {
    const err = await parseTenantsConfig(raw, 'tenants.yaml', ENV).then(() => null, (e: unknown) => e);
    t.ok(err instanceof StrataError && err.code === ErrorCode.CONFIG, `${name}: CONFIG error`);
    t.match((err as Error).message, re, name);
    t.notMatch((err as Error).message, SECRET, `${name}: no secret in the message`);
    t.notMatch((err as Error).message, TOKEN_A, `${name}: no token in the message`);
  }
  // retention: the tenant's own, else the file's default, else none
  const withRetention = await parseTenantsConfig({ ...fileConfig({ retentionMs: 7 * 86_400_000 }), tenants: { acme: { retentionMs: 86_400_000 }, beta: {} } }, 'test', {});
  t.equal(retentionOf(withRetention, 'acme'), 86_400_000, "a tenant's own retention wins");
  t.equal(retentionOf(withRetention, 'beta'), 7 * 86_400_000, 'a tenant without one has the default');
  t.equal(retentionOf(withRetention, 'unlisted'), 7 * 86_400_000, 'so has a tenant not in the file');
  t.equal(retentionOf(await parseTenantsConfig(fileConfig(), 'test', ENV), 'acme'), null, 'no retention anywhere: kept');
  // secrets by file (a mounted Kubernetes Secret)
  writeFileSync(join(dir, 'key-id'), 'AKIDFILE\n');
  writeFileSync(join(dir, 'secret'), `${SECRET}\n`);
  const cfg = await parseTenantsConfig(
    { ...fileConfig(), tenants: { acme: { bucket: { type: 's3', region: 'r', bucket: 'bkt', credentials: { accessKeyId: { file: join(dir, 'key-id') }, secretAccessKey: { file: join(dir, 'secret') } } } } } },
    'test',
    {},
  );
  const b = cfg.tenants.get('acme')!.bucket;
  t.ok(b?.type === 's3' && b.credentials?.accessKeyId === 'AKIDFILE' && b.credentials.secretAccessKey === SECRET, 'file references resolved, newline trimmed');
});

t.test('bucket clients are created once per distinct configuration and retired after a swap', async (t) => {
  const opened: BucketConfig[] = [];
  const closed: string[] = [];
  const fake = (cfg: BucketConfig): Promise<Bucket> => {
    opened.push(cfg);
    const name = cfg.type === 's3' ? `s3:${cfg.bucket}:${cfg.credentials?.accessKeyId}` : `fs:${cfg.path}`;
    return Promise.resolve({ name, close: async () => void closed.push(name) } as unknown as Bucket);
  };
  const cfg = await parseTenantsConfig({ ...fileConfig(), tenants: { ...(fileConfig()['tenants'] as object), gamma: {} } }, 'test', ENV);
  const timers = manualTimers();
  const reg = new TenantRegistry(cfg, { openBucket: fake, retireAfterMs: 60_000, schedule: timers.schedule });
  const acme = await reg.bucketFor('acme');
  t.equal(await reg.bucketFor('acme'), acme, 'reused');
  t.equal(await reg.bucketFor('beta'), await reg.bucketFor('gamma'), 'tenants on the default bucket share one client');
  t.not(await reg.bucketFor('beta'), acme, "acme's own bucket is separate");
  t.equal(opened.length, 2);
  // rotate acme's credentials
  const rotated = await parseTenantsConfig(fileConfig(), 'test', { ...ENV, ACME_KEY_ID: 'AKIDNEW' });
  reg.swap(rotated);
  const acme2 = await reg.bucketFor('acme');
  t.not(acme2, acme, 'new client after credential rotation');
  t.equal((acme2 as unknown as { name: string }).name, 's3:acme-metrics:AKIDNEW');
  t.same(closed, [], 'the old client stays open for the retire delay');
  t.same(timers.pending(), [60_000]);
  await timers.fire();
  t.same(closed, ['s3:acme-metrics:AKIDACME'], 'the old client is closed after the retire delay');
  await reg.close();
  t.equal(closed.length, 3);
});

t.test('clients of time-partitioned buckets are bounded: the least recently used one is retired', async (t) => {
  const closed: string[] = [];
  const opened: string[] = [];
  const fake = (cfg: BucketConfig): Promise<Bucket> => {
    const name = cfg.type === 's3' ? cfg.bucket : cfg.path;
    opened.push(name);
    return Promise.resolve({ name, close: async () => void closed.push(name) } as unknown as Bucket);
  };
  const base = fileConfig() as { tenants: Record<string, { bucket: Record<string, unknown> }> };
  base.tenants['acme']!.bucket['bucket'] = 'm-{tenant}-{isoyear}-w{isoweek}';
  const cfg = await parseTenantsConfig(base, 'test', ENV);
  const timers = manualTimers();
  const reg = new TenantRegistry(cfg, { openBucket: fake, retireAfterMs: 1000, schedule: timers.schedule, maxPartitionClients: 2 });
  const WEEK = 7 * 24 * 3600 * 1000;
  const W44 = Date.UTC(2026, 9, 26); // Monday of 2026-W44
  const name = async (windowStart: number) => ((await reg.bucketFor('acme', windowStart)) as unknown as { name: string }).name;
  t.equal(await name(W44), 'm-acme-2026-w44');
  t.equal(await name(W44 + WEEK), 'm-acme-2026-w45');
  t.equal(await name(W44), 'm-acme-2026-w44', 'reused, and now the most recently used');
  t.equal(reg.openBuckets, 2);
  t.equal(await name(W44 + 2 * WEEK), 'm-acme-2026-w46');
  t.equal(reg.openBuckets, 2, 'a third partition retires one: the bound holds');
  t.same(timers.pending(), [1000], 'the retired client stays open for the retire delay');
  t.same(closed, []);
  await timers.fire();
  t.same(closed, ['m-acme-2026-w45'], 'the least recently used partition is closed, not the one just used');
  t.equal(await name(W44 + WEEK), 'm-acme-2026-w45', 'a retired partition opens again on its next use');
  t.same(opened, ['m-acme-2026-w44', 'm-acme-2026-w45', 'm-acme-2026-w46', 'm-acme-2026-w45']);
  t.equal(reg.openBuckets, 2);
  await timers.fire();
  t.same(closed, ['m-acme-2026-w45', 'm-acme-2026-w44']);
  t.equal(await name(W44 + 2 * WEEK), 'm-acme-2026-w46', 'still open');
  // the gateway's resolver remembers clients per partition: it forgets a retired one
  const resolver = new TenantBucketResolver(reg);
  const viaResolver = async (windowStart: number) => ((await resolver.resolve('acme', BigInt(windowStart))).bucket as unknown as { name: string; closed?: boolean });
  const w46 = await viaResolver(W44 + 2 * WEEK);
  t.equal(w46.name, 'm-acme-2026-w46');
  t.equal(await viaResolver(W44 + 2 * WEEK), w46, 'remembered');
  t.equal((await viaResolver(W44 + 3 * WEEK)).name, 'm-acme-2026-w47'); // retires w45
  t.equal((await viaResolver(W44)).name, 'm-acme-2026-w44'); // retires w46, the resolver's remembered one
  const again = await viaResolver(W44 + 2 * WEEK);
  t.not(again, w46, 'a retired client is not handed out again by the resolver');
  t.equal(again.name, 'm-acme-2026-w46');
  await timers.fire();
  t.throws(() => new TenantRegistry(cfg, { maxPartitionClients: 0 }), /maxPartitionClients must be a positive integer/);
  await reg.close();
  t.same(closed.sort(), ['m-acme-2026-w44', 'm-acme-2026-w44', 'm-acme-2026-w45', 'm-acme-2026-w45', 'm-acme-2026-w46', 'm-acme-2026-w46', 'm-acme-2026-w47']);
  // the lifecycle role and the bucket tool hold every partition's client through a pass: none retired
  const pass = new TenantRegistry(cfg, { openBucket: fake, retireAfterMs: 1000, schedule: timers.schedule, maxPartitionClients: ALL_PARTITION_CLIENTS });
  for (let w = 0; w < 40; w++) await pass.bucketFor('acme', W44 + w * WEEK);
  t.equal(pass.openBuckets, 40, 'forty partitions, forty clients open');
  t.same(timers.pending(), [], 'nothing retired');
  await pass.close();
});

t.test('reload keeps the old config when the new file is invalid, and follows file changes', async (t) => {
  const path = join(dir, 'tenants.yaml');
  const yaml = (tenants: string) => `defaultBucket:\n  type: filesystem\n  path: ${join(dir, 'default')}\ntenants:\n${tenants}`;
  writeFileSync(path, yaml(`  acme:\n    tokens: ["${hashToken(TOKEN_A)}"]\n`));
  const reg = new TenantRegistry(await loadTenantsFile(path));
  t.equal(grpcCode(() => reg.authenticate('acme', TOKEN_A)), 'OK');
  writeFileSync(path, 'tenants: [this is: not valid');
  await reg.reload(path);
  t.equal(reg.reloads.failed, 1);
  t.equal(grpcCode(() => reg.authenticate('acme', TOKEN_A)), 'OK', 'old config still in force');
  writeFileSync(path, yaml(`  acme:\n    tokens: ["${hashToken(TOKEN_A)}"]\n  beta:\n    tokens: ["${hashToken(TOKEN_B)}"]\n`));
  await reg.reload(path);
  t.equal(grpcCode(() => reg.authenticate('beta', TOKEN_B)), 'OK', 'a tenant added by reload can authenticate');
  // the watcher picks up an atomic replace (as editors and ConfigMaps do)
  reg.watch(path, 10);
  const tmp = join(dir, 'tenants.yaml.tmp');
  writeFileSync(tmp, yaml(`  beta:\n    tokens: ["${hashToken(TOKEN_A2)}"]\n`));
  renameSync(tmp, path);
  const deadline = Date.now() + 5000;
  while (reg.reloads.ok < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.equal(reg.reloads.ok, 2, 'reloaded on change');
  t.equal(grpcCode(() => reg.authenticate('beta', TOKEN_A2)), 'OK', 'rotated token works');
  t.equal(grpcCode(() => reg.authenticate('beta', TOKEN_B)), 'UNAUTHENTICATED', 'the old token no longer does');
  await reg.close();
});

t.test('a reload that moves a tenant to another bucket logs a warning naming the tenant and both buckets; other changes do not', async (t) => {
  const logs: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'info', dest: { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) } });
  const doc = (acmeBucket: string | null, defaultPath: string): Record<string, unknown> => ({
    authRequired: false,
    defaultBucket: { type: 'filesystem', path: join(dir, defaultPath) },
    tenants: { acme: acmeBucket === null ? {} : { bucket: { type: 'filesystem', path: join(dir, acmeBucket) } }, beta: {} },
  });
  const reg = new TenantRegistry(await parseTenantsConfig(doc(null, 'default'), 'test'), { logger });
  t.teardown(() => reg.close());
  const moves = (): unknown[][] => logs.filter((l) => l['msg'] === undefined ? false : String(l['msg']).startsWith('a tenant moved')).map((l) => [l['level'], l['tenant'], l['from'], l['to']]);
  reg.swap(await parseTenantsConfig({ ...doc(null, 'default'), tenants: { acme: { limits: { maxSamplesPerWrite: 10 } }, beta: {} } }, 'test'));
  t.same(moves(), [], 'a change of limits is no move');
  reg.swap(await parseTenantsConfig(doc('acme-own', 'default'), 'test'));
  t.same(moves(), [['warn', 'acme', `file://${join(dir, 'default')}`, `file://${join(dir, 'acme-own')}`]], 'acme to a bucket of its own');
  reg.swap(await parseTenantsConfig(doc('acme-own', 'default2'), 'test'));
  t.same(
    moves().slice(1),
    [
      ['warn', 'beta', `file://${join(dir, 'default')}`, `file://${join(dir, 'default2')}`],
      ['warn', '(tenants not in the file)', `file://${join(dir, 'default')}`, `file://${join(dir, 'default2')}`],
    ],
    'a new default bucket moves the tenants that use it, those not in the file too (authRequired: false)',
  );
  // a tenant not in the file (writing to the default bucket) added with a bucket of its own
  reg.swap(await parseTenantsConfig({ ...doc('acme-own', 'default2'), tenants: { acme: { bucket: { type: 'filesystem', path: join(dir, 'acme-own') } }, beta: {}, gamma: { bucket: { type: 'filesystem', path: join(dir, 'gamma-own') } } } }, 'test'));
  t.same(moves().slice(3), [['warn', 'gamma', `file://${join(dir, 'default2')}`, `file://${join(dir, 'gamma-own')}`]], 'a tenant that wrote to the default bucket unlisted, now with its own');
  t.match(logs.find((l) => l['tenant'] === 'beta')?.['msg'], /copy its blocks over first \(docs\/deploy\.md, "Moving a tenant to another bucket"\)/);
});

t.test('authenticateToken() names the owner of a token (Status), or null when auth is off', async (t) => {
  const reg = new TenantRegistry(await parseTenantsConfig(fileConfig(), 'test', ENV));
  t.same(reg.authenticateToken(TOKEN_A2), { tenant: 'acme', limits: { maxSamplesPerWrite: 1000 } });
  t.equal(reg.authenticateToken(TOKEN_B)?.tenant, 'beta');
  t.equal(grpcCode(() => reg.authenticateToken(null)), 'UNAUTHENTICATED', 'no token');
  t.equal(grpcCode(() => reg.authenticateToken('')), 'UNAUTHENTICATED', 'empty token');
  t.equal(grpcCode(() => reg.authenticateToken('strata_nope')), 'UNAUTHENTICATED', 'unknown token');
  t.equal(grpcCode(() => reg.authenticateToken(hashToken(TOKEN_A))), 'UNAUTHENTICATED', 'the hash is not a token');
  const open = new TenantRegistry(await parseTenantsConfig({ ...fileConfig(), authRequired: false }, 'test', ENV));
  t.equal(open.authenticateToken(null), null, 'authRequired: false: every tenant');
});

t.test('acquireBucket() keeps a retired client open until its lease ends; a tenant missing from the file has no bucket', async (t) => {
  const closed: string[] = [];
  const fake = (cfg: BucketConfig): Promise<Bucket> => {
    const name = cfg.type === 's3' ? `s3:${cfg.bucket}:${cfg.credentials?.accessKeyId}` : `fs:${cfg.path}`;
    return Promise.resolve({ name, close: async () => void closed.push(name) } as unknown as Bucket);
  };
  const timers = manualTimers();
  const reg = new TenantRegistry(await parseTenantsConfig(fileConfig(), 'test', ENV), { openBucket: fake, retireAfterMs: 1000, schedule: timers.schedule });
  const lease = await reg.acquireBucket('acme');
  t.equal(lease.bucket.name, 's3:acme-metrics:AKIDACME');
  reg.swap(await parseTenantsConfig(fileConfig(), 'test', { ...ENV, ACME_KEY_ID: 'AKIDNEW' }));
  await timers.fire();
  t.same(closed, [], 'the retire delay passed, but the lease holds the old client open');
  const lease2 = await reg.acquireBucket('acme');
  t.equal(lease2.bucket.name, 's3:acme-metrics:AKIDNEW', 'a new lease gets the new client');
  lease.release();
  lease.release(); // idempotent
  await new Promise((r) => setImmediate(r));
  t.same(closed, ['s3:acme-metrics:AKIDACME'], 'closed when the last lease ends');
  lease2.release();
  // unknown tenants: no bucket while auth is required (their data must not land in the default bucket)
  await t.rejects(reg.acquireBucket('ghost'), { code: ErrorCode.CONFIG, message: /tenant "ghost" is not in the tenants config/ });
  await t.rejects(reg.bucketFor('ghost'), { code: ErrorCode.CONFIG });
  const open = new TenantRegistry(await parseTenantsConfig({ ...fileConfig(), authRequired: false }, 'test', ENV), { openBucket: fake });
  t.equal((await open.bucketFor('ghost')).name, `fs:${join(dir, 'default')}`, 'without auth, any tenant uses the default bucket');
  await open.close();
  await reg.close();
});

t.test('watch() also reloads when a referenced secret file changes; onSwap listeners run after each swap', async (t) => {
  const sdir = mkdtempSync(join(tmpdir(), 'strata-tenancy-secrets-'));
  t.teardown(() => rmSync(sdir, { recursive: true, force: true }));
  const idFile = join(sdir, 'key-id');
  const secretFile = join(sdir, 'secret');
  writeFileSync(idFile, 'AKIDONE\n');
  writeFileSync(secretFile, `${SECRET}\n`);
  const path = join(dir, 'tenants-secrets.json');
  writeFileSync(
    path,
    JSON.stringify({
      defaultBucket: { type: 'filesystem', path: join(dir, 'default') },
      tenants: { acme: { tokens: [hashToken(TOKEN_A)], bucket: { type: 's3', region: 'r', bucket: 'bkt', credentials: { accessKeyId: { file: idFile }, secretAccessKey: { file: secretFile } } } } },
    }),
  );
  const cfg = await loadTenantsFile(path);
  t.same(cfg.secretFiles, [idFile, secretFile], 'the secret files are known');
  const reg = new TenantRegistry(cfg);
  const swaps: number[] = [];
  const off = reg.onSwap((c) => swaps.push(c.tenants.size));
  reg.watch(path, 10);
  t.throws(() => reg.watch(path), RangeError, 'one watch per registry');
  // a Kubernetes Secret update: new content under a temp name, then renamed over the file
  writeFileSync(join(sdir, '..tmp'), 'AKIDTWO\n');
  renameSync(join(sdir, '..tmp'), idFile);
  const deadline = Date.now() + 5000;
  while (reg.reloads.ok < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.equal(reg.reloads.ok, 1, 'reloaded after the secret file changed');
  const b = reg.config.tenants.get('acme')?.bucket;
  t.ok(b?.type === 's3' && b.credentials?.accessKeyId === 'AKIDTWO', 'new credentials in force');
  t.same(swaps, [1], 'the listener saw the swap');
  off();
  reg.swap(reg.config);
  t.same(swaps, [1], 'removed listeners are not called');
  await reg.close();
});
