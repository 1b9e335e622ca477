/**
 * The query client's HTTP/2 gRPC transport against real servers on loopback: grpc-js servers
 * (the gateway's own server library) for the gRPC behaviour, a plain node:http2 server for
 * answers a gRPC server would not give (HTTP errors, compressed or truncated messages, no
 * status), and a server in a child process killed with SIGKILL mid-stream.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import http2 from 'node:http2';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Metadata, Server, ServerCredentials, status, type ServerWritableStream, type ServiceDefinition } from '@grpc/grpc-js';
import { codeOfHttpStatus, GrpcCallError, grpcTimeout, H2Channel } from '../../src/client/grpc-h2.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const PATH = '/test.Echo/Stream';
const raw = (b: Buffer): Buffer => b;

/** A streaming method whose request is `[count u32 | size u32 | mode u8]`: `count` messages of `size` bytes (byte i = i % 251). */
const definition: ServiceDefinition = {
  Stream: { path: PATH, requestStream: false, responseStream: true, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
};

function request(count: number, size: number, mode = 0): Buffer {
  const b = Buffer.alloc(9);
  b.writeUInt32LE(count, 0);
  b.writeUInt32LE(size, 4);
  b[8] = mode;
  return b;
}

function payload(size: number, seq: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i + seq) % 251;
  return b;
}

/** Modes of the test server after its messages: 0 end OK, 1 fail NOT_FOUND, 2 hang (until cancelled). */
interface Seen {
  metadata: Metadata | null;
  deadline: number;
  cancelled: number;
}

async function grpcServer(t: Test): Promise<{ endpoint: string; seen: Seen }> {
  const seen: Seen = { metadata: null, deadline: NaN, cancelled: 0 };
  const server = new Server();
  server.addService(definition, {
    Stream(call: ServerWritableStream<Buffer, Buffer>) {
      seen.metadata = call.metadata;
      const d = call.getDeadline();
      seen.deadline = d instanceof Date ? d.getTime() : d;
      call.on('cancelled', () => seen.cancelled++);
      const count = call.request.readUInt32LE(0);
      const size = call.request.readUInt32LE(4);
      const mode = call.request[8];
      for (let i = 0; i < count; i++) call.write(payload(size, i));
      if (mode === 0) call.end();
      else if (mode === 1) call.emit('error', { code: status.NOT_FOUND, details: 'blöck "a/0/1" is 100% gone\nsecond line' });
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  t.teardown(() => server.forceShutdown());
  return { endpoint: `127.0.0.1:${port}`, seen };
}

async function collect(ch: H2Channel, message: Buffer, opts: { deadline?: number; signal?: AbortSignal; headers?: Record<string, string>; onMessage?: (m: Buffer) => void } = {}): Promise<Buffer[]> {
  const got: Buffer[] = [];
  await ch.serverStream({
    path: PATH,
    message,
    headers: opts.headers ?? {},
    deadline: opts.deadline ?? Date.now() + 10_000,
    ...(opts.signal ? { signal: opts.signal } : {}),
    onMessage: opts.onMessage ?? ((m) => got.push(Buffer.from(m))),
  });
  return got;
}

async function failure(p: Promise<unknown>): Promise<GrpcCallError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof GrpcCallError) return err;
    throw err;
  }
  throw new Error('the call succeeded');
}

const until = async (cond: () => boolean, ms = 5000): Promise<boolean> => {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
  return cond();
};

t.test('messages arrive whole and in order, whatever the DATA frames', async (t) => {
  const { endpoint, seen } = await grpcServer(t);
  const ch = new H2Channel(endpoint);
  t.teardown(() => ch.close());
  for (const [count, size] of [[1, 0], [3, 1], [5, 70_000], [200, 5], [2, 3 * 1024 * 1024]] as const) {
    const got = await collect(ch, request(count, size), { headers: { 'x-strata-block': 'acme/3/14400000', 'x-strata-tenant': 'acme' } });
    t.equal(got.length, count, `${count} x ${size} B: count`);
    t.ok(got.every((m, i) => m.equals(payload(size, i))), `${count} x ${size} B: every byte`);
  }
  t.same(seen.metadata?.get('x-strata-block'), ['acme/3/14400000'], 'custom headers reach the server');
  t.same(seen.metadata?.get('x-strata-tenant'), ['acme']);
  t.ok(seen.deadline > Date.now() && seen.deadline < Date.now() + 11_000, 'the deadline travels as grpc-timeout');
});

t.test('a status with a message, before or after messages', async (t) => {
  const { endpoint } = await grpcServer(t);
  const ch = new H2Channel(endpoint);
  t.teardown(() => ch.close());
  const only = await failure(collect(ch, request(0, 0, 1)));
  t.equal(only.code, status.NOT_FOUND, 'trailers-only answer: its code');
  t.equal(only.details, 'blöck "a/0/1" is 100% gone\nsecond line', 'grpc-message percent-decoded, exactly');
  const got: Buffer[] = [];
  const after = await failure(collect(ch, request(3, 10, 1), { onMessage: (m) => got.push(Buffer.from(m)) }));
  t.equal(after.code, status.NOT_FOUND, 'status after messages: its code');
  t.equal(got.length, 3, 'and the messages before it were delivered');
});

t.test('deadline, abort and a throwing handler cancel the call on the server too', async (t) => {
  const { endpoint, seen } = await grpcServer(t);
  const ch = new H2Channel(endpoint);
  t.teardown(() => ch.close());
  const t0 = Date.now();
  const late = await failure(collect(ch, request(1, 10, 2), { deadline: Date.now() + 200 }));
  t.equal(late.code, status.DEADLINE_EXCEEDED, 'DEADLINE_EXCEEDED');
  t.ok(Date.now() - t0 < 2000, 'promptly');
  t.ok(await until(() => seen.cancelled >= 1), 'the server saw the call end');

  const ac = new AbortController();
  const reason = new Error('query abandoned');
  const p = collect(ch, request(1, 10, 2), { signal: ac.signal, onMessage: () => ac.abort(reason) });
  await t.rejects(p, reason, 'abort: rejects with the signal reason');
  t.ok(await until(() => seen.cancelled >= 2), 'the server saw the cancel');

  const boom = new Error('bad message');
  await t.rejects(
    collect(ch, request(5, 10, 2), {
      onMessage: () => {
        throw boom;
      },
    }),
    boom,
    'a throwing handler: rejects with what it threw',
  );
  t.ok(await until(() => seen.cancelled >= 3), 'and the call is cancelled');
  await t.rejects(collect(ch, request(1, 1), { deadline: Date.now() - 1 }), { code: status.DEADLINE_EXCEEDED }, 'a past deadline: not even sent');
  t.same(await collect(ch, request(2, 4)), [payload(4, 0), payload(4, 1)], 'the channel still works');
});

t.test('a message over the size limit: RESOURCE_EXHAUSTED', async (t) => {
  const { endpoint } = await grpcServer(t);
  const ch = new H2Channel(endpoint, { maxMessageBytes: 1000 });
  t.teardown(() => ch.close());
  t.equal((await collect(ch, request(1, 1000))).length, 1, 'at the limit: fine');
  const e = await failure(collect(ch, request(1, 1001)));
  t.equal(e.code, status.RESOURCE_EXHAUSTED);
  t.match(e.details, /1001 bytes .* limit of 1000/);
});

t.test('no server, a closed channel: UNAVAILABLE', async (t) => {
  const { endpoint } = await grpcServer(t);
  const port = Number(endpoint.split(':')[1]);
  const srv = http2.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const free = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  const nobody = new H2Channel(`127.0.0.1:${free}`);
  t.teardown(() => nobody.close());
  t.equal((await failure(collect(nobody, request(1, 1)))).code, status.UNAVAILABLE, 'connection refused');
  const ch = new H2Channel(`127.0.0.1:${port}`);
  ch.close();
  t.equal((await failure(collect(ch, request(1, 1)))).code, status.UNAVAILABLE, 'closed channel');
});

t.test('keepalive: a connection whose peer goes silent is closed; the call on it fails UNAVAILABLE long before its deadline, and the next call connects anew', async (t) => {
  const { endpoint } = await grpcServer(t);
  const [host, port] = endpoint.split(':') as [string, string];
  // a TCP relay that can stop relaying: a peer gone silent (no FIN, no RST), as behind a dead NAT
  let frozen = false;
  const sockets: net.Socket[] = [];
  const relay = net.createServer((client) => {
    const up = net.connect(Number(port), host);
    sockets.push(client, up);
    client.on('data', (d) => frozen || up.write(d));
    up.on('data', (d) => frozen || client.write(d));
    for (const [a, b] of [[client, up], [up, client]] as const) {
      a.on('error', () => undefined);
      a.on('close', () => b.destroy());
    }
  });
  await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    relay.close();
  });
  const ch = new H2Channel(`127.0.0.1:${(relay.address() as net.AddressInfo).port}`, { keepaliveTimeMs: 100, keepaliveTimeoutMs: 300 });
  t.teardown(() => ch.close());
  let n = 0;
  // one message, then the server holds the call open
  const p = failure(collect(ch, request(1, 10, 2), { deadline: Date.now() + 600_000, onMessage: () => n++ }));
  t.ok(await until(() => n === 1), 'the call is under way');
  frozen = true;
  const e = await p;
  t.equal(e.code, status.UNAVAILABLE, `UNAVAILABLE, not DEADLINE_EXCEEDED (${e.details})`);
  t.match(e.details, /keepalive ping not answered within 300 ms/);
  frozen = false;
  t.equal((await collect(ch, request(2, 10))).length, 2, 'the next call is served on a new connection');
});

t.test('a failed connection attempt makes the next one wait (backoff with jitter); a call whose deadline comes first fails at once without connecting', async (t) => {
  let accepted = 0;
  const srv = net.createServer((s) => {
    accepted++;
    s.destroy(); // closed before the HTTP/2 handshake
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => srv.close());
  const ep = `127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
  const ch = new H2Channel(ep, { reconnectBackoff: { baseDelayMs: 3_600_000, maxDelayMs: 3_600_000 }, random: () => 0.5 });
  t.teardown(() => ch.close());
  t.equal((await failure(collect(ch, request(1, 1)))).code, status.UNAVAILABLE, 'the first attempt fails');
  t.equal(accepted, 1);
  const e = await failure(collect(ch, request(1, 1), { deadline: Date.now() + 10_000 }));
  t.equal(e.code, status.UNAVAILABLE);
  t.match(e.details, /not connecting again for \d+ ms after/);
  t.equal(accepted, 1, 'no second attempt during the backoff');

  // a short backoff: a call made during it waits, then connects
  const { endpoint } = await grpcServer(t);
  const ch2 = new H2Channel(endpoint, { reconnectBackoff: { baseDelayMs: 200, maxDelayMs: 200 }, random: () => 0.5 });
  t.teardown(() => ch2.close());
  t.equal((await collect(ch2, request(1, 5))).length, 1, 'a channel that never failed connects at once');
});

/** A gRPC server in a child process: sends `size`-byte messages, one every 20 ms, forever. */
function childServer(port: number): Promise<{ port: number; kill(): Promise<void> }> {
  const script = `
    import { Server, ServerCredentials } from '@grpc/grpc-js';
    const raw = (b) => b;
    const server = new Server();
    server.addService({ Stream: { path: '${PATH}', requestStream: false, responseStream: true, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw } }, {
      Stream(call) {
        const size = call.request.readUInt32LE(4);
        let i = 0;
        const tick = setInterval(() => call.write(Buffer.alloc(size, i++ % 251)), 20);
        call.on('cancelled', () => clearInterval(tick));
      },
    });
    server.bindAsync('127.0.0.1:${port}', ServerCredentials.createInsecure(), (e, p) => { if (e) throw e; console.log(p); });
  `;
  const proc = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout! }).once('line', (l) =>
      resolve({
        port: Number(l),
        kill: async () => {
          proc.kill('SIGKILL');
          await exited;
        },
      }),
    );
    proc.once('exit', (c) => reject(new Error(`child server exited with ${c}`)));
  });
}

t.test('a server SIGKILLed mid-stream: UNAVAILABLE; a new one on the same port: served', async (t) => {
  const first = await childServer(0);
  t.teardown(() => first.kill());
  const ch = new H2Channel(`127.0.0.1:${first.port}`);
  t.teardown(() => ch.close());
  let n = 0;
  const p = failure(collect(ch, request(0, 100), { onMessage: () => n++ }));
  t.ok(await until(() => n >= 2), 'streaming');
  await first.kill();
  const e = await p;
  t.equal(e.code, status.UNAVAILABLE, 'the call in flight: UNAVAILABLE (retryable)');
  const second = await childServer(first.port);
  t.teardown(() => second.kill());
  let m = 0;
  const ac = new AbortController();
  const q = collect(ch, request(0, 100), { signal: ac.signal, onMessage: () => ++m === 3 && ac.abort(new Error('enough')) });
  await t.rejects(q, { message: 'enough' }, 'the same channel reconnects to the new server');
  t.equal(m, 3);
});

/** A plain HTTP/2 server answering every request with `respond(stream)`. */
async function h2Server(t: Test, respond: (s: http2.ServerHttp2Stream) => void): Promise<string> {
  const srv = http2.createServer();
  srv.on('stream', (s) => {
    s.on('error', () => undefined);
    s.on('data', () => undefined);
    s.on('end', () => respond(s));
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  srv.on('session', (s) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  // close() waits for every connection: end them first, whatever state a failed test left them in
  t.teardown(() => new Promise<void>((r) => (srv.close(() => r()), sessions.forEach((s) => s.destroy()))));
  return `127.0.0.1:${(srv.address() as { port: number }).port}`;
}

const frame = (flag: number, body: Buffer): Buffer => Buffer.concat([Buffer.from([flag, body.length >>> 24, (body.length >>> 16) & 255, (body.length >>> 8) & 255, body.length & 255]), body]);

t.test('answers no gRPC server gives, mapped as the gRPC spec says', async (t) => {
  const cases: { name: string; respond: (s: http2.ServerHttp2Stream) => void; code: status; details: RegExp }[] = [
    { name: 'HTTP 503', respond: (s) => (s.respond({ ':status': 503 }), s.end()), code: status.UNAVAILABLE, details: /HTTP status 503/ },
    { name: 'HTTP 404', respond: (s) => (s.respond({ ':status': 404 }), s.end()), code: status.UNIMPLEMENTED, details: /HTTP status 404/ },
    { name: 'HTTP 401', respond: (s) => (s.respond({ ':status': 401 }), s.end()), code: status.UNAUTHENTICATED, details: /401/ },
    { name: 'not gRPC', respond: (s) => (s.respond({ ':status': 200, 'content-type': 'text/html' }), s.end('<html>')), code: status.UNKNOWN, details: /text\/html/ },
    {
      name: 'no status at all',
      respond: (s) => (s.respond({ ':status': 200, 'content-type': 'application/grpc' }), s.end(frame(0, Buffer.from('x')))),
      code: status.UNKNOWN,
      details: /without a gRPC status/,
    },
    {
      name: 'a compressed message',
      respond: (s) => {
        s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
        s.end(frame(1, Buffer.from('zz')));
      },
      code: status.INTERNAL,
      details: /compressed/,
    },
    {
      name: 'OK inside a message',
      respond: (s) => {
        s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
        s.end(frame(0, Buffer.from('abcdef')).subarray(0, 8));
      },
      code: status.INTERNAL,
      details: /ended inside a message/,
    },
    { name: 'a reset without status', respond: (s) => s.close(http2.constants.NGHTTP2_REFUSED_STREAM), code: status.UNAVAILABLE, details: /refused/ },
    { name: 'a reset with ENHANCE_YOUR_CALM', respond: (s) => s.close(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM), code: status.RESOURCE_EXHAUSTED, details: /reset with code 11/ },
  ];
  for (const c of cases) {
    const endpoint = await h2Server(t, c.respond);
    const ch = new H2Channel(endpoint);
    const e = await failure(collect(ch, request(1, 1)));
    ch.close();
    t.equal(e.code, c.code, `${c.name}: ${status[c.code]}`);
    t.match(e.details, c.details, `${c.name}: says why`);
  }
  t.equal(codeOfHttpStatus(502), status.UNAVAILABLE);
  t.equal(codeOfHttpStatus(400), status.INTERNAL);
  t.equal(codeOfHttpStatus(403), status.PERMISSION_DENIED);
  t.equal(codeOfHttpStatus(500), status.UNKNOWN);
});

t.test('messages cut anywhere between DATA frames (inside prefixes too) arrive whole', async (t) => {
  // tiny pieces over a 70 kB message would take 70 k DATA frames: the pure decoder's own test
  // (test/api/grpc-frame.test.ts) feeds every byte on its own; here tiny pieces cross every
  // prefix and message boundary of small messages, and big pieces cross the big one
  for (const piece of [1, 3, 7, 4096, 65_536]) {
    const sizes = piece < 4096 ? [0, 1, 4, 5, 17, 3000, 2] : [0, 1, 4, 5, 17, 3000, 70_000, 2];
    const body = Buffer.concat(sizes.map((n, i) => frame(0, payload(n, i))));
    const endpoint = await h2Server(t, (s) => {
      s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
      const write = (at: number): void => {
        if (at >= body.length) {
          s.end();
          return;
        }
        // one write per piece, each flushed before the next, so frames split where the pieces do
        s.write(body.subarray(at, at + piece), () => setImmediate(() => write(at + piece)));
      };
      write(0);
    });
    const ch = new H2Channel(endpoint);
    t.teardown(() => ch.close()); // also when the call fails: the server's close waits for its connections
    const got = await collect(ch, request(1, 1));
    ch.close();
    t.same(
      got.map((m) => m.length),
      sizes,
      `pieces of ${piece} B: every message`,
    );
    t.ok(got.every((m, i) => m.equals(payload(sizes[i]!, i))), `pieces of ${piece} B: every byte`);
  }
});

t.test('grpc-timeout values fit the spec (at most 8 digits)', async (t) => {
  t.equal(grpcTimeout(0.2), '1m');
  t.equal(grpcTimeout(1500), '1500m');
  t.equal(grpcTimeout(99_999_999), '99999999m');
  t.equal(grpcTimeout(100_000_000), '100000S');
  t.equal(grpcTimeout(1e12), '277778H');
  t.equal(grpcTimeout(1e15), '99999999H', 'capped');
  for (const ms of [1, 999, 12345678, 1e9, 1e12]) t.match(grpcTimeout(ms), /^\d{1,8}[HMSmun]$/);
});
