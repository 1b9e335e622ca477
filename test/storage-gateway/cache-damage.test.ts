/**
 * `strata gateway` whose LMDB cache file was damaged while it was down (the black-box reports:
 * both meta pages overwritten, the file truncated, bytes flipped through the pages). It used to
 * die with SIGSEGV or SIGBUS at start-up or at the first read, at every restart; now it logs
 * `cache reset` naming the file and the damage, starts with an empty cache, answers bit for bit
 * from the bucket, and caches again. The gateway runs as a child process, so a crash is a failed
 * start or a failed read here, not a hung test. A healthy cache survives SIGKILL (the restart
 * walks the file and keeps it) and a clean stop (which leaves the stamp that spares the walk).
 *
 * Run alone: node scripts/with-rgw.mjs -- npx tap test/storage-gateway/cache-damage.test.ts
 */
import t, { type Test } from 'tap';
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { QueryClient } from '../../src/client/query.js';
import { openBucket } from '../../src/objstore/index.js';
import { CLEAN_CLOSE_FILE, DATA_FILE } from '../../src/storage-gateway/cache/lmdb-integrity.js';
import { D, expected, makeDataSet, mismatches, rgwBucket, tempDir, W0, writeDataSet, type DataSet, type SeriesData } from '../support/gateway.js';
import { startServiceProcess, type ServiceProcess } from '../support/service-process.js';

const PAGE = 4096;

interface Setup {
  readonly ds: DataSet;
  /** Blocks in the bucket. */
  readonly blocks: number;
  readonly configFile: string;
  readonly cacheDir: string;
  readonly want: SeriesData[];
}

/** A bucket holding a data set, and the config of a gateway over it with its cache in a fresh directory. */
async function setup(t: Test, seed: number): Promise<Setup> {
  const bucketConfig = await rgwBucket(t);
  const bucket = await openBucket(bucketConfig);
  t.teardown(() => bucket.close());
  const ds = makeDataSet({ seed, n: 120, numShards: 4, windows: 3 });
  const written = await writeDataSet(bucket, ds);
  const dir = tempDir(t, 'cache-damage-gw');
  const cacheDir = join(dir, 'cache');
  const configFile = join(dir, 'gateway.json');
  writeFileSync(configFile, JSON.stringify({ bucket: bucketConfig, cacheDir, grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', stalenessMs: 600_000, logLevel: 'info' }));
  const want = expected(ds, ds.series.map((s) => s.id), W0, W0 + 3n * D);
  return { ds, blocks: written.size, configFile, cacheDir, want };
}

/** Starts `strata gateway` on the setup's config; a gateway that dies before serving fails the start. */
function startGateway(t: Test, s: Setup): Promise<ServiceProcess> {
  return startServiceProcess(t, ['gateway', '--config', s.configFile]);
}

/** Queries every series over every window and checks the answer bit for bit, and that the gateway lived through it. */
async function readAll(t: Test, gw: ServiceProcess, s: Setup, what: string): Promise<void> {
  const client = new QueryClient({ endpoints: [`127.0.0.1:${gw.grpcPort}`], numShards: s.ds.numShards });
  try {
    const r = await client.query(s.ds.tenant, s.want.map((w) => w.id), { start: W0, end: W0 + 3n * D });
    t.same(mismatches(r.series, s.want), [], `${what}: every series bit for bit`);
  } finally {
    client.close();
  }
  t.same({ code: gw.proc.exitCode, signal: gw.proc.signalCode }, { code: null, signal: null }, `${what}: the gateway is alive`);
}

/** Sum of a metric over its label sets whose labels contain `labels`, from a /metrics scrape. */
async function scrape(gw: ServiceProcess, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${gw.metricsPort}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z0-9_:]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name && (m[2] ?? '').includes(labels)) sum += Number(m[3]);
  }
  return sum;
}

async function stop(gw: ServiceProcess, signal: 'SIGTERM' | 'SIGKILL'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  gw.proc.kill(signal);
  return gw.exited;
}

function resets(gw: ServiceProcess): Record<string, unknown>[] {
  return gw.logs.filter((l) => l['msg'] === 'cache reset');
}

function flipByte(fd: number, at: number): void {
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, at);
  b[0] = b[0]! ^ 0xff;
  writeSync(fd, b, 0, 1, at);
}

/** How the file is damaged (as /tmp/probe-r/repro-cache-corrupt.sh did, and the pages' own bytes). */
const DAMAGES: { name: string; damage: (file: string) => void; problem: RegExp }[] = [
  {
    name: 'both meta pages overwritten',
    damage: (f) => {
      const fd = openSync(f, 'r+');
      writeSync(fd, Buffer.alloc(2 * PAGE, 0xff), 0, 2 * PAGE, 0);
      closeSync(fd);
    },
    problem: /^meta page 0: not a meta page/,
  },
  { name: 'the file truncated to 100 kB', damage: (f) => truncateSync(f, 100_000), problem: /past the end of the file \(100000 bytes\)/ },
  {
    name: 'bytes flipped through the pages',
    damage: (f) => {
      // the report's byte at 3000 of each page, and a byte of each page's header (a branch or
      // leaf page's node offsets, an overflow page's length): every tree is hit
      const fd = openSync(f, 'r+');
      for (let off = 2 * PAGE; off < statSync(f).size; off += PAGE) {
        flipByte(fd, off + 3000);
        flipByte(fd, off + 20);
      }
      closeSync(fd);
    },
    problem: /page \d+/,
  },
];

for (const end of ['SIGTERM', 'SIGKILL'] as const) {
  for (const [i, d] of DAMAGES.entries()) {
    // the report's sequence is a clean stop, then the damage; a SIGKILL leaves no clean-close stamp
    if (end === 'SIGKILL' && i < 2) continue;
    t.test(`${d.name} after ${end}: the gateway resets its cache, serves exactly, and caches again`, async (t) => {
      const s = await setup(t, 40 + i);
      const file = join(s.cacheDir, DATA_FILE);
      const first = await startGateway(t, s);
      await readAll(t, first, s, 'filling the cache');
      const ended = await stop(first, end);
      t.same(ended, end === 'SIGTERM' ? { code: 0, signal: null } : { code: null, signal: 'SIGKILL' }, `stopped by ${end}`);
      t.equal(existsSync(join(s.cacheDir, CLEAN_CLOSE_FILE)), end === 'SIGTERM', `${CLEAN_CLOSE_FILE} only after a clean stop`);
      t.ok(statSync(file).size > 30 * PAGE, `a cache file of ${statSync(file).size} bytes`);
      d.damage(file);

      const second = await startGateway(t, s);
      const r = resets(second);
      t.equal(r.length, 1, 'one cache reset logged');
      t.equal(r[0]?.['level'], 'warn');
      const reason = String(r[0]?.['reason']);
      const prefix = `cache file ${file} is damaged (`;
      t.ok(reason.startsWith(prefix), `the reason names the file: ${reason}`);
      t.match(reason.slice(prefix.length), d.problem, 'and what is wrong');
      t.equal(await scrape(second, 'strata_gateway_cache_hits_total', 'layer="tail"'), 0, 'nothing cached');
      await readAll(t, second, s, 'after the reset');
      t.ok((await scrape(second, 'strata_gateway_s3_gets_total')) >= s.blocks, 'read from the bucket');
      t.ok((await scrape(second, 'strata_gateway_cache_bytes')) > 0, 'cached again');
      t.same(await stop(second, 'SIGTERM'), { code: 0, signal: null });

      // what the reset gateway cached serves the next one
      const third = await startGateway(t, s);
      t.same(resets(third), [], 'no reset');
      await readAll(t, third, s, 'after another restart');
      t.equal(await scrape(third, 'strata_gateway_cache_hits_total', 'layer="tail"'), s.blocks, 'every block opened from the cache');
      t.same(await stop(third, 'SIGTERM'), { code: 0, signal: null });
    });
  }
}

t.test('a healthy cache survives SIGKILL: the restart checks it and keeps it', async (t) => {
  const s = await setup(t, 50);
  const first = await startGateway(t, s);
  await readAll(t, first, s, 'filling the cache');
  t.same(await stop(first, 'SIGKILL'), { code: null, signal: 'SIGKILL' });
  t.notOk(existsSync(join(s.cacheDir, CLEAN_CLOSE_FILE)), 'no clean-close stamp');
  const second = await startGateway(t, s);
  t.same(resets(second), [], 'no reset');
  t.notOk(existsSync(join(s.cacheDir, CLEAN_CLOSE_FILE)), 'no stamp while it runs');
  await readAll(t, second, s, 'after SIGKILL');
  t.equal(await scrape(second, 'strata_gateway_cache_hits_total', 'layer="tail"'), s.blocks, 'every block opened from the cache');
  t.same(await stop(second, 'SIGTERM'), { code: 0, signal: null });
});

t.test('a clean stop leaves the stamp that spares the next start the walk: it describes the file as the gateway left it', async (t) => {
  const s = await setup(t, 51);
  const first = await startGateway(t, s);
  await readAll(t, first, s, 'filling the cache');
  t.same(await stop(first, 'SIGTERM'), { code: 0, signal: null });
  const stamp = JSON.parse(readFileSync(join(s.cacheDir, CLEAN_CLOSE_FILE), 'utf8')) as Record<string, unknown>;
  const st = statSync(join(s.cacheDir, DATA_FILE), { bigint: true });
  t.same(stamp, { version: 1, size: String(st.size), ino: String(st.ino), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) });
  const second = await startGateway(t, s);
  t.same(resets(second), []);
  t.notOk(existsSync(join(s.cacheDir, CLEAN_CLOSE_FILE)), 'removed at start');
  await readAll(t, second, s, 'after a clean restart');
  t.equal(await scrape(second, 'strata_gateway_cache_hits_total', 'layer="tail"'), s.blocks);
  t.same(await stop(second, 'SIGTERM'), { code: 0, signal: null });
});
