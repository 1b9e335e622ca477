/**
 * Value codecs of a run (spec: docs/format/chunk.md, "Values"). Every float64 bit pattern
 * round-trips: NaN payloads, -0, ±Inf, subnormals. The encoder looks at the data and picks:
 *
 * - CONST  (1): all n values have the same bit pattern; 8 bytes.
 * - SCALED (2): every value equals m/D exactly (IEEE division, bit for bit) for one integer
 *   denominator D and integers |m| < 2^50: integer counters (D = 1), decimals with few digits
 *   (D = 10^e), rates over a fixed window (D = 300). The m are delta coded as an integer sequence.
 * - RATIO  (3): every value equals p/q for small per-sample integers (hit ratios and the like).
 * - FLOAT  (4): fallback for true floats: the bit patterns are mapped to order-preserving 64-bit
 *   integers, delta coded; the high part of each zigzagged delta goes through the integer
 *   sequence coder and its low `s` bits are stored verbatim.
 *
 * - NEAR   (5, format version 2): decimals computed in floating point, such as CPU seconds summed
 *   from ticks (0.010000000000000009, 13.543000000000001): every value is m/D for D = 10^e, moved
 *   by a few units in the last place (ulps). The m are delta coded as in SCALED and the ulp
 *   residuals go through the integer sequence coder (mostly 0 and ±1..±8). Tried only where FLOAT
 *   would be used, and kept when smaller; on the real dataset it takes such series from about 3.7
 *   to 0.83 bytes per sample.
 *
 * Format version 2 adds exceptions ({@link V_EXCEPTIONS} set on one of the layouts above): a short
 * list of values stored aside (NaN payloads such as Prometheus' stale marker, ±Inf, -0, and
 * outliers that fit no common denominator). Those at the run's edges are left out of the layout's
 * data and those inside are replaced there by their predecessor, so a stale marker at the end of a
 * counter costs 3 bytes instead of the whole run's compact layout.
 */
import { BitReader, BitWriter } from './bits.js';
import { ByteReader, ByteWriter, onShrinkScratch, SCRATCH_KEEP_SAMPLES } from './bytes.js';
import { decodeIntSeq, decodeIntSeqSums, encodeIntSeq } from './intseq.js';

export const V_CONST = 1;
export const V_SCALED = 2;
export const V_RATIO = 3;
export const V_FLOAT = 4;
export const V_NEAR = 5;
/** Flag on a value layout (format version 2): an exception list precedes the layout's data. */
export const V_EXCEPTIONS = 8;

/** Exception classes (low 3 bits of an exception entry); RAW is followed by the 8 value bytes. */
export const EXC_RAW = 0;
export const EXC_STALE = 1;
export const EXC_NAN = 2;
export const EXC_POS_INF = 3;
export const EXC_NEG_INF = 4;
export const EXC_NEG_ZERO = 5;
/** Bit patterns of the classes EXC_STALE..EXC_NEG_ZERO as [hi, lo] 32-bit halves. */
const EXC_BITS: readonly (readonly [number, number])[] = [
  [0, 0],
  [0x7ff00000, 2], // Prometheus' stale marker 0x7ff0000000000002
  [0x7ff80000, 0], // the canonical quiet NaN 0x7ff8000000000000
  [0x7ff00000, 0], // +Inf
  [0xfff00000, 0], // -Inf
  [0x80000000, 0], // -0
];
const EXC_CLASSES = EXC_BITS.length;
/** Exceptions are tried only when they are at most this share of the values. */
const MAX_EXCEPTION_SHARE = 1 / 8;
/** Largest common denominator of a SCALED layout that has outliers as exceptions. */
const MAX_LOOSE_DEN = 2 ** 20;

/** Largest |m| of a SCALED or RATIO value. */
const M_LIMIT = 2 ** 50;
/** Largest common denominator tried for SCALED. */
const MAX_DEN = 2 ** 32;
/** Largest per-sample denominator tried for RATIO. */
const MAX_RATIO_DEN = 2 ** 24;
/** Bound on a RATIO denominator after scaling a reduced fraction by an integer. */
const MAX_SCALED_RATIO_DEN = 2 ** 40;
const TWO32 = 4294967296;
/** NEAR: largest decimal exponent tried, and bound on |ulp residual|. */
const MAX_NEAR_EXP = 9;
const NEAR_LIMIT = 2 ** 20;
/** NEAR: candidate exponents encoded in full (the smallest ones that fit), keeping the smallest. */
const NEAR_TRIES = 3;
const POW10 = Array.from({ length: MAX_NEAR_EXP + 1 }, (_, e) => 10 ** e);

let ints = new Float64Array(1024);
let ints2 = new Float64Array(1024);

function grow(n: number): void {
  if (ints.length < n) {
    ints = new Float64Array(n);
    ints2 = new Float64Array(n);
  }
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Smallest denominator q <= maxDen such that some integer p gives p/q === |v| exactly, found
 * among the continued-fraction convergents of |v|; 0 if there is none.
 */
export function denominatorOf(v: number, maxDen: number): number {
  const a0 = Math.abs(v);
  if (!Number.isFinite(a0)) return 0;
  let x = a0;
  let p0 = 1, q0 = 0, p1 = 0, q1 = 1; // convergents h(-1)/k(-1), h(-2)/k(-2)
  for (let iter = 0; iter < 64; iter++) {
    const a = Math.floor(x);
    const p = a * p0 + p1;
    const q = a * q0 + q1;
    if (q > maxDen || p > M_LIMIT) return 0;
    if (p / q === a0) return q;
    const frac = x - a;
    if (frac === 0) return 0;
    x = 1 / frac;
    p1 = p0; q1 = q0; p0 = p; q0 = q;
  }
  return 0;
}

function isNegZero(v: number): boolean {
  return v === 0 && 1 / v < 0;
}

/**
 * The values that made {@link findScaled} grow its denominator, and the denominator each one
 * needed (at most {@link MAX_GROWTHS} kept): {@link findScaledOutliers} tries the run without each.
 */
const MAX_GROWTHS = 8;
const growthQ = new Float64Array(MAX_GROWTHS);
let growths = 0;

/** Fills `ints` with m_i and returns D, or 0 when the values are not all m/D. */
function findScaled(values: Float64Array, n: number): number {
  let d = 1;
  growths = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    const m = Math.round(v * d);
    if (m / d === v && Math.abs(m) < M_LIMIT && !isNegZero(v)) {
      ints[i] = m;
      continue;
    }
    if (!Number.isFinite(v) || isNegZero(v)) return 0;
    const q = denominatorOf(v, MAX_DEN);
    if (q === 0) return 0;
    d = (d / gcd(d, q)) * q;
    if (d > MAX_DEN) return 0;
    if (growths < MAX_GROWTHS) growthQ[growths] = q;
    growths++;
    // earlier m scale with the new denominator; re-check everything on the final pass
    const m2 = Math.round(v * d);
    if (m2 / d !== v || Math.abs(m2) >= M_LIMIT) return 0;
    ints[i] = m2;
  }
  // final verification pass, exactly as the decoder computes
  for (let i = 0; i < n; i++) {
    const m = Math.round(values[i]! * d);
    if (m / d !== values[i] || Math.abs(m) >= M_LIMIT) return 0;
    ints[i] = m;
  }
  return d;
}

/** Fills `ints` with q_i and `ints2` with p_i; false when some value is no small fraction. */
function findRatio(values: Float64Array, n: number): boolean {
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    if (isNegZero(v)) return false;
    const q = denominatorOf(v, MAX_RATIO_DEN);
    if (q === 0) return false;
    const p = Math.round(v * q);
    if (p / q !== v) return false;
    // (c p) / (c q) is the same exact rational, so IEEE division gives the same double: scale
    // the reduced fraction back towards the previous denominator (a hit ratio's hits + misses,
    // which the reduction by gcd(hits, misses) makes jump), so the deltas stay small
    // (only while c p, c q and their difference stay exact integers: beyond 2^53 the decoder's
    // (q - (q - p)) / q would no longer be p / q)
    const c = i > 0 ? Math.max(1, Math.round(ints[i - 1]! / q)) : 1;
    const scaled = c * q < MAX_SCALED_RATIO_DEN && Number.isSafeInteger(c * p) && Number.isSafeInteger(c * q - c * p);
    ints[i] = scaled ? c * q : q;
    ints2[i] = scaled ? c * p : p;
  }
  return true;
}

/** Order-preserving map of float64 bits to uint64, as [hi, lo] in `u32` (in place). */
function toOrdered(hi: number, lo: number, out: Uint32Array, i: number): void {
  if (hi & 0x80000000) {
    out[2 * i] = ~lo >>> 0;
    out[2 * i + 1] = ~hi >>> 0;
  } else {
    out[2 * i] = lo;
    out[2 * i + 1] = (hi | 0x80000000) >>> 0;
  }
}

let ordBuf = new Uint32Array(2048);
let zhi = new Uint32Array(1024);
let zlo = new Uint32Array(1024);
/** Counts of the zigzagged float deltas by bit length (0..64). */
const widthCounts = new Int32Array(65);
/** Bit writers reused by the encoders (each finished and copied out before its next use). */
const intWriter = new BitWriter(4096);
const floatWriter = new BitWriter(8192);
const nearWriter = new BitWriter(4096);
let deltaBuf = new Float64Array(1024);

function encodeFloat(out: ByteWriter, values: Float64Array, n: number): void {
  const bits = new Uint32Array(values.buffer, values.byteOffset, n * 2);
  if (ordBuf.length < 2 * n) ordBuf = new Uint32Array(2 * n);
  for (let i = 0; i < n; i++) toOrdered(bits[2 * i + 1]!, bits[2 * i]!, ordBuf, i);
  // zigzag deltas of the ordered integers, as hi/lo halves
  if (zhi.length < n) {
    zhi = new Uint32Array(2 * n);
    zlo = new Uint32Array(2 * n);
  }
  for (let i = 1; i < n; i++) {
    const alo = ordBuf[2 * i]!, ahi = ordBuf[2 * i + 1]!;
    const blo = ordBuf[2 * i - 2]!, bhi = ordBuf[2 * i - 1]!;
    let dlo = alo - blo;
    let dhi = ahi - bhi;
    if (dlo < 0) {
      dlo += TWO32;
      dhi -= 1;
    }
    dhi = dhi >>> 0; // two's complement 64-bit delta: (dhi, dlo)
    const neg = dhi >>> 31;
    // zigzag: (d << 1) ^ (d >> 63)
    let zh = ((dhi << 1) | (dlo >>> 31)) >>> 0;
    let zl = (dlo << 1) >>> 0;
    if (neg) {
      zh = ~zh >>> 0;
      zl = ~zl >>> 0;
    }
    zhi[i] = zh;
    zlo[i] = zl;
  }
  // choose the split: s low bits raw, the rest through the integer sequence coder
  const m = n - 1;
  let s = 13;
  if (m > 0) {
    // the median width: the one where the count of smaller widths first exceeds m / 2
    widthCounts.fill(0);
    for (let i = 1; i < n; i++) widthCounts[zhi[i] ? 64 - Math.clz32(zhi[i]!) : 32 - Math.clz32(zlo[i]!)]!++;
    let med = 0;
    for (let seen = 0; med <= 64; med++) {
      seen += widthCounts[med]!;
      if (seen > m >> 1) break;
    }
    s = Math.max(13, Math.min(32, med - 6));
  }
  out.u32(bits[0]!);
  out.u32(bits[1]!);
  out.u8(s);
  grow(n);
  const hiDiv = 2 ** s;
  const hiMul = 2 ** (32 - s);
  for (let i = 1; i < n; i++) ints[i - 1] = zhi[i]! * hiMul + Math.floor(zlo[i]! / hiDiv);
  const w = floatWriter;
  w.reset();
  encodeIntSeq(w, ints, 0, m);
  const lowMask = s === 32 ? 0xffffffff : 2 ** s - 1;
  for (let i = 1; i < n; i++) w.write((zlo[i]! & lowMask) >>> 0, s);
  out.bytes(w.finish());
}

function decodeFloat(r: ByteReader, n: number, out: Float64Array, at: number): void {
  // the output's bit patterns as int32 halves [lo0, hi0, lo1, hi1, ...]
  const bits = new Int32Array(out.buffer, out.byteOffset + 8 * at, n * 2);
  const lo0 = r.u32('first value');
  const hi0 = r.u32('first value');
  bits[0] = lo0;
  bits[1] = hi0;
  const s = r.u8('split width');
  if (s < 13 || s > 32) throw r.corrupt(`float split width ${s} outside 13..32`);
  const m = n - 1;
  const br = BitReader.shared(r.buf, r.pos, r.end, r.origin);
  grow(n);
  decodeIntSeq(br, ints, 0, m);
  // ordered value of the first sample, as int32 halves
  let ohi: number, olo: number;
  if (hi0 & 0x80000000) {
    olo = ~lo0;
    ohi = ~hi0;
  } else {
    olo = lo0 | 0;
    ohi = hi0 | 0x80000000;
  }
  const hiMul = 2 ** (32 - s);
  const hiDiv = 2 ** (s - 32); // high * hiDiv === high / hiMul exactly (a power of two)
  const sMul = 2 ** s;
  const highLimit = 2 ** (64 - s);
  // the n-1 low parts follow as s raw bits each; read in the loop below once known to be there
  if (br.bitsLeft < m * s) br.readBlock(ints2, 0, m, s); // throws 'bit stream truncated'
  const lowStart = br.pos;
  br.pos = lowStart + m * s;
  for (let i = 1; i < n; i++) {
    const high = ints[i - 1]!;
    if (high < 0 || high >= highLimit) throw br.corrupt(`float delta out of range at index ${i}`);
    // zigzagged delta as halves zh (< 2^32) and zl (< 2^32)
    const zh = Math.floor(high * hiDiv);
    const zl = (high - zh * hiMul) * sMul + br.bitsAt(lowStart + (i - 1) * s, s);
    // unzigzag: (z >>> 1) ^ -(z & 1) on 64 bits
    const neg = -(zl & 1);
    const dl = ((zl >>> 1) | (zh << 31)) ^ neg;
    const dh = (zh >>> 1) ^ neg;
    // ordered += delta (mod 2^64)
    const sum = (olo >>> 0) + (dl >>> 0);
    olo = sum | 0;
    ohi = (ohi + dh + (sum >= TWO32 ? 1 : 0)) | 0;
    // back from the ordered map: a set top bit means a clear sign bit
    if (ohi < 0) {
      bits[2 * i] = olo;
      bits[2 * i + 1] = ohi & 0x7fffffff;
    } else {
      bits[2 * i] = ~olo;
      bits[2 * i + 1] = ~ohi;
    }
  }
  br.expectEnd('float values');
  r.pos = r.end;
}

function sameBits(values: Float64Array, n: number): boolean {
  const b = new Uint32Array(values.buffer, values.byteOffset, n * 2);
  const lo = b[0], hi = b[1];
  for (let i = 1; i < n; i++) if (b[2 * i] !== lo || b[2 * i + 1] !== hi) return false;
  return true;
}

/** Writes m0 and the deltas of `ints[0..n)` as one bit stream. */
function writeIntDeltas(w: BitWriter, src: Float64Array, n: number): void {
  if (deltaBuf.length < n) deltaBuf = new Float64Array(2 * n);
  const deltas = deltaBuf;
  for (let i = 1; i < n; i++) deltas[i - 1] = src[i]! - src[i - 1]!;
  w.varBits(src[0]! >= 0 ? src[0]! * 2 : -src[0]! * 2 - 1);
  encodeIntSeq(w, deltas, 0, n - 1);
}

function readIntDeltas(br: BitReader, dst: Float64Array, n: number): void {
  const z = br.varBits();
  const x0 = z % 2 === 0 ? z / 2 : -(z + 1) / 2;
  dst[0] = x0;
  decodeIntSeqSums(br, dst, 1, n - 1, x0, 1);
}

/** The denominator of the values {@link encodePlain} last found all m/D (0: they were not). */
let plainDen = 0;

/** Writes `values[0..n)` in the cheapest layout without exceptions and returns its id. */
function encodePlain(out: ByteWriter, values: Float64Array, n: number): number {
  if (sameBits(values, n)) {
    const b = new Uint32Array(values.buffer, values.byteOffset, 2);
    out.u32(b[0]!);
    out.u32(b[1]!);
    return V_CONST;
  }
  grow(n);
  const d = findScaled(values, n);
  plainDen = d;
  if (d > 0) {
    const start = out.length;
    out.uvarint(d);
    const w = intWriter;
    w.reset();
    writeIntDeltas(w, ints, n);
    out.bytes(w.finish());
    if (d <= 1 << 20) return V_SCALED;
    // a huge denominator may lose to the float layout
    const scaledBytes = out.finish().slice(start);
    out.length = start;
    const mode = encodeFloatLike(out, values, n);
    if (out.length - start <= scaledBytes.length) return mode;
    out.length = start;
    out.bytes(scaledBytes);
    return V_SCALED;
  }
  if (denominatorOf(values[0]!, MAX_RATIO_DEN) !== 0 && findRatio(values, n)) {
    const start = out.length;
    const w = intWriter;
    w.reset();
    writeIntDeltas(w, ints, n);
    // numerators as distance from the denominator, which is small for ratios near one
    for (let i = 0; i < n; i++) ints2[i] = ints[i]! - ints2[i]!;
    writeIntDeltas(w, ints2, n);
    const ratioBytes = w.finish().slice();
    const mode = encodeFloatLike(out, values, n);
    if (out.length - start <= ratioBytes.length) return mode;
    out.length = start;
    out.bytes(ratioBytes);
    return V_RATIO;
  }
  return encodeFloatLike(out, values, n);
}

const nearQ = new Float64Array(1);
const nearQBits = new Uint32Array(nearQ.buffer);

/** Order-preserving map of the float64 half `hi` (with low half `lo`) to [ordered hi, ordered lo]. */
function orderedHi(hi: number): number {
  return hi & 0x80000000 ? ~hi >>> 0 : (hi | 0x80000000) >>> 0;
}
function orderedLo(hi: number, lo: number): number {
  return hi & 0x80000000 ? ~lo >>> 0 : lo >>> 0;
}

/**
 * Fills `ints` with m = round(v * d) and `ints2` with the ulp distance from m / d to v for the
 * first `n` values; false when some value has |m| >= 2^50 or lies more than NEAR_LIMIT ulps away
 * (NaN, ±Inf, or a true float).
 */
function nearResiduals(values: Float64Array, bits: Uint32Array, n: number, d: number): boolean {
  for (let i = 0; i < n; i++) {
    const m = Math.round(values[i]! * d) + 0; // + 0: -0 becomes 0, -0 itself is one ulp from 0
    if (!(Math.abs(m) < M_LIMIT)) return false;
    nearQ[0] = m / d;
    const hi = bits[2 * i + 1]!;
    const lo = bits[2 * i]!;
    const qh = nearQBits[1]!;
    const ql = nearQBits[0]!;
    const r = (orderedHi(hi) - orderedHi(qh)) * TWO32 + (orderedLo(hi, lo) - orderedLo(qh, ql));
    if (!(Math.abs(r) <= NEAR_LIMIT)) return false;
    ints[i] = m;
    ints2[i] = r;
  }
  return true;
}

/** The NEAR section of the values (the smallest over a few exponents), or null when none fits. */
function encodeNear(values: Float64Array, n: number): Uint8Array | null {
  const bits = new Uint32Array(values.buffer, values.byteOffset, 2 * n);
  grow(n);
  let best: Uint8Array | null = null;
  let tried = 0;
  for (let e = 0; e <= MAX_NEAR_EXP && tried < NEAR_TRIES; e++) {
    const d = POW10[e]!;
    // a prefix first: true floats fail there, cheaply
    if (!nearResiduals(values, bits, Math.min(n, 16), d) || !nearResiduals(values, bits, n, d)) continue;
    tried++;
    const w = nearWriter;
    w.reset();
    writeIntDeltas(w, ints, n);
    encodeIntSeq(w, ints2, 0, n);
    const body = w.finish();
    const out = new ByteWriter(body.length + 8);
    out.uvarint(d);
    out.bytes(body);
    if (!best || out.length < best.length) best = out.finish().slice();
  }
  return best;
}

/** Writes FLOAT or, when smaller, NEAR; returns the layout id. */
function encodeFloatLike(out: ByteWriter, values: Float64Array, n: number): number {
  const start = out.length;
  encodeFloat(out, values, n);
  const near = encodeNear(values, n);
  if (!near || near.length >= out.length - start) return V_FLOAT;
  out.length = start;
  out.bytes(near);
  return V_NEAR;
}

/** Moves the float64 at halves `bits[2i]`, `bits[2i+1]` by `r` ulps (any sign, |r| < 2^51). */
function addUlps(bits: Uint32Array, i: number, r: number): void {
  const hi = bits[2 * i + 1]!;
  const lo = bits[2 * i]!;
  const rhi = Math.floor(r / TWO32);
  let sl = orderedLo(hi, lo) + (r - rhi * TWO32);
  const carry = sl >= TWO32 ? 1 : 0;
  sl -= carry * TWO32;
  const sh = (orderedHi(hi) + rhi + carry) >>> 0;
  // back from the ordered map: a set top bit means a clear sign bit
  if (sh & 0x80000000) {
    bits[2 * i + 1] = sh & 0x7fffffff;
    bits[2 * i] = sl;
  } else {
    bits[2 * i + 1] = ~sh;
    bits[2 * i] = ~sl;
  }
}

let excIdx = new Int32Array(64);
let excLo = new Uint32Array(64);
let excHi = new Uint32Array(64);
let filled = new Float64Array(1024);
const candidate = new ByteWriter(4096);
onShrinkScratch(() => {
  if (ints.length > SCRATCH_KEEP_SAMPLES) {
    ints = new Float64Array(1024);
    ints2 = new Float64Array(1024);
  }
  if (filled.length > SCRATCH_KEEP_SAMPLES) filled = new Float64Array(1024);
  candidate.shrink(8 * SCRATCH_KEEP_SAMPLES);
});

/**
 * Makes room for `count` exceptions, keeping those listed so far: the finders grow the list one
 * entry at a time while they fill it.
 */
function growExceptions(count: number): void {
  if (excIdx.length >= count) return;
  const idx = new Int32Array(2 * count);
  const lo = new Uint32Array(2 * count);
  const hi = new Uint32Array(2 * count);
  idx.set(excIdx);
  lo.set(excLo);
  hi.set(excHi);
  excIdx = idx;
  excLo = lo;
  excHi = hi;
}

/** Whether `v` can only be an exception: a NaN of any payload, ±Inf or -0. */
function isSpecial(v: number): boolean {
  return !Number.isFinite(v) || isNegZero(v);
}

/** Lists the special values (see {@link isSpecial}) in `excIdx`; -1 when there are over `limit`. */
function findSpecials(values: Float64Array, n: number, limit: number): number {
  let count = 0;
  for (let i = 0; i < n; i++) {
    if (!isSpecial(values[i]!)) continue;
    if (count >= limit) return -1;
    growExceptions(count + 1);
    excIdx[count++] = i;
  }
  return count;
}

/**
 * Lists in `excIdx` the values that keep the others from being m/D for one denominator
 * D <= 2^20: the special ones and outliers (a full-precision float among 2-decimal values).
 * Returns their number, or -1 when there are over `limit`.
 */
function findOutliers(values: Float64Array, n: number, limit: number): number {
  let d = 1;
  let misses = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    if (isSpecial(v)) continue;
    const m = Math.round(v * d);
    if (m / d === v && Math.abs(m) < M_LIMIT) continue;
    const q = denominatorOf(v, MAX_LOOSE_DEN);
    const d2 = q === 0 ? 0 : (d / gcd(d, q)) * q;
    if (d2 === 0 || d2 > MAX_LOOSE_DEN || Math.abs(Math.round(v * d2)) >= M_LIMIT) {
      if (++misses > limit) return -1;
      continue;
    }
    d = d2;
  }
  return listMisfits(values, n, d, limit);
}

/**
 * Lists in `excIdx` the values that are not m/D for denominator `d` (special values included),
 * exactly as the decoder computes; returns their number, or -1 when there are over `limit`.
 */
function listMisfits(values: Float64Array, n: number, d: number, limit: number): number {
  let count = 0;
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    const m = Math.round(v * d);
    if (!isSpecial(v) && m / d === v && Math.abs(m) < M_LIMIT) continue;
    if (count >= limit) return -1;
    growExceptions(count + 1);
    excIdx[count++] = i;
  }
  return count;
}

/**
 * For values that are all m/D with D > 1 ({@link findScaled} just ran): lists in `excIdx` the
 * values that a smaller denominator leaves out, when they are few. One value can make D grow for
 * all: 0.5 among integers doubles every m; 3.141592653589793 is m/78256779, which makes every
 * other step cost 27 bits more. Each value that grew D is tried left out (D then being the
 * least common multiple of what the others needed); the smallest such D that leaves at most
 * `limit` values out wins. Returns their number, or 0 when none does.
 */
function findScaledOutliers(values: Float64Array, n: number, d: number, limit: number): number {
  if (growths > MAX_GROWTHS) return 0;
  let bestD = d;
  for (let j = 0; j < growths; j++) {
    let dj = 1;
    for (let k = 0; k < growths; k++) if (k !== j) dj = (dj / gcd(dj, growthQ[k]!)) * growthQ[k]!;
    if (dj >= bestD) continue;
    // an exception costs about 80 bits; a smaller D saves about log2(D / dj) bits per value:
    // when the exceptions would cost more, the run is not encoded again to find out
    const most = Math.min(limit, Math.floor((n * Math.log2(d / dj)) / 80));
    let misses = 0;
    for (let i = 0; i < n && misses <= most; i++) {
      const v = values[i]!;
      const m = Math.round(v * dj);
      if (m / dj !== v) misses++;
    }
    if (misses <= most) bestD = dj;
  }
  return bestD === d ? 0 : Math.max(0, listMisfits(values, n, bestD, limit));
}

/** Class of the bit pattern `hi`:`lo` (EXC_RAW when it has no short form). */
function exceptionClass(hi: number, lo: number): number {
  for (let c = 1; c < EXC_CLASSES; c++) if (EXC_BITS[c]![0] === hi && EXC_BITS[c]![1] === lo) return c;
  return EXC_RAW;
}

/**
 * Writes the exceptions `excIdx[0..count)` of `values` (0 < count < n) and the layout of the
 * values from the first to the last that is not an exception, each exception among them replaced
 * by the value before it, to `w`; returns the layout id with {@link V_EXCEPTIONS} set.
 */
function encodeWithExceptions(w: ByteWriter, values: Float64Array, n: number, count: number): number {
  const bits = new Uint32Array(values.buffer, values.byteOffset, 2 * n);
  w.uvarint(count);
  let prevIdx = -1;
  for (let e = 0; e < count; e++) {
    const i = excIdx[e]!;
    const lo = bits[2 * i]!;
    const hi = bits[2 * i + 1]!;
    const c = exceptionClass(hi, lo);
    w.uvarint((i - prevIdx - 1) * 8 + c);
    if (c === EXC_RAW) {
      w.u32(lo);
      w.u32(hi);
    }
    prevIdx = i;
  }
  // exceptions at the edges are left out of the layout; inner ones take the value before them
  const { lead, tail } = edgeExceptions(n, count);
  const m = n - lead - tail;
  if (filled.length < m) filled = new Float64Array(Math.max(m, 2 * filled.length));
  let prev = values[lead]!;
  for (let i = lead, e = lead, j = 0; i < n - tail; i++, j++) {
    if (e < count && excIdx[e] === i) {
      filled[j] = prev;
      e++;
    } else {
      prev = values[i]!;
      filled[j] = prev;
    }
  }
  if (sameBits(filled, m)) {
    const b = new Uint32Array(filled.buffer, filled.byteOffset, 2);
    w.u32(b[0]!);
    w.u32(b[1]!);
    return V_EXCEPTIONS | V_CONST;
  }
  return V_EXCEPTIONS | encodePlain(w, filled, m);
}

/**
 * How many of the exceptions `excIdx[0..count)` (count < n) are the run's first values (`lead`)
 * and its last values (`tail`): those are not in the layout's data at all.
 */
function edgeExceptions(n: number, count: number): { lead: number; tail: number } {
  let lead = 0;
  while (lead < count && excIdx[lead] === lead) lead++;
  let tail = 0;
  while (tail < count - lead && excIdx[count - 1 - tail] === n - 1 - tail) tail++;
  return { lead, tail };
}

/**
 * Encodes `values` with the exceptions listed in `excIdx[0..count)` and keeps the result in place
 * of the section written at `out[start..)` (layout `best`) when it is smaller; returns the layout
 * id of what `out` now holds.
 */
function tryExceptions(out: ByteWriter, start: number, best: number, values: Float64Array, n: number, count: number): number {
  candidate.reset();
  const mode = encodeWithExceptions(candidate, values, n, count);
  if (candidate.length >= out.length - start) return best;
  out.length = start;
  out.bytes(candidate.finish());
  return mode;
}

/**
 * Appends the value section for `values[0..n)` to `out` and returns its layout id: the cheapest of
 * the plain layouts and, when some values are special or outliers (at most 1/8 of them), the same
 * layouts with those values as exceptions. `values` must be 8-byte aligned (any Float64Array is).
 */
export function encodeValues(out: ByteWriter, values: Float64Array, n: number): number {
  const start = out.length;
  let best = encodePlain(out, values, n);
  if (best === V_CONST) return best;
  const limit = Math.floor(n * MAX_EXCEPTION_SHARE);
  if (limit < 1) return best;
  if (best === V_SCALED && plainDen > 1) {
    // no special values then (they are never m/D); maybe a few values that grew D for all
    const outliers = findScaledOutliers(values, n, plainDen, limit);
    return outliers > 0 ? tryExceptions(out, start, best, values, n, outliers) : best;
  }
  const specials = findSpecials(values, n, limit);
  if (specials > 0) best = tryExceptions(out, start, best, values, n, specials);
  if ((best & 7) !== V_SCALED) {
    const outliers = findOutliers(values, n, limit);
    if (outliers > specials && outliers > 0) best = tryExceptions(out, start, best, values, n, outliers);
  }
  return best;
}

/**
 * Reads the exception list of a layout with {@link V_EXCEPTIONS} into `excIdx`, `excLo`, `excHi`
 * and returns its length.
 */
function readExceptions(r: ByteReader, n: number): number {
  const count = r.uvarint('exception count');
  if (count < 1 || count >= n) throw r.corrupt(`${count} exceptions for ${n} values`);
  growExceptions(count);
  let i = -1;
  for (let e = 0; e < count; e++) {
    const x = r.uvarint('exception');
    const c = x % 8;
    i += (x - c) / 8 + 1;
    if (i >= n) throw r.corrupt(`exception index ${i} beyond ${n} values`);
    if (c >= EXC_CLASSES) throw r.corrupt(`unknown exception class ${c}`);
    excIdx[e] = i;
    if (c === EXC_RAW) {
      r.need(8, 'exception value');
      excLo[e] = r.u32();
      excHi[e] = r.u32();
    } else {
      excHi[e] = EXC_BITS[c]![0];
      excLo[e] = EXC_BITS[c]![1];
    }
  }
  return count;
}

/** Decodes a value section of layout `mode` covering `r.pos..r.end` into `out[at..at+n)`. */
export function decodeValues(r: ByteReader, mode: number, n: number, out: Float64Array, at = 0): void {
  // reserved codes (0, 6, 7 and the same with exceptions) are refused before anything is read
  const plain = mode & ~V_EXCEPTIONS;
  if (plain < V_CONST || plain > V_NEAR || mode > (V_EXCEPTIONS | V_NEAR)) throw r.corrupt(`unknown value layout ${mode}`);
  if (mode & V_EXCEPTIONS) {
    const count = readExceptions(r, n);
    const { lead, tail } = edgeExceptions(n, count);
    decodePlain(r, mode & ~V_EXCEPTIONS, n - lead - tail, out, at + lead); // leaves the exception list alone
    const bits = new Uint32Array(out.buffer, out.byteOffset + 8 * at, 2 * n);
    for (let e = 0; e < count; e++) {
      const i = excIdx[e]!;
      bits[2 * i] = excLo[e]!;
      bits[2 * i + 1] = excHi[e]!;
    }
    return;
  }
  decodePlain(r, mode, n, out, at);
}

/**
 * Reads the denominator D and the m[i] of a SCALED or NEAR section into `out[at..at+n)` as m / D,
 * and returns the bit reader positioned after the m (NEAR's residuals follow).
 */
function readScaled(r: ByteReader, n: number, out: Float64Array, at: number): BitReader {
  const d = r.uvarint('denominator');
  if (d < 1 || d > MAX_DEN) throw r.corrupt(`denominator ${d} outside 1..2^32`);
  const br = BitReader.shared(r.buf, r.pos, r.end, r.origin);
  // m[0], then the running sums of the deltas are the m[i]; value = m / D
  const z = br.varBits();
  const m0 = z % 2 === 0 ? z / 2 : -(z + 1) / 2;
  out[at] = m0 / d;
  decodeIntSeqSums(br, out, at + 1, n - 1, m0, d);
  return br;
}

/** {@link decodeValues} of a layout without exceptions. */
function decodePlain(r: ByteReader, mode: number, n: number, out: Float64Array, at: number): void {
  switch (mode) {
    case V_CONST: {
      const lo = r.u32('constant value');
      const hi = r.u32('constant value');
      r.expectEnd('constant value');
      if (n === 0) return;
      // the bit pattern into the first element, then copied as an int64 (a memset, and exact
      // for every NaN payload)
      const first = new Uint32Array(out.buffer, out.byteOffset + 8 * at, 2);
      first[0] = lo;
      first[1] = hi;
      const all = new BigInt64Array(out.buffer, out.byteOffset + 8 * at, n);
      all.fill(all[0]!);
      return;
    }
    case V_SCALED: {
      const br = readScaled(r, n, out, at);
      br.expectEnd('scaled values');
      r.pos = r.end;
      return;
    }
    case V_RATIO: {
      const br = BitReader.shared(r.buf, r.pos, r.end, r.origin);
      grow(n);
      readIntDeltas(br, ints, n);
      readIntDeltas(br, ints2, n);
      br.expectEnd('ratio values');
      r.pos = r.end;
      for (let i = 0; i < n; i++) {
        const q = ints[i]!;
        if (!(q >= 1)) throw br.corrupt(`ratio denominator ${q} at index ${i}`);
        out[at + i] = (q - ints2[i]!) / q;
      }
      return;
    }
    case V_FLOAT:
      decodeFloat(r, n, out, at);
      return;
    case V_NEAR: {
      const br = readScaled(r, n, out, at);
      grow(n);
      decodeIntSeq(br, ints, 0, n);
      br.expectEnd('near values');
      r.pos = r.end;
      const bits = new Uint32Array(out.buffer, out.byteOffset + 8 * at, 2 * n);
      for (let i = 0; i < n; i++) if (ints[i] !== 0) addUlps(bits, i, ints[i]!);
      return;
    }
    default:
      throw r.corrupt(`unknown value layout ${mode}`);
  }
}
