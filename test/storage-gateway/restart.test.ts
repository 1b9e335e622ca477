/**
 * `strata gateway` as a child process, the way it runs in production: config from a file, health
 * and /metrics, graceful SIGTERM, and an LMDB cache that survives the restart (the restarted
 * gateway answers from it without a single GET).
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/storage-gateway/restart.test.ts
 */
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { credentials } from '@grpc/grpc-js';
import { QueryClient } from '../../src/client/query.js';
import { loadProto } from '../../src/api/proto.js';
import { openBucket } from '../../src/objstore/index.js';
import { D, expected, makeDataSet, mismatches, rgwBucket, tempDir, W0, writeDataSet } from '../support/gateway.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Child {
  readonly proc: ChildProcess;
  readonly grpcPort: number;
  readonly metricsPort: number;
  readonly logs: Record<string, unknown>[];
  /** Sends SIGTERM and resolves with the exit code. */
  stop(): Promise<number | null>;
}

async function startChild(t: Test, configFile: string): Promise<Child> {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'main.ts'), 'gateway', '--config', configFile], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  const logs: Record<string, unknown>[] = [];
  const listening = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const rl = createInterface({ input: proc.stdout! });
    rl.on('line', (line) => {
      const rec = JSON.parse(line) as Record<string, unknown>;
      logs.push(rec);
      if (rec['msg'] === 'gateway listening') resolve(rec);
    });
    void exited.then((code) => reject(new Error(`gateway exited with ${code} before listening`)));
  });
  return {
    proc,
    grpcPort: listening['grpcPort'] as number,
    metricsPort: listening['metricsPort'] as number,
    logs,
    stop: () => {
      proc.kill('SIGTERM');
      return exited;
    },
  };
}

/** Sum of a metric over its label sets, from a /metrics scrape (label filter by substring). */
async function scrape(port: number, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z0-9_:]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name && (m[2] ?? '').includes(labels)) sum += Number(m[3]);
  }
  return sum;
}

async function healthOf(port: number): Promise<string> {
  type HealthClient = { Check(req: { service: string }, cb: (err: Error | null, res: { status: string }) => void): void; close(): void };
  const pkg = loadProto('health.proto') as unknown as { grpc: { health: { v1: { Health: new (a: string, c: unknown) => HealthClient } } } };
  const c = new pkg.grpc.health.v1.Health(`127.0.0.1:${port}`, credentials.createInsecure());
  try {
    return await new Promise((resolve, reject) => c.Check({ service: 'strata.read.v1.Read' }, (err, res) => (err ? reject(err) : resolve(res.status))));
  } finally {
    c.close();
  }
}

t.test('the LMDB cache survives a restart of `strata gateway`', async (t) => {
  const bucketConfig = await rgwBucket(t);
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  const ds = makeDataSet({ seed: 5, n: 50, numShards: 4, windows: 2 });
  const written = await writeDataSet(bucket, ds);
  const dir = tempDir(t, 'restart');
  const configFile = join(dir, 'gateway.json');
  writeFileSync(
    configFile,
    JSON.stringify({ bucket: bucketConfig, cacheDir: join(dir, 'cache'), grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', stalenessMs: 600_000, logLevel: 'info' }),
  );
  const ids = ds.series.map((s) => s.id);
  const want = expected(ds, ids, W0, W0 + 2n * D);

  const first = await startChild(t, configFile);
  t.equal(await healthOf(first.grpcPort), 'SERVING');
  const c1 = new QueryClient({ futureHorizonMs: null, endpoints: [`127.0.0.1:${first.grpcPort}`], numShards: ds.numShards });
  const r1 = await c1.query(ds.tenant, ids, { start: W0, end: W0 + 2n * D });
  c1.close();
  t.same(mismatches(r1.series, want), [], 'exact before the restart');
  const coldGets = await scrape(first.metricsPort, 'strata_gateway_s3_gets_total');
  t.ok(coldGets >= written.size && coldGets <= 3 * written.size, `${coldGets} GETs for ${written.size} blocks`);
  const metricsText = await (await fetch(`http://127.0.0.1:${first.metricsPort}/metrics`)).text();
  for (const name of [
    'strata_gateway_request_duration_seconds',
    'strata_gateway_samples_served_total',
    'strata_gateway_cache_hits_total',
    'strata_gateway_cache_misses_total',
    'strata_gateway_cache_bytes',
    'strata_gateway_cache_evictions_total',
    'strata_gateway_s3_get_bytes_total',
    'strata_gateway_s3_get_errors_total',
    'strata_gateway_coalesced_ranges_total',
    'strata_gateway_single_flight_joins_total',
    'process_cpu_seconds_total',
  ]) {
    t.match(metricsText, new RegExp(`^# TYPE ${name} `, 'm'), `/metrics has ${name}`);
  }
  t.ok((await scrape(first.metricsPort, 'strata_gateway_samples_served_total')) > 0);
  t.ok((await scrape(first.metricsPort, 'strata_gateway_cache_bytes')) > 0);
  t.equal(await first.stop(), 0, 'SIGTERM: clean exit');
  t.ok(first.logs.some((l) => l['msg'] === 'gateway stopped'), 'drained and stopped');

  const second = await startChild(t, configFile);
  const c2 = new QueryClient({ futureHorizonMs: null, endpoints: [`127.0.0.1:${second.grpcPort}`], numShards: ds.numShards });
  const r2 = await c2.query(ds.tenant, ids, { start: W0, end: W0 + 2n * D });
  c2.close();
  t.same(mismatches(r2.series, want), [], 'exact after the restart');
  // the data's day is closed: each (day, shard) read looks for its day block first, and "no day
  // block" is remembered in memory only, so the one GET per (day, shard) after a restart is that
  // look-up (a 404); every block itself came from the LMDB cache. The bucket has no day-block
  // index (no lifecycle pass wrote one): its one load is a 404 too, in the background
  const gets = (await scrape(second.metricsPort, 'strata_gateway_s3_gets_total', 'kind="suffix"')) + (await scrape(second.metricsPort, 'strata_gateway_s3_gets_total', 'kind="range"'));
  t.equal(gets, ds.numShards, 'one GET per (day, shard): the day block look-up');
  t.equal(await scrape(second.metricsPort, 'strata_gateway_s3_gets_total', 'kind="day_index"'), 1, "one load of the bucket's day-block index");
  t.equal(await scrape(second.metricsPort, 'strata_gateway_s3_get_errors_total', 'code="ERR_STRATA_NOT_FOUND"'), gets, 'each of them a 404: no block was read from the bucket');
  t.equal(await scrape(second.metricsPort, 'strata_gateway_cache_hits_total', 'layer="tail"'), written.size, 'every block opened from its cached tail');
  t.equal(await second.stop(), 0);
});
