/**
 * One write-ahead log: the samples of one generation of one (tenant, shard, window) until they are
 * in the block. Layout and key/value schema: docs/format/wal.md.
 *
 * A generation is a directory of **segments**, each one LevelDB database (classic-level). LevelDB
 * is used as a buffer that is read once, in key order, when the block is built, then deleted;
 * nothing in it is ever updated or deleted. LevelDB cannot turn compaction off (its level-0
 * triggers are compile-time constants: 4 files start a compaction), so a segment is closed before
 * it can reach that many level-0 files and the next writes go to a new segment. A memtable that
 * fills writes one level-0 table, and reopening a database turns its log into one more; a segment
 * therefore takes at most about {@link SEGMENT_FILL} write buffers of data, and is also closed as
 * soon as LevelDB reports {@link SEGMENT_MAX_L0} level-0 files. The segments are merged by series
 * id when the block is built: what an LSM tree with compaction disabled does on its read. Every
 * byte is written twice (LevelDB's log, then its table), and never again.
 *
 * Group commit: `append` adds a request's entries to the pending group of the newest segment and
 * resolves once the group that carries them was written with one synced (fsync) LevelDB batch.
 * While one group is being written, the next one collects every request that arrives meanwhile.
 *
 * A database that failed a write (ENOSPC, EIO) stays failed inside LevelDB; it is closed at once,
 * so that the next use reopens it (LevelDB replays its log; the failed group is not acknowledged)
 * and takes writes again once the cause is gone.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm, statfs } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { CorruptionError, ErrorCode, StrataError } from '../errors.js';
import { readSpill, writeSpill } from './wal-spill.js';
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
  RUN_KEY_LEN,
  RUN_KEYS_GTE,
  RUN_KEYS_LT,
  VALUE_CRC_LEN,
  type WalCounters,
  type WalIdentity,
} from './wal-codec.js';
import { fsyncDir, mkdirDurable } from '../common/durable-fs.js';


/** Tuning of one WAL. */
export interface WalDbOptions {
  /** LevelDB write buffer (memtable) size in bytes; a segment holds about twice that. */
  readonly writeBufferBytes: number;
  /** fsync every group (true: acknowledged writes survive power loss; false: only a process crash). */
  readonly sync: boolean;
  /** Called after every group write, for metrics. */
  readonly onCommit?: (requests: number, entries: number, durationMs: number) => void;
  /** Called when a generation starts a new segment, for metrics. */
  readonly onRotate?: () => void;
  /** Called with an error of background work nobody waits for (closing a full segment). */
  readonly onBackgroundError?: (err: unknown, dir: string) => void;
  /** A read closes and reopens the segments after this many bytes (default {@link REMAP_BYTES}). */
  readonly remapBytes?: number;
  /** A read holds at most this many segments open; more are merged through spill files (default {@link MAX_OPEN_SEGMENTS}). */
  readonly maxOpenSegments?: number;
}

/** One request's run for {@link WalDb.append}. */
export interface WalEntry {
  readonly id: bigint;
  readonly run: Uint8Array;
  /** The run's value (encodeRunValue of `run`) when the caller has it already: stored as it is. */
  readonly value?: Uint8Array;
  readonly samples: number;
}

/** One series of a WAL: its runs in sequence order (oldest first). */
export interface WalSeries {
  readonly id: bigint;
  readonly runs: Uint8Array[];
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

/** Bytes all the iterators of one flush read ahead, together. */
const READ_AHEAD_BYTES = 8 * 1024 * 1024;
/** ...and at least this much per segment. */
const MIN_READ_AHEAD_BYTES = 128 * 1024;
/**
 * A segment takes writes while its estimated memtable usage stays under this many write buffers:
 * at most one memtable fills (one level-0 table), and reopening adds one more.
 */
export const SEGMENT_FILL = 2;
/** A segment whose database reports this many level-0 files takes no more writes. */
export const SEGMENT_MAX_L0 = 2;
/** LevelDB's memtable bytes per entry beyond its key and value (skip-list node, sequence, varints). */
const MEMTABLE_ENTRY_OVERHEAD = 64;
/** A read closes and reopens the segments after this many bytes (see WalDb.series). */
export const REMAP_BYTES = 16 * 1024 * 1024;
const U64_MAX = (1n << 64n) - 1n;
/** Segments a read holds open at once by default (see WalDb.series). */
export const MAX_OPEN_SEGMENTS = 64;
/** Directories of a read's spill files (removed when the read ends, and at start-up). */
const SPILL_PREFIX = 'spill-';
/** Segment directory names: 6 decimal digits. */
const SEGMENT_DIR = /^\d{6}$/;

const KEY_IDENTITY = metaKey(META_IDENTITY);
const KEY_COUNTERS = metaKey(META_COUNTERS);
const KEY_SEALED = metaKey(META_SEALED);


/** A use of a {@link WalDb} (see {@link WalDb.acquire}). */
export interface WalDbUse {
  readonly wal: WalDb;
  /** Gives the use back; later calls do nothing. */
  release(nowMs: number): void;
}

/** The directory name of segment `n`. */
export function segmentName(n: number): string {
  return String(n).padStart(6, '0');
}

/** Memtable bytes LevelDB uses for `entries` entries holding `bytes` of keys and values. */
function memtableBytes(entries: number, bytes: number): number {
  return bytes + entries * MEMTABLE_ENTRY_OVERHEAD;
}

/**
 * One segment: one LevelDB database with group commit. Its counters count its own entries; its
 * sequence numbers continue those of the segment before it.
 */
class WalSegment {
  readonly dir: string;
  readonly identity: WalIdentity;
  private readonly opts: WalDbOptions;
  private readonly onSettled: () => void;
  private db: Db | null = null;
  private opening: Promise<void> | null = null;
  private closing: Promise<void> | null = null;
  durable: WalCounters;
  next: WalCounters;
  sealedAt: number | null;
  private ops: PutOp[] = [];
  private waiters: { resolve: () => void; reject: (err: unknown) => void }[] = [];
  private writing = false;
  /** Entries and bytes written since the database was last opened (what its memtables hold). */
  private memEntries = 0;
  private memBytes = 0;
  /** Takes no more writes: the next ones go to a new segment. */
  full = false;
  /** Bytes of run keys and values read by {@link series} since the database was opened. */
  bytesRead = 0;
  syncs = 0;
  requests = 0;

  private constructor(dir: string, identity: WalIdentity, counters: WalCounters, sealedAt: number | null, opts: WalDbOptions, onSettled: () => void) {
    this.dir = dir;
    this.identity = identity;
    this.durable = counters;
    this.next = counters;
    this.sealedAt = sealedAt;
    this.opts = opts;
    this.onSettled = onSettled;
  }

  private static db(dir: string, opts: WalDbOptions, create: boolean): Db {
    return new ClassicLevel<Buffer, Buffer>(dir, {
      keyEncoding: 'buffer',
      valueEncoding: 'buffer',
      createIfMissing: create,
      errorIfExists: create,
      compression: false, // values are encoded runs already
      writeBufferSize: opts.writeBufferBytes,
      // one table per memtable: a segment's few level-0 files are whole memtables
      maxFileSize: Math.max(2 << 20, 2 * opts.writeBufferBytes),
      blockSize: 64 * 1024,
      cacheSize: 1 << 20,
      maxOpenFiles: 64,
    });
  }

  /**
   * Creates a new, empty segment at `dir` (which must not exist) and makes its creation durable.
   * If anything fails, nothing of it is left behind.
   */
  static async create(dir: string, identity: WalIdentity, lastSeq: bigint, opts: WalDbOptions, onSettled: () => void): Promise<WalSegment> {
    const counters = { ...EMPTY_COUNTERS, lastSeq };
    const db = WalSegment.db(dir, opts, true);
    try {
      await db.open();
      try {
        await db.batch(
          [
            { type: 'put', key: KEY_IDENTITY, value: encodeIdentity(identity) },
            { type: 'put', key: KEY_COUNTERS, value: encodeCounters(counters) },
          ],
          { sync: true },
        );
        await fsyncDir(dirname(dir));
      } catch (err) {
        await db.close();
        throw err;
      }
    } catch (err) {
      // LevelDB may have created the directory before failing (EMFILE, ENOSPC, EIO): remove it,
      // or the next attempt would find it and fail with "exists"
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    const s = new WalSegment(dir, identity, counters, null, opts, onSettled);
    s.db = db;
    return s;
  }

  /**
   * Opens an existing segment and reads its identity, counters and seal.
   * @throws IncompleteWalError when its creation never finished (it holds no data: delete it).
   */
  static async open(dir: string, opts: WalDbOptions, onSettled: () => void): Promise<WalSegment> {
    if (!existsSync(join(dir, 'CURRENT'))) throw new IncompleteWalError(dir, 'no CURRENT file');
    const db = WalSegment.db(dir, opts, false);
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
      const s = new WalSegment(dir, identity, counters, sealedAt, opts, onSettled);
      s.db = db;
      s.checkLevel0();
      return s;
    } catch (err) {
      await db.close();
      throw err;
    }
  }

  get isOpen(): boolean {
    return this.db !== null;
  }

  /** Closed, and neither opening nor closing: LevelDB touches none of its files. */
  get settled(): boolean {
    return this.db === null && this.opening === null && this.closing === null;
  }

  /** True when no group is pending or being written. */
  get quiet(): boolean {
    return !this.writing && this.waiters.length === 0;
  }

  /** Opens the database again after {@link close} (single flight). */
  async ensureOpen(): Promise<void> {
    if (this.closing) await this.closing.catch(() => undefined);
    if (this.db) return;
    this.opening ??= (async () => {
      const db = WalSegment.db(this.dir, this.opts, false);
      await db.open();
      this.db = db;
      this.memEntries = 0;
      this.memBytes = 0;
      this.bytesRead = 0;
      this.checkLevel0();
    })().finally(() => {
      this.opening = null;
    });
    await this.opening;
  }

  /** Marks the segment full when LevelDB holds {@link SEGMENT_MAX_L0} level-0 files. */
  private checkLevel0(): void {
    if (!this.db || this.full) return;
    const n = Number(this.db.getProperty('leveldb.num-files-at-level0'));
    if (n >= SEGMENT_MAX_L0) this.full = true;
  }

  /**
   * True when `entries` more entries of `bytes` would take the memtables past
   * {@link SEGMENT_FILL} write buffers; an empty segment takes any request.
   */
  wouldOverflow(entries: number, bytes: number): boolean {
    const pendingEntries = this.ops.length;
    if (this.memEntries === 0 && pendingEntries === 0) return false;
    const pendingBytes = this.next.bytes - this.durable.bytes;
    return memtableBytes(this.memEntries + pendingEntries + entries, this.memBytes + pendingBytes + bytes) > SEGMENT_FILL * this.opts.writeBufferBytes;
  }

  /** Adds runs to the pending group; resolves once they are durable. */
  append(entries: readonly WalEntry[], nowMs: number): Promise<void> {
    let { lastSeq, entries: count, samples, bytes } = this.next;
    for (const e of entries) {
      const key = encodeRunKey(e.id, ++lastSeq);
      const value = e.value === undefined ? encodeRunValue(e.run) : Buffer.isBuffer(e.value) ? e.value : Buffer.from(e.value.buffer, e.value.byteOffset, e.value.byteLength);
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
    if (this.writing || this.waiters.length === 0) return;
    const ops = this.ops;
    const waiters = this.waiters;
    const counters = this.next;
    const before = this.durable;
    this.ops = [];
    this.waiters = [];
    ops.push({ type: 'put', key: KEY_COUNTERS, value: encodeCounters(counters) });
    this.writing = true;
    const t0 = performance.now();
    this.write(ops).then(
      () => {
        this.durable = counters;
        this.memEntries += ops.length;
        this.memBytes += counters.bytes - before.bytes;
        this.syncs++;
        this.requests += waiters.length;
        this.opts.onCommit?.(waiters.length, ops.length - 1, performance.now() - t0);
        this.checkLevel0();
        for (const w of waiters) w.resolve();
        this.afterWrite();
      },
      (err: unknown) => {
        // nothing of this group is acknowledged: forget its counts (sequence numbers are not reused)
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

  /** One synced batch; on failure the database is closed so that the next use reopens it. */
  private async write(ops: PutOp[]): Promise<void> {
    await this.ensureOpen();
    try {
      await this.db!.batch(ops, { sync: this.opts.sync });
    } catch (err) {
      await this.closeAfterFailure();
      throw err;
    }
  }

  /** LevelDB keeps a failed write's error for good: drop the handle, the next use reopens. */
  private async closeAfterFailure(): Promise<void> {
    this.full = true; // later writes go to a new segment
    await this.closeNow().catch((e: unknown) => this.opts.onBackgroundError?.(e, this.dir));
  }

  private afterWrite(): void {
    this.writing = false;
    this.kick();
    const ls = this.listeners;
    this.listeners = [];
    for (const l of ls) l();
    this.onSettled();
  }
  private listeners: (() => void)[] = [];

  /** Writes the seal marker (synced). */
  async writeSealed(nowMs: number): Promise<void> {
    await this.ensureOpen();
    try {
      await this.db!.put(KEY_SEALED, encodeSealed(nowMs), { sync: true });
    } catch (err) {
      await this.closeAfterFailure();
      throw err;
    }
    this.sealedAt = nowMs;
  }

  /** Every series of the segment in id order with its runs in sequence order. */
  async *series(readAheadBytes: number, fromId: bigint | null = null): AsyncGenerator<WalSeries> {
    await this.ensureOpen();
    const gte = fromId === null ? RUN_KEYS_GTE : encodeRunKey(fromId, 0n);
    const it = this.db!.iterator({ gte, lt: RUN_KEYS_LT, fillCache: false, highWaterMarkBytes: readAheadBytes });
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
          this.bytesRead += k.length + v.length;
        }
      }
      if (id !== null) yield { id, runs };
    } finally {
      await it.close();
    }
  }

  /** Closes the database after its pending groups are written. */
  async close(): Promise<void> {
    if (this.opening) await this.opening.catch(() => undefined);
    while (!this.quiet) await new Promise<void>((resolve) => this.listeners.push(resolve));
    await this.closeNow();
  }

  async closeNow(): Promise<void> {
    const db = this.db;
    // a close already under way is waited for: LevelDB's lock is only released when it ends
    if (!db) return void (await this.closing?.catch(() => undefined));
    this.db = null;
    this.closing = db.close().finally(() => {
      this.closing = null;
    });
    await this.closing;
  }
}

/** Whether `seg` takes `entries` more entries of `bytes`; marks it full when not. */
function takes(seg: WalSegment, entries: number, bytes: number): boolean {
  if (!seg.full && seg.wouldOverflow(entries, bytes)) seg.full = true;
  return !seg.full;
}

/** A min-heap of iterator heads by series id (ties: older segment first). */
class HeadHeap {
  private readonly items: { head: WalSeries; order: number; it: AsyncGenerator<WalSeries> }[] = [];
  get size(): number {
    return this.items.length;
  }
  private less(a: number, b: number): boolean {
    const x = this.items[a]!;
    const y = this.items[b]!;
    return x.head.id < y.head.id || (x.head.id === y.head.id && x.order < y.order);
  }
  push(item: { head: WalSeries; order: number; it: AsyncGenerator<WalSeries> }): void {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(i, p)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  peek(): { head: WalSeries; order: number; it: AsyncGenerator<WalSeries> } | undefined {
    return this.items[0];
  }
  pop(): { head: WalSeries; order: number; it: AsyncGenerator<WalSeries> } {
    const a = this.items;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.less(l, m)) m = l;
        if (r < a.length && this.less(r, m)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}

/** Read-ahead of each of `n` sources read side by side. */
function readAheadOf(n: number): number {
  return Math.max(MIN_READ_AHEAD_BYTES, Math.floor(READ_AHEAD_BYTES / n));
}

/**
 * Series of sources (each in id order) merged by series id; a series found in several has the
 * runs of the earlier sources first (their sequence numbers are lower).
 */
async function* mergeById(its: AsyncGenerator<WalSeries>[]): AsyncGenerator<WalSeries> {
  const heap = new HeadHeap();
  try {
    for (const [order, it] of its.entries()) {
      const r = await it.next();
      if (!r.done) heap.push({ head: r.value, order, it });
    }
    while (heap.size > 0) {
      const top = heap.pop();
      const id = top.head.id;
      let runs = top.head.runs;
      const advance = async (item: typeof top): Promise<void> => {
        const r = await item.it.next();
        if (!r.done) heap.push({ head: r.value, order: item.order, it: item.it });
      };
      await advance(top);
      while (heap.size > 0 && heap.peek()!.head.id === id) {
        const more = heap.pop();
        runs = runs.concat(more.head.runs);
        await advance(more);
      }
      yield { id, runs };
    }
  } finally {
    for (const it of its) await it.return(undefined);
  }
}

/** See the module comment. */
export class WalDb {
  readonly dir: string;
  /** The generation's identity (`segment` is that of its first segment). */
  readonly identity: WalIdentity;
  private readonly opts: WalDbOptions;
  /** Oldest first; only the newest takes writes. */
  private readonly segments: WalSegment[];
  /** True for a version-1 generation: one LevelDB in the generation directory itself. */
  readonly legacy: boolean;
  private rotating: Promise<WalSegment> | null = null;
  private sealing = false;
  private sealP: Promise<void> | null = null;
  private sealedAt: number | null;
  private listeners: (() => void)[] = [];
  /** Writers and flushes currently using this log (it is not closed while > 0). */
  private uses = 0;
  /** Writers among them (a seal waits for them). */
  private writers = 0;
  /** Last time it was used (for closing idle databases). */
  lastUsedMs = 0;
  /** Uses taken so far (see diskStamp). */
  private acquisitions = 0;
  private syncsGone = 0;
  private requestsGone = 0;

  private constructor(dir: string, identity: WalIdentity, segments: WalSegment[], legacy: boolean, opts: WalDbOptions) {
    this.dir = dir;
    this.identity = identity;
    this.segments = segments;
    this.legacy = legacy;
    this.opts = opts;
    this.sealedAt = segments.reduce<number | null>((at, s) => s.sealedAt ?? at, null);
  }

  private readonly settled = (): void => this.notify();

  /**
   * Creates a new, empty log at `dir` (which must not exist) with its first segment, and makes
   * its creation durable. If anything fails, nothing of it is left behind.
   */
  static async create(dir: string, identity: Omit<WalIdentity, 'segment'>, opts: WalDbOptions): Promise<WalDb> {
    await mkdirDurable(dirname(dir));
    await mkdir(dir);
    const full = { ...identity, segment: 1 };
    const w = new WalDb(dir, full, [], false, opts);
    try {
      await fsyncDir(dirname(dir));
      w.segments.push(await WalSegment.create(join(dir, segmentName(1)), full, 0n, opts, w.settled));
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    return w;
  }

  /**
   * Opens an existing log: every segment is opened to read its identity, counters and seal, and
   * all but the newest are closed again.
   * @throws IncompleteWalError when its creation never finished (it holds no data: delete it).
   */
  static async open(dir: string, opts: WalDbOptions): Promise<WalDb> {
    const holder: { w: WalDb | null } = { w: null };
    const settled = (): void => holder.w?.notify();
    if (existsSync(join(dir, 'CURRENT'))) {
      // version 1: the generation is one LevelDB; it takes no more writes
      const s = await WalSegment.open(dir, opts, settled);
      s.full = true;
      const w = new WalDb(dir, s.identity, [s], true, opts);
      holder.w = w;
      return w;
    }
    if (!existsSync(dir)) throw new IncompleteWalError(dir, 'no directory');
    const entries = await readdir(dir);
    // spill files of a read that a crash interrupted: temporary, the segments hold the data
    for (const n of entries) if (n.startsWith(SPILL_PREFIX)) await rm(join(dir, n), { recursive: true, force: true });
    const names = entries.filter((n) => SEGMENT_DIR.test(n)).sort();
    const segments: WalSegment[] = [];
    try {
      for (const [i, name] of names.entries()) {
        const sdir = join(dir, name);
        let s: WalSegment;
        try {
          s = await WalSegment.open(sdir, opts, settled);
        } catch (err) {
          // only the newest segment can be caught in its creation; it holds nothing
          if (err instanceof IncompleteWalError && i === names.length - 1) {
            await rm(sdir, { recursive: true, force: true });
            await fsyncDir(dir);
            continue;
          }
          // an older segment was complete once (the next was only made after it): damage, not an
          // interrupted creation, which the caller would answer by removing the whole generation
          if (err instanceof IncompleteWalError) throw new CorruptionError(sdir, 0, `segment ${name} of ${names.length} is incomplete (${err.message}), but a newer one exists: the WAL was damaged`, { cause: err });
          throw err;
        }
        segments.push(s);
        const first = segments[0]!.identity;
        const id = s.identity;
        if (id.segment !== Number(name) || id.tenant !== first.tenant || id.shard !== first.shard || id.windowStart !== first.windowStart || id.generation !== first.generation) {
          throw new CorruptionError(sdir, 0, `segment holds the identity of ${id.tenant}/${id.windowStart}/${id.shard} generation ${id.generation} segment ${id.segment}`);
        }
        const prev = segments.at(-2);
        if (prev && s.durable.lastSeq < prev.durable.lastSeq) throw new CorruptionError(sdir, 0, `sequence numbers go back from ${prev.durable.lastSeq} to ${s.durable.lastSeq}`);
        if (prev) await prev.closeNow();
      }
    } catch (err) {
      for (const s of segments) await s.closeNow().catch(() => undefined);
      throw err;
    }
    if (segments.length === 0) throw new IncompleteWalError(dir, 'no segment');
    const w = new WalDb(dir, segments[0]!.identity, segments, false, opts);
    holder.w = w;
    return w;
  }

  /** Whether any of its databases is open. */
  get isOpen(): boolean {
    return this.segments.some((s) => s.isOpen);
  }

  /**
   * A value that changes whenever its files may have changed since it was last read, or null while
   * they may be changing (a database open, opening or closing, or a use held: writers, flushes and
   * their spill files, seals). Every change to its files happens under a use, so equal stamps
   * mean the same files: the store measures a log's directory again only when its stamp moved.
   */
  get diskStamp(): number | null {
    if (this.uses > 0 || this.rotating !== null || !this.segments.every((s) => s.settled)) return null;
    return this.acquisitions;
  }

  /** How many of its databases are open. */
  get openDatabases(): number {
    let n = 0;
    for (const s of this.segments) if (s.isOpen) n++;
    return n;
  }

  /** Its segments' directories, oldest first. */
  get segmentDirs(): string[] {
    return this.segments.map((s) => s.dir);
  }

  /** Counters of what is durable, over every segment. */
  get counters(): WalCounters {
    let entries = 0;
    let samples = 0;
    let bytes = 0;
    let lastWriteMs = 0;
    for (const s of this.segments) {
      entries += s.durable.entries;
      samples += s.durable.samples;
      bytes += s.durable.bytes;
      lastWriteMs = Math.max(lastWriteMs, s.durable.lastWriteMs);
    }
    return { lastSeq: this.segments.at(-1)?.durable.lastSeq ?? 0n, entries, samples, bytes, lastWriteMs };
  }

  /** Synced group writes and the requests they carried, since this object was created. */
  get syncs(): number {
    return this.syncsGone + this.segments.reduce((n, s) => n + s.syncs, 0);
  }
  get requests(): number {
    return this.requestsGone + this.segments.reduce((n, s) => n + s.requests, 0);
  }
  /** Forgets the sync counts (the store keeps them once the log is deleted). */
  resetSyncCounts(): void {
    this.syncsGone = 0;
    this.requestsGone = 0;
    for (const s of this.segments) {
      s.syncs = 0;
      s.requests = 0;
    }
  }

  /** When it was sealed (ms), or null while it takes writes. */
  get sealedAtMs(): number | null {
    return this.sealedAt;
  }

  /** True once sealed: no more appends. (Set before the marker is durable; see seal().) */
  get sealed(): boolean {
    return this.sealedAt !== null || this.sealing;
  }

  /** Opens the newest segment (the one taking writes) again after {@link close}. */
  async ensureOpen(): Promise<void> {
    await this.segments.at(-1)!.ensureOpen();
  }

  /**
   * Adds runs to the pending group of the newest segment, starting a new segment first when this
   * one is full; resolves once they are durable. The caller holds a writer's use and has checked
   * that the log is not sealed.
   */
  append(entries: readonly WalEntry[], nowMs: number): Promise<void> {
    if (this.sealed) throw new RangeError(`WAL ${this.dir} is sealed`);
    let bytes = 0;
    for (const e of entries) bytes += RUN_KEY_LEN + 1 + e.run.length + VALUE_CRC_LEN;
    const seg = this.segments.at(-1)!;
    return takes(seg, entries.length, bytes) ? seg.append(entries, nowMs) : this.appendToNext(seg, entries, bytes, nowMs);
  }

  private async appendToNext(full: WalSegment, entries: readonly WalEntry[], bytes: number, nowMs: number): Promise<void> {
    for (;;) {
      await this.rotate(full, nowMs);
      const seg = this.segments.at(-1)!;
      if (takes(seg, entries.length, bytes)) return seg.append(entries, nowMs);
      full = seg;
    }
  }

  /** Starts the segment after `full` (single flight); the full one is closed once it is quiet. */
  private rotate(full: WalSegment, nowMs: number): Promise<WalSegment> {
    if (this.segments.at(-1) !== full) return Promise.resolve(this.segments.at(-1)!);
    this.rotating ??= (async () => {
      const n = full.identity.segment + 1;
      const identity = { ...this.identity, segment: n, createdAtMs: nowMs };
      // sequence numbers continue: nothing more is appended to `full` (it is marked full)
      // create() makes the new directory durable in this one (fsync of its parent)
      const seg = await WalSegment.create(join(this.dir, segmentName(n)), identity, full.next.lastSeq, this.opts, this.settled);
      this.segments.push(seg);
      this.opts.onRotate?.();
      void full.close().catch((err: unknown) => this.opts.onBackgroundError?.(err, full.dir));
      return seg;
    })().finally(() => {
      this.rotating = null;
      this.notify();
    });
    return this.rotating;
  }

  /** Writers and flushes currently using this log. */
  get users(): number {
    return this.uses;
  }

  /**
   * Takes a use of the log: it is not closed while a use is held, and a writer's use also holds
   * off a seal. The use is given back by the returned handle's `release` (once; later calls do
   * nothing).
   */
  acquire(as: 'writer' | 'reader'): WalDbUse {
    this.uses++;
    this.acquisitions++;
    if (as === 'writer') this.writers++;
    let held = true;
    return {
      wal: this,
      release: (nowMs: number) => {
        if (!held) return;
        held = false;
        if (as === 'writer') this.writers--;
        this.uses--;
        this.lastUsedMs = nowMs;
        this.notify();
      },
    };
  }

  private notify(): void {
    const ls = this.listeners;
    this.listeners = [];
    for (const l of ls) l();
  }

  private async until(done: () => boolean): Promise<void> {
    while (!done()) await new Promise<void>((resolve) => this.listeners.push(resolve));
  }

  /** True when no group is pending or being written and no segment is being started. */
  private get quiet(): boolean {
    return this.rotating === null && this.segments.every((s) => s.quiet);
  }

  /**
   * Seals the log: no appends from now on; once the writers in progress are done, the seal marker
   * is written (synced) into the newest segment. Idempotent; a failed attempt can be repeated.
   */
  async seal(nowMs: number): Promise<void> {
    if (this.sealedAt !== null) return;
    this.sealing = true;
    this.sealP ??= (async () => {
      await this.until(() => this.writers === 0 && this.quiet);
      const use = this.acquire('reader');
      try {
        await this.segments.at(-1)!.writeSealed(nowMs);
        this.sealedAt = nowMs;
      } finally {
        use.release(nowMs);
      }
    })().finally(() => {
      this.sealP = null;
    });
    await this.sealP;
  }


  /**
   * Every series of the log in id order with its runs in sequence order (oldest first): the
   * segments are read side by side and merged by series id. The caller holds a use while
   * iterating. Read-ahead is shared among the segments, so memory does not grow with their number.
   * A log of more segments than `maxOpenSegments` is merged in groups of that many into spill
   * files first (wal-spill.ts), and those are merged, so the descriptors and mappings a read
   * holds are bounded by configuration, not by the size of the log.
   */
  async *series(): AsyncGenerator<WalSeries> {
    const segs = this.segments;
    const max = Math.max(2, this.opts.maxOpenSegments ?? MAX_OPEN_SEGMENTS);
    if (segs.length <= max) {
      yield* this.segmentSeries(segs);
      return;
    }
    // the spill files hold the runs of every segment once more, and the merge of a level writes
    // its output before it deletes its input: without that much room the merge would fail with
    // ENOSPC part-way, every retry of the flush again, with nothing to tell why
    const need = Math.ceil(this.counters.bytes * (1 + 1 / max));
    const fs = await statfs(this.dir);
    const free = fs.bavail * fs.bsize;
    if (free < need) {
      throw new StrataError(
        ErrorCode.RESOURCE_EXHAUSTED,
        `merging the ${segs.length} segments of ${this.dir} (more than flushMaxOpenSegments, ${max}) through spill files needs about ${need} bytes free on its disk, which has ${free}; free space on the WAL volume or raise flushMaxOpenSegments`,
      );
    }
    const dir = join(this.dir, `${SPILL_PREFIX}${randomBytes(6).toString('hex')}`);
    await mkdir(dir);
    try {
      let files: string[] = [];
      for (let i = 0; i < segs.length; i += max) {
        const file = join(dir, String(files.length));
        await writeSpill(file, this.segmentSeries(segs.slice(i, i + max)));
        files.push(file);
      }
      let made = files.length;
      while (files.length > max) {
        const next: string[] = [];
        for (let i = 0; i < files.length; i += max) {
          const group = files.slice(i, i + max);
          const file = join(dir, String(made++));
          await writeSpill(file, mergeById(group.map((f) => readSpill(f, readAheadOf(group.length)))));
          for (const f of group) await rm(f, { force: true });
          next.push(file);
        }
        files = next;
      }
      yield* mergeById(files.map((f) => readSpill(f, readAheadOf(files.length))));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** The series of `segs` (consecutive segments of this log), merged; see {@link series}. */
  private async *segmentSeries(segs: readonly WalSegment[]): AsyncGenerator<WalSeries> {
    const readAhead = readAheadOf(segs.length);
    let from: bigint | null = null;
    try {
      for (;;) {
        // LevelDB maps its tables into memory: what a read has touched stays resident (as file
        // pages) until the database is closed. So after every REMAP_BYTES read the segments read
        // beyond their first read-ahead batch are closed and reopened, and the read goes on after
        // the last series it yielded. A segment still waiting at its first series (its ids come
        // later: segments of a push in id order hold disjoint ranges) has mapped at most one
        // read-ahead batch and stays open, so a remap costs an open of the few segments being read,
        // not of all of them (every open of a LevelDB writes and syncs a new manifest).
        let last: bigint | null = null;
        let remap = false;
        for await (const s of this.mergedFrom(segs, readAhead, from)) {
          yield s;
          last = s.id;
          if (segs.reduce((n, g) => n + g.bytesRead, 0) >= (this.opts.remapBytes ?? REMAP_BYTES)) {
            remap = true;
            break;
          }
        }
        if (!remap || last === null || last === U64_MAX) return;
        for (const g of segs) if (g.bytesRead > readAhead) await g.close();
        from = last + 1n;
      }
    } finally {
      // a read of a sealed log opened these segments: close all but the log's newest
      const newest = this.segments.at(-1);
      for (const g of segs) if (g !== newest) await g.close();
    }
  }

  /** The segments' series from `from` on, merged by series id (runs in segment order). */
  private mergedFrom(segs: readonly WalSegment[], readAhead: number, from: bigint | null): AsyncGenerator<WalSeries> {
    return segs.length === 1 ? segs[0]!.series(readAhead, from) : mergeById(segs.map((s) => s.series(readAhead, from)));
  }

  /** Closes every database (after pending groups are written); it can be opened again. */
  async close(): Promise<void> {
    if (this.rotating) await this.rotating.catch(() => undefined);
    for (const s of this.segments) await s.close();
  }

  /** Closes its databases unless someone uses it; false when it was in use (or not open). */
  async closeIfIdle(): Promise<boolean> {
    if (this.uses > 0 || !this.quiet || !this.isOpen) return false;
    for (const s of this.segments) await s.closeNow();
    return true;
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

