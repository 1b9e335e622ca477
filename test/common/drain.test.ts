/**
 * drainServer against a real grpc-js server on loopback: calls in flight may finish within the
 * grace period; past it they are cancelled (after onOverdue) and the server closes either way.
 */
import t from 'tap';
import { Client, credentials, Server, ServerCredentials, status, type ServerWritableStream, type ServiceError } from '@grpc/grpc-js';
import { drainServer } from '../../src/common/signals.js';

const raw = (b: Buffer): Buffer => b;
const PATH = '/test.Slow/Stream';

/** A server whose Stream call writes one message, then ends after `endAfterMs` (never when null). */
async function slowServer(endAfterMs: number | null): Promise<{ server: Server; port: number }> {
  const server = new Server();
  server.addService(
    { Stream: { path: PATH, requestStream: false, responseStream: true, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw } },
    {
      Stream(call: ServerWritableStream<Buffer, Buffer>) {
        call.write(Buffer.from('first'));
        if (endAfterMs !== null) setTimeout(() => call.end(), endAfterMs);
      },
    },
  );
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  return { server, port };
}

/** Starts a call; resolves with its end: 'ok' or the error's code. */
function callUntilFirstMessage(port: number): { started: Promise<void>; ended: Promise<'ok' | number>; client: Client } {
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
  const call = client.makeServerStreamRequest(PATH, raw, raw, Buffer.alloc(0));
  const started = new Promise<void>((resolve) => call.once('data', () => resolve()));
  const ended = new Promise<'ok' | number>((resolve) => {
    call.on('data', () => undefined);
    call.on('error', (e: ServiceError) => resolve(e.code));
    call.on('end', () => resolve('ok'));
  });
  return { started, ended, client };
}

t.test('a call that ends within the grace period finishes normally', async (t) => {
  const { server, port } = await slowServer(150);
  const c = callUntilFirstMessage(port);
  t.teardown(() => c.client.close());
  await c.started;
  let overdue = 0;
  const t0 = Date.now();
  await drainServer(server, 5000, () => overdue++);
  t.equal(await c.ended, 'ok', 'the call completed');
  t.equal(overdue, 0, 'nothing was overdue');
  t.ok(Date.now() - t0 < 4000, 'closed as soon as the call ended');
});

t.test('a call still running at the end of the grace period is cancelled', async (t) => {
  const { server, port } = await slowServer(null);
  const c = callUntilFirstMessage(port);
  t.teardown(() => c.client.close());
  await c.started;
  let overdue = 0;
  const t0 = Date.now();
  await drainServer(server, 200, () => overdue++);
  const waited = Date.now() - t0;
  t.equal(overdue, 1, 'onOverdue called once');
  t.ok(waited >= 190 && waited < 3000, `after the grace period (${waited} ms)`);
  const end = await c.ended;
  t.not(end, 'ok', 'the call did not complete');
  t.ok(end === status.CANCELLED || end === status.UNAVAILABLE || end === status.INTERNAL, `it failed (${end})`);
});

t.test('no call in flight: closes at once', async (t) => {
  const { server } = await slowServer(null);
  let overdue = 0;
  const t0 = Date.now();
  await drainServer(server, 5000, () => overdue++);
  t.equal(overdue, 0);
  t.ok(Date.now() - t0 < 1000);
});
