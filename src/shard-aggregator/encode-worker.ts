/**
 * The worker thread of {@link EncodePool} (encode-pool.ts): validates and encodes write requests
 * with prepareWrite, and sends the runs back packed into one transferred buffer.
 */
import { parentPort } from 'node:worker_threads';
import { InvalidArgumentError, StrataError } from '../errors.js';
import { prepareWrite } from './ingest.js';
import { packPrepared, unpackTask, type EncodeReply, type EncodeTask } from './encode-pool.js';

const port = parentPort;
if (!port) throw new Error('encode-worker.ts runs as a worker thread only');

port.on('message', (task: EncodeTask) => {
  prepareWrite(unpackTask(task), task.ctx).then(
    (prepared) => {
      const reply = packPrepared(task.id, prepared);
      port.postMessage(reply, [reply.buf, reply.meta.buffer as ArrayBuffer]);
    },
    (err: unknown) => {
      const reply: EncodeReply =
        err instanceof InvalidArgumentError
          ? { id: task.id, ok: false, field: err.field, message: err.message.slice(`invalid ${err.field}: `.length) }
          : { id: task.id, ok: false, field: null, message: err instanceof Error ? err.message : String(err), code: err instanceof StrataError ? err.code : null };
      port.postMessage(reply);
    },
  );
});
