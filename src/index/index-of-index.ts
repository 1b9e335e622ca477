/**
 * The index of index: the second, small level of the series index (spec:
 * docs/format/index.md). One fixed-size record per index page, stored column by column so a
 * reader turns it into typed arrays with a single copy:
 *
 * ```
 * ioi := u64 firstId[P], u64 lastId[P], u64 pageOffset[P], u32 pageLength[P], u32 pageCrc[P],
 *        u32 seriesCount[P]                                  (P = footer.pageCount; 36 bytes/page)
 * ```
 */
import { IOI_ENTRY_BYTES } from '../format/footer.js';
import { ByteWriter, type Origin } from '../format/bytes.js';
import { CorruptionError } from '../errors.js';

/** One page's record while writing. */
export interface PageRef {
  readonly firstId: bigint;
  readonly lastId: bigint;
  readonly offset: number;
  readonly length: number;
  readonly crc: number;
  readonly seriesCount: number;
}

/** Serializes the records of all pages. */
export function encodeIoi(pages: readonly PageRef[]): Uint8Array {
  const w = new ByteWriter(pages.length * IOI_ENTRY_BYTES + 8);
  for (const p of pages) w.u64(p.firstId);
  for (const p of pages) w.u64(p.lastId);
  for (const p of pages) w.u64n(p.offset);
  for (const p of pages) w.u32(p.length);
  for (const p of pages) w.u32(p.crc);
  for (const p of pages) w.u32(p.seriesCount);
  return w.finish().slice();
}

/** The decoded index of index. */
export interface IndexOfIndex {
  readonly pageCount: number;
  readonly firstIds: BigUint64Array;
  readonly lastIds: BigUint64Array;
  readonly offsets: Float64Array;
  readonly lengths: Uint32Array;
  readonly crcs: Uint32Array;
  readonly seriesCounts: Uint32Array;
  /** Bytes held by the arrays (for cache accounting). */
  readonly byteSize: number;
}

/**
 * Decodes the index of index (whose checksum the caller verified). Checks that pages are in ID
 * order, do not overlap and tile the index section `[indexStart, indexEnd)` exactly.
 */
export function decodeIoi(
  buf: Uint8Array,
  pageCount: number,
  origin: Origin,
  indexStart: number,
  indexEnd: number,
): IndexOfIndex {
  const P = pageCount;
  if (buf.length !== P * IOI_ENTRY_BYTES) {
    throw new CorruptionError(origin.object, origin.offset, `index of index is ${buf.length} bytes for ${P} pages`);
  }
  // one aligned copy, then views
  const copy = new ArrayBuffer(buf.length + 8);
  new Uint8Array(copy).set(buf);
  const firstIds = new BigUint64Array(copy, 0, P);
  const lastIds = new BigUint64Array(copy, 8 * P, P);
  const rawOffsets = new BigUint64Array(copy, 16 * P, P);
  const lengths = new Uint32Array(copy, 24 * P, P);
  const crcs = new Uint32Array(copy, 28 * P, P);
  const seriesCounts = new Uint32Array(copy, 32 * P, P);
  const offsets = new Float64Array(P);
  let expect = indexStart;
  for (let i = 0; i < P; i++) {
    const off = Number(rawOffsets[i]!);
    const bad = (what: string) => new CorruptionError(origin.object, origin.offset, `index of index, page ${i}: ${what}`);
    if (off !== expect) throw bad(`offset ${off}, expected ${expect}`);
    if (lengths[i] === 0 || seriesCounts[i] === 0) throw bad('empty page');
    if (firstIds[i]! > lastIds[i]!) throw bad('first id after last id');
    if (i > 0 && firstIds[i]! <= lastIds[i - 1]!) throw bad('pages out of order');
    offsets[i] = off;
    expect = off + lengths[i]!;
  }
  if (expect !== indexEnd) throw new CorruptionError(origin.object, origin.offset, `index pages end at ${expect}, section ends at ${indexEnd}`);
  return { pageCount: P, firstIds, lastIds, offsets, lengths, crcs, seriesCounts, byteSize: copy.byteLength + offsets.byteLength };
}

/** Index of the page whose [firstId, lastId] holds `id`, or -1 when no page can hold it. */
export function findPage(ioi: IndexOfIndex, id: bigint): number {
  let lo = 0;
  let hi = ioi.pageCount - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (ioi.lastIds[mid]! < id) lo = mid + 1;
    else if (ioi.firstIds[mid]! > id) hi = mid - 1;
    else return mid;
  }
  return -1;
}
