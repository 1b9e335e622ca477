/**
 * Where a block reader gets its bytes: exact range reads of one object, from a bucket or a local
 * file. The gateway wraps these with its caches.
 */
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ErrorCode, ObjectStoreError } from '../errors.js';
import { renameDurable, writeFully } from '../common/durable-fs.js';
import { readTarget, type BucketReader, type ByteRange, type RangeResult } from '../objstore/bucket.js';
import type { ByteSink } from './writer.js';

/** Range reads of one object. */
export interface RangeSource {
  /** Name used in error messages (the bucket key or file path). */
  readonly name: string;
  /**
   * The bytes of `range`. With `into` large enough for them, a source may read them into it and
   * return a view of it, or hand `into` over to where the read happens (a worker's source
   * transfers it to the main thread, which detaches it here): the caller gives `into` up and
   * uses only the returned `data`.
   */
  read(range: ByteRange, into?: Uint8Array): Promise<RangeResult>;
}

/**
 * Reads ranges of `source` one after another through one buffer: each read goes into the buffer
 * the last one came back in, when that buffer is ours alone (the one we gave, or the one a
 * worker's source gave back in its place; never a view into a bucket's or a shared pool's
 * buffer) and large enough. The bytes a read returns are valid until the next read. As fresh
 * buffers, the pieces of a whole block were garbage the reading thread's collector freed only
 * about every 64 MiB of them.
 */
export function reusingReads(source: RangeSource): (range: { offset: number; length: number }) => Promise<RangeResult> {
  let spare: ArrayBuffer | undefined;
  return async (range) => {
    // the whole buffer, not a view of part of it: a worker's source transfers only a whole one
    const into = spare !== undefined && spare.byteLength >= range.length ? new Uint8Array(spare) : new Uint8Array(range.length);
    spare = undefined;
    const r = await source.read(range, into);
    if (r.data.buffer instanceof ArrayBuffer && r.data.byteOffset === 0 && (r.data.buffer === into.buffer || into.buffer.byteLength === 0)) spare = r.data.buffer;
    return r;
  };
}

/** A block stored under `key` in a bucket. */
export function bucketSource(bucket: BucketReader, key: string): RangeSource {
  return { name: key, read: (range, into) => bucket.getRange(key, range, into ? { into } : undefined) };
}

/** A block in a local file. */
export function fileSource(path: string): RangeSource {
  return {
    name: path,
    async read(range: ByteRange, into?: Uint8Array): Promise<RangeResult> {
      let fh: FileHandle;
      try {
        fh = await open(path, 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          throw new ObjectStoreError(ErrorCode.NOT_FOUND, 'file', path, `cannot read "${path}": no such file`, { cause: err });
        }
        throw err;
      }
      try {
        const size = (await fh.stat()).size;
        let offset: number;
        let length: number;
        if ('suffix' in range) {
          length = Math.min(range.suffix, size);
          offset = size - length;
        } else {
          offset = range.offset;
          if (offset >= size && !(offset === 0 && size === 0)) {
            throw new ObjectStoreError(ErrorCode.INVALID_RANGE, 'file', path, `cannot read "${path}" at ${offset}: file is ${size} bytes`);
          }
          length = Math.min(range.length, size - offset);
        }
        const data = readTarget(length, into);
        let done = 0;
        while (done < length) {
          const { bytesRead } = await fh.read(data, done, length - done, offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        return { data: data.subarray(0, done), offset, size };
      } finally {
        await fh.close();
      }
    },
  };
}

/** Writes a block to a local file atomically: a temp file in the same directory, fsync, rename. */
export async function fileSink(path: string): Promise<ByteSink> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx');
  let closed = false;
  return {
    write: (chunk) => writeFully(fh, chunk),
    async complete() {
      await fh.sync();
      await fh.close();
      closed = true;
      await renameDurable(tmp, path);
    },
    async abort() {
      if (!closed) {
        closed = true;
        await fh.close();
      }
      await unlink(tmp).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    },
  };
}
