/**
 * Reads the sample generator's binary files (`bench/gen-samples.mjs --formats=bin`): fixed
 * 24-byte little-endian records, no header,
 *
 * ```
 * u64 seriesId | i64 timestampMs | f64 value (IEEE-754)
 * ```
 *
 * in chunks of a bounded number of records, each chunk regrouped into per-series columns, so a
 * file of any size is pushed with bounded memory.
 */
import { open } from 'node:fs/promises';
import { InvalidArgumentError } from '../errors.js';
import type { SeriesData } from './writer.js';

/** Bytes per record. */
export const SAMPLE_RECORD_BYTES = 24;

/**
 * Yields the file's samples, `chunkSamples` records at a time, as series (ascending id, samples in
 * file order).
 * @throws InvalidArgumentError when the file size is not a multiple of 24.
 */
export async function* readSampleFile(path: string, chunkSamples = 1 << 20): AsyncGenerator<SeriesData[]> {
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
      yield groupRecords(buf.subarray(0, got));
    }
  } finally {
    await fh.close();
  }
}

/** Regroups records into per-series columns (ascending id, record order kept within a series). */
export function groupRecords(records: Buffer): SeriesData[] {
  const n = records.length / SAMPLE_RECORD_BYTES;
  const counts = new Map<bigint, number>();
  for (let i = 0; i < n; i++) {
    const id = records.readBigUInt64LE(i * SAMPLE_RECORD_BYTES);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  const cols = new Map<bigint, { ts: BigInt64Array; vs: Float64Array; bits: Uint32Array; n: number }>();
  for (const [id, c] of counts) {
    const vs = new Float64Array(c);
    cols.set(id, { ts: new BigInt64Array(c), vs, bits: new Uint32Array(vs.buffer), n: 0 });
  }
  for (let i = 0; i < n; i++) {
    const off = i * SAMPLE_RECORD_BYTES;
    const col = cols.get(records.readBigUInt64LE(off))!;
    col.ts[col.n] = records.readBigInt64LE(off + 8);
    // copy the value's bits, not a JS number, so NaN payloads survive
    col.bits[2 * col.n] = records.readUInt32LE(off + 16);
    col.bits[2 * col.n + 1] = records.readUInt32LE(off + 20);
    col.n++;
  }
  return [...cols.entries()]
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([id, c]) => ({ id, timestamps: c.ts, values: c.vs }));
}
