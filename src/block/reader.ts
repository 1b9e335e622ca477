/**
 * Block reader: finds and decodes one series with at most three exact range reads (footer and
 * index of index in one suffix read, one index page, one run), and one once the page is known.
 * Every byte it uses is checked against its CRC32C before it is decoded; damage surfaces as a
 * CorruptionError naming the object and the offset, never as wrong samples.
 */
import { crc32c } from '@node-rs/crc32';
import { CorruptionError, InvalidArgumentError } from '../errors.js';
import { decodeFooter, FOOTER_LEN, FORMAT_VERSION, type Footer } from '../format/footer.js';
import { decodeRun, decodeRunInto, MAX_RUN_SAMPLES, type Samples, type SharedTimestamps } from '../format/run.js';
import { sliceSamples, type TimeRange } from '../format/slice.js';

import { decodeIoi, findPage, type IndexOfIndex } from '../index/index-of-index.js';
import { decodePage, findInPage, type IndexPage } from '../index/page.js';
import { reusingReads, type RangeSource } from './source.js';

/** Bytes of the first (suffix) read: the footer plus room for the index of index. */
export const DEFAULT_SUFFIX_BYTES = 64 * 1024;

export interface BlockReaderOptions {
  /** Size of the opening suffix read (default 64 KiB). */
  readonly suffixBytes?: number;
  /** Decoded index pages kept by this reader (default 64). */
  readonly pageCacheSize?: number;
}

/** Where a series' run lives, from its index entry. */
export interface RunLocation {
  readonly id: bigint;
  readonly page: number;
  readonly entry: number;
  readonly offset: number;
  readonly length: number;
  readonly sampleCount: number;
  readonly minTime: bigint;
  readonly maxTime: bigint;
  readonly crc: number;
  /** The run's timestamps when its index page keeps them (format version 2), else null. */
  readonly timestamps: SharedTimestamps | null;
  /**
   * Format version of the block (from its footer; the current one when not given): a run of a
   * version 1 block that uses a code of version 2 is refused as corrupt, not decoded.
   */
  readonly version?: number;
}


/** Reads one block through a {@link RangeSource}. */
export class BlockReader {
  readonly source: RangeSource;
  readonly footer: Footer;
  readonly ioi: IndexOfIndex;
  /** Object size in bytes. */
  readonly size: number;
  /** Range reads issued so far (including the opening one). */
  reads: number;
  private readonly pages = new Map<number, IndexPage>();
  private readonly pageCacheSize: number;

  private constructor(source: RangeSource, footer: Footer, ioi: IndexOfIndex, size: number, reads: number, pageCacheSize: number) {
    this.source = source;
    this.footer = footer;
    this.ioi = ioi;
    this.size = size;
    this.reads = reads;
    this.pageCacheSize = pageCacheSize;
  }

  /** Opens a block: one suffix read, plus one more only if the index of index did not fit in it. */
  static async open(source: RangeSource, opts: BlockReaderOptions = {}): Promise<BlockReader> {
    const suffix = Math.max(opts.suffixBytes ?? DEFAULT_SUFFIX_BYTES, FOOTER_LEN);
    const tail = await source.read({ suffix });
    let reads = 1;
    const size = tail.size;
    if (size < FOOTER_LEN || tail.data.length < FOOTER_LEN) {
      throw new CorruptionError(source.name, 0, `object of ${size} bytes is too small to be a block`);
    }
    const footer = decodeFooter(tail.data, tail.data.length - FOOTER_LEN, size, { object: source.name, offset: tail.offset });
    let ioiBytes: Uint8Array;
    if (footer.ioi.offset >= tail.offset) {
      const at = footer.ioi.offset - tail.offset;
      ioiBytes = tail.data.subarray(at, at + footer.ioi.length);
    } else {
      const r = await source.read({ offset: footer.ioi.offset, length: footer.ioi.length });
      reads++;
      ioiBytes = r.data;
    }
    const ioi = BlockReader.decodeIndexOfIndex(source.name, footer, ioiBytes);
    return new BlockReader(source, footer, ioi, size, reads, opts.pageCacheSize ?? 64);
  }

  /**
   * Checks (length, CRC) and decodes the index of index of a block with `footer`: the one
   * decoder of a block's tail, for this reader and for the gateway's cached tails.
   */
  static decodeIndexOfIndex(name: string, footer: Footer, bytes: Uint8Array): IndexOfIndex {
    if (bytes.length !== footer.ioi.length) {
      throw new CorruptionError(name, footer.ioi.offset, `index of index read returned ${bytes.length} of ${footer.ioi.length} bytes`);
    }
    if (crc32c(bytes) !== footer.ioi.crc) throw new CorruptionError(name, footer.ioi.offset, 'index of index checksum mismatch');
    return decodeIoi(bytes, footer.pageCount, { object: name, offset: footer.ioi.offset }, footer.index.offset, footer.index.offset + footer.index.length);
  }

  /** Checks and decodes index page `i` (exact range read, then CRC). */
  static decodePageBytes(name: string, ioi: IndexOfIndex, i: number, bytes: Uint8Array, samplesEnd: number, version: number): IndexPage {
    const offset = ioi.offsets[i]!;
    if (bytes.length !== ioi.lengths[i]) throw new CorruptionError(name, offset, `index page ${i} read returned ${bytes.length} of ${ioi.lengths[i]} bytes`);
    if (crc32c(bytes) !== ioi.crcs[i]) throw new CorruptionError(name, offset, `index page ${i} checksum mismatch`);
    const page = decodePage(bytes, { object: name, offset }, samplesEnd, version);
    if (page.count !== ioi.seriesCounts[i] || page.ids[0] !== ioi.firstIds[i] || page.ids[page.count - 1] !== ioi.lastIds[i]) {
      throw new CorruptionError(name, offset, `index page ${i} disagrees with the index of index`);
    }
    return page;
  }

  /** Index page `i`, from this reader's small cache or one range read. */
  async page(i: number): Promise<IndexPage> {
    const cached = this.pages.get(i);
    if (cached) {
      this.pages.delete(i);
      this.pages.set(i, cached);
      return cached;
    }
    const r = await this.source.read({ offset: this.ioi.offsets[i]!, length: this.ioi.lengths[i]! });
    this.reads++;
    const page = BlockReader.decodePageBytes(this.source.name, this.ioi, i, r.data, this.footer.samples.length, this.footer.version);
    this.pages.set(i, page);
    if (this.pages.size > this.pageCacheSize) this.pages.delete(this.pages.keys().next().value!);
    return page;
  }

  /** Where the run of series `id` is, or null if the block has no such series. */
  async locate(id: bigint): Promise<RunLocation | null> {
    const p = findPage(this.ioi, id);
    if (p < 0) return null;
    const page = await this.page(p);
    const e = findInPage(page, id);
    if (e < 0) return null;
    return locationOf(page, p, e, this.footer.version);
  }

  /** Reads, checks and decodes the run at `loc`. */
  async readRun(loc: RunLocation): Promise<Samples> {
    const r = await this.source.read({ offset: loc.offset, length: loc.length });
    this.reads++;
    return decodeCheckedRun(this.source.name, loc, r.data);
  }

  /**
   * Samples of series `id`, limited to `range` when given; null when the block does not hold the
   * series (an empty result when it holds it but not in the range).
   */
  async readSeries(id: bigint, range?: TimeRange): Promise<Samples | null> {
    const loc = await this.locate(id);
    if (!loc) return null;
    if (range && (loc.maxTime < range.start || loc.minTime >= range.end)) {
      return { timestamps: new BigInt64Array(0), values: new Float64Array(0) };
    }
    const samples = await this.readRun(loc);
    return range ? sliceSamples(samples, range) : samples;
  }

  /** Every series of the block in ID order, with its location. Reads each page once. */
  async *series(): AsyncGenerator<RunLocation> {
    for (let p = 0; p < this.ioi.pageCount; p++) {
      const page = await this.page(p);
      for (let e = 0; e < page.count; e++) yield locationOf(page, p, e, this.footer.version);
    }
  }

  /**
   * Checks the whole block: section checksums, every page and every run (decoded), the footer's
   * counts. Reads it in pieces of at most `chunkBytes` (see {@link verifyBlock}). Throws the first
   * CorruptionError found.
   */
  async verify(chunkBytes = VERIFY_CHUNK_BYTES): Promise<{ series: number; samples: number }> {
    const { series, samples } = await verifyBlock(this, chunkBytes, true);
    return { series, samples };
  }
}

/** The location of entry `e` of `page` (page number `p`) in a block of format `version`. */
export function locationOf(page: IndexPage, p: number, e: number, version = FORMAT_VERSION): RunLocation {
  return {
    id: page.ids[e]!,
    page: p,
    entry: e,
    offset: page.offsets[e]!,
    length: page.lengths[e]!,
    sampleCount: page.sampleCounts[e]!,
    minTime: page.minTimes[e]!,
    maxTime: page.maxTimes[e]!,
    crc: page.crcs[e]!,
    timestamps: page.tsRefs[e] ? page.vectors[page.tsRefs[e]! - 1]! : null,
    version,
  };
}

/** Checks a run's bytes against its index entry and decodes it. */
export function decodeCheckedRun(name: string, loc: RunLocation, bytes: Uint8Array): Samples {
  checkRunBytes(name, loc, bytes);
  return decodeLocatedRun(name, loc, bytes);
}

/** Checks a run's length and checksum against its index entry (cheap: no decoding). */
export function checkRunBytes(name: string, loc: RunLocation, bytes: Uint8Array): void {
  if (bytes.length !== loc.length) throw new CorruptionError(name, loc.offset, `run of series ${loc.id}: read ${bytes.length} of ${loc.length} bytes`);
  if (crc32c(bytes) !== loc.crc) throw new CorruptionError(name, loc.offset, `run of series ${loc.id}: checksum mismatch`);
}

/** Decodes a run whose bytes {@link checkRunBytes} passed, and checks it agrees with its index entry. */
export function decodeLocatedRun(name: string, loc: RunLocation, bytes: Uint8Array): Samples {
  const s = decodeRun(bytes, { object: name, offset: loc.offset }, loc.timestamps, loc.version);
  agreeWithEntry(name, loc, s.timestamps, s.timestamps.length);
  return s;
}

/** Throws unless `n` decoded samples with timestamps `ts` agree with the run's index entry. */
function agreeWithEntry(name: string, loc: RunLocation, ts: BigInt64Array, n: number): void {
  if (n !== loc.sampleCount || ts[0] !== loc.minTime || ts[n - 1] !== loc.maxTime) {
    throw new CorruptionError(name, loc.offset, `run of series ${loc.id} disagrees with its index entry`);
  }
}

/**
 * Checks a run like {@link decodeCheckedRun}, decoding it into `scratch` (grown as needed, kept
 * for the next run) instead of fresh arrays: verifying a block then allocates nothing per run.
 * Decoded samples of a whole block are several times the block's size, and as fresh arrays they
 * were garbage the verifying thread's collector only freed about every 64 MiB of it.
 */
export function checkRunInto(name: string, loc: RunLocation, bytes: Uint8Array, scratch: { timestamps: BigInt64Array; values: Float64Array }): void {
  checkRunBytes(name, loc, bytes);
  decodeLocatedRunInto(name, loc, bytes, scratch);
}

/** The decoding half of {@link checkRunInto}, for bytes {@link checkRunBytes} passed already. */
export function decodeLocatedRunInto(name: string, loc: RunLocation, bytes: Uint8Array, scratch: { timestamps: BigInt64Array; values: Float64Array }): void {
  // the scratch is sized by the index entry: an entry claiming more than a run may hold is damage
  // (not an allocation of its size)
  if (loc.sampleCount > MAX_RUN_SAMPLES) throw new CorruptionError(name, loc.offset, `run of series ${loc.id} disagrees with its index entry (${loc.sampleCount} samples, more than ${MAX_RUN_SAMPLES})`);
  if (scratch.timestamps.length < loc.sampleCount) {
    const n = Math.min(MAX_RUN_SAMPLES, Math.max(loc.sampleCount, 2 * scratch.timestamps.length));
    scratch.timestamps = new BigInt64Array(n);
    scratch.values = new Float64Array(n);
  }
  const ts = scratch.timestamps;
  let n: number;
  try {
    n = decodeRunInto(bytes, { object: name, offset: loc.offset }, ts, scratch.values, 0, loc.version, loc.timestamps);
  } catch (err) {
    // a run longer than its index entry says: no room in the scratch
    if (err instanceof InvalidArgumentError) throw new CorruptionError(name, loc.offset, `run of series ${loc.id} disagrees with its index entry`);
    throw err;
  }
  agreeWithEntry(name, loc, ts, n);
}

/** Most bytes of the block held at once by {@link verifyBlock} (a larger single run is read whole). */
export const VERIFY_CHUNK_BYTES = 8 * 1024 * 1024;

/** What the verification found, and the largest piece it read. */
export interface VerifyResult {
  readonly series: number;
  readonly samples: number;
  readonly largestReadBytes: number;
}

/**
 * Verifies a block reading it in pieces of at most `chunkBytes` (or one run, when a single run is
 * larger) instead of whole, so that checking a day block of gigabytes holds a few MiB: both section
 * checksums, every index page, every run decoded against its index entry, and the footer's counts.
 * With `nameDamagedRun`, a failed sample section checksum first has the runs checked, so that the
 * damaged run is named (the block tools); without it, the section's failure is reported at once
 * (the day merge, which only needs to know). Throws CorruptionError naming the offset of the first
 * damage found.
 */
export async function verifyBlock(reader: BlockReader, chunkBytes = VERIFY_CHUNK_BYTES, nameDamagedRun = false): Promise<VerifyResult> {
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) throw new RangeError(`chunkBytes must be a positive integer, got ${chunkBytes}`);
  const source = reader.source;
  const name = source.name;
  const { samples: samplesSection, index } = reader.footer;
  let largest = 0;
  // the pieces of the sections through one buffer (reusingReads); index pages in their own
  const reused = reusingReads(source);
  const read = async (offset: number, length: number, reuse = false): Promise<Uint8Array> => {
    const r = await (reuse ? reused({ offset, length }) : source.read({ offset, length }));
    if (r.data.length !== length) throw new CorruptionError(name, offset, `read ${r.data.length} of ${length} bytes`);
    largest = Math.max(largest, length);
    return r.data;
  };
  const sectionCrc = async (offset: number, length: number): Promise<number> => {
    let crc = 0;
    for (let at = 0; at < length; at += chunkBytes) crc = crc32c(await read(offset + at, Math.min(chunkBytes, length - at), true), crc);
    return crc;
  };
  const runs = async (): Promise<VerifyResult> => {
    const ioi = reader.ioi;
    const samplesEnd = samplesSection.offset + samplesSection.length;
    // a window of the sample section: consecutive runs are read together, up to chunkBytes
    let win: Uint8Array = new Uint8Array(0);
    let winStart = 0;
    let series = 0;
    let count = 0;
    const scratch = { timestamps: new BigInt64Array(0), values: new Float64Array(0) };
    for (let p = 0; p < ioi.pageCount; p++) {
      const page = BlockReader.decodePageBytes(name, ioi, p, await read(ioi.offsets[p]!, ioi.lengths[p]!), samplesSection.length, reader.footer.version);
      for (let e = 0; e < page.count; e++) {
        const loc = locationOf(page, p, e, reader.footer.version);
        if (loc.offset < samplesSection.offset || loc.offset + loc.length > samplesEnd) {
          throw new CorruptionError(name, loc.offset, `run of series ${loc.id} lies outside the sample section`);
        }
        if (loc.offset < winStart || loc.offset + loc.length > winStart + win.length) {
          winStart = loc.offset;
          win = await read(loc.offset, Math.max(loc.length, Math.min(chunkBytes, samplesEnd - loc.offset)), true);
        }
        checkRunInto(name, loc, win.subarray(loc.offset - winStart, loc.offset - winStart + loc.length), scratch);
        series++;
        count += loc.sampleCount;
      }
    }
    const f = reader.footer;
    if (series !== f.seriesCount || count !== f.sampleCount) {
      throw new CorruptionError(name, reader.size - FOOTER_LEN, `footer counts ${f.seriesCount} series / ${f.sampleCount} samples, index holds ${series} / ${count}`);
    }
    return { series, samples: count, largestReadBytes: largest };
  };
  if ((await sectionCrc(samplesSection.offset, samplesSection.length)) !== samplesSection.crc) {
    if (nameDamagedRun) await runs();
    throw new CorruptionError(name, samplesSection.offset, 'sample section checksum mismatch');
  }
  if ((await sectionCrc(index.offset, index.length)) !== index.crc) throw new CorruptionError(name, index.offset, 'index section checksum mismatch');
  return runs();
}
