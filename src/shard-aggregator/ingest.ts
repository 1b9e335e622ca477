/**
 * Validation and encoding of a write request, before anything is stored. A request is checked as a
 * whole: if any series is malformed the whole request is rejected and nothing reaches the WAL.
 *
 * Each valid series becomes one run per window it touches (usually one), sorted by timestamp with
 * repeated timestamps resolved to the last sample of the request, and encoded with the block
 * format's run codec (so the WAL holds about 1.7 bytes per sample instead of 16).
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { InvalidArgumentError } from '../errors.js';
import { encodeRun, encodeRunChecked, type Samples } from '../format/run.js';
import { normalizeSamples } from '../format/merge.js';
import { onShrinkScratch, SCRATCH_KEEP_SAMPLES } from '../format/bytes.js';

/** One series of a request as it comes off the wire (ids as decimal strings from proto-loader). */
export interface WireSeries {
  readonly id: string | bigint;
  /** n int64 little-endian. */
  readonly timestamps: Uint8Array;
  /** n float64 little-endian. */
  readonly values: Uint8Array;
}

/** What a request is checked against. */
export interface IngestContext {
  /** The shard of the request header, already known to be owned. */
  readonly shard: number;
  readonly numShards: number;
  readonly blockDurationMs: number;
  /** Accepted timestamps: `[minTimestampMs, maxTimestampMs]`. */
  readonly minTimestampMs: number;
  readonly maxTimestampMs: number;
  /** Decode every encoded run again and compare it with the request (the `verifyEncoding` setting). */
  readonly verifyEncoding: boolean;
}

/** The encoded samples of one series in one window. */
export interface PreparedRun {
  readonly windowStart: bigint;
  readonly id: bigint;
  /** Encoded run (docs/format/chunk.md). */
  readonly run: Uint8Array;
  /**
   * The run's WAL value (wal-codec.ts `encodeRunValue`), when an encoding worker made it already;
   * `run` is then a view into it.
   */
  readonly value?: Uint8Array;
  readonly samples: number;
}

/** A validated, encoded request. */
export interface PreparedWrite {
  readonly runs: PreparedRun[];
  /** Samples received (before repeated timestamps were dropped). */
  readonly samples: number;
  readonly series: number;
}

const TWO32 = 4294967296;
/** Series samples processed between two yields to the event loop. */
const YIELD_EVERY_SAMPLES = 65536;
const U64_MAX = (1n << 64n) - 1n;

/**
 * Checks the byte arrays of every series (lengths, multiples of 8, not empty) and returns the total
 * number of samples; cheap, so limits can be checked before any per-sample work.
 * @throws InvalidArgumentError naming the series and field.
 */
export function countSamples(series: readonly WireSeries[], first = 0): number {
  let total = 0;
  for (let j = 0; j < series.length; j++) {
    const s = series[j]!;
    const i = first + j;
    const tl = s.timestamps.length;
    const vl = s.values.length;
    if (tl % 8 !== 0) throw new InvalidArgumentError(`series[${i}].timestamps`, `${tl} bytes is not a multiple of 8`);
    if (vl % 8 !== 0) throw new InvalidArgumentError(`series[${i}].values`, `${vl} bytes is not a multiple of 8`);
    if (tl !== vl) throw new InvalidArgumentError(`series[${i}].values`, `${vl / 8} values for ${tl / 8} timestamps`);
    if (tl === 0) throw new InvalidArgumentError(`series[${i}].timestamps`, 'no samples');
    total += tl / 8;
  }
  return total;
}

// Scratch space for one series at a time (no await happens while a series is being processed).
let scratchTs = new ArrayBuffer(8 * 4096);
let scratchVs = new ArrayBuffer(8 * 4096);
// given back with the codecs' scratch after a series of more than SCRATCH_KEEP_SAMPLES (views of
// the old buffers still in use stay valid)
onShrinkScratch(() => {
  if (scratchTs.byteLength > 8 * SCRATCH_KEEP_SAMPLES) {
    scratchTs = new ArrayBuffer(8 * 4096);
    scratchVs = new ArrayBuffer(8 * 4096);
  }
});

function scratch(n: number): { ts: BigInt64Array; vs: Float64Array; words: Int32Array } {
  if (scratchTs.byteLength < 8 * n) {
    const cap = Math.max(8 * n, scratchTs.byteLength * 2);
    scratchTs = new ArrayBuffer(cap);
    scratchVs = new ArrayBuffer(cap);
  }
  return {
    ts: new BigInt64Array(scratchTs, 0, n),
    vs: new Float64Array(scratchVs, 0, n),
    words: new Int32Array(scratchTs, 0, 2 * n),
  };
}

function iso(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? 'out of date range' : d.toISOString();
}

function parseId(raw: string | bigint, field: string): bigint {
  let id: bigint;
  try {
    id = typeof raw === 'bigint' ? raw : BigInt(raw);
  } catch {
    throw new InvalidArgumentError(field, `"${String(raw)}" is not an unsigned 64-bit integer`);
  }
  if (id < 0n || id > U64_MAX) throw new InvalidArgumentError(field, `${id} is not an unsigned 64-bit integer`);
  return id;
}

/**
 * Validates and encodes a request (see the module comment). Yields to the event loop between
 * series now and then so one large request does not stall the others. `series` may be a slice of
 * the request that starts at its series number `first` (errors name the series by their number in
 * the request).
 * @throws InvalidArgumentError naming the series and field; nothing is kept.
 */
export async function prepareWrite(series: readonly WireSeries[], ctx: IngestContext, first = 0): Promise<PreparedWrite> {
  const total = countSamples(series, first);
  const numShards = BigInt(ctx.numShards);
  const shard = BigInt(ctx.shard);
  const dur = ctx.blockDurationMs;
  const runs: PreparedRun[] = [];
  let sinceYield = 0;
  for (let j = 0; j < series.length; j++) {
    const s = series[j]!;
    const i = first + j;
    const id = parseId(s.id, `series[${i}].id`);
    if (id % numShards !== shard) {
      throw new InvalidArgumentError(`series[${i}].id`, `series ${id} belongs to shard ${id % numShards}, not to shard ${ctx.shard} of the x-strata-shard header`);
    }
    const n = s.timestamps.length / 8;
    const { ts, vs, words } = scratch(n);
    new Uint8Array(ts.buffer, 0, 8 * n).set(s.timestamps);
    new Uint8Array(vs.buffer, 0, 8 * n).set(s.values);
    let sorted = true;
    let prev = -Infinity;
    let firstWindow = NaN;
    let oneWindow = true;
    for (let k = 0; k < n; k++) {
      const hi = words[2 * k + 1]!;
      const lo = words[2 * k]! >>> 0;
      const t = hi * TWO32 + lo; // exact while |hi| < 2^21, checked below
      if (hi < -0x200000 || hi >= 0x200000 || t < ctx.minTimestampMs || t > ctx.maxTimestampMs) {
        throw new InvalidArgumentError(
          `series[${i}].timestamps`,
          `sample ${k} of series ${id} at ${ts[k]} ms (${iso(t)}) is outside the accepted range ` +
            `[${ctx.minTimestampMs}, ${ctx.maxTimestampMs}] (${iso(ctx.minTimestampMs)} .. ${iso(ctx.maxTimestampMs)})`,
        );
      }
      if (t <= prev) sorted = false;
      prev = t;
      const w = Math.floor(t / dur);
      if (k === 0) firstWindow = w;
      else if (w !== firstWindow) oneWindow = false;
    }
    const samples: Samples = sorted ? { timestamps: ts, values: vs } : normalizeSamples({ timestamps: ts, values: vs });
    const encode = (part: Samples): Uint8Array => (ctx.verifyEncoding ? encodeRunChecked(part, { lz4: false }, `series[${i}] (series ${id})`) : encodeRun(part, { lz4: false }));
    if (oneWindow) {
      runs.push({ windowStart: BigInt(firstWindow * dur), id, run: encode(samples), samples: samples.timestamps.length });
    } else {
      splitByWindow(samples, dur, (windowStart, part) => {
        runs.push({ windowStart, id, run: encode(part), samples: part.timestamps.length });
      });
    }
    sinceYield += n;
    if (sinceYield >= YIELD_EVERY_SAMPLES && j + 1 < series.length) {
      sinceYield = 0;
      await yieldToLoop();
    }
  }
  return { runs, samples: total, series: series.length };
}

/** Calls `fn` with each window's contiguous part of sorted samples. */
function splitByWindow(s: Samples, durationMs: number, fn: (windowStart: bigint, part: Samples) => void): void {
  const ts = s.timestamps;
  const d = BigInt(durationMs);
  let start = 0;
  const windowOf = (t: bigint): bigint => {
    const r = t % d;
    return r < 0n ? t - r - d : t - r;
  };
  let w = windowOf(ts[0]!);
  for (let k = 1; k <= ts.length; k++) {
    const next = k < ts.length ? windowOf(ts[k]!) : null;
    if (next !== w) {
      fn(w, { timestamps: ts.subarray(start, k), values: s.values.subarray(start, k) });
      if (next === null) break;
      start = k;
      w = next;
    }
  }
}
