/**
 * Small file systems for the tests of full disks: a tmpfs mounted for one test (needs root, as CI
 * runs), and a ballast file that fills it.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';

/** A tmpfs of `bytes` mounted for the test, unmounted at its end. */
export function tmpfs(t: Test, bytes: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'strata-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    throw new Error(`cannot mount a tmpfs at ${dir} (these tests need root): ${(err as { stderr?: Buffer }).stderr?.toString().trim() ?? (err as Error).message}`);
  }
  t.teardown(() => {
    // lazily: a store that gave up closing (a full disk) may still hold files open in this process
    execFileSync('umount', ['-l', dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/**
 * Fills the file system of `dir` with a ballast file until ENOSPC; returns its path. With `leave`,
 * the ballast is then cut back so that about that many bytes are free.
 */
export function fill(dir: string, leave = 0): string {
  const path = join(dir, 'ballast');
  const fd = openSync(path, 'a');
  const chunk = Buffer.alloc(64 * 1024, 0xab);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
    // the last pages, smaller than a chunk
    const small = Buffer.alloc(4096, 0xab);
    try {
      for (;;) writeSync(fd, small);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
    }
  } finally {
    closeSync(fd);
  }
  if (leave > 0) truncateSync(path, Math.max(0, statSync(path).size - leave));
  return path;
}
