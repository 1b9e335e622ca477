/**
 * Integer-sequence coder shared by the timestamp and value codecs (spec: docs/format/chunk.md,
 * "Integer sequences"). Input: n safe integers with |x| < 2^51. The encoder measures the exact
 * bit cost of each layout and writes the cheapest:
 *
 * - CONST  (0): every element equals `base`.
 * - SPARSE (1): most elements equal `base`; the others are listed as (gap, value) pairs.
 * - DENSE  (2): partitions of {@link PARTITION} elements, each with its own base and Rice
 *   parameter, stored either offset from the partition minimum (FOR) or zigzagged around the
 *   partition median (robust to outliers such as counter resets).
 * - TABLE  (3, format version 2): every element in a range of at most {@link TABLE_MAX_SYMBOLS}
 *   values, each written with a canonical Huffman code whose lengths the sequence carries. Made
 *   for scrape jitter on every scrape: residuals of -5..5 ms with half of them 0 cost about 2.7
 *   bits each where Rice codes take about 3.3 (the data's entropy is 2.66). Written here: none of
 *   the allowed dependencies has an entropy coder (lz4 matches repeats only; on these residuals it
 *   saves nothing), and a 64-symbol canonical code needs no more than the few lines below. Measured
 *   on the generator with 50 % of scrapes jittered: per-series timestamps 0.474 -> 0.366 bytes per
 *   sample (with the grid step taken from 64 deltas).
 */
import type { CorruptionError } from '../errors.js';
import { BitReader, BitWriter, RICE_ESCAPE } from './bits.js';
import { bitLength, unzigzag, zigzag } from './bytes.js';

export const SEQ_CONST = 0;
export const SEQ_SPARSE = 1;
export const SEQ_DENSE = 2;
export const SEQ_TABLE = 3;
/** Largest alphabet (max - min + 1) of a TABLE sequence. */
export const TABLE_MAX_SYMBOLS = 64;
/** Longest code of a TABLE sequence; longer Huffman codes make the encoder skip the layout. */
export const TABLE_MAX_CODE = 12;
/** Elements per partition of a DENSE sequence. */
export const PARTITION = 128;
/**
 * SPARSE is planned only when its base fills at least this share of the sequence (below it, the
 * gaps cost more than the base's elements save).
 */
const SPARSE_MIN_SHARE = 1 / 8;
/**
 * Elements looked at before a SPARSE base candidate is counted over the whole sequence: one that
 * none of them equals is skipped (the float layout's high parts, most counters' increments).
 */
const SPARSE_PROBE = 64;
/** Bound on |x| accepted by the coder. */
export const INTSEQ_LIMIT = 2 ** 51;

const VARBITS_COST = (z: number) => 6 + bitLength(z);
const LN2 = Math.LN2;

/** Rice parameter estimate for non-negative values with the given mean. */
function kFromMean(mean: number): number {
  if (!(mean >= 1)) return 0;
  const k = Math.floor(Math.log2(mean * LN2));
  return k < 0 ? 0 : k > 52 ? 52 : k;
}

/** Scratch buffers reused across calls (single-threaded). */
let scratch = new Float64Array(PARTITION);
let sel = new Float64Array(PARTITION);
let excIdx = new Float64Array(64);
let excVal = new Float64Array(64);
/** Per-partition plans of the sequence being encoded: mode (1: median), base and Rice k. */
let planMedian = new Uint8Array(64);
let planBase = new Float64Array(64);
let planK = new Uint8Array(64);
/** Counts per symbol of a TABLE candidate. */
const tableFreq = new Float64Array(TABLE_MAX_SYMBOLS);

/** The k of the last {@link bestRice} result. */
let riceK = 0;

/**
 * Best Rice cost in bits of the non-negative `u[0..n)` (all at most `max`) over k in
 * {k0-1, k0, k0+1} (k0 estimated from the mean), computed in one pass; the k is left in
 * {@link riceK}. Values below 2^31 (nearly always) take an int32 loop.
 */
function bestRice(u: Float64Array, n: number, sum: number, max: number): number {
  const k0 = kFromMean(sum / n);
  const kLo = k0 > 0 ? k0 - 1 : 0;
  let c0 = 0, c1 = 0, c2 = 0;
  if (max < 0x80000000 && kLo < 29) {
    // escape cost RICE_ESCAPE + 6 + bitLength(v) - k, with the n * k added below
    const e0 = RICE_ESCAPE + 6 + 32 - kLo;
    for (let i = 0; i < n; i++) {
      const v = u[i]! | 0;
      const q0 = v >>> kLo;
      if (q0 < RICE_ESCAPE) {
        const q1 = q0 >>> 1;
        c0 += q0 + 1;
        c1 += q1 + 1;
        c2 += (q1 >>> 1) + 1;
      } else {
        const w = e0 - Math.clz32(v);
        c0 += w;
        const q1 = q0 >>> 1;
        c1 += q1 < RICE_ESCAPE ? q1 + 1 : w - 1;
        const q2 = q1 >>> 1;
        c2 += q2 < RICE_ESCAPE ? q2 + 1 : w - 2;
      }
    }
  } else {
    const div = 2 ** kLo;
    for (let i = 0; i < n; i++) {
      const v = u[i]!;
      const q0 = Math.floor(v / div);
      const q1 = Math.floor(q0 / 2);
      const q2 = Math.floor(q1 / 2);
      c0 += q0 < RICE_ESCAPE ? q0 + 1 : RICE_ESCAPE + 6 + bitLength(v) - kLo;
      c1 += q1 < RICE_ESCAPE ? q1 + 1 : RICE_ESCAPE + 6 + bitLength(v) - kLo - 1;
      c2 += q2 < RICE_ESCAPE ? q2 + 1 : RICE_ESCAPE + 6 + bitLength(v) - kLo - 2;
    }
  }
  c0 += n * kLo;
  c1 += n * (kLo + 1);
  c2 += n * (kLo + 2);
  if (kLo + 2 > 52) c2 = Infinity;
  if (kLo + 1 > 52) c1 = Infinity;
  if (c0 <= c1 && c0 <= c2) {
    riceK = kLo;
    return c0;
  }
  if (c1 <= c2) {
    riceK = kLo + 1;
    return c1;
  }
  riceK = kLo + 2;
  return c2;
}

/** The element of rank `k` of `a[0..n)` (reorders `a`). */
function quickselect(a: Float64Array, n: number, k: number): number {
  let lo = 0;
  let hi = n - 1;
  while (hi > lo) {
    const pivot = a[(lo + hi) >> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! < pivot) i++;
      while (a[j]! > pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k]!;
  }
  return a[k]!;
}

/**
 * Plans partition `p` of a DENSE sequence (`x[start, start+n)`): stores its mode, base and k in
 * {@link planMedian}, {@link planBase}, {@link planK} and returns its data bits (without header).
 */
function planPartition(x: Float64Array, start: number, n: number, p: number): number {
  if (scratch.length < n) {
    scratch = new Float64Array(n);
    sel = new Float64Array(n);
  }
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = x[start + i]!;
    sel[i] = v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const u = x[start + i]! - min;
    scratch[i] = u;
    sum += u;
  }
  const range = max - min;
  let bits = bestRice(scratch, n, sum, range);
  planMedian[p] = 0;
  planBase[p] = min;
  planK[p] = riceK;
  if (range > 0) {
    // zigzag around the median: about a bit cheaper for symmetric noise, and robust to a few
    // outliers (counter resets) that stretch the range
    const median = quickselect(sel, n, n >> 1);
    sum = 0;
    for (let i = 0; i < n; i++) {
      const d = x[start + i]! - median;
      const z = d >= 0 ? d * 2 : -d * 2 - 1;
      scratch[i] = z;
      sum += z;
    }
    const medBits = bestRice(scratch, n, sum, 2 * range);
    if (medBits < bits) {
      bits = medBits;
      planMedian[p] = 1;
      planBase[p] = median;
      planK[p] = riceK;
    }
  }
  return bits;
}

/** The plan of {@link planSparse}. */
let sparseBase = 0;
let sparseCount = 0;
let sparseKGap = 0;
let sparseKVal = 0;

/**
 * Bits of the SPARSE layout of `x[start, start+n)`, its plan left in {@link sparseBase} and the
 * next variables; Infinity when the layout does not fit (over half the elements are exceptions).
 */
function planSparse(x: Float64Array, start: number, n: number): number {
  // sparse pays when one value fills a good share of the sequence: most of it, or (with its
  // positions gap coded at about a bit per other element) a fixed share such as the unchanged
  // scrapes of a gauge that sticks; try 0 (no change, for deltas) and a few elements, giving up on
  // a candidate as soon as it cannot cover that share
  let base = 0;
  let count = n - Math.ceil(n * SPARSE_MIN_SHARE) + 1;
  const probe = Math.min(n, SPARSE_PROBE);
  let tried0 = NaN, tried1 = NaN, tried2 = NaN;
  for (let ci = 0; ci < 4; ci++) {
    const at = ci === 0 ? -1 : ci === 1 ? 0 : ci === 2 ? n >> 1 : n - 1;
    const c = at < 0 ? 0 : x[start + at]!;
    if (c === tried0 || c === tried1 || c === tried2) continue;
    if (ci === 0) tried0 = c;
    else if (ci === 1) tried1 = c;
    else tried2 = c;
    // a candidate absent from the first elements is not counted over the whole sequence; an
    // element taken as the candidate is no evidence for itself (else x[0] of every sequence,
    // counter increments among them, was counted over the whole sequence: 14 % of encoding)
    let hits = 0;
    for (let i = 0; i < probe; i++) if (x[start + i] === c) hits++;
    if (hits - (at >= 0 && at < probe ? 1 : 0) === 0) continue;
    let cnt = probe - hits;
    for (let i = probe; i < n && cnt < count; i++) if (x[start + i] !== c) cnt++;
    if (cnt < count) {
      count = cnt;
      base = c;
    }
  }
  if (count > n - Math.ceil(n * SPARSE_MIN_SHARE)) return Infinity;
  if (excIdx.length < count) {
    excIdx = new Float64Array(count * 2);
    excVal = new Float64Array(count * 2);
  }
  let gapSum = 0;
  let valSum = 0;
  let gapMax = 0;
  let valMax = 0;
  let prev = -1;
  for (let i = 0, e = 0; i < n; i++) {
    const v = x[start + i]!;
    if (v !== base) {
      const gap = i - prev - 1;
      const z = zigzag(v - base) - 1;
      excIdx[e] = gap;
      excVal[e++] = z;
      gapSum += gap;
      valSum += z;
      if (gap > gapMax) gapMax = gap;
      if (z > valMax) valMax = z;
      prev = i;
    }
  }
  const header = 2 + VARBITS_COST(zigzag(base)) + VARBITS_COST(count) + 5 + 6;
  sparseBase = base;
  sparseCount = count;
  sparseKGap = 0;
  sparseKVal = 0;
  if (count === 0) return header;
  const gapBits = bestRice(excIdx, count, gapSum, gapMax);
  sparseKGap = riceK;
  const valBits = bestRice(excVal, count, valSum, valMax);
  sparseKVal = riceK;
  if (sparseKGap > 31) return Infinity;
  return header + gapBits + valBits;
}

/** Scratch of {@link huffmanLengths}: at most 2 * TABLE_MAX_SYMBOLS - 1 nodes. */
const hWeight = new Float64Array(2 * TABLE_MAX_SYMBOLS);
const hParent = new Int32Array(2 * TABLE_MAX_SYMBOLS);
const hLive = new Int32Array(TABLE_MAX_SYMBOLS);

/** Removes element `i` of `live[0, n)`, keeping the order of the others (ties go to the earliest). */
function removeAt(live: Int32Array, n: number, i: number): number {
  const v = live[i]!;
  live.copyWithin(i, i + 1, n);
  return v;
}

/** Huffman code lengths for `freq` (at least two non-zero), or null when one exceeds TABLE_MAX_CODE. */
function huffmanLengths(freq: Float64Array, a: number): Uint8Array | null {
  // nodes: leaves 0..a-1, internal nodes after; small alphabets, so a linear scan for the minimum
  // (typed scratch arrays: this runs for every sequence of at most 64 distinct values, and its
  // arrays and splices were 70 % of what encoding allocated)
  const weight = hWeight;
  const parent = hParent;
  const live = hLive;
  let nodes = 0;
  let n = 0;
  for (let s = 0; s < a; s++) {
    weight[nodes] = freq[s]!;
    parent[nodes++] = -1;
    if (freq[s]! > 0) live[n++] = s;
  }
  while (n > 1) {
    let i1 = 0;
    for (let i = 1; i < n; i++) if (weight[live[i]!]! < weight[live[i1]!]!) i1 = i;
    const n1 = removeAt(live, n--, i1);
    let i2 = 0;
    for (let i = 1; i < n; i++) if (weight[live[i]!]! < weight[live[i2]!]!) i2 = i;
    const n2 = removeAt(live, n--, i2);
    const node = nodes++;
    weight[node] = weight[n1]! + weight[n2]!;
    parent[node] = -1;
    parent[n1] = node;
    parent[n2] = node;
    live[n++] = node;
  }
  const lengths = new Uint8Array(a);
  for (let s = 0; s < a; s++) {
    if (!(freq[s]! > 0)) continue;
    let len = 0;
    for (let v = s; parent[v]! >= 0; v = parent[v]!) len++;
    if (len > TABLE_MAX_CODE) return null;
    lengths[s] = len;
  }
  return lengths;
}

/** Canonical codes for `lengths`: by length, then by symbol. */
function canonicalCodes(lengths: Uint8Array): Uint32Array {
  const codes = new Uint32Array(lengths.length);
  let code = 0;
  for (let len = 1; len <= TABLE_MAX_CODE; len++) {
    for (let s = 0; s < lengths.length; s++) if (lengths[s] === len) codes[s] = code++;
    code <<= 1;
  }
  return codes;
}

/** The plan of {@link planTable}. */
let tableMin = 0;
let tableLengths: Uint8Array = new Uint8Array(0);

/**
 * Bits of the TABLE layout of `x[start, start+n)` (whose smallest and largest elements are `min`
 * and `max`), its plan left in {@link tableMin} and {@link tableLengths}; Infinity when the
 * layout does not fit.
 */
function planTable(x: Float64Array, start: number, n: number, min: number, max: number): number {
  const a = max - min + 1;
  if (!(a >= 2 && a <= TABLE_MAX_SYMBOLS)) return Infinity;
  const freq = tableFreq;
  freq.fill(0, 0, a);
  for (let i = 0; i < n; i++) freq[x[start + i]! - min]!++;
  const lengths = huffmanLengths(freq, a);
  if (!lengths) return Infinity;
  let bits = 2 + VARBITS_COST(zigzag(min)) + 6 + 4 * a;
  for (let s = 0; s < a; s++) bits += freq[s]! * lengths[s]!;
  tableMin = min;
  tableLengths = lengths;
  return bits;
}

/**
 * Writes `x[start, start+n)` to `w` in the cheapest layout. Every element must be a safe integer
 * with |x| < {@link INTSEQ_LIMIT} (callers guarantee it). n may be 0 (nothing is written).
 */
export function encodeIntSeq(w: BitWriter, x: Float64Array, start: number, n: number): void {
  if (n === 0) return;
  const first = x[start]!;
  let min = first;
  let max = first;
  for (let i = 1; i < n; i++) {
    const v = x[start + i]!;
    if (v < min) min = v;
    else if (v > max) max = v;
  }
  if (min === max) {
    w.write(SEQ_CONST, 2);
    w.varBits(zigzag(first));
    return;
  }
  const sparseBits = planSparse(x, start, n);
  const parts = Math.ceil(n / PARTITION);
  if (planBase.length < parts) {
    planMedian = new Uint8Array(2 * parts);
    planBase = new Float64Array(2 * parts);
    planK = new Uint8Array(2 * parts);
  }
  let denseBits = 2;
  let prevBase = 0;
  for (let pi = 0, p = 0; p < n; pi++, p += PARTITION) {
    const len = Math.min(PARTITION, n - p);
    const bits = planPartition(x, start + p, len, pi);
    denseBits += 1 + VARBITS_COST(zigzag(planBase[pi]! - prevBase)) + 6 + bits;
    prevBase = planBase[pi]!;
    if (denseBits >= sparseBits) break;
  }
  const tableBits = planTable(x, start, n, min, max);
  if (tableBits < denseBits && tableBits < sparseBits) {
    w.write(SEQ_TABLE, 2);
    w.varBits(zigzag(tableMin));
    const lengths = tableLengths;
    const a = lengths.length;
    const codes = canonicalCodes(lengths);
    w.write(a - 1, 6);
    for (let s = 0; s < a; s++) w.write(lengths[s]!, 4);
    for (let i = 0; i < n; i++) {
      const s = x[start + i]! - tableMin;
      w.write(codes[s]!, lengths[s]!);
    }
    return;
  }
  if (sparseBits <= denseBits) {
    const base = sparseBase;
    const kGap = sparseKGap;
    const kVal = sparseKVal;
    w.write(SEQ_SPARSE, 2);
    w.varBits(zigzag(base));
    w.varBits(sparseCount);
    w.write(kGap, 5);
    w.write(kVal, 6);
    let prev = -1;
    for (let i = 0; i < n; i++) {
      const v = x[start + i]!;
      if (v !== base) {
        w.rice(i - prev - 1, kGap);
        w.rice(zigzag(v - base) - 1, kVal);
        prev = i;
      }
    }
    return;
  }
  w.write(SEQ_DENSE, 2);
  prevBase = 0;
  for (let pi = 0, p = 0; p < n; pi++, p += PARTITION) {
    const len = Math.min(PARTITION, n - p);
    const median = planMedian[pi] === 1;
    const base = planBase[pi]!;
    const k = planK[pi]!;
    w.write(median ? 1 : 0, 1);
    w.varBits(zigzag(base - prevBase));
    w.write(k, 6);
    prevBase = base;
    w.riceBlock(x, start + p, len, k, base, median);
  }
}

/**
 * Whether the sequences being decoded may use TABLE, which format version 2 added: false while a
 * run of a version 1 block is decoded (see {@link decodeSequencesOfVersion}).
 */
let tableAllowed = true;

/**
 * Sets the block format version of the sequences decoded next (decoding is synchronous: the run
 * decoder sets it before a run and sets it back to the current version after). In a version 1
 * block a TABLE sequence is a CorruptionError naming the layout and the version, not decoded.
 */
export function decodeSequencesOfVersion(version: number): void {
  tableAllowed = version >= 2;
}

/** The error for a TABLE sequence in a version 1 block. */
function tableInV1(r: BitReader): CorruptionError {
  return r.corrupt('integer sequence layout 3 (TABLE) is format version 2, in a block of format version 1');
}

/** A CONST or SPARSE sequence as returned by {@link decodeIntSeqSparse}. */
export interface SparseSeq {
  /** Value of every element that is not listed. */
  base: number;
  /** Number of listed elements (0 for a CONST sequence). */
  count: number;
  /** Indexes (from the sequence's start, increasing, < n) of the listed elements, in `idx[0..count)`. */
  idx: Int32Array;
  /** Values of the listed elements, in `val[0..count)`. */
  val: Float64Array;
}

/** The result of {@link decodeIntSeqSparse}, reused by every call. */
const sparseSeq: SparseSeq = { base: 0, count: 0, idx: new Int32Array(256), val: new Float64Array(256) };

/** Reads the rest of a CONST or SPARSE sequence of n elements after its layout field. */
function readSparse(r: BitReader, mode: number, n: number): SparseSeq {
  const seq = sparseSeq;
  if (mode === SEQ_CONST) {
    seq.base = unzigzag(r.varBits());
    seq.count = 0;
    return seq;
  }
  const base = unzigzag(r.varBits());
  const count = r.varBits();
  if (count > n) throw r.corrupt(`sparse sequence lists ${count} exceptions for ${n} elements`);
  const kGap = r.read(5);
  const kVal = r.read(6);
  if (kVal > 52) throw r.corrupt(`rice parameter ${kVal} exceeds 52`);
  if (seq.idx.length < count) {
    seq.idx = new Int32Array(count);
    seq.val = new Float64Array(count);
  }
  r.sparsePairs(seq.idx, seq.val, count, n, kGap, kVal, base);
  seq.base = base;
  seq.count = count;
  return seq;
}

/** A decoded TABLE header: `lookup[peek >>> (32 - maxLen)]` = symbol << 4 | length (0: no code). */
interface TableCode {
  min: number;
  maxLen: number;
  lookup: Uint16Array;
}

const tableLookup = new Uint16Array(1 << TABLE_MAX_CODE);
/** Code lengths of the TABLE sequence being read. */
const tableLengthsIn = new Uint8Array(TABLE_MAX_SYMBOLS);

/** Reads the header of a TABLE sequence (after its layout field) and builds its lookup table. */
function readTable(r: BitReader): TableCode {
  const min = unzigzag(r.varBits());
  const a = r.read(6) + 1;
  if (a < 2) throw r.corrupt('table sequence of one symbol');
  const lengths = tableLengthsIn.subarray(0, a);
  let maxLen = 0;
  let kraft = 0;
  for (let s = 0; s < a; s++) {
    const len = r.read(4);
    if (len > TABLE_MAX_CODE) throw r.corrupt(`table code length ${len} exceeds ${TABLE_MAX_CODE}`);
    lengths[s] = len;
    if (len > maxLen) maxLen = len;
    if (len) kraft += 2 ** (TABLE_MAX_CODE - len);
  }
  if (kraft > 2 ** TABLE_MAX_CODE || maxLen === 0) throw r.corrupt('table code lengths do not form a prefix code');
  const codes = canonicalCodes(lengths);
  // one table for every sequence (decoding is synchronous and sequences are not nested): a fresh
  // 8 KiB table per run cost the float layout 15 % of its decoding speed
  const lookup = tableLookup;
  lookup.fill(0, 0, 1 << maxLen);
  for (let s = 0; s < a; s++) {
    const len = lengths[s]!;
    if (!len) continue;
    const first = codes[s]! << (maxLen - len);
    lookup.fill((s << 4) | len, first, first + (1 << (maxLen - len)));
  }
  return { min, maxLen, lookup };
}

/**
 * Reads the header of a DENSE partition into `h`: whether its values are zigzagged around a
 * median, its base (a delta from the previous partition's `h.base`) and its Rice parameter.
 */
function partitionHeader(r: BitReader, h: { zig: boolean; base: number; k: number }): void {
  h.zig = r.read(1) === 1;
  h.base += unzigzag(r.varBits());
  const k = r.read(6);
  if (k > 52) throw r.corrupt(`rice parameter ${k} exceeds 52`);
  h.k = k;
}

/**
 * Reads n >= 1 elements written by {@link encodeIntSeq}, with the same checks and errors as
 * {@link decodeIntSeq}. A DENSE sequence is decoded into `out[start, start+n)` and null returned;
 * a CONST or SPARSE one is returned as its base and exceptions (in buffers that the next call
 * reuses) and `out` is left untouched, so callers can skip the elements that equal the base.
 */
export function decodeIntSeqSparse(r: BitReader, out: Float64Array, start: number, n: number): SparseSeq | null {
  const mode = r.read(2);
  if (mode === SEQ_CONST || mode === SEQ_SPARSE) return readSparse(r, mode, n);
  if (mode === SEQ_TABLE) {
    if (!tableAllowed) throw tableInV1(r);
    const t = readTable(r);
    r.tableBlock(out, start, n, t.lookup, t.maxLen, t.min, 0, 0);
    return null;
  }
  const h = { zig: false, base: 0, k: 0 };
  for (let p = 0; p < n; p += PARTITION) {
    partitionHeader(r, h);
    r.riceBlock(out, start + p, Math.min(PARTITION, n - p), h.k, h.base, h.zig);
  }
  return null;
}

/** Reads n elements written by {@link encodeIntSeq} into `out[start, start+n)`. */
export function decodeIntSeq(r: BitReader, out: Float64Array, start: number, n: number): void {
  if (n === 0) return;
  const seq = decodeIntSeqSparse(r, out, start, n);
  if (seq === null) return;
  out.fill(seq.base, start, start + n);
  const { idx, val } = seq;
  for (let e = 0; e < seq.count; e++) out[start + idx[e]!] = val[e]!;
}

/**
 * Reads n elements x[0..n) written by {@link encodeIntSeq}, with the same checks and errors as
 * {@link decodeIntSeq}, and writes their running sums divided by `div` instead: from `acc`,
 * `acc = x[i] + acc; out[start + i] = acc / div` (delta coded data without a separate pass).
 * Returns the last `acc`.
 */
export function decodeIntSeqSums(r: BitReader, out: Float64Array, start: number, n: number, acc: number, div: number): number {
  if (n === 0) return acc;
  const mode = r.read(2);
  if (mode === SEQ_CONST || mode === SEQ_SPARSE) {
    const seq = readSparse(r, mode, n);
    const { count, idx, val } = seq;
    // typed as numbers for the optimizing compiler, as in BitReader.riceSums
    const base = +seq.base;
    acc = +acc;
    let i = 0;
    for (let e = 0; e <= count; e++) {
      const stop = e < count ? idx[e]! : n;
      // without the division when div is 1 (integer counters), as in riceSums
      if (div === 1) {
        for (; i < stop; i++) {
          acc = base + acc;
          out[start + i] = acc;
        }
      } else {
        for (; i < stop; i++) {
          acc = base + acc;
          out[start + i] = acc / div;
        }
      }
      if (e < count) {
        acc = val[e]! + acc;
        out[start + i] = acc / div;
        i++;
      }
    }
    return acc;
  }
  if (mode === SEQ_TABLE) {
    if (!tableAllowed) throw tableInV1(r);
    const t = readTable(r);
    return r.tableBlock(out, start, n, t.lookup, t.maxLen, t.min, acc, div);
  }
  const h = { zig: false, base: 0, k: 0 };
  for (let p = 0; p < n; p += PARTITION) {
    partitionHeader(r, h);
    acc = r.riceSums(out, start + p, Math.min(PARTITION, n - p), h.k, h.base, h.zig, acc, div);
  }
  return acc;
}
