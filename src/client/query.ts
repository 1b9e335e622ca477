/**
 * Query client for the query service: reads the samples of series ids over `[start, end)` from
 * the storage gateways (proto/read.proto).
 *
 * - splits the query into one request per (window, shard) block, and per (day, shard) for days
 *   closed `dayRequestsAfterMs` ago (query-plan.ts; the gateway answers those from day blocks);
 *   windows after `now + futureHorizonMs`, where no block can exist, are not asked for;
 * - makes the requests one at a time as they are sent, and keeps only the answers that have
 *   series until the merge: a query's memory follows the data it returns, not its number of
 *   requests;
 * - sets `x-strata-block` (Envoy's Maglev hash key), `x-strata-tenant` and, when given,
 *   `authorization: Bearer <token>`;
 * - speaks gRPC over node:http2 itself (grpc-h2.ts: measured half the client CPU of grpc-js),
 *   in plaintext, or over TLS / mTLS with `tls` (src/common/tls.ts);
 * - sends to one endpoint (Envoy) or to a static list of gateways, where each block goes to the
 *   same gateway by rendezvous hashing (so its cache stays warm) and a retry to the next one;
 * - keeps at most `concurrency` requests in flight; the whole query shares one deadline;
 * - retries a request once on UNAVAILABLE (its partial response is dropped), and a request that a
 *   gateway refused with a retry pushback (`grpc-retry-pushback-ms`: a read budget other calls
 *   are using, which frees up by itself) after that pushback, backing off exponentially while it
 *   is refused again, up to `maxPushbackRetries` times and within the query's deadline;
 * - reads a block again in halves of its series when the gateway refuses the answer as too large
 *   for one response (`maxSamplesPerResponse`, `maxBytesPerResponse`);
 * - merges each series' samples in time order (block-assembler.ts).
 */
import { setMaxListeners } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { status } from '@grpc/grpc-js';
import { backoffDelayMs } from '../common/backoff.js';
import { clientTlsOptions, type ClientTlsConfig, type ClientTlsOptions } from '../common/tls.js';
import { CorruptionError, InvalidArgumentError } from '../errors.js';
import { DEFAULT_BLOCK_DURATION_MS } from '../format/key.js';
import { DEFAULT_DAY_BLOCKS_AFTER_MS } from '../format/day-key.js';
import { DEFAULT_FUTURE_HORIZON_MS, DEFAULT_MAX_SERIES_PER_REQUEST, planBlockRequests, rankEndpoints, type BlockLayout, type BlockRequest } from './query-plan.js';
import { GrpcCallError, H2Channel } from './grpc-h2.js';
import { AUTH_HEADER, bearerHeader, BLOCK_HEADER, TENANT_HEADER } from '../api/headers.js';
import { RUN_CODES_VERSION } from '../format/run.js';
import { decodeReadResponse, encodeReadRequest, ENCODING_RAW, ENCODING_RUNS, ProtoDecodeError, READ_METHOD_PATH } from '../api/read-codec.js';
import { BlockAssembler, mergeSeries, QueryAnswers, QueryLimitError, ResponseFormatError, type SeriesSamples } from './block-assembler.js';

export type { SeriesSamples } from './block-assembler.js';
export { DEFAULT_FUTURE_HORIZON_MS } from './query-plan.js';

/** How samples travel from the gateway (see the gateway README for the measurements). */
export type ReadEncoding = 'raw' | 'runs';

/** The encoding the client asks for unless told otherwise (measured: see the gateway README). */
export const DEFAULT_ENCODING: ReadEncoding = 'runs';

/** Options of a {@link QueryClient}. */
export interface QueryClientOptions {
  /** `host:port` of Envoy, or of each gateway of a static list. */
  readonly endpoints: readonly string[];
  /** Layout the blocks were written with. */
  readonly numShards: number;
  readonly blockDurationMs?: number;
  /** Requests in flight per query (default 32). */
  readonly concurrency?: number;
  /** Deadline of a whole query (default 30 s). */
  readonly deadlineMs?: number;
  readonly encoding?: ReadEncoding;
  /** Bearer token sent as `authorization`. */
  readonly token?: string;
  /** TLS (and mTLS with a client certificate); default plaintext (as inside a cluster). */
  readonly tls?: ClientTlsConfig;
  /** Largest response message accepted (default 64 MiB; the gateway's maxMessageBytes must fit). */
  readonly maxReceiveMessageBytes?: number;
  /**
   * Series ids per request at most (default {@link DEFAULT_MAX_SERIES_PER_REQUEST}, the gateway's
   * default `maxSeriesPerRequest`; set it to the gateways' when they were given another): a
   * block's ids beyond it go in more requests for the block.
   */
  readonly maxSeriesPerRequest?: number;
  /**
   * Largest number of block requests one query may need (default {@link DEFAULT_MAX_BLOCKS_PER_QUERY});
   * a query that needs more fails at once with INVALID_ARGUMENT naming it, before any request is
   * sent, instead of at its deadline.
   */
  readonly maxBlocksPerQuery?: number;
  /**
   * Days that ended this long ago are read with one request per (day, shard) (answered from the
   * day block; see the gateway's dayBlocksAfterMs, which should be the same); default 8 h; null:
   * one request per block window always.
   */
  readonly dayRequestsAfterMs?: number | null;
  /**
   * How far ahead of `now` blocks can hold samples (default {@link DEFAULT_FUTURE_HORIZON_MS}, 2 h):
   * the end of a query's range is clamped to the end of the block window holding
   * `now + futureHorizonMs`, and no later window is asked for. The aggregators refuse samples more
   * than their `maxSampleFutureMs` (default 1 h) ahead of their clock, so keep it at least that
   * plus how far the clocks may disagree. null: the range as asked, however far in the future.
   */
  readonly futureHorizonMs?: number | null;
  /** The clock deciding which days are closed, and where the future horizon is (ms since the epoch; default Date.now). */
  readonly now?: () => number;
  /**
   * Samples one query may return, over all its blocks (default {@link DEFAULT_MAX_QUERY_SAMPLES}):
   * the result's arrays are sized by what the gateways' runs claim before they are decoded, so a
   * faulty gateway could otherwise make the client allocate without bound. Past it the query fails
   * with RESOURCE_EXHAUSTED naming it.
   */
  readonly maxSamplesPerQuery?: number;
  /**
   * Retries of one block request that gateways refused with a retry pushback (a busy read budget:
   * concurrent calls, bytes in flight), default {@link DEFAULT_MAX_PUSHBACK_RETRIES}; 0: fail at
   * the first refusal. Refusals without a pushback (limits of the request itself) are never retried.
   */
  readonly maxPushbackRetries?: number;
}

/**
 * Default of {@link QueryClientOptions.maxBlocksPerQuery}. A request for a window or a day without
 * a block still costs the gateway its bucket look-ups (a closed day without a day block: its six
 * 4-hour blocks and the day block), so this many requests take minutes: measured on one gateway,
 * about 1,300 such requests a second on a filesystem bucket and 100 on a Ceph RGW. One id from
 * 1970 (about 20,800 closed days) is allowed; the same over 16 shards (about 333,000) is refused
 * at once, where 1,000,000 (the bound before) failed only at the deadline.
 */
export const DEFAULT_MAX_BLOCKS_PER_QUERY = 100_000;

/** Default of {@link QueryClientOptions.maxPushbackRetries}. */
export const DEFAULT_MAX_PUSHBACK_RETRIES = 20;
/** Ceiling of the backoff added to a repeated pushback (ms). */
const PUSHBACK_BACKOFF_MAX_MS = 2000;

/** Default of {@link QueryClientOptions.maxSamplesPerQuery}: 2^28 samples, 4 GiB of result arrays. */
export const DEFAULT_MAX_QUERY_SAMPLES = 2 ** 28;

/** Default of {@link QueryClientOptions.dayRequestsAfterMs}: the gateway's default dayBlocksAfterMs. */
export const DEFAULT_DAY_REQUESTS_AFTER_MS = DEFAULT_DAY_BLOCKS_AFTER_MS;

/** Per-call options. */
export interface QueryOptions {
  readonly signal?: AbortSignal;
  /** Overrides the client's deadlineMs for this query. */
  readonly deadlineMs?: number;
}

/** A query's samples and what it took. */
export interface QueryResult {
  /** One entry per distinct requested id, ascending, with its samples in time order. */
  readonly series: SeriesSamples[];
  /** Block requests sent (retries not counted), and retries. */
  readonly requests: number;
  readonly retries: number;
  /** Response messages and payload bytes received. */
  readonly messages: number;
  readonly bytes: number;
  /** Requests whose window had a block. */
  readonly blocksFound: number;
}

/**
 * A block request that failed; `code` is the gRPC status, `strataCode` the gateway's
 * `ERR_STRATA_*` code (docs/errors.md) when it sent one.
 */
export class QueryError extends Error {
  readonly strataCode: string | undefined;
  constructor(
    readonly code: status,
    readonly block: string,
    readonly endpoint: string,
    message: string,
    options?: { cause?: unknown; strataCode?: string | undefined },
  ) {
    super(message, options);
    this.name = 'QueryError';
    this.strataCode = options?.strataCode;
  }
}

/** See the module comment. One client per process is enough; close() it at the end. */
export class QueryClient {
  private readonly channels = new Map<string, H2Channel>();
  private readonly endpoints: readonly string[];
  private readonly blockDurationMs: number;
  private readonly concurrency: number;
  private readonly deadlineMs: number;
  private readonly encoding: ReadEncoding;
  private readonly tls: ClientTlsOptions | undefined;

  /** @throws StrataError CONFIG for unreadable or invalid TLS files. */
  constructor(private readonly opts: QueryClientOptions) {
    if (opts.endpoints.length === 0) throw new InvalidArgumentError('endpoints', 'at least one endpoint is needed');
    this.tls = opts.tls !== undefined ? clientTlsOptions(opts.tls) : undefined;
    this.endpoints = [...new Set(opts.endpoints)];
    this.blockDurationMs = opts.blockDurationMs ?? DEFAULT_BLOCK_DURATION_MS;
    this.concurrency = opts.concurrency ?? 32;
    this.deadlineMs = opts.deadlineMs ?? 30_000;
    this.encoding = opts.encoding ?? DEFAULT_ENCODING;
    if (!(this.concurrency >= 1)) throw new InvalidArgumentError('concurrency', 'must be at least 1');
    if (opts.maxSamplesPerQuery !== undefined && !(Number.isSafeInteger(opts.maxSamplesPerQuery) && opts.maxSamplesPerQuery >= 1)) throw new InvalidArgumentError('maxSamplesPerQuery', 'must be a positive integer');
    if (opts.maxSeriesPerRequest !== undefined && !(Number.isSafeInteger(opts.maxSeriesPerRequest) && opts.maxSeriesPerRequest >= 1)) throw new InvalidArgumentError('maxSeriesPerRequest', 'must be a positive integer');
    if (opts.maxPushbackRetries !== undefined && !(Number.isSafeInteger(opts.maxPushbackRetries) && opts.maxPushbackRetries >= 0)) throw new InvalidArgumentError('maxPushbackRetries', 'must be an integer >= 0');
    if (opts.maxBlocksPerQuery !== undefined && !(Number.isSafeInteger(opts.maxBlocksPerQuery) && opts.maxBlocksPerQuery >= 1)) throw new InvalidArgumentError('maxBlocksPerQuery', 'must be a positive integer');
    if (opts.futureHorizonMs !== undefined && opts.futureHorizonMs !== null && !(Number.isSafeInteger(opts.futureHorizonMs) && opts.futureHorizonMs >= 0)) {
      throw new InvalidArgumentError('futureHorizonMs', 'must be an integer >= 0, or null');
    }
  }

  /**
   * Samples of `ids` with timestamps in `[start, end)`.
   * @throws InvalidArgumentError for a bad query; QueryError for a failed block request (the
   *   first failure cancels the rest); an AbortError-like reason when `signal` aborts.
   */
  async query(tenant: string, ids: readonly bigint[], range: { readonly start: bigint; readonly end: bigint }, opts: QueryOptions = {}): Promise<QueryResult> {
    if (opts.signal?.aborted) throw opts.signal.reason;
    const after = this.opts.dayRequestsAfterMs === undefined ? DEFAULT_DAY_REQUESTS_AFTER_MS : this.opts.dayRequestsAfterMs;
    const horizon = this.opts.futureHorizonMs === undefined ? DEFAULT_FUTURE_HORIZON_MS : this.opts.futureHorizonMs;
    const nowMs = (this.opts.now ?? Date.now)();
    const layout: BlockLayout = {
      numShards: this.opts.numShards,
      blockDurationMs: this.blockDurationMs,
      ...(after !== null ? { days: { nowMs, dayRequestsAfterMs: after } } : {}),
      ...(horizon !== null ? { horizon: { nowMs, futureHorizonMs: horizon } } : {}),
    };
    const plan = planBlockRequests(tenant, ids, range.start, range.end, layout, this.opts.maxBlocksPerQuery ?? DEFAULT_MAX_BLOCKS_PER_QUERY, this.opts.maxSeriesPerRequest);
    const wanted = [...new Set(ids)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const deadline = Date.now() + (opts.deadlineMs ?? this.deadlineMs);
    const ac = new AbortController();
    setMaxListeners(this.concurrency + 8, ac.signal); // one listener per request in flight
    const onAbort = (): void => ac.abort(opts.signal!.reason);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    // the requests are made as they are sent, and an answer without series is dropped once counted
    const requests = plan.requests[Symbol.iterator]();
    const answers = new QueryAnswers();
    let retries = 0;
    let next = 0;
    let failure: unknown = null;
    const worker = async (): Promise<void> => {
      while (failure === null) {
        const step = requests.next();
        if (step.done) return;
        const i = next++;
        try {
          const r = await this.readBlockSplitting(step.value, deadline, ac.signal);
          retries += r.retries;
          answers.add(i, r.assemblers);
        } catch (err) {
          failure ??= err;
          ac.abort(err);
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(this.concurrency, plan.size) }, worker));
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
    if (failure !== null) throw failure;
    const maxSamples = this.opts.maxSamplesPerQuery ?? DEFAULT_MAX_QUERY_SAMPLES;
    let series: SeriesSamples[];
    try {
      series = mergeSeries(wanted, answers.blocks(), maxSamples);
    } catch (err) {
      // the runs are decoded here, once every block answered: a bad one fails the query as a bad response would
      if (err instanceof QueryLimitError) throw new QueryError(status.RESOURCE_EXHAUSTED, '', '', err.message, { cause: err });
      if (err instanceof ResponseFormatError || err instanceof CorruptionError) throw new QueryError(status.INTERNAL, err instanceof CorruptionError ? err.object : '', '', `decoding the answer: ${err.message}`, { cause: err });
      throw err;
    }
    return { series, requests: answers.requests, retries, messages: answers.messages, bytes: answers.bytes, blocksFound: answers.blocksFound };
  }

  /** Closes the channels. */
  close(): void {
    for (const c of this.channels.values()) c.close();
    this.channels.clear();
  }

  private channel(endpoint: string): H2Channel {
    let c = this.channels.get(endpoint);
    if (!c) {
      c = new H2Channel(endpoint, {
        ...(this.tls ? { tls: this.tls } : {}),
        maxMessageBytes: this.opts.maxReceiveMessageBytes ?? 64 * 1024 * 1024,
        // a large HTTP/2 window: a block's answer streams without waiting for window updates
        windowBytes: 16 * 1024 * 1024,
      });
      this.channels.set(endpoint, c);
    }
    return c;
  }

  /**
   * {@link readBlock}, and when the gateway refuses the answer as too large for one response
   * (`maxSamplesPerResponse`, `maxBytesPerResponse`: a limit of the request, without a retry
   * pushback), the request again as two of half the series each, down to one series: dense series
   * (1 s scrapes) reach those limits with far fewer ids than maxSeriesPerRequest. The parts come
   * back in id order.
   */
  private async readBlockSplitting(req: BlockRequest, deadline: number, signal: AbortSignal): Promise<{ assemblers: BlockAssembler[]; retries: number }> {
    try {
      const r = await this.readBlock(req, deadline, signal);
      return { assemblers: [r.assembler], retries: r.retries };
    } catch (err) {
      const tooLarge =
        err instanceof QueryError && err.code === status.RESOURCE_EXHAUSTED && /over the gateway's max(Samples|Bytes)PerResponse/.test(err.message) && req.ids.length > 1;
      if (!tooLarge || signal.aborted) throw err;
      const half = Math.ceil(req.ids.length / 2);
      const a = await this.readBlockSplitting({ ...req, ids: req.ids.slice(0, half) }, deadline, signal);
      const b = await this.readBlockSplitting({ ...req, ids: req.ids.slice(half) }, deadline, signal);
      return { assemblers: [...a.assemblers, ...b.assemblers], retries: 1 + a.retries + b.retries };
    }
  }

  private async readBlock(req: BlockRequest, deadline: number, signal: AbortSignal): Promise<{ assembler: BlockAssembler; retries: number }> {
    const order = this.endpoints.length === 1 ? this.endpoints : rankEndpoints(req.routingKey, this.endpoints);
    const maxPushbacks = this.opts.maxPushbackRetries ?? DEFAULT_MAX_PUSHBACK_RETRIES;
    let pushbacks = 0;
    for (let attempt = 0; ; ) {
      const endpoint = order[attempt % order.length]!;
      try {
        return { assembler: await this.call(endpoint, req, deadline, signal), retries: attempt + pushbacks };
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        const code = err instanceof GrpcCallError ? err.code : undefined;
        const pushback = err instanceof GrpcCallError ? err.pushbackMs : undefined;
        if (pushback !== undefined && (code === status.RESOURCE_EXHAUSTED || code === status.UNAVAILABLE) && pushbacks < maxPushbacks) {
          // the same gateway (its cache has the block) once the pushback has passed, later each
          // time it is refused again (full jitter over a doubling ceiling): never past the deadline
          pushbacks++;
          const wait = pushback + backoffDelayMs({ maxAttempts: maxPushbacks + 1, baseDelayMs: Math.max(1, pushback), maxDelayMs: PUSHBACK_BACKOFF_MAX_MS }, pushbacks);
          if (Date.now() + wait < deadline) {
            await sleep(wait, undefined, { signal }).catch(() => undefined);
            if (signal.aborted) throw signal.reason;
            continue;
          }
        }
        if (attempt === 0 && code === status.UNAVAILABLE && Date.now() < deadline) {
          attempt++;
          continue;
        }
        if (err instanceof ResponseFormatError) throw new QueryError(status.INTERNAL, req.routingKey, endpoint, err.message, { cause: err });
        if (err instanceof GrpcCallError) {
          throw new QueryError(err.code, req.routingKey, endpoint, `reading block ${req.routingKey} from ${endpoint}: ${status[err.code] ?? err.code}${err.strataCode !== undefined ? ` ${err.strataCode}` : ''}: ${err.details}`, {
            cause: err,
            strataCode: err.strataCode,
          });
        }
        throw err;
      }
    }
  }

  private async call(endpoint: string, req: BlockRequest, deadline: number, signal: AbortSignal): Promise<BlockAssembler> {
    const ids = Buffer.allocUnsafe(req.ids.length * 8);
    for (let i = 0; i < req.ids.length; i++) ids.writeBigUInt64LE(req.ids[i]!, i * 8);
    const message = encodeReadRequest({
      tenant: req.tenant,
      shard: req.shard,
      numShards: this.opts.numShards,
      windowStartMs: req.windowStart,
      seriesIds: ids,
      startMs: req.start,
      endMs: req.end,
      encoding: this.encoding === 'runs' ? ENCODING_RUNS : ENCODING_RAW,
      ...(req.windowMs !== undefined ? { windowMs: BigInt(req.windowMs) } : {}),
      // the runs this client decodes: a gateway refuses RUNS answers it could not (read.proto)
      runsVersion: RUN_CODES_VERSION,
    });
    const headers: Record<string, string> = { [BLOCK_HEADER]: req.routingKey, [TENANT_HEADER]: req.tenant };
    if (this.opts.token !== undefined) headers[AUTH_HEADER] = bearerHeader(this.opts.token);
    const asm = new BlockAssembler(req.ids, this.encoding, { start: req.start, end: req.end }, req.routingKey);
    await this.channel(endpoint).serverStream({
      path: READ_METHOD_PATH,
      message,
      headers,
      deadline,
      signal,
      onMessage: (buf) => {
        let msg;
        try {
          msg = decodeReadResponse(buf);
        } catch (err) {
          throw err instanceof ProtoDecodeError ? new ResponseFormatError(err.message) : err;
        }
        asm.add(msg);
      },
    });
    asm.finish();
    return asm;
  }
}
