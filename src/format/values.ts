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
 */
import { BitReader, BitWriter } from './bits.js';
import { ByteReader, ByteWriter } from './bytes.js';
import { decodeIntSeq, decodeIntSeqSums, encodeIntSeq } from './intseq.js';

export const V_CONST = 1;
export const V_SCALED = 2;
export const V_RATIO = 3;
export const V_FLOAT = 4;

/** Largest |m| of a SCALED or RATIO value. */
const M_LIMIT = 2 ** 50;
/** Largest common denominator tried for SCALED. */
const MAX_DEN = 2 ** 32;
/** Largest per-sample denominator tried for RATIO. */
const MAX_RATIO_DEN = 2 ** 24;
const TWO32 = 4294967296;

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

/** Fills `ints` with m_i and returns D, or 0 when the values are not all m/D. */
function findScaled(values: Float64Array, n: number): number {
  let d = 1;
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
    ints[i] = q;
    ints2[i] = p;
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

function encodeFloat(out: ByteWriter, values: Float64Array, n: number): void {
  const bits = new Uint32Array(values.buffer, values.byteOffset, n * 2);
  if (ordBuf.length < 2 * n) ordBuf = new Uint32Array(2 * n);
  for (let i = 0; i < n; i++) toOrdered(bits[2 * i + 1]!, bits[2 * i]!, ordBuf, i);
  // zigzag deltas of the ordered integers, as hi/lo halves
  const zhi = new Uint32Array(n);
  const zlo = new Uint32Array(n);
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
    const widths = new Float64Array(m);
    for (let i = 1; i < n; i++) widths[i - 1] = zhi[i] ? 64 - Math.clz32(zhi[i]!) : 32 - Math.clz32(zlo[i]!);
    widths.sort();
    const med = widths[m >> 1]!;
    s = Math.max(13, Math.min(32, med - 6));
  }
  out.u32(bits[0]!);
  out.u32(bits[1]!);
  out.u8(s);
  grow(n);
  const hiDiv = 2 ** s;
  const hiMul = 2 ** (32 - s);
  for (let i = 1; i < n; i++) ints[i - 1] = zhi[i]! * hiMul + Math.floor(zlo[i]! / hiDiv);
  const w = new BitWriter(n * 8);
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
  const deltas = new Float64Array(Math.max(n - 1, 0));
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

/**
 * Appends the value section for `values[0..n)` to `out` and returns its layout id.
 * `values` must be 8-byte aligned (any Float64Array is).
 */
export function encodeValues(out: ByteWriter, values: Float64Array, n: number): number {
  if (sameBits(values, n)) {
    const b = new Uint32Array(values.buffer, values.byteOffset, 2);
    out.u32(b[0]!);
    out.u32(b[1]!);
    return V_CONST;
  }
  grow(n);
  const d = findScaled(values, n);
  if (d > 0) {
    const start = out.length;
    out.uvarint(d);
    const w = new BitWriter(n * 2);
    writeIntDeltas(w, ints, n);
    out.bytes(w.finish());
    if (d <= 1 << 20) return V_SCALED;
    // a huge denominator may lose to the float layout
    const scaledBytes = out.finish().slice(start);
    out.length = start;
    encodeFloat(out, values, n);
    if (out.length - start <= scaledBytes.length) return V_FLOAT;
    out.length = start;
    out.bytes(scaledBytes);
    return V_SCALED;
  }
  if (denominatorOf(values[0]!, MAX_RATIO_DEN) !== 0 && findRatio(values, n)) {
    const start = out.length;
    const w = new BitWriter(n * 4);
    writeIntDeltas(w, ints, n);
    // numerators as distance from the denominator, which is small for ratios near one
    for (let i = 0; i < n; i++) ints2[i] = ints[i]! - ints2[i]!;
    writeIntDeltas(w, ints2, n);
    const ratioBytes = w.finish().slice();
    encodeFloat(out, values, n);
    if (out.length - start <= ratioBytes.length) return V_FLOAT;
    out.length = start;
    out.bytes(ratioBytes);
    return V_RATIO;
  }
  encodeFloat(out, values, n);
  return V_FLOAT;
}

/** Decodes a value section of layout `mode` covering `r.pos..r.end` into `out[at..at+n)`. */
export function decodeValues(r: ByteReader, mode: number, n: number, out: Float64Array, at = 0): void {
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
      const d = r.uvarint('denominator');
      if (d < 1 || d > MAX_DEN) throw r.corrupt(`denominator ${d} outside 1..2^32`);
      const br = BitReader.shared(r.buf, r.pos, r.end, r.origin);
      // m[0], then the running sums of the deltas are the m[i]; value = m / D
      const z = br.varBits();
      const m0 = z % 2 === 0 ? z / 2 : -(z + 1) / 2;
      out[at] = m0 / d;
      decodeIntSeqSums(br, out, at + 1, n - 1, m0, d);
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
    default:
      throw r.corrupt(`unknown value layout ${mode}`);
  }
}
