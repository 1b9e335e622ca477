/**
 * The durable-filesystem steps every local writer of Strata uses (the WAL, the filesystem bucket,
 * block files): a write that writes everything, a directory fsync, a durable mkdir -p and a durable
 * rename. A file is durable once it was fsynced *and* the directory entry naming it was (the
 * parent directory fsynced after the create, rename or unlink).
 */
import { existsSync } from 'node:fs';
import { mkdir, open, rename, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Writes all of `chunk` at the file's position (a short write is continued). */
export async function writeFully(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  let done = 0;
  while (done < chunk.length) {
    const { bytesWritten } = await fh.write(chunk, done, chunk.length - done);
    done += bytesWritten;
  }
}

/** fsyncs a directory so that entries created or removed in it are durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** mkdir -p, fsyncing the parent of every directory it creates. */
export async function mkdirDurable(dir: string): Promise<void> {
  if (existsSync(dir)) return;
  await mkdirDurable(dirname(dir));
  try {
    await mkdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return;
  }
  await fsyncDir(dirname(dir));
}

/** Renames `from` to `to` (same filesystem) and fsyncs `to`'s directory. `from` must be synced. */
export async function renameDurable(from: string, to: string): Promise<void> {
  await rename(from, to);
  await fsyncDir(dirname(to));
}
