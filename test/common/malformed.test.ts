/**
 * A request message that does not decode gets INVALID_ARGUMENT naming the message, on both
 * services (grpc-js alone answers INTERNAL), and nothing of it is stored (in-process servers,
 * filesystem buckets, real gRPC).
 */
import { once } from 'node:events';
import { connect } from 'node:http2';
import { join } from 'node:path';
import { Client, credentials, Metadata, status, type MethodDefinition, type ServiceError } from '@grpc/grpc-js';
import t from 'tap';
import { encodeReadRequest, ENCODING_RAW, READ_METHOD_PATH } from '../../src/api/read-codec.js';
import { createLogger } from '../../src/common/logger.js';
import { loadProto } from '../../src/api/proto.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import { startAggregatorServer } from '../../src/shard-aggregator/server.js';
import { startTestGateway, tempDir, testConfig } from '../support/gateway.js';
import { encodeFrame } from '../../src/api/grpc-frame.js';

/** A protobuf field 1 (length-delimited) claiming far more bytes than follow. */
const GARBAGE = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]);
const identity = (b: Buffer): Buffer => b;
/** The injected clock of the aggregator (its window is accepted whatever the date). */
const NOW = Date.UTC(2026, 0, 1, 12);

function unary(c: Client, path: string, md: Metadata): Promise<ServiceError | null> {
  return new Promise((resolve) => c.makeUnaryRequest(path, identity, identity, GARBAGE, md, { deadline: Date.now() + 30_000 }, (err) => resolve(err ?? null)));
}

t.test('the aggregator answers a malformed Write with INVALID_ARGUMENT and stores nothing', async (t) => {
  const dir = tempDir(t, 'malformed-agg');
  const config = parseAggregatorConfig({ walDir: join(dir, 'wal'), bucket: { type: 'filesystem', path: join(dir, 'bucket') }, numShards: 1, grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0' });
  const running = await startAggregatorServer({ config, logger: createLogger({ level: 'silent' }) });
  t.teardown(() => running.shutdown());
  await running.ready;
  const c = new Client(`127.0.0.1:${running.grpcPort}`, credentials.createInsecure());
  t.teardown(() => c.close());
  const md = new Metadata();
  md.set('x-strata-tenant', 'acme');
  md.set('x-strata-shard', '0');
  const err = await unary(c, '/strata.write.v1.Writer/Write', md);
  t.equal(err?.code, status.INVALID_ARGUMENT, `INVALID_ARGUMENT (${err?.details})`);
  t.match(err?.details ?? '', /invalid request: the Write request message does not decode/);
  t.same(running.aggregator()!.status().windows, [], 'nothing stored');
  const seal = await unary(c, '/strata.write.v1.Writer/Seal', md);
  t.equal(seal?.code, status.INVALID_ARGUMENT, 'Seal too');
});

t.test('the gateway answers a malformed Read with INVALID_ARGUMENT', async (t) => {
  const dir = tempDir(t, 'malformed-gw');
  const gw = await startTestGateway(t, testConfig({ type: 'filesystem', path: join(dir, 'bucket') }, join(dir, 'cache')));
  const c = new Client(`127.0.0.1:${gw.grpcPort}`, credentials.createInsecure());
  t.teardown(() => c.close());
  const err = await new Promise<ServiceError | null>((resolve) => {
    const call = c.makeServerStreamRequest('/strata.read.v1.Read/Read', identity, identity, GARBAGE, new Metadata(), { deadline: Date.now() + 30_000 });
    call.on('data', () => undefined);
    call.on('error', (e: ServiceError) => resolve(e));
    call.on('end', () => resolve(null));
  });
  t.equal(err?.code, status.INVALID_ARGUMENT, `INVALID_ARGUMENT (${err?.details})`);
  t.match(err?.details ?? '', /invalid request: the Read request message does not decode/);
});

/** A gRPC frame of `body` flagged as compressed, sent on a call with no grpc-encoding header. */
async function flaggedCall(port: number, path: string, body: Buffer, headers: Record<string, string>): Promise<{ status: string | undefined; message: string | undefined }> {
  const session = connect(`http://127.0.0.1:${port}`);
  try {
    const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...headers });
    stream.end(encodeFrame(body, 1)); // Compressed-Flag set
    stream.resume();
    // the status comes in trailers, or in the headers of a trailers-only answer
    let got: Record<string, unknown> = {};
    stream.on('response', (h) => (got = { ...got, ...h }));
    stream.on('trailers', (h) => (got = { ...got, ...h }));
    await once(stream, 'close');
    return { status: got['grpc-status'] as string | undefined, message: got['grpc-message'] as string | undefined };
  } finally {
    session.close();
  }
}

t.test('a frame flagged as compressed without grpc-encoding gets INVALID_ARGUMENT on both services, and nothing of it is stored', async (t) => {
  t.setTimeout(60_000);
  const dir = tempDir(t, 'flagged');
  const config = parseAggregatorConfig({ walDir: join(dir, 'wal'), bucket: { type: 'filesystem', path: join(dir, 'bucket') }, numShards: 1, grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0' });
  const running = await startAggregatorServer({ config, logger: createLogger({ level: 'silent' }), now: () => NOW });
  t.teardown(() => running.shutdown());
  await running.ready;
  // a valid Write of one sample: taken as it is when the flag is clear
  const Writer = (loadProto('write.proto') as unknown as { strata: { write: { v1: { Writer: { service: Record<'Write', MethodDefinition<unknown, unknown>> } } } } }).strata.write.v1.Writer;
  const ts = Buffer.alloc(8);
  ts.writeBigInt64LE(BigInt(NOW - 60_000));
  const vs = Buffer.alloc(8);
  vs.writeDoubleLE(1.5);
  const write = Writer.service.Write.requestSerialize({ series: [{ id: '0', timestamps: ts, values: vs }] });
  const refused = await flaggedCall(running.grpcPort, '/strata.write.v1.Writer/Write', write, { 'x-strata-tenant': 'acme', 'x-strata-shard': '0' });
  t.equal(refused.status, String(status.INVALID_ARGUMENT), `Write: INVALID_ARGUMENT (${refused.message})`);
  t.match(decodeURIComponent(refused.message ?? ''), /flagged as compressed, but the call has no grpc-encoding header/);
  t.same(running.aggregator()!.status().windows, [], 'nothing stored');

  const gw = await startTestGateway(t, testConfig({ type: 'filesystem', path: join(dir, 'bucket') }, join(dir, 'cache')));
  const read = encodeReadRequest({ tenant: 'acme', shard: 0, numShards: 1, windowStartMs: 0n, seriesIds: new Uint8Array(8), startMs: 0n, endMs: 1n, encoding: ENCODING_RAW });
  const r = await flaggedCall(gw.grpcPort, READ_METHOD_PATH, read, {});
  t.equal(r.status, String(status.INVALID_ARGUMENT), `Read: INVALID_ARGUMENT (${r.message})`);
});
