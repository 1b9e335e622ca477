/**
 * What requests cost before a handler sees them (src/common/connections.ts, guardReceives), on a
 * real aggregator over real HTTP/2 streams: a request message reserves its declared length from
 * maxReceivingBytes, and one that does not fit waits, paused by flow control, until room is given
 * back; a request that does not arrive whole within requestReceiveTimeoutMs is answered
 * DEADLINE_EXCEEDED; calls beyond maxConcurrentCalls are refused with RESOURCE_EXHAUSTED, and taken
 * again once calls end. Each error names its bound.
 */
import { connect, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
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
}

/** A Write call on `session`: its stream and its answer (the gRPC status from headers or trailers). */
function call(session: ClientHttp2Session): { stream: ClientHttp2Stream; answer: Promise<Answer>; answered: () => boolean } {
  const stream = session.request({ ':method': 'POST', ':path': '/strata.write.v1.Writer/Write', 'content-type': 'application/grpc', te: 'trailers', 'x-strata-tenant': 'acme', 'x-strata-shard': '0' });
  let done = false;
  const answer = new Promise<Answer>((resolve) => {
    let got: Answer | null = null;
    const take = (h: Record<string, unknown>): void => {
      if (h['grpc-status'] !== undefined) got = { status: String(h['grpc-status']), message: decodeURIComponent(String(h['grpc-message'] ?? '')), code: h['strata-error-code'] as string | undefined };
    };
    stream.on('response', take);
    stream.on('trailers', take);
    stream.on('error', () => undefined);
    stream.resume();
    stream.on('close', () => {
      done = true;
      resolve(got ?? { status: undefined, message: 'closed without a status', code: undefined });
    });
  });
  return { stream, answer, answered: () => done };
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
