/**
 * Timestamp codecs of a run (spec: docs/format/chunk.md, "Timestamps"). Input: n >= 1 strictly
 * increasing int64 millisecond timestamps. Layouts:
 *
 * - GRID (1): samples on a regular grid `base + i*step` with sparse residuals (scrape jitter).
 *   A residual of at least half a step (a missed scrape) moves the grid to that sample.
 * - DOD  (2): delta-of-delta, for irregular spacing.
 * - RAW  (3): n little-endian int64, for runs spanning 2^53 ms or more.
 *
 * All arithmetic runs on offsets from the first timestamp, which are safe integers whenever the
 * run spans less than 2^51 ms; the int64 values themselves are read and written as 32-bit halves
 * so the full int64 range round-trips.
 */
import { type CorruptionError, InvalidArgumentError } from '../errors.js';
import { BitReader, BitWriter } from './bits.js';
import { ByteReader, ByteWriter, onShrinkScratch, SCRATCH_KEEP_SAMPLES } from './bytes.js';
import { decodeIntSeq, decodeIntSeqSparse, encodeIntSeq, INTSEQ_LIMIT, type SparseSeq } from './intseq.js';

export const TS_GRID = 1;
export const TS_DOD = 2;
export const TS_RAW = 3;

const TWO32 = 4294967296;

let offs = new Float64Array(1024);
let resid = new Float64Array(1024);
/** Residuals of the other grid the encoder tries (swapped with {@link resid} when it wins). */
let residAlt = new Float64Array(1024);
let dods = new Float64Array(1024);
/** Bit writers reused by the encoder (finished and copied out before their next use). */
const gridWriter = new BitWriter(1024);
const dodWriter = new BitWriter(1024);

onShrinkScratch(() => {
  if (offs.length > SCRATCH_KEEP_SAMPLES) {
    offs = new Float64Array(1024);
    resid = new Float64Array(1024);
    residAlt = new Float64Array(1024);
    dods = new Float64Array(1024);
  }
  gridWriter.shrink(SCRATCH_KEEP_SAMPLES);
  dodWriter.shrink(SCRATCH_KEEP_SAMPLES);
});

function grow(n: number): void {
  if (offs.length < n) {
    offs = new Float64Array(n);
    resid = new Float64Array(n);
    residAlt = new Float64Array(n);
    dods = new Float64Array(n);
  }
}

/** Little-endian 32-bit halves of a BigInt64Array: [lo0, hi0, lo1, hi1, ...]. */
function halves(ts: BigInt64Array): Int32Array {
  return new Int32Array(ts.buffer, ts.byteOffset, ts.length * 2);
}

/** Grid residuals for `base`/`step` into `resid`; returns the number of non-zero residuals. */
function gridResiduals(resid: Float64Array, n: number, base: number, step: number): number {
  let g = base;
  let nz = 0;
  for (let i = 0; i < n; i++) {
    if (i > 0) g += step;
    const r = offs[i]! - g;
    resid[i] = r;
    if (r !== 0) {
      nz++;
      if (2 * Math.abs(r) >= step) g = offs[i]!;
    }
  }
  return nz;
}

/**
 * Deltas looked at for the grid step. With jitter on half of the scrapes only about a quarter of
 * the deltas equal the interval, so a few dozen are needed for the mode to be reliable (15, the
 * number used before, picked a jittered delta for 1 series in 20 and cost those series the GRID
 * layout).
 */
const STEP_SAMPLE = 64;
/** Distinct deltas among the first ones tried as the step. */
const STEP_CANDIDATES = 16;
const stepDeltas = new Float64Array(STEP_SAMPLE);

/**
 * Most common delta among the first {@link STEP_SAMPLE} (the scrape interval), chosen among the
 * first {@link STEP_CANDIDATES} deltas (the earlier one on ties); stops at a delta that is most of
 * them (the usual case). No allocation: this runs once per run.
 */
function guessStep(n: number): number {
  if (n < 2) return 0;
  const m = Math.min(n - 1, STEP_SAMPLE);
  // no code that only rare runs reach (V8 kept deoptimizing the encoder on such code): the
  // deltas first, in a loop that always runs
  const deltas = stepDeltas;
  for (let i = 0; i < m; i++) deltas[i] = offs[i + 1]! - offs[i]!;
  let best = deltas[0]!;
  let bestCount = 0;
  const candidates = Math.min(m, STEP_CANDIDATES);
  for (let c = 0; c < candidates && 2 * bestCount <= m; c++) {
    // counted over all deltas: a delta seen before counts the same again and does not win the
    // tie, so the earlier one is kept (and every candidate runs the same code as the first)
    const d = deltas[c]!;
    let count = 0;
    for (let i = 0; i < m; i++) if (deltas[i] === d) count++;
    if (count > bestCount) {
      bestCount = count;
      best = d;
    }
  }
  return best;
}

/**
 * Appends the timestamp section for `ts[0..n)` to `out` and returns its layout id.
 * Throws InvalidArgumentError unless the timestamps strictly increase.
 */
export function encodeTimestamps(out: ByteWriter, ts: BigInt64Array, n: number): number {
  const h = halves(ts);
  const lo0 = h[0]! >>> 0;
  const hi0 = h[1]!;
  const hiLast = h[2 * (n - 1) + 1]!;
  if (hiLast - hi0 >= INTSEQ_LIMIT / TWO32 / 4) {
    // span too wide for safe offset arithmetic (or decreasing across the int64 range)
    for (let i = 1; i < n; i++) {
      if (ts[i]! <= ts[i - 1]!) throw new InvalidArgumentError('timestamps', `not strictly increasing at index ${i}`);
    }
    for (let i = 0; i < n; i++) out.i64(ts[i]!);
    return TS_RAW;
  }
  grow(n);
  for (let i = 0; i < n; i++) {
    const o = (h[2 * i + 1]! - hi0) * TWO32 + ((h[2 * i]! >>> 0) - lo0);
    if (i > 0 && !(o > offs[i - 1]!)) throw new InvalidArgumentError('timestamps', `not strictly increasing at index ${i}`);
    offs[i] = o;
  }
  out.i64(ts[0]!);
  const step = guessStep(n);
  let base = 0;
  let nz = gridResiduals(resid, n, 0, step);
  if (n > 1 && offs[1]! !== step) {
    // the first sample may itself be jittered: try the grid through the second one (no call in
    // the branch taken when it wins: V8 kept deoptimizing the encoder on such a call)
    const alt = offs[1]! - step;
    const nzAlt = gridResiduals(residAlt, n, alt, step);
    if (nzAlt < nz) {
      const t = resid;
      resid = residAlt;
      residAlt = t;
      base = alt;
      nz = nzAlt;
    }
  }
  if (nz * 4 > n && n > 2) {
    // irregular: compare with delta-of-delta on the exact encoded sizes
    const grid = gridWriter;
    grid.reset();
    encodeIntSeq(grid, resid, 0, n);
    const dod = dodWriter;
    dod.reset();
    const x = dods;
    x[0] = offs[1]! - offs[0]!;
    for (let i = 2; i < n; i++) x[i - 1] = offs[i]! - 2 * offs[i - 1]! + offs[i - 2]!;
    encodeIntSeq(dod, x, 0, n - 1);
    const gb = grid.finish();
    const db = dod.finish();
    if (db.length < gb.length) {
      out.bytes(db);
      return TS_DOD;
    }
    out.varint(base);
    out.uvarint(step);
    out.bytes(gb);
    return TS_GRID;
  }
  out.varint(base);
  out.uvarint(step);
  const w = gridWriter;
  w.reset();
  encodeIntSeq(w, resid, 0, n);
  out.bytes(w.finish());
  return TS_GRID;
}

/**
 * Stores `t0 + o` as element `i` of the int64 halves `h` when the low half `lo = lo0 + o`
 * (t0 = hi0 * 2^32 + lo0, 0 <= o < 2^53) carries into the high half; false when the sum
 * overflows int64. The decode loops store the common `lo < 2^32` case themselves.
 */
function putCarry(h: Int32Array, i: number, lo: number, hi0: number): boolean {
  const hi = hi0 + Math.floor(lo / TWO32);
  if (hi > 0x7fffffff) return false;
  h[2 * i] = lo % TWO32;
  h[2 * i + 1] = hi;
  return true;
}

/** Stores t0 + `o` (t0 as halves `lo0`, `hi0`) at index `i`; false when it overflows int64. */
function put(h: Int32Array, i: number, lo0: number, hi0: number, o: number): boolean {
  const lo = lo0 + o;
  if (lo < TWO32) {
    h[2 * i] = lo;
    h[2 * i + 1] = hi0;
    return true;
  }
  return putCarry(h, i, lo, hi0);
}

/** The error for offset `o` at index `i` not above the one before it. */
function outOfOrder(r: ByteReader, o: number, i: number): CorruptionError {
  return r.corrupt(`timestamp offset ${o} at index ${i} is out of order`);
}

/** The error for a timestamp at index `i` beyond the int64 range. */
function overflow(r: ByteReader, i: number): CorruptionError {
  return r.corrupt(`timestamp at index ${i} overflows int64`);
}

/**
 * GRID offsets from DENSE residuals `resid[0..n)`, stored to `h` as t0 + offset; returns the last
 * offset. The first offset must be 0 (checked here too).
 */
function gridDense(r: ByteReader, h: Int32Array, lo0: number, hi0: number, n: number, base: number, step: number): number {
  let g = base;
  const r0 = resid[0]!;
  let prev = g + r0;
  if (r0 !== 0 && 2 * Math.abs(r0) >= step) g = prev;
  if (prev !== 0) throw r.corrupt('first timestamp offset is not zero');
  h[0] = lo0;
  h[1] = hi0;
  for (let i = 1; i < n; i++) {
    g += step;
    const res = resid[i]!;
    const o = g + res;
    if (res !== 0 && 2 * Math.abs(res) >= step) g = o;
    if (!(o > prev)) throw outOfOrder(r, o, i);
    prev = o;
    if (!put(h, i, lo0, hi0, o)) throw overflow(r, i);
  }
  return prev;
}

/**
 * {@link gridDense} for residuals that are all `seq.base` except the listed ones: the samples
 * between two exceptions are stepped through without looking at residuals.
 */
function gridSparse(r: ByteReader, h: Int32Array, lo0: number, hi0: number, n: number, base: number, step: number, seq: SparseSeq): number {
  const { idx, val, count } = seq;
  const rb = seq.base;
  const baseMoves = rb !== 0 && 2 * Math.abs(rb) >= step;
  let g = base;
  let e = 0;
  const r0 = count > 0 && idx[0] === 0 ? val[e++]! : rb;
  let prev = g + r0;
  if (r0 !== 0 && 2 * Math.abs(r0) >= step) g = prev;
  if (prev !== 0) throw r.corrupt('first timestamp offset is not zero');
  h[0] = lo0;
  h[1] = hi0;
  let i = 1;
  for (;;) {
    // samples i..stop-1 have residual rb
    const stop = e < count ? idx[e]! : n;
    if (rb === 0) {
      // offsets on the grid, after the first one of this stretch: exact and increasing by step
      // while below 2^51; stored as int32 sums while the low half does not carry
      const gEnd = g + (stop - i) * step;
      if (i < stop && step >= 1 && step < 0x80000000 && gEnd < INTSEQ_LIMIT && lo0 + gEnd < TWO32) {
        g += step;
        if (!(g > prev)) throw outOfOrder(r, g, i);
        let lo = (lo0 + g) | 0;
        h[2 * i] = lo;
        h[2 * i + 1] = hi0;
        for (i++; i < stop; i++) {
          lo = (lo + step) | 0;
          h[2 * i] = lo;
          h[2 * i + 1] = hi0;
        }
        g = gEnd;
        prev = g;
      }
      for (; i < stop; i++) {
        g += step;
        if (!(g > prev)) throw outOfOrder(r, g, i);
        prev = g;
        if (!put(h, i, lo0, hi0, g)) throw overflow(r, i);
      }
    } else {
      for (; i < stop; i++) {
        g += step;
        const o = g + rb;
        if (baseMoves) g = o;
        if (!(o > prev)) throw outOfOrder(r, o, i);
        prev = o;
        if (!put(h, i, lo0, hi0, o)) throw overflow(r, i);
      }
    }
    if (i >= n) return prev;
    // the exception at i
    g += step;
    const res = val[e++]!;
    const o = g + res;
    if (res !== 0 && 2 * Math.abs(res) >= step) g = o;
    if (!(o > prev)) throw outOfOrder(r, o, i);
    prev = o;
    if (!put(h, i, lo0, hi0, o)) throw overflow(r, i);
    i++;
  }
}

/** DOD offsets (running sums of `resid[1..n)`), stored to `h` as t0 + offset; returns the last. */
function dodOffsets(r: ByteReader, h: Int32Array, lo0: number, hi0: number, n: number): number {
  h[0] = lo0;
  h[1] = hi0;
  let prev = 0;
  let d = 0;
  for (let i = 1; i < n; i++) {
    d += resid[i]!;
    const o = prev + d;
    if (!(o > prev)) throw outOfOrder(r, o, i);
    prev = o;
    if (!put(h, i, lo0, hi0, o)) throw overflow(r, i);
  }
  return prev;
}

/**
 * Decodes a timestamp section of layout `mode` covering `r.pos..r.end` into `out[at..at+n)`.
 * Consumes the section exactly or throws a CorruptionError.
 */
export function decodeTimestamps(r: ByteReader, mode: number, n: number, out: BigInt64Array, at = 0): void {
  if (mode === TS_RAW) {
    for (let i = 0; i < n; i++) out[at + i] = r.i64('raw timestamp');
    r.expectEnd('raw timestamps');
    return;
  }
  if (mode !== TS_GRID && mode !== TS_DOD) throw r.corrupt(`unknown timestamp layout ${mode}`);
  // t0 as its unsigned low and signed high 32-bit halves
  r.need(8, 'first timestamp');
  const lo0 = r.u32();
  const hi0 = r.u32() | 0;
  grow(n);
  // offsets from t0 (GRID: grid plus residual, moving the grid on a large residual; DOD: running
  // sums), added to t0 on the 32-bit halves of `out` so the whole int64 range is exact
  const h = new Int32Array(out.buffer, out.byteOffset + 8 * at, 2 * n);
  let last: number;
  if (mode === TS_GRID) {
    const base = r.varint('grid base');
    const step = r.uvarint('grid step');
    const bits = BitReader.shared(r.buf, r.pos, r.end, r.origin);
    const seq = n > 0 ? decodeIntSeqSparse(bits, resid, 0, n) : null;
    bits.expectEnd('timestamp residuals');
    r.pos = r.end;
    if (n === 0) return;
    last = seq ? gridSparse(r, h, lo0, hi0, n, base, step, seq) : gridDense(r, h, lo0, hi0, n, base, step);
  } else {
    const bits = BitReader.shared(r.buf, r.pos, r.end, r.origin);
    if (n > 1) decodeIntSeq(bits, resid, 1, n - 1);
    bits.expectEnd('timestamp deltas');
    r.pos = r.end;
    if (n === 0) return;
    last = dodOffsets(r, h, lo0, hi0, n);
  }
  if (last >= INTSEQ_LIMIT) throw r.corrupt(`timestamp offset ${last} exceeds 2^51`);
}
