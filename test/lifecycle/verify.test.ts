/**
 * Bounded memory in the day step: the verification of a merged day block reads it in pieces
 * (verifyBlock, src/block/reader.ts) and finds what BlockReader.verify() finds; and a pass hands each
 * (tenant, day) to the day step as soon as the listing has passed it, instead of holding the
 * whole listing (src/lifecycle/job.ts). Real block files, a real filesystem bucket.
 *
 * Run alone: npx tap test/lifecycle/verify.test.ts
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { BlockReader, locationOf } from '../../src/block/reader.js';
import { fileSink, fileSource } from '../../src/block/source.js';
import { BlockWriter } from '../../src/block/writer.js';
import { DAY_MS } from '../../src/format/day-key.js';
import { runLifecyclePass } from '../../src/lifecycle/job.js';
import { VERIFY_CHUNK_BYTES, verifyBlock as verifyBlockInPieces } from '../../src/block/reader.js';
import { FilesystemBucket, type Bucket, type ObjectInfo } from '../../src/objstore/index.js';
import { openTenantsConfig } from '../../src/tenancy/config.js';
import { TenantRegistry } from '../../src/tenancy/tenants.js';
import { D, makeDataSet, tempDir, W0, writeBlock } from '../support/gateway.js';

t.test('the day block verification reads in pieces and finds the same as a whole read', async (t) => {
  const dir = tempDir(t, 'verify');
  const file = join(dir, 'b.block');
  const ds = makeDataSet({ seed: 7, n: 300, numShards: 1, windows: 6, maxSamples: 200 });
  const w = new BlockWriter(await fileSink(file), { tenant: 'acme', shard: 0, numShards: 1, windowStart: W0, windowEnd: W0 + BigInt(DAY_MS) }, { seriesPerPage: 32 });
  for (const s of ds.series) await w.add(s.id, s.samples);
  await w.finish();
  const reader = await BlockReader.open(fileSource(file));
  const whole = await reader.verify();
  t.equal(VERIFY_CHUNK_BYTES, 8 * 1024 * 1024, 'the documented bound');

  // the largest run and index page: a piece is never larger than max(chunk, those)
  let largestUnit = 0;
  for (let p = 0; p < reader.ioi.pageCount; p++) {
    largestUnit = Math.max(largestUnit, reader.ioi.lengths[p]!);
    const page = BlockReader.decodePageBytes(file, reader.ioi, p, (await reader.source.read({ offset: reader.ioi.offsets[p]!, length: reader.ioi.lengths[p]! })).data, reader.footer.samples.length, reader.footer.version);
    for (let e = 0; e < page.count; e++) largestUnit = Math.max(largestUnit, locationOf(page, p, e).length);
  }
  for (const chunk of [64, 4096, VERIFY_CHUNK_BYTES]) {
    const r = await verifyBlockInPieces(reader, chunk);
    t.same([r.series, r.samples], [whole.series, whole.samples], `chunk ${chunk}: same counts`);
    t.ok(r.largestReadBytes <= Math.max(chunk, largestUnit), `chunk ${chunk}: largest read ${r.largestReadBytes} <= max(chunk, largest run or page ${largestUnit})`);
  }
  t.equal(whole.series, 300);
  t.ok((await verifyBlockInPieces(reader, 4096)).largestReadBytes < reader.size / 4, 'a small chunk reads far less than the block at once');

  // damage is found as by the whole read
  const bytes = readFileSync(file);
  const damaged = (at: number): string => {
    const copy = Buffer.from(bytes);
    copy[at] = copy[at]! ^ 0x20;
    const path = join(dir, `damaged-${at}.block`);
    writeFileSync(path, copy);
    return path;
  };
  const f = reader.footer;
  const inSamples = await BlockReader.open(fileSource(damaged(f.samples.offset + Math.floor(f.samples.length / 2))));
  await t.rejects(verifyBlockInPieces(inSamples, 512), { code: 'ERR_STRATA_CORRUPT', message: /sample section checksum mismatch/ });
  await t.rejects(inSamples.verify(), { code: 'ERR_STRATA_CORRUPT' });
  const inIndex = await BlockReader.open(fileSource(damaged(f.index.offset + 3)));
  await t.rejects(verifyBlockInPieces(inIndex, 512), { code: 'ERR_STRATA_CORRUPT', message: /index section checksum mismatch/ });
  await t.rejects(verifyBlockInPieces(reader, 0), RangeError);
});

t.test('a pass merges each day as soon as the listing has passed it', async (t) => {
  const dir = tempDir(t, 'verify-list');
  const fs = new FilesystemBucket({ path: join(dir, 'bucket') });
  t.teardown(() => fs.close());
  // 3 days x 2 windows x 2 shards of one tenant
  const ds = makeDataSet({ seed: 3, n: 40, numShards: 2, windows: 1, maxSamples: 10 });
  for (let day = 0; day < 3; day++) {
    for (const wi of [0, 3]) {
      const ws = W0 + BigInt(day * DAY_MS) + BigInt(wi) * D;
      for (const shard of [0, 1]) {
        const members = ds.series.filter((s) => s.id % 2n === BigInt(shard) && s.samples.timestamps.length > 0).map((s) => ({ id: s.id, samples: { timestamps: s.samples.timestamps.map((x) => x - W0 + ws), values: s.samples.values } }));
        await writeBlock(fs, 'acme', shard, 2, ws, members);
      }
    }
  }
  // the bucket as the pass sees it: counts the keys listed so far
  let listed = 0;
  const counting: Bucket = {
    name: fs.name,
    get: (k, o) => fs.get(k, o),
    getRange: (k, r, o) => fs.getRange(k, r, o),
    head: (k) => fs.head(k),
    put: (k, b, o) => fs.put(k, b, o),
    upload: (k, o) => fs.upload(k, o),
    delete: (k) => fs.delete(k),
    close: async () => undefined,
    list: async function* (prefix: string): AsyncIterable<ObjectInfo> {
      for await (const i of fs.list(prefix)) {
        listed++;
        yield i;
      }
    },
  };
  const reg = new TenantRegistry(openTenantsConfig({ type: 'filesystem', path: join(dir, 'bucket') }), { openBucket: async () => counting });
  t.teardown(() => reg.close());
  const mergedAt: number[] = [];
  const r = await runLifecyclePass(reg, Number(W0) + 10 * DAY_MS, {
    blockDurationMs: Number(D),
    retentionGraceMs: 0,
    incompleteUploadMaxAgeMs: DAY_MS,
    deleteConcurrency: 4,
    days: { dayMergeAfterMs: 0, daySourceGraceMs: DAY_MS, workDir: join(dir, 'work'), now: () => Number(W0) + 10 * DAY_MS, onMergeStart: () => mergedAt.push(listed) },
  });
  t.equal(r.dayMerges, 6, '3 days x 2 shards merged');
  t.equal(r.failures, 0);
  // each day has 4 keys; its merges start once the first key of the next day is listed (the last at the end)
  t.same(mergedAt, [5, 5, 9, 9, 12, 12], 'merged day by day while listing');
});
