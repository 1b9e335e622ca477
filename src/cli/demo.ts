/**
 * `strata demo`: the quickstart against a running `strata serve` (or any aggregator + gateway):
 * pushes a small synthetic dataset (counters, 2-decimal gauges, constants, full-entropy floats
 * on a jittered 15 s grid) for the last complete 4-hour window, seals the window, queries every
 * series back through the gateway and checks each sample bit for bit, printing what happened.
 */
import type { Command } from 'commander';
import { QueryClient } from '../client/query.js';
import { WriterClient } from '../client/writer.js';
import { DEFAULT_BLOCK_DURATION_MS, windowStartOf } from '../format/key.js';
import { synth } from '../common/series-gen.js';

export interface DemoFlags {
  write: string;
  read: string;
  tenant: string;
  series: string;
  numShards: string;
  token?: string;
}

function sameBits(a: Float64Array, b: Float64Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

async function demo(flags: DemoFlags): Promise<void> {
  const count = Number(flags.series);
  const numShards = Number(flags.numShards);
  if (!Number.isInteger(count) || count < 1) throw new Error(`--series must be a positive integer, got ${flags.series}`);
  const token = flags.token ?? process.env['STRATA_TOKEN'];
  const window = windowStartOf(BigInt(Date.now()) - BigInt(DEFAULT_BLOCK_DURATION_MS), DEFAULT_BLOCK_DURATION_MS);
  const perSeries = DEFAULT_BLOCK_DURATION_MS / 15000;
  const series = Array.from({ length: count }, (_, i) => ({ id: BigInt(i + 1), ...synth(i, perSeries, window) }));
  const writer = new WriterClient({ tenant: flags.tenant, numShards, target: flags.write, ...(token ? { authToken: token } : {}) });
  const reader = new QueryClient({ endpoints: [flags.read], numShards, ...(token ? { token } : {}) });
  try {
    const t0 = performance.now();
    const summary = await writer.write(series);
    const t1 = performance.now();
    console.log(`pushed ${count} series, ${count * perSeries} samples of tenant "${flags.tenant}" for window ${new Date(Number(window)).toISOString()} to ${flags.write} in ${(t1 - t0).toFixed(0)} ms (${JSON.stringify(summary)})`);
    const sealed = await writer.seal(window);
    const t2 = performance.now();
    const blocks = sealed.filter((b) => b.samples > 0);
    const bytes = blocks.reduce((a, b) => a + b.bytes, 0);
    const samples = blocks.reduce((a, b) => a + b.samples, 0);
    console.log(`sealed: ${blocks.length} blocks, ${samples} samples, ${bytes} bytes (${(bytes / Math.max(samples, 1)).toFixed(3)} bytes/sample) in ${(t2 - t1).toFixed(0)} ms`);
    const res = await reader.query(flags.tenant, series.map((s) => s.id), { start: window, end: window + BigInt(DEFAULT_BLOCK_DURATION_MS) });
    const t3 = performance.now();
    const byId = new Map(res.series.map((s) => [s.id, s]));
    let exact = 0;
    for (const s of series) {
      const got = byId.get(s.id);
      if (got && got.timestamps.length === s.timestamps.length && got.timestamps.every((t, k) => t === s.timestamps[k]) && sameBits(got.values, s.values)) exact++;
    }
    console.log(`queried ${count} series back from ${flags.read} in ${(t3 - t2).toFixed(0)} ms with ${res.requests} block requests: ${exact} of ${count} identical bit for bit`);
    const probe = series[0]!;
    console.log(`series ${probe.id}: first samples ${[0, 1, 2].map((k) => `${probe.timestamps[k]}=${probe.values[k]}`).join(', ')}`);
    if (exact !== count) process.exitCode = 1;
  } finally {
    writer.close();
    reader.close();
  }
}

/** Registers `strata demo`. */
export function registerDemoCommands(program: Command): void {
  program
    .command('demo')
    .description('push a small generated dataset to a running strata, seal it and query it back')
    .option('--write <host:port>', 'write endpoint (aggregator or its proxy)', '127.0.0.1:7401')
    .option('--read <host:port>', 'read endpoint (gateway or Envoy)', '127.0.0.1:7402')
    .option('--tenant <id>', 'tenant id', 'demo')
    .option('--token <token>', 'bearer token of the tenant (or STRATA_TOKEN)')
    .option('--series <n>', 'number of series', '1000')
    .option('--num-shards <n>', 'number of shards of the server', '16')
    .action(demo);
}
