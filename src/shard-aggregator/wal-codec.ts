/**
 * Keys and values of the write-ahead log (spec: docs/format/wal.md). Pure: bytes in, bytes out.
 *
 * One LevelDB per segment of a (tenant, shard, window, generation). Run keys sort by series id,
 * then by the sequence number the WAL assigned to the entry (increasing across the segments of a
 * generation), so reading each segment in key order yields every series once, its runs oldest
 * first, and merging the segments by series id gives exactly the order a flush needs.
 *
 * ```
 * run key     := 0x01 | seriesId u64 BE | seq u64 BE                      (17 bytes)
 * meta key    := 0x00 | name (ASCII)
 * value       := kind u8 | payload | crc32c(kind | payload) u32 LE
 * ```
 */
import { crc32c } from '@node-rs/crc32';
import { CorruptionError, InvalidArgumentError, UnsupportedVersionError } from '../errors.js';
import { ByteReader, ByteWriter, type Origin } from '../format/bytes.js';
import { validateTenant } from '../format/key.js';

/** Version of the WAL layout written; stored in the identity record. */
export const WAL_FORMAT_VERSION = 2;
/** Versions this build reads: 1 (one LevelDB per generation, no segment field) and 2. */
export const WAL_FORMAT_VERSION_V1 = 1;
/** First byte of meta keys. */
export const KEY_PREFIX_META = 0x00;
/** First byte of run keys. */
export const KEY_PREFIX_RUN = 0x01;
/** Length of a run key. */
export const RUN_KEY_LEN = 17;
/** Bytes of the CRC32C trailer of every value. */
export const VALUE_CRC_LEN = 4;

/** Value kinds (first byte of every value). */
export const ValueKind = {
  /** A run of one series from one request (docs/format/chunk.md). */
  RUN: 1,
  /** The identity record, written once when the database is created. */
  IDENTITY: 2,
  /** Counters, rewritten in every synced batch. */
  COUNTERS: 3,
  /** Present once the log is sealed: it takes no more writes and waits to be flushed. */
  SEALED: 4,
} as const;

/** Meta key names. */
export const META_IDENTITY = 'identity';
export const META_COUNTERS = 'counters';
export const META_SEALED = 'sealed';

const U64_MAX = (1n << 64n) - 1n;

/** The key of the run entry `(id, seq)`. */
export function encodeRunKey(id: bigint, seq: bigint): Buffer {
  if (id < 0n || id > U64_MAX) throw new RangeError(`series id ${id} is not a uint64`);
  if (seq < 0n || seq > U64_MAX) throw new RangeError(`sequence ${seq} is not a uint64`);
  const k = Buffer.allocUnsafe(RUN_KEY_LEN);
  k[0] = KEY_PREFIX_RUN;
  k.writeBigUInt64BE(id, 1);
  k.writeBigUInt64BE(seq, 9);
  return k;
}

/** Decodes a run key. */
export function decodeRunKey(key: Uint8Array, origin: Origin): { id: bigint; seq: bigint } {
  if (key.length !== RUN_KEY_LEN || key[0] !== KEY_PREFIX_RUN) {
    throw new CorruptionError(origin.object, origin.offset, `not a run key (${key.length} bytes, prefix ${key[0]})`);
  }
  const b = Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  return { id: b.readBigUInt64BE(1), seq: b.readBigUInt64BE(9) };
}

/** The key of meta record `name`. */
export function metaKey(name: string): Buffer {
  return Buffer.concat([Buffer.of(KEY_PREFIX_META), Buffer.from(name, 'ascii')]);
}

/** Lower (inclusive) and upper (exclusive) bound of the run keys. */
export const RUN_KEYS_GTE = Buffer.of(KEY_PREFIX_RUN);
export const RUN_KEYS_LT = Buffer.of(KEY_PREFIX_RUN + 1);

function sealValue(w: ByteWriter): Buffer {
  const body = w.finish();
  const out = Buffer.allocUnsafe(body.length + VALUE_CRC_LEN);
  out.set(body, 0);
  out.writeUInt32LE(crc32c(body), body.length);
  return out;
}

/** Checks the kind byte and the CRC of a value and returns a reader over its payload. */
function openValue(value: Uint8Array, kind: number, origin: Origin): ByteReader {
  if (value.length < 1 + VALUE_CRC_LEN) throw new CorruptionError(origin.object, origin.offset, `value of ${value.length} bytes is too short`);
  const end = value.length - VALUE_CRC_LEN;
  const stored = Buffer.from(value.buffer, value.byteOffset, value.byteLength).readUInt32LE(end);
  if (crc32c(value.subarray(0, end)) !== stored) throw new CorruptionError(origin.object, origin.offset, 'value checksum mismatch');
  if (value[0] !== kind) throw new CorruptionError(origin.object, origin.offset, `value kind ${value[0]}, expected ${kind}`);
  return new ByteReader(value, origin, 1, end);
}

/** The value of a run entry: the run's bytes, framed. */
export function encodeRunValue(run: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(1 + run.length + VALUE_CRC_LEN);
  out[0] = ValueKind.RUN;
  out.set(run, 1);
  out.writeUInt32LE(crc32c(out.subarray(0, 1 + run.length)), 1 + run.length);
  return out;
}

/**
 * Writes the run value of `run` into `out` at `offset` (what {@link encodeRunValue} returns, without
 * allocating); returns its length, `1 + run.length + VALUE_CRC_LEN`.
 */
export function encodeRunValueInto(out: Uint8Array, offset: number, run: Uint8Array): number {
  const n = 1 + run.length;
  out[offset] = ValueKind.RUN;
  out.set(run, offset + 1);
  const body = Buffer.from(out.buffer, out.byteOffset + offset, n);
  Buffer.from(out.buffer, out.byteOffset + offset + n, VALUE_CRC_LEN).writeUInt32LE(crc32c(body), 0);
  return n + VALUE_CRC_LEN;
}

/** The run bytes of a run value (a view into `value`). */
export function decodeRunValue(value: Uint8Array, origin: Origin): Uint8Array {
  openValue(value, ValueKind.RUN, origin);
  return value.subarray(1, value.length - VALUE_CRC_LEN);
}

/** What a WAL database holds: one segment of one generation of one (tenant, shard, window). */
export interface WalIdentity {
  readonly tenant: string;
  readonly shard: number;
  readonly numShards: number;
  /** The window `[windowStart, windowEnd)` in ms. */
  readonly windowStart: bigint;
  readonly windowEnd: bigint;
  /** 1 for the first log of a window; a log created while older ones exist gets a higher number. */
  readonly generation: number;
  /**
   * The segment of the generation this database is (1, 2, ...; version 2). 0 for a version-1
   * database, which is a whole generation in one LevelDB.
   */
  readonly segment: number;
  readonly createdAtMs: number;
}

/** Encodes the identity record. */
export function encodeIdentity(id: WalIdentity): Buffer {
  validateTenant(id.tenant);
  const tenant = Buffer.from(id.tenant, 'utf8');
  const w = new ByteWriter(64);
  w.u8(ValueKind.IDENTITY);
  w.u16(WAL_FORMAT_VERSION);
  w.u8(tenant.length);
  w.bytes(tenant);
  w.u32(id.shard);
  w.u32(id.numShards);
  w.i64(id.windowStart);
  w.i64(id.windowEnd);
  w.u32(id.generation);
  if (id.segment < 1) throw new RangeError(`segment ${id.segment} is not a positive number`);
  w.u32(id.segment);
  w.u64(BigInt(id.createdAtMs));
  return sealValue(w);
}

/** Decodes the identity record; rejects unknown versions. */
export function decodeIdentity(value: Uint8Array, origin: Origin): WalIdentity {
  const r = openValue(value, ValueKind.IDENTITY, origin);
  const version = r.u16('format version');
  if (version !== WAL_FORMAT_VERSION && version !== WAL_FORMAT_VERSION_V1) throw new UnsupportedVersionError(`${origin.object}: WAL format version ${version} is not supported (this build reads ${WAL_FORMAT_VERSION_V1} and ${WAL_FORMAT_VERSION})`);
  const tenant = Buffer.from(r.bytes(r.u8('tenant length'), 'tenant')).toString('utf8');
  try {
    validateTenant(tenant);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw r.corrupt(`invalid tenant "${tenant}"`);
    throw err;
  }
  const shard = r.u32('shard');
  const numShards = r.u32('numShards');
  const windowStart = r.i64('windowStart');
  const windowEnd = r.i64('windowEnd');
  const generation = r.u32('generation');
  const segment = version === WAL_FORMAT_VERSION_V1 ? 0 : r.u32('segment');
  if (version !== WAL_FORMAT_VERSION_V1 && segment < 1) throw r.corrupt(`segment ${segment}`);
  const createdAtMs = Number(r.u64('createdAtMs'));
  r.expectEnd('identity record');
  if (numShards < 1 || shard >= numShards) throw r.corrupt(`shard ${shard} of ${numShards}`);
  if (windowEnd <= windowStart) throw r.corrupt('window end is not after its start');
  return { tenant, shard, numShards, windowStart, windowEnd, generation, segment, createdAtMs };
}

/** Running totals of a WAL database, rewritten with every synced batch. */
export interface WalCounters {
  /** Highest sequence number used (0 before the first run). */
  readonly lastSeq: bigint;
  /** Run entries stored. */
  readonly entries: number;
  /** Samples in those runs. */
  readonly samples: number;
  /** Bytes of run keys and values. */
  readonly bytes: number;
  /** Time of the last write, ms since the epoch (0 if none). */
  readonly lastWriteMs: number;
}

/** Counters of an empty log. */
export const EMPTY_COUNTERS: WalCounters = { lastSeq: 0n, entries: 0, samples: 0, bytes: 0, lastWriteMs: 0 };

/** Encodes the counters record. */
export function encodeCounters(c: WalCounters): Buffer {
  const w = new ByteWriter(48);
  w.u8(ValueKind.COUNTERS);
  w.u64(c.lastSeq);
  w.u64(BigInt(c.entries));
  w.u64(BigInt(c.samples));
  w.u64(BigInt(c.bytes));
  w.u64(BigInt(c.lastWriteMs));
  return sealValue(w);
}

/** Decodes the counters record. */
export function decodeCounters(value: Uint8Array, origin: Origin): WalCounters {
  const r = openValue(value, ValueKind.COUNTERS, origin);
  const c = {
    lastSeq: r.u64('lastSeq'),
    entries: r.u64n('entries'),
    samples: r.u64n('samples'),
    bytes: r.u64n('bytes'),
    lastWriteMs: r.u64n('lastWriteMs'),
  };
  r.expectEnd('counters record');
  return c;
}

/** Encodes the sealed marker. */
export function encodeSealed(sealedAtMs: number): Buffer {
  const w = new ByteWriter(16);
  w.u8(ValueKind.SEALED);
  w.u64(BigInt(sealedAtMs));
  return sealValue(w);
}

/** Decodes the sealed marker; returns the time it was sealed. */
export function decodeSealed(value: Uint8Array, origin: Origin): number {
  const r = openValue(value, ValueKind.SEALED, origin);
  const at = r.u64n('sealedAtMs');
  r.expectEnd('sealed record');
  return at;
}
