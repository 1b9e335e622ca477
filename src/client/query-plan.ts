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
 * Splits a query into block requests, window by window (ascending), shard by shard within a
 * window, each with at most `maxSeriesPerRequest` ids (a shard with more gets several requests
 * for the block, of consecutive id ranges). An empty range (end <= start) or an empty id list gives no request. Windows before the
 * epoch hold no blocks and are skipped.
 * @throws InvalidArgumentError for a bad tenant, an id outside uint64, or more than `maxBlocks`
 *   requests.
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
  if (!Number.isSafeInteger(maxSeriesPerRequest) || maxSeriesPerRequest < 1) throw new InvalidArgumentError('maxSeriesPerRequest', `${maxSeriesPerRequest} is not a positive integer`);
  validateTenant(tenant);
  if (!Number.isInteger(layout.numShards) || layout.numShards < 1) throw new InvalidArgumentError('numShards', `${layout.numShards} is not a positive integer`);
  if (!Number.isInteger(layout.blockDurationMs) || layout.blockDurationMs < 1) {
    throw new InvalidArgumentError('blockDurationMs', `${layout.blockDurationMs} is not a positive integer`);
  }
  for (const id of ids) if (id < 0n || id > U64_MAX) throw new InvalidArgumentError('ids', `${id} is not a uint64`);
  const from = start < 0n ? 0n : start;
  if (end <= from || ids.length === 0) return [];
  const d = BigInt(layout.blockDurationMs);
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
  if (first < closedEnd) units += ((end < closedEnd ? end : closedEnd) - 1n) / day - first / day + 1n;
  const openFrom = first > closedEnd ? first : closedEnd;
  if (openFrom < end) units += (end - 1n - openFrom) / d + 1n;

  // a shard's ids in requests of at most maxSeriesPerRequest series (the gateway refuses more)
  const slices = new Map<number, bigint[][]>();
  let requestsPerUnit = 0;
  for (const [shard, list] of byShard) {
    const parts: bigint[][] = [];
    for (let i = 0; i < list.length; i += maxSeriesPerRequest) parts.push(list.length <= maxSeriesPerRequest ? list : list.slice(i, i + maxSeriesPerRequest));
    slices.set(shard, parts);
    requestsPerUnit += parts.length;
  }
  if (units * BigInt(requestsPerUnit) > BigInt(maxBlocks)) {
    throw new InvalidArgumentError('range', `[${start}, ${end}) over ${byShard.size} shards is ${units * BigInt(requestsPerUnit)} block requests, more than ${maxBlocks}`);
  }
  const shardOrder = [...byShard.keys()].sort((a, b) => a - b);
  const out: BlockRequest[] = [];
  for (let ws = first; ws < end; ) {
    const closed = isClosed(ws);
    const unitStart = closed ? ws - (ws % day) : ws;
    const unitEnd = closed ? unitStart + day : ws + d;
    const s0 = from > unitStart ? from : unitStart;
    const e0 = end < unitEnd ? end : unitEnd;
    for (const shard of shardOrder) {
      for (const part of slices.get(shard)!) {
        out.push(
          closed
            ? { tenant, shard, windowStart: unitStart, ids: part, start: s0, end: e0, routingKey: blockRoutingKey(tenant, shard, unitStart, DAY_MS), windowMs: DAY_MS }
            : { tenant, shard, windowStart: ws, ids: part, start: s0, end: e0, routingKey: blockRoutingKey(tenant, shard, ws) },
        );
      }
    }
    ws = unitEnd;
  }
  return out;
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
