/**
 * Cutting decoded samples to a time range and joining pieces of one series. Pure; shared by the
 * block reader, the gateway, the query client, tests and benches.
 */
import type { Samples } from './run.js';

/** Half-open time range `[start, end)` in ms. */
export interface TimeRange {
  readonly start: bigint;
  readonly end: bigint;
}

/** The first index of `ts` (sorted ascending) whose timestamp is ≥ `t`. */
export function lowerBound(ts: BigInt64Array, t: bigint): number {
  let lo = 0;
  let hi = ts.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ts[mid]! < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The samples of `s` inside `[range.start, range.end)` (views, no copy). */
export function sliceSamples(s: Samples, range: TimeRange): Samples {
  const ts = s.timestamps;
  const a = lowerBound(ts, range.start);
  const b = Math.max(a, lowerBound(ts, range.end));
  if (a === 0 && b === ts.length) return s;
  return { timestamps: ts.subarray(a, b), values: s.values.subarray(a, b) };
}

/** Pieces of one series in time order, concatenated (values copied as raw bits, NaN payloads kept). */
export function concatSamples(parts: readonly Samples[]): Samples {
  if (parts.length === 1) return parts[0]!;
  let n = 0;
  for (const p of parts) n += p.timestamps.length;
  const timestamps = new BigInt64Array(n);
  const values = new Float64Array(n);
  let at = 0;
  for (const p of parts) {
    timestamps.set(p.timestamps, at);
    values.set(p.values, at); // same element type: a byte copy
    at += p.timestamps.length;
  }
  return { timestamps, values };
}
