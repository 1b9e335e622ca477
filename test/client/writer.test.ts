/**
 * Writer client: batching by shard (long series split exactly), retries of UNAVAILABLE and
 * RESOURCE_EXHAUSTED with backoff (and nothing else), headers, bounded concurrency, the samples
 * file reader, and end to end against an in-process aggregator (filesystem bucket) plus the
 * `strata push` command.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Server, ServerCredentials, status, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import fc from 'fast-check';
import t from 'tap';
import { BlockReader } from '../../src/block/reader.js';
import { bucketSource } from '../../src/block/source.js';
import { isRetryable, orderingDependencies, WriterClient, type SeriesData, type WriteCallError } from '../../src/client/writer.js';
import { groupRecords, readSampleFile } from '../../src/client/writer-samples.js';
import { createLogger } from '../../src/common/logger.js';
import { blockKey } from '../../src/format/key.js';
import { FilesystemBucket } from '../../src/objstore/fs.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import { writerServiceDefinition } from '../../src/api/services.js';
import { startAggregatorServer } from '../../src/shard-aggregator/server.js';
import { tempDir } from '../support/aggregator.js';

const H = 4 * 3600 * 1000;
const W = (BigInt(Date.now() - 24 * 3600 * 1000) / BigInt(H)) * BigInt(H);

function series(id: bigint, n: number, start = W): SeriesData {
  const ts = new BigInt64Array(n);
  const vs = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    ts[i] = start + BigInt(i) * 1000n;
    vs[i] = Number(id) + i / 4;
  }
  return { id, timestamps: ts, values: vs };
}

t.test('batches() groups by shard, sorts by id, splits long series exactly, bounds samples and series', (t) => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.bigInt({ min: 0n, max: 50n }), fc.integer({ min: 0, max: 30 })), { maxLength: 20 }), fc.integer({ min: 1, max: 25 }), fc.integer({ min: 1, max: 6 }), (specs, max, maxSeries) => {
      const c = new WriterClient({ tenant: 't', numShards: 3, target: '127.0.0.1:1', maxBatchSamples: max, maxBatchSeries: maxSeries });
      const input = new Map<bigint, SeriesData>();
      for (const [id, n] of specs) input.set(id, series(id, n));
      const batches = c.batches(input.values());
      const rebuilt = new Map<bigint, bigint[]>();
      for (const b of batches) {
        if (b.samples > max || b.series.length > maxSeries || b.samples !== b.series.reduce((n, s) => n + s.timestamps.length, 0)) return false;
        for (const s of b.series) {
          if (Number(s.id % 3n) !== b.shard) return false;
          rebuilt.set(s.id, [...(rebuilt.get(s.id) ?? []), ...s.timestamps]);
        }
      }
      for (const [id, s] of input) if (JSON.stringify((rebuilt.get(id) ?? []).map(String)) !== JSON.stringify([...s.timestamps].map(String))) return false;
      return true;
    }),
  );
  t.end();
});

t.test('orderingDependencies(): however the requests interleave within them, a repeated (series, timestamp) keeps the value last in the input', (t) => {
  fc.assert(
    fc.property(
      // entries (id, timestamps drawn from a few values so that they repeat, in any order)
      fc.array(fc.tuple(fc.bigInt({ min: 0n, max: 5n }), fc.array(fc.integer({ min: 0, max: 12 }), { minLength: 1, maxLength: 15 })), { maxLength: 12 }),
      fc.integer({ min: 1, max: 10 }),
      fc.integer({ min: 1, max: 4 }),
      (specs, max, maxSeries) => {
        const c = new WriterClient({ tenant: 't', numShards: 2, target: '127.0.0.1:1', maxBatchSamples: max, maxBatchSeries: maxSeries });
        let v = 0;
        const input: SeriesData[] = specs.map(([id, tss]) => ({ id, timestamps: BigInt64Array.from(tss.map(BigInt)), values: Float64Array.from(tss.map(() => v++)) }));
        const want = new Map<string, number>();
        for (const s of input) s.timestamps.forEach((ts, k) => want.set(`${s.id}/${ts}`, s.values[k]!));
        const batches = c.batches(input);
        const after = orderingDependencies(batches);
        // the most adversarial order the dependencies allow: always the latest request that may go
        const doneSet = new Set<number>();
        const got = new Map<string, number>();
        while (doneSet.size < batches.length) {
          let pick = -1;
          for (let i = batches.length - 1; i >= 0; i--) {
            if (!doneSet.has(i) && after[i]!.every((j) => doneSet.has(j))) {
              pick = i;
              break;
            }
          }
          if (pick < 0) return false; // a cycle
          doneSet.add(pick);
          for (const s of batches[pick]!.series) s.timestamps.forEach((ts, k) => got.set(`${s.id}/${ts}`, s.values[k]!));
        }
        return JSON.stringify([...got].sort()) === JSON.stringify([...want].sort());
      },
    ),
  );
  // series in time order, cut across requests: nothing waits
  const c = new WriterClient({ tenant: 't', numShards: 1, target: '127.0.0.1:1', maxBatchSamples: 100 });
  t.same(orderingDependencies(c.batches([series(1n, 450), series(2n, 250)])), [[], [], [], [], [], [], []]);
  t.end();
});

t.test('isRetryable(): UNAVAILABLE, RESOURCE_EXHAUSTED and a stream cut without a status; nothing else', (t) => {
  t.equal(isRetryable({ code: status.UNAVAILABLE, details: 'x' }), true);
  t.equal(isRetryable({ code: status.RESOURCE_EXHAUSTED, details: 'x' }), true);
  t.equal(isRetryable({ code: status.INTERNAL, details: 'Received RST_STREAM with code 0 (Call ended without gRPC status)' }), true, 'a stream cut by a stopping pod');
  t.equal(isRetryable({ code: status.INTERNAL, details: 'something broke' }), false);
  t.equal(isRetryable({ code: status.INVALID_ARGUMENT, details: 'Received RST_STREAM' }), false);
  t.equal(isRetryable(new Error('no code')), false);
  t.end();
});

t.test('groupRecords() and readSampleFile() regroup 24-byte records bit-exactly in bounded chunks', async (t) => {
  const recs = [
    [2n, 10n, 0x7ff0000000000002n],
    [1n, 10n, 0x8000000000000000n],
    [2n, 20n, 0x3ff0000000000000n],
    [(1n << 64n) - 1n, 30n, 0x7ff8dead00000001n],
  ] as const;
  const buf = Buffer.alloc(24 * recs.length);
  recs.forEach(([id, ts, bits], i) => {
    buf.writeBigUInt64LE(id, 24 * i);
    buf.writeBigInt64LE(ts, 24 * i + 8);
    buf.writeBigUInt64LE(bits, 24 * i + 16);
  });
  const bitsOf = (s: SeriesData) => [...new BigUint64Array(s.values.buffer, s.values.byteOffset, s.values.length)];
  const g = groupRecords(buf);
  t.same(g.map((s) => [s.id, [...s.timestamps], bitsOf(s)]), [
    [1n, [10n], [0x8000000000000000n]],
    [2n, [10n, 20n], [0x7ff0000000000002n, 0x3ff0000000000000n]],
    [(1n << 64n) - 1n, [30n], [0x7ff8dead00000001n]],
  ]);
  const file = join(tempDir('samples'), 's.bin');
  writeFileSync(file, buf);
  const chunks = [];
  for await (const c of readSampleFile(file, 3)) chunks.push(c.map((s) => [s.id, s.timestamps.length]));
  t.same(chunks, [[[1n, 1], [2n, 2]], [[(1n << 64n) - 1n, 1]]], 'chunks of 3 records');
  // at most 1 series at a time: a chunk ends before the record of its second series, and series
  // come back in several chunks when their records are apart in the file
  const bySeries = [];
  for await (const c of readSampleFile(file, 100, 1)) bySeries.push(c.map((s) => [s.id, [...s.timestamps], bitsOf(s)]));
  t.same(
    bySeries,
    [[[2n, [10n], [0x7ff0000000000002n]]], [[1n, [10n], [0x8000000000000000n]]], [[2n, [20n], [0x3ff0000000000000n]]], [[(1n << 64n) - 1n, [30n], [0x7ff8dead00000001n]]]],
    'chunks of 1 series',
  );
  const two = [];
  for await (const c of readSampleFile(file, 100, 2)) two.push(c.map((s) => [s.id, s.timestamps.length]));
  t.same(two, [[[1n, 1], [2n, 2]], [[(1n << 64n) - 1n, 1]]], 'chunks of 2 series');
  writeFileSync(file, buf.subarray(0, 25));
  await t.rejects(async () => {
    for await (const _ of readSampleFile(file)) void _;
  }, /not a multiple of 24/);
});

t.test('the client retries UNAVAILABLE and RESOURCE_EXHAUSTED only, sets headers, bounds concurrency', async (t) => {
  const failures = [status.UNAVAILABLE, status.RESOURCE_EXHAUSTED, status.UNAVAILABLE];
  const seen: { tenant: string; shard: string; auth: string }[] = [];
  let inflight = 0;
  let maxInflight = 0;
  let calls = 0;
  const server = new Server();
  server.addService(writerServiceDefinition(), {
    Write(call: ServerUnaryCall<{ series: unknown[] }, unknown>, cb: sendUnaryData<unknown>) {
      calls++;
      seen.push({ tenant: String(call.metadata.get('x-strata-tenant')[0]), shard: String(call.metadata.get('x-strata-shard')[0]), auth: String(call.metadata.get('authorization')[0]) });
      inflight++;
      maxInflight = Math.max(maxInflight, inflight);
      setImmediate(() => {
        inflight--;
        const code = failures.shift();
        if (code !== undefined) cb({ code, details: 'try again' });
        else if (call.metadata.get('x-strata-shard')[0] === '3') cb({ code: status.INVALID_ARGUMENT, details: 'bad' });
        else cb(null, { samples: '1', series: 1 });
      });
    },
    Seal(_call: unknown, cb: sendUnaryData<unknown>) {
      cb(null, { blocks: [] });
    },
    Status(_call: unknown, cb: sendUnaryData<unknown>) {
      cb(null, {});
    },
  });
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  t.teardown(() => server.forceShutdown());
  const c = new WriterClient({ tenant: 'acme', numShards: 4, target: `127.0.0.1:${port}`, authToken: 'sekret', concurrency: 2, maxBatchSamples: 10, retry: { baseDelayMs: 1, maxDelayMs: 5 } });
  t.teardown(() => c.close());
  const r = await c.write([series(0n, 25), series(4n, 5), series(1n, 3)]);
  t.equal(r.retries, 3, 'three failed attempts were retried');
  t.equal(r.samples, 33);
  t.equal(r.requests, 4, 'shard 0: 30 samples in 3 requests; shard 1: 1 request');
  t.equal(calls, 7);
  t.ok(maxInflight <= 2, `at most 2 requests in flight (saw ${maxInflight})`);
  t.ok(seen.every((s) => s.tenant === 'acme' && s.auth === 'Bearer sekret'), 'tenant and token headers');
  t.same([...new Set(seen.map((s) => s.shard))].sort(), ['0', '1']);
  const before = calls;
  await t.rejects(c.write([series(3n, 1)]), { code: status.INVALID_ARGUMENT }, 'INVALID_ARGUMENT is not retried');
  t.equal(calls, before + 1);
});

t.test('end to end: client and `strata push` against an in-process aggregator', async (t) => {
  const dir = tempDir('writer-e2e');
  const config = parseAggregatorConfig({
    walDir: join(dir, 'wal'),
    bucket: { type: 'filesystem', path: join(dir, 'bucket') },
    numShards: 2,
    grpcListen: '127.0.0.1:0',
    metricsListen: '127.0.0.1:0',
    flushIdleMs: 3600_000,
  });
  const running = await startAggregatorServer({ config, logger: createLogger({ level: 'silent' }) });
  t.teardown(() => running.shutdown());
  t.equal(running.health.get(''), 'NOT_SERVING', 'not serving while the WAL is recovered');
  await running.ready;
  t.equal(running.health.get(''), 'SERVING');
  const c = new WriterClient({ tenant: 'e2e', numShards: 2, target: `127.0.0.1:${running.grpcPort}` });
  t.teardown(() => c.close());
  const input = [1n, 2n, 3n, 4n, 5n].map((id) => series(id, 300));
  const r = await c.write(input);
  t.same(r, { requests: 2, samples: 1500, series: 5, retries: 0 });
  const blocks = await c.seal(W);
  t.same(blocks.map((b) => [b.shard, b.series, b.samples, b.key]), [
    [0, 2, 600, blockKey('e2e', 0, W)],
    [1, 3, 900, blockKey('e2e', 1, W)],
  ]);
  const bucket = new FilesystemBucket({ path: join(dir, 'bucket') });
  const reader = await BlockReader.open(bucketSource(bucket, blockKey('e2e', 1, W)));
  const s5 = await reader.readSeries(5n);
  t.same(Buffer.from(s5!.values.buffer, s5!.values.byteOffset, s5!.values.byteLength), Buffer.from(input[4]!.values.buffer), 'series 5 exact');

  // strata push of a samples file, with --seal
  const recs = Buffer.alloc(24 * 100);
  for (let i = 0; i < 100; i++) {
    recs.writeBigUInt64LE(BigInt(10 + (i % 4)), 24 * i);
    recs.writeBigInt64LE(W + BigInt(Math.floor(i / 4)) * 1000n, 24 * i + 8);
    recs.writeDoubleLE(i, 24 * i + 16);
  }
  const file = join(dir, 'samples.bin');
  writeFileSync(file, recs);
  const root = join(import.meta.dirname, '..', '..');
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', join(root, 'src', 'cli', 'main.ts'), 'push', file, '--tenant', 'pushed', '--num-shards', '2', '--target', `127.0.0.1:${running.grpcPort}`, '--chunk-samples', '30', '--seal'],
    { cwd: root },
  );
  const out = JSON.parse(stdout) as { samples: number; requests: number; windows: string[]; blocks: { key: string; samples: number }[] };
  t.equal(out.samples, 100);
  t.same(out.windows, [String(W)]);
  t.same(out.blocks.map((b) => [b.key, b.samples]), [
    [blockKey('pushed', 0, W), 50],
    [blockKey('pushed', 1, W), 50],
  ]);

  // a corrected value repeated right after the old one, across each cut between requests sent 8
  // at a time: the value later in the input wins (before the fix, the one committed last did)
  const dup = new WriterClient({ tenant: 'dups', numShards: 2, target: `127.0.0.1:${running.grpcPort}`, maxBatchSamples: 100, concurrency: 8 });
  t.teardown(() => dup.close());
  const dupIds = [1n, 3n, 5n, 7n, 9n];
  for (const id of dupIds) {
    const s = series(id, 1010);
    for (let b = 1; b <= 9; b++) {
      s.timestamps[b * 100 - 1] = W + 2_000_000n + BigInt(b);
      s.values[b * 100 - 1] = -1;
      s.timestamps[b * 100] = W + 2_000_000n + BigInt(b);
    }
    await dup.write([s]);
  }
  await dup.seal(W);
  const dupReader = await BlockReader.open(bucketSource(bucket, blockKey('dups', 1, W)));
  let earlier = 0;
  for (const id of dupIds) for (const v of (await dupReader.readSeries(id))!.values) if (v === -1) earlier++;
  t.equal(earlier, 0, 'no repeated timestamp keeps the earlier value');

  // a refusal names its ERR_STRATA_* code: a client that thinks there are 3 shards sends shard 2
  const wrong = new WriterClient({ tenant: 'e2e', numShards: 3, target: `127.0.0.1:${running.grpcPort}`, retry: { maxAttempts: 1 } });
  t.teardown(() => wrong.close());
  const refused = (await wrong.write([series(2n, 1)]).then(
    () => null,
    (e: unknown) => e,
  )) as WriteCallError | null;
  t.equal(refused?.code, status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
  t.equal(refused?.strataCode, 'ERR_STRATA_INVALID_ARGUMENT', 'with its code from the strata-error-code trailer');
  t.equal(refused?.details, 'invalid x-strata-shard: "2" is not a shard number in 0..1');
  await running.shutdown();
  t.equal(running.health.get(''), 'NOT_SERVING', 'not serving after shutdown');
});
