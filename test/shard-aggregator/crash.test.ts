/**
 * Crash safety: writers run against a real aggregator process while it is SIGKILLed at random
 * moments, during ingest and during flushes (right after a flush started, or a little later:
 * during the upload, before or after the WAL is deleted), 12 cycles, restarting on the same WAL
 * each time. Requests that were not acknowledged are re-sent after the restart (as a batch node
 * would). At the end every acknowledged sample must be in the blocks in S3, bit-exactly, and no
 * sample twice.
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/shard-aggregator/crash.test.ts
 */
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { status } from '@grpc/grpc-js';
import t from 'tap';
import { BlockReader } from '../../src/block/reader.js';
import { WriterClient } from '../../src/client/writer.js';
import { bucketSource } from '../../src/block/source.js';
import { blockKey, DEFAULT_BLOCK_DURATION_MS } from '../../src/format/key.js';
import { createTestBucket } from '../support/s3env.js';
import { bitsBytes, bitsOf, kill9, openTestBucket, RawClient, s3ConfigFor, startAggregator, tempDir, tsBytes, type AggProcess } from '../support/aggregator.js';
import { prng } from '../../src/common/series-gen.js';

const TENANT = 'crash';
const NUM_SHARDS = 2;
const SERIES = Array.from({ length: 120 }, (_, i) => BigInt(i + 1));
const H = BigInt(DEFAULT_BLOCK_DURATION_MS);
const WA = ((BigInt(Date.now()) - 2n * 24n * 3600n * 1000n) / H) * H;
const WINDOWS = [WA, WA + H];
const SERIES_PER_BATCH = 30;
const SAMPLES_PER_SERIES = 40;
const STEP_MS = 500n;
const MAX_K = 25000; // 25000 * 500 ms < 4 h
const CYCLES = 12;
const WRITERS = 3;

/** Seeded PRNG: the same kill points on every run; STRATA_CRASH_SEED explores others. */
const seed = Number(process.env.STRATA_CRASH_SEED ?? 20261206);
const rand = prng(seed);
t.comment(`seed ${seed} (set STRATA_CRASH_SEED to try another)`);

/** The value written for sample k of a series: special values included, as bit patterns. */
function valueBits(id: bigint, k: number): bigint {
  if (k % 101 === 7) return 0x7ff0000000000002n; // Prometheus stale marker
  if (k % 103 === 5) return 0x8000000000000000n; // -0
  if (k % 107 === 3) return 0x7ff8dead00000001n; // NaN with a payload
  if (k % 109 === 1) return bitsOf(-Infinity);
  return bitsOf(Number(id) * 1000 + k * 0.25);
}
const tsOf = (w: bigint, k: number): bigint => w + BigInt(k) * STEP_MS;

interface Batch {
  readonly shard: number;
  readonly req: { series: { id: string; timestamps: Buffer; values: Buffer }[] };
}

// next sample index per (series, window)
const counters = new Map<string, number>();
const cKey = (id: bigint, w: bigint): string => `${id}/${w}`;
let rotation = 0;

function generate(): Batch | null {
  const shard = rotation % NUM_SHARDS;
  const w = WINDOWS[Math.floor(rand() * WINDOWS.length)]!;
  const ids = SERIES.filter((id) => Number(id % BigInt(NUM_SHARDS)) === shard);
  const start = (rotation++ * SERIES_PER_BATCH) % ids.length;
  const series = [];
  for (let i = 0; i < SERIES_PER_BATCH; i++) {
    const id = ids[(start + i) % ids.length]!;
    const k0 = counters.get(cKey(id, w)) ?? 0;
    if (k0 + SAMPLES_PER_SERIES > MAX_K) return null;
    counters.set(cKey(id, w), k0 + SAMPLES_PER_SERIES);
    const ks = Array.from({ length: SAMPLES_PER_SERIES }, (_, j) => k0 + j);
    series.push({ id: id.toString(), timestamps: tsBytes(ks.map((k) => tsOf(w, k))), values: bitsBytes(ks.map((k) => valueBits(id, k))) });
  }
  return { shard, req: { series } };
}

const bucketName = await createTestBucket(t, { tag: 'aggcrash' });
const bucket = openTestBucket(t, bucketName);
const config = {
  walDir: tempDir('aggcrash-wal'),
  bucket: s3ConfigFor(bucketName),
  numShards: NUM_SHARDS,
  flushIdleMs: 3600 * 1000, // flushes happen on seal only
  flushRetryBaseMs: 100,
  flushRetryMaxMs: 500,
  verifyUpload: 'full',
  // small memtables: WALs roll over to new segments all the time, so kills land during rotations
  walWriteBufferBytes: 64 * 1024,
};

const retryQueue: Batch[] = [];
/** Writes the codec's self-check refused (verifyEncoding), with what it said. */
const codecFaults: string[] = [];
let acked = 0;
let sent = 0;

/** Writes until `stop()` says so; unacknowledged batches go back to the queue. */
async function writer(client: RawClient, stop: () => boolean, generateNew: boolean): Promise<void> {
  while (!stop()) {
    const b = retryQueue.shift() ?? (generateNew ? generate() : null);
    if (!b) return;
    sent++;
    const { err } = await client.call('Write', b.req, { 'x-strata-tenant': TENANT, 'x-strata-shard': String(b.shard) });
    if (err && err.code === status.INTERNAL && /the encoded run/.test(err.details)) {
      // the codec's self-check refused a run: the same batch would be refused on every retry
      codecFaults.push(err.details);
      return;
    }
    if (err) {
      retryQueue.push(b);
      if (!stop()) await sleep(5); // server going away; the loop notices
    } else acked++;
  }
}

function logIndex(a: AggProcess, msg: string, from = 0): number {
  return a.logs.findIndex((l, i) => i >= from && l.msg === msg);
}

t.test(`${CYCLES} SIGKILL cycles during ingest and flush lose and duplicate nothing`, async (t) => {
  let flushKills = 0;
  let lastFlushMs = 200;
  // a seal finds nothing to flush when no write reached that window since the last one: such a
  // cycle kills during ingest only, so cycles go on (up to twice as many) until enough kills
  // landed in flushes
  for (let cycle = 0; cycle < CYCLES || (flushKills < CYCLES / 2 && cycle < 2 * CYCLES); cycle++) {
    const agg = await startAggregator(t, config);
    const client = new RawClient(t, agg.address);
    let dead = false;
    const writers = Array.from({ length: WRITERS }, () => writer(client, () => dead, true));
    if (cycle % 2 === 0) {
      await sleep(150 + rand() * 700);
    } else {
      // let some data in, seal a window on both shards, kill while (or just after) it flushes
      await sleep(150 + rand() * 300);
      const w = WINDOWS[(cycle >> 1) % WINDOWS.length]!;
      const from = agg.logs.length;
      for (let shard = 0; shard < NUM_SHARDS; shard++) {
        void client.call('Seal', { window_start_ms: String(w), no_wait: true }, { 'x-strata-tenant': TENANT, 'x-strata-shard': String(shard) });
      }
      const started = Date.now();
      while (logIndex(agg, 'flush started', from) < 0 && Date.now() - started < 10_000) await sleep(2);
      const done = agg.logs.slice(from).find((l) => l.msg === 'flush done');
      if (done) lastFlushMs = Math.max(20, Number(done.seconds) * 1000);
      await sleep(rand() * lastFlushMs * 1.2);
      if (logIndex(agg, 'flush started', from) >= 0) flushKills++;
    }
    dead = true;
    await kill9(agg);
    await Promise.all(writers);
    const tail = agg.logs.slice(-1)[0];
    t.comment(`cycle ${cycle}: killed after ${acked} acknowledged / ${sent} sent requests; last log: ${String(tail?.msg)}`);
  }
  t.ok(flushKills >= CYCLES / 2, `${flushKills} kills landed during or right after a flush`);

  // final run: re-send what was never acknowledged, seal everything, compare with the model
  const agg = await startAggregator(t, config);
  const client = new RawClient(t, agg.address);
  await Promise.all(Array.from({ length: WRITERS }, () => writer(client, () => false, false)));
  t.same(codecFaults, [], 'the codec self-check refused no run');
  t.equal(retryQueue.length, 0, 'every batch acknowledged in the end');
  const segmented = walGenerations(join(config.walDir, 'wal')).filter((g) => readdirSync(g).filter((n) => /^\d{6}$/.test(n)).length > 1);
  // how many rolled over depends on how much each cycle got acknowledged before its kill; the
  // rollover itself is asserted in wal-db.test.ts
  t.comment(`${segmented.length} WAL generations span several segments`);
  // seal like a batch node: UNAVAILABLE (a flush failing for a moment) is retried
  const sealer = new WriterClient({ tenant: TENANT, numShards: NUM_SHARDS, target: agg.address, retry: { maxAttempts: 10, baseDelayMs: 50 } });
  t.teardown(() => sealer.close());
  for (const w of WINDOWS) {
    // a shard whose sealed WAL was already flushed by the flush resumed at start-up (the last
    // cycle may kill one) has nothing left to seal and reports no block: the reads below check
    // that every block is there and complete
    const blocks = await sealer.seal(w);
    t.ok(blocks.length <= NUM_SHARDS && blocks.every((b) => b.windowStartMs === w), `window ${w} sealed on every shard`);
  }
  const st = await client.status();
  t.same(st.windows.filter((x) => x.tenant === TENANT), [], 'no WAL left');

  let total = 0;
  for (const w of WINDOWS) {
    for (let shard = 0; shard < NUM_SHARDS; shard++) {
      const key = blockKey(TENANT, shard, w);
      const reader = await BlockReader.open(bucketSource(bucket, key));
      await reader.verify();
      const expectIds = SERIES.filter((id) => Number(id % BigInt(NUM_SHARDS)) === shard && (counters.get(cKey(id, w)) ?? 0) > 0);
      const seen: bigint[] = [];
      let mismatches = 0;
      for await (const loc of reader.series()) {
        seen.push(loc.id);
        const s = await reader.readRun(loc);
        const n = counters.get(cKey(loc.id, w)) ?? 0;
        const ks = Array.from({ length: n }, (_, k) => k);
        const wantTs = Buffer.from(new BigInt64Array(ks.map((k) => tsOf(w, k))).buffer);
        const wantBits = Buffer.from(new BigUint64Array(ks.map((k) => valueBits(loc.id, k))).buffer);
        const gotTs = Buffer.from(s.timestamps.buffer, s.timestamps.byteOffset, s.timestamps.byteLength);
        const gotBits = Buffer.from(s.values.buffer, s.values.byteOffset, s.values.byteLength);
        if (!gotTs.equals(wantTs) || !gotBits.equals(wantBits)) {
          mismatches++;
          if (mismatches <= 3) {
            const gotV = new BigUint64Array(s.values.buffer, s.values.byteOffset, s.values.length);
            const wrong = ks.filter((k) => k < gotV.length && gotV[k] !== valueBits(loc.id, k));
            const shown = wrong.slice(0, 4).map((k) => `#${k} ${gotV[k]!.toString(16)} not ${valueBits(loc.id, k).toString(16)}`);
            // keep the run's bytes for a look at how it was encoded
            const raw = await reader.source.read({ offset: loc.offset, length: loc.length });
            const dump = join(tempDir('aggcrash-run'), `${shard}-${w}-${loc.id}.run`);
            writeFileSync(dump, raw.data);
            t.fail(`${key} series ${loc.id} (run bytes in ${dump}): ${s.timestamps.length} samples, expected ${n} (timestamps equal: ${gotTs.equals(wantTs)}); ${wrong.length} values differ: ${shown.join(', ')}; run encoding ${loc.length} bytes`);
          }
        }
        total += s.timestamps.length;
      }
      t.same(seen, expectIds, `${key}: the expected series`);
      t.equal(mismatches, 0, `${key}: every series exact (samples, order, value bits)`);
    }
  }
  const expectedTotal = [...counters.values()].reduce((a, b) => a + b, 0);
  t.equal(total, expectedTotal, `${total} samples in blocks, as acknowledged`);
});

/** Every generation directory under `root` (<tenant>/<window>/<shard>-<generation>). */
function walGenerations(root: string): string[] {
  return readdirSync(root).flatMap((tenant) => readdirSync(join(root, tenant)).flatMap((win) => readdirSync(join(root, tenant, win)).map((g) => join(root, tenant, win, g))));
}
