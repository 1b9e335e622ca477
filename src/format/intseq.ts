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
 * - BINNED (format version 4, written as a TABLE header whose symbol count is 1, which no TABLE
 *   has): each element's distance z from a center (the minimum, or zigzagged around the median)
 *   falls in a bin: z itself below 2^(t+1), else its bit length and the t bits after its leading
 *   one. The bins are written with a canonical Huffman code carried by the sequence (at most
 *   {@link TABLE_MAX_SYMBOLS} bins, codes up to {@link BIN_MAX_CODE} bits) and the bits of z
 *   below them verbatim, so wide distributions are entropy coded as well as narrow ones (the
 *   scheme of pcodec's bins, with Huffman codes in place of its tANS). Measured on the generator
 *   (seed 42): counter increments 13.6 -> 13.0 bits each against Rice partitions; on the real
 *   dataset, sequences with a few outliers beyond TABLE's 64 values 2.6 -> 2.2 bits.
 */
import type { CorruptionError } from '../errors.js';
import { BitReader, BitWriter, RICE_ESCAPE } from './bits.js';
import { bitLength, onShrinkScratch, SCRATCH_KEEP_SAMPLES, unzigzag, zigzag } from './bytes.js';

export const SEQ_CONST = 0;
export const SEQ_SPARSE = 1;
export const SEQ_DENSE = 2;
export const SEQ_TABLE = 3;
/** Largest alphabet (max - min + 1) of a TABLE sequence. */
export const TABLE_MAX_SYMBOLS = 64;
/** Longest code of a TABLE sequence; longer Huffman codes make the encoder skip the layout. */
export const TABLE_MAX_CODE = 12;
/** BINNED: largest bin parameter t (bits after the leading one that a bin keeps). */
export const BIN_MAX_T = 3;
/** BINNED: bins of parameter t, for distances z < 2^53. */
export function binCount(t: number): number {
  return (2 << t) + (52 - t) * (1 << t);
}
/** BINNED: the bin of distance z for parameter t. */
export function binOf(z: number, t: number): number {
  const lim = 2 << t;
  if (z < lim) return z;
  const b = bitLength(z);
  const off = b - 1 - t;
  return lim + (b - t - 2) * (1 << t) + (Math.floor(z / POW2[off]!) - (1 << t));
}
/** BINNED: verbatim bits below bin `bin` of parameter t. */
export function binOffsetBits(bin: number, t: number): number {
  const lim = 2 << t;
  return bin < lim ? 0 : 1 + ((bin - lim) >> t);
}
/** BINNED: smallest distance in bin `bin` of parameter t. */
export function binStart(bin: number, t: number): number {
  const lim = 2 << t;
  if (bin < lim) return bin;
  const q = bin - lim;
  return ((1 << t) + (q & ((1 << t) - 1))) * POW2[1 + (q >> t)]!;
}
const POW2 = Array.from({ length: 65 }, (_, k) => 2 ** k);
/**
 * BINNED: longest code. The decoder fills a lookup table of 2^(longest code) entries per sequence:
 * 512 at 9 bits instead of 4,096 at TABLE's 12. On the generator (seed 42) a limit of 9, 10 or
 * none gave the same size to 0.0001 bytes per sample.
 */
export const BIN_MAX_CODE = 9;
/** BINNED: first distance and verbatim bits of every bin, per parameter t. */
const BIN_STARTS: Float64Array[] = [];
const BIN_OFFS: Uint8Array[] = [];
/** BINNED: {@link BIN_STARTS} as int32, for the bins below 2^31 (the decoder's fast path). */
const BIN_STARTS32: Int32Array[] = [];
for (let t = 0; t <= BIN_MAX_T; t++) {
  BIN_STARTS.push(Float64Array.from({ length: binCount(t) }, (_, b) => binStart(b, t)));
  BIN_OFFS.push(Uint8Array.from({ length: binCount(t) }, (_, b) => binOffsetBits(b, t)));
  BIN_STARTS32.push(Int32Array.from({ length: binCount(t) }, (_, b) => Math.min(binStart(b, t), 0x7fffffff)));
}
/** BINNED: width of the field of the first bin. */
const BIN_LO_BITS = 9;

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

/** Scratch of {@link huffmanLengths}: sort keys, and at most 2 * TABLE_MAX_SYMBOLS - 1 nodes. */
const hKey = new Float64Array(TABLE_MAX_SYMBOLS);
const hWeight = new Float64Array(2 * TABLE_MAX_SYMBOLS);
const hParent = new Int32Array(2 * TABLE_MAX_SYMBOLS);
const hSym = new Int32Array(TABLE_MAX_SYMBOLS);
const hDepth = new Int32Array(2 * TABLE_MAX_SYMBOLS);

/**
 * Huffman code lengths for `freq` (at least two non-zero), at most `maxLen` bits: null when one
 * exceeds it, or with `limit` the nearest lengths within it ({@link limitLengths}).
 */
function huffmanLengths(freq: Float64Array, a: number, maxLen = TABLE_MAX_CODE, limit = false): Uint8Array | null {
  // the leaves sorted by weight (ties by symbol), then the two-queue construction: internal nodes
  // are made in order of weight, so the lightest two are always at the heads of the two queues
  // (it was a linear scan for each minimum, 8 % of encoding once BINNED costed its codes)
  let m = 0;
  for (let s = 0; s < a; s++) if (freq[s]! > 0) hKey[m++] = freq[s]! * TABLE_MAX_SYMBOLS + s;
  const keys = hKey.subarray(0, m).sort();
  const weight = hWeight;
  const parent = hParent;
  for (let i = 0; i < m; i++) {
    const k = keys[i]!;
    const sym = k % TABLE_MAX_SYMBOLS;
    hSym[i] = sym;
    weight[i] = (k - sym) / TABLE_MAX_SYMBOLS;
  }
  let leaf = 0;
  let inner = m;
  const last = 2 * m - 2;
  for (let node = m; node <= last; node++) {
    let w = 0;
    for (let pick = 0; pick < 2; pick++) {
      const takeLeaf = leaf < m && (inner >= node || weight[leaf]! <= weight[inner]!);
      const c = takeLeaf ? leaf++ : inner++;
      w += weight[c]!;
      parent[c] = node;
    }
    weight[node] = w;
  }
  // parents come after their children: depths from the root down
  const depth = hDepth;
  depth[last] = 0;
  for (let i = last - 1; i >= 0; i--) depth[i] = depth[parent[i]!]! + 1;
  const lengths = new Uint8Array(a);
  let over = false;
  for (let i = 0; i < m; i++) {
    const s = hSym[i]!;
    let len = depth[i]!;
    if (len > maxLen) {
      if (!limit) return null;
      len = maxLen;
      over = true;
    }
    lengths[s] = len;
  }
  if (over) limitLengths(lengths, freq, maxLen);
  return lengths;
}

/**
 * Makes code lengths cut to `maxLen` a prefix code again: while the code space is overfull, the
 * rarest of the longest codes below `maxLen` is made a bit longer (as zlib and others do; a
 * length-limited code costs little more here, where few codes pass the limit).
 */
function limitLengths(lengths: Uint8Array, freq: Float64Array, maxLen: number): void {
  let excess = -(2 ** maxLen);
  for (let s = 0; s < lengths.length; s++) if (lengths[s]) excess += 2 ** (maxLen - lengths[s]!);
  while (excess > 0) {
    let pick = -1;
    for (let s = 0; s < lengths.length; s++) {
      const len = lengths[s]!;
      if (len === 0 || len >= maxLen) continue;
      if (pick < 0 || len > lengths[pick]! || (len === lengths[pick]! && freq[s]! < freq[pick]!)) pick = s;
    }
    excess -= 2 ** (maxLen - lengths[pick]! - 1);
    lengths[pick]!++;
  }
}

/** Canonical codes for `lengths`: by length, then by symbol. */
function canonicalCodes(lengths: Uint8Array, codes = new Uint32Array(lengths.length)): Uint32Array {
  // codes of each length are consecutive, in symbol order, after those of the shorter lengths
  const count = codeCount;
  count.fill(0);
  for (let s = 0; s < lengths.length; s++) count[lengths[s]!]!++;
  const next = nextCode;
  let code = 0;
  count[0] = 0;
  for (let len = 1; len <= TABLE_MAX_CODE; len++) {
    code = (code + count[len - 1]!) << 1;
    next[len] = code;
  }
  for (let s = 0; s < lengths.length; s++) {
    const len = lengths[s]!;
    codes[s] = len ? next[len]!++ : 0;
  }
  return codes;
}
/** Scratch of {@link canonicalCodes}: codes per length, and the next code of each length. */
const codeCount = new Int32Array(TABLE_MAX_CODE + 1);
const nextCode = new Int32Array(TABLE_MAX_CODE + 1);

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

/** BINNED is planned (format version 4 codes); off while encoding runs for older readers. */
let binnedEnabled = true;

/** Whether the sequences encoded next may be BINNED (run codes version 3) or not (version 2). */
export function encodeSequencesOfCodes(codes: number): void {
  binnedEnabled = codes >= 3;
}

const FINE_BINS = binCount(BIN_MAX_T);
/** Fine bins (t = BIN_MAX_T) to the bins of each coarser t: fineTo[t][fine]. */
const fineTo: Int16Array[] = Array.from({ length: BIN_MAX_T }, (_, t) => {
  const m = new Int16Array(FINE_BINS);
  for (let f = 0; f < FINE_BINS; f++) m[f] = binOf(binStart(f, BIN_MAX_T), t);
  return m;
});
/** Counts per fine bin of the two centers (0: from the minimum, 1: zigzag around the median). */
const fineHist = [new Float64Array(FINE_BINS), new Float64Array(FINE_BINS)];
/** The fine bin of each element of the sequence being planned, per center. */
let fineOf = [new Uint16Array(1024), new Uint16Array(1024)];
// the scratch a sequence of millions of elements grew is not kept for the ones after it
onShrinkScratch(() => {
  if (fineOf[0]!.length > SCRATCH_KEEP_SAMPLES) fineOf = [new Uint16Array(1024), new Uint16Array(1024)];
  if (sel.length > SCRATCH_KEEP_SAMPLES) sel = new Float64Array(PARTITION);
  if (excIdx.length > SCRATCH_KEEP_SAMPLES) {
    excIdx = new Float64Array(64);
    excVal = new Float64Array(64);
  }
});
/** The fine bins each center's last pass touched (the rest of its histogram is zero). */
const fineLo = [0, 0];
const fineHi = [FINE_BINS - 1, FINE_BINS - 1];
/** Counts per bin of the candidate being costed. */
const binFreq = new Float64Array(TABLE_MAX_SYMBOLS);

/** The plan of {@link planBinned}. */
let binnedZig = 0;
let binnedCenter = 0;
let binnedT = 0;
let binnedLo = 0;
let binnedLengths: Uint8Array = new Uint8Array(0);

/** Fine bin of distance z (t = BIN_MAX_T), with an int32 path below 2^31. */
function fineBin(z: number): number {
  if (z < 16) return z;
  if (z < 0x80000000) {
    const b = 32 - Math.clz32(z);
    return 16 + (b - 5) * 8 + ((z >>> (b - 4)) & 7);
  }
  return binOf(z, BIN_MAX_T);
}

/**
 * The code lengths of a BINNED sequence: the first in 4 bits, then per bin a token in unary (k
 * zero bits and a one). Token k is a step from the last present length, {@link LEN_STEP}[k]; or
 * a run of absent bins ({@link LEN_ABSENT}: its length r >= 1 follows as an Elias gamma code);
 * or any length ({@link LEN_ANY}: in the 4 bits that follow). Measured on the generator (seed 42):
 * 61 KB of code lengths instead of 94 KB with zigzagged steps in unary.
 */
const LEN_STEP = [0, -1, 1, NaN, -2, 2, -3, 3];
const LEN_ABSENT = 3;
const LEN_ANY = 8;

/** The length-list token of a step `d` between present code lengths. */
function lengthToken(d: number): number {
  return d === 0 ? 0 : d === -1 ? 1 : d === 1 ? 2 : d === -2 ? 4 : d === 2 ? 5 : d === -3 ? 6 : d === 3 ? 7 : LEN_ANY;
}

/**
 * Bits of the length list of a BINNED code (its first and last lengths are not 0), written to `w`
 * when one is given: the planner costs the list with the same code that writes it.
 */
function lengthList(lengths: Uint8Array, w: BitWriter | null): number {
  let prev = lengths[0]!;
  w?.write(prev, 4);
  let bits = 4;
  for (let s = 1; s < lengths.length; s++) {
    const len = lengths[s]!;
    if (len === 0) {
      let run = 1;
      while (lengths[s + run] === 0) run++;
      w?.write(1, LEN_ABSENT + 1);
      w?.write(run, 2 * bitLength(run) - 1);
      bits += LEN_ABSENT + 1 + 2 * bitLength(run) - 1;
      s += run - 1;
      continue;
    }
    const tok = lengthToken(len - prev);
    w?.write(1, tok + 1);
    if (tok === LEN_ANY) w?.write(len, 4);
    bits += tok + 1 + (tok === LEN_ANY ? 4 : 0);
    prev = len;
  }
  return bits;
}

/**
 * Bits of the BINNED layout of `x[start, start+n)` (whose smallest element is `min`), its plan
 * left in {@link binnedZig} and the next variables; Infinity when no candidate fits (more than
 * {@link TABLE_MAX_SYMBOLS} bins at every t, or fewer than two). Every center and t is estimated
 * from one histogram of fine bins per center by the entropy of its bins; the best gets its Huffman
 * code (limited to {@link BIN_MAX_CODE} bits) and exact cost.
 */
function planBinned(x: Float64Array, start: number, n: number, min: number): number {
  if (fineOf[0]!.length < n) fineOf = [new Uint16Array(n), new Uint16Array(n)];
  if (sel.length < n) sel = new Float64Array(n);
  let bestEst = Infinity;
  let bestZig = 0;
  let bestT = 0;
  let median = min;
  for (let zig = 0; zig < 2; zig++) {
    const h = fineHist[zig]!;
    const fine = fineOf[zig]!;
    h.fill(0, fineLo[zig]!, fineHi[zig]! + 1);
    const center = zig ? median : min;
    let lo = FINE_BINS;
    let hi = 0;
    for (let i = 0; i < n; i++) {
      const d = x[start + i]! - center;
      const f = fineBin(zig ? (d >= 0 ? d * 2 : -d * 2 - 1) : d);
      fine[i] = f;
      if (f < lo) lo = f;
      if (f > hi) hi = f;
      h[f]!++;
    }
    fineLo[zig] = lo;
    fineHi[zig] = hi;
    for (let t = 0; t <= BIN_MAX_T; t++) {
      const a = binCounts(zig, t);
      if (a < 2 || a > TABLE_MAX_SYMBOLS) continue;
      // the entropy of the bins, their verbatim bits and about 2 bits per code length
      const offs = BIN_OFFS[t]!;
      let est = 2 * a;
      for (let s = 0; s < a; s++) {
        const c = binFreq[s]!;
        if (c > 0) est += c * (offs[binLo + s]! + Math.log2(n / c));
      }
      if (est < bestEst) {
        bestEst = est;
        bestZig = zig;
        bestT = t;
      }
    }
    if (zig === 0) {
      // the center of the zigzag: the median, selected among the elements of the fine bin that
      // holds it only (a selection over the whole sequence was 6 % of encoding)
      let f = lo;
      let below = 0;
      while (below + h[f]! <= n >> 1) below += h[f++]!;
      let c = 0;
      for (let i = 0; i < n; i++) if (fine[i] === f) sel[c++] = x[start + i]!;
      median = quickselect(sel, c, (n >> 1) - below);
    }
  }
  if (bestEst === Infinity) return Infinity;
  // the best estimate gets its Huffman code and exact cost (costing those within 2 % of it as well
  // saved 0.0002 bytes per sample on the generator, seed 42, and cost a tenth of encoding)
  const t = bestT;
  const a = binCounts(bestZig, t);
  const lo = binLo;
  const lengths = huffmanLengths(binFreq, a, BIN_MAX_CODE, true)!;
  const center = bestZig ? median : min;
  const offs = BIN_OFFS[t]!;
  let bits = 2 + VARBITS_COST(zigzag(center)) + 6 + 1 + 2 + BIN_LO_BITS + 6 + lengthList(lengths, null);
  for (let s = 0; s < a; s++) {
    const k = binFreq[s]!;
    if (k > 0) bits += k * (lengths[s]! + offs[lo + s]!);
  }
  binnedZig = bestZig;
  binnedCenter = center;
  binnedT = t;
  binnedLo = lo;
  binnedLengths = lengths;
  return bits;
}

/** The first bin of the counts {@link binCounts} left in {@link binFreq}. */
let binLo = 0;

/**
 * Counts per bin of parameter t of the sequence being planned, from its fine histogram of center
 * `zig`: left in {@link binFreq} (bins from {@link binLo}); returns the number of bins, not
 * counted when over {@link TABLE_MAX_SYMBOLS}.
 */
function binCounts(zig: number, t: number): number {
  const h = fineHist[zig]!;
  const fLo = fineLo[zig]!;
  const fHi = fineHi[zig]!;
  const map = t < BIN_MAX_T ? fineTo[t]! : null;
  const lo = map ? map[fLo]! : fLo;
  const a = (map ? map[fHi]! : fHi) - lo + 1;
  binLo = lo;
  if (a > TABLE_MAX_SYMBOLS) return a;
  const freq = binFreq;
  freq.fill(0, 0, a);
  for (let f = fLo; f <= fHi; f++) freq[(map ? map[f]! : f) - lo]! += h[f]!;
  return a;
}

/**
 * Bits of the DENSE layout of `x[start, start+n)`, each partition's plan left in
 * {@link planMedian}, {@link planBase} and {@link planK}; stops counting once past `bound`.
 */
function planDense(x: Float64Array, start: number, n: number, bound: number): number {
  const parts = Math.ceil(n / PARTITION);
  if (planBase.length < parts) {
    planMedian = new Uint8Array(2 * parts);
    planBase = new Float64Array(2 * parts);
    planK = new Uint8Array(2 * parts);
  }
  let bits = 2;
  let prevBase = 0;
  for (let pi = 0, p = 0; p < n; pi++, p += PARTITION) {
    const len = Math.min(PARTITION, n - p);
    const partBits = planPartition(x, start + p, len, pi);
    bits += 1 + VARBITS_COST(zigzag(planBase[pi]! - prevBase)) + 6 + partBits;
    prevBase = planBase[pi]!;
    if (bits >= bound) break;
  }
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
  const tableBits = planTable(x, start, n, min, max);
  // BINNED, where it may be written, takes the place of DENSE: planning DENSE's partitions as well
  // took a fifth of encoding, and DENSE was smaller for 2.5 % of the generator's sequences (it
  // adapts to each partition), saving 0.00006 bytes per sample. Every element of either costs a
  // bit at least, so neither is planned when SPARSE or TABLE is below that.
  let denseBits = Infinity;
  const cheap = Math.min(tableBits, sparseBits);
  if (cheap > n) {
    const binnedBits = binnedEnabled ? planBinned(x, start, n, min) : Infinity;
    if (binnedBits < cheap) {
      writeBinned(w, x, start, n);
      return;
    }
    if (binnedBits === Infinity) denseBits = planDense(x, start, n, sparseBits);
  }
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
  let prevBase = 0;
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

/** Code of each symbol of the BINNED sequence being written. */
const binCodes = new Uint32Array(TABLE_MAX_SYMBOLS);

/** Writes `x[start, start+n)` as planned by {@link planBinned}. */
function writeBinned(w: BitWriter, x: Float64Array, start: number, n: number): void {
  const lengths = binnedLengths;
  const a = lengths.length;
  const t = binnedT;
  const lo = binnedLo;
  const zig = binnedZig === 1;
  const center = binnedCenter;
  w.write(SEQ_TABLE, 2);
  w.varBits(zigzag(center));
  w.write(0, 6); // one symbol: no TABLE has it; BINNED follows
  w.write(binnedZig, 1);
  w.write(t, 2);
  w.write(lo, BIN_LO_BITS);
  w.write(a - 1, 6);
  lengthList(lengths, w);
  const codes = canonicalCodes(lengths, binCodes);
  const starts = BIN_STARTS[t]!;
  const offs = BIN_OFFS[t]!;
  const map = t < BIN_MAX_T ? fineTo[t]! : null;
  const fine = fineOf[binnedZig]!;
  for (let i = 0; i < n; i++) {
    const f = fine[i]!;
    const bin = map ? map[f]! : f;
    const sym = bin - lo;
    const len = lengths[sym]!;
    const ob = offs[bin]!;
    if (ob === 0) {
      w.write(codes[sym]!, len);
      continue;
    }
    const d = x[start + i]! - center;
    const rest = (zig ? (d >= 0 ? d * 2 : -d * 2 - 1) : d) - starts[bin]!;
    // the code and the verbatim bits in one field when they fit
    if (len + ob <= 32) w.write(((codes[sym]! << ob) | rest) >>> 0, len + ob);
    else {
      w.write(codes[sym]!, len);
      w.writeWide(rest, ob);
    }
  }
}

/**
 * Sets the block format version of the sequences decoded next (decoding is synchronous: the run
 * decoder sets it before a run and sets it back to the current version after). In a version 1
 * block a TABLE sequence (BINNED among them) is a CorruptionError naming the layout and the
 * version, not decoded.
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

/**
 * A decoded TABLE or BINNED header. `lookup[peek >>> (32 - maxLen)]` is, for TABLE, symbol << 4 |
 * length; for BINNED, bin << 10 | verbatim bits << 4 | length (bin counted from `lo`); 0: no code.
 * One object for every sequence (decoding is synchronous and sequences are not nested).
 */
const seqCode = {
  binned: false,
  min: 0,
  maxLen: 0,
  lookup: new Uint16Array(1 << TABLE_MAX_CODE),
  zig: false,
  t: 0,
  lo: 0,
  /** BINNED: every distance is below 2^31 and every code fits 32 bits with its verbatim bits. */
  small: false,
};
type SeqCode = typeof seqCode;

/** Code lengths of the TABLE or BINNED sequence being read, and their canonical codes. */
const tableLengthsIn = new Uint8Array(TABLE_MAX_SYMBOLS);
const codesIn = new Uint32Array(TABLE_MAX_SYMBOLS);

/**
 * Reads the header of a TABLE sequence (after its layout field) and builds its lookup table; a
 * header of one symbol is a BINNED sequence (format version 4), whose header is read on.
 */
function readTable(r: BitReader): SeqCode {
  const min = unzigzag(r.varBits());
  const a = r.read(6) + 1;
  // a TABLE header of one symbol, which no TABLE writer made, is BINNED: decoded in blocks of
  // versions 2 and 3 too (a build before version 4, rolled back onto a WAL of this one, copies
  // its runs into blocks it labels so; docs/runbook.md), so that no block is left unreadable
  if (a < 2) return readBinned(r, min);
  const lengths = tableLengthsIn.subarray(0, a);
  for (let s = 0; s < a; s++) {
    const len = r.read(4);
    if (len > TABLE_MAX_CODE) throw r.corrupt(`table code length ${len} exceeds ${TABLE_MAX_CODE}`);
    lengths[s] = len;
  }
  const code = seqCode;
  code.binned = false;
  code.min = min;
  code.maxLen = buildLookup(r, lengths, TABLE_MAX_CODE, null, 0);
  return code;
}

/**
 * Fills {@link seqCode}'s lookup for canonical code `lengths` (checked to form a prefix code of
 * codes up to `maxCode` bits) and returns the longest length. With `offs` (BINNED), entries carry
 * the verbatim bits of bin `lo + symbol` too.
 */
function buildLookup(r: BitReader, lengths: Uint8Array, maxCode: number, offs: Uint8Array | null, lo: number): number {
  const a = lengths.length;
  let maxLen = 0;
  let kraft = 0;
  for (let s = 0; s < a; s++) {
    const len = lengths[s]!;
    if (len > maxLen) maxLen = len;
    if (len) kraft += 2 ** (maxCode - len);
  }
  if (kraft > 2 ** maxCode || maxLen === 0) throw r.corrupt('table code lengths do not form a prefix code');
  const codes = canonicalCodes(lengths, codesIn);
  // one table for every sequence: a fresh 8 KiB table per run cost the float layout 15 % of its
  // decoding speed
  const lookup = seqCode.lookup;
  lookup.fill(0, 0, 1 << maxLen);
  for (let s = 0; s < a; s++) {
    const len = lengths[s]!;
    if (!len) continue;
    const first = codes[s]! << (maxLen - len);
    const entry = offs ? (s << 10) | (offs[lo + s]! << 4) | len : (s << 4) | len;
    lookup.fill(entry, first, first + (1 << (maxLen - len)));
  }
  return maxLen;
}

/** Reads the rest of a BINNED header (its center read as the TABLE header's minimum). */
function readBinned(r: BitReader, center: number): SeqCode {
  const zig = r.read(1) === 1;
  const t = r.read(2);
  const lo = r.read(BIN_LO_BITS);
  const a = r.read(6) + 1;
  if (a < 2) throw r.corrupt('binned sequence of one bin');
  if (lo + a > binCount(t)) throw r.corrupt(`binned sequence has bins ${lo}..${lo + a - 1}, beyond the ${binCount(t)} of parameter ${t}`);
  const lengths = tableLengthsIn.subarray(0, a);
  let prev = r.read(4);
  if (prev < 1 || prev > BIN_MAX_CODE) throw r.corrupt(`binned sequence first code length ${prev} outside 1..${BIN_MAX_CODE}`);
  lengths[0] = prev;
  for (let s = 1; s < a; ) {
    const tok = Math.clz32(r.peek());
    if (tok > LEN_ANY) throw r.corrupt('binned sequence code length token out of range');
    r.pos += tok + 1;
    if (tok === LEN_ABSENT) {
      const zeros = Math.clz32(r.peek());
      if (zeros > 6) throw r.corrupt('binned sequence run of absent bins too long');
      const run = r.read(2 * zeros + 1);
      if (s + run >= a) throw r.corrupt(`binned sequence run of ${run} absent bins reaches its last bin`);
      lengths.fill(0, s, s + run);
      s += run;
      continue;
    }
    const len = tok === LEN_ANY ? r.read(4) : prev + LEN_STEP[tok]!;
    if (len < 1 || len > BIN_MAX_CODE) throw r.corrupt(`binned sequence code length ${len} outside 1..${BIN_MAX_CODE}`);
    lengths[s++] = len;
    prev = len;
  }
  r.check();
  const code = seqCode;
  code.binned = true;
  code.min = center;
  code.zig = zig;
  code.t = t;
  code.lo = lo;
  const maxLen = buildLookup(r, lengths, BIN_MAX_CODE, BIN_OFFS[t]!, lo);
  code.maxLen = maxLen;
  const last = lo + a - 1;
  const lastOffs = BIN_OFFS[t]![last]!;
  code.small = BIN_STARTS[t]![last]! + 2 ** lastOffs <= 0x80000000 && maxLen + lastOffs <= 32;
  return code;
}

/** Decodes the elements of a TABLE or BINNED sequence, as {@link BitReader.tableBlock}. */
function tableElements(r: BitReader, c: SeqCode, out: Float64Array, start: number, n: number, acc: number, div: number): number {
  if (c.binned) {
    if (c.small) return r.binnedBlock32(out, start, n, c.lookup, c.maxLen, BIN_STARTS32[c.t]!, c.lo, c.min, c.zig, acc, div);
    return r.binnedBlock(out, start, n, c.lookup, c.maxLen, BIN_STARTS[c.t]!, c.lo, c.min, c.zig, acc, div);
  }
  return r.tableBlock(out, start, n, c.lookup, c.maxLen, c.min, acc, div);
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
    tableElements(r, readTable(r), out, start, n, 0, 0);
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
    return tableElements(r, readTable(r), out, start, n, acc, div);
  }
  const h = { zig: false, base: 0, k: 0 };
  for (let p = 0; p < n; p += PARTITION) {
    partitionHeader(r, h);
    acc = r.riceSums(out, start + p, Math.min(PARTITION, n - p), h.k, h.base, h.zig, acc, div);
  }
  return acc;
}
