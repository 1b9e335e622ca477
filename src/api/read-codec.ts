/**
 * The protobuf wire codec of the read API (proto/read.proto): ReadRequest and ReadResponse, both
 * directions, used by the query client and by the storage gateway as the Read method's
 * serializers. `proto/read.proto` stays the contract; this codec exists because the generic
 * proto-loader path costs more than the read itself on warm reads (int64 fields through Long,
 * bytes fields copied twice): see src/storage-gateway/README.md for the measurements. The tests
 * check it against protobufjs loading the .proto (test/api/read-codec.test.ts).
 *
 * Responses are encoded from chunks (the gateway's column or run bytes are copied once, into the
 * message) and decoded into views of the received buffer (no copy).
 */
import type { MethodDefinition } from '@grpc/grpc-js';

/** The Read method's path. */
export const READ_METHOD_PATH = '/strata.read.v1.Read/Read';

/** Encoding enum values of proto/read.proto. */
export const ENCODING_RAW = 0;
export const ENCODING_RUNS = 1;

/** ReadRequest, with int64 fields as bigint. */
export interface ReadRequestFields {
  readonly tenant: string;
  readonly shard: number;
  readonly numShards: number;
  readonly windowStartMs: bigint;
  /** uint64 little-endian ids. */
  readonly seriesIds: Uint8Array;
  readonly startMs: bigint;
  readonly endMs: bigint;
  /** ENCODING_RAW or ENCODING_RUNS (other values are passed through for the server to refuse). */
  readonly encoding: number;
  /** Window length (0 or absent: one block's window; DAY_MS: a day). */
  readonly windowMs?: bigint;
  /**
   * The newest RUNS version the client decodes (read.proto `runs_version`; send
   * `RUN_CODES_VERSION` when decoding runs with this package's decoder). 0 or absent: unset,
   * which the gateway takes as 2.
   */
  readonly runsVersion?: number;
}

/** ReadResponse fields to encode, bytes fields as lists of chunks (concatenated). */
export interface ReadResponseParts {
  readonly blockId?: string;
  readonly seriesIds?: readonly Uint8Array[];
  readonly sampleCounts?: readonly Uint8Array[];
  readonly timestamps?: readonly Uint8Array[];
  readonly values?: readonly Uint8Array[];
  readonly runLengths?: readonly Uint8Array[];
  readonly runCrcs?: readonly Uint8Array[];
  readonly runs?: readonly Uint8Array[];
}

/** A decoded ReadResponse: views into the message buffer (empty when a field is absent). */
export interface ReadResponseView {
  blockId: string;
  seriesIds: Buffer;
  sampleCounts: Buffer;
  timestamps: Buffer;
  values: Buffer;
  runLengths: Buffer;
  runCrcs: Buffer;
  runs: Buffer;
}

/** A message that is not valid protobuf for its type. */
export class ProtoDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtoDecodeError';
  }
}

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;
const EMPTY = Buffer.alloc(0);
const U64 = (1n << 64n) - 1n;

function varintSize(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function int64Size(v: bigint): number {
  let u = BigInt.asUintN(64, v);
  let n = 1;
  while (u >= 128n) {
    u >>= 7n;
    n++;
  }
  return n;
}

/** Writes into a buffer sized in advance. */
class Writer {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  varint(v: number): void {
    while (v >= 128) {
      this.buf[this.pos++] = (v % 128) | 128;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
  }

  int64(v: bigint): void {
    let u = BigInt.asUintN(64, v);
    while (u >= 128n) {
      this.buf[this.pos++] = Number(u & 127n) | 128;
      u >>= 7n;
    }
    this.buf[this.pos++] = Number(u);
  }

  tag(field: number, wire: number): void {
    this.buf[this.pos++] = (field << 3) | wire;
  }

  chunks(field: number, parts: readonly Uint8Array[], len: number): void {
    this.tag(field, WIRE_LEN);
    this.varint(len);
    for (const p of parts) {
      this.buf.set(p, this.pos);
      this.pos += p.length;
    }
  }
}

/** Reads fields of one message. */
class Reader {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  varint(): number {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      if (this.pos >= this.buf.length) throw new ProtoDecodeError('truncated varint');
      const b = this.buf[this.pos++]!;
      v += (b & 127) * mul;
      if (b < 128) return v;
      mul *= 128;
    }
    throw new ProtoDecodeError('varint too large');
  }

  int64(): bigint {
    // the first 7 bytes (49 bits) add up exactly in a Number: a millisecond timestamp makes one
    // BigInt instead of one per byte (which made this the gateway's largest allocation site per
    // request after the HTTP/2 machinery)
    let lo = 0;
    let mul = 1;
    for (let i = 0; i < 7; i++) {
      if (this.pos >= this.buf.length) throw new ProtoDecodeError('truncated varint');
      const b = this.buf[this.pos++]!;
      lo += (b & 127) * mul;
      if (b < 128) return BigInt(lo);
      mul *= 128;
    }
    let v = BigInt(lo);
    let shift = 49n;
    for (let i = 7; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new ProtoDecodeError('truncated varint');
      const b = this.buf[this.pos++]!;
      v |= BigInt(b & 127) << shift;
      if (b < 128) return BigInt.asIntN(64, v & U64);
      shift += 7n;
    }
    throw new ProtoDecodeError('varint too long');
  }

  bytes(): Buffer {
    const n = this.varint();
    const end = this.pos + n;
    if (end > this.buf.length) throw new ProtoDecodeError(`field of ${n} bytes runs past the message`);
    const b = this.buf.subarray(this.pos, end);
    this.pos = end;
    return b;
  }

  skip(wire: number): void {
    if (wire === WIRE_VARINT) this.int64();
    else if (wire === WIRE_I64) this.pos += 8;
    else if (wire === WIRE_LEN) this.bytes();
    else if (wire === WIRE_I32) this.pos += 4;
    else throw new ProtoDecodeError(`unsupported wire type ${wire}`);
    if (this.pos > this.buf.length) throw new ProtoDecodeError('truncated field');
  }

  /** Field number and wire type of the next field. */
  tag(): [number, number] {
    const t = this.varint();
    if (t < 8) throw new ProtoDecodeError('field 0: invalid field number');
    return [Math.floor(t / 8), t % 8];
  }
}

/** Field names of ReadRequest and ReadResponse by number, as in proto/read.proto. */
const REQUEST_FIELDS = ['', 'tenant', 'shard', 'num_shards', 'window_start_ms', 'series_ids', 'start_ms', 'end_ms', 'encoding', 'window_ms', 'runs_version'] as const;
const RESPONSE_FIELDS = ['', 'block_id', 'series_ids', 'sample_counts', 'timestamps', 'values', 'run_lengths', 'run_crcs', 'runs'] as const;

function expectWire(field: number, wire: number, want: number, names: readonly string[]): void {
  if (wire !== want) throw new ProtoDecodeError(`field ${field} (${names[field]}) has wire type ${wire}, expected ${want}`);
}

/**
 * What a decoder of `message` threw, with the message named (`ReadRequest: field 1 (tenant) has
 * wire type 0, expected 2`), as the write path's checks do.
 */
function inMessage(message: string, err: unknown): unknown {
  return err instanceof ProtoDecodeError ? new ProtoDecodeError(`${message}: ${err.message}`) : err;
}

/** Serializes a ReadRequest. */
export function encodeReadRequest(r: ReadRequestFields): Buffer {
  const tenant = Buffer.from(r.tenant, 'utf8');
  let size = 0;
  if (tenant.length > 0) size += 1 + varintSize(tenant.length) + tenant.length;
  if (r.shard !== 0) size += 1 + varintSize(r.shard);
  if (r.numShards !== 0) size += 1 + varintSize(r.numShards);
  if (r.windowStartMs !== 0n) size += 1 + int64Size(r.windowStartMs);
  if (r.seriesIds.length > 0) size += 1 + varintSize(r.seriesIds.length) + r.seriesIds.length;
  if (r.startMs !== 0n) size += 1 + int64Size(r.startMs);
  if (r.endMs !== 0n) size += 1 + int64Size(r.endMs);
  if (r.encoding !== 0) size += 1 + varintSize(r.encoding);
  const windowMs = r.windowMs ?? 0n;
  if (windowMs !== 0n) size += 1 + int64Size(windowMs);
  const runsVersion = r.runsVersion ?? 0;
  if (!Number.isInteger(runsVersion) || runsVersion < 0 || runsVersion > 0xffffffff) throw new RangeError(`runsVersion ${runsVersion} is not a uint32`);
  if (runsVersion !== 0) size += 1 + varintSize(runsVersion);
  const w = new Writer(Buffer.allocUnsafe(size));
  if (tenant.length > 0) w.chunks(1, [tenant], tenant.length);
  if (r.shard !== 0) (w.tag(2, WIRE_VARINT), w.varint(r.shard));
  if (r.numShards !== 0) (w.tag(3, WIRE_VARINT), w.varint(r.numShards));
  if (r.windowStartMs !== 0n) (w.tag(4, WIRE_VARINT), w.int64(r.windowStartMs));
  if (r.seriesIds.length > 0) w.chunks(5, [r.seriesIds], r.seriesIds.length);
  if (r.startMs !== 0n) (w.tag(6, WIRE_VARINT), w.int64(r.startMs));
  if (r.endMs !== 0n) (w.tag(7, WIRE_VARINT), w.int64(r.endMs));
  if (r.encoding !== 0) (w.tag(8, WIRE_VARINT), w.varint(r.encoding));
  if (windowMs !== 0n) (w.tag(9, WIRE_VARINT), w.int64(windowMs));
  if (runsVersion !== 0) (w.tag(10, WIRE_VARINT), w.varint(runsVersion));
  return w.buf;
}

/**
 * Parses a ReadRequest (unknown fields skipped, absent fields zero).
 * @throws ProtoDecodeError for malformed bytes.
 */
export function decodeReadRequest(buf: Buffer): ReadRequestFields {
  try {
    return readRequestFields(buf);
  } catch (err) {
    throw inMessage('ReadRequest', err);
  }
}

function readRequestFields(buf: Buffer): ReadRequestFields {
  const r = new Reader(buf);
  const out = { tenant: '', shard: 0, numShards: 0, windowStartMs: 0n, seriesIds: EMPTY as Uint8Array, startMs: 0n, endMs: 0n, encoding: 0, windowMs: 0n, runsVersion: 0 };
  while (!r.done) {
    const [field, wire] = r.tag();
    switch (field) {
      case 1:
        expectWire(field, wire, WIRE_LEN, REQUEST_FIELDS);
        out.tenant = r.bytes().toString('utf8');
        break;
      case 2:
        expectWire(field, wire, WIRE_VARINT, REQUEST_FIELDS);
        out.shard = Number(BigInt.asUintN(32, r.int64()));
        break;
      case 3:
        expectWire(field, wire, WIRE_VARINT, REQUEST_FIELDS);
        out.numShards = Number(BigInt.asUintN(32, r.int64()));
        break;
      case 4:
        expectWire(field, wire, WIRE_VARINT, REQUEST_FIELDS);
        out.windowStartMs = r.int64();
        break;
      case 5:
        expectWire(field, wire, WIRE_LEN, REQUEST_FIELDS);
        out.seriesIds = r.bytes();
        break;
      case 6:
        expectWire(field, wire, WIRE_VARINT, REQUEST_FIELDS);
        out.startMs = r.int64();
        break;
      case 7:
        expectWire(field, wire, WIRE_VARINT, REQUEST_FIELDS);
        out.endMs = r.int64();
        break;
      case 8:
        expectWire(field, wire, WIRE_VARINT, REQUEST_FIELDS);
        out.encoding = Number(BigInt.asIntN(32, r.int64()));
        break;
      case 9:
        expectWire(field, wire, WIRE_VARINT, REQUEST_FIELDS);
        out.windowMs = r.int64();
        break;
      case 10:
        expectWire(field, wire, WIRE_VARINT, REQUEST_FIELDS);
        out.runsVersion = Number(BigInt.asUintN(32, r.int64()));
        break;
      default:
        r.skip(wire);
    }
  }
  return out;
}

function total(parts: readonly Uint8Array[] | undefined): number {
  let n = 0;
  if (parts) for (const p of parts) n += p.length;
  return n;
}

/** Serializes a ReadResponse from chunks (each bytes field is the concatenation of its chunks). */
export function encodeReadResponse(p: ReadResponseParts): Buffer {
  const blockId = p.blockId !== undefined && p.blockId !== '' ? Buffer.from(p.blockId, 'utf8') : null;
  const fields: [number, readonly Uint8Array[] | undefined][] = [
    [2, p.seriesIds],
    [3, p.sampleCounts],
    [4, p.timestamps],
    [5, p.values],
    [6, p.runLengths],
    [7, p.runCrcs],
    [8, p.runs],
  ];
  const lens = fields.map(([, parts]) => total(parts));
  let size = blockId ? 1 + varintSize(blockId.length) + blockId.length : 0;
  for (const n of lens) if (n > 0) size += 1 + varintSize(n) + n;
  const w = new Writer(Buffer.allocUnsafe(size));
  if (blockId) w.chunks(1, [blockId], blockId.length);
  fields.forEach(([field, parts], i) => {
    if (lens[i]! > 0) w.chunks(field, parts!, lens[i]!);
  });
  return w.buf;
}

/**
 * Parses a ReadResponse into views of `buf` (unknown fields skipped).
 * @throws ProtoDecodeError for malformed bytes.
 */
export function decodeReadResponse(buf: Buffer): ReadResponseView {
  try {
    return readResponseView(buf);
  } catch (err) {
    throw inMessage('ReadResponse', err);
  }
}

function readResponseView(buf: Buffer): ReadResponseView {
  const r = new Reader(buf);
  const out: ReadResponseView = { blockId: '', seriesIds: EMPTY, sampleCounts: EMPTY, timestamps: EMPTY, values: EMPTY, runLengths: EMPTY, runCrcs: EMPTY, runs: EMPTY };
  const names = ['', 'blockId', 'seriesIds', 'sampleCounts', 'timestamps', 'values', 'runLengths', 'runCrcs', 'runs'] as const;
  while (!r.done) {
    const [field, wire] = r.tag();
    if (field >= 1 && field <= 8) {
      expectWire(field, wire, WIRE_LEN, RESPONSE_FIELDS);
      const b = r.bytes();
      if (field === 1) out.blockId = b.toString('utf8');
      else out[names[field] as Exclude<(typeof names)[number], '' | 'blockId'>] = b;
    } else r.skip(wire);
  }
  return out;
}

/**
 * The Read method for grpc-js with this codec: the server deserializes requests and sends
 * already-encoded response Buffers; the client serializes requests and gets ReadResponseViews.
 */
export const READ_METHOD: MethodDefinition<ReadRequestFields, Buffer | ReadResponseView> = {
  path: READ_METHOD_PATH,
  requestStream: false,
  responseStream: true,
  requestSerialize: encodeReadRequest,
  requestDeserialize: decodeReadRequest,
  responseSerialize: (b: Buffer | ReadResponseView) => {
    if (!Buffer.isBuffer(b)) throw new TypeError('Read responses are sent as encoded Buffers');
    return b;
  },
  responseDeserialize: decodeReadResponse,
  originalName: 'read',
};
