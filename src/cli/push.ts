/**
 * `strata push <file>`: sends a samples file to the shard aggregators, then optionally seals
 * every window it touched. The file is a generator binary file (24-byte records
 * `u64 id | i64 ts | f64 value`, little-endian), Prometheus text exposition or OpenMetrics with
 * timestamps, or CSV (src/cli/push-input.ts); in the text formats the series id comes from the
 * label (`--id-label`) or column (`--id-column`) the user names. On a terminal (or with
 * `--progress`) it shows progress on stderr while it runs. The tenant's token comes from `--token-file`, `--token` or
 * `STRATA_TOKEN` (a flag beats the variable; prefer the file or the variable: command lines are
 * visible to other users); `--tls*` flags connect over TLS / mTLS.
 */
import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { status, type ServiceError } from '@grpc/grpc-js';
import type { Command } from 'commander';
import { WriterClient } from '../client/writer.js';
import { DEFAULT_CHUNK_SERIES } from '../client/writer-samples.js';
import { formatOfPath, PUSH_FORMATS, readPushInput, type PushFormat } from './push-input.js';
import type { ClientTlsConfig } from '../common/tls.js';
import { ErrorCode, InvalidArgumentError, StrataError } from '../errors.js';
import { DEFAULT_BLOCK_DURATION_MS, windowStartOf } from '../format/key.js';

interface PushFlags {
  tenant: string;
  numShards: string;
  target?: string;
  shardMap?: string;
  concurrency: string;
  batchSamples: string;
  chunkSamples: string;
  chunkSeries: string;
  retries: string;
  writeDeadlineMs: string;
  token?: string;
  tokenFile?: string;
  tls?: boolean;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
  seal?: boolean;
  blockDurationMs: string;
  format?: string;
  idLabel?: string;
  idColumn?: string;
  timestampColumn?: string;
  valueColumn?: string;
  progress?: boolean;
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

/** Environment variable holding the bearer token. */
export const TOKEN_ENV = 'STRATA_TOKEN';

/** The bearer token from `--token-file`, `--token` or STRATA_TOKEN (in that order), if any. */
export function tokenFrom(flags: { token?: string; tokenFile?: string }, env: NodeJS.ProcessEnv): string | undefined {
  if (flags.tokenFile !== undefined && flags.token !== undefined) throw new InvalidArgumentError('--token', 'give --token or --token-file, not both');
  if (flags.tokenFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(flags.tokenFile, 'utf8');
    } catch (err) {
      throw new InvalidArgumentError('--token-file', `cannot read ${flags.tokenFile} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    const token = text.trim();
    if (!token) throw new InvalidArgumentError('--token-file', `${flags.tokenFile} is empty`);
    return token;
  }
  if (flags.token !== undefined) return flags.token;
  const v = env[TOKEN_ENV];
  return v ? v : undefined;
}

/** Client TLS options from the `--tls*` flags (undefined: plaintext). */
export function tlsFrom(flags: { tls?: boolean; tlsCa?: string; tlsCert?: string; tlsKey?: string; tlsServerName?: string }): ClientTlsConfig | undefined {
  const any = flags.tls === true || flags.tlsCa !== undefined || flags.tlsCert !== undefined || flags.tlsKey !== undefined || flags.tlsServerName !== undefined;
  if (!any) return undefined;
  return {
    ...(flags.tlsCa !== undefined ? { caFile: flags.tlsCa } : {}),
    ...(flags.tlsCert !== undefined ? { certFile: flags.tlsCert } : {}),
    ...(flags.tlsKey !== undefined ? { keyFile: flags.tlsKey } : {}),
    ...(flags.tlsServerName !== undefined ? { serverName: flags.tlsServerName } : {}),
  };
}

/** Registers `strata push`. */
export function registerPushCommands(program: Command): void {
  program
    .command('push')
    .description('send a samples file (binary records, Prometheus/OpenMetrics text with timestamps, or CSV) to the shard aggregators')
    .argument('<file>', 'samples: .bin (24-byte records u64 id | i64 ts | f64 value), .prom/.txt, .om, .csv (or --format)')
    .option('--format <format>', `${PUSH_FORMATS.join(', ')} (default: by the file's extension, else bin)`)
    .option('--id-label <label>', 'prom / openmetrics: the label whose value (a decimal uint64) is the series id')
    .option('--id-column <column>', 'csv: the column holding the series id (a decimal uint64)')
    .option('--timestamp-column <column>', 'csv: the column holding the timestamp in ms', 'timestamp')
    .option('--value-column <column>', 'csv: the column holding the value', 'value')
    .option('--progress', 'show progress on stderr (default: when stderr is a terminal)')
    .option('--no-progress', 'never show progress')
    .requiredOption('--tenant <tenant>', 'tenant id')
    .requiredOption('--num-shards <n>', 'total number of shards')
    .option('--target <host:port>', 'one endpoint for all shards (the routing proxy, or a single aggregator)')
    .option('--shard-map <map>', 'static shard → address map, e.g. 0-3=10.0.0.1:7401,4-7=10.0.0.2:7401')
    .option('--concurrency <n>', 'requests in flight', '8')
    .option('--batch-samples <n>', 'samples per request', '500000')
    .option('--chunk-samples <n>', 'records read from the file at a time', '2000000')
    .option('--chunk-series <n>', 'distinct series regrouped and sent at a time (bounds memory for files of many short series)', String(DEFAULT_CHUNK_SERIES))
    .option('--retries <n>', 'attempts per request (UNAVAILABLE, RESOURCE_EXHAUSTED are retried)', '8')
    .option(
      '--write-deadline-ms <ms>',
      'deadline of one write request; a request spanning many windows (a backfill of months) takes longer, as each window is a WAL of its own: raise it, or lower --batch-samples',
      '60000',
    )
    .option('--token <token>', `the tenant's bearer token (or ${TOKEN_ENV}; visible in the process list: prefer --token-file or the variable)`)
    .option('--token-file <file>', "read the tenant's bearer token from a file")
    .option('--tls', "connect over TLS, verifying the server against the system's roots")
    .option('--tls-ca <file>', 'connect over TLS, verifying the server against this PEM CA bundle')
    .option('--tls-cert <file>', 'client certificate (PEM) for mTLS; needs --tls-key')
    .option('--tls-key <file>', 'client private key (PEM) for mTLS')
    .option('--tls-server-name <name>', 'name to check the server certificate against (default: the target host)')
    .option('--seal', 'seal every window the file touched once everything is sent')
    .option('--block-duration-ms <ms>', 'window length, to know which windows to seal', String(DEFAULT_BLOCK_DURATION_MS))
    .action(async (file: string, flags: PushFlags) => {
      try {
        await push(file, flags);
      } catch (err) {
        const grpc = err as Partial<ServiceError>;
        if (err instanceof InvalidArgumentError || (err instanceof StrataError && err.code === ErrorCode.CONFIG)) {
          process.stderr.write(`strata push: ${err.message}\n`);
          process.exitCode = 2;
        } else if (typeof grpc.code === 'number' && typeof grpc.details === 'string') {
          // the answer may come from a proxy in front of the aggregators (an HTTP 502 of nginx), not from one
          const attempts = (err as { attempts?: number }).attempts;
          // a write past its deadline may still be stored by the aggregator: writes are idempotent
          const hint =
            grpc.code === status.DEADLINE_EXCEEDED
              ? `; the aggregator may still have stored it (writes are idempotent: push the file again), and a request spanning many windows needs a longer --write-deadline-ms (now ${flags.writeDeadlineMs}) or a smaller --batch-samples`
              : '';
          process.stderr.write(`strata push: ${flags.target ?? 'the aggregator'} answered ${status[grpc.code]}: ${grpc.details}${attempts !== undefined && attempts > 1 ? ` (after ${attempts} attempts)` : ''}${hint}\n`);
          process.exitCode = 1;
        } else throw err;
      }
    });
}

/** Sends the file, then seals the windows it touched when asked to; prints a JSON summary. */
async function push(file: string, flags: PushFlags): Promise<void> {
  if ((flags.target === undefined) === (flags.shardMap === undefined)) throw new InvalidArgumentError('--target', 'give exactly one of --target and --shard-map');
  const blockDurationMs = positive('--block-duration-ms', flags.blockDurationMs);
  const format = (flags.format ?? formatOfPath(file)) as PushFormat;
  if (!PUSH_FORMATS.includes(format)) throw new InvalidArgumentError('--format', `"${flags.format}" is not one of ${PUSH_FORMATS.join(', ')}`);
  const idField = format === 'csv' ? flags.idColumn : flags.idLabel;
  const token = tokenFrom(flags, process.env);
  const progress = new Progress(flags.progress ?? process.stderr.isTTY === true, (await stat(file)).size);
  const tls = tlsFrom(flags);
  const client = new WriterClient({
    tenant: flags.tenant,
    numShards: positive('--num-shards', flags.numShards),
    ...(flags.target !== undefined ? { target: flags.target } : { shardTargets: parseShardMap(flags.shardMap!) }),
    ...(token !== undefined ? { authToken: token } : {}),
    ...(tls !== undefined ? { tls } : {}),
    concurrency: positive('--concurrency', flags.concurrency),
    maxBatchSamples: positive('--batch-samples', flags.batchSamples),
    retry: { maxAttempts: positive('--retries', flags.retries) },
    writeDeadlineMs: positive('--write-deadline-ms', flags.writeDeadlineMs),
    onRequest: (e) => progress.request(e.method === 'Write' && e.ok ? e.samples : 0, e.attempts - 1),
  });
  const t0 = performance.now();
  let samples = 0;
  let requests = 0;
  let retries = 0;
  const windows = new Set<bigint>();
  try {
    const input = readPushInput({
      path: file,
      format,
      ...(idField !== undefined ? { idField } : {}),
      ...(flags.timestampColumn !== undefined ? { timestampColumn: flags.timestampColumn } : {}),
      ...(flags.valueColumn !== undefined ? { valueColumn: flags.valueColumn } : {}),
      chunkSamples: positive('--chunk-samples', flags.chunkSamples),
      chunkSeries: positive('--chunk-series', flags.chunkSeries),
      onBytes: (b) => progress.read(b),
    });
    for await (const chunk of input) {
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
    progress.done();
    const sealed = [];
    if (flags.seal) {
      const sorted = [...windows].sort((a, b) => (a < b ? -1 : 1));
      for (const [i, w] of sorted.entries()) {
        progress.note(`sealing window ${w} (${i + 1} of ${sorted.length})`);
        sealed.push(...(await client.seal(w)));
      }
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

/**
 * Progress of a push on stderr: samples acknowledged, share of the file read, rate, requests and
 * retries. On a terminal one line redrawn at most every 250 ms; otherwise (forced with
 * `--progress`) a line per update. The wall clock is read for display only.
 */
class Progress {
  private samples = 0;
  private requests = 0;
  private retries = 0;
  private bytes = 0;
  private last = -Infinity;
  private readonly t0 = performance.now();
  private readonly tty = process.stderr.isTTY === true;

  constructor(
    private readonly on: boolean,
    private readonly size: number,
  ) {}

  read(bytes: number): void {
    this.bytes = bytes;
  }

  request(samples: number, retries: number): void {
    this.samples += samples;
    this.requests++;
    this.retries += retries;
    this.show(false);
  }

  /** The last update of the sending phase (always shown). */
  done(): void {
    this.show(true);
    if (this.on && this.tty) process.stderr.write('\n');
  }

  note(text: string): void {
    if (this.on) process.stderr.write(`${text}\n`);
  }

  private show(force: boolean): void {
    if (!this.on) return;
    const now = performance.now();
    if (!force && now - this.last < 250) return;
    this.last = now;
    const pct = this.size > 0 ? Math.floor((100 * this.bytes) / this.size) : 100;
    const rate = Math.round(this.samples / Math.max((now - this.t0) / 1000, 0.001));
    const line = `pushed ${this.samples.toLocaleString('en-US')} samples (${pct}% of the file read), ${rate.toLocaleString('en-US')} samples/s, ${this.requests} requests, ${this.retries} retries`;
    process.stderr.write(this.tty ? `\r${line}\x1b[K` : `${line}\n`);
  }
}
