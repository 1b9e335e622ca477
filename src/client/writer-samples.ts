/**
 * Reads the sample generator's binary files (`bench/gen-samples.mjs --formats=bin`): fixed
 * 24-byte little-endian records, no header,
 *
 * ```
 * u64 seriesId | i64 timestampMs | f64 value (IEEE-754)
 * ```
 *
 * in chunks of a bounded number of records and of series, each chunk regrouped into per-series
 * columns, so a file of any size and shape is pushed with bounded memory.
 */
import { open } from 'node:fs/promises';
import { InvalidArgumentError } from '../errors.js';
import type { SeriesData } from './writer.js';

/** Bytes per record. */
export const SAMPLE_RECORD_BYTES = 24;

/** Default of the `chunkSeries` bounds: series regrouped at a time. */
export const DEFAULT_CHUNK_SERIES = 65536;

/**
 * Yields the file's samples, at most `chunkSamples` records and `chunkSeries` distinct series at a
 * time, as series (ascending id, samples in file order). Both bound the memory of a chunk: a
 * series costs its columns' views and the objects of its part of a request besides its samples,
 * so a file of many short series (1 M series of a few scrapes, sorted by time) is cut by series.
 * @throws InvalidArgumentError when the file size is not a multiple of 24.
 */
export async function* readSampleFile(path: string, chunkSamples = 1 << 20, chunkSeries = DEFAULT_CHUNK_SERIES): AsyncGenerator<SeriesData[]> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    if (size % SAMPLE_RECORD_BYTES !== 0) throw new InvalidArgumentError('samples file', `${path}: ${size} bytes is not a multiple of ${SAMPLE_RECORD_BYTES}`);
    const buf = Buffer.allocUnsafe(chunkSamples * SAMPLE_RECORD_BYTES);
    let pos = 0;
    while (pos < size) {
      const want = Math.min(buf.length, size - pos);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, pos + got);
        if (bytesRead === 0) throw new InvalidArgumentError('samples file', `${path}: unexpected end at ${pos + got}`);
        got += bytesRead;
      }
      pos += got;
      yield* groupedChunks(buf.subarray(0, got), chunkSeries);
    }
  } finally {
    await fh.close();
  }
}

/**
 * The records regrouped ({@link groupRecords}) in consecutive parts of at most `maxSeries`
 * distinct series each (record order kept: a part ends before the record of its first series
 * too many).
 */
export function* groupedChunks(records: Buffer, maxSeries = DEFAULT_CHUNK_SERIES): Generator<SeriesData[]> {
  const n = records.length / SAMPLE_RECORD_BYTES;
  // the records of each id in the part so far: the counts groupRecords would take again
  let counts = new Map<bigint, number>();
  let from = 0;
  for (let i = 0; i < n; i++) {
    const id = records.readBigUInt64LE(i * SAMPLE_RECORD_BYTES);
    const c = counts.get(id);
    if (c === undefined && counts.size === maxSeries) {
      yield grouped(records.subarray(from * SAMPLE_RECORD_BYTES, i * SAMPLE_RECORD_BYTES), counts);
      counts = new Map();
      from = i;
    }
    counts.set(id, (c ?? 0) + 1);
  }
  if (n > from) yield grouped(records.subarray(from * SAMPLE_RECORD_BYTES, n * SAMPLE_RECORD_BYTES), counts);
}

/**
 * Regroups records into per-series columns (ascending id, record order kept within a series):
 * views into two arrays for all of them, not two arrays per series.
 */
export function groupRecords(records: Buffer): SeriesData[] {
  const n = records.length / SAMPLE_RECORD_BYTES;
  const counts = new Map<bigint, number>();
  for (let i = 0; i < n; i++) {
    const id = records.readBigUInt64LE(i * SAMPLE_RECORD_BYTES);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return grouped(records, counts);
}

/** {@link groupRecords} given the records' count per id (`at`, reused: where each id's next sample goes). */
function grouped(records: Buffer, at: Map<bigint, number>): SeriesData[] {
  const n = records.length / SAMPLE_RECORD_BYTES;
  const ids = [...at.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const starts = new Float64Array(ids.length + 1);
  for (let k = 0; k < ids.length; k++) {
    const c = at.get(ids[k]!)!;
    at.set(ids[k]!, starts[k]!);
    starts[k + 1] = starts[k]! + c;
  }
  const ts = new BigInt64Array(n);
  const vs = new Float64Array(n);
  const bits = new Uint32Array(vs.buffer);
  for (let i = 0; i < n; i++) {
    const off = i * SAMPLE_RECORD_BYTES;
    const id = records.readBigUInt64LE(off);
    const j = at.get(id)!;
    at.set(id, j + 1);
    ts[j] = records.readBigInt64LE(off + 8);
    // copy the value's bits, not a JS number, so NaN payloads survive
    bits[2 * j] = records.readUInt32LE(off + 16);
    bits[2 * j + 1] = records.readUInt32LE(off + 20);
  }
  return ids.map((id, k) => ({ id, timestamps: ts.subarray(starts[k]!, starts[k + 1]!), values: vs.subarray(starts[k]!, starts[k + 1]!) }));
}
