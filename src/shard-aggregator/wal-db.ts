/**
 * One write-ahead log: a LevelDB database (classic-level) holding the samples of one generation of
 * one (tenant, shard, window) until they are in the block. Key/value schema: docs/format/wal.md.
 *
 * LevelDB is used as a buffer that is read once, in key order, when the block is built, then
 * deleted; nothing is ever updated or deleted inside it, so with large write buffers it does
 * (almost) no compaction work.
 *
 * Group commit: `append` adds a request's entries to the pending group and resolves once the group
 * that carries them was written with one synced (fsync) LevelDB batch. While one group is being
 * written, the next one collects every request that arrives meanwhile.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { CorruptionError } from '../errors.js';
import {
  decodeCounters,
  decodeIdentity,
  decodeRunKey,
  decodeRunValue,
  decodeSealed,
  EMPTY_COUNTERS,
  encodeCounters,
  encodeIdentity,
  encodeRunKey,
  encodeRunValue,
  encodeSealed,
  META_COUNTERS,
  META_IDENTITY,
  META_SEALED,
  metaKey,
  RUN_KEYS_GTE,
  RUN_KEYS_LT,
  type WalCounters,
  type WalIdentity,
} from './wal-codec.js';

/** Tuning of one WAL database. */
export interface WalDbOptions {
  /** LevelDB write buffer (memtable) size in bytes. */
  readonly writeBufferBytes: number;
  /** fsync every group (true: acknowledged writes survive power loss; false: only a process crash). */
  readonly sync: boolean;
  /** Called after every group write, for metrics. */
  readonly onCommit?: (requests: number, entries: number, durationMs: number) => void;
}

/** One request's run for {@link WalDb.append}. */
export interface WalEntry {
  readonly id: bigint;
  readonly run: Uint8Array;
  readonly samples: number;
}

/** The database is not complete enough to hold data (a crash interrupted its creation). */
export class IncompleteWalError extends Error {
  constructor(dir: string, what: string) {
    super(`WAL ${dir} is incomplete: ${what}`);
    this.name = 'IncompleteWalError';
  }
}

type Db = ClassicLevel<Buffer, Buffer>;
type PutOp = { type: 'put'; key: Buffer; value: Buffer };

/** Bytes the flush's iterator reads ahead. */
const READ_AHEAD_BYTES = 4 * 1024 * 1024;

const KEY_IDENTITY = metaKey(META_IDENTITY);
const KEY_COUNTERS = metaKey(META_COUNTERS);
const KEY_SEALED = metaKey(META_SEALED);

/** fsyncs a directory so that entries created or removed in it are durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** See the module comment. */
export class WalDb {
  readonly dir: string;
  readonly identity: WalIdentity;
  private readonly opts: WalDbOptions;
  private db: Db | null = null;
  private opening: Promise<void> | null = null;
  private closing: Promise<void> | null = null;
  /** Counters of what is durable. */
  private durable: WalCounters;
  /** Counters including the pending group. */
  private next: WalCounters;
  private sealedAt: number | null;
  private ops: PutOp[] = [];
  private waiters: { resolve: () => void; reject: (err: unknown) => void }[] = [];
  private writing = false;
  private listeners: (() => void)[] = [];
  /** Writers and flushes currently using this log (it is not closed while > 0). */
  users = 0;
  /** Writers among them (a seal waits for them). */
  private writers = 0;
  /** Last time it was used (for closing idle databases). */
  lastUsedMs = 0;
  /** Synced group writes and the requests they carried, since this object was created. */
  syncs = 0;
  requests = 0;

  private constructor(dir: string, identity: WalIdentity, counters: WalCounters, sealedAt: number | null, opts: WalDbOptions) {
    this.dir = dir;
    this.identity = identity;
    this.durable = counters;
    this.next = counters;
    this.sealedAt = sealedAt;
    this.opts = opts;
  }

  private static db(dir: string, opts: WalDbOptions, create: boolean): Db {
    return new ClassicLevel<Buffer, Buffer>(dir, {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
      createIfMissing: create,
      errorIfExists: create,
      compression: false, // values are encoded runs already
      writeBufferSize: opts.writeBufferBytes,
      maxFileSize: Math.max(2 << 20, opts.writeBufferBytes),
      blockSize: 64 * 1024,
      cacheSize: 1 << 20,
      maxOpenFiles: 64,
    });
  }

  /** Creates a new, empty log at `dir` (which must not exist) and makes its creation durable. */
  static async create(dir: string, identity: WalIdentity, opts: WalDbOptions): Promise<WalDb> {
    const parent = dirname(dir);
    await mkdirDurable(parent);
    const db = WalDb.db(dir, opts, true);
    await db.open();
    try {
      await db.batch(
        [
          { type: 'put', key: KEY_IDENTITY, value: encodeIdentity(identity) },
          { type: 'put', key: KEY_COUNTERS, value: encodeCounters(EMPTY_COUNTERS) },
        ],
        { sync: true },
      );
      await fsyncDir(parent);
    } catch (err) {
      await db.close();
      throw err;
    }
    const w = new WalDb(dir, identity, EMPTY_COUNTERS, null, opts);
    w.db = db;
    return w;
  }

  /**
   * Opens an existing log and reads its identity, counters and seal.
   * @throws IncompleteWalError when its creation never finished (it holds no data: delete it).
   */
  static async open(dir: string, opts: WalDbOptions): Promise<WalDb> {
    if (!existsSync(join(dir, 'CURRENT'))) throw new IncompleteWalError(dir, 'no CURRENT file');
    const db = WalDb.db(dir, opts, false);
    await db.open();
    try {
      const idBytes = await db.get(KEY_IDENTITY);
      if (idBytes === undefined) {
        const any = await db.keys({ gte: RUN_KEYS_GTE, lt: RUN_KEYS_LT, limit: 1 }).all();
        if (any.length === 0) throw new IncompleteWalError(dir, 'no identity record');
        throw new CorruptionError(dir, 0, 'WAL holds runs but no identity record');
      }
      const identity = decodeIdentity(idBytes, { object: `${dir} (identity)`, offset: 0 });
      const cBytes = await db.get(KEY_COUNTERS);
      const counters = cBytes === undefined ? EMPTY_COUNTERS : decodeCounters(cBytes, { object: `${dir} (counters)`, offset: 0 });
      const sBytes = await db.get(KEY_SEALED);
      const sealedAt = sBytes === undefined ? null : decodeSealed(sBytes, { object: `${dir} (sealed)`, offset: 0 });
      const w = new WalDb(dir, identity, counters, sealedAt, opts);
      w.db = db;
      return w;
    } catch (err) {
      await db.close();
      throw err;
    }
  }

  /** Whether the LevelDB database is open. */
  get isOpen(): boolean {
    return this.db !== null;
  }

  /** Counters of what is durable. */
  get counters(): WalCounters {
    return this.durable;
  }

  /** When it was sealed (ms), or null while it takes writes. */
  get sealedAtMs(): number | null {
    return this.sealedAt;
  }

  /** True once sealed: no more appends. (Set before the marker is durable; see seal().) */
  get sealed(): boolean {
    return this.sealedAt !== null || this.sealing;
  }
  private sealing = false;

  /** Opens the database again after {@link close} (single flight). */
  async ensureOpen(): Promise<void> {
    if (this.closing) await this.closing.catch(() => undefined);
    if (this.db) return;
    this.opening ??= (async () => {
      const db = WalDb.db(this.dir, this.opts, false);
      await db.open();
      this.db = db;
    })().finally(() => {
      this.opening = null;
    });
    await this.opening;
  }

  /**
   * Adds runs to the pending group; resolves once they are durable. The caller holds a use
   * (`users`) and has checked that the log is open and not sealed.
   */
  append(entries: readonly WalEntry[], nowMs: number): Promise<void> {
    if (this.sealed) throw new RangeError(`WAL ${this.dir} is sealed`);
    if (!this.db) throw new RangeError(`WAL ${this.dir} is not open`);
    let { lastSeq, entries: count, samples, bytes } = this.next;
    for (const e of entries) {
      const key = encodeRunKey(e.id, ++lastSeq);
      const value = encodeRunValue(e.run);
      this.ops.push({ type: 'put', key, value });
      count++;
      samples += e.samples;
      bytes += key.length + value.length;
    }
    this.next = { lastSeq, entries: count, samples, bytes, lastWriteMs: Math.max(nowMs, this.next.lastWriteMs) };
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.kick();
    return done;
  }

  private kick(): void {
    if (this.writing || this.waiters.length === 0 || !this.db) return;
    const ops = this.ops;
    const waiters = this.waiters;
    const counters = this.next;
    const before = this.durable;
    this.ops = [];
    this.waiters = [];
    ops.push({ type: 'put', key: KEY_COUNTERS, value: encodeCounters(counters) });
    this.writing = true;
    const t0 = performance.now();
    this.db.batch(ops, { sync: this.opts.sync }).then(
      () => {
        this.durable = counters;
        this.syncs++;
        this.requests += waiters.length;
        this.opts.onCommit?.(waiters.length, ops.length - 1, performance.now() - t0);
        for (const w of waiters) w.resolve();
        this.afterWrite();
      },
      (err: unknown) => {
        // nothing of this group was written (a LevelDB batch is atomic): forget its counts
        this.next = {
          ...this.next,
          entries: this.next.entries - (counters.entries - before.entries),
          samples: this.next.samples - (counters.samples - before.samples),
          bytes: this.next.bytes - (counters.bytes - before.bytes),
        };
        for (const w of waiters) w.reject(err);
        this.afterWrite();
      },
    );
  }

  private afterWrite(): void {
    this.writing = false;
    this.kick();
    this.notify();
  }

  /** Gives back a use taken by a writer or a flush. */
  release(nowMs: number): void {
    this.users--;
    this.lastUsedMs = nowMs;
    this.notify();
  }

  private notify(): void {
    const ls = this.listeners;
    this.listeners = [];
    for (const l of ls) l();
  }

  private async until(done: () => boolean): Promise<void> {
    while (!done()) await new Promise<void>((resolve) => this.listeners.push(resolve));
  }

  /** True when no group is pending or being written. */
  private get quiet(): boolean {
    return !this.writing && this.waiters.length === 0;
  }


  /**
   * Seals the log: no appends from now on; once the writers in progress are done, the seal marker
   * is written (synced). Idempotent.
   */
  async seal(nowMs: number): Promise<void> {
    if (this.sealedAt !== null) return;
    this.sealing = true;
    this.sealP ??= (async () => {
      await this.until(() => this.writers === 0 && this.quiet);
      this.users++;
      try {
        await this.ensureOpen();
        await this.db!.put(KEY_SEALED, encodeSealed(nowMs), { sync: true });
        this.sealedAt = nowMs;
      } finally {
        this.release(nowMs);
      }
    })().finally(() => {
      this.sealP = null;
    });
    await this.sealP;
  }
  private sealP: Promise<void> | null = null;

  /** Takes a use as a writer (seal waits for writers; flushes only take plain uses). */
  acquireWriter(): void {
    this.users++;
    this.writers++;
  }

  /** Gives back a writer's use. */
  releaseWriter(nowMs: number): void {
    this.writers--;
    this.release(nowMs);
  }

  /**
   * Every series of the log in id order with its runs in sequence order (oldest first). The
   * caller holds a use while iterating.
   */
  async *series(): AsyncGenerator<{ id: bigint; runs: Uint8Array[] }> {
    await this.ensureOpen();
    // read ahead at most ~4 MiB: few native round trips, bounded memory whatever the runs' size
    const it = this.db!.iterator({ gte: RUN_KEYS_GTE, lt: RUN_KEYS_LT, fillCache: false, highWaterMarkBytes: READ_AHEAD_BYTES });
    try {
      let id: bigint | null = null;
      let runs: Uint8Array[] = [];
      let n = 0;
      for (;;) {
        const batch = await it.nextv(1024);
        if (batch.length === 0) break;
        for (const [k, v] of batch) {
          const origin = { object: `${this.dir} entry ${n++}`, offset: 0 };
          const key = decodeRunKey(k, origin);
          if (id !== null && key.id !== id) {
            yield { id, runs };
            runs = [];
          }
          id = key.id;
          runs.push(decodeRunValue(v, origin));
        }
      }
      if (id !== null) yield { id, runs };
    } finally {
      await it.close();
    }
  }

  /** Closes the database (after pending groups are written); it can be opened again. */
  async close(): Promise<void> {
    if (this.opening) await this.opening.catch(() => undefined);
    await this.until(() => this.quiet);
    await this.closeNow();
  }

  /** Closes the database unless someone uses it; false when it was in use (or not open). */
  async closeIfIdle(): Promise<boolean> {
    if (this.users > 0 || !this.quiet || this.opening || !this.db) return false;
    await this.closeNow();
    return true;
  }

  private async closeNow(): Promise<void> {
    const db = this.db;
    if (!db) return;
    this.db = null;
    this.closing = db.close().finally(() => {
      this.closing = null;
    });
    await this.closing;
  }

  /**
   * Deletes the log: closes it, renames its directory into `trashDir` (atomic, durable), then
   * removes the files. A crash in between leaves either the whole log or trash to sweep.
   */
  async destroy(trashDir: string): Promise<void> {
    await this.close();
    await mkdir(trashDir, { recursive: true });
    const target = join(trashDir, `${basename(this.dir)}.${randomBytes(6).toString('hex')}`);
    await rename(this.dir, target);
    await fsyncDir(dirname(this.dir));
    await fsyncDir(trashDir);
    await rm(target, { recursive: true, force: true });
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
