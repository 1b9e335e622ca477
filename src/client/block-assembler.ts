/**
 * Decoding of Read responses (proto/read.proto) on the client: the fragments of one block's
 * stream become per-series pieces of little-endian columns, and the pieces of all blocks are
 * merged per series in time order. RUNS responses are checked against their CRC32C as they
 * arrive, and decoded (src/format/run.ts) once the whole answer is in, cut to each request's range.
 */
import { crc32c } from '@node-rs/crc32';
import { sliceSamples } from '../format/slice.js';
import { decodeRunInto, MAX_RUN_SAMPLES, readRunHeader } from '../format/run.js';
import type { ReadResponseView } from '../api/read-codec.js';

/** A response that breaks the protocol (a gateway bug or a damaged stream). */
export class ResponseFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ResponseFormatError';
  }
}

/** A query's answer over a bound of the client (see QueryClientOptions.maxSamplesPerQuery). */
export class QueryLimitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QueryLimitError';
  }
}

/**
 * Samples of one series from one block: a checked run not decoded yet (RUNS), with the range it is
 * cut to and the block it came from, or little-endian byte columns of the received message, 8
 * bytes per sample (RAW).
 */
export type Piece =
  | { readonly n: number; readonly run: Buffer; readonly range: Range; readonly origin: { readonly object: string; readonly offset: number } }
  | { readonly n: number; readonly timestamps: Uint8Array; readonly values: Uint8Array };

interface Range {
  readonly start: bigint;
  readonly end: bigint;
}

/**
 * The samples of one series. The arrays may be views of a buffer shared with other series of the
 * same answer (mind `byteOffset` when reading `.buffer`).
 */
export interface SeriesSamples {
  readonly id: bigint;
  readonly timestamps: BigInt64Array;
  readonly values: Float64Array;
}

function bytesOf(a: BigInt64Array | Float64Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Collects the messages of one block's response stream; see the module comment. */
export class BlockAssembler {
  /** Series in stream order with their pieces. */
  readonly series = new Map<bigint, Piece[]>();
  blockId = '';
  messages = 0;
  bytes = 0;
  private last: bigint | null = null;
  private runId: bigint | null = null;
  private runCrc = 0;
  private runParts: Buffer[] = [];
  /** Checked runs waiting to be decoded, in stream order, with their series' piece list. */
  private readonly runs: { run: Buffer; list: Piece[] }[] = [];
  /** Index into `wanted` of the last series seen (series arrive in ascending order). */
  private cursor = 0;

  /** `wanted`: the ids asked for, ascending, no duplicates. */
  constructor(
    private readonly wanted: readonly bigint[],
    private readonly encoding: 'raw' | 'runs',
    private readonly range: { readonly start: bigint; readonly end: bigint },
    private readonly blockName: string,
  ) {}

  add(msg: ReadResponseView): void {
    if (this.messages === 0) this.blockId = msg.blockId;
    this.messages++;
    const ids = msg.seriesIds;
    if (ids.length % 8 !== 0) throw this.bad(`series_ids of ${ids.length} bytes`);
    const n = ids.length / 8;
    if (this.encoding === 'raw') this.addRaw(msg, n);
    else this.addRuns(msg, n);
  }

  /**
   * Ends the stream: the last run is checked, and every run's sample count read from its header.
   * Runs are decoded by {@link mergeSeries}, once every block has answered, straight into the
   * arrays of the result: no per-block arrays, no copy.
   */
  finish(): void {
    if (this.encoding !== 'runs') return;
    this.flushRun();
    const origin = { object: this.blockName, offset: 0 };
    for (const r of this.runs) {
      // checked before mergeSeries sizes its arrays by the counts of every block
      const n = readRunHeader(r.run, origin).count;
      if (n === 0 || n > MAX_RUN_SAMPLES) throw this.bad(`a run that claims ${n} samples`);
      r.list.push({ n, run: r.run, range: this.range, origin });
    }
    this.runs.length = 0;
  }

  private seriesId(ids: Buffer, i: number): bigint {
    const id = ids.readBigUInt64LE(i * 8);
    if (this.last !== null && id < this.last) throw this.bad(`series ${id} after ${this.last}`);
    const w = this.wanted;
    let c = this.cursor;
    while (c < w.length && w[c]! < id) c++;
    if (c === w.length || w[c] !== id) throw this.bad(`series ${id} was not asked for`);
    this.cursor = c;
    return id;
  }

  private pieces(id: bigint): Piece[] {
    let list = this.series.get(id);
    if (!list) {
      if (this.last === id) throw this.bad(`series ${id} is not contiguous`);
      this.series.set(id, (list = []));
    } else if (this.last !== id) {
      throw this.bad(`series ${id} is not contiguous`);
    }
    this.last = id;
    return list;
  }

  private addRaw(msg: ReadResponseView, n: number): void {
    if (msg.sampleCounts.length !== n * 4) throw this.bad(`${n} series with ${msg.sampleCounts.length} bytes of counts`);
    let total = 0;
    for (let i = 0; i < n; i++) total += msg.sampleCounts.readUInt32LE(i * 4);
    if (msg.timestamps.length !== total * 8 || msg.values.length !== total * 8) {
      throw this.bad(`${total} samples with ${msg.timestamps.length} bytes of timestamps and ${msg.values.length} of values`);
    }
    this.bytes += total * 16;
    let at = 0;
    for (let i = 0; i < n; i++) {
      const id = this.seriesId(msg.seriesIds, i);
      const k = msg.sampleCounts.readUInt32LE(i * 4);
      this.pieces(id).push({ n: k, timestamps: msg.timestamps.subarray(at, at + k * 8), values: msg.values.subarray(at, at + k * 8) });
      at += k * 8;
    }
  }

  private addRuns(msg: ReadResponseView, n: number): void {
    if (msg.runLengths.length !== n * 4 || msg.runCrcs.length !== n * 4) throw this.bad(`${n} series with ${msg.runLengths.length} bytes of run lengths`);
    let total = 0;
    for (let i = 0; i < n; i++) total += msg.runLengths.readUInt32LE(i * 4);
    if (msg.runs.length !== total) throw this.bad(`runs of ${msg.runs.length} bytes, lengths say ${total}`);
    this.bytes += total;
    let at = 0;
    for (let i = 0; i < n; i++) {
      const id = msg.seriesIds.readBigUInt64LE(i * 8);
      const len = msg.runLengths.readUInt32LE(i * 4);
      const crc = msg.runCrcs.readUInt32LE(i * 4);
      // a new series, or the next run of the same one (a day read from its blocks sends each
      // block's run as it is stored): a fragment with another run CRC starts a run (read.proto)
      if (id !== this.runId || crc !== this.runCrc) {
        this.flushRun();
        this.seriesId(msg.seriesIds, i);
        this.runId = id;
        this.runCrc = crc;
      }
      this.runParts.push(msg.runs.subarray(at, at + len));
      at += len;
    }
  }

  private flushRun(): void {
    const id = this.runId;
    if (id === null) return;
    const run = this.runParts.length === 1 ? this.runParts[0]! : Buffer.concat(this.runParts);
    this.runParts = [];
    this.runId = null;
    if (crc32c(run) !== this.runCrc) throw this.bad(`run of series ${id}: checksum mismatch`);
    this.runs.push({ run, list: this.pieces(id) });
  }

  private bad(what: string): ResponseFormatError {
    return new ResponseFormatError(`malformed response for block ${this.blockName}: ${what}`);
  }
}

/**
 * The answers of one query's block requests, taken as each request is answered (in any order),
 * for {@link mergeSeries}. An answer without series (a window with no block, or none of the ids)
 * is counted and dropped at once: what a query holds grows with the data it returns, not with the
 * number of requests (a range of years is thousands of requests, nearly all empty).
 */
export class QueryAnswers {
  /** Answered requests, response messages and payload bytes received, over all answers. */
  requests = 0;
  messages = 0;
  bytes = 0;
  /** Answers from a request whose window had a block. */
  blocksFound = 0;
  /** The answers that had series, with their place in the plan. */
  private readonly kept: { readonly index: number; readonly parts: readonly BlockAssembler[] }[] = [];

  /**
   * Takes the answer of the plan's request `index`: its finished assemblers, in id order (several
   * when the block was read in parts).
   */
  add(index: number, parts: readonly BlockAssembler[]): void {
    this.requests++;
    let found = false;
    let withSeries = 0;
    for (const p of parts) {
      this.messages += p.messages;
      this.bytes += p.bytes;
      if (p.blockId !== '') found = true;
      if (p.series.size > 0) withSeries++;
    }
    if (found) this.blocksFound++;
    if (withSeries > 0) this.kept.push({ index, parts: withSeries === parts.length ? parts : parts.filter((p) => p.series.size > 0) });
  }

  /** Answers held for the merge: those with series. */
  get held(): number {
    return this.kept.length;
  }

  /** The assemblers held, in plan order (time order): what {@link mergeSeries} takes. */
  blocks(): BlockAssembler[] {
    return [...this.kept].sort((a, b) => a.index - b.index).flatMap((k) => k.parts);
  }
}

/**
 * Joins the pieces of each series of `ids` (ascending) from `blocks` (in time order), one result
 * per id, empty when no block had samples of it. Every series is a view of one pair of arrays
 * for the whole answer: runs are decoded into it at their place and cut to their block's range
 * in place, so what the ranges keep ends up packed at the front. When the ranges kept less than
 * half of what the runs held (an hour read from day blocks), the kept part is copied out, so the
 * result does not keep the whole decoded runs alive.
 *
 * Measured with `npm run bench -- read` (warm 1 series x 30 day blocks, 200 queries, the bench
 * process under --trace-gc): one pair of arrays per answer instead of one per block plus one per
 * series cut the client's collections from 45 scavenges and 10 mark-compacts (178 ms of pauses)
 * to 20 and 2 (98 ms). V8 collects as the external memory of typed arrays grows, and those
 * pauses sat in the tail of every multi-block read.
 */
export function mergeSeries(ids: readonly bigint[], blocks: readonly BlockAssembler[], maxSamples = Number.MAX_SAFE_INTEGER): SeriesSamples[] {
  const all = new Map<bigint, Piece[]>();
  let total = 0;
  for (const b of blocks) {
    for (const [id, pieces] of b.series) {
      let list = all.get(id);
      if (!list) all.set(id, (list = []));
      for (const p of pieces) {
        list.push(p);
        total += p.n;
      }
    }
  }
  if (total > maxSamples) throw new QueryLimitError(`the blocks' runs claim ${total} samples, over the client's maxSamplesPerQuery (${maxSamples}); ask for fewer series or a shorter range`);
  let timestamps = new BigInt64Array(total);
  let values = new Float64Array(total);
  const tb = bytesOf(timestamps);
  const vb = bytesOf(values);
  const spans = new Map<bigint, { at: number; n: number }>();
  let end = 0;
  for (const id of ids) {
    if (spans.has(id)) continue;
    const from = end;
    for (const p of all.get(id) ?? []) {
      if ('run' in p) {
        const n = decodeRunInto(p.run, p.origin, timestamps, values, end);
        const s = sliceSamples({ timestamps: timestamps.subarray(end, end + n), values: values.subarray(end, end + n) }, p.range);
        const k = s.timestamps.length;
        const at = s.timestamps.byteOffset / 8;
        if (k > 0 && at !== end) {
          timestamps.copyWithin(end, at, at + k);
          values.copyWithin(end, at, at + k);
        }
        end += k;
      } else {
        tb.set(p.timestamps, end * 8);
        vb.set(p.values, end * 8);
        end += p.n;
      }
    }
    spans.set(id, { at: from, n: end - from });
  }
  if (end < total / 2) {
    timestamps = timestamps.slice(0, end);
    values = values.slice(0, end);
  }
  return ids.map((id) => {
    const { at, n } = spans.get(id)!;
    return { id, timestamps: timestamps.subarray(at, at + n), values: values.subarray(at, at + n) };
  });
}
