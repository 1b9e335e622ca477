/**
 * Reads every series of an existing block in id order, fetching the sample section in large
 * sequential range reads (not one request per series), for merging late samples into a
 * replacement block. Every run is checked against its CRC before it is decoded.
 */
import { BlockReader, decodeCheckedRun, type RunLocation } from './reader.js';
import type { Samples } from '../format/run.js';

/** Bytes fetched per range read of the sample section. */
export const SCAN_CHUNK_BYTES = 8 * 1024 * 1024;

/** Every series of the block opened by `reader`, in id order, with its samples. */
export async function* scanBlock(reader: BlockReader, chunkBytes = SCAN_CHUNK_BYTES): AsyncGenerator<{ id: bigint; samples: Samples }> {
  let chunk: Uint8Array = new Uint8Array(0);
  let chunkStart = 0;
  for await (const loc of reader.series()) {
    if (loc.offset < chunkStart || loc.offset + loc.length > chunkStart + chunk.length) {
      const want = Math.max(chunkBytes, loc.length);
      const length = Math.min(want, reader.footer.samples.length - loc.offset);
      const r = await reader.source.read({ offset: loc.offset, length });
      reader.reads++;
      chunk = r.data;
      chunkStart = loc.offset;
    }
    const at = loc.offset - chunkStart;
    yield { id: loc.id, samples: decodeRun(reader, loc, chunk.subarray(at, at + loc.length)) };
  }
}

function decodeRun(reader: BlockReader, loc: RunLocation, bytes: Uint8Array): Samples {
  return decodeCheckedRun(reader.source.name, loc, bytes);
}
