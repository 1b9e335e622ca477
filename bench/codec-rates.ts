/**
 * Single-core encode and decode rates of the run codec, measured on a worker thread of their own.
 *
 * Why a thread of its own: the services run the codec on threads that do little else (the
 * aggregator's encoding workers, a query client's decoding), not in a heap that has just loaded
 * and generated a 10 M-sample dataset. Measured in the bench's main thread after that, decoding
 * into fresh arrays per run gave 38-42 M samples/s in one process and 58-66 M in another at the
 * same commit: V8 ran an external-memory mark-compact every ~4,000 decoded runs in the first
 * and none in the second, depending on how its young generation had been sized by what ran
 * before. On its own thread the figure is the codec's (63-65 M, twice in a row).
 *
 * The first repetition of each measurement warms the JIT and is not counted; the rate is the
 * median of the others.
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { decodeRun, decodeRunInto, encodeRun } from '../src/format/run.js';
import { median, type Series } from './dataset.js';

export interface CodecRates {
  readonly encode: number;
  readonly decode: number;
  readonly decodeInto: number;
  /** Decoding into fresh arrays on the thread that has just encoded (see the module comment). */
  readonly decodeAfterEncode: number;
}

type Job =
  | { readonly kind: 'encode'; readonly series: { id: bigint; timestamps: BigInt64Array; values: Float64Array }[]; readonly reps: number }
  | { readonly kind: 'decode'; readonly runs: Uint8Array[]; readonly reps: number };

interface Encoded {
  readonly encode: number;
  readonly decodeAfterEncode: number;
  readonly runs: Uint8Array[];
}

interface Decoded {
  readonly decode: number;
  readonly decodeInto: number;
}

function onWorker<T>(job: Job): Promise<T> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL(import.meta.url), { workerData: job });
    w.once('message', (m: T) => resolve(m));
    w.once('error', reject);
    w.once('exit', (code) => reject(new Error(`codec rate worker exited with ${code}`)));
  });
}

/**
 * Encodes `series` on one fresh worker thread and decodes the runs on another: samples per
 * second of each, the median of `reps` after a warm-up.
 */
export async function codecRates(series: readonly Series[], reps: number): Promise<CodecRates> {
  const enc = await onWorker<Encoded>({ kind: 'encode', series: series.map((s) => ({ id: s.id, timestamps: s.timestamps, values: s.values })), reps });
  const dec = await onWorker<Decoded>({ kind: 'decode', runs: enc.runs, reps });
  return { encode: enc.encode, decodeAfterEncode: enc.decodeAfterEncode, decode: dec.decode, decodeInto: dec.decodeInto };
}

/** `samples` per second of `fn`: the median time of `reps` runs, after one more that is not counted. */
function rate(samples: number, reps: number, fn: () => void): number {
  const times: number[] = [];
  for (let r = 0; r <= reps; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    if (r > 0) times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return samples / median(times);
}

function decodeFresh(runs: readonly Uint8Array[]): void {
  for (const run of runs) decodeRun(run);
}

function encodeJob(series: Extract<Job, { kind: 'encode' }>['series'], reps: number): Encoded {
  let total = 0;
  for (const s of series) total += s.values.length;
  let runs: Uint8Array[] = [];
  const encode = rate(total, reps, () => (runs = series.map((s) => encodeRun(s))));
  return { encode, decodeAfterEncode: rate(total, reps, () => decodeFresh(runs)), runs };
}

function decodeJob(runs: readonly Uint8Array[], reps: number): Decoded {
  let total = 0;
  for (const run of runs) total += decodeRun(run).values.length;
  const decode = rate(total, reps, () => decodeFresh(runs));
  // as the query client decodes: back to back into one allocation
  const ts = new BigInt64Array(total);
  const vs = new Float64Array(total);
  const decodeInto = rate(total, reps, () => {
    let at = 0;
    for (const run of runs) at += decodeRunInto(run, { object: 'bench', offset: 0 }, ts, vs, at);
  });
  return { decode, decodeInto };
}

if (!isMainThread && parentPort) {
  const job = workerData as Job;
  parentPort.postMessage(job.kind === 'encode' ? encodeJob(job.series, job.reps) : decodeJob(job.runs, job.reps));
}
