/**
 * A request message that does not decode gets INVALID_ARGUMENT naming the message, on both
 * services (grpc-js alone answers INTERNAL), and nothing of it is stored (in-process servers,
 * filesystem buckets, real gRPC).
 */
import { join } from 'node:path';
import { Client, credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import t from 'tap';
import { createLogger } from '../../src/common/logger.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import { startAggregatorServer } from '../../src/shard-aggregator/server.js';
import { startTestGateway, tempDir, testConfig } from '../storage-gateway/helpers.js';

/** A protobuf field 1 (length-delimited) claiming far more bytes than follow. */
const GARBAGE = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]);
const identity = (b: Buffer): Buffer => b;

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
