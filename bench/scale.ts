/**
 * `npm run bench -- scale [--wal-gb=1] [--shards=4] [--multi-gb=1] [--concurrency=8]
 * [--batch-samples=250000] [--runs=single,multi1,multi] [--slice-s=5] [--pin-loadgen=1]`: the write path at
 * production volume. The aggregator (`strata aggregator`, compiled JS) runs as a separate process
 * with every write fsynced and a filesystem bucket.
 *
 * Runs:
 * - `single`: one (tenant, shard, window) until its WAL holds `--wal-gb` GiB;
 * - `multi1`: `--shards` shards of one window, `--multi-gb` GiB of WAL in all, with the
 *   aggregator pinned to one core (`taskset -c 0`);
 * - `multi`: the same with every core; the ratios multi / multi1 are the scaling figures.
 *
 * The load generator (this process: protobuf encoding and gRPC sending) runs on the same machine
 * and costs CPU in proportion to the samples it sends (`loadgen_cpu_s` of each run). So that both
 * runs compare the same machine with one core and with all of them, it is pinned to the cores the
 * aggregator has (`--pin-loadgen=1`, the default): with the aggregator alone on core 0 and the
 * generator free to use core 1, the one-core run had more than one core, and the ratio could not
 * reach 2 even with perfect scaling. `--pin-loadgen=0` measures the old way.
 *
 * Data is generated on the fly from the generator's realistic series (bench/gen-samples.mjs: 40 %
 * counters with resets, 25 % 2-decimal random-walk gauges, 20 % constant or rarely changing, 15 %
 * high-entropy floats; a phase per scrape target, jittered scrapes): two templates of 10,000
 * series × 4 h × 15 s (seed 42 with 10 % of scrapes jittered, and seed 7 with 50 % jittered and
 * 1 % of each target's scrapes missed), replicated under fresh series ids, alternating.
 *
 * While a run ingests, every `--slice-s` seconds it prints the rate of that slice. Per run it
 * reports: samples, WAL bytes, write amplification (bytes the aggregator wrote to disk during
 * ingest from /proc/PID/io, ÷ the WAL's run bytes as Status reports them), LevelDB compactions (from every WAL segment's
 * `LOG`, read before the flush deletes them), samples per aggregator CPU-second (utime + stime of
 * all its threads), ingest and flush samples/s, and peak RSS (VmHWM). The last line is JSON: the
 * figures of the single run at the top level, the largest peak RSS of all runs
 * (`max_rss_mb_any_run`, `max_rss_run`), and every run under `runs`.
 */
import { execFileSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WriterClient, type SeriesData } from '../src/client/writer.js';
import { DEFAULT_BLOCK_DURATION_MS } from '../src/format/key.js';
import { loadDataset, type Series } from './dataset.js';
import { cpuSeconds, flag, rssMiB, startAggregator, stop, writeBytes } from './proc.js';

const GiB = 2 ** 30;
const H = DEFAULT_BLOCK_DURATION_MS;
const TEMPLATE_SERIES = 10_000;
const SERIES_PER_TARGET = 100;

/** Deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = Math.imul(s ^ (s >>> 15), 1 | s);
    x ^= x + Math.imul(x ^ (x >>> 7), 61 | x);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Drops `share` of each scrape target's scrapes (every series of the target loses that
 * timestamp, like a failed scrape in Prometheus).
 */
function missScrapes(series: readonly Series[], share: number, seed: number): Series[] {
  const out: Series[] = [];
  for (let g = 0; g < series.length; g += SERIES_PER_TARGET) {
    const target = series.slice(g, g + SERIES_PER_TARGET);
    const r = prng(seed + g);
    const n = target[0]!.timestamps.length;
    const keep = Array.from({ length: n }, () => r() >= share);
    for (const s of target) {
      const idx: number[] = [];
      for (let i = 0; i < s.timestamps.length; i++) if (keep[i] ?? true) idx.push(i);
      out.push({ id: s.id, type: s.type, timestamps: BigInt64Array.from(idx, (i) => s.timestamps[i]!), values: Float64Array.from(idx, (i) => s.values[i]!) });
    }
  }
  return out;
}

/** Every LevelDB `LOG` under `dir`: compactions and level-0 tables written. */
function leveldbLogStats(dir: string): { compactions: number; tables: number; segments: number } {
  let compactions = 0;
  let tables = 0;
  let segments = 0;
  for (const name of readdirSync(dir, { recursive: true }) as string[]) {
    if (!/(^|\/)LOG(\.old)?$/.test(name)) continue;
    if (name.endsWith('/LOG')) segments++;
    const text = readFileSync(join(dir, name), 'utf8');
    compactions += (text.match(/Compacting |Moved #/g) ?? []).length;
    tables += (text.match(/Level-0 table #\d+: \d+ bytes OK/g) ?? []).length;
  }
  return { compactions, tables, segments };
}

/** Bytes of the files under `dir` (their logical sizes). */
function bytesUnder(dir: string): number {
  let n = 0;
  for (const name of readdirSync(dir, { recursive: true }) as string[]) {
    const st = statSync(join(dir, name));
    if (st.isFile()) n += st.size;
  }
  return n;
}

interface RunResult {
  readonly name: string;
  readonly shards: number;
  readonly cores: number;
  readonly samples: number;
  readonly wal_bytes: number;
  readonly wal_run_bytes: number;
  readonly write_amplification: number;
  readonly leveldb_compactions: number;
  readonly leveldb_level0_tables: number;
  readonly wal_segments: number;
  readonly samples_per_cpu_s: number;
  readonly samples_per_s: number;
  readonly flush_samples_per_s: number;
  readonly flush_samples_per_cpu_s: number;
  readonly block_bytes_per_sample: number;
  readonly max_rss_mb: number;
  readonly max_rss_anon_mb: number;
  readonly ingest_s: number;
  readonly flush_s: number;
  /** CPU seconds of the load generator (this process) during ingest, and the cores it ran on. */
  readonly loadgen_cpu_s: number;
  readonly loadgen_cores: string;
}

/** This process's CPU affinity (`taskset -p`), as a core list. */
function ownAffinity(): string {
  return execFileSync('taskset', ['-cp', String(process.pid)], { encoding: 'utf8' }).split(':').pop()!.trim();
}

/** Pins this process (all its threads) to `cores` (a taskset core list). */
function pinSelf(cores: string): void {
  execFileSync('taskset', ['-acp', cores, String(process.pid)], { stdio: 'ignore' });
}

async function run(
  name: string,
  opts: { shards: number; walBytes: number; cores: number; concurrency: number; batchSamples: number; sliceS: number; templates: Series[][]; windowStart: number; pinLoadgen: boolean },
): Promise<RunResult> {
  const dir = mkdtempSync(join(tmpdir(), `strata-bench-scale-${name}-`));
  const walDir = join(dir, 'wal');
  const coreList = Array.from({ length: opts.cores }, (_, i) => i).join(',');
  const prefix = opts.cores < availableParallelism() ? ['taskset', '-c', coreList] : [];
  const affinity = ownAffinity();
  if (opts.pinLoadgen && prefix.length > 0) pinSelf(coreList);
  const loadgenCores = ownAffinity();
  const agg = await startAggregator(
    {
      grpcListen: '127.0.0.1:0',
      metricsListen: '127.0.0.1:0',
      walDir,
      bucket: { type: 'filesystem', path: join(dir, 'bucket') },
      numShards: opts.shards,
      flushIdleMs: 24 * 3600 * 1000, // flush on seal only
      walQuotaBytes: 64 * GiB,
      logLevel: 'info', // the bench waits for 'aggregator serving'
    },
    dir,
    prefix,
  );
  const pid = agg.proc.pid!;
  try {
    await agg.serving;
    const client = new WriterClient({ tenant: 'bench', numShards: opts.shards, target: `127.0.0.1:${agg.port}`, concurrency: opts.concurrency, writeDeadlineMs: 600_000 });
    const seriesPerBatch = Math.max(1, Math.floor(opts.batchSamples / 960));
    let peakRss = 0;
    let peakAnon = 0;
    const rssTimer = setInterval(() => {
      const m = rssMiB(pid);
      peakRss = Math.max(peakRss, m.now);
      peakAnon = Math.max(peakAnon, m.anon);
    }, 100);
    // the stream of requests: replica r of template r % 2, every shard in turn
    let replica = 0;
    let offset = 0;
    let shard = 0;
    const nextBatch = (): { shard: number; series: SeriesData[] } => {
      const tpl = opts.templates[replica % opts.templates.length]!;
      const part = tpl.slice(offset, offset + seriesPerBatch);
      const base = BigInt(replica) * BigInt(TEMPLATE_SERIES);
      const s = shard;
      // ids of this shard: (base + template index) * shards + shard
      const series = part.map((x, i) => ({ id: (base + BigInt(offset + i)) * BigInt(opts.shards) + BigInt(s), timestamps: x.timestamps, values: x.values }));
      shard = (shard + 1) % opts.shards;
      if (shard === 0) {
        offset += seriesPerBatch;
        if (offset >= tpl.length) {
          offset = 0;
          replica++;
        }
      }
      return { shard: s, series };
    };
    let samples = 0;
    let walRunBytes = 0;
    let done = false;
    const io0 = writeBytes(pid);
    const cpu0 = cpuSeconds(pid);
    const gen0 = cpuSeconds(process.pid);
    const t0 = performance.now();
    let slice = { t: t0, samples: 0, cpu: cpu0 };
    const sliceTimer = setInterval(() => {
      const now = performance.now();
      const cpu = cpuSeconds(pid);
      const ds = samples - slice.samples;
      console.log(
        `  ${name} t=${((now - t0) / 1000).toFixed(0).padStart(4)} s: ${(ds / ((now - slice.t) / 1000) / 1e6).toFixed(2)} M samples/s, ` +
          `aggregator ${(((cpu - slice.cpu) / ((now - slice.t) / 1000)) * 100).toFixed(0)} % CPU, WAL ${(walRunBytes / 2 ** 20).toFixed(0)} MiB, RSS ${rssMiB(pid).now.toFixed(0)} MiB (${rssMiB(pid).anon.toFixed(0)} anonymous)`,
      );
      slice = { t: now, samples, cpu };
    }, opts.sliceS * 1000);
    const statusTimer = setInterval(() => {
      client
        .status()
        .then((st) => {
          walRunBytes = Number((st as { wal_bytes: string }).wal_bytes);
          if (walRunBytes >= opts.walBytes) done = true;
        })
        .catch((err: unknown) => console.error(`status: ${(err as Error).message}`));
    }, 500);
    await Promise.all(
      Array.from({ length: opts.concurrency }, async () => {
        while (!done) {
          const b = nextBatch();
          const r = await client.writeBatch(b.shard, b.series);
          samples += r.samples;
        }
      }),
    );
    const ingestS = (performance.now() - t0) / 1000;
    const ingestCpu = cpuSeconds(pid) - cpu0;
    const loadgenCpu = cpuSeconds(process.pid) - gen0;
    const ingestWritten = writeBytes(pid) - io0;
    clearInterval(sliceTimer);
    clearInterval(statusTimer);
    const st = (await client.status()) as { wal_bytes: string };
    walRunBytes = Number(st.wal_bytes);
    const walDisk = bytesUnder(walDir);
    const logs = leveldbLogStats(walDir);

    const cpu1 = cpuSeconds(pid);
    const t1 = performance.now();
    const blocks = await client.seal(BigInt(opts.windowStart));
    const flushS = (performance.now() - t1) / 1000;
    const flushCpu = cpuSeconds(pid) - cpu1;
    clearInterval(rssTimer);
    peakRss = Math.max(peakRss, rssMiB(pid).peak);
    client.close();
    const blockSamples = blocks.reduce((n, b) => n + b.samples, 0);
    const blockBytes = blocks.reduce((n, b) => n + b.bytes, 0);
    if (blockSamples !== samples) throw new Error(`${name}: blocks hold ${blockSamples} samples, ${samples} were written`);
    const r: RunResult = {
      name,
      shards: opts.shards,
      cores: opts.cores,
      samples,
      wal_bytes: walDisk,
      wal_run_bytes: walRunBytes,
      write_amplification: Number((ingestWritten / walRunBytes).toFixed(3)),
      leveldb_compactions: logs.compactions,
      leveldb_level0_tables: logs.tables,
      wal_segments: logs.segments,
      samples_per_cpu_s: Math.round(samples / ingestCpu),
      samples_per_s: Math.round(samples / ingestS),
      flush_samples_per_s: Math.round(blockSamples / flushS),
      flush_samples_per_cpu_s: Math.round(blockSamples / flushCpu),
      block_bytes_per_sample: Number((blockBytes / blockSamples).toFixed(4)),
      max_rss_mb: Math.round(peakRss),
      max_rss_anon_mb: Math.round(peakAnon),
      ingest_s: Number(ingestS.toFixed(2)),
      flush_s: Number(flushS.toFixed(2)),
      loadgen_cpu_s: Number(loadgenCpu.toFixed(2)),
      loadgen_cores: loadgenCores,
    };
    console.log(
      `${name}: ${opts.shards} shard(s), ${opts.cores} core(s): ${(samples / 1e6).toFixed(1)} M samples, WAL ${(walDisk / 2 ** 20).toFixed(0)} MiB on disk in ${logs.segments} segments ` +
        `(${(walRunBytes / samples).toFixed(2)} bytes/sample of runs); write amplification ${r.write_amplification}; ${logs.compactions} LevelDB compactions, ${logs.tables} level-0 tables\n` +
        `  ingest ${(r.samples_per_s / 1e6).toFixed(2)} M samples/s, ${(r.samples_per_cpu_s / 1e6).toFixed(2)} M samples per aggregator CPU-second; ` +
        `flush ${(r.flush_samples_per_s / 1e6).toFixed(2)} M samples/s (${(r.flush_samples_per_cpu_s / 1e6).toFixed(2)} M per CPU-second) into ${blocks.length} blocks of ${r.block_bytes_per_sample} bytes/sample; peak RSS ${r.max_rss_mb} MiB (anonymous ${r.max_rss_anon_mb} MiB)\n` +
        `  load generator: ${loadgenCpu.toFixed(1)} CPU-s during ingest (${((loadgenCpu / ingestS) * 100).toFixed(0)} % of a core, cores ${loadgenCores}), aggregator ${((ingestCpu / ingestS) * 100).toFixed(0)} % of a core`,
    );
    return r;
  } finally {
    await stop(agg.proc);
    rmSync(dir, { recursive: true, force: true });
    if (loadgenCores !== affinity) pinSelf(affinity);
  }
}

export async function main(argv: string[]): Promise<void> {
  const walGb = Number(flag(argv, 'wal-gb', '1'));
  const multiGb = Number(flag(argv, 'multi-gb', '1'));
  const shards = Number(flag(argv, 'shards', '4'));
  const concurrency = Number(flag(argv, 'concurrency', '8'));
  const batchSamples = Number(flag(argv, 'batch-samples', '250000'));
  const sliceS = Number(flag(argv, 'slice-s', '5'));
  const runs = flag(argv, 'runs', 'single,multi1,multi').split(',');
  const pinLoadgen = flag(argv, 'pin-loadgen', '1') !== '0';
  // a recent window, so that the aggregator's default accepted range (31 days) takes it
  const windowStart = Math.floor((Date.now() - 2 * 24 * 3600 * 1000) / H) * H;
  const start = new Date(windowStart).toISOString();
  const a = loadDataset(join('data', 'bench', `scale-a-${windowStart}`), ['--size=full', '--seed=42', '--jitter=0.1', `--start=${start}`]).series;
  const b = missScrapes(loadDataset(join('data', 'bench', `scale-b-${windowStart}`), ['--size=full', '--seed=7', '--jitter=0.5', `--start=${start}`]).series, 0.01, 7);
  const perReplica = [a, b].map((t) => t.reduce((n, s) => n + s.timestamps.length, 0));
  console.log(`templates: ${a.length} + ${b.length} series, ${perReplica.join(' + ')} samples; window ${start}; ${availableParallelism()} cores`);
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
  } catch {
    throw new Error('the scale bench pins the one-core run with taskset (util-linux)');
  }
  const results: RunResult[] = [];
  const common = { concurrency, batchSamples, sliceS, templates: [a, b], windowStart, pinLoadgen };
  if (runs.includes('single')) results.push(await run('single', { ...common, shards: 1, walBytes: walGb * GiB, cores: availableParallelism() }));
  if (runs.includes('multi1')) results.push(await run('multi1', { ...common, shards, walBytes: multiGb * GiB, cores: 1 }));
  if (runs.includes('multi')) results.push(await run('multi', { ...common, shards, walBytes: multiGb * GiB, cores: availableParallelism() }));
  const one = results.find((r) => r.name === 'multi1');
  const all = results.find((r) => r.name === 'multi');
  const scaling = one && all ? { ingest_scaling: Number((all.samples_per_s / one.samples_per_s).toFixed(3)), flush_scaling: Number((all.flush_samples_per_s / one.flush_samples_per_s).toFixed(3)) } : {};
  if (one && all) console.log(`scaling with ${all.cores} cores over 1: ingest ${scaling.ingest_scaling}x, flush ${scaling.flush_scaling}x`);
  if (results.length === 0) throw new Error(`--runs names no run (single, multi1, multi): ${runs.join(',')}`);
  const top = results.find((r) => r.name === 'single') ?? results[0]!;
  // the memory target holds for every run, not only the one whose figures are at the top
  const worst = results.reduce((w, r) => (r.max_rss_mb > w.max_rss_mb ? r : w));
  const peak = { max_rss_mb_any_run: worst.max_rss_mb, max_rss_run: worst.name };
  console.log(`peak RSS of all runs: ${worst.max_rss_mb} MiB (${worst.name})`);
  console.log(JSON.stringify({ ...top, cores: availableParallelism(), ...scaling, ...peak, runs: results }));
}
