/**
 * Byte-level helpers for Strata's formats: a growable little-endian writer and a bounds-checked
 * reader. Varints are LEB128 (7 bits per byte, low group first) and carry integers up to 2^53
 * (`number`) without loss; 64-bit fields are written as two 32-bit halves.
 */
import { CorruptionError } from '../errors.js';

const TWO32 = 4294967296;

/** Where decoded bytes came from, for error messages: object name and absolute offset of byte 0. */
export interface Origin {
  readonly object: string;
  readonly offset: number;
}

/** The origin used when bytes have no better name. */
export const MEMORY: Origin = { object: '<memory>', offset: 0 };

/** Bytes of the unsigned LEB128 varint of a safe non-negative integer. */
export function uvarintLength(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

/** Writes the unsigned LEB128 varint of `v` (a safe non-negative integer) at `pos`; returns the position after it. */
export function putUvarint(buf: Uint8Array, pos: number, v: number): number {
  while (v >= 128) {
    buf[pos++] = (v % 128) | 128;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

/**
 * Samples of one series that the codecs' module scratch (arrays and writers reused from call to
 * call) may stay sized for. Encoding a larger series grows it to that series; {@link shrinkScratch}
 * then gives it back, so a long-lived worker that once encoded a series of millions of samples
 * does not keep hundreds of MB for good.
 */
export const SCRATCH_KEEP_SAMPLES = 65_536;
const shrinkers: (() => void)[] = [];

/** Registers a module's way to give back scratch grown past {@link SCRATCH_KEEP_SAMPLES}. */
export function onShrinkScratch(fn: () => void): void {
  shrinkers.push(fn);
}

/** Gives back every codec scratch grown past {@link SCRATCH_KEEP_SAMPLES} samples. */
export function shrinkScratch(): void {
  for (const f of shrinkers) f();
}

/** Growable byte buffer with little-endian writers. */
export class ByteWriter {
  private buf: Uint8Array;
  private view: DataView;
  /** Number of bytes written so far. */
  length = 0;

  constructor(initialCapacity = 256) {
    this.buf = new Uint8Array(initialCapacity);
    this.view = new DataView(this.buf.buffer);
  }

  /** Empties the writer and drops a buffer larger than `capacity` bytes. */
  shrink(capacity: number): void {
    this.length = 0;
    if (this.buf.length <= capacity) return;
    this.buf = new Uint8Array(capacity);
    this.view = new DataView(this.buf.buffer);
  }

  /** Makes room for `n` more bytes. */
  ensure(n: number): void {
    const need = this.length + n;
    if (need <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < need) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf[this.length++] = v;
  }

  u16(v: number): void {
    this.ensure(2);
    this.view.setUint16(this.length, v, true);
    this.length += 2;
  }

  u32(v: number): void {
    this.ensure(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }

  /** Unsigned 64-bit from a bigint in [0, 2^64). */
  u64(v: bigint): void {
    this.ensure(8);
    this.view.setBigUint64(this.length, v, true);
    this.length += 8;
  }

  /** Signed 64-bit from a bigint in [-2^63, 2^63). */
  i64(v: bigint): void {
    this.ensure(8);
    this.view.setBigInt64(this.length, v, true);
    this.length += 8;
  }

  /** Unsigned 64-bit from a safe non-negative integer `number`. */
  u64n(v: number): void {
    this.ensure(8);
    this.view.setUint32(this.length, v % TWO32, true);
    this.view.setUint32(this.length + 4, Math.floor(v / TWO32), true);
    this.length += 8;
  }

  /** Unsigned LEB128 varint of a safe non-negative integer. */
  uvarint(v: number): void {
    this.ensure(8);
    this.length = putUvarint(this.buf, this.length, v);
  }

  /** Zigzag + LEB128 varint of a safe integer. */
  varint(v: number): void {
    this.uvarint(zigzag(v));
  }

  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }

  /** The bytes written so far (a view; copy it if the writer will be reused). */
  finish(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }

  reset(): void {
    this.length = 0;
  }
}

/** Bounds-checked little-endian reader over `buf[start, end)`. */
export class ByteReader {
  readonly buf: Uint8Array;
  private dv: DataView | undefined;
  pos: number;
  readonly end: number;
  readonly origin: Origin;

  constructor(buf: Uint8Array, origin: Origin = MEMORY, start = 0, end = buf.length) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
    this.origin = origin;
  }

  /** DataView over `buf`, made on first use (most readers only need bytes and varints). */
  private get view(): DataView {
    return (this.dv ??= new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength));
  }

  /** A corruption error at the current position (or `at`). */
  corrupt(what: string, at = this.pos): CorruptionError {
    return new CorruptionError(this.origin.object, this.origin.offset + at, what);
  }

  need(n: number, what: string): void {
    if (this.pos + n > this.end) throw this.corrupt(`truncated ${what}: need ${n} bytes, ${this.end - this.pos} left`);
  }

  u8(what = 'byte'): number {
    this.need(1, what);
    return this.buf[this.pos++]!;
  }

  u16(what = 'u16'): number {
    this.need(2, what);
    const v = this.view.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }

  u32(what = 'u32'): number {
    this.need(4, what);
    const b = this.buf;
    const p = this.pos;
    this.pos = p + 4;
    return (b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)) >>> 0;
  }

  u64(what = 'u64'): bigint {
    this.need(8, what);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }

  i64(what = 'i64'): bigint {
    this.need(8, what);
    const v = this.view.getBigInt64(this.pos, true);
    this.pos += 8;
    return v;
  }

  /** Unsigned 64-bit that must be a safe integer (offsets, lengths, counts). */
  u64n(what = 'u64'): number {
    this.need(8, what);
    const lo = this.view.getUint32(this.pos, true);
    const hi = this.view.getUint32(this.pos + 4, true);
    if (hi >= 0x200000) throw this.corrupt(`${what} exceeds 2^53`);
    this.pos += 8;
    return hi * TWO32 + lo;
  }

  uvarint(what = 'varint'): number {
    let result = 0;
    let mul = 1;
    const start = this.pos;
    for (;;) {
      if (this.pos >= this.end) throw this.corrupt(`truncated ${what}`, start);
      const b = this.buf[this.pos++]!;
      result += (b & 127) * mul;
      if (b < 128) break;
      mul *= 128;
      if (mul > 2 ** 49) throw this.corrupt(`${what} exceeds 2^53`, start);
    }
    if (result > Number.MAX_SAFE_INTEGER) throw this.corrupt(`${what} exceeds 2^53`, start);
    return result;
  }

  varint(what = 'varint'): number {
    return unzigzag(this.uvarint(what));
  }

  bytes(n: number, what = 'bytes'): Uint8Array {
    this.need(n, what);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  /** Throws unless every byte was consumed. */
  expectEnd(what: string): void {
    if (this.pos !== this.end) throw this.corrupt(`${this.end - this.pos} trailing bytes after ${what}`);
  }
}

/** Zigzag map of a safe integer in (-2^52, 2^52) to a non-negative one. */
export function zigzag(v: number): number {
  return v >= 0 ? v * 2 : -v * 2 - 1;
}

/** Inverse of {@link zigzag}. */
export function unzigzag(z: number): number {
  return z % 2 === 0 ? z / 2 : -(z + 1) / 2;
}

/** Number of bits needed to write a non-negative safe integer (0 for 0). */
export function bitLength(v: number): number {
  if (v < TWO32) return 32 - Math.clz32(v);
  return 64 - Math.clz32(Math.floor(v / TWO32));
}

/**
 * A copy of `bytes` in memory of its own: never a slab of Node's shared Buffer pool (which
 * Buffer.from uses below 4 KiB) or a view of a larger buffer, so what keeps it keeps only it.
 */
export function ownedCopy(bytes: Uint8Array): Buffer {
  const own = Buffer.allocUnsafeSlow(bytes.length);
  own.set(bytes);
  return own;
}

/** Whether `b` spans the whole of an ArrayBuffer (not a slab of a pool, not a view of a part): one that can be transferred to another thread. */
export function ownsWholeBuffer(b: Uint8Array): boolean {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer;
}
