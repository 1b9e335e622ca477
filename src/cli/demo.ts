/**
 * `strata demo`: writes one block of synthetic monitoring data (counters, 2-decimal gauges,
 * constants and full-entropy floats on a jittered 15 s grid) into the embedded filesystem bucket,
 * reads it back through the two-level index and checks every sample bit for bit.
 */
import type { Command } from 'commander';
import { BlockReader } from '../block/reader.js';
import { bucketSource } from '../block/source.js';
import { BlockWriter } from '../block/writer.js';
import { blockKey, DEFAULT_BLOCK_DURATION_MS, windowStartOf } from '../format/key.js';
import { openBucket } from '../objstore/index.js';
import { synth } from './synth.js';

async function demo(opts: { bucketPath: string; series: string }): Promise<void> {
  const count = Number(opts.series);
  if (!Number.isInteger(count) || count < 1) throw new Error(`--series must be a positive integer, got ${opts.series}`);
  const bucket = await openBucket({ type: 'filesystem', path: opts.bucketPath });
  try {
    const window = windowStartOf(BigInt(Date.now()) - BigInt(DEFAULT_BLOCK_DURATION_MS) * 2n, DEFAULT_BLOCK_DURATION_MS);
    const key = blockKey('demo', 0, window);
    const n = DEFAULT_BLOCK_DURATION_MS / 15000;
    const series = Array.from({ length: count }, (_, i) => ({ id: BigInt(i + 1), samples: synth(i, n, window) }));
    const t0 = performance.now();
    const w = new BlockWriter(bucket.upload(key), { tenant: 'demo', shard: 0, numShards: 1, windowStart: window, windowEnd: window + BigInt(DEFAULT_BLOCK_DURATION_MS) }, { expectedSeries: count });
    for (const s of series) await w.add(s.id, s.samples);
    const { size, footer } = await w.finish();
    const ms = performance.now() - t0;
    console.log(`wrote ${bucket.name}/${key}`);
    console.log(`  ${footer.seriesCount} series, ${footer.sampleCount} samples, ${size} bytes = ${(size / footer.sampleCount).toFixed(3)} bytes/sample, in ${ms.toFixed(0)} ms`);
    const reader = await BlockReader.open(bucketSource(bucket, key));
    const probe = series[Math.floor(count / 2)]!;
    const got = (await reader.readSeries(probe.id))!;
    console.log(`  read series ${probe.id} back with ${reader.reads} range reads: ${got.timestamps.length} samples`);
    let exact = 0;
    for (const s of series) {
      const r = (await reader.readSeries(s.id))!;
      const a = Buffer.from(r.values.buffer, r.values.byteOffset, r.values.byteLength);
      const b = Buffer.from(s.samples.values.buffer, s.samples.values.byteOffset, s.samples.values.byteLength);
      if (a.equals(b) && r.timestamps.every((t, k) => t === s.samples.timestamps[k])) exact++;
    }
    console.log(`  ${exact} of ${count} series read back bit for bit`);
    console.log(`inspect it:  node bin/strata.js block inspect ${key} --bucket-path ${opts.bucketPath}`);
    console.log(`dump one:    node bin/strata.js block dump ${key} --bucket-path ${opts.bucketPath} --series ${probe.id} | head`);
    if (exact !== count) process.exitCode = 1;
  } finally {
    await bucket.close();
  }
}

/** Registers `strata demo`. */
export function registerDemoCommands(program: Command): void {
  program
    .command('demo')
    .description('write a block of synthetic data to the embedded filesystem bucket and read it back')
    .option('--bucket-path <dir>', 'filesystem bucket directory', './data/bucket')
    .option('--series <n>', 'number of series', '1000')
    .action(demo);
}
