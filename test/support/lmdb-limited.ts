/**
 * Run as a child by test/storage-gateway/cache.test.ts under `ulimit -v`: opens an LMDB cache
 * store whose map, reserved up front, would not fit the limit, writes and reads one range, and
 * prints what happened as JSON.
 */
import { LmdbCacheStore } from '../../src/storage-gateway/cache/lmdb.js';

const dir = process.argv[2]!;
let reason: string | null = null;
const s = await LmdbCacheStore.open({ dir, maxBytes: 2 ** 42, onMapReserveFailed: (r) => (reason = r) });
s.putRange('a'.repeat(32), 0, Buffer.alloc(100, 7));
await s.flush();
const back = s.getRange('a'.repeat(32), 0, 100);
await s.close();
console.log(JSON.stringify({ reason, byte: back?.[99] ?? null }));
