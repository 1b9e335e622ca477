/**
 * Response messages of the Read RPC (proto/read.proto): series fragments in columnar
 * little-endian byte arrays, chunked so that no message exceeds a byte budget, encoded straight
 * into their wire form (the sample columns and runs are copied once, into the message). Pure.
 */
import { endianness } from 'node:os';
import { encodeReadResponse } from '../client/query-codec.js';
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

function view(a: BigInt64Array | Float64Array, from: number, to: number): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset + from * 8, (to - from) * 8);
}

/** Encoded RAW messages for `series` (in id order), the first carrying `blockId`. */
export function rawMessages(blockId: string, series: readonly SeriesColumns[], maxMessageBytes: number): Buffer[] {
  const sizes = new Array<number>(series.length);
  for (let i = 0; i < series.length; i++) sizes[i] = series[i]!.samples.timestamps.length;
  const plan = planMessages(sizes, 16, RAW_FRAGMENT_BYTES, maxMessageBytes);
  const out = new Array<Buffer>(plan.length);
  for (let m = 0; m < plan.length; m++) {
    const frags = plan[m]!;
    const n = frags.length;
    // ids (8 bytes each) then counts (4 each), one allocation
    const meta = Buffer.allocUnsafe(n * 12);
    const ts = new Array<Uint8Array>(n);
    const vs = new Array<Uint8Array>(n);
    for (let i = 0; i < n; i++) {
      const f = frags[i]!;
      const s = series[f.item]!;
      meta.writeBigUInt64LE(s.id, i * 8);
      meta.writeUInt32LE(f.to - f.from, n * 8 + i * 4);
      ts[i] = view(s.samples.timestamps, f.from, f.to);
      vs[i] = view(s.samples.values, f.from, f.to);
    }
    const seriesIds = [meta.subarray(0, n * 8)];
    const sampleCounts = [meta.subarray(n * 8)];
    out[m] = encodeReadResponse(m === 0 ? { blockId, seriesIds, sampleCounts, timestamps: ts, values: vs } : { seriesIds, sampleCounts, timestamps: ts, values: vs });
  }
  return out;
}

/** Encoded RUNS messages for `runs` (in id order), the first carrying `blockId`. */
export function runMessages(blockId: string, runs: readonly SeriesRun[], maxMessageBytes: number): Buffer[] {
  const sizes = new Array<number>(runs.length);
  for (let i = 0; i < runs.length; i++) sizes[i] = runs[i]!.run.length;
  const plan = planMessages(sizes, 1, RUNS_FRAGMENT_BYTES, maxMessageBytes);
  const out = new Array<Buffer>(plan.length);
  for (let m = 0; m < plan.length; m++) {
    const frags = plan[m]!;
    const n = frags.length;
    // ids (8 bytes each), then lengths and crcs (4 each), one allocation
    const meta = Buffer.allocUnsafe(n * 16);
    const bytes = new Array<Uint8Array>(n);
    for (let i = 0; i < n; i++) {
      const f = frags[i]!;
      const r = runs[f.item]!;
      meta.writeBigUInt64LE(r.id, i * 8);
      meta.writeUInt32LE(f.to - f.from, n * 8 + i * 4);
      meta.writeUInt32LE(r.crc, n * 12 + i * 4);
      bytes[i] = f.from === 0 && f.to === r.run.length ? r.run : r.run.subarray(f.from, f.to);
    }
    const seriesIds = [meta.subarray(0, n * 8)];
    const runLengths = [meta.subarray(n * 8, n * 12)];
    const runCrcs = [meta.subarray(n * 12)];
    out[m] = encodeReadResponse(m === 0 ? { blockId, seriesIds, runLengths, runCrcs, runs: bytes } : { seriesIds, runLengths, runCrcs, runs: bytes });
  }
  return out;
}
