/**
 * `npm run bench -- day-merge [flags]`: what the lifecycle role's day merge costs (src/lifecycle/day.ts),
 * first when it merges a day's six 4-hour blocks, then each time late data for a few series
 * arrives after the day block was published (the common case once a tier runs: a batch node
 * pushes a window again, a straggler scrape is written late).
 *
 * Data: the generator's `--series` (2000) series over one day at 15 s (bench/gen-samples.mjs,
 * seed 42), one shard, written as six 4-hour blocks into a filesystem bucket in a temporary
 * directory. Then `--reps` (3) times: a new version of window 2's block holding two late samples
 * of one series, folded into the day block by `mergeDay` as a lifecycle pass does.
 *
 * Last line, JSON: `series`, `samples`, `first_merge_ms`, `late_merge_ms` (median of the reps),
 * `late_merge_samples_per_s` (samples of the day block written per second), `late_series_copied`
 * (series whose run was copied, not decoded and encoded again), `day_bytes`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockWriter } from '../src/block/writer.js';
import { fileSink } from '../src/block/source.js';
import { DAY_MS, dayBlockKey, dayManifestKey } from '../src/format/day-key.js';
import { blockKey, DEFAULT_BLOCK_DURATION_MS } from '../src/format/key.js';
import type { Samples } from '../src/format/run.js';
import { mergeDay, readDayManifest, type DayGroup } from '../src/lifecycle/day.js';
import { openBucket, type Bucket, type ObjectInfo } from '../src/objstore/index.js';
import { loadDataset } from './dataset.js';
import { flag, quantile } from './proc.js';

const D = BigInt(DEFAULT_BLOCK_DURATION_MS);
const TENANT = 'bench';

/** `s` cut to `[a, b)`. */
function cut(s: Samples, a: bigint, b: bigint): Samples {
  let i = 0;
  while (i < s.timestamps.length && s.timestamps[i]! < a) i++;
  let j = i;
  while (j < s.timestamps.length && s.timestamps[j]! < b) j++;
  return { timestamps: s.timestamps.slice(i, j), values: s.values.slice(i, j) };
}

async function writeBlock(bucket: Bucket, dir: string, windowStart: bigint, series: { id: bigint; samples: Samples }[]): Promise<ObjectInfo> {
  const file = join(dir, 'window.block');
  const w = new BlockWriter(await fileSink(file), { tenant: TENANT, shard: 0, numShards: 1, windowStart, windowEnd: windowStart + D }, { expectedSeries: series.length });
  for (const s of series) await w.add(s.id, s.samples);
  await w.finish();
  return bucket.put(blockKey(TENANT, 0, windowStart), { file });
}

export async function main(argv: string[]): Promise<void> {
  const seriesCount = Number(flag(argv, 'series', '2000'));
  const reps = Number(flag(argv, 'reps', '3'));
  const start = '2026-10-02T00:00:00Z';
  const ds = loadDataset(flag(argv, 'data', join('data', 'bench', `day-${seriesCount}`)), [`--series=${seriesCount}`, '--hours=24', '--seed=42', `--start=${start}`]);
  const day0 = BigInt(Date.parse(start));
  const dir = mkdtempSync(join(tmpdir(), 'strata-day-merge-'));
  try {
    const bucket = await openBucket({ type: 'filesystem', path: join(dir, 'bucket') });
    const sources = new Map<string, ObjectInfo>();
    for (let w = 0n; w < BigInt(DAY_MS) / D; w++) {
      const w0 = day0 + w * D;
      const series = ds.series
        .map((s) => ({ id: BigInt(s.id), samples: cut(s, w0, w0 + D) }))
        .filter((x) => x.samples.timestamps.length > 0)
        .sort((a, b) => (a.id < b.id ? -1 : 1));
      sources.set(blockKey(TENANT, 0, w0), await writeBlock(bucket, dir, w0, series));
    }
    const opts = { workDir: join(dir, 'work'), now: () => Date.now(), shouldContinue: () => true };
    const group = (): DayGroup => ({ tenant: TENANT, shard: 0, dayStartMs: day0, sources, day: null, manifest: null });
    let t = performance.now();
    const first = await mergeDay(bucket, group(), null, opts);
    const firstMs = performance.now() - t;
    console.log(`first merge: six 4-hour blocks, ${first.series} series, ${first.samples} samples, ${first.bytes} bytes in ${firstMs.toFixed(0)} ms`);

    const w2 = day0 + 2n * D;
    const lateMs: number[] = [];
    let copied = 0;
    let samples = 0;
    let bytes = 0;
    for (let k = 0; k < reps; k++) {
      // a new version of window 2's block: two late samples of one series (a new ETag, not held yet)
      const late = { timestamps: BigInt64Array.from([w2 + 1n + BigInt(k), D + w2 - 1n - BigInt(k)]), values: Float64Array.from([k + 0.5, k + 1.5]) };
      sources.set(blockKey(TENANT, 0, w2), await writeBlock(bucket, dir, w2, [{ id: BigInt(ds.series[0]!.id), samples: late }]));
      const g = { ...group(), day: await bucket.head(dayBlockKey(TENANT, 0, day0)), manifest: await bucket.head(dayManifestKey(TENANT, 0, day0)) };
      const previous = await readDayManifest(bucket, dayManifestKey(TENANT, 0, day0));
      t = performance.now();
      const r = await mergeDay(bucket, g, previous, opts);
      lateMs.push(performance.now() - t);
      if (r.sourcesMerged !== 1) throw new Error(`late merge ${k} read ${r.sourcesMerged} 4-hour blocks, not 1`);
      copied = r.seriesCopied;
      samples = r.samples;
      bytes = r.bytes;
      console.log(`late merge ${k + 1}: ${r.series} series (${r.seriesCopied} copied as they were), ${r.samples} samples, ${r.bytes} bytes in ${lateMs[k]!.toFixed(0)} ms`);
    }
    const med = quantile(lateMs, 0.5);
    console.log(`late data folded into a day block: median ${med.toFixed(0)} ms, ${(samples / med / 1000).toFixed(1)} M samples/s of day block written; first merge ${firstMs.toFixed(0)} ms`);
    console.log(
      JSON.stringify({
        series: first.series,
        samples: first.samples,
        first_merge_ms: Math.round(firstMs),
        late_merge_ms: Math.round(med),
        late_merge_samples_per_s: Math.round((samples / med) * 1000),
        late_series_copied: copied,
        day_bytes: bytes,
      }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
