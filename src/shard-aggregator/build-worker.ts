/**
 * The worker thread of {@link BuildPool} (build-pool.ts): runs one build or verification at a
 * time with block-builder.ts, writing the block through a sink and reading the bucket through a
 * source that both go to the main thread.
 */
import { parentPort } from 'node:worker_threads';
import type { RangeSource } from '../block/source.js';
import type { ByteSink } from '../block/writer.js';
import { ownsWholeBuffer } from '../format/bytes.js';
import type { ByteRange, RangeResult } from '../objstore/bucket.js';
import { buildBlock, verifyBlock } from './block-builder.js';
import { fromWire, heapNow, toWire, WRITES_IN_FLIGHT, type FromWorker, type ToWorker } from './build-pool.js';

const port = parentPort;
if (!port) throw new Error('build-worker.ts runs as a worker thread only');

const send = (m: FromWorker, transfer: ArrayBuffer[] = []): void => port.postMessage(m, transfer);

/** The task being run: its cancellation flag and the answers it waits for. */
let current: {
  id: number;
  cancelled: boolean;
  /** Sink writes sent and not answered yet. */
  unanswered: number;
  writeError: Error | null;
  /** Waiters for a write answer. */
  drained: (() => void)[];
  reads: Map<number, { resolve: (r: RangeResult) => void; reject: (err: Error) => void }>;
  nextReq: number;
} | null = null;

/**
 * Buffers of written chunks the main thread gave back, for the next chunks: a block's chunks,
 * each a fresh buffer, were garbage on the main thread until its collector ran (about every
 * 64 MiB of them). At most WRITES_IN_FLIGHT + 1 are kept, of at most {@link KEEP_CHUNK_BYTES}
 * each: a chunk is the writer's buffer (1 MiB) plus one run, and the rare one made large by a
 * long run is left to the collector instead of being kept for the next small chunks.
 */
const freeChunks: ArrayBuffer[] = [];
const KEEP_CHUNK_BYTES = 4 * 1024 * 1024;

/** A buffer of its own for a chunk of `length` bytes: a given-back one when one is large enough. */
function chunkBuffer(length: number): Uint8Array {
  const i = freeChunks.findIndex((b) => b.byteLength >= length);
  // sizes rounded up to 64 KiB, so that the chunks of one writer (a little over its buffer size each) fit each other's buffers
  return new Uint8Array(i >= 0 ? freeChunks.splice(i, 1)[0]! : new ArrayBuffer(Math.ceil(length / 65536) * 65536 || 65536), 0, length);
}

/** The upload of the main thread, as a sink; at most WRITES_IN_FLIGHT chunks unanswered. */
function remoteSink(task: NonNullable<typeof current>): ByteSink {
  const waitBelow = async (n: number): Promise<void> => {
    while (task.unanswered > n && task.writeError === null) await new Promise<void>((resolve) => task.drained.push(resolve));
    if (task.writeError) throw task.writeError;
  };
  return {
    // the chunk is copied (into a buffer the main thread gives back once the upload wrote it)
    // and sent: this sink holds no reference to it
    async write(chunk) {
      if (task.writeError) throw task.writeError;
      const own = chunkBuffer(chunk.length);
      own.set(chunk);
      task.unanswered++;
      send({ type: 'write', task: task.id, chunk: own }, [own.buffer as ArrayBuffer]);
      await waitBelow(WRITES_IN_FLIGHT - 1);
    },
    async complete() {
      // the main thread completes the upload; here: every chunk was written
      await waitBelow(0);
    },
    async abort() {
      await waitBelow(0).catch(() => undefined);
    },
  };
}

/** The bucket object `name`, read through the main thread. */
function remoteSource(task: NonNullable<typeof current>, name: string): RangeSource {
  return {
    name,
    read(range: ByteRange, into?: Uint8Array): Promise<RangeResult> {
      const req = task.nextReq++;
      // a buffer of its own (not a view into a pooled one) goes to the main thread to be read
      // into, and comes back with the bytes: a verification reads the block with one buffer
      const give = into !== undefined && ownsWholeBuffer(into) ? into : null;
      return new Promise<RangeResult>((resolve, reject) => {
        task.reads.set(req, { resolve, reject });
        send({ type: 'read', task: task.id, req, range, into: give }, give ? [give.buffer as ArrayBuffer] : []);
      });
    },
  };
}

port.on('message', (m: ToWorker) => {
  switch (m.type) {
    case 'build':
    case 'verify': {
      const task: NonNullable<typeof current> = { id: m.task, cancelled: false, unanswered: 0, writeError: null, drained: [], reads: new Map(), nextReq: 1 };
      current = task;
      const cancelled = (): boolean => task.cancelled;
      const p =
        m.type === 'build'
          ? buildBlock(m.input, remoteSink(task), m.old === null ? null : remoteSource(task, m.old), cancelled)
          : verifyBlock(remoteSource(task, m.name), m.expected, m.mode, cancelled).then(() => null);
      p.then(
        (block) => send({ type: 'done', task: task.id, block, heap: heapNow() }),
        (err: unknown) => send({ type: 'failed', task: task.id, error: toWire(err) }),
      ).finally(() => {
        if (current === task) current = null;
      });
      return;
    }
    case 'cancel':
      if (current?.id === m.task) current.cancelled = true;
      return;
    case 'written': {
      const task = current;
      if (task?.id !== m.task) return;
      task.unanswered--;
      if (m.chunk && m.chunk.buffer.byteLength <= KEEP_CHUNK_BYTES && freeChunks.length <= WRITES_IN_FLIGHT) freeChunks.push(m.chunk.buffer as ArrayBuffer);
      if (m.error && !task.writeError) task.writeError = fromWire(m.error);
      for (const d of task.drained.splice(0)) d();
      return;
    }
    case 'data': {
      const r = current?.id === m.task ? current.reads.get(m.req) : undefined;
      if (!r) return;
      current!.reads.delete(m.req);
      if (m.error || !m.data) r.reject(fromWire(m.error ?? { name: 'Error', message: 'no data', code: null }));
      else r.resolve({ data: Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength), offset: m.offset, size: m.size });
      return;
    }
  }
});
