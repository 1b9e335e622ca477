/**
 * Both CacheStore implementations through the shared contract, plus what only the LMDB store
 * does: it survives a reopen (ranges, pointers, accounting and recency order), its pages on disk
 * stay within the budget under churn, and an unknown schema makes it start empty.
 */
import t from 'tap';
import { open } from 'lmdb';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { CACHE_SCHEMA, lmdbEntryCharge, lmdbMapSize, LmdbCacheStore } from '../../src/storage-gateway/cache/lmdb.js';
import { MemoryCacheStore } from '../../src/storage-gateway/cache/memory.js';
import { cacheStoreContract } from '../support/cache-contract.js';
import { tempDir } from '../support/gateway.js';

t.test('MemoryCacheStore passes the cache store contract', async (t) => {
  cacheStoreContract(t, async (_t, opts) => new MemoryCacheStore(opts));
});

t.test('LmdbCacheStore passes the cache store contract', async (t) => {
  cacheStoreContract(t, async (tt, opts) => {
    const s = await LmdbCacheStore.open({ ...opts, dir: tempDir(tt, 'lmdb') });
    tt.teardown(() => s.close());
    return s;
  });
});

t.test('lmdbEntryCharge() charges whole overflow pages', async (t) => {
  t.equal(lmdbEntryCharge(40, 4096 - 16, 4096), 2 * (8 + 40 + 2 + 8) + 4096, 'a value of pageSize - 16 bytes fits one page');
  t.equal(lmdbEntryCharge(40, 4096 - 15, 4096), 2 * (8 + 40 + 2 + 8) + 8192, 'one byte more takes two');
  t.equal(lmdbEntryCharge(40, 100, 4096), 2 * (8 + 40 + 2 + 100), 'small values sit in leaf pages');
});

t.test('LmdbCacheStore survives a reopen: ranges, pointers, accounting and recency', async (t) => {
  const dir = tempDir(t, 'lmdb');
  let clock = 1_000_000;
  const now = (): number => clock;
  const s1 = await LmdbCacheStore.open({ dir, maxBytes: 100_000, now });
  const ids = ['1'.repeat(32), '2'.repeat(32), '3'.repeat(32)];
  ids.forEach((id, i) => {
    s1.setPointer(`blocks/k${i}`, { blockId: id, checkedAtMs: 42 + i, tailOffset: 7, size: 20_007 });
    s1.putRange(id, 7, Buffer.alloc(20_000, i + 1));
    clock += 100_000; // older than ATIME_PERSIST_MS apart, so the order is persisted
  });
  t.ok(s1.getRange(ids[0]!, 7, 20_000), 'block 1 becomes the most recently used');
  const used = s1.usedBytes;
  await s1.close();

  const evicted: string[] = [];
  const s2 = await LmdbCacheStore.open({ dir, maxBytes: 100_000, now, onEvict: (id) => evicted.push(id) });
  t.teardown(() => s2.close());
  t.equal(s2.usedBytes, used, 'accounting restored');
  t.equal(s2.blockCount, 3);
  t.same(s2.getPointer('blocks/k1'), { blockId: ids[1], checkedAtMs: 43, tailOffset: 7, size: 20_007 });
  t.equal(Buffer.compare(s2.getRange(ids[2]!, 7, 20_000)!, Buffer.alloc(20_000, 3)), 0, 'bytes restored');
  s2.putRange('4'.repeat(32), 0, Buffer.alloc(40_000, 9));
  t.same(evicted, [ids[1]], 'the least recently used before the restart goes first');
  t.equal(s2.getPointer('blocks/k1'), undefined);

  // a smaller budget at open evicts right away
  await s2.close();
  const s3 = await LmdbCacheStore.open({ dir, maxBytes: 30_000, now });
  t.teardown(() => s3.close());
  t.ok(s3.usedBytes <= 30_000, `${s3.usedBytes} bytes after reopening with a 30000 byte budget`);
  t.ok(s3.blockCount <= 1);
});

t.test('LmdbCacheStore pages on disk stay within the budget under churn', async (t) => {
  const budget = 2 * 1024 * 1024;
  const s = await LmdbCacheStore.open({ dir: tempDir(t, 'lmdb'), maxBytes: budget });
  t.teardown(() => s.close());
  let n = 0;
  for (let b = 0; b < 200; b++) {
    const id = b.toString(16).padStart(32, '0');
    s.setPointer(`blocks/x/${b}`, { blockId: id, checkedAtMs: b, tailOffset: 0, size: 1 });
    for (let r = 0; r < 20; r++) {
      s.putRange(id, r * 10_000, Buffer.alloc(500 + ((b * 37 + r * 101) % 6000), r));
      n++;
    }
    if (b % 20 === 19) await s.flush();
  }
  await s.flush();
  t.ok(s.usedBytes <= budget, `charged ${s.usedBytes} of ${budget}`);
  const disk = s.lmdbBytes();
  t.ok(disk <= budget * 1.1, `LMDB uses ${disk} bytes of pages for a ${budget} byte budget after ${n} puts`);
  t.ok(disk >= budget / 4, 'and holds a useful amount');
});

t.test('LmdbCacheStore maps its file once while it fills its budget (every extra mapping of the file is resident again)', async (t) => {
  t.equal(lmdbMapSize(36 * 2 ** 20 + 1), 137 * 2 ** 20, 'twice the budget, in whole MiB, plus 64 MiB');
  const dir = tempDir(t, 'lmdb');
  const budget = 48 * 1024 * 1024;
  const s = await LmdbCacheStore.open({ dir, maxBytes: budget });
  t.teardown(() => s.close());
  const file = join(dir, 'data.mdb');
  const mappings = (): number => readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.endsWith(` ${file}`)).length;
  for (let b = 0; b < 96; b++) {
    // a budget's worth and more: 96 blocks of 1 MiB through a 48 MiB budget
    const id = b.toString(16).padStart(32, '0');
    s.setPointer(`blocks/m/${b}`, { blockId: id, checkedAtMs: b, tailOffset: 0, size: 1 });
    for (let r = 0; r < 16; r++) s.putRange(id, r * 65_536, Buffer.alloc(65_536, r));
    if (b % 8 === 7) await s.flush();
  }
  await s.flush();
  t.ok(s.lmdbBytes() > budget / 2, `the file grew to ${s.lmdbBytes()} bytes of pages`);
  t.equal(mappings(), 1, `${file} is mapped once`);
});

t.test('with a limit on the address space (ulimit -v) the map is not reserved up front (lmdb would crash the process) and the store works', async (t) => {
  const dir = tempDir(t, 'lmdb-limited');
  const script = fileURLToPath(new URL('../support/lmdb-limited.ts', import.meta.url));
  // 60 GB: room for node, not for a map of twice 4 TiB
  const out = execFileSync('bash', ['-c', `ulimit -v 60000000 && exec "${process.execPath}" --import tsx "${script}" "${dir}"`], { encoding: 'utf8' });
  const r = JSON.parse(out.trim().split('\n').pop()!) as { reason: string | null; byte: number | null };
  t.match(r.reason ?? '', /address space is limited to 61440000000 bytes \(ulimit -v\)/, 'says why');
  t.equal(r.byte, 7, 'a range written is read back');
});

t.test('LmdbCacheStore starts empty when it finds another schema', async (t) => {
  const dir = tempDir(t, 'lmdb');
  const s1 = await LmdbCacheStore.open({ dir, maxBytes: 1 << 20 });
  s1.putRange('a'.repeat(32), 0, Buffer.alloc(10, 1));
  await s1.close();
  const env = open({ path: dir, maxDbs: 8 });
  const meta = env.openDB<string, string>('meta', { encoding: 'string' });
  t.equal(meta.get('schema'), CACHE_SCHEMA);
  await meta.put('schema', 'strata-gateway-cache/0');
  await env.close();
  const reasons: string[] = [];
  const s2 = await LmdbCacheStore.open({ dir, maxBytes: 1 << 20, onReset: (r) => reasons.push(r) });
  t.teardown(() => s2.close());
  t.equal(reasons.length, 1);
  t.match(reasons[0], /strata-gateway-cache\/0/);
  t.equal(s2.getRange('a'.repeat(32), 0, 10), undefined);
  t.equal(s2.usedBytes, 0);
});

t.test('LmdbCacheStore holds at most maxPendingBytes of uncommitted writes; caching resumes once they commit', async (t) => {
  const skipped: number[] = [];
  const s = await LmdbCacheStore.open({ dir: tempDir(t, 'lmdb'), maxBytes: 10_000_000, maxPendingBytes: 50_000, onWriteSkipped: (n) => skipped.push(n) });
  t.teardown(() => s.close());
  const id = (i: number): string => String(i % 10).repeat(32);
  // written in one turn: nothing can have committed in between
  for (let i = 0; i < 8; i++) s.putRange(id(i), 0, Buffer.alloc(20_000, i));
  t.equal(s.pendingBytes, 40_000, 'two ranges of 20000 fit in 50000, a third would not');
  t.same(skipped, [20_000, 20_000, 20_000, 20_000, 20_000, 20_000], 'the other six were not cached');
  t.ok(s.getRange(id(1), 0, 20_000), 'what was taken is readable before its commit');
  t.equal(s.getRange(id(2), 0, 20_000), undefined, 'what was skipped is a miss');
  await s.flush();
  t.equal(s.pendingBytes, 0, 'the commits caught up');
  s.putRange(id(2), 0, Buffer.alloc(20_000, 2));
  t.equal(skipped.length, 6, 'writes are taken again');
  await s.flush();
  t.equal(Buffer.compare(s.getRange(id(2), 0, 20_000)!, Buffer.alloc(20_000, 2)), 0);
});
