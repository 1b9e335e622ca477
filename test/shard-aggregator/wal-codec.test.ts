/**
 * WAL key/value codec (docs/format/wal.md): round trips, key order, checksums, versions.
 */
import { crc32c as crc } from '@node-rs/crc32';
import fc from 'fast-check';
import t from 'tap';
import { CorruptionError, UnsupportedVersionError } from '../../src/errors.js';
import {
  decodeCounters,
  decodeIdentity,
  decodeRunKey,
  decodeRunValue,
  decodeSealed,
  encodeCounters,
  encodeIdentity,
  encodeRunKey,
  encodeRunValue,
  encodeSealed,
  KEY_PREFIX_META,
  KEY_PREFIX_RUN,
  metaKey,
  RUN_KEY_LEN,
  RUN_KEYS_GTE,
  RUN_KEYS_LT,
  ValueKind,
  VALUE_CRC_LEN,
  WAL_FORMAT_VERSION,
} from '../../src/shard-aggregator/wal-codec.js';

const O = { object: 'test', offset: 0 };
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });

t.test('encodeRunKey() is 17 bytes: prefix, id and seq big-endian', (t) => {
  const k = encodeRunKey(0x0102030405060708n, 0x1112131415161718n);
  t.equal(k.length, RUN_KEY_LEN);
  t.same([...k], [KEY_PREFIX_RUN, 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
  t.same(decodeRunKey(k, O), { id: 0x0102030405060708n, seq: 0x1112131415161718n });
  t.throws(() => encodeRunKey(-1n, 0n), RangeError);
  t.throws(() => encodeRunKey(1n << 64n, 0n), RangeError);
  t.throws(() => decodeRunKey(k.subarray(0, 16), O), CorruptionError);
  t.throws(() => decodeRunKey(Buffer.concat([Buffer.of(KEY_PREFIX_META), k.subarray(1)]), O), CorruptionError);
  t.end();
});

t.test('run keys sort by (series id, seq) and between the range bounds; meta keys sort first', (t) => {
  fc.assert(
    fc.property(u64, u64, u64, u64, (a, s1, b, s2) => {
      const ka = encodeRunKey(a, s1);
      const kb = encodeRunKey(b, s2);
      const byNumbers = a < b || (a === b && s1 < s2) ? -1 : a === b && s1 === s2 ? 0 : 1;
      return Math.sign(Buffer.compare(ka, kb)) === byNumbers && Buffer.compare(ka, RUN_KEYS_GTE) >= 0 && Buffer.compare(ka, RUN_KEYS_LT) < 0;
    }),
  );
  for (const name of ['identity', 'counters', 'sealed']) t.ok(Buffer.compare(metaKey(name), RUN_KEYS_GTE) < 0, `${name} sorts before every run key`);
  t.end();
});

t.test('run values round-trip and detect any flipped bit', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.nat(), (run, flip) => {
      const v = encodeRunValue(run);
      if (v.length !== run.length + 1 + VALUE_CRC_LEN || v[0] !== ValueKind.RUN) return false;
      if (!Buffer.from(decodeRunValue(v, O)).equals(Buffer.from(run))) return false;
      const bit = flip % (v.length * 8);
      const bad = Buffer.from(v);
      bad[bit >> 3]! ^= 1 << (bit & 7);
      try {
        decodeRunValue(bad, O);
        return false;
      } catch (err) {
        return err instanceof CorruptionError;
      }
    }),
  );
  t.end();
});

t.test('identity record round-trips; unknown versions and bad contents are rejected', (t) => {
  const id = { tenant: 'acme-1', shard: 7, numShards: 64, windowStart: 1793491200000n, windowEnd: 1793505600000n, generation: 3, segment: 2, createdAtMs: 1793509999999 };
  const v = encodeIdentity(id);
  t.same(decodeIdentity(v, O), id);
  t.throws(() => encodeIdentity({ ...id, segment: 0 }), RangeError, 'segments count from 1');
  // version 1 (written by earlier builds): no segment field; it reads as segment 0
  const segAt = v.length - 4 - 8 - 4; // segment u32, then createdAtMs u64, then the CRC
  const v1 = Buffer.concat([v.subarray(0, segAt), v.subarray(segAt + 4)]);
  v1.writeUInt16LE(1, 1);
  v1.writeUInt32LE(crc(v1.subarray(0, v1.length - 4)), v1.length - 4);
  t.same(decodeIdentity(v1, O), { ...id, segment: 0 }, 'version 1 still reads');
  // version lives right after the kind byte; rewrite it and the CRC
  const bumped = Buffer.from(v);
  bumped.writeUInt16LE(WAL_FORMAT_VERSION + 1, 1);
  bumped.writeUInt32LE(crc(bumped.subarray(0, bumped.length - 4)), bumped.length - 4);
  t.throws(() => decodeIdentity(bumped, O), UnsupportedVersionError);
  t.throws(() => decodeIdentity(encodeCounters({ lastSeq: 1n, entries: 1, samples: 1, bytes: 1, lastWriteMs: 1 }), O), CorruptionError, 'wrong kind');
  t.throws(() => decodeIdentity(v.subarray(0, v.length - 1), O), CorruptionError, 'truncated');
  t.throws(() => encodeIdentity({ ...id, tenant: '../x' }), /tenant/);
  t.end();
});

t.test('counters and sealed records round-trip', (t) => {
  const c = { lastSeq: (1n << 64n) - 1n, entries: 2 ** 40, samples: 2 ** 52, bytes: 12345, lastWriteMs: 1793509999999 };
  t.same(decodeCounters(encodeCounters(c), O), c);
  t.equal(decodeSealed(encodeSealed(1793509999999), O), 1793509999999);
  t.throws(() => decodeSealed(encodeCounters(c), O), CorruptionError);
  t.end();
});

t.test('encodeRunValueInto() writes what encodeRunValue() returns; an encoding worker packs its runs as those values', async (t) => {
  const { encodeRunValueInto } = await import('../../src/shard-aggregator/wal-codec.js');
  const { packPrepared, unpack } = await import('../../src/shard-aggregator/encode-pool.js');
  const runs = [new Uint8Array([1, 2, 3]), new Uint8Array(0), Uint8Array.from({ length: 3000 }, (_, i) => (i * 7) & 255)];
  const out = new Uint8Array(5 + runs.reduce((n, r) => n + r.length + 5, 0));
  let off = 5;
  for (const r of runs) {
    const n = encodeRunValueInto(out, off, r);
    t.equal(n, r.length + 5);
    t.same(Buffer.from(out.subarray(off, off + n)), encodeRunValue(r));
    off += n;
  }
  const prepared = {
    runs: runs.map((run, i) => ({ windowStart: BigInt(i) * 14_400_000n, id: (1n << 64n) - 1n - BigInt(i), run, samples: i + 1 })),
    samples: 6,
    series: 3,
  };
  const back = unpack(packPrepared(7, prepared));
  t.equal(back.samples, 6);
  t.equal(back.series, 3);
  back.runs.forEach((r, i) => {
    t.equal(r.windowStart, prepared.runs[i]!.windowStart);
    t.equal(r.id, prepared.runs[i]!.id);
    t.equal(r.samples, i + 1);
    t.same(Buffer.from(r.run), Buffer.from(runs[i]!));
    t.same(Buffer.from(r.value!), encodeRunValue(runs[i]!));
    t.same(decodeRunValue(r.value!, { object: 'test', offset: 0 }), r.run);
  });
});
