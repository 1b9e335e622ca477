/**
 * End to end through the local multi-process cluster (scripts/cluster/cluster.ts: 2 aggregators,
 * 3 gateways, nginx routing writes by x-strata-shard, HAProxy hashing reads by x-strata-block,
 * Ceph RGW as the bucket), with the shared generator's quick dataset (1,000 series x 4 h x 15 s):
 *
 * 1. push every sample through nginx, seal the window: one block per shard, and each aggregator
 *    ingested exactly the samples of the shards it owns (so nginx routed every request right);
 * 2. query every series through HAProxy: every sample comes back bit-exactly;
 * 3. repeated reads of each block: every read of a block is served by the same gateway (from the
 *    gateways' own /metrics: requests and cache hits grow on exactly that gateway) and no gateway
 *    issues an S3 GET;
 * 4. SIGKILL the gateway serving the most blocks: a query right away still succeeds; once HAProxy
 *    marks it DOWN, the blocks of the other gateways stay where they were (same gateway, cache
 *    hits, no S3 GET) and only the dead gateway's blocks move, to gateways that then serve them
 *    from their cache; every query still returns exact samples.
 *
 * Needs nginx and HAProxy (fails naming the packages when missing) and the RGW harness:
 *   node scripts/with-rgw.mjs -- tap test/e2e/cluster.test.ts
 * STRATA_E2E_KEEP_DIR=1 keeps the cluster directory (configs, logs) after the run.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { endianness, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import { QueryClient, type SeriesSamples } from '../../src/client/query.js';
import { WriterClient, type SeriesData } from '../../src/client/writer.js';
import { startCluster, REPO_ROOT, type Cluster, type ServiceNode } from '../../scripts/cluster/cluster.js';
import { scrapeMetrics, sumMetric } from '../../scripts/cluster/observe.js';
import { tailFile } from '../../scripts/cluster/process.js';
import { findProxyTools } from '../../scripts/cluster/tools.js';
import { createTestBucket, s3BucketConfig, s3TestEnv } from '../support/s3env.js';

const TENANT = 'e2e';
const NUM_SHARDS = 16;
const WINDOW_MS = 4 * 3600 * 1000;
/** Series read per block in the repeated-read and kill phases. */
const PROBE_SERIES = 4;

// Fail (not skip) with the reason when a prerequisite is missing.
const tools = findProxyTools();
const s3 = s3TestEnv();
if (endianness() !== 'LE') throw new Error('this test reads the generator file through typed arrays: little-endian hosts only');

/** Samples of one series, values as raw IEEE-754 bits. */
interface Expected {
  readonly id: bigint;
  readonly timestamps: BigInt64Array;
  readonly values: Float64Array;
  readonly bits: BigUint64Array;
}

/** Per-series columns of a generator file (24-byte records u64 id | i64 ts | f64 value). */
function columnsOf(file: Buffer): Map<bigint, Expected> {
  // an 8-aligned copy, so the records can be read through 64-bit views
  const u64 = new BigUint64Array(file.length / 8);
  new Uint8Array(u64.buffer).set(file);
  const i64 = new BigInt64Array(u64.buffer);
  const n = file.length / 24;
  const counts = new Map<bigint, number>();
  for (let r = 0; r < n; r++) counts.set(u64[3 * r]!, (counts.get(u64[3 * r]!) ?? 0) + 1);
  const cols = new Map<bigint, { e: Expected; n: number }>();
  for (const id of [...counts.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
    const c = counts.get(id)!;
    const values = new Float64Array(c);
    cols.set(id, { e: { id, timestamps: new BigInt64Array(c), values, bits: new BigUint64Array(values.buffer) }, n: 0 });
  }
  for (let r = 0; r < n; r++) {
    const col = cols.get(u64[3 * r]!)!;
    col.e.timestamps[col.n] = i64[3 * r + 1]!;
    col.e.bits[col.n] = u64[3 * r + 2]!; // the bits, never through a JS number (NaN payloads)
    col.n++;
  }
  return new Map([...cols].map(([id, c]) => [id, c.e]));
}

/** Differences between what came back and what was written (first few), and samples compared. */
function compare(got: readonly SeriesSamples[], ids: readonly bigint[], expected: ReadonlyMap<bigint, Expected>): { problems: string[]; samples: number } {
  const problems: string[] = [];
  let samples = 0;
  const gotIds = got.map((s) => s.id);
  if (gotIds.length !== ids.length || gotIds.some((id, i) => id !== ids[i])) problems.push(`series ids differ: got ${gotIds.length}, want ${ids.length}`);
  for (const s of got) {
    const e = expected.get(s.id);
    if (!e) {
      problems.push(`unexpected series ${s.id}`);
      continue;
    }
    if (s.timestamps.length !== e.timestamps.length || s.values.length !== e.values.length) {
      problems.push(`series ${s.id}: ${s.timestamps.length} samples, want ${e.timestamps.length}`);
      continue;
    }
    const bits = new BigUint64Array(s.values.buffer, s.values.byteOffset, s.values.length);
    for (let i = 0; i < e.timestamps.length; i++) {
      if (s.timestamps[i] !== e.timestamps[i] || bits[i] !== e.bits[i]) {
        problems.push(
          `series ${s.id} sample ${i}: got (${s.timestamps[i]}, 0x${bits[i]!.toString(16)}), want (${e.timestamps[i]}, 0x${e.bits[i]!.toString(16)})`,
        );
        break;
      }
    }
    samples += e.timestamps.length;
    if (problems.length >= 10) break;
  }
  return { problems, samples };
}

/** What a gateway's /metrics says about its work so far. */
interface GatewayCounters {
  readonly requests: number;
  readonly cacheHits: number;
  readonly s3Gets: number;
}

async function countersOf(g: ServiceNode): Promise<GatewayCounters> {
  const m = await scrapeMetrics(g.metricsUrl);
  return {
    requests: sumMetric(m, 'strata_gateway_requests_total'),
    cacheHits: sumMetric(m, 'strata_gateway_cache_hits_total'),
    s3Gets: sumMetric(m, 'strata_gateway_s3_gets_total'),
  };
}

/** One read of one block and what each live gateway's counters did meanwhile. */
interface Probe {
  /** The one gateway whose request count grew. */
  readonly servedBy: string;
  readonly hitsDelta: ReadonlyMap<string, number>;
  readonly getsDelta: ReadonlyMap<string, number>;
  readonly problems: string[];
}

const startMs = Math.floor(Date.now() / WINDOW_MS) * WINDOW_MS - WINDOW_MS; // the last complete window
const range = { start: BigInt(startMs), end: BigInt(startMs + WINDOW_MS) };

const bucket = await createTestBucket(t, { tag: 'e2e' });

const t0 = performance.now();
const cluster: Cluster = await startCluster({
  bucket: { type: 's3', ...s3BucketConfig(s3, bucket) },
  aggregators: 2,
  gateways: 3,
  numShards: NUM_SHARDS,
  tools,
  keepDir: process.env.STRATA_E2E_KEEP_DIR === '1',
  // Opened blocks are re-checked in the bucket (a suffix GET) once stalenessMs / 2 has passed;
  // this run must not see such GETs, which would be correct but blur "warm reads do no GET".
  gatewayConfig: { stalenessMs: 600_000 },
});
t.teardown(async () => {
  if (!t.passing()) {
    for (const p of [...cluster.aggregators, ...cluster.gateways].map((n) => n.process).concat([cluster.nginx, cluster.haproxy])) {
      t.comment(`--- ${p.name} (${p.logFile})\n${await tailFile(p.logFile, 15)}`);
    }
  }
  await cluster.stop();
});
t.comment(`cluster up in ${((performance.now() - t0) / 1000).toFixed(1)} s (${cluster.dir}): write ${cluster.writeEndpoint}, read ${cluster.readEndpoint}`);

const dataDir = await mkdtemp(join(tmpdir(), 'strata-e2e-data-'));
t.teardown(() => rm(dataDir, { recursive: true, force: true }));
await promisify(execFile)(process.execPath, [join(REPO_ROOT, 'bench', 'gen-samples.mjs'), '--size=quick', '--formats=bin', `--out=${dataDir}`, '--seed=42', `--start=${startMs}`]);
const expected = columnsOf(await readFile(join(dataDir, 'samples.bin')));
const allIds = [...expected.keys()];
const totalSamples = [...expected.values()].reduce((n, e) => n + e.timestamps.length, 0);
const shardOf = (id: bigint): number => Number(id % BigInt(NUM_SHARDS));
const idsOfShard = (s: number): bigint[] => allIds.filter((id) => shardOf(id) === s);

const query = new QueryClient({ futureHorizonMs: null, endpoints: [cluster.readEndpoint], numShards: NUM_SHARDS });
t.teardown(() => query.close());

t.test('push through nginx, seal, read everything back through HAProxy bit-exactly', async (t) => {
  t.equal(allIds.length, 1000, 'the quick dataset has 1,000 series');
  t.equal(totalSamples, 960_000, 'and 960,000 samples');
  const writer = new WriterClient({ tenant: TENANT, numShards: NUM_SHARDS, target: cluster.writeEndpoint });
  t.teardown(() => writer.close());
  const series: SeriesData[] = [...expected.values()].map((e) => ({ id: e.id, timestamps: e.timestamps, values: e.values }));
  const w = await writer.write(series);
  t.equal(w.samples, totalSamples, 'every sample acknowledged');
  const blocks = await writer.seal(range.start);
  t.same(
    blocks.map((b) => b.shard),
    Array.from({ length: NUM_SHARDS }, (_, s) => s),
    'sealing made one block per shard',
  );
  t.equal(
    blocks.reduce((n, b) => n + b.samples, 0),
    totalSamples,
    'the blocks hold every sample',
  );

  for (const a of cluster.aggregators) {
    const owned = new Set(a.shards);
    const want = allIds.filter((id) => owned.has(shardOf(id))).reduce((n, id) => n + expected.get(id)!.timestamps.length, 0);
    const m = await scrapeMetrics(a.metricsUrl);
    t.equal(sumMetric(m, 'strata_aggregator_samples_ingested_total'), want, `${a.name} ingested exactly the samples of its shards ${a.shards.join(',')}`);
    t.equal(sumMetric(m, 'strata_aggregator_flush_samples_total'), want, `${a.name} uploaded them`);
  }

  const r = await query.query(TENANT, allIds, range);
  t.equal(r.requests, NUM_SHARDS, 'the query was one request per block');
  t.equal(r.blocksFound, NUM_SHARDS, 'every block was found');
  const { problems, samples } = compare(r.series, allIds, expected);
  t.same(problems, [], 'every sample came back bit-exactly');
  t.equal(samples, totalSamples, 'all samples compared');
});

/** Reads PROBE_SERIES series of shard `s`'s block and sees which live gateway served it. */
async function probe(shard: number, live: readonly ServiceNode[]): Promise<Probe> {
  const ids = idsOfShard(shard).slice(0, PROBE_SERIES);
  const before = await Promise.all(live.map(countersOf));
  const r = await query.query(TENANT, ids, range);
  const after = await Promise.all(live.map(countersOf));
  const { problems } = compare(r.series, ids, expected);
  const served = live.filter((_, i) => after[i]!.requests > before[i]!.requests);
  if (served.length !== 1 || after[live.indexOf(served[0]!)]!.requests - before[live.indexOf(served[0]!)]!.requests !== 1) {
    problems.push(`block of shard ${shard}: request counts grew on ${served.map((g) => g.name).join(', ') || 'no gateway'}, want one request on one gateway`);
  }
  return {
    servedBy: served[0]?.name ?? '(none)',
    hitsDelta: new Map(live.map((g, i) => [g.name, after[i]!.cacheHits - before[i]!.cacheHits])),
    getsDelta: new Map(live.map((g, i) => [g.name, after[i]!.s3Gets - before[i]!.s3Gets])),
    problems,
  };
}

/** Checks that a warm read was served from `owner`'s cache alone: hits there, none elsewhere, no GET anywhere. */
function checkWarm(t: Test, shard: number, p: Probe, owner: string, what: string): void {
  t.same(p.problems, [], `${what}: shard ${shard}: exact samples from one gateway`);
  t.equal(p.servedBy, owner, `${what}: shard ${shard}: served by ${owner}`);
  const otherHits = [...p.hitsDelta].filter(([g, d]) => g !== owner && d !== 0);
  t.ok((p.hitsDelta.get(owner) ?? 0) > 0 && otherHits.length === 0, `${what}: shard ${shard}: cache hits grew on ${owner} only`, { hits: Object.fromEntries(p.hitsDelta) });
  t.ok([...p.getsDelta.values()].every((d) => d === 0), `${what}: shard ${shard}: no S3 GET`, { gets: Object.fromEntries(p.getsDelta) });
}

const owners = new Map<number, string>();

t.test('repeated reads of a block hit the same gateway and its cache', async (t) => {
  for (let s = 0; s < NUM_SHARDS; s++) {
    const first = await probe(s, cluster.gateways);
    t.same(first.problems, [], `shard ${s}: first read exact, from one gateway`);
    owners.set(s, first.servedBy);
  }
  const perGateway = new Map(cluster.gateways.map((g) => [g.name, [...owners].filter(([, o]) => o === g.name).map(([s]) => s)]));
  t.comment(`blocks per gateway: ${[...perGateway].map(([g, ss]) => `${g}: [${ss.join(',')}]`).join('; ')}`);
  t.ok([...perGateway.values()].filter((ss) => ss.length > 0).length >= 2, 'blocks are spread over more than one gateway');
  for (let round = 1; round <= 2; round++) {
    for (let s = 0; s < NUM_SHARDS; s++) checkWarm(t, s, await probe(s, cluster.gateways), owners.get(s)!, `read ${round + 1}`);
  }
});

t.test('killing a gateway moves only its blocks', async (t) => {
  const counts = cluster.gateways.map((g) => [...owners.values()].filter((o) => o === g.name).length);
  const victim = cluster.gateways[counts.indexOf(Math.max(...counts))]!;
  const survivors = cluster.gateways.filter((g) => g !== victim);
  t.comment(`SIGKILL ${victim.name} (pid ${victim.process.pid}), serving ${Math.max(...counts)} of ${NUM_SHARDS} blocks`);
  victim.process.kill('SIGKILL');
  const st = await victim.process.exited;
  t.equal(st.signal, 'SIGKILL', `${victim.name} is gone`);

  // before HAProxy's health check notices: HAProxy retries a refused connection on another gateway
  const right = await query.query(TENANT, allIds, range);
  t.same(compare(right.series, allIds, expected).problems, [], 'a query right after the kill succeeds, exact');

  await cluster.waitGatewayState(victim.name, 'DOWN');
  const states = await cluster.gatewayStates();
  t.same(
    Object.fromEntries(states),
    Object.fromEntries(cluster.gateways.map((g) => [g.name, g === victim ? 'DOWN' : 'UP'])),
    `HAProxy: ${victim.name} DOWN, the others UP`,
  );

  const moved = new Map<number, string>();
  for (let s = 0; s < NUM_SHARDS; s++) {
    const p = await probe(s, survivors);
    if (owners.get(s) === victim.name) {
      t.same(p.problems, [], `shard ${s} (was on ${victim.name}): exact, from one gateway`);
      t.not(p.servedBy, victim.name, `shard ${s} moved to ${p.servedBy}`);
      moved.set(s, p.servedBy);
    } else {
      checkWarm(t, s, p, owners.get(s)!, 'after the kill');
    }
  }
  t.equal(moved.size, counts[cluster.gateways.indexOf(victim)], `exactly ${victim.name}'s blocks moved`);
  for (const [s, owner] of moved) checkWarm(t, s, await probe(s, survivors), owner, 'moved block, read again');

  const all = await query.query(TENANT, allIds, range);
  const { problems, samples } = compare(all.series, allIds, expected);
  t.same(problems, [], 'every sample still comes back bit-exactly');
  t.equal(samples, totalSamples, 'all samples compared');
});
