/**
 * The LMDB {@link CacheStore} (package `lmdb`): a B+tree on local disk, read through the OS page
 * cache with synchronous zero-copy gets (`getBinaryFast`), written with lmdb's batched
 * asynchronous commits. It survives restarts: the recency list and byte accounting are rebuilt
 * from the `blocks` table at open. Layout and key schema: docs/format/cache.md.
 *
 * LMDB's map only grows, so the budget is ours: every entry is charged the pages it occupies
 * ({@link lmdbEntryCharge}) and whole blocks are evicted, least recently used first, when a put
 * goes over `maxBytes`. Freed pages are reused by LMDB for later writes.
 *
 * Writes are asynchronous; until one commits, an in-memory overlay answers for its key, so a
 * range is readable right after `putRange` and an evicted block's pending writes are removed too.
 * Single operations are applied in call order, which keeps the overlay and the tables in step.
 *
 * A damaged file would fault the process that maps it (LMDB has no checksums), at every restart:
 * it is checked before LMDB opens it (lmdb-integrity.ts: the metas always, every tree after a run
 * that did not close the store or when the file changed since), and removed when damaged, as is a
 * file LMDB refuses to open; the store then starts empty (`onReset`).
 */
import { readFileSync, statfsSync } from 'node:fs';
import { mkdir, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { ErrorCode, StrataError } from '../../errors.js';
import { checkBeforeOpen, DATA_FILE, markClosedCleanly, removeEnvironment, type LmdbOpenCheck } from './lmdb-integrity.js';
import { BLOCK_ROW_CHARGE, BlockLedger, type BlockPointer, type CacheStore, type CacheStoreOptions, type LedgerUnit } from './store.js';

/** Schema tag stored under `meta/schema`; a different value makes the store start empty. */
export const CACHE_SCHEMA = 'strata-gateway-cache/2';
/** Layout version byte at the start of pointer and block rows. */
export const ROW_VERSION = 1;
/** Pointer row: version u8 | blockId 16 bytes | checkedAtMs f64 | tailOffset f64 | size f64. */
export const POINTER_ROW_BYTES = 41;
/** Block row: version u8 | charge f64 | atimeMs f64 | objectKey (UTF-8, rest of the row). */
export const BLOCK_ROW_HEADER_BYTES = 17;
/** A block's last use is written to its row at most this often (the in-memory order is exact). */
export const ATIME_PERSIST_MS = 60_000;
/** LMDB page header; an overflow value occupies ceil((len + header) / pageSize) pages. */
const PAGE_HEADER = 16;
/** LMDB leaf node header. */
const NODE_HEADER = 8;

/**
 * Bytes charged for one entry: a value small enough to sit in a leaf page is charged twice its
 * node size (leaf pages are at least half full); a larger value lives in its own overflow pages
 * (whole pages: a value of pageSize - 16 bytes takes one page, one byte more takes two), plus its
 * leaf node.
 */
export function lmdbEntryCharge(keyBytes: number, valueBytes: number, pageSize: number): number {
  const node = NODE_HEADER + keyBytes + 2;
  if (node + valueBytes <= pageSize / 2 - PAGE_HEADER) return 2 * (node + valueBytes);
  return 2 * (node + 8) + Math.ceil((valueBytes + PAGE_HEADER) / pageSize) * pageSize;
}

/**
 * Address space reserved for the LMDB map up front: twice the budget (the pages of the entries
 * charged to it, plus as many free pages for copy-on-write and reuse) and 64 MiB, in whole MiB.
 * lmdb grows a map that is too small by mapping the file again and keeps the older mappings for
 * the buffers that may still point into them; their resident pages all count in RSS. With
 * lmdb's default (a small map grown as the file grew), `npm run bench -- read-scale` showed the
 * 49 MB data file resident twice over (88 MB in seven mappings). Reserving costs address space
 * only: the file is not extended and no page is touched.
 */
/**
 * lmdb rejects promises of its own when a commit fails, which nothing of ours can hold: the
 * promise of the batch it starts each event turn, and `commitError` (kriszyp/lmdb-js#368). Under
 * Node's default (`--unhandled-rejections=throw`) either ended the gateway on a full cache disk.
 * This listener drops exactly those (their cause reaches the writes' own rejections: see `write`)
 * and rethrows anything else, which ends the process as it would without a listener.
 */
let guarded = false;
function guardCommitRejections(): void {
  if (guarded) return;
  guarded = true;
  process.on('unhandledRejection', (reason) => {
    if (isLmdbCommitRejection(reason)) return;
    throw reason;
  });
}

/** A rejection made by lmdb's write path for a failed commit. */
export function isLmdbCommitRejection(reason: unknown): boolean {
  if (!(reason instanceof Error)) return false;
  const fromLmdb = /[\\/]node_modules[\\/]lmdb[\\/]/.test(reason.stack ?? '');
  return fromLmdb && (reason.message === 'Commit failed (see commitError for details)' || typeof (reason as { code?: unknown }).code === 'number');
}

/** Default of LmdbCacheStoreOptions.minFreeBytes. */
export const DEFAULT_MIN_FREE_BYTES = 64 * 2 ** 20;
/** How often the free space of the cache's file system is checked. */
const FREE_SPACE_CHECK_MS = 1000;
/** The longest close() waits for lmdb's last commit and for its close. */
const CLOSE_WAIT_MS = 10_000;

/** Free bytes of the file system of `dir` for an unprivileged writer (Infinity when it cannot be read). */
function freeBytesSync(dir: string): number {
  try {
    const st = statfsSync(dir);
    return st.bavail * st.bsize;
  } catch {
    return Infinity;
  }
}

/** `p`, or a StrataError naming `what` once `ms` passed without it settling. */
function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StrataError(ErrorCode.STORAGE, `${what} did not finish in ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

export function lmdbMapSize(maxBytes: number): number {
  const MiB = 2 ** 20;
  return Math.min(Math.ceil((2 * maxBytes) / MiB) * MiB + 64 * MiB, MAX_MAP_SIZE);
}
/** The largest map reserved up front (16 TiB; a larger cache grows its map as the file grows). */
const MAX_MAP_SIZE = 2 ** 44;

/** The process's limit on its address space (RLIMIT_AS, bytes), or null when there is none (or it cannot be read). */
function addressSpaceLimit(): number | null {
  let text: string;
  try {
    text = readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return null;
  }
  const m = /^Max address space\s+(\S+)/m.exec(text);
  return m === null || m[1] === 'unlimited' ? null : Number(m[1]);
}

/** Options of {@link LmdbCacheStore.open}. */
export interface LmdbCacheStoreOptions extends CacheStoreOptions {
  /** Directory of the LMDB environment (created if missing). */
  readonly dir: string;
  /**
   * Called when the store started empty instead of with what the directory held: another schema,
   * or a damaged file (the reason names the file and what is wrong with it), which was removed.
   */
  readonly onReset?: (reason: string) => void;
  /** Told what was checked before LMDB opened an existing file (see lmdb-integrity.ts), and how long it took. */
  readonly onCheck?: (check: LmdbOpenCheck) => void;
  /**
   * Bytes of range writes that may wait for LMDB's commit (held in memory until then; default
   * 64 MiB). A range that would go over it is not cached (the read is served all the same, and a
   * later read caches it once the commits caught up); `onWriteSkipped` counts those.
   */
  readonly maxPendingBytes?: number;
  readonly onWriteSkipped?: (bytes: number) => void;
  /**
   * Called for each write of a commit that failed (a full disk: ENOSPC, or an I/O error). The read
   * that made it was served all the same; the range is fetched again when next needed.
   */
  readonly onWriteFailed?: (err: unknown) => void;
  /**
   * Free bytes the cache's file system must keep (default 64 MiB): below it ranges are not cached
   * (`onWriteSkipped`, and `onLowDisk`) until there is room again: a commit that fails for lack of
   * space caches nothing and leaves lmdb waiting on its flush until a later commit succeeds (see
   * flush), so the cache stops writing before the disk is full. Checked every
   * {@link FREE_SPACE_CHECK_MS}.
   */
  readonly minFreeBytes?: number;
  /** Told when the free space goes below minFreeBytes (true) and back above it (false). */
  readonly onLowDisk?: (low: boolean, freeBytes: number) => void;
  /** Called when the map is not reserved up front ({@link lmdbMapSize}: the address space is limited) and lmdb's growing map is used instead. */
  readonly onMapReserveFailed?: (reason: string) => void;
}

/** Default of {@link LmdbCacheStoreOptions.maxPendingBytes}. */
export const DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024;

function rangeKey(blockId: string, offset: number, length: number): string {
  return `${blockId}/${offset}/${length}`;
}

/**
 * Keys of each table as this store writes them (docs/format/cache.md), as bytes read one to a
 * char: block cache ids are 32 hex digits, a pointer's scope has no '/', nothing has a control
 * byte (lmdb reads a key starting with one as a number, and throws on some).
 */
const KEY_PATTERNS: Readonly<Record<string, RegExp>> = {
  meta: /^[\x20-\x7e]+$/,
  ranges: /^[0-9a-f]{32}\/(?:0|[1-9][0-9]*)\/(?:0|[1-9][0-9]*)$/,
  pointers: /^[^/\x00-\x1f]+\/[^\x00-\x1f]+$/,
  blocks: /^[0-9a-f]{32}$/,
};

/**
 * What is wrong with a key found in table `table`, or null: checked for every key when the file is
 * walked at open. A damaged key that no longer decodes as a string can make lmdb throw where it is
 * read (restore, dropping a block), and one that no longer has its block's prefix is never evicted.
 */
export function cacheKeyProblem(table: string, key: Buffer): string | null {
  const pattern = KEY_PATTERNS[table];
  if (pattern === undefined || pattern.test(key.toString('latin1'))) return null;
  return `key ${JSON.stringify(key.toString('latin1').slice(0, 120))} is not one this cache writes`;
}

function encodePointer(p: BlockPointer): Buffer {
  const b = Buffer.alloc(POINTER_ROW_BYTES);
  b.writeUInt8(ROW_VERSION, 0);
  b.write(p.blockId, 1, 16, 'hex');
  b.writeDoubleLE(p.checkedAtMs, 17);
  b.writeDoubleLE(p.tailOffset, 25);
  b.writeDoubleLE(p.size, 33);
  return b;
}

function decodePointer(b: Buffer): BlockPointer | null {
  if (b.length !== POINTER_ROW_BYTES || b.readUInt8(0) !== ROW_VERSION) return null;
  return { blockId: b.toString('hex', 1, 17), checkedAtMs: b.readDoubleLE(17), tailOffset: b.readDoubleLE(25), size: b.readDoubleLE(33) };
}

function encodeBlockRow(u: LedgerUnit): Buffer {
  const key = Buffer.from(u.objectKey, 'utf8');
  const b = Buffer.alloc(BLOCK_ROW_HEADER_BYTES + key.length);
  b.writeUInt8(ROW_VERSION, 0);
  b.writeDoubleLE(u.charge, 1);
  b.writeDoubleLE(u.atimeMs, 9);
  key.copy(b, BLOCK_ROW_HEADER_BYTES);
  return b;
}

function decodeBlockRow(b: Buffer): LedgerUnit | null {
  if (b.length < BLOCK_ROW_HEADER_BYTES || b.readUInt8(0) !== ROW_VERSION) return null;
  const atimeMs = b.readDoubleLE(9);
  return { charge: b.readDoubleLE(1), atimeMs, persistedAtimeMs: atimeMs, objectKey: b.toString('utf8', BLOCK_ROW_HEADER_BYTES) };
}

/** A CacheStore in an LMDB environment; see the module comment. */
export class LmdbCacheStore implements CacheStore {
  private readonly pointers = new Map<string, BlockPointer>();
  /** Writes not yet committed: a Buffer for a put, null for a remove. */
  private readonly overlay = new Map<string, Buffer | null>();
  /** Bytes of range writes not committed yet (held in memory until then). */
  private pending = 0;
  /** Keys of uncommitted puts, per block (so eviction removes them too). */
  private readonly pendingByBlock = new Map<string, Set<string>>();
  private readonly now: () => number;
  private readonly onEvict: CacheStoreOptions['onEvict'];
  private readonly pageSize: number;
  private readonly maxPending: number;
  private readonly onWriteSkipped: ((bytes: number) => void) | undefined;
  private readonly onWriteFailed: ((err: unknown) => void) | undefined;
  private readonly minFreeBytes: number;
  private readonly onLowDisk: ((low: boolean, freeBytes: number) => void) | undefined;
  /** The file system had less than minFreeBytes free at the last check. */
  private lowDisk = false;
  private readonly diskTimer: NodeJS.Timeout;
  private closed = false;
  /** First failed write (reported by flush and close). */
  private writeError: unknown = null;
  /** Writes whose commit has not settled yet. */
  private readonly inCommit = new Set<Promise<unknown>>();
  /** The last write to settle failed: lmdb's `flushed` of that commit never settles. */
  private lastCommitFailed = false;

  private constructor(
    private readonly ledger: BlockLedger,
    private readonly dir: string,
    private readonly env: RootDatabase,
    private readonly meta: Database<string, string>,
    private readonly ranges: Database<Buffer, string>,
    private readonly pointerRows: Database<Buffer, string>,
    private readonly blockRows: Database<Buffer, string>,
    opts: LmdbCacheStoreOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.onEvict = opts.onEvict;
    this.pageSize = (env.getStats() as { pageSize: number }).pageSize;
    this.maxPending = opts.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
    this.onWriteSkipped = opts.onWriteSkipped;
    this.onWriteFailed = opts.onWriteFailed;
    this.minFreeBytes = opts.minFreeBytes ?? DEFAULT_MIN_FREE_BYTES;
    this.onLowDisk = opts.onLowDisk;
    this.noteFree(freeBytesSync(opts.dir));
    this.diskTimer = setInterval(() => {
      statfs(opts.dir).then(
        (st) => this.noteFree(st.bavail * st.bsize),
        () => undefined, // a failed check changes nothing: the next one decides
      );
    }, FREE_SPACE_CHECK_MS);
    this.diskTimer.unref();
  }

  /**
   * Opens (or creates) the store in `opts.dir` and restores its bookkeeping. A damaged file, or one
   * LMDB refuses, is removed first and the store starts empty (`onReset`); see the module comment.
   */
  static async open(opts: LmdbCacheStoreOptions): Promise<LmdbCacheStore> {
    guardCommitRejections();
    // the options are checked before anything is read: an error after that is the file's
    const ledger = new BlockLedger(opts.maxBytes);
    try {
      await mkdir(opts.dir, { recursive: true });
    } catch (err) {
      const notDir = ['EEXIST', 'ENOTDIR'].includes((err as NodeJS.ErrnoException).code ?? '');
      throw new StrataError(notDir ? ErrorCode.CONFIG : ErrorCode.STORAGE, `creating the cache directory ${opts.dir} (cacheDir): ${(err as Error).message}`, { cause: err });
    }
    const file = join(opts.dir, DATA_FILE);
    let check: LmdbOpenCheck | null;
    try {
      check = await checkBeforeOpen(opts.dir, { keyProblem: cacheKeyProblem });
    } catch (err) {
      throw new StrataError(ErrorCode.STORAGE, `checking the LMDB cache file ${file}: ${(err as Error).message}`, { cause: err });
    }
    if (check !== null) {
      opts.onCheck?.(check);
      if (check.damage !== null) opts.onReset?.(`cache file ${file} is damaged (${check.damage}): removed, the cache starts empty`);
    }
    try {
      return await LmdbCacheStore.openEnv(opts, ledger);
    } catch (err) {
      // LMDB refused the file with an error the checks did not foresee: the cache is disposable
      try {
        removeEnvironment(opts.dir);
      } catch {
        throw err; // cannot remove it either: the first error says more
      }
      opts.onReset?.(`cache file ${file} could not be opened (${(err as Error).message}): removed, the cache starts empty`);
      return await LmdbCacheStore.openEnv(opts, new BlockLedger(opts.maxBytes));
    }
  }

  /** Opens LMDB in `opts.dir`, resets another schema, restores the bookkeeping; closes what it opened when it fails. */
  private static async openEnv(opts: LmdbCacheStoreOptions, ledger: BlockLedger): Promise<LmdbCacheStore> {
    let env: RootDatabase;
    try {
      // lmdb crashes the process (SIGSEGV) when a map cannot be reserved, so with a limit on the
      // address space (ulimit -v) the map is not reserved up front but grown with the file
      const limit = addressSpaceLimit();
      if (limit === null) {
        env = open({ path: opts.dir, maxDbs: 8, pageSize: 4096, mapSize: lmdbMapSize(opts.maxBytes) });
      } else {
        opts.onMapReserveFailed?.(`the process's address space is limited to ${limit} bytes (ulimit -v)`);
        env = open({ path: opts.dir, maxDbs: 8, pageSize: 4096 });
      }
    } catch (err) {
      throw new StrataError(ErrorCode.STORAGE, `opening LMDB cache in ${opts.dir}: ${(err as Error).message}`, { cause: err });
    }
    let store: LmdbCacheStore | undefined;
    try {
      const meta = env.openDB<string, string>('meta', { encoding: 'string' });
      const ranges = env.openDB<Buffer, string>('ranges', { encoding: 'binary' });
      const pointerRows = env.openDB<Buffer, string>('pointers', { encoding: 'binary' });
      const blockRows = env.openDB<Buffer, string>('blocks', { encoding: 'binary' });
      store = new LmdbCacheStore(ledger, opts.dir, env, meta, ranges, pointerRows, blockRows, opts);
      const schema = meta.get('schema');
      if (schema !== CACHE_SCHEMA) {
        if (schema !== undefined || ranges.getKeysCount({ limit: 1 }) > 0) opts.onReset?.(`cache schema is ${JSON.stringify(schema ?? null)}, expected ${CACHE_SCHEMA}`);
        env.transactionSync(() => {
          ranges.clearSync();
          pointerRows.clearSync();
          blockRows.clearSync();
          meta.putSync('schema', CACHE_SCHEMA);
        });
      }
      store.restore();
      return store;
    } catch (err) {
      if (store) clearInterval(store.diskTimer);
      // the error is what the caller needs; a close that fails too adds nothing to it
      await bounded(env.close(), CLOSE_WAIT_MS, 'closing the LMDB cache').catch(() => undefined);
      throw new StrataError(ErrorCode.STORAGE, `reading LMDB cache in ${opts.dir}: ${(err as Error).message}`, { cause: err });
    }
  }

  private restore(): void {
    const units: [string, LedgerUnit][] = [];
    const bad: string[] = [];
    for (const { key, value } of this.blockRows.getRange({})) {
      const u = decodeBlockRow(value);
      if (u) units.push([key, u]);
      else bad.push(key);
    }
    units.sort((a, b) => a[1].atimeMs - b[1].atimeMs);
    for (const [id, u] of units) this.ledger.restore(id, u);
    for (const id of bad) this.dropRanges(id, '');
    for (const { key, value } of this.pointerRows.getRange({})) {
      const p = decodePointer(value);
      if (p && this.ledger.get(p.blockId)?.objectKey === key) this.pointers.set(key, p);
      else this.write(this.pointerRows.remove(key));
    }
    this.evict();
  }

  get maxBytes(): number {
    return this.ledger.maxBytes;
  }

  get usedBytes(): number {
    return this.ledger.usedBytes;
  }

  /** Bytes of range writes not committed yet (held in memory until then). */
  get pendingBytes(): number {
    return this.pending;
  }

  get blockCount(): number {
    return this.ledger.size;
  }

  getPointer(objectKey: string): BlockPointer | undefined {
    return this.pointers.get(objectKey);
  }

  setPointer(objectKey: string, pointer: BlockPointer): void {
    this.check();
    this.pointers.set(objectKey, pointer);
    this.write(this.pointerRows.put(objectKey, encodePointer(pointer)));
    const existing = this.ledger.get(pointer.blockId);
    const u = existing ?? this.ledger.charge(pointer.blockId, BLOCK_ROW_CHARGE, this.now());
    if (u.objectKey !== objectKey || !existing) {
      u.objectKey = objectKey;
      this.persistRow(pointer.blockId, u);
    }
    this.evict();
  }

  deletePointer(objectKey: string): void {
    this.check();
    if (!this.pointers.delete(objectKey)) return;
    this.write(this.pointerRows.remove(objectKey));
  }

  getRange(blockId: string, offset: number, length: number): Buffer | undefined {
    const u = this.ledger.get(blockId);
    if (!u) return undefined;
    const key = rangeKey(blockId, offset, length);
    let out: Buffer | undefined;
    const pending = this.overlay.get(key);
    if (pending !== undefined) {
      if (pending === null) return undefined;
      out = Buffer.from(pending);
    } else {
      const fast = this.ranges.getBinaryFast(key);
      if (fast === undefined) return undefined;
      // a reused buffer whose `length` is the value's: copy exactly that many bytes out of it
      out = Buffer.allocUnsafe(fast.length);
      out.set(new Uint8Array(fast.buffer, fast.byteOffset, fast.length));
    }
    this.touchUnit(blockId, u);
    return out;
  }

  touchBlock(blockId: string): void {
    const u = this.ledger.get(blockId);
    if (u) this.touchUnit(blockId, u);
  }

  hasRange(blockId: string, offset: number, length: number): boolean {
    if (!this.ledger.get(blockId)) return false;
    return this.exists(rangeKey(blockId, offset, length));
  }

  putRange(blockId: string, offset: number, bytes: Uint8Array): void {
    this.check();
    const key = rangeKey(blockId, offset, bytes.length);
    // a range of a block id never changes, so an entry that is there stays
    if (this.ledger.get(blockId) && this.exists(key)) {
      this.ledger.touch(blockId, this.now());
      return;
    }
    if (this.lowDisk) {
      // the disk is (nearly) full: a failed commit would stop every later write (see minFreeBytes)
      this.onWriteSkipped?.(bytes.length);
      return;
    }
    if (this.pending + bytes.length > this.maxPending) {
      // the disk is behind: hold no more in memory; this range is fetched again when next needed
      this.onWriteSkipped?.(bytes.length);
      return;
    }
    const copy = Buffer.from(bytes);
    this.overlay.set(key, copy);
    let keys = this.pendingByBlock.get(blockId);
    if (!keys) {
      keys = new Set();
      this.pendingByBlock.set(blockId, keys);
    }
    keys.add(key);
    this.pending += copy.length;
    const fresh = !this.ledger.get(blockId);
    const charge = lmdbEntryCharge(Buffer.byteLength(key), copy.length, this.pageSize);
    this.write(
      this.ranges.put(key, copy),
      () => {
        this.pending -= copy.length;
        if (this.overlay.get(key) === copy) this.overlay.delete(key);
        const ks = this.pendingByBlock.get(blockId);
        if (ks) {
          ks.delete(key);
          if (ks.size === 0) this.pendingByBlock.delete(blockId);
        }
      },
      () => {
        // not stored (its commit failed): not charged either, so the budget stays what is on disk
        const unit = this.ledger.get(blockId);
        if (unit && unit.charge >= charge) this.ledger.charge(blockId, -charge, this.now());
      },
    );
    const u = this.ledger.charge(blockId, charge + (fresh ? BLOCK_ROW_CHARGE : 0), this.now());
    this.persistRow(blockId, u);
    this.evict();
  }

  deleteRange(blockId: string, offset: number, length: number): void {
    this.check();
    const key = rangeKey(blockId, offset, length);
    if (!this.ledger.get(blockId) || !this.exists(key)) return;
    this.remove(key);
    this.pendingByBlock.get(blockId)?.delete(key);
    const u = this.ledger.charge(blockId, -lmdbEntryCharge(Buffer.byteLength(key), length, this.pageSize), this.now());
    this.persistRow(blockId, u);
  }

  dropBlock(blockId: string): void {
    this.check();
    const u = this.ledger.remove(blockId);
    this.dropRanges(blockId, u?.objectKey ?? '');
  }

  /**
   * Waits for every write made so far to commit, and for the disk flush of the last commit; throws
   * the first write that failed since the last flush. After a commit that failed (a full disk),
   * lmdb's `flushed` (and its close) wait for that commit's flush, which never comes, until a later
   * commit succeeds; its later commits do succeed once there is room again. So when the last
   * commit failed, flush first makes one that changes nothing (the schema row, rewritten).
   */
  async flush(): Promise<void> {
    const settle = async (): Promise<void> => {
      while (this.inCommit.size > 0) await Promise.allSettled([...this.inCommit]);
    };
    await settle();
    if (this.lastCommitFailed) {
      this.write(this.meta.put('schema', CACHE_SCHEMA));
      await settle();
    }
    if (!this.lastCommitFailed) await this.env.flushed;
    if (this.writeError !== null) {
      const err = this.writeError;
      this.writeError = null;
      throw new StrataError(ErrorCode.STORAGE, `writing the LMDB cache: ${(err as Error).message}`, { cause: err });
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    clearInterval(this.diskTimer);
    try {
      await bounded(this.flush(), CLOSE_WAIT_MS, 'flushing the LMDB cache');
    } finally {
      this.closed = true;
      // while the disk is still full, lmdb's close waits for the flush of a failed commit, which
      // never comes (see flush): give up waiting (the process is ending; LMDB's file stays consistent)
      await bounded(this.env.close(), CLOSE_WAIT_MS, 'closing the LMDB cache');
      // LMDB closed the file (a failed commit leaves it consistent): the next open need not walk it
      try {
        markClosedCleanly(this.dir);
      } catch (err) {
        throw new StrataError(ErrorCode.STORAGE, `recording the clean close of the LMDB cache in ${this.dir}: ${(err as Error).message}`, { cause: err });
      }
    }
  }

  /** Notes the free space of the cache's file system (see minFreeBytes). */
  private noteFree(free: number): void {
    const low = free < this.minFreeBytes;
    if (low === this.lowDisk) return;
    this.lowDisk = low;
    this.onLowDisk?.(low, free);
  }

  /** Pages LMDB uses for the cache tables (for checks against the budget). */
  lmdbBytes(): number {
    let pages = 0;
    for (const db of [this.ranges, this.pointerRows, this.blockRows]) {
      const s = db.getStats() as { treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number };
      pages += s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages;
    }
    return pages * this.pageSize;
  }

  private exists(key: string): boolean {
    const pending = this.overlay.get(key);
    if (pending !== undefined) return pending !== null;
    return this.ranges.doesExist(key);
  }

  private remove(key: string): void {
    this.overlay.set(key, null);
    this.write(this.ranges.remove(key), () => {
      if (this.overlay.get(key) === null) this.overlay.delete(key);
    });
  }

  /** Removes a block's ranges (committed and pending), its row, and the pointer to it. */
  private dropRanges(blockId: string, objectKey: string): void {
    const keys = new Set<string>(this.pendingByBlock.get(blockId) ?? []);
    this.pendingByBlock.delete(blockId);
    for (const k of this.ranges.getKeys({ start: `${blockId}/`, end: `${blockId}0` })) keys.add(k);
    for (const k of keys) this.remove(k);
    this.write(this.blockRows.remove(blockId));
    if (objectKey !== '' && this.pointers.get(objectKey)?.blockId === blockId) {
      this.pointers.delete(objectKey);
      this.write(this.pointerRows.remove(objectKey));
    }
  }

  /** Marks a cached block used now; its row is rewritten at most every ATIME_PERSIST_MS. */
  private touchUnit(blockId: string, u: LedgerUnit): void {
    const now = this.now();
    this.ledger.touch(blockId, now);
    if (now - u.persistedAtimeMs >= ATIME_PERSIST_MS) this.persistRow(blockId, u);
  }

  private persistRow(blockId: string, u: LedgerUnit): void {
    u.persistedAtimeMs = u.atimeMs;
    this.write(this.blockRows.put(blockId, encodeBlockRow(u)));
  }

  private evict(): void {
    for (const [id, u] of this.ledger.takeVictims()) {
      this.dropRanges(id, u.objectKey);
      this.onEvict?.(id, u.charge);
    }
  }

  /** Tracks an asynchronous write: its failure is kept for flush(); `done` runs either way, then `failed` on a failure. */
  private write(p: Promise<unknown>, done?: () => void, failed?: () => void): void {
    this.inCommit.add(p);
    p.then(
      () => {
        this.inCommit.delete(p);
        this.lastCommitFailed = false;
        done?.();
      },
      (err: unknown) => {
        this.inCommit.delete(p);
        this.lastCommitFailed = true;
        failed?.();
        this.writeError ??= err;
        // lmdb rejects a failed commit's writes with an error whose `commitError` is a promise it
        // rejects too (with the cause, ENOSPC on a full disk); unhandled, that rejection ended the
        // process. The cause is the same as the write's: kept the same way.
        const commit = (err as { commitError?: unknown } | null)?.commitError;
        if (commit instanceof Promise) commit.catch(() => undefined);
        this.onWriteFailed?.(err);
        done?.();
      },
    );
  }

  private check(): void {
    if (this.closed) throw new RangeError('cache store is closed');
  }
}
