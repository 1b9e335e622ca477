/**
 * `npm run bench -- format [--data=DIR] [--reps=N] [--real=DIR] [--peers=false]`: block format
 * figures on the generator's full dataset (10,000 series x 4 h x 15 s, seed 42): bytes per sample
 * (whole block and per series type), single-core encode and decode rates, range reads for one
 * series cold and warm, and an exact round trip through a block file. Then the bytes per sample of
 * two more generator runs (50 % of scrapes jittered; one scrape every 48 s) and of the shared real
 * dataset (written as the service would: 16 shards, 4 h windows; `real_hashed_ids_bytes_per_sample`:
 * the same with every id replaced by a 64-bit hash of it, as ids made from label sets are), and, on
 * the same real data, of Prometheus and VictoriaMetrics (bench/peers.ts).
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockReader } from '../src/block/reader.js';
import { fileSink, fileSource } from '../src/block/source.js';
import { BlockWriter } from '../src/block/writer.js';
import { codecRates } from './codec-rates.js';
import { loadDataset, type Series } from './dataset.js';
import { measurePrometheus, measureVictoriaMetrics } from './peers.js';
import { loadReal, REAL_DATA_DIR } from './real.js';

const WINDOW_MS = 4 * 3600 * 1000;

function flag(argv: string[], name: string, def: string): string {
  const f = argv.find((a) => a.startsWith(`--${name}=`));
  return f ? f.slice(name.length + 3) : def;
}

/** Shards of the real dataset's blocks, as in the measurement through `strata serve`. */
const REAL_SHARDS = 16;
const STALE_MARKER = 0x7ff0000000000002n;

function sameSamples(a: { timestamps: BigInt64Array; values: Float64Array }, b: Series): boolean {
  if (a.timestamps.length !== b.timestamps.length) return false;
  for (let i = 0; i < a.timestamps.length; i++) if (a.timestamps[i] !== b.timestamps[i]) return false;
  const x = new Uint8Array(a.values.buffer, a.values.byteOffset, a.values.byteLength);
  const y = new Uint8Array(b.values.buffer, b.values.byteOffset, b.values.byteLength);
  return Buffer.compare(x, y) === 0;
}

/**
 * Writes `series` as the blocks of `numShards` shards and 4-hour windows (a series crossing a
 * window boundary is split), reads every series back and compares it bit for bit.
 */
async function writeBlocks(dir: string, series: readonly Series[], numShards: number): Promise<{ bytes: number; blocks: number; exact: boolean }> {
  const groups = new Map<string, { shard: number; windowStart: bigint; parts: Series[] }>();
  const win = BigInt(WINDOW_MS);
  for (const s of series) {
    const shard = Number(s.id % BigInt(numShards));
    let a = 0;
    while (a < s.timestamps.length) {
      const t0 = s.timestamps[a]!;
      const windowStart = t0 - (((t0 % win) + win) % win);
      let b = a;
      while (b < s.timestamps.length && s.timestamps[b]! < windowStart + win) b++;
      const key = `${windowStart}/${shard}`;
      const g = groups.get(key) ?? { shard, windowStart, parts: [] };
      g.parts.push({ id: s.id, type: s.type, timestamps: s.timestamps.subarray(a, b), values: s.values.subarray(a, b) });
      groups.set(key, g);
      a = b;
    }
  }
  let bytes = 0;
  let exact = true;
  for (const [key, g] of groups) {
    const path = join(dir, `${key.replace('/', '-')}.block`);
    const writer = new BlockWriter(await fileSink(path), {
      tenant: 'bench', shard: g.shard, numShards, windowStart: g.windowStart, windowEnd: g.windowStart + win,
    }, { expectedSeries: g.parts.length });
    for (const s of g.parts) await writer.add(s.id, s);
    bytes += (await writer.finish()).size;
    const reader = await BlockReader.open(fileSource(path));
    for (const s of g.parts) {
      const got = await reader.readSeries(s.id);
      exact &&= !!got && sameSamples(got, s);
    }
    rmSync(path);
  }
  return { bytes, blocks: groups.size, exact };
}

/** SplitMix64's finalizer: a 64-bit hash of `x`, as a series id made from a hash of labels is. */
function splitmix64(x: bigint): bigint {
  const M = (1n << 64n) - 1n;
  let z = (x + 0x9e3779b97f4a7c15n) & M;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
  return z ^ (z >> 31n);
}

/**
 * The stale markers (NaN 0x7ff0000000000002) and the NaNs of any payload among the values. The
 * shared real dataset has none of the first: it was read back through Prometheus' query API,
 * which leaves stale samples out of range selections; its NaNs are all 0x7ff8000000000000, the
 * quantiles of summaries without observations.
 */
function countNaNs(series: readonly Series[]): { stale: number; nan: number } {
  let stale = 0;
  let nan = 0;
  for (const s of series) {
    for (const b of new BigUint64Array(s.values.buffer, s.values.byteOffset, s.values.length)) {
      if (b === STALE_MARKER) stale++;
      if ((b & 0x7ff0000000000000n) === 0x7ff0000000000000n && (b & 0xfffffffffffffn) !== 0n) nan++;
    }
  }
  return { stale, nan };
}

export async function main(argv: string[]): Promise<void> {
  const dir = flag(argv, 'data', join('data', 'bench', 'full'));
  const reps = Number(flag(argv, 'reps', '5'));
  const ds = loadDataset(dir, ['--size=full', '--seed=42', '--start=2026-11-01T00:00:00Z']);
  const total = ds.sampleCount;
  console.log(`dataset ${dir}: ${ds.series.length} series, ${total} samples`);

  // encode / decode throughput on one core (a worker thread of its own: bench/codec-rates.ts)
  const rates = await codecRates(ds.series, reps);
  const encodeRate = rates.encode;
  const decodeRate = rates.decode;
  const decodeIntoRate = rates.decodeInto;

  // one block for the whole dataset, written to a file
  const tmp = mkdtempSync(join(tmpdir(), 'strata-bench-'));
  const path = join(tmp, 'full.block');
  const windowStart = BigInt(Math.floor(ds.startMs / WINDOW_MS) * WINDOW_MS);
  const writer = new BlockWriter(await fileSink(path), {
    tenant: 'bench', shard: 0, numShards: 1, windowStart, windowEnd: windowStart + BigInt(WINDOW_MS),
  }, { expectedSeries: ds.series.length });
  const tw = process.hrtime.bigint();
  for (const s of ds.series) await writer.add(s.id, s);
  const written = await writer.finish();
  const writeSeconds = Number(process.hrtime.bigint() - tw) / 1e9;
  const size = statSync(path).size;
  if (size !== written.size) throw new Error(`block is ${size} bytes, writer reported ${written.size}`);

  // per type: run bytes plus the type's share (by series) of index, index of index and footer
  const reader = await BlockReader.open(fileSource(path));
  const overhead = size - written.footer.samples.length;
  const byType = new Map<string, { bytes: number; samples: number; series: number }>();
  const typeOf = new Map(ds.series.map((s) => [s.id, s]));
  let exact = true;
  for await (const loc of reader.series()) {
    const s = typeOf.get(loc.id)!;
    const t = byType.get(s.type) ?? { bytes: 0, samples: 0, series: 0 };
    t.bytes += loc.length;
    t.samples += loc.sampleCount;
    t.series++;
    byType.set(s.type, t);
    if (!sameSamples(await reader.readRun(loc), s)) exact = false;
  }
  let seen = 0;
  for (const t of byType.values()) seen += t.series;
  exact &&= seen === ds.series.length;

  // range reads for one series: cold (fresh reader) then warm (same page known)
  const probe = ds.series[Math.floor(ds.series.length / 2)]!;
  const neighbour = ds.series[Math.floor(ds.series.length / 2) + 1]!;
  const cold = await BlockReader.open(fileSource(path));
  const got = await cold.readSeries(probe.id);
  const coldReads = cold.reads;
  const before = cold.reads;
  const got2 = await cold.readSeries(neighbour.id);
  const warmReads = cold.reads - before;
  exact &&= !!got && sameSamples(got, probe) && !!got2 && sameSamples(got2, neighbour);

  const result: Record<string, number | boolean> = {
    bytes_per_sample: size / total,
  };
  // the same generator with 50 % of scrapes jittered, and with one scrape every 48 s
  const root = join(dir, '..');
  const variants: [string, string, string[]][] = [
    ['jitter50', 'jitter50', ['--jitter=0.5']],
    ['interval48', 'interval48', ['--interval=48']],
  ];
  const variantLines: string[] = [];
  for (const [key, sub, extra] of variants) {
    const v = loadDataset(join(root, sub), ['--size=full', '--seed=42', '--start=2026-11-01T00:00:00Z', ...extra]);
    const w = await writeBlocks(tmp, v.series, 1);
    exact &&= w.exact;
    result[`${key}_bytes_per_sample`] = w.bytes / v.sampleCount;
    variantLines.push(`${key} (${extra.join(' ')}): ${(w.bytes / v.sampleCount).toFixed(3)} bytes/sample, ${v.sampleCount} samples, round trip exact: ${w.exact}`);
  }
  // the shared real dataset, as it is, and the peers on the same samples
  const realDir = flag(argv, 'real', REAL_DATA_DIR);
  const real = loadReal(realDir);
  const rw = await writeBlocks(tmp, real.series, REAL_SHARDS);
  // the same samples with the ids a label-set hash gives: spread over the uint64 range
  const hashed = real.series.map((s) => ({ ...s, id: splitmix64(s.id) })).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const hw = await writeBlocks(tmp, hashed, REAL_SHARDS);
  rmSync(tmp, { recursive: true, force: true });
  exact &&= rw.exact && hw.exact;
  result['real_bytes_per_sample'] = rw.bytes / real.sampleCount;
  result['real_hashed_ids_bytes_per_sample'] = hw.bytes / real.sampleCount;
  const nans = countNaNs(real.series);
  result['real_stale_markers'] = nans.stale;
  result['real_nan_values'] = nans.nan;
  if (flag(argv, 'peers', 'true') !== 'false') {
    const prom = await measurePrometheus(real.records, real.labels);
    const vm = await measureVictoriaMetrics(real.series, real.labels);
    Object.assign(result, {
      real_prometheus_chunks_bytes_per_sample: prom.chunksBytes / real.sampleCount,
      real_prometheus_blocks_bytes_per_sample: prom.blocksBytes / real.sampleCount,
      real_vm_bytes_per_sample: vm.dataBytes / real.sampleCount,
      real_vm_values_changed: vm.valuesChanged,
      real_vm_samples_dropped: vm.samplesDropped,
    });
  }
  console.log(`block: ${size} bytes (${written.footer.samples.length} samples section, ${overhead} index+ioi+footer, ${written.footer.pageCount} pages), written in ${writeSeconds.toFixed(2)} s`);
  for (const [type, t] of [...byType.entries()].sort()) {
    const share = (overhead * t.series) / ds.series.length;
    const bps = (t.bytes + share) / t.samples;
    result[`bytes_per_sample_${type}`] = bps;
    console.log(`  ${type.padEnd(8)} ${bps.toFixed(3)} bytes/sample (${t.series} series)`);
  }
  Object.assign(result, {
    encode_samples_per_s: Math.round(encodeRate),
    decode_samples_per_s: Math.round(decodeRate),
    decode_into_samples_per_s: Math.round(decodeIntoRate),
    decode_after_encode_samples_per_s: Math.round(rates.decodeAfterEncode),
    range_reads_cold: coldReads,
    range_reads_warm: warmReads,
    roundtrip_exact: exact,
  });
  console.log(`encode ${(encodeRate / 1e6).toFixed(2)} M samples/s, decode ${(decodeRate / 1e6).toFixed(2)} M samples/s into fresh arrays per run, ${(decodeIntoRate / 1e6).toFixed(2)} M samples/s into one allocation (one core, a worker thread of its own, median of ${reps} after a warm-up); ${(rates.decodeAfterEncode / 1e6).toFixed(2)} M samples/s into fresh arrays on the thread that has just encoded`);
  console.log(`one-series read: ${coldReads} range reads cold, ${warmReads} warm; round trip exact: ${exact}`);
  for (const line of variantLines) console.log(line);
  console.log(`real data ${realDir}: ${real.series.length} series, ${real.sampleCount} samples (${result['real_stale_markers']} stale markers, ${result['real_nan_values']} NaNs of any payload) in ${rw.blocks} blocks of ${REAL_SHARDS} shards: ${(rw.bytes / real.sampleCount).toFixed(3)} bytes/sample, round trip exact: ${rw.exact}`);
  console.log(`  the same with ids hashed over the uint64 range (splitmix64): ${(hw.bytes / real.sampleCount).toFixed(3)} bytes/sample, round trip exact: ${hw.exact}`);
  if (result['real_vm_bytes_per_sample'] !== undefined) {
    console.log(`  Prometheus (promtool): ${(result['real_prometheus_chunks_bytes_per_sample'] as number).toFixed(3)} bytes/sample in chunks, ${(result['real_prometheus_blocks_bytes_per_sample'] as number).toFixed(3)} whole blocks`);
    console.log(`  VictoriaMetrics: ${(result['real_vm_bytes_per_sample'] as number).toFixed(3)} bytes/sample in data parts; ${result['real_vm_values_changed']} values changed, ${result['real_vm_samples_dropped']} samples dropped`);
  }
  for (const k of Object.keys(result)) if (typeof result[k] === 'number' && !Number.isInteger(result[k])) result[k] = Number((result[k] as number).toFixed(4));
  console.log(JSON.stringify(result));
}
