/**
 * Block building on worker threads (build-pool.ts): blocks built on a worker hold exactly what
 * blocks built on the main thread hold, late data merges into the published block on a worker, a
 * bucket error met while serving a worker fails the flush with that very error, and a worker that
 * dies in the middle of a build (with the WAL's LevelDB databases open) fails its flush, which is
 * retried and loses nothing.
 */
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { BlockReader } from '../../src/block/reader.js';
import { bucketSource } from '../../src/block/source.js';
import { createLogger } from '../../src/common/logger.js';
import { ErrorCode, ObjectStoreError } from '../../src/errors.js';
import { blockKey } from '../../src/format/key.js';
import type { Bucket, ObjectUpload } from '../../src/objstore/bucket.js';
import { FilesystemBucket } from '../../src/objstore/fs.js';
import { Aggregator } from '../../src/shard-aggregator/aggregator.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import type { WireSeries } from '../../src/shard-aggregator/ingest.js';
import { AggregatorMetrics } from '../../src/shard-aggregator/metrics.js';
import { MERGE_GROUP_SAMPLES } from '../../src/shard-aggregator/block-builder.js';
import { bitsBytes, eventually, readBlock, tempDir, tsBytes } from '../support/aggregator.js';

const H = 4 * 3600 * 1000;
const W = 1793491200000;
const logger = createLogger({ level: 'silent' });

/** Series `id` of shard 0 (of 2): `n` samples from W + offset, values with odd bit patterns. */
function series(id: bigint, n: number, offset: number): WireSeries {
  const ts: bigint[] = [];
  const bits: bigint[] = [];
  for (let i = 0; i < n; i++) {
    ts.push(BigInt(W + offset + i * 15_000));
    // NaN payloads, -0 and ordinary values
    bits.push(i % 7 === 0 ? 0x7ff0000000000002n : i % 11 === 0 ? 0x8000000000000000n : BigInt.asUintN(64, (id * 0x9e3779b97f4a7c15n) ^ BigInt(i)) & 0x3fffffffffffffffn);
  }
  return { id, timestamps: tsBytes(ts), values: bitsBytes(bits) };
}

/** Writes the same data: several requests, with overlaps (last write wins), over several WAL segments. */
async function load(agg: Aggregator): Promise<void> {
  for (let r = 0; r < 6; r++) {
    const batch: WireSeries[] = [];
    for (let i = 0; i < 200; i++) batch.push(series(BigInt(2 * (i * 3 + (r % 3))), 120, r * 1_000));
    await agg.write('acme', 0, batch);
  }
}

/** A property of `target` for a Proxy of it (its methods bound to it: they use private fields). */
function own(target: object, prop: string | symbol, receiver: unknown): unknown {
  const v = Reflect.get(target, prop, receiver) as unknown;
  return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
}

/** A bucket whose uploads block on their first write until `release` (while `hold` is true). */
function holdingBucket(inner: Bucket): { bucket: Bucket; hold: { on: boolean; writing: Promise<void>; release: () => void } } {
  let writing!: () => void;
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const hold = { on: true, writing: new Promise<void>((r) => (writing = r)), release };
  const bucket = new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop !== 'upload') return own(target, prop, receiver);
      return (key: string): ObjectUpload => {
        const up = target.upload(key);
        const held = hold.on;
        return {
          async write(chunk) {
            if (held) {
              writing();
              await released;
              throw new Error('upload cut (test)');
            }
            return up.write(chunk);
          },
          complete: () => up.complete(),
          abort: () => up.abort(),
        } as ObjectUpload;
      };
    },
  });
  return { bucket, hold };
}

async function engine(t: Test, dir: string, bucket: Bucket, extra: Record<string, unknown> = {}): Promise<Aggregator> {
  const config = parseAggregatorConfig({
    walDir: join(dir, 'wal'),
    bucket: { type: 'filesystem', path: join(dir, 'bucket') },
    numShards: 2,
    walWriteBufferBytes: 64 * 1024, // several segments per WAL
    flushRetryBaseMs: 50,
    flushRetryMaxMs: 100,
    ...extra,
  });
  const agg = await Aggregator.open({ config, bucket, logger, metrics: new AggregatorMetrics(), now: () => W + H + 1000, autoFlush: false });
  t.teardown(() => agg.close());
  return agg;
}

t.test('a block built on a worker holds exactly what one built on the main thread holds, late data included', async (t) => {
  const blocks: Map<bigint, { ts: bigint[]; bits: bigint[] }>[] = [];
  const sizes: number[] = [];
  for (const threads of [0, 1]) {
    const dir = tempDir(`build-same-${threads}`);
    const bucket = new FilesystemBucket({ path: join(dir, 'bucket') });
    const agg = await engine(t, dir, bucket, { flushThreads: threads });
    t.equal(agg.flusher.pool.threads, threads);
    await load(agg);
    t.ok(agg.store.gens({ tenant: 'acme', shard: 0, windowStart: BigInt(W) })[0]!.segmentDirs.length > 2, 'the WAL spans several segments');
    const [first] = await agg.seal('acme', 0, BigInt(W), true);
    t.equal(first?.replaced, false);
    // late data: merged into the published block
    await agg.write('acme', 0, [series(4n, 50, 7_500), series(100_000n, 3, 0)]);
    const [second] = await agg.seal('acme', 0, BigInt(W), true);
    t.equal(second?.replaced, true, 'the published block was replaced');
    t.equal(agg.flusher.pool.running.length, threads, threads === 0 ? 'built on the main thread' : 'built on a worker');
    const key = blockKey('acme', 0, BigInt(W));
    blocks.push(await readBlock(bucket, key));
    sizes.push((await BlockReader.open(bucketSource(bucket, key))).size);
    t.same(agg.status().windows, [], 'WAL deleted');
  }
  t.equal(blocks[0]!.size, 601, 'every series');
  t.equal(sizes[1], sizes[0], 'same block size');
  let same = true;
  for (const [id, s] of blocks[0]!) {
    const o = blocks[1]!.get(id);
    if (!o || o.ts.length !== s.ts.length || o.ts.some((x, i) => x !== s.ts[i]) || o.bits.some((x, i) => x !== s.bits[i])) same = false;
  }
  t.ok(same, 'every series the same, timestamps and value bits');
});

t.test('a worker that dies in the middle of a build fails its flush; the retry loses nothing', async (t) => {
  const dir = tempDir('build-dies');
  const fsb = new FilesystemBucket({ path: join(dir, 'bucket') });
  const { bucket, hold } = holdingBucket(fsb);
  const agg = await engine(t, dir, bucket, { flushThreads: 1 });
  await load(agg);
  const sealed = agg.seal('acme', 0, BigInt(W), true);
  await hold.writing; // the worker has the WAL's segments open and waits for its first chunk
  hold.on = false;
  t.equal(agg.flusher.pool.running.length, 1);
  await agg.flusher.pool.running[0]!.terminate();
  await t.rejects(sealed, /block building worker exited/, 'the flush fails');
  hold.release();
  t.ok(agg.status().windows.length > 0, 'the WAL is kept');
  const st = await eventually('the retried flush', async () => (agg.status().lastFlushes[0]?.block ? agg.status() : null));
  t.equal(st.lastFlushes[0]!.block!.series, 600);
  t.equal(st.lastFlushes[1]?.error, 'block building worker exited with code 1', 'the failure was recorded');
  t.same(st.windows, [], 'the WAL is deleted after the retry');
  const block = await readBlock(fsb, blockKey('acme', 0, BigInt(W)));
  t.equal(block.size, 600);
  const s0 = block.get(0n)!;
  t.equal(s0.ts.length, 240, 'series 0: the samples of both its requests');
});

t.test('a bucket error met while serving a worker fails the flush with that error', async (t) => {
  const dir = tempDir('build-bucket-error');
  const fsb = new FilesystemBucket({ path: join(dir, 'bucket') });
  const bucket = new Proxy(fsb, {
    get(target, prop, receiver) {
      if (prop !== 'upload') return own(target, prop, receiver);
      return (key: string): ObjectUpload => {
        const up = target.upload(key);
        return {
          write: () => Promise.reject(new ObjectStoreError(ErrorCode.ACCESS_DENIED, 'filesystem', key, 'denied (test)')),
          complete: () => up.complete(),
          abort: () => up.abort(),
        } as ObjectUpload;
      };
    },
  });
  const agg = await engine(t, dir, bucket, { flushThreads: 1, flushRetryBaseMs: 60_000, flushRetryMaxMs: 60_000 });
  await load(agg);
  const err = await agg.seal('acme', 0, BigInt(W), true).then(
    () => null,
    (e: unknown) => e,
  );
  t.type(err, ObjectStoreError, 'the very error of the bucket');
  t.equal((err as ObjectStoreError).code, ErrorCode.ACCESS_DENIED);
  t.ok(agg.status().windows.length > 0, 'the WAL is kept');
});

t.test('a series written many times over is merged group by group (MERGE_GROUP_SAMPLES): last write wins, replaced block included', async (t) => {
  const dir = tempDir('build-groups');
  const bucket = new FilesystemBucket({ path: join(dir, 'bucket') });
  const agg = await engine(t, dir, bucket, { flushThreads: 1, walWriteBufferBytes: 4 * 1024 * 1024 });
  // write k covers [k * STEP, k * STEP + N) ms after W, with values naming the write
  const N = 300_000;
  const STEP = 100_000;
  const write = (k: number, n = N): WireSeries => {
    const ts: bigint[] = [];
    const bits: bigint[] = [];
    for (let i = 0; i < n; i++) {
      ts.push(BigInt(W + k * STEP + i));
      bits.push(BigInt(k) * 0x100000000n + BigInt(i) + 0x3ff0000000000000n);
    }
    return { id: 6n, timestamps: tsBytes(ts), values: bitsBytes(bits) };
  };
  const expect = new Map<bigint, bigint>();
  const note = (k: number, n = N): void => {
    for (let i = 0; i < n; i++) expect.set(BigInt(W + k * STEP + i), BigInt(k) * 0x100000000n + BigInt(i) + 0x3ff0000000000000n);
  };
  const check = async (what: string): Promise<void> => {
    const got = (await readBlock(bucket, blockKey('acme', 0, BigInt(W)))).get(6n)!;
    const want = [...expect.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
    t.equal(got.ts.length, want.length, `${what}: one sample per distinct timestamp`);
    let bad = 0;
    want.forEach(([ts, bits], i) => {
      if (got.ts[i] !== ts || got.bits[i] !== bits) bad++;
    });
    t.equal(bad, 0, `${what}: every sample the last write's`);
  };
  // 5 writes of 300,000 samples: 1.5 M samples in the WAL for one series, more than one group
  for (let k = 0; k < 5; k++) {
    await agg.write('acme', 0, [write(k)]);
    note(k);
  }
  t.ok(5 * N > MERGE_GROUP_SAMPLES, 'more samples than one group');
  await agg.seal('acme', 0, BigInt(W), true);
  await check('first block');
  // late data over the published block: its samples first, then the new runs
  for (const k of [1, 3, 2, 3]) {
    await agg.write('acme', 0, [write(k, 120_000)]);
    note(k, 120_000);
  }
  const [second] = await agg.seal('acme', 0, BigInt(W), true);
  t.equal(second?.replaced, true, 'the published block was replaced');
  await check('replacement');
});
