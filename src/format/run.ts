/**
 * A run: all samples of one series in one block, encoded as one self-describing byte string
 * (spec: docs/format/chunk.md).
 *
 * ```
 * run   := u8 encoding, uvarint count, body
 * body  := uvarint tsLen, timestamps[tsLen], values[...]      (encoding bit 7 clear)
 *        | u32 rawLen, lz4 block of the plain body            (encoding bit 7 set)
 * encoding = tsLayout | valueLayout << 3 | lz4 << 7
 * ```
 *
 * Format version 2: a run whose timestamps are shared with other series of its index page has
 * tsLayout {@link TS_SHARED} (0) and a body of its value section alone; the timestamp section is
 * kept once in the page ({@link SharedTimestamps}) and given to the decoder.
 */
import { compressSync, uncompressSync } from 'lz4-napi';
import { type CorruptionError, ErrorCode, InvalidArgumentError, StrataError } from '../errors.js';
import { ByteReader, ByteWriter, MEMORY, onShrinkScratch, putUvarint, SCRATCH_KEEP_SAMPLES, shrinkScratch, uvarintLength, type Origin } from './bytes.js';
import { BINNED_VERSION, FORMAT_VERSION } from './footer.js';
import { decodeSequencesOfVersion, encodeSequencesOfCodes } from './intseq.js';
import { decodeTimestamps, encodeTimestamps, TS_RAW } from './timestamps.js';
import { decodeValues, encodeValues, V_CONST, V_EXCEPTIONS, V_NEAR } from './values.js';

/**
 * The last format version that added run codes, counted as RUNS versions: 1 (format version 1),
 * 2 (value exceptions and TABLE sequences: format versions 2 and 3), 3 (BINNED sequences: format
 * version 4). Also the RUNS version of the read API (read.proto, `runs_version`): what a client
 * must decode to take the runs of every block this build writes.
 */
export const RUN_CODES_VERSION = 3;

/** The run codes of a block of format version `version`. */
export function runCodesVersionOf(version: number): number {
  return version >= BINNED_VERSION ? RUN_CODES_VERSION : Math.min(version, 2);
}
/** Bit of the encoding byte that marks an lz4-compressed body. */
export const RUN_LZ4 = 0x80;
/** Runs shorter than this are never tried with lz4. */
const LZ4_MIN_BYTES = 128;
/** lz4 is kept only when it saves at least this share of the body. */
const LZ4_MIN_SAVING = 1 / 16;
/** Upper bound on encoded bytes per sample, used to sanity-check lz4 size prefixes. */
const MAX_BYTES_PER_SAMPLE = 17;
/**
 * Most samples one run may hold (2^24, a sample every 0.86 ms over 4 hours). A regular, constant
 * run costs a few bytes whatever its length, so the count cannot be bounded by the run's size.
 */
export const MAX_RUN_SAMPLES = 1 << 24;

/** Timestamp layout of a run whose timestamps are kept in its index page (format version 2). */
export const TS_SHARED = 0;

/** A timestamp section kept apart from its runs: the one of an index page's shared vectors. */
export interface SharedTimestamps {
  /** Timestamp layout (1..3, see timestamps.ts). */
  readonly layout: number;
  /** Number of timestamps. */
  readonly count: number;
  /** The timestamp section. */
  readonly bytes: Uint8Array;
  /** Where `bytes[0]` is, for errors. */
  readonly origin: Origin;
}

/** Samples of one series: strictly increasing int64 ms timestamps and float64 values. */
export interface Samples {
  readonly timestamps: BigInt64Array;
  readonly values: Float64Array;
}

/** Options of {@link encodeRun}. */
export interface EncodeOptions {
  /** Try lz4 on the body and keep it when it pays (default true). */
  readonly lz4?: boolean;
  /**
   * The run codes the run may use (default {@link RUN_CODES_VERSION}): 2 leaves BINNED sequences
   * out, for a reader of RUNS version 2 (a query client before format version 4).
   */
  readonly codes?: number;
}

const body = new ByteWriter(4096);
const section = new ByteWriter(4096);
onShrinkScratch(() => {
  body.shrink(16 * SCRATCH_KEEP_SAMPLES);
  section.shrink(16 * SCRATCH_KEEP_SAMPLES);
  if (rangeScratch.length > SCRATCH_KEEP_SAMPLES) rangeScratch = new BigInt64Array(1024);
});

/**
 * Encodes samples into a run. Throws InvalidArgumentError on empty input, length mismatch or
 * timestamps that do not strictly increase. The returned bytes are a fresh copy.
 */
export function encodeRun(samples: Samples, opts: EncodeOptions = {}): Uint8Array {
  const { timestamps, values } = samples;
  const n = timestamps.length;
  if (n === 0) throw new InvalidArgumentError('samples', 'a run needs at least one sample');
  if (n > MAX_RUN_SAMPLES) throw new InvalidArgumentError('samples', `${n} samples exceed the ${MAX_RUN_SAMPLES} a run may hold`);
  if (values.length !== n) throw new InvalidArgumentError('values', `${values.length} values for ${n} timestamps`);
  section.reset();
  const codes = opts.codes ?? RUN_CODES_VERSION;
  if (codes !== 2 && codes !== RUN_CODES_VERSION) throw new InvalidArgumentError('codes', `run codes version ${codes}: this build encodes 2 or ${RUN_CODES_VERSION}`);
  if (codes !== RUN_CODES_VERSION) encodeSequencesOfCodes(codes);
  let tsMode: number;
  let tsLen: number;
  let valMode: number;
  try {
    tsMode = encodeTimestamps(section, timestamps, n);
    tsLen = section.length;
    valMode = encodeValues(section, values, n);
  } finally {
    if (codes !== RUN_CODES_VERSION) encodeSequencesOfCodes(RUN_CODES_VERSION);
  }
  body.reset();
  body.uvarint(tsLen);
  body.bytes(section.finish());
  const plain = body.finish();
  const enc = tsMode | (valMode << 3);
  const run = (opts.lz4 !== false ? packedRun(enc, n, plain) : null) ?? writeRun(enc, n, plain);
  // the scratch a series of millions of samples grew is not kept for the series after it
  if (n > SCRATCH_KEEP_SAMPLES) shrinkScratch();
  return run;
}

/**
 * Encodes like {@link encodeRun}, then decodes the run and checks that it gives back `samples`
 * bit for bit: a self-check of the codec, for runs that replace what was stored (merges, day
 * blocks) and, when configured, for every run a write encodes. A checksum only shows that bytes
 * were not damaged after they were made; this shows they were made right. Decoding costs about a
 * quarter of encoding.
 * @throws StrataError (INTERNAL) naming `what` and the first sample that differs; nothing is
 * returned then, so nothing wrong is stored.
 */
export function encodeRunChecked(samples: Samples, opts: EncodeOptions, what: string): Uint8Array {
  const run = encodeRun(samples, opts);
  checkRunDecodesTo(run, samples, what);
  return run;
}

/**
 * Checks that `run` decodes to `samples`, bit for bit (the check of {@link encodeRunChecked}).
 * @throws StrataError (INTERNAL) naming `what` and the first sample that differs.
 */
export function checkRunDecodesTo(run: Uint8Array, samples: Samples, what: string): void {
  const n = samples.timestamps.length;
  const about = `${what}: the encoded run (encoding ${run[0]}, ${run.length} bytes, ${n} samples)`;
  // scratch arrays for runs up to CHECK_SCRATCH_SAMPLES (kept by the thread: 1 MiB at most),
  // arrays of the call's own for larger ones (freed with it)
  if (n <= CHECK_SCRATCH_SAMPLES && checkTs.length < n) {
    checkTs = new BigInt64Array(Math.min(CHECK_SCRATCH_SAMPLES, Math.max(n, 2 * checkTs.length)));
    checkVs = new Float64Array(checkTs.length);
  }
  const intoTs = n <= CHECK_SCRATCH_SAMPLES ? checkTs : new BigInt64Array(n);
  const intoVs = n <= CHECK_SCRATCH_SAMPLES ? checkVs : new Float64Array(n);
  let count: number;
  try {
    // decoded once the run is known to hold as many samples as it should
    count = readRunHeader(run).count;
    if (count === n) decodeRunInto(run, MEMORY, intoTs, intoVs, 0);
  } catch (err) {
    throw new StrataError(ErrorCode.INTERNAL, `${about} does not decode: ${(err as Error).message}`, { cause: err });
  }
  if (count !== n) throw new StrataError(ErrorCode.INTERNAL, `${about} decodes to ${count} samples`);
  const ts = samples.timestamps;
  const wantTs = Buffer.from(ts.buffer, ts.byteOffset, 8 * n);
  const wantVs = Buffer.from(samples.values.buffer, samples.values.byteOffset, 8 * n);
  const gotTs = Buffer.from(intoTs.buffer, 0, 8 * n);
  const gotVs = Buffer.from(intoVs.buffer, 0, 8 * n);
  if (wantTs.equals(gotTs) && wantVs.equals(gotVs)) return;
  let i = 0;
  while (i < n && wantTs.readBigInt64LE(8 * i) === gotTs.readBigInt64LE(8 * i) && wantVs.readBigUInt64LE(8 * i) === gotVs.readBigUInt64LE(8 * i)) i++;
  const hex = (b: Buffer): string => b.readBigUInt64LE(8 * i).toString(16).padStart(16, '0');
  throw new StrataError(ErrorCode.INTERNAL, `${about} decodes to a different sample ${i}: timestamp ${gotTs.readBigInt64LE(8 * i)} value bits ${hex(gotVs)}, written ${ts[i]} / ${hex(wantVs)}`);
}

/** Samples of the scratch arrays {@link checkRunDecodesTo} keeps between calls, at most. */
const CHECK_SCRATCH_SAMPLES = 65536;
/** Scratch of {@link checkRunDecodesTo}. */
let checkTs = new BigInt64Array(1024);
let checkVs = new Float64Array(1024);

/** A run of header `enc`, `n` and body `body` (plain or packed as `enc` says). */
function writeRun(enc: number, n: number, body: Uint8Array): Uint8Array {
  // exactly sized: header byte, uvarint count (n < 2^25), body
  let head = 2;
  for (let v = n; v >= 128; v = Math.floor(v / 128)) head++;
  const out = new Uint8Array(head + body.length);
  out[0] = enc;
  let p = 1;
  let v = n;
  for (; v >= 128; v = Math.floor(v / 128)) out[p++] = (v % 128) | 128;
  out[p++] = v;
  out.set(body, p);
  return out;
}

/** The run with its plain body lz4-compressed, or null when lz4 does not pay. */
function packedRun(enc: number, n: number, plain: Uint8Array): Uint8Array | null {
  if (plain.length < LZ4_MIN_BYTES) return null;
  const packed = compressSync(Buffer.from(plain.buffer, plain.byteOffset, plain.length));
  return packed.length <= plain.length * (1 - LZ4_MIN_SAVING) ? writeRun(enc | RUN_LZ4, n, packed) : null;
}

/**
 * What {@link encodeRun} with lz4 on returns for the samples of `plainRun`, a run encoded with
 * `lz4: false`, without decoding the samples: the same header and body, the body lz4-compressed
 * when that pays. `plainRun` itself is returned when it stays as it is.
 */
export function lz4Run(plainRun: Uint8Array, origin: Origin = MEMORY): Uint8Array {
  const r = new ByteReader(plainRun, origin);
  const enc = r.u8('run encoding');
  const n = r.uvarint('run sample count');
  if (enc & RUN_LZ4) throw r.corrupt('run is lz4-compressed already');
  return packedRun(enc, n, plainRun.subarray(r.pos)) ?? plainRun;
}

let rangeScratch = new BigInt64Array(1024);

/**
 * The sample count and the first and last timestamps of a run, decoding only its timestamp
 * section (what a block's index needs of a run that is copied as it is).
 */
export function runTimeRange(buf: Uint8Array, origin: Origin = MEMORY): { count: number; first: bigint; last: bigint } {
  const { enc, n, body } = openRun(new ByteReader(buf, origin));
  if ((enc & 7) === TS_SHARED) throw noTimestamps(body);
  const tsLen = sectionLength(body);
  if (rangeScratch.length < n) rangeScratch = new BigInt64Array(Math.max(n, 2 * rangeScratch.length));
  decodeTimestamps(new ByteReader(body.buf, body.origin, body.pos, body.pos + tsLen), enc & 7, n, rangeScratch, 0);
  return { count: n, first: rangeScratch[0]!, last: rangeScratch[n - 1]! };
}

/**
 * Whether the run in `buf` has a sample with a timestamp in `[start, end)`, decoding only its
 * timestamp section (timestamps in a run ascend). For a run whose time range straddles a bound
 * of a read: a gap in the series may leave no sample inside.
 */
export function runHasSampleIn(buf: Uint8Array, origin: Origin, start: bigint, end: bigint, shared: SharedTimestamps | null = null): boolean {
  if (end <= start) return false;
  const { enc, n, body } = openRun(new ByteReader(buf, origin));
  if (rangeScratch.length < n) rangeScratch = new BigInt64Array(Math.max(n, 2 * rangeScratch.length));
  if ((enc & 7) === TS_SHARED) {
    // the run's timestamps are its page's vector
    if (!shared) throw noTimestamps(body);
    if (shared.count !== n) throw body.corrupt(`run of ${n} samples refers to ${shared.count} shared timestamps`, 0);
    decodeTimestamps(new ByteReader(shared.bytes, shared.origin), shared.layout, n, rangeScratch, 0);
  } else {
    const tsLen = sectionLength(body);
    decodeTimestamps(new ByteReader(body.buf, body.origin, body.pos, body.pos + tsLen), enc & 7, n, rangeScratch, 0);
  }
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (rangeScratch[mid]! < start) lo = mid + 1;
    else hi = mid;
  }
  return lo < n && rangeScratch[lo]! < end;
}

/** Header of a run: its encoding byte and sample count. */
export interface RunHeader {
  readonly encoding: number;
  readonly count: number;
}

/** Reads the header of the run in `buf` without decoding it. */
export function readRunHeader(buf: Uint8Array, origin: Origin = MEMORY): RunHeader {
  const r = new ByteReader(buf, origin);
  const encoding = r.u8('run encoding');
  const count = r.uvarint('run sample count');
  return { encoding, count };
}

/**
 * Reads the encoding byte and sample count of the run in `r` (at its start) and returns a reader
 * over the run's plain body: `r` itself, or the decompressed body of an lz4 run.
 */
function openRun(r: ByteReader, version = FORMAT_VERSION): { enc: number; n: number; body: ByteReader } {
  const enc = r.u8('run encoding');
  if (version < 2) checkVersion1(r, enc);
  const n = r.uvarint('run sample count');
  if (n === 0) throw r.corrupt('run has no samples');
  if (n > MAX_RUN_SAMPLES) throw r.corrupt(`run claims ${n} samples, more than ${MAX_RUN_SAMPLES}`);
  if (!(enc & RUN_LZ4)) return { enc, n, body: r };
  const buf = r.buf;
  r.need(4, 'lz4 size');
  const rawLen = new DataView(buf.buffer, buf.byteOffset + r.pos, 4).getUint32(0, true);
  if (rawLen > n * MAX_BYTES_PER_SAMPLE + 64) throw r.corrupt(`lz4 body claims ${rawLen} bytes for ${n} samples`);
  let plain: Uint8Array;
  try {
    plain = uncompressSync(buf.subarray(r.pos));
  } catch (err) {
    throw r.corrupt(`lz4 body does not decompress: ${(err as Error).message}`);
  }
  if (plain.length !== rawLen) throw r.corrupt(`lz4 body is ${plain.length} bytes, header says ${rawLen}`);
  // offsets inside a decompressed body are reported at the run's start
  return { enc, n, body: new ByteReader(plain, { object: r.origin.object, offset: r.origin.offset }) };
}

/**
 * Refuses, in a run of a format version 1 block, the codes that version 2 added: timestamp
 * layout 0 (shared), value layout 5 (NEAR) and the exception flag (value layouts 9..13). Such a
 * run is damage (a version 1 writer never wrote them), so it is a CorruptionError, not decoded.
 * TABLE sequences inside are refused by the sequence decoder ({@link decodeSequencesOfVersion}).
 */
function checkVersion1(r: ByteReader, enc: number): void {
  const ts = enc & 7;
  const val = (enc >> 3) & 15;
  const plain = val & ~V_EXCEPTIONS;
  let what = '';
  if (ts === TS_SHARED) what = `timestamp layout ${ts} (shared timestamps)`;
  else if (val === V_NEAR) what = `value layout ${val} (NEAR)`;
  else if (val & V_EXCEPTIONS && plain >= V_CONST && plain <= V_NEAR) what = `value layout ${val} (exceptions)`;
  if (what) throw r.corrupt(`${what} is format version 2, in a block of format version 1`, r.pos - 1);
}

/**
 * The oldest format version whose runs decode as the current version's: 2 (version 3 changed
 * nothing in runs, and BINNED, of version 4, is decoded in versions 2 and 3 too: intseq.ts).
 */
const CURRENT_CODES_FROM = 2;

/**
 * Runs `decode` with the integer sequences of format `version`, older than
 * {@link CURRENT_CODES_FROM} (TABLE, BINNED among them, refused in version 1), and sets the
 * sequence decoder back to the current version after. Callers test the version first: newer runs
 * decode without this closure.
 */
function ofVersion<T>(version: number, decode: () => T): T {
  decodeSequencesOfVersion(version);
  try {
    return decode();
  } finally {
    decodeSequencesOfVersion(FORMAT_VERSION);
  }
}

/** The error for a {@link TS_SHARED} run decoded without the timestamps of its index page. */
function noTimestamps(body: ByteReader): CorruptionError {
  return body.corrupt('run keeps its timestamps in an index page, but none were given', 0);
}

/** Reads the timestamp section length of a plain body and checks that the section is there. */
function sectionLength(br: ByteReader): number {
  const tsLen = br.uvarint('timestamp section length');
  br.need(tsLen, 'timestamp section');
  return tsLen;
}

/** Decodes both sections of a plain body (after its length field) into the arrays at `at`. */
function decodeSections(br: ByteReader, enc: number, n: number, tsLen: number, timestamps: BigInt64Array, values: Float64Array, at: number): void {
  const tsEnd = br.pos + tsLen;
  decodeTimestamps(new ByteReader(br.buf, br.origin, br.pos, tsEnd), enc & 7, n, timestamps, at);
  decodeValues(new ByteReader(br.buf, br.origin, tsEnd, br.end), (enc >> 3) & 15, n, values, at);
}

/**
 * Two arrays of n samples for a decoded run: views of one ArrayBuffer of their own (timestamps
 * at byte 0, values at byte 8n), not shared with any other run and not zero-filled (every element
 * is written before the arrays are returned). One allocation, not two: each ArrayBuffer is an
 * external allocation that V8 tracks and sweeps, and with two per run, decodeRun over the bench's
 * 10,000 runs ran at 12 M samples/s against 60 M for decodeRunInto with the same decoding.
 */
function allocSamples(n: number): Samples {
  const buf = Buffer.allocUnsafeSlow(16 * n).buffer;
  return { timestamps: new BigInt64Array(buf, 0, n), values: new Float64Array(buf, 8 * n, n) };
}

/**
 * Decodes a whole run. Consumes `buf` exactly; any structural problem throws a CorruptionError
 * that names `origin` and the absolute offset. A run with shared timestamps ({@link TS_SHARED})
 * needs them in `shared` (from its index page), and a run with its own must come without.
 * `version` is the format version of the block the run comes from: in a version 1 block, the
 * codes version 2 added are a CorruptionError that names the code and the version.
 */
export function decodeRun(buf: Uint8Array, origin: Origin = MEMORY, shared: SharedTimestamps | null = null, version = FORMAT_VERSION): Samples {
  if (version < CURRENT_CODES_FROM) return ofVersion(version, () => decodeWhole(buf, origin, shared, version));
  return decodeWhole(buf, origin, shared, version);
}

function decodeWhole(buf: Uint8Array, origin: Origin, shared: SharedTimestamps | null, version: number): Samples {
  const { enc, n, body } = openRun(new ByteReader(buf, origin), version);
  const samples = allocSamples(n);
  decodeBody(enc, n, body, shared, samples.timestamps, samples.values, 0);
  return samples;
}

/** The samples of an opened run (header `enc`, `n`; `body` after it) into the arrays at `at`. */
function decodeBody(enc: number, n: number, body: ByteReader, shared: SharedTimestamps | null, timestamps: BigInt64Array, values: Float64Array, at: number): void {
  if ((enc & 7) === TS_SHARED) {
    if (!shared) throw noTimestamps(body);
    if (shared.count !== n) throw body.corrupt(`run of ${n} samples refers to ${shared.count} shared timestamps`, 0);
    decodeTimestamps(new ByteReader(shared.bytes, shared.origin), shared.layout, n, timestamps, at);
    decodeValues(body, (enc >> 3) & 15, n, values, at);
    return;
  }
  if (shared) throw body.corrupt('run has timestamps of its own, but its index entry shares a vector', 0);
  decodeSections(body, enc, n, sectionLength(body), timestamps, values, at);
}

/** A run split by {@link splitRun}. */
export interface SplitRun {
  /** The timestamp section (a view), its layout and count. */
  readonly layout: number;
  readonly count: number;
  readonly timestamps: Uint8Array;
  /**
   * The same run without its timestamps ({@link TS_SHARED}), plain (no lz4): made on first use
   * (a block writer needs it only for runs whose page shares their timestamps).
   */
  readonly valuesRun: Uint8Array;
}

/**
 * Splits a run with its own timestamps (plain or lz4) into its timestamp section and a run of its
 * values alone, without decoding samples: what a block writer needs to share timestamp vectors.
 */
export function splitRun(buf: Uint8Array, origin: Origin = MEMORY): SplitRun {
  const { enc, n, body } = openRun(new ByteReader(buf, origin));
  const layout = enc & 7;
  if (layout === TS_SHARED || layout > TS_RAW) throw body.corrupt(`cannot split a run of timestamp layout ${layout}`, 0);
  const tsLen = sectionLength(body);
  const timestamps = body.buf.subarray(body.pos, body.pos + tsLen);
  const values = body.buf.subarray(body.pos + tsLen, body.end);
  let valuesRun: Uint8Array | null = null;
  return {
    layout,
    count: n,
    timestamps,
    get valuesRun(): Uint8Array {
      return (valuesRun ??= writeRun((enc & ~RUN_LZ4 & ~7) | TS_SHARED, n, values));
    },
  };
}

/**
 * The self-contained run (plain) of a {@link TS_SHARED} run and its shared timestamps: what a
 * client that has no index page decodes.
 */
export function joinRun(shared: SharedTimestamps, valuesRun: Uint8Array, origin: Origin = MEMORY): Buffer {
  const { enc, n, body } = openRun(new ByteReader(valuesRun, origin));
  if ((enc & 7) !== TS_SHARED) throw body.corrupt('run has timestamps of its own already', 0);
  if (shared.count !== n) throw body.corrupt(`run of ${n} samples refers to ${shared.count} shared timestamps`, 0);
  const values = body.buf.subarray(body.pos, body.end);
  const ts = shared.bytes;
  // sized exactly and not zero-filled: a gateway joins runs for every warm read of them, and a
  // small Buffer.allocUnsafe is a slice of Node's pool, not an array buffer of its own to collect
  const out = Buffer.allocUnsafe(1 + uvarintLength(n) + uvarintLength(ts.length) + ts.length + values.length);
  out[0] = (enc & ~RUN_LZ4) | shared.layout;
  let at = putUvarint(out, putUvarint(out, 1, n), ts.length);
  out.set(ts, at);
  at += ts.length;
  out.set(values, at);
  return out;
}

/**
 * Decodes a whole run like {@link decodeRun}, but into `timestamps[offset..offset+count)` and
 * `values[offset..offset+count)` of arrays the caller provides (so many runs can share one
 * allocation), and returns the run's sample count (see {@link readRunHeader}). Throws
 * InvalidArgumentError when the arrays have no room for the run; the arrays are left untouched
 * then. On a CorruptionError part of that range may have been written. `version` and `shared`: as
 * for {@link decodeRun}.
 */
export function decodeRunInto(
  buf: Uint8Array,
  origin: Origin,
  timestamps: BigInt64Array,
  values: Float64Array,
  offset: number,
  version = FORMAT_VERSION,
  shared: SharedTimestamps | null = null,
): number {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new InvalidArgumentError('offset', `${offset} is not a non-negative integer`);
  if (version < CURRENT_CODES_FROM) return ofVersion(version, () => decodeInto(buf, origin, timestamps, values, offset, version, shared));
  return decodeInto(buf, origin, timestamps, values, offset, version, shared);
}

function decodeInto(buf: Uint8Array, origin: Origin, timestamps: BigInt64Array, values: Float64Array, offset: number, version: number, shared: SharedTimestamps | null): number {
  const { enc, n, body } = openRun(new ByteReader(buf, origin), version);
  if (offset + n > timestamps.length) throw new InvalidArgumentError('timestamps', `no room for ${n} samples at offset ${offset} in ${timestamps.length}`);
  if (offset + n > values.length) throw new InvalidArgumentError('values', `no room for ${n} samples at offset ${offset} in ${values.length}`);
  decodeBody(enc, n, body, shared, timestamps, values, offset);
  return n;
}
