import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockReader } from '../../src/block/reader.js';
import { bucketSource, type RangeSource } from '../../src/block/source.js';
import { BlockWriter, type BlockMeta } from '../../src/block/writer.js';
import { blockKey } from '../../src/format/key.js';
import { FilesystemBucket, S3Bucket, type Bucket } from '../../src/objstore/index.js';
import { createTestBucket, s3BucketConfig, s3TestEnv } from '../support/s3env.js';
import { KINDS, makeSeries, sameSamples } from '../support/series.js';
import type { Samples } from '../../src/format/run.js';

const W0 = 1_795_219_200_000n;
const META: BlockMeta = { tenant: 'acme', shard: 1, numShards: 2, windowStart: W0, windowEnd: W0 + 14_400_000n };
// ~7.6 MB of block: more than one 5 MiB multipart part on S3
const SERIES: { id: bigint; samples: Samples }[] = Array.from({ length: 2200 }, (_, i) => ({
  id: 1n + 2n * BigInt(i * 5),
  samples: makeSeries(KINDS[i % KINDS.length] === 'const' ? 'float' : KINDS[i % KINDS.length]!, 960, W0, i),
}));

function counting(src: RangeSource): RangeSource & { reads: number } {
  const c = { name: src.name, reads: 0, read: (r: Parameters<RangeSource['read']>[0]) => ((c.reads++), src.read(r)) };
  return c;
}

async function roundTrip(t: Test, bucket: Bucket): Promise<void> {
  const key = blockKey(META.tenant, META.shard, META.windowStart);
  const w = new BlockWriter(bucket.upload(key), META, { expectedSeries: SERIES.length });
  for (const s of SERIES.slice(0, 1100)) await w.add(s.id, s.samples);
  await t.rejects(bucket.head(key), { code: 'ERR_STRATA_NOT_FOUND' }, 'nothing visible before finish()');
  for (const s of SERIES.slice(1100)) await w.add(s.id, s.samples);
  const { size, footer } = await w.finish();
  t.ok(size > 6 * 2 ** 20, `block of ${size} bytes`);
  t.equal((await bucket.head(key)).size, size);

  const src = counting(bucketSource(bucket, key));
  const r = await BlockReader.open(src);
  t.equal(r.footer.blockId, footer.blockId);
  t.equal(src.reads, 1, 'one suffix read opens the block');
  const probe = SERIES[901]!;
  t.ok(sameSamples((await r.readSeries(probe.id))!, probe.samples), 'cold read exact');
  t.equal(src.reads, 3, 'cold: 3 range reads in all');
  const next = SERIES[902]!;
  t.ok(sameSamples((await r.readSeries(next.id))!, next.samples), 'warm read exact');
  t.equal(src.reads, 4, 'warm: 1 range read');
  let ok = 0;
  for (const s of SERIES) if (sameSamples((await r.readSeries(s.id))!, s.samples)) ok++;
  t.equal(ok, SERIES.length, 'every series bit-exact');
  t.same(await r.verify(), { series: SERIES.length, samples: footer.sampleCount });

  // an aborted writer leaves the published block untouched
  const w2 = new BlockWriter(bucket.upload(key), META);
  await w2.add(SERIES[0]!.id, SERIES[0]!.samples);
  await w2.abort();
  const again = await BlockReader.open(bucketSource(bucket, key));
  t.equal(again.footer.blockId, footer.blockId, 'abort did not replace the block');
}

t.test('blocks round-trip through the filesystem bucket', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-fsblock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const bucket = new FilesystemBucket({ path: dir });
  t.teardown(() => bucket.close());
  await roundTrip(t, bucket);
});

t.test('blocks round-trip through Ceph RGW with a multipart upload', async (t) => {
  const env = s3TestEnv();
  const name = await createTestBucket(t, { tag: 'block' });
  const bucket = new S3Bucket(s3BucketConfig(env, name, { partSizeBytes: 5 * 2 ** 20 }));
  t.teardown(() => bucket.close());
  await roundTrip(t, bucket);
  t.ok(bucket.stats.requests > 0);
});
