/**
 * The day router (src/storage-gateway/day.ts) on a closed day without a day block, over a
 * filesystem bucket: a day request whose range lies in one block window is that block's read,
 * message for message (RUNS: the stored runs, not decoded and re-encoded), and answered at once
 * when the block is warm; a range over two windows is still one exact answer.
 *
 * Run alone: npx tap test/storage-gateway/day-window.test.ts
 */
import t from 'tap';
import { createLogger } from '../../src/common/logger.js';
import { openBucket } from '../../src/objstore/index.js';
import { DAY_MS, dayBlockKey } from '../../src/format/day-key.js';
import { blockKey } from '../../src/format/key.js';
import { decodeRun, encodeRun, RUN_CODES_VERSION } from '../../src/format/run.js';
import { decodeReadResponse } from '../../src/api/read-codec.js';
import { BlockDirectory, type BlockAddress } from '../../src/storage-gateway/block-directory.js';
import { HotRangeCache } from '../../src/storage-gateway/cache/hot.js';
import { MemoryCacheStore } from '../../src/storage-gateway/cache/memory.js';
import { RangeFetcher } from '../../src/storage-gateway/fetcher.js';
import { GatewayMetrics } from '../../src/storage-gateway/metrics.js';
import { BlockReadExecutor, type ReadQuery } from '../../src/storage-gateway/read.js';
import { DayRouter } from '../../src/storage-gateway/day.js';
import { drain, type Answer } from '../../src/storage-gateway/answers.js';
import { BlockAssembler, mergeSeries } from '../../src/client/block-assembler.js';
import { D, expected, makeDataSet, mismatches, tempDir, W0, writeDataSet } from '../support/gateway.js';

const HOUR = 3_600_000n;
const DAY = BigInt(DAY_MS);

t.test('a day request within one block window is the block read; two windows are one exact answer', async (t) => {
  const ds = makeDataSet({ seed: 61, n: 30, numShards: 1, windows: 2 });
  const bucket = await openBucket({ type: 'filesystem', path: tempDir(t, 'dayfs') });
  t.teardown(() => bucket.close());
  await writeDataSet(bucket, ds);
  const now = (): number => Number(W0 + 2n * DAY); // the day of W0 ended a day ago
  const metrics = new GatewayMetrics();
  const store = new HotRangeCache(new MemoryCacheStore({ maxBytes: 1 << 26 }), 1 << 20);
  const fetcher = new RangeFetcher({ store, hot: store, metrics, coalesce: { maxGapBytes: 1 << 16, maxGetBytes: 1 << 24 } });
  const directory = new BlockDirectory(
    { store, fetcher, metrics, now, logger: createLogger({ level: 'silent' }) },
    { suffixBytes: 4096, suffixMaxBytes: 4096, stalenessMs: 60_000, closedStalenessMs: 60_000, maxStaleMs: 0, negativeTtlMs: 60_000, uploadGraceMs: 0, openBlocksMaxBytes: 1 << 20, pagesMaxBytes: 1 << 20 },
  );
  const executor = new BlockReadExecutor({ directory, fetcher, metrics }, { maxSamplesPerResponse: 1e6, maxBytesPerResponse: 1 << 26, maxMessageBytes: 1 << 16 });
  const router = new DayRouter({ executor, directory, metrics, now }, { blockDurationMs: Number(D), dayBlocksAfterMs: 3_600_000, recheckMs: 60_000, maxMessageBytes: 1 << 16, maxSamplesPerResponse: 1e6, maxBytesPerResponse: 1 << 26 });
  const ids = BigUint64Array.from(ds.series.map((s) => s.id));
  const dayAddr: BlockAddress = { tenant: ds.tenant, shard: 0, windowStart: W0, windowEnd: W0 + DAY, key: dayBlockKey(ds.tenant, 0, W0), bucket, scope: 's' };
  const blockAddr = (ws: bigint): BlockAddress => ({ tenant: ds.tenant, shard: 0, windowStart: ws, windowEnd: ws + D, key: blockKey(ds.tenant, 0, ws), bucket, scope: 's' });
  const dayQuery = (start: bigint, end: bigint, encoding: 'raw' | 'runs', runsVersion = RUN_CODES_VERSION): ReadQuery => ({ block: dayAddr, numShards: 1, ids, start, end, encoding, runsVersion });
  const settle = async (a: Answer | Promise<Answer>): Promise<Buffer[]> => drain(a instanceof Promise ? await a : a);
  const none = (): undefined => undefined;

  for (const encoding of ['runs', 'raw'] as const) {
    const start = W0 + HOUR;
    const end = W0 + 3n * HOUR; // inside the first window (4 h)
    const cold = await settle(router.readNow(dayQuery(start, end, encoding), none));
    const warm = router.readNow(dayQuery(start, end, encoding), none);
    t.notOk(warm instanceof Promise, `${encoding}: a warm day request within one window is answered at once`);
    const got = await settle(warm);
    const block = await settle(executor.readNow({ block: blockAddr(W0), numShards: 1, ids, start, end, encoding, runsVersion: RUN_CODES_VERSION }, none));
    t.same(got, block, `${encoding}: message for message the block's own answer`);
    t.same(cold, block, `${encoding}: cold too`);
    t.equal(decodeReadResponse(got[0]!).blockId !== '', true, `${encoding}: the block's id`);
  }
  t.equal(await metrics.total('strata_gateway_day_reads_total', { source: 'blocks' }), 4, 'each (cold and warm) answered from the 4-hour block');
  t.equal(await metrics.total('strata_gateway_blocks_missing_total'), 0, 'looking for a day block that is not there yet is no missing block');
  // a window of that day without a 4-hour block either: missing, counted once
  const empty = W0 + 3n * D;
  await settle(router.readNow(dayQuery(empty + HOUR, empty + 2n * HOUR, 'runs'), none));
  t.equal(await metrics.total('strata_gateway_blocks_missing_total'), 1, 'a window that no source has is one missing block');

  // across the two windows: one answer, every sample once
  const start = W0 + D - HOUR;
  const end = W0 + D + HOUR;
  const got = await settle(router.readNow(dayQuery(start, end, 'raw'), none));
  // every asked id, as the query client returns them (a series with no sample in the range: empty)
  // (values as bytes: through a JS number V8 may canonicalize a NaN payload)
  const parts = new Map<bigint, { ts: Buffer[]; vs: Buffer[] }>([...ids].map((id) => [id, { ts: [], vs: [] }]));
  for (const m of got) {
    const r = decodeReadResponse(m);
    let at = 0;
    for (let i = 0; i < r.seriesIds.length / 8; i++) {
      const id = r.seriesIds.readBigUInt64LE(i * 8);
      const n = r.sampleCounts.readUInt32LE(i * 4);
      const p = parts.get(id)!;
      p.ts.push(Buffer.from(r.timestamps.subarray(at * 8, (at + n) * 8)));
      p.vs.push(Buffer.from(r.values.subarray(at * 8, (at + n) * 8)));
      at += n;
    }
  }
  const column = (chunks: Buffer[]): ArrayBuffer => {
    const b = Buffer.concat(chunks);
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.length) as ArrayBuffer;
  };
  const series = [...parts].map(([id, p]) => ({ id, timestamps: new BigInt64Array(column(p.ts)), values: new Float64Array(column(p.vs)) }));
  t.same(mismatches(series, expected(ds, [...ids], start, end)), [], 'RAW over two windows: exact, bit for bit');

  // a client that says it decodes one run per series only (runs_version 1): refused, naming why,
  // not sent runs it would misread
  await t.rejects(
    Promise.resolve().then(() => settle(router.readNow(dayQuery(start, end, 'runs', 1), none))),
    { code: 'ERR_STRATA_FAILED_PRECONDITION', message: /a day read from its 4-hour blocks sends a series as several runs, which need RUNS version 2; the request's runs_version is 1/ },
    'RUNS over two windows for runs_version 1: FAILED_PRECONDITION',
  );
  // unset is taken as 2 (a client before the field): the 4-hour blocks of this build are format
  // version 4, whose runs need 3, so it is refused them too, naming the block and the versions
  await t.rejects(
    Promise.resolve().then(() => settle(router.readNow(dayQuery(start, end, 'runs', 0), none))),
    { code: 'ERR_STRATA_FAILED_PRECONDITION', message: /has format version 4, whose runs need RUNS version 3; the request's runs_version is 0 \(unset: taken as 2\)/ },
    'runs_version unset: FAILED_PRECONDITION',
  );

  // a RUNS read the gateway narrowed (retention) gets runs the gateway encodes: for runs_version 2
  // with the codes of RUNS version 2 (no BINNED sequence), for 3 with BINNED
  for (const rv of [2, RUN_CODES_VERSION]) {
    const msgs = await settle(router.readNow({ ...dayQuery(start, end, 'runs', rv), narrowed: true }, none));
    const asm = new BlockAssembler([...ids], 'runs', { start, end }, 'day');
    const runs = new Map<bigint, Buffer[]>();
    for (const m of msgs) {
      const r = decodeReadResponse(m);
      asm.add(r);
      for (let i = 0, at = 0; i < r.runLengths.length / 4; i++) {
        const len = r.runLengths.readUInt32LE(i * 4);
        const id = r.seriesIds.readBigUInt64LE(i * 8);
        runs.set(id, [...(runs.get(id) ?? []), r.runs.subarray(at, at + len)]);
        at += len;
      }
    }
    asm.finish();
    t.same(mismatches(mergeSeries([...ids], [asm]), expected(ds, [...ids], start, end)), [], `narrowed RUNS, runs_version ${rv}: exact`);
    // each run is what the encoder writes for that version (codes 2: no BINNED sequence)
    let asEncoded = 0;
    let differ = 0;
    for (const parts of runs.values()) {
      const run = Buffer.concat(parts);
      const s = decodeRun(run);
      const v2 = Buffer.from(encodeRun(s, { codes: 2 }));
      const v3 = Buffer.from(encodeRun(s));
      if (run.equals(rv === 2 ? v2 : v3)) asEncoded++;
      if (!v2.equals(v3)) differ++;
    }
    t.equal(asEncoded, runs.size, `narrowed RUNS, runs_version ${rv}: all ${runs.size} runs encoded with the codes of RUNS version ${rv === 2 ? 2 : 3}`);
    t.ok(differ > 0, `${differ} of ${runs.size} runs differ between the two (BINNED)`);
  }

  // RUNS over two windows: each block's stored runs as they are, one after the other per series;
  // the query client's assembler tells the runs of a series apart by their CRCs
  const runsGot = await settle(router.readNow(dayQuery(start, end, 'runs'), none));
  const stored = new Set<string>();
  for (const ws of [W0, W0 + D]) {
    for (const m of await settle(executor.readNow({ block: blockAddr(ws), numShards: 1, ids, start, end, encoding: 'runs', runsVersion: RUN_CODES_VERSION }, none))) {
      const r = decodeReadResponse(m);
      for (let i = 0; i < r.runCrcs.length / 4; i++) stored.add(`${r.seriesIds.readBigUInt64LE(i * 8)}/${r.runCrcs.readUInt32LE(i * 4)}`);
    }
  }
  const sent = new Set<string>();
  let twoRuns = 0;
  const perSeries = new Map<bigint, Set<number>>();
  for (const m of runsGot) {
    const r = decodeReadResponse(m);
    for (let i = 0; i < r.runCrcs.length / 4; i++) {
      const id = r.seriesIds.readBigUInt64LE(i * 8);
      const crc = r.runCrcs.readUInt32LE(i * 4);
      sent.add(`${id}/${crc}`);
      let c = perSeries.get(id);
      if (!c) perSeries.set(id, (c = new Set()));
      c.add(crc);
    }
  }
  for (const c of perSeries.values()) if (c.size === 2) twoRuns++;
  t.same([...sent].sort(), [...stored].sort(), 'RUNS over two windows: exactly the blocks\' stored runs, none re-encoded');
  t.ok(twoRuns > 0, `${twoRuns} series sent as two runs`);
  const asm = new BlockAssembler([...ids], 'runs', { start, end }, 'day');
  for (const m of runsGot) asm.add(decodeReadResponse(m));
  asm.finish();
  const merged = mergeSeries([...ids], [asm]);
  t.same(mismatches(merged, expected(ds, [...ids], start, end)), [], 'RUNS over two windows, as the client assembles it: exact, bit for bit');

  // the response limits hold over the joined answer, not only over each block's part of it
  const runBytes = runsGot.reduce((n, m) => n + decodeReadResponse(m).runs.length, 0);
  const strict = new DayRouter({ executor, directory, metrics, now }, { blockDurationMs: Number(D), dayBlocksAfterMs: 3_600_000, recheckMs: 60_000, maxMessageBytes: 1 << 16, maxSamplesPerResponse: 1e6, maxBytesPerResponse: runBytes - 1 });
  await t.rejects(settle(strict.readNow(dayQuery(start, end, 'runs'), none)), { grpcCode: 8, message: new RegExp(`response would hold ${runBytes} bytes, over the gateway's maxBytesPerResponse`) });
  t.ok((await settle(strict.readNow(dayQuery(start, W0 + D, 'runs'), none))).length > 0, 'one window of it fits');

  // RAW: the joined sample limit, over the two whole windows (refused as the blocks are located,
  // before both are held decoded) and over a range that cuts them (refused once decoded)
  const count = (a: bigint, b: bigint): number => expected(ds, [...ids], a, b).reduce((n, x) => n + x.samples.timestamps.length, 0);
  const whole = count(W0, W0 + 2n * D);
  const fewer = (max: number): DayRouter =>
    new DayRouter({ executor, directory, metrics, now }, { blockDurationMs: Number(D), dayBlocksAfterMs: 3_600_000, recheckMs: 60_000, maxMessageBytes: 1 << 16, maxSamplesPerResponse: max, maxBytesPerResponse: 1 << 26 });
  // blocks decoded: counted around the executor's own samples()
  let decoded = 0;
  const samplesOf = executor.samples.bind(executor);
  (executor as { samples: typeof samplesOf }).samples = async (...args) => {
    const r = await samplesOf(...args);
    decoded++;
    return r;
  };
  t.teardown(() => void ((executor as { samples: typeof samplesOf }).samples = samplesOf));
  await t.rejects(settle(fewer(whole - 1).readNow(dayQuery(W0, W0 + 2n * D, 'raw'), none)), { grpcCode: 8, message: new RegExp(`response would hold ${whole} samples, over the gateway's maxSamplesPerResponse`) });
  t.equal(decoded, 1, 'refused as the second block was located: it was never decoded');
  decoded = 0;
  t.ok((await settle(fewer(whole).readNow(dayQuery(W0, W0 + 2n * D, 'raw'), none))).length > 0, 'exactly the limit fits');
  t.equal(decoded, 2, 'both blocks decoded then');
  const cut = count(start, end);
  await t.rejects(settle(fewer(cut - 1).readNow(dayQuery(start, end, 'raw'), none)), { grpcCode: 8, message: new RegExp(`response would hold ${cut} samples`) });
});
