/**
 * Coalescing of range reads: byte ranges of one object that lie close together are fetched with
 * one GET when the bytes in between cost less than another request. Pure: ranges in, plan out.
 */

/** A wanted byte range `[offset, offset + length)`. */
export interface WantedRange {
  readonly offset: number;
  readonly length: number;
}

/** One GET of the plan and the wanted ranges it covers (indexes into the input). */
export interface PlannedGet {
  readonly offset: number;
  readonly length: number;
  readonly members: readonly number[];
}

/** Coalescing limits. */
export interface CoalesceOptions {
  /** Ranges separated by at most this many unwanted bytes share a GET. */
  readonly maxGapBytes: number;
  /** A shared GET never grows beyond this (a single larger range still gets its own GET). */
  readonly maxGetBytes: number;
}

/**
 * Groups `ranges` into GETs: sorted by offset, a range joins the current GET when the gap to it is
 * at most `maxGapBytes` and the GET stays within `maxGetBytes`. Overlapping and duplicate ranges
 * share a GET. Every input index appears in exactly one GET; GETs come in offset order.
 */
export function planGets(ranges: readonly WantedRange[], opts: CoalesceOptions): PlannedGet[] {
  const order = ranges.map((_, i) => i).sort((a, b) => ranges[a]!.offset - ranges[b]!.offset || ranges[a]!.length - ranges[b]!.length);
  const out: PlannedGet[] = [];
  let start = 0;
  let end = 0;
  let members: number[] = [];
  for (const i of order) {
    const r = ranges[i]!;
    const rEnd = r.offset + r.length;
    if (members.length > 0 && r.offset - end <= opts.maxGapBytes && Math.max(end, rEnd) - start <= opts.maxGetBytes) {
      members.push(i);
      end = Math.max(end, rEnd);
      continue;
    }
    if (members.length > 0) out.push({ offset: start, length: end - start, members });
    start = r.offset;
    end = rEnd;
    members = [i];
  }
  if (members.length > 0) out.push({ offset: start, length: end - start, members });
  return out;
}
