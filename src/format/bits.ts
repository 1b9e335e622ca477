/**
 * Bit streams for the sample codecs. Bits are packed most-significant first into big-endian
 * 32-bit words; the stream's byte length is ceil(bits / 8) and the unused low bits of the last
 * byte are zero. Values wider than 32 bits are written high part first.
 *
 * Rice code with escape ({@link RICE_ESCAPE}): for parameter k, a value z is written as
 * q = floor(z / 2^k) zero bits, a one bit, then the k low bits of z; when q >= RICE_ESCAPE it is
 * written as RICE_ESCAPE zero bits, a 6-bit width w = bitLength(z) and z in w bits.
 */
import { CorruptionError } from '../errors.js';
import { bitLength, type Origin, MEMORY } from './bytes.js';

const TWO32 = 4294967296;
/** POW2[k] = 2^k for k in 0..64. */
const POW2 = Array.from({ length: 65 }, (_, k) => 2 ** k);

/** Quotients at or above this take the escape path of the Rice code. */
export const RICE_ESCAPE = 24;

/** Growable MSB-first bit writer. */
export class BitWriter {
  private buf: Uint8Array;
  private pos = 0;
  private acc = 0;
  private nacc = 0;

  constructor(initialBytes = 256) {
    this.buf = new Uint8Array(initialBytes);
  }

  private flushWord(w: number): void {
    if (this.pos + 4 > this.buf.length) {
      const next = new Uint8Array(this.buf.length * 2 + 8);
      next.set(this.buf.subarray(0, this.pos));
      this.buf = next;
    }
    const b = this.buf;
    const p = this.pos;
    b[p] = w >>> 24;
    b[p + 1] = (w >>> 16) & 255;
    b[p + 2] = (w >>> 8) & 255;
    b[p + 3] = w & 255;
    this.pos = p + 4;
  }

  /** Writes the low `k` bits of `v` (0 <= k <= 32, 0 <= v < 2^k). */
  write(v: number, k: number): void {
    if (k === 0) return;
    const free = 32 - this.nacc;
    if (k < free) {
      this.acc = (this.acc << k) | v;
      this.nacc += k;
      return;
    }
    const rest = k - free;
    const word = free === 32 ? v : (this.acc << free) | (v >>> rest);
    this.flushWord(word >>> 0);
    this.acc = rest === 0 ? 0 : v & ((1 << rest) - 1);
    this.nacc = rest;
  }

  /** Writes a safe non-negative integer in `k` bits (0 <= k <= 53). */
  writeWide(v: number, k: number): void {
    if (k <= 32) {
      this.write(v >>> 0, k);
      return;
    }
    this.write(Math.floor(v / TWO32), k - 32);
    this.write(v % TWO32, 32);
  }

  /** Writes `n` zero bits. */
  zeros(n: number): void {
    while (n > 31) {
      this.write(0, 31);
      n -= 31;
    }
    this.write(0, n);
  }

  /** Rice code of safe integer z >= 0 with parameter k (0..52). */
  rice(z: number, k: number): void {
    if (z < 0x40000000 && k < 30) {
      const q = z >>> k;
      if (q < RICE_ESCAPE && q + 1 + k <= 32) {
        // q zero bits, the stop bit and the k low bits as one field
        this.write(((1 << k) | (z & ((1 << k) - 1))) >>> 0, q + 1 + k);
        return;
      }
    }
    const q = Math.floor(z / POW2[k]!);
    if (q < RICE_ESCAPE) {
      this.write(1, q + 1);
      if (k > 0) this.writeWide(z - q * POW2[k]!, k);
    } else {
      this.zeros(RICE_ESCAPE);
      const w = bitLength(z);
      this.write(w, 6);
      this.writeWide(z, w);
    }
  }

  /** Width-prefixed integer: 6 bits of width, then the value. */
  varBits(z: number): void {
    const w = bitLength(z);
    this.write(w, 6);
    this.writeWide(z, w);
  }

  /** Number of bits written so far. */
  get bitCount(): number {
    return this.pos * 8 + this.nacc;
  }

  /** Pads to a byte boundary with zero bits and returns the bytes. */
  finish(): Uint8Array {
    if (this.nacc > 0) {
      const w = (this.acc << (32 - this.nacc)) >>> 0;
      const nbytes = (this.nacc + 7) >> 3;
      this.flushWord(w);
      this.pos -= 4 - nbytes;
      this.nacc = 0;
      this.acc = 0;
    }
    return this.buf.subarray(0, this.pos);
  }
}

/** Cost in bits of {@link BitWriter.rice}. */
export function riceCost(z: number, k: number): number {
  const q = k === 0 ? z : Math.floor(z / 2 ** k);
  return q < RICE_ESCAPE ? q + 1 + k : RICE_ESCAPE + 6 + bitLength(z);
}

/** MSB-first bit reader over `buf[start, end)`; reading past the end throws a CorruptionError. */
export class BitReader {
  /** The stream as big-endian words, plus two zero words so a peek never runs off the end. */
  private readonly w: Uint32Array;
  private readonly start: number;
  private readonly origin: Origin;
  /** Total bits in the stream. */
  private readonly total: number;
  /** Next bit to read. */
  pos = 0;

  constructor(buf: Uint8Array, start = 0, end = buf.length, origin: Origin = MEMORY) {
    this.start = start;
    this.origin = origin;
    const nbytes = end - start;
    this.total = nbytes * 8;
    const nw = (nbytes + 3) >> 2;
    const w = new Uint32Array(nw + 2);
    const full = nbytes >> 2;
    let p = start;
    for (let i = 0; i < full; i++, p += 4) w[i] = ((buf[p]! << 24) | (buf[p + 1]! << 16) | (buf[p + 2]! << 8) | buf[p + 3]!) >>> 0;
    if (full < nw) {
      let v = 0;
      for (let j = 0; p + j < end; j++) v |= buf[p + j]! << (24 - 8 * j);
      w[full] = v >>> 0;
    }
    this.w = w;
  }

  corrupt(what: string): CorruptionError {
    return new CorruptionError(this.origin.object, this.origin.offset + this.start + Math.min(this.pos, this.total) / 8 | 0, what);
  }

  /** Throws if the reads so far ran past the end of the stream. */
  check(): void {
    if (this.pos > this.total) throw this.corrupt('bit stream truncated');
  }

  /** The next 32 bits (zero beyond the end), without consuming them. */
  peek(): number {
    const pos = this.pos;
    if (pos > this.total) throw this.corrupt('bit stream truncated');
    const i = pos >>> 5;
    const r = pos & 31;
    const w = this.w;
    return r === 0 ? w[i]! : ((w[i]! << r) | (w[i + 1]! >>> (32 - r))) >>> 0;
  }

  /** Reads `k` bits (0..32) as an unsigned number. */
  read(k: number): number {
    if (k === 0) return 0;
    const v = this.peek() >>> (32 - k);
    this.pos += k;
    if (this.pos > this.total) throw this.corrupt('bit stream truncated');
    return v;
  }

  /** Reads `k` bits (0..53) as a safe integer. */
  readWide(k: number): number {
    if (k <= 32) return this.read(k);
    const hi = this.read(k - 32);
    return hi * TWO32 + this.read(32);
  }

  /** Reads a Rice-coded value with parameter k. */
  rice(k: number): number {
    const win = this.peek();
    if (win !== 0) {
      const z = Math.clz32(win);
      if (z < RICE_ESCAPE) {
        if (k === 0) {
          this.pos += z + 1;
          return z;
        }
        if (z + 1 + k <= 32) {
          this.pos += z + 1 + k;
          return z * POW2[k]! + ((win << (z + 1)) >>> (32 - k));
        }
        this.pos += z + 1;
        return z * POW2[k]! + this.readWide(k);
      }
    }
    return this.riceSlow(k);
  }

  /** Rice decode when the quotient does not fit the next 32 bits (long unary or escape). */
  private riceSlow(k: number): number {
    let q = 0;
    for (;;) {
      const win = this.peek();
      const z = Math.clz32(win);
      if (q + z >= RICE_ESCAPE) {
        this.pos += RICE_ESCAPE - q;
        const w = this.read(6);
        if (w > 53) throw this.corrupt(`rice escape width ${w} exceeds 53`);
        return this.readWide(w);
      }
      if (z < 32) {
        q += z;
        this.pos += z + 1;
        return q * POW2[k]! + this.readWide(k);
      }
      q += 32;
      this.pos += 32;
    }
  }

  /**
   * Decodes `len` Rice(k) values into `out[off..off+len)`: `base + v` when `zig` is false,
   * `base + unzigzag(v)` when it is true. Same result as calling {@link rice} in a loop.
   */
  riceBlock(out: Float64Array, off: number, len: number, k: number, base: number, zig: boolean): void {
    const w = this.w;
    const div = POW2[k]!;
    const fast = Math.min(31 - k, RICE_ESCAPE);
    let pos = this.pos;
    for (let i = 0; i < len; i++) {
      const j = pos >>> 5;
      const r = pos & 31;
      const win = r === 0 ? w[j]! : ((w[j]! << r) | (w[j + 1]! >>> (32 - r))) >>> 0;
      const z = Math.clz32(win);
      let v: number;
      if (z < fast) {
        // unary quotient, stop bit and all k remainder bits lie in this window
        v = k === 0 ? z : z * div + ((win << (z + 1)) >>> (32 - k));
        pos += z + 1 + k;
      } else {
        this.pos = pos;
        v = this.rice(k);
        pos = this.pos;
      }
      if (!zig) out[off + i] = base + v;
      else if (v < 0x80000000) out[off + i] = base + ((v >>> 1) ^ -(v & 1));
      else out[off + i] = base + (v % 2 === 0 ? v / 2 : -(v + 1) / 2);
    }
    this.pos = pos;
    if (pos > this.total) throw this.corrupt('bit stream truncated');
  }

  /** Reads `len` values of `k` bits each (0..32) into `out[off..off+len)`. */
  readBlock(out: Float64Array, off: number, len: number, k: number): void {
    if (k === 0) {
      out.fill(0, off, off + len);
      return;
    }
    const w = this.w;
    const sh = 32 - k;
    let pos = this.pos;
    for (let i = 0; i < len; i++) {
      const j = pos >>> 5;
      const r = pos & 31;
      const win = r === 0 ? w[j]! : ((w[j]! << r) | (w[j + 1]! >>> (32 - r))) >>> 0;
      out[off + i] = win >>> sh;
      pos += k;
    }
    this.pos = pos;
    if (pos > this.total) throw this.corrupt('bit stream truncated');
  }

  varBits(): number {
    const w = this.read(6);
    if (w > 53) throw this.corrupt(`width ${w} exceeds 53`);
    return this.readWide(w);
  }

  /** Bits consumed so far. */
  get bitsRead(): number {
    return this.pos;
  }

  /** Throws unless the stream was consumed up to its last byte (only zero padding may remain). */
  expectEnd(what: string): void {
    const used = this.pos;
    if (used > this.total || this.total - used >= 8) throw this.corrupt(`${what}: ${this.total - used} unused bits`);
    if (used < this.total && this.read(this.total - used) !== 0) throw this.corrupt(`${what}: non-zero padding`);
  }
}
