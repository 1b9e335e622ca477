/**
 * Reads every series of an existing block in id order, fetching the sample section in large
 * sequential range reads (not one request per series), for merging late samples into a
 * replacement block. Every run is checked against its CRC before it is decoded.
 */
import { BlockReader, checkRunBytes, checkRunInto, decodeLocatedRun, type RunLocation } from './reader.js';
import type { Samples } from '../format/run.js';
import { reusingReads } from './source.js';
import type { RangeResult } from '../objstore/bucket.js';

/** Bytes fetched per range read of the sample section. */
export const SCAN_CHUNK_BYTES = 8 * 1024 * 1024;

/** Every series of the block opened by `reader`, in id order, with its samples. */
export async function* scanBlock(reader: BlockReader, chunkBytes = SCAN_CHUNK_BYTES): AsyncGenerator<{ id: bigint; samples: Samples }> {
  for await (const { loc, bytes } of scanCheckedRuns(reader, chunkBytes)) {
    yield { id: loc.id, samples: decodeLocatedRun(reader.source.name, loc, bytes) };
  }
}

/**
 * Every run of the block opened by `reader`, in id order, with its bytes checked against its index
 * entry (length and checksum) but not decoded: for a merge that copies the runs of series it has
 * nothing to merge with (decode them with decodeLocatedRun). The bytes are views into the chunk
 * read, valid until the next run is asked for: copy what is kept longer.
 */
export async function* scanCheckedRuns(reader: BlockReader, chunkBytes = SCAN_CHUNK_BYTES): AsyncGenerator<{ loc: RunLocation; bytes: Uint8Array }> {
  for await (const run of chunkedRuns(reader, (range) => reader.source.read(range), chunkBytes)) {
    checkRunBytes(reader.source.name, run.loc, run.bytes);
    yield run;
  }
}

/**
 * Every run of the block opened by `reader`, in id order, with its bytes: views into chunks of the
 * sample section read `chunkBytes` (or one run) at a time through `read`, valid until the next
 * run is asked for.
 */
async function* chunkedRuns(reader: BlockReader, read: (range: { offset: number; length: number }) => Promise<RangeResult>, chunkBytes: number): AsyncGenerator<{ loc: RunLocation; bytes: Uint8Array }> {
  let chunk: Uint8Array = new Uint8Array(0);
  let chunkStart = 0;
  for await (const loc of reader.series()) {
    if (loc.offset < chunkStart || loc.offset + loc.length > chunkStart + chunk.length) {
      const length = Math.min(Math.max(chunkBytes, loc.length), reader.footer.samples.length - loc.offset);
      const r = await read({ offset: loc.offset, length });
      reader.reads++;
      chunk = r.data;
      chunkStart = loc.offset;
    }
    const at = loc.offset - chunkStart;
    yield { loc, bytes: chunk.subarray(at, at + loc.length) };
  }
}

/**
 * Checks every run of the block opened by `reader` (checksum, decoded against its index entry)
 * the way {@link scanBlock} reads them, but with one chunk buffer read into again and again
 * ({@link reusingReads}) and the samples decoded into one scratch: it allocates nothing per chunk or run. The aggregator
 * verifies each block it uploads this way on a build worker; as fresh buffers, the 8 MiB chunks
 * were garbage the worker's collector freed only about every 64 MiB of them (V8's external memory
 * trigger), which with two flushes at once was some 150 MiB of a pod's peak RSS.
 * `cancelled` is asked every `checkEvery` runs; when it answers true the scan stops early.
 */
export async function checkBlockRuns(
  reader: BlockReader,
  cancelled: () => boolean,
  checkEvery = 1024,
  chunkBytes = SCAN_CHUNK_BYTES,
): Promise<{ series: number; samples: number; stopped: boolean }> {
  const scratch = { timestamps: new BigInt64Array(0), values: new Float64Array(0) };
  let series = 0;
  let samples = 0;
  const name = reader.source.name;
  for await (const { loc, bytes } of chunkedRuns(reader, reusingReads(reader.source), chunkBytes)) {
    checkRunInto(name, loc, bytes, scratch);
    series++;
    samples += loc.sampleCount;
    if (series % checkEvery === 0 && cancelled()) return { series, samples, stopped: true };
  }
  return { series, samples, stopped: false };
}
