/**
 * A burst of big reads does not starve the gateway's other work: while eight RAW reads of a
 * 1 M-sample block stream (each answer 16 MB, made message by message), health checks and
 * `/metrics` scrapes are answered in between, and the answers are exact.
 */
import t from 'tap';
import { connect } from 'node:http2';
import { credentials } from '@grpc/grpc-js';
import { blockRoutingKey, BLOCK_HEADER } from '../../src/api/headers.js';
import { FrameDecoder, encodeFrame } from '../../src/api/grpc-frame.js';
import { loadProto } from '../../src/api/proto.js';
import { decodeReadResponse, encodeReadRequest, ENCODING_RAW, READ_METHOD_PATH } from '../../src/api/read-codec.js';
import { READ_SERVICE } from '../../src/api/services.js';
import { openBucket } from '../../src/objstore/index.js';
import { KINDS, makeSeries } from '../support/series.js';
import { idBytes, rgwBucket, startTestGateway, tempDir, testConfig, W0, D, writeBlock, type SeriesData } from '../support/gateway.js';

const SERIES = 1100;
const READS = 8;

/** One Read streamed by hand: counts messages and bytes as they arrive. */
function streamRead(port: number, body: Buffer, routingKey: string): { messages: () => number; done: Promise<{ messages: number; samples: number; status: string }> } {
  const session = connect(`http://127.0.0.1:${port}`);
  session.on('error', () => undefined);
  const stream = session.request({ ':method': 'POST', ':path': READ_METHOD_PATH, 'content-type': 'application/grpc', te: 'trailers', [BLOCK_HEADER]: routingKey });
  let messages = 0;
  let samples = 0;
  let status = 'none';
  const frames = new FrameDecoder(64 << 20);
  stream.on('data', (chunk: Buffer) =>
    frames.push(chunk, (m) => {
      messages++;
      samples += decodeReadResponse(m).timestamps.length / 8;
    }),
  );
  stream.on('trailers', (h) => (status = String(h['grpc-status'])));
  stream.on('response', (h) => {
    if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
  });
  const done = new Promise<{ messages: number; samples: number; status: string }>((resolve, reject) => {
    stream.on('close', () => {
      session.close();
      resolve({ messages, samples, status });
    });
    stream.on('error', reject);
  });
  stream.end(encodeFrame(body));
  return { messages: () => messages, done };
}

t.test('health checks and /metrics are answered while a burst of big reads streams', async (t) => {
  const bucketConfig = await rgwBucket(t);
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  const members: SeriesData[] = Array.from({ length: SERIES }, (_, i) => ({ id: BigInt(i + 1), samples: makeSeries(KINDS[i % KINDS.length]!, 960, W0, 9000 + i) }));
  const total = members.reduce((n, m) => n + m.samples.timestamps.length, 0);
  await writeBlock(bucket, 'acme', 0, 1, W0, members);
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t), { maxBytesPerResponse: 64 << 20, maxSamplesPerResponse: 2_000_000 }));
  const body = Buffer.from(
    encodeReadRequest({ tenant: 'acme', shard: 0, numShards: 1, windowStartMs: W0, seriesIds: idBytes(members.map((m) => m.id)), startMs: W0, endMs: W0 + D, encoding: ENCODING_RAW }),
  );
  const key = blockRoutingKey('acme', 0, W0);
  // warm the cache: the burst below is served from it, the part that is all CPU
  const warm = await streamRead(gw.grpcPort, body, key).done;
  t.same([warm.status, warm.samples], ['0', total], 'one read: every sample');

  type HealthClient = { Check(req: { service: string }, cb: (err: Error | null, res: { status: string }) => void): void; close(): void };
  const Health = (loadProto('health.proto') as unknown as { grpc: { health: { v1: { Health: new (a: string, c: unknown) => HealthClient } } } }).grpc.health.v1.Health;
  const health = new Health(`127.0.0.1:${gw.grpcPort}`, credentials.createInsecure());
  t.teardown(() => health.close());
  const check = (): Promise<string> => new Promise((resolve, reject) => health.Check({ service: READ_SERVICE }, (err, res) => (err ? reject(err) : resolve(res.status))));
  t.equal(await check(), 'SERVING', 'health before the burst');

  const reads = Array.from({ length: READS }, () => streamRead(gw.grpcPort, body, key));
  let finished = 0;
  const all = Promise.all(reads.map((r) => r.done.then((x) => (finished++, x))));
  // every read has started streaming...
  while (reads.some((r) => r.messages() === 0)) await new Promise((r) => setImmediate(r));
  // ...and while they stream, health and /metrics keep answering
  const answers: string[] = [];
  const during = async (): Promise<void> => {
    while (finished < READS) {
      const [h, m] = await Promise.all([check(), fetch(`http://127.0.0.1:${gw.metricsPort}/metrics`).then((r) => r.text())]);
      if (finished >= READS) break;
      answers.push(`${h} ${/^strata_gateway_requests_total/m.test(m) ? 'metrics' : 'no metrics'}`);
    }
  };
  const [results] = await Promise.all([all, during()]);
  t.ok(results.every((r) => r.status === '0' && r.samples === total), `all ${READS} reads exact (${total} samples each)`);
  t.ok(results.every((r) => r.messages > 3), 'each answer came in several messages');
  t.ok(answers.length >= 2, `health and /metrics answered ${answers.length} times while the reads streamed`);
  t.same(new Set(answers), new Set(['SERVING metrics']), 'every health check SERVING, every scrape complete');
});
