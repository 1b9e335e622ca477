/**
 * Reads of closed days: which source answers a read, the day block or the 4-hour blocks. The
 * protocol (src/lifecycle/README.md, "Day blocks") makes a day block hold every sample of the
 * 4-hour blocks it was merged from, and deletes those only `daySourceGraceMs` after it was
 * published, longer than this gateway's staleness bounds. So each read is answered from exactly
 * one source, never both:
 *
 * - a window of a day that ended less than `dayBlocksAfterMs` ago: its 4-hour block(s), as always;
 * - a window (one block's, or the whole day's) of a closed day: the day block when it exists
 *   (cut to the window and range); otherwise the 4-hour blocks. When one of those is missing too,
 *   the day block is looked up once more in the bucket (not from the negative cache), so a read
 *   racing the deletion of a 4-hour block after a long stall still finds its samples in the day
 *   block. A day that the bucket's day-block index (./day-index.ts) trusts to have no day block
 *   is read from its 4-hour blocks first, with the same look-up when one is missing: no GET for
 *   a day block that does not exist;
 * - a day read answered from its 4-hour blocks is one answer: each series' stored runs of the
 *   blocks one after the other in time order (RUNS; the windows are disjoint), or its samples
 *   joined as columns (RAW).
 */
import { crc32c } from '@node-rs/crc32';
import { status } from '@grpc/grpc-js';
import { GrpcError } from '../common/grpc-status.js';
import { DAY_MS, dayBlockKey, dayBlocksFit, dayStartOf } from '../format/day-key.js';
import { blockKey } from '../format/key.js';
import { concatSamples } from '../format/slice.js';
import { encodeRun, RUN_CODES_VERSION, type Samples } from '../format/run.js';
import type { BlockAddress, BlockDirectory } from './block-directory.js';
import type { DayIndexes } from './day-index.js';
import type { GatewayMetrics } from './metrics.js';
import { requireRunsVersion, type BlockReadExecutor, type ReadQuery, type ReadResult, type SignalSource } from './read.js';
import { RawAnswer, RunsAnswer, type SeriesRun } from './answers.js';

/** What a RUNS answer of runs the gateway encodes is, in a runs_version refusal. */
const GATEWAY_RUNS = 'runs encoded by the gateway (a day read it joined or cut)';
/**
 * The RUNS version of runs the gateway encodes: 2 at least (version 1 clients decode neither a
 * series as several runs nor the codes of format version 2, which the encoder uses), and BINNED
 * sequences (version 3) only for a client that declares it decodes them.
 */
const GATEWAY_RUNS_VERSION = 2;
function gatewayCodes(q: ReadQuery): number {
  return (q.runsVersion ?? 0) >= RUN_CODES_VERSION ? RUN_CODES_VERSION : GATEWAY_RUNS_VERSION;
}

export interface DayRouterOptions {
  readonly blockDurationMs: number;
  readonly dayBlocksAfterMs: number;
  /** How long a fresh look-up of a day block (after a missing 4-hour block) is not repeated. */
  readonly recheckMs: number;
  readonly maxMessageBytes: number;
  readonly maxSamplesPerResponse: number;
  readonly maxBytesPerResponse: number;
}

/** The id of the first block read, '' when none was. */
function blockIdOf(parts: readonly ({ readonly blockId: string } | null)[]): string {
  for (const p of parts) if (p !== null && p.blockId !== '') return p.blockId;
  return '';
}

/**
 * The entries `each` puts for the blocks `parts` (in time order), grouped by series: ids
 * ascending, each one's entries in block order.
 */
function seriesInOrder<T, E>(parts: readonly (T | null)[], each: (part: T, put: (id: bigint, e: E) => void) => void): [bigint, E[]][] {
  const byId = new Map<bigint, E[]>();
  const put = (id: bigint, e: E): void => {
    let list = byId.get(id);
    if (!list) byId.set(id, (list = []));
    list.push(e);
  };
  for (const p of parts) if (p !== null) each(p, put);
  return [...byId].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Day keys looked up again recently, at most (then forgotten at once). */
const MAX_RECHECKS = 100_000;

/** See the module comment. */
export class DayRouter {
  private readonly rechecked = new Map<string, number>();
  private readonly fromDay;
  private readonly fromBlocks;
  private readonly day: bigint;
  private readonly blockMs: bigint;
  private readonly enabled: boolean;

  constructor(
    private readonly deps: {
      readonly executor: BlockReadExecutor;
      readonly directory: BlockDirectory;
      readonly metrics: GatewayMetrics;
      readonly now: () => number;
      /** The buckets' day-block indexes (none: closed days look for the day block first). */
      readonly dayIndexes?: DayIndexes;
    },
    private readonly opts: DayRouterOptions,
  ) {
    this.fromDay = deps.metrics.dayReads.labels('day');
    this.fromBlocks = deps.metrics.dayReads.labels('blocks');
    this.day = BigInt(DAY_MS);
    this.blockMs = BigInt(opts.blockDurationMs);
    this.enabled = dayBlocksFit(opts.blockDurationMs);
  }

  /** Answers `q` (a block's window, or a day's); synchronously when nothing has to be fetched. */
  readNow(q: ReadQuery, signal: SignalSource): ReadResult | Promise<ReadResult> {
    const { executor } = this.deps;
    if (!this.enabled) return executor.readNow(q, signal);
    const isDay = q.block.windowEnd - q.block.windowStart === this.day;
    const dayStart = dayStartOf(q.block.windowStart);
    if (dayStart + this.day + BigInt(this.opts.dayBlocksAfterMs) > BigInt(Math.floor(this.deps.now()))) {
      if (!isDay) return executor.readNow(q, signal);
      const one = this.oneWindow(q);
      return one !== null ? executor.readNow(one, signal) : this.blocksAnswer(q, signal, null);
    }
    const dayAddr: BlockAddress = { ...q.block, windowStart: dayStart, windowEnd: dayStart + this.day, key: dayBlockKey(q.block.tenant, q.block.shard, dayStart) };
    const inDay: ReadQuery = {
      ...q,
      block: dayAddr,
      dayLookup: true,
      start: q.start > q.block.windowStart ? q.start : q.block.windowStart,
      end: q.end < q.block.windowEnd ? q.end : q.block.windowEnd,
    };
    if (inDay.end <= inDay.start || q.ids.length === 0) return executor.readNow(inDay, signal);
    if (this.deps.dayIndexes?.lookup(q.block, dayStart) === 'blocks') {
      // no day block as of a listing whose 4-hour blocks are all still there: read those, and
      // the day block only when one of them is missing
      if (!isDay) return this.blockAnswer(q, signal, inDay);
      const one = this.oneWindow(q);
      return one !== null ? this.blockAnswer(one, signal, inDay) : this.blocksAnswer(q, signal, inDay);
    }
    if (q.narrowed === true && q.encoding === 'runs') return this.narrowedAnswer(q, signal, inDay);
    const got = executor.readNow(inDay, signal);
    const pick = (a: ReadResult): ReadResult | Promise<ReadResult> => {
      if (a.blockId !== '') {
        this.fromDay.inc();
        return a;
      }
      if (!isDay) return this.blockAnswer(q, signal, inDay);
      const one = this.oneWindow(q);
      return one !== null ? this.blockAnswer(one, signal, inDay) : this.blocksAnswer(q, signal, inDay);
    };
    return got instanceof Promise ? got.then(pick) : pick(got);
  }

  /**
   * A day read whose range lies in one block window, as the read of that block (null otherwise,
   * or for a narrowed RUNS read, whose runs must be cut): the block's answer as it is (RUNS: the
   * stored runs, no decoding), exactly what the read cost before day blocks.
   */
  private oneWindow(q: ReadQuery): ReadQuery | null {
    if (q.narrowed === true && q.encoding === 'runs') return null;
    const from = q.start > q.block.windowStart ? q.start : q.block.windowStart;
    const to = q.end < q.block.windowEnd ? q.end : q.block.windowEnd;
    if (to <= from) return null;
    const w = q.block.windowStart + ((from - q.block.windowStart) / this.blockMs) * this.blockMs;
    if (to > w + this.blockMs) return null;
    return { ...q, block: { ...q.block, windowStart: w, windowEnd: w + this.blockMs, key: blockKey(q.block.tenant, q.block.shard, w) } };
  }

  /**
   * A RUNS read whose range the gateway narrowed (retention): the stored runs hold samples the
   * client would keep, so the day block's samples are cut to the range and sent re-encoded.
   */
  private async narrowedAnswer(q: ReadQuery, signal: SignalSource, inDay: ReadQuery): Promise<ReadResult> {
    // refused before any block is read and decoded: the answer is runs the gateway encodes
    requireRunsVersion(q, GATEWAY_RUNS_VERSION, GATEWAY_RUNS);
    return (await this.fromDayBlock(q, inDay, signal)) ?? this.blocksAnswer(q, signal, inDay);
  }

  /**
   * A block's window of a closed day without a day block: the 4-hour block (synchronously when it
   * is warm), or the day block after all when the block is missing.
   */
  private blockAnswer(q: ReadQuery, signal: SignalSource, inDay: ReadQuery): ReadResult | Promise<ReadResult> {
    const r = this.deps.executor.readNow(q, signal);
    const pick = (a: ReadResult): ReadResult | Promise<ReadResult> => {
      if (a.blockId !== '') {
        this.fromBlocks.inc();
        return a;
      }
      return this.dayAfterAll(q, inDay, signal).then((d) => {
        if (d !== null) return d;
        this.fromBlocks.inc();
        return a;
      });
    };
    return r instanceof Promise ? r.then(pick) : pick(r);
  }

  /**
   * The day block's answer for a read whose 4-hour block is missing, or null when there is no day
   * block: first as the directory knows it (its caches: a day block found once answers every
   * later read at once), then by a fresh look-up (at most once per `recheckMs` per day block).
   */
  private async dayAfterAll(q: ReadQuery, inDay: ReadQuery, signal: SignalSource): Promise<ReadResult | null> {
    const known = await this.fromDayBlock(q, inDay, signal);
    if (known !== null) return known;
    return (await this.dayAppeared(inDay.block, signal)) ? this.fromDayBlock(q, inDay, signal) : null;
  }

  /**
   * `q` answered from the day block (`inDay`), or null when the directory knows none. A RUNS read
   * that the gateway narrowed (retention) gets the day block's samples cut to its range and
   * re-encoded: the stored runs would carry samples from before the retention bound, which the
   * client keeps (it cuts to the range it asked for).
   */
  private async fromDayBlock(q: ReadQuery, inDay: ReadQuery, signal: SignalSource): Promise<ReadResult | null> {
    if (q.narrowed === true && q.encoding === 'runs') {
      const got = await this.deps.executor.samples(inDay, signal);
      if (got === null) return null;
      this.fromDay.inc();
      return this.encode(q, got.blockId, got.ids, got.samples);
    }
    const a = await this.deps.executor.readNow(inDay, signal);
    if (a.blockId === '') return null;
    this.fromDay.inc();
    return a;
  }

  /** Whether a fresh look-up finds the day block (at most once per `recheckMs` per day block). */
  private async dayAppeared(addr: BlockAddress, signal: SignalSource): Promise<boolean> {
    const now = this.deps.now();
    const k = `${addr.scope}/${addr.key}`;
    const until = this.rechecked.get(k);
    if (until !== undefined && until > now) return false;
    if (this.rechecked.size >= MAX_RECHECKS) this.rechecked.clear();
    this.rechecked.set(k, now + this.opts.recheckMs);
    return (await this.deps.directory.refresh(addr, signal())) !== null;
  }

  /**
   * A day read from its 4-hour blocks (`inDay`: the same read of the day block, for a closed day;
   * null for a day not closed yet). RUNS sends each block's stored run as it is, one after the
   * other per series (read.proto: a fragment whose run CRC differs from the previous one of the
   * same series starts its next run); RAW, and a RUNS read whose range the gateway narrowed, send
   * the decoded samples joined (RUNS: re-encoded as one run). Two consecutive stored runs of a
   * series with the same CRC, which a client could not tell apart, are re-encoded too.
   */
  private async blocksAnswer(q: ReadQuery, signal: SignalSource, inDay: ReadQuery | null): Promise<ReadResult> {
    const { executor } = this.deps;
    if (q.encoding === 'runs' && q.narrowed !== true) {
      // (each block's runs are checked against the request's version as they are read)
      requireRunsVersion(q, GATEWAY_RUNS_VERSION, 'a day read from its 4-hour blocks sends a series as several runs, which');
      const got = await this.readWindows(q, signal, inDay, (w) => executor.storedRuns(w, signal));
      if (!Array.isArray(got)) return got;
      const runs = seriesInOrder<NonNullable<(typeof got)[number]>, { run: SeriesRun; count: number }>(got, (g, put) => {
        for (let i = 0; i < g.items.length; i++) put(g.items[i]!.id, { run: g.items[i]!, count: g.counts[i]! });
      });
      let samples = 0;
      let bytes = 0;
      let distinct = true;
      for (const [, list] of runs) {
        for (let i = 0; i < list.length; i++) {
          samples += list[i]!.count;
          bytes += list[i]!.run.run.length;
          if (i > 0 && list[i]!.run.crc === list[i - 1]!.run.crc) distinct = false;
        }
      }
      if (distinct) {
        this.checkLimits(samples, bytes);
        if (inDay !== null) this.fromBlocks.inc();
        const flat = runs.flatMap(([, list]) => list);
        return new RunsAnswer(blockIdOf(got), flat.map((e) => e.run), flat.map((e) => e.count), this.opts.maxMessageBytes);
      }
    }
    // the limits are checked on the samples each block keeps for sure as it is located, before
    // it is decoded: the joined answer is refused before every block of it is held decoded
    let admitted = 0;
    const admit = (n: number): void => {
      admitted += n;
      this.checkLimits(admitted, q.encoding === 'raw' ? admitted * 16 : 0);
    };
    const got = await this.readWindows(q, signal, inDay, (w) => executor.samples(w, signal, admit));
    if (!Array.isArray(got)) return got;
    const series = seriesInOrder<NonNullable<(typeof got)[number]>, Samples>(got, (g, put) => {
      for (let i = 0; i < g.ids.length; i++) put(g.ids[i]!, g.samples[i]!);
    });
    let total = 0;
    for (const [, list] of series) for (const s of list) total += s.timestamps.length;
    this.checkLimits(total, q.encoding === 'raw' ? total * 16 : 0);
    if (inDay !== null) this.fromBlocks.inc();
    return this.encode(q, blockIdOf(got), series.map(([id]) => id), series.map(([, list]) => concatSamples(list)));
  }

  /**
   * Reads each 4-hour window of `q` with `read`, in time order (null: no block). When one is
   * missing on a closed day and a fresh look-up finds the day block after all, that answer instead.
   */
  private async readWindows<T extends { readonly blockId: string }>(
    q: ReadQuery,
    signal: SignalSource,
    inDay: ReadQuery | null,
    read: (w: ReadQuery) => Promise<T | null>,
  ): Promise<(T | null)[] | ReadResult> {
    const parts: Promise<T | null>[] = [];
    for (let w = q.block.windowStart; w < q.block.windowEnd; w += this.blockMs) {
      if (w + this.blockMs <= q.start || w >= q.end) continue;
      const block: BlockAddress = { ...q.block, windowStart: w, windowEnd: w + this.blockMs, key: blockKey(q.block.tenant, q.block.shard, w) };
      parts.push(read({ ...q, block }));
    }
    const got = await Promise.all(parts);
    if (inDay !== null && got.some((g) => g === null)) {
      const d = await this.dayAfterAll(q, inDay, signal);
      if (d !== null) return d;
    }
    return got;
  }

  /** The response limits over the answer joined from several blocks (each block's own were checked as it was read). */
  private checkLimits(samples: number, bytes: number): void {
    if (samples > this.opts.maxSamplesPerResponse) {
      throw new GrpcError(
        status.RESOURCE_EXHAUSTED,
        `response would hold ${samples} samples, over the gateway's maxSamplesPerResponse (${this.opts.maxSamplesPerResponse}); ask for fewer series_ids or a shorter range`,
      );
    }
    if (bytes > this.opts.maxBytesPerResponse) {
      throw new GrpcError(
        status.RESOURCE_EXHAUSTED,
        `response would hold ${bytes} bytes, over the gateway's maxBytesPerResponse (${this.opts.maxBytesPerResponse}); ask for fewer series_ids or a shorter range`,
      );
    }
  }

  /** The answer of decoded samples (ids ascending): columns (RAW) or one fresh run per series (RUNS). */
  private encode(q: ReadQuery, blockId: string, ids: readonly bigint[], samples: readonly Samples[]): ReadResult {
    if (q.encoding === 'raw') {
      let n = 0;
      for (const s of samples) n += s.timestamps.length;
      return new RawAnswer(blockId, ids.length, (i) => ids[i]!, (i) => samples[i]!, this.opts.maxMessageBytes, n);
    }
    requireRunsVersion(q, GATEWAY_RUNS_VERSION, GATEWAY_RUNS);
    const codes = gatewayCodes(q);
    const runs: SeriesRun[] = [];
    const counts: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const run = encodeRun(samples[i]!, { codes });
      runs.push({ id: ids[i]!, run, crc: crc32c(run) });
      counts.push(samples[i]!.timestamps.length);
    }
    return new RunsAnswer(blockId, runs, counts, this.opts.maxMessageBytes);
  }
}

