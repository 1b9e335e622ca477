/**
 * `strata bucket ls | usage | verify | retention --dry-run` as a child process against Ceph RGW:
 *
 * - `usage` with a damaged block names it on stderr, still prints every tenant (the damaged
 *   block's bytes counted, its samples not) and exits 1;
 * - `usage` counts each sample once while a day block and its 4-hour blocks are both stored
 *   (the 4-hour blocks' bytes shown as superseded), and the same samples once they are deleted;
 * - output closed by its reader (`| head`) stops the command quietly with status 0;
 * - a tenant's own bucket that does not exist: `--tenant` of a tenant in the default bucket never
 *   touches it; without `--tenant` it is named on stderr, the other buckets are still listed, and
 *   the status is 3 (1 stays "corrupt data"); bad flags are 2; `--help` states the statuses.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/cli/bucket.test.ts
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { stringify as toYaml } from 'yaml';
import { crc32c } from '@node-rs/crc32';
import { DAY_MS, dayBlockKey } from '../../src/format/day-key.js';
import { FOOTER_LEN, FooterField, FORMAT_VERSION } from '../../src/format/footer.js';
import { blockKey } from '../../src/format/key.js';
import { runLifecyclePass } from '../../src/lifecycle/job.js';
import { openBucket, type Bucket, type BucketConfig } from '../../src/objstore/index.js';
import { openTenantsConfig } from '../../src/tenancy/config.js';
import { TenantRegistry } from '../../src/tenancy/tenants.js';
import { collect } from '../support/async.js';
import { createTestBucket, s3BucketConfig, s3TestEnv, uniqueBucketName } from '../support/s3env.js';
import { credentialEnvRefs, s3TenantBucket } from '../support/tenancy.js';
import { D, makeDataSet, slice, tempDir, W0, writeBlock, writeDataSet, type DataSet } from '../support/gateway.js';

const root = join(import.meta.dirname, '..', '..');
const main = join(root, 'src', 'cli', 'main.ts');
const HOUR = 3600 * 1000;

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `strata ...args`; with `closeStdout`, our end of its stdout is closed at once (a reader gone). */
function cli(args: string[], opts: { closeStdout?: boolean } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', main, ...args], { cwd: root });
    let stdout = '';
    let stderr = '';
    if (opts.closeStdout) p.stdout.destroy();
    else p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const jsonLines = (s: string): Record<string, unknown>[] =>
  s
    .trim()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

async function rgw(t: Test, tag: string): Promise<{ name: string; config: BucketConfig; bucket: Bucket }> {
  const name = await createTestBucket(t, { tag });
  const config: BucketConfig = { type: 's3', ...s3BucketConfig(s3TestEnv(), name) };
  const bucket = await openBucket(config);
  t.teardown(() => bucket.close());
  return { name, config, bucket };
}

function tenantsFile(t: Test, doc: Record<string, unknown>): string {
  const file = join(tempDir(t, 'cli-bucket'), 'tenants.yaml');
  writeFileSync(file, toYaml(doc));
  return file;
}

/** Writes one block of `tenant` (shard 0, window `windowStart`) from a small data set; returns its key and samples. */
async function oneBlock(bucket: Bucket, tenant: string, windowStart: bigint, seed: number): Promise<{ key: string; samples: number }> {
  const ds = makeDataSet({ seed, n: 12, numShards: 1, windows: 1, tenant, maxSamples: 50 });
  const members = ds.series.filter((s) => s.samples.timestamps.length > 0).map((s) => ({ id: s.id, samples: { timestamps: s.samples.timestamps.map((ts) => ts - W0 + windowStart), values: s.samples.values } }));
  const [key] = await writeBlock(bucket, tenant, 0, 1, windowStart, members);
  return { key, samples: members.reduce((n, s) => n + s.samples.timestamps.length, 0) };
}

const samplesOf = (ds: DataSet): number => ds.series.reduce((n, s) => n + s.samples.timestamps.length, 0);

t.test('bucket usage: a damaged block is named, every tenant is still counted, exit status 1', async (t) => {
  const { name, bucket } = await rgw(t, 'cli-usage-bad');
  const a = await oneBlock(bucket, 'acme', W0, 1);
  const a2 = await oneBlock(bucket, 'acme', W0 + D, 2);
  const z = await oneBlock(bucket, 'zulu', W0, 3);
  // a damaged footer: the block cannot even be opened
  const bad = await oneBlock(bucket, 'bravo', W0, 4);
  const bytes = Buffer.from(await bucket.get(bad.key));
  bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 0x01;
  await bucket.put(bad.key, bytes);
  const size = async (key: string): Promise<number> => (await bucket.head(key)).size;
  const file = tenantsFile(t, { authRequired: false, defaultBucket: s3TenantBucket(name, credentialEnvRefs(1)) });

  const r = await cli(['bucket', 'usage', '--json', '--tenants-file', file]);
  t.equal(r.code, 1, 'exit status 1: a block could not be read');
  t.same(jsonLines(r.stdout).map((u) => [u['tenant'], u['blocks'], u['bytes'], u['samples'], u['unreadableBlocks']]), [
    ['acme', 2, (await size(a.key)) + (await size(a2.key)), a.samples + a2.samples, 0],
    ['bravo', 1, bytes.length, 0, 1],
    ['zulu', 1, await size(z.key), z.samples, 0],
  ]);
  t.match(r.stderr, `cannot read block s3://${name} ${bad.key}: corrupt data in "${bad.key}"`, 'the block and the error named');
  t.match(r.stderr, '1 block could not be read');

  const text = await cli(['bucket', 'usage', '--tenants-file', file]);
  t.equal(text.code, 1);
  t.equal(text.stdout.split('\n')[1], `bravo\t1 blocks\t${bytes.length} bytes\t0 samples\t0 superseded blocks\t0 superseded bytes\t1 unreadable blocks`);
  const one = await cli(['bucket', 'usage', '--json', '--tenant', 'acme', '--tenants-file', file]);
  t.equal(one.code, 0, 'the damaged block is not in the way of another tenant');
  t.equal(jsonLines(one.stdout)[0]?.['samples'], a.samples + a2.samples);
});

t.test('bucket usage counts each sample once while a day block and its 4-hour blocks are both stored', async (t) => {
  const { name, config, bucket } = await rgw(t, 'cli-usage-day');
  const ds = makeDataSet({ seed: 17, n: 30, numShards: 2, windows: 12, maxSamples: 100 }); // two days
  const written = await writeDataSet(bucket, ds);
  const file = tenantsFile(t, { authRequired: false, defaultBucket: s3TenantBucket(name, credentialEnvRefs(1)) });
  const total = samplesOf(ds);
  const sizeOf = async (keys: string[]): Promise<number> => {
    let n = 0;
    for (const k of keys) n += (await bucket.head(k)).size;
    return n;
  };
  const day0Sources = [...written.keys()].filter((k) => k < `blocks/${ds.tenant}/${String(W0 + BigInt(DAY_MS)).padStart(16, '0')}/`);
  t.equal(day0Sources.length, 12, 'six windows of two shards on the first day');

  const before = jsonLines((await cli(['bucket', 'usage', '--json', '--tenants-file', file])).stdout);
  t.same(before.map((u) => [u['blocks'], u['samples'], u['supersededBlocks']]), [[written.size, total, 0]], 'no day block yet: the 4-hour blocks');

  // the first day is merged; the second is not closed yet. The 4-hour blocks stay for daySourceGraceMs
  const registry = new TenantRegistry(openTenantsConfig(config));
  t.teardown(() => registry.close());
  let now = Number(W0) + DAY_MS + 8 * HOUR + 1;
  const opts = (work: string) => ({
    blockDurationMs: Number(D),
    retentionGraceMs: HOUR,
    incompleteUploadMaxAgeMs: 24 * HOUR,
    deleteConcurrency: 4,
    days: { dayMergeAfterMs: 8 * HOUR, daySourceGraceMs: 3 * HOUR, workDir: work, now: () => now },
  });
  const work = tempDir(t, 'cli-usage-work');
  t.equal((await runLifecyclePass(registry, now, opts(work))).dayMerges, 2, 'two day blocks (day one, two shards)');
  const dayKeys = [dayBlockKey(ds.tenant, 0, W0), dayBlockKey(ds.tenant, 1, W0)];
  const daySamples = ds.series.reduce((n, s) => n + slice(s.samples, W0, W0 + BigInt(DAY_MS)).timestamps.length, 0);
  t.ok(daySamples > 0 && daySamples < total);

  // series summed over the blocks counted: the day blocks of day one, the 4-hour blocks of day two
  let series = 0;
  for (let shard = 0n; shard < 2n; shard++) {
    const members = ds.series.filter((s) => s.id % 2n === shard);
    series += members.filter((s) => slice(s.samples, W0, W0 + BigInt(DAY_MS)).timestamps.length > 0).length;
    for (let w = 6n; w < 12n; w++) series += members.filter((s) => slice(s.samples, W0 + w * D, W0 + (w + 1n) * D).timestamps.length > 0).length;
  }
  const both = await cli(['bucket', 'usage', '--json', '--tenants-file', file]);
  t.equal(both.code, 0);
  const allKeys = [...written.keys(), ...dayKeys];
  t.same(jsonLines(both.stdout), [
    {
      tenant: ds.tenant,
      blocks: written.size + 2,
      bytes: await sizeOf(allKeys),
      samples: total,
      series,
      supersededBlocks: 12,
      supersededBytes: await sizeOf(day0Sources),
      unreadableBlocks: 0,
    },
  ], 'every sample once; all bytes stored; the first day\'s 4-hour blocks apart as superseded');
  const text = await cli(['bucket', 'usage', '--tenants-file', file]);
  t.equal(text.stdout, `${ds.tenant}\t${written.size + 2} blocks\t${await sizeOf(allKeys)} bytes\t${total} samples\t12 superseded blocks\t${await sizeOf(day0Sources)} superseded bytes\t0 unreadable blocks\n`);

  // past the grace the 4-hour blocks held go: the same samples
  now += 3 * HOUR;
  t.equal((await runLifecyclePass(registry, now, opts(work))).daySourcesDeleted, 12);
  const after = jsonLines((await cli(['bucket', 'usage', '--json', '--tenants-file', file])).stdout);
  t.same(after.map((u) => [u['blocks'], u['samples'], u['supersededBlocks'], u['supersededBytes']]), [[written.size - 12 + 2, total, 0, 0]]);
  const left = (await collect(bucket.list('blocks/'))).map((i) => i.key);
  t.equal(left.length, written.size - 12 + 2 + 2, 'day blocks, their manifests and the second day\'s 4-hour blocks');
});

t.test('bucket ls and retention --dry-run whose output is closed early stop quietly with status 0', async (t) => {
  const { name, bucket } = await rgw(t, 'cli-epipe');
  for (let w = 0; w < 4; w++) await oneBlock(bucket, 'acme', W0 + BigInt(w) * D, 10 + w);
  const file = tenantsFile(t, { authRequired: false, retentionMs: 24 * HOUR, defaultBucket: s3TenantBucket(name, credentialEnvRefs(1)) });
  const full = await cli(['bucket', 'ls', '--tenants-file', file]);
  t.equal(full.stdout.trim().split('\n').length, 4, 'four lines when read');
  const at = String(Number(W0) + 30 * DAY_MS);
  t.equal((await cli(['bucket', 'retention', '--dry-run', '--at', at, '--tenants-file', file])).stdout.trim().split('\n').length, 4, 'four blocks due at --at');
  for (const args of [
    ['bucket', 'ls', '--tenants-file', file],
    ['bucket', 'ls', '--json', '--tenants-file', file],
    ['bucket', 'retention', '--dry-run', '--at', at, '--tenants-file', file],
  ]) {
    const r = await cli(args, { closeStdout: true });
    t.same({ code: r.code, stderr: r.stderr.replace(/^dry run: .*\n/, '') }, { code: 0, stderr: '' }, `${args.slice(0, 2).join(' ')}: exit 0, no stack trace`);
  }
});

t.test('a tenant bucket that does not exist: --tenant of another tenant never touches it; without --tenant it is named and the rest listed (status 3)', async (t) => {
  const def = await rgw(t, 'cli-def');
  const own = await rgw(t, 'cli-own');
  const missing = uniqueBucketName('cli-missing'); // never created: RGW answers NoSuchBucket
  const real = await oneBlock(def.bucket, 'real', W0, 21);
  const other = await oneBlock(own.bucket, 'other', W0, 22);
  const file = tenantsFile(t, {
    authRequired: false,
    defaultBucket: s3TenantBucket(def.name, credentialEnvRefs(1)),
    tenants: {
      real: {},
      byo: { bucket: s3TenantBucket(missing, credentialEnvRefs(1)) },
      other: { bucket: s3TenantBucket(own.name, credentialEnvRefs(1)) },
    },
  });

  const ls = await cli(['bucket', 'ls', '--json', '--tenant', 'real', '--tenants-file', file]);
  t.same({ code: ls.code, stderr: ls.stderr, keys: jsonLines(ls.stdout).map((l) => l['key']) }, { code: 0, stderr: '', keys: [real.key] }, 'ls --tenant real');
  const usage = await cli(['bucket', 'usage', '--json', '--tenant', 'real', '--tenants-file', file]);
  t.same({ code: usage.code, stderr: usage.stderr, samples: jsonLines(usage.stdout).map((l) => l['samples']) }, { code: 0, stderr: '', samples: [real.samples] }, 'usage --tenant real');
  const verify = await cli(['bucket', 'verify', '--no-progress', '--tenant', 'real', '--tenants-file', file]);
  t.same({ code: verify.code, stderr: verify.stderr }, { code: 0, stderr: '' });
  t.match(verify.stdout, /^1 blocks checked, \d+ bytes, 0 corrupt\n$/, 'verify --tenant real');
  const oneOwn = await cli(['bucket', 'ls', '--json', '--tenant', 'other', '--tenants-file', file]);
  t.same([oneOwn.code, jsonLines(oneOwn.stdout).map((l) => [l['key'], l['bucket']])], [0, [[other.key, `s3://${own.name}`]]], 'ls --tenant other: its own bucket');

  const named = new RegExp(`cannot list s3://${missing}/ \\(tenant byo\\): .*; its blocks are not in this output`);
  const all = await cli(['bucket', 'ls', '--json', '--tenants-file', file]);
  t.equal(all.code, 3, 'ls of everything: status 3');
  t.same(jsonLines(all.stdout).map((l) => l['key']), [real.key, other.key], 'the other buckets are listed');
  t.match(all.stderr, named, 'the failing bucket and its tenant are named');
  const allUsage = await cli(['bucket', 'usage', '--json', '--tenants-file', file]);
  t.equal(allUsage.code, 3);
  t.same(jsonLines(allUsage.stdout).map((l) => [l['tenant'], l['samples']]), [['other', other.samples], ['real', real.samples]]);
  t.match(allUsage.stderr, named);
  const allVerify = await cli(['bucket', 'verify', '--no-progress', '--tenants-file', file]);
  t.equal(allVerify.code, 3);
  t.match(allVerify.stdout, /^2 blocks checked, \d+ bytes, 0 corrupt; 1 bucket could not be listed\n$/);
  const dry = await cli(['bucket', 'retention', '--dry-run', '--tenants-file', file]);
  t.equal(dry.code, 3, 'retention --dry-run: status 3');
  t.match(dry.stderr, `s3://${missing}`);

  // corrupt data outranks a missing bucket; bad flags are 2
  const bytes = Buffer.from(await def.bucket.get(real.key));
  bytes[bytes.length - 10] = bytes[bytes.length - 10]! ^ 0x01;
  await def.bucket.put(real.key, bytes);
  const corrupt = await cli(['bucket', 'verify', '--no-progress', '--tenants-file', file]);
  t.equal(corrupt.code, 1, 'a corrupt block and a missing bucket: status 1');
  t.match(corrupt.stdout, `CORRUPT\ts3://${def.name}\t${real.key}\t`);
  t.equal((await cli(['bucket', 'verify', '--bogus', '--tenants-file', file])).code, 2, 'an unknown flag: 2');
  t.equal((await cli(['bucket', 'ls', '--tenant', '../x', '--tenants-file', file])).code, 2, 'a malformed tenant: 2');
  t.equal((await cli(['bucket', 'ls', '--tenants-file', join(root, 'no-such-tenants.yaml')])).code, 2, 'no tenants file: 2');
  const help = await cli(['bucket', 'usage', '--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /Exit status:\n {2}0 .*\n {2}1 {2}corrupt data.*\n {2}2 {2}bad flags.*\n {2}3 {2}a bucket could not be listed/);
});

t.test('bucket verify names a block stored under another block\'s key as corrupt (exit 1), as readers refuse it', async (t) => {
  const dir = tempDir(t, 'cli-verify-key');
  const path = join(dir, 'bucket');
  const bucket = await openBucket({ type: 'filesystem', path });
  t.teardown(() => bucket.close());
  const good = await oneBlock(bucket, 'acme', W0, 1);
  const moved = await oneBlock(bucket, 'acme', W0 + D, 2);
  // the bytes of acme's block copied under another tenant's key and another window's key
  const bytes = await bucket.get(moved.key);
  const otherTenant = moved.key.replace('blocks/acme/', 'blocks/zulu/');
  await bucket.put(otherTenant, bytes);
  const otherWindow = blockKey('acme', 0, W0 + 2n * D);
  await bucket.put(otherWindow, await bucket.get(good.key));
  const r = await cli(['bucket', 'verify', '--bucket-path', path]);
  t.equal(r.code, 1, `exit 1 (${r.stderr})`);
  const corrupt = r.stdout.split('\n').filter((l) => l.startsWith('CORRUPT'));
  t.equal(corrupt.length, 2, r.stdout);
  t.match(r.stdout, `\t${otherTenant}\tthe footer names tenant acme, shard 0`);
  t.match(r.stdout, `\t${otherWindow}\tthe footer names tenant acme, shard 0, window ${W0}; the key names tenant acme, shard 0, window ${W0 + 2n * D}`);
  t.match(r.stdout, 'blocks checked');
  t.match(r.stdout, ', 2 corrupt');
});

t.test('bucket verify and usage tell a block of a newer format version (NEWER, exit 4) from a corrupt one (CORRUPT, exit 1, which wins)', async (t) => {
  const dir = tempDir(t, 'cli-verify-newer');
  const path = join(dir, 'bucket');
  const bucket = await openBucket({ type: 'filesystem', path });
  t.teardown(() => bucket.close());
  await oneBlock(bucket, 'acme', W0, 1);
  const newer = await oneBlock(bucket, 'acme', W0 + D, 2);
  // as a newer build would write it: a format version this build does not read, checksums valid
  const bytes = Buffer.from(await bucket.get(newer.key));
  const footer = bytes.subarray(bytes.length - FOOTER_LEN);
  footer.writeUInt16LE(FORMAT_VERSION + 1, FooterField.VERSION);
  footer.writeUInt32LE(crc32c(footer.subarray(0, FooterField.FOOTER_CRC)), FooterField.FOOTER_CRC);
  await bucket.put(newer.key, bytes);
  const r = await cli(['bucket', 'verify', '--bucket-path', path]);
  t.equal(r.code, 4, `exit 4 (${r.stderr})`);
  t.match(r.stdout, `NEWER\tfile://${path}\t${newer.key}\tblock "${newer.key}" has format version ${FORMAT_VERSION + 1}; this build reads 1 to ${FORMAT_VERSION}; not checked`);
  t.notMatch(r.stdout, 'CORRUPT');
  t.match(r.stdout, '1 blocks checked');
  t.match(r.stdout, ', 0 corrupt; 1 of a newer format, not checked');
  const usage = await cli(['bucket', 'usage', '--json', '--bucket-path', path]);
  t.equal(usage.code, 4, `usage: exit 4 (${usage.stderr})`);
  t.match(usage.stderr, '1 block could not be read');
  // a corrupt block as well: status 1
  const bad = await oneBlock(bucket, 'acme', W0 + 2n * D, 3);
  const badBytes = Buffer.from(await bucket.get(bad.key));
  badBytes[badBytes.length - 10] = badBytes[badBytes.length - 10]! ^ 0x01;
  await bucket.put(bad.key, badBytes);
  // a version below the oldest is damage, not a newer format
  const zero = await oneBlock(bucket, 'acme', W0 + 3n * D, 4);
  const zeroBytes = Buffer.from(await bucket.get(zero.key));
  const zeroFooter = zeroBytes.subarray(zeroBytes.length - FOOTER_LEN);
  zeroFooter.writeUInt16LE(0, FooterField.VERSION);
  zeroFooter.writeUInt32LE(crc32c(zeroFooter.subarray(0, FooterField.FOOTER_CRC)), FooterField.FOOTER_CRC);
  await bucket.put(zero.key, zeroBytes);
  const both = await cli(['bucket', 'verify', '--bucket-path', path]);
  t.equal(both.code, 1, 'a corrupt block as well: exit 1');
  t.match(both.stdout, `CORRUPT\tfile://${path}\t${zero.key}\tblock "${zero.key}" has format version 0`);
  t.match(both.stdout, ', 2 corrupt; 1 of a newer format, not checked');
});

t.test('the read-only tools do not create a bucket directory that is not there, and S3 flags without --s3-bucket are refused', async (t) => {
  const missing = join(tempDir(t, 'cli-missing'), 'typo');
  // the bucket tools: a bucket that cannot be listed (3); block inspect: a bad flag (2)
  for (const [args, code] of [
    [['bucket', 'verify', '--bucket-path', missing], 3],
    [['bucket', 'ls', '--bucket-path', missing], 3],
    [['block', 'inspect', 'blocks/acme/1/00000.block', '--bucket-path', missing], 2],
  ] as const) {
    const r = await cli([...args]);
    t.equal(r.code, code, `${args.slice(0, 2).join(' ')}: exit ${code}`);
    t.match(r.stderr, `no such bucket directory: ${missing}`, `${args.slice(0, 2).join(' ')}: says so`);
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
  const { existsSync } = await import('node:fs');
  t.notOk(existsSync(missing), 'nothing created');
  const s3 = await cli(['bucket', 'ls', '--s3-endpoint', 'http://127.0.0.1:1', '--bucket-path', missing]);
  t.equal(s3.code, 2);
  t.match(s3.stderr, '--s3-endpoint need --s3-bucket');
  // an invalid bucket name is the user's to fix, as a bad flag is: 2, not 3 (a bucket that failed)
  const badName = await cli(['bucket', 'ls', '--s3-bucket', 'x', '--s3-endpoint', 'http://127.0.0.1:1']);
  t.equal(badName.code, 2, `an invalid bucket name: exit 2 (${badName.stderr})`);
  t.match(badName.stderr, 'invalid bucket config: bucket');
});

t.test('a command error is one line naming the command, never a stack trace', async (t) => {
  const dir = tempDir(t, 'cli-errors');
  const path = join(dir, 'bucket');
  const bucket = await openBucket({ type: 'filesystem', path });
  t.teardown(() => bucket.close());
  const b = await oneBlock(bucket, 'acme', W0, 1);
  const bytes = Buffer.from(await bucket.get(b.key));
  bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff; // the footer's magic
  await bucket.put(b.key, bytes);
  const inspect = await cli(['block', 'inspect', b.key, '--bucket-path', path]);
  t.equal(inspect.code, 1, 'a damaged block: exit 1');
  t.match(inspect.stderr, `strata block: corrupt data in "${b.key}"`);
  t.notMatch(inspect.stderr, /\n\s+at /, 'no stack trace');
  const query = await cli(['query', '--tenant', 'acme', '--num-shards', '1', '--endpoint', '127.0.0.1:1', '--series', '1', '--start', '2000', '--end', '1000']);
  t.equal(query.code, 2, 'an end before the start: exit 2');
  t.match(query.stderr, 'strata query: invalid end: 1000 is before --start 2000');
});
