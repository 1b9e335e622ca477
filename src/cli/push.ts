/**
 * `strata push <samples.bin>`: sends a generator binary file (24-byte records
 * `u64 id | i64 ts | f64 value`, little-endian) to the shard aggregators, then optionally seals
 * every window it touched.
 */
import { status, type ServiceError } from '@grpc/grpc-js';
import type { Command } from 'commander';
import { WriterClient } from '../client/writer.js';
import { readSampleFile } from '../client/writer-samples.js';
import { InvalidArgumentError } from '../errors.js';
import { DEFAULT_BLOCK_DURATION_MS, windowStartOf } from '../format/key.js';

interface PushFlags {
  tenant: string;
  numShards: string;
  target?: string;
  shardMap?: string;
  concurrency: string;
  batchSamples: string;
  chunkSamples: string;
  retries: string;
  authToken?: string;
  seal?: boolean;
  blockDurationMs: string;
}

function positive(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(name, `"${v}" is not a positive integer`);
  return n;
}

/** Parses `0=host:port,1=host:port` (shard ranges allowed: `0-3=host:port`). */
export function parseShardMap(spec: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const part of spec.split(',').filter((p) => p.trim() !== '')) {
    const m = /^\s*(\d+)(?:-(\d+))?=(.+?)\s*$/.exec(part);
    if (!m) throw new InvalidArgumentError('--shard-map', `"${part}" is not shard=host:port or first-last=host:port`);
    const first = Number(m[1]);
    const last = m[2] === undefined ? first : Number(m[2]);
    for (let s = first; s <= last; s++) out.set(s, m[3]!);
  }
  return out;
}

/** Registers `strata push`. */
export function registerPushCommands(program: Command): void {
  program
    .command('push')
    .description('send a generator binary samples file (24-byte records: u64 id | i64 ts | f64 value) to the shard aggregators')
    .argument('<samples.bin>', 'file of 24-byte little-endian records')
    .requiredOption('--tenant <tenant>', 'tenant id')
    .requiredOption('--num-shards <n>', 'total number of shards')
    .option('--target <host:port>', 'one endpoint for all shards (the routing proxy, or a single aggregator)')
    .option('--shard-map <map>', 'static shard → address map, e.g. 0-3=10.0.0.1:7401,4-7=10.0.0.2:7401')
    .option('--concurrency <n>', 'requests in flight', '8')
    .option('--batch-samples <n>', 'samples per request', '500000')
    .option('--chunk-samples <n>', 'records read from the file at a time', '2000000')
    .option('--retries <n>', 'attempts per request (UNAVAILABLE, RESOURCE_EXHAUSTED are retried)', '8')
    .option('--auth-token <token>', 'bearer token')
    .option('--seal', 'seal every window the file touched once everything is sent')
    .option('--block-duration-ms <ms>', 'window length, to know which windows to seal', String(DEFAULT_BLOCK_DURATION_MS))
    .action(async (file: string, flags: PushFlags) => {
      try {
        await push(file, flags);
      } catch (err) {
        const grpc = err as Partial<ServiceError>;
        if (err instanceof InvalidArgumentError) {
          process.stderr.write(`strata push: ${err.message}\n`);
          process.exitCode = 2;
        } else if (typeof grpc.code === 'number' && typeof grpc.details === 'string') {
          process.stderr.write(`strata push: the aggregator answered ${status[grpc.code]}: ${grpc.details}\n`);
          process.exitCode = 1;
        } else throw err;
      }
    });
}

/** Sends the file, then seals the windows it touched when asked to; prints a JSON summary. */
async function push(file: string, flags: PushFlags): Promise<void> {
  if ((flags.target === undefined) === (flags.shardMap === undefined)) throw new InvalidArgumentError('--target', 'give exactly one of --target and --shard-map');
  const blockDurationMs = positive('--block-duration-ms', flags.blockDurationMs);
  const client = new WriterClient({
    tenant: flags.tenant,
    numShards: positive('--num-shards', flags.numShards),
    ...(flags.target !== undefined ? { target: flags.target } : { shardTargets: parseShardMap(flags.shardMap!) }),
    ...(flags.authToken !== undefined ? { authToken: flags.authToken } : {}),
    concurrency: positive('--concurrency', flags.concurrency),
    maxBatchSamples: positive('--batch-samples', flags.batchSamples),
    retry: { maxAttempts: positive('--retries', flags.retries) },
  });
  const t0 = performance.now();
  let samples = 0;
  let requests = 0;
  let retries = 0;
  const windows = new Set<bigint>();
  try {
    for await (const chunk of readSampleFile(file, positive('--chunk-samples', flags.chunkSamples))) {
      for (const s of chunk) {
        let min = s.timestamps[0]!;
        let max = min;
        for (const ts of s.timestamps) {
          if (ts < min) min = ts;
          if (ts > max) max = ts;
        }
        for (let w = windowStartOf(min, blockDurationMs); w <= max; w += BigInt(blockDurationMs)) windows.add(w);
      }
      const r = await client.write(chunk);
      samples += r.samples;
      requests += r.requests;
      retries += r.retries;
    }
    const seconds = (performance.now() - t0) / 1000;
    const sealed = [];
    if (flags.seal) {
      for (const w of [...windows].sort((a, b) => (a < b ? -1 : 1))) sealed.push(...(await client.seal(w)));
    }
    process.stdout.write(
      `${JSON.stringify({
        samples,
        requests,
        retries,
        seconds: Number(seconds.toFixed(3)),
        samples_per_s: Math.round(samples / seconds),
        windows: [...windows].map(String),
        blocks: sealed.map((b) => ({ key: b.key, series: b.series, samples: b.samples, bytes: b.bytes, replaced: b.replaced })),
      })}\n`,
    );
  } finally {
    client.close();
  }
}
