/**
 * Shared set-up of the gateway and query client tests: a seeded multi-window, multi-shard data set
 * written as real blocks (BlockWriter) into a bucket, the expected answer of any query over it,
 * and in-process gateways on loopback.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { BlockWriter, type WrittenBlock } from '../../src/block/writer.js';
import type { Samples } from '../../src/format/run.js';
import { blockKey, DEFAULT_BLOCK_DURATION_MS } from '../../src/format/key.js';
import { openBucket, type Bucket, type BucketConfig } from '../../src/objstore/index.js';
import { parseGatewayConfig, type GatewayConfig } from '../../src/storage-gateway/config.js';
import { startGateway, type GatewayOptions, type RunningGateway } from '../../src/storage-gateway/gateway.js';
import { createTestBucket, s3BucketConfig, s3TestEnv } from './s3env.js';
import { bytesOf, KINDS, makeSeries, prng, scrapeTarget } from './series.js';
import { concatSamples } from '../../src/format/slice.js';

export const D = BigInt(DEFAULT_BLOCK_DURATION_MS);
/** First window of the data set (2026-11-21T00:00:00Z, aligned to 4 h). */
export const W0 = 1_795_219_200_000n;
/** Prometheus' stale marker. */
export const STALE_NAN_BITS = 0x7ff0000000000002n;

/** All samples of one series over the data set's windows. */
export interface SeriesData {
  readonly id: bigint;
  readonly samples: Samples;
}

/** A data set: series (ascending ids) over `windows` consecutive windows from W0. */
export interface DataSet {
  readonly tenant: string;
  readonly numShards: number;
  readonly windows: number;
  readonly series: SeriesData[];
}

function setBits(values: Float64Array, i: number, bits: bigint): void {
  new BigUint64Array(values.buffer, values.byteOffset, values.length)[i] = bits;
}

/**
 * `n` series with random 64-bit ids (a few near 2^64), each present in a random subset of the
 * windows with a random number of samples, stale-marker NaNs, -0 and infinities sprinkled in.
 */
export function makeDataSet(opts: { seed: number; n: number; numShards: number; windows: number; tenant?: string; maxSamples?: number; targets?: number }): DataSet {
  const r = prng(opts.seed);
  const ids = new Set<bigint>();
  const u64 = (): bigint => (BigInt(Math.floor(r() * 2 ** 32)) << 32n) | BigInt(Math.floor(r() * 2 ** 32));
  ids.add((1n << 64n) - 1n);
  ids.add(0n);
  while (ids.size < opts.n) ids.add(r() < 0.3 ? BigInt(Math.floor(r() * 1000)) : u64());
  const sorted = [...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const series = sorted.map((id, k) => {
    const parts: Samples[] = [];
    for (let w = 0; w < opts.windows; w++) {
      if (r() < 0.15) continue; // absent from this window
      let n = 1 + Math.floor(r() * (opts.maxSamples ?? 960));
      let s = makeSeries(KINDS[k % KINDS.length]!, n, W0 + BigInt(w) * D, opts.seed * 1000 + k * 10 + w);
      if (opts.targets) {
        // series of one scrape target share their timestamps in each window (format version 2
        // keeps them once per index page)
        const g = k % opts.targets;
        n = 200 + 37 * g;
        s = { timestamps: scrapeTarget(1, n, W0 + BigInt(w) * D, opts.seed * 100 + g * 10 + w)[0]!.timestamps, values: makeSeries(KINDS[k % KINDS.length]!, n, W0, k).values };
      }
      if (r() < 0.3) setBits(s.values, Math.floor(r() * n), STALE_NAN_BITS);
      if (r() < 0.2) s.values[Math.floor(r() * n)] = -0;
      if (r() < 0.1) s.values[Math.floor(r() * n)] = -Infinity;
      parts.push(s);
    }
    return { id, samples: concat(parts) };
  });
  return { tenant: opts.tenant ?? 'acme', numShards: opts.numShards, windows: opts.windows, series };
}

/** Concatenation of sample sets. */
export const concat = concatSamples;

/** The samples of `s` in `[start, end)`. */
export function slice(s: Samples, start: bigint, end: bigint): Samples {
  const keep: number[] = [];
  for (let i = 0; i < s.timestamps.length; i++) if (s.timestamps[i]! >= start && s.timestamps[i]! < end) keep.push(i);
  const timestamps = new BigInt64Array(keep.length);
  const values = new Float64Array(keep.length);
  keep.forEach((j, i) => {
    timestamps[i] = s.timestamps[j]!;
    setBits(values, i, new BigUint64Array(s.values.buffer, s.values.byteOffset, s.values.length)[j]!);
  });
  return { timestamps, values };
}

/** Written blocks by key. */
export type Written = Map<string, WrittenBlock>;

/** Writes the data set's blocks (one per window and shard that has series) into `bucket`. */
export async function writeDataSet(bucket: Bucket, ds: DataSet, opts: { seriesPerPage?: number } = {}): Promise<Written> {
  const out: Written = new Map();
  for (let w = 0; w < ds.windows; w++) {
    const ws = W0 + BigInt(w) * D;
    for (let shard = 0; shard < ds.numShards; shard++) {
      const members = ds.series
        .filter((s) => s.id % BigInt(ds.numShards) === BigInt(shard))
        .map((s) => ({ id: s.id, samples: slice(s.samples, ws, ws + D) }))
        .filter((s) => s.samples.timestamps.length > 0);
      if (members.length === 0) continue;
      out.set(...(await writeBlock(bucket, ds.tenant, shard, ds.numShards, ws, members, opts)));
    }
  }
  return out;
}

/** Writes one block of `members` (ascending ids). */
export async function writeBlock(
  bucket: Bucket,
  tenant: string,
  shard: number,
  numShards: number,
  windowStart: bigint,
  members: readonly SeriesData[],
  opts: { seriesPerPage?: number; blockId?: string } = {},
): Promise<[string, WrittenBlock]> {
  const key = blockKey(tenant, shard, windowStart);
  const w = new BlockWriter(bucket.upload(key), { tenant, shard, numShards, windowStart, windowEnd: windowStart + D }, {
    ...(opts.seriesPerPage !== undefined ? { seriesPerPage: opts.seriesPerPage } : {}),
    ...(opts.blockId !== undefined ? { blockId: opts.blockId } : {}),
  });
  for (const m of members) await w.add(m.id, m.samples);
  return [key, await w.finish()];
}

/** What a query over the data set must return: every distinct id, ascending, with its samples. */
export function expected(ds: DataSet, ids: readonly bigint[], start: bigint, end: bigint): SeriesData[] {
  const by = new Map(ds.series.map((s) => [s.id, s.samples]));
  return [...new Set(ids)]
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map((id) => {
      const s = by.get(id);
      return { id, samples: s ? slice(s, start, end) : { timestamps: new BigInt64Array(0), values: new Float64Array(0) } };
    });
}

/** Compares query results with the expected ones, bit for bit; returns the number of mismatches. */
export function mismatches(got: readonly { id: bigint; timestamps: BigInt64Array; values: Float64Array }[], want: readonly SeriesData[]): string[] {
  const bad: string[] = [];
  if (got.length !== want.length) bad.push(`${got.length} series, expected ${want.length}`);
  for (let i = 0; i < Math.min(got.length, want.length); i++) {
    const g = got[i]!;
    const w = want[i]!;
    if (g.id !== w.id) bad.push(`series ${i}: id ${g.id}, expected ${w.id}`);
    else if (Buffer.compare(Buffer.from(g.timestamps.buffer, g.timestamps.byteOffset, g.timestamps.byteLength), Buffer.from(w.samples.timestamps.buffer, w.samples.timestamps.byteOffset, w.samples.timestamps.byteLength)) !== 0) {
      bad.push(`series ${g.id}: timestamps differ (${g.timestamps.length} vs ${w.samples.timestamps.length})`);
    } else if (Buffer.compare(bytesOf(g.values), bytesOf(w.samples.values)) !== 0) bad.push(`series ${g.id}: value bits differ`);
  }
  return bad;
}

/** A fresh RGW bucket for `t` and its bucket config. */
export async function rgwBucket(t: Test): Promise<BucketConfig> {
  const env = s3TestEnv();
  const name = await createTestBucket(t, { tag: 'gw' });
  return { type: 's3', ...s3BucketConfig(env, name) };
}

/** A fresh RGW bucket for `t` holding `ds` (written as {@link writeDataSet} does), and its config. */
export async function rgwBucketWith(t: Test, ds: DataSet): Promise<BucketConfig> {
  const bucketConfig = await rgwBucket(t);
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  await writeDataSet(bucket, ds);
  return bucketConfig;
}

/** A temporary directory removed at the end of `t`. */
export function tempDir(t: Test, tag = 'gw'): string {
  const dir = mkdtempSync(join(tmpdir(), `strata-${tag}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Gateway config for tests: loopback, free ports, silent, LMDB in `cacheDir`. Days count as closed
 * for day blocks only when a test says so (`dayBlocksAfterMs`): the tests of one block's reads
 * count their GETs, and a look-up of a day block is one more.
 */
export function testConfig(bucket: BucketConfig, cacheDir: string, overrides: Record<string, unknown> = {}): GatewayConfig {
  return parseGatewayConfig({
    bucket,
    cacheDir,
    grpcListen: '127.0.0.1:0',
    metricsListen: '127.0.0.1:0',
    logLevel: process.env['STRATA_TEST_GATEWAY_LOG'] ?? 'silent',
    dayBlocksAfterMs: 1000 * 24 * 3600 * 1000,
    ...overrides,
  });
}

/**
 * The clock of a test gateway unless the test gives its own: 30 days after W0, ticking with real
 * time, so that the fixed data set is equally old whatever the date the test runs on.
 */
export function dataSetClock(): () => number {
  const origin = performance.now();
  const at = Number(W0) + 30 * 24 * 3600 * 1000;
  return () => at + Math.floor(performance.now() - origin);
}

/** Starts an in-process gateway that is shut down at the end of `t`. */
export async function startTestGateway(t: Test, config: GatewayConfig, opts: Omit<GatewayOptions, 'config'> = {}): Promise<RunningGateway> {
  const gw = await startGateway({ config, defaultMetrics: false, now: dataSetClock(), ...opts });
  t.teardown(() => gw.shutdown());
  return gw;
}

/** A clock the test moves by hand. */
export function manualClock(startMs = Date.now()): { now: () => number; advance(ms: number): void } {
  let t = startMs;
  return {
    now: () => t,
    advance(ms: number) {
      t += ms;
    },
  };
}

/** S3 GETs the gateway counted (all kinds). */
export async function gets(gw: RunningGateway, kind?: string): Promise<number> {
  return gw.metrics.total('strata_gateway_s3_gets_total', kind ? { kind } : {});
}

/** ReadRequest fields as the wire takes them. */
export interface RawReadRequest {
  tenant: string;
  shard: number;
  num_shards: number;
  window_start_ms: string;
  series_ids: Buffer;
  start_ms: string;
  end_ms: string;
  encoding: 'RAW' | 'RUNS';
  runs_version?: number;
}

/** Little-endian uint64 bytes of `ids`. */
export function idBytes(ids: readonly bigint[]): Buffer {
  const b = Buffer.alloc(ids.length * 8);
  ids.forEach((id, i) => b.writeBigUInt64LE(id, i * 8));
  return b;
}

/**
 * One Read call made by hand (no query client), with the given headers. Resolves with the
 * messages or rejects with the grpc ServiceError.
 */
export async function rawRead(port: number, req: RawReadRequest, headers: Record<string, string> = {}): Promise<Record<string, unknown>[]> {
  const { credentials, Metadata } = await import('@grpc/grpc-js');
  const { loadProto } = await import('../../src/api/proto.js');
  type Ctor = new (addr: string, creds: unknown) => {
    Read(r: RawReadRequest, md: InstanceType<typeof Metadata>): AsyncIterable<Record<string, unknown>>;
    close(): void;
  };
  const Read = (loadProto('read.proto') as unknown as { strata: { read: { v1: { Read: Ctor } } } }).strata.read.v1.Read;
  const client = new Read(`127.0.0.1:${port}`, credentials.createInsecure());
  const md = new Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  try {
    const out: Record<string, unknown>[] = [];
    for await (const m of client.Read(req, md)) out.push(m);
    return out;
  } finally {
    client.close();
  }
}
