/**
 * `strata query --endpoint HOST:PORT --tenant T --series 1,2 --start S --end E`: reads samples
 * through the storage gateways with the query client and prints them, one sample per line:
 * `<series>\t<timestampMs>\t<value>` (NaN with its bits, -0 kept), or with --json one JSON object
 * per sample with the exact value bits. The tenant's token comes from `--token-file`, `--token` or
 * `STRATA_TOKEN` (as for `strata push`); `--tls*` flags connect over TLS / mTLS.
 */
import type { Command } from 'commander';
import { DEFAULT_FUTURE_HORIZON_MS, DEFAULT_MAX_BLOCKS_PER_QUERY, QueryClient, QueryError, type ReadEncoding } from '../client/query.js';
import { InvalidArgumentError, StrataError } from '../errors.js';
import { tlsFrom, tokenFrom, TOKEN_ENV } from './push.js';
import { DEFAULT_BLOCK_DURATION_MS } from '../format/key.js';

interface QueryFlags {
  endpoint: string[];
  tenant: string;
  series: string;
  start: string;
  end: string;
  numShards: string;
  blockDurationMs: string;
  deadlineMs: string;
  concurrency: string;
  futureHorizonMs: string;
  maxBlocksPerQuery: string;
  encoding?: string;
  token?: string;
  tokenFile?: string;
  tls?: boolean;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
  json?: boolean;
}

/** A time given as integer ms since the epoch or as an ISO-8601 date. */
export function parseTime(field: string, s: string): bigint {
  if (/^-?\d+$/.test(s)) return BigInt(s);
  const ms = Date.parse(s);
  if (Number.isNaN(ms)) throw new InvalidArgumentError(field, `"${s}" is neither ms since the epoch nor an ISO-8601 date`);
  return BigInt(ms);
}

function parseIds(s: string): bigint[] {
  return s
    .split(',')
    .filter((x) => x.trim() !== '')
    .map((x) => {
      if (!/^\d+$/.test(x.trim())) throw new InvalidArgumentError('series', `"${x}" is not a series id`);
      return BigInt(x.trim());
    });
}

function positive(field: string, s: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(field, `"${s}" is not a positive integer`);
  return n;
}

function nonNegative(field: string, s: string): number {
  const n = Number(s);
  if (!/^\d+$/.test(s.trim()) || !Number.isSafeInteger(n)) throw new InvalidArgumentError(field, `"${s}" is not an integer >= 0`);
  return n;
}

/** A value as text: shortest round-trip form, NaN with its payload bits, -0 kept. */
export function formatValue(v: number, bits: bigint): string {
  if (Number.isNaN(v)) return `NaN(0x${bits.toString(16).padStart(16, '0')})`;
  if (Object.is(v, -0)) return '-0';
  return String(v);
}

/** Registers `strata query`. */
export function registerQueryCommands(program: Command): void {
  program
    .command('query')
    .description('read samples of series ids in [start, end) through the storage gateways')
    .requiredOption('--endpoint <host:port>', 'Envoy or a gateway; repeat (or comma-separate) for a static list', (v: string, acc: string[]) => [...acc, ...v.split(',').filter((x) => x !== '')], [] as string[])
    .requiredOption('--tenant <tenant>', 'tenant id')
    .requiredOption('--series <ids>', 'comma-separated series ids')
    .requiredOption('--start <time>', 'range start (inclusive): ms since the epoch or ISO-8601')
    .requiredOption('--end <time>', 'range end (exclusive): ms since the epoch or ISO-8601')
    .option('--num-shards <n>', 'shard count of the layout', '1')
    .option('--block-duration-ms <ms>', 'window length', String(DEFAULT_BLOCK_DURATION_MS))
    .option('--deadline-ms <ms>', 'deadline of the query', '30000')
    .option('--concurrency <n>', 'block requests in flight', '32')
    .option('--future-horizon-ms <ms>', 'how far ahead of this clock blocks can hold samples (the aggregators\' maxSampleFutureMs and clock skew): later windows are not read', String(DEFAULT_FUTURE_HORIZON_MS))
    .option('--max-blocks-per-query <n>', 'block requests the query may need at most; more is refused at once', String(DEFAULT_MAX_BLOCKS_PER_QUERY))
    .option('--encoding <enc>', 'raw or runs (default: the client default)')
    .option('--token <token>', `the tenant's bearer token (or ${TOKEN_ENV}; visible in the process list: prefer --token-file or the variable)`)
    .option('--token-file <file>', "read the tenant's bearer token from a file")
    .option('--tls', "connect over TLS, verifying the server against the system's roots")
    .option('--tls-ca <file>', 'connect over TLS, verifying the server against this PEM CA bundle')
    .option('--tls-cert <file>', 'client certificate (PEM) for mTLS; needs --tls-key')
    .option('--tls-key <file>', 'client private key (PEM) for mTLS')
    .option('--tls-server-name <name>', 'name to check the server certificate against (default: the endpoint host)')
    .option('--json', 'print JSON lines with the exact value bits')
    .action(async (f: QueryFlags) => {
      try {
        await query(f);
      } catch (err) {
        if (err instanceof StrataError) {
          process.stderr.write(`strata query: ${err.message}\n`);
          process.exitCode = 2;
        } else if (err instanceof QueryError) {
          process.stderr.write(`strata query: ${err.message}\n`);
          process.exitCode = 1;
        } else throw err;
      }
    });
}

/** Runs the query and prints the samples. */
async function query(f: QueryFlags): Promise<void> {
  if (f.encoding !== undefined && f.encoding !== 'raw' && f.encoding !== 'runs') throw new InvalidArgumentError('encoding', `"${f.encoding}" is not raw or runs`);
  const token = tokenFrom(f, process.env);
  const tls = tlsFrom(f);
  const client = new QueryClient({
    endpoints: f.endpoint,
    numShards: positive('num-shards', f.numShards),
    blockDurationMs: positive('block-duration-ms', f.blockDurationMs),
    deadlineMs: positive('deadline-ms', f.deadlineMs),
    concurrency: positive('concurrency', f.concurrency),
    futureHorizonMs: nonNegative('future-horizon-ms', f.futureHorizonMs),
    maxBlocksPerQuery: positive('max-blocks-per-query', f.maxBlocksPerQuery),
    ...(f.encoding !== undefined ? { encoding: f.encoding as ReadEncoding } : {}),
    ...(token !== undefined ? { token } : {}),
    ...(tls !== undefined ? { tls } : {}),
  });
  try {
    const start = parseTime('start', f.start);
    const end = parseTime('end', f.end);
    if (end < start) throw new InvalidArgumentError('end', `${end} is before --start ${start}: the range [start, end) would be empty the wrong way round`);
    const r = await client.query(f.tenant, parseIds(f.series), { start, end });
    const out: string[] = [];
    for (const s of r.series) {
      const bits = new BigUint64Array(s.values.buffer, s.values.byteOffset, s.values.length);
      for (let i = 0; i < s.timestamps.length; i++) {
        const v = s.values[i]!;
        const b = bits[i]!;
        if (f.json) {
          out.push(JSON.stringify({ series: s.id.toString(), t: s.timestamps[i]!.toString(), v: Number.isFinite(v) && !Object.is(v, -0) ? v : formatValue(v, b), bits: b.toString(16).padStart(16, '0') }));
        } else out.push(`${s.id}\t${s.timestamps[i]}\t${formatValue(v, b)}`);
        if (out.length >= 4096) {
          process.stdout.write(`${out.join('\n')}\n`);
          out.length = 0;
        }
      }
    }
    if (out.length > 0) process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    client.close();
  }
}
