import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlockReader, type RunLocation } from '../../src/block/reader.js';
import { checkBlockRuns } from '../../src/block/scan.js';
import type { ByteRange } from '../../src/objstore/bucket.js';
import { fileSink, fileSource } from '../../src/block/source.js';
import { BlockWriter, type BlockMeta } from '../../src/block/writer.js';
import { CorruptionError, InvalidArgumentError, StrataError } from '../../src/errors.js';
import { FOOTER_LEN } from '../../src/format/footer.js';
import type { Samples } from '../../src/format/run.js';
import { KINDS, makeSeries, sameSamples } from '../support/series.js';
import { memorySource } from '../support/memory-source.js';

const dir = mkdtempSync(join(tmpdir(), 'strata-block-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const W0 = 1_795_219_200_000n;
const META: BlockMeta = { tenant: 'acme', shard: 2, numShards: 4, windowStart: W0, windowEnd: W0 + 14_400_000n };

async function writeBlock(path: string, series: { id: bigint; samples: Samples }[], seriesPerPage?: number): Promise<void> {
  const w = new BlockWriter(await fileSink(path), META, seriesPerPage ? { seriesPerPage } : {});
  for (const s of series) await w.add(s.id, s.samples);
  await w.finish();
}

function dataset(count: number, n = 960): { id: bigint; samples: Samples }[] {
  return Array.from({ length: count }, (_, i) => ({
    id: 2n + 4n * BigInt(i * 3 + 1),
    samples: makeSeries(KINDS[i % KINDS.length]!, n - (i % 13), W0, i),
  }));
}

t.test('a block round-trips every series bit for bit through the two-level index', async (t) => {
  const path = join(dir, 'rt.block');
  const series = dataset(300);
  await writeBlock(path, series, 32);
  const r = await BlockReader.open(fileSource(path));
  t.equal(r.footer.seriesCount, 300);
  t.equal(r.footer.sampleCount, series.reduce((a, s) => a + s.samples.timestamps.length, 0));
  t.equal(r.footer.pageCount, Math.ceil(300 / 32));
  t.equal(r.footer.tenant, 'acme');
  t.equal(r.footer.shard, 2);
  t.equal(r.footer.numShards, 4);
  t.equal(r.footer.windowStart, META.windowStart);
  t.match(r.footer.blockId, /^[0-9a-f]{32}$/);
  let ok = 0;
  for (const s of series) if (sameSamples((await r.readSeries(s.id))!, s.samples)) ok++;
  t.equal(ok, series.length, 'every series equal');
  const ids: bigint[] = [];
  for await (const loc of r.series()) ids.push(loc.id);
  t.same(ids, series.map((s) => s.id), 'series() yields ids in order');
  t.same(await r.verify(), { series: 300, samples: r.footer.sampleCount });
  t.equal(await r.readSeries(10n), null, 'an id of the shard that is not in the block');
  t.equal(await r.readSeries(1n), null, 'an id before the first');
  t.equal(await r.readSeries(2n ** 64n - 1n), null, 'an id after the last');
});

t.test('one series costs 3 exact range reads cold and 1 once its page is known', async (t) => {
  const path = join(dir, 'reads.block');
  const series = dataset(200);
  await writeBlock(path, series, 50);
  const src = memorySource(path, readFileSync(path));
  const r = await BlockReader.open(src);
  t.equal(src.reads, 1, 'open: one suffix read covers footer and index of index');
  const got = await r.readSeries(series[120]!.id);
  t.ok(got && sameSamples(got, series[120]!.samples));
  t.equal(src.reads, 3, 'cold: + index page + run');
  await r.readSeries(series[121]!.id);
  t.equal(src.reads, 4, 'warm: the run only');
  const loc = (await r.locate(series[121]!.id))!;
  t.equal(loc.length, (await r.page(loc.page)).lengths[loc.entry], 'exact run length from the index');
});

t.test('time ranges are half-open and skip runs outside them', async (t) => {
  const path = join(dir, 'range.block');
  const series = dataset(20);
  await writeBlock(path, series);
  const r = await BlockReader.open(fileSource(path));
  const s = series[7]!.samples;
  const ts = s.timestamps;
  const cases: [bigint, bigint][] = [
    [ts[0]!, ts[ts.length - 1]! + 1n],
    [ts[10]!, ts[20]!],
    [ts[10]! + 1n, ts[20]! + 1n],
    [META.windowStart, META.windowStart + 1n],
    [ts[ts.length - 1]! + 1n, META.windowEnd],
    [0n, 1n],
  ];
  for (const [start, end] of cases) {
    const got = (await r.readSeries(series[7]!.id, { start, end }))!;
    const idx = [...ts.keys()].filter((i) => ts[i]! >= start && ts[i]! < end);
    const want = { timestamps: BigInt64Array.from(idx.map((i) => ts[i]!)), values: Float64Array.from(idx.map((i) => s.values[i]!)) };
    t.ok(sameSamples(got, want), `[${start}, ${end}): ${idx.length} samples`);
  }
  const before = r.reads;
  await r.readSeries(series[7]!.id, { start: 0n, end: 1n });
  t.equal(r.reads, before, 'a range outside the run reads nothing');
});

t.test('the writer rejects bad input with InvalidArgumentError and stays usable', async (t) => {
  const path = join(dir, 'bad.block');
  const w = new BlockWriter(await fileSink(path), META);
  const good = makeSeries('gauge', 10, W0, 1);
  await w.add(6n, good);
  const cases: [string, bigint, Samples, string][] = [
    ['id not increasing', 6n, good, 'seriesId'],
    ['id of another shard', 7n, good, 'seriesId'],
    ['negative id', -2n, good, 'seriesId'],
    ['id beyond uint64', 2n ** 64n + 2n, good, 'seriesId'],
    ['no samples', 10n, { timestamps: new BigInt64Array(0), values: new Float64Array(0) }, 'samples'],
    ['before the window', 10n, { timestamps: BigInt64Array.from([W0 - 1n]), values: new Float64Array(1) }, 'timestamps'],
    ['at the window end', 10n, { timestamps: BigInt64Array.from([META.windowEnd]), values: new Float64Array(1) }, 'timestamps'],
    ['unsorted', 10n, { timestamps: BigInt64Array.from([W0 + 5n, W0 + 1n]), values: new Float64Array(2) }, 'timestamps'],
  ];
  for (const [name, id, s, field] of cases) {
    const err = await w.add(id, s).then(() => null, (e: unknown) => e);
    t.ok(err instanceof InvalidArgumentError && err.field === field, `${name}: ${String(err)}`);
  }
  await w.add(10n, good);
  await w.finish();
  const r = await BlockReader.open(fileSource(path));
  t.equal(r.footer.seriesCount, 2, 'rejected series stored nothing');
  t.throws(() => new BlockWriter({ write: async () => {}, complete: async () => {}, abort: async () => {} }, { ...META, tenant: '../x' }), InvalidArgumentError);
  t.throws(() => new BlockWriter({ write: async () => {}, complete: async () => {}, abort: async () => {} }, { ...META, shard: 4 }), InvalidArgumentError);
});

t.test('flipping any single byte makes a full read fail with a corruption error naming object and offset', async (t) => {
  const path = join(dir, 'flip.block');
  const series = Array.from({ length: 12 }, (_, i) => ({ id: 2n + 4n * BigInt(i), samples: makeSeries(KINDS[i % KINDS.length]!, 40, W0, i) }));
  await writeBlock(path, series, 4);
  const good = readFileSync(path);
  let failures = 0;
  for (let at = 0; at < good.length; at++) {
    for (const mask of [0x01, 0x80]) {
      const bad = Buffer.from(good);
      bad[at] = bad[at]! ^ mask;
      const name = `blocks/acme/flip-${at}`;
      try {
        const r = await BlockReader.open(memorySource(name, bad));
        for await (const loc of r.series()) await r.readRun(loc);
        failures++;
        t.fail(`flip of byte ${at} (mask ${mask}) went unnoticed`);
      } catch (err) {
        if (!(err instanceof CorruptionError) || err.object !== name || !(err.offset >= 0 && err.offset < good.length)) {
          failures++;
          t.fail(`flip of byte ${at}: ${err instanceof StrataError ? err.code : ''} ${(err as Error).message}`);
        }
      }
    }
  }
  t.equal(failures, 0, `all ${good.length * 2} single-bit flips detected`);
});

t.test('objects that are not blocks are rejected', async (t) => {
  for (const [name, bytes] of [
    ['empty', new Uint8Array(0)],
    ['short', new Uint8Array(100)],
    ['zeros', new Uint8Array(FOOTER_LEN * 4)],
  ] as const) {
    const p = join(dir, `${name}.bin`);
    writeFileSync(p, bytes);
    await t.rejects(BlockReader.open(fileSource(p)), CorruptionError, name);
  }
  await t.rejects(BlockReader.open(fileSource(join(dir, 'missing.block'))), { code: 'ERR_STRATA_NOT_FOUND' });
});

t.test('the writer streams: the sink receives the samples of each closed page before finish()', async (t) => {
  const chunks: number[] = [];
  const w = new BlockWriter(
    { write: async (c) => void chunks.push(c.length), complete: async () => {}, abort: async () => {} },
    META,
    // the runs of one page are held until it closes (its series may share timestamps)
    { bufferBytes: 64 * 1024, seriesPerPage: 50 },
  );
  const series = dataset(400);
  for (const s of series) await w.add(s.id, s.samples);
  const before = chunks.reduce((a, b) => a + b, 0);
  const { size } = await w.finish();
  t.ok(chunks.length > 3, `${chunks.length} chunks written`);
  t.ok(before > size / 2, `${before} of ${size} bytes left before finish()`);
  t.ok(Math.max(...chunks) < 64 * 1024 + 16 * 1024, 'chunks stay near the buffer size');
});

t.test('without a size hint, pages are merged so one suffix read covers the index of index', async (t) => {
  const path = join(dir, 'merge.block');
  const series = Array.from({ length: 4000 }, (_, i) => ({
    id: 2n + 4n * BigInt(i),
    samples: { timestamps: BigInt64Array.from([W0 + BigInt(i)]), values: Float64Array.from([i / 3]) },
  }));
  await writeBlock(path, series, 1);
  const src = memorySource(path, readFileSync(path));
  const r = await BlockReader.open(src);
  t.ok(r.footer.pageCount * 36 <= 64 * 1024 - FOOTER_LEN, `${r.footer.pageCount} pages after merging`);
  t.ok(r.footer.pageCount < 4000);
  t.equal(src.reads, 1, 'one suffix read opens it');
  let ok = 0;
  for (const s of series) if (sameSamples((await r.readSeries(s.id))!, s.samples)) ok++;
  t.equal(ok, 4000);
  t.same(await r.verify(), { series: 4000, samples: 4000 });
});

t.test('checkBlockRuns() checks every run through one reused chunk buffer, names a damaged run, and stops when cancelled', async (t) => {
  const path = join(dir, 'check-runs.block');
  const series = dataset(120);
  await writeBlock(path, series, 16);
  const file = fileSource(path);
  // a source that records the buffers it was asked to read into
  const intos: (ArrayBuffer | null)[] = [];
  const recording = { name: file.name, read: (range: ByteRange, into?: Uint8Array) => (intos.push(into ? (into.buffer as ArrayBuffer) : null), file.read(range, into)) };
  const r = await BlockReader.open(recording);
  const chunk = 8192; // far smaller than the sample section: many chunks
  intos.length = 0;
  const got = await checkBlockRuns(r, () => false, 1024, chunk);
  t.same(got, { series: 120, samples: r.footer.sampleCount, stopped: false }, 'every series and sample, as the footer says');
  // the index pages are read without a buffer; the chunks of the sample section into one
  const chunks = intos.filter((b) => b !== null);
  t.ok(chunks.length > 5, `read in ${chunks.length} chunks`);
  t.ok(chunks.every((b) => b === chunks[0]), 'every chunk read into the same buffer');
  t.equal(intos.length - chunks.length, r.footer.pageCount, 'and each index page once');

  // a damaged byte inside one run: that run's series is named
  const bytes = readFileSync(path);
  const locs: RunLocation[] = [];
  for await (const loc of r.series()) locs.push(loc);
  const victim = locs[70]!;
  const damaged = join(dir, 'check-runs-damaged.block');
  const copy = Buffer.from(bytes);
  copy[victim.offset + Math.floor(victim.length / 2)]! ^= 0x10;
  writeFileSync(damaged, copy);
  await t.rejects(checkBlockRuns(await BlockReader.open(fileSource(damaged)), () => false, 1024, chunk), { name: 'CorruptionError', message: new RegExp(`series ${victim.id}: checksum mismatch`) }, 'the damaged run named');

  let asked = 0;
  const stopped = await checkBlockRuns(await BlockReader.open(fileSource(path)), () => ++asked >= 2, 10, chunk);
  t.same(stopped, { series: 20, samples: locs.slice(0, 20).reduce((n, l) => n + l.sampleCount, 0), stopped: true }, 'stops at the second check, every 10 runs');
});
