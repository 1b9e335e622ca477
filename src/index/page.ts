/**
 * Index pages: the first level of the two-level series index (spec: docs/format/index.md). A page
 * lists consecutive series of a block in ID order with the exact byte range of each series' run,
 * its sample count, min/max time and the run's CRC32C. Pages are self-contained: they carry the
 * full first series ID, the absolute offset of their first run and a base time.
 *
 * ```
 * page   := u8 flags, uvarint count, u64 firstId, uvarint firstRunOffset, i64 baseTime,
 *           [vectors], entry*count
 * vectors:= uvarint vectorCount, vector*vectorCount                      (flags bit 1: SHARED)
 * vector := u8 tsLayout, uvarint sampleCount, times, uvarint length, timestamp section[length]
 * entry  := uvarint idDelta, uvarint runLength, own, u32 runCrc             (flags bit 1 clear)
 *         | uvarint idDelta, uvarint runLength, uvarint tsRef, [own], u32 runCrc   (SHARED)
 * own    := uvarint sampleCount, times                                     (SHARED: only when tsRef = 0)
 * times  := uvarint (minTime - baseTime), uvarint (maxTime - minTime)   (flags bit 0 clear)
 *         | i64 minTime, i64 maxTime                                    (flags bit 0 set: WIDE)
 * ```
 * idDelta is 0 for the first entry and > 0 after it; a uvarint below 2^53, or in pages with flag
 * bit 2 (WIDE_IDS, format version 3: some delta is 2^53 or more) a uvarint64 below 2^64. Run offsets are firstRunOffset plus the
 * lengths of the runs before. tsRef (only in SHARED pages, format version 2) is 0 for a run with
 * its own timestamps, else 1 + the index of the page's vector that holds them; such an entry's
 * sample count and times are the vector's.
 */
import { ByteReader, ByteWriter, MEMORY, type Origin } from '../format/bytes.js';
import type { SharedTimestamps } from '../format/run.js';
import { TS_GRID, TS_RAW } from '../format/timestamps.js';
import { InvalidArgumentError } from '../errors.js';
import { WIDE_IDS_VERSION } from '../format/footer.js';

/** Page flag: times are stored as raw int64 (spans of 2^53 ms or more). */
export const PAGE_WIDE_TIMES = 1;
/** Page flag (format version 2): the page holds timestamp vectors shared by its runs. */
export const PAGE_SHARED_TIMES = 2;
/**
 * Page flag (format version 3): id deltas are uvarint64 (up to 2^64 - 1), because some are 2^53
 * or more (ids spread over the whole uint64 range, such as hashes of label sets).
 */
export const PAGE_WIDE_IDS = 4;
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const TWO32 = 4294967296;
const U64_MAX = (1n << 64n) - 1n;

/** Writes `v` (0 <= v < 2^64) as an unsigned LEB128 of up to 10 bytes. */
function putUvarint64(w: ByteWriter, v: bigint): void {
  while (v >= 128n) {
    w.u8(Number(v & 127n) | 128);
    v >>= 7n;
  }
  w.u8(Number(v));
}

/** Reads an unsigned LEB128 of a value below 2^64 (at most 10 bytes, no redundant zero byte at the end). */
function readUvarint64(r: ByteReader, what: string): bigint {
  const start = r.pos;
  let v = 0n;
  let shift = 0n;
  for (let i = 0; i < 10; i++) {
    const b = r.u8(what);
    v |= BigInt(b & 127) << shift;
    if (b < 128) {
      if (v > U64_MAX) throw r.corrupt(`${what} exceeds 2^64`, start);
      if (b === 0 && i > 0) throw r.corrupt(`${what} has a redundant zero byte`, start);
      return v;
    }
    shift += 7n;
  }
  throw r.corrupt(`${what} is longer than 10 bytes`, start);
}

/** One series' entry while building a page. */
export interface IndexEntry {
  readonly id: bigint;
  readonly runOffset: number;
  readonly runLength: number;
  readonly sampleCount: number;
  readonly minTime: bigint;
  readonly maxTime: bigint;
  readonly crc: number;
  /** 0 when the run holds its timestamps, else 1 + the index of a vector of {@link PageBuilder.vector}. */
  readonly tsRef?: number;
}

/** A timestamp vector of a page: a timestamp section and its first and last timestamp. */
export interface PageVector extends SharedTimestamps {
  readonly minTime: bigint;
  readonly maxTime: bigint;
}

/** Accumulates entries for one page. */
export class PageBuilder {
  private entries: IndexEntry[] = [];
  private vectors: PageVector[] = [];
  private vectorRefs = new Map<string, number>();

  /**
   * The tsRef of a timestamp section of `layout` and `count` samples from `minTime` to `maxTime`,
   * added to the page's vectors unless an identical section is there.
   */
  vector(layout: number, count: number, section: Uint8Array, minTime: bigint, maxTime: bigint): number {
    const key = `${layout}/${count}/${Buffer.from(section.buffer, section.byteOffset, section.length).toString('latin1')}`;
    let ref = this.vectorRefs.get(key);
    if (ref === undefined) {
      this.vectors.push({ layout, count, bytes: section, origin: MEMORY, minTime, maxTime });
      ref = this.vectors.length;
      this.vectorRefs.set(key, ref);
    }
    return ref;
  }

  get count(): number {
    return this.entries.length;
  }

  get firstId(): bigint {
    return this.entries[0]!.id;
  }

  get lastId(): bigint {
    return this.entries[this.entries.length - 1]!.id;
  }

  add(e: IndexEntry): void {
    const last = this.entries[this.entries.length - 1];
    if (last) {
      if (e.id <= last.id) throw new InvalidArgumentError('seriesId', `series ${e.id} does not follow ${last.id}`);
      if (e.runOffset !== last.runOffset + last.runLength) throw new RangeError('runs of a page must be contiguous');
    }
    this.entries.push(e);
  }

  /** Encodes the page and resets the builder. */
  finish(): Uint8Array {
    const es = this.entries;
    if (es.length === 0) throw new RangeError('empty index page');
    let base = es[0]!.minTime;
    let wide = false;
    for (const e of es) if (e.minTime < base) base = e.minTime;
    for (const e of es) if (e.minTime - base > SAFE || e.maxTime - e.minTime > SAFE) wide = true;
    const shared = this.vectors.length > 0;
    let wideIds = false;
    for (let i = 1; i < es.length && !wideIds; i++) wideIds = es[i]!.id - es[i - 1]!.id > SAFE;
    const w = new ByteWriter(16 + es.length * 16);
    const times = (minTime: bigint, maxTime: bigint): void => {
      if (wide) {
        w.i64(minTime);
        w.i64(maxTime);
      } else {
        w.uvarint(Number(minTime - base));
        w.uvarint(Number(maxTime - minTime));
      }
    };
    w.u8((wide ? PAGE_WIDE_TIMES : 0) | (shared ? PAGE_SHARED_TIMES : 0) | (wideIds ? PAGE_WIDE_IDS : 0));
    w.uvarint(es.length);
    w.u64(es[0]!.id);
    w.uvarint(es[0]!.runOffset);
    w.i64(base);
    if (shared) {
      w.uvarint(this.vectors.length);
      for (const v of this.vectors) {
        w.u8(v.layout);
        w.uvarint(v.count);
        times(v.minTime, v.maxTime);
        w.uvarint(v.bytes.length);
        w.bytes(v.bytes);
      }
    }
    let prev = es[0]!.id;
    for (const e of es) {
      if (wideIds) putUvarint64(w, e.id - prev);
      else w.uvarint(Number(e.id - prev));
      prev = e.id;
      w.uvarint(e.runLength);
      const ref = e.tsRef ?? 0;
      if (shared) w.uvarint(ref);
      else if (ref) throw new RangeError(`entry of series ${e.id} refers to timestamp vector ${ref} of a page without vectors`);
      const v = ref ? this.vectors[ref - 1] : undefined;
      if (ref && !v) throw new RangeError(`entry of series ${e.id} refers to timestamp vector ${ref} of ${this.vectors.length}`);
      if (v) {
        if (v.count !== e.sampleCount || v.minTime !== e.minTime || v.maxTime !== e.maxTime) {
          throw new RangeError(`entry of series ${e.id} disagrees with its timestamp vector ${ref}`);
        }
      } else {
        w.uvarint(e.sampleCount);
        times(e.minTime, e.maxTime);
      }
      w.u32(e.crc);
    }
    this.entries = [];
    this.vectors = [];
    this.vectorRefs = new Map();
    return w.finish().slice();
  }
}

/** A decoded index page: parallel typed arrays, one element per series. */
export interface IndexPage {
  readonly count: number;
  readonly ids: BigUint64Array;
  /** Absolute byte offset of each run in the block. */
  readonly offsets: Float64Array;
  readonly lengths: Float64Array;
  readonly sampleCounts: Float64Array;
  readonly minTimes: BigInt64Array;
  readonly maxTimes: BigInt64Array;
  readonly crcs: Uint32Array;
  /** Per entry: 0, or 1 + the index in `vectors` of its shared timestamps. */
  readonly tsRefs: Uint32Array;
  /** The page's shared timestamp vectors (views of the page's bytes). */
  readonly vectors: readonly PageVector[];
}

/** Adds a safe non-negative `delta` to the 64-bit value in halves h[2i], h[2i+1] from (lo, hi). */
function setSum(h: Uint32Array, i: number, lo: number, hi: number, delta: number): void {
  const l = lo + (delta % TWO32);
  const carry = l >= TWO32 ? 1 : 0;
  h[2 * i] = l - carry * TWO32;
  h[2 * i + 1] = (hi + Math.floor(delta / TWO32) + carry) >>> 0;
}

/**
 * Decodes a page (whose checksum the caller has verified). `origin` locates `buf[0]`. Consumes
 * the page exactly and checks ids increase and runs stay inside `samplesEnd`.
 */
export function decodePage(buf: Uint8Array, origin: Origin, samplesEnd: number, version: number): IndexPage {
  const r = new ByteReader(buf, origin);
  const flags = r.u8('page flags');
  if (flags & ~(PAGE_WIDE_TIMES | PAGE_SHARED_TIMES | PAGE_WIDE_IDS)) throw r.corrupt(`unknown page flags ${flags}`, 0);
  const wideIds = (flags & PAGE_WIDE_IDS) !== 0;
  // a writer of an older version never set it: damage, not a page to read
  if (wideIds && version < WIDE_IDS_VERSION) throw r.corrupt(`page flag ${PAGE_WIDE_IDS} (series ids 2^53 or more apart) is format version ${WIDE_IDS_VERSION}, in a block of format version ${version}`, 0);
  const count = r.uvarint('page entry count');
  if (count === 0 || count > buf.length) throw r.corrupt(`page claims ${count} entries in ${buf.length} bytes`, 0);
  const firstId = r.u64('first series id');
  let offset = r.uvarint('first run offset');
  const base = r.i64('page base time');
  const ids = new BigUint64Array(count);
  const idh = new Uint32Array(ids.buffer);
  const minTimes = new BigInt64Array(count);
  const maxTimes = new BigInt64Array(count);
  const minh = new Uint32Array(minTimes.buffer);
  const maxh = new Uint32Array(maxTimes.buffer);
  const offsets = new Float64Array(count);
  const lengths = new Float64Array(count);
  const sampleCounts = new Float64Array(count);
  const crcs = new Uint32Array(count);
  const wide = (flags & PAGE_WIDE_TIMES) !== 0;
  const baseLo = Number(BigInt.asUintN(32, base));
  const baseHi = Number(BigInt.asUintN(32, base >> 32n));
  let idLo = Number(BigInt.asUintN(32, firstId));
  let idHi = Number(firstId >> 32n);
  // times into halves h[2i], h[2i+1] of `minh`/`maxh` (entries) or of a vector's own arrays
  const readTimes = (mh: Uint32Array, xh: Uint32Array, i: number): void => {
    if (wide) {
      r.need(16, 'min and max time');
      mh[2 * i] = r.u32();
      mh[2 * i + 1] = r.u32();
      xh[2 * i] = r.u32();
      xh[2 * i + 1] = r.u32();
    } else {
      const dMin = r.uvarint('min time');
      const span = r.uvarint('time span');
      setSum(mh, i, baseLo, baseHi, dMin);
      setSum(xh, i, mh[2 * i]!, mh[2 * i + 1]!, span);
    }
  };
  const shared = (flags & PAGE_SHARED_TIMES) !== 0;
  const vectors: PageVector[] = [];
  if (shared) {
    const at = r.pos;
    const vectorCount = r.uvarint('timestamp vector count');
    if (vectorCount === 0 || vectorCount > count) throw r.corrupt(`page of ${count} entries claims ${vectorCount} timestamp vectors`, at);
    const vt = new BigInt64Array(2);
    const vh = new Uint32Array(vt.buffer);
    const vmin = vh.subarray(0, 2);
    const vmax = vh.subarray(2, 4);
    // the vectors' bytes are copied into one buffer of the page's own (a cached page must not keep
    // the maybe much larger read buffer alive: that is often a Buffer, whose slice() is a view),
    // one copy for all of them, each vector a view of it
    const found: { layout: number; count: number; pos: number; len: number; minTime: bigint; maxTime: bigint }[] = [];
    for (let v = 0; v < vectorCount; v++) {
      const vat = r.pos;
      const layout = r.u8('timestamp vector layout');
      if (layout < TS_GRID || layout > TS_RAW) throw r.corrupt(`timestamp vector ${v} has unknown layout ${layout}`, vat);
      const n = r.uvarint('timestamp vector sample count');
      if (n === 0) throw r.corrupt(`timestamp vector ${v} is empty`, vat);
      readTimes(vmin, vmax, 0);
      if (vt[1]! < vt[0]!) throw r.corrupt(`timestamp vector ${v} has max time before min time`, vat);
      const len = r.uvarint('timestamp vector length');
      const pos = r.pos;
      r.bytes(len, `timestamp vector ${v}`);
      found.push({ layout, count: n, pos, len, minTime: vt[0]!, maxTime: vt[1]! });
    }
    const first = found[0]!.pos;
    const area = new Uint8Array(r.pos - first);
    area.set(r.buf.subarray(first, r.pos));
    for (const f of found) {
      const bytes = area.subarray(f.pos - first, f.pos - first + f.len);
      vectors.push({ layout: f.layout, count: f.count, bytes, origin: { object: origin.object, offset: origin.offset + f.pos }, minTime: f.minTime, maxTime: f.maxTime });
    }
  }
  const tsRefs = new Uint32Array(count);
  let wideGap = false;
  for (let i = 0; i < count; i++) {
    const at = r.pos;
    if (wideIds) {
      const delta = readUvarint64(r, 'series id delta');
      if ((i === 0) !== (delta === 0n)) throw r.corrupt(`series id delta ${delta} at entry ${i}`, at);
      const id = (i === 0 ? firstId : ids[i - 1]!) + delta;
      if (id > U64_MAX) throw r.corrupt(`series id overflows at entry ${i}`, at);
      if (delta > SAFE) wideGap = true;
      ids[i] = id;
    } else {
      const delta = r.uvarint('series id delta');
      if ((i === 0) !== (delta === 0)) throw r.corrupt(`series id delta ${delta} at entry ${i}`, at);
      setSum(idh, i, idLo, idHi, delta);
      if (idh[2 * i + 1]! < idHi) throw r.corrupt(`series id overflows at entry ${i}`, at);
      idLo = idh[2 * i]!;
      idHi = idh[2 * i + 1]!;
    }
    const len = r.uvarint('run length');
    if (len === 0) throw r.corrupt(`empty run at entry ${i}`, at);
    if (offset + len > samplesEnd) throw r.corrupt(`run ${offset}+${len} of entry ${i} runs past the sample section`, at);
    offsets[i] = offset;
    lengths[i] = len;
    offset += len;
    const ref = shared ? r.uvarint('timestamp vector reference') : 0;
    if (ref > vectors.length) throw r.corrupt(`entry ${i} refers to timestamp vector ${ref} of ${vectors.length}`, at);
    tsRefs[i] = ref;
    if (ref > 0) {
      const v = vectors[ref - 1]!;
      sampleCounts[i] = v.count;
      minTimes[i] = v.minTime;
      maxTimes[i] = v.maxTime;
    } else {
      const n = r.uvarint('sample count');
      if (n === 0) throw r.corrupt(`empty run at entry ${i}`, at);
      sampleCounts[i] = n;
      readTimes(minh, maxh, i);
      if (maxTimes[i]! < minTimes[i]!) throw r.corrupt(`entry ${i} has max time before min time`, at);
    }
    crcs[i] = r.u32('run checksum');
  }
  r.expectEnd('index page');
  // the writer sets the flag only for a page that needs it: one without such a gap is not its page
  if (wideIds && !wideGap) throw r.corrupt(`page flag ${PAGE_WIDE_IDS} (series ids 2^53 or more apart) on a page without such a gap`, 0);
  return { count, ids, offsets, lengths, sampleCounts, minTimes, maxTimes, crcs, tsRefs, vectors };
}

/** Bytes a decoded page holds in its timestamp vectors (for caches that charge by size). */
export function vectorBytes(page: IndexPage): number {
  let n = 0;
  for (const v of page.vectors) n += v.bytes.length;
  return n;
}

/** Index of `id` in the page, or -1. */
export function findInPage(page: IndexPage, id: bigint): number {
  const ids = page.ids;
  let lo = 0;
  let hi = page.count - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const v = ids[mid]!;
    if (v === id) return mid;
    if (v < id) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}
