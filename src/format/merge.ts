/**
 * Ordering rules of the write path, pure and synchronous.
 *
 * "Last write wins": for a repeated (series, timestamp), the sample written last is kept. Inside
 * one request, last means the later position; across requests, the later WAL sequence number;
 * across WAL generations, the later generation; and every WAL entry is later than the block it is
 * merged into. Callers pass parts oldest first.
 *
 * Values are copied as raw 64-bit patterns (two 32-bit halves), never through a JS number, so NaN
 * payloads and -0 survive bit-exactly.
 */
import type { Samples } from './run.js';

/** True when `ts` strictly increases. */
export function isStrictlyIncreasing(ts: BigInt64Array): boolean {
  for (let i = 1; i < ts.length; i++) if (ts[i]! <= ts[i - 1]!) return false;
  return true;
}

function bitsOf(values: Float64Array): Uint32Array {
  return new Uint32Array(values.buffer, values.byteOffset, values.length * 2);
}

/**
 * Sorts one series' samples by timestamp; of samples with equal timestamps only the last one (in
 * input order) is kept. Returns `s` itself when it already strictly increases.
 */
export function normalizeSamples(s: Samples): Samples {
  const ts = s.timestamps;
  if (isStrictlyIncreasing(ts)) return s;
  const n = ts.length;
  const order = Array.from({ length: n }, (_, i) => i);
  order.sort((a, b) => (ts[a]! < ts[b]! ? -1 : ts[a]! > ts[b]! ? 1 : a - b));
  // keep the last of each run of equal timestamps
  const keep: number[] = [];
  for (let k = 0; k < n; k++) {
    const i = order[k]!;
    if (k + 1 < n && ts[order[k + 1]!] === ts[i]) continue;
    keep.push(i);
  }
  const outTs = new BigInt64Array(keep.length);
  const outVs = new Float64Array(keep.length);
  const src = bitsOf(s.values);
  const dst = bitsOf(outVs);
  for (let k = 0; k < keep.length; k++) {
    const i = keep[k]!;
    outTs[k] = ts[i]!;
    dst[2 * k] = src[2 * i]!;
    dst[2 * k + 1] = src[2 * i + 1]!;
  }
  return { timestamps: outTs, values: outVs };
}

/** Merges two strictly increasing sample lists; on equal timestamps `newer` wins. */
export function mergeTwo(older: Samples, newer: Samples): Samples {
  const a = older.timestamps;
  const b = newer.timestamps;
  if (a.length === 0) return newer;
  if (b.length === 0) return older;
  const av = bitsOf(older.values);
  const bv = bitsOf(newer.values);
  // fast path: no overlap, one after the other
  if (a[a.length - 1]! < b[0]! || b[b.length - 1]! < a[0]!) {
    const [x, y, xv, yv] = a[a.length - 1]! < b[0]! ? [a, b, av, bv] : [b, a, bv, av];
    const ts = new BigInt64Array(x.length + y.length);
    ts.set(x, 0);
    ts.set(y, x.length);
    const vs = new Float64Array(ts.length);
    const bits = bitsOf(vs);
    bits.set(xv, 0);
    bits.set(yv, xv.length);
    return { timestamps: ts, values: vs };
  }
  const ts = new BigInt64Array(a.length + b.length);
  const vs = new Float64Array(ts.length);
  const out = bitsOf(vs);
  let i = 0;
  let j = 0;
  let k = 0;
  while (i < a.length || j < b.length) {
    let fromB: boolean;
    if (i >= a.length) fromB = true;
    else if (j >= b.length) fromB = false;
    else if (a[i]! < b[j]!) fromB = false;
    else if (a[i]! > b[j]!) fromB = true;
    else {
      i++; // equal: drop the older sample
      fromB = true;
    }
    if (fromB) {
      ts[k] = b[j]!;
      out[2 * k] = bv[2 * j]!;
      out[2 * k + 1] = bv[2 * j + 1]!;
      j++;
    } else {
      ts[k] = a[i]!;
      out[2 * k] = av[2 * i]!;
      out[2 * k + 1] = av[2 * i + 1]!;
      i++;
    }
    k++;
  }
  return { timestamps: ts.subarray(0, k), values: vs.subarray(0, k) };
}

/**
 * Merges the runs of one series, oldest first, each strictly increasing; the result strictly
 * increases and keeps, for every timestamp, the sample of the newest part that has it.
 */
export function mergeSamples(parts: readonly Samples[]): Samples {
  if (parts.length === 0) return { timestamps: new BigInt64Array(0), values: new Float64Array(0) };
  let acc = parts[0]!;
  for (let p = 1; p < parts.length; p++) acc = mergeTwo(acc, parts[p]!);
  return acc;
}
