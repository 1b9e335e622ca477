/**
 * `npm run bench -- read-scale [flags]`: a storage gateway over thousands of blocks, with a byte
 * cache smaller than the data and small in-memory budgets, to show that the budgets bound its
 * memory and that warm reads of closed windows cost no bucket request.
 *
 * Data: `--tenants` (6) tenants x `--days` (10) days x `--shards` (16) shards of 4-hour blocks
 * (5,760 blocks by default), each tenant with the generator's `--series` (200) series at 15 s
 * (bench/gen-samples.mjs, seed 42; the 4-hour dataset repeated in every window), uploaded to Ceph
 * RGW (scripts/rgw/rgw.mjs). The windows are in the past (closed), as a long-term tier holds them.
 *
 * The gateway (`strata gateway`, its own process) gets `cacheMaxBytes` = a third of the data and
 * the budgets below; RSS is read from /proc. Phases:
 * 1. cold: for every tenant, 1 series x all days, then 100 series x all days (every block opened):
 *    GETs per cold block, latencies, RSS after;
 * 2. warm: for `--warm-minutes` (10), the same queries of `--warm-tenants` (1) tenants (a working
 *    set that fits the cache) in a loop: bucket requests per warm query (0 expected: closed
 *    windows are not re-checked within closedStalenessMs), latencies, RSS.
 *
 * Flags: --tenants, --days, --shards, --series, --warm-minutes, --warm-tenants (above),
 * --budget-scale=N (the in-memory budgets below times N; the cache stays a third of the data),
 * --gateway-node-args=A,B (more node flags for the gateway process, e.g. --heapsnapshot-signal=SIGUSR2).
 *
 * Last line, JSON: `blocks`, `data_mib`, `cache_budget_mib`, `budgets_mib` (sum of the in-memory
 * budgets and the cache), `rss_baseline_mib` (gateway before any read), `rss_after_cold_mib`,
 * `rss_peak_mib`, `rss_over_budgets` (peak RSS minus baseline, divided by the budgets),
 * `gets_per_block_cold`, `bucket_requests_per_warm_query`, `warm_queries`, `warm_minutes`,
 * `cold_1xNd_p50_ms` ... `warm_100xNd_p99_ms`, `roundtrip_exact`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QueryClient } from '../src/client/query.js';
import { DEFAULT_BLOCK_DURATION_MS } from '../src/format/key.js';
import { openBucket } from '../src/objstore/index.js';
import { loadDataset, type Series } from './dataset.js';
import { flag, percentile, rssMiB } from './proc.js';
import { buildBlocks, inParallel, sameSeries, scrape, startBenchRgw, startGatewayProcess } from './read.js';

const D = BigInt(DEFAULT_BLOCK_DURATION_MS);
const MiB = 2 ** 20;
const round = (x: number): number => Number(x.toFixed(3));

export async function main(argv: string[]): Promise<void> {
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
  const tenants = Number(flag(argv, 'tenants', '6'));
  const days = Number(flag(argv, 'days', '10'));
  const shards = Number(flag(argv, 'shards', '16'));
  const seriesCount = Number(flag(argv, 'series', '200'));
  const warmMinutes = Number(flag(argv, 'warm-minutes', '10'));
  const warmTenants = Number(flag(argv, 'warm-tenants', '1'));
  const scale = Number(flag(argv, 'budget-scale', '1'));
  const budgets = {
    openBlocksMaxBytes: 16 * MiB * scale,
    pagesMaxBytes: 16 * MiB * scale,
    hotRangesMaxBytes: 16 * MiB * scale,
    maxBytesInFlight: 32 * MiB * scale,
    // cache writes waiting for their LMDB commit: memory too (it was left at its 64 MiB default, and not counted)
    cachePendingMaxBytes: 16 * MiB * scale,
  };

  const ds = loadDataset(flag(argv, 'data', join('data', 'bench', `scale-read-${seriesCount}`)), [`--series=${seriesCount}`, '--hours=4', '--seed=42', '--start=2026-01-01T00:00:00Z']);
  const windows = days * 6;
  // the 4-hour dataset, one copy per window: shifted timestamps, the same values
  const first = (BigInt(ds.startMs) / D) * D;
  const windowStart = (w: number): bigint => first + BigInt(w) * D;
  const shifted = (s: Series, w: number): Series => ({ ...s, timestamps: s.timestamps.map((t) => t + BigInt(w) * D) });

  const rgw = await startBenchRgw();
  const { bucketConfig } = rgw;
  const bucket = await openBucket(bucketConfig);
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-read-scale-'));
  try {
    // build and upload: one window's blocks at a time (bounded memory)
    const t0 = performance.now();
    let blocks = 0;
    let dataBytes = 0;
    for (let w = 0; w < windows; w++) {
      const windowDs = { ...ds, series: ds.series.map((s) => shifted(s, w)), startMs: Number(windowStart(w)), endMs: Number(windowStart(w) + D) };
      for (let t = 0; t < tenants; t++) {
        const built = await buildBlocks(windowDs, `tenant${t}`, shards);
        await inParallel([...built], 16, ([k, b]) => bucket.put(k, b));
        blocks += built.size;
        for (const b of built.values()) dataBytes += b.length;
      }
    }
    console.log(`uploaded ${blocks} blocks (${(dataBytes / MiB).toFixed(1)} MiB) in ${((performance.now() - t0) / 1000).toFixed(1)} s; ${tenants} tenants x ${days} days x ${shards} shards`);

    const cacheMaxBytes = Math.floor(dataBytes / 3);
    const gw = await startGatewayProcess(
      { bucket: bucketConfig, cacheDir: join(dir, 'cache'), cacheMaxBytes, grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', logLevel: 'info', ...budgets },
      dir,
      flag(argv, 'gateway-node-args', '').split(',').filter((a) => a !== ''),
    );
    const out: Record<string, number | boolean> = { blocks, data_mib: round(dataBytes / MiB), cache_budget_mib: round(cacheMaxBytes / MiB) };
    const budgetSum = cacheMaxBytes + Object.values(budgets).reduce((a, b) => a + b, 0);
    out['budgets_mib'] = round(budgetSum / MiB);
    const client = new QueryClient({ endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: shards, concurrency: 64 });
    let exact = true;
    const start = windowStart(0);
    const end = windowStart(windows);
    const one = (i: number): Series[] => [ds.series[(i * 37) % ds.series.length]!];
    const hundred = (i: number): Series[] => ds.series.slice((i * 100) % Math.max(1, ds.series.length - 99), ((i * 100) % Math.max(1, ds.series.length - 99)) + 100);
    const run = async (tenant: string, want: Series[]): Promise<number> => {
      const s = performance.now();
      const r = await client.query(tenant, want.map((x) => x.id), { start, end });
      const ms = performance.now() - s;
      // the expected samples: the 4-hour series in every window
      r.series.forEach((got, k) => {
        const base = want[k]!;
        const n = base.timestamps.length;
        if (got.timestamps.length !== n * windows) {
          exact = false;
          return;
        }
        for (let w = 0; w < windows && exact; w++) {
          const part = { timestamps: got.timestamps.subarray(w * n, (w + 1) * n), values: got.values.subarray(w * n, (w + 1) * n), id: got.id };
          if (!sameSeries(part, shifted(base, w), windowStart(w), windowStart(w) + D)) exact = false;
        }
      });
      return ms;
    };
    const gets = async (): Promise<number> => (await scrape(gw.metricsPort)).get('strata_gateway_s3_gets_total') ?? 0;
    try {
      out['rss_baseline_mib'] = round(rssMiB(gw.pid).now);
      const d = `${days}d`;
      // cold
      const cold1: number[] = [];
      const cold100: number[] = [];
      const g0 = await gets();
      for (let t = 0; t < tenants; t++) {
        cold1.push(await run(`tenant${t}`, one(t)));
        cold100.push(await run(`tenant${t}`, hundred(t)));
      }
      const coldGets = (await gets()) - g0;
      out['gets_per_block_cold'] = round(coldGets / blocks);
      out[`cold_1x${d}_p50_ms`] = round(percentile(cold1, 50));
      out[`cold_1x${d}_p99_ms`] = round(percentile(cold1, 99));
      out[`cold_100x${d}_p50_ms`] = round(percentile(cold100, 50));
      out[`cold_100x${d}_p99_ms`] = round(percentile(cold100, 99));
      const afterCold = rssMiB(gw.pid);
      out['rss_after_cold_mib'] = round(afterCold.now);
      const m = await scrape(gw.metricsPort);
      const heap = (k: string): string => ((m.get(k) ?? 0) / MiB).toFixed(0);
      console.log(
        `gateway memory after cold: V8 heap used ${heap('nodejs_heap_size_used_bytes')} of ${heap('nodejs_heap_size_total_bytes')} MiB, external ${heap('nodejs_external_memory_bytes')} MiB; ` +
          `budgets in use (strata_gateway_memory_bytes, all pools) ${heap('strata_gateway_memory_bytes')} MiB, in flight ${heap('strata_gateway_bytes_in_flight')} MiB`,
      );
      console.log(
        `cold: ${coldGets} GETs for ${blocks} blocks (${(coldGets / blocks).toFixed(2)} per block); 1x${d} p50 ${percentile(cold1, 50).toFixed(1)} ms, 100x${d} p50 ${percentile(cold100, 50).toFixed(1)} ms; ` +
          `RSS ${afterCold.now.toFixed(0)} MiB (anon ${afterCold.anon.toFixed(0)}, file ${afterCold.file.toFixed(0)}), cache ${((m.get('strata_gateway_cache_bytes') ?? 0) / MiB).toFixed(1)} MiB`,
      );

      // warm: a working set that fits the cache, for warmMinutes
      const warm1: number[] = [];
      const warm100: number[] = [];
      for (let t = 0; t < warmTenants; t++) {
        await run(`tenant${t}`, one(t));
        await run(`tenant${t}`, hundred(t));
      }
      const w0 = await gets();
      const until = performance.now() + warmMinutes * 60_000;
      let queries = 0;
      let lastReport = performance.now();
      while (performance.now() < until) {
        for (let t = 0; t < warmTenants; t++) {
          warm1.push(await run(`tenant${t}`, one(t)));
          warm100.push(await run(`tenant${t}`, hundred(t)));
          queries += 2;
        }
        if (performance.now() - lastReport > 60_000) {
          lastReport = performance.now();
          console.log(`warm: ${queries} queries, ${(await gets()) - w0} bucket requests, RSS ${rssMiB(gw.pid).now.toFixed(0)} MiB`);
        }
      }
      const warmGets = (await gets()) - w0;
      out['warm_queries'] = queries;
      out['warm_minutes'] = warmMinutes;
      out['bucket_requests_per_warm_query'] = round(warmGets / queries);
      out[`warm_1x${d}_p50_ms`] = round(percentile(warm1, 50));
      out[`warm_1x${d}_p99_ms`] = round(percentile(warm1, 99));
      out[`warm_100x${d}_p50_ms`] = round(percentile(warm100, 50));
      out[`warm_100x${d}_p99_ms`] = round(percentile(warm100, 99));
      const r = rssMiB(gw.pid);
      out['rss_peak_mib'] = round(r.peak);
      out['rss_over_budgets'] = round((r.peak - (out['rss_baseline_mib'] as number)) / (budgetSum / MiB));
      console.log(
        `warm: ${queries} queries in ${warmMinutes} min, ${warmGets} bucket requests; 1x${d} p50 ${percentile(warm1, 50).toFixed(1)} / p99 ${percentile(warm1, 99).toFixed(1)} ms, ` +
          `100x${d} p50 ${percentile(warm100, 50).toFixed(1)} / p99 ${percentile(warm100, 99).toFixed(1)} ms; RSS peak ${r.peak.toFixed(0)} MiB (budgets ${(budgetSum / MiB).toFixed(0)} MiB + baseline ${out['rss_baseline_mib']})`,
      );
    } finally {
      client.close();
      await gw.stop();
    }
    out['roundtrip_exact'] = exact;
    console.log(JSON.stringify(out));
  } finally {
    await bucket.close();
    await rgw.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
