/**
 * The LMDB cache store and a damaged `data.mdb` (test/storage-gateway/cache-damage.test.ts runs the
 * same through `strata gateway`): LMDB maps the file and faults on damage (SIGSEGV, SIGBUS), so the
 * store checks it with plain reads before LMDB opens it, removes a damaged one and starts empty.
 * A clean close costs the next open only the meta check; a run that did not close the store (a
 * real SIGKILL of a child process here) makes it walk every tree, and a healthy file survives.
 * Damage cases are checked against LMDB itself, in child processes: whenever LMDB fails or faults
 * on a damaged file, the check must have called it damaged.
 */
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { closeSync, cpSync, existsSync, openSync, readFileSync, readSync, statSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLEAN_CLOSE_FILE, DATA_FILE, type LmdbOpenCheck } from '../../src/storage-gateway/cache/lmdb-integrity.js';
import { cacheKeyProblem, LmdbCacheStore } from '../../src/storage-gateway/cache/lmdb.js';
import { verifyLmdbFile } from '../../src/storage-gateway/cache/lmdb-verify.js';
import { tempDir } from '../support/gateway.js';

const PAGE = 4096;
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const LMDB_TS = new URL('../../src/storage-gateway/cache/lmdb.ts', import.meta.url).href;
const LMDB_JS = import.meta.resolve('lmdb');

/** Block ids as the gateway makes them: 32 hex digits. */
const blockId = (i: number): string => i.toString(16).padStart(32, '0');

const BLOCKS = 24;
const RANGES = 8;

/** Length of range `r` of block `b`: every other one in overflow pages (as FILL_JS writes them). */
const rangeLength = (b: number, r: number): number => (r % 2 === 0 ? 300 + b * 37 + r : 16_384 + b * 977 + r * 131);
/** The bytes of range `r` of block `b` (distinct per range, so a mix-up shows). */
const rangeBytes = (b: number, r: number): Buffer => Buffer.alloc(rangeLength(b, r), (b * RANGES + r) & 0xff);

/**
 * Fills the store `s` with BLOCKS blocks of RANGES ranges ({@link rangeBytes}) and a pointer each,
 * waiting for the commits after each block: plain JS, so that a child process runs the same.
 */
const FILL_JS = `
  for (let b = 0; b < ${BLOCKS}; b++) {
    const id = b.toString(16).padStart(32, '0');
    s.setPointer('${'5'.repeat(32)}/blocks/acme/' + b + '.block', { blockId: id, checkedAtMs: 1000 + b, tailOffset: 0, size: 1 });
    for (let r = 0; r < ${RANGES}; r++) {
      const len = r % 2 === 0 ? 300 + b * 37 + r : 16384 + b * 977 + r * 131;
      s.putRange(id, r * 100000, Buffer.alloc(len, (b * ${RANGES} + r) & 255));
    }
    await s.flush();
  }`;

/** Child code: opens a store in `dir`, fills it, then runs `then`. */
function fillCode(dir: string, then: string): string {
  return `
    const { LmdbCacheStore } = await import(${JSON.stringify(LMDB_TS)});
    const s = await LmdbCacheStore.open({ dir: ${JSON.stringify(dir)}, maxBytes: 64 * 2 ** 20 });
    ${FILL_JS}
    ${then}`;
}

/** {@link FILL_JS} in this process. */
async function fill(s: LmdbCacheStore): Promise<void> {
  for (let b = 0; b < BLOCKS; b++) {
    s.setPointer(`${'5'.repeat(32)}/blocks/acme/${b}.block`, { blockId: blockId(b), checkedAtMs: 1000 + b, tailOffset: 0, size: 1 });
    for (let r = 0; r < RANGES; r++) s.putRange(blockId(b), r * 100_000, rangeBytes(b, r));
    await s.flush();
  }
}

/** Every range {@link fill} wrote is in `s`, bit for bit. */
function holdsAll(s: LmdbCacheStore): boolean {
  for (let b = 0; b < BLOCKS; b++) {
    for (let r = 0; r < RANGES; r++) {
      const want = rangeBytes(b, r);
      const got = s.getRange(blockId(b), r * 100_000, want.length);
      if (!got || !got.equals(want)) return false;
    }
  }
  return true;
}

interface Opened {
  readonly store: LmdbCacheStore;
  readonly resets: string[];
  readonly checks: LmdbOpenCheck[];
}

/** Opens the store in `dir` (closed at the end of `t`), noting its resets and checks. */
async function openStore(t: Test, dir: string): Promise<Opened> {
  const resets: string[] = [];
  const checks: LmdbOpenCheck[] = [];
  const store = await LmdbCacheStore.open({ dir, maxBytes: 64 * 2 ** 20, onReset: (r) => resets.push(r), onCheck: (c) => checks.push(c) });
  t.teardown(() => store.close());
  return { store, resets, checks };
}

/** A store in a fresh directory, filled and closed cleanly. */
async function filledDir(t: Test): Promise<string> {
  const dir = tempDir(t, 'cache-damage');
  const s = await LmdbCacheStore.open({ dir, maxBytes: 64 * 2 ** 20 });
  await fill(s);
  await s.close();
  return dir;
}

/** Runs `code` (an ES module body) in a child node with tsx; returns how it ended. */
function runChild(code: string): { status: number | null; signal: NodeJS.Signals | null; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, signal: r.signal, stderr: r.stderr };
}

function flipByte(file: string, at: number): void {
  const fd = openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, at);
  } finally {
    closeSync(fd);
  }
}

/** Damages as the black-box tests did (/tmp/probe-r/repro-cache-corrupt.sh) and a few more. */
const DAMAGES: { name: string; damage: (file: string) => void; problem: RegExp }[] = [
  {
    name: 'both meta pages overwritten',
    damage: (f) => {
      const fd = openSync(f, 'r+');
      writeSync(fd, Buffer.alloc(2 * PAGE, 0xff), 0, 2 * PAGE, 0);
      closeSync(fd);
    },
    problem: /meta page 0: not a meta page/,
  },
  {
    name: 'the headers of both meta pages zeroed',
    damage: (f) => {
      const fd = openSync(f, 'r+');
      writeSync(fd, Buffer.alloc(64), 0, 64, 16);
      writeSync(fd, Buffer.alloc(64), 0, 64, PAGE + 16);
      closeSync(fd);
    },
    problem: /meta page 0: not a meta page \(page number 0, flags 0x0\)/,
  },
  {
    name: 'meta page 1 with another magic',
    damage: (f) => flipByte(f, PAGE + 24),
    problem: /meta page 1: magic 0xbeefc021, expected 0xbeefc0de/,
  },
  { name: 'the file truncated to 100 kB', damage: (f) => truncateSync(f, 100_000), problem: /past the end of the file \(100000 bytes\)/ },
  { name: 'the file truncated inside its meta pages', damage: (f) => truncateSync(f, 5000), problem: /5000 bytes, less than its two meta pages/ },
  {
    name: 'one byte flipped in every page after the metas',
    damage: (f) => {
      for (let off = 2 * PAGE; off < statSync(f).size; off += PAGE) flipByte(f, off + 3000);
    },
    problem: /page \d+/,
  },
];

t.test('after a clean close only the metas are read, and the contents are kept', async (t) => {
  const dir = await filledDir(t);
  t.ok(existsSync(join(dir, CLEAN_CLOSE_FILE)), `${CLEAN_CLOSE_FILE} written at the close`);
  const { store, resets, checks } = await openStore(t, dir);
  t.equal(checks.length, 1);
  t.equal(checks[0]!.walked, null, 'no walk');
  t.equal(checks[0]!.pagesRead, 0);
  t.equal(checks[0]!.damage, null);
  t.same(resets, []);
  t.notOk(existsSync(join(dir, CLEAN_CLOSE_FILE)), 'the stamp is gone while the store is open (a crash leaves none)');
  t.ok(holdsAll(store), 'every range, bit for bit');
  await store.close();
  const again = await openStore(t, dir);
  t.equal(again.checks[0]!.walked, null, 'a second clean restart does not walk either');
});

t.test('a fresh directory is not checked', async (t) => {
  const { checks, resets } = await openStore(t, tempDir(t, 'cache-damage'));
  t.same(checks, []);
  t.same(resets, []);
});

t.test('after a run killed with SIGKILL every tree is walked, and a healthy file is kept whole', async (t) => {
  const dir = tempDir(t, 'cache-damage');
  // a child fills the store, waits for its commits, and is killed before it can close it
  const child = runChild(fillCode(dir, `process.kill(process.pid, 'SIGKILL');`));
  t.equal(child.signal, 'SIGKILL', `the child was killed (${child.stderr})`);
  t.notOk(existsSync(join(dir, CLEAN_CLOSE_FILE)), 'no clean-close stamp');
  const { store, resets, checks } = await openStore(t, dir);
  t.match(checks[0]!.walked, /the last run did not close the cache/);
  t.equal(checks[0]!.damage, null, 'no damage found');
  t.ok(checks[0]!.pagesRead > BLOCKS * RANGES / 2, `${checks[0]!.pagesRead} pages read`);
  t.same(resets, [], 'no reset');
  t.equal(store.blockCount, BLOCKS);
  t.ok(holdsAll(store), 'every range, bit for bit');
});

t.test('a file changed after a clean close is walked', async (t) => {
  const dir = await filledDir(t);
  const file = join(dir, DATA_FILE);
  // the same byte written back: the contents are as they were, the file's times are not
  const fd = openSync(file, 'r+');
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, 0);
  writeSync(fd, b, 0, 1, 0);
  closeSync(fd);
  const { store, resets, checks } = await openStore(t, dir);
  t.match(checks[0]!.walked, /the file changed since the cache was closed/);
  t.equal(checks[0]!.damage, null);
  t.same(resets, []);
  t.ok(holdsAll(store));
});

for (const d of DAMAGES) {
  t.test(`${d.name}: the file is removed and the store starts empty, and works`, async (t) => {
    const dir = await filledDir(t);
    const file = join(dir, DATA_FILE);
    d.damage(file);
    const { store, resets, checks } = await openStore(t, dir);
    t.equal(resets.length, 1, 'one reset');
    t.ok(resets[0]!.startsWith(`cache file ${file} is damaged (`), `the reason names the file: ${resets[0]}`);
    t.match(resets[0], d.problem, 'and says what is wrong');
    t.equal(checks[0]!.damage !== null, true);
    t.equal(store.blockCount, 0, 'empty');
    t.equal(store.usedBytes, 0);
    t.equal(store.getRange(blockId(0), 0, rangeBytes(0, 0).length), undefined);
    await fill(store);
    t.ok(holdsAll(store), 'caches again');
    await store.close();
    const again = await openStore(t, dir);
    t.same(again.resets, [], 'the new file is healthy');
    t.equal(again.checks[0]!.walked, null);
    t.ok(holdsAll(again.store), 'and kept');
  });
}

t.test('a range key whose first byte changed is found (lmdb would read it as a number, and no eviction would reach it)', async (t) => {
  const dir = await filledDir(t);
  const file = join(dir, DATA_FILE);
  const bytes = readFileSync(file);
  const at = bytes.indexOf(`${blockId(5)}/`, 0, 'latin1');
  t.ok(at > 0, 'a key of block 5 in the ranges table');
  const fd = openSync(file, 'r+');
  writeSync(fd, Buffer.from([0x10]), 0, 1, at);
  closeSync(fd);
  t.equal(cacheKeyProblem('ranges', Buffer.from(`\x10${blockId(5).slice(1)}/0/485`, 'latin1')), `key "\\u0010${blockId(5).slice(1)}/0/485" is not one this cache writes`);
  const { store, resets } = await openStore(t, dir);
  t.match(resets, [/^cache file .* is damaged \(table "ranges": page \d+: node \d+: key "\\u0010.* is not one this cache writes\)/]);
  t.equal(store.blockCount, 0);
});

t.test('a damaged file left by a run killed with SIGKILL is found (one byte flipped per page)', async (t) => {
  const dir = tempDir(t, 'cache-damage');
  const child = runChild(fillCode(dir, `process.kill(process.pid, 'SIGKILL');`));
  t.equal(child.signal, 'SIGKILL');
  const file = join(dir, DATA_FILE);
  DAMAGES.find((d) => d.name.startsWith('one byte'))!.damage(file);
  const { store, resets } = await openStore(t, dir);
  t.match(resets, [new RegExp(`^cache file ${file} is damaged \\(`)]);
  t.equal(store.blockCount, 0);
});

/** Opens `dir` with lmdb in a child, reads every key and value of every table, then deletes and writes; how it ended. */
function lmdbOnFile(dir: string): { ok: boolean; how: string } {
  const r = spawnSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `
      const { open } = await import(${JSON.stringify(LMDB_JS)});
      const env = open({ path: ${JSON.stringify(dir)}, maxDbs: 8, pageSize: 4096, mapSize: 2 ** 30 });
      for (const name of ['meta', 'ranges', 'pointers', 'blocks']) {
        const db = env.openDB(name, { encoding: 'binary' });
        for (const { value } of db.getRange({})) if (value.length < 0) throw new Error();
      }
      const ranges = env.openDB('ranges', { encoding: 'binary' });
      let i = 0;
      for (const key of ranges.getKeys({})) if (i++ % 3 === 0) ranges.remove(key);
      for (let k = 0; k < 40; k++) ranges.put('f'.repeat(32) + '/' + k + '/1', Buffer.alloc(3000 + k * 500, k));
      await env.flushed;
      await env.close();`,
    ],
    { cwd: ROOT, encoding: 'utf8', timeout: 60_000 },
  );
  return { ok: r.status === 0, how: r.signal ?? `exit ${r.status}: ${r.stderr.split('\n').find((l) => /Error|MDB_|error/.test(l)) ?? ''}` };
}

t.test('whenever LMDB fails or faults on a damaged file, the check found the damage', async (t) => {
  const base = await filledDir(t);
  // churn: deletes and rewrites leave a free-page tree with records in it
  {
    const s = await LmdbCacheStore.open({ dir: base, maxBytes: 2 * 2 ** 20 });
    await fill(s);
    await s.close();
  }
  const healthy = await verifyLmdbFile(join(base, DATA_FILE), { keyProblem: cacheKeyProblem });
  t.ok(healthy.ok, 'the healthy file passes');
  let seed = 12345;
  const rnd = (): number => {
    seed = (seed * 1_103_515_245 + 12_345) & 0x7fff_ffff;
    return seed / 0x7fff_ffff;
  };
  const size = statSync(join(base, DATA_FILE)).size;
  const pages = Math.floor(size / PAGE);
  const cases: { name: string; damage: (f: string) => void }[] = [];
  const everyPage = (at: number) => (f: string): void => {
    for (let p = 2; p < pages; p++) flipByte(f, p * PAGE + at);
  };
  for (let i = 0; i < 5; i++) {
    // a leaf's nodes sit at the end of its page, its node offsets after the header
    const tail = PAGE - 1 - Math.floor(rnd() * 1024);
    cases.push({ name: `a byte flipped at offset ${tail} of every page`, damage: everyPage(tail) });
    const head = 24 + Math.floor(rnd() * 64);
    cases.push({ name: `a byte flipped at offset ${head} of every page`, damage: everyPage(head) });
    const field = Math.floor(rnd() * 24);
    cases.push({ name: `byte ${field} of every page header flipped`, damage: everyPage(field) });
    const page = 2 + Math.floor(rnd() * (pages - 2));
    cases.push({
      name: `page ${page} zeroed`,
      damage: (f) => {
        const fd = openSync(f, 'r+');
        writeSync(fd, Buffer.alloc(PAGE), 0, PAGE, page * PAGE);
        closeSync(fd);
      },
    });
    const cut = Math.floor(rnd() * size);
    cases.push({ name: `truncated to ${cut} bytes`, damage: (f) => truncateSync(f, cut) });
  }
  let bothFailed = 0;
  for (const c of cases) {
    const dir = tempDir(t, 'cache-damage-case');
    cpSync(base, dir, { recursive: true });
    c.damage(join(dir, DATA_FILE));
    const check = await verifyLmdbFile(join(dir, DATA_FILE), { keyProblem: cacheKeyProblem });
    const lmdb = lmdbOnFile(dir);
    if (!lmdb.ok) {
      t.notOk(check.ok, `${c.name}: LMDB ${lmdb.how}; the check: ${check.ok ? 'no damage' : check.problem}`);
      if (!check.ok) bothFailed++;
    }
  }
  t.ok(bothFailed >= cases.length / 2, `${bothFailed} of ${cases.length} damages made LMDB fail, each found`);
});

t.test('the check reads the file LMDB wrote under churn as healthy, through clean closes and SIGKILLs', async (t) => {
  const dir = tempDir(t, 'cache-damage');
  for (let round = 0; round < 4; round++) {
    // a small budget: every round evicts most of the last one
    const code = `
      const { LmdbCacheStore } = await import(${JSON.stringify(LMDB_TS)});
      const s = await LmdbCacheStore.open({ dir: ${JSON.stringify(dir)}, maxBytes: 3 * 2 ** 20 });
      for (let b = 0; b < 60; b++) {
        const id = (${round} * 1000 + b).toString(16).padStart(32, '0');
        s.setPointer('${'7'.repeat(32)}/blocks/t/' + b + '.block', { blockId: id, checkedAtMs: b, tailOffset: 0, size: 1 });
        for (let r = 0; r < 6; r++) s.putRange(id, r * 70_000, Buffer.alloc(r % 2 ? 20_000 + b * 300 : 700 + b * 13, b + r));
        if (b % 7 === 6) { s.dropBlock((${round} * 1000 + b - 3).toString(16).padStart(32, '0')); await s.flush(); }
      }
      await s.flush();
      ${round % 2 === 0 ? `process.kill(process.pid, 'SIGKILL');` : 'await s.close();'}`;
    const child = runChild(code);
    t.equal(child.signal ?? child.status, round % 2 === 0 ? 'SIGKILL' : 0, `round ${round} ended as meant (${child.stderr})`);
    const r = await verifyLmdbFile(join(dir, DATA_FILE), { keyProblem: cacheKeyProblem });
    t.same(r.ok ? null : r.problem, null, `round ${round}: healthy`);
  }
  const { resets, store } = await openStore(t, dir);
  t.same(resets, []);
  t.ok(store.blockCount > 0);
});
