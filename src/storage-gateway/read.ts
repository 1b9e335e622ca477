/**
 * One Read call against one block: open the block, find the index pages of the wanted series,
 * locate their runs, check the limits, fetch the runs (cache, coalesced GETs), then build the
 * response messages (RAW: decoded and cut to the range; RUNS: the stored runs as they are).
 *
 * Everything is fetched and checked before the first message is built, so a damaged block fails
 * the call before any sample leaves. When fresh bytes fail their check, the block's tail is read
 * again: a new block id means the object was replaced mid-read and the read restarts once on the
 * new block; the same block id means the object is damaged: DATA_LOSS naming it.
 */
import { status } from '@grpc/grpc-js';
import { decodeCheckedRun, locationOf, sliceSamples, type RunLocation } from '../block/reader.js';
import { GrpcError } from '../common/status.js';
import { CorruptionError } from '../errors.js';
import { findPage } from '../index/ioi.js';
import { findInPage } from '../index/page.js';
import type { BlockAddress, BlockDirectory, OpenBlock } from './blocks.js';
import { RangeCheckError, type RangeFetcher } from './fetcher.js';
import type { GatewayMetrics } from './metrics.js';
import { rawMessages, runMessages, type SeriesColumns } from './wire.js';

/** A validated read of one block. */
export interface ReadQuery {
  readonly block: BlockAddress;
  readonly numShards: number;
  /** Series ids, ascending, no duplicates. */
  readonly ids: BigUint64Array;
  /** `[start, end)`, ms. */
  readonly start: bigint;
  readonly end: bigint;
  readonly encoding: 'raw' | 'runs';
}

/** Limits of one response. */
export interface ReadLimits {
  readonly maxSamplesPerResponse: number;
  readonly maxBytesPerResponse: number;
  readonly maxMessageBytes: number;
}

/** What a read produced. */
export interface ReadResult {
  /** Id of the block read ('' when the window has no block or the range misses it). */
  readonly blockId: string;
  /** Encoded ReadResponse messages. */
  readonly messages: Buffer[];
  readonly series: number;
  readonly samples: number;
  /** Payload bytes (columns or runs). */
  readonly bytes: number;
}

/** The whole answer when there is nothing to send: one empty message. */
const EMPTY_RESPONSE = Buffer.alloc(0);

interface Located {
  readonly block: OpenBlock;
  readonly locs: RunLocation[];
  readonly runs: Buffer[];
}

/** Executes reads; see the module comment. */
export class BlockReadExecutor {
  constructor(
    private readonly deps: { readonly directory: BlockDirectory; readonly fetcher: RangeFetcher; readonly metrics: GatewayMetrics },
    private readonly limits: ReadLimits,
  ) {}

  async read(q: ReadQuery, signal?: AbortSignal): Promise<ReadResult> {
    const start = q.start > q.block.windowStart ? q.start : q.block.windowStart;
    const end = q.end < q.block.windowEnd ? q.end : q.block.windowEnd;
    if (end <= start || q.ids.length === 0) return { blockId: '', messages: [EMPTY_RESPONSE], series: 0, samples: 0, bytes: 0 };
    const found = await this.locate(q, start, end, signal);
    if (!found) {
      this.deps.metrics.blocksMissing.inc();
      return { blockId: '', messages: [EMPTY_RESPONSE], series: 0, samples: 0, bytes: 0 };
    }
    const { block, locs, runs } = found;
    if (q.encoding === 'runs') {
      const items = locs.map((l, i) => ({ id: l.id, run: runs[i]!, crc: l.crc }));
      let samples = 0;
      let bytes = 0;
      for (const l of locs) {
        samples += l.sampleCount;
        bytes += l.length;
      }
      return { blockId: block.blockId, messages: runMessages(block.blockId, items, this.limits.maxMessageBytes), series: locs.length, samples, bytes };
    }
    const cols: SeriesColumns[] = [];
    let samples = 0;
    for (let i = 0; i < locs.length; i++) {
      const loc = locs[i]!;
      const s = sliceSamples(decodeCheckedRun(block.key, loc, runs[i]!), { start, end });
      if (s.timestamps.length === 0) continue;
      cols.push({ id: loc.id, samples: s });
      samples += s.timestamps.length;
    }
    return { blockId: block.blockId, messages: rawMessages(block.blockId, cols, this.limits.maxMessageBytes), series: cols.length, samples, bytes: samples * 16 };
  }

  /** Opens the block and fetches the runs, re-opening once if it was replaced mid-read. */
  private async locate(q: ReadQuery, start: bigint, end: bigint, signal?: AbortSignal): Promise<Located | null> {
    const { directory } = this.deps;
    let block = await directory.open(q.block, signal);
    for (let attempt = 0; ; attempt++) {
      if (!block) return null;
      try {
        return await this.fetchRuns(block, q, start, end, signal);
      } catch (err) {
        if (!(err instanceof RangeCheckError)) throw err;
        const fresh = await directory.refresh(q.block, signal);
        if (fresh && (fresh.blockId === block.blockId || attempt >= 1)) {
          throw new CorruptionError(block.key, err.offset, `${err.what} (block ${block.blockId})`, { cause: err });
        }
        block = fresh;
      }
    }
  }

  private async fetchRuns(block: OpenBlock, q: ReadQuery, start: bigint, end: bigint, signal?: AbortSignal): Promise<Located> {
    const { footer, ioi } = block;
    if (footer.numShards !== q.numShards) {
      throw new GrpcError(status.FAILED_PRECONDITION, `block "${block.key}" was written with ${footer.numShards} shards; the request says num_shards=${q.numShards}`);
    }
    // which pages hold the ids (ids are sorted, so pages come in order)
    const pageOf = new Int32Array(q.ids.length);
    const pageNos: number[] = [];
    for (let i = 0; i < q.ids.length; i++) {
      const p = findPage(ioi, q.ids[i]!);
      pageOf[i] = p;
      if (p >= 0 && pageNos[pageNos.length - 1] !== p) pageNos.push(p);
    }
    const pages = await this.deps.directory.pages(q.block, block, pageNos, signal);
    const pageAt = new Map(pageNos.map((p, i) => [p, pages[i]!]));
    const locs: RunLocation[] = [];
    let samples = 0;
    let bytes = 0;
    for (let i = 0; i < q.ids.length; i++) {
      const p = pageOf[i]!;
      if (p < 0) continue;
      const page = pageAt.get(p)!;
      const e = findInPage(page, q.ids[i]!);
      if (e < 0 || page.maxTimes[e]! < start || page.minTimes[e]! >= end) continue;
      const loc = locationOf(page, p, e);
      locs.push(loc);
      samples += loc.sampleCount;
      bytes += q.encoding === 'runs' ? loc.length : loc.sampleCount * 16;
    }
    if (samples > this.limits.maxSamplesPerResponse) {
      throw new GrpcError(
        status.RESOURCE_EXHAUSTED,
        `response would hold up to ${samples} samples, over the gateway's maxSamplesPerResponse (${this.limits.maxSamplesPerResponse}); ask for fewer series_ids or a shorter range`,
      );
    }
    if (bytes > this.limits.maxBytesPerResponse) {
      throw new GrpcError(
        status.RESOURCE_EXHAUSTED,
        `response would hold up to ${bytes} bytes, over the gateway's maxBytesPerResponse (${this.limits.maxBytesPerResponse}); ask for fewer series_ids or a shorter range`,
      );
    }
    const runs = await this.deps.fetcher.fetch(
      q.block.bucket,
      block.key,
      block.cacheId,
      locs.map((l) => ({ offset: l.offset, length: l.length, crc: l.crc, what: `run of series ${l.id}` })),
      signal,
    );
    return { block, locs, runs };
  }
}
