/**
 * Verifies a merged day block before it is published, reading it in pieces of at most
 * {@link VERIFY_CHUNK_BYTES} (or one run, when a single run is larger) instead of whole: both
 * section checksums, every index page, every run decoded against its index entry, and the footer's
 * counts. The same checks as BlockReader.verify(), which holds the whole block in memory; a day
 * block of a large shard can be gigabytes.
 */
import { crc32c } from '@node-rs/crc32';
import { BlockReader, decodeCheckedRun, locationOf } from '../block/reader.js';
import { CorruptionError } from '../errors.js';

/** Most bytes of the block held at once by {@link verifyBlockInPieces} (a larger single run is read whole). */
export const VERIFY_CHUNK_BYTES = 8 * 1024 * 1024;

/** What the verification found, and the largest piece it read. */
export interface VerifyResult {
  readonly series: number;
  readonly samples: number;
  readonly largestReadBytes: number;
}

/** See the module comment. Throws CorruptionError naming the offset of the first damage found. */
export async function verifyBlockInPieces(reader: BlockReader, chunkBytes = VERIFY_CHUNK_BYTES): Promise<VerifyResult> {
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) throw new RangeError(`chunkBytes must be a positive integer, got ${chunkBytes}`);
  const source = reader.source;
  const name = source.name;
  const { samples: samplesSection, index } = reader.footer;
  let largest = 0;
  const read = async (offset: number, length: number): Promise<Uint8Array> => {
    const r = await source.read({ offset, length });
    if (r.data.length !== length) throw new CorruptionError(name, offset, `read ${r.data.length} of ${length} bytes`);
    largest = Math.max(largest, length);
    return r.data;
  };
  const sectionCrc = async (offset: number, length: number): Promise<number> => {
    let crc = 0;
    for (let at = 0; at < length; at += chunkBytes) crc = crc32c(await read(offset + at, Math.min(chunkBytes, length - at)), crc);
    return crc;
  };
  if ((await sectionCrc(samplesSection.offset, samplesSection.length)) !== samplesSection.crc) {
    throw new CorruptionError(name, samplesSection.offset, 'sample section checksum mismatch');
  }
  if ((await sectionCrc(index.offset, index.length)) !== index.crc) throw new CorruptionError(name, index.offset, 'index section checksum mismatch');

  const ioi = reader.ioi;
  const samplesEnd = samplesSection.offset + samplesSection.length;
  // a window of the sample section: consecutive runs are read together, up to chunkBytes
  let win: Uint8Array = new Uint8Array(0);
  let winStart = 0;
  let series = 0;
  let count = 0;
  for (let p = 0; p < ioi.pageCount; p++) {
    const page = BlockReader.decodePageBytes(name, ioi, p, await read(ioi.offsets[p]!, ioi.lengths[p]!), samplesSection.length);
    for (let e = 0; e < page.count; e++) {
      const loc = locationOf(page, p, e, reader.footer.version);
      if (loc.offset < samplesSection.offset || loc.offset + loc.length > samplesEnd) {
        throw new CorruptionError(name, loc.offset, `run of series ${loc.id} lies outside the sample section`);
      }
      if (loc.offset < winStart || loc.offset + loc.length > winStart + win.length) {
        winStart = loc.offset;
        win = await read(loc.offset, Math.max(loc.length, Math.min(chunkBytes, samplesEnd - loc.offset)));
      }
      decodeCheckedRun(name, loc, win.subarray(loc.offset - winStart, loc.offset - winStart + loc.length));
      series++;
      count += loc.sampleCount;
    }
  }
  const f = reader.footer;
  if (series !== f.seriesCount || count !== f.sampleCount) {
    throw new CorruptionError(name, reader.size, `footer counts ${f.seriesCount} series / ${f.sampleCount} samples, index holds ${series} / ${count}`);
  }
  return { series, samples: count, largestReadBytes: largest };
}
