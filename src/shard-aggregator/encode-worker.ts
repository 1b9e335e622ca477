/**
 * The worker thread of {@link EncodePool} (encode-pool.ts): validates and encodes write requests
 * with prepareWrite, and sends the runs back packed into one transferred buffer.
 */
import { parentPort } from 'node:worker_threads';
import { collectGarbage } from '../common/gc.js';
import { InvalidArgumentError, StrataError } from '../errors.js';
import { encodeTask, type EncodeReply, type EncodeTask } from './encode-pool.js';

const port = parentPort;
if (!port) throw new Error('encode-worker.ts runs as a worker thread only');

/**
 * A full collection once the worker has had no request for this long: the copies of the requests
 * it encoded are dead then, but V8 would keep them until some 64 MiB more external memory had
 * come (common/gc.ts), while the flushes that follow ingest need the memory. Only after
 * IDLE_COLLECT_MIN_BYTES of requests since the last one: light ingest with pauses between
 * requests would otherwise pay a full collection per request.
 */
const IDLE_COLLECT_MS = 1000;
const IDLE_COLLECT_MIN_BYTES = 16 * 1024 * 1024;
let idle: NodeJS.Timeout | null = null;
let running = 0;
let bytesSinceCollect = 0;

/** Counts a task done; once none runs, a collection may be due after IDLE_COLLECT_MS without another. */
function settled(): void {
  if (--running > 0 || bytesSinceCollect < IDLE_COLLECT_MIN_BYTES) return;
  idle = setTimeout(() => {
    idle = null;
    bytesSinceCollect = 0;
    collectGarbage();
  }, IDLE_COLLECT_MS);
  idle.unref();
}

port.on('message', (task: EncodeTask) => {
  if (idle) clearTimeout(idle);
  idle = null;
  running++;
  bytesSinceCollect += task.buf.byteLength;
  encodeTask(task).then(
    (reply) => {
      port.postMessage(reply, [reply.buf, reply.meta.buffer as ArrayBuffer]);
    },
    (err: unknown) => {
      const reply: EncodeReply =
        err instanceof InvalidArgumentError
          ? { id: task.id, ok: false, field: err.field, message: err.message.slice(`invalid ${err.field}: `.length) }
          : { id: task.id, ok: false, field: null, message: err instanceof Error ? err.message : String(err), code: err instanceof StrataError ? err.code : null };
      port.postMessage(reply);
    },
  ).finally(settled);
});
