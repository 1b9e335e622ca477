/**
 * Spill files of a WAL read: when a generation has more segments than a flush may hold open at
 * once (`flushMaxOpenSegments`), its segments are merged group by group into spill files, which
 * are then merged (docs/format/wal.md, "Reading many segments"). A spill file is a flat,
 * temporary list of series in id order, each with its runs in sequence order:
 *
 * ```
 * record := u64 id (LE) | u32 runCount | runCount x (u32 length | run bytes)
 * ```
 *
 * Each open spill file holds one descriptor and a read buffer, whatever its size. Spill files are
 * never fsynced: a crash loses the read, not data (the segments are still there), and the next
 * start removes them.
 */
import { open } from 'node:fs/promises';
import { CorruptionError } from '../errors.js';
import type { WalSeries } from './wal-db.js';

/** Bytes buffered before a write to the spill file. */
const WRITE_BUFFER_BYTES = 1024 * 1024;

/** Writes `series` (in id order) to a new spill file at `path`; resolves with its size. */
export async function writeSpill(path: string, series: AsyncIterable<WalSeries>): Promise<number> {
  const fh = await open(path, 'wx');
  let buf = Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
  let used = 0;
  let size = 0;
  const flush = async (): Promise<void> => {
    let at = 0;
    while (at < used) at += (await fh.write(buf, at, used - at)).bytesWritten;
    size += used;
    used = 0;
  };
  const room = async (n: number): Promise<void> => {
    if (used + n <= buf.length) return;
    await flush();
    if (n > buf.length) buf = Buffer.allocUnsafe(n);
  };
  try {
    for await (const s of series) {
      await room(12);
      buf.writeBigUInt64LE(s.id, used);
      buf.writeUInt32LE(s.runs.length, used + 8);
      used += 12;
      for (const run of s.runs) {
        await room(4 + run.length);
        buf.writeUInt32LE(run.length, used);
        buf.set(run, used + 4);
        used += 4 + run.length;
      }
    }
    await flush();
    return size;
  } finally {
    await fh.close();
  }
}

/**
 * The series of a spill file, in file order, read `bufferBytes` at a time (a record longer than
 * that is read whole). Run bytes are views of the chunk they were read in (each chunk is a fresh
 * buffer, never reused).
 * @throws CorruptionError when the file ends inside a record.
 */
export async function* readSpill(path: string, bufferBytes: number): AsyncGenerator<WalSeries> {
  const fh = await open(path, 'r');
  try {
    let pos = 0;
    let rest: Buffer = Buffer.alloc(0);
    let eof = false;
    /** Makes at least `n` bytes available in `rest` (fewer only at the end of the file). */
    const need = async (n: number): Promise<void> => {
      while (rest.length < n && !eof) {
        const chunk = Buffer.allocUnsafe(Math.max(bufferBytes, n - rest.length));
        const { bytesRead } = await fh.read(chunk, 0, chunk.length, pos);
        if (bytesRead === 0) eof = true;
        pos += bytesRead;
        rest = rest.length === 0 ? chunk.subarray(0, bytesRead) : Buffer.concat([rest, chunk.subarray(0, bytesRead)]);
      }
    };
    const truncated = (): CorruptionError => new CorruptionError(path, pos - rest.length, 'spill file ends inside a record');
    for (;;) {
      await need(12);
      if (rest.length === 0) return;
      if (rest.length < 12) throw truncated();
      const id = rest.readBigUInt64LE(0);
      const count = rest.readUInt32LE(8);
      rest = rest.subarray(12);
      const runs: Uint8Array[] = new Array<Uint8Array>(count);
      for (let i = 0; i < count; i++) {
        await need(4);
        if (rest.length < 4) throw truncated();
        const len = rest.readUInt32LE(0);
        await need(4 + len);
        if (rest.length < 4 + len) throw truncated();
        runs[i] = rest.subarray(4, 4 + len);
        rest = rest.subarray(4 + len);
      }
      yield { id, runs };
    }
  } finally {
    await fh.close();
  }
}
