/**
 * Encoding of write requests on worker threads, so that a pod's ingest grows with its cores and
 * the main thread stays free for gRPC, health and `/metrics`.
 *
 * `prepareWrite` (validation and run encoding, ingest.ts) is pure CPU work and most of a write's
 * cost. The pool runs it in `threads` workers (encode-worker.ts): a request's series are copied to
 * the least busy worker (one copy of the request's bytes, bounded by the service's in-flight
 * budget), and the encoded runs come back in one transferred buffer. With `threads: 0` requests
 * are encoded on the calling thread.
 *
 * A worker that dies (it should not) fails the requests it held with an error and is replaced.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { type ErrorCode, InvalidArgumentError, StrataError } from '../errors.js';
import { prepareWrite, type IngestContext, type PreparedRun, type PreparedWrite, type WireSeries } from './ingest.js';
import { encodeRunValueInto, VALUE_CRC_LEN } from './wal-codec.js';

/**
 * A request sent to a worker: the series' ids, and where their timestamp and value bytes lie in
 * `buf` (`layout[3i..3i+3)` = timestamps offset, values offset, bytes each). `buf` is transferred.
 */
export interface EncodeTask {
  readonly id: number;
  readonly ids: readonly (string | bigint)[];
  readonly layout: Float64Array;
  readonly buf: ArrayBuffer;
  readonly ctx: IngestContext;
}

/** Below this an ArrayBuffer may be one of Node's shared pools: never transferred. */
const TRANSFER_MIN_BYTES = 64 * 1024;

/**
 * Packs a request's series into a task. When all their bytes are views into one buffer of their
 * own (gRPC hands a decoded message's `bytes` fields out as views of that message's buffer),
 * that buffer is sent as it is, without a copy, and is unusable here afterwards; otherwise the
 * bytes are copied into a new buffer once.
 */
function packTask(id: number, series: readonly WireSeries[], ctx: IngestContext): EncodeTask {
  const layout = new Float64Array(series.length * 3);
  let total = 0;
  let shared: ArrayBufferLike | null = series[0]?.timestamps.buffer ?? null;
  for (let i = 0; i < series.length; i++) {
    const s = series[i]!;
    if (s.timestamps.length !== s.values.length) throw new InvalidArgumentError(`series[${i}].values`, `${s.values.length / 8} values for ${s.timestamps.length / 8} timestamps`);
    total += 2 * s.timestamps.length;
    if (s.timestamps.buffer !== shared || s.values.buffer !== shared) shared = null;
  }
  const own = shared instanceof ArrayBuffer && shared.byteLength >= TRANSFER_MIN_BYTES && shared.byteLength <= 2 * total + TRANSFER_MIN_BYTES;
  if (own) {
    series.forEach((s, i) => {
      layout[3 * i] = s.timestamps.byteOffset;
      layout[3 * i + 1] = s.values.byteOffset;
      layout[3 * i + 2] = s.timestamps.length;
    });
    return { id, ids: series.map((s) => s.id), layout, buf: shared as ArrayBuffer, ctx };
  }
  const buf = new ArrayBuffer(total);
  const bytes = new Uint8Array(buf);
  let off = 0;
  series.forEach((s, i) => {
    const n = s.timestamps.length;
    bytes.set(s.timestamps, off);
    bytes.set(s.values, off + n);
    layout[3 * i] = off;
    layout[3 * i + 1] = off + n;
    layout[3 * i + 2] = n;
    off += 2 * n;
  });
  return { id, ids: series.map((s) => s.id), layout, buf, ctx };
}

/** The series `[from, to)` of a task (views into its buffer); all of them by default. */
export function unpackTask(task: EncodeTask, from = 0, to = task.ids.length): WireSeries[] {
  const out: WireSeries[] = [];
  const l = task.layout;
  for (let i = from; i < to; i++) {
    const n = l[3 * i + 2]!;
    out.push({ id: task.ids[i]!, timestamps: new Uint8Array(task.buf, l[3 * i]!, n), values: new Uint8Array(task.buf, l[3 * i + 1]!, n) });
  }
  return out;
}

/**
 * A worker's answer: the runs of a request as WAL values (kind, run, checksum: wal-codec.ts) packed
 * into `buf`, described by `meta` (per run: window start, series id, offset and length of its
 * value, samples as 64-bit words), or the error. The main thread hands the values to LevelDB as
 * they are: it neither copies nor checksums them.
 */
export type EncodeReply =
  | { readonly id: number; readonly ok: true; readonly buf: ArrayBuffer; readonly meta: BigInt64Array; readonly samples: number; readonly series: number }
  | { readonly id: number; readonly ok: false; readonly field: string | null; readonly message: string; readonly code?: string | null };

/** Words of `meta` per run. */
const META_WORDS = 5;

/** Packs a prepared request for the trip back to the main thread, its runs as WAL values. */
export function packPrepared(id: number, p: PreparedWrite): EncodeReply & { ok: true } {
  let total = 0;
  for (const r of p.runs) total += 1 + r.run.length + VALUE_CRC_LEN;
  const buf = new ArrayBuffer(total);
  const bytes = new Uint8Array(buf);
  const meta = new BigInt64Array(p.runs.length * META_WORDS);
  let off = 0;
  p.runs.forEach((r, i) => {
    const n = encodeRunValueInto(bytes, off, r.run);
    meta[i * META_WORDS] = r.windowStart;
    meta[i * META_WORDS + 1] = BigInt.asIntN(64, r.id);
    meta[i * META_WORDS + 2] = BigInt(off);
    meta[i * META_WORDS + 3] = BigInt(n);
    meta[i * META_WORDS + 4] = BigInt(r.samples);
    off += n;
  });
  return { id, ok: true, buf, meta, samples: p.samples, series: p.series };
}

/**
 * Series a worker validates and encodes at a time: it keeps the objects of one slice of a request
 * alive (its series, runs and their typed arrays, about a kilobyte per series), and the packed
 * runs of the slices done. Whole, a request of 30,000 one-sample series (what `strata push` sends
 * of a file sorted by time, 1 M series in 8 scrapes) took a worker past its heap limit.
 */
export const ENCODE_SLICE_SERIES = 2048;

/**
 * Validates and encodes a task slice by slice ({@link ENCODE_SLICE_SERIES}) and packs the runs
 * into one answer, as {@link packPrepared} would pack them all at once. The first malformed
 * series rejects the whole task, naming it by its number in the request.
 */
export async function encodeTask(task: EncodeTask): Promise<EncodeReply & { ok: true }> {
  const n = task.ids.length;
  if (n <= ENCODE_SLICE_SERIES) return packPrepared(task.id, await prepareWrite(unpackTask(task), task.ctx));
  const parts: (EncodeReply & { ok: true })[] = [];
  let samples = 0;
  let bytes = 0;
  let words = 0;
  for (let from = 0; from < n; from += ENCODE_SLICE_SERIES) {
    const to = Math.min(n, from + ENCODE_SLICE_SERIES);
    const part = packPrepared(task.id, await prepareWrite(unpackTask(task, from, to), task.ctx, from));
    parts.push(part);
    samples += part.samples;
    bytes += part.buf.byteLength;
    words += part.meta.length;
  }
  const buf = new ArrayBuffer(bytes);
  const out = new Uint8Array(buf);
  const meta = new BigInt64Array(words);
  let off = 0;
  let w = 0;
  for (const part of parts) {
    out.set(new Uint8Array(part.buf), off);
    meta.set(part.meta, w);
    // value offsets are relative to the part's buffer
    for (let i = w; i < w + part.meta.length; i += META_WORDS) meta[i + 2] = meta[i + 2]! + BigInt(off);
    off += part.buf.byteLength;
    w += part.meta.length;
  }
  return { id: task.id, ok: true, buf, meta, samples, series: n };
}

/** The prepared request of a worker's answer (values and runs are views into its buffer). */
export function unpack(reply: EncodeReply & { ok: true }): PreparedWrite {
  const runs: PreparedRun[] = [];
  const m = reply.meta;
  for (let i = 0; i < m.length; i += META_WORDS) {
    const value = Buffer.from(reply.buf, Number(m[i + 2]!), Number(m[i + 3]!));
    runs.push({
      windowStart: m[i]!,
      id: BigInt.asUintN(64, m[i + 1]!),
      run: value.subarray(1, value.length - VALUE_CRC_LEN),
      value,
      samples: Number(m[i + 4]!),
    });
  }
  return { runs, samples: reply.samples, series: reply.series };
}

interface Pending {
  readonly resolve: (p: PreparedWrite) => void;
  readonly reject: (err: unknown) => void;
}

interface Slot {
  /** Null while it is being replaced after dying. */
  worker: Worker | null;
  readonly pending: Map<number, Pending>;
  /** Samples of the requests it holds (to pick the least busy worker). */
  load: number;
}

/**
 * V8 heap limits of a worker: it holds a few requests at a time, so a small young generation
 * keeps its garbage (copies of requests, encoding scratch) collected early.
 */
const WORKER_LIMITS = { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 64 };

/**
 * A worker running encode-worker next to this module: the compiled JS when built; when running
 * from TypeScript sources (tests, `npm run strata`), through tsx's loader, which a worker thread
 * does not inherit.
 */
function startWorker(): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./encode-worker.js', import.meta.url), { resourceLimits: WORKER_LIMITS });
  const script = new URL('./encode-worker.ts', import.meta.url).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(tsx)}).then(({ register }) => { register(); return import(${JSON.stringify(script)}); });`;
  return new Worker(code, { eval: true, resourceLimits: WORKER_LIMITS });
}

/** A dead worker is replaced after this long (no busy loop when workers cannot start at all). */
const RESPAWN_DELAY_MS = 1000;

/** See the module comment. */
export class EncodePool {
  readonly threads: number;
  private readonly slots: Slot[] = [];
  private readonly logger: Logger;
  private nextId = 1;
  private closed = false;

  constructor(threads: number, logger: Logger) {
    this.threads = threads;
    this.logger = logger;
    for (let i = 0; i < threads; i++) {
      const slot: Slot = { worker: null, pending: new Map(), load: 0 };
      this.slots.push(slot);
      this.spawn(slot);
    }
  }

  private spawn(slot: Slot): void {
    const worker = startWorker();
    worker.unref();
    slot.worker = worker;
    worker.on('message', (reply: EncodeReply) => {
      const p = slot.pending.get(reply.id);
      if (!p) return;
      slot.pending.delete(reply.id);
      if (reply.ok) p.resolve(unpack(reply));
      else if (reply.field !== null) p.reject(new InvalidArgumentError(reply.field, reply.message));
      // a StrataError keeps its code (the codec self-check's INTERNAL, with what it found)
      else if (reply.code?.startsWith('ERR_STRATA_')) p.reject(new StrataError(reply.code as ErrorCode, reply.message));
      else p.reject(new Error(`encoding the request: ${reply.message}`));
    });
    let failed = false;
    const fail = (err: Error): void => {
      if (failed || this.closed) return;
      failed = true;
      slot.worker = null;
      for (const p of slot.pending.values()) p.reject(err);
      slot.pending.clear();
      this.logger.error({ err }, 'an encoding worker died; starting another');
      setTimeout(() => {
        if (!this.closed) this.spawn(slot);
      }, RESPAWN_DELAY_MS).unref();
    };
    worker.on('error', fail);
    worker.on('exit', (code: number) => fail(new Error(`encoding worker exited with code ${code}`)));
  }

  /**
   * Validates and encodes a request (see prepareWrite in ingest.ts).
   * @throws InvalidArgumentError naming the series and field; nothing is kept.
   */
  prepare(series: readonly WireSeries[], ctx: IngestContext): Promise<PreparedWrite> {
    if (this.closed) return Promise.reject(new RangeError('the encoding pool is closed'));
    if (this.slots.length === 0) return prepareWrite(series, ctx);
    let slot: Slot | null = null;
    for (const s of this.slots) if (s.worker && (!slot || s.load < slot.load)) slot = s;
    if (!slot) return Promise.reject(new Error('no encoding worker is running (they are being restarted)'));
    const worker = slot.worker!;
    const id = this.nextId++;
    let samples = 0;
    for (const s of series) samples += s.timestamps.length / 8;
    slot.load += samples;
    let task: EncodeTask;
    try {
      task = packTask(id, series, ctx);
    } catch (err) {
      slot.load -= samples;
      return Promise.reject(err);
    }
    const chosen = slot;
    return new Promise<PreparedWrite>((resolve, reject) => {
      const done = (): void => {
        chosen.load -= samples;
      };
      chosen.pending.set(id, {
        resolve: (p) => {
          done();
          resolve(p);
        },
        reject: (err) => {
          done();
          reject(err);
        },
      });
      try {
        worker.postMessage(task, [task.buf, task.layout.buffer as ArrayBuffer]);
      } catch (err) {
        chosen.pending.delete(id);
        done();
        reject(err);
      }
    });
  }

  /** Stops the workers; requests they still held fail. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      this.slots.map(async (s) => {
        for (const p of s.pending.values()) p.reject(new RangeError('the encoding pool is closed'));
        s.pending.clear();
        await s.worker?.terminate();
      }),
    );
  }
}
