/**
 * Cutting decoded samples to a time range. Pure; shared by the block reader, the gateway and the
 * query client.
 */
import type { Samples } from './run.js';

/** Half-open time range `[start, end)` in ms. */
export interface TimeRange {
  readonly start: bigint;
  readonly end: bigint;
}

/** The first index of `ts` (sorted ascending) whose timestamp is ≥ `t`. */
function lowerBound(ts: BigInt64Array, t: bigint): number {
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
