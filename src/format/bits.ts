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

  /** Empties the writer and drops a buffer larger than `capacity` bytes. */
  shrink(capacity: number): void {
    this.pos = 0;
    this.acc = 0;
    this.nacc = 0;
    if (this.buf.length > capacity) this.buf = new Uint8Array(capacity);
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

  /**
   * Rice codes with parameter k of `x[off + i] - base` (`zig` false: all >= 0) or of their
   * zigzag (`zig` true), for i in 0..len; the same bits as {@link rice} in a loop.
   */
  riceBlock(x: Float64Array, off: number, len: number, k: number, base: number, zig: boolean): void {
    for (let i = 0; i < len; i++) {
      const d = x[off + i]! - base;
      this.rice(zig ? (d >= 0 ? d * 2 : -d * 2 - 1) : d, k);
    }
  }

  /** Empties the writer for reuse (the bytes of an earlier {@link finish} are overwritten). */
  reset(): void {
    this.pos = 0;
    this.acc = 0;
    this.nacc = 0;
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

/** True on little-endian hosts, whose Uint32Array words need a byte swap to read big-endian. */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
/** Longest stream (bytes) that {@link BitReader.shared} loads into the shared word buffer. */
const SHARED_MAX_BYTES = 1 << 20;
/** Word buffer of the reader returned by {@link BitReader.shared}, grown on demand. */
let sharedWords = new Uint32Array(1024);
/** Byte view of {@link sharedWords}. */
let sharedBytes = new Uint8Array(sharedWords.buffer);
let sharedReader: BitReader | undefined;

/** Words needed for a stream of `nbytes`: the stream itself plus two zero words. */
function wordsFor(nbytes: number): number {
  return ((nbytes + 3) >> 2) + 2;
}

/**
 * Loads `buf[start, end)` into `w` as big-endian words, followed by zero bits up to the end of
 * the second word after the stream. `w` must hold {@link wordsFor} words; `w8` is its byte view.
 */
function loadWords(w: Uint32Array, w8: Uint8Array, buf: Uint8Array, start: number, end: number): void {
  const nbytes = end - start;
  const nw = (nbytes + 3) >> 2;
  w8.set(buf.subarray(start, end));
  const padEnd = (nw + 2) * 4;
  for (let i = nbytes; i < padEnd; i++) w8[i] = 0;
  if (LITTLE_ENDIAN) {
    for (let i = 0; i < nw; i++) {
      const x = w[i]!;
      w[i] = (x << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24);
    }
  }
}

/** MSB-first bit reader over `buf[start, end)`; reading past the end throws a CorruptionError. */
export class BitReader {
  /**
   * The stream as big-endian words, then two zero words so a peek never runs off the end (a
   * shared buffer may hold stale words after those; they are only reached past the end of the
   * stream, where every read ends in a 'bit stream truncated' error).
   */
  private w: Uint32Array;
  private start: number;
  private origin: Origin;
  /** Total bits in the stream. */
  private total: number;
  /** Next bit to read. */
  pos = 0;

  constructor(buf: Uint8Array, start = 0, end = buf.length, origin: Origin = MEMORY) {
    this.start = start;
    this.origin = origin;
    this.total = (end - start) * 8;
    this.w = new Uint32Array(wordsFor(end - start));
    loadWords(this.w, new Uint8Array(this.w.buffer), buf, start, end);
  }

  /**
   * A reader over `buf[start, end)` like `new BitReader(...)`, but reusing one module-level
   * reader and word buffer instead of allocating: it is valid only until the next call. For
   * decoders that finish with one stream before they open the next (run decoding is synchronous).
   */
  static shared(buf: Uint8Array, start = 0, end = buf.length, origin: Origin = MEMORY): BitReader {
    const nbytes = end - start;
    const r = (sharedReader ??= new BitReader(new Uint8Array(0)));
    const nw = wordsFor(nbytes);
    if (nbytes > SHARED_MAX_BYTES) {
      r.w = new Uint32Array(nw);
      loadWords(r.w, new Uint8Array(r.w.buffer), buf, start, end);
    } else {
      if (sharedWords.length < nw) {
        sharedWords = new Uint32Array(Math.max(nw, sharedWords.length * 2));
        sharedBytes = new Uint8Array(sharedWords.buffer);
      }
      r.w = sharedWords;
      loadWords(sharedWords, sharedBytes, buf, start, end);
    }
    r.start = start;
    r.origin = origin;
    r.total = nbytes * 8;
    r.pos = 0;
    return r;
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
    // (x >>> 1) >>> (31 - r) is x >>> (32 - r) without the shift-by-32 case at r = 0
    return ((w[i]! << r) | ((w[i + 1]! >>> 1) >>> (31 - r))) >>> 0;
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
    const z = Math.clz32(win);
    if (z < RICE_ESCAPE) {
      if (z + k < 32) {
        // quotient, stop bit and remainder in the window: (z - 1) * 2^k + (2^k + remainder)
        this.pos += z + 1 + k;
        return ((z - 1) << k) + ((win << z) >>> (31 - k));
      }
      this.pos += z + 1;
      return z * POW2[k]! + this.readWide(k);
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
    // a value whose unary quotient, stop bit and k remainder bits lie in the next 32 bits is
    // decoded inline as (z - 1) * 2^k + (1 * 2^k + remainder), all in int32; others by rice()
    const fast = Math.min(31 - k, RICE_ESCAPE);
    if (fast <= 0) {
      for (let i = 0; i < len; i++) out[off + i] = this.riceValue(k, base, zig);
      this.check();
      return;
    }
    const w = this.w;
    const sh = 31 - k;
    let pos = this.pos;
    if (zig) {
      for (let i = 0; i < len; i++) {
        const r = pos & 31;
        const j = pos >>> 5;
        const win = (w[j]! << r) | ((w[j + 1]! >>> 1) >>> (31 - r));
        const z = Math.clz32(win);
        if (z < fast) {
          const v = ((z - 1) << k) + ((win << z) >>> sh);
          pos += z + 1 + k;
          out[off + i] = base + ((v >>> 1) ^ -(v & 1));
        } else {
          this.pos = pos;
          out[off + i] = this.riceValue(k, base, true);
          pos = this.pos;
        }
      }
    } else {
      for (let i = 0; i < len; i++) {
        const r = pos & 31;
        const j = pos >>> 5;
        const win = (w[j]! << r) | ((w[j + 1]! >>> 1) >>> (31 - r));
        const z = Math.clz32(win);
        if (z < fast) {
          out[off + i] = base + (((z - 1) << k) + ((win << z) >>> sh));
          pos += z + 1 + k;
        } else {
          this.pos = pos;
          out[off + i] = base + this.rice(k);
          pos = this.pos;
        }
      }
    }
    this.pos = pos;
    if (pos > this.total) throw this.corrupt('bit stream truncated');
  }

  /**
   * Decodes `len` Rice(k) values x (`base + v`, or `base + unzigzag(v)` when `zig` is true, as
   * {@link riceBlock} does) and writes their running sums divided by `div`:
   * `acc = x + acc; out[off + i] = acc / div`. Returns the last `acc`.
   */
  riceSums(out: Float64Array, off: number, len: number, k: number, base: number, zig: boolean, acc: number, div: number): number {
    // `+` types the loop's accumulators as numbers for the optimizing compiler: from an untyped
    // parameter (or call result) it kept `acc` tagged, so every sum that is not a small integer
    // (counters above 2^31, fractions) was a new heap number. Measured on the bench's dataset:
    // 70 % of the decoder's allocation (2 bytes per decoded sample), and 10-14 % of its speed.
    acc = +acc;
    base = +base;
    const fast = Math.min(31 - k, RICE_ESCAPE);
    if (fast <= 0) {
      for (let i = 0; i < len; i++) {
        acc = this.riceValue(k, base, zig) + acc;
        out[off + i] = acc / div;
      }
      this.check();
      return acc;
    }
    const w = this.w;
    const sh = 31 - k;
    let pos = this.pos;
    // the same loop twice: leaving out the division when div is 1 (integer counters) pays
    if (div === 1) {
      for (let i = 0; i < len; i++) {
        const r = pos & 31;
        const j = pos >>> 5;
        const win = (w[j]! << r) | ((w[j + 1]! >>> 1) >>> (31 - r));
        const z = Math.clz32(win);
        let x: number;
        if (z < fast) {
          const v = ((z - 1) << k) + ((win << z) >>> sh);
          pos += z + 1 + k;
          x = base + (zig ? (v >>> 1) ^ -(v & 1) : v);
        } else {
          this.pos = pos;
          x = +this.riceValue(k, base, zig);
          pos = this.pos;
        }
        acc = x + acc;
        out[off + i] = acc;
      }
    } else {
      for (let i = 0; i < len; i++) {
        const r = pos & 31;
        const j = pos >>> 5;
        const win = (w[j]! << r) | ((w[j + 1]! >>> 1) >>> (31 - r));
        const z = Math.clz32(win);
        let x: number;
        if (z < fast) {
          const v = ((z - 1) << k) + ((win << z) >>> sh);
          pos += z + 1 + k;
          x = base + (zig ? (v >>> 1) ^ -(v & 1) : v);
        } else {
          this.pos = pos;
          x = +this.riceValue(k, base, zig);
          pos = this.pos;
        }
        acc = x + acc;
        out[off + i] = acc / div;
      }
    }
    this.pos = pos;
    if (pos > this.total) throw this.corrupt('bit stream truncated');
    return acc;
  }

  /**
   * Reads the `count` (gap, value) pairs of a SPARSE sequence of `n` elements (intseq.ts): index
   * `i += rice(kGap) + 1` (from -1) into `idx`, and `base + unzigzag(rice(kVal) + 1)` into `val`.
   * The same as calling {@link rice} in a loop, with the values whose code lies in the next 32
   * bits decoded inline (a SPARSE sequence holds a run's jittered timestamps: this was a fifth
   * of the decoding time). Throws on an index at or beyond `n`, and where those calls would
   * throw (a read that starts past the end).
   */
  sparsePairs(idx: Int32Array, val: Float64Array, count: number, n: number, kGap: number, kVal: number, base: number): void {
    const w = this.w;
    const fastGap = Math.min(31 - kGap, RICE_ESCAPE);
    const fastVal = Math.min(31 - kVal, RICE_ESCAPE);
    const shGap = 31 - kGap;
    const shVal = 31 - kVal;
    let pos = this.pos;
    let i = -1;
    for (let e = 0; e < count; e++) {
      let r = pos & 31;
      let j = pos >>> 5;
      let win = (w[j]! << r) | ((w[j + 1]! >>> 1) >>> (31 - r));
      let z = Math.clz32(win);
      let g: number;
      if (z < fastGap) {
        g = ((z - 1) << kGap) + ((win << z) >>> shGap);
        pos += z + 1 + kGap;
      } else {
        this.pos = pos;
        g = this.rice(kGap);
        pos = this.pos;
      }
      i += g + 1;
      if (i >= n) {
        this.pos = pos;
        throw this.corrupt(`sparse exception index ${i} beyond ${n} elements`);
      }
      idx[e] = i;
      r = pos & 31;
      j = pos >>> 5;
      win = (w[j]! << r) | ((w[j + 1]! >>> 1) >>> (31 - r));
      z = Math.clz32(win);
      let v: number;
      if (z < fastVal) {
        v = ((z - 1) << kVal) + ((win << z) >>> shVal) + 1;
        pos += z + 1 + kVal;
      } else {
        this.pos = pos;
        v = this.rice(kVal) + 1;
        pos = this.pos;
      }
      val[e] = base + (v < 0x80000000 ? (v >>> 1) ^ -(v & 1) : v % 2 === 0 ? v / 2 : -(v + 1) / 2);
    }
    // no check of the end here, as in rice(): past the end every word reads as zero, so a read
    // that starts there finds no stop bit in its window and goes to rice(), which throws
    this.pos = pos;
  }

  /** `base + v`, or `base + unzigzag(v)` when `zig` is true, for the next Rice(k) value v. */
  private riceValue(k: number, base: number, zig: boolean): number {
    const v = this.rice(k);
    if (!zig) return base + v;
    return base + (v < 0x80000000 ? (v >>> 1) ^ -(v & 1) : v % 2 === 0 ? v / 2 : -(v + 1) / 2);
  }


  /**
   * Reads `len` symbols of a table code (see intseq.ts, TABLE): `lookup[next maxLen bits]` is
   * symbol << 4 | code length, 0 for bits that start no code. Writes `base + symbol` to
   * `out[off..off+len)`, or, when `div` > 0, the running sums from `acc` divided by `div` (delta
   * coded data), and returns the last sum.
   */
  tableBlock(out: Float64Array, off: number, len: number, lookup: Uint16Array, maxLen: number, base: number, acc: number, div: number): number {
    acc = +acc; // typed as a number, as in riceSums
    base = +base;
    let pos = this.pos;
    for (let i = 0; i < len; i++) {
      const e = lookup[this.bitsAt(pos, maxLen)]!;
      if (e === 0) {
        this.pos = pos;
        throw this.corrupt('table sequence holds a code that is not in its table');
      }
      pos += e & 15;
      // past the end the words read as zero (or stale, in a shared buffer): the check below
      // rejects the whole block then
      if (div > 0) {
        acc = base + (e >>> 4) + acc;
        out[off + i] = acc / div;
      } else out[off + i] = base + (e >>> 4);
    }
    this.pos = pos;
    if (pos > this.total) throw this.corrupt('bit stream truncated');
    return acc;
  }

  /**
   * Reads `len` elements of a BINNED sequence (format version 4): each a code of `lookup` (entries
   * bin << 10 | verbatim bits << 4 | code length) naming a bin counted from `lo`, then the bin's
   * verbatim bits added to `starts[lo + bin]`: a distance z from `center`, zigzagged when `zig`. Writes the elements to
   * `out[off..off+len)`, or, when `div` > 0, their running sums from `acc` divided by `div`, and
   * returns the last sum.
   */
  binnedBlock(
    out: Float64Array,
    off: number,
    len: number,
    lookup: Uint16Array,
    maxLen: number,
    starts: Float64Array,
    lo: number,
    center: number,
    zig: boolean,
    acc: number,
    div: number,
  ): number {
    acc = +acc; // typed as a number, as in riceSums
    center = +center;
    const w = this.w;
    const codeShift = 32 - maxLen;
    let pos = this.pos;
    for (let i = 0; i < len; i++) {
      // the next 32 bits: the code, and the verbatim bits after it when they fit
      const r = pos & 31;
      const j = pos >>> 5;
      const word = (w[j]! << r) | ((w[j + 1]! >>> 1) >>> (31 - r));
      const e = lookup[word >>> codeShift]!;
      if (e === 0) {
        this.pos = pos;
        throw this.corrupt('binned sequence holds a code that is not in its table');
      }
      const clen = e & 15;
      const ob = (e >>> 4) & 63;
      let z = starts[lo + (e >>> 10)]!;
      if (ob !== 0) {
        if (clen + ob <= 32) z += (word << clen) >>> (32 - ob);
        else if (ob <= 32) z += this.bitsAt(pos + clen, ob);
        else z += this.bitsAt(pos + clen, ob - 32) * TWO32 + this.bitsAt(pos + clen + ob - 32, 32);
      }
      pos += clen + ob;
      // past the end the words read as zero (or stale): the check below rejects the block then
      const v = zig ? center + (z < 0x80000000 ? (z >>> 1) ^ -(z & 1) : z % 2 === 0 ? z / 2 : -(z + 1) / 2) : center + z;
      if (div > 0) {
        acc = v + acc;
        // without the division when div is 1 (integer counters), as in riceSums
        out[off + i] = div === 1 ? acc : acc / div;
      } else out[off + i] = v;
    }
    this.pos = pos;
    if (pos > this.total) throw this.corrupt('bit stream truncated');
    return acc;
  }

  /**
   * {@link binnedBlock} for sequences whose distances are all below 2^31 and whose codes and
   * verbatim bits fit 32 bits together (nearly all): one 32-bit read per element and int32
   * arithmetic. `starts` as int32. A loop of its own, not a branch in binnedBlock's: the
   * generator's counter increments decoded in 12-13 ns each instead of 16.5-19 (measured here,
   * one loop against the other on the same sequences).
   */
  binnedBlock32(
    out: Float64Array,
    off: number,
    len: number,
    lookup: Uint16Array,
    maxLen: number,
    starts: Int32Array,
    lo: number,
    center: number,
    zig: boolean,
    acc: number,
    div: number,
  ): number {
    acc = +acc;
    center = +center;
    const w = this.w;
    const codeShift = 32 - maxLen;
    let pos = this.pos;
    for (let i = 0; i < len; i++) {
      const r = pos & 31;
      const j = pos >>> 5;
      const word = (w[j]! << r) | ((w[j + 1]! >>> 1) >>> (31 - r));
      const e = lookup[word >>> codeShift]!;
      if (e === 0) {
        this.pos = pos;
        throw this.corrupt('binned sequence holds a code that is not in its table');
      }
      const clen = e & 15;
      const ob = (e >>> 4) & 63;
      // (x >>> 1) >>> (31 - ob) is x >>> (32 - ob), and 0 for ob = 0
      const z = starts[lo + (e >>> 10)]! + (((word << clen) >>> 1) >>> (31 - ob));
      pos += clen + ob;
      const v = center + (zig ? (z >>> 1) ^ -(z & 1) : z);
      if (div > 0) {
        acc = v + acc;
        out[off + i] = div === 1 ? acc : acc / div;
      } else out[off + i] = v;
    }
    this.pos = pos;
    if (pos > this.total) throw this.corrupt('bit stream truncated');
    return acc;
  }

  /** Bits left before the end of the stream (negative after reading past it). */
  get bitsLeft(): number {
    return this.total - this.pos;
  }

  /**
   * The `k` bits (1..32) starting at bit `p` as an unsigned number, without moving {@link pos}
   * and without checking the end: callers check first that the stream holds them.
   */
  bitsAt(p: number, k: number): number {
    const r = p & 31;
    const j = p >>> 5;
    const w = this.w;
    return ((w[j]! << r) | ((w[j + 1]! >>> 1) >>> (31 - r))) >>> (32 - k);
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
      const r = pos & 31;
      const j = pos >>> 5;
      out[off + i] = ((w[j]! << r) | ((w[j + 1]! >>> 1) >>> (31 - r))) >>> sh;
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
