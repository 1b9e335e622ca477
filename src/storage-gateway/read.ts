/**
 * One Read call against one block: open the block, find the index pages of the wanted series,
 * locate their runs, check the limits, fetch the runs (cache, coalesced GETs), then build the
 * response messages (RAW: decoded and cut to the range; RUNS: the stored runs as they are).
 *
 * Everything is fetched and checked (each run's length and checksum, by the fetcher) before the
 * first message is made, so a damaged block fails the call before any sample leaves; the messages themselves are
 * made one at a time as the stream takes them (answers.ts: {@link Answer}), RAW runs decoded series by
 * series. When fresh bytes fail their check, the block's tail is read
 * again, by a read that starts after the failure (a background re-check in flight may have read
 * the object before it was replaced, and is not joined): a new block id means the object was replaced mid-read and the read restarts once on the
 * new block; the same block id means the object is damaged: DATA_LOSS naming it.
 *
 * A warm read (block, pages and runs in memory or the byte cache) runs synchronously from start to
 * messages ({@link BlockReadExecutor.readNow}): no promise per step and no abort signal; a step
 * that has to wait returns a promise, and only then is the call's signal asked for and raced.
 */
import { status } from '@grpc/grpc-js';
import { crc32c } from '@node-rs/crc32';
import { decodeLocatedRun, locationOf, type RunLocation } from '../block/reader.js';
import { sliceSamples } from '../format/slice.js';
import { GrpcError } from '../common/grpc-status.js';
import { CorruptionError } from '../errors.js';
import { joinRun, RUN_CODES_VERSION, runCodesVersionOf, type Samples } from '../format/run.js';
import { findPage } from '../index/index-of-index.js';
import { findInPage, type IndexPage } from '../index/page.js';
import { runHasSampleIn } from '../format/run.js';
import type { BlockAddress, BlockDirectory, OpenBlock } from './block-directory.js';
import { RangeCheckError, type RangeFetcher, type RangeWant } from './fetcher.js';
import type { GatewayMetrics } from './metrics.js';
import { raceSignal } from './single-flight.js';
import { RawAnswer, RunsAnswer, type Answer, type SeriesRun } from './answers.js';

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
  /** The newest RUNS version the client decodes (read.proto `runs_version`; 0: unset, taken as {@link RUNS_VERSION_UNSET}). */
  readonly runsVersion?: number;
  /**
   * The range was narrowed by the gateway (retention cut a day read): RUNS answers must then be
   * cut to it too (re-encoded), since the client cuts only to the range it asked for.
   */
  readonly narrowed?: boolean;
  /**
   * A look-up of a day block that the day router makes before the 4-hour blocks (day.ts): its
   * absence is the usual case before compaction, not a missing block, so it is not counted in
   * `blocks_missing` (the 4-hour read that follows counts what no source has).
   */
  readonly dayLookup?: boolean;
}

/**
 * Refuses a RUNS answer the client could not decode: `what` (e.g. a block of a newer format) needs
 * RUNS version `needed`, and the request's `runs_version` says less. FAILED_PRECONDITION, naming
 * both and what to do, instead of runs the client would report as corrupt.
 */
export function requireRunsVersion(q: ReadQuery, needed: number, what: string): void {
  const asked = q.runsVersion ?? 0;
  if ((asked === 0 ? RUNS_VERSION_UNSET : asked) >= needed) return;
  throw new GrpcError(
    status.FAILED_PRECONDITION,
    `${what} need RUNS version ${needed}; the request's runs_version is ${asked} (${asked === 0 ? `unset: taken as ${RUNS_VERSION_UNSET}` : `a client that decodes up to version ${asked}`}): read with encoding RAW, or upgrade the client`,
  );
}

/**
 * What a request without `runs_version` is taken to decode: version 2, the runs of block format
 * versions 1 to 3 and a series as several runs, which every query client decoded when the field
 * came (it came after format version 2). The clients of 0.1.0 decode version 1 only and cannot be
 * told apart: they cannot read blocks of format version 2 or later in RUNS (docs/protocol.md).
 */
export const RUNS_VERSION_UNSET = 2;

/** Limits of one response. */
export interface ReadLimits {
  readonly maxSamplesPerResponse: number;
  readonly maxBytesPerResponse: number;
  readonly maxMessageBytes: number;
}

/**
 * What a read produced: its answer, made one message at a time. `blockId` is '' when the window
 * has no block or the range misses it.
 */
export type ReadResult = Answer;

/** The answer when there is nothing to send: one empty message. */
function emptyAnswer(maxMessageBytes: number): Answer {
  return new RawAnswer('', 0, () => 0n, () => NO_SAMPLES, maxMessageBytes, 0);
}

const EMPTY_RUN = Buffer.alloc(0);
const NO_SAMPLES = { timestamps: new BigInt64Array(0), values: new Float64Array(0) };

/**
 * Where a read gets its abort signal, asked only when the read has to wait for something (so a
 * read answered from memory and the byte cache never needs one). Undefined: not abortable.
 */
export type SignalSource = () => AbortSignal | undefined;

const NO_SIGNAL: SignalSource = () => undefined;

interface Located {
  readonly block: OpenBlock;
  readonly locs: RunLocation[];
  readonly runs: Buffer[];
}

/** A run to fetch; its description (for errors only) is made when asked for. */
class RunWant implements RangeWant {
  readonly offset: number;
  readonly length: number;
  readonly crc: number;

  constructor(private readonly loc: RunLocation) {
    this.offset = loc.offset;
    this.length = loc.length;
    this.crc = loc.crc;
  }

  get what(): string {
    return `run of series ${this.loc.id}`;
  }
}

/**
 * A run whose timestamps its index page keeps (format version 2), made self-contained for a client
 * that has no index page: the page's timestamp section joined to the run, with its own checksum.
 */
function joinedRun(name: string, loc: RunLocation, run: Buffer): SeriesRun {
  const joined = joinRun(loc.timestamps!, run, { object: name, offset: loc.offset });
  return { id: loc.id, run: joined, crc: crc32c(joined) };
}

/**
 * The runs a RUNS answer sends of located runs, with their sample counts. Every run's length and
 * CRC were checked by the fetcher (fresh, cached or hot) before this.
 */
function runItems(found: Located, start: bigint, end: bigint): { items: SeriesRun[]; counts: number[] } {
  const { block, locs, runs } = found;
  const items: SeriesRun[] = [];
  const counts: number[] = [];
  for (let i = 0; i < locs.length; i++) {
    const l = locs[i]!;
    // a run reaching past a bound of the range may have no sample inside (a gap): such a
    // series is left out, as read.proto promises (runs inside the range need no decoding)
    const inside = l.minTime >= start && l.maxTime < end;
    if (!inside && !runHasSampleIn(runs[i]!, { object: block.key, offset: l.offset }, start, end, l.timestamps)) continue;
    // a run sharing its page's timestamps is sent whole, with them (and its own CRC)
    items.push(l.timestamps ? joinedRun(block.key, l, runs[i]!) : { id: l.id, run: runs[i]!, crc: l.crc });
    counts.push(l.sampleCount);
  }
  return { items, counts };
}

/** Waits for `p`, or rejects when the source's signal aborts first. */
function raced<T>(p: Promise<T>, signal: SignalSource): Promise<T> {
  return raceSignal(p, signal());
}

/** Executes reads; see the module comment. */
export class BlockReadExecutor {
  constructor(
    private readonly deps: { readonly directory: BlockDirectory; readonly fetcher: RangeFetcher; readonly metrics: GatewayMetrics },
    private readonly limits: ReadLimits,
  ) {}

  async read(q: ReadQuery, signal?: AbortSignal): Promise<ReadResult> {
    return this.readNow(q, signal ? () => signal : NO_SIGNAL);
  }

  /**
   * Like {@link read}, but returns the result itself (no promise) when the block, its pages and
   * the runs are all in memory or the byte cache: the warm path makes no promise, timer or abort
   * signal. `signal` is asked for only when the read has to wait.
   */
  readNow(q: ReadQuery, signal: SignalSource): ReadResult | Promise<ReadResult> {
    const range = rangeOf(q);
    if (!range) return emptyAnswer(this.limits.maxMessageBytes);
    const { start, end } = range;
    const found = this.locate(q, start, end, signal);
    return found instanceof Promise ? found.then((f) => this.answer(q, f, start, end)) : this.answer(q, found, start, end);
  }

  /** Counts a read of a block no source has (a day block looked for first is not one: ReadQuery.dayLookup). */
  private missing(q: ReadQuery): void {
    if (q.dayLookup !== true) this.deps.metrics.blocksMissing.inc();
  }

  /**
   * The query's runs located in its block, with its range cut to the window (for answers made of
   * several blocks); 'none' when the range misses the window or asks for no series, null when the
   * block does not exist.
   */
  private async located(q: ReadQuery, signal: SignalSource): Promise<{ readonly found: Located; readonly start: bigint; readonly end: bigint } | 'none' | null> {
    const range = rangeOf(q);
    if (!range) return 'none';
    const found = await this.locate(q, range.start, range.end, signal);
    if (!found) {
      this.missing(q);
      return null;
    }
    return { found, ...range };
  }

  /**
   * The samples of the query's series in its block, decoded and cut to the range (for answers
   * made of several blocks: a day read from its blocks, day.ts). Null when the block does not
   * exist; no series when the range misses the window.
   */
  async samples(
    q: ReadQuery,
    signal: SignalSource,
    admit?: (samples: number) => void,
  ): Promise<{ readonly blockId: string; readonly ids: bigint[]; readonly samples: Samples[] } | null> {
    // the gateway decodes these runs itself, whatever runs the client decodes
    const got = await this.located(q.encoding === 'runs' ? { ...q, runsVersion: RUN_CODES_VERSION } : q, signal);
    if (got === 'none') return { blockId: '', ids: [], samples: [] };
    if (!got) return null;
    const { found, start, end } = got;
    if (admit) {
      // before decoding: the samples the range keeps for sure (runs wholly inside it), so that a
      // caller joining several blocks can refuse before it holds them all decoded
      let sure = 0;
      for (const loc of found.locs) if (loc.minTime >= start && loc.maxTime < end) sure += loc.sampleCount;
      admit(sure);
    }
    const ids: bigint[] = [];
    const samples: Samples[] = [];
    const range = { start, end };
    for (let i = 0; i < found.locs.length; i++) {
      const s = sliceSamples(decodeLocatedRun(found.block.key, found.locs[i]!, found.runs[i]!), range);
      if (s.timestamps.length === 0) continue;
      ids.push(found.locs[i]!.id);
      samples.push(s);
    }
    return { blockId: found.block.blockId, ids, samples };
  }

  /**
   * The runs of the query's series in its block as a RUNS answer sends them (stored, or joined
   * with the timestamps their page shares), for answers made of several blocks without decoding
   * (a day read from its blocks, day.ts). Null when the block does not exist.
   */
  async storedRuns(q: ReadQuery, signal: SignalSource): Promise<{ readonly blockId: string; readonly items: SeriesRun[]; readonly counts: number[] } | null> {
    const got = await this.located(q, signal);
    if (got === 'none') return { blockId: '', items: [], counts: [] };
    if (!got) return null;
    return { blockId: got.found.block.blockId, ...runItems(got.found, got.start, got.end) };
  }

  /** The answer of located runs (RAW decoded as the messages are made). */
  private answer(q: ReadQuery, found: Located | null, start: bigint, end: bigint): ReadResult {
    const max = this.limits.maxMessageBytes;
    if (!found) {
      this.missing(q);
      return emptyAnswer(max);
    }
    // every run's length and CRC were checked by the fetcher (fresh, cached or hot) before this
    const { block, locs, runs } = found;
    if (q.encoding === 'runs') {
      const { items, counts } = runItems(found, start, end);
      return new RunsAnswer(block.blockId, items, counts, max);
    }
    const range = { start, end };
    let samplesMax = 0;
    for (const l of locs) samplesMax += l.sampleCount;
    return new RawAnswer(
      block.blockId,
      locs.length,
      (i) => locs[i]!.id,
      (i) => {
        const s = sliceSamples(decodeLocatedRun(block.key, locs[i]!, runs[i]!), range);
        runs[i] = EMPTY_RUN; // decoded: its bytes are not needed any more
        return s;
      },
      max,
      samplesMax,
    );
  }

  /**
   * Opens the block and fetches the runs, re-opening once if it was replaced mid-read; without a
   * promise when nothing has to be waited for.
   */
  private locate(q: ReadQuery, start: bigint, end: bigint, signal: SignalSource): Located | null | Promise<Located | null> {
    const { directory } = this.deps;
    const block = directory.openCached(q.block);
    if (block === null) return null;
    if (block === undefined) return this.locateAsync(q, start, end, signal, null);
    const r = this.fetchRuns(block, q, start, end, signal);
    return r instanceof Promise ? this.locateAsync(q, start, end, signal, { block, pending: r }) : r;
  }

  /**
   * The waiting part of {@link locate}: opens the block (unless `first` is an attempt already
   * running on it) and fetches the runs; a fresh range failing its check re-reads the tail, and a
   * new block id restarts the read once on the new block.
   */
  private async locateAsync(
    q: ReadQuery,
    start: bigint,
    end: bigint,
    signal: SignalSource,
    first: { readonly block: OpenBlock; readonly pending: Promise<Located> } | null,
  ): Promise<Located | null> {
    const { directory } = this.deps;
    let block = first ? first.block : await directory.refreshOrStale(q.block, signal());
    let pending: Promise<Located> | null = first ? first.pending : null;
    for (let attempt = 0; ; attempt++) {
      if (!block) return null;
      try {
        const r = pending ?? this.fetchRuns(block, q, start, end, signal);
        pending = null;
        return r instanceof Promise ? await r : r;
      } catch (err) {
        if (!(err instanceof RangeCheckError)) throw err;
        // a tail read of its own: one in flight may have read the object before it was replaced
        const fresh = await directory.refreshAfter(q.block, signal());
        if (fresh && (fresh.blockId === block.blockId || attempt >= 1)) {
          throw new CorruptionError(block.key, err.offset, `${err.what} (block ${block.blockId})`, { cause: err });
        }
        block = fresh;
      }
    }
  }

  /** Finds the wanted runs in the block's pages, checks the limits and fetches the runs. */
  private fetchRuns(block: OpenBlock, q: ReadQuery, start: bigint, end: bigint, signal: SignalSource): Located | Promise<Located> {
    const { footer, ioi } = block;
    if (footer.numShards !== q.numShards) {
      throw new GrpcError(status.FAILED_PRECONDITION, `block "${block.key}" was written with ${footer.numShards} shards; the request says num_shards=${q.numShards}`);
    }
    if (q.encoding === 'runs') requireRunsVersion(q, runCodesVersionOf(footer.version), `block "${block.key}" has format version ${footer.version}, whose runs`);
    // which pages hold the ids (ids are sorted, so pages come in order)
    const pageOf = new Int32Array(q.ids.length);
    const pageNos: number[] = [];
    for (let i = 0; i < q.ids.length; i++) {
      const p = findPage(ioi, q.ids[i]!);
      pageOf[i] = p;
      if (p >= 0 && pageNos[pageNos.length - 1] !== p) pageNos.push(p);
    }
    const pages = this.deps.directory.pagesOrWait(q.block, block, pageNos);
    if (pages instanceof Promise) return raced(pages, signal).then((got) => this.fetchRunsIn(block, q, start, end, signal, pageOf, got));
    return this.fetchRunsIn(block, q, start, end, signal, pageOf, pages);
  }

  /** The second half of {@link fetchRuns}, once the pages are there (`pages[k]`: the k-th distinct page of `pageOf`). */
  private fetchRunsIn(block: OpenBlock, q: ReadQuery, start: bigint, end: bigint, signal: SignalSource, pageOf: Int32Array, pages: readonly IndexPage[]): Located | Promise<Located> {
    const locs: RunLocation[] = [];
    let samples = 0;
    let bytes = 0;
    let k = -1;
    let last = -1;
    for (let i = 0; i < q.ids.length; i++) {
      const p = pageOf[i]!;
      if (p < 0) continue;
      if (p !== last) {
        k++;
        last = p;
      }
      const page = pages[k]!;
      const e = findInPage(page, q.ids[i]!);
      if (e < 0 || page.maxTimes[e]! < start || page.minTimes[e]! >= end) continue;
      const loc = locationOf(page, p, e, block.footer.version);
      locs.push(loc);
      samples += loc.sampleCount;
      // a run sent with the timestamps its page shares carries them itself (joinedRun)
      bytes += q.encoding === 'runs' ? loc.length + (loc.timestamps ? loc.timestamps.bytes.length + 8 : 0) : loc.sampleCount * 16;
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
    const wants = new Array<RangeWant>(locs.length);
    for (let i = 0; i < locs.length; i++) wants[i] = new RunWant(locs[i]!);
    const runs = this.deps.fetcher.fetchOrWait(q.block.bucket, block.key, block.cacheId, wants);
    if (runs instanceof Promise) return raced(runs, signal).then((got) => ({ block, locs, runs: got }));
    return { block, locs, runs };
  }
}

/** The query's range cut to its block's window, or null when nothing of the block is asked for. */
function rangeOf(q: ReadQuery): { readonly start: bigint; readonly end: bigint } | null {
  const start = q.start > q.block.windowStart ? q.start : q.block.windowStart;
  const end = q.end < q.block.windowEnd ? q.end : q.block.windowEnd;
  return end <= start || q.ids.length === 0 ? null : { start, end };
}
