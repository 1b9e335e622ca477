/**
 * The block footer: the fixed-size last {@link FOOTER_LEN} bytes of every block (spec:
 * docs/format/block.md). Field offsets are the named constants below; all integers are
 * little-endian. The footer ends with a CRC32C of everything before it and the magic, so a reader
 * can check it before trusting any field.
 */
import { crc32c } from '@node-rs/crc32';
import { InvalidArgumentError, UnsupportedVersionError } from '../errors.js';
import { ByteReader, ByteWriter, type Origin } from './bytes.js';

/** "STRB" read as a little-endian u32: the last 4 bytes of every block. */
export const BLOCK_MAGIC = 0x42525453;
/**
 * The newest block format version this build reads and writes: 4 (runs may hold BINNED integer
 * sequences, docs/format/chunk.md). It reads every version from {@link OLDEST_FORMAT_VERSION} to
 * this one, and writes this one: its encoder may use BINNED in any run, including the runs its
 * aggregators keep in their WALs, so a block cannot tell from its runs that it needs less.
 */
export const FORMAT_VERSION = 4;
/** The version that added index pages with series id gaps of 2^53 or more (`PAGE_WIDE_IDS`). */
export const WIDE_IDS_VERSION = 3;
/** The version that added BINNED integer sequences to runs (decoded in versions 2 and 3 too: docs/format/block.md). */
export const BINNED_VERSION = 4;
/** The oldest block format version this build reads. Version 2 only adds to version 1. */
export const OLDEST_FORMAT_VERSION = 1;
/** Size of the footer in bytes. */
export const FOOTER_LEN = 256;
/** Longest tenant id a footer holds, in bytes. */
export const MAX_TENANT_BYTES = 64;

/** Byte offsets of the footer fields. */
export const FooterField = {
  VERSION: 0, // u16
  FLAGS: 2, // u16, zero in versions 1 to 4
  PAGE_COUNT: 4, // u32
  SAMPLES_OFFSET: 8, // u64
  SAMPLES_LENGTH: 16, // u64
  INDEX_OFFSET: 24, // u64
  INDEX_LENGTH: 32, // u64
  IOI_OFFSET: 40, // u64
  IOI_LENGTH: 48, // u64
  SAMPLES_CRC: 56, // u32
  INDEX_CRC: 60, // u32
  IOI_CRC: 64, // u32
  SHARD: 68, // u32
  NUM_SHARDS: 72, // u32
  RESERVED0: 76, // u32, zero
  SERIES_COUNT: 80, // u64
  SAMPLE_COUNT: 88, // u64
  MIN_TIME: 96, // i64
  MAX_TIME: 104, // i64
  WINDOW_START: 112, // i64
  WINDOW_END: 120, // i64, exclusive
  CREATED_AT: 128, // i64, ms since the epoch
  BLOCK_ID: 136, // 16 bytes
  TENANT_LEN: 152, // u8
  TENANT: 153, // MAX_TENANT_BYTES bytes, zero padded
  RESERVED1: 217, // zero up to FOOTER_CRC
  FOOTER_CRC: 248, // u32, CRC32C of bytes [0, 248)
  MAGIC: 252, // u32
} as const;

/** A section of the block: absolute offset, length and CRC32C of its bytes. */
export interface Section {
  readonly offset: number;
  readonly length: number;
  readonly crc: number;
}

/** What the footer says about a block. */
export interface Footer {
  readonly version: number;
  readonly pageCount: number;
  readonly samples: Section;
  readonly index: Section;
  readonly ioi: Section;
  readonly tenant: string;
  readonly shard: number;
  readonly numShards: number;
  readonly seriesCount: number;
  readonly sampleCount: number;
  /** Smallest and largest sample timestamp (both 0 for an empty block). */
  readonly minTime: bigint;
  readonly maxTime: bigint;
  /** The block's window `[windowStart, windowEnd)`. */
  readonly windowStart: bigint;
  readonly windowEnd: bigint;
  readonly createdAtMs: number;
  /** 32 lowercase hex digits, unique per written block. */
  readonly blockId: string;
}

/** Serializes a footer. Throws InvalidArgumentError for fields that do not fit. */
export function encodeFooter(f: Footer): Uint8Array {
  const tenant = Buffer.from(f.tenant, 'utf8');
  if (tenant.length === 0 || tenant.length > MAX_TENANT_BYTES) {
    throw new InvalidArgumentError('tenant', `must be 1..${MAX_TENANT_BYTES} bytes, got ${tenant.length}`);
  }
  if (!/^[0-9a-f]{32}$/.test(f.blockId)) throw new InvalidArgumentError('blockId', 'must be 32 lowercase hex digits');
  const w = new ByteWriter(FOOTER_LEN);
  w.u16(f.version);
  w.u16(0);
  w.u32(f.pageCount);
  w.u64n(f.samples.offset);
  w.u64n(f.samples.length);
  w.u64n(f.index.offset);
  w.u64n(f.index.length);
  w.u64n(f.ioi.offset);
  w.u64n(f.ioi.length);
  w.u32(f.samples.crc);
  w.u32(f.index.crc);
  w.u32(f.ioi.crc);
  w.u32(f.shard);
  w.u32(f.numShards);
  w.u32(0);
  w.u64n(f.seriesCount);
  w.u64n(f.sampleCount);
  w.i64(f.minTime);
  w.i64(f.maxTime);
  w.i64(f.windowStart);
  w.i64(f.windowEnd);
  w.i64(BigInt(f.createdAtMs));
  w.bytes(Buffer.from(f.blockId, 'hex'));
  w.u8(tenant.length);
  const tenantField = new Uint8Array(MAX_TENANT_BYTES);
  tenantField.set(tenant);
  w.bytes(tenantField);
  w.bytes(new Uint8Array(FooterField.FOOTER_CRC - FooterField.RESERVED1));
  if (w.length !== FooterField.FOOTER_CRC) throw new Error(`footer layout drift: ${w.length}`);
  w.u32(crc32c(w.finish()));
  w.u32(BLOCK_MAGIC);
  return w.finish().slice();
}

/**
 * Parses and verifies the footer in `buf[at, at + FOOTER_LEN)`. `origin` locates `buf[0]` in
 * the object. Checks the magic, the CRC, the version and the consistency of the section layout
 * with `objectSize`.
 */
export function decodeFooter(buf: Uint8Array, at: number, objectSize: number, origin: Origin): Footer {
  const r = new ByteReader(buf, origin, at, at + FOOTER_LEN);
  r.need(FOOTER_LEN, 'footer');
  const dv = new DataView(buf.buffer, buf.byteOffset + at, FOOTER_LEN);
  if (dv.getUint32(FooterField.MAGIC, true) !== BLOCK_MAGIC) {
    throw r.corrupt('bad block magic (not a Strata block, or damaged footer)', at + FooterField.MAGIC);
  }
  const crc = crc32c(buf.subarray(at, at + FooterField.FOOTER_CRC));
  if (dv.getUint32(FooterField.FOOTER_CRC, true) !== crc) throw r.corrupt('footer checksum mismatch', at);
  const version = r.u16();
  if (version < OLDEST_FORMAT_VERSION || version > FORMAT_VERSION) {
    throw new UnsupportedVersionError(`block "${origin.object}" has format version ${version}; this build reads ${OLDEST_FORMAT_VERSION} to ${FORMAT_VERSION}`, version);
  }
  const flags = r.u16();
  if (flags !== 0) throw r.corrupt(`unknown footer flags ${flags}`, at + FooterField.FLAGS);
  const pageCount = r.u32();
  const sOff = r.u64n(), sLen = r.u64n(), iOff = r.u64n(), iLen = r.u64n(), oOff = r.u64n(), oLen = r.u64n();
  const sCrc = r.u32(), iCrc = r.u32(), oCrc = r.u32();
  const shard = r.u32();
  const numShards = r.u32();
  r.u32();
  const seriesCount = r.u64n();
  const sampleCount = r.u64n();
  const minTime = r.i64();
  const maxTime = r.i64();
  const windowStart = r.i64();
  const windowEnd = r.i64();
  const createdAtMs = Number(r.i64());
  const blockId = Buffer.from(r.bytes(16)).toString('hex');
  const tenantLen = r.u8();
  const tenantBytes = r.bytes(MAX_TENANT_BYTES);
  if (tenantLen === 0 || tenantLen > MAX_TENANT_BYTES) throw r.corrupt(`tenant length ${tenantLen}`, at + FooterField.TENANT_LEN);
  const tenant = Buffer.from(tenantBytes.subarray(0, tenantLen)).toString('utf8');
  // the sections must tile the object exactly: samples, index, ioi, footer
  const footerOffset = objectSize - FOOTER_LEN;
  if (sOff !== 0 || iOff !== sLen || oOff !== iOff + iLen || oOff + oLen !== footerOffset) {
    throw r.corrupt(`section layout [${sOff}+${sLen}, ${iOff}+${iLen}, ${oOff}+${oLen}] does not tile an object of ${objectSize} bytes`, at);
  }
  if (oLen !== pageCount * IOI_ENTRY_BYTES) throw r.corrupt(`index of index is ${oLen} bytes for ${pageCount} pages`, at);
  if (numShards === 0 || shard >= numShards) throw r.corrupt(`shard ${shard} of ${numShards}`, at + FooterField.SHARD);
  if (windowEnd <= windowStart) throw r.corrupt('empty window', at + FooterField.WINDOW_START);
  return {
    version,
    pageCount,
    samples: { offset: sOff, length: sLen, crc: sCrc },
    index: { offset: iOff, length: iLen, crc: iCrc },
    ioi: { offset: oOff, length: oLen, crc: oCrc },
    tenant,
    shard,
    numShards,
    seriesCount,
    sampleCount,
    minTime,
    maxTime,
    windowStart,
    windowEnd,
    createdAtMs,
    blockId,
  };
}

/** Bytes per page in the index of index (see src/index/index-of-index.ts). */
export const IOI_ENTRY_BYTES = 36;
