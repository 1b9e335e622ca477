/**
 * Incomplete writes of the filesystem bucket (temp files left by a crash), directly and through a
 * PrefixedBucket: listed with their start time, scoped by prefix, never listed by `list`, and
 * discarded (idempotently) without touching published objects. The S3 side (multipart uploads on
 * RGW) is tested in test/lifecycle/lifecycle.test.ts.
 */
import { existsSync, mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { ErrorCode } from '../../src/errors.js';
import { FilesystemBucket, FS_TEMP_PREFIX, hasIncompleteUploads, PrefixedBucket } from '../../src/objstore/index.js';
import { collect } from '../support/async.js';
import { tempDir } from '../support/gateway.js';

t.test('filesystem temp files are incomplete uploads; a PrefixedBucket maps them to its own keys', async (t) => {
  const root = tempDir(t, 'incomplete');
  const fs = new FilesystemBucket({ path: root });
  await fs.put('tenant-a/blocks/x.block', Buffer.from('published'));
  const dirA = join(root, 'tenant-a', 'blocks');
  const dirB = join(root, 'tenant-b', 'blocks');
  mkdirSync(dirB, { recursive: true });
  writeFileSync(join(dirA, `${FS_TEMP_PREFIX}aaa`), 'partial');
  writeFileSync(join(dirB, `${FS_TEMP_PREFIX}bbb`), 'partial');
  utimesSync(join(dirA, `${FS_TEMP_PREFIX}aaa`), 1_700_000_000, 1_700_000_000);
  t.ok(hasIncompleteUploads(fs));

  const all = (await collect(fs.listIncompleteUploads(''))).sort((x, y) => (x.key < y.key ? -1 : 1));
  t.same(all.map((u) => u.key), [`tenant-a/blocks/${FS_TEMP_PREFIX}aaa`, `tenant-b/blocks/${FS_TEMP_PREFIX}bbb`], 'both temp files, by their paths');
  t.equal(all[0]!.startedMs, 1_700_000_000_000, 'started at the file mtime');
  t.same((await collect(fs.listIncompleteUploads('tenant-b/'))).map((u) => u.key), [`tenant-b/blocks/${FS_TEMP_PREFIX}bbb`], 'scoped by prefix');
  t.same((await collect(fs.list(''))).map((i) => i.key), ['tenant-a/blocks/x.block'], 'list never shows them');

  const a = new PrefixedBucket(fs, 'tenant-a');
  const mine = await collect(a.listIncompleteUploads(''));
  t.same(mine.map((u) => [u.key, u.id]), [[`blocks/${FS_TEMP_PREFIX}aaa`, `blocks/${FS_TEMP_PREFIX}aaa`]], 'the prefixed view sees only its own, under its own keys');
  await a.discardIncompleteUpload(mine[0]!);
  await a.discardIncompleteUpload(mine[0]!); // gone already: not an error
  t.notOk(existsSync(join(dirA, `${FS_TEMP_PREFIX}aaa`)), 'discarded');
  t.ok(existsSync(join(dirB, `${FS_TEMP_PREFIX}bbb`)), "the other tenant's temp file stays");
  t.equal((await fs.get('tenant-a/blocks/x.block')).toString(), 'published', 'the published object stays');

  const refused = await fs.discardIncompleteUpload({ key: 'tenant-a/blocks/x.block', id: 'tenant-a/blocks/x.block', startedMs: 0 }).then(
    () => null,
    (e: { code: string; message: string }) => e,
  );
  t.equal(refused?.code, ErrorCode.INVALID_ARGUMENT, 'an id that is not a temp file is refused');
  t.match(refused?.message, /upload\.id/);
  t.ok(existsSync(join(dirA, 'x.block')), 'and nothing is removed');
  const escaping = await fs.discardIncompleteUpload({ key: 'x', id: `../${FS_TEMP_PREFIX}x`, startedMs: 0 }).then(
    () => null,
    (e: { code: string }) => e,
  );
  t.equal(escaping?.code, ErrorCode.INVALID_ARGUMENT, 'an id escaping the bucket is refused');
});
