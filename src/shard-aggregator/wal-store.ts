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
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ErrorCode, StrataError } from '../errors.js';
import { IncompleteWalError, WalDb, type WalDbOptions } from './wal-db.js';

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

/** See the module comment. */
export class WalStore {
  private readonly opts: WalStoreOptions;
  private readonly windows = new Map<string, WindowWals>();
  private readonly creating = new Map<string, Promise<WalDb>>();
  private readonly walRoot: string;
  private readonly trash: string;
  private closed = false;
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
    await rm(store.trash, { recursive: true, force: true });
    await store.recover();
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
      // only the newest generation may take writes
      for (const w of ww.gens.slice(0, -1)) if (!w.sealed) await w.seal(this.opts.now());
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
   * The log taking writes for `key`, creating it if needed, open and with a use taken: call
   * {@link release} when done. It is not sealed when returned.
   */
  async acquireWritable(key: WindowKey): Promise<WalDb> {
    for (;;) {
      if (this.closed) throw new RangeError('the WAL store is closed');
      let w = this.openGen(key);
      if (!w) w = await this.create(key);
      w.acquireWriter();
      try {
        await w.ensureOpen();
      } catch (err) {
        w.releaseWriter(this.opts.now());
        throw err;
      }
      if (!w.sealed) {
        void this.enforceOpenLimit().catch((err: unknown) => this.opts.logger.error({ err }, 'closing idle wal databases'));
        return w;
      }
      w.releaseWriter(this.opts.now()); // sealed while it was being opened: take the next generation
    }
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

  /** Gives back the writer's use of `w` taken by {@link acquireWritable}. */
  releaseWritable(w: WalDb): void {
    w.releaseWriter(this.opts.now());
  }

  /** Gives back a plain use of `w` (flushes). */
  release(w: WalDb): void {
    w.release(this.opts.now());
  }

  /** Seals the open generation of `key`, if any. */
  async sealOpen(key: WindowKey): Promise<void> {
    const w = this.openGen(key);
    if (w) await w.seal(this.opts.now());
  }

  /** The logs of `key` (oldest first); empty when it has none. */
  gens(key: WindowKey): readonly WalDb[] {
    return this.windows.get(windowId(key))?.gens ?? [];
  }

  /** Every window with logs. */
  all(): WindowWals[] {
    return [...this.windows.values()];
  }

  /** Bytes of run keys and values in every log. */
  totalBytes(): number {
    let n = 0;
    for (const ww of this.windows.values()) for (const w of ww.gens) n += w.counters.bytes;
    return n;
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
    w.syncs = 0;
    w.requests = 0;
    const key = { tenant: w.identity.tenant, shard: w.identity.shard, windowStart: w.identity.windowStart };
    await w.destroy(this.trash);
    const id = windowId(key);
    const ww = this.windows.get(id);
    if (!ww) return;
    const i = ww.gens.indexOf(w);
    if (i >= 0) ww.gens.splice(i, 1);
    if (ww.gens.length === 0 && !this.creating.has(id)) this.windows.delete(id);
  }

  /** Closes least recently used idle databases while more than `maxOpen` are open. */
  private async enforceOpenLimit(): Promise<void> {
    const open = [...this.windows.values()].flatMap((ww) => ww.gens).filter((w) => w.isOpen);
    let excess = open.length - this.opts.maxOpen;
    if (excess <= 0) return;
    const idle = open.filter((w) => w.users === 0).sort((a, b) => a.lastUsedMs - b.lastUsedMs);
    for (const w of idle) {
      if (excess <= 0) break;
      if (await w.closeIfIdle()) excess--;
    }
  }

  /** Closes every database (after pending groups are written). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.creating.values()]);
    for (const ww of this.windows.values()) for (const w of ww.gens) await w.close();
  }
}
