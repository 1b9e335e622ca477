/**
 * Resource failures of the write path against real files: the WAL lives on a small tmpfs that a
 * ballast file fills up, so LevelDB meets a real ENOSPC (in-process aggregator, injected clock,
 * filesystem bucket off the tmpfs).
 *
 * - a WAL whose creation fails leaves nothing behind, and its window takes writes once the disk
 *   has room again;
 * - ENOSPC in the middle of a window: writes and Seal answer RESOURCE_EXHAUSTED naming the full
 *   disk, and everything heals by itself once space is freed, with every acknowledged sample in
 *   the block;
 * - one request spanning many windows never holds more than maxOpenWals databases;
 * - the quota counts what LevelDB really writes;
 * - start-up on a full disk says exactly how much to free, and starts once that much is freed.
 *
 * Mounting a tmpfs needs root (CI runs as root).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readlinkSync, rmSync, statSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import t, { type Test } from 'tap';
import { createLogger } from '../../src/common/logger.js';
import { GrpcError } from '../../src/common/grpc-status.js';
import { ErrorCode, StrataError } from '../../src/errors.js';
import { blockKey } from '../../src/format/key.js';
import { FilesystemBucket } from '../../src/objstore/fs.js';
import { Aggregator } from '../../src/shard-aggregator/aggregator.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import type { WireSeries } from '../../src/shard-aggregator/ingest.js';
import { AggregatorMetrics } from '../../src/shard-aggregator/metrics.js';
import { WalDb } from '../../src/shard-aggregator/wal-db.js';
import { encodeRun } from '../../src/format/run.js';
import { bitsBytes, bitsOf, eventually, RawClient, readBlock, startAggregator, tempDir, tsBytes } from '../support/aggregator.js';
import { fill, tmpfs } from '../support/tmpfs.js';

const H = 4 * 3600 * 1000;
const W = 1793491200000;
const logger = createLogger({ level: 'silent' });
const MiB = 1024 * 1024;

const series = (id: bigint, ts: number[], salt = 0): WireSeries => ({
  id,
  timestamps: tsBytes(ts.map(BigInt)),
  values: bitsBytes(ts.map((x) => bitsOf(Math.sin(x + salt)))),
});

async function engine(t: Test, walDir: string, bucketDir: string, extra: Record<string, unknown> = {}): Promise<{ agg: Aggregator; bucket: FilesystemBucket; config: ReturnType<typeof parseAggregatorConfig> }> {
  const config = parseAggregatorConfig({
    walDir,
    bucket: { type: 'filesystem', path: bucketDir },
    numShards: 1,
    walWriteBufferBytes: MiB,
    walMinFreeBytes: 0,
    ...extra,
  });
  const bucket = new FilesystemBucket({ path: bucketDir });
  const agg = await Aggregator.open({ config, bucket, logger, metrics: new AggregatorMetrics(), now: () => W + H + 1000, autoFlush: false });
  t.teardown(() => agg.close());
  return { agg, bucket, config };
}

/** Expects `p` to reject with a GrpcError of `code`; returns its message. */
async function rejectsWith(t: Test, p: Promise<unknown>, code: status, what: string): Promise<string> {
  try {
    await p;
  } catch (err) {
    t.ok(err instanceof GrpcError && err.grpcCode === code, `${what}: ${status[code]} (${err instanceof GrpcError ? status[err.grpcCode] : String(err)})`);
    return (err as Error).message;
  }
  t.fail(`${what}: expected ${status[code]}, it succeeded`);
  return '';
}

t.test('a WAL creation that fails leaves nothing behind; the window takes writes once there is room', async (t) => {
  const disk = tmpfs(t, 4 * MiB);
  const walDir = join(disk, 'wal');
  const { agg, bucket } = await engine(t, walDir, join(tempDir('disk-bucket'), 'b'));
  const ballast = fill(disk);
  const msg = await rejectsWith(t, agg.write('acme', 0, [series(1n, [W + 1])]), status.RESOURCE_EXHAUSTED, 'write on a full disk');
  t.match(msg, /cannot write the WAL of acme\/shard 0\/window \d+: the disk of walDir is full \(.*no space left on device/i);
  const windowDir = join(walDir, 'wal', 'acme', String(W).padStart(16, '0'));
  t.same(existsSync(windowDir) ? readdirSync(windowDir) : [], [], 'no half-created WAL is left');
  t.same(agg.status().windows, [], 'no window is open');
  rmSync(ballast);
  await agg.write('acme', 0, [series(1n, [W + 1])]);
  const [block] = await agg.seal('acme', 0, BigInt(W), true);
  t.same(await readBlock(bucket, block!.key), new Map([[1n, { ts: [BigInt(W + 1)], bits: [bitsOf(Math.sin(W + 1))] }]]), 'the same write succeeds without a restart');
});

t.test('ENOSPC in the middle of a window: RESOURCE_EXHAUSTED naming the full disk until space is freed, then everything heals', async (t) => {
  const disk = tmpfs(t, 12 * MiB);
  const { agg, bucket } = await engine(t, join(disk, 'wal'), join(tempDir('disk-bucket'), 'b'));
  const acked = new Map<bigint, number[]>();
  const write = async (id: bigint, from: number): Promise<void> => {
    const ts = Array.from({ length: 2000 }, (_, i) => W + from + i * 1000);
    await agg.write('acme', 0, [series(id, ts)]);
    acked.set(id, [...(acked.get(id) ?? []), ...ts]);
  };
  for (let i = 0; i < 20; i++) await write(BigInt(i), 0);
  // leave about 100 KB: LevelDB's next writes (its log, then a table) run out of room
  const ballast = fill(disk);
  truncateSync(ballast, Math.max(0, statSync(ballast).size - 100 * 1024));
  let failures = 0;
  for (let i = 20; i < 400 && failures === 0; i++) {
    try {
      await write(BigInt(i), 0);
    } catch (err) {
      t.ok(err instanceof GrpcError && err.grpcCode === status.RESOURCE_EXHAUSTED && /the disk of walDir is full/.test(err.message), `a write on the full disk is RESOURCE_EXHAUSTED naming it (${(err as Error).message.slice(0, 160)})`);
      failures++;
    }
  }
  t.equal(failures, 1, 'the disk filled up');
  await rejectsWith(t, agg.write('acme', 0, [series(1000n, [W + 5])]), status.RESOURCE_EXHAUSTED, 'still full: RESOURCE_EXHAUSTED again');
  t.match(await rejectsWith(t, agg.seal('acme', 0, BigInt(W), true), status.RESOURCE_EXHAUSTED, 'seal on the full disk'), /the disk of walDir is full/);
  rmSync(ballast);
  await write(5000n, 0);
  await write(1n, 3_000_000); // a later run of an existing series
  const [block] = await agg.seal('acme', 0, BigInt(W), true);
  const got = await readBlock(bucket, block!.key);
  const want = new Map([...acked].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([id, ts]) => [id, { ts: ts.map(BigInt), bits: ts.map((x) => bitsOf(Math.sin(x))) }]));
  t.same(got, want, `every acknowledged sample is in the block (${acked.size} series), bit for bit`);
  t.same(agg.status().windows, [], 'the WAL is gone after the flush');
});

t.test('a WAL merged through spill files on a disk without room for them: RESOURCE_EXHAUSTED naming the shortfall, before any is written; then it heals', async (t) => {
  const dir = join(tmpfs(t, 24 * MiB), 'gen');
  const opts = { writeBufferBytes: 64 * 1024, sync: false, maxOpenSegments: 2 };
  const identity = { tenant: 'acme', shard: 0, numShards: 1, windowStart: BigInt(W), windowEnd: BigInt(W + H), generation: 1, createdAtMs: 1 };
  const w = await WalDb.create(dir, identity, opts);
  const use = w.acquire('writer');
  for (let r = 0; r < 20; r++) {
    const entries = Array.from({ length: 30 }, (_, k) => ({ id: BigInt(k), run: encodeRun({ timestamps: BigInt64Array.from({ length: 200 }, (_, i) => BigInt(W + i * 15_000 + r)), values: Float64Array.from({ length: 200 }, (_, i) => Math.sin(r * 1000 + k * 37 + i) * 1e6) }), samples: 200 }));
    await w.append(entries, r);
  }
  use.release(100);
  t.ok(w.segmentDirs.length > 2, `${w.segmentDirs.length} segments, more than maxOpenSegments`);
  const bytes = w.counters.bytes;
  await w.close();
  const db = await WalDb.open(dir, opts);
  const ballast = fill(dir);
  const readAll = async (): Promise<number> => {
    let n = 0;
    for await (const s of db.series()) n += s.runs.length;
    return n;
  };
  await t.rejects(readAll(), { code: ErrorCode.RESOURCE_EXHAUSTED, message: /through spill files needs about \d+ bytes free on its disk, which has \d+; free space on the WAL volume or raise flushMaxOpenSegments/ }, `refused (the WAL holds ${bytes} bytes)`);
  t.same(readdirSync(dir).filter((n) => n.startsWith('spill')), [], 'no spill file written');
  rmSync(ballast);
  t.equal(await readAll(), 20 * 30, 'with room again: every run read back');
  await db.close();
});

t.test('a maxSampleAgeMs reaching before the epoch accepts nothing before it: a negative window could never be flushed', async (t) => {
  const dir = tempDir('disk-epoch');
  const { agg } = await engine(t, join(dir, 'wal'), join(dir, 'bucket'), { maxSampleAgeMs: W + H + 1000 + 30 * 24 * H });
  t.equal(agg.ingestContext(0, 'acme').minTimestampMs, 0, 'the accepted range starts at the epoch');
  await t.rejects(agg.write('acme', 0, [series(7n, [-1])]), { name: 'InvalidArgumentError', message: /series\[0\]\.timestamps: .* at -1 ms .* outside the accepted range \[0, / }, 'a sample 1 ms before the epoch: refused, naming the field');
  t.same(agg.status().windows, [], 'nothing stored');
  await agg.write('acme', 0, [series(7n, [0])]);
  t.equal(agg.status().windows.length, 1, 'the epoch itself is accepted');
});

t.test('one request spanning many windows holds at most maxOpenWals databases', async (t) => {
  const dir = tempDir('disk-open');
  const { agg } = await engine(t, join(dir, 'wal'), join(dir, 'bucket'), { maxOpenWals: 2, maxSampleAgeMs: 40 * 24 * H });
  const windows = 60;
  const ts = Array.from({ length: windows }, (_, i) => W - i * H + 17);
  const fds = (): number => readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).includes(dir);
    } catch {
      return false; // closed while listing
    }
  }).length;
  let maxOpen = 0;
  let maxFds = 0;
  let done = false;
  const sample = (): void => {
    maxOpen = Math.max(maxOpen, agg.store.openDatabases());
    maxFds = Math.max(maxFds, fds());
    if (!done) setImmediate(sample);
  };
  sample();
  await agg.write('acme', 0, [series(7n, ts)]);
  done = true;
  t.ok(maxOpen <= 2, `at most 2 databases open at once (saw ${maxOpen})`);
  t.ok(maxFds <= 2 * 8, `descriptors under the WAL directory stay bounded (saw ${maxFds})`);
  t.equal(agg.status().windows.length, windows, 'every window has its WAL');
  t.equal(agg.status().windows.reduce((n, w) => n + w.samples, 0), windows, 'with its sample');
});

t.test('the quota counts what LevelDB really writes', async (t) => {
  const dir = tempDir('disk-quota');
  const { agg } = await engine(t, join(dir, 'wal'), join(dir, 'bucket'));
  for (let i = 0; i < 30; i++) {
    const ts = Array.from({ length: 3000 }, (_, k) => W + k * 997);
    await agg.write('acme', 0, [series(BigInt(i), ts, i)]);
  }
  await agg.store.measureDisk();
  const usage = agg.store.diskUsage();
  const du = Number(execFileSync('du', ['-s', '--block-size=1', join(dir, 'wal')]).toString().split('\t')[0]);
  const runBytes = agg.store.totalBytes();
  t.ok(usage.usedBytes >= du - 64 * 1024, `counted ${usage.usedBytes} bytes, du says ${du} (directories aside)`);
  t.ok(usage.usedBytes > runBytes, `more than the run bytes alone (${runBytes})`);
});

t.test('start-up on a full disk says exactly how much to free, and starts once that is freed', async (t) => {
  const disk = tmpfs(t, 16 * MiB);
  const walDir = join(disk, 'wal');
  const bucketDir = join(tempDir('disk-bucket'), 'b');
  const acked: { id: bigint; ts: number[] }[] = [];
  {
    const config = parseAggregatorConfig({ walDir, bucket: { type: 'filesystem', path: bucketDir }, numShards: 1, walWriteBufferBytes: 4 * MiB, walMinFreeBytes: 0 });
    const agg = await Aggregator.open({ config, bucket: new FilesystemBucket({ path: bucketDir }), logger, metrics: new AggregatorMetrics(), now: () => W + H + 1000, autoFlush: false });
    for (let i = 0; i < 10; i++) {
      const ts = Array.from({ length: 5000 }, (_, k) => W + k * 1000 + i);
      await agg.write('acme', 0, [series(BigInt(i), ts)]);
      acked.push({ id: BigInt(i), ts });
    }
    await agg.close(); // like a kill -9: LevelDB keeps the memtable's data in its log only
  }
  const ballast = fill(disk);
  const open = () =>
    Aggregator.open({
      config: parseAggregatorConfig({ walDir, bucket: { type: 'filesystem', path: bucketDir }, numShards: 1, walWriteBufferBytes: 4 * MiB, walMinFreeBytes: 0 }),
      bucket: new FilesystemBucket({ path: bucketDir }),
      logger,
      metrics: new AggregatorMetrics(),
      now: () => W + H + 1000,
      autoFlush: false,
    });
  let need = 0;
  try {
    const agg = await open();
    await agg.close();
    t.fail('started on a full disk');
  } catch (err) {
    t.ok(err instanceof StrataError && err.code === ErrorCode.STORAGE, 'a storage error');
    const m = /free at least (\d+) bytes on the file system of (\S+) \((\d+) bytes free now/.exec((err as Error).message);
    t.ok(m, `the message says how much to free: ${(err as Error).message}`);
    need = Number(m?.[1] ?? 0);
    t.equal(m?.[2], walDir);
  }
  t.ok(need > 0 && need < 16 * MiB, `${need} bytes to free`);
  truncateSync(ballast, Math.max(0, statSync(ballast).size - need)); // free exactly what it asked for
  const agg = await open();
  t.teardown(() => agg.close());
  const [block] = await agg.seal('acme', 0, BigInt(W), true);
  t.equal(block?.key, blockKey('acme', 0, BigInt(W)));
  const got = await readBlock(new FilesystemBucket({ path: bucketDir }), block!.key);
  t.same(
    got,
    new Map(acked.map((a) => [a.id, { ts: a.ts.map(BigInt), bits: a.ts.map((x) => bitsOf(Math.sin(x))) }])),
    'every acknowledged sample survived',
  );
});

t.test('a WAL disk below walMinFreeBytes: writes refused naming it, a warning in the log, the free space and the floor on /metrics; writes accepted again once there is room', async (t) => {
  const disk = tmpfs(t, 16 * MiB);
  const walDir = join(disk, 'wal');
  const bucketDir = tempDir('lowdisk-bucket');
  const ballast = fill(disk, 6 * MiB); // 6 MiB free of 16
  const a = await startAggregator(t, { walDir, bucket: { type: 'filesystem', path: bucketDir }, numShards: 1, walMinFreeBytes: 8 * MiB });
  const c = new RawClient(t, a.address);
  // the process keeps the real clock: samples of a minute ago
  const ago = Date.now() - 60_000;
  const req = { series: [series(7n, [ago, ago + 1000])] };
  const refused = await c.call('Write', req, { 'x-strata-tenant': 'acme', 'x-strata-shard': '0' });
  t.equal(refused.err?.code, status.RESOURCE_EXHAUSTED, 'refused');
  t.match(refused.err?.details ?? '', /less than walMinFreeBytes \(8388608\)/, 'naming the bound');
  // the line reaches this process through the child's stdout, maybe after the answer
  const warned = await eventually('the warning in the log', async () => (a.logs.some((l) => l.level === 'warn' && /walMinFreeBytes/.test(String(l.msg))) ? true : null));
  t.ok(warned, 'a warning in the log');
  const text = await (await fetch(`http://127.0.0.1:${a.metricsPort}/metrics`)).text();
  const free = Number(/\nstrata_aggregator_wal_disk_free_bytes (\d+)/.exec(text)?.[1]);
  t.ok(free < 8 * MiB, `free space on /metrics: ${free}`);
  t.match(text, /\nstrata_aggregator_wal_min_free_bytes 8388608\n/, 'the floor on /metrics');
  rmSync(ballast);
  let last = '';
  const ok = await eventually('writes to be accepted again', async () => {
    const r = await c.call('Write', req, { 'x-strata-tenant': 'acme', 'x-strata-shard': '0' });
    last = r.err?.details ?? '';
    return r.err === null ? r : null;
  }).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}; the last refusal: ${last}`);
  });
  t.equal(ok.res?.samples, '2', 'accepted once there is room, without a restart');
});
