/**
 * `npm run bench -- write [--data=DIR] [--shards=4] [--concurrency=8] [--batch-samples=250000]
 * [--s3] [--no-sync]`: the write path end to end. The aggregator runs as a separate process
 * (`strata aggregator`, compiled JS) on loopback; this process loads the generator's full dataset
 * (10,000 series x 4 h x 15 s, seed 42) and pushes it with the writer client, each series' whole
 * window at once like a batch node, then seals the window on every shard.
 *
 * Reported: ingest samples/s (first request to last acknowledgement, every write fsynced), samples
 * per aggregator CPU-second (utime + stime from /proc), p99 write latency, flush samples/s (seal
 * to verified blocks, WAL → uploaded block), block bytes per sample, the aggregator's peak RSS
 * (VmHWM), and a decode comparison of the columnar request layout with `repeated` fields.
 *
 * Blocks go to a filesystem bucket in a temp directory, or with `--s3` to the S3 server named by
 * the STRATA_TEST_S3_* variables (`node scripts/with-rgw.mjs -- npm run bench -- write --s3`).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadSync } from '@grpc/proto-loader';
import { WriterClient } from '../src/client/writer.js';
import { windowStartOf } from '../src/format/key.js';
import { loadDataset } from './dataset.js';
import { cpuSeconds, flag, percentile, rssMiB, startAggregator } from './proc.js';

/** Decode time of one request in the columnar layout vs `repeated int64/double` fields. */
function compareLayouts(series: { id: bigint; timestamps: BigInt64Array; values: Float64Array }[], dir: string): { columnarMs: number; repeatedMs: number; samples: number } {
  const file = join(dir, 'layouts.proto');
  writeFileSync(
    file,
    `syntax = "proto3"; package cmp;
     message Col { fixed64 id = 1; bytes timestamps = 2; bytes values = 3; }
     message ColReq { repeated Col series = 1; }
     message Rep { fixed64 id = 1; repeated int64 timestamps = 2; repeated double values = 3; }
     message RepReq { repeated Rep series = 1; }
     message Empty {}
     service S { rpc C(ColReq) returns (Empty); rpc R(RepReq) returns (Empty); }`,
  );
  const def = loadSync(file, { keepCase: true, longs: String, defaults: true }) as unknown as Record<
    string,
    Record<string, { requestSerialize(v: unknown): Buffer; requestDeserialize(b: Buffer): unknown }>
  >;
  const svc = def['cmp.S']!;
  const col = svc.C!;
  const rep = svc.R!;
  const samples = series.reduce((n, s) => n + s.timestamps.length, 0);
  const colBytes = col.requestSerialize({
    series: series.map((s) => ({ id: s.id.toString(), timestamps: Buffer.from(s.timestamps.buffer, s.timestamps.byteOffset, s.timestamps.byteLength), values: Buffer.from(s.values.buffer, s.values.byteOffset, s.values.byteLength) })),
  });
  const repBytes = rep.requestSerialize({ series: series.map((s) => ({ id: s.id.toString(), timestamps: [...s.timestamps].map(String), values: [...s.values] })) });
  const time = (fn: () => void, reps: number): number => {
    fn();
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    return (performance.now() - t0) / reps;
  };
  return { columnarMs: time(() => col.requestDeserialize(colBytes), 20), repeatedMs: time(() => rep.requestDeserialize(repBytes), 3), samples };
}

export async function main(argv: string[]): Promise<void> {
  const dataDir = flag(argv, 'data', join('data', 'bench', 'full'));
  const shards = Number(flag(argv, 'shards', '4'));
  const concurrency = Number(flag(argv, 'concurrency', '8'));
  const batchSamples = Number(flag(argv, 'batch-samples', '250000'));
  const useS3 = argv.includes('--s3');
  const sync = !argv.includes('--no-sync');
  const ds = loadDataset(dataDir, ['--size=full', '--seed=42', '--start=2026-11-01T00:00:00Z']);
  console.log(`dataset ${dataDir}: ${ds.series.length} series, ${ds.sampleCount} samples`);

  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-write-'));
  let bucket: Record<string, unknown> = { type: 'filesystem', path: join(dir, 'bucket') };
  if (useS3) {
    const env = process.env;
    const need = ['STRATA_TEST_S3_ENDPOINT', 'STRATA_TEST_S3_REGION', 'STRATA_TEST_S3_ACCESS_KEY', 'STRATA_TEST_S3_SECRET_KEY', 'STRATA_TEST_S3_BUCKET'];
    const missing = need.filter((k) => !env[k]);
    if (missing.length > 0) throw new Error(`--s3 needs ${missing.join(', ')} (run through node scripts/with-rgw.mjs)`);
    bucket = {
      type: 's3',
      endpoint: env.STRATA_TEST_S3_ENDPOINT,
      region: env.STRATA_TEST_S3_REGION,
      bucket: env.STRATA_TEST_S3_BUCKET,
      prefix: `bench-write-${process.pid}`,
      forcePathStyle: true,
      credentials: { accessKeyId: env.STRATA_TEST_S3_ACCESS_KEY, secretAccessKey: env.STRATA_TEST_S3_SECRET_KEY },
    };
  }
  const agg = await startAggregator(
    {
      grpcListen: '127.0.0.1:0',
      metricsListen: '127.0.0.1:0',
      walDir: join(dir, 'wal'),
      bucket,
      numShards: shards,
      maxSampleAgeMs: 10 * 365 * 24 * 3600 * 1000, // the dataset is fixed in time
      maxSampleFutureMs: 10 * 365 * 24 * 3600 * 1000,
      flushIdleMs: 24 * 3600 * 1000, // flush on seal only
      walSync: sync,
      logLevel: 'info',
    },
    dir,
  );
  const pid = agg.proc.pid!;
  try {
    await agg.serving;
    const startRss = rssMiB(pid).now;
    const latencies: number[] = [];
    const client = new WriterClient({
      tenant: 'bench',
      numShards: shards,
      target: `127.0.0.1:${agg.port}`,
      concurrency,
      maxBatchSamples: batchSamples,
      onRequest: (e) => {
        if (e.method === 'Write') latencies.push(e.durationMs);
      },
    });
    let peakRss = 0;
    const rssTimer = setInterval(() => (peakRss = Math.max(peakRss, rssMiB(pid).now)), 100);

    // ingest
    const cpu0 = cpuSeconds(pid);
    const t0 = performance.now();
    const w = await client.write(ds.series);
    const ingestS = (performance.now() - t0) / 1000;
    const ingestCpu = cpuSeconds(pid) - cpu0;
    const ingestPeak = Math.max(peakRss, rssMiB(pid).peak);
    const status = (await client.status()) as { wal_bytes: string; wal_syncs: string; wal_requests: string };

    // flush: seal the window on every shard
    const window = windowStartOf(BigInt(ds.startMs), 4 * 3600 * 1000);
    const cpu1 = cpuSeconds(pid);
    const t1 = performance.now();
    const blocks = await client.seal(window);
    const flushS = (performance.now() - t1) / 1000;
    const flushCpu = cpuSeconds(pid) - cpu1;
    clearInterval(rssTimer);
    const rss = rssMiB(pid);
    peakRss = Math.max(peakRss, rss.peak);
    client.close();

    const blockSamples = blocks.reduce((n, b) => n + b.samples, 0);
    const blockBytes = blocks.reduce((n, b) => n + b.bytes, 0);
    if (blockSamples !== ds.sampleCount) throw new Error(`blocks hold ${blockSamples} samples, the dataset ${ds.sampleCount}`);
    const layouts = compareLayouts(ds.series.slice(0, 260), dir);

    const p99 = percentile(latencies, 99);
    console.log(`aggregator: separate process, ${shards} shards, WAL fsync ${sync ? 'on' : 'off'}, ${useS3 ? 'S3 bucket' : 'filesystem bucket'}`);
    console.log(
      `ingest: ${w.samples} samples in ${w.requests} requests (${concurrency} in flight, ≤ ${batchSamples} samples each) in ${ingestS.toFixed(2)} s = ${(w.samples / ingestS / 1e6).toFixed(2)} M samples/s; ` +
        `aggregator CPU ${ingestCpu.toFixed(2)} s = ${(w.samples / ingestCpu / 1e6).toFixed(2)} M samples per CPU-second; p50/p99 write ${percentile(latencies, 50).toFixed(0)}/${p99.toFixed(0)} ms`,
    );
    console.log(`WAL: ${(Number(status.wal_bytes) / 2 ** 20).toFixed(1)} MiB (${((Number(status.wal_bytes) / w.samples)).toFixed(2)} bytes/sample), ${status.wal_syncs} synced writes for ${status.wal_requests} requests`);
    console.log(
      `flush: ${blocks.length} blocks, ${blockSamples} samples, ${(blockBytes / 2 ** 20).toFixed(1)} MiB in ${flushS.toFixed(2)} s = ${(blockSamples / flushS / 1e6).toFixed(2)} M samples/s (aggregator CPU ${flushCpu.toFixed(2)} s); ${(blockBytes / blockSamples).toFixed(3)} bytes/sample`,
    );
    console.log(`aggregator RSS: ${startRss.toFixed(0)} MiB when serving, peak ${ingestPeak.toFixed(0)} MiB during ingest, peak ${peakRss.toFixed(0)} MiB overall`);
    console.log(
      `request layout, decode of ${layouts.samples} samples: columnar ${layouts.columnarMs.toFixed(2)} ms (${(layouts.samples / layouts.columnarMs / 1e3).toFixed(0)} M samples/s), ` +
        `repeated fields ${layouts.repeatedMs.toFixed(1)} ms (${(layouts.samples / layouts.repeatedMs / 1e3).toFixed(2)} M samples/s): ${(layouts.repeatedMs / layouts.columnarMs).toFixed(0)}x`,
    );
    console.log(
      JSON.stringify({
        samples: w.samples,
        shards,
        samples_per_s: Math.round(w.samples / ingestS),
        samples_per_cpu_s: Math.round(w.samples / ingestCpu),
        p99_write_ms: Number(p99.toFixed(1)),
        ingest_s: Number(ingestS.toFixed(3)),
        flush_s: Number(flushS.toFixed(3)),
        flush_samples_per_s: Math.round(blockSamples / flushS),
        flush_samples_per_cpu_s: Math.round(blockSamples / flushCpu),
        block_bytes_per_sample: Number((blockBytes / blockSamples).toFixed(4)),
        wal_bytes_per_sample: Number((Number(status.wal_bytes) / w.samples).toFixed(3)),
        wal_syncs: Number(status.wal_syncs),
        requests: Number(status.wal_requests),
        max_rss_mb: Math.round(peakRss),
        decode_columnar_ms: Number(layouts.columnarMs.toFixed(2)),
        decode_repeated_ms: Number(layouts.repeatedMs.toFixed(1)),
      }),
    );
  } finally {
    agg.proc.kill('SIGTERM');
    await new Promise((r) => agg.proc.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}
