/**
 * Streaming block writer. Series arrive in increasing ID order; each one's samples are encoded
 * into a run and written out through a {@link ByteSink} (a multipart upload, a temp file) in
 * buffered chunks. The runs of one index page are held until the page is full: series of the page
 * whose timestamps are identical (every series of one scrape) then keep them once, in the page,
 * and their runs hold values only (format version 2). Only the index (a few bytes per series) stays
 * in memory until the end, when the index pages, the index of index and the footer are appended.
 */
import { randomBytes } from 'node:crypto';
import { crc32c } from '@node-rs/crc32';
import { InvalidArgumentError } from '../errors.js';
import { ByteWriter } from '../format/bytes.js';
import { encodeFooter, FOOTER_LEN, FORMAT_VERSION, IOI_ENTRY_BYTES, MAX_TENANT_BYTES, type Footer } from '../format/footer.js';
import { validateTenant } from '../format/key.js';
import { encodeRunChecked, lz4Run, RUN_LZ4, splitRun, type Samples, type SplitRun } from '../format/run.js';
import { encodeIoi, type PageRef } from '../index/index-of-index.js';
import { decodePage, PageBuilder } from '../index/page.js';

/** Where block bytes go. `ObjectUpload` of the bucket layer satisfies it. */
export interface ByteSink {
  /**
   * Appends `chunk`; once the promise settles the sink holds no reference to it (as
   * `ObjectUpload.write` promises): the writer hands over a view of its own buffer and reuses it.
   */
  write(chunk: Uint8Array): Promise<void>;
  complete(): Promise<unknown>;
  abort(): Promise<void>;
}

/** The identity of a block: whose data, which shard, which window. */
export interface BlockMeta {
  readonly tenant: string;
  readonly shard: number;
  readonly numShards: number;
  /** The window `[windowStart, windowEnd)` in ms. */
  readonly windowStart: bigint;
  readonly windowEnd: bigint;
}

export interface BlockWriterOptions {
  /** Expected number of series; sizes index pages so the index of index stays small. */
  readonly expectedSeries?: number;
  /** Series per index page (overrides the size derived from expectedSeries). */
  readonly seriesPerPage?: number;
  /** Try lz4 on runs (default true). */
  readonly lz4?: boolean;
  /** Bytes buffered before a write to the sink (default 1 MiB). */
  readonly bufferBytes?: number;
  /** Clock for the creation time (default Date.now). */
  readonly now?: () => number;
  /** Block id (32 hex digits); random by default. */
  readonly blockId?: string;
}

/** Default number of series per index page. */
export const DEFAULT_SERIES_PER_PAGE = 1024;
/** The writer keeps the index of index under this size so one suffix read fetches it. */
export const IOI_TARGET_BYTES = 64 * 1024 - FOOTER_LEN;
const U64_MAX = (1n << 64n) - 1n;

/** A run waiting for its page to close, when the writer knows which timestamps its page shares. */
interface PendingRun {
  readonly id: bigint;
  /** The run as added (with its own timestamps). */
  readonly run: Uint8Array;
  /** Whether `run` is plain and should be tried with lz4 when it keeps its timestamps. */
  readonly packable: boolean;
  readonly split: SplitRun;
  /** Identity of the run's timestamp section: layout, count and bytes. */
  readonly key: string;
  readonly count: number;
  readonly minTime: bigint;
  readonly maxTime: bigint;
}

/** Result of a finished block. */
export interface WrittenBlock {
  readonly footer: Footer;
  /** Total object size in bytes. */
  readonly size: number;
}

/** Builds one block; see the module comment. Not reusable after finish() or abort(). */
export class BlockWriter {
  private readonly sink: ByteSink;
  private readonly meta: BlockMeta;
  /** Whether runs are tried with lz4 (see BlockWriterOptions.lz4). */
  readonly lz4: boolean;
  private readonly seriesPerPage: number;
  private readonly bufferBytes: number;
  private readonly now: () => number;
  private readonly blockId: string;
  private readonly buf: ByteWriter;
  private readonly pages: Uint8Array[] = [];
  private readonly refs: PageRef[] = [];
  private page = new PageBuilder();
  private pending: PendingRun[] = [];
  private offset = 0;
  private samplesCrc = 0;
  private lastId = -1n;
  private seriesCount = 0;
  private sampleCount = 0;
  private minTime = 0n;
  private maxTime = 0n;
  private state: 'open' | 'done' | 'failed' = 'open';

  constructor(sink: ByteSink, meta: BlockMeta, opts: BlockWriterOptions = {}) {
    validateTenant(meta.tenant);
    if (Buffer.byteLength(meta.tenant) > MAX_TENANT_BYTES) throw new InvalidArgumentError('tenant', 'too long');
    if (!Number.isInteger(meta.numShards) || meta.numShards < 1) throw new InvalidArgumentError('numShards', `${meta.numShards} is not a positive integer`);
    if (!Number.isInteger(meta.shard) || meta.shard < 0 || meta.shard >= meta.numShards) {
      throw new InvalidArgumentError('shard', `${meta.shard} is outside 0..${meta.numShards - 1}`);
    }
    if (meta.windowEnd <= meta.windowStart) throw new InvalidArgumentError('window', 'end must be after start');
    this.sink = sink;
    this.meta = meta;
    this.lz4 = opts.lz4 ?? true;
    const fromExpected = opts.expectedSeries ? Math.ceil(opts.expectedSeries / Math.floor(IOI_TARGET_BYTES / IOI_ENTRY_BYTES)) : 0;
    this.seriesPerPage = opts.seriesPerPage ?? Math.max(DEFAULT_SERIES_PER_PAGE, fromExpected);
    if (!(this.seriesPerPage >= 1)) throw new InvalidArgumentError('seriesPerPage', 'must be at least 1');
    this.bufferBytes = opts.bufferBytes ?? 1 << 20;
    this.now = opts.now ?? Date.now;
    this.blockId = opts.blockId ?? randomBytes(16).toString('hex');
    this.buf = new ByteWriter(this.bufferBytes + 65536);
  }

  /**
   * Adds the samples of series `id`, which must be greater than every id added before and belong
   * to this block's shard; timestamps must strictly increase and lie in the block's window.
   * Nothing is added if it throws.
   */
  async add(id: bigint, samples: Samples): Promise<void> {
    const n = samples.timestamps.length;
    this.checkSeries(id, n, samples.timestamps[0] ?? 0n, samples.timestamps[n - 1] ?? 0n);
    // checked: a run made here replaces what was stored (a merge, a day block)
    const run = encodeRunChecked(samples, { lz4: false }, `series ${id}`);
    await this.addRun(id, run, this.lz4, n, samples.timestamps[0]!, samples.timestamps[n - 1]!);
  }

  /** The rules of {@link add} for a series of `count` samples from `first` to `last`. */
  private checkSeries(id: bigint, count: number, first: bigint, last: bigint): void {
    this.checkOpen();
    if (id < 0n || id > U64_MAX) throw new InvalidArgumentError('seriesId', `${id} is not a uint64`);
    if (id <= this.lastId) throw new InvalidArgumentError('seriesId', `series ${id} does not follow ${this.lastId}`);
    if (id % BigInt(this.meta.numShards) !== BigInt(this.meta.shard)) {
      throw new InvalidArgumentError('seriesId', `series ${id} belongs to shard ${id % BigInt(this.meta.numShards)}, not ${this.meta.shard}`);
    }
    if (count === 0) throw new InvalidArgumentError('samples', `series ${id} has no samples`);
    if (first < this.meta.windowStart || last >= this.meta.windowEnd || last < first) {
      throw new InvalidArgumentError('timestamps', `series ${id} has samples outside the window [${this.meta.windowStart}, ${this.meta.windowEnd})`);
    }
  }

  /**
   * Adds series `id` as an encoded run (docs/format/chunk.md) of `count` samples from `first` to
   * `last`, without decoding it: for runs that were encoded already (the WAL's). The block holds
   * what {@link add} would have written for the same samples: the run, lz4-compressed when this
   * writer uses lz4, it is plain and lz4 pays, or its values alone when its page shares its
   * timestamps. The same rules as {@link add} apply; the caller vouches that the run holds what
   * `count`, `first` and `last` say.
   */
  async addEncoded(id: bigint, run: Uint8Array, count: number, first: bigint, last: bigint): Promise<void> {
    this.checkSeries(id, count, first, last);
    await this.addRun(id, run, this.lz4 && (run[0]! & RUN_LZ4) === 0, count, first, last);
  }

  private async addRun(id: bigint, run: Uint8Array, packable: boolean, count: number, minTime: bigint, maxTime: bigint): Promise<void> {
    const split = splitRun(run, { object: `run of series ${id}`, offset: 0 });
    if (split.count !== count) throw new InvalidArgumentError('count', `series ${id}: the run holds ${split.count} samples, not ${count}`);
    if (this.pending.length >= this.seriesPerPage) await this.closePage();
    const ts = split.timestamps;
    const key = `${split.layout}/${count}/${Buffer.from(ts.buffer, ts.byteOffset, ts.length).toString('latin1')}`;
    this.pending.push({ id, run, packable, split, key, count, minTime, maxTime });
    this.lastId = id;
    if (this.seriesCount === 0 || minTime < this.minTime) this.minTime = minTime;
    if (this.seriesCount === 0 || maxTime > this.maxTime) this.maxTime = maxTime;
    this.seriesCount++;
    this.sampleCount += count;
  }

  /**
   * Writes the pending runs and seals their page: a timestamp section that two or more of them
   * share goes into the page once and those runs lose theirs.
   */
  private async closePage(): Promise<void> {
    if (this.pending.length === 0) return;
    const uses = new Map<string, number>();
    for (const p of this.pending) uses.set(p.key, (uses.get(p.key) ?? 0) + 1);
    for (const p of this.pending) {
      let run: Uint8Array;
      let tsRef = 0;
      if (uses.get(p.key)! >= 2) {
        tsRef = this.page.vector(p.split.layout, p.count, p.split.timestamps, p.minTime, p.maxTime);
        run = this.lz4 ? lz4Run(p.split.valuesRun) : p.split.valuesRun;
      } else {
        run = p.packable ? lz4Run(p.run) : p.run;
      }
      this.page.add({ id: p.id, runOffset: this.offset, runLength: run.length, sampleCount: p.count, minTime: p.minTime, maxTime: p.maxTime, crc: crc32c(run), tsRef });
      this.buf.bytes(run);
      this.samplesCrc = crc32c(run, this.samplesCrc);
      this.offset += run.length;
      if (this.buf.length >= this.bufferBytes) await this.flush();
    }
    this.pending = [];
    sealPage(this.page, this.pages, this.refs);
  }

  /**
   * Without a good `expectedSeries` hint a big block can end up with more pages than the index of
   * index budget allows; merge neighbouring pages (pairwise, repeatedly) until it fits, so one
   * suffix read still covers the index of index.
   */
  private mergePages(): void {
    while (this.refs.length * IOI_ENTRY_BYTES > IOI_TARGET_BYTES) {
      const pages: Uint8Array[] = [];
      const refs: PageRef[] = [];
      for (let i = 0; i < this.pages.length; i += 2) {
        const builder = new PageBuilder();
        for (const j of [i, i + 1]) {
          const bytes = this.pages[j];
          if (!bytes) continue;
          const p = decodePage(bytes, { object: '<index page being merged>', offset: 0 }, this.offset, FORMAT_VERSION);
          for (let e = 0; e < p.count; e++) {
            const entry = {
              id: p.ids[e]!,
              runOffset: p.offsets[e]!,
              runLength: p.lengths[e]!,
              sampleCount: p.sampleCounts[e]!,
              minTime: p.minTimes[e]!,
              maxTime: p.maxTimes[e]!,
              crc: p.crcs[e]!,
            };
            const ref = p.tsRefs[e]!;
            const v = ref ? p.vectors[ref - 1]! : null;
            builder.add({ ...entry, tsRef: v ? builder.vector(v.layout, v.count, v.bytes, v.minTime, v.maxTime) : 0 });
          }
        }
        sealPage(builder, pages, refs);
      }
      if (refs.length >= this.refs.length) return; // one page left
      this.pages.splice(0, this.pages.length, ...pages);
      this.refs.splice(0, this.refs.length, ...refs);
    }
  }

  private async flush(): Promise<void> {
    if (this.buf.length === 0) return;
    try {
      await this.sink.write(this.buf.finish());
      this.buf.reset();
    } catch (err) {
      this.state = 'failed';
      throw err;
    }
  }

  private checkOpen(): void {
    if (this.state !== 'open') throw new RangeError(`block writer is ${this.state}`);
  }

  /** Number of series added so far. */
  get series(): number {
    return this.seriesCount;
  }

  /** Appends index, index of index and footer, and completes the sink. */
  async finish(): Promise<WrittenBlock> {
    this.checkOpen();
    await this.closePage();
    this.mergePages();
    await this.flush();
    const samplesLength = this.offset;
    let indexCrc = 0;
    let pos = samplesLength;
    const refs = this.refs.map((r, i) => {
      const ref = { ...r, offset: pos };
      pos += r.length;
      indexCrc = crc32c(this.pages[i]!, indexCrc);
      return ref;
    });
    for (const p of this.pages) {
      this.buf.bytes(p);
      if (this.buf.length >= this.bufferBytes) await this.flush();
    }
    const indexLength = pos - samplesLength;
    const ioi = encodeIoi(refs);
    this.buf.bytes(ioi);
    const footer: Footer = {
      version: FORMAT_VERSION,
      pageCount: refs.length,
      samples: { offset: 0, length: samplesLength, crc: this.samplesCrc },
      index: { offset: samplesLength, length: indexLength, crc: indexCrc },
      ioi: { offset: pos, length: ioi.length, crc: crc32c(ioi) },
      tenant: this.meta.tenant,
      shard: this.meta.shard,
      numShards: this.meta.numShards,
      seriesCount: this.seriesCount,
      sampleCount: this.sampleCount,
      minTime: this.minTime,
      maxTime: this.maxTime,
      windowStart: this.meta.windowStart,
      windowEnd: this.meta.windowEnd,
      createdAtMs: this.now(),
      blockId: this.blockId,
    };
    this.buf.bytes(encodeFooter(footer));
    await this.flush();
    this.state = 'done';
    await this.sink.complete();
    return { footer, size: pos + ioi.length + FOOTER_LEN };
  }

  /** Discards the block. */
  async abort(): Promise<void> {
    this.state = 'failed';
    await this.sink.abort();
  }
}

/** Encodes the builder's page and appends it and its index-of-index record (offset set later). */
function sealPage(builder: PageBuilder, pages: Uint8Array[], refs: PageRef[]): void {
  const firstId = builder.firstId;
  const lastId = builder.lastId;
  const seriesCount = builder.count;
  const bytes = builder.finish();
  pages.push(bytes);
  refs.push({ firstId, lastId, seriesCount, offset: 0, length: bytes.length, crc: crc32c(bytes) });
}
