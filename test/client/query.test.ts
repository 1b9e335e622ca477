/**
 * The query client against real gateways on loopback (blocks in Ceph RGW): a static list of two
 * gateways (each block always served by the same one), one retry on UNAVAILABLE (to the next
 * gateway), cancellation, and `strata query` output with exact values.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/client/query.test.ts
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Metadata, Server, ServerCredentials, status, type ServerWritableStream } from '@grpc/grpc-js';
import { QueryClient, QueryError } from '../../src/client/query.js';
import { rankEndpoints } from '../../src/client/query-plan.js';
import { blockRoutingKey } from '../../src/api/headers.js';
import { DAY_MS, dayStartOf } from '../../src/format/day-key.js';
import { encodeReadResponse } from '../../src/api/read-codec.js';
import { openBucket } from '../../src/objstore/index.js';
import { readServiceDefinition } from '../../src/api/services.js';
import { D, expected, makeDataSet, mismatches, rgwBucket, rgwBucketWith, startTestGateway, STALE_NAN_BITS, tempDir, testConfig, W0, writeBlock, writeDataSet, dataSetClock } from '../support/gateway.js';
import { makeSeries } from '../support/series.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * A Read server that fails the first `failures` calls with UNAVAILABLE (or `refusal`: a status and
 * a `grpc-retry-pushback-ms` trailer), then answers one sample of series 1.
 */
async function flakyServer(t: Test, failures: number, refusal?: { code: status; pushback?: string }): Promise<{ port: number; calls: () => number }> {
  let calls = 0;
  const server = new Server();
  server.addService(readServiceDefinition(), {
    Read(call: ServerWritableStream<unknown, unknown>) {
      calls++;
      if (calls <= failures) {
        const metadata = new Metadata();
        if (refusal?.pushback !== undefined) metadata.set('grpc-retry-pushback-ms', refusal.pushback);
        call.emit('error', { code: refusal?.code ?? status.UNAVAILABLE, details: refusal ? 'budget in use' : 'draining', metadata });
        return;
      }
      const ts = Buffer.alloc(8);
      ts.writeBigInt64LE(W0 + 5n);
      const vs = Buffer.alloc(8);
      vs.writeDoubleLE(1.5);
      const ids = Buffer.alloc(8);
      ids.writeBigUInt64LE(1n);
      const counts = Buffer.alloc(4);
      counts.writeUInt32LE(1);
      call.write(encodeReadResponse({ blockId: 'f'.repeat(32), seriesIds: [ids], sampleCounts: [counts], timestamps: [ts], values: [vs] }));
      call.end();
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  t.teardown(() => new Promise<void>((r) => server.tryShutdown(() => r())));
  return { port, calls: () => calls };
}

t.test('a static list of gateways: each block always goes to the same gateway', async (t) => {
  const ds = makeDataSet({ seed: 11, n: 40, numShards: 8, windows: 2 });
  const bucketConfig = await rgwBucketWith(t, ds);
  const a = await startTestGateway(t, testConfig(bucketConfig, tempDir(t)));
  const b = await startTestGateway(t, testConfig(bucketConfig, tempDir(t)));
  const endpoints = [`127.0.0.1:${a.grpcPort}`, `127.0.0.1:${b.grpcPort}`];
  const client = new QueryClient({ endpoints, numShards: 8, encoding: 'raw', now: dataSetClock() });
  t.teardown(() => client.close());
  const ids = ds.series.map((s) => s.id);
  const r1 = await client.query(ds.tenant, ids, { start: W0, end: W0 + 2n * D });
  t.same(mismatches(r1.series, expected(ds, ids, W0, W0 + 2n * D)), [], 'exact');
  const reqA = await a.metrics.total('strata_gateway_requests_total');
  const reqB = await b.metrics.total('strata_gateway_requests_total');
  t.equal(reqA + reqB, 8, 'one request per shard: both windows are in one closed day (a day request)');
  // each day request to the gateway its routing key ranks first (the split depends on the ports:
  // all 8 on one gateway happens, one run in 128)
  const toA = Array.from({ length: 8 }, (_, shard) => rankEndpoints(blockRoutingKey(ds.tenant, shard, dayStartOf(W0), DAY_MS), endpoints)[0]).filter((e) => e === endpoints[0]).length;
  t.same([reqA, reqB], [toA, 8 - toA], `split ${reqA}/${reqB}, as the routing keys rank the gateways`);
  const getsBefore = (await a.metrics.total('strata_gateway_s3_gets_total')) + (await b.metrics.total('strata_gateway_s3_gets_total'));
  const r2 = await client.query(ds.tenant, ids, { start: W0, end: W0 + 2n * D });
  t.same(mismatches(r2.series, expected(ds, ids, W0, W0 + 2n * D)), []);
  t.equal(await a.metrics.total('strata_gateway_requests_total'), 2 * reqA, 'the same blocks went to gateway A again');
  const getsAfter = (await a.metrics.total('strata_gateway_s3_gets_total')) + (await b.metrics.total('strata_gateway_s3_gets_total'));
  t.equal(getsAfter - getsBefore, 0, 'so every cache was warm: no GET');
});

t.test('maxSamplesPerQuery bounds what the runs of an answer may claim: RESOURCE_EXHAUSTED naming it, before the arrays are made', async (t) => {
  const ds = makeDataSet({ seed: 12, n: 10, numShards: 1, windows: 2 });
  const bucketConfig = await rgwBucketWith(t, ds);
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t)), { now: dataSetClock() });
  const ids = ds.series.map((s) => s.id);
  const want = expected(ds, ids, W0, W0 + 2n * D);
  const total = want.reduce((n, s) => n + s.samples.timestamps.length, 0);
  t.throws(() => new QueryClient({ endpoints: ['127.0.0.1:1'], numShards: 1, maxSamplesPerQuery: 0 }), /maxSamplesPerQuery/, 'a bound of 0 is refused');
  for (const [bound, ok] of [[total, true], [total - 1, false]] as const) {
    const c = new QueryClient({ endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: 1, encoding: 'runs', now: dataSetClock(), maxSamplesPerQuery: bound });
    t.teardown(() => c.close());
    const q = c.query(ds.tenant, ids, { start: W0, end: W0 + 2n * D });
    if (ok) t.same(mismatches((await q).series, want), [], `at the bound (${bound}): exact`);
    else await t.rejects(q, { name: 'QueryError', code: status.RESOURCE_EXHAUSTED, message: new RegExp(`claim ${total} samples, over the client's maxSamplesPerQuery \\(${bound}\\)`) }, 'one sample less: refused');
  }
});

t.test('one retry on UNAVAILABLE, to the next gateway of the list', async (t) => {
  const once = await flakyServer(t, 1);
  const c1 = new QueryClient({ endpoints: [`127.0.0.1:${once.port}`], numShards: 1, encoding: 'raw', now: dataSetClock() });
  t.teardown(() => c1.close());
  const r = await c1.query('acme', [1n], { start: W0, end: W0 + D });
  t.equal(r.retries, 1);
  t.equal(once.calls(), 2);
  t.same([...r.series[0]!.timestamps], [W0 + 5n]);
  t.same([...r.series[0]!.values], [1.5]);

  const always = await flakyServer(t, 1000);
  const c2 = new QueryClient({ endpoints: [`127.0.0.1:${always.port}`], numShards: 1, encoding: 'raw', now: dataSetClock() });
  t.teardown(() => c2.close());
  const err = await c2.query('acme', [1n], { start: W0, end: W0 + D }).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof QueryError && err.code === status.UNAVAILABLE && /acme\/0\//.test(err.message), 'UNAVAILABLE after one retry, naming the block');
  t.equal(always.calls(), 2, 'exactly one retry');

  const good = await flakyServer(t, 0);
  const c3 = new QueryClient({ endpoints: [`127.0.0.1:${always.port}`, `127.0.0.1:${good.port}`], numShards: 1, encoding: 'raw', now: dataSetClock() });
  t.teardown(() => c3.close());
  // find a window whose first choice is the failing server
  let found = false;
  for (let w = 0n; w < 50n && !found; w++) {
    const before = always.calls();
    const res = await c3.query('acme', [1n], { start: W0 + w * D, end: W0 + w * D + 1n });
    if (always.calls() > before) {
      found = true;
      t.equal(res.retries, 1, 'retried on the other gateway');
      t.equal(good.calls() > 0, true);
    }
  }
  t.ok(found);

  const ac = new AbortController();
  ac.abort(new Error('caller gave up'));
  await t.rejects(c3.query('acme', [1n], { start: W0, end: W0 + D }, { signal: ac.signal }), /caller gave up/);
});

t.test('a refusal with a retry pushback is retried after it; one without, or past the deadline, is not', async (t) => {
  const query = async (port: number, opts: { deadlineMs?: number; maxPushbackRetries?: number } = {}) => {
    const c = new QueryClient({ endpoints: [`127.0.0.1:${port}`], numShards: 1, encoding: 'raw', now: dataSetClock(), ...opts });
    t.teardown(() => c.close());
    const t0 = performance.now();
    const r = await c.query('acme', [1n], { start: W0, end: W0 + D }).then(
      (v) => v,
      (e: unknown) => e as QueryError,
    );
    return { r, ms: performance.now() - t0 };
  };
  const three = await flakyServer(t, 3, { code: status.RESOURCE_EXHAUSTED, pushback: '40' });
  const ok = await query(three.port);
  t.ok(!(ok.r instanceof Error) && ok.r.retries === 3, 'three refusals, three retries');
  t.equal(three.calls(), 4);
  t.ok(ok.ms >= 3 * 40, `each retry waited at least the pushback (${ok.ms.toFixed(0)} ms in all)`);

  for (const [name, refusal, opts] of [
    ['no pushback', { code: status.RESOURCE_EXHAUSTED }, {}],
    ['a malformed pushback', { code: status.RESOURCE_EXHAUSTED, pushback: '-5' }, {}],
    ['a pushback past the deadline', { code: status.RESOURCE_EXHAUSTED, pushback: '60000' }, { deadlineMs: 5000 }],
    ['a pushback on a status not retried', { code: status.INVALID_ARGUMENT, pushback: '10' }, {}],
    ['maxPushbackRetries 0', { code: status.RESOURCE_EXHAUSTED, pushback: '10' }, { maxPushbackRetries: 0 }],
  ] as const) {
    const srv = await flakyServer(t, 1000, refusal);
    const got = await query(srv.port, opts);
    t.ok(got.r instanceof QueryError && got.r.code === refusal.code, `${name}: the refusal is the error`);
    t.equal(srv.calls(), 1, `${name}: not retried`);
  }
  const always = await flakyServer(t, 1000, { code: status.RESOURCE_EXHAUSTED, pushback: '1' });
  const capped = await query(always.port, { maxPushbackRetries: 4 });
  t.ok(capped.r instanceof QueryError && capped.r.code === status.RESOURCE_EXHAUSTED, 'refused every time: RESOURCE_EXHAUSTED in the end');
  t.equal(always.calls(), 5, 'after maxPushbackRetries retries');
});

t.test('strata query prints exact samples as text and JSON lines', async (t) => {
  const bucketConfig = await rgwBucket(t);
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  const s = makeSeries('gauge', 4, W0, 1);
  new BigUint64Array(s.values.buffer)[1] = STALE_NAN_BITS;
  s.values[2] = -0;
  s.values[3] = Infinity;
  await writeBlock(bucket, 'acme', 1, 2, W0, [{ id: 7n, samples: s }]);
  const gw = await startTestGateway(t, testConfig(bucketConfig, tempDir(t)));
  const run = (...args: string[]) =>
    promisify(execFile)(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'main.ts'), 'query', '--endpoint', `127.0.0.1:${gw.grpcPort}`, '--tenant', 'acme', '--num-shards', '2', ...args], { cwd: root });
  const text = await run('--series', '7,9', '--start', new Date(Number(W0)).toISOString(), '--end', String(W0 + D));
  t.equal(
    text.stdout,
    [`7\t${s.timestamps[0]}\t${s.values[0]}`, `7\t${s.timestamps[1]}\tNaN(0x7ff0000000000002)`, `7\t${s.timestamps[2]}\t-0`, `7\t${s.timestamps[3]}\tInfinity`, ''].join('\n'),
  );
  const json = await run('--series', '7', '--start', String(W0), '--end', String(W0 + D), '--json', '--encoding', 'raw');
  const lines = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as { series: string; t: string; v: unknown; bits: string });
  const bits = [...new BigUint64Array(s.values.buffer, s.values.byteOffset, s.values.length)].map((b) => b.toString(16).padStart(16, '0'));
  t.same(lines.map((l) => l.bits), bits, 'exact value bits');
  t.same(bits.slice(1), ['7ff0000000000002', '8000000000000000', '7ff0000000000000']);
  t.same(lines.map((l) => l.v).slice(1), ['NaN(0x7ff0000000000002)', '-0', 'Infinity']);
  t.equal(lines[0]!.series, '7');
  t.equal(lines[0]!.v, s.values[0]);
  const bad = await run('--series', 'x', '--start', '0', '--end', '1').then(
    () => null,
    (e: { code: number; stderr: string }) => e,
  );
  t.not(bad?.code, 0);
  t.match(bad?.stderr, /series/);
  const refused = (...args: string[]) =>
    run('--series', '7', '--start', String(W0), '--end', String(W0 + 7n * D), ...args).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
  const tooMany = await refused('--max-blocks-per-query', '1');
  t.equal(tooMany?.code, 2, 'more block requests than --max-blocks-per-query: refused at once');
  t.match(tooMany?.stderr, /block requests, more than 1 \(the query client's maxBlocksPerQuery\)/);
  t.match((await refused('--future-horizon-ms', '-5'))?.stderr, /future-horizon-ms: "-5" is not an integer >= 0/);
});
