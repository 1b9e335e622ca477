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

function idsOf(frags: readonly Fragment[], id: (item: number) => bigint): Buffer {
  const b = Buffer.allocUnsafe(frags.length * 8);
  for (let i = 0; i < frags.length; i++) b.writeBigUInt64LE(id(frags[i]!.item), i * 8);
  return b;
}

function view(a: BigInt64Array | Float64Array, from: number, to: number): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset + from * 8, (to - from) * 8);
}

/** Encoded RAW messages for `series` (in id order), the first carrying `blockId`. */
export function rawMessages(blockId: string, series: readonly SeriesColumns[], maxMessageBytes: number): Buffer[] {
  const plan = planMessages(series.map((s) => s.samples.timestamps.length), 16, RAW_FRAGMENT_BYTES, maxMessageBytes);
  return plan.map((frags, m) => {
    const counts = Buffer.allocUnsafe(frags.length * 4);
    const ts: Uint8Array[] = [];
    const vs: Uint8Array[] = [];
    frags.forEach((f, i) => {
      const s = series[f.item]!.samples;
      counts.writeUInt32LE(f.to - f.from, i * 4);
      ts.push(view(s.timestamps, f.from, f.to));
      vs.push(view(s.values, f.from, f.to));
    });
    return encodeReadResponse({
      ...(m === 0 ? { blockId } : {}),
      seriesIds: [idsOf(frags, (i) => series[i]!.id)],
      sampleCounts: [counts],
      timestamps: ts,
      values: vs,
    });
  });
}

/** Encoded RUNS messages for `runs` (in id order), the first carrying `blockId`. */
export function runMessages(blockId: string, runs: readonly SeriesRun[], maxMessageBytes: number): Buffer[] {
  const plan = planMessages(runs.map((r) => r.run.length), 1, RUNS_FRAGMENT_BYTES, maxMessageBytes);
  return plan.map((frags, m) => {
    const lengths = Buffer.allocUnsafe(frags.length * 4);
    const crcs = Buffer.allocUnsafe(frags.length * 4);
    const bytes: Uint8Array[] = [];
    frags.forEach((f, i) => {
      const r = runs[f.item]!;
      lengths.writeUInt32LE(f.to - f.from, i * 4);
      crcs.writeUInt32LE(r.crc, i * 4);
      bytes.push(r.run.subarray(f.from, f.to));
    });
    return encodeReadResponse({
      ...(m === 0 ? { blockId } : {}),
      seriesIds: [idsOf(frags, (i) => runs[i]!.id)],
      runLengths: [lengths],
      runCrcs: [crcs],
      runs: bytes,
    });
  });
}
