/**
 * A request message that does not decode gets INVALID_ARGUMENT naming the message, on both
 * services (grpc-js alone answers INTERNAL), and nothing of it is stored (in-process servers,
 * filesystem buckets, real gRPC).
 */
import { once } from 'node:events';
import { connect } from 'node:http2';
import { join } from 'node:path';
import { Client, credentials, Metadata, status, type MethodDefinition, type ServiceError } from '@grpc/grpc-js';
import t, { type Test } from 'tap';
import { encodeReadRequest, ENCODING_RAW, READ_METHOD_PATH } from '../../src/api/read-codec.js';
import { createLogger } from '../../src/common/logger.js';
import { loadProto } from '../../src/api/proto.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import { startAggregatorServer } from '../../src/shard-aggregator/server.js';
import { startTestGateway, tempDir, testConfig } from '../support/gateway.js';
import { encodeFrame } from '../../src/api/grpc-frame.js';

/** A protobuf field 1 (length-delimited) claiming far more bytes than follow. */
const GARBAGE = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]);
const identity = (b: Buffer): Buffer => b as Buffer;
/** The injected clock of the aggregator (its window is accepted whatever the date). */
const NOW = Date.UTC(2026, 0, 1, 12);

function unary(c: Client, path: string, md: Metadata, body: Buffer = GARBAGE): Promise<ServiceError | null> {
  return new Promise((resolve) => c.makeUnaryRequest(path, identity, identity, body, md, { deadline: Date.now() + 30_000 }, (err) => resolve(err ?? null)));
}

/** One SeriesSamples (id 7, one sample at NOW, value 1.5) as protobuf bytes, with `extra` appended inside it. */
function seriesBytes(extra: number[] = []): Buffer {
  const ts = Buffer.alloc(8);
  ts.writeBigInt64LE(BigInt(NOW));
  const v = Buffer.alloc(8);
  v.writeDoubleLE(1.5);
  const id = Buffer.alloc(8);
  id.writeBigUInt64LE(7n);
  return Buffer.concat([Buffer.from([0x09]), id, Buffer.from([0x12, 8]), ts, Buffer.from([0x1a, 8]), v, Buffer.from(extra)]);
}

function writeRequest(series: Buffer, extra: number[] = []): Buffer {
  return Buffer.concat([Buffer.from([0x0a, series.length]), series, Buffer.from(extra)]);
}

/** An in-process aggregator (one shard, clock at NOW), a raw client and the headers of a write to it. */
async function aggregatorAndClient(t: Test, tag: string) {
  const dir = tempDir(t, tag);
  const config = parseAggregatorConfig({ walDir: join(dir, 'wal'), bucket: { type: 'filesystem', path: join(dir, 'bucket') }, numShards: 1, grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0' });
  const running = await startAggregatorServer({ config, logger: createLogger({ level: 'silent' }), now: () => NOW });
  t.teardown(() => running.shutdown());
  await running.ready;
  const c = new Client(`127.0.0.1:${running.grpcPort}`, credentials.createInsecure());
  t.teardown(() => c.close());
  const md = new Metadata();
  md.set('x-strata-tenant', 'acme');
  md.set('x-strata-shard', '0');
  return { running, c, md };
}

t.test('the aggregator answers a malformed Write with INVALID_ARGUMENT and stores nothing', async (t) => {
  const { running, c, md } = await aggregatorAndClient(t, 'malformed-agg');
  const err = await unary(c, '/strata.write.v1.Writer/Write', md);
  t.equal(err?.code, status.INVALID_ARGUMENT, `INVALID_ARGUMENT (${err?.details})`);
  t.match(err?.details ?? '', /invalid request: the Write request message does not decode/);
  t.same(running.aggregator()!.status().windows, [], 'nothing stored');
  const seal = await unary(c, '/strata.write.v1.Writer/Seal', md);
  t.equal(seal?.code, status.INVALID_ARGUMENT, 'Seal too');
});

t.test('field number 0 and a known field in the wrong wire type are refused, not skipped or misread, and nothing is stored', async (t) => {
  const { running, c, md } = await aggregatorAndClient(t, 'malformed-wire');
  const cases: [string, string, Buffer, RegExp][] = [
    ['Write', 'field 0 after a valid series', writeRequest(seriesBytes(), [0x00, 0x05]), /WriteRequest: field 0: invalid field number/],
    ['Write', 'field 0 inside a series', writeRequest(seriesBytes([0x02, 0x01, 0x07])), /SeriesSamples: field 0: invalid field number/],
    ['Write', 'series id as a varint (fixed64 in the .proto)', writeRequest(Buffer.concat([Buffer.from([0x08, 0x07]), seriesBytes().subarray(9)])), /SeriesSamples: field 1 \(id\) has wire type 0, expected 1/],
    ['Write', 'a group start', writeRequest(seriesBytes(), [0x0b]), /WriteRequest: field 1 \(series\) has wire type 3, expected 2/],
    ['Seal', 'window_start_ms as a group start', Buffer.from([0x0b, 0x0c]), /SealRequest: field 1 \(window_start_ms\) has wire type 3, expected 0/],
    ['Seal', 'field 0', Buffer.from([0x00, 0x05]), /SealRequest: field 0: invalid field number/],
    ['Status', 'field 0', Buffer.from([0x02, 0x00]), /StatusRequest: field 0: invalid field number/],
  ];
  for (const [method, what, body, reason] of cases) {
    const err = await unary(c, `/strata.write.v1.Writer/${method}`, md, body);
    t.equal(err?.code, status.INVALID_ARGUMENT, `${method}, ${what}: INVALID_ARGUMENT (${err?.details})`);
    t.match(err?.details ?? '', reason, `${method}, ${what}: names the message and field`);
  }
  t.same(running.aggregator()!.status().windows, [], 'nothing stored');
  // the same series without the stray bytes is a valid write: the walk refuses only what is wrong
  t.equal(await unary(c, '/strata.write.v1.Writer/Write', md, writeRequest(seriesBytes())), null, 'the well-formed request is accepted');
  t.equal(running.aggregator()!.status().windows.length, 1, 'and stored');
});

t.test('the gateway answers a malformed Read with INVALID_ARGUMENT', async (t) => {
  const dir = tempDir(t, 'malformed-gw');
  const gw = await startTestGateway(t, testConfig({ type: 'filesystem', path: join(dir, 'bucket') }, join(dir, 'cache')));
  const c = new Client(`127.0.0.1:${gw.grpcPort}`, credentials.createInsecure());
  t.teardown(() => c.close());
  const read = (body: Buffer): Promise<ServiceError | null> =>
    new Promise((resolve) => {
      const call = c.makeServerStreamRequest('/strata.read.v1.Read/Read', identity, identity, body, new Metadata(), { deadline: Date.now() + 30_000 });
      call.on('data', () => undefined);
      call.on('error', (e: ServiceError) => resolve(e));
      call.on('end', () => resolve(null));
    });
  const err = await read(GARBAGE);
  t.equal(err?.code, status.INVALID_ARGUMENT, `INVALID_ARGUMENT (${err?.details})`);
  t.match(err?.details ?? '', /invalid request: the Read request message does not decode/);
  // field number 0 in front of a valid request
  const valid = encodeReadRequest({ tenant: 'acme', shard: 0, numShards: 1, windowStartMs: 0n, seriesIds: Buffer.alloc(8), startMs: 0n, endMs: 1n, encoding: ENCODING_RAW });
  const zero = await read(Buffer.concat([Buffer.from([0x00, 0x01]), valid]));
  t.equal(zero?.code, status.INVALID_ARGUMENT, `field 0: INVALID_ARGUMENT (${zero?.details})`);
  t.match(zero?.details ?? '', /ReadRequest: field 0: invalid field number/, 'names the message');
  // a known field in the wrong wire type: the message and the field by name
  const wrong = await read(Buffer.concat([valid, Buffer.from([0x08, 0x01])]));
  t.equal(wrong?.code, status.INVALID_ARGUMENT, `wrong wire type: INVALID_ARGUMENT (${wrong?.details})`);
  t.match(wrong?.details ?? '', /ReadRequest: field 1 \(tenant\) has wire type 0, expected 2/, 'names the message and field');
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
