/**
 * `npm run bench -- read [flags]`: the read path end to end. The gateway runs as its own process
 * (`strata gateway`, compiled), the query client in this one, over gRPC on loopback; a latency
 * is measured until the client holds the decoded samples of every series.
 *
 * Data (bench/gen-samples.mjs, seed 42): the full dataset (10,000 series x 4 h x 15 s) and 30
 * consecutive days of 4-hour blocks for 200 series, written as blocks of `--shards` shards into
 * a filesystem bucket and into Ceph RGW (started here with scripts/rgw/rgw.mjs).
 *
 * Cases: `1x4h` (1 series x 4 h), `100x4h` (the 100 series of one scrape target x 4 h), `1x30d`
 * (1 series x 30 days after compaction to day blocks by the lifecycle's day merge: 30 requests,
 * one day block each), `1x30d_4h` (the same read of the 180 4-hour blocks, one request each, as
 * before compaction). `cold_<case>_gets`: bucket GETs per cold query. Warm: every block already read once (caches filled),
 * `--warm-reps` queries per case. Cold: each query reads blocks the gateway never saw (copies of
 * the blocks under other tenants, with their own block ids), `--cold-reps` per case.
 *
 * Figures (last line, JSON): `warm_<case>_p50_ms`, `warm_<case>_p99_ms`, `cold_<case>_p50_ms`,
 * `cold_<case>_p99_ms` for RGW (the `fs_` prefixed keys for the filesystem bucket),
 * `gets_per_block_cold` (GETs per block of a cold one-series read), `gets_per_block_warm`
 * (GETs per block touched by warm queries), `gets_per_block_index_cached` (another series of a
 * block whose index is cached), `gateway_cpu_ms_per_query` (gateway process CPU per warm 1x4h
 * query; per case in `gateway_cpu_ms_per_query_<case>`), `roundtrip_exact` (every answer equal,
 * bit for bit, to the generated samples), for the encoding decision the warm figures of
 * both encodings (`<encoding>_warm_<case>_p50_ms` ...), and the machine's floor
 * (`loopback_h2_p50_ms` ... `loopback_h2_x8_p99_ms`: an empty HTTP/2 exchange between two
 * processes, one and 8 at a time).
 *
 * Against the floor and a peer, in the same run: every warm query is preceded by a floor
 * exchange as wide as the requests the query has in flight (1 for 1x4h, 8 for 100x4h, 30 for
 * 1x30d, 64 for 1x30d_4h: see floorWidth), the warm queries
 * run in 5 rounds, and `warm_<case>_p99_over_floor` is the median over the rounds of the
 * query p99 divided by the floor p99. `event_loop_p99_ms` is the gateway's event-loop delay p99
 * (`nodejs_eventloop_lag_p99_seconds`) during the warm queries, the worst case; that figure is the
 * interval between the ticks of a 10 ms timer, so `event_loop_delay_p99_ms` is it less 10 ms, and
 * `event_loop_idle_p99_ms` is the same gateway's figure over 2 s without queries. The peer is
 * VictoriaMetrics (bench/vm-peer.ts), loaded with the full dataset and queried for the same
 * 1x4h and 100x4h cases: `vm_native_<case>_p50_ms` / `_p99_ms` (`/api/v1/export/native`, its
 * stored blocks) and `vm_export_<case>_*` (`/api/v1/export`, decoded); `--peer=none` skips it.
 *
 * Flags: --data=DIR --data30=DIR (datasets, generated when missing), --shards=8,
 * --backends=fs,rgw, --encodings=runs,raw, --warm-reps=1 --cold-reps=1 (scale factors of the
 * repetitions), --profile=DIR (CPU profile of the gateway process), --gateway-node-args=A,B (more
 * node options of the gateway process, e.g. --trace-gc: what node prints goes to stderr), --peer=vm|none,
 * --unread=500 (clients that never read their answer, against the first backend; 0: none):
 * `unread_held`, `unread_refused`, `unread_rss_mib` (gateway RSS while they are open),
 * `unread_rss_before_mib`, `unread_rss_after_mib` (2 s after they left).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { BlockWriter, type ByteSink } from '../src/block/writer.js';
import { encodeReadRequest, ENCODING_RAW, READ_METHOD_PATH } from '../src/api/read-codec.js';
import { QueryClient, DEFAULT_ENCODING, type ReadEncoding, type SeriesSamples } from '../src/client/query.js';
import { decodeFooter, encodeFooter, FOOTER_LEN } from '../src/format/footer.js';
import { blockKey, DEFAULT_BLOCK_DURATION_MS } from '../src/format/key.js';
import { DAY_MS, dayBlockKey, parseDayKey } from '../src/format/day-key.js';
import { DEFAULT_DAY_SOURCE_GRACE_MS } from '../src/lifecycle/config.js';
import { DAY_INDEX_KEY, DayIndexBuilder } from '../src/tenancy/day-index.js';
import { runLifecyclePass } from '../src/lifecycle/job.js';
import { openTenantsConfig } from '../src/tenancy/config.js';
import { TenantRegistry } from '../src/tenancy/tenants.js';
import { openBucket, type Bucket, type BucketConfig } from '../src/objstore/index.js';
import { loadDataset, median, type Dataset, type Series } from './dataset.js';
import { flag, imageMallocEnv, quantile, rssMiB } from './proc.js';
import { vmPeer } from './vm-peer.js';
import { encodeFrame } from '../src/api/grpc-frame.js';
import { lowerBound } from '../src/format/slice.js';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = join(here, '..', '..');
const D = BigInt(DEFAULT_BLOCK_DURATION_MS);
/**
 * `1x30d`: one series over 30 days after compaction to day blocks (the lifecycle role's merge:
 * tenant `bench30d`, one request per day); `1x30d_4h`: the same read of the 4-hour blocks alone
 * (tenant `bench30`, one request per block: the read before compaction).
 */
const CASES = ['1x4h', '100x4h', '1x30d', '1x30d_4h'] as const;
type Case = (typeof CASES)[number];

const round = (x: number): number => Number(x.toFixed(3));

/** A ByteSink collecting a block in memory. */
function memorySink(): ByteSink & { bytes(): Buffer } {
  const chunks: Uint8Array[] = [];
  let out: Buffer | null = null;
  return {
    async write(c) {
      chunks.push(c.slice());
    },
    async complete() {
      out = Buffer.concat(chunks);
    },
    async abort() {
      chunks.length = 0;
    },
    bytes: () => out!,
  };
}


/** The dataset's blocks (tenant, shards, every window it covers), in memory, by key. */
export async function buildBlocks(ds: Dataset, tenant: string, numShards: number): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  const first = (BigInt(ds.startMs) / D) * D;
  for (let ws = first; ws < BigInt(ds.endMs); ws += D) {
    for (let shard = 0; shard < numShards; shard++) {
      const members = ds.series.filter((s) => s.id % BigInt(numShards) === BigInt(shard));
      const sink = memorySink();
      const w = new BlockWriter(sink, { tenant, shard, numShards, windowStart: ws, windowEnd: ws + D }, { expectedSeries: members.length });
      let n = 0;
      for (const s of members) {
        const a = lowerBound(s.timestamps, ws);
        const b = lowerBound(s.timestamps, ws + D);
        if (b > a) {
          await w.add(s.id, { timestamps: s.timestamps.subarray(a, b), values: s.values.subarray(a, b) });
          n++;
        }
      }
      if (n === 0) {
        await w.abort();
        continue;
      }
      await w.finish();
      out.set(blockKey(tenant, shard, ws), sink.bytes());
    }
  }
  return out;
}

/** A copy of `block` under another tenant with a new block id (a block no cache has seen). */
function copyAs(block: Buffer, tenant: string): Buffer {
  const at = block.length - FOOTER_LEN;
  const f = decodeFooter(block, at, block.length, { object: 'copy', offset: 0 });
  const out = Buffer.from(block);
  out.set(encodeFooter({ ...f, tenant, blockId: randomBytes(16).toString('hex') }), at);
  return out;
}

export async function inParallel<T>(items: readonly T[], width: number, fn: (x: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

export interface GatewayProcess {
  readonly pid: number;
  readonly grpcPort: number;
  readonly metricsPort: number;
  stop(): Promise<void>;
}

export async function startGatewayProcess(config: Record<string, unknown>, dir: string, nodeArgs: string[]): Promise<GatewayProcess> {
  const file = join(dir, 'gateway.json');
  writeFileSync(file, JSON.stringify(config));
  // the allocator settings of the image every role is deployed with
  const env = { ...imageMallocEnv(), ...process.env };
  const proc: ChildProcess = spawn(process.execPath, [...nodeArgs, join(ROOT, 'dist', 'src', 'cli', 'main.js'), 'gateway', '--config', file], { stdio: ['ignore', 'pipe', 'inherit'], env });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (c) => resolve(c)));
  const listening = await new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      // what node itself prints (--trace-gc and the like) goes to stderr as it is
      if (!line.startsWith('{')) return void process.stderr.write(`gateway: ${line}\n`);
      const rec = JSON.parse(line) as Record<string, unknown>;
      if (rec['msg'] === 'gateway listening') resolve(rec);
      else if (rec['level'] === 'warn' || rec['level'] === 'error' || rec['level'] === 'fatal') console.error(`gateway: ${line}`);
    });
    void exited.then((c) => reject(new Error(`gateway exited with ${c}`)));
  });
  return {
    pid: proc.pid!,
    grpcPort: listening['grpcPort'] as number,
    metricsPort: listening['metricsPort'] as number,
    async stop() {
      proc.kill('SIGTERM');
      const code = await exited;
      if (code !== 0) throw new Error(`gateway exited with ${code}`);
    },
  };
}

/** Sums of the gateway's metrics by name (all label sets). */
export async function scrape(port: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z0-9_:]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m) out.set(m[1]!, (out.get(m[1]!) ?? 0) + Number(m[3]));
  }
  return out;
}

export function sameSeries(got: SeriesSamples, want: Series, start: bigint, end: bigint): boolean {
  const a = lowerBound(want.timestamps, start);
  const b = lowerBound(want.timestamps, end);
  const ts = want.timestamps.subarray(a, b);
  const vs = want.values.subarray(a, b);
  if (got.timestamps.length !== ts.length) return false;
  const bytes = (x: BigInt64Array | Float64Array): Buffer => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  return bytes(got.timestamps).equals(bytes(ts)) && bytes(got.values).equals(bytes(vs));
}

/** One query case: its tenant, ids and range, and the series it must return. */
interface Query {
  readonly tenant: string;
  readonly ids: bigint[];
  readonly start: bigint;
  readonly end: bigint;
  readonly want: Series[];
  /** Blocks the query reads. */
  readonly blocks: number;
}

interface BackendFigures {
  readonly out: Record<string, number>;
  exact: boolean;
}

async function runBackend(
  name: 'fs' | 'rgw',
  bucketConfig: BucketConfig,
  bucket: Bucket,
  blocks: Map<string, Buffer>,
  make: { full: Dataset; days: Dataset; shards: number },
  reps: { warm: Record<Case, number>; cold: Record<Case, number> },
  encodings: ReadEncoding[],
  gatewayNodeArgs: string[],
  floor: Floor,
  unread: number,
): Promise<BackendFigures> {
  const { full, days, shards } = make;
  const fullStart = (BigInt(full.startMs) / D) * D;
  const daysStart = (BigInt(days.startMs) / D) * D;
  const daysEnd = BigInt(days.endMs);
  const probe = full.series[5000]!;
  const neighbour = full.series[5000 + shards]!; // same shard, same block
  const dayProbe = (i: number): Series => days.series[(i * 37) % days.series.length]!;
  const target = (k: number): Series[] => full.series.slice(k * 100, k * 100 + 100);
  const q = (c: Case, i: number, tenant: string): Query => {
    if (c === '1x4h') return { tenant, ids: [probe.id], start: fullStart, end: fullStart + D, want: [probe], blocks: 1 };
    if (c === '100x4h') {
      const t = target(i % 10);
      return { tenant, ids: t.map((s) => s.id), start: fullStart, end: fullStart + D, want: t, blocks: shards };
    }
    const s = dayProbe(i % 10);
    // 1x30d: one request per day, each answered by one day block
    return { tenant, ids: [s.id], start: daysStart, end: daysEnd, want: [s], blocks: c === '1x30d' ? Number((daysEnd - daysStart) / BigInt(DAY_MS)) : Number((daysEnd - daysStart) / D) };
  };
  const mainTenant = (c: Case): string => (c === '1x30d' ? 'bench30d' : c === '1x30d_4h' ? 'bench30' : 'bench');

  // compaction: the 30 days as tenant bench30d, merged into day blocks by the lifecycle's pass
  // (alone in the bucket, so the pass merges nothing else), the 4-hour blocks then deleted
  const tc = performance.now();
  const dayParts: [string, Buffer][] = [];
  for (const [key, bytes] of blocks) {
    const m = /^blocks\/bench30\/(\d+)\/(\d+)\.block$/.exec(key);
    if (m) dayParts.push([blockKey('bench30d', Number(m[2]), BigInt(m[1]!)), copyAs(bytes, 'bench30d')]);
  }
  await inParallel(dayParts, 16, ([k, b]) => bucket.put(k, b));
  const registry = new TenantRegistry(openTenantsConfig(bucketConfig));
  const work = mkdtempSync(join(tmpdir(), `strata-bench-day-${name}-`));
  try {
    const passOpts = { blockDurationMs: Number(D), retentionGraceMs: 0, incompleteUploadMaxAgeMs: 24 * 3600 * 1000, deleteConcurrency: 16, days: { dayMergeAfterMs: 0, daySourceGraceMs: 0, workDir: work, now: Date.now } };
    const merged = await runLifecyclePass(registry, Date.now(), passOpts);
    const deleted = await runLifecyclePass(registry, Date.now(), passOpts);
    if (merged.failures + deleted.failures > 0 || deleted.daySourcesDeleted !== dayParts.length) throw new Error(`compaction: ${merged.dayMerges} merges, ${deleted.daySourcesDeleted} of ${dayParts.length} blocks deleted, ${merged.failures + deleted.failures} failures`);
    console.log(`[${name}] compacted ${dayParts.length} blocks into ${merged.dayMerges} day blocks in ${((performance.now() - tc) / 1000).toFixed(1)} s`);
  } finally {
    await registry.close();
    rmSync(work, { recursive: true, force: true });
  }
  const dayBlocks = new Map<string, Buffer>();
  for (const [key] of dayParts) {
    const m = /^blocks\/bench30d\/(\d+)\/(\d+)\.block$/.exec(key)!;
    const day = BigInt(m[1]!) - (BigInt(m[1]!) % BigInt(DAY_MS));
    const dk = dayBlockKey('bench30d', Number(m[2]), day);
    if (!dayBlocks.has(dk)) dayBlocks.set(dk, await bucket.get(dk));
  }

  // upload: the main blocks, then the copies for cold reads
  const t0 = performance.now();
  const uploads: [string, Buffer][] = [...blocks];
  const copies: [string, () => Buffer][] = [];
  for (const c of CASES) {
    for (let k = 0; k < reps.cold[c]; k++) {
      const tenant = `cold-${c.toLowerCase()}-${k}`;
      const probeShard = c === '1x4h' ? Number(probe.id % BigInt(shards)) : c.startsWith('1x30d') ? Number(dayProbe(k % 10).id % BigInt(shards)) : -1;
      for (const [key, bytes] of c === '1x30d' ? dayBlocks : blocks) {
        const m = /^blocks\/([^/]+)\/(\d+)\/(\d+)\.(day\.)?block$/.exec(key)!;
        if (m[1] !== mainTenant(c)) continue;
        if (probeShard >= 0 && Number(m[3]) !== probeShard) continue;
        copies.push([m[4] ? dayBlockKey(tenant, Number(m[3]), BigInt(m[2]!)) : blockKey(tenant, Number(m[3]), BigInt(m[2]!)), () => copyAs(bytes, tenant)]);
      }
    }
  }
  await inParallel(uploads, 16, ([k, b]) => bucket.put(k, b));
  await inParallel(copies, 16, ([k, b]) => bucket.put(k, b()));
  // the day-block index a lifecycle pass with the default grace writes for the bucket as it is
  // now (the pass above ran with no grace, and its index is never trusted): the day blocks of
  // bench30d and of the cold copies. Closed days without a day block are then read from their
  // 4-hour blocks with no GET for a day block first, as in a deployment running the lifecycle.
  const dayIndex = new DayIndexBuilder();
  for (const key of [...dayBlocks.keys(), ...copies.map(([k]) => k)]) {
    const d = parseDayKey(key);
    if (d?.kind === 'block') dayIndex.add(d);
  }
  await bucket.put(DAY_INDEX_KEY, dayIndex.encode(Date.now(), DEFAULT_DAY_SOURCE_GRACE_MS));
  console.log(`[${name}] uploaded ${uploads.length} blocks + ${copies.length} copies in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const dir = mkdtempSync(join(tmpdir(), `strata-bench-read-${name}-`));
  const gw = await startGatewayProcess(
    {
      bucket: bucketConfig,
      cacheDir: join(dir, 'cache'),
      cacheMaxBytes: 8 * 1024 ** 3,
      grpcListen: '127.0.0.1:0',
      metricsListen: '127.0.0.1:0',
      stalenessMs: 3_600_000,
      logLevel: 'info',
      // one tenant takes every call of the unread-streams phase: let it have the whole gateway's
      // budgets (calls and bytes in flight), the worst case for memory
      maxConcurrentReads: 512,
      maxConcurrentReadsPerTenant: 512,
      maxBytesInFlightPerTenant: 256 * 2 ** 20,
    },
    dir,
    gatewayNodeArgs,
  );
  const out: Record<string, number> = {};
  let exact = true;
  const clients = new Map(encodings.map((e) => [e, new QueryClient({ endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: shards, encoding: e, concurrency: CLIENT_CONCURRENCY })]));
  // the reads before compaction: one request per 4-hour block
  const perBlock = new Map(encodings.map((e) => [e, new QueryClient({ endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: shards, encoding: e, concurrency: CLIENT_CONCURRENCY, dayRequestsAfterMs: null })]));
  const run = async (client0: QueryClient, query: Query, c?: Case): Promise<number> => {
    const client = c === '1x30d_4h' ? perBlock.get([...clients].find(([, v]) => v === client0)![0])! : client0;
    const s = performance.now();
    const r = await client.query(query.tenant, query.ids, { start: query.start, end: query.end });
    const ms = performance.now() - s;
    r.series.forEach((got, i) => {
      if (!sameSeries(got, query.want[i]!, query.start, query.end)) exact = false;
    });
    if (r.series.length !== query.want.length || r.blocksFound !== query.blocks) exact = false;
    return ms;
  };
  try {
    // fill the caches: every warm query once
    const def = clients.get(DEFAULT_ENCODING) ?? clients.values().next().value!;
    for (const c of CASES) for (let i = 0; i < 10; i++) await run(def, q(c, i, mainTenant(c)), c);

    // warm, each encoding: a floor exchange before each query, in rounds
    let loopP99 = 0;
    for (const [enc, client] of clients) {
      for (const c of CASES) {
        const before = await scrape(gw.metricsPort); // also restarts the gateway's event-loop delay histogram
        const lat: number[] = [];
        const floorLat: number[] = [];
        const ratios: number[] = [];
        let blocksTouched = 0;
        const perRound = Math.max(1, Math.ceil(reps.warm[c] / ROUNDS));
        for (let i = 0; i < reps.warm[c]; i++) {
          const query = q(c, i, mainTenant(c));
          floorLat.push(await floor.exchange(floorWidth(query)));
          lat.push(await run(client, query, c));
          blocksTouched += query.blocks;
          if ((i + 1) % perRound === 0 || i + 1 === reps.warm[c]) {
            const from = Math.floor(i / perRound) * perRound;
            ratios.push(quantile(lat.slice(from), 0.99) / quantile(floorLat.slice(from), 0.99));
          }
        }
        const after = await scrape(gw.metricsPort);
        const cpuMs = ((after.get('process_cpu_seconds_total') ?? 0) - (before.get('process_cpu_seconds_total') ?? 0)) * 1000;
        const getsDelta = (after.get('strata_gateway_s3_gets_total') ?? 0) - (before.get('strata_gateway_s3_gets_total') ?? 0);
        const loop = (after.get('nodejs_eventloop_lag_p99_seconds') ?? NaN) * 1000;
        loopP99 = Math.max(loopP99, loop);
        out[`${enc}_warm_${c}_p50_ms`] = round(quantile(lat, 0.5));
        out[`${enc}_warm_${c}_p99_ms`] = round(quantile(lat, 0.99));
        out[`${enc}_warm_${c}_floor_p99_ms`] = round(quantile(floorLat, 0.99));
        out[`${enc}_warm_${c}_p99_over_floor`] = round(median(ratios));
        out[`${enc}_gateway_cpu_ms_per_query_${c}`] = round(cpuMs / reps.warm[c]);
        out[`${enc}_gets_per_block_warm_${c}`] = round(getsDelta / blocksTouched);
        out[`${enc}_event_loop_p99_ms_${c}`] = round(loop);
        console.log(
          `[${name}] warm ${c.padEnd(6)} ${enc.padEnd(4)}: p50 ${quantile(lat, 0.5).toFixed(2)} ms, p99 ${quantile(lat, 0.99).toFixed(2)} ms ` +
            `(floor x${floorWidth(q(c, 0, mainTenant(c)))} p99 ${quantile(floorLat, 0.99).toFixed(2)} ms; p99/floor median of ${ratios.length} rounds ${median(ratios).toFixed(2)}), ` +
            `gateway CPU ${(cpuMs / reps.warm[c]).toFixed(2)} ms/query, event loop p99 ${loop.toFixed(1)} ms, ${getsDelta} GETs over ${blocksTouched} blocks (${reps.warm[c]} queries)`,
        );
      }
    }
    out['event_loop_p99_ms'] = round(loopP99);
    // prom-client samples the loop with a 10 ms timer and reports the whole interval between its
    // ticks: an idle process shows p50 10.1 ms. The delay is the interval less those 10 ms; and the
    // same gateway left idle for 2 s shows what the machine alone adds (other processes, no query).
    out['event_loop_delay_p99_ms'] = round(loopP99 - LAG_SAMPLING_MS);
    await scrape(gw.metricsPort);
    await new Promise((r) => setTimeout(r, 2000));
    out['event_loop_idle_p99_ms'] = round(((await scrape(gw.metricsPort)).get('nodejs_eventloop_lag_p99_seconds') ?? NaN) * 1000);
    console.log(`[${name}] event loop p99 ${loopP99.toFixed(1)} ms (delay ${(loopP99 - LAG_SAMPLING_MS).toFixed(1)} ms past the 10 ms sampling timer); idle gateway, same run: ${out['event_loop_idle_p99_ms']} ms`);
    for (const c of CASES) {
      out[`warm_${c}_p50_ms`] = out[`${DEFAULT_ENCODING}_warm_${c}_p50_ms`]!;
      out[`warm_${c}_p99_ms`] = out[`${DEFAULT_ENCODING}_warm_${c}_p99_ms`]!;
      out[`warm_${c}_p99_over_floor`] = out[`${DEFAULT_ENCODING}_warm_${c}_p99_over_floor`]!;
      out[`gateway_cpu_ms_per_query_${c}`] = out[`${DEFAULT_ENCODING}_gateway_cpu_ms_per_query_${c}`]!;
    }
    out['gateway_cpu_ms_per_query'] = out['gateway_cpu_ms_per_query_1x4h']!;
    out['gets_per_block_warm'] = Math.max(...CASES.map((c) => out[`${DEFAULT_ENCODING}_gets_per_block_warm_${c}`]!));

    // cold: blocks nobody read before
    for (const c of CASES) {
      const lat: number[] = [];
      let getsTotal = 0;
      let blocksTouched = 0;
      for (let k = 0; k < reps.cold[c]; k++) {
        const query = q(c, k, `cold-${c.toLowerCase()}-${k}`);
        const before = await scrape(gw.metricsPort);
        lat.push(await run(def, query, c));
        const after = await scrape(gw.metricsPort);
        getsTotal += (after.get('strata_gateway_s3_gets_total') ?? 0) - (before.get('strata_gateway_s3_gets_total') ?? 0);
        blocksTouched += query.blocks;
        if (c === '1x4h' && k === 0) {
          // the block's index is cached now: another series of it costs its run only
          const other: Query = { tenant: query.tenant, ids: [neighbour.id], start: query.start, end: query.end, want: [neighbour], blocks: 1 };
          const b2 = await scrape(gw.metricsPort);
          await run(def, other);
          const a2 = await scrape(gw.metricsPort);
          out['gets_per_block_index_cached'] = (a2.get('strata_gateway_s3_gets_total') ?? 0) - (b2.get('strata_gateway_s3_gets_total') ?? 0);
        }
      }
      out[`cold_${c}_p50_ms`] = round(quantile(lat, 0.5));
      out[`cold_${c}_p99_ms`] = round(quantile(lat, 0.99));
      out[`gets_per_block_cold_${c}`] = round(getsTotal / blocksTouched);
      out[`cold_${c}_gets`] = round(getsTotal / reps.cold[c]);
      console.log(`[${name}] cold ${c.padEnd(6)}: p50 ${quantile(lat, 0.5).toFixed(2)} ms, p99 ${quantile(lat, 0.99).toFixed(2)} ms, ${(getsTotal / blocksTouched).toFixed(2)} GETs per block (${reps.cold[c]} queries)`);
    }
    out['gets_per_block_cold'] = out['gets_per_block_cold_1x4h']!;
    if (unread > 0) Object.assign(out, await unreadStreams(gw, full, shards, fullStart, unread));
    const m = await scrape(gw.metricsPort);
    console.log(
      `[${name}] gateway totals: ${m.get('strata_gateway_s3_gets_total')} GETs, ${m.get('strata_gateway_coalesced_ranges_total')} coalesced ranges, ` +
        `${m.get('strata_gateway_single_flight_joins_total')} single-flight joins, cache ${((m.get('strata_gateway_cache_bytes') ?? 0) / 2 ** 20).toFixed(1)} MiB`,
    );
  } finally {
    for (const c of clients.values()) c.close();
    for (const c of perBlock.values()) c.close();
    await gw.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return { out, exact };
}

/**
 * `n` clients that ask for a 2 MB RAW answer (130 series of one block) and never read it, all at
 * once, over raw HTTP/2 with a 64 KiB window: the gateway's RSS once every call is either held or
 * refused, how many were refused (RESOURCE_EXHAUSTED: maxConcurrentReads and the bytes budget),
 * and the RSS after they all left.
 */
async function unreadStreams(gw: GatewayProcess, full: Dataset, shards: number, windowStart: bigint, n: number): Promise<Record<string, number>> {
  const { connect } = await import('node:http2');
  const ids = full.series.filter((x) => x.id % BigInt(shards) === 0n).slice(0, 130).map((x) => x.id);
  const idBytes = Buffer.alloc(ids.length * 8);
  ids.forEach((id, i) => idBytes.writeBigUInt64LE(id, i * 8));
  const body = encodeReadRequest({ tenant: 'bench', shard: 0, numShards: shards, windowStartMs: windowStart, seriesIds: idBytes, startMs: windowStart, endMs: windowStart + D, encoding: ENCODING_RAW });
  const frame = encodeFrame(body);
  const beforeRss = rssMiB(gw.pid);
  const before = beforeRss.now;
  let refused = 0;
  let answered = 0;
  const sessions = Array.from({ length: Math.ceil(n / 100) }, () => connect(`http://127.0.0.1:${gw.grpcPort}`, { settings: { initialWindowSize: 65535 } }));
  const streams = Array.from({ length: n }, (_, i) => {
    const st = sessions[i % sessions.length]!.request({ ':method': 'POST', ':path': READ_METHOD_PATH, 'content-type': 'application/grpc', te: 'trailers' });
    st.on('error', () => undefined);
    const settle = (h: Record<string, unknown>): void => {
      const code = h['grpc-status'];
      if (code === undefined) answered++;
      else if (Number(code) === 8) refused++;
    };
    st.once('response', settle);
    st.end(frame);
    st.pause();
    return st;
  });
  // every call answered with headers (held) or refused
  for (let i = 0; i < 600 && answered + refused < n; i++) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 1000));
  const heldRss = rssMiB(gw.pid);
  const held = heldRss.now;
  const m = await scrape(gw.metricsPort);
  const inFlight = m.get('strata_gateway_bytes_in_flight') ?? 0;
  for (const st of streams) st.close();
  for (const s of sessions) s.destroy();
  await new Promise((r) => setTimeout(r, 2000));
  const after = rssMiB(gw.pid).now;
  console.log(
    `unread: ${n} streams of a 2 MB answer that nobody reads: ${answered} held, ${refused} refused (RESOURCE_EXHAUSTED); gateway RSS ${before.toFixed(0)} -> ${held.toFixed(0)} MiB ` +
      `(anonymous ${beforeRss.anon.toFixed(0)} -> ${heldRss.anon.toFixed(0)}, file pages ${beforeRss.file.toFixed(0)} -> ${heldRss.file.toFixed(0)}) ` +
      `(bytes in flight ${(inFlight / 2 ** 20).toFixed(1)} MiB), ${after.toFixed(0)} MiB 2 s after they left`,
  );
  return { unread_streams: n, unread_held: answered, unread_refused: refused, unread_rss_mib: round(held), unread_rss_before_mib: round(before), unread_rss_after_mib: round(after) };
}


/** The machine's floor: an empty HTTP/2 exchange with a process on loopback, `width` at a time. */
interface Floor {
  exchange(width: number): Promise<number>;
  close(): void;
}

/**
 * The machine's floor for these latencies: an empty HTTP/2 request and response between two Node
 * processes on loopback (no gRPC, no work), one at a time and 8 at once (as a 100x4h query sends
 * them). Shared cloud machines wake idle processes slowly now and then, and no read can be
 * faster than this. The warm queries interleave one floor exchange before each query, so both
 * see the same neighbours.
 */
async function startFloor(): Promise<Floor> {
  const script = `
    import http2 from 'node:http2';
    const srv = http2.createServer();
    srv.on('stream', (s) => { s.respond({ ':status': 200 }); s.end(); });
    srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
  `;
  const proc = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).once('line', (l) => resolve(Number(l)));
    proc.once('exit', (c) => reject(new Error(`floor server exited with ${c}`)));
  });
  const { connect } = await import('node:http2');
  const session = connect(`http://127.0.0.1:${port}`);
  const once = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const r = session.request({ ':method': 'POST', ':path': '/' });
      r.on('data', () => undefined);
      r.on('end', resolve);
      r.on('error', reject);
      r.end();
    });
  for (let i = 0; i < 300; i++) await once();
  return {
    async exchange(width) {
      const t = performance.now();
      await Promise.all(Array.from({ length: width }, once));
      return performance.now() - t;
    },
    close() {
      session.close();
      proc.kill();
    },
  };
}

/** The floor alone, one and 8 at a time (`loopback_h2_*` keys). */
async function loopbackFloor(floor: Floor): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const width of [1, 8]) {
    const lat: number[] = [];
    for (let i = 0; i < 1000; i++) lat.push(await floor.exchange(width));
    const name = width === 1 ? 'loopback_h2' : `loopback_h2_x${width}`;
    out[`${name}_p50_ms`] = round(quantile(lat, 0.5));
    out[`${name}_p99_ms`] = round(quantile(lat, 0.99));
  }
  return out;
}

/** Interval of prom-client's event-loop lag timer (eventLoopMonitoringPrecision), included in its figures. */
const LAG_SAMPLING_MS = 10;

/** Requests the query client keeps in flight at once (its `concurrency`). */
const CLIENT_CONCURRENCY = 64;
/**
 * The floor's width for a query: as many exchanges at once as the requests the query has in
 * flight (one per block: 1 for 1x4h, the shards for 100x4h, 30 days for 1x30d, 64 of the 180
 * blocks for 1x30d_4h). Until this run it was 8 for every multi-block case, which compared a
 * 30-request query with an 8-request floor.
 */
function floorWidth(query: { readonly blocks: number }): number {
  return Math.min(query.blocks, CLIENT_CONCURRENCY);
}
/** Rounds of warm queries; the p99 ratio to the floor is the median of the rounds' ratios. */
const ROUNDS = 5;

export interface RgwHandle {
  readonly env: Record<string, string>;
  stop(): Promise<void>;
}

/** Ceph RGW started by scripts/rgw/rgw.mjs, and the bucket config of its test bucket. */
export async function startBenchRgw(): Promise<{ bucketConfig: BucketConfig; stop(): Promise<void> }> {
  const { startRgw } = (await import(pathToFileURL(join(ROOT, 'scripts', 'rgw', 'rgw.mjs')).href)) as { startRgw(): Promise<RgwHandle> };
  const rgw = await startRgw();
  const e = rgw.env;
  return {
    bucketConfig: {
      type: 's3',
      endpoint: e['STRATA_TEST_S3_ENDPOINT']!,
      region: e['STRATA_TEST_S3_REGION']!,
      bucket: e['STRATA_TEST_S3_BUCKET']!,
      forcePathStyle: true,
      credentials: { accessKeyId: e['STRATA_TEST_S3_ACCESS_KEY']!, secretAccessKey: e['STRATA_TEST_S3_SECRET_KEY']! },
    },
    stop: () => rgw.stop(),
  };
}

export async function main(argv: string[]): Promise<void> {
  // the AWS SDK's once-per-process Node 22 notice is noise here (and in the gateway it spawns)
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
  const fullDir = flag(argv, 'data', join('data', 'bench', 'full'));
  const daysDir = flag(argv, 'data30', join('data', 'bench', '30d'));
  const shards = Number(flag(argv, 'shards', '8'));
  const backends = flag(argv, 'backends', 'fs,rgw').split(',') as ('fs' | 'rgw')[];
  const encodings = flag(argv, 'encodings', 'runs,raw').split(',') as ReadEncoding[];
  const warmScale = Number(flag(argv, 'warm-reps', '1'));
  const coldScale = Number(flag(argv, 'cold-reps', '1'));
  const profileDir = flag(argv, 'profile', '');
  const unread = Number(flag(argv, 'unread', '500'));
  const extraNodeArgs = flag(argv, 'gateway-node-args', '').split(',').filter((a) => a !== '');
  const gatewayNodeArgs = [...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), ...extraNodeArgs];
  const reps = {
    // at least 100 queries per round (ROUNDS) where the case is cheap enough: a round's p99 of
    // 40 queries was its maximum, and the ratio to the floor's maximum measured single stalls
    warm: { '1x4h': Math.round(500 * warmScale), '100x4h': Math.round(500 * warmScale), '1x30d': Math.round(500 * warmScale), '1x30d_4h': Math.round(50 * warmScale) },
    cold: { '1x4h': Math.round(30 * coldScale), '100x4h': Math.round(20 * coldScale), '1x30d': Math.round(10 * coldScale), '1x30d_4h': Math.round(10 * coldScale) },
  };
  const full = loadDataset(fullDir, ['--size=full', '--seed=42', '--start=2026-11-01T00:00:00Z']);
  const days = loadDataset(daysDir, ['--series=200', '--hours=720', '--seed=42', '--start=2026-10-02T00:00:00Z']);
  console.log(`datasets: ${full.series.length} series x 4 h (${full.sampleCount} samples); ${days.series.length} series x 30 days (${days.sampleCount} samples); ${shards} shards`);
  const tb = performance.now();
  const blocks = new Map([...(await buildBlocks(full, 'bench', shards)), ...(await buildBlocks(days, 'bench30', shards))]);
  let bytes = 0;
  for (const b of blocks.values()) bytes += b.length;
  console.log(`built ${blocks.size} blocks (${(bytes / 2 ** 20).toFixed(1)} MiB) in ${((performance.now() - tb) / 1000).toFixed(1)} s`);

  const result: Record<string, number | boolean> = {};
  let exact = true;
  const floor = await startFloor();
  try {
    for (const backend of backends) {
      let bucketConfig: BucketConfig;
      let cleanup: () => Promise<void>;
      if (backend === 'fs') {
        const dir = mkdtempSync(join(tmpdir(), 'strata-bench-bucket-'));
        bucketConfig = { type: 'filesystem', path: dir };
        cleanup = async () => rmSync(dir, { recursive: true, force: true });
      } else {
        const rgw = await startBenchRgw();
        bucketConfig = rgw.bucketConfig;
        cleanup = rgw.stop;
      }
      const bucket = await openBucket(bucketConfig);
      try {
        const r = await runBackend(backend, bucketConfig, bucket, blocks, { full, days, shards }, reps, encodings, gatewayNodeArgs, floor, backend === backends[0] ? unread : 0);
        exact &&= r.exact;
        const prefix = backend === 'rgw' || !backends.includes('rgw') ? '' : 'fs_';
        for (const [k, v] of Object.entries(r.out)) result[`${prefix}${k}`] = v;
      } finally {
        await bucket.close();
        await cleanup();
      }
    }
    if (flag(argv, 'peer', 'vm') === 'vm') {
      const vm = await vmPeer(full, { floor: (w) => floor.exchange(w), reps: { '1x4h': reps.warm['1x4h'], '100x4h': reps.warm['100x4h'] } });
      Object.assign(result, vm);
      for (const c of ['1x4h', '100x4h'] as const) {
        const ours = result[`warm_${c}_p50_ms`];
        if (typeof ours === 'number' && vm[`vm_native_${c}_p50_ms`] !== undefined) result[`warm_${c}_p50_over_vm_native`] = round(ours / vm[`vm_native_${c}_p50_ms`]!);
      }
    }
    const alone = await loopbackFloor(floor);
    console.log(
      `floor: an empty HTTP/2 exchange between two processes: p50 ${alone['loopback_h2_p50_ms']} ms, p99 ${alone['loopback_h2_p99_ms']} ms; ` +
        `8 at once: p50 ${alone['loopback_h2_x8_p50_ms']} ms, p99 ${alone['loopback_h2_x8_p99_ms']} ms`,
    );
    Object.assign(result, alone);
  } finally {
    floor.close();
  }
  result['roundtrip_exact'] = exact;
  console.log(`round trip exact: ${exact}; client encoding: ${DEFAULT_ENCODING}`);
  console.log(JSON.stringify(result));
}
