import type { RangeSource } from '../../src/block/source.js';
import type { ByteRange, RangeResult } from '../../src/objstore/bucket.js';

/**
 * A RangeSource over bytes in memory with the bucket layer's range semantics, counting reads.
 * Used where the thing under test is the reader's logic (corruption detection over thousands of
 * damaged copies), not the storage.
 */
export function memorySource(name: string, bytes: Uint8Array): RangeSource & { reads: number } {
  const src = {
    name,
    reads: 0,
    async read(range: ByteRange): Promise<RangeResult> {
      src.reads++;
      const size = bytes.length;
      if ('suffix' in range) {
        const len = Math.min(range.suffix, size);
        return { data: Buffer.from(bytes.subarray(size - len)), offset: size - len, size };
      }
      if (range.offset >= size) throw new RangeError(`range ${range.offset} beyond ${size}`);
      return { data: Buffer.from(bytes.subarray(range.offset, Math.min(size, range.offset + range.length))), offset: range.offset, size };
    },
  };
  return src;
}
