/**
 * All write-ahead logs of one aggregator: where they live on disk, which one takes the writes of a
 * (tenant, shard, window), recovery at start-up, and a cap on how many LevelDB databases are open.
 *
 * ```
 * <walDir>/wal/<tenant>/<windowStart, 16 digits>/<shard, 5 digits>-<generation, 6 digits>/   one LevelDB
 * <walDir>/trash/                                                                               logs being deleted
 * ```
 *
 * Per (tenant, shard, window) there are zero or more sealed generations (waiting to be flushed,
 * oldest first) and at most one open generation (the newest), which takes the writes.
 */
import { existsSync } from 'node:fs';
import { lstat, readdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import type { Logger } from 'pino';
import { ErrorCode, StrataError } from '../errors.js';
import { mkdirDurable } from '../common/durable-fs.js';
import { IncompleteWalError, WalDb, type WalDbOptions } from './wal-db.js';

/** A use of a WAL taken from the store; `release()` gives it back (once; later calls do nothing). */
export interface WalUse {
  readonly wal: WalDb;
  release(): void;
}

/** Names one (tenant, shard, window). */
export interface WindowKey {
  readonly tenant: string;
  readonly shard: number;
  readonly windowStart: bigint;
}

/** The logs of one (tenant, shard, window), oldest generation first. */
export interface WindowWals {
  readonly key: WindowKey;
  readonly id: string;
  readonly gens: WalDb[];
}

/** Options of a {@link WalStore}. */
export interface WalStoreOptions {
  readonly dir: string;
  readonly numShards: number;
  readonly blockDurationMs: number;
  readonly maxOpen: number;
  readonly db: WalDbOptions;
  readonly now: () => number;
  readonly logger: Logger;
}

/** `tenant/window/shard`, the map key and log field of a window. */
export function windowId(k: WindowKey): string {
  return `${k.tenant}/${k.windowStart}/${k.shard}`;
}

const GEN_DIR = /^(\d{5})-(\d{6})$/;
/** The WAL directory's disk usage is measured at most this often (the counted bytes fill the gaps). */
const DISK_MEASURE_EVERY_MS = 1000;

/** What the WALs take on disk and what their file system has left. */
export interface WalDiskUsage {
  /** Bytes of every file under walDir (allocated blocks: LevelDB's logs, tables, manifests, trash). */
  readonly usedBytes: number;
  /** Bytes free for an unprivileged writer on walDir's file system. */
  readonly freeBytes: number;
}

/** True for a disk-full error, from Node (ENOSPC) or from LevelDB (its message). */
export function isNoSpace(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 5; e = (e as Error).cause, depth++) {
    if ((e as NodeJS.ErrnoException).code === 'ENOSPC' || /no space left on device/i.test(String((e as Error).message))) return true;
  }
  return false;
}

/** The message of an error and of its causes (LevelDB's reason is in the cause of "failed to open"). */
export function fullMessage(err: unknown): string {
  const parts: string[] = [];
  for (let e = err, depth = 0; e && depth < 5; e = (e as Error).cause, depth++) parts.push(String((e as Error).message ?? e));
  return parts.join(': ');
}

/** Bytes of LevelDB logs under `dir`: what reopening it writes into new tables. */
async function logBytesUnder(dir: string): Promise<number> {
  let total = 0;
  for (const name of await readdir(dir, { recursive: true })) {
    if (!name.endsWith('.log')) continue;
    try {
      total += (await lstat(join(dir, name))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return total;
}

/** The start-up error of a WAL that cannot be opened on a full disk: what to free, exactly. */
async function noSpaceAtStart(dir: string, walRoot: string, walDir: string, err: unknown): Promise<StrataError> {
  // every WAL not opened yet replays its logs: what they hold is what start-up still has to write
  const need = (await logBytesUnder(walRoot)) + REOPEN_MARGIN_BYTES;
  const fs = await statfs(walDir);
  const free = fs.bavail * fs.bsize;
  return new StrataError(
    ErrorCode.STORAGE,
    `cannot open WAL ${dir}: the disk of walDir is full (${fullMessage(err)}). Opening a WAL replays its LevelDB logs into tables: ` +
      `free at least ${need - free > 0 ? need - free : need} bytes on the file system of ${walDir} (${free} bytes free now, ${need} needed), then start again; nothing is lost meanwhile`,
  );
}
/** Beyond the logs' bytes, what reopening a LevelDB writes (manifest, new log, LOG lines). */
const REOPEN_MARGIN_BYTES = 1024 * 1024;

/** Allocated bytes of every file under `dir` (0 when it does not exist), leaving out the directory `skip`. */
async function diskBytesUnder(dir: string, ...skip: string[]): Promise<number> {
  let total = 0;
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  for (const name of names) {
    const p = join(dir, name);
    if (skip.includes(p)) continue;
    let st;
    try {
      st = await lstat(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // deleted meanwhile
      throw err;
    }
    total += st.isDirectory() ? await diskBytesUnder(p) : st.blocks * 512;
  }
  return total;
}

/** Thrown to a writer waiting for a WAL slot when the store stops taking new logs (shutdown). */
/**
 * Takes walDir for this process: two aggregators on one walDir would write the same window's
 * logs (an empty walDir let the second start and answer UNAVAILABLE "EEXIST" for ever; a full one
 * stopped it with LevelDB's bare "lock ... Resource temporarily unavailable"). The lock is a tiny
 * LevelDB of its own at `<walDir>/lock`, whose LOCK file LevelDB holds with an fcntl lock: the
 * kernel lets it go when the process dies, kill -9 included, so no stale lock is ever left.
 */
async function lockWalDir(dir: string, walRoot: string): Promise<ClassicLevel> {
  const path = join(dir, 'lock');
  const db = new ClassicLevel(path);
  try {
    await db.open();
  } catch (err) {
    if (isNoSpace(err)) throw await noSpaceAtStart(path, walRoot, dir, err);
    const cause = (err as { cause?: unknown }).cause;
    const why = cause instanceof Error ? cause.message : (err as Error).message;
    if (/temporarily unavailable|already held/i.test(why)) {
      throw new StrataError(ErrorCode.CONFIG, `walDir ${dir} is in use by another aggregator (it holds ${join(dir, 'lock', 'LOCK')}): each aggregator needs a walDir of its own`, { cause: err });
    }
    throw new StrataError(ErrorCode.CONFIG, `cannot take walDir ${dir}: ${why}`, { cause: err });
  }
  return db;
}

export class WalStoreStopping extends Error {
  override readonly name = 'WalStoreStopping';
  constructor() {
    super('the WAL store is stopping: no log is opened for writing any more');
  }
}

/** See the module comment. */
export class WalStore {
  private readonly opts: WalStoreOptions;
  private readonly windows = new Map<string, WindowWals>();
  private readonly creating = new Map<string, Promise<WalDb>>();
  private readonly walRoot: string;
  private readonly trash: string;
  /** Held while the store is open: see {@link lockWalDir}. */
  private lock: ClassicLevel | null = null;
  private closed = false;
  /** Slots reserved by callers opening a log taking writes (see acquireWritable). */
  private reserved = 0;
  private slotWaiters: (() => void)[] = [];
  /** Set by {@link refuseWaiters}: callers waiting for a slot, and new ones, get WalStoreStopping. */
  private refusing = false;
  /** Counts {@link wake} calls: a waiter that saw it change while it looked does not park. */
  private wakeups = 0;
  private disk: { used: number; free: number; counted: number; at: number } | null = null;
  private measuring: Promise<void> | null = null;
  /** Allocated bytes of each log's directory, with the log's diskStamp when it was measured. */
  private readonly logBytes = new WeakMap<WalDb, { stamp: number; bytes: number }>();
  private syncsGone = 0;
  private requestsGone = 0;

  private constructor(opts: WalStoreOptions) {
    this.opts = opts;
    this.walRoot = join(opts.dir, 'wal');
    this.trash = join(opts.dir, 'trash');
  }

  /** Opens the store: sweeps the trash, finds and opens every log, seals stray open ones. */
  static async open(opts: WalStoreOptions): Promise<WalStore> {
    const store = new WalStore(opts);
    try {
      await mkdirDurable(opts.dir);
    } catch (err) {
      const notDir = ['EEXIST', 'ENOTDIR'].includes((err as NodeJS.ErrnoException).code ?? '');
      throw new StrataError(notDir ? ErrorCode.CONFIG : ErrorCode.STORAGE, `creating walDir ${opts.dir}: ${(err as Error).message}`, { cause: err });
    }
    store.lock = await lockWalDir(opts.dir, store.walRoot);
    try {
      await rm(store.trash, { recursive: true, force: true });
      await store.recover();
      await store.measureDisk();
    } catch (err) {
      await store.close();
      throw err;
    }
    return store;
  }

  private dirOf(k: WindowKey, generation: number): string {
    return join(this.walRoot, k.tenant, k.windowStart.toString().padStart(16, '0'), `${String(k.shard).padStart(5, '0')}-${String(generation).padStart(6, '0')}`);
  }

  private async recover(): Promise<void> {
    const log = this.opts.logger;
    if (!existsSync(this.walRoot)) return;
    for (const tenant of await readdir(this.walRoot)) {
      const tdir = join(this.walRoot, tenant);
      for (const win of await readdir(tdir)) {
        const wdir = join(tdir, win);
        const entries = await readdir(wdir);
        if (entries.length === 0) {
          await rm(wdir, { recursive: true, force: true });
          continue;
        }
        for (const name of entries) {
          const dir = join(wdir, name);
          const m = GEN_DIR.exec(name);
          if (!/^\d{16}$/.test(win) || !m) {
            log.warn({ dir }, 'ignoring unexpected entry in the wal directory');
            continue;
          }
          let w: WalDb;
          try {
            w = await WalDb.open(dir, this.opts.db);
          } catch (err) {
            if (err instanceof IncompleteWalError) {
              log.warn({ dir, err: err.message }, 'removing a wal whose creation was interrupted');
              await rm(dir, { recursive: true, force: true });
              continue;
            }
            if (isNoSpace(err)) throw await noSpaceAtStart(dir, this.walRoot, this.opts.dir, err);
            throw err;
          }
          const id = w.identity;
          if (id.tenant !== tenant || id.windowStart.toString().padStart(16, '0') !== win || id.shard !== Number(m[1]) || id.generation !== Number(m[2])) {
            await w.close();
            throw new StrataError(ErrorCode.CORRUPT, `WAL ${dir} holds the identity of ${id.tenant}/${id.windowStart}/${id.shard} generation ${id.generation}`);
          }
          if (id.numShards !== this.opts.numShards) {
            await w.close();
            throw new StrataError(
              ErrorCode.CONFIG,
              `WAL ${dir} was written with numShards ${id.numShards} but the config says ${this.opts.numShards}; flush it with the old setting first`,
            );
          }
          if (id.windowEnd - id.windowStart !== BigInt(this.opts.blockDurationMs)) {
            await w.close();
            throw new StrataError(ErrorCode.CONFIG, `WAL ${dir} was written with a block duration of ${id.windowEnd - id.windowStart} ms, the config says ${this.opts.blockDurationMs}`);
          }
          const key = { tenant: id.tenant, shard: id.shard, windowStart: id.windowStart };
          this.entry(key).gens.push(w);
          w.lastUsedMs = this.opts.now();
          await this.enforceOpenLimit();
        }
      }
    }
    for (const ww of this.windows.values()) {
      ww.gens.sort((a, b) => a.identity.generation - b.identity.generation);
      // only the newest generation may take writes, and never one of the version-1 layout
      for (const w of ww.gens) if (!w.sealed && (w !== ww.gens.at(-1) || w.legacy)) await w.seal(this.opts.now());
      log.info(
        { window: ww.id, generations: ww.gens.map((g) => g.identity.generation), samples: ww.gens.reduce((n, g) => n + g.counters.samples, 0) },
        'recovered wal',
      );
    }
    await this.enforceOpenLimit();
  }

  private entry(key: WindowKey): WindowWals {
    const id = windowId(key);
    let ww = this.windows.get(id);
    if (!ww) {
      ww = { key, id, gens: [] };
      this.windows.set(id, ww);
    }
    return ww;
  }

  /** The log that takes writes for `key`, or null. */
  openGen(key: WindowKey): WalDb | null {
    const last = this.windows.get(windowId(key))?.gens.at(-1);
    return last && !last.sealed ? last : null;
  }

  /**
   * The log taking writes for `key`, creating it if needed, open and with a writer's use taken:
   * give it back with the returned use's `release()`. It is not sealed when returned.
   *
   * At most `maxOpen` logs taking writes are open at once: when that many are open and none is
   * idle, this waits until one is given back. A caller holds at most one at a time, so waiting
   * cannot deadlock.
   */
  async acquireWritable(key: WindowKey): Promise<WalUse> {
    for (;;) {
      if (this.closed) throw new RangeError('the WAL store is closed');
      let w = this.openGen(key);
      const reserve = !w || !w.isOpen;
      if (reserve) await this.reserveSlot();
      let use: WalUse;
      try {
        // the open generation changed while this waited for a slot: sealed (and maybe handed to a
        // flush), not to be opened for writing again; or made by another writer, which must take
        // this write too (a second open generation would never be sealed or flushed): the next
        // turn takes whichever is open now
        if (this.openGen(key) !== w) continue;
        if (!w) w = await this.create(key);
        use = this.take(w, 'writer');
        try {
          await w.ensureOpen();
        } catch (err) {
          use.release();
          throw err;
        }
      } finally {
        if (reserve) {
          this.reserved--;
          this.wake();
        }
      }
      if (!w.sealed) {
        void this.enforceOpenLimit().catch((err: unknown) => this.opts.logger.error({ err }, 'closing idle wal databases'));
        return use;
      }
      use.release(); // sealed while it was being opened: take the next generation
    }
  }

  /** Logs taking writes that are open, plus slots reserved by callers opening one. */
  private writeOpen(): number {
    let n = this.reserved;
    for (const ww of this.windows.values()) for (const w of ww.gens) if (w.isOpen && !w.sealed) n++;
    return n;
  }

  /** Waits until one more log taking writes may be opened, and reserves that slot. */
  private async reserveSlot(): Promise<void> {
    for (;;) {
      if (this.closed) throw new RangeError('the WAL store is closed');
      if (this.refusing) throw new WalStoreStopping();
      const seen = this.wakeups;
      const open = this.writeOpen();
      if (open < this.opts.maxOpen) {
        this.reserved++;
        // wake-ups go to one waiter at a time: pass it on while slots are left
        if (this.slotWaiters.length > 0 && open + 1 < this.opts.maxOpen) this.wake();
        return;
      }
      if (await this.closeIdle(1)) continue;
      // a log given back (or sealed, or a slot freed) while closeIdle looked woke nobody: this
      // was not parked yet, and would wait for the next wake-up, which a quiet store never sends
      if (this.wakeups !== seen) continue;
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    }
  }

  /**
   * Wakes the first caller waiting for a slot (it checks again, and wakes the next one when it
   * got a slot and another is free). Waking every waiter at each slot given back made each of
   * them scan every window: with thousands of windows and hundreds of writes waiting, the main
   * thread spent its time there, and a 1-sample write took 16 s to a minute.
   */
  private wake(): void {
    this.wakeups++;
    this.slotWaiters.shift()?.();
  }

  /**
   * Shutdown: the callers waiting for a slot to open a log, and those that come after, throw
   * {@link WalStoreStopping} (logs already open keep taking writes). Whether any was waiting.
   */
  refuseWaiters(): boolean {
    this.refusing = true;
    const any = this.slotWaiters.length > 0;
    this.wakeAll();
    return any;
  }

  /** Wakes every waiter (the store closes, or refuses them: they all throw). */
  private wakeAll(): void {
    this.wakeups++;
    const ws = this.slotWaiters;
    this.slotWaiters = [];
    for (const w of ws) w();
  }

  private create(key: WindowKey): Promise<WalDb> {
    const id = windowId(key);
    let p = this.creating.get(id);
    if (!p) {
      p = (async () => {
        const ww = this.entry(key);
        const generation = (ww.gens.at(-1)?.identity.generation ?? 0) + 1;
        const w = await WalDb.create(
          this.dirOf(key, generation),
          {
            tenant: key.tenant,
            shard: key.shard,
            numShards: this.opts.numShards,
            windowStart: key.windowStart,
            windowEnd: key.windowStart + BigInt(this.opts.blockDurationMs),
            generation,
            createdAtMs: this.opts.now(),
          },
          this.opts.db,
        );
        w.lastUsedMs = this.opts.now();
        ww.gens.push(w);
        this.opts.logger.debug({ window: id, generation }, 'created wal');
        return w;
      })().finally(() => this.creating.delete(id));
      this.creating.set(id, p);
    }
    return p;
  }

  /** A plain use of `w` (flushes): it stays open until the use is released. */
  use(w: WalDb): WalUse {
    return this.take(w, 'reader');
  }

  private take(w: WalDb, as: 'writer' | 'reader'): WalUse {
    const use = w.acquire(as);
    return {
      wal: w,
      release: () => {
        use.release(this.opts.now());
        this.wake();
      },
    };
  }

  /** Seals the open generation of `key`, if any. */
  async sealOpen(key: WindowKey): Promise<void> {
    const w = this.openGen(key);
    if (!w) return;
    try {
      await w.seal(this.opts.now());
    } finally {
      this.wake(); // a sealed log no longer counts against maxOpen
    }
    // a sealed log is not written again and its flush opens it when it runs: closed now when more
    // than maxOpen are open (sealing every idle window of a long backlog at once otherwise kept
    // thousands of databases open, 4-5 descriptors each, until their flushes)
    await this.enforceOpenLimit().catch((err: unknown) => this.opts.logger.error({ err }, 'closing idle wal databases'));
  }

  /** The logs of `key` (oldest first); empty when it has none. */
  gens(key: WindowKey): readonly WalDb[] {
    return this.windows.get(windowId(key))?.gens ?? [];
  }

  /** Every window with logs. */
  all(): WindowWals[] {
    return [...this.windows.values()];
  }

  /**
   * What the logs of `tenant` take on disk, as {@link diskUsage} counts the whole store: each
   * log's last measured size (or its run bytes when larger or not measured yet) plus one write
   * buffer per log open for writes.
   */
  tenantBytes(tenant: string): number {
    let n = 0;
    for (const ww of this.windows.values()) {
      if (ww.key.tenant !== tenant) continue;
      for (const w of ww.gens) {
        n += Math.max(w.counters.bytes, this.logBytes.get(w)?.bytes ?? 0);
        if (w.isOpen && !w.sealed) n += this.opts.db.writeBufferBytes;
      }
    }
    return n;
  }

  /** Bytes of run keys and values in every log. */
  totalBytes(): number {
    let n = 0;
    for (const ww of this.windows.values()) for (const w of ww.gens) n += w.counters.bytes;
    return n;
  }

  /**
   * What the WALs take on disk: the last measurement of walDir (at most
   * {@link DISK_MEASURE_EVERY_MS} old, refreshed in the background) plus the run bytes written
   * since, plus one write buffer per open log taking writes (a memtable being written out lives
   * in its log and in its new table at once). This is what LevelDB really writes, temporary
   * files included, so a quota or a free-space floor checked against it holds on the disk.
   */
  diskUsage(): WalDiskUsage {
    const counted = this.totalBytes();
    if (!this.disk || performance.now() - this.disk.at >= DISK_MEASURE_EVERY_MS) void this.measureDisk().catch((err: unknown) => this.opts.logger.warn({ err }, 'cannot measure the wal directory'));
    const d = this.disk ?? { used: counted, free: Number.MAX_SAFE_INTEGER, counted, at: 0 };
    const grown = Math.max(0, counted - d.counted) + this.writeOpen() * this.opts.db.writeBufferBytes;
    return { usedBytes: Math.max(counted, d.used + grown), freeBytes: Math.max(0, d.free - grown) };
  }

  /**
   * Measures walDir now (single flight): the directory of every log that changed since it was
   * last measured (see WalDb.diskStamp), and everything under walDir outside the logs' tree (the
   * trash, flush work files). A store of thousands of sealed logs waiting for their flush then
   * costs a walk of the few logs in use, not of every file (which made each flush, and each
   * refresh, take seconds once thousands of windows waited).
   */
  measureDisk(): Promise<void> {
    this.measuring ??= (async () => {
      const counted = this.totalBytes();
      const logs = [...this.windows.values()].flatMap((ww) => ww.gens);
      const [outside, fs, ...each] = await Promise.all([diskBytesUnder(this.opts.dir, this.walRoot, join(this.opts.dir, 'lock')), statfs(this.opts.dir), ...logs.map((w) => this.logDiskBytes(w))]);
      let used = outside;
      for (const b of each) used += b;
      this.disk = { used, free: fs.bavail * fs.bsize, counted, at: performance.now() };
    })().finally(() => {
      this.measuring = null;
    });
    return this.measuring;
  }

  /** Allocated bytes of a log's directory: measured again only when it may have changed. */
  private async logDiskBytes(w: WalDb): Promise<number> {
    const stamp = w.diskStamp;
    const known = this.logBytes.get(w);
    if (stamp !== null && known?.stamp === stamp) return known.bytes;
    const bytes = await diskBytesUnder(w.dir);
    // a stamp taken before the walk: a change during it moves the stamp, and the next measure walks again
    if (stamp !== null) this.logBytes.set(w, { stamp, bytes });
    return bytes;
  }

  /** Synced group writes and the requests they carried, over every log this store had. */
  syncTotals(): { syncs: number; requests: number } {
    let syncs = this.syncsGone;
    let requests = this.requestsGone;
    for (const ww of this.windows.values()) {
      for (const w of ww.gens) {
        syncs += w.syncs;
        requests += w.requests;
      }
    }
    return { syncs, requests };
  }

  /** Deletes a flushed log and forgets it. */
  async remove(w: WalDb): Promise<void> {
    this.syncsGone += w.syncs;
    this.requestsGone += w.requests;
    w.resetSyncCounts();
    const key = { tenant: w.identity.tenant, shard: w.identity.shard, windowStart: w.identity.windowStart };
    let cleanup: unknown = null;
    try {
      await w.destroy(this.trash);
    } catch (err) {
      // once the log has left its directory (renamed into the trash) it is gone for the store:
      // a failure after that (fsync, removing its files) must not keep it listed, where every
      // later flush of the window would try to open it again and fail until a restart.
      // Start-up empties the trash.
      if (existsSync(w.dir)) throw err;
      cleanup = err;
    }
    // measured before the log is forgotten: what the quota sees shrinks at once, and nothing
    // waits between the log leaving the store and the caller recording its flush
    await this.measureDisk().catch((err: unknown) => (cleanup ??= err));
    if (cleanup !== null) this.opts.logger.warn({ err: cleanup, dir: w.dir, trash: this.trash }, 'a flushed wal left its directory, but cleaning up after it failed; start-up empties the trash');
    const id = windowId(key);
    const ww = this.windows.get(id);
    if (!ww) return;
    const i = ww.gens.indexOf(w);
    if (i >= 0) ww.gens.splice(i, 1);
    if (ww.gens.length === 0 && !this.creating.has(id)) this.windows.delete(id);
    this.wake();
  }

  /** Closes least recently used idle logs while more than `maxOpen` are open. */
  private async enforceOpenLimit(): Promise<void> {
    let open = 0;
    for (const ww of this.windows.values()) for (const w of ww.gens) if (w.isOpen) open++;
    const excess = open - this.opts.maxOpen;
    if (excess > 0) await this.closeIdle(excess);
  }

  /**
   * Closes up to `n` idle open logs, least recently used first; how many it closed. One pass over
   * the windows for the usual n = 1 (a writer waiting for a slot), no sort of every log.
   */
  private async closeIdle(n: number): Promise<number> {
    let closed = 0;
    const idle: WalDb[] = [];
    let lru = -1;
    for (const ww of this.windows.values()) {
      for (const w of ww.gens) {
        if (!w.isOpen || w.users !== 0) continue;
        if (lru < 0 || w.lastUsedMs < idle[lru]!.lastUsedMs) lru = idle.length;
        idle.push(w);
      }
    }
    if (lru < 0) return 0;
    // the least recently used first; the others in order only when more are needed, or it would not close
    if (await idle[lru]!.closeIfIdle()) closed++;
    if (closed < n) {
      idle.splice(lru, 1);
      idle.sort((a, b) => a.lastUsedMs - b.lastUsedMs);
      for (const w of idle) {
        if (closed >= n) break;
        if (await w.closeIfIdle()) closed++;
      }
    }
    if (closed > 0) this.wake();
    return closed;
  }

  /** Open LevelDB databases over every log (writable segments and segments being read). */
  openDatabases(): number {
    let n = 0;
    for (const ww of this.windows.values()) for (const w of ww.gens) n += w.openDatabases;
    return n;
  }

  /** Closes every database (after pending groups are written). */
  async close(): Promise<void> {
    this.closed = true;
    this.wakeAll();
    await Promise.allSettled([...this.creating.values()]);
    for (const ww of this.windows.values()) for (const w of ww.gens) await w.close();
    await this.lock?.close();
    this.lock = null;
  }
}
