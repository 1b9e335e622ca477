/**
 * Checks of an LMDB data file (`data.mdb`) made with plain file reads, never through LMDB's map: a
 * damaged file crashes a process that maps it (a page number past the end of the file is a
 * SIGBUS, a node offset past its page a SIGSEGV; LMDB has no page checksums), while a bounds check
 * here only finds a problem. The layout read is that of the LMDB bundled with the `lmdb` package
 * (3.x: LMDB 1.0's data format, {@link MDB_DATA_VERSION} 2, with lmdb-js's overlapping-sync meta);
 * docs/format/cache.md ("LMDB's file") has the byte diagrams.
 *
 * - {@link checkLmdbHeader} reads the two meta pages (and lmdb-js's flushed meta in page 0): the
 *   magic, version and page size, the root of each tree, and whether the file holds every page up
 *   to the last one the meta says is used. Run at every open: a few hundred bytes.
 * - {@link verifyLmdbFile} walks every tree of the snapshot LMDB will open (free-page tree, main
 *   tree, each named table): each page is where a pointer says (its header repeats its number),
 *   of the kind its depth calls for, inside the file and reached once; each node lies inside its
 *   page; each overflow value's pages are inside the file and start with a matching overflow
 *   header; the counts of each tree's record (pages by kind, entries, depth) match what was found;
 *   each free-page record's count fits its value and its pages are inside the snapshot, used by no
 *   tree and listed once; the caller may check each table's keys. Only tree pages and the first
 *   page of each overflow value are read, not the values.
 *
 * What neither can see: bytes changed inside a key or a value that keep every bound (LMDB has no
 * checksums). The gateway checks every range it reads against its CRC32C, and block and pointer
 * rows are versioned, so such damage costs a refetch, not a crash.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { open as openFile, type FileHandle } from 'node:fs/promises';

/** LMDB's file stamp, at the start of each meta. */
export const MDB_MAGIC = 0xbeefc0de;
/** LMDB's data format version (low 16 bits of the meta's version field). */
export const MDB_DATA_VERSION = 2;
/** Bytes of a page header: pgno u64 | txnid u64 | pad u16 | flags u16 | lower u16 | upper u16 (overflow: pages u32). */
export const PAGE_HEADER_BYTES = 24;
/** Bytes of a meta (after its page header). */
export const META_BYTES = 144;
/** Bytes of a table record (MDB_db): in each meta for the free and main trees, and in the main tree for each named table. */
export const DB_RECORD_BYTES = 48;
/** Bytes of a node header: lo u16 | hi u16 | flags u16 | ksize u16. */
export const NODE_HEADER_BYTES = 8;
/** Bytes of an overflow reference (MDB_ovpage) held by a leaf node whose value lives in overflow pages. */
export const OVERFLOW_REF_BYTES = 24;
/** Pages 0 and 1 are meta pages. */
export const META_PAGES = 2;
/** LMDB's limit on a tree's depth (CURSOR_STACK). */
export const MAX_DEPTH = 32;
/** Page sizes LMDB accepts. */
const MIN_PAGE_BYTES = 512;
const MAX_PAGE_BYTES = 65_536;

// page flags
const P_BRANCH = 0x01;
const P_LEAF = 0x02;
const P_OVERFLOW = 0x04;
const P_META = 0x08;
const KIND_NAMES: Record<number, string> = { [P_BRANCH]: 'branch', [P_LEAF]: 'leaf', [P_OVERFLOW]: 'overflow' };
// leaf node flags
const F_BIGDATA = 0x01;
const F_SUBDATA = 0x02;
// table flags (MDB_db.md_flags): how keys compare and whether duplicates are kept (the free-page
// tree's record also holds the environment's flags, above these bits)
const TABLE_FLAGS = 0x7e;
const MDB_INTEGERKEY = 0x08;
/** The table flags each kind of tree has: integer keys (transaction ids) for the free-page tree, none otherwise (LMDB refuses named tables under a main tree with flags). */
const FLAGS_OF = { free: MDB_INTEGERKEY, main: 0, table: 0 } as const;
/** P_INVALID: the root of an empty tree. */
const NO_PAGE = 0xffff_ffff_ffff_ffffn;

// meta fields, from the start of the meta (page offset + PAGE_HEADER_BYTES)
const META = { magic: 0, version: 4, dbs: 24, lastPage: 120, txnId: 128 } as const;
// table record fields
const DB = { pad: 0, flags: 4, depth: 6, branchPages: 8, leafPages: 16, overflowPages: 24, entries: 32, root: 40 } as const;
// page header fields
const PAGE = { pgno: 0, txnId: 8, pad: 16, flags: 18, lower: 20, upper: 22, pages: 20 } as const;

/** A table record (MDB_db). */
interface DbRecord {
  readonly flags: number;
  readonly depth: number;
  readonly branchPages: number;
  readonly leafPages: number;
  readonly overflowPages: number;
  readonly entries: number;
  /** Null for an empty tree. */
  readonly root: number | null;
}

interface Meta {
  readonly where: string;
  readonly pageSize: number;
  readonly lastPage: number;
  readonly txnId: bigint;
  readonly free: DbRecord;
  readonly main: DbRecord;
}

/** What {@link checkLmdbHeader} found. */
export type LmdbHeaderCheck =
  /** No file, or an empty one: LMDB makes a new environment. */
  | { readonly kind: 'absent' }
  | { readonly kind: 'damaged'; readonly problem: string }
  | {
      readonly kind: 'ok';
      readonly pageSize: number;
      /** Last page in use in the snapshot LMDB opens. */
      readonly lastPage: number;
      readonly fileBytes: number;
      /**
       * The file ends before that last page. Not damage by itself (LMDB counts pages that a
       * transaction took and freed again without writing them), but a page a tree uses past the
       * end would be: {@link verifyLmdbFile} tells.
       */
      readonly short: boolean;
    };

/** What {@link verifyLmdbFile} found. */
export type LmdbVerifyResult =
  | { readonly ok: true; readonly absent: boolean; readonly pagesRead: number; readonly fileBytes: number }
  | { readonly ok: false; readonly problem: string };

/** An unsigned 64-bit field as a number (Infinity beyond 2^53: no page number or count is that large). */
function u64(b: Buffer, off: number): number {
  const v = b.readBigUInt64LE(off);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(v);
}

function dbRecord(b: Buffer, off: number): DbRecord {
  const root = b.readBigUInt64LE(off + DB.root);
  return {
    flags: b.readUInt16LE(off + DB.flags),
    depth: b.readUInt16LE(off + DB.depth),
    branchPages: u64(b, off + DB.branchPages),
    leafPages: u64(b, off + DB.leafPages),
    overflowPages: u64(b, off + DB.overflowPages),
    entries: u64(b, off + DB.entries),
    root: root === NO_PAGE ? null : u64(b, off + DB.root),
  };
}

/** What is wrong with the record of a tree of kind `kind` in a snapshot whose last page is `lastPage`, or null. */
function dbProblem(db: DbRecord, kind: keyof typeof FLAGS_OF, lastPage: number): string | null {
  if ((db.flags & TABLE_FLAGS) !== FLAGS_OF[kind]) return `flags 0x${db.flags.toString(16)}`;
  if (db.root === null) return db.entries === 0 && db.depth === 0 ? null : `an empty tree with ${db.entries} entries and depth ${db.depth}`;
  if (db.root < META_PAGES || db.root > lastPage) return `root page ${db.root} outside pages ${META_PAGES}..${lastPage}`;
  if (db.depth < 1 || db.depth > MAX_DEPTH) return `depth ${db.depth}`;
  return null;
}

/**
 * The meta in `b` (a page header, then the meta). Pages 0 and 1 (`pgno`) carry the magic, the
 * version and a meta page header; lmdb-js's flushed meta (`pgno` null) is written from the map
 * size on and has neither.
 */
function parseMeta(b: Buffer, where: string, pgno: number | null): Meta | string {
  if (b.length < PAGE_HEADER_BYTES + META_BYTES) return `${where}: cut short`;
  const m = PAGE_HEADER_BYTES;
  if (pgno !== null) {
    if (u64(b, PAGE.pgno) !== pgno || b.readUInt16LE(PAGE.flags) !== P_META) return `${where}: not a meta page (page number ${b.readBigUInt64LE(PAGE.pgno)}, flags 0x${b.readUInt16LE(PAGE.flags).toString(16)})`;
    const magic = b.readUInt32LE(m + META.magic);
    if (magic !== MDB_MAGIC) return `${where}: magic 0x${magic.toString(16)}, expected 0x${MDB_MAGIC.toString(16)}`;
    const version = b.readUInt32LE(m + META.version) & 0xffff;
    if (version !== MDB_DATA_VERSION) return `${where}: data format version ${version}, expected ${MDB_DATA_VERSION}`;
  }
  return {
    where,
    // the free-page tree's record holds the page size in its pad field
    pageSize: b.readUInt32LE(m + META.dbs + DB.pad),
    lastPage: u64(b, m + META.lastPage),
    txnId: b.readBigUInt64LE(m + META.txnId),
    free: dbRecord(b, m + META.dbs),
    main: dbRecord(b, m + META.dbs + DB_RECORD_BYTES),
  };
}

/** What is wrong with a parsed meta, or null. */
function metaProblem(meta: Meta, pageSize: number): string | null {
  if (meta.pageSize !== pageSize) return `${meta.where}: page size ${meta.pageSize}, expected ${pageSize}`;
  if (!(meta.lastPage >= META_PAGES - 1) || (meta.lastPage + 1) * pageSize > Number.MAX_SAFE_INTEGER) return `${meta.where}: last page ${meta.lastPage}`;
  for (const [name, db, kind] of [['free-page tree', meta.free, 'free'], ['main tree', meta.main, 'main']] as const) {
    const p = dbProblem(db, kind, meta.lastPage);
    if (p !== null) return `${meta.where}: ${name}: ${p}`;
  }
  return null;
}

/** LMDB's choice between two metas: the later transaction, the first on a tie (mdb_pick_meta). */
function pick(a: Meta, b: Meta): Meta {
  return a.txnId >= b.txnId ? a : b;
}

function readSyncAt(fd: number, pos: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  let got = 0;
  while (got < len) {
    const n = readSync(fd, b, got, len - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return b.subarray(0, got);
}

interface Snapshot {
  readonly meta: Meta;
  readonly fileBytes: number;
}

/** The snapshot LMDB would open from `file`, or what is wrong with its metas. */
function readSnapshot(file: string): { kind: 'absent' } | { kind: 'damaged'; problem: string } | { kind: 'ok'; snapshot: Snapshot } {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'absent' };
    throw err;
  }
  try {
    const fileBytes = fstatSync(fd).size;
    if (fileBytes === 0) return { kind: 'absent' };
    const metaBytes = PAGE_HEADER_BYTES + META_BYTES;
    const first = readSyncAt(fd, 0, metaBytes);
    const m0 = parseMeta(first, 'meta page 0', 0);
    if (typeof m0 === 'string') return { kind: 'damaged', problem: m0 };
    const pageSize = m0.pageSize;
    if (pageSize < MIN_PAGE_BYTES || pageSize > MAX_PAGE_BYTES || (pageSize & (pageSize - 1)) !== 0) return { kind: 'damaged', problem: `meta page 0: page size ${pageSize}` };
    if (fileBytes < META_PAGES * pageSize) return { kind: 'damaged', problem: `${fileBytes} bytes, less than its two meta pages of ${pageSize} bytes` };
    const m1 = parseMeta(readSyncAt(fd, pageSize, metaBytes), 'meta page 1', 1);
    if (typeof m1 === 'string') return { kind: 'damaged', problem: m1 };
    for (const m of [m0, m1]) {
      const p = metaProblem(m, pageSize);
      if (p !== null) return { kind: 'damaged', problem: p };
    }
    const latest = pick(m0, m1);
    // lmdb-js (overlapping sync) keeps the last meta known to be on disk in the second half of
    // page 0; LMDB reads it at open (for the map size) when its transaction is the latest
    const flushed = parseMeta(readSyncAt(fd, pageSize / 2, metaBytes), 'the flushed meta in page 0', null);
    if (typeof flushed === 'string') return { kind: 'damaged', problem: flushed };
    if (flushed.txnId !== 0n) {
      if (flushed.txnId > latest.txnId) return { kind: 'damaged', problem: `the flushed meta in page 0: transaction ${flushed.txnId}, later than the latest meta's ${latest.txnId}` };
      const p = metaProblem(flushed, pageSize);
      if (p !== null) return { kind: 'damaged', problem: p };
    }
    return { kind: 'ok', snapshot: { meta: latest, fileBytes } };
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads the metas of the LMDB data file `file` (a few hundred bytes) and says whether LMDB can open
 * it without faulting on them: see the module comment. Throws only when the file cannot be read
 * (other than missing).
 */
export function checkLmdbHeader(file: string): LmdbHeaderCheck {
  const r = readSnapshot(file);
  if (r.kind !== 'ok') return r;
  const { meta, fileBytes } = r.snapshot;
  return { kind: 'ok', pageSize: meta.pageSize, lastPage: meta.lastPage, fileBytes, short: fileBytes < (meta.lastPage + 1) * meta.pageSize };
}

/** Thrown inside the walk for the first problem found. */
class Damage extends Error {}

/** One bit per page of the file (page numbers reach 2^32 in a 16 TiB file: no 32-bit shifts). */
class PageSet {
  private readonly bits: Uint8Array;

  constructor(readonly pages: number) {
    this.bits = new Uint8Array(Math.ceil(pages / 8));
  }

  /** Adds page `p` (below `pages`); false when it was there already. */
  add(p: number): boolean {
    const i = Math.floor(p / 8);
    const bit = 1 << p % 8;
    if ((this.bits[i]! & bit) !== 0) return false;
    this.bits[i]! |= bit;
    return true;
  }

  has(p: number): boolean {
    return (this.bits[Math.floor(p / 8)]! & (1 << p % 8)) !== 0;
  }
}

/** Runs `fn` over `items` with at most `limit` calls pending. */
async function eachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Reads issued at once by the walk (the file is local; a few keep a disk's queue busy). */
const READ_CONCURRENCY = 16;

interface Tree {
  readonly name: string;
  readonly db: DbRecord;
  readonly kind: 'free' | 'main' | 'table';
  /** A named table's name. */
  readonly table?: string;
}

/** Options of {@link verifyLmdbFile}. */
export interface LmdbVerifyOptions {
  /** What is wrong with a key of the named table `table`, or null (the walk reads every key anyway). */
  readonly keyProblem?: (table: string, key: Buffer) => string | null;
}

interface OverflowRef {
  readonly pgno: number;
  readonly pages: number;
  readonly valueBytes: number;
  /** A free-page record: read whole and checked (other values: only their first page header). */
  readonly freeRecord: boolean;
  readonly where: string;
}

class Walker {
  private readonly pageSize: number;
  private readonly lastPage: number;
  /** Pages reached by a tree. */
  private readonly seen: PageSet;
  pagesRead = 0;

  constructor(
    private readonly fh: FileHandle,
    private readonly meta: Meta,
    private readonly fileBytes: number,
    private readonly opts: LmdbVerifyOptions,
  ) {
    this.pageSize = meta.pageSize;
    this.lastPage = meta.lastPage;
    // pages past the end of the file are refused before they are marked (and a damaged lastPage
    // may be huge): one bit per page of the file
    this.seen = new PageSet(Math.min(meta.lastPage + 1, Math.floor(fileBytes / meta.pageSize)));
  }

  /** Marks pages `[pgno, pgno + count)` reached; they must be inside the snapshot and the file, and not reached before. */
  private claim(pgno: number, count: number, where: string): void {
    if (!(count >= 1) || !(pgno >= META_PAGES) || pgno + count - 1 > this.lastPage) throw new Damage(`${where}: pages ${pgno}..${pgno + count - 1} outside pages ${META_PAGES}..${this.lastPage}`);
    if ((pgno + count) * this.pageSize > this.fileBytes) throw new Damage(`${where}: page ${pgno + count - 1} is past the end of the file (${this.fileBytes} bytes)`);
    for (let p = pgno; p < pgno + count; p++) {
      if (!this.seen.add(p)) throw new Damage(`${where}: page ${p} is reached twice`);
    }
  }

  private async read(pos: number, len: number): Promise<Buffer> {
    const b = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await this.fh.read(b, got, len - got, pos + got);
      if (bytesRead === 0) throw new Damage(`the file ends at ${pos + got} bytes, inside a page`);
      got += bytesRead;
    }
    this.pagesRead++;
    return b;
  }

  async run(): Promise<void> {
    const trees: Tree[] = [
      { name: 'free-page tree', db: this.meta.free, kind: 'free' },
      { name: 'main tree', db: this.meta.main, kind: 'main' },
    ];
    for (let i = 0; i < trees.length; i++) await this.walkTree(trees[i]!, trees);
    // LMDB hands free pages out for new writes: one a tree uses would be overwritten under it, and
    // one listed twice fails every commit that merges the lists
    // (free pages past the end of the file are legitimate: taken and freed again unwritten)
    const free = new PageSet(this.seen.pages);
    for (const [first, n] of this.freePages) {
      for (let p = first; p < Math.min(first + n, free.pages); p++) {
        if (this.seen.has(p)) throw new Damage(`free-page tree: page ${p} is listed as free and used by a tree`);
        if (!free.add(p)) throw new Damage(`free-page tree: page ${p} is listed as free twice`);
      }
    }
  }

  /** Walks one tree level by level; named tables found in the main tree are appended to `trees`. */
  private async walkTree(tree: Tree, trees: Tree[]): Promise<void> {
    const { db } = tree;
    const problem = dbProblem(db, tree.kind, this.lastPage);
    if (problem !== null) throw new Damage(`${tree.name}: ${problem}`);
    if (db.root === null) return;
    const found = { branchPages: 0, leafPages: 0, overflowPages: 0, entries: 0 };
    const overflows: OverflowRef[] = [];
    this.claim(db.root, 1, `${tree.name}: root`);
    let level: number[] = [db.root];
    for (let depth = 1; depth <= db.depth; depth++) {
      const leaf = depth === db.depth;
      const children: number[] = [];
      await eachLimit(level, READ_CONCURRENCY, async (pgno) => {
        const page = await this.read(pgno * this.pageSize, this.pageSize);
        const where = `${tree.name}: page ${pgno}`;
        if (leaf) {
          found.leafPages++;
          found.entries += this.leafPage(page, pgno, where, tree, trees, overflows);
        } else {
          found.branchPages++;
          for (const child of this.branchPage(page, pgno, where)) {
            this.claim(child, 1, `${where}: child`);
            children.push(child);
          }
        }
      });
      level = children;
    }
    // overflow values in page order: their first pages are read as the disk lays them out
    overflows.sort((a, b) => a.pgno - b.pgno);
    await eachLimit(overflows, READ_CONCURRENCY, async (ref) => {
      found.overflowPages += ref.pages;
      const len = ref.freeRecord ? PAGE_HEADER_BYTES + ref.valueBytes : PAGE_HEADER_BYTES;
      const head = await this.read(ref.pgno * this.pageSize, len);
      this.header(head, ref.pgno, `${ref.where}: overflow page ${ref.pgno}`, P_OVERFLOW);
      const pages = head.readUInt32LE(PAGE.pages);
      if (pages !== ref.pages) throw new Damage(`${ref.where}: overflow page ${ref.pgno} says ${pages} pages, its node ${ref.pages}`);
      if (ref.freeRecord) this.freeRecord(head.subarray(PAGE_HEADER_BYTES), ref.where);
    });
    const want = { branchPages: db.branchPages, leafPages: db.leafPages, overflowPages: db.overflowPages, entries: db.entries };
    for (const k of Object.keys(want) as (keyof typeof want)[]) {
      if (found[k] !== want[k]) throw new Damage(`${tree.name}: ${found[k]} ${k} found, its record says ${want[k]}`);
    }
  }

  /**
   * Checks a page header: its own page number, its kind (and no other flag: LMDB's bookkeeping
   * flags are never written), no LEAF2 key size, and the transaction that wrote it, which the
   * snapshot's must not precede (LMDB takes a later one for a page of its own write transaction).
   */
  private header(page: Buffer, pgno: number, where: string, kind: number): void {
    const headerPgno = u64(page, PAGE.pgno);
    if (headerPgno !== pgno) throw new Damage(`${where}: its header says page ${page.readBigUInt64LE(PAGE.pgno)}`);
    const flags = page.readUInt16LE(PAGE.flags);
    if (flags !== kind) throw new Damage(`${where}: flags 0x${flags.toString(16)}, expected 0x${kind.toString(16)} (${KIND_NAMES[kind]})`);
    const pad = page.readUInt16LE(PAGE.pad);
    if (pad !== 0) throw new Damage(`${where}: pad field ${pad}`);
    const txnId = page.readBigUInt64LE(PAGE.txnId);
    if (txnId < 1n || txnId > this.meta.txnId) throw new Damage(`${where}: written by transaction ${txnId}, the snapshot is transaction ${this.meta.txnId}`);
  }

  /** Node offsets of a branch or leaf page, checked against the page's bounds. */
  private nodes(page: Buffer, pgno: number, where: string, kind: number): number[] {
    this.header(page, pgno, where, kind);
    const lower = page.readUInt16LE(PAGE.lower);
    const upper = page.readUInt16LE(PAGE.upper);
    if (lower % 2 !== 0 || lower > upper || PAGE_HEADER_BYTES + upper > this.pageSize) throw new Damage(`${where}: free space ${lower}..${upper} does not fit the page`);
    const out: number[] = [];
    for (let i = 0; i < lower / 2; i++) {
      const ptr = page.readUInt16LE(PAGE_HEADER_BYTES + 2 * i);
      const at = PAGE_HEADER_BYTES + ptr;
      if (ptr < upper || at + NODE_HEADER_BYTES > this.pageSize) throw new Damage(`${where}: node ${i} at ${at} is outside the page's nodes`);
      const keyBytes = page.readUInt16LE(at + 6);
      if (at + NODE_HEADER_BYTES + keyBytes > this.pageSize) throw new Damage(`${where}: node ${i}: a key of ${keyBytes} bytes runs past the page`);
      out.push(at);
    }
    return out;
  }

  private branchPage(page: Buffer, pgno: number, where: string): number[] {
    const nodes = this.nodes(page, pgno, where, P_BRANCH);
    if (nodes.length === 0) throw new Damage(`${where}: a branch page without children`);
    // a branch node's child page number: lo u16 | hi u16 << 16 | flags u16 << 32
    return nodes.map((at) => page.readUInt16LE(at) + page.readUInt16LE(at + 2) * 0x1_0000 + page.readUInt16LE(at + 4) * 0x1_0000_0000);
  }

  /** Checks a leaf page's nodes; returns how many there are. */
  private leafPage(page: Buffer, pgno: number, where: string, tree: Tree, trees: Tree[], overflows: OverflowRef[]): number {
    const nodes = this.nodes(page, pgno, where, P_LEAF);
    nodes.forEach((at, i) => {
      const valueBytes = page.readUInt16LE(at) + page.readUInt16LE(at + 2) * 0x1_0000;
      const flags = page.readUInt16LE(at + 4);
      const keyBytes = page.readUInt16LE(at + 6);
      const data = at + NODE_HEADER_BYTES + keyBytes;
      const node = `${where}: node ${i}`;
      if (tree.kind === 'free' && keyBytes !== 8) throw new Damage(`${node}: a free-page record's key of ${keyBytes} bytes`);
      if ((flags & ~(F_BIGDATA | F_SUBDATA)) !== 0 || flags === (F_BIGDATA | F_SUBDATA)) throw new Damage(`${node}: flags 0x${flags.toString(16)}`);
      if ((flags & F_SUBDATA) !== 0) {
        if (tree.kind !== 'main' || valueBytes !== DB_RECORD_BYTES || data + DB_RECORD_BYTES > this.pageSize) throw new Damage(`${node}: a table record where none belongs`);
        // lmdb-js names a table with its NUL-terminated name
        const name = page.toString('utf8', at + NODE_HEADER_BYTES, data).replace(/\0$/, '');
        trees.push({ name: `table ${JSON.stringify(name)}`, db: dbRecord(page, data), kind: 'table', table: name });
        return;
      }
      if (tree.table !== undefined && this.opts.keyProblem) {
        const p = this.opts.keyProblem(tree.table, page.subarray(at + NODE_HEADER_BYTES, data));
        if (p !== null) throw new Damage(`${node}: ${p}`);
      }
      if ((flags & F_BIGDATA) !== 0) {
        if (data + OVERFLOW_REF_BYTES > this.pageSize) throw new Damage(`${node}: its overflow reference runs past the page`);
        const ovPgno = u64(page, data);
        const pages = u64(page, data + 16);
        // an overflow value starts with a page header: ceil((header + value) / pageSize) pages at least
        const need = Math.floor((PAGE_HEADER_BYTES - 1 + valueBytes) / this.pageSize) + 1;
        if (!(pages >= need)) throw new Damage(`${node}: a value of ${valueBytes} bytes in ${pages} overflow pages`);
        this.claim(ovPgno, pages, `${node}: overflow value`);
        overflows.push({ pgno: ovPgno, pages, valueBytes, freeRecord: tree.kind === 'free', where: node });
        return;
      }
      if (data + valueBytes > this.pageSize) throw new Damage(`${node}: a value of ${valueBytes} bytes runs past the page`);
      if (tree.kind === 'free') this.freeRecord(page.subarray(data, data + valueBytes), node);
    });
    return nodes.length;
  }

  /** Free pages listed by the free-page records (checked against the trees' pages at the end). */
  readonly freePages: [number, number][] = [];

  /**
   * A free-page record (lmdb-js's list): a count u64, then that many i64 entries, each 0 (a gap),
   * a page number, or -n followed by the first page number of a run of n pages. Every page named
   * must be one LMDB could hand out: inside the snapshot's pages.
   */
  private freeRecord(value: Buffer, where: string): void {
    if (value.length < 8 || value.length % 8 !== 0) throw new Damage(`${where}: a free-page record of ${value.length} bytes`);
    const count = u64(value, 0);
    if (!((count + 1) * 8 <= value.length)) throw new Damage(`${where}: a free-page record of ${value.length} bytes counts ${count} entries`);
    for (let i = 1; i <= count; i++) {
      const e = value.readBigInt64LE(8 * i);
      if (e === 0n) continue;
      let n = 1n;
      let first = e;
      if (e < 0n) {
        n = -e;
        if (++i > count) throw new Damage(`${where}: a run of ${n} free pages without its first page`);
        first = value.readBigInt64LE(8 * i);
      }
      if (first < BigInt(META_PAGES) || first + n - 1n > BigInt(this.lastPage)) throw new Damage(`${where}: free pages ${first}..${first + n - 1n} outside pages ${META_PAGES}..${this.lastPage}`);
      this.freePages.push([Number(first), Number(n)]);
    }
  }
}

/**
 * Walks every tree of the snapshot LMDB would open from `file` (see the module comment) and says
 * whether LMDB can read and write it without faulting. Reads tree pages and the first page of each
 * overflow value; throws only when the file cannot be read at all.
 */
export async function verifyLmdbFile(file: string, opts: LmdbVerifyOptions = {}): Promise<LmdbVerifyResult> {
  const r = readSnapshot(file);
  if (r.kind === 'absent') return { ok: true, absent: true, pagesRead: 0, fileBytes: 0 };
  if (r.kind === 'damaged') return { ok: false, problem: r.problem };
  const fh = await openFile(file, 'r');
  try {
    const walker = new Walker(fh, r.snapshot.meta, r.snapshot.fileBytes, opts);
    try {
      await walker.run();
    } catch (err) {
      if (err instanceof Damage) return { ok: false, problem: err.message };
      throw err;
    }
    return { ok: true, absent: false, pagesRead: walker.pagesRead, fileBytes: r.snapshot.fileBytes };
  } finally {
    await fh.close();
  }
}
