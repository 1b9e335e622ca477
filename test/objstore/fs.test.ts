/**
 * FilesystemBucket: the acceptance suite plus what only a file tree has (temp files, directory
 * pruning, object/prefix name clashes).
 */
import { mkdtemp, readdir, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import t, { type Test } from 'tap';
import { ErrorCode } from '../../src/errors.js';
import { FilesystemBucket, FS_TEMP_PREFIX } from '../../src/objstore/fs.js';
import { openBucket, parseBucketConfig, S3_OPTION_RANGES, S3Bucket } from '../../src/objstore/index.js';
import { compareUtf8, validateListPrefix } from '../../src/objstore/keys.js';
import { collect } from '../support/async.js';
import { sameBytes, seededBytes } from '../support/bytes.js';
import { bucketAcceptance, expectCode } from '../support/bucket-acceptance.js';

async function tempRoot(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'strata-fs-bucket-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Every path under `dir`, relative, files and directories, sorted. */
async function tree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true });
  return entries.map(String).sort();
}

t.test('FilesystemBucket passes the bucket acceptance suite', async (t) => {
  bucketAcceptance(t, {
    create: async (tt) => {
      const root = join(await tempRoot(tt), 'bucket'); // missing at first: created by the first write
      return { open: (prefix) => new FilesystemBucket(prefix === undefined ? { path: root } : { path: root, prefix }) };
    },
    partSizeBytes: 256 * 1024,
  });
});

t.test('an upload writes a hidden temp file next to the target and removes it on abort', async (t) => {
  const root = await tempRoot(t);
  const b = new FilesystemBucket({ path: root });
  const up = b.upload('d/obj');
  await up.write(Buffer.from('partial'));
  const during = await tree(root);
  t.equal(during.length, 2, 'the directory and one temp file exist');
  t.ok(during[1]?.startsWith(`d/${FS_TEMP_PREFIX}`), `temp file is in the target directory (${during[1]})`);
  t.same(await collect(b.list('')), [], 'list skips temp files');
  await up.abort();
  t.same(await tree(root), ['d'], 'abort removed the temp file');

  await b.put('d/obj', Buffer.from('v1'));
  const cond = b.upload('d/obj', { ifNoneMatch: true });
  await cond.write(Buffer.from('v2'));
  await expectCode(t, cond.complete(), ErrorCode.ALREADY_EXISTS, 'conditional upload onto an existing key');
  t.same(await tree(root), ['d', 'd/obj'], 'the failed conditional upload left no temp file');
  sameBytes(t, await b.get('d/obj'), Buffer.from('v1'), 'and did not touch the object');
});

t.test('keys that use the reserved temp prefix are rejected', async (t) => {
  const b = new FilesystemBucket({ path: await tempRoot(t) });
  await expectCode(t, b.put(`${FS_TEMP_PREFIX}x`, Buffer.from('x')), ErrorCode.INVALID_ARGUMENT, 'top level');
  await expectCode(t, b.get(`a/${FS_TEMP_PREFIX}x/b`), ErrorCode.INVALID_ARGUMENT, 'inner segment');
  await expectCode(t, () => new FilesystemBucket({ path: '/tmp', prefix: `${FS_TEMP_PREFIX}p` }), ErrorCode.INVALID_ARGUMENT, 'bucket prefix');
});

t.test('delete() prunes empty directories up to the bucket prefix', async (t) => {
  const root = await tempRoot(t);
  const b = new FilesystemBucket({ path: root, prefix: 'tenant' });
  await b.put('a/b/c/d', Buffer.from('x'));
  await b.put('a/keep', Buffer.from('y'));
  await b.delete('a/b/c/d');
  t.same(await tree(root), ['tenant', 'tenant/a', 'tenant/a/keep'], 'empty a/b/c and a/b are gone, a stays');
  await b.delete('a/keep');
  t.same(await tree(root), ['tenant'], 'the prefix directory itself stays');
});

t.test('an object and a key prefix cannot share a name on disk', async (t) => {
  const b = new FilesystemBucket({ path: await tempRoot(t) });
  await b.put('a', Buffer.from('file'));
  const err = await expectCode(t, b.put('a/b', Buffer.from('x')), ErrorCode.STORAGE, 'object under an object');
  t.match(String((err as Error).message), /"a\/b"/, 'message names the key');
  await b.put('c/d', Buffer.from('x'));
  await expectCode(t, b.put('c', Buffer.from('x')), ErrorCode.STORAGE, 'object over a key prefix');
  await expectCode(t, b.put('c', Buffer.from('x'), { ifNoneMatch: true }), ErrorCode.STORAGE, 'conditional object over a key prefix');
  sameBytes(t, await b.get('a'), Buffer.from('file'), 'a unchanged');
  sameBytes(t, await b.get('c/d'), Buffer.from('x'), 'c/d unchanged');
  t.same((await collect(b.list(''))).map((i) => i.key), ['a', 'c/d'], 'no temp files left behind');
});

t.test('list() skips entries that are not regular files', async (t) => {
  const root = await tempRoot(t);
  const b = new FilesystemBucket({ path: root });
  await b.put('x/real', Buffer.from('1'));
  await mkdir(join(root, 'x', 'emptydir'));
  await writeFile(join(root, 'x', `${FS_TEMP_PREFIX}stale`), 'left by a crash');
  t.same((await collect(b.list(''))).map((i) => i.key), ['x/real'], 'only the object is listed');
});

t.test('concurrent put() and delete() of keys in one directory do not fail', async (t) => {
  const b = new FilesystemBucket({ path: await tempRoot(t) });
  const data = seededBytes(100, 1);
  // delete prunes the directory a concurrent put is about to write into; put must recreate it.
  await Promise.all(
    Array.from({ length: 200 }, async (_, i) => {
      const key = `race/${i % 3}/k`;
      if (i % 2 === 0) await b.put(key, data);
      else await b.delete(key);
    }),
  );
  for (const info of await collect(b.list('race/'))) sameBytes(t, await b.get(info.key), data, `${info.key} intact`);
  t.pass('no errors');
});

t.test('the bucket name is a file URL with the prefix', async (t) => {
  const root = await tempRoot(t);
  t.equal(new FilesystemBucket({ path: root }).name, `file://${root}`);
  t.equal(new FilesystemBucket({ path: root, prefix: 'a/b/' }).name, `file://${root}/a/b`);
});

t.test('close() makes further calls fail', async (t) => {
  const b = new FilesystemBucket({ path: await tempRoot(t) });
  await b.close();
  await expectCode(t, b.get('k'), ErrorCode.STORAGE, 'get after close');
});

t.test('openBucket() opens a filesystem bucket and creates its directory', async (t) => {
  const root = join(await tempRoot(t), 'new', 'dir');
  const b = await openBucket({ type: 'filesystem', path: root, prefix: 'p' });
  t.ok((await stat(root)).isDirectory(), 'root created');
  await b.put('k', Buffer.from('v'));
  sameBytes(t, await b.get('k'), Buffer.from('v'), 'usable');
  t.ok((await stat(join(root, 'p', 'k'))).isFile(), 'stored under the prefix');
  await b.close();
});

t.test('parseBucketConfig() rejects bad config naming the option', async (t) => {
  const cases: { input: unknown; mention: RegExp }[] = [
    { input: { type: 'filesystem' }, mention: /path/ },
    { input: { type: 'filesystem', path: '/x', extra: 1 }, mention: /extra/ },
    { input: { type: 'ftp', path: '/x' }, mention: /type/ },
    { input: { type: 's3', bucket: 'b-1' }, mention: /region/ },
    { input: { type: 's3', region: 'r', bucket: 'bkt', partSizeBytes: -1 }, mention: /partSizeBytes/ },
    {
      input: { type: 's3', region: 'r', bucket: 'bkt', credentials: { accessKeyId: 'AK', secretAccessKey: 'TOPSECRET', bogus: 1 } },
      mention: /bogus/,
    },
  ];
  for (const c of cases) {
    const err = await expectCode(t, () => parseBucketConfig(c.input), ErrorCode.CONFIG, JSON.stringify(c.input));
    t.match(String((err as Error).message), c.mention, `message mentions ${c.mention}`);
    t.notMatch(String((err as Error).message), /TOPSECRET/, 'message does not echo secrets');
  }
  t.same(parseBucketConfig({ type: 's3', region: 'r', bucket: 'bkt' }), { type: 's3', region: 'r', bucket: 'bkt' }, 'minimal s3 config');
  // every numeric option is range-checked by the config schema (start-up), not at the first upload
  const small = await expectCode(t, () => openBucket({ type: 's3', region: 'r', bucket: 'bkt', partSizeBytes: 1024 }), ErrorCode.CONFIG, 'part size below the S3 minimum');
  t.equal((small as Error).message, 'invalid bucket config: partSizeBytes: must be an integer in [5242880, 5368709120]');
  const [min, max] = S3_OPTION_RANGES.partConcurrency;
  await expectCode(t, () => parseBucketConfig({ type: 's3', region: 'r', bucket: 'bkt', partConcurrency: max + 1 }), ErrorCode.CONFIG, 'partConcurrency above its range');
  t.same(parseBucketConfig({ type: 's3', region: 'r', bucket: 'bkt', partConcurrency: min, retry: { maxAttempts: 1 } }).type, 's3', 'range ends are accepted');
  // the constructor keeps the same ranges for callers that bypass the schema
  t.throws(() => new S3Bucket({ region: 'r', bucket: 'bkt', partSizeBytes: 1024 }), { code: ErrorCode.INVALID_ARGUMENT, field: 'partSizeBytes' });
});

t.test('list() order and prefix filtering hold for random key sets (property)', async (t) => {
  const root = await tempRoot(t);
  let run = 0;
  // Segments from a small alphabet so that keys share prefixes and hit the '.' < '/' < '0' cases.
  const segment = fc.stringMatching(/^[a.\-0é]{1,3}$/).filter((s) => s !== '.' && s !== '..' && !s.startsWith(FS_TEMP_PREFIX));
  const key = fc.array(segment, { minLength: 1, maxLength: 3 }).map((segs) => segs.join('/'));
  await fc.assert(
    fc.asyncProperty(fc.uniqueArray(key, { maxLength: 12 }), fc.string({ maxLength: 4, unit: fc.constantFrom('a', '.', '/', '-', '0', 'é') }), async (keys, prefix) => {
      // On disk an object cannot also be a key prefix: drop keys that are "directories" of others.
      const usable = keys.filter((k) => !keys.some((o) => o.startsWith(`${k}/`)));
      const b = new FilesystemBucket({ path: join(root, String(run++)) });
      for (const k of usable) await b.put(k, Buffer.from(k));
      const all = (await collect(b.list(''))).map((i) => i.key);
      if (JSON.stringify(all) !== JSON.stringify([...usable].sort(compareUtf8))) return false;
      let valid = true;
      try {
        validateListPrefix(prefix);
      } catch (err) {
        if (!(err instanceof Error)) throw err;
        valid = false;
      }
      if (!valid) return true;
      const under = (await collect(b.list(prefix))).map((i) => i.key);
      return JSON.stringify(under) === JSON.stringify(all.filter((k) => k.startsWith(prefix)));
    }),
    { numRuns: 60 },
  );
  t.pass('listing equals the sorted, filtered key set');
});
