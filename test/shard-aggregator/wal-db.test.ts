/**
 * WalDb and WalStore on disk (real LevelDB): group commit, key order on read, counters and seal
 * surviving a reopen, recovery of interrupted creations and stray generations, the open-database
 * cap and writers waiting for a slot (a given-back log wakes them; they take the generation open by
 * then), deletion through the trash, and config mismatches.
 */
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import t from 'tap';
import { createLogger } from '../../src/common/logger.js';
import { ErrorCode, StrataError } from '../../src/errors.js';
import { decodeRun, encodeRun } from '../../src/format/run.js';
import { WalDb, type WalDbOptions } from '../../src/shard-aggregator/wal-db.js';
import { WalStore, WalStoreStopping, type WindowKey } from '../../src/shard-aggregator/wal-store.js';
import { tempDir } from '../support/aggregator.js';

const H = 4 * 3600 * 1000;
const W = 1793491200000n;
const logger = createLogger({ level: 'silent' });
const dbOpts: WalDbOptions = { writeBufferBytes: 1 << 20, sync: true };
const identity = { tenant: 'acme', shard: 1, numShards: 4, windowStart: W, windowEnd: W + BigInt(H), generation: 1, createdAtMs: 1 };

function run(id: number, k: number): Uint8Array {
  return encodeRun({ timestamps: BigInt64Array.of(W + BigInt(k)), values: Float64Array.of(id * 1000 + k) });
}

async function collectSeries(w: WalDb): Promise<{ id: bigint; values: number[] }[]> {
  const out: { id: bigint; values: number[] }[] = [];
  for await (const s of w.series()) out.push({ id: s.id, values: s.runs.map((r) => decodeRun(r).values[0]!) });
  return out;
}

t.test('WalDb: concurrent appends share synced writes; read back in (series, seq) order', async (t) => {
  const dir = join(tempDir('waldb'), 'db');
  const w = await WalDb.create(dir, identity, dbOpts);
  const wUse = w.acquire('writer');
  const n = 50;
  // request i writes series (i % 5) * 4 + 1 and series 1
  await Promise.all(Array.from({ length: n }, (_, i) => w.append([{ id: BigInt((i % 5) * 4 + 1), run: run((i % 5) * 4 + 1, i), samples: 1 }, { id: 1n, run: run(1, 100 + i), samples: 1 }], 1000 + i)));
  wUse.release(2000);
  t.equal(w.requests, n);
  t.ok(w.syncs < n, `${w.syncs} synced writes for ${n} requests`);
  t.equal(w.counters.entries, 2 * n);
  t.equal(w.counters.samples, 2 * n);
  t.equal(w.counters.lastSeq, BigInt(2 * n));
  t.equal(w.counters.lastWriteMs, 1000 + n - 1);
  const before = await collectSeries(w);
  t.same(before.map((s) => s.id), [1n, 5n, 9n, 13n, 17n], 'series in id order');
  const appendOrder = Array.from({ length: n }, (_, i) => (i % 5 === 0 ? [1000 + i, 1100 + i] : [1100 + i])).flat();
  t.same(before[0]!.values, appendOrder, 'the runs of one series come back in append (sequence) order');
  await w.close();
  const again = await WalDb.open(dir, dbOpts);
  t.same(again.identity, { ...identity, segment: 1 });
  t.same(again.counters, w.counters, 'counters survive a reopen');
  t.same(await collectSeries(again), before, 'same entries after a reopen');
  // sequence numbers continue after a reopen: new entries sort after old ones
  const againUse = again.acquire('writer');
  await again.append([{ id: 1n, run: run(1, 999), samples: 1 }], 3000);
  againUse.release(3000);
  t.equal((await collectSeries(again))[0]!.values.at(-1), 1999);
  await again.close();
});

t.test('WalDb: seal waits for writers, stops appends and survives a reopen', async (t) => {
  const dir = join(tempDir('waldb'), 'db');
  const w = await WalDb.create(dir, identity, dbOpts);
  const wUse = w.acquire('writer');
  const sealing = w.seal(5);
  t.equal(w.sealed, true, 'sealed for new writers at once');
  t.equal(w.sealedAtMs, null, 'marker not yet written while a writer is inside');
  t.throws(() => w.append([{ id: 1n, run: run(1, 1), samples: 1 }], 1), RangeError);
  wUse.release(5);
  await sealing;
  t.equal(w.sealedAtMs, 5);
  await w.close();
  t.equal((await WalDb.open(dir, dbOpts).then(async (x) => (await x.close(), x))).sealedAtMs, 5);
});

t.test('WalStore: recovery removes interrupted creations, seals stray generations, checks config', async (t) => {
  const root = tempDir('walstore');
  const opts = { dir: root, numShards: 4, blockDurationMs: H, maxOpen: 8, db: dbOpts, now: () => 10, logger };
  const key: WindowKey = { tenant: 'acme', shard: 1, windowStart: W };
  const wdir = join(root, 'wal', 'acme', W.toString().padStart(16, '0'));
  let store = await WalStore.open(opts);
  const g1 = await store.acquireWritable(key);
  await g1.wal.append([{ id: 1n, run: run(1, 1), samples: 1 }], 1);
  g1.release();
  await store.close();
  // a second generation left unsealed next to the first (cannot happen normally), and two
  // interrupted creations: an empty directory and a LevelDB without identity
  const g2 = await WalDb.create(join(wdir, '00001-000002'), { ...identity, generation: 2 }, dbOpts);
  await g2.close();
  mkdirSync(join(wdir, '00002-000001'));
  const bare = new ClassicLevel(join(wdir, '00003-000001'));
  await bare.open();
  await bare.close();
  store = await WalStore.open(opts);
  t.same(readdirSync(wdir).sort(), ['00001-000001', '00001-000002'], 'interrupted creations removed');
  const gens = store.gens(key);
  t.same(gens.map((g) => [g.identity.generation, g.sealed]), [[1, true], [2, false]], 'only the newest generation stays open');
  t.equal(store.openGen(key)?.identity.generation, 2);
  t.equal(store.totalBytes(), gens[0]!.counters.bytes);
  await store.close();
  await t.rejects(WalStore.open({ ...opts, numShards: 8 }), { constructor: StrataError, code: ErrorCode.CONFIG, message: /numShards 4 but the config says 8/ });
  await t.rejects(WalStore.open({ ...opts, blockDurationMs: H / 2 }), { constructor: StrataError, code: ErrorCode.CONFIG });
});

t.test('WalStore: one process per walDir; the lock goes with the process that held it, kill -9 included', async (t) => {
  const root = tempDir('walstore');
  const opts = { dir: root, numShards: 4, blockDurationMs: H, maxOpen: 8, db: dbOpts, now: () => 10, logger };
  const first = await WalStore.open(opts);
  await t.rejects(WalStore.open(opts), { constructor: StrataError, code: ErrorCode.CONFIG, message: new RegExp(`walDir ${root} is in use by another aggregator`) }, 'a second store in this process');
  await first.close();
  // another process holds it (as a second aggregator started on the same walDir would)
  const holder = spawn(process.execPath, ['--input-type=module', '-e', `import { ClassicLevel } from 'classic-level'; const db = new ClassicLevel(${JSON.stringify(join(root, 'lock'))}); await db.open(); console.log('held'); setInterval(() => {}, 1000);`], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => holder.kill('SIGKILL'));
  await new Promise<void>((resolve, reject) => {
    holder.stdout!.once('data', () => resolve());
    holder.once('exit', (c) => reject(new Error(`the holder exited (${c})`)));
  });
  await t.rejects(WalStore.open(opts), { constructor: StrataError, code: ErrorCode.CONFIG, message: /is in use by another aggregator/ }, 'refused while another process holds it');
  const exited = new Promise((resolve) => holder.once('exit', resolve));
  holder.kill('SIGKILL');
  await exited;
  const after = await WalStore.open(opts);
  t.pass('taken once that process was killed');
  await after.close();
});

t.test('WalStore: at most maxOpen databases stay open; closed ones reopen on use; remove() deletes', async (t) => {
  let tick = 0; // an injected clock: only the order of uses matters
  const root = tempDir('walstore');
  const store = await WalStore.open({ dir: root, numShards: 4, blockDurationMs: H, maxOpen: 2, db: dbOpts, now: () => ++tick, logger });
  const keys = Array.from({ length: 5 }, (_, i) => ({ tenant: 'acme', shard: 1, windowStart: W + BigInt(i * H) }));
  for (const [i, key] of keys.entries()) {
    const w = await store.acquireWritable(key);
    await w.wal.append([{ id: 1n, run: run(1, i), samples: 1 }], i);
    w.release();
  }
  const count = () => store.all().flatMap((ww) => ww.gens).filter((g) => g.isOpen).length;
  // closing is asynchronous: the next acquisition settles it
  const againUse = await store.acquireWritable(keys[0]!);
  const again = againUse.wal;
  t.equal(again.isOpen, true, 'a closed log reopens for a writer');
  await again.append([{ id: 5n, run: run(5, 9), samples: 1 }], 9);
  againUse.release();
  againUse.release(); // a second release gives nothing back twice
  t.equal(again.users, 0, 'every use given back');
  await store.acquireWritable(keys[1]!).then((w) => w.release());
  t.ok(count() <= 3, `${count()} databases open`);
  t.equal(again.counters.entries, 2);
  await again.seal(10);
  store.use(again);
  await store.remove(again);
  t.equal(store.gens(keys[0]!).length, 0, 'forgotten');
  t.notOk(existsSync(again.dir), 'directory gone');
  t.same(readdirSync(join(root, 'trash')), [], 'trash emptied');
  await store.close();
});

t.test('WalStore: many writers of many windows waiting for few slots all get one, woken one at a time, never more than maxOpen taking writes', async (t) => {
  let tick = 0;
  const root = tempDir('walstore-herd');
  const store = await WalStore.open({ dir: root, numShards: 4, blockDurationMs: H, maxOpen: 3, db: dbOpts, now: () => ++tick, logger });
  const writing = () => store.all().flatMap((ww) => ww.gens).filter((g) => g.isOpen && !g.sealed).length;
  let most = 0;
  // 60 writers at once, each on its own window (a new log per write), twice over
  const keys = Array.from({ length: 60 }, (_, i) => ({ tenant: `t${i % 6}`, shard: i % 4, windowStart: W + BigInt(Math.floor(i / 24) * H) }));
  for (let round = 0; round < 2; round++) {
    await Promise.all(
      keys.map(async (key, i) => {
        const use = await store.acquireWritable(key);
        most = Math.max(most, writing());
        await use.wal.append([{ id: BigInt(i), run: run(i, round), samples: 1 }], round);
        use.release();
      }),
    );
  }
  t.ok(most <= 3 + 1, `at most maxOpen (+1 closing) logs taking writes at once (${most})`);
  t.equal(store.all().flatMap((ww) => ww.gens).reduce((n, g) => n + g.counters.entries, 0), 120, 'every write went in');
  await store.close();
});

t.test('WalStore: refuseWaiters() (shutdown) makes writers waiting for a slot give up with WalStoreStopping; open logs keep taking writes', async (t) => {
  const root = tempDir('walstore-refuse');
  const store = await WalStore.open({ dir: root, numShards: 4, blockDurationMs: H, maxOpen: 1, db: dbOpts, now: () => 10, logger });
  const held = await store.acquireWritable({ tenant: 'a', shard: 0, windowStart: W });
  const waiting = store.acquireWritable({ tenant: 'b', shard: 0, windowStart: W }).then(
    () => 'got a slot',
    (err: unknown) => err,
  );
  await new Promise((r) => setImmediate(r));
  t.equal(store.refuseWaiters(), true, 'one was waiting');
  const err = await waiting;
  t.ok(err instanceof WalStoreStopping, String(err));
  await held.wal.append([{ id: 1n, run: run(1, 1), samples: 1 }], 1);
  held.release();
  t.equal(held.wal.counters.entries, 1, 'the open log took its write');
  await t.rejects(store.acquireWritable({ tenant: 'c', shard: 0, windowStart: W }), WalStoreStopping, 'a new log is refused too');
  t.equal(store.refuseWaiters(), false, 'none waiting now');
  await store.close();
});

/** Allocated bytes of every file under `dir` (the store's lock database apart), walked here independently of the store. */
function allocatedUnder(dir: string): number {
  let n = 0;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (name === 'lock') continue;
    const st = statSync(p);
    n += st.isDirectory() ? allocatedUnder(p) : st.blocks * 512;
  }
  return n;
}

t.test('WalStore: sealing a backlog of windows keeps at most maxOpen databases open; the disk measure stays exact and walks only logs that changed', async (t) => {
  const root = tempDir('walstore-backlog');
  const store = await WalStore.open({ dir: root, numShards: 4, blockDurationMs: H, maxOpen: 2, db: dbOpts, now: () => 10, logger });
  const fds = () => readdirSync('/proc/self/fd').length;
  const keys = Array.from({ length: 40 }, (_, i) => ({ tenant: 'acme', shard: 1, windowStart: W + BigInt(i * H) }));
  const fds0 = fds();
  for (const [i, key] of keys.entries()) {
    const w = await store.acquireWritable(key);
    await w.wal.append([{ id: 1n, run: run(1, i), samples: 1 }], i);
    w.release();
  }
  // every idle window sealed at once, as the aggregator's tick does
  await Promise.all(keys.map((k) => store.sealOpen(k)));
  const open = store.all().flatMap((ww) => ww.gens).filter((g) => g.isOpen).length;
  t.ok(open <= 2, `${open} of 40 sealed logs open`);
  t.ok(fds() - fds0 < 20, `${fds() - fds0} more descriptors for 40 sealed logs`);

  await store.measureDisk();
  t.equal(store.diskUsage().usedBytes, allocatedUnder(root), 'measured: every file under walDir');
  // a file put behind the store's back into a closed log that nobody used since: not walked again
  const sealed = store.gens(keys[5]!)[0]!;
  t.equal(sealed.isOpen, false);
  writeFileSync(join(sealed.dir, 'outsider'), Buffer.alloc(64 * 1024, 1));
  await store.measureDisk();
  t.equal(store.diskUsage().usedBytes, allocatedUnder(root) - statSync(join(sealed.dir, 'outsider')).blocks * 512, 'an unchanged log is not walked again');
  rmSync(join(sealed.dir, 'outsider'));
  // a log used since (a flush reading it) is walked again
  const use = store.use(sealed);
  await sealed.ensureOpen();
  for await (const s of sealed.series()) t.equal(s.id, 1n);
  use.release();
  await store.measureDisk();
  t.equal(store.diskUsage().usedBytes, allocatedUnder(root), 'exact again after a use');
  // a window written again (a new generation) and a log removed
  const w = await store.acquireWritable(keys[7]!);
  await w.wal.append([{ id: 2n, run: run(2, 1), samples: 1 }], 1);
  w.release();
  await store.sealOpen(keys[7]!); // (an open log taking writes is counted a write buffer ahead)
  const gone = store.gens(keys[9]!)[0]!;
  store.use(gone);
  await store.remove(gone);
  await store.measureDisk();
  t.equal(store.diskUsage().usedBytes, allocatedUnder(root), 'exact after a write and a removal');
  await store.close();
});

t.test('WalStore: a writer that waited for a slot takes the generation open by then: the one another writer made, or a new one after a seal', async (t) => {
  const root = tempDir('walstore-slots');
  const store = await WalStore.open({ dir: root, numShards: 4, blockDurationMs: H, maxOpen: 1, db: dbOpts, now: () => 10, logger });
  t.teardown(() => store.close());
  const [a, b, c] = [0, 1, 2].map((i) => ({ tenant: 'acme', shard: 1, windowStart: W + BigInt(i * H) })) as [WindowKey, WindowKey, WindowKey];

  // two writers of window B wait for the one slot, which A's writer holds
  const holdA = await store.acquireWritable(a);
  const both = [store.acquireWritable(b), store.acquireWritable(b)] as const;
  t.equal(store.gens(b).length, 0, 'nothing is made while the slot is taken');
  holdA.release();
  // one of them makes B's generation; the other waits until that is given back, then takes it
  // (a second generation taking writes would never be sealed or flushed)
  const one = await Promise.race(both);
  await one.wal.append([{ id: 1n, run: run(1, 1), samples: 1 }], 1);
  one.release();
  const [x, y] = await Promise.all(both);
  t.equal(x.wal, y.wal, 'both writers got the same generation');
  t.equal(store.gens(b).length, 1, 'one generation of B');
  const other = x === one ? y : x;
  await other.wal.append([{ id: 2n, run: run(2, 2), samples: 1 }], 2);
  other.release();
  const genB = store.gens(b)[0]!;
  t.equal(genB.counters.entries, 2);

  // C's writer takes the slot (B's idle generation is closed for it); a writer of B waits, and B
  // is sealed meanwhile (a flush starting): the writer gets a new generation, the sealed one is
  // not opened for writing again
  const holdC = await store.acquireWritable(c);
  t.notOk(genB.isOpen, "B's generation was closed to free the slot");
  const waiting = store.acquireWritable(b);
  await store.sealOpen(b);
  t.ok(genB.sealed, 'sealed while a writer waits for it');
  holdC.release();
  const next = await waiting;
  t.not(next.wal, genB, 'the writer got a new generation');
  t.equal(next.wal.identity.generation, genB.identity.generation + 1);
  t.notOk(next.wal.sealed);
  await next.wal.append([{ id: 3n, run: run(3, 3), samples: 1 }], 3);
  next.release();
  t.same(store.gens(b).map((g) => g.counters.entries), [2, 1], 'the sealed generation took nothing more');
});

t.test('WalStore: remove() forgets a log that left its directory even when cleaning up after it fails (a restart used to be needed)', async (t) => {
  // on the checkout's own file system (chattr needs a real one: ext4 and the like)
  const root = mkdtempSync(join(process.cwd(), '.strata-test-walremove-'));
  // root ignores permissions, so as root a file is made immutable; otherwise a directory read-only
  const asRoot = process.getuid?.() === 0;
  t.teardown(() => {
    // wherever the log ended up
    for (const f of readdirSync(root, { recursive: true, encoding: 'utf8' })) {
      const p = join(root, f);
      if (basename(f) === 'pinned') execFileSync('chattr', ['-i', p]);
      else if (statSync(p).isDirectory()) chmodSync(p, 0o700);
    }
    rmSync(root, { recursive: true, force: true });
  });
  const store = await WalStore.open({ dir: root, numShards: 4, blockDurationMs: H, maxOpen: 2, db: dbOpts, now: () => 10, logger });
  const key: WindowKey = { tenant: 'acme', shard: 1, windowStart: W };
  const g = await store.acquireWritable(key);
  await g.wal.append([{ id: 1n, run: run(1, 1), samples: 1 }], 1);
  g.release();
  const w = g.wal;
  await w.seal(10);
  // a file of the log that cannot be removed: the rename into the trash works, the removal fails
  if (asRoot) {
    const pinned = join(w.segmentDirs[0]!, 'pinned');
    writeFileSync(pinned, 'x');
    execFileSync('chattr', ['+i', pinned]);
  } else chmodSync(w.segmentDirs[0]!, 0o500);
  store.use(w);
  await store.remove(w);
  t.equal(store.gens(key).length, 0, 'forgotten all the same');
  t.notOk(existsSync(w.dir), 'its directory is gone (in the trash)');
  const [inTrash] = readdirSync(join(root, 'trash'));
  t.ok(inTrash !== undefined, 'left in the trash for start-up to empty');
  // the window takes a new log at once
  const next = await store.acquireWritable(key);
  t.not(next.wal, w, 'a new log for the window');
  next.release();
  await store.close();
});

t.test('WalDb: a WAL many times the write buffer rolls over to new segments, never compacts, and reads back merged in order', async (t) => {
  const dir = join(tempDir('waldb-seg'), 'gen');
  const opts: WalDbOptions = { writeBufferBytes: 64 * 1024, sync: false, remapBytes: 200 * 1024 };
  const w = await WalDb.create(dir, identity, opts);
  const wUse = w.acquire('writer');
  // 40 requests; request r writes series (r * 7 + k) % 60 for k < 30, one run each
  const want = new Map<bigint, number[]>();
  for (let r = 0; r < 40; r++) {
    const entries = Array.from({ length: 30 }, (_, k) => {
      const id = BigInt((r * 7 + k) % 60);
      want.set(id, [...(want.get(id) ?? []), r * 100 + k]);
      return { id, run: encodeRun({ timestamps: BigInt64Array.from({ length: 200 }, (_, i) => W + BigInt(i * 15_000 + r)), values: Float64Array.from({ length: 200 }, (_, i) => (i === 0 ? r * 100 + k : Math.random())) }), samples: 200 };
    });
    await w.append(entries, r);
  }
  wUse.release(100);
  const segments = w.segmentDirs;
  t.ok(segments.length >= 4, `${segments.length} segments`);
  await w.close();
  const again = await WalDb.open(dir, opts);
  t.same(again.segmentDirs, segments, 'the same segments after a reopen');
  t.equal(again.counters.entries, 40 * 30);
  const got: { id: bigint; firsts: number[] }[] = [];
  for await (const s of again.series()) got.push({ id: s.id, firsts: s.runs.map((r) => decodeRun(r).values[0]!) });
  t.same(
    got,
    [...want].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([id, firsts]) => ({ id, firsts })),
    'every series once, in id order, its runs in write order across segments (read with several remaps)',
  );
  await again.close();
  const logs = segments.map((d) => readFileSync(join(d, 'LOG'), 'utf8')).join('\n');
  t.notMatch(logs, /Compacting |Moved #/, 'LevelDB never compacted');
});

t.test('WalDb: an older segment found incomplete is damage (CorruptionError), and recovery keeps the generation instead of removing it', async (t) => {
  const root = tempDir('waldb-damaged');
  const opts = { dir: root, numShards: 4, blockDurationMs: H, maxOpen: 8, db: { ...dbOpts, writeBufferBytes: 64 * 1024 }, now: () => 10, logger };
  const key: WindowKey = { tenant: 'acme', shard: 1, windowStart: W };
  const store = await WalStore.open(opts);
  const g = await store.acquireWritable(key);
  for (let r = 0; r < 20; r++) {
    const entries = Array.from({ length: 30 }, (_, k) => ({ id: BigInt(k), run: encodeRun({ timestamps: BigInt64Array.from({ length: 200 }, (_, i) => W + BigInt(i * 15_000 + r)), values: Float64Array.from({ length: 200 }, () => Math.random()) }), samples: 200 }));
    await g.wal.append(entries, r);
  }
  const segments = g.wal.segmentDirs;
  g.release();
  await store.close();
  t.ok(segments.length >= 2, `${segments.length} segments`);
  // the first segment loses its CURRENT file (a partial restore, say): it was complete once
  rmSync(join(segments[0]!, 'CURRENT'));
  const gdir = dirname(segments[0]!);
  await t.rejects(WalDb.open(gdir, opts.db), { name: 'CorruptionError', message: /incomplete \(.*no CURRENT file\), but a newer one exists: the WAL was damaged/ }, 'damage, named');
  await t.rejects(WalStore.open(opts), { name: 'CorruptionError' }, 'recovery stops on it');
  t.ok(existsSync(join(segments[1]!, 'CURRENT')), 'and removed nothing: the complete segments are all there');
});

t.test('WalDb: a WAL of more segments than maxOpenSegments reads back the same through spill files, never holding more open', async (t) => {
  const dir = join(tempDir('waldb-spill'), 'gen');
  const opts: WalDbOptions = { writeBufferBytes: 64 * 1024, sync: false, remapBytes: 200 * 1024 };
  const w = await WalDb.create(dir, identity, opts);
  const wUse = w.acquire('writer');
  for (let r = 0; r < 60; r++) {
    const entries = Array.from({ length: 30 }, (_, k) => ({
      id: BigInt((r * 11 + k) % 90),
      run: encodeRun({ timestamps: BigInt64Array.from({ length: 200 }, (_, i) => W + BigInt(i * 15_000 + r)), values: Float64Array.from({ length: 200 }, (_, i) => (i === 0 ? r * 100 + k : Math.sin(r * 1000 + k * 37 + i) * 1e6)) }),
      samples: 200,
    }));
    await w.append(entries, r);
  }
  wUse.release(100);
  const segments = w.segmentDirs.length;
  t.ok(segments >= 6, `${segments} segments`);
  await w.close();
  const read = async (maxOpenSegments: number): Promise<{ series: { id: bigint; runs: string[] }[]; maxOpen: number; spillSeen: boolean }> => {
    const db = await WalDb.open(dir, { ...opts, maxOpenSegments });
    const series: { id: bigint; runs: string[] }[] = [];
    let maxOpen = 0;
    let spillSeen = false;
    // sampled while the read runs (spilling included): can miss a moment, never invent one
    const sampler = setInterval(() => (maxOpen = Math.max(maxOpen, db.openDatabases)), 1);
    t.teardown(() => clearInterval(sampler));
    for await (const s of db.series()) {
      series.push({ id: s.id, runs: s.runs.map((r) => Buffer.from(r).toString('hex')) });
      maxOpen = Math.max(maxOpen, db.openDatabases);
      spillSeen ||= readdirSync(dir).some((n) => n.startsWith('spill-'));
    }
    clearInterval(sampler);
    await db.close();
    return { series, maxOpen, spillSeen };
  };
  const direct = await read(4096);
  const spilled = await read(2);
  t.equal(direct.spillSeen, false, 'a WAL within the bound is read directly');
  t.ok(direct.maxOpen >= segments - 1, `read directly: ${direct.maxOpen} segments open at once`);
  t.equal(spilled.spillSeen, true, 'over the bound: spill files');
  t.ok(spilled.maxOpen <= 3, `through spill files: at most 2 segments open at once besides the newest, which stays open (${spilled.maxOpen})`);
  t.same(spilled.series, direct.series, 'the same series and runs, bit for bit, in the same order');
  t.equal(spilled.series.length, 90);
  t.same(readdirSync(dir).filter((n) => n.startsWith('spill-')), [], 'the spill files are gone after the read');

  // a read cut short (a crash, a failed flush): its spill files are removed when the log is opened again
  const db = await WalDb.open(dir, { ...opts, maxOpenSegments: 2 });
  const it = db.series();
  await it.next();
  t.equal(readdirSync(dir).filter((n) => n.startsWith('spill-')).length, 1, 'spilling');
  mkdirSync(join(dir, 'spill-left-by-a-crash'));
  await it.return(undefined);
  await db.close();
  const reopened = await WalDb.open(dir, opts);
  t.same(readdirSync(dir).filter((n) => n.startsWith('spill-')), [], 'start-up removes spill files left behind');
  await reopened.close();
});
