/**
 * Planning of a query: (tenant, series ids, `[start, end)`) → one request per (window, shard)
 * block that can hold samples, and the routing of each request to a gateway. Pure.
 */
import { blockRoutingKey } from '../api/headers.js';
import { InvalidArgumentError } from '../errors.js';
import { validateTenant, windowStartOf } from '../format/key.js';
import { DAY_MS, dayBlocksFit } from '../format/day-key.js';

const U64_MAX = (1n << 64n) - 1n;

/** Series per request unless told otherwise: the gateway's default `maxSeriesPerRequest`. */
export const DEFAULT_MAX_SERIES_PER_REQUEST = 10_000;

/**
 * Default of the query client's `futureHorizonMs`: how far ahead of the client's clock a block can
 * hold samples. The aggregators refuse samples more than their `maxSampleFutureMs` (default 1 h)
 * ahead of their clock; one more hour covers clocks that disagree. The plan also keeps the whole
 * window holding `now + futureHorizonMs` (see {@link BlockLayout.horizon}).
 */
export const DEFAULT_FUTURE_HORIZON_MS = 2 * 3600 * 1000;

/** The block layout the data was written with. */
export interface BlockLayout {
  readonly numShards: number;
  readonly blockDurationMs: number;
  /**
   * Days that ended at least `dayRequestsAfterMs` before `nowMs` are read with one request per
   * (day, shard) (the gateway answers it from the day block, or from the day's blocks while there
   * is none); absent: one request per block window, as before day blocks.
   */
  readonly days?: { readonly nowMs: number; readonly dayRequestsAfterMs: number };
  /**
   * The latest time a block can hold samples of: no sample later than `nowMs + futureHorizonMs`
   * was written (the aggregators refuse samples more than their `maxSampleFutureMs` ahead). The
   * range's end is clamped to the end of the block window holding that time, so windows after it
   * are not planned and the last one planned is asked for whole; absent: the range as asked.
   */
  readonly horizon?: { readonly nowMs: number; readonly futureHorizonMs: number };
}

/** One request of a plan: some series of one block, over the part of the range in its window. */
export interface BlockRequest {
  readonly tenant: string;
  readonly shard: number;
  readonly windowStart: bigint;
  /** Ascending, no duplicates; all in `shard`. */
  readonly ids: readonly bigint[];
  /** `[start, end)` clipped to the window. */
  readonly start: bigint;
  readonly end: bigint;
  /**
   * Value of the `x-strata-block` routing header: `<tenant>/<shard>/<windowStart>`, and
   * `<tenant>/<shard>/<dayStart>/86400000` for a day request.
   */
  readonly routingKey: string;
  /** DAY_MS for a request of a whole day (windowStart is the day's start); absent for a block window. */
  readonly windowMs?: number;
}

/**
 * A query split into block requests: how many there are, known before the first is made, and the
 * requests themselves, made one at a time as they are iterated, so that a plan of many requests
 * (years of closed days) is not held in memory while it is sent.
 */
export interface QueryPlan {
  /** Number of requests `requests` yields. */
  readonly size: number;
  /** The range's end as planned: the query's end, or the horizon's when that comes first. */
  readonly end: bigint;
  /**
   * The requests in plan order: window by window (ascending), shard by shard within a window,
   * consecutive id ranges within a shard. Each iteration makes them afresh.
   */
  readonly requests: Iterable<BlockRequest>;
}

/**
 * Splits a query into block requests, window by window (ascending), shard by shard within a
 * window, each with at most `maxSeriesPerRequest` ids (a shard with more gets several requests
 * for the block, of consecutive id ranges). An empty range (end <= start) or an empty id list
 * gives no request. Windows before the epoch hold no blocks and are skipped, and so are windows
 * after the layout's horizon (when it has one). The requests are counted and checked against
 * `maxBlocks` at once; they are made as {@link QueryPlan.requests} is iterated.
 * @throws InvalidArgumentError for a bad tenant, an id outside uint64, or more than `maxBlocks`
 *   requests (the message names the query client's `maxBlocksPerQuery`).
 */
export function planBlockRequests(
  tenant: string,
  ids: readonly bigint[],
  start: bigint,
  end: bigint,
  layout: BlockLayout,
  maxBlocks = 1_000_000,
  maxSeriesPerRequest = DEFAULT_MAX_SERIES_PER_REQUEST,
): QueryPlan {
  if (!Number.isSafeInteger(maxSeriesPerRequest) || maxSeriesPerRequest < 1) throw new InvalidArgumentError('maxSeriesPerRequest', `${maxSeriesPerRequest} is not a positive integer`);
  validateTenant(tenant);
  if (!Number.isInteger(layout.numShards) || layout.numShards < 1) throw new InvalidArgumentError('numShards', `${layout.numShards} is not a positive integer`);
  if (!Number.isInteger(layout.blockDurationMs) || layout.blockDurationMs < 1) {
    throw new InvalidArgumentError('blockDurationMs', `${layout.blockDurationMs} is not a positive integer`);
  }
  for (const id of ids) if (id < 0n || id > U64_MAX) throw new InvalidArgumentError('ids', `${id} is not a uint64`);
  // a reversed range is a caller's mistake (as `strata query` says), not an empty answer
  if (end < start) throw new InvalidArgumentError('end', `${end} is before start ${start}; the range is [start, end)`);
  const d = BigInt(layout.blockDurationMs);
  let to = end;
  if (layout.horizon) {
    const { nowMs, futureHorizonMs } = layout.horizon;
    if (!Number.isFinite(nowMs)) throw new InvalidArgumentError('now', `${nowMs} is not a time in ms`);
    if (!Number.isSafeInteger(futureHorizonMs) || futureHorizonMs < 0) throw new InvalidArgumentError('futureHorizonMs', `${futureHorizonMs} is not an integer >= 0`);
    // the end of the window holding the latest sample a block can have
    const latest = windowStartOf(BigInt(Math.floor(nowMs)) + BigInt(futureHorizonMs), layout.blockDurationMs) + d;
    if (to > latest) to = latest;
  }
  const from = start < 0n ? 0n : start;
  if (to <= from || ids.length === 0) return { size: 0, end: to, requests: [] };
  const shards = BigInt(layout.numShards);
  const byShard = new Map<number, bigint[]>();
  for (const id of [...new Set(ids)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
    const s = Number(id % shards);
    let list = byShard.get(s);
    if (!list) byShard.set(s, (list = []));
    list.push(id);
  }
  // windows of days closed for reading are read a day at a time
  const day = BigInt(DAY_MS);
  // closedBefore: the start of the last day closed for reading (it ended dayRequestsAfterMs ago)
  const closedBefore = layout.days && dayBlocksFit(layout.blockDurationMs) ? windowStartOf(BigInt(Math.floor(layout.days.nowMs - layout.days.dayRequestsAfterMs)) - day, DAY_MS) : null;
  const isClosed = (ws: bigint): boolean => closedBefore !== null && ws - (ws % day) <= closedBefore;
  const first = windowStartOf(from, layout.blockDurationMs);
  // requests per shard: the closed days touched, then the windows after them
  const closedEnd = closedBefore === null ? first : closedBefore + day; // start of the first day not closed
  let units = 0n;
  if (first < closedEnd) units += ((to < closedEnd ? to : closedEnd) - 1n) / day - first / day + 1n;
  const openFrom = first > closedEnd ? first : closedEnd;
  if (openFrom < to) units += (to - 1n - openFrom) / d + 1n;

  // a shard's ids in requests of at most maxSeriesPerRequest series (the gateway refuses more)
  const slices = new Map<number, bigint[][]>();
  let requestsPerUnit = 0;
  for (const [shard, list] of byShard) {
    const parts: bigint[][] = [];
    for (let i = 0; i < list.length; i += maxSeriesPerRequest) parts.push(list.length <= maxSeriesPerRequest ? list : list.slice(i, i + maxSeriesPerRequest));
    slices.set(shard, parts);
    requestsPerUnit += parts.length;
  }
  const size = units * BigInt(requestsPerUnit);
  if (size > BigInt(maxBlocks)) {
    throw new InvalidArgumentError(
      'range',
      `[${start}, ${to})${to < end ? ' (cut at the future horizon)' : ''} over ${byShard.size} shards is ${size} block requests, more than ${maxBlocks} (the query client's maxBlocksPerQuery); ask for a shorter range or fewer series`,
    );
  }
  const shardOrder = [...byShard.keys()].sort((a, b) => a - b);
  function* requests(): Generator<BlockRequest> {
    for (let ws = first; ws < to; ) {
      const closed = isClosed(ws);
      const unitStart = closed ? ws - (ws % day) : ws;
      const unitEnd = closed ? unitStart + day : ws + d;
      const s0 = from > unitStart ? from : unitStart;
      const e0 = to < unitEnd ? to : unitEnd;
      for (const shard of shardOrder) {
        for (const part of slices.get(shard)!) {
          yield closed
            ? { tenant, shard, windowStart: unitStart, ids: part, start: s0, end: e0, routingKey: blockRoutingKey(tenant, shard, unitStart, DAY_MS), windowMs: DAY_MS }
            : { tenant, shard, windowStart: ws, ids: part, start: s0, end: e0, routingKey: blockRoutingKey(tenant, shard, ws) };
        }
      }
      ws = unitEnd;
    }
  }
  return { size: Number(size), end: to, requests: { [Symbol.iterator]: requests } };
}

/**
 * {@link planBlockRequests} with every request made at once, in plan order.
 * @throws InvalidArgumentError as {@link planBlockRequests}.
 */
export function planQuery(
  tenant: string,
  ids: readonly bigint[],
  start: bigint,
  end: bigint,
  layout: BlockLayout,
  maxBlocks = 1_000_000,
  maxSeriesPerRequest = DEFAULT_MAX_SERIES_PER_REQUEST,
): BlockRequest[] {
  return [...planBlockRequests(tenant, ids, start, end, layout, maxBlocks, maxSeriesPerRequest).requests];
}

/** 32-bit FNV-1a of a string with a murmur3 finalizer. */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Endpoints in rendezvous-hashing order for `routingKey` (highest score first): a block always
 * goes to the same gateway of a static list, and to the next one when that one is unavailable,
 * like Envoy's Maglev does for the production path. Order of `endpoints` does not matter.
 */
export function rankEndpoints(routingKey: string, endpoints: readonly string[]): string[] {
  return endpoints
    .map((e) => ({ e, score: hash32(`${e}\u0000${routingKey}`) }))
    .sort((a, b) => b.score - a.score || (a.e < b.e ? -1 : a.e > b.e ? 1 : 0))
    .map((x) => x.e);
}
