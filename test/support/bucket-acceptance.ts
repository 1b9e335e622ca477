/**
 * The bucket contract, as one suite every provider must pass (thanos-io/objstore's
 * AcceptanceTest, abstract-level's compliance suite). A provider's test file calls
 * `bucketAcceptance(t, { create, partSizeBytes, ... })`; `create` makes fresh, empty storage per
 * subtest and returns views on it, with or without a native key prefix.
 *
 * Not a test file by itself (tap lists it as "no tests found").
 */
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Test } from 'tap';
import { ErrorCode, ObjectStoreError, StrataError } from '../../src/errors.js';
import type { Bucket, ByteRange } from '../../src/objstore/bucket.js';
import { compareUtf8 } from '../../src/objstore/keys.js';
import { PrefixedBucket } from '../../src/objstore/prefixed.js';
import { collect, inBatches } from './async.js';
import { allByteValues, sameBytes, seededBytes } from './bytes.js';

/** Views over one fresh, empty storage area. */
export interface AcceptanceTarget {
  /** A bucket on the storage, optionally with a native key prefix (`FilesystemBucket`/`S3Bucket` `prefix`). */
  open(prefix?: string): Bucket;
}

/** How to drive the suite for one provider. */
export interface AcceptanceOptions {
  /** Fresh, empty storage for one subtest; registers its own cleanup on `t`. */
  readonly create: (t: Test) => Promise<AcceptanceTarget>;
  /** Part size of the buckets `open` returns (upload sizes are chosen around it). */
  readonly partSizeBytes: number;
  /** Listing page size of those buckets, when they page. */
  readonly listPageSize?: number;
  /** Requests made so far by a bucket, when the provider counts them (checks paging). */
  readonly requestCount?: (bucket: Bucket) => number;
}

/** Invalid keys every provider must reject with INVALID_ARGUMENT. */
export const INVALID_KEYS: readonly string[] = [
  '',
  '/abs',
  '/',
  'a//b',
  'a/',
  '../x',
  'a/../b',
  'a/..',
  './a',
  'a/./b',
  '.',
  '..',
  'a\\b',
  '..\\x',
  'a\0b',
];

/**
 * Awaits `op` and asserts that it fails with a StrataError of `code`; returns the error.
 * A function is called first, so synchronous throws count too.
 */
export async function expectCode(t: Test, op: Promise<unknown> | (() => unknown), code: ErrorCode, msg: string): Promise<unknown> {
  try {
    await (typeof op === 'function' ? op() : op);
  } catch (err) {
    if (!(err instanceof StrataError)) {
      t.fail(`${msg}: expected ${code}, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
      return err;
    }
    t.equal(err.code, code, `${msg}: ${code}`);
    return err;
  }
  t.fail(`${msg}: expected ${code}, but it succeeded`);
  return undefined;
}

/** Registers every contract check as a subtest of `t`. */
export function bucketAcceptance(t: Test, opts: AcceptanceOptions): void {
  const part = opts.partSizeBytes;
  const fresh = async (tt: Test): Promise<{ target: AcceptanceTarget; b: Bucket }> => {
    const target = await opts.create(tt);
    return { target, b: target.open() };
  };

  t.test('put() then get() round-trips and reports what was stored', async (t) => {
    const { b } = await fresh(t);
    const data = seededBytes(10_000, 1);
    const before = Date.now();
    const info = await b.put('a/b/c.bin', data);
    t.equal(info.key, 'a/b/c.bin', 'put reports the key');
    t.equal(info.size, data.length, 'put reports the size');
    t.ok(info.etag.length > 0, 'put reports an etag');
    t.ok(Math.abs(info.lastModifiedMs - before) < 60_000, 'put lastModifiedMs is about now');
    sameBytes(t, await b.get('a/b/c.bin'), data, 'get returns the stored bytes');
    const head = await b.head('a/b/c.bin');
    t.same(
      { key: head.key, size: head.size, etag: head.etag },
      { key: 'a/b/c.bin', size: data.length, etag: info.etag },
      'head matches what put reported',
    );
    t.ok(Math.abs(head.lastModifiedMs - before) < 60_000, 'head lastModifiedMs is about now');
  });

  t.test('binary content with every byte value round-trips', async (t) => {
    const { b } = await fresh(t);
    const data = Buffer.concat([allByteValues(4), seededBytes(4096, 2), Buffer.from([0, 0, 0xff, 0x0d, 0x0a, 0x1a])]);
    await b.put('bin', data);
    sameBytes(t, await b.get('bin'), data, 'get');
    const r = await b.getRange('bin', { offset: 250, length: 20 });
    sameBytes(t, r.data, data.subarray(250, 270), 'range across the 0xff/0x00 boundary');
  });

  t.test('put() overwrites an existing object', async (t) => {
    const { b } = await fresh(t);
    const first = await b.put('k', Buffer.from('first version, longer'));
    const second = await b.put('k', Buffer.from('second'));
    sameBytes(t, await b.get('k'), Buffer.from('second'), 'get returns the new bytes');
    t.equal((await b.head('k')).size, 6, 'head reports the new size');
    t.not(second.etag, first.etag, 'the etag changed');
  });

  t.test('ifNoneMatch creates once, then fails with ALREADY_EXISTS and changes nothing', async (t) => {
    const { b } = await fresh(t);
    const created = await b.put('once', Buffer.from('original'), { ifNoneMatch: true });
    t.equal(created.size, 8, 'first conditional put succeeds');
    await expectCode(t, b.put('once', Buffer.from('replacement'), { ifNoneMatch: true }), ErrorCode.ALREADY_EXISTS, 'second conditional put');
    sameBytes(t, await b.get('once'), Buffer.from('original'), 'object unchanged');

    // Through upload(), with more than one part's worth of data.
    const big = seededBytes(part * 2 + 123, 3);
    const up = b.upload('once', { ifNoneMatch: true });
    await up.write(big.subarray(0, part + 7));
    await up.write(big.subarray(part + 7));
    await expectCode(t, up.complete(), ErrorCode.ALREADY_EXISTS, 'conditional multi-part upload onto an existing key');
    await up.abort();
    sameBytes(t, await b.get('once'), Buffer.from('original'), 'object still unchanged');

    const up2 = b.upload('fresh', { ifNoneMatch: true });
    await up2.write(big);
    const info = await up2.complete();
    t.equal(info.size, big.length, 'conditional multi-part upload onto a new key succeeds');
    sameBytes(t, await b.get('fresh'), big, 'its bytes');
    await expectCode(t, b.put('fresh', seededBytes(10, 4), { ifNoneMatch: true }), ErrorCode.ALREADY_EXISTS, 'then a conditional put onto it');
  });

  t.test('ifMatch replaces only the version named, else fails with ALREADY_EXISTS and changes nothing', async (t) => {
    const { b } = await fresh(t);
    const v1 = await b.put('v', Buffer.from('version one'));
    const listed = (await collect(b.list('v')))[0]!;
    const v2 = await b.put('v', Buffer.from('version two'), { ifMatch: listed.etag });
    t.equal(v2.size, 11, 'a put over the version listed succeeds');
    sameBytes(t, await b.get('v'), Buffer.from('version two'), 'its bytes');
    // a writer that read version one and comes back later (a paused replica)
    await expectCode(t, b.put('v', Buffer.from('stale'), { ifMatch: v1.etag }), ErrorCode.ALREADY_EXISTS, 'a put over a replaced version');
    sameBytes(t, await b.get('v'), Buffer.from('version two'), 'object unchanged');

    // through upload(), with more than one part's worth of data
    const big = seededBytes(part * 2 + 321, 6);
    const stale = b.upload('v', { ifMatch: v1.etag });
    await stale.write(big);
    await expectCode(t, stale.complete(), ErrorCode.ALREADY_EXISTS, 'a multi-part upload over a replaced version');
    await stale.abort();
    sameBytes(t, await b.get('v'), Buffer.from('version two'), 'object still unchanged');
    const current = await b.head('v');
    const up = b.upload('v', { ifMatch: current.etag });
    await up.write(big);
    t.equal((await up.complete()).size, big.length, 'a multi-part upload over the current version succeeds');
    sameBytes(t, await b.get('v'), big, 'its bytes');
    await expectCode(t, b.put('gone', Buffer.from('x'), { ifMatch: current.etag }), ErrorCode.ALREADY_EXISTS, 'a put over a version of a key that has no object');
    await expectCode(t, b.head('gone'), ErrorCode.NOT_FOUND, 'nothing created');
  });

  t.test('getRange() follows the range contract', async (t) => {
    const { b } = await fresh(t);
    const data = seededBytes(1000, 5);
    await b.put('r', data);
    const cases: { name: string; range: ByteRange; start: number; end: number }[] = [
      { name: 'first byte', range: { offset: 0, length: 1 }, start: 0, end: 1 },
      { name: 'middle', range: { offset: 100, length: 200 }, start: 100, end: 300 },
      { name: 'exactly to the end', range: { offset: 900, length: 100 }, start: 900, end: 1000 },
      { name: 'last byte', range: { offset: 999, length: 1 }, start: 999, end: 1000 },
      { name: 'past the end is cut', range: { offset: 950, length: 100 }, start: 950, end: 1000 },
      { name: 'whole object', range: { offset: 0, length: 1000 }, start: 0, end: 1000 },
      { name: 'far past the end is cut', range: { offset: 10, length: 1_000_000 }, start: 10, end: 1000 },
      { name: 'suffix', range: { suffix: 10 }, start: 990, end: 1000 },
      { name: 'suffix of one byte', range: { suffix: 1 }, start: 999, end: 1000 },
      { name: 'suffix equal to the size', range: { suffix: 1000 }, start: 0, end: 1000 },
      { name: 'suffix larger than the object', range: { suffix: 5000 }, start: 0, end: 1000 },
    ];
    for (const c of cases) {
      const r = await b.getRange('r', c.range);
      sameBytes(t, r.data, data.subarray(c.start, c.end), `${c.name}: bytes`);
      t.equal(r.offset, c.start, `${c.name}: offset`);
      t.equal(r.size, 1000, `${c.name}: size`);
      // read into a buffer of the caller's: the bytes land in it; one too small is left alone
      const into = new Uint8Array(c.end - c.start + 3).fill(0xee);
      const ri = await b.getRange('r', c.range, { into });
      sameBytes(t, ri.data, data.subarray(c.start, c.end), `${c.name}: bytes read into a buffer`);
      t.ok(ri.data.buffer === into.buffer && ri.data.byteOffset === into.byteOffset, `${c.name}: read into the given buffer`);
      t.equal(into[c.end - c.start], 0xee, `${c.name}: nothing written past the range`);
      const small = new Uint8Array(c.end - c.start - 1).fill(0xee);
      const rs = await b.getRange('r', c.range, { into: small });
      sameBytes(t, rs.data, data.subarray(c.start, c.end), `${c.name}: bytes, with a buffer too small`);
      t.ok(rs.data.buffer !== small.buffer && small.every((x) => x === 0xee), `${c.name}: a buffer too small is not used`);
    }
    await expectCode(t, b.getRange('r', { offset: 1000, length: 1 }), ErrorCode.INVALID_RANGE, 'start at the end');
    await expectCode(t, b.getRange('r', { offset: 5000, length: 10 }), ErrorCode.INVALID_RANGE, 'start beyond the end');
    const bad: ByteRange[] = [
      { offset: -1, length: 10 },
      { offset: 0, length: 0 },
      { offset: 1.5, length: 2 },
      { offset: 0, length: -3 },
      { suffix: 0 },
      { suffix: -1 },
      { offset: Number.MAX_SAFE_INTEGER, length: 2 },
    ];
    for (const range of bad) {
      await expectCode(t, b.getRange('r', range), ErrorCode.INVALID_ARGUMENT, `malformed range ${JSON.stringify(range)}`);
    }
  });

  t.test('a zero-length object', async (t) => {
    const { b } = await fresh(t);
    const info = await b.put('empty', Buffer.alloc(0));
    t.equal(info.size, 0, 'put reports size 0');
    sameBytes(t, await b.get('empty'), Buffer.alloc(0), 'get returns no bytes');
    t.equal((await b.head('empty')).size, 0, 'head reports size 0');
    await expectCode(t, b.getRange('empty', { offset: 0, length: 1 }), ErrorCode.INVALID_RANGE, 'any offset range');
    const r = await b.getRange('empty', { suffix: 5 });
    t.same({ length: r.data.length, offset: r.offset, size: r.size }, { length: 0, offset: 0, size: 0 }, 'a suffix range is empty');
    const listed = await collect(b.list(''));
    t.same(listed.map((i) => [i.key, i.size]), [['empty', 0]], 'list shows it with size 0');
    const up = b.upload('empty-upload');
    const done = await up.complete();
    t.equal(done.size, 0, 'an upload with no writes stores an empty object');
    sameBytes(t, await b.get('empty-upload'), Buffer.alloc(0), 'its bytes');
  });

  t.test('missing objects are NOT_FOUND', async (t) => {
    const { b } = await fresh(t);
    await b.put('present', Buffer.from('x'));
    for (const key of ['absent', 'present/child', 'pres']) {
      const err = await expectCode(t, b.get(key), ErrorCode.NOT_FOUND, `get ${key}`);
      if (err instanceof ObjectStoreError) {
        t.equal(err.key, key, 'error names the key');
        t.match(err.message, key, 'message names the key');
      }
      await expectCode(t, b.getRange(key, { offset: 0, length: 1 }), ErrorCode.NOT_FOUND, `getRange ${key}`);
      await expectCode(t, b.getRange(key, { suffix: 1 }), ErrorCode.NOT_FOUND, `suffix getRange ${key}`);
      await expectCode(t, b.head(key), ErrorCode.NOT_FOUND, `head ${key}`);
    }
    await b.put('dir/inner', Buffer.from('y'));
    await expectCode(t, b.get('dir'), ErrorCode.NOT_FOUND, 'a key prefix is not an object');
    await expectCode(t, b.head('dir'), ErrorCode.NOT_FOUND, 'head of a key prefix');
  });

  t.test('list() yields keys in byte order and filters by string prefix', async (t) => {
    const { b } = await fresh(t);
    // '.' (0x2e) < '/' (0x2f) < '0' (0x30); U+FF5A sorts before U+1F600 in UTF-8 but after it in UTF-16.
    const keys = ['x/a.txt', 'x/a/b', 'x/a/c/d', 'x/a0', 'x/b', 'x/B', 'x/ä', 'x/\uff5a', 'x/\u{1f600}', 'x/a-', 'y', 'w/1'];
    const sizes = new Map<string, number>();
    for (const [i, k] of keys.entries()) {
      await b.put(k, seededBytes(i + 1, 100 + i));
      sizes.set(k, i + 1);
    }
    const sorted = [...keys].sort(compareUtf8);
    const all = await collect(b.list(''));
    t.same(all.map((i) => i.key), sorted, 'list("") returns every key in UTF-8 byte order');
    t.same(all.map((i) => i.size), sorted.map((k) => sizes.get(k)), 'with each size');
    for (const info of all) {
      const head = await b.head(info.key);
      t.equal(info.etag, head.etag, `list etag of ${info.key} matches head`);
    }
    t.same((await collect(b.list('x/a'))).map((i) => i.key), ['x/a-', 'x/a.txt', 'x/a/b', 'x/a/c/d', 'x/a0'], 'list("x/a") is a string prefix');
    t.same((await collect(b.list('x/a/'))).map((i) => i.key), ['x/a/b', 'x/a/c/d'], 'list("x/a/") stays under x/a/');
    t.same((await collect(b.list('x/a/c/d'))).map((i) => i.key), ['x/a/c/d'], 'a full key as prefix');
    t.same(await collect(b.list('nothing/')), [], 'an unused prefix lists nothing');
    t.same(await collect(b.list('x/a/c/d/')), [], 'a key used as a directory lists nothing');
    for (const p of ['/x', 'x//', '../', 'x/../', 'a\\b', 'a\0']) {
      await expectCode(t, collect(b.list(p)), ErrorCode.INVALID_ARGUMENT, `list(${JSON.stringify(p)})`);
    }
  });

  t.test('list() under a prefix does not leak sibling prefixes', async (t) => {
    const { target, b } = await fresh(t);
    for (const k of ['p/1', 'p/2/3', 'p2/1', 'p-x/1', 'p.x', 'q/1']) await b.put(k, Buffer.from(k));
    t.same((await collect(b.list('p/'))).map((i) => i.key), ['p/1', 'p/2/3'], 'list("p/")');

    // Native bucket prefixes: tenant-a must not see tenant-ab.
    const a = target.open('tenant-a');
    const ab = target.open('tenant-ab/');
    await a.put('k', Buffer.from('from a'));
    await ab.put('k', Buffer.from('from ab'));
    await ab.put('k2', Buffer.from('from ab 2'));
    t.same((await collect(a.list(''))).map((i) => i.key), ['k'], 'tenant-a lists only its own key');
    t.same((await collect(ab.list(''))).map((i) => i.key), ['k', 'k2'], 'tenant-ab lists only its own keys');
    sameBytes(t, await a.get('k'), Buffer.from('from a'), 'tenant-a reads its own object');
    sameBytes(t, await b.get('tenant-a/k'), Buffer.from('from a'), 'the unprefixed bucket sees it under the prefix');
    t.equal((await a.head('k')).key, 'k', 'head reports the unprefixed key');
    t.not(a.name, b.name, 'the prefixed bucket has its own name');
    await a.delete('k');
    await expectCode(t, b.get('tenant-a/k'), ErrorCode.NOT_FOUND, 'delete through the prefix removed it');
    sameBytes(t, await ab.get('k'), Buffer.from('from ab'), 'tenant-ab untouched');

    // The decorator gives the same guarantees over any bucket.
    const pa = new PrefixedBucket(b, 'dec-a');
    const pab = new PrefixedBucket(b, 'dec-ab');
    await pa.put('k', Buffer.from('dec a'));
    await pab.put('k', Buffer.from('dec ab'));
    t.same((await collect(pa.list(''))).map((i) => i.key), ['k'], 'PrefixedBucket lists only its own key');
    sameBytes(t, await b.get('dec-a/k'), Buffer.from('dec a'), 'PrefixedBucket stores under its prefix');
    const up = pab.upload('u');
    await up.write(Buffer.from('via upload'));
    t.equal((await up.complete()).key, 'u', 'PrefixedBucket upload reports the unprefixed key');
    t.same((await collect(pab.list(''))).map((i) => i.key), ['k', 'u'], 'and lists it');
    await expectCode(t, () => new PrefixedBucket(b, '../up'), ErrorCode.INVALID_ARGUMENT, 'a prefix with ".." is rejected');
    await expectCode(t, pa.get('../dec-ab/k'), ErrorCode.INVALID_ARGUMENT, 'a key cannot climb out of the prefix');
    await a.close();
    await ab.close();
  });

  t.test('list() pages through more than 1000 keys in order', async (t) => {
    const { b } = await fresh(t);
    const n = 1100;
    const keys = Array.from({ length: n }, (_, i) => `m/${String(i).padStart(5, '0')}`);
    await inBatches(keys, 32, (k) => b.put(k, Buffer.from(k)));
    await b.put('m0', Buffer.from('sibling'));
    const before = opts.requestCount?.(b);
    const listed = await collect(b.list('m/'));
    const after = opts.requestCount?.(b);
    t.equal(listed.length, n, `all ${n} keys listed`);
    t.ok(
      listed.every((info, i) => info.key === keys[i]),
      'in order, each once',
    );
    if (before !== undefined && after !== undefined && opts.listPageSize !== undefined) {
      t.equal(after - before, Math.ceil(n / opts.listPageSize), `listing took ${Math.ceil(n / opts.listPageSize)} pages`);
    }
    // Stop after a few entries: the iterator must not fetch everything first.
    let seen = 0;
    for await (const info of b.list('m/')) {
      t.equal(info.key, keys[seen], `early entry ${seen}`);
      if (++seen === 3) break;
    }
    t.equal(seen, 3, 'a listing can be abandoned early');
  });

  t.test('delete() removes an object; deleting a missing one is fine', async (t) => {
    const { b } = await fresh(t);
    await b.put('d/1', Buffer.from('one'));
    await b.put('d/2', Buffer.from('two'));
    await b.delete('d/1');
    await expectCode(t, b.get('d/1'), ErrorCode.NOT_FOUND, 'deleted object is gone');
    t.same((await collect(b.list(''))).map((i) => i.key), ['d/2'], 'and no longer listed');
    await b.delete('d/1');
    t.pass('deleting it again is fine');
    await b.delete('never/existed');
    t.pass('deleting a never-existing key is fine');
    await b.delete('d');
    t.pass('deleting a key prefix that is not an object is fine');
    sameBytes(t, await b.get('d/2'), Buffer.from('two'), 'the sibling is untouched');
    await b.delete('d/2');
    t.same(await collect(b.list('')), [], 'bucket is empty');
    await b.put('d/1', Buffer.from('again'));
    sameBytes(t, await b.get('d/1'), Buffer.from('again'), 'a deleted key can be written again');
  });

  t.test('upload() assembles many chunks, across parts, invisible until complete()', async (t) => {
    const { b } = await fresh(t);
    const total = part * 2 + 154_321;
    const data = seededBytes(total, 6);
    const up = b.upload('big/object');
    // Odd chunk sizes, one larger than a part, and a reused scratch buffer the caller overwrites.
    const sizes = [1, 7, 4096, part - 4104 - 1, 2, part + 3, 100_000];
    let off = 0;
    const scratch = Buffer.alloc(part + 100_000);
    for (const n of sizes) {
      const chunk = scratch.subarray(0, n);
      data.copy(chunk, 0, off, off + n);
      await up.write(chunk);
      chunk.fill(0xee); // the upload must have copied (or written) the bytes already
      off += n;
    }
    await expectCode(t, b.head('big/object'), ErrorCode.NOT_FOUND, 'nothing visible before complete()');
    t.same(await collect(b.list('big/')), [], 'nothing listed before complete()');
    const rest = data.subarray(off);
    await up.write(rest);
    const info = await up.complete();
    t.equal(info.size, total, 'complete() reports the size');
    t.equal(info.key, 'big/object', 'complete() reports the key');
    sameBytes(t, await b.get('big/object'), data, 'get returns every byte in order');
    const head = await b.head('big/object');
    t.same([head.size, head.etag], [total, info.etag], 'head agrees with complete()');
    const r = await b.getRange('big/object', { offset: part - 10, length: 20 });
    sameBytes(t, r.data, data.subarray(part - 10, part + 10), 'a range across the first part boundary');
    await expectCode(t, up.write(Buffer.from('late')), ErrorCode.STORAGE, 'write after complete()');

    for (const size of [part, 2 * part]) {
      const exact = seededBytes(size, 7 + size);
      const u = b.upload(`exact/${size}`);
      await u.write(exact.subarray(0, 1000));
      await u.write(exact.subarray(1000));
      t.equal((await u.complete()).size, size, `an upload of exactly ${size / part} part(s)`);
      sameBytes(t, await b.get(`exact/${size}`), exact, `its ${size} bytes`);
    }
  });

  t.test('upload() abort leaves nothing visible', async (t) => {
    const { b } = await fresh(t);
    await b.put('keep', Buffer.from('kept'));
    const up = b.upload('aborted/x');
    await up.write(seededBytes(part + 1000, 8)); // enough to start a multipart upload
    await up.write(seededBytes(part, 9));
    await up.abort();
    await expectCode(t, b.head('aborted/x'), ErrorCode.NOT_FOUND, 'aborted object does not exist');
    t.same((await collect(b.list(''))).map((i) => i.key), ['keep'], 'only the other object is listed');
    await up.abort();
    t.pass('abort() twice is fine');
    await expectCode(t, up.write(Buffer.from('x')), ErrorCode.STORAGE, 'write after abort()');
    await expectCode(t, up.complete(), ErrorCode.STORAGE, 'complete() after abort()');

    const small = b.upload('aborted/small');
    await small.write(Buffer.from('tiny'));
    await small.abort();
    await expectCode(t, b.head('aborted/small'), ErrorCode.NOT_FOUND, 'aborted small upload does not exist');

    // Aborting a replacement keeps the old version.
    const replace = b.upload('keep');
    await replace.write(seededBytes(part + 1, 10));
    await replace.abort();
    sameBytes(t, await b.get('keep'), Buffer.from('kept'), 'aborted replacement left the old object');
  });

  t.test('put() from a stream and from a file', async (t) => {
    const { b } = await fresh(t);
    const data = seededBytes(part + part / 2 + 17, 11);
    const chunks: Buffer[] = [];
    for (let off = 0; off < data.length; off += 300_001) chunks.push(data.subarray(off, off + 300_001));
    const fromStream = await b.put('s/stream', Readable.from(chunks));
    t.equal(fromStream.size, data.length, 'stream put reports the size');
    sameBytes(t, await b.get('s/stream'), data, 'stream put stores every byte');

    const small = await b.put('s/small-stream', Readable.from([Buffer.from('ab'), Buffer.from('cd')]));
    t.equal(small.size, 4, 'small stream put');
    sameBytes(t, await b.get('s/small-stream'), Buffer.from('abcd'), 'small stream bytes');

    const file = join(tmpdir(), `strata-acceptance-${process.pid}-${Date.now()}.bin`);
    await writeFile(file, data);
    t.teardown(async () => {
      const { rm } = await import('node:fs/promises');
      await rm(file, { force: true });
    });
    const fromFile = await b.put('s/file', { file });
    t.equal(fromFile.size, data.length, 'file put reports the size');
    sameBytes(t, await b.get('s/file'), data, 'file put stores every byte');

    await expectCode(t, b.put('s/missing-file', { file: `${file}.does-not-exist` }), ErrorCode.STORAGE, 'put from a missing file');
    await expectCode(t, b.head('s/missing-file'), ErrorCode.NOT_FOUND, 'nothing stored for the missing file');

    const failing = new Readable({
      read() {
        this.push(seededBytes(part + 10, 12));
        this.destroy(new Error('source broke'));
      },
    });
    const err = await expectCode(t, b.put('s/broken', failing), ErrorCode.STORAGE, 'put from a stream that errors');
    t.match(String((err as Error | undefined)?.message), /source broke/, 'the error says why');
    await expectCode(t, b.head('s/broken'), ErrorCode.NOT_FOUND, 'nothing stored for the broken stream');
  });

  t.test('invalid keys are rejected with INVALID_ARGUMENT', async (t) => {
    const { b } = await fresh(t);
    for (const key of INVALID_KEYS) {
      const k = JSON.stringify(key);
      await expectCode(t, b.put(key, Buffer.from('x')), ErrorCode.INVALID_ARGUMENT, `put ${k}`);
      await expectCode(t, b.get(key), ErrorCode.INVALID_ARGUMENT, `get ${k}`);
      await expectCode(t, b.getRange(key, { offset: 0, length: 1 }), ErrorCode.INVALID_ARGUMENT, `getRange ${k}`);
      await expectCode(t, b.head(key), ErrorCode.INVALID_ARGUMENT, `head ${k}`);
      await expectCode(t, b.delete(key), ErrorCode.INVALID_ARGUMENT, `delete ${k}`);
      await expectCode(t, () => b.upload(key), ErrorCode.INVALID_ARGUMENT, `upload ${k}`);
    }
    await expectCode(t, b.put('k'.repeat(1025), Buffer.from('x')), ErrorCode.INVALID_ARGUMENT, 'a key over 1024 bytes');
    t.same(await collect(b.list('')), [], 'nothing was stored');
    const odd = ['a b', 'ä/ö', 'x=1&y=2', 'semi;colon', 'per%cent', 'plus+sign', '.hidden', 'a..b', '...'];
    for (const key of odd) {
      await b.put(key, Buffer.from(key));
      sameBytes(t, await b.get(key), Buffer.from(key), `unusual but valid key ${JSON.stringify(key)}`);
    }
  });

  t.test('readers see a whole old or a whole new object during an overwrite', async (t) => {
    const { b } = await fresh(t);
    const size = part + 4096;
    const v1 = Buffer.alloc(size, 0xa1);
    const v2 = Buffer.alloc(size, 0xb2);
    await b.put('atomic', v1);
    let stop = false;
    const seen = new Set<string>();
    const reader = (async () => {
      while (!stop) {
        const got = await b.get('atomic');
        if (got.equals(v1)) seen.add('v1');
        else if (got.equals(v2)) seen.add('v2');
        else seen.add(`torn(${got.length})`);
      }
    })();
    const up = b.upload('atomic');
    await up.write(v2.subarray(0, part));
    await up.write(v2.subarray(part));
    await up.complete();
    stop = true;
    await reader;
    const last = await b.get('atomic');
    sameBytes(t, last, v2, 'the new version is visible after complete()');
    t.same([...seen].filter((s) => s.startsWith('torn')), [], `no torn reads (saw ${[...seen].join(', ')})`);
  });

  t.test('an aborted signal rejects the call', async (t) => {
    const { b } = await fresh(t);
    await b.put('sig', Buffer.from('data'));
    const ac = new AbortController();
    ac.abort();
    await t.rejects(b.get('sig', { signal: ac.signal }), { name: 'AbortError' }, 'get');
    await t.rejects(b.getRange('sig', { offset: 0, length: 1 }, { signal: ac.signal }), { name: 'AbortError' }, 'getRange');
    await t.rejects(b.put('sig2', Buffer.from('x'), { signal: ac.signal }), { name: 'AbortError' }, 'put');
    await expectCode(t, b.head('sig2'), ErrorCode.NOT_FOUND, 'the aborted put stored nothing');
  });
}
