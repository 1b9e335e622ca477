/**
 * What requests cost before a handler sees them (src/common/connections.ts, guardReceives), on a
 * real aggregator over real HTTP/2 streams: a request message reserves its declared length from
 * maxReceivingBytes, and one that does not fit waits, paused by flow control, until room is given
 * back; a request that does not arrive whole within requestReceiveTimeoutMs is answered
 * DEADLINE_EXCEEDED; calls beyond maxConcurrentCalls are refused with RESOURCE_EXHAUSTED, and taken
 * again once calls end. Each error names its bound.
 */
import { connect, constants, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { createLogger } from '../../src/common/logger.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import { startAggregatorServer, type RunningAggregator } from '../../src/shard-aggregator/server.js';
import { eventually, tempDir } from '../support/aggregator.js';

const KiB = 1024;

async function start(t: Test, bounds: Record<string, number>): Promise<RunningAggregator> {
  const dir = tempDir('receive-bounds');
  const config = parseAggregatorConfig({ walDir: join(dir, 'wal'), bucket: { type: 'filesystem', path: join(dir, 'bucket') }, numShards: 1, grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', ...bounds });
  const running = await startAggregatorServer({ config, logger: createLogger({ level: 'silent' }) });
  t.teardown(() => running.shutdown());
  await running.ready;
  return running;
}

async function gauge(a: RunningAggregator, name: string, labels?: Record<string, string>): Promise<number> {
  const m = await a.metrics.registry.getSingleMetric(name)!.get();
  const v = m.values.find((x) => labels === undefined || Object.entries(labels).every(([k, l]) => x.labels[k] === l));
  return v?.value ?? 0;
}

interface Answer {
  readonly status: string | undefined;
  readonly message: string;
  readonly code: string | undefined;
  readonly accept?: string | undefined;
  /** The RST_STREAM code the stream closed with. */
  readonly rst: number | undefined;
}

/** A Write call on `session`: its stream and its answer (the gRPC status from headers or trailers). */
function call(session: ClientHttp2Session, headers: Record<string, string> = {}): { stream: ClientHttp2Stream; answer: Promise<Answer>; answered: () => boolean } {
  const stream = session.request({ ':method': 'POST', ':path': '/strata.write.v1.Writer/Write', 'content-type': 'application/grpc', te: 'trailers', 'x-strata-tenant': 'acme', 'x-strata-shard': '0', ...headers });
  let done = false;
  const answer = new Promise<Answer>((resolve) => {
    let got: Answer | null = null;
    const take = (h: Record<string, unknown>): void => {
      if (h['grpc-status'] !== undefined) got = { status: String(h['grpc-status']), message: decodeURIComponent(String(h['grpc-message'] ?? '')), code: h['strata-error-code'] as string | undefined, accept: h['grpc-accept-encoding'] as string | undefined, rst: undefined };
    };
    stream.on('response', take);
    stream.on('trailers', take);
    stream.on('error', () => undefined);
    stream.resume();
    stream.on('close', () => {
      done = true;
      resolve(got ? { ...got, rst: stream.rstCode } : { status: undefined, message: 'closed without a status', code: undefined, rst: stream.rstCode });
    });
  });
  return { stream, answer, answered: () => done };
}

/** A WriteRequest of one series (id 7) with one sample at `ts`. */
function writeMessage(ts: number): Buffer {
  const b = Buffer.alloc(2 + 9 + 10 + 10);
  let o = 0;
  b[o++] = 0x0a;
  b[o++] = 29;
  b[o++] = 0x09;
  o = b.writeBigUInt64LE(7n, o);
  b[o++] = 0x12;
  b[o++] = 8;
  o = b.writeBigInt64LE(BigInt(ts), o);
  b[o++] = 0x1a;
  b[o++] = 8;
  b.writeDoubleLE(1.5, o);
  return b;
}

/** The 5-byte gRPC prefix of a message of `n` bytes. */
function prefix(n: number): Buffer {
  const b = Buffer.alloc(5);
  b.writeUInt32BE(n, 1);
  return b;
}

t.test('a request that does not fit maxReceivingBytes waits, paused, until room is given back; then both are answered', async (t) => {
  const a = await start(t, { maxReceivingBytes: 1024 * KiB, requestReceiveTimeoutMs: 60_000 });
  const session = connect(`http://127.0.0.1:${a.grpcPort}`);
  t.teardown(() => session.destroy());
  const size = 800 * KiB;
  const first = call(session);
  first.stream.write(Buffer.concat([prefix(size), Buffer.alloc(size / 2, 0xff)]));
  await eventually('the first request to reserve its length', async () => ((await gauge(a, 'strata_grpc_receiving_bytes')) === size + 5 ? true : null));
  const second = call(session);
  second.stream.end(Buffer.concat([prefix(size), Buffer.alloc(size, 0xff)]));
  await eventually('the second request to wait', async () => ((await gauge(a, 'strata_grpc_calls_waiting')) === 1 ? true : null));
  t.equal(await gauge(a, 'strata_grpc_receiving_bytes'), size + 5, 'only the first is being received');
  t.notOk(second.answered(), 'the second is not answered while it waits');
  first.stream.end(Buffer.alloc(size / 2, 0xff));
  const one = await first.answer;
  const two = await second.answer;
  // garbage messages: both refused once they arrived whole, as any malformed request is
  t.equal(one.status, '3', `first answered: ${one.message}`);
  t.equal(two.status, '3', `second answered: ${two.message}`);
  t.equal(await gauge(a, 'strata_grpc_calls_waiting'), 0);
  t.equal(await gauge(a, 'strata_grpc_receiving_bytes'), 0, 'every reservation given back');
});

t.test('a request that stops part-way is answered DEADLINE_EXCEEDED after requestReceiveTimeoutMs, naming it', async (t) => {
  const a = await start(t, { requestReceiveTimeoutMs: 300 });
  const session = connect(`http://127.0.0.1:${a.grpcPort}`);
  t.teardown(() => session.destroy());
  const stalled = call(session);
  stalled.stream.write(Buffer.concat([prefix(64 * KiB), Buffer.alloc(10)]));
  const got = await stalled.answer;
  t.equal(got.status, '4');
  t.match(got.message, /requestReceiveTimeoutMs \(300 ms\)/);
  t.equal(got.code, 'ERR_STRATA_DEADLINE_EXCEEDED');
  t.equal(await gauge(a, 'strata_grpc_calls_refused_total', { reason: 'request_receive_timeout' }), 1);
  t.equal(await gauge(a, 'strata_grpc_receiving_bytes'), 0, 'its reservation given back');
});

t.test('calls beyond maxConcurrentCalls are refused with RESOURCE_EXHAUSTED, naming it, and taken again once calls end', async (t) => {
  const a = await start(t, { maxConcurrentCalls: 3, requestReceiveTimeoutMs: 60_000 });
  const holder = connect(`http://127.0.0.1:${a.grpcPort}`);
  const other = connect(`http://127.0.0.1:${a.grpcPort}`);
  t.teardown(() => {
    holder.destroy();
    other.destroy();
  });
  // three calls that send nothing
  for (let i = 0; i < 3; i++) call(holder);
  await eventually('three calls open', async () => ((await gauge(a, 'strata_grpc_calls_open')) === 3 ? true : null));
  const fourth = await call(other).answer;
  t.equal(fourth.status, '8');
  t.match(fourth.message, /maxConcurrentCalls \(3\)/);
  t.equal(fourth.code, 'ERR_STRATA_RESOURCE_EXHAUSTED');
  t.equal(await gauge(a, 'strata_grpc_calls_refused_total', { reason: 'max_concurrent_calls' }), 1);
  // the three calls end with their connection
  holder.destroy();
  await eventually('the calls to end', async () => ((await gauge(a, 'strata_grpc_calls_open')) === 0 ? true : null));
  const again = call(other);
  again.stream.end(Buffer.concat([prefix(3), Buffer.from([0xff, 0xff, 0xff])]));
  t.equal((await again.answer).status, '3', 'a new call is taken (and refused only for its malformed message)');
});

t.test('a request message declared larger than maxRequestBytes is refused from its first bytes, naming it, with the error code', async (t) => {
  const a = await start(t, { maxRequestBytes: 1024 * KiB });
  const session = connect(`http://127.0.0.1:${a.grpcPort}`);
  t.teardown(() => session.destroy());
  const big = call(session);
  big.stream.write(prefix(1024 * KiB + 1)); // nothing more is sent: the answer comes from the prefix
  const got = await big.answer;
  t.equal(got.status, '8');
  t.match(got.message, /1048577 bytes, more than maxRequestBytes \(1048576\)/);
  t.equal(got.code, 'ERR_STRATA_RESOURCE_EXHAUSTED');
  t.equal(await gauge(a, 'strata_grpc_calls_refused_total', { reason: 'message_too_large' }), 1);
  // the same prefix in two DATA frames
  const split = call(session);
  const p = prefix(1024 * KiB + 2);
  split.stream.write(p.subarray(0, 2));
  split.stream.write(p.subarray(2));
  const got2 = await split.answer;
  t.match(got2.message, /1048578 bytes, more than maxRequestBytes/);
  t.equal(await gauge(a, 'strata_grpc_calls_refused_total', { reason: 'message_too_large' }), 2);
});

t.test('a call that ends while it waits for maxReceivingBytes leaves the queue at once', async (t) => {
  const a = await start(t, { maxReceivingBytes: 64 * KiB, requestReceiveTimeoutMs: 60_000 });
  const session = connect(`http://127.0.0.1:${a.grpcPort}`);
  t.teardown(() => session.destroy());
  const holder = call(session);
  holder.stream.write(Buffer.concat([prefix(64 * KiB), Buffer.alloc(10)]));
  await eventually('the holder to reserve the budget', async () => ((await gauge(a, 'strata_grpc_receiving_bytes')) > 0 ? true : null));
  const waiters = Array.from({ length: 50 }, () => {
    const w = call(session);
    w.stream.write(Buffer.concat([prefix(32 * KiB), Buffer.alloc(1000)]));
    return w;
  });
  await eventually('50 calls to wait', async () => ((await gauge(a, 'strata_grpc_calls_waiting')) === 50 ? true : null));
  for (const w of waiters) w.stream.close(constants.NGHTTP2_CANCEL);
  // before, they stayed queued (with what they had received) until the holder's call ended
  await eventually('the cancelled calls to leave the queue', async () => ((await gauge(a, 'strata_grpc_calls_waiting')) === 0 && (await gauge(a, 'strata_grpc_calls_open')) === 1 ? true : null));
  t.equal(await gauge(a, 'strata_grpc_receiving_bytes'), 64 * KiB + 5, 'the holder still holds its reservation');
  holder.stream.close(constants.NGHTTP2_CANCEL);
  await eventually('every call to end', async () => ((await gauge(a, 'strata_grpc_calls_open')) === 0 ? true : null));
});

t.test('what is not one whole, uncompressed request message is refused before grpc-js sees it, with its status and error code, and nothing is stored', async (t) => {
  const a = await start(t, { requestReceiveTimeoutMs: 60_000 });
  const session = connect(`http://127.0.0.1:${a.grpcPort}`);
  t.teardown(() => session.destroy());
  const msg = writeMessage(Date.now());
  const frame = Buffer.concat([prefix(msg.length), msg]);
  const cases: [string, Record<string, string>, Buffer, string, RegExp][] = [
    ['two messages on a unary call', {}, Buffer.concat([frame, frame]), '3', /more than one request message: 72 bytes arrived for one message of 36 bytes/],
    ['a call that ends part-way through its message', {}, frame.subarray(0, 20), '3', /the call ended before its request message was whole \(20 bytes of 36\)/],
    ['a call that ends with no message', {}, Buffer.alloc(0), '3', /the call ended before its request message was whole \(0 bytes\)/],
    ['a call that ends inside the 5-byte prefix', {}, frame.subarray(0, 3), '3', /ended before its request message was whole \(3 bytes\)/],
    ['a compressed request (grpc-encoding gzip)', { 'grpc-encoding': 'gzip' }, frame, '12', /compressed requests are not supported \(grpc-encoding gzip\)/],
    ['a method the service does not have', { ':path': '/strata.write.v1.Writer/Nope' }, frame, '12', /does not implement the method \/strata\.write\.v1\.Writer\/Nope/],
    ['a grpc-timeout that is none', { 'grpc-timeout': 'abc' }, frame, '3', /the grpc-timeout header "abc" is not a timeout/],
    ['a compressed flag of 2', {}, Buffer.concat([Buffer.from([2]), frame.subarray(1)]), '3', /compressed flag is 2 \(0 or 1 only\)/],
  ];
  for (const [what, headers, body, want, message] of cases) {
    const c = call(session, headers);
    c.stream.end(body);
    const got = await c.answer;
    t.equal(got.status, want, `${what}: status ${want} (${got.message})`);
    t.match(got.message, message, `${what}: says why`);
    t.equal(got.code, want === '12' ? 'ERR_STRATA_UNIMPLEMENTED' : 'ERR_STRATA_INVALID_ARGUMENT', `${what}: error code`);
    if (headers['grpc-encoding'] !== undefined) t.equal(got.accept, 'identity', `${what}: grpc-accept-encoding names what is taken`);
  }
  t.same(a.aggregator()!.status().windows, [], 'nothing stored');
  t.equal(await gauge(a, 'strata_grpc_calls_refused_total', { reason: 'malformed_request' }), 6); // the compressed flag of 2 included: counted since the guard refuses it
  t.equal(await gauge(a, 'strata_grpc_calls_refused_total', { reason: 'compressed_request' }), 1);
  t.equal(await gauge(a, 'strata_grpc_calls_refused_total', { reason: 'unknown_method' }), 1);
  // a deadline beyond what grpc-js's timer arithmetic holds (2^31 ms) is no deadline, not one past
  const far = call(session, { 'grpc-timeout': '99999999H' });
  far.stream.end(frame);
  const ok = await far.answer;
  t.equal(ok.status, '0', `a grpc-timeout of 99999999H is taken (${ok.message})`);
  t.equal(a.aggregator()!.status().windows.length, 1, 'and its sample stored');
  await eventually('every call to end', async () => ((await gauge(a, 'strata_grpc_calls_open')) === 0 ? true : null));
});

t.test('a client that goes away part-way through its message is a cancelled call, not a malformed request, and its reservation is given back', async (t) => {
  const a = await start(t, { requestReceiveTimeoutMs: 60_000 });
  const msg = writeMessage(Date.now());
  const frame = Buffer.concat([prefix(msg.length), msg]);
  const ways: [string, (session: ClientHttp2Session, stream: ClientHttp2Stream) => void][] = [
    ['its connection dropped', (session) => session.destroy()],
    ['its stream reset without ending it', (_session, stream) => stream.destroy()],
  ];
  for (const [what, goAway] of ways) {
    const session = connect(`http://127.0.0.1:${a.grpcPort}`);
    t.teardown(() => session.destroy());
    const c = call(session);
    c.stream.write(frame.subarray(0, 20));
    await eventually('the first bytes to be reserved', async () => ((await gauge(a, 'strata_grpc_receiving_bytes')) === frame.length ? true : null));
    goAway(session, c.stream);
    await eventually(`the call to end (${what})`, async () => ((await gauge(a, 'strata_grpc_calls_open')) === 0 ? true : null));
    t.equal(await gauge(a, 'strata_grpc_receiving_bytes'), 0, `${what}: its reservation given back`);
  }
  t.equal(await gauge(a, 'strata_grpc_calls_refused_total', { reason: 'malformed_request' }), 0, 'no call counted as malformed');
  t.same(a.aggregator()!.status().windows, [], 'nothing stored');
});

t.test('a refusal reaches a client that is still sending: trailers first, then RST_STREAM(NO_ERROR)', async (t) => {
  const a = await start(t, { maxRequestBytes: 64 * KiB });
  const session = connect(`http://127.0.0.1:${a.grpcPort}`);
  t.teardown(() => session.destroy());
  const big = call(session);
  big.stream.write(Buffer.concat([prefix(1024 * KiB), Buffer.alloc(60 * KiB)]));
  big.stream.write(Buffer.alloc(200 * KiB)); // still sending when the refusal goes out
  const got = await big.answer;
  t.equal(got.status, '8', got.message);
  t.equal(got.code, 'ERR_STRATA_RESOURCE_EXHAUSTED');
  t.equal(got.rst, constants.NGHTTP2_NO_ERROR, 'reset with NO_ERROR (CANCEL made grpcio drop the status)');
});
