import t from 'tap';
import { BlockReader } from '../../src/block/reader.js';
import { BlockWriter, type BlockMeta, type ByteSink } from '../../src/block/writer.js';
import { CorruptionError } from '../../src/errors.js';
import { FORMAT_VERSION } from '../../src/format/footer.js';
import { decodeRun, encodeRun, joinRun, readRunHeader, TS_SHARED, type Samples } from '../../src/format/run.js';
import { decodePage, PAGE_WIDE_IDS, PageBuilder } from '../../src/index/page.js';
import { memorySource } from '../support/memory-source.js';
import { makeSeries, sameSamples, scrapeTarget } from '../support/series.js';

const W0 = 1_795_219_200_000n;
const META: BlockMeta = { tenant: 'acme', shard: 1, numShards: 4, windowStart: W0, windowEnd: W0 + 14_400_000n };

function memorySink(): ByteSink & { bytes(): Uint8Array } {
  const chunks: Uint8Array[] = [];
  return {
    write: async (c) => void chunks.push(c.slice()),
    complete: async () => undefined,
    abort: async () => undefined,
    bytes: () => Buffer.concat(chunks),
  };
}

/** `targets` scrape targets of `perTarget` series each (ids of shard 1 of 4), plus `loners` series of their own. */
function dataset(targets: number, perTarget: number, loners: number, n = 240, interleave = true): { id: bigint; samples: Samples }[] {
  const all: Samples[] = [];
  for (let g = 0; g < targets; g++) all.push(...scrapeTarget(perTarget, n - (g % 5), W0, g + 1));
  for (let k = 0; k < loners; k++) all.push(makeSeries('gauge', n, W0, 500 + k));
  // interleave the targets' series, as ids are assigned in practice (not target by target)
  return all
    .map((s, i) => ({ s, key: interleave ? (i * 7919) % all.length : i }))
    .sort((a, b) => a.key - b.key)
    .map(({ s }, i) => ({ id: 1n + 4n * BigInt(i), samples: s }));
}

async function write(series: { id: bigint; samples: Samples }[], opts: { seriesPerPage?: number; lz4?: boolean; encoded?: 'lz4' | 'plain' } = {}): Promise<Uint8Array> {
  const sink = memorySink();
  const w = new BlockWriter(sink, META, { seriesPerPage: opts.seriesPerPage ?? 64, lz4: opts.lz4 ?? true, blockId: '00'.repeat(16), now: () => 0 });
  for (const s of series) {
    const ts = s.samples.timestamps;
    if (opts.encoded) await w.addEncoded(s.id, encodeRun(s.samples, { lz4: opts.encoded === 'lz4' }), ts.length, ts[0]!, ts[ts.length - 1]!);
    else await w.add(s.id, s.samples);
  }
  await w.finish();
  return sink.bytes();
}

t.test('series of one scrape keep their timestamps once per page and read back bit for bit', async (t) => {
  const series = dataset(5, 20, 3);
  const bytes = await write(series);
  const r = await BlockReader.open(memorySource('shared.block', bytes));
  t.equal(r.footer.version, FORMAT_VERSION, 'the current version: its runs may hold BINNED sequences');
  t.equal(FORMAT_VERSION, 4);
  let vectors = 0;
  let shared = 0;
  for (let p = 0; p < r.ioi.pageCount; p++) {
    const page = await r.page(p);
    vectors += page.vectors.length;
    t.ok(page.vectors.length <= 5, `page ${p}: at most one vector per target (${page.vectors.length})`);
    for (let e = 0; e < page.count; e++) {
      const run = bytes.subarray(page.offsets[e]!, page.offsets[e]! + page.lengths[e]!);
      const own = (readRunHeader(run).encoding & 7) !== TS_SHARED;
      t.equal(own, page.tsRefs[e] === 0, `entry ${e} of page ${p}: run and entry agree`);
      if (!own) shared++;
    }
  }
  t.ok(vectors >= 5, `${vectors} vectors`);
  t.ok(shared >= 90, `${shared} of ${series.length} runs share their timestamps`);
  for (const s of series) {
    const got = await r.readSeries(s.id);
    t.ok(got && sameSamples(got, s.samples), `series ${s.id}`);
  }
  t.same(await r.verify(), { series: series.length, samples: series.reduce((a, s) => a + s.samples.timestamps.length, 0) });
  t.end();
});

t.test('a one-series read costs 3 range reads cold and 1 warm', async (t) => {
  const series = dataset(5, 20, 3);
  const bytes = await write(series);
  const src = memorySource('reads.block', bytes);
  const r = await BlockReader.open(src);
  const a = series[40]!;
  const b = series[41]!;
  const got = await r.readSeries(a.id);
  t.ok(got && sameSamples(got, a.samples));
  t.equal(src.reads, 3, 'cold: suffix, page, run');
  const got2 = await r.readSeries(b.id);
  t.ok(got2 && sameSamples(got2, b.samples));
  t.equal(src.reads, 4, 'warm: the run alone');
  t.end();
});

t.test('a block of plain encoded runs (the flush fast path) is byte for byte the block of the samples', async (t) => {
  const series = dataset(4, 12, 6, 900);
  // and repetitive floats, for which lz4 pays, some sharing timestamps and one alone
  const ts = scrapeTarget(1, 900, W0, 77)[0]!.timestamps;
  const next = series[series.length - 1]!.id;
  for (let k = 0; k < 3; k++) {
    const values = Float64Array.from({ length: 900 }, (_, i) => [0.1 + k, 0.30000000000000004, 1e-7 * k, 2.5][i % 4]!);
    series.push({ id: next + 4n * BigInt(k + 1), samples: { timestamps: k < 2 ? ts : makeSeries('gauge', 900, W0, 3).timestamps, values } });
  }
  t.ok(series.some((s) => readRunHeader(encodeRun(s.samples)).encoding & 0x80), 'some runs are lz4-compressed');
  for (const lz4 of [true, false]) {
    const added = await write(series, { lz4 });
    const encoded = await write(series, { lz4, encoded: 'plain' });
    t.equal(Buffer.compare(Buffer.from(added), Buffer.from(encoded)), 0, `lz4 ${lz4}: ${added.length} bytes either way`);
  }
  t.end();
});

t.test('runs added encoded (lz4 or not) share timestamps like added samples', async (t) => {
  // long runs of repetitive floats: lz4 pays for some of them
  const n = 900;
  const ts = scrapeTarget(1, n, W0, 77)[0]!.timestamps;
  const series = Array.from({ length: 12 }, (_, k) => ({
    id: 1n + 4n * BigInt(k),
    samples: { timestamps: ts, values: Float64Array.from({ length: n }, (_, i) => [0.1 + k, 0.30000000000000004, 1e-7 * k, 2.5][i % 4]!) },
  }));
  t.ok(series.some((s) => readRunHeader(encodeRun(s.samples)).encoding & 0x80), 'some runs are lz4-compressed');
  for (const lz4 of [true, false]) {
    const added = await write(series, { lz4 });
    const encoded = await write(series, { lz4, encoded: 'lz4' });
    for (const bytes of [added, encoded]) {
      const r = await BlockReader.open(memorySource('enc.block', bytes));
      const page = await r.page(0);
      t.equal(page.vectors.length, 1, 'one vector');
      for (const s of series) {
        const got = await r.readSeries(s.id);
        t.ok(got && sameSamples(got, s.samples), `series ${s.id} (lz4 ${lz4})`);
      }
    }
    t.equal(added.length, encoded.length, `the same size either way (lz4 ${lz4})`);
  }
  t.end();
});

t.test('pages merged to fit the index of index keep their vectors', async (t) => {
  // two series per page at first: 2,000 pages exceed the index-of-index budget and are merged
  const series = dataset(80, 50, 0, 20, false);
  const bytes = await write(series, { seriesPerPage: 2 });
  const r = await BlockReader.open(memorySource('merged.block', bytes));
  t.ok(r.ioi.pageCount < 2000, `${r.ioi.pageCount} pages after merging`);
  let vectors = 0;
  for (let p = 0; p < r.ioi.pageCount; p++) vectors += (await r.page(p)).vectors.length;
  t.ok(vectors > 0, `${vectors} vectors`);
  for (const s of series) {
    const got = await r.readSeries(s.id);
    if (!got || !sameSamples(got, s.samples)) t.fail(`series ${s.id}`);
  }
  t.pass('every series reads back');
  t.end();
});

t.test('joinRun() makes a shared run self-contained: the same samples for a client without the page', async (t) => {
  const series = dataset(2, 10, 0);
  const bytes = await write(series);
  const r = await BlockReader.open(memorySource('join.block', bytes));
  let joined = 0;
  for await (const loc of r.series()) {
    if (!loc.timestamps) continue;
    const run = bytes.subarray(loc.offset, loc.offset + loc.length);
    const full = joinRun(loc.timestamps, run);
    t.ok(sameSamples(decodeRun(full), decodeRun(run, undefined, loc.timestamps)), `series ${loc.id}`);
    t.throws(() => decodeRun(run), /keeps its timestamps in an index page/);
    // cut at every byte, the run or its vector: an error, never other samples
    for (let len = 0; len < run.length; len++) {
      t.throws(() => decodeRun(run.subarray(0, len), undefined, loc.timestamps), CorruptionError);
    }
    const v = loc.timestamps;
    for (let len = 0; len < v.bytes.length; len++) {
      t.throws(() => decodeRun(run, undefined, { ...v, bytes: v.bytes.subarray(0, len) }), CorruptionError);
    }
    joined++;
  }
  t.equal(joined, 20);
  t.end();
});

t.test('a decoded page holds its vectors in a buffer of its own, not views of the bytes read', async (t) => {
  const series = dataset(3, 10, 2);
  const bytes = await write(series);
  const r = await BlockReader.open(memorySource('own.block', bytes));
  const off = r.ioi.offsets[0]!;
  // as a gateway has it: a Buffer view into the whole object it read
  const whole = Buffer.from(bytes);
  const page = decodePage(whole.subarray(off, off + r.ioi.lengths[0]!), { object: 'p', offset: off }, r.footer.samples.length, r.footer.version);
  t.ok(page.vectors.length > 1);
  const buffers = new Set(page.vectors.map((v) => v.bytes.buffer));
  t.equal(buffers.size, 1, 'the vectors share one copy');
  const own = [...buffers][0]!;
  t.ok(own !== whole.buffer && own.byteLength < r.ioi.lengths[0]!, `that copy (${own.byteLength} bytes) is part of the page, not the object read (${whole.length} bytes)`);
  t.end();
});

t.test('damage to a page with vectors is caught: checksums, and every truncation of the page', async (t) => {
  const series = dataset(3, 10, 2);
  const bytes = await write(series);
  const r = await BlockReader.open(memorySource('dmg.block', bytes));
  const off = r.ioi.offsets[0]!;
  const len = r.ioi.lengths[0]!;
  const page = bytes.slice(off, off + len);
  t.ok(decodePage(page, { object: 'p', offset: off }, r.footer.samples.length, r.footer.version).vectors.length > 0);
  for (let cut = 0; cut < len; cut++) {
    t.throws(() => decodePage(page.subarray(0, cut), { object: 'p', offset: off }, r.footer.samples.length, r.footer.version), CorruptionError, `page cut to ${cut} bytes`);
  }
  for (let i = off; i < off + len; i += 3) {
    const copy = bytes.slice();
    copy[i] = copy[i]! ^ 0x10;
    const rd = await BlockReader.open(memorySource('dmg.block', copy));
    await t.rejects(rd.readSeries(series[0]!.id).then(() => rd.readSeries(series[series.length - 1]!.id)), CorruptionError, `flip at ${i}`);
  }
  t.end();
});

/** The series of `dense` with ids spread over the uint64 range as label-set hashes are (ascending, same shard). */
function hashedIds(dense: { id: bigint; samples: Samples }[]): { id: bigint; samples: Samples }[] {
  let x = 0x9e3779b97f4a7c15n;
  const ids = dense.map(() => {
    x = (x * 6364136223846793005n + 1442695040888963407n) & ((1n << 64n) - 1n);
    return x - (x % 4n) + 1n > (1n << 64n) - 1n ? x - (x % 4n) - 3n : x - (x % 4n) + 1n;
  });
  const sorted = [...new Set(ids)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return dense.slice(0, sorted.length).map((s, i) => ({ id: sorted[i]!, samples: s.samples }));
}

t.test('ids spread over the uint64 range (hashes) keep pages full and timestamps shared: version 3, uvarint64 id deltas', async (t) => {
  const dense = dataset(5, 20, 3);
  const hashed = hashedIds(dense);
  t.equal(hashed.length, dense.length);
  let wideGaps = 0;
  for (let i = 1; i < hashed.length; i++) if (hashed[i]!.id - hashed[i - 1]!.id >= 2n ** 53n) wideGaps++;
  t.ok(wideGaps > hashed.length / 2, `${wideGaps} of ${hashed.length - 1} gaps are 2^53 or more`);
  const denseBytes = await write(dense);
  const bytes = await write(hashed);
  const d = await BlockReader.open(memorySource('dense.block', denseBytes));
  const r = await BlockReader.open(memorySource('hashed.block', bytes));
  t.equal(d.footer.version, FORMAT_VERSION, 'dense ids: the current version');
  t.equal(r.footer.version, FORMAT_VERSION, 'hashed ids: the current version');
  t.equal(r.ioi.pageCount, d.ioi.pageCount, `as many pages as with dense ids (${d.ioi.pageCount}), not one per gap`);
  let vectors = 0;
  let wide = 0;
  for (let p = 0; p < r.ioi.pageCount; p++) {
    vectors += (await r.page(p)).vectors.length;
    if (bytes[r.ioi.offsets[p]!]! & PAGE_WIDE_IDS) wide++;
  }
  t.equal(wide, r.ioi.pageCount, 'every page has wide ids');
  t.ok(vectors >= 5, `${vectors} timestamp vectors still shared`);
  // at most 8 bytes more per series than with dense ids (the id delta of up to 10 bytes instead of 1 or 2)
  t.ok(bytes.length - denseBytes.length <= 8 * hashed.length, `${bytes.length - denseBytes.length} bytes more for ${hashed.length} series`);
  for (const s of hashed) {
    const got = await r.readSeries(s.id);
    t.ok(got && sameSamples(got, s.samples), `series ${s.id}`);
    t.equal(await r.readSeries(s.id - 4n), null, `no series at ${s.id - 4n}`);
  }
  t.same(await r.verify(), { series: hashed.length, samples: hashed.reduce((a, s) => a + s.samples.timestamps.length, 0) });

  // a wide page: every truncation is CorruptionError; so is a delta past 2^64, and the flag in a version 2 block
  const off = r.ioi.offsets[0]!;
  const page = bytes.slice(off, off + r.ioi.lengths[0]!);
  const end = r.footer.samples.length;
  t.same(decodePage(page, { object: 'p', offset: off }, end, FORMAT_VERSION).ids, (await r.page(0)).ids);
  for (let cut = 0; cut < page.length; cut++) {
    t.throws(() => decodePage(page.subarray(0, cut), { object: 'p', offset: off }, end, FORMAT_VERSION), CorruptionError, `wide page cut to ${cut} bytes`);
  }
  t.throws(() => decodePage(page, { object: 'p', offset: off }, end, 2), { name: 'CorruptionError', message: /page flag 4 \(series ids 2\^53 or more apart\) is format version 3, in a block of format version 2/ });
  const top = new PageBuilder();
  top.add({ id: 1n, runOffset: 0, runLength: 1, sampleCount: 1, minTime: W0, maxTime: W0, crc: 0 });
  top.add({ id: (1n << 64n) - 1n, runOffset: 1, runLength: 1, sampleCount: 1, minTime: W0, maxTime: W0, crc: 0 });
  const topPage = top.finish();
  t.same([...decodePage(topPage, { object: 'p', offset: 0 }, 2, FORMAT_VERSION).ids], [1n, (1n << 64n) - 1n], 'a gap of 2^64 - 2');
  // the same page with its first id raised by 2: the last id would pass 2^64
  const over = topPage.slice();
  new DataView(over.buffer).setBigUint64(2, 3n, true);
  t.throws(() => decodePage(over, { object: 'p', offset: 0 }, 2, FORMAT_VERSION), { name: 'CorruptionError', message: /series id overflows at entry 1/ });
  // the flag on a page without a wide gap, and a delta with a redundant zero byte, are not what a writer writes
  const near = new PageBuilder();
  near.add({ id: 1n, runOffset: 0, runLength: 1, sampleCount: 1, minTime: W0, maxTime: W0, crc: 0 });
  near.add({ id: 5n, runOffset: 1, runLength: 1, sampleCount: 1, minTime: W0, maxTime: W0, crc: 0 });
  const nearPage = near.finish();
  t.equal(nearPage[0]! & PAGE_WIDE_IDS, 0, 'no flag without a wide gap');
  const flagged = nearPage.slice();
  flagged[0] = flagged[0]! | PAGE_WIDE_IDS;
  t.throws(() => decodePage(flagged, { object: 'p', offset: 0 }, 2, FORMAT_VERSION), { name: 'CorruptionError', message: /page flag 4 \(series ids 2\^53 or more apart\) on a page without such a gap/ });
  // topPage's second entry: delta 2^64 - 2 in 10 bytes; the first (0) as 0x80 0x00 instead of 0x00
  const entryAt = topPage.length - 4 - 2 - 1 - 1 - 10 - 4 - 2 - 1 - 1 - 1; // from the end: crc, times, count, length, delta; then the first entry's
  t.equal(topPage[entryAt], 0, 'the first entry starts with its delta 0');
  const overlong = Uint8Array.from([...topPage.subarray(0, entryAt), 0x80, 0x00, ...topPage.subarray(entryAt + 1)]);
  t.throws(() => decodePage(overlong, { object: 'p', offset: 0 }, 3, FORMAT_VERSION), { name: 'CorruptionError', message: /series id delta has a redundant zero byte/ });
  t.end();
});
