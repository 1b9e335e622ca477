/**
 * Whether the LMDB cache's file may be opened, decided before LMDB maps it (a damaged file faults
 * the process that maps it, at open or at the first read, and every restart again). The cache is
 * disposable, so a damaged file is removed and the store starts empty.
 *
 * At every open, the metas are checked ({@link checkLmdbHeader}: a few hundred bytes). Every tree
 * is walked ({@link verifyLmdbFile}) only when the file may have been left or made inconsistent:
 * - the last run did not close the store: no {@link CLEAN_CLOSE_FILE} (a crash, SIGKILL, power
 *   loss; the stamp is removed before LMDB opens the file and written after LMDB closed it);
 * - the file changed since that close: its size, inode, mtime or ctime differ from the stamp's
 *   (restored, copied over, truncated, edited);
 * - it ends before the last page its meta says is used.
 * A clean close followed by an untouched file costs only the meta check. Layout of the stamp:
 * docs/format/cache.md.
 */
import { readFileSync, rmSync, statSync, writeFileSync, type BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { checkLmdbHeader, verifyLmdbFile, type LmdbVerifyOptions } from './lmdb-verify.js';

/** LMDB's data file in the cache directory. */
export const DATA_FILE = 'data.mdb';
/** LMDB's lock file (readers table; rebuilt by LMDB when it is the only process). */
export const LOCK_FILE = 'lock.mdb';
/** Written in the cache directory when the store closed cleanly; see the module comment. */
export const CLEAN_CLOSE_FILE = 'clean-close.json';
/** Version field of {@link CLEAN_CLOSE_FILE}. */
export const CLEAN_CLOSE_VERSION = 1;

/** What was checked at open. */
export interface LmdbOpenCheck {
  /** Why every tree was walked, or null when only the metas were read. */
  readonly walked: string | null;
  /** What is wrong with the file (it was removed and the store starts empty), or null. */
  readonly damage: string | null;
  readonly fileBytes: number;
  /** Pages (and overflow headers) the walk read. */
  readonly pagesRead: number;
  /** Time the checks took. */
  readonly ms: number;
}

interface Stamp {
  readonly version: number;
  readonly size: string;
  readonly ino: string;
  readonly mtimeNs: string;
  readonly ctimeNs: string;
}

function stampOf(st: BigIntStats): Stamp {
  return { version: CLEAN_CLOSE_VERSION, size: String(st.size), ino: String(st.ino), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) };
}

/** Why `st` is not the file the clean-close stamp in `dir` describes, or null when it is. */
function changedSinceClose(dir: string, st: BigIntStats): string | null {
  let text: string;
  try {
    text = readFileSync(join(dir, CLEAN_CLOSE_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'the last run did not close the cache';
    return `${CLEAN_CLOSE_FILE} cannot be read (${(err as Error).message})`;
  }
  let stamp: Partial<Stamp>;
  try {
    stamp = JSON.parse(text) as Partial<Stamp>;
  } catch {
    return `${CLEAN_CLOSE_FILE} does not parse`;
  }
  const now = stampOf(st);
  if (stamp.version !== CLEAN_CLOSE_VERSION) return `${CLEAN_CLOSE_FILE} has version ${JSON.stringify(stamp.version ?? null)}`;
  for (const k of ['size', 'ino', 'mtimeNs', 'ctimeNs'] as const) {
    if (stamp[k] !== now[k]) return `the file changed since the cache was closed (${k} ${stamp[k] ?? 'missing'}, now ${now[k]})`;
  }
  return null;
}

/** Removes LMDB's files in `dir` (data and lock file). */
export function removeEnvironment(dir: string): void {
  for (const f of [DATA_FILE, LOCK_FILE]) rmSync(join(dir, f), { force: true });
}

/**
 * Checks the cache's file in `dir` before LMDB opens it (see the module comment; `verify` adds the
 * checks of the store's own keys), removes it when
 * it is damaged, and removes the clean-close stamp (from now on a crash leaves none). Returns what
 * was checked, or null when there is no file yet.
 */
export async function checkBeforeOpen(dir: string, verify: LmdbVerifyOptions = {}): Promise<LmdbOpenCheck | null> {
  const file = join(dir, DATA_FILE);
  const started = performance.now();
  let st: BigIntStats;
  try {
    st = statSync(file, { bigint: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    rmSync(join(dir, CLEAN_CLOSE_FILE), { force: true });
    return null;
  }
  let walked: string | null = null;
  let damage: string | null = null;
  let pagesRead = 0;
  try {
    const header = checkLmdbHeader(file);
    if (header.kind === 'damaged') damage = header.problem;
    else if (header.kind === 'ok') {
      walked = header.short ? `the file ends at ${header.fileBytes} bytes, before its last page in use (${header.lastPage})` : changedSinceClose(dir, st);
      if (walked !== null) {
        const r = await verifyLmdbFile(file, verify);
        if (r.ok) pagesRead = r.pagesRead;
        else damage = r.problem;
      }
    }
  } catch (err) {
    // a file that cannot be read (EIO: a bad sector) would fault LMDB's map just the same
    damage = `it cannot be read: ${(err as Error).message}`;
  }
  rmSync(join(dir, CLEAN_CLOSE_FILE), { force: true });
  if (damage !== null) removeEnvironment(dir);
  return { walked, damage, fileBytes: Number(st.size), pagesRead, ms: performance.now() - started };
}

/** Records that the store in `dir` closed cleanly: LMDB closed its file, which is what the stamp describes. */
export function markClosedCleanly(dir: string): void {
  const st = statSync(join(dir, DATA_FILE), { bigint: true });
  writeFileSync(join(dir, CLEAN_CLOSE_FILE), `${JSON.stringify(stampOf(st))}\n`);
}
