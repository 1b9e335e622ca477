/**
 * `npm run bench -- writer [--series=N] [--samples=N]`: builds one 4-hour block of N series
 * (default 2,000,000 series x 240 samples, a 60 s scrape interval) with the streaming writer into
 * a local file, generating each series on the fly, and reports the writer's peak RSS. The block
 * is verified by reading a sample of series back, then deleted.
 */
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockReader } from '../src/block/reader.js';
import { fileSink, fileSource } from '../src/block/source.js';
import { BlockWriter } from '../src/block/writer.js';
import { synth } from '../src/common/series-gen.js';

function flag(argv: string[], name: string, def: string): string {
  const f = argv.find((a) => a.startsWith(`--${name}=`));
  return f ? f.slice(name.length + 3) : def;
}

function peakRssBytes(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : process.memoryUsage().rss;
}

export async function main(argv: string[]): Promise<void> {
  const seriesCount = Number(flag(argv, 'series', '2000000'));
  const perSeries = Number(flag(argv, 'samples', '240'));
  const intervalMs = Math.floor((4 * 3600 * 1000) / perSeries);
  const window = 1_795_219_200_000n;
  const dir = mkdtempSync(join(tmpdir(), 'strata-writer-'));
  const path = join(dir, 'big.block');
  const baseRss = process.memoryUsage().rss;
  try {
    const w = new BlockWriter(await fileSink(path), { tenant: 'bench', shard: 0, numShards: 1, windowStart: window, windowEnd: window + 14_400_000n });
    const t0 = performance.now();
    let maxRss = 0;
    for (let i = 0; i < seriesCount; i++) {
      await w.add(BigInt(i + 1), synth(i, perSeries, window, intervalMs));
      if (i % 50000 === 0) {
        maxRss = Math.max(maxRss, process.memoryUsage().rss);
        if (i % 500000 === 0) console.log(`  ${i} series, rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`);
      }
    }
    const { size, footer } = await w.finish();
    const seconds = (performance.now() - t0) / 1000;
    const peak = Math.max(maxRss, peakRssBytes());
    const r = await BlockReader.open(fileSource(path));
    const openReads = r.reads;
    let checked = 0;
    for (let i = 0; i < seriesCount; i += Math.max(1, Math.floor(seriesCount / 1000))) {
      const want = synth(i, perSeries, window, intervalMs);
      const got = (await r.readSeries(BigInt(i + 1)))!;
      const a = Buffer.from(got.values.buffer, got.values.byteOffset, got.values.byteLength);
      const b = Buffer.from(want.values.buffer, want.values.byteOffset, want.values.byteLength);
      if (!a.equals(b) || !got.timestamps.every((t, k) => t === want.timestamps[k])) throw new Error(`series ${i + 1} differs`);
      checked++;
    }
    console.log(`block: ${footer.seriesCount} series, ${footer.sampleCount} samples, ${(size / 2 ** 20).toFixed(1)} MiB, ${footer.pageCount} pages, index of index ${footer.ioi.length} bytes`);
    console.log(`built in ${seconds.toFixed(1)} s (${(footer.sampleCount / seconds / 1e6).toFixed(2)} M samples/s); peak RSS ${(peak / 2 ** 20).toFixed(0)} MiB (process start ${(baseRss / 2 ** 20).toFixed(0)} MiB); opening it took ${openReads} read(s); ${checked} series checked bit for bit`);
    console.log(JSON.stringify({
      series: footer.seriesCount,
      samples: footer.sampleCount,
      block_bytes: size,
      build_seconds: Number(seconds.toFixed(2)),
      peak_rss_mib: Math.round(peak / 2 ** 20),
      open_reads: openReads,
      checked_exact: checked,
    }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
