/**
 * Response messages of the Read RPC (proto/read.proto): series fragments in columnar
 * little-endian byte arrays, chunked so that no message exceeds a byte budget, encoded straight
 * into their wire form (the sample columns and runs are copied once, into the message). Pure.
 *
 * An answer is made one message at a time ({@link Answer.next}): the handler asks for the next
 * message only when the stream can take it, so a call holds a few messages, never its whole
 * answer, and RAW runs are decoded series by series as the messages need them.
 */
import { endianness } from 'node:os';
import { encodeReadResponse } from '../api/read-codec.js';
import type { Samples } from '../format/run.js';

// typed arrays are sent as they are in memory: the wire format is little-endian
if (endianness() !== 'LE') throw new Error('the storage gateway needs a little-endian CPU');

/** Room left for field tags, lengths and the block id in every message. */
export const MESSAGE_OVERHEAD_BYTES = 96;
/** Per-fragment bytes besides the payload: RAW id + count; RUNS id + length + crc. */
export const RAW_FRAGMENT_BYTES = 12;
export const RUNS_FRAGMENT_BYTES = 16;

/** A piece `[from, to)` of item `item` (units: samples for RAW, bytes for RUNS). */
export interface Fragment {
  readonly item: number;
  readonly from: number;
  readonly to: number;
}

/**
 * Splits items of `sizes[i]` units (each `unitBytes` bytes, plus `fragmentBytes` per fragment)
 * into messages of at most `maxMessageBytes`, items in order, splitting an item across messages
 * only where it does not fit. Always returns at least one message (possibly empty).
 */
export function planMessages(sizes: readonly number[], unitBytes: number, fragmentBytes: number, maxMessageBytes: number): Fragment[][] {
  const budget = maxMessageBytes - MESSAGE_OVERHEAD_BYTES;
  if (budget < fragmentBytes + unitBytes) throw new RangeError(`message budget ${maxMessageBytes} holds no ${unitBytes}-byte unit`);
  const out: Fragment[][] = [];
  let msg: Fragment[] = [];
  let used = 0;
  for (let item = 0; item < sizes.length; item++) {
    const n = sizes[item]!;
    let from = 0;
    while (from < n) {
      const room = Math.floor((budget - used - fragmentBytes) / unitBytes);
      if (room <= 0) {
        out.push(msg);
        msg = [];
        used = 0;
        continue;
      }
      const to = Math.min(n, from + room);
      msg.push({ item, from, to });
      used += fragmentBytes + (to - from) * unitBytes;
      from = to;
    }
  }
  if (msg.length > 0 || out.length === 0) out.push(msg);
  return out;
}

/** One series' samples to send (RAW). */
export interface SeriesColumns {
  readonly id: bigint;
  readonly samples: Samples;
}

/** One series' run to send (RUNS). */
export interface SeriesRun {
  readonly id: bigint;
  readonly run: Uint8Array;
  readonly crc: number;
}

/** A Read answer, made one message at a time. */
export interface Answer {
  /** Id of the block read ('' when there is none); the first message carries it. */
  readonly blockId: string;
  /** The next encoded message, or null once the answer is complete (there is always at least one). */
  next(): Buffer | null;
  /** Series, samples and payload bytes (columns or runs) in the messages made so far. */
  readonly series: number;
  readonly samples: number;
  readonly bytes: number;
  /**
   * At least the size of the first message, known before it is made (nothing decoded yet): the
   * handler refuses a call whose first message cannot fit its budgets before doing that work.
   */
  readonly firstMessageMaxBytes: number;
}

function view(a: BigInt64Array | Float64Array, from: number, to: number): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset + from * 8, (to - from) * 8);
}

/**
 * A RAW answer: `count` series in id order, series `i` being `idOf(i)` with the samples
 * `samplesOf(i)` (asked for once, when a message first needs it; a series with no sample is left
 * out). Each message is filled up to the budget, a series split across messages only where it
 * does not fit (the same cut as {@link planMessages}).
 */
export class RawAnswer implements Answer {
  series = 0;
  samples = 0;
  bytes = 0;
  private item = 0;
  private cur: Samples | null = null;
  private curId = 0n;
  private from = 0;
  private made = 0;
  private done = false;
  private readonly budget: number;
  readonly firstMessageMaxBytes: number;

  /** `samplesMax`: at least the samples of all `count` series (unknown: the message budget bounds it). */
  constructor(
    readonly blockId: string,
    private readonly count: number,
    private readonly idOf: (i: number) => bigint,
    private readonly samplesOf: (i: number) => Samples,
    maxMessageBytes: number,
    samplesMax = Infinity,
  ) {
    this.budget = maxMessageBytes - MESSAGE_OVERHEAD_BYTES;
    if (this.budget < RAW_FRAGMENT_BYTES + 16) throw new RangeError(`message budget ${maxMessageBytes} holds no 16-byte unit`);
    this.firstMessageMaxBytes = Math.min(maxMessageBytes, MESSAGE_OVERHEAD_BYTES + blockId.length + count * RAW_FRAGMENT_BYTES + samplesMax * 16);
  }

  next(): Buffer | null {
    if (this.done) return null;
    const ids: bigint[] = [];
    const counts: number[] = [];
    const ts: Uint8Array[] = [];
    const vs: Uint8Array[] = [];
    let used = 0;
    for (;;) {
      if (this.cur === null) {
        if (this.item >= this.count) {
          this.done = true;
          break;
        }
        const i = this.item++;
        const s = this.samplesOf(i);
        if (s.timestamps.length === 0) continue;
        this.cur = s;
        this.curId = this.idOf(i);
        this.from = 0;
        this.series++;
      }
      const room = Math.floor((this.budget - used - RAW_FRAGMENT_BYTES) / 16);
      if (room <= 0) break;
      const s = this.cur;
      const n = s.timestamps.length;
      const to = Math.min(n, this.from + room);
      ids.push(this.curId);
      counts.push(to - this.from);
      ts.push(view(s.timestamps, this.from, to));
      vs.push(view(s.values, this.from, to));
      used += RAW_FRAGMENT_BYTES + (to - this.from) * 16;
      this.samples += to - this.from;
      this.from = to;
      if (to === n) this.cur = null;
    }
    if (ids.length === 0 && this.made > 0) return null;
    this.bytes += used - ids.length * RAW_FRAGMENT_BYTES;
    // ids (8 bytes each) then counts (4 each), one allocation
    const n = ids.length;
    const meta = Buffer.allocUnsafe(n * 12);
    for (let i = 0; i < n; i++) {
      meta.writeBigUInt64LE(ids[i]!, i * 8);
      meta.writeUInt32LE(counts[i]!, n * 8 + i * 4);
    }
    const seriesIds = [meta.subarray(0, n * 8)];
    const sampleCounts = [meta.subarray(n * 8)];
    const first = this.made++ === 0;
    return encodeReadResponse(first ? { blockId: this.blockId, seriesIds, sampleCounts, timestamps: ts, values: vs } : { seriesIds, sampleCounts, timestamps: ts, values: vs });
  }
}

/** A RUNS answer: the stored runs as they are, in id order, planned by {@link planMessages}. */
export class RunsAnswer implements Answer {
  readonly series: number;
  samples = 0;
  bytes = 0;
  private readonly plan: Fragment[][];
  private m = 0;
  readonly firstMessageMaxBytes: number;
  /** The runs not sent whole yet: a run's slot is emptied once its last byte is in a message. */
  private readonly runs: (SeriesRun | null)[];

  /** `sampleCounts[i]`: samples of run `i` (counted as its messages are made). */
  constructor(
    readonly blockId: string,
    runs: readonly SeriesRun[],
    private readonly sampleCounts: readonly number[] | null,
    maxMessageBytes: number,
  ) {
    this.runs = runs.slice();
    const sizes = new Array<number>(runs.length);
    for (let i = 0; i < runs.length; i++) sizes[i] = runs[i]!.run.length;
    this.plan = planMessages(sizes, 1, RUNS_FRAGMENT_BYTES, maxMessageBytes);
    this.series = runs.length;
    let first = MESSAGE_OVERHEAD_BYTES + blockId.length;
    for (const f of this.plan[0]!) first += RUNS_FRAGMENT_BYTES + f.to - f.from;
    this.firstMessageMaxBytes = Math.min(maxMessageBytes, first);
  }

  next(): Buffer | null {
    if (this.m >= this.plan.length) return null;
    const m = this.m++;
    const frags = this.plan[m]!;
    const n = frags.length;
    // ids (8 bytes each), then lengths and crcs (4 each), one allocation
    const meta = Buffer.allocUnsafe(n * 16);
    const bytes = new Array<Uint8Array>(n);
    for (let i = 0; i < n; i++) {
      const f = frags[i]!;
      const r = this.runs[f.item]!;
      meta.writeBigUInt64LE(r.id, i * 8);
      meta.writeUInt32LE(f.to - f.from, n * 8 + i * 4);
      meta.writeUInt32LE(r.crc, n * 12 + i * 4);
      bytes[i] = f.from === 0 && f.to === r.run.length ? r.run : r.run.subarray(f.from, f.to);
      this.bytes += f.to - f.from;
      if (f.from === 0 && this.sampleCounts) this.samples += this.sampleCounts[f.item]!;
      // sent: a slow reader's call holds only the runs still to come (and the messages in flight)
      if (f.to === r.run.length) this.runs[f.item] = null;
    }
    const seriesIds = [meta.subarray(0, n * 8)];
    const runLengths = [meta.subarray(n * 8, n * 12)];
    const runCrcs = [meta.subarray(n * 12)];
    return encodeReadResponse(m === 0 ? { blockId: this.blockId, seriesIds, runLengths, runCrcs, runs: bytes } : { seriesIds, runLengths, runCrcs, runs: bytes });
  }
}

/** Every message of `answer`, made at once (tests and tools; the service streams them). */
export function drain(answer: Answer): Buffer[] {
  const out: Buffer[] = [];
  for (let m = answer.next(); m !== null; m = answer.next()) out.push(m);
  return out;
}

/** Encoded RAW messages for `series` (in id order), the first carrying `blockId`. */
export function rawMessages(blockId: string, series: readonly SeriesColumns[], maxMessageBytes: number): Buffer[] {
  return drain(new RawAnswer(blockId, series.length, (i) => series[i]!.id, (i) => series[i]!.samples, maxMessageBytes));
}

/** Encoded RUNS messages for `runs` (in id order), the first carrying `blockId`. */
export function runMessages(blockId: string, runs: readonly SeriesRun[], maxMessageBytes: number): Buffer[] {
  return drain(new RunsAnswer(blockId, runs, null, maxMessageBytes));
}
