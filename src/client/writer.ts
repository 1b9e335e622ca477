/**
 * Writer client for batch nodes: sends samples to the shard aggregators (proto/write.proto).
 *
 * - groups series by shard (`id % numShards`) and cuts each shard's series into requests of at
 *   most `maxBatchSamples` samples (a series longer than that is split across requests) and
 *   `maxBatchSeries` series;
 * - sets `x-strata-tenant`, `x-strata-shard` and, when given, `authorization: Bearer <token>`;
 * - connects in plaintext, or over TLS / mTLS with `tls` (src/common/tls.ts);
 * - sends to one endpoint (a proxy routing on x-strata-shard) or to a static shard → address map;
 * - keeps at most `concurrency` requests in flight; a part of a series whose time range overlaps
 *   an earlier part's, in another request, is sent once that request succeeded, so a repeated
 *   (series, timestamp) keeps the value later in the input (parts in time order never wait);
 * - retries UNAVAILABLE and RESOURCE_EXHAUSTED (and INTERNAL for a stream cut without a status:
 *   `Received RST_STREAM`) with exponential backoff and full jitter (writes
 *   are idempotent: the aggregator keeps the last value of a repeated (series, timestamp));
 * - seals a window on every shard once all batch nodes are done with it.
 *
 * A failed call rejects with grpc-js's ServiceError (`code`: the gRPC status), extended as a
 * {@link WriteCallError}: `strataCode` is the server's `ERR_STRATA_*` code (docs/errors.md) and
 * `attempts` the attempts made.
 */
import { endianness } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { AUTH_HEADER, bearerHeader, errorCodeOfTrailers, SHARD_HEADER, TENANT_HEADER } from '../api/headers.js';
import { writerServiceDefinition, type WriterMethods } from '../api/services.js';
import { backoffDelayMs, type RetryPolicy } from '../common/backoff.js';
import { clientChannelSecurity, type ClientChannelSecurity, type ClientTlsConfig } from '../common/tls.js';
import { deferred } from '../common/deferred.js';
import { InvalidArgumentError } from '../errors.js';
import { validateTenant } from '../format/key.js';

/** Samples of one series: int64 ms timestamps and float64 values of equal length. */
export interface SeriesData {
  readonly id: bigint;
  readonly timestamps: BigInt64Array;
  readonly values: Float64Array;
}

/** A failed writer call: grpc-js's ServiceError plus what the client adds. */
export interface WriteCallError extends ServiceError {
  /** The server's `ERR_STRATA_*` code (trailer `strata-error-code`); undefined when none was sent. */
  strataCode?: string;
  /** Attempts made, retries included. */
  attempts?: number;
}

/** Retry policy of the client. */
export interface WriterRetryPolicy {
  /** Attempts per request, the first included (default 8). */
  readonly maxAttempts?: number;
  readonly baseDelayMs?: number;
  readonly maxDelayMs?: number;
}

/** What one request cost, for callers' statistics. */
export interface RequestEvent {
  readonly method: 'Write' | 'Seal';
  readonly shard: number;
  readonly samples: number;
  readonly attempts: number;
  /** From the first attempt to the final answer. */
  readonly durationMs: number;
  readonly ok: boolean;
}

/** Options of a {@link WriterClient}. */
export interface WriterClientOptions {
  readonly tenant: string;
  readonly numShards: number;
  /** One endpoint for every shard (`host:port`, e.g. the routing proxy). */
  readonly target?: string;
  /** Or the address of each shard's aggregator. */
  readonly shardTargets?: ReadonlyMap<number, string>;
  /** Bearer token of the tenant (sent as `authorization: Bearer <token>`). */
  readonly authToken?: string;
  /** Connect over TLS (`{}`: verify the server against the system's roots); plaintext without. */
  readonly tls?: ClientTlsConfig;
  /** Requests in flight at once (default 8). */
  readonly concurrency?: number;
  /** Samples per write request (default 500,000 = 8 MB of payload). */
  readonly maxBatchSamples?: number;
  /**
   * Series per write request (default 50,000): requests of short series stay under the
   * aggregators' `maxSeriesPerRequest` (100,000 by default) and their per-series cost.
   */
  readonly maxBatchSeries?: number;
  readonly retry?: WriterRetryPolicy;
  /** Deadline of one write attempt (default 60 s) and of one seal attempt (default 10 min). */
  readonly writeDeadlineMs?: number;
  readonly sealDeadlineMs?: number;
  /** Called after every request (success or final failure). */
  readonly onRequest?: (e: RequestEvent) => void;
}

/** A block reported by a seal. */
export interface SealedBlock {
  readonly tenant: string;
  readonly shard: number;
  readonly windowStartMs: bigint;
  readonly key: string;
  readonly blockId: string;
  readonly series: number;
  readonly samples: number;
  readonly bytes: number;
  readonly replaced: boolean;
}

/** Totals of a {@link WriterClient.write} call. */
export interface WriteSummary {
  readonly requests: number;
  readonly samples: number;
  readonly series: number;
  /** Attempts beyond the first, over all requests. */
  readonly retries: number;
}

interface WireSeries {
  id: string;
  timestamps: Buffer;
  values: Buffer;
}

interface WireBlock {
  tenant: string;
  shard: number;
  window_start_ms: string;
  key: string;
  block_id: string;
  series: string;
  samples: string;
  bytes: string;
  replaced: boolean;
}


const LITTLE_ENDIAN = endianness() === 'LE';
const RETRYABLE = new Set<number>([status.UNAVAILABLE, status.RESOURCE_EXHAUSTED]);

/** Little-endian bytes of a typed array (a view on little-endian hosts). */
function leBytes(a: BigInt64Array | Float64Array): Buffer {
  if (LITTLE_ENDIAN) return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const out = Buffer.allocUnsafe(a.byteLength);
  const src = new DataView(a.buffer, a.byteOffset, a.byteLength);
  for (let i = 0; i < a.byteLength; i += 8) out.writeBigUInt64LE(src.getBigUint64(i, false), i);
  return out;
}

/** True for errors worth retrying. */
export function isRetryable(err: unknown): boolean {
  const { code, details } = err as Partial<ServiceError>;
  if (typeof code !== 'number') return false;
  // a stream the server cut without a status (a pod stopping, a proxy dropping the connection):
  // grpc-js reports INTERNAL; nothing says the request failed for a reason of its own, and a
  // write or seal sent again is harmless
  if (code === status.INTERNAL && typeof details === 'string' && details.includes('RST_STREAM')) return true;
  return RETRYABLE.has(code);
}

/** Calls `fn` with at most `width` running at once; rejects with the first failure. */
async function pool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

/** Smallest and largest timestamp of a part of a series. */
interface PartRange {
  readonly batch: number;
  readonly min: bigint;
  readonly max: bigint;
}

function partRange(batch: number, s: SeriesData): PartRange {
  let min = s.timestamps[0]!;
  let max = min;
  for (const ts of s.timestamps) {
    if (ts < min) min = ts;
    else if (ts > max) max = ts;
  }
  return { batch, min, max };
}

/**
 * For each request of {@link WriterClient.batches}, the earlier requests it must wait for: those
 * holding a part of the same series whose time range overlaps one of its parts (so it may repeat
 * a timestamp). Requests of a shard hold its series in id order, so only the series that ends a
 * request can continue in the next one of that shard; only those parts are scanned. Parts in time
 * order (the usual case) never overlap and wait for nothing.
 */
export function orderingDependencies(batches: readonly { readonly shard: number; readonly series: readonly SeriesData[] }[]): number[][] {
  const after: number[][] = batches.map(() => []);
  // per shard: the series that ends its last request, its parts in that request (not yet
  // scanned) and the ranges of its parts in earlier ones, with their largest timestamp
  const open = new Map<number, { id: bigint; batch: number; tail: SeriesData[]; ranges: PartRange[]; max: bigint | null }>();
  batches.forEach((b, i) => {
    if (b.series.length === 0) return;
    const first = b.series[0]!.id;
    const carried = open.get(b.shard);
    let ranges: PartRange[] = [];
    let max: bigint | null = null;
    let lead = 0; // entries of `first` at the start of this request that continue a series
    if (carried && carried.id === first) {
      ranges = carried.ranges;
      max = carried.max;
      const add = (r: PartRange): void => {
        ranges.push(r);
        if (max === null || r.max > max) max = r.max;
      };
      for (const s of carried.tail) add(partRange(carried.batch, s));
      const deps = new Set<number>();
      for (; lead < b.series.length && b.series[lead]!.id === first; lead++) {
        const r = partRange(i, b.series[lead]!);
        // a part after everything before it (parts in time order) overlaps nothing: no scan
        if (max !== null && r.min <= max) for (const p of ranges) if (p.batch !== i && p.min <= r.max && r.min <= p.max) deps.add(p.batch);
        add(r);
      }
      after[i] = [...deps];
    }
    const last = b.series[b.series.length - 1]!.id;
    let t = b.series.length;
    while (t > lead && b.series[t - 1]!.id === last) t--;
    // a request that holds nothing but the continued series passes its ranges on
    const whole = last === first && t === lead;
    open.set(b.shard, { id: last, batch: i, tail: b.series.slice(t), ranges: whole ? ranges : [], max: whole ? max : null });
  });
  return after;
}

/** See the module comment. */
export class WriterClient {
  readonly tenant: string;
  readonly numShards: number;
  private readonly opts: WriterClientOptions;
  private readonly clients = new Map<string, Client>();
  private readonly maxBatchSamples: number;
  private readonly maxBatchSeries: number;
  private readonly concurrency: number;
  private readonly security: ClientChannelSecurity;

  /** @throws InvalidArgumentError for bad options; StrataError CONFIG for unusable TLS files. */
  constructor(opts: WriterClientOptions) {
    validateTenant(opts.tenant);
    if (!Number.isInteger(opts.numShards) || opts.numShards < 1) throw new InvalidArgumentError('numShards', `${opts.numShards} is not a positive integer`);
    if ((opts.target === undefined) === (opts.shardTargets === undefined)) throw new InvalidArgumentError('target', 'give exactly one of target and shardTargets');
    this.tenant = opts.tenant;
    this.numShards = opts.numShards;
    this.opts = opts;
    this.maxBatchSamples = opts.maxBatchSamples ?? 500_000;
    this.concurrency = opts.concurrency ?? 8;
    this.maxBatchSeries = opts.maxBatchSeries ?? 50_000;
    if (!(this.maxBatchSamples >= 1)) throw new InvalidArgumentError('maxBatchSamples', 'must be at least 1');
    if (!(this.maxBatchSeries >= 1)) throw new InvalidArgumentError('maxBatchSeries', 'must be at least 1');
    if (!(this.concurrency >= 1)) throw new InvalidArgumentError('concurrency', 'must be at least 1');
    this.security = clientChannelSecurity(opts.tls);
  }

  private clientFor(shard: number): Client {
    const address = this.opts.target ?? this.opts.shardTargets!.get(shard);
    if (address === undefined) throw new InvalidArgumentError('shardTargets', `no address for shard ${shard}`);
    let c = this.clients.get(address);
    if (!c) {
      c = new Client(address, this.security.credentials, {
        ...this.security.channelOptions,
        'grpc.max_send_message_length': -1,
        'grpc.max_receive_message_length': 16 * 1024 * 1024,
      });
      this.clients.set(address, c);
    }
    return c;
  }

  private metadata(shard: number | null): Metadata {
    const md = new Metadata();
    md.set(TENANT_HEADER, this.tenant);
    if (shard !== null) md.set(SHARD_HEADER, String(shard));
    if (this.opts.authToken !== undefined) md.set(AUTH_HEADER, bearerHeader(this.opts.authToken));
    return md;
  }

  private unary<Res>(client: Client, method: keyof WriterMethods, req: unknown, md: Metadata, deadlineMs: number): Promise<Res> {
    const def = writerServiceDefinition()[method] as WriterMethods[typeof method];
    return new Promise<Res>((resolve, reject) => {
      client.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, req, md, { deadline: Date.now() + deadlineMs }, (err, res) => {
        if (!err) return resolve(res as Res);
        const strataCode = errorCodeOfTrailers(err.metadata);
        if (strataCode !== undefined) (err as WriteCallError).strataCode = strataCode;
        reject(err);
      });
    });
  }

  /** Runs one call with the retry policy; returns the result and the attempts used. */
  private async withRetries<T>(fn: () => Promise<T>): Promise<{ value: T; attempts: number }> {
    const r = this.opts.retry ?? {};
    const policy: RetryPolicy = { maxAttempts: r.maxAttempts ?? 8, baseDelayMs: r.baseDelayMs ?? 100, maxDelayMs: r.maxDelayMs ?? 5000 };
    for (let attempt = 1; ; attempt++) {
      try {
        return { value: await fn(), attempts: attempt };
      } catch (err) {
        if (attempt >= policy.maxAttempts || !isRetryable(err)) {
          (err as { attempts?: number }).attempts = attempt;
          throw err;
        }
        await sleep(backoffDelayMs(policy, attempt));
      }
    }
  }

  /** Sends one write request for `shard` (all series must belong to it), with retries. */
  async writeBatch(shard: number, series: readonly SeriesData[]): Promise<{ samples: number; attempts: number }> {
    let samples = 0;
    const wire: WireSeries[] = series.map((s) => {
      if (s.timestamps.length !== s.values.length) throw new InvalidArgumentError('values', `series ${s.id}: ${s.values.length} values for ${s.timestamps.length} timestamps`);
      samples += s.timestamps.length;
      return { id: s.id.toString(), timestamps: leBytes(s.timestamps), values: leBytes(s.values) };
    });
    const client = this.clientFor(shard);
    const t0 = performance.now();
    try {
      const { attempts } = await this.withRetries(() => this.unary(client, 'Write', { series: wire }, this.metadata(shard), this.opts.writeDeadlineMs ?? 60_000));
      this.opts.onRequest?.({ method: 'Write', shard, samples, attempts, durationMs: performance.now() - t0, ok: true });
      return { samples, attempts };
    } catch (err) {
      const attempts = (err as { attempts?: number }).attempts ?? 1;
      this.opts.onRequest?.({ method: 'Write', shard, samples, attempts, durationMs: performance.now() - t0, ok: false });
      throw err;
    }
  }

  /** Cuts series into per-shard requests of at most maxBatchSamples samples and maxBatchSeries series. */
  batches(series: Iterable<SeriesData>): { shard: number; series: SeriesData[]; samples: number }[] {
    const byShard = new Map<number, SeriesData[]>();
    const n = BigInt(this.numShards);
    for (const s of series) {
      if (s.timestamps.length === 0) continue;
      const shard = Number(s.id % n);
      let list = byShard.get(shard);
      if (!list) byShard.set(shard, (list = []));
      list.push(s);
    }
    const out: { shard: number; series: SeriesData[]; samples: number }[] = [];
    for (const [shard, list] of [...byShard].sort((a, b) => a[0] - b[0])) {
      list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      let cur: SeriesData[] = [];
      let curSamples = 0;
      for (const s of list) {
        for (let off = 0; off < s.timestamps.length; ) {
          const room = this.maxBatchSamples - curSamples;
          const take = Math.min(room, s.timestamps.length - off);
          const part =
            off === 0 && take === s.timestamps.length
              ? s
              : { id: s.id, timestamps: s.timestamps.subarray(off, off + take), values: s.values.subarray(off, off + take) };
          cur.push(part);
          curSamples += take;
          off += take;
          if (curSamples >= this.maxBatchSamples || cur.length >= this.maxBatchSeries) {
            out.push({ shard, series: cur, samples: curSamples });
            cur = [];
            curSamples = 0;
          }
        }
      }
      if (cur.length > 0) out.push({ shard, series: cur, samples: curSamples });
    }
    return out;
  }

  /**
   * Writes every sample: groups by shard, cuts into requests, sends them with bounded concurrency
   * and retries. Rejects with the first request that failed for good (others may have succeeded;
   * writing the same samples again is harmless).
   */
  async write(series: Iterable<SeriesData>): Promise<WriteSummary> {
    const batches = this.batches(series);
    // a later part of a series that repeats a timestamp of an earlier part, in another request,
    // is sent once that request succeeded: the aggregator keeps the value written last, and that
    // must be the later one in the input, not the one whose request happened to commit last
    const after = orderingDependencies(batches);
    const sent = batches.map(() => deferred<void>());
    let samples = 0;
    let retries = 0;
    let count = 0;
    const ids = new Set<bigint>();
    await pool(batches.map((b, i) => ({ b, i })), this.concurrency, async ({ b, i }) => {
      try {
        await Promise.all(after[i]!.map((j) => sent[j]!.promise));
      } catch {
        return; // an earlier part failed: write() rejects with that failure
      }
      let r: { samples: number; attempts: number };
      try {
        r = await this.writeBatch(b.shard, b.series);
      } catch (err) {
        sent[i]!.reject(err);
        throw err;
      }
      sent[i]!.resolve();
      samples += r.samples;
      retries += r.attempts - 1;
      count++;
      for (const s of b.series) ids.add(s.id);
    });
    return { requests: count, samples, series: ids.size, retries };
  }

  /**
   * Seals the window starting at `windowStartMs` on each of `shards` (default: all) and waits for
   * the flushes; returns the blocks written. Flush failures come back as UNAVAILABLE and are
   * retried like writes.
   */
  async seal(windowStartMs: bigint, shards?: readonly number[]): Promise<SealedBlock[]> {
    const list = shards ?? (this.opts.shardTargets ? [...this.opts.shardTargets.keys()] : Array.from({ length: this.numShards }, (_, s) => s));
    const blocks: SealedBlock[] = [];
    await pool(list, this.concurrency, async (shard) => {
      const client = this.clientFor(shard);
      const t0 = performance.now();
      let attempts = 1;
      try {
        const r = await this.withRetries(() =>
          this.unary<{ blocks: WireBlock[] }>(client, 'Seal', { window_start_ms: windowStartMs.toString(), no_wait: false }, this.metadata(shard), this.opts.sealDeadlineMs ?? 600_000),
        );
        attempts = r.attempts;
        for (const b of r.value.blocks) {
          blocks.push({
            tenant: b.tenant,
            shard: b.shard,
            windowStartMs: BigInt(b.window_start_ms),
            key: b.key,
            blockId: b.block_id,
            series: Number(b.series),
            samples: Number(b.samples),
            bytes: Number(b.bytes),
            replaced: b.replaced,
          });
        }
      } catch (err) {
        attempts = (err as { attempts?: number }).attempts ?? 1;
        this.opts.onRequest?.({ method: 'Seal', shard, samples: 0, attempts, durationMs: performance.now() - t0, ok: false });
        throw err;
      }
      this.opts.onRequest?.({ method: 'Seal', shard, samples: 0, attempts, durationMs: performance.now() - t0, ok: true });
    });
    return blocks.sort((a, b) => a.shard - b.shard);
  }

  /** The status of the aggregator serving `shard` (raw response of the Status RPC). */
  async status(shard = 0): Promise<Record<string, unknown>> {
    return this.unary(this.clientFor(shard), 'Status', {}, this.metadata(shard), 10_000);
  }

  /** Closes the channels. */
  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
