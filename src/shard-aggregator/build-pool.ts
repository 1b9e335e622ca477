/**
 * Block building on worker threads, so that flushes of several shards use several cores and the
 * main thread stays free for gRPC, health and `/metrics` while a block is built.
 *
 * A task is a build (block-builder.ts `buildBlock`: open the sealed WAL generations by path, merge
 * them with the replaced block, write the block) or a verification (`verifyBlock`). It runs on an
 * idle worker (build-worker.ts); the worker does the CPU work and the local disk reads, and reaches
 * the bucket only through the main thread, which owns the upload and the bucket clients:
 *
 * ```
 * main thread                         worker
 *   run(task) ───────── build ──────▶ buildBlock
 *   upload.write(chunk) ◀── write ─── BlockWriter's sink (chunks transferred, at most
 *                       ─── written ▶   WRITES_IN_FLIGHT unanswered)
 *   bucket.getRange    ◀──  read ──── BlockReader's source (old block, verification)
 *                       ─── data ───▶
 *   resolve / reject   ◀─ done/failed
 * ```
 *
 * The main thread never completes the upload on the worker's behalf: the flush scheduler does that
 * once the build resolved. A bucket error met by the main thread for a task fails the task with
 * that very error (its code drives the flush's error reason). A worker that dies (it should not;
 * its heap is bounded by {@link WORKER_LIMITS}) fails its task, which the scheduler retries; the
 * LevelDB databases it had open are closed by classic-level's environment cleanup, and the next
 * attempt opens them again. Idle workers exit after {@link IDLE_EXIT_MS}, giving their heap back.
 *
 * With `threads: 0` tasks run on the calling thread (same code, local sink and source).
 */
import { getHeapStatistics } from 'node:v8';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { RangeSource } from '../block/source.js';
import type { ByteSink, WrittenBlock } from '../block/writer.js';
import { StrataError, type ErrorCode } from '../errors.js';
import { ownsWholeBuffer } from '../format/bytes.js';
import type { ByteRange } from '../objstore/bucket.js';
import { buildBlock, BuildCancelled, verifyBlock, type BuildInput, type ExpectedBlock } from './block-builder.js';

/** An error crossing the thread boundary. */
export interface WireError {
  readonly name: string;
  readonly message: string;
  readonly code: string | null;
}

/** Heap figures of the thread that ran a task (bytes), for the flush log. */
export interface TaskHeap {
  readonly peakMallocedBytes: number;
  readonly totalHeapBytes: number;
  readonly usedHeapBytes: number;
}

/** Messages from the main thread to a worker. */
export type ToWorker =
  | { readonly type: 'build'; readonly task: number; readonly input: BuildInput; readonly old: string | null }
  | { readonly type: 'verify'; readonly task: number; readonly name: string; readonly expected: ExpectedBlock; readonly mode: 'full' | 'footer' }
  | { readonly type: 'cancel'; readonly task: number }
  | { readonly type: 'written'; readonly task: number; readonly error: WireError | null; readonly chunk: Uint8Array | null }
  | { readonly type: 'data'; readonly task: number; readonly req: number; readonly data: Uint8Array | null; readonly offset: number; readonly size: number; readonly error: WireError | null };

/** Messages from a worker to the main thread. */
export type FromWorker =
  | { readonly type: 'write'; readonly task: number; readonly chunk: Uint8Array }
  | { readonly type: 'read'; readonly task: number; readonly req: number; readonly range: ByteRange; readonly into: Uint8Array | null }
  | { readonly type: 'done'; readonly task: number; readonly block: WrittenBlock | null; readonly heap: TaskHeap }
  | { readonly type: 'failed'; readonly task: number; readonly error: WireError };

/** Block chunks a worker may have sent without an answer (each at most the writer's buffer, 1 MiB). */
export const WRITES_IN_FLIGHT = 4;

/** An error as it crosses the thread boundary. */
export function toWire(err: unknown): WireError {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return { name: err.name, message: err.message, code: typeof code === 'string' ? code : null };
  }
  return { name: 'Error', message: String(err), code: null };
}

/** An error back from the other side: a StrataError keeps its code. */
export function fromWire(w: WireError): Error {
  if (w.name === 'BuildCancelled') return new BuildCancelled();
  const err = w.code?.startsWith('ERR_STRATA_') ? new StrataError(w.code as ErrorCode, w.message) : new Error(w.message);
  err.name = w.name;
  return err;
}

/** Heap figures of this thread. */
export function heapNow(): TaskHeap {
  const h = getHeapStatistics();
  return { peakMallocedBytes: h.peak_malloced_memory, totalHeapBytes: h.total_heap_size, usedHeapBytes: h.used_heap_size };
}

/**
 * V8 heap limits of a build worker. What it holds does not grow with the WAL: a page of pending
 * runs, the read-ahead batches of its iterators, and the block's index pages (about 20 bytes per
 * series), which stay off the V8 heap as ArrayBuffers.
 */
export const WORKER_LIMITS = { maxYoungGenerationSizeMb: 16, maxOldGenerationSizeMb: 128 };
/** An idle worker exits after this long. */
export const IDLE_EXIT_MS = 10_000;

/** A worker running build-worker next to this module (see encode-pool.ts for the tsx case). */
function startWorker(): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./build-worker.js', import.meta.url), { resourceLimits: WORKER_LIMITS });
  const script = new URL('./build-worker.ts', import.meta.url).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(tsx)}).then(({ register }) => { register(); return import(${JSON.stringify(script)}); });`;
  return new Worker(code, { eval: true, resourceLimits: WORKER_LIMITS });
}

/** A task on its way or running: what the main thread serves it with, and how it ends. */
interface Task {
  readonly id: number;
  readonly msg: ToWorker & { type: 'build' | 'verify' };
  readonly sink: ByteSink | null;
  readonly source: RangeSource | null;
  readonly resolve: (r: { block: WrittenBlock | null; heap: TaskHeap }) => void;
  readonly reject: (err: unknown) => void;
  /** The first bucket error the main thread met serving it (the task fails with it). */
  ioError: unknown;
  /** The sink writes, in order. */
  writes: Promise<void>;
  worker: PoolWorker | null;
  cancelled: boolean;
}

interface PoolWorker {
  readonly worker: Worker;
  task: Task | null;
  idle: NodeJS.Timeout | null;
  dead: boolean;
}

/** See the module comment. */
export class BuildPool {
  readonly threads: number;
  private readonly logger: Logger;
  private readonly workers = new Set<PoolWorker>();
  private readonly queue: Task[] = [];
  private readonly local = new Set<Task>();
  private nextId = 1;
  private closed = false;

  constructor(threads: number, logger: Logger) {
    this.threads = threads;
    this.logger = logger;
  }

  /** Workers running now (tests end one on purpose). */
  get running(): Worker[] {
    return [...this.workers].filter((w) => !w.dead).map((w) => w.worker);
  }

  /**
   * Builds a block (see buildBlock) into `sink`, reading the replaced block from `old`. The sink is
   * written but neither completed nor aborted: that is the caller's.
   */
  async build(input: BuildInput, sink: ByteSink, old: RangeSource | null): Promise<{ block: WrittenBlock; heap: TaskHeap }> {
    const r = await this.run({ type: 'build', task: 0, input, old: old?.name ?? null }, sink, old);
    return { block: r.block!, heap: r.heap };
  }

  /** Verifies a published block (see verifyBlock) read from `source`. */
  async verify(source: RangeSource, expected: ExpectedBlock, mode: 'full' | 'footer'): Promise<TaskHeap> {
    return (await this.run({ type: 'verify', task: 0, name: source.name, expected, mode }, null, source)).heap;
  }

  /** Cancels every task (shutdown): they reject with BuildCancelled at their next check. */
  cancelAll(): void {
    for (const t of this.local) t.cancelled = true;
    for (const t of this.queue.splice(0)) t.reject(new BuildCancelled());
    for (const w of this.workers) if (w.task) w.worker.postMessage({ type: 'cancel', task: w.task.id } satisfies ToWorker);
  }

  private run(msg: ToWorker & { type: 'build' | 'verify' }, sink: ByteSink | null, source: RangeSource | null): Promise<{ block: WrittenBlock | null; heap: TaskHeap }> {
    if (this.closed) return Promise.reject(new BuildCancelled());
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      const task: Task = { id, msg: { ...msg, task: id }, sink, source, resolve, reject, ioError: null, writes: Promise.resolve(), worker: null, cancelled: false };
      if (this.threads === 0) {
        this.runLocal(task);
        return;
      }
      this.queue.push(task);
      this.dispatch();
    });
  }

  /** Runs a task on this thread. */
  private runLocal(task: Task): void {
    this.local.add(task);
    const cancelled = (): boolean => task.cancelled || this.closed;
    const m = task.msg;
    const p =
      m.type === 'build'
        ? buildBlock(m.input, writesOnly(task.sink!), m.old === null ? null : task.source, cancelled)
        : verifyBlock(task.source!, m.expected, m.mode, cancelled).then(() => null);
    p.then(
      (block) => task.resolve({ block, heap: heapNow() }),
      (err: unknown) => task.reject(err),
    ).finally(() => this.local.delete(task));
  }

  /** Hands queued tasks to idle workers, starting workers up to `threads`. */
  private dispatch(): void {
    while (this.queue.length > 0) {
      let w: PoolWorker | null = null;
      for (const x of this.workers) if (!x.dead && !x.task) w = x;
      if (!w && this.workers.size < this.threads) w = this.spawn();
      if (!w) return;
      const task = this.queue.shift()!;
      if (w.idle) clearTimeout(w.idle);
      w.idle = null;
      w.task = task;
      task.worker = w;
      w.worker.postMessage(task.msg);
    }
  }

  private spawn(): PoolWorker {
    const worker = startWorker();
    const w: PoolWorker = { worker, task: null, idle: null, dead: false };
    this.workers.add(w);
    worker.on('message', (m: FromWorker) => this.onMessage(w, m));
    const fail = (err: Error): void => {
      if (w.dead) return;
      w.dead = true;
      this.workers.delete(w);
      if (w.idle) clearTimeout(w.idle);
      const task = w.task;
      w.task = null;
      if (task) {
        if (!this.closed) this.logger.error({ err }, 'a block building worker died; its flush fails and is retried');
        task.reject(this.closed ? new BuildCancelled() : err);
      }
      if (!this.closed) this.dispatch();
    };
    worker.on('error', fail);
    worker.on('exit', (code: number) => fail(new Error(`block building worker exited with code ${code}`)));
    return w;
  }

  private onMessage(w: PoolWorker, m: FromWorker): void {
    const task = w.task;
    if (!task || task.id !== m.task) return;
    switch (m.type) {
      case 'write': {
        const sink = task.sink!;
        task.writes = task.writes.then(
          () =>
            sink.write(m.chunk).then(
              // the upload is done with the chunk (ObjectUpload.write): its buffer goes back for the next one
              () => w.worker.postMessage({ type: 'written', task: task.id, error: null, chunk: m.chunk } satisfies ToWorker, [m.chunk.buffer as ArrayBuffer]),
              (err: unknown) => {
                task.ioError ??= err;
                w.worker.postMessage({ type: 'written', task: task.id, error: toWire(err), chunk: null } satisfies ToWorker);
              },
            ),
          () => undefined,
        );
        return;
      }
      case 'read': {
        const source = task.source!;
        source.read(m.range, m.into ?? undefined).then(
          (r) => {
            // read into the worker's buffer: it goes back with the bytes in it
            const data = m.into !== null && r.data.buffer === m.into.buffer ? r.data : ownBytes(r.data);
            w.worker.postMessage({ type: 'data', task: task.id, req: m.req, data, offset: r.offset, size: r.size, error: null } satisfies ToWorker, [data.buffer as ArrayBuffer]);
          },
          (err: unknown) => {
            task.ioError ??= err;
            w.worker.postMessage({ type: 'data', task: task.id, req: m.req, data: null, offset: 0, size: 0, error: toWire(err) } satisfies ToWorker);
          },
        );
        return;
      }
      case 'done':
      case 'failed': {
        w.task = null;
        const settle = (): void => {
          if (m.type === 'done') task.resolve({ block: m.block, heap: m.heap });
          else task.reject(task.ioError ?? fromWire(m.error));
        };
        // the sink's writes were all answered before the worker finished; wait for the chain anyway
        void task.writes.then(settle);
        if (this.queue.length > 0) this.dispatch();
        else {
          w.idle = setTimeout(() => {
            w.idle = null;
            if (w.task || w.dead) return;
            // out of the pool before it exits: a task dispatched meanwhile goes to another worker
            w.dead = true;
            this.workers.delete(w);
            void w.worker.terminate();
          }, IDLE_EXIT_MS);
          w.idle.unref();
        }
        return;
      }
    }
  }

  /** Stops: queued and running tasks fail with BuildCancelled, workers are terminated. */
  async close(): Promise<void> {
    this.closed = true;
    this.cancelAll();
    await Promise.all([...this.workers].map((w) => w.worker.terminate()));
  }
}

/** The writes of `sink`: completing or aborting it is the caller's (as with a worker). */
function writesOnly(sink: ByteSink): ByteSink {
  return { write: (chunk) => sink.write(chunk), complete: () => Promise.resolve(), abort: () => Promise.resolve() };
}

/** `b` as bytes that own their whole ArrayBuffer (so it can be transferred), copied if needed. */
function ownBytes(b: Uint8Array): Uint8Array {
  if (ownsWholeBuffer(b) && b.byteLength >= 64 * 1024) return b;
  return new Uint8Array(b);
}
