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
import { InvalidArgumentError } from '../errors.js';
import { BitReader, BitWriter } from './bits.js';
import { ByteReader, ByteWriter } from './bytes.js';
import { decodeIntSeq, encodeIntSeq, INTSEQ_LIMIT } from './intseq.js';

export const TS_GRID = 1;
export const TS_DOD = 2;
export const TS_RAW = 3;

const TWO32 = 4294967296;

let offs = new Float64Array(1024);
let resid = new Float64Array(1024);

function grow(n: number): void {
  if (offs.length < n) {
    offs = new Float64Array(n);
    resid = new Float64Array(n);
  }
}

/** Little-endian 32-bit halves of a BigInt64Array: [lo0, hi0, lo1, hi1, ...]. */
function halves(ts: BigInt64Array): Int32Array {
  return new Int32Array(ts.buffer, ts.byteOffset, ts.length * 2);
}

/** Grid residuals for `base`/`step` into `resid`; returns the number of non-zero residuals. */
function gridResiduals(n: number, base: number, step: number): number {
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

/** Most common delta among the first few (the scrape interval). */
function guessStep(n: number): number {
  if (n < 2) return 0;
  const m = Math.min(n - 1, 15);
  let best = offs[1]! - offs[0]!;
  let bestCount = 0;
  for (let i = 1; i <= m; i++) {
    const d = offs[i]! - offs[i - 1]!;
    let c = 0;
    for (let j = 1; j <= m; j++) if (offs[j]! - offs[j - 1]! === d) c++;
    if (c > bestCount) {
      bestCount = c;
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
  let nz = gridResiduals(n, 0, step);
  if (n > 1 && offs[1]! !== step) {
    // the first sample may itself be jittered: try the grid through the second one
    const alt = offs[1]! - step;
    const nzAlt = gridResiduals(n, alt, step);
    if (nzAlt < nz) {
      base = alt;
      nz = nzAlt;
    } else gridResiduals(n, 0, step);
  }
  if (nz * 4 > n && n > 2) {
    // irregular: compare with delta-of-delta on the exact encoded sizes
    const grid = new BitWriter(n);
    encodeIntSeq(grid, resid, 0, n);
    const dod = new BitWriter(n);
    const x = new Float64Array(n - 1);
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
  const w = new BitWriter(16 + (nz >> 1));
  encodeIntSeq(w, resid, 0, n);
  out.bytes(w.finish());
  return TS_GRID;
}

/**
 * Decodes a timestamp section of layout `mode` covering `r.pos..r.end` into `out[0..n)`.
 * Consumes the section exactly or throws a CorruptionError.
 */
export function decodeTimestamps(r: ByteReader, mode: number, n: number, out: BigInt64Array): void {
  if (mode === TS_RAW) {
    for (let i = 0; i < n; i++) out[i] = r.i64('raw timestamp');
    r.expectEnd('raw timestamps');
    return;
  }
  if (mode !== TS_GRID && mode !== TS_DOD) throw r.corrupt(`unknown timestamp layout ${mode}`);
  const t0 = r.i64('first timestamp');
  grow(n);
  const h = halves(out);
  const lo0 = Number(BigInt.asUintN(32, t0));
  const hi0 = Number(t0 >> 32n);
  let base = 0;
  let step = 0;
  if (mode === TS_GRID) {
    base = r.varint('grid base');
    step = r.uvarint('grid step');
  }
  const bits = new BitReader(r.buf, r.pos, r.end, r.origin);
  if (mode === TS_GRID) decodeIntSeq(bits, resid, 0, n);
  else if (n > 1) decodeIntSeq(bits, resid, 1, n - 1);
  bits.expectEnd(mode === TS_GRID ? 'timestamp residuals' : 'timestamp deltas');
  r.pos = r.end;
  // offsets from t0 (GRID: grid plus residual, moving the grid on a large residual; DOD: running
  // sums), added to t0 on 32-bit halves so the whole int64 range is exact
  let prev = -1;
  let g = base;
  let d = 0;
  let o = 0;
  for (let i = 0; i < n; i++) {
    if (mode === TS_GRID) {
      if (i > 0) g += step;
      const res = resid[i]!;
      o = g + res;
      if (res !== 0 && 2 * Math.abs(res) >= step) g = o;
    } else if (i > 0) {
      d += resid[i]!;
      o += d;
    }
    if (i === 0 ? o !== 0 : !(o > prev)) throw r.corrupt(i === 0 ? 'first timestamp offset is not zero' : `timestamp offset ${o} at index ${i} is out of order`);
    prev = o;
    const lo = lo0 + o;
    if (lo < TWO32) {
      h[2 * i] = lo;
      h[2 * i + 1] = hi0;
    } else {
      const hi = hi0 + Math.floor(lo / TWO32);
      if (hi > 0x7fffffff) throw r.corrupt(`timestamp at index ${i} overflows int64`);
      h[2 * i] = lo % TWO32;
      h[2 * i + 1] = hi;
    }
  }
  if (prev >= INTSEQ_LIMIT) throw r.corrupt(`timestamp offset ${prev} exceeds 2^51`);
}
